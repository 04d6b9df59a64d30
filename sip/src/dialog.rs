//! Dialog state (RFC 3261 section 12) and the requests built inside a dialog.

use std::net::SocketAddr;

use crate::endpoint::Target;
use crate::message::{Host, Method, NameAddr, ParseError, Request, Response, Uri};
use crate::transport::Transport;

/// Identifies a dialog from our side: Call-ID, local tag, remote tag.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DialogId {
    pub call_id: String,
    pub local_tag: String,
    pub remote_tag: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dialog {
    pub id: DialogId,
    /// Our address-of-record with our tag (From in our requests).
    pub local: NameAddr,
    /// The peer's, with its tag (To in our requests).
    pub remote: NameAddr,
    /// CSeq of the last request we sent in the dialog.
    pub local_seq: u32,
    /// CSeq of the last request the peer sent, once it sent one.
    pub remote_seq: Option<u32>,
    /// Where in-dialog requests go (the peer's Contact), refreshed by target-refresh requests.
    pub remote_target: Uri,
    /// Route headers for in-dialog requests, in order.
    pub route_set: Vec<NameAddr>,
    /// Transport and address used when the route or target is not an IP literal.
    pub fallback: Target,
}

/// What a dialog needs to send a request in it, as text: kept outside the process (in a store)
/// while the call lives, so that after a crash [`Dialog::restore`] can rebuild the dialog and
/// hang it up ([`crate::ua::UserAgent::bye_restored`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedDialog {
    pub id: DialogId,
    /// [`Dialog::local`], with our tag.
    pub local: String,
    /// [`Dialog::remote`], with the peer's tag.
    pub remote: String,
    pub remote_target: String,
    pub route_set: Vec<String>,
    /// CSeq of the last request we sent in the dialog.
    pub local_seq: u32,
    pub fallback: Target,
}

fn first_contact(h: &crate::message::Headers) -> Result<Uri, ParseError> {
    h.contact()?
        .into_iter()
        .next()
        .map(|c| c.uri)
        .ok_or_else(|| ParseError::syntax("Contact: missing"))
}

impl Dialog {
    /// The UAC side, from the request we sent and a response with a To tag (RFC 3261 section 12.1.2).
    pub fn uac(
        request: &Request,
        response: &Response,
        fallback: Target,
    ) -> Result<Dialog, ParseError> {
        let local = request.headers.from()?;
        let remote = response.headers.to()?;
        let mut route_set = response.headers.record_route()?;
        route_set.reverse();
        Ok(Dialog {
            id: DialogId {
                call_id: request.headers.call_id()?.to_string(),
                local_tag: local.tag().unwrap_or_default().to_string(),
                remote_tag: remote
                    .tag()
                    .ok_or_else(|| ParseError::syntax("To: response has no tag"))?
                    .to_string(),
            },
            local_seq: request.headers.cseq()?.seq,
            remote_seq: None,
            remote_target: first_contact(&response.headers).unwrap_or_else(|_| request.uri.clone()),
            route_set,
            local,
            remote,
            fallback,
        })
    }

    /// The UAS side, from the received request and our local tag (RFC 3261 section 12.1.1).
    pub fn uas(request: &Request, local_tag: &str, fallback: Target) -> Result<Dialog, ParseError> {
        let remote = request.headers.from()?;
        let local = request.headers.to()?.with_tag(local_tag);
        Ok(Dialog {
            id: DialogId {
                call_id: request.headers.call_id()?.to_string(),
                local_tag: local_tag.to_string(),
                remote_tag: remote.tag().unwrap_or_default().to_string(),
            },
            local_seq: 0,
            remote_seq: Some(request.headers.cseq()?.seq),
            // A request without Contact (not allowed, but seen) falls back to the From URI.
            remote_target: first_contact(&request.headers).unwrap_or_else(|_| remote.uri.clone()),
            route_set: request.headers.record_route()?,
            local,
            remote,
            fallback,
        })
    }

    /// The dialog as text, for [`Dialog::restore`].
    pub fn save(&self) -> SavedDialog {
        SavedDialog {
            id: self.id.clone(),
            local: self.local.to_string(),
            remote: self.remote.to_string(),
            remote_target: self.remote_target.to_string(),
            route_set: self.route_set.iter().map(ToString::to_string).collect(),
            local_seq: self.local_seq,
            fallback: self.fallback,
        }
    }

    /// Rebuilds a saved dialog; an error names the field that does not parse or does not fit
    /// the dialog id (a corrupt record). The peer's CSeq is not kept: the dialog only sends.
    pub fn restore(saved: &SavedDialog) -> Result<Dialog, ParseError> {
        let local = NameAddr::parse(&saved.local).map_err(|e| e.context("local"))?;
        let remote = NameAddr::parse(&saved.remote).map_err(|e| e.context("remote"))?;
        if local.tag() != Some(saved.id.local_tag.as_str()) {
            return Err(ParseError::syntax(
                "local: its tag is not the dialog's local tag",
            ));
        }
        if remote.tag().unwrap_or_default() != saved.id.remote_tag {
            return Err(ParseError::syntax(
                "remote: its tag is not the dialog's remote tag",
            ));
        }
        // Call-ID is `word ["@" word]`: anything else would break the request's head.
        let call_id = &saved.id.call_id;
        if call_id.is_empty() || call_id.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(ParseError::syntax("call id: empty or not a word"));
        }
        let route_set = saved
            .route_set
            .iter()
            .map(|r| NameAddr::parse(r).map_err(|e| e.context("route set")))
            .collect::<Result<_, _>>()?;
        Ok(Dialog {
            id: saved.id.clone(),
            local,
            remote,
            local_seq: saved.local_seq,
            remote_seq: None,
            remote_target: Uri::parse(&saved.remote_target)
                .map_err(|e| e.context("remote target"))?,
            route_set,
            fallback: saved.fallback,
        })
    }

    /// A new request in the dialog; `seq` is the CSeq number to use.
    pub fn request(&self, method: Method, seq: u32) -> Request {
        let mut r = Request::new(method.clone(), self.remote_target.clone());
        for route in &self.route_set {
            r.headers.push("Route", route.to_string());
        }
        r.headers.push("From", self.local.to_string());
        r.headers.push("To", self.remote.to_string());
        r.headers.push("Call-ID", self.id.call_id.clone());
        r.headers.push("CSeq", format!("{seq} {method}"));
        r
    }

    /// Allocates the next local CSeq and builds the request (not for ACK, which reuses the INVITE's).
    pub fn next_request(&mut self, method: Method) -> Request {
        self.local_seq = self.local_seq.wrapping_add(1);
        self.request(method, self.local_seq)
    }

    /// The BYE that ends the dialog (the next local CSeq).
    pub fn bye(&mut self) -> Request {
        let mut bye = self.next_request(Method::Bye);
        bye.headers.push("Max-Forwards", "70");
        bye.headers.push("Content-Length", "0");
        bye
    }

    /// Checks and records the CSeq of a request from the peer (RFC 3261 section 12.2.2):
    /// false if it is lower than or equal to the last one (answer 500).
    pub fn accept_remote_seq(&mut self, seq: u32) -> bool {
        if self.remote_seq.is_some_and(|last| seq <= last) {
            return false;
        }
        self.remote_seq = Some(seq);
        true
    }

    /// Target refresh from a request's or response's Contact.
    pub fn refresh_target(&mut self, headers: &crate::message::Headers) {
        if let Ok(uri) = first_contact(headers) {
            self.remote_target = uri;
        }
    }

    /// Next hop for in-dialog requests: the first route, else the remote target, when it is an
    /// IP literal; otherwise the dialog's fallback (resolution is the driver's business).
    pub fn next_hop(&self) -> Target {
        let uri = self
            .route_set
            .first()
            .map(|r| &r.uri)
            .unwrap_or(&self.remote_target);
        let Uri::Sip(sip) = uri else {
            return self.fallback;
        };
        let transport = match sip.transport_param().as_deref() {
            Some("tcp") => Transport::Tcp,
            Some("tls") => Transport::Tls,
            Some("udp") => Transport::Udp,
            _ => self.fallback.transport,
        };
        let ip = match &sip.host {
            Host::Domain(_) => None,
            h => h.ip(),
        };
        match ip {
            Some(ip) => Target {
                transport,
                addr: SocketAddr::new(ip, sip.port.unwrap_or(transport.default_port())),
            },
            None => self.fallback,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Message;

    fn uas_dialog(extra: &str) -> Dialog {
        let text = format!(
            "INVITE sip:gw@192.0.2.10 SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.7;branch=z9hG4bK1\r\n\
From: <sip:c@198.51.100.7>;tag=r1\r\nTo: <sip:gw@192.0.2.10>\r\nCall-ID: d1\r\nCSeq: 5 INVITE\r\n{extra}\r\n"
        );
        let Ok(Message::Request(req)) = Message::parse(text.as_bytes()) else {
            panic!("parse")
        };
        let fallback = Target {
            transport: Transport::Udp,
            addr: "198.51.100.7:5060".parse().unwrap(),
        };
        Dialog::uas(&req, "l1", fallback).unwrap()
    }

    #[test]
    fn next_hop_prefers_route_then_target_then_fallback() {
        let d = uas_dialog("Record-Route: <sip:203.0.113.5:5070;transport=tcp;lr>\r\nContact: <sip:c@198.51.100.9>\r\n");
        assert_eq!(d.next_hop().transport, Transport::Tcp);
        assert_eq!(d.next_hop().addr, "203.0.113.5:5070".parse().unwrap());
        let d = uas_dialog("Contact: <sip:c@198.51.100.9:5062>\r\n");
        assert_eq!(d.next_hop().addr, "198.51.100.9:5062".parse().unwrap());
        let d = uas_dialog("Contact: <sip:c@pbx.example.com>\r\n");
        assert_eq!(d.next_hop(), d.fallback);
        // No Contact at all: the From URI.
        let d = uas_dialog("");
        assert_eq!(d.remote_target.to_string(), "sip:c@198.51.100.7");
    }

    #[test]
    fn remote_cseq_must_increase() {
        let mut d = uas_dialog("Contact: <sip:c@198.51.100.9>\r\n");
        assert!(!d.accept_remote_seq(5));
        assert!(d.accept_remote_seq(6));
        assert!(!d.accept_remote_seq(6));
        let bye = d.next_request(Method::Bye);
        assert_eq!(bye.headers.get("CSeq"), Some("1 BYE"));
        assert_eq!(bye.headers.get("From"), Some("<sip:gw@192.0.2.10>;tag=l1"));
        assert_eq!(bye.headers.get("To"), Some("<sip:c@198.51.100.7>;tag=r1"));
    }
}

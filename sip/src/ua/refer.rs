//! Blind transfer as the transferor (RFC 3515): a REFER in an established dialog asks the peer
//! to call another target; its implicit subscription reports the outcome in NOTIFYs whose
//! `message/sipfrag` bodies carry the status line of the peer's new call (RFC 3420).

use std::time::Instant;

use super::{CallHandle, CallState, Purpose, UaError, UaEvent, UserAgent};
use crate::endpoint::TransactionId;
use crate::message::{Method, Request, Response, Uri};

/// How a transfer goes, from the peer's answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransferProgress {
    /// The REFER was accepted (2xx): NOTIFYs follow.
    Accepted,
    /// The REFER was refused (or failed: 408 without an answer, 503 on a transport error).
    Refused { code: u16, reason: String },
    /// A NOTIFY: the status of the peer's call to the target; `done` when it is final (or the
    /// subscription ended).
    Status {
        code: u16,
        reason: String,
        done: bool,
    },
}

/// The status line in a `message/sipfrag` body: `SIP/2.0 200 OK`.
pub fn sipfrag_status(body: &[u8]) -> Option<(u16, String)> {
    let text = std::str::from_utf8(body).ok()?;
    let line = text.lines().next()?.trim();
    let rest = line.strip_prefix("SIP/2.0 ")?;
    let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
    if code.len() != 3 {
        return None;
    }
    let code: u16 = code.parse().ok().filter(|c| (100..700).contains(c))?;
    Some((code, reason.trim().to_string()))
}

impl UserAgent {
    /// Asks the peer of an established call to call `refer_to` instead (blind transfer); the
    /// outcome comes as [`UaEvent::Transfer`] events. One transfer at a time per call.
    pub fn refer(&mut self, now: Instant, call: CallHandle, refer_to: &Uri) -> Result<(), UaError> {
        let transport = self
            .calls
            .get(&call)
            .map(|c| c.target.transport)
            .ok_or(UaError::UnknownCall)?;
        let contact = self.contact(transport);
        let c = self.calls.get_mut(&call).ok_or(UaError::UnknownCall)?;
        if c.state != CallState::Confirmed {
            return Err(UaError::InvalidState("REFER needs an established call"));
        }
        if c.transfer {
            return Err(UaError::InvalidState("a transfer is under way"));
        }
        let dialog = c
            .dialog
            .as_mut()
            .ok_or(UaError::InvalidState("no dialog"))?;
        let mut refer = dialog.next_request(Method::Refer);
        refer.headers.push("Max-Forwards", "70");
        refer.headers.push("Contact", contact);
        refer.headers.push("Refer-To", format!("<{refer_to}>"));
        refer.headers.push("Content-Length", "0");
        let target = dialog.next_hop();
        let tx = self.endpoint.send_request(now, refer, target)?;
        c.transfer = true;
        self.txs.insert(tx, (call, Purpose::Refer));
        Ok(())
    }

    /// Lets the peer of `call` send REFER (its trunk allows transfers). We do not act as the
    /// transferee (placing the new call for the room is not built), so such a REFER is answered
    /// 501; without this, a REFER is refused by policy with 403.
    pub fn allow_peer_refer(&mut self, call: CallHandle) -> Result<(), UaError> {
        let c = self.calls.get_mut(&call).ok_or(UaError::UnknownCall)?;
        c.peer_refer = true;
        Ok(())
    }

    /// A REFER from the peer: 403 unless allowed, 501 when allowed (see above).
    pub(super) fn on_peer_refer(
        &mut self,
        now: Instant,
        id: TransactionId,
        call: CallHandle,
        req: &Request,
    ) {
        if self.calls.get(&call).is_some_and(|c| c.peer_refer) {
            self.reply(now, id, req, 501, "Not Implemented");
        } else {
            self.reply(now, id, req, 403, "Forbidden");
        }
    }

    /// The answer to our REFER.
    pub(super) fn on_refer_response(
        &mut self,
        id: TransactionId,
        call: CallHandle,
        resp: &Response,
    ) {
        if resp.code < 200 {
            return;
        }
        self.txs.remove(&id);
        let progress = if resp.code < 300 {
            TransferProgress::Accepted
        } else {
            self.end_transfer(call);
            TransferProgress::Refused {
                code: resp.code,
                reason: resp.reason.clone(),
            }
        };
        self.events.push_back(UaEvent::Transfer { call, progress });
    }

    /// Our REFER got no answer (408) or could not be sent (503).
    pub(super) fn on_refer_failure(&mut self, call: CallHandle, code: u16, reason: &str) {
        self.end_transfer(call);
        self.events.push_back(UaEvent::Transfer {
            call,
            progress: TransferProgress::Refused {
                code,
                reason: reason.to_string(),
            },
        });
    }

    fn end_transfer(&mut self, call: CallHandle) {
        if let Some(c) = self.calls.get_mut(&call) {
            c.transfer = false;
        }
    }

    /// A NOTIFY in the dialog: the progress of our transfer, answered 200; one without a
    /// transfer of ours, or for another event package, gets 481 (RFC 6665 section 4.1.3).
    pub(super) fn on_notify(
        &mut self,
        now: Instant,
        id: TransactionId,
        call: CallHandle,
        req: &Request,
    ) {
        let refer_event = req
            .headers
            .get("Event")
            .or_else(|| req.headers.get("o"))
            .and_then(|e| e.split(';').next())
            .is_some_and(|e| e.trim().eq_ignore_ascii_case("refer"));
        let ours = self.calls.get(&call).is_some_and(|c| c.transfer);
        if !refer_event || !ours {
            return self.reply(now, id, req, 481, "Subscription Does Not Exist");
        }
        let Some((code, reason)) = sipfrag_status(&req.body) else {
            return self.reply(now, id, req, 400, "Bad Request");
        };
        self.reply(now, id, req, 200, "OK");
        let terminated = req
            .headers
            .get("Subscription-State")
            .and_then(|s| s.split(';').next())
            .is_some_and(|s| s.trim().eq_ignore_ascii_case("terminated"));
        let done = code >= 200 || terminated;
        if done {
            self.end_transfer(call);
        }
        self.events.push_back(UaEvent::Transfer {
            call,
            progress: TransferProgress::Status { code, reason, done },
        });
    }
}

//! Dial-in: inbound INVITEs go through admission, then find their room by the dialled number (a
//! room's own number, a configured route, or the shared PIN number); routed calls are answered
//! and run as inbound phone legs ([`super::inbound`]).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use dialbridge_sip::message::Request;
use dialbridge_sip::transport::Transport;
use dialbridge_sip::ua::{CallHandle, Reply, UaEvent};
use tokio::sync::mpsc;

use super::admission::{Admission, Decision, InviteFacts, TrunkSlot};
use super::inbound::{self, Destination, Inbound, Rules};
use super::legs::{self, PhoneLegs};
use super::router::CallRouter;
use crate::config::Config;
use crate::room::{CallRooms, PhoneNumber};
use crate::runtime::sip::SipHandle;
use crate::sync::lock;

pub struct DialIn {
    admission: Mutex<Admission>,
    rooms: CallRooms,
    pin_number: Option<PhoneNumber>,
    routes: Vec<(PhoneNumber, String)>,
    /// Per `[[inbound]]` trunk name, what its legs follow.
    rules: Vec<(String, Rules)>,
    /// Phone legs and what they share with dial-out; `None` only in unit tests.
    legs: Option<(Arc<PhoneLegs>, Arc<CallRouter>)>,
}

/// The dialled number of an INVITE: the Request-URI's user (or tel: number), else the To URI's,
/// normalised to E.164.
pub fn dialed_number(request: &Request) -> Option<PhoneNumber> {
    request
        .uri
        .user_number()
        .and_then(|u| PhoneNumber::from_sip_user(&u))
        .or_else(|| {
            let to = request.headers.to().ok()?;
            PhoneNumber::from_sip_user(&to.uri.user_number()?)
        })
}

fn header<'a>(request: &'a Request, name: &str) -> Option<&'a str> {
    request.headers.get(name)
}

impl DialIn {
    /// Routed calls become phone legs of `legs` (the dialer's, so both directions share ports,
    /// limits and room controls); without it they are answered 503 (unit tests route only).
    pub fn new(
        config: &Config,
        rooms: CallRooms,
        legs: Option<(Arc<PhoneLegs>, Arc<CallRouter>)>,
    ) -> DialIn {
        let rules = config
            .inbound_trunks()
            .iter()
            .map(|t| {
                (
                    t.name.clone(),
                    Rules {
                        pin_attempts: config.dialin.pin_attempts,
                        digit_timeout: config.dialin.digit_timeout.0,
                        wait_for_call: config.dialin.wait_for_call.0,
                        media_timeout: t.media_timeout.0,
                        max_call_duration: t.max_call_duration.0,
                    },
                )
            })
            .collect();
        DialIn {
            rules,
            legs,
            admission: Mutex::new(Admission::new(config, Instant::now(), rand::random())),
            rooms,
            pin_number: config.dialin.pin_number.clone(),
            routes: config
                .dialin
                .routes
                .iter()
                .map(|r| (r.number.clone(), r.room.clone()))
                .collect(),
        }
    }

    /// Numbers the configuration routes itself (no room may take them through the API).
    pub fn reserved_numbers(config: &Config) -> Vec<PhoneNumber> {
        config
            .dialin
            .pin_number
            .iter()
            .cloned()
            .chain(config.dialin.routes.iter().map(|r| r.number.clone()))
            .collect()
    }

    fn admission(&self) -> std::sync::MutexGuard<'_, Admission> {
        lock(&self.admission)
    }

    /// Where a number leads: the PIN number, a room's own number, then the configured routes;
    /// `None` for a number that leads nowhere.
    pub fn route(&self, number: Option<&PhoneNumber>) -> Option<Destination> {
        let number = number?;
        if self.pin_number.as_ref() == Some(number) {
            return Some(Destination::Pin);
        }
        match self.rooms.dialin_by_number(number) {
            Ok(Some(room)) => return Some(Destination::Room(room)),
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e.message, "dial-in lookup failed");
                return None;
            }
        }
        let (_, token) = self.routes.iter().find(|(n, _)| n == number)?;
        match self.rooms.dialin_by_token(token) {
            Ok(Some(room)) => Some(Destination::Room(room)),
            Ok(None) => {
                tracing::warn!(%number, room = %token, "[[dialin.routes]] names a room that does not exist");
                None
            }
            Err(e) => {
                tracing::warn!(error = %e.message, "dial-in lookup failed");
                None
            }
        }
    }

    /// Decides on a new inbound call and answers it (admission at once; routing in a task).
    pub async fn incoming(
        self: &Arc<Self>,
        sip: &SipHandle,
        call: CallHandle,
        request: Request,
        transport: Transport,
        remote: SocketAddr,
    ) {
        let dialed = dialed_number(&request);
        let request_uri = request.uri.to_string();
        let facts = InviteFacts {
            source: remote.ip(),
            transport,
            request_uri: &request_uri,
            user_agent: header(&request, "User-Agent"),
            proxy_authorization: request.headers.proxy_authorization().collect(),
            dialed: dialed.as_ref(),
        };
        let now = Instant::now();
        let decision = self.admission().decide(now, &facts);
        if matches!(decision, Decision::Forbid | Decision::Drop)
            && self.admission().probing(remote.ip(), now)
            && self.route(dialed.as_ref()).is_none()
        {
            // A scanner stays refused while it goes on probing; calls to real numbers (a carrier
            // that once sent a burst of misdials) let its budget refill.
            self.admission().unknown_number(remote.ip(), now);
        }
        let sent = match decision {
            Decision::Drop => sip.ignore(call).await,
            Decision::Forbid => sip.refuse_once(call, 403, "Forbidden").await,
            Decision::Refuse { code, reason } => sip.respond(call, Reply::new(code, reason)).await,
            Decision::Challenge { proxy_authenticate } => {
                let headers = proxy_authenticate
                    .into_iter()
                    .map(|v| ("Proxy-Authenticate".to_string(), v))
                    .collect();
                let reply = Reply::new(407, "Proxy Authentication Required").with_headers(headers);
                sip.respond(call, reply).await
            }
            Decision::Busy { retry_after } => {
                let headers = vec![("Retry-After".to_string(), retry_after.to_string())];
                let reply = Reply::new(503, "Service Unavailable").with_headers(headers);
                sip.respond(call, reply).await
            }
            Decision::Admit { trunk } => {
                // The trunk hears at once that the call is taken (routing may take a moment).
                if let Err(e) = sip.respond(call, Reply::new(100, "Trying")).await {
                    tracing::info!(%remote, error = %e, "cannot send 100 Trying");
                }
                // Registered here, in event order, so a CANCEL that follows at once is not missed.
                let events = match &self.legs {
                    Some((_, router)) => Some(router.register(call).await),
                    None => None,
                };
                let this = self.clone();
                let sip = sip.clone();
                let slot = {
                    let (this, trunk) = (self.clone(), trunk.clone());
                    TrunkSlot::new(move || this.admission().release(&trunk))
                };
                let admitted = Admitted {
                    call,
                    request,
                    transport,
                    remote,
                    dialed,
                    events,
                    slot,
                };
                tokio::spawn(async move {
                    this.route_and_answer(&sip, admitted, &trunk).await;
                    if let Some((_, router)) = &this.legs {
                        router.forget(call).await;
                    }
                });
                Ok(())
            }
        };
        if let Err(e) = sent {
            tracing::info!(%remote, error = %e, "cannot answer inbound call");
        }
    }

    /// Routes an admitted call and answers it: 404, or 180 and then the room's refusal (480)
    /// or the inbound leg.
    async fn route_and_answer(&self, sip: &SipHandle, admitted: Admitted, trunk: &str) {
        let Admitted {
            call,
            request,
            transport,
            remote,
            dialed,
            events,
            slot,
        } = admitted;
        let route = self.route(dialed.as_ref());
        let number = dialed.as_ref().map(PhoneNumber::as_str).unwrap_or("");
        tracing::info!(%remote, %transport, trunk, number, ?route, "inbound call routed");
        let Some(to) = route else {
            self.admission().unknown_number(remote.ip(), Instant::now());
            legs::count_refused_dialin(404);
            let _ = sip.respond(call, Reply::new(404, "Not Found")).await;
            return;
        };
        if sip.respond(call, Reply::new(180, "Ringing")).await.is_err() {
            return;
        }
        if let Destination::Room(room) = &to {
            let active = self.rooms.call_in_progress(room.room_id).unwrap_or(false);
            if !active && !room.wait_for_call {
                tracing::info!(room = %room.token, number, "inbound call refused: the room has no call and does not let callers wait");
                legs::count_refused_dialin(480);
                let _ = sip
                    .respond(call, Reply::new(480, "Temporarily Unavailable"))
                    .await;
                return;
            }
        }
        let (Some((shared, _)), Some(events), Some(rules)) = (
            &self.legs,
            events,
            self.rules.iter().find(|(n, _)| n == trunk).map(|(_, r)| r),
        ) else {
            tracing::error!(trunk, "no phone legs to answer an inbound call with");
            legs::count_refused_dialin(503);
            let _ = sip
                .respond(call, Reply::new(503, "Service Unavailable"))
                .await;
            return;
        };
        let inbound = Inbound {
            call,
            invite: request,
            transport,
            trunk: trunk.to_string(),
            events,
            slot,
        };
        inbound::run(shared.clone(), rules.clone(), inbound, to).await;
    }
}

/// An admitted INVITE on its way to routing, with its dialog's events (none in unit tests).
struct Admitted {
    call: CallHandle,
    request: Request,
    transport: Transport,
    remote: SocketAddr,
    dialed: Option<PhoneNumber>,
    events: Option<mpsc::UnboundedReceiver<UaEvent>>,
    /// Its trunk's concurrency slot, given back when the call is over on our side.
    slot: TrunkSlot,
}

#[cfg(test)]
mod tests {
    use super::*;
    use dialbridge_sip::message::Message;

    #[test]
    fn numbers_lead_to_the_pin_entry_a_room_or_nowhere() {
        use crate::events::EventBus;
        use crate::room::{DialinRoom, Rooms};
        use crate::store::{Store, StoreError};
        let config = Config::parse(
            r#"
[dialin]
pin_number = "+4930123400"

[[dialin.routes]]
number = "+4930123401"
room = "cfgroom1"

[[dialin.routes]]
number = "+4930123402"
room = "gone0000"
"#,
            "test",
        )
        .expect("config");
        let store = std::sync::Arc::new(Store::open_in_memory().expect("store"));
        let (api_room, cfg_room) = store
            .write(|tx| {
                let a = tx.insert_room("apiroom1", "A", 2, 1)?;
                tx.set_room_dialin_number(a, Some("+4930123456"))?;
                tx.set_room_dialin_wait(a, false)?;
                let c = tx.insert_room("cfgroom1", "C", 2, 1)?;
                Ok::<_, StoreError>((a, c))
            })
            .expect("rooms");
        let rooms = Rooms::new(store, std::sync::Arc::new(EventBus::default()));
        let dialin = DialIn::new(&config, rooms.for_calls(), None);
        let route = |n: &str| dialin.route(Some(&n.parse().expect("number")));
        assert_eq!(route("+4930123400"), Some(Destination::Pin));
        assert_eq!(
            route("+4930123456"),
            Some(Destination::Room(DialinRoom {
                room_id: api_room,
                token: "apiroom1".into(),
                wait_for_call: false
            }))
        );
        assert_eq!(
            route("+4930123401"),
            Some(Destination::Room(DialinRoom {
                room_id: cfg_room,
                token: "cfgroom1".into(),
                wait_for_call: true
            }))
        );
        assert_eq!(route("+4930123402"), None, "a route to a missing room");
        assert_eq!(route("+4940999999"), None);
        assert_eq!(dialin.route(None), None);
        let reserved = DialIn::reserved_numbers(&config);
        assert_eq!(reserved.len(), 3);
    }

    #[test]
    fn numbers_are_normalised_to_e164() {
        for (user, want) in [
            ("+4930123456", Some("+4930123456")),
            ("004930123456", Some("+4930123456")),
            ("4930123456", Some("+4930123456")),
            ("+49 (30) 123-456", Some("+4930123456")),
            ("+4930123456;npdi;rn=+4930999", Some("+4930123456")),
            ("030123456", None),
            ("alice", None),
            ("", None),
        ] {
            assert_eq!(
                PhoneNumber::from_sip_user(user)
                    .as_ref()
                    .map(PhoneNumber::as_str),
                want,
                "{user}"
            );
        }
    }

    fn invite(uri: &str, to: &str) -> Request {
        let text = format!(
            "INVITE {uri} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1\r\n\
             From: <sip:caller@127.0.0.1>;tag=1\r\nTo: {to}\r\nCall-ID: a@b\r\nCSeq: 1 INVITE\r\n\
             Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        );
        match Message::parse(text.as_bytes()) {
            Ok(Message::Request(r)) => r,
            other => panic!("not a request: {other:?}"),
        }
    }

    #[test]
    fn dialled_number_is_the_request_uri_user_else_to() {
        let r = invite(
            "sip:%2B4930123456@gw.example",
            "<sip:+4930999999@gw.example>",
        );
        assert_eq!(
            dialed_number(&r).map(|n| n.to_string()),
            Some("+4930123456".into())
        );
        let r = invite("sip:gw.example", "<sip:004930999999@gw.example>");
        assert_eq!(
            dialed_number(&r).map(|n| n.to_string()),
            Some("+4930999999".into())
        );
        let r = invite("tel:+4930123456", "<tel:+4930999999>");
        assert_eq!(
            dialed_number(&r).map(|n| n.to_string()),
            Some("+4930123456".into())
        );
        let r = invite("sip:conference@gw.example", "<sip:conference@gw.example>");
        assert_eq!(dialed_number(&r), None);
    }
}

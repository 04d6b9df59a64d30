//! Blind transfer (RFC 3515). As the transferor: a REFER in an established dialog asks the peer
//! to call another target; its implicit subscription reports the outcome in NOTIFYs whose
//! `message/sipfrag` bodies carry the status line of the peer's new call (RFC 3420). As the
//! transferee: the peer's REFER is refused, or performed (202, NOTIFY `100 Trying`, then the
//! status lines of our new call as the application reports them). A peer
//! that accepts and then goes silent does not leave the transfer under way: the first NOTIFY
//! is awaited 64*T1 (RFC 6665 Timer N), each later one until the subscription's expiry.

use std::time::{Duration, Instant};

use super::{CallHandle, CallState, Purpose, UaError, UaEvent, UserAgent};
use crate::endpoint::TransactionId;
use crate::message::{Method, NameAddr, Request, Response, Uri};

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
    /// The REFER was accepted but no outcome came in time (no NOTIFY within 64*T1, or the
    /// subscription expired before a final one): the transfer is over, the call goes on.
    Unreported,
}

/// What a REFER from the peer gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PeerRefer {
    /// Refused by policy: 403.
    Refused,
    /// Allowed, but nobody places the new call: 501.
    Unsupported,
    /// Performed: 202, and the application places the call ([`UaEvent::Referred`]).
    Performed,
}

/// How long an implicit subscription lasts: what our NOTIFYs as the transferee grant, and what a
/// peer's NOTIFY that names no expiry is taken to mean (RFC 6665 requires one); long enough for
/// a target to ring.
const DEFAULT_SUBSCRIPTION: Duration = Duration::from_secs(120);

/// The `expires` parameter of a Subscription-State value (`active;expires=60`).
fn subscription_expires(state: &str) -> Option<Duration> {
    state.split(';').skip(1).find_map(|param| {
        let (name, value) = param.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("expires")
            .then(|| value.trim().parse().ok().map(Duration::from_secs))
            .flatten()
    })
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

    /// Lets the peer of `call` send REFER (its trunk allows transfers) without performing it:
    /// such a REFER is answered 501; without this, a REFER is refused by policy with 403.
    pub fn allow_peer_refer(&mut self, call: CallHandle) -> Result<(), UaError> {
        let c = self.calls.get_mut(&call).ok_or(UaError::UnknownCall)?;
        c.peer_refer = PeerRefer::Unsupported;
        Ok(())
    }

    /// Makes us the transferee of `call`: the peer's REFER is accepted (202, NOTIFY
    /// `100 Trying`) and handed over as [`UaEvent::Referred`], one at a time.
    pub fn perform_peer_refer(&mut self, call: CallHandle) -> Result<(), UaError> {
        let c = self.calls.get_mut(&call).ok_or(UaError::UnknownCall)?;
        c.peer_refer = PeerRefer::Performed;
        Ok(())
    }

    /// A REFER from the peer: 403 or 501 by policy (see above); performed, 202 and its first
    /// NOTIFY, or 400 without a usable Refer-To, 491 while another one is performed.
    pub(super) fn on_peer_refer(
        &mut self,
        now: Instant,
        id: TransactionId,
        call: CallHandle,
        req: &Request,
    ) {
        let Some(c) = self.calls.get(&call) else {
            return;
        };
        match c.peer_refer {
            PeerRefer::Refused => return self.reply(now, id, req, 403, "Forbidden"),
            PeerRefer::Unsupported => return self.reply(now, id, req, 501, "Not Implemented"),
            PeerRefer::Performed => {}
        }
        if c.referred.is_some() {
            return self.reply(now, id, req, 491, "Request Pending");
        }
        let refer_to = req
            .headers
            .get("Refer-To")
            .and_then(|v| NameAddr::parse(v).ok())
            .map(|n| n.uri);
        let Some(refer_to) = refer_to else {
            return self.reply(now, id, req, 400, "Bad Refer-To");
        };
        let seq = req.headers.cseq().map(|c| c.seq).unwrap_or(0);
        let contact = self.contact(c.target.transport);
        let mut accepted = Response::for_request(req, 202, "Accepted");
        accepted.headers.push("Contact", contact);
        accepted.headers.push("Content-Length", "0");
        let _ = self.endpoint.send_response(now, id, accepted);
        if let Some(c) = self.calls.get_mut(&call) {
            c.referred = Some(seq);
        }
        // RFC 3515 section 2.4.4: the first NOTIFY follows the 202 at once.
        if let Err(e) = self.notify_transfer(now, call, 100, "Trying") {
            tracing::info!(?call, error = %e, "the first NOTIFY of the transfer was not sent");
        }
        self.events.push_back(UaEvent::Referred { call, refer_to });
    }

    /// Reports the status of our call to the peer's Refer-To target in a NOTIFY
    /// (`message/sipfrag`); a final `code` (200 and up) ends the subscription.
    pub fn notify_transfer(
        &mut self,
        now: Instant,
        call: CallHandle,
        code: u16,
        reason: &str,
    ) -> Result<(), UaError> {
        let transport = self
            .calls
            .get(&call)
            .map(|c| c.target.transport)
            .ok_or(UaError::UnknownCall)?;
        let contact = self.contact(transport);
        let c = self.calls.get_mut(&call).ok_or(UaError::UnknownCall)?;
        let id = c
            .referred
            .ok_or(UaError::InvalidState("no REFER of the peer is performed"))?;
        let dialog = c
            .dialog
            .as_mut()
            .ok_or(UaError::InvalidState("no dialog"))?;
        let done = code >= 200;
        let mut notify = dialog.next_request(Method::Notify);
        notify.headers.push("Max-Forwards", "70");
        notify.headers.push("Contact", contact);
        notify.headers.push("Event", format!("refer;id={id}"));
        let state = if done {
            "terminated;reason=noresource".to_string()
        } else {
            format!("active;expires={}", DEFAULT_SUBSCRIPTION.as_secs())
        };
        notify.headers.push("Subscription-State", state);
        notify.set_body(
            "message/sipfrag;version=2.0",
            format!("SIP/2.0 {code} {reason}\r\n").into_bytes(),
        );
        let target = dialog.next_hop();
        if done {
            c.referred = None;
        }
        let tx = self.endpoint.send_request(now, notify, target)?;
        let purpose = if done {
            Purpose::FinalNotify
        } else {
            Purpose::Other
        };
        if let Some(c) = self.calls.get_mut(&call).filter(|_| done) {
            c.final_notify_unanswered = true;
        }
        self.txs.insert(tx, (call, purpose));
        Ok(())
    }

    /// Our final NOTIFY was answered or failed: a BYE asked for meanwhile goes now.
    pub(super) fn final_notify_done(&mut self, now: Instant, call: CallHandle) {
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        c.final_notify_unanswered = false;
        if c.bye_pending && c.state == CallState::Confirmed {
            c.bye_pending = false;
            if let Err(e) = self.send_bye(now, call) {
                tracing::debug!(?call, error = %e, "BYE after the final NOTIFY not sent");
            }
        }
    }

    /// The answer to our REFER.
    pub(super) fn on_refer_response(
        &mut self,
        now: Instant,
        id: TransactionId,
        call: CallHandle,
        resp: &Response,
    ) {
        if resp.code < 200 {
            return;
        }
        self.txs.remove(&id);
        let progress = if resp.code < 300 {
            let first_notify = now + self.config.endpoint.timers.timeout();
            self.transfer_timers.insert(call, first_notify);
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
        self.transfer_timers.remove(&call);
        if let Some(c) = self.calls.get_mut(&call) {
            c.transfer = false;
        }
    }

    /// Accepted transfers whose outcome did not come in time end as [`TransferProgress::Unreported`].
    pub(super) fn transfer_timers_due(&mut self, now: Instant) {
        for call in self.transfer_timers.due(now) {
            self.end_transfer(call);
            tracing::info!(?call, "the transfer's outcome was not reported in time");
            self.events.push_back(UaEvent::Transfer {
                call,
                progress: TransferProgress::Unreported,
            });
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
        let state = req.headers.get("Subscription-State").unwrap_or("");
        let terminated = state
            .split(';')
            .next()
            .is_some_and(|s| s.trim().eq_ignore_ascii_case("terminated"));
        let done = code >= 200 || terminated;
        if done {
            self.end_transfer(call);
        } else {
            let expiry = subscription_expires(state).unwrap_or(DEFAULT_SUBSCRIPTION);
            self.transfer_timers.insert(call, now + expiry);
        }
        self.events.push_back(UaEvent::Transfer {
            call,
            progress: TransferProgress::Status { code, reason, done },
        });
    }
}

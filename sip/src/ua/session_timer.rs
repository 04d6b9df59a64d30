//! Session timers (RFC 4028): a call whose 2xx carried Session-Expires is refreshed by its
//! refresher within the interval, and ended by the other side when no refresh comes. When we
//! refresh, an UPDATE (RFC 3311) goes out at half the interval, or a re-INVITE with our current
//! SDP when the peer does not allow UPDATE; when the peer refreshes and does not, we send BYE at
//! the interval minus the smaller of 32 s and a third of it (section 10).

use std::time::{Duration, Instant};

use crate::endpoint::TransactionId;
use crate::message::{Method, Request, Response, Via};

use super::{CallHandle, CallState, Purpose, UaEvent, UserAgent};

/// Session timers of a user agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionTimerConfig {
    /// The interval our INVITEs ask for (Session-Expires).
    pub expires: Duration,
    /// The smallest interval we accept (Min-SE); RFC 4028 says 90 s, tests use less.
    pub min_se: Duration,
}

impl Default for SessionTimerConfig {
    fn default() -> Self {
        SessionTimerConfig {
            expires: Duration::from_secs(1800),
            min_se: Duration::from_secs(90),
        }
    }
}

/// The session timer of an established call.
#[derive(Debug)]
pub(super) struct SessionTimer {
    interval: Duration,
    /// We refresh; else the peer does and we watch.
    we_refresh: bool,
    /// The peer allows UPDATE: our refreshes use it.
    use_update: bool,
}

impl SessionTimer {
    /// When the next refresh is due (ours) or overdue (the peer's).
    fn deadline(&self, now: Instant) -> Instant {
        if self.we_refresh {
            now + self.interval / 2
        } else {
            now + self.interval - (self.interval / 3).min(Duration::from_secs(32))
        }
    }
}

fn allows_update(headers: &crate::message::Headers) -> bool {
    headers
        .allow()
        .is_ok_and(|a| a.iter().any(|m| m.eq_ignore_ascii_case("UPDATE")))
}

fn supports_timer(headers: &crate::message::Headers) -> bool {
    headers
        .supported()
        .is_ok_and(|s| s.iter().any(|t| t.eq_ignore_ascii_case("timer")))
}

impl UserAgent {
    /// The Supported header of our requests.
    pub(super) fn supported(&self) -> &'static str {
        if self.config.session_timer.is_some() {
            "100rel, timer"
        } else {
            super::SUPPORTED
        }
    }

    /// Session-Expires and Min-SE for an INVITE we send.
    pub(super) fn ask_session_timer(&self, req: &mut Request) {
        if let Some(st) = self.config.session_timer {
            req.headers
                .push("Session-Expires", st.expires.as_secs().to_string());
            req.headers.push("Min-SE", st.min_se.as_secs().to_string());
        }
    }

    /// A 422 to our INVITE: sends it again, once, asking for the registrar's Min-SE (same
    /// Call-ID and From tag, next CSeq, RFC 4028 section 7.4); true when sent.
    pub(super) fn retry_session_interval(
        &mut self,
        now: Instant,
        call: CallHandle,
        resp: &Response,
    ) -> bool {
        let Some(st) = self.config.session_timer else {
            return false;
        };
        let Ok(Some(min)) = resp.headers.min_se() else {
            return false;
        };
        let Some(c) = self.calls.get_mut(&call) else {
            return false;
        };
        if resp.code != 422 || c.state != CallState::Calling || c.session_retried {
            return false;
        }
        c.session_retried = true;
        let mut retry = c.invite.clone();
        retry.headers.remove("Via");
        let seq = retry
            .headers
            .cseq()
            .map(|s| s.seq.wrapping_add(1))
            .unwrap_or(2);
        retry.headers.set("CSeq", format!("{seq} INVITE"));
        let interval = u64::from(min).max(st.expires.as_secs());
        retry.headers.set("Session-Expires", interval.to_string());
        retry.headers.set("Min-SE", min.to_string());
        let target = c.target;
        let Ok(tx) = self.endpoint.send_request(now, retry, target) else {
            return false;
        };
        let Some(invite) = self.endpoint.request(tx).cloned() else {
            return false;
        };
        self.txs.insert(tx, (call, Purpose::Invite));
        if let Some(c) = self.calls.get_mut(&call) {
            c.invite_tx = Some(tx);
            c.invite = invite;
            c.got_provisional = false;
            c.early.clear();
        }
        true
    }

    /// 422 for an INVITE whose Session-Expires is below our Min-SE; true when sent.
    pub(super) fn refuse_short_session(
        &mut self,
        now: Instant,
        id: TransactionId,
        req: &Request,
    ) -> bool {
        let Some(st) = self.config.session_timer else {
            return false;
        };
        let Ok(Some(se)) = req.headers.session_expires() else {
            return false;
        };
        if u64::from(se.seconds) >= st.min_se.as_secs() {
            return false;
        }
        let mut r = Response::for_request(req, 422, "Session Interval Too Small");
        let tag = self.tag();
        let _ = r.set_to_tag(&tag);
        r.headers.push("Min-SE", st.min_se.as_secs().to_string());
        let _ = self.endpoint.send_response(now, id, r);
        true
    }

    /// Our 2xx to a caller's INVITE: takes its Session-Expires (refresher as it asked, else the
    /// caller when it supports timers, else us) and starts the timer.
    pub(super) fn answer_session_timer(
        &mut self,
        now: Instant,
        call: CallHandle,
        resp: &mut Response,
    ) {
        if self.config.session_timer.is_none() {
            return;
        }
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        let Ok(Some(se)) = c.invite.headers.session_expires() else {
            return;
        };
        let peer_supports = supports_timer(&c.invite.headers);
        let peer_refreshes = match se.refresher.as_deref() {
            Some("uac") => true,
            Some("uas") => false,
            _ => peer_supports,
        };
        let who = if peer_refreshes { "uac" } else { "uas" };
        resp.headers
            .push("Session-Expires", format!("{};refresher={who}", se.seconds));
        if peer_supports {
            resp.headers.push("Require", "timer");
        }
        let timer = SessionTimer {
            interval: Duration::from_secs(u64::from(se.seconds)),
            we_refresh: !peer_refreshes,
            use_update: allows_update(&c.invite.headers),
        };
        self.session_timers.insert(call, timer.deadline(now));
        c.session = Some(timer);
    }

    /// The 2xx to our INVITE: with Session-Expires, the timer runs as it says.
    pub(super) fn answered_session_timer(
        &mut self,
        now: Instant,
        call: CallHandle,
        resp: &Response,
    ) {
        if self.config.session_timer.is_none() {
            return;
        }
        let Ok(Some(se)) = resp.headers.session_expires() else {
            return;
        };
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        let timer = SessionTimer {
            interval: Duration::from_secs(u64::from(se.seconds).max(1)),
            we_refresh: se.refresher.as_deref() != Some("uas"),
            use_update: allows_update(&resp.headers),
        };
        self.session_timers.insert(call, timer.deadline(now));
        c.session = Some(timer);
    }

    /// A refresh from the peer (re-INVITE or UPDATE) that we answer 2xx: the session restarts,
    /// with the request's interval and refresher when it names them. Returns the header for our
    /// 2xx.
    pub(super) fn refreshed_by_peer(
        &mut self,
        now: Instant,
        call: CallHandle,
        req: &Request,
    ) -> Option<(String, String)> {
        let c = self.calls.get_mut(&call)?;
        let timer = c.session.as_mut()?;
        if let Ok(Some(se)) = req.headers.session_expires() {
            timer.interval = Duration::from_secs(u64::from(se.seconds).max(1));
            match se.refresher.as_deref() {
                // The sender of the refresh is the UAC of its transaction.
                Some("uac") => timer.we_refresh = false,
                Some("uas") => timer.we_refresh = true,
                _ => {}
            }
        }
        let who = if timer.we_refresh { "uas" } else { "uac" };
        let header = (
            "Session-Expires".to_string(),
            format!("{};refresher={who}", timer.interval.as_secs()),
        );
        let at = timer.deadline(now);
        self.session_timers.insert(call, at);
        Some(header)
    }

    /// The earliest session refresh or expiry.
    pub(super) fn session_timeout(&self) -> Option<Instant> {
        self.session_timers.earliest()
    }

    /// Refreshes that are due go out; sessions whose refresh did not come end with BYE.
    pub(super) fn session_timers_due(&mut self, now: Instant) {
        let due = self.session_timers.due(now);
        for call in due {
            self.session_timers.remove(&call);
            let Some(c) = self.calls.get(&call) else {
                continue;
            };
            let Some(timer) = c.session.as_ref() else {
                continue;
            };
            if c.state != CallState::Confirmed {
                continue;
            }
            if timer.we_refresh {
                if let Err(e) = self.send_refresh(now, call) {
                    tracing::info!(?call, error = %e, "cannot send the session refresh");
                    self.session_expired(now, call);
                }
            } else {
                tracing::info!(
                    ?call,
                    "session timer expired: the peer did not refresh; BYE"
                );
                self.session_expired(now, call);
            }
        }
    }

    /// Ends a call whose session expired: BYE (its outcome does not matter), and the call is
    /// over for the service.
    fn session_expired(&mut self, now: Instant, call: CallHandle) {
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        if let Some(dialog) = c.dialog.as_mut() {
            let bye = dialog.bye();
            let target = dialog.next_hop();
            if let Ok(tx) = self.endpoint.send_request(now, bye, target) {
                self.txs.insert(tx, (call, Purpose::ForkBye));
            }
        }
        self.events.push_back(UaEvent::SessionExpired { call });
        self.remove_call(call);
    }

    fn send_refresh(&mut self, now: Instant, call: CallHandle) -> Result<(), super::UaError> {
        let transport = self
            .calls
            .get(&call)
            .map(|c| c.target.transport)
            .ok_or(super::UaError::UnknownCall)?;
        let contact = self.contact(transport);
        let supported = self.supported();
        let min_se = self.config.session_timer.map(|s| s.min_se.as_secs());
        let c = self
            .calls
            .get_mut(&call)
            .ok_or(super::UaError::UnknownCall)?;
        let timer = c
            .session
            .as_ref()
            .ok_or(super::UaError::InvalidState("no session timer"))?;
        let (interval, use_update) = (timer.interval.as_secs(), timer.use_update);
        let dialog = c
            .dialog
            .as_mut()
            .ok_or(super::UaError::InvalidState("no dialog"))?;
        let method = if use_update {
            Method::Update
        } else {
            Method::Invite
        };
        let mut req = dialog.next_request(method);
        let target = dialog.next_hop();
        req.headers.push("Max-Forwards", "70");
        req.headers.push("Contact", contact);
        req.headers.push("Supported", supported);
        req.headers
            .push("Session-Expires", format!("{interval};refresher=uac"));
        if let Some(min_se) = min_se {
            req.headers.push("Min-SE", min_se.to_string());
        }
        match (use_update, c.local_body.as_ref()) {
            (false, Some(b)) => req.set_body(&b.content_type, b.bytes.clone()),
            _ => req.headers.push("Content-Length", "0"),
        }
        let tx = self.endpoint.send_request(now, req, target)?;
        self.txs.insert(tx, (call, Purpose::Refresh));
        Ok(())
    }

    /// The final response to our refresh: a 2xx (ACKed when it answers a re-INVITE) restarts
    /// the session; 408 and 481 mean the dialog is gone (RFC 4028 section 10); anything else
    /// leaves the session to run out, with another refresh at its deadline.
    pub(super) fn on_refresh_response(&mut self, now: Instant, call: CallHandle, resp: &Response) {
        if resp.code < 200 {
            return;
        }
        if (200..300).contains(&resp.code) {
            if resp
                .headers
                .cseq()
                .is_ok_and(|c| c.method == Method::Invite)
            {
                self.ack_refresh(call, resp);
            }
            let Some(c) = self.calls.get_mut(&call) else {
                return;
            };
            let Some(timer) = c.session.as_mut() else {
                return;
            };
            if let Ok(Some(se)) = resp.headers.session_expires() {
                timer.interval = Duration::from_secs(u64::from(se.seconds).max(1));
                timer.we_refresh = se.refresher.as_deref() != Some("uas");
            }
            let at = timer.deadline(now);
            self.session_timers.insert(call, at);
            return;
        }
        if matches!(resp.code, 408 | 481) {
            self.refresh_failed(now, call, resp.code);
            return;
        }
        let Some(timer) = self.calls.get(&call).and_then(|c| c.session.as_ref()) else {
            return;
        };
        let at = timer.deadline(now);
        self.session_timers.insert(call, at);
    }

    /// Our refresh got no answer or a 408/481: the session is over.
    pub(super) fn refresh_failed(&mut self, now: Instant, call: CallHandle, code: u16) {
        tracing::info!(?call, code, "session refresh failed; BYE");
        if self.calls.contains_key(&call) {
            self.session_expired(now, call);
        }
    }

    /// The ACK for the 2xx to our refreshing re-INVITE.
    fn ack_refresh(&mut self, call: CallHandle, resp: &Response) {
        let branch = self.endpoint.new_branch();
        let Some(c) = self.calls.get(&call) else {
            return;
        };
        let Some(dialog) = c.dialog.as_ref() else {
            return;
        };
        let Ok(seq) = resp.headers.cseq().map(|c| c.seq) else {
            return;
        };
        let mut ack = dialog.request(Method::Ack, seq);
        let target = dialog.next_hop();
        if let Some(local) = self.endpoint.local_addr(target.transport) {
            let mut via = Via::new(
                target.transport.as_str(),
                local.ip().into(),
                Some(local.port()),
                &branch,
            );
            via.set_param("rport", None);
            ack.headers.push_front("Via", via.to_string());
        }
        ack.headers.push("Max-Forwards", "70");
        ack.headers.push("Content-Length", "0");
        let _ = self.endpoint.send_stateless(ack, target);
    }
}

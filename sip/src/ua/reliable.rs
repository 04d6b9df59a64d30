//! Reliable provisional responses (RFC 3262): our PRACKs for the reliable 18x of the calls we
//! place, and our own reliable 18x for callers that support or require 100rel, retransmitted
//! until their PRACK comes (T1, doubling), the call refused with 504 after 64*T1 without one.

use std::time::{Duration, Instant};

use crate::dialog::Dialog;
use crate::message::{Method, Request, Response};

use super::{CallHandle, CallState, Purpose, UaEvent, UserAgent};

/// An early dialog our PRACKs go out in.
#[derive(Debug)]
pub(super) struct EarlyDialog {
    pub(super) dialog: Dialog,
    last_rseq: u32,
}

/// What a provisional response that requires 100rel is to the call.
pub(super) enum Reliable {
    /// New: PRACKed, and passed on.
    New,
    /// A retransmission or out of order (RFC 3262 section 4): not passed on.
    Drop,
    /// Not reliable, or without a usable RSeq or To tag: passed on as an unreliable one.
    Unreliable,
}

/// Our reliable provisional response of an incoming call, until its PRACK.
#[derive(Debug)]
pub(super) struct ReliableOut {
    response: Response,
    rseq: u32,
    /// It carried SDP: a 2xx waits for its PRACK (RFC 3262 section 3).
    with_body: bool,
    next: Instant,
    interval: Duration,
    give_up: Instant,
}

impl UserAgent {
    /// PRACKs a provisional response that requires 100rel, in its early dialog (RFC 3262
    /// section 4): each RSeq once, in order; the PRACK's own transaction retransmits it.
    pub(super) fn prack(&mut self, now: Instant, call: CallHandle, resp: &Response) -> Reliable {
        let Ok(Some(rseq)) = resp.headers.rseq() else {
            return Reliable::Unreliable;
        };
        let Some(c) = self.calls.get_mut(&call) else {
            return Reliable::Unreliable;
        };
        let Some(tag) = resp
            .headers
            .to()
            .ok()
            .and_then(|t| t.tag().map(str::to_string))
        else {
            return Reliable::Unreliable;
        };
        let index = match c.early.iter().position(|e| e.dialog.id.remote_tag == tag) {
            Some(i) => {
                let last = c.early[i].last_rseq;
                if rseq != last.wrapping_add(1) {
                    return Reliable::Drop;
                }
                c.early[i].last_rseq = rseq;
                c.early[i].dialog.refresh_target(&resp.headers);
                i
            }
            None => {
                let Ok(dialog) = Dialog::uac(&c.invite, resp, c.target) else {
                    return Reliable::Unreliable;
                };
                c.early.push(EarlyDialog {
                    dialog,
                    last_rseq: rseq,
                });
                c.early.len() - 1
            }
        };
        let invite_seq = c.invite.headers.cseq().map(|c| c.seq).unwrap_or(1);
        let early = &mut c.early[index];
        let mut prack = early.dialog.next_request(Method::Prack);
        prack.headers.push("Max-Forwards", "70");
        prack
            .headers
            .push("RAck", format!("{rseq} {invite_seq} INVITE"));
        prack.headers.push("Content-Length", "0");
        let target = early.dialog.next_hop();
        match self.endpoint.send_request(now, prack, target) {
            Ok(tx) => {
                self.txs.insert(tx, (call, Purpose::Other));
            }
            Err(e) => tracing::info!(error = %e, "cannot send PRACK"),
        }
        Reliable::New
    }

    /// Whether our `code` answer to `invite` goes out reliably: a 1xx (not 100) to a caller that
    /// requires 100rel, or that supports it and gets early media.
    pub(super) fn wants_reliable(invite: &Request, code: u16, with_body: bool) -> bool {
        if !(101..200).contains(&code) {
            return false;
        }
        let has = |name: &str| {
            invite
                .headers
                .tokens(name)
                .is_ok_and(|t| t.iter().any(|t| t.eq_ignore_ascii_case("100rel")))
        };
        has("Require") || (with_body && has("Supported"))
    }

    /// Whether an answer must wait for the PRACK of our outstanding reliable 1xx: a second
    /// reliable 1xx, or a 2xx after one with SDP.
    pub(super) fn must_hold(&self, call: CallHandle, code: u16, with_body: bool) -> bool {
        let Some(c) = self.calls.get(&call) else {
            return false;
        };
        let Some(out) = c.reliable.as_ref() else {
            return false;
        };
        if !self.reliable_timers.contains_key(&call) {
            return false;
        }
        Self::wants_reliable(&c.invite, code, with_body)
            || ((200..300).contains(&code) && out.with_body)
    }

    /// Makes `resp` reliable (Require, RSeq) and starts its retransmissions.
    pub(super) fn send_reliably(&mut self, now: Instant, call: CallHandle, resp: &mut Response) {
        let t1 = self.endpoint.config().timers.t1;
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        let rseq = c.next_rseq;
        c.next_rseq = c.next_rseq.wrapping_add(1).max(1);
        resp.headers.push("Require", "100rel");
        resp.headers.push("RSeq", rseq.to_string());
        let next = now + t1;
        c.reliable = Some(Box::new(ReliableOut {
            response: resp.clone(),
            rseq,
            with_body: !resp.body.is_empty(),
            next,
            interval: t1,
            give_up: now + t1 * 64,
        }));
        self.reliable_timers.insert(call, next);
    }

    /// A final answer went out: our reliable 1xx is no longer retransmitted (a late PRACK still
    /// gets its 200), and answers held for it are dropped.
    pub(super) fn final_sent(&mut self, call: CallHandle) {
        self.reliable_timers.remove(&call);
        if let Some(c) = self.calls.get_mut(&call) {
            c.held.clear();
        }
    }

    /// The earliest retransmission of a reliable 1xx.
    pub(super) fn reliable_timeout(&self) -> Option<Instant> {
        self.reliable_timers.earliest()
    }

    /// Retransmits the reliable 1xx that are due; refuses the calls whose PRACK never came.
    pub(super) fn reliable_retransmissions(&mut self, now: Instant) {
        let due = self.reliable_timers.due(now);
        for call in due {
            let Some(c) = self.calls.get_mut(&call) else {
                self.reliable_timers.remove(&call);
                continue;
            };
            let (Some(out), Some(tx)) = (c.reliable.as_mut(), c.invite_tx) else {
                self.reliable_timers.remove(&call);
                continue;
            };
            if now >= out.give_up {
                tracing::info!(?call, "reliable provisional response never PRACKed: 504");
                c.reliable = None;
                self.reliable_timers.remove(&call);
                if self
                    .respond_with_headers(now, call, 504, "Server Time-out", &[], None)
                    .is_ok()
                {
                    self.events.push_back(UaEvent::Cancelled { call });
                }
                continue;
            }
            out.interval *= 2;
            // The last wait ends at 64*T1, when the call is refused.
            out.next = (now + out.interval).min(out.give_up);
            let (next, response) = (out.next, out.response.clone());
            self.reliable_timers.insert(call, next);
            let _ = self.endpoint.send_response(now, tx, response);
        }
    }

    /// A PRACK in the early (or confirmed) dialog of an incoming call: 200 when its RAck names
    /// our reliable 1xx, which then stops and lets held answers go; else 481.
    pub(super) fn on_prack(
        &mut self,
        now: Instant,
        id: crate::endpoint::TransactionId,
        call: CallHandle,
        req: &Request,
    ) {
        let rack = req.headers.rack().ok().flatten();
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        let invite_seq = c.invite.headers.cseq().map(|c| c.seq).ok();
        let matches = match (c.reliable.as_ref(), rack) {
            (Some(out), Some(rack)) => {
                rack.rseq == out.rseq
                    && Some(rack.cseq) == invite_seq
                    && rack.method == Method::Invite
            }
            _ => false,
        };
        if !matches {
            return self.reply(now, id, req, 481, "Call/Transaction Does Not Exist");
        }
        c.reliable = None;
        let held = std::mem::take(&mut c.held);
        let ringing = c.state == CallState::Ringing;
        self.reliable_timers.remove(&call);
        self.reply(now, id, req, 200, "OK");
        if !ringing {
            return;
        }
        for reply in held {
            if let Err(e) = self.respond_with(now, call, reply) {
                tracing::info!(?call, error = %e, "held answer not sent");
            }
        }
    }
}

/// Whether a response requires a PRACK: `Require: 100rel` (RFC 3262 section 4).
pub(super) fn requires_100rel(resp: &Response) -> bool {
    resp.headers
        .require()
        .is_ok_and(|r| r.iter().any(|t| t.eq_ignore_ascii_case("100rel")))
}

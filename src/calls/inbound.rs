//! An inbound phone leg once dial-in admitted and routed it: answered at once with SDP (an answer
//! to the INVITE's offer, or an offer when it had none), then the PIN entry or the wait for the
//! room's call with prompts played to the caller, then the caller in the room as a phone
//! attendee until either side hangs up. Status, call record, DTMF, mute and hangup paths are
//! those of dial-out legs: the leg is in the same table ([`PhoneLegs`]) and reports through
//! `legs::report`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use dialbridge_sip::message::Request;
use dialbridge_sip::sdp::{Direction, LocalMedia, SessionDescription};
use dialbridge_sip::transport::Transport;
use dialbridge_sip::ua::{Body, CallHandle, Reply, UaEvent};
use tokio::sync::mpsc;

use super::admission::TrunkSlot;
use super::leg_media::{sdp_of, LegMedia, LegMediaError};
use super::legs::{self, LiveLeg, PhoneLegs};
use super::phone_call::{Action, MediaInput, PhoneCall, RoomLookup, SipInput};
use super::pin::Prompt;
use super::task::{self, Effects, Inputs};
use super::wav;
use crate::room::{
    CallRooms, CallStatus, DialinCaller, DialinRoom, PhoneNumber, PhoneStatus, Rooms,
};

pub use super::phone_call::{Destination, Rules};

/// An admitted inbound call and the events of its dialog.
pub struct Inbound {
    pub call: CallHandle,
    pub invite: Request,
    pub transport: Transport,
    /// The `[[inbound]]` trunk that admitted it.
    pub trunk: String,
    pub events: mpsc::UnboundedReceiver<UaEvent>,
    /// The trunk's concurrency slot: given back when the call is over on our side (our BYE
    /// sent, or the caller's received), not when our BYE's transaction ends.
    pub slot: TrunkSlot,
}

/// The caller's number for the room: P-Asserted-Identity, else From; none when withheld
/// (`Privacy: id` or `user`, an anonymous From) or not a phone number.
pub fn caller_number(invite: &Request) -> Option<PhoneNumber> {
    let privacy = invite
        .headers
        .get("Privacy")
        .unwrap_or("")
        .to_ascii_lowercase();
    if privacy
        .split(';')
        .any(|p| matches!(p.trim(), "id" | "user" | "header"))
    {
        return None;
    }
    let asserted = invite
        .headers
        .get("P-Asserted-Identity")
        .and_then(|v| dialbridge_sip::message::NameAddr::parse(v).ok())
        .and_then(|n| n.uri.user_number());
    let from = invite.headers.from().ok().and_then(|f| f.uri.user_number());
    asserted
        .into_iter()
        .chain(from)
        .find(|u| !u.eq_ignore_ascii_case("anonymous"))
        .and_then(|u| PhoneNumber::from_sip_user(&u))
}

/// The INVITE's SDP offer; `Ok(None)` when it has no body.
fn offer_of(invite: &Request) -> Result<Option<SessionDescription>, LegMediaError> {
    if invite.body.is_empty() {
        return Ok(None);
    }
    let content_type = invite.headers.get("Content-Type").unwrap_or("");
    sdp_of(content_type, &invite.body).map(Some)
}

/// An answered caller's task: the media, the room and the trunk's slot, driven by the call's
/// state machine.
struct Leg {
    shared: Arc<PhoneLegs>,
    call: CallHandle,
    call_id: String,
    trunk: String,
    caller: Option<PhoneNumber>,
    media: LegMedia,
    /// The caller in its room, once joined: what its status reports go to.
    joined: Option<DialinCaller>,
    /// Dropped (given back) once the call is over on our side.
    slot: Option<TrunkSlot>,
    /// Our offer in the 200 to an INVITE without one, until the ACK answers it.
    our_offer: Option<SessionDescription>,
}

/// The rooms as a caller's call looks them up.
struct Lookup(CallRooms);

impl RoomLookup for Lookup {
    fn pin(&self, pin: &str) -> Option<DialinRoom> {
        match self.0.dialin_by_pin(pin) {
            Ok(room) => room,
            Err(e) => {
                tracing::warn!(error = %e.message, "PIN lookup failed");
                None
            }
        }
    }

    fn has_call(&self, room: &DialinRoom) -> bool {
        self.0.call_in_progress(room.room_id).unwrap_or(false)
    }
}

/// Answers the call and runs it to its end; everything it held is freed when it returns.
pub(crate) async fn run(shared: Arc<PhoneLegs>, rules: Rules, inbound: Inbound, to: Destination) {
    let Inbound {
        call,
        invite,
        transport,
        trunk,
        events,
        slot,
    } = inbound;
    let sip = shared.sip.clone();
    let refuse = |code: u16, reason: &'static str| {
        let sip = sip.clone();
        legs::count_refused_dialin(code);
        async move {
            if let Err(e) = sip.respond(call, Reply::new(code, reason)).await {
                tracing::info!(error = %e, code, "cannot refuse inbound call");
            }
        }
    };
    let Some(&(bind_ip, announce_ip)) = shared.media_ip.get(&transport) else {
        tracing::error!(%transport, "no address to announce for inbound media: set media.public_ip for a wildcard [sip] listen");
        refuse(503, "Service Unavailable").await;
        return;
    };
    let offer = match offer_of(&invite) {
        Ok(offer) => offer,
        Err(reason) => {
            tracing::info!(%reason, "inbound call refused: unusable offer");
            refuse(488, "Not Acceptable Here").await;
            return;
        }
    };
    let (lease, rtp, rtcp) = match shared.lease_and_bind(bind_ip) {
        Ok(bound) => bound,
        Err(e) => {
            tracing::warn!(error = %e.message, "inbound call refused");
            refuse(503, "Service Unavailable").await;
            return;
        }
    };
    let local = LocalMedia {
        address: announce_ip,
        port: lease.rtp(),
        direction: Direction::SendRecv,
    };
    let call_id = format!("{:032x}", rand::random::<u128>());
    let (mut media, media_rx) = LegMedia::new(
        shared.clone(),
        &call_id,
        (rtp, rtcp),
        local,
        rules.media_timeout,
        None,
        // Callers that offer SDES keys get SRTP; the others plain RTP.
        dialbridge_sip::sdp::SrtpPolicy::Optional,
    );
    let (ours, remote, our_offer) = match &offer {
        Some(offer) => match media.answer(offer) {
            Ok((answer, remote)) => (answer, Some(remote), None),
            Err(reason) => {
                tracing::info!(%reason, "inbound call refused: no common codec");
                refuse(488, "Not Acceptable Here").await;
                return;
            }
        },
        None => {
            let offer = media.offer();
            (offer.clone(), None, Some(offer))
        }
    };
    let (control_tx, control) = mpsc::unbounded_channel();
    shared.legs().insert(
        call_id.clone(),
        LiveLeg {
            room_id: 0,
            attendee_id: 0,
            trunk: trunk.clone(),
            inbound: true,
            session_id: Rooms::phone_session_id(&call_id),
            control: control_tx,
            has_media: false,
            finished: false,
            replaces: None,
        },
    );
    shared.publish_gauges();
    let mut leg = Leg {
        shared: shared.clone(),
        call,
        call_id: call_id.clone(),
        trunk,
        caller: caller_number(&invite),
        media,
        joined: None,
        slot: Some(slot),
        our_offer,
    };
    tracing::info!(%call_id, caller = ?leg.caller.as_ref().map(PhoneNumber::as_str), "answering inbound call");
    let answered = match remote {
        Some(remote) => leg.media.point(remote),
        None => Ok(()),
    };
    let answered = match answered {
        Ok(()) => shared
            .sip
            .respond(
                call,
                Reply::new(200, "OK").with_body(Some(Body::sdp(ours.to_string().into_bytes()))),
            )
            .await
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    match answered {
        Err(e) => {
            tracing::info!(%call_id, error = %e, "inbound call not answered");
            refuse(500, "Server Internal Error").await;
        }
        Ok(()) => {
            shared.keep_dialog(&call_id, call).await;
            // The leg answers the caller's re-INVITEs itself (new address, hold).
            if let Err(e) = shared.sip.manual_reinvites(call).await {
                tracing::warn!(%call_id, error = %e, "re-INVITEs stay automatic");
            }
            let lookup = Box::new(Lookup(shared.rooms.clone()));
            let started = leg.media.started();
            let call = PhoneCall::answering(Instant::now(), rules, to, lookup, started);
            let inputs = Inputs {
                events,
                control,
                media: media_rx,
            };
            task::drive(&mut leg, call, inputs).await;
        }
    }
    shared.end_leg(&call_id, leg.media.finish(), lease);
}

impl Effects for Leg {
    fn call_id(&self) -> &str {
        &self.call_id
    }

    fn far_end(&self) -> &'static str {
        "caller"
    }

    fn phone_sends(&self) -> bool {
        self.media.phone_sends()
    }

    async fn carry_out(&mut self, call: &mut PhoneCall, action: Action) -> bool {
        let now = Instant::now();
        match action {
            Action::Report {
                status,
                cause,
                code,
                message,
            } => {
                if let Some(caller) = &self.joined {
                    let change = PhoneStatus {
                        status,
                        cause,
                        code,
                        message,
                    };
                    legs::report(&self.shared, &caller.record, caller.record_id, change);
                }
            }
            Action::StartMedia { body, .. } => {
                let started = match &self.our_offer {
                    Some(offer) => self
                        .media
                        .apply_answer(offer, &body)
                        .map_err(|e| e.to_string()),
                    None => Err("no offer of ours to answer".to_string()),
                };
                if let Err(e) = &started {
                    tracing::info!(call_id = %self.call_id, error = %e, "caller's answer unusable");
                }
                call.handle_media(now, MediaInput::Started(started));
            }
            Action::KeepDialog => self.shared.keep_dialog(&self.call_id, self.call).await,
            Action::HangUp(cause) => {
                tracing::info!(call_id = %self.call_id, %cause, "hanging up inbound call");
                let input = match self.shared.sip.hangup(self.call).await {
                    Ok(()) => SipInput::HangupSent,
                    Err(e) => {
                        tracing::warn!(call_id = %self.call_id, error = %e, "hangup refused");
                        SipInput::HangupRefused(e.to_string())
                    }
                };
                call.handle_sip(now, input);
            }
            Action::CutOff => self.media.cut_off(),
            Action::SendDtmf(digits) => self.media.dtmf(digits),
            Action::Mute(mute) => self.media.mute(mute),
            Action::KeyPress(digit) => {
                if let Some(caller) = &self.joined {
                    if let Err(e) = self.shared.rooms.phone_key(&caller.who, digit) {
                        tracing::warn!(call_id = %self.call_id, error = %e.message, "key press not published");
                    }
                }
            }
            Action::AnswerReInvite(body) => self.media.reinvite(self.call, &body).await,
            Action::FollowAck(body) => self.media.reinvite_ack(&body),
            Action::Play(prompt) => {
                let length = self.play(prompt);
                call.handle_media(now, MediaInput::Playing(length));
            }
            Action::StopPrompt => {
                self.media.prompt(None);
            }
            Action::Join(room) => {
                let joined = self.join(room);
                call.handle_media(now, MediaInput::Joined(joined));
            }
            Action::ReleaseSlot => self.slot = None,
            Action::EndedUnjoined(cause) => {
                legs::count_end("dialin", CallStatus::Cleared, Some(cause));
                tracing::info!(call_id = %self.call_id, %cause, "inbound call ended before joining a room");
            }
            Action::Refer(to) => {
                if let Err(error) = legs::refer(&self.shared, &self.call_id, self.call, &to).await {
                    call.handle_sip(now, SipInput::ReferRefused(error));
                }
            }
            Action::TransferStatus {
                status,
                code,
                message,
            } => {
                if let Some(caller) = &self.joined {
                    legs::report_transfer(
                        &self.shared,
                        &caller.record,
                        status.as_str(),
                        code,
                        message,
                    );
                }
            }
            // A caller's trunk ([[inbound]]) does not perform REFERs: they are refused.
            Action::PlaceReplacement(_) | Action::NotifyTransfer { .. } => {
                tracing::debug!(call_id = %self.call_id, ?action, "not a dial-in's action");
            }
            Action::Done => return false,
        }
        true
    }
}

impl Leg {
    /// Plays a prompt; how long it plays, or `None` when it cannot.
    fn play(&self, prompt: Prompt) -> Option<Duration> {
        match wav::prompt(prompt) {
            Ok(samples) => {
                if !self.media.prompt(Some(samples)) {
                    return None;
                }
                Some(Duration::from_secs_f64(
                    samples.len() as f64 / wav::PROMPT_RATE as f64,
                ))
            }
            Err(e) => {
                tracing::warn!(call_id = %self.call_id, prompt = prompt.file_name(), error = %e, "prompt unusable");
                None
            }
        }
    }

    /// Puts the caller in `room` as a phone attendee; false if it cannot join.
    fn join(&mut self, room: DialinRoom) -> bool {
        let caller = match self.shared.rooms.dialin_caller(
            room.room_id,
            self.caller.as_ref(),
            &self.trunk,
            &self.call_id,
        ) {
            Ok(caller) => caller,
            Err(e) => {
                tracing::warn!(call_id = %self.call_id, error = %e.message, "caller cannot join the room");
                return false;
            }
        };
        if let Some(leg) = self.shared.legs().get_mut(&self.call_id) {
            leg.room_id = caller.who.room_id;
            leg.attendee_id = caller.who.attendee_id;
        }
        self.media.prompt(None);
        self.media.join(caller.who.clone());
        tracing::info!(call_id = %self.call_id, room = %room.token, attendee_id = caller.who.attendee_id, "caller joined the room");
        self.joined = Some(caller);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dialbridge_sip::message::Message;

    fn invite(headers: &str) -> Request {
        let text = format!(
            "INVITE sip:+4930123456@gw.example SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1\r\n\
             {headers}To: <sip:+4930123456@gw.example>\r\nCall-ID: a@b\r\nCSeq: 1 INVITE\r\n\
             Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        );
        match Message::parse(text.as_bytes()) {
            Ok(Message::Request(r)) => r,
            other => panic!("not a request: {other:?}"),
        }
    }

    #[test]
    fn the_callers_number_is_shown_unless_withheld() {
        let number = |headers: &str| caller_number(&invite(headers)).map(|n| n.to_string());
        assert_eq!(
            number("From: <sip:+4930555000@carrier>;tag=1\r\n"),
            Some("+4930555000".into())
        );
        assert_eq!(
            number("From: <sip:004930555000@carrier>;tag=1\r\nP-Asserted-Identity: <sip:+4940111222@carrier>\r\n"),
            Some("+4940111222".into()),
            "the asserted identity wins"
        );
        assert_eq!(
            number("From: \"Anonymous\" <sip:anonymous@anonymous.invalid>;tag=1\r\n"),
            None
        );
        assert_eq!(
            number("From: <sip:+4930555000@carrier>;tag=1\r\nPrivacy: id\r\n"),
            None,
            "Privacy: id withholds it"
        );
        assert_eq!(number("From: <sip:alice@carrier>;tag=1\r\n"), None);
    }
}

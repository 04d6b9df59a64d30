//! An inbound phone leg once dial-in admitted and routed it: answered at once with SDP (an answer
//! to the INVITE's offer, or an offer when it had none), then the PIN entry or the wait for the
//! room's call with prompts played to the caller, then the caller in the room as a phone
//! attendee until either side hangs up. Status, call record, DTMF, mute and hangup paths are
//! those of dial-out legs: the leg is in the same table ([`Shared::legs`]) and reports through
//! [`phone_leg::report`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use dialbridge_sip::message::Request;
use dialbridge_sip::sdp::{Direction, LocalMedia, SessionDescription};
use dialbridge_sip::transport::Transport;
use dialbridge_sip::ua::{Body, CallHandle, Reply, UaEvent};
use tokio::sync::mpsc;

use super::admission::TrunkSlot;
use super::dialin::normalize;
use super::dialogs;
use super::dialout::{LiveLeg, Shared};
use super::leg_media::{is_sdp, sdp_of, LegMedia, LegMediaError};
use super::phone_leg::{self, Control, HANGUP_GRACE};
use super::pin::{Action, PinEntry, Prompt};
use super::wav;
use crate::room::{CallStatus, Cause, DialinCaller, DialinRoom, PhoneNumber, PhoneStatus, Rooms};
use crate::runtime::media::PhoneMediaEvent;

/// How often a waiting caller's room is checked for a call.
const WAIT_POLL: Duration = Duration::from_millis(250);
/// Time allowed beyond the goodbye prompt's length before the BYE goes out anyway.
const PROMPT_SLACK: Duration = Duration::from_secs(2);

/// Where a routed caller goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    Room(DialinRoom),
    /// The shared number: the caller types a room's PIN first.
    Pin,
}

/// The `[dialin]` and `[[inbound]]` settings a leg follows.
#[derive(Debug, Clone)]
pub struct Rules {
    pub pin_attempts: u32,
    pub digit_timeout: Duration,
    pub wait_for_call: Duration,
    pub media_timeout: Duration,
    pub max_call_duration: Duration,
}

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
        .and_then(|u| normalize(&u))
}

/// The INVITE's SDP offer; `Ok(None)` when it has no body.
fn offer_of(invite: &Request) -> Result<Option<SessionDescription>, LegMediaError> {
    if invite.body.is_empty() {
        return Ok(None);
    }
    let content_type = invite.headers.get("Content-Type").unwrap_or("");
    sdp_of(content_type, &invite.body).map(Some)
}

enum Phase {
    /// Answered; nothing started until the media is known (an offer in our 200 waits for
    /// the ACK's answer).
    Answered {
        to: Destination,
        since: Instant,
    },
    Pin(PinEntry<DialinRoom>),
    Waiting {
        room: DialinRoom,
        until: Instant,
    },
    Joined {
        caller: Box<DialinCaller>,
        since: Instant,
    },
    /// The goodbye prompt plays; the BYE follows.
    Leaving {
        cause: Cause,
        until: Instant,
    },
}

struct Leg {
    shared: Arc<Shared>,
    rules: Rules,
    call: CallHandle,
    call_id: String,
    trunk: String,
    caller: Option<PhoneNumber>,
    media: LegMedia,
    phase: Phase,
    /// Set once we hang up: the cause and when.
    ending: Option<(Cause, Instant)>,
    /// Dropped (given back) once the call is over on our side.
    slot: Option<TrunkSlot>,
    /// The final status is out.
    finished: bool,
}

/// Answers the call and runs it to its end; everything it held is freed when it returns.
pub(crate) async fn run(shared: Arc<Shared>, rules: Rules, inbound: Inbound, to: Destination) {
    let Inbound {
        call,
        invite,
        transport,
        trunk,
        mut events,
        slot,
    } = inbound;
    let sip = shared.sip.clone();
    let refuse = |code: u16, reason: &'static str| {
        let sip = sip.clone();
        phone_leg::count_refused_dialin(code);
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
    let (mut media, mut media_rx) = LegMedia::new(
        shared.clone(),
        &call_id,
        (rtp, rtcp),
        local,
        rules.media_timeout,
        None,
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
    let (control_tx, mut control) = mpsc::unbounded_channel();
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
        },
    );
    shared.publish_gauges();
    let mut leg = Leg {
        shared: shared.clone(),
        rules,
        call,
        call_id: call_id.clone(),
        trunk,
        caller: caller_number(&invite),
        media,
        phase: Phase::Answered {
            to,
            since: Instant::now(),
        },
        ending: None,
        slot: Some(slot),
        finished: false,
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
            dialogs::keep(&shared, &call_id, call).await;
            // The leg answers the caller's re-INVITEs itself (new address, hold).
            if let Err(e) = shared.sip.manual_reinvites(call).await {
                tracing::warn!(%call_id, error = %e, "re-INVITEs stay automatic");
            }
            if leg.media.started() {
                leg.begin(Instant::now());
            }
            leg.drive(our_offer.as_ref(), &mut events, &mut control, &mut media_rx)
                .await;
        }
    }
    shared.end_leg(&call_id, leg.media.finish(), lease);
}

impl Leg {
    /// Media is up: the PIN entry or the room.
    fn begin(&mut self, now: Instant) {
        let phase = std::mem::replace(
            &mut self.phase,
            Phase::Leaving {
                cause: Cause::Failed,
                until: now,
            },
        );
        match phase {
            Phase::Answered {
                to: Destination::Room(room),
                ..
            } => self.go_to_room(now, room),
            Phase::Answered {
                to: Destination::Pin,
                ..
            } => {
                self.phase = Phase::Pin(PinEntry::new(
                    now,
                    self.rules.pin_attempts,
                    self.rules.digit_timeout,
                ));
                self.pin_actions(now);
            }
            other => self.phase = other,
        }
    }

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

    fn pin_actions(&mut self, now: Instant) {
        loop {
            let Phase::Pin(pin) = &mut self.phase else {
                return;
            };
            let Some(action) = pin.poll_action() else {
                return;
            };
            match action {
                Action::Play(prompt) => {
                    if self.play(prompt).is_none() {
                        // Nothing plays, so nothing will say it finished.
                        if let Phase::Pin(pin) = &mut self.phase {
                            pin.prompt_finished(now);
                        }
                    }
                }
                Action::Join(room) => {
                    tracing::info!(call_id = %self.call_id, room = %room.token, "PIN accepted");
                    self.go_to_room(now, room);
                }
                Action::HangUp => {
                    tracing::info!(call_id = %self.call_id, "wrong PIN too often: goodbye");
                    self.phase = Phase::Leaving {
                        cause: Cause::WrongPin,
                        until: now + self.goodbye_length(),
                    };
                }
            }
        }
    }

    fn goodbye_length(&self) -> Duration {
        let samples = wav::prompt(Prompt::Goodbye).map_or(0, <[i16]>::len);
        Duration::from_secs_f64(samples as f64 / wav::PROMPT_RATE as f64) + PROMPT_SLACK
    }

    /// Plays the goodbye prompt, then hangs up with `cause`.
    fn leave(&mut self, now: Instant, cause: Cause) {
        let until = match self.play(Prompt::Goodbye) {
            Some(length) => now + length + PROMPT_SLACK,
            None => now,
        };
        self.phase = Phase::Leaving { cause, until };
    }

    fn go_to_room(&mut self, now: Instant, room: DialinRoom) {
        if self.room_has_call(&room) {
            self.join(now, room);
        } else if room.wait_for_call {
            tracing::info!(call_id = %self.call_id, room = %room.token, wait_s = self.rules.wait_for_call.as_secs(), "caller waits for the room's call to start");
            self.play(Prompt::Waiting);
            self.phase = Phase::Waiting {
                room,
                until: now + self.rules.wait_for_call,
            };
        } else {
            tracing::info!(call_id = %self.call_id, room = %room.token, "the room has no call and does not let callers wait: goodbye");
            self.leave(now, Cause::NoCall);
        }
    }

    fn room_has_call(&self, room: &DialinRoom) -> bool {
        self.shared
            .rooms
            .call_in_progress(room.room_id)
            .unwrap_or(false)
    }

    fn join(&mut self, now: Instant, room: DialinRoom) {
        let caller = match self.shared.rooms.dialin_caller(
            room.room_id,
            self.caller.as_ref(),
            &self.trunk,
            &self.call_id,
        ) {
            Ok(caller) => caller,
            Err(e) => {
                tracing::warn!(call_id = %self.call_id, error = %e.message, "caller cannot join the room");
                self.leave(now, Cause::Failed);
                return;
            }
        };
        if let Some(leg) = self.shared.legs().get_mut(&self.call_id) {
            leg.room_id = caller.who.room_id;
            leg.attendee_id = caller.who.attendee_id;
        }
        self.media.prompt(None);
        self.media.join(caller.who.clone());
        tracing::info!(call_id = %self.call_id, room = %room.token, attendee_id = caller.who.attendee_id, "caller joined the room");
        phone_leg::report(
            &self.shared,
            &caller.record,
            caller.record_id,
            PhoneStatus {
                status: CallStatus::Connected,
                cause: None,
                code: Some(200),
                message: Some("OK".into()),
            },
        );
        self.phase = Phase::Joined {
            caller: Box::new(caller),
            since: now,
        };
    }

    fn key_press(&mut self, now: Instant, digit: char) {
        match &mut self.phase {
            Phase::Pin(pin) => {
                // Typing cuts the prompt short.
                self.media.prompt(None);
                let rooms = &self.shared.rooms;
                pin.handle_digit(now, digit, |pin| lookup_pin(rooms, pin));
                self.pin_actions(now);
            }
            Phase::Joined { caller, .. } => {
                if let Err(e) = self.shared.rooms.phone_key(&caller.who, digit) {
                    tracing::warn!(call_id = %self.call_id, error = %e.message, "key press not published");
                }
            }
            _ => tracing::debug!(call_id = %self.call_id, %digit, "key press ignored"),
        }
    }

    async fn hang_up(&mut self, cause: Cause) {
        if self.ending.is_some() {
            return;
        }
        tracing::info!(call_id = %self.call_id, %cause, "hanging up inbound call");
        self.ending = Some((cause, Instant::now()));
        if let Err(e) = self.shared.sip.hangup(self.call).await {
            tracing::warn!(call_id = %self.call_id, error = %e, "hangup refused");
        }
        // Over on our side: the trunk's next call need not wait for the BYE's answer, and a
        // caller in a room is cleared now (the room hears no more of it), not when (or if) it
        // answers the BYE.
        self.slot = None;
        if matches!(self.phase, Phase::Joined { .. }) {
            self.media.cut_off();
            self.finish(false, None);
        }
    }

    /// The caller left (or never joined): the final status of a joined caller.
    fn finish(&mut self, by_remote: bool, message: Option<&str>) {
        if std::mem::replace(&mut self.finished, true) {
            return;
        }
        self.slot = None;
        let cause = match (by_remote, self.ending) {
            (false, Some((cause, _))) => cause,
            _ => Cause::Hangup,
        };
        match &self.phase {
            Phase::Joined { caller, .. } => phone_leg::report(
                &self.shared,
                &caller.record,
                caller.record_id,
                PhoneStatus {
                    status: CallStatus::Cleared,
                    cause: Some(cause),
                    code: Some(200),
                    message: Some(message.unwrap_or("OK").into()),
                },
            ),
            _ => {
                phone_leg::count_end("dialin", CallStatus::Cleared, Some(cause));
                tracing::info!(call_id = %self.call_id, %cause, "inbound call ended before joining a room")
            }
        }
    }

    fn deadline(&self, now: Instant) -> Instant {
        if let Some((_, since)) = self.ending {
            return since + HANGUP_GRACE;
        }
        match &self.phase {
            // The ACK (with the answer to our offer) is overdue by then.
            Phase::Answered { since, .. } => *since + HANGUP_GRACE,
            Phase::Pin(pin) => pin.poll_timeout().unwrap_or(now + HANGUP_GRACE),
            Phase::Waiting { until, .. } => (*until).min(now + WAIT_POLL),
            Phase::Joined { since, .. } => *since + self.rules.max_call_duration,
            Phase::Leaving { until, .. } => *until,
        }
    }

    async fn on_timer(&mut self, now: Instant) {
        if self.ending.is_some() {
            tracing::warn!(call_id = %self.call_id, "caller never confirmed the hangup; giving the call up");
            self.finish(false, Some("no answer to our hangup"));
            return;
        }
        match &mut self.phase {
            Phase::Answered { .. } => self.hang_up(Cause::Failed).await,
            Phase::Pin(pin) => {
                let rooms = &self.shared.rooms;
                pin.handle_timeout(now, |pin| lookup_pin(rooms, pin));
                self.pin_actions(now);
            }
            Phase::Waiting { room, until } => {
                let (room, until) = (room.clone(), *until);
                if self.room_has_call(&room) {
                    self.join(now, room);
                } else if now >= until {
                    tracing::info!(call_id = %self.call_id, room = %room.token, "no call started in time: goodbye");
                    self.leave(now, Cause::NoCall);
                }
            }
            Phase::Joined { .. } => self.hang_up(Cause::MaxDuration).await,
            Phase::Leaving { cause, .. } => {
                let cause = *cause;
                self.hang_up(cause).await;
            }
        }
    }

    async fn drive(
        &mut self,
        our_offer: Option<&SessionDescription>,
        events: &mut mpsc::UnboundedReceiver<UaEvent>,
        control: &mut mpsc::UnboundedReceiver<Control>,
        media_rx: &mut mpsc::UnboundedReceiver<PhoneMediaEvent>,
    ) {
        loop {
            let deadline = self.deadline(Instant::now());
            tokio::select! {
                event = events.recv() => {
                    let Some(event) = event else {
                        self.finish(false, Some("SIP driver stopped"));
                        return;
                    };
                    match event {
                        UaEvent::Confirmed { body, .. } => {
                            if let (Some(offer), false) = (our_offer, self.media.started()) {
                                let media = is_sdp(&body)
                                    .ok_or(LegMediaError::NoAnswer("the ACK"))
                                    .and_then(|answer| self.media.apply_answer(offer, answer));
                                match media {
                                    Ok(()) => self.begin(Instant::now()),
                                    Err(e) => {
                                        tracing::info!(call_id = %self.call_id, error = %e, "caller's answer unusable");
                                        self.hang_up(Cause::Failed).await;
                                    }
                                }
                            }
                        }
                        UaEvent::ReInvite { body, .. } => {
                            self.media.reinvite(self.call, &body).await;
                            // The caller's new Contact is where our BYE goes.
                            dialogs::keep(&self.shared, &self.call_id, self.call).await;
                        }
                        UaEvent::ReInviteAck { body, .. } => self.media.reinvite_ack(&body),
                        UaEvent::Ended { by_remote, .. } => {
                            self.finish(by_remote, None);
                            return;
                        }
                        UaEvent::Failed { reason, .. } => {
                            self.finish(false, Some(&reason));
                            return;
                        }
                        UaEvent::Cancelled { .. } => {
                            self.finish(true, None);
                            return;
                        }
                        UaEvent::Info { body: Some(body), .. } => {
                            if let Some(digit) = super::pin::digit_from_info(&body.content_type, &body.bytes) {
                                tracing::info!(call_id = %self.call_id, %digit, "DTMF from caller (INFO)");
                                self.key_press(Instant::now(), digit);
                            }
                        }
                        other => tracing::debug!(call_id = %self.call_id, ?other, "SIP event of an inbound leg"),
                    }
                }
                command = control.recv() => match command {
                    Some(Control::Hangup(cause)) => self.hang_up(cause).await,
                    Some(Control::Dtmf(digits)) => self.media.dtmf(digits),
                    Some(Control::Mute(mute)) => self.media.mute(mute),
                    None => self.hang_up(Cause::Shutdown).await,
                },
                Some(event) = media_rx.recv() => {
                    let now = Instant::now();
                    match event {
                        PhoneMediaEvent::Dtmf(digit) => self.key_press(now, digit),
                        PhoneMediaEvent::PromptDone => match &mut self.phase {
                            Phase::Pin(pin) => pin.prompt_finished(now),
                            Phase::Waiting { .. } => {
                                self.play(Prompt::Waiting);
                            }
                            Phase::Leaving { cause, .. } => {
                                let cause = *cause;
                                self.hang_up(cause).await;
                            }
                            _ => {}
                        },
                        // A caller holding the call may send nothing.
                        PhoneMediaEvent::Inactive if self.media.phone_sends() => self.hang_up(Cause::MediaTimeout).await,
                        PhoneMediaEvent::Inactive => {}
                        PhoneMediaEvent::Bye => tracing::info!(call_id = %self.call_id, "caller sent RTCP BYE"),
                    }
                }
                _ = tokio::time::sleep_until(deadline.into()) => {
                    let was_ending = self.ending.is_some();
                    self.on_timer(Instant::now()).await;
                    if was_ending {
                        return;
                    }
                }
            }
        }
    }
}

fn lookup_pin(rooms: &Rooms, pin: &str) -> Option<DialinRoom> {
    match rooms.dialin_by_pin(pin) {
        Ok(room) => room,
        Err(e) => {
            tracing::warn!(error = %e.message, "PIN lookup failed");
            None
        }
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

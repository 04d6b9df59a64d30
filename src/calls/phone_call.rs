//! A phone call as a sans-IO state machine, for both directions: what happens to the call is
//! decided here, in virtual time; one thin task (`task.rs`) feeds it and hands its actions to the
//! direction's effects (`outbound.rs`, `inbound.rs`), which own the SIP handle, the media and the
//! room.
//!
//! Inputs: [`PhoneCall::handle_sip`] (the dialog's events, and whether our hangup went out),
//! [`PhoneCall::handle_control`] (the room's commands), [`PhoneCall::handle_media`] (the media
//! engine's events, and whether a phone's SDP could be used) and [`PhoneCall::handle_timeout`].
//! Outputs: [`PhoneCall::poll_action`] and [`PhoneCall::poll_timeout`].
//!
//! ```text
//!  dial-out:  Dialling ──18x──► (ringing) ──2xx, media up──────────────────────┐
//!                │ ringing timeout: CANCEL; 3xx-6xx: rejected                     │
//!  dial-in:   Answered ──media up──► Pin ──right PIN──► (room) ──has a call──► Established
//!                                     │ wrong too often    │ no call: Waiting ──call starts──┘
//!                                     ▼                    ▼
//!                                  Leaving (goodbye prompt) ──► Ending ◄── max duration, media
//!                                                                 │        timeout, room hangup
//!                                                                 ▼
//!                                          Done: the dialog ended, or the grace ran out
//! ```
//! Each direction has its opening (dialling through a trunk, its ringing timeout and CANCEL; a
//! caller's media, PIN entry, waiting for the room's call, goodbye), and both end in the one
//! established phase (re-INVITE and hold, DTMF, mute, max duration, media timeout, BYE either
//! way, the grace for a lost BYE). Every status goes out once, in order, and a final one
//! (`rejected`, `cleared`) is never followed by another.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use dialbridge_sip::ua::{Body, TransferProgress};

use super::legs::{Control, HANGUP_GRACE};
use super::pin::{self, PinEntry, Prompt};
use crate::room::{CallStatus, Cause, DialinRoom, PhoneMute};

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

/// The `[dialin]` and `[[inbound]]` settings a caller's call follows.
#[derive(Debug, Clone)]
pub struct Rules {
    pub pin_attempts: u32,
    pub digit_timeout: Duration,
    pub wait_for_call: Duration,
    pub media_timeout: Duration,
    pub max_call_duration: Duration,
}

/// What a caller's call asks of the rooms while it finds its room.
pub(crate) trait RoomLookup: Send {
    /// The room a complete PIN leads to.
    fn pin(&self, pin: &str) -> Option<DialinRoom>;
    /// Whether the room's call is running (a caller joins it, or waits).
    fn has_call(&self, room: &DialinRoom) -> bool;
}

/// A dial-out looks nothing up.
struct NoLookup;

impl RoomLookup for NoLookup {
    fn pin(&self, _: &str) -> Option<DialinRoom> {
        None
    }
    fn has_call(&self, _: &DialinRoom) -> bool {
        false
    }
}

/// The call's limits.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// How long the phone may ring before we CANCEL (cause `no-answer`).
    pub ringing_timeout: Duration,
    /// How long an answered call may last (cause `max-duration`).
    pub max_duration: Duration,
}

/// What the SIP side tells the call.
#[derive(Debug)]
pub(crate) enum SipInput {
    /// A provisional answer (180, 183), perhaps with early media.
    Progress {
        code: u16,
        reason: String,
        body: Option<Body>,
    },
    /// The phone answered.
    Answered {
        code: u16,
        reason: String,
        body: Option<Body>,
    },
    /// The INVITE failed: a final answer of the network (`from_network`) or our own timeout.
    Failed {
        code: u16,
        reason: String,
        from_network: bool,
    },
    /// The dialog ended: the phone's BYE (`by_remote`), or the answer to ours or our CANCEL.
    Ended { by_remote: bool },
    /// The session timer ran out (the refresh did not come): our BYE went out, the call is over.
    SessionExpired,
    /// The caller's ACK, with the answer to the offer our 200 carried, if any.
    Confirmed { body: Option<Body> },
    /// The caller cancelled before the answer.
    Cancelled,
    /// A key press sent as SIP INFO.
    InfoDigit(char),
    /// The phone's re-INVITE (a new address, codec or hold), with its offer if any.
    ReInvite { body: Option<Body> },
    /// The ACK answering the offer our 200 to an offerless re-INVITE carried.
    ReInviteAck { body: Body },
    /// Our CANCEL or BYE ([`Action::HangUp`]) went out.
    HangupSent,
    /// Our CANCEL or BYE could not be sent.
    HangupRefused(String),
    /// How our REFER goes (a moderator's transfer).
    Transfer(TransferProgress),
    /// Our REFER ([`Action::Refer`]) could not be sent.
    ReferRefused(String),
    /// The phone transfers us to this URI (its REFER, accepted by the SIP core with 202 and
    /// NOTIFY `100 Trying`): our call to it should take this call's place.
    Referred(String),
    /// The SIP driver stopped.
    DriverStopped,
}

/// What the media side tells the call.
#[derive(Debug)]
pub(crate) enum MediaInput {
    /// No RTP for the media timeout; `phone_sends` is false while the phone holds the call.
    Inactive { phone_sends: bool },
    /// A key press (RFC 4733).
    Dtmf(char),
    /// The phone's answer ([`Action::StartMedia`]) started the media, or could not.
    Started(Result<(), String>),
    /// The prompt of [`Action::Play`] plays for this long; `None`: it could not be played.
    Playing(Option<Duration>),
    /// The prompt playing finished.
    PromptDone,
    /// The caller joined the room of [`Action::Join`]; `false`: it could not.
    Joined(bool),
}

/// What the call asks its task to do.
#[derive(Debug, PartialEq)]
pub(crate) enum Action {
    /// Report this status into the room (and the call record).
    Report {
        status: CallStatus,
        cause: Option<Cause>,
        code: Option<u16>,
        message: Option<String>,
    },
    /// Start (or re-point) the media at the answer in this body; the result comes back as
    /// [`MediaInput::Started`] (early media need not succeed, `early` says which).
    StartMedia { body: Body, early: bool },
    /// Store the dialog, so that a restart after a crash can hang it up.
    KeepDialog,
    /// CANCEL, or BYE once answered; [`SipInput::HangupSent`] or `HangupRefused` follows.
    HangUp(Cause),
    /// Our BYE is out: the room and the phone hear no more of each other.
    CutOff,
    /// Send these key presses to the phone.
    SendDtmf(String),
    /// Mute the phone in the room's mix.
    Mute(PhoneMute),
    /// A key press of the phone for the room.
    KeyPress(char),
    /// Answer the phone's re-INVITE with our SDP (or 488).
    AnswerReInvite(Option<Body>),
    /// The ACK's answer to our re-INVITE offer.
    FollowAck(Body),
    /// Play a prompt to the caller (it replaces any playing); [`MediaInput::Playing`] follows.
    Play(Prompt),
    /// Stop the prompt playing.
    StopPrompt,
    /// Put the caller in this room as a phone attendee; [`MediaInput::Joined`] follows.
    Join(DialinRoom),
    /// The call is over on our side: the trunk's concurrency slot is free.
    ReleaseSlot,
    /// A caller's call ended before it joined a room, with this cause (counted, logged).
    EndedUnjoined(Cause),
    /// Ask the phone to call this URI instead (REFER); [`SipInput::Transfer`] events follow,
    /// or [`SipInput::ReferRefused`].
    Refer(String),
    /// Call this URI for the phone that transferred us ([`SipInput::Referred`]): a new leg
    /// of the same attendee; its statuses come back as [`Control::Replacement`].
    PlaceReplacement(String),
    /// Tell the phone that transferred us how our call to its target goes (NOTIFY).
    NotifyTransfer { code: u16, reason: String },
    /// Tell the room how a transfer goes.
    TransferStatus {
        status: TransferStatus,
        code: Option<u16>,
        message: String,
    },
    /// The call is over: the task frees what it holds.
    Done,
}

/// The words of the room's `transfer` event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TransferStatus {
    /// The phone accepted the REFER (202): its call to the target starts.
    Accepted,
    /// The REFER was refused (or could not be sent, or the call cannot transfer now).
    Refused,
    /// The phone's call to the target failed; our call goes on.
    Failed,
}

impl TransferStatus {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            TransferStatus::Accepted => "accepted",
            TransferStatus::Refused => "refused",
            TransferStatus::Failed => "failed",
        }
    }
}

/// The answer that made the call established: when, and the 2xx's code and reason.
#[derive(Debug, Clone)]
struct Answer {
    at: Instant,
    code: u16,
    reason: String,
}

/// Where the call is.
#[derive(Debug)]
enum Phase {
    /// A dial-out's INVITE is out.
    Dialling,
    /// A caller is answered; nothing starts until the media runs (an offer in our 200 waits for
    /// the ACK's answer).
    Answered(Destination),
    Pin(PinEntry<DialinRoom>),
    Waiting {
        room: DialinRoom,
        until: Instant,
        next_poll: Instant,
    },
    /// The goodbye prompt plays; the BYE follows.
    Leaving {
        cause: Cause,
        until: Instant,
    },
    /// Answered (dial-out) or in its room (dial-in).
    Established,
}

/// See the module documentation.
pub(crate) struct PhoneCall {
    limits: Limits,
    /// A caller's rules; `None` for a dial-out.
    rules: Option<Rules>,
    lookup: Box<dyn RoomLookup>,
    phase: Phase,
    /// The prompt asked for last, until [`MediaInput::Playing`] says whether it plays.
    asked_prompt: Option<Prompt>,
    /// A caller's end is reported (or counted): nothing more to say.
    caller_finished: bool,
    /// The trunk's concurrency slot was given back ([`Action::ReleaseSlot`]).
    slot_released: bool,
    started: Instant,
    /// The last status reported.
    status: CallStatus,
    answer: Option<Answer>,
    /// Set once we end the call: its cause, and when (the grace counts from then).
    ending: Option<(Cause, Instant)>,
    /// The media runs (answered, or early media): key presses can be carried.
    media_up: bool,
    /// A 2xx's answer is being applied ([`Action::StartMedia`] not yet answered).
    starting: bool,
    /// Our REFER is out and its outcome not final yet.
    transferring: bool,
    /// The phone transferred us and our call to its target has no final status yet.
    replacing: bool,
    done: bool,
    actions: VecDeque<Action>,
}

impl PhoneCall {
    /// A dial-out whose INVITE goes out at `now`; it has been reported `accepted`.
    pub(crate) fn dialling(now: Instant, limits: Limits) -> PhoneCall {
        PhoneCall {
            limits,
            rules: None,
            lookup: Box::new(NoLookup),
            phase: Phase::Dialling,
            asked_prompt: None,
            caller_finished: false,
            slot_released: false,
            started: now,
            status: CallStatus::Accepted,
            answer: None,
            ending: None,
            media_up: false,
            starting: false,
            transferring: false,
            replacing: false,
            done: false,
            actions: VecDeque::new(),
        }
    }

    /// A caller answered at `now` (our 200 is out), on its way `to` a room. With `media_up` the
    /// media runs already (the INVITE had an offer); else the ACK's answer starts it.
    pub(crate) fn answering(
        now: Instant,
        rules: Rules,
        to: Destination,
        lookup: Box<dyn RoomLookup>,
        media_up: bool,
    ) -> PhoneCall {
        let mut call = PhoneCall {
            limits: Limits {
                ringing_timeout: Duration::ZERO,
                max_duration: rules.max_call_duration,
            },
            rules: Some(rules),
            lookup,
            phase: Phase::Answered(to),
            asked_prompt: None,
            caller_finished: false,
            slot_released: false,
            started: now,
            status: CallStatus::Accepted,
            answer: None,
            ending: None,
            media_up,
            starting: false,
            transferring: false,
            replacing: false,
            done: false,
            actions: VecDeque::new(),
        };
        if media_up {
            call.begin(now);
        }
        call
    }

    pub(crate) fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// Whether the call is over ([`Action::Done`] was the last action).
    pub(crate) fn is_done(&self) -> bool {
        self.done
    }

    /// When [`PhoneCall::handle_timeout`] is due, if anything is.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        if self.done {
            return None;
        }
        if let Some((_, since)) = self.ending {
            return Some(since + HANGUP_GRACE);
        }
        match &self.phase {
            Phase::Dialling => Some(self.started + self.limits.ringing_timeout),
            // The ACK (with the answer to our offer) is overdue by then.
            Phase::Answered(_) => Some(self.started + HANGUP_GRACE),
            Phase::Pin(pin) => pin.poll_timeout(),
            Phase::Waiting {
                until, next_poll, ..
            } => Some((*until).min(*next_poll)),
            Phase::Leaving { until, .. } => Some(*until),
            Phase::Established => self
                .answer
                .as_ref()
                .map(|a| a.at + self.limits.max_duration),
        }
    }

    fn is_caller(&self) -> bool {
        self.rules.is_some()
    }

    /// The status a dial-out ends in: `cleared` once answered, else `rejected`.
    fn final_status(&self) -> CallStatus {
        if self.answer.is_some() {
            CallStatus::Cleared
        } else {
            CallStatus::Rejected
        }
    }

    fn report(
        &mut self,
        status: CallStatus,
        cause: Option<Cause>,
        code: Option<u16>,
        message: Option<&str>,
    ) {
        if self.status.is_final() {
            // Reported when we hung up; the dialog's own end changes nothing.
            return;
        }
        self.status = status;
        self.actions.push_back(Action::Report {
            status,
            cause,
            code,
            message: message.map(str::to_string),
        });
    }

    fn finish(&mut self) {
        if !self.done {
            self.done = true;
            self.actions.push_back(Action::Done);
        }
    }

    /// A caller's end, once: `cleared` when it was in a room, else counted as ended unjoined.
    /// `by_remote`: the caller ended it (else our hangup's cause counts).
    fn finish_caller(&mut self, by_remote: bool, message: Option<&str>) {
        if std::mem::replace(&mut self.caller_finished, true) {
            return;
        }
        self.release_slot();
        let cause = match (by_remote, self.ending) {
            (false, Some((cause, _))) => cause,
            _ => Cause::Hangup,
        };
        if matches!(self.phase, Phase::Established) {
            self.report(
                CallStatus::Cleared,
                Some(cause),
                Some(200),
                Some(message.unwrap_or("OK")),
            );
        } else {
            self.actions.push_back(Action::EndedUnjoined(cause));
        }
    }

    fn release_slot(&mut self) {
        if !std::mem::replace(&mut self.slot_released, true) {
            self.actions.push_back(Action::ReleaseSlot);
        }
    }

    /// Ends the call with `cause` (once): CANCEL while a dial-out rings, else BYE.
    fn hang_up(&mut self, now: Instant, cause: Cause) {
        if self.ending.is_some() || self.done {
            return;
        }
        self.ending = Some((cause, now));
        self.actions.push_back(Action::HangUp(cause));
    }

    pub(crate) fn handle_sip(&mut self, now: Instant, input: SipInput) {
        if self.done {
            return;
        }
        match input {
            SipInput::Progress { code, reason, body } => {
                if (180..=183).contains(&code)
                    && self.status == CallStatus::Accepted
                    && self.ending.is_none()
                {
                    self.report(CallStatus::Ringing, None, Some(code), Some(&reason));
                }
                if let Some(body) = body.filter(|_| !self.media_up) {
                    self.actions
                        .push_back(Action::StartMedia { body, early: true });
                }
            }
            SipInput::Answered { code, reason, body } => {
                if self.ending.is_some() || self.answer.is_some() {
                    // A CANCEL crossed the 2xx: the user agent ACKs and hangs up itself.
                    return;
                }
                self.answer = Some(Answer {
                    at: now,
                    code,
                    reason,
                });
                // Stored before anyone hears of the answer: a crash from then on hangs it up.
                self.actions.push_back(Action::KeepDialog);
                match body {
                    Some(body) => {
                        self.starting = true;
                        self.actions
                            .push_back(Action::StartMedia { body, early: false });
                    }
                    None => self.media_unusable(now, "the 200 OK has no SDP answer".into()),
                }
            }
            SipInput::Confirmed { body } => {
                if !matches!(self.phase, Phase::Answered(_)) || self.media_up {
                    return;
                }
                match body {
                    Some(body) => {
                        self.starting = true;
                        self.actions
                            .push_back(Action::StartMedia { body, early: false });
                    }
                    None => self.media_unusable(now, "the ACK has no SDP answer".into()),
                }
            }
            SipInput::Failed {
                code,
                reason,
                from_network,
            } => {
                if self.is_caller() {
                    self.finish_caller(false, Some(&reason));
                } else {
                    let cause = match self.ending {
                        Some((cause, _)) => cause,
                        None => Cause::of_rejection(code, from_network),
                    };
                    self.report(CallStatus::Rejected, Some(cause), Some(code), Some(&reason));
                }
                self.finish();
            }
            SipInput::Ended { by_remote } => {
                if self.is_caller() {
                    self.finish_caller(by_remote, None);
                } else {
                    let cause = match (by_remote, self.ending) {
                        (false, Some((cause, _))) => cause,
                        _ => Cause::Hangup,
                    };
                    let (code, reason) = match &self.answer {
                        Some(a) => (Some(a.code), Some(a.reason.clone())),
                        None => (None, None),
                    };
                    self.report(self.final_status(), Some(cause), code, reason.as_deref());
                }
                self.finish();
            }
            SipInput::Cancelled => {
                self.finish_caller(true, None);
                self.finish();
            }
            SipInput::SessionExpired => {
                self.ending.get_or_insert((Cause::SessionExpired, now));
                self.handle_sip(now, SipInput::Ended { by_remote: false });
            }
            SipInput::InfoDigit(digit) => self.key_press(now, digit),
            SipInput::ReInvite { body } => {
                self.actions.push_back(Action::AnswerReInvite(body));
                // The phone's new Contact is where our BYE goes.
                self.actions.push_back(Action::KeepDialog);
            }
            SipInput::ReInviteAck { body } => self.actions.push_back(Action::FollowAck(body)),
            SipInput::HangupSent | SipInput::HangupRefused(_) if self.is_caller() => {
                // Over on our side: the trunk's next call need not wait for the BYE's answer,
                // and a caller in a room is cleared now (the room hears no more of it), not
                // when (or if) it answers the BYE.
                self.release_slot();
                if matches!(self.phase, Phase::Established) {
                    self.actions.push_back(Action::CutOff);
                    self.finish_caller(false, None);
                }
            }
            SipInput::HangupSent => {
                let cause = self.ending.map_or(Cause::Failed, |(cause, _)| cause);
                if let Some(answer) = self.answer.clone() {
                    // Our BYE is out: the call is over for the room and its record now, not when
                    // (or if) the phone answers the BYE.
                    self.actions.push_back(Action::CutOff);
                    self.report(
                        CallStatus::Cleared,
                        Some(cause),
                        Some(answer.code),
                        Some(&answer.reason),
                    );
                }
            }
            SipInput::HangupRefused(error) => {
                let cause = self.ending.map_or(Cause::Failed, |(cause, _)| cause);
                self.report(self.final_status(), Some(cause), None, Some(&error));
                self.finish();
            }
            SipInput::Transfer(progress) => self.transfer_progress(now, progress),
            SipInput::ReferRefused(error) => {
                self.transferring = false;
                self.transfer_status(TransferStatus::Refused, None, error);
            }
            SipInput::Referred(to) => self.referred(to),
            SipInput::DriverStopped => {
                if self.is_caller() {
                    self.finish_caller(false, Some("SIP driver stopped"));
                } else {
                    self.report(
                        self.final_status(),
                        Some(Cause::Failed),
                        None,
                        Some("SIP driver stopped"),
                    );
                }
                self.finish();
            }
        }
    }

    /// A room command; `None` when the room's side is gone (the service stops).
    pub(crate) fn handle_control(&mut self, now: Instant, control: Option<Control>) {
        if self.done {
            return;
        }
        match control {
            Some(Control::Hangup(cause)) => self.hang_up(now, cause),
            Some(Control::Dtmf(digits)) => {
                if self.media_up {
                    self.actions.push_back(Action::SendDtmf(digits));
                } else {
                    tracing::info!(%digits, "DTMF dropped: the phone has no media yet");
                }
            }
            Some(Control::Mute(mute)) => self.actions.push_back(Action::Mute(mute)),
            Some(Control::Transfer(to)) => self.transfer(to),
            Some(Control::Replacement { code, reason }) => self.replacement(now, code, reason),
            None => self.hang_up(now, Cause::Shutdown),
        }
    }

    /// A moderator's blind transfer: only an established call that is not ending and has no
    /// transfer under way sends its REFER; otherwise the room hears it was refused.
    fn transfer(&mut self, to: String) {
        let refusal = if !matches!(self.phase, Phase::Established) {
            Some("the phone call is not connected")
        } else if self.ending.is_some() {
            Some("the phone call is ending")
        } else if self.transferring {
            Some("a transfer of this call is under way")
        } else {
            None
        };
        match refusal {
            Some(why) => self.transfer_status(TransferStatus::Refused, None, why.into()),
            None => {
                self.transferring = true;
                self.actions.push_back(Action::Refer(to));
            }
        }
    }

    /// The phone transfers us: an established call not ending places the new call (one at a
    /// time; the SIP core refuses a second REFER meanwhile); otherwise the phone hears 603.
    fn referred(&mut self, to: String) {
        if !matches!(self.phase, Phase::Established) || self.ending.is_some() || self.replacing {
            self.actions.push_back(Action::NotifyTransfer {
                code: 603,
                reason: "Decline".into(),
            });
            return;
        }
        self.replacing = true;
        self.transfer_status(
            TransferStatus::Accepted,
            Some(202),
            format!("the phone transfers the call to {to}"),
        );
        self.actions.push_back(Action::PlaceReplacement(to));
    }

    /// How our call to the target of the phone's REFER goes: each status goes to the phone;
    /// answered, it has taken this call's place and our leg hangs up (cause `transferred`);
    /// failed or refused, this call goes on.
    fn replacement(&mut self, now: Instant, code: u16, reason: String) {
        if !self.replacing {
            return;
        }
        self.actions.push_back(Action::NotifyTransfer {
            code,
            reason: reason.clone(),
        });
        if (200..300).contains(&code) {
            self.replacing = false;
            self.hang_up(now, Cause::Transferred);
        } else if code >= 300 {
            self.replacing = false;
            self.transfer_status(TransferStatus::Failed, Some(code), reason);
        }
    }

    fn transfer_status(&mut self, status: TransferStatus, code: Option<u16>, message: String) {
        self.actions.push_back(Action::TransferStatus {
            status,
            code,
            message,
        });
    }

    /// The phone's answers to our REFER: a final 2xx in a NOTIFY means it reached the target,
    /// so our leg hangs up (cause `transferred`); a refusal or a failed attempt keeps the call.
    fn transfer_progress(&mut self, now: Instant, progress: TransferProgress) {
        if !self.transferring {
            return;
        }
        match progress {
            TransferProgress::Accepted => {
                self.transfer_status(TransferStatus::Accepted, Some(202), "Accepted".into())
            }
            TransferProgress::Refused { code, reason } => {
                self.transferring = false;
                self.transfer_status(TransferStatus::Refused, Some(code), reason);
            }
            TransferProgress::Status { code, reason, done } => {
                if (200..300).contains(&code) {
                    self.transferring = false;
                    self.hang_up(now, Cause::Transferred);
                } else if done {
                    self.transferring = false;
                    self.transfer_status(TransferStatus::Failed, Some(code), reason);
                }
            }
            TransferProgress::Unreported => {
                self.transferring = false;
                self.transfer_status(
                    TransferStatus::Failed,
                    None,
                    "the phone did not report the outcome of the transfer in time".into(),
                );
            }
        }
    }

    pub(crate) fn handle_media(&mut self, now: Instant, input: MediaInput) {
        if self.done {
            return;
        }
        match input {
            // A phone that said it sends nothing (held, inactive) is silent on purpose; before
            // a dial-out is answered, silence means nothing.
            MediaInput::Inactive { phone_sends } => {
                if phone_sends && (self.is_caller() || self.answer.is_some()) {
                    self.hang_up(now, Cause::MediaTimeout);
                }
            }
            MediaInput::Dtmf(digit) => self.key_press(now, digit),
            MediaInput::Started(result) => {
                let starting = std::mem::replace(&mut self.starting, false);
                match result {
                    Ok(()) => {
                        self.media_up = true;
                        if starting {
                            match self.phase {
                                Phase::Answered(_) => self.begin(now),
                                _ => self.connected(),
                            }
                        }
                    }
                    Err(reason) if starting => self.media_unusable(now, reason),
                    Err(reason) => tracing::info!(%reason, "early media not usable"),
                }
            }
            MediaInput::Playing(length) => self.playing(now, length),
            MediaInput::PromptDone => match &mut self.phase {
                Phase::Pin(pin) => pin.prompt_finished(now),
                Phase::Waiting { .. } => self.play(Prompt::Waiting),
                Phase::Leaving { cause, .. } => {
                    let cause = *cause;
                    self.hang_up(now, cause);
                }
                _ => {}
            },
            MediaInput::Joined(true) => {
                self.answer = Some(Answer {
                    at: now,
                    code: 200,
                    reason: "OK".into(),
                });
                self.phase = Phase::Established;
                self.report(CallStatus::Connected, None, Some(200), Some("OK"));
            }
            MediaInput::Joined(false) => self.leave(now, Cause::Failed),
        }
    }

    /// The answer's media runs: the dial-out is connected.
    fn connected(&mut self) {
        let Some(answer) = self.answer.clone() else {
            return;
        };
        self.phase = Phase::Established;
        if self.status == CallStatus::Accepted {
            // Never rang: report ringing so the sequence stays whole.
            self.report(CallStatus::Ringing, None, None, None);
        }
        self.report(
            CallStatus::Connected,
            None,
            Some(answer.code),
            Some(&answer.reason),
        );
    }

    fn media_unusable(&mut self, now: Instant, reason: String) {
        tracing::warn!(%reason, "answer unusable; hanging up");
        self.hang_up(now, Cause::Failed);
    }

    /// A key press of the phone: a PIN digit while the caller types one, the room's event once
    /// in the room (a dial-out's always).
    fn key_press(&mut self, now: Instant, digit: char) {
        match &mut self.phase {
            Phase::Pin(pin) => {
                // Typing cuts the prompt short.
                self.actions.push_back(Action::StopPrompt);
                let lookup = &self.lookup;
                pin.handle_digit(now, digit, |pin| lookup.pin(pin));
                self.pin_actions(now);
            }
            Phase::Established | Phase::Dialling => self.actions.push_back(Action::KeyPress(digit)),
            _ => tracing::debug!(%digit, "key press ignored"),
        }
    }

    /// The caller's media runs: the PIN entry or the room.
    fn begin(&mut self, now: Instant) {
        let Phase::Answered(to) = &self.phase else {
            return;
        };
        match to.clone() {
            Destination::Room(room) => self.go_to_room(now, room),
            Destination::Pin => {
                let Some(rules) = &self.rules else {
                    return;
                };
                self.phase =
                    Phase::Pin(PinEntry::new(now, rules.pin_attempts, rules.digit_timeout));
                self.pin_actions(now);
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
                pin::Action::Play(prompt) => self.play(prompt),
                pin::Action::Join(room) => {
                    tracing::info!(room = %room.token, "PIN accepted");
                    self.go_to_room(now, room);
                }
                pin::Action::HangUp => {
                    tracing::info!("wrong PIN too often: goodbye");
                    // The goodbye prompt was asked for just before; its length sets the time.
                    self.phase = Phase::Leaving {
                        cause: Cause::WrongPin,
                        until: now + PROMPT_SLACK,
                    };
                }
            }
        }
    }

    fn play(&mut self, prompt: Prompt) {
        self.asked_prompt = Some(prompt);
        self.actions.push_back(Action::Play(prompt));
    }

    /// Whether (and how long) the prompt asked for last plays.
    fn playing(&mut self, now: Instant, length: Option<Duration>) {
        let Some(prompt) = self.asked_prompt.take() else {
            return;
        };
        match (&mut self.phase, length) {
            // Nothing plays, so nothing will say it finished.
            (Phase::Pin(pin), None) => pin.prompt_finished(now),
            (Phase::Leaving { until, .. }, length) if prompt == Prompt::Goodbye => {
                *until = match length {
                    Some(length) => now + length + PROMPT_SLACK,
                    None => now,
                };
            }
            _ => {}
        }
    }

    /// Plays the goodbye prompt, then hangs up with `cause`.
    fn leave(&mut self, now: Instant, cause: Cause) {
        self.phase = Phase::Leaving {
            cause,
            until: now + PROMPT_SLACK,
        };
        self.play(Prompt::Goodbye);
    }

    fn go_to_room(&mut self, now: Instant, room: DialinRoom) {
        let Some(rules) = &self.rules else {
            return;
        };
        let wait_for_call = rules.wait_for_call;
        if self.lookup.has_call(&room) {
            self.actions.push_back(Action::Join(room));
        } else if room.wait_for_call {
            tracing::info!(room = %room.token, wait_s = wait_for_call.as_secs(), "caller waits for the room's call to start");
            self.play(Prompt::Waiting);
            self.phase = Phase::Waiting {
                room,
                until: now + wait_for_call,
                next_poll: now + WAIT_POLL,
            };
        } else {
            tracing::info!(room = %room.token, "the room has no call and does not let callers wait: goodbye");
            self.leave(now, Cause::NoCall);
        }
    }

    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        let Some(due) = self.poll_timeout() else {
            return;
        };
        if now < due {
            return;
        }
        if let Some((cause, _)) = self.ending {
            if self.is_caller() {
                tracing::warn!("caller never confirmed the hangup; giving the call up");
                self.finish_caller(false, Some("no answer to our hangup"));
            } else {
                tracing::warn!("far end never confirmed the hangup; giving the call up");
                self.report(
                    self.final_status(),
                    Some(cause),
                    None,
                    Some("no answer to our hangup"),
                );
            }
            self.finish();
            return;
        }
        match &mut self.phase {
            Phase::Dialling => self.hang_up(now, Cause::NoAnswer),
            Phase::Answered(_) => self.hang_up(now, Cause::Failed),
            Phase::Pin(pin) => {
                let lookup = &self.lookup;
                pin.handle_timeout(now, |pin| lookup.pin(pin));
                self.pin_actions(now);
            }
            Phase::Waiting {
                room,
                until,
                next_poll,
            } => {
                if self.lookup.has_call(room) {
                    let room = room.clone();
                    self.actions.push_back(Action::Join(room));
                    // Polled again only if the join fails (it leaves then).
                    *next_poll = now + HANGUP_GRACE;
                } else if now >= *until {
                    tracing::info!(room = %room.token, "no call started in time: goodbye");
                    self.leave(now, Cause::NoCall);
                } else {
                    *next_poll = now + WAIT_POLL;
                }
            }
            Phase::Leaving { cause, .. } => {
                let cause = *cause;
                self.hang_up(now, cause);
            }
            Phase::Established => self.hang_up(now, Cause::MaxDuration),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RING: Duration = Duration::from_secs(60);
    const MAX: Duration = Duration::from_secs(4 * 3600);

    fn call(t0: Instant) -> PhoneCall {
        PhoneCall::dialling(
            t0,
            Limits {
                ringing_timeout: RING,
                max_duration: MAX,
            },
        )
    }

    fn sdp() -> Body {
        Body::sdp(b"v=0\r\n".to_vec())
    }

    fn actions(c: &mut PhoneCall) -> Vec<Action> {
        std::iter::from_fn(|| c.poll_action()).collect()
    }

    fn report(
        status: CallStatus,
        cause: Option<Cause>,
        code: Option<u16>,
        message: Option<&str>,
    ) -> Action {
        Action::Report {
            status,
            cause,
            code,
            message: message.map(str::to_string),
        }
    }

    fn ok() -> Action {
        report(CallStatus::Connected, None, Some(200), Some("OK"))
    }

    /// Rings with a 180, is answered with SDP and the media starts: the established call.
    fn established(t0: Instant) -> PhoneCall {
        let mut c = call(t0);
        c.handle_sip(t0, ringing());
        c.handle_sip(t0, answered());
        c.handle_media(t0, MediaInput::Started(Ok(())));
        actions(&mut c);
        c
    }

    fn ringing() -> SipInput {
        SipInput::Progress {
            code: 180,
            reason: "Ringing".into(),
            body: None,
        }
    }

    fn answered() -> SipInput {
        SipInput::Answered {
            code: 200,
            reason: "OK".into(),
            body: Some(sdp()),
        }
    }

    const TARGET: &str = "sip:+4930999888@127.0.0.1:5070";

    fn transfer_to(c: &mut PhoneCall, t: Instant) {
        c.handle_control(t, Some(Control::Transfer(TARGET.into())));
    }

    fn transfer_status(status: TransferStatus, code: Option<u16>, message: &str) -> Action {
        Action::TransferStatus {
            status,
            code,
            message: message.into(),
        }
    }

    fn notify(code: u16, reason: &str, done: bool) -> SipInput {
        SipInput::Transfer(TransferProgress::Status {
            code,
            reason: reason.into(),
            done,
        })
    }

    #[test]
    fn a_transfer_answered_by_the_target_hangs_up_our_leg_as_transferred() {
        let t0 = Instant::now();
        let mut c = established(t0);
        let t1 = t0 + Duration::from_secs(20);
        transfer_to(&mut c, t1);
        assert_eq!(actions(&mut c), [Action::Refer(TARGET.into())]);
        // One transfer at a time.
        transfer_to(&mut c, t1);
        assert_eq!(
            actions(&mut c),
            [transfer_status(
                TransferStatus::Refused,
                None,
                "a transfer of this call is under way"
            )]
        );
        c.handle_sip(t1, SipInput::Transfer(TransferProgress::Accepted));
        assert_eq!(
            actions(&mut c),
            [transfer_status(
                TransferStatus::Accepted,
                Some(202),
                "Accepted"
            )]
        );
        // The target rings: nothing to do yet.
        c.handle_sip(t1, notify(180, "Ringing", false));
        assert!(actions(&mut c).is_empty());
        let t2 = t1 + Duration::from_secs(5);
        c.handle_sip(t2, notify(200, "OK", true));
        assert_eq!(actions(&mut c), [Action::HangUp(Cause::Transferred)]);
        c.handle_sip(t2, SipInput::HangupSent);
        assert_eq!(
            actions(&mut c),
            [
                Action::CutOff,
                report(
                    CallStatus::Cleared,
                    Some(Cause::Transferred),
                    Some(200),
                    Some("OK")
                )
            ]
        );
        c.handle_sip(t2, SipInput::Ended { by_remote: false });
        assert_eq!(actions(&mut c), [Action::Done]);
    }

    #[test]
    fn a_refused_or_failed_transfer_keeps_the_call_and_another_may_follow() {
        let t0 = Instant::now();
        let mut c = established(t0);
        transfer_to(&mut c, t0);
        actions(&mut c);
        c.handle_sip(
            t0,
            SipInput::Transfer(TransferProgress::Refused {
                code: 403,
                reason: "Forbidden".into(),
            }),
        );
        assert_eq!(
            actions(&mut c),
            [transfer_status(
                TransferStatus::Refused,
                Some(403),
                "Forbidden"
            )]
        );
        // Accepted, but the target is busy: the call goes on.
        transfer_to(&mut c, t0);
        assert_eq!(actions(&mut c), [Action::Refer(TARGET.into())]);
        c.handle_sip(t0, SipInput::Transfer(TransferProgress::Accepted));
        actions(&mut c);
        c.handle_sip(t0, notify(486, "Busy Here", true));
        assert_eq!(
            actions(&mut c),
            [transfer_status(
                TransferStatus::Failed,
                Some(486),
                "Busy Here"
            )]
        );
        // A REFER that could not be sent.
        transfer_to(&mut c, t0);
        actions(&mut c);
        c.handle_sip(t0, SipInput::ReferRefused("SIP driver stopped".into()));
        assert_eq!(
            actions(&mut c),
            [transfer_status(
                TransferStatus::Refused,
                None,
                "SIP driver stopped"
            )]
        );
        // The phone never answers a REFER: the core says 408 at 64*T1.
        transfer_to(&mut c, t0);
        actions(&mut c);
        c.handle_sip(
            t0 + Duration::from_secs(32),
            SipInput::Transfer(TransferProgress::Refused {
                code: 408,
                reason: "Request Timeout".into(),
            }),
        );
        assert_eq!(
            actions(&mut c),
            [transfer_status(
                TransferStatus::Refused,
                Some(408),
                "Request Timeout"
            )]
        );
        // Accepted, then no outcome in time: the core ends it unreported; the room hears it
        // failed and another transfer may start.
        transfer_to(&mut c, t0);
        actions(&mut c);
        c.handle_sip(t0, SipInput::Transfer(TransferProgress::Accepted));
        actions(&mut c);
        c.handle_sip(
            t0 + Duration::from_secs(32),
            SipInput::Transfer(TransferProgress::Unreported),
        );
        assert_eq!(
            actions(&mut c),
            [transfer_status(
                TransferStatus::Failed,
                None,
                "the phone did not report the outcome of the transfer in time"
            )]
        );
        transfer_to(&mut c, t0 + Duration::from_secs(33));
        assert_eq!(actions(&mut c), [Action::Refer(TARGET.into())]);
        assert_eq!(c.poll_timeout(), Some(t0 + MAX), "still established");
        assert!(!c.is_done());
    }

    fn replacement(code: u16, reason: &str) -> Option<Control> {
        Some(Control::Replacement {
            code,
            reason: reason.into(),
        })
    }

    fn notify_transfer(code: u16, reason: &str) -> Action {
        Action::NotifyTransfer {
            code,
            reason: reason.into(),
        }
    }

    #[test]
    fn transferred_by_the_phone_our_answered_replacement_ends_this_leg_as_transferred() {
        let t0 = Instant::now();
        let mut c = established(t0);
        c.handle_sip(t0, SipInput::Referred(TARGET.into()));
        assert_eq!(
            actions(&mut c),
            [
                transfer_status(
                    TransferStatus::Accepted,
                    Some(202),
                    &format!("the phone transfers the call to {TARGET}")
                ),
                Action::PlaceReplacement(TARGET.into())
            ]
        );
        // A second REFER while the first is performed is declined.
        c.handle_sip(t0, SipInput::Referred(TARGET.into()));
        assert_eq!(actions(&mut c), [notify_transfer(603, "Decline")]);
        c.handle_control(t0, replacement(180, "Ringing"));
        assert_eq!(actions(&mut c), [notify_transfer(180, "Ringing")]);
        let t1 = t0 + Duration::from_secs(3);
        c.handle_control(t1, replacement(200, "OK"));
        assert_eq!(
            actions(&mut c),
            [
                notify_transfer(200, "OK"),
                Action::HangUp(Cause::Transferred)
            ]
        );
        c.handle_sip(t1, SipInput::HangupSent);
        assert_eq!(
            actions(&mut c),
            [
                Action::CutOff,
                report(
                    CallStatus::Cleared,
                    Some(Cause::Transferred),
                    Some(200),
                    Some("OK")
                )
            ]
        );
        // The phone's own BYE crossing ours changes nothing.
        c.handle_sip(t1, SipInput::Ended { by_remote: true });
        assert_eq!(actions(&mut c), [Action::Done]);
    }

    #[test]
    fn a_refused_or_failed_replacement_keeps_the_call_and_another_may_follow() {
        let t0 = Instant::now();
        let mut c = established(t0);
        c.handle_sip(t0, SipInput::Referred(TARGET.into()));
        actions(&mut c);
        // The target is not one the trunk may dial.
        c.handle_control(t0, replacement(403, "Forbidden"));
        assert_eq!(
            actions(&mut c),
            [
                notify_transfer(403, "Forbidden"),
                transfer_status(TransferStatus::Failed, Some(403), "Forbidden")
            ]
        );
        c.handle_sip(t0, SipInput::Referred(TARGET.into()));
        assert_eq!(actions(&mut c).len(), 2);
        c.handle_control(t0, replacement(486, "Busy Here"));
        assert_eq!(
            actions(&mut c),
            [
                notify_transfer(486, "Busy Here"),
                transfer_status(TransferStatus::Failed, Some(486), "Busy Here")
            ]
        );
        // A late status of a replacement that is over changes nothing.
        c.handle_control(t0, replacement(200, "OK"));
        assert!(actions(&mut c).is_empty());
        assert_eq!(c.poll_timeout(), Some(t0 + MAX), "still established");
        assert!(!c.is_done());
    }

    #[test]
    fn a_call_not_established_declines_the_phones_transfer() {
        let t0 = Instant::now();
        let mut c = call(t0);
        c.handle_sip(t0, ringing());
        actions(&mut c);
        c.handle_sip(t0, SipInput::Referred(TARGET.into()));
        assert_eq!(actions(&mut c), [notify_transfer(603, "Decline")]);
    }

    #[test]
    fn only_an_established_call_not_ending_transfers() {
        let t0 = Instant::now();
        let mut c = call(t0);
        c.handle_sip(t0, ringing());
        actions(&mut c);
        transfer_to(&mut c, t0);
        assert_eq!(
            actions(&mut c),
            [transfer_status(
                TransferStatus::Refused,
                None,
                "the phone call is not connected"
            )]
        );
        let mut c = established(t0);
        c.handle_control(t0, Some(Control::Hangup(Cause::Ended)));
        actions(&mut c);
        transfer_to(&mut c, t0);
        assert_eq!(
            actions(&mut c),
            [transfer_status(
                TransferStatus::Refused,
                None,
                "the phone call is ending"
            )]
        );
        // A NOTIFY without a transfer of ours changes nothing.
        let mut c = established(t0);
        c.handle_sip(t0, notify(200, "OK", true));
        assert!(actions(&mut c).is_empty());
    }

    #[test]
    fn ringing_answered_then_the_phone_hangs_up() {
        let t0 = Instant::now();
        let mut c = call(t0);
        c.handle_sip(t0, ringing());
        assert_eq!(
            actions(&mut c),
            [report(
                CallStatus::Ringing,
                None,
                Some(180),
                Some("Ringing")
            )]
        );
        c.handle_sip(t0, answered());
        // The dialog is stored before anyone hears of the answer.
        assert_eq!(
            actions(&mut c),
            [
                Action::KeepDialog,
                Action::StartMedia {
                    body: sdp(),
                    early: false
                }
            ]
        );
        c.handle_media(t0, MediaInput::Started(Ok(())));
        assert_eq!(actions(&mut c), [ok()]);
        c.handle_sip(t0, SipInput::Ended { by_remote: true });
        assert_eq!(
            actions(&mut c),
            [
                report(
                    CallStatus::Cleared,
                    Some(Cause::Hangup),
                    Some(200),
                    Some("OK")
                ),
                Action::Done
            ]
        );
        assert_eq!(c.poll_timeout(), None);
    }

    #[test]
    fn an_answer_without_ringing_reports_ringing_first() {
        let t0 = Instant::now();
        let mut c = call(t0);
        c.handle_sip(t0, answered());
        c.handle_media(t0, MediaInput::Started(Ok(())));
        let reports: Vec<Action> = actions(&mut c)
            .into_iter()
            .filter(|a| matches!(a, Action::Report { .. }))
            .collect();
        assert_eq!(
            reports,
            [report(CallStatus::Ringing, None, None, None), ok()]
        );
    }

    #[test]
    fn a_183_then_a_486_is_busy_and_its_early_media_is_bridged() {
        let t0 = Instant::now();
        let mut c = call(t0);
        c.handle_sip(
            t0,
            SipInput::Progress {
                code: 183,
                reason: "Session Progress".into(),
                body: Some(sdp()),
            },
        );
        assert_eq!(
            actions(&mut c),
            [
                report(
                    CallStatus::Ringing,
                    None,
                    Some(183),
                    Some("Session Progress")
                ),
                Action::StartMedia {
                    body: sdp(),
                    early: true
                }
            ]
        );
        c.handle_media(t0, MediaInput::Started(Ok(())));
        // Key presses can reach a phone whose early media runs.
        c.handle_control(t0, Some(Control::Dtmf("1".into())));
        assert_eq!(actions(&mut c), [Action::SendDtmf("1".into())]);
        c.handle_sip(
            t0,
            SipInput::Failed {
                code: 486,
                reason: "Busy Here".into(),
                from_network: true,
            },
        );
        assert_eq!(
            actions(&mut c),
            [
                report(
                    CallStatus::Rejected,
                    Some(Cause::Busy),
                    Some(486),
                    Some("Busy Here")
                ),
                Action::Done
            ]
        );
    }

    #[test]
    fn the_ringing_timeout_cancels_and_the_487_says_no_answer() {
        let t0 = Instant::now();
        let mut c = call(t0);
        c.handle_sip(t0, ringing());
        actions(&mut c);
        assert_eq!(c.poll_timeout(), Some(t0 + RING));
        c.handle_timeout(t0 + RING - Duration::from_millis(1));
        assert!(actions(&mut c).is_empty(), "not due yet");
        c.handle_timeout(t0 + RING);
        assert_eq!(actions(&mut c), [Action::HangUp(Cause::NoAnswer)]);
        c.handle_sip(t0 + RING, SipInput::HangupSent);
        assert!(
            actions(&mut c).is_empty(),
            "nothing is reported before the CANCEL is answered"
        );
        c.handle_sip(
            t0 + RING,
            SipInput::Failed {
                code: 487,
                reason: "Request Terminated".into(),
                from_network: true,
            },
        );
        assert_eq!(
            actions(&mut c),
            [
                report(
                    CallStatus::Rejected,
                    Some(Cause::NoAnswer),
                    Some(487),
                    Some("Request Terminated")
                ),
                Action::Done
            ]
        );
    }

    #[test]
    fn a_cancel_crossing_the_200_ends_with_the_cancel_cause() {
        let t0 = Instant::now();
        let mut c = call(t0);
        c.handle_sip(t0, ringing());
        c.handle_control(t0, Some(Control::Hangup(Cause::Ended)));
        c.handle_sip(t0, SipInput::HangupSent);
        actions(&mut c);
        // The 200 crosses our CANCEL: the user agent ACKs and BYEs it itself.
        c.handle_sip(t0, answered());
        assert!(actions(&mut c).is_empty(), "no media, no connected");
        c.handle_sip(t0, SipInput::Ended { by_remote: false });
        assert_eq!(
            actions(&mut c),
            [
                report(CallStatus::Rejected, Some(Cause::Ended), None, None),
                Action::Done
            ]
        );
    }

    #[test]
    fn our_bye_clears_at_once_and_a_lost_bye_frees_the_dialog_after_the_grace() {
        let t0 = Instant::now();
        let mut c = established(t0);
        let t1 = t0 + Duration::from_secs(30);
        c.handle_control(t1, Some(Control::Hangup(Cause::Ended)));
        assert_eq!(actions(&mut c), [Action::HangUp(Cause::Ended)]);
        c.handle_sip(t1, SipInput::HangupSent);
        assert_eq!(
            actions(&mut c),
            [
                Action::CutOff,
                report(
                    CallStatus::Cleared,
                    Some(Cause::Ended),
                    Some(200),
                    Some("OK")
                )
            ]
        );
        // A second hangup (the room again, media timeout) changes nothing.
        c.handle_control(t1, Some(Control::Hangup(Cause::Removed)));
        c.handle_media(t1, MediaInput::Inactive { phone_sends: true });
        assert!(actions(&mut c).is_empty());
        assert_eq!(c.poll_timeout(), Some(t1 + HANGUP_GRACE));
        c.handle_timeout(t1 + HANGUP_GRACE);
        assert_eq!(
            actions(&mut c),
            [Action::Done],
            "already cleared: no second status"
        );
    }

    #[test]
    fn a_refused_hangup_ends_the_call_with_the_error() {
        let t0 = Instant::now();
        let mut c = established(t0);
        c.handle_control(t0, Some(Control::Hangup(Cause::Ended)));
        actions(&mut c);
        c.handle_sip(t0, SipInput::HangupRefused("the dialog is gone".into()));
        assert_eq!(
            actions(&mut c),
            [
                report(
                    CallStatus::Cleared,
                    Some(Cause::Ended),
                    None,
                    Some("the dialog is gone")
                ),
                Action::Done
            ]
        );
    }

    #[test]
    fn the_maximum_duration_hangs_up_the_answered_call() {
        let t0 = Instant::now();
        let answered_at = t0 + Duration::from_secs(5);
        let mut c = call(t0);
        c.handle_sip(answered_at, answered());
        c.handle_media(answered_at, MediaInput::Started(Ok(())));
        actions(&mut c);
        assert_eq!(c.poll_timeout(), Some(answered_at + MAX));
        c.handle_timeout(answered_at + MAX);
        assert_eq!(actions(&mut c), [Action::HangUp(Cause::MaxDuration)]);
        c.handle_sip(answered_at + MAX, SipInput::HangupSent);
        assert_eq!(
            actions(&mut c)[1],
            report(
                CallStatus::Cleared,
                Some(Cause::MaxDuration),
                Some(200),
                Some("OK")
            )
        );
    }

    #[test]
    fn media_timeout_hangs_up_unless_the_phone_holds_the_call() {
        let t0 = Instant::now();
        let mut c = call(t0);
        // Silence before the answer means nothing.
        c.handle_media(t0, MediaInput::Inactive { phone_sends: true });
        assert!(actions(&mut c).is_empty());
        let mut c = established(t0);
        c.handle_sip(t0, SipInput::ReInvite { body: Some(sdp()) });
        assert_eq!(
            actions(&mut c),
            [Action::AnswerReInvite(Some(sdp())), Action::KeepDialog]
        );
        // Held: silence is on purpose.
        c.handle_media(t0, MediaInput::Inactive { phone_sends: false });
        assert!(actions(&mut c).is_empty());
        c.handle_media(t0, MediaInput::Inactive { phone_sends: true });
        assert_eq!(actions(&mut c), [Action::HangUp(Cause::MediaTimeout)]);
    }

    #[test]
    fn the_phones_bye_during_its_reinvite_clears_the_call() {
        let t0 = Instant::now();
        let mut c = established(t0);
        c.handle_sip(t0, SipInput::ReInvite { body: None });
        assert_eq!(
            actions(&mut c),
            [Action::AnswerReInvite(None), Action::KeepDialog]
        );
        c.handle_sip(t0, SipInput::Ended { by_remote: true });
        assert_eq!(
            actions(&mut c),
            [
                report(
                    CallStatus::Cleared,
                    Some(Cause::Hangup),
                    Some(200),
                    Some("OK")
                ),
                Action::Done
            ]
        );
        // The ACK that would have answered our offer comes to a finished call.
        c.handle_sip(t0, SipInput::ReInviteAck { body: sdp() });
        assert!(actions(&mut c).is_empty());
    }

    #[test]
    fn an_expired_session_clears_the_call_with_its_own_cause() {
        let t0 = Instant::now();
        let mut c = established(t0);
        c.handle_sip(t0, SipInput::SessionExpired);
        assert_eq!(
            actions(&mut c),
            [
                report(
                    CallStatus::Cleared,
                    Some(Cause::SessionExpired),
                    Some(200),
                    Some("OK")
                ),
                Action::Done
            ]
        );
    }

    #[test]
    fn moderator_commands_in_each_phase() {
        let t0 = Instant::now();
        let mute = PhoneMute {
            speaking: true,
            listening: false,
        };
        // Ringing: key presses have no media to go in; a mute is kept for the media.
        let mut c = call(t0);
        c.handle_sip(t0, ringing());
        actions(&mut c);
        c.handle_control(t0, Some(Control::Dtmf("12".into())));
        c.handle_control(t0, Some(Control::Mute(mute)));
        assert_eq!(actions(&mut c), [Action::Mute(mute)]);
        // Established: both go to the phone; key presses of the phone go to the room.
        let mut c = established(t0);
        c.handle_control(t0, Some(Control::Dtmf("12".into())));
        c.handle_control(t0, Some(Control::Mute(mute)));
        c.handle_media(t0, MediaInput::Dtmf('5'));
        c.handle_sip(t0, SipInput::InfoDigit('#'));
        assert_eq!(
            actions(&mut c),
            [
                Action::SendDtmf("12".into()),
                Action::Mute(mute),
                Action::KeyPress('5'),
                Action::KeyPress('#')
            ]
        );
        // The service stopping hangs up with cause shutdown.
        c.handle_control(t0, None);
        assert_eq!(actions(&mut c), [Action::HangUp(Cause::Shutdown)]);
    }

    #[test]
    fn an_unusable_answer_hangs_up_as_failed() {
        let t0 = Instant::now();
        let mut c = call(t0);
        c.handle_sip(t0, answered());
        actions(&mut c);
        c.handle_media(t0, MediaInput::Started(Err("answer chose Opus".into())));
        assert_eq!(actions(&mut c), [Action::HangUp(Cause::Failed)]);
        c.handle_sip(t0, SipInput::HangupSent);
        assert_eq!(
            actions(&mut c),
            [
                Action::CutOff,
                report(
                    CallStatus::Cleared,
                    Some(Cause::Failed),
                    Some(200),
                    Some("OK")
                )
            ]
        );
        // A 200 with no SDP at all.
        let mut c = call(t0);
        c.handle_sip(
            t0,
            SipInput::Answered {
                code: 200,
                reason: "OK".into(),
                body: None,
            },
        );
        assert_eq!(
            actions(&mut c),
            [Action::KeepDialog, Action::HangUp(Cause::Failed)]
        );
    }

    #[test]
    fn a_timeout_of_our_own_is_failed_and_a_408_of_the_network_no_answer() {
        let t0 = Instant::now();
        for (from_network, cause) in [(false, Cause::Failed), (true, Cause::NoAnswer)] {
            let mut c = call(t0);
            c.handle_sip(
                t0,
                SipInput::Failed {
                    code: 408,
                    reason: "Request Timeout".into(),
                    from_network,
                },
            );
            assert_eq!(
                actions(&mut c)[0],
                report(
                    CallStatus::Rejected,
                    Some(cause),
                    Some(408),
                    Some("Request Timeout")
                )
            );
        }
    }

    // Callers.

    struct FakeRooms {
        pin: &'static str,
        has_call: std::sync::Arc<std::sync::atomic::AtomicBool>,
    }

    impl RoomLookup for FakeRooms {
        fn pin(&self, pin: &str) -> Option<DialinRoom> {
            (pin == self.pin).then(room)
        }
        fn has_call(&self, _: &DialinRoom) -> bool {
            self.has_call.load(std::sync::atomic::Ordering::Relaxed)
        }
    }

    fn room() -> DialinRoom {
        DialinRoom {
            room_id: 7,
            token: "room7".into(),
            wait_for_call: true,
        }
    }

    const WAIT: Duration = Duration::from_secs(300);
    const DIGIT: Duration = Duration::from_secs(10);

    /// A caller with media up at `t0`, going `to`; the flag says whether the room has a call.
    fn caller(
        t0: Instant,
        to: Destination,
    ) -> (PhoneCall, std::sync::Arc<std::sync::atomic::AtomicBool>) {
        let has_call = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let rules = Rules {
            pin_attempts: 2,
            digit_timeout: DIGIT,
            wait_for_call: WAIT,
            media_timeout: Duration::from_secs(30),
            max_call_duration: MAX,
        };
        let lookup = Box::new(FakeRooms {
            pin: "1234",
            has_call: has_call.clone(),
        });
        (PhoneCall::answering(t0, rules, to, lookup, true), has_call)
    }

    fn set(flag: &std::sync::atomic::AtomicBool, value: bool) {
        flag.store(value, std::sync::atomic::Ordering::Relaxed);
    }

    fn joined() -> Action {
        report(CallStatus::Connected, None, Some(200), Some("OK"))
    }

    #[test]
    fn a_caller_types_the_pin_joins_the_room_and_hangs_up() {
        let t0 = Instant::now();
        let (mut c, has_call) = caller(t0, Destination::Pin);
        set(&has_call, true);
        assert_eq!(actions(&mut c), [Action::Play(Prompt::Welcome)]);
        c.handle_media(t0, MediaInput::Playing(Some(Duration::from_secs(3))));
        for digit in ['1', '2', '3', '4'] {
            c.handle_media(t0, MediaInput::Dtmf(digit));
        }
        c.handle_sip(t0, SipInput::InfoDigit('#'));
        let asked = actions(&mut c);
        assert_eq!(asked.last(), Some(&Action::Join(room())), "{asked:?}");
        assert!(asked
            .iter()
            .all(|a| matches!(a, Action::StopPrompt | Action::Join(_))));
        c.handle_media(t0, MediaInput::Joined(true));
        assert_eq!(actions(&mut c), [joined()]);
        // In the room, a key press is the room's event.
        c.handle_media(t0, MediaInput::Dtmf('5'));
        assert_eq!(actions(&mut c), [Action::KeyPress('5')]);
        c.handle_sip(t0, SipInput::Ended { by_remote: true });
        assert_eq!(
            actions(&mut c),
            [
                Action::ReleaseSlot,
                report(
                    CallStatus::Cleared,
                    Some(Cause::Hangup),
                    Some(200),
                    Some("OK")
                ),
                Action::Done
            ]
        );
    }

    #[test]
    fn a_wrong_pin_too_often_plays_goodbye_then_hangs_up() {
        let t0 = Instant::now();
        let (mut c, _) = caller(t0, Destination::Pin);
        actions(&mut c);
        for _ in 0..2 {
            for digit in ['9', '#'] {
                c.handle_media(t0, MediaInput::Dtmf(digit));
            }
        }
        let asked = actions(&mut c);
        assert!(asked.contains(&Action::Play(Prompt::WrongPin)), "{asked:?}");
        assert_eq!(asked.last(), Some(&Action::Play(Prompt::Goodbye)));
        c.handle_media(t0, MediaInput::Playing(Some(Duration::from_secs(2))));
        // The BYE follows the prompt's end, or its length and some slack at the latest.
        assert_eq!(
            c.poll_timeout(),
            Some(t0 + Duration::from_secs(2) + PROMPT_SLACK)
        );
        c.handle_media(t0 + Duration::from_secs(2), MediaInput::PromptDone);
        assert_eq!(actions(&mut c), [Action::HangUp(Cause::WrongPin)]);
        c.handle_sip(t0, SipInput::HangupSent);
        c.handle_sip(t0, SipInput::Ended { by_remote: false });
        assert_eq!(
            actions(&mut c),
            [
                Action::ReleaseSlot,
                Action::EndedUnjoined(Cause::WrongPin),
                Action::Done
            ]
        );
    }

    #[test]
    fn a_caller_hanging_up_during_pin_entry_ends_unjoined() {
        let t0 = Instant::now();
        let (mut c, _) = caller(t0, Destination::Pin);
        c.handle_media(t0, MediaInput::Dtmf('1'));
        actions(&mut c);
        c.handle_sip(t0, SipInput::Ended { by_remote: true });
        assert_eq!(
            actions(&mut c),
            [
                Action::ReleaseSlot,
                Action::EndedUnjoined(Cause::Hangup),
                Action::Done
            ]
        );
        // Nothing after the end.
        c.handle_timeout(t0 + DIGIT);
        c.handle_media(t0, MediaInput::Dtmf('#'));
        assert!(actions(&mut c).is_empty());
    }

    #[test]
    fn a_waiting_caller_joins_when_the_call_starts_or_leaves_when_it_never_does() {
        let t0 = Instant::now();
        let (mut c, has_call) = caller(t0, Destination::Room(room()));
        assert_eq!(actions(&mut c), [Action::Play(Prompt::Waiting)]);
        // The waiting prompt loops.
        c.handle_media(t0, MediaInput::PromptDone);
        assert_eq!(actions(&mut c), [Action::Play(Prompt::Waiting)]);
        let t1 = t0 + WAIT_POLL;
        c.handle_timeout(t1);
        assert!(actions(&mut c).is_empty(), "no call yet");
        set(&has_call, true);
        c.handle_timeout(t1 + WAIT_POLL);
        assert_eq!(actions(&mut c), [Action::Join(room())]);
        c.handle_media(t1 + WAIT_POLL, MediaInput::Joined(true));
        assert_eq!(actions(&mut c), [joined()]);

        let (mut c, _) = caller(t0, Destination::Room(room()));
        actions(&mut c);
        let mut now = t0;
        while now < t0 + WAIT {
            now = c.poll_timeout().expect("a timer while waiting");
            c.handle_timeout(now);
        }
        assert_eq!(actions(&mut c), [Action::Play(Prompt::Goodbye)]);
        c.handle_media(now, MediaInput::Playing(None));
        c.handle_timeout(now);
        assert_eq!(actions(&mut c), [Action::HangUp(Cause::NoCall)]);
    }

    #[test]
    fn a_caller_hanging_up_while_waiting_ends_unjoined() {
        let t0 = Instant::now();
        let (mut c, _) = caller(t0, Destination::Room(room()));
        actions(&mut c);
        c.handle_sip(t0, SipInput::Cancelled);
        assert_eq!(
            actions(&mut c),
            [
                Action::ReleaseSlot,
                Action::EndedUnjoined(Cause::Hangup),
                Action::Done
            ]
        );
    }

    #[test]
    fn a_caller_in_the_room_is_cleared_as_our_bye_goes_out_even_if_it_is_lost() {
        let t0 = Instant::now();
        let (mut c, has_call) = caller(t0, Destination::Room(room()));
        set(&has_call, true);
        c.handle_timeout(t0);
        c.handle_media(t0, MediaInput::Joined(true));
        actions(&mut c);
        let mute = PhoneMute {
            speaking: true,
            listening: true,
        };
        c.handle_control(t0, Some(Control::Mute(mute)));
        c.handle_control(t0, Some(Control::Dtmf("9".into())));
        assert_eq!(
            actions(&mut c),
            [Action::Mute(mute), Action::SendDtmf("9".into())]
        );
        c.handle_control(t0, Some(Control::Hangup(Cause::Ended)));
        assert_eq!(actions(&mut c), [Action::HangUp(Cause::Ended)]);
        c.handle_sip(t0, SipInput::HangupSent);
        assert_eq!(
            actions(&mut c),
            [
                Action::ReleaseSlot,
                Action::CutOff,
                report(
                    CallStatus::Cleared,
                    Some(Cause::Ended),
                    Some(200),
                    Some("OK")
                )
            ]
        );
        c.handle_timeout(t0 + HANGUP_GRACE);
        assert_eq!(actions(&mut c), [Action::Done]);
    }

    #[test]
    fn a_callers_answer_in_the_ack_starts_the_media_and_a_missing_one_hangs_up() {
        let t0 = Instant::now();
        let rules = || Rules {
            pin_attempts: 1,
            digit_timeout: DIGIT,
            wait_for_call: WAIT,
            media_timeout: Duration::from_secs(30),
            max_call_duration: MAX,
        };
        let lookup = || {
            Box::new(FakeRooms {
                pin: "1",
                has_call: Default::default(),
            })
        };
        let mut c = PhoneCall::answering(t0, rules(), Destination::Pin, lookup(), false);
        assert!(actions(&mut c).is_empty(), "nothing before the media");
        c.handle_sip(t0, SipInput::Confirmed { body: Some(sdp()) });
        assert_eq!(
            actions(&mut c),
            [Action::StartMedia {
                body: sdp(),
                early: false
            }]
        );
        c.handle_media(t0, MediaInput::Started(Ok(())));
        assert_eq!(actions(&mut c), [Action::Play(Prompt::Welcome)]);

        let mut c = PhoneCall::answering(t0, rules(), Destination::Pin, lookup(), false);
        c.handle_sip(t0, SipInput::Confirmed { body: None });
        assert_eq!(actions(&mut c), [Action::HangUp(Cause::Failed)]);
        // No ACK at all: given up after the grace.
        let mut c = PhoneCall::answering(t0, rules(), Destination::Pin, lookup(), false);
        c.handle_timeout(t0 + HANGUP_GRACE);
        assert_eq!(actions(&mut c), [Action::HangUp(Cause::Failed)]);
    }

    #[test]
    fn a_silent_caller_is_hung_up_in_any_phase_unless_holding() {
        let t0 = Instant::now();
        let (mut c, _) = caller(t0, Destination::Pin);
        actions(&mut c);
        c.handle_media(t0, MediaInput::Inactive { phone_sends: false });
        assert!(actions(&mut c).is_empty());
        c.handle_media(t0, MediaInput::Inactive { phone_sends: true });
        assert_eq!(actions(&mut c), [Action::HangUp(Cause::MediaTimeout)]);
    }
}

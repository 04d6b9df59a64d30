//! Direct calls (seed 001): a user calls other users by id; each callee's devices ring on the user
//! event stream; a callee answers, declines or lets it ring out. A call is a room of the room
//! layer (its owner the caller, the callees its attendees), so its media is joined as any room's
//! is. One task per call owns its state: commands from the API, the room's events and the ring
//! timer.

pub mod events;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{broadcast, mpsc, oneshot};

pub use events::{CallType, UserBus, UserEvent};
use events::{IncomingCall, UserDetail, UserStatus};

use crate::auth::AuthUser;
use crate::events::{EventBus, Published, RoomEvent};
use crate::room::{
    direct_call_words, CallStatus, Cause, DialoutOptions, ErrorKind, NewParticipant, PhoneNumber,
    RoomError, Rooms,
};
use crate::store::direct::CallLogEntry;
use crate::sync::lock;

/// Entries per page of the call log.
const LOG_PAGE: i64 = 20;

/// The seed's call status words.
pub mod status {
    pub const CALLING: &str = "calling";
    pub const RINGING: &str = "ringing";
    pub const CONNECTING: &str = "connecting";
    pub const CONNECTED: &str = "connected";
    pub const DISCONNECTED: &str = "disconnected";
    pub const BUSY: &str = "busy";
}

/// Why a call ended for someone.
pub mod reason {
    pub const USER_HANGUP: &str = "user hangup";
    pub const DECLINED: &str = "declined";
    pub const NO_ANSWER: &str = "no answer";
    pub const BUSY: &str = "busy";
    pub const ANSWERED_ELSEWHERE: &str = "answered elsewhere";
    pub const CANCELLED: &str = "cancelled";
}

/// A refused request: the seed's `{statusCode, message}`.
#[derive(Debug, Clone, PartialEq)]
pub struct DirectError {
    pub status: u16,
    pub message: String,
}

impl DirectError {
    fn new(status: u16, message: impl Into<String>) -> DirectError {
        DirectError {
            status,
            message: message.into(),
        }
    }
}

pub type DirectResult<T> = Result<T, DirectError>;

/// What the gateway allows of direct calls (`[calls]`).
#[derive(Debug, Clone)]
pub struct DirectConfig {
    pub one_to_one: bool,
    pub ring_time: Duration,
}

/// A call as `GET /api/v1/direct-calls/{roomId}` shows it.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CallView {
    pub room_id: String,
    pub call_type: CallType,
    pub call_mode: &'static str,
    pub call_time: i64,
    pub from: String,
    pub to_users: Vec<String>,
    pub users_status: Vec<UserStatus>,
    /// `open` while it goes on, `closed` once over.
    pub session_status: &'static str,
}

enum Command {
    Answer {
        user: String,
        device_id: String,
        reply: oneshot::Sender<DirectResult<()>>,
    },
    Decline {
        user: String,
        reply: oneshot::Sender<DirectResult<()>>,
    },
    End {
        user: String,
        reply: oneshot::Sender<DirectResult<()>>,
    },
    Invite {
        user: String,
        callees: Vec<(UserDetail, Option<PhoneNumber>)>,
        reply: oneshot::Sender<DirectResult<()>>,
    },
}

#[derive(Clone)]
pub struct DirectCalls {
    inner: Arc<Inner>,
}

struct Inner {
    rooms: Rooms,
    room_events: Arc<EventBus>,
    users: Arc<UserBus>,
    config: DirectConfig,
    public_url: String,
    calls: Mutex<HashMap<String, Entry>>,
}

/// A call's command channel and its last state, for lookups.
struct Entry {
    commands: mpsc::UnboundedSender<Command>,
    view: CallView,
    members: Vec<String>,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl DirectCalls {
    pub fn new(
        rooms: Rooms,
        room_events: Arc<EventBus>,
        users: Arc<UserBus>,
        config: DirectConfig,
        public_url: String,
    ) -> DirectCalls {
        DirectCalls {
            inner: Arc::new(Inner {
                rooms,
                room_events,
                users,
                config,
                public_url,
                calls: Mutex::new(HashMap::new()),
            }),
        }
    }

    pub fn users(&self) -> &Arc<UserBus> {
        &self.inner.users
    }

    /// Starts a call from `caller` to users `to` (ids, or `id@host`): its room, and the ringing.
    pub fn call(
        &self,
        caller: &AuthUser,
        to: &[String],
        call_type: CallType,
    ) -> DirectResult<String> {
        let inner = &self.inner;
        if !inner.config.one_to_one {
            return Err(DirectError::new(
                403,
                "one-to-one calls are not available in this plan",
            ));
        }
        let callees = self.callees(caller, to)?;
        let name = format!(
            "Call: {}",
            callees
                .iter()
                .map(|(c, _)| c.display_name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
        let room = inner
            .rooms
            .create_room(caller, 2, &name)
            .map_err(|e| DirectError::new(500, e.message))?;
        let mut call = Call {
            room_token: room.token.clone(),
            caller: caller.clone(),
            call_type,
            call_time: now_ms(),
            mode: "onetoone",
            callees: Vec::new(),
            caller_status: status::CALLING,
            open: true,
            started: None,
            caller_in_call: false,
        };
        for (detail, number) in callees {
            self.add_callee(&mut call, detail, number)?;
        }
        call.mode = if call.callees.len() == 1 {
            "onetoone"
        } else {
            "onetomany"
        };
        let (commands, receiver) = mpsc::unbounded_channel();
        let room_events = inner.room_events.subscribe(room.id);
        lock(&inner.calls).insert(
            room.token.clone(),
            Entry {
                commands,
                view: call.view(),
                members: call.members(),
            },
        );
        tracing::info!(room = %room.token, caller = %caller.id, callees = call.callees.len(), "direct call started");
        let service = self.clone();
        tokio::spawn(async move { service.drive(call, receiver, room_events).await });
        Ok(room.token)
    }

    /// Who `to` names (user ids, `id@host`, or phone numbers that the trunks may dial), each
    /// once; `caller` is not among them.
    fn callees(
        &self,
        caller: &AuthUser,
        to: &[String],
    ) -> DirectResult<Vec<(UserDetail, Option<PhoneNumber>)>> {
        let inner = &self.inner;
        if to.is_empty() {
            return Err(DirectError::new(400, "to: name at least one user"));
        }
        let store = inner.rooms.store();
        let mut callees: Vec<(UserDetail, Option<PhoneNumber>)> = Vec::new();
        for jid in to {
            // A phone number (`+E164` or `tel:+E164`) is dialled out through the trunks.
            if jid.starts_with('+') || jid.starts_with("tel:") {
                let number: PhoneNumber = jid.trim_start_matches("tel:").parse().map_err(|_| {
                    DirectError::new(400, format!("to: `{jid}` is not an E.164 number"))
                })?;
                inner
                    .rooms
                    .check_dialable(&number)
                    .map_err(|e| DirectError::new(room_status(&e), e.message))?;
                let detail = UserDetail {
                    user_jid: number.as_str().to_string(),
                    display_name: number.as_str().to_string(),
                };
                if !callees.iter().any(|(c, _)| c.user_jid == detail.user_jid) {
                    callees.push((detail, Some(number)));
                }
                continue;
            }
            let id = jid.split('@').next().unwrap_or_default();
            if id == caller.id {
                return Err(DirectError::new(400, "to: a user cannot call themselves"));
            }
            let user = store
                .write(|tx| tx.user(id))
                .map_err(|_| DirectError::new(500, "store error"))?
                .ok_or_else(|| DirectError::new(404, format!("to: no user `{jid}`")))?;
            if !callees.iter().any(|(c, _)| c.user_jid == user.id) {
                callees.push((
                    UserDetail {
                        user_jid: user.id,
                        display_name: user.display_name,
                    },
                    None,
                ));
            }
        }
        Ok(callees)
    }

    /// Makes a callee an attendee of the call's room (added by the caller, its owner), calling
    /// until rung.
    fn add_callee(
        &self,
        call: &mut Call,
        detail: UserDetail,
        number: Option<PhoneNumber>,
    ) -> DirectResult<()> {
        let phone = number.is_some();
        let added = match number {
            Some(number) => NewParticipant::Phone(number),
            None => NewParticipant::User(detail.user_jid.clone()),
        };
        let attendee = self
            .inner
            .rooms
            .add_participant(&call.caller, &call.room_token, added)
            .map_err(|e| DirectError::new(500, e.message))?;
        call.callees.push(Callee {
            detail,
            status: status::CALLING,
            answered: false,
            phone: phone.then_some(PhoneCallee {
                attendee_id: attendee.attendee_id,
                call_id: None,
            }),
            ring_until: None,
        });
        Ok(())
    }

    /// Adds `to` to the call `room_id` that `user` is in: users ring, phones are dialled.
    pub async fn invite(&self, user: &AuthUser, room_id: &str, to: &[String]) -> DirectResult<()> {
        let callees = self.callees(user, to)?;
        self.send(room_id, |reply| Command::Invite {
            user: user.id.clone(),
            callees,
            reply,
        })
        .await
    }

    pub fn view(&self, user: &AuthUser, room_id: &str) -> DirectResult<CallView> {
        let calls = lock(&self.inner.calls);
        match calls.get(room_id) {
            Some(e) if e.members.contains(&user.id) => Ok(e.view.clone()),
            _ => Err(DirectError::new(404, "no such call")),
        }
    }

    pub async fn answer(
        &self,
        user: &AuthUser,
        room_id: &str,
        device_id: String,
    ) -> DirectResult<()> {
        self.send(room_id, |reply| Command::Answer {
            user: user.id.clone(),
            device_id,
            reply,
        })
        .await
    }

    pub async fn decline(&self, user: &AuthUser, room_id: &str) -> DirectResult<()> {
        self.send(room_id, |reply| Command::Decline {
            user: user.id.clone(),
            reply,
        })
        .await
    }

    pub async fn end(&self, user: &AuthUser, room_id: &str) -> DirectResult<()> {
        self.send(room_id, |reply| Command::End {
            user: user.id.clone(),
            reply,
        })
        .await
    }

    async fn send(
        &self,
        room_id: &str,
        command: impl FnOnce(oneshot::Sender<DirectResult<()>>) -> Command,
    ) -> DirectResult<()> {
        let ended = || DirectError::new(410, "the call has already ended");
        let sender = lock(&self.inner.calls)
            .get(room_id)
            .map(|e| e.commands.clone())
            .ok_or_else(|| DirectError::new(404, "no such call in progress"))?;
        let (reply, answer) = oneshot::channel();
        sender.send(command(reply)).map_err(|_| ended())?;
        answer.await.map_err(|_| ended())?
    }

    /// The call's task: until it is over.
    async fn drive(
        self,
        mut call: Call,
        mut commands: mpsc::UnboundedReceiver<Command>,
        mut room_events: broadcast::Receiver<Arc<Published>>,
    ) {
        let callees = self.ring(&mut call);
        call.caller_status = if callees.iter().all(|(_, s)| *s == status::BUSY) {
            status::BUSY
        } else {
            status::RINGING
        };
        if call.caller_status == status::BUSY {
            self.finish(&mut call, reason::BUSY);
            return;
        }
        while call.open {
            let ring_until = call
                .callees
                .iter()
                .filter(|c| c.status == status::RINGING)
                .filter_map(|c| c.ring_until)
                .min();
            let ringing = ring_until.is_some();
            let ring_until = ring_until.unwrap_or_else(tokio::time::Instant::now);
            tokio::select! {
                command = commands.recv() => match command {
                    Some(command) => self.command(&mut call, command),
                    None => break,
                },
                event = room_events.recv() => match event {
                    Ok(published) => self.room_event(&mut call, &published.event),
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => break,
                },
                _ = tokio::time::sleep_until(ring_until), if ringing => self.ring_out(&mut call, ring_until),
            }
            if let Some(entry) = lock(&self.inner.calls).get_mut(&call.room_token) {
                entry.view = call.view();
            }
        }
        lock(&self.inner.calls).remove(&call.room_token);
        tracing::info!(room = %call.room_token, "direct call over");
    }

    /// Rings every callee who is new to the call and not in another one (phones are dialled
    /// once the caller is in the room's call), and tells the members each new callee's status:
    /// ringing, or busy. The callees' jids and statuses.
    fn ring(&self, call: &mut Call) -> Vec<(String, &'static str)> {
        let mut incoming = call.incoming(&self.inner.public_url);
        incoming.local_user = true;
        let until = tokio::time::Instant::now() + self.inner.config.ring_time;
        let store = self.inner.rooms.store();
        let mut rung = Vec::new();
        for callee in &mut call.callees {
            if callee.status != status::CALLING {
                continue;
            }
            let busy = callee.phone.is_none()
                && store
                    .write(|tx| tx.user_in_call(&callee.detail.user_jid))
                    .unwrap_or(false);
            if busy {
                callee.status = status::BUSY;
            } else if callee.phone.is_none() {
                self.inner.users.send(
                    &callee.detail.user_jid,
                    UserEvent::IncomingCall(incoming.clone()),
                );
                callee.status = status::RINGING;
                callee.ring_until = Some(until);
            }
            rung.push((callee.detail.user_jid.clone(), callee.status));
        }
        for (jid, state) in &rung {
            let why = (*state == status::BUSY).then_some(reason::BUSY);
            self.publish_status(call, jid, state, why);
        }
        rung
    }

    fn command(&self, call: &mut Call, command: Command) {
        match command {
            Command::Invite {
                user,
                callees,
                reply,
            } => {
                let result = self.invite_into(call, &user, callees);
                let _ = reply.send(result);
            }
            Command::Answer {
                user,
                device_id,
                reply,
            } => {
                let result = match call.callee_mut(&user) {
                    None => Err(DirectError::new(404, "you are not called in this call")),
                    Some(callee) if callee.status != status::RINGING => Err(DirectError::new(
                        409,
                        format!("the call is not ringing for you (it is {})", callee.status),
                    )),
                    Some(callee) => {
                        callee.status = status::CONNECTING;
                        callee.answered = true;
                        Ok(())
                    }
                };
                if result.is_ok() {
                    self.inner.users.send(
                        &user,
                        UserEvent::CallAnswered {
                            room_id: call.room_token.clone(),
                            device_id,
                        },
                    );
                    if call.caller_status == status::RINGING {
                        call.caller_status = status::CONNECTING;
                    }
                    self.publish_status(call, &user, status::CONNECTING, None);
                    tracing::info!(room = %call.room_token, %user, "direct call answered");
                }
                let _ = reply.send(result);
            }
            Command::Decline { user, reply } => {
                let result = match call.callee_mut(&user) {
                    None => Err(DirectError::new(404, "you are not called in this call")),
                    Some(callee) if callee.status != status::RINGING => Err(DirectError::new(
                        409,
                        format!("the call is not ringing for you (it is {})", callee.status),
                    )),
                    Some(callee) => {
                        callee.status = status::DISCONNECTED;
                        Ok(())
                    }
                };
                if result.is_ok() {
                    self.inner.users.send(
                        &user,
                        UserEvent::CallCancelled {
                            room_id: call.room_token.clone(),
                            reason: reason::DECLINED,
                        },
                    );
                    self.publish_status(call, &user, status::DISCONNECTED, Some(reason::DECLINED));
                    tracing::info!(room = %call.room_token, %user, "direct call declined");
                    if call.nobody_left() {
                        self.finish(call, reason::DECLINED);
                    }
                }
                let _ = reply.send(result);
            }
            Command::End { user, reply } => {
                if user != call.caller.id && call.callee_mut(&user).is_none() {
                    let _ = reply.send(Err(DirectError::new(404, "you are not in this call")));
                    return;
                }
                tracing::info!(room = %call.room_token, %user, "direct call ended by a user");
                // Whoever still rings hears it was cancelled.
                for callee in call
                    .callees
                    .iter_mut()
                    .filter(|c| c.status == status::RINGING)
                {
                    callee.status = status::DISCONNECTED;
                    self.inner.users.send(
                        &callee.detail.user_jid,
                        UserEvent::CallCancelled {
                            room_id: call.room_token.clone(),
                            reason: reason::CANCELLED,
                        },
                    );
                }
                self.publish_status(call, &user, status::DISCONNECTED, Some(reason::USER_HANGUP));
                self.finish(call, reason::USER_HANGUP);
                let _ = reply.send(Ok(()));
            }
        }
    }

    /// Callees and the caller joining or leaving the room's call, and phone callees' progress.
    fn room_event(&self, call: &mut Call, event: &RoomEvent) {
        match event {
            RoomEvent::ParticipantFlags {
                actor_type,
                actor_id,
                in_call,
                ..
            } if actor_type == "users" && *actor_id == call.caller.id && *in_call > 0 => {
                call.caller_in_call = true;
                self.dial_phones(call);
            }
            RoomEvent::CallStatus {
                attendee_id,
                status: word,
                cause,
                ..
            } => {
                let Some(state) = CallStatus::from_word(word) else {
                    return;
                };
                let cause = cause.as_deref().and_then(Cause::from_word);
                let (status, why) = direct_call_words(state, cause);
                let Some(callee) = call.callees.iter_mut().find(|c| {
                    c.phone
                        .as_ref()
                        .is_some_and(|p| p.attendee_id == *attendee_id)
                }) else {
                    return;
                };
                callee.status = status;
                let jid = callee.detail.user_jid.clone();
                if status == status::CONNECTED {
                    call.caller_status = status::CONNECTED;
                    call.started.get_or_insert_with(now_ms);
                }
                self.publish_status(call, &jid, status, why);
                if state.is_final() && call.nobody_left() {
                    self.finish(call, why.unwrap_or(reason::USER_HANGUP));
                }
            }
            RoomEvent::ParticipantFlags {
                actor_type,
                actor_id,
                in_call,
                ..
            } if actor_type == "users" => {
                if *in_call > 0 {
                    let connecting = call
                        .callee_mut(actor_id)
                        .is_some_and(|c| c.status == status::CONNECTING);
                    if connecting {
                        if let Some(callee) = call.callee_mut(actor_id) {
                            callee.status = status::CONNECTED;
                        }
                        call.caller_status = status::CONNECTED;
                        call.started.get_or_insert_with(now_ms);
                        self.publish_status(call, &actor_id.clone(), status::CONNECTED, None);
                    }
                } else if call.is_connected() {
                    // Someone left a call in progress: in a one-to-one call, that ends it.
                    if let Some(callee) = call.callee_mut(actor_id) {
                        callee.status = status::DISCONNECTED;
                    }
                    self.publish_status(
                        call,
                        &actor_id.clone(),
                        status::DISCONNECTED,
                        Some(reason::USER_HANGUP),
                    );
                    if call.mode == "onetoone" || *actor_id == call.caller.id || call.nobody_left()
                    {
                        self.finish(call, reason::USER_HANGUP);
                    }
                }
            }
            RoomEvent::CallEnded { .. } if call.is_connected() => {
                self.finish(call, reason::USER_HANGUP);
            }
            _ => {}
        }
    }

    /// Dials the phone callees not dialled yet, as the caller (in the room's call now).
    fn dial_phones(&self, call: &mut Call) {
        let mut failed = Vec::new();
        for callee in &mut call.callees {
            let Some(phone) = callee.phone.as_mut().filter(|p| p.call_id.is_none()) else {
                continue;
            };
            match self.inner.rooms.dialout(
                &call.caller,
                &call.room_token,
                None,
                phone.attendee_id,
                DialoutOptions::default(),
            ) {
                Ok(call_id) => phone.call_id = Some(call_id),
                Err(e) => {
                    tracing::info!(room = %call.room_token, number = %callee.detail.user_jid, error = %e.message, "direct call to a phone not dialled");
                    callee.status = status::DISCONNECTED;
                    failed.push(callee.detail.user_jid.clone());
                }
            }
        }
        for jid in failed {
            self.publish_status(call, &jid, status::DISCONNECTED, Some("failed"));
        }
        if call.nobody_left() {
            self.finish(call, "failed");
        }
    }

    /// A member of the call adds callees: users who are not in it yet ring (busy ones are told
    /// so), phones are dialled once the caller is in the room's call.
    fn invite_into(
        &self,
        call: &mut Call,
        user: &str,
        callees: Vec<(UserDetail, Option<PhoneNumber>)>,
    ) -> DirectResult<()> {
        let member = user == call.caller.id
            || call
                .callee_mut(user)
                .is_some_and(|c| c.status == status::CONNECTED || c.status == status::CONNECTING);
        if !member {
            return Err(DirectError::new(404, "you are not in this call"));
        }
        let mut added = 0;
        for (detail, number) in callees {
            let known = call
                .callees
                .iter_mut()
                .find(|c| c.detail.user_jid == detail.user_jid);
            match known {
                // Someone who declined, missed it or hung up may be called again.
                Some(c) if c.status == status::DISCONNECTED && c.phone.is_none() => {
                    c.status = status::CALLING;
                    added += 1;
                }
                Some(_) => {}
                None => {
                    self.add_callee(call, detail, number)?;
                    added += 1;
                }
            }
        }
        if added == 0 {
            return Err(DirectError::new(
                409,
                "everyone named is in the call already",
            ));
        }
        call.mode = "onetomany";
        tracing::info!(room = %call.room_token, %user, added, "direct call invitation");
        self.ring(call);
        if call.caller_in_call {
            self.dial_phones(call);
        }
        Ok(())
    }

    /// The callees whose ring time ended at `due` missed the call; with nobody in it, the call
    /// is over. Phones ring for their trunk's own time.
    fn ring_out(&self, call: &mut Call, due: tokio::time::Instant) {
        let all_users = call.members();
        for callee in call.callees.iter_mut().filter(|c| {
            c.status == status::RINGING
                && c.phone.is_none()
                && c.ring_until.is_some_and(|t| t <= due)
        }) {
            callee.status = status::DISCONNECTED;
            let jid = callee.detail.user_jid.clone();
            self.inner.users.send(
                &jid,
                UserEvent::CallCancelled {
                    room_id: call.room_token.clone(),
                    reason: reason::NO_ANSWER,
                },
            );
            self.inner.users.send(
                &jid,
                UserEvent::MissedCall {
                    room_id: call.room_token.clone(),
                    is_one_to_one_call: call.mode == "onetoone",
                    user_jid: call.caller.id.clone(),
                    group_id: None,
                    call_type: call.call_type,
                    user_list: all_users.clone(),
                    call_time: call.call_time,
                },
            );
            tracing::info!(room = %call.room_token, callee = %jid, "direct call not answered");
        }
        if call.nobody_left() {
            call.caller_status = status::DISCONNECTED;
            self.publish_status(
                call,
                &call.caller.id.clone(),
                status::DISCONNECTED,
                Some(reason::NO_ANSWER),
            );
            self.finish(call, reason::NO_ANSWER);
        }
    }

    /// Ends the call for everyone: its room's call too.
    fn finish(&self, call: &mut Call, why: &'static str) {
        if !call.open {
            return;
        }
        call.open = false;
        self.log(call, why);
        for callee in &mut call.callees {
            if callee.status != status::BUSY {
                callee.status = status::DISCONNECTED;
            }
        }
        call.caller_status = status::DISCONNECTED;
        for user in call.members() {
            self.inner.users.send(
                &user,
                UserEvent::CallStatus {
                    room_id: call.room_token.clone(),
                    status: status::DISCONNECTED,
                    user_jid: user.clone(),
                    local_user: true,
                    session_status: "closed",
                    users_status: call.users_status(),
                    reason: Some(why),
                },
            );
        }
        // The caller owns the room: ending its call for all takes everyone's media with it.
        if let Err(e) = self
            .inner
            .rooms
            .leave_call(&call.caller, &call.room_token, None, true)
        {
            tracing::debug!(room = %call.room_token, error = %e.message, "no room call to end");
        }
    }

    /// Writes the call into its users' call logs (phones have none).
    fn log(&self, call: &Call, why: &'static str) {
        let end = now_ms();
        let user_list = call.members();
        let to_user = call
            .callees
            .iter()
            .map(|c| c.detail.user_jid.as_str())
            .collect::<Vec<_>>()
            .join(",");
        let entry = |state: &str| CallLogEntry {
            room_id: call.room_token.clone(),
            call_mode: call.mode.to_string(),
            call_state: state.to_string(),
            call_type: call.call_type.word().to_string(),
            call_time: call.call_time,
            start_time: call.started,
            end_time: end,
            from_user: call.caller.id.clone(),
            to_user: to_user.clone(),
            user_list: user_list.clone(),
            session_status: "closed".to_string(),
            reason: Some(why.to_string()),
        };
        let written = self.inner.rooms.store().write(|tx| {
            tx.insert_call_log(&call.caller.id, &entry("outgoing"))?;
            for callee in call.callees.iter().filter(|c| c.phone.is_none()) {
                let state = if callee.answered {
                    "incoming"
                } else {
                    "missed"
                };
                tx.insert_call_log(&callee.detail.user_jid, &entry(state))?;
            }
            Ok::<_, crate::store::StoreError>(())
        });
        if let Err(e) = written {
            tracing::warn!(room = %call.room_token, error = %e, "direct call not logged");
        }
    }

    /// A page (from 1) of the user's call log, newest first: the entries and the number of pages.
    pub fn call_log(&self, user: &AuthUser, page: i64) -> DirectResult<(Vec<CallLogEntry>, i64)> {
        let page = page.max(1);
        let (entries, total) = self
            .inner
            .rooms
            .store()
            .write(|tx| tx.call_log(&user.id, (page - 1) * LOG_PAGE, LOG_PAGE))
            .map_err(|_| DirectError::new(500, "store error"))?;
        Ok((entries, (total + LOG_PAGE - 1) / LOG_PAGE))
    }

    /// Tells every member that `user`'s status changed.
    fn publish_status(
        &self,
        call: &Call,
        user: &str,
        status: &'static str,
        why: Option<&'static str>,
    ) {
        for member in call.members() {
            self.inner.users.send(
                &member,
                UserEvent::CallStatus {
                    room_id: call.room_token.clone(),
                    status,
                    user_jid: user.to_string(),
                    local_user: member == user,
                    session_status: if call.open { "open" } else { "closed" },
                    users_status: call.users_status(),
                    reason: why,
                },
            );
        }
    }
}

struct Callee {
    detail: UserDetail,
    status: &'static str,
    /// Whether this callee answered (for the call log).
    answered: bool,
    /// A phone number, dialled out through the trunks.
    phone: Option<PhoneCallee>,
    /// When a ringing user's ring time ends.
    ring_until: Option<tokio::time::Instant>,
}

struct PhoneCallee {
    attendee_id: i64,
    call_id: Option<String>,
}

/// The HTTP status of a room layer refusal.
fn room_status(e: &RoomError) -> u16 {
    match e.kind {
        ErrorKind::BadRequest => 400,
        ErrorKind::Forbidden => 403,
        ErrorKind::NotFound => 404,
        ErrorKind::NotImplemented => 501,
        ErrorKind::Unavailable => 503,
        ErrorKind::TooManyRequests => 429,
        _ => 500,
    }
}

struct Call {
    room_token: String,
    caller: AuthUser,
    call_type: CallType,
    call_time: i64,
    mode: &'static str,
    callees: Vec<Callee>,
    caller_status: &'static str,
    open: bool,
    /// When the first callee was connected (milliseconds).
    started: Option<i64>,
    /// The caller joined the room's call (phones are dialled from then on).
    caller_in_call: bool,
}

impl Call {
    fn callee_mut(&mut self, user: &str) -> Option<&mut Callee> {
        self.callees.iter_mut().find(|c| c.detail.user_jid == user)
    }

    fn members(&self) -> Vec<String> {
        std::iter::once(self.caller.id.clone())
            .chain(self.callees.iter().map(|c| c.detail.user_jid.clone()))
            .collect()
    }

    fn is_connected(&self) -> bool {
        self.callees
            .iter()
            .any(|c| c.status == status::CONNECTED || c.status == status::CONNECTING)
    }

    /// No callee rings, connects or talks any more.
    fn nobody_left(&self) -> bool {
        self.callees
            .iter()
            .all(|c| c.status == status::DISCONNECTED || c.status == status::BUSY)
    }

    fn users_status(&self) -> Vec<UserStatus> {
        std::iter::once(UserStatus {
            user_jid: self.caller.id.clone(),
            status: self.caller_status,
        })
        .chain(self.callees.iter().map(|c| UserStatus {
            user_jid: c.detail.user_jid.clone(),
            status: c.status,
        }))
        .collect()
    }

    fn incoming(&self, public_url: &str) -> IncomingCall {
        let to_users: Vec<String> = self
            .callees
            .iter()
            .map(|c| c.detail.user_jid.clone())
            .collect();
        let one = self.mode == "onetoone";
        IncomingCall {
            all_users: self.members(),
            call_time: self.call_time,
            call_type: self.call_type,
            group_id: None,
            local_user: false,
            room_id: self.room_token.clone(),
            room_link: format!("{public_url}/#/room/{}", self.room_token),
            status: status::CALLING,
            to_users: to_users.clone(),
            user_details: self.callees.iter().map(|c| c.detail.clone()).collect(),
            user_jid: self.caller.id.clone(),
            users_status: self.users_status(),
            from: if one {
                to_users.first().cloned().unwrap_or_default()
            } else {
                self.caller.id.clone()
            },
            to: if one {
                self.caller.id.clone()
            } else {
                self.room_token.clone()
            },
            call_mode: self.mode,
        }
    }

    fn view(&self) -> CallView {
        CallView {
            room_id: self.room_token.clone(),
            call_type: self.call_type,
            call_mode: self.mode,
            call_time: self.call_time,
            from: self.caller.id.clone(),
            to_users: self
                .callees
                .iter()
                .map(|c| c.detail.user_jid.clone())
                .collect(),
            users_status: self.users_status(),
            session_status: if self.open { "open" } else { "closed" },
        }
    }
}

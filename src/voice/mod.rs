//! Voice calls (seed 000, `POST /api/v1/voice.call`): ringing a room's users on every device they
//! registered (push) and on their event streams, until one answers, all decline, the sender
//! cancels or the ring times out; every end of ringing stops every device. A voice call rings
//! into an existing room: answering it is joining the room's call.

mod apns;
mod fcm;
mod message;
pub mod push;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use rand::Rng;
use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::{broadcast, Notify};

use crate::auth::AuthUser;
use crate::config::PushConfig;
use crate::direct::{CallType, UserBus, UserEvent};
use crate::events::{EventBus, RoomEvent};
use crate::links::when::now_ms;
use crate::store::direct::CallLogEntry;
use crate::store::push::{PushRow, VoiceCallRow};
use crate::store::{Store, StoreError};
use crate::sync::lock;
use push::{kind, outcome, Message, Push};

/// A call's status words.
pub mod status {
    pub const CALLING: &str = "calling";
    pub const ACCEPTED: &str = "accepted";
    pub const DECLINED: &str = "declined";
    pub const CANCELED: &str = "canceled";
    pub const MISSED: &str = "missed";
    pub const ENDED: &str = "ended";
}

/// Why ringing stopped (the `reason` of a stop-ringing message).
pub mod reason {
    pub const ANSWERED: &str = "answered";
    pub const DECLINED: &str = "declined";
    pub const CANCELED: &str = "canceled";
    pub const TIMEOUT: &str = "timeout";
}

/// `notificationType` of the push that stops a ring.
pub const CALL_CANCEL: &str = "callCancel";
/// The default `notificationType` of a ring.
pub const CALL_INVITE: &str = "callInvite";

/// A refusal in the seed's shape: `{success: false, error, errorType}` with an HTTP status.
#[derive(Debug, Clone, PartialEq)]
pub struct VoiceError {
    pub status: u16,
    pub error: String,
    pub error_type: &'static str,
}

impl VoiceError {
    pub fn invalid(error: impl Into<String>) -> VoiceError {
        VoiceError {
            status: 400,
            error: error.into(),
            error_type: "error-invalid-params",
        }
    }

    fn new(status: u16, error_type: &'static str, error: impl Into<String>) -> VoiceError {
        VoiceError {
            status,
            error: error.into(),
            error_type,
        }
    }

    fn store(e: StoreError) -> VoiceError {
        tracing::error!(error = %e, "store failed in a voice call");
        VoiceError::new(500, "error-internal", "internal error")
    }
}

pub type VoiceResult<T> = Result<T, VoiceError>;

/// A checked `POST voice.call` request.
#[derive(Debug, Clone)]
pub struct CallRequest {
    pub room_url: String,
    pub sender_name: String,
    pub sender_group: Option<String>,
    pub server_name: String,
    pub notification_message: String,
    pub user_names: Vec<String>,
    pub user_ids: Vec<String>,
    pub room_id: String,
    pub additional_info: Option<Value>,
    pub only_audio: bool,
    pub sender_id: Option<String>,
    pub notification_type: String,
}

/// One message to one device, as the answer and `voice.call.info` list it.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    pub user_id: String,
    pub device_id: Option<String>,
    pub transport: Option<String>,
    pub result: String,
}

/// What `POST voice.call` answers.
#[derive(Debug, Clone)]
pub struct Started {
    pub call_id: String,
    /// Each reached user's first device token (for Web Push and UnifiedPush the registration id).
    pub sent_to: Vec<(String, String)>,
    pub deliveries: Vec<Delivery>,
}

#[derive(Clone)]
pub struct VoiceCalls {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<Store>,
    room_events: Arc<EventBus>,
    users: Arc<UserBus>,
    push: Push,
    config: PushConfig,
    live: Mutex<HashMap<String, Live>>,
}

/// A call that still rings or talks.
struct Live {
    room_token: String,
    sender: String,
    recipients: Vec<String>,
    declined: HashSet<String>,
    status: &'static str,
    /// The ring's push payload; a cancel is the same with another `notificationType`.
    payload: Value,
    created_at: i64,
    /// Wakes the call's task after a change.
    changed: Arc<Notify>,
}

/// A Rocket.Chat style id: 17 characters of letters and digits (also a valid push `Topic`).
fn new_id() -> String {
    const ALPHABET: &[u8] = b"23456789ABCDEFGHJKLMNPQRSTWXYZabcdefghijkmnopqrstuvwxyz";
    let mut rng = rand::rng();
    (0..17)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect()
}

/// The token a device is known by in `sentTo`: never a Web Push or UnifiedPush endpoint, which is
/// a secret capability.
fn device_token(device: &PushRow) -> String {
    if device.kind == kind::APN || device.kind == kind::GCM {
        device.value.clone()
    } else {
        device.id.clone()
    }
}

impl VoiceCalls {
    pub fn new(
        store: Arc<Store>,
        room_events: Arc<EventBus>,
        users: Arc<UserBus>,
        push: Push,
        config: PushConfig,
    ) -> VoiceCalls {
        match store.write(|tx| tx.close_voice_calls(now_ms())) {
            Ok(0) => {}
            Ok(n) => tracing::info!(calls = n, "voice calls of a previous run closed"),
            Err(e) => tracing::error!(error = %e, "cannot close earlier voice calls"),
        }
        VoiceCalls {
            inner: Arc::new(Inner {
                store,
                room_events,
                users,
                push,
                config,
                live: Mutex::new(HashMap::new()),
            }),
        }
    }

    pub fn push(&self) -> &Push {
        &self.inner.push
    }

    /// Starts a call: checks the room and recipients, rings every device, answers with what the
    /// deliveries came to within `[push] answer_wait` (later ones show as `sent`).
    pub async fn call(&self, sender: &AuthUser, request: CallRequest) -> VoiceResult<Started> {
        let inner = &self.inner;
        if let Some(id) = request.sender_id.as_deref().filter(|id| *id != sender.id) {
            return Err(VoiceError::new(
                403,
                "error-not-allowed",
                format!("senderId: `{id}` is not you; a call is sent as its sender"),
            ));
        }
        let (room_id, recipients) = inner
            .store
            .write(|tx| {
                let Some(room) = tx.room_by_token(&request.room_id)? else {
                    return Ok(Err(VoiceError::new(
                        404,
                        "error-room-not-found",
                        format!("roomId: no room `{}`", request.room_id),
                    )));
                };
                if tx
                    .attendee_by_actor(room.id, "users", &sender.id)?
                    .is_none()
                {
                    return Ok(Err(VoiceError::new(
                        403,
                        "error-not-allowed",
                        format!("roomId: you are not in room `{}`", request.room_id),
                    )));
                }
                let attendees: Vec<String> = tx
                    .attendees(room.id)?
                    .into_iter()
                    .filter(|a| a.actor_type == "users")
                    .map(|a| a.actor_id)
                    .collect();
                let mut recipients: Vec<String> = Vec::new();
                let mut strangers = Vec::new();
                let (field, names) = if request.user_ids.is_empty() {
                    ("userNames", &request.user_names)
                } else {
                    ("userIds", &request.user_ids)
                };
                for name in names {
                    // A user name is the user id, or else a display name.
                    let id = match tx.user(name)? {
                        Some(user) => Some(user.id),
                        None => tx
                            .users()?
                            .into_iter()
                            .find(|u| u.display_name == *name)
                            .map(|u| u.id),
                    };
                    match id.filter(|id| attendees.contains(id)) {
                        Some(id) if id == sender.id => {}
                        Some(id) if !recipients.contains(&id) => recipients.push(id),
                        Some(_) => {}
                        None => strangers.push(name.clone()),
                    }
                }
                if !strangers.is_empty() {
                    return Ok(Err(VoiceError::new(
                        403,
                        "error-invalid-user",
                        format!(
                            "{field}: not in room `{}`: {}",
                            request.room_id,
                            strangers.join(", ")
                        ),
                    )));
                }
                if recipients.is_empty() {
                    return Ok(Err(VoiceError::invalid(format!(
                        "{field}: name at least one user of the room other than yourself"
                    ))));
                }
                Ok::<_, StoreError>(Ok((room.id, recipients)))
            })
            .map_err(VoiceError::store)??;
        let call_id = new_id();
        let payload = json!({
            "roomUrl": request.room_url,
            "roomId": request.room_id,
            "callId": call_id,
            "senderName": request.sender_name,
            "senderId": sender.id,
            "senderGroup": request.sender_group,
            "serverName": request.server_name,
            "onlyAudio": request.only_audio,
            "notificationType": request.notification_type,
            "message": request.notification_message,
            "additionalInfo": request.additional_info,
        });
        let now = now_ms();
        let changed = Arc::new(Notify::new());
        inner
            .store
            .write(|tx| {
                tx.insert_voice_call(&VoiceCallRow {
                    id: call_id.clone(),
                    room_token: request.room_id.clone(),
                    sender_id: sender.id.clone(),
                    recipients: json!(recipients).to_string(),
                    status: status::CALLING.to_string(),
                    reason: None,
                    payload: payload.to_string(),
                    deliveries: "[]".to_string(),
                    created_at: now,
                    ended_at: None,
                })
            })
            .map_err(VoiceError::store)?;
        lock(&inner.live).insert(
            call_id.clone(),
            Live {
                room_token: request.room_id.clone(),
                sender: sender.id.clone(),
                recipients: recipients.clone(),
                declined: HashSet::new(),
                status: status::CALLING,
                payload: payload.clone(),
                created_at: now,
                changed: changed.clone(),
            },
        );
        for user in &recipients {
            inner
                .users
                .send(user, UserEvent::VoiceCall(payload.clone()));
        }
        tracing::info!(call = %call_id, room = %request.room_id, sender = %sender.id, recipients = recipients.len(), "voice call started");
        let ring = Message {
            body: payload.to_string().into_bytes(),
            topic: Some(call_id.clone()),
            ttl: inner.config.ring_time.0,
            ring: true,
            title: format!("{} is calling", request.sender_name),
        };
        let (deliveries, sent_to, handles) = self.ring(&call_id, &recipients, &ring)?;
        let service = self.clone();
        let events = inner.room_events.subscribe(room_id);
        let task_call = call_id.clone();
        tokio::spawn(async move { service.drive(task_call, changed, events).await });
        // Results that come within the wait go into the answer; the rest go on in the background.
        let until = tokio::time::Instant::now() + inner.config.answer_wait.0;
        let mut deliveries = deliveries;
        for (index, mut handle) in handles {
            if let Ok(Ok(result)) = tokio::time::timeout_at(until, &mut handle).await {
                if let Some(d) = deliveries.get_mut(index) {
                    d.result = result.to_string();
                }
            }
        }
        Ok(Started {
            call_id,
            sent_to,
            deliveries,
        })
    }

    /// Sends the ring to every device of every recipient; each result is written to the call's
    /// deliveries as it comes.
    #[allow(clippy::type_complexity)]
    fn ring(
        &self,
        call_id: &str,
        recipients: &[String],
        ring: &Message,
    ) -> VoiceResult<(
        Vec<Delivery>,
        Vec<(String, String)>,
        Vec<(usize, tokio::task::JoinHandle<&'static str>)>,
    )> {
        let mut deliveries = Vec::new();
        let mut sent_to = Vec::new();
        let mut handles = Vec::new();
        for user in recipients {
            let devices = self.usable_devices(user)?;
            if devices.is_empty() {
                deliveries.push(Delivery {
                    user_id: user.clone(),
                    device_id: None,
                    transport: None,
                    result: outcome::NO_DEVICE.to_string(),
                });
                continue;
            }
            if let Some(first) = devices.first() {
                sent_to.push((user.clone(), device_token(first)));
            }
            for device in devices {
                let index = deliveries.len();
                deliveries.push(Delivery {
                    user_id: user.clone(),
                    device_id: Some(device.id.clone()),
                    transport: Some(device.kind.clone()),
                    result: outcome::SENT.to_string(),
                });
                let sending = self.inner.push.deliver(device, ring.clone());
                let service = self.clone();
                let call = call_id.to_string();
                handles.push((
                    index,
                    tokio::spawn(async move {
                        let result = sending.await.unwrap_or(outcome::FAILED);
                        service.record_delivery(&call, index, result);
                        result
                    }),
                ));
            }
        }
        let stored = serde_json::to_string(&deliveries).unwrap_or_else(|_| "[]".into());
        self.inner
            .store
            .write(|tx| tx.set_voice_call_deliveries(call_id, &stored))
            .map_err(VoiceError::store)?;
        Ok((deliveries, sent_to, handles))
    }

    /// A user's devices that may ring: Web Push and UnifiedPush ones once activated.
    fn usable_devices(&self, user: &str) -> VoiceResult<Vec<PushRow>> {
        Ok(self
            .inner
            .store
            .write(|tx| tx.push_registrations(user))
            .map_err(VoiceError::store)?
            .into_iter()
            .filter(|d| d.activated)
            .collect())
    }

    fn record_delivery(&self, call_id: &str, index: usize, result: &str) {
        let written = self.inner.store.write(|tx| {
            let Some(row) = tx.voice_call(call_id)? else {
                return Ok(());
            };
            let mut list: Vec<Delivery> = serde_json::from_str(&row.deliveries).unwrap_or_default();
            if let Some(d) = list.get_mut(index) {
                d.result = result.to_string();
            }
            let text = serde_json::to_string(&list).unwrap_or_else(|_| "[]".into());
            tx.set_voice_call_deliveries(call_id, &text)
        });
        if let Err(e) = written {
            tracing::error!(error = %e, "cannot record a push delivery");
        }
    }

    /// `GET voice.call.info`: the call as stored, for its sender and recipients.
    pub fn info(&self, user: &AuthUser, call_id: &str) -> VoiceResult<Value> {
        let row = self
            .inner
            .store
            .write(|tx| tx.voice_call(call_id))
            .map_err(VoiceError::store)?;
        let not_found = || VoiceError::new(404, "error-call-not-found", "callId: no such call");
        let row = row.ok_or_else(not_found)?;
        let recipients: Vec<String> = serde_json::from_str(&row.recipients).unwrap_or_default();
        if row.sender_id != user.id && !recipients.contains(&user.id) {
            return Err(not_found());
        }
        let payload: Value = serde_json::from_str(&row.payload).unwrap_or(Value::Null);
        let deliveries: Value = serde_json::from_str(&row.deliveries).unwrap_or(json!([]));
        Ok(json!({
            "callId": row.id,
            "roomId": row.room_token,
            "senderId": row.sender_id,
            "userIds": recipients,
            "status": row.status,
            "reason": row.reason,
            "onlyAudio": payload["onlyAudio"],
            "notificationType": payload["notificationType"],
            "createdAt": row.created_at,
            "endedAt": row.ended_at,
            "deliveries": deliveries,
        }))
    }

    /// A recipient answers (the room's call is where they talk).
    pub fn accept(&self, user: &AuthUser, call_id: &str) -> VoiceResult<()> {
        self.change(&user.id, call_id, |live| {
            if !live.recipients.contains(&user.id) {
                return Err(not_called());
            }
            ringing(live)?;
            Ok(Some((status::ACCEPTED, reason::ANSWERED)))
        })
    }

    /// A recipient declines: their devices stop; once all declined, the call is declined.
    pub fn decline(&self, user: &AuthUser, call_id: &str) -> VoiceResult<()> {
        let stopped = self.change(&user.id, call_id, |live| {
            if !live.recipients.contains(&user.id) {
                return Err(not_called());
            }
            ringing(live)?;
            live.declined.insert(user.id.clone());
            if live.recipients.iter().all(|r| live.declined.contains(r)) {
                return Ok(Some((status::DECLINED, reason::DECLINED)));
            }
            Ok(None)
        });
        if stopped.is_ok() {
            self.stop_ringing(call_id, std::slice::from_ref(&user.id), reason::DECLINED);
        }
        stopped
    }

    /// The sender gives up while it rings.
    pub fn cancel(&self, user: &AuthUser, call_id: &str) -> VoiceResult<()> {
        self.change(&user.id, call_id, |live| {
            if live.sender != user.id {
                if live.recipients.contains(&user.id) {
                    return Err(VoiceError::new(
                        403,
                        "error-not-allowed",
                        "only the sender cancels a call; decline it instead",
                    ));
                }
                return Err(not_called());
            }
            ringing(live)?;
            Ok(Some((status::CANCELED, reason::CANCELED)))
        })
    }

    /// The sender or a recipient ends an answered call.
    pub fn end(&self, user: &AuthUser, call_id: &str) -> VoiceResult<()> {
        self.change(&user.id, call_id, |live| {
            if live.sender != user.id && !live.recipients.contains(&user.id) {
                return Err(not_called());
            }
            if live.status != status::ACCEPTED {
                return Err(VoiceError::new(
                    409,
                    "error-invalid-state",
                    format!("the call is {}; only an accepted call ends", live.status),
                ));
            }
            Ok(Some((status::ENDED, "")))
        })
    }

    /// Runs `decide` on the live call; when it says so, moves the call to a new status and stops
    /// the ringing with the reason.
    fn change(
        &self,
        user: &str,
        call_id: &str,
        decide: impl FnOnce(&mut Live) -> VoiceResult<Option<(&'static str, &'static str)>>,
    ) -> VoiceResult<()> {
        let (to, why, changed) = {
            let mut live = lock(&self.inner.live);
            let call = match live.get_mut(call_id) {
                Some(call) => call,
                None => return Err(self.not_live(user, call_id)),
            };
            match decide(call)? {
                Some((to, why)) => {
                    call.status = to;
                    (to, why, call.changed.clone())
                }
                None => return Ok(()),
            }
        };
        self.moved(call_id, to, why);
        changed.notify_one();
        Ok(())
    }

    /// Why a call that is not live cannot change: unknown (to this user), or over.
    fn not_live(&self, user: &str, call_id: &str) -> VoiceError {
        let party = |row: &VoiceCallRow| {
            row.sender_id == user
                || serde_json::from_str::<Vec<String>>(&row.recipients)
                    .is_ok_and(|r| r.iter().any(|r| r == user))
        };
        match self.inner.store.write(|tx| tx.voice_call(call_id)) {
            Ok(Some(row)) if party(&row) => VoiceError::new(
                409,
                "error-invalid-state",
                format!("the call is already {}", row.status),
            ),
            _ => VoiceError::new(404, "error-call-not-found", "callId: no such call"),
        }
    }

    /// After a move to `to`: the store, the stop-ringing messages, missed calls, the sender's stream.
    fn moved(&self, call_id: &str, to: &'static str, why: &'static str) {
        let over = to != status::ACCEPTED;
        let snapshot = {
            let mut live = lock(&self.inner.live);
            let snapshot = live.get(call_id).map(|c| {
                (
                    c.sender.clone(),
                    c.recipients.clone(),
                    c.declined.clone(),
                    c.room_token.clone(),
                    c.created_at,
                    c.payload.clone(),
                )
            });
            if over {
                live.remove(call_id);
            }
            snapshot
        };
        let Some((sender, recipients, declined, room, created_at, payload)) = snapshot else {
            return;
        };
        let now = now_ms();
        let stored = self.inner.store.write(|tx| {
            let reason = (!why.is_empty()).then_some(why);
            tx.set_voice_call_status(call_id, to, reason, over.then_some(now))?;
            if to == status::CANCELED || to == status::MISSED {
                for user in recipients.iter().filter(|u| !declined.contains(*u)) {
                    tx.insert_call_log(
                        user,
                        &CallLogEntry {
                            room_id: room.clone(),
                            call_mode: if recipients.len() == 1 {
                                "onetoone"
                            } else {
                                "onetomany"
                            }
                            .to_string(),
                            call_state: "missed".to_string(),
                            call_type: call_type(&payload).word().to_string(),
                            call_time: created_at,
                            start_time: None,
                            end_time: now,
                            from_user: sender.clone(),
                            to_user: recipients.join(","),
                            user_list: std::iter::once(sender.clone())
                                .chain(recipients.iter().cloned())
                                .collect(),
                            session_status: "closed".to_string(),
                            reason: Some(why.to_string()),
                        },
                    )?;
                }
            }
            Ok::<_, StoreError>(())
        });
        if let Err(e) = stored {
            tracing::error!(call = %call_id, error = %e, "cannot store a voice call's change");
        }
        tracing::info!(call = %call_id, status = to, "voice call status");
        self.inner.users.send(
            &sender,
            UserEvent::VoiceCallStatus {
                call_id: call_id.to_string(),
                room_id: room.clone(),
                status: to,
            },
        );
        if to == status::ENDED {
            return;
        }
        // Every end of ringing stops every device of every recipient still ringing.
        // (Those who declined were stopped as they did.)
        let still: Vec<String> = recipients
            .iter()
            .filter(|u| !declined.contains(*u))
            .cloned()
            .collect();
        self.stop_ringing_with(call_id, &room, &payload, &still, why);
        if to == status::CANCELED || to == status::MISSED {
            for user in &still {
                self.inner.users.send(
                    user,
                    UserEvent::MissedCall {
                        room_id: room.clone(),
                        is_one_to_one_call: recipients.len() == 1,
                        user_jid: sender.clone(),
                        group_id: None,
                        call_type: call_type(&payload),
                        user_list: recipients.clone(),
                        call_time: created_at,
                    },
                );
            }
        }
    }

    /// Stops `users`' devices ringing for this call.
    fn stop_ringing(&self, call_id: &str, users: &[String], why: &'static str) {
        let found = self.inner.store.write(|tx| tx.voice_call(call_id));
        if let Ok(Some(row)) = found {
            let payload: Value = serde_json::from_str(&row.payload).unwrap_or(Value::Null);
            self.stop_ringing_with(call_id, &row.room_token, &payload, users, why);
        }
    }

    /// A stop-ringing event on each user's stream and a `callCancel` push, with the ring's topic,
    /// to each of their devices.
    fn stop_ringing_with(
        &self,
        call_id: &str,
        room: &str,
        payload: &Value,
        users: &[String],
        why: &'static str,
    ) {
        let mut cancel = payload.clone();
        cancel["notificationType"] = json!(CALL_CANCEL);
        cancel["reason"] = json!(why);
        let title = match why {
            reason::ANSWERED => "Answered on another device".to_string(),
            reason::DECLINED => "Declined".to_string(),
            _ => format!(
                "Missed call from {}",
                payload["senderName"].as_str().unwrap_or_default()
            ),
        };
        let message = Message {
            body: cancel.to_string().into_bytes(),
            topic: Some(call_id.to_string()),
            ttl: self.inner.config.ring_time.0,
            ring: false,
            title,
        };
        for user in users {
            self.inner.users.send(
                user,
                UserEvent::StopRinging {
                    call_id: call_id.to_string(),
                    room_id: room.to_string(),
                    reason: why,
                },
            );
            match self.usable_devices(user) {
                Ok(devices) => {
                    // A VoIP token takes calls only (each must reach CallKit): the app ends the
                    // call from the stop-ringing of its alert token or its event stream.
                    for device in devices
                        .into_iter()
                        .filter(|d| !(d.kind == kind::APN && d.voip))
                    {
                        drop(self.inner.push.deliver(device, message.clone()));
                    }
                }
                Err(e) => tracing::error!(error = %e.error, "cannot list devices to stop"),
            }
        }
    }

    /// The call's task: the ring timer, and recipients joining the room's call (which answers it)
    /// or the room's call ending (which ends an answered one).
    async fn drive(
        self,
        call_id: String,
        changed: Arc<Notify>,
        mut room_events: broadcast::Receiver<Arc<crate::events::Published>>,
    ) {
        let ring_until = tokio::time::Instant::now() + self.inner.config.ring_time.0;
        loop {
            let Some((state, sender, recipients)) = lock(&self.inner.live)
                .get(&call_id)
                .map(|c| (c.status, c.sender.clone(), c.recipients.clone()))
            else {
                return;
            };
            let calling = state == status::CALLING;
            tokio::select! {
                _ = changed.notified() => {}
                _ = tokio::time::sleep_until(ring_until), if calling => {
                    let _ = self.change("", &call_id, |live| {
                        ringing(live)?;
                        Ok(Some((status::MISSED, reason::TIMEOUT)))
                    });
                }
                event = room_events.recv() => match event {
                    Ok(published) => match &published.event {
                        RoomEvent::ParticipantFlags { actor_type, actor_id, in_call, .. }
                            if actor_type == "users" && *in_call > 0 && calling
                                && recipients.contains(actor_id) =>
                        {
                            let _ = self.change("", &call_id, |live| {
                                ringing(live)?;
                                Ok(Some((status::ACCEPTED, reason::ANSWERED)))
                            });
                        }
                        RoomEvent::CallEnded { .. } if state == status::ACCEPTED => {
                            let _ = self.change("", &call_id, |_| Ok(Some((status::ENDED, ""))));
                        }
                        _ => {}
                    },
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => {
                        tracing::debug!(call = %call_id, %sender, "room events closed");
                        return;
                    }
                },
            }
        }
    }
}

fn call_type(payload: &Value) -> CallType {
    if payload["onlyAudio"].as_bool().unwrap_or(true) {
        CallType::Audio
    } else {
        CallType::Video
    }
}

fn not_called() -> VoiceError {
    VoiceError::new(404, "error-call-not-found", "callId: no such call")
}

fn ringing(live: &Live) -> VoiceResult<()> {
    if live.status == status::CALLING {
        Ok(())
    } else {
        Err(VoiceError::new(
            409,
            "error-invalid-state",
            format!("the call is already {}", live.status),
        ))
    }
}

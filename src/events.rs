//! Room events: what the SSE stream `GET /api/v1/rooms/{token}/events` delivers.
//!
//! One broadcast channel per room with a bounded backlog: a slow consumer falls behind and is told how
//! many events it missed; it never holds up the room or other consumers.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio::sync::broadcast;

use crate::sync::lock;

/// How many events a consumer may fall behind before it starts missing them.
const BACKLOG: usize = 512;

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(
    tag = "type",
    rename_all = "kebab-case",
    rename_all_fields = "camelCase"
)]
pub enum RoomEvent {
    ParticipantJoined {
        attendee_id: i64,
        actor_type: String,
        actor_id: String,
        display_name: String,
        session_id: String,
    },
    ParticipantLeft {
        attendee_id: i64,
        actor_type: String,
        actor_id: String,
        session_id: String,
    },
    /// A session's in-call flags changed (joined the call, changed media, left the call).
    ParticipantFlags {
        attendee_id: i64,
        actor_type: String,
        actor_id: String,
        session_id: String,
        in_call: i64,
    },
    CallStarted {
        silent: bool,
        actor_type: String,
        actor_id: String,
    },
    /// `all` is true when a moderator ended the call for everyone.
    CallEnded { all: bool },
    /// A key press (RFC 4733 telephone-event) received on a participant's media.
    Dtmf {
        attendee_id: i64,
        actor_type: String,
        actor_id: String,
        session_id: String,
        digit: String,
    },
    /// A call notification for one user; only that user's streams receive it.
    Ring {
        attendee_id: i64,
        actor_id: String,
        caller_actor_type: String,
        caller_actor_id: String,
        caller_display_name: String,
    },
    /// Progress of a phone leg (Nextcloud signaling's dial-out status): `cause`, `code` and
    /// `message` accompany `rejected` and `cleared`.
    #[serde(rename = "callstatus")]
    CallStatus {
        callid: String,
        status: String,
        cause: Option<String>,
        code: Option<u16>,
        message: Option<String>,
        attendee_id: i64,
    },
    /// A moderator's transfer of a phone leg (REFER): `accepted` by the phone, `refused` (its
    /// answer, or the call could not transfer) or `failed` (the phone's call to the target).
    /// Success shows as the leg's `callstatus` `cleared` with cause `transferred`.
    Transfer {
        callid: String,
        status: String,
        code: Option<u16>,
        message: Option<String>,
        attendee_id: i64,
    },
    /// The call is recorded from now on (`active`), or no longer.
    Recording { active: bool },
    /// A call link's call ends at `expires_at` (announced `[links] expiry_warning` before).
    CallExpiring { expires_at: String },
    /// The reader lost the right to read the room (removed from it): the last event of its
    /// streams, which end after it. Targeted at that user.
    AccessRevoked { reason: String },
    /// How loud each participant of a mixing room spoke over the last moments, for level
    /// meters; only streams that ask for it (`?levels=true`) receive it.
    Levels { levels: Vec<SpeakerLevel> },
    /// The participants whose camera the room forwards, in the order they started: each
    /// browser's receiving video m-lines carry, in m-line order, these senders without itself.
    VideoSenders { senders: Vec<VideoSender> },
}

/// A participant whose camera is forwarded.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VideoSender {
    pub attendee_id: i64,
    pub actor_type: String,
    pub actor_id: String,
    pub session_id: String,
}

/// One participant's speech level: the RMS of what it sent into the mix, 0 (silence or muted)
/// to 1 (full scale).
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SpeakerLevel {
    pub attendee_id: i64,
    pub session_id: String,
    pub level: f64,
}

impl RoomEvent {
    /// The `type` field of the serialized event, also used as the SSE event name.
    pub fn kind(&self) -> &'static str {
        match self {
            RoomEvent::ParticipantJoined { .. } => "participant-joined",
            RoomEvent::ParticipantLeft { .. } => "participant-left",
            RoomEvent::ParticipantFlags { .. } => "participant-flags",
            RoomEvent::CallStarted { .. } => "call-started",
            RoomEvent::CallEnded { .. } => "call-ended",
            RoomEvent::Dtmf { .. } => "dtmf",
            RoomEvent::Ring { .. } => "ring",
            RoomEvent::CallStatus { .. } => "callstatus",
            RoomEvent::AccessRevoked { .. } => "access-revoked",
            RoomEvent::Levels { .. } => "levels",
            RoomEvent::CallExpiring { .. } => "call-expiring",
            RoomEvent::Recording { .. } => "recording",
            RoomEvent::VideoSenders { .. } => "video-senders",
            RoomEvent::Transfer { .. } => "transfer",
        }
    }
}

/// An event as delivered: its sequence number within the process and, for targeted events, the user.
#[derive(Debug, Clone)]
pub struct Published {
    pub seq: u64,
    pub target_user: Option<String>,
    pub event: RoomEvent,
}

/// Broadcast channels by key (a room, a user), each with a bounded backlog; a channel lives
/// while it has receivers.
pub struct Channels<K, T> {
    channels: Mutex<HashMap<K, broadcast::Sender<Arc<T>>>>,
}

impl<K, T> Default for Channels<K, T> {
    fn default() -> Self {
        Channels {
            channels: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: std::hash::Hash + Eq + Clone, T> Channels<K, T> {
    /// Sends to the key's receivers, if it has any.
    pub fn send(&self, key: &K, item: T) {
        let mut channels = lock(&self.channels);
        if let Some(sender) = channels.get(key) {
            if sender.receiver_count() == 0 {
                channels.remove(key);
            } else {
                // Only fails without receivers, which was just checked under the lock.
                let _ = sender.send(Arc::new(item));
            }
        }
    }

    pub fn subscribe(&self, key: K) -> broadcast::Receiver<Arc<T>> {
        let mut channels = lock(&self.channels);
        channels
            .entry(key)
            .or_insert_with(|| broadcast::channel(BACKLOG).0)
            .subscribe()
    }
}

#[derive(Default)]
pub struct EventBus {
    rooms: Channels<i64, Published>,
    seq: AtomicU64,
}

impl EventBus {
    pub fn publish(&self, room_id: i64, target_user: Option<String>, event: RoomEvent) {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        tracing::debug!(room_id, seq, ?event, "room event");
        self.rooms.send(
            &room_id,
            Published {
                seq,
                target_user,
                event,
            },
        );
    }

    pub fn subscribe(&self, room_id: i64) -> broadcast::Receiver<Arc<Published>> {
        self.rooms.subscribe(room_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slow_consumer_lags_without_blocking_publisher() {
        let bus = EventBus::default();
        let mut slow = bus.subscribe(1);
        for _ in 0..BACKLOG + 10 {
            bus.publish(1, None, RoomEvent::CallEnded { all: false });
        }
        match slow.try_recv() {
            Err(broadcast::error::TryRecvError::Lagged(n)) => assert_eq!(n, 10),
            other => panic!("expected lag, got {other:?}"),
        }
        let next = slow.try_recv().expect("still receives after lagging");
        assert_eq!(next.seq, 11);
    }

    #[test]
    fn serialized_shape() {
        let json = serde_json::to_value(RoomEvent::ParticipantFlags {
            attendee_id: 3,
            actor_type: "users".into(),
            actor_id: "bob".into(),
            session_id: "s".into(),
            in_call: 7,
        })
        .expect("serializes");
        assert_eq!(json["type"], "participant-flags");
        assert_eq!(
            json,
            serde_json::json!({"type": "participant-flags", "attendeeId": 3, "actorType": "users",
                               "actorId": "bob", "sessionId": "s", "inCall": 7})
        );
    }
}

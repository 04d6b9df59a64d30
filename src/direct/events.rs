//! What a user's devices hear about direct calls, on the user event stream
//! (`GET /api/v1/users/me/events`), in the words of the seed's call SDK.

use serde::Serialize;

use crate::events::Channels;

/// Every user's event channel.
pub type UserBus = Channels<String, UserEvent>;

/// Audio, or audio and video.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CallType {
    Audio,
    Video,
}

impl CallType {
    pub fn word(self) -> &'static str {
        match self {
            CallType::Audio => "audio",
            CallType::Video => "video",
        }
    }
}

/// One user of a call and where they stand in it.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct UserStatus {
    pub user_jid: String,
    pub status: &'static str,
}

/// A callee's name, for the ringing screen.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct UserDetail {
    pub user_jid: String,
    pub display_name: String,
}

/// The incoming call as the seed's `incomingCallListener` receives it.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct IncomingCall {
    pub all_users: Vec<String>,
    /// Milliseconds since the epoch.
    pub call_time: i64,
    pub call_type: CallType,
    pub group_id: Option<String>,
    pub local_user: bool,
    pub room_id: String,
    pub room_link: String,
    pub status: &'static str,
    pub to_users: Vec<String>,
    pub user_details: Vec<UserDetail>,
    /// Who calls.
    pub user_jid: String,
    pub users_status: Vec<UserStatus>,
    /// One-to-one: the callee; one-to-many: the caller (the seed's definitions).
    pub from: String,
    /// One-to-one: the caller; one-to-many: the group (the call's room).
    pub to: String,
    /// `onetoone` or `onetomany`.
    pub call_mode: &'static str,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(
    tag = "type",
    rename_all = "kebab-case",
    rename_all_fields = "camelCase"
)]
pub enum UserEvent {
    /// A call rings this user's devices.
    IncomingCall(IncomingCall),
    /// A user's status in a call changed (the seed's `callStatusListener`); `reason` says why a
    /// call ended for them (`user hangup`, `declined`, `no answer`, `busy`, and for phones the
    /// words of the room's phone causes).
    CallStatus {
        room_id: String,
        status: &'static str,
        user_jid: String,
        local_user: bool,
        /// `open` while the call goes on, `closed` once nobody is left in it.
        session_status: &'static str,
        users_status: Vec<UserStatus>,
        reason: Option<&'static str>,
    },
    /// One of this user's devices answered: the others stop ringing ("answered elsewhere").
    CallAnswered { room_id: String, device_id: String },
    /// The ringing stopped without this user answering (`cancelled`, `no answer`, `declined`
    /// on another device, `busy`).
    CallCancelled {
        room_id: String,
        reason: &'static str,
    },
    /// A call this user did not answer (the seed's `missedCallListener`).
    MissedCall {
        room_id: String,
        is_one_to_one_call: bool,
        user_jid: String,
        group_id: Option<String>,
        call_type: CallType,
        user_list: Vec<String>,
        call_time: i64,
    },
    /// A voice call rings this user (`POST /api/v1/voice.call`): the push payload's fields.
    VoiceCall(serde_json::Value),
    /// A voice call stops ringing for this user: `answered` (maybe on another device),
    /// `declined`, `canceled` or `timeout`.
    StopRinging {
        call_id: String,
        room_id: String,
        reason: &'static str,
    },
    /// The status of a voice call this user sent changed.
    VoiceCallStatus {
        call_id: String,
        room_id: String,
        status: &'static str,
    },
}

impl UserEvent {
    /// The SSE event name.
    pub fn kind(&self) -> &'static str {
        match self {
            UserEvent::IncomingCall(_) => "incoming-call",
            UserEvent::CallStatus { .. } => "call-status",
            UserEvent::CallAnswered { .. } => "call-answered",
            UserEvent::CallCancelled { .. } => "call-cancelled",
            UserEvent::MissedCall { .. } => "missed-call",
            UserEvent::VoiceCall(_) => "voice-call",
            UserEvent::StopRinging { .. } => "stop-ringing",
            UserEvent::VoiceCallStatus { .. } => "voice-call-status",
        }
    }
}

//! What the handle and the other shards ask of a shard, over its channel.

use dialbridge_bridge::webrtc::WebRtcLeg;
use tokio::sync::oneshot;

use super::phone::PhoneSlot;
use super::types::{MediaId, PhoneMedia, PhoneRemote, RecordingSink};
use crate::room::{MediaParticipant, PhoneMute};

/// One request to a shard.
pub(super) enum Command {
    Add {
        id: MediaId,
        who: MediaParticipant,
        leg: Box<WebRtcLeg>,
        done: oneshot::Sender<()>,
    },
    Remove {
        id: MediaId,
        room_id: i64,
        /// The caller's sessions: only media of these may be removed.
        sessions: Vec<String>,
        done: oneshot::Sender<bool>,
    },
    EndSessions {
        room_id: i64,
        sessions: Vec<String>,
    },
    AddPhone {
        id: MediaId,
        phone: Box<PhoneMedia>,
    },
    UpdatePhone {
        id: MediaId,
        /// Boxed: with SRTP keys it is the largest command.
        remote: Box<PhoneRemote>,
    },
    RemovePhone {
        id: MediaId,
    },
    PhoneDtmf {
        id: MediaId,
        digits: String,
    },
    PhoneJoin {
        id: MediaId,
        who: MediaParticipant,
    },
    PhonePrompt {
        id: MediaId,
        prompt: Option<&'static [i16]>,
    },
    PhoneMute {
        id: MediaId,
        mute: PhoneMute,
    },
    /// Hand a phone leg in no room to shard `to`, which puts it in `who`'s room.
    PhoneMove {
        id: MediaId,
        who: MediaParticipant,
        to: usize,
    },
    /// A phone leg handed over by another shard, to put in `who`'s room.
    PhoneAdopt {
        id: MediaId,
        who: MediaParticipant,
        slot: Box<PhoneSlot<std::net::UdpSocket>>,
    },
    /// Start (`Some`) or stop recording the room.
    Record {
        room_id: i64,
        sink: Option<RecordingSink>,
    },
    /// Close every leg (RTCP BYE, DTLS close_notify) and stop.
    Shutdown {
        done: oneshot::Sender<()>,
    },
}

impl Command {
    /// The phone leg a command is for.
    pub(super) fn phone(&self) -> Option<MediaId> {
        match self {
            Command::UpdatePhone { id, .. }
            | Command::RemovePhone { id }
            | Command::PhoneDtmf { id, .. }
            | Command::PhoneJoin { id, .. }
            | Command::PhonePrompt { id, .. }
            | Command::PhoneMute { id, .. } => Some(*id),
            _ => None,
        }
    }
}

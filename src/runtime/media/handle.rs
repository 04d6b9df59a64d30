//! What the rest of the service calls: [`MediaHandle`]. Every request is a [`Command`] to the
//! shard that serves the room or phone leg.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use dialbridge_bridge::webrtc::{WebRtcError, WebRtcLeg, WebRtcLegConfig};
use tokio::sync::{mpsc, oneshot};

use super::command::Command;
use super::reader::Route;
use super::registry::SharedRegistry;
use super::types::{MediaError, MediaId, PhoneMedia, PhoneRemote, RecordingSink};
use crate::room::{CallObserver, MediaParticipant, PhoneMute};
use crate::sync::lock;

/// The API's handle on the engine.
#[derive(Clone)]
pub struct MediaHandle {
    pub(super) shards: Arc<[mpsc::UnboundedSender<Command>]>,
    pub(super) registry: SharedRegistry,
    pub(super) routes: mpsc::UnboundedSender<Route>,
    pub(super) leg_config: WebRtcLegConfig,
    pub(super) max_video_senders: usize,
    pub(super) local_addr: SocketAddr,
}

/// What became of the video a participant offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoAnswer {
    /// The offer had no video, or only receives it.
    None,
    /// The camera is forwarded to the room.
    Sending,
    /// The room has its maximum of video senders: this join is audio-only.
    RoomFull { max: usize },
}

impl MediaHandle {
    /// The bound address of the WebRTC socket.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Answers `offer` for the participant's session and starts its leg, replacing any leg the
    /// session had. Returns the media id, the SDP answer and what became of its video.
    pub(crate) async fn join(
        &self,
        who: MediaParticipant,
        offer: String,
    ) -> Result<(MediaId, String, VideoAnswer), MediaError> {
        let room_id = who.room_id;
        // A video place is taken before the leg is made, so that concurrent joins cannot pass
        // the cap together; a leg that turns out not to send gives it back.
        let placed = lock(&self.registry).reserve_video(room_id, self.max_video_senders);
        let cfg = WebRtcLegConfig {
            video: placed,
            ..self.leg_config
        };
        let accepted =
            tokio::task::spawn_blocking(move || WebRtcLeg::accept(Instant::now(), &offer, &cfg))
                .await
                .map_err(|e| MediaError::Internal(format!("leg setup failed: {e}")))
                .and_then(|r| {
                    r.map_err(|e| match e {
                        WebRtcError::Offer(reason) => MediaError::Offer(reason),
                        other => MediaError::Internal(other.to_string()),
                    })
                });
        let (leg, answer) = match accepted {
            Ok((leg, answer)) if placed && !leg.sends_video() => {
                lock(&self.registry).release_video(room_id);
                (leg, answer)
            }
            Ok(accepted) => accepted,
            Err(e) => {
                if placed {
                    lock(&self.registry).release_video(room_id);
                }
                return Err(e);
            }
        };
        let video = if leg.sends_video() {
            VideoAnswer::Sending
        } else if !placed && leg.offered_video() {
            VideoAnswer::RoomFull {
                max: self.max_video_senders,
            }
        } else {
            VideoAnswer::None
        };
        let id = MediaId(rand::random());
        let (done, added) = oneshot::channel();
        let shard = lock(&self.registry).place(who.room_id);
        // The reader learns the leg's ICE username before the peer has the answer.
        let _ = self.routes.send(Route::Leg {
            ufrag: leg.ufrag().to_string(),
            shard,
        });
        self.shard(shard)?
            .send(Command::Add {
                id,
                who,
                leg: Box::new(leg),
                done,
            })
            .map_err(|_| MediaError::Unavailable)?;
        added.await.map_err(|_| MediaError::Unavailable)?;
        Ok((id, answer, video))
    }

    /// Ends media `id` if it belongs to one of `sessions` in room `room_id`; false if there is
    /// no such media.
    pub(crate) async fn leave(
        &self,
        id: MediaId,
        room_id: i64,
        sessions: Vec<String>,
    ) -> Result<bool, MediaError> {
        let (done, removed) = oneshot::channel();
        let Some(shard) = lock(&self.registry).shard_of(room_id) else {
            return Ok(false);
        };
        self.shard(shard)?
            .send(Command::Remove {
                id,
                room_id,
                sessions,
                done,
            })
            .map_err(|_| MediaError::Unavailable)?;
        removed.await.map_err(|_| MediaError::Unavailable)
    }

    /// The prompt (8 kHz) each phone of a recorded room hears: as the recording starts, or as
    /// the phone enters the room.
    pub fn set_recording_notice(&self, notice: &'static [i16]) {
        lock(&self.registry).recording_notice = Some(notice);
    }

    /// Starts (`Some`) or stops (`None`) recording room `room_id`: from its next mixing tick,
    /// the sum of everyone's audio goes to `sink` (see [`RecordingSink`]). A room with no media
    /// yet is recorded once it has some.
    pub fn record(&self, room_id: i64, sink: Option<RecordingSink>) {
        let shard = {
            let mut registry = lock(&self.registry);
            match &sink {
                Some(s) => registry.taps.insert(room_id, s.clone()),
                None => registry.taps.remove(&room_id),
            };
            registry.shard_of(room_id)
        };
        if let Some(shard) = shard.and_then(|s| self.shards.get(s)) {
            let _ = shard.send(Command::Record { room_id, sink });
        }
    }

    /// Ends the media of these sessions (they left the call); does not wait.
    pub(crate) fn end_sessions(&self, room_id: i64, sessions: Vec<String>) {
        if sessions.is_empty() {
            return;
        }
        let Some(shard) = lock(&self.registry).shard_of(room_id) else {
            return;
        };
        let sent = self
            .shards
            .get(shard)
            .map(|s| s.send(Command::EndSessions { room_id, sessions }));
        if !matches!(sent, Some(Ok(()))) {
            tracing::warn!(
                room_id,
                "media engine stopped; cannot end media of sessions"
            );
        }
    }
}

impl MediaHandle {
    fn shard(&self, shard: usize) -> Result<&mpsc::UnboundedSender<Command>, MediaError> {
        self.shards.get(shard).ok_or(MediaError::Unavailable)
    }

    /// The shard serving phone leg `id`.
    fn phone_shard(&self, id: MediaId) -> Result<&mpsc::UnboundedSender<Command>, MediaError> {
        let shard = lock(&self.registry).phones.get(&id).copied();
        shard
            .and_then(|s| self.shards.get(s))
            .ok_or(MediaError::Unavailable)
    }

    /// Adds a phone leg to its room's mix.
    pub(crate) fn add_phone(&self, id: MediaId, phone: PhoneMedia) -> Result<(), MediaError> {
        let shard = {
            let mut registry = lock(&self.registry);
            let shard = match &phone.who {
                Some(who) => registry.place(who.room_id),
                None => registry.place_lobby(),
            };
            registry.phones.insert(id, shard);
            shard
        };
        self.shard(shard)?
            .send(Command::AddPhone {
                id,
                phone: Box::new(phone),
            })
            .map_err(|_| MediaError::Unavailable)
    }

    /// Points a phone leg at a new remote (the 200's SDP after early media from a 183).
    pub(crate) fn update_phone(&self, id: MediaId, remote: PhoneRemote) -> Result<(), MediaError> {
        self.phone_shard(id)?
            .send(Command::UpdatePhone {
                id,
                remote: Box::new(remote),
            })
            .map_err(|_| MediaError::Unavailable)
    }

    /// Ends a phone leg's media (sends RTCP BYE, frees its sockets).
    pub(crate) fn remove_phone(&self, id: MediaId) {
        if let Ok(shard) = self.phone_shard(id) {
            let _ = shard.send(Command::RemovePhone { id });
        }
    }

    /// Moves a phone leg that is in no room into `who`'s room mix (handing it to the media
    /// thread of that room when it is another).
    pub(crate) fn join_phone(&self, id: MediaId, who: MediaParticipant) -> Result<(), MediaError> {
        let (from, to) = {
            let mut registry = lock(&self.registry);
            let from = registry
                .phones
                .get(&id)
                .copied()
                .ok_or(MediaError::Unavailable)?;
            registry.release_lobby(from);
            let to = registry.place(who.room_id);
            registry.phones.insert(id, to);
            if from != to {
                registry.moving.insert(id);
            }
            (from, to)
        };
        let command = if from == to {
            Command::PhoneJoin { id, who }
        } else {
            Command::PhoneMove { id, who, to }
        };
        self.shard(from)?
            .send(command)
            .map_err(|_| MediaError::Unavailable)
    }

    /// Plays an 8 kHz prompt to a phone leg in place of what it hears, replacing any prompt
    /// still playing; `None` stops it. [`PhoneMediaEvent::PromptDone`] follows a prompt played
    /// to its end.
    pub(crate) fn play_prompt(
        &self,
        id: MediaId,
        prompt: Option<&'static [i16]>,
    ) -> Result<(), MediaError> {
        self.phone_shard(id)?
            .send(Command::PhonePrompt { id, prompt })
            .map_err(|_| MediaError::Unavailable)
    }

    /// Mutes or unmutes a phone leg's directions in its room's mix.
    pub(crate) fn mute_phone(&self, id: MediaId, mute: PhoneMute) -> Result<(), MediaError> {
        self.phone_shard(id)?
            .send(Command::PhoneMute { id, mute })
            .map_err(|_| MediaError::Unavailable)
    }

    /// Queues RFC 4733 key presses to a phone leg.
    pub(crate) fn phone_dtmf(&self, id: MediaId, digits: String) -> Result<(), MediaError> {
        self.phone_shard(id)?
            .send(Command::PhoneDtmf { id, digits })
            .map_err(|_| MediaError::Unavailable)
    }

    /// Closes every leg, so peers learn at once that the call is over, and stops the engine.
    pub async fn shutdown(&self) {
        for shard in self.shards.iter() {
            let (done, closed) = oneshot::channel();
            if shard.send(Command::Shutdown { done }).is_ok() {
                let _ = closed.await;
            }
        }
        let _ = self.routes.send(Route::Stop);
    }
}

impl CallObserver for MediaHandle {
    fn left_call(&self, room_id: i64, sessions: &[String]) {
        self.end_sessions(room_id, sessions.to_vec());
    }
}

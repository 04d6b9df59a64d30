//! One WebRTC leg on its shard, and its flush: what the leg wants sent goes out on its own
//! socket or the shared one, its events are handled.

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::task::Waker;
use std::time::Instant;

use dialbridge_bridge::webrtc::{KeyframeRequestKind, LegEvent, SlotKeyframeRequest, WebRtcLeg};

use super::types::MediaId;
use crate::events::EventBus;
use crate::room::MediaParticipant;

/// A WebRTC leg on its shard: who it is, and when it was made and last heard from.
pub(super) struct Slot {
    pub(super) who: MediaParticipant,
    pub(super) leg: Box<WebRtcLeg>,
    pub(super) created: Instant,
    pub(super) last_rx: Instant,
    pub(super) addrs: Vec<SocketAddr>,
    /// The sender each of the leg's video slots carries.
    pub(super) video_sources: Vec<Option<MediaId>>,
    /// When the leg's peer was last asked for a keyframe of its camera.
    pub(super) keyframe_asked: Option<Instant>,
    /// The leg's socket connected to its peer's media address (see `demux`).
    pub(super) own: Option<PeerSocket>,
    /// A peer address a socket could not be opened for (not tried again).
    pub(super) own_refused: Option<SocketAddr>,
}

/// A WebRTC leg's socket on the shared port, connected to its peer, in the shard's reactor.
pub(super) struct PeerSocket {
    pub(super) socket: tokio::net::UdpSocket,
    pub(super) peer: SocketAddr,
    /// Queues the leg for reading when the socket has data.
    pub(super) waker: Waker,
}

/// Keyframe requests the legs' peers sent, for the senders of their slots.
pub(super) type KeyframeAsks = Vec<(MediaId, SlotKeyframeRequest)>;

/// Sends what a leg wants sent and handles its events: key presses become room events, a leg
/// that is gone is queued in `gone`, keyframe requests in `keyframes`.
pub(super) fn flush(
    socket: &std::net::UdpSocket,
    events: &EventBus,
    id: MediaId,
    slot: &mut Slot,
    gone: &mut Vec<MediaId>,
    keyframes: &mut KeyframeAsks,
    deadline: &mut Instant,
) {
    *deadline = (*deadline).min(slot.leg.poll_timeout());
    while let Some(t) = slot.leg.poll_transmit() {
        let sent = match &slot.own {
            // Connected: the kernel skips the route lookup of an addressed send.
            Some(own) if own.peer == t.destination => own.socket.try_send(&t.contents),
            _ => socket.send_to(&t.contents, t.destination),
        };
        match sent {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                metrics::counter!("dialbridge_webrtc_send_dropped_total").increment(1);
            }
            Err(e) => tracing::debug!(media = %id, to = %t.destination, error = %e, "send failed"),
        }
    }
    while let Some(event) = slot.leg.poll_event() {
        match event {
            LegEvent::Connected => {
                tracing::info!(media = %id, room_id = slot.who.room_id, "WebRTC leg connected");
                // What its slots carry can be decoded from the next keyframe on.
                for i in 0..slot.video_sources.len() {
                    keyframes.push((
                        id,
                        SlotKeyframeRequest {
                            slot: i,
                            kind: KeyframeRequestKind::Pli,
                        },
                    ));
                }
            }
            LegEvent::Disconnected => {
                if let Some(reason) = slot.leg.failure() {
                    tracing::info!(media = %id, %reason, "WebRTC leg failed");
                }
                if !gone.contains(&id) {
                    gone.push(id);
                }
            }
            LegEvent::Dtmf(d) => {
                let Some(digit) = d.digit() else {
                    continue;
                };
                tracing::info!(media = %id, %digit, "DTMF from WebRTC leg");
                publish_dtmf(events, &slot.who, digit);
            }
            LegEvent::KeyframeRequest(req) => keyframes.push((id, req)),
        }
    }
}

/// A key press of a participant, as a room event.
fn publish_dtmf(events: &EventBus, who: &MediaParticipant, digit: char) {
    events.publish(who.room_id, None, who.dtmf_event(digit));
}

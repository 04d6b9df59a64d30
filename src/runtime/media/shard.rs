//! One media thread (a shard): the legs and rooms placed on it. What the shard does is spread
//! over a file per concern, each an `impl Shard` that calls only the ones listed before it:
//! `direct` (the two-party path), `video` (forwarding), `phone_sockets`, `webrtc`, `peer_sockets`,
//! `phone_commands`, `tick`, and at the top `event_loop`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::Waker;
use std::time::Instant;

use tokio::sync::mpsc;

use super::command::Command;
use super::phone::PhoneSlot;
use super::reader::{Datagram, Route, MAX_DATAGRAM};
use super::registry::SharedRegistry;
use super::room::{Room, TICK};
use super::types::MediaId;
use super::wakers::ReadySockets;
use super::web_leg::{flush, KeyframeAsks, Slot};
use crate::events::EventBus;

/// Legs of every shard, for the totals in the metrics.
#[derive(Debug, Default)]
pub(super) struct Totals {
    pub(super) webrtc: AtomicUsize,
    pub(super) phones: AtomicUsize,
    /// WebRTC legs reading their peer on a connected socket of their own.
    pub(super) peer_sockets: AtomicUsize,
}

/// What a shard is connected to: its place among the shards, the shared socket, its channels
/// and what all shards share.
pub(super) struct ShardParts {
    pub(super) index: usize,
    pub(super) socket: Arc<std::net::UdpSocket>,
    /// The announced candidate, given to the legs as every datagram's destination: with a
    /// wildcard listen address or behind NAT the socket's own address is not the one ICE knows.
    pub(super) local: SocketAddr,
    /// Where the shared socket is bound, when legs open connected sockets of their own on it
    /// (the kernel passed the check in `demux`); `None`: every datagram comes from the reader.
    pub(super) demux: Option<SocketAddr>,
    pub(super) commands: mpsc::UnboundedReceiver<Command>,
    pub(super) datagrams: mpsc::Receiver<Box<Datagram>>,
    pub(super) pool: std::sync::mpsc::SyncSender<Box<Datagram>>,
    pub(super) routes: mpsc::UnboundedSender<Route>,
    pub(super) registry: SharedRegistry,
    pub(super) totals: Arc<Totals>,
    pub(super) events: Arc<EventBus>,
    /// Every shard's commands (weak: they must not keep the shards alive).
    pub(super) peers: Arc<[mpsc::WeakUnboundedSender<Command>]>,
}

/// One media thread: the legs and mixers of the rooms placed on it.
pub(super) struct Shard {
    pub(super) parts: ShardParts,
    pub(super) legs: HashMap<MediaId, Slot>,
    pub(super) phones: HashMap<MediaId, PhoneSlot>,
    pub(super) by_addr: HashMap<SocketAddr, MediaId>,
    pub(super) rooms: HashMap<i64, Room>,
    pub(super) next_tick: Instant,
    /// The earliest timeout any leg asked for (no later than the true one; a full scan makes
    /// it exact), so a wake for one datagram does not visit every leg.
    pub(super) leg_deadline: Instant,
    pub(super) buf: Vec<u8>,
    /// Where WebRTC legs' own sockets are read into.
    pub(super) web_buf: Vec<u8>,
    pub(super) gone: Vec<MediaId>,
    /// Keyframe requests of the legs' peers, passed on to the senders after each flush.
    pub(super) keyframes: KeyframeAsks,
    /// Reused list of phone legs to read.
    pub(super) ready: Vec<MediaId>,
    /// Phone legs of two-party rooms whose RTP socket has data, queued by their wakers.
    pub(super) ready_phones: Arc<ReadySockets>,
    /// WebRTC legs whose own socket has data, queued by their wakers.
    pub(super) ready_web: Arc<ReadySockets>,
    /// Reused list of WebRTC legs to read.
    pub(super) ready_web_ids: Vec<MediaId>,
    /// WebRTC legs to give a socket connected to this peer address of theirs.
    pub(super) peer_sockets_wanted: Vec<(MediaId, SocketAddr)>,
    /// Each such leg's waker (made once per leg on this shard).
    pub(super) phone_wakers: HashMap<MediaId, Waker>,
    /// Phone legs in no room (answered callers entering a PIN or waiting), in their order.
    pub(super) lobby: Vec<MediaId>,
    /// Commands for phone legs still on their way from another shard.
    pub(super) stashed: Vec<Command>,
}

impl Shard {
    pub(super) fn new(parts: ShardParts) -> Shard {
        let now = Instant::now();
        Shard {
            parts,
            legs: HashMap::new(),
            phones: HashMap::new(),
            by_addr: HashMap::new(),
            rooms: HashMap::new(),
            next_tick: now + TICK,
            leg_deadline: now + TICK,
            buf: vec![0; MAX_DATAGRAM],
            web_buf: vec![0; MAX_DATAGRAM],
            gone: Vec::new(),
            keyframes: Vec::new(),
            ready: Vec::new(),
            ready_phones: Arc::new(ReadySockets::default()),
            ready_web: Arc::new(ReadySockets::default()),
            ready_web_ids: Vec::new(),
            peer_sockets_wanted: Vec::new(),
            phone_wakers: HashMap::new(),
            lobby: Vec::new(),
            stashed: Vec::new(),
        }
    }

    pub(super) fn count(&self) {
        metrics::gauge!("dialbridge_media_shard_legs", "shard" => self.parts.index.to_string())
            .set((self.legs.len() + self.phones.len()) as f64);
        metrics::gauge!("dialbridge_webrtc_legs")
            .set(self.parts.totals.webrtc.load(Ordering::Relaxed) as f64);
        metrics::gauge!("dialbridge_phone_media_legs")
            .set(self.parts.totals.phones.load(Ordering::Relaxed) as f64);
        metrics::gauge!("dialbridge_webrtc_peer_sockets")
            .set(self.parts.totals.peer_sockets.load(Ordering::Relaxed) as f64);
    }

    /// Sends what the leg wants sent and handles its events.
    pub(super) fn flush(&mut self, id: MediaId) {
        if let Some(slot) = self.legs.get_mut(&id) {
            flush(
                &self.parts.socket,
                &self.parts.events,
                id,
                slot,
                &mut self.gone,
                &mut self.keyframes,
                &mut self.leg_deadline,
            );
        }
    }
}

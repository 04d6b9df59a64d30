//! One media thread (a shard): the legs and rooms placed on it, and the loop that drives them.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::Waker;
use std::time::Instant;

use tokio::sync::mpsc;

use super::command::Command;
use super::phone::PhoneSlot;
use super::phone_sockets::ReadyPhones;
use super::reader::{Datagram, Route, MAX_DATAGRAM};
use super::registry::SharedRegistry;
use super::room::Room;
use super::tick::TICK;
use super::types::MediaId;
use super::webrtc::Slot;
use crate::events::EventBus;

/// Legs of every shard, for the totals in the metrics.
#[derive(Debug, Default)]
pub(super) struct Totals {
    pub(super) webrtc: AtomicUsize,
    pub(super) phones: AtomicUsize,
}

/// What a shard is connected to: its place among the shards, the shared socket, its channels
/// and what all shards share.
pub(super) struct ShardParts {
    pub(super) index: usize,
    pub(super) socket: Arc<std::net::UdpSocket>,
    /// The announced candidate, given to the legs as every datagram's destination: with a
    /// wildcard listen address or behind NAT the socket's own address is not the one ICE knows.
    pub(super) local: SocketAddr,
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
    pub(super) gone: Vec<MediaId>,
    /// Reused list of phone legs to read.
    pub(super) ready: Vec<MediaId>,
    /// Phone legs of two-party rooms whose RTP socket has data, queued by their wakers.
    pub(super) ready_phones: Arc<ReadyPhones>,
    /// Each such leg's waker (made once per leg on this shard).
    pub(super) phone_wakers: HashMap<MediaId, Waker>,
    /// Phone legs in no room (answered callers entering a PIN or waiting), in their order.
    pub(super) lobby: Vec<MediaId>,
    /// Commands for phone legs still on their way from another shard.
    pub(super) stashed: Vec<Command>,
}

/// Datagrams handled per wake before the loop looks at commands and timers again.
const DATAGRAM_BATCH: usize = 64;

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
            gone: Vec::new(),
            ready: Vec::new(),
            ready_phones: Arc::new(ReadyPhones::default()),
            phone_wakers: HashMap::new(),
            lobby: Vec::new(),
            stashed: Vec::new(),
        }
    }

    pub(super) async fn run(mut self) {
        loop {
            let deadline = self.leg_deadline.min(self.next_tick);
            tokio::select! {
                biased;
                command = self.parts.commands.recv() => match command {
                    Some(Command::Shutdown { done }) => {
                        self.close_all();
                        let _ = done.send(());
                        break;
                    }
                    Some(c) => self.command(c),
                    // Every handle is gone: the service is shutting down.
                    None => break,
                },
                datagram = self.parts.datagrams.recv() => match datagram {
                    Some(d) => {
                        self.datagram(Instant::now(), d);
                        for _ in 1..DATAGRAM_BATCH {
                            match self.parts.datagrams.try_recv() {
                                Ok(d) => self.datagram(Instant::now(), d),
                                Err(_) => break,
                            }
                        }
                    }
                    None => break,
                },
                // Phone legs of two-party rooms are read as their packets arrive.
                _ = self.ready_phones.notify.notified() => self.read_ready_phones(Instant::now()),
                _ = tokio::time::sleep_until(deadline.into()) => {}
            }
            let now = Instant::now();
            if now >= self.leg_deadline {
                self.timeouts(now);
            }
            if now >= self.next_tick {
                self.tick(now);
                self.reap(now);
            } else if !self.gone.is_empty() {
                self.reap(now);
            }
        }
        self.close_all();
        tracing::info!(shard = self.parts.index, "media engine stopped");
    }

    fn close_all(&mut self) {
        let ids: Vec<MediaId> = self.legs.keys().copied().collect();
        for id in ids {
            self.remove(id, "shutdown");
        }
        let ids: Vec<MediaId> = self.phones.keys().copied().collect();
        for id in ids {
            self.remove_phone(id, "shutdown");
        }
    }

    pub(super) fn count(&self) {
        metrics::gauge!("dialbridge_media_shard_legs", "shard" => self.parts.index.to_string())
            .set((self.legs.len() + self.phones.len()) as f64);
        metrics::gauge!("dialbridge_webrtc_legs")
            .set(self.parts.totals.webrtc.load(Ordering::Relaxed) as f64);
        metrics::gauge!("dialbridge_phone_media_legs")
            .set(self.parts.totals.phones.load(Ordering::Relaxed) as f64);
    }

    pub(super) fn command(&mut self, command: Command) {
        match command {
            Command::Add { id, who, leg, done } => {
                self.add_leg(id, who, leg);
                let _ = done.send(());
            }
            Command::Remove {
                id,
                room_id,
                sessions,
                done,
            } => {
                let _ = done.send(self.remove_owned(id, room_id, &sessions));
            }
            Command::EndSessions { room_id, sessions } => self.end_sessions(room_id, &sessions),
            Command::Shutdown { done } => {
                self.close_all();
                let _ = done.send(());
            }
            Command::AddPhone { id, phone } => self.add_phone(id, *phone),
            Command::PhoneMove { id, who, to } => self.move_phone(id, who, to),
            Command::PhoneAdopt { id, who, slot } => self.adopt_phone(id, who, *slot),
            phone => self.phone_command(phone),
        }
    }
}

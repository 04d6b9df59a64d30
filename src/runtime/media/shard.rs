//! The media engine: one UDP socket at `[media] webrtc_listen` for every WebRTC peer, and the
//! WebRTC legs, phone legs and N-1 mixers of the rooms, sharded by room over a fixed number of
//! media threads (`[media] threads`, one per core by default).
//!
//! A reader thread owns the socket's receive side: it reads each datagram into a buffer taken
//! from a preallocated pool and passes it through a bounded channel to the shard that owns the
//! peer (by remote address; a new address by the ICE username of its first check); the shard
//! hands it back to the pool when done. Shards send on the shared socket themselves. Each shard
//! runs a single-threaded tokio runtime with one loop: it hands datagrams to their legs, sends
//! what the legs produce, fires their timers, and every 20 ms (paced from a monotonic clock,
//! without drift) pulls one frame from every leg of its mixing rooms, mixes each room and pushes
//! each listener's mix back. A room with exactly two participants skips the mixer: each packet
//! is transcoded and sent to the other participant as it arrives. Nothing on these paths
//! allocates per packet or per tick (str0m keeps its own packet buffers). Leg setup (SDP, DTLS
//! certificate, codecs) runs off these threads, on the API's blocking pool, so a join never
//! stalls the audio of calls in progress.
//!
//! The API talks to the engine through [`MediaHandle`] (channels); when sessions leave a call,
//! the room service calls [`CallObserver::left_call`] and the engine ends their media.

use std::collections::HashMap;
use std::fmt;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Wake, Waker};
use std::time::{Duration, Instant};

use anyhow::Context;
use dialbridge_bridge::bypass::{Continuity, Reframer};
use dialbridge_bridge::g711::G711;
use dialbridge_bridge::mixer::{Mixer, ParticipantId};
use dialbridge_bridge::opus_codec::OpusConfig;
use dialbridge_bridge::resample::{Downsampler, Upsampler, FRAME_48K, FRAME_8K};
use dialbridge_bridge::rtp_leg::{self, RtpLeg, RtpLegConfig};
use dialbridge_bridge::webrtc::{LegEvent, WebRtcError, WebRtcLeg, WebRtcLegConfig, FRAME_MS};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, Notify};

use crate::config::MediaConfig;
use crate::events::{EventBus, RoomEvent};
use crate::room::{CallObserver, MediaParticipant, PhoneMute};
use crate::sync::lock;

/// Sample rate rooms mix at: 48 kHz, the rate libopus decodes WebRTC participants' wideband
/// speech to natively. Phone legs are resampled 8 <-> 48 kHz at the mixer's edge.
pub const MIX_RATE: u32 = 48_000;
/// Length of a DTMF digit sent to a phone, and the pause after it.
const DTMF_TONE: Duration = Duration::from_millis(100);
const DTMF_GAP: Duration = Duration::from_millis(60);

/// One mixing tick.
const TICK: Duration = Duration::from_millis(FRAME_MS as u64);
/// A tick this late is skipped rather than caught up (the thread was descheduled).
const MAX_LAG: Duration = Duration::from_millis(100);
/// A leg whose peer never completes ICE and DTLS within this is dropped.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// A connected leg that receives nothing for this long is dropped (ICE consent lapsed).
const SILENCE_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest datagram read.
const MAX_DATAGRAM: usize = 2048;
/// Datagram buffers per shard: the reader's pool and the depth of each shard's queue.
const BUFFERS_PER_SHARD: usize = 256;
/// Addresses the reader learns for one leg from ICE checks (candidate pairs it may use).
const MAX_LEG_ADDRS: usize = 16;
/// 20 ms of 8 kHz silence: what a muted participant is heard as on a direct path.
const SILENCE_8K: [i16; FRAME_8K] = [0; FRAME_8K];

/// Identifies one media session (one WebRTC leg) in `Location` URLs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MediaId(pub u64);

impl fmt::Display for MediaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl FromStr for MediaId {
    type Err = ();
    fn from_str(s: &str) -> Result<MediaId, ()> {
        if s.len() != 16 {
            return Err(());
        }
        u64::from_str_radix(s, 16).map(MediaId).map_err(|_| ())
    }
}

/// Why a media request failed.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    /// The offer cannot be answered; the reason is for the client (400).
    #[error("{0}")]
    Offer(String),
    /// The engine is not running (503).
    #[error("the media engine is not running")]
    Unavailable,
    /// Anything else (500); logged.
    #[error("{0}")]
    Internal(String),
}

enum Command {
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
        remote: PhoneRemote,
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
    /// Close every leg (RTCP BYE, DTLS close_notify) and stop.
    Shutdown {
        done: oneshot::Sender<()>,
    },
}

impl Command {
    /// The phone leg a command is for.
    fn phone(&self) -> Option<MediaId> {
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

/// Where a phone leg's media goes, from the SDP answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PhoneRemote {
    pub law: G711,
    pub dtmf_pt: Option<u8>,
    pub rtp: SocketAddr,
    pub rtcp: SocketAddr,
    /// The phone takes our RTP: not when it holds the call or its SDP is sendonly/inactive.
    pub receives: bool,
}

/// What the engine tells the phone leg's owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PhoneMediaEvent {
    /// No RTP for the media timeout.
    Inactive,
    /// The phone sent RTCP BYE.
    Bye,
    /// A key press (RFC 4733), once per press.
    Dtmf(char),
    /// The prompt given to [`MediaHandle::play_prompt`] has been played to its end.
    PromptDone,
}

/// A phone leg handed to the engine: its bound RTP and RTCP sockets, who it is in the room
/// (`None`: in no room yet, it hears only prompts and nobody hears it), where to send, and where
/// to report.
pub struct PhoneMedia {
    pub who: Option<MediaParticipant>,
    pub rtp: std::net::UdpSocket,
    pub rtcp: std::net::UdpSocket,
    pub remote: PhoneRemote,
    pub media_timeout: Duration,
    pub events: mpsc::UnboundedSender<PhoneMediaEvent>,
}

/// Which shard serves each room (least loaded at its first leg) and each phone leg, and how many
/// legs each holds. Touched on joins and leaves only, never per packet.
#[derive(Debug, Default)]
struct Registry {
    rooms: HashMap<i64, Placement>,
    phones: HashMap<MediaId, usize>,
    /// Phone legs on their way from the lobby of one shard to the room on another.
    moving: std::collections::HashSet<MediaId>,
    load: Vec<usize>,
}

#[derive(Debug, Clone, Copy)]
struct Placement {
    shard: usize,
    legs: usize,
}

impl Registry {
    fn new(shards: usize) -> Registry {
        Registry {
            load: vec![0; shards],
            ..Registry::default()
        }
    }

    /// The room's shard, choosing the least loaded one for a new room, counting one more leg.
    fn place(&mut self, room_id: i64) -> usize {
        let shard = match self.rooms.get_mut(&room_id) {
            Some(p) => {
                p.legs += 1;
                p.shard
            }
            None => {
                let shard = (0..self.load.len())
                    .min_by_key(|i| self.load.get(*i).copied().unwrap_or(usize::MAX))
                    .unwrap_or(0);
                self.rooms.insert(room_id, Placement { shard, legs: 1 });
                shard
            }
        };
        if let Some(l) = self.load.get_mut(shard) {
            *l += 1;
        }
        shard
    }

    /// One leg of the room is gone; the room is forgotten with its last.
    fn release(&mut self, room_id: i64) {
        let Some(p) = self.rooms.get_mut(&room_id) else {
            return;
        };
        p.legs = p.legs.saturating_sub(1);
        let shard = p.shard;
        if p.legs == 0 {
            self.rooms.remove(&room_id);
        }
        if let Some(l) = self.load.get_mut(shard) {
            *l = l.saturating_sub(1);
        }
    }

    /// A shard for a phone leg in no room: the least loaded.
    fn place_lobby(&mut self) -> usize {
        let shard = (0..self.load.len())
            .min_by_key(|i| self.load.get(*i).copied().unwrap_or(usize::MAX))
            .unwrap_or(0);
        if let Some(l) = self.load.get_mut(shard) {
            *l += 1;
        }
        shard
    }

    /// A phone leg in no room on `shard` is gone (or went into a room).
    fn release_lobby(&mut self, shard: usize) {
        if let Some(l) = self.load.get_mut(shard) {
            *l = l.saturating_sub(1);
        }
    }

    /// Takes back a [`MediaHandle::join_phone`] the shard refused (the leg is in a room
    /// already, or gone).
    fn undo_join(&mut self, id: MediaId, room_id: i64, from: usize) {
        self.release(room_id);
        if let Some(l) = self.load.get_mut(from) {
            *l += 1;
        }
        self.phones.insert(id, from);
        self.moving.remove(&id);
    }

    fn shard_of(&self, room_id: i64) -> Option<usize> {
        self.rooms.get(&room_id).map(|p| p.shard)
    }
}

type SharedRegistry = Arc<Mutex<Registry>>;

/// Legs of every shard, for the totals in the metrics.
#[derive(Debug, Default)]
struct Totals {
    webrtc: AtomicUsize,
    phones: AtomicUsize,
}

/// What the reader thread is told: where a new leg's ICE checks go, and when to forget it.
enum Route {
    Leg { ufrag: String, shard: usize },
    Forget { ufrag: String },
    Stop,
}

/// One received datagram in a pooled buffer.
struct Datagram {
    from: SocketAddr,
    len: usize,
    buf: [u8; MAX_DATAGRAM],
}

impl Datagram {
    fn empty() -> Box<Datagram> {
        Box::new(Datagram {
            from: SocketAddr::from(([0, 0, 0, 0], 0)),
            len: 0,
            buf: [0; MAX_DATAGRAM],
        })
    }
}

/// The API's handle on the engine.
#[derive(Clone)]
pub struct MediaHandle {
    shards: Arc<[mpsc::UnboundedSender<Command>]>,
    registry: SharedRegistry,
    routes: mpsc::UnboundedSender<Route>,
    leg_config: WebRtcLegConfig,
    local_addr: SocketAddr,
}

impl MediaHandle {
    /// The bound address of the WebRTC socket.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Answers `offer` for the participant's session and starts its leg, replacing any leg the
    /// session had. Returns the media id and the SDP answer.
    pub async fn join(
        &self,
        who: MediaParticipant,
        offer: String,
    ) -> Result<(MediaId, String), MediaError> {
        let cfg = self.leg_config;
        let (leg, answer) =
            tokio::task::spawn_blocking(move || WebRtcLeg::accept(Instant::now(), &offer, &cfg))
                .await
                .map_err(|e| MediaError::Internal(format!("leg setup failed: {e}")))?
                .map_err(|e| match e {
                    WebRtcError::Offer(reason) => MediaError::Offer(reason),
                    other => MediaError::Internal(other.to_string()),
                })?;
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
        Ok((id, answer))
    }

    /// Ends media `id` if it belongs to one of `sessions` in room `room_id`; false if there is
    /// no such media.
    pub async fn leave(
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

    /// Ends the media of these sessions (they left the call); does not wait.
    pub fn end_sessions(&self, room_id: i64, sessions: Vec<String>) {
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
    pub fn add_phone(&self, id: MediaId, phone: PhoneMedia) -> Result<(), MediaError> {
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
    pub fn update_phone(&self, id: MediaId, remote: PhoneRemote) -> Result<(), MediaError> {
        self.phone_shard(id)?
            .send(Command::UpdatePhone { id, remote })
            .map_err(|_| MediaError::Unavailable)
    }

    /// Ends a phone leg's media (sends RTCP BYE, frees its sockets).
    pub fn remove_phone(&self, id: MediaId) {
        if let Ok(shard) = self.phone_shard(id) {
            let _ = shard.send(Command::RemovePhone { id });
        }
    }

    /// Moves a phone leg that is in no room into `who`'s room mix (handing it to the media
    /// thread of that room when it is another).
    pub fn join_phone(&self, id: MediaId, who: MediaParticipant) -> Result<(), MediaError> {
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
    pub fn play_prompt(
        &self,
        id: MediaId,
        prompt: Option<&'static [i16]>,
    ) -> Result<(), MediaError> {
        self.phone_shard(id)?
            .send(Command::PhonePrompt { id, prompt })
            .map_err(|_| MediaError::Unavailable)
    }

    /// Mutes or unmutes a phone leg's directions in its room's mix.
    pub fn mute_phone(&self, id: MediaId, mute: PhoneMute) -> Result<(), MediaError> {
        self.phone_shard(id)?
            .send(Command::PhoneMute { id, mute })
            .map_err(|_| MediaError::Unavailable)
    }

    /// Queues RFC 4733 key presses to a phone leg.
    pub fn phone_dtmf(&self, id: MediaId, digits: String) -> Result<(), MediaError> {
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

/// Binds the WebRTC socket and starts the reader and media threads. Candidates announce
/// `public_ip` when set, else the listen IP, with the bound port.
/// Key presses on the legs are published as room events on `events`.
pub fn start(config: &MediaConfig, events: Arc<EventBus>) -> anyhow::Result<MediaHandle> {
    let socket = std::net::UdpSocket::bind(config.webrtc_listen)
        .with_context(|| format!("cannot bind media.webrtc_listen = {}", config.webrtc_listen))?;
    socket.set_nonblocking(true)?;
    let local_addr = socket.local_addr()?;
    let ip = config.public_ip.unwrap_or(local_addr.ip());
    let leg_config = leg_config(config, SocketAddr::new(ip, local_addr.port()));
    let announced = leg_config.candidate;
    let threads = config.media_threads();
    let registry: SharedRegistry = Arc::new(Mutex::new(Registry::new(threads)));
    let totals = Arc::new(Totals::default());
    let (routes, route_rx) = mpsc::unbounded_channel();
    let (pool_tx, pool_rx) = std::sync::mpsc::sync_channel(BUFFERS_PER_SHARD * threads);
    for _ in 0..BUFFERS_PER_SHARD * threads {
        let _ = pool_tx.try_send(Datagram::empty());
    }
    // Shards send on clones of the socket: the same non-blocking file, no lock.
    let sender = Arc::new(
        socket
            .try_clone()
            .context("cannot share the media socket")?,
    );
    let (shards, receivers): (Vec<_>, Vec<_>) =
        (0..threads).map(|_| mpsc::unbounded_channel()).unzip();
    let peers: Arc<[mpsc::WeakUnboundedSender<Command>]> =
        shards.iter().map(|s| s.downgrade()).collect();
    let mut inboxes = Vec::with_capacity(threads);
    for (index, receiver) in receivers.into_iter().enumerate() {
        let (inbox, datagrams) = mpsc::channel(BUFFERS_PER_SHARD);
        let parts = ShardParts {
            index,
            socket: sender.clone(),
            local: announced,
            commands: receiver,
            datagrams,
            pool: pool_tx.clone(),
            routes: routes.clone(),
            registry: registry.clone(),
            totals: totals.clone(),
            events: events.clone(),
            peers: peers.clone(),
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot build a media runtime")?;
        std::thread::Builder::new()
            .name(format!("dialbridge-media-{index}"))
            .spawn(move || runtime.block_on(Shard::new(parts).run()))
            .context("cannot start a media thread")?;
        inboxes.push(inbox);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot build the media reader runtime")?;
    std::thread::Builder::new()
        .name("dialbridge-media-rx".into())
        .spawn(move || {
            runtime.block_on(async move {
                match UdpSocket::from_std(socket) {
                    Ok(socket) => {
                        Reader::new(socket, inboxes, pool_rx, pool_tx, route_rx)
                            .run()
                            .await
                    }
                    Err(e) => tracing::error!(error = %e, "media socket unusable"),
                }
            })
        })
        .context("cannot start the media reader thread")?;
    metrics::gauge!("dialbridge_media_threads").set(threads as f64);
    for index in 0..threads {
        metrics::gauge!("dialbridge_media_shard_legs", "shard" => index.to_string()).set(0.0);
    }
    tracing::info!(%local_addr, candidate = %leg_config.candidate, threads, "WebRTC media listening");
    Ok(MediaHandle {
        shards: shards.into(),
        registry,
        routes,
        leg_config,
        local_addr,
    })
}

/// WebRTC legs' settings: announced at `candidate`, encoding as `[media.opus]` says.
fn leg_config(config: &MediaConfig, candidate: SocketAddr) -> WebRtcLegConfig {
    let mut leg = WebRtcLegConfig::new(candidate, MIX_RATE);
    let opus = &config.opus;
    leg.opus = OpusConfig {
        complexity: opus.complexity,
        bitrate: opus.bitrate,
        fec: opus.fec,
        expected_loss_percent: opus.expected_loss,
        dtx: opus.dtx,
        ..leg.opus
    };
    leg.direct_complexity = opus.phone_complexity;
    leg
}

/// The ICE username fragment of ours in a STUN request's USERNAME ("ours:theirs"), read in
/// place.
fn stun_ufrag(bytes: &[u8]) -> Option<&str> {
    // RFC 5389: two zero bits, a length, the magic cookie; attributes are 4-byte aligned TLVs.
    if bytes.len() < 20 || bytes.first()? > &3 || bytes.get(4..8)? != [0x21, 0x12, 0xA4, 0x42] {
        return None;
    }
    let mut at = 20;
    while let Some(head) = bytes.get(at..at + 4) {
        let kind = u16::from_be_bytes([head[0], head[1]]);
        let len = u16::from_be_bytes([head[2], head[3]]) as usize;
        let value = bytes.get(at + 4..at + 4 + len)?;
        if kind == 0x0006 {
            return std::str::from_utf8(value).ok()?.split(':').next();
        }
        at += 4 + len.div_ceil(4) * 4;
    }
    None
}

/// The receive side of the WebRTC socket: routes each datagram to the shard owning its peer.
struct Reader {
    socket: UdpSocket,
    shards: Vec<mpsc::Sender<Box<Datagram>>>,
    pool: std::sync::mpsc::Receiver<Box<Datagram>>,
    give_back: std::sync::mpsc::SyncSender<Box<Datagram>>,
    routes: mpsc::UnboundedReceiver<Route>,
    by_ufrag: HashMap<String, (usize, Vec<SocketAddr>)>,
    by_addr: HashMap<SocketAddr, usize>,
    /// A buffer taken from the pool and not yet used.
    spare: Option<Box<Datagram>>,
    /// Where datagrams go when the pool is empty (they are dropped).
    scratch: Box<Datagram>,
}

impl Reader {
    fn new(
        socket: UdpSocket,
        shards: Vec<mpsc::Sender<Box<Datagram>>>,
        pool: std::sync::mpsc::Receiver<Box<Datagram>>,
        give_back: std::sync::mpsc::SyncSender<Box<Datagram>>,
        routes: mpsc::UnboundedReceiver<Route>,
    ) -> Reader {
        Reader {
            socket,
            shards,
            pool,
            give_back,
            routes,
            by_ufrag: HashMap::new(),
            by_addr: HashMap::new(),
            spare: None,
            scratch: Datagram::empty(),
        }
    }

    async fn run(mut self) {
        loop {
            tokio::select! {
                biased;
                route = self.routes.recv() => match route {
                    Some(Route::Leg { ufrag, shard }) => {
                        self.by_ufrag.insert(ufrag, (shard, Vec::new()));
                    }
                    Some(Route::Forget { ufrag }) => {
                        if let Some((_, addrs)) = self.by_ufrag.remove(&ufrag) {
                            for a in addrs {
                                self.by_addr.remove(&a);
                            }
                        }
                    }
                    Some(Route::Stop) | None => break,
                },
                readable = self.socket.readable() => {
                    if let Err(e) = readable {
                        tracing::error!(error = %e, "media socket failed");
                        break;
                    }
                    self.read_all();
                }
            }
        }
    }

    fn read_all(&mut self) {
        loop {
            let mut d = match self.spare.take().or_else(|| self.pool.try_recv().ok()) {
                Some(d) => d,
                None => {
                    // Every buffer is queued at a shard: this datagram is dropped.
                    match self.socket.try_recv_from(&mut self.scratch.buf) {
                        Ok(_) => {
                            metrics::counter!("dialbridge_webrtc_receive_dropped_total")
                                .increment(1);
                            continue;
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                        Err(e) if e.kind() == ErrorKind::ConnectionRefused => continue,
                        Err(e) => {
                            tracing::warn!(error = %e, "media socket read failed");
                            return;
                        }
                    }
                }
            };
            match self.socket.try_recv_from(&mut d.buf) {
                Ok((n, from)) => {
                    d.len = n;
                    d.from = from;
                    self.route(d);
                }
                Err(e) => {
                    self.spare = Some(d);
                    match e.kind() {
                        ErrorKind::WouldBlock => return,
                        // ICMP errors of earlier sends surface here on some systems.
                        ErrorKind::ConnectionRefused => continue,
                        _ => {
                            tracing::warn!(error = %e, "media socket read failed");
                            return;
                        }
                    }
                }
            }
        }
    }

    fn route(&mut self, d: Box<Datagram>) {
        let shard = match self.by_addr.get(&d.from) {
            Some(s) => Some(*s),
            // A new peer address starts with an ICE check naming our username fragment.
            None => match stun_ufrag(d.buf.get(..d.len).unwrap_or_default())
                .and_then(|u| self.by_ufrag.get_mut(u))
            {
                Some((shard, addrs)) => {
                    if addrs.len() < MAX_LEG_ADDRS {
                        addrs.push(d.from);
                        self.by_addr.insert(d.from, *shard);
                    }
                    Some(*shard)
                }
                None => None,
            },
        };
        let Some(inbox) = shard.and_then(|s| self.shards.get(s)) else {
            tracing::trace!(from = %d.from, "datagram for no leg");
            self.spare = Some(d);
            return;
        };
        if let Err(e) = inbox.try_send(d) {
            let d = match e {
                mpsc::error::TrySendError::Full(d) => {
                    metrics::counter!("dialbridge_webrtc_receive_dropped_total").increment(1);
                    d
                }
                mpsc::error::TrySendError::Closed(d) => d,
            };
            let _ = self.give_back.try_send(d);
        }
    }
}

struct Slot {
    who: MediaParticipant,
    leg: Box<WebRtcLeg>,
    created: Instant,
    last_rx: Instant,
    addrs: Vec<SocketAddr>,
}

/// Phone legs whose RTP socket became readable. Their wakers fill it from the shard's own
/// reactor (a current-thread runtime), so the lock is never contended.
#[derive(Default)]
struct ReadyPhones {
    ids: Mutex<Vec<MediaId>>,
    notify: Notify,
}

impl ReadyPhones {
    fn ids(&self) -> std::sync::MutexGuard<'_, Vec<MediaId>> {
        lock(&self.ids)
    }
}

/// What a direct-path phone leg's RTP socket wakes: it queues that leg and wakes the loop.
struct PhoneWaker {
    id: MediaId,
    ready: Arc<ReadyPhones>,
}

impl Wake for PhoneWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.ready.ids().push(self.id);
        self.ready.notify.notify_one();
    }
}

/// A phone leg on its shard (sockets in the shard's reactor) or, with std sockets, on its way
/// to another.
struct PhoneSlot<S = UdpSocket> {
    /// `None` while in no room.
    who: Option<MediaParticipant>,
    mute: PhoneMute,
    /// The prompt playing and how far it got.
    prompt: Option<(&'static [i16], usize)>,
    rtp: S,
    rtcp: S,
    leg: RtpLeg,
    media_timeout: Duration,
    events: mpsc::UnboundedSender<PhoneMediaEvent>,
    up: Upsampler,
    down: Downsampler,
    wide: Box<[i16; FRAME_48K]>,
    narrow: [i16; FRAME_8K],
    dtmf: std::collections::VecDeque<char>,
    dtmf_next: Instant,
    /// In a two-party room: RTP is read as it arrives and forwarded at once.
    direct: bool,
}

impl<S> PhoneSlot<S> {
    /// The same leg with its sockets converted (for a hand-over between shards' reactors).
    fn map_sockets<T>(self, f: impl Fn(S) -> Option<T>) -> Option<PhoneSlot<T>> {
        let PhoneSlot {
            who,
            mute,
            prompt,
            rtp,
            rtcp,
            leg,
            media_timeout,
            events,
            up,
            down,
            wide,
            narrow,
            dtmf,
            dtmf_next,
            direct,
        } = self;
        Some(PhoneSlot {
            who,
            mute,
            prompt,
            rtp: f(rtp)?,
            rtcp: f(rtcp)?,
            leg,
            media_timeout,
            events,
            up,
            down,
            wide,
            narrow,
            dtmf,
            dtmf_next,
            direct,
        })
    }

    /// Key presses queued or being sent, or a prompt playing: the tick drives the outbound
    /// stream meanwhile, also on a direct path.
    fn tick_drives(&self) -> bool {
        self.leg.is_sending_dtmf() || !self.dtmf.is_empty() || self.prompt.is_some()
    }

    fn room_id(&self) -> Option<i64> {
        self.who.as_ref().map(|w| w.room_id)
    }
}

/// Puts a phone in a room's mix with its mute state; false if it is in that mix already.
fn enter_room(rooms: &mut HashMap<i64, Room>, id: MediaId, room_id: i64, mute: PhoneMute) -> bool {
    let room = rooms.entry(room_id).or_insert_with(Room::new);
    if room.mixer.add(participant(id)).is_err() {
        return false;
    }
    let _ = room.mixer.set_send_muted(participant(id), mute.speaking);
    let _ = room.mixer.set_recv_muted(participant(id), mute.listening);
    room.phones.push(id);
    true
}

fn phone_leg(now: Instant, remote: &PhoneRemote, media_timeout: Duration) -> RtpLeg {
    RtpLeg::new(
        now,
        std::time::SystemTime::now(),
        phone_leg_config(remote, media_timeout),
    )
}

fn phone_leg_config(remote: &PhoneRemote, media_timeout: Duration) -> RtpLegConfig {
    let mut cfg = RtpLegConfig::new(remote.law, rand::random(), remote.rtp);
    cfg.remote_rtcp = remote.rtcp;
    cfg.dtmf_pt = remote.dtmf_pt;
    cfg.inactivity_timeout = Some(media_timeout);
    cfg.send = remote.receives;
    cfg
}

/// One participant of a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Web(MediaId),
    Phone(MediaId),
}

impl End {
    fn id(self) -> MediaId {
        match self {
            End::Web(id) | End::Phone(id) => id,
        }
    }
}

/// One direction of a direct path.
#[derive(Default)]
struct Path {
    source: Continuity,
    frames: Reframer,
}

/// A two-party room's direct path.
struct Direct {
    a: End,
    b: End,
    a_to_b: Path,
    b_to_a: Path,
}

struct Room {
    mixer: Mixer,
    members: Vec<MediaId>,
    phones: Vec<MediaId>,
    direct: Option<Box<Direct>>,
}

impl Room {
    fn new() -> Room {
        Room {
            mixer: Mixer::new((MIX_RATE * FRAME_MS / 1000) as usize),
            members: Vec::new(),
            phones: Vec::new(),
            direct: None,
        }
    }

    /// The two participants, when there are exactly two.
    fn pair(&self) -> Option<(End, End)> {
        match (self.members.as_slice(), self.phones.as_slice()) {
            ([a, b], []) => Some((End::Web(*a), End::Web(*b))),
            ([a], [b]) => Some((End::Web(*a), End::Phone(*b))),
            ([], [a, b]) => Some((End::Phone(*a), End::Phone(*b))),
            _ => None,
        }
    }
}

/// Everything a shard is made of.
struct ShardParts {
    index: usize,
    socket: Arc<std::net::UdpSocket>,
    local: SocketAddr,
    commands: mpsc::UnboundedReceiver<Command>,
    datagrams: mpsc::Receiver<Box<Datagram>>,
    pool: std::sync::mpsc::SyncSender<Box<Datagram>>,
    routes: mpsc::UnboundedSender<Route>,
    registry: SharedRegistry,
    totals: Arc<Totals>,
    events: Arc<EventBus>,
    /// Every shard's commands (weak: they must not keep the shards alive).
    peers: Arc<[mpsc::WeakUnboundedSender<Command>]>,
}

/// One media thread: the legs and mixers of the rooms placed on it.
struct Shard {
    index: usize,
    socket: Arc<std::net::UdpSocket>,
    /// The announced candidate, given to the legs as every datagram's destination: with a
    /// wildcard listen address or behind NAT the socket's own address is not the one ICE knows.
    local: SocketAddr,
    commands: mpsc::UnboundedReceiver<Command>,
    datagrams: mpsc::Receiver<Box<Datagram>>,
    pool: std::sync::mpsc::SyncSender<Box<Datagram>>,
    routes: mpsc::UnboundedSender<Route>,
    registry: SharedRegistry,
    totals: Arc<Totals>,
    events: Arc<EventBus>,
    legs: HashMap<MediaId, Slot>,
    phones: HashMap<MediaId, PhoneSlot>,
    by_addr: HashMap<SocketAddr, MediaId>,
    rooms: HashMap<i64, Room>,
    next_tick: Instant,
    /// The earliest timeout any leg asked for (no later than the true one; a full scan makes
    /// it exact), so a wake for one datagram does not visit every leg.
    leg_deadline: Instant,
    buf: Vec<u8>,
    gone: Vec<MediaId>,
    /// Reused list of phone legs to read.
    ready: Vec<MediaId>,
    /// Phone legs of two-party rooms whose RTP socket has data, queued by their wakers.
    ready_phones: Arc<ReadyPhones>,
    /// Each such leg's waker (made once per leg on this shard).
    phone_wakers: HashMap<MediaId, Waker>,
    peers: Arc<[mpsc::WeakUnboundedSender<Command>]>,
    /// Phone legs in no room (answered callers entering a PIN or waiting), in their order.
    lobby: Vec<MediaId>,
    /// Commands for phone legs still on their way from another shard.
    stashed: Vec<Command>,
}

fn participant(id: MediaId) -> ParticipantId {
    ParticipantId(id.0)
}

/// Datagrams handled per wake before the loop looks at commands and timers again.
const DATAGRAM_BATCH: usize = 64;

impl Shard {
    fn new(parts: ShardParts) -> Shard {
        let now = Instant::now();
        Shard {
            index: parts.index,
            socket: parts.socket,
            local: parts.local,
            commands: parts.commands,
            datagrams: parts.datagrams,
            pool: parts.pool,
            routes: parts.routes,
            registry: parts.registry,
            totals: parts.totals,
            events: parts.events,
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
            peers: parts.peers,
            lobby: Vec::new(),
            stashed: Vec::new(),
        }
    }

    async fn run(mut self) {
        loop {
            let deadline = self.leg_deadline.min(self.next_tick);
            tokio::select! {
                biased;
                command = self.commands.recv() => match command {
                    Some(Command::Shutdown { done }) => {
                        self.close_all();
                        let _ = done.send(());
                        break;
                    }
                    Some(c) => self.command(c),
                    // Every handle is gone: the service is shutting down.
                    None => break,
                },
                datagram = self.datagrams.recv() => match datagram {
                    Some(d) => {
                        self.datagram(Instant::now(), d);
                        for _ in 1..DATAGRAM_BATCH {
                            match self.datagrams.try_recv() {
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
        tracing::info!(shard = self.index, "media engine stopped");
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

    fn count(&self) {
        metrics::gauge!("dialbridge_media_shard_legs", "shard" => self.index.to_string())
            .set((self.legs.len() + self.phones.len()) as f64);
        metrics::gauge!("dialbridge_webrtc_legs")
            .set(self.totals.webrtc.load(Ordering::Relaxed) as f64);
        metrics::gauge!("dialbridge_phone_media_legs")
            .set(self.totals.phones.load(Ordering::Relaxed) as f64);
    }

    fn command(&mut self, command: Command) {
        match command {
            Command::Add { id, who, leg, done } => {
                let room_id = who.room_id;
                let replaced: Vec<MediaId> = self
                    .legs
                    .iter()
                    .filter(|(_, s)| s.who.room_id == room_id && s.who.session_id == who.session_id)
                    .map(|(id, _)| *id)
                    .collect();
                for old in replaced {
                    self.remove(old, "replaced by a new offer");
                }
                let room = self.rooms.entry(room_id).or_insert_with(Room::new);
                if room.mixer.add(participant(id)).is_ok() {
                    room.members.push(id);
                    let now = Instant::now();
                    self.legs.insert(
                        id,
                        Slot {
                            who,
                            leg,
                            created: now,
                            last_rx: now,
                            addrs: Vec::new(),
                        },
                    );
                    self.totals.webrtc.fetch_add(1, Ordering::Relaxed);
                    self.flush(id);
                    self.count();
                    self.update_direct(room_id);
                    tracing::info!(media = %id, room_id, shard = self.index, "WebRTC leg added");
                } else {
                    let _ = self.routes.send(Route::Forget {
                        ufrag: leg.ufrag().to_string(),
                    });
                    lock(&self.registry).release(room_id);
                }
                let _ = done.send(());
            }
            Command::Remove {
                id,
                room_id,
                sessions,
                done,
            } => {
                let owned = self.legs.get(&id).is_some_and(|s| {
                    s.who.room_id == room_id && sessions.contains(&s.who.session_id)
                });
                if owned {
                    self.remove(id, "ended by the client");
                }
                let _ = done.send(owned);
            }
            Command::EndSessions { room_id, sessions } => {
                let ending: Vec<MediaId> = self
                    .legs
                    .iter()
                    .filter(|(_, s)| {
                        s.who.room_id == room_id && sessions.contains(&s.who.session_id)
                    })
                    .map(|(id, _)| *id)
                    .collect();
                for id in ending {
                    self.remove(id, "session left the call");
                }
            }
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

    /// Commands for one phone leg. Those for a leg still on its way here from another shard
    /// wait for it.
    fn phone_command(&mut self, command: Command) {
        let Some(id) = command.phone() else {
            return;
        };
        if !self.phones.contains_key(&id) {
            let registry = lock(&self.registry);
            if registry.moving.contains(&id) {
                // Commands for a hand-over that failed on the way are dropped with it.
                self.stashed
                    .retain(|c| c.phone().is_some_and(|p| registry.moving.contains(&p)));
                self.stashed.push(command);
            }
            return;
        }
        match command {
            Command::UpdatePhone { id, remote } => {
                if let Some(slot) = self.phones.get_mut(&id) {
                    let now = Instant::now();
                    let cfg = phone_leg_config(&remote, slot.media_timeout);
                    // The same stream runs on unless the law changed.
                    if !slot.leg.renegotiate(now, &cfg) {
                        slot.leg.close(now);
                        send_phone(id, slot);
                        slot.leg = RtpLeg::new(now, std::time::SystemTime::now(), cfg);
                        slot.leg.set_forwarding(slot.direct);
                    }
                    tracing::info!(media = %id, remote = %remote.rtp, sends = remote.receives, "phone leg re-pointed");
                }
            }
            Command::RemovePhone { id } => self.remove_phone(id, "call ended"),
            Command::PhoneDtmf { id, digits } => {
                if let Some(slot) = self.phones.get_mut(&id) {
                    slot.dtmf.extend(digits.chars());
                }
            }
            Command::PhoneJoin { id, who } => self.join_phone(id, who),
            Command::PhonePrompt { id, prompt } => {
                if let Some(slot) = self.phones.get_mut(&id) {
                    slot.prompt = prompt.map(|p| (p, 0));
                }
            }
            Command::PhoneMute { id, mute } => {
                let Some(slot) = self.phones.get_mut(&id) else {
                    return;
                };
                slot.mute = mute;
                if let Some(room) = slot.room_id().and_then(|r| self.rooms.get_mut(&r)) {
                    let _ = room.mixer.set_send_muted(participant(id), mute.speaking);
                    let _ = room.mixer.set_recv_muted(participant(id), mute.listening);
                }
                tracing::info!(media = %id, speaking = mute.speaking, listening = mute.listening, "phone leg mute changed");
            }
            _ => {}
        }
    }

    /// Puts a phone leg in no room into `who`'s room, on this shard.
    fn join_phone(&mut self, id: MediaId, who: MediaParticipant) {
        let room_id = who.room_id;
        let joined = match self.phones.get_mut(&id) {
            Some(slot)
                if slot.who.is_none() && enter_room(&mut self.rooms, id, room_id, slot.mute) =>
            {
                slot.who = Some(who);
                true
            }
            _ => false,
        };
        if !joined {
            tracing::warn!(media = %id, room_id, "phone leg not moved: it is in a room already");
            lock(&self.registry).undo_join(id, room_id, self.index);
            return;
        }
        self.lobby.retain(|m| *m != id);
        self.update_direct(room_id);
        tracing::info!(media = %id, room_id, shard = self.index, "phone leg joined its room's mix");
    }

    /// Hands a phone leg in no room to the shard of the room it joins.
    fn move_phone(&mut self, id: MediaId, who: MediaParticipant, to: usize) {
        let room_id = who.room_id;
        let slot = match self.phones.remove(&id) {
            Some(slot) if slot.who.is_none() => slot,
            other => {
                if let Some(slot) = other {
                    self.phones.insert(id, slot);
                }
                tracing::warn!(media = %id, room_id, "phone leg not moved: it is in a room already, or gone");
                lock(&self.registry).undo_join(id, room_id, self.index);
                return;
            }
        };
        self.lobby.retain(|m| *m != id);
        self.phone_wakers.remove(&id);
        self.totals.phones.fetch_sub(1, Ordering::Relaxed);
        self.count();
        let slot = slot.map_sockets(|s| s.into_std().ok());
        let peer = self.peers.get(to).and_then(|p| p.upgrade());
        match (slot, peer) {
            (Some(slot), Some(peer)) => {
                let slot = Box::new(slot);
                if peer.send(Command::PhoneAdopt { id, who, slot }).is_ok() {
                    return;
                }
            }
            _ => tracing::warn!(media = %id, "phone leg could not be handed over"),
        }
        // The leg is lost: its owner hears of it as silence, like any dead leg.
        let mut registry = lock(&self.registry);
        registry.release(room_id);
        registry.phones.remove(&id);
        registry.moving.remove(&id);
    }

    /// A phone leg handed over by another shard: its sockets join this shard's reactor and it
    /// enters its room.
    fn adopt_phone(
        &mut self,
        id: MediaId,
        who: MediaParticipant,
        slot: PhoneSlot<std::net::UdpSocket>,
    ) {
        let room_id = who.room_id;
        lock(&self.registry).moving.remove(&id);
        let slot = slot.map_sockets(|s| {
            s.set_nonblocking(true).ok()?;
            UdpSocket::from_std(s).ok()
        });
        let Some(slot) = slot else {
            tracing::warn!(media = %id, "phone leg sockets unusable after hand-over");
            let mut registry = lock(&self.registry);
            registry.release(room_id);
            registry.phones.remove(&id);
            return;
        };
        self.phones.insert(id, slot);
        self.lobby.push(id);
        self.totals.phones.fetch_add(1, Ordering::Relaxed);
        self.count();
        self.join_phone(id, who);
        // Commands that came before the leg did.
        let (mine, others): (Vec<Command>, Vec<Command>) = std::mem::take(&mut self.stashed)
            .into_iter()
            .partition(|c| c.phone() == Some(id));
        self.stashed = others;
        for command in mine {
            self.phone_command(command);
        }
    }

    fn add_phone(&mut self, id: MediaId, phone: PhoneMedia) {
        let PhoneMedia {
            who,
            rtp,
            rtcp,
            remote,
            media_timeout,
            events,
        } = phone;
        let now = Instant::now();
        let room_id = who.as_ref().map(|w| w.room_id);
        let refuse = |registry: &SharedRegistry| {
            let mut registry = lock(registry);
            match room_id {
                Some(room_id) => registry.release(room_id),
                None => registry.release_lobby(self.index),
            }
            registry.phones.remove(&id);
        };
        if self.phones.contains_key(&id) {
            tracing::warn!(media = %id, "phone leg not added: the id is taken");
            refuse(&self.registry);
            return;
        }
        let sockets = rtp
            .set_nonblocking(true)
            .and_then(|_| rtcp.set_nonblocking(true))
            .and_then(|_| Ok((UdpSocket::from_std(rtp)?, UdpSocket::from_std(rtcp)?)));
        let (rtp, rtcp) = match sockets {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(media = %id, ?room_id, error = %e, "phone leg not added");
                refuse(&self.registry);
                return;
            }
        };
        match room_id {
            Some(room_id) => {
                if !enter_room(&mut self.rooms, id, room_id, PhoneMute::default()) {
                    tracing::warn!(media = %id, room_id, "phone leg not added: already in the mix");
                    refuse(&self.registry);
                    return;
                }
            }
            None => self.lobby.push(id),
        }
        self.phones.insert(
            id,
            PhoneSlot {
                who,
                mute: PhoneMute::default(),
                prompt: None,
                rtp,
                rtcp,
                leg: phone_leg(now, &remote, media_timeout),
                media_timeout,
                events,
                up: Upsampler::default(),
                down: Downsampler::default(),
                wide: Box::new([0; FRAME_48K]),
                narrow: [0; FRAME_8K],
                dtmf: Default::default(),
                dtmf_next: now,
                direct: false,
            },
        );
        self.totals.phones.fetch_add(1, Ordering::Relaxed);
        self.count();
        if let Some(room_id) = room_id {
            self.update_direct(room_id);
        }
        tracing::info!(media = %id, ?room_id, shard = self.index, remote = %remote.rtp, "phone leg added");
    }

    fn remove_phone(&mut self, id: MediaId, why: &str) {
        let Some(mut slot) = self.phones.remove(&id) else {
            return;
        };
        self.phone_wakers.remove(&id);
        slot.leg.close(Instant::now());
        send_phone(id, &mut slot);
        self.lobby.retain(|m| *m != id);
        let room_id = slot.room_id();
        if let Some(room_id) = room_id {
            if let Some(room) = self.rooms.get_mut(&room_id) {
                let _ = room.mixer.remove(participant(id));
                room.phones.retain(|m| *m != id);
                if room.members.is_empty() && room.phones.is_empty() {
                    self.rooms.remove(&room_id);
                }
            }
        }
        {
            let mut registry = lock(&self.registry);
            match room_id {
                Some(room_id) => registry.release(room_id),
                None => registry.release_lobby(self.index),
            }
            registry.phones.remove(&id);
        }
        self.totals.phones.fetch_sub(1, Ordering::Relaxed);
        self.count();
        if let Some(room_id) = room_id {
            self.update_direct(room_id);
        }
        let st = slot.leg.inbound().jitter_stats();
        tracing::info!(media = %id, ?room_id, reason = why, lost = st.lost, "phone leg removed");
    }

    /// Switches a room between its direct path (exactly two participants) and the mixer.
    /// Outbound streams keep their sequence numbers and timestamps across the switch, and
    /// inbound jitter buffers stay fed, so neither side hears a gap.
    fn update_direct(&mut self, room_id: i64) {
        let Some(room) = self.rooms.get_mut(&room_id) else {
            return;
        };
        let pair = room.pair();
        let current = room.direct.as_ref().map(|d| (d.a, d.b));
        if pair == current {
            return;
        }
        let mut switch = |end: End, on: bool| match end {
            End::Web(id) => {
                if let Some(slot) = self.legs.get_mut(&id) {
                    if let Err(e) = slot.leg.set_direct(on) {
                        tracing::warn!(media = %id, error = %e, "direct path unavailable");
                    }
                }
            }
            End::Phone(id) => {
                if let Some(slot) = self.phones.get_mut(&id) {
                    slot.direct = on;
                    slot.leg.set_forwarding(on);
                }
            }
        };
        if let Some((a, b)) = current {
            switch(a, false);
            switch(b, false);
        }
        room.direct = pair.map(|(a, b)| {
            switch(a, true);
            switch(b, true);
            Box::new(Direct {
                a,
                b,
                a_to_b: Path::default(),
                b_to_a: Path::default(),
            })
        });
        tracing::debug!(room_id, direct = room.direct.is_some(), "room media path");
        if let Some((a, b)) = pair {
            for end in [a, b] {
                if let End::Phone(id) = end {
                    self.arm(id);
                }
            }
        }
    }

    fn datagram(&mut self, now: Instant, d: Box<Datagram>) {
        self.web_input(now, d.from, d.len, &d.buf);
        // The buffer goes back to the reader's pool.
        let _ = self.pool.try_send(d);
    }

    fn web_input(&mut self, now: Instant, from: SocketAddr, n: usize, buf: &[u8]) {
        let Some(bytes) = buf.get(..n) else {
            return;
        };
        let id = match self.by_addr.get(&from) {
            Some(id) => *id,
            // A new peer address starts with an ICE check (STUN, first byte 0-3 by RFC 7983).
            None if bytes.first().is_some_and(|b| *b > 3) => {
                tracing::trace!(%from, "non-STUN datagram from an unknown address");
                return;
            }
            None => {
                let found = self
                    .legs
                    .iter()
                    .find(|(_, s)| s.leg.accepts(now, from, self.local, bytes))
                    .map(|(id, _)| *id);
                match found {
                    Some(id) => {
                        self.by_addr.insert(from, id);
                        if let Some(slot) = self.legs.get_mut(&id) {
                            slot.addrs.push(from);
                        }
                        id
                    }
                    None => {
                        tracing::trace!(%from, "datagram for no leg");
                        return;
                    }
                }
            }
        };
        let Some(slot) = self.legs.get_mut(&id) else {
            return;
        };
        slot.last_rx = now;
        let room_id = slot.who.room_id;
        if let Err(e) = slot.leg.handle_input(now, from, self.local, bytes) {
            tracing::debug!(media = %id, %from, error = %e, "datagram refused");
        }
        self.flush(id);
        self.forward(now, room_id, id);
    }

    /// Reads the phone legs of two-party rooms whose RTP socket has data (only those: a wake
    /// costs the legs that have something, not every leg of the shard), and asks to hear of
    /// their next packets.
    fn read_ready_phones(&mut self, now: Instant) {
        let mut ready = std::mem::take(&mut self.ready);
        ready.clear();
        // The queue keeps the emptied list: no allocation once both have grown.
        std::mem::swap(&mut *self.ready_phones.ids(), &mut ready);
        for id in &ready {
            self.read_phone(now, *id);
            self.arm(*id);
        }
        self.ready = ready;
    }

    /// Until `id` is among the legs queued for reading (tests and benchmarks).
    async fn wait_queued(&self, id: MediaId) {
        while !self.ready_phones.ids().contains(&id) {
            self.ready_phones.notify.notified().await;
        }
    }

    /// Registers a direct-path phone leg's waker with its RTP socket, so that its next packet
    /// queues it; if data is waiting already, queues it now. Mixing rooms' phones are read at
    /// the tick instead.
    fn arm(&mut self, id: MediaId) {
        let Some(slot) = self.phones.get(&id) else {
            return;
        };
        if !slot.direct {
            return;
        }
        let ready = &self.ready_phones;
        let waker = self.phone_wakers.entry(id).or_insert_with(|| {
            Waker::from(Arc::new(PhoneWaker {
                id,
                ready: ready.clone(),
            }))
        });
        if slot
            .rtp
            .poll_recv_ready(&mut TaskContext::from_waker(waker))
            .is_ready()
        {
            waker.wake_by_ref();
        }
    }

    /// Reads every datagram waiting on a phone leg's sockets into the leg; on a direct path
    /// each audio packet goes on to the other participant at once.
    fn read_phone(&mut self, now: Instant, id: MediaId) {
        for rtcp in [false, true] {
            // Bounded, so a flood on one leg cannot hold up the others.
            for _ in 0..64 {
                let Some(slot) = self.phones.get_mut(&id) else {
                    return;
                };
                let socket = if rtcp { &slot.rtcp } else { &slot.rtp };
                match socket.try_recv_from(&mut self.buf) {
                    Ok((n, from)) => {
                        if let Some(bytes) = self.buf.get(..n) {
                            if let Err(e) = slot.leg.handle_datagram(now, from, bytes) {
                                tracing::trace!(%from, error = %e, "phone datagram refused");
                            }
                        }
                        if let (true, Some(room_id)) = (slot.direct, slot.room_id()) {
                            self.forward(now, room_id, id);
                            if let Some(slot) = self.phones.get_mut(&id) {
                                phone_events(id, slot);
                            }
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::ConnectionRefused => continue,
                    Err(e) => {
                        tracing::debug!(error = %e, "phone socket read failed");
                        break;
                    }
                }
            }
        }
    }

    /// The direct path: what `from` just received goes to the other participant of its
    /// two-party room now, transcoded as needed, in place of the mix.
    fn forward(&mut self, now: Instant, room_id: i64, from: MediaId) {
        let Some(room) = self.rooms.get_mut(&room_id) else {
            return;
        };
        let Some(direct) = room.direct.as_mut() else {
            return;
        };
        let (src, dst, path) = if direct.a.id() == from {
            (direct.a, direct.b, &mut direct.a_to_b)
        } else if direct.b.id() == from {
            (direct.b, direct.a, &mut direct.b_to_a)
        } else {
            return;
        };
        let send_muted = room.mixer.muted(participant(src.id())).is_some_and(|m| m.0);
        let recv_muted = room.mixer.muted(participant(dst.id())).is_some_and(|m| m.1);
        let muted = send_muted || recv_muted;
        match (src, dst) {
            (End::Phone(s), End::Phone(d)) => {
                let [Some(sp), Some(dp)] = self.phones.get_disjoint_mut([&s, &d]) else {
                    return;
                };
                while let Some((meta, pcm)) = sp.leg.take_forward() {
                    if let Some(gap) =
                        path.source
                            .admit(meta.ssrc, meta.timestamp, pcm.len() as u32, 8000)
                    {
                        to_phone(now, path, dp, gap / FRAME_8K as u32, pcm, muted);
                    }
                }
                send_phone(d, dp);
            }
            (End::Phone(s), End::Web(d)) => {
                let (Some(sp), Some(dw)) = (self.phones.get_mut(&s), self.legs.get_mut(&d)) else {
                    return;
                };
                while let Some((meta, pcm)) = sp.leg.take_forward() {
                    let Some(gap) =
                        path.source
                            .admit(meta.ssrc, meta.timestamp, pcm.len() as u32, 8000)
                    else {
                        continue;
                    };
                    if gap > 0 {
                        path.frames.clear();
                        dw.leg.skip(gap * (OPUS_CLOCK / 8000));
                    }
                    path.frames.push(pcm);
                    while let Some(frame) = path.frames.pop() {
                        let frame = if muted { &SILENCE_8K } else { frame };
                        if let Err(e) = dw.leg.send_direct_pcm(now, frame) {
                            tracing::debug!(media = %d, error = %e, "frame not sent");
                        }
                    }
                }
                self.flush(d);
            }
            (End::Web(s), End::Phone(d)) => {
                let (Some(sw), Some(dp)) = (self.legs.get_mut(&s), self.phones.get_mut(&d)) else {
                    return;
                };
                while let Some((meta, pcm)) = sw.leg.take_direct_pcm() {
                    let units = pcm.len() as u32 * (OPUS_CLOCK / 8000);
                    if let Some(gap) =
                        path.source
                            .admit(meta.ssrc, meta.timestamp, units, OPUS_CLOCK)
                    {
                        to_phone(
                            now,
                            path,
                            dp,
                            gap / (FRAME_8K as u32 * (OPUS_CLOCK / 8000)),
                            pcm,
                            muted,
                        );
                    }
                }
                send_phone(d, dp);
            }
            (End::Web(s), End::Web(d)) => {
                let [Some(sw), Some(dw)] = self.legs.get_disjoint_mut([&s, &d]) else {
                    return;
                };
                while let Some((meta, payload, units)) = sw.leg.take_direct_opus() {
                    let Some(gap) = path
                        .source
                        .admit(meta.ssrc, meta.timestamp, units, OPUS_CLOCK)
                    else {
                        continue;
                    };
                    dw.leg.skip(gap);
                    if muted {
                        for _ in 0..units.div_ceil(RTP_FRAME_48K) {
                            let _ = dw.leg.send_direct_pcm(now, &SILENCE_8K);
                        }
                    } else {
                        // Browser to browser: the packet goes on as it is.
                        dw.leg.send_direct_opus(now, payload, units);
                    }
                }
                self.flush(d);
            }
        }
    }

    /// Sends what the leg wants sent and handles its events.
    fn flush(&mut self, id: MediaId) {
        if let Some(slot) = self.legs.get_mut(&id) {
            flush(
                &self.socket,
                &self.events,
                id,
                slot,
                &mut self.gone,
                &mut self.leg_deadline,
            );
        }
    }

    /// Fires the legs' due timers and recomputes the earliest deadline.
    fn timeouts(&mut self, now: Instant) {
        let mut earliest = now + SILENCE_TIMEOUT;
        for (id, slot) in self.legs.iter_mut() {
            if slot.leg.poll_timeout() <= now {
                slot.leg.handle_timeout(now);
                flush(
                    &self.socket,
                    &self.events,
                    *id,
                    slot,
                    &mut self.gone,
                    &mut earliest,
                );
            }
            earliest = earliest.min(slot.leg.poll_timeout());
        }
        // A leg whose timer stays due (a closed one) must not make the loop spin.
        self.leg_deadline = earliest.max(now + Duration::from_millis(1));
    }

    /// One mixing tick for every room. Two-party rooms only keep their inbound jitter buffers
    /// in step and run their phone legs' timers and key presses: their audio went out as it
    /// came.
    fn tick(&mut self, now: Instant) {
        if now.duration_since(self.next_tick) > MAX_LAG {
            tracing::debug!(
                late_ms = now.duration_since(self.next_tick).as_millis() as u64,
                "media ticks skipped"
            );
            self.next_tick = now;
        }
        self.next_tick += TICK;
        // Phone datagrams of mixing rooms are read once per tick: the jitter buffer absorbs
        // the wait.
        let mut ready = std::mem::take(&mut self.ready);
        ready.clear();
        ready.extend(self.phones.keys().copied());
        for id in &ready {
            self.read_phone(now, *id);
        }
        self.ready = ready;
        self.tick_lobby(now);
        for room in self.rooms.values_mut() {
            let direct = room.direct.is_some();
            for id in &room.members {
                if let Some(slot) = self.legs.get_mut(id) {
                    if direct {
                        slot.leg.discard_frame(now);
                    } else {
                        let (pcm, _) = slot.leg.pull_frame(now);
                        let _ = room.mixer.push(participant(*id), pcm);
                    }
                }
            }
            for id in &room.phones {
                if let Some(slot) = self.phones.get_mut(id) {
                    let (pcm, _) = slot.leg.tick(now);
                    if !direct {
                        slot.up.process(pcm, &mut slot.wide);
                        let _ = room.mixer.push(participant(*id), &slot.wide[..]);
                    }
                }
            }
            if !direct {
                room.mixer.mix();
            }
            for id in &room.phones {
                let Some(slot) = self.phones.get_mut(id) else {
                    continue;
                };
                // On a direct path the tick sends to the phone only while key presses or a
                // prompt replace its audio; the media clock runs on the same either way.
                let send = if direct {
                    slot.narrow = SILENCE_8K;
                    slot.tick_drives()
                } else {
                    match room.mixer.output(participant(*id)) {
                        Some(pcm) => {
                            slot.down.process(pcm, &mut slot.narrow);
                            true
                        }
                        None => false,
                    }
                };
                phone_out(now, *id, slot, send);
            }
            if direct {
                continue;
            }
            for id in &room.members {
                let (Some(slot), Some(pcm)) =
                    (self.legs.get_mut(id), room.mixer.output(participant(*id)))
                else {
                    continue;
                };
                if let Err(e) = slot.leg.push_frame(now, pcm) {
                    tracing::debug!(media = %id, error = %e, "frame not sent");
                }
                flush(
                    &self.socket,
                    &self.events,
                    *id,
                    slot,
                    &mut self.gone,
                    &mut self.leg_deadline,
                );
            }
        }
    }

    /// Phones in no room: what they send is read (at the tick, with the others) and dropped
    /// (its key presses still count), what they hear is their prompt or silence.
    fn tick_lobby(&mut self, now: Instant) {
        for id in &self.lobby {
            if let Some(slot) = self.phones.get_mut(id) {
                let _ = slot.leg.tick(now);
                slot.narrow = SILENCE_8K;
                phone_out(now, *id, slot, true);
            }
        }
    }

    /// Drops legs whose peer is gone or never came, or went silent.
    fn reap(&mut self, now: Instant) {
        for (id, slot) in &self.legs {
            let stale = if slot.leg.is_connected() {
                now.duration_since(slot.last_rx) > SILENCE_TIMEOUT
            } else {
                now.duration_since(slot.created) > CONNECT_TIMEOUT
            };
            if stale && !self.gone.contains(id) {
                self.gone.push(*id);
            }
        }
        while let Some(id) = self.gone.pop() {
            self.remove(id, "peer gone");
        }
    }

    fn remove(&mut self, id: MediaId, why: &str) {
        let Some(mut slot) = self.legs.remove(&id) else {
            return;
        };
        slot.leg.close();
        while let Some(t) = slot.leg.poll_transmit() {
            let _ = self.socket.send_to(&t.contents, t.destination);
        }
        for addr in &slot.addrs {
            self.by_addr.remove(addr);
        }
        let _ = self.routes.send(Route::Forget {
            ufrag: slot.leg.ufrag().to_string(),
        });
        let room_id = slot.who.room_id;
        if let Some(room) = self.rooms.get_mut(&room_id) {
            let _ = room.mixer.remove(participant(id));
            room.members.retain(|m| *m != id);
            if room.members.is_empty() && room.phones.is_empty() {
                self.rooms.remove(&room_id);
            }
        }
        lock(&self.registry).release(room_id);
        self.totals.webrtc.fetch_sub(1, Ordering::Relaxed);
        self.count();
        self.update_direct(room_id);
        let st = slot.leg.stats();
        // Totals are added when a leg ends: nothing is counted per packet on the media thread.
        metrics::counter!("dialbridge_webrtc_packets_received_total").increment(st.opus_received);
        metrics::counter!("dialbridge_webrtc_packets_lost_total").increment(st.jitter.lost);
        metrics::counter!("dialbridge_webrtc_frames_concealed_total")
            .increment(st.decode.concealed);
        tracing::info!(
            media = %id,
            room_id,
            reason = why,
            received = st.opus_received,
            sent = st.sent,
            lost = st.jitter.lost,
            late = st.jitter.late,
            fec = st.decode.fec,
            concealed = st.decode.concealed,
            "WebRTC leg removed"
        );
    }
}

/// Opus RTP clock.
const OPUS_CLOCK: u32 = 48_000;
/// 20 ms at the Opus clock.
const RTP_FRAME_48K: u32 = OPUS_CLOCK / 1000 * FRAME_MS;

/// Direct path into a phone: skips `lost` frames on its media clock, then sends every
/// complete 20 ms of `pcm` at once (silence when muted). While key presses replace the phone's
/// audio the tick drives its stream, and this audio is dropped.
fn to_phone(
    now: Instant,
    path: &mut Path,
    dp: &mut PhoneSlot,
    lost: u32,
    pcm: &[i16],
    muted: bool,
) {
    if lost > 0 {
        path.frames.clear();
        if !dp.tick_drives() {
            dp.leg.skip_frames(lost);
        }
    }
    path.frames.push(pcm);
    while let Some(frame) = path.frames.pop() {
        if dp.tick_drives() {
            continue;
        }
        let frame = if muted { &SILENCE_8K } else { frame };
        dp.leg.send_audio(now, frame);
    }
}

/// Sends one frame to a phone when `send`: `slot.narrow` (its mix or silence), or its prompt
/// while one plays; queued key presses go first. Then its timers, datagrams and events.
fn phone_out(now: Instant, id: MediaId, slot: &mut PhoneSlot, send: bool) {
    if !send {
        phone_timers(now, id, slot);
        return;
    }
    if now >= slot.dtmf_next {
        if let Some(digit) = slot.dtmf.pop_front() {
            match slot.leg.send_dtmf(now, digit, DTMF_TONE) {
                Ok(()) => tracing::info!(media = %id, %digit, "DTMF to phone"),
                Err(e) => tracing::info!(media = %id, %digit, error = %e, "DTMF not sent"),
            }
            slot.dtmf_next = now + DTMF_TONE + DTMF_GAP;
        }
    }
    if let Some((samples, at)) = slot.prompt {
        let rest = samples.get(at..).unwrap_or(&[]);
        let n = rest.len().min(FRAME_8K);
        slot.narrow[..n].copy_from_slice(&rest[..n]);
        slot.narrow[n..].fill(0);
        if at + n >= samples.len() {
            slot.prompt = None;
            let _ = slot.events.send(PhoneMediaEvent::PromptDone);
        } else {
            slot.prompt = Some((samples, at + n));
        }
    }
    slot.leg.send_audio(now, &slot.narrow);
    phone_timers(now, id, slot);
}

/// A phone leg's timers, then what it has to send and to report.
fn phone_timers(now: Instant, id: MediaId, slot: &mut PhoneSlot) {
    if slot.leg.poll_timeout().is_some_and(|t| t <= now) {
        slot.leg.handle_timeout(now);
    }
    send_phone(id, slot);
    phone_events(id, slot);
}

fn send_phone(id: MediaId, slot: &mut PhoneSlot) {
    let mut out = [0u8; rtp_leg::MAX_DATAGRAM];
    while let Some(t) = slot.leg.poll_transmit(&mut out) {
        let socket = if t.rtcp { &slot.rtcp } else { &slot.rtp };
        let Some(bytes) = out.get(..t.len) else {
            continue;
        };
        if let Err(e) = socket.try_send_to(bytes, t.to) {
            tracing::debug!(media = %id, to = %t.to, error = %e, "phone send failed");
        }
    }
}

/// A key press of a participant, as a room event.
fn publish_dtmf(events: &EventBus, who: &MediaParticipant, digit: char) {
    events.publish(
        who.room_id,
        None,
        RoomEvent::Dtmf {
            attendee_id: who.attendee_id,
            actor_type: who.actor_type.clone(),
            actor_id: who.actor_id.clone(),
            session_id: who.session_id.clone(),
            digit: digit.to_string(),
        },
    );
}

/// Key presses, inactivity and BYE go to the leg's owner (who knows whether a key press is a
/// PIN digit or the room's event).
fn phone_events(id: MediaId, slot: &mut PhoneSlot) {
    while let Some(event) = slot.leg.poll_event() {
        match event {
            rtp_leg::LegEvent::Dtmf(d) => {
                let Some(digit) = d.digit() else {
                    continue;
                };
                tracing::info!(media = %id, %digit, "DTMF from phone");
                let _ = slot.events.send(PhoneMediaEvent::Dtmf(digit));
            }
            rtp_leg::LegEvent::Inactive => {
                let _ = slot.events.send(PhoneMediaEvent::Inactive);
            }
            rtp_leg::LegEvent::Bye => {
                let _ = slot.events.send(PhoneMediaEvent::Bye);
            }
            rtp_leg::LegEvent::Latched(from) => {
                tracing::debug!(media = %id, %from, "phone media latched")
            }
            rtp_leg::LegEvent::Active => {}
        }
    }
}

/// Sends what a leg wants sent and handles its events: key presses become room events, a leg
/// that is gone is queued in `gone`.
fn flush(
    socket: &std::net::UdpSocket,
    events: &EventBus,
    id: MediaId,
    slot: &mut Slot,
    gone: &mut Vec<MediaId>,
    deadline: &mut Instant,
) {
    *deadline = (*deadline).min(slot.leg.poll_timeout());
    while let Some(t) = slot.leg.poll_transmit() {
        match socket.send_to(&t.contents, t.destination) {
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
                tracing::info!(media = %id, room_id = slot.who.room_id, "WebRTC leg connected")
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
        }
    }
}

/// A two-party room on one shard, driven by hand, for `benches/media_engine.rs`: not part of
/// the service's interface.
#[doc(hidden)]
pub mod bench {
    use super::*;

    /// A phone leg's media as the benchmark and the tests make it: PCMU with telephone-event,
    /// RTP and RTCP to one `remote` address, no media timeout to speak of.
    pub(super) fn loopback_phone(
        who: Option<MediaParticipant>,
        (rtp, rtcp): (std::net::UdpSocket, std::net::UdpSocket),
        remote: SocketAddr,
        events: mpsc::UnboundedSender<PhoneMediaEvent>,
    ) -> PhoneMedia {
        PhoneMedia {
            who,
            rtp,
            rtcp,
            remote: PhoneRemote {
                law: G711::Pcmu,
                dtmf_pt: Some(101),
                rtp: remote,
                rtcp: remote,
                receives: true,
            },
            media_timeout: Duration::from_secs(3600),
            events,
        }
    }

    /// Two phone legs in one room (the direct path) and the sockets standing in for the phones.
    pub struct TwoPhones {
        shard: Shard,
        a: MediaId,
        phone_a: std::net::UdpSocket,
        phone_b: std::net::UdpSocket,
        gateway_a: SocketAddr,
        packet: [u8; 12 + FRAME_8K],
        seq: u16,
        _keep: Vec<Box<dyn std::any::Any>>,
    }

    fn bind() -> std::io::Result<std::net::UdpSocket> {
        std::net::UdpSocket::bind("127.0.0.1:0")
    }

    impl TwoPhones {
        /// Builds the room, and `idle_rooms` more two-phone rooms on the same shard whose phones
        /// stay silent; call inside a tokio runtime (the shard's sockets join its reactor).
        pub fn new(mixing: bool, idle_rooms: usize) -> std::io::Result<TwoPhones> {
            let socket = bind()?;
            let local = socket.local_addr()?;
            let (commands_tx, commands) = mpsc::unbounded_channel();
            let (datagrams_tx, datagrams) = mpsc::channel(4);
            let (pool, pool_rx) = std::sync::mpsc::sync_channel(4);
            let (routes, routes_rx) = mpsc::unbounded_channel();
            let mut shard = Shard::new(ShardParts {
                index: 0,
                socket: Arc::new(socket),
                local,
                commands,
                datagrams,
                pool,
                routes,
                registry: Arc::new(Mutex::new(Registry::new(1))),
                totals: Arc::new(Totals::default()),
                events: Arc::new(EventBus::default()),
                peers: Arc::from(Vec::new()),
            });
            let mut keep: Vec<Box<dyn std::any::Any>> = vec![
                Box::new(commands_tx),
                Box::new(datagrams_tx),
                Box::new(pool_rx),
                Box::new(routes_rx),
            ];
            let mut phone =
                |n: u64, room_id: i64| -> std::io::Result<(std::net::UdpSocket, SocketAddr)> {
                    let (own, rtp, rtcp) = (bind()?, bind()?, bind()?);
                    let gateway = rtp.local_addr()?;
                    let (events, receiver) = mpsc::unbounded_channel();
                    keep.push(Box::new(receiver));
                    let remote = own.local_addr()?;
                    let who = MediaParticipant {
                        room_id,
                        session_id: format!("phone-{n}"),
                        attendee_id: n as i64,
                        actor_type: "phones".into(),
                        actor_id: format!("phone{n}"),
                    };
                    shard.add_phone(
                        MediaId(n),
                        loopback_phone(Some(who), (rtp, rtcp), remote, events),
                    );
                    Ok((own, gateway))
                };
            let (phone_a, gateway_a) = phone(1, 1)?;
            let (phone_b, _) = phone(2, 1)?;
            let mut others = Vec::new();
            if mixing {
                // A third, silent participant: the room mixes.
                others.push(phone(3, 1)?.0);
            }
            for k in 0..idle_rooms as u64 {
                for n in [10 + 2 * k, 11 + 2 * k] {
                    others.push(phone(n, 2 + k as i64)?.0);
                }
            }
            keep.push(Box::new(others));
            let mut packet = [0u8; 12 + FRAME_8K];
            packet[0] = 0x80;
            packet[8..12].copy_from_slice(&0x5151_5151u32.to_be_bytes());
            G711::Pcmu.encode(&[1000; FRAME_8K], &mut packet[12..]);
            Ok(TwoPhones {
                shard,
                a: MediaId(1),
                phone_a,
                phone_b,
                gateway_a,
                packet,
                seq: 0,
                _keep: keep,
            })
        }

        /// Whether the room forwards directly.
        pub fn is_direct(&self) -> bool {
            self.shard.rooms.get(&1).is_some_and(|r| r.direct.is_some())
        }

        /// Phone A sends one packet and the shard reads it as its loop does (woken by the
        /// socket's readiness); on the direct path it is forwarded to phone B in this call.
        pub async fn phone_a_sends(&mut self) -> std::io::Result<()> {
            self.seq = self.seq.wrapping_add(1);
            self.packet[2..4].copy_from_slice(&self.seq.to_be_bytes());
            let ts = u32::from(self.seq) * FRAME_8K as u32;
            self.packet[4..8].copy_from_slice(&ts.to_be_bytes());
            self.phone_a.send_to(&self.packet, self.gateway_a)?;
            self.shard.wait_queued(self.a).await;
            self.shard.read_ready_phones(Instant::now());
            Ok(())
        }

        /// One mixing tick at `now`.
        pub fn tick(&mut self, now: Instant) {
            self.shard.tick(now);
        }

        /// Waits for the next packet at phone B; its length.
        pub fn phone_b_receives(&self) -> std::io::Result<usize> {
            let mut buf = [0u8; 1500];
            self.phone_b.recv(&mut buf)
        }

        /// Drops whatever waits at phone B.
        pub fn drain(&self) -> std::io::Result<()> {
            self.phone_b.set_nonblocking(true)?;
            let mut buf = [0u8; 1500];
            while self.phone_b.recv(&mut buf).is_ok() {}
            self.phone_b.set_nonblocking(false)
        }
    }
}

#[cfg(test)]
mod tests {
    //! The shard driven by hand in virtual time with real loopback sockets standing in for the
    //! phones: which packets leave, and when (in which call), not how fast.

    use super::*;
    use dialbridge_bridge::testing::{tone_ratio, Sine};

    const ROOM: i64 = 7;

    struct Phone {
        id: MediaId,
        /// The phone's own socket (where the gateway sends, and what sends to the gateway).
        socket: std::net::UdpSocket,
        /// The gateway's RTP address for this phone.
        gateway: SocketAddr,
        seq: u16,
        sine: Sine,
        events: mpsc::UnboundedReceiver<PhoneMediaEvent>,
    }

    impl Phone {
        /// Sends 20 ms of its tone as PCMU.
        fn talk(&mut self) {
            let mut pcm = [0i16; FRAME_8K];
            self.sine.fill(&mut pcm);
            let mut packet = [0u8; 12 + FRAME_8K];
            packet[0] = 0x80;
            packet[2..4].copy_from_slice(&self.seq.to_be_bytes());
            let ts = u32::from(self.seq) * FRAME_8K as u32;
            packet[4..8].copy_from_slice(&ts.to_be_bytes());
            packet[8..12].copy_from_slice(&(0x1000 + self.id.0 as u32).to_be_bytes());
            G711::Pcmu.encode(&pcm, &mut packet[12..]);
            self.seq = self.seq.wrapping_add(1);
            self.socket
                .send_to(&packet, self.gateway)
                .unwrap_or_else(|e| panic!("{e}"));
        }

        /// Presses `event` (RFC 4733: a start and an end packet).
        fn press(&mut self, event: u8) {
            for end in [false, true] {
                let mut packet = [0u8; 16];
                packet[0] = 0x80;
                packet[1] = 101 | if end { 0 } else { 0x80 };
                packet[2..4].copy_from_slice(&self.seq.to_be_bytes());
                let ts = u32::from(self.seq) * FRAME_8K as u32;
                packet[4..8].copy_from_slice(&ts.to_be_bytes());
                packet[8..12].copy_from_slice(&(0x1000 + self.id.0 as u32).to_be_bytes());
                packet[12] = event;
                packet[13] = if end { 0x80 | 10 } else { 10 };
                packet[14..16].copy_from_slice(&(if end { 800u16 } else { 160 }).to_be_bytes());
                self.seq = self.seq.wrapping_add(1);
                self.socket
                    .send_to(&packet, self.gateway)
                    .unwrap_or_else(|e| panic!("{e}"));
            }
        }

        /// Every RTP packet waiting at the phone: (sequence number, decoded audio).
        fn heard(&self) -> Vec<(u16, Vec<i16>)> {
            let mut out = Vec::new();
            let mut buf = [0u8; 1500];
            while let Ok((n, _)) = self.socket.recv_from(&mut buf) {
                if n < 12 || buf[1] & 0x7f != 0 {
                    continue;
                }
                let mut pcm = vec![0i16; n - 12];
                G711::Pcmu.decode(&buf[12..n], &mut pcm);
                out.push((u16::from_be_bytes([buf[2], buf[3]]), pcm));
            }
            out
        }

        /// Waits (for at most a second) until a packet has arrived at the phone.
        fn wait(&self) {
            self.socket
                .set_read_timeout(Some(Duration::from_secs(1)))
                .unwrap_or_else(|e| panic!("{e}"));
            let mut buf = [0u8; 1];
            let _ = self.socket.peek_from(&mut buf);
            self.socket
                .set_nonblocking(true)
                .unwrap_or_else(|e| panic!("{e}"));
        }
    }

    fn shard(events: Arc<EventBus>) -> (Shard, Vec<Box<dyn std::any::Any>>) {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        let local = socket.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let (commands_tx, commands) = mpsc::unbounded_channel();
        let (datagrams_tx, datagrams) = mpsc::channel(4);
        let (pool, pool_rx) = std::sync::mpsc::sync_channel(4);
        let (routes, routes_rx) = mpsc::unbounded_channel();
        let shard = Shard::new(ShardParts {
            index: 0,
            socket: Arc::new(socket),
            local,
            commands,
            datagrams,
            pool,
            routes,
            registry: Arc::new(Mutex::new(Registry::new(1))),
            totals: Arc::new(Totals::default()),
            events,
            peers: Arc::from(Vec::new()),
        });
        let keep: Vec<Box<dyn std::any::Any>> = vec![
            Box::new(commands_tx),
            Box::new(datagrams_tx),
            Box::new(pool_rx),
            Box::new(routes_rx),
        ];
        (shard, keep)
    }

    fn who(n: u64) -> MediaParticipant {
        MediaParticipant {
            room_id: ROOM,
            session_id: format!("phone-{n}"),
            attendee_id: n as i64,
            actor_type: "phones".into(),
            actor_id: format!("phone{n}"),
        }
    }

    fn add_phone(shard: &mut Shard, n: u64, freq: f64) -> Phone {
        add_phone_to(shard, n, freq, true)
    }

    /// A phone in the room, or (`room` false) in no room yet.
    fn add_phone_to(shard: &mut Shard, n: u64, freq: f64, room: bool) -> Phone {
        let bind = || std::net::UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        let (socket, rtp, rtcp) = (bind(), bind(), bind());
        socket
            .set_nonblocking(true)
            .unwrap_or_else(|e| panic!("{e}"));
        let addr = |s: &std::net::UdpSocket| s.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let (gateway, remote) = (addr(&rtp), addr(&socket));
        let (events, receiver) = mpsc::unbounded_channel();
        let id = MediaId(n);
        shard.add_phone(
            id,
            bench::loopback_phone(room.then(|| who(n)), (rtp, rtcp), remote, events),
        );
        Phone {
            id,
            socket,
            gateway,
            seq: 1,
            sine: Sine::new(freq, 8000, 8000),
            events: receiver,
        }
    }

    /// Lets the shard take what arrived at a phone's RTP socket, as its loop does on a wake.
    /// Waits until `phone`'s packet has queued its leg (as the loop is woken), then reads the
    /// queued legs as the loop does.
    async fn arrived(shard: &mut Shard, phone: &Phone) {
        let queued = shard.wait_queued(phone.id);
        if tokio::time::timeout(Duration::from_secs(10), queued)
            .await
            .is_err()
        {
            panic!("the phone's packet did not queue its leg");
        }
        shard.read_ready_phones(Instant::now());
    }

    fn direct(shard: &Shard) -> bool {
        shard.rooms.get(&ROOM).is_some_and(|r| r.direct.is_some())
    }

    #[test]
    fn opus_settings_reach_the_legs() {
        let mut config = MediaConfig::default();
        config.opus.complexity = 8;
        config.opus.phone_complexity = 2;
        config.opus.bitrate = 24_000;
        config.opus.fec = false;
        config.opus.expected_loss = 3;
        config.opus.dtx = true;
        let candidate: SocketAddr = ([192, 0, 2, 1], 10000).into();
        let leg = leg_config(&config, candidate);
        assert_eq!(leg.candidate, candidate);
        assert_eq!(leg.mix_rate, MIX_RATE);
        assert_eq!((leg.opus.complexity, leg.direct_complexity), (8, 2));
        assert_eq!(
            (leg.opus.bitrate, leg.opus.expected_loss_percent),
            (24_000, 3)
        );
        assert!(!leg.opus.fec && leg.opus.dtx);
    }

    #[test]
    fn ice_checks_are_routed_by_our_username_fragment() {
        // A binding request with SOFTWARE (odd length, padded) before USERNAME "srv1:cli9".
        let mut stun = vec![0x00, 0x01, 0, 0, 0x21, 0x12, 0xA4, 0x42];
        stun.extend_from_slice(&[7; 12]);
        stun.extend_from_slice(&[0x80, 0x22, 0, 3, b'a', b'b', b'c', 0]);
        stun.extend_from_slice(&[0x00, 0x06, 0, 9]);
        stun.extend_from_slice(b"srv1:cli9\0\0\0");
        assert_eq!(stun_ufrag(&stun), Some("srv1"));
        // Not STUN, no cookie, cut short, no USERNAME.
        assert_eq!(stun_ufrag(&[0x80; 40]), None);
        let mut no_cookie = stun.clone();
        no_cookie[4] = 0;
        assert_eq!(stun_ufrag(&no_cookie), None);
        assert_eq!(stun_ufrag(&stun[..30]), None);
        assert_eq!(stun_ufrag(&stun[..28]), None);
    }

    #[test]
    fn rooms_go_to_the_least_loaded_thread_and_stay_there() {
        let mut r = Registry::new(2);
        assert_eq!(r.place(1), 0);
        assert_eq!(r.place(2), 1);
        assert_eq!(r.place(1), 0);
        assert_eq!(r.place(3), 1);
        assert_eq!(r.place_lobby(), 0);
        assert_eq!(r.load, vec![3, 2]);
        r.release(2);
        r.release(3);
        assert_eq!(r.shard_of(2), None);
        assert_eq!(r.place(4), 1);
        r.release(1);
        assert_eq!(r.shard_of(1), Some(0), "one leg of room 1 is left");
        r.release(1);
        r.release_lobby(0);
        assert_eq!((r.shard_of(1), r.load.clone()), (None, vec![0, 1]));
    }

    #[tokio::test]
    async fn two_party_room_forwards_each_packet_in_the_turn_it_arrives() {
        let (mut shard, _keep) = shard(Arc::new(EventBus::default()));
        let mut a = add_phone(&mut shard, 1, 1000.0);
        let b = add_phone(&mut shard, 2, 440.0);
        assert!(direct(&shard));

        // No tick runs in this test until the end: every packet B hears was forwarded in the
        // call that read A's packet.
        let mut heard = Vec::new();
        for _ in 0..5 {
            a.talk();
            arrived(&mut shard, &a).await;
            b.wait();
            let got = b.heard();
            assert_eq!(got.len(), 1, "one packet out per packet in");
            heard.extend(got);
        }
        let seqs: Vec<u16> = heard.iter().map(|(s, _)| *s).collect();
        assert!(
            seqs.windows(2).all(|w| w[1] == w[0].wrapping_add(1)),
            "{seqs:?}"
        );
        let pcm: Vec<i16> = heard.iter().flat_map(|(_, p)| p.clone()).collect();
        assert!(tone_ratio(&pcm, 1000.0, 8000) > 0.9);

        // A lost packet: nothing is made up in its place (B's phone conceals it).
        a.seq = a.seq.wrapping_add(1);
        a.talk();
        arrived(&mut shard, &a).await;
        b.wait();
        assert_eq!(b.heard().len(), 1);

        // Send mute on A: B hears silence in its place, still at once.
        shard.command(Command::PhoneMute {
            id: a.id,
            mute: PhoneMute {
                speaking: true,
                listening: false,
            },
        });
        a.talk();
        arrived(&mut shard, &a).await;
        b.wait();
        let got = b.heard();
        assert_eq!(got.len(), 1);
        assert!(got[0].1.iter().all(|s| *s == 0), "muted: silence");
        shard.command(Command::PhoneMute {
            id: a.id,
            mute: PhoneMute::default(),
        });

        // A key press on the direct path goes to the leg's owner at once.
        a.press(5);
        arrived(&mut shard, &a).await;
        let key = a.events.try_recv();
        assert_eq!(key, Ok(PhoneMediaEvent::Dtmf('5')));
    }

    /// Two shards wired to each other as `start` wires them.
    fn two_shards() -> (Shard, Shard, Vec<Box<dyn std::any::Any>>) {
        let events = Arc::new(EventBus::default());
        let (mut a, mut keep) = shard(events.clone());
        let (mut b, keep_b) = shard(events);
        keep.extend(keep_b);
        let registry = Arc::new(Mutex::new(Registry::new(2)));
        let (a_tx, a_rx) = mpsc::unbounded_channel();
        let (b_tx, b_rx) = mpsc::unbounded_channel();
        let peers: Arc<[mpsc::WeakUnboundedSender<Command>]> =
            Arc::from(vec![a_tx.downgrade(), b_tx.downgrade()]);
        (a.commands, b.commands) = (a_rx, b_rx);
        (a.registry, b.registry) = (registry.clone(), registry);
        (a.peers, b.peers) = (peers.clone(), peers);
        b.index = 1;
        keep.push(Box::new((a_tx, b_tx)));
        (a, b, keep)
    }

    #[tokio::test]
    async fn a_phone_in_no_room_hears_its_prompt_then_moves_to_its_rooms_shard() {
        let (mut lobby, mut room, _keep) = two_shards();
        // The room's other participant is on shard 1; the caller answered on shard 0.
        let b = add_phone(&mut room, 2, 440.0);
        let mut caller = add_phone_to(&mut lobby, 1, 1000.0, false);
        {
            let mut registry = lock(&room.registry);
            registry.rooms.insert(ROOM, Placement { shard: 1, legs: 1 });
            registry.load = vec![1, 1];
            registry.phones.insert(b.id, 1);
            registry.phones.insert(caller.id, 0);
        }
        assert!(lobby.lobby.contains(&caller.id));
        // One turn of the reactor: the new sockets are known to be writable.
        tokio::task::yield_now().await;

        static PROMPT: [i16; 400] = [8000; 400];
        lobby.command(Command::PhonePrompt {
            id: caller.id,
            prompt: Some(&PROMPT),
        });
        let t0 = Instant::now();
        for k in 1..=3u32 {
            caller.talk();
            // The shard's loop lets the reactor see the datagram before the tick reads it.
            tokio::task::yield_now().await;
            lobby.tick(t0 + TICK * k);
        }
        caller.wait();
        let heard = caller.heard();
        assert_eq!(heard.len(), 3);
        assert!(
            heard[0].1.iter().all(|s| (*s - 8000).abs() < 300),
            "the prompt"
        );
        assert_eq!(caller.events.try_recv(), Ok(PhoneMediaEvent::PromptDone));
        // Nothing of the caller reached the room.
        b.wait();
        assert!(b.heard().is_empty());

        // Joining the room hands the leg over to the room's shard, where it talks to B
        // directly.
        let handle_registry = lobby.registry.clone();
        {
            let mut registry = lock(&handle_registry);
            registry.release_lobby(0);
            registry.place(ROOM);
            registry.phones.insert(caller.id, 1);
            registry.moving.insert(caller.id);
        }
        lobby.command(Command::PhoneMove {
            id: caller.id,
            who: who(1),
            to: 1,
        });
        assert!(lobby.phones.is_empty());
        // A command the handle sends to the new shard before the leg got there waits for it.
        room.command(Command::PhonePrompt {
            id: caller.id,
            prompt: Some(&PROMPT),
        });
        while let Ok(command) = room.commands.try_recv() {
            room.command(command);
        }
        assert!(room
            .phones
            .get(&caller.id)
            .is_some_and(|s| s.prompt.is_some()));
        assert!(room.stashed.is_empty());
        room.command(Command::PhonePrompt {
            id: caller.id,
            prompt: None,
        });
        assert!(direct(&room));
        caller.talk();
        arrived(&mut room, &caller).await;
        b.wait();
        let got = b.heard();
        assert_eq!(got.len(), 1);
        assert!(tone_ratio(&got[0].1, 1000.0, 8000) > 0.5);
        let registry = lock(&handle_registry);
        assert_eq!(registry.load, vec![0, 2]);
        assert!(registry.moving.is_empty());
    }

    #[tokio::test]
    async fn third_participant_switches_to_mixing_and_back_without_a_break_in_the_stream() {
        let (mut shard, _keep) = shard(Arc::new(EventBus::default()));
        let mut a = add_phone(&mut shard, 1, 1000.0);
        let b = add_phone(&mut shard, 2, 440.0);
        let t0 = Instant::now();
        a.talk();
        arrived(&mut shard, &a).await;
        b.wait();
        let mut heard = b.heard();
        assert_eq!(heard.len(), 1);

        let mut c = add_phone(&mut shard, 3, 0.0);
        assert!(!direct(&shard));
        // Mixing: packets wait for the tick; 25 ticks of A's tone reach B and C mixed.
        for k in 1..=25u32 {
            a.talk();
            c.talk();
            if let Some(slot) = shard.phones.get(&a.id) {
                let _ = slot.rtp.readable().await;
            }
            shard.tick(t0 + TICK * k);
        }
        b.wait();
        let mixed = b.heard();
        assert!(mixed.len() >= 20, "{} packets", mixed.len());
        let tail: Vec<i16> = mixed
            .iter()
            .rev()
            .take(10)
            .flat_map(|(_, p)| p.clone())
            .collect();
        assert!(tone_ratio(&tail, 1000.0, 8000) > 0.5);
        c.wait();
        assert!(!c.heard().is_empty());
        heard.extend(mixed);

        // C leaves: direct again, and B's sequence numbers ran on through both switches.
        shard.remove_phone(c.id, "test");
        assert!(direct(&shard));
        let _ = c.heard();
        a.talk();
        arrived(&mut shard, &a).await;
        b.wait();
        heard.extend(b.heard());
        let seqs: Vec<u16> = heard.iter().map(|(s, _)| *s).collect();
        assert!(
            seqs.windows(2).all(|w| w[1] == w[0].wrapping_add(1)),
            "{seqs:?}"
        );
    }
}

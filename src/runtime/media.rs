//! The media engine: one UDP socket at `[media] webrtc_listen` for every WebRTC peer, the WebRTC
//! legs, and one N-1 mixer per room, all on one dedicated thread.
//!
//! The thread runs a single-threaded tokio runtime with one loop: it reads datagrams, hands each
//! to the leg it belongs to (by remote address; the first packets of a peer by its ICE
//! username), sends what the legs produce, fires their timers, and every 20 ms (paced from a
//! monotonic clock, without drift) pulls one frame from every leg, mixes each room and pushes
//! each listener's mix back. Datagrams are read into one reused buffer and frames into the
//! mixer's own buffers: the loop allocates nothing per packet or per tick (str0m keeps its own
//! packet buffers). Leg setup (SDP, DTLS certificate, codecs) runs off this thread, on the API's
//! blocking pool, so a join never stalls the audio of calls in progress.
//!
//! The API talks to the engine through [`MediaHandle`] (a channel); when sessions leave a call,
//! the room service calls [`CallObserver::left_call`] and the engine ends their media.

use std::collections::HashMap;
use std::fmt;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use dialbridge_bridge::g711::G711;
use dialbridge_bridge::mixer::{Mixer, ParticipantId};
use dialbridge_bridge::resample::{Downsampler, Upsampler, FRAME_48K, FRAME_8K};
use dialbridge_bridge::rtp_leg::{self, RtpLeg, RtpLegConfig};
use dialbridge_bridge::webrtc::{LegEvent, WebRtcError, WebRtcLeg, WebRtcLegConfig, FRAME_MS};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};

use crate::config::MediaConfig;
use crate::events::{EventBus, RoomEvent};
use crate::room::{CallObserver, MediaParticipant, PhoneMute};

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
    /// Close every leg (RTCP BYE, DTLS close_notify) and stop.
    Shutdown {
        done: oneshot::Sender<()>,
    },
}

/// Where a phone leg's media goes, from the SDP answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PhoneRemote {
    pub law: G711,
    pub dtmf_pt: Option<u8>,
    pub rtp: SocketAddr,
    pub rtcp: SocketAddr,
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

/// The API's handle on the engine.
#[derive(Clone)]
pub struct MediaHandle {
    commands: mpsc::UnboundedSender<Command>,
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
        self.commands
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
        self.commands
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
        if self
            .commands
            .send(Command::EndSessions { room_id, sessions })
            .is_err()
        {
            tracing::warn!(
                room_id,
                "media engine stopped; cannot end media of sessions"
            );
        }
    }
}

impl MediaHandle {
    /// Adds a phone leg to its room's mix.
    pub fn add_phone(&self, id: MediaId, phone: PhoneMedia) -> Result<(), MediaError> {
        self.commands
            .send(Command::AddPhone {
                id,
                phone: Box::new(phone),
            })
            .map_err(|_| MediaError::Unavailable)
    }

    /// Points a phone leg at a new remote (the 200's SDP after early media from a 183).
    pub fn update_phone(&self, id: MediaId, remote: PhoneRemote) -> Result<(), MediaError> {
        self.commands
            .send(Command::UpdatePhone { id, remote })
            .map_err(|_| MediaError::Unavailable)
    }

    /// Ends a phone leg's media (sends RTCP BYE, frees its sockets).
    pub fn remove_phone(&self, id: MediaId) {
        let _ = self.commands.send(Command::RemovePhone { id });
    }

    /// Moves a phone leg that is in no room into `who`'s room mix.
    pub fn join_phone(&self, id: MediaId, who: MediaParticipant) -> Result<(), MediaError> {
        self.commands
            .send(Command::PhoneJoin { id, who })
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
        self.commands
            .send(Command::PhonePrompt { id, prompt })
            .map_err(|_| MediaError::Unavailable)
    }

    /// Mutes or unmutes a phone leg's directions in its room's mix.
    pub fn mute_phone(&self, id: MediaId, mute: PhoneMute) -> Result<(), MediaError> {
        self.commands
            .send(Command::PhoneMute { id, mute })
            .map_err(|_| MediaError::Unavailable)
    }

    /// Queues RFC 4733 key presses to a phone leg.
    pub fn phone_dtmf(&self, id: MediaId, digits: String) -> Result<(), MediaError> {
        self.commands
            .send(Command::PhoneDtmf { id, digits })
            .map_err(|_| MediaError::Unavailable)
    }

    /// Closes every leg, so peers learn at once that the call is over, and stops the engine.
    pub async fn shutdown(&self) {
        let (done, closed) = oneshot::channel();
        if self.commands.send(Command::Shutdown { done }).is_ok() {
            let _ = closed.await;
        }
    }
}

impl CallObserver for MediaHandle {
    fn left_call(&self, room_id: i64, sessions: &[String]) {
        self.end_sessions(room_id, sessions.to_vec());
    }
}

/// Binds the WebRTC socket and starts the media thread. Candidates announce `public_ip` when
/// set, else the listen IP, with the bound port.
/// Key presses on the legs are published as room events on `events`.
pub fn start(config: &MediaConfig, events: Arc<EventBus>) -> anyhow::Result<MediaHandle> {
    let socket = std::net::UdpSocket::bind(config.webrtc_listen)
        .with_context(|| format!("cannot bind media.webrtc_listen = {}", config.webrtc_listen))?;
    socket.set_nonblocking(true)?;
    let local_addr = socket.local_addr()?;
    let ip = config.public_ip.unwrap_or(local_addr.ip());
    let leg_config = WebRtcLegConfig::new(SocketAddr::new(ip, local_addr.port()), MIX_RATE);
    let (commands, receiver) = mpsc::unbounded_channel();
    let announced = leg_config.candidate;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot build the media runtime")?;
    std::thread::Builder::new()
        .name("dialbridge-media".into())
        .spawn(move || {
            runtime.block_on(async move {
                match UdpSocket::from_std(socket) {
                    Ok(socket) => Engine::new(socket, announced, receiver, events).run().await,
                    Err(e) => tracing::error!(error = %e, "media socket unusable"),
                }
            })
        })
        .context("cannot start the media thread")?;
    tracing::info!(%local_addr, candidate = %leg_config.candidate, "WebRTC media listening");
    Ok(MediaHandle {
        commands,
        leg_config,
        local_addr,
    })
}

struct Slot {
    who: MediaParticipant,
    leg: Box<WebRtcLeg>,
    created: Instant,
    last_rx: Instant,
    addrs: Vec<SocketAddr>,
}

struct PhoneSlot {
    /// `None` while in no room.
    who: Option<MediaParticipant>,
    mute: PhoneMute,
    /// The prompt playing and how far it got.
    prompt: Option<(&'static [i16], usize)>,
    rtp: std::net::UdpSocket,
    rtcp: std::net::UdpSocket,
    leg: RtpLeg,
    media_timeout: Duration,
    events: mpsc::UnboundedSender<PhoneMediaEvent>,
    up: Upsampler,
    down: Downsampler,
    wide: Box<[i16; FRAME_48K]>,
    narrow: [i16; FRAME_8K],
    dtmf: std::collections::VecDeque<char>,
    dtmf_next: Instant,
}

fn phone_leg(now: Instant, remote: &PhoneRemote, media_timeout: Duration) -> RtpLeg {
    let mut cfg = RtpLegConfig::new(remote.law, rand::random(), remote.rtp);
    cfg.remote_rtcp = remote.rtcp;
    cfg.dtmf_pt = remote.dtmf_pt;
    cfg.inactivity_timeout = Some(media_timeout);
    RtpLeg::new(now, std::time::SystemTime::now(), cfg)
}

struct Room {
    mixer: Mixer,
    members: Vec<MediaId>,
    phones: Vec<MediaId>,
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

impl Room {
    fn new() -> Room {
        Room {
            mixer: Mixer::new((MIX_RATE * FRAME_MS / 1000) as usize),
            members: Vec::new(),
            phones: Vec::new(),
        }
    }
}

struct Engine {
    socket: UdpSocket,
    /// The announced candidate, given to the legs as every datagram's destination: with a
    /// wildcard listen address or behind NAT the socket's own address is not the one ICE knows.
    local: SocketAddr,
    commands: mpsc::UnboundedReceiver<Command>,
    events: Arc<EventBus>,
    legs: HashMap<MediaId, Slot>,
    phones: HashMap<MediaId, PhoneSlot>,
    /// Phone legs in no room (answered callers entering a PIN or waiting), in their order.
    lobby: Vec<MediaId>,
    by_addr: HashMap<SocketAddr, MediaId>,
    rooms: HashMap<i64, Room>,
    next_tick: Instant,
    /// The earliest timeout any leg asked for (no later than the true one; a full scan makes
    /// it exact), so a wake for one datagram does not visit every leg.
    leg_deadline: Instant,
    buf: Vec<u8>,
    gone: Vec<MediaId>,
}

fn participant(id: MediaId) -> ParticipantId {
    ParticipantId(id.0)
}

impl Engine {
    fn new(
        socket: UdpSocket,
        local: SocketAddr,
        commands: mpsc::UnboundedReceiver<Command>,
        events: Arc<EventBus>,
    ) -> Engine {
        Engine {
            socket,
            local,
            commands,
            events,
            legs: HashMap::new(),
            phones: HashMap::new(),
            lobby: Vec::new(),
            by_addr: HashMap::new(),
            rooms: HashMap::new(),
            next_tick: Instant::now() + TICK,
            leg_deadline: Instant::now() + TICK,
            buf: vec![0; MAX_DATAGRAM],
            gone: Vec::new(),
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
                readable = self.socket.readable() => {
                    if let Err(e) = readable {
                        tracing::error!(error = %e, "media socket failed");
                        break;
                    }
                    self.read_all();
                }
                _ = tokio::time::sleep_until(deadline.into()) => {}
            }
            let now = Instant::now();
            if now >= self.leg_deadline {
                self.timeouts(now);
            }
            if now >= self.next_tick {
                self.tick(now);
                self.tick_lobby(now);
                self.reap(now);
            } else if !self.gone.is_empty() {
                self.reap(now);
            }
        }
        self.close_all();
        tracing::info!("media engine stopped");
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
                    self.flush(id);
                    metrics::gauge!("dialbridge_webrtc_legs").set(self.legs.len() as f64);
                    tracing::info!(media = %id, room_id, "WebRTC leg added");
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
            Command::UpdatePhone { id, remote } => {
                if let Some(slot) = self.phones.get_mut(&id) {
                    let now = Instant::now();
                    slot.leg.close(now);
                    send_phone(id, slot);
                    slot.leg = phone_leg(now, &remote, slot.media_timeout);
                    tracing::info!(media = %id, remote = %remote.rtp, "phone leg re-pointed");
                }
            }
            Command::RemovePhone { id } => self.remove_phone(id, "call ended"),
            Command::PhoneDtmf { id, digits } => {
                if let Some(slot) = self.phones.get_mut(&id) {
                    slot.dtmf.extend(digits.chars());
                }
            }
            Command::PhoneJoin { id, who } => {
                let Some(slot) = self.phones.get_mut(&id) else {
                    return;
                };
                if slot.who.is_some() {
                    tracing::warn!(media = %id, "phone leg is in a room already");
                    return;
                }
                let room_id = who.room_id;
                if enter_room(&mut self.rooms, id, room_id, slot.mute) {
                    slot.who = Some(who);
                    self.lobby.retain(|m| *m != id);
                    tracing::info!(media = %id, room_id, "phone leg joined its room's mix");
                }
            }
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
                if let Some(room) = slot
                    .who
                    .as_ref()
                    .and_then(|w| self.rooms.get_mut(&w.room_id))
                {
                    let _ = room.mixer.set_send_muted(participant(id), mute.speaking);
                    let _ = room.mixer.set_recv_muted(participant(id), mute.listening);
                }
                tracing::info!(media = %id, speaking = mute.speaking, listening = mute.listening, "phone leg mute changed");
            }
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
        if self.phones.contains_key(&id) {
            tracing::warn!(media = %id, "phone leg not added: the id is taken");
            return;
        }
        let room_id = who.as_ref().map(|w| w.room_id);
        match room_id {
            Some(room_id) => {
                if !enter_room(&mut self.rooms, id, room_id, PhoneMute::default()) {
                    tracing::warn!(media = %id, room_id, "phone leg not added: already in the mix");
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
            },
        );
        metrics::gauge!("dialbridge_phone_media_legs").set(self.phones.len() as f64);
        tracing::info!(media = %id, ?room_id, remote = %remote.rtp, "phone leg added");
    }

    fn remove_phone(&mut self, id: MediaId, why: &str) {
        let Some(mut slot) = self.phones.remove(&id) else {
            return;
        };
        slot.leg.close(Instant::now());
        send_phone(id, &mut slot);
        self.lobby.retain(|m| *m != id);
        let room_id = slot.who.as_ref().map(|w| w.room_id);
        if let Some(room_id) = room_id {
            if let Some(room) = self.rooms.get_mut(&room_id) {
                let _ = room.mixer.remove(participant(id));
                room.phones.retain(|m| *m != id);
                if room.members.is_empty() && room.phones.is_empty() {
                    self.rooms.remove(&room_id);
                }
            }
        }
        metrics::gauge!("dialbridge_phone_media_legs").set(self.phones.len() as f64);
        let st = slot.leg.inbound().jitter_stats();
        tracing::info!(media = %id, ?room_id, reason = why, lost = st.lost, "phone leg removed");
    }

    fn read_all(&mut self) {
        loop {
            match self.socket.try_recv_from(&mut self.buf) {
                Ok((n, from)) => {
                    let now = Instant::now();
                    self.datagram(now, from, n);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                // ICMP errors of earlier sends surface here on some systems; they concern one peer.
                Err(e) if e.kind() == ErrorKind::ConnectionRefused => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "media socket read failed");
                    return;
                }
            }
        }
    }

    fn datagram(&mut self, now: Instant, from: SocketAddr, n: usize) {
        let Some(bytes) = self.buf.get(..n) else {
            return;
        };
        let id = match self.by_addr.get(&from) {
            Some(id) => *id,
            // A new peer address starts with an ICE check (STUN, first byte 0-3 by RFC 7983);
            // anything else from an unknown address is dropped without asking every leg.
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
        if let Err(e) = slot.leg.handle_input(now, from, self.local, bytes) {
            tracing::debug!(media = %id, %from, error = %e, "datagram refused");
        }
        self.flush(id);
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

    /// One mixing tick for every room.
    fn tick(&mut self, now: Instant) {
        if now.duration_since(self.next_tick) > MAX_LAG {
            tracing::debug!(
                late_ms = now.duration_since(self.next_tick).as_millis() as u64,
                "media ticks skipped"
            );
            self.next_tick = now;
        }
        self.next_tick += TICK;
        for room in self.rooms.values_mut() {
            for id in &room.members {
                if let Some(slot) = self.legs.get_mut(id) {
                    let (pcm, _) = slot.leg.pull_frame(now);
                    let _ = room.mixer.push(participant(*id), pcm);
                }
            }
            // Phone datagrams are read once per tick: the jitter buffer absorbs the wait.
            for id in &room.phones {
                if let Some(slot) = self.phones.get_mut(id) {
                    receive_phone(now, &mut self.buf, slot);
                    let (pcm, _) = slot.leg.tick(now);
                    slot.up.process(pcm, &mut slot.wide);
                    let _ = room.mixer.push(participant(*id), &slot.wide[..]);
                }
            }
            room.mixer.mix();
            for id in &room.phones {
                let (Some(slot), Some(pcm)) =
                    (self.phones.get_mut(id), room.mixer.output(participant(*id)))
                else {
                    continue;
                };
                slot.down.process(pcm, &mut slot.narrow);
                phone_out(now, *id, slot);
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

    /// Phones in no room: what they send is read and dropped (its key presses still count),
    /// what they hear is their prompt or silence.
    fn tick_lobby(&mut self, now: Instant) {
        for id in &self.lobby {
            if let Some(slot) = self.phones.get_mut(id) {
                receive_phone(now, &mut self.buf, slot);
                let _ = slot.leg.tick(now);
                slot.narrow = [0; FRAME_8K];
                phone_out(now, *id, slot);
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
            let _ = self.socket.try_send_to(&t.contents, t.destination);
        }
        for addr in &slot.addrs {
            self.by_addr.remove(addr);
        }
        let room_id = slot.who.room_id;
        if let Some(room) = self.rooms.get_mut(&room_id) {
            let _ = room.mixer.remove(participant(id));
            room.members.retain(|m| *m != id);
            if room.members.is_empty() && room.phones.is_empty() {
                self.rooms.remove(&room_id);
            }
        }
        metrics::gauge!("dialbridge_webrtc_legs").set(self.legs.len() as f64);
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

/// Reads every datagram waiting on a phone leg's sockets into the leg.
fn receive_phone(now: Instant, buf: &mut [u8], slot: &mut PhoneSlot) {
    for socket in [&slot.rtp, &slot.rtcp] {
        // Bounded, so a flood on one leg cannot hold up the tick.
        for _ in 0..64 {
            match socket.recv_from(buf) {
                Ok((n, from)) => {
                    if let Some(bytes) = buf.get(..n) {
                        if let Err(e) = slot.leg.handle_datagram(now, from, bytes) {
                            tracing::trace!(%from, error = %e, "phone datagram refused");
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

/// Sends one frame to a phone: `slot.narrow` (its mix or silence), or its prompt while one
/// plays; queued key presses go first. Then its timers, datagrams and events.
fn phone_out(now: Instant, id: MediaId, slot: &mut PhoneSlot) {
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
        if let Err(e) = socket.send_to(bytes, t.to) {
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
    socket: &UdpSocket,
    events: &EventBus,
    id: MediaId,
    slot: &mut Slot,
    gone: &mut Vec<MediaId>,
    deadline: &mut Instant,
) {
    *deadline = (*deadline).min(slot.leg.poll_timeout());
    while let Some(t) = slot.leg.poll_transmit() {
        match socket.try_send_to(&t.contents, t.destination) {
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

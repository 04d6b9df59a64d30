//! The phone side of a call: one RTP/RTCP session speaking G.711 and telephone-event.
//!
//! Sans-IO like the rest of the crate: the driver feeds datagrams with
//! [`RtpLeg::handle_datagram`], calls [`RtpLeg::send_audio`] and [`RtpLeg::tick`] every 20 ms,
//! [`RtpLeg::handle_timeout`] when [`RtpLeg::poll_timeout`] says, and drains
//! [`RtpLeg::poll_transmit`] and [`RtpLeg::poll_event`].
//!
//! Symmetric RTP (RFC 4961 practice): we send to the SDP address until the first valid RTP
//! packet arrives, then to wherever that packet came from. A packet from another address is
//! dropped while the latched source is alive; once that source has been silent for
//! `relatch_after`, the next valid packet moves the latch (NAT rebinding, a media move without
//! a re-INVITE). The SDP address itself always takes the latch back: stray packets that reach
//! a reused port first (an earlier call's peer still sending) cannot capture the call's audio.
//! [`RtpLeg::relatch`] opens the latch again after an SDP change.
//!
//! A phone bridged to a browser, one 20 ms tick (no mixer: the two-party path):
//!
//! ```
//! use std::time::{Instant, SystemTime};
//! use dialbridge_bridge::g711::G711;
//! use dialbridge_bridge::opus_codec::{OpusConfig, OpusEncoder, MAX_PACKET};
//! use dialbridge_bridge::rtp_leg::{RtpLeg, RtpLegConfig, MAX_DATAGRAM};
//! use dialbridge_bridge::transcode::{OpusInbound, RtpMeta};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let now = Instant::now();
//! let sdp_addr = "192.0.2.1:4000".parse()?;
//! let cfg = RtpLegConfig::new(G711::Pcmu, 0x1234, sdp_addr);
//! let mut phone = RtpLeg::new(now, SystemTime::now(), cfg);
//! let mut to_browser = OpusEncoder::new(OpusConfig::default())?;
//! let mut from_browser = OpusInbound::new()?;
//!
//! // The driver hands in what its sockets received...
//! let mut datagram = vec![0x80, 0, 0, 1, 0, 0, 0, 160, 0, 0, 0, 7]; // RTP header, PCMU
//! datagram.extend_from_slice(&[0xFF; 160]);
//! phone.handle_datagram(now, "198.51.100.7:30000".parse()?, &datagram)?;
//! let browser_meta = RtpMeta { seq: 1, timestamp: 960, marker: true, ssrc: 9 };
//! from_browser.insert(now, browser_meta, &[0xF8, 0xFF, 0xFE]); // an Opus packet from str0m
//!
//! // ...and on each 20 ms tick moves one frame each way.
//! let (pcm, _) = phone.tick(now);
//! let mut opus = [0u8; MAX_PACKET];
//! let n = to_browser.encode(pcm, &mut opus)?; // goes to the WebRTC leg
//! let (pcm, _) = from_browser.tick(now);
//! let mut frame = [0i16; 160];
//! frame.copy_from_slice(pcm);
//! phone.send_audio(now, &frame);
//!
//! let mut buf = [0u8; MAX_DATAGRAM];
//! while let Some(t) = phone.poll_transmit(&mut buf) {
//!     // socket.send_to(&buf[..t.len], t.to)
//!     assert_eq!(t.to, "198.51.100.7:30000".parse()?); // latched
//! }
//! assert!(n > 0);
//! # Ok(())
//! # }
//! ```

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rtcp_types::{
    Compound, CompoundBuilder, Packet as RtcpPacket, ReceiverReport, ReportBlock,
    RtcpPacketWriterExt, Sdes, SdesChunk, SdesItem, SenderReport,
};
use rtp_types::{RtpPacket, RtpPacketBuilder};

use crate::dtmf::{DtmfDigit, DtmfError, DtmfReceiver, DtmfSender};
use crate::g711::G711;
use crate::jitter::JitterConfig;
use crate::transcode::{FrameSource, G711Inbound, RtpMeta, FRAME_8K};

/// RTP clock of G.711 and of telephone-event on phone legs.
pub const CLOCK: u32 = 8000;
/// Largest datagram this leg writes.
pub const MAX_DATAGRAM: usize = 512;
const QUEUE: usize = 16;

/// Settings of one phone leg.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpLegConfig {
    /// G.711 law negotiated in SDP.
    pub law: G711,
    /// Dynamic payload type of telephone-event/8000, if negotiated.
    pub dtmf_pt: Option<u8>,
    /// Our SSRC (random, chosen by the caller).
    pub ssrc: u32,
    /// First sequence number (random).
    pub initial_seq: u16,
    /// First RTP timestamp (random).
    pub initial_timestamp: u32,
    /// RTP address from the remote SDP, used until a packet latches.
    pub remote_rtp: SocketAddr,
    /// RTCP address from the remote SDP (port + 1, or the RTP address with rtcp-mux).
    pub remote_rtcp: SocketAddr,
    /// RTCP canonical name.
    pub cname: String,
    /// Silence of the latched source after which another source may take over.
    pub relatch_after: Duration,
    /// No RTP for this long raises [`LegEvent::Inactive`]; `None` disables (e.g. on hold).
    pub inactivity_timeout: Option<Duration>,
    /// Mean RTCP report interval (RFC 3550 minimum 5 s), randomized by +-50 %.
    pub rtcp_interval: Duration,
    /// Inbound jitter buffer settings.
    pub jitter: JitterConfig,
    /// Whether the remote takes our RTP. A remote that is sendonly or inactive (on hold) must
    /// get none (RFC 3264 section 5.1): the media clock runs on, key presses due are dropped,
    /// RTCP still goes out.
    pub send: bool,
}

impl RtpLegConfig {
    /// Defaults around the negotiated essentials.
    pub fn new(law: G711, ssrc: u32, remote_rtp: SocketAddr) -> RtpLegConfig {
        let mut remote_rtcp = remote_rtp;
        remote_rtcp.set_port(remote_rtp.port().wrapping_add(1));
        RtpLegConfig {
            law,
            dtmf_pt: Some(101),
            ssrc,
            initial_seq: (ssrc >> 16) as u16,
            initial_timestamp: ssrc.rotate_left(11),
            remote_rtp,
            remote_rtcp,
            cname: format!("dialbridge-{ssrc:08x}"),
            relatch_after: Duration::from_millis(500),
            inactivity_timeout: Some(Duration::from_secs(30)),
            rtcp_interval: Duration::from_secs(5),
            jitter: JitterConfig::new(CLOCK),
            send: true,
        }
    }
}

/// Something the call logic should know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LegEvent {
    /// We now send RTP to this address (first packet, or a source change).
    Latched(SocketAddr),
    /// A DTMF key press (reported once).
    Dtmf(DtmfDigit),
    /// No RTP for the inactivity timeout.
    Inactive,
    /// RTP resumed after [`LegEvent::Inactive`].
    Active,
    /// The remote sent RTCP BYE.
    Bye,
}

/// A datagram to send, written into the caller's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transmit {
    /// Destination.
    pub to: SocketAddr,
    /// RTCP (to the RTCP port) rather than RTP.
    pub rtcp: bool,
    /// Bytes written.
    pub len: usize,
}

/// Why a datagram was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LegError {
    /// Not a parseable RTP packet.
    #[error("bad RTP packet: {0}")]
    Rtp(String),
    /// Not a parseable RTCP compound packet.
    #[error("bad RTCP packet: {0}")]
    Rtcp(String),
    /// A payload type that was not negotiated.
    #[error("unexpected RTP payload type {0}")]
    PayloadType(u8),
    /// From an address other than the latched source, which is still alive.
    #[error("RTP from {0}, not the latched source")]
    NotLatched(SocketAddr),
    /// A malformed telephone-event payload.
    #[error(transparent)]
    Dtmf(#[from] DtmfError),
}

/// What the remote last reported about our stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RemoteReport {
    /// Fraction lost, 0..=255 (/256).
    pub fraction_lost: u8,
    /// Cumulative packets lost.
    pub cumulative_lost: u32,
    /// Interarrival jitter in RTP units.
    pub jitter: u32,
}

/// `t + d`, or a point a year on when a configured duration is too large to add.
fn later(t: Instant, d: Duration) -> Instant {
    t.checked_add(d)
        .or_else(|| t.checked_add(Duration::from_secs(365 * 24 * 3600)))
        .unwrap_or(t)
}

#[derive(Debug, Clone, Copy)]
struct Outgoing {
    to: SocketAddr,
    rtcp: bool,
    len: usize,
    buf: [u8; MAX_DATAGRAM],
}

/// See the module documentation.
#[derive(Debug)]
pub struct RtpLeg {
    cfg: RtpLegConfig,
    inbound: G711Inbound,
    dtmf_rx: DtmfReceiver,
    dtmf_tx: DtmfSender,
    // Outbound stream state.
    seq: u16,
    timestamp: u32,
    sent_packets: u32,
    sent_octets: u32,
    sent_since_report: bool,
    first_sent: bool,
    // Time and RTP timestamp of the last frame slot, to place `now` on our media clock.
    last_slot: Option<(Instant, u32)>,
    // Latching.
    latched: Option<SocketAddr>,
    latched_rtcp: Option<SocketAddr>,
    last_rtp: Option<Instant>,
    /// Inactivity counts from the later of this and the last RTP: the leg's start, or the
    /// last renegotiation.
    quiet_since: Instant,
    inactive: bool,
    remote_ssrc: Option<u32>,
    // RTCP.
    wall_base: (Instant, SystemTime),
    next_rtcp: Instant,
    rtcp_round: u32,
    last_sr: Option<(u32, Instant)>,
    prior: (u64, u64),
    remote_report: Option<RemoteReport>,
    queue: VecDeque<Outgoing>,
    events: VecDeque<LegEvent>,
    // Direct path of a two-party room: the last audio packet, decoded, for the driver to take.
    forwarding: bool,
    forward: Option<RtpMeta>,
    forward_pcm: [i16; MAX_FORWARD],
    forward_len: usize,
}

/// Most samples of one forwarded packet (60 ms at 8 kHz).
pub const MAX_FORWARD: usize = 480;

impl RtpLeg {
    /// A leg starting at `now`; `wall` is the wall clock at `now` (for RTCP NTP timestamps).
    pub fn new(now: Instant, wall: SystemTime, cfg: RtpLegConfig) -> RtpLeg {
        let inbound = G711Inbound::with_jitter(cfg.law, cfg.jitter);
        let first_rtcp = later(now, cfg.rtcp_interval / 2);
        RtpLeg {
            inbound,
            dtmf_rx: DtmfReceiver::new(),
            dtmf_tx: DtmfSender::new(CLOCK, Duration::from_millis(20)),
            seq: cfg.initial_seq,
            timestamp: cfg.initial_timestamp,
            sent_packets: 0,
            sent_octets: 0,
            sent_since_report: false,
            first_sent: false,
            last_slot: None,
            latched: None,
            latched_rtcp: None,
            last_rtp: None,
            quiet_since: now,
            inactive: false,
            remote_ssrc: None,
            wall_base: (now, wall),
            next_rtcp: first_rtcp,
            rtcp_round: 0,
            last_sr: None,
            prior: (0, 0),
            remote_report: None,
            queue: VecDeque::with_capacity(QUEUE),
            events: VecDeque::with_capacity(QUEUE),
            forwarding: false,
            forward: None,
            forward_pcm: [0; MAX_FORWARD],
            forward_len: 0,
            cfg,
        }
    }

    /// Where RTP goes now.
    pub fn rtp_destination(&self) -> SocketAddr {
        self.latched.unwrap_or(self.cfg.remote_rtp)
    }

    /// Our SSRC.
    pub fn ssrc(&self) -> u32 {
        self.cfg.ssrc
    }

    /// The remote's last report about our stream (feeds Opus FEC tuning on the other side).
    pub fn remote_report(&self) -> Option<RemoteReport> {
        self.remote_report
    }

    /// The inbound audio path (jitter and decode statistics).
    pub fn inbound(&self) -> &G711Inbound {
        &self.inbound
    }

    /// After an SDP change: new remote addresses, and the next valid packet latches again.
    pub fn relatch(&mut self, remote_rtp: SocketAddr, remote_rtcp: SocketAddr) {
        self.cfg.remote_rtp = remote_rtp;
        self.cfg.remote_rtcp = remote_rtcp;
        self.latched = None;
        self.latched_rtcp = None;
    }

    /// Enables, changes or (with `None`) disables the inactivity timeout.
    pub fn set_inactivity_timeout(&mut self, timeout: Option<Duration>) {
        self.cfg.inactivity_timeout = timeout;
    }

    /// A datagram from the network, RTP or RTCP (told apart as RFC 5761 does, so rtcp-mux
    /// works on the same socket).
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        bytes: &[u8],
    ) -> Result<(), LegError> {
        match bytes.get(1) {
            Some(pt) if (192..=223).contains(pt) => self.handle_rtcp(now, from, bytes),
            _ => self.handle_rtp(now, from, bytes),
        }
    }

    fn handle_rtp(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) -> Result<(), LegError> {
        let pkt = RtpPacket::parse(bytes).map_err(|e| LegError::Rtp(format!("{e:?}")))?;
        let pt = pkt.payload_type();
        let is_audio = pt == self.cfg.law.payload_type();
        let is_dtmf = self.cfg.dtmf_pt == Some(pt);
        if !is_audio && !is_dtmf {
            return Err(LegError::PayloadType(pt));
        }
        match self.latched {
            Some(addr) if addr == from => {}
            Some(_) if from == self.cfg.remote_rtp => self.latch(from),
            Some(_) => {
                let silent = self
                    .last_rtp
                    .is_none_or(|t| now.saturating_duration_since(t) >= self.cfg.relatch_after);
                if !silent {
                    return Err(LegError::NotLatched(from));
                }
                self.latch(from);
            }
            None => self.latch(from),
        }
        self.last_rtp = Some(now);
        if self.inactive {
            self.inactive = false;
            self.events.push_back(LegEvent::Active);
        }
        let ssrc = pkt.ssrc();
        if self.remote_ssrc.is_some_and(|s| s != ssrc) {
            self.dtmf_rx.reset();
        }
        self.remote_ssrc = Some(ssrc);
        let meta = RtpMeta {
            seq: pkt.sequence_number(),
            timestamp: pkt.timestamp(),
            marker: pkt.marker_bit(),
            ssrc,
        };
        if is_dtmf {
            // Events share the audio's sequence space: keep them out of the loss count.
            self.inbound.insert_no_audio(now, meta);
            if let Some(d) = self.dtmf_rx.handle_packet(pkt.timestamp(), pkt.payload())? {
                self.events.push_back(LegEvent::Dtmf(d));
            }
        } else {
            self.inbound.insert(now, meta, pkt.payload());
            if self.forwarding {
                let payload = pkt.payload();
                let n = payload.len().min(MAX_FORWARD);
                self.forward_len = self.cfg.law.decode(&payload[..n], &mut self.forward_pcm);
                self.forward = Some(meta);
            }
        }
        Ok(())
    }

    fn latch(&mut self, from: SocketAddr) {
        self.latched = Some(from);
        self.events.push_back(LegEvent::Latched(from));
    }

    fn handle_rtcp(
        &mut self,
        now: Instant,
        from: SocketAddr,
        bytes: &[u8],
    ) -> Result<(), LegError> {
        let compound = Compound::parse(bytes).map_err(|e| LegError::Rtcp(format!("{e:?}")))?;
        // RTCP is latched like RTP, but only while RTP has latched to the same host.
        if self.latched.is_some_and(|a| a.ip() == from.ip()) {
            self.latched_rtcp = Some(from);
        }
        for packet in compound {
            let packet = packet.map_err(|e| LegError::Rtcp(format!("{e:?}")))?;
            match packet {
                RtcpPacket::Sr(sr) => {
                    // LSR is the middle 32 bits of the NTP timestamp (RFC 3550 6.4.1).
                    self.last_sr = Some(((sr.ntp_timestamp() >> 16) as u32, now));
                    self.note_blocks(sr.report_blocks());
                }
                RtcpPacket::Rr(rr) => self.note_blocks(rr.report_blocks()),
                RtcpPacket::Bye(_) => self.events.push_back(LegEvent::Bye),
                _ => {}
            }
        }
        Ok(())
    }

    fn note_blocks<'a>(&mut self, blocks: impl Iterator<Item = ReportBlock<'a>>) {
        for b in blocks {
            if b.ssrc() == self.cfg.ssrc {
                self.remote_report = Some(RemoteReport {
                    fraction_lost: b.fraction_lost(),
                    cumulative_lost: b.cumulative_lost(),
                    jitter: b.interarrival_jitter(),
                });
            }
        }
    }

    /// Follows a renegotiation (a re-INVITE) in place: new addresses (the latch opens again
    /// for them), telephone-event type, whether the remote takes RTP, inactivity timeout, which
    /// counts from `now` again. Our SSRC, sequence numbers and timestamps run on, so a session
    /// refresh or a hold is no new stream to the remote. A new law needs a new leg: false
    /// then, and nothing changed.
    pub fn renegotiate(&mut self, now: Instant, cfg: &RtpLegConfig) -> bool {
        if cfg.law != self.cfg.law {
            return false;
        }
        if (cfg.remote_rtp, cfg.remote_rtcp) != (self.cfg.remote_rtp, self.cfg.remote_rtcp) {
            self.latched = None;
            self.latched_rtcp = None;
        }
        if cfg.send && !self.cfg.send {
            // The first packet after a pause starts a talkspurt.
            self.first_sent = false;
        }
        self.cfg.remote_rtp = cfg.remote_rtp;
        self.cfg.remote_rtcp = cfg.remote_rtcp;
        self.cfg.dtmf_pt = cfg.dtmf_pt;
        self.cfg.send = cfg.send;
        self.cfg.inactivity_timeout = cfg.inactivity_timeout;
        self.quiet_since = now;
        self.inactive = false;
        true
    }

    /// Turns the direct path on or off: while on, each audio packet received is also decoded
    /// at once for [`RtpLeg::take_forward`] (the jitter buffer is fed as ever, so mixing can
    /// take over without a gap).
    pub fn set_forwarding(&mut self, on: bool) {
        self.forwarding = on;
        self.forward = None;
    }

    /// The audio packet received by the last [`RtpLeg::handle_datagram`], decoded to 8 kHz,
    /// once.
    pub fn take_forward(&mut self) -> Option<(RtpMeta, &[i16])> {
        let meta = self.forward.take()?;
        Some((meta, self.forward_pcm.get(..self.forward_len)?))
    }

    /// Advances the outbound media clock by `frames` 20 ms frames without sending (frames lost
    /// upstream of a direct path: the phone conceals them).
    pub fn skip_frames(&mut self, frames: u32) {
        self.timestamp = self
            .timestamp
            .wrapping_add((FRAME_8K as u32).wrapping_mul(frames));
    }

    /// Whether a DTMF digit is being sent (audio is replaced meanwhile).
    pub fn is_sending_dtmf(&self) -> bool {
        self.dtmf_tx.is_active()
    }

    /// This tick's inbound 8 kHz frame (jitter buffer, decode, concealment).
    pub fn tick(&mut self, now: Instant) -> (&[i16; FRAME_8K], FrameSource) {
        self.inbound.tick(now)
    }

    /// Starts sending a DTMF digit; audio is replaced by telephone-event packets until the
    /// event is over. Fails when no telephone-event type was negotiated or for a non-digit.
    pub fn send_dtmf(
        &mut self,
        now: Instant,
        digit: char,
        duration: Duration,
    ) -> Result<(), LegError> {
        if self.cfg.dtmf_pt.is_none() {
            return Err(LegError::PayloadType(101));
        }
        // The event starts at the timestamp of the next frame.
        Ok(self.dtmf_tx.start(now, digit, duration, self.timestamp)?)
    }

    /// Sends this tick's 20 ms of audio (or the DTMF packet due instead). Call every 20 ms.
    pub fn send_audio(&mut self, now: Instant, pcm: &[i16; FRAME_8K]) {
        let dest = self.rtp_destination();
        let mut dtmf_sent = false;
        if let Some(pt) = self.cfg.dtmf_pt {
            while let Some(ev) = self.dtmf_tx.poll_packet(now) {
                if self.cfg.send {
                    let payload = ev.payload.to_bytes();
                    self.push_rtp(dest, pt, ev.marker, ev.timestamp, &payload);
                    dtmf_sent = true;
                }
            }
        }
        if self.cfg.send && !dtmf_sent && !self.dtmf_tx.is_active() {
            let mut payload = [0u8; FRAME_8K];
            self.cfg.law.encode(pcm, &mut payload);
            let marker = !self.first_sent;
            let (pt, ts) = (self.cfg.law.payload_type(), self.timestamp);
            self.push_rtp(dest, pt, marker, ts, &payload);
        }
        self.last_slot = Some((now, self.timestamp));
        // The media clock runs on whether audio or events were sent.
        self.timestamp = self.timestamp.wrapping_add(FRAME_8K as u32);
    }

    fn push_rtp(&mut self, to: SocketAddr, pt: u8, marker: bool, ts: u32, payload: &[u8]) {
        if to.ip().is_unspecified() || to.port() == 0 {
            // On hold the old way (c=0.0.0.0) or port 0: nothing to send to.
            return;
        }
        let mut out = Outgoing {
            to,
            rtcp: false,
            len: 0,
            buf: [0; MAX_DATAGRAM],
        };
        let written = RtpPacketBuilder::<&[u8], &[u8]>::new()
            .payload_type(pt)
            .sequence_number(self.seq)
            .timestamp(ts)
            .ssrc(self.cfg.ssrc)
            .marker_bit(marker)
            .payload(payload)
            .write_into(&mut out.buf);
        if let Ok(len) = written {
            out.len = len;
            self.seq = self.seq.wrapping_add(1);
            self.sent_packets = self.sent_packets.wrapping_add(1);
            self.sent_octets = self.sent_octets.wrapping_add(payload.len() as u32);
            self.sent_since_report = true;
            self.first_sent = true;
            self.enqueue(out);
        }
    }

    fn enqueue(&mut self, out: Outgoing) {
        // A driver that stops draining loses the oldest packets, not memory.
        if self.queue.len() >= QUEUE {
            self.queue.pop_front();
        }
        self.queue.push_back(out);
    }

    /// Next datagram to send, copied into `buf` (at least [`MAX_DATAGRAM`] bytes).
    pub fn poll_transmit(&mut self, buf: &mut [u8]) -> Option<Transmit> {
        let out = self.queue.front()?;
        let dst = buf.get_mut(..out.len)?;
        dst.copy_from_slice(&out.buf[..out.len]);
        let t = Transmit {
            to: out.to,
            rtcp: out.rtcp,
            len: out.len,
        };
        self.queue.pop_front();
        Some(t)
    }

    /// Next event for the call logic.
    pub fn poll_event(&mut self) -> Option<LegEvent> {
        self.events.pop_front()
    }

    /// When [`RtpLeg::handle_timeout`] wants to run next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let inactivity = self.inactivity_deadline().filter(|_| !self.inactive);
        Some(inactivity.map_or(self.next_rtcp, |t| t.min(self.next_rtcp)))
    }

    fn inactivity_deadline(&self) -> Option<Instant> {
        let timeout = self.cfg.inactivity_timeout?;
        let since = self
            .last_rtp
            .map_or(self.quiet_since, |t| t.max(self.quiet_since));
        Some(later(since, timeout))
    }

    /// Runs timers: inactivity and RTCP reports.
    pub fn handle_timeout(&mut self, now: Instant) {
        if !self.inactive && self.inactivity_deadline().is_some_and(|t| now >= t) {
            self.inactive = true;
            self.events.push_back(LegEvent::Inactive);
        }
        if now >= self.next_rtcp {
            self.send_report(now, false);
            // RFC 3550 6.3.1: randomize over [0.5, 1.5] x the interval (deterministic spread).
            self.rtcp_round = self.rtcp_round.wrapping_add(1);
            let spread = (self.cfg.ssrc ^ self.rtcp_round.wrapping_mul(0x9E37_79B9)) % 1001;
            let factor = 0.5 + spread as f64 / 1000.0;
            let interval =
                Duration::try_from_secs_f64(self.cfg.rtcp_interval.as_secs_f64() * factor)
                    .unwrap_or(self.cfg.rtcp_interval);
            self.next_rtcp = later(now, interval);
        }
    }

    fn ntp(&self, now: Instant) -> u64 {
        let wall = self.wall_base.1 + now.saturating_duration_since(self.wall_base.0);
        let since_unix = wall.duration_since(UNIX_EPOCH).unwrap_or_default();
        let secs = since_unix.as_secs().wrapping_add(2_208_988_800);
        let frac = ((since_unix.subsec_nanos() as u64) << 32) / 1_000_000_000;
        (secs << 32) | frac
    }

    fn report_block(&mut self, now: Instant) -> Option<rtcp_types::ReportBlockBuilder> {
        let remote = self.remote_ssrc?;
        let jb = self.inbound.jitter_buffer();
        let s = jb.stats();
        let received = s.received - s.duplicates;
        let expected = s.lost + received;
        let (exp_prior, rec_prior) = self.prior;
        self.prior = (expected, received);
        let exp_int = expected.saturating_sub(exp_prior);
        let lost_int = exp_int.saturating_sub(received.saturating_sub(rec_prior));
        let fraction = (lost_int << 8)
            .checked_div(exp_int)
            .map_or(0, |f| f.min(255) as u8);
        let (lsr, dlsr) = match self.last_sr {
            Some((lsr, at)) => {
                let d = now.saturating_duration_since(at);
                (lsr, (d.as_micros() as u64 * 65536 / 1_000_000) as u32)
            }
            None => (0, 0),
        };
        Some(
            ReportBlock::builder(remote)
                .fraction_lost(fraction)
                .cumulative_lost(s.lost.min(0x7F_FFFF) as u32)
                .extended_sequence_number(jb.highest_ext_seq())
                .interarrival_jitter(jb.jitter())
                .last_sender_report_timestamp(lsr)
                .delay_since_last_sender_report_timestamp(dlsr),
        )
    }

    /// Ends the session: queues a last report with an RTCP BYE (RFC 3550 section 6.6).
    pub fn close(&mut self, now: Instant) {
        self.send_report(now, true);
    }

    fn send_report(&mut self, now: Instant, bye: bool) {
        let block = self.report_block(now);
        let ssrc = self.cfg.ssrc;
        let mut compound = CompoundBuilder::default();
        if self.sent_since_report {
            // The RTP timestamp that corresponds to `now` on our media clock.
            let rtp_now = self.last_slot.map_or(self.timestamp, |(at, ts)| {
                let units =
                    now.saturating_duration_since(at).as_micros() * CLOCK as u128 / 1_000_000;
                ts.wrapping_add(units as u32)
            });
            let mut sr = SenderReport::builder(ssrc)
                .ntp_timestamp(self.ntp(now))
                .rtp_timestamp(rtp_now)
                .packet_count(self.sent_packets)
                .octet_count(self.sent_octets);
            if let Some(b) = block {
                sr = sr.add_report_block(b);
            }
            compound = compound.add_packet(sr);
        } else {
            let mut rr = ReceiverReport::builder(ssrc);
            if let Some(b) = block {
                rr = rr.add_report_block(b);
            }
            compound = compound.add_packet(rr);
        }
        self.sent_since_report = false;
        let sdes = Sdes::builder().add_chunk(
            SdesChunk::builder(ssrc).add_item(SdesItem::builder(SdesItem::CNAME, &self.cfg.cname)),
        );
        compound = compound.add_packet(sdes);
        if bye {
            compound = compound.add_packet(rtcp_types::Bye::builder().add_source(ssrc));
        }
        let mut out = Outgoing {
            to: self.latched_rtcp.unwrap_or(self.cfg.remote_rtcp),
            rtcp: true,
            len: 0,
            buf: [0; MAX_DATAGRAM],
        };
        let written = compound.write_into(&mut out.buf);
        drop(compound);
        if let Ok(len) = written {
            out.len = len;
            self.enqueue(out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtmf::EventPayload;
    use crate::testing::{tone_ratio, Sine};
    use proptest::prelude::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap_or_else(|e| panic!("{e}"))
    }

    fn leg(t0: Instant) -> RtpLeg {
        let cfg = RtpLegConfig {
            initial_seq: 65534,
            initial_timestamp: 1000,
            ..RtpLegConfig::new(G711::Pcmu, 0xAABBCCDD, addr("192.0.2.1:4000"))
        };
        RtpLeg::new(t0, UNIX_EPOCH + Duration::from_secs(1_700_000_000), cfg)
    }

    fn rtp(pt: u8, seq: u16, ts: u32, marker: bool, ssrc: u32, payload: &[u8]) -> Vec<u8> {
        RtpPacketBuilder::<&[u8], &[u8]>::new()
            .payload_type(pt)
            .sequence_number(seq)
            .timestamp(ts)
            .ssrc(ssrc)
            .marker_bit(marker)
            .payload(payload)
            .write_vec()
            .unwrap_or_default()
    }

    fn drain(leg: &mut RtpLeg) -> Vec<(Transmit, Vec<u8>)> {
        let mut out = Vec::new();
        let mut buf = [0u8; MAX_DATAGRAM];
        while let Some(t) = leg.poll_transmit(&mut buf) {
            out.push((t, buf[..t.len].to_vec()));
        }
        out
    }

    fn events(leg: &mut RtpLeg) -> Vec<LegEvent> {
        std::iter::from_fn(|| leg.poll_event()).collect()
    }

    #[test]
    fn sends_20ms_pcmu_packets_with_our_ssrc_seq_and_timestamps() {
        let t0 = Instant::now();
        let mut leg = leg(t0);
        let mut gen = Sine::new(440.0, 8000, 8000);
        for i in 0..3u64 {
            let mut f = [0i16; FRAME_8K];
            gen.fill(&mut f);
            leg.send_audio(t0 + Duration::from_millis(20 * i), &f);
        }
        let sent = drain(&mut leg);
        assert_eq!(sent.len(), 3);
        let mut decoded = Vec::new();
        for (i, (t, bytes)) in sent.iter().enumerate() {
            assert_eq!((t.to, t.rtcp), (addr("192.0.2.1:4000"), false));
            let p = RtpPacket::parse(bytes).unwrap_or_else(|e| panic!("{e:?}"));
            assert_eq!(p.payload_type(), 0);
            assert_eq!(p.ssrc(), 0xAABBCCDD);
            assert_eq!(p.sequence_number(), 65534u16.wrapping_add(i as u16));
            assert_eq!(p.timestamp(), 1000 + 160 * i as u32);
            assert_eq!(p.marker_bit(), i == 0);
            assert_eq!(p.payload().len(), 160);
            let mut pcm = [0i16; 160];
            G711::Pcmu.decode(p.payload(), &mut pcm);
            decoded.extend_from_slice(&pcm);
        }
        assert!(tone_ratio(&decoded, 440.0, 8000) > 0.95);
    }

    #[test]
    fn latches_to_the_first_source_and_moves_only_after_silence() {
        let t0 = Instant::now();
        let mut leg = leg(t0);
        let a = addr("198.51.100.7:30000");
        let b = addr("198.51.100.9:30002");
        let pkt = |seq: u16| rtp(0, seq, seq as u32 * 160, false, 7, &[0xFF; 160]);
        assert_eq!(leg.rtp_destination(), addr("192.0.2.1:4000"));
        assert_eq!(leg.handle_datagram(t0, a, &pkt(1)), Ok(()));
        assert_eq!(events(&mut leg), vec![LegEvent::Latched(a)]);
        assert_eq!(leg.rtp_destination(), a);
        // Another source while A is alive: dropped.
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(
            leg.handle_datagram(t1, b, &pkt(2)),
            Err(LegError::NotLatched(b))
        );
        assert_eq!(leg.rtp_destination(), a);
        // A falls silent for 500 ms: B takes over.
        let t2 = t0 + Duration::from_millis(600);
        assert_eq!(leg.handle_datagram(t2, b, &pkt(3)), Ok(()));
        assert_eq!(events(&mut leg), vec![LegEvent::Latched(b)]);
        leg.send_audio(t2, &[0; FRAME_8K]);
        assert_eq!(drain(&mut leg)[0].0.to, b);
        // After an SDP change the next packet latches whatever its source.
        leg.relatch(addr("192.0.2.50:5000"), addr("192.0.2.50:5001"));
        assert_eq!(leg.rtp_destination(), addr("192.0.2.50:5000"));
        assert_eq!(leg.handle_datagram(t2, a, &pkt(4)), Ok(()));
        assert_eq!(events(&mut leg), vec![LegEvent::Latched(a)]);
    }

    #[test]
    fn the_sdp_address_takes_the_latch_from_a_stray_source() {
        let t0 = Instant::now();
        let mut leg = leg(t0);
        let signalled = addr("192.0.2.1:4000");
        let stray = addr("198.51.100.7:30000");
        let pkt = |seq: u16, ssrc: u32| rtp(0, seq, seq as u32 * 160, false, ssrc, &[0xFF; 160]);
        // An earlier call's peer still sends to this port: it latches first.
        assert_eq!(leg.handle_datagram(t0, stray, &pkt(1, 9)), Ok(()));
        assert_eq!(leg.rtp_destination(), stray);
        // The phone the SDP names speaks: it wins at once, and the stray source is dropped.
        let t1 = t0 + Duration::from_millis(20);
        assert_eq!(leg.handle_datagram(t1, signalled, &pkt(100, 7)), Ok(()));
        assert_eq!(
            events(&mut leg),
            vec![LegEvent::Latched(stray), LegEvent::Latched(signalled)]
        );
        assert_eq!(leg.rtp_destination(), signalled);
        let t2 = t1 + Duration::from_millis(20);
        assert_eq!(
            leg.handle_datagram(t2, stray, &pkt(2, 9)),
            Err(LegError::NotLatched(stray))
        );
        leg.send_audio(t2, &[0; FRAME_8K]);
        assert_eq!(drain(&mut leg)[0].0.to, signalled);
    }

    #[test]
    fn rejects_garbage_and_unnegotiated_payload_types() {
        let t0 = Instant::now();
        let mut leg = leg(t0);
        let a = addr("198.51.100.7:30000");
        assert!(matches!(
            leg.handle_datagram(t0, a, &[1, 2, 3]),
            Err(LegError::Rtp(_))
        ));
        assert_eq!(
            leg.handle_datagram(t0, a, &rtp(8, 1, 0, false, 7, &[0; 160])),
            Err(LegError::PayloadType(8))
        );
        // Garbage does not latch.
        assert_eq!(events(&mut leg), vec![]);
        assert!(matches!(
            leg.handle_datagram(t0, a, &[0x80, 200, 0, 10]),
            Err(LegError::Rtcp(_))
        ));
    }

    #[test]
    fn inactivity_is_reported_once_and_cleared_by_rtp() {
        let t0 = Instant::now();
        let mut leg = leg(t0);
        leg.set_inactivity_timeout(Some(Duration::from_secs(2)));
        let a = addr("198.51.100.7:30000");
        let _ = leg.handle_datagram(t0, a, &rtp(0, 1, 0, true, 7, &[0xFF; 160]));
        let _ = events(&mut leg);
        let mut now = t0;
        let mut seen = Vec::new();
        while now < t0 + Duration::from_secs(5) {
            if let Some(t) = leg.poll_timeout() {
                now = t.max(now + Duration::from_millis(1));
            }
            leg.handle_timeout(now);
            seen.extend(events(&mut leg).into_iter().map(|e| (now - t0, e)));
        }
        assert_eq!(seen, vec![(Duration::from_secs(2), LegEvent::Inactive)]);
        let _ = leg.handle_datagram(now, a, &rtp(0, 2, 160, false, 7, &[0xFF; 160]));
        assert_eq!(events(&mut leg), vec![LegEvent::Active]);
        leg.set_inactivity_timeout(None);
        leg.handle_timeout(now + Duration::from_secs(60));
        assert_eq!(events(&mut leg), vec![]);
    }

    #[test]
    fn dtmf_replaces_audio_then_audio_resumes_on_the_media_clock() {
        let t0 = Instant::now();
        let mut leg = leg(t0);
        leg.send_audio(t0, &[0; FRAME_8K]);
        let t1 = t0 + Duration::from_millis(20);
        assert_eq!(leg.send_dtmf(t1, '9', Duration::from_millis(60)), Ok(()));
        for i in 1..9u64 {
            leg.send_audio(t0 + Duration::from_millis(20 * i), &[0; FRAME_8K]);
        }
        let sent: Vec<(u8, bool, u32, Vec<u8>)> = drain(&mut leg)
            .iter()
            .filter_map(|(_, b)| {
                RtpPacket::parse(b).ok().map(|p| {
                    (
                        p.payload_type(),
                        p.marker_bit(),
                        p.timestamp(),
                        p.payload().to_vec(),
                    )
                })
            })
            .collect();
        let kinds: Vec<(u8, bool, u32)> = sent.iter().map(|s| (s.0, s.1, s.2)).collect();
        assert_eq!(
            kinds,
            vec![
                (0, true, 1000),
                (101, true, 1160),
                (101, false, 1160),
                (101, false, 1160),
                (101, false, 1160),
                (101, false, 1160),
                (101, false, 1160),
                (0, false, 1000 + 7 * 160),
                (0, false, 1000 + 8 * 160),
            ]
        );
        let payloads: Vec<EventPayload> = sent[1..7]
            .iter()
            .filter_map(|s| EventPayload::parse(&s.3).ok())
            .collect();
        assert!(payloads.iter().all(|p| p.event == 9));
        assert_eq!(
            payloads
                .iter()
                .map(|p| (p.end, p.duration))
                .collect::<Vec<_>>(),
            vec![
                (false, 0),
                (false, 160),
                (false, 320),
                (true, 480),
                (true, 480),
                (true, 480)
            ]
        );
    }

    #[test]
    fn received_dtmf_is_one_event_per_press() {
        let t0 = Instant::now();
        let mut leg = leg(t0);
        let a = addr("198.51.100.7:30000");
        let ev = |end: bool, d: u16| {
            EventPayload {
                event: 11,
                end,
                volume: 10,
                duration: d,
            }
            .to_bytes()
        };
        for (seq, (end, d)) in [
            (false, 0),
            (false, 160),
            (true, 320),
            (true, 320),
            (true, 320),
        ]
        .into_iter()
        .enumerate()
        {
            let _ =
                leg.handle_datagram(t0, a, &rtp(101, seq as u16, 5000, seq == 0, 7, &ev(end, d)));
        }
        let digits: Vec<Option<char>> = events(&mut leg)
            .into_iter()
            .filter_map(|e| match e {
                LegEvent::Dtmf(d) => Some(d.digit()),
                _ => None,
            })
            .collect();
        assert_eq!(digits, vec![Some('#')]);
    }

    #[test]
    fn events_sent_instead_of_audio_are_not_loss() {
        let t0 = Instant::now();
        let mut leg = leg(t0);
        let a = addr("198.51.100.7:30000");
        let ev = EventPayload {
            event: 1,
            end: false,
            volume: 10,
            duration: 0,
        }
        .to_bytes();
        let mut sources = Vec::new();
        for i in 0..15u16 {
            let now = t0 + Duration::from_millis(20 * i as u64);
            let pkt = if (5..10).contains(&i) {
                rtp(101, i, 800, i == 5, 7, &ev)
            } else {
                rtp(0, i, i as u32 * 160, i == 0, 7, &[0xFF; 160])
            };
            assert_eq!(leg.handle_datagram(now, a, &pkt), Ok(()));
            sources.push(leg.tick(now).1);
        }
        let s = leg.inbound().jitter_stats();
        assert_eq!((s.lost, s.concealed), (0, 0));
        assert_eq!(
            sources
                .iter()
                .filter(|s| **s == FrameSource::Silence)
                .count(),
            5
        );
    }

    #[test]
    fn rtcp_reports_carry_our_counts_and_the_remote_stream_stats() {
        let t0 = Instant::now();
        let mut leg = leg(t0);
        let a = addr("198.51.100.7:30000");
        // Remote sends 10 packets with one missing (seq 4), we send 10.
        for i in 0..10u16 {
            let now = t0 + Duration::from_millis(20 * i as u64);
            if i != 4 {
                let _ = leg.handle_datagram(
                    now,
                    a,
                    &rtp(0, 100 + i, i as u32 * 160, i == 0, 77, &[0xFF; 160]),
                );
            }
            leg.send_audio(now, &[0; FRAME_8K]);
            let _ = leg.tick(now);
        }
        // The remote's SR arrives; our report goes out 250 ms later.
        let sr = Compound::builder()
            .add_packet(SenderReport::builder(77).ntp_timestamp(0x1122_3344_5566_7788));
        let mut buf = [0u8; 128];
        let n = sr.write_into(&mut buf).unwrap_or(0);
        let t_sr = t0 + Duration::from_millis(2250);
        assert_eq!(
            leg.handle_datagram(t_sr, addr("198.51.100.7:30001"), &buf[..n]),
            Ok(())
        );
        let _ = drain(&mut leg);
        leg.handle_timeout(t0 + Duration::from_millis(2500));
        let sent = drain(&mut leg);
        assert_eq!(sent.len(), 1);
        let (t, bytes) = &sent[0];
        assert!(t.rtcp);
        assert_eq!(
            t.to,
            addr("198.51.100.7:30001"),
            "RTCP latched with RTP's host"
        );
        let mut saw_sr = false;
        let mut saw_cname = false;
        for p in Compound::parse(bytes).unwrap_or_else(|e| panic!("{e:?}")) {
            match p.unwrap_or_else(|e| panic!("{e:?}")) {
                RtcpPacket::Sr(sr) => {
                    saw_sr = true;
                    assert_eq!(sr.ssrc(), 0xAABBCCDD);
                    assert_eq!(sr.packet_count(), 10);
                    assert_eq!(sr.octet_count(), 1600);
                    // Our media clock at the report's wall-clock time (2.5 s after the start).
                    assert_eq!(sr.rtp_timestamp(), 1000 + 2500 * 8);
                    // 2.5 s after 1_700_000_000 s Unix time, in NTP.
                    assert_eq!(sr.ntp_timestamp() >> 32, 1_700_000_002 + 2_208_988_800);
                    assert_eq!(sr.ntp_timestamp() & 0xFFFF_FFFF, 1 << 31);
                    let blocks: Vec<_> = sr.report_blocks().collect();
                    assert_eq!(blocks.len(), 1);
                    let b = &blocks[0];
                    assert_eq!(b.ssrc(), 77);
                    assert_eq!(b.cumulative_lost(), 1);
                    assert_eq!(b.fraction_lost(), 25); // 1 of 10 lost, in 1/256
                    assert_eq!(b.extended_sequence_number(), 109);
                    assert_eq!(b.last_sender_report_timestamp(), 0x3344_5566);
                    assert_eq!(b.delay_since_last_sender_report_timestamp(), 65536 / 4);
                }
                RtcpPacket::Sdes(sdes) => {
                    for c in sdes.chunks() {
                        for item in c.items() {
                            saw_cname |= item.type_() == SdesItem::CNAME
                                && item.value() == b"dialbridge-aabbccdd";
                        }
                    }
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!(saw_sr && saw_cname);
        // Nothing sent since: the next report is an RR.
        leg.handle_timeout(t0 + Duration::from_secs(10));
        let sent = drain(&mut leg);
        let first = Compound::parse(&sent[0].1)
            .ok()
            .and_then(|mut c| c.next())
            .and_then(|p| p.ok())
            .map(|p| matches!(p, RtcpPacket::Rr(_)));
        assert_eq!(first, Some(true));
    }

    #[test]
    fn close_sends_a_report_with_bye() {
        let t0 = Instant::now();
        let mut leg = leg(t0);
        leg.send_audio(t0, &[0; FRAME_8K]);
        let _ = drain(&mut leg);
        leg.close(t0 + Duration::from_millis(20));
        let sent = drain(&mut leg);
        assert_eq!(sent.len(), 1);
        assert!(sent[0].0.rtcp);
        assert_eq!(sent[0].0.to, addr("192.0.2.1:4001"));
        let kinds: Vec<&str> = Compound::parse(&sent[0].1)
            .map(|c| {
                c.filter_map(Result::ok)
                    .map(|p| match p {
                        RtcpPacket::Sr(_) => "SR",
                        RtcpPacket::Sdes(_) => "SDES",
                        RtcpPacket::Bye(b) => {
                            if b.ssrcs().eq([0xAABBCCDD]) {
                                "BYE"
                            } else {
                                "BYE of someone else"
                            }
                        }
                        _ => "other",
                    })
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(kinds, vec!["SR", "SDES", "BYE"]);
    }

    #[test]
    fn nothing_is_sent_to_an_unspecified_address() {
        let t0 = Instant::now();
        let cfg = RtpLegConfig::new(G711::Pcma, 5, addr("0.0.0.0:4000"));
        let mut leg = RtpLeg::new(t0, UNIX_EPOCH, cfg);
        leg.send_audio(t0, &[0; FRAME_8K]);
        assert!(drain(&mut leg).is_empty());
        // Once the phone's packets arrive we latch and send there, continuing the sequence.
        let a = addr("198.51.100.7:30000");
        let _ = leg.handle_datagram(t0, a, &rtp(8, 1, 0, true, 7, &[0xD5; 160]));
        leg.send_audio(t0 + Duration::from_millis(20), &[0; FRAME_8K]);
        let sent = drain(&mut leg);
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].0.to, a);
        let p = RtpPacket::parse(&sent[0].1)
            .ok()
            .map(|p| (p.payload_type(), p.marker_bit()));
        assert_eq!(p, Some((8, true)));
    }

    #[test]
    fn a_remote_that_takes_no_rtp_gets_none_but_still_gets_reports() {
        let t0 = Instant::now();
        let cfg = RtpLegConfig {
            send: false,
            ..RtpLegConfig::new(G711::Pcmu, 5, addr("192.0.2.1:4000"))
        };
        let mut leg = RtpLeg::new(t0, UNIX_EPOCH, cfg);
        let a = addr("192.0.2.1:4000");
        let mut sent = Vec::new();
        for i in 0..400u16 {
            let now = t0 + Duration::from_millis(20 * u64::from(i));
            let _ = leg.handle_datagram(
                now,
                a,
                &rtp(0, i, u32::from(i) * 160, i == 0, 7, &[0xFF; 160]),
            );
            if i == 10 {
                leg.send_dtmf(now, '5', Duration::from_millis(100))
                    .unwrap_or_else(|e| panic!("{e}"));
            }
            leg.send_audio(now, &[1000; FRAME_8K]);
            if leg.poll_timeout().is_some_and(|t| t <= now) {
                leg.handle_timeout(now);
            }
            sent.extend(drain(&mut leg));
        }
        assert!(sent.iter().all(|(t, _)| t.rtcp), "only RTCP: {sent:?}");
        assert!(!sent.is_empty(), "receiver reports still go out");
    }

    #[test]
    fn a_renegotiation_moves_and_pauses_the_stream_in_place() {
        let t0 = Instant::now();
        let mut leg = leg(t0);
        let frame = |leg: &mut RtpLeg, k: u64| {
            leg.send_audio(t0 + Duration::from_millis(20 * k), &[0; FRAME_8K]);
            drain(leg)
                .into_iter()
                .filter(|(t, _)| !t.rtcp)
                .map(|(t, bytes)| {
                    let p = RtpPacket::parse(&bytes).unwrap_or_else(|e| panic!("{e:?}"));
                    (
                        t.to,
                        p.ssrc(),
                        p.sequence_number(),
                        p.timestamp(),
                        p.marker_bit(),
                    )
                })
                .collect::<Vec<_>>()
        };
        let first = frame(&mut leg, 0);
        assert_eq!(first.len(), 1);
        let (_, ssrc, seq, ts, _) = first[0];

        // Held (the remote takes no RTP): the media clock runs on, nothing is sent.
        let moved = addr("192.0.2.9:5000");
        let held = RtpLegConfig {
            send: false,
            ..RtpLegConfig::new(G711::Pcmu, 1, moved)
        };
        assert!(leg.renegotiate(t0 + Duration::from_millis(20), &held));
        assert!(frame(&mut leg, 1).is_empty());
        assert!(frame(&mut leg, 2).is_empty());

        // Resumed at the new address: the same stream, three frames on, a talkspurt.
        let resumed = RtpLegConfig::new(G711::Pcmu, 1, moved);
        assert!(leg.renegotiate(t0 + Duration::from_millis(60), &resumed));
        let next = frame(&mut leg, 3);
        assert_eq!(
            next,
            vec![(
                moved,
                ssrc,
                seq.wrapping_add(1),
                ts.wrapping_add(3 * FRAME_8K as u32),
                true
            )]
        );

        // Inactivity counts from the renegotiation, not from the leg's start.
        let timeout = Duration::from_secs(30);
        let t1 = t0 + Duration::from_secs(20);
        assert!(leg.renegotiate(t1, &resumed));
        leg.handle_timeout(t0 + timeout + Duration::from_secs(1));
        assert!(!events(&mut leg).contains(&LegEvent::Inactive));
        leg.handle_timeout(t1 + timeout);
        assert!(events(&mut leg).contains(&LegEvent::Inactive));

        // Another law is another leg.
        let pcma = RtpLegConfig::new(G711::Pcma, 1, moved);
        assert!(!leg.renegotiate(t1, &pcma));
    }

    #[test]
    fn absurd_durations_in_the_config_do_not_panic() {
        let t0 = Instant::now();
        let cfg = RtpLegConfig {
            rtcp_interval: Duration::MAX,
            inactivity_timeout: Some(Duration::MAX),
            relatch_after: Duration::MAX,
            ..RtpLegConfig::new(G711::Pcmu, 1, addr("192.0.2.1:4000"))
        };
        let mut leg = RtpLeg::new(t0, UNIX_EPOCH, cfg);
        let deadline = leg.poll_timeout();
        assert!(deadline.is_some_and(|t| t > t0 + Duration::from_secs(3600)));
        leg.handle_timeout(t0 + Duration::from_secs(3600));
        assert_eq!(events(&mut leg), vec![]);
    }

    #[test]
    fn remote_reports_and_bye_are_noted() {
        let t0 = Instant::now();
        let mut leg = leg(t0);
        let rr = Compound::builder()
            .add_packet(
                ReceiverReport::builder(77).add_report_block(
                    ReportBlock::builder(0xAABBCCDD)
                        .fraction_lost(12)
                        .cumulative_lost(30)
                        .interarrival_jitter(40),
                ),
            )
            .add_packet(rtcp_types::Bye::builder().add_source(77));
        let mut buf = [0u8; 128];
        let n = rr.write_into(&mut buf).unwrap_or(0);
        assert_eq!(
            leg.handle_datagram(t0, addr("198.51.100.7:30001"), &buf[..n]),
            Ok(())
        );
        assert_eq!(
            leg.remote_report(),
            Some(RemoteReport {
                fraction_lost: 12,
                cumulative_lost: 30,
                jitter: 40
            })
        );
        assert_eq!(events(&mut leg), vec![LegEvent::Bye]);
    }

    proptest! {
        #[test]
        fn any_datagram_is_handled_without_panic(
            datagrams in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..200), 0..20)
        ) {
            let t0 = Instant::now();
            let mut leg = leg(t0);
            let from = addr("198.51.100.7:30000");
            for (i, d) in datagrams.iter().enumerate() {
                let now = t0 + Duration::from_millis(i as u64 * 20);
                let _ = leg.handle_datagram(now, from, d);
                let _ = leg.tick(now);
                leg.handle_timeout(now + Duration::from_secs(6));
            }
        }

        #[test]
        fn valid_rtp_headers_round_trip(seq: u16, ts: u32, ssrc: u32, marker: bool, len in 0usize..200) {
            let t0 = Instant::now();
            let mut leg = leg(t0);
            let bytes = rtp(0, seq, ts, marker, ssrc, &vec![0xFF; len]);
            prop_assert_eq!(leg.handle_datagram(t0, addr("198.51.100.7:1"), &bytes), Ok(()));
            prop_assert_eq!(leg.inbound().jitter_buffer().ssrc(), Some(ssrc));
        }
    }
}

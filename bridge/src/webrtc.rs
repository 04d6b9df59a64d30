//! WebRTC leg: one WebRTC participant, served by a str0m `Rtc` as an ICE-lite answerer.
//!
//! The leg accepts a complete SDP offer and answers with Opus/48000/2 and telephone-event/48000
//! on one audio m-line (DTLS-SRTP, RTCP as str0m provides it). str0m runs in RTP mode: inbound
//! Opus packets go through this crate's jitter buffer and decoder (FEC from the next packet,
//! PLC otherwise) to one PCM frame per tick at the room's mixing rate; outbound PCM is encoded
//! and written as one 20 ms packet per tick with our own sequence numbers and timestamps, and
//! telephone-events use this crate's RFC 4733 sender and receiver.
//!
//! Sans-IO like the rest of the crate: the driver feeds datagrams ([`WebRtcLeg::handle_input`])
//! and timeouts ([`WebRtcLeg::handle_timeout`]) and takes out what to send
//! ([`WebRtcLeg::poll_transmit`]) and what happened ([`WebRtcLeg::poll_event`]).

mod video;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use str0m::change::SdpOffer;
use str0m::config::CryptoProvider;
use str0m::format::{Codec, FormatParams};
use str0m::media::{Frequency, MediaKind, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{ExtensionValues, RtpWrite, SeqNo};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc, RtcConfig};

use crate::dtmf::{DtmfDigit, DtmfError, DtmfReceiver, DtmfSender};
use crate::jitter::{JitterBuffer, JitterConfig, JitterStats, Playout};
use crate::opus_codec::{
    OpusConfig, OpusDecoder, OpusEncoder, OpusError, MAX_PACKET, OPUS_RTP_CLOCK, PHONE_COMPLEXITY,
};
use crate::transcode::{DecodeStats, FrameSource, RtpMeta};
pub use str0m::media::KeyframeRequestKind;
pub use video::{SlotKeyframeRequest, VideoCodec, VideoPacket};
use video::{VideoInbox, VideoSlot};

/// Received packets a direct path holds until the driver takes them (one datagram carries one).
const DIRECT_QUEUE: usize = 4;
/// Samples of the longest Opus packet (120 ms) at 8 kHz.
const DIRECT_PCM: usize = 960;

/// Packetization on WebRTC legs, as on phone legs.
pub const FRAME_MS: u32 = 20;

/// RTP timestamp units per 20 ms at the Opus (and telephone-event) clock.
const RTP_STEP: u32 = OPUS_RTP_CLOCK / 1000 * FRAME_MS;

/// Payload type we offer for telephone-event/48000 when the offer's own numbers are unknown;
/// str0m answers with the offerer's numbers.
const TELEPHONE_EVENT_PT: u8 = 110;

/// Errors of a WebRTC leg.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebRtcError {
    /// The SDP offer cannot be used; the text says why (for a 400 answer).
    #[error("unusable SDP offer: {0}")]
    Offer(String),
    /// The local setup failed (certificate, codec, candidate).
    #[error("WebRTC setup failed: {0}")]
    Setup(String),
    /// A datagram that str0m refused (malformed, or not for this leg).
    #[error("datagram refused: {0}")]
    Input(String),
    /// The Opus codec failed.
    #[error(transparent)]
    Opus(#[from] OpusError),
    /// A DTMF digit that cannot be sent.
    #[error(transparent)]
    Dtmf(#[from] DtmfError),
}

/// What the leg reports to its driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LegEvent {
    /// ICE and DTLS are up: media flows from now on.
    Connected,
    /// The peer is gone (ICE disconnected, DTLS closed, or a fatal error). Reported once.
    Disconnected,
    /// A key press (RFC 4733), reported once per press.
    Dtmf(DtmfDigit),
    /// The peer asks for a keyframe of the video it receives on one of its slots: the driver
    /// passes it to that slot's source ([`WebRtcLeg::request_keyframe`]).
    KeyframeRequest(SlotKeyframeRequest),
}

/// A datagram to send from the leg's UDP socket.
#[derive(Debug)]
pub struct Transmit {
    /// Where to send it.
    pub destination: SocketAddr,
    /// The datagram.
    pub contents: Vec<u8>,
}

/// Settings of a leg.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WebRtcLegConfig {
    /// The host candidate announced in the answer: the public (or listen) IP and the bound port.
    pub candidate: SocketAddr,
    /// Sample rate of the PCM frames exchanged with the mixer (8000..=48000, an Opus API rate).
    pub mix_rate: u32,
    /// Encoder settings; `sample_rate` and `frame_ms` are taken from this leg.
    pub opus: OpusConfig,
    /// Complexity of the direct path's 8 kHz encoder (a phone's audio); the rest as `opus`.
    pub direct_complexity: i32,
    /// Jitter buffer settings (clock rate 48000).
    pub jitter: JitterConfig,
    /// Whether the offer's video m-lines are answered (VP8, H.264); when not, they are
    /// rejected and the leg is audio-only.
    pub video: bool,
}

impl WebRtcLegConfig {
    /// Voice defaults for a leg announcing `candidate` and mixing at `mix_rate`.
    pub fn new(candidate: SocketAddr, mix_rate: u32) -> WebRtcLegConfig {
        WebRtcLegConfig {
            candidate,
            mix_rate,
            opus: OpusConfig::default(),
            direct_complexity: PHONE_COMPLEXITY,
            jitter: JitterConfig::new(OPUS_RTP_CLOCK),
            video: true,
        }
    }
}

/// Counters of one leg.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LegStats {
    /// Opus packets received.
    pub opus_received: u64,
    /// Packets sent (audio and telephone-event).
    pub sent: u64,
    /// Datagrams str0m refused.
    pub refused: u64,
    /// Jitter buffer counters.
    pub jitter: JitterStats,
    /// Decoder counters.
    pub decode: DecodeStats,
    /// Video packets received (the leg's camera).
    pub video_received: u64,
    /// Video packets dropped before the driver took them.
    pub video_dropped: u64,
    /// Video packets forwarded to this leg's peer.
    pub video_sent: u64,
}

fn crypto() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(str0m::crypto::from_feature_flags()))
        .clone()
}

/// The str0m configuration of a server leg: ICE-lite, RTP mode, Opus and telephone-event, and
/// with `video` VP8 and H.264 (forwarded, so only what browsers decode everywhere).
fn rtc_config(video: bool) -> Result<RtcConfig, WebRtcError> {
    let provider = crypto();
    let cert = provider
        .dtls_provider
        .generate_certificate()
        .ok_or_else(|| WebRtcError::Setup("cannot generate a DTLS certificate".into()))?;
    let mut config = Rtc::builder()
        .set_crypto_provider(provider)
        .set_dtls_cert(cert)
        .set_ice_lite(true)
        .set_rtp_mode(true)
        .clear_codecs()
        .enable_opus(true, false)
        .enable_vp8(video)
        .enable_h264(video);
    config.codec_config().add_config(
        TELEPHONE_EVENT_PT.into(),
        None,
        Codec::Tele,
        Frequency::FORTY_EIGHT_KHZ,
        None,
        FormatParams::parse_line("0-16"),
    );
    Ok(config)
}

/// Inbound audio: jitter buffer (48 kHz RTP clock) and Opus decoder at the mixing rate.
#[derive(Debug)]
struct Inbound {
    jb: JitterBuffer,
    dec: OpusDecoder,
    pcm: Vec<i16>,
    stats: DecodeStats,
}

impl Inbound {
    /// One frame for this tick: decoded, rebuilt from the next packet's FEC, concealed, or
    /// silence when nothing plays.
    fn tick(&mut self, now: Instant) -> FrameSource {
        match self.jb.pop(now) {
            Playout::Frame(p) => match self.dec.decode(p, &mut self.pcm) {
                Ok(_) => {
                    self.stats.decoded += 1;
                    FrameSource::Decoded
                }
                Err(_) => {
                    self.stats.corrupt += 1;
                    self.conceal()
                }
            },
            Playout::Missing => match self.jb.peek() {
                Some(next) if self.dec.decode_fec(next, &mut self.pcm).is_ok() => {
                    self.stats.fec += 1;
                    FrameSource::Fec
                }
                _ => self.conceal(),
            },
            Playout::Empty => {
                self.pcm.fill(0);
                FrameSource::Silence
            }
        }
    }

    fn conceal(&mut self) -> FrameSource {
        self.stats.concealed += 1;
        if self.dec.conceal(&mut self.pcm).is_err() {
            self.pcm.fill(0);
        }
        FrameSource::Concealed
    }
}

/// Outbound RTP state: our sequence numbers and timestamps on the negotiated stream.
#[derive(Debug)]
struct Outbound {
    enc: OpusEncoder,
    packet: Vec<u8>,
    seq: u64,
    timestamp: u32,
    dtmf: DtmfSender,
    /// DTX on: silent frames are not sent.
    dtx: bool,
    /// The last frame was silence left unsent; the next sent one starts a talkspurt.
    quiet: bool,
}

/// An Opus packet received on a direct path.
struct Received {
    meta: RtpMeta,
    len: usize,
    bytes: [u8; MAX_PACKET],
}

/// A two-party room's direct path on this leg: received Opus packets wait here for the driver
/// (decoded to 8 kHz for a phone, or passed on as they are to another browser), and 8 kHz
/// phone audio is encoded as it comes. Made once, on the first switch to direct.
struct Direct {
    dec: OpusDecoder,
    enc: OpusEncoder,
    queue: Box<[Received; DIRECT_QUEUE]>,
    head: usize,
    len: usize,
    pcm: [i16; DIRECT_PCM],
}

/// See the module documentation.
pub struct WebRtcLeg {
    rtc: Rtc,
    ufrag: String,
    /// The direct path's 8 kHz encoder settings.
    direct_opus: OpusConfig,
    direct: Option<Box<Direct>>,
    direct_on: bool,
    mid: Mid,
    opus_pt: Pt,
    tele_pt: Option<Pt>,
    inbound: Inbound,
    outbound: Outbound,
    dtmf_rx: DtmfReceiver,
    dtmf_ssrc: Option<u32>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<LegEvent>,
    timeout: Instant,
    /// Whether the answer lets us send (not for a sendonly peer).
    sends: bool,
    connected: bool,
    gone: bool,
    /// str0m panicked: the `Rtc` is never called again.
    poisoned: bool,
    failure: Option<String>,
    stats: LegStats,
    /// The offer had video (answered or not).
    offered_video: bool,
    /// The m-line the peer sends its camera on.
    video_send_mid: Option<Mid>,
    /// Negotiated video payload types and their codecs (the same on every video m-line of a
    /// bundle).
    video_pts: Vec<(Pt, VideoCodec)>,
    video_in: VideoInbox,
    /// The m-lines other participants' video goes to, in offer order.
    video_slots: Vec<VideoSlot>,
}

impl std::fmt::Debug for WebRtcLeg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebRtcLeg")
            .field("mid", &self.mid)
            .field("connected", &self.connected)
            .field("gone", &self.gone)
            .finish()
    }
}

impl WebRtcLeg {
    /// Accepts a complete SDP offer and returns the leg with its SDP answer.
    ///
    /// The offer needs one audio m-line with Opus/48000/2; telephone-event/48000 is used when
    /// offered. Other m-lines (video, data) are answered as rejected.
    pub fn accept(
        now: Instant,
        offer: &str,
        cfg: &WebRtcLegConfig,
    ) -> Result<(WebRtcLeg, String), WebRtcError> {
        // The offer is a client's text; should str0m panic on it, that is this offer's failure.
        catch_unwind(AssertUnwindSafe(|| Self::accept_inner(now, offer, cfg))).unwrap_or_else(
            |_| {
                Err(WebRtcError::Offer(
                    "the offer could not be processed".into(),
                ))
            },
        )
    }

    fn accept_inner(
        now: Instant,
        offer: &str,
        cfg: &WebRtcLegConfig,
    ) -> Result<(WebRtcLeg, String), WebRtcError> {
        let offer =
            SdpOffer::from_sdp_string(offer).map_err(|e| WebRtcError::Offer(e.to_string()))?;
        let mids: Vec<Mid> = offer
            .media_lines
            .iter()
            .filter(|m| !m.disabled)
            .map(|m| m.mid())
            .collect();
        let offered_video = offer
            .media_lines
            .iter()
            .any(|m| !m.disabled && m.typ.to_string() == "video");
        let mut rtc = rtc_config(cfg.video)?.build(now);
        let candidate = Candidate::host(cfg.candidate, "udp")
            .map_err(|e| WebRtcError::Setup(format!("candidate {}: {e}", cfg.candidate)))?;
        rtc.add_local_candidate(candidate);
        let answer = rtc
            .sdp_api()
            .accept_offer(offer)
            .map_err(|e| WebRtcError::Offer(e.to_string()))?;

        let mut early = VecDeque::new();
        let timeout = loop {
            match rtc.poll_output() {
                Ok(Output::Timeout(t)) => break t,
                Ok(Output::Transmit(t)) => early.push_back(Transmit {
                    destination: t.destination,
                    contents: t.contents.into(),
                }),
                Ok(Output::Event(_)) => {}
                Err(e) => return Err(WebRtcError::Offer(e.to_string())),
            }
        };
        let mid = mids
            .iter()
            .copied()
            .find(|mid| rtc.media(*mid).map(|m| m.kind()) == Some(MediaKind::Audio))
            .ok_or_else(|| WebRtcError::Offer("the offer has no audio m-line".into()))?;
        let remote = rtc
            .media(mid)
            .map(|m| m.remote_pts().to_vec())
            .unwrap_or_default();
        let negotiated = |codec: Codec| {
            rtc.codec_config()
                .find(|p| {
                    p.spec().codec == codec
                        && p.spec().clock_rate == Frequency::FORTY_EIGHT_KHZ
                        && remote.contains(&p.pt())
                })
                .map(|p| p.pt())
        };
        let opus_pt = negotiated(Codec::Opus).ok_or_else(|| {
            WebRtcError::Offer("the audio m-line does not offer opus/48000/2".into())
        })?;
        let tele_pt = negotiated(Codec::Tele);
        let video_mids: Vec<(Mid, str0m::media::Direction)> = mids
            .iter()
            .filter_map(|mid| rtc.media(*mid))
            .filter(|m| m.kind() == MediaKind::Video && !m.disabled())
            .map(|m| (m.mid(), m.direction()))
            .collect();
        let video_send_mid = video_mids
            .iter()
            .find(|(_, dir)| dir.is_receiving())
            .map(|(mid, _)| *mid);
        let video_pts: Vec<(Pt, VideoCodec)> = video_mids
            .first()
            .and_then(|(mid, _)| rtc.media(*mid))
            .map(|m| m.remote_pts().to_vec())
            .unwrap_or_default()
            .into_iter()
            .filter_map(|pt| {
                let params = rtc.codec_config().find(|p| p.pt() == pt)?;
                let spec = params.spec();
                Some((
                    pt,
                    VideoCodec::of(spec.codec, spec.format.packetization_mode)?,
                ))
            })
            .collect();
        // A random seed for our sequence numbers and timestamps (RFC 3550 asks for random
        // starts). A peer that only sends (sendonly offer) gets no stream from us; writes then
        // find no stream and send nothing.
        let seed = *rtc.direct_api().new_ssrc();
        let sends = rtc.direct_api().stream_tx_by_mid(mid, None).is_some();

        let frame = (cfg.mix_rate * FRAME_MS / 1000) as usize;
        let enc = OpusEncoder::new(OpusConfig {
            sample_rate: cfg.mix_rate,
            frame_ms: FRAME_MS,
            ..cfg.opus
        })?;
        let ufrag = rtc.direct_api().local_ice_credentials().ufrag;
        let video_slots = video_mids
            .iter()
            .filter(|(_, dir)| dir.is_sending())
            .enumerate()
            .map(|(i, (mid, _))| {
                let salt = seed.wrapping_add(i as u32 + 1).wrapping_mul(0x85eb_ca6b);
                VideoSlot::new(*mid, u64::from(salt & 0x3fff) + 1, salt.rotate_left(13))
            })
            .collect();
        let leg = WebRtcLeg {
            rtc,
            ufrag,
            direct_opus: OpusConfig {
                sample_rate: 8000,
                frame_ms: FRAME_MS,
                complexity: cfg.direct_complexity,
                ..cfg.opus
            },
            direct: None,
            direct_on: false,
            mid,
            opus_pt,
            tele_pt,
            inbound: Inbound {
                jb: JitterBuffer::new(JitterConfig {
                    clock_rate: OPUS_RTP_CLOCK,
                    ..cfg.jitter
                }),
                dec: OpusDecoder::new(cfg.mix_rate, FRAME_MS)?,
                pcm: vec![0; frame],
                stats: DecodeStats::default(),
            },
            outbound: Outbound {
                enc,
                packet: vec![0; MAX_PACKET],
                // Start below 2^16: a rollover counter would need signalling.
                seq: u64::from(seed & 0x3fff) + 1,
                timestamp: seed.wrapping_mul(0x9e37_79b9),
                dtmf: DtmfSender::new(OPUS_RTP_CLOCK, Duration::from_millis(FRAME_MS as u64)),
                dtx: cfg.opus.dtx,
                quiet: false,
            },
            dtmf_rx: DtmfReceiver::new(),
            dtmf_ssrc: None,
            transmits: early,
            events: VecDeque::new(),
            timeout,
            sends,
            connected: false,
            gone: false,
            poisoned: false,
            failure: None,
            stats: LegStats::default(),
            offered_video,
            video_send_mid,
            video_pts,
            video_in: VideoInbox::default(),
            video_slots,
        };
        Ok((leg, answer.to_sdp_string()))
    }

    /// Our ICE username fragment: a peer's ICE checks carry it first in their USERNAME.
    pub fn ufrag(&self) -> &str {
        &self.ufrag
    }

    /// Whether a datagram from `from` to `to` belongs to this leg (its nominated peer, a STUN
    /// request carrying its ICE username, or a known remote candidate).
    pub fn accepts(&self, now: Instant, from: SocketAddr, to: SocketAddr, bytes: &[u8]) -> bool {
        if self.poisoned {
            return false;
        }
        match Receive::new(Protocol::Udp, from, to, bytes) {
            Ok(r) => catch_unwind(AssertUnwindSafe(|| {
                self.rtc.accepts(&Input::Receive(now, r))
            }))
            .unwrap_or(false),
            Err(_) => false,
        }
    }

    /// Feeds one received datagram.
    pub fn handle_input(
        &mut self,
        now: Instant,
        from: SocketAddr,
        to: SocketAddr,
        bytes: &[u8],
    ) -> Result<(), WebRtcError> {
        let receive = match Receive::new(Protocol::Udp, from, to, bytes) {
            Ok(r) => r,
            Err(e) => {
                self.stats.refused += 1;
                return Err(WebRtcError::Input(e.to_string()));
            }
        };
        let result = self.guard("str0m panicked on a datagram", |rtc| {
            rtc.handle_input(Input::Receive(now, receive))
        });
        self.drain();
        match result {
            Some(Ok(())) => Ok(()),
            Some(Err(e)) => {
                self.stats.refused += 1;
                Err(WebRtcError::Input(e.to_string()))
            }
            None => Err(WebRtcError::Input("str0m panicked on a datagram".into())),
        }
    }

    /// Advances time to `now` (retransmissions, RTCP reports, ICE state).
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some(Err(e)) = self.guard("str0m panicked on a timeout", |rtc| {
            rtc.handle_input(Input::Timeout(now))
        }) {
            self.fail(&e.to_string());
        }
        self.drain();
    }

    /// When [`WebRtcLeg::handle_timeout`] wants to be called next.
    pub fn poll_timeout(&self) -> Instant {
        self.timeout
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<LegEvent> {
        self.events.pop_front()
    }

    /// Whether ICE and DTLS are up.
    pub fn is_connected(&self) -> bool {
        self.connected
    }

    /// Whether the peer is gone; the driver drops the leg.
    pub fn is_gone(&self) -> bool {
        self.gone
    }

    /// Why the leg failed, when a str0m error ended it (the crate does not log).
    pub fn failure(&self) -> Option<&str> {
        self.failure.as_deref()
    }

    /// Counters.
    pub fn stats(&self) -> LegStats {
        LegStats {
            jitter: self.inbound.jb.stats(),
            decode: self.inbound.stats,
            video_received: self.video_in.received,
            video_dropped: self.video_in.dropped,
            ..self.stats
        }
    }

    /// This tick's received audio at the mixing rate, and how it came about.
    pub fn pull_frame(&mut self, now: Instant) -> (&[i16], FrameSource) {
        let source = self.inbound.tick(now);
        (&self.inbound.pcm, source)
    }

    /// Sends this tick's audio (one mixing-rate frame): one Opus packet, or the telephone-event
    /// packets due while a digit is being sent. Nothing goes out before the leg is connected, or
    /// to a peer that only sends.
    pub fn push_frame(&mut self, now: Instant, pcm: &[i16]) -> Result<(), WebRtcError> {
        let timestamp = self.outbound.timestamp;
        self.outbound.timestamp = timestamp.wrapping_add(RTP_STEP);
        if !self.connected || self.gone || !self.sends || self.send_dtmf_due(now) {
            return Ok(());
        }
        // The packet buffer is lent out for the write and put back: no allocation per frame.
        let mut packet = std::mem::take(&mut self.outbound.packet);
        let result = self.outbound.enc.encode(pcm, &mut packet);
        if let Some(payload) = result.as_ref().ok().and_then(|n| packet.get(..*n)) {
            self.send_encoded(now, timestamp, payload);
        }
        self.outbound.packet = packet;
        result.map(|_| ()).map_err(WebRtcError::from)
    }

    /// Pops this tick's frame from the jitter buffer without decoding it: a direct path keeps
    /// the buffer in step, so mixing can take over without a gap.
    pub fn discard_frame(&mut self, now: Instant) {
        let _ = self.inbound.jb.pop(now);
    }

    /// Turns the direct path (two-party room, no mixer tick) on or off. The first switch on
    /// makes its 8 kHz codec pair; the jitter buffer is fed as ever meanwhile.
    pub fn set_direct(&mut self, on: bool) -> Result<(), WebRtcError> {
        if on && self.direct.is_none() {
            let enc = OpusEncoder::new(self.direct_opus)?;
            self.direct = Some(Box::new(Direct {
                dec: OpusDecoder::new(8000, 120)?,
                enc,
                queue: Box::new(std::array::from_fn(|_| Received {
                    meta: RtpMeta {
                        seq: 0,
                        timestamp: 0,
                        marker: false,
                        ssrc: 0,
                    },
                    len: 0,
                    bytes: [0; MAX_PACKET],
                })),
                head: 0,
                len: 0,
                pcm: [0; DIRECT_PCM],
            }));
        }
        if let Some(d) = self.direct.as_mut() {
            d.len = 0;
        }
        self.direct_on = on;
        Ok(())
    }

    /// The oldest Opus packet received on the direct path, as it is, with its length in 48 kHz
    /// units.
    pub fn take_direct_opus(&mut self) -> Option<(RtpMeta, &[u8], u32)> {
        let d = self.direct.as_mut().filter(|_| self.direct_on)?;
        if d.len == 0 {
            return None;
        }
        let r = d.queue.get(d.head)?;
        d.head = (d.head + 1) % DIRECT_QUEUE;
        d.len -= 1;
        let payload = r.bytes.get(..r.len)?;
        let units = opus::packet::get_nb_samples(payload, OPUS_RTP_CLOCK).unwrap_or(0);
        Some((r.meta, payload, units as u32))
    }

    /// The oldest Opus packet received on the direct path, decoded to 8 kHz (a corrupt one is
    /// concealed).
    pub fn take_direct_pcm(&mut self) -> Option<(RtpMeta, &[i16])> {
        let d = self.direct.as_mut().filter(|_| self.direct_on)?;
        if d.len == 0 {
            return None;
        }
        let r = d.queue.get(d.head)?;
        d.head = (d.head + 1) % DIRECT_QUEUE;
        d.len -= 1;
        let payload = r.bytes.get(..r.len)?;
        let n = match d.dec.decode(payload, &mut d.pcm) {
            Ok(n) => n,
            Err(_) => d.dec.conceal(&mut d.pcm).unwrap_or(0),
        };
        Some((r.meta, d.pcm.get(..n.min(DIRECT_PCM))?))
    }

    /// Sends 20 ms of 8 kHz audio at once on the direct path (encoded at 8 kHz; the browser's
    /// decoder plays any Opus bandwidth). Telephone-events due replace it, as in
    /// [`WebRtcLeg::push_frame`]; the media clock advances either way.
    pub fn send_direct_pcm(&mut self, now: Instant, pcm: &[i16]) -> Result<(), WebRtcError> {
        let timestamp = self.outbound.timestamp;
        self.outbound.timestamp = timestamp.wrapping_add(RTP_STEP);
        if !self.connected || self.gone || !self.sends || self.send_dtmf_due(now) {
            return Ok(());
        }
        let Some(d) = self.direct.as_mut() else {
            return Ok(());
        };
        let mut packet = std::mem::take(&mut self.outbound.packet);
        let result = d.enc.encode(pcm, &mut packet);
        if let Some(payload) = result.as_ref().ok().and_then(|n| packet.get(..*n)) {
            self.send_encoded(now, timestamp, payload);
        }
        self.outbound.packet = packet;
        result.map(|_| ()).map_err(WebRtcError::from)
    }

    /// Sends another browser's Opus packet on as it is (no transcoding), `units` 48 kHz
    /// samples long.
    pub fn send_direct_opus(&mut self, now: Instant, payload: &[u8], units: u32) {
        let timestamp = self.outbound.timestamp;
        self.outbound.timestamp = timestamp.wrapping_add(units);
        if !self.connected || self.gone || !self.sends || self.send_dtmf_due(now) {
            return;
        }
        self.write(now, self.opus_pt, timestamp, false, payload);
    }

    /// Advances the outbound media clock by `units` (48 kHz) without sending: audio lost
    /// before a direct path, which the browser conceals.
    pub fn skip(&mut self, units: u32) {
        self.outbound.timestamp = self.outbound.timestamp.wrapping_add(units);
    }

    /// Sends the telephone-event packets due; true while a digit replaces audio.
    fn send_dtmf_due(&mut self, now: Instant) -> bool {
        let (true, Some(tele_pt)) = (self.outbound.dtmf.is_active(), self.tele_pt) else {
            return false;
        };
        while let Some(p) = self.outbound.dtmf.poll_packet(now) {
            let payload = p.payload.to_bytes();
            self.write(now, tele_pt, p.timestamp, p.marker, &payload);
        }
        true
    }

    /// Starts sending a DTMF digit as telephone-events (replacing audio while it lasts).
    /// Refused when the peer did not negotiate telephone-event.
    pub fn send_dtmf(
        &mut self,
        now: Instant,
        digit: char,
        duration: Duration,
    ) -> Result<(), WebRtcError> {
        if self.tele_pt.is_none() {
            return Err(WebRtcError::Setup(
                "the peer did not negotiate telephone-event/48000".into(),
            ));
        }
        let timestamp = self.outbound.timestamp;
        Ok(self.outbound.dtmf.start(now, digit, duration, timestamp)?)
    }

    /// Whether the offer had video m-lines, answered or refused.
    pub fn offered_video(&self) -> bool {
        self.offered_video
    }

    /// Whether the peer sends its camera (it answered with a receiving video m-line).
    pub fn sends_video(&self) -> bool {
        self.video_send_mid.is_some()
    }

    /// How many other participants' videos the peer can receive at once.
    pub fn video_slots(&self) -> usize {
        self.video_slots.len()
    }

    /// The oldest video packet received from the peer's camera.
    pub fn take_video(&mut self) -> Option<VideoPacket> {
        self.video_in.pop()
    }

    /// Sends `packet` of participant `source` on slot `slot`, as part of the slot's one
    /// continuous stream. Nothing goes out before the leg is connected, on a slot it does not
    /// have, or in a codec its peer did not negotiate.
    pub fn forward_video(&mut self, now: Instant, slot: usize, source: u64, packet: &VideoPacket) {
        if !self.connected || self.gone {
            return;
        }
        let Some(pt) = self
            .video_pts
            .iter()
            .find(|(_, codec)| *codec == packet.codec)
            .map(|(pt, _)| *pt)
        else {
            return;
        };
        let Some(s) = self.video_slots.get_mut(slot) else {
            return;
        };
        let Some((seq, timestamp)) = s.map(source, packet) else {
            return;
        };
        let mid = s.mid;
        let ext = ExtensionValues {
            video_orientation: packet.orientation,
            ..ExtensionValues::default()
        };
        let write = RtpWrite::new(pt, seq.into(), timestamp, now, packet.payload.clone())
            .marker(packet.marker)
            .ext_vals(ext)
            // Kept for the peer's NACKs: losses on this hop are repaired from here.
            .nackable(true);
        if self.write_to(now, mid, write) {
            self.stats.video_sent += 1;
        }
    }

    /// Asks the peer for a keyframe of its camera (a receiver of it asked, or starts to receive).
    pub fn request_keyframe(&mut self, kind: KeyframeRequestKind) {
        let Some(mid) = self.video_send_mid else {
            return;
        };
        self.guard("str0m panicked on a keyframe request", |rtc| {
            if let Some(rx) = rtc.direct_api().stream_rx_by_mid(mid, None) {
                rx.request_keyframe(kind);
            }
        });
        self.drain();
    }

    /// Starts an orderly close (RTCP BYE, DTLS close_notify); poll transmits once more, then drop.
    pub fn close(&mut self) {
        if let Some(Err(e)) = self.guard("str0m panicked on close", |rtc| rtc.close()) {
            self.fail(&e.to_string());
        }
        self.drain();
    }

    /// Sends a frame our encoder made. With DTX, a packet of one or two bytes is silence that
    /// need not be sent (RFC 7587 section 3.3); the first one sent after it starts a talkspurt,
    /// so it carries the marker bit.
    fn send_encoded(&mut self, now: Instant, timestamp: u32, payload: &[u8]) {
        if self.outbound.dtx && payload.len() <= 2 {
            self.outbound.quiet = true;
            return;
        }
        let marker = std::mem::take(&mut self.outbound.quiet);
        self.write(now, self.opus_pt, timestamp, marker, payload);
    }

    fn write(&mut self, now: Instant, pt: Pt, timestamp: u32, marker: bool, payload: &[u8]) {
        let seq = SeqNo::from(self.outbound.seq);
        self.outbound.seq += 1;
        let packet = RtpWrite::new(pt, seq, timestamp, now, payload).marker(marker);
        if self.write_to(now, self.mid, packet) {
            self.stats.sent += 1;
        }
    }

    /// Writes one packet on `mid`'s stream and lets it leave at once; whether there was a
    /// stream to write to.
    fn write_to(&mut self, now: Instant, mid: Mid, packet: RtpWrite) -> bool {
        let written = self.guard("str0m panicked on a write", |rtc| {
            let mut api = rtc.direct_api();
            let stream = api.stream_tx_by_mid(mid, None)?;
            stream.write_rtp(packet);
            Some(())
        });
        // str0m's pacer hands written packets out at its next timeout: run it now, so the
        // packet leaves in this turn rather than at the driver's next timer.
        if let Some(Err(e)) = self.guard("str0m panicked on a timeout", |rtc| {
            rtc.handle_input(Input::Timeout(now))
        }) {
            self.fail(&e.to_string());
        }
        self.drain();
        written.flatten().is_some()
    }

    /// Runs one call into str0m. A panic inside it (a bug one peer's packets might reach) ends
    /// this leg instead of the thread serving every call; the `Rtc` is not called again.
    fn guard<T>(&mut self, what: &str, f: impl FnOnce(&mut Rtc) -> T) -> Option<T> {
        if self.poisoned {
            return None;
        }
        match catch_unwind(AssertUnwindSafe(|| f(&mut self.rtc))) {
            Ok(v) => Some(v),
            Err(_) => {
                self.poisoned = true;
                self.fail(what);
                None
            }
        }
    }

    fn fail(&mut self, reason: &str) {
        if self.failure.is_none() {
            self.failure = Some(reason.to_string());
        }
        self.rtc.disconnect();
        self.disconnected();
    }

    fn disconnected(&mut self) {
        if !self.gone {
            self.gone = true;
            self.connected = false;
            self.events.push_back(LegEvent::Disconnected);
        }
    }

    /// Drains str0m's output after a mutation, as its API requires.
    fn drain(&mut self) {
        loop {
            let Some(output) = self.guard("str0m panicked on output", |rtc| rtc.poll_output())
            else {
                break;
            };
            match output {
                Ok(Output::Timeout(t)) => {
                    self.timeout = t;
                    break;
                }
                Ok(Output::Transmit(t)) => self.transmits.push_back(Transmit {
                    destination: t.destination,
                    contents: t.contents.into(),
                }),
                Ok(Output::Event(e)) => self.on_event(e),
                Err(e) => {
                    self.fail(&e.to_string());
                    break;
                }
            }
        }
        if self.poisoned || !self.rtc.is_alive() {
            self.disconnected();
        }
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::Connected if !self.connected && !self.gone => {
                self.connected = true;
                self.events.push_back(LegEvent::Connected);
            }
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) | Event::Closed => {
                self.disconnected()
            }
            Event::KeyframeRequest(req) => {
                if let Some(slot) = self.video_slots.iter().position(|s| s.mid == req.mid) {
                    self.events
                        .push_back(LegEvent::KeyframeRequest(SlotKeyframeRequest {
                            slot,
                            kind: req.kind,
                        }));
                }
            }
            Event::RtpPacket(p) => {
                let h = &p.header;
                let ssrc = *h.ssrc;
                let video = self
                    .video_pts
                    .iter()
                    .find(|(pt, _)| *pt == h.payload_type)
                    .map(|(_, codec)| *codec);
                if let Some(codec) = video {
                    self.video_in.push(VideoPacket {
                        codec,
                        seq: *p.seq_no,
                        timestamp: h.timestamp,
                        marker: h.marker,
                        payload: p.payload.clone(),
                        orientation: h.ext_vals.video_orientation,
                    });
                } else if h.payload_type == self.opus_pt {
                    self.stats.opus_received += 1;
                    if let Some(d) = self.direct.as_mut().filter(|_| self.direct_on) {
                        // A full queue loses its oldest packet (the driver takes each at once).
                        if d.len == DIRECT_QUEUE {
                            d.head = (d.head + 1) % DIRECT_QUEUE;
                            d.len -= 1;
                        }
                        let slot = (d.head + d.len) % DIRECT_QUEUE;
                        if let Some(r) = d.queue.get_mut(slot) {
                            let n = p.payload.len().min(MAX_PACKET);
                            r.bytes[..n].copy_from_slice(&p.payload[..n]);
                            r.len = n;
                            r.meta = RtpMeta {
                                seq: h.sequence_number,
                                timestamp: h.timestamp,
                                marker: h.marker,
                                ssrc,
                            };
                            d.len += 1;
                        }
                    }
                    self.inbound.jb.insert(
                        p.timestamp,
                        h.sequence_number,
                        h.timestamp,
                        h.marker,
                        ssrc,
                        &p.payload,
                    );
                } else if Some(h.payload_type) == self.tele_pt {
                    // Events sent instead of audio share its sequence space: not loss.
                    if self.inbound.jb.ssrc() == Some(ssrc) {
                        self.inbound
                            .jb
                            .insert_no_audio(p.timestamp, h.sequence_number, ssrc);
                    }
                    if self.dtmf_ssrc != Some(ssrc) {
                        self.dtmf_rx.reset();
                        self.dtmf_ssrc = Some(ssrc);
                    }
                    if let Ok(Some(digit)) = self.dtmf_rx.handle_packet(h.timestamp, &p.payload) {
                        self.events.push_back(LegEvent::Dtmf(digit));
                    }
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{tone_ratio, Sine};
    use str0m::change::SdpAnswer;
    use str0m::media::{Direction, MediaTime, TelephoneEvent};

    const CLIENT: &str = "127.0.0.1:5000";
    const SERVER: &str = "127.0.0.1:10000";
    const MIX: u32 = 48000;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    /// A browser-like peer: full ICE, controlling, frame mode.
    struct Peer {
        rtc: Rtc,
        mid: Mid,
        connected: bool,
        heard: Vec<i16>,
        /// RTP sequence number and timestamp of each packet received.
        stream: Vec<(u64, u64)>,
        /// Sequence numbers of the packets that started a talkspurt (marker bit).
        talkspurts: Vec<u64>,
        dec: OpusDecoder,
        video_mid: Option<Mid>,
        /// VP8 frames received, as they were sent.
        video_frames: Vec<Vec<u8>>,
        /// Keyframe requests received for the camera.
        keyframe_requests: Vec<KeyframeRequestKind>,
    }

    fn offer(now: Instant, video: bool) -> (Peer, String, str0m::change::SdpPendingOffer) {
        let mut config = Rtc::builder()
            .set_crypto_provider(crypto())
            .clear_codecs()
            .enable_opus(true, false)
            .enable_vp8(video);
        config.codec_config().add_config(
            101.into(),
            None,
            Codec::Tele,
            Frequency::FORTY_EIGHT_KHZ,
            None,
            FormatParams::parse_line("0-16"),
        );
        let mut rtc = config.build(now);
        let candidate = Candidate::host(addr(CLIENT), "udp").unwrap_or_else(|e| panic!("{e}"));
        rtc.add_local_candidate(candidate);
        let mut change = rtc.sdp_api();
        let mid = change.add_media(MediaKind::Audio, Direction::SendRecv, None, None, None);
        let video_mid = video
            .then(|| change.add_media(MediaKind::Video, Direction::SendRecv, None, None, None));
        let (offer, pending) = change.apply().unwrap_or_else(|| panic!("no offer"));
        let peer = Peer {
            rtc,
            mid,
            connected: false,
            heard: Vec::new(),
            stream: Vec::new(),
            talkspurts: Vec::new(),
            dec: OpusDecoder::new(MIX, FRAME_MS).unwrap_or_else(|e| panic!("{e}")),
            video_mid,
            video_frames: Vec::new(),
            keyframe_requests: Vec::new(),
        };
        (peer, offer.to_sdp_string(), pending)
    }

    fn connect(video: bool) -> (Instant, Peer, WebRtcLeg, String) {
        connect_with(video, WebRtcLegConfig::new(addr(SERVER), MIX))
    }

    fn connect_with(video: bool, cfg: WebRtcLegConfig) -> (Instant, Peer, WebRtcLeg, String) {
        let now = Instant::now();
        let (mut peer, offer_sdp, pending) = offer(now, video);
        let (leg, answer) =
            WebRtcLeg::accept(now, &offer_sdp, &cfg).unwrap_or_else(|e| panic!("{e}"));
        let answer_sdp = SdpAnswer::from_sdp_string(&answer).unwrap_or_else(|e| panic!("{e}"));
        peer.rtc
            .sdp_api()
            .accept_answer(pending, answer_sdp)
            .unwrap_or_else(|e| panic!("{e}"));
        (now, peer, leg, answer)
    }

    /// Moves datagrams both ways and advances virtual time by `step`.
    fn pump(now: &mut Instant, step: Duration, peer: &mut Peer, leg: &mut WebRtcLeg) {
        let end = *now + step;
        loop {
            loop {
                match peer.rtc.poll_output() {
                    Ok(Output::Timeout(_)) => break,
                    Ok(Output::Transmit(t)) => {
                        let _ = leg.handle_input(*now, addr(CLIENT), addr(SERVER), &t.contents);
                    }
                    Ok(Output::Event(Event::Connected)) => peer.connected = true,
                    Ok(Output::Event(Event::KeyframeRequest(k))) => {
                        peer.keyframe_requests.push(k.kind)
                    }
                    Ok(Output::Event(Event::MediaData(m)))
                        if m.params.spec().codec == Codec::Vp8 =>
                    {
                        peer.video_frames.push(m.data.to_vec())
                    }
                    Ok(Output::Event(Event::MediaData(m))) => {
                        peer.stream.push((**m.seq_range.start(), m.time.numer()));
                        if m.audio_start_of_talk_spurt {
                            peer.talkspurts.push(**m.seq_range.start());
                        }
                        let mut pcm = vec![0i16; 960];
                        if m.params.spec().codec == Codec::Opus
                            && peer.dec.decode(&m.data, &mut pcm).is_ok()
                        {
                            peer.heard.extend_from_slice(&pcm);
                        }
                    }
                    Ok(Output::Event(_)) => {}
                    Err(e) => panic!("client: {e}"),
                }
            }
            let mut any = false;
            while let Some(t) = leg.poll_transmit() {
                any = true;
                let r = Receive::new(Protocol::Udp, addr(SERVER), addr(CLIENT), &t.contents)
                    .unwrap_or_else(|e| panic!("{e}"));
                peer.rtc
                    .handle_input(Input::Receive(*now, r))
                    .unwrap_or_else(|e| panic!("client input: {e}"));
            }
            if any {
                continue;
            }
            let next = (*now + Duration::from_millis(1)).min(end);
            if next >= end && *now >= end {
                break;
            }
            *now = next;
            let _ = peer.rtc.handle_input(Input::Timeout(*now));
            if leg.poll_timeout() <= *now {
                leg.handle_timeout(*now);
            }
        }
    }

    fn until_connected(now: &mut Instant, peer: &mut Peer, leg: &mut WebRtcLeg) {
        for _ in 0..500 {
            if peer.connected && leg.is_connected() {
                return;
            }
            pump(now, Duration::from_millis(10), peer, leg);
        }
        panic!("no connection in 5 s of virtual time");
    }

    #[test]
    fn answers_ice_lite_with_opus_and_telephone_event_and_rejects_video_when_told_to() {
        let cfg = WebRtcLegConfig {
            video: false,
            ..WebRtcLegConfig::new(addr(SERVER), MIX)
        };
        let (_, _, leg, answer) = connect_with(true, cfg);
        assert!(!leg.sends_video());
        assert_eq!(leg.video_slots(), 0);
        assert!(answer.contains("a=ice-lite"), "{answer}");
        assert!(answer.contains("opus/48000/2"), "{answer}");
        assert!(answer.contains("telephone-event/48000"), "{answer}");
        assert!(answer.contains("a=candidate:"), "{answer}");
        assert!(answer.contains("127.0.0.1 10000"), "{answer}");
        let video = answer
            .split("m=")
            .find(|m| m.starts_with("video"))
            .unwrap_or_else(|| panic!("no video m-line in the answer:\n{answer}"));
        assert!(
            video.starts_with("video 0 "),
            "video not rejected:\n{answer}"
        );
    }

    /// An offer as a browser sends it: BUNDLE of audio, video and data, many audio codecs,
    /// telephone-event at two rates, SSRC lines and a host candidate.
    const BROWSER_OFFER: &str = "v=0\r\n\
o=- 4611731400430051336 2 IN IP4 127.0.0.1\r\n\
s=-\r\n\
t=0 0\r\n\
a=group:BUNDLE 0 1 2\r\n\
a=extmap-allow-mixed\r\n\
a=msid-semantic: WMS stream\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126\r\n\
c=IN IP4 0.0.0.0\r\n\
a=rtcp:9 IN IP4 0.0.0.0\r\n\
a=candidate:1 1 udp 2122260223 127.0.0.1 50000 typ host generation 0 network-id 1\r\n\
a=ice-ufrag:Abcd\r\n\
a=ice-pwd:0123456789abcdefghijklmn\r\n\
a=ice-options:trickle\r\n\
a=fingerprint:sha-256 6B:8B:5D:EA:59:04:20:23:29:C8:87:1C:CC:87:32:BE:DD:8C:66:A5:8E:50:55:EA:8C:D3:B6:5C:09:5E:D6:BC\r\n\
a=setup:actpass\r\n\
a=mid:0\r\n\
a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level\r\n\
a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time\r\n\
a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01\r\n\
a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid\r\n\
a=sendrecv\r\n\
a=msid:stream track-a\r\n\
a=rtcp-mux\r\n\
a=rtcp-rsize\r\n\
a=rtpmap:111 opus/48000/2\r\n\
a=rtcp-fb:111 transport-cc\r\n\
a=fmtp:111 minptime=10;useinbandfec=1\r\n\
a=rtpmap:63 red/48000/2\r\n\
a=fmtp:63 111/111\r\n\
a=rtpmap:9 G722/8000\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:13 CN/8000\r\n\
a=rtpmap:110 telephone-event/48000\r\n\
a=rtpmap:126 telephone-event/8000\r\n\
a=ssrc:1001 cname:abcdefghijklmnop\r\n\
a=ssrc:1001 msid:stream track-a\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96 97\r\n\
c=IN IP4 0.0.0.0\r\n\
a=rtcp:9 IN IP4 0.0.0.0\r\n\
a=ice-ufrag:Abcd\r\n\
a=ice-pwd:0123456789abcdefghijklmn\r\n\
a=ice-options:trickle\r\n\
a=fingerprint:sha-256 6B:8B:5D:EA:59:04:20:23:29:C8:87:1C:CC:87:32:BE:DD:8C:66:A5:8E:50:55:EA:8C:D3:B6:5C:09:5E:D6:BC\r\n\
a=setup:actpass\r\n\
a=mid:1\r\n\
a=sendrecv\r\n\
a=msid:stream track-v\r\n\
a=rtcp-mux\r\n\
a=rtcp-rsize\r\n\
a=rtpmap:96 VP8/90000\r\n\
a=rtcp-fb:96 nack\r\n\
a=rtcp-fb:96 nack pli\r\n\
a=rtpmap:97 rtx/90000\r\n\
a=fmtp:97 apt=96\r\n\
a=ssrc-group:FID 2001 2002\r\n\
a=ssrc:2001 cname:abcdefghijklmnop\r\n\
a=ssrc:2002 cname:abcdefghijklmnop\r\n\
m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n\
c=IN IP4 0.0.0.0\r\n\
a=ice-ufrag:Abcd\r\n\
a=ice-pwd:0123456789abcdefghijklmn\r\n\
a=ice-options:trickle\r\n\
a=fingerprint:sha-256 6B:8B:5D:EA:59:04:20:23:29:C8:87:1C:CC:87:32:BE:DD:8C:66:A5:8E:50:55:EA:8C:D3:B6:5C:09:5E:D6:BC\r\n\
a=setup:actpass\r\n\
a=mid:2\r\n\
a=sctp-port:5000\r\n\
a=max-message-size:262144\r\n";

    #[test]
    fn answers_video_with_vp8_and_h264_as_a_sending_and_receiving_m_line() {
        let (_, _, leg, answer) = connect(true);
        let video = answer
            .split("m=")
            .find(|m| m.starts_with("video"))
            .unwrap_or_else(|| panic!("no video m-line in the answer:\n{answer}"));
        assert!(!video.starts_with("video 0 "), "video rejected:\n{answer}");
        assert!(video.contains("VP8/90000"), "{video}");
        assert!(video.contains("a=sendrecv"), "{video}");
        assert!(video.contains("nack pli"), "{video}");
        assert!(leg.sends_video());
        assert_eq!(leg.video_slots(), 1);
    }

    /// A VP8 frame the way an encoder starts a keyframe (frame tag, start code), numbered.
    fn vp8_frame(i: u8) -> Vec<u8> {
        let mut frame = vec![0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0xe0, 0x01];
        frame.extend(std::iter::repeat_n(i, 300));
        frame
    }

    /// Two connected peers with video, A's camera forwarded to B's slot 0 (as the engine does).
    struct VideoPath {
        now: Instant,
        a: Peer,
        leg_a: WebRtcLeg,
        b: Peer,
        leg_b: WebRtcLeg,
    }

    fn video_path() -> VideoPath {
        let (t_a, mut a, mut leg_a, _) = connect(true);
        let (t_b, mut b, mut leg_b, _) = connect(true);
        let mut now = t_a.max(t_b);
        until_connected(&mut now, &mut a, &mut leg_a);
        until_connected(&mut now, &mut b, &mut leg_b);
        VideoPath {
            now,
            a,
            leg_a,
            b,
            leg_b,
        }
    }

    /// Whether an SRTP datagram is RTP of a dynamic payload type (video here), not RTCP.
    fn is_video_rtp(datagram: &[u8]) -> bool {
        datagram.len() > 12 && (96..=127).contains(&(datagram[1] & 0x7f))
    }

    impl VideoPath {
        /// A sends `count` frames at 30 fps, B's leg forwards each; the video datagram number
        /// `lose` (from 0) on the way from B's leg to B is lost. The frames sent.
        fn send_frames(&mut self, count: u8, lose: Option<usize>) -> Vec<Vec<u8>> {
            let a_video = self
                .a
                .video_mid
                .unwrap_or_else(|| panic!("no video m-line"));
            let mut sent = Vec::new();
            let mut video_datagrams = 0;
            for i in 0..count {
                let frame = vp8_frame(i);
                let writer = self
                    .a
                    .rtc
                    .writer(a_video)
                    .unwrap_or_else(|| panic!("no writer"));
                let pt = writer
                    .payload_params()
                    .find(|p| p.spec().codec == Codec::Vp8)
                    .map(|p| p.pt())
                    .unwrap_or_else(|| panic!("no VP8"));
                writer
                    .write(
                        pt,
                        self.now,
                        MediaTime::from_90khz(u64::from(i) * 3000),
                        frame.clone(),
                    )
                    .unwrap_or_else(|e| panic!("{e}"));
                sent.push(frame);
                pump(
                    &mut self.now,
                    Duration::from_millis(16),
                    &mut self.a,
                    &mut self.leg_a,
                );
                while let Some(packet) = self.leg_a.take_video() {
                    assert_eq!(packet.codec, VideoCodec::Vp8);
                    self.leg_b.forward_video(self.now, 0, 7, &packet);
                }
                while let Some(t) = self.leg_b.poll_transmit() {
                    if is_video_rtp(&t.contents) {
                        video_datagrams += 1;
                        if lose == Some(video_datagrams - 1) {
                            continue;
                        }
                    }
                    let r = Receive::new(Protocol::Udp, addr(SERVER), addr(CLIENT), &t.contents)
                        .unwrap_or_else(|e| panic!("{e}"));
                    let _ = self.b.rtc.handle_input(Input::Receive(self.now, r));
                }
                pump(
                    &mut self.now,
                    Duration::from_millis(17),
                    &mut self.b,
                    &mut self.leg_b,
                );
            }
            // Time for a last repair.
            pump(
                &mut self.now,
                Duration::from_millis(200),
                &mut self.b,
                &mut self.leg_b,
            );
            sent
        }
    }

    #[test]
    fn a_video_packet_lost_towards_the_receiver_is_resent_from_the_legs_cache() {
        let mut path = video_path();
        let sent = path.send_frames(20, Some(4));
        // Frame 4's only packet was lost on the last hop; B's NACK brought it back.
        assert_eq!(
            path.b.video_frames, sent,
            "every frame arrives whole, in order"
        );
    }

    #[test]
    fn video_is_forwarded_as_it_is_and_a_receivers_keyframe_request_reaches_the_sender() {
        let mut path = video_path();
        let sent = path.send_frames(20, None);
        assert_eq!(
            path.b.video_frames, sent,
            "B sees A's frames, in order, as they were"
        );
        let VideoPath {
            mut now,
            mut a,
            mut leg_a,
            mut b,
            mut leg_b,
        } = path;
        let b_video = b.video_mid.unwrap_or_else(|| panic!("no video m-line"));
        assert!(leg_b.stats().video_sent > 0);

        // B's decoder lost the picture: its PLI reaches A's camera through both legs.
        b.rtc
            .writer(b_video)
            .unwrap_or_else(|| panic!("no writer"))
            .request_keyframe(None, KeyframeRequestKind::Pli)
            .unwrap_or_else(|e| panic!("{e}"));
        let mut asked = None;
        for _ in 0..50 {
            pump(&mut now, Duration::from_millis(10), &mut b, &mut leg_b);
            while let Some(event) = leg_b.poll_event() {
                if let LegEvent::KeyframeRequest(req) = event {
                    asked = Some(req);
                }
            }
            if asked.is_some() {
                break;
            }
        }
        let req = asked.unwrap_or_else(|| panic!("B's leg reported no keyframe request"));
        assert_eq!(req.slot, 0);
        assert!(a.keyframe_requests.is_empty());
        leg_a.request_keyframe(req.kind);
        for _ in 0..50 {
            pump(&mut now, Duration::from_millis(10), &mut a, &mut leg_a);
            if !a.keyframe_requests.is_empty() {
                break;
            }
        }
        assert_eq!(a.keyframe_requests, vec![KeyframeRequestKind::Pli]);
    }

    #[test]
    fn answers_a_browser_offer_with_its_opus_and_telephone_event_numbers() {
        let cfg = WebRtcLegConfig::new(addr(SERVER), MIX);
        let (leg, answer) = WebRtcLeg::accept(Instant::now(), BROWSER_OFFER, &cfg)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(answer.contains("a=rtpmap:111 opus/48000/2"), "{answer}");
        assert!(
            answer.contains("a=rtpmap:110 telephone-event/48000"),
            "{answer}"
        );
        assert!(!answer.contains("telephone-event/8000"), "{answer}");
        assert!(!answer.contains("PCMU"), "{answer}");
        // Video keeps the browser's numbers too (VP8 with its RTX).
        assert!(answer.contains("a=rtpmap:96 VP8/90000"), "{answer}");
        assert!(answer.contains("a=fmtp:97 apt=96"), "{answer}");
        assert_eq!((*leg.opus_pt, leg.tele_pt.map(|p| *p)), (111, Some(110)));
        assert_eq!(leg.video_pts, vec![(96.into(), VideoCodec::Vp8)]);
    }

    #[test]
    fn one_way_offers_are_answered_the_other_way() {
        let cfg = WebRtcLegConfig::new(addr(SERVER), MIX);
        for (offered, answered) in [
            ("a=sendrecv", "a=sendrecv"),
            ("a=sendonly", "a=recvonly"),
            ("a=recvonly", "a=sendonly"),
        ] {
            let offer = BROWSER_OFFER.replacen("a=sendrecv", offered, 1);
            let (_, answer) = WebRtcLeg::accept(Instant::now(), &offer, &cfg)
                .unwrap_or_else(|e| panic!("{offered}: {e}"));
            let audio = answer.split("m=video").next().unwrap_or_default();
            assert!(audio.contains(answered), "{offered}:\n{answer}");
        }
    }

    #[test]
    fn a_panic_inside_str0m_ends_only_that_leg() {
        let (mut now, mut peer, mut leg, _) = connect(false);
        until_connected(&mut now, &mut peer, &mut leg);
        assert_eq!(leg.poll_event(), Some(LegEvent::Connected));
        let mid = leg.mid;
        // str0m panics when asked for its frame-level writer in RTP mode: a stand-in for a
        // str0m bug reached by a peer's packets.
        assert_eq!(leg.guard("test", |rtc| rtc.writer(mid).is_some()), None);
        assert!(leg.is_gone());
        assert_eq!(leg.poll_event(), Some(LegEvent::Disconnected));
        assert_eq!(leg.failure(), Some("test"));
        // The leg stays inert and safe to drive until the driver drops it.
        assert!(leg
            .handle_input(now, addr(CLIENT), addr(SERVER), &[0x80; 40])
            .is_err());
        leg.handle_timeout(now);
        assert_eq!(leg.push_frame(now, &[0; 960]), Ok(()));
        leg.close();
        assert!(!leg.accepts(now, addr(CLIENT), addr(SERVER), &[0x80; 40]));
        assert_eq!(leg.poll_event(), None);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]

        /// Offers with lines dropped or cut short are answered or refused, never a panic.
        #[test]
        fn damaged_offers_never_panic(
            drop in proptest::collection::vec(proptest::prelude::any::<bool>(), 80),
            cut in 0usize..4000,
        ) {
            let cfg = WebRtcLegConfig::new(addr(SERVER), MIX);
            let lines: Vec<&str> = BROWSER_OFFER
                .split("\r\n")
                .zip(drop.iter().chain(std::iter::repeat(&false)))
                .filter(|(_, d)| !**d)
                .map(|(l, _)| l)
                .collect();
            let offer = lines.join("\r\n");
            let offer = offer.get(..cut.min(offer.len())).unwrap_or(&offer);
            match WebRtcLeg::accept(Instant::now(), offer, &cfg) {
                Ok((_, answer)) => proptest::prop_assert!(answer.contains("opus/48000/2")),
                Err(WebRtcError::Offer(reason)) => proptest::prop_assert!(!reason.is_empty()),
                Err(other) => proptest::prop_assert!(false, "{other}"),
            }
        }
    }

    #[test]
    fn junk_datagrams_leave_a_connected_leg_working() {
        let (mut now, mut peer, mut leg, _) = connect(false);
        until_connected(&mut now, &mut peer, &mut leg);
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        // STUN, DTLS and RTP/RTCP first bytes (RFC 7983 ranges) and anything else.
        for first in [0u8, 1, 20, 23, 63, 128, 129, 200, 255] {
            for len in [0usize, 1, 12, 20, 40, 200, 1500] {
                let mut d: Vec<u8> = (0..len).map(|_| next() as u8).collect();
                if let Some(b) = d.first_mut() {
                    *b = first;
                }
                let _ = leg.handle_input(now, addr(CLIENT), addr(SERVER), &d);
                let _ = leg.accepts(now, addr("127.0.0.1:6000"), addr(SERVER), &d);
            }
        }
        assert!(leg.is_connected() && !leg.is_gone(), "{:?}", leg.failure());
        pump(&mut now, Duration::from_millis(100), &mut peer, &mut leg);
        assert!(leg.is_connected());
    }

    #[test]
    fn bad_offers_are_errors_with_a_reason() {
        let cfg = WebRtcLegConfig::new(addr(SERVER), MIX);
        let now = Instant::now();
        for bad in ["", "v=0\r\nnonsense", "hello"] {
            match WebRtcLeg::accept(now, bad, &cfg) {
                Err(WebRtcError::Offer(reason)) => assert!(!reason.is_empty()),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn tones_cross_both_ways_and_dtmf_is_reported_once() {
        let (mut now, mut peer, mut leg, _) = connect(false);
        until_connected(&mut now, &mut peer, &mut leg);
        assert_eq!(leg.poll_event(), Some(LegEvent::Connected));

        let mut enc = OpusEncoder::new(OpusConfig {
            sample_rate: MIX,
            ..OpusConfig::default()
        })
        .unwrap_or_else(|e| panic!("{e}"));
        let mut from_client = Sine::new(440.0, MIX, 8000);
        let mut from_leg = Sine::new(1000.0, MIX, 8000);
        let pt = peer
            .rtc
            .codec_config()
            .find(|p| p.spec().codec == Codec::Opus)
            .map(|p| p.pt())
            .unwrap_or_else(|| panic!("opus pt"));
        let mut heard_by_leg = Vec::new();
        let mut packet = [0u8; MAX_PACKET];
        for i in 0..60u64 {
            let n = enc
                .encode(&from_client.take(960), &mut packet)
                .unwrap_or_else(|e| panic!("{e}"));
            let mut writer = peer
                .rtc
                .writer(peer.mid)
                .unwrap_or_else(|| panic!("writer"));
            if i == 30 {
                writer = writer.telephone_event(TelephoneEvent {
                    event: 5,
                    end: true,
                    volume: 10,
                    duration: Duration::from_millis(100),
                });
            }
            let time = MediaTime::new(i * 960, Frequency::FORTY_EIGHT_KHZ);
            writer
                .write(pt, now, time, &packet[..n])
                .unwrap_or_else(|e| panic!("{e}"));
            pump(&mut now, Duration::ZERO, &mut peer, &mut leg);
            let (pcm, _) = leg.pull_frame(now);
            heard_by_leg.extend_from_slice(pcm);
            leg.push_frame(now, &from_leg.take(960))
                .unwrap_or_else(|e| panic!("{e}"));
            pump(&mut now, Duration::from_millis(20), &mut peer, &mut leg);
        }
        let tail = &heard_by_leg[heard_by_leg.len() - 9600..];
        assert!(tone_ratio(tail, 440.0, MIX) > 0.5, "leg hears the client");
        assert!(tone_ratio(tail, 1000.0, MIX) < 0.05);
        let tail = &peer.heard[peer.heard.len().saturating_sub(9600)..];
        assert_eq!(tail.len(), 9600, "client received audio");
        assert!(tone_ratio(tail, 1000.0, MIX) > 0.5, "client hears the leg");
        assert!(tone_ratio(tail, 440.0, MIX) < 0.05);

        let digits: Vec<char> = std::iter::from_fn(|| leg.poll_event())
            .filter_map(|e| match e {
                LegEvent::Dtmf(d) => d.digit(),
                _ => None,
            })
            .collect();
        assert_eq!(digits, vec!['5']);
        let st = leg.stats();
        assert!(st.opus_received >= 55 && st.sent >= 55, "{st:?}");
        assert_eq!(st.jitter.lost, 0, "telephone-events are not loss: {st:?}");
    }

    /// Writes one 20 ms Opus packet of `gen` from the client, at frame `i`.
    fn client_sends(now: Instant, peer: &mut Peer, enc: &mut OpusEncoder, gen: &mut Sine, i: u64) {
        let mut packet = [0u8; MAX_PACKET];
        let n = enc
            .encode(&gen.take(960), &mut packet)
            .unwrap_or_else(|e| panic!("{e}"));
        let pt = peer
            .rtc
            .codec_config()
            .find(|p| p.spec().codec == Codec::Opus)
            .map(|p| p.pt())
            .unwrap_or_else(|| panic!("opus pt"));
        let writer = peer
            .rtc
            .writer(peer.mid)
            .unwrap_or_else(|| panic!("writer"));
        let time = MediaTime::new(i * 960, Frequency::FORTY_EIGHT_KHZ);
        writer
            .write(pt, now, time, &packet[..n])
            .unwrap_or_else(|e| panic!("{e}"));
    }

    /// The direct path encodes a phone's audio with its own complexity, everything else as
    /// the leg's Opus settings.
    #[test]
    fn direct_encoder_takes_its_complexity_and_the_rest_of_the_settings() {
        let mut cfg = WebRtcLegConfig::new(addr(SERVER), MIX);
        cfg.opus.complexity = 7;
        cfg.opus.bitrate = 20_000;
        cfg.direct_complexity = 1;
        let (_, _, mut leg, _) = connect_with(false, cfg);
        leg.set_direct(true).unwrap_or_else(|e| panic!("{e}"));
        let direct = leg
            .direct
            .as_mut()
            .unwrap_or_else(|| panic!("direct codecs"));
        assert_eq!(direct.enc.complexity().ok(), Some(1));
        assert_eq!(direct.enc.bitrate().ok(), Some(20_000));
        assert_eq!(leg.outbound.enc.complexity().ok(), Some(7));
    }

    /// With DTX, silence is not sent on either path, and the first packet after it carries the
    /// marker bit; without, every 20 ms goes out.
    #[test]
    fn dtx_leaves_silence_unsent_and_marks_the_talkspurt_after_it() {
        for dtx in [false, true] {
            let mut cfg = WebRtcLegConfig::new(addr(SERVER), MIX);
            cfg.opus.dtx = dtx;
            let (mut now, mut peer, mut leg, _) = connect_with(false, cfg);
            until_connected(&mut now, &mut peer, &mut leg);
            for direct in [false, true] {
                leg.set_direct(direct).unwrap_or_else(|e| panic!("{e}"));
                let (rate, samples) = if direct { (8000, 160) } else { (MIX, 960) };
                let silence = vec![0i16; samples];
                let mut tone = Sine::new(1000.0, rate, 8000);
                let send = |leg: &mut WebRtcLeg, now: Instant, pcm: &[i16]| {
                    let sent = if direct {
                        leg.send_direct_pcm(now, pcm)
                    } else {
                        leg.push_frame(now, pcm)
                    };
                    sent.unwrap_or_else(|e| panic!("{e}"));
                };
                let before = peer.stream.len();
                for _ in 0..50 {
                    send(&mut leg, now, &silence);
                    pump(&mut now, Duration::from_millis(20), &mut peer, &mut leg);
                }
                let in_silence = peer.stream.len() - before;
                let spurts = peer.talkspurts.len();
                let heard = peer.heard.len();
                for _ in 0..25 {
                    send(&mut leg, now, &tone.take(samples));
                    pump(&mut now, Duration::from_millis(20), &mut peer, &mut leg);
                }
                let in_tone = peer.stream.len() - before - in_silence;
                let what = format!("dtx {dtx}, direct {direct}");
                assert!(
                    tone_ratio(&peer.heard[heard..], 1000.0, MIX) > 0.5,
                    "{what}: tone heard"
                );
                assert_eq!(in_tone, 25, "{what}: every frame of the tone sent");
                if dtx {
                    assert!(
                        in_silence < 15,
                        "{what}: {in_silence} packets of silence sent"
                    );
                    let first_of_tone = peer.stream[before + in_silence].0;
                    assert_eq!(
                        peer.talkspurts.get(spurts),
                        Some(&first_of_tone),
                        "{what}: the tone starts a talkspurt"
                    );
                } else {
                    assert_eq!(in_silence, 50, "{what}: silence sent");
                    assert_eq!(peer.talkspurts.len(), spurts, "{what}: no talkspurt marked");
                }
            }
        }
    }

    /// The direct path of a two-party room: a received packet is there for the driver in the
    /// same call that took the datagram, audio sent goes out at once, and the outbound stream
    /// runs on without a break through the switches from and back to mixing.
    #[test]
    fn direct_path_forwards_at_once_and_keeps_the_stream_continuous() {
        let (mut now, mut peer, mut leg, _) = connect(false);
        until_connected(&mut now, &mut peer, &mut leg);
        let mut enc = OpusEncoder::new(OpusConfig {
            sample_rate: MIX,
            ..OpusConfig::default()
        })
        .unwrap_or_else(|e| panic!("{e}"));
        let mut from_client = Sine::new(440.0, MIX, 8000);
        let mut wide = Sine::new(1000.0, MIX, 8000);
        let mut narrow = Sine::new(1000.0, 8000, 8000);

        // Mixing: one frame per tick.
        for _ in 0..10 {
            leg.push_frame(now, &wide.take(960))
                .unwrap_or_else(|e| panic!("{e}"));
            pump(&mut now, Duration::from_millis(20), &mut peer, &mut leg);
        }
        assert_eq!(leg.take_direct_pcm().map(|_| ()), None, "not direct yet");

        leg.set_direct(true).unwrap_or_else(|e| panic!("{e}"));
        let mut heard_by_leg = Vec::new();
        for i in 0..25u64 {
            client_sends(now, &mut peer, &mut enc, &mut from_client, i);
            // The client's pacer lets the packet go within a millisecond or two; the leg
            // holds it for the driver from the datagram on, with no tick in between.
            let mut got = None;
            for _ in 0..20 {
                pump(&mut now, Duration::from_millis(1), &mut peer, &mut leg);
                got = leg.take_direct_pcm().map(|(m, p)| (m, p.to_vec()));
                if got.is_some() {
                    break;
                }
            }
            let (meta, pcm) = got.unwrap_or_else(|| panic!("packet {i} not forwarded"));
            assert_eq!(pcm.len(), 160);
            assert_eq!(meta.timestamp.wrapping_sub(i as u32 * 960) as u64 % 960, 0);
            heard_by_leg.extend_from_slice(&pcm);
            assert!(leg.take_direct_pcm().is_none(), "each packet once");
            let sent = leg.stats().sent;
            leg.send_direct_pcm(now, &narrow.take(160))
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(leg.stats().sent, sent + 1, "sent in the same call");
            assert!(
                !leg.transmits.is_empty(),
                "the SRTP packet is ready to send"
            );
            pump(&mut now, Duration::from_millis(15), &mut peer, &mut leg);
        }
        assert!(tone_ratio(&heard_by_leg[1600..], 440.0, 8000) > 0.5);
        let tail = &peer.heard[peer.heard.len() - 9600..];
        assert!(
            tone_ratio(tail, 1000.0, MIX) > 0.5,
            "client hears 8 kHz audio"
        );

        // Browser to browser: packets pass as they are.
        client_sends(now, &mut peer, &mut enc, &mut from_client, 25);
        let mut got = None;
        for _ in 0..20 {
            pump(&mut now, Duration::from_millis(1), &mut peer, &mut leg);
            got = leg.take_direct_opus().map(|(m, p, u)| (m, p.to_vec(), u));
            if got.is_some() {
                break;
            }
        }
        let (_, payload, units) = got.unwrap_or_else(|| panic!("no packet"));
        assert_eq!(units, 960);
        leg.send_direct_opus(now, &payload, units);
        // Lost upstream: the stream skips 20 ms.
        leg.skip(960);
        pump(&mut now, Duration::from_millis(40), &mut peer, &mut leg);

        leg.set_direct(false).unwrap_or_else(|e| panic!("{e}"));
        for _ in 0..10 {
            leg.push_frame(now, &wide.take(960))
                .unwrap_or_else(|e| panic!("{e}"));
            pump(&mut now, Duration::from_millis(20), &mut peer, &mut leg);
        }
        let stream = &peer.stream;
        assert_eq!(stream.len(), 10 + 25 + 1 + 10, "{stream:?}");
        for (k, w) in stream.windows(2).enumerate() {
            assert_eq!(
                w[1].0,
                w[0].0 + 1,
                "sequence numbers run on: {k} {stream:?}"
            );
            let step = if k == 35 { 1920 } else { 960 };
            assert_eq!(w[1].1, w[0].1 + step, "timestamps run on: {k} {stream:?}");
        }
    }
}

//! A WebRTC participant for tests, built on str0m like a browser would behave: full ICE
//! (controlling), DTLS-SRTP, one audio m-line with Opus and telephone-event. It sends a sine
//! tone (or a loop of pre-encoded frames, for load benchmarks) as 20 ms Opus frames in real time
//! from its own thread and keeps the last seconds of what it hears, decoded at 48 kHz, so tests
//! can ask which tones it hears; it also counts lost packets and times loud onsets.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use dialbridge_bridge::opus_codec::{OpusConfig, OpusDecoder, OpusEncoder, MAX_PACKET};
use dialbridge_bridge::testing::{tone_ratio_blocks, Sine};
use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::format::{Codec, FormatParams};
use str0m::media::{Direction, Frequency, MediaKind, MediaTime, Mid, TelephoneEvent};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc, RtcConfig};

pub const RATE: u32 = 48_000;
const FRAME: usize = 960;
/// How much received audio is kept.
const KEEP: usize = RATE as usize * 2;

/// A decoded frame with a sample at least this loud after a quieter frame is an onset.
pub const LOUD: i16 = 8000;

#[derive(Default)]
struct Shared {
    connected: bool,
    heard: VecDeque<i16>,
    frames: u64,
    failed: Option<String>,
    /// RTP packets missing between the ones received (sequence number gaps).
    lost: u64,
    last_seq: Option<u64>,
    /// When the first frame of each loop went out (a [`Source::Loop`] client).
    marks: Vec<Instant>,
    /// When a loud frame arrived after a quiet one.
    onsets: Vec<Instant>,
    last_peak: i16,
}

/// What a client sends.
#[derive(Clone)]
pub enum Source {
    /// A sine tone of this frequency, encoded as it goes (0: silence).
    Tone(f64),
    /// Opus frames sent over and over; the first of each round is a mark (see
    /// [`WebRtcClient::take_timing`]). Encoded once, so many clients cost little CPU.
    Loop(Arc<Vec<Vec<u8>>>),
}

/// One second of Opus frames for [`Source::Loop`]: a loud 1 kHz burst of 100 ms, then a quiet
/// 440 Hz tone. The burst's arrival back at the client (an echoing phone) times the round trip.
pub fn marked_loop() -> Result<Arc<Vec<Vec<u8>>>, String> {
    let mut enc = OpusEncoder::new(OpusConfig {
        sample_rate: RATE,
        ..OpusConfig::default()
    })
    .map_err(|e| e.to_string())?;
    let mut burst = Sine::new(1000.0, RATE, 16000);
    let mut quiet = Sine::new(440.0, RATE, 1000);
    let mut pcm = vec![0i16; FRAME];
    let mut packet = vec![0u8; MAX_PACKET];
    let mut frames = Vec::new();
    for i in 0..50 {
        if i < 5 {
            burst.fill(&mut pcm);
        } else {
            quiet.fill(&mut pcm);
        }
        let n = enc.encode(&pcm, &mut packet).map_err(|e| e.to_string())?;
        frames.push(packet[..n].to_vec());
    }
    Ok(Arc::new(frames))
}

/// A browser-like peer's configuration: full ICE, DTLS-SRTP, Opus and telephone-event (and VP8
/// when `video`).
pub fn rtc_config(video: bool) -> RtcConfig {
    let mut config = Rtc::builder()
        .set_crypto_provider(Arc::new(str0m::crypto::from_feature_flags()))
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
    config
}

/// The loudest sample of a decoded frame; a frame at least [`LOUD`] after a quieter one is an
/// onset.
pub fn peak(decoded: &[i16]) -> i16 {
    decoded
        .iter()
        .map(|x| x.saturating_abs())
        .max()
        .unwrap_or(0)
}

/// A client before its offer is answered.
pub struct Offer {
    rtc: Rtc,
    socket: UdpSocket,
    mid: Mid,
    pending: SdpPendingOffer,
    pub sdp: String,
}

/// No key press pending.
const NO_KEY: u8 = u8::MAX;

/// A running client.
pub struct WebRtcClient {
    shared: Arc<Mutex<Shared>>,
    stop: Arc<AtomicBool>,
    key: Arc<AtomicU8>,
    thread: Option<JoinHandle<()>>,
    pub local: SocketAddr,
}

impl Offer {
    /// A client with an audio m-line (and a video one when `video`), on a loopback socket.
    pub fn new(video: bool) -> Offer {
        let mut rtc = rtc_config(video).build(Instant::now());
        let socket = UdpSocket::bind("127.0.0.1:0").expect("client socket");
        let local = socket.local_addr().expect("local addr");
        rtc.add_local_candidate(Candidate::host(local, "udp").expect("candidate"));
        let mut change = rtc.sdp_api();
        let mid = change.add_media(MediaKind::Audio, Direction::SendRecv, None, None, None);
        if video {
            change.add_media(MediaKind::Video, Direction::SendRecv, None, None, None);
        }
        let (offer, pending) = change.apply().expect("an offer");
        Offer {
            rtc,
            socket,
            mid,
            pending,
            sdp: offer.to_sdp_string(),
        }
    }

    /// Applies the gateway's answer and starts sending `tone_hz` (0: silence).
    pub fn start(self, answer: &str, tone_hz: f64) -> WebRtcClient {
        self.start_with(answer, Source::Tone(tone_hz))
    }

    /// Applies the gateway's answer and starts sending `source`.
    pub fn start_with(mut self, answer: &str, source: Source) -> WebRtcClient {
        let answer = SdpAnswer::from_sdp_string(answer).expect("answer parses");
        self.rtc
            .sdp_api()
            .accept_answer(self.pending, answer)
            .expect("answer accepted");
        let shared = Arc::new(Mutex::new(Shared::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let key = Arc::new(AtomicU8::new(NO_KEY));
        let local = self.socket.local_addr().expect("local addr");
        let thread = {
            let (shared, stop, key) = (shared.clone(), stop.clone(), key.clone());
            let (rtc, socket, mid) = (self.rtc, self.socket, self.mid);
            std::thread::spawn(move || {
                if let Err(e) = run(rtc, socket, mid, source, &shared, &stop, &key) {
                    shared.lock().expect("lock").failed = Some(e);
                }
            })
        };
        WebRtcClient {
            shared,
            stop,
            key,
            thread: Some(thread),
            local,
        }
    }
}

impl WebRtcClient {
    pub fn connected(&self) -> bool {
        self.shared.lock().expect("lock").connected
    }

    pub fn failure(&self) -> Option<String> {
        self.shared.lock().expect("lock").failed.clone()
    }

    /// Presses a key: RFC 4733 event `event` (0-9, 10 *, 11 #) for 100 ms, sent with the next frame.
    pub fn press(&self, event: u8) {
        self.key.store(event, Ordering::Relaxed);
    }

    /// Audio frames received so far.
    pub fn frames(&self) -> u64 {
        self.shared.lock().expect("lock").frames
    }

    /// RTP packets lost so far (gaps in the sequence numbers received).
    pub fn lost(&self) -> u64 {
        self.shared.lock().expect("lock").lost
    }

    /// The marks sent and the onsets heard since the last call.
    pub fn take_timing(&self) -> (Vec<Instant>, Vec<Instant>) {
        let mut shared = self.shared.lock().expect("lock");
        (
            std::mem::take(&mut shared.marks),
            std::mem::take(&mut shared.onsets),
        )
    }

    /// The last `ms` milliseconds heard (fewer when less was received).
    pub fn heard(&self, ms: usize) -> Vec<i16> {
        let shared = self.shared.lock().expect("lock");
        let n = (RATE as usize * ms / 1000).min(shared.heard.len());
        shared
            .heard
            .iter()
            .skip(shared.heard.len() - n)
            .copied()
            .collect()
    }

    /// Share of `freq` in the last half second heard (Goertzel over 20 ms blocks).
    pub fn hears(&self, freq: f64) -> f64 {
        let heard = self.heard(500);
        if heard.len() < RATE as usize / 2 {
            return 0.0;
        }
        tone_ratio_blocks(&heard, freq, RATE, FRAME)
    }

    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for WebRtcClient {
    fn drop(&mut self) {
        self.stop();
    }
}

fn run(
    mut rtc: Rtc,
    socket: UdpSocket,
    mid: Mid,
    source: Source,
    shared: &Mutex<Shared>,
    stop: &AtomicBool,
    key: &AtomicU8,
) -> Result<(), String> {
    let local = socket.local_addr().map_err(|e| e.to_string())?;
    let mut enc = OpusEncoder::new(OpusConfig {
        sample_rate: RATE,
        ..OpusConfig::default()
    })
    .map_err(|e| e.to_string())?;
    let mut dec = OpusDecoder::new(RATE, 20).map_err(|e| e.to_string())?;
    let tone_hz = match &source {
        Source::Tone(hz) => *hz,
        Source::Loop(_) => 0.0,
    };
    let mut sine = Sine::new(tone_hz, RATE, if tone_hz > 0.0 { 8000 } else { 0 });
    let mut sent: usize = 0;
    let mut pcm = vec![0i16; FRAME];
    let mut decoded = vec![0i16; FRAME];
    let mut packet = vec![0u8; MAX_PACKET];
    let mut buf = vec![0u8; 2048];
    let mut connected = false;
    let mut next_send = Instant::now();
    let mut media_time: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        let timeout = loop {
            match rtc.poll_output().map_err(|e| e.to_string())? {
                Output::Timeout(t) => break t,
                Output::Transmit(t) => {
                    let _ = socket.send_to(&t.contents, t.destination);
                }
                Output::Event(Event::Connected) => {
                    connected = true;
                    next_send = Instant::now();
                    shared.lock().map_err(|e| e.to_string())?.connected = true;
                }
                Output::Event(Event::MediaData(m)) => {
                    if m.params.spec().codec == Codec::Opus
                        && dec.decode(&m.data, &mut decoded).is_ok()
                    {
                        let peak = peak(&decoded);
                        let (first, last) = (**m.seq_range.start(), **m.seq_range.end());
                        let mut s = shared.lock().map_err(|e| e.to_string())?;
                        if let Some(prev) = s.last_seq {
                            s.lost += first.saturating_sub(prev + 1);
                        }
                        s.last_seq = Some(last.max(s.last_seq.unwrap_or(0)));
                        if peak >= LOUD && s.last_peak < LOUD {
                            s.onsets.push(Instant::now());
                        }
                        s.last_peak = peak;
                        s.heard.extend(decoded.iter().copied());
                        let excess = s.heard.len().saturating_sub(KEEP);
                        s.heard.drain(..excess);
                        s.frames += 1;
                    }
                }
                Output::Event(_) => {}
            }
        };
        let now = Instant::now();
        if connected && now >= next_send {
            let n = match &source {
                Source::Tone(_) => {
                    sine.fill(&mut pcm);
                    enc.encode(&pcm, &mut packet).map_err(|e| e.to_string())?
                }
                Source::Loop(frames) => {
                    let frame = frames.get(sent % frames.len().max(1)).ok_or("empty loop")?;
                    packet
                        .get_mut(..frame.len())
                        .ok_or("loop frame too large")?
                        .copy_from_slice(frame);
                    if sent.is_multiple_of(frames.len()) {
                        shared.lock().map_err(|e| e.to_string())?.marks.push(now);
                    }
                    frame.len()
                }
            };
            sent += 1;
            let pt = rtc
                .codec_config()
                .find(|p| p.spec().codec == Codec::Opus)
                .map(|p| p.pt())
                .ok_or("no opus payload type")?;
            if let Some(mut writer) = rtc.writer(mid) {
                let event = key.swap(NO_KEY, Ordering::Relaxed);
                if event != NO_KEY {
                    writer = writer.telephone_event(TelephoneEvent {
                        event,
                        end: true,
                        volume: 10,
                        duration: Duration::from_millis(100),
                    });
                }
                let time = MediaTime::new(media_time, Frequency::FORTY_EIGHT_KHZ);
                writer
                    .write(pt, now, time, &packet[..n])
                    .map_err(|e| e.to_string())?;
            }
            media_time += FRAME as u64;
            next_send += Duration::from_millis(20);
            if now.duration_since(next_send) > Duration::from_millis(200) {
                next_send = now;
            }
            continue;
        }
        let mut wake = timeout.min(now + Duration::from_millis(50));
        if connected {
            wake = wake.min(next_send);
        }
        let wait = wake
            .saturating_duration_since(now)
            .max(Duration::from_millis(1));
        socket
            .set_read_timeout(Some(wait))
            .map_err(|e| e.to_string())?;
        let input = match socket.recv_from(&mut buf) {
            Ok((n, from)) => match Receive::new(Protocol::Udp, from, local, &buf[..n]) {
                Ok(r) => Input::Receive(Instant::now(), r),
                Err(_) => continue,
            },
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                Input::Timeout(Instant::now())
            }
            Err(e) => return Err(e.to_string()),
        };
        rtc.handle_input(input).map_err(|e| e.to_string())?;
    }
    Ok(())
}

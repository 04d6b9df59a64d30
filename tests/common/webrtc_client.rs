//! A WebRTC participant for tests, built on str0m like a browser would behave: full ICE
//! (controlling), DTLS-SRTP, one audio m-line with Opus and telephone-event. It sends a sine
//! tone as 20 ms Opus frames in real time from its own thread and keeps the last seconds of
//! what it hears, decoded at 48 kHz, so tests can ask which tones it hears.

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
use str0m::{Candidate, Event, Input, Output, Rtc};

pub const RATE: u32 = 48_000;
const FRAME: usize = 960;
/// How much received audio is kept.
const KEEP: usize = RATE as usize * 2;

#[derive(Default)]
struct Shared {
    connected: bool,
    heard: VecDeque<i16>,
    frames: u64,
    failed: Option<String>,
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
        let mut rtc = config.build(Instant::now());
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
    pub fn start(mut self, answer: &str, tone_hz: f64) -> WebRtcClient {
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
                if let Err(e) = run(rtc, socket, mid, tone_hz, &shared, &stop, &key) {
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
    tone_hz: f64,
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
    let mut sine = Sine::new(tone_hz, RATE, if tone_hz > 0.0 { 8000 } else { 0 });
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
                        let mut s = shared.lock().map_err(|e| e.to_string())?;
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
            sine.fill(&mut pcm);
            let n = enc.encode(&pcm, &mut packet).map_err(|e| e.to_string())?;
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

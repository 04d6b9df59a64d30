//! Telephony test harness shared by the dial-out and dial-in tests: SIPp as the phone (uas) or
//! the trunk (uac), the room's event stream, a test-owned RTP socket as the phone's media, and
//! the leak check over `/metrics`.

#![allow(dead_code)]

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dialbridge_bridge::g711::G711;
use dialbridge_bridge::testing::{tone_ratio_blocks, Sine};
use reqwest::Method;
use serde_json::Value;

use super::srtp::SrtpStream;
use super::{Client, Gateway};

/// A `[[trunks]]` entry for SIPp at 127.0.0.1:`port`, allowed to dial +4930...
pub fn trunk(port: u16, tp: super::ports::Tp, extra: &str) -> String {
    format!(
        "[[trunks]]\nname = \"sipp\"\naddress = \"127.0.0.1:{port}\"\ntransport = \"{}\"\ncaller_id = \"+4940111222\"\nallowed_numbers = [\"\\\\+4930[0-9]+\"]\n{extra}",
        if tp == super::ports::Tp::Tcp { "tcp" } else { "udp" }
    )
}

/// How long a test waits for something that must happen.
pub const DEADLINE: Duration = Duration::from_secs(30);

pub use super::events::EventReader;

impl EventReader {
    /// The call's `callstatus` events up to and including a final one.
    pub async fn statuses(&mut self, call_id: &str) -> Vec<Value> {
        let mut seen = Vec::new();
        loop {
            let e = self.next().await;
            if e["type"] == "callstatus" && e["callid"] == call_id {
                let done = e["status"] == "rejected" || e["status"] == "cleared";
                seen.push(e);
                if done {
                    return seen;
                }
            }
        }
    }

    /// Waits for a `callstatus` event with this status.
    pub async fn reach(&mut self, status: &str) -> Value {
        self.until(status, |e| {
            e["type"] == "callstatus" && e["status"] == status
        })
        .await
    }

    /// Waits for an event matching `pred`, returning it.
    pub async fn until(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let end = Instant::now() + DEADLINE;
        loop {
            assert!(Instant::now() < end, "no {what} event in time");
            let e = self.next().await;
            if pred(&e) {
                return e;
            }
        }
    }
}

pub fn gauge(metrics: &str, name: &str) -> Option<f64> {
    metrics.lines().find_map(|l| {
        let rest = l.strip_prefix(name)?.strip_prefix(' ')?;
        rest.trim().parse().ok()
    })
}

/// Waits (a few seconds: the SIP gauges are published every half second) until every gauge in
/// `names` reads 1, as while one call's dialog and leg are still there.
pub async fn assert_one_call_pending(gw: &Gateway, names: &[&str]) {
    let pending = |metrics: &str| names.iter().all(|g| gauge(metrics, g) == Some(1.0));
    let mut metrics = gw.metrics().await;
    for _ in 0..20 {
        if pending(&metrics) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
        metrics = gw.metrics().await;
    }
    panic!("not one of each of {names:?}:\n{metrics}");
}

/// How many phone calls of `kind` (dialout, dialin) ended with `status` and `cause`
/// (`dialbridge_phone_calls_ended_total`).
pub async fn calls_ended(gw: &Gateway, kind: &str, status: &str, cause: &str) -> f64 {
    let labels = [("kind", kind), ("status", status), ("cause", cause)];
    gw.metrics()
        .await
        .lines()
        .filter(|l| l.starts_with("dialbridge_phone_calls_ended_total{"))
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Waits until no dial-out leg, SIP call or transaction, RTP port or phone media leg remains.
pub async fn assert_nothing_left(gw: &Gateway) {
    let names = [
        "dialbridge_dialout_legs",
        "dialbridge_dialin_legs",
        "dialbridge_sip_calls",
        "dialbridge_sip_transactions",
        "dialbridge_rtp_ports_in_use",
        "dialbridge_phone_media_legs",
    ];
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        let text = gw.metrics().await;
        let left: Vec<String> = names
            .iter()
            .filter(|n| gauge(&text, n).unwrap_or(0.0) != 0.0)
            .map(|n| format!("{n}={:?}", gauge(&text, n)))
            .collect();
        // The SIP gauges must have been published at least once.
        let published = gauge(&text, "dialbridge_sip_calls").is_some()
            && gauge(&text, "dialbridge_dialout_legs").is_some();
        if left.is_empty() && published {
            return;
        }
        assert!(
            Instant::now() < end,
            "still held after the call: {left:?} (published {published})"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Sending and receiving SRTP streams of a test phone, shared with its thread.
type SharedSrtp = Arc<Mutex<Option<(SrtpStream, SrtpStream)>>>;

/// The phone's media: a loopback socket that answers dialbridge's RTP with a G.711 tone and
/// keeps what it hears.
pub struct PhoneMedia {
    pub addr: SocketAddr,
    pub heard: Arc<Mutex<Vec<i16>>>,
    pub peer: Arc<Mutex<Option<SocketAddr>>>,
    pub dtmf: Arc<Mutex<Vec<u8>>>,
    pub key: Arc<AtomicU8>,
    /// With SRTP: sending and receiving streams once the keys are known (nothing is sent or
    /// heard before), and how many packets failed authentication.
    srtp: Option<SharedSrtp>,
    pub srtp_refused: Arc<std::sync::atomic::AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl PhoneMedia {
    pub fn start(tone: f64) -> PhoneMedia {
        PhoneMedia::launch(tone, false)
    }

    /// A phone whose media is SRTP, with its own implementation (`common::srtp`); keys come
    /// with [`PhoneMedia::set_srtp`].
    pub fn start_srtp(tone: f64) -> PhoneMedia {
        PhoneMedia::launch(tone, true)
    }

    /// Encrypts with `send` and decrypts with `receive` (SDES key||salt, tags of `tag_len`).
    pub fn set_srtp(&self, send: &[u8; 30], receive: &[u8; 30], tag_len: usize) {
        let srtp = self.srtp.as_ref().expect("started with start_srtp");
        *srtp.lock().expect("lock") = Some((
            SrtpStream::new(send, tag_len),
            SrtpStream::new(receive, tag_len),
        ));
    }

    fn launch(tone: f64, secure: bool) -> PhoneMedia {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("phone socket");
        socket
            .set_read_timeout(Some(Duration::from_millis(5)))
            .expect("timeout");
        let addr = socket.local_addr().expect("addr");
        let media = PhoneMedia {
            addr,
            heard: Default::default(),
            peer: Default::default(),
            dtmf: Default::default(),
            key: Arc::new(AtomicU8::new(u8::MAX)),
            srtp: secure.then(Default::default),
            srtp_refused: Default::default(),
            stop: Default::default(),
        };
        let (heard, peer, dtmf, key, stop) = (
            media.heard.clone(),
            media.peer.clone(),
            media.dtmf.clone(),
            media.key.clone(),
            media.stop.clone(),
        );
        let (srtp, refused) = (media.srtp.clone(), media.srtp_refused.clone());
        std::thread::spawn(move || {
            let mut sine = Sine::new(tone, 8000, 8000);
            let mut next = Instant::now();
            let (mut seq, mut ts) = (1u16, 1000u32);
            let mut buf = [0u8; 1500];
            let mut key_frames = 0;
            let mut last_rx = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                while let Ok((n, from)) = socket.recv_from(&mut buf) {
                    if n < 12 || from.port() % 2 == 1 {
                        continue;
                    }
                    let packet = match &srtp {
                        None => buf[..n].to_vec(),
                        Some(srtp) => {
                            let mut streams = srtp.lock().expect("lock");
                            let Some((_, receive)) = streams.as_mut() else {
                                continue;
                            };
                            match receive.unprotect(&buf[..n]) {
                                Some(plain) => plain,
                                None => {
                                    refused.fetch_add(1, Ordering::Relaxed);
                                    continue;
                                }
                            }
                        }
                    };
                    *peer.lock().expect("lock") = Some(from);
                    last_rx = Instant::now();
                    let pt = packet[1] & 0x7f;
                    if pt == 0 {
                        let mut h = heard.lock().expect("lock");
                        h.extend(packet[12..].iter().map(|&c| G711::Pcmu.decode_sample(c)));
                        let excess = h.len().saturating_sub(8000);
                        h.drain(..excess);
                    } else if pt == 101 && packet.len() >= 13 {
                        let mut d = dtmf.lock().expect("lock");
                        if d.last() != Some(&packet[12]) {
                            d.push(packet[12]);
                        }
                    }
                }
                if Instant::now() < next {
                    continue;
                }
                next += Duration::from_millis(20);
                let Some(to) = *peer.lock().expect("lock") else {
                    continue;
                };
                // The gateway went quiet: the call is over. Sending on would feed a later
                // gateway's leg that reuses the port (it would latch onto this stream).
                if last_rx.elapsed() > Duration::from_secs(1) {
                    continue;
                }
                let mut packet = vec![0x80, 0, 0, 0, 0, 0, 0, 0, 0x12, 0x34, 0x56, 0x78];
                let k = key.load(Ordering::Relaxed);
                if k != u8::MAX {
                    // RFC 4733: event, E bit on the last packets, duration in samples.
                    key_frames += 1;
                    let end = key_frames >= 5;
                    packet[1] = 101 | if key_frames == 1 { 0x80 } else { 0 };
                    packet.extend_from_slice(&[k, if end { 0x80 } else { 0 } | 10]);
                    packet.extend_from_slice(&((key_frames * 160) as u16).to_be_bytes());
                    if end {
                        key.store(u8::MAX, Ordering::Relaxed);
                        key_frames = 0;
                    }
                } else {
                    let mut pcm = [0i16; 160];
                    sine.fill(&mut pcm);
                    packet.extend(pcm.iter().map(|&s| G711::Pcmu.encode_sample(s)));
                    ts = ts.wrapping_add(160);
                }
                packet[2..4].copy_from_slice(&seq.to_be_bytes());
                packet[4..8].copy_from_slice(&ts.to_be_bytes());
                seq = seq.wrapping_add(1);
                let packet = match &srtp {
                    None => packet,
                    Some(srtp) => match srtp.lock().expect("lock").as_mut() {
                        Some((send, _)) => send.protect(&packet),
                        None => continue,
                    },
                };
                let _ = socket.send_to(&packet, to);
            }
        });
        media
    }

    /// What arrived, for failure messages.
    pub fn describe(&self) -> String {
        let h = self.heard.lock().expect("lock");
        format!(
            "{} samples kept, level {:.0}, peer {:?}",
            h.len(),
            {
                let tail = &h[h.len().saturating_sub(4000)..];
                (tail.iter().map(|&s| (s as f64).powi(2)).sum::<f64>() / tail.len().max(1) as f64)
                    .sqrt()
            },
            self.peer.lock().expect("lock")
        )
    }

    pub fn hears(&self, freq: f64) -> f64 {
        let h = self.heard.lock().expect("lock");
        if h.len() < 4000 {
            return 0.0;
        }
        tone_ratio_blocks(&h[h.len() - 4000..], freq, 8000, 160)
    }
}

impl Drop for PhoneMedia {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

pub async fn wait_for(
    what: &str,
    mut condition: impl FnMut() -> bool,
    describe: impl Fn() -> String,
) {
    let end = Instant::now() + DEADLINE;
    while !condition() {
        assert!(
            Instant::now() < end,
            "{what} did not happen in time: {}",
            describe()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

impl PhoneMedia {
    /// Presses a key (RFC 4733 event code) once, in place of the next audio frames.
    pub fn press(&self, event: u8) {
        self.key.store(event, Ordering::Relaxed);
    }

    /// Whether a key press is still being sent.
    pub fn pressing(&self) -> bool {
        self.key.load(Ordering::Relaxed) != u8::MAX
    }

    /// RMS level of the last half second heard.
    pub fn level(&self) -> f64 {
        let h = self.heard.lock().expect("lock");
        let tail = &h[h.len().saturating_sub(4000)..];
        if tail.is_empty() {
            return 0.0;
        }
        (tail.iter().map(|&s| (s as f64).powi(2)).sum::<f64>() / tail.len() as f64).sqrt()
    }
}

/// The participant with this attendee id, from `GET /room/{token}/participants`.
pub async fn participant(client: &Client, token: &str, attendee: &Value) -> Value {
    let list = client
        .talk(Method::GET, &format!("/room/{token}/participants"), None)
        .await
        .expect(200);
    list.data()
        .as_array()
        .expect("list")
        .iter()
        .find(|p| p["attendeeId"] == *attendee)
        .cloned()
        .expect("attendee listed")
}

/// The room's call records of one kind (`dialout`, `dialin`, `room`).
pub async fn call_records(client: &Client, token: &str, kind: &str) -> Vec<Value> {
    client
        .call(Method::GET, &format!("/api/v1/rooms/{token}/calls"), None)
        .await
        .expect(200)
        .data()
        .as_array()
        .expect("records")
        .iter()
        .filter(|r| r["kind"] == kind)
        .cloned()
        .collect()
}

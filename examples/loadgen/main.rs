//! Media load generator: N bridged calls from one thread, cheaper than what it measures.
//!
//! Each call is a WebRTC peer built on str0m (full ICE, controlling; DTLS-SRTP) replaying one
//! shared second of pre-encoded Opus frames that starts with a loud burst (`marked_loop`), the
//! sends of all peers spread evenly over the 20 ms period; only every `--sample`th peer decodes
//! what it gets, to time the burst's round trip. The phone side is an RTP echo in the same process:
//! one UDP socket for all calls, each packet sent back to its source. Everything runs on one
//! thread over mio.
//!
//! Modes:
//! - `gateway`: rooms, the WebRTC join and a dial-out per call through the gateway's HTTP API; the
//!   trunk points at SIPp (`tests/sipp/bench_uas_loadgen.xml`), whose SDP answer names the echo's
//!   port.
//! - `ng`: offer/answer/delete per call over the NG control protocol (rtpengine, or the
//!   reference relay).
//!
//! Over a measuring window it prints frames received against expected, sequence gaps on both
//! sides, the burst's round trip, its own lateness, and, given `--pid`, the measured process's
//! CPU (schedstat), busiest thread and memory per call. The last line, `RESULT k=v ...`, is for
//! scripts (`scripts/bench-media`).
//!
//! ```sh
//! loadgen gateway --url http://127.0.0.1:18180 --token TOKEN --echo-port 16000 --calls 50 --seconds 10 --pid PID
//! loadgen ng --ng 127.0.0.1:2223 --echo-port 16000 --calls 50 --seconds 10 --pid PID
//! ```

#[path = "../bench_support/cpu.rs"]
mod cpu;
mod echo;
mod ng;
#[path = "../bench_support/talk.rs"]
mod talk;
#[path = "../../tests/common/webrtc_client.rs"]
mod webrtc_client;

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dialbridge_bridge::opus_codec::OpusDecoder;
use mio::{Events, Interest, Poll, Token};
use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::media::{Direction, Frequency, MediaKind, MediaTime, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};

use cpu::{busiest, cpu_ns, percentile, round_trips, thread_ns, vm_rss_kib};
use echo::{Echo, SeqGaps};
use ng::{Bencode, NgClient};
use webrtc_client::{marked_loop, peak, rtc_config, LOUD, RATE};

type Error = Box<dyn std::error::Error>;

const FRAME: u64 = 960;
const PERIOD: Duration = Duration::from_millis(20);
const ECHO: Token = Token(0);
/// How long calls may take to connect and carry audio both ways.
const SETTLE: Duration = Duration::from_secs(30);
/// The generator is on time when its sends are at most this late (p99, max): a rare stall of a
/// few tens of milliseconds (another process on its core) is jitter the bridges absorb, a steady
/// delay is not.
const ON_TIME_P99_MS: f64 = 5.0;
const ON_TIME_MAX_MS: f64 = 50.0;

struct Args {
    mode: String,
    url: String,
    token: String,
    ng: Option<SocketAddr>,
    echo_port: u16,
    calls: usize,
    seconds: u64,
    pid: Option<String>,
    sample: usize,
}

fn args() -> Result<Args, Error> {
    let mut it = std::env::args().skip(1);
    let mut a = Args {
        mode: it
            .next()
            .ok_or("usage: loadgen gateway|ng [--calls N] ...")?,
        url: "http://127.0.0.1:18180".into(),
        token: String::new(),
        ng: None,
        echo_port: 0,
        calls: 50,
        seconds: 10,
        pid: None,
        sample: 10,
    };
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--url" => a.url = value,
            "--token" => a.token = value,
            "--ng" => a.ng = Some(value.parse()?),
            "--echo-port" => a.echo_port = value.parse()?,
            "--calls" => a.calls = value.parse()?,
            "--seconds" => a.seconds = value.parse()?,
            "--pid" => a.pid = Some(value),
            "--sample" => a.sample = value.parse::<usize>()?.max(1),
            _ => return Err(format!("unknown flag {flag}").into()),
        }
    }
    if a.calls == 0 {
        return Err("--calls must be at least 1".into());
    }
    Ok(a)
}

/// The decoding side of a sampled peer: when its bursts left and came back.
struct Sample {
    dec: OpusDecoder,
    pcm: Vec<i16>,
    last_peak: i16,
    marks: Vec<Instant>,
    onsets: Vec<Instant>,
}

/// How a call is ended.
enum Control {
    Gateway(talk::Room),
    Ng { call_id: String, from_tag: String },
}

/// One WebRTC peer.
struct Peer {
    rtc: Rtc,
    socket: mio::net::UdpSocket,
    local: SocketAddr,
    mid: Mid,
    pt: Option<Pt>,
    connected: bool,
    media_time: u64,
    sent: u64,
    frames: u64,
    rx: SeqGaps,
    /// SSRCs already announced to str0m (rtpengine sends one it never announces).
    ssrcs: Vec<u32>,
    sample: Option<Sample>,
    failed: Option<String>,
    control: Option<Control>,
}

impl Peer {
    fn offer(sampled: bool) -> Result<(Peer, SdpPendingOffer, String), Error> {
        let mut rtc = rtc_config(false).build(Instant::now());
        let socket = mio::net::UdpSocket::bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
        let local = socket.local_addr()?;
        rtc.add_local_candidate(Candidate::host(local, "udp")?);
        let mut change = rtc.sdp_api();
        let mid = change.add_media(MediaKind::Audio, Direction::SendRecv, None, None, None);
        let (offer, pending) = change.apply().ok_or("no offer")?;
        let sample = if sampled {
            Some(Sample {
                dec: OpusDecoder::new(RATE, 20)?,
                pcm: vec![0; FRAME as usize],
                last_peak: 0,
                marks: Vec::new(),
                onsets: Vec::new(),
            })
        } else {
            None
        };
        let peer = Peer {
            rtc,
            socket,
            local,
            mid,
            pt: None,
            connected: false,
            media_time: 0,
            sent: 0,
            frames: 0,
            rx: SeqGaps::default(),
            ssrcs: Vec::new(),
            sample,
            failed: None,
            control: None,
        };
        Ok((peer, pending, offer.to_sdp_string()))
    }

    fn accept(&mut self, pending: SdpPendingOffer, answer: &str) -> Result<(), Error> {
        let answer = SdpAnswer::from_sdp_string(answer)?;
        self.rtc.sdp_api().accept_answer(pending, answer)?;
        self.pt = self
            .rtc
            .codec_config()
            .find(|p| p.spec().codec == Codec::Opus)
            .map(|p| p.pt());
        Ok(())
    }

    /// Sends what str0m has to send and takes its events, until it asks for a timeout.
    fn drive(&mut self) {
        if self.failed.is_some() {
            return;
        }
        loop {
            match self.rtc.poll_output() {
                Ok(Output::Timeout(_)) => return,
                Ok(Output::Transmit(t)) => {
                    let _ = self.socket.send_to(&t.contents, t.destination);
                }
                Ok(Output::Event(Event::Connected)) => self.connected = true,
                Ok(Output::Event(Event::MediaData(m))) => {
                    if m.params.spec().codec != Codec::Opus {
                        continue;
                    }
                    self.frames += 1;
                    for seq in **m.seq_range.start()..=**m.seq_range.end() {
                        self.rx.push(seq as u16);
                    }
                    if let Some(s) = &mut self.sample {
                        if s.dec.decode(&m.data, &mut s.pcm).is_ok() {
                            let peak = peak(&s.pcm);
                            if peak >= LOUD && s.last_peak < LOUD {
                                s.onsets.push(Instant::now());
                            }
                            s.last_peak = peak;
                        }
                    }
                }
                Ok(Output::Event(_)) => {}
                Err(e) => {
                    self.failed = Some(e.to_string());
                    return;
                }
            }
        }
    }

    fn receive(&mut self, datagram: &[u8], from: SocketAddr, now: Instant) {
        self.expect_ssrc(datagram);
        let Ok(r) = Receive::new(Protocol::Udp, from, self.local, datagram) else {
            return;
        };
        if let Err(e) = self.rtc.handle_input(Input::Receive(now, r)) {
            self.failed = Some(e.to_string());
        }
        self.drive();
    }

    /// Tells str0m of an SRTP stream it was not told of (rtpengine's transcoded stream carries
    /// neither `a=ssrc` nor the mid header extension), as a browser copes with it.
    fn expect_ssrc(&mut self, datagram: &[u8]) {
        if !self.connected || self.ssrcs.len() >= 8 || echo::rtp_seq(datagram).is_none() {
            return;
        }
        let Some(ssrc) = datagram.get(8..12) else {
            return;
        };
        let ssrc = u32::from_be_bytes([ssrc[0], ssrc[1], ssrc[2], ssrc[3]]);
        if !self.ssrcs.contains(&ssrc) {
            self.ssrcs.push(ssrc);
            self.rtc
                .direct_api()
                .expect_stream_rx(ssrc.into(), None, self.mid, None);
        }
    }

    /// The peer's turn in the 20 ms period: str0m's timers, then the next frame.
    fn tick(&mut self, now: Instant, frames: &[Arc<[u8]>]) {
        if self.failed.is_some() {
            return;
        }
        if let Err(e) = self.rtc.handle_input(Input::Timeout(now)) {
            self.failed = Some(e.to_string());
            return;
        }
        if self.connected {
            if let (Some(pt), Some(frame)) =
                (self.pt, frames.get(self.sent as usize % frames.len()))
            {
                if self.sent.is_multiple_of(frames.len() as u64) {
                    if let Some(s) = &mut self.sample {
                        s.marks.push(now);
                    }
                }
                if let Some(writer) = self.rtc.writer(self.mid) {
                    let time = MediaTime::new(self.media_time, Frequency::FORTY_EIGHT_KHZ);
                    if let Err(e) = writer.write(pt, now, time, frame.clone()) {
                        self.failed = Some(e.to_string());
                    }
                }
                self.sent += 1;
                self.media_time += FRAME;
            }
        }
        self.drive();
    }
}

/// The generator: peers, the echo, and the schedule of sends.
struct Generator {
    poll: Poll,
    events: Events,
    peers: Vec<Peer>,
    echo: Echo,
    /// The shared loop, shared again with str0m without a copy per send.
    frames: Vec<Arc<[u8]>>,
    /// The schedule: slot k is peer k % calls, due at start + k * 20 ms / calls.
    calls: u64,
    start: Instant,
    slot: u64,
    /// How late each send was (ms), while measuring.
    lateness: Vec<f64>,
    measuring: bool,
    buf: Vec<u8>,
}

impl Generator {
    fn new(calls: usize, echo_port: u16) -> Result<Generator, Error> {
        let poll = Poll::new()?;
        let mut echo = Echo::bind(echo_port)?;
        poll.registry()
            .register(&mut echo.socket, ECHO, Interest::READABLE)?;
        Ok(Generator {
            poll,
            events: Events::with_capacity(1024),
            peers: Vec::with_capacity(calls),
            echo,
            frames: marked_loop()?.iter().map(|f| Arc::from(&f[..])).collect(),
            calls: calls as u64,
            start: Instant::now(),
            slot: 0,
            lateness: Vec::new(),
            measuring: false,
            buf: vec![0; 2048],
        })
    }

    fn add(&mut self, mut peer: Peer) -> Result<(), Error> {
        let token = Token(self.peers.len() + 1);
        self.poll
            .registry()
            .register(&mut peer.socket, token, Interest::READABLE)?;
        peer.drive();
        self.peers.push(peer);
        Ok(())
    }

    fn due(&self, slot: u64) -> Instant {
        self.start + Duration::from_nanos(slot * PERIOD.as_nanos() as u64 / self.calls)
    }

    /// Waits for datagrams or the next send, at most until `until`, and handles what came.
    fn turn(&mut self, until: Instant) -> Result<(), Error> {
        let now = Instant::now();
        let wake = self.due(self.slot).min(until);
        self.poll
            .poll(&mut self.events, Some(wake.saturating_duration_since(now)))?;
        for event in self.events.iter() {
            match event.token() {
                ECHO => self.echo.drain()?,
                Token(t) => {
                    let Some(peer) = self.peers.get_mut(t - 1) else {
                        continue;
                    };
                    loop {
                        match peer.socket.recv_from(&mut self.buf) {
                            Ok((n, from)) => peer.receive(&self.buf[..n], from, Instant::now()),
                            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                            Err(e) => return Err(e.into()),
                        }
                    }
                }
            }
        }
        let now = Instant::now();
        while self.due(self.slot) <= now {
            let late = now.duration_since(self.due(self.slot));
            let i = (self.slot % self.calls) as usize;
            if let Some(peer) = self.peers.get_mut(i) {
                peer.tick(now, &self.frames);
                if self.measuring && peer.connected {
                    self.lateness.push(late.as_secs_f64() * 1000.0);
                }
            }
            self.slot += 1;
        }
        Ok(())
    }

    fn run_until(&mut self, until: Instant) -> Result<(), Error> {
        while Instant::now() < until {
            self.turn(until)?;
        }
        Ok(())
    }

    /// Browser side: frames received and sequence gaps, over all peers.
    fn browser_totals(&self) -> (u64, u64) {
        self.peers
            .iter()
            .fold((0, 0), |(f, g), p| (f + p.frames, g + p.rx.gaps))
    }
}

/// Sets call `i` up through the gateway's API.
fn gateway_call(
    rt: &tokio::runtime::Runtime,
    api: &talk::Api,
    i: usize,
    sampled: bool,
) -> Result<Peer, Error> {
    let (mut peer, pending, offer) = Peer::offer(sampled)?;
    let (room, answer) = rt.block_on(async {
        let mut room = api.room(i).await?;
        let answer = api.join_media(&mut room, &offer).await?;
        api.dial_out(&room).await?;
        Ok::<_, Error>((room, answer))
    })?;
    peer.accept(pending, &answer)?;
    peer.control = Some(Control::Gateway(room));
    Ok(peer)
}

/// Sets call `i` up over NG: the browser's offer, then the echo's answer for the phone side.
fn ng_call(ng: &mut NgClient, i: usize, sampled: bool, echo_port: u16) -> Result<Peer, Error> {
    let (mut peer, pending, offer) = Peer::offer(sampled)?;
    let call_id = format!("loadgen-{}-{i}", std::process::id());
    let from_tag = format!("browser{i}");
    ng.request(&Bencode::dict(vec![
        ("command", Bencode::str("offer")),
        ("call-id", Bencode::str(&call_id)),
        ("from-tag", Bencode::str(&from_tag)),
        ("sdp", Bencode::str(&offer)),
        ("transport-protocol", Bencode::str("RTP/AVP")),
        ("ICE", Bencode::str("remove")),
        ("rtcp-mux", Bencode::list(&["demux"])),
        (
            "codec",
            Bencode::dict(vec![
                ("mask", Bencode::list(&["opus"])),
                ("transcode", Bencode::list(&["PCMA"])),
            ]),
        ),
    ]))?;
    let reply = ng.request(&Bencode::dict(vec![
        ("command", Bencode::str("answer")),
        ("call-id", Bencode::str(&call_id)),
        ("from-tag", Bencode::str(&from_tag)),
        ("to-tag", Bencode::str(&format!("phone{i}"))),
        ("sdp", Bencode::str(&ng::phone_answer(echo_port))),
        ("ICE", Bencode::str("force")),
    ]))?;
    let answer = reply
        .get("sdp")
        .and_then(Bencode::as_str)
        .ok_or("NG answer without sdp")?;
    peer.accept(pending, &ng::fix_answer(answer, &peer.mid.to_string()))?;
    peer.control = Some(Control::Ng { call_id, from_tag });
    Ok(peer)
}

fn main() -> Result<(), Error> {
    let a = args()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let api = talk::Api::new(&a.url, &a.token);
    let mut ng = match (&a.mode[..], a.ng) {
        ("ng", Some(addr)) => Some(NgClient::new(addr)?),
        ("ng", None) => return Err("ng mode needs --ng ADDR".into()),
        ("gateway", _) => None,
        (other, _) => return Err(format!("unknown mode {other}").into()),
    };
    if let Some(ng) = &mut ng {
        // The daemon may still be starting.
        let deadline = Instant::now() + Duration::from_secs(10);
        while let Err(e) = ng.request(&Bencode::dict(vec![("command", Bencode::str("ping"))])) {
            if Instant::now() > deadline {
                return Err(format!("NG ping: {e}").into());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let rss0 = a.pid.as_deref().and_then(vm_rss_kib);
    let mut gen = Generator::new(a.calls, a.echo_port)?;
    let echo_port = gen.echo.port()?;
    let setup = Instant::now();
    for i in 0..a.calls {
        let sampled = i % a.sample == 0;
        let peer = match &mut ng {
            Some(ng) => ng_call(ng, i, sampled, echo_port)?,
            None => gateway_call(&rt, &api, i, sampled)?,
        };
        gen.add(peer)?;
        // Peers already set up keep their schedule while the next is set up.
        gen.run_until(Instant::now() + Duration::from_millis(2))?;
    }
    println!(
        "{} calls set up in {:.1} s",
        a.calls,
        setup.elapsed().as_secs_f64()
    );
    let end = Instant::now() + SETTLE;
    while Instant::now() < end
        && !gen
            .peers
            .iter()
            .all(|p| p.connected && p.frames > 0 || p.failed.is_some())
    {
        gen.run_until(Instant::now() + Duration::from_millis(100))?;
    }
    let ready = gen
        .peers
        .iter()
        .filter(|p| p.connected && p.frames > 0)
        .count();
    if ready < a.calls {
        println!(
            "only {ready} of {} calls carry audio both ways after {SETTLE:?}",
            a.calls
        );
    }
    for p in &gen.peers {
        if let Some(f) = &p.failed {
            println!("a peer failed: {f}");
            break;
        }
    }
    // Let the first seconds' jitter buffers and timers settle before measuring.
    gen.run_until(Instant::now() + Duration::from_secs(1))?;
    for p in &mut gen.peers {
        if let Some(s) = &mut p.sample {
            s.marks.clear();
            s.onsets.clear();
        }
    }
    let (frames0, gaps0) = gen.browser_totals();
    let (echo0, echo_gaps0) = gen.echo.totals();
    let pid = a.pid.as_deref();
    let cpu0 = pid.map(cpu_ns).transpose()?;
    let threads0 = pid.map(thread_ns).unwrap_or_default();
    let me0 = cpu_ns("self")?;
    gen.measuring = true;
    let t0 = Instant::now();
    gen.run_until(t0 + Duration::from_secs(a.seconds))?;
    let window = t0.elapsed().as_secs_f64();
    gen.measuring = false;
    let cpu1 = pid.map(cpu_ns).transpose()?;
    let threads1 = pid.map(thread_ns).unwrap_or_default();
    let me1 = cpu_ns("self")?;
    let rss1 = pid.and_then(vm_rss_kib);
    let (frames1, gaps1) = gen.browser_totals();
    let (echo1, echo_gaps1) = gen.echo.totals();
    // The last bursts' onsets may still be on their way.
    gen.run_until(Instant::now() + Duration::from_secs(1))?;

    let n = a.calls as f64;
    let expected = (n * window * 50.0).round();
    let frames = frames1 - frames0;
    let browser_gaps = gaps1 - gaps0;
    let echoed = echo1 - echo0;
    let phone_gaps = echo_gaps1 - echo_gaps0;
    let (mut trips, mut bursts) = (Vec::new(), 0);
    for p in &gen.peers {
        if let Some(s) = &p.sample {
            let marks: Vec<Instant> = s
                .marks
                .iter()
                .copied()
                .filter(|m| m.duration_since(t0).as_secs_f64() < window)
                .collect();
            bursts += marks.len();
            trips.extend(round_trips(&marks, &s.onsets));
        }
    }
    trips.sort_by(f64::total_cmp);
    gen.lateness.sort_by(f64::total_cmp);
    let late_p99 = percentile(&gen.lateness, 0.99);
    let late_max = gen.lateness.last().copied().unwrap_or(f64::NAN);
    let my_cpu = (me1 - me0) as f64 / 1e9 / window;
    let on_time = late_p99 <= ON_TIME_P99_MS && late_max <= ON_TIME_MAX_MS && my_cpu < 0.95;
    let frames_pct = frames as f64 * 100.0 / expected;
    let echo_pct = echoed as f64 * 100.0 / expected;
    let (p50, p99) = (percentile(&trips, 0.5), percentile(&trips, 0.99));
    let max = trips.last().copied().unwrap_or(f64::NAN);
    // NaN (no round trip measured) fails the comparison, as it should.
    let kept = frames_pct >= 99.9
        && echo_pct >= 99.9
        && browser_gaps == 0
        && phone_gaps == 0
        && p99 < 100.0
        && trips.len() * 100 >= bursts * 99;

    let mut result = format!("RESULT calls={} window_s={window:.1}", a.calls);
    if let (Some(c0), Some(c1)) = (cpu0, cpu1) {
        let cpu = (c1 - c0) as f64 / 1e9 / window;
        println!(
            "measured process CPU: {:.1} % of one core for {} calls, {:.3} % of a core per call ({:.0} us of CPU per call per second)",
            cpu * 100.0,
            a.calls,
            cpu * 100.0 / n,
            cpu * 1e6 / n
        );
        result += &format!(
            " cpu_pct={:.1} per_call_pct={:.3} us_per_call={:.0}",
            cpu * 100.0,
            cpu * 100.0 / n,
            cpu * 1e6 / n
        );
        if let Some((name, share)) = busiest(&threads0, &threads1, window) {
            println!(
                "busiest thread: {name} at {:.1} % of one core",
                share * 100.0
            );
            result += &format!(
                " busiest={} busiest_pct={:.1}",
                name.replace(' ', "_"),
                share * 100.0
            );
        }
        if let (Some(r0), Some(r1)) = (rss0, rss1) {
            let per_call = r1.saturating_sub(r0) as f64 / n;
            println!("VmRSS: {r1} KiB ({r0} KiB before the calls), {per_call:.0} KiB per call");
            result += &format!(" rss_kib={r1} rss_per_call_kib={per_call:.0}");
        }
    }
    println!(
        "browser side: {frames} of {expected:.0} frames ({frames_pct:.2} %), {browser_gaps} sequence gaps"
    );
    println!(
        "phone side (echo): {echoed} of {expected:.0} packets ({echo_pct:.2} %), {phone_gaps} sequence gaps"
    );
    println!(
        "burst round trip (browser -> bridge -> phone echo -> bridge -> browser, {} sampled calls): p50 {p50:.1} ms, p99 {p99:.1} ms, max {max:.1} ms; {} of {bursts} bursts came back",
        gen.peers.iter().filter(|p| p.sample.is_some()).count(),
        trips.len()
    );
    println!(
        "generator: {:.0} % of one core; sends late by p50 {:.2} ms, p99 {late_p99:.2} ms, max {late_max:.2} ms: {}",
        my_cpu * 100.0,
        percentile(&gen.lateness, 0.5),
        if on_time {
            "on time, the run counts"
        } else {
            "NOT on time, the run does not count"
        }
    );
    result += &format!(
        " frames_pct={frames_pct:.3} browser_gaps={browser_gaps} echo_pct={echo_pct:.3} phone_gaps={phone_gaps} rtt_p50={p50:.1} rtt_p99={p99:.1} rtt_max={max:.1} gen_cpu_pct={:.1} late_p99={late_p99:.2} late_max={late_max:.2} on_time={} kept={}",
        my_cpu * 100.0,
        if on_time { "yes" } else { "no" },
        if kept && on_time { "yes" } else { "no" },
    );

    for p in &gen.peers {
        let ended = match &p.control {
            Some(Control::Gateway(room)) => rt.block_on(api.hang_up(room)),
            Some(Control::Ng { call_id, from_tag }) => ng
                .as_mut()
                .ok_or("no NG client")?
                .request(&Bencode::dict(vec![
                    ("command", Bencode::str("delete")),
                    ("call-id", Bencode::str(call_id)),
                    ("from-tag", Bencode::str(from_tag)),
                ]))
                .map(drop)
                .map_err(Into::into),
            None => Ok(()),
        };
        if let Err(e) = ended {
            println!("hang-up failed: {e}");
        }
    }
    println!("{result}");
    Ok(())
}

//! A minimal media relay: the floor against which the gateway's cost per bridged call is
//! measured. One thread on epoll (mio), no jitter buffer, no mixer: each packet in makes one
//! packet out. Per call, a str0m `Rtc` (ICE-lite, DTLS-SRTP) answers the browser on one UDP
//! socket and a plain RTP socket serves the phone; Opus <-> PCMA goes through this crate's
//! codecs with the settings of the gateway's direct path (8 kHz Opus, `[media.opus]` defaults).
//!
//! It is driven over the part of rtpengine's NG protocol that a benchmark needs (ping, offer,
//! answer, delete), so one client drives this relay and rtpengine alike:
//!
//! ```text
//! reference_relay --listen-ng 127.0.0.1:2223 --port-min 30000 --port-max 30999 [--complexity 1]
//! ```

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::io::{self, ErrorKind};
use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dialbridge_bridge::g711::G711;
use dialbridge_bridge::opus_codec::{
    OpusConfig, OpusDecoder, OpusEncoder, MAX_PACKET, PHONE_COMPLEXITY,
};
use dialbridge_bridge::transcode::FRAME_8K;
use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token};
use str0m::change::SdpOffer;
use str0m::config::CryptoProvider;
use str0m::format::Codec;
use str0m::media::{MediaKind, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{RtpWrite, SeqNo};
use str0m::{Candidate, Event, Input, Output, Rtc};

const USAGE: &str = "usage: reference_relay --listen-ng ADDR --port-min PORT --port-max PORT \
                     [--complexity 0-10]";

/// The NG control socket's token; a call's sockets take the two after `1 + 2 * slot`.
const NG: Token = Token(0);
/// Opus RTP clock units per 20 ms frame.
const OPUS_STEP: u32 = 960;
/// Samples at 8 kHz of the longest Opus packet (120 ms).
const LONGEST_PACKET: usize = 960;
const RTP_HEADER: usize = 12;
/// How long the str0m timer may run late: a heap entry is never earlier than now plus this,
/// so a timer that is due again at once cannot spin the loop.
const TIMER_SLACK: Duration = Duration::from_millis(1);

/// Command line settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    pub listen_ng: SocketAddr,
    /// Media ports: each call takes an even port (plain RTP) and the odd one above it (WebRTC).
    pub port_min: u16,
    pub port_max: u16,
    /// Opus complexity towards the browser (the gateway's `[media.opus] phone_complexity`).
    pub complexity: i32,
}

pub fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Settings, String> {
    let (mut listen_ng, mut port_min, mut port_max) = (None, None, None);
    let mut complexity = PHONE_COMPLEXITY;
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        let bad = |e: &dyn std::fmt::Display| format!("{flag} {value}: {e}");
        match flag.as_str() {
            "--listen-ng" => listen_ng = Some(value.parse().map_err(|e| bad(&e))?),
            "--port-min" => port_min = Some(value.parse::<u16>().map_err(|e| bad(&e))?),
            "--port-max" => port_max = Some(value.parse::<u16>().map_err(|e| bad(&e))?),
            "--complexity" => complexity = value.parse().map_err(|e| bad(&e))?,
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    let settings = Settings {
        listen_ng: listen_ng.ok_or("--listen-ng is required")?,
        port_min: port_min.ok_or("--port-min is required")?,
        port_max: port_max.ok_or("--port-max is required")?,
        complexity,
    };
    if !(0..=10).contains(&settings.complexity) {
        return Err("--complexity must be 0 to 10".into());
    }
    if first_pair(settings.port_min) >= u32::from(settings.port_max) {
        return Err("the port range holds no pair (even port and the one above it)".into());
    }
    Ok(settings)
}

/// The even port where the pairs of a range starting at `port_min` begin.
fn first_pair(port_min: u16) -> u32 {
    u32::from(port_min).div_ceil(2) * 2
}

/// The bencoding of the NG protocol (BEP 3): integers, byte strings, lists and dictionaries.
pub mod bencode {
    /// Nesting deeper than this is refused rather than recursed into.
    const MAX_DEPTH: usize = 16;

    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum Value<'a> {
        Int(i64),
        Bytes(&'a [u8]),
        List(Vec<Value<'a>>),
        Dict(Vec<(&'a [u8], Value<'a>)>),
    }

    impl<'a> Value<'a> {
        /// The value of `key` in a dictionary.
        pub fn get(&self, key: &str) -> Option<&Value<'a>> {
            match self {
                Value::Dict(entries) => entries
                    .iter()
                    .find(|(k, _)| *k == key.as_bytes())
                    .map(|(_, v)| v),
                _ => None,
            }
        }

        pub fn bytes(&self) -> Option<&'a [u8]> {
            match self {
                Value::Bytes(b) => Some(b),
                _ => None,
            }
        }

        pub fn str(&self) -> Option<&'a str> {
            self.bytes().and_then(|b| std::str::from_utf8(b).ok())
        }
    }

    /// One value filling all of `input`.
    pub fn parse(input: &[u8]) -> Option<Value<'_>> {
        match value(input, 0)? {
            (v, []) => Some(v),
            _ => None,
        }
    }

    fn value(input: &[u8], depth: usize) -> Option<(Value<'_>, &[u8])> {
        if depth > MAX_DEPTH {
            return None;
        }
        match input.first()? {
            b'i' => {
                let end = input.iter().position(|&c| c == b'e')?;
                let n = std::str::from_utf8(input.get(1..end)?).ok()?.parse().ok()?;
                Some((Value::Int(n), input.get(end + 1..)?))
            }
            b'l' => {
                let (mut items, mut rest) = (Vec::new(), input.get(1..)?);
                while rest.first() != Some(&b'e') {
                    let (item, next) = value(rest, depth + 1)?;
                    items.push(item);
                    rest = next;
                }
                Some((Value::List(items), rest.get(1..)?))
            }
            b'd' => {
                let (mut entries, mut rest) = (Vec::new(), input.get(1..)?);
                while rest.first() != Some(&b'e') {
                    let (key, next) = bytes(rest)?;
                    let (item, next) = value(next, depth + 1)?;
                    entries.push((key, item));
                    rest = next;
                }
                Some((Value::Dict(entries), rest.get(1..)?))
            }
            _ => bytes(input).map(|(b, rest)| (Value::Bytes(b), rest)),
        }
    }

    fn bytes(input: &[u8]) -> Option<(&[u8], &[u8])> {
        let colon = input.iter().position(|&c| c == b':')?;
        let len: usize = std::str::from_utf8(input.get(..colon)?)
            .ok()?
            .parse()
            .ok()?;
        let start = colon + 1;
        let end = start.checked_add(len)?;
        Some((input.get(start..end)?, input.get(end..)?))
    }

    /// Appends `v` to `out`, dictionary keys in order as BEP 3 asks.
    pub fn encode(v: &Value<'_>, out: &mut Vec<u8>) {
        let string = |b: &[u8], out: &mut Vec<u8>| {
            out.extend_from_slice(b.len().to_string().as_bytes());
            out.push(b':');
            out.extend_from_slice(b);
        };
        match v {
            Value::Int(n) => out.extend_from_slice(format!("i{n}e").as_bytes()),
            Value::Bytes(b) => string(b, out),
            Value::List(items) => {
                out.push(b'l');
                items.iter().for_each(|i| encode(i, out));
                out.push(b'e');
            }
            Value::Dict(entries) => {
                let mut sorted: Vec<_> = entries.iter().collect();
                sorted.sort_by_key(|(k, _)| *k);
                out.push(b'd');
                for (k, item) in sorted {
                    string(k, out);
                    encode(item, out);
                }
                out.push(b'e');
            }
        }
    }

    /// A dictionary of string values, as NG requests and replies are.
    pub fn dict<'a>(entries: &[(&'a str, &'a str)]) -> Value<'a> {
        Value::Dict(
            entries
                .iter()
                .map(|(k, v)| (k.as_bytes(), Value::Bytes(v.as_bytes())))
                .collect(),
        )
    }
}

use bencode::Value;

/// The phone side's address in a plain RTP SDP: its connection address and audio port.
pub fn phone_address(sdp: &str) -> Option<SocketAddr> {
    let mut ip = None;
    let mut port = None;
    for line in sdp.lines().map(str::trim) {
        if let Some(c) = line.strip_prefix("c=IN ") {
            let addr = c.split(' ').nth(1).and_then(|a| a.split('/').next());
            ip = ip.or(addr.and_then(|a| a.parse().ok()));
        } else if let Some(m) = line.strip_prefix("m=audio ") {
            port = m.split(' ').next().and_then(|p| p.parse::<u16>().ok());
        }
    }
    Some(SocketAddr::new(ip?, port.filter(|p| *p != 0)?))
}

/// The offer towards the phone: PCMA and telephone-event at 20 ms, no ICE, no crypto.
fn plain_offer(addr: SocketAddr) -> String {
    let (ip, port) = (addr.ip(), addr.port());
    let family = if ip.is_ipv4() { "IP4" } else { "IP6" };
    format!(
        "v=0\r\no=- {port} 1 IN {family} {ip}\r\ns=-\r\nc=IN {family} {ip}\r\nt=0 0\r\n\
         m=audio {port} RTP/AVP 8 101\r\na=rtpmap:8 PCMA/8000\r\n\
         a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\na=sendrecv\r\n"
    )
}

/// The RTP stream towards the phone.
struct PhoneStream {
    to: Option<SocketAddr>,
    seq: u16,
    timestamp: u32,
    ssrc: u32,
}

/// One bridged call.
struct Call {
    /// The even port (plain RTP); the WebRTC socket has the one above it.
    port: u16,
    rtc: Rtc,
    mid: Mid,
    opus_pt: Pt,
    web: UdpSocket,
    web_addr: SocketAddr,
    plain: UdpSocket,
    browser_answer: String,
    phone: PhoneStream,
    /// DTLS is up: audio may go to the browser.
    connected: bool,
    /// str0m failed or closed: the call waits for its delete.
    dead: bool,
    timeout: Instant,
    dec: OpusDecoder,
    enc: OpusEncoder,
    web_seq: u64,
    web_timestamp: u32,
    pcm: [i16; LONGEST_PACKET],
    opus: [u8; MAX_PACKET],
}

impl Call {
    /// Feeds str0m one input and handles all it has to say.
    fn input(&mut self, input: Input) {
        if self.dead {
            return;
        }
        if self.rtc.handle_input(input).is_err() {
            self.dead = true;
            return;
        }
        self.drain();
    }

    fn drain(&mut self) {
        loop {
            match self.rtc.poll_output() {
                Ok(Output::Timeout(t)) => {
                    self.timeout = t;
                    break;
                }
                Ok(Output::Transmit(t)) => {
                    // UDP: a datagram the kernel cannot take now is a lost one.
                    let _ = self.web.send_to(&t.contents, t.destination);
                }
                Ok(Output::Event(Event::Connected)) => self.connected = true,
                Ok(Output::Event(Event::RtpPacket(p))) if p.header.payload_type == self.opus_pt => {
                    self.forward_to_phone(&p.payload)
                }
                Ok(Output::Event(_)) => {}
                Err(_) => {
                    self.dead = true;
                    break;
                }
            }
        }
        self.dead |= !self.rtc.is_alive();
    }

    /// A browser's Opus packet, decoded to 8 kHz and sent on as PCMA, 20 ms a packet.
    fn forward_to_phone(&mut self, payload: &[u8]) {
        let Some(to) = self.phone.to else {
            return;
        };
        let n = match self.dec.decode(payload, &mut self.pcm) {
            Ok(n) => n,
            Err(_) => self.dec.conceal(&mut self.pcm).unwrap_or(0),
        };
        let mut packet = [0u8; RTP_HEADER + FRAME_8K];
        for frame in self.pcm[..n.min(LONGEST_PACKET)].chunks_exact(FRAME_8K) {
            let p = &mut self.phone;
            packet[..2].copy_from_slice(&[0x80, G711::Pcma.payload_type()]);
            packet[2..4].copy_from_slice(&p.seq.to_be_bytes());
            packet[4..8].copy_from_slice(&p.timestamp.to_be_bytes());
            packet[8..12].copy_from_slice(&p.ssrc.to_be_bytes());
            G711::Pcma.encode(frame, &mut packet[RTP_HEADER..]);
            p.seq = p.seq.wrapping_add(1);
            p.timestamp = p.timestamp.wrapping_add(FRAME_8K as u32);
            let _ = self.plain.send_to(&packet, to);
        }
    }

    /// A phone's PCMA packet of 20 ms, encoded to Opus and sent to the browser.
    fn forward_to_browser(&mut self, now: Instant, datagram: &[u8]) {
        if !self.connected || self.dead {
            return;
        }
        let Ok(rtp) = rtp_types::RtpPacket::parse(datagram) else {
            return;
        };
        let payload = rtp.payload();
        if rtp.payload_type() != G711::Pcma.payload_type() || payload.len() != FRAME_8K {
            return;
        }
        let pcm = &mut self.pcm[..FRAME_8K];
        G711::Pcma.decode(payload, pcm);
        let Ok(n) = self.enc.encode(pcm, &mut self.opus) else {
            return;
        };
        let seq = SeqNo::from(self.web_seq);
        let write = RtpWrite::new(self.opus_pt, seq, self.web_timestamp, now, &self.opus[..n]);
        self.web_seq += 1;
        self.web_timestamp = self.web_timestamp.wrapping_add(OPUS_STEP);
        if let Some(stream) = self.rtc.direct_api().stream_tx_by_mid(self.mid, None) {
            stream.write_rtp(write);
        }
        // str0m's pacer releases the packet at its next timeout: run it now.
        self.input(Input::Timeout(now));
    }
}

/// Why a control request failed (the NG `error-reason`).
type NgError = String;

/// What a successful control request answers.
enum Reply {
    Pong,
    Done,
    Sdp(String),
}

/// The relay: its control socket, its calls and their timers.
pub struct Relay {
    poll: Poll,
    ng: UdpSocket,
    settings: Settings,
    opus: OpusConfig,
    crypto: Arc<CryptoProvider>,
    calls: Vec<Option<Call>>,
    free_slots: Vec<usize>,
    by_id: HashMap<Vec<u8>, usize>,
    /// Even ports not in use, oldest first (a port freed late is taken late, so stray packets
    /// of an ended call rarely reach a new one).
    free_ports: VecDeque<u16>,
    /// str0m timeouts by slot; an entry whose call has a later timeout is stale and skipped.
    timers: BinaryHeap<Reverse<(Instant, usize)>>,
    buf: Vec<u8>,
}

impl Relay {
    pub fn bind(settings: Settings) -> io::Result<Relay> {
        let poll = Poll::new()?;
        let mut ng = UdpSocket::bind(settings.listen_ng)?;
        poll.registry().register(&mut ng, NG, Interest::READABLE)?;
        let pairs = (first_pair(settings.port_min)..u32::from(settings.port_max)).step_by(2);
        Ok(Relay {
            poll,
            ng,
            settings,
            opus: OpusConfig {
                complexity: settings.complexity,
                ..OpusConfig::default()
            },
            crypto: Arc::new(str0m::crypto::from_feature_flags()),
            calls: Vec::new(),
            free_slots: Vec::new(),
            by_id: HashMap::new(),
            free_ports: pairs.filter_map(|p| u16::try_from(p).ok()).collect(),
            timers: BinaryHeap::new(),
            buf: vec![0; 65536],
        })
    }

    pub fn ng_addr(&self) -> io::Result<SocketAddr> {
        self.ng.local_addr()
    }

    /// Serves until the poll fails.
    pub fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        loop {
            let wait = self
                .timers
                .peek()
                .map(|Reverse((t, _))| t.saturating_duration_since(Instant::now()));
            match self.poll.poll(&mut events, wait) {
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                r => r?,
            }
            let now = Instant::now();
            for event in events.iter() {
                match event.token() {
                    NG => self.serve_control(now),
                    Token(t) => self.serve_media(now, (t - 1) / 2, (t - 1) % 2 == 1),
                }
            }
            self.run_timers(now);
        }
    }

    fn serve_media(&mut self, now: Instant, slot: usize, web_side: bool) {
        let Some(Some(call)) = self.calls.get_mut(slot) else {
            return;
        };
        let before = call.timeout;
        loop {
            let socket = if web_side { &call.web } else { &call.plain };
            let Ok((n, from)) = socket.recv_from(&mut self.buf) else {
                break;
            };
            let Some(datagram) = self.buf.get(..n) else {
                break;
            };
            if !web_side {
                call.forward_to_browser(now, datagram);
            } else if let Ok(r) = Receive::new(Protocol::Udp, from, call.web_addr, datagram) {
                call.input(Input::Receive(now, r));
            }
        }
        if call.timeout != before {
            self.timers
                .push(Reverse((call.timeout.max(now + TIMER_SLACK), slot)));
        }
    }

    fn run_timers(&mut self, now: Instant) {
        while let Some(&Reverse((at, slot))) = self.timers.peek() {
            if at > now {
                break;
            }
            self.timers.pop();
            let Some(Some(call)) = self.calls.get_mut(slot) else {
                continue;
            };
            if call.timeout > now || call.dead {
                continue;
            }
            call.input(Input::Timeout(now));
            self.timers
                .push(Reverse((call.timeout.max(now + TIMER_SLACK), slot)));
        }
    }

    fn serve_control(&mut self, now: Instant) {
        while let Ok((n, from)) = self.ng.recv_from(&mut self.buf) {
            let request = self.buf.get(..n).unwrap_or_default().to_vec();
            if let Some(reply) = self.control(now, &request) {
                let _ = self.ng.send_to(&reply, from);
            }
        }
    }

    /// The reply to one NG datagram (`COOKIE bencoded-dict`); none without a cookie.
    pub fn control(&mut self, now: Instant, request: &[u8]) -> Option<Vec<u8>> {
        let space = request.iter().position(|&c| c == b' ')?;
        let (cookie, body) = (&request[..space], &request[space + 1..]);
        let answer = match bencode::parse(body) {
            Some(msg) => self.command(now, &msg),
            None => Err("the request is not a bencoded dictionary".into()),
        };
        let reply = match &answer {
            Ok(Reply::Pong) => bencode::dict(&[("result", "pong")]),
            Ok(Reply::Done) => bencode::dict(&[("result", "ok")]),
            Ok(Reply::Sdp(sdp)) => bencode::dict(&[("result", "ok"), ("sdp", sdp)]),
            Err(reason) => bencode::dict(&[("result", "error"), ("error-reason", reason)]),
        };
        let mut out = cookie.to_vec();
        out.push(b' ');
        bencode::encode(&reply, &mut out);
        Some(out)
    }

    fn command(&mut self, now: Instant, msg: &Value<'_>) -> Result<Reply, NgError> {
        let field = |key: &str| {
            msg.get(key)
                .and_then(Value::bytes)
                .ok_or(format!("missing or malformed '{key}'"))
        };
        let command = field("command")?;
        if command == b"ping" {
            return Ok(Reply::Pong);
        }
        let call_id = field("call-id")?;
        match command {
            b"offer" => {
                let sdp = msg.get("sdp").and_then(Value::str).ok_or("missing 'sdp'")?;
                self.delete(call_id);
                self.offer(now, call_id, sdp).map(Reply::Sdp)
            }
            b"answer" => {
                let sdp = msg.get("sdp").and_then(Value::str).ok_or("missing 'sdp'")?;
                let phone = phone_address(sdp).ok_or("no audio address in the answer's SDP")?;
                let call = self
                    .by_id
                    .get(call_id)
                    .and_then(|&slot| self.calls.get_mut(slot)?.as_mut())
                    .ok_or("unknown call-id")?;
                call.phone.to = Some(phone);
                Ok(Reply::Sdp(call.browser_answer.clone()))
            }
            b"delete" if self.delete(call_id) => Ok(Reply::Done),
            b"delete" => Err("unknown call-id".into()),
            _ => Err(format!(
                "unsupported command '{}'",
                String::from_utf8_lossy(command)
            )),
        }
    }

    /// Makes a call answering the browser's `sdp`; returns the offer for the phone.
    fn offer(&mut self, now: Instant, call_id: &[u8], sdp: &str) -> Result<String, NgError> {
        let dec = OpusDecoder::new(8000, 120).map_err(|e| e.to_string())?;
        let enc = OpusEncoder::new(self.opus).map_err(|e| e.to_string())?;
        let (port, plain, web) = self.ports().ok_or("no free media ports")?;
        let web_addr = web.local_addr().map_err(|e| e.to_string())?;
        // The offer is a client's text: should str0m panic on it, that is this offer's failure.
        let accepted = catch_unwind(AssertUnwindSafe(|| self.accept(now, sdp, web_addr)))
            .unwrap_or_else(|_| Err("the offer could not be processed".into()));
        let (rtc, mid, opus_pt, browser_answer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                self.free_ports.push_back(port);
                return Err(e);
            }
        };
        let slot = self.free_slots.pop().unwrap_or(self.calls.len());
        let mut call = Call {
            port,
            rtc,
            mid,
            opus_pt,
            web,
            web_addr,
            plain,
            browser_answer,
            phone: PhoneStream {
                to: None,
                seq: port.wrapping_mul(7919),
                timestamp: u32::from(port).wrapping_mul(0x9e37_79b9),
                ssrc: u32::from(port).wrapping_mul(0x85eb_ca6b) | 1,
            },
            connected: false,
            dead: false,
            timeout: now,
            dec,
            enc,
            web_seq: u64::from(port & 0x3fff) + 1,
            web_timestamp: u32::from(port).wrapping_mul(0x2545_f491),
            pcm: [0; LONGEST_PACKET],
            opus: [0; MAX_PACKET],
        };
        let registry = self.poll.registry();
        let registered = registry
            .register(&mut call.plain, Token(1 + 2 * slot), Interest::READABLE)
            .and_then(|()| {
                registry.register(&mut call.web, Token(2 + 2 * slot), Interest::READABLE)
            });
        if let Err(e) = registered {
            self.free_ports.push_back(port);
            return Err(e.to_string());
        }
        call.drain();
        self.timers.push(Reverse((call.timeout.max(now), slot)));
        let offer = plain_offer(SocketAddr::new(self.settings.listen_ng.ip(), port));
        match self.calls.get_mut(slot) {
            Some(s) => *s = Some(call),
            None => self.calls.push(Some(call)),
        }
        self.by_id.insert(call_id.to_vec(), slot);
        Ok(offer)
    }

    /// An ICE-lite str0m answerer for `sdp` with a host candidate on `web_addr`: the `Rtc`,
    /// the audio m-line, the Opus payload type and the answer.
    fn accept(
        &self,
        now: Instant,
        sdp: &str,
        web_addr: SocketAddr,
    ) -> Result<(Rtc, Mid, Pt, String), NgError> {
        let offer = SdpOffer::from_sdp_string(sdp).map_err(|e| format!("bad offer: {e}"))?;
        let mids: Vec<Mid> = offer.media_lines.iter().map(|m| m.mid()).collect();
        let cert = self
            .crypto
            .dtls_provider
            .generate_certificate()
            .ok_or("cannot generate a DTLS certificate")?;
        let mut rtc = Rtc::builder()
            .set_crypto_provider(self.crypto.clone())
            .set_dtls_cert(cert)
            .set_ice_lite(true)
            .set_rtp_mode(true)
            .clear_codecs()
            .enable_opus(true, false)
            .build(now);
        let candidate = Candidate::host(web_addr, "udp").map_err(|e| e.to_string())?;
        rtc.add_local_candidate(candidate);
        let answer = rtc
            .sdp_api()
            .accept_offer(offer)
            .map_err(|e| format!("bad offer: {e}"))?;
        let media = mids
            .into_iter()
            .filter_map(|mid| rtc.media(mid))
            .find(|m| m.kind() == MediaKind::Audio && !m.disabled())
            .ok_or("the offer has no audio m-line with opus/48000/2")?;
        let mid = media.mid();
        let remote = media.remote_pts().to_vec();
        let opus_pt = rtc
            .codec_config()
            .find(|p| p.spec().codec == Codec::Opus && remote.contains(&p.pt()))
            .map(|p| p.pt())
            .ok_or("the offer has no opus/48000/2")?;
        Ok((rtc, mid, opus_pt, answer.to_sdp_string()))
    }

    /// The next free pair: its even port and the bound plain and WebRTC sockets. Ports that
    /// something else holds are put back last.
    fn ports(&mut self) -> Option<(u16, UdpSocket, UdpSocket)> {
        let ip = self.settings.listen_ng.ip();
        for _ in 0..self.free_ports.len() {
            let port = self.free_ports.pop_front()?;
            let plain = UdpSocket::bind(SocketAddr::new(ip, port));
            let web = UdpSocket::bind(SocketAddr::new(ip, port + 1));
            match (plain, web) {
                (Ok(plain), Ok(web)) => return Some((port, plain, web)),
                _ => self.free_ports.push_back(port),
            }
        }
        None
    }

    /// Ends the call `call_id`; whether there was one.
    fn delete(&mut self, call_id: &[u8]) -> bool {
        let Some(slot) = self.by_id.remove(call_id) else {
            return false;
        };
        let Some(mut call) = self.calls.get_mut(slot).and_then(Option::take) else {
            return false;
        };
        let registry = self.poll.registry();
        let _ = registry.deregister(&mut call.plain);
        let _ = registry.deregister(&mut call.web);
        self.free_ports.push_back(call.port);
        self.free_slots.push(slot);
        true
    }
}

fn main() -> ExitCode {
    let settings = match parse_args(std::env::args().skip(1)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("reference_relay: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let mut relay = match Relay::bind(settings) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("reference_relay: {}: {e}", settings.listen_ng);
            return ExitCode::FAILURE;
        }
    };
    eprintln!(
        "reference_relay: NG on {}, media ports {}-{}, Opus complexity {}",
        relay.ng_addr().map_or(settings.listen_ng, |a| a),
        settings.port_min,
        settings.port_max,
        settings.complexity
    );
    match relay.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("reference_relay: {e}");
            ExitCode::FAILURE
        }
    }
}

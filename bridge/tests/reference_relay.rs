//! The reference relay (examples/reference_relay.rs), run in-process on a thread of its own: one
//! call set up over NG between a str0m client (the root crate's test client, 440 Hz) and a plain
//! RTP phone (PCMA, 1 kHz); each side must hear the other's tone. Bad control input gets an NG
//! error and leaves the relay serving.

#[allow(dead_code)]
#[path = "../examples/reference_relay.rs"]
mod relay;

#[path = "../../tests/common/webrtc_client.rs"]
mod webrtc_client;

use std::net::{SocketAddr, UdpSocket};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use dialbridge_bridge::g711::G711;
use dialbridge_bridge::testing::{tone_ratio_blocks, Sine};
use dialbridge_bridge::transcode::FRAME_8K;
use relay::bencode::{self, Value};
use webrtc_client::Offer;

/// How long a tone may take to be heard before the test gives up (not a measurement).
const DEADLINE: Duration = Duration::from_secs(20);

/// Starts a relay with the command line's defaults; its NG address.
fn start_relay() -> SocketAddr {
    let args = [
        "--listen-ng",
        "127.0.0.1:0",
        "--port-min",
        "41000",
        "--port-max",
        "41999",
    ];
    let settings = relay::parse_args(args.iter().map(|a| a.to_string())).unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut relay = relay::Relay::bind(settings).unwrap();
        tx.send(relay.ng_addr().unwrap()).unwrap();
        relay.run().unwrap();
    });
    rx.recv().unwrap()
}

/// An NG client: `COOKIE bencoded-dict` each way.
struct Ng {
    socket: UdpSocket,
    cookies: u32,
}

/// The fields of an NG reply the tests read.
#[derive(Debug)]
struct NgReply {
    result: String,
    sdp: Option<String>,
    reason: Option<String>,
}

impl Ng {
    fn new(relay: SocketAddr) -> Ng {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.connect(relay).unwrap();
        socket.set_read_timeout(Some(DEADLINE)).unwrap();
        Ng { socket, cookies: 0 }
    }

    fn request(&mut self, entries: &[(&str, &str)]) -> NgReply {
        let mut body = Vec::new();
        bencode::encode(&bencode::dict(entries), &mut body);
        self.raw(&body)
    }

    fn raw(&mut self, body: &[u8]) -> NgReply {
        self.cookies += 1;
        let cookie = format!("test-{}", self.cookies);
        let mut datagram = format!("{cookie} ").into_bytes();
        datagram.extend_from_slice(body);
        self.socket.send(&datagram).unwrap();
        let mut buf = vec![0u8; 65536];
        let n = self.socket.recv(&mut buf).expect("an NG reply");
        let reply = &buf[..n];
        let rest = reply
            .strip_prefix(format!("{cookie} ").as_bytes())
            .unwrap_or_else(|| panic!("reply without our cookie: {reply:?}"));
        let dict = bencode::parse(rest).unwrap_or_else(|| panic!("not bencode: {rest:?}"));
        let text = |key: &str| dict.get(key).and_then(Value::str).map(str::to_string);
        NgReply {
            result: text("result").unwrap_or_default(),
            sdp: text("sdp"),
            reason: text("error-reason"),
        }
    }
}

/// The phone: sends a 1 kHz PCMA tone every 20 ms to `relay` and decodes what comes back.
struct Phone {
    socket: UdpSocket,
    relay: SocketAddr,
    tone: Sine,
    seq: u16,
    next_send: Instant,
    heard: Vec<i16>,
}

impl Phone {
    fn new(relay: SocketAddr) -> Phone {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(5)))
            .unwrap();
        Phone {
            socket,
            relay,
            tone: Sine::new(1000.0, 8000, 8000),
            seq: 1,
            next_send: Instant::now(),
            heard: Vec::new(),
        }
    }

    fn answer_sdp(&self) -> String {
        let port = self.socket.local_addr().unwrap().port();
        format!(
            "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
             m=audio {port} RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\na=ptime:20\r\n"
        )
    }

    /// Sends the frame that is due and takes in what arrived.
    fn step(&mut self) {
        if Instant::now() >= self.next_send {
            let mut packet = vec![0x80, 8];
            packet.extend_from_slice(&self.seq.to_be_bytes());
            packet.extend_from_slice(&(u32::from(self.seq) * 160).to_be_bytes());
            packet.extend_from_slice(&0x1234_5678u32.to_be_bytes());
            let mut pcm = [0i16; FRAME_8K];
            self.tone.fill(&mut pcm);
            packet.extend(pcm.iter().map(|&s| G711::Pcma.encode_sample(s)));
            self.socket.send_to(&packet, self.relay).unwrap();
            self.seq = self.seq.wrapping_add(1);
            self.next_send += Duration::from_millis(20);
        }
        let mut buf = [0u8; 1500];
        while let Ok((n, _)) = self.socket.recv_from(&mut buf) {
            assert_eq!(buf[1] & 0x7f, 8, "the relay sends PCMA");
            self.heard
                .extend(buf[12..n].iter().map(|&c| G711::Pcma.decode_sample(c)));
        }
    }

    /// Share of `freq` in the last half second heard.
    fn hears(&self, freq: f64) -> f64 {
        let tail = &self.heard[self.heard.len().saturating_sub(4000)..];
        if tail.len() < 4000 {
            return 0.0;
        }
        tone_ratio_blocks(tail, freq, 8000, FRAME_8K)
    }
}

#[test]
fn a_call_carries_each_side_s_tone_to_the_other() {
    let mut ng = Ng::new(start_relay());
    assert_eq!(ng.request(&[("command", "ping")]).result, "pong");

    let client = Offer::new(false);
    let offer = ng.request(&[
        ("command", "offer"),
        ("call-id", "call-1"),
        ("from-tag", "browser"),
        ("sdp", &client.sdp),
        ("transport-protocol", "RTP/AVP"),
        ("ICE", "remove"),
    ]);
    assert_eq!(offer.result, "ok", "{offer:?}");
    let plain_offer = offer.sdp.unwrap();
    assert!(plain_offer.contains("c=IN IP4 127.0.0.1"), "{plain_offer}");
    assert!(plain_offer.contains("RTP/AVP 8 101"), "{plain_offer}");
    assert!(!plain_offer.contains("a=ice-"), "{plain_offer}");
    let relay_plain = relay::phone_address(&plain_offer).unwrap();

    let mut phone = Phone::new(relay_plain);
    let answer = ng.request(&[
        ("command", "answer"),
        ("call-id", "call-1"),
        ("from-tag", "browser"),
        ("to-tag", "phone"),
        ("sdp", &phone.answer_sdp()),
        ("ICE", "force"),
    ]);
    assert_eq!(answer.result, "ok", "{answer:?}");
    let browser_answer = answer.sdp.unwrap();
    assert!(browser_answer.contains("a=ice-lite"), "{browser_answer}");
    assert!(
        browser_answer.contains("a=fingerprint:"),
        "{browser_answer}"
    );
    assert!(browser_answer.contains("opus/48000/2"), "{browser_answer}");
    let browser = client.start(&browser_answer, 440.0);

    let end = Instant::now() + DEADLINE;
    while Instant::now() < end && !(phone.hears(440.0) > 0.5 && browser.hears(1000.0) > 0.5) {
        phone.step();
    }
    assert!(browser.connected(), "DTLS never came up");
    let (phone_440, phone_1k) = (phone.hears(440.0), phone.hears(1000.0));
    assert!(
        phone_440 > 0.5 && phone_1k < 0.1,
        "the phone hears 440 Hz {phone_440:.2}, 1 kHz {phone_1k:.2}"
    );
    let (browser_1k, browser_440) = (browser.hears(1000.0), browser.hears(440.0));
    assert!(
        browser_1k > 0.5 && browser_440 < 0.1,
        "the browser hears 1 kHz {browser_1k:.2}, 440 Hz {browser_440:.2}"
    );

    let delete = [
        ("command", "delete"),
        ("call-id", "call-1"),
        ("from-tag", "browser"),
    ];
    assert_eq!(ng.request(&delete).result, "ok");
    let again = ng.request(&delete);
    assert_eq!(
        (again.result.as_str(), again.reason.as_deref()),
        ("error", Some("unknown call-id"))
    );
}

#[test]
fn bad_control_input_gets_an_ng_error() {
    let mut ng = Ng::new(start_relay());
    let refused = |reply: NgReply, why: &str| {
        assert_eq!(reply.result, "error", "{reply:?}");
        let reason = reply.reason.unwrap_or_default();
        assert!(reason.contains(why), "'{reason}' does not say '{why}'");
    };
    refused(ng.raw(b"d7:command"), "not a bencoded dictionary");
    refused(ng.raw(b"l4:pinge"), "'command'");
    refused(ng.raw(&[b'l'; 5000]), "not a bencoded dictionary");
    refused(
        ng.request(&[("command", "publish"), ("call-id", "c")]),
        "unsupported command",
    );
    refused(
        ng.request(&[("command", "offer"), ("call-id", "c")]),
        "'sdp'",
    );
    refused(ng.request(&[("command", "offer")]), "'call-id'");
    refused(
        ng.request(&[
            ("command", "offer"),
            ("call-id", "c"),
            ("sdp", "v=0 garbage"),
        ]),
        "bad offer",
    );
    let no_opus = Offer::new(false)
        .sdp
        .replace("opus/48000/2", "speex/48000/2");
    refused(
        ng.request(&[("command", "offer"), ("call-id", "c"), ("sdp", &no_opus)]),
        "opus",
    );
    let answer = "v=0\r\nc=IN IP4 127.0.0.1\r\nm=audio 4000 RTP/AVP 8\r\n";
    refused(
        ng.request(&[
            ("command", "answer"),
            ("call-id", "nobody"),
            ("sdp", answer),
        ]),
        "unknown call-id",
    );
    let offered = ng.request(&[
        ("command", "offer"),
        ("call-id", "c"),
        ("sdp", &Offer::new(false).sdp),
    ]);
    assert_eq!(offered.result, "ok", "{offered:?}");
    let port_zero = answer.replace("4000", "0");
    refused(
        ng.request(&[("command", "answer"), ("call-id", "c"), ("sdp", &port_zero)]),
        "no audio address",
    );
    assert_eq!(ng.request(&[("command", "ping")]).result, "pong");
}

#[test]
fn the_command_line_is_checked() {
    let parse = |args: &str| relay::parse_args(args.split(' ').map(str::to_string));
    let ok = parse("--listen-ng 127.0.0.1:2223 --port-min 30001 --port-max 30003 --complexity 10")
        .unwrap();
    assert_eq!(
        (ok.port_min, ok.port_max, ok.complexity),
        (30001, 30003, 10)
    );
    assert!(parse("--listen-ng 127.0.0.1:2223 --port-min 30000 --port-max 30001").is_ok());
    for bad in [
        "--listen-ng 127.0.0.1:2223 --port-min 30001 --port-max 30002",
        "--listen-ng 127.0.0.1:2223 --port-min 65535 --port-max 65535",
        "--listen-ng 127.0.0.1:2223 --port-min 30000 --port-max 30009 --complexity 11",
        "--listen-ng nowhere --port-min 30000 --port-max 30009",
        "--port-min 30000 --port-max 30009",
        "--listen-ng 127.0.0.1:2223 --port-min 30000 --port-max",
        "--listen-ng 127.0.0.1:2223 --port-min 30000 --port-max 30009 --verbose 1",
    ] {
        assert!(parse(bad).is_err(), "{bad} accepted");
    }
}

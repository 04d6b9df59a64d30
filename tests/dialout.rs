//! Dial-out end to end: the real binary dials SIPp (the trunk and the phone) on loopback, a
//! moderator drives it over the API, and the room's event stream, participant list, call
//! records and /metrics say what happened. One test also bridges audio both ways: a str0m
//! WebRTC client in the room and a test-owned RTP socket as the phone's media.

mod common;
#[path = "common/webrtc_client.rs"]
mod webrtc_client;

use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Client, Gateway, TALK};
use dialbridge_bridge::g711::G711;
use dialbridge_bridge::testing::{tone_ratio_blocks, Sine};
use futures_util::StreamExt;
use reqwest::Method;
use serde_json::{json, Value};
use webrtc_client::{Offer, WebRtcClient};

const DEADLINE: Duration = Duration::from_secs(30);
const PHONE: &str = "+4930123456";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Tp {
    Udp,
    Tcp,
}

fn free_port(tp: Tp) -> u16 {
    match tp {
        Tp::Udp => UdpSocket::bind("127.0.0.1:0").and_then(|s| s.local_addr()),
        Tp::Tcp => std::net::TcpListener::bind("127.0.0.1:0").and_then(|s| s.local_addr()),
    }
    .expect("free port")
    .port()
}

struct Sipp {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Sipp {
    /// SIPp as the phone behind the trunk, running `scenario` for one call.
    async fn uas(scenario: &str, tp: Tp, extra: &[&str]) -> Sipp {
        let port = free_port(tp);
        let dir = tempfile::tempdir().expect("tempdir");
        let path: PathBuf = [env!("CARGO_MANIFEST_DIR"), "tests", "sipp", scenario]
            .iter()
            .collect();
        let child = Command::new("sipp")
            .arg("-sf")
            .arg(&path)
            .args(["-i", "127.0.0.1", "-p", &port.to_string(), "-m", "1"])
            .args(["-t", if tp == Tp::Tcp { "t1" } else { "u1" }])
            .args(["-timeout", "60s", "-nostdin", "-trace_msg", "-trace_err"])
            .args(["-mi", "127.0.0.1", "-mp", &free_port(Tp::Udp).to_string()])
            .args(extra)
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sipp must be installed (scripts/setup installs sip-tester)");
        let sipp = Sipp { child, port, dir };
        if tp == Tp::Tcp {
            for _ in 0..200 {
                if tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .is_ok()
                {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        sipp
    }

    fn trace(&self) -> String {
        let mut trace = String::new();
        if let Ok(entries) = std::fs::read_dir(self.dir.path()) {
            for entry in entries.flatten() {
                trace.push_str(&std::fs::read_to_string(entry.path()).unwrap_or_default());
            }
        }
        trace
    }

    /// Waits for SIPp to finish; returns whether every step of its scenario succeeded, and its
    /// message trace.
    async fn finish(mut self) -> (bool, String) {
        let mut success = None;
        for _ in 0..1200 {
            if let Ok(Some(status)) = self.child.try_wait() {
                success = Some(status.success());
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if success.is_none() {
            let _ = self.child.kill();
        }
        (success == Some(true), self.trace())
    }
}

impl Drop for Sipp {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

fn trunk(port: u16, tp: Tp, extra: &str) -> String {
    format!(
        "[[trunks]]\nname = \"sipp\"\naddress = \"127.0.0.1:{port}\"\ntransport = \"{}\"\ncaller_id = \"+4940111222\"\nallowed_numbers = [\"\\\\+4930[0-9]+\"]\n{extra}",
        if tp == Tp::Tcp { "tcp" } else { "udp" }
    )
}

/// Reads SSE frames and yields each event's JSON.
struct EventReader {
    stream:
        std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buffer: String,
}

impl EventReader {
    async fn open(client: &Client, token: &str) -> EventReader {
        let response = client
            .request(Method::GET, &format!("/api/v1/rooms/{token}/events"))
            .send()
            .await
            .expect("event stream");
        assert_eq!(response.status(), 200);
        EventReader {
            stream: Box::pin(response.bytes_stream()),
            buffer: String::new(),
        }
    }

    async fn next(&mut self) -> Value {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let frame: String = self.buffer.drain(..end + 2).collect();
                let data: String = frame
                    .lines()
                    .filter_map(|l| l.strip_prefix("data:"))
                    .map(str::trim_start)
                    .collect();
                if !data.is_empty() {
                    return serde_json::from_str(&data).expect("event data is JSON");
                }
                continue;
            }
            let chunk = tokio::time::timeout(DEADLINE, self.stream.next())
                .await
                .expect("an event in time")
                .expect("stream open")
                .expect("chunk");
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }

    /// The call's `callstatus` events up to and including a final one.
    async fn statuses(&mut self, call_id: &str) -> Vec<Value> {
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

    /// Waits for an event matching `pred`, returning it.
    async fn until(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
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

fn status_names(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["status"].as_str().unwrap_or("?").to_string())
        .collect()
}

/// A room with alice (moderator) in its call and a phone attendee; alice's event stream.
async fn room_with_phone(gw: &Gateway) -> (Client, String, i64, EventReader) {
    let alice = gw.client("alice");
    let token = alice.create_room(2).await;
    let phone = alice.add_phone(&token, PHONE).await;
    alice.join_room(&token).await;
    alice.join_call(&token, 3).await;
    let events = EventReader::open(&alice, &token).await;
    (alice, token, phone, events)
}

async fn dial(alice: &Client, token: &str, phone: i64, body: Option<Value>) -> common::Reply {
    alice
        .talk(
            Method::POST,
            &format!("/call/{token}/dialout/{phone}"),
            body,
        )
        .await
}

async fn phone_participant(alice: &Client, token: &str, phone: i64) -> Value {
    let list = alice
        .talk(Method::GET, &format!("/room/{token}/participants"), None)
        .await
        .expect(200);
    list.data()
        .as_array()
        .expect("list")
        .iter()
        .find(|p| p["attendeeId"] == phone)
        .cloned()
        .expect("phone attendee listed")
}

async fn records(alice: &Client, token: &str) -> Vec<Value> {
    alice
        .call(Method::GET, &format!("/api/v1/rooms/{token}/calls"), None)
        .await
        .expect(200)
        .data()
        .as_array()
        .expect("records")
        .iter()
        .filter(|r| r["kind"] == "dialout")
        .cloned()
        .collect()
}

fn gauge(metrics: &str, name: &str) -> Option<f64> {
    metrics.lines().find_map(|l| {
        let rest = l.strip_prefix(name)?.strip_prefix(' ')?;
        rest.trim().parse().ok()
    })
}

/// Waits until no dial-out leg, SIP call or transaction, RTP port or phone media leg remains.
async fn assert_nothing_left(gw: &Gateway) {
    let client = gw.anonymous();
    let names = [
        "dialbridge_dialout_legs",
        "dialbridge_sip_calls",
        "dialbridge_sip_transactions",
        "dialbridge_rtp_ports_in_use",
        "dialbridge_phone_media_legs",
    ];
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        let text = client
            .request(Method::GET, "/metrics")
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text");
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

fn invite_of(trace: &str) -> &str {
    let start = trace.find("INVITE sip:").expect("an INVITE reached SIPp");
    let rest = &trace[start..];
    &rest[..rest
        .find("\n\n")
        .or_else(|| rest.find("\r\n\r\n"))
        .unwrap_or(rest.len())]
}

/// Answered call: accepted, ringing, connected in order; the phone is in the call with inCall 9;
/// the room ends the call for everyone; SIPp gets the BYE; cleared; record; nothing left.
async fn answered_then_room_ends(tp: Tp) {
    let mut sipp = Sipp::uas(
        "dialout_answer.xml",
        tp,
        &["-set", "mhost", "127.0.0.1", "-set", "mport", "9"],
    )
    .await;
    let gw = Gateway::start(&trunk(sipp.port, tp, ""));
    let (alice, token, phone, mut events) = room_with_phone(&gw).await;
    let reply = dial(&alice, &token, phone, None).await.expect(200);
    assert_eq!(reply.data()["status"], "accepted");
    let call_id = reply.data()["callid"].as_str().expect("callid").to_string();

    let mut seen = Vec::new();
    while seen
        .last()
        .map(|e: &Value| e["status"] != "connected")
        .unwrap_or(true)
    {
        let e = events
            .until("callstatus", |e| e["type"] == "callstatus")
            .await;
        assert_eq!(e["callid"], call_id.as_str());
        assert_eq!(e["attendeeId"], phone);
        assert!(e["status"] != "rejected", "rejected: {e}\n{}", gw.log());
        seen.push(e);
    }
    assert_eq!(status_names(&seen), ["accepted", "ringing", "connected"]);
    assert_eq!(seen[2]["code"], 200);
    let p = phone_participant(&alice, &token, phone).await;
    assert_eq!(p["callId"], call_id.as_str());
    assert_eq!(p["callStatus"], "connected");
    assert_eq!(p["inCall"], 9, "{p}");

    // A second dial-out to the same attendee while it is in a call is refused.
    dial(&alice, &token, phone, None).await.expect(400);

    alice
        .talk(
            Method::DELETE,
            &format!("/call/{token}"),
            Some(json!({"all": true})),
        )
        .await
        .expect(200);
    let rest = events.statuses(&call_id).await;
    assert_eq!(status_names(&rest), ["cleared"]);
    assert_eq!(rest[0]["cause"], "ended");
    let (ok, trace) = std::mem::replace(&mut sipp, Sipp::dummy()).finish().await;
    assert!(ok, "SIPp scenario failed (expected our BYE):\n{trace}");
    let invite = invite_of(&trace);
    assert!(
        invite.contains("m=audio "),
        "INVITE carries an SDP offer:\n{invite}"
    );
    for codec in ["PCMU/8000", "PCMA/8000", "telephone-event/8000"] {
        assert!(invite.contains(codec), "offer lacks {codec}:\n{invite}");
    }
    assert!(
        invite.contains("sip:+4940111222@"),
        "From is the trunk's caller id:\n{invite}"
    );

    let p = phone_participant(&alice, &token, phone).await;
    assert_eq!(p["callStatus"], "cleared");
    assert_eq!(p["inCall"], 0);
    let recs = records(&alice, &token).await;
    assert_eq!(recs.len(), 1, "{recs:?}");
    let r = &recs[0];
    assert_eq!(r["callId"], call_id.as_str());
    assert_eq!(r["attendeeId"], phone);
    assert_eq!(r["number"], PHONE);
    assert_eq!(r["trunk"], "sipp");
    assert_eq!(r["status"], "cleared");
    assert_eq!(r["cause"], "ended");
    assert_eq!(r["sipCode"], 200);
    assert!(r["answeredAt"].is_i64() && r["endedAt"].is_i64(), "{r}");
    assert!(r["billableSeconds"].as_i64().is_some_and(|s| s >= 0), "{r}");
    assert_nothing_left(&gw).await;
}

impl Sipp {
    /// A placeholder for a SIPp already handed to `finish`.
    fn dummy() -> Sipp {
        Sipp {
            child: Command::new("true").spawn().expect("true"),
            port: 0,
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }
}

#[tokio::test]
async fn answered_call_udp_room_ends_it() {
    answered_then_room_ends(Tp::Udp).await;
}

#[tokio::test]
async fn answered_call_tcp_room_ends_it() {
    answered_then_room_ends(Tp::Tcp).await;
}

async fn rejected(scenario: &str, tp: Tp, trunk_extra: &str, cause: &str, code: u64) -> String {
    let sipp = Sipp::uas(scenario, tp, &[]).await;
    let gw = Gateway::start(&trunk(sipp.port, tp, trunk_extra));
    let (alice, token, phone, mut events) = room_with_phone(&gw).await;
    let reply = dial(&alice, &token, phone, None).await.expect(200);
    let call_id = reply.data()["callid"].as_str().expect("callid").to_string();
    let seen = events.statuses(&call_id).await;
    let last = seen.last().expect("a final status");
    assert_eq!(last["status"], "rejected", "{seen:?}");
    assert_eq!(last["cause"], cause, "{seen:?}");
    assert_eq!(last["code"], code, "{seen:?}");
    let (ok, trace) = sipp.finish().await;
    assert!(ok, "SIPp scenario failed:\n{trace}");
    let p = phone_participant(&alice, &token, phone).await;
    assert_eq!(p["callStatus"], "rejected");
    assert_eq!(p["inCall"], 0);
    let recs = records(&alice, &token).await;
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0]["status"], "rejected");
    assert_eq!(recs[0]["cause"], cause);
    assert_eq!(recs[0]["sipCode"], code);
    assert_eq!(recs[0]["billableSeconds"], 0);
    assert!(recs[0]["answeredAt"].is_null());
    assert_nothing_left(&gw).await;
    trace
}

#[tokio::test]
async fn busy_is_rejected_with_486_over_udp_and_tcp() {
    for tp in [Tp::Udp, Tp::Tcp] {
        rejected("uas_busy.xml", tp, "", "busy", 486).await;
    }
}

#[tokio::test]
async fn no_answer_cancels_after_the_ringing_timeout() {
    let trace = rejected(
        "uas_ring_cancel.xml",
        Tp::Udp,
        "ringing_timeout = \"1s\"\n",
        "no-answer",
        487,
    )
    .await;
    assert!(trace.contains("CANCEL sip:"), "SIPp saw a CANCEL:\n{trace}");
}

#[tokio::test]
async fn challenge_is_answered_with_the_trunks_credentials() {
    let sipp = Sipp::uas("uas_auth.xml", Tp::Udp, &[]).await;
    let gw = Gateway::start(&trunk(
        sipp.port,
        Tp::Udp,
        "username = \"bridge\"\npassword = \"secret\"\n",
    ));
    let (alice, token, phone, mut events) = room_with_phone(&gw).await;
    let reply = dial(&alice, &token, phone, None).await.expect(200);
    let call_id = reply.data()["callid"].as_str().expect("callid").to_string();
    events
        .until("connected", |e| {
            e["type"] == "callstatus" && e["status"] == "connected"
        })
        .await;
    // The phone attendee leaves the room: its call ends with a BYE.
    alice
        .talk(
            Method::DELETE,
            &format!("/room/{token}/attendees"),
            Some(json!({"attendeeId": phone})),
        )
        .await
        .expect(200);
    let rest = events.statuses(&call_id).await;
    assert_eq!(rest.last().expect("final")["status"], "cleared");
    assert_eq!(rest.last().expect("final")["cause"], "removed");
    let (ok, trace) = sipp.finish().await;
    assert!(ok, "SIPp scenario failed:\n{trace}");
    assert!(
        trace.contains("Proxy-Authorization: Digest username=\"bridge\""),
        "second INVITE authenticated:\n{trace}"
    );
    assert_nothing_left(&gw).await;
}

/// The phone presses a key with SIP INFO, then hangs up (SIPp sends BYE): a dtmf event, then
/// cleared with cause hangup. Dialled anonymously: From is withheld and the real number goes
/// in P-Asserted-Identity.
async fn phone_hangs_up(tp: Tp) {
    let sipp = Sipp::uas("dialout_phone_hangs_up.xml", tp, &[]).await;
    let gw = Gateway::start(&trunk(sipp.port, tp, ""));
    let (alice, token, phone, mut events) = room_with_phone(&gw).await;
    let reply = dial(&alice, &token, phone, Some(json!({"anonymous": true})))
        .await
        .expect(200);
    let call_id = reply.data()["callid"].as_str().expect("callid").to_string();
    let mut seen = Vec::new();
    let mut keys = Vec::new();
    while !seen
        .last()
        .is_some_and(|e: &Value| e["status"] == "cleared" || e["status"] == "rejected")
    {
        let e = events
            .until("callstatus or dtmf", |e| {
                e["type"] == "callstatus" || e["type"] == "dtmf"
            })
            .await;
        if e["type"] == "dtmf" {
            keys.push(e);
        } else {
            assert_eq!(e["callid"], call_id.as_str());
            seen.push(e);
        }
    }
    assert_eq!(
        status_names(&seen),
        ["accepted", "ringing", "connected", "cleared"],
        "{tp:?}: {seen:?}\n{}",
        gw.log()
    );
    // The phone's SIP INFO key press reaches the room as a dtmf event of the phone attendee.
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert_eq!(keys[0]["digit"], "7");
    assert_eq!(keys[0]["attendeeId"], phone);
    assert_eq!(keys[0]["actorType"], "phones");
    assert_eq!(seen[3]["cause"], "hangup");
    let (ok, trace) = sipp.finish().await;
    assert!(ok, "{tp:?}: SIPp scenario failed:\n{trace}");
    let invite = invite_of(&trace);
    assert!(
        invite.contains("sip:anonymous@anonymous.invalid"),
        "{invite}"
    );
    assert!(invite.contains("Privacy: id"), "{invite}");
    assert!(
        invite.contains("P-Asserted-Identity: <sip:+4940111222@"),
        "{invite}"
    );
    let p = phone_participant(&alice, &token, phone).await;
    assert_eq!(p["inCall"], 0);
    let recs = records(&alice, &token).await;
    assert_eq!(recs[0]["status"], "cleared");
    assert_eq!(recs[0]["cause"], "hangup");
    assert_nothing_left(&gw).await;
}

#[tokio::test]
async fn phone_hangs_up_udp() {
    phone_hangs_up(Tp::Udp).await;
}

#[tokio::test]
async fn phone_hangs_up_tcp() {
    phone_hangs_up(Tp::Tcp).await;
}

/// Limits: a second call over a trunk at max_concurrent_calls is refused with 503, one within
/// the calls_per_second spacing with 429, and neither reaches SIPp.
#[tokio::test]
async fn trunk_limits_refuse_calls_without_dialling() {
    let sipp = Sipp::uas("uas_ring_cancel.xml", Tp::Udp, &[]).await;
    let gw = Gateway::start(&trunk(
        sipp.port,
        Tp::Udp,
        "max_concurrent_calls = 1\ncalls_per_second = 0.05\nringing_timeout = \"1s\"\n",
    ));
    let (alice, token, phone, mut events) = room_with_phone(&gw).await;
    let second = alice.add_phone(&token, "+4930777888").await;
    let reply = dial(&alice, &token, phone, None).await.expect(200);
    let call_id = reply.data()["callid"].as_str().expect("callid").to_string();
    let busy = dial(&alice, &token, second, None).await.expect(503);
    assert!(busy.message().contains("max"), "{}", busy.message());
    let seen = events.statuses(&call_id).await;
    assert_eq!(seen.last().expect("final")["cause"], "no-answer");
    let fast = dial(&alice, &token, second, None).await.expect(429);
    assert!(fast.message().contains("per second"), "{}", fast.message());
    let (ok, trace) = sipp.finish().await;
    assert!(ok, "SIPp scenario failed:\n{trace}");
    assert_eq!(trace.matches("INVITE sip:").count(), 1, "{trace}");
    assert_eq!(records(&alice, &token).await.len(), 1);
    assert_nothing_left(&gw).await;
}

#[tokio::test]
async fn number_outside_allowed_numbers_is_refused_and_never_dialled() {
    let sipp = Sipp::uas("uas_busy.xml", Tp::Udp, &[]).await;
    let gw = Gateway::start(&trunk(sipp.port, Tp::Udp, ""));
    let alice = gw.client("alice");
    let token = alice.create_room(2).await;
    let phone = alice.add_phone(&token, "+12025550123").await;
    alice.join_room(&token).await;
    alice.join_call(&token, 3).await;
    let reply = dial(&alice, &token, phone, None).await.expect(403);
    assert!(
        reply.message().contains("allowed_numbers"),
        "{}",
        reply.message()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !sipp.trace().contains("INVITE"),
        "SIPp received something:\n{}",
        sipp.trace()
    );
    assert!(records(&alice, &token).await.is_empty());
    assert_nothing_left(&gw).await;
}

/// The phone's media: a loopback socket that answers dialbridge's RTP with a G.711 tone and
/// keeps what it hears.
struct PhoneMedia {
    addr: SocketAddr,
    heard: Arc<Mutex<Vec<i16>>>,
    peer: Arc<Mutex<Option<SocketAddr>>>,
    dtmf: Arc<Mutex<Vec<u8>>>,
    key: Arc<AtomicU8>,
    stop: Arc<AtomicBool>,
}

impl PhoneMedia {
    fn start(tone: f64) -> PhoneMedia {
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
            stop: Default::default(),
        };
        let (heard, peer, dtmf, key, stop) = (
            media.heard.clone(),
            media.peer.clone(),
            media.dtmf.clone(),
            media.key.clone(),
            media.stop.clone(),
        );
        std::thread::spawn(move || {
            let mut sine = Sine::new(tone, 8000, 8000);
            let mut next = Instant::now();
            let (mut seq, mut ts) = (1u16, 1000u32);
            let mut buf = [0u8; 1500];
            let mut key_frames = 0;
            while !stop.load(Ordering::Relaxed) {
                while let Ok((n, from)) = socket.recv_from(&mut buf) {
                    if n < 12 || from.port() % 2 == 1 {
                        continue;
                    }
                    *peer.lock().expect("lock") = Some(from);
                    let pt = buf[1] & 0x7f;
                    if pt == 0 {
                        let mut h = heard.lock().expect("lock");
                        h.extend(buf[12..n].iter().map(|&c| G711::Pcmu.decode_sample(c)));
                        let excess = h.len().saturating_sub(8000);
                        h.drain(..excess);
                    } else if pt == 101 && n >= 13 {
                        let mut d = dtmf.lock().expect("lock");
                        if d.last() != Some(&buf[12]) {
                            d.push(buf[12]);
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
                let _ = socket.send_to(&packet, to);
            }
        });
        media
    }

    fn hears(&self, freq: f64) -> f64 {
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

async fn wait_for(what: &str, mut condition: impl FnMut() -> bool, describe: impl Fn() -> String) {
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

/// Audio both ways and DTMF both ways between a WebRTC client in the room and the phone.
#[tokio::test]
async fn phone_and_browser_hear_each_other_and_exchange_dtmf() {
    let phone_media = PhoneMedia::start(1000.0);
    let mport = phone_media.addr.port().to_string();
    let sipp = Sipp::uas(
        "dialout_answer.xml",
        Tp::Udp,
        &["-set", "mhost", "127.0.0.1", "-set", "mport", &mport],
    )
    .await;
    let gw = Gateway::start(&trunk(sipp.port, Tp::Udp, ""));
    let (alice, token, phone, mut events) = room_with_phone(&gw).await;
    let offer = Offer::new(false);
    let response = alice
        .request(Method::POST, &format!("/api/v1/rooms/{token}/media"))
        .header("Content-Type", "application/sdp")
        .body(offer.sdp.clone())
        .send()
        .await
        .expect("media join");
    assert_eq!(response.status(), 201);
    let answer = response.text().await.expect("answer");
    let browser: WebRtcClient = offer.start(&answer, 440.0);

    let reply = dial(&alice, &token, phone, None).await.expect(200);
    let call_id = reply.data()["callid"].as_str().expect("callid").to_string();
    events
        .until("connected", |e| {
            e["type"] == "callstatus" && e["status"] == "connected"
        })
        .await;
    wait_for(
        "the browser hearing the phone's 1000 Hz",
        || browser.hears(1000.0) > 0.5,
        || {
            format!(
                "browser hears 1000 Hz {:.3}, 440 Hz {:.3}",
                browser.hears(1000.0),
                browser.hears(440.0)
            )
        },
    )
    .await;
    wait_for(
        "the phone hearing the browser's 440 Hz",
        || phone_media.hears(440.0) > 0.5,
        || {
            format!(
                "phone hears 440 Hz {:.3}, 1000 Hz {:.3}",
                phone_media.hears(440.0),
                phone_media.hears(1000.0)
            )
        },
    )
    .await;

    // DTMF from the phone becomes a room event; DTMF from a moderator reaches the phone.
    phone_media.key.store(5, Ordering::Relaxed);
    let key = events
        .until("dtmf", |e| {
            e["type"] == "dtmf" && e["actorType"] == "phones"
        })
        .await;
    assert_eq!(key["digit"], "5");
    assert_eq!(key["attendeeId"], phone);
    alice
        .call(
            Method::POST,
            &format!("/api/v1/rooms/{token}/phones/{call_id}/dtmf"),
            Some(json!({"digits": "1#"})),
        )
        .await
        .expect(200);
    wait_for(
        "the phone receiving DTMF 1 and #",
        || *phone_media.dtmf.lock().expect("lock") == vec![1, 11],
        || format!("{:?}", phone_media.dtmf.lock().expect("lock")),
    )
    .await;
    gw.client("bob")
        .call(
            Method::POST,
            &format!("/api/v1/rooms/{token}/phones/{call_id}/dtmf"),
            Some(json!({"digits": "1"})),
        )
        .await
        .expect(404);

    // The last WebRTC/user participant leaves the call: the phone leg ends.
    alice
        .talk(Method::DELETE, &format!("/call/{token}"), None)
        .await
        .expect(200);
    let rest = events.statuses(&call_id).await;
    assert_eq!(rest.last().expect("final")["status"], "cleared");
    let (ok, trace) = sipp.finish().await;
    assert!(ok, "SIPp scenario failed:\n{trace}");
    drop(browser);
    assert_nothing_left(&gw).await;
    let _ = TALK;
}

/// Early media: a phone that only ever sends 183 with SDP is heard in the room while it rings;
/// the room then ends the call, which CANCELs it.
#[tokio::test]
async fn early_media_is_heard_in_the_room_before_any_answer() {
    let phone_media = PhoneMedia::start(1000.0);
    let mport = phone_media.addr.port().to_string();
    let sipp = Sipp::uas(
        "dialout_early_media.xml",
        Tp::Udp,
        &["-set", "mhost", "127.0.0.1", "-set", "mport", &mport],
    )
    .await;
    let gw = Gateway::start(&trunk(sipp.port, Tp::Udp, ""));
    let (alice, token, phone, mut events) = room_with_phone(&gw).await;
    let offer = Offer::new(false);
    let response = alice
        .request(Method::POST, &format!("/api/v1/rooms/{token}/media"))
        .header("Content-Type", "application/sdp")
        .body(offer.sdp.clone())
        .send()
        .await
        .expect("media join");
    assert_eq!(response.status(), 201);
    let browser = offer.start(&response.text().await.expect("answer"), 440.0);
    let reply = dial(&alice, &token, phone, None).await.expect(200);
    let call_id = reply.data()["callid"].as_str().expect("callid").to_string();
    events
        .until("ringing", |e| {
            e["type"] == "callstatus" && e["status"] == "ringing"
        })
        .await;
    wait_for(
        "the browser hearing the ringing phone's 1000 Hz",
        || browser.hears(1000.0) > 0.5,
        || format!("browser hears 1000 Hz {:.3}", browser.hears(1000.0)),
    )
    .await;
    let p = phone_participant(&alice, &token, phone).await;
    assert_eq!(p["callStatus"], "ringing");
    assert_eq!(
        p["inCall"], 0,
        "a ringing phone is not announced in the call"
    );
    alice
        .talk(
            Method::DELETE,
            &format!("/call/{token}"),
            Some(json!({"all": true})),
        )
        .await
        .expect(200);
    let rest = events.statuses(&call_id).await;
    let last = rest.last().expect("final");
    assert_eq!(last["status"], "rejected");
    assert_eq!(last["cause"], "ended");
    assert_eq!(last["code"], 487);
    let (ok, trace) = sipp.finish().await;
    assert!(ok, "SIPp scenario failed (expected our CANCEL):\n{trace}");
    drop(browser);
    assert_nothing_left(&gw).await;
}

/// An answered phone that sends no RTP is hung up after media_timeout; one that talks too long
/// after max_call_duration. Both: BYE on the wire, cleared with that cause.
#[tokio::test]
async fn media_timeout_and_max_duration_end_the_call() {
    for (setting, cause) in [
        ("media_timeout = \"2s\"\n", "media-timeout"),
        ("max_call_duration = \"2s\"\n", "max-duration"),
    ] {
        // The phone's media is a socket that answers with a tone only for max-duration.
        let phone_media = PhoneMedia::start(1000.0);
        let silent = UdpSocket::bind("127.0.0.1:0").expect("silent socket");
        let mport = if cause == "media-timeout" {
            silent.local_addr().expect("addr").port()
        } else {
            phone_media.addr.port()
        }
        .to_string();
        let sipp = Sipp::uas(
            "dialout_answer.xml",
            Tp::Udp,
            &["-set", "mhost", "127.0.0.1", "-set", "mport", &mport],
        )
        .await;
        let gw = Gateway::start(&trunk(sipp.port, Tp::Udp, setting));
        let (alice, token, phone, mut events) = room_with_phone(&gw).await;
        let reply = dial(&alice, &token, phone, None).await.expect(200);
        let call_id = reply.data()["callid"].as_str().expect("callid").to_string();
        let seen = events.statuses(&call_id).await;
        assert_eq!(
            status_names(&seen),
            ["accepted", "ringing", "connected", "cleared"],
            "{cause}: {seen:?}"
        );
        assert_eq!(seen[3]["cause"], cause);
        let (ok, trace) = sipp.finish().await;
        assert!(
            ok,
            "{cause}: SIPp scenario failed (expected our BYE):\n{trace}"
        );
        assert_eq!(records(&alice, &token).await[0]["cause"], cause);
        assert_nothing_left(&gw).await;
    }
}

/// A trunk that cannot be reached (nothing listens on its TCP port) fails the call: rejected
/// with cause failed and the transport error's 503.
#[tokio::test]
async fn unreachable_trunk_is_rejected_as_failed() {
    let port = free_port(Tp::Tcp);
    let gw = Gateway::start(&trunk(port, Tp::Tcp, ""));
    let (alice, token, phone, mut events) = room_with_phone(&gw).await;
    let reply = dial(&alice, &token, phone, None).await.expect(200);
    let call_id = reply.data()["callid"].as_str().expect("callid").to_string();
    let seen = events.statuses(&call_id).await;
    let last = seen.last().expect("final");
    assert_eq!(last["status"], "rejected", "{seen:?}");
    assert_eq!(last["cause"], "failed");
    assert_eq!(last["code"], 503);
    let recs = records(&alice, &token).await;
    assert_eq!(recs[0]["status"], "rejected");
    assert_eq!(recs[0]["cause"], "failed");
    assert_nothing_left(&gw).await;
}

/// Stopping the gateway (SIGTERM) with a phone connected sends the phone a BYE first.
#[tokio::test]
async fn shutdown_hangs_up_connected_phones() {
    let sipp = Sipp::uas(
        "dialout_answer.xml",
        Tp::Udp,
        &["-set", "mhost", "127.0.0.1", "-set", "mport", "9"],
    )
    .await;
    let mut gw = Gateway::start(&trunk(sipp.port, Tp::Udp, ""));
    let (alice, token, phone, mut events) = room_with_phone(&gw).await;
    dial(&alice, &token, phone, None).await.expect(200);
    events
        .until("connected", |e| {
            e["type"] == "callstatus" && e["status"] == "connected"
        })
        .await;
    assert!(gw.terminate(), "clean exit:\n{}", gw.log());
    let (ok, trace) = sipp.finish().await;
    assert!(ok, "SIPp scenario failed (expected our BYE):\n{trace}");
}

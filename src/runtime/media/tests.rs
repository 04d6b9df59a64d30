//! The shard driven by hand in virtual time with real loopback sockets standing in for the
//! phones: which packets leave, and when (in which call), not how fast.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dialbridge_bridge::g711::G711;
use dialbridge_bridge::resample::FRAME_8K;
use dialbridge_bridge::testing::{tone_ratio, Sine};
use tokio::sync::mpsc;

use super::bench;
use super::command::Command;
use super::reader::stun_ufrag;
use super::registry::{Placement, Registry};
use super::room::{MIX_RATE, TICK};
use super::shard::Shard;
use super::start::leg_config;
use super::types::{MediaId, PhoneMediaEvent};
use crate::config::MediaConfig;
use crate::events::EventBus;
use crate::room::{MediaParticipant, PhoneMute};
use crate::sync::lock;

const ROOM: i64 = 7;

struct Phone {
    id: MediaId,
    /// The phone's own socket (where the gateway sends, and what sends to the gateway).
    socket: std::net::UdpSocket,
    /// The gateway's RTP address for this phone.
    gateway: SocketAddr,
    seq: u16,
    sine: Sine,
    events: mpsc::UnboundedReceiver<PhoneMediaEvent>,
}

impl Phone {
    /// Sends 20 ms of its tone as PCMU.
    fn talk(&mut self) {
        let mut pcm = [0i16; FRAME_8K];
        self.sine.fill(&mut pcm);
        let mut packet = [0u8; 12 + FRAME_8K];
        packet[0] = 0x80;
        packet[2..4].copy_from_slice(&self.seq.to_be_bytes());
        let ts = u32::from(self.seq) * FRAME_8K as u32;
        packet[4..8].copy_from_slice(&ts.to_be_bytes());
        packet[8..12].copy_from_slice(&(0x1000 + self.id.0 as u32).to_be_bytes());
        G711::Pcmu.encode(&pcm, &mut packet[12..]);
        self.seq = self.seq.wrapping_add(1);
        self.socket
            .send_to(&packet, self.gateway)
            .unwrap_or_else(|e| panic!("{e}"));
    }

    /// Presses `event` (RFC 4733: a start and an end packet).
    fn press(&mut self, event: u8) {
        for end in [false, true] {
            let mut packet = [0u8; 16];
            packet[0] = 0x80;
            packet[1] = 101 | if end { 0 } else { 0x80 };
            packet[2..4].copy_from_slice(&self.seq.to_be_bytes());
            let ts = u32::from(self.seq) * FRAME_8K as u32;
            packet[4..8].copy_from_slice(&ts.to_be_bytes());
            packet[8..12].copy_from_slice(&(0x1000 + self.id.0 as u32).to_be_bytes());
            packet[12] = event;
            packet[13] = if end { 0x80 | 10 } else { 10 };
            packet[14..16].copy_from_slice(&(if end { 800u16 } else { 160 }).to_be_bytes());
            self.seq = self.seq.wrapping_add(1);
            self.socket
                .send_to(&packet, self.gateway)
                .unwrap_or_else(|e| panic!("{e}"));
        }
    }

    /// Every RTP packet waiting at the phone: (sequence number, decoded audio).
    fn heard(&self) -> Vec<(u16, Vec<i16>)> {
        let mut out = Vec::new();
        let mut buf = [0u8; 1500];
        while let Ok((n, _)) = self.socket.recv_from(&mut buf) {
            if n < 12 || buf[1] & 0x7f != 0 {
                continue;
            }
            let mut pcm = vec![0i16; n - 12];
            G711::Pcmu.decode(&buf[12..n], &mut pcm);
            out.push((u16::from_be_bytes([buf[2], buf[3]]), pcm));
        }
        out
    }

    /// Waits (for at most a second) until a packet has arrived at the phone.
    fn wait(&self) {
        self.socket
            .set_read_timeout(Some(Duration::from_secs(1)))
            .unwrap_or_else(|e| panic!("{e}"));
        let mut buf = [0u8; 1];
        let _ = self.socket.peek_from(&mut buf);
        self.socket
            .set_nonblocking(true)
            .unwrap_or_else(|e| panic!("{e}"));
    }
}

fn shard(events: Arc<EventBus>) -> (Shard, Vec<Box<dyn std::any::Any>>) {
    bench::lone_shard(events).unwrap_or_else(|e| panic!("{e}"))
}

fn who(n: u64) -> MediaParticipant {
    MediaParticipant {
        room_id: ROOM,
        session_id: format!("phone-{n}"),
        attendee_id: n as i64,
        actor_type: "phones".into(),
        actor_id: format!("phone{n}"),
    }
}

fn add_phone(shard: &mut Shard, n: u64, freq: f64) -> Phone {
    add_phone_to(shard, n, freq, true)
}

/// A phone in the room, or (`room` false) in no room yet.
fn add_phone_to(shard: &mut Shard, n: u64, freq: f64, room: bool) -> Phone {
    let bind = || std::net::UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let (socket, rtp, rtcp) = (bind(), bind(), bind());
    socket
        .set_nonblocking(true)
        .unwrap_or_else(|e| panic!("{e}"));
    let addr = |s: &std::net::UdpSocket| s.local_addr().unwrap_or_else(|e| panic!("{e}"));
    let (gateway, remote) = (addr(&rtp), addr(&socket));
    let (events, receiver) = mpsc::unbounded_channel();
    let id = MediaId(n);
    shard.add_phone(
        id,
        bench::loopback_phone(room.then(|| who(n)), (rtp, rtcp), remote, events),
    );
    Phone {
        id,
        socket,
        gateway,
        seq: 1,
        sine: Sine::new(freq, 8000, 8000),
        events: receiver,
    }
}

/// Lets the shard take what arrived at a phone's RTP socket, as its loop does on a wake.
/// Waits until `phone`'s packet has queued its leg (as the loop is woken), then reads the
/// queued legs as the loop does.
async fn arrived(shard: &mut Shard, phone: &Phone) {
    let queued = shard.wait_queued(phone.id);
    if tokio::time::timeout(Duration::from_secs(10), queued)
        .await
        .is_err()
    {
        panic!("the phone's packet did not queue its leg");
    }
    shard.read_ready_phones(Instant::now());
}

fn direct(shard: &Shard) -> bool {
    shard.rooms.get(&ROOM).is_some_and(|r| r.direct.is_some())
}

#[test]
fn opus_settings_reach_the_legs() {
    let mut config = MediaConfig::default();
    config.opus.complexity = 8;
    config.opus.phone_complexity = 2;
    config.opus.bitrate = 24_000;
    config.opus.fec = false;
    config.opus.expected_loss = 3;
    config.opus.dtx = true;
    let candidate: SocketAddr = ([192, 0, 2, 1], 10000).into();
    let leg = leg_config(&config, candidate);
    assert_eq!(leg.candidate, candidate);
    assert_eq!(leg.mix_rate, MIX_RATE);
    assert_eq!((leg.opus.complexity, leg.direct_complexity), (8, 2));
    assert_eq!(
        (leg.opus.bitrate, leg.opus.expected_loss_percent),
        (24_000, 3)
    );
    assert!(!leg.opus.fec && leg.opus.dtx);
}

#[test]
fn ice_checks_are_routed_by_our_username_fragment() {
    // A binding request with SOFTWARE (odd length, padded) before USERNAME "srv1:cli9".
    let mut stun = vec![0x00, 0x01, 0, 0, 0x21, 0x12, 0xA4, 0x42];
    stun.extend_from_slice(&[7; 12]);
    stun.extend_from_slice(&[0x80, 0x22, 0, 3, b'a', b'b', b'c', 0]);
    stun.extend_from_slice(&[0x00, 0x06, 0, 9]);
    stun.extend_from_slice(b"srv1:cli9\0\0\0");
    assert_eq!(stun_ufrag(&stun), Some("srv1"));
    // Not STUN, no cookie, cut short, no USERNAME.
    assert_eq!(stun_ufrag(&[0x80; 40]), None);
    let mut no_cookie = stun.clone();
    no_cookie[4] = 0;
    assert_eq!(stun_ufrag(&no_cookie), None);
    assert_eq!(stun_ufrag(&stun[..30]), None);
    assert_eq!(stun_ufrag(&stun[..28]), None);
}

#[test]
fn rooms_go_to_the_least_loaded_thread_and_stay_there() {
    let mut r = Registry::new(2);
    assert_eq!(r.place(1), 0);
    assert_eq!(r.place(2), 1);
    assert_eq!(r.place(1), 0);
    assert_eq!(r.place(3), 1);
    assert_eq!(r.place_lobby(), 0);
    assert_eq!(r.load, vec![3, 2]);
    r.release(2);
    r.release(3);
    assert_eq!(r.shard_of(2), None);
    assert_eq!(r.place(4), 1);
    r.release(1);
    assert_eq!(r.shard_of(1), Some(0), "one leg of room 1 is left");
    r.release(1);
    r.release_lobby(0);
    assert_eq!((r.shard_of(1), r.load.clone()), (None, vec![0, 1]));
}

#[tokio::test]
async fn two_party_room_forwards_each_packet_in_the_turn_it_arrives() {
    let (mut shard, _keep) = shard(Arc::new(EventBus::default()));
    let mut a = add_phone(&mut shard, 1, 1000.0);
    let b = add_phone(&mut shard, 2, 440.0);
    assert!(direct(&shard));

    // No tick runs in this test until the end: every packet B hears was forwarded in the
    // call that read A's packet.
    let mut heard = Vec::new();
    for _ in 0..5 {
        a.talk();
        arrived(&mut shard, &a).await;
        b.wait();
        let got = b.heard();
        assert_eq!(got.len(), 1, "one packet out per packet in");
        heard.extend(got);
    }
    let seqs: Vec<u16> = heard.iter().map(|(s, _)| *s).collect();
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0].wrapping_add(1)),
        "{seqs:?}"
    );
    let pcm: Vec<i16> = heard.iter().flat_map(|(_, p)| p.clone()).collect();
    assert!(tone_ratio(&pcm, 1000.0, 8000) > 0.9);

    // A lost packet: nothing is made up in its place (B's phone conceals it).
    a.seq = a.seq.wrapping_add(1);
    a.talk();
    arrived(&mut shard, &a).await;
    b.wait();
    assert_eq!(b.heard().len(), 1);

    // Send mute on A: B hears silence in its place, still at once.
    shard.command(Command::PhoneMute {
        id: a.id,
        mute: PhoneMute {
            speaking: true,
            listening: false,
        },
    });
    a.talk();
    arrived(&mut shard, &a).await;
    b.wait();
    let got = b.heard();
    assert_eq!(got.len(), 1);
    assert!(got[0].1.iter().all(|s| *s == 0), "muted: silence");
    shard.command(Command::PhoneMute {
        id: a.id,
        mute: PhoneMute::default(),
    });

    // A key press on the direct path goes to the leg's owner at once.
    a.press(5);
    arrived(&mut shard, &a).await;
    let key = a.events.try_recv();
    assert_eq!(key, Ok(PhoneMediaEvent::Dtmf('5')));
}

/// Two shards wired to each other as `start` wires them.
fn two_shards() -> (Shard, Shard, Vec<Box<dyn std::any::Any>>) {
    let events = Arc::new(EventBus::default());
    let (mut a, mut keep) = shard(events.clone());
    let (mut b, keep_b) = shard(events);
    keep.extend(keep_b);
    let registry = Arc::new(Mutex::new(Registry::new(2)));
    let (a_tx, a_rx) = mpsc::unbounded_channel();
    let (b_tx, b_rx) = mpsc::unbounded_channel();
    let peers: Arc<[mpsc::WeakUnboundedSender<Command>]> =
        Arc::from(vec![a_tx.downgrade(), b_tx.downgrade()]);
    (a.parts.commands, b.parts.commands) = (a_rx, b_rx);
    (a.parts.registry, b.parts.registry) = (registry.clone(), registry);
    (a.parts.peers, b.parts.peers) = (peers.clone(), peers);
    b.parts.index = 1;
    keep.push(Box::new((a_tx, b_tx)));
    (a, b, keep)
}

#[tokio::test]
async fn a_phone_in_no_room_hears_its_prompt_then_moves_to_its_rooms_shard() {
    let (mut lobby, mut room, _keep) = two_shards();
    // The room's other participant is on shard 1; the caller answered on shard 0.
    let b = add_phone(&mut room, 2, 440.0);
    let mut caller = add_phone_to(&mut lobby, 1, 1000.0, false);
    {
        let mut registry = lock(&room.parts.registry);
        registry.rooms.insert(ROOM, Placement { shard: 1, legs: 1 });
        registry.load = vec![1, 1];
        registry.phones.insert(b.id, 1);
        registry.phones.insert(caller.id, 0);
    }
    assert!(lobby.lobby.contains(&caller.id));
    // One turn of the reactor: the new sockets are known to be writable.
    tokio::task::yield_now().await;

    static PROMPT: [i16; 400] = [8000; 400];
    lobby.command(Command::PhonePrompt {
        id: caller.id,
        prompt: Some(&PROMPT),
    });
    let t0 = Instant::now();
    for k in 1..=3u32 {
        caller.talk();
        // The shard's loop lets the reactor see the datagram before the tick reads it.
        tokio::task::yield_now().await;
        lobby.tick(t0 + TICK * k);
    }
    caller.wait();
    let heard = caller.heard();
    assert_eq!(heard.len(), 3);
    assert!(
        heard[0].1.iter().all(|s| (*s - 8000).abs() < 300),
        "the prompt"
    );
    assert_eq!(caller.events.try_recv(), Ok(PhoneMediaEvent::PromptDone));
    // Nothing of the caller reached the room.
    b.wait();
    assert!(b.heard().is_empty());

    // Joining the room hands the leg over to the room's shard, where it talks to B
    // directly.
    let handle_registry = lobby.parts.registry.clone();
    {
        let mut registry = lock(&handle_registry);
        registry.release_lobby(0);
        registry.place(ROOM);
        registry.phones.insert(caller.id, 1);
        registry.moving.insert(caller.id);
    }
    lobby.command(Command::PhoneMove {
        id: caller.id,
        who: who(1),
        to: 1,
    });
    assert!(lobby.phones.is_empty());
    // A command the handle sends to the new shard before the leg got there waits for it.
    room.command(Command::PhonePrompt {
        id: caller.id,
        prompt: Some(&PROMPT),
    });
    while let Ok(command) = room.parts.commands.try_recv() {
        room.command(command);
    }
    assert!(room
        .phones
        .get(&caller.id)
        .is_some_and(|s| s.prompt.is_some()));
    assert!(room.stashed.is_empty());
    room.command(Command::PhonePrompt {
        id: caller.id,
        prompt: None,
    });
    assert!(direct(&room));
    caller.talk();
    arrived(&mut room, &caller).await;
    b.wait();
    let got = b.heard();
    assert_eq!(got.len(), 1);
    assert!(tone_ratio(&got[0].1, 1000.0, 8000) > 0.5);
    let registry = lock(&handle_registry);
    assert_eq!(registry.load, vec![0, 2]);
    assert!(registry.moving.is_empty());
}

#[tokio::test]
async fn third_participant_switches_to_mixing_and_back_without_a_break_in_the_stream() {
    let (mut shard, _keep) = shard(Arc::new(EventBus::default()));
    let mut a = add_phone(&mut shard, 1, 1000.0);
    let b = add_phone(&mut shard, 2, 440.0);
    let t0 = Instant::now();
    a.talk();
    arrived(&mut shard, &a).await;
    b.wait();
    let mut heard = b.heard();
    assert_eq!(heard.len(), 1);

    let mut c = add_phone(&mut shard, 3, 0.0);
    assert!(!direct(&shard));
    // Mixing: packets wait for the tick; 25 ticks of A's tone reach B and C mixed.
    for k in 1..=25u32 {
        a.talk();
        c.talk();
        if let Some(slot) = shard.phones.get(&a.id) {
            let _ = slot.rtp.readable().await;
        }
        shard.tick(t0 + TICK * k);
    }
    b.wait();
    let mixed = b.heard();
    assert!(mixed.len() >= 20, "{} packets", mixed.len());
    let tail: Vec<i16> = mixed
        .iter()
        .rev()
        .take(10)
        .flat_map(|(_, p)| p.clone())
        .collect();
    assert!(tone_ratio(&tail, 1000.0, 8000) > 0.5);
    c.wait();
    assert!(!c.heard().is_empty());
    heard.extend(mixed);

    // C leaves: direct again, and B's sequence numbers ran on through both switches.
    shard.remove_phone(c.id, "test");
    assert!(direct(&shard));
    let _ = c.heard();
    a.talk();
    arrived(&mut shard, &a).await;
    b.wait();
    heard.extend(b.heard());
    let seqs: Vec<u16> = heard.iter().map(|(s, _)| *s).collect();
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0].wrapping_add(1)),
        "{seqs:?}"
    );
}

/// Runs 20 mixing ticks with A and C talking; the last levels report.
async fn levels_after_ticks(
    shard: &mut Shard,
    talkers: [&mut Phone; 2],
    receiver: &mut tokio::sync::broadcast::Receiver<Arc<crate::events::Published>>,
    t0: Instant,
    from: u32,
) -> Vec<crate::events::SpeakerLevel> {
    let [a, c] = talkers;
    for k in from..from + 20 {
        a.talk();
        c.talk();
        if let Some(slot) = shard.phones.get(&a.id) {
            let _ = slot.rtp.readable().await;
        }
        shard.tick(t0 + TICK * k);
    }
    let mut report = None;
    while let Ok(published) = receiver.try_recv() {
        if let crate::events::RoomEvent::Levels { levels } = &published.event {
            report = Some(levels.clone());
        }
    }
    report.unwrap_or_else(|| panic!("no levels event"))
}

#[tokio::test]
async fn a_mixing_room_reports_each_speakers_level_and_a_muted_one_as_silent() {
    let events = Arc::new(EventBus::default());
    let mut receiver = events.subscribe(ROOM);
    let (mut shard, _keep) = shard(events);
    let mut a = add_phone(&mut shard, 1, 1000.0);
    let _b = add_phone(&mut shard, 2, 440.0);
    let mut c = add_phone(&mut shard, 3, 0.0);
    assert!(!direct(&shard));
    let t0 = Instant::now();
    let report = levels_after_ticks(&mut shard, [&mut a, &mut c], &mut receiver, t0, 1).await;
    let of = |report: &[crate::events::SpeakerLevel], n: i64| {
        report
            .iter()
            .find(|l| l.attendee_id == n)
            .map(|l| l.level)
            .unwrap_or_else(|| panic!("no level for {n}: {report:?}"))
    };
    assert!(of(&report, 1) > 0.1, "{report:?}");
    assert!(of(&report, 3) < 0.01, "{report:?}");
    assert!(report
        .iter()
        .any(|l| l.attendee_id == 1 && l.session_id == "phone-1"));
    shard.command(Command::PhoneMute {
        id: a.id,
        mute: PhoneMute {
            speaking: true,
            listening: false,
        },
    });
    let muted = levels_after_ticks(&mut shard, [&mut a, &mut c], &mut receiver, t0, 21).await;
    assert_eq!(of(&muted, 1), 0.0, "{muted:?}");
}

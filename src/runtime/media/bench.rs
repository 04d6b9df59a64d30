//! A two-party room on one shard, driven by hand, for `benches/media_engine.rs` and the unit
//! tests: not part of the service. Built only for tests and with the `bench-hooks` feature.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dialbridge_bridge::g711::G711;
use dialbridge_bridge::resample::FRAME_8K;
use tokio::sync::mpsc;

use super::registry::Registry;
use super::shard::{Shard, ShardParts, Totals};
use super::types::{MediaId, PhoneMedia, PhoneMediaEvent, PhoneRemote};
use crate::events::EventBus;
use crate::room::MediaParticipant;

/// A phone leg's media as the benchmark and the tests make it: PCMU with telephone-event,
/// RTP and RTCP to one `remote` address, no media timeout to speak of.
pub(super) fn loopback_phone(
    who: Option<MediaParticipant>,
    (rtp, rtcp): (std::net::UdpSocket, std::net::UdpSocket),
    remote: SocketAddr,
    events: mpsc::UnboundedSender<PhoneMediaEvent>,
) -> PhoneMedia {
    PhoneMedia {
        who,
        rtp,
        rtcp,
        remote: PhoneRemote {
            law: G711::Pcmu,
            dtmf_pt: Some(101),
            rtp: remote,
            rtcp: remote,
            receives: true,
            srtp: None,
        },
        media_timeout: Duration::from_secs(3600),
        events,
    }
}

/// A shard on its own, on a loopback socket; the second value keeps its channels open.
pub(super) fn lone_shard(
    events: Arc<EventBus>,
) -> std::io::Result<(Shard, Vec<Box<dyn std::any::Any>>)> {
    let socket = bind()?;
    let local = socket.local_addr()?;
    let (commands_tx, commands) = mpsc::unbounded_channel();
    let (datagrams_tx, datagrams) = mpsc::channel(4);
    let (pool, pool_rx) = std::sync::mpsc::sync_channel(4);
    let (routes, routes_rx) = mpsc::unbounded_channel();
    let shard = Shard::new(ShardParts {
        index: 0,
        socket: Arc::new(socket),
        local,
        demux: None,
        commands,
        datagrams,
        pool,
        routes,
        registry: Arc::new(Mutex::new(Registry::new(1))),
        totals: Arc::new(Totals::default()),
        events,
        peers: Arc::from(Vec::new()),
    });
    let keep: Vec<Box<dyn std::any::Any>> = vec![
        Box::new(commands_tx),
        Box::new(datagrams_tx),
        Box::new(pool_rx),
        Box::new(routes_rx),
    ];
    Ok((shard, keep))
}

/// Two phone legs in one room (the direct path) and the sockets standing in for the phones.
pub struct TwoPhones {
    shard: Shard,
    a: MediaId,
    phone_a: std::net::UdpSocket,
    phone_b: std::net::UdpSocket,
    gateway_a: SocketAddr,
    packet: [u8; 12 + FRAME_8K],
    seq: u16,
    _keep: Vec<Box<dyn std::any::Any>>,
}

fn bind() -> std::io::Result<std::net::UdpSocket> {
    std::net::UdpSocket::bind("127.0.0.1:0")
}

impl TwoPhones {
    /// Builds the room, and `idle_rooms` more two-phone rooms on the same shard whose phones
    /// stay silent; call inside a tokio runtime (the shard's sockets join its reactor).
    pub fn new(mixing: bool, idle_rooms: usize) -> std::io::Result<TwoPhones> {
        let (mut shard, mut keep) = lone_shard(Arc::new(EventBus::default()))?;
        let mut phone =
            |n: u64, room_id: i64| -> std::io::Result<(std::net::UdpSocket, SocketAddr)> {
                let (own, rtp, rtcp) = (bind()?, bind()?, bind()?);
                let gateway = rtp.local_addr()?;
                let (events, receiver) = mpsc::unbounded_channel();
                keep.push(Box::new(receiver));
                let remote = own.local_addr()?;
                let who = MediaParticipant {
                    room_id,
                    session_id: format!("phone-{n}"),
                    attendee_id: n as i64,
                    actor_type: "phones".into(),
                    actor_id: format!("phone{n}"),
                };
                shard.add_phone(
                    MediaId(n),
                    loopback_phone(Some(who), (rtp, rtcp), remote, events),
                );
                Ok((own, gateway))
            };
        let (phone_a, gateway_a) = phone(1, 1)?;
        let (phone_b, _) = phone(2, 1)?;
        let mut others = Vec::new();
        if mixing {
            // A third, silent participant: the room mixes.
            others.push(phone(3, 1)?.0);
        }
        for k in 0..idle_rooms as u64 {
            for n in [10 + 2 * k, 11 + 2 * k] {
                others.push(phone(n, 2 + k as i64)?.0);
            }
        }
        keep.push(Box::new(others));
        let mut packet = [0u8; 12 + FRAME_8K];
        packet[0] = 0x80;
        packet[8..12].copy_from_slice(&0x5151_5151u32.to_be_bytes());
        G711::Pcmu.encode(&[1000; FRAME_8K], &mut packet[12..]);
        Ok(TwoPhones {
            shard,
            a: MediaId(1),
            phone_a,
            phone_b,
            gateway_a,
            packet,
            seq: 0,
            _keep: keep,
        })
    }

    /// Whether the room forwards directly.
    pub fn is_direct(&self) -> bool {
        self.shard.rooms.get(&1).is_some_and(|r| r.direct.is_some())
    }

    /// Phone A sends one packet and the shard reads it as its loop does (woken by the
    /// socket's readiness); on the direct path it is forwarded to phone B in this call.
    pub async fn phone_a_sends(&mut self) -> std::io::Result<()> {
        self.seq = self.seq.wrapping_add(1);
        self.packet[2..4].copy_from_slice(&self.seq.to_be_bytes());
        let ts = u32::from(self.seq) * FRAME_8K as u32;
        self.packet[4..8].copy_from_slice(&ts.to_be_bytes());
        self.phone_a.send_to(&self.packet, self.gateway_a)?;
        self.shard.wait_queued(self.a).await;
        self.shard.read_ready_phones(Instant::now());
        Ok(())
    }

    /// One mixing tick at `now`.
    pub fn tick(&mut self, now: Instant) {
        self.shard.tick(now);
    }

    /// Waits for the next packet at phone B; its length.
    pub fn phone_b_receives(&self) -> std::io::Result<usize> {
        let mut buf = [0u8; 1500];
        self.phone_b.recv(&mut buf)
    }

    /// Drops whatever waits at phone B.
    pub fn drain(&self) -> std::io::Result<()> {
        self.phone_b.set_nonblocking(true)?;
        let mut buf = [0u8; 1500];
        while self.phone_b.recv(&mut buf).is_ok() {}
        self.phone_b.set_nonblocking(false)
    }
}

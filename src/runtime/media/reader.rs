//! The reader thread: the receive side of the WebRTC socket, routing each datagram to the shard
//! that owns its peer.

use std::collections::HashMap;
use std::io::ErrorKind;
use std::net::SocketAddr;

use tokio::net::UdpSocket;
use tokio::sync::mpsc;

/// Largest datagram read.
pub(super) const MAX_DATAGRAM: usize = 2048;

/// Addresses the reader learns for one leg from ICE checks (candidate pairs it may use).
const MAX_LEG_ADDRS: usize = 16;

/// What the reader thread is told: where a new leg's ICE checks go, and when to forget it.
pub(super) enum Route {
    Leg { ufrag: String, shard: usize },
    Forget { ufrag: String },
    Stop,
}

/// One received datagram in a pooled buffer.
pub(super) struct Datagram {
    pub(super) from: SocketAddr,
    pub(super) len: usize,
    pub(super) buf: [u8; MAX_DATAGRAM],
}

impl Datagram {
    pub(super) fn empty() -> Box<Datagram> {
        Box::new(Datagram {
            from: SocketAddr::from(([0, 0, 0, 0], 0)),
            len: 0,
            buf: [0; MAX_DATAGRAM],
        })
    }
}

/// The ICE username fragment of ours in a STUN request's USERNAME ("ours:theirs"), read in
/// place.
pub(super) fn stun_ufrag(bytes: &[u8]) -> Option<&str> {
    // RFC 5389: two zero bits, a length, the magic cookie; attributes are 4-byte aligned TLVs.
    if bytes.len() < 20 || bytes.first()? > &3 || bytes.get(4..8)? != [0x21, 0x12, 0xA4, 0x42] {
        return None;
    }
    let mut at = 20;
    while let Some(head) = bytes.get(at..at + 4) {
        let kind = u16::from_be_bytes([head[0], head[1]]);
        let len = u16::from_be_bytes([head[2], head[3]]) as usize;
        let value = bytes.get(at + 4..at + 4 + len)?;
        if kind == 0x0006 {
            return std::str::from_utf8(value).ok()?.split(':').next();
        }
        at += 4 + len.div_ceil(4) * 4;
    }
    None
}

/// The receive side of the WebRTC socket: routes each datagram to the shard owning its peer.
pub(super) struct Reader {
    socket: UdpSocket,
    shards: Vec<mpsc::Sender<Box<Datagram>>>,
    pool: std::sync::mpsc::Receiver<Box<Datagram>>,
    give_back: std::sync::mpsc::SyncSender<Box<Datagram>>,
    routes: mpsc::UnboundedReceiver<Route>,
    by_ufrag: HashMap<String, (usize, Vec<SocketAddr>)>,
    by_addr: HashMap<SocketAddr, usize>,
    /// A buffer taken from the pool and not yet used.
    spare: Option<Box<Datagram>>,
    /// Where datagrams go when the pool is empty (they are dropped).
    scratch: Box<Datagram>,
}

impl Reader {
    pub(super) fn new(
        socket: UdpSocket,
        shards: Vec<mpsc::Sender<Box<Datagram>>>,
        pool: std::sync::mpsc::Receiver<Box<Datagram>>,
        give_back: std::sync::mpsc::SyncSender<Box<Datagram>>,
        routes: mpsc::UnboundedReceiver<Route>,
    ) -> Reader {
        Reader {
            socket,
            shards,
            pool,
            give_back,
            routes,
            by_ufrag: HashMap::new(),
            by_addr: HashMap::new(),
            spare: None,
            scratch: Datagram::empty(),
        }
    }

    pub(super) async fn run(mut self) {
        loop {
            tokio::select! {
                biased;
                route = self.routes.recv() => match route {
                    Some(Route::Leg { ufrag, shard }) => {
                        self.by_ufrag.insert(ufrag, (shard, Vec::new()));
                    }
                    Some(Route::Forget { ufrag }) => {
                        if let Some((_, addrs)) = self.by_ufrag.remove(&ufrag) {
                            for a in addrs {
                                self.by_addr.remove(&a);
                            }
                        }
                    }
                    Some(Route::Stop) | None => break,
                },
                readable = self.socket.readable() => {
                    if let Err(e) = readable {
                        tracing::error!(error = %e, "media socket failed");
                        break;
                    }
                    self.read_all();
                }
            }
        }
    }

    fn read_all(&mut self) {
        loop {
            let mut d = match self.spare.take().or_else(|| self.pool.try_recv().ok()) {
                Some(d) => d,
                None => {
                    // Every buffer is queued at a shard: this datagram is dropped.
                    match self.socket.try_recv_from(&mut self.scratch.buf) {
                        Ok(_) => {
                            metrics::counter!("dialbridge_webrtc_receive_dropped_total")
                                .increment(1);
                            continue;
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                        Err(e) if e.kind() == ErrorKind::ConnectionRefused => continue,
                        Err(e) => {
                            tracing::warn!(error = %e, "media socket read failed");
                            return;
                        }
                    }
                }
            };
            match self.socket.try_recv_from(&mut d.buf) {
                Ok((n, from)) => {
                    d.len = n;
                    d.from = from;
                    self.route(d);
                }
                Err(e) => {
                    self.spare = Some(d);
                    match e.kind() {
                        ErrorKind::WouldBlock => return,
                        // ICMP errors of earlier sends surface here on some systems.
                        ErrorKind::ConnectionRefused => continue,
                        _ => {
                            tracing::warn!(error = %e, "media socket read failed");
                            return;
                        }
                    }
                }
            }
        }
    }

    fn route(&mut self, d: Box<Datagram>) {
        let shard = match self.by_addr.get(&d.from) {
            Some(s) => Some(*s),
            // A new peer address starts with an ICE check naming our username fragment.
            None => match stun_ufrag(d.buf.get(..d.len).unwrap_or_default())
                .and_then(|u| self.by_ufrag.get_mut(u))
            {
                Some((shard, addrs)) => {
                    if addrs.len() < MAX_LEG_ADDRS {
                        addrs.push(d.from);
                        self.by_addr.insert(d.from, *shard);
                    }
                    Some(*shard)
                }
                None => None,
            },
        };
        let Some(inbox) = shard.and_then(|s| self.shards.get(s)) else {
            tracing::trace!(from = %d.from, "datagram for no leg");
            self.spare = Some(d);
            return;
        };
        if let Err(e) = inbox.try_send(d) {
            let d = match e {
                mpsc::error::TrySendError::Full(d) => {
                    metrics::counter!("dialbridge_webrtc_receive_dropped_total").increment(1);
                    d
                }
                mpsc::error::TrySendError::Closed(d) => d,
            };
            let _ = self.give_back.try_send(d);
        }
    }
}

//! WebRTC legs' own sockets (see `demux`): opened when a connected peer's media arrives on the
//! shared socket, read as their datagrams arrive.

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::task::Context as TaskContext;
use std::time::Instant;

use super::demux::connect_peer;
use super::shard::Shard;
use super::types::MediaId;
use super::web_leg::PeerSocket;

/// Datagrams read from one leg's socket per wake, so a flood on one leg cannot hold up the
/// others.
const READ_BATCH: usize = 64;

impl Shard {
    /// Opens the sockets the legs asked for while handling datagrams.
    pub(super) fn open_peer_sockets(&mut self) {
        while let Some((id, peer)) = self.peer_sockets_wanted.pop() {
            self.open_peer_socket(id, peer);
        }
    }

    /// Gives leg `id` a socket connected to `peer`, in place of one to an earlier address of
    /// its peer; nothing where the kernel cannot demultiplex, or it failed for this address.
    fn open_peer_socket(&mut self, id: MediaId, peer: SocketAddr) {
        let Some(bound) = self.parts.demux else {
            return;
        };
        let Some(slot) = self.legs.get_mut(&id) else {
            return;
        };
        if slot.own.as_ref().is_some_and(|o| o.peer == peer) || slot.own_refused == Some(peer) {
            return;
        }
        let opened = connect_peer(bound, peer).and_then(tokio::net::UdpSocket::from_std);
        let socket = match opened {
            Ok(socket) => socket,
            Err(e) => {
                tracing::warn!(media = %id, %peer, error = %e, "no socket of its own for a WebRTC peer: its datagrams keep coming through the reader");
                slot.own_refused = Some(peer);
                return;
            }
        };
        if slot.own.is_none() {
            self.parts
                .totals
                .peer_sockets
                .fetch_add(1, Ordering::Relaxed);
        }
        slot.own = Some(PeerSocket {
            socket,
            peer,
            waker: self.ready_web.waker(id),
        });
        tracing::debug!(media = %id, %peer, "WebRTC peer on a socket of its own");
        self.arm_web(id);
        self.count();
    }

    /// Reads the WebRTC legs whose own socket has data, and asks to hear of their next
    /// datagrams.
    pub(super) fn read_ready_web(&mut self, now: Instant) {
        let mut ready = std::mem::take(&mut self.ready_web_ids);
        ready.clear();
        // The queue keeps the emptied list: no allocation once both have grown.
        std::mem::swap(&mut *self.ready_web.ids(), &mut ready);
        let mut buf = std::mem::take(&mut self.web_buf);
        for id in &ready {
            self.read_peer_socket(now, *id, &mut buf);
            self.arm_web(*id);
        }
        self.web_buf = buf;
        self.ready_web_ids = ready;
    }

    fn read_peer_socket(&mut self, now: Instant, id: MediaId, buf: &mut [u8]) {
        for _ in 0..READ_BATCH {
            let Some(own) = self.legs.get(&id).and_then(|s| s.own.as_ref()) else {
                return;
            };
            match own.socket.try_recv_from(buf) {
                Ok((n, from)) => self.web_input(now, from, n, buf, true),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                // The ICMP error of an earlier send to a peer that is gone.
                Err(e) if e.kind() == ErrorKind::ConnectionRefused => continue,
                Err(e) => {
                    tracing::debug!(media = %id, error = %e, "peer socket read failed");
                    return;
                }
            }
        }
    }

    /// Asks the leg's socket to queue the leg when it has data (at once if it has now).
    fn arm_web(&self, id: MediaId) {
        let Some(own) = self.legs.get(&id).and_then(|s| s.own.as_ref()) else {
            return;
        };
        if own
            .socket
            .poll_recv_ready(&mut TaskContext::from_waker(&own.waker))
            .is_ready()
        {
            own.waker.wake_by_ref();
        }
    }
}

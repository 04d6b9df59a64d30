//! The phone side: one UDP socket for every call, each RTP packet sent straight back to its
//! source (batched through `recvmmsg`/`sendmmsg`), with the sequence gaps of each source counted.

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, SocketAddrV4};
use std::os::fd::AsRawFd;

use mio::net::UdpSocket;

/// Datagrams taken per `recvmmsg`.
const BATCH: usize = 64;
const MAX_DATAGRAM: usize = 1500;

/// Gaps in one stream's 16-bit RTP sequence numbers: packets never seen between those seen.
/// A packet older than the newest (reordered or duplicated) is counted apart and leaves the
/// count of gaps alone.
#[derive(Debug, Default, Clone)]
pub struct SeqGaps {
    newest: Option<u16>,
    pub gaps: u64,
    pub late: u64,
    pub packets: u64,
}

impl SeqGaps {
    pub fn push(&mut self, seq: u16) {
        self.packets += 1;
        let Some(newest) = self.newest else {
            self.newest = Some(seq);
            return;
        };
        let ahead = seq.wrapping_sub(newest);
        if ahead == 0 || ahead >= 0x8000 {
            self.late += 1;
        } else {
            self.gaps += u64::from(ahead - 1);
            self.newest = Some(seq);
        }
    }
}

/// The RTP sequence number of a datagram, when it is RTP (version 2, not RTCP).
pub fn rtp_seq(datagram: &[u8]) -> Option<u16> {
    let (first, pt) = (*datagram.first()?, *datagram.get(1)? & 0x7f);
    if datagram.len() < 12 || first >> 6 != 2 || (64..96).contains(&pt) {
        return None;
    }
    Some(u16::from_be_bytes([datagram[2], datagram[3]]))
}

pub struct Echo {
    pub socket: UdpSocket,
    bufs: Vec<[u8; MAX_DATAGRAM]>,
    /// Per source: its sequence gaps.
    pub sources: HashMap<SocketAddr, SeqGaps>,
}

impl Echo {
    pub fn bind(port: u16) -> io::Result<Echo> {
        let socket = UdpSocket::bind(SocketAddr::from(([127, 0, 0, 1], port)))?;
        // All calls' packets share this socket: room for a few hundred milliseconds of them, so
        // that a late turn of the generator is seen as lateness rather than as lost packets.
        let bytes: libc::c_int = 8 << 20;
        for option in [libc::SO_RCVBUFFORCE, libc::SO_RCVBUF] {
            // SAFETY: the option's value is a c_int of the size given.
            let set = unsafe {
                libc::setsockopt(
                    socket.as_raw_fd(),
                    libc::SOL_SOCKET,
                    option,
                    (&bytes as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            if set == 0 {
                break;
            }
        }
        Ok(Echo {
            socket,
            bufs: vec![[0; MAX_DATAGRAM]; BATCH],
            sources: HashMap::new(),
        })
    }

    pub fn port(&self) -> io::Result<u16> {
        Ok(self.socket.local_addr()?.port())
    }

    /// Echoes everything waiting on the socket.
    pub fn drain(&mut self) -> io::Result<()> {
        loop {
            let n = self.echo_batch()?;
            if n < BATCH {
                return Ok(());
            }
        }
    }

    /// One `recvmmsg` and the `sendmmsg` of what it got; returns how many datagrams came.
    fn echo_batch(&mut self) -> io::Result<usize> {
        // SAFETY: all-zero is a valid value of these plain C structs.
        let mut names: [libc::sockaddr_in; BATCH] = unsafe { std::mem::zeroed() };
        let mut iovecs: Vec<libc::iovec> = self
            .bufs
            .iter_mut()
            .map(|b| libc::iovec {
                iov_base: b.as_mut_ptr().cast(),
                iov_len: MAX_DATAGRAM,
            })
            .collect();
        // SAFETY: as above.
        let mut msgs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
        for (i, m) in msgs.iter_mut().enumerate() {
            m.msg_hdr.msg_name = (&mut names[i] as *mut libc::sockaddr_in).cast();
            m.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as u32;
            m.msg_hdr.msg_iov = &mut iovecs[i];
            m.msg_hdr.msg_iovlen = 1;
        }
        let fd = self.socket.as_raw_fd();
        // SAFETY: every header points at a live buffer and address of the stated sizes.
        let got = unsafe {
            libc::recvmmsg(
                fd,
                msgs.as_mut_ptr(),
                BATCH as u32,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if got < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock => Ok(0),
                _ => Err(e),
            };
        }
        let got = got as usize;
        for i in 0..got {
            let len = msgs[i].msg_len as usize;
            iovecs[i].iov_len = len;
            let from = SocketAddr::V4(SocketAddrV4::new(
                u32::from_be(names[i].sin_addr.s_addr).into(),
                u16::from_be(names[i].sin_port),
            ));
            if let Some(seq) = rtp_seq(&self.bufs[i][..len]) {
                self.sources.entry(from).or_default().push(seq);
            }
        }
        // The same headers send each datagram back to where it came from.
        let mut sent = 0;
        while sent < got {
            // SAFETY: as for recvmmsg; the lengths are those received.
            let n = unsafe {
                libc::sendmmsg(
                    fd,
                    msgs[sent..].as_mut_ptr(),
                    (got - sent) as u32,
                    libc::MSG_DONTWAIT,
                )
            };
            if n <= 0 {
                // A full send buffer drops the rest, as a network would.
                break;
            }
            sent += n as usize;
        }
        Ok(got)
    }

    /// Packets received and sequence gaps, summed over the sources.
    pub fn totals(&self) -> (u64, u64) {
        self.sources
            .values()
            .fold((0, 0), |(p, g), s| (p + s.packets, g + s.gaps))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gaps_of(seqs: &[u16]) -> SeqGaps {
        let mut g = SeqGaps::default();
        for &s in seqs {
            g.push(s);
        }
        g
    }

    #[test]
    fn counts_missing_packets() {
        assert_eq!(gaps_of(&[1, 2, 3, 4]).gaps, 0);
        assert_eq!(gaps_of(&[1, 2, 5, 6]).gaps, 2);
        assert_eq!(gaps_of(&[10, 12, 14]).gaps, 2);
        assert_eq!(gaps_of(&[7]).gaps, 0);
    }

    #[test]
    fn sequence_numbers_wrap() {
        assert_eq!(gaps_of(&[65534, 65535, 0, 1]).gaps, 0);
        assert_eq!(gaps_of(&[65535, 1]).gaps, 1);
    }

    #[test]
    fn late_and_duplicate_packets_are_not_gaps() {
        let g = gaps_of(&[1, 2, 4, 3, 5, 5]);
        assert_eq!((g.gaps, g.late, g.packets), (1, 2, 6));
        // A packet from far behind is late, not a jump forward of almost 65536.
        let g = gaps_of(&[1000, 1001, 10, 1002]);
        assert_eq!((g.gaps, g.late), (0, 1));
    }

    #[test]
    fn reads_the_sequence_number_of_rtp_only() {
        let mut rtp = [0u8; 12];
        rtp[0] = 0x80;
        rtp[1] = 8;
        rtp[2..4].copy_from_slice(&513u16.to_be_bytes());
        assert_eq!(rtp_seq(&rtp), Some(513));
        let mut rtcp = rtp;
        rtcp[1] = 200;
        assert_eq!(rtp_seq(&rtcp), None);
        assert_eq!(rtp_seq(&rtp[..11]), None);
        assert_eq!(rtp_seq(&[]), None);
        assert_eq!(rtp_seq(&[0x80]), None);
        let mut stun = rtp;
        stun[0] = 0;
        assert_eq!(rtp_seq(&stun), None);
    }

    #[test]
    fn echoes_to_the_source_and_counts_per_source() {
        let mut echo = Echo::bind(0).unwrap();
        let port = echo.port().unwrap();
        let phones: Vec<std::net::UdpSocket> = (0..2)
            .map(|_| std::net::UdpSocket::bind("127.0.0.1:0").unwrap())
            .collect();
        for (p, seqs) in phones.iter().zip([[1u16, 2, 3], [7, 9, 10]]) {
            for s in seqs {
                let mut rtp = [0u8; 20];
                rtp[0] = 0x80;
                rtp[1] = 8;
                rtp[2..4].copy_from_slice(&s.to_be_bytes());
                p.send_to(&rtp, ("127.0.0.1", port)).unwrap();
            }
        }
        // Blocking reads below: wait until the echo has them all.
        while echo.totals().0 < 6 {
            echo.drain().unwrap();
        }
        let mut buf = [0u8; 64];
        for (p, first) in phones.iter().zip([1u16, 7]) {
            let (n, _) = p.recv_from(&mut buf).unwrap();
            assert_eq!((n, rtp_seq(&buf[..n])), (20, Some(first)));
        }
        let gaps: Vec<u64> = phones
            .iter()
            .map(|p| echo.sources[&p.local_addr().unwrap()].gaps)
            .collect();
        assert_eq!(gaps, [0, 1]);
    }
}

//! The kernel's demultiplexing of WebRTC peers on the one media port. The socket at
//! `[media] webrtc_listen` is bound with `SO_REUSEPORT`; once a leg's peer sends media from an
//! address, the leg's shard opens a socket of its own on the same port, connected to that
//! address. Linux delivers a datagram to the connected socket of its 4-tuple before the shared
//! one, so from then on the shard reads its peers' datagrams itself: no hand-over from the
//! reader thread and one wake-up per datagram instead of two. New addresses (ICE checks) still
//! arrive on the shared socket and go through the reader. The port's group gives every datagram
//! that matches no connected socket to the shared one ([`steer_to_first`]), so a leg's socket
//! takes none of them in the moment between its bind and its connect.
//!
//! Whether the kernel does this is checked once at start on loopback ([`kernel_demuxes`]); where
//! it does not (other systems, kernels before Linux 5.4 mixed connected sockets into reuseport
//! groups), every datagram goes through the reader as before.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};

/// How long the check waits for its own loopback datagrams.
const CHECK_WAIT: Duration = Duration::from_secs(1);

/// Peers the check sends from besides the connected one.
const CHECK_OTHERS: usize = 8;

fn reusable(addr: SocketAddr) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    #[cfg(target_os = "linux")]
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    Ok(socket)
}

/// The shared media socket at `addr`, non-blocking; on Linux open to the legs' connected
/// sockets on the same port (`SO_REUSEPORT`).
pub(super) fn bind_shared(addr: SocketAddr) -> io::Result<UdpSocket> {
    if addr.port() != 0 {
        // A port in use fails here, as without SO_REUSEPORT, rather than being shared with
        // whatever holds it (a second gateway on the same address).
        drop(UdpSocket::bind(addr)?);
    }
    let socket = reusable(addr)?;
    socket.bind(&addr.into())?;
    if let Err(e) = steer_to_first(&socket) {
        // Without the steering a leg's socket, between its bind and its connect, could take
        // other peers' datagrams: no sockets of the legs' own (connect_peer fails on this one).
        tracing::debug!(error = %e, "media port not steerable: every datagram goes through the reader");
        drop(socket);
        let plain = UdpSocket::bind(addr)?;
        plain.set_nonblocking(true)?;
        return Ok(plain);
    }
    Ok(socket.into())
}

/// Makes the port's reuseport group give every datagram that is not for a connected socket to
/// its first socket, the shared one, rather than to any unconnected member by hash: a leg's
/// socket is unconnected for a moment between its bind and its connect.
#[cfg(target_os = "linux")]
fn steer_to_first(socket: &Socket) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // asm-generic/socket.h's value, which the libc crate lacks for glibc; MIPS and SPARC number
    // their socket options apart.
    let mips_or_sparc = cfg!(any(
        target_arch = "mips",
        target_arch = "mips64",
        target_arch = "mips32r6",
        target_arch = "mips64r6",
        target_arch = "sparc",
        target_arch = "sparc64"
    ));
    if mips_or_sparc {
        return Err(io::ErrorKind::Unsupported.into());
    }
    const SO_ATTACH_REUSEPORT_CBPF: libc::c_int = 51;
    // One classic BPF instruction, "return 0": the index of the group's first socket.
    let mut code = [libc::sock_filter {
        code: (libc::BPF_RET | libc::BPF_K) as u16,
        jt: 0,
        jf: 0,
        k: 0,
    }];
    let program = libc::sock_fprog {
        len: 1,
        filter: code.as_mut_ptr(),
    };
    // SAFETY: `program` and the instruction it points to outlive the call, and the kernel
    // copies the program before returning.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_ATTACH_REUSEPORT_CBPF,
            std::ptr::from_ref(&program).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
fn steer_to_first(_socket: &Socket) -> io::Result<()> {
    Err(io::ErrorKind::Unsupported.into())
}

/// A non-blocking socket on the shared socket's `local` address, connected to `peer`.
pub(super) fn connect_peer(local: SocketAddr, peer: SocketAddr) -> io::Result<UdpSocket> {
    let socket = reusable(local)?;
    socket.bind(&local.into())?;
    socket.connect(&peer.into())?;
    Ok(socket.into())
}

/// Whether this kernel hands a connected socket exactly its peer's datagrams and the shared
/// socket everyone else's, tried on loopback with the family and kind of address of `listen`.
pub(super) fn kernel_demuxes(listen: IpAddr) -> bool {
    if !cfg!(target_os = "linux") {
        return false;
    }
    match check(listen) {
        Ok(found) => found,
        Err(e) => {
            tracing::debug!(error = %e, "connected media sockets unavailable");
            false
        }
    }
}

fn check(listen: IpAddr) -> io::Result<bool> {
    let target = match listen {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    let shared = bind_shared(SocketAddr::new(listen, 0))?;
    let port = shared.local_addr()?.port();
    let to = SocketAddr::new(target, port);
    let peer = UdpSocket::bind(SocketAddr::new(target, 0))?;
    let own = connect_peer(shared.local_addr()?, peer.local_addr()?)?;
    let others = (0..CHECK_OTHERS)
        .map(|_| UdpSocket::bind(SocketAddr::new(target, 0)))
        .collect::<io::Result<Vec<_>>>()?;
    peer.send_to(b"peer", to)?;
    for other in &others {
        other.send_to(b"other", to)?;
    }
    let [at_own, at_shared] = receive_on([&own, &shared], 1 + CHECK_OTHERS)?;
    Ok(at_own == [b"peer".to_vec()]
        && at_shared.len() == CHECK_OTHERS
        && at_shared.iter().all(|d| d == b"other"))
}

/// What each of the non-blocking `sockets` receives, until `total` datagrams came or
/// [`CHECK_WAIT`] passed.
fn receive_on<const N: usize>(
    sockets: [&UdpSocket; N],
    total: usize,
) -> io::Result<[Vec<Vec<u8>>; N]> {
    let mut got: [Vec<Vec<u8>>; N] = std::array::from_fn(|_| Vec::new());
    let end = Instant::now() + CHECK_WAIT;
    let mut buf = [0u8; 8];
    while got.iter().map(Vec::len).sum::<usize>() < total && Instant::now() < end {
        let mut idle = true;
        for (socket, into) in sockets.iter().zip(got.iter_mut()) {
            match socket.recv(&mut buf) {
                Ok(n) => {
                    into.push(buf.get(..n).unwrap_or_default().to_vec());
                    idle = false;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        if idle {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    Ok(got)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    #[test]
    fn linux_hands_a_connected_socket_only_its_peers_datagrams() {
        assert!(kernel_demuxes(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        assert!(kernel_demuxes(IpAddr::V4(Ipv4Addr::UNSPECIFIED)));
    }

    #[test]
    fn a_connected_socket_shares_the_port_and_sends_from_it() {
        let shared = bind_shared(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
            .unwrap_or_else(|e| panic!("{e}"));
        let local = shared.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let peer = UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        let peer_addr = peer.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let own = connect_peer(local, peer_addr).unwrap_or_else(|e| panic!("{e}"));
        own.send(b"hello").unwrap_or_else(|e| panic!("{e}"));
        peer.set_read_timeout(Some(CHECK_WAIT))
            .unwrap_or_else(|e| panic!("{e}"));
        let mut buf = [0u8; 8];
        let (n, from) = peer.recv_from(&mut buf).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((&buf[..n], from), (&b"hello"[..], local));
    }

    /// A leg's socket between its bind and its connect is an unconnected member of the port's
    /// group; datagrams of other peers must still reach the shared socket, all of them.
    #[cfg(target_os = "linux")]
    #[test]
    fn an_unconnected_socket_joining_the_port_takes_no_datagrams() {
        let shared = bind_shared(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
            .unwrap_or_else(|e| panic!("{e}"));
        let local = shared.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let joined = reusable(local).unwrap_or_else(|e| panic!("{e}"));
        joined.bind(&local.into()).unwrap_or_else(|e| panic!("{e}"));
        let joined: UdpSocket = joined.into();
        const PEERS: usize = 32;
        for _ in 0..PEERS {
            let peer = UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
            peer.send_to(b"x", local).unwrap_or_else(|e| panic!("{e}"));
        }
        let [at_shared, at_joined] =
            receive_on([&shared, &joined], PEERS).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((at_shared.len(), at_joined.len()), (PEERS, 0));
    }

    #[test]
    fn a_port_in_use_is_refused_not_shared() {
        let first = bind_shared(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
            .unwrap_or_else(|e| panic!("{e}"));
        let taken = first.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let second = bind_shared(taken).map(|_| ()).map_err(|e| e.kind());
        assert_eq!(second, Err(io::ErrorKind::AddrInUse));
    }
}

//! The SIP driver: owns the UDP and TCP sockets of `[sip] listen` and the timers, and pumps the
//! sans-IO user agent of `dialbridge-sip` from one task.
//!
//! One task owns the `UserAgent`, so the SIP core needs no locks; socket readers hand it complete
//! messages over a channel, and it writes datagrams itself. TCP and TLS connections are kept per
//! transport and remote address and reused for requests to the same destination (RFC 3261
//! section 18.1.1).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use dialbridge_sip::dialog::Dialog;
use dialbridge_sip::endpoint::{Config as EndpointConfig, Incoming, Timers, Transmit};
use dialbridge_sip::message::{Limits, Uri};
use dialbridge_sip::transport::{Frame, StreamFramer, Transport, PONG};
use dialbridge_sip::ua::{
    CallHandle, OutgoingCall, Registration, RegistrationHandle, Reply, SessionTimerConfig,
    UaConfig, UaError, UaEvent, UserAgent,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::sip_tls::TlsClients;
use crate::config::SipListen;

/// Largest UDP datagram read; larger ones are truncated and then rejected by the parser.
const MAX_DATAGRAM: usize = 65_535;
/// Queue of outbound bytes per TCP connection.
const CONNECTION_QUEUE: usize = 256;
const TCP_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A TLS handshake (either side) that takes longer fails.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the service asks of the SIP driver.
enum Command {
    Invite {
        call: Box<OutgoingCall>,
        credentials: Option<Credentials>,
        reply: oneshot::Sender<Result<CallHandle, UaError>>,
    },
    Respond {
        call: CallHandle,
        answer: Box<Reply>,
        reply: oneshot::Sender<Result<(), UaError>>,
    },
    Hangup {
        call: CallHandle,
        reply: oneshot::Sender<Result<(), UaError>>,
    },
    Refer {
        call: CallHandle,
        to: Box<Uri>,
        reply: oneshot::Sender<Result<(), UaError>>,
    },
    Ignore {
        call: CallHandle,
        reply: oneshot::Sender<Result<(), UaError>>,
    },
    RefuseOnce {
        call: CallHandle,
        code: u16,
        reason: &'static str,
        reply: oneshot::Sender<Result<(), UaError>>,
    },
    Stats {
        reply: oneshot::Sender<SipStats>,
    },
    ManualReinvites {
        call: CallHandle,
        reply: oneshot::Sender<Result<(), UaError>>,
    },
    PerformPeerRefer {
        call: CallHandle,
        reply: oneshot::Sender<Result<(), UaError>>,
    },
    NotifyTransfer {
        call: CallHandle,
        code: u16,
        reason: String,
        reply: oneshot::Sender<Result<(), UaError>>,
    },
    Dialog {
        call: CallHandle,
        reply: oneshot::Sender<Option<Dialog>>,
    },
    ByeRestored {
        dialog: Box<Dialog>,
        reply: oneshot::Sender<Result<CallHandle, UaError>>,
    },
    Register {
        registration: Box<Registration>,
        reply: oneshot::Sender<Result<RegistrationHandle, UaError>>,
    },
    Unregister {
        registration: RegistrationHandle,
        reply: oneshot::Sender<Result<(), UaError>>,
    },
    TlsPeer {
        addr: SocketAddr,
        trunk: String,
        host: String,
        reply: oneshot::Sender<Result<(), String>>,
    },
}

pub use dialbridge_sip::auth::Credentials;

/// Counters of the SIP core, for metrics and leak checks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SipStats {
    pub calls: usize,
    pub transactions: usize,
    pub tcp_connections: usize,
}

/// Errors of the driver's command interface.
#[derive(Debug, thiserror::Error)]
pub enum SipError {
    #[error("the SIP driver has stopped")]
    Stopped,
    #[error(transparent)]
    Ua(#[from] UaError),
}

/// Handle to the running driver; cheap to clone.
#[derive(Clone)]
pub struct SipHandle {
    commands: mpsc::Sender<Command>,
    /// The addresses the listeners are bound to (with real ports when the configuration said 0).
    pub local_addrs: Arc<Vec<(Transport, SocketAddr)>>,
}

impl SipHandle {
    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, SipError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(make(reply))
            .await
            .map_err(|_| SipError::Stopped)?;
        answer.await.map_err(|_| SipError::Stopped)
    }

    /// Sends an INVITE; events for the call arrive on the driver's event channel. With
    /// credentials, the user agent answers 401/407 challenges itself (the call keeps this
    /// handle) and only a refused or unanswerable challenge surfaces as `Failed`.
    pub async fn invite(
        &self,
        call: OutgoingCall,
        credentials: Option<Credentials>,
    ) -> Result<CallHandle, SipError> {
        Ok(self
            .ask(|reply| Command::Invite {
                call: Box::new(call),
                credentials,
                reply,
            })
            .await??)
    }

    /// Answers an incoming call (provisional, 2xx with our SDP, a rejection or challenge with
    /// extra headers), or with [`Reply::to_reinvite`] the call's pending re-INVITE.
    pub async fn respond(&self, call: CallHandle, answer: Reply) -> Result<(), SipError> {
        Ok(self
            .ask(|reply| Command::Respond {
                call,
                answer: Box::new(answer),
                reply,
            })
            .await??)
    }

    /// Ends a call in whatever state it is: CANCEL, BYE, or a rejection.
    pub async fn hangup(&self, call: CallHandle) -> Result<(), SipError> {
        Ok(self.ask(|reply| Command::Hangup { call, reply }).await??)
    }

    /// Asks the peer of an established call to call `to` instead (blind transfer, REFER); the
    /// outcome arrives as [`UaEvent::Transfer`] events.
    pub async fn refer(&self, call: CallHandle, to: Uri) -> Result<(), SipError> {
        Ok(self
            .ask(|reply| Command::Refer {
                call,
                to: Box::new(to),
                reply,
            })
            .await??)
    }

    /// Refuses an incoming call with one response outside any transaction (never retransmitted).
    pub async fn refuse_once(
        &self,
        call: CallHandle,
        code: u16,
        reason: &'static str,
    ) -> Result<(), SipError> {
        Ok(self
            .ask(|reply| Command::RefuseOnce {
                call,
                code,
                reason,
                reply,
            })
            .await??)
    }

    /// Never answers an incoming call: not even 100 Trying goes out (silent rejection).
    pub async fn ignore(&self, call: CallHandle) -> Result<(), SipError> {
        Ok(self.ask(|reply| Command::Ignore { call, reply }).await??)
    }

    pub async fn stats(&self) -> Result<SipStats, SipError> {
        self.ask(|reply| Command::Stats { reply }).await
    }

    /// The call's re-INVITEs become [`UaEvent::ReInvite`] events that wait for
    /// [`SipHandle::respond`] with [`Reply::to_reinvite`] instead of being answered with our
    /// last SDP.
    pub async fn manual_reinvites(&self, call: CallHandle) -> Result<(), SipError> {
        Ok(self
            .ask(|reply| Command::ManualReinvites { call, reply })
            .await??)
    }

    /// The call's peer may transfer us (its trunk has `allow_refer`): its REFER is accepted and
    /// arrives as [`UaEvent::Referred`]; report our new call with [`SipHandle::notify_transfer`].
    pub async fn perform_peer_refer(&self, call: CallHandle) -> Result<(), SipError> {
        Ok(self
            .ask(|reply| Command::PerformPeerRefer { call, reply })
            .await??)
    }

    /// Tells the peer that transferred us how our call to its target goes (NOTIFY with this
    /// status line; a final one ends the subscription).
    pub async fn notify_transfer(
        &self,
        call: CallHandle,
        code: u16,
        reason: String,
    ) -> Result<(), SipError> {
        Ok(self
            .ask(|reply| Command::NotifyTransfer {
                call,
                code,
                reason,
                reply,
            })
            .await??)
    }

    /// The call's dialog as it stands (target refreshes included), once established.
    pub async fn dialog(&self, call: CallHandle) -> Result<Option<Dialog>, SipError> {
        self.ask(|reply| Command::Dialog { call, reply }).await
    }

    /// Starts a registration at a trunk; its states arrive as [`UaEvent::Registration`].
    pub async fn register(
        &self,
        registration: Registration,
    ) -> Result<RegistrationHandle, SipError> {
        Ok(self
            .ask(|reply| Command::Register {
                registration: Box::new(registration),
                reply,
            })
            .await??)
    }

    /// Removes a registration's binding; [`dialbridge_sip::ua::RegistrationState::Unregistered`]
    /// follows.
    pub async fn unregister(&self, registration: RegistrationHandle) -> Result<(), SipError> {
        Ok(self
            .ask(|reply| Command::Unregister {
                registration,
                reply,
            })
            .await??)
    }

    /// TLS connections to `addr` reach `trunk`: its CAs apply and the certificate must name
    /// `host`. Fails when `host` is no usable server name.
    pub async fn tls_peer(&self, addr: SocketAddr, trunk: &str, host: &str) -> Result<(), String> {
        self.ask(|reply| Command::TlsPeer {
            addr,
            trunk: trunk.to_string(),
            host: host.to_string(),
            reply,
        })
        .await
        .map_err(|e| e.to_string())?
    }

    /// Hangs up a dialog of an earlier run of the service (restored from the store): its
    /// outcome arrives as [`UaEvent::RestoredByeDone`] for the returned handle.
    pub async fn bye_restored(&self, dialog: Dialog) -> Result<CallHandle, SipError> {
        Ok(self
            .ask(|reply| Command::ByeRestored {
                dialog: Box::new(dialog),
                reply,
            })
            .await??)
    }
}

/// A message from a socket reader to the core task.
enum Input {
    Message {
        transport: Transport,
        local: SocketAddr,
        remote: SocketAddr,
        bytes: Vec<u8>,
    },
    ConnectionUp {
        transport: Transport,
        remote: SocketAddr,
        writer: mpsc::Sender<Vec<u8>>,
    },
    ConnectionDown {
        transport: Transport,
        remote: SocketAddr,
        error: Option<String>,
    },
}

/// The TLS side of the driver: what `tls:` listeners serve, and the client configurations.
pub struct SipTls {
    pub server: Option<Arc<rustls::ServerConfig>>,
    pub clients: TlsClients,
}

impl SipTls {
    /// No TLS listener; connections we open check against the system's roots.
    pub fn none() -> SipTls {
        SipTls {
            server: None,
            clients: TlsClients::default(),
        }
    }

    /// `[sip] tls_certificate`/`tls_private_key` and the `tls_ca` of each TLS trunk, read now so
    /// that a bad file stops the service at start.
    pub fn from_config(config: &crate::config::Config) -> anyhow::Result<SipTls> {
        let server = match (&config.sip.tls_certificate, &config.sip.tls_private_key) {
            (Some(certificate), Some(key)) => {
                Some(super::sip_tls::server_config(certificate, key)?)
            }
            _ => None,
        };
        let trunks = config
            .trunks
            .iter()
            .filter(|t| t.transport == Transport::Tls)
            .map(|t| (t.name.as_str(), t.tls_ca.as_deref()));
        Ok(SipTls {
            server,
            clients: TlsClients::new(trunks)?,
        })
    }
}

/// Binds every listen address and starts the driver task. Events of the user agent go to `events`.
pub async fn start(
    listen: &[SipListen],
    events: mpsc::UnboundedSender<UaEvent>,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<SipHandle> {
    start_with_timers(
        listen,
        Timers::default(),
        None,
        None,
        SipTls::none(),
        events,
        shutdown,
    )
    .await
}

/// [`start`] with other RFC 3261 timers (`[sip] t1`) and session timers (RFC 4028).
pub async fn start_with_timers(
    listen: &[SipListen],
    timers: Timers,
    user_agent: Option<String>,
    session_timer: Option<SessionTimerConfig>,
    tls: SipTls,
    events: mpsc::UnboundedSender<UaEvent>,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<SipHandle> {
    let (input_tx, input_rx) = mpsc::channel::<Input>(4096);
    let mut udp = Vec::new();
    let mut local_addrs = Vec::new();
    let mut tcp_local = None;
    let mut tls_local = None;
    for entry in listen {
        match entry.transport {
            Transport::Udp => {
                let socket = UdpSocket::bind(entry.addr)
                    .await
                    .map_err(|e| anyhow::anyhow!("cannot bind sip.listen = \"{entry}\": {e}"))?;
                let local = socket.local_addr()?;
                let socket = Arc::new(socket);
                tokio::spawn(read_udp(socket.clone(), local, input_tx.clone()));
                local_addrs.push((Transport::Udp, local));
                udp.push(socket);
            }
            Transport::Tcp => {
                let listener = TcpListener::bind(entry.addr)
                    .await
                    .map_err(|e| anyhow::anyhow!("cannot bind sip.listen = \"{entry}\": {e}"))?;
                let local = listener.local_addr()?;
                tokio::spawn(accept_tcp(listener, local, input_tx.clone()));
                local_addrs.push((Transport::Tcp, local));
                tcp_local.get_or_insert(local);
            }
            Transport::Tls => {
                let Some(server) = tls.server.clone() else {
                    anyhow::bail!(
                        "sip.listen = \"{entry}\" needs sip.tls_certificate and sip.tls_private_key"
                    )
                };
                let listener = TcpListener::bind(entry.addr)
                    .await
                    .map_err(|e| anyhow::anyhow!("cannot bind sip.listen = \"{entry}\": {e}"))?;
                let local = listener.local_addr()?;
                tokio::spawn(accept_tls(
                    listener,
                    local,
                    TlsAcceptor::from(server),
                    input_tx.clone(),
                ));
                local_addrs.push((Transport::Tls, local));
                tls_local.get_or_insert(local);
            }
        }
    }
    for (transport, addr) in &local_addrs {
        tracing::info!(%transport, %addr, "SIP listening");
    }
    let config = UaConfig {
        endpoint: EndpointConfig {
            local_addrs: local_addrs.clone(),
            seed: rand::random(),
            timers,
            ..EndpointConfig::default()
        },
        user_agent,
        cnonce_secret: rand::random(),
        session_timer,
        ..UaConfig::default()
    };
    let (command_tx, command_rx) = mpsc::channel(1024);
    let core = Core {
        ua: UserAgent::new(config),
        udp,
        tcp_local,
        tls_local,
        tls_clients: tls.clients,
        connections: HashMap::new(),
        pending: HashMap::new(),
        input_tx,
        events,
    };
    tokio::spawn(core.run(input_rx, command_rx, shutdown));
    Ok(SipHandle {
        commands: command_tx,
        local_addrs: Arc::new(local_addrs),
    })
}

async fn read_udp(socket: Arc<UdpSocket>, local: SocketAddr, to_core: mpsc::Sender<Input>) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        match socket.recv_from(&mut buf).await {
            Ok((len, remote)) => {
                let input = Input::Message {
                    transport: Transport::Udp,
                    local,
                    remote,
                    bytes: buf[..len].to_vec(),
                };
                if to_core.send(input).await.is_err() {
                    return;
                }
            }
            // ICMP port unreachable from an earlier send surfaces here on some systems.
            Err(e) => tracing::debug!(%local, error = %e, "UDP receive error"),
        }
    }
}

async fn accept_tcp(listener: TcpListener, local: SocketAddr, to_core: mpsc::Sender<Input>) {
    loop {
        match listener.accept().await {
            Ok((stream, remote)) => {
                tracing::debug!(%remote, "SIP TCP connection accepted");
                spawn_connection(stream, Transport::Tcp, local, remote, to_core.clone());
            }
            Err(e) => {
                tracing::warn!(%local, error = %e, "TCP accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn accept_tls(
    listener: TcpListener,
    local: SocketAddr,
    acceptor: TlsAcceptor,
    to_core: mpsc::Sender<Input>,
) {
    loop {
        match listener.accept().await {
            Ok((stream, remote)) => {
                let acceptor = acceptor.clone();
                let to_core = to_core.clone();
                // The handshake runs beside the accept loop, so a slow client holds up no other.
                tokio::spawn(async move {
                    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await
                    {
                        Ok(Ok(stream)) => {
                            tracing::debug!(%remote, "SIP TLS connection accepted");
                            spawn_connection(stream, Transport::Tls, local, remote, to_core);
                        }
                        Ok(Err(e)) => {
                            tracing::warn!(%remote, reason = %e, "SIP TLS handshake failed (incoming)")
                        }
                        Err(_) => {
                            tracing::warn!(%remote, reason = "timed out", "SIP TLS handshake failed (incoming)")
                        }
                    }
                });
            }
            Err(e) => {
                tracing::warn!(%local, error = %e, "TLS accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Runs one TCP or TLS connection: a reader that frames messages for the core, and a writer fed
/// by it.
fn spawn_connection<S>(
    stream: S,
    transport: Transport,
    local: SocketAddr,
    remote: SocketAddr,
    to_core: mpsc::Sender<Input>,
) where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (writer_tx, mut writer_rx) = mpsc::channel::<Vec<u8>>(CONNECTION_QUEUE);
    let (mut read_half, mut write_half) = tokio::io::split(stream);
    let pong = writer_tx.clone();
    tokio::spawn(async move {
        if to_core
            .send(Input::ConnectionUp {
                transport,
                remote,
                writer: writer_tx,
            })
            .await
            .is_err()
        {
            return;
        }
        let mut framer = StreamFramer::new(Limits::default());
        let mut buf = vec![0u8; 16 * 1024];
        let error = loop {
            match read_half.read(&mut buf).await {
                Ok(0) => break None,
                Ok(n) => {
                    framer.push(&buf[..n]);
                    let mut failed = None;
                    while let Some(frame) = framer.next_frame() {
                        match frame {
                            Ok(Frame::Message(bytes)) => {
                                let input = Input::Message {
                                    transport,
                                    local,
                                    remote,
                                    bytes,
                                };
                                if to_core.send(input).await.is_err() {
                                    return;
                                }
                            }
                            Ok(Frame::Ping) => {
                                let _ = pong.send(PONG.to_vec()).await;
                            }
                            Err(e) => failed = Some(e.to_string()),
                        }
                    }
                    if let Some(e) = failed {
                        tracing::info!(%remote, %transport, error = %e, "closing SIP connection: unframeable stream");
                        break Some(e);
                    }
                }
                Err(e) => break Some(e.to_string()),
            }
        };
        let _ = to_core
            .send(Input::ConnectionDown {
                transport,
                remote,
                error,
            })
            .await;
    });
    tokio::spawn(async move {
        while let Some(bytes) = writer_rx.recv().await {
            if let Err(e) = write_half.write_all(&bytes).await {
                tracing::info!(%remote, %transport, error = %e, "SIP write failed");
                break;
            }
        }
        let _ = write_half.shutdown().await;
    });
}

struct Core {
    ua: UserAgent,
    udp: Vec<Arc<UdpSocket>>,
    tcp_local: Option<SocketAddr>,
    tls_local: Option<SocketAddr>,
    tls_clients: TlsClients,
    /// Open TCP and TLS connections by transport and remote address.
    connections: HashMap<(Transport, SocketAddr), mpsc::Sender<Vec<u8>>>,
    /// Bytes waiting for an outbound connection being set up.
    pending: HashMap<(Transport, SocketAddr), Vec<Vec<u8>>>,
    input_tx: mpsc::Sender<Input>,
    events: mpsc::UnboundedSender<UaEvent>,
}

impl Core {
    async fn run(
        mut self,
        mut inputs: mpsc::Receiver<Input>,
        mut commands: mpsc::Receiver<Command>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        loop {
            self.flush().await;
            let deadline = self.ua.poll_timeout().map(Instant::from_std);
            let timer = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                Some(input) = inputs.recv() => self.on_input(input),
                Some(command) = commands.recv() => self.on_command(command),
                () = timer => self.ua.handle_timeout(Instant::now().into_std()),
                _ = shutdown.changed() => {
                    if *shutdown.borrow() {
                        tracing::info!("SIP driver stopping");
                        return;
                    }
                }
            }
        }
    }

    fn on_input(&mut self, input: Input) {
        let now = Instant::now().into_std();
        match input {
            Input::Message {
                transport,
                local,
                remote,
                bytes,
            } => self.ua.handle_input(
                now,
                Incoming {
                    transport,
                    local,
                    remote,
                    message: &bytes,
                },
            ),
            Input::ConnectionUp {
                transport,
                remote,
                writer,
            } => {
                for bytes in self
                    .pending
                    .remove(&(transport, remote))
                    .unwrap_or_default()
                {
                    if writer.try_send(bytes).is_err() {
                        tracing::warn!(%remote, %transport, "SIP connection queue full: message dropped");
                    }
                }
                self.connections.insert((transport, remote), writer);
            }
            Input::ConnectionDown {
                transport,
                remote,
                error,
            } => {
                self.connections.remove(&(transport, remote));
                let pending = self.pending.remove(&(transport, remote)).is_some();
                if error.is_some() || pending {
                    let error = error.as_deref().unwrap_or("connection failed");
                    self.ua
                        .handle_transport_error(now, transport, remote, error);
                }
            }
        }
    }

    fn on_command(&mut self, command: Command) {
        let now = Instant::now().into_std();
        match command {
            Command::Invite {
                call,
                credentials,
                reply,
            } => {
                let _ = reply.send(self.ua.invite_with_credentials(now, *call, credentials));
            }
            Command::Respond {
                call,
                answer,
                reply,
            } => {
                let _ = reply.send(self.ua.respond_with(now, call, *answer));
            }
            Command::Hangup { call, reply } => {
                let _ = reply.send(self.ua.hangup(now, call));
            }
            Command::Refer { call, to, reply } => {
                let _ = reply.send(self.ua.refer(now, call, &to));
            }
            Command::Ignore { call, reply } => {
                let _ = reply.send(self.ua.ignore(now, call));
            }
            Command::RefuseOnce {
                call,
                code,
                reason,
                reply,
            } => {
                let _ = reply.send(self.ua.refuse_once(call, code, reason));
            }
            Command::ManualReinvites { call, reply } => {
                let _ = reply.send(self.ua.answer_reinvites_manually(call));
            }
            Command::PerformPeerRefer { call, reply } => {
                let _ = reply.send(self.ua.perform_peer_refer(call));
            }
            Command::NotifyTransfer {
                call,
                code,
                reason,
                reply,
            } => {
                let _ = reply.send(self.ua.notify_transfer(now, call, code, &reason));
            }
            Command::Dialog { call, reply } => {
                let _ = reply.send(self.ua.dialog(call).cloned());
            }
            Command::ByeRestored { dialog, reply } => {
                let _ = reply.send(self.ua.bye_restored(now, *dialog));
            }
            Command::Register {
                registration,
                reply,
            } => {
                let _ = reply.send(self.ua.register(now, *registration));
            }
            Command::Unregister {
                registration,
                reply,
            } => {
                let _ = reply.send(self.ua.unregister(now, registration));
            }
            Command::TlsPeer {
                addr,
                trunk,
                host,
                reply,
            } => {
                let _ = reply.send(self.tls_clients.name_peer(addr, &trunk, &host));
            }
            Command::Stats { reply } => {
                let _ = reply.send(SipStats {
                    calls: self.ua.call_count(),
                    transactions: self.ua.endpoint().transaction_count(),
                    tcp_connections: self.connections.len(),
                });
            }
        }
    }

    /// Sends what the core wants sent and hands its events on.
    async fn flush(&mut self) {
        while let Some(transmit) = self.ua.poll_transmit() {
            self.send(transmit).await;
        }
        while let Some(event) = self.ua.poll_event() {
            if let UaEvent::Discarded { remote, reason } = &event {
                tracing::info!(%remote, %reason, "SIP message discarded");
            }
            if self.events.send(event).is_err() {
                tracing::warn!("SIP events have no consumer");
            }
        }
    }

    async fn send(&mut self, transmit: Transmit) {
        let Transmit {
            transport,
            destination,
            bytes,
        } = transmit;
        if !dialbridge_sip::transport::is_unicast(destination.ip()) {
            tracing::warn!(%destination, "refusing to send SIP to a non-unicast address");
            return;
        }
        match transport {
            Transport::Udp => {
                let Some(socket) = self.udp.iter().find(|s| {
                    s.local_addr()
                        .is_ok_and(|a| a.is_ipv4() == destination.is_ipv4())
                }) else {
                    self.ua.handle_transport_error(
                        Instant::now().into_std(),
                        transport,
                        destination,
                        "no UDP socket for this address family",
                    );
                    return;
                };
                if let Err(e) = socket.send_to(&bytes, destination).await {
                    tracing::info!(%destination, error = %e, "SIP UDP send failed");
                    self.ua.handle_transport_error(
                        Instant::now().into_std(),
                        transport,
                        destination,
                        &e.to_string(),
                    );
                }
            }
            Transport::Tcp | Transport::Tls => self.send_stream(transport, destination, bytes),
        }
    }

    /// Sends on the open connection to `destination`, or opens one (with its TLS handshake) and
    /// sends once it is up.
    fn send_stream(&mut self, transport: Transport, destination: SocketAddr, bytes: Vec<u8>) {
        let key = (transport, destination);
        if let Some(writer) = self.connections.get(&key) {
            if writer.try_send(bytes).is_err() {
                tracing::warn!(%destination, %transport, "SIP connection congested or closed: message dropped");
            }
            return;
        }
        if let Some(queue) = self.pending.get_mut(&key) {
            queue.push(bytes);
            return;
        }
        let tls = if transport == Transport::Tls {
            match self.tls_clients.peer(destination) {
                Ok(peer) => Some(peer),
                Err(reason) => {
                    tracing::warn!(%destination, %reason, "SIP TLS connection not opened");
                    self.ua.handle_transport_error(
                        Instant::now().into_std(),
                        transport,
                        destination,
                        &reason,
                    );
                    return;
                }
            }
        } else {
            None
        };
        self.pending.insert(key, vec![bytes]);
        let local = match transport {
            Transport::Tls => self.tls_local,
            _ => self.tcp_local,
        };
        let to_core = self.input_tx.clone();
        tokio::spawn(async move {
            let failed = |to_core: mpsc::Sender<Input>, error: String| async move {
                let _ = to_core
                    .send(Input::ConnectionDown {
                        transport,
                        remote: destination,
                        error: Some(error),
                    })
                    .await;
            };
            let stream =
                match tokio::time::timeout(TCP_CONNECT_TIMEOUT, TcpStream::connect(destination))
                    .await
                {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(e)) => {
                        tracing::info!(%destination, %transport, error = %e, "SIP connect failed");
                        return failed(to_core, e.to_string()).await;
                    }
                    Err(_) => {
                        tracing::info!(%destination, %transport, "SIP connect timed out");
                        return failed(to_core, "connect timed out".into()).await;
                    }
                };
            let local = local
                .or_else(|| stream.local_addr().ok())
                .unwrap_or(destination);
            let Some(peer) = tls else {
                tracing::debug!(%destination, "SIP TCP connection opened");
                return spawn_connection(stream, transport, local, destination, to_core);
            };
            let server_name = peer.server_name.clone();
            let handshake = TlsConnector::from(peer.config).connect(peer.server_name, stream);
            match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, handshake).await {
                Ok(Ok(stream)) => {
                    tracing::debug!(%destination, "SIP TLS connection opened");
                    spawn_connection(stream, transport, local, destination, to_core);
                }
                Ok(Err(e)) => {
                    tracing::warn!(%destination, server_name = %server_name.to_str(), reason = %e, "SIP TLS handshake failed");
                    failed(to_core, format!("TLS handshake failed: {e}")).await;
                }
                Err(_) => {
                    tracing::warn!(%destination, server_name = %server_name.to_str(), reason = "timed out", "SIP TLS handshake failed");
                    failed(to_core, "TLS handshake timed out".into()).await;
                }
            }
        });
    }
}

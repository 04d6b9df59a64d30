//! The sans-IO transaction layer (RFC 3261 section 17, RFC 6026).
//!
//! A driver feeds received bytes with [`Endpoint::handle_input`] and expired timers with
//! [`Endpoint::handle_timeout`], sends what [`Endpoint::poll_transmit`] yields, sleeps until
//! [`Endpoint::poll_timeout`], and hands [`Endpoint::poll_event`] to the transaction user.
//!
//! One deliberate extension of RFC 6026: in the INVITE server "Accepted" state the endpoint itself
//! retransmits the 2xx (T1 doubling up to T2, the UAS core duty of RFC 3261 section 13.3.1.4) until
//! an ACK for it arrives, so the dialog layer only answers once.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::message::{Headers, Limits, Message, Method, ParseError, Request, Response, Via};
use crate::transport::{response_target, stamp_received, stamp_via, ResponseTarget, Transport};
use crate::validate::{check_datagram, Policy, Verdict};

/// RFC 3261 timer base values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timers {
    /// RTT estimate (default 500 ms).
    pub t1: Duration,
    /// Maximum retransmit interval for non-INVITE requests and INVITE responses (default 4 s).
    pub t2: Duration,
    /// Maximum time a message stays in the network (default 5 s).
    pub t4: Duration,
    /// Timer D: wait for response retransmissions over unreliable transports (at least 32 s).
    pub d: Duration,
    /// How long an INVITE server transaction waits for the TU before sending 100 Trying.
    pub trying: Duration,
}

impl Default for Timers {
    fn default() -> Self {
        Timers {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
            d: Duration::from_secs(32),
            trying: Duration::from_millis(200),
        }
    }
}

impl Timers {
    /// 64*T1: Timers B, F, H, J, L and M.
    pub fn timeout(&self) -> Duration {
        self.t1 * 64
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub timers: Timers,
    pub limits: Limits,
    pub policy: Policy,
    /// Advertised address per transport, used as Via sent-by.
    pub local_addrs: Vec<(Transport, SocketAddr)>,
    /// Seeds branch and tag generation; the driver passes a random value.
    pub seed: u64,
    /// Send UDP responses to the packet's source, as if every request carried `rport` (RFC 3581).
    /// Reaches clients behind NAT, and never reflects a response to an address the sender merely
    /// wrote into its Via.
    pub symmetric_responses: bool,
    /// Live transactions at most; beyond it new requests get 503 and sends fail.
    pub max_transactions: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            timers: Timers::default(),
            limits: Limits::default(),
            policy: Policy::default(),
            local_addrs: Vec::new(),
            seed: 0x5eed,
            symmetric_responses: true,
            max_transactions: 100_000,
        }
    }
}

/// Identifies a transaction in events and commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TransactionId(u64);

/// Where a request goes: transport and resolved address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Target {
    pub transport: Transport,
    pub addr: SocketAddr,
}

/// Bytes received from the network: one datagram, or one message framed from a stream.
#[derive(Debug, Clone, Copy)]
pub struct Incoming<'a> {
    pub transport: Transport,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub message: &'a [u8],
}

/// Bytes to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub transport: Transport,
    pub destination: SocketAddr,
    pub bytes: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A new request created a server transaction; answer it with [`Endpoint::send_response`].
    /// For a CANCEL, `cancels` is the INVITE server transaction it matches, if any.
    Request {
        id: TransactionId,
        request: Request,
        transport: Transport,
        remote: SocketAddr,
        cancels: Option<TransactionId>,
    },
    /// An ACK that is not part of a transaction (the ACK for a 2xx). `acked` is the INVITE
    /// server transaction whose 2xx it acknowledges, if any.
    Ack {
        request: Request,
        transport: Transport,
        remote: SocketAddr,
        acked: Option<TransactionId>,
    },
    /// A response for a client transaction (every 2xx, including retransmissions, is passed up).
    Response {
        id: TransactionId,
        response: Response,
    },
    /// Timer B, F, H or L expired (for L: the 2xx was never acknowledged).
    Timeout { id: TransactionId },
    /// The driver reported that sending failed.
    TransportError { id: TransactionId, error: String },
    /// A message was discarded; the text says why (for a log line).
    Discarded { remote: SocketAddr, reason: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendError {
    UnknownTransaction,
    /// The transaction is not in a state that allows this (e.g. a second final response).
    InvalidState(&'static str),
    /// The message lacks something needed to send it.
    BadMessage(String),
    /// No local address configured for the transport.
    NoLocalAddress(Transport),
    /// [`Config::max_transactions`] reached.
    TooManyTransactions,
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::UnknownTransaction => f.write_str("unknown transaction"),
            SendError::InvalidState(s) => write!(f, "invalid transaction state: {s}"),
            SendError::BadMessage(s) => write!(f, "bad message: {s}"),
            SendError::NoLocalAddress(t) => write!(f, "no local address for {t}"),
            SendError::TooManyTransactions => f.write_str("transaction limit reached"),
        }
    }
}

impl std::error::Error for SendError {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    InviteClient,
    NonInviteClient,
    InviteServer,
    NonInviteServer,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Calling,
    Trying,
    Proceeding,
    Accepted,
    Completed,
    Confirmed,
}

/// Server transaction matching key (RFC 3261 section 17.2.3); ACK maps to INVITE.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum ServerKey {
    Branch {
        branch: String,
        sent_by: String,
        method: Method,
    },
    /// RFC 2543 fallback for requests without a magic-cookie branch.
    Legacy {
        uri: String,
        from_tag: String,
        call_id: String,
        cseq: u32,
        via: String,
        method: Method,
    },
}

#[derive(Debug)]
struct Transaction {
    kind: Kind,
    state: State,
    transport: Transport,
    /// Client: where the request goes. Server: where responses go.
    remote: SocketAddr,
    request: Request,
    /// Client: the request as sent. Server: the last response sent.
    bytes: Vec<u8>,
    /// INVITE client: the ACK for a non-2xx final response.
    ack: Option<Vec<u8>>,
    retransmit_at: Option<Instant>,
    interval: Duration,
    timeout_at: Option<Instant>,
    trying_at: Option<Instant>,
    /// The key in the scheduler, to remove it when deadlines change.
    scheduled: Option<Instant>,
    client_key: Option<(String, Method)>,
    server_key: Option<ServerKey>,
    /// INVITE server in Accepted: (Call-ID, CSeq, From tag) to match the ACK for the 2xx.
    ack_key: Option<(String, u32, String)>,
    acked: bool,
}

impl Transaction {
    fn next_deadline(&self) -> Option<Instant> {
        [self.retransmit_at, self.timeout_at, self.trying_at]
            .into_iter()
            .flatten()
            .min()
    }
}

/// The transaction layer. See the module documentation.
#[derive(Debug)]
pub struct Endpoint {
    config: Config,
    txs: HashMap<TransactionId, Transaction>,
    client_index: HashMap<(String, Method), TransactionId>,
    server_index: HashMap<ServerKey, TransactionId>,
    ack_index: HashMap<(String, u32, String), TransactionId>,
    schedule: BTreeSet<(Instant, TransactionId)>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    next_id: u64,
    rng: u64,
}

impl Endpoint {
    pub fn new(config: Config) -> Self {
        Endpoint {
            rng: config.seed,
            config,
            txs: HashMap::new(),
            client_index: HashMap::new(),
            server_index: HashMap::new(),
            ack_index: HashMap::new(),
            schedule: BTreeSet::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            next_id: 1,
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Random hex for branches and tags (splitmix64; uniqueness, not secrecy, is what matters).
    pub fn random_token(&mut self) -> String {
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        format!("{:016x}", z ^ (z >> 31))
    }

    pub fn new_branch(&mut self) -> String {
        format!("{}{}", crate::message::MAGIC_COOKIE, self.random_token())
    }

    /// The advertised address for a transport.
    pub fn local_addr(&self, transport: Transport) -> Option<SocketAddr> {
        self.config
            .local_addrs
            .iter()
            .find(|(t, _)| *t == transport)
            .map(|(_, a)| *a)
    }

    /// Number of live transactions.
    pub fn transaction_count(&self) -> usize {
        self.txs.len()
    }

    /// The state of a transaction, if it still exists.
    pub fn state(&self, id: TransactionId) -> Option<State> {
        self.txs.get(&id).map(|t| t.state)
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.schedule.first().map(|(t, _)| *t)
    }

    /// Processes one received message.
    pub fn handle_input(&mut self, now: Instant, input: Incoming<'_>) {
        match check_datagram(input.message, &self.config.limits, &self.config.policy) {
            Verdict::KeepAlive => {}
            Verdict::Drop { error } => self.discard(input.remote, error.to_string()),
            Verdict::Reject {
                mut response,
                error,
            } => {
                self.discard(input.remote, format!("answered {}: {error}", response.code));
                let tag = self.random_token();
                // The To header may be the broken part: then the response goes without a tag.
                let _ = response.set_to_tag(&tag[..8]);
                let Ok(mut via) = response.headers.top_via_lenient() else {
                    return;
                };
                stamp_via(&mut via, input.remote);
                match self.response_addr(&via, input.transport, input.remote) {
                    Ok(dest) => self.transmits.push_back(Transmit {
                        transport: input.transport,
                        destination: dest,
                        bytes: response.to_bytes(),
                    }),
                    Err(e) => self.discard(input.remote, e.to_string()),
                }
            }
            Verdict::Accept(Message::Request(req)) => self.on_request(now, input, req),
            Verdict::Accept(Message::Response(resp)) => self.on_response(now, input, resp),
        }
    }

    fn discard(&mut self, remote: SocketAddr, reason: String) {
        self.events.push_back(Event::Discarded { remote, reason });
    }

    fn response_addr(
        &self,
        via: &Via,
        transport: Transport,
        source: SocketAddr,
    ) -> Result<SocketAddr, ParseError> {
        if self.config.symmetric_responses {
            return Ok(source);
        }
        Ok(match response_target(via, transport, source)? {
            ResponseTarget::Connection(a) | ResponseTarget::Addr(a) => a,
            // Name resolution belongs to the driver; the source address reaches the client through NAT.
            ResponseTarget::Resolve { .. } => source,
        })
    }

    fn server_key(req: &Request) -> Result<ServerKey, ParseError> {
        let via = req.headers.top_via()?;
        let method = match req.method {
            Method::Ack => Method::Invite,
            ref m => m.clone(),
        };
        if via.has_rfc3261_branch() {
            return Ok(ServerKey::Branch {
                branch: via.branch().unwrap_or_default().to_string(),
                sent_by: via.sent_by().to_ascii_lowercase(),
                method,
            });
        }
        Ok(ServerKey::Legacy {
            uri: req.uri.to_string(),
            from_tag: req.headers.from()?.tag().unwrap_or_default().to_string(),
            call_id: req.headers.call_id()?.to_string(),
            cseq: req.headers.cseq()?.seq,
            via: via.sent_by().to_ascii_lowercase(),
            method,
        })
    }

    fn ack_key(headers: &Headers) -> Option<(String, u32, String)> {
        Some((
            headers.call_id().ok()?.to_string(),
            headers.cseq().ok()?.seq,
            headers.from().ok()?.tag().unwrap_or_default().to_string(),
        ))
    }

    fn on_request(&mut self, now: Instant, input: Incoming<'_>, mut req: Request) {
        if let Err(e) = stamp_received(&mut req, input.remote) {
            return self.discard(input.remote, e.to_string());
        }
        let key = match Self::server_key(&req) {
            Ok(k) => k,
            Err(e) => return self.discard(input.remote, e.to_string()),
        };
        if let Some(&id) = self.server_index.get(&key) {
            return self.on_retransmitted_request(now, id, input, req);
        }
        if req.method == Method::Ack {
            let acked = Self::ack_key(&req.headers)
                .and_then(|k| self.ack_index.get(&k).copied())
                .filter(|id| self.txs.get(id).is_some_and(|t| t.state == State::Accepted));
            if let Some(id) = acked {
                self.mark_acked(id);
            }
            self.events.push_back(Event::Ack {
                request: req,
                transport: input.transport,
                remote: input.remote,
                acked,
            });
            return;
        }
        let via = match req.headers.top_via() {
            Ok(v) => v,
            Err(e) => return self.discard(input.remote, e.to_string()),
        };
        let remote = match self.response_addr(&via, input.transport, input.remote) {
            Ok(a) => a,
            Err(e) => return self.discard(input.remote, e.to_string()),
        };
        let cancels = if req.method == Method::Cancel {
            let mut invite_key = key.clone();
            match &mut invite_key {
                ServerKey::Branch { method, .. } | ServerKey::Legacy { method, .. } => {
                    *method = Method::Invite
                }
            }
            self.server_index.get(&invite_key).copied()
        } else {
            None
        };
        if self.txs.len() >= self.config.max_transactions {
            let mut busy = Response::for_request(&req, 503, "Service Unavailable");
            busy.headers.push("Retry-After", "5");
            let tag = self.random_token();
            let _ = busy.set_to_tag(&tag[..8]);
            self.transmits.push_back(Transmit {
                transport: input.transport,
                destination: remote,
                bytes: busy.to_bytes(),
            });
            return self.discard(
                input.remote,
                "transaction limit reached: answered 503".into(),
            );
        }
        let id = self.alloc_id();
        let invite = req.method == Method::Invite;
        let tx = Transaction {
            kind: if invite {
                Kind::InviteServer
            } else {
                Kind::NonInviteServer
            },
            state: if invite {
                State::Proceeding
            } else {
                State::Trying
            },
            transport: input.transport,
            remote,
            request: req.clone(),
            bytes: Vec::new(),
            ack: None,
            retransmit_at: None,
            interval: self.config.timers.t1,
            timeout_at: None,
            trying_at: invite.then(|| now + self.config.timers.trying),
            scheduled: None,
            client_key: None,
            server_key: Some(key.clone()),
            ack_key: None,
            acked: false,
        };
        self.txs.insert(id, tx);
        self.server_index.insert(key, id);
        self.reschedule(id);
        self.events.push_back(Event::Request {
            id,
            request: req,
            transport: input.transport,
            remote: input.remote,
            cancels,
        });
    }

    fn on_retransmitted_request(
        &mut self,
        now: Instant,
        id: TransactionId,
        input: Incoming<'_>,
        req: Request,
    ) {
        let t4 = self.config.timers.t4;
        let symmetric = self.config.symmetric_responses;
        let Some(tx) = self.txs.get_mut(&id) else {
            return;
        };
        // The client may have moved (a NAT rebinding, a new socket): answer where it sends from.
        if symmetric && !tx.transport.is_reliable() && req.method != Method::Ack {
            tx.remote = input.remote;
        }
        match (tx.kind, tx.state, req.method == Method::Ack) {
            // ACK for a non-2xx final response: stop retransmitting, absorb ACK retransmissions (Timer I).
            (Kind::InviteServer, State::Completed, true) => {
                tx.state = State::Confirmed;
                tx.retransmit_at = None;
                if tx.transport.is_reliable() {
                    self.terminate(id);
                    return;
                }
                tx.timeout_at = Some(now + t4);
                self.reschedule(id);
            }
            (Kind::InviteServer, State::Confirmed, true) => {}
            // An ACK for the 2xx that reused the INVITE's branch.
            (Kind::InviteServer, State::Accepted, true) => {
                self.mark_acked(id);
                self.events.push_back(Event::Ack {
                    request: req,
                    transport: input.transport,
                    remote: input.remote,
                    acked: Some(id),
                });
            }
            (_, _, true) => self.discard(input.remote, "ACK matches no INVITE".into()),
            // Retransmitted request: resend the last response, if any (RFC 3261 17.2.1, 17.2.2).
            (_, State::Proceeding | State::Completed, false) if !tx.bytes.is_empty() => {
                self.transmits.push_back(Transmit {
                    transport: tx.transport,
                    destination: tx.remote,
                    bytes: tx.bytes.clone(),
                });
            }
            // Trying, Accepted, Confirmed, or nothing sent yet: absorbed.
            _ => {}
        }
    }

    fn mark_acked(&mut self, id: TransactionId) {
        if let Some(tx) = self.txs.get_mut(&id) {
            tx.acked = true;
            tx.retransmit_at = None;
            self.reschedule(id);
        }
    }

    fn on_response(&mut self, now: Instant, input: Incoming<'_>, resp: Response) {
        let (Ok(via), Ok(cseq)) = (resp.headers.top_via(), resp.headers.cseq()) else {
            return self.discard(input.remote, "response without usable Via or CSeq".into());
        };
        let key = (via.branch().unwrap_or_default().to_string(), cseq.method);
        let Some(&id) = self.client_index.get(&key) else {
            return self.discard(
                input.remote,
                format!("stray {} response matches no client transaction", resp.code),
            );
        };
        let timers = self.config.timers;
        let Some(tx) = self.txs.get_mut(&id) else {
            return;
        };
        let reliable = tx.transport.is_reliable();
        let code = resp.code;
        match (tx.kind, tx.state) {
            (Kind::InviteClient, State::Calling | State::Proceeding) => {
                if code < 200 {
                    tx.state = State::Proceeding;
                    tx.retransmit_at = None;
                    tx.timeout_at = None;
                } else if code < 300 {
                    tx.state = State::Accepted;
                    tx.retransmit_at = None;
                    tx.timeout_at = Some(now + timers.timeout());
                } else {
                    let ack = build_ack(&tx.request, &resp);
                    self.transmits.push_back(Transmit {
                        transport: tx.transport,
                        destination: tx.remote,
                        bytes: ack.clone(),
                    });
                    tx.ack = Some(ack);
                    tx.state = State::Completed;
                    tx.retransmit_at = None;
                    if reliable {
                        self.events
                            .push_back(Event::Response { id, response: resp });
                        self.terminate(id);
                        return;
                    }
                    tx.timeout_at = Some(now + timers.d);
                }
                self.reschedule(id);
                self.events
                    .push_back(Event::Response { id, response: resp });
            }
            (Kind::InviteClient, State::Accepted) if (200..300).contains(&code) => {
                self.events
                    .push_back(Event::Response { id, response: resp });
            }
            (Kind::InviteClient, State::Completed) if code >= 300 => {
                if let Some(ack) = tx.ack.clone() {
                    self.transmits.push_back(Transmit {
                        transport: tx.transport,
                        destination: tx.remote,
                        bytes: ack,
                    });
                }
            }
            (Kind::NonInviteClient, State::Trying | State::Proceeding) => {
                if code < 200 {
                    tx.state = State::Proceeding;
                } else {
                    tx.state = State::Completed;
                    tx.retransmit_at = None;
                    if reliable {
                        self.events
                            .push_back(Event::Response { id, response: resp });
                        self.terminate(id);
                        return;
                    }
                    tx.timeout_at = Some(now + timers.t4);
                }
                self.reschedule(id);
                self.events
                    .push_back(Event::Response { id, response: resp });
            }
            // Completed non-INVITE: retransmitted finals are absorbed.
            _ => {}
        }
    }

    fn alloc_id(&mut self) -> TransactionId {
        let id = TransactionId(self.next_id);
        self.next_id += 1;
        id
    }

    /// Sends a request in a new client transaction. A Via with a fresh branch is added unless the
    /// request already has one (a CANCEL carries its INVITE's branch).
    pub fn send_request(
        &mut self,
        now: Instant,
        mut request: Request,
        target: Target,
    ) -> Result<TransactionId, SendError> {
        if request.method == Method::Ack {
            return Err(SendError::BadMessage(
                "ACK is not sent in a transaction; use send_stateless".into(),
            ));
        }
        self.prepare_request(&mut request, target)?;
        let branch = request
            .headers
            .top_via()
            .ok()
            .and_then(|v| v.branch().map(str::to_string))
            .ok_or_else(|| SendError::BadMessage("top Via has no branch".into()))?;
        let key = (branch, request.method.clone());
        if self.txs.len() >= self.config.max_transactions {
            return Err(SendError::TooManyTransactions);
        }
        if self.client_index.contains_key(&key) {
            return Err(SendError::BadMessage(format!(
                "a {} transaction with branch {} exists",
                key.1, key.0
            )));
        }
        let bytes = request.to_bytes();
        self.transmits.push_back(Transmit {
            transport: target.transport,
            destination: target.addr,
            bytes: bytes.clone(),
        });
        let t = self.config.timers;
        let invite = request.method == Method::Invite;
        let reliable = target.transport.is_reliable();
        let id = self.alloc_id();
        self.txs.insert(
            id,
            Transaction {
                kind: if invite {
                    Kind::InviteClient
                } else {
                    Kind::NonInviteClient
                },
                state: if invite {
                    State::Calling
                } else {
                    State::Trying
                },
                transport: target.transport,
                remote: target.addr,
                request,
                bytes,
                ack: None,
                retransmit_at: (!reliable).then(|| now + t.t1),
                interval: t.t1,
                timeout_at: Some(now + t.timeout()),
                trying_at: None,
                scheduled: None,
                client_key: Some(key.clone()),
                server_key: None,
                ack_key: None,
                acked: false,
            },
        );
        self.client_index.insert(key, id);
        self.reschedule(id);
        Ok(id)
    }

    /// Sends a request outside any transaction (the ACK for a 2xx). Adds a Via if missing.
    pub fn send_stateless(
        &mut self,
        mut request: Request,
        target: Target,
    ) -> Result<(), SendError> {
        self.prepare_request(&mut request, target)?;
        self.transmits.push_back(Transmit {
            transport: target.transport,
            destination: target.addr,
            bytes: request.to_bytes(),
        });
        Ok(())
    }

    fn prepare_request(&mut self, request: &mut Request, target: Target) -> Result<(), SendError> {
        if request.headers.get("Via").is_none() {
            let local = self
                .local_addr(target.transport)
                .ok_or(SendError::NoLocalAddress(target.transport))?;
            let mut via = Via::new(
                target.transport.as_str(),
                local.ip().into(),
                Some(local.port()),
                &self.new_branch(),
            );
            via.set_param("rport", None);
            request.headers.push_front("Via", via.to_string());
        }
        if request.headers.get("Max-Forwards").is_none() {
            request.headers.push("Max-Forwards", "70");
        }
        Ok(())
    }

    /// Sends a response in a server transaction.
    pub fn send_response(
        &mut self,
        now: Instant,
        id: TransactionId,
        response: Response,
    ) -> Result<(), SendError> {
        let t = self.config.timers;
        let tx = self.txs.get_mut(&id).ok_or(SendError::UnknownTransaction)?;
        let code = response.code;
        let reliable = tx.transport.is_reliable();
        match (tx.kind, tx.state) {
            (Kind::InviteServer, State::Proceeding)
            | (Kind::NonInviteServer, State::Trying | State::Proceeding) => {}
            (Kind::InviteServer, State::Accepted) if (200..300).contains(&code) => {}
            (Kind::InviteClient | Kind::NonInviteClient, _) => {
                return Err(SendError::InvalidState("not a server transaction"))
            }
            _ => return Err(SendError::InvalidState("final response already sent")),
        }
        let bytes = response.to_bytes();
        self.transmits.push_back(Transmit {
            transport: tx.transport,
            destination: tx.remote,
            bytes: bytes.clone(),
        });
        tx.bytes = bytes;
        tx.trying_at = None;
        match tx.kind {
            Kind::InviteServer if code < 200 => {}
            Kind::InviteServer if code < 300 => {
                if tx.state != State::Accepted {
                    tx.state = State::Accepted;
                    tx.timeout_at = Some(now + t.timeout());
                    if !reliable {
                        tx.interval = t.t1;
                        tx.retransmit_at = Some(now + t.t1);
                    }
                    if let Some(k) = Self::ack_key(&tx.request.headers) {
                        tx.ack_key = Some(k.clone());
                        self.ack_index.insert(k, id);
                    }
                }
            }
            Kind::InviteServer => {
                tx.state = State::Completed;
                tx.timeout_at = Some(now + t.timeout());
                if !reliable {
                    tx.interval = t.t1;
                    tx.retransmit_at = Some(now + t.t1);
                }
            }
            _ if code < 200 => tx.state = State::Proceeding,
            _ => {
                tx.state = State::Completed;
                if reliable {
                    self.terminate(id);
                    return Ok(());
                }
                tx.timeout_at = Some(now + t.timeout());
            }
        }
        self.reschedule(id);
        Ok(())
    }

    /// Answers a server transaction that has no final response yet with `response`, sent once,
    /// and forgets the transaction (a stateless answer, RFC 3261 section 8.2.7): nothing is
    /// retransmitted or kept, so a refused source cannot use us as an amplifier. A retransmitted
    /// request is a new request and gets its own single answer.
    pub fn respond_once(&mut self, id: TransactionId, response: Response) -> Result<(), SendError> {
        let tx = self.txs.get(&id).ok_or(SendError::UnknownTransaction)?;
        let unanswered = match tx.kind {
            Kind::InviteServer => tx.state == State::Proceeding,
            Kind::NonInviteServer => matches!(tx.state, State::Trying | State::Proceeding),
            Kind::InviteClient | Kind::NonInviteClient => false,
        };
        if !unanswered || response.code < 200 {
            return Err(SendError::InvalidState(
                "only an unanswered server transaction can be answered once with a final response",
            ));
        }
        self.transmits.push_back(Transmit {
            transport: tx.transport,
            destination: tx.remote,
            bytes: response.to_bytes(),
        });
        self.terminate(id);
        Ok(())
    }

    /// After a CANCEL, gives the INVITE client transaction 64*T1 to reach a final response before
    /// it times out (RFC 3261 section 9.1), even in Proceeding where Timer B no longer runs.
    pub fn arm_cancel_timeout(&mut self, now: Instant, invite: TransactionId) {
        let timeout = self.config.timers.timeout();
        if let Some(tx) = self.txs.get_mut(&invite) {
            if tx.kind == Kind::InviteClient && tx.state == State::Proceeding {
                tx.timeout_at = Some(now + timeout);
                self.reschedule(invite);
            }
        }
    }

    /// The driver could not send to `destination`: every transaction using it fails.
    pub fn handle_transport_error(
        &mut self,
        _now: Instant,
        transport: Transport,
        destination: SocketAddr,
        error: &str,
    ) {
        let mut failed: Vec<TransactionId> = self
            .txs
            .iter()
            .filter(|(_, t)| t.transport == transport && t.remote == destination)
            .map(|(id, _)| *id)
            .collect();
        failed.sort();
        for id in failed {
            self.events.push_back(Event::TransportError {
                id,
                error: error.to_string(),
            });
            self.terminate(id);
        }
    }

    /// Fires every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(&(at, id)) = self.schedule.first() {
            if at > now {
                break;
            }
            self.schedule.remove(&(at, id));
            if let Some(tx) = self.txs.get_mut(&id) {
                tx.scheduled = None;
            }
            self.fire(id, at);
            self.reschedule(id);
        }
    }

    /// Fires the earliest timer of a transaction, due at `at`.
    fn fire(&mut self, id: TransactionId, at: Instant) {
        let t = self.config.timers;
        let Some(tx) = self.txs.get_mut(&id) else {
            return;
        };
        if tx.trying_at == Some(at) {
            tx.trying_at = None;
            if tx.bytes.is_empty() {
                let trying = Response::for_request(&tx.request, 100, "Trying");
                tx.bytes = trying.to_bytes();
                self.transmits.push_back(Transmit {
                    transport: tx.transport,
                    destination: tx.remote,
                    bytes: tx.bytes.clone(),
                });
            }
            return;
        }
        if tx.timeout_at == Some(at) {
            tx.timeout_at = None;
            let report = match (tx.kind, tx.state) {
                (Kind::InviteClient, State::Calling | State::Proceeding) => true,
                (Kind::NonInviteClient, State::Trying | State::Proceeding) => true,
                (Kind::InviteServer, State::Completed) => true,
                (Kind::InviteServer, State::Accepted) => !tx.acked,
                _ => false,
            };
            if report {
                self.events.push_back(Event::Timeout { id });
            }
            self.terminate(id);
            return;
        }
        if tx.retransmit_at == Some(at) {
            let next = match (tx.kind, tx.state) {
                (Kind::InviteClient, State::Calling) => tx.interval * 2,
                (Kind::NonInviteClient, State::Trying) => (tx.interval * 2).min(t.t2),
                (Kind::NonInviteClient, State::Proceeding) => t.t2,
                (Kind::InviteServer, State::Completed | State::Accepted) => {
                    (tx.interval * 2).min(t.t2)
                }
                _ => {
                    tx.retransmit_at = None;
                    return;
                }
            };
            self.transmits.push_back(Transmit {
                transport: tx.transport,
                destination: tx.remote,
                bytes: tx.bytes.clone(),
            });
            tx.interval = next;
            tx.retransmit_at = Some(at + next);
        }
    }

    fn reschedule(&mut self, id: TransactionId) {
        let Some(tx) = self.txs.get_mut(&id) else {
            return;
        };
        let next = tx.next_deadline();
        if next == tx.scheduled {
            return;
        }
        if let Some(old) = tx.scheduled {
            self.schedule.remove(&(old, id));
        }
        if let Some(n) = next {
            self.schedule.insert((n, id));
        }
        tx.scheduled = next;
    }

    fn terminate(&mut self, id: TransactionId) {
        let Some(tx) = self.txs.remove(&id) else {
            return;
        };
        if let Some(s) = tx.scheduled {
            self.schedule.remove(&(s, id));
        }
        if let Some(k) = tx.client_key {
            self.client_index.remove(&k);
        }
        if let Some(k) = tx.server_key {
            self.server_index.remove(&k);
        }
        if let Some(k) = tx.ack_key {
            if self.ack_index.get(&k) == Some(&id) {
                self.ack_index.remove(&k);
            }
        }
    }

    /// Leaves an INVITE server transaction unanswered for good: no 100 Trying, retransmissions
    /// absorbed, and it ends silently after 64*T1 (a refused caller learns nothing).
    pub fn ignore(&mut self, now: Instant, id: TransactionId) -> Result<(), SendError> {
        let timeout = self.config.timers.timeout();
        let tx = self.txs.get_mut(&id).ok_or(SendError::UnknownTransaction)?;
        if tx.kind != Kind::InviteServer || !tx.bytes.is_empty() {
            return Err(SendError::InvalidState(
                "only an unanswered INVITE can be ignored",
            ));
        }
        tx.trying_at = None;
        tx.timeout_at = Some(now + timeout);
        self.reschedule(id);
        Ok(())
    }

    /// The request of a live transaction.
    pub fn request(&self, id: TransactionId) -> Option<&Request> {
        self.txs.get(&id).map(|t| &t.request)
    }
}

/// The ACK for a non-2xx final response (RFC 3261 section 17.1.1.3).
fn build_ack(invite: &Request, resp: &Response) -> Vec<u8> {
    let mut ack = Request::new(Method::Ack, invite.uri.clone());
    if let Some(via) = invite.headers.get("Via") {
        // Only the top Via value: ours.
        let top = via.split(',').next().unwrap_or(via).trim();
        ack.headers.push("Via", top);
    }
    for name in ["Max-Forwards", "From"] {
        if let Some(v) = invite.headers.get(name) {
            ack.headers.push(name, v);
        }
    }
    match resp.headers.get("To") {
        Some(to) => ack.headers.push("To", to),
        None => {
            if let Some(to) = invite.headers.get("To") {
                ack.headers.push("To", to);
            }
        }
    }
    if let Some(v) = invite.headers.get("Call-ID") {
        ack.headers.push("Call-ID", v);
    }
    let seq = invite.headers.cseq().map(|c| c.seq).unwrap_or(0);
    ack.headers.push("CSeq", format!("{seq} ACK"));
    for r in invite.headers.get_all("Route") {
        ack.headers.push("Route", r);
    }
    ack.headers.push("Content-Length", "0");
    ack.to_bytes()
}

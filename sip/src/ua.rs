//! A user agent for calls on top of the transaction [`Endpoint`]: place INVITEs and get call
//! events, receive INVITEs and answer them, CANCEL and BYE, with dialogs handled inside
//! (ACK for 2xx and its re-sending, early dialogs, the CANCEL/200 race, re-INVITE, OPTIONS)
//! and digest challenges to our INVITEs answered in the same call, under the same handle.
//!
//! Sans-IO like the endpoint: the driver pumps [`UserAgent::handle_input`],
//! [`UserAgent::handle_timeout`], [`UserAgent::poll_transmit`], [`UserAgent::poll_timeout`] and
//! hands [`UserAgent::poll_event`] to the service.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::Instant;

use crate::auth::{
    select_challenge, Algorithm, ChallengeKind, Credentials, DigestClient, DigestRequest,
    RetryDecision,
};
use crate::dialog::{Dialog, DialogId};
use crate::endpoint::{
    Config, Endpoint, Event, Incoming, SendError, Target, TransactionId, Transmit,
};
use crate::message::{Method, NameAddr, Request, Response, Uri, Via};
use crate::transport::Transport;

mod deadlines;
mod refer;
mod register;
mod reliable;
mod session_timer;
use deadlines::Deadlines;
use refer::PeerRefer;
pub use refer::{sipfrag_status, TransferProgress};
pub use register::{refresh_after, Registration, RegistrationHandle, RegistrationState};
use reliable::{requires_100rel, EarlyDialog, Reliable, ReliableOut};
use session_timer::SessionTimer;
pub use session_timer::SessionTimerConfig;

/// Methods this user agent handles (the Allow header).
pub const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO";
/// Extensions our INVITEs announce (the Supported header): reliable provisional responses.
pub const SUPPORTED: &str = "100rel";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UaConfig {
    pub endpoint: Config,
    /// User part of our Contact.
    pub contact_user: String,
    /// User-Agent / Server header value.
    pub user_agent: Option<String>,
    /// Answer re-INVITEs at once with 200 and the current local SDP. When false, each
    /// [`UaEvent::ReInvite`] waits for [`UserAgent::respond_reinvite`].
    pub auto_answer_reinvite: bool,
    /// Secret mixed into our digest cnonces, so that a server cannot predict them from the
    /// branches and tags we send (the driver sets a random one).
    pub cnonce_secret: u64,
    /// Session timers (RFC 4028) for our calls; none when `None`.
    pub session_timer: Option<SessionTimerConfig>,
}

impl Default for UaConfig {
    fn default() -> Self {
        UaConfig {
            endpoint: Config::default(),
            contact_user: "dialbridge".into(),
            // Naming the product would only help scanners fingerprint the gateway.
            user_agent: None,
            auto_answer_reinvite: true,
            cnonce_secret: 0,
            session_timer: None,
        }
    }
}

/// Identifies a call in commands and events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallHandle(u64);

/// A message body with its type (an SDP offer or answer, usually).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Body {
    pub content_type: String,
    pub bytes: Vec<u8>,
}

impl Body {
    pub fn sdp(bytes: impl Into<Vec<u8>>) -> Self {
        Body {
            content_type: "application/sdp".into(),
            bytes: bytes.into(),
        }
    }

    fn of(headers: &crate::message::Headers, bytes: &[u8]) -> Option<Body> {
        if bytes.is_empty() {
            return None;
        }
        Some(Body {
            content_type: headers
                .get("Content-Type")
                .unwrap_or("application/octet-stream")
                .to_string(),
            bytes: bytes.to_vec(),
        })
    }
}

/// What to dial.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingCall {
    pub request_uri: Uri,
    /// From, without a tag (one is added).
    pub from: NameAddr,
    pub to: NameAddr,
    /// Next hop (the trunk), resolved by the driver.
    pub target: Target,
    /// Further next hops, tried in order when an INVITE to the one before times out, cannot be
    /// sent or is answered 503 before any other provisional response than 100 (RFC 3263
    /// section 4.3): the targets a trunk's DNS names gave after the first.
    pub alternates: Vec<Target>,
    /// The SDP offer; `None` asks for an offer in the 2xx (answer it with [`UserAgent::ack`]).
    pub body: Option<Body>,
    /// Extra headers (P-Asserted-Identity, Authorization on a retry, ...).
    pub headers: Vec<(String, String)>,
}

/// Our answer to a call's pending INVITE (or, with [`Reply::to_reinvite`], to its pending
/// re-INVITE): the status line, extra headers (Proxy-Authenticate, Retry-After) and a body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub reason: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<Body>,
    pub reinvite: bool,
}

impl Reply {
    pub fn new(code: u16, reason: impl Into<String>) -> Self {
        Reply {
            code,
            reason: reason.into(),
            headers: Vec::new(),
            body: None,
            reinvite: false,
        }
    }

    pub fn with_body(mut self, body: Option<Body>) -> Self {
        self.body = body;
        self
    }

    pub fn with_headers(mut self, headers: Vec<(String, String)>) -> Self {
        self.headers = headers;
        self
    }

    /// Answers the call's pending re-INVITE instead of its initial INVITE.
    pub fn to_reinvite(mut self) -> Self {
        self.reinvite = true;
        self
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UaEvent {
    /// A new INVITE; answer with [`UserAgent::respond`].
    IncomingCall {
        call: CallHandle,
        request: Request,
        transport: Transport,
        remote: SocketAddr,
    },
    /// A provisional response (101-199) to our INVITE; `to_tag` names its early dialog.
    Progress {
        call: CallHandle,
        code: u16,
        reason: String,
        to_tag: Option<String>,
        body: Option<Body>,
    },
    /// Our INVITE was answered (ACK already sent unless the 2xx carried the offer: then call
    /// [`UserAgent::ack`] with the answer).
    Answered {
        call: CallHandle,
        response: Response,
        body: Option<Body>,
    },
    /// The ACK for our 2xx to an incoming call arrived (with the answer if our 2xx had the offer).
    Confirmed {
        call: CallHandle,
        body: Option<Body>,
    },
    /// Our INVITE failed: a final non-2xx (including 487 after CANCEL), 408 for a timeout,
    /// 503 for a transport error. The response is there when one arrived (e.g. a 401/407
    /// challenge the call had no credentials for, or whose answer was refused).
    Failed {
        call: CallHandle,
        code: u16,
        reason: String,
        response: Option<Response>,
    },
    /// The caller cancelled an incoming call before it was answered (487 sent), or never
    /// PRACKed our reliable provisional response (504 sent).
    Cancelled { call: CallHandle },
    /// A re-INVITE was answered with our current SDP; `body` is the peer's new offer.
    ReInvite {
        call: CallHandle,
        body: Option<Body>,
    },
    /// An ACK with a body in an established dialog: the answer to the offer our 2xx carried for
    /// a re-INVITE without one (RFC 3264 section 8). Retransmitted ACKs come again.
    ReInviteAck { call: CallHandle, body: Body },
    /// An INFO in the dialog (answered 200), e.g. `application/dtmf-relay` key presses.
    Info {
        call: CallHandle,
        body: Option<Body>,
    },
    /// The peer asks us to call `refer_to` instead (a REFER we perform, see
    /// [`UserAgent::perform_peer_refer`]): it was answered 202 and NOTIFY `100 Trying`; report
    /// the new call with [`UserAgent::notify_transfer`] up to a final status.
    Referred { call: CallHandle, refer_to: Uri },
    /// How our transfer of the call ([`UserAgent::refer`]) goes.
    Transfer {
        call: CallHandle,
        progress: TransferProgress,
    },
    /// An established call ended (BYE from either side). May come without `Answered` when a
    /// CANCEL crossed the 2xx (the call was then ACKed and hung up at once).
    Ended { call: CallHandle, by_remote: bool },
    /// The session timer ran out (RFC 4028): the peer's refresh did not come, or ours failed.
    /// Our BYE is sent and the call is over.
    SessionExpired { call: CallHandle },
    /// The BYE of [`UserAgent::bye_restored`] is over: `code` is its final response, or 408
    /// when none came in time (Timer F), 503 when the transport failed.
    RestoredByeDone {
        call: CallHandle,
        code: u16,
        reason: String,
    },
    /// A registration ([`UserAgent::register`]) changed state.
    Registration {
        registration: RegistrationHandle,
        state: RegistrationState,
    },
    /// A message was discarded (for a log line).
    Discarded { remote: SocketAddr, reason: String },
}

impl UaEvent {
    /// The call the event is about; `None` for [`UaEvent::Discarded`] and
    /// [`UaEvent::Registration`].
    pub fn call(&self) -> Option<CallHandle> {
        match self {
            UaEvent::IncomingCall { call, .. }
            | UaEvent::Progress { call, .. }
            | UaEvent::Answered { call, .. }
            | UaEvent::Confirmed { call, .. }
            | UaEvent::Failed { call, .. }
            | UaEvent::Cancelled { call }
            | UaEvent::ReInvite { call, .. }
            | UaEvent::ReInviteAck { call, .. }
            | UaEvent::Info { call, .. }
            | UaEvent::Transfer { call, .. }
            | UaEvent::Referred { call, .. }
            | UaEvent::Ended { call, .. }
            | UaEvent::SessionExpired { call }
            | UaEvent::RestoredByeDone { call, .. } => Some(*call),
            UaEvent::Discarded { .. } | UaEvent::Registration { .. } => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CallState {
    /// Outgoing: INVITE sent.
    Calling,
    /// Outgoing: CANCEL requested or sent.
    Cancelling,
    /// Incoming: not answered with a final response yet.
    Ringing,
    /// Incoming: 2xx sent, waiting for the ACK.
    AwaitingAck,
    Confirmed,
    /// BYE sent.
    Terminating,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    Invite,
    Cancel,
    Bye,
    /// BYE for an extra dialog (a 2xx from another fork): its outcome does not matter.
    ForkBye,
    /// BYE of [`UserAgent::bye_restored`]: its outcome is reported.
    RestoredBye,
    /// Our session refresh (UPDATE or re-INVITE, RFC 4028).
    Refresh,
    /// Our REFER (blind transfer, RFC 3515).
    Refer,
    /// Our NOTIFY that ends the peer's transfer subscription: a BYE waits for its answer.
    FinalNotify,
    InviteServer,
    Other,
}

#[derive(Debug)]
struct Call {
    outgoing: bool,
    state: CallState,
    invite_tx: Option<TransactionId>,
    /// As sent (outgoing, with our Via) or as received (incoming).
    invite: Request,
    dialog: Option<Dialog>,
    target: Target,
    got_provisional: bool,
    /// The ACK for the 2xx, kept to answer 2xx retransmissions.
    ack: Option<(Request, Target)>,
    /// The 2xx carried the offer: the ACK waits for [`UserAgent::ack`].
    ack_needs_answer: bool,
    local_body: Option<Body>,
    local_tag: String,
    /// A re-INVITE from the peer waiting for our answer.
    reinvite_tx: Option<TransactionId>,
    /// Re-INVITEs of this call wait for [`UserAgent::respond_reinvite`] whatever
    /// [`UaConfig::auto_answer_reinvite`] says.
    manual_reinvite: bool,
    /// What a REFER from the peer gets ([`UserAgent::allow_peer_refer`],
    /// [`UserAgent::perform_peer_refer`]).
    peer_refer: PeerRefer,
    /// The peer's REFER we perform: its id (the REFER's CSeq) while its implicit subscription
    /// is open, i.e. until our final NOTIFY.
    referred: Option<u32>,
    /// BYE requested before the ACK for our 2xx arrived, or while our final NOTIFY of a
    /// transfer was unanswered.
    bye_pending: bool,
    /// Our final NOTIFY of the peer's REFER is unanswered: a BYE sent with it could overtake
    /// it (a proxy's workers, UDP) and end the peer's dialog before it learns the outcome.
    final_notify_unanswered: bool,
    /// Outgoing with credentials: how to answer a 401/407, until the INVITE is answered.
    auth: Option<Box<Auth>>,
    /// Outgoing: the early dialogs of reliable provisional responses (RFC 3262), one per To
    /// tag, with the last RSeq PRACKed; until the INVITE is answered.
    early: Vec<EarlyDialog>,
    /// Incoming: our reliable provisional response, until its PRACK.
    reliable: Option<Box<ReliableOut>>,
    /// Incoming: answers that wait for that PRACK, in order.
    held: VecDeque<Reply>,
    /// Incoming: the RSeq of our next reliable provisional response.
    next_rseq: u32,
    /// The session timer, once a 2xx set one up.
    session: Option<SessionTimer>,
    /// Outgoing: the INVITE was sent again after a 422 (once only).
    session_retried: bool,
    /// Our REFER is pending or its subscription open: NOTIFYs are taken.
    transfer: bool,
    /// Outgoing: the next hops left to fail over to, until a provisional response beyond 100
    /// shows that a server took the call.
    failover: Option<Box<Failover>>,
}

/// The call as dialled, and the next hops not tried yet.
#[derive(Debug)]
struct Failover {
    call: OutgoingCall,
    rest: VecDeque<Target>,
}

/// Digest state of an outgoing call: the call as dialled (each retry is built from it) and the
/// client that remembers which challenges were answered.
#[derive(Debug)]
struct Auth {
    call: OutgoingCall,
    client: DigestClient,
    realm: Option<String>,
}

/// See the module documentation.
#[derive(Debug)]
pub struct UserAgent {
    endpoint: Endpoint,
    config: UaConfig,
    calls: HashMap<CallHandle, Call>,
    txs: HashMap<TransactionId, (CallHandle, Purpose)>,
    dialogs: HashMap<DialogId, CallHandle>,
    events: VecDeque<UaEvent>,
    next_call: u64,
    cnonces: u64,
    registrations: HashMap<RegistrationHandle, register::Reg>,
    reg_txs: HashMap<TransactionId, RegistrationHandle>,
    next_registration: u64,
    /// Next retransmission of each call's reliable provisional response.
    reliable_timers: Deadlines,
    /// Next session refresh (ours) or expiry (the peer's) of each call with a session timer.
    session_timers: Deadlines,
    /// Accepted transfers of ours waiting for their next NOTIFY (RFC 6665 Timer N, then the
    /// subscription's expiry).
    transfer_timers: Deadlines,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UaError {
    UnknownCall,
    /// The command does not fit the call's state.
    InvalidState(&'static str),
    Send(SendError),
}

impl std::fmt::Display for UaError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UaError::UnknownCall => f.write_str("unknown call"),
            UaError::InvalidState(s) => write!(f, "invalid call state: {s}"),
            UaError::Send(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for UaError {}

impl From<SendError> for UaError {
    fn from(e: SendError) -> Self {
        UaError::Send(e)
    }
}

impl UserAgent {
    pub fn new(mut config: UaConfig) -> Self {
        // Callers may require reliable provisional responses: we send them.
        let supported = &mut config.endpoint.policy.supported;
        if !supported.iter().any(|s| s.eq_ignore_ascii_case(SUPPORTED)) {
            supported.push(SUPPORTED.to_string());
        }
        UserAgent {
            endpoint: Endpoint::new(config.endpoint.clone()),
            config,
            calls: HashMap::new(),
            txs: HashMap::new(),
            dialogs: HashMap::new(),
            events: VecDeque::new(),
            next_call: 1,
            cnonces: 0,
            registrations: HashMap::new(),
            reg_txs: HashMap::new(),
            next_registration: 1,
            reliable_timers: Deadlines::default(),
            session_timers: Deadlines::default(),
            transfer_timers: Deadlines::default(),
        }
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    pub fn handle_input(&mut self, now: Instant, input: Incoming<'_>) {
        self.endpoint.handle_input(now, input);
        self.process(now);
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        self.endpoint.handle_timeout(now);
        self.process(now);
        self.registration_timers(now);
        self.reliable_retransmissions(now);
        self.session_timers_due(now);
        self.transfer_timers_due(now);
        self.process(now);
    }

    pub fn handle_transport_error(
        &mut self,
        now: Instant,
        transport: Transport,
        destination: SocketAddr,
        error: &str,
    ) {
        self.endpoint
            .handle_transport_error(now, transport, destination, error);
        self.process(now);
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.endpoint.poll_transmit()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.endpoint.poll_timeout(),
            self.registration_timeout(),
            self.reliable_timeout(),
            self.session_timeout(),
            self.transfer_timers.earliest(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    pub fn poll_event(&mut self) -> Option<UaEvent> {
        self.events.pop_front()
    }

    /// The SIP Call-ID of a call (for logs and call records).
    pub fn call_id(&self, call: CallHandle) -> Option<&str> {
        self.calls.get(&call)?.invite.headers.call_id().ok()
    }

    /// The dialog of a call, once a 1xx with a tag or a 2xx established it.
    pub fn dialog(&self, call: CallHandle) -> Option<&Dialog> {
        self.calls.get(&call)?.dialog.as_ref()
    }

    /// Number of calls the agent tracks.
    pub fn call_count(&self) -> usize {
        self.calls.len()
    }

    fn contact(&self, transport: Transport) -> String {
        self.contact_for(&self.config.contact_user, transport)
    }

    /// Our Contact with `user` as its user part.
    fn contact_for(&self, user: &str, transport: Transport) -> String {
        match self.endpoint.local_addr(transport) {
            Some(a) => {
                let host: crate::message::Host = a.ip().into();
                let t = match transport {
                    Transport::Udp => "",
                    Transport::Tcp => ";transport=tcp",
                    Transport::Tls => ";transport=tls",
                };
                format!(
                    "<sip:{}@{host}:{}{t}>",
                    crate::message::escape_user(user),
                    a.port()
                )
            }
            None => format!("<sip:{}@invalid>", crate::message::escape_user(user)),
        }
    }

    fn alloc_call(&mut self) -> CallHandle {
        let h = CallHandle(self.next_call);
        self.next_call += 1;
        h
    }

    fn tag(&mut self) -> String {
        self.endpoint.random_token()[..10].to_string()
    }

    /// Places a call: sends the INVITE.
    pub fn invite(&mut self, now: Instant, call: OutgoingCall) -> Result<CallHandle, UaError> {
        self.invite_with_credentials(now, call, None)
    }

    /// Places a call that answers digest challenges: a 401/407 is answered with `credentials`
    /// in a new INVITE of the same call (same Call-ID and From tag, next CSeq; RFC 3261 section
    /// 22.2), once per challenge, and a stale nonce again. The returned handle names the call
    /// throughout; only a refused or unanswerable challenge ends it, as [`UaEvent::Failed`].
    pub fn invite_with_credentials(
        &mut self,
        now: Instant,
        call: OutgoingCall,
        credentials: Option<Credentials>,
    ) -> Result<CallHandle, UaError> {
        let local_tag = self.tag();
        let host = self
            .endpoint
            .local_addr(call.target.transport)
            .map(|a| a.ip().to_string())
            .unwrap_or_else(|| "dialbridge".into());
        let call_id = format!("{}@{host}", self.endpoint.random_token());
        let (tx, invite) = self.send_invite(now, &call, &call_id, &local_tag, 1)?;
        let auth = credentials.map(|c| {
            Box::new(Auth {
                call: call.clone(),
                client: DigestClient::new(c.username, c.password),
                realm: c.realm,
            })
        });
        let failover = (!call.alternates.is_empty()).then(|| {
            let rest = call.alternates.iter().copied().collect();
            Box::new(Failover {
                call: call.clone(),
                rest,
            })
        });
        let handle = self.alloc_call();
        self.calls.insert(
            handle,
            Call {
                outgoing: true,
                state: CallState::Calling,
                invite_tx: Some(tx),
                invite,
                dialog: None,
                target: call.target,
                got_provisional: false,
                ack: None,
                ack_needs_answer: call.body.is_none(),
                local_body: call.body,
                local_tag,
                reinvite_tx: None,
                manual_reinvite: false,
                peer_refer: PeerRefer::Refused,
                referred: None,
                bye_pending: false,
                final_notify_unanswered: false,
                auth,
                early: Vec::new(),
                reliable: None,
                held: VecDeque::new(),
                next_rseq: 1,
                session: None,
                session_retried: false,
                transfer: false,
                failover,
            },
        );
        self.txs.insert(tx, (handle, Purpose::Invite));
        Ok(handle)
    }

    /// Sends an INVITE in a new transaction; returns it as sent (with our Via).
    fn send_invite(
        &mut self,
        now: Instant,
        call: &OutgoingCall,
        call_id: &str,
        local_tag: &str,
        seq: u32,
    ) -> Result<(TransactionId, Request), UaError> {
        let mut req = Request::new(Method::Invite, call.request_uri.clone());
        req.headers.push("Max-Forwards", "70");
        req.headers
            .push("From", call.from.clone().with_tag(local_tag).to_string());
        req.headers.push("To", call.to.to_string());
        req.headers.push("Call-ID", call_id);
        req.headers.push("CSeq", format!("{seq} INVITE"));
        req.headers
            .push("Contact", self.contact(call.target.transport));
        req.headers.push("Allow", ALLOW);
        req.headers.push("Supported", self.supported());
        self.ask_session_timer(&mut req);
        if let Some(ua) = &self.config.user_agent {
            req.headers.push("User-Agent", ua.clone());
        }
        for (n, v) in &call.headers {
            req.headers.push(n, v.clone());
        }
        if let Some(b) = &call.body {
            req.set_body(&b.content_type, b.bytes.clone());
        } else {
            req.headers.set("Content-Length", "0");
        }
        let tx = self.endpoint.send_request(now, req, call.target)?;
        let invite = self
            .endpoint
            .request(tx)
            .cloned()
            .ok_or(UaError::InvalidState("INVITE transaction vanished"))?;
        Ok((tx, invite))
    }

    /// A client nonce the server cannot predict from what else we send.
    fn cnonce(&mut self) -> String {
        self.cnonces = self.cnonces.wrapping_add(1);
        let seed = format!("{}:{}", self.config.cnonce_secret, self.cnonces);
        let mut hex = Algorithm::Sha256.hash_hex(seed.as_bytes());
        hex.truncate(16);
        hex
    }

    /// Answers a 401/407 to the INVITE of a call with credentials by sending the INVITE again
    /// with them, in the same call. False when the challenge is not answered: the call then
    /// fails with it.
    fn answer_challenge(&mut self, now: Instant, call: CallHandle, resp: &Response) -> bool {
        let code = resp.code;
        let Some(kind) = ChallengeKind::from_status(code) else {
            return false;
        };
        let cnonce = self.cnonce();
        let Some(c) = self.calls.get_mut(&call) else {
            return false;
        };
        // A call hung up before the challenge came is over.
        if c.state != CallState::Calling {
            return false;
        }
        let Some(auth) = c.auth.as_mut() else {
            return false;
        };
        let values: Vec<&str> = resp.headers.get_all(kind.challenge_header()).collect();
        if let Some(realm) = &auth.realm {
            let offered = select_challenge(values.iter().copied()).map(|c| c.realm);
            if offered.as_deref().ok() != Some(realm.as_str()) {
                tracing::info!(?offered, expected = %realm, "challenge for another realm: not answered");
                return false;
            }
        }
        let uri = auth.call.request_uri.to_string();
        let headers = match auth.client.on_challenge(
            kind,
            values.iter().copied(),
            &DigestRequest::new("INVITE", &uri),
            &cnonce,
        ) {
            RetryDecision::Retry(headers) => headers,
            RetryDecision::GiveUp(why) => {
                tracing::info!(code, ?why, "challenge not answered");
                return false;
            }
        };
        let mut retry = auth.call.clone();
        retry
            .headers
            .retain(|(name, _)| !name.eq_ignore_ascii_case(kind.authorization_header()));
        retry
            .headers
            .extend(headers.into_iter().map(|h| (h.name.to_string(), h.value)));
        match self.resend_invite(now, call, &retry) {
            Ok(()) => {
                tracing::debug!(code, "challenge answered");
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot re-send the challenged INVITE");
                false
            }
        }
    }

    /// Sends `retry` as a new INVITE transaction of the same call (same Call-ID and From tag,
    /// next CSeq; RFC 3261 section 22.2 for a digest retry, RFC 3263 section 4.3 for a next hop)
    /// and makes it the call's INVITE.
    fn resend_invite(
        &mut self,
        now: Instant,
        call: CallHandle,
        retry: &OutgoingCall,
    ) -> Result<(), UaError> {
        let c = self.calls.get(&call).ok_or(UaError::UnknownCall)?;
        let seq = c
            .invite
            .headers
            .cseq()
            .map(|c| c.seq.wrapping_add(1))
            .unwrap_or(2);
        let call_id = c.invite.headers.call_id().unwrap_or_default().to_string();
        let local_tag = c.local_tag.clone();
        let (tx, invite) = self.send_invite(now, retry, &call_id, &local_tag, seq)?;
        self.txs.insert(tx, (call, Purpose::Invite));
        if let Some(c) = self.calls.get_mut(&call) {
            c.invite_tx = Some(tx);
            c.invite = invite;
            c.target = retry.target;
            // A CANCEL waits for a provisional response to this INVITE.
            c.got_provisional = false;
            c.early.clear();
        }
        Ok(())
    }

    /// Sends the call's INVITE to its next hop when the last one timed out, could not be reached
    /// or answered 503 (RFC 3263 section 4.3): a new transaction of the same call (same Call-ID
    /// and From tag, next CSeq), as for a digest retry. False when no hop is left, or the call
    /// was hung up meanwhile.
    fn fail_over(&mut self, now: Instant, call: CallHandle, code: u16) -> bool {
        let Some(c) = self.calls.get_mut(&call) else {
            return false;
        };
        if c.state != CallState::Calling {
            return false;
        }
        let Some(failover) = c.failover.as_mut() else {
            return false;
        };
        let Some(next) = failover.rest.pop_front() else {
            return false;
        };
        let failed = c.target;
        let mut retry = failover.call.clone();
        retry.target = next;
        if let Some(auth) = c.auth.as_mut() {
            auth.call.target = next;
            retry = auth.call.clone();
        }
        match self.resend_invite(now, call, &retry) {
            Ok(()) => {
                tracing::info!(code, failed = %failed.addr, next = %next.addr, "INVITE failed over to the next target");
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, next = %next.addr, "cannot send the INVITE to the next target");
                false
            }
        }
    }

    /// Cancels an outgoing call that has no final response. The CANCEL goes out once a
    /// provisional response has arrived (RFC 3261 section 9.1).
    pub fn cancel(&mut self, now: Instant, call: CallHandle) -> Result<(), UaError> {
        let c = self.calls.get_mut(&call).ok_or(UaError::UnknownCall)?;
        if !c.outgoing || c.state != CallState::Calling {
            return Err(UaError::InvalidState(
                "only a ringing outgoing call can be cancelled",
            ));
        }
        c.state = CallState::Cancelling;
        if c.got_provisional {
            self.send_cancel(now, call)?;
        }
        Ok(())
    }

    fn send_cancel(&mut self, now: Instant, call: CallHandle) -> Result<(), UaError> {
        let c = self.calls.get(&call).ok_or(UaError::UnknownCall)?;
        let inv = &c.invite;
        let mut cancel = Request::new(Method::Cancel, inv.uri.clone());
        for name in ["Via", "Max-Forwards", "From", "To", "Call-ID"] {
            if let Some(v) = inv.headers.get(name) {
                cancel.headers.push(name, v);
            }
        }
        let seq = inv.headers.cseq().map(|c| c.seq).unwrap_or(1);
        cancel.headers.push("CSeq", format!("{seq} CANCEL"));
        for r in inv.headers.get_all("Route") {
            cancel.headers.push("Route", r);
        }
        cancel.headers.push("Content-Length", "0");
        let target = c.target;
        let invite_tx = c.invite_tx;
        let tx = self.endpoint.send_request(now, cancel, target)?;
        self.txs.insert(tx, (call, Purpose::Cancel));
        if let Some(inv) = invite_tx {
            self.endpoint.arm_cancel_timeout(now, inv);
        }
        Ok(())
    }

    /// Hangs up an established call with BYE.
    /// On an incoming call whose 2xx is not acknowledged yet, the BYE waits for the ACK (or for
    /// the 2xx to time out), as RFC 3261 section 15 requires.
    pub fn bye(&mut self, now: Instant, call: CallHandle) -> Result<(), UaError> {
        let c = self.calls.get_mut(&call).ok_or(UaError::UnknownCall)?;
        match c.state {
            CallState::AwaitingAck => {
                c.bye_pending = true;
                Ok(())
            }
            CallState::Confirmed if c.final_notify_unanswered => {
                c.bye_pending = true;
                Ok(())
            }
            CallState::Confirmed => self.send_bye(now, call),
            _ => Err(UaError::InvalidState("BYE needs an established call")),
        }
    }

    fn send_bye(&mut self, now: Instant, call: CallHandle) -> Result<(), UaError> {
        let c = self.calls.get_mut(&call).ok_or(UaError::UnknownCall)?;
        let dialog = c
            .dialog
            .as_mut()
            .ok_or(UaError::InvalidState("no dialog"))?;
        let bye = dialog.bye();
        let target = dialog.next_hop();
        c.state = CallState::Terminating;
        let tx = self.endpoint.send_request(now, bye, target)?;
        self.txs.insert(tx, (call, Purpose::Bye));
        Ok(())
    }

    /// Hangs up a dialog this agent does not track, such as one a previous run of the service
    /// saved ([`crate::dialog::SavedDialog`]) before it died: a BYE with the dialog's next CSeq
    /// in a new transaction (retransmitted over UDP), whose outcome comes as
    /// [`UaEvent::RestoredByeDone`] for the returned handle. Nothing else of the dialog is
    /// kept: the peer's own requests in it get 481.
    pub fn bye_restored(
        &mut self,
        now: Instant,
        mut dialog: Dialog,
    ) -> Result<CallHandle, UaError> {
        let bye = dialog.bye();
        let tx = self.endpoint.send_request(now, bye, dialog.next_hop())?;
        let call = self.alloc_call();
        self.txs.insert(tx, (call, Purpose::RestoredBye));
        Ok(call)
    }

    /// Never answers an incoming call (silent rejection): nothing is sent, not even 100 Trying,
    /// and retransmissions of its INVITE are absorbed.
    pub fn ignore(&mut self, now: Instant, call: CallHandle) -> Result<(), UaError> {
        let c = self.calls.get(&call).ok_or(UaError::UnknownCall)?;
        if c.outgoing || c.state != CallState::Ringing {
            return Err(UaError::InvalidState(
                "only an incoming call that got no answer can be ignored",
            ));
        }
        let tx = c
            .invite_tx
            .ok_or(UaError::InvalidState("no INVITE transaction"))?;
        self.endpoint.ignore(now, tx)?;
        self.remove_call(call);
        Ok(())
    }

    /// Refuses an incoming call with one final response sent outside any transaction
    /// ([`Endpoint::respond_once`]): never retransmitted, and nothing of the call is kept.
    pub fn refuse_once(
        &mut self,
        call: CallHandle,
        code: u16,
        reason: &str,
    ) -> Result<(), UaError> {
        let c = self.calls.get(&call).ok_or(UaError::UnknownCall)?;
        // After a 18x the caller holds an early dialog: that ends with a transaction's answer.
        if c.outgoing || c.state != CallState::Ringing || c.dialog.is_some() || code < 300 {
            return Err(UaError::InvalidState(
                "only an incoming call that got no 18x can be refused once",
            ));
        }
        let tx = c
            .invite_tx
            .ok_or(UaError::InvalidState("no INVITE transaction"))?;
        let mut resp = Response::for_request(&c.invite, code, reason);
        resp.set_to_tag(&c.local_tag)
            .map_err(|_| UaError::InvalidState("INVITE has an unusable To header"))?;
        if let Some(ua) = &self.config.user_agent {
            resp.headers.push("Server", ua.clone());
        }
        self.endpoint.respond_once(tx, resp)?;
        self.remove_call(call);
        Ok(())
    }

    /// Ends a call whatever its state: CANCEL, BYE, or a 480 for an unanswered incoming call.
    pub fn hangup(&mut self, now: Instant, call: CallHandle) -> Result<(), UaError> {
        let c = self.calls.get(&call).ok_or(UaError::UnknownCall)?;
        match c.state {
            CallState::Calling => self.cancel(now, call),
            CallState::Ringing => self.respond(now, call, 480, "Temporarily Unavailable", None),
            CallState::Confirmed | CallState::AwaitingAck => self.bye(now, call),
            CallState::Cancelling | CallState::Terminating => Ok(()),
        }
    }

    /// Sends the ACK for a 2xx that carried the offer, with our answer.
    pub fn ack(&mut self, call: CallHandle, answer: Option<Body>) -> Result<(), UaError> {
        let c = self.calls.get_mut(&call).ok_or(UaError::UnknownCall)?;
        if !c.ack_needs_answer || c.dialog.is_none() || c.ack.is_some() {
            return Err(UaError::InvalidState(
                "no 2xx is waiting for an ACK with an answer",
            ));
        }
        c.local_body = answer.clone();
        self.send_ack(call, answer)
    }

    fn send_ack(&mut self, call: CallHandle, body: Option<Body>) -> Result<(), UaError> {
        let branch = self.endpoint.new_branch();
        let c = self.calls.get_mut(&call).ok_or(UaError::UnknownCall)?;
        let Some(dialog) = c.dialog.as_ref() else {
            return Err(UaError::InvalidState("no dialog"));
        };
        let seq = c.invite.headers.cseq().map(|c| c.seq).unwrap_or(1);
        let mut ack = dialog.request(Method::Ack, seq);
        let target = dialog.next_hop();
        if let Some(local) = self.endpoint.local_addr(target.transport) {
            let mut via = Via::new(
                target.transport.as_str(),
                local.ip().into(),
                Some(local.port()),
                &branch,
            );
            via.set_param("rport", None);
            ack.headers.push_front("Via", via.to_string());
        }
        ack.headers.push("Max-Forwards", "70");
        match body {
            Some(b) => ack.set_body(&b.content_type, b.bytes),
            None => ack.headers.push("Content-Length", "0"),
        }
        c.ack = Some((ack.clone(), target));
        self.endpoint.send_stateless(ack, target)?;
        Ok(())
    }

    /// Answers a call's pending INVITE, or its pending re-INVITE when [`Reply::reinvite`] is set:
    /// what [`UserAgent::respond_with_headers`] and [`UserAgent::respond_reinvite`] do.
    pub fn respond_with(
        &mut self,
        now: Instant,
        call: CallHandle,
        reply: Reply,
    ) -> Result<(), UaError> {
        let Reply {
            code,
            reason,
            headers,
            body,
            reinvite,
        } = reply;
        if reinvite {
            self.answer_reinvite(now, call, code, &reason, &headers, body)
        } else {
            self.respond_with_headers(now, call, code, &reason, &headers, body)
        }
    }

    /// Answers an incoming call: 180/183 (early dialog), 2xx (with our SDP), or 3xx-6xx.
    pub fn respond(
        &mut self,
        now: Instant,
        call: CallHandle,
        code: u16,
        reason: &str,
        body: Option<Body>,
    ) -> Result<(), UaError> {
        self.respond_with_headers(now, call, code, reason, &[], body)
    }

    /// [`UserAgent::respond`] with extra headers (Proxy-Authenticate on a 407, Retry-After on a 503).
    pub fn respond_with_headers(
        &mut self,
        now: Instant,
        call: CallHandle,
        code: u16,
        reason: &str,
        headers: &[(String, String)],
        body: Option<Body>,
    ) -> Result<(), UaError> {
        let contact = {
            let c = self.calls.get(&call).ok_or(UaError::UnknownCall)?;
            self.contact(c.target.transport)
        };
        if self.must_hold(call, code, body.is_some()) {
            if let Some(c) = self.calls.get_mut(&call) {
                c.held.push_back(Reply {
                    code,
                    reason: reason.to_string(),
                    headers: headers.to_vec(),
                    body,
                    reinvite: false,
                });
            }
            return Ok(());
        }
        let c = self.calls.get_mut(&call).ok_or(UaError::UnknownCall)?;
        if c.outgoing || c.state != CallState::Ringing {
            return Err(UaError::InvalidState(
                "only an unanswered incoming call can be answered",
            ));
        }
        let tx = c
            .invite_tx
            .ok_or(UaError::InvalidState("no INVITE transaction"))?;
        let reliable = Self::wants_reliable(&c.invite, code, body.is_some());
        let mut resp = Response::for_request(&c.invite, code, reason);
        if code > 100 {
            resp.set_to_tag(&c.local_tag)
                .map_err(|_| UaError::InvalidState("INVITE has an unusable To header"))?;
        }
        if (101..300).contains(&code) {
            for rr in c.invite.headers.get_all("Record-Route") {
                resp.headers.push("Record-Route", rr);
            }
            resp.headers.push("Contact", contact);
        }
        if (200..300).contains(&code) {
            resp.headers.push("Allow", ALLOW);
        }
        if let Some(ua) = &self.config.user_agent {
            resp.headers.push("Server", ua.clone());
        }
        for (name, value) in headers {
            resp.headers.push(name, value.clone());
        }
        if let Some(b) = &body {
            resp.set_body(&b.content_type, b.bytes.clone());
        }
        if reliable {
            self.send_reliably(now, call, &mut resp);
        }
        if (200..300).contains(&code) {
            self.answer_session_timer(now, call, &mut resp);
        }
        if code >= 200 {
            self.final_sent(call);
        }
        self.endpoint.send_response(now, tx, resp)?;
        let c = self.calls.get_mut(&call).ok_or(UaError::UnknownCall)?;
        if (101..300).contains(&code) && c.dialog.is_none() {
            if let Ok(d) = Dialog::uas(&c.invite, &c.local_tag, c.target) {
                self.dialogs.insert(d.id.clone(), call);
                c.dialog = Some(d);
            }
        }
        if (200..300).contains(&code) {
            c.state = CallState::AwaitingAck;
            c.ack_needs_answer = c.invite.body.is_empty();
            c.local_body = body;
        } else if code >= 300 {
            self.remove_call(call);
        }
        Ok(())
    }

    /// Makes the re-INVITEs of `call` wait for [`UserAgent::respond_reinvite`]: its owner answers
    /// each new offer itself (a hold needs a recvonly answer, a new codec list a new choice).
    pub fn answer_reinvites_manually(&mut self, call: CallHandle) -> Result<(), UaError> {
        let c = self.calls.get_mut(&call).ok_or(UaError::UnknownCall)?;
        c.manual_reinvite = true;
        Ok(())
    }

    /// Answers a pending re-INVITE (see [`UaConfig::auto_answer_reinvite`]): 200 with our new
    /// SDP (which becomes the current one), or an error code such as 488.
    pub fn respond_reinvite(
        &mut self,
        now: Instant,
        call: CallHandle,
        code: u16,
        reason: &str,
        body: Option<Body>,
    ) -> Result<(), UaError> {
        self.answer_reinvite(now, call, code, reason, &[], body)
    }

    fn answer_reinvite(
        &mut self,
        now: Instant,
        call: CallHandle,
        code: u16,
        reason: &str,
        headers: &[(String, String)],
        body: Option<Body>,
    ) -> Result<(), UaError> {
        let contact = {
            let c = self.calls.get(&call).ok_or(UaError::UnknownCall)?;
            self.contact(c.target.transport)
        };
        let c = self.calls.get_mut(&call).ok_or(UaError::UnknownCall)?;
        let tx = c.reinvite_tx.ok_or(UaError::InvalidState(
            "no re-INVITE is waiting for an answer",
        ))?;
        let req = self
            .endpoint
            .request(tx)
            .ok_or(UaError::InvalidState("re-INVITE transaction vanished"))?;
        let req = req.clone();
        let mut r = Response::for_request(&req, code, reason);
        if (200..300).contains(&code) {
            r.headers.push("Contact", contact);
            r.headers.push("Allow", ALLOW);
            if let Some((name, value)) = self.refreshed_by_peer(now, call, &req) {
                r.headers.push(&name, value);
            }
        }
        for (name, value) in headers {
            r.headers.push(name, value.clone());
        }
        if let Some(b) = &body {
            r.set_body(&b.content_type, b.bytes.clone());
        }
        self.endpoint.send_response(now, tx, r)?;
        let c = self.calls.get_mut(&call).ok_or(UaError::UnknownCall)?;
        if code >= 200 {
            c.reinvite_tx = None;
            if (200..300).contains(&code) && body.is_some() {
                c.local_body = body;
            }
        }
        Ok(())
    }

    fn remove_call(&mut self, call: CallHandle) {
        self.reliable_timers.remove(&call);
        self.session_timers.remove(&call);
        self.transfer_timers.remove(&call);
        if let Some(c) = self.calls.remove(&call) {
            if let Some(d) = c.dialog {
                self.dialogs.remove(&d.id);
            }
        }
        self.txs.retain(|_, (h, _)| *h != call);
    }

    fn process(&mut self, now: Instant) {
        while let Some(ev) = self.endpoint.poll_event() {
            match ev {
                Event::Request {
                    id,
                    request,
                    transport,
                    remote,
                    cancels,
                } => self.on_request(now, id, request, transport, remote, cancels),
                Event::Ack { request, acked, .. } => self.on_ack(now, request, acked),
                Event::Response { id, response } => {
                    if !self.on_register_response(now, id, &response) {
                        self.on_response(now, id, response)
                    }
                }
                Event::Timeout { id } => {
                    if !self.on_register_failure(now, id, 408, "Request Timeout") {
                        self.on_failure(now, id, 408, "Request Timeout")
                    }
                }
                Event::TransportError { id, .. } => {
                    if !self.on_register_failure(now, id, 503, "Service Unavailable") {
                        self.on_failure(now, id, 503, "Service Unavailable")
                    }
                }
                Event::Discarded { remote, reason } => {
                    self.events.push_back(UaEvent::Discarded { remote, reason })
                }
            }
        }
    }

    fn on_failure(&mut self, now: Instant, id: TransactionId, code: u16, reason: &str) {
        let Some((call, purpose)) = self.txs.remove(&id) else {
            return;
        };
        match purpose {
            Purpose::Invite => {
                if self.fail_over(now, call, code) {
                    return;
                }
                self.events.push_back(UaEvent::Failed {
                    call,
                    code,
                    reason: reason.into(),
                    response: None,
                });
                self.remove_call(call);
            }
            Purpose::Bye => {
                self.events.push_back(UaEvent::Ended {
                    call,
                    by_remote: false,
                });
                self.remove_call(call);
            }
            // Timer L: our 2xx was never acknowledged; end the dialog (RFC 3261 13.3.1.4).
            Purpose::InviteServer => {
                if self
                    .calls
                    .get(&call)
                    .is_some_and(|c| c.state == CallState::AwaitingAck)
                {
                    let _ = self.send_bye(now, call);
                }
            }
            Purpose::RestoredBye => self.events.push_back(UaEvent::RestoredByeDone {
                call,
                code,
                reason: reason.into(),
            }),
            Purpose::Refresh => self.refresh_failed(now, call, code),
            Purpose::Refer => self.on_refer_failure(call, code, reason),
            Purpose::FinalNotify => self.final_notify_done(now, call),
            Purpose::Cancel | Purpose::ForkBye | Purpose::Other => {}
        }
    }

    fn on_response(&mut self, now: Instant, id: TransactionId, resp: Response) {
        let Some(&(call, purpose)) = self.txs.get(&id) else {
            return;
        };
        let code = resp.code;
        match purpose {
            Purpose::Invite => self.on_invite_response(now, id, call, resp),
            Purpose::Bye if code >= 200 => {
                self.txs.remove(&id);
                self.events.push_back(UaEvent::Ended {
                    call,
                    by_remote: false,
                });
                self.remove_call(call);
            }
            Purpose::RestoredBye if code >= 200 => {
                self.txs.remove(&id);
                self.events.push_back(UaEvent::RestoredByeDone {
                    call,
                    code,
                    reason: resp.reason,
                });
            }
            Purpose::Refresh => {
                if code >= 200 {
                    self.txs.remove(&id);
                }
                self.on_refresh_response(now, call, &resp);
            }
            Purpose::Refer => self.on_refer_response(now, id, call, &resp),
            Purpose::FinalNotify if code >= 200 => {
                self.txs.remove(&id);
                self.final_notify_done(now, call);
            }
            _ => {
                if code >= 200 {
                    self.txs.remove(&id);
                }
            }
        }
    }

    fn on_invite_response(
        &mut self,
        now: Instant,
        id: TransactionId,
        call: CallHandle,
        resp: Response,
    ) {
        let code = resp.code;
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        if code < 200 {
            let first = !c.got_provisional;
            c.got_provisional = true;
            let reliable = if code > 100 && requires_100rel(&resp) {
                self.prack(now, call, &resp)
            } else {
                Reliable::Unreliable
            };
            let Some(c) = self.calls.get_mut(&call) else {
                return;
            };
            if code > 100 {
                // A server took the call: a failure from here on is the call's, not the hop's.
                c.failover = None;
            }
            if code > 100 && !matches!(reliable, Reliable::Drop) {
                self.events.push_back(UaEvent::Progress {
                    call,
                    code,
                    reason: resp.reason.clone(),
                    to_tag: resp
                        .headers
                        .to()
                        .ok()
                        .and_then(|t| t.tag().map(str::to_string)),
                    body: Body::of(&resp.headers, &resp.body),
                });
            }
            if first && c.state == CallState::Cancelling {
                let _ = self.send_cancel(now, call);
            }
            return;
        }
        if code >= 300 {
            self.txs.remove(&id);
            if self.answer_challenge(now, call, &resp)
                || self.retry_session_interval(now, call, &resp)
                || (code == 503 && self.fail_over(now, call, code))
            {
                return;
            }
            self.events.push_back(UaEvent::Failed {
                call,
                code,
                reason: resp.reason.clone(),
                response: Some(resp),
            });
            self.remove_call(call);
            return;
        }
        // 2xx: no challenge left to answer.
        c.auth = None;
        let Ok(mut dialog) = Dialog::uac(&c.invite, &resp, c.target) else {
            self.events.push_back(UaEvent::Discarded {
                remote: c.target.addr,
                reason: format!("2xx without a usable To tag or Contact for call {call:?}"),
            });
            return;
        };
        // Our PRACKs in its early dialog used CSeq numbers after the INVITE's.
        if let Some(e) = c.early.iter().find(|e| e.dialog.id == dialog.id) {
            dialog.local_seq = dialog.local_seq.max(e.dialog.local_seq);
        }
        if c.dialog.is_none() {
            c.early.clear();
        }
        let same = c.dialog.as_ref().map(|d| d.id == dialog.id);
        match same {
            Some(true) => {
                // A retransmitted 2xx: send the same ACK again.
                if let Some((ack, target)) = c.ack.clone() {
                    let _ = self.endpoint.send_stateless(ack, target);
                }
            }
            // Another fork answered too: ACK it and hang that dialog up.
            Some(false) => self.ack_and_bye_fork(now, call, dialog),
            None => {
                let cancelling = c.state == CallState::Cancelling;
                let needs_answer = c.ack_needs_answer;
                self.dialogs.insert(dialog.id.clone(), call);
                c.dialog = Some(dialog);
                c.state = CallState::Confirmed;
                if cancelling {
                    // The 2xx crossed our CANCEL: ACK, then BYE (RFC 3261 section 9.1).
                    let _ = self.send_ack(call, None);
                    let _ = self.bye(now, call);
                    return;
                }
                if !needs_answer {
                    let _ = self.send_ack(call, None);
                }
                self.answered_session_timer(now, call, &resp);
                self.events.push_back(UaEvent::Answered {
                    call,
                    body: Body::of(&resp.headers, &resp.body),
                    response: resp,
                });
            }
        }
    }

    fn ack_and_bye_fork(&mut self, now: Instant, call: CallHandle, mut dialog: Dialog) {
        let Some(c) = self.calls.get(&call) else {
            return;
        };
        let seq = c.invite.headers.cseq().map(|c| c.seq).unwrap_or(1);
        let mut ack = dialog.request(Method::Ack, seq);
        ack.headers.push("Max-Forwards", "70");
        ack.headers.push("Content-Length", "0");
        let target = dialog.next_hop();
        let _ = self.endpoint.send_stateless(ack, target);
        let bye = dialog.bye();
        if let Ok(tx) = self.endpoint.send_request(now, bye, target) {
            self.txs.insert(tx, (call, Purpose::ForkBye));
        }
    }

    fn on_ack(&mut self, now: Instant, request: Request, acked: Option<TransactionId>) {
        let by_tx = acked.and_then(|id| self.txs.get(&id).map(|(c, _)| *c));
        let call = by_tx.or_else(|| self.dialog_of(&request));
        let Some(call) = call else {
            return;
        };
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        if c.state == CallState::AwaitingAck {
            c.state = CallState::Confirmed;
            let bye = c.bye_pending;
            self.events.push_back(UaEvent::Confirmed {
                call,
                body: Body::of(&request.headers, &request.body),
            });
            if bye {
                let _ = self.send_bye(now, call);
            }
        } else if c.state == CallState::Confirmed {
            if let Some(body) = Body::of(&request.headers, &request.body) {
                self.events.push_back(UaEvent::ReInviteAck { call, body });
            }
        }
    }

    fn dialog_of(&self, req: &Request) -> Option<CallHandle> {
        let id = DialogId {
            call_id: req.headers.call_id().ok()?.to_string(),
            local_tag: req.headers.to().ok()?.tag()?.to_string(),
            remote_tag: req
                .headers
                .from()
                .ok()?
                .tag()
                .unwrap_or_default()
                .to_string(),
        };
        self.dialogs.get(&id).copied()
    }

    fn reply(&mut self, now: Instant, id: TransactionId, req: &Request, code: u16, reason: &str) {
        let mut r = Response::for_request(req, code, reason);
        if req.headers.to().is_ok_and(|t| t.tag().is_none()) {
            let tag = self.tag();
            let _ = r.set_to_tag(&tag);
        }
        if matches!(code, 405 | 501) || (req.method == Method::Options && code == 200) {
            r.headers.push("Allow", ALLOW);
        }
        if req.method == Method::Options && code == 200 {
            r.headers.push("Accept", "application/sdp");
        }
        let _ = self.endpoint.send_response(now, id, r);
    }

    fn on_request(
        &mut self,
        now: Instant,
        id: TransactionId,
        req: Request,
        transport: Transport,
        remote: SocketAddr,
        cancels: Option<TransactionId>,
    ) {
        let in_dialog = req
            .headers
            .to()
            .ok()
            .and_then(|t| t.tag().map(str::to_string))
            .is_some();
        match req.method {
            Method::Invite if !in_dialog => {
                if self.refuse_short_session(now, id, &req) {
                    return;
                }
                let call = self.alloc_call();
                let local_tag = self.tag();
                // RFC 3262 section 3: the first RSeq is random in 1..2^31.
                let next_rseq = u32::from_str_radix(&self.tag()[..8], 16)
                    .map_or(1, |n| (n & 0x7fff_ffff).max(1));
                self.calls.insert(
                    call,
                    Call {
                        outgoing: false,
                        state: CallState::Ringing,
                        invite_tx: Some(id),
                        invite: req.clone(),
                        dialog: None,
                        target: Target {
                            transport,
                            addr: remote,
                        },
                        got_provisional: false,
                        ack: None,
                        ack_needs_answer: false,
                        local_body: None,
                        local_tag,
                        reinvite_tx: None,
                        manual_reinvite: false,
                        peer_refer: PeerRefer::Refused,
                        referred: None,
                        bye_pending: false,
                        final_notify_unanswered: false,
                        auth: None,
                        early: Vec::new(),
                        reliable: None,
                        held: VecDeque::new(),
                        next_rseq,
                        session: None,
                        session_retried: false,
                        transfer: false,
                        failover: None,
                    },
                );
                self.txs.insert(id, (call, Purpose::InviteServer));
                self.events.push_back(UaEvent::IncomingCall {
                    call,
                    request: req,
                    transport,
                    remote,
                });
            }
            Method::Cancel => {
                let call = cancels.and_then(|inv| self.txs.get(&inv).map(|(c, _)| *c));
                match (cancels, call) {
                    (Some(inv), Some(call)) => {
                        self.reply(now, id, &req, 200, "OK");
                        let ringing = self
                            .calls
                            .get(&call)
                            .is_some_and(|c| c.state == CallState::Ringing);
                        if ringing {
                            if let Some(c) = self.calls.get(&call) {
                                let mut r =
                                    Response::for_request(&c.invite, 487, "Request Terminated");
                                let _ = r.set_to_tag(&c.local_tag);
                                let _ = self.endpoint.send_response(now, inv, r);
                            }
                            self.events.push_back(UaEvent::Cancelled { call });
                            self.remove_call(call);
                        }
                    }
                    (Some(_), None) => self.reply(now, id, &req, 200, "OK"),
                    (None, _) => self.reply(now, id, &req, 481, "Call/Transaction Does Not Exist"),
                }
            }
            Method::Options => self.reply(now, id, &req, 200, "OK"),
            _ if !in_dialog => {
                let (code, reason) = match req.method {
                    Method::Other(_) => (501, "Not Implemented"),
                    Method::Bye => (481, "Call/Transaction Does Not Exist"),
                    _ => (405, "Method Not Allowed"),
                };
                self.reply(now, id, &req, code, reason);
            }
            _ => self.on_in_dialog_request(now, id, req),
        }
    }

    fn on_in_dialog_request(&mut self, now: Instant, id: TransactionId, req: Request) {
        let Some(call) = self.dialog_of(&req) else {
            return self.reply(now, id, &req, 481, "Call/Transaction Does Not Exist");
        };
        let seq = req.headers.cseq().map(|c| c.seq).unwrap_or(0);
        let Some(transport) = self.calls.get(&call).map(|c| c.target.transport) else {
            return;
        };
        let contact = self.contact(transport);
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        let Some(dialog) = c.dialog.as_mut() else {
            return;
        };
        if !dialog.accept_remote_seq(seq) {
            return self.reply(now, id, &req, 500, "Server Internal Error");
        }
        match req.method {
            Method::Bye => {
                self.reply(now, id, &req, 200, "OK");
                self.events.push_back(UaEvent::Ended {
                    call,
                    by_remote: true,
                });
                self.remove_call(call);
            }
            Method::Invite => {
                if c.reinvite_tx.is_some() {
                    return self.reply(now, id, &req, 491, "Request Pending");
                }
                dialog.refresh_target(&req.headers);
                self.txs.insert(id, (call, Purpose::Other));
                self.events.push_back(UaEvent::ReInvite {
                    call,
                    body: Body::of(&req.headers, &req.body),
                });
                if self.config.auto_answer_reinvite && !c.manual_reinvite {
                    let mut r = Response::for_request(&req, 200, "OK");
                    r.headers.push("Contact", contact);
                    r.headers.push("Allow", ALLOW);
                    if let Some(b) = c.local_body.clone() {
                        r.set_body(&b.content_type, b.bytes);
                    }
                    if let Some((name, value)) = self.refreshed_by_peer(now, call, &req) {
                        r.headers.push(&name, value);
                    }
                    let _ = self.endpoint.send_response(now, id, r);
                } else {
                    c.reinvite_tx = Some(id);
                }
            }
            // A session refresh without an offer (RFC 3311); an offer in UPDATE is not taken.
            Method::Update if !req.body.is_empty() => {
                self.reply(now, id, &req, 488, "Not Acceptable Here")
            }
            Method::Update => {
                let mut r = Response::for_request(&req, 200, "OK");
                r.headers.push("Contact", contact);
                if let Some((name, value)) = self.refreshed_by_peer(now, call, &req) {
                    r.headers.push(&name, value);
                }
                r.headers.push("Content-Length", "0");
                let _ = self.endpoint.send_response(now, id, r);
            }
            Method::Info => {
                self.reply(now, id, &req, 200, "OK");
                self.events.push_back(UaEvent::Info {
                    call,
                    body: Body::of(&req.headers, &req.body),
                });
            }
            Method::Prack => self.on_prack(now, id, call, &req),
            Method::Notify => self.on_notify(now, id, call, &req),
            Method::Refer => self.on_peer_refer(now, id, call, &req),
            Method::Other(_) => self.reply(now, id, &req, 501, "Not Implemented"),
            _ => self.reply(now, id, &req, 405, "Method Not Allowed"),
        }
    }
}

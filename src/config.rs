//! The configuration file: one TOML document, every key documented in `config/dialbridge.toml`.
//!
//! Parsing and validation happen together: a value of the wrong shape fails while it is deserialized,
//! so each error names the key path and the line it came from. The service never starts on a bad file.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use dialbridge_bridge::opus_codec::{OpusConfig, PHONE_COMPLEXITY};
use dialbridge_sip::auth::Algorithm;
use serde::de::{self, Deserializer};
use serde::Deserialize;

use crate::money::Money;
use crate::room::PhoneNumber;

/// The default configuration, embedded so that `dialbridge serve` runs without any file.
pub const DEFAULT_CONFIG: &str = include_str!("../config/dialbridge.toml");

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub http: HttpConfig,
    #[serde(default)]
    pub sip: SipConfig,
    #[serde(default)]
    pub media: MediaConfig,
    #[serde(default)]
    pub store: StoreConfig,
    #[serde(default)]
    pub users: Vec<UserConfig>,
    #[serde(default)]
    pub trunks: Vec<TrunkConfig>,
    #[serde(default)]
    pub inbound: Vec<InboundConfig>,
    #[serde(default)]
    pub dialin: DialinConfig,
    #[serde(default)]
    pub calls: CallsConfig,
    #[serde(default)]
    pub push: PushConfig,
    #[serde(default)]
    pub links: LinksConfig,
    #[serde(default)]
    pub recording: RecordingConfig,
    #[serde(default)]
    pub organizations: Vec<OrganizationConfig>,
    #[serde(default)]
    pub projects: Vec<ProjectConfig>,
}

/// Direct calls between users (`/api/v1/direct-calls`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallsConfig {
    /// Whether users may call each other directly (a plan without one-to-one calls: false).
    #[serde(default = "default_true")]
    pub one_to_one: bool,
    /// How long a direct call rings before it counts as not answered.
    #[serde(default = "default_ring_time")]
    pub ring_time: Seconds,
}

impl Default for CallsConfig {
    fn default() -> Self {
        CallsConfig {
            one_to_one: true,
            ring_time: default_ring_time(),
        }
    }
}

fn default_ring_time() -> Seconds {
    Seconds(Duration::from_secs(30))
}

/// Ringing users' devices (`/api/v1/voice.call`) and push delivery (`/api/v1/push.token`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushConfig {
    /// How long a voice call rings before it counts as missed.
    #[serde(default = "default_ring_time")]
    pub ring_time: Seconds,
    /// The VAPID `sub` claim: how a push service reaches the operator (`mailto:` or `https:`).
    #[serde(default = "default_vapid_subject")]
    pub vapid_subject: String,
    /// One attempt at a push service may take this long.
    #[serde(default = "default_push_timeout")]
    pub timeout: Seconds,
    /// Attempts per message (a refusal other than 404/410/413, or no answer, is retried).
    #[serde(default = "default_push_attempts")]
    pub attempts: NonZeroU32,
    /// Messages in flight at once, over all push services.
    #[serde(default = "default_push_concurrency")]
    pub concurrency: NonZeroU32,
    /// How long `POST voice.call` waits for first results before it answers; deliveries still
    /// under way then show as `sent` and go on (see `voice.call.info`).
    #[serde(default = "default_push_answer_wait")]
    pub answer_wait: Seconds,
    /// Apple Push Notification service, when its token key is configured.
    #[serde(default)]
    pub apns: Option<ApnsConfig>,
    /// Firebase Cloud Messaging (HTTP v1), when a service account is configured.
    #[serde(default)]
    pub fcm: Option<FcmConfig>,
}

/// FCM HTTP v1 with a service account.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FcmConfig {
    /// The service account's JSON key file (project_id, client_email, private_key, token_uri).
    pub service_account: PathBuf,
    #[serde(default = "default_fcm_url")]
    pub url: HttpUrl,
    /// The OAuth2 token endpoint; by default the key file's `token_uri`.
    #[serde(default)]
    pub token_url: Option<HttpUrl>,
}

fn default_fcm_url() -> HttpUrl {
    HttpUrl("https://fcm.googleapis.com".to_string())
}

/// APNs with token-based (`.p8`) authentication.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApnsConfig {
    /// The `.p8` key file (PKCS#8 PEM) from the Apple developer account.
    pub key: PathBuf,
    pub key_id: String,
    pub team_id: String,
    /// The app's bundle id: alert pushes go to it, VoIP pushes to `<bundle_id>.voip`.
    pub bundle_id: String,
    /// `https://api.push.apple.com`, or `https://api.sandbox.push.apple.com` for development builds.
    #[serde(default = "default_apns_url")]
    pub url: HttpUrl,
}

fn default_apns_url() -> HttpUrl {
    HttpUrl("https://api.push.apple.com".to_string())
}

impl Default for PushConfig {
    fn default() -> Self {
        PushConfig {
            ring_time: default_ring_time(),
            vapid_subject: default_vapid_subject(),
            timeout: default_push_timeout(),
            attempts: default_push_attempts(),
            concurrency: default_push_concurrency(),
            answer_wait: default_push_answer_wait(),
            apns: None,
            fcm: None,
        }
    }
}

fn default_vapid_subject() -> String {
    "mailto:admin@localhost".to_string()
}

fn default_push_timeout() -> Seconds {
    Seconds(Duration::from_secs(10))
}

fn default_push_attempts() -> NonZeroU32 {
    NonZeroU32::MIN.saturating_add(2)
}

fn default_push_concurrency() -> NonZeroU32 {
    NonZeroU32::MIN.saturating_add(31)
}

fn default_push_answer_wait() -> Seconds {
    Seconds(Duration::from_millis(500))
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    #[serde(default = "default_http_listen")]
    pub listen: SocketAddr,
    /// Base URL clients reach the API at (used in `Location` headers). Defaults to `http://{listen}`.
    #[serde(default)]
    pub public_url: Option<HttpUrl>,
    /// A request's headers must arrive within this, counted from its first byte (or from the
    /// connection's start for its first request).
    #[serde(default = "default_header_timeout")]
    pub header_timeout: Seconds,
    /// A request's body must arrive within this, counted from the end of its headers.
    #[serde(default = "default_body_timeout")]
    pub body_timeout: Seconds,
    /// A keep-alive connection with no request in progress is closed after this.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout: Seconds,
    /// Connections served at once; the service lowers it to half its open-file limit.
    #[serde(default = "default_max_connections")]
    pub max_connections: NonZeroU32,
    /// Connections served at once for one source address (an IPv6 /64 counts as one).
    #[serde(default = "default_max_connections_per_source")]
    pub max_connections_per_source: NonZeroU32,
    /// Failed authentications per minute from one source before its requests are refused with 429.
    #[serde(default = "default_http_auth_failures")]
    pub auth_failures_per_minute: NonZeroU32,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: default_http_listen(),
            public_url: None,
            header_timeout: default_header_timeout(),
            body_timeout: default_body_timeout(),
            idle_timeout: default_idle_timeout(),
            max_connections: default_max_connections(),
            max_connections_per_source: default_max_connections_per_source(),
            auth_failures_per_minute: default_http_auth_failures(),
        }
    }
}

fn default_header_timeout() -> Seconds {
    Seconds(Duration::from_secs(10))
}

fn default_body_timeout() -> Seconds {
    Seconds(Duration::from_secs(30))
}

fn default_idle_timeout() -> Seconds {
    Seconds(Duration::from_secs(60))
}

fn default_max_connections() -> NonZeroU32 {
    NonZeroU32::new(4096).unwrap_or(NonZeroU32::MIN)
}

fn default_max_connections_per_source() -> NonZeroU32 {
    NonZeroU32::new(256).unwrap_or(NonZeroU32::MIN)
}

fn default_http_auth_failures() -> NonZeroU32 {
    NonZeroU32::new(30).unwrap_or(NonZeroU32::MIN)
}

fn default_http_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SipConfig {
    #[serde(default = "default_sip_listen")]
    pub listen: Vec<SipListen>,
    /// Refused INVITEs (source not allowed, scanner) get no answer at all instead of 403.
    #[serde(default)]
    pub silent_reject: bool,
    /// Sent as `Server` and `User-Agent`; without it neither header is sent, so scanners cannot
    /// tell the product from its answers.
    #[serde(default)]
    pub user_agent: Option<String>,
    /// RFC 3261 T1, the round-trip estimate: UDP retransmissions start at T1 and a request
    /// with no answer times out after 64*T1 (32 s at the default 500 ms).
    #[serde(default)]
    pub t1: Option<Seconds>,
    /// Session timers (RFC 4028) on calls; on by default.
    #[serde(default = "default_true")]
    pub session_timers: bool,
    /// The session interval our INVITEs ask for.
    #[serde(default = "default_session_expires")]
    pub session_expires: Seconds,
    /// The smallest session interval accepted (Min-SE): shorter ones get 422.
    #[serde(default = "default_min_se")]
    pub min_se: Seconds,
    /// PEM certificate chain served on `tls:` listen addresses.
    #[serde(default)]
    pub tls_certificate: Option<PathBuf>,
    /// PEM private key of `tls_certificate`.
    #[serde(default)]
    pub tls_private_key: Option<PathBuf>,
    /// Name servers (`IP:PORT`) asked for trunk host names; empty: the system's
    /// (`/etc/resolv.conf`).
    #[serde(default)]
    pub dns_servers: Vec<std::net::SocketAddr>,
}

fn default_true() -> bool {
    true
}

fn default_session_expires() -> Seconds {
    Seconds(Duration::from_secs(1800))
}

fn default_min_se() -> Seconds {
    Seconds(Duration::from_secs(90))
}

impl Default for SipConfig {
    fn default() -> Self {
        SipConfig {
            listen: default_sip_listen(),
            silent_reject: false,
            user_agent: None,
            t1: None,
            session_timers: true,
            session_expires: default_session_expires(),
            min_se: default_min_se(),
            tls_certificate: None,
            tls_private_key: None,
            dns_servers: Vec::new(),
        }
    }
}

impl SipConfig {
    /// The session timers of the user agent; none when `session_timers = false`.
    pub fn session_timer(&self) -> Option<dialbridge_sip::ua::SessionTimerConfig> {
        self.session_timers
            .then_some(dialbridge_sip::ua::SessionTimerConfig {
                expires: self.session_expires.0,
                min_se: self.min_se.0,
            })
    }

    /// The SIP timers, with `t1` applied.
    pub fn timers(&self) -> dialbridge_sip::endpoint::Timers {
        let mut timers = dialbridge_sip::endpoint::Timers::default();
        if let Some(t1) = self.t1 {
            timers.t1 = t1.0;
        }
        timers
    }
}

fn default_sip_listen() -> Vec<SipListen> {
    let addr = SocketAddr::from(([127, 0, 0, 1], 5060));
    vec![
        SipListen {
            transport: Transport::Udp,
            addr,
        },
        SipListen {
            transport: Transport::Tcp,
            addr,
        },
    ]
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MediaConfig {
    #[serde(default = "default_rtp_ports")]
    pub rtp_ports: PortRange,
    #[serde(default = "default_webrtc_listen")]
    pub webrtc_listen: SocketAddr,
    /// Address announced in SDP when the listen addresses are not reachable as they are (NAT).
    #[serde(default)]
    pub public_ip: Option<IpAddr>,
    /// Media threads rooms are spread over; 0 = one per available core.
    #[serde(default)]
    pub threads: usize,
    /// Opus encoders towards WebRTC participants.
    #[serde(default)]
    pub opus: OpusSettings,
    /// Participants of one room whose camera is forwarded; later joins are audio-only
    /// (0: no video at all).
    #[serde(default = "default_max_video_senders")]
    pub max_video_senders: usize,
}

fn default_max_video_senders() -> usize {
    4
}

/// `[media.opus]`: how audio is encoded for WebRTC participants. Keys left out take the
/// bridge's voice defaults (`OpusConfig::default`, `PHONE_COMPLEXITY`).
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OpusSettings {
    /// 0-10 for a room's mixed audio (48 kHz).
    pub complexity: i32,
    /// 0-10 for a phone's audio sent on to the browser of a two-party room (8 kHz): the bulk
    /// of a bridged call's cost, see docs/decisions.md.
    pub phone_complexity: i32,
    /// Target bit/s.
    pub bitrate: i32,
    /// In-band FEC, planned for `expected_loss` percent loss.
    pub fec: bool,
    pub expected_loss: i32,
    /// Discontinuous transmission: next to nothing is sent during silence.
    pub dtx: bool,
}

impl Default for OpusSettings {
    fn default() -> Self {
        let voice = OpusConfig::default();
        OpusSettings {
            complexity: voice.complexity,
            phone_complexity: PHONE_COMPLEXITY,
            bitrate: voice.bitrate,
            fec: voice.fec,
            expected_loss: voice.expected_loss_percent,
            dtx: voice.dtx,
        }
    }
}

impl OpusSettings {
    fn check(&self) -> Result<(), (String, String)> {
        for (key, value) in [
            ("complexity", self.complexity),
            ("phone_complexity", self.phone_complexity),
        ] {
            if !(0..=10).contains(&value) {
                return Err((format!("media.opus.{key}"), "must be 0 to 10".into()));
            }
        }
        // libopus' own limits.
        if !(6_000..=510_000).contains(&self.bitrate) {
            return Err((
                "media.opus.bitrate".into(),
                "must be 6000 to 510000 bit/s".into(),
            ));
        }
        if !(0..=100).contains(&self.expected_loss) {
            return Err((
                "media.opus.expected_loss".into(),
                "must be 0 to 100 (percent)".into(),
            ));
        }
        Ok(())
    }
}

/// More media threads than this is a typo, not a machine.
const MAX_MEDIA_THREADS: usize = 256;

impl MediaConfig {
    /// The number of media threads: `threads`, or one per available core when 0.
    pub fn media_threads(&self) -> usize {
        match self.threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }
}

impl Default for MediaConfig {
    fn default() -> Self {
        MediaConfig {
            rtp_ports: default_rtp_ports(),
            webrtc_listen: default_webrtc_listen(),
            public_ip: None,
            threads: 0,
            opus: OpusSettings::default(),
            max_video_senders: default_max_video_senders(),
        }
    }
}

fn default_rtp_ports() -> PortRange {
    PortRange {
        first: 20000,
        last: 20999,
    }
}

fn default_webrtc_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 10000))
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    #[serde(default = "default_store_path")]
    pub path: PathBuf,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            path: default_store_path(),
        }
    }
}

fn default_store_path() -> PathBuf {
    PathBuf::from("dialbridge.sqlite")
}

/// A user declared in the file (demos, tests). The plain token is hashed at load; only the hash is stored.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    pub id: UserId,
    #[serde(default)]
    pub display_name: Option<String>,
    pub token: Token,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrunkConfig {
    pub name: String,
    pub address: HostPort,
    #[serde(default = "udp", deserialize_with = "deserialize_transport")]
    pub transport: Transport,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub realm: Option<String>,
    #[serde(default)]
    pub caller_id: Option<PhoneNumber>,
    #[serde(default)]
    pub from_domain: Option<String>,
    /// Numbers this trunk may dial; a number that matches no trunk is never dialled.
    #[serde(default)]
    pub allowed_numbers: Vec<NumberPattern>,
    /// 0 means no limit.
    #[serde(default)]
    pub max_concurrent_calls: u32,
    /// 0 means no limit.
    #[serde(default)]
    pub calls_per_second: f64,
    #[serde(default = "default_ringing_timeout")]
    pub ringing_timeout: Seconds,
    #[serde(default = "default_max_call_duration")]
    pub max_call_duration: Seconds,
    #[serde(default = "default_media_timeout")]
    pub media_timeout: Seconds,
    /// Price of one answered minute through this trunk, charged to a call link's organization.
    #[serde(default)]
    pub price_per_minute: Money,
    /// Register at the trunk (RFC 3261 section 10) with the trunk's credentials while the
    /// service runs, and take the calls it sends to that registration.
    #[serde(default)]
    pub register: bool,
    /// The expiry asked for in each REGISTER (the registrar may grant less).
    #[serde(default = "default_register_expires")]
    pub register_expires: Seconds,
    /// The first wait after a failed registration; it doubles with each failure in a row, up to
    /// `register_retry_max`.
    #[serde(default = "default_register_retry")]
    pub register_retry: Seconds,
    #[serde(default = "default_register_retry_max")]
    pub register_retry_max: Seconds,
    /// With `transport = "tls"`: a PEM file of the CAs to trust for this trunk instead of the
    /// system's roots (private PKIs, labs). The certificate must still name the trunk's host.
    #[serde(default)]
    pub tls_ca: Option<PathBuf>,
    /// SRTP with SDES keys (RFC 4568) on the calls through this trunk.
    #[serde(default)]
    pub srtp: Srtp,
    /// Whether the far end may transfer us (REFER): without it a REFER is refused 403; with it
    /// the gateway calls the Refer-To number through this trunk and the new call takes the
    /// transferring phone's place in its room.
    #[serde(default)]
    pub allow_refer: bool,
}

impl TrunkConfig {
    /// A URI at this trunk for `user_host` (`number@host:port`, or a domain): `sips:` over TLS
    /// (RFC 5630), `;transport=tcp` over TCP.
    pub fn uri(&self, user_host: &str) -> String {
        match self.transport {
            Transport::Tls => format!("sips:{user_host}"),
            Transport::Tcp => format!("sip:{user_host};transport=tcp"),
            Transport::Udp => format!("sip:{user_host}"),
        }
    }

    /// Whether `number` matches one of the trunk's `allowed_numbers`.
    pub fn may_dial(&self, number: &str) -> bool {
        self.allowed_numbers.iter().any(|p| p.matches(number))
    }

    /// The URI of `number` at this trunk: a dial-out's Request-URI, a transfer's Refer-To.
    pub fn number_uri(&self, number: &str) -> String {
        self.uri(&format!("{number}@{}", self.address))
    }
}

fn default_register_expires() -> Seconds {
    Seconds(Duration::from_secs(3600))
}

fn default_register_retry() -> Seconds {
    Seconds(Duration::from_secs(30))
}

fn default_register_retry_max() -> Seconds {
    Seconds(Duration::from_secs(1800))
}

fn default_ringing_timeout() -> Seconds {
    Seconds(Duration::from_secs(60))
}

fn default_max_call_duration() -> Seconds {
    Seconds(Duration::from_secs(4 * 3600))
}

fn default_media_timeout() -> Seconds {
    Seconds(Duration::from_secs(30))
}

/// Call links (`/api/calls`): how often their clocks are checked, the defaults of new projects,
/// and webhook deliveries.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinksConfig {
    /// How often expiry, empty calls and spend limits of running calls are checked.
    #[serde(default = "default_links_check_interval")]
    pub check_interval: Seconds,
    /// How long a link lives without `expiresAt`, for projects that do not say.
    #[serde(default = "default_link_lifetime")]
    pub link_lifetime: Seconds,
    /// How long a started call may stay empty before it ends, for projects that do not say.
    #[serde(default = "default_empty_timeout")]
    pub empty_timeout: Seconds,
    /// How long before `expiresAt` a running call's participants are warned (`call-expiring`).
    #[serde(default = "default_expiry_warning")]
    pub expiry_warning: Seconds,
    /// How much running time each start (a link, a join, a dial-out) must find room for in its
    /// organization's budget.
    #[serde(default = "default_commitment")]
    pub commitment: Seconds,
    /// The first retry of a failed webhook delivery; each further one waits twice as long.
    #[serde(default = "default_webhook_retry")]
    pub webhook_retry: Seconds,
    /// Retries are never further apart than this.
    #[serde(default = "default_webhook_max_retry")]
    pub webhook_max_retry: Seconds,
    /// Deliveries tried per event before it is dropped (and logged).
    #[serde(default = "default_webhook_attempts")]
    pub webhook_attempts: NonZeroU32,
    /// A receiver must answer within this.
    #[serde(default = "default_webhook_timeout")]
    pub webhook_timeout: Seconds,
}

impl Default for LinksConfig {
    fn default() -> Self {
        LinksConfig {
            check_interval: default_links_check_interval(),
            link_lifetime: default_link_lifetime(),
            empty_timeout: default_empty_timeout(),
            commitment: default_commitment(),
            expiry_warning: default_expiry_warning(),
            webhook_retry: default_webhook_retry(),
            webhook_max_retry: default_webhook_max_retry(),
            webhook_attempts: default_webhook_attempts(),
            webhook_timeout: default_webhook_timeout(),
        }
    }
}

fn default_links_check_interval() -> Seconds {
    Seconds(Duration::from_secs(5))
}

fn default_link_lifetime() -> Seconds {
    Seconds(Duration::from_secs(24 * 3600))
}

fn default_empty_timeout() -> Seconds {
    Seconds(Duration::from_secs(300))
}

fn default_expiry_warning() -> Seconds {
    Seconds(Duration::from_secs(60))
}

fn default_commitment() -> Seconds {
    Seconds(Duration::from_secs(60))
}

fn default_webhook_retry() -> Seconds {
    Seconds(Duration::from_secs(5))
}

fn default_webhook_max_retry() -> Seconds {
    Seconds(Duration::from_secs(3600))
}

fn default_webhook_attempts() -> NonZeroU32 {
    NonZeroU32::new(20).unwrap_or(NonZeroU32::MIN)
}

fn default_webhook_timeout() -> Seconds {
    Seconds(Duration::from_secs(10))
}

/// Where call recordings are written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordingConfig {
    /// A directory (created if missing); relative paths are relative to the working directory.
    #[serde(default = "default_recording_path")]
    pub path: PathBuf,
}

impl Default for RecordingConfig {
    fn default() -> Self {
        RecordingConfig {
            path: default_recording_path(),
        }
    }
}

fn default_recording_path() -> PathBuf {
    PathBuf::from("recordings")
}

/// An organization declared in the file (demos, tests), as `dialbridge org add` makes one.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrganizationConfig {
    pub name: Name,
    /// Whether it has a subscription; without one no link can be created.
    #[serde(default = "default_true")]
    pub subscribed: bool,
    /// Price of one participant-minute.
    #[serde(default)]
    pub price_per_minute: Money,
    /// The month's spending cap; absent means none.
    #[serde(default)]
    pub spend_limit: Option<Money>,
    #[serde(default = "default_true")]
    pub one_to_one: bool,
    #[serde(default = "default_true")]
    pub recording: bool,
    #[serde(default = "default_true")]
    pub dialout: bool,
}

/// A project declared in the file, with its API tokens (hashed at load; only hashes are stored).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectConfig {
    pub name: Name,
    pub organization: Name,
    #[serde(default)]
    pub tokens: Vec<Token>,
    #[serde(default)]
    pub enable_recording: bool,
    #[serde(default)]
    pub webhook_url: Option<HttpUrl>,
    #[serde(default)]
    pub webhook_secret: Option<String>,
    #[serde(default)]
    pub link_lifetime: Option<Seconds>,
    #[serde(default)]
    pub empty_timeout: Option<Seconds>,
}

/// A trunk that may deliver inbound calls (dial-in).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InboundConfig {
    pub name: String,
    /// Source addresses the trunk sends from; an INVITE from anywhere else is refused.
    pub allowed_sources: Vec<IpNet>,
    /// The one transport its calls may come over (e.g. `tls`); any when unset.
    #[serde(default, deserialize_with = "deserialize_some_transport")]
    pub transport: Option<Transport>,
    /// Digest credentials the trunk must present (407 challenge); both or neither.
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    /// Dialled numbers the trunk serves; empty means any number.
    #[serde(default)]
    pub numbers: Vec<PhoneNumber>,
    /// 0 means no limit.
    #[serde(default)]
    pub max_concurrent_calls: u32,
    /// A joined caller is hung up after this long (cause `max-duration`).
    #[serde(default = "default_max_call_duration")]
    pub max_call_duration: Seconds,
    /// A caller whose RTP stops for this long is hung up (cause `media-timeout`).
    #[serde(default = "default_media_timeout")]
    pub media_timeout: Seconds,
}

/// How inbound calls find rooms and how callers are treated on the way.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DialinConfig {
    /// The shared number callers dial to enter a room's PIN.
    #[serde(default)]
    pub pin_number: Option<PhoneNumber>,
    #[serde(default = "default_pin_attempts")]
    pub pin_attempts: u32,
    /// Longest pause between two PIN digits.
    #[serde(default = "default_digit_timeout")]
    pub digit_timeout: Seconds,
    /// How long a caller waits for a room's call to start (rooms that let callers wait).
    #[serde(default = "default_wait_for_call")]
    pub wait_for_call: Seconds,
    /// Realm of the digest challenges sent to inbound trunks.
    #[serde(default = "default_realm")]
    pub realm: String,
    /// Lifetime of a challenge nonce; an older one is answered with stale=true.
    #[serde(default = "default_nonce_lifetime")]
    pub nonce_lifetime: Seconds,
    /// Digest algorithms offered in 407 challenges, most preferred first (RFC 8760).
    #[serde(default = "default_digest_algorithms")]
    pub digest_algorithms: Vec<DigestAlgorithm>,
    /// INVITEs per second accepted from one source address (sustained), and the burst above it.
    #[serde(default = "default_invite_rate")]
    pub invites_per_second: f64,
    #[serde(default = "default_invite_burst")]
    pub invite_burst: u32,
    /// Failed digest authentications per minute from one source before it is refused outright.
    #[serde(default = "default_auth_failures")]
    pub auth_failures_per_minute: u32,
    /// INVITEs to numbers that lead nowhere (404) per minute from one source; past it the source
    /// counts as a scanner and every INVITE from it is refused (403, or silence with
    /// `silent_reject`) until it stops probing.
    #[serde(default = "default_unknown_numbers")]
    pub unknown_numbers_per_minute: u32,
    /// Numbers routed to rooms by configuration (in addition to numbers set through the API).
    #[serde(default)]
    pub routes: Vec<DialinRoute>,
}

impl Default for DialinConfig {
    fn default() -> Self {
        DialinConfig {
            pin_number: None,
            pin_attempts: default_pin_attempts(),
            digit_timeout: default_digit_timeout(),
            wait_for_call: default_wait_for_call(),
            realm: default_realm(),
            nonce_lifetime: default_nonce_lifetime(),
            digest_algorithms: default_digest_algorithms(),
            invites_per_second: default_invite_rate(),
            invite_burst: default_invite_burst(),
            auth_failures_per_minute: default_auth_failures(),
            unknown_numbers_per_minute: default_unknown_numbers(),
            routes: Vec::new(),
        }
    }
}

fn default_pin_attempts() -> u32 {
    3
}

fn default_digit_timeout() -> Seconds {
    Seconds(Duration::from_secs(10))
}

fn default_wait_for_call() -> Seconds {
    Seconds(Duration::from_secs(300))
}

fn default_realm() -> String {
    "dialbridge".to_string()
}

fn default_nonce_lifetime() -> Seconds {
    Seconds(Duration::from_secs(300))
}

fn default_digest_algorithms() -> Vec<DigestAlgorithm> {
    vec![
        DigestAlgorithm(Algorithm::Sha256),
        DigestAlgorithm(Algorithm::Md5),
    ]
}

fn default_invite_rate() -> f64 {
    5.0
}

fn default_invite_burst() -> u32 {
    20
}

fn default_auth_failures() -> u32 {
    10
}

fn default_unknown_numbers() -> u32 {
    10
}

/// A number that leads to a room.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DialinRoute {
    pub number: PhoneNumber,
    /// The room's token.
    pub room: String,
}

/// Everything that can be wrong with a configuration file, in words an operator can act on.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{origin}: line {line}: key `{key}`: {message}")]
    Invalid {
        origin: String,
        line: usize,
        key: String,
        message: String,
    },
    #[error("{origin}: line {line}: {message}")]
    Syntax {
        origin: String,
        line: usize,
        message: String,
    },
}

impl Config {
    /// Loads the file at `path`, or the embedded default when `path` is `None`.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                })?;
                Config::parse(&text, &path.display().to_string())
            }
            None => Config::parse(DEFAULT_CONFIG, "embedded default configuration"),
        }
    }

    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let line_of = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
        let deserializer = toml::Deserializer::parse(text).map_err(|e| ConfigError::Syntax {
            origin: origin.to_string(),
            line: e.span().map(|s| line_of(s.start)).unwrap_or(1),
            message: e.message().to_string(),
        })?;
        let config: Config = serde_path_to_error::deserialize(deserializer).map_err(|e| {
            let key = e.path().to_string();
            let inner = e.into_inner();
            ConfigError::Invalid {
                origin: origin.to_string(),
                line: inner.span().map(|s| line_of(s.start)).unwrap_or(1),
                key,
                message: inner.message().to_string(),
            }
        })?;
        config.check_consistency().map_err(|(key, message)| {
            // Cross-key problems are found after parsing; point at the key's first mention.
            let needle = key.rsplit('.').next().unwrap_or(&key).to_string();
            let line = text
                .lines()
                .position(|l| l.trim_start().starts_with(&needle))
                .map(|i| i + 1)
                .unwrap_or(1);
            ConfigError::Invalid {
                origin: origin.to_string(),
                line,
                key,
                message,
            }
        })?;
        Ok(config)
    }

    /// Rules that span several keys.
    fn check_consistency(&self) -> Result<(), (String, String)> {
        if self.media.webrtc_listen.ip().is_unspecified() && self.media.public_ip.is_none() {
            return Err((
                "media.webrtc_listen".into(),
                "a wildcard address cannot be announced to WebRTC peers: set media.public_ip"
                    .into(),
            ));
        }
        if self.media.threads > MAX_MEDIA_THREADS {
            return Err((
                "media.threads".into(),
                format!("at most {MAX_MEDIA_THREADS} media threads (0 = one per core)"),
            ));
        }
        self.media.opus.check()?;
        if self.sip.listen.is_empty() {
            return Err((
                "sip.listen".into(),
                "at least one listen address is needed".into(),
            ));
        }
        if let Some(t1) = self.sip.t1 {
            // T2 (4 s) caps the retransmission interval; a larger T1 would exceed it.
            if t1.0 > self.sip.timers().t2 {
                return Err((
                    "sip.t1".into(),
                    "must be at most 4s (T2); the RFC 3261 default is 500ms".into(),
                ));
            }
        }
        if self.sip.session_timers {
            if self.sip.min_se.0 < Duration::from_secs(1) {
                return Err(("sip.min_se".into(), "must be at least 1 second".into()));
            }
            if self.sip.session_expires.0 < self.sip.min_se.0 {
                return Err((
                    "sip.session_expires".into(),
                    "must be at least min_se".into(),
                ));
            }
        }
        let serves_tls = self
            .sip
            .listen
            .iter()
            .any(|l| l.transport == Transport::Tls);
        if self.sip.tls_certificate.is_some() != self.sip.tls_private_key.is_some() {
            return Err((
                "sip.tls_private_key".into(),
                "tls_certificate and tls_private_key go together: set both or neither".into(),
            ));
        }
        if serves_tls && self.sip.tls_certificate.is_none() {
            return Err((
                "sip.listen".into(),
                "a tls: listen address needs sip.tls_certificate and sip.tls_private_key".into(),
            ));
        }
        for (i, user) in self.users.iter().enumerate() {
            if self.users[..i].iter().any(|u| u.id.0 == user.id.0) {
                return Err((
                    format!("users[{i}].id"),
                    format!("user `{}` is declared twice", user.id.0),
                ));
            }
        }
        for (i, trunk) in self.trunks.iter().enumerate() {
            if trunk.name.trim().is_empty() {
                return Err((format!("trunks[{i}].name"), "must not be empty".into()));
            }
            if self.trunks[..i].iter().any(|t| t.name == trunk.name) {
                return Err((
                    format!("trunks[{i}].name"),
                    format!("trunk `{}` is declared twice", trunk.name),
                ));
            }
            if trunk.username.is_some() != trunk.password.is_some() {
                return Err((
                    format!("trunks[{i}].password"),
                    "username and password go together: set both or neither".into(),
                ));
            }
            // Connections are reused per address, so the trust of the first would serve both.
            if trunk.transport == Transport::Tls
                && self.trunks[..i].iter().any(|t| {
                    t.transport == Transport::Tls
                        && t.address == trunk.address
                        && t.tls_ca != trunk.tls_ca
                })
            {
                return Err((
                    format!("trunks[{i}].tls_ca"),
                    format!(
                        "another TLS trunk at {} trusts other CAs: trunks at one address share \
                         their TLS connections, so they must share tls_ca",
                        trunk.address
                    ),
                ));
            }
            if trunk.tls_ca.is_some() && trunk.transport != Transport::Tls {
                return Err((
                    format!("trunks[{i}].tls_ca"),
                    "only a trunk with transport = \"tls\" uses tls_ca".into(),
                ));
            }
            if !(trunk.calls_per_second.is_finite() && trunk.calls_per_second >= 0.0) {
                return Err((
                    format!("trunks[{i}].calls_per_second"),
                    "must be a number >= 0 (0 means no limit)".into(),
                ));
            }
            if trunk.register {
                if trunk.register_expires.0 < Duration::from_secs(1) {
                    return Err((
                        format!("trunks[{i}].register_expires"),
                        "must be at least 1 second".into(),
                    ));
                }
                if trunk.register_retry.0 < Duration::from_secs(1) {
                    return Err((
                        format!("trunks[{i}].register_retry"),
                        "must be at least 1 second".into(),
                    ));
                }
                if trunk.register_retry_max.0 < trunk.register_retry.0 {
                    return Err((
                        format!("trunks[{i}].register_retry_max"),
                        "must be at least register_retry".into(),
                    ));
                }
                if trunk
                    .address
                    .host
                    .trim_matches(['[', ']'])
                    .parse::<IpAddr>()
                    .is_err()
                {
                    return Err((
                        format!("trunks[{i}].address"),
                        "a trunk with register = true needs an IP address: the calls it sends \
                         on the registration are admitted from that address"
                            .into(),
                    ));
                }
                if self.inbound.iter().any(|t| t.name == trunk.name) {
                    return Err((
                        format!("trunks[{i}].name"),
                        format!(
                            "trunk `{}` registers, so it is an inbound trunk too: \
                             an [[inbound]] of the same name would be a second one",
                            trunk.name
                        ),
                    ));
                }
            }
        }
        for (i, trunk) in self.inbound.iter().enumerate() {
            if trunk.name.trim().is_empty() {
                return Err((format!("inbound[{i}].name"), "must not be empty".into()));
            }
            if self.inbound[..i].iter().any(|t| t.name == trunk.name) {
                return Err((
                    format!("inbound[{i}].name"),
                    format!("inbound trunk `{}` is declared twice", trunk.name),
                ));
            }
            if trunk.allowed_sources.is_empty() {
                return Err((
                    format!("inbound[{i}].allowed_sources"),
                    "list at least one address or network the trunk sends from".into(),
                ));
            }
            if trunk.username.is_some() != trunk.password.is_some() {
                return Err((
                    format!("inbound[{i}].password"),
                    "username and password go together: set both or neither".into(),
                ));
            }
        }
        for (i, org) in self.organizations.iter().enumerate() {
            if self.organizations[..i].iter().any(|o| o.name == org.name) {
                return Err((
                    format!("organizations[{i}].name"),
                    format!("organization `{}` is declared twice", org.name.0),
                ));
            }
        }
        for (i, project) in self.projects.iter().enumerate() {
            if self.projects[..i].iter().any(|p| p.name == project.name) {
                return Err((
                    format!("projects[{i}].name"),
                    format!("project `{}` is declared twice", project.name.0),
                ));
            }
            if !self
                .organizations
                .iter()
                .any(|o| o.name == project.organization)
            {
                return Err((
                    format!("projects[{i}].organization"),
                    format!(
                        "no organization `{}` is declared in [[organizations]]",
                        project.organization.0
                    ),
                ));
            }
            if project.webhook_url.is_some() && project.webhook_secret.is_none() {
                return Err((
                    format!("projects[{i}].webhook_secret"),
                    "a webhook needs a secret to sign its deliveries".into(),
                ));
            }
        }
        let dialin = &self.dialin;
        if dialin.pin_attempts == 0 {
            return Err(("dialin.pin_attempts".into(), "must be at least 1".into()));
        }
        if !(dialin.invites_per_second.is_finite() && dialin.invites_per_second > 0.0) {
            return Err((
                "dialin.invites_per_second".into(),
                "must be a number > 0".into(),
            ));
        }
        if dialin.invite_burst == 0 {
            return Err(("dialin.invite_burst".into(), "must be at least 1".into()));
        }
        if dialin.auth_failures_per_minute == 0 {
            return Err((
                "dialin.auth_failures_per_minute".into(),
                "must be at least 1".into(),
            ));
        }
        if dialin.realm.is_empty() || dialin.realm.contains(['"', '\\']) {
            return Err((
                "dialin.realm".into(),
                "must be non-empty text without quotes or backslashes".into(),
            ));
        }
        if dialin.digest_algorithms.is_empty() {
            return Err((
                "dialin.digest_algorithms".into(),
                "offer at least one of \"SHA-256\" and \"MD5\"".into(),
            ));
        }
        for (i, a) in dialin.digest_algorithms.iter().enumerate() {
            if dialin.digest_algorithms[..i].contains(a) {
                return Err((
                    format!("dialin.digest_algorithms[{i}]"),
                    format!("{} is listed twice", a.0),
                ));
            }
        }
        for (i, route) in dialin.routes.iter().enumerate() {
            let taken = dialin.routes[..i].iter().any(|r| r.number == route.number)
                || dialin.pin_number.as_ref() == Some(&route.number);
            if taken {
                return Err((
                    format!("dialin.routes[{i}].number"),
                    format!("number {} is routed twice", route.number),
                ));
            }
        }
        Ok(())
    }

    /// The base URL clients use, without a trailing slash.
    /// The trunks inbound calls may come from: every `[[inbound]]`, then each trunk with
    /// `register = true`, from its address, for any number, without a digest challenge (we
    /// authenticated to it; it delivers calls to our registration).
    pub fn inbound_trunks(&self) -> Vec<InboundConfig> {
        let registered = self.trunks.iter().filter(|t| t.register).filter_map(|t| {
            let addr = t.address.host.trim_matches(['[', ']']).parse().ok()?;
            let prefix = if matches!(addr, IpAddr::V4(_)) {
                32
            } else {
                128
            };
            Some(InboundConfig {
                name: t.name.clone(),
                allowed_sources: vec![IpNet { addr, prefix }],
                transport: None,
                username: None,
                password: None,
                numbers: Vec::new(),
                max_concurrent_calls: t.max_concurrent_calls,
                max_call_duration: t.max_call_duration,
                media_timeout: t.media_timeout,
            })
        });
        self.inbound.iter().cloned().chain(registered).collect()
    }

    pub fn public_url(&self) -> String {
        match &self.http.public_url {
            Some(url) => url.0.trim_end_matches('/').to_string(),
            None => format!("http://{}", self.http.listen),
        }
    }
}

/// Implements `Deserialize` through `FromStr`, so a bad value fails with its own message at its own span.
macro_rules! deserialize_from_str {
    ($ty:ty, $expecting:literal) => {
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct Visitor;
                impl de::Visitor<'_> for Visitor {
                    type Value = $ty;
                    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                        f.write_str($expecting)
                    }
                    fn visit_str<E: de::Error>(self, value: &str) -> Result<$ty, E> {
                        value.parse().map_err(E::custom)
                    }
                }
                deserializer.deserialize_str(Visitor)
            }
        }
    };
}

/// The SIP core's transport; the configuration writes `udp`, `tcp` or `tls`.
pub use dialbridge_sip::transport::Transport;

const TRANSPORTS: &[&str] = &["udp", "tcp", "tls"];

fn parse_transport(s: &str) -> Option<Transport> {
    [Transport::Udp, Transport::Tcp, Transport::Tls]
        .into_iter()
        .find(|t| t.name() == s)
}

fn deserialize_some_transport<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Transport>, D::Error> {
    deserialize_transport(deserializer).map(Some)
}

fn udp() -> Transport {
    Transport::Udp
}

fn deserialize_transport<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Transport, D::Error> {
    let name = String::deserialize(deserializer)?;
    parse_transport(&name).ok_or_else(|| de::Error::unknown_variant(&name, TRANSPORTS))
}

/// A SIP listen address written `udp:127.0.0.1:5060`, `tcp:[::1]:5060` or `tls:127.0.0.1:5061`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SipListen {
    pub transport: Transport,
    pub addr: SocketAddr,
}

impl FromStr for SipListen {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (transport, addr) = s.split_once(':').ok_or_else(|| {
            format!("`{s}` is not of the form `udp:IP:PORT`, `tcp:IP:PORT` or `tls:IP:PORT`")
        })?;
        let transport = parse_transport(transport)
            .ok_or_else(|| format!("unknown transport `{transport}` (use udp, tcp or tls)"))?;
        let addr = addr
            .parse()
            .map_err(|_| format!("`{addr}` is not an IP:PORT socket address"))?;
        Ok(SipListen { transport, addr })
    }
}
deserialize_from_str!(
    SipListen,
    "a SIP listen address like \"udp:127.0.0.1:5060\""
);

impl fmt::Display for SipListen {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{}:{}", self.transport.name(), self.addr)
    }
}

/// `srtp = "required" | "optional" | "off"` of a trunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Srtp(pub dialbridge_sip::sdp::SrtpPolicy);

impl FromStr for Srtp {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        use dialbridge_sip::sdp::SrtpPolicy;
        match s {
            "required" => Ok(Srtp(SrtpPolicy::Required)),
            "optional" => Ok(Srtp(SrtpPolicy::Optional)),
            "off" => Ok(Srtp(SrtpPolicy::Off)),
            _ => Err(format!(
                "`{s}` is not an SRTP mode: use \"required\", \"optional\" or \"off\""
            )),
        }
    }
}
deserialize_from_str!(Srtp, "\"required\", \"optional\" or \"off\"");

/// An inclusive UDP port range written `20000-20999`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl FromStr for PortRange {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (first, last) = s
            .split_once('-')
            .ok_or_else(|| format!("`{s}` is not a range like \"20000-20999\""))?;
        let port = |p: &str| {
            p.trim()
                .parse::<u16>()
                .ok()
                .filter(|p| *p >= 1024)
                .ok_or_else(|| format!("`{p}` is not a port number between 1024 and 65535"))
        };
        let (first, last) = (port(first)?, port(last)?);
        // RTP takes an even port and RTCP the odd one above it, so a range needs at least one pair.
        if last <= first {
            return Err(format!(
                "range `{s}` is empty or reversed: it must hold at least two ports"
            ));
        }
        Ok(PortRange { first, last })
    }
}
deserialize_from_str!(PortRange, "a port range like \"20000-20999\"");

/// `host[:port]` of a SIP peer; the host may be a name, an IPv4 or a bracketed IPv6 address.
/// A name without a port is located by NAPTR and SRV records (RFC 3263).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    pub host: String,
    pub port: Option<u16>,
}

impl HostPort {
    /// The port, or the transport's default (5060, 5061 for TLS) where none is written.
    pub fn port_or_default(&self, transport: Transport) -> u16 {
        self.port
            .unwrap_or_else(|| dialbridge_sip::locate::default_port(transport))
    }
}

impl FromStr for HostPort {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("`{s}` is not of the form host or host:port");
        let bracketed = s.starts_with('[');
        let (host, port) = match s.rsplit_once(':') {
            // A bare IPv6 address has colons but no port: it must be bracketed.
            Some((host, port)) if !bracketed || host.ends_with(']') => {
                let port: u16 = port.parse().ok().filter(|p| *p != 0).ok_or_else(bad)?;
                (host, Some(port))
            }
            _ => (s, None),
        };
        let valid_host =
            if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
                inner.parse::<std::net::Ipv6Addr>().is_ok()
            } else {
                !host.is_empty()
                    && host
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
            };
        if !valid_host {
            return Err(format!("`{host}` is not a host name or IP address"));
        }
        Ok(HostPort {
            host: host.to_string(),
            port,
        })
    }
}
deserialize_from_str!(HostPort, "a host or host:port address");

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self.port {
            Some(port) => write!(f, "{}:{port}", self.host),
            None => f.write_str(&self.host),
        }
    }
}

/// An absolute http(s) URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl(pub String);

impl FromStr for HttpUrl {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let rest = s
            .strip_prefix("http://")
            .or_else(|| s.strip_prefix("https://"))
            .ok_or_else(|| format!("`{s}` must start with http:// or https://"))?;
        if rest.is_empty() || rest.starts_with('/') || rest.contains(char::is_whitespace) {
            return Err(format!("`{s}` has no valid host"));
        }
        Ok(HttpUrl(s.to_string()))
    }
}
deserialize_from_str!(HttpUrl, "an http:// or https:// URL");

/// A user id: letters, digits and `._-@`, as Nextcloud user ids are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserId(pub String);

impl FromStr for UserId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let valid = !s.is_empty()
            && s.len() <= 64
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-@".contains(c));
        if valid {
            Ok(UserId(s.to_string()))
        } else {
            Err(format!(
                "`{s}` is not a valid user id (1 to 64 of letters, digits and . _ - @)"
            ))
        }
    }
}
deserialize_from_str!(UserId, "a user id");

/// The name of an organization or project: 1 to 64 of letters, digits and `._-`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Name(pub String);

impl FromStr for Name {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let valid = !s.is_empty()
            && s.len() <= 64
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
        if valid {
            Ok(Name(s.to_string()))
        } else {
            Err(format!(
                "`{s}` is not a valid name (1 to 64 of letters, digits and . _ -)"
            ))
        }
    }
}
deserialize_from_str!(Name, "a name");

/// An API token given in the file; short ones are refused because they are guessable.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(pub String);

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("Token(..)")
    }
}

impl FromStr for Token {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.len() < 8 || s.contains(|c: char| c.is_whitespace() || c == ':') {
            return Err("a token needs at least 8 characters and no spaces or colons".to_string());
        }
        Ok(Token(s.to_string()))
    }
}
deserialize_from_str!(Token, "an API token");

/// An IP network written as an address (`192.0.2.10`, `2001:db8::1`) or in CIDR notation
/// (`192.0.2.0/24`, `2001:db8::/32`). Host bits below the prefix must be zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl IpNet {
    /// Whether `ip` is in this network; IPv4-mapped IPv6 addresses count as IPv4.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for IpNet {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("`{s}` is not an IP address or network like \"192.0.2.0/24\""))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("`{s}`: prefix length must be 0 to {max}"))?,
        };
        let net = IpNet { addr, prefix };
        let host_bits_clear = match addr {
            IpAddr::V4(a) => {
                u32::from(a) & !u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0) == 0
            }
            IpAddr::V6(a) => {
                u128::from(a) & !u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0) == 0
            }
        };
        if !host_bits_clear {
            return Err(format!(
                "`{s}` has bits set below its /{prefix} prefix; write the network address"
            ));
        }
        Ok(net)
    }
}
deserialize_from_str!(IpNet, "an IP address or network like \"192.0.2.0/24\"");

/// A digest algorithm offered to inbound trunks: `SHA-256` or `MD5`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DigestAlgorithm(pub Algorithm);

impl FromStr for DigestAlgorithm {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match Algorithm::parse(s) {
            Ok(a @ (Algorithm::Sha256 | Algorithm::Md5)) => Ok(DigestAlgorithm(a)),
            _ => Err(format!(
                "`{s}` is not a digest algorithm offered here (SHA-256 or MD5)"
            )),
        }
    }
}
deserialize_from_str!(DigestAlgorithm, "\"SHA-256\" or \"MD5\"");

/// A regular expression a dialled number must match in full.
#[derive(Debug, Clone)]
pub struct NumberPattern(pub regex::Regex);

impl FromStr for NumberPattern {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        regex::Regex::new(&format!("^(?:{s})$"))
            .map(NumberPattern)
            .map_err(|e| format!("invalid regular expression `{s}`: {e}"))
    }
}
deserialize_from_str!(NumberPattern, "a regular expression");

impl NumberPattern {
    pub fn matches(&self, number: &str) -> bool {
        self.0.is_match(number)
    }
}

/// A duration written as whole seconds (`60`) or with units (`"90s"`, `"4h"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seconds(pub Duration);

impl<'de> Deserialize<'de> for Seconds {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = Seconds;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("seconds as an integer, or a duration like \"90s\" or \"4h\"")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Seconds, E> {
                u64::try_from(v)
                    .ok()
                    .filter(|v| *v > 0)
                    .map(|v| Seconds(Duration::from_secs(v)))
                    .ok_or_else(|| E::custom("must be a positive number of seconds"))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Seconds, E> {
                self.visit_i64(i64::try_from(v).unwrap_or(i64::MAX))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Seconds, E> {
                humantime::parse_duration(v)
                    .ok()
                    .filter(|d| !d.is_zero())
                    .map(Seconds)
                    .ok_or_else(|| {
                        E::custom(format!("`{v}` is not a positive duration like \"90s\""))
                    })
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_of(text: &str) -> String {
        match Config::parse(text, "test.toml") {
            Ok(_) => panic!("expected an error for:\n{text}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn embedded_default_is_valid_and_has_no_trunk() {
        let config = Config::load(None).expect("default config parses");
        assert!(config.trunks.is_empty());
        assert_eq!(config.store.path, PathBuf::from("dialbridge.sqlite"));
        assert_eq!(
            config.media.rtp_ports,
            PortRange {
                first: 20000,
                last: 20999
            }
        );
    }

    #[test]
    fn organizations_and_projects_are_checked_with_their_keys() {
        let org = "[[organizations]]\nname = \"acme\"\n";
        let e = error_of(&format!("{org}price_per_minute = \"0.0000001\"\n"));
        assert!(
            e.contains("organizations[0].price_per_minute") && e.contains("line 3"),
            "{e}"
        );
        let e = error_of(&format!("{org}spend_limit = \"-5\"\n"));
        assert!(e.contains("organizations[0].spend_limit"), "{e}");
        let e = error_of(&format!("{org}{org}"));
        assert!(
            e.contains("organizations[1].name") && e.contains("twice"),
            "{e}"
        );
        let e = error_of("[[projects]]\nname = \"p\"\norganization = \"nobody\"\n");
        assert!(
            e.contains("projects[0].organization") && e.contains("nobody"),
            "{e}"
        );
        let e = error_of(&format!(
            "{org}[[projects]]\nname = \"p\"\norganization = \"acme\"\nwebhook_url = \"https://example.com/h\"\n"
        ));
        assert!(e.contains("projects[0].webhook_secret"), "{e}");
        let e = error_of(&format!(
            "{org}[[projects]]\nname = \"p\"\norganization = \"acme\"\ntokens = [\"short\"]\n"
        ));
        assert!(e.contains("projects[0].tokens[0]"), "{e}");
        let config = Config::parse(
            &format!("{org}price_per_minute = 0.05\n[[trunks]]\nname = \"t\"\naddress = \"127.0.0.1:5060\"\nprice_per_minute = 1\n"),
            "test.toml",
        )
        .expect("valid");
        assert_eq!(config.organizations[0].price_per_minute, Money(50_000));
        assert_eq!(config.trunks[0].price_per_minute, Money(1_000_000));
        assert_eq!(config.links.commitment.0, Duration::from_secs(60));
    }

    #[test]
    fn unknown_key_names_key_and_line() {
        let e = error_of("[http]\nlisten = \"127.0.0.1:1\"\nlisten_port = 3\n");
        assert!(e.contains("line 3"), "{e}");
        assert!(e.contains("listen_port"), "{e}");
    }

    #[test]
    fn bad_address_names_key_and_line() {
        let e = error_of("\n[http]\nlisten = \"localhost\"\n");
        assert!(e.contains("line 3"), "{e}");
        assert!(e.contains("http.listen"), "{e}");
    }

    #[test]
    fn bad_sip_listen_and_range() {
        let e = error_of("[sip]\nlisten = [\"udp:127.0.0.1:5060\", \"sctp:127.0.0.1:5060\"]\n");
        assert!(e.contains("sip.listen[1]") && e.contains("sctp"), "{e}");
        let e = error_of("[media]\nrtp_ports = \"30000-20000\"\n");
        assert!(e.contains("media.rtp_ports") && e.contains("line 2"), "{e}");
        let e = error_of("[media]\nthreads = 100000\n");
        assert!(e.contains("media.threads") && e.contains("line 2"), "{e}");
        let e = error_of("[media]\nthreads = -1\n");
        assert!(e.contains("media.threads"), "{e}");
        let e = error_of("[media]\nrtp_ports = \"20000\"\n");
        assert!(e.contains("media.rtp_ports"), "{e}");
    }

    #[test]
    fn opus_settings_have_voice_defaults_and_are_checked() {
        let opus = Config::parse("", "test.toml")
            .unwrap_or_else(|e| panic!("{e}"))
            .media
            .opus;
        assert_eq!(
            (opus.complexity, opus.phone_complexity, opus.bitrate),
            (5, 1, 28_000)
        );
        assert!(opus.fec && !opus.dtx && opus.expected_loss == 10);
        let text = "[media.opus]\ncomplexity = 9\nphone_complexity = 3\nbitrate = 16000\nfec = false\nexpected_loss = 0\ndtx = true\n";
        let opus = Config::parse(text, "test.toml")
            .unwrap_or_else(|e| panic!("{e}"))
            .media
            .opus;
        assert_eq!(
            (opus.complexity, opus.phone_complexity, opus.bitrate),
            (9, 3, 16_000)
        );
        assert!(!opus.fec && opus.dtx && opus.expected_loss == 0);
        let e = error_of("[media.opus]\nphone_complexity = 11\n");
        assert!(
            e.contains("media.opus.phone_complexity") && e.contains("line 2"),
            "{e}"
        );
        let e = error_of("[media.opus]\nbitrate = 500\n");
        assert!(
            e.contains("media.opus.bitrate") && e.contains("6000"),
            "{e}"
        );
        let e = error_of("[media.opus]\nexpected_loss = 101\n");
        assert!(e.contains("media.opus.expected_loss"), "{e}");
        let e = error_of("[media.opus]\nvbr = true\n");
        assert!(e.contains("vbr"), "{e}");
    }

    #[test]
    fn trunk_is_parsed_and_validated() {
        let ok = Config::parse(
            r#"
[[trunks]]
name = "carrier"
address = "127.0.0.1:5080"
transport = "tcp"
username = "u"
password = "p"
caller_id = "+4930123456"
allowed_numbers = ["\\+49.*"]
ringing_timeout = "90s"
max_call_duration = 3600
"#,
            "t",
        )
        .expect("valid trunk");
        let trunk = &ok.trunks[0];
        assert_eq!(trunk.transport, Transport::Tcp);
        assert_eq!(trunk.ringing_timeout.0, Duration::from_secs(90));
        assert_eq!(trunk.max_call_duration.0, Duration::from_secs(3600));
        assert_eq!(trunk.media_timeout.0, Duration::from_secs(30));
        assert!(trunk.allowed_numbers[0].matches("+4930123"));
        assert!(!trunk.allowed_numbers[0].matches("+4430123"));
        assert!(!trunk.allowed_numbers[0].matches("x+4930123"));

        let e =
            error_of("[[trunks]]\nname = \"a\"\naddress = \"h:5060\"\nallowed_numbers = [\"(\"]\n");
        assert!(
            e.contains("trunks[0].allowed_numbers[0]") && e.contains("line 4"),
            "{e}"
        );
        let e = error_of("[[trunks]]\nname = \"a\"\naddress = \"h:5060\"\ncaller_id = \"12\"\n");
        assert!(e.contains("trunks[0].caller_id"), "{e}");
        let e = error_of("[[trunks]]\nname = \"a\"\naddress = \"h:5060\"\nusername = \"x\"\n");
        assert!(e.contains("password"), "{e}");
        let e = error_of(
            "[[trunks]]\nname = \"a\"\naddress = \"h:5060\"\n[[trunks]]\nname = \"a\"\naddress = \"h:5061\"\n",
        );
        assert!(e.contains("declared twice"), "{e}");
    }

    #[test]
    fn a_trunk_address_without_a_port_is_located_by_dns() {
        let cases: [(&str, &str, Option<u16>); 5] = [
            ("sip.example.com", "sip.example.com", None),
            ("sip.example.com:5080", "sip.example.com", Some(5080)),
            ("192.0.2.7", "192.0.2.7", None),
            ("[2001:db8::7]", "[2001:db8::7]", None),
            ("[2001:db8::7]:5062", "[2001:db8::7]", Some(5062)),
        ];
        for (text, host, port) in cases {
            let parsed: HostPort = text.parse().expect(text);
            assert_eq!((parsed.host.as_str(), parsed.port), (host, port), "{text}");
            assert_eq!(parsed.to_string(), text);
        }
        for bad in ["2001:db8::7", "host:0", "host:x", "ho st", ":5060", ""] {
            assert!(bad.parse::<HostPort>().is_err(), "{bad} accepted");
        }
        let tls: HostPort = "sip.example.com".parse().expect("name");
        assert_eq!(tls.port_or_default(Transport::Tls), 5061);
        assert_eq!(tls.port_or_default(Transport::Udp), 5060);
        let ok = Config::parse(
            "[sip]\ndns_servers = [\"127.0.0.1:5353\"]\n[[trunks]]\nname = \"a\"\naddress = \"trunk.example.com\"\n",
            "t",
        )
        .expect("a trunk by name");
        assert_eq!(
            ok.trunks[0].number_uri("+4930123"),
            "sip:+4930123@trunk.example.com"
        );
        assert_eq!(
            ok.sip.dns_servers,
            ["127.0.0.1:5353".parse().expect("addr")]
        );
        let e = error_of("[sip]\ndns_servers = [\"127.0.0.1\"]\n");
        assert!(e.contains("sip.dns_servers"), "{e}");
    }

    #[test]
    fn registering_trunks_are_inbound_trunks_too() {
        let ok = Config::parse(
            r#"
[[trunks]]
name = "carrier"
address = "192.0.2.7:5060"
username = "u"
password = "p"
register = true
register_expires = 600
[[trunks]]
name = "plain"
address = "192.0.2.8:5060"
[[inbound]]
name = "other"
allowed_sources = ["198.51.100.0/24"]
"#,
            "t",
        )
        .expect("valid trunks");
        let carrier = &ok.trunks[0];
        assert!(carrier.register && !ok.trunks[1].register);
        assert_eq!(carrier.register_expires.0, Duration::from_secs(600));
        assert_eq!(carrier.register_retry.0, Duration::from_secs(30));
        assert_eq!(carrier.register_retry_max.0, Duration::from_secs(1800));
        let inbound = ok.inbound_trunks();
        let names: Vec<&str> = inbound.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["other", "carrier"]);
        assert!(inbound[1].allowed_sources[0].contains("192.0.2.7".parse().expect("ip")));
        assert!(!inbound[1].allowed_sources[0].contains("192.0.2.8".parse().expect("ip")));
        assert!(inbound[1].password.is_none() && inbound[1].numbers.is_empty());

        let registering = |extra: &str| {
            format!(
                "[[trunks]]\nname = \"a\"\naddress = \"192.0.2.7:5060\"\nregister = true\n{extra}"
            )
        };
        let e = error_of(&registering(
            "register_retry = 60\nregister_retry_max = 30\n",
        ));
        assert!(e.contains("trunks[0].register_retry_max"), "{e}");
        let e = error_of(&registering("register_expires = 0\n"));
        assert!(e.contains("trunks[0].register_expires"), "{e}");
        let e = error_of(
            "[[trunks]]\nname = \"a\"\naddress = \"sip.example.com:5060\"\nregister = true\n",
        );
        assert!(
            e.contains("trunks[0].address") && e.contains("IP address"),
            "{e}"
        );
        let e = error_of(&format!(
            "{}[[inbound]]\nname = \"a\"\nallowed_sources = [\"192.0.2.7\"]\n",
            registering("")
        ));
        assert!(e.contains("trunks[0].name"), "{e}");
    }

    #[test]
    fn transports_are_written_udp_tcp_or_tls() {
        let trunk =
            |t: &str| format!("[[trunks]]\nname = \"c\"\naddress = \"127.0.0.1:5080\"\n{t}");
        let default = Config::parse(&trunk(""), "t").expect("valid trunk");
        assert_eq!(default.trunks[0].transport, Transport::Udp);
        let tls = Config::parse(
            &trunk("transport = \"tls\"\ntls_ca = \"/etc/ca.pem\"\n"),
            "t",
        )
        .expect("tls trunk");
        assert_eq!(tls.trunks[0].transport, Transport::Tls);
        assert_eq!(
            tls.trunks[0].tls_ca.as_deref(),
            Some(Path::new("/etc/ca.pem"))
        );
        let e = error_of(&trunk("tls_ca = \"/etc/ca.pem\"\n"));
        assert!(e.contains("trunks[0].tls_ca"), "{e}");
        let twice = format!(
            "{}[[trunks]]\nname = \"d\"\naddress = \"127.0.0.1:5080\"\ntransport = \"tls\"\n",
            trunk("transport = \"tls\"\ntls_ca = \"/etc/ca.pem\"\n")
        );
        let e = error_of(&twice);
        assert!(e.contains("trunks[1].tls_ca") && e.contains("share"), "{e}");
        let srtp = Config::parse(&trunk("srtp = \"required\"\n"), "t").expect("srtp");
        assert_eq!(
            srtp.trunks[0].srtp.0,
            dialbridge_sip::sdp::SrtpPolicy::Required
        );
        assert_eq!(
            default.trunks[0].srtp.0,
            dialbridge_sip::sdp::SrtpPolicy::Off
        );
        let e = error_of(&trunk("srtp = \"yes\"\n"));
        assert!(e.contains("not an SRTP mode"), "{e}");
        assert!(!default.trunks[0].allow_refer);
        let refer = Config::parse(&trunk("allow_refer = true\n"), "t").expect("allow_refer");
        assert!(refer.trunks[0].allow_refer);
        let e = error_of(&trunk("transport = \"TCP\"\n"));
        assert!(
            e.contains("unknown variant `TCP`, expected one of `udp`, `tcp`, `tls`"),
            "{e}"
        );
        let listen: SipListen = "tcp:127.0.0.1:5060".parse().expect("listen");
        assert_eq!(listen.transport, Transport::Tcp);
        assert_eq!(listen.to_string(), "tcp:127.0.0.1:5060");
        let listen: SipListen = "tls:127.0.0.1:5061".parse().expect("listen");
        assert_eq!(listen.transport, Transport::Tls);
        assert!("sctp:127.0.0.1:5061".parse::<SipListen>().is_err());
    }

    #[test]
    fn a_tls_listener_needs_its_certificate_and_key() {
        let listen = "[sip]\nlisten = [\"tls:127.0.0.1:5061\"]\n";
        let e = error_of(listen);
        assert!(
            e.contains("sip.listen") && e.contains("tls_certificate"),
            "{e}"
        );
        let e = error_of(&format!("{listen}tls_certificate = \"c.pem\"\n"));
        assert!(e.contains("sip.tls_private_key"), "{e}");
        let ok = Config::parse(
            &format!("{listen}tls_certificate = \"c.pem\"\ntls_private_key = \"k.pem\"\n"),
            "t",
        )
        .expect("tls listener");
        assert_eq!(ok.sip.tls_certificate.as_deref(), Some(Path::new("c.pem")));
        let inbound = Config::parse(
            "[[inbound]]\nname = \"p\"\nallowed_sources = [\"127.0.0.1\"]\ntransport = \"tls\"\n",
            "t",
        )
        .expect("inbound");
        assert_eq!(inbound.inbound[0].transport, Some(Transport::Tls));
    }

    #[test]
    fn inbound_trunks_and_dialin_are_parsed() {
        let ok = Config::parse(
            r#"
[sip]
silent_reject = true
t1 = "50ms"

[[inbound]]
name = "carrier"
allowed_sources = ["192.0.2.0/24", "2001:db8::/32", "198.51.100.7"]
username = "u"
password = "p"
numbers = ["+4930123456"]
max_concurrent_calls = 2
media_timeout = 20

[[inbound]]
name = "pbx"
allowed_sources = ["127.0.0.1"]
max_call_duration = "1h"

[dialin]
pin_number = "+4930999999"
pin_attempts = 4
wait_for_call = "2m"

[[dialin.routes]]
number = "+4930111111"
room = "abcdefgh"
"#,
            "t",
        )
        .expect("valid dial-in configuration");
        assert!(ok.sip.silent_reject);
        assert_eq!(ok.sip.timers().t1, Duration::from_millis(50));
        assert_eq!(ok.sip.timers().timeout(), Duration::from_millis(3200));
        let trunk = &ok.inbound[0];
        assert_eq!(trunk.max_concurrent_calls, 2);
        assert_eq!(trunk.media_timeout.0, Duration::from_secs(20));
        assert_eq!(trunk.max_call_duration.0, Duration::from_secs(4 * 3600));
        assert_eq!(ok.inbound[1].media_timeout.0, Duration::from_secs(30));
        assert_eq!(ok.inbound[1].max_call_duration.0, Duration::from_secs(3600));
        assert!(trunk.allowed_sources[0].contains("192.0.2.77".parse().expect("ip")));
        assert!(!trunk.allowed_sources[0].contains("192.0.3.1".parse().expect("ip")));
        assert!(trunk.allowed_sources[1].contains("2001:db8:1::5".parse().expect("ip")));
        assert!(!trunk.allowed_sources[1].contains("192.0.2.1".parse().expect("ip")));
        assert!(trunk.allowed_sources[2].contains("::ffff:198.51.100.7".parse().expect("ip")));
        assert!(!trunk.allowed_sources[2].contains("198.51.100.8".parse().expect("ip")));
        assert_eq!(ok.dialin.pin_attempts, 4);
        assert_eq!(ok.dialin.wait_for_call.0, Duration::from_secs(120));
        assert_eq!(ok.dialin.routes[0].room, "abcdefgh");
        let defaults = Config::load(None).expect("default");
        assert!(!defaults.sip.silent_reject);
        assert_eq!(defaults.sip.timers().t1, Duration::from_millis(500));
        assert_eq!(defaults.dialin.pin_attempts, 3);
        assert!(defaults.inbound.is_empty());
    }

    #[test]
    fn sip_t1_above_t2_is_refused() {
        let e = error_of("[sip]\nt1 = \"5s\"\n");
        assert!(e.contains("sip.t1") && e.contains("line 2"), "{e}");
    }

    #[test]
    fn session_timers_default_to_30_minutes_and_can_be_shortened_or_turned_off() {
        let default = Config::parse("", "t").expect("default");
        let st = default.sip.session_timer().expect("on by default");
        assert_eq!(st.expires, Duration::from_secs(1800));
        assert_eq!(st.min_se, Duration::from_secs(90));
        let short = Config::parse("[sip]\nsession_expires = \"8s\"\nmin_se = \"2s\"\n", "t")
            .expect("short sessions");
        let st = short.sip.session_timer().expect("on");
        assert_eq!((st.expires.as_secs(), st.min_se.as_secs()), (8, 2));
        let off = Config::parse("[sip]\nsession_timers = false\n", "t").expect("off");
        assert!(off.sip.session_timer().is_none());
        let e = error_of("[sip]\nsession_expires = \"60s\"\nmin_se = \"90s\"\n");
        assert!(e.contains("sip.session_expires"), "{e}");
    }

    #[test]
    fn inbound_errors_name_key_and_line() {
        let head = "[[inbound]]\nname = \"t\"\n";
        let e = error_of(&format!("{head}allowed_sources = [\"10.0.0.1/8\"]\n"));
        assert!(
            e.contains("inbound[0].allowed_sources[0]") && e.contains("line 3") && e.contains("/8"),
            "{e}"
        );
        let e = error_of(&format!("{head}allowed_sources = [\"10.0.0.0/33\"]\n"));
        assert!(e.contains("prefix length") && e.contains("line 3"), "{e}");
        let e = error_of(&format!("{head}allowed_sources = [\"example.com\"]\n"));
        assert!(e.contains("not an IP address"), "{e}");
        let e = error_of(&format!("{head}allowed_sources = [\"2001:db8::1/64\"]\n"));
        assert!(e.contains("below its /64"), "{e}");
        let e = error_of(&format!("{head}allowed_sources = []\n"));
        assert!(e.contains("inbound[0].allowed_sources"), "{e}");
        let e = error_of(&format!(
            "{head}allowed_sources = [\"10.0.0.0/8\"]\nusername = \"u\"\n"
        ));
        assert!(
            e.contains("inbound[0].password") && e.contains("both"),
            "{e}"
        );
        let e = error_of(&format!(
            "{head}allowed_sources = [\"10.0.0.0/8\"]\nnumbers = [\"030123\"]\n"
        ));
        assert!(
            e.contains("inbound[0].numbers[0]") && e.contains("line 4"),
            "{e}"
        );
        let e = error_of(&format!(
            "{head}allowed_sources = [\"10.0.0.0/8\"]\nmax_concurrent_calls = -1\n"
        ));
        assert!(e.contains("inbound[0].max_concurrent_calls"), "{e}");
        let e = error_of(&format!(
            "{head}allowed_sources = [\"10.0.0.0/8\"]\n{head}allowed_sources = [\"10.0.0.0/8\"]\n"
        ));
        assert!(e.contains("declared twice"), "{e}");
        let e = error_of(&format!(
            "{head}allowed_sources = [\"10.0.0.0/8\"]\nsecret = 1\n"
        ));
        assert!(e.contains("secret") && e.contains("line 4"), "{e}");
        let e = error_of("[sip]\nsilent_reject = \"yes\"\n");
        assert!(
            e.contains("sip.silent_reject") && e.contains("line 2"),
            "{e}"
        );
    }

    #[test]
    fn dialin_errors_name_key_and_line() {
        let e = error_of("[dialin]\npin_number = \"12345\"\n");
        assert!(
            e.contains("dialin.pin_number") && e.contains("line 2"),
            "{e}"
        );
        let e = error_of("[dialin]\npin_attempts = 0\n");
        assert!(e.contains("dialin.pin_attempts"), "{e}");
        let e = error_of("[dialin]\nwait_for_call = \"soon\"\n");
        assert!(
            e.contains("dialin.wait_for_call") && e.contains("line 2"),
            "{e}"
        );
        let e = error_of("[dialin]\ndigest_algorithms = [\"SHA-512-256\"]\n");
        assert!(
            e.contains("dialin.digest_algorithms[0]") && e.contains("line 2"),
            "{e}"
        );
        let e = error_of("[dialin]\ndigest_algorithms = [\"MD5\", \"md5\"]\n");
        assert!(
            e.contains("dialin.digest_algorithms[1]") && e.contains("twice"),
            "{e}"
        );
        let e = error_of("[dialin]\ndigest_algorithms = []\n");
        assert!(e.contains("dialin.digest_algorithms"), "{e}");
        let e = error_of("[dialin]\ninvites_per_second = 0\n");
        assert!(e.contains("dialin.invites_per_second"), "{e}");
        let e = error_of("[dialin]\nrealm = \"a\\\"b\"\n");
        assert!(e.contains("dialin.realm"), "{e}");
        let e = error_of("[[dialin.routes]]\nnumber = \"+4930111111\"\n");
        assert!(e.contains("room"), "{e}");
        let e = error_of(
            "[[dialin.routes]]\nnumber = \"+4930111111\"\nroom = \"a\"\n[[dialin.routes]]\nnumber = \"+4930111111\"\nroom = \"b\"\n",
        );
        assert!(
            e.contains("dialin.routes[1].number") && e.contains("routed twice"),
            "{e}"
        );
        let e = error_of("[dialin]\npin_number = \"+4930111111\"\n[[dialin.routes]]\nnumber = \"+4930111111\"\nroom = \"b\"\n");
        assert!(e.contains("routed twice"), "{e}");
    }

    #[test]
    fn syntax_error_has_line() {
        let e = error_of("[http]\nlisten = \n");
        assert!(e.contains("line 2"), "{e}");
    }
}

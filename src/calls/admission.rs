//! Admission of inbound INVITEs: which `[[inbound]]` trunk may send them, digest authentication
//! (407 with MD5 and SHA-256, nonces made and checked here), scanner refusal, per-trunk concurrency
//! and per-source rate limits.
//!
//! Pure logic: time comes in as `now`, the decision goes out as a value, and the caller answers on
//! the wire. Refusals never say whether a number or user exists: an unknown user and a wrong
//! password get the same fresh challenge, and every refused source gets the same 403 (or silence).

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use dialbridge_sip::auth::{Algorithm, Authorization, Challenge};
use dialbridge_sip::message::Uri;
use sha2::{Digest, Sha256};

use crate::config::{Config, InboundConfig, Transport};
use crate::ratelimit::RateLimiter;
use crate::room::PhoneNumber;

/// User-Agent substrings of SIP scanners and war-diallers (compared case-insensitively).
const SCANNERS: &[&str] = &[
    "friendly-scanner",
    "sipvicious",
    "sipcli",
    "sip-scan",
    "sipscan",
    "iwar",
    "sivus",
    "sundayddr",
    "vaxsipuseragent",
    "smap",
    "pplsip",
    "voipsec",
];

/// Nonces whose last nonce count is remembered (replay check); expired ones go first.
const MAX_TRACKED_NONCES: usize = 10_000;

/// What to do with an inbound INVITE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Admitted through `trunk`; the caller must call [`Admission::release`] when the call ends.
    Admit { trunk: String },
    /// Answer with this final response (404) in a transaction.
    Refuse { code: u16, reason: &'static str },
    /// Answer 403 once, outside any transaction: a refused source gets one answer per request.
    Forbid,
    /// Send nothing at all.
    Drop,
    /// 407 with these `Proxy-Authenticate` values.
    Challenge { proxy_authenticate: Vec<String> },
    /// 503 with `Retry-After: retry_after` seconds.
    Busy { retry_after: u32 },
}

/// What admission looks at in an INVITE.
#[derive(Debug, Clone)]
pub struct InviteFacts<'a> {
    pub source: IpAddr,
    pub transport: Transport,
    /// The Request-URI as received (digest credentials must name it).
    pub request_uri: &'a str,
    pub user_agent: Option<&'a str>,
    pub proxy_authorization: Vec<&'a str>,
    /// The dialled number, when the Request-URI or To names a valid one.
    pub dialed: Option<&'a PhoneNumber>,
}

struct Trunk {
    config: InboundConfig,
    active: u32,
}

/// See the module documentation.
pub struct Admission {
    trunks: Vec<Trunk>,
    silent_reject: bool,
    realm: String,
    /// Offered in this order, most preferred first.
    algorithms: Vec<Algorithm>,
    nonce_lifetime: Duration,
    secret: [u8; 32],
    epoch: Instant,
    /// Makes every challenge's nonce different, even within one second.
    challenges: u64,
    /// Nonce -> (issue time, highest nonce count accepted): a count seen before is a replay.
    nonce_counts: HashMap<String, (u64, u32)>,
    invites: RateLimiter,
    auth_failures: RateLimiter,
    unknown_numbers: RateLimiter,
}

impl Admission {
    pub fn new(config: &Config, now: Instant, secret: [u8; 32]) -> Admission {
        let d = &config.dialin;
        let failures = f64::from(d.auth_failures_per_minute);
        let unknown = f64::from(d.unknown_numbers_per_minute);
        Admission {
            trunks: config
                .inbound_trunks()
                .into_iter()
                .map(|config| Trunk { config, active: 0 })
                .collect(),
            silent_reject: config.sip.silent_reject,
            realm: d.realm.clone(),
            algorithms: d.digest_algorithms.iter().map(|a| a.0).collect(),
            nonce_lifetime: d.nonce_lifetime.0,
            secret,
            epoch: now,
            challenges: 0,
            nonce_counts: HashMap::new(),
            invites: RateLimiter::new(d.invites_per_second, f64::from(d.invite_burst)),
            auth_failures: RateLimiter::new(failures / 60.0, failures),
            unknown_numbers: RateLimiter::new(unknown / 60.0, unknown),
        }
    }

    /// Decides on one INVITE and logs the decision.
    pub fn decide(&mut self, now: Instant, invite: &InviteFacts<'_>) -> Decision {
        let (decision, why, trunk) = self.decide_inner(now, invite);
        let kind = match &decision {
            Decision::Admit { .. } => "admit",
            Decision::Refuse { .. } | Decision::Forbid => "refuse",
            Decision::Drop => "drop",
            Decision::Challenge { .. } => "challenge",
            Decision::Busy { .. } => "busy",
        };
        metrics::counter!("dialbridge_dialin_admissions_total", "decision" => kind).increment(1);
        tracing::info!(
            source = %invite.source,
            uri = invite.request_uri,
            user_agent = invite.user_agent.unwrap_or(""),
            trunk = trunk.unwrap_or(""),
            decision = ?decision,
            why,
            "inbound INVITE admission"
        );
        decision
    }

    fn refuse(&self) -> Decision {
        if self.silent_reject {
            Decision::Drop
        } else {
            Decision::Forbid
        }
    }

    /// Counts an INVITE from `source` to a number that leads nowhere. A source that runs out of
    /// `unknown_numbers_per_minute` is probing for numbers: a scanner, whatever it calls itself.
    pub fn unknown_number(&mut self, source: IpAddr, now: Instant) {
        let was_probing = self.probing(source, now);
        let _ = self.unknown_numbers.take(source, now);
        if !was_probing && self.probing(source, now) {
            metrics::counter!("dialbridge_dialin_scanners_detected_total").increment(1);
            tracing::warn!(%source, "source probes unknown numbers: refused as a scanner until it stops");
        }
    }

    /// Whether `source` is refused as a scanner for probing unknown numbers.
    pub fn probing(&self, source: IpAddr, now: Instant) -> bool {
        !self.unknown_numbers.has_token(source, now)
    }

    fn decide_inner(
        &mut self,
        now: Instant,
        invite: &InviteFacts<'_>,
    ) -> (Decision, &'static str, Option<&str>) {
        if invite.user_agent.is_some_and(is_scanner) {
            return (self.refuse(), "scanner user agent", None);
        }
        let allowed: Vec<usize> = (0..self.trunks.len())
            .filter(|&i| {
                let config = &self.trunks[i].config;
                config
                    .allowed_sources
                    .iter()
                    .any(|n| n.contains(invite.source))
                    && config.transport.is_none_or(|t| t == invite.transport)
            })
            .collect();
        let serves = |t: &Trunk| {
            t.config.numbers.is_empty()
                || invite.dialed.is_some_and(|d| t.config.numbers.contains(d))
        };
        let Some(index) = allowed
            .iter()
            .copied()
            .find(|&i| serves(&self.trunks[i]))
            .or_else(|| allowed.first().copied())
        else {
            return (self.refuse(), "no inbound trunk allows the source", None);
        };
        // Strangers are refused before this, so they never take memory here.
        if let Err(wait) = self.invites.take(invite.source, now) {
            let decision = if self.silent_reject {
                Decision::Drop
            } else {
                Decision::Busy {
                    retry_after: retry_seconds(wait),
                }
            };
            let name = self.trunks[index].config.name.as_str();
            return (
                decision,
                "INVITE rate limit of the source exceeded",
                Some(name),
            );
        }
        if self.probing(invite.source, now) {
            let name = self.trunks[index].config.name.as_str();
            return (self.refuse(), "source probes unknown numbers", Some(name));
        }
        if self.trunks[index].config.password.is_some() {
            if !self.auth_failures.has_token(invite.source, now) {
                let decision = self.refuse();
                let name = self.trunks[index].config.name.as_str();
                return (decision, "too many failed authentications", Some(name));
            }
            match self.check_credentials(now, index, invite) {
                Credentials::Valid { nonce, issued, nc } => {
                    if !self.first_use(now, nonce, issued, nc) {
                        let d = self.challenge(now, invite.source, true);
                        let name = self.trunks[index].config.name.as_str();
                        return (d, "nonce count used before (replay)", Some(name));
                    }
                }
                Credentials::Missing => {
                    let d = self.challenge(now, invite.source, false);
                    return (
                        d,
                        "challenged",
                        Some(self.trunks[index].config.name.as_str()),
                    );
                }
                Credentials::Stale => {
                    let d = self.challenge(now, invite.source, true);
                    return (
                        d,
                        "stale nonce",
                        Some(self.trunks[index].config.name.as_str()),
                    );
                }
                Credentials::Wrong => {
                    // Unknown user and wrong password look alike, and count alike.
                    let _ = self.auth_failures.take(invite.source, now);
                    let d = if self.auth_failures.has_token(invite.source, now) {
                        self.challenge(now, invite.source, false)
                    } else {
                        self.refuse()
                    };
                    return (
                        d,
                        "authentication failed",
                        Some(self.trunks[index].config.name.as_str()),
                    );
                }
            }
        }
        if !serves(&self.trunks[index]) {
            self.unknown_number(invite.source, now);
        }
        let trunk = &mut self.trunks[index];
        if !serves(trunk) {
            let d = Decision::Refuse {
                code: 404,
                reason: "Not Found",
            };
            return (
                d,
                "number not served by the trunk",
                Some(&trunk.config.name),
            );
        }
        let limit = trunk.config.max_concurrent_calls;
        if limit != 0 && trunk.active >= limit {
            let d = Decision::Busy { retry_after: 5 };
            return (
                d,
                "trunk at its concurrent call limit",
                Some(&trunk.config.name),
            );
        }
        trunk.active += 1;
        let d = Decision::Admit {
            trunk: trunk.config.name.clone(),
        };
        (d, "admitted", Some(&trunk.config.name))
    }

    /// Gives back the concurrency slot of an admitted call (see [`TrunkSlot`]).
    pub fn release(&mut self, trunk: &str) {
        if let Some(t) = self.trunks.iter_mut().find(|t| t.config.name == trunk) {
            t.active = t.active.saturating_sub(1);
        }
    }

    /// Calls currently admitted through `trunk`.
    pub fn active(&self, trunk: &str) -> u32 {
        self.trunks
            .iter()
            .find(|t| t.config.name == trunk)
            .map_or(0, |t| t.active)
    }

    fn challenge(&mut self, now: Instant, source: IpAddr, stale: bool) -> Decision {
        self.challenges += 1;
        let nonce = self.nonce(self.seconds(now), self.challenges, source);
        let proxy_authenticate = self
            .algorithms
            .iter()
            .map(|&alg| {
                let mut c = Challenge::new(self.realm.clone(), nonce.clone(), alg);
                c.stale = stale;
                c.to_string()
            })
            .collect();
        Decision::Challenge { proxy_authenticate }
    }

    fn seconds(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_secs()
    }

    /// `{issued}-{serial}-{mac}`: the MAC binds issue time, serial and source, so a nonce is
    /// checked without a table of issued nonces.
    fn nonce(&self, issued: u64, serial: u64, source: IpAddr) -> String {
        let mut h = Sha256::new();
        h.update(self.secret);
        h.update(issued.to_be_bytes());
        h.update(serial.to_be_bytes());
        h.update(source.to_string().as_bytes());
        let mac = h.finalize();
        let hex: String = mac[..16].iter().map(|b| format!("{b:02x}")).collect();
        format!("{issued:x}-{serial:x}-{hex}")
    }

    /// The issue time of a nonce this gateway made for `source`.
    fn issued(&self, nonce: &str, source: IpAddr) -> Option<u64> {
        let mut parts = nonce.splitn(3, '-');
        let issued = u64::from_str_radix(parts.next()?, 16).ok()?;
        let serial = u64::from_str_radix(parts.next()?, 16).ok()?;
        (self.nonce(issued, serial, source) == nonce).then_some(issued)
    }

    /// Records a nonce count; false when this count (or a higher one) was accepted before.
    fn first_use(&mut self, now: Instant, nonce: String, issued: u64, nc: u32) -> bool {
        if let Some((_, last)) = self.nonce_counts.get(&nonce) {
            if nc <= *last {
                return false;
            }
        } else if self.nonce_counts.len() >= MAX_TRACKED_NONCES {
            let (oldest_valid, lifetime) = (self.seconds(now), self.nonce_lifetime.as_secs());
            self.nonce_counts
                .retain(|_, (t, _)| oldest_valid.saturating_sub(*t) <= lifetime);
            if self.nonce_counts.len() >= MAX_TRACKED_NONCES {
                let oldest = self
                    .nonce_counts
                    .iter()
                    .min_by_key(|(_, (t, _))| *t)
                    .map(|(k, _)| k.clone());
                if let Some(k) = oldest {
                    self.nonce_counts.remove(&k);
                }
            }
        }
        self.nonce_counts.insert(nonce, (issued, nc));
        true
    }

    fn check_credentials(
        &self,
        now: Instant,
        index: usize,
        invite: &InviteFacts<'_>,
    ) -> Credentials {
        let trunk = &self.trunks[index].config;
        let (Some(user), Some(password)) = (&trunk.username, &trunk.password) else {
            return Credentials::Wrong;
        };
        let ours = invite
            .proxy_authorization
            .iter()
            .filter_map(|v| Authorization::parse(v).ok())
            .find(|a| a.realm == self.realm);
        let Some(auth) = ours else {
            return if invite.proxy_authorization.is_empty() {
                Credentials::Missing
            } else {
                Credentials::Wrong
            };
        };
        let Some(issued) = self.issued(&auth.nonce, invite.source) else {
            // Not our nonce (or one of a previous run): ask again, it is no failed password.
            return Credentials::Missing;
        };
        let algorithm = auth.algorithm.unwrap_or(Algorithm::Md5);
        if !self.algorithms.contains(&algorithm) {
            return Credentials::Wrong;
        }
        let challenge = Challenge::new(self.realm.clone(), auth.nonce.clone(), algorithm);
        let verified = auth.username == *user
            && (auth.uri == invite.request_uri
                // The Request-URI arrives parsed; compare the credentials' URI the same way.
                || Uri::parse(&auth.uri).is_ok_and(|u| u.to_string() == invite.request_uri))
            && auth
                .verify_against(&challenge, "INVITE", password, b"")
                .is_ok();
        if !verified {
            return Credentials::Wrong;
        }
        if self.seconds(now).saturating_sub(issued) > self.nonce_lifetime.as_secs() {
            return Credentials::Stale;
        }
        Credentials::Valid {
            nc: auth.nc.unwrap_or(0),
            nonce: auth.nonce,
            issued,
        }
    }
}

enum Credentials {
    Valid { nonce: String, issued: u64, nc: u32 },
    Missing,
    Stale,
    Wrong,
}

fn retry_seconds(wait: Duration) -> u32 {
    u32::try_from(wait.as_secs()).unwrap_or(u32::MAX).max(1)
}

/// Whether a User-Agent names a known SIP scanner.
pub fn is_scanner(user_agent: &str) -> bool {
    let ua = user_agent.to_ascii_lowercase();
    SCANNERS.iter().any(|s| ua.contains(s))
}

/// An admitted call's place in its trunk's `max_concurrent_calls`, given back when dropped:
/// by the leg once the call is over on our side, or wherever the call ends before a leg.
pub struct TrunkSlot {
    give_back: Option<Box<dyn FnOnce() + Send>>,
}

impl TrunkSlot {
    pub fn new(give_back: impl FnOnce() + Send + 'static) -> TrunkSlot {
        TrunkSlot {
            give_back: Some(Box::new(give_back)),
        }
    }
}

impl Drop for TrunkSlot {
    fn drop(&mut self) {
        if let Some(give_back) = self.give_back.take() {
            give_back();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dialbridge_sip::auth::{DigestRequest, Qop};

    const URI: &str = "sip:+4930123456@127.0.0.1:5060";

    fn config(extra: &str) -> Config {
        Config::parse(
            &format!(
                r#"
[[inbound]]
name = "open"
allowed_sources = ["192.0.2.0/24"]
numbers = ["+4930123456", "+4930123457"]
max_concurrent_calls = 2

[[inbound]]
name = "secure"
allowed_sources = ["198.51.100.7", "2001:db8::/32"]
username = "trunk"
password = "s3cret"

{extra}"#
            ),
            "test",
        )
        .expect("config")
    }

    fn admission(extra: &str, now: Instant) -> Admission {
        Admission::new(&config(extra), now, [7; 32])
    }

    fn number(s: &str) -> PhoneNumber {
        s.parse().expect("number")
    }

    fn facts<'a>(source: &str, dialed: Option<&'a PhoneNumber>) -> InviteFacts<'a> {
        InviteFacts {
            source: source.parse().expect("ip"),
            transport: Transport::Udp,
            request_uri: URI,
            user_agent: Some("Carrier SBC"),
            proxy_authorization: Vec::new(),
            dialed,
        }
    }

    fn forbidden() -> Decision {
        Decision::Forbid
    }

    /// Answers the first challenge of `decision` as a client would.
    fn answer(decision: &Decision, pick: Algorithm, user: &str, password: &str) -> String {
        let Decision::Challenge { proxy_authenticate } = decision else {
            panic!("expected a challenge, got {decision:?}");
        };
        let value = proxy_authenticate
            .iter()
            .find(|v| Challenge::parse(v).is_ok_and(|c| c.algorithm == pick))
            .expect("challenge with the algorithm");
        let challenge = Challenge::parse(value).expect("parses");
        assert_eq!(challenge.qop, vec![Qop::Auth]);
        challenge
            .respond(
                &DigestRequest::new("INVITE", URI),
                user,
                password,
                "c0ffee",
                1,
            )
            .to_string()
    }

    #[test]
    fn a_trunk_bound_to_tls_takes_only_calls_over_tls() {
        let now = Instant::now();
        let mut a = admission(
            "[[inbound]]\nname = \"tls\"\nallowed_sources = [\"203.0.113.5\"]\ntransport = \"tls\"\n",
            now,
        );
        let n = number("+4930123456");
        let mut over = |transport| {
            let mut f = facts("203.0.113.5", Some(&n));
            f.transport = transport;
            a.decide(now, &f)
        };
        assert_eq!(over(Transport::Udp), forbidden());
        assert_eq!(over(Transport::Tcp), forbidden());
        assert_eq!(
            over(Transport::Tls),
            Decision::Admit {
                trunk: "tls".into()
            }
        );
    }

    #[test]
    fn source_decides_the_trunk_and_strangers_are_refused() {
        let now = Instant::now();
        let mut a = admission("", now);
        let n = number("+4930123456");
        assert_eq!(
            a.decide(now, &facts("192.0.2.9", Some(&n))),
            Decision::Admit {
                trunk: "open".into()
            }
        );
        assert_eq!(a.active("open"), 1);
        a.release("open");
        assert_eq!(a.active("open"), 0);
        for stranger in ["203.0.113.1", "192.0.3.1", "2001:db9::1", "::1"] {
            assert_eq!(
                a.decide(now, &facts(stranger, Some(&n))),
                forbidden(),
                "{stranger}"
            );
        }
        // IPv4-mapped IPv6 is the IPv4 source.
        assert_eq!(
            a.decide(now, &facts("::ffff:192.0.2.9", Some(&n))),
            Decision::Admit {
                trunk: "open".into()
            }
        );
    }

    #[test]
    fn silent_reject_drops_instead_of_403() {
        let now = Instant::now();
        let mut a = admission("[sip]\nsilent_reject = true\n", now);
        let n = number("+4930123456");
        assert_eq!(
            a.decide(now, &facts("203.0.113.1", Some(&n))),
            Decision::Drop
        );
        let mut scanner = facts("192.0.2.9", Some(&n));
        scanner.user_agent = Some("friendly-scanner");
        assert_eq!(a.decide(now, &scanner), Decision::Drop);
    }

    #[test]
    fn scanners_are_refused_even_from_an_allowed_source() {
        let now = Instant::now();
        let mut a = admission("", now);
        let n = number("+4930123456");
        for ua in [
            "friendly-scanner",
            "sipvicious/0.3.4",
            "SIPVicious PRO",
            "sipcli/v1.8",
            "VaxSIPUserAgent/3.1",
        ] {
            let mut f = facts("192.0.2.9", Some(&n));
            f.user_agent = Some(ua);
            assert_eq!(a.decide(now, &f), forbidden(), "{ua}");
        }
        assert!(!is_scanner("Asterisk PBX 20.1"));
        assert!(!is_scanner("Twilio Gateway"));
    }

    #[test]
    fn a_source_probing_unknown_numbers_is_refused_whatever_it_calls_itself() {
        let now = Instant::now();
        let mut a = admission("[dialin]\nunknown_numbers_per_minute = 3\n", now);
        let served = number("+4930123456");
        let unserved = number("+4940999999");
        // The trunk's own 404s count, and so do the numbers routing finds nowhere.
        for _ in 0..2 {
            assert!(matches!(
                a.decide(now, &facts("192.0.2.9", Some(&unserved))),
                Decision::Refuse { code: 404, .. }
            ));
        }
        assert!(!a.probing("192.0.2.9".parse().expect("ip"), now));
        a.unknown_number("192.0.2.9".parse().expect("ip"), now);
        assert!(a.probing("192.0.2.9".parse().expect("ip"), now));
        // Now every INVITE from it gets the same refusal, a served number's too.
        for dialed in [&served, &unserved] {
            assert_eq!(
                a.decide(now, &facts("192.0.2.9", Some(dialed))),
                forbidden()
            );
        }
        assert_eq!(a.active("open"), 0, "no call admitted");
        // Other sources of the same trunk are not affected.
        assert!(matches!(
            a.decide(now, &facts("192.0.2.10", Some(&served))),
            Decision::Admit { .. }
        ));
        // Once it stops, its budget refills (3 a minute: one every 20 s).
        let later = now + Duration::from_secs(21);
        assert!(matches!(
            a.decide(later, &facts("192.0.2.9", Some(&served))),
            Decision::Admit { .. }
        ));
        // With silent_reject the scanner hears nothing.
        let mut quiet = admission(
            "[sip]\nsilent_reject = true\n[dialin]\nunknown_numbers_per_minute = 1\n",
            now,
        );
        quiet.unknown_number("192.0.2.9".parse().expect("ip"), now);
        assert_eq!(
            quiet.decide(now, &facts("192.0.2.9", Some(&served))),
            Decision::Drop
        );
    }

    #[test]
    fn numbers_the_trunk_does_not_serve_are_404_and_concurrency_is_503() {
        let now = Instant::now();
        let mut a = admission("", now);
        let other = number("+4940999999");
        assert_eq!(
            a.decide(now, &facts("192.0.2.9", Some(&other))),
            Decision::Refuse {
                code: 404,
                reason: "Not Found"
            }
        );
        assert_eq!(
            a.decide(now, &facts("192.0.2.9", None)),
            Decision::Refuse {
                code: 404,
                reason: "Not Found"
            }
        );
        let n = number("+4930123457");
        for _ in 0..2 {
            assert!(matches!(
                a.decide(now, &facts("192.0.2.9", Some(&n))),
                Decision::Admit { .. }
            ));
        }
        assert_eq!(
            a.decide(now, &facts("192.0.2.10", Some(&n))),
            Decision::Busy { retry_after: 5 }
        );
        a.release("open");
        assert!(matches!(
            a.decide(now, &facts("192.0.2.10", Some(&n))),
            Decision::Admit { .. }
        ));
    }

    #[test]
    fn digest_trunk_is_challenged_until_valid_credentials_md5_and_sha256() {
        let now = Instant::now();
        let mut a = admission("", now);
        let n = number("+4930123456");
        let first = a.decide(now, &facts("198.51.100.7", Some(&n)));
        let Decision::Challenge { proxy_authenticate } = &first else {
            panic!("{first:?}");
        };
        let algorithms: Vec<Algorithm> = proxy_authenticate
            .iter()
            .map(|v| Challenge::parse(v).expect("parses").algorithm)
            .collect();
        assert_eq!(algorithms, vec![Algorithm::Sha256, Algorithm::Md5]);
        assert!(proxy_authenticate
            .iter()
            .all(|v| v.contains("realm=\"dialbridge\"") && !v.contains("stale")));
        for alg in [Algorithm::Md5, Algorithm::Sha256] {
            let fresh = a.decide(now, &facts("198.51.100.7", Some(&n)));
            let header = answer(&fresh, alg, "trunk", "s3cret");
            let mut f = facts("198.51.100.7", Some(&n));
            f.proxy_authorization = vec![&header];
            assert_eq!(
                a.decide(now, &f),
                Decision::Admit {
                    trunk: "secure".into()
                },
                "{alg:?}"
            );
        }
        // An algorithm that is not offered is refused, whatever the digest says.
        let mut only_md5 = admission("[dialin]\ndigest_algorithms = [\"MD5\"]\n", now);
        let md5_first = only_md5.decide(now, &facts("198.51.100.7", Some(&n)));
        let Decision::Challenge { proxy_authenticate } = &md5_first else {
            panic!("{md5_first:?}");
        };
        assert_eq!(proxy_authenticate.len(), 1);
        let nonce = Challenge::parse(&proxy_authenticate[0])
            .expect("parses")
            .nonce;
        let sha = Challenge::new("dialbridge", nonce, Algorithm::Sha256)
            .respond(
                &DigestRequest::new("INVITE", URI),
                "trunk",
                "s3cret",
                "c0ffee",
                1,
            )
            .to_string();
        let mut f = facts("198.51.100.7", Some(&n));
        f.proxy_authorization = vec![&sha];
        assert!(matches!(
            only_md5.decide(now, &f),
            Decision::Challenge { .. }
        ));
        // Credentials made for another Request-URI, or from another source, do not pass.
        let header = answer(&first, Algorithm::Md5, "trunk", "s3cret");
        let mut f = facts("198.51.100.7", Some(&n));
        f.request_uri = "sip:+4930999999@127.0.0.1:5060";
        f.proxy_authorization = vec![&header];
        assert!(matches!(a.decide(now, &f), Decision::Challenge { .. }));
        let mut f = facts("2001:db8::5", Some(&n));
        f.proxy_authorization = vec![&header];
        assert!(matches!(a.decide(now, &f), Decision::Challenge { .. }));
    }

    #[test]
    fn unknown_user_and_wrong_password_get_the_same_answer_then_403() {
        let now = Instant::now();
        let mut a = admission("[dialin]\nauth_failures_per_minute = 3\n", now);
        let n = number("+4930123456");
        let first = a.decide(now, &facts("198.51.100.7", Some(&n)));
        let shape = |d: &Decision| match d {
            Decision::Challenge { proxy_authenticate } => proxy_authenticate
                .iter()
                .map(|v| {
                    let mut c = Challenge::parse(v).expect("parses");
                    c.nonce.clear();
                    c
                })
                .collect::<Vec<_>>(),
            other => panic!("expected a challenge, got {other:?}"),
        };
        let wrong_user = answer(&first, Algorithm::Md5, "nobody", "s3cret");
        let wrong_password = answer(&first, Algorithm::Md5, "trunk", "guess");
        let mut f = facts("198.51.100.7", Some(&n));
        f.proxy_authorization = vec![&wrong_user];
        let d1 = a.decide(now, &f);
        f.proxy_authorization = vec![&wrong_password];
        let d2 = a.decide(now, &f);
        assert_eq!(shape(&d1), shape(&d2));
        assert_eq!(shape(&d1), shape(&first));
        // The third failure within a minute spends the allowance: refused outright, even when
        // the next credentials would be right.
        assert_eq!(a.decide(now, &f), forbidden());
        let good = answer(&first, Algorithm::Md5, "trunk", "s3cret");
        f.proxy_authorization = vec![&good];
        assert_eq!(a.decide(now, &f), forbidden());
        // Another source is not affected; after a while the source may try again.
        assert!(matches!(
            a.decide(now, &facts("2001:db8::1", Some(&n))),
            Decision::Challenge { .. }
        ));
        let later = now + Duration::from_secs(30);
        let again = a.decide(later, &facts("198.51.100.7", Some(&n)));
        let good = answer(&again, Algorithm::Sha256, "trunk", "s3cret");
        f.proxy_authorization = vec![&good];
        assert!(matches!(a.decide(later, &f), Decision::Admit { .. }));
    }

    #[test]
    fn expired_nonce_is_stale_and_foreign_nonce_is_challenged_again() {
        let now = Instant::now();
        let mut a = admission("[dialin]\nnonce_lifetime = 60\n", now);
        let n = number("+4930123456");
        let first = a.decide(now, &facts("198.51.100.7", Some(&n)));
        let header = answer(&first, Algorithm::Sha256, "trunk", "s3cret");
        let mut f = facts("198.51.100.7", Some(&n));
        f.proxy_authorization = vec![&header];
        let late = now + Duration::from_secs(61);
        match a.decide(late, &f) {
            Decision::Challenge { proxy_authenticate } => {
                assert!(proxy_authenticate
                    .iter()
                    .all(|v| Challenge::parse(v).expect("parses").stale))
            }
            other => panic!("expected a stale challenge, got {other:?}"),
        }
        // A nonce this gateway did not make (say, from before a restart) is no failure.
        let other = Admission::new(&config(""), now, [9; 32]).challenge(now, f.source, false);
        let foreign = answer(&other, Algorithm::Md5, "trunk", "s3cret");
        f.proxy_authorization = vec![&foreign];
        for _ in 0..10 {
            assert!(matches!(a.decide(now, &f), Decision::Challenge { .. }));
        }
        f.proxy_authorization = vec![&header];
        assert!(matches!(a.decide(now, &f), Decision::Admit { .. }));
    }

    #[test]
    fn replayed_credentials_are_stale_and_nonces_are_unique() {
        let now = Instant::now();
        let mut a = admission("", now);
        let n = number("+4930123456");
        let first = a.decide(now, &facts("198.51.100.7", Some(&n)));
        let second = a.decide(now, &facts("198.51.100.7", Some(&n)));
        let nonce = |d: &Decision| match d {
            Decision::Challenge { proxy_authenticate } => {
                Challenge::parse(&proxy_authenticate[0])
                    .expect("parses")
                    .nonce
            }
            other => panic!("{other:?}"),
        };
        assert_ne!(nonce(&first), nonce(&second), "a nonce per challenge");
        let header = answer(&first, Algorithm::Md5, "trunk", "s3cret");
        let mut f = facts("198.51.100.7", Some(&n));
        f.proxy_authorization = vec![&header];
        assert!(matches!(a.decide(now, &f), Decision::Admit { .. }));
        match a.decide(now, &f) {
            Decision::Challenge { proxy_authenticate } => assert!(proxy_authenticate
                .iter()
                .all(|v| Challenge::parse(v).expect("parses").stale)),
            other => panic!("a replay must not pass: {other:?}"),
        }
        // The same nonce with a higher count is a new request (preemptive authentication).
        let Decision::Challenge { proxy_authenticate } = &first else {
            panic!("{first:?}");
        };
        let c = Challenge::parse(&proxy_authenticate[1]).expect("MD5 challenge");
        let next = c
            .respond(
                &DigestRequest::new("INVITE", URI),
                "trunk",
                "s3cret",
                "c0ffee",
                2,
            )
            .to_string();
        f.proxy_authorization = vec![&next];
        assert!(matches!(a.decide(now, &f), Decision::Admit { .. }));
    }

    #[test]
    fn invite_rate_per_source_is_limited() {
        let now = Instant::now();
        let mut a = admission("[dialin]\ninvites_per_second = 1\ninvite_burst = 3\n", now);
        let n = number("+4930123456");
        for _ in 0..3 {
            assert!(matches!(
                a.decide(now, &facts("192.0.2.9", Some(&n))),
                Decision::Admit { .. }
            ));
            a.release("open");
        }
        assert_eq!(
            a.decide(now, &facts("192.0.2.9", Some(&n))),
            Decision::Busy { retry_after: 1 }
        );
        assert!(matches!(
            a.decide(now, &facts("192.0.2.10", Some(&n))),
            Decision::Admit { .. }
        ));
        a.release("open");
        assert!(matches!(
            a.decide(now + Duration::from_secs(1), &facts("192.0.2.9", Some(&n))),
            Decision::Admit { .. }
        ));
        // Strangers are refused without being counted (they cannot fill the table).
        for _ in 0..10 {
            assert_eq!(a.decide(now, &facts("203.0.113.1", Some(&n))), forbidden());
        }
        assert_eq!(a.invites.tracked(), 2);
        // One IPv6 /64 is one source.
        for i in 0..3 {
            a.decide(now, &facts(&format!("2001:db8:1:2::{i}"), Some(&n)));
        }
        assert!(matches!(
            a.decide(now, &facts("2001:db8:1:2::ffff", Some(&n))),
            Decision::Busy { .. }
        ));
    }
}

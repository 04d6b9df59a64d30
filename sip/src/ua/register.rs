//! Registration as a client (RFC 3261 section 10): one binding of our Contact at a registrar,
//! refreshed before it expires, retried with exponential back-off after a failure, removed with
//! `Expires: 0`. Every REGISTER of a registration shares its Call-ID and From tag, with
//! increasing CSeq (section 10.2.4); a 401/407 is answered with the registration's credentials
//! once per challenge, and a 423 raises the asked expiry to the registrar's Min-Expires.

use std::time::{Duration, Instant};

use crate::auth::{ChallengeKind, Credentials, DigestClient, DigestRequest, RetryDecision};
use crate::endpoint::{Target, TransactionId};
use crate::message::{Method, Request, Response, Uri};

use super::{UaError, UaEvent, UserAgent};

/// A refresh goes out this long before the binding expires, or halfway through a short one.
const REFRESH_MARGIN: Duration = Duration::from_secs(60);
/// Largest expiry honoured from a registrar (a day), so that timers stay meaningful.
const MAX_EXPIRES: Duration = Duration::from_secs(86_400);
/// Retry-After values above this are capped (a registrar must not silence us for days).
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3_600);

/// What to register.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// The Request-URI: the registrar's domain (`sip:carrier.example`).
    pub registrar: Uri,
    /// The address of record, in To and From (`sip:user@carrier.example`).
    pub aor: Uri,
    /// Next hop, resolved by the driver.
    pub target: Target,
    /// User part of the Contact we bind.
    pub contact_user: String,
    /// Answers 401/407 challenges, when set.
    pub credentials: Option<Credentials>,
    /// The expiry we ask for.
    pub expires: Duration,
    /// First wait after a failure; it doubles with each failure in a row, up to `retry_max`.
    pub retry_min: Duration,
    pub retry_max: Duration,
}

/// Names a registration in commands and events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RegistrationHandle(u64);

/// Where a registration stands, as [`UaEvent::Registration`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistrationState {
    /// The registrar bound our Contact for `expires`; a refresh follows before then.
    Registered { expires: Duration },
    /// A REGISTER failed (a final response, 408 for no answer, 503 for a transport error, or
    /// the challenge itself when our credentials were refused): tried again in `retry_in`.
    Failed {
        code: u16,
        reason: String,
        retry_in: Duration,
    },
    /// The binding is removed (or the removal got no answer); the registration is forgotten.
    Unregistered,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// A REGISTER is in flight.
    Registering,
    /// Bound; `next` is the refresh time.
    Registered,
    /// Failed; `next` is the retry time.
    BackingOff,
    /// The REGISTER with `Expires: 0` is in flight.
    Unregistering,
}

#[derive(Debug)]
pub(super) struct Reg {
    config: Registration,
    call_id: String,
    local_tag: String,
    cseq: u32,
    tx: Option<TransactionId>,
    digest: Option<DigestClient>,
    phase: Phase,
    next: Option<Instant>,
    failures: u32,
    /// The expiry asked for now (raised by a 423).
    asking: Duration,
    /// Unregister once the REGISTER in flight is answered.
    remove_after: bool,
    /// A 2xx bound our Contact at some point: a removal has something to remove.
    bound: bool,
}

impl Reg {
    /// A new REGISTER without credentials: its challenge is a new one even when the registrar
    /// repeats a nonce we answered before, and answered nonces do not pile up over months of
    /// refreshes.
    fn new_round(&mut self) {
        self.digest = self
            .config
            .credentials
            .as_ref()
            .map(|c| DigestClient::new(c.username.clone(), c.password.clone()));
    }

    fn back_off(&self) -> Duration {
        let shift = self.failures.saturating_sub(1).min(20);
        self.config
            .retry_min
            .saturating_mul(1 << shift)
            .min(self.config.retry_max.max(self.config.retry_min))
    }
}

/// When to refresh a binding granted for `expires`.
pub fn refresh_after(expires: Duration) -> Duration {
    if expires > REFRESH_MARGIN * 2 {
        expires - REFRESH_MARGIN
    } else {
        expires / 2
    }
}

impl UserAgent {
    /// Starts a registration: the first REGISTER goes out now; its outcome and every later
    /// change come as [`UaEvent::Registration`].
    pub fn register(
        &mut self,
        now: Instant,
        registration: Registration,
    ) -> Result<RegistrationHandle, UaError> {
        let host = self
            .endpoint
            .local_addr(registration.target.transport)
            .map(|a| a.ip().to_string())
            .unwrap_or_else(|| "dialbridge".into());
        let call_id = format!("{}@{host}", self.endpoint.random_token());
        let local_tag = self.tag();
        let handle = RegistrationHandle(self.next_registration);
        self.next_registration += 1;
        let digest = registration
            .credentials
            .as_ref()
            .map(|c| DigestClient::new(c.username.clone(), c.password.clone()));
        let asking = registration.expires;
        self.registrations.insert(
            handle,
            Reg {
                config: registration,
                call_id,
                local_tag,
                cseq: 0,
                tx: None,
                digest,
                phase: Phase::Registering,
                next: None,
                failures: 0,
                asking,
                remove_after: false,
                bound: false,
            },
        );
        if let Err(e) = self.send_register(now, handle, &[]) {
            self.registrations.remove(&handle);
            return Err(e);
        }
        Ok(handle)
    }

    /// Removes the binding (`Expires: 0`); [`RegistrationState::Unregistered`] follows once the
    /// registrar answers, or at once when no binding can exist.
    pub fn unregister(&mut self, now: Instant, handle: RegistrationHandle) -> Result<(), UaError> {
        let reg = self
            .registrations
            .get_mut(&handle)
            .ok_or(UaError::UnknownCall)?;
        match reg.phase {
            Phase::Unregistering => Ok(()),
            // The answer to the REGISTER in flight decides whether a binding exists.
            Phase::Registering => {
                reg.remove_after = true;
                Ok(())
            }
            Phase::BackingOff if !reg.bound => {
                self.forget_registration(handle);
                Ok(())
            }
            Phase::BackingOff | Phase::Registered => self.start_unregister(now, handle),
        }
    }

    /// Registrations not yet forgotten (after [`UserAgent::unregister`], until their answer).
    pub fn registration_count(&self) -> usize {
        self.registrations.len()
    }

    fn start_unregister(
        &mut self,
        now: Instant,
        handle: RegistrationHandle,
    ) -> Result<(), UaError> {
        let Some(reg) = self.registrations.get_mut(&handle) else {
            return Err(UaError::UnknownCall);
        };
        reg.phase = Phase::Unregistering;
        reg.next = None;
        reg.new_round();
        if let Err(e) = self.send_register(now, handle, &[]) {
            self.forget_registration(handle);
            return Err(e);
        }
        Ok(())
    }

    fn forget_registration(&mut self, handle: RegistrationHandle) {
        self.registrations.remove(&handle);
        self.reg_txs.retain(|_, h| *h != handle);
        self.events.push_back(UaEvent::Registration {
            registration: handle,
            state: RegistrationState::Unregistered,
        });
    }

    /// Sends the registration's next REGISTER (`Expires: 0` while unregistering) with `auth`.
    fn send_register(
        &mut self,
        now: Instant,
        handle: RegistrationHandle,
        auth: &[(String, String)],
    ) -> Result<(), UaError> {
        let Some(reg) = self.registrations.get(&handle) else {
            return Err(UaError::UnknownCall);
        };
        let transport = reg.config.target.transport;
        let contact = self.contact_for(&reg.config.contact_user, transport);
        let reg = self
            .registrations
            .get_mut(&handle)
            .ok_or(UaError::UnknownCall)?;
        reg.cseq = reg.cseq.wrapping_add(1);
        let expires = if reg.phase == Phase::Unregistering {
            0
        } else {
            reg.asking.as_secs()
        };
        let mut req = Request::new(Method::Register, reg.config.registrar.clone());
        req.headers.push("Max-Forwards", "70");
        req.headers.push(
            "From",
            format!("<{}>;tag={}", reg.config.aor, reg.local_tag),
        );
        req.headers.push("To", format!("<{}>", reg.config.aor));
        req.headers.push("Call-ID", reg.call_id.clone());
        req.headers.push("CSeq", format!("{} REGISTER", reg.cseq));
        req.headers.push("Contact", contact);
        req.headers.push("Expires", expires.to_string());
        req.headers.push("Allow", super::ALLOW);
        if let Some(ua) = &self.config.user_agent {
            req.headers.push("User-Agent", ua.clone());
        }
        for (name, value) in auth {
            req.headers.push(name, value.clone());
        }
        req.headers.push("Content-Length", "0");
        let target = reg.config.target;
        let tx = self.endpoint.send_request(now, req, target)?;
        if let Some(reg) = self.registrations.get_mut(&handle) {
            reg.tx = Some(tx);
        }
        self.reg_txs.insert(tx, handle);
        Ok(())
    }

    /// The earliest refresh or retry of any registration.
    pub(super) fn registration_timeout(&self) -> Option<Instant> {
        self.registrations.values().filter_map(|r| r.next).min()
    }

    /// Refreshes and retries that are due.
    pub(super) fn registration_timers(&mut self, now: Instant) {
        let due: Vec<RegistrationHandle> = self
            .registrations
            .iter()
            .filter(|(_, r)| r.next.is_some_and(|at| at <= now))
            .map(|(h, _)| *h)
            .collect();
        for handle in due {
            if let Some(reg) = self.registrations.get_mut(&handle) {
                reg.next = None;
                reg.phase = Phase::Registering;
                reg.new_round();
            }
            if let Err(e) = self.send_register(now, handle, &[]) {
                self.registration_failed(now, handle, 503, &e.to_string(), None);
            }
        }
    }

    /// Handles a response to a REGISTER; false when `id` is no registration's.
    pub(super) fn on_register_response(
        &mut self,
        now: Instant,
        id: TransactionId,
        resp: &Response,
    ) -> bool {
        let Some(&handle) = self.reg_txs.get(&id) else {
            return false;
        };
        if resp.code < 200 {
            return true;
        }
        self.reg_txs.remove(&id);
        let Some(reg) = self.registrations.get(&handle) else {
            return true;
        };
        if reg.tx != Some(id) {
            return true;
        }
        let unregistering = reg.phase == Phase::Unregistering;
        if (200..300).contains(&resp.code) {
            if unregistering {
                tracing::info!(registrar = %reg.config.registrar, "unregistered");
                self.forget_registration(handle);
                return true;
            }
            let granted = self.granted(handle, resp);
            let Some(reg) = self.registrations.get_mut(&handle) else {
                return true;
            };
            reg.bound = true;
            if reg.remove_after {
                let _ = self.start_unregister(now, handle);
                return true;
            }
            if let Some(reg) = self.registrations.get_mut(&handle) {
                reg.phase = Phase::Registered;
                reg.failures = 0;
                reg.next = Some(now + refresh_after(granted));
                if let Some(d) = reg.digest.as_mut() {
                    d.on_success();
                }
            }
            self.events.push_back(UaEvent::Registration {
                registration: handle,
                state: RegistrationState::Registered { expires: granted },
            });
            return true;
        }
        if self.answer_register_challenge(now, handle, resp) {
            return true;
        }
        if resp.code == 423 && !unregistering {
            let min = resp
                .headers
                .get("Min-Expires")
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            if let (Some(min), Some(reg)) = (min, self.registrations.get_mut(&handle)) {
                if min > reg.asking && min <= MAX_EXPIRES {
                    reg.asking = min;
                    if self.send_register(now, handle, &[]).is_ok() {
                        return true;
                    }
                }
            }
        }
        if unregistering {
            tracing::info!(code = resp.code, reason = %resp.reason, "unregistration refused");
            self.forget_registration(handle);
            return true;
        }
        let retry_after = resp
            .headers
            .get("Retry-After")
            .and_then(|v| v.split(';').next()?.trim().parse::<u64>().ok())
            .map(|s| Duration::from_secs(s).min(MAX_RETRY_AFTER));
        self.registration_failed(now, handle, resp.code, &resp.reason, retry_after);
        true
    }

    /// A REGISTER got no answer or could not be sent; false when `id` is no registration's.
    pub(super) fn on_register_failure(
        &mut self,
        now: Instant,
        id: TransactionId,
        code: u16,
        reason: &str,
    ) -> bool {
        let Some(handle) = self.reg_txs.remove(&id) else {
            return false;
        };
        let current = self
            .registrations
            .get(&handle)
            .is_some_and(|r| r.tx == Some(id));
        if !current {
            return true;
        }
        let unregistering = self
            .registrations
            .get(&handle)
            .is_some_and(|r| r.phase == Phase::Unregistering);
        if unregistering {
            self.forget_registration(handle);
        } else {
            self.registration_failed(now, handle, code, reason, None);
        }
        true
    }

    fn registration_failed(
        &mut self,
        now: Instant,
        handle: RegistrationHandle,
        code: u16,
        reason: &str,
        retry_after: Option<Duration>,
    ) {
        let Some(reg) = self.registrations.get_mut(&handle) else {
            return;
        };
        reg.tx = None;
        if reg.remove_after {
            // Asked to go away while this REGISTER was out, which bound nothing new.
            if reg.bound {
                let _ = self.start_unregister(now, handle);
            } else {
                self.forget_registration(handle);
            }
            return;
        }
        reg.failures = reg.failures.saturating_add(1);
        let retry_in = reg.back_off().max(retry_after.unwrap_or_default());
        reg.phase = Phase::BackingOff;
        reg.next = Some(now + retry_in);
        self.events.push_back(UaEvent::Registration {
            registration: handle,
            state: RegistrationState::Failed {
                code,
                reason: reason.to_string(),
                retry_in,
            },
        });
    }

    /// The expiry the registrar granted: our Contact's `expires`, else the Expires header, else
    /// what we asked; capped at a day.
    fn granted(&self, handle: RegistrationHandle, resp: &Response) -> Duration {
        let Some(reg) = self.registrations.get(&handle) else {
            return Duration::ZERO;
        };
        let ours = self.endpoint.local_addr(reg.config.target.transport);
        // Our binding among all of the AOR's: the one at our port (a lone one is ours).
        let from_contact = resp.headers.contact().ok().and_then(|contacts| {
            let lone = contacts.len() == 1;
            contacts
                .iter()
                .filter(|c| {
                    lone || matches!((&c.uri, ours), (Uri::Sip(u), Some(a)) if u.port == Some(a.port()))
                })
                .find_map(|c| c.param("expires")?.value.as_deref()?.trim().parse::<u64>().ok())
        });
        let from_header = resp
            .headers
            .get("Expires")
            .and_then(|v| v.trim().parse::<u64>().ok());
        from_contact
            .or(from_header)
            .map(Duration::from_secs)
            .unwrap_or(reg.asking)
            .min(MAX_EXPIRES)
    }

    /// Answers a 401/407 to a REGISTER with the registration's credentials; false when it is
    /// not answered (no credentials, refused, another round of the same nonce).
    fn answer_register_challenge(
        &mut self,
        now: Instant,
        handle: RegistrationHandle,
        resp: &Response,
    ) -> bool {
        let Some(kind) = ChallengeKind::from_status(resp.code) else {
            return false;
        };
        let cnonce = self.cnonce();
        let Some(reg) = self.registrations.get_mut(&handle) else {
            return false;
        };
        let realm = reg
            .config
            .credentials
            .as_ref()
            .and_then(|c| c.realm.clone());
        let uri = reg.config.registrar.to_string();
        let Some(digest) = reg.digest.as_mut() else {
            return false;
        };
        let values: Vec<&str> = resp.headers.get_all(kind.challenge_header()).collect();
        if let Some(realm) = &realm {
            let offered = crate::auth::select_challenge(values.iter().copied()).map(|c| c.realm);
            if offered.as_deref().ok() != Some(realm.as_str()) {
                tracing::info!(?offered, expected = %realm, "REGISTER challenge for another realm: not answered");
                return false;
            }
        }
        let headers = match digest.on_challenge(
            kind,
            values.iter().copied(),
            &DigestRequest::new("REGISTER", &uri),
            &cnonce,
        ) {
            RetryDecision::Retry(headers) => headers,
            RetryDecision::GiveUp(why) => {
                tracing::info!(code = resp.code, %why, "REGISTER challenge not answered");
                return false;
            }
        };
        let auth: Vec<(String, String)> = headers
            .into_iter()
            .map(|h| (h.name.to_string(), h.value))
            .collect();
        self.send_register(now, handle, &auth).is_ok()
    }
}

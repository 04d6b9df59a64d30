//! Registration of the trunks with `register = true`: each registers when the service starts
//! (the SIP core refreshes it and retries with back-off), its state is kept here for `/metrics`
//! and `GET /api/v1/trunks`, and every binding is removed on shutdown. The calls such a trunk
//! sends to our registration are admitted as from an inbound trunk of the same name
//! ([`crate::config::Config::inbound_trunks`]).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dialbridge_sip::endpoint::Target;
use dialbridge_sip::message::Uri;
use dialbridge_sip::ua::{Registration, RegistrationHandle, RegistrationState};
use serde::Serialize;
use tokio::sync::Notify;

use crate::config::{Config, Transport, TrunkConfig};
use crate::runtime::sip::{Credentials, SipHandle};
use crate::sync::lock;

/// A trunk as `GET /api/v1/trunks` shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct TrunkStatus {
    pub name: String,
    pub transport: String,
    /// Whether the trunk registers (`register = true`).
    pub register: bool,
    /// Whether the registrar holds a binding of ours now.
    pub registered: bool,
    /// Seconds until the binding expires (a refresh goes out before); null when not registered.
    pub expires: Option<u64>,
    /// The last failure of its registration (`403 Forbidden`, `408 Request Timeout`, ...);
    /// null once a registration succeeds.
    pub last_error: Option<String>,
}

struct Entry {
    trunk: TrunkConfig,
    handle: Option<RegistrationHandle>,
    expires_at: Option<Instant>,
    last_error: Option<String>,
    /// Unregistered (or never registering): nothing to wait for on shutdown.
    done: bool,
}

/// See the module documentation.
pub struct TrunkRegistrations {
    state: Mutex<State>,
    changed: Notify,
}

struct State {
    entries: Vec<Entry>,
    /// Changes of registrations whose handle [`TrunkRegistrations::start`] has not stored yet:
    /// the registrar may answer before the reply to the register command is read.
    early: Vec<(RegistrationHandle, RegistrationState)>,
}

impl TrunkRegistrations {
    pub fn new(config: &Config) -> Arc<TrunkRegistrations> {
        let entries = config
            .trunks
            .iter()
            .map(|t| Entry {
                trunk: t.clone(),
                handle: None,
                expires_at: None,
                last_error: None,
                done: !t.register,
            })
            .collect();
        Arc::new(TrunkRegistrations {
            state: Mutex::new(State {
                entries,
                early: Vec::new(),
            }),
            changed: Notify::new(),
        })
    }

    /// Starts the registration of every trunk with `register = true`.
    pub async fn start(&self, sip: &SipHandle) {
        let trunks: Vec<TrunkConfig> = lock(&self.state)
            .entries
            .iter()
            .filter(|e| e.trunk.register)
            .map(|e| e.trunk.clone())
            .collect();
        for trunk in trunks {
            let outcome = match registration_of(&trunk) {
                Ok(registration) => {
                    let named = match trunk.transport {
                        Transport::Tls => {
                            sip.tls_peer(registration.target.addr, &trunk.name, &trunk.address.host)
                                .await
                        }
                        _ => Ok(()),
                    };
                    match named {
                        Ok(()) => sip.register(registration).await.map_err(|e| e.to_string()),
                        Err(e) => Err(e),
                    }
                }
                Err(e) => Err(e),
            };
            let mut state = lock(&self.state);
            let State { entries, early } = &mut *state;
            let Some(entry) = entries.iter_mut().find(|e| e.trunk.name == trunk.name) else {
                continue;
            };
            match outcome {
                Ok(handle) => {
                    tracing::info!(trunk = %trunk.name, address = %trunk.address, "registering at the trunk");
                    entry.handle = Some(handle);
                    let (mine, others): (Vec<_>, Vec<_>) = std::mem::take(early)
                        .into_iter()
                        .partition(|(h, _)| *h == handle);
                    *early = others;
                    for (_, change) in mine {
                        apply(entry, change);
                    }
                }
                Err(e) => {
                    tracing::error!(trunk = %trunk.name, error = %e, "cannot register at the trunk");
                    entry.last_error = Some(e);
                    entry.done = true;
                }
            }
            publish(entry);
            drop(state);
            self.changed.notify_waiters();
        }
    }

    /// A registration changed state (a [`dialbridge_sip::ua::UaEvent::Registration`]).
    pub fn on_event(&self, handle: RegistrationHandle, change: RegistrationState) {
        let mut state = lock(&self.state);
        match state.entries.iter_mut().find(|e| e.handle == Some(handle)) {
            Some(entry) => apply(entry, change),
            None => state.early.push((handle, change)),
        }
        drop(state);
        self.changed.notify_waiters();
    }

    /// Every trunk, in configuration order.
    pub fn statuses(&self) -> Vec<TrunkStatus> {
        let now = Instant::now();
        lock(&self.state)
            .entries
            .iter()
            .map(|e| {
                let left = e
                    .expires_at
                    .map(|at| at.saturating_duration_since(now))
                    .filter(|d| !d.is_zero());
                TrunkStatus {
                    name: e.trunk.name.clone(),
                    transport: e.trunk.transport.name().to_string(),
                    register: e.trunk.register,
                    registered: left.is_some(),
                    expires: left.map(|d| d.as_secs()),
                    last_error: e.last_error.clone(),
                }
            })
            .collect()
    }

    /// Removes every binding, waiting at most `limit` for the registrars' answers.
    pub async fn shutdown(&self, sip: &SipHandle, limit: Duration) {
        let handles: Vec<RegistrationHandle> = lock(&self.state)
            .entries
            .iter()
            .filter_map(|e| e.handle)
            .collect();
        for handle in handles {
            if let Err(e) = sip.unregister(handle).await {
                tracing::info!(error = %e, "cannot unregister");
                self.on_event(handle, RegistrationState::Unregistered);
            }
        }
        let all_done = async {
            loop {
                let notified = self.changed.notified();
                if lock(&self.state).entries.iter().all(|e| e.done) {
                    return;
                }
                notified.await;
            }
        };
        if tokio::time::timeout(limit, all_done).await.is_err() {
            tracing::warn!("shutting down before every registrar answered our unregistration");
        }
    }
}

/// A registration's change, in its trunk's entry (with its log line and counter).
fn apply(entry: &mut Entry, change: RegistrationState) {
    let trunk = entry.trunk.name.clone();
    match change {
        RegistrationState::Registered { expires } => {
            tracing::info!(%trunk, expires_s = expires.as_secs(), "registered at the trunk");
            metrics::counter!("dialbridge_trunk_registrations_total", "trunk" => trunk, "result" => "registered").increment(1);
            entry.expires_at = Some(Instant::now() + expires);
            entry.last_error = None;
        }
        RegistrationState::Failed {
            code,
            reason,
            retry_in,
        } => {
            let error = format!("{code} {reason}");
            tracing::warn!(
                %trunk,
                code,
                %reason,
                retry_in_s = retry_in.as_secs(),
                "registration at the trunk failed: {error}; retrying with back-off"
            );
            metrics::counter!("dialbridge_trunk_registrations_total", "trunk" => trunk, "result" => "failed").increment(1);
            // The old binding may still run until its expiry; we cannot count on it.
            entry.expires_at = None;
            entry.last_error = Some(error);
        }
        RegistrationState::Unregistered => {
            tracing::info!(%trunk, "unregistered from the trunk");
            entry.expires_at = None;
            entry.handle = None;
            entry.done = true;
        }
    }
    publish(entry);
}

/// Sets the trunk's registration gauge.
fn publish(entry: &Entry) {
    if entry.trunk.register {
        let registered = entry.expires_at.is_some_and(|at| at > Instant::now());
        metrics::gauge!("dialbridge_trunk_registered", "trunk" => entry.trunk.name.clone())
            .set(if registered { 1.0 } else { 0.0 });
    }
}

/// The REGISTER of a trunk: its account at its domain (`from_domain`, else its host), sent to
/// its address.
fn registration_of(trunk: &TrunkConfig) -> Result<Registration, String> {
    let host = &trunk.address.host;
    let port = trunk.address.port_or_default(trunk.transport);
    let addr = host
        .trim_matches(['[', ']'])
        .parse()
        .map(|ip| std::net::SocketAddr::new(ip, port))
        .map_err(|_| format!("trunk address {host} is no IP address"))?;
    let domain = trunk.from_domain.clone().unwrap_or_else(|| host.clone());
    let user = trunk
        .username
        .clone()
        .unwrap_or_else(|| "dialbridge".into());
    let registrar_text = trunk.uri(&match &trunk.from_domain {
        Some(d) => d.clone(),
        None => format!("{host}:{port}"),
    });
    let registrar = Uri::parse(&registrar_text)
        .map_err(|e| format!("bad registrar URI {registrar_text}: {e:?}"))?;
    let aor_text = format!(
        "sip:{}@{domain}",
        dialbridge_sip::message::escape_user(&user)
    );
    let aor =
        Uri::parse(&aor_text).map_err(|e| format!("bad address of record {aor_text}: {e:?}"))?;
    let credentials = match (&trunk.username, &trunk.password) {
        (Some(username), Some(password)) => Some(Credentials {
            username: username.clone(),
            password: password.clone(),
            realm: trunk.realm.clone(),
        }),
        _ => None,
    };
    Ok(Registration {
        registrar,
        aor,
        target: Target {
            transport: trunk.transport,
            addr,
        },
        contact_user: user,
        credentials,
        expires: trunk.register_expires.0,
        retry_min: trunk.register_retry.0,
        retry_max: trunk.register_retry_max.0,
    })
}

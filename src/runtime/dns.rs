//! Trunk addresses through DNS (RFC 3263): NAPTR, SRV, then A/AAAA, asked with hickory's
//! resolver at the system's name servers or at `[sip] dns_servers`. Which records to follow and
//! in which order is decided by `dialbridge_sip::locate`; this module does the asking.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use dialbridge_sip::locate::{self, Naptr, Srv};
use dialbridge_sip::transport::Transport;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{RData, RecordType};
use hickory_resolver::TokioResolver;

/// How long one question to a name server may take before the next attempt.
const QUERY_TIMEOUT: Duration = Duration::from_secs(2);

/// Why a trunk address gave nothing to call.
#[derive(Debug, thiserror::Error)]
pub enum LocateError {
    #[error("{name}: {reason}")]
    Lookup { name: String, reason: String },
    #[error("{name} resolves to no address")]
    Nothing { name: String },
}

pub struct SipResolver {
    resolver: TokioResolver,
}

impl SipResolver {
    /// A resolver asking `servers` (UDP, then TCP for long answers), or the system's name
    /// servers (`/etc/resolv.conf`) when the list is empty.
    pub fn new(servers: &[SocketAddr]) -> Result<SipResolver, String> {
        let mut options = ResolverOpts::default();
        options.timeout = QUERY_TIMEOUT;
        let builder = if servers.is_empty() {
            TokioResolver::builder_tokio().unwrap_or_else(|e| {
                tracing::warn!(error = %e, "no system DNS configuration: trunk host names will not resolve");
                TokioResolver::builder_with_config(
                    ResolverConfig::from_parts(None, Vec::new(), Vec::new()),
                    TokioRuntimeProvider::default(),
                )
            })
        } else {
            let name_servers = servers
                .iter()
                .map(|server| {
                    let connections = [ConnectionConfig::udp(), ConnectionConfig::tcp()]
                        .into_iter()
                        .map(|mut c| {
                            c.port = server.port();
                            c
                        })
                        .collect();
                    NameServerConfig::new(server.ip(), true, connections)
                })
                .collect();
            TokioResolver::builder_with_config(
                ResolverConfig::from_name_servers(name_servers),
                TokioRuntimeProvider::default(),
            )
        };
        let resolver = builder
            .with_options(options)
            .build()
            .map_err(|e| format!("DNS resolver: {e}"))?;
        Ok(SipResolver { resolver })
    }

    /// Every address to send to for `host` (with `port`, or found by NAPTR and SRV without
    /// one) over `transport`, in the order to try them: RFC 3263 section 4.
    pub async fn locate(
        &self,
        host: &str,
        port: Option<u16>,
        transport: Transport,
    ) -> Result<Vec<SocketAddr>, LocateError> {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(
                ip,
                port.unwrap_or(locate::default_port(transport)),
            )]);
        }
        let mut found = Vec::new();
        match port {
            Some(port) => self.addresses(host, port, &mut found).await?,
            None => {
                let naptr = self.naptr(host).await?;
                let mut servers = Vec::new();
                for name in locate::srv_names(host, transport, &naptr) {
                    servers.extend(self.srv(&name).await?);
                }
                if servers.is_empty() {
                    self.addresses(host, locate::default_port(transport), &mut found)
                        .await?;
                } else {
                    for server in servers {
                        // A target that does not resolve is skipped: the next may.
                        if let Err(e) = self
                            .addresses(&server.target, server.port, &mut found)
                            .await
                        {
                            tracing::warn!(error = %e, "SRV target skipped");
                        }
                    }
                }
            }
        }
        if found.is_empty() {
            return Err(LocateError::Nothing {
                name: host.to_string(),
            });
        }
        tracing::debug!(%host, ?found, "trunk address located");
        Ok(found)
    }

    async fn naptr(&self, name: &str) -> Result<Vec<Naptr>, LocateError> {
        let answer = match self.resolver.lookup(name, RecordType::NAPTR).await {
            Ok(answer) => answer,
            Err(e) if e.is_no_records_found() => return Ok(Vec::new()),
            Err(e) => return Err(lookup_error(name, e)),
        };
        Ok(answer
            .answers()
            .iter()
            .filter_map(|record| match &record.data {
                RData::NAPTR(n) => Some(Naptr {
                    order: n.order,
                    preference: n.preference,
                    flags: String::from_utf8_lossy(&n.flags).into_owned(),
                    service: String::from_utf8_lossy(&n.services).into_owned(),
                    replacement: n.replacement.to_ascii(),
                }),
                _ => None,
            })
            .collect())
    }

    async fn srv(&self, name: &str) -> Result<Vec<Srv>, LocateError> {
        let answer = match self.resolver.lookup(name, RecordType::SRV).await {
            Ok(answer) => answer,
            Err(e) if e.is_no_records_found() => return Ok(Vec::new()),
            Err(e) => return Err(lookup_error(name, e)),
        };
        let records = answer
            .answers()
            .iter()
            .filter_map(|record| match &record.data {
                RData::SRV(s) => Some(Srv {
                    priority: s.priority,
                    weight: s.weight,
                    port: s.port,
                    target: s.target.to_ascii(),
                }),
                _ => None,
            })
            .collect();
        Ok(locate::order_srv(records, |n| rand::random_range(0..=n)))
    }

    /// The A and AAAA addresses of `name`, with `port`, appended to `found` (once each).
    async fn addresses(
        &self,
        name: &str,
        port: u16,
        found: &mut Vec<SocketAddr>,
    ) -> Result<(), LocateError> {
        let ips = self
            .resolver
            .lookup_ip(name)
            .await
            .map_err(|e| lookup_error(name, e))?;
        for ip in ips.iter() {
            let addr = SocketAddr::new(ip, port);
            if !found.contains(&addr) {
                found.push(addr);
            }
        }
        Ok(())
    }
}

fn lookup_error(name: &str, e: impl std::fmt::Display) -> LocateError {
    LocateError::Lookup {
        name: name.to_string(),
        reason: e.to_string(),
    }
}

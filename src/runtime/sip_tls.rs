//! SIP over TLS (RFC 3261 section 26.2, RFC 5630): the rustls configurations of the driver.
//!
//! What we serve uses `[sip] tls_certificate` and `tls_private_key`; connections we open check the
//! peer's certificate and its name (the trunk's host) against the system's roots, or against the
//! trunk's `tls_ca` instead.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore, ServerConfig};

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The server side of `tls:` listeners, from PEM files.
pub fn server_config(certificate: &Path, private_key: &Path) -> anyhow::Result<Arc<ServerConfig>> {
    let chain = CertificateDer::pem_file_iter(certificate)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("cannot read sip.tls_certificate {}", certificate.display()))?;
    anyhow::ensure!(
        !chain.is_empty(),
        "sip.tls_certificate {} holds no certificate",
        certificate.display()
    );
    let key = PrivateKeyDer::from_pem_file(private_key)
        .with_context(|| format!("cannot read sip.tls_private_key {}", private_key.display()))?;
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .context("sip.tls_certificate and sip.tls_private_key do not make a usable pair")?;
    Ok(Arc::new(config))
}

/// The client side for one trunk: its `tls_ca` file as the only roots, else the system's.
pub fn client_config(ca: Option<&Path>) -> anyhow::Result<Arc<ClientConfig>> {
    let mut roots = RootCertStore::empty();
    match ca {
        Some(path) => {
            for cert in CertificateDer::pem_file_iter(path)
                .with_context(|| format!("cannot read tls_ca {}", path.display()))?
            {
                let cert = cert.with_context(|| format!("bad PEM in tls_ca {}", path.display()))?;
                roots
                    .add(cert)
                    .with_context(|| format!("bad CA certificate in {}", path.display()))?;
            }
            anyhow::ensure!(
                !roots.is_empty(),
                "tls_ca {} holds no certificate",
                path.display()
            );
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for e in &found.errors {
                tracing::warn!(error = %e, "cannot load a system CA certificate");
            }
            let (_, ignored) = roots.add_parsable_certificates(found.certs);
            if ignored > 0 {
                tracing::debug!(ignored, "system CA certificates rustls cannot use");
            }
        }
    }
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Whom a TLS connection to an address is meant to reach.
#[derive(Clone)]
pub struct TlsPeer {
    /// Checked against the peer's certificate.
    pub server_name: ServerName<'static>,
    pub config: Arc<ClientConfig>,
}

/// The client configurations of the driver: per trunk (built at start, so a bad `tls_ca` stops
/// the service there), and the peers the call layer named for the addresses it resolved.
#[derive(Default)]
pub struct TlsClients {
    trunks: HashMap<String, Arc<ClientConfig>>,
    /// For destinations no trunk named (a phone's Contact): the system's roots, built on first use.
    default: Option<Arc<ClientConfig>>,
    peers: HashMap<SocketAddr, TlsPeer>,
}

impl TlsClients {
    /// `trunks`: name and `tls_ca` of each trunk that uses TLS.
    pub fn new<'a>(
        trunks: impl IntoIterator<Item = (&'a str, Option<&'a Path>)>,
    ) -> anyhow::Result<TlsClients> {
        let mut configs = HashMap::new();
        for (name, ca) in trunks {
            let config = client_config(ca).with_context(|| format!("trunk `{name}`"))?;
            configs.insert(name.to_string(), config);
        }
        Ok(TlsClients {
            trunks: configs,
            default: None,
            peers: HashMap::new(),
        })
    }

    /// Connections to `addr` are for `trunk`, whose certificate must name `host`.
    pub fn name_peer(&mut self, addr: SocketAddr, trunk: &str, host: &str) -> Result<(), String> {
        let host = host.trim_matches(['[', ']']);
        let server_name = ServerName::try_from(host.to_string())
            .map_err(|e| format!("`{host}` cannot be checked as a TLS server name: {e}"))?;
        let config = match self.trunks.get(trunk) {
            Some(config) => config.clone(),
            None => self.default_config()?,
        };
        self.peers.insert(
            addr,
            TlsPeer {
                server_name,
                config,
            },
        );
        Ok(())
    }

    fn default_config(&mut self) -> Result<Arc<ClientConfig>, String> {
        if let Some(config) = &self.default {
            return Ok(config.clone());
        }
        let config = client_config(None).map_err(|e| format!("{e:#}"))?;
        self.default = Some(config.clone());
        Ok(config)
    }

    /// The peer for a connection to `addr`: the one named for it, else its IP address checked
    /// against the system's roots.
    pub fn peer(&mut self, addr: SocketAddr) -> Result<TlsPeer, String> {
        if let Some(peer) = self.peers.get(&addr) {
            return Ok(peer.clone());
        }
        Ok(TlsPeer {
            server_name: ServerName::IpAddress(addr.ip().into()),
            config: self.default_config()?,
        })
    }
}

//! The configuration file: one TOML document, every key documented in `config/dialbridge.toml`.
//!
//! Parsing and validation happen together: a value of the wrong shape fails while it is deserialized,
//! so each error names the key path and the line it came from. The service never starts on a bad file.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::de::{self, Deserializer};
use serde::Deserialize;

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
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    #[serde(default = "default_http_listen")]
    pub listen: SocketAddr,
    /// Base URL clients reach the API at (used in `Location` headers). Defaults to `http://{listen}`.
    #[serde(default)]
    pub public_url: Option<HttpUrl>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: default_http_listen(),
            public_url: None,
        }
    }
}

fn default_http_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SipConfig {
    #[serde(default = "default_sip_listen")]
    pub listen: Vec<SipListen>,
}

impl Default for SipConfig {
    fn default() -> Self {
        SipConfig {
            listen: default_sip_listen(),
        }
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
}

impl Default for MediaConfig {
    fn default() -> Self {
        MediaConfig {
            rtp_ports: default_rtp_ports(),
            webrtc_listen: default_webrtc_listen(),
            public_ip: None,
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
    #[serde(default)]
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
        if self.sip.listen.is_empty() {
            return Err((
                "sip.listen".into(),
                "at least one listen address is needed".into(),
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
            if !(trunk.calls_per_second.is_finite() && trunk.calls_per_second >= 0.0) {
                return Err((
                    format!("trunks[{i}].calls_per_second"),
                    "must be a number >= 0 (0 means no limit)".into(),
                ));
            }
        }
        Ok(())
    }

    /// The base URL clients use, without a trailing slash.
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

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    #[default]
    Udp,
    Tcp,
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
        })
    }
}

/// A SIP listen address written `udp:127.0.0.1:5060` or `tcp:[::1]:5060`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SipListen {
    pub transport: Transport,
    pub addr: SocketAddr,
}

impl FromStr for SipListen {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (transport, addr) = s
            .split_once(':')
            .ok_or_else(|| format!("`{s}` is not of the form `udp:IP:PORT` or `tcp:IP:PORT`"))?;
        let transport = match transport {
            "udp" => Transport::Udp,
            "tcp" => Transport::Tcp,
            other => return Err(format!("unknown transport `{other}` (use udp or tcp)")),
        };
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
        write!(f, "{}:{}", self.transport, self.addr)
    }
}

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

/// `host:port` of a SIP peer; the host may be a name, an IPv4 or a bracketed IPv6 address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    pub host: String,
    pub port: u16,
}

impl FromStr for HostPort {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("`{s}` is not of the form host:port");
        let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
        let port: u16 = port.parse().ok().filter(|p| *p != 0).ok_or_else(bad)?;
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
deserialize_from_str!(HostPort, "a host:port address");

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
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
        let e = error_of("[media]\nrtp_ports = \"20000\"\n");
        assert!(e.contains("media.rtp_ports"), "{e}");
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
    fn syntax_error_has_line() {
        let e = error_of("[http]\nlisten = \n");
        assert!(e.contains("line 2"), "{e}");
    }
}

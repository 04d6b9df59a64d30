//! SDES keys for SRTP (RFC 4568): the `a=crypto` attribute and the offer/answer of its keys.

use std::fmt;

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use base64::Engine;

/// Length of an AES_CM_128 master key and salt together, as `inline:` carries them.
pub const KEY_SALT_LEN: usize = 30;

/// The crypto suites we take (RFC 4568 section 6.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CryptoSuite {
    AesCm128HmacSha1_80,
    AesCm128HmacSha1_32,
}

impl CryptoSuite {
    pub const ALL: [CryptoSuite; 2] = [
        CryptoSuite::AesCm128HmacSha1_80,
        CryptoSuite::AesCm128HmacSha1_32,
    ];

    pub fn name(self) -> &'static str {
        match self {
            CryptoSuite::AesCm128HmacSha1_80 => "AES_CM_128_HMAC_SHA1_80",
            CryptoSuite::AesCm128HmacSha1_32 => "AES_CM_128_HMAC_SHA1_32",
        }
    }

    pub fn from_name(name: &str) -> Option<CryptoSuite> {
        CryptoSuite::ALL
            .into_iter()
            .find(|s| s.name().eq_ignore_ascii_case(name))
    }
}

/// Whether a leg uses SRTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SrtpPolicy {
    /// Plain RTP only: offers carry no keys, and `RTP/SAVP` offers are refused.
    #[default]
    Off,
    /// Keys offered beside `RTP/AVP` (the far end may ignore them); offered keys are taken.
    Optional,
    /// `RTP/SAVP` with keys, and an answer without usable keys fails.
    Required,
}

/// One `a=crypto` line: `TAG SUITE inline:KEY_SALT[|LIFETIME][|MKI:LEN] [SESSION-PARAMS]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Crypto {
    pub tag: u32,
    /// `None` for a suite we do not implement (the line is then skipped, not an error).
    pub suite: Option<CryptoSuite>,
    pub suite_name: String,
    pub key_salt: [u8; KEY_SALT_LEN],
    /// `|2^31` or `|1048576`, as written.
    pub lifetime: Option<String>,
    /// `|1:4`: an MKI, which we do not use (such keys are skipped).
    pub mki: Option<String>,
    /// Session parameters (`UNENCRYPTED_SRTP`, `KDR=...`); keys with any are skipped.
    pub session_params: Vec<String>,
}

impl Crypto {
    /// A line of ours: no lifetime, MKI or session parameters.
    pub fn new(tag: u32, suite: CryptoSuite, key_salt: [u8; KEY_SALT_LEN]) -> Crypto {
        Crypto {
            tag,
            suite: Some(suite),
            suite_name: suite.name().to_string(),
            key_salt,
            lifetime: None,
            mki: None,
            session_params: Vec::new(),
        }
    }

    /// Parses the value of an `a=crypto` attribute.
    pub fn parse(value: &str) -> Result<Crypto, String> {
        let mut fields = value.split_ascii_whitespace();
        let tag = fields.next().ok_or("crypto: empty")?;
        if tag.is_empty() || tag.len() > 9 || !tag.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("crypto: bad tag `{tag}`"));
        }
        let tag: u32 = tag
            .parse()
            .map_err(|_| format!("crypto: bad tag `{tag}`"))?;
        let suite_name = fields.next().ok_or("crypto: no crypto suite")?;
        let key_params = fields.next().ok_or("crypto: no key parameters")?;
        let session_params = fields.map(str::to_string).collect();
        // Several keys (`;`-separated) are for re-keying, which we do not do: the first one counts.
        let first = key_params.split(';').next().unwrap_or_default();
        let info = first
            .strip_prefix("inline:")
            .ok_or_else(|| format!("crypto: key method of `{first}` is not inline"))?;
        let mut parts = info.split('|');
        let b64 = parts.next().unwrap_or_default();
        let bytes = STANDARD
            .decode(b64)
            .or_else(|_| STANDARD_NO_PAD.decode(b64))
            .map_err(|_| "crypto: key is not base64".to_string())?;
        let key_salt: [u8; KEY_SALT_LEN] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| format!("crypto: key and salt are {} bytes, not 30", bytes.len()))?;
        let (mut lifetime, mut mki) = (None, None);
        for part in parts {
            if part.contains(':') {
                if mki.replace(part.to_string()).is_some() {
                    return Err("crypto: two MKIs".into());
                }
            } else if lifetime.replace(part.to_string()).is_some() {
                return Err("crypto: two lifetimes".into());
            }
        }
        Ok(Crypto {
            tag,
            suite: CryptoSuite::from_name(suite_name),
            suite_name: suite_name.to_string(),
            key_salt,
            lifetime,
            mki,
            session_params,
        })
    }

    /// A key we can use as it is: a known suite, no MKI, no session parameters.
    pub fn usable(&self) -> Option<CryptoSuite> {
        self.suite
            .filter(|_| self.mki.is_none() && self.session_params.is_empty())
    }
}

impl fmt::Display for Crypto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} inline:{}",
            self.tag,
            self.suite_name,
            STANDARD.encode(self.key_salt)
        )?;
        if let Some(lifetime) = &self.lifetime {
            write!(f, "|{lifetime}")?;
        }
        if let Some(mki) = &self.mki {
            write!(f, "|{mki}")?;
        }
        for p in &self.session_params {
            write!(f, " {p}")?;
        }
        Ok(())
    }
}

/// The keys of an SRTP session both sides agreed on: we protect with ours and check theirs.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SrtpKeys {
    pub suite: CryptoSuite,
    pub local: [u8; KEY_SALT_LEN],
    pub remote: [u8; KEY_SALT_LEN],
}

impl fmt::Debug for SrtpKeys {
    // Keys never go to logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SrtpKeys")
            .field("suite", &self.suite)
            .finish_non_exhaustive()
    }
}

impl super::MediaDescription {
    /// The stream's `a=crypto` lines that parse, in order.
    pub fn cryptos(&self) -> Vec<Crypto> {
        self.attributes
            .iter()
            .filter(|a| a.name == "crypto")
            .filter_map(|a| Crypto::parse(a.value.as_deref().unwrap_or("")).ok())
            .collect()
    }

    /// `RTP/SAVP` or `RTP/SAVPF`: the stream is SRTP only.
    pub fn is_secure_rtp(&self) -> bool {
        self.proto.eq_ignore_ascii_case("RTP/SAVP") || self.proto.eq_ignore_ascii_case("RTP/SAVPF")
    }
}

//! HTTP Digest authentication for SIP (RFC 3261 section 22, RFC 2617, RFC 7616, RFC 8760).
//!
//! Client side: parse `WWW-Authenticate` / `Proxy-Authenticate` values, compute `Authorization` /
//! `Proxy-Authorization` values, and [`DigestClient`] decides whether a challenged request may be
//! retried (each challenge is answered once, so a wrong password never loops).
//! Server side: build a challenge, parse an `Authorization` value and verify it against a password.
//!
//! Sans-IO: the cnonce and the server nonce are supplied by the caller.
//!
//! ```
//! use dialbridge_sip::auth::*;
//!
//! let mut client = DigestClient::new("trunk-user", "secret");
//! let uri = "sip:+15551234567@trunk.example.com:5060;transport=tcp";
//! let request = DigestRequest::new("INVITE", uri);
//! // A 407 arrives with one or more Proxy-Authenticate values.
//! let challenge = r#"Digest realm="trunk", nonce="abc", algorithm=SHA-256, qop="auth""#;
//! let kind = ChallengeKind::from_status(407).unwrap();
//! match client.on_challenge(kind, [challenge], &request, "0a4f113b") {
//!     RetryDecision::Retry(headers) => {
//!         // Resend the INVITE with a new CSeq and these headers.
//!         assert_eq!(headers[0].name, "Proxy-Authorization");
//!     }
//!     RetryDecision::GiveUp(reason) => panic!("{reason}"),
//! }
//! // The same nonce again (not stale): the password is wrong, stop.
//! assert!(matches!(
//!     client.on_challenge(kind, [challenge], &request, "0a4f113b"),
//!     RetryDecision::GiveUp(GiveUp::CredentialsRejected { .. })
//! ));
//! ```

use std::collections::HashSet;
use std::fmt;

use md5::Md5;
use sha2::{Digest, Sha256, Sha512_256};

/// Digest hash algorithm named by the `algorithm` parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    Md5,
    Md5Sess,
    Sha256,
    Sha256Sess,
    /// SHA-512/256 (RFC 7616, RFC 8760).
    Sha512_256,
    Sha512_256Sess,
}

impl Algorithm {
    /// Parses an `algorithm` value, case-insensitively.
    pub fn parse(s: &str) -> Result<Self, AuthError> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("MD5") {
            Ok(Self::Md5)
        } else if s.eq_ignore_ascii_case("MD5-sess") {
            Ok(Self::Md5Sess)
        } else if s.eq_ignore_ascii_case("SHA-256") {
            Ok(Self::Sha256)
        } else if s.eq_ignore_ascii_case("SHA-256-sess") {
            Ok(Self::Sha256Sess)
        } else if s.eq_ignore_ascii_case("SHA-512-256") {
            Ok(Self::Sha512_256)
        } else if s.eq_ignore_ascii_case("SHA-512-256-sess") {
            Ok(Self::Sha512_256Sess)
        } else {
            Err(AuthError::UnsupportedAlgorithm(s.to_string()))
        }
    }

    /// The name as written in headers.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Md5 => "MD5",
            Self::Md5Sess => "MD5-sess",
            Self::Sha256 => "SHA-256",
            Self::Sha256Sess => "SHA-256-sess",
            Self::Sha512_256 => "SHA-512-256",
            Self::Sha512_256Sess => "SHA-512-256-sess",
        }
    }

    fn is_sess(self) -> bool {
        matches!(
            self,
            Self::Md5Sess | Self::Sha256Sess | Self::Sha512_256Sess
        )
    }

    /// Higher is preferred when a response carries several challenges (RFC 8760 section 2.4).
    fn strength(self) -> u8 {
        match self {
            Self::Md5 | Self::Md5Sess => 1,
            Self::Sha256 | Self::Sha256Sess => 2,
            Self::Sha512_256 | Self::Sha512_256Sess => 3,
        }
    }

    /// Lowercase hex digest of `data`.
    pub fn hash_hex(self, data: &[u8]) -> String {
        match self {
            Self::Md5 | Self::Md5Sess => hex(&Md5::digest(data)),
            Self::Sha256 | Self::Sha256Sess => hex(&Sha256::digest(data)),
            Self::Sha512_256 | Self::Sha512_256Sess => hex(&Sha512_256::digest(data)),
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Quality of protection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Qop {
    Auth,
    AuthInt,
}

impl Qop {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auth => "auth",
            Self::AuthInt => "auth-int",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("auth") {
            Some(Self::Auth)
        } else if s.eq_ignore_ascii_case("auth-int") {
            Some(Self::AuthInt)
        } else {
            None
        }
    }
}

/// What was wrong with a digest header or a verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthError {
    /// The header value is empty.
    Empty,
    /// The scheme is not `Digest` (e.g. `Basic`, `Bearer`).
    NotDigest(String),
    /// A required parameter is absent.
    MissingParam(&'static str),
    /// A parameter appears twice.
    DuplicateParam(String),
    /// A parameter value is malformed.
    InvalidParam { name: &'static str, value: String },
    /// `algorithm` names something we do not implement.
    UnsupportedAlgorithm(String),
    /// `qop` lists neither `auth` nor `auth-int`.
    UnsupportedQop(String),
    /// Syntax error at a byte offset.
    Syntax { at: usize, expected: &'static str },
    /// Verification: realm differs from the challenge.
    RealmMismatch,
    /// Verification: nonce differs from the challenge.
    NonceMismatch,
    /// Verification: opaque differs from the challenge.
    OpaqueMismatch,
    /// Verification: algorithm differs from the challenge.
    AlgorithmMismatch,
    /// Verification: the challenge required a qop but the credentials carry none (or an unoffered one).
    QopMismatch,
    /// Verification: the response hash does not match the password.
    WrongResponse,
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => write!(f, "empty digest header"),
            Self::NotDigest(s) => write!(f, "auth scheme '{s}' is not Digest"),
            Self::MissingParam(p) => write!(f, "digest parameter '{p}' is missing"),
            Self::DuplicateParam(p) => write!(f, "digest parameter '{p}' appears twice"),
            Self::InvalidParam { name, value } => {
                write!(f, "digest parameter '{name}' has invalid value '{value}'")
            }
            Self::UnsupportedAlgorithm(a) => write!(f, "unsupported digest algorithm '{a}'"),
            Self::UnsupportedQop(q) => write!(f, "unsupported qop '{q}'"),
            Self::Syntax { at, expected } => {
                write!(
                    f,
                    "digest header syntax error at byte {at}: expected {expected}"
                )
            }
            Self::RealmMismatch => write!(f, "realm does not match the challenge"),
            Self::NonceMismatch => write!(f, "nonce does not match the challenge"),
            Self::OpaqueMismatch => write!(f, "opaque does not match the challenge"),
            Self::AlgorithmMismatch => write!(f, "algorithm does not match the challenge"),
            Self::QopMismatch => write!(f, "qop does not match the challenge"),
            Self::WrongResponse => write!(f, "digest response does not match"),
        }
    }
}

impl std::error::Error for AuthError {}

// ---------------------------------------------------------------------------------------------
// Lexing of `scheme param=value, param="quoted", ...` (RFC 3261 section 25.1 / RFC 7235).

fn is_token_char(c: u8) -> bool {
    c.is_ascii_alphanumeric()
        || matches!(
            c,
            b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~'
        )
}

struct Cursor<'a> {
    s: &'a str,
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn new(s: &'a str) -> Self {
        Self { s, pos: 0 }
    }

    fn peek(&self) -> Option<u8> {
        self.s.as_bytes().get(self.pos).copied()
    }

    fn eof(&self) -> bool {
        self.pos >= self.s.len()
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\r' | b'\n')) {
            self.pos += 1;
        }
    }

    fn skip_ws_and_commas(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\r' | b'\n' | b',')) {
            self.pos += 1;
        }
    }

    fn token(&mut self) -> Option<&'a str> {
        let start = self.pos;
        while self.peek().is_some_and(is_token_char) {
            self.pos += 1;
        }
        // Token characters are ASCII, so both ends are char boundaries.
        self.s.get(start..self.pos).filter(|t| !t.is_empty())
    }

    /// A quoted-string; the cursor is on the opening quote. Backslash escapes are undone.
    fn quoted(&mut self) -> Result<String, AuthError> {
        let open = self.pos;
        self.pos += 1;
        let mut out = String::new();
        let rest = self.s.get(self.pos..).unwrap_or("");
        let mut chars = rest.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    self.pos += i + 1;
                    return Ok(out);
                }
                '\\' => match chars.next() {
                    Some((_, e)) => out.push(e),
                    None => break,
                },
                c => out.push(c),
            }
        }
        Err(AuthError::Syntax {
            at: open,
            expected: "closing quote",
        })
    }

    /// An unquoted value: everything up to a comma or whitespace (lenient: nonces in the wild
    /// contain '/', '=' and ':').
    fn bare_value(&mut self) -> &'a str {
        let start = self.pos;
        while !matches!(
            self.peek(),
            None | Some(b',' | b' ' | b'\t' | b'\r' | b'\n' | b'"')
        ) {
            self.pos += 1;
        }
        self.s.get(start..self.pos).unwrap_or("")
    }
}

/// One scheme with its parameters, as found in a header value.
#[derive(Debug)]
struct RawChallenge {
    scheme: String,
    params: Vec<(String, String, bool)>,
}

/// Splits a header value into schemes with parameters. A header value may hold several challenges
/// (`Digest realm=..., Digest realm=...`, RFC 7235 section 4.1).
fn lex_schemes(value: &str) -> Result<Vec<RawChallenge>, AuthError> {
    let mut c = Cursor::new(value);
    let mut out = Vec::new();
    c.skip_ws_and_commas();
    if c.eof() {
        return Err(AuthError::Empty);
    }
    while !c.eof() {
        let scheme = c.token().ok_or(AuthError::Syntax {
            at: c.pos,
            expected: "auth scheme",
        })?;
        let mut raw = RawChallenge {
            scheme: scheme.to_string(),
            params: Vec::new(),
        };
        loop {
            c.skip_ws_and_commas();
            if c.eof() {
                break;
            }
            let mark = c.pos;
            let Some(name) = c.token() else {
                return Err(AuthError::Syntax {
                    at: c.pos,
                    expected: "parameter name",
                });
            };
            c.skip_ws();
            if c.peek() != Some(b'=') {
                // A token without '=' starts the next challenge.
                c.pos = mark;
                break;
            }
            c.pos += 1;
            c.skip_ws();
            let (val, quoted) = if c.peek() == Some(b'"') {
                (c.quoted()?, true)
            } else {
                (c.bare_value().to_string(), false)
            };
            raw.params.push((name.to_ascii_lowercase(), val, quoted));
            c.skip_ws();
            match c.peek() {
                None | Some(b',') => {}
                // Missing comma between parameters: tolerated.
                Some(_) => {}
            }
        }
        out.push(raw);
    }
    Ok(out)
}

struct Params {
    params: Vec<(String, String, bool)>,
}

impl Params {
    fn from_raw(raw: RawChallenge) -> Result<Self, AuthError> {
        let mut seen = HashSet::with_capacity(raw.params.len());
        for (n, _, _) in &raw.params {
            if !seen.insert(n.as_str()) {
                return Err(AuthError::DuplicateParam(n.clone()));
            }
        }
        Ok(Self { params: raw.params })
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _, _)| n == name)
            .map(|(_, v, _)| v.as_str())
    }

    fn require(&self, name: &'static str) -> Result<&str, AuthError> {
        self.get(name).ok_or(AuthError::MissingParam(name))
    }
}

fn digest_params(raw: RawChallenge) -> Result<Params, AuthError> {
    if !raw.scheme.eq_ignore_ascii_case("Digest") {
        return Err(AuthError::NotDigest(raw.scheme));
    }
    Params::from_raw(raw)
}

// ---------------------------------------------------------------------------------------------
// Challenge

/// The parts of a request that digest hashes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DigestRequest<'a> {
    pub method: &'a str,
    /// The Request-URI exactly as sent, including port and parameters such as `;transport=tcp`.
    pub uri: &'a str,
    /// The message body; only hashed for qop=auth-int.
    pub body: &'a [u8],
}

impl<'a> DigestRequest<'a> {
    pub fn new(method: &'a str, uri: &'a str) -> Self {
        Self {
            method,
            uri,
            body: b"",
        }
    }

    pub fn with_body(mut self, body: &'a [u8]) -> Self {
        self.body = body;
        self
    }
}

/// A `WWW-Authenticate` / `Proxy-Authenticate` Digest challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub realm: String,
    pub nonce: String,
    pub opaque: Option<String>,
    pub algorithm: Algorithm,
    /// Offered qop values; empty means RFC 2069 style (no qop).
    pub qop: Vec<Qop>,
    pub stale: bool,
    pub domain: Option<String>,
}

impl Challenge {
    /// A server challenge with qop=auth.
    pub fn new(realm: impl Into<String>, nonce: impl Into<String>, algorithm: Algorithm) -> Self {
        Self {
            realm: realm.into(),
            nonce: nonce.into(),
            opaque: None,
            algorithm,
            qop: vec![Qop::Auth],
            stale: false,
            domain: None,
        }
    }

    /// Parses the first Digest challenge of a header value.
    pub fn parse(value: &str) -> Result<Self, AuthError> {
        let mut first_err = None;
        for r in parse_challenges(value) {
            match r {
                Ok(c) => return Ok(c),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        Err(first_err.unwrap_or(AuthError::Empty))
    }

    fn from_params(p: &Params) -> Result<Self, AuthError> {
        let realm = p.require("realm")?.to_string();
        let nonce = p.require("nonce")?.to_string();
        let algorithm = match p.get("algorithm") {
            Some(a) => Algorithm::parse(a)?,
            None => Algorithm::Md5,
        };
        let mut qop = Vec::new();
        if let Some(q) = p.get("qop") {
            for item in q.split(',') {
                if let Some(v) = Qop::parse(item) {
                    if !qop.contains(&v) {
                        qop.push(v);
                    }
                }
            }
            if qop.is_empty() {
                return Err(AuthError::UnsupportedQop(q.to_string()));
            }
        }
        let stale = match p.get("stale") {
            None => false,
            Some(s) if s.eq_ignore_ascii_case("true") => true,
            Some(s) if s.eq_ignore_ascii_case("false") => false,
            Some(s) => {
                return Err(AuthError::InvalidParam {
                    name: "stale",
                    value: s.to_string(),
                })
            }
        };
        Ok(Self {
            realm,
            nonce,
            opaque: p.get("opaque").map(str::to_string),
            algorithm,
            qop,
            stale,
            domain: p.get("domain").map(str::to_string),
        })
    }

    /// The qop a client uses for this challenge: `auth` when offered, else `auth-int`, else none.
    pub fn preferred_qop(&self) -> Option<Qop> {
        if self.qop.contains(&Qop::Auth) {
            Some(Qop::Auth)
        } else {
            self.qop.first().copied()
        }
    }

    /// Computes the credentials for one request; `nc` counts uses of this nonce starting at 1.
    pub fn respond(
        &self,
        request: &DigestRequest<'_>,
        username: &str,
        password: &str,
        cnonce: &str,
        nc: u32,
    ) -> Authorization {
        let DigestRequest { method, uri, body } = *request;
        let qop = self.preferred_qop();
        let uses_cnonce = qop.is_some() || self.algorithm.is_sess();
        let mut a = Authorization {
            username: username.to_string(),
            realm: self.realm.clone(),
            nonce: self.nonce.clone(),
            uri: uri.to_string(),
            response: String::new(),
            algorithm: Some(self.algorithm),
            cnonce: uses_cnonce.then(|| cnonce.to_string()),
            opaque: self.opaque.clone(),
            qop,
            nc: qop.map(|_| nc),
        };
        a.response = a.expected_response(method, password, body);
        a
    }
}

impl fmt::Display for Challenge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Digest realm={}, nonce={}",
            Quoted(&self.realm),
            Quoted(&self.nonce)
        )?;
        if let Some(d) = &self.domain {
            write!(f, ", domain={}", Quoted(d))?;
        }
        if let Some(o) = &self.opaque {
            write!(f, ", opaque={}", Quoted(o))?;
        }
        if self.stale {
            f.write_str(", stale=TRUE")?;
        }
        write!(f, ", algorithm={}", self.algorithm)?;
        if !self.qop.is_empty() {
            let list: Vec<&str> = self.qop.iter().map(|q| q.as_str()).collect();
            write!(f, ", qop=\"{}\"", list.join(","))?;
        }
        Ok(())
    }
}

/// Parses every challenge in a header value: one result per scheme found (non-Digest schemes give
/// [`AuthError::NotDigest`]). A lexing error yields a single error.
pub fn parse_challenges(value: &str) -> Vec<Result<Challenge, AuthError>> {
    match lex_schemes(value) {
        Ok(raws) => raws
            .into_iter()
            .map(|r| digest_params(r).and_then(|p| Challenge::from_params(&p)))
            .collect(),
        Err(e) => vec![Err(e)],
    }
}

/// Picks the challenge to answer among all challenge header values of one 401/407:
/// the strongest supported algorithm (SHA-512-256, then SHA-256, then MD5), first one on ties.
pub fn select_challenge<'a, I>(values: I) -> Result<Challenge, AuthError>
where
    I: IntoIterator<Item = &'a str>,
{
    let mut best: Option<Challenge> = None;
    let mut first_err = None;
    for v in values {
        for r in parse_challenges(v) {
            match r {
                Ok(c) => {
                    if best
                        .as_ref()
                        .is_none_or(|b| c.algorithm.strength() > b.algorithm.strength())
                    {
                        best = Some(c);
                    }
                }
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
    }
    best.ok_or(first_err.unwrap_or(AuthError::Empty))
}

// ---------------------------------------------------------------------------------------------
// Authorization

/// Digest credentials: the value of an `Authorization` / `Proxy-Authorization` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    pub username: String,
    pub realm: String,
    pub nonce: String,
    pub uri: String,
    /// Lowercase hex.
    pub response: String,
    /// `None` when the header carried no algorithm (means MD5).
    pub algorithm: Option<Algorithm>,
    pub cnonce: Option<String>,
    pub opaque: Option<String>,
    pub qop: Option<Qop>,
    pub nc: Option<u32>,
}

impl Authorization {
    /// Parses an `Authorization` / `Proxy-Authorization` header value.
    pub fn parse(value: &str) -> Result<Self, AuthError> {
        let mut raws = lex_schemes(value)?.into_iter();
        let raw = raws.next().ok_or(AuthError::Empty)?;
        let p = digest_params(raw)?;
        let algorithm = p.get("algorithm").map(Algorithm::parse).transpose()?;
        let qop = match p.get("qop") {
            None => None,
            Some(q) => Some(Qop::parse(q).ok_or_else(|| AuthError::UnsupportedQop(q.to_string()))?),
        };
        let nc = match p.get("nc") {
            None => None,
            Some(n) => Some(
                u32::from_str_radix(n, 16).map_err(|_| AuthError::InvalidParam {
                    name: "nc",
                    value: n.to_string(),
                })?,
            ),
        };
        let cnonce = p.get("cnonce").map(str::to_string);
        if qop.is_some() {
            if nc.is_none() {
                return Err(AuthError::MissingParam("nc"));
            }
            if cnonce.is_none() {
                return Err(AuthError::MissingParam("cnonce"));
            }
        }
        let response = p.require("response")?;
        if response.is_empty() || !response.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(AuthError::InvalidParam {
                name: "response",
                value: response.to_string(),
            });
        }
        Ok(Self {
            username: p.require("username")?.to_string(),
            realm: p.require("realm")?.to_string(),
            nonce: p.require("nonce")?.to_string(),
            uri: p.require("uri")?.to_string(),
            response: response.to_ascii_lowercase(),
            algorithm,
            cnonce,
            opaque: p.get("opaque").map(str::to_string),
            qop,
            nc,
        })
    }

    fn algo(&self) -> Algorithm {
        self.algorithm.unwrap_or(Algorithm::Md5)
    }

    /// The response these credentials must carry for `password` (RFC 2617 section 3.2.2).
    pub fn expected_response(&self, method: &str, password: &str, body: &[u8]) -> String {
        let alg = self.algo();
        let cnonce = self.cnonce.as_deref().unwrap_or("");
        let mut ha1 =
            alg.hash_hex(format!("{}:{}:{}", self.username, self.realm, password).as_bytes());
        if alg.is_sess() {
            ha1 = alg.hash_hex(format!("{ha1}:{}:{cnonce}", self.nonce).as_bytes());
        }
        let ha2 = match self.qop {
            Some(Qop::AuthInt) => {
                alg.hash_hex(format!("{method}:{}:{}", self.uri, alg.hash_hex(body)).as_bytes())
            }
            _ => alg.hash_hex(format!("{method}:{}", self.uri).as_bytes()),
        };
        match self.qop {
            Some(q) => alg.hash_hex(
                format!(
                    "{ha1}:{}:{:08x}:{cnonce}:{}:{ha2}",
                    self.nonce,
                    self.nc.unwrap_or(0),
                    q.as_str()
                )
                .as_bytes(),
            ),
            None => alg.hash_hex(format!("{ha1}:{}:{ha2}", self.nonce).as_bytes()),
        }
    }

    /// Checks the response against `password` for a request with `method` (and `body`, for
    /// auth-int). The caller checks that `uri` matches the Request-URI and that the nonce is fresh.
    pub fn verify(&self, method: &str, password: &str, body: &[u8]) -> Result<(), AuthError> {
        let expected = self.expected_response(method, password, body);
        if ct_eq(expected.as_bytes(), self.response.as_bytes()) {
            Ok(())
        } else {
            Err(AuthError::WrongResponse)
        }
    }

    /// Checks these credentials against the challenge we issued, then the response.
    pub fn verify_against(
        &self,
        challenge: &Challenge,
        method: &str,
        password: &str,
        body: &[u8],
    ) -> Result<(), AuthError> {
        if self.realm != challenge.realm {
            return Err(AuthError::RealmMismatch);
        }
        if self.nonce != challenge.nonce {
            return Err(AuthError::NonceMismatch);
        }
        if self.opaque != challenge.opaque {
            return Err(AuthError::OpaqueMismatch);
        }
        if self.algo() != challenge.algorithm {
            return Err(AuthError::AlgorithmMismatch);
        }
        match self.qop {
            Some(q) if challenge.qop.contains(&q) => {}
            None if challenge.qop.is_empty() => {}
            _ => return Err(AuthError::QopMismatch),
        }
        self.verify(method, password, body)
    }
}

impl fmt::Display for Authorization {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Digest username={}, realm={}, nonce={}, uri={}, response={}",
            Quoted(&self.username),
            Quoted(&self.realm),
            Quoted(&self.nonce),
            Quoted(&self.uri),
            Quoted(&self.response)
        )?;
        if let Some(a) = self.algorithm {
            write!(f, ", algorithm={a}")?;
        }
        if let Some(c) = &self.cnonce {
            write!(f, ", cnonce={}", Quoted(c))?;
        }
        if let Some(o) = &self.opaque {
            write!(f, ", opaque={}", Quoted(o))?;
        }
        if let Some(q) = self.qop {
            write!(f, ", qop={}", q.as_str())?;
        }
        if let Some(nc) = self.nc {
            write!(f, ", nc={nc:08x}")?;
        }
        Ok(())
    }
}

struct Quoted<'a>(&'a str);

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"")?;
        for c in self.0.chars() {
            if c == '"' || c == '\\' {
                f.write_str("\\")?;
            }
            write!(f, "{c}")?;
        }
        f.write_str("\"")
    }
}

fn hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(HEX[usize::from(b >> 4)]));
        s.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
    s
}

/// Comparison whose time does not depend on where the inputs differ.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

// ---------------------------------------------------------------------------------------------
// Client state

/// Which pair of headers a challenge travels in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChallengeKind {
    /// 401 with `WWW-Authenticate`, answered with `Authorization`.
    Www,
    /// 407 with `Proxy-Authenticate`, answered with `Proxy-Authorization`.
    Proxy,
}

impl ChallengeKind {
    /// The kind for a response status: 401 or 407.
    pub fn from_status(status: u16) -> Option<Self> {
        match status {
            401 => Some(Self::Www),
            407 => Some(Self::Proxy),
            _ => None,
        }
    }

    pub fn challenge_header(self) -> &'static str {
        match self {
            Self::Www => "WWW-Authenticate",
            Self::Proxy => "Proxy-Authenticate",
        }
    }

    pub fn authorization_header(self) -> &'static str {
        match self {
            Self::Www => "Authorization",
            Self::Proxy => "Proxy-Authorization",
        }
    }
}

/// A header to add to the (re)sent request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthHeader {
    /// `Authorization` or `Proxy-Authorization`.
    pub name: &'static str,
    pub value: String,
}

/// Why a challenged request must not be retried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GiveUp {
    /// The same nonce came back without stale=true: the username or password is wrong.
    CredentialsRejected { realm: String },
    /// No challenge in the response could be used.
    NoUsableChallenge(AuthError),
    /// More consecutive challenges than allowed (e.g. a server that issues a fresh nonce each time).
    TooManyChallenges,
}

impl fmt::Display for GiveUp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::CredentialsRejected { realm } => {
                write!(f, "credentials rejected for realm '{realm}'")
            }
            Self::NoUsableChallenge(e) => write!(f, "no usable challenge: {e}"),
            Self::TooManyChallenges => write!(f, "too many authentication challenges"),
        }
    }
}

/// What to do with a 401/407.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetryDecision {
    /// Resend the request (new CSeq, same Request-URI) with these headers.
    Retry(Vec<AuthHeader>),
    GiveUp(GiveUp),
}

#[derive(Debug, Clone)]
struct Cached {
    kind: ChallengeKind,
    challenge: Challenge,
    nc: u32,
}

/// Most realms answered from one response (one per proxy on the path, RFC 3261 section 22.3).
const MAX_REALMS: usize = 8;

/// Client digest state for one user agent session (a call, a registration): remembers the
/// challenges answered, counts nc per nonce, and refuses to answer the same challenge twice.
#[derive(Debug, Clone)]
pub struct DigestClient {
    username: String,
    password: String,
    cache: Vec<Cached>,
    answered: Vec<(ChallengeKind, String, String)>,
    rounds: u32,
    max_rounds: u32,
}

impl DigestClient {
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Self {
        Self {
            username: username.into(),
            password: password.into(),
            cache: Vec::new(),
            answered: Vec::new(),
            rounds: 0,
            max_rounds: 3,
        }
    }

    /// Caps consecutive challenges without a success (default 3).
    pub fn with_max_rounds(mut self, max_rounds: u32) -> Self {
        self.max_rounds = max_rounds;
        self
    }

    /// Handles a 401/407 to `request`. `challenge_values` are all the `WWW-Authenticate` (401) or
    /// `Proxy-Authenticate` (407) values of the response.
    pub fn on_challenge<'v, I>(
        &mut self,
        kind: ChallengeKind,
        challenge_values: I,
        request: &DigestRequest<'_>,
        cnonce: &str,
    ) -> RetryDecision
    where
        I: IntoIterator<Item = &'v str>,
    {
        // Group by realm: each proxy on the path may challenge (RFC 3261 section 22.3).
        let mut chosen: Vec<Challenge> = Vec::new();
        let mut first_err = None;
        for v in challenge_values {
            for r in parse_challenges(v) {
                match r {
                    Ok(c) => {
                        let full = chosen.len() >= MAX_REALMS;
                        match chosen.iter_mut().find(|x| x.realm == c.realm) {
                            Some(x) if c.algorithm.strength() > x.algorithm.strength() => *x = c,
                            Some(_) => {}
                            // Bounded: a hostile response cannot make us do much work.
                            None if !full => chosen.push(c),
                            None => {}
                        }
                    }
                    Err(e) => {
                        first_err.get_or_insert(e);
                    }
                }
            }
        }
        if chosen.is_empty() {
            return RetryDecision::GiveUp(GiveUp::NoUsableChallenge(
                first_err.unwrap_or(AuthError::Empty),
            ));
        }
        for c in &chosen {
            let seen = self
                .answered
                .iter()
                .any(|(k, r, n)| *k == kind && *r == c.realm && *n == c.nonce);
            if seen && !c.stale {
                return RetryDecision::GiveUp(GiveUp::CredentialsRejected {
                    realm: c.realm.clone(),
                });
            }
        }
        self.rounds += 1;
        if self.rounds > self.max_rounds {
            return RetryDecision::GiveUp(GiveUp::TooManyChallenges);
        }
        for c in chosen {
            self.answered.push((kind, c.realm.clone(), c.nonce.clone()));
            self.cache
                .retain(|x| !(x.kind == kind && x.challenge.realm == c.realm));
            self.cache.push(Cached {
                kind,
                challenge: c,
                nc: 0,
            });
        }
        RetryDecision::Retry(self.authorize(request, cnonce))
    }

    /// Headers for a request using every challenge answered so far (e.g. the retried INVITE, or a
    /// later BYE through the same proxy). Each use increments nc for that nonce.
    pub fn authorize(&mut self, request: &DigestRequest<'_>, cnonce: &str) -> Vec<AuthHeader> {
        let mut out = Vec::with_capacity(self.cache.len());
        for c in &mut self.cache {
            c.nc = c.nc.wrapping_add(1);
            let a = c
                .challenge
                .respond(request, &self.username, &self.password, cnonce, c.nc);
            out.push(AuthHeader {
                name: c.kind.authorization_header(),
                value: a.to_string(),
            });
        }
        out
    }

    /// Call on a final response other than 401/407: the next challenge starts a new round count.
    pub fn on_success(&mut self) {
        self.rounds = 0;
    }
}

/// Digest credentials a user agent answers challenges to its INVITEs with (a trunk's account).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
    /// Only challenges of this realm are answered, when set.
    pub realm: Option<String>,
}

// The password never reaches a log line.
impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("realm", &self.realm)
            .finish_non_exhaustive()
    }
}

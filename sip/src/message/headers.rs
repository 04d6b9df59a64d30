//! The header list and typed views of the headers the gateway uses.
//!
//! Headers are kept as an ordered list of (canonical name, raw value); typed accessors parse on demand,
//! so an unusual header the gateway never reads can never make a message unusable.

use std::fmt;

use super::syntax::{
    find_param, is_token, is_token_char, is_ws, parse_header_params, quote, set_param,
    split_top_level, take_quoted, truncate, write_params, Param,
};
use super::uri::{parse_hostport, Host, Uri};
use super::{Method, ParseError};

/// Full names of the compact forms (RFC 3261 section 7.3.3 and later RFCs).
const COMPACT: &[(char, &str)] = &[
    ('a', "Accept-Contact"),
    ('b', "Referred-By"),
    ('c', "Content-Type"),
    ('d', "Request-Disposition"),
    ('e', "Content-Encoding"),
    ('f', "From"),
    ('i', "Call-ID"),
    ('j', "Reject-Contact"),
    ('k', "Supported"),
    ('l', "Content-Length"),
    ('m', "Contact"),
    ('n', "Identity-Info"),
    ('o', "Event"),
    ('r', "Refer-To"),
    ('s', "Subject"),
    ('t', "To"),
    ('u', "Allow-Events"),
    ('v', "Via"),
    ('x', "Session-Expires"),
    ('y', "Identity"),
];

/// Canonical spelling of the headers we know, so lookups and output are uniform.
const CANONICAL: &[&str] = &[
    "Accept",
    "Accept-Encoding",
    "Accept-Language",
    "Alert-Info",
    "Allow",
    "Authorization",
    "Call-ID",
    "Call-Info",
    "Contact",
    "Content-Disposition",
    "Content-Encoding",
    "Content-Language",
    "Content-Length",
    "Content-Type",
    "CSeq",
    "Date",
    "Error-Info",
    "Expires",
    "From",
    "In-Reply-To",
    "Max-Forwards",
    "Min-Expires",
    "Min-SE",
    "MIME-Version",
    "Organization",
    "P-Asserted-Identity",
    "P-Preferred-Identity",
    "Priority",
    "Proxy-Authenticate",
    "Proxy-Authorization",
    "Proxy-Require",
    "RAck",
    "Reason",
    "Record-Route",
    "Reply-To",
    "Require",
    "Retry-After",
    "Route",
    "RSeq",
    "Server",
    "Session-Expires",
    "Subject",
    "Supported",
    "Timestamp",
    "To",
    "Unsupported",
    "User-Agent",
    "Via",
    "Warning",
    "WWW-Authenticate",
];

/// The canonical spelling of a known header name or compact form.
fn known_name(name: &str) -> Option<&'static str> {
    if let [c] = name.as_bytes() {
        let lc = c.to_ascii_lowercase() as char;
        if let Some((_, full)) = COMPACT.iter().find(|(k, _)| *k == lc) {
            return Some(full);
        }
    }
    COMPACT
        .iter()
        .map(|(_, full)| *full)
        .chain(CANONICAL.iter().copied())
        .find(|c| c.eq_ignore_ascii_case(name))
}

/// Maps a header name as received to its canonical form (compact forms expanded).
pub fn canonical_name(name: &str) -> String {
    known_name(name).unwrap_or(name).to_string()
}

fn lookup_name(name: &str) -> std::borrow::Cow<'static, str> {
    match known_name(name) {
        Some(n) => std::borrow::Cow::Borrowed(n),
        None => std::borrow::Cow::Owned(name.to_string()),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Canonical name.
    pub name: String,
    /// Value with line folding replaced by a single space, surrounding whitespace trimmed.
    pub value: String,
}

/// The ordered header list of a message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(Vec<Header>);

impl Headers {
    pub fn new() -> Self {
        Headers(Vec::new())
    }

    pub fn iter(&self) -> impl Iterator<Item = &Header> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Appends a header; the name is canonicalised.
    pub fn push(&mut self, name: &str, value: impl Into<String>) {
        self.0.push(Header {
            name: canonical_name(name),
            value: value.into(),
        });
    }

    /// Inserts a header before all others (used for Via).
    pub fn push_front(&mut self, name: &str, value: impl Into<String>) {
        self.0.insert(
            0,
            Header {
                name: canonical_name(name),
                value: value.into(),
            },
        );
    }

    /// Replaces all headers of that name with one value, kept at the first one's position.
    pub fn set(&mut self, name: &str, value: impl Into<String>) {
        let name = canonical_name(name);
        let value = value.into();
        match self
            .0
            .iter()
            .position(|h| h.name.eq_ignore_ascii_case(&name))
        {
            Some(i) => {
                self.0[i].value = value;
                let mut idx = 0;
                self.0.retain(|h| {
                    let keep = idx <= i || !h.name.eq_ignore_ascii_case(&name);
                    idx += 1;
                    keep
                });
            }
            None => self.0.push(Header { name, value }),
        }
    }

    pub fn remove(&mut self, name: &str) {
        let name = lookup_name(name);
        self.0.retain(|h| !h.name.eq_ignore_ascii_case(&name));
    }

    /// The first value of a header.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.get_all(name).next()
    }

    /// All header lines of that name, in order.
    pub fn get_all<'a>(&'a self, name: &str) -> impl Iterator<Item = &'a str> + 'a {
        let name = lookup_name(name);
        self.0
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(&name))
            .map(|h| h.value.as_str())
    }

    pub fn count(&self, name: &str) -> usize {
        self.get_all(name).count()
    }

    /// The single value of a header that may appear once; an error if it appears more than once.
    pub fn single(&self, name: &str) -> Result<Option<&str>, ParseError> {
        let mut it = self.get_all(name);
        let first = it.next();
        if it.next().is_some() {
            return Err(ParseError::syntax(format!(
                "{name}: appears more than once"
            )));
        }
        Ok(first)
    }

    fn required(&self, name: &str) -> Result<&str, ParseError> {
        self.single(name)?
            .ok_or_else(|| ParseError::syntax(format!("{name}: missing")))
    }

    /// Comma-separated values across all lines of a list header.
    pub fn list(&self, name: &str) -> Result<Vec<String>, ParseError> {
        let mut out = Vec::new();
        for v in self.get_all(name) {
            for part in split_top_level(v, ',', name)? {
                out.push(part.trim_matches(is_ws).to_string());
            }
        }
        Ok(out)
    }

    /// Tokens of a list header such as Require, Supported, Allow (empty items ignored).
    pub fn tokens(&self, name: &str) -> Result<Vec<String>, ParseError> {
        let mut out = Vec::new();
        for item in self.list(name)? {
            if item.is_empty() {
                continue;
            }
            if !is_token(&item) {
                return Err(ParseError::syntax(format!(
                    "{name}: {:?} is not a token",
                    truncate(&item)
                )));
            }
            out.push(item);
        }
        Ok(out)
    }

    pub fn via(&self) -> Result<Vec<Via>, ParseError> {
        let vias = self
            .list("Via")?
            .iter()
            .map(|v| Via::parse(v))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(vias)
    }

    pub fn top_via(&self) -> Result<Via, ParseError> {
        let first = self
            .get("Via")
            .ok_or_else(|| ParseError::syntax("Via: missing"))?;
        let items = split_top_level(first, ',', "Via")?;
        Via::parse(items.first().map(String::as_str).unwrap_or(""))
    }

    /// The top Via for routing a response to a request whose Via parameters are malformed:
    /// the strict parse, or else the sent-protocol and sent-by alone.
    pub fn top_via_lenient(&self) -> Result<Via, ParseError> {
        self.top_via().or_else(|e| {
            let first = self.get("Via").unwrap_or("");
            let end = first.find([';', ',']).unwrap_or(first.len());
            Via::parse(&first[..end]).map_err(|_| e)
        })
    }

    pub fn from(&self) -> Result<NameAddr, ParseError> {
        NameAddr::parse(self.required("From")?).map_err(|e| e.context("From"))
    }

    pub fn to(&self) -> Result<NameAddr, ParseError> {
        NameAddr::parse(self.required("To")?).map_err(|e| e.context("To"))
    }

    pub fn call_id(&self) -> Result<&str, ParseError> {
        let v = self.required("Call-ID")?;
        if v.is_empty() || v.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(ParseError::syntax(format!(
                "Call-ID: invalid value {:?}",
                truncate(v)
            )));
        }
        Ok(v)
    }

    pub fn cseq(&self) -> Result<CSeq, ParseError> {
        CSeq::parse(self.required("CSeq")?)
    }

    /// Max-Forwards, if present (0..=255).
    pub fn max_forwards(&self) -> Result<Option<u8>, ParseError> {
        self.single("Max-Forwards")?
            .map(|v| parse_number::<u8>(v, "Max-Forwards"))
            .transpose()
    }

    pub fn content_length(&self) -> Result<Option<usize>, ParseError> {
        self.single("Content-Length")?
            .map(|v| parse_number::<u32>(v, "Content-Length").map(|n| n as usize))
            .transpose()
    }

    pub fn content_type(&self) -> Result<Option<MediaType>, ParseError> {
        self.single("Content-Type")?
            .map(|v| MediaType::parse(v).map_err(|e| e.context("Content-Type")))
            .transpose()
    }

    /// Contact values; a lone `*` (REGISTER) yields an empty list.
    pub fn contact(&self) -> Result<Vec<NameAddr>, ParseError> {
        self.name_addrs("Contact")
    }

    pub fn route(&self) -> Result<Vec<NameAddr>, ParseError> {
        self.name_addrs("Route")
    }

    pub fn record_route(&self) -> Result<Vec<NameAddr>, ParseError> {
        self.name_addrs("Record-Route")
    }

    pub fn p_asserted_identity(&self) -> Result<Vec<NameAddr>, ParseError> {
        self.name_addrs("P-Asserted-Identity")
    }

    fn name_addrs(&self, name: &str) -> Result<Vec<NameAddr>, ParseError> {
        let mut out = Vec::new();
        for item in self.list(name)? {
            if item == "*" && name == "Contact" {
                continue;
            }
            out.push(NameAddr::parse(&item).map_err(|e| e.context(name))?);
        }
        Ok(out)
    }

    pub fn require(&self) -> Result<Vec<String>, ParseError> {
        self.tokens("Require")
    }

    pub fn supported(&self) -> Result<Vec<String>, ParseError> {
        self.tokens("Supported")
    }

    pub fn allow(&self) -> Result<Vec<String>, ParseError> {
        self.tokens("Allow")
    }

    /// Accept media ranges (`type/subtype`, lowercased, parameters dropped).
    pub fn accept(&self) -> Result<Option<Vec<String>>, ParseError> {
        if self.get("Accept").is_none() {
            return Ok(None);
        }
        let mut out = Vec::new();
        for item in self.list("Accept")? {
            if item.is_empty() {
                continue;
            }
            out.push(MediaType::parse(&item)?.essence());
        }
        Ok(Some(out))
    }

    /// Reason header values (RFC 3326).
    pub fn reason(&self) -> Result<Vec<Reason>, ParseError> {
        self.list("Reason")?
            .iter()
            .map(|r| Reason::parse(r))
            .collect()
    }

    /// Session-Expires (RFC 4028): seconds and the `refresher` parameter.
    pub fn session_expires(&self) -> Result<Option<SessionExpires>, ParseError> {
        let Some(v) = self.single("Session-Expires")? else {
            return Ok(None);
        };
        let (num, params) = match v.find(|c: char| c == ';' || is_ws(c)) {
            Some(i) => (&v[..i], &v[i..]),
            None => (v, ""),
        };
        let params = parse_header_params(params, "Session-Expires")?;
        Ok(Some(SessionExpires {
            seconds: parse_number::<u32>(num, "Session-Expires")?,
            refresher: find_param(&params, "refresher")
                .and_then(|p| p.value.clone())
                .map(|s| s.to_ascii_lowercase()),
        }))
    }

    /// Min-SE (RFC 4028): the smallest session interval the sender accepts, in seconds.
    pub fn min_se(&self) -> Result<Option<u32>, ParseError> {
        let Some(v) = self.single("Min-SE")? else {
            return Ok(None);
        };
        let (num, params) = match v.find(|c: char| c == ';' || is_ws(c)) {
            Some(i) => (&v[..i], &v[i..]),
            None => (v, ""),
        };
        parse_header_params(params, "Min-SE")?;
        parse_number::<u32>(num, "Min-SE").map(Some)
    }

    pub fn rseq(&self) -> Result<Option<u32>, ParseError> {
        self.single("RSeq")?
            .map(|v| parse_number::<u32>(v, "RSeq"))
            .transpose()
    }

    pub fn rack(&self) -> Result<Option<RAck>, ParseError> {
        let Some(v) = self.single("RAck")? else {
            return Ok(None);
        };
        let mut it = v.split_whitespace();
        let (Some(r), Some(c), Some(m), None) = (it.next(), it.next(), it.next(), it.next()) else {
            return Err(ParseError::syntax(format!(
                "RAck: expected 'rseq cseq method', got {:?}",
                truncate(v)
            )));
        };
        Ok(Some(RAck {
            rseq: parse_number(r, "RAck")?,
            cseq: parse_number(c, "RAck")?,
            method: Method::parse(m).map_err(|e| e.context("RAck"))?,
        }))
    }

    pub fn www_authenticate(&self) -> impl Iterator<Item = &str> {
        self.get_all("WWW-Authenticate")
    }

    pub fn proxy_authenticate(&self) -> impl Iterator<Item = &str> {
        self.get_all("Proxy-Authenticate")
    }

    pub fn authorization(&self) -> impl Iterator<Item = &str> {
        self.get_all("Authorization")
    }

    pub fn proxy_authorization(&self) -> impl Iterator<Item = &str> {
        self.get_all("Proxy-Authorization")
    }
}

impl Headers {
    pub(crate) fn as_mut_vec(&mut self) -> &mut Vec<Header> {
        &mut self.0
    }
}

pub(crate) fn parse_number<T: std::str::FromStr>(v: &str, field: &str) -> Result<T, ParseError> {
    let v = v.trim_matches(is_ws);
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ParseError::syntax(format!(
            "{field}: {:?} is not a number",
            truncate(v)
        )));
    }
    v.parse::<T>()
        .map_err(|_| ParseError::syntax(format!("{field}: {} is out of range", truncate(v))))
}

/// A Via value (RFC 3261 section 20.42).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    /// Protocol name and version, normally `SIP/2.0`.
    pub protocol: String,
    /// Transport token, uppercased (UDP, TCP, TLS, SCTP, WS, or any other token).
    pub transport: String,
    pub host: Host,
    pub port: Option<u16>,
    pub params: Vec<Param>,
}

/// The RFC 3261 branch prefix that marks a branch as globally unique.
pub const MAGIC_COOKIE: &str = "z9hG4bK";

impl Via {
    pub fn new(transport: &str, host: Host, port: Option<u16>, branch: &str) -> Via {
        Via {
            protocol: "SIP/2.0".into(),
            transport: transport.to_ascii_uppercase(),
            host,
            port,
            params: vec![Param::new("branch", Some(branch.to_string()))],
        }
    }

    pub fn parse(s: &str) -> Result<Via, ParseError> {
        let s = s.trim_matches(is_ws);
        // sent-protocol: name SLASH version SLASH transport, LWS allowed around the slashes.
        let mut rest = s;
        let mut parts = Vec::with_capacity(3);
        for i in 0..3 {
            rest = rest.trim_start_matches(is_ws);
            let end = rest.find(|c: char| !is_token_char(c)).unwrap_or(rest.len());
            if end == 0 {
                return Err(ParseError::syntax(format!(
                    "Via: bad sent-protocol in {:?}",
                    truncate(s)
                )));
            }
            parts.push(&rest[..end]);
            rest = rest[end..].trim_start_matches(is_ws);
            if i < 2 {
                rest = rest.strip_prefix('/').ok_or_else(|| {
                    ParseError::syntax(format!("Via: expected '/' in {:?}", truncate(s)))
                })?;
            }
        }
        let (name, version, transport) = (parts[0], parts[1], parts[2]);
        // LWS is mandatory between the protocol and sent-by; already consumed above.
        let end = rest
            .find(|c: char| c == ';' || is_ws(c))
            .unwrap_or(rest.len());
        let (host, port) = parse_hostport(&rest[..end], "Via sent-by")?;
        let params = parse_header_params(&rest[end..], "Via")?;
        for p in &params {
            let bad = match p.name.to_ascii_lowercase().as_str() {
                "branch" => p.value.as_deref().is_none_or(|v| !is_token(v)),
                "received" => p
                    .value
                    .as_deref()
                    .is_none_or(|v| Host::parse_lenient(v).is_err()),
                "rport" => p
                    .value
                    .as_deref()
                    .is_some_and(|v| super::uri::parse_port(v).is_err()),
                "ttl" => p.value.as_deref().is_none_or(|v| v.parse::<u8>().is_err()),
                _ => false,
            };
            if bad {
                return Err(ParseError::syntax(format!(
                    "Via: bad {} parameter {:?}",
                    p.name,
                    p.value.as_deref().unwrap_or("")
                )));
            }
        }
        Ok(Via {
            protocol: format!("{name}/{version}"),
            transport: transport.to_ascii_uppercase(),
            host,
            port,
            params,
        })
    }

    pub fn param(&self, name: &str) -> Option<&Param> {
        find_param(&self.params, name)
    }

    pub fn set_param(&mut self, name: &str, value: Option<String>) {
        set_param(&mut self.params, name, value);
    }

    pub fn branch(&self) -> Option<&str> {
        self.param("branch").and_then(|p| p.value.as_deref())
    }

    /// True when the branch starts with the RFC 3261 magic cookie and has something after it.
    pub fn has_rfc3261_branch(&self) -> bool {
        self.branch()
            .is_some_and(|b| b.len() > MAGIC_COOKIE.len() && b.starts_with(MAGIC_COOKIE))
    }

    pub fn received(&self) -> Option<Host> {
        self.param("received")
            .and_then(|p| p.value.as_deref())
            .and_then(|v| Host::parse_lenient(v).ok())
    }

    /// `None`: no rport; `Some(None)`: rport without a value; `Some(Some(p))`: filled in.
    pub fn rport(&self) -> Option<Option<u16>> {
        self.param("rport")
            .map(|p| p.value.as_deref().and_then(|v| v.parse().ok()))
    }

    pub fn maddr(&self) -> Option<Host> {
        self.param("maddr")
            .and_then(|p| p.value.as_deref())
            .and_then(|v| Host::parse_lenient(v).ok())
    }

    /// `host[:port]` as it appears in the Via.
    pub fn sent_by(&self) -> String {
        match self.port {
            Some(p) => format!("{}:{p}", self.host),
            None => self.host.to_string(),
        }
    }
}

impl fmt::Display for Via {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = format!("{}/{} {}", self.protocol, self.transport, self.sent_by());
        write_params(&mut out, &self.params);
        f.write_str(&out)
    }
}

/// `name-addr` or `addr-spec` with header parameters: From, To, Contact, Route, Record-Route, P-Asserted-Identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameAddr {
    pub display: Option<String>,
    pub uri: Uri,
    pub params: Vec<Param>,
}

impl NameAddr {
    pub fn new(uri: impl Into<Uri>) -> Self {
        NameAddr {
            display: None,
            uri: uri.into(),
            params: Vec::new(),
        }
    }

    pub fn parse(s: &str) -> Result<NameAddr, ParseError> {
        let s = s.trim_matches(is_ws);
        let (display, after_display) = if s.starts_with('"') {
            let (d, rest) = take_quoted(s, "display name")?;
            let rest = rest.trim_start_matches(is_ws);
            if !rest.starts_with('<') {
                return Err(ParseError::syntax(
                    "expected '<' after the quoted display name",
                ));
            }
            (Some(d), rest)
        } else if let Some(i) = s.find('<') {
            // Unquoted display name: tokens separated by LWS.
            let d = s[..i].trim_matches(is_ws);
            if !d.split(is_ws).all(|t| t.is_empty() || is_token(t)) {
                return Err(ParseError::syntax(format!(
                    "display name {:?} must be quoted",
                    truncate(d)
                )));
            }
            let d = d
                .split(is_ws)
                .filter(|t| !t.is_empty())
                .collect::<Vec<_>>()
                .join(" ");
            ((!d.is_empty()).then_some(d), &s[i..])
        } else {
            // addr-spec: the URI ends at the first ';' (RFC 3261 section 20).
            let (uri, params) = match s.find(';') {
                Some(i) => (&s[..i], &s[i..]),
                None => (s, ""),
            };
            let uri = Uri::parse(uri.trim_end_matches(is_ws))?;
            return Ok(NameAddr {
                display: None,
                uri,
                params: parse_header_params(params, "parameters")?,
            });
        };
        let inner_start = 1;
        let close = after_display
            .find('>')
            .ok_or_else(|| ParseError::syntax("missing '>'"))?;
        let inner = &after_display[inner_start..close];
        if inner.starts_with(is_ws) || inner.ends_with(is_ws) {
            return Err(ParseError::syntax(format!(
                "whitespace inside <{}>",
                truncate(inner.trim_matches(is_ws))
            )));
        }
        let uri = Uri::parse(inner)?;
        let params = parse_header_params(&after_display[close + 1..], "parameters")?;
        Ok(NameAddr {
            display,
            uri,
            params,
        })
    }

    pub fn param(&self, name: &str) -> Option<&Param> {
        find_param(&self.params, name)
    }

    pub fn set_param(&mut self, name: &str, value: Option<String>) {
        set_param(&mut self.params, name, value);
    }

    pub fn tag(&self) -> Option<&str> {
        self.param("tag").and_then(|p| p.value.as_deref())
    }

    pub fn with_tag(mut self, tag: &str) -> Self {
        self.set_param("tag", Some(tag.to_string()));
        self
    }
}

impl fmt::Display for NameAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = String::new();
        if let Some(d) = &self.display {
            out.push_str(&quote(d));
            out.push(' ');
        }
        out.push('<');
        out.push_str(&self.uri.to_string());
        out.push('>');
        write_params(&mut out, &self.params);
        f.write_str(&out)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CSeq {
    pub seq: u32,
    pub method: Method,
}

impl CSeq {
    pub fn parse(v: &str) -> Result<CSeq, ParseError> {
        let v = v.trim_matches(is_ws);
        let (num, method) = v
            .split_once(|c: char| is_ws(c))
            .ok_or_else(|| ParseError::syntax(format!("CSeq: {:?} lacks a method", truncate(v))))?;
        let seq = parse_number::<u32>(num, "CSeq")?;
        // RFC 3261 section 8.1.1.5: the sequence number must be below 2**31.
        if seq >= 1 << 31 {
            return Err(ParseError::syntax(format!("CSeq: {seq} is out of range")));
        }
        let method = Method::parse(method.trim_matches(is_ws)).map_err(|e| e.context("CSeq"))?;
        Ok(CSeq { seq, method })
    }
}

impl fmt::Display for CSeq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.seq, self.method)
    }
}

/// A media type such as `application/sdp; charset=...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaType {
    pub kind: String,
    pub subtype: String,
    pub params: Vec<Param>,
}

impl MediaType {
    pub fn parse(v: &str) -> Result<MediaType, ParseError> {
        let v = v.trim_matches(is_ws);
        let (essence, params) = match v.find(';') {
            Some(i) => (&v[..i], &v[i..]),
            None => (v, ""),
        };
        let (kind, subtype) = essence
            .split_once('/')
            .ok_or_else(|| ParseError::syntax(format!("media type {:?} lacks '/'", truncate(v))))?;
        let (kind, subtype) = (kind.trim_matches(is_ws), subtype.trim_matches(is_ws));
        if !is_token(kind) || !is_token(subtype) {
            return Err(ParseError::syntax(format!(
                "bad media type {:?}",
                truncate(essence)
            )));
        }
        Ok(MediaType {
            kind: kind.to_ascii_lowercase(),
            subtype: subtype.to_ascii_lowercase(),
            params: parse_header_params(params, "media type")?,
        })
    }

    /// `type/subtype` in lowercase.
    pub fn essence(&self) -> String {
        format!("{}/{}", self.kind, self.subtype)
    }
}

/// A Reason header value (RFC 3326): `SIP ;cause=486 ;text="Busy Here"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reason {
    pub protocol: String,
    pub cause: Option<u16>,
    pub text: Option<String>,
}

impl Reason {
    pub fn parse(v: &str) -> Result<Reason, ParseError> {
        let v = v.trim_matches(is_ws);
        let end = v.find(|c: char| !is_token_char(c)).unwrap_or(v.len());
        let protocol = &v[..end];
        if protocol.is_empty() {
            return Err(ParseError::syntax("Reason: missing protocol"));
        }
        let params = parse_header_params(&v[end..], "Reason")?;
        let cause = match find_param(&params, "cause").and_then(|p| p.value.as_deref()) {
            Some(c) => Some(parse_number::<u16>(c, "Reason cause")?),
            None => None,
        };
        Ok(Reason {
            protocol: protocol.to_string(),
            cause,
            text: find_param(&params, "text").and_then(Param::unquoted_value),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionExpires {
    pub seconds: u32,
    pub refresher: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RAck {
    pub rseq: u32,
    pub cseq: u32,
    pub method: Method,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_and_case_normalised() {
        assert_eq!(canonical_name("v"), "Via");
        assert_eq!(canonical_name("I"), "Call-ID");
        assert_eq!(canonical_name("cseq"), "CSeq");
        assert_eq!(canonical_name("www-authenticate"), "WWW-Authenticate");
        assert_eq!(canonical_name("X-Custom"), "X-Custom");
    }

    #[test]
    fn via_with_spaces_and_ipv6() {
        let v = Via::parse("SIP  /   2.0\t/UDP  192.0.2.2;branch=390skdjuw").unwrap();
        assert_eq!(v.transport, "UDP");
        assert_eq!(v.branch(), Some("390skdjuw"));
        assert!(!v.has_rfc3261_branch());
        let v = Via::parse(
            "SIP/2.0/TCP [2001:db8::9:1]:6050;branch=z9hG4bKx;received=2001:db8::9:255;rport=7",
        )
        .unwrap();
        assert_eq!(v.port, Some(6050));
        assert_eq!(
            v.received(),
            Some(Host::Ipv6("2001:db8::9:255".parse().unwrap()))
        );
        assert_eq!(v.rport(), Some(Some(7)));
        assert!(v.has_rfc3261_branch());
        assert!(Via::parse("SIP/2.0/UDP 192.0.2.15;;,;,,").is_err());
        assert!(Via::parse("SIP/2.0/UDP host;branch=").is_err());
    }

    #[test]
    fn name_addr_forms() {
        let n = NameAddr::parse(
            r#""J Rosenberg \\\""       <sip:jdrosen@example.com> ; tag = 98asjd8"#,
        )
        .unwrap();
        assert_eq!(n.display.as_deref(), Some("J Rosenberg \\\""));
        assert_eq!(n.tag(), Some("98asjd8"));
        let n = NameAddr::parse("caller<sip:caller@example.com>;tag=323").unwrap();
        assert_eq!(n.display.as_deref(), Some("caller"));
        let n = NameAddr::parse("sip:+1972@gw1.example.net;unknownparam").unwrap();
        assert!(n.param("unknownparam").is_some());
        assert!(NameAddr::parse("Bell, Alexander <sip:a@example.com>").is_err());
        assert!(NameAddr::parse("\"Watson\" < sip:t@example.org >").is_err());
        assert!(NameAddr::parse("\"Mr. J. User <sip:j@example.com>").is_err());
        assert_eq!(
            NameAddr::parse("\"A \\\"B\\\"\" <sip:a@b>;tag=1")
                .unwrap()
                .to_string(),
            "\"A \\\"B\\\"\" <sip:a@b>;tag=1"
        );
    }

    #[test]
    fn cseq_limits() {
        assert_eq!(CSeq::parse("0009 INVITE").unwrap().seq, 9);
        assert!(CSeq::parse("36893488147419103232 REGISTER").is_err());
        assert!(CSeq::parse("2147483648 INVITE").is_err());
        assert!(CSeq::parse("1").is_err());
    }

    #[test]
    fn misc_typed_headers() {
        let mut h = Headers::new();
        h.push("Reason", "SIP ;cause=486 ;text=\"Busy Here\"");
        h.push("x", "1800;refresher=uac");
        h.push("RAck", "776656 1 INVITE");
        h.push("k", "timer, 100rel");
        h.push("Max-Forwards", "300");
        assert_eq!(
            h.reason().unwrap(),
            vec![Reason {
                protocol: "SIP".into(),
                cause: Some(486),
                text: Some("Busy Here".into())
            }]
        );
        assert_eq!(
            h.session_expires().unwrap(),
            Some(SessionExpires {
                seconds: 1800,
                refresher: Some("uac".into())
            })
        );
        assert_eq!(h.rack().unwrap().unwrap().rseq, 776656);
        assert_eq!(h.min_se().unwrap(), None);
        assert_eq!(h.supported().unwrap(), vec!["timer", "100rel"]);
        assert!(h.max_forwards().is_err());
    }
}

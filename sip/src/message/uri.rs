//! SIP, SIPS and tel URIs (RFC 3261 section 19.1, RFC 3966), and opaque URIs of other schemes.
//!
//! Components are stored in their escaped wire form so that a parsed URI serializes to
//! the same text; [`escape_user`] and [`unescape`] convert from and to plain values.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::syntax::{find_param, set_param, truncate, write_params, Param};
use super::ParseError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    Domain(String),
    Ipv4(Ipv4Addr),
    Ipv6(Ipv6Addr),
}

impl Host {
    /// Parses a host as in `hostport`: a domain name, an IPv4 address or a bracketed IPv6 reference.
    pub fn parse(s: &str) -> Result<Host, ParseError> {
        if let Some(inner) = s.strip_prefix('[') {
            let inner = inner.strip_suffix(']').ok_or_else(|| {
                ParseError::syntax(format!("host {:?}: missing ']'", truncate(s)))
            })?;
            return inner
                .parse::<Ipv6Addr>()
                .map(Host::Ipv6)
                .map_err(|_| ParseError::syntax(format!("host: bad IPv6 address {inner:?}")));
        }
        if s.is_empty() {
            return Err(ParseError::syntax("host: empty"));
        }
        if s.chars().all(|c| c.is_ascii_digit() || c == '.') {
            if let Ok(ip) = s.parse::<Ipv4Addr>() {
                return Ok(Host::Ipv4(ip));
            }
        }
        let ok = s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_');
        if !ok || s.starts_with('.') || s.starts_with('-') {
            return Err(ParseError::syntax(format!(
                "host: invalid name {:?}",
                truncate(s)
            )));
        }
        Ok(Host::Domain(s.to_string()))
    }

    /// Parses a host that may be a bare IPv6 address (as in `received=2001:db8::1`).
    pub fn parse_lenient(s: &str) -> Result<Host, ParseError> {
        if !s.starts_with('[') && s.contains(':') {
            return s
                .parse::<Ipv6Addr>()
                .map(Host::Ipv6)
                .map_err(|_| ParseError::syntax(format!("host: bad address {:?}", truncate(s))));
        }
        Host::parse(s)
    }

    pub fn ip(&self) -> Option<IpAddr> {
        match self {
            Host::Domain(_) => None,
            Host::Ipv4(a) => Some(IpAddr::V4(*a)),
            Host::Ipv6(a) => Some(IpAddr::V6(*a)),
        }
    }

    /// Case-insensitive for names, by value for addresses.
    pub fn matches(&self, other: &Host) -> bool {
        match (self, other) {
            (Host::Domain(a), Host::Domain(b)) => a.eq_ignore_ascii_case(b),
            (a, b) => a == b,
        }
    }
}

impl From<IpAddr> for Host {
    fn from(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(a) => Host::Ipv4(a),
            IpAddr::V6(a) => Host::Ipv6(a),
        }
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Domain(d) => f.write_str(d),
            Host::Ipv4(a) => write!(f, "{a}"),
            Host::Ipv6(a) => write!(f, "[{a}]"),
        }
    }
}

/// Splits `host[:port]`, where host may be a bracketed IPv6 reference.
pub(crate) fn parse_hostport(s: &str, field: &str) -> Result<(Host, Option<u16>), ParseError> {
    let (host, port) = if s.starts_with('[') {
        match s.find(']') {
            Some(i) => {
                let rest = &s[i + 1..];
                let port = if rest.is_empty() {
                    None
                } else if let Some(p) = rest.strip_prefix(':') {
                    Some(p)
                } else {
                    return Err(ParseError::syntax(format!(
                        "{field}: unexpected {:?} after IPv6 reference",
                        truncate(rest)
                    )));
                };
                (&s[..=i], port)
            }
            None => return Err(ParseError::syntax(format!("{field}: missing ']'"))),
        }
    } else {
        match s.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    let host = Host::parse(host).map_err(|e| e.context(field))?;
    let port = match port {
        None => None,
        Some(p) => Some(parse_port(p).map_err(|e| e.context(field))?),
    };
    Ok((host, port))
}

pub(crate) fn parse_port(p: &str) -> Result<u16, ParseError> {
    if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ParseError::syntax(format!("bad port {:?}", truncate(p))));
    }
    p.parse::<u16>()
        .map_err(|_| ParseError::syntax(format!("port {p} out of range")))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Sip,
    Sips,
}

/// A `sip:` or `sips:` URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipUri {
    pub scheme: Scheme,
    /// Escaped user part.
    pub user: Option<String>,
    /// Escaped password.
    pub password: Option<String>,
    pub host: Host,
    pub port: Option<u16>,
    /// URI parameters, escaped.
    pub params: Vec<Param>,
    /// URI headers (`?name=value&...`), escaped.
    pub headers: Vec<(String, String)>,
}

/// A `tel:` URI (RFC 3966).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TelUri {
    pub number: String,
    pub params: Vec<Param>,
}

/// Any URI that can appear in a request line or a name-addr.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Uri {
    Sip(SipUri),
    Tel(TelUri),
    /// A syntactically valid absolute URI of a scheme we do not interpret.
    Other {
        scheme: String,
        opaque: String,
    },
}

fn is_unreserved(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '!' | '~' | '*' | '\'' | '(' | ')')
}

fn is_user_char(c: char) -> bool {
    is_unreserved(c) || matches!(c, '&' | '=' | '+' | '$' | ',' | ';' | '?' | '/')
}

fn is_password_char(c: char) -> bool {
    is_unreserved(c) || matches!(c, '&' | '=' | '+' | '$' | ',')
}

fn is_param_char(c: char) -> bool {
    is_unreserved(c) || matches!(c, '[' | ']' | '/' | ':' | '&' | '+' | '$')
}

fn is_header_char(c: char) -> bool {
    is_unreserved(c) || matches!(c, '[' | ']' | '/' | '?' | ':' | '+' | '$')
}

/// Checks that `s` consists of allowed characters and well-formed `%HH` escapes.
fn check_escaped(s: &str, allowed: fn(char) -> bool, what: &str) -> Result<(), ParseError> {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let ok = b.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && b.get(i + 2).is_some_and(u8::is_ascii_hexdigit);
            if !ok {
                return Err(ParseError::syntax(format!(
                    "{what}: bad %-escape in {:?}",
                    truncate(s)
                )));
            }
            i += 3;
            continue;
        }
        // Non-ASCII bytes are never allowed unescaped in a URI.
        let c = b[i] as char;
        if !b[i].is_ascii() || !allowed(c) {
            return Err(ParseError::syntax(format!(
                "{what}: character {c:?} not allowed in {:?}",
                truncate(s)
            )));
        }
        i += 1;
    }
    Ok(())
}

/// Resolves `%HH` escapes. Invalid escapes are kept literally.
pub fn unescape(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            if let (Some(h), Some(l)) = (
                b.get(i + 1).and_then(|c| (*c as char).to_digit(16)),
                b.get(i + 2).and_then(|c| (*c as char).to_digit(16)),
            ) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

fn escape_with(s: &str, allowed: fn(char) -> bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        let c = b as char;
        if b.is_ascii() && allowed(c) {
            out.push(c);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Escapes a plain user name for the user part of a SIP URI.
pub fn escape_user(s: &str) -> String {
    escape_with(s, is_user_char)
}

impl SipUri {
    pub fn new(host: Host) -> Self {
        SipUri {
            scheme: Scheme::Sip,
            user: None,
            password: None,
            host,
            port: None,
            params: Vec::new(),
            headers: Vec::new(),
        }
    }

    /// Sets the user part from a plain (unescaped) value.
    pub fn with_user(mut self, user: &str) -> Self {
        self.user = Some(escape_user(user));
        self
    }

    pub fn with_port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    pub fn with_param(mut self, name: &str, value: Option<&str>) -> Self {
        set_param(&mut self.params, name, value.map(str::to_string));
        self
    }

    pub fn param(&self, name: &str) -> Option<&Param> {
        find_param(&self.params, name)
    }

    /// The `transport` parameter, lowercased.
    pub fn transport_param(&self) -> Option<String> {
        self.param("transport")
            .and_then(|p| p.value.as_deref())
            .map(str::to_ascii_lowercase)
    }

    /// The user part with escapes resolved.
    pub fn user_unescaped(&self) -> Option<Vec<u8>> {
        self.user.as_deref().map(unescape)
    }

    fn parse(scheme: Scheme, rest: &str) -> Result<SipUri, ParseError> {
        // The first '@' ends the userinfo: '@' is not allowed unescaped anywhere else.
        let (userinfo, hostpart) = match rest.find('@') {
            Some(i) => (Some(&rest[..i]), &rest[i + 1..]),
            None => (None, rest),
        };
        let (user, password) = match userinfo {
            None => (None, None),
            Some(ui) => {
                let (u, p) = match ui.find(':') {
                    Some(i) => (&ui[..i], Some(&ui[i + 1..])),
                    None => (ui, None),
                };
                if u.is_empty() {
                    return Err(ParseError::syntax("URI: empty user part before '@'"));
                }
                check_escaped(u, is_user_char, "URI user")?;
                if let Some(p) = p {
                    check_escaped(p, is_password_char, "URI password")?;
                }
                (Some(u.to_string()), p.map(str::to_string))
            }
        };
        let (before_headers, headers_part) = match hostpart.find('?') {
            Some(i) => (&hostpart[..i], Some(&hostpart[i + 1..])),
            None => (hostpart, None),
        };
        let mut segs = before_headers.split(';');
        let hostport = segs.next().unwrap_or("");
        let (host, port) = parse_hostport(hostport, "URI host")?;
        let mut params = Vec::new();
        for seg in segs {
            let (name, value) = match seg.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (seg, None),
            };
            if name.is_empty() {
                return Err(ParseError::syntax("URI: empty parameter"));
            }
            check_escaped(name, is_param_char, "URI parameter name")?;
            if let Some(v) = value {
                if v.is_empty() {
                    return Err(ParseError::syntax(format!(
                        "URI: parameter {name:?} has an empty value"
                    )));
                }
                check_escaped(v, is_param_char, "URI parameter value")?;
            }
            params.push(Param::new(name, value.map(str::to_string)));
        }
        let mut headers = Vec::new();
        if let Some(hp) = headers_part {
            for h in hp.split('&') {
                let (n, v) = h.split_once('=').ok_or_else(|| {
                    ParseError::syntax(format!("URI header {:?} has no '='", truncate(h)))
                })?;
                if n.is_empty() {
                    return Err(ParseError::syntax("URI: empty header name"));
                }
                check_escaped(n, is_header_char, "URI header name")?;
                check_escaped(v, is_header_char, "URI header value")?;
                headers.push((n.to_string(), v.to_string()));
            }
        }
        Ok(SipUri {
            scheme,
            user,
            password,
            host,
            port,
            params,
            headers,
        })
    }
}

impl fmt::Display for SipUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = String::new();
        out.push_str(match self.scheme {
            Scheme::Sip => "sip:",
            Scheme::Sips => "sips:",
        });
        if let Some(u) = &self.user {
            out.push_str(u);
            if let Some(p) = &self.password {
                out.push(':');
                out.push_str(p);
            }
            out.push('@');
        }
        out.push_str(&self.host.to_string());
        if let Some(p) = self.port {
            out.push_str(&format!(":{p}"));
        }
        write_params(&mut out, &self.params);
        for (i, (n, v)) in self.headers.iter().enumerate() {
            out.push(if i == 0 { '?' } else { '&' });
            out.push_str(n);
            out.push('=');
            out.push_str(v);
        }
        f.write_str(&out)
    }
}

fn is_scheme(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

impl Uri {
    /// Parses a URI. The text must not contain whitespace or angle brackets.
    pub fn parse(s: &str) -> Result<Uri, ParseError> {
        if let Some(c) = s
            .chars()
            .find(|c| c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | '"'))
        {
            return Err(ParseError::syntax(format!(
                "URI {:?}: character {c:?} not allowed",
                truncate(s)
            )));
        }
        let (scheme, rest) = s
            .split_once(':')
            .ok_or_else(|| ParseError::syntax(format!("URI {:?}: no scheme", truncate(s))))?;
        if !is_scheme(scheme) {
            return Err(ParseError::syntax(format!(
                "URI: bad scheme {:?}",
                truncate(scheme)
            )));
        }
        if scheme.eq_ignore_ascii_case("sip") {
            SipUri::parse(Scheme::Sip, rest).map(Uri::Sip)
        } else if scheme.eq_ignore_ascii_case("sips") {
            SipUri::parse(Scheme::Sips, rest).map(Uri::Sip)
        } else if scheme.eq_ignore_ascii_case("tel") {
            let mut segs = rest.split(';');
            let number = segs.next().unwrap_or("");
            let ok = !number.is_empty()
                && number.chars().all(|c| {
                    c.is_ascii_hexdigit() || matches!(c, '+' | '-' | '.' | '(' | ')' | '*' | '#')
                });
            if !ok {
                return Err(ParseError::syntax(format!(
                    "tel URI: bad number {:?}",
                    truncate(number)
                )));
            }
            let mut params = Vec::new();
            for seg in segs {
                let (n, v) = match seg.split_once('=') {
                    Some((n, v)) => (n, Some(v.to_string())),
                    None => (seg, None),
                };
                if n.is_empty() {
                    return Err(ParseError::syntax("tel URI: empty parameter"));
                }
                params.push(Param::new(n, v));
            }
            Ok(Uri::Tel(TelUri {
                number: number.to_string(),
                params,
            }))
        } else {
            if rest.is_empty() {
                return Err(ParseError::syntax(format!(
                    "URI: nothing after scheme {scheme:?}"
                )));
            }
            Ok(Uri::Other {
                scheme: scheme.to_string(),
                opaque: rest.to_string(),
            })
        }
    }

    pub fn as_sip(&self) -> Option<&SipUri> {
        match self {
            Uri::Sip(u) => Some(u),
            _ => None,
        }
    }

    /// The user a phone number would be in: a sip(s) URI's unescaped user (invalid UTF-8
    /// replaced) or a tel URI's number, as written; `None` for other URIs or no user.
    pub fn user_number(&self) -> Option<String> {
        match self {
            Uri::Sip(u) => u
                .user_unescaped()
                .map(|b| String::from_utf8_lossy(&b).into_owned()),
            Uri::Tel(t) => Some(t.number.clone()),
            Uri::Other { .. } => None,
        }
    }
}

impl From<SipUri> for Uri {
    fn from(u: SipUri) -> Self {
        Uri::Sip(u)
    }
}

impl fmt::Display for Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Uri::Sip(u) => u.fmt(f),
            Uri::Tel(t) => {
                let mut out = format!("tel:{}", t.number);
                write_params(&mut out, &t.params);
                f.write_str(&out)
            }
            Uri::Other { scheme, opaque } => write!(f, "{scheme}:{opaque}"),
        }
    }
}

impl std::str::FromStr for Uri {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uri::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_full_sip_uri() {
        let u = Uri::parse("sips:alice:secret@[2001:db8::10]:5071;transport=tcp;lr?subject=hi&x=y")
            .unwrap();
        let Uri::Sip(s) = &u else { panic!("not sip") };
        assert_eq!(s.scheme, Scheme::Sips);
        assert_eq!(s.user.as_deref(), Some("alice"));
        assert_eq!(s.password.as_deref(), Some("secret"));
        assert_eq!(s.host, Host::Ipv6("2001:db8::10".parse().unwrap()));
        assert_eq!(s.port, Some(5071));
        assert_eq!(s.transport_param().as_deref(), Some("tcp"));
        assert!(s.param("lr").is_some_and(|p| p.value.is_none()));
        assert_eq!(
            s.headers,
            vec![("subject".into(), "hi".into()), ("x".into(), "y".into())]
        );
        assert_eq!(
            u.to_string(),
            "sips:alice:secret@[2001:db8::10]:5071;transport=tcp;lr?subject=hi&x=y"
        );
    }

    #[test]
    fn ipv6_port_ambiguity() {
        let Uri::Sip(a) = Uri::parse("sip:[2001:db8::10:5070]").unwrap() else {
            panic!()
        };
        assert_eq!(a.port, None);
        let Uri::Sip(b) = Uri::parse("sip:[2001:db8::10]:5070").unwrap() else {
            panic!()
        };
        assert_eq!(b.port, Some(5070));
        assert!(Uri::parse("sip:2001:db8::10").is_err());
    }

    #[test]
    fn escaping() {
        let u = SipUri::new(Host::Domain("example.com".into())).with_user("I have spaces@x");
        assert_eq!(u.to_string(), "sip:I%20have%20spaces%40x@example.com");
        assert_eq!(u.user_unescaped().unwrap(), b"I have spaces@x");
        let Uri::Sip(n) = Uri::parse("sip:null-%00-null@example.com").unwrap() else {
            panic!()
        };
        assert_eq!(n.user_unescaped().unwrap(), b"null-\0-null");
        assert!(Uri::parse("sip:a%4@example.com").is_err());
        assert!(Uri::parse("sip:a%ZZ@example.com").is_err());
    }

    #[test]
    fn user_number_of_sip_tel_and_other() {
        let user = |s: &str| Uri::parse(s).unwrap().user_number();
        assert_eq!(
            user("sip:%2B4930123456;npdi@192.0.2.1").as_deref(),
            Some("+4930123456;npdi")
        );
        assert_eq!(
            user("tel:+1-201-555-0123;phone-context=example.com").as_deref(),
            Some("+1-201-555-0123")
        );
        assert_eq!(user("sip:192.0.2.1"), None);
        assert_eq!(user("urn:service:sos"), None);
    }

    #[test]
    fn tel_and_other() {
        assert_eq!(
            Uri::parse("tel:+1-201-555-0123;phone-context=example.com").unwrap(),
            Uri::Tel(TelUri {
                number: "+1-201-555-0123".into(),
                params: vec![Param::new("phone-context", Some("example.com".into()))],
            })
        );
        assert!(matches!(
            Uri::parse("soap.beep://192.0.2.103:3002").unwrap(),
            Uri::Other { .. }
        ));
        assert!(Uri::parse("<sip:a@b>").is_err());
        assert!(Uri::parse("sip:a@b; lr").is_err());
    }
}

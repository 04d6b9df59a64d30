//! SIP messages: parsing, serialization and builders (RFC 3261 sections 7 and 25).

mod headers;
pub(crate) mod syntax;
mod uri;

use std::fmt;

pub use headers::{
    canonical_name, CSeq, Header, Headers, MediaType, NameAddr, RAck, Reason, SessionExpires, Via,
    MAGIC_COOKIE,
};
pub use syntax::Param;
pub use uri::{escape_user, unescape, Host, Scheme, SipUri, TelUri, Uri};

use syntax::{is_token, is_ws, truncate};

/// What kind of problem a parse error is; the validation layer maps it to a status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseErrorKind {
    /// Malformed syntax (400).
    Syntax,
    /// A size limit was exceeded (400 / 513, or the connection is closed).
    TooLarge,
    /// SIP version other than 2.0 (505).
    Version,
}

/// A parse or validation failure. The message names the field that was wrong, for a log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub kind: ParseErrorKind,
    pub message: String,
}

impl ParseError {
    pub fn syntax(message: impl Into<String>) -> Self {
        ParseError {
            kind: ParseErrorKind::Syntax,
            message: message.into(),
        }
    }

    pub fn too_large(message: impl Into<String>) -> Self {
        ParseError {
            kind: ParseErrorKind::TooLarge,
            message: message.into(),
        }
    }

    /// Prefixes the message with the field it occurred in.
    pub fn context(mut self, field: &str) -> Self {
        self.message = format!("{field}: {}", self.message);
        self
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ParseError {}

/// Size limits applied while parsing. The defaults suit a trunk-facing gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Whole message (head and body) in bytes.
    pub max_message_size: usize,
    /// Number of header fields.
    pub max_headers: usize,
    /// One header field after unfolding, in bytes.
    pub max_header_line: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_size: 65_535,
            max_headers: 256,
            max_header_line: 8_192,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Method {
    Invite,
    Ack,
    Bye,
    Cancel,
    Options,
    Register,
    Prack,
    Update,
    Info,
    Message,
    Refer,
    Notify,
    Subscribe,
    Publish,
    /// An extension method (any token).
    Other(String),
}

impl Method {
    /// Parses a method token. Methods are case-sensitive (RFC 3261 section 7.1).
    pub fn parse(s: &str) -> Result<Method, ParseError> {
        Ok(match s {
            "INVITE" => Method::Invite,
            "ACK" => Method::Ack,
            "BYE" => Method::Bye,
            "CANCEL" => Method::Cancel,
            "OPTIONS" => Method::Options,
            "REGISTER" => Method::Register,
            "PRACK" => Method::Prack,
            "UPDATE" => Method::Update,
            "INFO" => Method::Info,
            "MESSAGE" => Method::Message,
            "REFER" => Method::Refer,
            "NOTIFY" => Method::Notify,
            "SUBSCRIBE" => Method::Subscribe,
            "PUBLISH" => Method::Publish,
            other if is_token(other) => Method::Other(other.to_string()),
            other => {
                return Err(ParseError::syntax(format!(
                    "method {:?} is not a token",
                    truncate(other)
                )))
            }
        })
    }

    pub fn as_str(&self) -> &str {
        match self {
            Method::Invite => "INVITE",
            Method::Ack => "ACK",
            Method::Bye => "BYE",
            Method::Cancel => "CANCEL",
            Method::Options => "OPTIONS",
            Method::Register => "REGISTER",
            Method::Prack => "PRACK",
            Method::Update => "UPDATE",
            Method::Info => "INFO",
            Method::Message => "MESSAGE",
            Method::Refer => "REFER",
            Method::Notify => "NOTIFY",
            Method::Subscribe => "SUBSCRIBE",
            Method::Publish => "PUBLISH",
            Method::Other(s) => s,
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: Method,
    pub uri: Uri,
    pub headers: Headers,
    pub body: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub code: u16,
    pub reason: String,
    pub headers: Headers,
    pub body: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Request(Request),
    Response(Response),
}

/// The standard reason phrase for a status code.
pub fn reason_phrase(code: u16) -> &'static str {
    match code {
        100 => "Trying",
        180 => "Ringing",
        181 => "Call Is Being Forwarded",
        182 => "Queued",
        183 => "Session Progress",
        200 => "OK",
        202 => "Accepted",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        413 => "Request Entity Too Large",
        415 => "Unsupported Media Type",
        416 => "Unsupported URI Scheme",
        420 => "Bad Extension",
        422 => "Session Interval Too Small",
        480 => "Temporarily Unavailable",
        481 => "Call/Transaction Does Not Exist",
        482 => "Loop Detected",
        483 => "Too Many Hops",
        484 => "Address Incomplete",
        486 => "Busy Here",
        487 => "Request Terminated",
        488 => "Not Acceptable Here",
        491 => "Request Pending",
        500 => "Server Internal Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        504 => "Server Time-out",
        505 => "Version Not Supported",
        513 => "Message Too Large",
        600 => "Busy Everywhere",
        603 => "Decline",
        604 => "Does Not Exist Anywhere",
        606 => "Not Acceptable",
        _ => "Unknown",
    }
}

/// Serializes a head and body, writing a Content-Length that matches the body
/// (replacing any value the headers carry, or appending one).
fn write_message(start: &str, headers: &Headers, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(start.len() + 32 * headers.len() + body.len() + 64);
    out.extend_from_slice(start.as_bytes());
    out.extend_from_slice(b"\r\n");
    let mut wrote_length = false;
    for h in headers.iter() {
        out.extend_from_slice(h.name.as_bytes());
        out.extend_from_slice(b": ");
        if h.name == "Content-Length" {
            if wrote_length {
                // One Content-Length only, whatever the header list says.
                out.truncate(out.len() - h.name.len() - 2);
                continue;
            }
            out.extend_from_slice(body.len().to_string().as_bytes());
            wrote_length = true;
        } else {
            out.extend_from_slice(h.value.as_bytes());
        }
        out.extend_from_slice(b"\r\n");
    }
    if !wrote_length {
        out.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

/// Headers copied from a request into every response to it (RFC 3261 section 8.2.6.2).
fn response_headers(request_headers: &Headers) -> Headers {
    let mut h = Headers::new();
    for name in ["Via", "From", "To", "Call-ID", "CSeq"] {
        for v in request_headers.get_all(name) {
            h.push(name, v);
        }
    }
    h
}

impl Request {
    /// A request with the given method and URI and no headers.
    pub fn new(method: Method, uri: impl Into<Uri>) -> Self {
        Request {
            method,
            uri: uri.into(),
            headers: Headers::new(),
            body: Vec::new(),
        }
    }

    /// Sets the body and its Content-Type / Content-Length.
    pub fn set_body(&mut self, content_type: &str, body: Vec<u8>) {
        set_body(&mut self.headers, content_type, body.len());
        self.body = body;
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        write_message(
            &format!("{} {} SIP/2.0", self.method, self.uri),
            &self.headers,
            &self.body,
        )
    }
}

fn set_body(headers: &mut Headers, content_type: &str, len: usize) {
    if len == 0 {
        headers.remove("Content-Type");
    } else {
        headers.set("Content-Type", content_type);
    }
    headers.set("Content-Length", len.to_string());
}

impl Response {
    pub fn new(code: u16, reason: impl Into<String>) -> Self {
        Response {
            code,
            reason: reason.into(),
            headers: Headers::new(),
            body: Vec::new(),
        }
    }

    /// A response to `req` carrying its Via, From, To, Call-ID and CSeq.
    /// The caller adds a To tag where the response creates a dialog.
    pub fn for_request(req: &Request, code: u16, reason: impl Into<String>) -> Self {
        Response::from_request_headers(&req.headers, code, reason)
    }

    /// Like [`Response::for_request`] from a header list alone (used when the request line did not parse).
    pub fn from_request_headers(headers: &Headers, code: u16, reason: impl Into<String>) -> Self {
        let mut r = Response::new(code, reason);
        r.headers = response_headers(headers);
        r.headers.set("Content-Length", "0");
        r
    }

    pub fn set_body(&mut self, content_type: &str, body: Vec<u8>) {
        set_body(&mut self.headers, content_type, body.len());
        self.body = body;
    }

    /// Adds a tag to the To header if it has none.
    pub fn set_to_tag(&mut self, tag: &str) -> Result<(), ParseError> {
        let mut to = self.headers.to()?;
        if to.tag().is_none() {
            to.set_param("tag", Some(tag.to_string()));
            self.headers.set("To", to.to_string());
        }
        Ok(())
    }

    pub fn is_provisional(&self) -> bool {
        self.code < 200
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        write_message(
            &format!("SIP/2.0 {} {}", self.code, self.reason),
            &self.headers,
            &self.body,
        )
    }
}

impl Message {
    pub fn headers(&self) -> &Headers {
        match self {
            Message::Request(r) => &r.headers,
            Message::Response(r) => &r.headers,
        }
    }

    pub fn headers_mut(&mut self) -> &mut Headers {
        match self {
            Message::Request(r) => &mut r.headers,
            Message::Response(r) => &mut r.headers,
        }
    }

    pub fn body(&self) -> &[u8] {
        match self {
            Message::Request(r) => &r.body,
            Message::Response(r) => &r.body,
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            Message::Request(r) => r.to_bytes(),
            Message::Response(r) => r.to_bytes(),
        }
    }

    /// Parses one message from a datagram (see [`crate::validate::check_datagram`] for the
    /// full receive path with validation).
    pub fn parse(bytes: &[u8]) -> Result<Message, ParseError> {
        let head = Head::parse(bytes, &Limits::default())?;
        let body = head.datagram_body(bytes)?;
        head.into_message(body.to_vec())
    }
}

/// The start line of a message, split but not yet validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartLine {
    /// The raw request line.
    Request { line: String },
    Response {
        version: String,
        code: String,
        reason: String,
    },
}

/// A parsed message head: start line, headers, and where the body begins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub start: StartLine,
    pub headers: Headers,
    /// Offset of the first body byte in the input.
    pub body_offset: usize,
}

/// Finds the end of the head (the empty line). Returns the offset just past it.
pub(crate) fn find_head_end(bytes: &[u8]) -> Option<usize> {
    let mut i = 0;
    while let Some(nl) = bytes
        .get(i..)
        .and_then(|b| b.iter().position(|&c| c == b'\n'))
    {
        let next = i + nl + 1;
        match bytes.get(next) {
            Some(b'\n') => return Some(next + 1),
            Some(b'\r') if bytes.get(next + 1) == Some(&b'\n') => return Some(next + 2),
            _ => {}
        }
        i = next;
    }
    None
}

/// Number of leading CRLF (or LF) bytes, which RFC 3261 section 7.5 says to ignore.
pub(crate) fn leading_crlf(bytes: &[u8]) -> usize {
    bytes
        .iter()
        .take_while(|&&b| b == b'\r' || b == b'\n')
        .count()
}

impl Head {
    /// Parses the head of a message. `bytes` may carry a body and more after the head.
    pub fn parse(bytes: &[u8], limits: &Limits) -> Result<Head, ParseError> {
        let skip = leading_crlf(bytes);
        let rest = bytes.get(skip..).unwrap_or_default();
        let end = find_head_end(rest).ok_or_else(|| {
            if rest.len() > limits.max_message_size {
                ParseError::too_large(format!(
                    "header section exceeds {} bytes",
                    limits.max_message_size
                ))
            } else {
                ParseError::syntax("no empty line after the headers")
            }
        })?;
        if end > limits.max_message_size {
            return Err(ParseError::too_large(format!(
                "header section of {end} bytes exceeds {}",
                limits.max_message_size
            )));
        }
        let text = std::str::from_utf8(&rest[..end]).map_err(|e| {
            ParseError::syntax(format!(
                "header section is not UTF-8 (byte {})",
                e.valid_up_to()
            ))
        })?;
        let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
        let start_line = lines.next().unwrap_or("");
        let start = parse_start_line(start_line)?;
        let mut headers = Headers::new();
        let mut current: Option<(String, String)> = None;
        let finish =
            |cur: Option<(String, String)>, headers: &mut Headers| -> Result<(), ParseError> {
                if let Some((name, value)) = cur {
                    if headers.len() >= limits.max_headers {
                        return Err(ParseError::too_large(format!(
                            "more than {} header fields",
                            limits.max_headers
                        )));
                    }
                    headers.push(&name, value.trim_matches(is_ws).to_string());
                }
                Ok(())
            };
        for line in lines {
            if line.is_empty() {
                break;
            }
            if line.starts_with(is_ws) {
                // Folded continuation: replaced by a single space.
                let Some((name, value)) = current.as_mut() else {
                    return Err(ParseError::syntax(
                        "continuation line before the first header",
                    ));
                };
                value.push(' ');
                value.push_str(line.trim_matches(is_ws));
                if value.len() > limits.max_header_line {
                    return Err(ParseError::too_large(format!(
                        "header {name} exceeds {} bytes",
                        limits.max_header_line
                    )));
                }
                continue;
            }
            finish(current.take(), &mut headers)?;
            if line.len() > limits.max_header_line {
                return Err(ParseError::too_large(format!(
                    "header line of {} bytes exceeds {}",
                    line.len(),
                    limits.max_header_line
                )));
            }
            let (name, value) = line.split_once(':').ok_or_else(|| {
                ParseError::syntax(format!("header line {:?} has no ':'", truncate(line)))
            })?;
            let name = name.trim_end_matches(is_ws);
            if !is_token(name) {
                return Err(ParseError::syntax(format!(
                    "bad header name {:?}",
                    truncate(name)
                )));
            }
            current = Some((name.to_string(), value.trim_matches(is_ws).to_string()));
        }
        finish(current.take(), &mut headers)?;
        Ok(Head {
            start,
            headers,
            body_offset: skip + end,
        })
    }

    pub fn is_request(&self) -> bool {
        matches!(self.start, StartLine::Request { .. })
    }

    /// The Content-Length value, validated (a single, non-negative decimal number).
    pub fn content_length(&self) -> Result<Option<usize>, ParseError> {
        self.headers.content_length()
    }

    /// The body of a datagram: Content-Length bytes (extra bytes are ignored), or everything
    /// after the head when there is no Content-Length.
    pub fn datagram_body<'a>(&self, bytes: &'a [u8]) -> Result<&'a [u8], ParseError> {
        let rest = bytes.get(self.body_offset..).unwrap_or_default();
        match self.content_length()? {
            None => Ok(rest),
            Some(n) => rest.get(..n).ok_or_else(|| {
                ParseError::syntax(format!(
                    "Content-Length: {n} is larger than the {} bytes that follow the headers",
                    rest.len()
                ))
            }),
        }
    }

    /// Builds a typed message from the head and its body.
    pub fn into_message(self, body: Vec<u8>) -> Result<Message, ParseError> {
        match self.start {
            StartLine::Request { line } => {
                let (method, uri) = split_request_line(&line)?;
                Ok(Message::Request(Request {
                    method,
                    uri,
                    headers: self.headers,
                    body,
                }))
            }
            StartLine::Response {
                version,
                code,
                reason,
            } => {
                check_version(&version)?;
                let code = if code.len() == 3 && code.bytes().all(|b| b.is_ascii_digit()) {
                    code.parse::<u16>().unwrap_or(0)
                } else {
                    0
                };
                if !(100..700).contains(&code) {
                    return Err(ParseError::syntax(
                        "status code must be 3 digits, 100 to 699",
                    ));
                }
                Ok(Message::Response(Response {
                    code,
                    reason,
                    headers: self.headers,
                    body,
                }))
            }
        }
    }
}

pub(crate) fn check_version(v: &str) -> Result<(), ParseError> {
    if v.eq_ignore_ascii_case("SIP/2.0") {
        return Ok(());
    }
    Err(ParseError {
        kind: ParseErrorKind::Version,
        message: format!("unsupported version {:?}", truncate(v)),
    })
}

/// Splits the start line into a status line or a request line; the request line is split
/// strictly later, so that a bad one can still be answered with a 400.
fn parse_start_line(line: &str) -> Result<StartLine, ParseError> {
    if line.len() >= 4 && line.is_char_boundary(4) && line[..4].eq_ignore_ascii_case("SIP/") {
        let mut it = line.splitn(3, ' ');
        let version = it.next().unwrap_or("").to_string();
        let code = it
            .next()
            .ok_or_else(|| ParseError::syntax("status line has no status code"))?
            .to_string();
        let reason = it.next().unwrap_or("").to_string();
        return Ok(StartLine::Response {
            version,
            code,
            reason,
        });
    }
    if line.is_empty() {
        return Err(ParseError::syntax("empty start line"));
    }
    Ok(StartLine::Request {
        line: line.to_string(),
    })
}

/// Splits a request line. Exactly one SP separates the elements (RFC 3261 section 7.1).
fn split_request_line(line: &str) -> Result<(Method, Uri), ParseError> {
    let parts: Vec<&str> = line.split(' ').collect();
    let [method, uri, version] = parts.as_slice() else {
        return Err(ParseError::syntax(format!(
            "request line {:?} is not 'METHOD SP Request-URI SP SIP/2.0'",
            truncate(line)
        )));
    };
    check_version(version)?;
    let method = Method::parse(method).map_err(|e| e.context("request line"))?;
    let uri = Uri::parse(uri).map_err(|e| e.context("Request-URI"))?;
    Ok((method, uri))
}

/// The version token of a request line (its last space-separated element).
pub(crate) fn request_line_version(line: &str) -> &str {
    line.split(' ').rfind(|t| !t.is_empty()).unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    const INVITE: &[u8] = b"INVITE sip:bob@example.com SIP/2.0\r\n\
v: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK776asdhds\r\n\
Max-Forwards: 70\r\n\
t: Bob <sip:bob@example.com>\r\n\
f: Alice <sip:alice@example.org>;tag=1928301774\r\n\
i: a84b4c76e66710\r\n\
CSeq: 314159 INVITE\r\n\
m: <sip:alice@192.0.2.1>\r\n\
c: application/sdp\r\n\
l: 4\r\n\
\r\n\
v=0\r\ntrailing";

    #[test]
    fn parses_compact_request_and_ignores_trailing_bytes() {
        let Message::Request(r) = Message::parse(INVITE).unwrap() else {
            panic!("not a request")
        };
        assert_eq!(r.method, Method::Invite);
        assert_eq!(r.headers.call_id().unwrap(), "a84b4c76e66710");
        assert_eq!(r.headers.cseq().unwrap().seq, 314159);
        assert_eq!(r.headers.from().unwrap().tag(), Some("1928301774"));
        assert_eq!(r.body, b"v=0\r");
        let out = String::from_utf8(r.to_bytes()).unwrap();
        assert!(out.starts_with("INVITE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP"));
        assert!(out.contains("\r\nContent-Type: application/sdp\r\nContent-Length: 4\r\n\r\nv=0\r"));
    }

    #[test]
    fn response_for_request_copies_headers() {
        let Message::Request(r) = Message::parse(INVITE).unwrap() else {
            panic!()
        };
        let mut resp = Response::for_request(&r, 486, "Busy Here");
        resp.set_to_tag("xyz").unwrap();
        let text = String::from_utf8(resp.to_bytes()).unwrap();
        assert_eq!(
            text,
            "SIP/2.0 486 Busy Here\r\n\
Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK776asdhds\r\n\
From: Alice <sip:alice@example.org>;tag=1928301774\r\n\
To: \"Bob\" <sip:bob@example.com>;tag=xyz\r\n\
Call-ID: a84b4c76e66710\r\n\
CSeq: 314159 INVITE\r\n\
Content-Length: 0\r\n\r\n"
        );
    }

    #[test]
    fn limits_are_enforced() {
        let limits = Limits {
            max_message_size: 65535,
            max_headers: 3,
            max_header_line: 8192,
        };
        let e = Head::parse(INVITE, &limits).unwrap_err();
        assert_eq!(e.kind, ParseErrorKind::TooLarge);
        assert!(e.message.contains("more than 3 header fields"));
        let long = format!(
            "OPTIONS sip:a@b SIP/2.0\r\nX-Long: {}\r\n\r\n",
            "a".repeat(9000)
        );
        let e = Head::parse(long.as_bytes(), &Limits::default()).unwrap_err();
        assert_eq!(e.kind, ParseErrorKind::TooLarge);
    }

    #[test]
    fn start_line_errors() {
        assert!(Message::parse(b"INVITE  sip:a@b SIP/2.0\r\n\r\n").is_err());
        assert!(Message::parse(b"SIP/2.0 4294967301 x\r\n\r\n").is_err());
        let e = Message::parse(b"OPTIONS sip:a@b SIP/7.0\r\n\r\n").unwrap_err();
        assert_eq!(e.kind, ParseErrorKind::Version);
        let Message::Response(r) = Message::parse(b"SIP/2.0 100 \r\n\r\n").unwrap() else {
            panic!()
        };
        assert_eq!((r.code, r.reason.as_str()), (100, ""));
    }
}

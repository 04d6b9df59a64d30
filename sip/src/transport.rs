//! Transport rules without IO: stream framing (RFC 3261 section 18.3, RFC 5626 keep-alives),
//! Via stamping on receipt (section 18.2.1, RFC 3581) and response routing (section 18.2.2).

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use crate::message::{find_head_end, Head, Host, Limits, ParseError, Request, Via};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
}

impl Transport {
    /// Reliable transports carry no retransmissions and use zero-length wait timers.
    pub fn is_reliable(self) -> bool {
        !matches!(self, Transport::Udp)
    }

    /// Lowercase, as in a URI's `transport` parameter (and the service's configuration).
    pub fn name(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
        }
    }

    /// The Via transport token.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
            Transport::Tls => "TLS",
        }
    }

    pub fn default_port(self) -> u16 {
        match self {
            Transport::Tls => 5061,
            _ => 5060,
        }
    }

    pub fn from_via_token(t: &str) -> Option<Transport> {
        match t.to_ascii_uppercase().as_str() {
            "UDP" => Some(Transport::Udp),
            "TCP" => Some(Transport::Tcp),
            "TLS" => Some(Transport::Tls),
            _ => None,
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a stream framer yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// One whole message (head and Content-Length bytes of body).
    Message(Vec<u8>),
    /// An RFC 5626 double-CRLF ping: write [`PONG`] back on the connection.
    Ping,
}

/// The RFC 5626 keep-alive answer to a double-CRLF ping.
pub const PONG: &[u8] = b"\r\n";

/// Splits a TCP/TLS byte stream into messages by Content-Length.
///
/// After an error the stream cannot be resynchronised: the framer yields nothing more and the
/// connection should be closed.
#[derive(Debug, Clone)]
pub struct StreamFramer {
    buf: Vec<u8>,
    limits: Limits,
    failed: bool,
    /// The head was parsed but its Content-Length is unusable: the head alone is yielded
    /// (so the request can be answered with a 400) and the framer fails after it.
    fail_after: bool,
    /// Bytes already searched for the end of the head, so a slow sender costs linear time.
    scanned: usize,
    /// Total length of the message at the front, once its head has been parsed.
    pending: Option<usize>,
}

impl StreamFramer {
    pub fn new(limits: Limits) -> Self {
        StreamFramer {
            buf: Vec::new(),
            limits,
            failed: false,
            fail_after: false,
            scanned: 0,
            pending: None,
        }
    }

    /// Appends bytes read from the connection.
    pub fn push(&mut self, bytes: &[u8]) {
        if !self.failed {
            self.buf.extend_from_slice(bytes);
        }
    }

    /// Bytes held waiting for the rest of a message.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next frame, `None` if more bytes are needed, or an error (close the connection).
    pub fn next_frame(&mut self) -> Option<Result<Frame, ParseError>> {
        if self.failed {
            return None;
        }
        if self.fail_after {
            self.failed = true;
            self.buf.clear();
            return Some(Err(ParseError::syntax(
                "stream: Content-Length unusable, cannot find the next message",
            )));
        }
        loop {
            match self.buf.as_slice() {
                [] => return None,
                [b'\r', b'\n', b'\r', b'\n', ..] => {
                    self.buf.drain(..4);
                    self.scanned = 0;
                    return Some(Ok(Frame::Ping));
                }
                // A lone CRLF may still become a ping: wait for more.
                [b'\r'] | [b'\r', b'\n'] | [b'\r', b'\n', b'\r'] => return None,
                [b'\r', b'\n', ..] => {
                    // A single CRLF (a pong, or padding): ignored.
                    self.buf.drain(..2);
                    self.scanned = 0;
                }
                [b'\n', ..] | [b'\r', ..] => {
                    self.buf.drain(..1);
                    self.scanned = 0;
                }
                _ => break,
            }
        }
        if let Some(total) = self.pending {
            return self.take_message(total);
        }
        // A terminator ending past what was scanned starts at most 3 bytes before it.
        let from = self.scanned.saturating_sub(3);
        let found = self
            .buf
            .get(from..)
            .and_then(find_head_end)
            .map(|end| from + end);
        self.scanned = self.buf.len();
        let Some(head_end) = found else {
            if self.buf.len() > self.limits.max_message_size {
                return Some(Err(self.fail(ParseError::too_large(format!(
                    "stream: no end of headers within {} bytes",
                    self.limits.max_message_size
                )))));
            }
            return None;
        };
        let head = match Head::parse(&self.buf[..head_end], &self.limits) {
            Ok(h) => h,
            Err(e) => return Some(Err(self.fail(e.context("stream")))),
        };
        let body_len = match head.content_length() {
            // Content-Length is mandatory on streams; a missing one is taken as 0.
            Ok(n) => n.unwrap_or(0),
            Err(_) => {
                self.fail_after = true;
                self.scanned = 0;
                let msg: Vec<u8> = self.buf.drain(..head_end).collect();
                return Some(Ok(Frame::Message(msg)));
            }
        };
        let total = head_end.saturating_add(body_len);
        if total > self.limits.max_message_size {
            return Some(Err(self.fail(ParseError::too_large(format!(
                "stream: message of {total} bytes exceeds {}",
                self.limits.max_message_size
            )))));
        }
        self.pending = Some(total);
        self.take_message(total)
    }

    fn take_message(&mut self, total: usize) -> Option<Result<Frame, ParseError>> {
        if self.buf.len() < total {
            return None;
        }
        self.pending = None;
        self.scanned = 0;
        let msg: Vec<u8> = self.buf.drain(..total).collect();
        Some(Ok(Frame::Message(msg)))
    }

    fn fail(&mut self, e: ParseError) -> ParseError {
        self.failed = true;
        self.buf.clear();
        e
    }
}

impl Iterator for StreamFramer {
    type Item = Result<Frame, ParseError>;
    fn next(&mut self) -> Option<Self::Item> {
        self.next_frame()
    }
}

/// Stamps the top Via of a received request (RFC 3261 section 18.2.1, RFC 3581 section 4):
/// `received` when sent-by is not the source address, `rport` filled with the source port
/// (and `received` always) when the client asked for it.
pub fn stamp_received(req: &mut Request, source: SocketAddr) -> Result<(), ParseError> {
    let mut via = req.headers.top_via()?;
    if stamp_via(&mut via, source) {
        replace_top_via(req, &via)?;
    }
    Ok(())
}

/// Applies the receive-side Via rules to a parsed Via; returns whether it changed.
pub fn stamp_via(via: &mut Via, source: SocketAddr) -> bool {
    let mut changed = false;
    let asked_rport = via.rport().is_some();
    if asked_rport {
        via.set_param("rport", Some(source.port().to_string()));
        changed = true;
    }
    let sent_by_is_source = via.host.ip() == Some(source.ip());
    if asked_rport || !sent_by_is_source {
        via.set_param("received", Some(ip_text(source.ip())));
        changed = true;
    }
    changed
}

fn ip_text(ip: IpAddr) -> String {
    // RFC 5118 section 4.5: received carries the IPv6 address without brackets.
    ip.to_string()
}

/// Rewrites the first value of the first Via header line.
pub(crate) fn replace_top_via(req: &mut Request, via: &Via) -> Result<(), ParseError> {
    let headers = req.headers.as_mut_vec();
    let Some(h) = headers.iter_mut().find(|h| h.name == "Via") else {
        return Err(ParseError::syntax("Via: missing"));
    };
    let mut items = crate::message::syntax::split_top_level(&h.value, ',', "Via")?;
    if let Some(first) = items.first_mut() {
        *first = via.to_string();
    }
    h.value = items
        .iter()
        .map(|s| s.trim())
        .collect::<Vec<_>>()
        .join(", ");
    Ok(())
}

/// Where a response is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponseTarget {
    /// Back on the connection the request arrived on (reliable transports).
    Connection(SocketAddr),
    /// To this address over the request's transport.
    Addr(SocketAddr),
    /// To a host name that needs resolving (RFC 3263 section 5), with this port.
    Resolve { host: String, port: u16 },
}

/// Decides where the response to a request goes (RFC 3261 section 18.2.2, RFC 3581 section 4).
/// `via` is the request's top Via as received (after [`stamp_received`]), `source` the packet source.
/// Never returns a broadcast, multicast or unspecified address.
pub fn response_target(
    via: &Via,
    transport: Transport,
    source: SocketAddr,
) -> Result<ResponseTarget, ParseError> {
    if transport.is_reliable() {
        return Ok(ResponseTarget::Connection(source));
    }
    let default_port = via.port.unwrap_or(transport.default_port());
    let target = if via.rport().is_some() {
        ResponseTarget::Addr(source)
    } else if let Some(maddr) = via.maddr() {
        // Multicast responses are not supported: a maddr that is an address is used as unicast.
        match maddr {
            Host::Domain(name) => ResponseTarget::Resolve {
                host: name,
                port: default_port,
            },
            h => match h.ip() {
                Some(ip) => ResponseTarget::Addr(SocketAddr::new(ip, default_port)),
                None => return Err(ParseError::syntax("Via: unusable maddr")),
            },
        }
    } else if let Some(ip) = via.received().and_then(|h| h.ip()) {
        ResponseTarget::Addr(SocketAddr::new(ip, default_port))
    } else {
        match &via.host {
            Host::Domain(name) => ResponseTarget::Resolve {
                host: name.clone(),
                port: default_port,
            },
            h => match h.ip() {
                Some(ip) => ResponseTarget::Addr(SocketAddr::new(ip, default_port)),
                None => return Err(ParseError::syntax("Via: unusable sent-by")),
            },
        }
    };
    if let ResponseTarget::Addr(a) = &target {
        if !is_unicast(a.ip()) {
            return Err(ParseError::syntax(format!(
                "Via: refusing to send a response to non-unicast address {}",
                a.ip()
            )));
        }
    }
    Ok(target)
}

/// True for addresses a response may be sent to.
pub fn is_unicast(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => !(a.is_broadcast() || a.is_multicast() || a.is_unspecified()),
        IpAddr::V6(a) => !(a.is_multicast() || a.is_unspecified()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{Message, Method};

    const MSGS: [&str; 4] = [
        "INVITE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/TCP a.example.com;branch=z9hG4bK1\r\n\
To: <sip:bob@example.com>\r\nFrom: <sip:a@example.com>;tag=1\r\nCall-ID: c1\r\nCSeq: 1 INVITE\r\n\
Content-Type: application/sdp\r\nContent-Length: 10\r\n\r\nv=0\r\ns=-\r\n",
        "OPTIONS sip:bob@example.com SIP/2.0\r\nv: SIP/2.0/TCP a.example.com;branch=z9hG4bK2\r\n\
t: <sip:bob@example.com>\r\nf: <sip:a@example.com>;tag=1\r\ni: c2\r\nCSeq: 2 OPTIONS\r\nl: 0\r\n\r\n",
        "SIP/2.0 200 OK\r\nVia: SIP/2.0/TCP a.example.com;branch=z9hG4bK2\r\n\
To: <sip:bob@example.com>;tag=9\r\nFrom: <sip:a@example.com>;tag=1\r\nCall-ID: c2\r\nCSeq: 2 OPTIONS\r\n\r\n",
        "MESSAGE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/TCP a.example.com;branch=z9hG4bK3\r\n\
To: <sip:bob@example.com>\r\nFrom: <sip:a@example.com>;tag=1\r\nCall-ID: c3\r\nCSeq: 3 MESSAGE\r\n\
Content-Length:   5\r\n\r\nhello",
    ];

    fn stream() -> Vec<u8> {
        let mut s = Vec::new();
        s.extend_from_slice(b"\r\n\r\n");
        s.extend_from_slice(MSGS[0].as_bytes());
        s.extend_from_slice(MSGS[1].as_bytes());
        s.extend_from_slice(b"\r\n");
        s.extend_from_slice(MSGS[2].as_bytes());
        s.extend_from_slice(b"\r\n\r\n");
        s.extend_from_slice(MSGS[3].as_bytes());
        s
    }

    fn expected() -> Vec<Frame> {
        vec![
            Frame::Ping,
            Frame::Message(MSGS[0].as_bytes().to_vec()),
            Frame::Message(MSGS[1].as_bytes().to_vec()),
            Frame::Message(MSGS[2].as_bytes().to_vec()),
            Frame::Ping,
            Frame::Message(MSGS[3].as_bytes().to_vec()),
        ]
    }

    fn feed(chunks: &[&[u8]]) -> Vec<Frame> {
        let mut f = StreamFramer::new(Limits::default());
        let mut out = Vec::new();
        for c in chunks {
            f.push(c);
            for frame in f.by_ref() {
                out.push(frame.expect("frame"));
            }
        }
        out
    }

    #[test]
    fn stream_split_at_every_position_gives_same_frames() {
        let s = stream();
        assert_eq!(feed(&[&s]), expected());
        for i in 0..=s.len() {
            assert_eq!(feed(&[&s[..i], &s[i..]]), expected(), "split at {i}");
        }
        for i in 0..=s.len() {
            for j in (i..=s.len()).step_by(7) {
                assert_eq!(
                    feed(&[&s[..i], &s[i..j], &s[j..]]),
                    expected(),
                    "split at {i},{j}"
                );
            }
        }
        let bytes: Vec<&[u8]> = s.chunks(1).collect();
        assert_eq!(feed(&bytes), expected());
    }

    #[test]
    fn oversize_and_bad_length_fail_the_stream() {
        let limits = Limits {
            max_message_size: 200,
            ..Limits::default()
        };
        let mut f = StreamFramer::new(limits);
        f.push(
            MSGS[0]
                .replace("Content-Length: 10", "Content-Length: 1000")
                .as_bytes(),
        );
        let e = f.next_frame().expect("some").expect_err("too large");
        assert!(e.message.contains("exceeds 200"), "{e}");
        assert_eq!(f.next_frame(), None);

        let mut f = StreamFramer::new(limits);
        f.push(&[b'a'; 201]);
        assert!(f.next_frame().expect("some").is_err());

        let mut f = StreamFramer::new(Limits::default());
        let bad = MSGS[1].replace("l: 0", "l: -999");
        f.push(bad.as_bytes());
        f.push(MSGS[1].as_bytes());
        assert_eq!(f.next_frame(), Some(Ok(Frame::Message(bad.into_bytes()))));
        assert!(f.next_frame().expect("some").is_err());
        assert_eq!(f.next_frame(), None);
    }

    #[test]
    fn partial_message_waits() {
        let mut f = StreamFramer::new(Limits::default());
        let m = MSGS[3].as_bytes();
        f.push(&m[..m.len() - 1]);
        assert_eq!(f.next_frame(), None);
        assert_eq!(f.buffered(), m.len() - 1);
        f.push(&m[m.len() - 1..]);
        assert_eq!(f.next_frame(), Some(Ok(Frame::Message(m.to_vec()))));
    }

    fn request(via: &str) -> Request {
        let text = format!(
            "OPTIONS sip:a@b SIP/2.0\r\nVia: {via}\r\nVia: SIP/2.0/UDP second;branch=z9hG4bK2\r\n\
To: <sip:a@b>\r\nFrom: <sip:c@d>;tag=1\r\nCall-ID: x\r\nCSeq: 1 OPTIONS\r\n\r\n"
        );
        match Message::parse(text.as_bytes()) {
            Ok(Message::Request(r)) => r,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn stamping_received_and_rport() {
        let src: SocketAddr = "192.0.2.9:40000".parse().unwrap();
        let mut r = request("SIP/2.0/UDP client.example.com:5062;branch=z9hG4bK1");
        stamp_received(&mut r, src).unwrap();
        assert_eq!(
            r.headers.get("Via"),
            Some("SIP/2.0/UDP client.example.com:5062;branch=z9hG4bK1;received=192.0.2.9")
        );
        let via = r.headers.top_via().unwrap();
        assert_eq!(
            response_target(&via, Transport::Udp, src).unwrap(),
            ResponseTarget::Addr("192.0.2.9:5062".parse().unwrap())
        );

        let mut r = request("SIP/2.0/UDP 192.0.2.9;rport;branch=z9hG4bK1");
        stamp_received(&mut r, src).unwrap();
        assert_eq!(
            r.headers.get("Via"),
            Some("SIP/2.0/UDP 192.0.2.9;rport=40000;branch=z9hG4bK1;received=192.0.2.9")
        );
        let via = r.headers.top_via().unwrap();
        assert_eq!(
            response_target(&via, Transport::Udp, src).unwrap(),
            ResponseTarget::Addr(src)
        );

        // sent-by equals the source: nothing added; the response goes to sent-by's port.
        let mut r =
            request("SIP/2.0/UDP 192.0.2.9:5070;branch=z9hG4bK1, SIP/2.0/UDP x;branch=z9hG4bK0");
        stamp_received(&mut r, src).unwrap();
        assert_eq!(
            r.headers.get("Via"),
            Some("SIP/2.0/UDP 192.0.2.9:5070;branch=z9hG4bK1, SIP/2.0/UDP x;branch=z9hG4bK0")
        );
        let via = r.headers.top_via().unwrap();
        assert_eq!(
            response_target(&via, Transport::Udp, src).unwrap(),
            ResponseTarget::Addr("192.0.2.9:5070".parse().unwrap())
        );
        assert_eq!(
            response_target(&via, Transport::Tcp, src).unwrap(),
            ResponseTarget::Connection(src)
        );
        assert_eq!(r.method, Method::Options);
    }

    #[test]
    fn response_target_rules() {
        let src: SocketAddr = "[2001:db8::9]:5999".parse().unwrap();
        let via = Via::parse("SIP/2.0/UDP proxy.example.com;branch=z9hG4bK1").unwrap();
        assert_eq!(
            response_target(&via, Transport::Udp, src).unwrap(),
            ResponseTarget::Resolve {
                host: "proxy.example.com".into(),
                port: 5060
            }
        );
        let via =
            Via::parse("SIP/2.0/UDP [2001:db8::9:1];received=[2001:db8::9:255];branch=z9hG4bKa")
                .unwrap();
        assert_eq!(
            response_target(&via, Transport::Udp, src).unwrap(),
            ResponseTarget::Addr("[2001:db8::9:255]:5060".parse().unwrap())
        );
        let via = Via::parse("SIP/2.0/UDP 255.255.255.255;branch=z9hG4bK1saber23").unwrap();
        assert!(response_target(&via, Transport::Udp, src).is_err());
        let via = Via::parse("SIP/2.0/UDP h;maddr=239.1.1.1;branch=z9hG4bK1").unwrap();
        assert!(response_target(&via, Transport::Udp, src).is_err());
    }
}

//! Session descriptions (RFC 4566): data model, parser and serializer.
//!
//! Attributes are kept in order as name/value pairs (unknown ones survive a round trip); typed
//! accessors read rtpmap, fmtp, ptime, maxptime, rtcp and the direction attributes.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// What was wrong with an SDP body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SdpError {
    /// The body is not UTF-8.
    NotUtf8,
    /// A required line is absent (`"v="`, `"o="`, `"s="`).
    Missing(&'static str),
    /// A line is malformed. `number` is 1-based; `line` is the offending text (shortened).
    Line {
        number: usize,
        line: String,
        reason: String,
    },
}

impl fmt::Display for SdpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotUtf8 => write!(f, "SDP body is not UTF-8"),
            Self::Missing(l) => write!(f, "SDP has no {l} line"),
            Self::Line {
                number,
                line,
                reason,
            } => write!(f, "SDP line {number} `{line}`: {reason}"),
        }
    }
}

impl std::error::Error for SdpError {}

/// Media direction attribute (RFC 3264 section 5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Direction {
    #[default]
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SendRecv => "sendrecv",
            Self::SendOnly => "sendonly",
            Self::RecvOnly => "recvonly",
            Self::Inactive => "inactive",
        }
    }

    /// The attribute name as a direction, if it is one.
    pub fn from_attribute(name: &str) -> Option<Self> {
        match name {
            "sendrecv" => Some(Self::SendRecv),
            "sendonly" => Some(Self::SendOnly),
            "recvonly" => Some(Self::RecvOnly),
            "inactive" => Some(Self::Inactive),
            _ => None,
        }
    }

    pub fn from_flags(send: bool, recv: bool) -> Self {
        match (send, recv) {
            (true, true) => Self::SendRecv,
            (true, false) => Self::SendOnly,
            (false, true) => Self::RecvOnly,
            (false, false) => Self::Inactive,
        }
    }

    pub fn sends(self) -> bool {
        matches!(self, Self::SendRecv | Self::SendOnly)
    }

    pub fn receives(self) -> bool {
        matches!(self, Self::SendRecv | Self::RecvOnly)
    }

    /// The same stream seen from the other end: sendonly <-> recvonly.
    pub fn reversed(self) -> Self {
        Self::from_flags(self.receives(), self.sends())
    }

    /// Both constraints at once.
    pub fn intersect(self, other: Self) -> Self {
        Self::from_flags(
            self.sends() && other.sends(),
            self.receives() && other.receives(),
        )
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `o=` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub username: String,
    /// Kept as text: only its equality matters, and some agents send more digits than fit a u64.
    pub session_id: String,
    pub session_version: u64,
    pub net_type: String,
    pub addr_type: String,
    pub address: String,
}

/// `c=` line. `address` may carry `/ttl` and `/count` suffixes (multicast).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    pub net_type: String,
    pub addr_type: String,
    pub address: String,
}

impl Connection {
    /// An `IN IP4` / `IN IP6` connection for an address.
    pub fn for_ip(ip: IpAddr) -> Self {
        Self {
            net_type: "IN".into(),
            addr_type: if ip.is_ipv4() { "IP4" } else { "IP6" }.into(),
            address: ip.to_string(),
        }
    }

    /// The address without `/ttl` or `/count`.
    pub fn host(&self) -> &str {
        self.address.split('/').next().unwrap_or("")
    }

    /// The address as an IP, when it is an IP literal (not an FQDN).
    pub fn ip(&self) -> Option<IpAddr> {
        self.host().parse().ok()
    }

    /// `c=IN IP4 0.0.0.0` (RFC 2543 hold) or the IPv6 unspecified address.
    pub fn is_unspecified(&self) -> bool {
        self.ip().is_some_and(|ip| ip.is_unspecified())
    }
}

/// `b=` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bandwidth {
    pub bwtype: String,
    pub bandwidth: u64,
}

/// `t=` line with its `r=` lines.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Timing {
    pub start: u64,
    pub stop: u64,
    pub repeats: Vec<String>,
}

/// `a=` line: `a=name` (value `None`) or `a=name:value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribute {
    pub name: String,
    pub value: Option<String>,
}

impl Attribute {
    pub fn flag(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            value: None,
        }
    }

    pub fn new(name: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            value: Some(value.into()),
        }
    }
}

/// `a=rtpmap:<pt> <encoding>/<clock rate>[/<channels>]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpMap {
    pub payload_type: u8,
    pub encoding: String,
    pub clock_rate: u32,
    pub channels: Option<u16>,
}

impl RtpMap {
    pub fn parse(value: &str) -> Result<Self, String> {
        let (pt, rest) = value
            .trim()
            .split_once([' ', '\t'])
            .ok_or("rtpmap needs '<pt> <encoding>/<rate>'")?;
        let payload_type = parse_pt(pt)?;
        let mut parts = rest.trim().split('/');
        let encoding = parts.next().unwrap_or("").trim();
        if encoding.is_empty() {
            return Err("rtpmap has no encoding name".into());
        }
        let clock_rate = parts
            .next()
            .ok_or("rtpmap has no clock rate")?
            .trim()
            .parse::<u32>()
            .map_err(|_| "rtpmap clock rate is not a number".to_string())?;
        let channels = match parts.next() {
            None => None,
            Some(c) => Some(
                c.trim()
                    .parse::<u16>()
                    .map_err(|_| "rtpmap channel count is not a number".to_string())?,
            ),
        };
        if parts.next().is_some() {
            return Err("rtpmap has too many '/' fields".into());
        }
        Ok(Self {
            payload_type,
            encoding: encoding.to_string(),
            clock_rate,
            channels,
        })
    }

    /// Static payload types of RFC 3551 table 4 (used when an offer has no rtpmap for them).
    pub fn from_static(payload_type: u8) -> Option<Self> {
        let (name, rate, ch) = match payload_type {
            0 => ("PCMU", 8000, None),
            3 => ("GSM", 8000, None),
            4 => ("G723", 8000, None),
            5 => ("DVI4", 8000, None),
            6 => ("DVI4", 16000, None),
            7 => ("LPC", 8000, None),
            8 => ("PCMA", 8000, None),
            9 => ("G722", 8000, None),
            10 => ("L16", 44100, Some(2)),
            11 => ("L16", 44100, None),
            12 => ("QCELP", 8000, None),
            13 => ("CN", 8000, None),
            14 => ("MPA", 90000, None),
            15 => ("G728", 8000, None),
            16 => ("DVI4", 11025, None),
            17 => ("DVI4", 22050, None),
            18 => ("G729", 8000, None),
            25 => ("CelB", 90000, None),
            26 => ("JPEG", 90000, None),
            28 => ("nv", 90000, None),
            31 => ("H261", 90000, None),
            32 => ("MPV", 90000, None),
            33 => ("MP2T", 90000, None),
            34 => ("H263", 90000, None),
            _ => return None,
        };
        Some(Self {
            payload_type,
            encoding: name.to_string(),
            clock_rate: rate,
            channels: ch,
        })
    }

    /// Case-insensitive encoding name comparison.
    pub fn is(&self, encoding: &str, clock_rate: u32) -> bool {
        self.encoding.eq_ignore_ascii_case(encoding) && self.clock_rate == clock_rate
    }
}

impl fmt::Display for RtpMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}/{}",
            self.payload_type, self.encoding, self.clock_rate
        )?;
        if let Some(c) = self.channels {
            write!(f, "/{c}")?;
        }
        Ok(())
    }
}

/// The rtpmap of each payload type 0-127 of one media section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpMapTable {
    maps: Vec<Option<RtpMap>>,
}

impl RtpMapTable {
    pub fn get(&self, payload_type: u8) -> Option<&RtpMap> {
        self.maps.get(usize::from(payload_type))?.as_ref()
    }
}

/// `a=rtcp:<port> [<nettype> <addrtype> <address>]` (RFC 3605).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rtcp {
    pub port: u16,
    pub connection: Option<Connection>,
}

impl Rtcp {
    pub fn parse(value: &str) -> Result<Self, String> {
        let mut it = value.split_whitespace();
        let port = it
            .next()
            .ok_or("rtcp has no port")?
            .parse::<u16>()
            .map_err(|_| "rtcp port is not a number".to_string())?;
        let rest: Vec<&str> = it.collect();
        let connection = match rest.as_slice() {
            [] => None,
            [n, a, addr] => Some(Connection {
                net_type: (*n).to_string(),
                addr_type: (*a).to_string(),
                address: (*addr).to_string(),
            }),
            _ => return Err("rtcp address needs '<nettype> <addrtype> <address>'".into()),
        };
        Ok(Self { port, connection })
    }
}

fn parse_pt(s: &str) -> Result<u8, String> {
    match s.trim().parse::<u8>() {
        Ok(pt) if pt <= 127 => Ok(pt),
        _ => Err(format!("payload type '{}' is not 0-127", s.trim())),
    }
}

/// A decimal number such as `20` or `20.0` (both seen for ptime); fractions are dropped.
fn parse_ms(s: &str) -> Result<u32, String> {
    let s = s.trim();
    let int = match s.split_once('.') {
        Some((i, frac)) if frac.bytes().all(|b| b.is_ascii_digit()) => i,
        Some(_) => return Err(format!("'{s}' is not a number")),
        None => s,
    };
    int.parse::<u32>()
        .map_err(|_| format!("'{s}' is not a number"))
}

/// Attribute lookups shared by the session and media levels.
fn find<'a>(attrs: &'a [Attribute], name: &str) -> Option<&'a Attribute> {
    attrs.iter().find(|a| a.name == name)
}

fn direction_of(attrs: &[Attribute]) -> Option<Direction> {
    attrs
        .iter()
        .rev()
        .find_map(|a| Direction::from_attribute(&a.name))
}

/// One `m=` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaDescription {
    /// `audio`, `video`, `application`, ...
    pub media: String,
    pub port: u16,
    pub num_ports: Option<u16>,
    /// `RTP/AVP`, `RTP/SAVPF`, `UDP/TLS/RTP/SAVPF`, ...
    pub proto: String,
    /// Payload type numbers for RTP, or other format tokens.
    pub formats: Vec<String>,
    pub information: Option<String>,
    pub connections: Vec<Connection>,
    pub bandwidths: Vec<Bandwidth>,
    pub key: Option<String>,
    pub attributes: Vec<Attribute>,
}

impl MediaDescription {
    pub fn new(media: &str, port: u16, proto: &str, formats: Vec<String>) -> Self {
        Self {
            media: media.to_string(),
            port,
            num_ports: None,
            proto: proto.to_string(),
            formats,
            information: None,
            connections: Vec::new(),
            bandwidths: Vec::new(),
            key: None,
            attributes: Vec::new(),
        }
    }

    /// Port 0: the stream is rejected or disabled (RFC 3264 section 6).
    pub fn is_rejected(&self) -> bool {
        self.port == 0
    }

    /// The value of the first attribute called `name` (`Some("")` for a flag attribute).
    pub fn attribute(&self, name: &str) -> Option<&str> {
        find(&self.attributes, name).map(|a| a.value.as_deref().unwrap_or(""))
    }

    pub fn has_attribute(&self, name: &str) -> bool {
        find(&self.attributes, name).is_some()
    }

    /// Formats that are RTP payload type numbers, in offer order.
    pub fn payload_types(&self) -> Vec<u8> {
        self.formats
            .iter()
            .filter_map(|f| parse_pt(f).ok())
            .collect()
    }

    /// The rtpmap for `pt`: the `a=rtpmap` line, else the RFC 3551 static assignment.
    pub fn rtpmap(&self, pt: u8) -> Option<RtpMap> {
        self.attributes
            .iter()
            .filter(|a| a.name == "rtpmap")
            .filter_map(|a| RtpMap::parse(a.value.as_deref().unwrap_or("")).ok())
            .find(|m| m.payload_type == pt)
            .or_else(|| RtpMap::from_static(pt))
    }

    /// Every payload type's rtpmap, built in one pass (for lookups in loops over the formats).
    pub fn rtpmap_table(&self) -> RtpMapTable {
        let mut maps: Vec<Option<RtpMap>> = (0..128u8).map(RtpMap::from_static).collect();
        let mut explicit = [false; 128];
        for a in self.attributes.iter().filter(|a| a.name == "rtpmap") {
            let Ok(m) = RtpMap::parse(a.value.as_deref().unwrap_or("")) else {
                continue;
            };
            let i = usize::from(m.payload_type);
            if let (Some(seen @ false), Some(slot)) = (explicit.get_mut(i), maps.get_mut(i)) {
                *seen = true;
                *slot = Some(m);
            }
        }
        RtpMapTable { maps }
    }

    /// The `a=fmtp` parameters for `pt`.
    pub fn fmtp(&self, pt: u8) -> Option<&str> {
        self.attributes
            .iter()
            .filter(|a| a.name == "fmtp")
            .filter_map(|a| a.value.as_deref())
            .find_map(|v| {
                let (f, params) = v.split_once([' ', '\t']).unwrap_or((v, ""));
                (parse_pt(f).ok() == Some(pt)).then_some(params.trim())
            })
    }

    pub fn ptime(&self) -> Option<u32> {
        self.attribute("ptime").and_then(|v| parse_ms(v).ok())
    }

    pub fn maxptime(&self) -> Option<u32> {
        self.attribute("maxptime").and_then(|v| parse_ms(v).ok())
    }

    /// The media-level direction attribute, if any.
    pub fn direction(&self) -> Option<Direction> {
        direction_of(&self.attributes)
    }

    pub fn rtcp(&self) -> Option<Rtcp> {
        self.attribute("rtcp").and_then(|v| Rtcp::parse(v).ok())
    }

    /// Replaces any direction attribute with `dir`.
    pub fn set_direction(&mut self, dir: Direction) {
        self.attributes
            .retain(|a| Direction::from_attribute(&a.name).is_none());
        self.attributes.push(Attribute::flag(dir.as_str()));
    }
}

/// A whole session description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionDescription {
    pub origin: Origin,
    pub session_name: String,
    pub information: Option<String>,
    pub uri: Option<String>,
    pub emails: Vec<String>,
    pub phones: Vec<String>,
    pub connection: Option<Connection>,
    pub bandwidths: Vec<Bandwidth>,
    /// Never empty after parsing (a missing `t=` reads as `t=0 0`).
    pub times: Vec<Timing>,
    pub time_zones: Option<String>,
    pub key: Option<String>,
    pub attributes: Vec<Attribute>,
    pub media: Vec<MediaDescription>,
}

impl SessionDescription {
    /// Parses a body; accepts CRLF or LF line ends and ignores unknown line types. Attribute
    /// values are kept as text (a malformed `a=rtpmap` is seen in the wild, e.g. RFC 4475
    /// wsinv); the typed accessors skip what they cannot read.
    pub fn parse(text: &str) -> Result<Self, SdpError> {
        Parser::default().run(text)
    }

    /// Like [`parse`](Self::parse), and also rejects malformed rtpmap, fmtp, ptime, maxptime and
    /// rtcp attributes, naming the line.
    pub fn parse_strict(text: &str) -> Result<Self, SdpError> {
        Parser {
            strict: true,
            ..Parser::default()
        }
        .run(text)
    }

    /// Parses a message body.
    pub fn from_bytes(body: &[u8]) -> Result<Self, SdpError> {
        std::str::from_utf8(body)
            .map_err(|_| SdpError::NotUtf8)
            .and_then(Self::parse)
    }

    /// Serialized with CRLF line ends.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.to_string().into_bytes()
    }

    pub fn attribute(&self, name: &str) -> Option<&str> {
        find(&self.attributes, name).map(|a| a.value.as_deref().unwrap_or(""))
    }

    /// The session-level direction attribute, if any.
    pub fn direction(&self) -> Option<Direction> {
        direction_of(&self.attributes)
    }

    /// The direction in force for media `index`: media level, else session level, else sendrecv.
    pub fn media_direction(&self, index: usize) -> Direction {
        self.media
            .get(index)
            .and_then(MediaDescription::direction)
            .or_else(|| self.direction())
            .unwrap_or_default()
    }

    /// The connection in force for media `index`: its first `c=`, else the session's.
    pub fn media_connection(&self, index: usize) -> Option<&Connection> {
        self.media
            .get(index)
            .and_then(|m| m.connections.first())
            .or(self.connection.as_ref())
    }
}

impl FromStr for SessionDescription {
    type Err = SdpError;
    fn from_str(s: &str) -> Result<Self, SdpError> {
        Self::parse(s)
    }
}

fn write_attrs(f: &mut fmt::Formatter<'_>, attrs: &[Attribute]) -> fmt::Result {
    for a in attrs {
        match &a.value {
            Some(v) => write!(f, "a={}:{}\r\n", a.name, v)?,
            None => write!(f, "a={}\r\n", a.name)?,
        }
    }
    Ok(())
}

fn write_conn(f: &mut fmt::Formatter<'_>, c: &Connection) -> fmt::Result {
    write!(f, "c={} {} {}\r\n", c.net_type, c.addr_type, c.address)
}

fn write_bw(f: &mut fmt::Formatter<'_>, bws: &[Bandwidth]) -> fmt::Result {
    for b in bws {
        write!(f, "b={}:{}\r\n", b.bwtype, b.bandwidth)?;
    }
    Ok(())
}

impl fmt::Display for SessionDescription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = &self.origin;
        write!(
            f,
            "v=0\r\no={} {} {} {} {} {}\r\ns={}\r\n",
            o.username,
            o.session_id,
            o.session_version,
            o.net_type,
            o.addr_type,
            o.address,
            self.session_name
        )?;
        if let Some(i) = &self.information {
            write!(f, "i={i}\r\n")?;
        }
        if let Some(u) = &self.uri {
            write!(f, "u={u}\r\n")?;
        }
        for e in &self.emails {
            write!(f, "e={e}\r\n")?;
        }
        for p in &self.phones {
            write!(f, "p={p}\r\n")?;
        }
        if let Some(c) = &self.connection {
            write_conn(f, c)?;
        }
        write_bw(f, &self.bandwidths)?;
        if self.times.is_empty() {
            f.write_str("t=0 0\r\n")?;
        }
        for t in &self.times {
            write!(f, "t={} {}\r\n", t.start, t.stop)?;
            for r in &t.repeats {
                write!(f, "r={r}\r\n")?;
            }
        }
        if let Some(z) = &self.time_zones {
            write!(f, "z={z}\r\n")?;
        }
        if let Some(k) = &self.key {
            write!(f, "k={k}\r\n")?;
        }
        write_attrs(f, &self.attributes)?;
        for m in &self.media {
            write!(f, "m={} {}", m.media, m.port)?;
            if let Some(n) = m.num_ports {
                write!(f, "/{n}")?;
            }
            write!(f, " {}", m.proto)?;
            for fmt_ in &m.formats {
                write!(f, " {fmt_}")?;
            }
            f.write_str("\r\n")?;
            if let Some(i) = &m.information {
                write!(f, "i={i}\r\n")?;
            }
            for c in &m.connections {
                write_conn(f, c)?;
            }
            write_bw(f, &m.bandwidths)?;
            if let Some(k) = &m.key {
                write!(f, "k={k}\r\n")?;
            }
            write_attrs(f, &m.attributes)?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Parser

#[derive(Default)]
struct Parser {
    strict: bool,
    version: bool,
    origin: Option<Origin>,
    desc: Option<SessionDescription>,
}

struct LineCtx<'a> {
    number: usize,
    line: &'a str,
}

impl LineCtx<'_> {
    fn err(&self, reason: impl Into<String>) -> SdpError {
        SdpError::Line {
            number: self.number,
            line: self.line.chars().take(100).collect(),
            reason: reason.into(),
        }
    }
}

fn parse_connection(v: &str) -> Result<Connection, String> {
    let parts: Vec<&str> = v.split_whitespace().collect();
    match parts.as_slice() {
        [n, a, addr] => Ok(Connection {
            net_type: (*n).to_string(),
            addr_type: (*a).to_string(),
            address: (*addr).to_string(),
        }),
        _ => Err("connection needs '<nettype> <addrtype> <address>'".into()),
    }
}

fn parse_bandwidth(v: &str) -> Result<Bandwidth, String> {
    let (t, b) = v.split_once(':').ok_or("bandwidth needs '<type>:<kbps>'")?;
    let bandwidth = b
        .trim()
        .parse::<u64>()
        .map_err(|_| "bandwidth value is not a number".to_string())?;
    if t.is_empty() {
        return Err("bandwidth type is empty".into());
    }
    Ok(Bandwidth {
        bwtype: t.to_string(),
        bandwidth,
    })
}

fn parse_attribute(v: &str, strict: bool) -> Result<Attribute, String> {
    let (name, value) = match v.split_once(':') {
        Some((n, val)) => (n, Some(val.to_string())),
        None => (v, None),
    };
    if name.is_empty() || name.contains([' ', '\t']) {
        return Err("attribute name is empty or has spaces".into());
    }
    let val = value.as_deref().unwrap_or("");
    let check = match name {
        _ if !strict => Ok(()),
        "rtpmap" => RtpMap::parse(val).map(|_| ()),
        "fmtp" => match val.split_once([' ', '\t']).map(|(f, _)| f).unwrap_or(val) {
            "" => Err("fmtp has no format".into()),
            _ => Ok(()),
        },
        "ptime" | "maxptime" => parse_ms(val).map(|_| ()),
        "rtcp" => Rtcp::parse(val).map(|_| ()),
        _ => Ok(()),
    };
    check.map_err(|e| format!("a={name}: {e}"))?;
    Ok(Attribute {
        name: name.to_string(),
        value,
    })
}

fn parse_media(v: &str) -> Result<MediaDescription, String> {
    let mut it = v.split_whitespace();
    let media = it.next().ok_or("media line is empty")?;
    let port_s = it.next().ok_or("media line has no port")?;
    let proto = it.next().ok_or("media line has no protocol")?;
    let (port, num_ports) = match port_s.split_once('/') {
        Some((p, n)) => (
            p,
            Some(
                n.parse::<u16>()
                    .map_err(|_| format!("port count '{n}' is not a number"))?,
            ),
        ),
        None => (port_s, None),
    };
    let port = port
        .parse::<u16>()
        .map_err(|_| format!("port '{port}' is not 0-65535"))?;
    let mut m = MediaDescription::new(media, port, proto, it.map(str::to_string).collect());
    m.num_ports = num_ports;
    Ok(m)
}

impl Parser {
    fn run(mut self, text: &str) -> Result<SessionDescription, SdpError> {
        for (i, raw) in text.split('\n').enumerate() {
            let line = raw.trim_end_matches(['\r', ' ', '\t']);
            if line.is_empty() {
                continue;
            }
            let ctx = LineCtx {
                number: i + 1,
                line,
            };
            let (kind, value) = match line.as_bytes() {
                [k, b'=', ..] if k.is_ascii_alphabetic() => (*k, line.get(2..).unwrap_or("")),
                _ => return Err(ctx.err("not a '<type>=<value>' line")),
            };
            self.line(kind, value, &ctx)?;
        }
        if !self.version {
            return Err(SdpError::Missing("v="));
        }
        match self.desc {
            Some(mut d) => {
                if d.times.is_empty() {
                    d.times.push(Timing::default());
                }
                Ok(d)
            }
            None if self.origin.is_none() => Err(SdpError::Missing("o=")),
            None => Err(SdpError::Missing("s=")),
        }
    }

    fn line(&mut self, kind: u8, value: &str, ctx: &LineCtx<'_>) -> Result<(), SdpError> {
        if !self.version {
            return match (kind, value.trim()) {
                (b'v', "0") => {
                    self.version = true;
                    Ok(())
                }
                (b'v', _) => Err(ctx.err("unsupported SDP version")),
                _ => Err(ctx.err("the first line must be v=0")),
            };
        }
        if self.desc.is_none() && self.origin.is_some() && kind != b's' && !self.strict {
            // Tolerate a missing s= line (seen from broken agents): read it as "s=-".
            self.line(b's', "-", ctx)?;
        }
        let Some(desc) = self.desc.as_mut() else {
            // Between v= and the end of s=.
            return match kind {
                b'o' if self.origin.is_none() => {
                    self.origin = Some(parse_origin(value).map_err(|e| ctx.err(e))?);
                    Ok(())
                }
                b's' => {
                    let origin = self.origin.take().ok_or_else(|| ctx.err("s= before o="))?;
                    self.desc = Some(SessionDescription {
                        origin,
                        session_name: value.to_string(),
                        information: None,
                        uri: None,
                        emails: Vec::new(),
                        phones: Vec::new(),
                        connection: None,
                        bandwidths: Vec::new(),
                        times: Vec::new(),
                        time_zones: None,
                        key: None,
                        attributes: Vec::new(),
                        media: Vec::new(),
                    });
                    Ok(())
                }
                b'o' => Err(ctx.err("second o= line")),
                b'v' => Err(ctx.err("second v= line")),
                _ if self.origin.is_none() => Err(ctx.err("expected o= after v=")),
                _ => Err(ctx.err("expected s= after o=")),
            };
        };
        let e = |r: String| ctx.err(r);
        let strict = self.strict;
        if let Some(m) = desc.media.last_mut() {
            match kind {
                b'm' => {}
                b'i' => m.information = Some(value.to_string()),
                b'c' => m.connections.push(parse_connection(value).map_err(e)?),
                b'b' => m.bandwidths.push(parse_bandwidth(value).map_err(e)?),
                b'k' => m.key = Some(value.to_string()),
                b'a' => m
                    .attributes
                    .push(parse_attribute(value, strict).map_err(e)?),
                b'v' | b'o' | b's' | b'u' | b'e' | b'p' | b't' | b'r' | b'z' => {
                    return Err(ctx.err("session-level line inside a media section"))
                }
                _ => {}
            }
            if kind != b'm' {
                return Ok(());
            }
        }
        match kind {
            b'v' => return Err(ctx.err("second v= line")),
            b'o' => return Err(ctx.err("second o= line")),
            b's' => return Err(ctx.err("second s= line")),
            b'i' => desc.information = Some(value.to_string()),
            b'u' => desc.uri = Some(value.to_string()),
            b'e' => desc.emails.push(value.to_string()),
            b'p' => desc.phones.push(value.to_string()),
            b'c' => {
                if desc.connection.is_some() {
                    return Err(ctx.err("second session-level c= line"));
                }
                desc.connection = Some(parse_connection(value).map_err(e)?);
            }
            b'b' => desc.bandwidths.push(parse_bandwidth(value).map_err(e)?),
            b't' => {
                let mut it = value.split_whitespace();
                let (Some(start), Some(stop), None) = (it.next(), it.next(), it.next()) else {
                    return Err(ctx.err("timing needs '<start> <stop>'"));
                };
                let (Ok(start), Ok(stop)) = (start.parse(), stop.parse()) else {
                    return Err(ctx.err("timing values are not numbers"));
                };
                desc.times.push(Timing {
                    start,
                    stop,
                    repeats: Vec::new(),
                });
            }
            b'r' => match desc.times.last_mut() {
                Some(t) => t.repeats.push(value.to_string()),
                None => return Err(ctx.err("r= before any t=")),
            },
            b'z' => desc.time_zones = Some(value.to_string()),
            b'k' => desc.key = Some(value.to_string()),
            b'a' => desc
                .attributes
                .push(parse_attribute(value, strict).map_err(e)?),
            b'm' => desc.media.push(parse_media(value).map_err(e)?),
            // Unknown line types are ignored.
            _ => {}
        }
        Ok(())
    }
}

fn parse_origin(v: &str) -> Result<Origin, String> {
    let parts: Vec<&str> = v.split_whitespace().collect();
    let [username, id, version, net, addr_type, address] = parts.as_slice() else {
        return Err("origin needs '<user> <id> <version> <nettype> <addrtype> <address>'".into());
    };
    let session_version = version
        .parse::<u64>()
        .map_err(|_| format!("session version '{version}' is not a number"))?;
    if !id.bytes().all(|b| b.is_ascii_digit()) || id.is_empty() {
        return Err(format!("session id '{id}' is not a number"));
    }
    Ok(Origin {
        username: (*username).to_string(),
        session_id: (*id).to_string(),
        session_version,
        net_type: (*net).to_string(),
        addr_type: (*addr_type).to_string(),
        address: (*address).to_string(),
    })
}

//! The NG control protocol of rtpengine (and of the reference relay): one UDP datagram per
//! request, `COOKIE <bencoded dict>`, the reply carrying the same cookie.

use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Nesting deeper than this is refused rather than followed (no stack overflow on bad input).
const MAX_DEPTH: usize = 32;

/// A bencoded value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bencode {
    Int(i64),
    Bytes(Vec<u8>),
    List(Vec<Bencode>),
    Dict(BTreeMap<Vec<u8>, Bencode>),
}

impl Bencode {
    pub fn str(s: &str) -> Bencode {
        Bencode::Bytes(s.as_bytes().to_vec())
    }

    pub fn list(items: &[&str]) -> Bencode {
        Bencode::List(items.iter().map(|s| Bencode::str(s)).collect())
    }

    pub fn dict(pairs: Vec<(&str, Bencode)>) -> Bencode {
        Bencode::Dict(
            pairs
                .into_iter()
                .map(|(k, v)| (k.as_bytes().to_vec(), v))
                .collect(),
        )
    }

    /// The value of `key` in a dictionary.
    pub fn get(&self, key: &str) -> Option<&Bencode> {
        match self {
            Bencode::Dict(d) => d.get(key.as_bytes()),
            _ => None,
        }
    }

    /// A byte string that is UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Bencode::Bytes(b) => std::str::from_utf8(b).ok(),
            _ => None,
        }
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Bencode::Int(i) => out.extend_from_slice(format!("i{i}e").as_bytes()),
            Bencode::Bytes(b) => {
                out.extend_from_slice(format!("{}:", b.len()).as_bytes());
                out.extend_from_slice(b);
            }
            Bencode::List(items) => {
                out.push(b'l');
                for item in items {
                    item.encode(out);
                }
                out.push(b'e');
            }
            Bencode::Dict(d) => {
                out.push(b'd');
                for (k, v) in d {
                    Bencode::Bytes(k.clone()).encode(out);
                    v.encode(out);
                }
                out.push(b'e');
            }
        }
    }

    /// Decodes exactly one value spanning all of `input`.
    pub fn decode(input: &[u8]) -> Result<Bencode, String> {
        let (value, rest) = parse(input, 0)?;
        if !rest.is_empty() {
            return Err(format!("{} bytes after the value", rest.len()));
        }
        Ok(value)
    }
}

fn parse(input: &[u8], depth: usize) -> Result<(Bencode, &[u8]), String> {
    if depth > MAX_DEPTH {
        return Err("nested too deeply".into());
    }
    match input.first() {
        None => Err("unexpected end".into()),
        Some(b'i') => {
            let end = input
                .iter()
                .position(|&c| c == b'e')
                .ok_or("unterminated integer")?;
            let digits = std::str::from_utf8(&input[1..end]).map_err(|e| e.to_string())?;
            let value = digits
                .parse()
                .map_err(|_| format!("bad integer {digits:?}"))?;
            Ok((Bencode::Int(value), &input[end + 1..]))
        }
        Some(b'l') => {
            let mut rest = &input[1..];
            let mut items = Vec::new();
            while rest.first() != Some(&b'e') {
                let (item, r) = parse(rest, depth + 1)?;
                items.push(item);
                rest = r;
            }
            Ok((Bencode::List(items), &rest[1..]))
        }
        Some(b'd') => {
            let mut rest = &input[1..];
            let mut dict = BTreeMap::new();
            while rest.first() != Some(&b'e') {
                let (key, r) = parse(rest, depth + 1)?;
                let Bencode::Bytes(key) = key else {
                    return Err("dictionary key is not a string".into());
                };
                let (value, r) = parse(r, depth + 1)?;
                dict.insert(key, value);
                rest = r;
            }
            Ok((Bencode::Dict(dict), &rest[1..]))
        }
        Some(c) if c.is_ascii_digit() => {
            let colon = input
                .iter()
                .position(|&c| c == b':')
                .ok_or("string without length")?;
            let len: usize = std::str::from_utf8(&input[..colon])
                .ok()
                .and_then(|l| l.parse().ok())
                .ok_or("bad string length")?;
            let body = input
                .get(colon + 1..)
                .and_then(|b| b.get(..len))
                .ok_or("string longer than the input")?;
            Ok((Bencode::Bytes(body.to_vec()), &input[colon + 1 + len..]))
        }
        Some(c) => Err(format!("unexpected byte {c:#04x}")),
    }
}

/// A blocking NG client (requests are made while setting calls up and tearing them down, not
/// while measuring).
pub struct NgClient {
    socket: UdpSocket,
    /// Unique per process: rtpengine answers a reused cookie from its cache.
    prefix: String,
    next: u64,
}

impl NgClient {
    pub fn new(server: SocketAddr) -> Result<NgClient, String> {
        let socket = UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        socket.connect(server).map_err(|e| e.to_string())?;
        socket
            .set_read_timeout(Some(Duration::from_secs(2)))
            .map_err(|e| e.to_string())?;
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        Ok(NgClient {
            socket,
            prefix: format!("{}{nanos:x}", std::process::id()),
            next: 0,
        })
    }

    /// Sends `request` (retransmitted while unanswered) and returns the reply when its result is
    /// "ok" (or "pong").
    pub fn request(&mut self, request: &Bencode) -> Result<Bencode, String> {
        self.next += 1;
        let cookie = format!("{}_{}", self.prefix, self.next);
        let mut datagram = format!("{cookie} ").into_bytes();
        request.encode(&mut datagram);
        let mut buf = vec![0u8; 65536];
        for _ in 0..3 {
            self.socket
                .send(&datagram)
                .map_err(|e| format!("NG send: {e}"))?;
            // Until the read times out: then the request is sent again.
            while let Ok(n) = self.socket.recv(&mut buf) {
                let Some((reply_cookie, body)) = split_cookie(&buf[..n]) else {
                    continue;
                };
                if reply_cookie != cookie.as_bytes() {
                    continue;
                }
                let reply = Bencode::decode(body)?;
                return match reply.get("result").and_then(Bencode::as_str) {
                    Some("ok" | "pong") => Ok(reply),
                    other => Err(format!(
                        "NG {}: {} {}",
                        request
                            .get("command")
                            .and_then(Bencode::as_str)
                            .unwrap_or("?"),
                        other.unwrap_or("no result"),
                        reply
                            .get("error-reason")
                            .and_then(Bencode::as_str)
                            .unwrap_or("")
                    )),
                };
            }
        }
        Err("NG: no reply".into())
    }
}

fn split_cookie(datagram: &[u8]) -> Option<(&[u8], &[u8])> {
    let space = datagram.iter().position(|&c| c == b' ')?;
    Some((&datagram[..space], &datagram[space + 1..]))
}

/// What a browser needs of an answer that rtpengine leaves out: the BUNDLE group (absent when
/// the plain side had none) and the m-line's mid.
pub fn fix_answer(sdp: &str, mid: &str) -> String {
    let mut lines: Vec<String> = sdp.lines().map(str::to_string).collect();
    if !lines.iter().any(|l| l.starts_with("a=group:BUNDLE")) {
        let at = lines
            .iter()
            .position(|l| l.starts_with("m="))
            .unwrap_or(lines.len());
        lines.insert(at, format!("a=group:BUNDLE {mid}"));
    }
    if !lines.iter().any(|l| l.starts_with("a=mid:")) {
        if let Some(m) = lines.iter().position(|l| l.starts_with("m=")) {
            lines.insert(m + 1, format!("a=mid:{mid}"));
        }
    }
    let mut out = lines.join("\r\n");
    out.push_str("\r\n");
    out
}

/// The phone's answer: plain RTP, PCMA, to the generator's echo port.
pub fn phone_answer(echo_port: u16) -> String {
    format!(
        "v=0\r\no=phone 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio {echo_port} RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\na=ptime:20\r\na=sendrecv\r\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn value() -> impl Strategy<Value = Bencode> {
        let leaf = prop_oneof![
            any::<i64>().prop_map(Bencode::Int),
            proptest::collection::vec(any::<u8>(), 0..20).prop_map(Bencode::Bytes),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Bencode::List),
                proptest::collection::btree_map(
                    proptest::collection::vec(any::<u8>(), 0..8),
                    inner,
                    0..6
                )
                .prop_map(Bencode::Dict),
            ]
        })
    }

    proptest! {
        #[test]
        fn decoding_an_encoding_gives_the_value_back(v in value()) {
            let mut bytes = Vec::new();
            v.encode(&mut bytes);
            prop_assert_eq!(Bencode::decode(&bytes), Ok(v));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = Bencode::decode(&bytes);
        }

        #[test]
        fn truncated_encodings_are_errors(v in value(), cut in any::<prop::sample::Index>()) {
            let mut bytes = Vec::new();
            v.encode(&mut bytes);
            let cut = cut.index(bytes.len());
            prop_assert!(Bencode::decode(&bytes[..cut]).is_err());
        }
    }

    #[test]
    fn encodes_an_offer_as_rtpengine_reads_it() {
        let offer = Bencode::dict(vec![
            ("command", Bencode::str("offer")),
            ("call-id", Bencode::str("c1")),
            ("rtcp-mux", Bencode::list(&["demux"])),
            (
                "codec",
                Bencode::dict(vec![("mask", Bencode::list(&["opus"]))]),
            ),
        ]);
        let mut bytes = Vec::new();
        offer.encode(&mut bytes);
        assert_eq!(
            String::from_utf8(bytes).unwrap(),
            "d7:call-id2:c15:codecd4:maskl4:opusee7:command5:offer8:rtcp-muxl5:demuxee"
        );
    }

    #[test]
    fn refuses_bad_input() {
        for bad in [
            &b"i12"[..],
            b"5:ab",
            b"d3:keye",
            b"di1ei2ee",
            b"l",
            b"x",
            b"i1ei2e",
            b"99999999999999999999:",
            b"ie",
        ] {
            assert!(Bencode::decode(bad).is_err(), "{bad:?}");
        }
        let deep = "l".repeat(10_000);
        assert!(Bencode::decode(deep.as_bytes()).is_err());
    }

    #[test]
    fn answer_gets_bundle_and_mid_back() {
        let plain = "v=0\r\ns=-\r\nt=0 0\r\nm=audio 4000 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\n";
        let fixed = fix_answer(plain, "0");
        let lines: Vec<&str> = fixed.lines().collect();
        assert_eq!(
            lines,
            [
                "v=0",
                "s=-",
                "t=0 0",
                "a=group:BUNDLE 0",
                "m=audio 4000 UDP/TLS/RTP/SAVPF 111",
                "a=mid:0",
                "a=rtpmap:111 opus/48000/2"
            ]
        );
        // An answer that has both is left as it is.
        assert_eq!(fix_answer(&fixed, "0"), fixed);
        assert_eq!(fix_answer("", "0"), "a=group:BUNDLE 0\r\n");
    }
}

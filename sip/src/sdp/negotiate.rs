//! RFC 3264 offer/answer for one audio stream (G.711, Opus, RFC 4733 telephone-event).
//!
//! The functions do not care which message carries which body: an INVITE with SDP is answered in
//! the 200 with [`SdpSession::create_answer`]; an INVITE without SDP gets [`SdpSession::create_offer`]
//! in the 200 and the ACK's body goes to [`process_answer`].

use std::fmt;
use std::net::IpAddr;

use super::crypto::{Crypto, CryptoSuite, SrtpKeys, SrtpPolicy, KEY_SALT_LEN};
use super::session::{
    Attribute, Connection, Direction, MediaDescription, Origin, RtpMap, RtpMapTable,
    SessionDescription, Timing,
};

/// Audio codecs the media core can send and receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    Pcmu,
    Pcma,
    /// Opus at the 48000 Hz RTP clock, two channels signalled (RFC 7587).
    Opus,
}

impl Codec {
    pub fn encoding_name(self) -> &'static str {
        match self {
            Self::Pcmu => "PCMU",
            Self::Pcma => "PCMA",
            Self::Opus => "opus",
        }
    }

    pub fn clock_rate(self) -> u32 {
        match self {
            Self::Pcmu | Self::Pcma => 8000,
            Self::Opus => 48000,
        }
    }

    pub fn channels(self) -> u16 {
        match self {
            Self::Pcmu | Self::Pcma => 1,
            Self::Opus => 2,
        }
    }

    /// The RFC 3551 static payload type, if it has one.
    pub fn static_payload_type(self) -> Option<u8> {
        match self {
            Self::Pcmu => Some(0),
            Self::Pcma => Some(8),
            Self::Opus => None,
        }
    }

    /// The codec an rtpmap describes, if we support it.
    pub fn from_rtpmap(map: &RtpMap) -> Option<Self> {
        [Self::Pcmu, Self::Pcma, Self::Opus].into_iter().find(|c| {
            map.is(c.encoding_name(), c.clock_rate())
                && match c {
                    Self::Opus => map.channels.is_none_or(|ch| ch == 1 || ch == 2),
                    _ => map.channels.is_none_or(|ch| ch == 1),
                }
        })
    }

    fn rtpmap(self, payload_type: u8) -> RtpMap {
        RtpMap {
            payload_type,
            encoding: self.encoding_name().to_string(),
            clock_rate: self.clock_rate(),
            channels: (self == Self::Opus).then_some(2),
        }
    }
}

impl fmt::Display for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.encoding_name())
    }
}

/// How the answerer picks among codecs both sides support.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CodecPreference {
    /// The first codec in the offer that we support (RFC 3264 recommends honouring the offerer).
    #[default]
    Offerer,
    /// Our first codec (in [`AudioConfig::codecs`] order) that the offer contains.
    Local,
}

/// Which codecs to offer or accept, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioConfig {
    /// Offered in this order; the answer preference when `preference` is `Local`.
    pub codecs: Vec<Codec>,
    pub preference: CodecPreference,
    /// Offer and accept RFC 4733 telephone-event.
    pub telephone_event: bool,
    /// Dynamic payload type for telephone-event/8000.
    pub telephone_event_pt: u8,
    /// Dynamic payload type for telephone-event/48000, offered alongside Opus.
    pub telephone_event_48k_pt: u8,
    /// Dynamic payload type for Opus.
    pub opus_pt: u8,
    /// `a=fmtp` parameters sent for Opus.
    pub opus_fmtp: String,
    /// Packetization time we ask to receive, in milliseconds.
    pub ptime: u32,
    pub maxptime: Option<u32>,
    /// `o=` user name and `s=` line.
    pub origin_username: String,
    pub session_name: String,
}

impl Default for AudioConfig {
    fn default() -> Self {
        Self {
            codecs: vec![Codec::Pcmu, Codec::Pcma],
            preference: CodecPreference::Offerer,
            telephone_event: true,
            telephone_event_pt: 101,
            telephone_event_48k_pt: 102,
            opus_pt: 111,
            opus_fmtp: "minptime=10;useinbandfec=1".into(),
            ptime: 20,
            maxptime: None,
            origin_username: "dialbridge".into(),
            session_name: "dialbridge".into(),
        }
    }
}

impl AudioConfig {
    /// Checks that dynamic payload types are in 96-127 and distinct, and that a codec is listed.
    pub fn validate(&self) -> Result<(), String> {
        if self.codecs.is_empty() {
            return Err("no audio codec configured".into());
        }
        let mut used: Vec<(&str, u8)> = Vec::new();
        if self.codecs.contains(&Codec::Opus) {
            used.push(("opus", self.opus_pt));
        }
        if self.telephone_event {
            used.push(("telephone-event", self.telephone_event_pt));
            if self.codecs.contains(&Codec::Opus) {
                used.push(("telephone-event/48000", self.telephone_event_48k_pt));
            }
        }
        for (i, (name, pt)) in used.iter().enumerate() {
            if !(96..=127).contains(pt) {
                return Err(format!("{name} payload type {pt} is not dynamic (96-127)"));
            }
            if used.iter().skip(i + 1).any(|(_, p)| p == pt) {
                return Err(format!("payload type {pt} is used twice"));
            }
        }
        Ok(())
    }
}

/// Where we receive media for one call, and what we want to do with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalMedia {
    pub address: IpAddr,
    pub port: u16,
    /// `SendRecv` normally; `SendOnly` to put the peer on hold; `Inactive` to stop both ways.
    pub direction: Direction,
}

/// Why an offer or answer could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NegotiationError {
    /// The offer has no audio stream with a codec we support: answer 488 Not Acceptable Here.
    NoAcceptableAudio,
    /// The answer has a different number of m-lines than the offer.
    MediaCountMismatch { offered: usize, answered: usize },
    /// Our offer has no active audio stream to match the answer against.
    NoAudioInOffer,
    /// The answer rejected our audio stream (port 0).
    AudioRejected { media_index: usize },
    /// The answer lists no codec that we offered.
    NoCommonCodec { media_index: usize },
    /// The stream has no c= line at media or session level.
    MissingConnection { media_index: usize },
    /// We required SRTP and the answer has no usable key for our offer's.
    NoSrtpKeys { media_index: usize },
}

impl fmt::Display for NegotiationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoAcceptableAudio => {
                write!(f, "offer has no audio stream with a supported codec")
            }
            Self::MediaCountMismatch { offered, answered } => {
                write!(f, "answer has {answered} m-lines, offer had {offered}")
            }
            Self::NoAudioInOffer => write!(f, "offer has no active audio stream"),
            Self::AudioRejected { media_index } => {
                write!(f, "audio stream {media_index} rejected with port 0")
            }
            Self::NoCommonCodec { media_index } => {
                write!(f, "answer to stream {media_index} has no offered codec")
            }
            Self::MissingConnection { media_index } => {
                write!(f, "stream {media_index} has no connection address")
            }
            Self::NoSrtpKeys { media_index } => {
                write!(
                    f,
                    "answer to stream {media_index} has no usable SRTP key (a=crypto)"
                )
            }
        }
    }
}

impl NegotiationError {
    /// The SIP status for rejecting an offer with this error: 488 Not Acceptable Here.
    pub fn status_code(&self) -> u16 {
        488
    }
}

impl std::error::Error for NegotiationError {}

/// The audio stream both sides agreed on, from our point of view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NegotiatedAudio {
    /// Index of the m-line.
    pub media_index: usize,
    /// The remote address as written in c= (may be an FQDN).
    pub remote_host: String,
    /// The remote address, when c= holds an IP literal.
    pub remote_ip: Option<IpAddr>,
    pub remote_port: u16,
    /// From a=rtcp, else RTP port + 1.
    pub remote_rtcp_port: u16,
    pub codec: Codec,
    /// The payload type to send and expect for `codec`.
    pub payload_type: u8,
    pub clock_rate: u32,
    pub channels: u16,
    /// The telephone-event payload type at `clock_rate`, if both sides have it.
    pub telephone_event: Option<u8>,
    /// What we may do: send and/or receive.
    pub direction: Direction,
    /// The direction the remote wrote, from its point of view.
    pub remote_direction: Direction,
    /// Packetization the remote asked for (a=ptime), else 20 ms.
    pub ptime: u32,
    pub maxptime: Option<u32>,
    /// The remote put us on hold: it is sendonly or inactive, or its address is 0.0.0.0.
    pub remote_hold: bool,
    /// SRTP keys (RFC 4568), when the stream is encrypted.
    pub srtp: Option<SrtpKeys>,
}

/// An answer to send and what it agreed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub sdp: SessionDescription,
    pub audio: NegotiatedAudio,
}

/// The SDP state of our side of one call: keeps o= stable across offers and answers and bumps
/// the version whenever the description changes (RFC 3264 section 8).
#[derive(Debug, Clone)]
pub struct SdpSession {
    session_id: u64,
    version: u64,
    last: Option<SessionDescription>,
    srtp: SrtpPolicy,
    /// Our SRTP master key and salt (with a policy other than `Off`).
    srtp_key: [u8; KEY_SALT_LEN],
}

impl SdpSession {
    /// `session_id` comes from the caller's random source; the first version equals it.
    pub fn new(session_id: u64) -> Self {
        Self {
            session_id,
            version: session_id,
            last: None,
            srtp: SrtpPolicy::Off,
            srtp_key: [0; KEY_SALT_LEN],
        }
    }

    /// SRTP for the offers and answers of this session, with our master key and salt (random,
    /// from the caller's source, one per session).
    pub fn set_srtp(&mut self, policy: SrtpPolicy, key_salt: [u8; KEY_SALT_LEN]) {
        self.srtp = policy;
        self.srtp_key = key_salt;
    }

    /// The last description produced, e.g. to answer a session-refresh re-INVITE unchanged.
    pub fn last(&self) -> Option<&SessionDescription> {
        self.last.as_ref()
    }

    /// An audio offer: configured codecs in order, telephone-event, ptime, direction.
    pub fn create_offer(&mut self, cfg: &AudioConfig, local: &LocalMedia) -> SessionDescription {
        let mut formats = Vec::new();
        let mut attrs = Vec::new();
        let mut seen = Vec::new();
        for &c in &cfg.codecs {
            if seen.contains(&c) {
                continue;
            }
            seen.push(c);
            let pt = c.static_payload_type().unwrap_or(cfg.opus_pt);
            formats.push(pt.to_string());
            attrs.push(Attribute::new("rtpmap", c.rtpmap(pt).to_string()));
            if c == Codec::Opus && !cfg.opus_fmtp.is_empty() {
                attrs.push(Attribute::new("fmtp", format!("{pt} {}", cfg.opus_fmtp)));
            }
        }
        if cfg.telephone_event {
            let narrow = seen.iter().any(|c| c.clock_rate() == 8000);
            let wide = seen.contains(&Codec::Opus);
            for (want, pt, rate) in [
                (narrow, cfg.telephone_event_pt, 8000),
                (wide, cfg.telephone_event_48k_pt, 48000),
            ] {
                if want {
                    formats.push(pt.to_string());
                    attrs.push(Attribute::new(
                        "rtpmap",
                        format!("{pt} telephone-event/{rate}"),
                    ));
                    attrs.push(Attribute::new("fmtp", format!("{pt} 0-16")));
                }
            }
        }
        let proto = match self.srtp {
            SrtpPolicy::Required => "RTP/SAVP",
            _ => "RTP/AVP",
        };
        if self.srtp != SrtpPolicy::Off {
            for (tag, suite) in (1..).zip(CryptoSuite::ALL) {
                let line = Crypto::new(tag, suite, self.srtp_key);
                attrs.push(Attribute::new("crypto", line.to_string()));
            }
        }
        let mut m = MediaDescription::new("audio", local.port, proto, formats);
        m.attributes = attrs;
        push_timing_attrs(&mut m, cfg);
        m.set_direction(local.direction);
        self.finish(cfg, local, vec![m])
    }

    /// Answers `offer` (RFC 3264 section 6): the first usable audio stream is accepted with one
    /// codec (plus telephone-event at its rate), every other stream is rejected with port 0, and
    /// the direction mirrors the offer's.
    pub fn create_answer(
        &mut self,
        offer: &SessionDescription,
        cfg: &AudioConfig,
        local: &LocalMedia,
    ) -> Result<Answer, NegotiationError> {
        let mut media = Vec::with_capacity(offer.media.len());
        let mut agreed: Option<NegotiatedAudio> = None;
        for (i, m) in offer.media.iter().enumerate() {
            let pick = if agreed.is_none() && is_usable_audio(m) {
                choose_codec(m, cfg)
            } else {
                None
            };
            let keys = self.answer_keys(m);
            let (Some((codec, pt, te)), Some(conn), Some(keys)) =
                (pick, offer.media_connection(i), keys)
            else {
                media.push(rejected(m));
                continue;
            };
            let remote_direction = offer.media_direction(i);
            // c=0.0.0.0 is RFC 2543 hold: the offerer does not want to receive.
            let remote_effective = if conn.is_unspecified() {
                remote_direction.intersect(Direction::SendOnly)
            } else {
                remote_direction
            };
            let direction = local.direction.intersect(remote_effective.reversed());

            let mut formats = vec![pt.to_string()];
            let mut attrs = vec![Attribute::new("rtpmap", codec.rtpmap(pt).to_string())];
            if codec == Codec::Opus && !cfg.opus_fmtp.is_empty() {
                attrs.push(Attribute::new("fmtp", format!("{pt} {}", cfg.opus_fmtp)));
            }
            if let Some(te) = te {
                formats.push(te.to_string());
                attrs.push(Attribute::new(
                    "rtpmap",
                    format!("{te} telephone-event/{}", codec.clock_rate()),
                ));
                attrs.push(Attribute::new("fmtp", format!("{te} 0-16")));
            }
            if let Some((tag, keys)) = &keys {
                let line = Crypto::new(*tag, keys.suite, keys.local);
                attrs.push(Attribute::new("crypto", line.to_string()));
            }
            let mut a = MediaDescription::new(&m.media, local.port, &m.proto, formats);
            a.attributes = attrs;
            push_timing_attrs(&mut a, cfg);
            a.set_direction(direction);
            media.push(a);

            agreed = Some(NegotiatedAudio {
                media_index: i,
                remote_host: conn.host().to_string(),
                remote_ip: conn.ip(),
                remote_port: m.port,
                remote_rtcp_port: rtcp_port(m),
                codec,
                payload_type: pt,
                clock_rate: codec.clock_rate(),
                channels: codec.channels(),
                telephone_event: te,
                direction,
                remote_direction,
                ptime: m.ptime().unwrap_or(20),
                maxptime: m.maxptime(),
                remote_hold: !remote_effective.receives(),
                srtp: keys.map(|(_, keys)| keys),
            });
        }
        let audio = agreed.ok_or(NegotiationError::NoAcceptableAudio)?;
        let sdp = self.finish(cfg, local, media);
        Ok(Answer { sdp, audio })
    }

    /// What we answer to an offered stream's keys: `Some(None)` plain RTP, `Some(Some(..))` the
    /// tag and keys of the first offered key we can use, `None` an offer we must refuse
    /// (SRTP only and we have it off or no usable key; plain only and we require SRTP).
    #[allow(clippy::option_option)]
    fn answer_keys(&self, m: &MediaDescription) -> Option<Option<(u32, SrtpKeys)>> {
        let offered = m
            .cryptos()
            .into_iter()
            .find_map(|c| c.usable().map(|suite| (c.tag, suite, c.key_salt)));
        match (self.srtp, offered) {
            (SrtpPolicy::Off, _) => (!m.is_secure_rtp()).then_some(None),
            (_, Some((tag, suite, remote))) => Some(Some((
                tag,
                SrtpKeys {
                    suite,
                    local: self.srtp_key,
                    remote,
                },
            ))),
            (SrtpPolicy::Optional, None) => (!m.is_secure_rtp()).then_some(None),
            (SrtpPolicy::Required, None) => None,
        }
    }

    fn finish(
        &mut self,
        cfg: &AudioConfig,
        local: &LocalMedia,
        media: Vec<MediaDescription>,
    ) -> SessionDescription {
        let conn = Connection::for_ip(local.address);
        let mut desc = SessionDescription {
            origin: Origin {
                username: cfg.origin_username.clone(),
                session_id: self.session_id.to_string(),
                session_version: self.version,
                net_type: conn.net_type.clone(),
                addr_type: conn.addr_type.clone(),
                address: conn.address.clone(),
            },
            session_name: cfg.session_name.clone(),
            information: None,
            uri: None,
            emails: Vec::new(),
            phones: Vec::new(),
            connection: Some(conn),
            bandwidths: Vec::new(),
            times: vec![Timing::default()],
            time_zones: None,
            key: None,
            attributes: Vec::new(),
            media,
        };
        if let Some(last) = &self.last {
            if *last != desc {
                self.version = self.version.wrapping_add(1);
                desc.origin.session_version = self.version;
            }
        }
        self.last = Some(desc.clone());
        desc
    }
}

fn push_timing_attrs(m: &mut MediaDescription, cfg: &AudioConfig) {
    m.attributes
        .push(Attribute::new("ptime", cfg.ptime.to_string()));
    if let Some(max) = cfg.maxptime {
        m.attributes
            .push(Attribute::new("maxptime", max.to_string()));
    }
}

/// RTP or SDES-keyed SRTP audio we can terminate (no DTLS on the SIP leg).
fn is_usable_audio(m: &MediaDescription) -> bool {
    m.media.eq_ignore_ascii_case("audio")
        && m.port != 0
        && (m.proto.eq_ignore_ascii_case("RTP/AVP")
            || m.proto.eq_ignore_ascii_case("RTP/AVPF")
            || m.is_secure_rtp())
}

/// The codec, its payload type, and the telephone-event payload type at the same rate.
fn choose_codec(m: &MediaDescription, cfg: &AudioConfig) -> Option<(Codec, u8, Option<u8>)> {
    let maps = m.rtpmap_table();
    let offered: Vec<(u8, Codec)> = m
        .payload_types()
        .into_iter()
        .filter_map(|pt| {
            maps.get(pt)
                .and_then(Codec::from_rtpmap)
                .filter(|c| cfg.codecs.contains(c))
                .map(|c| (pt, c))
        })
        .collect();
    let (pt, codec) = match cfg.preference {
        CodecPreference::Offerer => offered.first().copied(),
        CodecPreference::Local => cfg
            .codecs
            .iter()
            .find_map(|c| offered.iter().find(|(_, o)| o == c).copied()),
    }?;
    let te = cfg
        .telephone_event
        .then(|| telephone_event_pt(m, &maps, codec.clock_rate()))
        .flatten();
    Some((codec, pt, te))
}

fn telephone_event_pt(m: &MediaDescription, maps: &RtpMapTable, rate: u32) -> Option<u8> {
    m.payload_types().into_iter().find(|&pt| {
        maps.get(pt)
            .is_some_and(|map| map.is("telephone-event", rate))
    })
}

fn rtcp_port(m: &MediaDescription) -> u16 {
    m.rtcp()
        .map(|r| r.port)
        .unwrap_or_else(|| m.port.saturating_add(1))
}

/// A rejected stream in an answer: same media and proto, port 0, no attributes.
fn rejected(m: &MediaDescription) -> MediaDescription {
    let formats = if m.formats.is_empty() {
        vec!["0".to_string()]
    } else {
        m.formats.clone()
    };
    MediaDescription::new(&m.media, 0, &m.proto, formats)
}

/// Reads the answer to our `offer`: the remote RTP address, codec and payload types to use.
pub fn process_answer(
    offer: &SessionDescription,
    answer: &SessionDescription,
) -> Result<NegotiatedAudio, NegotiationError> {
    if offer.media.len() != answer.media.len() {
        return Err(NegotiationError::MediaCountMismatch {
            offered: offer.media.len(),
            answered: answer.media.len(),
        });
    }
    let (i, ours) = offer
        .media
        .iter()
        .enumerate()
        .find(|(_, m)| m.media.eq_ignore_ascii_case("audio") && m.port != 0)
        .ok_or(NegotiationError::NoAudioInOffer)?;
    let theirs = answer
        .media
        .get(i)
        .ok_or(NegotiationError::NoAudioInOffer)?;
    if theirs.is_rejected() {
        return Err(NegotiationError::AudioRejected { media_index: i });
    }
    let our_maps = ours.rtpmap_table();
    let offered_codecs: Vec<Codec> = ours
        .payload_types()
        .into_iter()
        .filter_map(|pt| our_maps.get(pt).and_then(Codec::from_rtpmap))
        .collect();
    // The answer's own rtpmap wins; a dynamic type it does not map keeps our offer's meaning.
    let their_maps = theirs.rtpmap_table();
    let map_of = |pt: u8| their_maps.get(pt).or_else(|| our_maps.get(pt));
    let (pt, codec) = theirs
        .payload_types()
        .into_iter()
        .find_map(|pt| {
            map_of(pt)
                .and_then(Codec::from_rtpmap)
                .filter(|c| offered_codecs.contains(c))
                .map(|c| (pt, c))
        })
        .ok_or(NegotiationError::NoCommonCodec { media_index: i })?;
    let te = theirs
        .payload_types()
        .into_iter()
        .find(|&p| map_of(p).is_some_and(|m| m.is("telephone-event", codec.clock_rate())));
    let te = te.filter(|_| telephone_event_pt(ours, &our_maps, codec.clock_rate()).is_some());
    let conn = answer
        .media_connection(i)
        .ok_or(NegotiationError::MissingConnection { media_index: i })?;
    let remote_direction = answer.media_direction(i);
    let remote_effective = if conn.is_unspecified() {
        remote_direction.intersect(Direction::SendOnly)
    } else {
        remote_direction
    };
    let direction = offer
        .media_direction(i)
        .intersect(remote_effective.reversed());
    // The answer takes one of our keys by its tag and suite, and gives its own.
    let ours_keys = ours.cryptos();
    let srtp = theirs.cryptos().into_iter().find_map(|c| {
        let suite = c.usable()?;
        let mine = ours_keys
            .iter()
            .find(|o| o.tag == c.tag && o.usable() == Some(suite))?;
        Some(SrtpKeys {
            suite,
            local: mine.key_salt,
            remote: c.key_salt,
        })
    });
    if srtp.is_none() && (ours.is_secure_rtp() || theirs.is_secure_rtp()) {
        return Err(NegotiationError::NoSrtpKeys { media_index: i });
    }
    Ok(NegotiatedAudio {
        media_index: i,
        remote_host: conn.host().to_string(),
        remote_ip: conn.ip(),
        remote_port: theirs.port,
        remote_rtcp_port: rtcp_port(theirs),
        codec,
        payload_type: pt,
        clock_rate: codec.clock_rate(),
        channels: codec.channels(),
        telephone_event: te,
        direction,
        remote_direction,
        ptime: theirs.ptime().unwrap_or(20),
        maxptime: theirs.maxptime(),
        remote_hold: !remote_effective.receives(),
        srtp,
    })
}

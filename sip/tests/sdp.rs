use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use dialbridge_sip::sdp::{
    process_answer, Attribute, AudioConfig, Codec, CodecPreference, Connection, Direction,
    LocalMedia, NegotiationError, Rtcp, RtpMap, SdpError, SdpSession, SessionDescription,
};

const ASTERISK_OFFER: &str = "v=0\r
o=- 1929282811 1929282811 IN IP4 192.0.2.50\r
s=Asterisk\r
c=IN IP4 192.0.2.50\r
t=0 0\r
m=audio 14278 RTP/AVP 0 8 3 101\r
a=rtpmap:0 PCMU/8000\r
a=rtpmap:8 PCMA/8000\r
a=rtpmap:3 GSM/8000\r
a=rtpmap:101 telephone-event/8000\r
a=fmtp:101 0-16\r
a=ptime:20\r
a=maxptime:150\r
a=sendrecv\r
";

const FREESWITCH_OFFER: &str = "v=0\r
o=FreeSWITCH 1700000000 1700000001 IN IP4 198.51.100.20\r
s=FreeSWITCH\r
c=IN IP4 198.51.100.20\r
t=0 0\r
m=audio 24680 RTP/AVP 102 9 0 8 101 13\r
a=rtpmap:102 opus/48000/2\r
a=fmtp:102 useinbandfec=1; maxaveragebitrate=30000; maxplaybackrate=48000; ptime=20; minptime=10; maxptime=40\r
a=rtpmap:9 G722/8000\r
a=rtpmap:0 PCMU/8000\r
a=rtpmap:8 PCMA/8000\r
a=rtpmap:101 telephone-event/8000\r
a=fmtp:101 0-16\r
a=rtpmap:13 CN/8000\r
a=ptime:20\r
a=sendrecv\r
a=rtcp:24681 IN IP4 198.51.100.20\r
";

const TWILIO_LIKE_ANSWER: &str = "v=0\r
o=root 1234567 1234567 IN IP4 203.0.113.60\r
s=Twilio Media Gateway\r
c=IN IP4 203.0.113.60\r
t=0 0\r
m=audio 17890 RTP/AVP 0 101\r
a=rtpmap:0 PCMU/8000\r
a=rtpmap:101 telephone-event/8000\r
a=fmtp:101 0-16\r
a=ptime:20\r
a=maxptime:150\r
a=sendrecv\r
";

const WEBRTC_AUDIO_OFFER: &str = "v=0\r
o=- 4611731400430051336 2 IN IP4 127.0.0.1\r
s=-\r
t=0 0\r
a=group:BUNDLE 0\r
a=extmap-allow-mixed\r
a=msid-semantic: WMS\r
m=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126\r
c=IN IP4 0.0.0.0\r
a=rtcp:9 IN IP4 0.0.0.0\r
a=ice-ufrag:Hs4c\r
a=ice-pwd:kE1bYz0yvQpqfLqN0bD5Uv3W\r
a=fingerprint:sha-256 7B:8B:F0:65:5F:78:E2:51:3B:AC:6F:F3:3F:46:1B:35:DC:B8:5F:64:1A:24:C2:43:F0:A1:58:D0:A1:2C:19:08\r
a=setup:actpass\r
a=mid:0\r
a=sendrecv\r
a=rtcp-mux\r
a=rtpmap:111 opus/48000/2\r
a=rtcp-fb:111 transport-cc\r
a=fmtp:111 minptime=10;useinbandfec=1\r
a=rtpmap:63 red/48000/2\r
a=fmtp:63 111/111\r
a=rtpmap:9 G722/8000\r
a=rtpmap:0 PCMU/8000\r
a=rtpmap:8 PCMA/8000\r
a=rtpmap:13 CN/8000\r
a=rtpmap:110 telephone-event/48000\r
a=rtpmap:126 telephone-event/8000\r
a=ssrc:1001 cname:abcd\r
";

/// SIPp's built-in uac scenario body (the uas answers with the same lines).
const SIPP_SDP: &str = "v=0\r
o=user1 53655765 2353687637 IN IP4 127.0.0.1\r
s=-\r
c=IN IP4 127.0.0.1\r
t=0 0\r
m=audio 6000 RTP/AVP 0\r
a=rtpmap:0 PCMU/8000\r
";

fn local() -> LocalMedia {
    LocalMedia {
        address: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10)),
        port: 40000,
        direction: Direction::SendRecv,
    }
}

fn parse(s: &str) -> SessionDescription {
    SessionDescription::parse(s).unwrap()
}

fn torture_body(name: &str) -> String {
    let path = format!(
        "{}/../../shared/conformance/rfc5118/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    let raw = std::fs::read_to_string(&path).unwrap();
    let (_, body) = raw.split_once("\r\n\r\n").unwrap();
    body.to_string()
}

#[test]
fn parses_asterisk_offer() {
    let d = parse(ASTERISK_OFFER);
    assert_eq!(d.origin.username, "-");
    assert_eq!(d.origin.session_id, "1929282811");
    assert_eq!(d.origin.session_version, 1929282811);
    assert_eq!(d.session_name, "Asterisk");
    assert_eq!(
        d.connection.as_ref().unwrap().ip(),
        Some("192.0.2.50".parse().unwrap())
    );
    assert_eq!(d.media.len(), 1);
    let m = &d.media[0];
    assert_eq!(
        (m.media.as_str(), m.port, m.proto.as_str()),
        ("audio", 14278, "RTP/AVP")
    );
    assert_eq!(m.payload_types(), vec![0, 8, 3, 101]);
    assert_eq!(
        m.rtpmap(101),
        Some(RtpMap {
            payload_type: 101,
            encoding: "telephone-event".into(),
            clock_rate: 8000,
            channels: None
        })
    );
    assert_eq!(m.fmtp(101), Some("0-16"));
    let table = m.rtpmap_table();
    assert_eq!(table.get(3).map(|r| r.encoding.as_str()), Some("GSM"));
    assert_eq!(table.get(101), m.rtpmap(101).as_ref());
    assert_eq!(table.get(100), None);
    assert_eq!(table.get(200), None);
    assert_eq!(m.ptime(), Some(20));
    assert_eq!(m.maxptime(), Some(150));
    assert_eq!(m.direction(), Some(Direction::SendRecv));
    assert_eq!(d.to_string(), ASTERISK_OFFER);
}

#[test]
fn parses_freeswitch_offer_with_rtcp_attribute() {
    let d = parse(FREESWITCH_OFFER);
    let m = &d.media[0];
    assert_eq!(m.rtpmap(102).unwrap().channels, Some(2));
    assert_eq!(
        m.rtcp(),
        Some(Rtcp {
            port: 24681,
            connection: Some(Connection {
                net_type: "IN".into(),
                addr_type: "IP4".into(),
                address: "198.51.100.20".into()
            })
        })
    );
    assert_eq!(
        m.fmtp(102),
        Some("useinbandfec=1; maxaveragebitrate=30000; maxplaybackrate=48000; ptime=20; minptime=10; maxptime=40")
    );
    assert_eq!(d.to_string(), FREESWITCH_OFFER);
}

#[test]
fn parses_webrtc_offer_keeping_unknown_attributes() {
    let d = parse(WEBRTC_AUDIO_OFFER);
    assert_eq!(d.origin.session_id, "4611731400430051336");
    assert_eq!(d.attributes[2], Attribute::new("msid-semantic", " WMS"));
    let m = &d.media[0];
    assert_eq!(m.proto, "UDP/TLS/RTP/SAVPF");
    assert!(m.has_attribute("rtcp-mux"));
    assert_eq!(m.attribute("mid"), Some("0"));
    assert!(d.media_connection(0).unwrap().is_unspecified());
    assert_eq!(d.to_string(), WEBRTC_AUDIO_OFFER);
    // DTLS-SRTP is not terminated on the SIP leg.
    let err = SdpSession::new(1)
        .create_answer(&d, &AudioConfig::default(), &local())
        .unwrap_err();
    assert_eq!(err, NegotiationError::NoAcceptableAudio);
}

#[test]
fn default_offer_is_exact() {
    let mut s = SdpSession::new(1000);
    let offer = s.create_offer(&AudioConfig::default(), &local());
    assert_eq!(
        offer.to_string(),
        "v=0\r
o=dialbridge 1000 1000 IN IP4 192.0.2.10\r
s=dialbridge\r
c=IN IP4 192.0.2.10\r
t=0 0\r
m=audio 40000 RTP/AVP 0 8 101\r
a=rtpmap:0 PCMU/8000\r
a=rtpmap:8 PCMA/8000\r
a=rtpmap:101 telephone-event/8000\r
a=fmtp:101 0-16\r
a=ptime:20\r
a=sendrecv\r
"
    );
}

#[test]
fn opus_offer_ipv6_and_version_bumps() {
    let cfg = AudioConfig {
        codecs: vec![Codec::Opus, Codec::Pcma],
        telephone_event_pt: 100,
        opus_pt: 96,
        maxptime: Some(40),
        ..AudioConfig::default()
    };
    assert_eq!(cfg.validate(), Ok(()));
    let mut l = local();
    l.address = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x10));
    let mut s = SdpSession::new(77);
    let offer = s.create_offer(&cfg, &l);
    assert_eq!(
        offer.to_string(),
        "v=0\r
o=dialbridge 77 77 IN IP6 2001:db8::10\r
s=dialbridge\r
c=IN IP6 2001:db8::10\r
t=0 0\r
m=audio 40000 RTP/AVP 96 8 100 102\r
a=rtpmap:96 opus/48000/2\r
a=fmtp:96 minptime=10;useinbandfec=1\r
a=rtpmap:8 PCMA/8000\r
a=rtpmap:100 telephone-event/8000\r
a=fmtp:100 0-16\r
a=rtpmap:102 telephone-event/48000\r
a=fmtp:102 0-16\r
a=ptime:20\r
a=maxptime:40\r
a=sendrecv\r
"
    );
    // Same description again: version unchanged (RFC 3264 section 8).
    assert_eq!(s.create_offer(&cfg, &l).origin.session_version, 77);
    // Hold: changed, so the version goes up by one; resume: up again.
    l.direction = Direction::SendOnly;
    let hold = s.create_offer(&cfg, &l);
    assert_eq!(hold.origin.session_version, 78);
    assert_eq!(hold.origin.session_id, "77");
    assert_eq!(hold.media[0].direction(), Some(Direction::SendOnly));
    l.direction = Direction::SendRecv;
    assert_eq!(s.create_offer(&cfg, &l).origin.session_version, 79);
    assert_eq!(s.last().unwrap().origin.session_version, 79);
}

#[test]
fn config_validation() {
    let cfg = AudioConfig {
        codecs: vec![Codec::Opus],
        opus_pt: 101,
        ..AudioConfig::default()
    };
    assert_eq!(cfg.validate(), Err("payload type 101 is used twice".into()));
    let cfg = AudioConfig {
        telephone_event_pt: 13,
        ..AudioConfig::default()
    };
    assert_eq!(
        cfg.validate(),
        Err("telephone-event payload type 13 is not dynamic (96-127)".into())
    );
    let cfg = AudioConfig {
        codecs: vec![],
        ..AudioConfig::default()
    };
    assert_eq!(cfg.validate(), Err("no audio codec configured".into()));
}

#[test]
fn answers_asterisk_offer() {
    let offer = parse(ASTERISK_OFFER);
    let mut s = SdpSession::new(5);
    let a = s
        .create_answer(&offer, &AudioConfig::default(), &local())
        .unwrap();
    assert_eq!(
        a.sdp.to_string(),
        "v=0\r
o=dialbridge 5 5 IN IP4 192.0.2.10\r
s=dialbridge\r
c=IN IP4 192.0.2.10\r
t=0 0\r
m=audio 40000 RTP/AVP 0 101\r
a=rtpmap:0 PCMU/8000\r
a=rtpmap:101 telephone-event/8000\r
a=fmtp:101 0-16\r
a=ptime:20\r
a=sendrecv\r
"
    );
    let n = a.audio;
    assert_eq!(n.codec, Codec::Pcmu);
    assert_eq!(n.payload_type, 0);
    assert_eq!(n.telephone_event, Some(101));
    assert_eq!(n.remote_host, "192.0.2.50");
    assert_eq!(n.remote_ip, Some("192.0.2.50".parse().unwrap()));
    assert_eq!(n.remote_port, 14278);
    assert_eq!(n.remote_rtcp_port, 14279);
    assert_eq!(n.ptime, 20);
    assert_eq!(n.maxptime, Some(150));
    assert_eq!(n.direction, Direction::SendRecv);
    assert!(!n.remote_hold);
}

#[test]
fn answer_preference_offerer_vs_local() {
    let offer = parse(FREESWITCH_OFFER);
    // Offerer order with Opus enabled: opus (PT 102 kept), but no telephone-event/48000 offered.
    let cfg = AudioConfig {
        codecs: vec![Codec::Pcma, Codec::Pcmu, Codec::Opus],
        ..AudioConfig::default()
    };
    let a = SdpSession::new(1)
        .create_answer(&offer, &cfg, &local())
        .unwrap();
    assert_eq!(a.audio.codec, Codec::Opus);
    assert_eq!(a.audio.payload_type, 102);
    assert_eq!(a.audio.clock_rate, 48000);
    assert_eq!(a.audio.channels, 2);
    assert_eq!(a.audio.telephone_event, None);
    assert_eq!(a.audio.remote_rtcp_port, 24681);
    assert_eq!(a.sdp.media[0].formats, vec!["102"]);
    assert_eq!(a.sdp.media[0].fmtp(102), Some("minptime=10;useinbandfec=1"));
    // Local order: PCMA first, with telephone-event/8000.
    let cfg = AudioConfig {
        preference: CodecPreference::Local,
        ..cfg
    };
    let a = SdpSession::new(1)
        .create_answer(&offer, &cfg, &local())
        .unwrap();
    assert_eq!(a.audio.codec, Codec::Pcma);
    assert_eq!(a.audio.payload_type, 8);
    assert_eq!(a.audio.telephone_event, Some(101));
    assert_eq!(a.sdp.media[0].formats, vec!["8", "101"]);
    // Without Opus configured, offerer order gives PCMU (G722 is skipped).
    let a = SdpSession::new(1)
        .create_answer(&offer, &AudioConfig::default(), &local())
        .unwrap();
    assert_eq!((a.audio.codec, a.audio.payload_type), (Codec::Pcmu, 0));
}

#[test]
fn telephone_event_rate_must_match_codec() {
    // Plain-RTP variant of the WebRTC offer: opus picks telephone-event/48000 (110), PCMU picks 126.
    let offer = parse(
        &WEBRTC_AUDIO_OFFER
            .replace("UDP/TLS/RTP/SAVPF", "RTP/AVPF")
            .replace("c=IN IP4 0.0.0.0", "c=IN IP4 192.0.2.77"),
    );
    let cfg = AudioConfig {
        codecs: vec![Codec::Opus, Codec::Pcmu],
        ..AudioConfig::default()
    };
    let a = SdpSession::new(1)
        .create_answer(&offer, &cfg, &local())
        .unwrap();
    assert_eq!((a.audio.codec, a.audio.payload_type), (Codec::Opus, 111));
    assert_eq!(a.audio.telephone_event, Some(110));
    assert_eq!(a.sdp.media[0].proto, "RTP/AVPF");
    assert_eq!(
        a.sdp.media[0].rtpmap(110).unwrap().to_string(),
        "110 telephone-event/48000"
    );
    let a = SdpSession::new(1)
        .create_answer(&offer, &AudioConfig::default(), &local())
        .unwrap();
    assert_eq!((a.audio.codec, a.audio.payload_type), (Codec::Pcmu, 0));
    assert_eq!(a.audio.telephone_event, Some(126));
    // telephone-event disabled locally: not answered.
    let cfg = AudioConfig {
        telephone_event: false,
        ..AudioConfig::default()
    };
    let a = SdpSession::new(1)
        .create_answer(&offer, &cfg, &local())
        .unwrap();
    assert_eq!(a.audio.telephone_event, None);
    assert_eq!(a.sdp.media[0].formats, vec!["0"]);
}

#[test]
fn keeps_offer_payload_numbers_for_dynamic_telephone_event() {
    let offer = parse(&ASTERISK_OFFER.replace("101", "96"));
    let a = SdpSession::new(1)
        .create_answer(&offer, &AudioConfig::default(), &local())
        .unwrap();
    assert_eq!(a.audio.telephone_event, Some(96));
    assert_eq!(a.sdp.media[0].formats, vec!["0", "96"]);
}

#[test]
fn direction_mirroring() {
    for (offered, local_dir, answered, remote_hold) in [
        ("sendrecv", Direction::SendRecv, Direction::SendRecv, false),
        ("sendonly", Direction::SendRecv, Direction::RecvOnly, true),
        ("recvonly", Direction::SendRecv, Direction::SendOnly, false),
        ("inactive", Direction::SendRecv, Direction::Inactive, true),
        ("sendrecv", Direction::SendOnly, Direction::SendOnly, false),
        ("sendonly", Direction::SendOnly, Direction::Inactive, true),
        ("sendrecv", Direction::Inactive, Direction::Inactive, false),
    ] {
        let offer = parse(&ASTERISK_OFFER.replace("a=sendrecv", &format!("a={offered}")));
        let mut l = local();
        l.direction = local_dir;
        let a = SdpSession::new(1)
            .create_answer(&offer, &AudioConfig::default(), &l)
            .unwrap();
        assert_eq!(
            a.sdp.media[0].direction(),
            Some(answered),
            "{offered} {local_dir}"
        );
        assert_eq!(a.audio.direction, answered);
        assert_eq!(a.audio.remote_hold, remote_hold, "{offered}");
    }
    // Session-level direction applies to the media; RFC 2543 hold with c=0.0.0.0.
    let offer = parse(
        "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\na=sendrecv\r\n\
         m=audio 5004 RTP/AVP 8\r\n",
    );
    let a = SdpSession::new(1)
        .create_answer(&offer, &AudioConfig::default(), &local())
        .unwrap();
    assert_eq!(a.audio.direction, Direction::RecvOnly);
    assert!(a.audio.remote_hold);
    assert_eq!(a.audio.remote_direction, Direction::SendRecv);
    let offer = parse(
        "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\na=inactive\r\n\
         m=audio 5004 RTP/AVP 8\r\n",
    );
    let a = SdpSession::new(1)
        .create_answer(&offer, &AudioConfig::default(), &local())
        .unwrap();
    assert_eq!(a.sdp.media[0].direction(), Some(Direction::Inactive));
}

#[test]
fn rejects_other_streams_with_port_zero_keeping_order() {
    let offer = parse(
        "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n\
         m=video 5006 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n\
         m=audio 5004 RTP/SAVP 0\r\n\
         m=audio 0 RTP/AVP 0\r\n\
         m=audio 5008 RTP/AVP 18 8\r\na=rtpmap:18 G729/8000\r\n\
         m=audio 5010 RTP/AVP 0\r\n\
         m=application 5012 udp bfcp\r\n",
    );
    let a = SdpSession::new(1)
        .create_answer(&offer, &AudioConfig::default(), &local())
        .unwrap();
    let lines: Vec<String> = a
        .sdp
        .to_string()
        .lines()
        .filter(|l| l.starts_with("m="))
        .map(str::to_string)
        .collect();
    assert_eq!(
        lines,
        vec![
            "m=video 0 RTP/AVP 96",
            "m=audio 0 RTP/SAVP 0",
            "m=audio 0 RTP/AVP 0",
            "m=audio 40000 RTP/AVP 8",
            "m=audio 0 RTP/AVP 0",
            "m=application 0 udp bfcp",
        ]
    );
    assert_eq!(a.audio.media_index, 3);
    assert_eq!(a.audio.remote_port, 5008);
    assert!(a.sdp.media[0].attributes.is_empty());
}

#[test]
fn no_common_codec_is_an_error() {
    let offer = parse(
        "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n\
         m=audio 5004 RTP/AVP 18 9 101\r\na=rtpmap:101 telephone-event/8000\r\n",
    );
    let err = SdpSession::new(1)
        .create_answer(&offer, &AudioConfig::default(), &local())
        .unwrap_err();
    assert_eq!(err, NegotiationError::NoAcceptableAudio);
    assert_eq!(err.status_code(), 488);
    assert_eq!(
        err.to_string(),
        "offer has no audio stream with a supported codec"
    );
    // No m-lines at all, and audio without any c= line.
    let empty = parse("v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nt=0 0\r\n");
    assert_eq!(
        SdpSession::new(1).create_answer(&empty, &AudioConfig::default(), &local()),
        Err(NegotiationError::NoAcceptableAudio)
    );
    let no_c =
        parse("v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nt=0 0\r\nm=audio 5004 RTP/AVP 0\r\n");
    assert_eq!(
        SdpSession::new(1).create_answer(&no_c, &AudioConfig::default(), &local()),
        Err(NegotiationError::NoAcceptableAudio)
    );
}

#[test]
fn torture_ipv6_in_sdp() {
    let d = parse(&torture_body("ipv6-in-sdp"));
    assert_eq!(d.origin.addr_type, "IP6");
    assert_eq!(d.origin.address, "2001:db8::20");
    assert_eq!(d.session_name, "Live video feed for today's meeting");
    let c = d.connection.as_ref().unwrap();
    assert_eq!(c.addr_type, "IP6");
    assert_eq!(c.ip(), Some("2001:db8::20".parse().unwrap()));
    assert_eq!(d.times[0].start, 3338481189);
    assert_eq!(d.times[0].stop, 3370017201);
    assert_eq!(d.media.len(), 2);
    assert_eq!(d.media[0].rtpmap(2).unwrap().encoding, "G726-32");
    assert_eq!(d.media[1].port, 6024);
    // G726 only: nothing we can use.
    assert_eq!(
        SdpSession::new(1).create_answer(&d, &AudioConfig::default(), &local()),
        Err(NegotiationError::NoAcceptableAudio)
    );
    // The same offer with PCMU is answered, IPv6 remote, video rejected.
    let pcmu = parse(
        &torture_body("ipv6-in-sdp")
            .replace("RTP/AVP 2", "RTP/AVP 0")
            .replace("a=rtpmap:2 G726-32/8000", "a=rtpmap:0 PCMU/8000"),
    );
    let a = SdpSession::new(1)
        .create_answer(&pcmu, &AudioConfig::default(), &local())
        .unwrap();
    assert_eq!(a.audio.remote_ip, Some("2001:db8::20".parse().unwrap()));
    assert_eq!(a.audio.remote_port, 6000);
    assert_eq!(a.sdp.media[1].port, 0);
    assert_eq!(a.sdp.media[1].media, "video");
}

#[test]
fn torture_mult_ip_in_sdp() {
    let d = parse(&torture_body("mult-ip-in-sdp"));
    assert_eq!(d.session_name, "");
    assert_eq!(d.origin.address, "host.example.com");
    assert!(d.connection.is_none());
    assert_eq!(
        d.media_connection(0).unwrap().ip(),
        Some("192.0.2.1".parse().unwrap())
    );
    assert_eq!(
        d.media_connection(1).unwrap().ip(),
        Some("2001:db8::1".parse().unwrap())
    );
    let a = SdpSession::new(1)
        .create_answer(&d, &AudioConfig::default(), &local())
        .unwrap();
    assert_eq!(a.audio.remote_ip, Some("192.0.2.1".parse().unwrap()));
    assert_eq!(a.audio.remote_port, 22334);
    assert_eq!(a.audio.telephone_event, None);
    assert_eq!(a.sdp.media.len(), 2);
    assert_eq!(a.sdp.media[1].port, 0);
    // Reparse of our serialization is equal.
    assert_eq!(parse(&d.to_string()), d);
}

#[test]
fn process_twilio_like_answer() {
    let mut s = SdpSession::new(9);
    let offer = s.create_offer(&AudioConfig::default(), &local());
    let n = process_answer(&offer, &parse(TWILIO_LIKE_ANSWER)).unwrap();
    assert_eq!(n.media_index, 0);
    assert_eq!(n.remote_ip, Some("203.0.113.60".parse().unwrap()));
    assert_eq!(n.remote_port, 17890);
    assert_eq!(n.remote_rtcp_port, 17891);
    assert_eq!(
        (n.codec, n.payload_type, n.clock_rate),
        (Codec::Pcmu, 0, 8000)
    );
    assert_eq!(n.telephone_event, Some(101));
    assert_eq!(n.direction, Direction::SendRecv);
    assert_eq!(n.ptime, 20);
    assert_eq!(n.maxptime, Some(150));
    assert!(!n.remote_hold);
}

#[test]
fn process_sipp_answer_and_answer_sipp_offer() {
    let mut s = SdpSession::new(9);
    let offer = s.create_offer(&AudioConfig::default(), &local());
    let n = process_answer(&offer, &parse(SIPP_SDP)).unwrap();
    assert_eq!((n.codec, n.payload_type), (Codec::Pcmu, 0));
    assert_eq!(n.telephone_event, None);
    assert_eq!(n.remote_ip, Some(Ipv4Addr::LOCALHOST.into()));
    assert_eq!(n.remote_port, 6000);
    assert_eq!(n.ptime, 20);
    let a = SdpSession::new(2)
        .create_answer(&parse(SIPP_SDP), &AudioConfig::default(), &local())
        .unwrap();
    assert_eq!(a.sdp.media[0].formats, vec!["0"]);
    assert_eq!(a.audio.remote_port, 6000);
}

#[test]
fn process_answer_hold_and_rejections() {
    let mut s = SdpSession::new(9);
    let offer = s.create_offer(&AudioConfig::default(), &local());
    let ans = |edit: &dyn Fn(&str) -> String| parse(&edit(TWILIO_LIKE_ANSWER));

    let n = process_answer(&offer, &ans(&|t| t.replace("a=sendrecv", "a=sendonly"))).unwrap();
    assert!(n.remote_hold);
    assert_eq!(n.direction, Direction::RecvOnly);
    assert_eq!(n.remote_direction, Direction::SendOnly);

    let n = process_answer(&offer, &ans(&|t| t.replace("a=sendrecv", "a=inactive"))).unwrap();
    assert!(n.remote_hold);
    assert_eq!(n.direction, Direction::Inactive);

    let n = process_answer(&offer, &ans(&|t| t.replace("a=sendrecv", "a=recvonly"))).unwrap();
    assert!(!n.remote_hold);
    assert_eq!(n.direction, Direction::SendOnly);

    let n = process_answer(
        &offer,
        &ans(&|t| t.replace("c=IN IP4 203.0.113.60", "c=IN IP4 0.0.0.0")),
    )
    .unwrap();
    assert!(n.remote_hold);
    assert_eq!(n.direction, Direction::RecvOnly);

    assert_eq!(
        process_answer(&offer, &ans(&|t| t.replace("m=audio 17890", "m=audio 0"))),
        Err(NegotiationError::AudioRejected { media_index: 0 })
    );
    assert_eq!(
        process_answer(
            &offer,
            &ans(&|t| t
                .replace("RTP/AVP 0 101", "RTP/AVP 18")
                .replace("a=rtpmap:0 PCMU/8000", "a=rtpmap:18 G729/8000"))
        ),
        Err(NegotiationError::NoCommonCodec { media_index: 0 })
    );
    assert_eq!(
        process_answer(&offer, &ans(&|t| format!("{t}m=video 0 RTP/AVP 96\r\n"))),
        Err(NegotiationError::MediaCountMismatch {
            offered: 1,
            answered: 2
        })
    );
    assert_eq!(
        process_answer(
            &offer,
            &ans(&|t| t.replace("c=IN IP4 203.0.113.60\r\n", ""))
        ),
        Err(NegotiationError::MissingConnection { media_index: 0 })
    );
    // Our own hold offer (sendonly) answered recvonly: we send only.
    let mut l = local();
    l.direction = Direction::SendOnly;
    let hold = s.create_offer(&AudioConfig::default(), &l);
    let n = process_answer(&hold, &ans(&|t| t.replace("a=sendrecv", "a=recvonly"))).unwrap();
    assert_eq!(n.direction, Direction::SendOnly);
    assert!(!n.remote_hold);
}

#[test]
fn process_answer_uses_answer_payload_numbers_and_picks_first_common() {
    let cfg = AudioConfig {
        codecs: vec![Codec::Opus, Codec::Pcmu, Codec::Pcma],
        ..AudioConfig::default()
    };
    let mut s = SdpSession::new(9);
    let offer = s.create_offer(&cfg, &local());
    // The answerer lists PCMA first, then renumbers opus (allowed in the answer's own rtpmap).
    let answer = parse(
        "v=0\r\no=- 1 1 IN IP4 192.0.2.99\r\ns=-\r\nc=IN IP4 192.0.2.99\r\nt=0 0\r\n\
         m=audio 30000 RTP/AVP 8 120 102\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:120 opus/48000/2\r\n\
         a=rtpmap:102 telephone-event/48000\r\na=ptime:30\r\n",
    );
    let n = process_answer(&offer, &answer).unwrap();
    assert_eq!((n.codec, n.payload_type), (Codec::Pcma, 8));
    // Only telephone-event at the codec's rate counts.
    assert_eq!(n.telephone_event, None);
    assert_eq!(n.ptime, 30);
    let answer = parse(
        "v=0\r\no=- 1 1 IN IP4 192.0.2.99\r\ns=-\r\nc=IN IP4 192.0.2.99\r\nt=0 0\r\n\
         m=audio 30000 RTP/AVP 120 102\r\na=rtpmap:120 opus/48000/2\r\n\
         a=rtpmap:102 telephone-event/48000\r\n",
    );
    let n = process_answer(&offer, &answer).unwrap();
    assert_eq!((n.codec, n.payload_type, n.channels), (Codec::Opus, 120, 2));
    assert_eq!(n.telephone_event, Some(102));
    // An answer that omits rtpmap for a dynamic type keeps the offer's meaning.
    let answer = parse(
        "v=0\r\no=- 1 1 IN IP4 192.0.2.99\r\ns=-\r\nc=IN IP4 192.0.2.99\r\nt=0 0\r\n\
         m=audio 30000 RTP/AVP 111 101\r\n",
    );
    let n = process_answer(&offer, &answer).unwrap();
    assert_eq!((n.codec, n.payload_type), (Codec::Opus, 111));
    assert_eq!(n.telephone_event, None);
}

#[test]
fn invite_without_sdp_offer_in_200_answer_in_ack() {
    // UAS side: the INVITE had no body, so the 200 carries our offer...
    let mut uas = SdpSession::new(4242);
    let offer_200 = uas.create_offer(&AudioConfig::default(), &local());
    let body = offer_200.to_bytes();
    // ...the caller (e.g. Asterisk) answers in the ACK...
    let mut caller = SdpSession::new(1);
    let caller_local = LocalMedia {
        address: "198.51.100.5".parse().unwrap(),
        port: 12000,
        direction: Direction::SendRecv,
    };
    let ack_answer = caller
        .create_answer(
            &SessionDescription::from_bytes(&body).unwrap(),
            &AudioConfig::default(),
            &caller_local,
        )
        .unwrap();
    // ...and we read the ACK's body as the answer to the offer we sent.
    let n = process_answer(
        &offer_200,
        &SessionDescription::from_bytes(&ack_answer.sdp.to_bytes()).unwrap(),
    )
    .unwrap();
    assert_eq!(n.remote_ip, Some("198.51.100.5".parse().unwrap()));
    assert_eq!(n.remote_port, 12000);
    assert_eq!((n.codec, n.payload_type), (Codec::Pcmu, 0));
    assert_eq!(n.telephone_event, Some(101));
    assert_eq!(ack_answer.audio.remote_port, 40000);
}

#[test]
fn reinvite_answers_bump_version_only_on_change() {
    let offer = parse(ASTERISK_OFFER);
    let mut s = SdpSession::new(10);
    let cfg = AudioConfig::default();
    let first = s.create_answer(&offer, &cfg, &local()).unwrap();
    assert_eq!(first.sdp.origin.session_version, 10);
    let refresh = s.create_answer(&offer, &cfg, &local()).unwrap();
    assert_eq!(refresh.sdp.origin.session_version, 10);
    let hold = parse(&ASTERISK_OFFER.replace("a=sendrecv", "a=sendonly"));
    let held = s.create_answer(&hold, &cfg, &local()).unwrap();
    assert_eq!(held.sdp.origin.session_version, 11);
    assert_eq!(held.sdp.media[0].direction(), Some(Direction::RecvOnly));
}

#[test]
fn parse_errors_name_the_line() {
    let e = |s: &str| SessionDescription::parse_strict(s).unwrap_err();
    assert_eq!(e(""), SdpError::Missing("v="));
    assert_eq!(e("v=0\r\n"), SdpError::Missing("o="));
    assert_eq!(
        e("v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\n"),
        SdpError::Missing("s=")
    );
    assert_eq!(
        e("v=1\r\n"),
        SdpError::Line {
            number: 1,
            line: "v=1".into(),
            reason: "unsupported SDP version".into()
        }
    );
    assert_eq!(
        e("v=0\r\no=- x 1 IN IP4 1.2.3.4\r\ns=-\r\n"),
        SdpError::Line {
            number: 2,
            line: "o=- x 1 IN IP4 1.2.3.4".into(),
            reason: "session id 'x' is not a number".into()
        }
    );
    let bad_port =
        e("v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nt=0 0\r\nm=audio 70000 RTP/AVP 0\r\n");
    assert_eq!(
        bad_port,
        SdpError::Line {
            number: 5,
            line: "m=audio 70000 RTP/AVP 0".into(),
            reason: "port '70000' is not 0-65535".into()
        }
    );
    assert_eq!(
        bad_port.to_string(),
        "SDP line 5 `m=audio 70000 RTP/AVP 0`: port '70000' is not 0-65535"
    );
    assert_eq!(
        e("v=0\no=- 1 1 IN IP4 1.2.3.4\ns=-\nm=audio 1 RTP/AVP 0\na=rtpmap:0 PCMU\n"),
        SdpError::Line {
            number: 5,
            line: "a=rtpmap:0 PCMU".into(),
            reason: "a=rtpmap: rtpmap has no clock rate".into()
        }
    );
    assert_eq!(
        e("v=0\no=- 1 1 IN IP4 1.2.3.4\ns=-\nm=audio 1 RTP/AVP 0\na=rtpmap:200 X/8000\n"),
        SdpError::Line {
            number: 5,
            line: "a=rtpmap:200 X/8000".into(),
            reason: "a=rtpmap: payload type '200' is not 0-127".into()
        }
    );
    assert_eq!(
        e("v=0\no=- 1 1 IN IP4 1.2.3.4\ns=-\nc=IN IP4\n"),
        SdpError::Line {
            number: 4,
            line: "c=IN IP4".into(),
            reason: "connection needs '<nettype> <addrtype> <address>'".into()
        }
    );
    assert_eq!(
        e("v=0\no=- 1 1 IN IP4 1.2.3.4\ns=-\nm=audio 1 RTP/AVP 0\na=ptime:abc\n"),
        SdpError::Line {
            number: 5,
            line: "a=ptime:abc".into(),
            reason: "a=ptime: 'abc' is not a number".into()
        }
    );
    assert_eq!(
        e("v=0\no=- 1 1 IN IP4 1.2.3.4\ns=-\nm=audio 1 RTP/AVP 0\nt=0 0\n"),
        SdpError::Line {
            number: 5,
            line: "t=0 0".into(),
            reason: "session-level line inside a media section".into()
        }
    );
    assert_eq!(
        e("v=0\no=- 1 1 IN IP4 1.2.3.4\ns=-\ngarbage\n"),
        SdpError::Line {
            number: 4,
            line: "garbage".into(),
            reason: "not a '<type>=<value>' line".into()
        }
    );
    assert_eq!(
        SessionDescription::from_bytes(b"v=0\xff"),
        Err(SdpError::NotUtf8)
    );
    // The lenient parser keeps malformed attribute values; accessors skip them.
    let d = parse(
        "v=0\no=- 1 1 IN IP4 1.2.3.4\ns=-\nm=audio 1 RTP/AVP 0 96\na=rtpmap:96 X\na=ptime:abc\n",
    );
    assert_eq!(d.media[0].attribute("rtpmap"), Some("96 X"));
    assert_eq!(d.media[0].rtpmap(96), None);
    assert_eq!(d.media[0].ptime(), None);
    // Structural lines are checked by both.
    assert_eq!(
        SessionDescription::parse("v=0\no=- 1 1 IN IP4 1.2.3.4\ns=-\nm=audio x RTP/AVP 0\n"),
        Err(SdpError::Line {
            number: 4,
            line: "m=audio x RTP/AVP 0".into(),
            reason: "port 'x' is not 0-65535".into()
        })
    );
}

#[test]
fn lenient_parsing() {
    // LF line ends, trailing spaces, no t= line, unknown line type, ptime with a fraction,
    // static payload types without rtpmap.
    let d = parse(
        "v=0\no=- 1 2 IN IP4 192.0.2.1 \ns=\nc=IN IP4 192.0.2.1\ny=0123\n\
         m=audio 5004 RTP/AVP 8 0\na=ptime:20.0\na=x-custom:a:b c\n\n",
    );
    assert_eq!(d.times.len(), 1);
    assert_eq!(d.times[0].start, 0);
    let m = &d.media[0];
    assert_eq!(m.ptime(), Some(20));
    assert_eq!(m.rtpmap(8).unwrap().to_string(), "8 PCMA/8000");
    assert_eq!(m.attribute("x-custom"), Some("a:b c"));
    assert_eq!(d.media_direction(0), Direction::SendRecv);
    assert_eq!(parse(&d.to_string()), d);
    // A missing s= line reads as "s=-" (strict parsing rejects it).
    let no_s = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\nm=audio 5004 RTP/AVP 0\r\n";
    let d = parse(no_s);
    assert_eq!(d.session_name, "-");
    assert_eq!(d.media[0].port, 5004);
    assert_eq!(
        SessionDescription::parse_strict(no_s),
        Err(SdpError::Line {
            number: 3,
            line: "c=IN IP4 192.0.2.1".into(),
            reason: "expected s= after o=".into()
        })
    );
}

mod prop {
    use super::*;
    use dialbridge_sip::sdp::{Bandwidth, MediaDescription, Origin, Timing};
    use proptest::prelude::*;

    fn token() -> impl Strategy<Value = String> {
        "[A-Za-z0-9_.+-]{1,10}"
    }

    /// Printable text without leading/trailing blanks (the parser trims line ends).
    fn text() -> impl Strategy<Value = String> {
        "([!-~]([ -~]{0,16}[!-~])?)?"
    }

    fn connection() -> impl Strategy<Value = Connection> {
        (token(), token(), "[A-Za-z0-9.:/]{1,20}").prop_map(|(n, a, addr)| Connection {
            net_type: n,
            addr_type: a,
            address: addr,
        })
    }

    fn bandwidth() -> impl Strategy<Value = Bandwidth> {
        (token(), any::<u64>()).prop_map(|(t, b)| Bandwidth {
            bwtype: t,
            bandwidth: b,
        })
    }

    fn attribute() -> impl Strategy<Value = Attribute> {
        let generic = ("[a-z][a-z0-9-]{0,10}", proptest::option::of(text()))
            .prop_filter("typed names are checked", |(n, _)| {
                !matches!(
                    n.as_str(),
                    "rtpmap" | "fmtp" | "ptime" | "maxptime" | "rtcp"
                )
            })
            .prop_map(|(n, v)| Attribute { name: n, value: v });
        let rtpmap = (
            0u8..128,
            "[A-Za-z0-9-]{1,12}",
            any::<u32>(),
            proptest::option::of(any::<u16>()),
        )
            .prop_map(|(pt, e, r, c)| {
                Attribute::new(
                    "rtpmap",
                    RtpMap {
                        payload_type: pt,
                        encoding: e,
                        clock_rate: r,
                        channels: c,
                    }
                    .to_string(),
                )
            });
        let fmtp = (0u8..128, text())
            .prop_map(|(pt, p)| Attribute::new("fmtp", format!("{pt} {p}").trim_end().to_string()));
        let ptime = (prop_oneof![Just("ptime"), Just("maxptime")], any::<u32>())
            .prop_map(|(n, v)| Attribute::new(n, v.to_string()));
        let dir = prop_oneof![
            Just("sendrecv"),
            Just("sendonly"),
            Just("recvonly"),
            Just("inactive")
        ]
        .prop_map(Attribute::flag);
        prop_oneof![4 => generic, 2 => rtpmap, 1 => fmtp, 1 => ptime, 1 => dir]
    }

    fn media() -> impl Strategy<Value = MediaDescription> {
        (
            (
                token(),
                any::<u16>(),
                proptest::option::of(any::<u16>()),
                "[A-Z]{1,4}(/[A-Z]{1,5}){0,3}",
            ),
            proptest::collection::vec(token(), 0..5),
            proptest::option::of(text()),
            proptest::collection::vec(connection(), 0..3),
            proptest::collection::vec(bandwidth(), 0..2),
            proptest::option::of(text()),
            proptest::collection::vec(attribute(), 0..8),
        )
            .prop_map(
                |((media, port, num, proto), formats, info, conns, bws, key, attrs)| {
                    let mut m = MediaDescription::new(&media, port, &proto, formats);
                    m.num_ports = num;
                    m.information = info;
                    m.connections = conns;
                    m.bandwidths = bws;
                    m.key = key;
                    m.attributes = attrs;
                    m
                },
            )
    }

    fn description() -> impl Strategy<Value = SessionDescription> {
        (
            (
                token(),
                "[0-9]{1,20}",
                any::<u64>(),
                token(),
                token(),
                token(),
            ),
            (
                text(),
                proptest::option::of(text()),
                proptest::option::of(text()),
            ),
            (
                proptest::collection::vec(text(), 0..2),
                proptest::collection::vec(text(), 0..2),
                proptest::option::of(connection()),
                proptest::collection::vec(bandwidth(), 0..2),
            ),
            proptest::collection::vec(
                (
                    any::<u64>(),
                    any::<u64>(),
                    proptest::collection::vec(text(), 0..2),
                ),
                1..3,
            ),
            (proptest::option::of(text()), proptest::option::of(text())),
            proptest::collection::vec(attribute(), 0..5),
            proptest::collection::vec(media(), 0..4),
        )
            .prop_map(
                |(o, (s, i, u), (e, p, c, b), t, (z, k), a, m)| SessionDescription {
                    origin: Origin {
                        username: o.0,
                        session_id: o.1,
                        session_version: o.2,
                        net_type: o.3,
                        addr_type: o.4,
                        address: o.5,
                    },
                    session_name: s,
                    information: i,
                    uri: u,
                    emails: e,
                    phones: p,
                    connection: c,
                    bandwidths: b,
                    times: t
                        .into_iter()
                        .map(|(start, stop, repeats)| Timing {
                            start,
                            stop,
                            repeats,
                        })
                        .collect(),
                    time_zones: z,
                    key: k,
                    attributes: a,
                    media: m,
                },
            )
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in "\\PC{0,300}") {
            let _ = SessionDescription::parse(&s);
        }

        #[test]
        fn parse_never_panics_on_sdp_like_lines(
            lines in proptest::collection::vec("[vosctmabiekrzpu]=[ -~]{0,40}", 0..20)
        ) {
            let body = format!("v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\n{}", lines.join("\r\n"));
            if let Ok(d) = SessionDescription::parse(&body) {
                // Whatever parses must serialize to something that parses back equal.
                prop_assert_eq!(SessionDescription::parse(&d.to_string()), Ok(d.clone()));
                let _ = SdpSession::new(1).create_answer(&d, &AudioConfig::default(), &local());
                let offer = SdpSession::new(1).create_offer(&AudioConfig::default(), &local());
                let _ = process_answer(&offer, &d);
            }
        }

        #[test]
        fn from_bytes_never_panics(b in proptest::collection::vec(any::<u8>(), 0..400)) {
            let mut body = b"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\n".to_vec();
            body.extend_from_slice(&b);
            let _ = SessionDescription::from_bytes(&b);
            let _ = SessionDescription::from_bytes(&body);
        }

        #[test]
        fn rtpmap_table_agrees_with_rtpmap(d in description()) {
            for m in &d.media {
                let table = m.rtpmap_table();
                for pt in 0..=255u8 {
                    prop_assert_eq!(table.get(pt).cloned(), m.rtpmap(pt));
                }
            }
        }

        #[test]
        fn serialize_parse_round_trip(d in description()) {
            let text = d.to_string();
            prop_assert_eq!(SessionDescription::parse(&text), Ok(d));
        }
    }

    #[test]
    fn real_world_round_trip() {
        for s in [
            ASTERISK_OFFER,
            FREESWITCH_OFFER,
            TWILIO_LIKE_ANSWER,
            WEBRTC_AUDIO_OFFER,
            SIPP_SDP,
        ] {
            let d = parse(s);
            assert_eq!(parse(&d.to_string()), d);
            assert_eq!(d.to_string(), s);
        }
    }
}

mod srtp {
    use super::*;
    use dialbridge_sip::sdp::{Crypto, CryptoSuite, SrtpPolicy};

    const OURS: [u8; 30] = [7; 30];
    const THEIRS: [u8; 30] = [9; 30];

    fn session(policy: SrtpPolicy, key: [u8; 30]) -> SdpSession {
        let mut s = SdpSession::new(1);
        s.set_srtp(policy, key);
        s
    }

    fn crypto_lines(sdp: &SessionDescription) -> Vec<String> {
        sdp.media[0]
            .attributes
            .iter()
            .filter(|a| a.name == "crypto")
            .map(|a| a.value.clone().unwrap_or_default())
            .collect()
    }

    #[test]
    fn a_required_offer_is_savp_with_both_suites_and_the_answer_takes_the_first() {
        let offer =
            session(SrtpPolicy::Required, OURS).create_offer(&AudioConfig::default(), &local());
        assert_eq!(offer.media[0].proto, "RTP/SAVP");
        let lines = crypto_lines(&offer);
        assert_eq!(
            lines,
            [
                format!(
                    "1 AES_CM_128_HMAC_SHA1_80 inline:{}",
                    "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcH"
                ),
                format!(
                    "2 AES_CM_128_HMAC_SHA1_32 inline:{}",
                    "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcH"
                ),
            ]
        );
        let answer = session(SrtpPolicy::Optional, THEIRS)
            .create_answer(&offer, &AudioConfig::default(), &local())
            .expect("answer");
        assert_eq!(answer.sdp.media[0].proto, "RTP/SAVP");
        let keys = answer.audio.srtp.expect("answerer's keys");
        assert_eq!(
            (keys.suite, keys.local, keys.remote),
            (CryptoSuite::AesCm128HmacSha1_80, THEIRS, OURS)
        );
        assert_eq!(crypto_lines(&answer.sdp).len(), 1);
        let agreed = process_answer(&offer, &answer.sdp).expect("processed");
        let keys = agreed.srtp.expect("offerer's keys");
        assert_eq!(
            (keys.suite, keys.local, keys.remote),
            (CryptoSuite::AesCm128HmacSha1_80, OURS, THEIRS)
        );
    }

    #[test]
    fn an_optional_offer_stays_avp_and_a_plain_answer_is_plain_rtp() {
        let offer =
            session(SrtpPolicy::Optional, OURS).create_offer(&AudioConfig::default(), &local());
        assert_eq!(offer.media[0].proto, "RTP/AVP");
        assert_eq!(crypto_lines(&offer).len(), 2);
        let plain = SdpSession::new(2)
            .create_answer(&offer, &AudioConfig::default(), &local())
            .expect("answer");
        assert!(crypto_lines(&plain.sdp).is_empty());
        assert_eq!(plain.audio.srtp, None);
        assert_eq!(
            process_answer(&offer, &plain.sdp).expect("plain").srtp,
            None
        );
    }

    #[test]
    fn what_cannot_be_agreed_is_refused() {
        let required =
            session(SrtpPolicy::Required, OURS).create_offer(&AudioConfig::default(), &local());
        // SRTP off: an SAVP offer has no stream we take (488).
        assert_eq!(
            SdpSession::new(2).create_answer(&required, &AudioConfig::default(), &local()),
            Err(NegotiationError::NoAcceptableAudio)
        );
        // SRTP required: a plain offer is refused.
        let plain = SdpSession::new(3).create_offer(&AudioConfig::default(), &local());
        assert_eq!(
            session(SrtpPolicy::Required, THEIRS).create_answer(
                &plain,
                &AudioConfig::default(),
                &local()
            ),
            Err(NegotiationError::NoAcceptableAudio)
        );
        // An answer to a required offer without keys, or with a tag we did not offer, fails.
        let mut answer = session(SrtpPolicy::Optional, THEIRS)
            .create_answer(&required, &AudioConfig::default(), &local())
            .expect("answer")
            .sdp;
        answer.media[0].attributes.retain(|a| a.name != "crypto");
        assert_eq!(
            process_answer(&required, &answer),
            Err(NegotiationError::NoSrtpKeys { media_index: 0 })
        );
        answer.media[0].attributes.push(Attribute::new(
            "crypto",
            Crypto::new(9, CryptoSuite::AesCm128HmacSha1_80, THEIRS).to_string(),
        ));
        assert_eq!(
            process_answer(&required, &answer),
            Err(NegotiationError::NoSrtpKeys { media_index: 0 })
        );
    }

    #[test]
    fn keys_with_an_mki_or_session_parameters_or_an_unknown_suite_are_skipped() {
        let key = "inline:BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcH";
        let offer = parse(&format!(
            "v=0\r\no=- 1 1 IN IP4 192.0.2.50\r\ns=-\r\nc=IN IP4 192.0.2.50\r\nt=0 0\r\nm=audio 4000 RTP/SAVP 0\r\na=rtpmap:0 PCMU/8000\r\na=crypto:1 AES_256_CM_HMAC_SHA1_80 inline:{}\r\na=crypto:2 AES_CM_128_HMAC_SHA1_80 {key}|2^31|1:4\r\na=crypto:3 AES_CM_128_HMAC_SHA1_80 {key} UNENCRYPTED_SRTP\r\na=crypto:4 AES_CM_128_HMAC_SHA1_32 {key}|2^20\r\n",
            "A".repeat(60)
        ));
        let answer = session(SrtpPolicy::Optional, THEIRS)
            .create_answer(&offer, &AudioConfig::default(), &local())
            .expect("answer");
        let keys = answer.audio.srtp.expect("keys");
        assert_eq!(keys.suite, CryptoSuite::AesCm128HmacSha1_32);
        assert_eq!(keys.remote, OURS);
        assert!(crypto_lines(&answer.sdp)[0].starts_with("4 AES_CM_128_HMAC_SHA1_32 inline:"));
    }
}

//! Every SDP body among the RFC 4475 / RFC 5118 torture messages that a user agent must accept
//! parses, and serializes to text that parses back equal.

use dialbridge_sip::sdp::{
    AudioConfig, Direction, LocalMedia, NegotiationError, SdpSession, SessionDescription,
};

fn expectations() -> Vec<(String, String)> {
    let dir = format!("{}/../../shared/conformance", env!("CARGO_MANIFEST_DIR"));
    let tsv = std::fs::read_to_string(format!("{dir}/EXPECTED.tsv")).unwrap();
    tsv.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let mut f = l.split('\t');
            Some((format!("{dir}/{}", f.next()?), f.next()?.to_string()))
        })
        .collect()
}

#[test]
fn torture_sdp_bodies() {
    let mut checked = Vec::new();
    let mut answered = Vec::new();
    let local = LocalMedia {
        address: "192.0.2.10".parse().unwrap(),
        port: 40000,
        direction: Direction::SendRecv,
    };
    for (path, expect) in expectations() {
        let raw = std::fs::read(&path).unwrap();
        let text = String::from_utf8_lossy(&raw);
        let Some((head, body)) = text.split_once("\r\n\r\n") else {
            continue;
        };
        let is_sdp = head.lines().any(|l| {
            let l = l.to_ascii_lowercase();
            (l.starts_with("content-type:") || l.starts_with("c:")) && l.contains("application/sdp")
        });
        if !is_sdp || !body.starts_with("v=") {
            continue;
        }
        let parsed = SessionDescription::parse(body);
        if expect == "accept" {
            let d = parsed.unwrap();
            assert_eq!(SessionDescription::parse(&d.to_string()), Ok(d.clone()));
            let answer = SdpSession::new(1).create_answer(&d, &AudioConfig::default(), &local);
            match &answer {
                Ok(a) => assert_eq!(a.sdp.media.len(), d.media.len()),
                Err(e) => assert_eq!(*e, NegotiationError::NoAcceptableAudio),
            }
            answered.push((
                path.rsplit('/').next().unwrap_or("").to_string(),
                answer.is_ok(),
            ));
        }
        checked.push(path);
    }
    // Only the two G726-only offers have nothing we can answer with.
    let expected: Vec<(String, bool)> = [
        ("wsinv.dat", true),
        ("esc01.dat", true),
        ("longreq.dat", true),
        ("unreason.dat", true),
        ("baddate.dat", true),
        ("bcast.dat", true),
        ("inv2543.dat", true),
        ("ipv6-in-sdp", false),
        ("mult-ip-in-sdp", true),
        ("ipv4-mapped-ipv6", false),
    ]
    .iter()
    .map(|(n, ok)| (n.to_string(), *ok))
    .collect();
    assert_eq!(answered, expected);
    assert_eq!(checked.len(), 22);
}

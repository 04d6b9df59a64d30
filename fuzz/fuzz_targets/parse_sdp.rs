#![no_main]
//! Parses one SDP body, reads its streams' keys (a=crypto) and answers it as each SRTP mode would.

use dialbridge_sip::sdp::{AudioConfig, Direction, LocalMedia, SdpSession, SessionDescription, SrtpPolicy};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(sdp) = SessionDescription::parse(text) else {
        return;
    };
    for m in &sdp.media {
        for c in m.cryptos() {
            let again = dialbridge_sip::sdp::Crypto::parse(&c.to_string());
            assert_eq!(again.as_ref(), Ok(&c), "a=crypto does not round-trip");
        }
    }
    let local = LocalMedia {
        address: std::net::IpAddr::from([192, 0, 2, 1]),
        port: 4000,
        direction: Direction::SendRecv,
    };
    for policy in [SrtpPolicy::Off, SrtpPolicy::Optional, SrtpPolicy::Required] {
        let mut session = SdpSession::new(1);
        session.set_srtp(policy, [1; 30]);
        let _ = session.create_answer(&sdp, &AudioConfig::default(), &local);
    }
});

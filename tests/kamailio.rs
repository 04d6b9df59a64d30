//! The Kamailio of the tests on its own: it starts on loopback, challenges a REGISTER, keeps the
//! contact of an authenticated one, refuses the blocked user with 403, and stops with its
//! port freed.

mod common;

use std::net::UdpSocket;
use std::time::Duration;

use common::kamailio::{Kamailio, BLOCKED_USER, GATEWAY_PASSWORD, GATEWAY_USER, REALM};
use dialbridge_sip::auth::{ChallengeKind, DigestClient, DigestRequest, RetryDecision};

fn register(socket: &UdpSocket, kamailio: &Kamailio, user: &str, seq: u32, auth: &str) -> String {
    let local = socket.local_addr().expect("local");
    let port = kamailio.port;
    let request = format!(
        "REGISTER sip:127.0.0.1:{port} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bKreg{seq}\r\nMax-Forwards: 70\r\nFrom: <sip:{user}@127.0.0.1:{port}>;tag=t1\r\nTo: <sip:{user}@127.0.0.1:{port}>\r\nCall-ID: reg-{user}@127.0.0.1\r\nCSeq: {seq} REGISTER\r\nContact: <sip:{user}@{local}>\r\nExpires: 60\r\n{auth}Content-Length: 0\r\n\r\n"
    );
    socket
        .send_to(request.as_bytes(), kamailio.addr())
        .expect("send");
    let mut buf = [0u8; 8192];
    let (n, _) = socket.recv_from(&mut buf).expect("an answer from kamailio");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

fn header<'a>(message: &'a str, name: &str) -> Vec<&'a str> {
    message
        .lines()
        .filter_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then_some(v.trim())
        })
        .collect()
}

#[tokio::test]
async fn kamailio_registers_with_digest_and_stops() {
    let mut kamailio = Kamailio::start(None).await;
    let socket = UdpSocket::bind("127.0.0.1:0").expect("udp");
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");

    let challenge = register(&socket, &kamailio, GATEWAY_USER, 1, "");
    assert!(challenge.starts_with("SIP/2.0 401"), "{challenge}");
    let www = header(&challenge, "WWW-Authenticate");
    assert!(
        www.iter()
            .any(|v| v.contains(&format!("realm=\"{REALM}\""))),
        "{challenge}"
    );
    assert!(kamailio.contacts(GATEWAY_USER).is_empty());

    let uri = format!("sip:127.0.0.1:{}", kamailio.port);
    let mut client = DigestClient::new(GATEWAY_USER, GATEWAY_PASSWORD);
    let RetryDecision::Retry(headers) = client.on_challenge(
        ChallengeKind::Www,
        www,
        &DigestRequest::new("REGISTER", &uri),
        "0a1b2c3d",
    ) else {
        panic!("the challenge is answerable: {challenge}");
    };
    let auth: String = headers
        .iter()
        .map(|h| format!("{}: {}\r\n", h.name, h.value))
        .collect();
    let ok = register(&socket, &kamailio, GATEWAY_USER, 2, &auth);
    assert!(ok.starts_with("SIP/2.0 200"), "{ok}");
    let local = socket.local_addr().expect("local");
    assert!(
        header(&ok, "Contact")
            .iter()
            .any(|c| c.contains(&local.to_string())),
        "{ok}"
    );
    assert!(
        kamailio.contacts(GATEWAY_USER).contains(&local.to_string()),
        "{}",
        kamailio.contacts(GATEWAY_USER)
    );

    let forbidden = register(&socket, &kamailio, BLOCKED_USER, 3, "");
    assert!(forbidden.starts_with("SIP/2.0 403"), "{forbidden}");
    let lines = kamailio.lines();
    assert_eq!(
        lines
            .iter()
            .filter(|r| r.starts_with("recv REGISTER "))
            .count(),
        3,
        "{lines:#?}"
    );

    let port = kamailio.port;
    kamailio.stop();
    UdpSocket::bind(("127.0.0.1", port)).expect("kamailio's port is free once it stopped");
}

//! Kamailio as the softswitch: on its own first (it challenges a REGISTER, keeps the contact of
//! an authenticated one, refuses the blocked user with 403, and stops with its port freed), then
//! with the gateway registered to it, and calls both ways through it.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use common::kamailio::{
    Kamailio, ALICE, ALICE_PASSWORD, BLOCKED_USER, GATEWAY_PASSWORD, GATEWAY_USER, REALM,
};
use common::pki::Pki;
use common::ports::Tp;
use common::sipp::{notified_status_lines, received, received_request, Sipp};
use common::telephony::{assert_nothing_left, call_records, wait_for, EventReader, PhoneMedia};
use common::webrtc_client::{Offer, WebRtcClient};
use common::{Client, Gateway, FAST_TIMERS};
use dialbridge_sip::auth::{ChallengeKind, DigestClient, DigestRequest, RetryDecision};
use reqwest::Method;
use serde_json::{json, Value};

/// Sends a REGISTER of `user` (binding its socket's address) and returns Kamailio's answer.
fn register(socket: &UdpSocket, kamailio: &Kamailio, user: &str, seq: u32, auth: &str) -> String {
    let local = socket.local_addr().expect("local");
    register_contact(socket, kamailio, user, local, seq, auth)
}

/// [`register`] that binds `contact` (another UA's address) instead.
fn register_contact(
    socket: &UdpSocket,
    kamailio: &Kamailio,
    user: &str,
    contact: SocketAddr,
    seq: u32,
    auth: &str,
) -> String {
    let local = socket.local_addr().expect("local");
    let port = kamailio.port;
    let request = format!(
        "REGISTER sip:127.0.0.1:{port} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bKreg{seq}\r\nMax-Forwards: 70\r\nFrom: <sip:{user}@127.0.0.1:{port}>;tag=t1\r\nTo: <sip:{user}@127.0.0.1:{port}>\r\nCall-ID: reg-{user}@127.0.0.1\r\nCSeq: {seq} REGISTER\r\nContact: <sip:{user}@{contact}>\r\nExpires: 60\r\n{auth}Content-Length: 0\r\n\r\n"
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

/// Adds `number` as a phone attendee of the room and dials it; the dial-out's call id.
async fn dial_new_phone(alice: &Client, token: &str, number: &str) -> String {
    let attendee = alice.add_phone(token, number).await;
    let reply = alice
        .talk(
            Method::POST,
            &format!("/call/{token}/dialout/{attendee}"),
            None,
        )
        .await
        .expect(200);
    reply.data()["callid"].as_str().expect("callid").to_string()
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

// The gateway against Kamailio: registration with digest auth, its refresh and removal, a
// refused registration, and calls both ways through the softswitch with audio checked by tone.

const TRUNK: &str = "kam";
/// A number Kamailio delivers to the user `gateway` (its DID table).
const DID: &str = "+4930123456";
/// A number Kamailio routes to its SIPp phone.
const PHONE_NUMBER: &str = "+4930777000";
const PHONE_TONE: f64 = 1000.0;
const BROWSER_TONE: f64 = 440.0;

/// A `[[trunks]]` entry for Kamailio that registers as `user`.
fn kamailio_trunk(
    name: &str,
    kamailio: &Kamailio,
    user: &str,
    password: &str,
    extra: &str,
) -> String {
    kamailio_trunk_over("udp", name, kamailio, user, password, extra)
}

/// [`kamailio_trunk`] over `transport` ("udp", "tcp" or "tls").
fn kamailio_trunk_over(
    transport: &str,
    name: &str,
    kamailio: &Kamailio,
    user: &str,
    password: &str,
    extra: &str,
) -> String {
    format!(
        "[[trunks]]\nname = \"{name}\"\naddress = \"127.0.0.1:{}\"\ntransport = \"{transport}\"\nusername = \"{user}\"\npassword = \"{password}\"\ncaller_id = \"+4940111222\"\nallowed_numbers = [\"\\\\+4930[0-9]+\"]\nregister = true\n{extra}",
        kamailio.port_of(transport)
    )
}

/// Kamailio (serving TLS too when `transport` is "tls", its calls out going to `phone`) and a
/// gateway registered to it over `transport` with the trunk [`TRUNK`]. Over TLS the gateway
/// serves the test PKI's certificate and trusts only its CA for the trunk.
async fn registered_over(
    transport: &str,
    phone: Option<SocketAddr>,
) -> (Kamailio, Gateway, Option<Pki>) {
    let pki = (transport == "tls").then(Pki::new);
    let kamailio = match &pki {
        Some(pki) => Kamailio::start_tls(phone, pki).await,
        None => Kamailio::start(phone).await,
    };
    let gw = gateway_registered_to(&kamailio, transport, pki.as_ref(), "").await;
    (kamailio, gw, pki)
}

/// A gateway registered to `kamailio` over `transport` with the trunk [`TRUNK`] (over TLS
/// with `pki`'s certificate, trusting only its CA), with more keys `trunk_extra`.
async fn gateway_registered_to(
    kamailio: &Kamailio,
    transport: &str,
    pki: Option<&Pki>,
    trunk_extra: &str,
) -> Gateway {
    let (sip, extra) = match pki {
        Some(pki) => (
            pki.gateway_sip(),
            format!("tls_ca = \"{}\"\n", pki.ca().display()),
        ),
        None => (String::new(), String::new()),
    };
    let trunk = kamailio_trunk_over(
        transport,
        TRUNK,
        kamailio,
        GATEWAY_USER,
        GATEWAY_PASSWORD,
        &format!("{extra}{trunk_extra}"),
    );
    let gw = Gateway::start_with_sip(&format!("{FAST_TIMERS}{sip}"), &trunk);
    trunk_until(&gw, kamailio, TRUNK, "registered", |t| {
        t["registered"] == true
    })
    .await;
    gw
}

/// Waits until `condition` holds of the JSON of `GET /api/v1/trunks`'s trunk `name`.
async fn trunk_until(
    gw: &Gateway,
    kamailio: &Kamailio,
    name: &str,
    what: &str,
    condition: impl Fn(&Value) -> bool,
) -> Value {
    let alice = gw.client("alice");
    let mut last = Value::Null;
    for _ in 0..300 {
        let reply = alice
            .call(Method::GET, "/api/v1/trunks", None)
            .await
            .expect(200);
        last = reply
            .data()
            .as_array()
            .and_then(|a| a.iter().find(|t| t["name"] == name).cloned())
            .unwrap_or(Value::Null);
        if condition(&last) {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "trunk {name}: {what} did not happen in time: {last}\n{}\nkamailio:\n{}",
        gw.log(),
        kamailio.log()
    );
}

/// Kamailio's lines that match `prefix`.
fn lines_of(kamailio: &Kamailio, prefix: &str) -> Vec<String> {
    kamailio
        .lines()
        .into_iter()
        .filter(|l| l.starts_with(prefix))
        .collect()
}

/// The value of `name=` in a line of Kamailio's request log.
fn field<'a>(line: &'a str, name: &str) -> &'a str {
    line.split_whitespace()
        .find_map(|f| f.strip_prefix(name)?.strip_prefix('='))
        .unwrap_or("")
}

#[tokio::test]
async fn gateway_registers_with_digest_refreshes_and_unregisters_on_shutdown() {
    let kamailio = Kamailio::start(None).await;
    let trunk = kamailio_trunk(
        TRUNK,
        &kamailio,
        GATEWAY_USER,
        GATEWAY_PASSWORD,
        "register_expires = 4\n",
    );
    let mut gw = Gateway::start(&trunk);
    let sip = gw.sip_udp.expect("SIP UDP address");

    let status = trunk_until(&gw, &kamailio, TRUNK, "registered", |t| {
        t["registered"] == true
    })
    .await;
    assert_eq!(status["register"], true);
    assert_eq!(status["transport"], "udp");
    assert!(status["lastError"].is_null(), "{status}");
    assert!(
        status["expires"].as_u64().is_some_and(|e| e <= 4),
        "{status}"
    );
    let contacts = kamailio.contacts(GATEWAY_USER);
    assert!(
        contacts.contains(&format!("sip:{GATEWAY_USER}@{sip}")),
        "{contacts}"
    );

    // On the wire: challenged, answered with the digest, bound for the 4 s asked for.
    let registers = lines_of(&kamailio, "recv REGISTER");
    assert!(registers.len() >= 2, "{registers:#?}");
    assert_eq!(field(&registers[0], "user"), "<null>", "{registers:#?}");
    assert_eq!(field(&registers[0], "expires"), "4");
    assert_eq!(field(&registers[1], "user"), GATEWAY_USER, "{registers:#?}");
    assert_eq!(
        field(&registers[1], "call-id"),
        field(&registers[0], "call-id")
    );
    assert_eq!(field(&registers[1], "cseq"), "2");
    let metrics = gw.metrics().await;
    assert!(
        metrics.contains(&format!(
            "dialbridge_trunk_registered{{trunk=\"{TRUNK}\"}} 1"
        )),
        "{metrics}"
    );

    // A refresh before the 4 s run out, on the same Call-ID with a higher CSeq.
    wait_for(
        "a refreshed registration",
        || lines_of(&kamailio, "registered gateway").len() >= 2,
        || format!("{:#?}", kamailio.lines()),
    )
    .await;
    let registers = lines_of(&kamailio, "recv REGISTER");
    let refresh = registers
        .iter()
        .filter(|l| field(l, "user") == GATEWAY_USER)
        .nth(1)
        .expect("a second authenticated REGISTER");
    assert_eq!(field(refresh, "call-id"), field(&registers[0], "call-id"));
    assert!(
        field(refresh, "cseq").parse::<u32>().expect("cseq") > 2,
        "{registers:#?}"
    );

    // On shutdown the binding is removed (Expires: 0) before the gateway exits.
    assert!(gw.terminate(), "the gateway exits cleanly:\n{}", gw.log());
    let last = lines_of(&kamailio, "recv REGISTER");
    assert!(
        last.iter()
            .any(|l| field(l, "expires") == "0" && field(l, "user") == GATEWAY_USER),
        "{last:#?}\n{}",
        gw.log()
    );
    assert!(
        kamailio.contacts(GATEWAY_USER).is_empty(),
        "{}",
        kamailio.contacts(GATEWAY_USER)
    );
}

/// The registrar is down when the gateway starts: the registration fails (no answer, or the
/// port refuses), is retried with back-off on the same Call-ID, and succeeds once Kamailio runs.
#[tokio::test]
async fn a_failed_registration_is_retried_until_the_registrar_answers() {
    let port = common::ports::sipp_ports().sip;
    let trunk = format!(
        "[[trunks]]\nname = \"{TRUNK}\"\naddress = \"127.0.0.1:{port}\"\nusername = \"{GATEWAY_USER}\"\npassword = \"{GATEWAY_PASSWORD}\"\nregister = true\nregister_retry = 1\nregister_retry_max = 2\n"
    );
    let gw = Gateway::start_with_sip(FAST_TIMERS, &trunk);
    let alice = gw.client("alice");
    let mut failed = Value::Null;
    for _ in 0..300 {
        let reply = alice
            .call(Method::GET, "/api/v1/trunks", None)
            .await
            .expect(200);
        failed = reply.data()[0].clone();
        if !failed["lastError"].is_null() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let error = failed["lastError"].as_str().unwrap_or_default().to_string();
    assert!(
        error == "408 Request Timeout" || error == "503 Service Unavailable",
        "{failed}\n{}",
        gw.log()
    );
    assert_eq!(failed["registered"], false);

    let kamailio = Kamailio::start_on(port, None).await;
    trunk_until(&gw, &kamailio, TRUNK, "registered after the retry", |t| {
        t["registered"] == true && t["lastError"].is_null()
    })
    .await;
    let registers = lines_of(&kamailio, "recv REGISTER");
    assert!(
        field(&registers[0], "cseq").parse::<u32>().expect("cseq") > 1,
        "the retry continues the registration's CSeq: {registers:#?}"
    );
    assert!(
        registers
            .iter()
            .all(|l| field(l, "call-id") == field(&registers[0], "call-id")),
        "{registers:#?}"
    );
}

#[tokio::test]
async fn a_refused_registration_is_a_clear_error_while_the_rest_serves() {
    let kamailio = Kamailio::start(None).await;
    let config = format!(
        "{}{}",
        kamailio_trunk("refused", &kamailio, BLOCKED_USER, "whatever", ""),
        kamailio_trunk(TRUNK, &kamailio, GATEWAY_USER, GATEWAY_PASSWORD, "")
    );
    let gw = Gateway::start(&config);
    let refused = trunk_until(&gw, &kamailio, "refused", "a failure", |t| {
        !t["lastError"].is_null()
    })
    .await;
    assert_eq!(refused["lastError"], "403 Forbidden");
    assert_eq!(refused["registered"], false);
    assert!(refused["expires"].is_null());
    let log = gw.log();
    assert!(
        log.lines().any(
            |l| l.contains("registration at the trunk failed: 403 Forbidden")
                && l.contains("trunk=refused")
        ),
        "{log}"
    );
    assert!(!lines_of(&kamailio, "forbidden REGISTER of blocked").is_empty());

    // The other trunk registers, and the API serves.
    trunk_until(&gw, &kamailio, TRUNK, "registered", |t| {
        t["registered"] == true
    })
    .await;
    let metrics = gw.metrics().await;
    assert!(
        metrics.contains("dialbridge_trunk_registered{trunk=\"refused\"} 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            "dialbridge_trunk_registered{{trunk=\"{TRUNK}\"}} 1"
        )),
        "{metrics}"
    );
    gw.client("alice").create_room(2).await;
    gw.anonymous()
        .call(Method::GET, "/api/v1/trunks", None)
        .await
        .expect(401);
}

/// Alice's room with the dial-in number `DID` (or a phone attendee for dial-out), alice in its
/// call with a WebRTC client sending `BROWSER_TONE`, and her event stream.
async fn room_in_call(gw: &Gateway) -> (Client, String, WebRtcClient, EventReader) {
    let alice = gw.client("alice");
    let token = alice.create_room(2).await;
    alice.join_room(&token).await;
    alice.join_call(&token, 3).await;
    let offer = Offer::new(false);
    let answer = alice.join_media(&token, &offer.sdp).await;
    let browser = offer.start(&answer, BROWSER_TONE);
    let events = EventReader::open(&alice, &token).await;
    (alice, token, browser, events)
}

async fn hear_each_other(browser: &WebRtcClient, phone: &PhoneMedia) {
    wait_for(
        "the browser hearing the phone's tone",
        || browser.hears(PHONE_TONE) > 0.5,
        || format!("browser hears {:.3}", browser.hears(PHONE_TONE)),
    )
    .await;
    wait_for(
        "the phone hearing the browser's tone",
        || phone.hears(BROWSER_TONE) > 0.5,
        || {
            format!(
                "phone hears {:.3} ({})",
                phone.hears(BROWSER_TONE),
                phone.describe()
            )
        },
    )
    .await;
}

/// A caller (SIPp over UDP) dials the room's number at Kamailio, which delivers it to the
/// gateway's registration (made over `transport`, on which the call comes too): the call is
/// admitted as from the registered trunk,
/// joins the room, and both sides hear each other; the moderator's hangup goes back through
/// Kamailio's route.
async fn a_call_kamailio_delivers_to_our_registration_reaches_the_room(transport: &str) {
    let (kamailio, gw, _pki) = registered_over(transport, None).await;
    let (alice, token, browser, mut events) = room_in_call(&gw).await;
    alice
        .call(
            Method::PUT,
            &format!("/api/v1/rooms/{token}/dialin"),
            Some(json!({"number": DID})),
        )
        .await
        .expect(200);

    let phone = PhoneMedia::start(PHONE_TONE);
    let port = phone.addr.port().to_string();
    let sipp = Sipp::uac(
        kamailio.addr(),
        "uac_call_via_proxy.xml",
        Tp::Udp,
        DID,
        "Carrier SBC",
        &["-set", "mhost", "127.0.0.1", "-set", "mport", &port],
    );
    let up = events
        .until("connected", |e| {
            e["type"] == "callstatus" && e["status"] == "connected"
        })
        .await;
    let call_id = up["callid"].as_str().expect("callid").to_string();
    hear_each_other(&browser, &phone).await;

    alice
        .call(
            Method::POST,
            &format!("/api/v1/rooms/{token}/phones/{call_id}/hangup"),
            None,
        )
        .await
        .expect(200);
    let (ok, trace) = sipp.finish().await;
    assert!(ok, "SIPp answered our BYE:\n{trace}");
    // Kamailio rewrote the number to our registered contact and relayed our BYE on its route.
    let invites = lines_of(&kamailio, "recv INVITE");
    assert!(
        invites[0].starts_with(&format!("recv INVITE sip:{DID}@")),
        "{invites:#?}"
    );
    assert!(
        !lines_of(&kamailio, "recv BYE").is_empty(),
        "{:#?}",
        kamailio.lines()
    );
    let recs = call_records(&alice, &token, "dialin").await;
    assert_eq!(recs.len(), 1, "{recs:?}");
    assert_eq!(recs[0]["trunk"], TRUNK);
    assert_eq!(recs[0]["cause"], "ended");
    // Our REGISTERs and our BYE came over the trunk's transport.
    let ours: Vec<String> = kamailio
        .lines()
        .into_iter()
        .filter(|l| l.starts_with("recv REGISTER") || l.starts_with("recv BYE"))
        .collect();
    assert!(
        ours.iter()
            .all(|l| l.contains(&format!(" via {transport} "))),
        "{ours:#?}"
    );
    if transport == "tls" {
        // Our binding, where Kamailio sent the call, is reached over TLS.
        let contacts = kamailio.contacts(GATEWAY_USER);
        assert!(contacts.contains("transport=tls"), "{contacts}");
    }
    assert_nothing_left(&gw).await;
}

#[tokio::test]
async fn a_call_kamailio_delivers_to_our_registration_over_udp_reaches_the_room() {
    a_call_kamailio_delivers_to_our_registration_reaches_the_room("udp").await;
}

#[tokio::test]
async fn a_call_kamailio_delivers_to_our_registration_over_tcp_reaches_the_room() {
    a_call_kamailio_delivers_to_our_registration_reaches_the_room("tcp").await;
}

#[tokio::test]
async fn a_call_kamailio_delivers_to_our_registration_over_tls_reaches_the_room() {
    a_call_kamailio_delivers_to_our_registration_reaches_the_room("tls").await;
}

/// A dial-out through Kamailio (reached over `transport`): it challenges our INVITE (407), the trunk's
/// credentials answer it, and the call reaches the SIPp phone behind it (UDP), with audio both
/// ways.
async fn a_dial_out_through_kamailio_reaches_the_phone_with_audio_both_ways(transport: &str) {
    let phone = PhoneMedia::start(PHONE_TONE);
    let mport = phone.addr.port().to_string();
    let sipp = Sipp::uas(
        "dialout_answer.xml",
        Tp::Udp,
        &["-set", "mhost", "127.0.0.1", "-set", "mport", &mport],
    )
    .await;
    let phone_at = SocketAddr::from(([127, 0, 0, 1], sipp.port));
    let (kamailio, gw, _pki) = registered_over(transport, Some(phone_at)).await;
    let (alice, token, browser, mut events) = room_in_call(&gw).await;
    let call_id = dial_new_phone(&alice, &token, PHONE_NUMBER).await;
    events.reach("connected").await;
    hear_each_other(&browser, &phone).await;

    alice
        .talk(
            Method::DELETE,
            &format!("/call/{token}"),
            Some(json!({"all": true})),
        )
        .await
        .expect(200);
    let rest = events.statuses(&call_id).await;
    assert_eq!(rest.last().expect("final")["status"], "cleared");
    let (ok, trace) = sipp.finish().await;
    assert!(ok, "SIPp scenario failed:\n{trace}");
    // Challenged once, then authenticated with the trunk's account.
    let invites = lines_of(&kamailio, "recv INVITE");
    assert_eq!(invites.len(), 2, "{invites:#?}");
    assert_eq!(field(&invites[0], "proxy-auth"), "", "{invites:#?}");
    assert_eq!(field(&invites[1], "user"), GATEWAY_USER, "{invites:#?}");
    let scheme = if transport == "tls" { "sips" } else { "sip" };
    assert!(
        invites[1].starts_with(&format!("recv INVITE {scheme}:{PHONE_NUMBER}@127.0.0.1:")),
        "{invites:#?}"
    );
    assert!(!lines_of(&kamailio, "INVITE from gateway authenticated").is_empty());
    assert!(
        trace.contains(&format!("INVITE {scheme}:{PHONE_NUMBER}@")),
        "{trace}"
    );
    let kamailio_lines = kamailio.lines();
    let via = format!(" via {transport} ");
    assert!(invites.iter().all(|l| l.contains(&via)), "{invites:#?}");
    // One connection (or socket) carried the registration and both INVITEs: it is reused.
    let sources: std::collections::BTreeSet<&str> = kamailio_lines
        .iter()
        .filter(|l| l.starts_with("recv REGISTER") || l.starts_with("recv INVITE"))
        .filter_map(|l| l.split(" from ").nth(1)?.split(' ').next())
        .collect();
    assert_eq!(sources.len(), 1, "{kamailio_lines:#?}");
    assert_nothing_left(&gw).await;
}

#[tokio::test]
async fn a_dial_out_through_kamailio_over_udp_reaches_the_phone_with_audio_both_ways() {
    a_dial_out_through_kamailio_reaches_the_phone_with_audio_both_ways("udp").await;
}

#[tokio::test]
async fn a_dial_out_through_kamailio_over_tcp_reaches_the_phone_with_audio_both_ways() {
    a_dial_out_through_kamailio_reaches_the_phone_with_audio_both_ways("tcp").await;
}

#[tokio::test]
async fn a_dial_out_through_kamailio_over_tls_reaches_the_phone_with_audio_both_ways() {
    a_dial_out_through_kamailio_reaches_the_phone_with_audio_both_ways("tls").await;
}

/// A TLS trunk whose certificate its `tls_ca` does not vouch for: the handshake fails, the
/// dial-out is rejected with cause failed and code 503, the log names the reason, and the
/// gateway goes on serving (the trunk that trusts the right CA stays registered over TLS).
#[tokio::test]
async fn a_tls_handshake_failure_rejects_the_call_with_a_clear_error() {
    let pki = Pki::new();
    let kamailio = Kamailio::start_tls(None, &pki).await;
    // The other trunk's softswitch: its certificate is fine, the trunk trusts the wrong CA.
    let untrusted = Kamailio::start_tls(None, &pki).await;
    let bad = format!(
        "[[trunks]]\nname = \"wrong-ca\"\naddress = \"127.0.0.1:{}\"\ntransport = \"tls\"\ntls_ca = \"{}\"\nallowed_numbers = [\"\\\\+4930666[0-9]+\"]\n",
        untrusted.port_of("tls"),
        pki.other_ca().display()
    );
    let good = kamailio_trunk_over(
        "tls",
        TRUNK,
        &kamailio,
        GATEWAY_USER,
        GATEWAY_PASSWORD,
        &format!("tls_ca = \"{}\"\n", pki.ca().display()),
    );
    let gw = Gateway::start_with_sip(
        &format!("{FAST_TIMERS}{}", pki.gateway_sip()),
        &format!("{bad}{good}"),
    );
    let (alice, token, _browser, mut events) = room_in_call(&gw).await;
    let call_id = dial_new_phone(&alice, &token, "+4930666000").await;
    let statuses = events.statuses(&call_id).await;
    let last = statuses.last().expect("final status");
    assert_eq!(last["status"], "rejected", "{statuses:#?}");
    assert_eq!(last["cause"], "failed", "{statuses:#?}");
    assert_eq!(last["code"], 503, "{statuses:#?}");
    let log = gw.log();
    let line = log
        .lines()
        .find(|l| l.contains("SIP TLS handshake failed"))
        .unwrap_or_else(|| panic!("no handshake log line:\n{log}"));
    assert!(
        line.contains("UnknownIssuer") && line.contains("127.0.0.1"),
        "{line}"
    );
    // Nothing of it reached Kamailio, and the rest serves: the other trunk registers over TLS.
    assert!(lines_of(&untrusted, "recv INVITE").is_empty());
    trunk_until(&gw, &kamailio, TRUNK, "registered", |t| {
        t["registered"] == true
    })
    .await;
    assert_nothing_left(&gw).await;
}

/// A number Kamailio delivers to the user `alice` (its DID table): the transfer target.
const TRANSFER_NUMBER: &str = "+4930777001";

/// Binds `contact` (a UA elsewhere) as `user` at Kamailio, answering its digest challenge.
fn register_with_digest(kamailio: &Kamailio, user: &str, password: &str, contact: SocketAddr) {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("udp");
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let challenge = register_contact(&socket, kamailio, user, contact, 1, "");
    assert!(challenge.starts_with("SIP/2.0 401"), "{challenge}");
    let uri = format!("sip:127.0.0.1:{}", kamailio.port);
    let RetryDecision::Retry(headers) = DigestClient::new(user, password).on_challenge(
        ChallengeKind::Www,
        header(&challenge, "WWW-Authenticate"),
        &DigestRequest::new("REGISTER", &uri),
        "4e5f6a7b",
    ) else {
        panic!("the challenge is answerable: {challenge}");
    };
    let auth: String = headers
        .iter()
        .map(|h| format!("{}: {}\r\n", h.name, h.value))
        .collect();
    let ok = register_contact(&socket, kamailio, user, contact, 2, &auth);
    assert!(ok.starts_with("SIP/2.0 200"), "{ok}");
}

/// A phone reached through Kamailio is transferred to a number Kamailio serves: the phone
/// accepts our REFER and really calls the target through Kamailio (its 3PCC twin places that
/// call to a second SIPp phone, registered at Kamailio for the number), reports the target's
/// 200 in a NOTIFY on Kamailio's route, and our BYE ends its leg: the room sees the transfer
/// accepted and the phone cleared as `transferred`.
#[tokio::test]
async fn a_phone_transferred_through_kamailio_calls_the_target_and_is_cleared_as_transferred() {
    let target = Sipp::uas(
        "dialout_answer.xml",
        Tp::Udp,
        &["-set", "mhost", "127.0.0.1", "-set", "mport", "9"],
    )
    .await;
    let kamailio_port = common::ports::sipp_ports().sip;
    let kamailio_at = SocketAddr::from(([127, 0, 0, 1], kamailio_port));
    let phone_media = PhoneMedia::start(PHONE_TONE);
    let mport = phone_media.addr.port().to_string();
    let (phone, twin) = Sipp::uas_with_twin(
        "dialout_transfer_via_twin.xml",
        "transfer_twin_calls_target.xml",
        kamailio_at,
        &["-set", "mhost", "127.0.0.1", "-set", "mport", &mport],
    )
    .await;
    let phone_at = SocketAddr::from(([127, 0, 0, 1], phone.port));
    let kamailio = Kamailio::start_on(kamailio_port, Some(phone_at)).await;
    let target_at = SocketAddr::from(([127, 0, 0, 1], target.port));
    register_with_digest(&kamailio, ALICE, ALICE_PASSWORD, target_at);
    let gw = gateway_registered_to(&kamailio, "udp", None, "").await;
    let (alice, token, _browser, mut events) = room_in_call(&gw).await;
    let call_id = dial_new_phone(&alice, &token, PHONE_NUMBER).await;
    events.reach("connected").await;

    alice
        .call(
            Method::POST,
            &format!("/api/v1/rooms/{token}/phones/{call_id}/transfer"),
            Some(json!({ "to": TRANSFER_NUMBER })),
        )
        .await
        .expect(200);
    let accepted = events
        .until("a transfer event", |e| {
            e["type"] == "transfer" && e["callid"] == call_id
        })
        .await;
    assert_eq!(accepted["status"], "accepted", "{accepted}");
    assert_eq!(accepted["code"], 202, "{accepted}");
    let rest = events.statuses(&call_id).await;
    let last = rest.last().expect("final");
    assert_eq!(last["status"], "cleared", "{rest:?}");
    assert_eq!(last["cause"], "transferred", "{rest:?}");

    let (ok, trace) = phone.finish().await;
    assert!(
        ok,
        "the phone's scenario (REFER, NOTIFY, our BYE) failed:\n{trace}"
    );
    let refer = received_request(&trace, "REFER");
    let refer_to = format!("Refer-To: <sip:{TRANSFER_NUMBER}@127.0.0.1:{kamailio_port}>");
    assert!(refer.contains(&refer_to), "{refer}");
    let (ok, twin_trace) = twin.finish().await;
    assert!(ok, "the twin's call to the target failed:\n{twin_trace}");
    let (ok, target_trace) = target.finish().await;
    assert!(ok, "the target's scenario failed:\n{target_trace}");
    assert!(
        received(&target_trace)
            .iter()
            .any(|m| m.starts_with(&format!("INVITE sip:{ALICE}@{target_at}"))),
        "the target got the INVITE Kamailio routed from the number:\n{target_trace}"
    );
    // The REFER, the NOTIFY and our BYE went through Kamailio, and so did the call to the target.
    let lines = kamailio.lines();
    for wanted in [
        "recv REFER ".to_string(),
        "recv NOTIFY ".to_string(),
        "recv BYE ".to_string(),
        format!("recv INVITE sip:{TRANSFER_NUMBER}@127.0.0.1:{kamailio_port} "),
    ] {
        assert!(
            lines.iter().any(|l| l.starts_with(&wanted)),
            "{wanted}: {lines:#?}"
        );
    }
    let recs = call_records(&alice, &token, "dialout").await;
    assert_eq!(recs.len(), 1, "{recs:?}");
    assert_eq!(recs[0]["cause"], "transferred", "{recs:?}");
    assert_nothing_left(&gw).await;
}

/// A phone behind Kamailio transfers us (REFER; the trunk has `allow_refer`): we accept, call
/// the target through Kamailio (a second SIPp phone, registered there for the number), NOTIFY
/// the phone of that call (100, 180, 200), and once the target answers it takes the phone's
/// place in the room (same attendee, `ringing` then `connected`, audio both ways) while the
/// first leg ends `cleared` with cause `transferred`.
#[tokio::test]
async fn a_phone_that_transfers_us_is_replaced_in_the_room_by_our_call_to_its_target() {
    let target_media = PhoneMedia::start(PHONE_TONE);
    let target_mport = target_media.addr.port().to_string();
    let target = Sipp::uas(
        "dialout_answer.xml",
        Tp::Udp,
        &["-set", "mhost", "127.0.0.1", "-set", "mport", &target_mport],
    )
    .await;
    let kamailio_port = common::ports::sipp_ports().sip;
    let proxy = format!("127.0.0.1:{kamailio_port}");
    let phone = Sipp::uas(
        "dialout_phone_transfers_us.xml",
        Tp::Udp,
        &[
            "-set",
            "mhost",
            "127.0.0.1",
            "-set",
            "mport",
            "9",
            "-set",
            "target",
            TRANSFER_NUMBER,
            "-set",
            "proxy",
            &proxy,
        ],
    )
    .await;
    let phone_at = SocketAddr::from(([127, 0, 0, 1], phone.port));
    let kamailio = Kamailio::start_on(kamailio_port, Some(phone_at)).await;
    let target_at = SocketAddr::from(([127, 0, 0, 1], target.port));
    register_with_digest(&kamailio, ALICE, ALICE_PASSWORD, target_at);
    let gw = gateway_registered_to(&kamailio, "udp", None, "allow_refer = true\n").await;
    let (alice, token, browser, mut events) = room_in_call(&gw).await;
    let call_id = dial_new_phone(&alice, &token, PHONE_NUMBER).await;
    events.reach("connected").await;

    let accepted = events
        .until("the phone's transfer", |e| {
            e["type"] == "transfer" && e["callid"] == call_id
        })
        .await;
    assert_eq!(accepted["status"], "accepted", "{accepted}");
    assert_eq!(accepted["code"], 202, "{accepted}");
    let replacement = events
        .until("the replacement's accepted", |e| {
            e["type"] == "callstatus" && e["status"] == "accepted" && e["callid"] != call_id
        })
        .await;
    let new_call_id = replacement["callid"].as_str().expect("callid").to_string();
    assert_eq!(replacement["attendeeId"], accepted["attendeeId"]);
    let mut seen = Vec::new();
    let mut first_leg = Vec::new();
    while !(seen.iter().any(|s: &Value| s["status"] == "connected")
        && first_leg.iter().any(|s: &Value| s["status"] == "cleared"))
    {
        let e = events
            .until("a phone's callstatus", |e| e["type"] == "callstatus")
            .await;
        if e["callid"] == new_call_id {
            seen.push(e);
        } else if e["callid"] == call_id {
            first_leg.push(e);
        }
    }
    let words: Vec<&str> = seen.iter().filter_map(|s| s["status"].as_str()).collect();
    assert_eq!(words, ["ringing", "connected"], "{seen:#?}");
    let last = first_leg.last().expect("the first leg's end");
    assert_eq!(last["status"], "cleared", "{first_leg:#?}");
    assert_eq!(last["cause"], "transferred", "{first_leg:#?}");
    hear_each_other(&browser, &target_media).await;

    let (ok, trace) = phone.finish().await;
    assert!(
        ok,
        "the transferring phone's scenario failed:\n{trace}\n{}",
        gw.log()
    );
    assert_eq!(
        notified_status_lines(&trace),
        [
            "SIP/2.0 100 Trying",
            "SIP/2.0 180 Ringing",
            "SIP/2.0 200 OK"
        ],
        "{trace}"
    );
    alice
        .talk(
            Method::DELETE,
            &format!("/call/{token}"),
            Some(json!({"all": true})),
        )
        .await
        .expect(200);
    let rest = events.statuses(&new_call_id).await;
    assert_eq!(rest.last().expect("final")["cause"], "ended", "{rest:#?}");
    let (ok, target_trace) = target.finish().await;
    assert!(ok, "the target's scenario failed:\n{target_trace}");
    assert!(
        received(&target_trace)
            .iter()
            .any(|m| m.starts_with(&format!("INVITE sip:{ALICE}@{target_at}"))),
        "{target_trace}"
    );
    // Our call to the target went through Kamailio, to the number the REFER named.
    assert!(
        !lines_of(
            &kamailio,
            &format!("recv INVITE sip:{TRANSFER_NUMBER}@127.0.0.1:{kamailio_port} ")
        )
        .is_empty(),
        "{:#?}",
        kamailio.lines()
    );
    let recs = call_records(&alice, &token, "dialout").await;
    assert_eq!(recs.len(), 2, "{recs:?}");
    let causes: std::collections::BTreeSet<&str> =
        recs.iter().filter_map(|r| r["cause"].as_str()).collect();
    assert_eq!(causes, ["ended", "transferred"].into(), "{recs:?}");
    assert_nothing_left(&gw).await;
}

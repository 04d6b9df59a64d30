//! The HTTP server against clients that hold connections or guess tokens: timeouts, connection
//! caps and the back-off of failed authentication, on the real binary.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{Gateway, Setup};
use reqwest::Method;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

fn addr(gw: &Gateway) -> SocketAddr {
    gw.base
        .trim_start_matches("http://")
        .parse()
        .expect("http address")
}

/// Connects to the gateway from `source` (any address of 127.0.0.0/8).
async fn connect_from(gw: &Gateway, source: &str) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(format!("{source}:0").parse().expect("source"))
        .expect("bind");
    socket.connect(addr(gw)).await.expect("connect")
}

/// Everything the server sends until it closes the connection; fails the test if it has not
/// closed it within 30 s.
async fn until_closed(stream: &mut TcpStream) -> String {
    let mut received = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the server kept the connection open");
    String::from_utf8_lossy(&received).into_owned()
}

/// A complete request on a fresh connection and its response's status line.
async fn status_line(mut stream: TcpStream) -> String {
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let response = until_closed(&mut stream).await;
    response.lines().next().unwrap_or("").to_string()
}

/// An HTTP client whose connections come from 127.0.0.2.
fn from_second_source() -> reqwest::Client {
    reqwest::Client::builder()
        .local_address("127.0.0.2".parse::<std::net::IpAddr>().ok())
        .no_proxy()
        .build()
        .expect("client")
}

#[tokio::test]
async fn slow_and_idle_connections_are_closed_after_their_timeouts() {
    let gw = Gateway::launch(Setup {
        http: "header_timeout = \"1s\"\nbody_timeout = \"1s\"\nidle_timeout = \"2s\"\n",
        ..Setup::default()
    });

    // A connection that never sends anything.
    let mut silent = TcpStream::connect(addr(&gw)).await.expect("connect");
    assert_eq!(until_closed(&mut silent).await, "");

    // Headers trickling in, one line every 200 ms, never finished.
    let slow = TcpStream::connect(addr(&gw)).await.expect("connect");
    let (mut reader, mut writer) = slow.into_split();
    let trickle = tokio::spawn(async move {
        let _ = writer.write_all(b"GET /healthz HTTP/1.1\r\n").await;
        for i in 0..150 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if writer
                .write_all(format!("X-Slow-{i}: 1\r\n").as_bytes())
                .await
                .is_err()
            {
                break;
            }
        }
    });
    let mut received = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(30), reader.read_to_end(&mut received));
    assert!(
        closed.await.is_ok(),
        "slow headers kept the connection open"
    );
    assert!(
        received.is_empty(),
        "{}",
        String::from_utf8_lossy(&received)
    );
    trickle.abort();

    // A body that never completes: 408, then the connection closes.
    let mut stream = TcpStream::connect(addr(&gw)).await.expect("connect");
    stream
        .write_all(
            b"POST /ocs/v2.php/apps/spreed/api/v4/room HTTP/1.1\r\nHost: gw\r\n\
              Authorization: Bearer alice-token-0001\r\nContent-Type: application/json\r\n\
              Content-Length: 100\r\n\r\n{\"roomType\"",
        )
        .await
        .expect("write");
    let response = until_closed(&mut stream).await;
    assert!(response.starts_with("HTTP/1.1 408 "), "{response}");
    assert!(response.contains("\"statuscode\":408"), "{response}");

    // A keep-alive connection left idle after a request.
    let mut stream = TcpStream::connect(addr(&gw)).await.expect("connect");
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n")
        .await
        .expect("write");
    let response = until_closed(&mut stream).await;
    assert!(response.starts_with("HTTP/1.1 200 "), "{response}");

    // Ordinary requests are unaffected.
    gw.anonymous()
        .call(Method::GET, "/healthz", None)
        .await
        .expect(200);
    let metrics = gw.metrics().await;
    for reason in ["header-timeout", "body-timeout", "idle-timeout"] {
        assert!(
            metrics.contains(&format!(
                "dialbridge_http_connections_closed_total{{reason=\"{reason}\"}}"
            )),
            "{reason} not counted:\n{metrics}"
        );
    }
}

#[tokio::test]
async fn healthz_answers_while_the_connection_cap_is_reached() {
    // 256 open files: at most 128 connections, whatever the configuration says.
    let gw = Gateway::launch(Setup {
        open_files: Some(256),
        ..Setup::default()
    });
    assert!(
        gw.log()
            .contains("http.max_connections lowered to half the open-file limit"),
        "{}",
        gw.log()
    );
    let mut idle = Vec::new();
    for _ in 0..300 {
        idle.push(TcpStream::connect(addr(&gw)).await.expect("connect"));
    }
    for _ in 0..3 {
        let stream = TcpStream::connect(addr(&gw)).await.expect("connect");
        assert_eq!(status_line(stream).await, "HTTP/1.1 200 OK");
    }
    assert!(!gw.log().contains("accept error"), "{}", gw.log());
    drop(idle);
}

#[tokio::test]
async fn a_source_with_every_slot_busy_is_refused_and_others_are_served() {
    let gw = Gateway::launch(Setup {
        http: "max_connections_per_source = 4\n",
        ..Setup::default()
    });
    let alice = gw.client("alice");
    let token = alice.create_room(2).await;
    // Four event streams keep every slot of 127.0.0.1 busy.
    let mut streams = Vec::new();
    for _ in 0..4 {
        let response = alice
            .request(Method::GET, &format!("/api/v1/rooms/{token}/events"))
            .send()
            .await
            .expect("stream");
        assert_eq!(response.status(), 200);
        streams.push(response);
    }
    let refused = connect_from(&gw, "127.0.0.1").await;
    assert_eq!(
        status_line(refused).await,
        "HTTP/1.1 503 Service Unavailable"
    );
    let other = connect_from(&gw, "127.0.0.2").await;
    assert_eq!(status_line(other).await, "HTTP/1.1 200 OK");
    let metrics = from_second_source()
        .get(format!("{}/metrics", gw.base))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    drop(streams);
    assert!(
        metrics.contains("dialbridge_http_connections_refused_total 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn failed_authentication_is_slowed_per_source() {
    let gw = Gateway::launch(Setup {
        http: "auth_failures_per_minute = 5\n",
        ..Setup::default()
    });
    let guesser = gw.anonymous().with_auth("Bearer wrong-token-000");
    for _ in 0..5 {
        guesser.talk(Method::GET, "/room", None).await.expect(401);
    }
    let refused = guesser.talk(Method::GET, "/room", None).await.expect(429);
    assert!(refused
        .message()
        .contains("too many failed authentications"));
    // The whole source is refused while it backs off, even with a valid token...
    gw.client("alice")
        .talk(Method::GET, "/room", None)
        .await
        .expect(429);
    let response = gw
        .client("alice")
        .request(Method::GET, "/api/v1/rooms/none/calls")
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 429);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .ok()
        .and_then(|v| v.parse().ok())
        .expect("Retry-After in seconds");
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    // ...and other sources are not.
    let response = from_second_source()
        .get(format!("{}/ocs/v2.php/apps/spreed/api/v4/room", gw.base))
        .bearer_auth("alice-token-0001")
        .header("OCS-APIRequest", "true")
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
    let metrics = gw.metrics().await;
    assert!(
        metrics.contains("dialbridge_http_auth_failures_total 5"),
        "{metrics}"
    );
    assert!(
        metrics.contains("dialbridge_http_auth_refused_total 3"),
        "{metrics}"
    );
}

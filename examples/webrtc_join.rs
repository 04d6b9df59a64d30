//! Joins a room's call over WebRTC, sends a tone, and prints what it hears.
//!
//! ```sh
//! cargo run --example webrtc_join -- http://127.0.0.1:8080 "$TOKEN" "$ROOM" 440 30
//! ```
//! Arguments: the API base URL, an API token, the room token, the tone to send in Hz (0 for
//! silence) and how many seconds to stay. Run it twice with different tones in the same room
//! and each prints the other's tone. The WebRTC side is the str0m client the tests use.

#[path = "../tests/common/webrtc_client.rs"]
mod webrtc_client;

use std::time::Duration;

use dialbridge_bridge::testing::rms;
use serde_json::json;
use webrtc_client::Offer;

const TALK: &str = "/ocs/v2.php/apps/spreed/api/v4";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, base, token, room, tone, seconds] = args.as_slice() else {
        eprintln!("usage: webrtc_join BASE_URL API_TOKEN ROOM_TOKEN TONE_HZ SECONDS");
        std::process::exit(2);
    };
    let tone: f64 = tone.parse()?;
    let seconds: u64 = seconds.parse()?;
    let base = base.trim_end_matches('/');
    let auth = format!("Bearer {token}");
    // The cookie jar keeps the room session, as a browser would.
    let http = reqwest::Client::builder().cookie_store(true).build()?;

    http.post(format!("{base}{TALK}/room/{room}/participants/active"))
        .header("Authorization", &auth)
        .send()
        .await?
        .error_for_status()?;
    http.post(format!("{base}{TALK}/call/{room}"))
        .header("Authorization", &auth)
        .json(&json!({"flags": 3}))
        .send()
        .await?
        .error_for_status()?;

    let offer = Offer::new(false);
    let response = http
        .post(format!("{base}/api/v1/rooms/{room}/media"))
        .header("Authorization", &auth)
        .header("Content-Type", "application/sdp")
        .body(offer.sdp.clone())
        .send()
        .await?;
    if response.status() != 201 {
        let status = response.status();
        eprintln!("join refused: {status}: {}", response.text().await?);
        std::process::exit(1);
    }
    let location = response
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let answer = response.text().await?;
    let client = offer.start(&answer, tone);
    println!("media session {location}; sending {tone} Hz");

    for _ in 0..seconds {
        tokio::time::sleep(Duration::from_secs(1)).await;
        println!(
            "connected {}, level {:6.0}, 440 Hz {:.2}, 1000 Hz {:.2}",
            client.connected(),
            rms(&client.heard(1000)),
            client.hears(440.0),
            client.hears(1000.0)
        );
    }
    http.delete(&location)
        .header("Authorization", &auth)
        .send()
        .await?
        .error_for_status()?;
    println!("left");
    Ok(())
}

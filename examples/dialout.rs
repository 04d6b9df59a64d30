//! Dials a phone number from a new room and prints the call's progress as it happens.
//!
//! ```sh
//! cargo run --example dialout -- http://127.0.0.1:8080 "$TOKEN" +4930123456 60
//! ```
//! Arguments: the API base URL, an API token, the number to dial (E.164) and how many seconds
//! to keep the call before ending it. It creates a room, adds the number as a phone attendee,
//! joins the room's call (dial-out needs a call in progress), dials, prints every `callstatus`
//! event of the room's event stream, and ends the call for everyone when the time is up or the
//! phone's leg ends. README shows how to let SIPp be the phone.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{json, Value};

const TALK: &str = "/ocs/v2.php/apps/spreed/api/v4";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, base, token, number, seconds] = args.as_slice() else {
        eprintln!("usage: dialout BASE_URL API_TOKEN NUMBER SECONDS");
        std::process::exit(2);
    };
    let seconds: u64 = seconds.parse()?;
    let base = base.trim_end_matches('/');
    let auth = format!("Bearer {token}");
    // The cookie jar keeps the room session, as a browser would.
    let http = reqwest::Client::builder().cookie_store(true).build()?;
    let talk = |method: reqwest::Method, path: &str, body: Value| {
        http.request(method, format!("{base}{TALK}{path}"))
            .header("Authorization", &auth)
            .json(&body)
    };
    let data = |reply: Value| reply["ocs"]["data"].clone();

    let room = data(
        talk(
            reqwest::Method::POST,
            "/room",
            json!({"roomType": 2, "roomName": "Dial-out example"}),
        )
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?,
    );
    let room = room["token"].as_str().ok_or("no room token")?.to_string();
    let phone = data(
        talk(
            reqwest::Method::POST,
            &format!("/room/{room}/participants"),
            json!({"newParticipant": number, "source": "phones"}),
        )
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?,
    );
    let phone = phone["attendeeId"].as_i64().ok_or("no attendee id")?;
    talk(
        reqwest::Method::POST,
        &format!("/room/{room}/participants/active"),
        json!({}),
    )
    .send()
    .await?
    .error_for_status()?;
    talk(
        reqwest::Method::POST,
        &format!("/call/{room}"),
        json!({"flags": 3}),
    )
    .send()
    .await?
    .error_for_status()?;
    println!("room {room}, phone attendee {phone}");

    let events = http
        .get(format!("{base}/api/v1/rooms/{room}/events"))
        .header("Authorization", &auth)
        .send()
        .await?
        .error_for_status()?;
    let reply: Value = talk(
        reqwest::Method::POST,
        &format!("/call/{room}/dialout/{phone}"),
        json!({}),
    )
    .send()
    .await?
    .json()
    .await?;
    let call_id = match reply["ocs"]["data"]["callid"].as_str() {
        Some(id) => id.to_string(),
        None => {
            eprintln!("dial-out refused: {}", reply["ocs"]["meta"]["message"]);
            std::process::exit(1);
        }
    };
    println!("dialling {number}: call {call_id}");

    let mut stream = events.bytes_stream();
    let mut buffer = String::new();
    let deadline = tokio::time::sleep(Duration::from_secs(seconds));
    tokio::pin!(deadline);
    'events: loop {
        tokio::select! {
            _ = &mut deadline => break,
            chunk = stream.next() => {
                let Some(chunk) = chunk else { break };
                buffer.push_str(&String::from_utf8_lossy(&chunk?));
                while let Some(end) = buffer.find("\n\n") {
                    let frame: String = buffer.drain(..end + 2).collect();
                    for line in frame.lines().filter_map(|l| l.strip_prefix("data:")) {
                        let Ok(event) = serde_json::from_str::<Value>(line.trim_start()) else {
                            continue;
                        };
                        if event["type"] != "callstatus" || event["callid"] != call_id.as_str() {
                            continue;
                        }
                        println!(
                            "{:<10} cause {:<14} code {:<5} {}",
                            event["status"].as_str().unwrap_or("?"),
                            event["cause"].as_str().unwrap_or("-"),
                            event["code"].as_i64().map(|c| c.to_string()).unwrap_or("-".into()),
                            event["message"].as_str().unwrap_or(""),
                        );
                        if matches!(event["status"].as_str(), Some("rejected" | "cleared")) {
                            break 'events;
                        }
                    }
                }
            }
        }
    }
    talk(
        reqwest::Method::DELETE,
        &format!("/call/{room}"),
        json!({"all": true}),
    )
    .send()
    .await?
    .error_for_status()?;
    println!("call ended for everyone");
    Ok(())
}

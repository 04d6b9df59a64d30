//! The gateway's HTTP API as the load benchmarks drive it: a room per call with a phone
//! attendee, the user in the call, a WebRTC join (WHIP) and a dial-out; hang-up at the end.

use serde_json::{json, Value};

pub type Error = Box<dyn std::error::Error>;

const TALK: &str = "/ocs/v2.php/apps/spreed/api/v4";

pub struct Api {
    base: String,
    auth: String,
}

/// A room of the benchmark, its user in the call.
pub struct Room {
    http: reqwest::Client,
    token: String,
    phone: i64,
    /// The media session's location, once joined.
    media: Option<String>,
}

impl Api {
    pub fn new(base: &str, token: &str) -> Api {
        Api {
            base: base.trim_end_matches('/').to_string(),
            auth: format!("Bearer {token}"),
        }
    }

    async fn post(&self, http: &reqwest::Client, path: &str, body: Value) -> Result<Value, Error> {
        let response = http
            .post(format!("{}{path}", self.base))
            .header("Authorization", &self.auth)
            .json(&body)
            .send()
            .await?;
        let status = response.status();
        let text = response.text().await?;
        if !status.is_success() {
            return Err(format!("POST {path}: {status}: {text}").into());
        }
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Room `i` with a phone attendee, and the user in its call.
    pub async fn room(&self, i: usize) -> Result<Room, Error> {
        // The cookie jar keeps the room session, as a browser would.
        let http = reqwest::Client::builder().cookie_store(true).build()?;
        let room = self
            .post(
                &http,
                &format!("{TALK}/room"),
                json!({"roomType": 2, "roomName": format!("bench {i}")}),
            )
            .await?;
        let token = room["ocs"]["data"]["token"]
            .as_str()
            .ok_or("room has no token")?
            .to_string();
        let phone = self
            .post(
                &http,
                &format!("{TALK}/room/{token}/participants"),
                json!({"newParticipant": format!("+4930{}", 1_000_000 + i), "source": "phones"}),
            )
            .await?;
        let phone = phone["ocs"]["data"]["attendeeId"]
            .as_i64()
            .ok_or("no phone attendee")?;
        self.post(
            &http,
            &format!("{TALK}/room/{token}/participants/active"),
            json!({}),
        )
        .await?;
        self.post(&http, &format!("{TALK}/call/{token}"), json!({"flags": 3}))
            .await?;
        Ok(Room {
            http,
            token,
            phone,
            media: None,
        })
    }

    /// Joins the room's media with a WebRTC offer; returns the answer.
    pub async fn join_media(&self, room: &mut Room, offer: &str) -> Result<String, Error> {
        let response = room
            .http
            .post(format!("{}/api/v1/rooms/{}/media", self.base, room.token))
            .header("Authorization", &self.auth)
            .header("Content-Type", "application/sdp")
            .body(offer.to_string())
            .send()
            .await?;
        if response.status() != 201 {
            return Err(format!("media join: {}", response.status()).into());
        }
        let media = response
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .ok_or("media join without Location")?
            .to_string();
        room.media = Some(media);
        Ok(response.text().await?)
    }

    /// Dials the room's phone attendee out.
    pub async fn dial_out(&self, room: &Room) -> Result<(), Error> {
        self.post(
            &room.http,
            &format!("{TALK}/call/{}/dialout/{}", room.token, room.phone),
            json!({}),
        )
        .await?;
        Ok(())
    }

    /// Ends the call for everyone and leaves the media session.
    pub async fn hang_up(&self, room: &Room) -> Result<(), Error> {
        room.http
            .delete(format!("{}{TALK}/call/{}", self.base, room.token))
            .header("Authorization", &self.auth)
            .json(&json!({"all": true}))
            .send()
            .await?;
        if let Some(media) = &room.media {
            let url = if media.starts_with("http") {
                media.clone()
            } else {
                format!("{}{media}", self.base)
            };
            room.http
                .delete(url)
                .header("Authorization", &self.auth)
                .send()
                .await?;
        }
        Ok(())
    }
}

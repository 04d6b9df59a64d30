//! The room's event stream as a test reads it.

use std::time::Duration;

use futures_util::StreamExt;
use reqwest::Method;
use serde_json::Value;

use super::Client;

/// How long a test waits for an event that must come, or for a stream that must end.
const DEADLINE: Duration = Duration::from_secs(30);

/// Reads SSE frames and yields each event's JSON.
pub struct EventReader {
    stream:
        std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buffer: String,
}

impl EventReader {
    pub fn new(response: reqwest::Response) -> EventReader {
        EventReader {
            stream: Box::pin(response.bytes_stream()),
            buffer: String::new(),
        }
    }

    /// Opens the room's stream as `client`.
    pub async fn open(client: &Client, token: &str) -> EventReader {
        let response = client
            .request(Method::GET, &format!("/api/v1/rooms/{token}/events"))
            .send()
            .await
            .expect("event stream");
        assert_eq!(response.status(), 200);
        EventReader::new(response)
    }

    /// Opens the user event stream (`/api/v1/users/me/events`) as `client`.
    pub async fn open_user(client: &Client) -> EventReader {
        let response = client
            .request(Method::GET, "/api/v1/users/me/events")
            .send()
            .await
            .expect("user stream");
        assert_eq!(response.status(), 200);
        EventReader::new(response)
    }

    /// The next event of type `kind` (others are skipped), failing the test if none comes.
    pub async fn next_of(&mut self, kind: &str) -> Value {
        loop {
            let event = self.next().await;
            if event["type"] == kind {
                return event;
            }
        }
    }

    /// The next event, failing the test if none comes in time.
    pub async fn next(&mut self) -> Value {
        // One deadline for the event, however many keep-alive comments arrive meanwhile.
        let end = tokio::time::Instant::now() + DEADLINE;
        loop {
            if let Some(event) = self.take_frame() {
                return event;
            }
            let chunk = tokio::time::timeout_at(end, self.stream.next())
                .await
                .expect("an event in time")
                .expect("stream open")
                .expect("chunk");
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }

    /// Every event left until the server ends the stream, failing the test if it does not.
    pub async fn rest(&mut self) -> Vec<Value> {
        tokio::time::timeout(DEADLINE, async {
            while let Some(Ok(chunk)) = self.stream.next().await {
                self.buffer.push_str(&String::from_utf8_lossy(&chunk));
            }
        })
        .await
        .expect("the server ends the stream in time");
        std::iter::from_fn(|| self.take_frame()).collect()
    }

    /// The JSON of the next complete frame with data in the buffer (comments are skipped).
    fn take_frame(&mut self) -> Option<Value> {
        loop {
            let end = self.buffer.find("\n\n")?;
            let frame: String = self.buffer.drain(..end + 2).collect();
            let data: String = frame
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .map(str::trim_start)
                .collect();
            if !data.is_empty() {
                return Some(serde_json::from_str(&data).expect("event data is JSON"));
            }
        }
    }
}

//! Direct calls (`/api/v1/direct-calls`) and the user event stream (`/api/v1/users/me/events`),
//! answering in the seed's `{statusCode, message, ...}` shape.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Bytes;
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::stream::{self, Stream};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::broadcast;

use super::{Auth, Path, St};
use crate::direct::{CallType, DirectError, UserEvent};

/// A refusal: the HTTP status and `{statusCode, message}`.
pub(super) struct Refusal(DirectError);

impl From<DirectError> for Refusal {
    fn from(e: DirectError) -> Refusal {
        Refusal(e)
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.0.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (
            status,
            Json(json!({"statusCode": self.0.status, "message": self.0.message})),
        )
            .into_response()
    }
}

fn body<T: DeserializeOwned>(bytes: &Bytes) -> Result<T, Refusal> {
    let bytes = if bytes.is_empty() { &b"{}"[..] } else { bytes };
    serde_json::from_slice(bytes).map_err(|e| {
        Refusal(DirectError {
            status: 400,
            message: format!("invalid request body: {e}"),
        })
    })
}

fn ok(message: &str, extra: Value) -> Json<Value> {
    let mut answer = json!({"statusCode": 200, "message": message});
    if let (Some(answer), Value::Object(extra)) = (answer.as_object_mut(), extra) {
        answer.extend(extra);
    }
    Json(answer)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct MakeCall {
    to: Vec<String>,
    #[serde(default = "audio")]
    call_type: CallType,
}

fn audio() -> CallType {
    CallType::Audio
}

/// `POST /api/v1/direct-calls`: rings the callees.
pub(super) async fn make(
    state: St,
    Auth(user): Auth,
    bytes: Bytes,
) -> Result<Json<Value>, Refusal> {
    let request: MakeCall = body(&bytes)?;
    let room_id = state.direct.call(&user, &request.to, request.call_type)?;
    Ok(ok(
        "call initiated",
        json!({"callType": request.call_type, "roomId": room_id}),
    ))
}

/// `GET /api/v1/direct-calls/{roomId}`.
pub(super) async fn get(
    state: St,
    Auth(user): Auth,
    Path(room_id): Path<String>,
) -> Result<Json<Value>, Refusal> {
    let view = state.direct.view(&user, &room_id)?;
    Ok(ok(
        "call",
        serde_json::to_value(view).unwrap_or(Value::Null),
    ))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct Answer {
    /// The answering device, so the user's other devices stop ringing.
    #[serde(default)]
    device_id: Option<String>,
}

pub(super) async fn answer(
    state: St,
    Auth(user): Auth,
    Path(room_id): Path<String>,
    bytes: Bytes,
) -> Result<Json<Value>, Refusal> {
    let request: Answer = body(&bytes)?;
    let device = request.device_id.unwrap_or_default();
    state.direct.answer(&user, &room_id, device).await?;
    Ok(ok("call answered", json!({})))
}

pub(super) async fn decline(
    state: St,
    Auth(user): Auth,
    Path(room_id): Path<String>,
) -> Result<Json<Value>, Refusal> {
    state.direct.decline(&user, &room_id).await?;
    Ok(ok("call declined", json!({})))
}

pub(super) async fn end(
    state: St,
    Auth(user): Auth,
    Path(room_id): Path<String>,
) -> Result<Json<Value>, Refusal> {
    state.direct.end(&user, &room_id).await?;
    Ok(ok("call ended", json!({})))
}

/// `GET /api/v1/users/me/events`: what is addressed to the user rather than to a room.
pub(super) async fn user_events(
    state: St,
    Auth(user): Auth,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let receiver = state.direct.users().subscribe(user.id.clone());
    tracing::info!(user = %user.id, "user event stream opened");
    let shutdown = state.shutdown.clone();
    let events = stream::unfold(
        (receiver, shutdown),
        |(mut receiver, mut shutdown)| async move {
            loop {
                let received = tokio::select! {
                    received = receiver.recv() => received,
                    _ = shutdown.wait_for(|stop| *stop) => return None,
                };
                let event = match received {
                    Ok(event) => event,
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        let lagged = Event::default()
                            .event("lagged")
                            .data(format!("{{\"type\":\"lagged\",\"missed\":{missed}}}"));
                        return Some((Ok(lagged), (receiver, shutdown)));
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                };
                let Ok(json) = serde_json::to_string(&*event) else {
                    continue;
                };
                let kind = UserEvent::kind(&event);
                return Some((
                    Ok(Event::default().event(kind).data(json)),
                    (receiver, shutdown),
                ));
            }
        },
    );
    Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

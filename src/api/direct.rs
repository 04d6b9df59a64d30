//! Direct calls (`/api/v1/direct-calls`) and the user event stream (`/api/v1/users/me/events`),
//! answering in the seed's `{statusCode, message, ...}` shape.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::RawQuery;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::stream::{self, Stream};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::broadcast;

use super::{Auth, Path, St};
use crate::auth;
use crate::direct::{CallType, DirectError, UserEvent};

/// How often an open user stream checks that its credentials still work.
const RECHECK: Duration = Duration::from_secs(5);

/// The last page number a call log request may ask for.
const MAX_LOG_PAGE: i64 = 1_000_000;

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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Invite {
    to: Vec<String>,
}

/// `POST /api/v1/direct-calls/{roomId}/invite`: a member of the call rings more users (or
/// dials more numbers) into it.
pub(super) async fn invite(
    state: St,
    Auth(user): Auth,
    Path(room_id): Path<String>,
    bytes: Bytes,
) -> Result<Json<Value>, Refusal> {
    let request: Invite = body(&bytes)?;
    state.direct.invite(&user, &room_id, &request.to).await?;
    Ok(ok("users invited", json!({})))
}

/// `GET /api/v1/direct-calls/logs?page=N`: the user's call log, newest first (20 a page).
pub(super) async fn logs(
    state: St,
    Auth(user): Auth,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, Refusal> {
    let bad = || {
        Refusal(DirectError {
            status: 400,
            message: format!("page: a page number from 1 to {MAX_LOG_PAGE}"),
        })
    };
    let mut page = 1;
    for pair in query.as_deref().unwrap_or_default().split('&') {
        if let Some(value) = pair.strip_prefix("page=") {
            page = value.parse::<i64>().map_err(|_| bad())?;
        }
    }
    if !(1..=MAX_LOG_PAGE).contains(&page) {
        return Err(bad());
    }
    let (entries, pages) = state.direct.call_log(&user, page)?;
    Ok(ok(
        "call logs",
        json!({"page": page, "totalPages": pages, "callLogs": entries}),
    ))
}

/// `GET /api/v1/users/me/events`: what is addressed to the user rather than to a room. Like a
/// room's stream it ends when its credentials stop working (checked every few seconds).
pub(super) async fn user_events(
    state: St,
    Auth(user): Auth,
    headers: HeaderMap,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let receiver = state.direct.users().subscribe(user.id.clone());
    tracing::info!(user = %user.id, "user event stream opened");
    let shutdown = state.shutdown.clone();

    let mut recheck = tokio::time::interval_at(tokio::time::Instant::now() + RECHECK, RECHECK);
    recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let still_valid = move || {
        auth::authenticate_headers(state.rooms.store(), &headers, true)
            .is_ok_and(|u| u.id == user.id)
    };
    let events = stream::unfold(
        (receiver, shutdown, recheck, still_valid),
        |(mut receiver, mut shutdown, mut recheck, still_valid)| async move {
            loop {
                let received = tokio::select! {
                    received = receiver.recv() => received,
                    _ = recheck.tick() => {
                        if still_valid() {
                            continue;
                        }
                        tracing::info!("user event stream ended: credentials no longer valid");
                        return None;
                    }
                    _ = shutdown.wait_for(|stop| *stop) => return None,
                };
                let event = match received {
                    Ok(event) => event,
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        let lagged = Event::default()
                            .event("lagged")
                            .data(format!("{{\"type\":\"lagged\",\"missed\":{missed}}}"));
                        return Some((Ok(lagged), (receiver, shutdown, recheck, still_valid)));
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                };
                let Ok(json) = serde_json::to_string(&*event) else {
                    continue;
                };
                let kind = UserEvent::kind(&event);
                return Some((
                    Ok(Event::default().event(kind).data(json)),
                    (receiver, shutdown, recheck, still_valid),
                ));
            }
        },
    );
    Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

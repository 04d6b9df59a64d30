//! `GET /api/v1/rooms/{token}/events`: the room's events as Server-Sent Events.
//!
//! A stream lives only as long as its reader may read the room. Removal from the room arrives in
//! the room's own event order (`access-revoked`, then the stream ends), so no later event reaches
//! the removed user. What the event order cannot carry (a revoked token, a user removed by the
//! command line in another process, events missed while lagging) is caught by checking the
//! reader's credentials and membership again every [`RECHECK`] and after every lag.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, HeaderMap};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::stream::{self, Stream};
use tokio::sync::{broadcast, watch};

use serde::Deserialize;

use super::ocs::{OcsError, Params};
use super::{Auth, Path, SharedState, St};
use crate::auth::{self, AuthUser};
use crate::events::{Published, RoomEvent};

/// How often an open stream checks that its reader may still read the room.
const RECHECK: Duration = Duration::from_secs(5);

/// Query parameters of the stream.
#[derive(Deserialize)]
pub(super) struct StreamParams {
    /// Whether to receive `levels` events (several a second while a room mixes).
    #[serde(default)]
    levels: bool,
}

pub(super) async fn stream(
    state: St,
    Auth(user): Auth,
    Path(token): Path<String>,
    headers: HeaderMap,
    Params(params): Params<StreamParams>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, OcsError> {
    let room_id = state.rooms.event_room(&user, &token)?;
    let receiver = state.events.subscribe(room_id);
    tracing::info!(%token, user = %user.id, "event stream opened");
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let mut recheck = tokio::time::interval_at(tokio::time::Instant::now() + RECHECK, RECHECK);
    recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let reader = Reader {
        state: state.0.clone(),
        user,
        authorization,
        token,
        room_id,
        receiver,
        recheck,
        shutdown: state.shutdown.clone(),
        levels: params.levels,
        done: false,
    };
    let events = stream::unfold(reader, |mut reader| async move {
        let event = reader.next().await?;
        Some((Ok(event), reader))
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

enum Wake {
    Received(Result<Arc<Published>, broadcast::error::RecvError>),
    Recheck,
}

/// One open stream: the room's channel and what is needed to check the reader again.
struct Reader {
    state: SharedState,
    user: AuthUser,
    authorization: Option<String>,
    token: String,
    room_id: i64,
    receiver: broadcast::Receiver<Arc<Published>>,
    recheck: tokio::time::Interval,
    shutdown: watch::Receiver<bool>,
    /// Whether this reader asked for `levels` events.
    levels: bool,
    /// Set once the last event (`access-revoked`) is out: the next poll ends the stream.
    done: bool,
}

impl Reader {
    /// The next event to send, or `None` to end the stream.
    async fn next(&mut self) -> Option<Event> {
        if self.done {
            return None;
        }
        loop {
            let wake = tokio::select! {
                received = self.receiver.recv() => Wake::Received(received),
                _ = self.recheck.tick() => Wake::Recheck,
                // Ends with the service, so graceful shutdown does not wait on the stream.
                _ = self.shutdown.wait_for(|stop| *stop) => return None,
            };
            match wake {
                Wake::Received(Ok(published)) => {
                    if let Some(event) = self.deliver(&published) {
                        return Some(event);
                    }
                }
                Wake::Received(Err(broadcast::error::RecvError::Lagged(missed))) => {
                    // What was missed may have been this reader's removal.
                    if !self.still_allowed() {
                        return self.end("access lost while the stream lagged");
                    }
                    return Some(
                        Event::default()
                            .event("lagged")
                            .data(format!("{{\"type\":\"lagged\",\"missed\":{missed}}}")),
                    );
                }
                Wake::Received(Err(broadcast::error::RecvError::Closed)) => return None,
                Wake::Recheck => {
                    if !self.still_allowed() {
                        return self.end("credentials or membership no longer valid");
                    }
                }
            }
        }
    }

    /// The SSE form of an event for this reader, if it is for them.
    fn deliver(&mut self, published: &Published) -> Option<Event> {
        if published
            .target_user
            .as_ref()
            .is_some_and(|target| *target != self.user.id)
        {
            return None;
        }
        if matches!(published.event, RoomEvent::Levels { .. }) && !self.levels {
            return None;
        }
        if let RoomEvent::AccessRevoked { reason } = &published.event {
            tracing::info!(token = %self.token, user = %self.user.id, reason, "event stream ended: access revoked");
            self.done = true;
        }
        let json = serde_json::to_string(&published.event).ok()?;
        Some(
            Event::default()
                .id(published.seq.to_string())
                .event(published.event.kind())
                .data(json),
        )
    }

    /// Whether the stream's credentials still name the same user, who is still in the room.
    fn still_allowed(&self) -> bool {
        let store = self.state.rooms.store();
        let same_user = auth::authenticate(store, self.authorization.as_deref())
            .is_ok_and(|user| user.id == self.user.id);
        same_user
            && self
                .state
                .rooms
                .event_room(&self.user, &self.token)
                .is_ok_and(|room_id| room_id == self.room_id)
    }

    fn end(&self, why: &'static str) -> Option<Event> {
        tracing::info!(token = %self.token, user = %self.user.id, why, "event stream ended");
        None
    }
}

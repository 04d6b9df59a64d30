//! `GET /api/v1/rooms/{token}/events`: the room's events as Server-Sent Events.

use std::convert::Infallible;
use std::time::Duration;

use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::stream::{Stream, StreamExt};
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_stream::wrappers::{BroadcastStream, WatchStream};

use super::ocs::OcsError;
use super::{Auth, Path, St};

pub async fn stream(
    state: St,
    Auth(user): Auth,
    Path(token): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, OcsError> {
    let room_id = state.rooms.event_room(&user, &token)?;
    let receiver = state.events.subscribe(room_id);
    tracing::info!(%token, user = %user.id, "event stream opened");
    let user_id = user.id;
    let events = BroadcastStream::new(receiver).filter_map(move |item| {
        let event = match item {
            Ok(published) => match &published.target_user {
                Some(target) if *target != user_id => None,
                _ => serde_json::to_string(&published.event).ok().map(|json| {
                    Event::default()
                        .id(published.seq.to_string())
                        .event(published.event.kind())
                        .data(json)
                }),
            },
            Err(BroadcastStreamRecvError::Lagged(missed)) => Some(
                Event::default()
                    .event("lagged")
                    .data(format!("{{\"type\":\"lagged\",\"missed\":{missed}}}")),
            ),
        };
        std::future::ready(event.map(Ok))
    });
    // End the stream when the service shuts down, so graceful shutdown does not wait on it.
    let shutdown =
        WatchStream::new(state.shutdown.clone()).filter(|stop| std::future::ready(*stop));
    let events = events.take_until(Box::pin(shutdown.into_future()));
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

//! Operations endpoints: health, Prometheus metrics, and the answer for unknown paths.

use axum::http::{header, StatusCode, Uri};
use axum::response::IntoResponse;
use serde_json::json;

use super::ocs::OcsError;
use super::St;

pub(super) async fn health(state: St) -> impl IntoResponse {
    match state.rooms.store().write(|tx| tx.room_count()) {
        Ok(_) => (StatusCode::OK, axum::Json(json!({"status": "ok"}))),
        Err(e) => {
            tracing::error!(error = %e, "health check: store unavailable");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(json!({"status": "unavailable", "reason": "store"})),
            )
        }
    }
}

pub(super) async fn metrics(state: St) -> impl IntoResponse {
    // Gauges are derived from the store when scraped, so they can never drift from it.
    if let Ok((rooms, in_call)) = state.rooms.store().write(|tx| {
        Ok::<_, crate::store::StoreError>((tx.room_count()?, tx.participants_in_call()?))
    }) {
        metrics::gauge!("dialbridge_rooms").set(rooms as f64);
        metrics::gauge!("dialbridge_participants_in_call").set(in_call as f64);
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}

/// Unknown paths answer in their family's error shape: call links' own under `/api/calls`.
pub(super) async fn not_found(uri: Uri) -> axum::response::Response {
    let message = format!("no such endpoint: {}", uri.path());
    if uri.path() == "/api/calls" || uri.path().starts_with("/api/calls/") {
        return super::links::not_found(message).into_response();
    }
    OcsError::new(StatusCode::NOT_FOUND, "path", message).into_response()
}

//! The HTTP API: the Talk-compatible family under `/ocs/v2.php/apps/spreed/api/v4` and dialbridge's own
//! under `/api/v1`, plus `/healthz` and `/metrics`; and the web client at `/` with its SDK at `/sdk/`.

mod call;
mod dialin;
mod direct;
mod events;
mod links;
mod media;
mod ocs;
mod ops;
mod room;
pub mod server;
mod trunks;
mod voice;
mod web;

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{ConnectInfo, FromRequestParts, MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::watch;

pub use ocs::OcsError;

use crate::auth::{self, AuthUser};
use crate::calls::registration::TrunkRegistrations;
use crate::events::EventBus;
use crate::ratelimit::RateLimiter;
use crate::room::Rooms;
use crate::runtime::MediaHandle;
use crate::sync::lock;

pub const TALK_BASE: &str = "/ocs/v2.php/apps/spreed/api/v4";

pub struct AppState {
    pub rooms: Rooms,
    pub events: Arc<EventBus>,
    pub metrics: PrometheusHandle,
    /// The media engine (WebRTC legs and room mixers).
    pub media: MediaHandle,
    /// Direct calls between users, and the users' event streams.
    pub direct: crate::direct::DirectCalls,
    /// Voice calls that ring users' devices, and push registrations.
    pub voice: crate::voice::VoiceCalls,
    /// The trunks and the state of their registrations.
    pub trunks: Arc<TrunkRegistrations>,
    /// Base URL for `Location` headers, without a trailing slash.
    pub public_url: String,
    /// Call links (`/api/calls`).
    pub links: crate::links::CallLinks,
    /// Flips to true when the service shuts down, so long-lived streams end.
    pub shutdown: watch::Receiver<bool>,
    /// Failed authentications per source: when a source runs out, its requests get 429.
    pub auth_failures: Mutex<RateLimiter>,
}

impl AppState {
    /// The limiter of failed authentications: `per_minute` per source, as a burst and a rate.
    pub fn auth_failure_limiter(per_minute: u32) -> Mutex<RateLimiter> {
        let per_minute = f64::from(per_minute);
        Mutex::new(RateLimiter::new(per_minute / 60.0, per_minute))
    }
}

pub type SharedState = Arc<AppState>;

pub fn router(state: SharedState) -> Router {
    let talk = Router::new()
        .route("/room", post(room::create).get(room::list))
        .route("/room/{token}", get(room::get))
        .route(
            "/room/{token}/participants",
            post(room::add_participant).get(room::participants),
        )
        .route(
            "/room/{token}/attendees",
            axum::routing::delete(room::remove_attendee),
        )
        .route(
            "/room/{token}/moderators",
            post(room::promote).delete(room::demote),
        )
        .route(
            "/room/{token}/participants/active",
            post(room::join).delete(room::leave),
        )
        .route("/room/{token}/read-only", put(room::read_only))
        .route("/room/{token}/webinar/lobby", put(room::lobby))
        .route(
            "/room/{token}/recording-consent",
            put(room::recording_consent),
        )
        .route(
            "/room/{token}/permissions/default",
            put(room::default_permissions),
        )
        .route(
            "/room/{token}/attendees/permissions",
            put(room::attendee_permissions),
        )
        .route(
            "/call/{token}",
            get(call::list)
                .post(call::join)
                .put(call::update)
                .delete(call::leave),
        )
        .route("/call/{token}/ring/{attendee_id}", post(call::ring))
        .route("/call/{token}/dialout/{attendee_id}", post(call::dialout));
    let own = Router::new()
        .route("/trunks", get(trunks::list))
        .route("/rooms/{token}/events", get(events::stream))
        .route("/rooms/{token}/calls", get(call::records))
        .route(
            "/rooms/{token}/phones/{call_id}/dtmf",
            post(call::phone_dtmf),
        )
        .route(
            "/rooms/{token}/phones/{call_id}/mute",
            post(call::phone_mute),
        )
        .route(
            "/rooms/{token}/phones/{call_id}/hangup",
            post(call::phone_hangup),
        )
        .route(
            "/rooms/{token}/phones/{call_id}/transfer",
            post(call::phone_transfer),
        )
        .route("/rooms/{token}/dialin", put(dialin::set))
        .route("/direct-calls", post(direct::make))
        .route("/direct-calls/logs", get(direct::logs))
        .route("/direct-calls/{room_id}", get(direct::get))
        .route("/direct-calls/{room_id}/answer", post(direct::answer))
        .route("/direct-calls/{room_id}/decline", post(direct::decline))
        .route("/direct-calls/{room_id}/end", post(direct::end))
        .route("/direct-calls/{room_id}/invite", post(direct::invite))
        .route("/users/me/events", get(direct::user_events))
        .route("/voice.call", post(voice::call))
        .route("/voice.call.info", get(voice::info))
        .route("/voice.call.accept", post(voice::accept))
        .route("/voice.call.decline", post(voice::decline))
        .route("/voice.call.cancel", post(voice::cancel))
        .route("/voice.call.end", post(voice::end))
        .route(
            "/push.token",
            post(voice::register).delete(voice::unregister),
        )
        .route("/push.token/activate", post(voice::activate))
        .route("/push.vapid", get(voice::vapid))
        .route("/rooms/{token}/media", post(media::join))
        .route(
            "/rooms/{token}/media/{id}",
            axum::routing::delete(media::leave),
        );
    Router::new()
        .nest(TALK_BASE, talk)
        .route("/api/calls", post(links::create).get(links::list))
        .route(
            "/api/calls/{id}",
            get(links::get)
                .delete(links::delete)
                .fallback(links::other_method),
        )
        .route("/api/calls/{id}/status", get(links::status))
        .route("/api/calls/{id}/end", post(links::end))
        .route("/api/calls/{id}/guests", post(links::guest))
        .route("/api/calls/{id}/recordings", get(links::recordings))
        .route(
            "/api/calls/{id}/recordings/{recording}",
            get(links::recording),
        )
        .nest("/api/v1", own)
        .route("/healthz", get(ops::health))
        .route("/metrics", get(ops::metrics))
        .merge(web::routes())
        .fallback(ops::not_found)
        .layer(middleware::from_fn(track_requests))
        .with_state(state)
}

/// Counts requests by route and status, and logs each one.
async fn track_requests(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let response = next.run(request).await;
    let status = response.status().as_u16();
    metrics::counter!("dialbridge_http_requests_total",
        "route" => route.clone(), "method" => method.to_string(), "status" => status.to_string())
    .increment(1);
    tracing::debug!(%method, %route, status, elapsed_us = started.elapsed().as_micros() as u64, "http");
    response
}

/// Path parameters; one that cannot be decoded (bad percent-encoding) names nothing: a 404 OCS error.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(OcsError))]
pub struct Path<T>(pub T);

/// The authenticated caller; rejects with a 401 OCS error, or 429 for a source that failed to
/// authenticate too often (it is refused before its credentials are looked at).
pub struct Auth(pub AuthUser);

/// A source out of failed-login allowance: how long until it may try again. Checked before any
/// credentials are looked at, so a guesser learns nothing while refused.
fn auth_backoff(parts: &Parts, state: &SharedState) -> Result<Option<IpAddr>, u64> {
    let source = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    if let Some(ip) = source {
        if let Err(wait) = lock(&state.auth_failures).check(ip, Instant::now()) {
            metrics::counter!("dialbridge_http_auth_refused_total").increment(1);
            return Err(wait.as_secs().max(1));
        }
    }
    Ok(source)
}

/// Counts a failed authentication against its source (sending no credentials is not a guess).
fn auth_failed(state: &SharedState, source: Option<IpAddr>, error: &auth::AuthError) {
    if *error == auth::AuthError::Missing {
        return;
    }
    metrics::counter!("dialbridge_http_auth_failures_total").increment(1);
    if let Some(ip) = source {
        let _ = lock(&state.auth_failures).take(ip, Instant::now());
        tracing::info!(source = %ip, "failed authentication");
    }
}

impl FromRequestParts<SharedState> for Auth {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &SharedState) -> Result<Self, Response> {
        let source = auth_backoff(parts, state).map_err(|retry_after| {
            let refusal = OcsError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "auth",
                "too many failed authentications from this address; try again later",
            );
            ([(header::RETRY_AFTER, retry_after.to_string())], refusal).into_response()
        })?;
        match auth::authenticate_headers(state.rooms.store(), &parts.headers, under_own_api(parts))
        {
            Ok(user) => Ok(Auth(user)),
            Err(auth::AuthError::Store) => Err(OcsError::internal().into_response()),
            Err(e) => {
                auth_failed(state, source, &e);
                Err(OcsError::unauthorized(e.to_string()).into_response())
            }
        }
    }
}

/// Whether the request is for the `/api/v1` family (nested routers see their path stripped).
pub fn under_own_api(parts: &Parts) -> bool {
    parts
        .extensions
        .get::<axum::extract::OriginalUri>()
        .map_or(parts.uri.path(), |u| u.path())
        .starts_with("/api/v1/")
}

/// Name of the cookie carrying the caller's session in one room.
pub fn session_cookie_name(token: &str) -> String {
    format!("dialbridge_session_{token}")
}

/// The session id the client keeps for this room, if it sent one.
pub fn session_from_cookies(headers: &HeaderMap, token: &str) -> Option<String> {
    let name = session_cookie_name(token);
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// Shared state handle for handlers.
pub type St = State<SharedState>;

//! WebRTC join, WHIP-style (RFC 9725): `POST /api/v1/rooms/{token}/media` with an SDP offer answers
//! `201 Created` with the SDP answer and the media session's `Location`; `DELETE` there ends it.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::ocs::{read_body, Ocs, OcsError};
use super::{session_from_cookies, Auth, Path, St};
use crate::runtime::{MediaError, MediaId, VideoAnswer};

/// Largest offer read; browser offers are a few kilobytes.
const MAX_OFFER: usize = 64 * 1024;

const SDP: &str = "application/sdp";

/// Response header of a join: what became of the offered video.
const VIDEO_HEADER: &str = "x-dialbridge-video";

/// The `X-Dialbridge-Video` value: `sending` (the camera is forwarded to the room), `none` (no
/// camera offered), or `refused: ...` saying why the join is audio-only.
fn video_header(video: VideoAnswer) -> String {
    match video {
        VideoAnswer::Sending => "sending".into(),
        VideoAnswer::None => "none".into(),
        VideoAnswer::RoomFull { max: 0 } => "refused: video is turned off on this gateway".into(),
        VideoAnswer::RoomFull { max } => {
            let cameras = if max == 1 { "camera" } else { "cameras" };
            format!("refused: the call has its maximum of {max} {cameras}; this join is audio-only")
        }
    }
}

impl From<MediaError> for OcsError {
    fn from(e: MediaError) -> OcsError {
        match e {
            MediaError::Offer(reason) => OcsError::bad_request("sdp", reason),
            MediaError::Unavailable => OcsError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "media",
                "the media engine is not running",
            ),
            MediaError::Internal(reason) => {
                tracing::error!(%reason, "media request failed");
                OcsError::internal()
            }
        }
    }
}

fn is_sdp(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case(SDP))
}

pub(super) async fn join(
    state: St,
    Auth(user): Auth,
    Path(token): Path<String>,
    request: Request,
) -> Result<Response, OcsError> {
    let headers = request.headers().clone();
    if !is_sdp(&headers) {
        return Err(OcsError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "content-type",
            "send the SDP offer with Content-Type: application/sdp",
        ));
    }
    let cookie = session_from_cookies(&headers, &token);
    let who = state
        .rooms
        .media_session(&user, &token, cookie.as_deref())?;
    let body = read_body(request.into_body(), MAX_OFFER).await?;
    let offer = String::from_utf8(body.to_vec())
        .map_err(|_| OcsError::bad_request("sdp", "the offer is not UTF-8 text"))?;
    if offer.trim().is_empty() {
        return Err(OcsError::bad_request(
            "sdp",
            "the request body holds no offer",
        ));
    }
    let (id, answer, video) = state.media.join(who.clone(), offer).await?;
    // A leave that committed while the leg was being set up has already told the engine, before
    // the leg existed; look again so such a leg does not outlive its session's call.
    match state.rooms.media_session(&user, &token, cookie.as_deref()) {
        Ok(current) if current.session_id == who.session_id => {}
        other => {
            state.media.end_sessions(who.room_id, vec![who.session_id]);
            return Err(match other {
                Err(e) => e.into(),
                Ok(_) => OcsError::new(
                    StatusCode::NOT_FOUND,
                    "session",
                    "the session left the conversation while joining",
                ),
            });
        }
    }
    tracing::info!(%token, user = %user.id, media = %id, ?video, "WebRTC media joined");
    let location = format!("{}/api/v1/rooms/{token}/media/{id}", state.public_url);
    Ok((
        StatusCode::CREATED,
        [
            (header::LOCATION, location),
            (header::CONTENT_TYPE, SDP.to_string()),
            (
                header::HeaderName::from_static(VIDEO_HEADER),
                video_header(video),
            ),
        ],
        Body::from(answer),
    )
        .into_response())
}

pub(super) async fn leave(
    state: St,
    Auth(user): Auth,
    Path((token, id)): Path<(String, String)>,
) -> Result<Ocs<Value>, OcsError> {
    let (room_id, sessions) = state.rooms.own_sessions(&user, &token)?;
    let unknown = || OcsError::new(StatusCode::NOT_FOUND, "media", "no such media session");
    let id: MediaId = id.parse().map_err(|_| unknown())?;
    if !state.media.leave(id, room_id, sessions).await? {
        return Err(unknown());
    }
    tracing::info!(%token, user = %user.id, media = %id, "WebRTC media ended");
    Ok(Ocs::ok(json!([])))
}

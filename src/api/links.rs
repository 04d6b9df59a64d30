//! Call links (`/api/calls`, seed 003): a project's links, their status, and guest passes.
//!
//! This family answers as the seed's product does: plain JSON objects, and errors as
//! `{"error": word, "message": text}` (with `field` when one field is at fault), not in the
//! OCS envelope of the Talk family.

use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::ocs::{form_urlencoded_pairs, read_body};
use super::{auth_backoff, auth_failed, SharedState, St};
use crate::auth::AuthError;
use crate::links::when::{iso, now_ms, parse_date, parse_date_time, DAY_MS};
use crate::links::{
    CallPage, CallView, GuestView, LinkError, ListQuery, NewCall, RecordingView, StatusView,
};
use crate::store::links::ProjectRow;

/// Largest request body read.
const MAX_BODY: usize = 16 * 1024;
pub(super) const MAX_PAGE_SIZE: i64 = 100;
const DEFAULT_PAGE_SIZE: i64 = 10;

/// A refusal in this family's shape.
pub(super) struct ApiError(LinkError, Option<String>);

impl From<LinkError> for ApiError {
    fn from(e: LinkError) -> ApiError {
        ApiError(e, None)
    }
}

impl ApiError {
    fn field(status: u16, error: &'static str, field: &str, message: String) -> ApiError {
        ApiError(
            LinkError::new(status, error, message),
            Some(field.to_string()),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let ApiError(e, field) = self;
        let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        tracing::info!(status = e.status, error = e.error, message = %e.message, "call link request refused");
        let mut body = json!({"error": e.error, "message": e.message});
        if let (Some(field), Some(map)) = (field, body.as_object_mut()) {
            map.insert("field".into(), Value::String(field));
        }
        let mut response = (status, Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer realm=\"dialbridge\""),
            );
        }
        response
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// Another method on `/api/calls/{id}`: 405, unless the "id" is one of a call's sub-resources,
/// which is a path whose call id went missing (`/api/calls//end` read as `/api/calls/end`).
pub(super) async fn other_method(LinkId(id): LinkId) -> Response {
    if ["status", "end", "guests", "recordings"].contains(&id.as_str()) {
        return not_found(format!("no call id before `{id}`")).into_response();
    }
    (
        StatusCode::METHOD_NOT_ALLOWED,
        [(header::ALLOW, "GET,DELETE")],
    )
        .into_response()
}

/// A path under `/api/calls` that names no endpoint.
pub(super) fn not_found(message: String) -> ApiError {
    LinkError::new(404, "not_found", message).into()
}

/// The project whose API token the request carries; 401 otherwise (429 for a source that
/// failed too often, as everywhere).
pub(super) struct Project(ProjectRow);

impl FromRequestParts<SharedState> for Project {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &SharedState) -> Result<Self, Response> {
        let source = auth_backoff(parts, state).map_err(|retry_after| {
            let refusal = ApiError::from(LinkError::new(
                429,
                "too_many_requests",
                "too many failed authentications from this address; try again later",
            ));
            ([(header::RETRY_AFTER, retry_after.to_string())], refusal).into_response()
        })?;
        let header = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        match state.links.project_of(header) {
            Ok(project) => Ok(Project(project)),
            Err(AuthError::Store) => Err(ApiError::from(LinkError::internal()).into_response()),
            Err(e) => {
                auth_failed(state, source, &e);
                let message = match e {
                    AuthError::Missing => {
                        "authentication required: send Authorization: Bearer API_TOKEN"
                    }
                    _ => "invalid API token",
                };
                Err(ApiError::from(LinkError::new(401, "unauthorized", message)).into_response())
            }
        }
    }
}

/// The project of the request's API token, when it carries one (checked as [`Project`] is).
pub(super) struct MaybeProject(Option<ProjectRow>);

impl FromRequestParts<SharedState> for MaybeProject {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &SharedState) -> Result<Self, Response> {
        if !parts.headers.contains_key(header::AUTHORIZATION) {
            return Ok(MaybeProject(None));
        }
        Project::from_request_parts(parts, state)
            .await
            .map(|p| MaybeProject(Some(p.0)))
    }
}

/// A link id from the path; one that cannot be decoded names no link.
pub(super) struct LinkId(String);

impl<S: Send + Sync> FromRequestParts<S> for LinkId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<String>::from_request_parts(parts, state)
            .await
            .map(|p| LinkId(p.0))
            .map_err(|_| LinkError::call_not_found().into())
    }
}

/// A link id and one of its recordings' ids from the path.
pub(super) struct RecordingId(String, String);

impl<S: Send + Sync> FromRequestParts<S> for RecordingId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<(String, String)>::from_request_parts(parts, state)
            .await
            .map(|p| RecordingId(p.0 .0, p.0 .1))
            .map_err(|_| LinkError::call_not_found().into())
    }
}

/// A JSON object body (an empty body is `{}`), its fields as `T` says: a field of the wrong type
/// or an unknown one is a 400 naming it.
async fn json_body<T: DeserializeOwned>(request: Request) -> ApiResult<T> {
    let body = read_body(request.into_body(), MAX_BODY)
        .await
        .map_err(|e| {
            ApiError(
                LinkError::new(e.status.as_u16(), "invalid_body", e.message),
                None,
            )
        })?;
    let value: Value = if body.iter().all(u8::is_ascii_whitespace) {
        Value::Object(Map::new())
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError(
                LinkError::new(400, "invalid_json", format!("malformed JSON body: {e}")),
                None,
            )
        })?
    };
    if !value.is_object() {
        return Err(ApiError(
            LinkError::new(400, "invalid_json", "the JSON body must be an object"),
            None,
        ));
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let mut field = e.path().to_string();
        let inner = e.into_inner().to_string();
        // A missing field is reported at the root; name it instead.
        if field == "." {
            if let Some(name) = inner
                .strip_prefix("missing field `")
                .and_then(|rest| rest.split('`').next())
            {
                field = name.to_string();
            }
        }
        ApiError::field(
            400,
            "invalid_field",
            &field,
            format!("field `{field}`: {inner}"),
        )
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct CreateBody {
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    expires_at: Option<String>,
    #[serde(default)]
    recording: Option<bool>,
}

pub(super) async fn create(
    state: St,
    Project(project): Project,
    request: Request,
) -> ApiResult<(StatusCode, Json<CallView>)> {
    let body: CreateBody = json_body(request).await?;
    if let Some(title) = &body.title {
        if title.chars().count() > crate::links::MAX_TITLE {
            return Err(ApiError::field(
                400,
                "invalid_field",
                "title",
                format!(
                    "field `title`: at most {} characters",
                    crate::links::MAX_TITLE
                ),
            ));
        }
    }
    let expires_ms = match &body.expires_at {
        None => None,
        Some(text) => Some(parse_date_time(text).ok_or_else(|| {
            ApiError::field(
                400,
                "invalid_field",
                "expiresAt",
                format!("field `expiresAt`: `{text}` is not an ISO 8601 date and time with an offset, like 2025-01-29T11:26:01-03:00"),
            )
        })?),
    };
    if expires_ms.is_some_and(|at| at <= now_ms()) {
        return Err(ApiError::field(
            422,
            "invalid_expires_at",
            "expiresAt",
            format!(
                "field `expiresAt`: must be later than now ({})",
                iso(now_ms())
            ),
        ));
    }
    let view = state.links.create(
        &project,
        NewCall {
            title: body.title,
            expires_ms,
            recording: body.recording,
        },
    )?;
    Ok((StatusCode::CREATED, Json(view)))
}

/// `startDate` and `endDate` are days (`YYYY-MM-DD`, the whole day counts) or ISO 8601 times.
fn query_time(name: &str, text: &str, end: bool) -> ApiResult<i64> {
    if let Some(day) = parse_date(text) {
        return Ok(if end { day + DAY_MS } else { day });
    }
    parse_date_time(text).ok_or_else(|| {
        ApiError::field(
            400,
            "invalid_parameter",
            name,
            format!("parameter `{name}`: `{text}` is not a date like 2025-01-29"),
        )
    })
}

fn query_count(name: &str, text: &str, max: i64) -> ApiResult<i64> {
    text.parse::<i64>()
        .ok()
        .filter(|n| (1..=max).contains(n))
        .ok_or_else(|| {
            ApiError::field(
                400,
                "invalid_parameter",
                name,
                format!("parameter `{name}`: must be a whole number from 1 to {max}"),
            )
        })
}

pub(super) async fn list(
    state: St,
    Project(project): Project,
    uri: axum::http::Uri,
) -> ApiResult<Json<CallPage>> {
    let mut q = ListQuery {
        from_ms: i64::MIN,
        to_ms: i64::MAX,
        page: 1,
        limit: DEFAULT_PAGE_SIZE,
    };
    let pairs = uri
        .query()
        .map(|q| form_urlencoded_pairs(q.as_bytes()))
        .unwrap_or_default();
    for (key, value) in &pairs {
        match key.as_str() {
            "startDate" => q.from_ms = query_time(key, value, false)?,
            "endDate" => q.to_ms = query_time(key, value, true)?,
            "page" => q.page = query_count(key, value, i64::from(i32::MAX))?,
            "limit" => q.limit = query_count(key, value, MAX_PAGE_SIZE)?,
            // Unknown parameters are ignored, as query strings carry others' (cache busters).
            _ => {}
        }
    }
    Ok(Json(state.links.list(&project, &q)?))
}

pub(super) async fn get(
    state: St,
    Project(project): Project,
    LinkId(id): LinkId,
) -> ApiResult<Json<CallView>> {
    Ok(Json(state.links.get(&project, &id)?))
}

pub(super) async fn status(
    state: St,
    Project(project): Project,
    LinkId(id): LinkId,
) -> ApiResult<Json<StatusView>> {
    Ok(Json(state.links.status(&project, &id)?))
}

pub(super) async fn delete(
    state: St,
    Project(project): Project,
    LinkId(id): LinkId,
) -> ApiResult<Json<CallView>> {
    Ok(Json(state.links.delete(&project, &id)?))
}

pub(super) async fn end(
    state: St,
    Project(project): Project,
    LinkId(id): LinkId,
) -> ApiResult<Json<CallView>> {
    Ok(Json(state.links.end(&project, &id)?))
}

/// `{data: [...]}`: the call's finished recordings.
#[derive(serde::Serialize)]
pub(super) struct Recordings {
    data: Vec<RecordingView>,
}

pub(super) async fn recordings(
    state: St,
    Project(project): Project,
    LinkId(id): LinkId,
) -> ApiResult<Json<Recordings>> {
    Ok(Json(Recordings {
        data: state.links.recordings(&project, &id)?,
    }))
}

/// One recording, as `audio/ogg`.
pub(super) async fn recording(
    state: St,
    Project(project): Project,
    RecordingId(id, recording): RecordingId,
) -> Result<Response, ApiError> {
    let path = state.links.recording_file(&project, &id, &recording)?;
    match tokio::fs::read(&path).await {
        Ok(bytes) => Ok(([(header::CONTENT_TYPE, "audio/ogg")], bytes).into_response()),
        Err(e) => {
            tracing::error!(path = %path.display(), error = %e, "recording file unreadable");
            Err(LinkError::new(404, "recording_not_found", "the recording's file is gone").into())
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GuestBody {
    name: String,
    #[serde(default)]
    moderator: Option<bool>,
}

/// A guest pass: open to anyone with the link; a project token (optional) may ask for a moderator.
pub(super) async fn guest(
    state: St,
    MaybeProject(project): MaybeProject,
    LinkId(id): LinkId,
    request: Request,
) -> ApiResult<(StatusCode, Json<GuestView>)> {
    let body: GuestBody = json_body(request).await?;
    let moderator = body.moderator.unwrap_or(false);
    let view = state
        .links
        .add_guest(&id, &body.name, moderator, project.as_ref())
        .map_err(|e| {
            if e.error == "invalid_name" {
                ApiError(e, Some("name".into()))
            } else {
                e.into()
            }
        })?;
    Ok((StatusCode::CREATED, Json(view)))
}

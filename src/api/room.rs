//! Rooms, attendees, sessions and room settings (Talk-compatible).

use axum::http::{header, HeaderMap};
use serde::Deserialize;
use serde_json::{json, Value};

use super::ocs::{Ocs, OcsError, Params};
use super::{session_cookie_name, session_from_cookies, Auth, Path, St};
use crate::room::{NewParticipant, ParticipantView, RoomView};

type ApiResult<T> = Result<Ocs<T>, OcsError>;

fn required<T>(value: Option<T>, name: &'static str) -> Result<T, OcsError> {
    value.ok_or_else(|| {
        OcsError::bad_request("parameter", format!("parameter `{name}` is required"))
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct CreateRoom {
    room_type: Option<i64>,
    room_name: Option<String>,
}

pub(super) async fn create(
    state: St,
    Auth(user): Auth,
    Params(p): Params<CreateRoom>,
) -> ApiResult<RoomView> {
    let room_type = required(p.room_type, "roomType")?;
    let name = required(p.room_name, "roomName")?;
    Ok(Ocs::created(
        state.rooms.create_room(&user, room_type, &name)?,
    ))
}

pub(super) async fn list(state: St, Auth(user): Auth) -> ApiResult<Vec<RoomView>> {
    Ok(Ocs::ok(state.rooms.rooms(&user)?))
}

pub(super) async fn get(
    state: St,
    Auth(user): Auth,
    Path(token): Path<String>,
    headers: HeaderMap,
) -> ApiResult<RoomView> {
    let cookie = session_from_cookies(&headers, &token);
    Ok(Ocs::ok(state.rooms.room(
        &user,
        &token,
        cookie.as_deref(),
    )?))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct AddParticipant {
    new_participant: Option<String>,
    source: Option<String>,
}

pub(super) async fn add_participant(
    state: St,
    Auth(user): Auth,
    Path(token): Path<String>,
    Params(p): Params<AddParticipant>,
) -> ApiResult<ParticipantView> {
    let value = required(p.new_participant, "newParticipant")?;
    let new = match p.source.as_deref().unwrap_or("users") {
        "users" => NewParticipant::User(value),
        "phones" => NewParticipant::Phone(
            value
                .parse()
                .map_err(|e: String| OcsError::bad_request("number", e))?,
        ),
        other => {
            return Err(OcsError::bad_request(
                "source",
                format!("source must be `users` or `phones`, not `{other}`"),
            ))
        }
    };
    Ok(Ocs::ok(state.rooms.add_participant(&user, &token, new)?))
}

pub(super) async fn participants(
    state: St,
    Auth(user): Auth,
    Path(token): Path<String>,
) -> ApiResult<Vec<ParticipantView>> {
    Ok(Ocs::ok(state.rooms.participants(&user, &token)?))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct AttendeeParam {
    attendee_id: Option<i64>,
}

pub(super) async fn remove_attendee(
    state: St,
    Auth(user): Auth,
    Path(token): Path<String>,
    Params(p): Params<AttendeeParam>,
) -> ApiResult<Value> {
    let attendee_id = required(p.attendee_id, "attendeeId")?;
    state.rooms.remove_attendee(&user, &token, attendee_id)?;
    Ok(Ocs::ok(json!([])))
}

pub(super) async fn promote(
    state: St,
    Auth(user): Auth,
    Path(token): Path<String>,
    Params(p): Params<AttendeeParam>,
) -> ApiResult<Value> {
    let attendee_id = required(p.attendee_id, "attendeeId")?;
    state
        .rooms
        .set_moderator(&user, &token, attendee_id, true)?;
    Ok(Ocs::ok(json!([])))
}

pub(super) async fn demote(
    state: St,
    Auth(user): Auth,
    Path(token): Path<String>,
    Params(p): Params<AttendeeParam>,
) -> ApiResult<Value> {
    let attendee_id = required(p.attendee_id, "attendeeId")?;
    state
        .rooms
        .set_moderator(&user, &token, attendee_id, false)?;
    Ok(Ocs::ok(json!([])))
}

pub(super) async fn join(
    state: St,
    Auth(user): Auth,
    Path(token): Path<String>,
) -> ApiResult<RoomView> {
    let (view, session_id) = state.rooms.join_room(&user, &token)?;
    let cookie = format!(
        "{}={session_id}; Path=/; HttpOnly; SameSite=Lax",
        session_cookie_name(&token)
    );
    Ok(Ocs::ok(view).with_header(header::SET_COOKIE, cookie))
}

pub(super) async fn leave(
    state: St,
    Auth(user): Auth,
    Path(token): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Value> {
    let cookie = session_from_cookies(&headers, &token);
    state.rooms.leave_room(&user, &token, cookie.as_deref())?;
    let expire = format!(
        "{}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0",
        session_cookie_name(&token)
    );
    Ok(Ocs::ok(json!([])).with_header(header::SET_COOKIE, expire))
}

#[derive(Deserialize)]
pub(super) struct StateParam {
    state: Option<i64>,
}

pub(super) async fn read_only(
    state: St,
    Auth(user): Auth,
    Path(token): Path<String>,
    Params(p): Params<StateParam>,
) -> ApiResult<Value> {
    state
        .rooms
        .set_read_only(&user, &token, required(p.state, "state")?)?;
    Ok(Ocs::ok(json!([])))
}

pub(super) async fn lobby(
    state: St,
    Auth(user): Auth,
    Path(token): Path<String>,
    Params(p): Params<StateParam>,
) -> ApiResult<Value> {
    state
        .rooms
        .set_lobby(&user, &token, required(p.state, "state")?)?;
    Ok(Ocs::ok(json!([])))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ConsentParam {
    recording_consent: Option<i64>,
}

pub(super) async fn recording_consent(
    state: St,
    Auth(user): Auth,
    Path(token): Path<String>,
    Params(p): Params<ConsentParam>,
) -> ApiResult<Value> {
    let value = required(p.recording_consent, "recordingConsent")?;
    state.rooms.set_recording_consent(&user, &token, value)?;
    Ok(Ocs::ok(json!([])))
}

#[derive(Deserialize)]
pub(super) struct PermissionsParam {
    permissions: Option<i64>,
}

pub(super) async fn default_permissions(
    state: St,
    Auth(user): Auth,
    Path(token): Path<String>,
    Params(p): Params<PermissionsParam>,
) -> ApiResult<Value> {
    let value = required(p.permissions, "permissions")?;
    state.rooms.set_default_permissions(&user, &token, value)?;
    Ok(Ocs::ok(json!([])))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct AttendeePermissionsParam {
    attendee_id: Option<i64>,
    method: Option<String>,
    permissions: Option<i64>,
}

pub(super) async fn attendee_permissions(
    state: St,
    Auth(user): Auth,
    Path(token): Path<String>,
    Params(p): Params<AttendeePermissionsParam>,
) -> ApiResult<Value> {
    let attendee_id = required(p.attendee_id, "attendeeId")?;
    let permissions = required(p.permissions, "permissions")?;
    let method = p.method.unwrap_or_else(|| "set".to_string());
    state
        .rooms
        .set_attendee_permissions(&user, &token, attendee_id, &method, permissions)?;
    Ok(Ocs::ok(json!([])))
}

//! The call API of the seed contract: join, update, leave, list, ring and dial-out; and call records.

use axum::http::HeaderMap;
use serde::Deserialize;
use serde_json::{json, Value};

use super::ocs::{Ocs, OcsError, Params};
use super::{session_from_cookies, Auth, Path, St};
use crate::room::{CallParticipantView, DialoutOptions};
use crate::store::CallRecord;

type ApiResult<T> = Result<Ocs<T>, OcsError>;

pub(super) async fn list(
    state: St,
    Auth(user): Auth,
    Path(token): Path<String>,
) -> ApiResult<Vec<CallParticipantView>> {
    Ok(Ocs::ok(state.rooms.call_participants(&user, &token)?))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct JoinCall {
    flags: Option<i64>,
    silent: Option<bool>,
    recording_consent: Option<bool>,
}

pub(super) async fn join(
    state: St,
    Auth(user): Auth,
    Path(token): Path<String>,
    headers: HeaderMap,
    Params(p): Params<JoinCall>,
) -> ApiResult<Value> {
    let cookie = session_from_cookies(&headers, &token);
    let flags = state.rooms.join_call(
        &user,
        &token,
        cookie.as_deref(),
        p.flags,
        p.silent.unwrap_or(false),
        p.recording_consent.unwrap_or(false),
    )?;
    Ok(Ocs::ok(json!({"inCall": flags})))
}

#[derive(Deserialize)]
pub(super) struct UpdateCall {
    flags: Option<i64>,
}

pub(super) async fn update(
    state: St,
    Auth(user): Auth,
    Path(token): Path<String>,
    headers: HeaderMap,
    Params(p): Params<UpdateCall>,
) -> ApiResult<Value> {
    let cookie = session_from_cookies(&headers, &token);
    let flags = p
        .flags
        .ok_or_else(|| OcsError::bad_request("flags", "parameter `flags` is required"))?;
    let flags = state
        .rooms
        .update_call_flags(&user, &token, cookie.as_deref(), flags)?;
    Ok(Ocs::ok(json!({"inCall": flags})))
}

#[derive(Deserialize)]
pub(super) struct LeaveCall {
    all: Option<bool>,
}

pub(super) async fn leave(
    state: St,
    Auth(user): Auth,
    Path(token): Path<String>,
    headers: HeaderMap,
    Params(p): Params<LeaveCall>,
) -> ApiResult<Value> {
    let cookie = session_from_cookies(&headers, &token);
    state
        .rooms
        .leave_call(&user, &token, cookie.as_deref(), p.all.unwrap_or(false))?;
    Ok(Ocs::ok(json!([])))
}

pub(super) async fn ring(
    state: St,
    Auth(user): Auth,
    Path((token, attendee_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> ApiResult<Value> {
    let attendee_id = parse_attendee_id(&attendee_id)?;
    let cookie = session_from_cookies(&headers, &token);
    state
        .rooms
        .ring(&user, &token, cookie.as_deref(), attendee_id)?;
    Ok(Ocs::ok(json!([])))
}

#[derive(Deserialize, Default)]
pub(super) struct Dialout {
    /// The From number instead of the trunk's caller id.
    #[serde(default)]
    caller: Option<String>,
    /// Withhold the caller id.
    anonymous: Option<bool>,
}

pub(super) async fn dialout(
    state: St,
    Auth(user): Auth,
    Path((token, attendee_id)): Path<(String, String)>,
    headers: HeaderMap,
    Params(p): Params<Dialout>,
) -> ApiResult<Value> {
    let attendee_id = parse_attendee_id(&attendee_id)?;
    let cookie = session_from_cookies(&headers, &token);
    let options = DialoutOptions {
        caller: p.caller.filter(|c| !c.is_empty()),
        anonymous: p.anonymous.unwrap_or(false),
    };
    let call_id = state
        .rooms
        .dialout(&user, &token, cookie.as_deref(), attendee_id, options)?;
    Ok(Ocs::ok(json!({"callid": call_id, "status": "accepted"})))
}

fn parse_attendee_id(raw: &str) -> Result<i64, OcsError> {
    raw.parse().map_err(|_| {
        OcsError::bad_request(
            "attendeeId",
            format!("attendeeId `{raw}` is not an integer"),
        )
    })
}

pub(super) async fn records(
    state: St,
    Auth(user): Auth,
    Path(token): Path<String>,
) -> ApiResult<Vec<CallRecord>> {
    Ok(Ocs::ok(state.rooms.call_records(&user, &token)?))
}

#[derive(Deserialize)]
pub(super) struct PhoneDtmf {
    #[serde(default)]
    digits: String,
}

/// `POST /api/v1/rooms/{token}/phones/{callid}/dtmf`: key presses to a phone (moderators).
pub(super) async fn phone_dtmf(
    state: St,
    Auth(user): Auth,
    Path((token, call_id)): Path<(String, String)>,
    Params(p): Params<PhoneDtmf>,
) -> ApiResult<Value> {
    state.rooms.phone_dtmf(&user, &token, &call_id, &p.digits)?;
    Ok(Ocs::ok(json!({"callid": call_id, "digits": p.digits})))
}

#[derive(Deserialize)]
pub(super) struct PhoneMuteParams {
    audio: Option<i64>,
}

/// `POST /api/v1/rooms/{token}/phones/{callid}/mute`: `audio` 1 mutes what the phone says, 2
/// what it hears, 3 both, 0 neither (moderators).
pub(super) async fn phone_mute(
    state: St,
    Auth(user): Auth,
    Path((token, call_id)): Path<(String, String)>,
    Params(p): Params<PhoneMuteParams>,
) -> ApiResult<Value> {
    let audio = p
        .audio
        .ok_or_else(|| OcsError::bad_request("audio", "audio is required: 0, 1, 2 or 3"))?;
    state.rooms.phone_mute(&user, &token, &call_id, audio)?;
    Ok(Ocs::ok(json!({"callid": call_id, "audio": audio})))
}

#[derive(Deserialize)]
pub(super) struct PhoneTransfer {
    #[serde(default)]
    to: String,
}

/// `POST /api/v1/rooms/{token}/phones/{callid}/transfer`: asks the phone to call `to` instead
/// (blind transfer, moderators); `transfer` and `callstatus` events tell the outcome.
pub(super) async fn phone_transfer(
    state: St,
    Auth(user): Auth,
    Path((token, call_id)): Path<(String, String)>,
    Params(p): Params<PhoneTransfer>,
) -> ApiResult<Value> {
    state.rooms.phone_transfer(&user, &token, &call_id, &p.to)?;
    Ok(Ocs::ok(json!({"callid": call_id, "to": p.to})))
}

/// `POST /api/v1/rooms/{token}/phones/{callid}/hangup`: ends a phone call (moderators); the
/// phone attendee stays in the room.
pub(super) async fn phone_hangup(
    state: St,
    Auth(user): Auth,
    Path((token, call_id)): Path<(String, String)>,
) -> ApiResult<Value> {
    state.rooms.phone_hangup(&user, &token, &call_id)?;
    Ok(Ocs::ok(json!({"callid": call_id})))
}

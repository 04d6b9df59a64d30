//! Voice calls (`/api/v1/voice.call*`) and push registration (`/api/v1/push.*`), answering in the
//! seed's Rocket.Chat shape: `{success: true, ...}`, or `{success: false, error, errorType}`.

use axum::body::Bytes;
use axum::extract::{FromRequestParts, RawQuery};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};

use super::{Auth, SharedState, St};
use crate::voice::push::{self, kind, NewDevice, RegisterError};
use crate::voice::{CallRequest, VoiceError, CALL_INVITE};

/// A refusal in the seed's shape.
pub(super) struct Refusal(VoiceError);

impl From<VoiceError> for Refusal {
    fn from(e: VoiceError) -> Refusal {
        Refusal(e)
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.0.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (
            status,
            Json(json!({"success": false, "error": self.0.error, "errorType": self.0.error_type})),
        )
            .into_response()
    }
}

impl From<RegisterError> for Refusal {
    fn from(e: RegisterError) -> Refusal {
        let (status, error_type) = match e {
            RegisterError::NotFound => (404, "error-token-not-found"),
            RegisterError::WrongToken => (400, "error-invalid-params"),
            RegisterError::Store(_) => (500, "error-internal"),
        };
        Refusal(VoiceError {
            status,
            error: e.to_string(),
            error_type,
        })
    }
}

/// The caller, or the seed's 401 (`{status: "error", message}`); 429 as everywhere else.
pub(super) struct User(crate::auth::AuthUser);

impl FromRequestParts<SharedState> for User {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &SharedState) -> Result<Self, Response> {
        match Auth::from_request_parts(parts, state).await {
            Ok(Auth(user)) => Ok(User(user)),
            Err(refusal) if refusal.status() == StatusCode::UNAUTHORIZED => Err((
                StatusCode::UNAUTHORIZED,
                Json(json!({"status": "error", "message": "You must be logged in to do this."})),
            )
                .into_response()),
            Err(refusal) => Err(refusal),
        }
    }
}

fn invalid(error: impl Into<String>) -> Refusal {
    Refusal(VoiceError::invalid(error))
}

/// The request body: a JSON object.
fn object(bytes: &Bytes) -> Result<Map<String, Value>, Refusal> {
    match serde_json::from_slice(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(invalid("the body must be a JSON object")),
        Err(e) => Err(invalid(format!("the body is not JSON: {e}"))),
    }
}

/// Reads one field of a request object, naming it in every refusal.
struct Fields(Map<String, Value>);

impl Fields {
    fn string(&self, name: &str) -> Result<Option<String>, Refusal> {
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(invalid(format!("{name}: must be a string"))),
        }
    }

    fn required(&self, name: &str) -> Result<String, Refusal> {
        self.string(name)?
            .filter(|s| !s.is_empty())
            .ok_or_else(|| invalid(format!("{name}: required")))
    }

    fn strings(&self, name: &str) -> Result<Vec<String>, Refusal> {
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| match v {
                    Value::String(s) if !s.is_empty() => Ok(s.clone()),
                    _ => Err(invalid(format!("{name}: must be a list of user names"))),
                })
                .collect(),
            Some(_) => Err(invalid(format!("{name}: must be a list of strings"))),
        }
    }

    fn boolean(&self, name: &str) -> Result<Option<bool>, Refusal> {
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(invalid(format!("{name}: must be true or false"))),
        }
    }
}

/// Checks a `voice.call` body.
fn call_request(bytes: &Bytes) -> Result<CallRequest, Refusal> {
    let f = Fields(object(bytes)?);
    let user_ids = f.strings("userIds")?;
    let user_names = f.strings("userNames")?;
    if user_ids.is_empty() && user_names.is_empty() {
        return Err(invalid("userIds: required (or userNames)"));
    }
    // A JSON string or an object: passed on as it came.
    let additional_info = match f.0.get("additionalInfo") {
        None | Some(Value::Null) => None,
        Some(v @ (Value::Object(_) | Value::String(_))) => Some(v.clone()),
        Some(_) => {
            return Err(invalid(
                "additionalInfo: must be an object or a JSON string",
            ))
        }
    };
    Ok(CallRequest {
        room_url: f.required("roomUrl")?,
        sender_name: f.required("senderName")?,
        sender_group: f.string("senderGroup")?,
        server_name: f.required("serverName")?,
        notification_message: f.required("notificationMessage")?,
        room_id: f.required("roomId")?,
        only_audio: f
            .boolean("onlyAudio")?
            .ok_or_else(|| invalid("onlyAudio: required"))?,
        sender_id: f.string("senderId")?.filter(|s| !s.is_empty()),
        notification_type: f
            .string("notificationType")?
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| CALL_INVITE.to_string()),
        user_ids,
        user_names,
        additional_info,
    })
}

/// `POST /api/v1/voice.call`.
pub(super) async fn call(
    state: St,
    User(user): User,
    bytes: Bytes,
) -> Result<Json<Value>, Refusal> {
    let request = call_request(&bytes)?;
    let started = state.voice.call(&user, request).await?;
    let sent_to: Map<String, Value> = started
        .sent_to
        .into_iter()
        .map(|(user, token)| (user, Value::String(token)))
        .collect();
    Ok(Json(json!({
        "success": true,
        "result": {
            "sentTo": sent_to,
            "callId": started.call_id,
            "deliveries": started.deliveries,
        },
    })))
}

/// `GET /api/v1/voice.call.info?callId=`.
pub(super) async fn info(
    state: St,
    User(user): User,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, Refusal> {
    let call_id = query
        .as_deref()
        .unwrap_or_default()
        .split('&')
        .find_map(|pair| pair.strip_prefix("callId="))
        .filter(|id| !id.is_empty())
        .ok_or_else(|| invalid("callId: required"))?;
    let call = state.voice.info(&user, call_id)?;
    Ok(Json(json!({"success": true, "result": call})))
}

fn call_id(bytes: &Bytes) -> Result<String, Refusal> {
    Fields(object(bytes)?).required("callId")
}

fn done() -> Json<Value> {
    Json(json!({"success": true}))
}

pub(super) async fn accept(
    state: St,
    User(user): User,
    bytes: Bytes,
) -> Result<Json<Value>, Refusal> {
    state.voice.accept(&user, &call_id(&bytes)?)?;
    Ok(done())
}

pub(super) async fn decline(
    state: St,
    User(user): User,
    bytes: Bytes,
) -> Result<Json<Value>, Refusal> {
    state.voice.decline(&user, &call_id(&bytes)?)?;
    Ok(done())
}

pub(super) async fn cancel(
    state: St,
    User(user): User,
    bytes: Bytes,
) -> Result<Json<Value>, Refusal> {
    state.voice.cancel(&user, &call_id(&bytes)?)?;
    Ok(done())
}

pub(super) async fn end(state: St, User(user): User, bytes: Bytes) -> Result<Json<Value>, Refusal> {
    state.voice.end(&user, &call_id(&bytes)?)?;
    Ok(done())
}

/// An http(s) URL, as a push endpoint must be.
fn endpoint(name: &str, value: &str) -> Result<String, Refusal> {
    match value.parse::<crate::config::HttpUrl>() {
        Ok(url) if value.parse::<axum::http::Uri>().is_ok() => Ok(url.0),
        _ => Err(invalid(format!("{name}: not an http(s) URL"))),
    }
}

/// A subscription (`{endpoint, keys: {p256dh, auth}}`), as an object or as JSON text.
fn subscription(value: &Value, keys_required: bool) -> Result<NewSubscription, Refusal> {
    let parsed;
    let object = match value {
        Value::String(text) if text.trim_start().starts_with('{') => {
            parsed = serde_json::from_str::<Value>(text)
                .map_err(|_| invalid("value: the subscription is not JSON"))?;
            &parsed
        }
        Value::String(url) if !keys_required => {
            return Ok(NewSubscription {
                endpoint: endpoint("value", url)?,
                keys: None,
            })
        }
        other => other,
    };
    let Some(endpoint_url) = object["endpoint"].as_str() else {
        return Err(invalid(
            "value: a subscription {endpoint, keys: {p256dh, auth}}",
        ));
    };
    let (p256dh, auth) = (
        object["keys"]["p256dh"].as_str(),
        object["keys"]["auth"].as_str(),
    );
    let keys = match (p256dh, auth) {
        (Some(p256dh), Some(auth)) => {
            push::subscription_keys(p256dh, auth).map_err(|e| invalid(format!("value.{e}")))?;
            Some((p256dh.to_string(), auth.to_string()))
        }
        _ if keys_required => return Err(invalid("value.keys: p256dh and auth required")),
        _ => None,
    };
    Ok(NewSubscription {
        endpoint: endpoint("value.endpoint", endpoint_url)?,
        keys,
    })
}

struct NewSubscription {
    endpoint: String,
    keys: Option<(String, String)>,
}

/// `POST /api/v1/push.token`.
pub(super) async fn register(
    state: St,
    User(user): User,
    bytes: Bytes,
) -> Result<Json<Value>, Refusal> {
    let f = Fields(object(&bytes)?);
    let kind_text = f.required("type")?;
    let Some(kind) = kind::ALL.into_iter().find(|k| *k == kind_text) else {
        return Err(invalid(format!("type: one of {}", kind::ALL.join(", "))));
    };
    let (value, keys) = match kind {
        kind::WEBPUSH | kind::UNIFIEDPUSH => {
            let raw =
                f.0.get("value")
                    .filter(|v| !v.is_null())
                    .ok_or_else(|| invalid("value: required"))?;
            let sub = subscription(raw, kind == kind::WEBPUSH)?;
            (sub.endpoint, sub.keys)
        }
        _ => (f.required("value")?, None),
    };
    let device = NewDevice {
        kind,
        value,
        keys,
        app_name: f.required("appName")?,
        device_id: f.string("deviceId")?.unwrap_or_default(),
        voip: f.boolean("voip")?.unwrap_or(false),
    };
    let row = state.voice.push().register(&user.id, device)?;
    Ok(Json(json!({
        "success": true,
        "result": {
            "id": row.id,
            "type": row.kind,
            "appName": row.app_name,
            "deviceId": row.device_id,
            "voip": row.voip,
            "activated": row.activated,
        },
    })))
}

/// `DELETE /api/v1/push.token {token}`: by the registration's id or its value.
pub(super) async fn unregister(
    state: St,
    User(user): User,
    bytes: Bytes,
) -> Result<Json<Value>, Refusal> {
    let token = Fields(object(&bytes)?).required("token")?;
    state.voice.push().unregister(&user.id, &token)?;
    Ok(done())
}

/// `POST /api/v1/push.token/activate {id, activationToken}`.
pub(super) async fn activate(
    state: St,
    User(user): User,
    bytes: Bytes,
) -> Result<Json<Value>, Refusal> {
    let f = Fields(object(&bytes)?);
    let id = f.required("id")?;
    let token = f.required("activationToken")?;
    state.voice.push().activate(&user.id, &id, &token)?;
    Ok(done())
}

/// `GET /api/v1/push.vapid`: the key browsers subscribe with (`applicationServerKey`).
pub(super) async fn vapid(state: St, User(_): User) -> Json<Value> {
    Json(json!({"success": true, "publicKey": state.voice.push().vapid_public_key()}))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn request(body: Value) -> Result<CallRequest, String> {
        call_request(&Bytes::from(body.to_string())).map_err(|r| r.0.error)
    }

    fn good() -> Value {
        json!({"roomUrl": "https://x/", "senderName": "A", "serverName": "s",
               "notificationMessage": "Incoming call", "userIds": ["bob"],
               "roomId": "abc", "onlyAudio": true})
    }

    #[test]
    fn each_required_field_is_named() {
        for field in [
            "roomUrl",
            "senderName",
            "serverName",
            "notificationMessage",
            "roomId",
            "onlyAudio",
        ] {
            let mut body = good();
            body.as_object_mut().map(|o| o.remove(field));
            let error = request(body).expect_err(field);
            assert!(error.starts_with(field), "{error}");
        }
        let mut body = good();
        body.as_object_mut().map(|o| o.remove("userIds"));
        assert!(request(body).expect_err("no users").starts_with("userIds"));
        let mut body = good();
        body["onlyAudio"] = json!("yes");
        assert!(request(body).expect_err("type").starts_with("onlyAudio"));
        let parsed = request(good()).expect("good");
        assert_eq!(parsed.notification_type, CALL_INVITE);
    }

    proptest! {
        #[test]
        fn any_body_is_an_answer_not_a_panic(body in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = call_request(&Bytes::from(body));
        }

        #[test]
        fn any_subscription_is_an_answer_not_a_panic(text in ".{0,200}") {
            let _ = subscription(&Value::String(text.clone()), true);
            let _ = subscription(&Value::String(text), false);
        }
    }
}

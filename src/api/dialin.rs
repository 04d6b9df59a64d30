//! Dial-in settings of a room: `PUT /api/v1/rooms/{token}/dialin`.

use axum::extract::Path;
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use super::ocs::{lenient, Ocs, OcsError, Params};
use super::{Auth, St};
use crate::room::DialinSettings;

/// A field that may be absent, null (clear) or a value: absent is `None`, null is `Some(Null)`.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SetDialin {
    #[serde(default, deserialize_with = "present")]
    number: Option<Value>,
    #[serde(default, deserialize_with = "lenient::boolean")]
    wait_for_call: Option<bool>,
}

pub async fn set(
    state: St,
    Auth(user): Auth,
    Path(token): Path<String>,
    Params(p): Params<SetDialin>,
) -> Result<Ocs<DialinSettings>, OcsError> {
    let number = match p.number {
        None => None,
        Some(Value::Null) => Some(None),
        Some(Value::String(s)) => Some(Some(s)),
        Some(other) => Some(Some(other.to_string())),
    };
    Ok(Ocs::ok(state.rooms.set_dialin(
        &user,
        &token,
        number,
        p.wait_for_call,
    )?))
}

//! Dial-in settings of a room: `PUT /api/v1/rooms/{token}/dialin`.

use serde::Deserialize;

use super::ocs::{clearable_string, Ocs, OcsError, Params};
use super::{Auth, Path, St};
use crate::room::DialinSettings;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct SetDialin {
    /// Absent: unchanged; null: cleared; else the new number.
    #[serde(default, deserialize_with = "clearable_string")]
    number: Option<Option<String>>,
    wait_for_call: Option<bool>,
}

pub(super) async fn set(
    state: St,
    Auth(user): Auth,
    Path(token): Path<String>,
    Params(p): Params<SetDialin>,
) -> Result<Ocs<DialinSettings>, OcsError> {
    Ok(Ocs::ok(state.rooms.set_dialin(
        &user,
        &token,
        p.number,
        p.wait_for_call,
    )?))
}

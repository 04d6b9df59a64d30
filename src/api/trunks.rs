//! `GET /api/v1/trunks`: the configured trunks and the state of their registrations, for any
//! signed-in user (names and states only: no address, account or password).

use super::ocs::{Ocs, OcsError};
use super::{Auth, St};
use crate::calls::registration::TrunkStatus;

pub(super) async fn list(state: St, Auth(_): Auth) -> Result<Ocs<Vec<TrunkStatus>>, OcsError> {
    Ok(Ocs::ok(state.trunks.statuses()))
}

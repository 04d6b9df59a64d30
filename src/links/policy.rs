//! The link service as the rooms' policy: joins and dial-outs of a link's room are refused when the
//! link is closed or the budget will not carry them, and each session's stay in the call is
//! metered (and reported to webhooks) in the transaction that changed it.

use serde_json::json;

use super::webhooks::{self, event};
use super::when::now_ms;
use super::{effective_status, meter, status, CallLinks, LinkError};
use crate::events::RoomEvent;
use crate::room::{in_call, ErrorKind, RoomError, RoomPolicy, RoomResult};
use crate::store::links::LinkRow;
use crate::store::Tx;

pub(super) struct LinkPolicy(pub(super) CallLinks);

/// A link that can no longer be joined: the reason as an error word and message.
pub(super) fn check_open(link: &LinkRow, now: i64) -> RoomResult<()> {
    let refuse = |error, message: &str| Err(RoomError::new(ErrorKind::Forbidden, error, message));
    if link.deleted_ms.is_some() {
        return refuse("call_deleted", "this call link was deleted");
    }
    match effective_status(link, now) {
        status::EXPIRED => refuse("call_expired", "this call link has expired"),
        status::ENDED => refuse("call_ended", "this call has ended"),
        _ if now >= link.expires_ms => refuse("call_ended", "this call has ended"),
        _ => Ok(()),
    }
}

fn spend_refusal(e: LinkError) -> RoomError {
    if e.status == 402 {
        RoomError::new(ErrorKind::PaymentRequired, e.error, e.message)
    } else if e.status == 403 || e.status == 404 {
        RoomError::new(ErrorKind::Forbidden, e.error, e.message)
    } else {
        RoomError::new(ErrorKind::Internal, "internal", "internal error")
    }
}

impl LinkPolicy {
    fn org_checked(
        &self,
        tx: &Tx,
        link: &LinkRow,
        check: impl FnOnce(&crate::store::links::OrgRow) -> Result<(), LinkError>,
    ) -> RoomResult<()> {
        let project = tx.project(link.project_id)?.ok_or_else(|| {
            RoomError::new(
                ErrorKind::Internal,
                "internal",
                "the link's project is gone",
            )
        })?;
        let org = CallLinks::org_of(tx, &project).map_err(spend_refusal)?;
        check(&org).map_err(spend_refusal)
    }
}

impl RoomPolicy for LinkPolicy {
    fn check_join(&self, tx: &Tx, room_id: i64) -> RoomResult<()> {
        let Some(link) = tx.link_of_room(room_id)? else {
            return Ok(());
        };
        let now = now_ms();
        check_open(&link, now)?;
        let rates = self.0.rates();
        self.org_checked(tx, &link, |org| {
            meter::check_join(tx, org, &rates, &link, now)
        })
    }

    fn check_dialout(&self, tx: &Tx, room_id: i64) -> RoomResult<()> {
        let Some(link) = tx.link_of_room(room_id)? else {
            return Ok(());
        };
        let now = now_ms();
        check_open(&link, now)?;
        let rates = self.0.rates();
        self.org_checked(tx, &link, |org| {
            if !org.dialout {
                return Err(LinkError::new(
                    403,
                    "dialout_not_in_plan",
                    "the organization's plan does not include dial-out",
                ));
            }
            meter::check_dialout(tx, org, &rates, now)
        })
    }

    fn record(&self, tx: &Tx, events: &[(i64, Option<String>, RoomEvent)]) -> RoomResult<()> {
        let links = &self.0;
        for (room_id, _, event) in events {
            let joined = match event {
                RoomEvent::ParticipantFlags {
                    session_id,
                    in_call,
                    attendee_id,
                    ..
                } => Some((session_id, *in_call != in_call::DISCONNECTED, *attendee_id)),
                RoomEvent::ParticipantLeft {
                    session_id,
                    attendee_id,
                    ..
                } => Some((session_id, false, *attendee_id)),
                RoomEvent::CallEnded { .. } | RoomEvent::CallStarted { .. } => None,
                _ => continue,
            };
            let Some(link) = tx.link_of_room(*room_id)? else {
                continue;
            };
            let Some(project) = tx.project(link.project_id)? else {
                continue;
            };
            let now = now_ms();
            match (joined, event) {
                (Some((session, true, attendee_id)), _) => {
                    if tx.open_link_participant(&link.id, session)? {
                        continue;
                    }
                    let name = tx
                        .attendee(*room_id, attendee_id)?
                        .map(|a| a.display_name)
                        .unwrap_or_default();
                    tx.insert_link_participant(&link.id, session, &name, now)?;
                    tx.set_link_empty_since(&link.id, None)?;
                    if link.status == status::CREATED {
                        tx.set_link_status(&link.id, status::ACTIVE, now, true, false)?;
                        let started = tx.link(&link.id)?.unwrap_or(link.clone());
                        let call = links.view_json(tx, &started, now)?;
                        webhooks::enqueue(tx, &project, event::CALL_STARTED, &call, json!({}))?;
                    }
                    let current = tx.link(&link.id)?.unwrap_or(link);
                    let call = links.view_json(tx, &current, now)?;
                    webhooks::enqueue(
                        tx,
                        &project,
                        event::PARTICIPANT_JOINED,
                        &call,
                        json!({"sessionId": session, "username": name}),
                    )?;
                }
                (Some((session, false, _)), _)
                    if tx.close_link_participant(&link.id, session, now)? =>
                {
                    let call = links.view_json(tx, &link, now)?;
                    webhooks::enqueue(
                        tx,
                        &project,
                        event::PARTICIPANT_LEFT,
                        &call,
                        json!({"sessionId": session}),
                    )?;
                }
                (None, RoomEvent::CallEnded { .. }) if link.status == status::ACTIVE => {
                    tx.set_link_empty_since(&link.id, Some(now))?;
                }
                _ => {}
            }
        }
        links.0.webhooks.notify_one();
        Ok(())
    }

    fn committed(&self, events: &[(i64, Option<String>, RoomEvent)]) {
        for (room_id, _, event) in events {
            match event {
                RoomEvent::CallStarted { .. } => self.0.start_recording(*room_id),
                RoomEvent::CallEnded { .. } => self.0.stop_recording(*room_id),
                _ => {}
            }
        }
    }
}

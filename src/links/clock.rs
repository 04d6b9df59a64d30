//! The links' clock: every `[links] check_interval` it expires links whose time passed before they
//! started, ends running calls at `expiresAt` or after their project's empty-timeout, and cuts
//! the phone legs of organizations whose spend reached the limit.

use std::collections::{HashMap, HashSet};

use tokio::sync::watch;

use super::when::{iso, now_ms};
use super::{meter, status, CallLinks, Closing};
use crate::events::RoomEvent;
use crate::room::Cause;
use crate::store::StoreError;

pub(super) async fn run(links: CallLinks, mut shutdown: watch::Receiver<bool>) {
    let period = links.0.config.check_interval.0;
    // Links whose participants were warned; a restart may warn once more.
    let mut warned = HashSet::new();
    loop {
        tick(&links, &mut warned);
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// What one look at the open links decided.
enum Due {
    Close(String, Closing),
    /// A link whose organization is out of budget: its phone legs end.
    CutPhones(i64),
    /// A running call ends soon: (link, room, expiresAt).
    Warn(String, i64, i64),
}

fn tick(links: &CallLinks, warned: &mut HashSet<String>) {
    let warning = i64::try_from(links.0.config.expiry_warning.0.as_millis()).unwrap_or(i64::MAX);
    let now = now_ms();
    let decided = links.rooms().store().write(|tx| {
        let mut due = Vec::new();
        let mut exhausted: HashMap<i64, bool> = HashMap::new();
        for link in tx.open_links()? {
            let Some(project) = tx.project(link.project_id)? else {
                continue;
            };
            let running = link.status == status::ACTIVE;
            if now >= link.expires_ms {
                let how = if running {
                    Closing::Ended("expired")
                } else {
                    Closing::Expired
                };
                due.push(Due::Close(link.id.clone(), how));
                continue;
            }
            let empty_for = link.empty_since_ms.map(|since| now - since);
            if running
                && empty_for.is_some_and(|ms| ms >= project.empty_timeout.saturating_mul(1000))
            {
                due.push(Due::Close(link.id.clone(), Closing::Ended("empty")));
                continue;
            }
            if running && now >= link.expires_ms.saturating_sub(warning) {
                due.push(Due::Warn(link.id.clone(), link.room_id, link.expires_ms));
            }
            let Some(org) = project
                .organization_id
                .map(|id| tx.org(id))
                .transpose()?
                .flatten()
            else {
                continue;
            };
            if !running {
                continue;
            }
            let out = match exhausted.get(&org.id) {
                Some(out) => *out,
                None => {
                    let out = meter::exhausted(tx, &org, &links.rates(), now)?;
                    exhausted.insert(org.id, out);
                    out
                }
            };
            if out {
                due.push(Due::CutPhones(link.room_id));
            }
        }
        Ok::<_, StoreError>(due)
    });
    let due = match decided {
        Ok(due) => due,
        Err(e) => {
            tracing::error!(error = %e, "call link clock: cannot read the links");
            return;
        }
    };
    for item in due {
        match item {
            Due::Close(id, how) => {
                if let Err(e) = links.close(None, &id, how) {
                    tracing::error!(call = %id, error = %e.message, "call link clock: cannot close a link");
                }
            }
            Due::Warn(id, room_id, expires_ms) => {
                if warned.insert(id) {
                    links.rooms().announce(
                        room_id,
                        RoomEvent::CallExpiring {
                            expires_at: iso(expires_ms),
                        },
                    );
                }
            }
            Due::CutPhones(room_id) => {
                if let Some(legs) = links.0.legs.get() {
                    legs.hang_up_room(room_id, Cause::SpendLimit);
                }
            }
        }
    }
}

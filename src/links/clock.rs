//! The links' clock: every `[links] check_interval` it expires links whose time passed before they
//! started, ends running calls at `expiresAt` or after their project's empty-timeout, and cuts
//! the phone legs of organizations whose spend reached the limit.

use std::collections::HashMap;

use tokio::sync::watch;

use super::when::now_ms;
use super::{meter, status, CallLinks, Closing};
use crate::room::Cause;
use crate::store::StoreError;

pub(super) async fn run(links: CallLinks, mut shutdown: watch::Receiver<bool>) {
    let period = links.0.config.check_interval.0;
    loop {
        tick(&links);
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
}

fn tick(links: &CallLinks) {
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
            Due::CutPhones(room_id) => {
                if let Some(legs) = links.0.legs.get() {
                    legs.hang_up_room(room_id, Cause::SpendLimit);
                }
            }
        }
    }
}

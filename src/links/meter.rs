//! What an organization spent this month, and what it has committed to spend: the checks of its
//! spend limit, each run inside the transaction of the start it guards, so two starts can never
//! both take the last of a budget.
//!
//! Spent: participant-minutes of its links at its plan's price, plus answered dial-out minutes
//! at each trunk's price. Committed: spent, plus the next minute of everything running or about
//! to run: one participant-minute per open link (a minute per participant once it has more than
//! one) and one trunk-minute per dial-out leg not yet ended.

use std::collections::HashMap;

use super::when::month_start_ms;
use super::LinkError;
use crate::money::{cost_of_ms, Money};
use crate::store::links::{LinkRow, OrgRow};
use crate::store::{StoreResult, Tx};

fn trunk_price(prices: &HashMap<String, Money>, trunk: &str) -> Money {
    prices.get(trunk).copied().unwrap_or_default()
}

/// Micro-units the organization spent this month up to `now`.
pub(super) fn spent(
    tx: &Tx,
    org: &OrgRow,
    prices: &HashMap<String, Money>,
    now: i64,
) -> StoreResult<i64> {
    let from = month_start_ms(now);
    let mut total = cost_of_ms(
        tx.org_participant_ms(org.id, from, now)?,
        Money(org.price_micros),
    );
    for (trunk, seconds) in tx.org_dialout_seconds(org.id, from / 1000, now / 1000)? {
        total = total.saturating_add(cost_of_ms(
            seconds.saturating_mul(1000),
            trunk_price(prices, &trunk),
        ));
    }
    Ok(total)
}

/// Spent plus the next minute of everything running (see the module's description).
fn committed(
    tx: &Tx,
    org: &OrgRow,
    prices: &HashMap<String, Money>,
    now: i64,
) -> StoreResult<(i64, i64)> {
    let spent = spent(tx, org, prices, now)?;
    let mut committed = spent;
    for (_, participants) in tx.open_links_of_org(org.id)? {
        committed = committed.saturating_add(participants.max(1).saturating_mul(org.price_micros));
    }
    for trunk in tx.open_dialouts_of_org(org.id)? {
        committed = committed.saturating_add(trunk_price(prices, &trunk).micros());
    }
    Ok((spent, committed))
}

/// Whether `extra` more fits under the limit (always, without one).
fn fits(org: &OrgRow, spent: i64, committed: i64, extra: i64) -> bool {
    match org.spend_limit_micros {
        None => true,
        Some(limit) => spent < limit && committed.saturating_add(extra) <= limit,
    }
}

/// A new link needs room for its first participant-minute.
pub(super) fn check_create(
    tx: &Tx,
    org: &OrgRow,
    prices: &HashMap<String, Money>,
    now: i64,
) -> Result<(), LinkError> {
    let (spent, committed) = committed(tx, org, prices, now)?;
    if !fits(org, spent, committed, org.price_micros) {
        return Err(LinkError::spending_limit());
    }
    Ok(())
}

/// A participant joining `link` needs room for its own minute, unless it is the link's first
/// (whose minute the link already holds).
pub(super) fn check_join(
    tx: &Tx,
    org: &OrgRow,
    prices: &HashMap<String, Money>,
    link: &LinkRow,
    now: i64,
) -> Result<(), LinkError> {
    let (spent, committed) = committed(tx, org, prices, now)?;
    let others = tx
        .link_participants(&link.id)?
        .iter()
        .filter(|p| p.left_ms.is_none())
        .count();
    let extra = if others == 0 { 0 } else { org.price_micros };
    if !fits(org, spent, committed, extra) {
        return Err(LinkError::spending_limit());
    }
    Ok(())
}

/// A dial-out needs room for the phone as a participant and for a minute of the dearest trunk
/// (the trunk is chosen by number only after this check).
pub(super) fn check_dialout(
    tx: &Tx,
    org: &OrgRow,
    prices: &HashMap<String, Money>,
    now: i64,
) -> Result<(), LinkError> {
    let (spent, committed) = committed(tx, org, prices, now)?;
    let dearest = prices.values().map(|m| m.micros()).max().unwrap_or(0);
    if !fits(
        org,
        spent,
        committed,
        org.price_micros.saturating_add(dearest),
    ) {
        return Err(LinkError::spending_limit());
    }
    Ok(())
}

/// Whether the organization's spend reached its limit (running phone legs are then cut).
pub(super) fn exhausted(
    tx: &Tx,
    org: &OrgRow,
    prices: &HashMap<String, Money>,
    now: i64,
) -> StoreResult<bool> {
    Ok(match org.spend_limit_micros {
        None => false,
        Some(limit) => spent(tx, org, prices, now)? >= limit,
    })
}

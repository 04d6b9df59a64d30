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
use super::CallLinks;
use super::LinkError;
use crate::money::{cost_of_ms, Money};
use crate::store::links::{LinkRow, OrgRow};
use crate::store::{StoreResult, Tx};

/// What the meter needs to know of the configuration.
pub(super) struct Rates<'a> {
    pub trunks: &'a HashMap<String, Money>,
    /// Milliseconds of running time each start must find room for.
    pub commitment_ms: i64,
}

impl CallLinks {
    pub(super) fn rates(&self) -> Rates<'_> {
        Rates {
            trunks: &self.0.trunk_prices,
            commitment_ms: i64::try_from(self.0.config.commitment.0.as_millis())
                .unwrap_or(i64::MAX),
        }
    }
}

fn trunk_price(prices: &HashMap<String, Money>, trunk: &str) -> Money {
    prices.get(trunk).copied().unwrap_or_default()
}

impl Rates<'_> {
    /// The commitment's worth at `per_minute`.
    fn unit(&self, per_minute: Money) -> i64 {
        cost_of_ms(self.commitment_ms, per_minute)
    }
}

/// Micro-units the organization spent this month up to `now`.
pub(super) fn spent(tx: &Tx, org: &OrgRow, rates: &Rates, now: i64) -> StoreResult<i64> {
    let prices = rates.trunks;
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
fn committed(tx: &Tx, org: &OrgRow, rates: &Rates, now: i64) -> StoreResult<(i64, i64)> {
    let spent = spent(tx, org, rates, now)?;
    let unit = rates.unit(Money(org.price_micros));
    let mut committed = spent;
    for (_, participants) in tx.open_links_of_org(org.id)? {
        committed = committed.saturating_add(participants.max(1).saturating_mul(unit));
    }
    for trunk in tx.open_dialouts_of_org(org.id)? {
        committed = committed.saturating_add(rates.unit(trunk_price(rates.trunks, &trunk)));
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

/// A new link needs room for its first participant's commitment.
pub(super) fn check_create(
    tx: &Tx,
    org: &OrgRow,
    rates: &Rates,
    now: i64,
) -> Result<(), LinkError> {
    let (spent, committed) = committed(tx, org, rates, now)?;
    if !fits(org, spent, committed, rates.unit(Money(org.price_micros))) {
        return Err(LinkError::spending_limit());
    }
    Ok(())
}

/// A participant joining `link` needs room for its own commitment, unless it is the link's
/// first (whose commitment the link already holds).
pub(super) fn check_join(
    tx: &Tx,
    org: &OrgRow,
    rates: &Rates,
    link: &LinkRow,
    now: i64,
) -> Result<(), LinkError> {
    let (spent, committed) = committed(tx, org, rates, now)?;
    let others = tx
        .link_participants(&link.id)?
        .iter()
        .filter(|p| p.left_ms.is_none())
        .count();
    let extra = if others == 0 {
        0
    } else {
        rates.unit(Money(org.price_micros))
    };
    if !fits(org, spent, committed, extra) {
        return Err(LinkError::spending_limit());
    }
    Ok(())
}

/// A dial-out needs room for the phone as a participant and for the dearest trunk (the trunk is
/// chosen by number only after this check), each for the commitment.
pub(super) fn check_dialout(
    tx: &Tx,
    org: &OrgRow,
    rates: &Rates,
    now: i64,
) -> Result<(), LinkError> {
    let (spent, committed) = committed(tx, org, rates, now)?;
    let dearest = rates.trunks.values().copied().max().unwrap_or_default();
    let extra = rates
        .unit(Money(org.price_micros))
        .saturating_add(rates.unit(dearest));
    if !fits(org, spent, committed, extra) {
        return Err(LinkError::spending_limit());
    }
    Ok(())
}

/// Whether the organization's spend reached its limit (running phone legs are then cut).
pub(super) fn exhausted(tx: &Tx, org: &OrgRow, rates: &Rates, now: i64) -> StoreResult<bool> {
    Ok(match org.spend_limit_micros {
        None => false,
        Some(limit) => spent(tx, org, rates, now)? >= limit,
    })
}

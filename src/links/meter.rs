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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::money::MICROS;
    use crate::store::links::{NewLink, OrgChange};
    use crate::store::{Store, StoreError};

    const MINUTE: i64 = 60_000;

    /// An organization at 1.00 a participant-minute with `limit`, and its project.
    fn org(store: &Store, limit: i64) -> (OrgRow, i64) {
        store
            .write(|tx| {
                let change = OrgChange {
                    price_micros: Some(MICROS),
                    spend_limit_micros: Some(Some(limit)),
                    ..OrgChange::default()
                };
                let id = tx.insert_org("acme", &change, 0)?;
                let project = tx.insert_project("p", id, 3600, 60, 0)?;
                let org = tx.org(id)?.expect("org");
                Ok::<_, StoreError>((org, project))
            })
            .expect("org")
    }

    fn link(store: &Store, project: i64, id: &str, now: i64) -> LinkRow {
        store
            .write(|tx| {
                let room = tx.insert_room(id, "Call", 2, 0)?;
                tx.insert_link(&NewLink {
                    id,
                    project_id: project,
                    room_id: room,
                    title: None,
                    recording: false,
                    now_ms: now,
                    expires_ms: now + 3_600_000,
                })?;
                Ok::<_, StoreError>(tx.link(id)?.expect("link"))
            })
            .expect("link")
    }

    fn rates(trunks: &HashMap<String, Money>) -> Rates<'_> {
        Rates {
            trunks,
            commitment_ms: MINUTE,
        }
    }

    #[test]
    fn open_links_hold_a_minute_each_and_participants_one_more_each() {
        let store = Store::open_in_memory().expect("store");
        let (org, project) = org(&store, 2 * MICROS);
        let trunks = HashMap::new();
        let rates = rates(&trunks);
        let now = 1_000_000;
        let check = |f: &dyn Fn(&Tx) -> Result<(), LinkError>| store.write(|tx| f(tx));
        check(&|tx| check_create(tx, &org, &rates, now)).expect("room for two links");
        let a = link(&store, project, "a", now);
        check(&|tx| check_create(tx, &org, &rates, now)).expect("room for the second");
        let b = link(&store, project, "b", now);
        let full = check(&|tx| check_create(tx, &org, &rates, now));
        assert_eq!(
            full,
            Err(LinkError::spending_limit()),
            "two links hold 2.00"
        );
        // A link's first participant uses the minute it holds; a second needs one more.
        check(&|tx| check_join(tx, &org, &rates, &a, now)).expect("first of a");
        store
            .write(|tx| tx.insert_link_participant("a", "s1", "Ana", now))
            .expect("stay");
        let second = check(&|tx| check_join(tx, &org, &rates, &a, now));
        assert_eq!(second, Err(LinkError::spending_limit()));
        check(&|tx| check_join(tx, &org, &rates, &b, now)).expect("first of b");
        // Half a minute later 0.50 is spent; what runs still holds 2.00, so nothing more starts.
        let later = now + MINUTE / 2;
        let spent_now = store
            .write(|tx| spent(tx, &org, &rates, later))
            .expect("spent");
        assert_eq!(spent_now, MICROS / 2);
        assert!(!store
            .write(|tx| exhausted(tx, &org, &rates, later))
            .expect("exhausted"));
        assert!(store
            .write(|tx| exhausted(tx, &org, &rates, now + 2 * MINUTE))
            .expect("exhausted"));
    }

    #[test]
    fn a_dial_out_needs_the_dearest_trunk_minute_and_no_limit_means_no_refusal() {
        let store = Store::open_in_memory().expect("store");
        let (org, project) = org(&store, 3 * MICROS);
        let trunks: HashMap<String, Money> = [
            ("cheap".to_string(), Money(MICROS / 10)),
            ("dear".to_string(), Money(MICROS)),
        ]
        .into();
        let rates = rates(&trunks);
        let now = 1_000_000;
        link(&store, project, "a", now);
        // Held: 1.00 (the link); a dial-out adds 1.00 (the phone) + 1.00 (the dearest trunk).
        store
            .write(|tx| check_dialout(tx, &org, &rates, now))
            .expect("3.00 fits");
        link(&store, project, "b", now);
        assert_eq!(
            store.write(|tx| check_dialout(tx, &org, &rates, now)),
            Err(LinkError::spending_limit())
        );
        let unlimited = OrgRow {
            spend_limit_micros: None,
            ..org
        };
        store
            .write(|tx| check_dialout(tx, &unlimited, &rates, now))
            .expect("no limit");
    }
}

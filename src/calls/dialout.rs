//! Dial-out through the configured trunks: after the room's own checks ([`Rooms::dialout`]),
//! picks the trunk, applies its limits, refuses an attendee already in a call, allocates the
//! RTP ports and starts the phone leg. The call id is returned at once (status `accepted`).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::legs::PhoneLegs;
use super::outbound;
use crate::config::{Config, TrunkConfig};
use crate::room::{Dialer, DialoutTarget, ErrorKind, RoomError, RoomResult};
use crate::sync::lock;

/// Places dial-outs through `[[trunks]]`.
pub struct TrunkDialer {
    shared: Arc<PhoneLegs>,
    trunks: Vec<TrunkConfig>,
    /// Start times of the last second's calls, per trunk.
    recent: Mutex<HashMap<String, VecDeque<Instant>>>,
    runtime: tokio::runtime::Handle,
}

impl TrunkDialer {
    /// Needs a running tokio runtime (legs are spawned on it). Fails when a trunk's transport
    /// has no SIP listener with an address to announce.
    pub fn new(config: &Config, shared: Arc<PhoneLegs>) -> anyhow::Result<Arc<TrunkDialer>> {
        for trunk in &config.trunks {
            if !shared.media_ip.contains_key(&trunk.transport) {
                anyhow::bail!(
                    "trunk `{}` uses {} but no [sip] listen address has that transport \
                     with an address to announce (set media.public_ip for a wildcard listen)",
                    trunk.name,
                    trunk.transport.name()
                );
            }
        }
        Ok(Arc::new(TrunkDialer {
            shared,
            trunks: config.trunks.clone(),
            recent: Mutex::new(HashMap::new()),
            runtime: tokio::runtime::Handle::current(),
        }))
    }

    fn trunk_for(&self, number: &str) -> RoomResult<&TrunkConfig> {
        self.trunks
            .iter()
            .find(|t| t.may_dial(number))
            .ok_or_else(|| {
                RoomError::new(
                    ErrorKind::Forbidden,
                    "number",
                    format!("no trunk is allowed to dial {number}: it matches no allowed_numbers pattern"),
                )
            })
    }

    /// Takes one call of the trunk's calls-per-second budget, or says why not.
    fn take_rate(&self, trunk: &TrunkConfig, now: Instant) -> RoomResult<()> {
        if trunk.calls_per_second <= 0.0 {
            return Ok(());
        }
        let mut recent = lock(&self.recent);
        let starts = recent.entry(trunk.name.clone()).or_default();
        // At most cps calls in any one second; below one per second, one per 1/cps seconds.
        let (window, budget) = if trunk.calls_per_second >= 1.0 {
            (
                Duration::from_secs(1),
                trunk.calls_per_second.floor() as usize,
            )
        } else {
            (Duration::from_secs_f64(1.0 / trunk.calls_per_second), 1)
        };
        while starts
            .front()
            .is_some_and(|t| now.duration_since(*t) >= window)
        {
            starts.pop_front();
        }
        if starts.len() >= budget {
            return Err(RoomError::new(
                ErrorKind::TooManyRequests,
                "limit",
                format!(
                    "trunk `{}` allows {} call(s) per second; try again shortly",
                    trunk.name, trunk.calls_per_second
                ),
            ));
        }
        starts.push_back(now);
        Ok(())
    }
}

impl Dialer for TrunkDialer {
    fn check(&self, number: &crate::room::PhoneNumber) -> RoomResult<()> {
        if self.trunks.is_empty() {
            return Err(crate::room::not_configured());
        }
        self.trunk_for(number.as_str()).map(|_| ())
    }

    fn transfer_target(&self, number: &crate::room::PhoneNumber) -> RoomResult<String> {
        self.check(number)?;
        self.trunk_for(number.as_str())
            .map(|t| t.number_uri(number.as_str()))
    }

    fn dial(&self, target: DialoutTarget) -> RoomResult<String> {
        if self.trunks.is_empty() {
            return Err(crate::room::not_configured());
        }
        let trunk = self.trunk_for(&target.number)?;
        if let Some(caller) = &target.caller {
            if caller.parse::<crate::room::PhoneNumber>().is_err() {
                return Err(RoomError::new(
                    ErrorKind::BadRequest,
                    "caller",
                    format!("caller `{caller}` is not an E.164 number"),
                ));
            }
        }
        let now = Instant::now();
        outbound::start_leg(&self.shared, &self.runtime, trunk, target, None, || {
            self.take_rate(trunk, now)
        })
    }
}

//! Limits per source address: token buckets in bounded memory, shared by SIP admission and the
//! HTTP server.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Sources remembered by each rate limiter at most; beyond it idle, then oldest entries go.
const MAX_TRACKED_SOURCES: usize = 10_000;

/// The address limits count by: an IPv6 source counts per /64, since one host usually holds the
/// whole prefix; an IPv4-mapped IPv6 address counts as its IPv4 address.
pub fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
        },
        v4 => v4,
    }
}

/// Token buckets per source address (see [`source_key`]), in bounded memory.
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: HashMap<IpAddr, Bucket>,
}

#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl RateLimiter {
    /// `rate` tokens per second, at most `burst` saved up.
    pub fn new(rate: f64, burst: f64) -> RateLimiter {
        RateLimiter {
            rate,
            burst: burst.max(1.0),
            buckets: HashMap::new(),
        }
    }

    fn level(&self, b: Bucket, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        (b.tokens + elapsed * self.rate).min(self.burst)
    }

    /// Whether `source` has a token left, without taking it.
    pub fn has_token(&self, source: IpAddr, now: Instant) -> bool {
        self.check(source, now).is_ok()
    }

    /// [`RateLimiter::has_token`], saying how long until a token is there when none is.
    pub fn check(&self, source: IpAddr, now: Instant) -> Result<(), Duration> {
        match self.buckets.get(&source_key(source)) {
            Some(b) if self.level(*b, now) < 1.0 => Err(self.wait(self.level(*b, now))),
            _ => Ok(()),
        }
    }

    /// Takes a token, or says how long until one is there.
    pub fn take(&mut self, source: IpAddr, now: Instant) -> Result<(), Duration> {
        let key = source_key(source);
        if !self.buckets.contains_key(&key) && self.buckets.len() >= MAX_TRACKED_SOURCES {
            self.make_room(now);
        }
        let current = self
            .buckets
            .get(&key)
            .map_or(self.burst, |b| self.level(*b, now));
        if current < 1.0 {
            self.buckets.insert(
                key,
                Bucket {
                    tokens: current,
                    at: now,
                },
            );
            return Err(self.wait(current));
        }
        self.buckets.insert(
            key,
            Bucket {
                tokens: current - 1.0,
                at: now,
            },
        );
        Ok(())
    }

    /// How long until a bucket at `level` holds a token (forever at a rate of 0).
    fn wait(&self, level: f64) -> Duration {
        Duration::try_from_secs_f64((1.0 - level) / self.rate).unwrap_or(Duration::MAX)
    }

    /// Forgets full buckets (as good as absent), then the least recently used one if need be.
    fn make_room(&mut self, now: Instant) {
        let (rate, burst) = (self.rate, self.burst);
        self.buckets.retain(|_, b| {
            let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
            b.tokens + elapsed * rate < burst
        });
        if self.buckets.len() >= MAX_TRACKED_SOURCES {
            if let Some(oldest) = self
                .buckets
                .iter()
                .min_by_key(|(_, b)| b.at)
                .map(|(k, _)| *k)
            {
                self.buckets.remove(&oldest);
            }
        }
    }

    pub fn tracked(&self) -> usize {
        self.buckets.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limiter_memory_is_bounded() {
        let now = Instant::now();
        let mut limiter = RateLimiter::new(1.0, 2.0);
        for i in 0..(MAX_TRACKED_SOURCES as u32 + 500) {
            let ip = IpAddr::V4((0x0a00_0000 + i).into());
            assert!(limiter.take(ip, now).is_ok());
            assert!(limiter.tracked() <= MAX_TRACKED_SOURCES);
        }
        // Idle buckets are the first to go: a source that refilled is as good as new.
        let later = now + Duration::from_secs(10);
        limiter
            .take("192.0.2.1".parse().expect("ip"), later)
            .expect("token");
        assert_eq!(limiter.tracked(), 1);
    }

    #[test]
    fn a_rate_of_zero_never_refills_and_does_not_panic() {
        let now = Instant::now();
        let ip: IpAddr = "192.0.2.1".parse().expect("ip");
        let mut limiter = RateLimiter::new(0.0, 1.0);
        assert!(limiter.take(ip, now).is_ok());
        assert_eq!(limiter.take(ip, now), Err(Duration::MAX));
        assert_eq!(
            limiter.check(ip, now + Duration::from_secs(3600)),
            Err(Duration::MAX)
        );
    }

    #[test]
    fn sources_count_per_ipv4_address_and_ipv6_prefix() {
        let key = |s: &str| source_key(s.parse().expect("ip"));
        assert_eq!(key("2001:db8:1:2::1"), key("2001:db8:1:2:ffff::9"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_eq!(key("::ffff:192.0.2.7"), key("192.0.2.7"));
        assert_ne!(key("192.0.2.7"), key("192.0.2.8"));
    }
}

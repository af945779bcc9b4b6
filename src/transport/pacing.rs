//! Send pacing: a token bucket on new requests plus a cap on unanswered transactions.
//!
//! A gateway started with 100,000 rows must not fire 100,000 REGISTERs in the same millisecond:
//! registrars (and our own socket buffers) drop such bursts, the drops turn into retransmissions,
//! and the retransmissions make it worse. The rate limit spreads new requests evenly; the
//! in-flight cap makes the rate adapt to a registrar that answers slowly. Retransmissions are not
//! paced — they belong to requests already admitted.

use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PacingConfig {
    /// New requests per second (0 = unlimited).
    pub rate: u32,
    /// Requests that may go out back to back before the rate applies.
    pub burst: u32,
    /// Unanswered transactions allowed at once (0 = unlimited).
    pub max_in_flight: usize,
}

impl Default for PacingConfig {
    fn default() -> Self {
        // 100 unanswered requests keep a nearby registrar busy while their answers still fit
        // the kernel's default UDP receive buffer (208 KiB, charged at ~2 KiB per datagram).
        PacingConfig {
            rate: 5000,
            burst: 200,
            max_in_flight: 100,
        }
    }
}

/// Token bucket driven by explicit time.
#[derive(Debug)]
pub struct Pacer {
    config: PacingConfig,
    tokens: f64,
    last: Instant,
}

impl Pacer {
    pub fn new(config: PacingConfig, now: Instant) -> Pacer {
        Pacer {
            config,
            tokens: f64::from(config.burst.max(1)),
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        let cap = f64::from(self.config.burst.max(1));
        self.tokens = (self.tokens + elapsed * f64::from(self.config.rate)).min(cap);
    }

    /// Takes permission for one new request, given how many transactions are unanswered.
    pub fn try_admit(&mut self, now: Instant, in_flight: usize) -> bool {
        if self.config.max_in_flight != 0 && in_flight >= self.config.max_in_flight {
            return false;
        }
        if self.config.rate == 0 {
            return true;
        }
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// When the next token will be there (None when only the in-flight cap can hold us back,
    /// which answers and timeouts release).
    pub fn next_token_at(&self, now: Instant) -> Option<Instant> {
        if self.config.rate == 0 || self.tokens >= 1.0 {
            return None;
        }
        let missing = 1.0 - self.tokens;
        let wait = Duration::from_secs_f64(missing / f64::from(self.config.rate));
        Some(now.max(self.last) + wait)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_is_respected_after_the_burst() {
        let t0 = Instant::now();
        let config = PacingConfig {
            rate: 100,
            burst: 10,
            max_in_flight: 0,
        };
        let mut pacer = Pacer::new(config, t0);
        let mut admitted = 0;
        // One simulated second in 1 ms steps.
        for ms in 0..1000u64 {
            let now = t0 + Duration::from_millis(ms);
            while pacer.try_admit(now, 0) {
                admitted += 1;
            }
        }
        assert!((105..=111).contains(&admitted), "{admitted}");
    }

    #[test]
    fn in_flight_cap_blocks() {
        let t0 = Instant::now();
        let config = PacingConfig {
            rate: 0,
            burst: 1,
            max_in_flight: 3,
        };
        let mut pacer = Pacer::new(config, t0);
        assert!(pacer.try_admit(t0, 2));
        assert!(!pacer.try_admit(t0, 3));
    }

    #[test]
    fn next_token_time_is_reported() {
        let t0 = Instant::now();
        let config = PacingConfig {
            rate: 10,
            burst: 1,
            max_in_flight: 0,
        };
        let mut pacer = Pacer::new(config, t0);
        assert!(pacer.try_admit(t0, 0));
        assert!(!pacer.try_admit(t0, 0));
        assert_eq!(
            pacer.next_token_at(t0),
            Some(t0 + Duration::from_millis(100))
        );
    }
}

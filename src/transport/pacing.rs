//! Send pacing: a token bucket on new requests plus a cap on unanswered transactions.
//!
//! A gateway started with 100,000 rows must not fire 100,000 REGISTERs in the same millisecond:
//! registrars (and our own socket buffers) drop such bursts, the drops turn into retransmissions,
//! and the retransmissions make it worse. The rate limit spreads new requests evenly; the
//! in-flight cap makes the rate adapt to a registrar that answers slowly. Retransmissions are not
//! paced — they belong to requests already admitted.
//!
//! The cap itself adapts the way TCP's congestion window does: a retransmission or a timeout
//! (a registrar that did not answer within T1) halves it, at most once per second, down to
//! [`MIN_WINDOW`]; every answer grows it by 1/window, so it climbs back by one per round
//! trip up to `max_in_flight`. An overloaded registrar thus gets fewer new requests instead of
//! more retransmissions of a full window.

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

/// The smallest in-flight window back-off goes down to.
pub const MIN_WINDOW: f64 = 4.0;

/// Back-off halves the window at most once per this long: one loss event, many late answers.
const CUT_SPACING: Duration = Duration::from_secs(1);

/// While requests wait for tokens, the driver is woken when this long's worth has gathered,
/// not for every single token. Each wake-up costs a trip through the kernel's scheduler (on a
/// VM about as much as sending a request); at 10,000 requests a second, waking per token was
/// most wake-ups of the registering daemon. Five milliseconds is far below anything a
/// registrar or a SIP timer notices, and small enough that a batch (50 at 10,000/s) is no
/// burst for a registrar's socket.
const TOKEN_GATHERING: Duration = Duration::from_millis(5);

/// Token bucket and adaptive in-flight window, driven by explicit time.
#[derive(Debug)]
pub struct Pacer {
    config: PacingConfig,
    tokens: f64,
    last: Instant,
    /// Unanswered transactions allowed now (≤ `max_in_flight`).
    window: f64,
    last_cut: Option<Instant>,
    cuts: u64,
}

impl Pacer {
    pub fn new(config: PacingConfig, now: Instant) -> Pacer {
        Pacer {
            config,
            tokens: f64::from(config.burst.max(1)),
            last: now,
            window: config.max_in_flight as f64,
            last_cut: None,
            cuts: 0,
        }
    }

    /// An answer arrived: the window grows by one per window's worth of answers.
    pub fn on_answer(&mut self) {
        let max = self.config.max_in_flight as f64;
        if max > 0.0 && self.window < max {
            self.window = (self.window + 1.0 / self.window).min(max);
        }
    }

    /// A request had to be retransmitted or timed out: the registrar (or the path) is not
    /// keeping up, so halve the window (once per loss event).
    pub fn on_late(&mut self, now: Instant) {
        if self.config.max_in_flight == 0 {
            return;
        }
        if self
            .last_cut
            .is_some_and(|at| now.saturating_duration_since(at) < CUT_SPACING)
        {
            return;
        }
        self.last_cut = Some(now);
        self.cuts += 1;
        let floor = MIN_WINDOW.min(self.config.max_in_flight as f64);
        self.window = (self.window / 2.0).max(floor);
    }

    /// The in-flight window now, and how many times it was cut.
    pub fn window(&self) -> (usize, u64) {
        (self.window as usize, self.cuts)
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        let cap = f64::from(self.config.burst.max(1));
        self.tokens = (self.tokens + elapsed * f64::from(self.config.rate)).min(cap);
    }

    /// Takes permission for one new request, given how many transactions are unanswered.
    pub fn try_admit(&mut self, now: Instant, in_flight: usize) -> bool {
        if self.config.max_in_flight != 0 && in_flight as f64 >= self.window.floor() {
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

    /// When tokens for the `waiting` requests will be there, or for as many as
    /// [`TOKEN_GATHERING`] brings if that is fewer (None when only the in-flight cap can hold
    /// us back, which answers and timeouts release).
    pub fn next_token_at(&self, now: Instant, waiting: usize) -> Option<Instant> {
        if self.config.rate == 0 || self.tokens >= 1.0 {
            return None;
        }
        let rate = f64::from(self.config.rate);
        let gathered = (rate * TOKEN_GATHERING.as_secs_f64())
            .min(f64::from(self.config.burst.max(1)))
            .min(waiting as f64)
            .max(1.0);
        let missing = gathered - self.tokens;
        let wait = Duration::from_secs_f64(missing / rate);
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
    fn late_answers_halve_the_window_and_answers_grow_it_back() {
        let t0 = Instant::now();
        let config = PacingConfig {
            rate: 0,
            burst: 1,
            max_in_flight: 64,
        };
        let mut pacer = Pacer::new(config, t0);
        assert!(pacer.try_admit(t0, 63));
        pacer.on_late(t0);
        // Many late answers of the same loss event cut once.
        pacer.on_late(t0 + Duration::from_millis(300));
        assert_eq!(pacer.window(), (32, 1));
        assert!(!pacer.try_admit(t0, 32));
        assert!(pacer.try_admit(t0, 31));
        for i in 1..10u64 {
            pacer.on_late(t0 + Duration::from_secs(i));
        }
        assert_eq!(pacer.window().0, MIN_WINDOW as usize);
        // Additive increase: about one per window of answers, never past the configured cap.
        for _ in 0..5 {
            pacer.on_answer();
        }
        assert_eq!(pacer.window().0, 5);
        for _ in 0..10_000 {
            pacer.on_answer();
        }
        assert_eq!(pacer.window().0, 64);
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
            pacer.next_token_at(t0, 5),
            Some(t0 + Duration::from_millis(100))
        );
    }

    #[test]
    fn waiting_requests_are_woken_for_in_batches() {
        let t0 = Instant::now();
        let config = PacingConfig {
            rate: 10_000,
            burst: 200,
            max_in_flight: 0,
        };
        let mut pacer = Pacer::new(config, t0);
        while pacer.try_admit(t0, 0) {}
        // A crowd waits: woken once 5 ms of tokens (50) are there, not for each.
        let at = pacer.next_token_at(t0, 1000).unwrap();
        assert_eq!(at.duration_since(t0).as_micros(), 5000);
        let mut admitted = 0;
        while pacer.try_admit(at, 0) {
            admitted += 1;
        }
        assert_eq!(admitted, 50);
        // A single request waits for its own token only.
        let at = pacer.next_token_at(at, 1).unwrap();
        assert!(at.duration_since(t0).as_micros() <= 5100);
        // A small burst caps the batch.
        let config = PacingConfig {
            rate: 10_000,
            burst: 8,
            max_in_flight: 0,
        };
        let mut pacer = Pacer::new(config, t0);
        while pacer.try_admit(t0, 0) {}
        let at = pacer.next_token_at(t0, 1000).unwrap();
        assert_eq!(at.duration_since(t0).as_micros(), 800);
    }
}

//! Exponential back-off with jitter, the one schedule of every loop that retries something that
//! failed: connecting to the database, LISTENing for its notifications, the first load, and
//! `accept` on the listeners.
//!
//! Why jitter: whatever failed together — every accept loop when descriptors run out, every
//! uacregd of a cluster when their database restarts — would otherwise retry in lockstep and meet
//! the recovering peer at the same instants, every time. Each delay is drawn from the upper half
//! of its nominal value ("equal jitter"): the nominal value grows by the factor up to the cap as
//! before, so a delay is never longer than it used to be and never shorter than half of that, but
//! no two loops keep the same beat. Jitter needs no secrecy, so the thread-local generator does
//! (or a seeded one, for the engine's simulations).
//!
//! No clock and no I/O here: a loop asks [`Backoff::next_delay`] after a failure, sleeps for it,
//! and calls [`Backoff::reset`] once it succeeds.

use std::time::Duration;

use rand::Rng;

/// The delays of one retry loop.
#[derive(Clone, Debug)]
pub struct Backoff {
    first: Duration,
    cap: Duration,
    factor: u32,
    /// The next delay before jitter.
    nominal: Duration,
    /// Failures since the last reset.
    failures: u32,
}

impl Backoff {
    /// Doubling from `first` up to `cap` (a `cap` below `first` is raised to it).
    pub fn new(first: Duration, cap: Duration) -> Backoff {
        Backoff {
            first,
            cap: cap.max(first),
            factor: 2,
            nominal: first,
            failures: 0,
        }
    }

    /// Grows by `factor` instead of 2 (1: the same nominal delay every time, still jittered).
    pub fn with_factor(mut self, factor: u32) -> Backoff {
        self.factor = factor.max(1);
        self
    }

    /// How long to wait after a failure: between half the nominal delay and all of it. The
    /// nominal delay then grows for the next failure.
    pub fn next_delay(&mut self) -> Duration {
        self.next_delay_with(&mut rand::rng())
    }

    /// [`Backoff::next_delay`] with the jitter drawn from `rng` (a seeded generator makes a
    /// simulation repeatable).
    pub fn next_delay_with<R: Rng + ?Sized>(&mut self, rng: &mut R) -> Duration {
        let delay = equal_jitter(self.nominal, rng);
        self.nominal = self.nominal.saturating_mul(self.factor).min(self.cap);
        self.failures = self.failures.saturating_add(1);
        delay
    }

    /// After a success: the next failure waits about `first` again.
    pub fn reset(&mut self) {
        self.nominal = self.first;
        self.failures = 0;
    }

    /// Failures since the last reset (0: the next one starts a streak).
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

/// A delay drawn evenly from `nominal / 2 ..= nominal`.
fn equal_jitter<R: Rng + ?Sized>(nominal: Duration, rng: &mut R) -> Duration {
    let half = nominal / 2;
    rng.random_range(half..=nominal)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// Each delay within the upper half of its nominal value.
    fn assert_in_upper_half(delay: Duration, nominal: Duration) {
        assert!(
            delay >= nominal / 2 && delay <= nominal,
            "{delay:?} outside {:?}..={nominal:?}",
            nominal / 2
        );
    }

    #[test]
    fn delays_double_up_to_the_cap_each_in_the_upper_half() {
        let mut backoff = Backoff::new(10 * MS, 1000 * MS);
        let nominal = [10, 20, 40, 80, 160, 320, 640, 1000, 1000, 1000];
        for (failure, expected) in nominal.into_iter().enumerate() {
            assert_eq!(backoff.failures(), failure as u32);
            assert_in_upper_half(backoff.next_delay(), expected * MS);
        }
    }

    #[test]
    fn another_factor_and_a_fixed_interval() {
        let mut backoff = Backoff::new(MS, 100 * MS).with_factor(3);
        for expected in [1, 3, 9, 27, 81, 100] {
            assert_in_upper_half(backoff.next_delay(), expected * MS);
        }
        let mut fixed = Backoff::new(10 * MS, 10 * MS).with_factor(1);
        for _ in 0..5 {
            assert_in_upper_half(fixed.next_delay(), 10 * MS);
        }
        // A cap below the first delay does not shorten it.
        assert_in_upper_half(Backoff::new(10 * MS, MS).next_delay(), 10 * MS);
    }

    #[test]
    fn jitter_spreads_over_the_whole_upper_half() {
        let nominal = Duration::from_secs(1);
        let delays: Vec<Duration> = (0..2000)
            .map(|_| Backoff::new(nominal, nominal).next_delay())
            .collect();
        for delay in &delays {
            assert_in_upper_half(*delay, nominal);
        }
        // Both quarters of the range are drawn from, and the draws differ: 2,000 draws landing
        // all in one quarter would be a (1/2)^2000 accident.
        let low = delays.iter().filter(|d| **d < nominal * 3 / 4).count();
        assert!(low > 0 && low < delays.len(), "{low} of 2000 below 750 ms");
        let mut distinct = delays.clone();
        distinct.sort();
        distinct.dedup();
        assert!(distinct.len() > 1000, "{} distinct delays", distinct.len());
    }

    #[test]
    fn reset_starts_from_the_first_delay_again() {
        let mut backoff = Backoff::new(10 * MS, 1000 * MS);
        for _ in 0..6 {
            backoff.next_delay();
        }
        assert_eq!(backoff.failures(), 6);
        backoff.reset();
        assert_eq!(backoff.failures(), 0);
        assert_in_upper_half(backoff.next_delay(), 10 * MS);
        assert_in_upper_half(backoff.next_delay(), 20 * MS);
    }
}

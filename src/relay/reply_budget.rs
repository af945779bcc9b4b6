//! How many answers strangers may get per second, all of them together.
//!
//! Anyone can send us a datagram with someone else's source address; every answer we give to
//! an untrusted sender may land on a victim. Per-source limits do not help against that (the
//! sources are forged and countless), so one global token bucket caps the total: `rate`
//! answers per second, up to one second's worth at once. Answers over the budget are not sent
//! (and counted). Trusted senders — registrars, configured networks — are never limited.

use std::time::Instant;

/// A token bucket driven by explicit time.
#[derive(Debug)]
pub(super) struct ReplyBudget {
    /// Tokens per second, and the most that can be saved up.
    rate: f64,
    tokens: f64,
    last: Option<Instant>,
}

impl ReplyBudget {
    /// `rate` answers per second with a burst of as many; 0 answers nobody.
    pub(super) fn new(rate: u32) -> ReplyBudget {
        ReplyBudget {
            rate: f64::from(rate),
            tokens: f64::from(rate),
            last: None,
        }
    }

    /// Takes one token if there is one.
    pub(super) fn try_take(&mut self, now: Instant) -> bool {
        if let Some(last) = self.last
            && now > last
        {
            let refill = now.duration_since(last).as_secs_f64() * self.rate;
            self.tokens = (self.tokens + refill).min(self.rate);
        }
        if self.last.is_none_or(|last| now > last) {
            self.last = Some(now);
        }
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_burst_then_the_rate() {
        let start = Instant::now();
        let mut budget = ReplyBudget::new(20);
        let burst = (0..100).filter(|_| budget.try_take(start)).count();
        assert_eq!(burst, 20);
        // 100 ms later: two more.
        let later = start + Duration::from_millis(100);
        assert_eq!((0..100).filter(|_| budget.try_take(later)).count(), 2);
        // A long pause saves up one second's worth, no more.
        let much_later = later + Duration::from_secs(60);
        assert_eq!((0..100).filter(|_| budget.try_take(much_later)).count(), 20);
        // Time going backwards (it does not, but) gives nothing.
        assert!(!budget.try_take(start));
    }

    #[test]
    fn zero_answers_nobody() {
        let start = Instant::now();
        let mut budget = ReplyBudget::new(0);
        assert!(!budget.try_take(start));
        assert!(!budget.try_take(start + Duration::from_secs(10)));
    }
}

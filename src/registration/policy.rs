//! When to send the next REGISTER: refresh timing after a success and back-off after a failure.
//!
//! All of the "how long do we wait" decisions live here so that they can be read, tuned and
//! tested in one place. Jitter is applied everywhere a whole fleet of rows could otherwise act in
//! lock-step (a start-up of 100,000 rows, a registrar outage that fails them all at once).

use std::time::Duration;

/// Tunable retry and refresh behaviour.
#[derive(Clone, Debug, PartialEq)]
pub struct RetryPolicy {
    /// Delay before the first retry after a failure.
    pub first_retry: Duration,
    /// Upper bound of the exponential back-off.
    pub max_retry: Duration,
    /// Delay after the registrar rejected our credentials (or challenged a row without any):
    /// retrying faster cannot help and only looks like a brute-force attempt.
    pub auth_failure_retry: Duration,
    /// Fraction of each delay that is randomised (0.2 → the delay is drawn from 80 %–100 %).
    pub jitter: f64,
    /// Largest `Min-Expires` (423) we accept raising our expiry to.
    pub max_expires: u32,
    /// Longest `Retry-After` we honour; a larger value is capped (a misbehaving registrar should
    /// not park a row for days).
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            first_retry: Duration::from_secs(30),
            max_retry: Duration::from_secs(30 * 60),
            auth_failure_retry: Duration::from_secs(30 * 60),
            jitter: 0.2,
            max_expires: 86_400,
            max_retry_after: Duration::from_secs(6 * 3600),
        }
    }
}

impl RetryPolicy {
    /// How long after a successful REGISTER granting `granted` seconds the refresh is sent.
    ///
    /// The margin before expiry is 10 % of the grant, at least 5 s and at most 5 minutes, and
    /// never more than half the grant: long enough to survive a full set of UDP retransmissions
    /// (32 s) for ordinary expiries, short enough not to double the REGISTER rate for short ones.
    /// Up to a further 5 % is taken off at random so that rows registered together drift apart.
    pub fn refresh_after(&self, granted: u32, rng: &mut fastrand::Rng) -> Duration {
        let granted_ms = u64::from(granted) * 1000;
        let margin = (granted_ms / 10).clamp(5_000, 300_000).min(granted_ms / 2);
        let spread = granted_ms / 20;
        let jitter = if spread > 0 { rng.u64(0..=spread) } else { 0 };
        Duration::from_millis(
            granted_ms
                .saturating_sub(margin)
                .saturating_sub(jitter)
                .max(1000),
        )
    }

    /// Delay before retry number `attempt` (1 for the first retry) after a temporary failure,
    /// honouring a registrar's `Retry-After` when it gave one.
    pub fn retry_after_failure(
        &self,
        attempt: u32,
        retry_after: Option<u32>,
        rng: &mut fastrand::Rng,
    ) -> Duration {
        if let Some(seconds) = retry_after {
            // The registrar told us when; add a little spread so an outage does not end in a
            // synchronised storm, but never come back earlier than asked.
            let asked = Duration::from_secs(u64::from(seconds)).min(self.max_retry_after);
            let extra = asked.mul_f64(self.jitter * rng.f64());
            return asked + extra;
        }
        let exponent = attempt.saturating_sub(1).min(16);
        let base = self
            .first_retry
            .saturating_mul(1u32 << exponent)
            .min(self.max_retry);
        self.jittered(base, rng)
    }

    /// Delay after an authentication failure.
    pub fn retry_after_auth_failure(&self, rng: &mut fastrand::Rng) -> Duration {
        self.jittered(self.auth_failure_retry, rng)
    }

    fn jittered(&self, base: Duration, rng: &mut fastrand::Rng) -> Duration {
        base.mul_f64(1.0 - self.jitter * rng.f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_comes_before_expiry_with_a_margin() {
        let policy = RetryPolicy::default();
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..1000 {
            let at = policy.refresh_after(3600, &mut rng);
            assert!(at <= Duration::from_secs(3300), "{at:?}");
            assert!(at >= Duration::from_secs(3300 - 180), "{at:?}");
            let short = policy.refresh_after(60, &mut rng);
            assert!(short <= Duration::from_secs(54) && short >= Duration::from_secs(51));
            let tiny = policy.refresh_after(2, &mut rng);
            assert!(tiny >= Duration::from_secs(1));
        }
    }

    #[test]
    fn backoff_grows_then_caps() {
        let policy = RetryPolicy::default();
        let mut rng = fastrand::Rng::with_seed(1);
        let first = policy.retry_after_failure(1, None, &mut rng);
        assert!(first <= Duration::from_secs(30) && first >= Duration::from_secs(24));
        let third = policy.retry_after_failure(3, None, &mut rng);
        assert!(third <= Duration::from_secs(120) && third >= Duration::from_secs(96));
        let late = policy.retry_after_failure(40, None, &mut rng);
        assert!(late <= Duration::from_secs(1800));
    }

    #[test]
    fn retry_after_is_never_shortened() {
        let policy = RetryPolicy::default();
        let mut rng = fastrand::Rng::with_seed(3);
        for _ in 0..100 {
            let d = policy.retry_after_failure(1, Some(120), &mut rng);
            assert!(d >= Duration::from_secs(120) && d <= Duration::from_secs(144));
        }
        let capped = policy.retry_after_failure(1, Some(u32::MAX), &mut rng);
        assert!(capped <= Duration::from_secs(6 * 3600 * 12 / 10));
    }
}

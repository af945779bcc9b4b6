//! When to send the next REGISTER: refresh timing after a success and back-off after a failure.
//!
//! All of the "how long do we wait" decisions live here so that they can be read, tuned and
//! tested in one place. Jitter is applied everywhere a whole fleet of rows could otherwise act in
//! lock-step (a start-up of 100,000 rows, a registrar outage that fails them all at once).

use std::time::Duration;

use rand::Rng;
use rand::rngs::StdRng;

/// What went wrong with an attempt, as far as the retry decision cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// No final response (timer F) or the request could not be sent.
    NoResponse,
    /// A final error response (not 401/407/423, which have their own handling).
    Response(u16),
    /// The registrar rejected our credentials, challenged a row that has none, or challenged in a
    /// way the row's credentials cannot answer.
    Credentials,
    /// The challenge named a realm other than the row's.
    RealmMismatch,
}

/// How a failure is classified: worth retrying soon, or a problem retrying will not fix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureClass {
    /// Network trouble or an overloaded/unavailable registrar: back off and try again.
    Temporary,
    /// 403 Forbidden.
    Forbidden,
    /// Any other 3xx-6xx that says the request itself is wrong (404, 400, 484, …).
    Fatal,
    /// Wrong credentials.
    Credentials,
    /// Realm mismatch: our configuration and the registrar's disagree.
    RealmMismatch,
}

impl Failure {
    /// RFC 3261 §21 read for registrations: 408, 500, 502, 503, 504 and the 6xx class are worth
    /// retrying, and so is any other 5xx (a server problem); 403 and the remaining 3xx/4xx mean
    /// the same REGISTER would fail again.
    pub fn class(self) -> FailureClass {
        match self {
            Failure::NoResponse => FailureClass::Temporary,
            Failure::Credentials => FailureClass::Credentials,
            Failure::RealmMismatch => FailureClass::RealmMismatch,
            Failure::Response(403) => FailureClass::Forbidden,
            Failure::Response(408) | Failure::Response(500..=699) => FailureClass::Temporary,
            Failure::Response(_) => FailureClass::Fatal,
        }
    }
}

/// What to do after a failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Try again after this long.
    RetryIn(Duration),
    /// Stop retrying; the row stays failed until the operator enables, refreshes or reloads it.
    GiveUp,
}

/// Tunable retry and refresh behaviour.
#[derive(Clone, Debug, PartialEq)]
pub struct RetryPolicy {
    /// Delay before the first retry after a temporary failure.
    pub first_retry: Duration,
    /// Upper bound of the exponential back-off.
    pub max_retry: Duration,
    /// Consecutive temporary failures after which a row gives up (None: never).
    pub max_retries: Option<u32>,
    /// Retry interval after a 403 (None: a 403 is permanent).
    pub forbidden_retry: Option<Duration>,
    /// Retry interval after other 3xx/4xx answers (None: permanent).
    pub fatal_retry: Option<Duration>,
    /// Retry interval after wrong credentials (None: permanent). Retrying faster cannot help and
    /// only looks like a brute-force attempt to the registrar.
    pub auth_failure_retry: Option<Duration>,
    /// Fraction of each delay that is randomised (0.5 → the delay is drawn from 50 %–100 %).
    /// Wide on purpose: rows that failed together (a registrar outage) must not retry together.
    pub jitter: f64,
    /// Largest `Min-Expires` (423) we accept raising our expiry to, and the longest grant we
    /// believe: a binding is refreshed at the latest as if this had been granted.
    pub max_expires: u32,
    /// Longest `Retry-After` we honour; a larger value is capped (a misbehaving registrar should
    /// not park a row for days).
    pub max_retry_after: Duration,
    /// A new row's first REGISTER waits `reg_delay` plus a random share of this, so a start-up
    /// or a reload of many rows is spread out even before the transport's pacing.
    pub start_spread: Duration,
    /// Largest fraction of the table's registrations whose refresh may be scheduled in any one
    /// second (0: refreshes are not spread). The cap is `max(1, ceil(share × rows))` refreshes a
    /// second; a refresh whose second is full goes in the latest earlier second with room, but
    /// never earlier than half its grant (see [`RetryPolicy::earliest_refresh`]).
    ///
    /// The default, 0.002 (0.2 %), is 200 a second for 100,000 rows. A table that registered all
    /// at once then needs 1 / 0.002 = 500 seconds of refresh slots, and with 3,600 s grants each
    /// row's window runs from 1,800 s (half the grant) to its refresh point at 3,120–3,300 s:
    /// at least 1,320 s, so the whole bunch fits below the cap with room to spare, no refresh
    /// moves more than ~500 s earlier (once: the next round starts spread), and every refresh
    /// still goes before expiry. Steady refreshing of 3,600 s grants is about 1/3,000 of the
    /// table a second (0.033 %), far below the cap, so only bunches are moved. A smaller share
    /// moves refreshes further forward (more REGISTERs in that round); below about
    /// 1 / window (0.00076 for 3,600 s grants) a full bunch no longer fits and the least-loaded
    /// seconds take the excess, which is still the flattest spread the window allows.
    pub max_refresh_share: f64,
    /// Longest a request may stay in flight — waiting in the send queue, or since it last went
    /// out — before the registration counts it as unanswered, whatever became of it. The
    /// transaction's own timer F normally ends it much sooner; this guard is what recovers a row
    /// when an answer was taken and then refused, a request was lost before it was sent, or
    /// anything else left the row waiting for an answer that cannot come. It must exceed timer F
    /// and the longest wait in the send queue (the driver raises it to twice timer F at least).
    /// A guard armed less than a sixteenth of this ago is kept rather than re-armed (an answer
    /// to a challenge sent milliseconds after its request), so a request may get 15/16 of it.
    pub in_flight_guard: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            first_retry: Duration::from_secs(30),
            max_retry: Duration::from_secs(30 * 60),
            max_retries: None,
            forbidden_retry: None,
            fatal_retry: None,
            auth_failure_retry: None,
            jitter: 0.5,
            max_expires: 86_400,
            max_retry_after: Duration::from_secs(6 * 3600),
            start_spread: Duration::ZERO,
            max_refresh_share: 0.002,
            // Five minutes: 100,000 rows leave the send queue in well under a minute at the
            // default pacing, and timer F is 32 s.
            in_flight_guard: Duration::from_secs(300),
        }
    }
}

impl RetryPolicy {
    /// Decides what follows failure number `consecutive` (1 for the first since the last
    /// success). A realm mismatch backs off like a temporary failure: no credentials leave, and
    /// the registrar may be fixed without anyone touching the row.
    pub fn after_failure(
        &self,
        failure: Failure,
        consecutive: u32,
        retry_after: Option<u32>,
        rng: &mut StdRng,
    ) -> Verdict {
        let fixed = |interval: Option<Duration>, rng: &mut StdRng| match interval {
            Some(interval) => Verdict::RetryIn(self.jittered(interval, rng)),
            None => Verdict::GiveUp,
        };
        match failure.class() {
            FailureClass::Forbidden => fixed(self.forbidden_retry, rng),
            FailureClass::Fatal => fixed(self.fatal_retry, rng),
            FailureClass::Credentials => fixed(self.auth_failure_retry, rng),
            FailureClass::Temporary | FailureClass::RealmMismatch => {
                if self.max_retries.is_some_and(|max| consecutive > max) {
                    Verdict::GiveUp
                } else {
                    Verdict::RetryIn(self.retry_after_failure(consecutive, retry_after, rng))
                }
            }
        }
    }

    /// Delay of a new row's first REGISTER: its `reg_delay` plus a random part of
    /// `start_spread`.
    pub fn first_register_after(&self, reg_delay: u32, rng: &mut StdRng) -> Duration {
        let spread = self.start_spread.as_millis() as u64;
        let extra = if spread > 0 {
            rng.random_range(0..=spread)
        } else {
            0
        };
        Duration::from_secs(u64::from(reg_delay)) + Duration::from_millis(extra)
    }

    /// How long after a successful REGISTER granting `granted` seconds the refresh is sent.
    ///
    /// The margin before expiry is 10 % of the grant, at least 5 s and at most 5 minutes, and
    /// never more than half the grant: long enough to survive a full set of UDP retransmissions
    /// (32 s) for ordinary expiries, short enough not to double the REGISTER rate for short ones.
    /// Up to a further 5 % is taken off at random so that rows registered together drift apart.
    pub fn refresh_after(&self, granted: u32, rng: &mut StdRng) -> Duration {
        let granted_ms = u64::from(granted) * 1000;
        let margin = (granted_ms / 10).clamp(5_000, 300_000).min(granted_ms / 2);
        let spread = granted_ms / 20;
        let jitter = if spread > 0 {
            rng.random_range(0..=spread)
        } else {
            0
        };
        Duration::from_millis(
            granted_ms
                .saturating_sub(margin)
                .saturating_sub(jitter)
                .max(1000),
        )
    }

    /// The earliest a refresh after a success granting `granted` seconds may be moved to by
    /// spreading: half the grant, so spreading never more than doubles a row's REGISTER rate.
    pub fn earliest_refresh(&self, granted: u32) -> Duration {
        Duration::from_millis(u64::from(granted) * 500)
    }

    /// Refreshes allowed to share one second in a table of `rows` registrations (0: refreshes
    /// are not spread).
    pub fn refresh_cap(&self, rows: usize) -> u32 {
        let share = self.max_refresh_share;
        if share.is_nan() || share <= 0.0 {
            return 0;
        }
        (share * rows as f64).ceil().clamp(1.0, f64::from(u32::MAX)) as u32
    }

    /// Delay before retry number `attempt` (1 for the first retry) after a temporary failure,
    /// honouring a registrar's `Retry-After` when it gave one.
    pub fn retry_after_failure(
        &self,
        attempt: u32,
        retry_after: Option<u32>,
        rng: &mut StdRng,
    ) -> Duration {
        if let Some(seconds) = retry_after {
            // The registrar told us when; add a little spread so an outage does not end in a
            // synchronised storm, but never come back earlier than asked.
            let asked = Duration::from_secs(u64::from(seconds)).min(self.max_retry_after);
            let extra = asked.mul_f64(self.jitter * rng.random::<f64>());
            return asked + extra;
        }
        let exponent = attempt.saturating_sub(1).min(16);
        let base = self
            .first_retry
            .saturating_mul(1u32 << exponent)
            .min(self.max_retry);
        self.jittered(base, rng)
    }

    fn jittered(&self, base: Duration, rng: &mut StdRng) -> Duration {
        base.mul_f64(1.0 - self.jitter * rng.random::<f64>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn refresh_comes_before_expiry_with_a_margin() {
        let policy = RetryPolicy::default();
        let mut rng = StdRng::seed_from_u64(7);
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
        let mut rng = StdRng::seed_from_u64(1);
        let first = policy.retry_after_failure(1, None, &mut rng);
        assert!(first <= Duration::from_secs(30) && first >= Duration::from_secs(15));
        let third = policy.retry_after_failure(3, None, &mut rng);
        assert!(third <= Duration::from_secs(120) && third >= Duration::from_secs(60));
        let late = policy.retry_after_failure(40, None, &mut rng);
        assert!(late <= Duration::from_secs(1800));
    }

    #[test]
    fn classification_follows_the_response() {
        use FailureClass::*;
        for (code, class) in [
            (408, Temporary),
            (500, Temporary),
            (502, Temporary),
            (503, Temporary),
            (504, Temporary),
            (600, Temporary),
            (603, Temporary),
            (403, Forbidden),
            (404, Fatal),
            (400, Fatal),
            (302, Fatal),
        ] {
            assert_eq!(Failure::Response(code).class(), class, "{code}");
        }
        assert_eq!(Failure::NoResponse.class(), Temporary);
    }

    #[test]
    fn permanent_failures_give_up_unless_an_interval_is_set() {
        let mut rng = StdRng::seed_from_u64(9);
        let mut policy = RetryPolicy::default();
        for failure in [
            Failure::Response(403),
            Failure::Response(404),
            Failure::Credentials,
        ] {
            assert_eq!(
                policy.after_failure(failure, 1, None, &mut rng),
                Verdict::GiveUp
            );
        }
        policy.forbidden_retry = Some(Duration::from_secs(600));
        policy.fatal_retry = Some(Duration::from_secs(900));
        policy.auth_failure_retry = Some(Duration::from_secs(1200));
        for (failure, secs) in [
            (Failure::Response(403), 600),
            (Failure::Response(404), 900),
            (Failure::Credentials, 1200),
        ] {
            match policy.after_failure(failure, 1, None, &mut rng) {
                Verdict::RetryIn(d) => {
                    assert!(d <= Duration::from_secs(secs) && d >= Duration::from_secs(secs / 2))
                }
                Verdict::GiveUp => panic!("{failure:?} should retry"),
            }
        }
    }

    #[test]
    fn max_retries_ends_temporary_retrying() {
        let mut rng = StdRng::seed_from_u64(2);
        let policy = RetryPolicy {
            max_retries: Some(3),
            ..RetryPolicy::default()
        };
        assert!(matches!(
            policy.after_failure(Failure::NoResponse, 3, None, &mut rng),
            Verdict::RetryIn(_)
        ));
        assert_eq!(
            policy.after_failure(Failure::NoResponse, 4, None, &mut rng),
            Verdict::GiveUp
        );
        assert!(matches!(
            RetryPolicy::default().after_failure(Failure::Response(503), 1000, None, &mut rng),
            Verdict::RetryIn(_)
        ));
    }

    #[test]
    fn retry_after_is_never_shortened() {
        let policy = RetryPolicy::default();
        let mut rng = StdRng::seed_from_u64(3);
        for _ in 0..100 {
            let d = policy.retry_after_failure(1, Some(120), &mut rng);
            assert!(d >= Duration::from_secs(120) && d <= Duration::from_secs(180));
        }
        let capped = policy.retry_after_failure(1, Some(u32::MAX), &mut rng);
        assert!(capped <= Duration::from_secs(6 * 3600 * 3 / 2));
    }
}

//! Who may hold a connection to the SIP port, and for how long.
//!
//! Every accepted TCP or TLS connection costs a file descriptor, a task and a buffer, and the
//! port faces the Internet: without a ceiling, a thousand idle connections from anyone use up
//! the descriptors our own registrar connections, DNS lookups and database reconnects need.
//! So each accepted connection must first get a [`Permit`] — there are at most
//! `max_connections` of them, and at most `max_connections_per_ip` per source (an IPv4 address
//! or an IPv6 /64, what one host can easily use) — and gives it back when it ends, however it
//! ends. A connection that cannot get one is closed at once and counted. Connections we open
//! to registrars are ours and need no permit.
//!
//! The accept loops also back off when `accept` fails ([`AcceptBackoff`]): failures such as
//! "too many open files" repeat until something closes, and retrying at once only burns CPU.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tracing::warn;

use crate::backoff::Backoff;

/// `[limits]`: the connections peers may hold on the SIP port. Read straight from the config
/// file; none of the three may be 0 (`Config::validate` says so).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConnectionLimits {
    /// Accepted TCP and TLS connections open at once, all peers together.
    pub max_connections: usize,
    /// Accepted connections open at once from one IPv4 address or IPv6 /64.
    pub max_connections_per_ip: usize,
    /// An accepted connection on which no whole SIP message or CRLF ping arrives, and no
    /// message of ours is sent, for this long is closed (`idle_timeout_secs`).
    #[serde(
        rename = "idle_timeout_secs",
        deserialize_with = "crate::config::value::seconds"
    )]
    pub idle_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        // A gateway's inbound connections come from a handful of registrars and proxies; a
        // thousand leaves room for many, well below the usual descriptor limits. Five minutes
        // of idling is over twice RFC 5626's keep-alive interval (95-120 s), so a client that
        // pings is never cut off, and longer than a call rings (INVITE timer C, 3 min).
        ConnectionLimits {
            max_connections: 1000,
            max_connections_per_ip: 16,
            idle_timeout: Duration::from_secs(300),
        }
    }
}

/// Why a connection was turned away.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the connection limit (limits.max_connections) is reached")]
    Total,
    #[error("the per-source connection limit (limits.max_connections_per_ip) is reached")]
    PerSource,
}

/// What the admission counted so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AdmissionCounts {
    /// Accepted connections holding a permit now.
    pub open: usize,
    pub refused_total: u64,
    pub refused_per_source: u64,
    pub accept_errors: u64,
}

/// Hands out [`Permit`]s; shared by the TCP and TLS accept loops (clones share the counts).
#[derive(Clone)]
pub struct Admission {
    shared: Arc<Shared>,
}

struct Shared {
    max_total: usize,
    max_per_source: usize,
    open: Mutex<Open>,
    refused_total: AtomicU64,
    refused_per_source: AtomicU64,
    accept_errors: AtomicU64,
}

#[derive(Default)]
struct Open {
    total: usize,
    by_source: HashMap<IpAddr, usize>,
    /// Refusals are logged at most once a minute; the counters have the rest.
    last_warning: Option<Instant>,
}

/// A place under the limits, held by one accepted connection until it is dropped.
#[derive(Debug)]
pub struct Permit {
    shared: Arc<Shared>,
    source: IpAddr,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admission").finish_non_exhaustive()
    }
}

impl Admission {
    /// `max_total` may be lower than the configured limit when the descriptor limit is.
    pub fn new(max_total: usize, max_per_source: usize) -> Admission {
        Admission {
            shared: Arc::new(Shared {
                max_total,
                max_per_source,
                open: Mutex::new(Open::default()),
                refused_total: AtomicU64::new(0),
                refused_per_source: AtomicU64::new(0),
                accept_errors: AtomicU64::new(0),
            }),
        }
    }

    /// A permit for a connection from `peer`, or why there is none (counted).
    pub fn admit(&self, peer: IpAddr) -> Result<Permit, Refusal> {
        let source = source_of(peer);
        let mut open = self.shared.lock();
        let from_source = open.by_source.get(&source).copied().unwrap_or(0);
        let refusal = if open.total >= self.shared.max_total {
            Some((Refusal::Total, &self.shared.refused_total))
        } else if from_source >= self.shared.max_per_source {
            Some((Refusal::PerSource, &self.shared.refused_per_source))
        } else {
            None
        };
        if let Some((refusal, counter)) = refusal {
            counter.fetch_add(1, Ordering::Relaxed);
            let now = Instant::now();
            if open
                .last_warning
                .is_none_or(|at| now.duration_since(at) >= Duration::from_secs(60))
            {
                open.last_warning = Some(now);
                warn!(
                    %peer,
                    open = open.total,
                    "closing new connections: {refusal} (counted in connections_refused; \
                     logged once a minute)"
                );
            }
            return Err(refusal);
        }
        open.total += 1;
        *open.by_source.entry(source).or_insert(0) += 1;
        drop(open);
        Ok(Permit {
            shared: self.shared.clone(),
            source,
        })
    }

    /// Counts a failed `accept`.
    pub fn accept_failed(&self) {
        self.shared.accept_errors.fetch_add(1, Ordering::Relaxed);
    }

    pub fn counts(&self) -> AdmissionCounts {
        AdmissionCounts {
            open: self.shared.lock().total,
            refused_total: self.shared.refused_total.load(Ordering::Relaxed),
            refused_per_source: self.shared.refused_per_source.load(Ordering::Relaxed),
            accept_errors: self.shared.accept_errors.load(Ordering::Relaxed),
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Open> {
        // The counts stay consistent even if a holder panicked: every update is one step.
        self.open
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut open = self.shared.lock();
        open.total = open.total.saturating_sub(1);
        if let Some(n) = open.by_source.get_mut(&self.source) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.by_source.remove(&self.source);
            }
        }
    }
}

/// The source a connection counts against: its IPv4 address (also when it arrives mapped
/// into IPv6), or the /64 of its IPv6 address, since one host usually holds a whole /64.
fn source_of(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(bits))
        }
    }
}

/// Delays after failed `accept` calls: 10 ms doubling to 1 s, back to 10 ms after a success,
/// each jittered ([`Backoff`]).
#[derive(Debug)]
pub struct AcceptBackoff {
    backoff: Backoff,
}

impl AcceptBackoff {
    const FIRST: Duration = Duration::from_millis(10);
    const MAX: Duration = Duration::from_secs(1);

    pub fn new() -> AcceptBackoff {
        AcceptBackoff {
            backoff: Backoff::new(Self::FIRST, Self::MAX),
        }
    }

    /// How long to wait after this failure; true as the second value when it starts a streak
    /// (worth a log line; the rest of the streak is only counted).
    pub fn failed(&mut self) -> (Duration, bool) {
        let first = self.backoff.failures() == 0;
        (self.backoff.next_delay(), first)
    }

    pub fn succeeded(&mut self) {
        self.backoff.reset();
    }

    /// Accepts with `accept`, waiting after each failure (out of descriptors and the like: the
    /// same error comes back until something closes) instead of spinning. The first failure of
    /// a streak is logged as a warning naming `listener`, the rest at debug level;
    /// `on_failure` hears of every one (for counters).
    pub async fn accept<T, F, Fut>(
        &mut self,
        listener: &str,
        mut accept: F,
        mut on_failure: impl FnMut(),
    ) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = std::io::Result<T>>,
    {
        loop {
            match accept().await {
                Ok(accepted) => {
                    self.succeeded();
                    return accepted;
                }
                Err(err) => {
                    on_failure();
                    let (delay, first) = self.failed();
                    if first {
                        tracing::warn!("{listener}: accept failed: {err}; backing off");
                    } else {
                        tracing::debug!("{listener}: accept failed: {err}; next try in {delay:?}");
                    }
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }
}

impl Default for AcceptBackoff {
    fn default() -> Self {
        AcceptBackoff::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn caps_total_and_per_source_and_frees_on_drop() {
        let admission = Admission::new(5, 2);
        let a1 = admission.admit(ip("192.0.2.1")).unwrap();
        let _a2 = admission.admit(ip("192.0.2.1")).unwrap();
        assert_eq!(
            admission.admit(ip("192.0.2.1")).unwrap_err(),
            Refusal::PerSource
        );
        let _b = admission.admit(ip("192.0.2.2")).unwrap();
        let _c = admission.admit(ip("192.0.2.3")).unwrap();
        let _d = admission.admit(ip("192.0.2.4")).unwrap();
        assert_eq!(
            admission.admit(ip("192.0.2.5")).unwrap_err(),
            Refusal::Total
        );
        drop(a1);
        // A freed place is free for anyone, and its source may use it again.
        let _a3 = admission.admit(ip("192.0.2.1")).unwrap();
        let counts = admission.counts();
        assert_eq!(
            counts,
            AdmissionCounts {
                open: 5,
                refused_total: 1,
                refused_per_source: 1,
                accept_errors: 0,
            }
        );
    }

    #[test]
    fn an_ipv6_slash_64_is_one_source_and_mapped_ipv4_is_ipv4() {
        let admission = Admission::new(100, 2);
        let _a = admission.admit(ip("2001:db8:1:2::1")).unwrap();
        let _b = admission.admit(ip("2001:db8:1:2:ffff::9")).unwrap();
        assert!(admission.admit(ip("2001:db8:1:2::77")).is_err());
        assert!(admission.admit(ip("2001:db8:1:3::1")).is_ok());
        let _c = admission.admit(ip("198.51.100.7")).unwrap();
        let _d = admission.admit(ip("::ffff:198.51.100.7")).unwrap();
        assert_eq!(
            admission.admit(ip("198.51.100.7")).unwrap_err(),
            Refusal::PerSource
        );
    }

    #[test]
    fn backoff_doubles_to_a_second_and_resets() {
        let mut backoff = AcceptBackoff::new();
        let delays: Vec<(Duration, bool)> = (0..9).map(|_| backoff.failed()).collect();
        let within = |delay: Duration, nominal_ms: u64| {
            let nominal = Duration::from_millis(nominal_ms);
            delay >= nominal / 2 && delay <= nominal
        };
        let nominal = [10, 20, 40, 80, 160, 320, 640, 1000, 1000];
        for (i, ((delay, first), expected)) in delays.iter().zip(nominal).enumerate() {
            assert!(within(*delay, expected), "failure {i}: {delay:?}");
            assert_eq!(*first, i == 0, "failure {i}");
        }
        backoff.succeeded();
        let (delay, first) = backoff.failed();
        assert!(within(delay, 10) && first, "{delay:?} {first}");
    }
}

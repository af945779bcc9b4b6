//! RFC 3263 answers by destination: cached until their TTL (failures for
//! [`NEGATIVE_TTL`]), and the requests waiting for a lookup in progress.
//!
//! IP literals never reach DNS: the common case of 100,000 trunk rows costs no lookup at all.
//! Anything else is looked up once per destination at a time; the engine asks the I/O side with
//! [`super::Event::Resolve`] and parks the requests here until the answer comes back.

use std::sync::Arc;
use std::time::{Duration, Instant};

use foldhash::HashMap;
use tracing::{debug, warn};

use super::attempt::Queued;
use super::stats::EngineStats;
use crate::registration::Destination;
use crate::transport::resolve::{Query, ResolveError, Resolved, Target, literal_target};

/// How long resolution failures are remembered before asking DNS again.
pub(crate) const NEGATIVE_TTL: Duration = Duration::from_secs(30);

/// What the cache knows about a destination now.
pub(crate) enum Lookup {
    Ready(Arc<[Target]>),
    Failed(String),
    /// Not known (or expired): look it up.
    Unknown,
}

/// An RFC 3263 answer (or the reason there is none) and until when it may be reused.
type CachedTargets = (Result<Arc<[Target]>, String>, Instant);

#[derive(Default)]
pub(crate) struct TargetCache {
    resolved: HashMap<Destination, CachedTargets>,
    /// Requests waiting for a lookup in progress.
    resolving: HashMap<Destination, Vec<Queued>>,
}

impl TargetCache {
    pub(crate) fn lookup(&self, now: Instant, destination: &Destination) -> Lookup {
        let query = Query {
            host: &destination.host,
            port: destination.port,
            transport: destination.transport,
            secure: destination.secure,
        };
        if let Some(target) = literal_target(&query) {
            return Lookup::Ready(Arc::from(vec![target]));
        }
        match self.resolved.get(destination) {
            Some((result, until)) if now < *until => match result {
                Ok(targets) => Lookup::Ready(targets.clone()),
                Err(why) => Lookup::Failed(why.clone()),
            },
            _ => Lookup::Unknown,
        }
    }

    /// Parks `queued` until its destination is resolved; true when a lookup must start (none
    /// was in progress for it).
    pub(crate) fn wait(&mut self, queued: Queued) -> bool {
        match self.resolving.get_mut(&queued.destination) {
            Some(waiting) => {
                waiting.push(queued);
                false
            }
            None => {
                self.resolving
                    .insert(queued.destination.clone(), vec![queued]);
                true
            }
        }
    }

    /// Keeps a lookup's answer; returns the requests that waited for it.
    pub(crate) fn store(
        &mut self,
        now: Instant,
        destination: &Destination,
        result: Result<Resolved, ResolveError>,
        stats: &mut EngineStats,
    ) -> Vec<Queued> {
        let entry = match result {
            Ok(resolved) if !resolved.targets.is_empty() => {
                debug!(%destination, targets = ?resolved.targets, "resolved");
                (Ok(Arc::from(resolved.targets)), resolved.valid_until)
            }
            Ok(_) => (
                Err(format!("DNS: no SIP server found for {}", destination.host)),
                now + NEGATIVE_TTL,
            ),
            Err(why) => {
                let why = why.to_string();
                warn!("{why}");
                stats.resolve_failures += 1;
                (Err(why), now + NEGATIVE_TTL)
            }
        };
        self.resolved.insert(destination.clone(), entry);
        self.resolving.remove(destination).unwrap_or_default()
    }
}

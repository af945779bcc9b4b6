//! What the registrar remembers about each address of record beyond its current bindings: a
//! journal of every binding change, the moments two clients held it at once, and the intervals
//! it went without any binding.
//!
//! Why: several gateways sharing one table must behave, seen from the registrar, like one. The
//! two ways they can fail are visible only here: two nodes both registering a row (two live
//! bindings from different Call-IDs: calls forked or sent to a node that no longer owns the row)
//! and a row nobody registers for a while (calls to it fail). Overlaps and closed gaps are
//! recorded as REGISTERs arrive, with a comparison against the few bindings the AoR already
//! holds, so they stay on even in the load tool's fast mode; only the journal is optional.

use std::net::SocketAddr;
use std::time::Instant;

/// One stored binding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Binding {
    pub contact: String,
    pub expires_at: Instant,
    /// Call-ID and CSeq of the REGISTER that made or last refreshed it.
    pub call_id: String,
    pub cseq: u32,
    /// Where that REGISTER came from (UDP source, or the TCP/TLS peer).
    pub source: SocketAddr,
}

/// The REGISTER that made a change: its Call-ID, CSeq and source address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    pub call_id: String,
    pub cseq: u32,
    pub source: SocketAddr,
}

/// What happened to a binding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// A contact the AoR did not hold (or held under another Call-ID, which is then `Removed`
    /// first) was bound.
    Added,
    /// The same contact was registered again with the same Call-ID.
    Refreshed,
    /// Taken away before it expired: by `Expires: 0`, `Contact: *`, or a REGISTER binding the
    /// same contact under another Call-ID. `by` is that REGISTER (possibly another client's).
    Removed { by: Origin },
    /// Its expiry passed without a refresh (`at` is the expiry instant itself).
    Expired,
}

/// One change in the life of an AoR's bindings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JournalEntry {
    pub at: Instant,
    pub change: Change,
    /// The binding after an `Added` or `Refreshed`, as it was before a `Removed` or `Expired`.
    pub binding: Binding,
}

/// A REGISTER bound a contact while a binding of another Call-ID was live on the same AoR.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Overlap {
    pub user: String,
    pub at: Instant,
    /// The binding the REGISTER made.
    pub arriving: Binding,
    /// The other client's binding that was still live.
    pub live: Binding,
}

/// An interval during which an AoR that had been registered held no live binding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gap {
    pub user: String,
    /// When its last binding expired or was removed.
    pub start: Instant,
    /// When a binding was added again; `None` while the AoR is still without one.
    pub end: Option<Instant>,
}

/// Whether an AoR holds a live binding, as seen at one instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Liveness {
    Live,
    /// Without a binding since this instant.
    DeadSince(Instant),
    /// Never held a binding.
    Never,
}

/// One address of record: its bindings and what is remembered about them.
#[derive(Debug, Default)]
pub(super) struct AddressOfRecord {
    /// Live ones, and expired ones until the next REGISTER sweeps them.
    pub(super) bindings: Vec<Binding>,
    /// Every change, oldest first; kept only with `keep_history`.
    pub(super) journal: Vec<JournalEntry>,
    /// When the last binding went, once the list has been emptied.
    emptied_at: Option<Instant>,
}

impl AddressOfRecord {
    pub(super) fn live_bindings(&self, now: Instant) -> impl Iterator<Item = &Binding> {
        self.bindings.iter().filter(move |b| b.expires_at > now)
    }

    pub(super) fn liveness(&self, now: Instant) -> Liveness {
        if self.live_bindings(now).next().is_some() {
            return Liveness::Live;
        }
        match self.bindings.iter().map(|b| b.expires_at).max() {
            Some(last) => Liveness::DeadSince(last),
            None => self.emptied_at.map_or(Liveness::Never, Liveness::DeadSince),
        }
    }

    /// Drops expired bindings, journaling each at its expiry instant.
    pub(super) fn sweep(&mut self, now: Instant, keep_history: bool) {
        if keep_history {
            for binding in self.bindings.iter().filter(|b| b.expires_at <= now) {
                self.journal.push(JournalEntry {
                    at: binding.expires_at,
                    change: Change::Expired,
                    binding: binding.clone(),
                });
            }
        }
        self.bindings.retain(|b| b.expires_at > now);
    }

    /// After a REGISTER's changes: the gap it closed, if the AoR was without a binding before
    /// (`before`) and holds one now; remembers when it emptied otherwise.
    pub(super) fn settle(&mut self, user: &str, before: Liveness, now: Instant) -> Option<Gap> {
        if self.bindings.is_empty() {
            self.emptied_at = match before {
                Liveness::Live => Some(now),
                Liveness::DeadSince(start) => Some(start),
                Liveness::Never => None,
            };
            return None;
        }
        self.emptied_at = None;
        match before {
            Liveness::DeadSince(start) => Some(Gap {
                user: user.to_string(),
                start,
                end: Some(now),
            }),
            Liveness::Live | Liveness::Never => None,
        }
    }

    /// The journal as it stands at `now`: what was recorded, then the expiries that passed
    /// since the last REGISTER swept.
    pub(super) fn journal_at(&self, now: Instant) -> Vec<JournalEntry> {
        let mut expired: Vec<JournalEntry> = self
            .bindings
            .iter()
            .filter(|b| b.expires_at <= now)
            .map(|b| JournalEntry {
                at: b.expires_at,
                change: Change::Expired,
                binding: b.clone(),
            })
            .collect();
        expired.sort_by_key(|entry| entry.at);
        let mut entries = self.journal.clone();
        entries.extend(expired);
        entries
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn binding(call_id: &str, expires_at: Instant) -> Binding {
        Binding {
            contact: "sip:dev@127.0.0.1:5999".into(),
            expires_at,
            call_id: call_id.into(),
            cseq: 1,
            source: SocketAddr::from(([127, 0, 0, 1], 5999)),
        }
    }

    #[test]
    fn liveness_follows_expiry_and_emptying() {
        let t0 = Instant::now();
        let mut aor = AddressOfRecord::default();
        assert_eq!(aor.liveness(t0), Liveness::Never);
        aor.bindings
            .push(binding("a", t0 + Duration::from_secs(10)));
        assert_eq!(aor.liveness(t0), Liveness::Live);
        let later = t0 + Duration::from_secs(20);
        assert_eq!(
            aor.liveness(later),
            Liveness::DeadSince(t0 + Duration::from_secs(10))
        );
        // Swept and left empty: it stays dead since the expiry, not since the sweep.
        let before = aor.liveness(later);
        aor.sweep(later, true);
        assert_eq!(aor.settle("u", before, later), None);
        assert_eq!(
            aor.liveness(later + Duration::from_secs(1)),
            Liveness::DeadSince(t0 + Duration::from_secs(10))
        );
        assert_eq!(aor.journal.len(), 1);
        assert_eq!(aor.journal[0].change, Change::Expired);
        assert_eq!(aor.journal[0].at, t0 + Duration::from_secs(10));
        // A new binding closes the gap with both ends.
        let again = t0 + Duration::from_secs(30);
        let before = aor.liveness(again);
        aor.bindings
            .push(binding("b", again + Duration::from_secs(10)));
        let gap = aor.settle("u", before, again).expect("a closed gap");
        assert_eq!(gap.start, t0 + Duration::from_secs(10));
        assert_eq!(gap.end, Some(again));
    }
}

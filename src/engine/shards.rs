//! Which rows this engine may send for, when it is one node of a cluster ([`crate::cluster`]).
//!
//! A clustered engine holds only the rows of the shards its node has leases on, each shard with
//! a deadline. The deadline is enforced here, at the same `now` every send is made at: each
//! `handle_*` and command first drops the rows of shards whose deadline has passed, so nothing
//! can leave for a lapsed shard however late the I/O side calls in. Rows are dropped without
//! an un-REGISTER; their dialogs ([`Continuation`]) go to whoever holds the shard next.

use std::collections::BTreeMap;
use std::time::Instant;

use tracing::{info, warn};

use super::Engine;
use crate::cluster::shard_of;
use crate::registration::{Continuation, Record};

/// The held shards and their deadlines (`None` in the engine: not clustered, every row).
#[derive(Debug)]
pub(crate) struct ShardGate {
    shards: u32,
    deadlines: BTreeMap<u32, Instant>,
}

impl ShardGate {
    pub(crate) fn new(shards: u32) -> ShardGate {
        ShardGate {
            shards: shards.max(1),
            deadlines: BTreeMap::new(),
        }
    }

    fn holds(&self, l_uuid: &str) -> bool {
        self.deadlines.contains_key(&shard_of(l_uuid, self.shards))
    }

    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.values().min().copied()
    }
}

/// A row's dialog as the engine let go of it or keeps it, for the database.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RowDialog {
    pub l_uuid: String,
    pub shard: u32,
    pub dialog: Continuation,
}

impl Engine {
    /// The shard `l_uuid` belongs to, when clustered.
    pub fn shard_of(&self, l_uuid: &str) -> Option<u32> {
        self.shard_gate
            .as_ref()
            .map(|gate| shard_of(l_uuid, gate.shards))
    }

    /// Whether this engine runs `record` (always, unless clustered and its shard is not held).
    pub(crate) fn runs(&self, record: &Record) -> bool {
        self.shard_gate
            .as_ref()
            .is_none_or(|gate| gate.holds(record.l_uuid()))
    }

    /// The held shards with their deadlines (empty when not clustered).
    pub fn held_shards(&self) -> impl Iterator<Item = (u32, Instant)> + '_ {
        self.shard_gate
            .iter()
            .flat_map(|gate| gate.deadlines.iter().map(|(s, d)| (*s, *d)))
    }

    /// Renewals: held shards may send until their new deadlines (shards not held are ignored;
    /// a deadline never moves earlier).
    pub fn extend_shards(&mut self, now: Instant, renewed: &[(u32, Instant)]) {
        self.enforce_shard_deadlines(now);
        let Some(gate) = self.shard_gate.as_mut() else {
            return;
        };
        for (shard, deadline) in renewed {
            if let Some(held) = gate.deadlines.get_mut(shard) {
                *held = (*held).max(*deadline);
            }
        }
    }

    /// Newly held shards (until their deadlines) and their rows, each continuing the dialog the
    /// previous owner left (or starting afresh without one). Rows of other shards, and rows the
    /// engine runs already, are skipped. Returns the rows added.
    pub fn take_shards(
        &mut self,
        now: Instant,
        shards: &[(u32, Instant)],
        rows: Vec<(Record, Option<Continuation>)>,
    ) -> usize {
        self.enforce_shard_deadlines(now);
        let Some(gate) = self.shard_gate.as_mut() else {
            warn!("shards taken by an engine that is not clustered: ignored");
            return 0;
        };
        for (shard, deadline) in shards {
            if *deadline > now && *shard < gate.shards {
                gate.deadlines.insert(*shard, *deadline);
            }
        }
        let mut added = 0;
        for (record, dialog) in rows {
            if !self.runs(&record) {
                continue;
            }
            let continued = dialog.is_some();
            if self
                .table
                .add_continued(now, record, dialog.as_ref())
                .is_ok()
            {
                added += 1;
                if continued {
                    self.stats.rows_continued += 1;
                }
            }
        }
        self.after_command(now);
        added
    }

    /// Stops holding `shards`: their rows leave without an un-REGISTER, their transactions end
    /// unanswered (nothing more is sent for them), and their dialogs are returned for the
    /// next owner.
    pub fn drop_shards(&mut self, now: Instant, shards: &[u32]) -> Vec<RowDialog> {
        let dialogs = self.drop_rows_of(now, shards);
        self.stats.rows_handed_over += dialogs.len() as u64;
        dialogs
    }

    fn drop_rows_of(&mut self, now: Instant, shards: &[u32]) -> Vec<RowDialog> {
        let Some(gate) = self.shard_gate.as_mut() else {
            return Vec::new();
        };
        let count = gate.shards;
        let mut dropping = Vec::new();
        for shard in shards {
            if gate.deadlines.remove(shard).is_some() {
                dropping.push(*shard);
            }
        }
        if dropping.is_empty() {
            return Vec::new();
        }
        let leaving: Vec<(String, u32)> = self
            .table
            .iter()
            .map(|r| r.record().l_uuid())
            .map(|l_uuid| (l_uuid.to_owned(), shard_of(l_uuid, count)))
            .filter(|(_, shard)| dropping.contains(shard))
            .collect();
        let mut dialogs = Vec::with_capacity(leaving.len());
        for (l_uuid, shard) in leaving {
            let Some((key, dialog)) = self.table.abandon(now, &l_uuid) else {
                continue;
            };
            if let Some(attempt) = self.attempts.remove(&key) {
                self.transactions.abandon(&attempt.branch);
            }
            self.unbind(key);
            dialogs.push(RowDialog {
                l_uuid,
                shard,
                dialog,
            });
        }
        dialogs
    }

    /// The dialog of every row held, as of `now` (for the database, where the next owner of a
    /// shard reads it).
    pub fn dialogs(&self, now: Instant) -> Vec<RowDialog> {
        let Some(gate) = self.shard_gate.as_ref() else {
            return Vec::new();
        };
        self.table
            .iter()
            .filter(|r| !r.is_leaving())
            .map(|r| {
                let l_uuid = r.record().l_uuid();
                RowDialog {
                    l_uuid: l_uuid.to_owned(),
                    shard: shard_of(l_uuid, gate.shards),
                    dialog: r.continuation(now),
                }
            })
            .collect()
    }

    /// Drops the rows of every shard whose deadline is at or before `now`: from here on this
    /// node may not send for them.
    pub(crate) fn enforce_shard_deadlines(&mut self, now: Instant) {
        let Some(gate) = self.shard_gate.as_ref() else {
            return;
        };
        if gate.next_deadline().is_none_or(|first| first > now) {
            return;
        }
        let lapsed: Vec<u32> = gate
            .deadlines
            .iter()
            .filter(|(_, deadline)| **deadline <= now)
            .map(|(shard, _)| *shard)
            .collect();
        let dropped = self.drop_rows_of(now, &lapsed);
        self.stats.rows_fenced += dropped.len() as u64;
        self.stats.shards_lapsed += lapsed.len() as u64;
        info!(
            shards = lapsed.len(),
            rows = dropped.len(),
            "shard leases not renewed in time: their rows are no longer sent for"
        );
    }
}

//! Cluster mode's tables: the nodes sharing one database, the lease on each shard of rows, and
//! the REGISTER dialog of each registration.
//!
//! Why here, in SQL: a lease changes hands only by compare-and-set inside one transaction that
//! has locked the shard rows and read the *database's* clock, so two nodes can never both hold a
//! shard, whatever their own clocks say (nodes' clocks are never compared with anything). Every
//! time in these tables is milliseconds since the Unix epoch by that clock. Dialog writes are
//! fenced the same way: they land only for shards the writer holds, at the epoch it believes, on
//! an unexpired lease, checked while those shard rows are locked, so a node that lost a shard
//! cannot overwrite what the new owner continues from.
//!
//! Lock order, the same in every transaction: shard rows (by shard number, ascending), then the
//! node row or dialog rows. SQLite has no row locks; its write transaction (`BEGIN IMMEDIATE`)
//! serialises everything, which is enough for one machine.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use super::cluster_sql::{ClusterSql, DialogRecord, NodeRecord, ShardRecord};
use super::connection::with_connection;
use super::{Store, StoreError};

/// This node, as it announces itself each round.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeInfo {
    pub node_id: String,
    /// Where its SIP transport listens (for operators; no node dials it).
    pub sip_addr: String,
    /// When it started, in ms since the Unix epoch as the node chooses to say it (the
    /// `db_now_ms` of its first round is the one comparable with the other times here).
    pub started_ms: i64,
    /// It is stopping and handing its shards over.
    pub leaving: bool,
    /// Drawn at random when the process starts: two processes under one node_id differ here.
    pub instance: i64,
}

/// A node's row as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeRow {
    pub node_id: String,
    pub sip_addr: String,
    pub started_ms: i64,
    /// The database's clock at the node's last round.
    pub seen_ms: i64,
    pub leaving: bool,
    pub instance: i64,
}

/// One shard's lease. `owner` None: nobody holds it; a lease whose `expires_ms` is not after the
/// database's now is free to claim whoever its owner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardLease {
    pub shard: u32,
    pub owner: Option<String>,
    /// Grows by one with every claim: (shard, epoch) names one tenure.
    pub epoch: i64,
    pub expires_ms: i64,
}

/// The cluster as the database saw it at `db_now_ms`. On MySQL/MariaDB (REPEATABLE READ) the
/// other nodes' rows are as of the transaction's first read, milliseconds earlier; every lease
/// decision itself is made on locked rows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterView {
    pub db_now_ms: i64,
    /// Every node row, ordered by node_id (rows of dead nodes too: judge by `seen_ms`).
    pub nodes: Vec<NodeRow>,
    /// Every shard, ordered by shard number.
    pub shards: Vec<ShardLease>,
}

/// One registration's REGISTER dialog, so that the next owner of its shard continues it (same
/// Call-ID and From tag, a higher CSeq).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DialogRow {
    pub l_uuid: String,
    pub shard: u32,
    pub call_id: String,
    pub from_tag: String,
    /// The CSeq the next REGISTER must use.
    pub next_cseq: i64,
    pub binding_expires_ms: i64,
    /// The expiry the registrar granted, in seconds.
    pub granted_expires: i32,
    pub contact: String,
    /// The node that wrote the row (set by [`Store::write_dialogs`]).
    pub node_id: String,
    /// The database's clock when the row was written (set by [`Store::write_dialogs`]).
    pub updated_ms: i64,
}

impl ShardRecord {
    fn lease(self) -> Result<ShardLease, StoreError> {
        Ok(ShardLease {
            shard: shard_number(self.shard, "uacreg_cluster_shard")?,
            owner: self.owner,
            epoch: self.epoch,
            expires_ms: self.expires_ms,
        })
    }

    /// Whether `node` holds this lease at `now`.
    fn held_by(&self, node: &str, now: i64) -> bool {
        self.owner.as_deref() == Some(node) && self.expires_ms > now
    }
}

impl NodeRecord {
    fn row(self) -> NodeRow {
        NodeRow {
            node_id: self.node_id,
            sip_addr: self.sip_addr,
            started_ms: self.started_ms,
            seen_ms: self.seen_ms,
            leaving: self.leaving != 0,
            instance: self.instance,
        }
    }
}

impl DialogRecord {
    fn row(self) -> Result<DialogRow, StoreError> {
        Ok(DialogRow {
            shard: shard_number(self.shard, "uacreg_dialog")?,
            l_uuid: self.l_uuid,
            call_id: self.call_id,
            from_tag: self.from_tag,
            next_cseq: self.next_cseq,
            binding_expires_ms: self.binding_expires_ms,
            granted_expires: self.granted_expires,
            contact: self.contact,
            node_id: self.node_id,
            updated_ms: self.updated_ms,
        })
    }
}

fn shard_number(stored: i32, table: &'static str) -> Result<u32, StoreError> {
    u32::try_from(stored).map_err(|_| StoreError::ClusterRow {
        table,
        detail: format!("negative shard number {stored}"),
    })
}

/// Widths of the cluster tables' text columns (`VARCHAR(n)` in every engine's migration).
const NODE_ID_WIDTH: usize = 128;
const SIP_ADDR_WIDTH: usize = 255;
const L_UUID_WIDTH: usize = 64;
const CALL_ID_WIDTH: usize = 128;
const FROM_TAG_WIDTH: usize = 64;
const CONTACT_WIDTH: usize = 255;

/// Refuses a value wider than its column before anything is written: PostgreSQL and strict
/// MySQL would fail the whole batch with an engine-specific message, a non-strict MySQL would
/// silently cut a Call-ID or contact that the next owner must repeat exactly.
fn fits(table: &'static str, column: &str, value: &str, width: usize) -> Result<(), StoreError> {
    let length = value.chars().count();
    if length > width {
        return Err(StoreError::ClusterRow {
            table,
            detail: format!("a {column} of {length} characters (the column holds {width})"),
        });
    }
    Ok(())
}

fn dialog_fits(row: &DialogRow) -> Result<(), StoreError> {
    let table = "uacreg_dialog";
    fits(table, "l_uuid", &row.l_uuid, L_UUID_WIDTH)?;
    fits(table, "call_id", &row.call_id, CALL_ID_WIDTH)?;
    fits(table, "from_tag", &row.from_tag, FROM_TAG_WIDTH)?;
    fits(table, "contact", &row.contact, CONTACT_WIDTH)
}

/// Shard numbers as stored, sorted and without repeats. A number beyond the column's range
/// names no row, so it is left out (it can be neither claimed nor held).
fn stored_shards(shards: impl IntoIterator<Item = u32>) -> Vec<i32> {
    let set: BTreeSet<i32> = shards
        .into_iter()
        .filter_map(|s| i32::try_from(s).ok())
        .collect();
    set.into_iter().collect()
}

/// Runs `$body` (a function of the concrete connection) in one cluster transaction.
macro_rules! in_cluster_transaction {
    ($connection:expr, $body:expr) => {
        with_connection!($connection, conn => conn.in_transaction($body))
    };
}

fn prepare<C: ClusterSql>(conn: &mut C, shards: u32) -> Result<(), StoreError> {
    let mismatch = |in_database: i64| StoreError::ShardCountMismatch {
        in_database,
        configured: shards,
    };
    let existing = conn.shard_numbers()?;
    if let Some(&lowest) = existing.first() {
        shard_number(lowest, "uacreg_cluster_shard")?;
    }
    if let Some(&highest) = existing.last() {
        if i64::from(highest) + 1 != i64::from(shards) {
            return Err(mismatch(i64::from(highest) + 1));
        }
    }
    let present: HashSet<i32> = existing.into_iter().collect();
    let missing: Vec<i32> = stored_shards(0..shards)
        .into_iter()
        .filter(|s| !present.contains(s))
        .collect();
    if u32::try_from(missing.len() + present.len()).ok() != Some(shards) {
        // More shards than the column can number.
        return Err(mismatch(i64::from(i32::MAX)));
    }
    conn.insert_shards(&missing)?;
    // Checked again: on PostgreSQL (READ COMMITTED) this also sees a node configured
    // differently that filled the table meanwhile; MySQL's REPEATABLE READ snapshot does not,
    // and the next start of either node reports it.
    let after = conn.shard_numbers()?;
    let described = after.last().map_or(0, |&s| i64::from(s) + 1);
    if described != i64::from(shards) || after.len() as i64 != described {
        return Err(mismatch(described));
    }
    Ok(())
}

fn view<C: ClusterSql>(conn: &mut C, db_now_ms: i64) -> Result<ClusterView, StoreError> {
    let nodes = conn.all_nodes()?.into_iter().map(NodeRecord::row).collect();
    let shards = conn
        .all_shards()?
        .into_iter()
        .map(ShardRecord::lease)
        .collect::<Result<_, _>>()?;
    Ok(ClusterView {
        db_now_ms,
        nodes,
        shards,
    })
}

fn round<C: ClusterSql>(
    conn: &mut C,
    node: &NodeInfo,
    lease_ms: i64,
) -> Result<ClusterView, StoreError> {
    let mine = conn.shards_owned_by(&node.node_id)?;
    let locked = conn.lock_shards(&mine)?;
    let now = conn.db_now_ms()?;
    // Another process under this name that has renewed within a lease holds these leases as
    // much as this one does: nothing is renewed or announced until its row has gone quiet.
    if let Some(row) = conn.node_row(&node.node_id)?
        && row.instance != node.instance
        && now.saturating_sub(row.seen_ms) < lease_ms
    {
        return Err(StoreError::NodeIdInUse {
            node_id: node.node_id.clone(),
            seen_ms_ago: now.saturating_sub(row.seen_ms),
        });
    }
    // Judged while the rows are locked: a lease that has run out stays out, even if nobody
    // has claimed it yet.
    let live: Vec<i32> = locked
        .iter()
        .filter(|r| r.held_by(&node.node_id, now))
        .map(|r| r.shard)
        .collect();
    let renewed = conn.renew(&node.node_id, &live, now, lease_ms)?;
    // MySQL counts changed rows only: a renewal within the same millisecond changes nothing.
    if renewed > live.len() {
        return Err(StoreError::LeaseRace {
            expected: live.len(),
            updated: renewed,
        });
    }
    conn.upsert_node(&NodeRecord {
        node_id: node.node_id.clone(),
        sip_addr: node.sip_addr.clone(),
        started_ms: node.started_ms,
        seen_ms: now,
        leaving: i16::from(node.leaving),
        instance: node.instance,
    })?;
    view(conn, now)
}

fn claim<C: ClusterSql>(
    conn: &mut C,
    node_id: &str,
    shards: &[u32],
    lease_ms: i64,
) -> Result<Vec<ShardLease>, StoreError> {
    let wanted = stored_shards(shards.iter().copied());
    // A shard still locked by another transaction (its holder renewing it, or stuck in the
    // middle of a round until the server ends that session) is not waited for.
    let locked = conn.lock_shards_unless_locked(&wanted)?;
    let now = conn.db_now_ms()?;
    let free: Vec<ShardRecord> = locked
        .into_iter()
        .filter(|r| r.owner.is_none() || r.expires_ms <= now)
        .collect();
    let ids: Vec<i32> = free.iter().map(|r| r.shard).collect();
    let taken = conn.take(node_id, &ids, now, lease_ms)?;
    // The rows are locked and the claim always bumps the epoch, so every engine counts each.
    if taken != ids.len() {
        return Err(StoreError::LeaseRace {
            expected: ids.len(),
            updated: taken,
        });
    }
    free.into_iter()
        .map(|r| {
            ShardRecord {
                owner: Some(node_id.to_string()),
                epoch: r.epoch + 1,
                expires_ms: now.saturating_add(lease_ms),
                ..r
            }
            .lease()
        })
        .collect()
}

fn release<C: ClusterSql>(
    conn: &mut C,
    node_id: &str,
    leases: &[(u32, i64)],
) -> Result<Vec<u32>, StoreError> {
    let epochs: BTreeMap<i32, i64> = leases
        .iter()
        .filter_map(|&(s, e)| Some((i32::try_from(s).ok()?, e)))
        .collect();
    let keys: Vec<i32> = epochs.keys().copied().collect();
    let locked = conn.lock_shards(&keys)?;
    let matching: Vec<i32> = locked
        .iter()
        .filter(|r| r.owner.as_deref() == Some(node_id) && epochs.get(&r.shard) == Some(&r.epoch))
        .map(|r| r.shard)
        .collect();
    let freed = conn.give_back(node_id, &matching)?;
    if freed != matching.len() {
        return Err(StoreError::LeaseRace {
            expected: matching.len(),
            updated: freed,
        });
    }
    matching
        .into_iter()
        .map(|s| shard_number(s, "uacreg_cluster_shard"))
        .collect()
}

fn write<C: ClusterSql>(
    conn: &mut C,
    node_id: &str,
    held: &HashMap<u32, i64>,
    upserts: &[DialogRow],
    removed: &[String],
) -> Result<usize, StoreError> {
    let keys = stored_shards(held.keys().copied());
    let locked = conn.lock_shards(&keys)?;
    let now = conn.db_now_ms()?;
    let fenced_in: BTreeSet<i32> = locked
        .iter()
        .filter(|r| {
            r.held_by(node_id, now)
                && u32::try_from(r.shard)
                    .ok()
                    .and_then(|s| held.get(&s))
                    .is_some_and(|&epoch| epoch == r.epoch)
        })
        .map(|r| r.shard)
        .collect();
    // The last row of an l_uuid wins (PostgreSQL refuses to upsert one key twice in a
    // statement).
    let mut seen = HashSet::new();
    let mut records = Vec::with_capacity(upserts.len());
    let mut skipped = 0;
    for row in upserts.iter().rev() {
        let shard = i32::try_from(row.shard)
            .ok()
            .filter(|s| fenced_in.contains(s));
        let Some(shard) = shard else {
            skipped += 1;
            continue;
        };
        if !seen.insert(row.l_uuid.as_str()) {
            continue;
        }
        records.push(DialogRecord {
            l_uuid: row.l_uuid.clone(),
            shard,
            call_id: row.call_id.clone(),
            from_tag: row.from_tag.clone(),
            next_cseq: row.next_cseq,
            binding_expires_ms: row.binding_expires_ms,
            granted_expires: row.granted_expires,
            contact: row.contact.clone(),
            node_id: node_id.to_string(),
            updated_ms: now,
        });
    }
    // Key order: every writer locks dialog rows in one order.
    records.sort_unstable_by(|a, b| a.l_uuid.cmp(&b.l_uuid));
    conn.upsert_dialogs(&records)?;
    let fenced_in: Vec<i32> = fenced_in.into_iter().collect();
    let mut removed = removed.to_vec();
    removed.sort_unstable();
    conn.delete_dialogs(&removed, &fenced_in)?;
    Ok(skipped)
}

impl Store {
    /// Inserts shard rows 0..shards that are missing; a table that already holds a different
    /// number of shards is an error (nodes must agree).
    pub fn cluster_prepare(&mut self, shards: u32) -> Result<(), StoreError> {
        self.run(|connection, _| in_cluster_transaction!(connection, |c| prepare(c, shards)))
    }

    /// One transaction: upsert this node's row (seen_ms = db now), extend every lease it holds
    /// that has not expired (expires_ms = now + lease_ms; an expired one is not renewed —
    /// another node may already be claiming it), and return the whole view after it.
    pub fn cluster_round(
        &mut self,
        node: &NodeInfo,
        lease_ms: i64,
    ) -> Result<ClusterView, StoreError> {
        fits(
            "uacreg_cluster_node",
            "node_id",
            &node.node_id,
            NODE_ID_WIDTH,
        )?;
        fits(
            "uacreg_cluster_node",
            "sip_addr",
            &node.sip_addr,
            SIP_ADDR_WIDTH,
        )?;
        self.run(|connection, _| in_cluster_transaction!(connection, |c| round(c, node, lease_ms)))
    }

    /// Compare-and-set claims: each shard is taken only if its owner is NULL or its lease
    /// expired (expires_ms <= db now): owner = node, epoch = epoch + 1, expires_ms = now +
    /// lease_ms. Returns the leases actually won. A shard this node already holds unexpired is
    /// not won again (its lease is renewed by [`Store::cluster_round`]).
    pub fn cluster_claim(
        &mut self,
        node_id: &str,
        shards: &[u32],
        lease_ms: i64,
    ) -> Result<Vec<ShardLease>, StoreError> {
        fits("uacreg_cluster_shard", "owner", node_id, NODE_ID_WIDTH)?;
        self.run(|connection, _| {
            in_cluster_transaction!(connection, |c| claim(c, node_id, shards, lease_ms))
        })
    }

    /// Gives shards back (owner NULL, expires_ms 0) only where owner = node_id and the epoch
    /// matches. Returns the shards released.
    pub fn cluster_release(
        &mut self,
        node_id: &str,
        leases: &[(u32, i64)],
    ) -> Result<Vec<u32>, StoreError> {
        self.run(|connection, _| {
            in_cluster_transaction!(connection, |c| release(c, node_id, leases))
        })
    }

    /// Removes the node's row (a clean stop, after releasing its shards). Its leases, if any
    /// are left, are not touched: they run out.
    pub fn cluster_forget_node(&mut self, node_id: &str) -> Result<(), StoreError> {
        self.run(|connection, _| {
            in_cluster_transaction!(connection, |c| c
                .delete_node(node_id)
                .map(drop)
                .map_err(StoreError::from))
        })
    }

    /// Every node and shard, and the database's clock, read in one transaction.
    pub fn cluster_view(&mut self) -> Result<ClusterView, StoreError> {
        self.run(|connection, _| {
            in_cluster_transaction!(connection, |c| {
                let now = c.db_now_ms()?;
                view(c, now)
            })
        })
    }

    /// Upserts dialog rows and deletes `removed` l_uuids, fenced by the database: in one
    /// transaction, this node's leases in `held` (shard → epoch) are locked and rows are
    /// written only for shards it holds at that epoch, unexpired. Deletions are fenced the
    /// same way. `node_id` and `updated_ms` of each row are set here (the writer, the
    /// database's now). Returns how many upserts were skipped because the lease was not held.
    /// A value wider than its column fails the call before anything is written
    /// ([`StoreError::ClusterRow`]).
    pub fn write_dialogs(
        &mut self,
        node_id: &str,
        held: &HashMap<u32, i64>,
        upserts: &[DialogRow],
        removed: &[String],
    ) -> Result<usize, StoreError> {
        fits("uacreg_dialog", "node_id", node_id, NODE_ID_WIDTH)?;
        upserts.iter().try_for_each(dialog_fits)?;
        self.run(|connection, _| {
            in_cluster_transaction!(connection, |c| write(c, node_id, held, upserts, removed))
        })
    }

    /// The dialog rows of these shards, ordered by shard then l_uuid.
    pub fn read_dialogs(&mut self, shards: &[u32]) -> Result<Vec<DialogRow>, StoreError> {
        let wanted = stored_shards(shards.iter().copied());
        self.run(|connection, _| {
            let records = with_connection!(connection, conn => conn.dialogs_of(&wanted)?);
            let mut rows = records
                .into_iter()
                .map(DialogRecord::row)
                .collect::<Result<Vec<_>, _>>()?;
            rows.sort_by(|a, b| (a.shard, &a.l_uuid).cmp(&(b.shard, &b.l_uuid)));
            Ok(rows)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::fixtures::temp_url;

    const MINUTE_MS: i64 = 60_000;

    fn node(id: &str) -> NodeInfo {
        NodeInfo {
            node_id: id.into(),
            sip_addr: format!("{id}.example:5060"),
            started_ms: 1,
            leaving: false,
            instance: 1,
        }
    }

    fn dialog(l_uuid: &str, shard: u32, cseq: i64) -> DialogRow {
        DialogRow {
            l_uuid: l_uuid.into(),
            shard,
            call_id: format!("call-{l_uuid}"),
            from_tag: format!("tag-{l_uuid}"),
            next_cseq: cseq,
            binding_expires_ms: 5,
            granted_expires: 3600,
            contact: format!("sip:{l_uuid}@127.0.0.1:5062"),
            node_id: "ignored".into(),
            updated_ms: -1,
        }
    }

    /// Two sessions on one fresh SQLite file, shards prepared.
    fn two_stores(name: &str, shards: u32) -> (std::path::PathBuf, Store, Store) {
        let (dir, url) = temp_url(name);
        let mut a = Store::open(&url).unwrap();
        let b = Store::open(&url).unwrap();
        a.cluster_prepare(shards).unwrap();
        (dir, a, b)
    }

    fn owner_of(store: &mut Store, shard: u32) -> ShardLease {
        let view = store.cluster_view().unwrap();
        view.shards.into_iter().find(|s| s.shard == shard).unwrap()
    }

    #[test]
    fn prepare_is_idempotent_and_refuses_another_count() {
        let (dir, mut a, mut b) = two_stores("cluster-prepare", 8);
        b.cluster_prepare(8).unwrap();
        let shards = a.cluster_view().unwrap().shards;
        assert_eq!(shards.len(), 8);
        assert!(shards.iter().enumerate().all(|(i, s)| s.shard == i as u32
            && s.owner.is_none()
            && s.epoch == 0
            && s.expires_ms == 0));
        for other in [4, 16] {
            let err = b.cluster_prepare(other).unwrap_err();
            assert!(
                matches!(err, StoreError::ShardCountMismatch { in_database: 8, configured } if configured == other),
                "{err}"
            );
        }
        // The refusal changed nothing.
        assert_eq!(a.cluster_view().unwrap().shards, shards);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn the_database_clock_is_unix_milliseconds() {
        let (dir, mut a, _) = two_stores("cluster-clock", 1);
        let local = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        let db = a.cluster_view().unwrap().db_now_ms;
        assert!((db - local).abs() < 5_000, "db {db} local {local}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_free_shard_is_won_once_and_its_epoch_bumped() {
        let (dir, mut a, mut b) = two_stores("cluster-claim", 4);
        let won = a.cluster_claim("a", &[1, 2, 2], MINUTE_MS).unwrap();
        let now = a.cluster_view().unwrap().db_now_ms;
        assert_eq!(won.len(), 2);
        for (lease, shard) in won.iter().zip([1, 2]) {
            assert_eq!(lease.shard, shard);
            assert_eq!(lease.owner.as_deref(), Some("a"));
            assert_eq!(lease.epoch, 1);
            assert!(lease.expires_ms > now && lease.expires_ms <= now + MINUTE_MS);
            assert_eq!(&owner_of(&mut b, shard), lease);
        }
        // Held and unexpired: neither the other node nor the holder wins it again.
        assert_eq!(b.cluster_claim("b", &[1, 2], MINUTE_MS).unwrap(), vec![]);
        assert_eq!(a.cluster_claim("a", &[1], MINUTE_MS).unwrap(), vec![]);
        // A shard number with no row is not won.
        assert_eq!(b.cluster_claim("b", &[99], MINUTE_MS).unwrap(), vec![]);
        let won = b.cluster_claim("b", &[0, 1, 3], MINUTE_MS).unwrap();
        let shards: Vec<u32> = won.iter().map(|l| l.shard).collect();
        assert_eq!(shards, vec![0, 3]);
        assert_eq!(owner_of(&mut a, 1).owner.as_deref(), Some("a"));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn an_expired_lease_is_not_renewed_and_goes_to_the_next_claimer() {
        let (dir, mut a, mut b) = two_stores("cluster-expiry", 2);
        // A negative lease has run out the moment it is granted.
        let won = a.cluster_claim("a", &[0], -1).unwrap();
        assert_eq!(won.len(), 1);
        let view = a.cluster_round(&node("a"), MINUTE_MS).unwrap();
        let lease = &view.shards[0];
        assert_eq!(lease.owner.as_deref(), Some("a"));
        assert_eq!(lease.expires_ms, won[0].expires_ms, "not renewed");
        assert!(lease.expires_ms <= view.db_now_ms);

        let taken = b.cluster_claim("b", &[0], MINUTE_MS).unwrap();
        assert_eq!(taken.len(), 1);
        assert_eq!(taken[0].epoch, 2);
        // The old owner's next round neither renews nor takes it back.
        let view = a.cluster_round(&node("a"), MINUTE_MS).unwrap();
        assert_eq!(view.shards[0], taken[0]);

        // A live lease is extended by its owner's round.
        let won = a.cluster_claim("a", &[1], 1_000).unwrap();
        let view = a.cluster_round(&node("a"), MINUTE_MS).unwrap();
        assert_eq!(view.shards[1].epoch, won[0].epoch);
        assert!(view.shards[1].expires_ms >= view.db_now_ms + MINUTE_MS - 1);
        assert!(view.shards[1].expires_ms > won[0].expires_ms);
        let _ = std::fs::remove_dir_all(dir);
    }

    /// A second process under a live node's name is refused (it renews nothing and is not
    /// announced) until the first has been quiet for a lease; the first goes on meanwhile.
    #[test]
    fn a_second_process_under_one_node_id_waits_for_the_first_to_go_quiet() {
        let (dir, mut a, mut b) = two_stores("cluster-twin", 1);
        let first = node("a");
        let twin = NodeInfo {
            instance: 2,
            ..node("a")
        };
        a.cluster_round(&first, 100).unwrap();
        let err = b.cluster_round(&twin, 100).unwrap_err();
        assert!(
            matches!(&err, StoreError::NodeIdInUse { node_id, .. } if node_id == "a"),
            "{err}"
        );
        assert!(err.is_about_the_data(), "no reconnect-and-retry");
        a.cluster_round(&first, 100).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(150));
        let view = b.cluster_round(&twin, 100).unwrap();
        assert_eq!(view.nodes.len(), 1);
        assert_eq!(view.nodes[0].instance, 2);
        // Now the first is the one refused.
        assert!(matches!(
            a.cluster_round(&first, 100),
            Err(StoreError::NodeIdInUse { .. })
        ));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_short_lease_runs_out_by_the_database_clock() {
        let (dir, mut a, mut b) = two_stores("cluster-sleep", 1);
        assert_eq!(a.cluster_claim("a", &[0], 50).unwrap().len(), 1);
        assert_eq!(b.cluster_claim("b", &[0], MINUTE_MS).unwrap(), vec![]);
        std::thread::sleep(std::time::Duration::from_millis(120));
        assert_eq!(b.cluster_claim("b", &[0], MINUTE_MS).unwrap().len(), 1);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn values_wider_than_their_column_are_refused_before_writing() {
        let (dir, mut a, _) = two_stores("cluster-width", 1);
        let won = a.cluster_claim("a", &[0], MINUTE_MS).unwrap();
        let held: HashMap<u32, i64> = [(0, won[0].epoch)].into_iter().collect();
        let wide = DialogRow {
            contact: format!("sip:{}@127.0.0.1", "x".repeat(260)),
            ..dialog("w", 0, 1)
        };
        let err = a
            .write_dialogs("a", &held, &[dialog("ok", 0, 1), wide], &[])
            .unwrap_err();
        assert!(
            matches!(&err, StoreError::ClusterRow { table: "uacreg_dialog", detail } if detail.contains("contact")),
            "{err}"
        );
        assert_eq!(a.read_dialogs(&[0]).unwrap(), vec![]);
        let long_id = "n".repeat(129);
        assert!(matches!(
            a.cluster_claim(&long_id, &[0], MINUTE_MS),
            Err(StoreError::ClusterRow { .. })
        ));
        assert!(matches!(
            a.cluster_round(&node(&long_id), MINUTE_MS),
            Err(StoreError::ClusterRow { .. })
        ));
        // The store keeps working.
        assert_eq!(a.cluster_view().unwrap().shards[0], won[0]);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn rounds_record_nodes_and_forget_removes_them() {
        let (dir, mut a, mut b) = two_stores("cluster-nodes", 1);
        let first = a.cluster_round(&node("a"), MINUTE_MS).unwrap();
        let leaving = NodeInfo {
            leaving: true,
            ..node("b")
        };
        let view = b.cluster_round(&leaving, MINUTE_MS).unwrap();
        let ids: Vec<&str> = view.nodes.iter().map(|n| n.node_id.as_str()).collect();
        assert_eq!(ids, vec!["a", "b"]);
        assert_eq!(view.nodes[0].seen_ms, first.db_now_ms);
        assert_eq!(view.nodes[0].sip_addr, "a.example:5060");
        assert!(!view.nodes[0].leaving);
        assert!(view.nodes[1].leaving);
        assert_eq!(view.nodes[1].seen_ms, view.db_now_ms);
        // A second round updates the row in place.
        let again = a.cluster_round(&node("a"), MINUTE_MS).unwrap();
        assert_eq!(again.nodes.len(), 2);
        assert!(again.nodes[0].seen_ms >= first.db_now_ms);
        b.cluster_forget_node("b").unwrap();
        let ids: Vec<String> = a
            .cluster_view()
            .unwrap()
            .nodes
            .into_iter()
            .map(|n| n.node_id)
            .collect();
        assert_eq!(ids, vec!["a".to_string()]);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn release_needs_the_owner_and_its_epoch() {
        let (dir, mut a, mut b) = two_stores("cluster-release", 3);
        let won = a.cluster_claim("a", &[0, 1, 2], MINUTE_MS).unwrap();
        assert_eq!(won.len(), 3);
        assert!(
            a.cluster_release("a", &[(0, 2), (1, 0)])
                .unwrap()
                .is_empty()
        );
        assert!(b.cluster_release("b", &[(0, 1)]).unwrap().is_empty());
        assert_eq!(owner_of(&mut b, 0), won[0]);
        assert_eq!(
            a.cluster_release("a", &[(0, 1), (2, 1)]).unwrap(),
            vec![0, 2]
        );
        let freed = owner_of(&mut b, 0);
        assert_eq!((freed.owner, freed.epoch, freed.expires_ms), (None, 1, 0));
        // Free again: the next claim is the next epoch.
        assert_eq!(b.cluster_claim("b", &[0], MINUTE_MS).unwrap()[0].epoch, 2);
        assert_eq!(owner_of(&mut a, 1), won[1]);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn dialog_writes_land_only_in_shards_held_at_their_epoch() {
        let (dir, mut a, mut b) = two_stores("cluster-dialogs", 4);
        let won = a.cluster_claim("a", &[0, 1], MINUTE_MS).unwrap();
        b.cluster_claim("b", &[2], MINUTE_MS).unwrap();
        a.cluster_claim("a", &[3], -1).unwrap();
        let held: HashMap<u32, i64> = [(0, won[0].epoch), (1, won[1].epoch + 1), (2, 1), (3, 1)]
            .into_iter()
            .collect();
        let rows = [
            dialog("u0", 0, 2),
            dialog("u1", 1, 2), // epoch not the one held
            dialog("u2", 2, 2), // another node's shard
            dialog("u3", 3, 2), // expired lease
            dialog("u0b", 0, 7),
        ];
        let skipped = a.write_dialogs("a", &held, &rows, &[]).unwrap();
        assert_eq!(skipped, 3);
        let now = a.cluster_view().unwrap().db_now_ms;
        let stored = b.read_dialogs(&[0, 1, 2, 3]).unwrap();
        let keys: Vec<&str> = stored.iter().map(|r| r.l_uuid.as_str()).collect();
        assert_eq!(keys, vec!["u0", "u0b"]);
        for (got, sent) in stored.iter().zip([&rows[0], &rows[4]]) {
            assert_eq!(got.node_id, "a");
            assert!(got.updated_ms > 0 && got.updated_ms <= now);
            let expect = DialogRow {
                node_id: got.node_id.clone(),
                updated_ms: got.updated_ms,
                ..sent.clone()
            };
            assert_eq!(got, &expect);
        }

        // Updates replace the row; the last of one l_uuid in a batch wins.
        let skipped = a
            .write_dialogs(
                "a",
                &held,
                &[dialog("u0", 0, 3), dialog("u0", 0, 4)],
                &["u0b".into()],
            )
            .unwrap();
        assert_eq!(skipped, 0);
        let stored = b.read_dialogs(&[0]).unwrap();
        assert_eq!(stored.len(), 1);
        assert_eq!(stored[0].next_cseq, 4);

        // b writes its shard; a cannot delete it, nor write there.
        let b_held: HashMap<u32, i64> = [(2, 1)].into_iter().collect();
        assert_eq!(
            b.write_dialogs("b", &b_held, &[dialog("u2", 2, 9)], &[])
                .unwrap(),
            0
        );
        let skipped = a
            .write_dialogs("a", &held, &[dialog("u2", 2, 10)], &["u2".into()])
            .unwrap();
        assert_eq!(skipped, 1);
        let stored = a.read_dialogs(&[2]).unwrap();
        assert_eq!((stored.len(), stored[0].next_cseq), (1, 9));
        assert_eq!(a.read_dialogs(&[1, 3]).unwrap(), vec![]);
        assert_eq!(a.read_dialogs(&[0, 2]).unwrap().len(), 2);

        // Once the shard changed hands, the old owner's write is refused.
        a.cluster_release("a", &[(0, won[0].epoch)]).unwrap();
        b.cluster_claim("b", &[0], MINUTE_MS).unwrap();
        let skipped = a
            .write_dialogs("a", &held, &[dialog("u0", 0, 99)], &["u0".into()])
            .unwrap();
        assert_eq!(skipped, 1);
        assert_eq!(b.read_dialogs(&[0]).unwrap()[0].next_cseq, 4);
        let _ = std::fs::remove_dir_all(dir);
    }
}

//! The cluster tables' statements on each engine, behind one trait, so that the lease rules in
//! [`super::cluster`] are written once for all three.
//!
//! What differs per engine is small and kept here: the transaction (SQLite takes its write lock
//! at `BEGIN`), the clock expression, row locks (`FOR UPDATE` on PostgreSQL and MySQL/MariaDB,
//! always by primary key and in ascending order, so two transactions never wait on each other
//! in a cycle), and the upserts each engine does fastest. The rest is diesel's DSL, expanded per
//! engine by `shared_statements!` so every backend type-checks it.

use diesel::Connection as _;
use diesel::dsl::sql;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Integer, SmallInt, Text};
use diesel::sqlite::SqliteConnection;
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_async::{AsyncMysqlConnection, AsyncPgConnection};

use super::StoreError;
use super::mysql::new_value;
use super::schema::{uacreg_cluster_node, uacreg_cluster_shard, uacreg_dialog};

/// Rows per statement (keys per `IN (…)` list, rows per multi-row insert): well under every
/// engine's limit on bound parameters.
const CHUNK: usize = 500;

/// `uacreg_cluster_node` as stored.
#[derive(Insertable, Queryable, Selectable)]
#[diesel(table_name = uacreg_cluster_node)]
pub(super) struct NodeRecord {
    pub(super) node_id: String,
    pub(super) sip_addr: String,
    pub(super) started_ms: i64,
    pub(super) seen_ms: i64,
    pub(super) leaving: i16,
    pub(super) instance: i64,
}

/// `uacreg_cluster_shard` as stored.
#[derive(Queryable, Selectable)]
#[diesel(table_name = uacreg_cluster_shard)]
pub(super) struct ShardRecord {
    pub(super) shard: i32,
    pub(super) owner: Option<String>,
    pub(super) epoch: i64,
    pub(super) expires_ms: i64,
}

/// `uacreg_dialog` as stored.
#[derive(Insertable, Queryable, Selectable)]
#[diesel(table_name = uacreg_dialog)]
pub(super) struct DialogRecord {
    pub(super) l_uuid: String,
    pub(super) shard: i32,
    pub(super) call_id: String,
    pub(super) from_tag: String,
    pub(super) next_cseq: i64,
    pub(super) binding_expires_ms: i64,
    pub(super) granted_expires: i32,
    pub(super) contact: String,
    pub(super) node_id: String,
    pub(super) updated_ms: i64,
}

/// The statements of the cluster tables on one engine's connection. What the engines share is
/// written once (`shared_statements!`); each engine adds its transaction, its clock, its row
/// locks and its upserts.
pub(super) trait ClusterSql: Sized {
    /// One transaction; SQLite takes the write lock at once, so two writers never deadlock
    /// upgrading a read lock.
    fn in_transaction<T>(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<T, StoreError>,
    ) -> Result<T, StoreError>;
    /// The database's clock, in ms since the Unix epoch.
    fn db_now_ms(&mut self) -> QueryResult<i64>;
    /// The rows of `shards` (sorted), locked until the transaction ends where the engine has
    /// row locks.
    fn lock_shards(&mut self, shards: &[i32]) -> QueryResult<Vec<ShardRecord>>;
    /// Like `lock_shards`, but rows another transaction has locked are left out instead of
    /// waited for (claims: a shard whose holder is stuck mid-transaction is tried next round).
    fn lock_shards_unless_locked(&mut self, shards: &[i32]) -> QueryResult<Vec<ShardRecord>>;
    /// Adds shard rows, leaving those that exist alone.
    fn insert_shards(&mut self, shards: &[i32]) -> QueryResult<()>;
    fn upsert_node(&mut self, node: &NodeRecord) -> QueryResult<()>;
    fn upsert_dialogs(&mut self, rows: &[DialogRecord]) -> QueryResult<()>;

    fn shard_numbers(&mut self) -> QueryResult<Vec<i32>>;
    fn shards_owned_by(&mut self, node: &str) -> QueryResult<Vec<i32>>;
    /// Extends `node`'s leases on `shards` that are unexpired at `now`; returns rows changed.
    fn renew(&mut self, node: &str, shards: &[i32], now: i64, lease_ms: i64) -> QueryResult<usize>;
    /// Takes `shards` for `node` where they are free at `now`; returns rows taken.
    fn take(&mut self, node: &str, shards: &[i32], now: i64, lease_ms: i64) -> QueryResult<usize>;
    /// Frees `node`'s leases on `shards`; returns rows freed.
    fn give_back(&mut self, node: &str, shards: &[i32]) -> QueryResult<usize>;
    fn delete_node(&mut self, node: &str) -> QueryResult<usize>;
    fn node_row(&mut self, node: &str) -> QueryResult<Option<NodeRecord>>;
    fn all_nodes(&mut self) -> QueryResult<Vec<NodeRecord>>;
    fn all_shards(&mut self) -> QueryResult<Vec<ShardRecord>>;
    /// Deletes the dialog rows of `l_uuids` that lie in `shards`.
    fn delete_dialogs(&mut self, l_uuids: &[String], shards: &[i32]) -> QueryResult<usize>;
    fn dialogs_of(&mut self, shards: &[i32]) -> QueryResult<Vec<DialogRecord>>;
}

/// The part of [`ClusterSql`] every engine runs as written (expanded in each impl, so diesel
/// checks it against each backend).
macro_rules! shared_statements {
    () => {
        fn shard_numbers(&mut self) -> QueryResult<Vec<i32>> {
            uacreg_cluster_shard::table
                .select(uacreg_cluster_shard::shard)
                .order(uacreg_cluster_shard::shard)
                .load(self)
        }

        fn shards_owned_by(&mut self, node: &str) -> QueryResult<Vec<i32>> {
            uacreg_cluster_shard::table
                .select(uacreg_cluster_shard::shard)
                .filter(uacreg_cluster_shard::owner.eq(node))
                .order(uacreg_cluster_shard::shard)
                .load(self)
        }

        fn renew(
            &mut self,
            node: &str,
            shards: &[i32],
            now: i64,
            lease_ms: i64,
        ) -> QueryResult<usize> {
            use uacreg_cluster_shard::*;
            let mut changed = 0;
            for chunk in shards.chunks(CHUNK) {
                changed += diesel::update(
                    table
                        .filter(shard.eq_any(chunk))
                        .filter(owner.eq(node))
                        .filter(expires_ms.gt(now)),
                )
                .set(expires_ms.eq(now.saturating_add(lease_ms)))
                .execute(self)?;
            }
            Ok(changed)
        }

        fn take(
            &mut self,
            node: &str,
            shards: &[i32],
            now: i64,
            lease_ms: i64,
        ) -> QueryResult<usize> {
            use uacreg_cluster_shard::*;
            let mut taken = 0;
            for chunk in shards.chunks(CHUNK) {
                taken += diesel::update(
                    table
                        .filter(shard.eq_any(chunk))
                        .filter(owner.is_null().or(expires_ms.le(now))),
                )
                .set((
                    owner.eq(node),
                    epoch.eq(epoch + 1),
                    expires_ms.eq(now.saturating_add(lease_ms)),
                ))
                .execute(self)?;
            }
            Ok(taken)
        }

        fn give_back(&mut self, node: &str, shards: &[i32]) -> QueryResult<usize> {
            use uacreg_cluster_shard::*;
            let mut freed = 0;
            for chunk in shards.chunks(CHUNK) {
                freed += diesel::update(table.filter(shard.eq_any(chunk)).filter(owner.eq(node)))
                    .set((owner.eq(None::<String>), expires_ms.eq(0i64)))
                    .execute(self)?;
            }
            Ok(freed)
        }

        fn delete_node(&mut self, node: &str) -> QueryResult<usize> {
            diesel::delete(uacreg_cluster_node::table.filter(uacreg_cluster_node::node_id.eq(node)))
                .execute(self)
        }

        fn node_row(&mut self, node: &str) -> QueryResult<Option<NodeRecord>> {
            uacreg_cluster_node::table
                .select(NodeRecord::as_select())
                .filter(uacreg_cluster_node::node_id.eq(node))
                .first(self)
                .optional()
        }

        fn all_nodes(&mut self) -> QueryResult<Vec<NodeRecord>> {
            uacreg_cluster_node::table
                .select(NodeRecord::as_select())
                .order(uacreg_cluster_node::node_id)
                .load(self)
        }

        fn all_shards(&mut self) -> QueryResult<Vec<ShardRecord>> {
            uacreg_cluster_shard::table
                .select(ShardRecord::as_select())
                .order(uacreg_cluster_shard::shard)
                .load(self)
        }

        fn delete_dialogs(&mut self, l_uuids: &[String], shards: &[i32]) -> QueryResult<usize> {
            use uacreg_dialog::*;
            let mut deleted = 0;
            if shards.is_empty() {
                return Ok(0);
            }
            for chunk in l_uuids.chunks(CHUNK) {
                deleted += diesel::delete(
                    table
                        .filter(l_uuid.eq_any(chunk))
                        .filter(shard.eq_any(shards)),
                )
                .execute(self)?;
            }
            Ok(deleted)
        }

        fn dialogs_of(&mut self, shards: &[i32]) -> QueryResult<Vec<DialogRecord>> {
            let mut rows = Vec::new();
            for chunk in shards.chunks(CHUNK) {
                rows.extend(
                    uacreg_dialog::table
                        .select(DialogRecord::as_select())
                        .filter(uacreg_dialog::shard.eq_any(chunk))
                        .order(uacreg_dialog::l_uuid)
                        .load(self)?,
                );
            }
            Ok(rows)
        }
    };
}

/// The database's clock in ms since the Unix epoch, per engine. MySQL's: UTC_TIMESTAMP does
/// not depend on the session's time zone, so the hour repeated when daylight saving time ends
/// does not make the clock run back (as `UNIX_TIMESTAMP(NOW(3))` would in such a zone).
const SQLITE_NOW_MS: &str = "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)";
const POSTGRES_NOW_MS: &str = "(EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT";
const MYSQL_NOW_MS: &str = "CAST(TIMESTAMPDIFF(MICROSECOND, TIMESTAMP('1970-01-01 00:00:00'), \
                            UTC_TIMESTAMP(6)) DIV 1000 AS SIGNED)";

impl ClusterSql for SqliteConnection {
    fn in_transaction<T>(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.immediate_transaction(f)
    }

    fn db_now_ms(&mut self) -> QueryResult<i64> {
        diesel::select(sql::<BigInt>(SQLITE_NOW_MS)).get_result(self)
    }

    fn lock_shards(&mut self, shards: &[i32]) -> QueryResult<Vec<ShardRecord>> {
        // No row locks: the immediate transaction already excludes every other writer.
        let mut rows = Vec::new();
        for chunk in shards.chunks(CHUNK) {
            rows.extend(
                uacreg_cluster_shard::table
                    .select(ShardRecord::as_select())
                    .filter(uacreg_cluster_shard::shard.eq_any(chunk))
                    .order(uacreg_cluster_shard::shard)
                    .load(self)?,
            );
        }
        Ok(rows)
    }

    fn lock_shards_unless_locked(&mut self, shards: &[i32]) -> QueryResult<Vec<ShardRecord>> {
        self.lock_shards(shards)
    }

    fn insert_shards(&mut self, shards: &[i32]) -> QueryResult<()> {
        for chunk in shards.chunks(CHUNK) {
            let rows: Vec<_> = chunk
                .iter()
                .map(|s| uacreg_cluster_shard::shard.eq(*s))
                .collect();
            diesel::insert_or_ignore_into(uacreg_cluster_shard::table)
                .values(&rows)
                .execute(self)?;
        }
        Ok(())
    }

    fn upsert_node(&mut self, node: &NodeRecord) -> QueryResult<()> {
        diesel::replace_into(uacreg_cluster_node::table)
            .values(node)
            .execute(self)
            .map(drop)
    }

    fn upsert_dialogs(&mut self, rows: &[DialogRecord]) -> QueryResult<()> {
        for chunk in rows.chunks(CHUNK) {
            diesel::replace_into(uacreg_dialog::table)
                .values(chunk)
                .execute(self)?;
        }
        Ok(())
    }

    shared_statements!();
}

/// Rows per PostgreSQL UNNEST upsert (arrays are one parameter each, so only memory bounds it).
const PG_ARRAY_CHUNK: usize = 10_000;

const PG_UPSERT_DIALOGS: &str = "INSERT INTO uacreg_dialog (l_uuid, shard, call_id, from_tag, \
     next_cseq, binding_expires_ms, granted_expires, contact, node_id, updated_ms) \
     SELECT * FROM UNNEST($1::text[], $2::int4[], $3::text[], $4::text[], $5::int8[], \
     $6::int8[], $7::int4[], $8::text[], $9::text[], $10::int8[]) \
     ON CONFLICT (l_uuid) DO UPDATE SET shard = EXCLUDED.shard, call_id = EXCLUDED.call_id, \
     from_tag = EXCLUDED.from_tag, next_cseq = EXCLUDED.next_cseq, \
     binding_expires_ms = EXCLUDED.binding_expires_ms, \
     granted_expires = EXCLUDED.granted_expires, contact = EXCLUDED.contact, \
     node_id = EXCLUDED.node_id, updated_ms = EXCLUDED.updated_ms";

impl ClusterSql for AsyncConnectionWrapper<AsyncPgConnection> {
    fn in_transaction<T>(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.transaction(f)
    }

    fn db_now_ms(&mut self) -> QueryResult<i64> {
        diesel::select(sql::<BigInt>(POSTGRES_NOW_MS)).get_result(self)
    }

    fn lock_shards(&mut self, shards: &[i32]) -> QueryResult<Vec<ShardRecord>> {
        // One array parameter whatever the count; ORDER BY makes every transaction lock in the
        // same order (PostgreSQL locks the rows as the sorted result emits them).
        uacreg_cluster_shard::table
            .select(ShardRecord::as_select())
            .filter(uacreg_cluster_shard::shard.eq_any(shards))
            .order(uacreg_cluster_shard::shard)
            .for_update()
            .load(self)
    }

    fn lock_shards_unless_locked(&mut self, shards: &[i32]) -> QueryResult<Vec<ShardRecord>> {
        uacreg_cluster_shard::table
            .select(ShardRecord::as_select())
            .filter(uacreg_cluster_shard::shard.eq_any(shards))
            .order(uacreg_cluster_shard::shard)
            .for_update()
            .skip_locked()
            .load(self)
    }

    fn insert_shards(&mut self, shards: &[i32]) -> QueryResult<()> {
        for chunk in shards.chunks(CHUNK) {
            let rows: Vec<_> = chunk
                .iter()
                .map(|s| uacreg_cluster_shard::shard.eq(*s))
                .collect();
            diesel::insert_into(uacreg_cluster_shard::table)
                .values(&rows)
                .on_conflict_do_nothing()
                .execute(self)?;
        }
        Ok(())
    }

    fn upsert_node(&mut self, node: &NodeRecord) -> QueryResult<()> {
        use diesel::upsert::excluded;
        use uacreg_cluster_node::*;
        diesel::insert_into(table)
            .values(node)
            .on_conflict(node_id)
            .do_update()
            .set((
                sip_addr.eq(excluded(sip_addr)),
                started_ms.eq(excluded(started_ms)),
                seen_ms.eq(excluded(seen_ms)),
                leaving.eq(excluded(leaving)),
                instance.eq(excluded(instance)),
            ))
            .execute(self)
            .map(drop)
    }

    fn upsert_dialogs(&mut self, rows: &[DialogRecord]) -> QueryResult<()> {
        // One array per column and UNNEST: ten parameters per statement whatever the row count,
        // and the server plans one statement for thousands of rows.
        use diesel::sql_types::Array;
        for chunk in rows.chunks(PG_ARRAY_CHUNK) {
            let column = |f: fn(&DialogRecord) -> &String| -> Vec<&str> {
                chunk.iter().map(|r| f(r).as_str()).collect()
            };
            diesel::sql_query(PG_UPSERT_DIALOGS)
                .bind::<Array<Text>, _>(column(|r| &r.l_uuid))
                .bind::<Array<Integer>, _>(chunk.iter().map(|r| r.shard).collect::<Vec<_>>())
                .bind::<Array<Text>, _>(column(|r| &r.call_id))
                .bind::<Array<Text>, _>(column(|r| &r.from_tag))
                .bind::<Array<BigInt>, _>(chunk.iter().map(|r| r.next_cseq).collect::<Vec<_>>())
                .bind::<Array<BigInt>, _>(
                    chunk
                        .iter()
                        .map(|r| r.binding_expires_ms)
                        .collect::<Vec<_>>(),
                )
                .bind::<Array<Integer>, _>(
                    chunk.iter().map(|r| r.granted_expires).collect::<Vec<_>>(),
                )
                .bind::<Array<Text>, _>(column(|r| &r.contact))
                .bind::<Array<Text>, _>(column(|r| &r.node_id))
                .bind::<Array<BigInt>, _>(chunk.iter().map(|r| r.updated_ms).collect::<Vec<_>>())
                .execute(self)?;
        }
        Ok(())
    }

    shared_statements!();
}

impl ClusterSql for AsyncConnectionWrapper<AsyncMysqlConnection> {
    fn in_transaction<T>(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.transaction(f)
    }

    fn db_now_ms(&mut self) -> QueryResult<i64> {
        diesel::select(sql::<BigInt>(MYSQL_NOW_MS)).get_result(self)
    }

    fn lock_shards(&mut self, shards: &[i32]) -> QueryResult<Vec<ShardRecord>> {
        // By primary key, so InnoDB locks exactly these rows (a scan would lock every row it
        // passes under REPEATABLE READ), in ascending order in every transaction.
        let mut rows = Vec::new();
        for chunk in shards.chunks(CHUNK) {
            rows.extend(
                uacreg_cluster_shard::table
                    .select(ShardRecord::as_select())
                    .filter(uacreg_cluster_shard::shard.eq_any(chunk))
                    .order(uacreg_cluster_shard::shard)
                    .for_update()
                    .load(self)?,
            );
        }
        Ok(rows)
    }

    fn lock_shards_unless_locked(&mut self, shards: &[i32]) -> QueryResult<Vec<ShardRecord>> {
        let mut rows = Vec::new();
        for chunk in shards.chunks(CHUNK) {
            rows.extend(
                uacreg_cluster_shard::table
                    .select(ShardRecord::as_select())
                    .filter(uacreg_cluster_shard::shard.eq_any(chunk))
                    .order(uacreg_cluster_shard::shard)
                    .for_update()
                    .skip_locked()
                    .load(self)?,
            );
        }
        Ok(rows)
    }

    fn insert_shards(&mut self, shards: &[i32]) -> QueryResult<()> {
        for chunk in shards.chunks(CHUNK) {
            let rows: Vec<_> = chunk
                .iter()
                .map(|s| uacreg_cluster_shard::shard.eq(*s))
                .collect();
            diesel::insert_or_ignore_into(uacreg_cluster_shard::table)
                .values(&rows)
                .execute(self)?;
        }
        Ok(())
    }

    fn upsert_node(&mut self, node: &NodeRecord) -> QueryResult<()> {
        // INSERT … ON DUPLICATE KEY UPDATE, not REPLACE: REPLACE deletes and re-inserts, taking
        // next-key locks on the neighbouring node rows, and two nodes' rounds deadlocked on them.
        use uacreg_cluster_node::*;
        diesel::insert_into(table)
            .values(node)
            .on_conflict(diesel::dsl::DuplicatedKeys)
            .do_update()
            .set((
                sip_addr.eq(new_value::<Text>("sip_addr")),
                started_ms.eq(new_value::<BigInt>("started_ms")),
                seen_ms.eq(new_value::<BigInt>("seen_ms")),
                leaving.eq(new_value::<SmallInt>("leaving")),
                instance.eq(new_value::<BigInt>("instance")),
            ))
            .execute(self)
            .map(drop)
    }

    fn upsert_dialogs(&mut self, rows: &[DialogRecord]) -> QueryResult<()> {
        // Upserts in key order (the caller sorts), for the same reason as `upsert_node`: every
        // writer then takes its row locks in one order, and none waits on a neighbour's gap.
        use uacreg_dialog::*;
        for chunk in rows.chunks(CHUNK) {
            diesel::insert_into(table)
                .values(chunk)
                .on_conflict(diesel::dsl::DuplicatedKeys)
                .do_update()
                .set((
                    shard.eq(new_value::<Integer>("shard")),
                    call_id.eq(new_value::<Text>("call_id")),
                    from_tag.eq(new_value::<Text>("from_tag")),
                    next_cseq.eq(new_value::<BigInt>("next_cseq")),
                    binding_expires_ms.eq(new_value::<BigInt>("binding_expires_ms")),
                    granted_expires.eq(new_value::<Integer>("granted_expires")),
                    contact.eq(new_value::<Text>("contact")),
                    node_id.eq(new_value::<Text>("node_id")),
                    updated_ms.eq(new_value::<BigInt>("updated_ms")),
                ))
                .execute(self)?;
        }
        Ok(())
    }

    shared_statements!();
}

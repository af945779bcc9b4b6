//! The cluster's leases and dialog rows on real PostgreSQL and MariaDB servers (started for the
//! test by tests/support/dbserver.rs): the compare-and-set rules of `src/store/cluster.rs`, two
//! sessions racing for the same shards from two threads, an old owner writing dialog rows while
//! another node takes its shard over, and a 100,000-row dialog batch.
//!
//! The SQLite unit tests in `src/store/cluster.rs` check the same rules on the one engine that
//! has no row locks; here the locks and each server's clock expression are what is tested.
//! A missing server binary skips locally and fails in CI.

mod support;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use support::dbserver::{DbServer, Engine, require_engine};
use uacreg::store::{DialogRow, NodeInfo, ShardLease, Store, StoreError};

const MINUTE_MS: i64 = 60_000;

fn start(engine: Engine) -> Option<DbServer> {
    if !require_engine(engine) {
        return None;
    }
    Some(DbServer::start(engine).unwrap_or_else(|e| panic!("starting {engine}: {e}")))
}

/// Empties the cluster tables (outside uacreg), so each check starts from nothing.
fn reset(server: &DbServer) {
    server
        .sql(
            "DELETE FROM uacreg_dialog; DELETE FROM uacreg_cluster_shard; \
             DELETE FROM uacreg_cluster_node;",
        )
        .unwrap_or_else(|e| panic!("reset: {e}\n--- log ---\n{}", server.log()));
}

fn open(server: &DbServer) -> Store {
    Store::open(&server.url()).unwrap_or_else(|e| panic!("opening {}: {e}", server.engine()))
}

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
        call_id: format!("{l_uuid}@node-a"),
        from_tag: format!("t{l_uuid}"),
        next_cseq: cseq,
        binding_expires_ms: 1_000 + cseq,
        granted_expires: 3600,
        contact: format!("sip:{l_uuid}@127.0.0.1:5062"),
        node_id: String::new(),
        updated_ms: 0,
    }
}

fn lease_of(store: &mut Store, shard: u32) -> ShardLease {
    let view = store.cluster_view().expect("view");
    view.shards
        .into_iter()
        .find(|s| s.shard == shard)
        .expect("shard row")
}

fn shard_numbers(leases: &[ShardLease]) -> Vec<u32> {
    leases.iter().map(|l| l.shard).collect()
}

fn prepare_and_clock(server: &DbServer) {
    reset(server);
    let (mut a, mut b) = (open(server), open(server));
    a.cluster_prepare(16).unwrap();
    b.cluster_prepare(16).unwrap();
    let err = b.cluster_prepare(8).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::ShardCountMismatch {
                in_database: 16,
                configured: 8
            }
        ),
        "{err}"
    );
    let view = a.cluster_view().unwrap();
    assert_eq!(view.shards.len(), 16);
    assert!(
        view.shards
            .iter()
            .all(|s| s.owner.is_none() && s.epoch == 0)
    );
    // The engine's clock expression really is Unix milliseconds (the server runs here).
    let local = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    assert!(
        (view.db_now_ms - local).abs() < 5_000,
        "{}: db {} local {local}",
        server.engine(),
        view.db_now_ms
    );
    let later = a.cluster_view().unwrap().db_now_ms;
    assert!(later >= view.db_now_ms);
}

fn claims_and_expiry(server: &DbServer) {
    reset(server);
    let (mut a, mut b) = (open(server), open(server));
    a.cluster_prepare(8).unwrap();

    let won = a.cluster_claim("a", &[1, 2], MINUTE_MS).unwrap();
    assert_eq!(shard_numbers(&won), vec![1, 2]);
    assert!(
        won.iter()
            .all(|l| l.epoch == 1 && l.owner.as_deref() == Some("a"))
    );
    assert_eq!(lease_of(&mut b, 2), won[1]);
    assert!(b.cluster_claim("b", &[1, 2], MINUTE_MS).unwrap().is_empty());
    assert!(a.cluster_claim("a", &[1], MINUTE_MS).unwrap().is_empty());
    let won_b = b.cluster_claim("b", &[0, 1, 3], MINUTE_MS).unwrap();
    assert_eq!(shard_numbers(&won_b), vec![0, 3]);

    // An expired lease is not renewed by its owner's round; the next claimer gets it.
    let expired = a.cluster_claim("a", &[4], -1).unwrap();
    let view = a.cluster_round(&node("a"), MINUTE_MS).unwrap();
    assert_eq!(view.shards[4], expired[0]);
    assert!(view.shards[4].expires_ms <= view.db_now_ms);
    // …while its live leases are extended.
    assert!(view.shards[1].expires_ms > won[0].expires_ms || view.shards[1] == won[0]);
    assert!(view.shards[1].expires_ms >= view.db_now_ms + MINUTE_MS - 1);
    let taken = b.cluster_claim("b", &[4], MINUTE_MS).unwrap();
    assert_eq!((taken[0].epoch, taken[0].owner.as_deref()), (2, Some("b")));
    let view = a.cluster_round(&node("a"), MINUTE_MS).unwrap();
    assert_eq!(view.shards[4], taken[0]);

    // A short lease runs out by the server's clock.
    assert_eq!(a.cluster_claim("a", &[5], 200).unwrap().len(), 1);
    assert!(b.cluster_claim("b", &[5], MINUTE_MS).unwrap().is_empty());
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(b.cluster_claim("b", &[5], MINUTE_MS).unwrap()[0].epoch, 2);

    // Release needs the owner and its epoch.
    assert!(a.cluster_release("a", &[(1, 2)]).unwrap().is_empty());
    assert!(b.cluster_release("b", &[(1, 1)]).unwrap().is_empty());
    assert_eq!(
        a.cluster_release("a", &[(1, 1), (2, 1)]).unwrap(),
        vec![1, 2]
    );
    let freed = lease_of(&mut b, 1);
    assert_eq!((freed.owner, freed.epoch, freed.expires_ms), (None, 1, 0));

    // Node rows.
    b.cluster_round(
        &NodeInfo {
            leaving: true,
            ..node("b")
        },
        MINUTE_MS,
    )
    .unwrap();
    let view = a.cluster_view().unwrap();
    let nodes: Vec<(&str, bool)> = view
        .nodes
        .iter()
        .map(|n| (n.node_id.as_str(), n.leaving))
        .collect();
    assert_eq!(nodes, vec![("a", false), ("b", true)]);
    assert_eq!(view.nodes[1].sip_addr, "b.example:5060");
    b.cluster_forget_node("b").unwrap();
    assert_eq!(a.cluster_view().unwrap().nodes.len(), 1);
}

fn fenced_dialogs(server: &DbServer) {
    reset(server);
    let (mut a, mut b) = (open(server), open(server));
    a.cluster_prepare(4).unwrap();
    let won = a.cluster_claim("a", &[0, 1], MINUTE_MS).unwrap();
    b.cluster_claim("b", &[2], MINUTE_MS).unwrap();
    a.cluster_claim("a", &[3], -1).unwrap();
    let held: HashMap<u32, i64> = [(0, won[0].epoch), (1, won[1].epoch + 1), (2, 1), (3, 1)]
        .into_iter()
        .collect();
    let rows = [
        dialog("u0", 0, 2),
        dialog("u1", 1, 2),
        dialog("u2", 2, 2),
        dialog("u3", 3, 2),
    ];
    assert_eq!(a.write_dialogs("a", &held, &rows, &[]).unwrap(), 3);
    let stored = b.read_dialogs(&[0, 1, 2, 3]).unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].node_id, "a");
    assert!(stored[0].updated_ms > 0);
    assert_eq!(
        stored[0],
        DialogRow {
            node_id: "a".into(),
            updated_ms: stored[0].updated_ms,
            ..rows[0].clone()
        }
    );
    // The new owner's rows cannot be overwritten or deleted by the old one.
    a.cluster_release("a", &[(0, won[0].epoch)]).unwrap();
    let taken = b.cluster_claim("b", &[0], MINUTE_MS).unwrap();
    let b_held: HashMap<u32, i64> = [(0, taken[0].epoch)].into_iter().collect();
    assert_eq!(
        b.write_dialogs("b", &b_held, &[dialog("u0", 0, 3)], &[])
            .unwrap(),
        0
    );
    assert_eq!(
        a.write_dialogs("a", &held, &[dialog("u0", 0, 9)], &["u0".into()])
            .unwrap(),
        1
    );
    let stored = a.read_dialogs(&[0]).unwrap();
    assert_eq!((stored[0].next_cseq, stored[0].node_id.as_str()), (3, "b"));
    // The owner deletes.
    b.write_dialogs("b", &b_held, &[], &["u0".into()]).unwrap();
    assert!(a.read_dialogs(&[0]).unwrap().is_empty());
}

/// 100,000 rows written, rewritten, read back and half removed, in batches. The time is
/// printed for the record, not asserted.
fn large_dialog_batch(server: &DbServer) {
    const ROWS: usize = 100_000;
    const SHARDS: u32 = 16;
    reset(server);
    let mut a = open(server);
    a.cluster_prepare(SHARDS).unwrap();
    let all: Vec<u32> = (0..SHARDS).collect();
    let won = a.cluster_claim("a", &all, MINUTE_MS).unwrap();
    let held: HashMap<u32, i64> = won.iter().map(|l| (l.shard, l.epoch)).collect();
    let rows: Vec<DialogRow> = (0..ROWS)
        .map(|i| dialog(&format!("l-{i:06}"), i as u32 % SHARDS, 1))
        .collect();
    let began = Instant::now();
    assert_eq!(a.write_dialogs("a", &held, &rows, &[]).unwrap(), 0);
    let inserted = began.elapsed();
    let again: Vec<DialogRow> = rows
        .iter()
        .map(|r| DialogRow {
            next_cseq: 2,
            ..r.clone()
        })
        .collect();
    let began = Instant::now();
    assert_eq!(a.write_dialogs("a", &held, &again, &[]).unwrap(), 0);
    let updated = began.elapsed();
    let stored = a.read_dialogs(&all).unwrap();
    assert_eq!(stored.len(), ROWS);
    assert!(stored.iter().all(|r| r.next_cseq == 2));
    let removed: Vec<String> = rows.iter().step_by(2).map(|r| r.l_uuid.clone()).collect();
    let began = Instant::now();
    a.write_dialogs("a", &held, &[], &removed).unwrap();
    let deleted = began.elapsed();
    let left = a.read_dialogs(&all).unwrap();
    assert_eq!(left.len(), ROWS / 2);
    let removed: BTreeSet<&str> = removed.iter().map(String::as_str).collect();
    assert!(left.iter().all(|r| !removed.contains(r.l_uuid.as_str())));
    eprintln!(
        "{}: {ROWS} dialog rows inserted in {inserted:?}, updated in {updated:?}, half deleted in {deleted:?}",
        server.engine()
    );
}

/// Two sessions claim the same 64 shards at once from two threads, several times over, with
/// the shards free or held under an expired lease by a third node: every shard ends with one
/// owner, and no shard is reported won by both.
fn racing_claims(server: &DbServer) {
    const SHARDS: u32 = 64;
    const ROUNDS: usize = 6;
    reset(server);
    let mut observer = open(server);
    observer.cluster_prepare(SHARDS).unwrap();
    let all: Vec<u32> = (0..SHARDS).collect();
    for round in 0..ROUNDS {
        if round % 2 == 1 {
            // Held by a node that has stopped renewing.
            let dead = observer.cluster_claim("dead", &all, -1).unwrap();
            assert_eq!(dead.len(), SHARDS as usize);
        }
        let barrier = Arc::new(Barrier::new(2));
        let claimers: Vec<_> = ["a", "b"]
            .into_iter()
            .map(|name| {
                let barrier = Arc::clone(&barrier);
                let url = server.url();
                let mut order = all.clone();
                if name == "b" {
                    order.reverse();
                }
                let one_by_one = round % 3 == 2;
                std::thread::spawn(move || {
                    let mut store = Store::open(&url).expect("store opens");
                    barrier.wait();
                    if one_by_one {
                        let mut won = Vec::new();
                        for shard in order {
                            won.extend(store.cluster_claim(name, &[shard], MINUTE_MS).unwrap());
                        }
                        won
                    } else {
                        store.cluster_claim(name, &order, MINUTE_MS).unwrap()
                    }
                })
            })
            .collect();
        let results: Vec<Vec<ShardLease>> = claimers
            .into_iter()
            .map(|t| t.join().expect("claimer thread"))
            .collect();
        let a: BTreeSet<u32> = results[0].iter().map(|l| l.shard).collect();
        let b: BTreeSet<u32> = results[1].iter().map(|l| l.shard).collect();
        assert!(
            a.is_disjoint(&b),
            "{} round {round}: won by both: {:?}",
            server.engine(),
            a.intersection(&b).collect::<Vec<_>>()
        );
        assert_eq!(a.len() + b.len(), SHARDS as usize, "round {round}");
        let view = observer.cluster_view().unwrap();
        for lease in results.iter().flatten() {
            assert_eq!(&view.shards[lease.shard as usize], lease, "round {round}");
        }
        // Give everything back for the next round.
        for (name, won) in ["a", "b"].into_iter().zip(&results) {
            let leases: Vec<(u32, i64)> = won.iter().map(|l| (l.shard, l.epoch)).collect();
            let released = observer.cluster_release(name, &leases).unwrap();
            assert_eq!(released.len(), won.len());
        }
        assert!(
            observer
                .cluster_view()
                .unwrap()
                .shards
                .iter()
                .all(|s| s.owner.is_none())
        );
    }
}

/// The old owner keeps writing while its lease runs out and another node claims the shard:
/// every write it was told had landed committed before the claim, so the new owner reads the
/// last of them, and nothing it writes afterwards lands.
fn writes_racing_a_takeover(server: &DbServer) {
    reset(server);
    let mut b = open(server);
    b.cluster_prepare(1).unwrap();
    let url = server.url();
    let mut a = open(server);
    let won = a.cluster_claim("a", &[0], 300).unwrap();
    let held: HashMap<u32, i64> = [(0, won[0].epoch)].into_iter().collect();
    let writer = std::thread::spawn(move || {
        let mut a = Store::open(&url).expect("store opens");
        let mut landed = Vec::new();
        let mut refused = 0;
        let mut cseq = 0;
        while refused < 20 {
            cseq += 1;
            let skipped = a
                .write_dialogs("a", &held, &[dialog("x", 0, cseq)], &[])
                .unwrap();
            if skipped == 0 {
                assert_eq!(refused, 0, "a write landed after one was refused");
                landed.push(cseq);
            } else {
                refused += 1;
            }
        }
        landed
    });
    let taken = loop {
        let won = b.cluster_claim("b", &[0], MINUTE_MS).unwrap();
        if let Some(lease) = won.into_iter().next() {
            break lease;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(taken.epoch, 2);
    let seen_at_takeover = b.read_dialogs(&[0]).unwrap();
    let landed = writer.join().expect("writer thread");
    assert!(!landed.is_empty(), "the old owner never wrote");
    assert_eq!(b.read_dialogs(&[0]).unwrap(), seen_at_takeover);
    assert_eq!(seen_at_takeover.len(), 1);
    assert_eq!(Some(&seen_at_takeover[0].next_cseq), landed.last());
}

fn whole_suite(engine: Engine) {
    let Some(server) = start(engine) else {
        return;
    };
    // The first session creates the tables.
    drop(open(&server));
    prepare_and_clock(&server);
    claims_and_expiry(&server);
    fenced_dialogs(&server);
    racing_claims(&server);
    writes_racing_a_takeover(&server);
    large_dialog_batch(&server);
}

#[test]
fn postgres_leases_and_dialogs() {
    whole_suite(Engine::Postgres);
}

#[test]
fn mariadb_leases_and_dialogs() {
    whole_suite(Engine::MariaDb);
}

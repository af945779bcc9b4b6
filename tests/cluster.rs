//! Several uacregd processes sharing one PostgreSQL or MariaDB database (issue 15): each row is
//! registered by exactly one node, a dead node's rows move to the others with their dialogs, a
//! paused or cut-off node stops sending before anyone takes its shards, and stopping hands
//! rows over instead of un-REGISTERing. The registrar records every binding with its Call-ID and
//! source, and reports any moment an AoR held two clients' bindings ("overlaps") or none
//! ("gaps"); the tests fail on either.

mod support;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::cluster::{self, Cluster};
use support::dbserver::{DbServer, Engine, require_engine};
use uacreg::testing::registrar::{RegistrarConfig, TestRegistrar};

const UACREGD: &str = env!("CARGO_BIN_EXE_uacregd");
const SHARDS: u32 = 256;
const LEASE_SECS: u64 = 3;
/// Short enough that every row refreshes during a test, long enough that a takeover (a lease
/// and a round) fits well inside one grant.
const EXPIRES: u32 = 30;

/// Every node un-REGISTERs on shutdown as a single node would: a node with live peers must
/// hand over instead, so the registrar seeing no un-REGISTER proves the handover.
fn node_config(name: &str) -> String {
    format!(
        "unregister_on_shutdown = true\n[cluster]\nenabled = true\nnode_id = \"{name}\"\n\
         lease_secs = {LEASE_SECS}\nshards = {SHARDS}\n[retry]\nstart_spread_secs = 1\n\
         [database]\nstatus_table = true\nstatus_interval_secs = 1\n"
    )
}

/// One scenario at a time: each runs a database server, a registrar and three or four daemons,
/// and their timing (a takeover within a lease and 5 s) is what is tested, so they do not
/// share two cores with each other.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A database server, the registrar and `rows` rows in the table.
struct Setup {
    server: DbServer,
    registrar: TestRegistrar,
    rows: usize,
    /// Last, so the turn ends after the server and registrar are gone.
    _turn: tokio::sync::MutexGuard<'static, ()>,
}

impl Setup {
    async fn start(engine: Engine, rows: usize) -> Option<Setup> {
        if !require_engine(engine) {
            return None;
        }
        let turn = ONE_AT_A_TIME.lock().await;
        let server = tokio::task::spawn_blocking(move || DbServer::start(engine))
            .await
            .expect("set-up ran")
            .expect("the database server starts");
        let registrar = TestRegistrar::start(RegistrarConfig {
            users: cluster::accounts(rows),
            ..RegistrarConfig::default()
        })
        .await
        .expect("registrar starts");
        let table = cluster::rows(rows, registrar.local_addr(), EXPIRES);
        let url = server.url();
        tokio::task::spawn_blocking(move || cluster::write_rows(&url, &table))
            .await
            .expect("set-up ran")
            .expect("rows written");
        Some(Setup {
            _turn: turn,
            server,
            registrar,
            rows,
        })
    }

    fn start_nodes(&self, names: &[&str]) -> Cluster {
        let configs: Vec<String> = names.iter().map(|n| node_config(n)).collect();
        let configs: Vec<&str> = configs.iter().map(String::as_str).collect();
        tokio::task::block_in_place(|| Cluster::start(UACREGD, &self.server, &configs))
            .expect("the nodes start")
    }

    async fn all_bound(&self, nodes: &Cluster, limit: Duration) {
        if let Err(why) = cluster::wait_all_bound(&self.registrar, self.rows, limit).await {
            panic!("{why}\n{}", nodes.logs(40));
        }
    }

    /// Neither two clients on one AoR nor an AoR without a binding, ever.
    fn assert_clean(&self, nodes: &Cluster) {
        let overlaps = self.registrar.overlaps();
        assert!(
            overlaps.is_empty(),
            "{} overlaps, first {:?}\n{}",
            overlaps.len(),
            overlaps.first(),
            nodes.logs(40)
        );
        let gaps = self.registrar.gaps();
        assert!(
            gaps.is_empty(),
            "{} AoRs went without a binding, first {:?}\n{}",
            gaps.len(),
            gaps.first(),
            nodes.logs(40)
        );
    }
}

/// The result of `method` on node `i`.
fn call(nodes: &Cluster, i: usize, method: &str) -> Value {
    let text = nodes
        .node(i)
        .daemon()
        .call(method, "")
        .unwrap_or_else(|e| panic!("{method} does not answer: {e}"));
    let body = text.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    let answer: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {text}"));
    answer["result"].clone()
}

/// `uacreg.cluster` of node `i`.
fn cluster_status(nodes: &Cluster, i: usize) -> Value {
    call(nodes, i, "uacreg.cluster")
}

/// Prints a measured figure where `cargo test -- --nocapture` shows it (the README's cluster
/// figures come from these lines).
fn figure(what: &str, value: impl std::fmt::Display) {
    eprintln!("cluster figure: {what}: {value}");
}

/// For each row, the REGISTERs `from` any of `senders` after `since`, up to and including the
/// first one the registrar accepted: what a move of the row cost on the wire.
fn registers_until_bound(
    registrar: &TestRegistrar,
    rows: &[usize],
    senders: &HashSet<SocketAddr>,
    since: Instant,
) -> Vec<usize> {
    rows.iter()
        .filter_map(|row| {
            let sent: Vec<_> = registrar
                .requests_for(&cluster::user(*row))
                .into_iter()
                .filter(|r| r.at >= since && senders.contains(&r.source))
                .collect();
            let first_ok = sent.iter().position(|r| r.code == 200)?;
            Some(first_ok + 1)
        })
        .collect()
}

fn mean_and_max(counts: &[usize]) -> String {
    let total: usize = counts.iter().sum();
    let max = counts.iter().max().copied().unwrap_or(0);
    format!(
        "{:.2} mean, {max} max over {} rows",
        total as f64 / counts.len().max(1) as f64,
        counts.len()
    )
}

fn held(nodes: &Cluster, i: usize) -> BTreeSet<u64> {
    cluster_status(nodes, i)["held"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default()
}

/// Waits until the running nodes `among` hold every shard between them, each once, with no
/// node above `max_each`; returns the shards of each.
async fn wait_balanced(
    nodes: &Cluster,
    among: &[usize],
    max_each: usize,
    limit: Duration,
) -> Vec<BTreeSet<u64>> {
    let began = Instant::now();
    loop {
        let shares: Vec<BTreeSet<u64>> = among.iter().map(|i| held(nodes, *i)).collect();
        let total: usize = shares.iter().map(BTreeSet::len).sum();
        let union: BTreeSet<u64> = shares.iter().flatten().copied().collect();
        if total == SHARDS as usize
            && union.len() == SHARDS as usize
            && shares.iter().all(|s| s.len() <= max_each)
        {
            return shares;
        }
        if began.elapsed() > limit {
            let sizes: Vec<usize> = shares.iter().map(BTreeSet::len).collect();
            panic!(
                "not balanced after {limit:?}: {sizes:?} (union {})\n{}",
                union.len(),
                nodes.logs(40)
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The user (row) numbers whose shard is in `shards`.
fn rows_of(shards: &BTreeSet<u64>, rows: usize) -> Vec<usize> {
    (0..rows)
        .filter(|i| {
            let l_uuid = format!("uuid{i:06}");
            shards.contains(&u64::from(uacreg::cluster::shard_of(&l_uuid, SHARDS)))
        })
        .collect()
}

/// Starting three nodes: every row registered once, by one node, shards balanced.
async fn start_balanced(engine: Engine) {
    let Some(setup) = Setup::start(engine, 3_000).await else {
        return;
    };
    let mut nodes = setup.start_nodes(&["node-a", "node-b", "node-c"]);
    let fair = (SHARDS as usize).div_ceil(3) + 2;
    wait_balanced(&nodes, &[0, 1, 2], fair, Duration::from_secs(60)).await;
    setup.all_bound(&nodes, Duration::from_secs(60)).await;
    // Every row's binding comes from exactly the node that holds its shard: at once where the
    // first holder kept the shard, within one grant where the shard moved while the later
    // nodes joined (the new holder continues the dialog and sends when the refresh is due).
    // The shares are read again each time: a node a shard or two above its fair share may
    // still be giving them back.
    let began = Instant::now();
    let limit = Duration::from_secs(u64::from(EXPIRES) + 15);
    let shares = loop {
        let shares: Vec<BTreeSet<u64>> = (0..3).map(|i| held(&nodes, i)).collect();
        let mut wrong = None;
        'shares: for (i, share) in shares.iter().enumerate() {
            let sip = nodes.node(i).sip();
            for row in rows_of(share, setup.rows).into_iter().step_by(37) {
                let bindings = setup.registrar.bindings(&cluster::user(row));
                assert_eq!(bindings.len(), 1, "row {row}: {bindings:?}");
                if bindings[0].source != sip {
                    wrong = Some(format!(
                        "row {row} is node {i}'s ({sip}) but bound from {}",
                        bindings[0].source
                    ));
                    break 'shares;
                }
            }
        }
        let Some(wrong) = wrong else { break shares };
        assert!(
            began.elapsed() < limit,
            "after {limit:?}: {wrong}\n{}",
            nodes.logs(40)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    if began.elapsed() > Duration::from_secs(1) {
        figure(
            "start-up: bindings all from their holders after",
            format!("{:.1} s", began.elapsed().as_secs_f64()),
        );
    }
    setup.assert_clean(&nodes);
    // `uacregctl cluster` shows the three nodes, live, with their shares.
    let rpc = format!("http://{}/RPC", nodes.node(0).daemon().rpc);
    let shown = std::process::Command::new(env!("CARGO_BIN_EXE_uacregctl"))
        .args(["--rpc", &rpc, "cluster"])
        .output()
        .expect("uacregctl runs");
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(shown.status.success(), "{text}");
    assert!(text.starts_with("node node-a: "), "{text}");
    for name in ["node-a", "node-b", "node-c"] {
        let line = text
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("{name} missing:\n{text}"));
        assert!(line.contains(" live "), "{line}");
    }
    // Each node's reg_dump lists its own rows, each naming it.
    let names = ["node-a", "node-b", "node-c"];
    for (i, share) in shares.iter().enumerate() {
        let dump = call(&nodes, i, "uac.reg_dump");
        let rows = dump.as_array().expect("a list");
        assert_eq!(rows.len(), rows_of(share, setup.rows).len());
        assert!(rows.iter().all(|r| r["node"] == names[i]), "node {i}");
    }
    // Any node lists the whole cluster from the database, each row with the node that runs it
    // (once every node has written its states: one status interval).
    let began = Instant::now();
    loop {
        let dump = call(&nodes, 1, "uacreg.cluster_dump");
        let rows = dump.as_array().expect("a list");
        assert_eq!(rows.len(), setup.rows);
        let settled = rows.iter().all(|r| {
            let l_uuid = r["l_uuid"].as_str().unwrap_or("");
            let shard = u64::from(uacreg::cluster::shard_of(l_uuid, SHARDS));
            let runner = shares.iter().position(|share| share.contains(&shard));
            r["state"] == "registered" && runner.is_some_and(|i| r["node"] == names[i])
        });
        if settled {
            break;
        }
        assert!(
            began.elapsed() < Duration::from_secs(15),
            "cluster_dump does not show every row registered by its node: {}",
            rows.iter()
                .find(|r| r["state"] != "registered")
                .map_or(String::new(), Value::to_string)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let shown = std::process::Command::new(env!("CARGO_BIN_EXE_uacregctl"))
        .args(["--rpc", &rpc, "reg_dump", "--cluster"])
        .output()
        .expect("uacregctl runs");
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(shown.status.success(), "{text}");
    assert!(
        text.contains(&format!(
            "{} records: registered {}",
            setup.rows, setup.rows
        )),
        "{text}"
    );
    let by_node = text.lines().last().unwrap_or("");
    assert!(by_node.starts_with("by node: node-a "), "{by_node}");
    tokio::task::block_in_place(|| nodes.stop_all(Duration::from_secs(20)));
}

/// `kill -9` of one node: the others take its shards once its leases lapse and continue its
/// dialogs (same Call-ID, higher CSeq); no AoR ever without a binding or with two.
async fn killed_node(engine: Engine) {
    let Some(setup) = Setup::start(engine, 3_000).await else {
        return;
    };
    let mut nodes = setup.start_nodes(&["node-a", "node-b", "node-c"]);
    let fair = (SHARDS as usize).div_ceil(3) + 2;
    let shares = wait_balanced(&nodes, &[0, 1, 2], fair, Duration::from_secs(60)).await;
    setup.all_bound(&nodes, Duration::from_secs(60)).await;
    let victim_rows = rows_of(&shares[0], setup.rows);
    let victim_sip = nodes.node(0).sip();
    // What the victim last sent for each of its rows.
    let before: HashMap<usize, (String, u32)> = victim_rows
        .iter()
        .map(|row| {
            let binding = setup.registrar.bindings(&cluster::user(*row))[0].clone();
            (*row, (binding.call_id, binding.cseq))
        })
        .collect();

    nodes.node_mut(0).daemon_mut().kill9().expect("kill -9");
    let killed_at = Instant::now();
    let limit = Duration::from_secs(LEASE_SECS + 5);
    let taken = wait_balanced(
        &nodes,
        &[1, 2],
        SHARDS as usize,
        limit + Duration::from_secs(30),
    )
    .await;
    let took = killed_at.elapsed();
    assert!(
        took <= limit,
        "the shards moved after {took:?}, not within {limit:?}"
    );
    figure(
        &format!("kill -9: shards held by the survivors (lease {LEASE_SECS} s) after"),
        format!("{:.1} s", took.as_secs_f64()),
    );
    assert_eq!(
        taken.iter().map(BTreeSet::len).sum::<usize>(),
        SHARDS as usize
    );

    // Within a grant every moved row is refreshed by its new node, in the old dialog.
    tokio::time::sleep(Duration::from_secs(u64::from(EXPIRES))).await;
    let survivors: HashSet<SocketAddr> = [nodes.node(1).sip(), nodes.node(2).sip()].into();
    figure(
        "kill -9: REGISTERs per moved row until its binding was confirmed",
        mean_and_max(&registers_until_bound(
            &setup.registrar,
            &victim_rows,
            &survivors,
            killed_at,
        )),
    );
    for row in &victim_rows {
        let journal = setup.registrar.journal(&cluster::user(*row));
        let (call_id, cseq) = &before[row];
        let after: Vec<_> = journal
            .iter()
            .filter(|e| e.binding.source != victim_sip)
            .collect();
        assert!(
            !after.is_empty(),
            "row {row} was not refreshed by another node"
        );
        for entry in after {
            assert!(survivors.contains(&entry.binding.source));
            assert_eq!(&entry.binding.call_id, call_id, "row {row} kept its dialog");
            assert!(entry.binding.cseq > *cseq, "row {row}: CSeq went on");
        }
    }
    setup.assert_clean(&nodes);
    tokio::task::block_in_place(|| nodes.stop_all(Duration::from_secs(20)));
}

/// Node 0 is stopped (SIGSTOP) for three leases, then continued: it sends nothing once its
/// deadlines passed, the others carry its rows meanwhile, and it rejoins.
async fn paused_node(engine: Engine) {
    let Some(setup) = Setup::start(engine, 3_000).await else {
        return;
    };
    let mut nodes = setup.start_nodes(&["node-a", "node-b", "node-c"]);
    let fair = (SHARDS as usize).div_ceil(3) + 2;
    wait_balanced(&nodes, &[0, 1, 2], fair, Duration::from_secs(60)).await;
    setup.all_bound(&nodes, Duration::from_secs(60)).await;
    let paused_sip = nodes.node(0).sip();
    nodes.node_mut(0).daemon_mut().sigstop().expect("SIGSTOP");
    let paused_at = Instant::now();
    wait_balanced(
        &nodes,
        &[1, 2],
        SHARDS as usize,
        Duration::from_secs(LEASE_SECS + 5),
    )
    .await;
    tokio::time::sleep(
        (paused_at + Duration::from_secs(3 * LEASE_SECS)).saturating_duration_since(Instant::now()),
    )
    .await;
    nodes.node_mut(0).daemon_mut().sigcont().expect("SIGCONT");
    let resumed_at = Instant::now();
    // Its rows were taken while it slept; from its deadline on it sends nothing for them.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let late: Vec<(String, Instant)> = (0..setup.rows)
        .flat_map(|row| {
            setup
                .registrar
                .journal(&cluster::user(row))
                .into_iter()
                .filter(|e| e.binding.source == paused_sip && e.at >= resumed_at)
                .map(move |e| (cluster::user(row), e.at))
        })
        .collect();
    assert!(
        late.is_empty(),
        "sent after its deadline: {late:?}\n{}",
        nodes.logs(40)
    );
    // It rejoins and gets its share back, gradually.
    wait_balanced(&nodes, &[0, 1, 2], fair, Duration::from_secs(90)).await;
    setup.assert_clean(&nodes);
    tokio::task::block_in_place(|| nodes.stop_all(Duration::from_secs(20)));
}

/// Node 0's database link goes dark: the node stops sending before its leases can lapse, the
/// others take over, and it rejoins when the link is back.
async fn cut_off_node(engine: Engine) {
    let Some(setup) = Setup::start(engine, 3_000).await else {
        return;
    };
    let mut nodes = setup.start_nodes(&["node-a", "node-b", "node-c"]);
    let fair = (SHARDS as usize).div_ceil(3) + 2;
    wait_balanced(&nodes, &[0, 1, 2], fair, Duration::from_secs(60)).await;
    setup.all_bound(&nodes, Duration::from_secs(60)).await;
    nodes.node(0).db_link.cut(support::tcp_cut::CutMode::Freeze);
    // The node itself says it holds nothing within a lease (its RPC still answers).
    let began = Instant::now();
    while !held(&nodes, 0).is_empty() {
        assert!(
            began.elapsed() < Duration::from_secs(LEASE_SECS + 2),
            "node 0 still holds shards without its database\n{}",
            nodes.logs(40)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_balanced(
        &nodes,
        &[1, 2],
        SHARDS as usize,
        Duration::from_secs(LEASE_SECS + 5),
    )
    .await;
    nodes.node(0).db_link.restore();
    wait_balanced(&nodes, &[0, 1, 2], fair, Duration::from_secs(120)).await;
    // It noticed: the shards lapsed at their deadlines, or (when the hung call came back
    // first) the next round found them taken.
    let status = cluster_status(&nodes, 0);
    let gone =
        status["shards_lapsed"].as_u64().unwrap_or(0) + status["shards_lost"].as_u64().unwrap_or(0);
    assert!(gone > 0, "{status}");
    setup.assert_clean(&nodes);
    tokio::task::block_in_place(|| nodes.stop_all(Duration::from_secs(20)));
}

/// Every node restarted in turn (SIGTERM, start again): each hands its shards over on the way
/// down, so no AoR is ever without a binding and nothing is un-REGISTERed; a fourth node then
/// takes its share gradually; the last node standing un-REGISTERs everything.
async fn rolling_restart_join_and_last_stop(engine: Engine) {
    let Some(setup) = Setup::start(engine, 3_000).await else {
        return;
    };
    let mut nodes = setup.start_nodes(&["node-a", "node-b", "node-c"]);
    let fair3 = (SHARDS as usize).div_ceil(3) + 2;
    wait_balanced(&nodes, &[0, 1, 2], fair3, Duration::from_secs(60)).await;
    setup.all_bound(&nodes, Duration::from_secs(60)).await;
    for i in 0..3 {
        let before = held(&nodes, i);
        let stopped_at = Instant::now();
        tokio::task::block_in_place(|| nodes.restart_node(i)).expect("restarts");
        let balanced = wait_balanced(&nodes, &[0, 1, 2], fair3, Duration::from_secs(90)).await;
        if i == 0 {
            figure(
                "rolling restart: stop, start and rebalance of one node",
                format!("{:.1} s", stopped_at.elapsed().as_secs_f64()),
            );
            let handed = rows_of(&before, setup.rows);
            let sent: usize = handed
                .iter()
                .map(|row| {
                    setup
                        .registrar
                        .requests_for(&cluster::user(*row))
                        .iter()
                        .filter(|r| r.at >= stopped_at)
                        .count()
                })
                .sum();
            figure(
                "rolling restart: REGISTERs for the restarted node's rows, stop to rebalanced",
                format!("{sent} for {} rows", handed.len()),
            );
            figure(
                "rolling restart: shards back on the restarted node",
                balanced[i].len(),
            );
        }
    }
    assert_eq!(
        setup.registrar.unregisters(),
        0,
        "handovers, not un-REGISTERs"
    );
    setup.assert_clean(&nodes);

    // A fourth node: shares move a few shards per round, never a row registered twice.
    let joined_at = Instant::now();
    tokio::task::block_in_place(|| nodes.add_node(&node_config("node-d"))).expect("starts");
    let fair4 = (SHARDS as usize).div_ceil(4) + 2;
    let shares4 = wait_balanced(&nodes, &[0, 1, 2, 3], fair4, Duration::from_secs(90)).await;
    figure(
        "fourth node: shards moved to it, and time until balanced",
        format!(
            "{} shards in {:.1} s",
            shares4[3].len(),
            joined_at.elapsed().as_secs_f64()
        ),
    );
    tokio::time::sleep(Duration::from_secs(u64::from(EXPIRES))).await;
    setup.assert_clean(&nodes);
    assert_eq!(setup.registrar.unregisters(), 0);

    // Down to one node by handovers, then the last one un-REGISTERs as a single node does.
    for i in 0..3 {
        tokio::task::block_in_place(|| nodes.stop_node(i, Duration::from_secs(20)));
    }
    wait_balanced(&nodes, &[3], SHARDS as usize, Duration::from_secs(30)).await;
    assert_eq!(setup.registrar.unregisters(), 0);
    setup.assert_clean(&nodes);
    tokio::task::block_in_place(|| nodes.stop_node(3, Duration::from_secs(30)));
    assert_eq!(
        setup.registrar.unregisters() as usize,
        setup.rows,
        "the last node takes every binding back"
    );
    assert_eq!(setup.registrar.bound_users(), 0);
}

/// A second process started under a running node's name (a copied config) holds nothing and
/// says why, while the first runs on; once the first stops, the second takes its place.
async fn twin_node_id(engine: Engine) {
    let Some(setup) = Setup::start(engine, 1_000).await else {
        return;
    };
    let mut nodes = setup.start_nodes(&["node-a", "node-b"]);
    let fair = (SHARDS as usize).div_ceil(2) + 2;
    let shares = wait_balanced(&nodes, &[0, 1], fair, Duration::from_secs(60)).await;
    setup.all_bound(&nodes, Duration::from_secs(60)).await;
    let twin = tokio::task::block_in_place(|| nodes.add_node(&node_config("node-a")))
        .expect("the twin starts");
    // Several leases: it never holds a shard, says why, and node-a keeps its share.
    let began = Instant::now();
    while began.elapsed() < Duration::from_secs(3 * LEASE_SECS) {
        assert!(held(&nodes, twin).is_empty(), "the twin holds shards");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let status = cluster_status(&nodes, twin);
    let why = status["last_error"].as_str().unwrap_or("");
    assert!(why.contains("node_id node-a is in use"), "{status}");
    assert_eq!(held(&nodes, 0), shares[0], "node-a keeps its shards");
    setup.assert_clean(&nodes);
    // node-a stops (handing over); the twin is then node-a and gets a share.
    tokio::task::block_in_place(|| nodes.stop_node(0, Duration::from_secs(20)));
    wait_balanced(&nodes, &[1, twin], fair, Duration::from_secs(60)).await;
    setup.assert_clean(&nodes);
    tokio::task::block_in_place(|| nodes.stop_all(Duration::from_secs(20)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_second_process_under_one_node_id_holds_nothing() {
    twin_node_id(Engine::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_paused_node_sends_nothing_once_its_deadline_passed() {
    paused_node(Engine::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_node_cut_from_the_database_fences_itself() {
    cut_off_node(Engine::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_rolling_restart_join_and_last_stop() {
    rolling_restart_join_and_last_stop(Engine::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_three_nodes_share_the_rows() {
    start_balanced(Engine::MariaDb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_a_killed_nodes_rows_move_with_their_dialogs() {
    killed_node(Engine::MariaDb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_rolling_restart_join_and_last_stop() {
    rolling_restart_join_and_last_stop(Engine::MariaDb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_three_nodes_share_the_rows() {
    start_balanced(Engine::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_killed_nodes_rows_move_with_their_dialogs() {
    killed_node(Engine::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_a_paused_node_sends_nothing_once_its_deadline_passed() {
    paused_node(Engine::MariaDb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_a_node_cut_from_the_database_fences_itself() {
    cut_off_node(Engine::MariaDb).await;
}

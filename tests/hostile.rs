//! The attack suite: uacregd in a process of its own, with 2,000 rows registering and refreshing
//! against the in-repo registrar, is attacked (or its registrar or database misbehaves) while a
//! watcher asks JSON-RPC for its status every quarter second and reads its resident memory.
//!
//! Every case ends with the same verdict ([`Scene::assert_unharmed`]): the process is alive,
//! JSON-RPC answered every probe within a second, memory stayed within a bound, no binding
//! lapsed at the registrar before its refresh came, and every row is registered. Each case also
//! checks the counters that show what was dropped or refused.
//!
//! Rows ask for 30-second bindings, so a case that runs half a minute sees every row refresh
//! while it is attacked.

mod common;
mod support;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use uacreg::rpc::RpcClient;
use uacreg::store::{RawRow, Store};
use uacreg::testing::registrar::{Behavior, RegistrarConfig, TestRegistrar};

use support::process::{self, Watched};

/// Rows per scene.
const ROWS: usize = 2_000;
/// Expiry the rows ask for (and the registrar grants): refreshes every 15–25 s.
const EXPIRES: u32 = 30;
/// How much the daemon's resident memory may grow above where it stood before the attack.
const RSS_GROWTH_LIMIT_KIB: u64 = 64 * 1024;
/// A JSON-RPC probe that takes longer than this counts as a failure.
const RPC_DEADLINE: Duration = Duration::from_secs(1);

/// What a scene is made of, beyond the defaults.
struct SceneSetup {
    rows: usize,
    registrar: RegistrarConfig,
    /// Database URL (default: a SQLite file in the scene's directory).
    db_url: Option<String>,
    /// Appended to the daemon's TOML file.
    extra_config: String,
    /// Applied to every row before it is written.
    row_change: fn(&mut RawRow),
}

impl Default for SceneSetup {
    fn default() -> Self {
        SceneSetup {
            rows: ROWS,
            registrar: RegistrarConfig {
                users: common::users(ROWS),
                keep_history: false,
                ..RegistrarConfig::default()
            },
            db_url: None,
            extra_config: String::new(),
            row_change: |_| {},
        }
    }
}

/// A running uacregd, its registrar and its database.
#[allow(dead_code)] // `sip` and `dir` serve the attack cases and keep files alive.
struct Scene {
    registrar: TestRegistrar,
    daemon: Watched,
    pid: u32,
    sip: SocketAddr,
    rpc_url: String,
    client: RpcClient,
    db_url: String,
    rows: usize,
    log: PathBuf,
    dir: common::TempDir,
}

impl Scene {
    /// Starts the registrar and uacregd and waits until every row is registered.
    async fn start(name: &str, setup: SceneSetup) -> Scene {
        let registrar = TestRegistrar::start(setup.registrar)
            .await
            .expect("registrar starts");
        let dir = common::TempDir::new(name);
        let db_url = setup.db_url.unwrap_or_else(|| dir.db_url());
        let mut rows = uacreg::demo::demo_rows(setup.rows, registrar.local_addr());
        for row in &mut rows {
            row.expires = i64::from(EXPIRES);
            (setup.row_change)(row);
        }
        {
            let url = db_url.clone();
            tokio::task::spawn_blocking(move || common::write_rows(&url, &rows))
                .await
                .expect("rows written");
        }
        let sip = process::spare_udp_port().expect("a spare port");
        let rpc = process::spare_tcp_port().expect("a spare port");
        let (sip, rpc) = (sip.addr(), rpc.addr());
        let config = dir.0.join("uacregd.toml");
        std::fs::write(
            &config,
            format!(
                "db_url = \"{db_url}\"\nsip_listen = \"{sip}\"\nadvertised_addr = \"{sip}\"\n\
                 rpc_listen = \"{rpc}\"\nmetrics_listen = \"\"\nunregister_on_shutdown = false\n\
                 {}\n",
                setup.extra_config
            ),
        )
        .expect("config written");
        let log = dir.0.join("uacregd.log");
        let log_file = std::fs::File::create(&log).expect("log file");
        let mut command = Command::new(env!("CARGO_BIN_EXE_uacregd"));
        command
            .arg("--config")
            .arg(&config)
            .arg("--log")
            .arg("info")
            .env("NO_COLOR", "1");
        let daemon = Watched::spawn(&command, "TERM", &log_file).expect("uacregd starts");
        let pid = daemon_pid(&daemon);
        let rpc_url = format!("http://{rpc}/RPC");
        let client = RpcClient::new(&rpc_url).expect("rpc client");
        let scene = Scene {
            registrar,
            daemon,
            pid,
            sip,
            rpc_url,
            client,
            db_url,
            rows: setup.rows,
            log,
            dir,
        };
        scene
            .wait_registered(scene.rows, Duration::from_secs(60))
            .await;
        scene
    }

    /// Calls a JSON-RPC method.
    async fn call(&self, method: &str, params: &[&str]) -> Result<Value, String> {
        let params: Vec<String> = params.iter().map(|p| p.to_string()).collect();
        match self.client.call(method, &params).await {
            Ok(value) => Ok(value),
            Err(uacreg::rpc::client::RpcError::Call(err)) => Err(format!(
                "{} {}: {}",
                err.code(),
                err.message(),
                err.data().map(|d| d.get().to_string()).unwrap_or_default()
            )),
            Err(err) => Err(err.to_string()),
        }
    }

    async fn status(&self) -> Value {
        self.call("uacreg.status", &[])
            .await
            .expect("uacreg.status answers")
    }

    /// Rows in state `registered`.
    async fn registered(&self) -> usize {
        match self.call("uacreg.status", &[]).await {
            Ok(status) => status["registrations"]["registered"].as_u64().unwrap_or(0) as usize,
            Err(_) => 0,
        }
    }

    /// Waits until `count` rows are registered; fails the test with the log's tail if not.
    async fn wait_registered(&self, count: usize, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let registered = self.registered().await;
            if registered == count {
                return;
            }
            assert!(
                !self.daemon.has_exited(),
                "uacregd exited:\n{}",
                self.log_tail(40)
            );
            assert!(
                Instant::now() < deadline,
                "{registered} of {count} rows registered after {limit:?}:\n{}",
                self.log_tail(40)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn log_tail(&self, lines: usize) -> String {
        process::tail(&process::read_lossy(&self.log), lines)
    }

    fn rss_kib(&self) -> u64 {
        rss_kib(self.pid).unwrap_or(0)
    }

    /// Starts probing JSON-RPC and memory every quarter second until the watch is finished.
    fn watch(&self) -> Watch {
        let stop = Arc::new(AtomicBool::new(false));
        let client = RpcClient::new(&self.rpc_url).expect("rpc client");
        let pid = self.pid;
        let flag = stop.clone();
        let start_rss = self.rss_kib();
        let task = tokio::spawn(async move {
            let mut report = WatchReport {
                start_rss_kib: start_rss,
                peak_rss_kib: start_rss,
                ..WatchReport::default()
            };
            while !flag.load(Ordering::Relaxed) {
                let asked = Instant::now();
                let answer =
                    tokio::time::timeout(RPC_DEADLINE, client.call("uacreg.status", &[])).await;
                let took = asked.elapsed();
                report.probes += 1;
                report.slowest = report.slowest.max(took);
                match answer {
                    Ok(Ok(status)) => {
                        let registered =
                            status["registrations"]["registered"].as_u64().unwrap_or(0);
                        report.least_registered = Some(
                            report
                                .least_registered
                                .map_or(registered, |l| l.min(registered)),
                        );
                    }
                    Ok(Err(err)) => report.failures.push(format!("after {took:?}: {err}")),
                    Err(_) => report
                        .failures
                        .push(format!("no answer within {RPC_DEADLINE:?}")),
                }
                if let Some(rss) = rss_kib(pid) {
                    report.peak_rss_kib = report.peak_rss_kib.max(rss);
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            report
        });
        Watch { stop, task }
    }

    /// The common verdict: alive, answering, bounded memory, no binding lapsed, every row
    /// registered again within `settle`.
    async fn assert_unharmed(&self, report: &WatchReport, settle: Duration) {
        assert!(
            !self.daemon.has_exited(),
            "uacregd exited:\n{}",
            self.log_tail(40)
        );
        assert!(
            report.failures.is_empty(),
            "JSON-RPC missed {} of {} probes (slowest {:?}): {:?}",
            report.failures.len(),
            report.probes,
            report.slowest,
            &report.failures[..report.failures.len().min(5)]
        );
        let growth = report.peak_rss_kib.saturating_sub(report.start_rss_kib);
        assert!(
            growth <= RSS_GROWTH_LIMIT_KIB,
            "resident memory grew by {growth} KiB (from {} KiB)",
            report.start_rss_kib
        );
        self.wait_registered(self.rows, settle).await;
        assert_eq!(
            self.registrar.stats().lapsed,
            0,
            "bindings lapsed at the registrar before their refresh came"
        );
        eprintln!(
            "verdict: {} probes, slowest {:?}, RSS {} → peak {} KiB, least registered {:?}",
            report.probes,
            report.slowest,
            report.start_rss_kib,
            report.peak_rss_kib,
            report.least_registered
        );
    }

    /// Runs `uacregctl` against the daemon; returns (exit code, stdout, stderr).
    fn uacregctl(&self, args: &[&str]) -> (i32, String, String) {
        let output = Command::new(env!("CARGO_BIN_EXE_uacregctl"))
            .arg("--rpc")
            .arg(&self.rpc_url)
            .args(args)
            .env("NO_COLOR", "1")
            .output()
            .expect("uacregctl runs");
        (
            output.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    /// Stops the daemon (SIGTERM) and says how it exited.
    fn stop(mut self) -> Option<std::process::ExitStatus> {
        self.daemon.stop(Duration::from_secs(10))
    }
}

/// What the watcher saw.
#[derive(Debug, Default)]
struct WatchReport {
    probes: u64,
    slowest: Duration,
    /// Probes not answered (in time, or at all).
    failures: Vec<String>,
    start_rss_kib: u64,
    peak_rss_kib: u64,
    least_registered: Option<u64>,
}

struct Watch {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<WatchReport>,
}

impl Watch {
    async fn finish(self) -> WatchReport {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("watcher ran")
    }
}

/// The pid of uacregd under its watchdog shell.
fn daemon_pid(daemon: &Watched) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let found = daemon.processes().into_iter().find(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|comm| comm.trim() == "uacregd")
        });
        if let Some(pid) = found {
            return pid;
        }
        assert!(Instant::now() < deadline, "uacregd did not start");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
}

// ---- the database misbehaves ----

/// A read that finds the table empty (a truncate-and-refill job caught in between, a wrong
/// schema or user) is refused: nothing is un-REGISTERed. `uacregctl reg_reload --force` then
/// applies it, and every binding is taken back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_table_read_is_refused_until_forced() {
    let scene = Scene::start("empty-read", SceneSetup::default()).await;
    let watch = scene.watch();
    let url = scene.db_url.clone();
    tokio::task::spawn_blocking(move || Store::open(&url).expect("store").clear().expect("clear"))
        .await
        .unwrap();

    let refused = scene.call("uac.reg_reload", &[]).await.unwrap_err();
    assert!(refused.starts_with("500 "), "{refused}");
    assert!(
        refused.contains("reload refused") && refused.contains("remove 2000 of the 2000"),
        "{refused}"
    );
    let (code, _, stderr) = scene.uacregctl(&["reg_reload"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("--force"), "{stderr}");
    // A day of refreshes could pass like this: run through one refresh round.
    tokio::time::sleep(Duration::from_secs(u64::from(EXPIRES))).await;
    let report = watch.finish().await;
    scene
        .assert_unharmed(&report, Duration::from_secs(10))
        .await;
    assert_eq!(scene.registrar.stats().removals, 0, "nothing un-REGISTERed");
    let status = scene.status().await;
    assert_eq!(status["database"]["reloads_refused"], 2);
    assert!(
        status["database"]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("max_removed_share")),
        "{status}"
    );
    assert!(scene.log_tail(200).contains("reload refused"));

    let (code, stdout, stderr) = scene.uacregctl(&["reg_reload", "--force"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while scene.registrar.binding_count() > 0 {
        assert!(
            Instant::now() < deadline,
            "{} bindings left",
            scene.registrar.binding_count()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status = scene.status().await;
    assert_eq!(status["registrations"]["registered"], 0);
    assert_eq!(scene.registrar.stats().removals as usize, ROWS);
    scene.stop();
}

/// Removing a few rows is an ordinary edit and is applied without force.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_few_rows_needs_no_force() {
    let scene = Scene::start(
        "few-removed",
        SceneSetup {
            rows: 20,
            registrar: RegistrarConfig {
                users: common::users(20),
                ..RegistrarConfig::default()
            },
            ..SceneSetup::default()
        },
    )
    .await;
    let url = scene.db_url.clone();
    tokio::task::spawn_blocking(move || {
        let mut store = Store::open(&url).expect("store");
        for i in 0..5 {
            assert!(store.delete(&format!("uuid{i:06}")).expect("delete"));
        }
    })
    .await
    .unwrap();
    let report = scene.call("uac.reg_reload", &[]).await.expect("applied");
    assert_eq!(report["removed"], 5);
    scene.wait_registered(15, Duration::from_secs(10)).await;

    // Twelve of the fifteen is more than half: refused.
    let url = scene.db_url.clone();
    tokio::task::spawn_blocking(move || {
        let mut store = Store::open(&url).expect("store");
        for i in 5..17 {
            assert!(store.delete(&format!("uuid{i:06}")).expect("delete"));
        }
    })
    .await
    .unwrap();
    let refused = scene.call("uac.reg_reload", &[]).await.unwrap_err();
    assert!(refused.contains("remove 12 of the 15"), "{refused}");
    assert_eq!(scene.registered().await, 15);
    scene.stop();
}

// ---- the registrar misbehaves ----

/// A registrar stating `expires=4294967295` for a binding it keeps 30 s: the grant is capped at
/// what was asked, so every row refreshes in time instead of never.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_of_4294967295_is_refreshed_as_asked() {
    let mut setup = SceneSetup::default();
    setup.registrar.stated_expires = Some(u32::MAX);
    let scene = Scene::start("overgrant", setup).await;
    let watch = scene.watch();
    let info = scene
        .call("uac.reg_info", &["l_uuid", "uuid000007"])
        .await
        .expect("reg_info");
    assert_eq!(info["granted_expires"], EXPIRES);
    let ok_before = scene.registrar.stats().ok;
    tokio::time::sleep(Duration::from_secs(u64::from(EXPIRES) + 5)).await;
    let report = watch.finish().await;
    scene
        .assert_unharmed(&report, Duration::from_secs(10))
        .await;
    let refreshed = scene.registrar.stats().ok - ok_before;
    assert!(
        refreshed >= ROWS as u64,
        "only {refreshed} refreshes for {ROWS} rows in one grant period"
    );
    scene.stop();
}

/// An authenticating outbound proxy (407, its own realm) in front of the registrar (401): both
/// challenges are answered, every row registers with three REGISTERs, and refreshes carry both
/// credentials.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_407_then_401_chain_registers() {
    let mut setup = SceneSetup::default();
    setup.registrar.proxy_realm = Some("proxy.test".into());
    setup.registrar.keep_history = true;
    // The row's realm pins one realm; empty accepts the proxy's and the registrar's.
    setup.row_change = |row| row.realm = String::new();
    let scene = Scene::start("proxy-chain", setup).await;
    let watch = scene.watch();
    let first = scene.registrar.requests_for("user000042");
    assert_eq!(
        first.iter().map(|r| r.code).collect::<Vec<_>>(),
        [407, 401, 200],
        "{first:?}"
    );
    tokio::time::sleep(Duration::from_secs(u64::from(EXPIRES))).await;
    let report = watch.finish().await;
    scene
        .assert_unharmed(&report, Duration::from_secs(10))
        .await;
    let seen = scene.registrar.requests_for("user000042");
    assert!(seen.len() > 3, "refreshed: {seen:?}");
    // Both kept challenges are answered up front: one REGISTER per refresh.
    assert!(seen[3..].iter().all(|r| r.code == 200), "{seen:?}");
    let status = scene.status().await;
    assert_eq!(
        status["registrations"]["auth_failed"].as_u64().unwrap_or(0),
        0
    );
    scene.stop();
}

/// A registrar answering with a 300-character reason phrase while status write-back goes to
/// PostgreSQL (`VARCHAR(255)`): the rows' status is written (cut to fit), and later batches —
/// every row registered again — are written too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_300_character_reason_phrase_is_written_to_postgresql() {
    use support::dbserver::{DbServer, Engine, require_engine};
    if !require_engine(Engine::Postgres) {
        return;
    }
    let server = tokio::task::spawn_blocking(|| DbServer::start(Engine::Postgres))
        .await
        .unwrap()
        .expect("PostgreSQL starts");
    let setup = SceneSetup {
        db_url: Some(server.url()),
        extra_config: "[database]\nstatus_table = true\nstatus_interval_secs = 1\n".into(),
        ..SceneSetup::default()
    };
    let scene = Scene::start("long-reason", setup).await;
    let watch = scene.watch();
    let reason = format!("Service Unavailable {}", "x".repeat(280));
    assert_eq!(reason.len(), 300);
    scene.registrar.set_behavior(Behavior::Reject {
        code: 503,
        reason: reason.clone(),
        retry_after: Some(2),
    });
    // Long enough for many rows to refresh into the 503 and have their status written.
    let query = "SELECT count(*) FROM uacreg_status WHERE length(last_reason) = 255 \
                 AND last_reason LIKE 'Service Unavailable xxx%'";
    let deadline = Instant::now() + Duration::from_secs(40);
    let long_rows = loop {
        let count: u64 = server
            .sql(query)
            .expect("query")
            .trim()
            .parse()
            .unwrap_or(0);
        if count >= 50 || Instant::now() > deadline {
            break count;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(
        long_rows >= 50,
        "status rows with the cut reason: {long_rows}"
    );
    scene.registrar.set_behavior(Behavior::Normal);
    let report = watch.finish().await;
    scene
        .assert_unharmed(&report, Duration::from_secs(30))
        .await;
    // The next batches reach the table too: every row registered.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let registered: u64 = server
            .sql("SELECT count(*) FROM uacreg_status WHERE state = 'registered'")
            .expect("query")
            .trim()
            .parse()
            .unwrap_or(0);
        if registered == ROWS as u64 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{registered} status rows say registered"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let status = scene.status().await;
    assert_eq!(status["database"]["status_write_failures"], 0, "{status}");
    scene.stop();
}

/// The refusal rule itself.
#[test]
fn which_removals_need_force() {
    use uacreg::gateway::refuses_removal;
    // An empty read of a running table, however small.
    assert!(refuses_removal(1, 1, 0, 0.5));
    assert!(refuses_removal(2000, 2000, 0, 0.5));
    // More than the share, two rows or more.
    assert!(refuses_removal(12, 15, 3, 0.5));
    assert!(!refuses_removal(7, 15, 8, 0.5));
    // One row is an ordinary edit.
    assert!(!refuses_removal(1, 2, 1, 0.5));
    // Share 1.0 lets everything through, even an empty read.
    assert!(!refuses_removal(2000, 2000, 0, 1.0));
    assert!(!refuses_removal(0, 2000, 2000, 0.0));
}

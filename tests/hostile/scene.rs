//! The stage every case of the attack suite plays on: the in-repo registrar, a database with
//! 2,000 rows, and uacregd in a process of its own (`support::uacregd`) registering them; a
//! watcher that asks JSON-RPC for the status every quarter second and reads the daemon's
//! resident memory; and the common verdict.

use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use uacreg::RpcClient;
use uacreg::store::RawRow;
use uacreg::testing::registrar::{RegistrarConfig, TestRegistrar};

use crate::common;
use crate::support::uacregd::{self, Uacregd};

const UACREGD: &str = env!("CARGO_BIN_EXE_uacregd");

/// Rows per scene.
pub const ROWS: usize = 2_000;
/// Expiry the rows ask for (and the registrar grants): refreshes every 15–25 s.
pub const EXPIRES: u32 = 30;
/// An attack during which every row must refresh lasts this long.
pub const REFRESH_PERIOD: Duration = Duration::from_secs(EXPIRES as u64);
/// How much the daemon's resident memory may grow above where it stood before the attack.
const RSS_GROWTH_LIMIT_KIB: u64 = 64 * 1024;
/// A JSON-RPC probe that takes longer than this counts as a failure.
const RPC_DEADLINE: Duration = Duration::from_secs(1);
/// Where the registrar lives. Rows are bound to it, so the daemon trusts this address; the
/// daemon is on 127.0.0.1 and every stranger on another address.
pub const REGISTRAR_IP: &str = "127.0.0.3";
/// In scenes made by [`SceneSetup::with_tcp_rows`], every tenth row (`uuid000000`,
/// `uuid000010`, …) registers over TCP, on one connection the daemon opens to the registrar.
pub const TCP_EVERY: usize = 10;

/// What a scene is made of, beyond the defaults.
pub struct SceneSetup {
    pub rows: usize,
    pub registrar: RegistrarConfig,
    /// Database URL (default: a SQLite file in the scene's directory).
    pub db_url: Option<String>,
    /// Appended to the daemon's TOML file (sections such as `[limits]`, `[inbound]`).
    pub extra_config: String,
    /// Applied to every row before it is written.
    pub row_change: fn(&mut RawRow),
}

impl Default for SceneSetup {
    fn default() -> Self {
        SceneSetup {
            rows: ROWS,
            registrar: RegistrarConfig {
                bind: format!("{REGISTRAR_IP}:0").parse().expect("an address"),
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

impl SceneSetup {
    /// Every [`TCP_EVERY`]th row registers over TCP; the registrar keeps its history, so that
    /// the test can see over which transport each REGISTER came.
    pub fn with_tcp_rows() -> SceneSetup {
        let mut setup = SceneSetup::default();
        setup.registrar.tcp = true;
        setup.registrar.keep_history = true;
        setup.row_change = |row| {
            if row_index(&row.l_uuid) % TCP_EVERY == 0 {
                row.auth_proxy.push_str(";transport=tcp");
            }
        };
        setup
    }
}

/// `uuid000042` → 42.
fn row_index(l_uuid: &str) -> usize {
    l_uuid
        .strip_prefix("uuid")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not a demo row: {l_uuid}"))
}

/// The registrar account of row `i` (`user000042`).
pub fn user(i: usize) -> String {
    format!("user{i:06}")
}

/// The l_uuid of row `i` (`uuid000042`).
pub fn l_uuid(i: usize) -> String {
    format!("uuid{i:06}")
}

/// A running uacregd, its registrar and its database.
pub struct Scene {
    pub registrar: TestRegistrar,
    pub daemon: Uacregd,
    client: RpcClient,
    pub db_url: String,
    pub rows: usize,
    /// When the scene began to be set up (the case's wall time, near enough).
    started: Instant,
    /// Holds the database file and the daemon's configuration and log.
    _dir: common::TempDir,
}

impl Scene {
    /// Starts the registrar and uacregd and waits until every row is registered.
    pub async fn start(name: &str, setup: SceneSetup) -> Scene {
        let started = Instant::now();
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
        let (path, url, extra) = (dir.0.clone(), db_url.clone(), setup.extra_config);
        let daemon = tokio::task::spawn_blocking(move || {
            common::write_rows(&url, &rows);
            Uacregd::start(UACREGD, &path, &url, &extra)
        })
        .await
        .expect("set-up ran")
        .unwrap_or_else(|err| panic!("uacregd starts: {err}"));
        let client = RpcClient::new(&daemon.rpc_url()).expect("rpc client");
        let scene = Scene {
            registrar,
            daemon,
            client,
            db_url,
            rows: setup.rows,
            started,
            _dir: dir,
        };
        scene
            .wait_registered(scene.rows, Duration::from_secs(60))
            .await;
        scene
    }

    /// The daemon's SIP port (UDP and TCP).
    pub fn sip(&self) -> SocketAddr {
        self.daemon.sip
    }

    /// Calls a JSON-RPC method.
    pub async fn call(&self, method: &str, params: &[&str]) -> Result<Value, String> {
        let params: Vec<String> = params.iter().map(|p| p.to_string()).collect();
        match self.client.call(method, &params).await {
            Ok(value) => Ok(value),
            Err(uacreg::RpcError::Call(err)) => Err(format!(
                "{} {}: {}",
                err.code(),
                err.message(),
                err.data().map(|d| d.get().to_string()).unwrap_or_default()
            )),
            Err(err) => Err(err.to_string()),
        }
    }

    pub async fn status(&self) -> Value {
        self.call("uacreg.status", &[])
            .await
            .expect("uacreg.status answers")
    }

    /// The SIP side's counters now (`uacreg.status` → `sip`).
    pub async fn counters(&self) -> Counters {
        Counters(self.status().await["sip"].clone())
    }

    /// The counters once `done` says so, or when `limit` has passed (then as they are: the
    /// caller's assertion says what was missing).
    pub async fn counters_when(
        &self,
        limit: Duration,
        done: impl Fn(&Counters) -> bool,
    ) -> Counters {
        let deadline = Instant::now() + limit;
        loop {
            let now = self.counters().await;
            if done(&now) || Instant::now() >= deadline {
                return now;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Rows in state `registered`.
    pub async fn registered(&self) -> usize {
        match self.call("uacreg.status", &[]).await {
            Ok(status) => status["registrations"]["registered"].as_u64().unwrap_or(0) as usize,
            Err(_) => 0,
        }
    }

    /// Waits until `count` rows are registered; fails the test with the log's tail if not.
    pub async fn wait_registered(&self, count: usize, limit: Duration) {
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

    pub fn log_tail(&self, lines: usize) -> String {
        self.daemon.log_tail(lines)
    }

    fn rss_kib(&self) -> u64 {
        uacregd::rss_kib(self.daemon.pid()).unwrap_or(0)
    }

    /// Closes the registrar's side of every TCP connection (a registrar restart); every row
    /// registering over TCP must then get a 200 over TCP again, on a connection the daemon
    /// opens anew, within 20 s.
    pub async fn tcp_rows_register_again(&self) {
        let tcp_users: Vec<String> = (0..self.rows).step_by(TCP_EVERY).map(user).collect();
        let dropped = Instant::now();
        self.registrar.drop_connections();
        let deadline = dropped + Duration::from_secs(20);
        loop {
            let waiting = tcp_users
                .iter()
                .filter(|u| {
                    !self
                        .registrar
                        .requests_for(u)
                        .iter()
                        .any(|r| r.at > dropped && r.code == 200 && r.transport == "TCP")
                })
                .count();
            if waiting == 0 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{waiting} of {} rows registering over TCP did not register again",
                tcp_users.len()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Starts probing JSON-RPC and memory every quarter second until the watch is finished.
    pub fn watch(&self) -> Watch {
        let stop = Arc::new(AtomicBool::new(false));
        let client = RpcClient::new(&self.daemon.rpc_url()).expect("rpc client");
        let pid = self.daemon.pid();
        let flag = stop.clone();
        let start_rss = self.rss_kib();
        let started = Instant::now();
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
                if let Some(rss) = uacregd::rss_kib(pid) {
                    report.peak_rss_kib = report.peak_rss_kib.max(rss);
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            report.watched = started.elapsed();
            report
        });
        Watch { stop, task }
    }

    /// Ends `watch` and gives the common verdict, with ten seconds for the rows to settle;
    /// what the watcher saw.
    pub async fn verdict(&self, watch: Watch) -> WatchReport {
        let report = watch.finish().await;
        self.assert_unharmed(&report, Duration::from_secs(10)).await;
        report
    }

    /// The common verdict: alive, answering, bounded memory, no binding lapsed, every row
    /// registered again within `settle`.
    pub async fn assert_unharmed(&self, report: &WatchReport, settle: Duration) {
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
            "verdict: scene up {:.1?}, watched {:.1?}, {} probes, slowest {:?}, RSS {} → peak {} \
             KiB (+{growth}), least registered {:?}",
            self.started.elapsed(),
            report.watched,
            report.probes,
            report.slowest,
            report.start_rss_kib,
            report.peak_rss_kib,
            report.least_registered
        );
    }

    /// Runs `uacregctl` against the daemon; returns (exit code, stdout, stderr).
    pub fn uacregctl(&self, args: &[&str]) -> (i32, String, String) {
        let output = Command::new(env!("CARGO_BIN_EXE_uacregctl"))
            .arg("--rpc")
            .arg(self.daemon.rpc_url())
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
    pub fn stop(mut self) -> Option<std::process::ExitStatus> {
        self.daemon.stop(Duration::from_secs(10))
    }
}

/// What the watcher saw.
#[derive(Debug, Default)]
pub struct WatchReport {
    pub probes: u64,
    pub slowest: Duration,
    /// Probes not answered (in time, or at all).
    pub failures: Vec<String>,
    pub start_rss_kib: u64,
    pub peak_rss_kib: u64,
    pub least_registered: Option<u64>,
    /// How long the watch lasted.
    pub watched: Duration,
}

pub struct Watch {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<WatchReport>,
}

impl Watch {
    pub async fn finish(self) -> WatchReport {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("watcher ran")
    }
}

/// The SIP side's counters at one moment (`uacreg.status` → `sip`), named by their path:
/// `malformed_dropped`, `inbound.requests.options_answered`, `responses.403` …
pub struct Counters(pub Value);

impl Counters {
    /// The counter at `path`; fails the test if there is none (a misspelt name must not read
    /// as zero).
    pub fn get(&self, path: &str) -> u64 {
        path.split('.')
            .fold(&self.0, |value, key| &value[key])
            .as_u64()
            .unwrap_or_else(|| panic!("no counter {path} in {}", self.0))
    }

    /// How much the counter at `path` grew since `before`.
    pub fn since(&self, before: &Counters, path: &str) -> u64 {
        self.get(path) - before.get(path)
    }

    /// Fails the test unless the counter at `path` grew by exactly `expected` since `before`.
    pub fn assert_grew(&self, before: &Counters, path: &str, expected: u64) {
        let grew = self.since(before, path);
        assert_eq!(
            grew, expected,
            "{path} grew by {grew}, not {expected}: {}",
            self.0
        );
    }

    /// How much the counters at `paths` grew since `before`, together.
    pub fn sum_since(&self, before: &Counters, paths: &[&str]) -> u64 {
        paths.iter().map(|path| self.since(before, path)).sum()
    }

    /// Whether final responses with this code were taken as answers.
    pub fn has_response(&self, code: u16) -> bool {
        self.0["responses"].get(code.to_string()).is_some()
    }

    /// Every request, and every relay-marked response, ended in exactly one outcome.
    pub fn assert_accounted(&self) {
        let inbound = &self.0["inbound"];
        for (outcomes, received) in [
            ("requests", "requests_received"),
            ("relay_responses", "relay_responses_received"),
        ] {
            let total: u64 = inbound[outcomes]
                .as_object()
                .unwrap_or_else(|| panic!("no inbound.{outcomes} in {inbound}"))
                .values()
                .map(|count| count.as_u64().unwrap_or(0))
                .sum();
            assert_eq!(
                total,
                self.get(&format!("inbound.{received}")),
                "inbound.{outcomes} do not add up to inbound.{received}: {inbound}"
            );
        }
    }
}

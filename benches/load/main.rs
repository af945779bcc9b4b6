//! The load tool: registers N rows through a gateway against a registrar on loopback and
//! reports what it cost.
//!
//! ```text
//! cargo bench --bench load -- --rows 100000                      # uacregd vs the in-repo registrar
//! cargo bench --bench load -- --rows 50000 --peers kamailio --gateways uacregd,kamailio
//! ```
//!
//! For each gateway (uacregd, or Kamailio's own uac module) and each registrar (the in-repo
//! registrar in its fast mode, sipp, Kamailio's registrar) it writes the same N rows, starts
//! the gateway as a process of its own, and measures: seconds until every row is registered,
//! REGISTERs per row as the registrar saw them, timeouts and error answers, the gateway's
//! memory (empty, settled after registering, peak) and CPU seconds, `uac.reg_dump` latency at
//! N (and how late due timers ran meanwhile), and a reload with a share of the rows changed:
//! how long it took and how many REGISTERs it caused. Results are printed as a table and
//! appended to a CSV file.
//!
//! Traffic stays on 127.0.0.1, and every wait has a deadline.

mod kamailio;
mod procfs;
mod report;
mod rows;
mod sipp;
#[path = "../../tests/support/mod.rs"]
mod support;
mod uacregd;

use std::io;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};

use report::Outcome;
use rows::LoadRow;
use uacreg::testing::registrar::{RegistrarConfig, TestRegistrar};

#[derive(Parser, Debug)]
#[command(
    about = "Registers N rows through a gateway and reports rate, REGISTERs/row, memory, CPU, reg_dump and reload times"
)]
struct Args {
    /// Rows to register.
    #[arg(long, default_value_t = 10_000)]
    rows: usize,
    /// Registrars to run against (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "builtin")]
    peers: Vec<PeerKind>,
    /// Gateways to measure (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "uacregd")]
    gateways: Vec<GatewayKind>,
    /// Expires of every row, in seconds.
    #[arg(long, default_value_t = 3600)]
    expires: u32,
    /// Give up waiting for all rows to register after this many seconds.
    #[arg(long, default_value_t = 600)]
    timeout: u64,
    /// Share of the rows changed before the measured reload.
    #[arg(long, default_value_t = 0.01)]
    changed_share: f64,
    /// reg_dump calls to time (the median is reported).
    #[arg(long, default_value_t = 3)]
    dumps: usize,
    /// Wait until the gateway is refreshing (REGISTERs flowing again) before the reg_dumps, so
    /// the report shows whether dumping delays refreshes. Use with a short --expires.
    #[arg(long)]
    dump_while_refreshing: bool,
    /// Extra TOML appended to uacregd's configuration, e.g. "[pacing]\nrate = 10000".
    #[arg(long, default_value = "")]
    uacregd_config: String,
    /// CSV file the results are appended to.
    #[arg(long, default_value = "target/load/results.csv")]
    csv: PathBuf,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum PeerKind {
    /// The in-repo registrar (digest auth, no request history), in the tool's process.
    Builtin,
    /// sipp (`sip-tester`) running a digest-checking registrar scenario.
    Sipp,
    /// Kamailio 5.6's registrar (auth_db on SQLite, usrloc in memory, 4 UDP workers).
    Kamailio,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum GatewayKind {
    Uacregd,
    /// Kamailio 5.6's own uac module on an SQLite uacreg table (its default settings).
    Kamailio,
}

/// A registrar the rows register with.
enum Peer {
    Builtin(TestRegistrar),
    Sipp(sipp::SippRegistrar),
    Kamailio(kamailio::KamailioLoadRegistrar),
}

impl Peer {
    fn start(kind: PeerKind, rows: usize, runtime: &tokio::runtime::Runtime) -> io::Result<Peer> {
        match kind {
            PeerKind::Builtin => {
                let registrar = runtime.block_on(TestRegistrar::start(RegistrarConfig {
                    realm: rows::DOMAIN.into(),
                    users: rows::users(rows).into_iter().collect(),
                    keep_history: false,
                    ..RegistrarConfig::default()
                }))?;
                Ok(Peer::Builtin(registrar))
            }
            PeerKind::Sipp => Ok(Peer::Sipp(sipp::SippRegistrar::start(rows)?)),
            PeerKind::Kamailio => Ok(Peer::Kamailio(kamailio::KamailioLoadRegistrar::start(
                &rows::users(rows),
            )?)),
        }
    }

    fn addr(&self) -> std::net::SocketAddr {
        match self {
            Peer::Builtin(r) => r.local_addr(),
            Peer::Sipp(r) => r.addr(),
            Peer::Kamailio(r) => r.addr(),
        }
    }

    /// REGISTER requests received, retransmissions included.
    fn registers_seen(&self) -> io::Result<u64> {
        match self {
            Peer::Builtin(r) => Ok(r.stats().requests),
            Peer::Sipp(r) => r.registers_received(),
            Peer::Kamailio(r) => r.registers_received(),
        }
    }

    /// Bindings the registrar holds now (sipp keeps none: the 200 OKs it sent).
    fn bindings(&self) -> io::Result<u64> {
        match self {
            Peer::Builtin(r) => Ok(r.binding_count() as u64),
            Peer::Sipp(r) => r.registered(),
            Peer::Kamailio(r) => r.bindings(),
        }
    }

    /// Answers that refused a request (not counting digest challenges).
    fn error_answers(&self) -> io::Result<u64> {
        match self {
            Peer::Builtin(r) => Ok(r.stats().rejected + r.stats().malformed),
            Peer::Sipp(r) => r.errors(),
            Peer::Kamailio(r) => r.error_replies(),
        }
    }

    fn stop(self, runtime: &tokio::runtime::Runtime) {
        match self {
            Peer::Builtin(r) => runtime.block_on(r.stop()),
            Peer::Sipp(r) => drop(r),
            Peer::Kamailio(r) => drop(r),
        }
    }
}

/// The gateway under test.
enum Gateway {
    Uacregd {
        daemon: uacregd::Uacregd,
        db: PathBuf,
    },
    Kamailio(kamailio::KamailioUacGateway),
}

/// Gateway-side counters, where the gateway has them.
#[derive(Clone, Debug, Default)]
struct GatewayCounters {
    registered: Option<u64>,
    registers_sent: Option<u64>,
    retransmissions: Option<u64>,
    timeouts: Option<u64>,
    granted: Option<u64>,
    pacing_backoffs: Option<u64>,
    /// Timer lateness histogram: (count within each bound, bound in ms).
    lateness: Option<Vec<(f64, u64)>>,
}

impl Gateway {
    fn pids(&self) -> Vec<u32> {
        match self {
            Gateway::Uacregd { daemon, .. } => vec![daemon.pid()],
            Gateway::Kamailio(gw) => gw.pids(),
        }
    }

    fn counters(&self) -> io::Result<GatewayCounters> {
        match self {
            Gateway::Uacregd { daemon, .. } => {
                let m = daemon.metrics()?;
                let get = |k: &str| m.get(k).map(|v| *v as u64);
                let lateness = uacreg::LATENCY_BOUNDS_MS
                    .iter()
                    .map(|bound| {
                        let le = *bound as f64 / 1000.0;
                        let key = format!("uacreg_timer_lateness_seconds_bucket{{le=\"{le}\"}}");
                        (m.get(&key).copied().unwrap_or(0.0), *bound)
                    })
                    .chain(std::iter::once((
                        m.get("uacreg_timer_lateness_seconds_bucket{le=\"+Inf\"}")
                            .copied()
                            .unwrap_or(0.0),
                        u64::MAX,
                    )))
                    .collect();
                Ok(GatewayCounters {
                    registered: get("uacreg_registrations{state=\"registered\"}"),
                    registers_sent: get("uacreg_registers_sent_total"),
                    retransmissions: get("uacreg_retransmissions_total"),
                    timeouts: get("uacreg_transaction_timeouts_total"),
                    granted: get("uacreg_registrations_granted_total"),
                    pacing_backoffs: get("uacreg_pacing_backoffs_total"),
                    lateness: Some(lateness),
                })
            }
            // Kamailio's uac module counts nothing cheaper than a full dump; the registrar's
            // side is what the run watches.
            Gateway::Kamailio(_) => Ok(GatewayCounters::default()),
        }
    }

    /// One `uac.reg_dump`: time to the whole answer, and how many records it held.
    fn dump(&self) -> io::Result<(Duration, usize)> {
        match self {
            Gateway::Uacregd { daemon, .. } => {
                let (took, body) = daemon.rpc("uac.reg_dump")?;
                let value: serde_json::Value = serde_json::from_slice(&body)?;
                let records = value["result"]
                    .as_array()
                    .ok_or_else(|| io::Error::other(format!("reg_dump answer: {value:.200}")))?
                    .len();
                Ok((took, records))
            }
            Gateway::Kamailio(gw) => gw.reg_dump(),
        }
    }

    /// Changes the rows at `indices` (their expires) in the gateway's table.
    fn change_rows(&self, rows: &[LoadRow], indices: &[usize]) -> io::Result<()> {
        match self {
            Gateway::Uacregd { db, .. } => {
                let changed: Vec<LoadRow> = indices
                    .iter()
                    .map(|&i| LoadRow {
                        expires: rows[i].expires + 60,
                        ..rows[i].clone()
                    })
                    .collect();
                uacregd::update_rows(db, &changed)
            }
            Gateway::Kamailio(gw) => gw.change_rows(indices),
        }
    }

    /// `uac.reg_reload`: time to the answer.
    fn reload(&self) -> io::Result<Duration> {
        match self {
            Gateway::Uacregd { daemon, .. } => {
                let (took, body) = daemon.rpc("uac.reg_reload")?;
                let value: serde_json::Value = serde_json::from_slice(&body)?;
                if value.get("error").is_some() {
                    return Err(io::Error::other(format!("reg_reload: {value}")));
                }
                Ok(took)
            }
            Gateway::Kamailio(gw) => gw.reload(),
        }
    }

    fn log_tail(&self) -> String {
        match self {
            Gateway::Uacregd { daemon, .. } => daemon.log_tail(),
            Gateway::Kamailio(gw) => support::process::tail(&gw.log(), 20),
        }
    }

    fn stop(self) {
        match self {
            Gateway::Uacregd { daemon, .. } => daemon.stop(),
            Gateway::Kamailio(gw) => drop(gw),
        }
    }
}

fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    if !args.bench {
        // Run by `cargo test --all-targets` (no --bench): a small end-to-end run against the
        // in-repo registrar that checks the tool still works, not a measurement.
        args.rows = args.rows.min(300);
        args.dumps = 1;
        args.peers = vec![PeerKind::Builtin];
        args.gateways = vec![GatewayKind::Uacregd];
        args.csv = PathBuf::from("target/load/smoke.csv");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let mut outcomes = Vec::new();
    for &gateway in &args.gateways {
        for &peer in &args.peers {
            eprintln!("== {gateway:?} → {peer:?}, {} rows", args.rows);
            let outcome = run(&args, gateway, peer, &runtime)?;
            report::append_csv(&args.csv, &outcome)?;
            outcomes.push(outcome);
        }
    }
    report::print_table(&outcomes);
    eprintln!("appended to {}", args.csv.display());
    // The exit status is uacregd's: Kamailio's uac module falling short is a result.
    let short = outcomes
        .iter()
        .filter(|o| o.gateway == "uacregd" && o.seconds_to_registered.is_none())
        .count();
    if short > 0 {
        anyhow::bail!("{short} uacregd run(s) did not get every row registered");
    }
    Ok(())
}

/// RSS of uacregd with an empty table, settled: the base the per-row figure is measured from.
fn empty_uacregd_kib(dir: &std::path::Path, extra_config: &str) -> io::Result<u64> {
    let db = dir.join("empty.db");
    uacregd::write_rows(&db, &[])?;
    let daemon = uacregd::Uacregd::start(dir, &db, extra_config)?;
    std::thread::sleep(Duration::from_secs(2));
    let kib = procfs::rss_kib(daemon.pid()).unwrap_or(0);
    daemon.stop();
    Ok(kib)
}

fn run(
    args: &Args,
    gateway_kind: GatewayKind,
    peer_kind: PeerKind,
    runtime: &tokio::runtime::Runtime,
) -> anyhow::Result<Outcome> {
    let dir = support::process::TempDir::new("uacreg-load")?;
    let n = args.rows;
    let mut outcome = Outcome::new(&format!("{gateway_kind:?}"), &format!("{peer_kind:?}"), n);
    outcome.expires = args.expires;

    outcome.empty_kib = Some(match gateway_kind {
        GatewayKind::Uacregd => empty_uacregd_kib(dir.path(), &args.uacregd_config)?,
        GatewayKind::Kamailio => {
            let empty = kamailio::KamailioUacGateway::start(&[])?;
            std::thread::sleep(Duration::from_secs(2));
            procfs::memory_kib(&empty.pids())
        }
    });

    let peer = Peer::start(peer_kind, n, runtime)?;
    let rows: Vec<LoadRow> = (0..n)
        .map(|i| LoadRow::new(i, peer.addr(), args.expires))
        .collect();
    let seen_before = peer.registers_seen()?;

    // The clock starts when the gateway process is started: loading the table is part of the
    // job. (Kamailio's start also writes its SQLite table, a fraction of a second.)
    let (gateway, started) = match gateway_kind {
        GatewayKind::Uacregd => {
            let db = dir.path().join("uacreg.db");
            uacregd::write_rows(&db, &rows)?;
            let started = Instant::now();
            let daemon = uacregd::Uacregd::start(dir.path(), &db, &args.uacregd_config)?;
            eprintln!(
                "   uacregd answering after {:.2} s",
                started.elapsed().as_secs_f64()
            );
            (Gateway::Uacregd { daemon, db }, started)
        }
        GatewayKind::Kamailio => {
            let started = Instant::now();
            let gateway = kamailio::KamailioUacGateway::start(&rows)?;
            (Gateway::Kamailio(gateway), started)
        }
    };
    let pids = gateway.pids();
    let sampler = {
        let pids = pids.clone();
        procfs::PeakSampler::start(move || pids.clone())
    };

    // Phase 1: until every row is registered, as both sides see it.
    let deadline = started + Duration::from_secs(args.timeout);
    let mut last_report = Instant::now();
    let all_registered = loop {
        let bindings = peer.bindings()?;
        let counters = gateway.counters()?;
        let gateway_done = counters.registered.is_none_or(|r| r >= n as u64);
        if bindings >= n as u64 && gateway_done {
            break Some(started.elapsed());
        }
        if Instant::now() > deadline {
            eprintln!("   timed out with {bindings} bindings at the registrar");
            break None;
        }
        if last_report.elapsed() > Duration::from_secs(5) {
            eprintln!(
                "   {:>5.1} s: registrar holds {bindings}, gateway says {:?}",
                started.elapsed().as_secs_f64(),
                counters.registered
            );
            last_report = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    outcome.cpu_seconds = Some(procfs::cpu_seconds(&pids));
    outcome.seconds_to_registered = all_registered.map(|d| d.as_secs_f64());
    outcome.registered = peer.bindings()?;
    let seen = peer.registers_seen()? - seen_before;
    outcome.registers_seen = Some(seen);
    let counters = gateway.counters()?;
    outcome.registers_sent = counters.registers_sent;
    outcome.retransmissions = counters.retransmissions;
    outcome.timeouts = counters.timeouts;
    outcome.pacing_backoffs = counters.pacing_backoffs;
    outcome.error_answers = Some(peer.error_answers()?);
    eprintln!(
        "   registered {} in {:?}; registrar saw {seen} REGISTERs",
        outcome.registered, outcome.seconds_to_registered
    );
    if all_registered.is_none() {
        eprintln!("{}", gateway.log_tail());
    }

    // Phase 2: settle. Finished UDP transactions linger for timer K (5 s).
    std::thread::sleep(Duration::from_secs(6));
    outcome.settled_kib = Some(procfs::memory_kib(&pids));

    // Phase 3: reg_dump at N, and how late the gateway's timers ran while it answered.
    if args.dump_while_refreshing {
        let sent = gateway.counters()?.registers_sent;
        let deadline = Instant::now() + Duration::from_secs(u64::from(args.expires) * 2);
        while Instant::now() < deadline
            && gateway.counters()?.registers_sent <= sent.map(|s| s + 100)
        {
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!("   refreshes are flowing; dumping");
    }
    let lateness_before = gateway.counters()?.lateness;
    let mut dumps = Vec::new();
    // Kamailio's reg_dump grows with the square of the rows (53 s at 50,000): time one.
    let dumps_wanted = match gateway_kind {
        GatewayKind::Uacregd => args.dumps,
        GatewayKind::Kamailio => args.dumps.min(1),
    };
    for _ in 0..dumps_wanted {
        let (took, records) = gateway.dump()?;
        outcome.dump_records = Some(records);
        dumps.push(took);
    }
    dumps.sort();
    outcome.dump_ms = dumps.get(dumps.len() / 2).map(|d| d.as_secs_f64() * 1000.0);
    if let (Some(before), Some(after)) = (lateness_before, gateway.counters()?.lateness) {
        outcome.dump_timer_lateness = Some(report::lateness_during(&before, &after));
    }

    // Phase 4: change a share of the rows and reload (not while refreshes flow: the registrar
    // would never be quiet, and their REGISTERs would count as the reload's).
    if !args.dump_while_refreshing {
        measure_reload(args, &gateway, &peer, &rows, &mut outcome)?;
    }

    outcome.peak_kib = Some(
        match gateway_kind {
            GatewayKind::Uacregd => procfs::peak_rss_kib(pids[0]).unwrap_or(0),
            GatewayKind::Kamailio => 0,
        }
        .max(sampler.peak_kib()),
    );
    outcome.cpu_seconds_total = Some(procfs::cpu_seconds(&pids));
    drop(sampler);
    gateway.stop();
    peer.stop(runtime);
    Ok(outcome)
}

/// Changes `--changed-share` of the rows, reloads, and waits until the changed rows are registered
/// again and the registrar has been quiet for 2 s.
fn measure_reload(
    args: &Args,
    gateway: &Gateway,
    peer: &Peer,
    rows: &[LoadRow],
    outcome: &mut Outcome,
) -> anyhow::Result<()> {
    let n = rows.len();
    let changed_count = ((n as f64 * args.changed_share).round() as usize).clamp(1, n.max(1));
    let step = (n / changed_count).max(1);
    let changed: Vec<usize> = (0..n).step_by(step).take(changed_count).collect();
    gateway.change_rows(rows, &changed)?;
    let before = gateway.counters()?;
    let seen_before = peer.registers_seen()?;
    let reload_started = Instant::now();
    outcome.reload_ms = Some(gateway.reload()?.as_secs_f64() * 1000.0);
    outcome.reload_changed = Some(changed.len());
    // Until the changed rows are registered again and the registrar has been quiet for 2 s.
    // Kamailio's uac module sends nothing until its next timer tick (up to 90 s) after a reload.
    let deadline = Instant::now() + Duration::from_secs(240);
    let mut last_seen = seen_before;
    let mut last_change = Instant::now();
    while Instant::now() < deadline {
        let seen = peer.registers_seen()?;
        if seen != last_seen {
            last_seen = seen;
            last_change = Instant::now();
        }
        let granted_enough = match (before.granted, gateway.counters()?.granted) {
            (Some(b), Some(a)) => a - b >= changed.len() as u64,
            _ => seen - seen_before >= changed.len() as u64,
        };
        if granted_enough && last_change.elapsed() > Duration::from_secs(2) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    outcome.reload_seconds = Some((last_change - reload_started).as_secs_f64());
    outcome.reload_registers_seen = Some(last_seen - seen_before);

    Ok(())
}

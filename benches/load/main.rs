//! The load tool: registers N rows through a gateway against a registrar on loopback and
//! reports what it cost.
//!
//! ```text
//! cargo bench --bench load -- --rows 100000                      # uacregd vs the in-repo registrar
//! cargo bench --bench load -- --rows 50000 --peers kamailio --gateways uacregd,kamailio
//! cargo bench --bench load -- --rows 1000000 --store postgres --registrar-sockets 4 --registrar-threads 2
//! cargo bench --bench load -- --rows 20000 --expires 60 --soak-minutes 3   # a soak (soak.rs)
//! ```
//!
//! For each gateway (uacregd, or Kamailio's own uac module) and each registrar (the in-repo
//! registrar in its fast mode, on one or several sockets; sipp; Kamailio's registrar) it writes
//! the same N rows (uacregd's into SQLite or a PostgreSQL server started for the run), starts
//! the gateway as a process of its own, and measures: how long the rows took to write, to load
//! and to register, REGISTERs per row as the registrar saw them, timeouts and error answers,
//! the gateway's memory (empty, settled after registering, peak) and CPU seconds,
//! `uac.reg_dump` at N (its time, the RSS it takes, how late due timers ran meanwhile), and a
//! reload with a share of the rows changed: how long it took and how many REGISTERs it caused.
//! Results are printed as a table and appended to a CSV file. With `--soak-minutes` the dumps
//! and the reload give way to a soak of that length (see `soak.rs`), whose verdict is the exit
//! status.
//!
//! Traffic stays on 127.0.0.1, and every wait has a deadline.

mod dump;
mod dump_records;
mod gateway;
mod http;
mod kamailio;
mod peer;
mod procfs;
mod report;
mod rows;
mod sipp;
mod soak;
#[path = "../../tests/support/mod.rs"]
mod support;
mod table;
mod uacregd;

use std::io;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};

use gateway::Gateway;
use peer::Peer;
use report::Outcome;
use rows::RowSet;
use table::{StoreKind, Table};

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
    /// Extra TOML appended to uacregd's configuration, e.g. "[pacing]\nrate = 10000" (a
    /// literal `\n` is a line break).
    #[arg(long, default_value = "")]
    uacregd_config: String,
    /// Where uacregd's rows are: an SQLite file, or a PostgreSQL server started for the run.
    #[arg(long, value_enum, default_value = "sqlite")]
    store: StoreKind,
    /// Sockets of the in-repo registrar: row i registers through socket i % K.
    #[arg(long, default_value_t = 1)]
    registrar_sockets: usize,
    /// Threads of the tool's runtime, which runs the in-repo registrar.
    #[arg(long, default_value_t = 1)]
    registrar_threads: usize,
    /// Once every row is registered, soak this many minutes (0: no soak; see soak.rs).
    #[arg(long, default_value_t = 0)]
    soak_minutes: u64,
    /// Soak: change a different --changed-share of the rows and reload every this many seconds.
    #[arg(long, default_value_t = 300)]
    reload_every: u64,
    /// Soak: time a reg_dump (and the RSS growth it causes) every this many seconds.
    #[arg(long, default_value_t = 600)]
    dump_every: u64,
    /// Soak: take a sample every this many seconds.
    #[arg(long, default_value_t = 60)]
    sample_every: u64,
    /// Soak: fail when RSS grows more than this (percent) after the first grant period.
    #[arg(long, default_value_t = 1.0)]
    max_growth_pct: f64,
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

fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    args.uacregd_config = args.uacregd_config.replace("\\n", "\n");
    if !args.bench {
        // Run by `cargo test --all-targets` (no --bench): a small end-to-end run against the
        // in-repo registrar that checks the tool still works, not a measurement. Two registrar
        // sockets, so that spreading the rows is exercised too.
        args.rows = args.rows.min(300);
        args.dumps = 1;
        args.peers = vec![PeerKind::Builtin];
        args.gateways = vec![GatewayKind::Uacregd];
        args.registrar_sockets = 2;
        args.soak_minutes = 0;
        args.csv = PathBuf::from("target/load/smoke.csv");
    }
    check(&args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.registrar_threads.max(1))
        .enable_all()
        .build()?;
    let mut outcomes = Vec::new();
    let mut soak_failures = Vec::new();
    for &gateway in &args.gateways {
        for &peer in &args.peers {
            eprintln!("== {gateway:?} → {peer:?}, {} rows", args.rows);
            let (outcome, soak) = run(&args, gateway, peer, &runtime)?;
            report::append_csv(&args.csv, &outcome)?;
            outcomes.push(outcome);
            if let Some(soak) = soak {
                soak.print();
                soak_failures.extend(soak.failures());
            }
        }
    }
    report::print_table(&outcomes);
    eprintln!("appended to {}", args.csv.display());
    if args.soak_minutes > 0 {
        eprintln!("soak samples appended to {}", soak_csv(&args).display());
    }
    // The exit status is uacregd's: Kamailio's uac module falling short is a result.
    let short = outcomes
        .iter()
        .filter(|o| o.gateway == "uacregd" && o.seconds_to_registered.is_none())
        .count();
    if short > 0 {
        anyhow::bail!("{short} uacregd run(s) did not get every row registered");
    }
    if !soak_failures.is_empty() {
        anyhow::bail!("the soak failed: {}", soak_failures.join("; "));
    }
    Ok(())
}

/// Refuses combinations that cannot measure what they claim.
fn check(args: &Args) -> anyhow::Result<()> {
    if args.registrar_sockets == 0 {
        anyhow::bail!("--registrar-sockets must be at least 1");
    }
    if args.soak_minutes > 0 {
        if args.gateways != [GatewayKind::Uacregd] {
            anyhow::bail!("--soak-minutes soaks uacregd only (--gateways uacregd)");
        }
        let (soak, expires) = (args.soak_minutes * 60, u64::from(args.expires));
        if soak < expires + args.sample_every {
            anyhow::bail!(
                "a {soak} s soak cannot show growth after the first grant period ({expires} s): \
                 it needs at least one more sample ({} s) after it",
                args.sample_every
            );
        }
        if args.reload_every == 0 || args.dump_every == 0 || args.sample_every == 0 {
            anyhow::bail!("--reload-every, --dump-every and --sample-every must be at least 1");
        }
        if args.reload_every > expires || args.dump_every > expires {
            eprintln!(
                "note: the first reload or dump comes after the first grant period: the memory \
                 it keeps will count as growth"
            );
        }
    }
    Ok(())
}

/// The soak's samples go next to the results.
fn soak_csv(args: &Args) -> PathBuf {
    args.csv.with_file_name("soak.csv")
}

/// RSS of uacregd with an empty table, settled: the base the per-row figure is measured from.
fn empty_uacregd_kib(dir: &std::path::Path, table: &Table, extra_config: &str) -> io::Result<u64> {
    table.replace(None)?;
    let daemon = uacregd::Uacregd::start(dir, &table.url(), extra_config)?;
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
) -> anyhow::Result<(Outcome, Option<soak::SoakSummary>)> {
    let dir = support::process::TempDir::new("uacreg-load")?;
    let n = args.rows;
    let mut outcome = Outcome::new(&format!("{gateway_kind:?}"), &format!("{peer_kind:?}"), n);
    outcome.expires = args.expires;
    outcome.registrar_sockets = args.registrar_sockets;

    let table = match gateway_kind {
        GatewayKind::Uacregd => {
            outcome.store = format!("{:?}", args.store).to_lowercase();
            Some(Table::create(args.store, dir.path())?)
        }
        GatewayKind::Kamailio => None,
    };
    outcome.empty_kib = Some(match &table {
        Some(table) => empty_uacregd_kib(dir.path(), table, &args.uacregd_config)?,
        None => {
            let empty = kamailio::KamailioUacGateway::start(&[])?;
            std::thread::sleep(Duration::from_secs(2));
            procfs::memory_kib(&empty.pids())
        }
    });

    let peer = Peer::start(peer_kind, n, args.registrar_sockets, runtime)?;
    let rows = RowSet::new(n, peer.addrs(), args.expires);
    let seen_before = peer.registers_seen()?;

    // The clock starts when the gateway process is started: loading the table is part of the
    // job. (Kamailio's start also writes its SQLite table, a fraction of a second.)
    let (gateway, started) = match table {
        Some(table) => {
            let took = table.replace(Some(&rows))?;
            eprintln!(
                "   {n} rows written to {:?} in {:.2} s ({:.0} rows/s)",
                table.kind(),
                took.as_secs_f64(),
                n as f64 / took.as_secs_f64().max(1e-9)
            );
            outcome.table_write_seconds = Some(took.as_secs_f64());
            let started = Instant::now();
            let daemon = uacregd::Uacregd::start(dir.path(), &table.url(), &args.uacregd_config)?;
            outcome.seconds_to_answering = Some(started.elapsed().as_secs_f64());
            outcome.cpu_seconds_at_answering = Some(procfs::cpu_seconds(&[daemon.pid()]));
            outcome.seconds_to_loaded = daemon.seconds_to_loaded();
            eprintln!(
                "   uacregd answering after {:.2} s (rows loaded after {})",
                started.elapsed().as_secs_f64(),
                outcome
                    .seconds_to_loaded
                    .map_or("?".into(), |s| format!("{s:.2} s"))
            );
            (Gateway::Uacregd { daemon, table }, started)
        }
        None => {
            let started = Instant::now();
            let gateway = kamailio::KamailioUacGateway::start(&rows.rows(0..n))?;
            (Gateway::Kamailio(gateway), started)
        }
    };
    let pids = gateway.pids();
    if outcome.cpu_seconds_at_answering.is_some() {
        // Read after the CPU figure: rows registered in between count as before, which errs
        // towards more CPU per row.
        outcome.registered_at_answering = gateway.counters()?.registered;
    }
    let sampler = {
        let pids = pids.clone();
        procfs::PeakSampler::start(Duration::from_millis(100), move || pids.clone())
    };

    // Phase 1: until every row is registered, as both sides see it. The gateway's counter is
    // cheap to read; the in-repo registrar counts its bindings by walking them under its lock,
    // so it is asked only once the gateway is done, and for the progress line.
    let deadline = started + Duration::from_secs(args.timeout);
    let mut last_report = Instant::now();
    let mut pace = PollPace::default();
    let all_registered = loop {
        let counters = gateway.counters()?;
        let gateway_done = counters.registered.is_none_or(|r| r >= n as u64);
        let report_due = last_report.elapsed() > Duration::from_secs(5);
        let bindings = if gateway_done || report_due {
            Some(peer.bindings()?)
        } else {
            None
        };
        if gateway_done && bindings.is_some_and(|b| b >= n as u64) {
            break Some(started.elapsed());
        }
        if Instant::now() > deadline {
            eprintln!("   timed out with {bindings:?} bindings at the registrar");
            break None;
        }
        if report_due {
            eprintln!(
                "   {:>5.1} s: registrar holds {}, gateway says {:?}",
                started.elapsed().as_secs_f64(),
                bindings.unwrap_or(0),
                counters.registered
            );
            last_report = Instant::now();
        }
        std::thread::sleep(pace.next(n as u64, counters.registered));
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

    let soak = if args.soak_minutes > 0 && all_registered.is_some() {
        let plan = soak::SoakPlan {
            duration: Duration::from_secs(args.soak_minutes * 60),
            reload_every: Duration::from_secs(args.reload_every),
            dump_every: Duration::from_secs(args.dump_every),
            sample_every: Duration::from_secs(args.sample_every),
            max_growth_pct: args.max_growth_pct,
            expires: Duration::from_secs(u64::from(args.expires)),
            changed_share: args.changed_share,
        };
        let summary = soak::run(&plan, &gateway, &peer, &rows, &soak_csv(args))?;
        outcome.settled_kib = summary.samples.last().map(|s| s.rss_kib);
        Some(summary)
    } else {
        measure_settled_dumps_and_reload(args, gateway_kind, &gateway, &peer, &rows, &mut outcome)?;
        None
    };

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
    Ok((outcome, soak))
}

/// Phases 2 to 4 of a run without a soak: settle, reg_dumps, a reload.
fn measure_settled_dumps_and_reload(
    args: &Args,
    gateway_kind: GatewayKind,
    gateway: &Gateway,
    peer: &Peer,
    rows: &RowSet,
    outcome: &mut Outcome,
) -> anyhow::Result<()> {
    // Phase 2: settle. Finished UDP transactions linger for timer K (5 s).
    std::thread::sleep(Duration::from_secs(6));
    outcome.settled_kib = Some(procfs::memory_kib(&gateway.pids()));

    // Phase 3: reg_dump at N: its time, the memory it takes, how late timers ran meanwhile.
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
    // Kamailio's reg_dump grows with the square of the rows (53 s at 50,000): time one.
    let dumps_wanted = match gateway_kind {
        GatewayKind::Uacregd => args.dumps,
        GatewayKind::Kamailio => args.dumps.min(1),
    };
    let mut measures = Vec::new();
    for _ in 0..dumps_wanted {
        let measure = dump::measure(gateway)?;
        eprintln!(
            "   reg_dump: {} records in {:.0} ms, RSS +{:.1} MiB",
            measure.records,
            measure.took.as_secs_f64() * 1000.0,
            measure.rss_growth_kib as f64 / 1024.0
        );
        measures.push(measure);
    }
    let mut times: Vec<Duration> = measures.iter().map(|m| m.took).collect();
    times.sort();
    outcome.dump_ms = times.get(times.len() / 2).map(|d| d.as_secs_f64() * 1000.0);
    outcome.dump_records = measures.last().map(|m| m.records);
    outcome.dump_rss_growth_kib = measures.iter().map(|m| m.rss_growth_kib).max();
    outcome.dump_late_rounds = measures.iter().map(|m| m.late_rounds).sum();
    outcome.dump_timer_lateness = measures.iter().filter_map(|m| m.lateness).reduce(|a, b| {
        // The worst bound (None: beyond the last) over all dumps, and all their rounds.
        let bound = match (a.0, b.0) {
            (Some(x), Some(y)) => Some(x.max(y)),
            _ if a.1 == 0 => b.0,
            _ if b.1 == 0 => a.0,
            _ => None,
        };
        (bound, a.1 + b.1)
    });

    // Phase 4: change a share of the rows and reload (not while refreshes flow: the registrar
    // would never be quiet, and their REGISTERs would count as the reload's).
    if !args.dump_while_refreshing {
        measure_reload(args, gateway, peer, rows, outcome)?;
    }
    Ok(())
}

/// Changes `--changed-share` of the rows, reloads, and waits until the changed rows are registered
/// again and the registrar has been quiet for 2 s.
fn measure_reload(
    args: &Args,
    gateway: &Gateway,
    peer: &Peer,
    rows: &RowSet,
    outcome: &mut Outcome,
) -> anyhow::Result<()> {
    let (changed, earlier) = rows::changed_by_round(rows.len(), args.changed_share, 0);
    gateway.change_rows(rows, &changed, earlier)?;
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

/// How long to wait before asking the gateway again while rows register. Each question costs
/// the gateway a metrics page (an HTTP connection and a snapshot from its driver), and its CPU
/// is what is measured: asked every 50 ms, uacregd spent a measurable share of a start-up
/// answering, where a Prometheus server asks every 15 s. So the pause is half the time the
/// rows still missing should take at the rate seen so far, between 20 ms (the end is still
/// seen within that) and 500 ms.
#[derive(Default)]
struct PollPace {
    last: Option<(Instant, u64)>,
}

impl PollPace {
    fn next(&mut self, rows: u64, registered: Option<u64>) -> Duration {
        const SHORTEST: Duration = Duration::from_millis(20);
        const LONGEST: Duration = Duration::from_millis(500);
        let Some(registered) = registered else {
            // A gateway that counts nothing (Kamailio's uac): the registrar's count is what is
            // watched, at the pace it always was.
            return Duration::from_millis(50);
        };
        let now = Instant::now();
        let pause = match self.last.replace((now, registered)) {
            Some((then, before)) if registered > before => {
                let per_second = (registered - before) as f64 / (now - then).as_secs_f64();
                let missing = rows.saturating_sub(registered) as f64;
                Duration::from_secs_f64((missing / per_second / 2.0).min(LONGEST.as_secs_f64()))
            }
            _ => Duration::from_millis(100),
        };
        pause.clamp(SHORTEST, LONGEST)
    }
}

//! The sans-I/O core's CPU per registration: `cargo bench --bench engine -- --rows 100000`.
//!
//! The load tool measures the whole daemon over real sockets, and there a run's CPU also
//! depends on how its wake-ups happen to fall: runs of one binary differ by ±10 %, more than
//! most changes to the code are worth. This bench drives the [`Engine`] alone, the way the
//! driver does (`handle_timeout`, `poll_transmit`, `handle_datagram`), against a registrar that
//! answers on the wire at once: a 401 with a fresh nonce, then, for an answer whose digest it
//! has checked, a 200. Only the engine's calls are timed, so the figure is what the core costs
//! per registered row (encoding, parsing, digest, transactions, timers, pacing), repeatable to
//! a few per cent; the rest of the load tool's figure is the I/O shell and the kernel.
//!
//! It exits non-zero unless every row registers with exactly two REGISTERs.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use clap::Parser;
use rand::SeedableRng;
use rand::rngs::StdRng;
use uacreg::engine::{Engine, EngineConfig, PacingConfig, Timers, TransmitRoute};
use uacreg::registration::{CoreConfig, Destination, Record, RecordFields, Secret};
use uacreg::sip::digest::SecretInput;
use uacreg::sip::{Authorization, Request};

/// The daemon's allocator, set up as `uacregd` sets it up (freed pages returned after 10 ms, no
/// transparent huge pages): allocation is a good part of what is measured.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` (see `tune_allocator` in `src/bin/uacregd.rs`).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

#[derive(Parser)]
#[command(about = "CPU of the sans-I/O engine per registered row")]
struct Args {
    /// Rows registered per run.
    #[arg(long, default_value_t = 100_000)]
    rows: usize,
    /// Runs, each with a new engine; the median of all but the first (a warm-up) is
    /// reported.
    #[arg(long, default_value_t = 9)]
    runs: usize,
    /// Passed by `cargo bench`; without it, a small smoke run.
    #[arg(long, hide = true)]
    bench: bool,
}

const DOMAIN: &str = "registrar.bench.test";
const REGISTRAR: &str = "127.0.0.1:5070";

fn record(i: usize) -> Record {
    let user = format!("user{i:07}");
    RecordFields {
        id: i as i64 + 1,
        l_uuid: format!("bench{i:07}"),
        l_username: format!("local{i:07}"),
        l_domain: "gw.bench.test".into(),
        r_username: user.clone(),
        r_domain: DOMAIN.into(),
        realm: DOMAIN.into(),
        auth_username: user,
        auth_password: Secret::new(format!("pw{i:07}")),
        auth_ha1: Secret::default(),
        auth_proxy: format!("sip:{REGISTRAR}"),
        expires: 3600,
        flags: 0,
        reg_delay: 0,
        contact_addr: "127.0.0.1:5080".into(),
        socket: String::new(),
        contact_user: String::new(),
        destination: Destination::udp("127.0.0.1", 5070),
        contact_host_port: "127.0.0.1:5080".into(),
    }
    .try_into()
    .expect("a bench row is a few hundred bytes")
}

/// Challenges every REGISTER without credentials and grants every one whose digest is right.
#[derive(Default)]
struct Registrar {
    nonces: u64,
    registers: u64,
    rejected: u64,
}

impl Registrar {
    fn answer(&mut self, bytes: &[u8]) -> Vec<u8> {
        self.registers += 1;
        let request = Request::parse(bytes).expect("the engine sends REGISTERs we can read");
        let (code, extra) = match &request.authorization {
            None => {
                self.nonces += 1;
                (
                    "401 Unauthorized",
                    format!(
                        "WWW-Authenticate: Digest realm=\"{DOMAIN}\", nonce=\"{:016x}\", \
                         qop=\"auth\", algorithm=MD5\r\n",
                        self.nonces
                    ),
                )
            }
            Some(value) => {
                let user = request.to_uri.user.as_deref().unwrap_or("");
                let password = format!("pw{}", user.trim_start_matches("user"));
                let good = Authorization::parse(value)
                    .is_ok_and(|a| a.verify(SecretInput::Password(&password), "REGISTER", b""));
                if !good {
                    self.rejected += 1;
                    ("403 Forbidden", String::new())
                } else {
                    let contact = &request.contacts[0].uri_text;
                    ("200 OK", format!("Contact: <{contact}>;expires=3600\r\n"))
                }
            }
        };
        let mut out = format!("SIP/2.0 {code}\r\n");
        for via in &request.vias {
            out.push_str(&format!("Via: {via}\r\n"));
        }
        out.push_str(&format!(
            "From: {}\r\nTo: {};tag=reg\r\nCall-ID: {}\r\nCSeq: {} REGISTER\r\n{extra}\
             Content-Length: 0\r\n\r\n",
            request.from, request.to, request.call_id, request.cseq
        ));
        out.into_bytes()
    }
}

struct Run {
    registered: usize,
    registers: u64,
    rejected: u64,
    engine: Duration,
    registrar: Duration,
    load: Duration,
}

fn run(rows: usize) -> Run {
    let registrar_addr: SocketAddr = REGISTRAR.parse().expect("an address");
    let records: Vec<Record> = (0..rows).map(record).collect();
    let mut now = Instant::now();
    let mut engine = Engine::new(
        EngineConfig {
            core: CoreConfig::default(),
            // Paced as the load tool runs the daemon: transactions live and end (timer K) as
            // they do there, so the tables hold what they hold there. The clock is virtual;
            // the pacer's waits cost nothing here.
            pacing: PacingConfig {
                rate: 10_000,
                max_in_flight: 500,
                ..PacingConfig::default()
            },
            timers: Timers::default(),
            via_sent_by: "127.0.0.1:5080".into(),
            keepalive: None,
            outbound: false,
            extra_udp: Vec::new(),
            cluster_shards: None,
        },
        now,
        StdRng::seed_from_u64(7),
    );
    let started = Instant::now();
    engine.reload(now, records);
    let load = started.elapsed();

    let mut registrar = Registrar::default();
    let (mut in_engine, mut in_registrar) = (Duration::ZERO, Duration::ZERO);
    let mut sent = Vec::new();
    let mut answers = VecDeque::new();
    let registered = |engine: &Engine| engine.status_counts().get("registered").copied();
    // Bounded: at 10,000 REGISTERs a second and a round per 5 ms of tokens, a start-up takes
    // a round per 25 rows.
    for _ in 0..(rows + 10_000) {
        let started = Instant::now();
        engine.handle_timeout(now);
        in_engine += started.elapsed();
        loop {
            let started = Instant::now();
            sent.clear();
            while let Some(transmit) = engine.poll_transmit() {
                sent.push(transmit);
            }
            in_engine += started.elapsed();
            if sent.is_empty() {
                break;
            }
            let started = Instant::now();
            for transmit in &sent {
                assert!(matches!(transmit.route, TransmitRoute::Udp(_)), "UDP rows");
                answers.push_back(registrar.answer(&transmit.bytes));
            }
            in_registrar += started.elapsed();
            let started = Instant::now();
            while let Some(answer) = answers.pop_front() {
                engine.handle_datagram(now, None, registrar_addr, &answer);
            }
            in_engine += started.elapsed();
        }
        if registered(&engine) == Some(rows) {
            break;
        }
        let step = now + Duration::from_millis(1);
        now = engine.poll_timeout(now).map_or(step, |at| at.max(step));
    }
    Run {
        registered: registered(&engine).unwrap_or(0),
        registers: registrar.registers,
        rejected: registrar.rejected,
        engine: in_engine,
        registrar: in_registrar,
        load,
    }
}

fn main() {
    let mut args = Args::parse();
    if !args.bench {
        // Run by `cargo test --all-targets` (no --bench): a small run that checks the bench
        // still works and every row still registers with two REGISTERs, not a measurement.
        args.rows = args.rows.min(2_000);
        args.runs = args.runs.min(2);
    }
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_none() {
        // As uacregd: with huge pages every table's growth faulted in and zeroed 2 MiB at a
        // time, the bench's largest item and none of the daemon's.
        // SAFETY: prctl with PR_SET_THP_DISABLE takes plain integers and touches no memory.
        unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    }
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // The delay of `PURGE_DELAY_MS` in `src/bin/uacregd.rs`.
        // SAFETY: sets one integer option before anything else runs.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 10) };
    }
    let rows = args.rows.max(1);
    let per_row = |d: Duration| d.as_secs_f64() * 1e6 / rows as f64;
    let mut engine_us = Vec::new();
    let mut failed = false;
    for i in 1..=args.runs.max(1) {
        let run = run(rows);
        println!(
            "run {i}: {} of {rows} registered, {:.2} REGISTERs per row, {} rejected; \
             engine {:.2} µs per row, registrar model {:.2} µs per row, loading {:.2} µs per row",
            run.registered,
            run.registers as f64 / rows as f64,
            run.rejected,
            per_row(run.engine),
            per_row(run.registrar),
            per_row(run.load),
        );
        failed |= run.registered != rows || run.registers != 2 * rows as u64;
        // The first run also pays for the allocator's first pages of a table this size.
        if i > 1 || args.runs <= 1 {
            engine_us.push(per_row(run.engine));
        }
    }
    engine_us.sort_by(f64::total_cmp);
    println!(
        "engine CPU per registered row: median {:.2} µs (runs after the first {:.2}–{:.2})",
        engine_us[engine_us.len() / 2],
        engine_us[0],
        engine_us[engine_us.len() - 1]
    );
    if failed {
        eprintln!("not every row registered with exactly two REGISTERs");
        std::process::exit(1);
    }
}

//! A whole table in simulated time: `cargo bench --bench simulate -- --rows 1000000 --hours 3`.
//!
//! Builds `--rows` records, loads them into a [`RegistrationTable`] and runs it against a model
//! registrar that answers at once (a 401 with a nonce, then a 200 granting the row's expiry, up
//! to the grant in `--grants`), advancing a virtual clock from one deadline to the next. Sends go
//! through the driver's [`Pacer`] (5,000 new requests a second, 100 unanswered at most) in a
//! queue like the driver's, so start-up takes as long as it would for real.
//!
//! It reports REGISTERs per row, refreshes, refreshes sent after their binding expired (must be
//! none: the run exits non-zero otherwise) and the least time left on a binding when its refresh
//! went out, the busiest second of refreshes against the cap (and, unless `--no-baseline`, the
//! same table run again with spreading off), and memory: resident set size (`VmRSS`) and live
//! heap bytes (counted by this binary's allocator) before the table, after loading and at the
//! end. A CSV line goes to `--csv` (default: `simulate.csv` in `$CARGO_TARGET_DIR`, else in
//! `target/`).

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::VecDeque;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use uacreg::engine::{Pacer, PacingConfig};
use uacreg::registration::calendar::RefreshCalendar;
use uacreg::registration::{
    Action, CoreConfig, Destination, Record, RecordFields, RegKey, Registration, RegistrationTable,
    RetryPolicy, Secret, Status,
};
use uacreg::sip::{Authorization, RegisterRequest, Response};

/// The system allocator, counting live bytes and blocks: the heap the table really holds,
/// whatever the allocator keeps around.
struct Counting;

static LIVE_BYTES: AtomicUsize = AtomicUsize::new(0);
static LIVE_BLOCKS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded to `System` with the caller's arguments unchanged; the counters
// are only statistics.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is.
        count_new_block(unsafe { System.alloc(layout) }, layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is.
        count_new_block(unsafe { System.alloc_zeroed(layout) }, layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded as is.
        unsafe { System.dealloc(ptr, layout) };
        LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
        LIVE_BLOCKS.fetch_sub(1, Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded as is.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            LIVE_BYTES.fetch_add(new_size, Ordering::Relaxed);
            LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
        }
        new
    }
}

/// Counts a block `alloc` or `alloc_zeroed` handed out (none when it failed); returns it.
fn count_new_block(ptr: *mut u8, layout: Layout) -> *mut u8 {
    if !ptr.is_null() {
        LIVE_BYTES.fetch_add(layout.size(), Ordering::Relaxed);
        LIVE_BLOCKS.fetch_add(1, Ordering::Relaxed);
    }
    ptr
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

#[derive(Parser, Debug)]
#[command(about = "Registration core at scale in simulated time")]
struct Args {
    /// Rows in the table.
    #[arg(long, default_value_t = 100_000)]
    rows: usize,
    /// Simulated hours to run.
    #[arg(long, default_value_t = 3.0)]
    hours: f64,
    /// `max_refresh_share` (0: refreshes not spread).
    #[arg(long, default_value_t = RetryPolicy::default().max_refresh_share)]
    share: f64,
    /// Grants the registrar gives, row i getting entry i % len (rows ask 3600).
    #[arg(long, value_delimiter = ',', default_value = "3600")]
    grants: Vec<u32>,
    /// Pacing: new requests per second.
    #[arg(long, default_value_t = PacingConfig::default().rate)]
    rate: u32,
    /// Registrar round trip in milliseconds (0: answers at once).
    #[arg(long, default_value_t = 0)]
    rtt_ms: u64,
    /// How long the registrar accepts a nonce, in seconds (Kamailio's auth default: 300).
    #[arg(long, default_value_t = 300)]
    nonce_life: u64,
    /// `start_spread` in seconds.
    #[arg(long, default_value_t = 0)]
    start_spread: u64,
    /// CSV file a line of results is appended to (default: simulate.csv in $CARGO_TARGET_DIR,
    /// else in target/).
    #[arg(long)]
    csv: Option<PathBuf>,
    /// Skip the second run with spreading off.
    #[arg(long)]
    no_baseline: bool,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

const DOMAIN: &str = "sim.test";

/// Row `i`, shaped like a real one (all columns filled, password credentials).
fn record(i: usize) -> Record {
    let user = format!("user{i:07}");
    RecordFields {
        id: i as i64 + 1,
        l_uuid: format!("sim{i:07}"),
        l_username: format!("local{i:07}"),
        l_domain: "gw.sim.test".into(),
        r_username: user.clone(),
        r_domain: DOMAIN.into(),
        realm: DOMAIN.into(),
        auth_username: user,
        auth_password: Secret::new(format!("pw{i:07}")),
        auth_ha1: Secret::default(),
        auth_proxy: "sip:127.0.0.1:5070".into(),
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
    .expect("a simulated row is a few hundred bytes")
}

/// Heap bytes a record holds: its packed text columns and the destination host.
fn record_heap(r: &Record) -> usize {
    let columns = [
        r.l_uuid(),
        r.l_username(),
        r.l_domain(),
        r.r_username(),
        r.r_domain(),
        r.realm(),
        r.auth_username(),
        r.auth_password().expose_borrowed(),
        r.auth_ha1().expose_borrowed(),
        r.auth_proxy(),
        r.contact_addr(),
        r.socket(),
        r.contact_user(),
        r.contact_host_port(),
    ];
    columns.iter().map(|c| c.len()).sum::<usize>() + r.destination.host.len()
}

/// The registrar's view of one row (indexed by `RegKey`, which the table hands out from 1).
#[derive(Clone, Copy, Default)]
struct Binding {
    /// When the binding runs out (None: never granted).
    expires: Option<Instant>,
    /// The nonce last issued (its number) and when.
    nonce: u64,
    nonce_at: Option<Instant>,
    /// CSeq of the request last answered with a challenge (its answer comes with CSeq + 1).
    challenged: u32,
}

/// A registrar that answers at once: challenge, then grant.
struct Registrar {
    rows: Vec<Binding>,
    grants: Vec<u32>,
    nonce_life: Duration,
    nonces: u64,
    start: Instant,
    registers: u64,
    refreshes: u64,
    late: u64,
    lapsed: u64,
    min_margin: Option<Duration>,
    /// Refresh rounds started per second since `start`.
    per_second: Vec<u32>,
}

impl Registrar {
    fn new(rows: usize, grants: Vec<u32>, nonce_life: Duration, start: Instant) -> Registrar {
        Registrar {
            rows: vec![Binding::default(); rows + 1],
            grants,
            nonce_life,
            nonces: 0,
            start,
            registers: 0,
            refreshes: 0,
            late: 0,
            lapsed: 0,
            min_margin: None,
            per_second: Vec::new(),
        }
    }

    fn answer(&mut self, now: Instant, key: RegKey, req: &RegisterRequest) -> Response<'static> {
        self.registers += 1;
        let index = key.0 as usize;
        if index >= self.rows.len() {
            self.rows.resize(index + 1, Binding::default());
        }
        let row = self.rows[index];
        // A REGISTER for a binding we hold that is not the answer to our challenge starts a
        // refresh round.
        let refresh = row
            .expires
            .filter(|_| req.expires > 0 && req.cseq != row.challenged.wrapping_add(1));
        if let Some(expires) = refresh {
            self.refreshes += 1;
            match expires.checked_duration_since(now) {
                Some(left) if !left.is_zero() => {
                    self.min_margin = Some(self.min_margin.map_or(left, |m| m.min(left)));
                }
                _ => self.late += 1,
            }
            let second = (now - self.start).as_secs() as usize;
            if second >= self.per_second.len() {
                self.per_second.resize(second + 1, 0);
            }
            self.per_second[second] += 1;
        }
        let nonce_ok = req.authorization.first().is_some_and(|(_, value)| {
            Authorization::parse(value).is_ok_and(|auth| {
                auth.nonce == format!("{:x}", row.nonce)
                    && row
                        .nonce_at
                        .is_some_and(|at| now.duration_since(at) < self.nonce_life)
            })
        });
        if !nonce_ok {
            self.nonces += 1;
            let row = &mut self.rows[index];
            row.nonce = self.nonces;
            row.nonce_at = Some(now);
            row.challenged = req.cseq;
            let stale = if !req.authorization.is_empty() {
                ", stale=true"
            } else {
                ""
            };
            let mut response = response(req, 401, "Unauthorized");
            response.www_authenticate =
                vec![format!(
                "Digest realm=\"{DOMAIN}\", nonce=\"{:x}\", qop=\"auth\", algorithm=MD5{stale}",
                self.nonces
            )
            .into()];
            return response;
        }
        let row = &mut self.rows[index];
        let mut response = response(req, 200, "OK");
        if req.expires == 0 {
            row.expires = None;
        } else {
            if row.expires.is_some_and(|e| e <= now) {
                self.lapsed += 1;
            }
            let grant = self.grants[index % self.grants.len()].min(req.expires);
            row.expires = Some(now + Duration::from_secs(u64::from(grant)));
            response.expires = Some(grant);
        }
        response
    }
}

fn response(req: &RegisterRequest, code: u16, reason: &'static str) -> Response<'static> {
    Response {
        code,
        reason: reason.into(),
        branch: None,
        call_id: req.call_id.clone().into(),
        cseq: req.cseq,
        cseq_method: "REGISTER".into(),
        contacts: Vec::new(),
        expires: None,
        min_expires: None,
        retry_after: None,
        www_authenticate: Vec::new(),
        proxy_authenticate: Vec::new(),
    }
}

/// `VmRSS` and `VmHWM` of this process, in bytes.
fn rss() -> (usize, usize) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| {
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<usize>()
                    .ok()
            })
            .map_or(0, |kb| kb * 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Memory at one point of the run.
#[derive(Clone, Copy, Default)]
struct Memory {
    rss: usize,
    heap: usize,
    blocks: usize,
}

impl Memory {
    fn now() -> Memory {
        Memory {
            rss: rss().0,
            heap: LIVE_BYTES.load(Ordering::Relaxed),
            blocks: LIVE_BLOCKS.load(Ordering::Relaxed),
        }
    }
}

struct Outcome {
    wall: Duration,
    /// Simulated seconds until every row was registered.
    all_registered: Option<f64>,
    registers: u64,
    refreshes: u64,
    late: u64,
    lapsed: u64,
    min_margin: Option<Duration>,
    busiest: u32,
    busiest_second: usize,
    cap: u32,
    registered_at_end: usize,
    dropped_sends: u64,
    before: Memory,
    loaded: Memory,
    end: Memory,
    /// Live heap once the registrar model and the send queues are gone: the table alone.
    core_heap_end: usize,
    /// What the send queues still held at the end (their capacity stays from start-up).
    queues_heap_end: usize,
    /// Live heap when every row had just registered.
    registered_heap: Option<usize>,
    /// Longest a REGISTER waited for pacing once every row had registered.
    longest_wait: Duration,
}

/// One run; `measure` snapshots memory (only meaningful for the first run of the process).
fn run(args: &Args, share: f64) -> Outcome {
    let wall = Instant::now();
    let before = Memory::now();
    let start = Instant::now();
    let policy = RetryPolicy {
        max_refresh_share: share,
        start_spread: Duration::from_secs(args.start_spread),
        ..RetryPolicy::default()
    };
    let mut table = RegistrationTable::new(
        CoreConfig {
            policy,
            ..CoreConfig::default()
        },
        StdRng::seed_from_u64(1),
    );
    table.reload(start, (0..args.rows).map(record).collect());
    let loaded = Memory::now();

    let mut registrar = Registrar::new(
        args.rows,
        args.grants.clone(),
        Duration::from_secs(args.nonce_life),
        start,
    );
    let pacing = PacingConfig {
        rate: args.rate,
        ..PacingConfig::default()
    };
    let mut pacer = Pacer::new(pacing, start);
    let rtt = Duration::from_millis(args.rtt_ms);
    let end = start + Duration::from_secs_f64(args.hours * 3600.0);
    // (queued at, key, request)
    let mut queue: VecDeque<(Instant, RegKey, RegisterRequest)> = VecDeque::new();
    let mut longest_wait = Duration::ZERO;
    let mut in_transit: VecDeque<(Instant, RegKey, Response)> = VecDeque::new();
    let mut now = start;
    let mut all_registered = None;
    let mut registered_heap = None;
    let mut dropped_sends = 0u64;
    let mut checked = start;
    loop {
        for action in table.drain_actions() {
            let Action::Send { key, request, .. } = action;
            queue.push_back((now, key, request));
        }
        // Admit what pacing allows, dropping sends that are no longer current (as the driver).
        while let Some((_, key, request)) = queue.front() {
            if !table.is_current(*key, request.cseq) {
                queue.pop_front();
                dropped_sends += 1;
                continue;
            }
            if !pacer.try_admit(now, in_transit.len()) {
                break;
            }
            if let Some((queued, key, request)) = queue.pop_front() {
                if all_registered.is_some() {
                    longest_wait = longest_wait.max(now - queued);
                }
                // Sent now: the in-flight guard counts from here, as the driver tells it.
                table.request_sent(now, key, request.cseq);
                let response = registrar.answer(now, key, &request);
                in_transit.push_back((now + rtt, key, response));
            }
        }
        let mut next = table.next_deadline();
        let mut consider = |at: Option<Instant>| {
            if let Some(at) = at {
                next = Some(next.map_or(at, |n: Instant| n.min(at)));
            }
        };
        consider(in_transit.front().map(|m| m.0));
        if !queue.is_empty() {
            consider(
                pacer
                    .next_token_at(now, queue.len())
                    .map(|at| at.max(now + Duration::from_micros(1))),
            );
        }
        let Some(next) = next else { break };
        if next > end {
            break;
        }
        now = now.max(next);
        while in_transit.front().is_some_and(|m| m.0 <= now) {
            if let Some((_, key, response)) = in_transit.pop_front() {
                table.handle_response(now, key, &response);
            }
        }
        table.handle_timeout(now);
        // Every 10 ms of simulated time, and whenever the sends run out, until the whole table
        // is registered.
        let idle = queue.is_empty() && in_transit.is_empty();
        if all_registered.is_none() && (idle || now >= checked + Duration::from_millis(10)) {
            checked = now;
            if table.status_counts()[Status::Registered.name()] == args.rows {
                all_registered = Some((now - start).as_secs_f64());
                registered_heap = Some(LIVE_BYTES.load(Ordering::Relaxed));
            }
        }
    }
    let end_memory = Memory::now();
    let (busiest_second, busiest) = registrar
        .per_second
        .iter()
        .copied()
        .enumerate()
        .max_by_key(|(second, count)| (*count, std::cmp::Reverse(*second)))
        .unwrap_or((0, 0));
    let outcome = Outcome {
        wall: wall.elapsed(),
        all_registered,
        registers: registrar.registers,
        refreshes: registrar.refreshes,
        late: registrar.late,
        lapsed: registrar.lapsed,
        min_margin: registrar.min_margin,
        busiest,
        busiest_second,
        cap: table.refresh_cap(),
        registered_at_end: table.status_counts()[Status::Registered.name()],
        dropped_sends,
        before,
        loaded,
        end: end_memory,
        core_heap_end: 0,
        queues_heap_end: 0,
        registered_heap,
        longest_wait,
    };
    drop(registrar);
    let with_queues = LIVE_BYTES.load(Ordering::Relaxed);
    drop(queue);
    drop(in_transit);
    let core = LIVE_BYTES.load(Ordering::Relaxed);
    drop(table);
    Outcome {
        core_heap_end: core,
        queues_heap_end: with_queues - core,
        ..outcome
    }
}

/// Slots hashbrown holds for `n` entries inserted one by one: the smallest power of two whose
/// 7/8 holds them.
fn hash_buckets(n: usize) -> usize {
    let mut buckets = 4;
    while buckets * 7 / 8 < n {
        buckets *= 2;
    }
    buckets
}

/// Cost of placing `n` refreshes the way a start-up of `n` rows registering over `startup`
/// seconds (3,600 s grants) asks for them, with a cap of `cap` a second: per placement, by the
/// calendar and by a plain per-second array scanned back from the due second.
fn calendar_cost(n: usize, cap: u32, startup: f64) -> (Duration, Duration, f64) {
    let t0 = Instant::now();
    let requests = |seed: u64| {
        let mut rng = StdRng::seed_from_u64(seed);
        (0..n).map(move |i| {
            let now = t0 + Duration::from_secs_f64(startup * i as f64 / n.max(1) as f64);
            let target = now + Duration::from_millis(3_120_000 + rng.random_range(0..=180_000));
            (now, now + Duration::from_secs(1800), target)
        })
    };
    let mut calendar = RefreshCalendar::default();
    calendar.start(t0);
    let clock = Instant::now();
    for (now, earliest, target) in requests(3) {
        if let Some(placement) = calendar.choose(now, earliest, target, cap) {
            calendar.add(placement.second);
        }
    }
    let tree = clock.elapsed() / n.max(1) as u32;

    let mut counts: Vec<u32> = Vec::new();
    let mut steps = 0u64;
    let clock = Instant::now();
    for (_, earliest, target) in requests(3) {
        let hi = (target - t0).as_secs() as usize;
        let lo = (earliest - t0).as_secs_f64().ceil() as usize;
        if counts.len() <= hi {
            counts.resize(hi + 1, 0);
        }
        let mut second = hi;
        while second > lo && counts[second] >= cap {
            second -= 1;
            steps += 1;
        }
        if counts[second] >= cap {
            // Full: the latest least-loaded second, by a scan of the whole window.
            second = (lo..=hi).rev().min_by_key(|s| counts[*s]).unwrap_or(hi);
            steps += (hi - lo) as u64;
        }
        counts[second] += 1;
    }
    let scan = clock.elapsed() / n.max(1) as u32;
    (tree, scan, steps as f64 / n.max(1) as f64)
}

fn per_row(bytes: usize, base: usize, rows: usize) -> f64 {
    bytes.saturating_sub(base) as f64 / rows.max(1) as f64
}

fn main() {
    let mut args = Args::parse();
    if !args.bench {
        // Run by `cargo test --all-targets` (no --bench): a small run that checks the bench
        // still works and still finds no late refresh, not a measurement.
        args.rows = args.rows.min(2_000);
        args.hours = args.hours.min(2.0);
        args.csv = Some(PathBuf::from("target/simulate-smoke.csv"));
    }
    if args.grants.is_empty() || args.grants.contains(&0) {
        eprintln!("--grants needs one or more non-zero expiries");
        std::process::exit(2);
    }
    let rows = args.rows;
    let main = run(&args, args.share);
    let (_, peak_rss) = rss();
    let baseline = (!args.no_baseline && args.share > 0.0).then(|| run(&args, 0.0));
    // This run's start-up, and a tight one (the rows registered within 20 s).
    let startups = [main.all_registered.unwrap_or(60.0), 20.0];
    let calendar: Vec<(f64, (Duration, Duration, f64))> = if main.cap > 0 {
        startups
            .iter()
            .map(|&startup| (startup, calendar_cost(rows, main.cap, startup)))
            .collect()
    } else {
        Vec::new()
    };

    let mib = |bytes: usize| bytes as f64 / (1024.0 * 1024.0);
    let grants: Vec<String> = args.grants.iter().map(u32::to_string).collect();
    println!("simulate: {rows} rows, {} simulated hours", args.hours);
    println!(
        "  grants {} s, pacing {}/s, rtt {} ms, nonce life {} s, start_spread {} s, max_refresh_share {}",
        grants.join("/"),
        args.rate,
        args.rtt_ms,
        args.nonce_life,
        args.start_spread,
        args.share
    );
    println!(
        "  wall time                   {:>12.1} s",
        main.wall.as_secs_f64()
    );
    match main.all_registered {
        Some(at) => println!("  all registered after        {at:>12.1} s simulated"),
        None => println!("  all registered after        {:>12}", "never"),
    }
    println!(
        "  registered at the end       {:>12}",
        main.registered_at_end
    );
    println!(
        "  REGISTERs sent              {:>12}  ({:.2} per row)",
        main.registers,
        main.registers as f64 / rows.max(1) as f64
    );
    println!("  refresh rounds              {:>12}", main.refreshes);
    println!("  refreshes late              {:>12}", main.late);
    println!("  bindings lapsed             {:>12}", main.lapsed);
    println!(
        "  least margin before expiry  {:>12}",
        main.min_margin
            .map_or("-".into(), |m| format!("{:.1} s", m.as_secs_f64()))
    );
    println!(
        "  busiest second of refreshes {:>12}  (second {}, cap {})",
        main.busiest, main.busiest_second, main.cap
    );
    if let Some(b) = &baseline {
        println!(
            "    … with spreading off      {:>12}  (second {}; {} late, least margin {})",
            b.busiest,
            b.busiest_second,
            b.late,
            b.min_margin
                .map_or("-".into(), |m| format!("{:.1} s", m.as_secs_f64()))
        );
        println!(
            "    … wall time               {:>12.1} s",
            b.wall.as_secs_f64()
        );
    }
    for (startup, (tree, scan, steps)) in calendar {
        println!(
            "  placing the refreshes of {rows} rows registered over {startup:.0} s: calendar {} ns each; a plain array scanned back {} ns each ({steps:.0} seconds looked at)",
            tree.as_nanos(),
            scan.as_nanos()
        );
    }
    println!("  stale sends dropped         {:>12}", main.dropped_sends);
    println!(
        "  longest wait for pacing     {:>10.1} s after start-up{}",
        main.longest_wait.as_secs_f64(),
        baseline.as_ref().map_or(String::new(), |b| format!(
            " ({:.1} s with spreading off)",
            b.longest_wait.as_secs_f64()
        ))
    );
    println!("  memory                           RSS MiB   heap MiB   heap blocks");
    for (name, m) in [
        ("before the table", main.before),
        ("after loading", main.loaded),
        ("at the end", main.end),
    ] {
        println!(
            "    {name:<24} {:>10.1} {:>10.1} {:>13}",
            mib(m.rss),
            mib(m.heap),
            m.blocks
        );
    }
    println!("    peak RSS                 {:>10.1}", mib(peak_rss));
    println!(
        "  bytes per row               heap: {:.0} loaded, {} registered, {:.0} at the end (table alone); RSS: {:.0} loaded, {:.0} at the end",
        per_row(main.loaded.heap, main.before.heap, rows),
        main.registered_heap.map_or("-".into(), |h| format!(
            "{:.0}",
            per_row(h, main.before.heap, rows)
        )),
        per_row(main.core_heap_end, main.before.heap, rows),
        per_row(main.loaded.rss, main.before.rss, rows),
        per_row(main.end.rss, main.before.rss, rows),
    );
    println!(
        "  send queues at the end      {:>10.1} MiB (capacity kept from start-up)",
        mib(main.queues_heap_end)
    );
    // What the table's heap is made of, per row: the parts known from outside, and the rest.
    let registration = size_of::<Registration>() as f64;
    let slots = hash_buckets(rows) as f64 * (size_of::<(RegKey, Box<Registration>)>() + 1) as f64
        / rows.max(1) as f64;
    let strings = record_heap(&record(0)) as f64;
    let core = per_row(main.core_heap_end, main.before.heap, rows);
    println!(
        "  table heap per row: Registration {registration:.0} (Record {} inline), hash-map slots {slots:.0}, record strings {strings:.0}, rest {:.0} (l_uuid index, timer queue, Call-ID/tag, digest challenge, calendar)",
        size_of::<Record>(),
        core - registration - slots - strings
    );
    println!(
        "  a queued send: Action {} B inline, RegisterRequest {} B inline",
        size_of::<Action>(),
        size_of::<RegisterRequest>()
    );

    let csv = args.csv.clone().unwrap_or_else(|| {
        let dir = std::env::var_os("CARGO_TARGET_DIR").unwrap_or_else(|| "target".into());
        PathBuf::from(dir).join("simulate.csv")
    });
    match append_csv(&csv, &args, &main, baseline.as_ref(), peak_rss) {
        Ok(()) => println!("  appended to {}", csv.display()),
        Err(err) => eprintln!("cannot write {}: {err}", csv.display()),
    }
    if main.late > 0 || main.lapsed > 0 {
        eprintln!(
            "FAIL: {} refreshes late, {} bindings lapsed",
            main.late, main.lapsed
        );
        std::process::exit(1);
    }
}

fn append_csv(
    path: &std::path::Path,
    args: &Args,
    main: &Outcome,
    baseline: Option<&Outcome>,
    peak_rss: usize,
) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let new = !path.exists();
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    if new {
        writeln!(
            file,
            "rows,hours,grants,rate,share,wall_s,all_registered_s,registers_per_row,refreshes,late,lapsed,min_margin_s,busiest,cap,busiest_unspread,rss_before,rss_loaded,rss_end,rss_peak,heap_before,heap_loaded,heap_end,heap_core_end"
        )?;
    }
    let grants: Vec<String> = args.grants.iter().map(u32::to_string).collect();
    writeln!(
        file,
        "{},{},{},{},{},{:.1},{},{:.3},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
        args.rows,
        args.hours,
        grants.join("/"),
        args.rate,
        args.share,
        main.wall.as_secs_f64(),
        main.all_registered
            .map_or(String::new(), |s| format!("{s:.1}")),
        main.registers as f64 / args.rows.max(1) as f64,
        main.refreshes,
        main.late,
        main.lapsed,
        main.min_margin
            .map_or(String::new(), |m| format!("{:.3}", m.as_secs_f64())),
        main.busiest,
        main.cap,
        baseline.map_or(String::new(), |b| b.busiest.to_string()),
        main.before.rss,
        main.loaded.rss,
        main.end.rss,
        peak_rss,
        main.before.heap,
        main.loaded.heap,
        main.end.heap,
        main.core_heap_end,
    )
}

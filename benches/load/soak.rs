//! The soak: every row registered, then minutes to hours of refreshes, reloads and dumps, with
//! the gateway's memory and health sampled throughout.
//!
//! A carrier trusts a gateway that registers a million rows once only if it keeps doing so:
//! memory that creeps up by a few bytes per refresh becomes an outage weeks later, and a
//! refresh sent a second late can let a binding lapse. A run measures the start; the soak
//! measures the steady state. It starts when every row is registered and lasts `--soak-minutes`.
//! Every `--reload-every` seconds a different share of the rows is changed and `uac.reg_reload`
//! called (its answer time kept); every `--dump-every` seconds a `uac.reg_dump` is timed with
//! the RSS growth it causes; every `--sample-every` seconds one sample is printed and kept
//! (RSS, CPU, registered rows on both sides, REGISTERs, retransmissions, timeouts, timer rounds
//! more than 1 s late, error answers, refreshes that came after their binding lapsed), and
//! written to a CSV file.
//!
//! **Growth.** Memory grows during the first grant period for reasons that are not leaks: every
//! row's first refresh, the first reload and dump, the allocator filling its pages. So growth
//! is measured after it, from the first sample at or after `--expires` seconds into the soak
//! (the baseline). Reloads and dumps due at the same moment as a sample run before it, so a
//! baseline sample already holds what they keep. Rows registered together refresh in waves
//! (a million rows at 5,000 a second take 200 s; their refreshes, capped per second, then come
//! in bursts with quiet minutes between), and RSS rises and falls with the transactions of a
//! wave: a sample in a quiet minute against one in a wave is a difference of phase, not of
//! memory. So the verdict compares the highest sample of the grant period that starts at the
//! baseline with the highest of the last grant period of the soak, each window a whole cycle
//! of waves; the growth from the baseline sample to the last sample is reported beside it.
//!
//! **Verdict.** The soak fails (the tool exits non-zero, so it can gate CI) when growth exceeds
//! `--max-growth-pct`, when any timer round ran more than 1 s late, on any timeout, error
//! answer or lapsed refresh, when a sample finds rows not registered (after a grace of up to
//! [`GRACE`], for rows a reload is re-registering), or when a dump misses records.

use std::io;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::dump::{self, DumpMeasure};
use crate::gateway::{Gateway, GatewayCounters};
use crate::peer::Peer;
use crate::procfs;
use crate::report;
use crate::rows::{self, RowSet};

/// How long a sample that finds rows unregistered waits for them before counting them short.
const GRACE: Duration = Duration::from_secs(15);

#[derive(Clone, Debug)]
pub struct SoakPlan {
    pub duration: Duration,
    pub reload_every: Duration,
    pub dump_every: Duration,
    pub sample_every: Duration,
    pub max_growth_pct: f64,
    /// The rows' expires: growth is measured after one grant period.
    pub expires: Duration,
    /// Share of the rows each reload changes.
    pub changed_share: f64,
}

/// One sample. Counters are since the soak started; RSS, CPU (the process's total) and the
/// registered rows are as they are.
#[derive(Clone, Debug)]
pub struct Sample {
    pub t: f64,
    pub rss_kib: u64,
    pub cpu_seconds: f64,
    /// Rows the gateway counts registered (uacregd only).
    pub registered: Option<u64>,
    pub bindings: u64,
    pub registers_sent: Option<u64>,
    pub retransmissions: Option<u64>,
    pub timeouts: Option<u64>,
    /// Timer rounds more than 1 s late.
    pub late_rounds: Option<u64>,
    pub error_answers: u64,
    /// Refreshes that came after their binding had expired (the in-repo registrar only).
    pub lapsed: Option<u64>,
    /// Rows still not registered, on either side, after the grace.
    pub short_rows: u64,
}

#[derive(Clone, Debug)]
pub struct Reload {
    pub took: Duration,
    pub changed: usize,
}

#[derive(Clone, Debug)]
pub struct Dump {
    pub t: f64,
    pub measure: DumpMeasure,
}

#[derive(Clone, Debug)]
pub struct SoakSummary {
    pub rows: usize,
    pub samples: Vec<Sample>,
    pub reloads: Vec<Reload>,
    pub dumps: Vec<Dump>,
    /// Index of the first sample at or after one grant period.
    pub baseline: Option<usize>,
    pub max_growth_pct: f64,
    /// The rows' grant period: the length of the windows whose peaks are compared.
    pub expires: Duration,
}

/// Where the soak started from: counters to subtract.
struct Start {
    at: Instant,
    gateway: GatewayCounters,
    error_answers: u64,
    lapsed: Option<u64>,
}

/// Runs the soak on a gateway whose rows are all registered; samples go to `csv` as they are
/// taken.
pub fn run(
    plan: &SoakPlan,
    gateway: &Gateway,
    peer: &Peer,
    rows: &RowSet,
    csv: &Path,
) -> io::Result<SoakSummary> {
    let start = Start {
        at: Instant::now(),
        gateway: gateway.counters()?,
        error_answers: peer.error_answers()?,
        lapsed: peer.lapsed(),
    };
    let run_started = report::utc_now();
    let end = start.at + plan.duration;
    let mut summary = SoakSummary {
        rows: rows.len(),
        samples: Vec::new(),
        reloads: Vec::new(),
        dumps: Vec::new(),
        baseline: None,
        max_growth_pct: plan.max_growth_pct,
        expires: plan.expires,
    };
    eprintln!(
        "== soak: {:.0} min, reload every {} s, dump every {} s, sample every {} s",
        plan.duration.as_secs_f64() / 60.0,
        plan.reload_every.as_secs(),
        plan.dump_every.as_secs(),
        plan.sample_every.as_secs()
    );
    let mut next_sample = start.at;
    let mut next_reload = start.at + plan.reload_every;
    let mut next_dump = start.at + plan.dump_every;
    let mut round = 0;
    // Bounded: each pass either runs something due or sleeps until the next due moment (at most
    // a second), and the passes stop at `end`.
    let passes = plan.duration.as_secs() * 4 + 1000;
    for _ in 0..passes {
        let now = Instant::now();
        // A sample due at the same moment as a reload or a dump is taken first: it measures what
        // the daemon holds between them, not what a reload that ended a millisecond ago has
        // freed and the allocator has yet to return (it keeps freed pages for a few ms and
        // returns them within a second). Memory a reload or a dump keeps shows in the next
        // sample, taken well after it.
        let last = now >= end;
        if now >= next_sample || last {
            let sample = take_sample(&start, gateway, peer, rows.len())?;
            print_sample(&sample, summary.samples.last());
            append_sample(csv, &run_started, rows.len(), &sample)?;
            summary.samples.push(sample);
            next_sample += plan.sample_every;
            if last {
                break;
            }
            continue;
        }
        if now >= next_reload && next_reload < end {
            let (indices, earlier) = rows::changed_by_round(rows.len(), plan.changed_share, round);
            gateway.change_rows(rows, &indices, earlier)?;
            let took = gateway.reload()?;
            let t = start.at.elapsed().as_secs_f64();
            eprintln!(
                "   {t:>6.0} s  reload: {} rows changed, answer in {:.1} ms",
                indices.len(),
                took.as_secs_f64() * 1000.0
            );
            summary.reloads.push(Reload {
                took,
                changed: indices.len(),
            });
            round += 1;
            next_reload += plan.reload_every;
            continue;
        }
        if now >= next_dump && next_dump < end {
            let measure = dump::measure(gateway)?;
            let t = start.at.elapsed().as_secs_f64();
            eprintln!(
                "   {t:>6.0} s  reg_dump: {} records in {:.0} ms, RSS +{:.1} MiB, {} timer rounds > 1 s late",
                measure.records,
                measure.took.as_secs_f64() * 1000.0,
                measure.rss_growth_kib as f64 / 1024.0,
                measure.late_rounds.map_or("?".into(), |n| n.to_string())
            );
            summary.dumps.push(Dump { t, measure });
            next_dump += plan.dump_every;
            continue;
        }
        let next = next_sample
            .min(end)
            .min(if next_reload < end { next_reload } else { end });
        let next = next.min(if next_dump < end { next_dump } else { end });
        std::thread::sleep(
            next.saturating_duration_since(Instant::now())
                .min(Duration::from_secs(1)),
        );
    }
    summary.baseline = summary
        .samples
        .iter()
        .position(|s| s.t >= plan.expires.as_secs_f64());
    Ok(summary)
}

/// One sample; rows found unregistered are given up to [`GRACE`] to come back.
fn take_sample(start: &Start, gateway: &Gateway, peer: &Peer, rows: usize) -> io::Result<Sample> {
    let t = start.at.elapsed().as_secs_f64();
    let pids = gateway.pids();
    let rss_kib = procfs::memory_kib(&pids);
    let cpu_seconds = procfs::cpu_seconds(&pids);
    let counters = gateway.counters()?;
    let bindings = peer.bindings()?;
    let shortfall = |registered: Option<u64>, bindings: u64| {
        let fewest = registered.unwrap_or(u64::MAX).min(bindings);
        (rows as u64).saturating_sub(fewest)
    };
    let mut short_rows = shortfall(counters.registered, bindings);
    let waited = Instant::now();
    // Bounded by GRACE: one check every 200 ms.
    while short_rows > 0 && waited.elapsed() < GRACE {
        std::thread::sleep(Duration::from_millis(200));
        short_rows = shortfall(gateway.counters()?.registered, peer.bindings()?);
    }
    let since = |now: Option<u64>, then: Option<u64>| Some(now?.saturating_sub(then.unwrap_or(0)));
    let late_rounds = match (&start.gateway.lateness, &counters.lateness) {
        (Some(before), Some(after)) => Some(report::later_than(before, after, dump::LATE_MS)),
        _ => None,
    };
    Ok(Sample {
        t,
        rss_kib,
        cpu_seconds,
        registered: counters.registered,
        bindings,
        registers_sent: since(counters.registers_sent, start.gateway.registers_sent),
        retransmissions: since(counters.retransmissions, start.gateway.retransmissions),
        timeouts: since(counters.timeouts, start.gateway.timeouts),
        late_rounds,
        error_answers: peer.error_answers()?.saturating_sub(start.error_answers),
        lapsed: since(peer.lapsed(), start.lapsed),
        short_rows,
    })
}

fn opt(v: Option<u64>) -> String {
    v.map_or("-".into(), |v| v.to_string())
}

fn print_sample(sample: &Sample, previous: Option<&Sample>) {
    let cpu_pct = previous
        .filter(|p| sample.t > p.t)
        .map(|p| (sample.cpu_seconds - p.cpu_seconds) / (sample.t - p.t) * 100.0);
    eprintln!(
        "   {:>6.0} s  RSS {:>8.1} MiB  CPU {:>7.1} s ({:>5.1} %)  registered {} / bindings {}  \
         sent {}  retrans {}  timeouts {}  late>1s {}  errors {}  lapsed {}  short {}",
        sample.t,
        sample.rss_kib as f64 / 1024.0,
        sample.cpu_seconds,
        cpu_pct.unwrap_or(0.0),
        opt(sample.registered),
        sample.bindings,
        opt(sample.registers_sent),
        opt(sample.retransmissions),
        opt(sample.timeouts),
        opt(sample.late_rounds),
        sample.error_answers,
        opt(sample.lapsed),
        sample.short_rows
    );
}

const CSV_HEADER: &str = "run_started,rows,t_s,rss_kib,cpu_seconds,registered,bindings,\
                          registers_sent,retransmissions,timeouts,timer_rounds_over_1s_late,\
                          error_answers,lapsed_refreshes,short_rows";

fn append_sample(csv: &Path, run_started: &str, rows: usize, s: &Sample) -> io::Result<()> {
    let o = |v: Option<u64>| v.map_or(String::new(), |v| v.to_string());
    let line = format!(
        "{run_started},{rows},{:.1},{},{:.2},{},{},{},{},{},{},{},{},{}",
        s.t,
        s.rss_kib,
        s.cpu_seconds,
        o(s.registered),
        s.bindings,
        o(s.registers_sent),
        o(s.retransmissions),
        o(s.timeouts),
        o(s.late_rounds),
        s.error_answers,
        o(s.lapsed),
        s.short_rows
    );
    report::append_csv_line(csv, CSV_HEADER, &line)
}

impl SoakSummary {
    /// RSS growth from the baseline sample to the last, in percent of the baseline.
    pub fn growth_pct(&self) -> Option<f64> {
        let base = self.samples.get(self.baseline?)?;
        let last = self.samples.last()?;
        if last.t <= base.t || base.rss_kib == 0 {
            return None;
        }
        Some((last.rss_kib as f64 - base.rss_kib as f64) / base.rss_kib as f64 * 100.0)
    }

    /// The highest RSS of the grant period starting at the baseline sample and of the last
    /// grant period of the soak, with the times of those peaks; `None` when the soak is too
    /// short for the two windows to be apart (see the module documentation).
    pub fn window_peaks(&self) -> Option<((f64, u64), (f64, u64))> {
        let base_t = self.samples.get(self.baseline?)?.t;
        let last_t = self.samples.last()?.t;
        let period = self.expires.as_secs_f64();
        let peak = |from: f64, until: f64| {
            self.samples
                .iter()
                .filter(|s| s.t >= from && s.t < until)
                .map(|s| (s.t, s.rss_kib))
                .max_by_key(|&(_, kib)| kib)
        };
        // The windows never share a sample: the last starts where the first ends at the
        // earliest (a soak shorter than two grant periods after the baseline has shorter last
        // windows).
        let first_end = base_t + period;
        let first = peak(base_t, first_end)?;
        let last = peak((last_t - period).max(first_end), f64::INFINITY)?;
        Some((first, last))
    }

    /// Growth of the last grant period's peak RSS over the first's after the baseline, in
    /// percent: the verdict's measure.
    pub fn peak_growth_pct(&self) -> Option<f64> {
        let ((_, first), (_, last)) = self.window_peaks()?;
        (first > 0).then(|| (last as f64 - first as f64) / first as f64 * 100.0)
    }

    /// Why the soak failed; empty when it passed.
    pub fn failures(&self) -> Vec<String> {
        let mut failures = Vec::new();
        match self.peak_growth_pct() {
            Some(g) if g > self.max_growth_pct => failures.push(format!(
                "peak RSS of the last grant period is {g:.2} % above that of the first after \
                 the baseline (at most {} % allowed)",
                self.max_growth_pct
            )),
            Some(_) => {}
            None => failures
                .push("no RSS growth measured: no sample after the first grant period".into()),
        }
        let Some(last) = self.samples.last() else {
            failures.push("no samples".into());
            return failures;
        };
        let mut count = |what: &str, n: Option<u64>| {
            if let Some(n) = n.filter(|n| *n > 0) {
                failures.push(format!("{n} {what}"));
            }
        };
        count("timer rounds more than 1 s late", last.late_rounds);
        count("transaction timeouts", last.timeouts);
        count("error answers from the registrar", Some(last.error_answers));
        count("refreshes after their binding lapsed", last.lapsed);
        let short: Vec<String> = self
            .samples
            .iter()
            .filter(|s| s.short_rows > 0)
            .map(|s| format!("{} at {:.0} s", s.short_rows, s.t))
            .collect();
        if !short.is_empty() {
            failures.push(format!("rows not registered: {}", short.join(", ")));
        }
        for dump in self.dumps.iter().filter(|d| d.measure.records != self.rows) {
            failures.push(format!(
                "reg_dump at {:.0} s held {} records, not {}",
                dump.t, dump.measure.records, self.rows
            ));
        }
        failures
    }

    /// The summary as (name, value) rows.
    fn lines(&self) -> Vec<(&'static str, String)> {
        let mib = |kib: u64| format!("{:.1}", kib as f64 / 1024.0);
        let ms = |d: Duration| format!("{:.1}", d.as_secs_f64() * 1000.0);
        let first = self.samples.first();
        let base = self.baseline.and_then(|i| self.samples.get(i));
        let last = self.samples.last();
        let mut reload_times: Vec<Duration> = self.reloads.iter().map(|r| r.took).collect();
        reload_times.sort();
        let mut dump_times: Vec<Duration> = self.dumps.iter().map(|d| d.measure.took).collect();
        dump_times.sort();
        let median = |v: &[Duration]| v.get(v.len() / 2).map_or(String::new(), |d| ms(*d));
        let max = |v: &[Duration]| v.last().map_or(String::new(), |d| ms(*d));
        let failures = self.failures();
        vec![
            (
                "soak_minutes",
                format!("{:.1}", last.map_or(0.0, |s| s.t) / 60.0),
            ),
            ("samples", self.samples.len().to_string()),
            (
                "rss_first_mib",
                first.map_or(String::new(), |s| mib(s.rss_kib)),
            ),
            (
                "rss_baseline_mib (t)",
                base.map_or(String::new(), |s| {
                    format!("{} ({:.0} s)", mib(s.rss_kib), s.t)
                }),
            ),
            (
                "rss_last_mib",
                last.map_or(String::new(), |s| mib(s.rss_kib)),
            ),
            (
                "rss_growth_after_grant_pct",
                self.growth_pct()
                    .map_or("n/a".into(), |g| format!("{g:.2}")),
            ),
            (
                "rss_peak_first_window_mib (t)",
                self.window_peaks().map_or(String::new(), |((t, kib), _)| {
                    format!("{} ({t:.0} s)", mib(kib))
                }),
            ),
            (
                "rss_peak_last_window_mib (t)",
                self.window_peaks().map_or(String::new(), |(_, (t, kib))| {
                    format!("{} ({t:.0} s)", mib(kib))
                }),
            ),
            (
                "rss_peak_growth_pct (verdict)",
                self.peak_growth_pct()
                    .map_or("n/a".into(), |g| format!("{g:.2}")),
            ),
            ("max_growth_pct", format!("{}", self.max_growth_pct)),
            (
                "cpu_seconds_in_soak",
                match (first, last) {
                    (Some(f), Some(l)) => format!("{:.1}", l.cpu_seconds - f.cpu_seconds),
                    _ => String::new(),
                },
            ),
            (
                "registers_sent",
                last.map_or(String::new(), |s| opt(s.registers_sent)),
            ),
            (
                "retransmissions",
                last.map_or(String::new(), |s| opt(s.retransmissions)),
            ),
            ("timeouts", last.map_or(String::new(), |s| opt(s.timeouts))),
            (
                "timer_rounds_over_1s_late",
                last.map_or(String::new(), |s| opt(s.late_rounds)),
            ),
            (
                "error_answers",
                last.map_or(String::new(), |s| s.error_answers.to_string()),
            ),
            (
                "lapsed_refreshes",
                last.map_or(String::new(), |s| opt(s.lapsed)),
            ),
            (
                "samples_with_rows_short",
                self.samples
                    .iter()
                    .filter(|s| s.short_rows > 0)
                    .count()
                    .to_string(),
            ),
            (
                "reloads (rows changed each)",
                format!(
                    "{} ({})",
                    self.reloads.len(),
                    self.reloads.first().map_or(0, |r| r.changed)
                ),
            ),
            ("reload_answer_ms_median", median(&reload_times)),
            ("reload_answer_ms_max", max(&reload_times)),
            ("dumps", self.dumps.len().to_string()),
            ("reg_dump_ms_median", median(&dump_times)),
            ("reg_dump_ms_max", max(&dump_times)),
            (
                "reg_dump_rss_growth_mib_max",
                self.dumps
                    .iter()
                    .map(|d| d.measure.rss_growth_kib)
                    .max()
                    .map_or(String::new(), mib),
            ),
            (
                "verdict",
                if failures.is_empty() {
                    "pass".into()
                } else {
                    "FAIL".into()
                },
            ),
        ]
    }

    pub fn print(&self) {
        println!();
        for (name, value) in self.lines() {
            println!("{name:<34} {value:>16}");
        }
        for failure in self.failures() {
            println!("  FAIL: {failure}");
        }
    }
}

//! One run's figures, printed as a table (one column per run) and appended to a CSV file.

use std::io::Write;
use std::path::Path;

#[derive(Clone, Debug, Default)]
pub struct Outcome {
    pub gateway: String,
    pub peer: String,
    /// Where uacregd's rows are (`sqlite`, `postgres`); empty for Kamailio's gateway.
    pub store: String,
    pub registrar_sockets: usize,
    pub rows: usize,
    pub expires: u32,
    /// Writing the rows into the table before the gateway starts.
    pub table_write_seconds: Option<f64>,
    /// From starting the gateway to its `rows loaded` log line (uacregd's first load done).
    pub seconds_to_loaded: Option<f64>,
    /// From starting the gateway to its first answer (metrics endpoint, served after the load).
    pub seconds_to_answering: Option<f64>,
    pub seconds_to_registered: Option<f64>,
    /// Bindings at the registrar when phase 1 ended.
    pub registered: u64,
    pub registers_seen: Option<u64>,
    pub registers_sent: Option<u64>,
    pub retransmissions: Option<u64>,
    pub timeouts: Option<u64>,
    /// Times uacregd's pacing window was halved by late answers.
    pub pacing_backoffs: Option<u64>,
    pub error_answers: Option<u64>,
    pub empty_kib: Option<u64>,
    pub settled_kib: Option<u64>,
    pub peak_kib: Option<u64>,
    /// CPU seconds until every row was registered, and at the end of the run.
    pub cpu_seconds: Option<f64>,
    pub cpu_seconds_total: Option<f64>,
    /// CPU seconds and rows registered when uacregd first answered (its rows loaded): the
    /// registering that follows is measured from here, without the loading.
    pub cpu_seconds_at_answering: Option<f64>,
    pub registered_at_answering: Option<u64>,
    pub dump_ms: Option<f64>,
    pub dump_records: Option<usize>,
    /// Highest RSS growth during any of the dumps.
    pub dump_rss_growth_kib: Option<u64>,
    /// Timer rounds more than 1 s late during the dumps.
    pub dump_late_rounds: Option<u64>,
    /// Upper bound (ms) of how late the latest due timer ran during the dumps, and how many
    /// timer rounds ran: `(None, 0)` when no timer was due.
    pub dump_timer_lateness: Option<(Option<u64>, u64)>,
    pub reload_ms: Option<f64>,
    pub reload_changed: Option<usize>,
    pub reload_seconds: Option<f64>,
    pub reload_registers_seen: Option<u64>,
}

impl Outcome {
    pub fn new(gateway: &str, peer: &str, rows: usize) -> Outcome {
        Outcome {
            gateway: gateway.to_lowercase(),
            peer: peer.to_lowercase(),
            rows,
            ..Outcome::default()
        }
    }

    /// (name, value) pairs in report order; empty strings where the run has no figure.
    fn fields(&self) -> Vec<(&'static str, String)> {
        let f1 = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v:.1}"));
        let f2 = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v:.2}"));
        let u = |v: Option<u64>| v.map_or(String::new(), |v| v.to_string());
        let mib = |v: Option<u64>| v.map_or(String::new(), |v| format!("{:.1}", v as f64 / 1024.0));
        let per_row = |v: Option<u64>| v.map(|v| v as f64 / self.rows.max(1) as f64);
        let bytes_per_row = match (self.settled_kib, self.empty_kib) {
            (Some(s), Some(e)) => {
                Some(s.saturating_sub(e) as f64 * 1024.0 / self.rows.max(1) as f64)
            }
            _ => None,
        };
        // CPU per row registered after the first answer: challenge and answer, not loading.
        let cpu_us_per_row = match (
            self.cpu_seconds,
            self.cpu_seconds_at_answering,
            self.registered_at_answering,
        ) {
            (Some(end), Some(start), Some(before)) if (self.rows as u64) > before => {
                Some((end - start) * 1e6 / (self.rows as u64 - before) as f64)
            }
            _ => None,
        };
        let rows_per_sec = self
            .seconds_to_registered
            .map(|s| self.rows as f64 / s.max(1e-9));
        let lateness = match self.dump_timer_lateness {
            None => String::new(),
            Some((_, 0)) => "no timer due".into(),
            Some((Some(ms), n)) => format!("<= {ms} ms ({n} rounds)"),
            Some((None, n)) => format!("> 10 s ({n} rounds)"),
        };
        let reload_per_row = match (self.reload_registers_seen, self.reload_changed) {
            (Some(s), Some(c)) if c > 0 => Some(s as f64 / c as f64),
            _ => None,
        };
        vec![
            ("gateway", self.gateway.clone()),
            ("registrar", self.peer.clone()),
            ("store", self.store.clone()),
            ("registrar_sockets", self.registrar_sockets.to_string()),
            ("rows", self.rows.to_string()),
            ("expires_s", self.expires.to_string()),
            ("table_write_seconds", f2(self.table_write_seconds)),
            ("seconds_to_rows_loaded", f2(self.seconds_to_loaded)),
            ("seconds_to_first_answer", f2(self.seconds_to_answering)),
            ("seconds_to_all_registered", f2(self.seconds_to_registered)),
            (
                "rows_per_second",
                format!("{:.0}", rows_per_sec.unwrap_or(0.0)),
            ),
            ("registered", self.registered.to_string()),
            ("registers_seen_by_registrar", u(self.registers_seen)),
            ("registers_per_row", f2(per_row(self.registers_seen))),
            ("registers_sent_by_gateway", u(self.registers_sent)),
            ("retransmissions", u(self.retransmissions)),
            ("timeouts", u(self.timeouts)),
            ("pacing_backoffs", u(self.pacing_backoffs)),
            ("error_answers", u(self.error_answers)),
            ("rss_empty_mib", mib(self.empty_kib)),
            ("rss_settled_mib", mib(self.settled_kib)),
            ("rss_peak_mib", mib(self.peak_kib)),
            ("bytes_per_row_settled", f1(bytes_per_row)),
            ("cpu_seconds_to_registered", f2(self.cpu_seconds)),
            ("cpu_seconds_total", f2(self.cpu_seconds_total)),
            (
                "cpu_seconds_at_first_answer",
                f2(self.cpu_seconds_at_answering),
            ),
            ("cpu_us_per_row_registering", f1(cpu_us_per_row)),
            ("reg_dump_ms", f1(self.dump_ms)),
            (
                "reg_dump_records",
                self.dump_records.map_or(String::new(), |v| v.to_string()),
            ),
            ("reg_dump_rss_growth_mib", mib(self.dump_rss_growth_kib)),
            ("timer_lateness_during_dumps", lateness),
            (
                "timer_rounds_late_1s_during_dumps",
                u(self.dump_late_rounds),
            ),
            ("reload_answer_ms", f1(self.reload_ms)),
            (
                "reload_changed_rows",
                self.reload_changed.map_or(String::new(), |v| v.to_string()),
            ),
            ("reload_seconds_to_quiet", f2(self.reload_seconds)),
            ("reload_registers_seen", u(self.reload_registers_seen)),
            ("reload_registers_per_changed_row", f2(reload_per_row)),
        ]
    }
}

/// How late timers ran between two readings of the cumulative lateness histogram
/// `(count within bound, bound ms)`: the smallest bound holding every new observation
/// (`None` if some were beyond the last finite bound) and how many there were.
pub fn lateness_during(before: &[(f64, u64)], after: &[(f64, u64)]) -> (Option<u64>, u64) {
    let total = after.last().map_or(0.0, |a| a.0) - before.last().map_or(0.0, |b| b.0);
    let bound = before
        .iter()
        .zip(after)
        .find(|(b, a)| a.0 - b.0 >= total && a.1 != u64::MAX)
        .map(|(_, a)| a.1);
    (bound, total as u64)
}

/// How many observations between two readings of a cumulative histogram (as in
/// [`lateness_during`]) were above `ms`: above the largest bound not over `ms`, so a bound
/// missing from the histogram counts more as late, never fewer.
pub fn later_than(before: &[(f64, u64)], after: &[(f64, u64)], ms: u64) -> u64 {
    let total = after.last().map_or(0.0, |a| a.0) - before.last().map_or(0.0, |b| b.0);
    let within = before
        .iter()
        .zip(after)
        .rfind(|(_, a)| a.1 <= ms)
        .map_or(0.0, |(b, a)| a.0 - b.0);
    (total - within).max(0.0) as u64
}

pub fn print_table(outcomes: &[Outcome]) {
    let columns: Vec<Vec<(&'static str, String)>> = outcomes.iter().map(Outcome::fields).collect();
    let Some(first) = columns.first() else {
        return;
    };
    let width = columns
        .iter()
        .flat_map(|c| c.iter().map(|(_, v)| v.len()))
        .max()
        .unwrap_or(8)
        .max(10);
    println!();
    for (i, (name, _)) in first.iter().enumerate() {
        print!("{name:<34}");
        for column in &columns {
            print!(" {:>width$}", column[i].1);
        }
        println!();
    }
}

pub fn append_csv(path: &Path, outcome: &Outcome) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let fields = outcome.fields();
    let names: Vec<&str> = std::iter::once("date")
        .chain(fields.iter().map(|(n, _)| *n))
        .collect();
    let values: Vec<String> = std::iter::once(utc_now())
        .chain(fields.into_iter().map(|(_, v)| v.replace(',', ";")))
        .collect();
    append_csv_line(path, &names.join(","), &values.join(","))
}

/// Appends `line` to the CSV file at `path`, writing `header` first into a new file. A file
/// whose header differs (an older version of the tool wrote it) is moved aside to
/// `<path>.<date>` rather than mixed with lines of other columns.
pub fn append_csv_line(path: &Path, header: &str, line: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    if let Some(first) = first_line(path)
        && first != header
    {
        let aside = format!("{}.{}", path.display(), utc_now().replace(':', ""));
        std::fs::rename(path, &aside)?;
        eprintln!("{} had other columns: moved to {aside}", path.display());
    }
    let new = !path.exists();
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    if new {
        writeln!(file, "{header}")?;
    }
    writeln!(file, "{line}")
}

/// The first line of the file at `path`, if it can be read.
fn first_line(path: &Path) -> Option<String> {
    use std::io::BufRead;
    let file = std::fs::File::open(path).ok()?;
    let mut line = String::new();
    std::io::BufReader::new(file).read_line(&mut line).ok()?;
    Some(line.trim_end().to_string())
}

/// `2026-12-04T10:22:21Z`.
pub fn utc_now() -> String {
    std::process::Command::new("date")
        .arg("-u")
        .arg("+%Y-%m-%dT%H:%M:%SZ")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

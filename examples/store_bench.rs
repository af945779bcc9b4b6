//! Store timings at scale on each engine: inserting N rows, loading and validating them (what a
//! reload reads), and writing the uacreg_status table (all N rows, then 1% of them).
//!
//! ```sh
//! cargo run --release --example store_bench -- 100000
//! ```
//!
//! SQLite uses a temp file; PostgreSQL and MariaDB get throwaway servers on loopback ports (the
//! test support code; `scripts/install-test-deps` installs them), skipped when not installed.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use support::dbserver::{DbServer, Engine, engine_available};
use uacreg::store::{RawRow, RowDefaults, StatusRow, StatusScope, Store};

fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let start = Instant::now();
    let value = f();
    (value, start.elapsed())
}

fn status_row(i: usize, state: &str) -> StatusRow {
    StatusRow {
        l_uuid: format!("uuid{i:07}"),
        state: state.into(),
        last_code: 200,
        last_reason: "OK".into(),
        last_success: 1_700_000_000,
        next_refresh: 1_700_003_000,
        binding_expires: 1_700_003_600,
        failures: 0,
        updated_at: 1_700_000_000,
        node_id: String::new(),
    }
}

fn measure(name: &str, url: &str, rows: usize) -> Result<(), String> {
    let mut store = Store::open(url).map_err(|e| e.to_string())?;
    let data: Vec<RawRow> = (0..rows)
        .map(|i| {
            RawRow::new(
                &format!("uuid{i:07}"),
                &format!("user{i:07}"),
                "example.com",
            )
        })
        .collect();
    let defaults = RowDefaults {
        contact_addr: "127.0.0.1:5062".into(),
        sockets: Vec::new(),
    };
    let (r, insert) = timed(|| store.insert(&data));
    r.map_err(|e| e.to_string())?;
    let (loaded, load) = timed(|| store.load(&defaults));
    let loaded = loaded.map_err(|e| e.to_string())?;
    assert_eq!(loaded.records.len(), rows);
    let all: Vec<StatusRow> = (0..rows).map(|i| status_row(i, "registering")).collect();
    let (r, status_all) = timed(|| store.write_status(&all, &[], StatusScope::Everything));
    r.map_err(|e| e.to_string())?;
    let some: Vec<StatusRow> = (0..rows / 100)
        .map(|i| status_row(i, "registered"))
        .collect();
    let (r, status_some) = timed(|| store.write_status(&some, &[], StatusScope::Everything));
    r.map_err(|e| e.to_string())?;
    let gone: Vec<String> = (rows - rows / 100..rows)
        .map(|i| format!("uuid{i:07}"))
        .collect();
    let (r, status_gone) = timed(|| store.write_status(&[], &gone, StatusScope::Everything));
    r.map_err(|e| e.to_string())?;
    let ms = |d: Duration| format!("{:.0} ms", d.as_secs_f64() * 1000.0);
    println!(
        "| {name:<10} | {:>9} | {:>13} | {:>13} | {:>13} | {:>14} |",
        ms(insert),
        ms(load),
        ms(status_all),
        ms(status_some),
        ms(status_gone)
    );
    Ok(())
}

fn main() {
    let rows: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100_000)
        .clamp(100, 2_000_000);
    println!("{rows} rows (status: all rows written, then 1% changed, then 1% removed)\n");
    println!(
        "| engine     | insert    | load+validate | status, all   | status, 1%    | status, 1% gone |"
    );
    println!(
        "|------------|-----------|---------------|---------------|---------------|----------------|"
    );
    let dir = std::env::temp_dir().join(format!("uacreg-store-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let sqlite = format!("sqlite://{}/bench.db", dir.display());
    if let Err(e) = measure("SQLite", &sqlite, rows) {
        eprintln!("SQLite: {e}");
    }
    let _ = std::fs::remove_dir_all(&dir);
    for (name, engine) in [
        ("PostgreSQL", Engine::Postgres),
        ("MariaDB", Engine::MariaDb),
    ] {
        if !engine_available(engine) {
            println!("| {name:<10} | not installed (scripts/install-test-deps) |");
            continue;
        }
        match DbServer::start(engine) {
            Ok(server) => {
                if let Err(e) = measure(name, &server.url(), rows) {
                    eprintln!("{name}: {e}");
                }
            }
            Err(e) => eprintln!("{name}: server did not start: {e}"),
        }
    }
}

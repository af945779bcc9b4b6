//! `uacregd demo`: the whole gateway on one machine in one command.
//!
//! Starts the in-repo test registrar on loopback, writes N rows pointing at it into a fresh
//! SQLite file, starts the real daemon on that file, waits until every row is registered (or the
//! timeout passes), and prints the table the way `uacregctl reg_dump` does, with the figures an
//! operator asks first: time to register everything, REGISTERs per row, peak memory.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::config::Config;
use crate::daemon::Daemon;
use crate::rpc::{RecordView, RpcClient};
use crate::sip::digest::Algorithm;
use crate::store::{RawRow, Store};
use crate::testing::registrar::{RegistrarConfig, TestRegistrar};

pub struct DemoOptions {
    pub rows: usize,
    pub db_path: PathBuf,
    pub keep_running: bool,
    pub timeout: Duration,
}

const DOMAIN: &str = "registrar.test";

/// Rows `uuid000000…` registering `user000000…@registrar.test` through `registrar`.
pub fn demo_rows(count: usize, registrar: std::net::SocketAddr) -> Vec<RawRow> {
    (0..count)
        .map(|i| {
            let mut row = RawRow::new(&format!("uuid{i:06}"), &format!("user{i:06}"), DOMAIN);
            row.l_username = format!("local{i:06}");
            row.l_domain = "gw.test".into();
            row.realm = DOMAIN.into();
            row.auth_username = format!("user{i:06}");
            row.auth_password = crate::registration::Secret::new(format!("pw-user{i:06}"));
            row.auth_proxy = format!("sip:{registrar}");
            row.expires = 3600;
            row
        })
        .collect()
}

/// Peak resident set size of this process in KiB (Linux `VmHWM`).
pub fn peak_rss_kib() -> Option<u64> {
    proc_status_kib("VmHWM:")
}

/// Current resident set size of this process in KiB (Linux `VmRSS`).
pub fn current_rss_kib() -> Option<u64> {
    proc_status_kib("VmRSS:")
}

fn proc_status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
}

pub async fn run(mut config: Config, options: DemoOptions) -> anyhow::Result<()> {
    let users: HashMap<String, String> = (0..options.rows)
        .map(|i| (format!("user{i:06}"), format!("pw-user{i:06}")))
        .collect();
    let registrar = TestRegistrar::start(RegistrarConfig {
        bind: "127.0.0.1:0".parse()?,
        realm: DOMAIN.into(),
        users,
        qop: true,
        algorithm: Algorithm::Md5,
        keep_history: false,
        ..RegistrarConfig::default()
    })
    .await
    .context("starting the test registrar")?;
    println!(
        "test registrar listening on udp:{} (realm {DOMAIN})",
        registrar.local_addr()
    );

    let _ = std::fs::remove_file(&options.db_path);
    let db_url = format!("sqlite://{}", options.db_path.display());
    let rows = demo_rows(options.rows, registrar.local_addr());
    {
        let url = db_url.clone();
        tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
            let mut store = Store::open(&url)?;
            store.insert(&rows)?;
            Ok(())
        })
        .await??;
    }
    println!(
        "wrote {} rows to {}",
        options.rows,
        options.db_path.display()
    );

    config.db_url = db_url;
    // The demo's own client needs the token the daemon will ask for (`--rpc-token`).
    let rpc_token = config.rpc_token.clone();
    let started = Instant::now();
    let daemon = Daemon::start(config).await?;
    println!(
        "uacregd: SIP on udp:{}, JSON-RPC on {}",
        daemon.sip_addr(),
        daemon.rpc_url()
    );

    let mut registered = 0;
    let deadline = started + options.timeout;
    while Instant::now() < deadline {
        let counts = daemon.gateway().driver.status_counts().await?;
        registered = counts.get("registered").copied().unwrap_or(0);
        if registered >= options.rows {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed();
    let rss_registered = current_rss_kib();

    let client = RpcClient::with_token(&daemon.rpc_url(), rpc_token.as_deref())?;
    let dump_started = Instant::now();
    let dump: Vec<RecordView> = client.request("uac.reg_dump", &[]).await?;
    let dump_time = dump_started.elapsed();
    print_dump(&dump, 20);

    let stats = registrar.stats();
    let sent = daemon.gateway().driver.stats().await?;
    println!();
    println!(
        "registered {registered}/{} rows in {:.3} s ({:.0} rows/s)",
        options.rows,
        elapsed.as_secs_f64(),
        registered as f64 / elapsed.as_secs_f64().max(1e-9)
    );
    println!(
        "REGISTERs per row: {:.2} ({} requests, {} retransmissions); registrar holds {} bindings",
        sent.registers_sent as f64 / options.rows.max(1) as f64,
        sent.registers_sent,
        sent.transactions.retransmissions,
        registrar.binding_count()
    );
    println!(
        "registrar: {} requests, {} challenges, {} accepted",
        stats.requests, stats.challenges, stats.ok
    );
    println!(
        "uac.reg_dump of {} records took {:.1} ms",
        dump.len(),
        dump_time.as_secs_f64() * 1000.0
    );
    if let (Some(registered_kib), Some(peak_kib)) = (rss_registered, peak_rss_kib()) {
        println!(
            "RSS (gateway + registrar in one process): {:.1} MiB once all were registered; \
             peak {:.1} MiB (includes building and parsing the reg_dump answer)",
            registered_kib as f64 / 1024.0,
            peak_kib as f64 / 1024.0
        );
    }

    if options.keep_running {
        println!(
            "running; try: uacregctl --rpc {} reg_dump   (Ctrl-C stops)",
            daemon.rpc_url()
        );
        daemon.run_until_signal().await?;
    } else {
        daemon.stop().await;
    }
    registrar.stop().await;
    if registered < options.rows {
        anyhow::bail!("only {registered} of {} rows registered", options.rows);
    }
    Ok(())
}

/// The first `limit` records, one line each, columns one space apart with the figures
/// right-aligned.
fn print_dump(dump: &[RecordView], limit: usize) {
    use comfy_table::{CellAlignment, ColumnConstraint, Table, Width, presets::NOTHING};
    let mut table = Table::new();
    table.load_preset(NOTHING);
    table.set_header(vec!["L_UUID", "AOR", "STATE", "CODE", "EXPIRES"]);
    let show = |n: Option<u32>| n.map(|n| n.to_string()).unwrap_or_default();
    for row in dump.iter().take(limit) {
        table.add_row(vec![
            row.l_uuid.to_string(),
            format!("{}@{}", row.r_username, row.r_domain),
            row.state.to_string(),
            show(row.last_code.map(u32::from)),
            show(row.granted_expires),
        ]);
    }
    // Minimum widths, the one-space gap included.
    let widths = [13u16, 29, 13, 6, 8];
    for (column, width) in table.column_iter_mut().zip(widths) {
        let gap = if column.index + 1 < widths.len() {
            1
        } else {
            0
        };
        column.set_padding((0, gap));
        column.set_constraint(ColumnConstraint::LowerBoundary(Width::Fixed(width)));
        if column.index >= 3 {
            column.set_cell_alignment(CellAlignment::Right);
        }
    }
    println!();
    println!("{}", table.trim_fmt());
    if dump.len() > limit {
        println!("… {} more", dump.len() - limit);
    }
}

//! The web console at 100,000 rows (issue 17): how long `uacreg.rows` takes for the table's
//! first page, a state filter, a search and a sort, `uacreg.overview` and `uacreg.row`; and
//! whether a console polling like the page does (overview and a page every 2 s) makes due
//! refreshes late, comparing the driver's timer lateness over a window without the console and
//! a window with it.
//!
//! `cargo bench --bench console -- [--rows 100000] [--watch-secs 60] [--expires 120]`
//!
//! The daemon runs in this process against the in-repo registrar on 127.0.0.1, rows in a
//! fresh SQLite file; 1 % of them have a realm the registrar does not offer (realm_mismatch).
//! Every wait is bounded. Figures only: nothing here passes or fails on a time.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use uacreg::RpcClient;
use uacreg::store::Store;
use uacreg::testing::registrar::{RegistrarConfig, TestRegistrar};

struct Args {
    rows: usize,
    watch: Duration,
    expires: i64,
}

fn args() -> Args {
    let mut args = Args {
        rows: 100_000,
        watch: Duration::from_secs(60),
        expires: 120,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().and_then(|v| v.parse::<u64>().ok());
        match arg.as_str() {
            "--rows" => args.rows = value().map_or(args.rows, |v| v as usize),
            "--watch-secs" => args.watch = value().map_or(args.watch, Duration::from_secs),
            "--expires" => args.expires = value().map_or(args.expires, |v| v as i64),
            // cargo bench passes --bench; anything else is a mistake worth saying.
            "--bench" => {}
            other => eprintln!("console bench: ignoring {other}"),
        }
    }
    args
}

fn object(value: Value) -> serde_json::Map<String, Value> {
    value.as_object().cloned().unwrap_or_default()
}

/// Median and slowest of `runs` calls.
async fn time(
    rpc: &RpcClient,
    what: &str,
    method: &str,
    params: Value,
    runs: usize,
) -> (Duration, Duration) {
    let mut took = Vec::with_capacity(runs);
    for _ in 0..runs {
        let started = Instant::now();
        let answer = if params.is_null() {
            rpc.call(method, &[]).await
        } else {
            rpc.call_named(method, object(params.clone())).await
        };
        took.push(started.elapsed());
        if let Err(e) = answer {
            panic!("{what}: {e}");
        }
    }
    took.sort();
    let median = took[took.len() / 2];
    let slowest = *took.last().unwrap_or(&median);
    println!(
        "{what:<44} median {:>7.1} ms   slowest {:>7.1} ms",
        median.as_secs_f64() * 1000.0,
        slowest.as_secs_f64() * 1000.0
    );
    (median, slowest)
}

/// Due timers that ran in a window, and how late: (count, mean ms, share later than 100 ms).
async fn lateness_over(
    daemon: &uacreg::Daemon,
    window: impl std::future::Future<Output = ()>,
) -> (u64, f64, f64) {
    let before = daemon
        .gateway()
        .driver
        .stats()
        .await
        .unwrap()
        .timer_lateness;
    window.await;
    let after = daemon
        .gateway()
        .driver
        .stats()
        .await
        .unwrap()
        .timer_lateness;
    let count = after.count - before.count;
    let mean_ms = if count == 0 {
        0.0
    } else {
        (after.sum_seconds - before.sum_seconds) * 1000.0 / count as f64
    };
    // The buckets are cumulative: index 4 counts every timer within 100 ms.
    let within_100ms = after.counts[4] - before.counts[4];
    let late_share = if count == 0 {
        0.0
    } else {
        1.0 - within_100ms as f64 / count as f64
    };
    (count, mean_ms, late_share)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = args();
    let users: HashMap<String, String> = (0..args.rows)
        .map(|i| (format!("user{i:06}"), format!("pw-user{i:06}")))
        .collect();
    let registrar = TestRegistrar::start(RegistrarConfig {
        users,
        ..RegistrarConfig::default()
    })
    .await
    .expect("registrar starts");
    let mut rows = uacreg::demo::demo_rows(args.rows, registrar.local_addr());
    for (i, row) in rows.iter_mut().enumerate() {
        row.expires = args.expires;
        if i % 100 == 50 {
            row.realm = "wrong.realm.test".into();
        }
    }
    let dir = std::env::temp_dir().join(format!("uacreg-console-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let db_url = format!("sqlite://{}", dir.join("uacreg.db").display());
    Store::open(&db_url)
        .and_then(|mut store| store.insert(&rows))
        .expect("rows written");
    drop(rows);

    let mut config = uacreg::Config {
        db_url,
        sip_listen: "127.0.0.1:0".parse().unwrap(),
        rpc_listen: "127.0.0.1:0".parse().unwrap(),
        metrics_listen: None,
        unregister_on_shutdown: false,
        ..uacreg::Config::default()
    };
    config.finish().expect("a valid configuration");
    let started = Instant::now();
    let daemon = uacreg::Daemon::start(config).await.expect("daemon starts");
    let expected = args.rows - args.rows.div_ceil(100);
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let counts = daemon.gateway().driver.status_counts().await.unwrap();
        let registered = counts.get("registered").copied().unwrap_or(0);
        if registered >= expected {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {registered} of {expected} registered in 600 s"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!(
        "{} rows, {} registered after {:.1} s (grants of {} s)",
        args.rows,
        expected,
        started.elapsed().as_secs_f64(),
        args.expires
    );

    let rpc = RpcClient::new(&daemon.rpc_url()).expect("client");
    println!("\nanswer times over JSON-RPC (goal: first page < 100 ms, a filter < 300 ms)");
    time(
        &rpc,
        "uacreg.rows first page (50)",
        "uacreg.rows",
        json!({}),
        9,
    )
    .await;
    time(
        &rpc,
        "uacreg.rows page 1,000 (offset 50,000)",
        "uacreg.rows",
        json!({"offset": 50_000}),
        9,
    )
    .await;
    time(
        &rpc,
        "uacreg.rows state = realm_mismatch",
        "uacreg.rows",
        json!({"state": "realm_mismatch"}),
        9,
    )
    .await;
    time(
        &rpc,
        "uacreg.rows search \"user012345@\"",
        "uacreg.rows",
        json!({"search": "user012345@"}),
        9,
    )
    .await;
    time(
        &rpc,
        "uacreg.rows sort by state, most urgent first",
        "uacreg.rows",
        json!({"sort": "state"}),
        9,
    )
    .await;
    time(&rpc, "uacreg.overview", "uacreg.overview", Value::Null, 9).await;
    time(
        &rpc,
        "uacreg.row",
        "uacreg.row",
        json!({"l_uuid": "uuid000050"}),
        9,
    )
    .await;

    println!(
        "\nrefresh timer lateness, {} s without the console, then {} s with it polling",
        args.watch.as_secs(),
        args.watch.as_secs()
    );
    let quiet = lateness_over(&daemon, tokio::time::sleep(args.watch)).await;
    let polling = lateness_over(&daemon, async {
        let until = Instant::now() + args.watch;
        while Instant::now() < until {
            let _ = rpc.call("uacreg.overview", &[]).await;
            let _ = rpc.call_named("uacreg.rows", object(json!({}))).await;
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    })
    .await;
    for (what, (count, mean_ms, late)) in [("without console", quiet), ("console polling", polling)]
    {
        println!(
            "{what:<16} {count:>8} timers ran, mean lateness {mean_ms:>6.2} ms, later than 100 ms: {:.3} %",
            late * 100.0
        );
    }
    daemon.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

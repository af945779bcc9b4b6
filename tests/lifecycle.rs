//! The real `uacregd` binary ends with an error, and says why, when a task it cannot live
//! without dies; and ends cleanly when asked to stop.
//!
//! Needs the `fault-injection` feature (the test-only `uacreg.debug_panic` RPC method);
//! `scripts/test` enables it.

mod support;

use std::time::{Duration, Instant};

use support::process::TempDir;
use support::uacregd::Uacregd;

const UACREGD: &str = env!("CARGO_BIN_EXE_uacregd");

fn start(dir: &TempDir) -> Uacregd {
    let db = format!("sqlite://{}", dir.path().join("uacreg.db").display());
    Uacregd::start(UACREGD, dir.path(), &db, "").expect("uacregd starts")
}

#[test]
fn a_panicking_driver_ends_the_process_with_an_error_and_the_reason() {
    let dir = TempDir::new("uacreg-lifecycle-panic").unwrap();
    let mut daemon = start(&dir);
    let status = daemon.call("uacreg.status", "").unwrap();
    assert!(status.contains("\"registrations\""), "{status}");

    // The call itself fails: the driver is gone before it answers, or the whole process is.
    let asked = Instant::now();
    let answer = daemon.call("uacreg.debug_panic", "");
    assert!(
        !matches!(&answer, Ok(text) if text.contains("\"result\"")),
        "{answer:?}"
    );
    // Issue 13: exits within a second of the panic.
    let exited = daemon
        .exits_within(Duration::from_secs(10))
        .map(|_| asked.elapsed());
    assert!(
        exited.is_some_and(|t| t < Duration::from_secs(1)),
        "uacregd still running {exited:?} after its driver panicked:\n{}",
        daemon.log()
    );
    eprintln!("exited {exited:?} after the panic was asked for");
    let exit = daemon.stop(Duration::from_secs(1)).expect("exit status");
    assert_eq!(exit.code(), Some(70), "{exit:?}\n{}", daemon.log());
    let log = daemon.log();
    let reason = log
        .lines()
        .find(|line| line.contains("essential task ended"))
        .unwrap_or_else(|| panic!("no reason logged:\n{log}"));
    assert!(reason.contains("ERROR"), "{reason}");
    assert!(reason.contains("task=driver"), "{reason}");
    assert!(
        reason.contains("panicked: fault injection: uacreg.debug_panic"),
        "{reason}"
    );
}

#[test]
fn a_daemon_asked_to_stop_exits_cleanly() {
    let dir = TempDir::new("uacreg-lifecycle-stop").unwrap();
    let mut daemon = start(&dir);
    // SIGTERM from the watchdog: an orderly stop, status 0, nothing logged as ended.
    let exit = daemon.stop(Duration::from_secs(10)).expect("exit status");
    assert!(exit.success(), "{exit:?}\n{}", daemon.log());
    assert!(
        !daemon.log().contains("essential task ended"),
        "{}",
        daemon.log()
    );
}

#[test]
fn a_table_of_broken_rows_is_logged_in_a_bounded_number_of_lines() {
    let dir = TempDir::new("uacreg-lifecycle-broken").unwrap();
    let db = format!("sqlite://{}", dir.path().join("uacreg.db").display());
    // 150 rows with a contact address that is not host[:port]; one good row.
    let mut rows = uacreg::demo::demo_rows(151, "127.0.0.1:9".parse().unwrap());
    for row in rows.iter_mut().skip(1) {
        row.contact_addr = "sip:gw@127.0.0.1:5062".into();
    }
    let mut store = uacreg::store::Store::open(&db).expect("open store");
    store.insert(&rows).expect("insert rows");
    drop(store);
    let mut daemon = Uacregd::start(UACREGD, dir.path(), &db, "").expect("uacregd starts");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !daemon.log().contains("rows loaded") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = daemon.log();
    let one_by_one = log.matches("row not loaded").count();
    let _ = daemon.stop(Duration::from_secs(10));
    // One line each for the first hundred, one line for the rest: the count and where to look.
    assert_eq!(one_by_one, 100, "{log}");
    assert!(
        log.contains("50 more rows not loaded (150 in all)"),
        "{log}"
    );
    assert!(log.contains("invalid=150"), "{log}");
}

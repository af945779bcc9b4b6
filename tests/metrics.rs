//! The metrics page of a running daemon with one registered row: what it counts, and that
//! Prometheus' own checker (`promtool check metrics`) accepts it.

mod common;
mod support;

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{
    TempDir, metric, registered_count, registrar, scrape, test_config, wait_until, write_rows,
};
use support::process::{find_program, require};
use uacreg::Daemon;

/// A daemon whose one row is registered with the in-repo registrar.
async fn registered_daemon(dir: &TempDir) -> (uacreg::testing::registrar::TestRegistrar, Daemon) {
    let registrar = registrar(1).await;
    write_rows(
        &dir.db_url(),
        &uacreg::demo::demo_rows(1, registrar.local_addr()),
    );
    let daemon = Daemon::start(test_config(&dir.db_url())).await.unwrap();
    let registered = wait_until(Duration::from_secs(10), || async {
        registered_count(&daemon).await == 1
    })
    .await;
    assert!(registered, "the row never registered");
    (registrar, daemon)
}

/// The body of an HTTP answer.
fn body(answer: &str) -> &str {
    answer
        .split_once("\r\n\r\n")
        .map(|(_, body)| body)
        .expect("a whole HTTP answer")
}

#[tokio::test]
async fn the_page_counts_a_registration() {
    let dir = TempDir::new("metrics-count");
    let (_registrar, daemon) = registered_daemon(&dir).await;
    let page = scrape(&daemon).await;
    assert!(
        page.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4; charset=utf-8\r\n"),
        "{page}"
    );
    assert_eq!(
        metric(&page, "uacreg_registrations{state=\"registered\"}"),
        1.0
    );
    assert_eq!(
        metric(&page, "uacreg_registrations{state=\"invalid\"}"),
        0.0
    );
    assert_eq!(metric(&page, "uacreg_registrations_granted_total"), 1.0);
    // A 401 challenge, then the 200: two REGISTERs, two answers over UDP (more if a slow
    // answer drew a retransmission, which the registrar answers again).
    assert_eq!(metric(&page, "uacreg_registers_sent_total"), 2.0);
    assert_eq!(metric(&page, "uacreg_responses_total{code=\"401\"}"), 1.0);
    assert_eq!(metric(&page, "uacreg_responses_total{code=\"200\"}"), 1.0);
    assert!(metric(&page, "uacreg_messages_received_total{transport=\"udp\"}") >= 2.0);
    assert_eq!(
        metric(
            &page,
            "uacreg_messages_received_total{transport=\"tcp_tls\"}"
        ),
        0.0
    );
    assert_eq!(metric(&page, "uacreg_transactions_in_flight"), 0.0);
    assert_eq!(metric(&page, "uacreg_database_reachable"), 1.0);
    daemon.stop().await;
}

#[tokio::test]
async fn promtool_accepts_the_page() {
    let Some(promtool) = find_program("promtool", &["/usr/bin/promtool"]) else {
        require("promtool", false, || "not installed".to_string());
        return;
    };
    let dir = TempDir::new("metrics-promtool");
    let (_registrar, daemon) = registered_daemon(&dir).await;
    let answer = scrape(&daemon).await;
    daemon.stop().await;

    let mut check = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs");
    check
        .stdin
        .take()
        .expect("stdin piped")
        .write_all(body(&answer).as_bytes())
        .expect("promtool reads the page");
    let outcome = check.wait_with_output().expect("promtool ends");
    assert!(
        outcome.status.success(),
        "promtool check metrics: {}\n{}{}\n{answer}",
        outcome.status,
        String::from_utf8_lossy(&outcome.stdout),
        String::from_utf8_lossy(&outcome.stderr),
    );
}

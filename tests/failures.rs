//! One test per failure class: the real daemon against the in-repo registrar told to misbehave,
//! asserting the row's state, when it will try next, and what the registrar saw.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use serde_json::Value;
use uacreg::demo::demo_rows;
use uacreg::sip::digest::Algorithm;
use uacreg::testing::registrar::{Behavior, RegistrarConfig, TestRegistrar};

/// One row against a registrar that behaves as `behavior` from the start. Timers are short so a
/// silent registrar times out in 3.2 s, and the first retry comes after 2–4 s.
async fn one_row(behavior: Behavior, password: &str) -> (TestRegistrar, TempDir, uacreg::Daemon) {
    let registrar = TestRegistrar::start(RegistrarConfig {
        users: [("user000000".to_string(), "pw-user000000".to_string())].into(),
        algorithm: Algorithm::Md5,
        ..RegistrarConfig::default()
    })
    .await
    .unwrap();
    registrar.set_behavior(behavior);
    let dir = TempDir::new("failures");
    let mut rows = demo_rows(1, registrar.local_addr());
    rows[0].auth_password = uacreg::registration::Secret::new(password);
    rows[0].expires = 60;
    write_rows(&dir.db_url(), &rows);
    let mut config = test_config(&dir.db_url());
    config.sip.t1 = Duration::from_millis(50);
    config.sip.t2 = Duration::from_millis(400);
    config.retry.first_retry = Duration::from_secs(4);
    let daemon = uacreg::Daemon::start(config).await.unwrap();
    (registrar, dir, daemon)
}

async fn info(daemon: &uacreg::Daemon) -> Value {
    rpc(daemon)
        .call("uac.reg_info", &["l_uuid".into(), "uuid000000".into()])
        .await
        .unwrap()
}

async fn wait_state(daemon: &uacreg::Daemon, state: &str, limit: Duration) -> Value {
    let reached = wait_until(limit, || async { info(daemon).await["state"] == state }).await;
    let now = info(daemon).await;
    assert!(reached, "never reached {state}: {now}");
    now
}

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Seconds until the row's next attempt.
fn next_in(record: &Value) -> Option<i64> {
    record["next_refresh"].as_i64().map(|at| at - now_unix())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interval_too_brief_is_retried_at_once_with_min_expires() {
    let (registrar, _dir, daemon) = one_row(
        Behavior::IntervalTooBrief { min_expires: 600 },
        "pw-user000000",
    )
    .await;
    let record = wait_state(&daemon, "registered", Duration::from_secs(10)).await;
    assert_eq!(record["granted_expires"], 600);
    let seen = registrar.requests_for("user000000");
    assert!(seen.iter().any(|r| r.code == 423));
    assert_eq!(seen.last().unwrap().expires, Some(600));
    assert_eq!(registrar.bindings("user000000").len(), 1);
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unavailable_with_retry_after_is_honoured() {
    let behavior = Behavior::Reject {
        code: 503,
        reason: "Service Unavailable".into(),
        retry_after: Some(6),
    };
    let (registrar, _dir, daemon) = one_row(behavior, "pw-user000000").await;
    let record = wait_state(&daemon, "retry_wait", Duration::from_secs(10)).await;
    assert_eq!(record["last_code"], 503);
    let next = next_in(&record).expect("a retry is scheduled");
    assert!(
        (4..=10).contains(&next),
        "next attempt in {next} s, asked for 6 s"
    );
    assert_eq!(registrar.requests_for("user000000").len(), 1);
    registrar.set_behavior(Behavior::Normal);
    wait_state(&daemon, "registered", Duration::from_secs(15)).await;
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unavailable_without_retry_after_backs_off() {
    let behavior = Behavior::Reject {
        code: 503,
        reason: "Service Unavailable".into(),
        retry_after: None,
    };
    let (registrar, _dir, daemon) = one_row(behavior, "pw-user000000").await;
    let record = wait_state(&daemon, "retry_wait", Duration::from_secs(10)).await;
    let next = next_in(&record).expect("a retry is scheduled");
    assert!(
        (1..=5).contains(&next),
        "first retry in {next} s (4 s with 50 % jitter)"
    );
    assert_eq!(record["failures"], 1);
    // The second retry waits about twice as long.
    let second = wait_until(Duration::from_secs(10), || async {
        info(&daemon).await["failures"] == 2
    })
    .await;
    assert!(second);
    let next = next_in(&info(&daemon).await).unwrap();
    assert!(
        (3..=9).contains(&next),
        "second retry in {next} s (8 s with 50 % jitter)"
    );
    assert_eq!(registrar.requests_for("user000000").len(), 2);
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silence_is_a_timeout() {
    let (registrar, _dir, daemon) = one_row(Behavior::Silent, "pw-user000000").await;
    let record = wait_state(&daemon, "retry_wait", Duration::from_secs(10)).await;
    assert_eq!(record["last_code"], 408);
    // One request, retransmitted by timer E; the registrar saw each copy.
    let seen = registrar.requests_for("user000000");
    assert!(seen.len() >= 4, "retransmissions: {}", seen.len());
    assert!(
        seen.iter().all(|r| r.cseq == seen[0].cseq),
        "retransmissions reuse the request"
    );
    let status = rpc(&daemon).call("uacreg.status", &[]).await.unwrap();
    assert!(status["sip"]["transactions"]["timeouts"].as_u64().unwrap() >= 1);
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forbidden_is_permanent() {
    let behavior = Behavior::Reject {
        code: 403,
        reason: "Forbidden".into(),
        retry_after: None,
    };
    let (registrar, _dir, daemon) = one_row(behavior, "pw-user000000").await;
    let record = wait_state(&daemon, "failed", Duration::from_secs(10)).await;
    assert_eq!(record["last_code"], 403);
    assert_eq!(record["next_refresh"], Value::Null);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        registrar.requests_for("user000000").len(),
        1,
        "no retry after 403"
    );
    // The operator retries it once the provider is fixed.
    registrar.set_behavior(Behavior::Normal);
    rpc(&daemon)
        .call("uac.reg_enable", &["l_uuid".into(), "uuid000000".into()])
        .await
        .unwrap();
    wait_state(&daemon, "registered", Duration::from_secs(10)).await;
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_is_an_auth_failure() {
    let (registrar, _dir, daemon) = one_row(Behavior::Normal, "not-the-password").await;
    let record = wait_state(&daemon, "auth_failed", Duration::from_secs(10)).await;
    assert_eq!(record["next_refresh"], Value::Null);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let seen = registrar.requests_for("user000000");
    assert_eq!(seen.len(), 2, "one challenge, answered once");
    assert_eq!(seen[1].authorization_valid, Some(false));
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_nonce_is_answered_without_a_failure() {
    let (registrar, _dir, daemon) = one_row(Behavior::StaleNonce, "pw-user000000").await;
    let record = wait_state(&daemon, "registered", Duration::from_secs(10)).await;
    assert_eq!(record["failures"], 0);
    let seen = registrar.requests_for("user000000");
    assert_eq!(seen.len(), 3, "plain, answered (stale), answered again");
    assert!(
        seen[1..]
            .iter()
            .all(|r| r.authorization_valid == Some(true))
    );
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_show_states_responses_retries_and_latency() {
    let behavior = Behavior::Reject {
        code: 503,
        reason: "Service Unavailable".into(),
        retry_after: Some(1),
    };
    let (registrar, _dir, daemon) = one_row(behavior, "pw-user000000").await;
    wait_state(&daemon, "retry_wait", Duration::from_secs(10)).await;
    let text = scrape(&daemon).await;
    assert_eq!(
        metric(&text, "uacreg_registrations{state=\"retry_wait\"}"),
        1.0
    );
    assert_eq!(metric(&text, "uacreg_responses_total{code=\"503\"}"), 1.0);
    assert!(metric(&text, "uacreg_retries_total") >= 1.0);
    registrar.set_behavior(Behavior::Normal);
    wait_state(&daemon, "registered", Duration::from_secs(10)).await;
    let text = scrape(&daemon).await;
    assert_eq!(
        metric(&text, "uacreg_registrations{state=\"registered\"}"),
        1.0
    );
    assert_eq!(metric(&text, "uacreg_responses_total{code=\"200\"}"), 1.0);
    assert_eq!(metric(&text, "uacreg_responses_total{code=\"401\"}"), 1.0);
    assert_eq!(
        metric(&text, "uacreg_transaction_latency_seconds_count"),
        3.0
    );
    assert_eq!(
        metric(
            &text,
            "uacreg_transaction_latency_seconds_bucket{le=\"+Inf\"}"
        ),
        3.0
    );
    assert!(metric(&text, "uacreg_registers_sent_total") >= 3.0);
    daemon.stop().await;
}

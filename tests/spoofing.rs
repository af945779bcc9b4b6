//! Forged responses against the real daemon: a stranger who saw our REGISTERs sprays final
//! responses at the SIP port — with the right branch but another Call-ID or CSeq, with
//! everything right but from another address or over a connection, and with guessed branches.
//! None of them may touch a registration: they are counted and dropped, the transactions keep
//! retransmitting, and every row goes on registering and refreshing.

mod common;
mod support;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpStream, UdpSocket};
use uacreg::demo::demo_rows;
use uacreg::testing::registrar::{Behavior, SeenRequest, TestRegistrar};

use support::stranger::{guessed_branches, register_response, with_wrong_ids};

const ROWS: usize = 20;

fn user(i: usize) -> String {
    format!("user{i:06}")
}

fn l_uuid(i: usize) -> String {
    format!("uuid{i:06}")
}

async fn sip_stats(client: &uacreg::RpcClient) -> Value {
    client.call("uacreg.status", &[]).await.unwrap()["sip"].clone()
}

fn counter(stats: &Value, name: &str) -> u64 {
    stats[name]
        .as_u64()
        .unwrap_or_else(|| panic!("{name} in {stats}"))
}

/// The last REGISTER the registrar saw from each user.
fn last_requests(registrar: &TestRegistrar) -> Vec<SeenRequest> {
    (0..ROWS)
        .map(|i| {
            registrar
                .requests_for(&user(i))
                .pop()
                .expect("a REGISTER seen")
        })
        .collect()
}

/// Asks every row to register again now.
async fn refresh_all(client: &uacreg::RpcClient) {
    for i in 0..ROWS {
        let answer = client.call("uac.reg_refresh", &[l_uuid(i)]).await;
        assert!(answer.is_ok(), "{answer:?}");
    }
}

/// The final codes of each row in `uac.reg_dump`.
async fn states(client: &uacreg::RpcClient) -> HashMap<String, (String, i64)> {
    let dump = client.call("uac.reg_dump", &[]).await.unwrap();
    dump.as_array()
        .unwrap()
        .iter()
        .map(|record| {
            (
                record["l_uuid"].as_str().unwrap().to_string(),
                (
                    record["state"].as_str().unwrap().to_string(),
                    record["last_code"].as_i64().unwrap_or(0),
                ),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_responses_are_dropped_counted_and_change_nothing() {
    let registrar = registrar(ROWS).await;
    let dir = TempDir::new("spoofing");
    write_rows(&dir.db_url(), &demo_rows(ROWS, registrar.local_addr()));
    let daemon = start_daemon(&dir.db_url()).await;
    let client = rpc(&daemon);
    let all_registered = || async { registered_count(&daemon).await == ROWS };
    assert!(wait_until(Duration::from_secs(30), all_registered).await);
    let sip = daemon.sip_addr();

    // The registrar goes quiet and every row registers again: twenty REGISTERs in flight, each
    // retransmitted on timer E, that a stranger on the path has seen.
    registrar.set_behavior(Behavior::Silent);
    let seen_before: Vec<usize> = (0..ROWS)
        .map(|i| registrar.requests_for(&user(i)).len())
        .collect();
    refresh_all(&client).await;
    let captured = wait_until(Duration::from_secs(10), || async {
        (0..ROWS).all(|i| registrar.requests_for(&user(i)).len() > seen_before[i])
    })
    .await;
    assert!(captured, "every row sent its REGISTER");
    let in_flight = last_requests(&registrar);
    let before = sip_stats(&client).await;

    // The spray: 403 Forbidden (a row that took one would stop registering for good), 200 with
    // an absurd expiry, 503.
    let near = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let other_host = UdpSocket::bind("127.0.0.2:0").await.unwrap();
    let mut stream = TcpStream::connect(sip).await.unwrap();
    let (mut wrong_ids, mut wrong_source, mut unknown) = (0u64, 0u64, 0u64);
    for request in &in_flight {
        let branch = request.branch.clone().expect("a Via branch");
        assert!(branch.starts_with("z9hG4bKt"), "{branch}");
        let (call_id, cseq) = (request.call_id.as_str(), request.cseq);
        // Our branch, another Call-ID, CSeq number or method.
        for bytes in with_wrong_ids(&branch, call_id, cseq) {
            near.send_to(&bytes, sip).await.unwrap();
            wrong_ids += 1;
        }
        // Everything right, from where the request did not go.
        let exact = register_response(403, &branch, call_id, cseq, "REGISTER");
        near.send_to(&exact, sip).await.unwrap();
        other_host.send_to(&exact, sip).await.unwrap();
        stream.write_all(&exact).await.unwrap();
        wrong_source += 3;
        // Guessed branches.
        for guess in guessed_branches(&branch, cseq) {
            let bytes = register_response(503, &guess, call_id, cseq, "REGISTER");
            near.send_to(&bytes, sip).await.unwrap();
            unknown += 1;
        }
    }
    stream.flush().await.unwrap();
    let total = wrong_ids + wrong_source + unknown;

    let delta = |now: &Value, name: &str| counter(now, name) - counter(&before, name);
    let counted = wait_until(Duration::from_secs(10), || async {
        delta(&sip_stats(&client).await, "unmatched_responses") >= total
    })
    .await;
    let after = sip_stats(&client).await;
    assert!(counted, "{after}");
    assert_eq!(delta(&after, "responses_wrong_ids"), wrong_ids, "{after}");
    assert_eq!(
        delta(&after, "responses_wrong_source"),
        wrong_source,
        "{after}"
    );
    assert_eq!(
        delta(&after, "responses_unknown_branch"),
        unknown,
        "{after}"
    );
    assert_eq!(delta(&after, "unmatched_responses"), total, "{after}");
    // Not one was taken as an answer.
    assert!(after["responses"].get("403").is_none(), "{after}");
    assert!(after["responses"].get("503").is_none(), "{after}");
    assert_eq!(
        counter(&after["transactions"], "completed"),
        counter(&before["transactions"], "completed"),
        "{after}"
    );
    for (l_uuid, (state, code)) in states(&client).await {
        assert_ne!(state, "failed", "{l_uuid}");
        assert_ne!(code, 403, "{l_uuid}");
    }

    // The registrar answers again: the same transactions, still retransmitting, get through.
    registrar.set_behavior(Behavior::Normal);
    let answered = wait_until(Duration::from_secs(30), || async {
        in_flight.iter().enumerate().all(|(i, captured)| {
            registrar
                .requests_for(&user(i))
                .iter()
                .any(|r| r.branch == captured.branch && r.code == 200)
        })
    })
    .await;
    assert!(
        answered,
        "every forged-at transaction completed with the registrar"
    );
    for (i, captured) in in_flight.iter().enumerate() {
        let copies = registrar
            .requests_for(&user(i))
            .iter()
            .filter(|r| r.branch == captured.branch)
            .count();
        assert!(copies >= 2, "{}: the REGISTER was retransmitted", user(i));
    }
    assert!(wait_until(Duration::from_secs(10), all_registered).await);

    // And every row refreshes afterwards as usual.
    let seen_before: Vec<usize> = (0..ROWS)
        .map(|i| registrar.requests_for(&user(i)).len())
        .collect();
    refresh_all(&client).await;
    let refreshed = wait_until(Duration::from_secs(30), || async {
        (0..ROWS).all(|i| {
            registrar.requests_for(&user(i))[seen_before[i]..]
                .iter()
                .any(|r| r.code == 200)
        })
    })
    .await;
    assert!(refreshed, "every row refreshed");
    assert!(wait_until(Duration::from_secs(10), all_registered).await);
    for (l_uuid, (state, code)) in states(&client).await {
        assert_eq!((state.as_str(), code), ("registered", 200), "{l_uuid}");
    }
    assert_eq!(registrar.stats().rejected, 0);
    assert_eq!(registrar.binding_count(), ROWS);

    // The same counts on the metrics page.
    let text = scrape(&daemon).await;
    let series = |reason: &str| {
        metric(
            &text,
            &format!("uacreg_unmatched_responses_by_reason_total{{reason=\"{reason}\"}}"),
        ) as u64
    };
    assert_eq!(series("wrong_ids"), counter(&after, "responses_wrong_ids"));
    assert_eq!(
        series("wrong_source"),
        counter(&after, "responses_wrong_source")
    );
    assert!(series("unknown_branch") >= counter(&after, "responses_unknown_branch"));

    daemon.stop().await;
    registrar.stop().await;
}

//! The web console's server side without a browser (tests/web.rs drives the page itself): the
//! page's files are served on the RPC port without a token and under a strict CSP, its data
//! only with the token; `uacreg.overview` counts rows by state (and the invalid ones),
//! `uacreg.rows` pages, filters, searches and sorts on the server, `uacreg.row` shows a row with
//! its recent state changes and secrets masked.

mod common;

use std::time::Duration;

use common::{TempDir, registered_count, registrar, test_config, wait_until, write_rows};
use serde_json::{Value, json};
use uacreg::RpcClient;

const TOKEN: &str = "console-test-token";

async fn get(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

fn object(value: Value) -> serde_json::Map<String, Value> {
    value.as_object().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_reads_the_gateway_through_its_own_methods() {
    let dir = TempDir::new("console");
    let registrar = registrar(60).await;
    let mut rows = uacreg::demo::demo_rows(60, registrar.local_addr());
    for row in rows.iter_mut().take(5) {
        row.realm = "wrong.realm.test".into();
    }
    // One row the gateway refuses: listed as invalid, with the reason.
    let mut bad = uacreg::demo::demo_rows(61, registrar.local_addr())
        .pop()
        .unwrap();
    bad.l_uuid = "broken-row".into();
    bad.r_domain = String::new();
    rows.push(bad);
    write_rows(&dir.db_url(), &rows);
    let mut config = test_config(&dir.db_url());
    config.rpc_token = Some(TOKEN.into());
    let daemon = uacreg::Daemon::start(config).await.unwrap();
    let addr = daemon.rpc_addr();
    assert!(
        wait_until(Duration::from_secs(15), || async {
            registered_count(&daemon).await == 55
        })
        .await,
        "the good rows never registered"
    );

    // The files: no token needed, a strict CSP, nothing else of the disk.
    let page = get(addr, "/ui").await;
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(
        page.contains("content-security-policy: default-src 'none'"),
        "{page}"
    );
    assert!(page.contains("<main id=\"console\""), "{page}");
    assert!(get(addr, "/ui/app.js").await.contains("uacreg.overview"));
    assert!(get(addr, "/ui/nope").await.starts_with("HTTP/1.1 4"));

    // The data: only with the token.
    let stranger = RpcClient::new(&daemon.rpc_url()).unwrap();
    assert!(stranger.call("uacreg.overview", &[]).await.is_err());
    let rpc = RpcClient::with_token(&daemon.rpc_url(), Some(TOKEN)).unwrap();

    let overview = rpc.call("uacreg.overview", &[]).await.unwrap();
    assert_eq!(overview["total"], 61, "{overview}");
    assert_eq!(overview["states"]["registered"], 55, "{overview}");
    assert_eq!(overview["states"]["realm_mismatch"], 5, "{overview}");
    assert_eq!(overview["invalid"], 1, "{overview}");
    assert_eq!(overview["database"]["reachable"], true, "{overview}");
    assert!(overview["history"].is_array(), "{overview}");

    let first = rpc
        .call_named("uacreg.rows", object(json!({"limit": 20})))
        .await
        .unwrap();
    assert_eq!(first["total"], 61);
    assert_eq!(first["rows"].as_array().unwrap().len(), 20);
    let third = rpc
        .call_named("uacreg.rows", object(json!({"limit": 20, "offset": 40})))
        .await
        .unwrap();
    assert_eq!(third["rows"].as_array().unwrap().len(), 20);
    assert_ne!(first["rows"][0]["l_uuid"], third["rows"][0]["l_uuid"]);

    let mismatched = rpc
        .call_named("uacreg.rows", object(json!({"state": "realm_mismatch"})))
        .await
        .unwrap();
    assert_eq!(mismatched["total"], 5, "{mismatched}");
    let row = &mismatched["rows"][0];
    assert_eq!(row["expected_realm"], "wrong.realm.test", "{row}");
    assert_eq!(row["offered_realm"], "registrar.test", "{row}");

    let invalid = rpc
        .call_named("uacreg.rows", object(json!({"state": "invalid"})))
        .await
        .unwrap();
    assert_eq!(invalid["rows"][0]["l_uuid"], "broken-row", "{invalid}");
    assert!(
        !invalid["rows"][0]["last_reason"]
            .as_str()
            .unwrap()
            .is_empty(),
        "{invalid}"
    );

    let found = rpc
        .call_named(
            "uacreg.rows",
            object(json!({"search": "USER000042@registrar.TEST"})),
        )
        .await
        .unwrap();
    assert_eq!(found["total"], 1, "{found}");
    assert_eq!(found["rows"][0]["l_uuid"], "uuid000042");

    let sorted = rpc
        .call_named("uacreg.rows", object(json!({"sort": "state", "limit": 6})))
        .await
        .unwrap();
    // Most urgent first: the refused row, then the realm mismatches.
    let states: Vec<&str> = sorted["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["state"].as_str().unwrap())
        .collect();
    assert_eq!(states[0], "invalid", "{sorted}");
    assert!(
        states[1..].iter().all(|s| *s == "realm_mismatch"),
        "{sorted}"
    );
    for refused in [
        json!({"limit": 100000}),
        json!({"state": "bogus"}),
        json!({"sort": "auth_password"}),
        json!({"unknown": 1}),
    ] {
        assert!(
            rpc.call_named("uacreg.rows", object(refused.clone()))
                .await
                .is_err(),
            "{refused}"
        );
    }

    let detail = rpc
        .call_named("uacreg.row", object(json!({"l_uuid": "uuid000007"})))
        .await
        .unwrap();
    assert_eq!(detail["state"], "registered", "{detail}");
    assert_eq!(detail["auth_password"], "********", "{detail}");
    let changes = detail["history"].as_array().unwrap();
    assert_eq!(
        changes.last().unwrap()["to"],
        "registered",
        "the last change is the one into registered: {detail}"
    );
    assert!(changes.iter().any(|c| c["code"] == 401), "{detail}");

    // An action through Kamailio's method shows in the detail's state and history.
    rpc.call("uac.reg_disable", &["l_uuid".into(), "uuid000007".into()])
        .await
        .unwrap();
    let mut disabled = Value::Null;
    for _ in 0..50 {
        disabled = rpc
            .call_named("uacreg.row", object(json!({"l_uuid": "uuid000007"})))
            .await
            .unwrap();
        if disabled["state"] == "disabled" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(disabled["state"], "disabled", "{disabled}");
    assert_eq!(
        disabled["history"].as_array().unwrap().last().unwrap()["to"],
        "disabled"
    );
    let missing = rpc
        .call_named("uacreg.row", object(json!({"l_uuid": "nope"})))
        .await;
    assert!(missing.is_err());
    daemon.stop().await;
}

/// `[web] listen` serves the console and its JSON-RPC on an address of its own; `[web] enabled =
/// false` serves no page anywhere (the JSON-RPC stays).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_has_its_own_address_or_none() {
    let dir = TempDir::new("console-listen");
    write_rows(&dir.db_url(), &[]);
    let mut config = test_config(&dir.db_url());
    config.web.listen = Some("127.0.0.1:0".parse().unwrap());
    let daemon = uacreg::Daemon::start(config).await.unwrap();
    let web = daemon.web_addr().expect("a console address");
    assert_ne!(web, daemon.rpc_addr());
    assert!(get(web, "/ui").await.starts_with("HTTP/1.1 200"));
    let rpc = RpcClient::new(&format!("http://{web}/RPC")).unwrap();
    assert_eq!(rpc.call("uacreg.overview", &[]).await.unwrap()["total"], 0);
    daemon.stop().await;

    let mut off = test_config(&dir.db_url());
    off.web.enabled = false;
    off.web.listen = Some("127.0.0.1:0".parse().unwrap());
    let daemon = uacreg::Daemon::start(off).await.unwrap();
    assert_eq!(daemon.web_addr(), None);
    assert!(
        !get(daemon.rpc_addr(), "/ui")
            .await
            .starts_with("HTTP/1.1 200")
    );
    daemon.stop().await;
}

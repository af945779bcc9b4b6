//! Operator commands over JSON-RPC against the real daemon and the in-repo registrar: every
//! method beyond dump/info/reload, with Kamailio's faults.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;
use uacreg::RpcClient;
use uacreg::demo::demo_rows;
use uacreg::sip::digest::Algorithm;
use uacreg::store::Store;
use uacreg::testing::registrar::{RegistrarConfig, TestRegistrar};

async fn setup(rows: usize, users: usize) -> (TestRegistrar, TempDir, uacreg::Daemon, RpcClient) {
    let registrar = TestRegistrar::start(RegistrarConfig {
        users: (0..users)
            .map(|i| (format!("user{i:06}"), format!("pw-user{i:06}")))
            .collect(),
        algorithm: Algorithm::Md5,
        ..RegistrarConfig::default()
    })
    .await
    .unwrap();
    let dir = TempDir::new("control");
    write_rows(&dir.db_url(), &demo_rows(rows, registrar.local_addr()));
    let daemon = start_daemon(&dir.db_url()).await;
    let client = rpc(&daemon);
    assert!(
        wait_until(Duration::from_secs(30), || async {
            registered_count(&daemon).await == rows
        })
        .await
    );
    (registrar, dir, daemon, client)
}

fn args(values: &[&str]) -> Vec<String> {
    values.iter().map(|v| v.to_string()).collect()
}

async fn state(client: &RpcClient, l_uuid: &str) -> String {
    let info = client
        .call("uac.reg_info", &args(&["l_uuid", l_uuid]))
        .await
        .unwrap();
    info["state"].as_str().unwrap_or("").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unregister_then_register_again() {
    let (registrar, _dir, daemon, client) = setup(2, 2).await;
    let ok = client
        .call("uac.reg_unregister", &args(&["l_uuid", "uuid000000"]))
        .await
        .unwrap();
    assert_eq!(ok, json!({}));
    assert!(
        wait_until(Duration::from_secs(10), || async {
            registrar.bindings("user000000").is_empty()
        })
        .await
    );
    // The registrar drops the binding before its 200 reaches us: wait for that answer too.
    assert!(
        wait_until(Duration::from_secs(10), || async {
            state(&client, "uuid000000").await == "unregistered"
        })
        .await,
        "state {}",
        state(&client, "uuid000000").await
    );
    let info = client
        .call("uac.reg_info", &args(&["l_uuid", "uuid000000"]))
        .await
        .unwrap();
    assert_eq!(
        info["next_refresh"],
        serde_json::Value::Null,
        "no refresh after reg_unregister"
    );

    client
        .call("uac.reg_register", &args(&["r_username", "user000000"]))
        .await
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || async {
            registrar.bindings("user000000").len() == 1
        })
        .await
    );
    let missing = client
        .call("uac.reg_register", &args(&["l_uuid", "nope"]))
        .await
        .unwrap_err();
    assert!(
        missing.to_string().contains("Record not found"),
        "{missing}"
    );
    let empty = client
        .call("uac.reg_unregister", &args(&["l_uuid", ""]))
        .await
        .unwrap_err();
    assert!(
        empty.to_string().contains("Invalid Parameter Values"),
        "{empty}"
    );
    let short = client
        .call("uac.reg_unregister", &args(&["l_uuid"]))
        .await
        .unwrap_err();
    assert!(short.to_string().contains("Invalid Parameters"), "{short}");
    daemon.stop().await;
    registrar.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reg_active_gates_sending() {
    let (registrar, _dir, daemon, client) = setup(2, 2).await;
    let modes = client.call("uac.reg_active", &args(&["0"])).await.unwrap();
    assert_eq!(modes, json!({"omode": 1, "nmode": 0}));
    let before = registrar.stats().requests;
    client
        .call("uac.reg_register", &args(&["l_uuid", "uuid000001"]))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        registrar.stats().requests,
        before,
        "nothing is sent while inactive"
    );
    let modes = client.call("uac.reg_active", &args(&["1"])).await.unwrap();
    assert_eq!(modes, json!({"omode": 0, "nmode": 1}));
    assert!(
        wait_until(Duration::from_secs(10), || async {
            registrar.stats().requests > before
        })
        .await
    );
    let missing = client.call("uac.reg_active", &[]).await.unwrap_err();
    assert!(
        missing.to_string().contains("Missing parameter"),
        "{missing}"
    );
    daemon.stop().await;
    registrar.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_and_remove_in_memory() {
    let (registrar, _dir, daemon, client) = setup(1, 3).await;
    let proxy = format!("sip:{}", registrar.local_addr());
    let add = |l_uuid: &str, user: &str, password: &str, ha1: &str| {
        args(&[
            l_uuid,
            "local",
            "gw.test",
            user,
            "registrar.test",
            "registrar.test",
            user,
            password,
            ha1,
            &proxy,
            "3600",
            "0",
            "0",
            ".",
            ".",
        ])
    };
    let ok = client
        .call(
            "uac.reg_add",
            &add("added1", "user000001", "pw-user000001", "."),
        )
        .await
        .unwrap();
    assert_eq!(ok, json!({}));
    // The registrar binds before its 200 OK reaches the gateway: wait for both views.
    assert!(
        wait_until(Duration::from_secs(10), || async {
            registrar.bindings("user000001").len() == 1
                && state(&client, "added1").await == "registered"
        })
        .await,
        "added1 is {}",
        state(&client, "added1").await
    );

    let dup = client
        .call(
            "uac.reg_add",
            &add("added1", "user000001", "pw-user000001", "."),
        )
        .await
        .unwrap_err();
    assert!(dup.to_string().contains("uuid already exists"), "{dup}");
    let nopw = client
        .call("uac.reg_add", &add("added2", "user000002", ".", "."))
        .await
        .unwrap_err();
    assert!(
        nopw.to_string().contains("invalid password or ha1"),
        "{nopw}"
    );
    let few = client
        .call("uac.reg_add", &args(&["x", "y"]))
        .await
        .unwrap_err();
    assert!(few.to_string().contains("Invalid Parameters"), "{few}");
    let mut bad = add("added3", "user000002", "pw", ".");
    bad[4] = "bad domain".into();
    let bad = client.call("uac.reg_add", &bad).await.unwrap_err();
    assert!(
        bad.to_string().contains("r_domain"),
        "says what is wrong: {bad}"
    );

    let ok = client
        .call("uac.reg_remove", &args(&["added1"]))
        .await
        .unwrap();
    assert_eq!(ok, json!({}));
    assert!(
        wait_until(Duration::from_secs(10), || async {
            registrar.bindings("user000001").is_empty()
        })
        .await
    );
    let gone = client
        .call("uac.reg_info", &args(&["l_uuid", "added1"]))
        .await
        .unwrap_err();
    assert!(gone.to_string().contains("Record not found"));
    let gone = client
        .call("uac.reg_remove", &args(&["added1"]))
        .await
        .unwrap_err();
    assert!(gone.to_string().contains("Record not found"));
    daemon.stop().await;
    registrar.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_reads_one_row_from_the_database() {
    let (registrar, dir, daemon, client) = setup(2, 2).await;
    let mut row = demo_rows(2, registrar.local_addr())[1].clone();
    row.expires = 1800;
    Store::open(&dir.db_url()).unwrap().update(&row).unwrap();
    let before = registrar.requests_for("user000001").len();
    client
        .call("uac.reg_refresh", &args(&["uuid000001"]))
        .await
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || async {
            registrar.requests_for("user000001").len() > before
        })
        .await
    );
    let info = client
        .call("uac.reg_info", &args(&["l_uuid", "uuid000001"]))
        .await
        .unwrap();
    assert_eq!(info["expires"], 1800);

    let missing = client
        .call("uac.reg_refresh", &args(&["nope"]))
        .await
        .unwrap_err();
    assert!(
        missing.to_string().contains("Record not found"),
        "{missing}"
    );
    row.r_domain = "bad domain".into();
    Store::open(&dir.db_url()).unwrap().update(&row).unwrap();
    let invalid = client
        .call("uac.reg_refresh", &args(&["uuid000001"]))
        .await
        .unwrap_err();
    assert!(
        invalid.to_string().contains("Failed to refresh record"),
        "{invalid}"
    );
    assert_eq!(
        state(&client, "uuid000001").await,
        "registered",
        "the running registration is kept"
    );
    daemon.stop().await;
    registrar.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpc_token_is_required_when_configured() {
    let dir = TempDir::new("token");
    write_rows(&dir.db_url(), &[]);
    let mut config = test_config(&dir.db_url());
    config.rpc_token = Some("s3cret-token".into());
    let daemon = uacreg::Daemon::start(config).await.unwrap();
    let url = daemon.rpc_url();

    let anonymous = RpcClient::new(&url)
        .unwrap()
        .call("uac.reg_dump", &[])
        .await;
    assert!(
        anonymous.is_err(),
        "no token must be refused: {anonymous:?}"
    );
    let wrong = RpcClient::with_token(&url, Some("guess"))
        .unwrap()
        .call("uac.reg_dump", &[])
        .await;
    assert!(wrong.is_err(), "a wrong token must be refused");
    let right = RpcClient::with_token(&url, Some("s3cret-token"))
        .unwrap()
        .call("uac.reg_dump", &[])
        .await;
    assert_eq!(right.unwrap(), json!([]));
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpc_on_a_unix_socket() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = TempDir::new("unix");
    write_rows(&dir.db_url(), &[]);
    let socket = dir.0.join("rpc.sock");
    let mut config = test_config(&dir.db_url());
    config.rpc_socket = Some(socket.clone());
    let daemon = uacreg::Daemon::start(config).await.unwrap();

    let body = r#"{"jsonrpc":"2.0","method":"uac.reg_info","params":["l_uuid","x"],"id":7}"#;
    let request = format!(
        "POST /RPC HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut stream = tokio::net::UnixStream::connect(&socket).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer.contains(r#""code":404"#) && answer.contains("Record not found"),
        "{answer}"
    );
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_of_the_lookup_methods() {
    let (registrar, _dir, daemon, client) = setup(1, 1).await;
    let fault = |result: Result<serde_json::Value, uacreg::RpcError>| match result {
        Err(uacreg::RpcError::Call(err)) => (err.code(), err.message().to_string()),
        other => panic!("expected a fault, got {other:?}"),
    };
    for method in [
        "uac.reg_info",
        "uac.reg_enable",
        "uac.reg_disable",
        "uac.reg_register",
        "uac.reg_unregister",
    ] {
        let (code, text) = fault(client.call(method, &args(&["l_uuid", "missing"])).await);
        assert_eq!((code, text.as_str()), (404, "Record not found"), "{method}");
        let (code, text) = fault(client.call(method, &args(&["colour", "x"])).await);
        assert_eq!(code, 400, "{method}");
        assert!(
            text.starts_with("Unsupported filter attribute"),
            "{method}: {text}"
        );
        let (code, text) = fault(client.call(method, &args(&["", "x"])).await);
        assert_eq!(
            (code, text.as_str()),
            (400, "Invalid Parameter Values"),
            "{method}"
        );
        let (code, text) = fault(client.call(method, &[]).await);
        assert_eq!(code, 400, "{method}");
        assert!(text.starts_with("Invalid Parameters"), "{method}: {text}");
    }
    for method in ["uac.reg_refresh", "uac.reg_remove"] {
        let (code, text) = fault(client.call(method, &args(&["missing"])).await);
        assert_eq!((code, text.as_str()), (404, "Record not found"), "{method}");
        let (code, _) = fault(client.call(method, &[]).await);
        assert_eq!(code, 400, "{method}");
    }
    daemon.stop().await;
    registrar.stop().await;
}

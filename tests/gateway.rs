//! The real daemon against the in-repo test registrar, over UDP on loopback.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use serde_json::Value;
use uacreg::demo::demo_rows;
use uacreg::sip::digest::Algorithm;
use uacreg::store::Store;
use uacreg::testing::registrar::TestRegistrar;

/// Every REGISTER that followed a challenge carried credentials, and every credential checked out.
fn assert_clean_auth(registrar: &TestRegistrar, user: &str) {
    let seen = registrar.requests_for(user);
    assert!(!seen.is_empty(), "{user}: no REGISTER seen");
    for (i, request) in seen.iter().enumerate() {
        if i > 0 {
            assert!(
                request.had_authorization,
                "{user}: request {i} after a challenge lacks credentials"
            );
        }
        if request.had_authorization {
            assert_eq!(
                request.authorization_valid,
                Some(true),
                "{user}: bad credentials in request {i}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_rows_register_with_the_in_repo_registrar() {
    let registrar = registrar(1000).await;
    let dir = TempDir::new("thousand");
    write_rows(&dir.db_url(), &demo_rows(1000, registrar.local_addr()));
    let daemon = start_daemon(&dir.db_url()).await;

    let all = wait_until(Duration::from_secs(60), || async {
        registered_count(&daemon).await == 1000
    })
    .await;
    assert!(
        all,
        "only {} of 1000 registered",
        registered_count(&daemon).await
    );

    assert_eq!(registrar.binding_count(), 1000);
    for i in 0..1000 {
        let user = format!("user{i:06}");
        let bindings = registrar.bindings(&user);
        assert_eq!(bindings.len(), 1, "{user}: {bindings:?}");
        assert_clean_auth(&registrar, &user);
    }
    assert_eq!(registrar.stats().rejected, 0);

    // The same picture over JSON-RPC, in Kamailio's shape.
    let dump = rpc(&daemon).call("uac.reg_dump", &[]).await.unwrap();
    let records = dump.as_array().expect("array");
    assert_eq!(records.len(), 1000);
    for record in records {
        assert_eq!(record["state"], "registered");
        assert_eq!(record["flags"].as_i64().unwrap() & 4, 4, "ONLINE flag");
        assert_eq!(record["auth_password"], "********", "masked by default");
        assert_eq!(record["socket"], Value::Null);
        assert!(record["diff_expires"].as_i64().unwrap() > 3000);
    }
    let keys: Vec<&str> = records[0]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        &keys[..18],
        &[
            "l_uuid",
            "l_username",
            "l_domain",
            "r_username",
            "r_domain",
            "realm",
            "auth_username",
            "auth_password",
            "auth_ha1",
            "auth_proxy",
            "expires",
            "flags",
            "diff_expires",
            "timer_expires",
            "reg_init",
            "reg_delay",
            "contact_addr",
            "socket"
        ]
    );
    daemon.stop().await;
    registrar.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn realm_mismatch_sends_no_credentials_and_is_visible() {
    let registrar = registrar(3).await;
    let dir = TempDir::new("realm");
    let mut rows = demo_rows(3, registrar.local_addr());
    rows[1].realm = "wrong.realm.test".into();
    // Row 2 authenticates with an HA1 instead of the password (a wrong password beside it proves
    // the HA1 wins).
    rows[2].auth_ha1 = uacreg::registration::Secret::new(
        Algorithm::Md5.hex_hash(b"user000002:registrar.test:pw-user000002"),
    );
    rows[2].auth_password = uacreg::registration::Secret::new("not-the-password");
    write_rows(&dir.db_url(), &rows);
    let daemon = start_daemon(&dir.db_url()).await;
    let client = rpc(&daemon);

    let settled = wait_until(Duration::from_secs(20), || async {
        let info = client
            .call("uac.reg_info", &["l_uuid".into(), "uuid000001".into()])
            .await;
        info.is_ok_and(|v| v["state"] == "realm_mismatch")
    })
    .await;
    assert!(settled, "realm mismatch state never shown");
    let info = client
        .call("uac.reg_info", &["l_uuid".into(), "uuid000001".into()])
        .await
        .unwrap();
    assert_eq!(info["expected_realm"], "wrong.realm.test");
    assert_eq!(info["offered_realm"], "registrar.test");
    // It backs off like a temporary failure: the first retry within 15–30 s (30 s, 50 % jitter).
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let next = info["next_refresh"].as_i64().expect("a retry is scheduled") - now;
    assert!((13..=31).contains(&next), "next attempt in {next} s");
    assert_eq!(info["flags"].as_i64().unwrap() & 4, 0);
    assert!(
        wait_until(Duration::from_secs(20), || async {
            registered_count(&daemon).await == 2
        })
        .await
    );

    let seen = registrar.requests_for("user000001");
    assert!(!seen.is_empty());
    assert!(
        seen.iter().all(|r| !r.had_authorization),
        "credentials left for a foreign realm"
    );
    assert!(registrar.bindings("user000001").is_empty());

    // reg_info by other attributes and the not-found fault.
    let by_user = client
        .call("uac.reg_info", &["r_username".into(), "user000002".into()])
        .await
        .unwrap();
    assert_eq!(by_user["l_uuid"], "uuid000002");
    assert_eq!(by_user["state"], "registered", "HA1 row: {by_user}");
    assert_eq!(by_user["auth_ha1"], "********");
    let missing = client
        .call("uac.reg_info", &["l_uuid".into(), "nope".into()])
        .await
        .unwrap_err();
    assert!(
        missing.to_string().contains("Record not found"),
        "{missing}"
    );
    daemon.stop().await;
    registrar.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_registers_only_what_changed() {
    let registrar = registrar(101).await;
    let dir = TempDir::new("reload");
    let rows = demo_rows(100, registrar.local_addr());
    write_rows(&dir.db_url(), &rows);
    let daemon = start_daemon(&dir.db_url()).await;
    assert!(
        wait_until(Duration::from_secs(30), || async {
            registered_count(&daemon).await == 100
        })
        .await
    );

    let before: HashMap<String, usize> = (0..101)
        .map(|i| format!("user{i:06}"))
        .map(|u| (u.clone(), registrar.requests_for(&u).len()))
        .collect();

    {
        let mut store = Store::open(&dir.db_url()).unwrap();
        let mut changed = rows[10].clone();
        changed.expires = 1800;
        store.update(&changed).unwrap();
        assert!(store.delete("uuid000020").unwrap());
        store
            .insert(&demo_rows(101, registrar.local_addr())[100..])
            .unwrap();
    }
    let report = rpc(&daemon).call("uac.reg_reload", &[]).await.unwrap();
    assert_eq!(report["added"], 1);
    assert_eq!(report["changed"], 1);
    assert_eq!(report["removed"], 1);
    assert_eq!(report["unchanged"], 98);

    assert!(
        wait_until(Duration::from_secs(30), || async {
            registered_count(&daemon).await == 100 && registrar.bindings("user000020").is_empty()
        })
        .await
    );
    // Give stray REGISTERs a moment to show up before counting.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut touched: Vec<String> = before
        .iter()
        .filter(|(user, n)| registrar.requests_for(user).len() != **n)
        .map(|(user, _)| user.clone())
        .collect();
    touched.sort();
    assert_eq!(touched, vec!["user000010", "user000020", "user000100"]);
    let info = rpc(&daemon)
        .call("uac.reg_info", &["l_uuid".into(), "uuid000010".into()])
        .await
        .unwrap();
    assert_eq!(info["expires"], 1800);
    daemon.stop().await;
    registrar.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_rows_and_garbage_datagrams_do_not_hurt_the_others() {
    let registrar = registrar(5).await;
    let dir = TempDir::new("bad");
    let mut rows = demo_rows(5, registrar.local_addr());
    rows[2].auth_ha1 = uacreg::registration::Secret::new("not-a-hash");
    rows[3].auth_proxy = "sip:".into();
    write_rows(&dir.db_url(), &rows);
    let daemon = start_daemon(&dir.db_url()).await;
    let load = daemon.initial_load.as_ref().expect("loaded");
    let bad: Vec<&str> = load.invalid.iter().map(|r| r.l_uuid.as_str()).collect();
    assert_eq!(bad, vec!["uuid000002", "uuid000003"]);
    assert!(
        !format!("{:?}", load.invalid).contains("not-a-hash"),
        "secret in error"
    );

    // Garbage at the SIP port while registering.
    let garbage = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let target: SocketAddr = daemon.sip_addr();
    let samples: Vec<Vec<u8>> = vec![
        b"\x00\x01\x02\xff\xfe".to_vec(),
        b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP x;branch=z9hG4bKnope\r\nCSeq: 99999999999999999999 REGISTER\r\n\r\n".to_vec(),
        b"SIP/2.0 abc\r\n\r\n".to_vec(),
        b"INVITE sip:x@y SIP/2.0\r\n\r\n".to_vec(),
        vec![b'A'; 60_000],
        b"SIP/2.0 401 Unauthorized\r\nWWW-Authenticate: Digest realm=\"\r\n\r\n".to_vec(),
    ];
    for sample in &samples {
        garbage.send_to(sample, target).unwrap();
    }
    assert!(
        wait_until(Duration::from_secs(30), || async {
            registered_count(&daemon).await == 3
        })
        .await
    );
    for sample in &samples {
        garbage.send_to(sample, target).unwrap();
    }
    let client = rpc(&daemon);
    let info = client
        .call("uac.reg_info", &["l_uuid".into(), "uuid000002".into()])
        .await
        .unwrap();
    assert_eq!(info["state"], "invalid");
    assert!(
        info["error"].as_str().unwrap().contains("auth_ha1"),
        "{info}"
    );
    assert_eq!(info["auth_ha1"], "********");
    // reg_dump lists the bad row once, as invalid, beside the loaded ones.
    let dump = client.call("uac.reg_dump", &[]).await.unwrap();
    let states: Vec<(&str, &str)> = dump
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["l_uuid"].as_str().unwrap(), v["state"].as_str().unwrap()))
        .collect();
    assert_eq!(
        states
            .iter()
            .filter(|(id, _)| *id == "uuid000002")
            .collect::<Vec<_>>(),
        vec![&("uuid000002", "invalid")],
        "{states:?}"
    );
    let mut ids: Vec<&str> = states.iter().map(|(id, _)| *id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!((states.len(), ids.len()), (5, 5), "{states:?}");
    // Still fully responsive after the garbage.
    let ok = client.call("uac.reg_refresh", &["uuid000000".into()]).await;
    assert!(ok.is_ok(), "{ok:?}");
    let stats = client.call("uacreg.status", &[]).await.unwrap();
    assert!(
        stats["sip"]["malformed_dropped"].as_u64().unwrap()
            + stats["sip"]["unmatched_responses"].as_u64().unwrap()
            >= 2
    );
    assert_eq!(registered_count(&daemon).await, 3);
    daemon.stop().await;
    registrar.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_unregisters_every_binding() {
    let registrar = registrar(20).await;
    let dir = TempDir::new("shutdown");
    write_rows(&dir.db_url(), &demo_rows(20, registrar.local_addr()));
    let daemon = start_daemon(&dir.db_url()).await;
    assert!(
        wait_until(Duration::from_secs(30), || async {
            registered_count(&daemon).await == 20
        })
        .await
    );
    assert_eq!(registrar.binding_count(), 20);
    daemon.stop().await;
    assert_eq!(registrar.binding_count(), 0);
    registrar.stop().await;
}

/// Runs one SQL statement on the test database through a separate connection.
fn sql(db_url: &str, statement: &str) {
    use diesel::Connection;
    use diesel::connection::SimpleConnection;
    let path = db_url.trim_start_matches("sqlite://");
    let mut conn = diesel::sqlite::SqliteConnection::establish(path).unwrap();
    conn.batch_execute(statement).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_database_read_changes_nothing() {
    let registrar = registrar(3).await;
    let dir = TempDir::new("dbfail");
    write_rows(&dir.db_url(), &demo_rows(3, registrar.local_addr()));
    let daemon = start_daemon(&dir.db_url()).await;
    assert!(
        wait_until(Duration::from_secs(30), || async {
            registered_count(&daemon).await == 3
        })
        .await
    );
    let requests_before = registrar.stats().requests;

    // The table goes away (as if the database were broken or replaced mid-flight).
    sql(
        &dir.db_url(),
        "ALTER TABLE uacreg RENAME TO uacreg_elsewhere",
    );
    let err = rpc(&daemon).call("uac.reg_reload", &[]).await.unwrap_err();
    assert!(
        err.to_string().contains("Failed to reload records"),
        "{err}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(registered_count(&daemon).await, 3);
    assert_eq!(registrar.binding_count(), 3);
    assert_eq!(
        registrar.stats().requests,
        requests_before,
        "no REGISTER after a failed read"
    );

    // Back again: the reload sees the same rows and leaves them alone.
    sql(
        &dir.db_url(),
        "ALTER TABLE uacreg_elsewhere RENAME TO uacreg",
    );
    let report = rpc(&daemon).call("uac.reg_reload", &[]).await.unwrap();
    assert_eq!(report["unchanged"], 3);
    assert_eq!(registrar.stats().requests, requests_before);
    daemon.stop().await;
    registrar.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disable_and_enable_over_rpc() {
    let registrar = registrar(2).await;
    let dir = TempDir::new("enable");
    write_rows(&dir.db_url(), &demo_rows(2, registrar.local_addr()));
    let daemon = start_daemon(&dir.db_url()).await;
    let client = rpc(&daemon);
    assert!(
        wait_until(Duration::from_secs(30), || async {
            registered_count(&daemon).await == 2
        })
        .await
    );

    let ok = client
        .call(
            "uac.reg_disable",
            &["r_username".into(), "user000001".into()],
        )
        .await
        .unwrap();
    assert_eq!(ok, serde_json::json!({}));
    assert!(
        wait_until(Duration::from_secs(10), || async {
            registrar.bindings("user000001").is_empty()
        })
        .await
    );
    let info = client
        .call("uac.reg_info", &["l_uuid".into(), "uuid000001".into()])
        .await
        .unwrap();
    assert_eq!(info["state"], "disabled");
    assert_eq!(info["flags"].as_i64().unwrap() & 1, 1);

    client
        .call("uac.reg_enable", &["l_uuid".into(), "uuid000001".into()])
        .await
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || async {
            registrar.bindings("user000001").len() == 1
        })
        .await
    );
    let missing = client
        .call("uac.reg_enable", &["l_uuid".into(), "nope".into()])
        .await
        .unwrap_err();
    assert!(
        missing.to_string().contains("Record not found"),
        "{missing}"
    );
    let bad = client
        .call("uac.reg_enable", &["colour".into(), "x".into()])
        .await
        .unwrap_err();
    assert!(
        bad.to_string().contains("Unsupported filter attribute"),
        "{bad}"
    );
    daemon.stop().await;
    registrar.stop().await;
}

/// A first load that fails is retried in the background, and only while the daemon runs:
/// stopping ends the retrying task, which until then holds the gateway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_ends_the_retries_of_a_failed_first_load() {
    use diesel::{Connection, RunQueryDsl};
    let dir = TempDir::new("first-load-retry");
    // Kamailio's table without its `socket` column: found and used as it is, but every read
    // of it fails.
    let mut conn =
        diesel::sqlite::SqliteConnection::establish(&dir.0.join("uacreg.db").to_string_lossy())
            .unwrap();
    for statement in [
        "CREATE TABLE uacreg (id INTEGER PRIMARY KEY NOT NULL, l_uuid VARCHAR(64) DEFAULT '' NOT NULL, \
         l_username VARCHAR(64) DEFAULT '' NOT NULL, l_domain VARCHAR(64) DEFAULT '' NOT NULL, \
         r_username VARCHAR(64) DEFAULT '' NOT NULL, r_domain VARCHAR(64) DEFAULT '' NOT NULL, \
         realm VARCHAR(64) DEFAULT '' NOT NULL, auth_username VARCHAR(64) DEFAULT '' NOT NULL, \
         auth_password VARCHAR(64) DEFAULT '' NOT NULL, auth_ha1 VARCHAR(128) DEFAULT '' NOT NULL, \
         auth_proxy VARCHAR(255) DEFAULT '' NOT NULL, expires INTEGER DEFAULT 0 NOT NULL, \
         flags INTEGER DEFAULT 0 NOT NULL, reg_delay INTEGER DEFAULT 0 NOT NULL, \
         contact_addr VARCHAR(255) DEFAULT '' NOT NULL)",
        "INSERT INTO uacreg (l_uuid, r_username, r_domain) VALUES ('a', 'u', 'registrar.test')",
    ] {
        diesel::sql_query(statement).execute(&mut conn).unwrap();
    }
    drop(conn);
    let daemon = start_daemon(&dir.db_url()).await;
    assert!(daemon.initial_load.is_none(), "the first load worked");
    let gateway = std::sync::Arc::downgrade(daemon.gateway());
    daemon.stop().await;
    assert!(
        wait_until(Duration::from_secs(10), || async {
            gateway.upgrade().is_none()
        })
        .await,
        "something still holds the gateway after stop (the retry task?)"
    );
}

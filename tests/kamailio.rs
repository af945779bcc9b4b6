//! The real daemon against Kamailio's registrar (auth_db + usrloc) on loopback.

mod common;
mod support;

use std::time::Duration;

use common::*;
use support::kamailio::{KamailioRegistrar, require_kamailio};
use uacreg::demo::demo_rows;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_rows_register_with_kamailio() {
    if !require_kamailio() {
        return;
    }
    const ROWS: usize = 1000;
    let users: Vec<(String, String)> = (0..ROWS)
        .map(|i| (format!("user{i:06}"), format!("pw-user{i:06}")))
        .collect();
    let kamailio = KamailioRegistrar::start("registrar.test", &users).expect("kamailio starts");
    let dir = TempDir::new("kamailio");
    let mut rows = demo_rows(ROWS, kamailio.addr());
    // One row with a realm Kamailio will not offer: no credentials may reach it.
    rows[ROWS - 1].realm = "wrong.realm.test".into();
    write_rows(&dir.db_url(), &rows);
    let daemon = start_daemon(&dir.db_url()).await;

    let all = wait_until(Duration::from_secs(120), || async {
        registered_count(&daemon).await == ROWS - 1
    })
    .await;
    assert!(
        all,
        "only {} of {} registered with Kamailio; its log:\n{}",
        registered_count(&daemon).await,
        ROWS - 1,
        kamailio.log()
    );
    // Kamailio's usrloc holds exactly one binding per registered row, and it is our contact.
    let bound = wait_until(Duration::from_secs(10), || async {
        kamailio.binding_count() == ROWS - 1
    })
    .await;
    assert!(
        bound,
        "Kamailio holds {} bindings",
        kamailio.binding_count()
    );
    for i in (0..ROWS - 1).step_by(97) {
        let contacts = kamailio.bindings_for(&format!("user{i:06}"));
        assert_eq!(contacts.len(), 1, "user{i:06}: {contacts:?}");
        let ours = format!("uuid{i:06}@127.0.0.1:{}", daemon.sip_addr().port());
        assert!(contacts[0].contains(&ours), "{contacts:?}");
    }
    assert!(
        kamailio
            .bindings_for(&format!("user{:06}", ROWS - 1))
            .is_empty()
    );
    let info = rpc(&daemon)
        .call(
            "uac.reg_info",
            &["l_uuid".into(), format!("uuid{:06}", ROWS - 1)],
        )
        .await
        .unwrap();
    assert_eq!(info["state"], "realm_mismatch");
    assert_eq!(info["offered_realm"], "registrar.test");
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_register_with_kamailio_over_tcp() {
    if !require_kamailio() {
        return;
    }
    const ROWS: usize = 200;
    let users: Vec<(String, String)> = (0..ROWS)
        .map(|i| (format!("user{i:06}"), format!("pw-user{i:06}")))
        .collect();
    let options = support::kamailio::RegistrarOptions {
        tcp: true,
        ..Default::default()
    };
    let kamailio =
        KamailioRegistrar::start_with("registrar.test", &users, &options).expect("kamailio starts");
    let dir = TempDir::new("kamailio-tcp");
    let mut rows = demo_rows(ROWS, kamailio.addr());
    for row in &mut rows {
        row.auth_proxy = format!("sip:{};transport=tcp", kamailio.addr());
    }
    write_rows(&dir.db_url(), &rows);
    let daemon = start_daemon(&dir.db_url()).await;
    let all = wait_until(Duration::from_secs(60), || async {
        registered_count(&daemon).await == ROWS
    })
    .await;
    assert!(
        all,
        "only {} of {ROWS} registered with Kamailio over TCP; its log:\n{}",
        registered_count(&daemon).await,
        kamailio.log()
    );
    let bound = wait_until(Duration::from_secs(10), || async {
        kamailio.binding_count() == ROWS
    })
    .await;
    assert!(
        bound,
        "Kamailio holds {} bindings",
        kamailio.binding_count()
    );
    for i in (0..ROWS).step_by(37) {
        let contacts = kamailio.bindings_for(&format!("user{i:06}"));
        assert_eq!(contacts.len(), 1, "user{i:06}: {contacts:?}");
        assert!(contacts[0].contains(";transport=tcp"), "{contacts:?}");
    }
    let stats = daemon.gateway().driver.stats().await.unwrap();
    assert_eq!(stats.connections_opened, 1, "{stats:?}");
    assert_eq!(stats.transactions.retransmissions, 0);
    daemon.stop().await;
}

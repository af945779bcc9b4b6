//! Hostile TCP peers against a daemon in the test process: a slowloris, too many connections
//! from one address. Each case checks that the daemon closes what it must, counts it, and
//! meanwhile answers JSON-RPC and keeps its rows registered over its own TCP connection to the
//! test registrar. The attacks at scale against the daemon as a process (a wrapping
//! Content-Length and other framing attacks, thousands of idle connections) are in
//! `tests/hostile.rs`.

mod common;
mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use common::{TempDir, registered_count, rpc, test_config, users, wait_until, write_rows};
use uacreg::ConnectionLimits;
use uacreg::Daemon;
use uacreg::RpcClient;
use uacreg::demo::demo_rows;
use uacreg::store::RawRow;
use uacreg::testing::registrar::{RegistrarConfig, TestRegistrar};

use support::stranger::{closed_within, connect_from};

/// Rows per test: they register over one TCP connection to the registrar.
const ROWS: usize = 20;

async fn tcp_registrar() -> TestRegistrar {
    TestRegistrar::start(RegistrarConfig {
        bind: "127.0.0.1:0".parse().unwrap(),
        realm: "registrar.test".into(),
        users: users(ROWS),
        tcp: true,
        ..RegistrarConfig::default()
    })
    .await
    .expect("registrar starts")
}

fn tcp_rows(registrar: &TestRegistrar) -> Vec<RawRow> {
    let mut rows = demo_rows(ROWS, "127.0.0.1:9".parse().unwrap());
    let proxy = format!("sip:{};transport=tcp", registrar.local_addr());
    for row in &mut rows {
        row.auth_proxy = proxy.clone();
    }
    rows
}

async fn start_daemon(
    dir: &TempDir,
    registrar: &TestRegistrar,
    limits: ConnectionLimits,
) -> Daemon {
    write_rows(&dir.db_url(), &tcp_rows(registrar));
    let mut config = test_config(&dir.db_url());
    config.limits = limits;
    let daemon = Daemon::start(config).await.expect("daemon starts");
    assert!(
        wait_until(Duration::from_secs(20), || async {
            registered_count(&daemon).await == ROWS
        })
        .await,
        "rows did not register"
    );
    daemon
}

async fn stats(daemon: &Daemon) -> uacreg::DriverStats {
    daemon
        .gateway()
        .driver
        .stats()
        .await
        .expect("driver running")
}

/// JSON-RPC answers within a second.
async fn rpc_answers(client: &RpcClient) -> bool {
    matches!(
        tokio::time::timeout(Duration::from_secs(1), client.call("uacreg.status", &[])).await,
        Ok(Ok(_))
    )
}

fn options(gateway: SocketAddr, me: SocketAddr, n: usize) -> String {
    format!(
        "OPTIONS sip:{gateway};transport=tcp SIP/2.0\r\nVia: SIP/2.0/TCP {me};branch=z9hG4bKh{n}\r\n\
         From: <sip:p@x.test>;tag=1\r\nTo: <sip:{gateway}>\r\nCall-ID: h{n}\r\nCSeq: {n} OPTIONS\r\n\
         Content-Length: 0\r\n\r\n"
    )
}

/// One byte at a time never makes a message: the idle timeout closes it. Pings and whole
/// requests keep a connection open well past the timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slowloris_is_closed_by_the_idle_timeout_but_pings_and_requests_keep_theirs() {
    let registrar = tcp_registrar().await;
    let dir = TempDir::new("hostile-slow");
    let idle = Duration::from_secs(2);
    let daemon = start_daemon(
        &dir,
        &registrar,
        ConnectionLimits {
            idle_timeout: idle,
            ..ConnectionLimits::default()
        },
    )
    .await;
    let gateway = daemon.sip_addr();

    let slowloris = tokio::spawn(async move {
        let stream = TcpStream::connect(gateway).await.unwrap();
        let me = stream.local_addr().unwrap();
        let (mut reader, mut writer) = stream.into_split();
        let start = Instant::now();
        let dribble = async {
            for byte in options(gateway, me, 1).bytes().take(100) {
                // Once closed, writing fails; the reader below notices first.
                let _ = writer.write_all(&[byte]).await;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        };
        let mut buf = [0u8; 512];
        tokio::select! {
            _ = dribble => None,
            _ = async { while matches!(reader.read(&mut buf).await, Ok(n) if n > 0) {} } => {
                Some(start.elapsed())
            }
        }
    });
    let pinger = tokio::spawn(async move {
        let mut stream = TcpStream::connect(gateway).await.unwrap();
        let mut pongs = 0;
        let mut last_ping = Instant::now();
        for _ in 0..12 {
            stream.write_all(b"\r\n\r\n").await.unwrap();
            last_ping = Instant::now();
            let mut buf = [0u8; 16];
            match tokio::time::timeout(Duration::from_secs(1), stream.read(&mut buf)).await {
                Ok(Ok(n)) if n > 0 && buf[..n].iter().all(|b| *b == b'\r' || *b == b'\n') => {
                    pongs += 1;
                }
                other => panic!("no pong: {other:?}"),
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        // 12 × ~0.5 s = three idle timeouts of pings; then silence until it is closed.
        assert!(
            closed_within(&mut stream, idle * 3).await,
            "never idle-closed"
        );
        (pongs, last_ping.elapsed())
    });
    let requester = tokio::spawn(async move {
        let mut stream = TcpStream::connect(gateway).await.unwrap();
        let me = stream.local_addr().unwrap();
        // Whole requests every half second for three idle timeouts (whatever the answers).
        let mut still_open = 0;
        for n in 0..12 {
            stream
                .write_all(options(gateway, me, n).as_bytes())
                .await
                .unwrap();
            if !closed_within(&mut stream, Duration::from_millis(500)).await {
                still_open += 1;
            }
        }
        assert!(
            closed_within(&mut stream, idle * 3).await,
            "never idle-closed"
        );
        still_open
    });

    let slow = slowloris.await.unwrap();
    assert!(
        slow.is_some_and(|t| t >= idle && t < idle + Duration::from_secs(3)),
        "slowloris closed after {slow:?}"
    );
    let (pongs, quiet) = pinger.await.unwrap();
    assert_eq!(pongs, 12);
    assert!(quiet >= idle, "closed {quiet:?} after the last ping");
    assert_eq!(requester.await.unwrap(), 12);
    assert!(rpc_answers(&rpc(&daemon)).await);
    let after = stats(&daemon).await;
    // The slowloris, and the pinger and the requester once they went quiet.
    assert_eq!(after.connections_idle_closed, 3, "{after:?}");
    assert_eq!(after.connections_unframeable, 0);
    assert_eq!(registered_count(&daemon).await, ROWS);
    daemon.stop().await;
    registrar.stop().await;
}

/// Each source address has its own small share; other sources are not affected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_address_cap_closes_only_that_address_extra_connections() {
    let registrar = tcp_registrar().await;
    let dir = TempDir::new("hostile-per-ip");
    let daemon = start_daemon(
        &dir,
        &registrar,
        ConnectionLimits {
            max_connections: 1000,
            max_connections_per_ip: 4,
            idle_timeout: Duration::from_secs(60),
        },
    )
    .await;
    let gateway = daemon.sip_addr();
    let mut from_two = Vec::new();
    for _ in 0..6 {
        from_two.push(connect_from("127.0.0.2", gateway).await.unwrap());
    }
    let mut from_three = Vec::new();
    for _ in 0..4 {
        from_three.push(connect_from("127.0.0.3", gateway).await.unwrap());
    }
    assert!(
        wait_until(Duration::from_secs(3), || async {
            let s = stats(&daemon).await;
            s.inbound_connections == 8 && s.connections_refused_per_ip == 2
        })
        .await,
        "{:?}",
        stats(&daemon).await
    );
    let mut closed_two = 0;
    for stream in &mut from_two {
        if closed_within(stream, Duration::from_millis(300)).await {
            closed_two += 1;
        }
    }
    assert_eq!(closed_two, 2, "of 6 from 127.0.0.2");
    for stream in &mut from_three {
        assert!(!closed_within(stream, Duration::from_millis(100)).await);
    }
    // A place given back can be taken again by the same source.
    from_two.clear();
    assert!(
        wait_until(Duration::from_secs(3), || async {
            stats(&daemon).await.inbound_connections == 4
        })
        .await
    );
    let mut again = connect_from("127.0.0.2", gateway).await.unwrap();
    assert!(!closed_within(&mut again, Duration::from_millis(500)).await);
    let after = stats(&daemon).await;
    assert_eq!(after.connections_refused_per_ip, 2, "{after:?}");
    assert_eq!(after.connections_refused, 0);
    assert_eq!(after.inbound_connections, 5);
    assert!(rpc_answers(&rpc(&daemon)).await);
    daemon.stop().await;
    registrar.stop().await;
}

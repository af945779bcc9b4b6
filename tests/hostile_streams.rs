//! Hostile TCP peers against a running uacregd: a Content-Length that wraps, more connections
//! than the cap, a slowloris, too many connections from one address. Each case checks that the
//! daemon closes what it must, counts it, and meanwhile answers JSON-RPC and keeps its rows
//! registered over its own TCP connection to the test registrar.

mod common;
mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use common::{TempDir, registered_count, rpc, test_config, users, wait_until, write_rows};
use uacreg::daemon::Daemon;
use uacreg::demo::demo_rows;
use uacreg::rpc::RpcClient;
use uacreg::store::RawRow;
use uacreg::testing::registrar::{RegistrarConfig, TestRegistrar};
use uacreg::transport::admission::ConnectionLimits;

const UACREGD: &str = env!("CARGO_BIN_EXE_uacregd");

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

/// The registrar drops its connections; every row must register again (over a new TCP
/// connection the daemon opens).
async fn rows_register_again(registrar: &TestRegistrar) -> bool {
    let oks = |i: usize| {
        registrar
            .requests_for(&format!("user{i:06}"))
            .iter()
            .filter(|r| r.code == 200)
            .count()
    };
    let before: Vec<usize> = (0..ROWS).map(oks).collect();
    registrar.drop_connections();
    wait_until(Duration::from_secs(20), || async {
        (0..ROWS).all(|i| oks(i) > before[i])
    })
    .await
}

async fn stats(daemon: &Daemon) -> uacreg::driver::DriverStats {
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

/// Whether the peer ends `stream` (EOF or reset) within `limit`; anything read meanwhile is
/// discarded.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> bool {
    let mut buf = [0u8; 4096];
    tokio::time::timeout(limit, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

async fn connect_from(local: &str, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{local}:0").parse().unwrap()).unwrap();
    socket.connect(to).await.expect("connect")
}

fn options(gateway: SocketAddr, me: SocketAddr, n: usize) -> String {
    format!(
        "OPTIONS sip:{gateway};transport=tcp SIP/2.0\r\nVia: SIP/2.0/TCP {me};branch=z9hG4bKh{n}\r\n\
         From: <sip:p@x.test>;tag=1\r\nTo: <sip:{gateway}>\r\nCall-ID: h{n}\r\nCSeq: {n} OPTIONS\r\n\
         Content-Length: 0\r\n\r\n"
    )
}

/// The regression of issue 13: `Content-Length` near `u64::MAX` made `body_start + body_len`
/// wrap; the connection loop then spun at full CPU, grew by gigabytes and starved JSON-RPC.
/// Run against the real binary so its CPU time and memory are its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrapping_content_length_closes_its_connection_and_nothing_else() {
    let registrar = tcp_registrar().await;
    let dir = TempDir::new("hostile-wrap");
    write_rows(&dir.db_url(), &tcp_rows(&registrar));
    let (path, db) = (dir.0.clone(), dir.db_url());
    let mut daemon = tokio::task::spawn_blocking(move || {
        support::uacregd::Uacregd::start(UACREGD, &path, &db, "")
    })
    .await
    .unwrap()
    .expect("uacregd starts");
    let client = RpcClient::new(&format!("http://{}/RPC", daemon.rpc)).unwrap();
    let registered = |status: &Value| status["registrations"]["registered"].as_u64();
    assert!(
        wait_until(Duration::from_secs(20), || async {
            let status = client.call("uacreg.status", &[]).await.unwrap();
            registered(&status) == Some(ROWS as u64)
        })
        .await,
        "rows did not register:\n{}",
        daemon.log()
    );
    let pid = daemon.pid().expect("uacregd pid");
    let rss_before = support::uacregd::rss_kib(pid).unwrap();

    let head = "REGISTER sip:x SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:9\r\nContent-Length: \r\n\r\n";
    let wrapping = [
        u64::MAX,
        u64::MAX - head.len() as u64,
        u64::MAX - head.len() as u64 + 1,
    ];
    for value in wrapping {
        let mut stream = TcpStream::connect(daemon.sip).await.unwrap();
        let message = format!(
            "REGISTER sip:x SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:9\r\nContent-Length: {value}\r\n\r\n\
             OPTIONS sip:x SIP/2.0\r\n"
        );
        stream.write_all(message.as_bytes()).await.unwrap();
        assert!(
            closed_within(&mut stream, Duration::from_secs(5)).await,
            "connection with Content-Length {value} left open"
        );
    }

    // Two seconds of watching: JSON-RPC answers within a second every time, and the daemon
    // uses its CPU for nothing (the old loop used a whole core: ~200 ticks in 2 s).
    let cpu_before = support::uacregd::cpu_ticks(pid).unwrap();
    let watch_until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < watch_until {
        assert!(rpc_answers(&client).await, "JSON-RPC stopped answering");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let cpu_used = support::uacregd::cpu_ticks(pid).unwrap() - cpu_before;
    assert!(cpu_used < 100, "{cpu_used} CPU ticks in 2 s of idling");
    let rss_after = support::uacregd::rss_kib(pid).unwrap();
    assert!(
        rss_after < rss_before + 64 * 1024,
        "RSS grew from {rss_before} KiB to {rss_after} KiB"
    );
    assert!(
        rows_register_again(&registrar).await,
        "rows stopped registering"
    );
    let status = client.call("uacreg.status", &[]).await.unwrap();
    assert_eq!(status["sip"]["connections_unframeable"], 3, "{status}");
    assert_eq!(registered(&status), Some(ROWS as u64), "{status}");
    let exit = daemon.stop(Duration::from_secs(10));
    assert!(exit.is_some_and(|e| e.success()), "{exit:?}");
    registrar.stop().await;
}

/// More connections than the cap: the ones beyond it are closed at once, the others when they
/// have been idle; meanwhile JSON-RPC answers and rows register again over TCP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_cap_are_closed_at_once_and_idle_ones_later() {
    let registrar = tcp_registrar().await;
    let dir = TempDir::new("hostile-cap");
    let idle = Duration::from_secs(6);
    let cap = 200;
    let daemon = start_daemon(
        &dir,
        &registrar,
        ConnectionLimits {
            max_connections: cap,
            max_connections_per_ip: 100_000,
            idle_timeout: idle,
        },
    )
    .await;
    // The daemon raised this process's open-files limit; the test's own sockets count too.
    let open_files = uacreg::descriptors::raise_open_files_limit()
        .map(|f| f.soft)
        .unwrap_or(1024);
    let total = 1000.min(usize::try_from(open_files / 2).map_or(1000, |n| n.saturating_sub(300)));
    assert!(
        total > cap,
        "open-files limit {open_files} too low for this test"
    );

    let start = Instant::now();
    let mut readers = Vec::new();
    for _ in 0..total {
        let mut stream = TcpStream::connect(daemon.sip_addr())
            .await
            .expect("connect");
        readers.push(tokio::spawn(async move {
            // When the daemon closed it, counted from the start (None: still open at 30 s).
            closed_within(&mut stream, Duration::from_secs(30))
                .await
                .then(|| start.elapsed())
        }));
    }
    let opened = start.elapsed();
    assert!(opened < idle / 2, "opening took {opened:?}");
    let refused = wait_until(Duration::from_secs(3), || async {
        stats(&daemon).await.connections_refused == (total - cap) as u64
    })
    .await;
    let now = stats(&daemon).await;
    assert!(refused, "{now:?}");
    assert_eq!(now.inbound_connections, cap);
    assert!(rpc_answers(&rpc(&daemon)).await);
    // Our own connections do not count against the cap: the rows' bindings move to a new
    // connection while all the places are taken.
    assert!(rows_register_again(&registrar).await);
    assert_eq!(stats(&daemon).await.inbound_connections, cap);

    let mut closed_at = Vec::new();
    for reader in readers {
        closed_at.push(reader.await.unwrap());
    }
    let at_once = closed_at
        .iter()
        .filter(|at| at.is_some_and(|t| t < idle))
        .count();
    let when_idle = closed_at
        .iter()
        .filter(|at| at.is_some_and(|t| t >= idle && t < idle + opened + Duration::from_secs(5)))
        .count();
    assert_eq!(at_once, total - cap, "{closed_at:?}");
    assert_eq!(when_idle, cap, "{closed_at:?}");
    let after = stats(&daemon).await;
    assert_eq!(after.connections_idle_closed, cap as u64);
    assert_eq!(after.connections_refused, (total - cap) as u64);
    assert_eq!(after.connections_refused_per_ip, 0);
    assert_eq!(after.inbound_connections, 0);
    assert_eq!(registered_count(&daemon).await, ROWS);
    daemon.stop().await;
    registrar.stop().await;
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
        from_two.push(connect_from("127.0.0.2", gateway).await);
    }
    let mut from_three = Vec::new();
    for _ in 0..4 {
        from_three.push(connect_from("127.0.0.3", gateway).await);
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
    let mut again = connect_from("127.0.0.2", gateway).await;
    assert!(!closed_within(&mut again, Duration::from_millis(500)).await);
    let after = stats(&daemon).await;
    assert_eq!(after.connections_refused_per_ip, 2, "{after:?}");
    assert_eq!(after.connections_refused, 0);
    assert_eq!(after.inbound_connections, 5);
    assert!(rpc_answers(&rpc(&daemon)).await);
    daemon.stop().await;
    registrar.stop().await;
}

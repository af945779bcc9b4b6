//! The tools the cluster tests stand on, tested on their own: the cuttable TCP link between a
//! node and its database (`support::tcp_cut`), and the registrar's overlap and gap records on
//! real uacregd processes sharing one PostgreSQL database (`support::cluster`).

mod support;

use std::collections::{BTreeSet, HashSet};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use support::cluster::{self, Cluster};
use support::dbserver::{DbServer, Engine, require_engine};
use support::tcp_cut::{CutMode, TcpCut};
use uacreg::testing::registrar::{RegistrarConfig, TestRegistrar};

const UACREGD: &str = env!("CARGO_BIN_EXE_uacregd");

/// A loopback TCP server that writes back whatever it reads, one thread per connection, until
/// dropped.
struct EchoServer {
    addr: SocketAddr,
    stopping: Arc<AtomicBool>,
}

impl EchoServer {
    fn start() -> EchoServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("address");
        let stopping = Arc::new(AtomicBool::new(false));
        let stop = stopping.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(mut conn) = conn else { continue };
                std::thread::spawn(move || {
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = conn.read(&mut buf) {
                        if n == 0 || conn.write_all(&buf[..n]).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        EchoServer { addr, stopping }
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
    }
}

fn connect(cut: &TcpCut) -> TcpStream {
    let stream = TcpStream::connect_timeout(&cut.addr(), Duration::from_secs(2)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_millis(400)))
        .expect("timeout");
    stream
}

/// What one read gives within the stream's timeout.
#[derive(Debug, PartialEq, Eq)]
enum Read1 {
    Data(Vec<u8>),
    /// The connection was closed (EOF or reset).
    Closed,
    /// Nothing arrived in time.
    Silent,
}

fn read_once(stream: &mut TcpStream) -> Read1 {
    let mut buf = [0u8; 256];
    match stream.read(&mut buf) {
        Ok(0) => Read1::Closed,
        Ok(n) => Read1::Data(buf[..n].to_vec()),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            Read1::Silent
        }
        Err(_) => Read1::Closed,
    }
}

/// Sends `word` and expects it back.
fn echoes(stream: &mut TcpStream, word: &str) {
    stream.write_all(word.as_bytes()).expect("write");
    assert_eq!(read_once(stream), Read1::Data(word.as_bytes().to_vec()));
}

/// A new connection through `cut` is closed before anything comes back.
fn refused(cut: &TcpCut) {
    // The reset may already have arrived when connect returns, or only when we read.
    let Ok(mut stream) = TcpStream::connect_timeout(&cut.addr(), Duration::from_secs(2)) else {
        return;
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    let _ = stream.write_all(b"anyone?");
    assert_eq!(read_once(&mut stream), Read1::Closed);
}

/// Polls `done` every 10 ms for up to 5 s.
fn eventually(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !done() {
        assert!(Instant::now() < deadline, "not within 5 s: {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_cut_link_refuses_blackholes_freezes_and_heals() {
    let echo = EchoServer::start();
    let cut = TcpCut::start(echo.addr).expect("proxy starts");
    assert_eq!(cut.upstream(), echo.addr);
    let mut first = connect(&cut);
    echoes(&mut first, "hello");
    assert_eq!(cut.open_connections(), 1);

    // Refuse: the open connection is closed, a new one is reset.
    cut.cut(CutMode::Refuse);
    assert_eq!(cut.cut_mode(), Some(CutMode::Refuse));
    assert_eq!(read_once(&mut first), Read1::Closed);
    refused(&cut);
    assert_eq!(cut.open_connections(), 0);
    cut.restore();
    assert_eq!(cut.cut_mode(), None);
    let mut second = connect(&cut);
    echoes(&mut second, "again");

    // Blackhole: the open connection is closed; a new one is accepted and hears nothing until
    // the link is restored, then gets its echo.
    cut.cut(CutMode::Blackhole);
    assert_eq!(read_once(&mut second), Read1::Closed);
    let mut held = connect(&cut);
    held.write_all(b"into the void").expect("write");
    assert_eq!(read_once(&mut held), Read1::Silent);
    assert_eq!(cut.held_connections(), 1);
    cut.restore();
    assert_eq!(read_once(&mut held), Read1::Data(b"into the void".to_vec()));
    assert_eq!(cut.held_connections(), 0);

    // Freeze: the open connection stays open and silent, then carries on.
    cut.cut(CutMode::Freeze);
    held.write_all(b"frozen").expect("write");
    assert_eq!(read_once(&mut held), Read1::Silent);
    assert_eq!(cut.open_connections(), 1);
    cut.restore();
    assert_eq!(read_once(&mut held), Read1::Data(b"frozen".to_vec()));

    let sent = ["hello", "again", "into the void", "frozen"]
        .iter()
        .map(|w| w.len() as u64)
        .sum::<u64>();
    // The proxy counts bytes after it has written them: the client can read its echo before
    // the count moves.
    eventually("every byte is counted both ways", || {
        let stats = cut.stats();
        (stats.bytes_to_upstream, stats.bytes_to_client) == (sent, sent)
    });
    let stats = cut.stats();
    assert_eq!(stats.forwarded, 3, "{stats:?}");
    assert_eq!(stats.refused, 1, "{stats:?}");
    assert_eq!(stats.held, 1, "{stats:?}");
    assert_eq!(stats.closed_by_cut, 2, "{stats:?}");
}

#[test]
fn a_cut_link_holds_at_most_its_limit() {
    let echo = EchoServer::start();
    let cut = TcpCut::with_limit(echo.addr, 2).expect("proxy starts");
    let mut a = connect(&cut);
    let mut b = connect(&cut);
    echoes(&mut a, "a");
    echoes(&mut b, "b");
    refused(&cut);
    assert_eq!(cut.stats().refused, 1);
    // A place frees when a client leaves.
    drop(a);
    eventually("the closed link is forgotten", || {
        cut.open_connections() == 1
    });
    let mut c = connect(&cut);
    echoes(&mut c, "c");
    // Frozen connections still count.
    cut.cut(CutMode::Freeze);
    refused(&cut);
    assert_eq!(cut.stats().refused, 2);
    // So do held ones.
    cut.cut(CutMode::Blackhole);
    assert_eq!(cut.open_connections(), 0);
    let _held = [connect(&cut), connect(&cut)];
    eventually("two held", || cut.held_connections() == 2);
    refused(&cut);
    assert_eq!(cut.stats().refused, 3);
    assert_eq!(cut.held_connections(), 2);
    drop(b);
    drop(c);
}

#[test]
fn a_cut_link_to_nowhere_resets_its_clients() {
    // A port nobody listens on: taken, then released.
    let gone = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a port");
    let cut = TcpCut::start(gone).expect("proxy starts");
    refused(&cut);
    assert_eq!(cut.stats().refused, 1);
    assert_eq!(cut.stats().forwarded, 0);
}

/// Rows in the real-process test, and the expiry they ask for (refreshed about every 5 s).
const ROWS: usize = 50;
const EXPIRES: u32 = 10;

/// One uacregd alone keeps every row bound without overlaps or gaps across more than a whole
/// expiry; a second node on the same PostgreSQL database, without clustering, registers every
/// row again under its own Call-IDs: an overlap on every AoR, between the two nodes' addresses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_unclustered_nodes_on_one_database_overlap_on_every_row() {
    if !require_engine(Engine::Postgres) {
        return;
    }
    let server = tokio::task::spawn_blocking(|| DbServer::start(Engine::Postgres))
        .await
        .expect("set-up ran")
        .expect("PostgreSQL starts");
    let registrar = TestRegistrar::start(RegistrarConfig {
        users: cluster::accounts(ROWS),
        ..RegistrarConfig::default()
    })
    .await
    .expect("registrar starts");
    let rows = cluster::rows(ROWS, registrar.local_addr(), EXPIRES);
    let url = server.url();
    tokio::task::spawn_blocking(move || cluster::write_rows(&url, &rows))
        .await
        .expect("set-up ran")
        .expect("rows written");

    let mut nodes = tokio::task::block_in_place(|| Cluster::start(UACREGD, &server, &[""]))
        .expect("one node starts");
    assert_eq!(nodes.db_url(), server.url());
    if let Err(why) = cluster::wait_all_bound(&registrar, ROWS, Duration::from_secs(60)).await {
        panic!("{why}\n{}", nodes.logs(30));
    }
    // Every row refreshes at least once meanwhile.
    let ok_before = registrar.stats().ok;
    tokio::time::sleep(Duration::from_secs(u64::from(EXPIRES) + 2)).await;
    let refreshed = registrar.stats().ok - ok_before;
    assert!(refreshed >= ROWS as u64, "{refreshed} refreshes");
    assert_eq!(registrar.overlaps(), [], "one node alone");
    assert_eq!(registrar.gaps(), [], "one node alone");
    assert_eq!(registrar.unregisters(), 0);
    let first = nodes.node(0).sip();
    let journal = registrar.journal(&cluster::user(7));
    assert!(
        journal.iter().all(|e| e.binding.source == first),
        "{journal:?}"
    );
    // The database link carried the node's queries.
    assert!(nodes.node(0).db_link.stats().forwarded >= 1);

    tokio::task::block_in_place(|| nodes.add_node("")).expect("a second node starts");
    let second = nodes.node(1).sip();
    let deadline = Instant::now() + Duration::from_secs(60);
    let overlapped = loop {
        let users: BTreeSet<String> = registrar.overlaps().into_iter().map(|o| o.user).collect();
        if users.len() >= ROWS || Instant::now() >= deadline {
            break users;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        overlapped.len(),
        ROWS,
        "AoRs with an overlap: {overlapped:?}\n{}",
        nodes.logs(30)
    );
    let overlaps = registrar.overlaps();
    let sources: HashSet<SocketAddr> = [first, second].into();
    for overlap in &overlaps {
        assert_ne!(
            overlap.arriving.call_id, overlap.live.call_id,
            "{overlap:?}"
        );
        assert_eq!(
            HashSet::from([overlap.arriving.source, overlap.live.source]),
            sources,
            "{overlap:?}"
        );
        assert!(overlap.live.expires_at > overlap.at, "{overlap:?}");
    }
    // Two clients, but each row was bound all along.
    assert_eq!(registrar.gaps(), []);
    assert_eq!(registrar.bound_users(), ROWS);
    assert_eq!(registrar.binding_count(), 2 * ROWS);
    tokio::task::block_in_place(|| nodes.stop_all(Duration::from_secs(10)));
    assert_eq!(registrar.unregisters(), 0, "unregister_on_shutdown is off");
}

/// A node can be paused (alive, silent), resumed, killed without a word, and started again on
/// the same database link; a node whose link is refused keeps running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_pauses_resumes_dies_and_comes_back() {
    if !require_engine(Engine::Postgres) {
        return;
    }
    let server = tokio::task::spawn_blocking(|| DbServer::start(Engine::Postgres))
        .await
        .expect("set-up ran")
        .expect("PostgreSQL starts");
    let mut nodes = tokio::task::block_in_place(|| Cluster::start(UACREGD, &server, &["", ""]))
        .expect("two nodes start");
    assert_eq!(nodes.len(), 2);
    assert_ne!(nodes.db_url_of(0), nodes.db_url_of(1));
    let answers = |nodes: &Cluster, i: usize| {
        nodes
            .node(i)
            .daemon()
            .call("uacreg.status", "")
            .is_ok_and(|a| a.contains("\"result\""))
    };

    tokio::task::block_in_place(|| {
        let pid = nodes.node(0).daemon().pid();
        nodes.node_mut(0).daemon_mut().sigstop().expect("SIGSTOP");
        eventually("the paused node is in state T", || {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
                s.rsplit_once(')')
                    .is_some_and(|(_, r)| r.trim_start().starts_with('T'))
            })
        });
        assert!(!answers(&nodes, 0), "a paused node answered");
        assert!(answers(&nodes, 1));
        nodes.node_mut(0).daemon_mut().sigcont().expect("SIGCONT");
        assert!(answers(&nodes, 0), "{}", nodes.logs(20));

        nodes.node_mut(1).daemon_mut().kill9().expect("SIGKILL");
        let died = nodes.node(1).daemon().exits_within(Duration::from_secs(5));
        assert!(died.is_some(), "still running after SIGKILL");
        assert!(
            nodes.node_mut(1).daemon_mut().kill9().is_err(),
            "signalled a dead node"
        );
        nodes.restart_node(1).expect("restarts");
        assert!(answers(&nodes, 1), "{}", nodes.logs(20));

        // Its database gone (refused), the node lives on and answers.
        let before = nodes.node(0).db_link.stats();
        nodes.node(0).db_link.cut(CutMode::Refuse);
        assert!(answers(&nodes, 0));
        assert!(!nodes.node(0).daemon().has_exited());
        nodes.node(0).db_link.restore();
        assert!(before.forwarded >= 1, "{before:?}");

        // A paused node is still stopped cleanly.
        nodes.node_mut(0).daemon_mut().sigstop().expect("SIGSTOP");
        let status = nodes.stop_node(0, Duration::from_secs(10));
        assert!(status.is_some_and(|s| s.success()), "{status:?}");
        assert!(!nodes.node(0).is_started());
        nodes.stop_all(Duration::from_secs(10));
    });
}

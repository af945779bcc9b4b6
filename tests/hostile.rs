//! The attack suite: uacregd in a process of its own, with 2,000 rows registering and refreshing
//! against the in-repo registrar, is attacked on its SIP port (or its registrar or database
//! misbehaves) while a watcher asks JSON-RPC for its status every quarter second and reads its
//! resident memory ([`scene`]).
//!
//! Every case ends with the same verdict ([`Scene::assert_unharmed`]): the process is alive,
//! JSON-RPC answered every probe within a second, memory stayed within a bound, no binding
//! lapsed at the registrar before its refresh came, and every row is registered. Each case also
//! checks the counters that show what was dropped or refused, exactly where the number is
//! known, and prints what it saw (`cargo test --test hostile -- --nocapture`).
//!
//! Rows ask for 30-second bindings, so a case that lasts half a minute sees every row refresh
//! while it is attacked. Loopback addresses stand for the parties: the daemon is on 127.0.0.1,
//! the registrar (trusted: rows are bound to it) on 127.0.0.3, would-be victims of reflection
//! on 127.0.0.4, and strangers everywhere else in 127.0.0.0/8.
//!
//! The same attacks in isolation, against a daemon in the test process: `tests/spoofing.rs`,
//! `tests/inbound_trust.rs`, `tests/hostile_streams.rs`.

mod common;
mod support;

#[path = "hostile/garbage.rs"]
mod garbage;
#[path = "hostile/scene.rs"]
mod scene;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use uacreg::store::Store;
use uacreg::testing::registrar::{Behavior, RegistrarConfig, SeenRequest};

use scene::{
    Counters, EXPIRES, REFRESH_PERIOD, REGISTRAR_IP, ROWS, Scene, SceneSetup, l_uuid, user,
};
use support::process;
use support::stranger::{
    FORGED_IDENTITY, assert_identity_stripped, assert_silent, bytes_before_close, closed_within,
    connect_from, drain, forged_relay_branches, forged_relay_response, guessed_branches, invite,
    options, recv_within, register_response, udp, with_wrong_ids,
};
use support::uacregd::{cpu_ticks, udp_drops};

/// Headers that would tell a stranger what runs here, or more than that a SIP endpoint exists.
const REVEALING: [&str; 5] = ["Server:", "User-Agent:", "Allow:", "Accept:", "uacreg"];

/// Answers per second the daemon gives strangers, all together (`[inbound] reply_rate`'s
/// default).
const REPLY_RATE: u64 = 20;

/// The most answers strangers can have had in `elapsed`: a full bucket, then the rate.
fn reply_budget(elapsed: Duration) -> u64 {
    REPLY_RATE + (elapsed.as_secs_f64() * REPLY_RATE as f64).ceil() as u64
}

/// Counters of the inbound side whose outcome is an answer to the sender.
const ANSWERED: [&str; 4] = [
    "inbound.requests.options_answered",
    "inbound.requests.rejected",
    "inbound.requests.unknown_user",
    "inbound.requests.refused_untrusted",
];

// ---- TCP: framing and connections ----

/// Byte streams that break the framing rules, each closing its connection before anything is
/// answered: first the one-message kill of issue 13, a `Content-Length` that made
/// `body_start + body_len` wrap (the loop then spun at full CPU and grew by gigabytes).
fn framing_attacks() -> Vec<(&'static str, Vec<u8>)> {
    let with_length = |value: &str| {
        format!(
            "REGISTER sip:x SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:9\r\nContent-Length: {value}\r\n\r\n\
             OPTIONS sip:x SIP/2.0\r\n"
        )
        .into_bytes()
    };
    // The head with an empty value: its length plus the digits is where the body starts.
    let head = "REGISTER sip:x SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:9\r\nContent-Length: \r\n\r\n";
    let head = head.len() as u64;
    let mut huge_head = b"OPTIONS sip:x SIP/2.0\r\nX-Pad: ".to_vec();
    huge_head.resize(70_000, b'a');
    let mut many_headers = b"OPTIONS sip:x SIP/2.0\r\n".to_vec();
    while many_headers.len() < 70_000 {
        many_headers.extend_from_slice(b"X: y\r\n");
    }
    vec![
        ("Content-Length u64::MAX", with_length(&u64::MAX.to_string())),
        (
            "Content-Length u64::MAX less the head",
            with_length(&(u64::MAX - head).to_string()),
        ),
        (
            "Content-Length u64::MAX less the head, plus one",
            with_length(&(u64::MAX - head + 1).to_string()),
        ),
        ("Content-Length beyond u64", with_length("184467440737095516160")),
        ("Content-Length one past the limit", with_length("65536")),
        ("negative Content-Length", with_length("-1")),
        ("hexadecimal Content-Length", with_length("0x10")),
        (
            "two Content-Lengths",
            b"OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:9\r\nContent-Length: 0\r\nl: 10\r\n\r\n"
                .to_vec(),
        ),
        (
            "no Content-Length",
            b"OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:9\r\n\r\n".to_vec(),
        ),
        ("a 70,000-byte header", huge_head),
        ("a head of 70,000 bytes of headers", many_headers),
    ]
}

/// Every framing attack, ten times each from an address of its own: each connection is closed
/// with nothing said, counted, and the daemon's CPU goes back to idling; the rows registering
/// over TCP register again when the registrar drops their connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn framing_attacks_close_their_connections_and_nothing_else() {
    const ROUNDS: usize = 10;
    let scene = Scene::start("framing", SceneSetup::with_tcp_rows()).await;
    let watch = scene.watch();
    let before = scene.counters().await;
    let sip = scene.sip();
    let attacks = framing_attacks();
    let mut attackers = JoinSet::new();
    for (i, (name, bytes)) in attacks.iter().cloned().enumerate() {
        let ip = format!("127.0.2.{}", i + 1);
        attackers.spawn(async move {
            for round in 0..ROUNDS {
                let mut stream = connect_from(&ip, sip).await.expect("connect");
                // A head over the limit may be cut off while it is written: a failed write is
                // the daemon closing, which the read below sees.
                let _ = stream.write_all(&bytes).await;
                let answered = bytes_before_close(&mut stream, Duration::from_secs(5)).await;
                assert_eq!(
                    answered,
                    Some(0),
                    "{name} (round {round}): closed with nothing said"
                );
            }
        });
    }
    while let Some(done) = attackers.join_next().await {
        done.expect("attacker ran");
    }
    let connections = (attacks.len() * ROUNDS) as u64;

    // Five seconds of idling: the old loop used a whole core (500 ticks in 5 s).
    let pid = scene.daemon.pid();
    let cpu_before = cpu_ticks(pid).expect("CPU time");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let cpu_used = cpu_ticks(pid).expect("CPU time") - cpu_before;
    assert!(
        cpu_used < 250,
        "{cpu_used} CPU ticks in 5 s after the attacks"
    );
    scene.tcp_rows_register_again().await;

    scene.verdict(watch).await;
    let after = scene.counters().await;
    after.assert_grew(&before, "connections_unframeable", connections);
    after.assert_grew(&before, "connections_accepted", connections);
    after.assert_grew(&before, "connections_refused", 0);
    assert_eq!(after.get("inbound_connections"), 0);
    eprintln!(
        "framing: {connections} connections ({} attacks × {ROUNDS}) closed unframeable, \
         {cpu_used} CPU ticks in the 5 s after",
        attacks.len()
    );
    scene.stop();
}

/// One wave of idle connections: each task connects, sends nothing, and waits, reading, until
/// the daemon closes its connection.
struct IdleWave {
    tasks: JoinSet<(Instant, Option<Instant>)>,
    /// How long opening every connection took.
    opened_in: Duration,
}

impl IdleWave {
    /// Opens `count` connections to the scene's SIP port, `per_source` from each loopback
    /// address, and returns once all are open. They are opened 100 at a time, each batch once
    /// the daemon has taken (accepted or refused) the one before: more at once would overflow
    /// the listener's accept queue (128, the standard library's backlog), and the kernel would
    /// drop the surplus SYNs for the clients to retry a second later, or hold connections
    /// half-open out of the daemon's sight. Each connection is watched until it closes or
    /// `limit` passes.
    async fn open(scene: &Scene, count: usize, per_source: usize, limit: Duration) -> IdleWave {
        const BATCH: usize = 100;
        let taken = [
            "connections_accepted",
            "connections_refused",
            "connections_refused_per_ip",
        ];
        let sip = scene.sip();
        let before = scene.counters().await;
        let started = Instant::now();
        let mut tasks = JoinSet::new();
        let mut n = 0;
        while n < count {
            let batch = BATCH.min(count - n);
            let (connected_tx, mut connected_rx) = mpsc::channel(batch);
            for n in n..n + batch {
                let source = n / per_source;
                let ip = format!("127.1.{}.{}", source / 250, source % 250 + 1);
                let connected = connected_tx.clone();
                tasks.spawn(async move {
                    let stream = connect_from(&ip, sip).await;
                    let opened = Instant::now();
                    let outcome = stream.as_ref().map(|_| ()).map_err(|e| e.to_string());
                    let _ = connected.send(outcome).await;
                    let Ok(mut stream) = stream else {
                        return (opened, None);
                    };
                    let closed = closed_within(&mut stream, limit).await;
                    (opened, closed.then(Instant::now))
                });
            }
            drop(connected_tx);
            for _ in 0..batch {
                let connected = tokio::time::timeout(Duration::from_secs(10), connected_rx.recv())
                    .await
                    .expect("a batch of connections opened within 10 s")
                    .expect("a connecting task");
                connected.expect("connect");
            }
            n += batch;
            let now = scene
                .counters_when(Duration::from_secs(10), |now| {
                    now.sum_since(&before, &taken) == n as u64
                })
                .await;
            assert_eq!(
                now.sum_since(&before, &taken),
                n as u64,
                "connections the daemon took: {}",
                now.0
            );
        }
        IdleWave {
            tasks,
            opened_in: started.elapsed(),
        }
    }

    /// How long each connection stayed open (None: not closed within the limit).
    async fn lifetimes(mut self) -> Vec<Option<Duration>> {
        let mut lifetimes = Vec::new();
        while let Some(done) = self.tasks.join_next().await {
            let (opened, closed) = done.expect("connection task");
            lifetimes.push(closed.map(|at| at - opened));
        }
        lifetimes
    }
}

/// Waves of 5,000 idle connections from 500 addresses (ten each, under the per-address cap of
/// 16) against a cap of 1,000, for a refresh period: in each wave the 4,000 beyond the cap are
/// closed at once and the 1,000 inside it when they have been idle for the timeout. Meanwhile
/// the rows registering over TCP register again over a connection of the daemon's own, which
/// takes none of the places.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waves_of_5000_idle_connections_get_1000_places_until_idle() {
    const CONNECTIONS: usize = 5_000;
    const CAP: usize = 1_000;
    const PER_SOURCE: usize = 10;
    const IDLE: Duration = Duration::from_secs(6);
    const MOST_WAVES: usize = 6;
    // This process holds every connection's other end.
    let files = uacreg::raise_open_files_limit().map_or(0, |f| f.soft);
    if !process::require("an open-files limit of 6,000", files >= 6_000, || {
        format!("the hard RLIMIT_NOFILE allows {files}")
    }) {
        return;
    }
    let mut setup = SceneSetup::with_tcp_rows();
    setup.extra_config = format!(
        "[limits]\nmax_connections = {CAP}\nidle_timeout_secs = {}\n",
        IDLE.as_secs()
    );
    let scene = Scene::start("idle-connections", setup).await;
    let watch = scene.watch();
    let before = scene.counters().await;
    let started = Instant::now();
    let mut waves = 0;
    while waves == 0 || (started.elapsed() < REFRESH_PERIOD && waves < MOST_WAVES) {
        let wave_before = scene.counters().await;
        let wave = IdleWave::open(&scene, CONNECTIONS, PER_SOURCE, IDLE * 3).await;
        let opened_in = wave.opened_in;
        // No place may come free while the wave opens, or a later connection could take it.
        assert!(opened_in < IDLE, "opening took {opened_in:?}");
        let places = |now: &Counters| {
            (
                now.since(&wave_before, "connections_refused"),
                now.get("inbound_connections"),
            )
        };
        let expected = ((CONNECTIONS - CAP) as u64, CAP as u64);
        let now = scene
            .counters_when(Duration::from_secs(10), |now| places(now) == expected)
            .await;
        assert_eq!(places(&now), expected, "(refused, held): {}", now.0);
        if waves == 0 {
            // Every place is taken: our own connection to the registrar is not one of them.
            scene.tcp_rows_register_again().await;
        }
        // A connection's life is counted from when its task saw it open, which can be a
        // little after the daemon accepted it: "at once" is well before the idle timeout,
        // "when idle" around it.
        let lifetimes = wave.lifetimes().await;
        let (at_once, when_idle): (Vec<Duration>, Vec<Duration>) =
            lifetimes.iter().flatten().partition(|t| **t < IDLE / 2);
        let slowest_refusal = at_once.iter().max().copied().unwrap_or_default();
        let (first_idle, last_idle) = (
            when_idle.iter().min().copied().unwrap_or_default(),
            when_idle.iter().max().copied().unwrap_or_default(),
        );
        assert_eq!(lifetimes.len(), CONNECTIONS);
        assert_eq!(
            at_once.len(),
            CONNECTIONS - CAP,
            "wave {waves}: closed at once"
        );
        assert_eq!(when_idle.len(), CAP, "wave {waves}: closed when idle");
        assert!(
            first_idle >= IDLE - Duration::from_secs(1)
                && last_idle < IDLE + opened_in + Duration::from_secs(5),
            "wave {waves}: idle connections closed after {first_idle:?} to {last_idle:?}"
        );
        waves += 1;
        eprintln!(
            "idle connections: wave {waves} opened {CONNECTIONS} in {opened_in:?}; {} closed at \
             once (slowest {slowest_refusal:?}), {} when idle ({first_idle:?} to {last_idle:?})",
            at_once.len(),
            when_idle.len()
        );
    }

    scene.verdict(watch).await;
    let after = scene.counters().await;
    let waves = waves as u64;
    after.assert_grew(
        &before,
        "connections_refused",
        waves * (CONNECTIONS - CAP) as u64,
    );
    after.assert_grew(&before, "connections_idle_closed", waves * CAP as u64);
    after.assert_grew(&before, "connections_refused_per_ip", 0);
    assert_eq!(after.get("inbound_connections"), 0);
    eprintln!(
        "idle connections: {waves} waves, {} refused, {} idle-closed, {} accept errors",
        after.since(&before, "connections_refused"),
        after.since(&before, "connections_idle_closed"),
        after.since(&before, "accept_errors")
    );
    scene.stop();
}

// ---- UDP: garbage, forged responses, the relay, strangers' requests ----

/// 200,000 datagrams over a refresh period from eight sources: random bytes, requests and
/// responses cut short, relay-marked responses, whole requests, and 65,507-byte ones. Every one
/// the kernel handed over is counted under what became of it; the answers stay within the
/// budget and are never larger than what they answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_thousand_garbage_datagrams_are_counted_and_barely_answered() {
    const DATAGRAMS: usize = 200_000;
    let scene = Scene::start("garbage", SceneSetup::default()).await;
    let watch = scene.watch();
    let sip = scene.sip();
    let victim = udp("127.0.0.4").await;
    let victim_addr = victim.local_addr().expect("bound");
    let before = scene.counters().await;
    let drops_before = udp_drops(sip).expect("the daemon's socket in /proc/net/udp");
    let sources: Vec<String> = (1..=8).map(|i| format!("127.0.3.{i}")).collect();
    let mut flood = tokio::task::spawn_blocking(move || {
        garbage::flood(sip, victim_addr, &sources, DATAGRAMS, REFRESH_PERIOD)
    })
    .await
    .expect("the flood ran");

    // Where every datagram went: counted by the daemon, or dropped by the kernel before it
    // could read it (a full receive buffer).
    let handled = [
        "inbound.requests_received",
        "inbound.relay_responses_received",
        "malformed_dropped",
        "unmatched_responses",
    ];
    let drops = || udp_drops(sip).unwrap_or(0) - drops_before;
    let after = scene
        .counters_when(Duration::from_secs(10), |now| {
            now.sum_since(&before, &handled) + drops() >= flood.sent
        })
        .await;
    let (counted, drops) = (after.sum_since(&before, &handled), drops());
    assert!(
        counted <= flood.sent && counted + drops >= flood.sent,
        "{} sent, {counted} counted, {drops} dropped by the kernel: {}",
        flood.sent,
        after.0
    );
    after.assert_accounted();
    // Relay-marked responses with no inbound proxy: dropped as such, nothing relayed.
    let relay_marked = after.since(&before, "inbound.relay_responses_received");
    after.assert_grew(&before, "inbound.relay_responses.no_proxy", relay_marked);
    assert!(relay_marked <= flood.by_kind[&garbage::Kind::RelayMarked]);
    // Random branches match none of ours, not even by chance.
    after.assert_grew(&before, "responses_wrong_ids", 0);
    after.assert_grew(&before, "responses_wrong_source", 0);

    // The answers: as many as the daemon says it gave, within the budget, each no larger than
    // the datagram it answers and saying nothing about what runs here.
    flood.collect_late_answers();
    let answers = flood.answers.len() as u64;
    assert_eq!(answers, after.sum_since(&before, &ANSWERED), "{}", after.0);
    assert!(
        answers <= reply_budget(flood.elapsed),
        "{answers} answers in {:?}",
        flood.elapsed
    );
    for (answer, from) in &flood.answers {
        assert_eq!(*from, sip);
        let text = String::from_utf8_lossy(answer);
        let call_id = garbage::call_id(answer).unwrap_or_else(|| panic!("no Call-ID: {text}"));
        let asked = flood
            .request_len
            .get(&call_id)
            .unwrap_or_else(|| panic!("answer to what? {text}"));
        assert!(
            answer.len() <= *asked,
            "{} bytes answer {asked}: {text}",
            answer.len()
        );
        for revealing in REVEALING {
            assert!(!text.contains(revealing), "{revealing} in {text}");
        }
    }
    assert_silent(&victim, "the victim named in relay-marked responses").await;

    scene.verdict(watch).await;
    eprintln!(
        "garbage: {} datagrams in {:?} ({:?}); counted {counted} (requests {}, relay-marked {}, \
         malformed responses {}, unmatched responses {}), kernel drops {drops}; {answers} answers \
         (rate-limited {}, larger than the request {}, malformed requests {})",
        flood.sent,
        flood.elapsed,
        flood.by_kind,
        after.since(&before, "inbound.requests_received"),
        relay_marked,
        after.since(&before, "malformed_dropped"),
        after.since(&before, "unmatched_responses"),
        after.since(&before, "inbound.requests.replies_rate_limited"),
        after.since(&before, "inbound.requests.reply_larger_than_request"),
        after.since(&before, "inbound.requests.malformed"),
    );
    scene.stop();
}

/// What the spoofer sent, by the reason the daemon must give for dropping it.
#[derive(Debug, Default)]
struct Spoofed {
    wrong_ids: u64,
    wrong_source: u64,
    unknown_branch: u64,
    /// REGISTERs whose identifiers the spoofer used.
    requests: u64,
    /// REGISTERs seen too late to be sure their transaction was still held.
    skipped: u64,
}

/// A stranger on the path sees every REGISTER (the registrar's history stands in for a
/// capture) and, within two seconds of each, sprays final responses at the daemon: with the
/// request's branch but another Call-ID or CSeq, exactly right but from another address (the
/// registrar's own address with another port, another host, a TCP connection), and with
/// guessed branches. All this for a refresh period: no row leaves `registered`, and each
/// forgery is counted under its reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoofed_responses_while_rows_refresh_change_nothing() {
    // A forged response with a real branch is told apart by its identifiers or source while
    // the transaction is held: until timer K (T4, 5 s) after its answer. Two seconds after the
    // registrar saw the request leaves three for the forgery to arrive.
    const FRESH: Duration = Duration::from_secs(2);
    let mut setup = SceneSetup::default();
    setup.registrar.keep_history = true;
    let scene = Scene::start("spoofed-responses", setup).await;
    let watch = scene.watch();
    let sip = scene.sip();
    let before = scene.counters().await;
    let ok_before = scene.registrar.stats().ok;
    let near = udp(REGISTRAR_IP).await;
    let other_host = udp("127.0.0.2").await;
    let mut stream = connect_from("127.0.0.6", sip).await.expect("connect");
    // What the rows sent before the attack is not sprayed at: all 2,000 at once would only
    // overflow the daemon's socket buffer, and the kernel's drops are not what is tested here.
    let mut seen: Vec<usize> = (0..ROWS)
        .map(|i| scene.registrar.requests_for(&user(i)).len())
        .collect();
    let drops_before = udp_drops(sip).expect("the daemon's socket in /proc/net/udp");
    let mut spoofed = Spoofed::default();
    let started = Instant::now();
    while started.elapsed() < REFRESH_PERIOD {
        for (i, seen) in seen.iter_mut().enumerate() {
            let requests = scene.registrar.requests_for(&user(i));
            for request in &requests[*seen..] {
                if request.at.elapsed() > FRESH {
                    spoofed.skipped += 1;
                    continue;
                }
                spray(request, sip, &near, &other_host, &mut stream, &mut spoofed).await;
            }
            *seen = requests.len();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stream.flush().await.expect("flush");
    let total = spoofed.wrong_ids + spoofed.wrong_source + spoofed.unknown_branch;
    let after = scene
        .counters_when(Duration::from_secs(10), |now| {
            now.since(&before, "unmatched_responses") >= total
        })
        .await;
    let drops = udp_drops(sip).unwrap_or(0) - drops_before;
    let report = scene.verdict(watch).await;
    assert_eq!(
        report.least_registered,
        Some(ROWS as u64),
        "a row left registered"
    );
    assert_eq!(
        after.since(&before, "unmatched_responses"),
        total,
        "kernel drops {drops}: {}",
        after.0
    );
    after.assert_grew(&before, "responses_wrong_ids", spoofed.wrong_ids);
    after.assert_grew(&before, "responses_wrong_source", spoofed.wrong_source);
    after.assert_grew(&before, "responses_unknown_branch", spoofed.unknown_branch);
    for code in [403, 503] {
        assert!(
            !after.has_response(code),
            "a forged {code} was taken: {}",
            after.0
        );
    }
    // The rows did refresh under fire, and the registrar saw nothing but good credentials.
    let refreshed = scene.registrar.stats().ok - ok_before;
    assert!(refreshed >= ROWS as u64, "{refreshed} refreshes");
    assert!(
        spoofed.requests >= ROWS as u64 / 2,
        "only {} REGISTERs forged at: {spoofed:?}",
        spoofed.requests
    );
    assert_eq!(scene.registrar.stats().rejected, 0);
    eprintln!(
        "spoofed responses: {total} forged at {} REGISTERs ({spoofed:?}); {refreshed} refreshes \
         meanwhile",
        spoofed.requests
    );
    scene.stop();
}

/// The forgeries for one REGISTER the spoofer saw.
async fn spray(
    request: &SeenRequest,
    sip: SocketAddr,
    near: &tokio::net::UdpSocket,
    other_host: &tokio::net::UdpSocket,
    stream: &mut tokio::net::TcpStream,
    spoofed: &mut Spoofed,
) {
    let branch = request.branch.as_deref().expect("a Via branch");
    let (call_id, cseq) = (request.call_id.as_str(), request.cseq);
    for bytes in with_wrong_ids(branch, call_id, cseq) {
        near.send_to(&bytes, sip).await.expect("send");
        spoofed.wrong_ids += 1;
    }
    let exact = register_response(403, branch, call_id, cseq, "REGISTER");
    near.send_to(&exact, sip).await.expect("send");
    other_host.send_to(&exact, sip).await.expect("send");
    stream.write_all(&exact).await.expect("write");
    spoofed.wrong_source += 3;
    for guess in guessed_branches(branch, cseq) {
        let bytes = register_response(503, &guess, call_id, cseq, "REGISTER");
        near.send_to(&bytes, sip).await.expect("send");
        spoofed.unknown_branch += 1;
    }
    spoofed.requests += 1;
}

/// Relay-marked responses from a stranger (over UDP and TCP) and from the proxy's own address,
/// in every branch format there was, naming a victim and the daemon's connections to the
/// registrar: nothing leaves the SIP port to anyone, and each is counted as from the wrong
/// source or with a bad MAC.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_relay_responses_leave_nothing_on_the_wire() {
    const ROUNDS: usize = 200;
    let proxy = udp("127.0.0.1").await;
    let mut setup = SceneSetup::with_tcp_rows();
    setup.extra_config = format!(
        "[inbound]\nproxy = \"{}\"\n",
        proxy.local_addr().expect("bound")
    );
    let scene = Scene::start("rly-injection", setup).await;
    let watch = scene.watch();
    let sip = scene.sip();
    let before = scene.counters().await;
    let registrar_before = scene.registrar.stats();
    let drops_before = udp_drops(sip).expect("the daemon's socket in /proc/net/udp");
    let victim = udp("127.0.0.4").await;
    let stranger = udp("127.0.0.2").await;
    let mut stream = connect_from("127.0.0.2", sip).await.expect("connect");
    let branches = forged_relay_branches(sip, victim.local_addr().expect("bound"), 8);
    let (mut from_stranger, mut from_proxy) = (0u64, 0u64);
    for round in 0..ROUNDS {
        for branch in &branches {
            let forged = forged_relay_response(sip, branch, victim.local_addr().expect("bound"));
            stranger
                .send_to(forged.as_bytes(), sip)
                .await
                .expect("send");
            proxy.send_to(forged.as_bytes(), sip).await.expect("send");
            from_stranger += 1;
            from_proxy += 1;
            if round % 10 == 0 {
                stream.write_all(forged.as_bytes()).await.expect("write");
                from_stranger += 1;
            }
        }
        if round % 20 == 19 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let total = from_stranger + from_proxy;
    scene
        .counters_when(Duration::from_secs(10), |now| {
            now.since(&before, "inbound.relay_responses_received") >= total
        })
        .await;
    // Nothing left the port: not to the victim, the proxy, the stranger, onto the stranger's
    // connection, nor onto the daemon's connection to the registrar.
    assert_silent(&victim, "the victim").await;
    assert_silent(&proxy, "the proxy").await;
    assert_silent(&stranger, "the stranger").await;
    let mut buf = [0u8; 1024];
    let read = tokio::time::timeout(Duration::from_millis(400), stream.read(&mut buf)).await;
    assert!(read.is_err(), "the stranger's connection got {read:?}");
    assert_eq!(
        scene.registrar.stats().malformed,
        registrar_before.malformed
    );

    scene.verdict(watch).await;
    let after = scene.counters().await;
    after.assert_grew(&before, "inbound.relay_responses_received", total);
    after.assert_grew(
        &before,
        "inbound.relay_responses.wrong_source",
        from_stranger,
    );
    after.assert_grew(&before, "inbound.relay_responses.bad_mac", from_proxy);
    after.assert_grew(&before, "inbound.relay_responses.relayed", 0);
    after.assert_accounted();
    eprintln!(
        "rly- injection: {total} forged ({from_stranger} from a stranger, {from_proxy} from the \
         proxy's address), nothing sent; kernel drops {}",
        udp_drops(sip).unwrap_or(0) - drops_before
    );
    scene.stop();
}

/// A scene after [`forged_identity_calls`].
struct IdentityCalls {
    scene: Scene,
    watch: scene::Watch,
    /// What the proxy received.
    at_proxy: Vec<String>,
    before: Counters,
    after: Counters,
}

/// INVITEs for registered contacts with forged identity headers, 200 from twenty strangers and
/// five from the registrar's address, against a scene whose `[inbound]` policy for strangers
/// is `untrusted`; checks what holds for both policies.
async fn forged_identity_calls(untrusted: &str) -> IdentityCalls {
    const STRANGERS: usize = 20;
    const CALLS_EACH: usize = 10;
    const TRUSTED: usize = 5;
    let proxy = udp("127.0.0.1").await;
    let setup = SceneSetup {
        extra_config: format!(
            "[inbound]\nproxy = \"{}\"\nuntrusted = \"{untrusted}\"\n",
            proxy.local_addr().expect("bound")
        ),
        ..SceneSetup::default()
    };
    let scene = Scene::start(&format!("identity-{untrusted}"), setup).await;
    let watch = scene.watch();
    let sip = scene.sip();
    let before = scene.counters().await;
    let expected_at_proxy = match untrusted {
        "strip" => STRANGERS * CALLS_EACH + TRUSTED,
        _ => TRUSTED,
    };
    let collector = tokio::spawn(async move {
        let mut received = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(15);
        while received.len() < expected_at_proxy && Instant::now() < deadline {
            if let Some((text, _)) = recv_within(&proxy, Duration::from_millis(500)).await {
                received.push(text);
            }
        }
        // Anything beyond what was expected.
        while Instant::now() < deadline + Duration::from_secs(2) {
            match recv_within(&proxy, Duration::from_millis(500)).await {
                Some((text, _)) => received.push(text),
                None => break,
            }
        }
        received
    });
    let mut strangers = Vec::new();
    for s in 0..STRANGERS {
        strangers.push(udp(&format!("127.0.4.{}", s + 1)).await);
    }
    for call in 0..CALLS_EACH {
        for (s, stranger) in strangers.iter().enumerate() {
            let row = (s * CALLS_EACH + call) * 7 % ROWS;
            invite_with_forged_identity(stranger, sip, row, &format!("stranger-{s}-{call}")).await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let registrar_side = udp(REGISTRAR_IP).await;
    for call in 0..TRUSTED {
        invite_with_forged_identity(&registrar_side, sip, call, &format!("trusted-{call}")).await;
    }
    let total = (STRANGERS * CALLS_EACH + TRUSTED) as u64;
    scene
        .counters_when(Duration::from_secs(10), |now| {
            now.since(&before, "inbound.requests_received") >= total
        })
        .await;
    let at_proxy = collector.await.expect("collector ran");
    // The strangers' answers: 404s within the budget, nothing more.
    let mut answers = 0u64;
    for stranger in &strangers {
        for (answer, _) in drain(stranger) {
            let text = String::from_utf8_lossy(&answer);
            assert!(text.starts_with("SIP/2.0 404 Not Found\r\n"), "{text}");
            answers += 1;
        }
    }
    let after = scene.counters().await;
    after.assert_grew(&before, "inbound.requests_received", total);
    assert_eq!(answers, after.sum_since(&before, &ANSWERED), "{}", after.0);
    after.assert_accounted();
    // Trusted calls are relayed as they were sent (the Request-URI rewritten, our Via on top).
    let trusted: Vec<&String> = at_proxy
        .iter()
        .filter(|m| m.contains("Call-ID: trusted-"))
        .collect();
    assert_eq!(trusted.len(), TRUSTED, "{at_proxy:?}");
    for relayed in &trusted {
        assert!(relayed.starts_with("INVITE sip:local0000"), "{relayed}");
        assert!(
            relayed.contains(FORGED_IDENTITY),
            "trusted: identity kept: {relayed}"
        );
    }
    after.assert_grew(&before, "inbound.requests.relayed_trusted", TRUSTED as u64);
    IdentityCalls {
        scene,
        watch,
        at_proxy,
        before,
        after,
    }
}

/// Sends from `socket` an INVITE for row `row`'s contact with [`FORGED_IDENTITY`], `call`
/// naming its Call-ID and branch.
async fn invite_with_forged_identity(
    socket: &tokio::net::UdpSocket,
    sip: SocketAddr,
    row: usize,
    call: &str,
) {
    let me = socket.local_addr().expect("bound");
    let via = format!("SIP/2.0/UDP {me};branch=z9hG4bK{call};rport");
    let ruri = format!("sip:{}@{sip}", l_uuid(row));
    let request = invite(&via, &ruri, call, FORGED_IDENTITY);
    socket.send_to(request.as_bytes(), sip).await.expect("send");
}

/// `untrusted = "drop"`: not one of the strangers' INVITEs reaches the proxy; each is refused
/// (answered as for an unknown user, within the budget). The registrar's are relayed as sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_identities_from_strangers_are_dropped() {
    let calls = forged_identity_calls("drop").await;
    let (at_proxy, before, after) = (&calls.at_proxy, &calls.before, &calls.after);
    let from_strangers = at_proxy
        .iter()
        .filter(|m| !m.contains("Call-ID: trusted-"))
        .count();
    assert_eq!(from_strangers, 0, "{at_proxy:?}");
    let refused = [
        "inbound.requests.refused_untrusted",
        "inbound.requests.replies_rate_limited",
    ];
    assert_eq!(after.sum_since(before, &refused), 200, "{}", after.0);
    after.assert_grew(before, "inbound.requests.relayed_stripped", 0);
    calls.scene.verdict(calls.watch).await;
    eprintln!(
        "identity drop: 200 forged INVITEs refused ({} answered 404, {} rate-limited), \
         5 trusted relayed",
        after.since(before, refused[0]),
        after.since(before, refused[1])
    );
    calls.scene.stop();
}

/// `untrusted = "strip"`: every stranger's INVITE reaches the proxy without the identity
/// headers (`Route` stays for the proxy to judge). The registrar's are relayed as sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_identities_from_strangers_are_stripped() {
    let calls = forged_identity_calls("strip").await;
    let (at_proxy, before, after) = (&calls.at_proxy, &calls.before, &calls.after);
    let stripped: Vec<&String> = at_proxy
        .iter()
        .filter(|m| m.contains("Call-ID: stranger-"))
        .collect();
    assert_eq!(stripped.len(), 200, "{at_proxy:?}");
    for relayed in &stripped {
        assert!(relayed.starts_with("INVITE sip:local0"), "{relayed}");
        assert_identity_stripped(relayed);
    }
    after.assert_grew(before, "inbound.requests.relayed_stripped", 200);
    calls.scene.verdict(calls.watch).await;
    eprintln!("identity strip: 200 forged INVITEs relayed stripped, 5 trusted relayed as sent");
    calls.scene.stop();
}

/// OPTIONS from 200 addresses, 25 each, with a Via naming a victim (received and rport too),
/// and 500 squeezed smaller than any answer: the answers go to the real sources only, within
/// the budget, each no larger than its request and saying nothing of what runs here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoofed_options_from_many_sources_get_few_small_answers() {
    const SOURCES: usize = 200;
    const ROUNDS: usize = 25;
    const TINY_PER_ROUND: usize = 20;
    let scene = Scene::start("options-flood", SceneSetup::default()).await;
    let watch = scene.watch();
    let sip = scene.sip();
    let before = scene.counters().await;
    let victim = udp("127.0.0.4").await;
    let victim_addr = victim.local_addr().expect("bound");
    let mut sockets = Vec::new();
    for i in 0..SOURCES {
        sockets.push(udp(&format!("127.0.5.{}", i + 1)).await);
    }
    let mut request_len = HashMap::new();
    let started = Instant::now();
    for round in 0..ROUNDS {
        for (i, socket) in sockets.iter().enumerate() {
            let via = format!(
                "SIP/2.0/UDP {victim_addr};received={};rport={};branch=z9hG4bK-{round}-{i}",
                victim_addr.ip(),
                victim_addr.port()
            );
            let call = format!("scan-{round:02}-{i:03}");
            let request = options(&via, &call);
            request_len.insert(call, request.len());
            socket.send_to(request.as_bytes(), sip).await.expect("send");
        }
        for (tiny, socket) in sockets.iter().take(TINY_PER_ROUND).enumerate() {
            let request = format!(
                "OPTIONS sip:x SIP/2.0\r\nv:SIP/2.0/UDP h;rport\r\nf:<sip:a>\r\nt:<sip:b>\r\n\
                 i:t{round}-{tiny}\r\nCSeq:1 OPTIONS\r\n\r\n"
            );
            socket.send_to(request.as_bytes(), sip).await.expect("send");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let full = (SOURCES * ROUNDS) as u64;
    let tiny = (TINY_PER_ROUND * ROUNDS) as u64;
    scene
        .counters_when(Duration::from_secs(10), |now| {
            now.since(&before, "inbound.requests_received") >= full + tiny
        })
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let elapsed = started.elapsed();
    let mut answers = 0u64;
    for socket in &sockets {
        for (answer, from) in drain(socket) {
            assert_eq!(from, sip);
            let text = String::from_utf8_lossy(&answer);
            assert!(text.starts_with("SIP/2.0 200 OK\r\n"), "{text}");
            let call = garbage::call_id(&answer).unwrap_or_else(|| panic!("no Call-ID: {text}"));
            assert!(answer.len() <= request_len[&call], "{text}");
            for revealing in REVEALING {
                assert!(!text.contains(revealing), "{revealing} in {text}");
            }
            answers += 1;
        }
    }
    assert_silent(&victim, "the victim named in every Via").await;
    let after = scene.counters().await;
    assert_eq!(
        answers,
        after.since(&before, "inbound.requests.options_answered"),
        "{}",
        after.0
    );
    assert_eq!(
        after.sum_since(
            &before,
            &[
                "inbound.requests.options_answered",
                "inbound.requests.replies_rate_limited"
            ]
        ),
        full
    );
    after.assert_grew(&before, "inbound.requests.reply_larger_than_request", tiny);
    assert!(
        (REPLY_RATE..=reply_budget(elapsed)).contains(&answers),
        "{answers} answers in {elapsed:?}"
    );
    after.assert_accounted();
    scene.verdict(watch).await;
    eprintln!(
        "spoofed OPTIONS: {full} from {SOURCES} sources + {tiny} tiny in {elapsed:?}: {answers} \
         answered, {} rate-limited, {tiny} too small to answer",
        after.since(&before, "inbound.requests.replies_rate_limited")
    );
    scene.stop();
}

// ---- sipvicious ----

/// Runs a sipvicious tool with a time limit; its stdout and stderr.
async fn sipvicious(program: std::path::PathBuf, args: &[&str]) -> (String, String) {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let shown = format!("{} {}", program.display(), args.join(" "));
    let output = tokio::task::spawn_blocking(move || {
        let mut command = std::process::Command::new(&program);
        command.args(&args);
        process::run_with_input(&mut command, "", Duration::from_secs(60))
    })
    .await
    .expect("ran")
    .unwrap_or_else(|err| panic!("{shown}: {err}"));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        output.status.success(),
        "{shown}: {:?}\n{stdout}\n{stderr}",
        output.status
    );
    (stdout, stderr)
}

/// sipvicious against the SIP port, as a stranger: svmap finds a SIP endpoint and nothing more
/// (no product or version), svwar's extension enumeration — INVITE for 100 real l_uuids and
/// 100 others, then REGISTER for a numeric range — finds no extension, and the daemon counts
/// every probe svwar says it sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipvicious_learns_nothing_and_every_probe_is_counted() {
    let svmap = process::find_program("svmap", &["/usr/bin/svmap"]);
    let svwar = process::find_program("svwar", &["/usr/bin/svwar"]);
    let (Some(svmap), Some(svwar)) = (svmap, svwar) else {
        process::require("sipvicious (svmap, svwar)", false, || {
            "svmap or svwar not found (Debian package sipvicious)".into()
        });
        return;
    };
    let scene = Scene::start("sipvicious", SceneSetup::default()).await;
    let watch = scene.watch();
    let sip = scene.sip();
    let port = sip.port().to_string();
    // Their own ports, so that parallel tests do not meet (svwar binds every address).
    let svmap_port = process::spare_udp_port().expect("a spare port");
    let svwar_port = process::spare_udp_port().expect("a spare port");

    // svmap over three addresses, the daemon's among them.
    let before = scene.counters().await;
    let svmap_args = [
        "-b",
        "127.0.0.2",
        "-P",
        &svmap_port.port().to_string(),
        "-p",
        &port,
        "-vvv",
        "-d",
        "127.0.0.1-127.0.0.3",
    ];
    let (table, log) = sipvicious(svmap, &svmap_args).await;
    let device = table
        .lines()
        .find(|line| line.contains(&format!("| {sip} ")))
        .unwrap_or_else(|| panic!("svmap did not find the daemon:\n{table}\n{log}"));
    let user_agent = device.split('|').nth(2).map(str::trim);
    assert_eq!(user_agent, Some("unknown"), "{device}");
    for revealing in REVEALING {
        assert!(
            !table.contains(revealing),
            "svmap saw {revealing}:\n{table}"
        );
    }
    let probes = log.matches(&format!("sending packet to {sip}")).count() as u64;
    assert_eq!(probes, 1, "{log}");
    let after = scene.counters().await;
    after.assert_grew(&before, "inbound.requests_received", probes);
    after.assert_grew(&before, "inbound.requests.options_answered", 1);
    eprintln!(
        "svmap: {} probes over 3 addresses, 1 to the daemon; it saw: {}",
        log.matches("sending packet to").count(),
        device.trim()
    );

    // svwar: INVITEs (the Request-URI names the extension) for real l_uuids and others, then
    // REGISTERs (the To header names it) for a numeric range.
    let dictionary = std::env::temp_dir().join(format!(
        "uacreg-svwar-{}-{}.txt",
        std::process::id(),
        svwar_port.port()
    ));
    let words: Vec<String> = (0..100)
        .map(l_uuid)
        .chain((0..100).map(|i| format!("uuid{:06}", 900_000 + i)))
        .collect();
    std::fs::write(&dictionary, words.join("\n") + "\n").expect("dictionary written");
    let svwar_port = svwar_port.port().to_string();
    let dictionary = dictionary.display().to_string();
    // svwar ignores -b: it sends from 127.0.0.1, which is not the registrar's address.
    let common_args = [
        "-P",
        &svwar_port,
        "-p",
        &port,
        "--debug",
        "-vvv",
        "--maximumtime",
        "5",
    ];
    let by_invite = ["-m", "INVITE", "-d", &dictionary, "127.0.0.1"];
    let by_register = ["-e", "100-299", "127.0.0.1"];
    for (method, extra, tried) in [
        ("INVITE", by_invite.as_slice(), 200),
        ("REGISTER", by_register.as_slice(), 200),
    ] {
        // A full reply budget, so that svwar's first request (its check) is answered.
        tokio::time::sleep(Duration::from_millis(1_100)).await;
        let args: Vec<&str> = common_args.iter().chain(extra).copied().collect();
        let before = scene.counters().await;
        let (out, log) = sipvicious(svwar.clone(), &args).await;
        assert!(
            log.contains("Ok SIP device found"),
            "svwar {method} did not scan:\n{log}"
        );
        assert!(
            log.contains("found nothing"),
            "svwar {method}:\n{out}\n{log}"
        );
        assert!(!log.contains(" exists"), "svwar {method}:\n{log}");
        // What svwar sent: its first request (the unknown-extension check), one per word, and
        // an ACK for each final answer to an INVITE.
        let sent = log.matches("sending request for").count() as u64;
        assert_eq!(sent, tried, "{log}");
        let acks = log.matches("here is your ack request").count() as u64;
        let probes = 1 + sent + acks;
        for revealing in REVEALING {
            assert!(!out.contains(revealing), "svwar saw {revealing}:\n{out}");
        }
        let after = scene
            .counters_when(Duration::from_secs(5), |now| {
                now.since(&before, "inbound.requests_received") >= probes
            })
            .await;
        after.assert_grew(&before, "inbound.requests_received", probes);
        after.assert_accounted();
        let outcomes = [
            "inbound.requests.unknown_user",
            "inbound.requests.refused_untrusted",
            "inbound.requests.replies_rate_limited",
            "inbound.requests.ack_absorbed",
        ];
        assert_eq!(after.sum_since(&before, &outcomes), probes, "{}", after.0);
        if method == "INVITE" {
            // Real l_uuids were asked for and answered (as unknown users are): svwar could not
            // tell them apart.
            assert!(after.since(&before, outcomes[1]) > 0, "{}", after.0);
        }
        eprintln!(
            "svwar {method}: {probes} probes ({sent} words, {acks} ACKs), unknown user {}, \
             refused (a real l_uuid) {}, rate-limited {}, ACKs absorbed {}",
            after.since(&before, outcomes[0]),
            after.since(&before, outcomes[1]),
            after.since(&before, outcomes[2]),
            after.since(&before, outcomes[3]),
        );
    }
    let _ = std::fs::remove_file(&dictionary);

    scene.verdict(watch).await;
    scene.stop();
}

// ---- the database misbehaves ----

/// A read that finds the table empty (a truncate-and-refill job caught in between, a wrong
/// schema or user) is refused: nothing is un-REGISTERed. `uacregctl reg_reload --force` then
/// applies it, and every binding is taken back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_table_read_is_refused_until_forced() {
    let scene = Scene::start("empty-read", SceneSetup::default()).await;
    let watch = scene.watch();
    let url = scene.db_url.clone();
    tokio::task::spawn_blocking(move || Store::open(&url).expect("store").clear().expect("clear"))
        .await
        .unwrap();

    let refused = scene.call("uac.reg_reload", &[]).await.unwrap_err();
    assert!(refused.starts_with("500 "), "{refused}");
    assert!(
        refused.contains("reload refused") && refused.contains("remove 2000 of the 2000"),
        "{refused}"
    );
    let (code, _, stderr) = scene.uacregctl(&["reg_reload"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("--force"), "{stderr}");
    // A day of refreshes could pass like this: run through one refresh round.
    tokio::time::sleep(Duration::from_secs(u64::from(EXPIRES))).await;
    scene.verdict(watch).await;
    assert_eq!(scene.registrar.stats().removals, 0, "nothing un-REGISTERed");
    let status = scene.status().await;
    assert_eq!(status["database"]["reloads_refused"], 2);
    assert!(
        status["database"]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("max_removed_share")),
        "{status}"
    );
    assert!(scene.log_tail(200).contains("reload refused"));

    let (code, stdout, stderr) = scene.uacregctl(&["reg_reload", "--force"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while scene.registrar.binding_count() > 0 {
        assert!(
            Instant::now() < deadline,
            "{} bindings left",
            scene.registrar.binding_count()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status = scene.status().await;
    assert_eq!(status["registrations"]["registered"], 0);
    assert_eq!(scene.registrar.stats().removals as usize, ROWS);
    scene.stop();
}

/// Removing a few rows is an ordinary edit and is applied without force.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_few_rows_needs_no_force() {
    let scene = Scene::start(
        "few-removed",
        SceneSetup {
            rows: 20,
            registrar: RegistrarConfig {
                users: common::users(20),
                ..SceneSetup::default().registrar
            },
            ..SceneSetup::default()
        },
    )
    .await;
    let url = scene.db_url.clone();
    tokio::task::spawn_blocking(move || {
        let mut store = Store::open(&url).expect("store");
        for i in 0..5 {
            assert!(store.delete(&format!("uuid{i:06}")).expect("delete"));
        }
    })
    .await
    .unwrap();
    let report = scene.call("uac.reg_reload", &[]).await.expect("applied");
    assert_eq!(report["removed"], 5);
    scene.wait_registered(15, Duration::from_secs(10)).await;

    // Twelve of the fifteen is more than half: refused.
    let url = scene.db_url.clone();
    tokio::task::spawn_blocking(move || {
        let mut store = Store::open(&url).expect("store");
        for i in 5..17 {
            assert!(store.delete(&format!("uuid{i:06}")).expect("delete"));
        }
    })
    .await
    .unwrap();
    let refused = scene.call("uac.reg_reload", &[]).await.unwrap_err();
    assert!(refused.contains("remove 12 of the 15"), "{refused}");
    assert_eq!(scene.registered().await, 15);
    scene.stop();
}

// ---- the registrar misbehaves ----

/// A registrar stating `expires=4294967295` for a binding it keeps 30 s: the grant is capped at
/// what was asked, so every row refreshes in time instead of never.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_of_4294967295_is_refreshed_as_asked() {
    let mut setup = SceneSetup::default();
    setup.registrar.stated_expires = Some(u32::MAX);
    let scene = Scene::start("overgrant", setup).await;
    let watch = scene.watch();
    let info = scene
        .call("uac.reg_info", &["l_uuid", "uuid000007"])
        .await
        .expect("reg_info");
    assert_eq!(info["granted_expires"], EXPIRES);
    let ok_before = scene.registrar.stats().ok;
    tokio::time::sleep(Duration::from_secs(u64::from(EXPIRES) + 5)).await;
    scene.verdict(watch).await;
    let refreshed = scene.registrar.stats().ok - ok_before;
    assert!(
        refreshed >= ROWS as u64,
        "only {refreshed} refreshes for {ROWS} rows in one grant period"
    );
    scene.stop();
}

/// An authenticating outbound proxy (407, its own realm) in front of the registrar (401): both
/// challenges are answered, every row registers with three REGISTERs, and refreshes carry both
/// credentials.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_407_then_401_chain_registers() {
    let mut setup = SceneSetup::default();
    setup.registrar.proxy_realm = Some("proxy.test".into());
    setup.registrar.keep_history = true;
    // The row's realm pins one realm; empty accepts the proxy's and the registrar's.
    setup.row_change = |row| row.realm = String::new();
    let scene = Scene::start("proxy-chain", setup).await;
    let watch = scene.watch();
    let first = scene.registrar.requests_for("user000042");
    assert_eq!(
        first.iter().map(|r| r.code).collect::<Vec<_>>(),
        [407, 401, 200],
        "{first:?}"
    );
    tokio::time::sleep(Duration::from_secs(u64::from(EXPIRES))).await;
    scene.verdict(watch).await;
    let seen = scene.registrar.requests_for("user000042");
    assert!(seen.len() > 3, "refreshed: {seen:?}");
    // Both kept challenges are answered up front: one REGISTER per refresh.
    assert!(seen[3..].iter().all(|r| r.code == 200), "{seen:?}");
    let status = scene.status().await;
    assert_eq!(
        status["registrations"]["auth_failed"].as_u64().unwrap_or(0),
        0
    );
    scene.stop();
}

/// A registrar answering with a 300-character reason phrase while status write-back goes to
/// PostgreSQL (`VARCHAR(255)`): the rows' status is written (cut to fit), and later batches —
/// every row registered again — are written too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_300_character_reason_phrase_is_written_to_postgresql() {
    use support::dbserver::{DbServer, Engine, require_engine};
    if !require_engine(Engine::Postgres) {
        return;
    }
    let server = tokio::task::spawn_blocking(|| DbServer::start(Engine::Postgres))
        .await
        .unwrap()
        .expect("PostgreSQL starts");
    let setup = SceneSetup {
        db_url: Some(server.url()),
        extra_config: "[database]\nstatus_table = true\nstatus_interval_secs = 1\n".into(),
        ..SceneSetup::default()
    };
    let scene = Scene::start("long-reason", setup).await;
    let watch = scene.watch();
    let reason = format!("Service Unavailable {}", "x".repeat(280));
    assert_eq!(reason.len(), 300);
    scene.registrar.set_behavior(Behavior::Reject {
        code: 503,
        reason: reason.clone(),
        retry_after: Some(2),
    });
    // Long enough for many rows to refresh into the 503 and have their status written.
    let query = "SELECT count(*) FROM uacreg_status WHERE length(last_reason) = 255 \
                 AND last_reason LIKE 'Service Unavailable xxx%'";
    let deadline = Instant::now() + Duration::from_secs(40);
    let long_rows = loop {
        let count: u64 = server
            .sql(query)
            .expect("query")
            .trim()
            .parse()
            .unwrap_or(0);
        if count >= 50 || Instant::now() > deadline {
            break count;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(
        long_rows >= 50,
        "status rows with the cut reason: {long_rows}"
    );
    scene.registrar.set_behavior(Behavior::Normal);
    let report = watch.finish().await;
    scene
        .assert_unharmed(&report, Duration::from_secs(30))
        .await;
    // The next batches reach the table too: every row registered.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let registered: u64 = server
            .sql("SELECT count(*) FROM uacreg_status WHERE state = 'registered'")
            .expect("query")
            .trim()
            .parse()
            .unwrap_or(0);
        if registered == ROWS as u64 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{registered} status rows say registered"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let status = scene.status().await;
    assert_eq!(status["database"]["status_write_failures"], 0, "{status}");
    scene.stop();
}

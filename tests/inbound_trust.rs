//! The inbound side against strangers: forged relay responses, forged identities, spoofed
//! OPTIONS floods and forged Via parameters, each against the real daemon on loopback.
//!
//! Loopback addresses stand for the parties: the registrar (trusted, because rows are bound to
//! it) lives on 127.0.0.3, strangers on 127.0.0.2 and 127.0.0.5, a would-be victim of
//! reflection on 127.0.0.4, and the proxy and the daemon on 127.0.0.1. Linux routes all of
//! 127.0.0.0/8 to loopback without set-up.

mod common;
mod support;

use std::time::{Duration, Instant};

use common::*;
use uacreg::Config;
use uacreg::Daemon;
use uacreg::InboundStats;
use uacreg::demo::demo_rows;
use uacreg::relay::UntrustedPolicy;
use uacreg::store::RawRow;

use support::stranger::{
    FORGED_IDENTITY, assert_identity_stripped, assert_silent, forged_relay_branches,
    forged_relay_response, invite, options, recv, recv_within, udp,
};

const REGISTRAR_IP: &str = "127.0.0.3";
const STRANGER_IP: &str = "127.0.0.2";
const OTHER_STRANGER_IP: &str = "127.0.0.5";
const VICTIM_IP: &str = "127.0.0.4";

async fn start(dir: &TempDir, rows: &[RawRow], adjust: impl FnOnce(&mut Config)) -> Daemon {
    write_rows(&dir.db_url(), rows);
    let mut config = test_config(&dir.db_url());
    adjust(&mut config);
    Daemon::start(config).await.expect("daemon starts")
}

async fn all_registered(daemon: &Daemon, n: usize) -> bool {
    wait_until(Duration::from_secs(20), || async {
        registered_count(daemon).await == n
    })
    .await
}

async fn inbound(daemon: &Daemon) -> InboundStats {
    daemon.gateway().driver.stats().await.unwrap().inbound
}

/// Every message the daemon received is counted under exactly one outcome.
fn assert_accounted(stats: &InboundStats) {
    assert_eq!(
        stats.requests.total(),
        stats.requests_received,
        "{stats:#?}"
    );
    assert_eq!(
        stats.relay_responses.total(),
        stats.relay_responses_received,
        "{stats:#?}"
    );
}

/// The proxy's answer to a relayed request: every Via of the request, ours on top.
fn proxy_answer(relayed: &str, status: &str) -> String {
    let vias: Vec<&str> = relayed.lines().filter(|l| l.starts_with("Via:")).collect();
    let header = |name: &str| {
        relayed
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no {name} in {relayed}"))
            .to_string()
    };
    format!(
        "SIP/2.0 {status}\r\n{}\r\n{}\r\n{};tag=pbx\r\n{}\r\n{}\r\nContent-Length: 0\r\n\r\n",
        vias.join("\r\n"),
        header("From:"),
        header("To:"),
        header("Call-ID:"),
        header("CSeq:"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_relay_responses_send_nothing_anywhere() {
    let registrar = registrar_at(2, &format!("{REGISTRAR_IP}:0"), true).await;
    let proxy = udp("127.0.0.1").await;
    let proxy_addr = proxy.local_addr().unwrap();
    let dir = TempDir::new("rly-injection");
    let mut rows = demo_rows(2, registrar.local_addr());
    // Row 1 registers over TCP: the daemon holds an outbound connection to the registrar, the
    // flow a `rly-f<N>` branch used to smuggle bytes into.
    rows[1].auth_proxy = format!("sip:{};transport=tcp", registrar.local_addr());
    let daemon = start(&dir, &rows, |c| c.inbound.proxy = Some(proxy_addr)).await;
    assert!(all_registered(&daemon, 2).await);
    let before = daemon.gateway().driver.stats().await.unwrap();
    assert!(before.connections_opened >= 1, "{before:?}");
    let registrar_before = registrar.stats();
    let gateway = daemon.sip_addr();

    let victim = udp(VICTIM_IP).await;
    let victim_addr = victim.local_addr().unwrap();
    let stranger = udp(STRANGER_IP).await;
    let branches = forged_relay_branches(gateway, victim_addr, 4);
    // From a stranger, and from the proxy's own socket (as if the proxy were fooled into
    // sending it, or its address spoofed).
    for branch in &branches {
        let forged = forged_relay_response(gateway, branch, victim_addr);
        stranger.send_to(forged.as_bytes(), gateway).await.unwrap();
        proxy.send_to(forged.as_bytes(), gateway).await.unwrap();
    }
    let n = branches.len() as u64;
    let counted = wait_until(Duration::from_secs(5), || async {
        inbound(&daemon).await.relay_responses_received == 2 * n
    })
    .await;
    let stats = inbound(&daemon).await;
    assert!(counted, "{stats:#?}");
    assert_eq!(stats.relay_responses.wrong_source, n, "{stats:#?}");
    assert_eq!(stats.relay_responses.bad_mac, n, "{stats:#?}");
    assert_eq!(stats.relay_responses.relayed, 0);
    assert_accounted(&stats);

    // Nothing left the SIP port: not to the victim, the proxy, the stranger, nor onto the
    // connection to the registrar.
    assert_silent(&victim, "the victim").await;
    assert_silent(&proxy, "the proxy").await;
    assert_silent(&stranger, "the stranger").await;
    let registrar_after = registrar.stats();
    assert_eq!(registrar_after.malformed, registrar_before.malformed);
    assert_eq!(registrar_after.requests, registrar_before.requests);
    assert_eq!(registrar_after.options, registrar_before.options);
    // Nothing was taken for a REGISTER answer either, and the rows are still registered.
    assert_eq!(registered_count(&daemon).await, 2);
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_from_the_registrar_is_relayed_and_answered_back_to_its_real_source() {
    let registrar = registrar_at(1, &format!("{REGISTRAR_IP}:0"), false).await;
    let proxy = udp("127.0.0.1").await;
    let proxy_addr = proxy.local_addr().unwrap();
    let dir = TempDir::new("trusted-call");
    let daemon = start(&dir, &demo_rows(1, registrar.local_addr()), |c| {
        c.inbound.proxy = Some(proxy_addr)
    })
    .await;
    assert!(all_registered(&daemon, 1).await);
    let gateway = daemon.sip_addr();

    // The registrar's side calls from its own address (another port: trust is by address).
    let caller = udp(REGISTRAR_IP).await;
    let caller_addr = caller.local_addr().unwrap();
    let victim = udp(VICTIM_IP).await;
    let victim_addr = victim.local_addr().unwrap();
    let ruri = format!("sip:uuid000000@{gateway}");
    // Its Via claims to be the victim, with received/rport to match: ignored for the way back.
    let via = format!(
        "SIP/2.0/UDP {victim_addr};received={};rport={};branch=z9hG4bKcall1",
        victim_addr.ip(),
        victim_addr.port()
    );
    let identity = "P-Asserted-Identity: <sip:+4930123@provider.test>\r\n";
    let request = invite(&via, &ruri, "trusted-1", identity);
    caller.send_to(request.as_bytes(), gateway).await.unwrap();

    let relayed = recv(&proxy).await;
    assert!(
        relayed.starts_with("INVITE sip:local000000@gw.test SIP/2.0\r\n"),
        "{relayed}"
    );
    assert!(
        relayed.contains(identity),
        "trusted: identity kept: {relayed}"
    );
    let sender_via = relayed
        .lines()
        .filter(|l| l.starts_with("Via:"))
        .nth(1)
        .unwrap();
    assert_eq!(
        sender_via,
        format!(
            "Via: SIP/2.0/UDP {victim_addr};rport={};branch=z9hG4bKcall1;received={REGISTRAR_IP}",
            caller_addr.port()
        ),
        "received/rport are what the gateway saw"
    );

    for status in ["180 Ringing", "200 OK"] {
        proxy
            .send_to(proxy_answer(&relayed, status).as_bytes(), gateway)
            .await
            .unwrap();
        let back = recv(&caller).await;
        assert!(back.starts_with(&format!("SIP/2.0 {status}\r\n")), "{back}");
        assert!(!back.contains("rly-"), "our Via removed: {back}");
        assert!(back.contains("branch=z9hG4bKcall1"));
    }
    assert_silent(&victim, "the victim").await;

    // Someone who saw the proxy's answer replays it from elsewhere: refused.
    let stranger = udp(STRANGER_IP).await;
    stranger
        .send_to(proxy_answer(&relayed, "200 OK").as_bytes(), gateway)
        .await
        .unwrap();
    let refused = wait_until(Duration::from_secs(5), || async {
        inbound(&daemon).await.relay_responses.wrong_source == 1
    })
    .await;
    assert!(refused);
    assert_silent(&caller, "the caller").await;

    let stats = inbound(&daemon).await;
    assert_eq!(stats.requests.relayed_trusted, 1, "{stats:#?}");
    assert_eq!(stats.relay_responses.relayed, 2, "{stats:#?}");
    assert_eq!(stats.requests_received, 1);
    assert_eq!(stats.relay_responses_received, 3);
    assert_accounted(&stats);
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_with_forged_identity_is_refused_or_stripped() {
    let registrar = registrar_at(1, &format!("{REGISTRAR_IP}:0"), false).await;
    let identity = FORGED_IDENTITY;

    // untrusted = "drop" (the default): nothing reaches the proxy, and the answer for a user we
    // hold is the answer for a user we do not know.
    {
        let proxy = udp("127.0.0.1").await;
        let dir = TempDir::new("identity-drop");
        let proxy_addr = proxy.local_addr().unwrap();
        let daemon = start(&dir, &demo_rows(1, registrar.local_addr()), |c| {
            c.inbound.proxy = Some(proxy_addr)
        })
        .await;
        assert!(all_registered(&daemon, 1).await);
        let gateway = daemon.sip_addr();
        let stranger = udp(STRANGER_IP).await;
        let me = stranger.local_addr().unwrap();
        let via = format!("SIP/2.0/UDP {me};branch=z9hG4bKforged;rport");
        let mut answers = Vec::new();
        for user in ["uuid000000", "nobody"] {
            let ruri = format!("sip:{user}@{gateway}");
            let request = invite(&via, &ruri, "forged-1", identity);
            stranger.send_to(request.as_bytes(), gateway).await.unwrap();
            let answer = recv(&stranger).await;
            assert!(answer.starts_with("SIP/2.0 404 Not Found\r\n"), "{answer}");
            assert!(answer.len() <= request.len());
            answers.push(answer);
        }
        // The same answer, but for the To header the request itself carried: a registered
        // l_uuid is not revealed.
        assert_eq!(answers[0].replace("uuid000000", "nobody"), answers[1]);
        assert_silent(&proxy, "the proxy").await;
        let stats = inbound(&daemon).await;
        assert_eq!(stats.requests.refused_untrusted, 1, "{stats:#?}");
        assert_eq!(stats.requests.unknown_user, 1, "{stats:#?}");
        assert_eq!(
            stats.requests.relayed_trusted + stats.requests.relayed_stripped,
            0
        );
        assert_accounted(&stats);
        daemon.stop().await;
    }

    // untrusted = "strip": relayed without identity headers, with received/rport as seen, and
    // the proxy's answer goes back to the stranger's real address.
    {
        let proxy = udp("127.0.0.1").await;
        let dir = TempDir::new("identity-strip");
        let proxy_addr = proxy.local_addr().unwrap();
        let daemon = start(&dir, &demo_rows(1, registrar.local_addr()), |c| {
            c.inbound.proxy = Some(proxy_addr);
            c.inbound.untrusted = UntrustedPolicy::Strip;
        })
        .await;
        assert!(all_registered(&daemon, 1).await);
        let gateway = daemon.sip_addr();
        let stranger = udp(STRANGER_IP).await;
        let me = stranger.local_addr().unwrap();
        let victim = udp(VICTIM_IP).await;
        let victim_addr = victim.local_addr().unwrap();
        let via = format!(
            "SIP/2.0/UDP {me};received={};rport={};branch=z9hG4bKstrip",
            victim_addr.ip(),
            victim_addr.port()
        );
        let ruri = format!("sip:uuid000000@{gateway}");
        let request = invite(&via, &ruri, "forged-2", identity);
        stranger.send_to(request.as_bytes(), gateway).await.unwrap();
        let relayed = recv(&proxy).await;
        assert!(relayed.starts_with("INVITE sip:local000000@gw.test SIP/2.0\r\n"));
        assert_identity_stripped(&relayed);
        assert!(
            relayed.contains(&format!(
                "\r\nVia: SIP/2.0/UDP {me};rport={};branch=z9hG4bKstrip;received={STRANGER_IP}\r\n",
                me.port()
            )),
            "{relayed}"
        );
        proxy
            .send_to(proxy_answer(&relayed, "180 Ringing").as_bytes(), gateway)
            .await
            .unwrap();
        let back = recv(&stranger).await;
        assert!(back.starts_with("SIP/2.0 180 Ringing\r\n"), "{back}");
        assert_silent(&victim, "the victim").await;
        let stats = inbound(&daemon).await;
        assert_eq!(stats.requests.relayed_stripped, 1, "{stats:#?}");
        assert_eq!(stats.relay_responses.relayed, 1, "{stats:#?}");
        assert_accounted(&stats);
        daemon.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoofed_options_get_small_rate_limited_answers_at_their_real_source() {
    const RATE: u32 = 10;
    const SOCKETS: usize = 40;
    const PER_SOCKET: usize = 5;
    const TINY: usize = 10;
    let registrar = registrar_at(1, &format!("{REGISTRAR_IP}:0"), false).await;
    let dir = TempDir::new("options-flood");
    // No inbound proxy: a forged relay response finds nothing to relay either.
    let daemon = start(&dir, &demo_rows(1, registrar.local_addr()), |c| {
        c.inbound.reply_rate = RATE
    })
    .await;
    assert!(all_registered(&daemon, 1).await);
    let gateway = daemon.sip_addr();

    let mut sockets = Vec::new();
    for i in 0..SOCKETS {
        let ip = if i % 2 == 0 {
            STRANGER_IP
        } else {
            OTHER_STRANGER_IP
        };
        sockets.push(udp(ip).await);
    }
    let started = Instant::now();
    let mut request_len = 0;
    for round in 0..PER_SOCKET {
        for (i, socket) in sockets.iter().enumerate() {
            let me = socket.local_addr().unwrap();
            let via = format!("SIP/2.0/UDP {me};branch=z9hG4bK-{round}-{i:03};rport");
            let request = options(&via, &format!("scan-{round}-{i:03}"));
            request_len = request_len.max(request.len());
            socket.send_to(request.as_bytes(), gateway).await.unwrap();
        }
    }
    // Requests squeezed smaller than any answer: never answered, whatever the budget.
    let tiny_sender = &sockets[0];
    for i in 0..TINY {
        let tiny = format!(
            "OPTIONS sip:x SIP/2.0\r\nv:SIP/2.0/UDP h;rport\r\nf:<sip:a>\r\nt:<sip:b>\r\ni:t{i}\r\nCSeq:1 OPTIONS\r\n\r\n"
        );
        tiny_sender.send_to(tiny.as_bytes(), gateway).await.unwrap();
    }
    let total = (SOCKETS * PER_SOCKET + TINY) as u64;
    let all_in = wait_until(Duration::from_secs(10), || async {
        inbound(&daemon).await.requests_received == total
    })
    .await;
    let stats = inbound(&daemon).await;
    let elapsed = started.elapsed();
    assert!(all_in, "{stats:#?}");

    // Collect every answer.
    let mut answers = Vec::new();
    for socket in &sockets {
        while let Some((text, from)) = recv_within(socket, Duration::from_millis(50)).await {
            assert_eq!(from, gateway);
            answers.push(text);
        }
    }
    let answered = stats.requests.options_answered;
    assert_eq!(answers.len() as u64, answered, "{stats:#?}");
    assert_eq!(
        answered + stats.requests.replies_rate_limited,
        (SOCKETS * PER_SOCKET) as u64,
        "{stats:#?}"
    );
    assert_eq!(stats.requests.reply_larger_than_request, TINY as u64);
    assert_accounted(&stats);
    // The budget: a full burst at first, then RATE a second.
    let allowed = u64::from(RATE) + (elapsed.as_secs_f64() * f64::from(RATE)).ceil() as u64;
    assert!(
        (u64::from(RATE)..=allowed).contains(&answered),
        "{answered} answers in {elapsed:?}"
    );
    assert!(stats.requests.replies_rate_limited > 0);
    for answer in &answers {
        assert!(answer.starts_with("SIP/2.0 200 OK\r\n"), "{answer}");
        assert!(answer.len() <= request_len, "{answer}");
        for absent in ["Server:", "Allow:", "Accept:", "User-Agent:", "uacreg"] {
            assert!(!answer.contains(absent), "{absent} in {answer}");
        }
    }

    // The counters are on the metrics page, labelled.
    let page = scrape(&daemon).await;
    assert!(
        page.contains(&format!(
            "uacreg_inbound_requests_total{{outcome=\"replies_rate_limited\"}} {}\n",
            stats.requests.replies_rate_limited
        )),
        "{page}"
    );
    assert!(page.contains(&format!(
        "uacreg_inbound_requests_total{{outcome=\"options_answered\"}} {answered}\n"
    )));

    // Let the budget fill again, then a Via with forged received/rport: the answer goes to
    // where the request came from, for a stranger and for the registrar alike.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let victim = udp(VICTIM_IP).await;
    let victim_addr = victim.local_addr().unwrap();
    let forged_via = format!(
        "SIP/2.0/UDP {victim_addr};received={};rport={};branch=z9hG4bKreflect",
        victim_addr.ip(),
        victim_addr.port()
    );
    for ip in [STRANGER_IP, REGISTRAR_IP] {
        let source = udp(ip).await;
        source
            .send_to(options(&forged_via, "reflect").as_bytes(), gateway)
            .await
            .unwrap();
        let answer = recv(&source).await;
        assert!(answer.starts_with("SIP/2.0 200 OK\r\n"), "{answer}");
        assert!(
            answer.contains(&format!(
                ";rport={};branch=z9hG4bKreflect;received={ip}\r\n",
                source.local_addr().unwrap().port()
            )),
            "{answer}"
        );
        if ip == REGISTRAR_IP {
            assert!(answer.contains("\r\nAllow: "), "trusted: the full answer");
        }
    }
    assert_silent(&victim, "the victim").await;

    // A forged relay response, with no proxy configured: dropped and counted.
    let stranger = &sockets[1];
    let forged = forged_relay_response(gateway, "z9hG4bKrly-u.0011223344556677", victim_addr);
    stranger.send_to(forged.as_bytes(), gateway).await.unwrap();
    let counted = wait_until(Duration::from_secs(5), || async {
        inbound(&daemon).await.relay_responses.no_proxy == 1
    })
    .await;
    assert!(counted);
    assert_silent(&victim, "the victim").await;
    assert_accounted(&inbound(&daemon).await);
    daemon.stop().await;
}

//! Real networks on loopback: TCP and TLS registrars, RFC 3263 fail-over through a DNS server,
//! connections that drop, IPv6, and calls for our contacts relayed to a proxy.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use tokio::net::UdpSocket;
use uacreg::Config;
use uacreg::Daemon;
use uacreg::demo::demo_rows;
use uacreg::store::RawRow;
use uacreg::testing::dns::{Record, TestDns};
use uacreg::testing::registrar::{Behavior, RegistrarConfig, TestRegistrar};

fn rows_with_proxy(n: usize, proxy: &str) -> Vec<RawRow> {
    let mut rows = demo_rows(n, "127.0.0.1:9".parse().unwrap());
    for row in &mut rows {
        row.auth_proxy = proxy.to_string();
    }
    rows
}

async fn start(dir: &TempDir, rows: &[RawRow], adjust: impl FnOnce(&mut Config)) -> Daemon {
    write_rows(&dir.db_url(), rows);
    let mut config = test_config(&dir.db_url());
    adjust(&mut config);
    Daemon::start(config).await.expect("daemon starts")
}

async fn all_registered(daemon: &Daemon, n: usize, limit: Duration) -> bool {
    wait_until(limit, || async { registered_count(daemon).await == n }).await
}

async fn reason_of(daemon: &Daemon, l_uuid: &str) -> String {
    let dump = rpc(daemon)
        .call("uac.reg_info", &["l_uuid".to_string(), l_uuid.to_string()])
        .await
        .expect("reg_info");
    dump.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_rows_share_one_connection_and_reregister_when_it_drops() {
    let registrar = registrar_at(20, "127.0.0.1:0", true).await;
    let dir = TempDir::new("tcp");
    let proxy = format!("sip:{};transport=tcp", registrar.local_addr());
    let daemon = start(&dir, &rows_with_proxy(20, &proxy), |_| {}).await;
    assert!(all_registered(&daemon, 20, Duration::from_secs(20)).await);
    for i in 0..20 {
        let seen = registrar.requests_for(&format!("user{i:06}"));
        assert!(seen.iter().all(|r| r.transport == "TCP"), "{seen:?}");
        let contact = seen.last().unwrap().contact.clone().unwrap();
        assert!(contact.contains(";transport=tcp"), "{contact}");
    }
    assert_eq!(
        registrar.stats().connections,
        1,
        "one connection for all rows"
    );
    assert_eq!(registrar.stats().malformed, 0);

    let before = registrar.stats().requests;
    registrar.drop_connections();
    // Every binding lived on that connection: each row registers again at once, on a new one.
    let again = wait_until(Duration::from_secs(20), || async {
        (0..20).all(|i| {
            registrar
                .requests_for(&format!("user{i:06}"))
                .iter()
                .filter(|r| r.code == 200)
                .count()
                >= 2
        })
    })
    .await;
    assert!(again, "rows did not re-register after the drop");
    assert!(registrar.stats().requests > before);
    assert_eq!(registrar.stats().connections, 2);
    assert!(all_registered(&daemon, 20, Duration::from_secs(10)).await);
    let stats = daemon.gateway().driver.stats().await.unwrap();
    assert_eq!(stats.rebinds, 20, "{stats:?}");
    assert_eq!(stats.connections_closed, 1);
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_registers_with_a_verified_certificate_and_refuses_an_unknown_ca() {
    let dir = TempDir::new("tls");
    let (ca_file, cert, key) = test_pki(&dir);
    let tls = uacreg::testing::tls_server_config(&cert, &key).unwrap();
    let registrar = TestRegistrar::start(RegistrarConfig {
        realm: "registrar.test".into(),
        users: users(5),
        tls: Some(tls),
        ..RegistrarConfig::default()
    })
    .await
    .unwrap();
    let tls_addr = registrar.tls_addr().unwrap();
    let proxy = format!("sip:{tls_addr};transport=tls");
    let daemon = start(&dir, &rows_with_proxy(5, &proxy), |c| {
        c.tls.ca_file = Some(ca_file.clone())
    })
    .await;
    assert!(all_registered(&daemon, 5, Duration::from_secs(20)).await);
    let seen = registrar.requests_for("user000000");
    assert!(seen.iter().all(|r| r.transport == "TLS"));
    assert!(
        seen.last()
            .unwrap()
            .contact
            .as_deref()
            .unwrap()
            .contains(";transport=tls")
    );
    daemon.stop().await;

    // Another daemon trusting a different CA: the handshake fails, nothing is sent, and the
    // reason says why.
    let other = TempDir::new("tls-other");
    let (other_ca, _, _) = test_pki(&other);
    let before = registrar.stats().requests;
    let daemon = start(&other, &rows_with_proxy(1, &proxy), |c| {
        c.tls.ca_file = Some(other_ca.clone());
        c.sip.t1 = Duration::from_millis(50);
    })
    .await;
    let failed = wait_until(Duration::from_secs(15), || async {
        reason_of(&daemon, "uuid000000")
            .await
            .contains("TLS handshake")
    })
    .await;
    assert!(failed, "{}", reason_of(&daemon, "uuid000000").await);
    assert_eq!(
        registrar.stats().requests,
        before,
        "no REGISTER over an unverified TLS"
    );
    assert_eq!(registered_count(&daemon).await, 0);
    daemon.stop().await;
}

fn srv_zone(first: SocketAddr, second: SocketAddr) -> Vec<Record> {
    vec![
        Record::Naptr {
            name: "voip.test".into(),
            order: 10,
            preference: 10,
            flags: "s".into(),
            services: "SIP+D2U".into(),
            replacement: "_sip._udp.voip.test".into(),
            ttl: 300,
        },
        Record::Srv {
            name: "_sip._udp.voip.test".into(),
            priority: 10,
            weight: 0,
            port: first.port(),
            target: "a.voip.test".into(),
            ttl: 300,
        },
        Record::Srv {
            name: "_sip._udp.voip.test".into(),
            priority: 20,
            weight: 0,
            port: second.port(),
            target: "b.voip.test".into(),
            ttl: 300,
        },
        Record::A {
            name: "a.voip.test".into(),
            addr: "127.0.0.1".parse().unwrap(),
            ttl: 300,
        },
        Record::A {
            name: "b.voip.test".into(),
            addr: "127.0.0.1".parse().unwrap(),
            ttl: 300,
        },
    ]
}

fn dns_rows(n: usize) -> Vec<RawRow> {
    let mut rows = demo_rows(n, "127.0.0.1:9".parse().unwrap());
    for row in &mut rows {
        row.auth_proxy = String::new();
        row.r_domain = "voip.test".into();
    }
    rows
}

async fn failover_case(first_behaviour: Behavior, name: &str) {
    let first = registrar_at(3, "127.0.0.1:0", false).await;
    let second = registrar_at(3, "127.0.0.1:0", false).await;
    first.set_behavior(first_behaviour);
    let dns = TestDns::start(srv_zone(first.local_addr(), second.local_addr()))
        .await
        .unwrap();
    let dir = TempDir::new(name);
    let daemon = start(&dir, &dns_rows(3), |c| {
        c.sip.dns_servers = vec![dns.local_addr()];
        c.sip.t1 = Duration::from_millis(50);
    })
    .await;
    assert!(
        all_registered(&daemon, 3, Duration::from_secs(30)).await,
        "{}",
        reason_of(&daemon, "uuid000000").await
    );
    assert!(dns.queries() > 0);
    for i in 0..3 {
        let user = format!("user{i:06}");
        assert!(
            !first.requests_for(&user).is_empty(),
            "the first target was tried"
        );
        assert_eq!(
            second.bindings(&user).len(),
            1,
            "bound at the second target"
        );
        assert!(first.bindings(&user).is_empty());
    }
    let stats = daemon.gateway().driver.stats().await.unwrap();
    assert!(stats.failovers >= 3, "{stats:?}");
    // The rows stay on the server that accepted them: a refresh goes there directly.
    let first_before = first.stats().requests;
    let reply = rpc(&daemon)
        .call("uac.reg_refresh", &["uuid000000".to_string()])
        .await;
    assert!(reply.is_ok(), "{reply:?}");
    let refreshed = wait_until(Duration::from_secs(10), || async {
        second
            .requests_for("user000000")
            .iter()
            .filter(|r| r.code == 200)
            .count()
            >= 2
    })
    .await;
    assert!(refreshed);
    assert_eq!(
        first.stats().requests,
        first_before,
        "no detour to the failed server"
    );
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srv_failover_when_the_first_server_is_silent() {
    failover_case(Behavior::Silent, "srv-silent").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srv_failover_on_503() {
    failover_case(
        Behavior::Reject {
            code: 503,
            reason: "Service Unavailable".into(),
            retry_after: None,
        },
        "srv-503",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_end_to_end() {
    if std::net::UdpSocket::bind("[::1]:0").is_err() {
        panic!("IPv6 loopback is not available on this machine");
    }
    let registrar = registrar_at(2, "[::1]:0", false).await;
    let dir = TempDir::new("ipv6");
    let proxy = format!("sip:{}", registrar.local_addr());
    let daemon = start(&dir, &rows_with_proxy(2, &proxy), |c| {
        c.sip_listen = "[::1]:0".parse().unwrap();
        c.advertised_addr = "[::1]:5062".into();
    })
    .await;
    assert!(all_registered(&daemon, 2, Duration::from_secs(20)).await);
    let contact = registrar.bindings("user000000")[0].contact.clone();
    assert!(contact.contains("@[::1]:"), "{contact}");
    daemon.stop().await;
}

async fn recv_text(socket: &UdpSocket) -> (String, SocketAddr) {
    let mut buf = vec![0u8; 65_535];
    let (len, from) = tokio::time::timeout(Duration::from_secs(5), socket.recv_from(&mut buf))
        .await
        .expect("a message in time")
        .unwrap();
    (String::from_utf8_lossy(&buf[..len]).into_owned(), from)
}

fn invite(caller: SocketAddr, ruri: &str, branch: &str) -> String {
    format!(
        "INVITE {ruri} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {caller};branch={branch};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:carrier@provider.test>;tag=c1\r\n\
         To: <{ruri}>\r\n\
         Call-ID: call-{branch}@provider.test\r\n\
         CSeq: 1 INVITE\r\n\
         Contact: <sip:carrier@{caller}>\r\n\
         Content-Type: application/sdp\r\n\
         Content-Length: 4\r\n\r\nv=0\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_for_registered_contacts_reach_the_proxy_and_answers_come_back() {
    let registrar = registrar_at(1, "127.0.0.1:0", false).await;
    let proxy = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let dir = TempDir::new("relay");
    let rows = demo_rows(1, registrar.local_addr());
    let proxy_addr = proxy.local_addr().unwrap();
    let daemon = start(&dir, &rows, |c| c.inbound.proxy = Some(proxy_addr)).await;
    assert!(all_registered(&daemon, 1, Duration::from_secs(20)).await);
    let gateway = daemon.sip_addr();

    let caller = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let caller_addr = caller.local_addr().unwrap();
    // The call arrives at the contact we registered.
    let ruri = format!("sip:uuid000000@{gateway}");
    caller
        .send_to(
            invite(caller_addr, &ruri, "z9hG4bKcall1").as_bytes(),
            gateway,
        )
        .await
        .unwrap();
    let (relayed, from) = recv_text(&proxy).await;
    assert!(
        relayed.starts_with("INVITE sip:local000000@gw.test SIP/2.0\r\n"),
        "{relayed}"
    );
    assert_eq!(from, gateway);
    assert!(relayed.contains("Max-Forwards: 69"));
    assert!(relayed.ends_with("\r\n\r\nv=0\n"), "body kept: {relayed:?}");
    let top_via = relayed.lines().find(|l| l.starts_with("Via:")).unwrap();
    assert!(top_via.contains("z9hG4bKrly-"), "{top_via}");

    // The proxy answers 200 through us: the gateway removes its Via and the caller gets it.
    let vias: Vec<&str> = relayed.lines().filter(|l| l.starts_with("Via:")).collect();
    let answer = format!(
        "SIP/2.0 200 OK\r\n{}\r\nFrom: <sip:carrier@provider.test>;tag=c1\r\n\
         To: <{ruri}>;tag=p1\r\nCall-ID: call-z9hG4bKcall1@provider.test\r\nCSeq: 1 INVITE\r\n\
         Content-Length: 0\r\n\r\n",
        vias.join("\r\n")
    );
    proxy.send_to(answer.as_bytes(), gateway).await.unwrap();
    let (back, _) = recv_text(&caller).await;
    assert!(back.starts_with("SIP/2.0 200 OK\r\n"), "{back}");
    assert!(!back.contains("rly-"), "our Via removed: {back}");
    assert!(back.contains("branch=z9hG4bKcall1"));

    // Unknown users get 404, OPTIONS gets 200, and nothing of it reaches the proxy.
    let unknown = format!("sip:nobody@{gateway}");
    caller
        .send_to(
            invite(caller_addr, &unknown, "z9hG4bKcall2").as_bytes(),
            gateway,
        )
        .await
        .unwrap();
    let (reply, _) = recv_text(&caller).await;
    assert!(reply.starts_with("SIP/2.0 404"), "{reply}");
    let options = format!(
        "OPTIONS sip:{gateway} SIP/2.0\r\nVia: SIP/2.0/UDP {caller_addr};branch=z9hG4bKo1\r\n\
         From: <sip:mon@provider.test>;tag=m\r\nTo: <sip:{gateway}>\r\nCall-ID: o1\r\n\
         CSeq: 7 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    );
    caller.send_to(options.as_bytes(), gateway).await.unwrap();
    let (reply, _) = recv_text(&caller).await;
    assert!(reply.starts_with("SIP/2.0 200"), "{reply}");
    let mut buf = [0u8; 2048];
    let nothing = tokio::time::timeout(Duration::from_millis(300), proxy.recv_from(&mut buf)).await;
    assert!(nothing.is_err(), "the proxy only saw the call");

    let stats = daemon.gateway().driver.stats().await.unwrap();
    // The caller shares the registrar's address (127.0.0.1), so it is a trusted sender.
    let inbound = &stats.inbound;
    assert_eq!(inbound.requests.relayed_trusted, 1);
    assert_eq!(inbound.relay_responses.relayed, 1);
    assert_eq!(inbound.requests.unknown_user, 1);
    assert_eq!(inbound.requests.options_answered, 1);
    assert_eq!(inbound.requests_received, 3);
    assert_eq!(inbound.requests.total(), 3);

    // And the proxy may ask us where a contact belongs.
    let lookup = rpc(&daemon)
        .call("uac.reg_lookup", &["uuid000000".to_string()])
        .await
        .unwrap();
    assert_eq!(lookup["local_uri"], "sip:local000000@gw.test", "{lookup}");
    let reverse = rpc(&daemon)
        .call("uac.reg_lookup", &["sip:local000000@gw.test".to_string()])
        .await
        .unwrap();
    assert_eq!(reverse["l_uuid"], "uuid000000", "{reverse}");
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_send_from_their_own_socket_with_outbound_and_keepalive() {
    let registrar = registrar_at(2, "127.0.0.1:0", false).await;
    let dir = TempDir::new("socket");
    // A second local address on loopback that the daemon binds as an extra socket.
    let extra: SocketAddr = {
        let probe = std::net::UdpSocket::bind("127.0.0.2:0").unwrap();
        probe.local_addr().unwrap()
    };
    let mut rows = demo_rows(2, registrar.local_addr());
    rows[1].socket = format!("udp:{extra}");
    let daemon = start(&dir, &rows, |c| {
        c.sip.sockets = vec![
            uacreg::registration::record::LocalSocket::parse(&format!("udp:{extra}")).unwrap(),
        ];
        c.sip.outbound = true;
        c.sip.keepalive = Some(Duration::from_secs(1));
    })
    .await;
    assert!(all_registered(&daemon, 2, Duration::from_secs(20)).await);
    let own = registrar.bindings("user000001")[0].contact.clone();
    assert!(own.contains(&format!("@{extra}")), "{own}");
    let default = registrar.bindings("user000000")[0].contact.clone();
    assert!(default.contains("@127.0.0.1:"), "{default}");
    let seen = registrar.requests_for("user000001");
    assert!(
        seen.last()
            .unwrap()
            .contact
            .as_deref()
            .unwrap()
            .contains("uuid000001")
    );
    // Keep-alive OPTIONS go to the registrar along both paths.
    let probed = wait_until(Duration::from_secs(10), || async {
        registrar.stats().options >= 2
    })
    .await;
    assert!(probed, "{:?}", registrar.stats());
    // Their answers are matched like any response (random branch, Call-ID, CSeq, and the path
    // back to the socket each probe left from): no path is taken for dead, nothing is dropped.
    let answered_twice = wait_until(Duration::from_secs(10), || async {
        registrar.stats().options >= 6
    })
    .await;
    assert!(answered_twice, "{:?}", registrar.stats());
    let stats = daemon.gateway().driver.stats().await.unwrap();
    assert_eq!(
        (stats.keepalive_failures, stats.unmatched_responses),
        (0, 0),
        "{stats:?}"
    );
    // A registrar that stops answering is noticed by the keep-alive: the rows register again.
    registrar.set_behavior(Behavior::Silent);
    let noticed = wait_until(Duration::from_secs(20), || async {
        daemon
            .gateway()
            .driver
            .stats()
            .await
            .is_ok_and(|s| s.keepalive_failures >= 1 && s.rebinds >= 1)
    })
    .await;
    assert!(
        noticed,
        "{:?}",
        daemon.gateway().driver.stats().await.unwrap()
    );
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_over_a_tcp_connection_to_us_are_answered_on_it() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let registrar = registrar_at(1, "127.0.0.1:0", false).await;
    let dir = TempDir::new("tcp-inbound");
    let daemon = start(&dir, &demo_rows(1, registrar.local_addr()), |_| {}).await;
    assert!(all_registered(&daemon, 1, Duration::from_secs(20)).await);
    let gateway = daemon.sip_addr();
    let mut stream = tokio::net::TcpStream::connect(gateway).await.unwrap();
    let me = stream.local_addr().unwrap();
    // A CRLF ping first (RFC 5626), then OPTIONS and an INVITE for an unknown user.
    stream.write_all(b"\r\n\r\n").await.unwrap();
    for (branch, request) in [
        (
            "z9hG4bKt1",
            format!("OPTIONS sip:{gateway};transport=tcp SIP/2.0\r\n"),
        ),
        (
            "z9hG4bKt2",
            format!("INVITE sip:nobody@{gateway};transport=tcp SIP/2.0\r\n"),
        ),
    ] {
        let method = request.split(' ').next().unwrap().to_string();
        let message = format!(
            "{request}Via: SIP/2.0/TCP {me};branch={branch}\r\nFrom: <sip:p@x.test>;tag=1\r\n\
             To: <sip:{gateway}>\r\nCall-ID: {branch}\r\nCSeq: 1 {method}\r\nContent-Length: 0\r\n\r\n"
        );
        stream.write_all(message.as_bytes()).await.unwrap();
    }
    let mut received = Vec::new();
    let complete = tokio::time::timeout(Duration::from_secs(5), async {
        let mut buf = [0u8; 4096];
        loop {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "connection closed early");
            received.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&received);
            if text.contains("SIP/2.0 404") && text.contains("SIP/2.0 200") {
                break text.into_owned();
            }
        }
    })
    .await
    .expect("both answers on the same connection");
    assert!(complete.starts_with("\r\n"), "pong first: {complete:?}");
    assert!(complete.contains("branch=z9hG4bKt1"));
    assert!(complete.contains("branch=z9hG4bKt2"));
    let stats = daemon.gateway().driver.stats().await.unwrap();
    assert_eq!(stats.connections_accepted, 1);
    daemon.stop().await;
}

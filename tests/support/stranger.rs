//! What anyone on the network can do to the SIP port, for the attack tests: sockets on a
//! loopback address of their choosing (Linux routes all of 127.0.0.0/8 to loopback without
//! set-up, so each address stands for another host), receives and closes waited for with a
//! deadline, and the messages a stranger forges.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::{TcpSocket, TcpStream, UdpSocket};

/// A UDP socket on `ip` (e.g. "127.0.0.2"), any port.
pub async fn udp(ip: &str) -> UdpSocket {
    UdpSocket::bind(format!("{ip}:0"))
        .await
        .unwrap_or_else(|err| panic!("bind a UDP socket on {ip}: {err}"))
}

/// The next datagram within `limit`, if any.
pub async fn recv_within(socket: &UdpSocket, limit: Duration) -> Option<(String, SocketAddr)> {
    let mut buf = vec![0u8; 65_535];
    match tokio::time::timeout(limit, socket.recv_from(&mut buf)).await {
        Ok(Ok((len, from))) => Some((String::from_utf8_lossy(&buf[..len]).into_owned(), from)),
        _ => None,
    }
}

/// The next datagram within five seconds; fails the test if none comes.
pub async fn recv(socket: &UdpSocket) -> String {
    recv_within(socket, Duration::from_secs(5))
        .await
        .expect("a message in time")
        .0
}

/// Fails the test if `socket` receives anything within 400 ms.
pub async fn assert_silent(socket: &UdpSocket, who: &str) {
    if let Some((text, from)) = recv_within(socket, Duration::from_millis(400)).await {
        panic!("{who} received a message from {from}: {text}");
    }
}

/// Every datagram already waiting on `socket` (up to 100,000), without waiting for more.
pub fn drain(socket: &UdpSocket) -> Vec<(Vec<u8>, SocketAddr)> {
    let mut buf = vec![0u8; 65_535];
    let mut received = Vec::new();
    while received.len() < 100_000 {
        let Ok((len, from)) = socket.try_recv_from(&mut buf) else {
            break;
        };
        received.push((buf[..len].to_vec(), from));
    }
    received
}

/// A TCP connection to `to` from `ip` (e.g. "127.0.0.2"), any port; an error if it is not
/// established within ten seconds.
pub async fn connect_from(ip: &str, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(format!("{ip}:0").parse().expect("an IPv4 address"))?;
    tokio::time::timeout(Duration::from_secs(10), socket.connect(to))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect took 10 s"))?
}

/// Whether the peer ends `stream` (EOF or reset) within `limit`; anything read meanwhile is
/// discarded.
pub async fn closed_within(stream: &mut TcpStream, limit: Duration) -> bool {
    bytes_before_close(stream, limit).await.is_some()
}

/// How many bytes the peer sent before it ended `stream` (EOF or reset); `None` if it did not
/// end it within `limit`.
pub async fn bytes_before_close(stream: &mut TcpStream, limit: Duration) -> Option<usize> {
    let mut buf = [0u8; 4096];
    let mut total = 0;
    tokio::time::timeout(limit, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return total,
                Ok(n) => total += n,
            }
        }
    })
    .await
    .ok()
}

/// An INVITE for `ruri` with `via` as its only Via and `extra` header lines (each ending in
/// CRLF) before its small SDP body.
pub fn invite(via: &str, ruri: &str, call: &str, extra: &str) -> String {
    format!(
        "INVITE {ruri} SIP/2.0\r\n\
         Via: {via}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:carrier@provider.test>;tag=c1\r\n\
         To: <{ruri}>\r\n\
         Call-ID: {call}@provider.test\r\n\
         CSeq: 1 INVITE\r\n\
         Contact: <sip:carrier@provider.test>\r\n\
         {extra}\
         Content-Type: application/sdp\r\n\
         Content-Length: 4\r\n\r\nv=0\n"
    )
}

/// Identity headers a stranger forges, and a `Route` (which an edge proxy leaves for the
/// proxy behind it to judge).
pub const FORGED_IDENTITY: &str = "P-Asserted-Identity: <sip:+4930999@provider.test>\r\n\
                                   P-Preferred-Identity: <sip:boss@provider.test>\r\n\
                                   Remote-Party-ID: <sip:+4930999@provider.test>;party=calling;screen=yes\r\n\
                                   Route: <sip:pbx.test;lr>\r\n";

/// Fails the test unless `relayed` (a request carrying [`FORGED_IDENTITY`] as the gateway
/// relayed it) lost the identity headers and kept the `Route`.
pub fn assert_identity_stripped(relayed: &str) {
    for header in [
        "P-Asserted-Identity",
        "P-Preferred-Identity",
        "Remote-Party-ID",
    ] {
        assert!(!relayed.contains(header), "{header} relayed: {relayed}");
    }
    assert!(
        relayed.contains("\r\nRoute: <sip:pbx.test;lr>\r\n"),
        "Route not relayed: {relayed}"
    );
}

/// An OPTIONS probe, more or less what sipvicious' svmap sends.
pub fn options(via: &str, call: &str) -> String {
    format!(
        "OPTIONS sip:100@127.0.0.1 SIP/2.0\r\n\
         Via: {via}\r\n\
         Max-Forwards: 70\r\n\
         To: \"scan\" <sip:100@127.0.0.1>\r\n\
         From: \"scan\" <sip:100@127.0.0.1>;tag=6130\r\n\
         User-Agent: friendly-scanner\r\n\
         Call-ID: {call}\r\n\
         Contact: <sip:100@127.0.0.2:5060>\r\n\
         CSeq: 1 OPTIONS\r\n\
         Accept: application/sdp\r\n\
         Content-Length: 0\r\n\r\n"
    )
}

/// A response claiming to answer a request the gateway relayed: `branch` on the gateway's Via
/// and a second Via (with received/rport) naming `victim`, where the rest would go.
pub fn forged_relay_response(gateway: SocketAddr, branch: &str, victim: SocketAddr) -> String {
    format!(
        "SIP/2.0 200 OK\r\n\
         Via: SIP/2.0/UDP {gateway};branch={branch};rport\r\n\
         Via: SIP/2.0/UDP {victim};received={};rport={};branch=z9hG4bKvictim\r\n\
         From: <sip:a@attacker.test>;tag=1\r\nTo: <sip:b@attacker.test>;tag=2\r\n\
         Call-ID: smuggle\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n",
        victim.ip(),
        victim.port()
    )
}

/// An address as the gateway's relay branches write the way back (`4<ip hex><port hex>`).
pub fn path_addr(addr: SocketAddr) -> String {
    match addr {
        SocketAddr::V4(v4) => format!("4{:08x}{:04x}", u32::from(*v4.ip()), v4.port()),
        SocketAddr::V6(_) => unreachable!("IPv4 only here"),
    }
}

/// Relay-marked branches a stranger might try: the formats of before the fix (no MAC checked
/// at all: `rly-u…` to an address, `rly-f<N>…` into connection N) and today's format with
/// guessed MACs, in both cases, pointing at flows 1 to `flows` and at `victim`.
pub fn forged_relay_branches(gateway: SocketAddr, victim: SocketAddr, flows: u32) -> Vec<String> {
    let mut branches = vec![
        "z9hG4bKrly-u.0011223344556677".to_string(),
        "z9hG4bKrly-u7.abcd".to_string(),
        format!(
            "z9hG4bKrly-u4x{:08x}x{:x}.0011",
            u32::from(std::net::Ipv4Addr::new(127, 0, 0, 1)),
            gateway.port()
        ),
    ];
    for flow in 1..=flows {
        branches.push(format!("z9hG4bKrly-f{flow}.abcd"));
        branches.push(format!(
            "z9hG4bKrly-0123456789abcdef.f{flow:x}.{}",
            "0".repeat(32)
        ));
    }
    branches.push(format!(
        "z9hG4bKrly-0123456789abcdef.um{}.{}",
        path_addr(victim),
        "ab".repeat(16)
    ));
    branches.push(format!(
        "Z9HG4BKRLY-0123456789ABCDEF.UM{}.{}",
        path_addr(victim).to_uppercase(),
        "AB".repeat(16)
    ));
    branches
}

/// A final response to a REGISTER as a registrar would write it, with the identifiers given
/// and a binding no one should accept.
pub fn register_response(
    code: u16,
    branch: &str,
    call_id: &str,
    cseq: u32,
    method: &str,
) -> Vec<u8> {
    format!(
        "SIP/2.0 {code} Spoofed\r\n\
         Via: SIP/2.0/UDP 127.0.0.1:5062;rport;branch={branch}\r\n\
         From: <sip:someone@registrar.test>;tag=1\r\n\
         To: <sip:someone@registrar.test>;tag=2\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: {cseq} {method}\r\n\
         Contact: <sip:evil@192.0.2.66:5060>;expires=4294967295\r\n\
         Content-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

/// Final responses carrying one of the gateway's branches with another Call-ID, CSeq number
/// or CSeq method than its request's: 403 (a row that took one would stop registering), 200
/// with an absurd expiry.
pub fn with_wrong_ids(branch: &str, call_id: &str, cseq: u32) -> [Vec<u8>; 4] {
    [
        register_response(403, branch, &format!("x{call_id}"), cseq, "REGISTER"),
        register_response(403, branch, call_id, cseq + 1, "REGISTER"),
        register_response(200, branch, call_id, cseq.wrapping_sub(1), "REGISTER"),
        register_response(403, branch, call_id, cseq, "OPTIONS"),
    ]
}

/// Branches a stranger who saw `branch` (one of the gateway's, `z9hG4bKt<number>.<random>`)
/// might guess for other transactions: its last digit changed, the next transaction number,
/// other cases, another prefix, a counter.
pub fn guessed_branches(branch: &str, cseq: u32) -> Vec<String> {
    let rest = branch
        .strip_prefix("z9hG4bKt")
        .expect("the gateway's branch form");
    let (number, random) = rest.split_once('.').expect("number.random");
    let number = u64::from_str_radix(number, 16).expect("a hex transaction number");
    let mut flipped = branch.to_string();
    let last = flipped.pop().expect("a branch");
    flipped.push(if last == '0' { '1' } else { '0' });
    vec![
        flipped,
        format!("z9hG4bKt{:x}.{random}", number + 1),
        branch.to_uppercase(),
        format!("z9hG4bKka{rest}"),
        format!("z9hG4bK{:016x}.{:x}", 0x5eedu64, cseq),
    ]
}

//! Datagrams nobody should send a SIP port: random bytes, real requests and responses cut
//! short, whole requests from strangers, relay-marked responses, and the largest datagrams UDP
//! carries — sent from several sources at an even pace, with every answer that comes back
//! collected. Blocking sockets on a thread of their own, so the test's runtime (the registrar,
//! the watcher) is not held up by the sending.

use std::collections::HashMap;
use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::support::stranger::{forged_relay_branches, forged_relay_response};

/// The largest UDP payload over IPv4 (65,535 less the IP and UDP headers).
pub const LARGEST_DATAGRAM: usize = 65_507;

/// What the flood sends, one kind per datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// 16 to 1,400 random bytes (never starting with white space: that would be a keep-alive).
    Random,
    /// A request (OPTIONS, INVITE, REGISTER, BYE, MESSAGE; for users the gateway holds and for
    /// others) cut somewhere after its Call-ID line.
    CutRequest,
    /// The same cut within its first line or its Call-ID: nothing to answer.
    CutHead,
    /// A registrar's response (100, 180, 200, 401, 403, 503) with a branch no one issued, cut
    /// anywhere or whole.
    CutResponse,
    /// A response carrying the relay marker, whole, naming a victim in its second Via.
    RelayMarked,
    /// A whole request from a stranger.
    WholeRequest,
    /// 65,507 bytes: random, or an OPTIONS padded to that size.
    Largest,
}

/// What the flood sent and what came back.
#[derive(Debug)]
pub struct FloodReport {
    pub sent: u64,
    pub by_kind: std::collections::BTreeMap<Kind, u64>,
    /// Requests that can be answered (Call-ID intact), by Call-ID: the length sent.
    pub request_len: HashMap<String, usize>,
    /// Every datagram received on the sources, with its sender.
    pub answers: Vec<(Vec<u8>, SocketAddr)>,
    /// From the first datagram sent to the last answer collected.
    pub elapsed: Duration,
    started: Instant,
    sockets: Vec<UdpSocket>,
}

impl FloodReport {
    /// Collects what has arrived on the sources since (answers the daemon was late with).
    pub fn collect_late_answers(&mut self) {
        for socket in &self.sockets {
            collect(socket, &mut self.answers);
        }
        self.elapsed = self.started.elapsed();
    }
}

/// Sends `total` datagrams to `target`, round-robin from one socket on each of `sources`
/// (loopback addresses), evenly over `over`, and collects answers until a second after the
/// last one (the sockets stay open for more). Relay-marked responses name `victim` as the next hop. Fails the test if sending
/// falls more than a minute behind.
pub fn flood(
    target: SocketAddr,
    victim: SocketAddr,
    sources: &[String],
    total: usize,
    over: Duration,
) -> FloodReport {
    const TICK: Duration = Duration::from_millis(50);
    let sockets: Vec<UdpSocket> = sources
        .iter()
        .map(|ip| {
            let socket = UdpSocket::bind(format!("{ip}:0")).expect("bind a flood source");
            socket.set_nonblocking(true).expect("non-blocking");
            socket
        })
        .collect();
    let relay_branches = forged_relay_branches(target, victim, 8);
    let ticks = (over.as_millis() / TICK.as_millis()).max(1) as usize;
    let per_tick = total.div_ceil(ticks);
    let mut rng = StdRng::seed_from_u64(13);
    let started = Instant::now();
    let mut report = FloodReport {
        sent: 0,
        by_kind: Default::default(),
        request_len: HashMap::new(),
        answers: Vec::new(),
        elapsed: Duration::ZERO,
        started,
        sockets: Vec::new(),
    };
    let mut next_tick = started;
    let mut n = 0;
    while n < total {
        assert!(
            started.elapsed() < over + Duration::from_secs(60),
            "the flood fell behind: {n} of {total} sent after {:?}",
            started.elapsed()
        );
        for _ in 0..per_tick.min(total - n) {
            let socket = &sockets[n % sockets.len()];
            let from = socket.local_addr().expect("bound");
            let kind = kind_of(n);
            let (bytes, token) = match kind {
                Kind::Random => (random_bytes(&mut rng, 16..1_400), None),
                Kind::CutRequest | Kind::CutHead | Kind::WholeRequest => {
                    let (method, user) = pick_request(&mut rng);
                    let (text, call_id_end) = request(method, &user, n, from, 0);
                    let cut = match kind {
                        Kind::CutRequest => rng.random_range(call_id_end..text.len()),
                        Kind::CutHead => rng.random_range(1..call_id_end),
                        _ => text.len(),
                    };
                    let token = (kind != Kind::CutHead).then(|| token(n));
                    (text.as_bytes()[..cut].to_vec(), token)
                }
                Kind::CutResponse => {
                    let text = response(&mut rng);
                    let cut = rng.random_range(1..=text.len());
                    (text.as_bytes()[..cut].to_vec(), None)
                }
                Kind::RelayMarked => {
                    let branch = &relay_branches[n % relay_branches.len()];
                    (
                        forged_relay_response(target, branch, victim).into_bytes(),
                        None,
                    )
                }
                Kind::Largest if (n / 1000) % 2 == 0 => {
                    let unpadded = request("OPTIONS", "nobody", n, from, 0).0.len();
                    let pad = LARGEST_DATAGRAM - unpadded;
                    let (text, _) = request("OPTIONS", "nobody", n, from, pad);
                    assert_eq!(text.len(), LARGEST_DATAGRAM);
                    (text.into_bytes(), Some(token(n)))
                }
                Kind::Largest => (
                    random_bytes(&mut rng, LARGEST_DATAGRAM..LARGEST_DATAGRAM + 1),
                    None,
                ),
            };
            if let Some(token) = token {
                report.request_len.insert(token, bytes.len());
            }
            send(socket, &bytes, target);
            *report.by_kind.entry(kind).or_default() += 1;
            report.sent += 1;
            n += 1;
        }
        for socket in &sockets {
            collect(socket, &mut report.answers);
        }
        next_tick += TICK;
        if let Some(wait) = next_tick.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    // Answers to the last datagrams.
    for _ in 0..10 {
        std::thread::sleep(Duration::from_millis(100));
        for socket in &sockets {
            collect(socket, &mut report.answers);
        }
    }
    report.elapsed = started.elapsed();
    report.sockets = sockets;
    report
}

/// The kind of the `n`th datagram: one in a thousand is as large as UDP allows; of the rest,
/// 40 % random bytes, 15 % requests cut short, 10 % cut within their head, 25 % responses,
/// 5 % relay-marked responses, 5 % whole requests.
fn kind_of(n: usize) -> Kind {
    if n % 1000 == 999 {
        return Kind::Largest;
    }
    match n % 20 {
        0..=7 => Kind::Random,
        8..=10 => Kind::CutRequest,
        11..=12 => Kind::CutHead,
        13..=17 => Kind::CutResponse,
        18 => Kind::RelayMarked,
        _ => Kind::WholeRequest,
    }
}

/// The Call-ID of the `n`th datagram: what an answer to it carries back.
fn token(n: usize) -> String {
    format!("flood{n:07}")
}

/// The Call-ID in an answer, if it has one.
pub fn call_id(answer: &[u8]) -> Option<String> {
    String::from_utf8_lossy(answer).lines().find_map(|line| {
        line.strip_prefix("Call-ID: ")
            .or_else(|| line.strip_prefix("i: "))
            .map(|value| value.trim().to_string())
    })
}

fn random_bytes(rng: &mut StdRng, len: std::ops::Range<usize>) -> Vec<u8> {
    let mut bytes = vec![0u8; rng.random_range(len)];
    rng.fill(&mut bytes[..]);
    bytes[0] = rng.random_range(b'!'..=b'~');
    bytes
}

/// A method, and a user the gateway holds or one it does not.
fn pick_request(rng: &mut StdRng) -> (&'static str, String) {
    const METHODS: [&str; 5] = ["OPTIONS", "INVITE", "REGISTER", "BYE", "MESSAGE"];
    let method = METHODS[rng.random_range(0..METHODS.len())];
    let user = if rng.random_bool(0.5) {
        format!("uuid{:06}", rng.random_range(0..2_000))
    } else {
        format!("nobody{}", rng.random_range(0..1_000_000))
    };
    (method, user)
}

/// A request as a scanner writes it, with its Call-ID right after the request line (so a cut
/// after that line leaves it whole) and `pad` bytes of extra header; and where its Call-ID
/// line ends.
fn request(method: &str, user: &str, n: usize, from: SocketAddr, pad: usize) -> (String, usize) {
    let start = format!(
        "{method} sip:{user}@127.0.0.1 SIP/2.0\r\nCall-ID: {}\r\n",
        token(n)
    );
    let call_id_end = start.len();
    let body = if method == "INVITE" { "v=0\n" } else { "" };
    let padding = match pad {
        0 => String::new(),
        // "X-Pad: " and CRLF take 9 of the bytes.
        _ => format!("X-Pad: {}\r\n", "p".repeat(pad - 9)),
    };
    let text = format!(
        "{start}Via: SIP/2.0/UDP {from};branch=z9hG4bKflood{n:x};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:flood@{}>;tag=f{n:x}\r\n\
         To: <sip:{user}@127.0.0.1>\r\n\
         CSeq: {n} {method}\r\n\
         Contact: <sip:flood@{from}>\r\n\
         User-Agent: friendly-scanner\r\n\
         Accept: application/sdp\r\n\
         {padding}Content-Length: {}\r\n\r\n{body}",
        from.ip(),
        body.len()
    );
    (text, call_id_end)
}

/// A registrar's response to a REGISTER no one sent (a branch in the gateway's form, random).
fn response(rng: &mut StdRng) -> String {
    const STATUS: [&str; 6] = [
        "100 Trying",
        "180 Ringing",
        "200 OK",
        "401 Unauthorized",
        "403 Forbidden",
        "503 Service Unavailable",
    ];
    let status = STATUS[rng.random_range(0..STATUS.len())];
    let row = rng.random_range(0..2_000);
    format!(
        "SIP/2.0 {status}\r\n\
         Via: SIP/2.0/UDP 127.0.0.1:5062;rport=5062;received=127.0.0.1;branch=z9hG4bKt{:x}.{:032x}\r\n\
         From: <sip:user{row:06}@registrar.test>;tag={:x}\r\n\
         To: <sip:user{row:06}@registrar.test>;tag={:x}\r\n\
         Call-ID: {:032x}@gw.test\r\n\
         CSeq: {} REGISTER\r\n\
         Contact: <sip:uuid{row:06}@127.0.0.1:5062>;expires=4294967295\r\n\
         WWW-Authenticate: Digest realm=\"registrar.test\", nonce=\"{:x}\", qop=\"auth\", algorithm=MD5\r\n\
         Content-Length: 0\r\n\r\n",
        rng.random::<u16>(),
        rng.random::<u128>(),
        rng.random::<u32>(),
        rng.random::<u32>(),
        rng.random::<u128>(),
        rng.random_range(1..100_000u32),
        rng.random::<u64>(),
    )
}

/// Sends one datagram, waiting (briefly, boundedly) while the socket's buffer is full.
fn send(socket: &UdpSocket, bytes: &[u8], to: SocketAddr) {
    for _ in 0..1_000 {
        match socket.send_to(bytes, to) {
            Ok(_) => return,
            Err(err) if err.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(err) => panic!("sending {} bytes to {to}: {err}", bytes.len()),
        }
    }
    panic!("the send buffer stayed full for a second");
}

/// Everything waiting on `socket` (up to 100,000 datagrams).
fn collect(socket: &UdpSocket, into: &mut Vec<(Vec<u8>, SocketAddr)>) {
    let mut buf = vec![0u8; 65_535];
    for _ in 0..100_000 {
        let Ok((len, from)) = socket.recv_from(&mut buf) else {
            return;
        };
        into.push((buf[..len].to_vec(), from));
    }
}

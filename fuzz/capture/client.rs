//! A REGISTER client that keeps every message of its exchanges: the request encoding and the
//! digest answers are the library's (`RegisterRequest::encode`, `Authorization::answer`), as
//! in the daemon, over a blocking UDP socket on loopback.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use rand::Rng;
use uacreg::sip::digest::{Authorization, Challenge, SecretInput};
use uacreg::sip::message::Response;
use uacreg::sip::register::{Hop, RegisterRequest};

use crate::exchange::{Exchange, Message};

/// How long a final response may take.
const ANSWER_LIMIT: Duration = Duration::from_secs(3);
/// Challenges answered before giving up (a proxy's, the registrar's, a stale nonce).
const MAX_ROUNDS: u32 = 4;

/// Who registers. The contact is the one the fuzz harness's first registration uses
/// (`fuzz/src/rows.rs`, `uuid-udp-1`), so captured 200s list the binding it looks for.
pub struct Account<'a> {
    pub user: &'a str,
    pub password: &'a str,
    pub domain: &'a str,
    pub contact: &'a str,
}

/// Registers `account` at `registrar` for `expires` seconds, answering challenges, and adds
/// every message to `exchange`. Returns the final status code.
pub fn register(
    registrar: SocketAddr,
    account: &Account<'_>,
    expires: u32,
    exchange: &mut Exchange,
) -> io::Result<u16> {
    let socket = UdpSocket::bind("127.0.0.1:0")?;
    socket.set_read_timeout(Some(Duration::from_millis(200)))?;
    let local = socket.local_addr()?;
    let mut rng = rand::rng();
    let mut request = RegisterRequest {
        retire_contact: None,
        request_uri: format!("sip:{}", account.domain),
        aor: format!("sip:{}@{}", account.user, account.domain),
        from_tag: format!("{:016x}", rng.random::<u64>()),
        call_id: format!("{:032x}@uacreg", rng.random::<u128>()),
        cseq: rng.random_range(1..10_000),
        contact_uri: account.contact.to_string(),
        expires,
        authorization: Vec::new(),
        user_agent: concat!("uacreg/", env!("CARGO_PKG_VERSION")).into(),
    };
    for _ in 0..MAX_ROUNDS {
        let branch = format!("z9hG4bKt{:x}.{:032x}", request.cseq, rng.random::<u128>());
        let mut bytes = Vec::new();
        request.encode(&Hop::plain("UDP", &local.to_string(), &branch), &mut bytes);
        socket.send_to(&bytes, registrar)?;
        exchange.messages.push(Message { bytes });
        let response = final_response(&socket, registrar, exchange)?;
        if !matches!(response.code, 401 | 407) {
            return Ok(response.code);
        }
        let fresh = answers(&response, account, &request.request_uri);
        if fresh.is_empty() {
            return Ok(response.code);
        }
        // One answer per kind of challenge: the proxy's stays when the registrar challenges.
        request
            .authorization
            .retain(|(name, _)| fresh.iter().all(|(new, _)| new != name));
        request.authorization.extend(fresh);
        request.cseq += 1;
    }
    Ok(401)
}

/// Waits for the final response from `registrar`, keeping provisional ones.
fn final_response(
    socket: &UdpSocket,
    registrar: SocketAddr,
    exchange: &mut Exchange,
) -> io::Result<Response<'static>> {
    let deadline = Instant::now() + ANSWER_LIMIT;
    let mut buf = vec![0u8; uacreg::sip::MAX_MESSAGE];
    while Instant::now() < deadline {
        let (n, from) = match socket.recv_from(&mut buf) {
            Ok(received) => received,
            Err(err)
                if matches!(
                    err.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                continue;
            }
            Err(err) => return Err(err),
        };
        if from != registrar {
            continue;
        }
        exchange.messages.push(Message {
            bytes: buf[..n].to_vec(),
        });
        let response = Response::parse(&buf[..n])
            .map_err(|err| io::Error::new(io::ErrorKind::InvalidData, err.0))?;
        if response.code >= 200 {
            return Ok(response.into_owned());
        }
    }
    Err(io::Error::new(
        io::ErrorKind::TimedOut,
        format!("no final response from {registrar}"),
    ))
}

/// One `Authorization` or `Proxy-Authorization` for each challenge of `response`.
fn answers(response: &Response, account: &Account<'_>, uri: &str) -> Vec<(&'static str, String)> {
    let www = response.www_authenticate.iter().map(|value| (false, value));
    let proxy = response
        .proxy_authenticate
        .iter()
        .map(|value| (true, value));
    www.chain(proxy)
        .filter_map(|(is_proxy, value)| {
            let challenge = Challenge::parse(value, is_proxy).ok()?;
            let answer = Authorization::answer(
                &challenge,
                account.user,
                SecretInput::Password(account.password),
                "REGISTER",
                uri,
                b"",
                1,
                "0a4f113b",
            )
            .ok()?;
            let name = if is_proxy {
                "Proxy-Authorization"
            } else {
                "Authorization"
            };
            Some((name, answer.to_header_value()))
        })
        .collect()
}

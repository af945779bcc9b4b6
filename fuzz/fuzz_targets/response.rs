//! A response as the daemon handles it: the relay's check for its marker, `Response::parse`,
//! the transaction matcher, and the registration core — on four registrations with REGISTERs
//! in flight (UDP, UDP over IPv6, TCP through a proxy, no credentials).
//!
//! Input: up to 8 parts, each three control bytes and a response, separated by NUL bytes:
//! * byte 0: bits 0–1 the registration whose transaction the response claims to answer; bits
//!   2–3 what fills the placeholders — 0 its latest request, 1 the branch of it and the Call-ID
//!   and CSeq of the next registration's, 2 its latest request with the CSeq number plus one,
//!   3 its first request (long answered or retransmitted).
//! * byte 1 (mod 8): how it arrives — 0 the way the request went, 1 from the same IP on another
//!   port, 2 from another IP, 3 on another of our UDP sockets, 4 on another connection, 5 from
//!   the IPv4-mapped IPv6 form of the request's address, 6 on UDP when the request went on a
//!   connection and vice versa, 7 the way the request went (again).
//! * byte 2: how long before it arrives — below 200, that many seconds; from 200, (n − 199)
//!   minutes (so refreshes and expiries are reached).
//!
//! `$branch`, `$call-id` and `$cseq` in the response are replaced first (see
//! `uacreg_fuzz::placeholders`). Checks: a delivered response answers the transaction it was
//! delivered for in every respect; no registration waits for an answer without a timer; and
//! at the end, every request then in flight ends within the in-flight guard (no response can
//! freeze a row).

#![no_main]

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::OnceLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use uacreg::registration::Record;
use uacreg::sip::message::{Response, is_response};
use uacreg::relay::{self, ResponseRoute};
use uacreg::engine::transaction::{Path, Route};
use uacreg_fuzz::in_flight::{InFlight, Sent};
use uacreg_fuzz::placeholders::{self, BRANCH, CALL_ID, CSEQ};
use uacreg_fuzz::{MAX_MESSAGE, parts, relay_key};

/// The inbound proxy of the daemon; responses from registrars never come from it.
const PROXY: SocketAddr = SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 5070);

fn records() -> Vec<Record> {
    static RECORDS: OnceLock<Vec<Record>> = OnceLock::new();
    RECORDS
        .get_or_init(uacreg_fuzz::rows::registrations)
        .clone()
}

/// Where a response to `sent` arrives from, and by which path, for arrival choice `choice`.
fn arrival(sent: &Sent, choice: u8) -> (SocketAddr, Path) {
    let other_ip = SocketAddr::from(([203, 0, 113, 9], 5060));
    match (sent.path, choice % 8) {
        (Path::Udp(route), 1) => {
            let from = SocketAddr::new(route.remote.ip(), route.remote.port().wrapping_add(1));
            (
                from,
                Path::Udp(Route {
                    local: None,
                    remote: from,
                }),
            )
        }
        (Path::Udp(_), 2) => (
            other_ip,
            Path::Udp(Route {
                local: None,
                remote: other_ip,
            }),
        ),
        (Path::Udp(route), 3) => (
            route.remote,
            Path::Udp(Route {
                local: Some(SocketAddr::from(([192, 0, 2, 1], 5080))),
                remote: route.remote,
            }),
        ),
        (Path::Udp(route), 4 | 6) => (route.remote, Path::Flow(100)),
        (Path::Udp(route), 5) => {
            let mapped = match route.remote.ip() {
                IpAddr::V4(v4) => IpAddr::V6(v4.to_ipv6_mapped()),
                v6 => v6,
            };
            let from = SocketAddr::new(mapped, route.remote.port());
            (
                from,
                Path::Udp(Route {
                    local: None,
                    remote: from,
                }),
            )
        }
        (Path::Udp(route), _) => (route.remote, sent.path),
        (Path::Flow(flow), 4) => (other_ip, Path::Flow(flow + 1)),
        (Path::Flow(_), 6) => (
            other_ip,
            Path::Udp(Route {
                local: None,
                remote: other_ip,
            }),
        ),
        (Path::Flow(_), _) => (SocketAddr::from(([192, 0, 2, 20], 5060)), sent.path),
        // Not named yet: nothing can answer it, whatever arrives.
        (Path::Connecting, _) => (other_ip, Path::Flow(100)),
    }
}

fuzz_target!(|data: &[u8]| {
    let mut state = InFlight::new(records());
    state.check();
    for ([claim, arrive, wait], message) in parts::<3>(data, 8) {
        let wait = if wait < 200 {
            Duration::from_secs(u64::from(wait))
        } else {
            Duration::from_secs(60 * u64::from(wait - 199))
        };
        state.advance(wait);
        state.check();

        let keys = &state.keys;
        let key = keys[usize::from(claim & 3) % keys.len()];
        let next_key = keys[(usize::from(claim & 3) + 1) % keys.len()];
        let (Some(latest), Some(first)) = (state.latest(key), state.first(key)) else {
            continue;
        };
        let (mut branch, mut call_id, mut cseq) = (
            latest.ids.branch.clone(),
            latest.ids.call_id.clone(),
            latest.ids.cseq,
        );
        match (claim >> 2) & 3 {
            0 => {}
            1 => {
                if let Some(other) = state.latest(next_key) {
                    call_id = other.ids.call_id.clone();
                    cseq = other.ids.cseq;
                }
            }
            2 => cseq = cseq.wrapping_add(1),
            _ => {
                branch = first.ids.branch.clone();
                call_id = first.ids.call_id.clone();
                cseq = first.ids.cseq;
            }
        }
        let (from, path) = arrival(latest, arrive);
        let cseq = cseq.to_string();
        let response = placeholders::fill(
            message,
            &[
                (BRANCH, branch.as_bytes()),
                (CALL_ID, call_id.as_bytes()),
                (CSEQ, cseq.as_bytes()),
            ],
            MAX_MESSAGE,
        );

        // The driver's order: keep-alives and requests go elsewhere, the relay looks for its
        // marker first, then the response is parsed and matched.
        if response.iter().all(u8::is_ascii_whitespace) || !is_response(&response) {
            continue;
        }
        match relay::route_response(&response, from, relay_key(), Some(PROXY)) {
            ResponseRoute::NotRelayed => {}
            ResponseRoute::Relay { .. } => panic!("relayed a response that is not from the proxy"),
            ResponseRoute::Refused(_) => continue,
        }
        let Ok(parsed) = Response::parse(&response) else {
            continue;
        };
        if parsed.branch.is_none() {
            continue;
        }
        state.handle_response(&parsed, path);
        state.check();
    }
    // Whatever arrived, every registration still makes progress.
    state.check_nothing_stuck();
});

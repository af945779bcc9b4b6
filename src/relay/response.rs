//! Responses from the proxy to requests we relayed: verified, stripped of our Via, and sent
//! back along the path in our branch.

use std::net::SocketAddr;

use super::branch::{RelayKey, may_carry_relay_marker, strip_relay_marker, verify_branch};
use super::flow_token::ReturnPath;
use super::outcome::ResponseOutcome;
use super::via::{Via, first_value};
use crate::sip::head::{Head, unfold};
use crate::sip::message::is_response;

/// Where a response goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResponseRoute {
    /// A response from the proxy to a request we relayed, with our Via removed: send `bytes`
    /// along `path`.
    Relay { bytes: Vec<u8>, path: ReturnPath },
    /// Not ours (the top Via branch does not carry our relay marker): the caller treats it as a
    /// response to its own transactions.
    NotRelayed,
    /// Carries our marker but is not relayed: drop it, count it.
    Refused(ResponseOutcome),
}

/// Routes a received response from `from`: ours (top Via carries our marker) or not. Ours is
/// relayed only if a proxy is configured, it came from that proxy, and its branch verifies.
pub fn route_response(
    raw: &[u8],
    from: SocketAddr,
    key: &RelayKey,
    proxy: Option<SocketAddr>,
) -> ResponseRoute {
    if !is_response(raw) || !may_carry_relay_marker(raw) {
        return ResponseRoute::NotRelayed;
    }
    let Ok(scan) = Head::scan(raw) else {
        return ResponseRoute::NotRelayed;
    };
    let Some(via_index) = scan.headers.iter().position(|h| h.name == "via") else {
        return ResponseRoute::NotRelayed;
    };
    let header = &scan.headers[via_index];
    let Some(top) = first_value(raw, header.value_start, header.value_end) else {
        return ResponseRoute::NotRelayed;
    };
    let Some(via) = Via::parse(&unfold(&raw[top.start..top.end])) else {
        return ResponseRoute::NotRelayed;
    };
    let Some(relay_part) = via.param("branch").and_then(strip_relay_marker) else {
        return ResponseRoute::NotRelayed;
    };
    // From here on the response carries our marker: relayed or refused, never anything else.
    let Some(proxy) = proxy else {
        return ResponseRoute::Refused(ResponseOutcome::NoProxy);
    };
    if !same_address(from, proxy) {
        return ResponseRoute::Refused(ResponseOutcome::WrongSource);
    }
    let Some(path) = verify_branch(key, relay_part) else {
        return ResponseRoute::Refused(ResponseOutcome::BadMac);
    };
    if !scan.is_clean() {
        return ResponseRoute::Refused(ResponseOutcome::Malformed);
    }

    let mut bytes = Vec::with_capacity(raw.len());
    bytes.extend_from_slice(&raw[..header.start]);
    let next = match top.rest {
        // More values in the same line: keep the name and the rest of the line.
        Some(rest) => {
            bytes.extend_from_slice(&raw[header.start..top.start]);
            bytes.extend_from_slice(&raw[rest..header.end]);
            first_value(raw, rest, header.value_end)
        }
        None => scan.headers[via_index + 1..]
            .iter()
            .find(|h| h.name == "via")
            .and_then(|h| first_value(raw, h.value_start, h.value_end)),
    };
    bytes.extend_from_slice(&raw[header.end..]);
    // The next Via is the sender's; it is not where we send (the path is), but a response
    // without one is not a response to anything we relayed.
    if next
        .and_then(|n| Via::parse(&unfold(&raw[n.start..n.end])))
        .is_none()
    {
        return ResponseRoute::Refused(ResponseOutcome::Malformed);
    }
    ResponseRoute::Relay { bytes, path }
}

/// The same IP (an IPv4-mapped IPv6 address equals its IPv4 address) and port.
fn same_address(a: SocketAddr, b: SocketAddr) -> bool {
    a.ip().to_canonical() == b.ip().to_canonical() && a.port() == b.port()
}

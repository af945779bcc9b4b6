//! A response that claims to answer a request we relayed: `relay::route_response`, with a
//! fixed relay key, from arbitrary sources, with and without a proxy configured.
//!
//! To get past the marker check into the MAC check and the path decoding, the harness first
//! relays an INVITE that arrived along a path chosen by the control bytes (as the daemon does,
//! with `relay::handle_request`) and takes the branch of the Via it added; `$relay-branch` in
//! the response is replaced by that branch, as it is or damaged.
//!
//! Input: three control bytes, then the response.
//! * byte 0, bit by bit: 0 the INVITE came on a connection (else UDP); 1 on an extra UDP
//!   socket; 2 from an IPv6 sender; 3 a proxy is configured; 4–5 where the response comes
//!   from: 0 the proxy, 1 the proxy's IPv4-mapped IPv6 address, 2 the proxy's IP on another
//!   port, 3 elsewhere; 6–7 the branch: 0 as made, 1 marker in upper case, 2 one character
//!   changed (at byte 2), 3 cut (at byte 2).
//! * byte 1: the INVITE's sender port (5060 + n) and connection number.
//! * byte 2: where the branch is damaged.
//!
//! Checks: only a response from the proxy is relayed, only when a proxy is configured, only
//! along exactly the path the INVITE came by (nobody without the key can make another), and
//! without growing.

#![no_main]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use libfuzzer_sys::fuzz_target;
use uacreg::relay::{self, Action, ResponseRoute, ReturnPath};
use uacreg_fuzz::placeholders::{self, RELAY_BRANCH};
use uacreg_fuzz::{
    MAX_MESSAGE, Unstructured, control, relay_key, relaying_config, trusted_arrival,
};

const PROXY: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 99)), 5060);

/// The branch our Via gets when an INVITE for a registered contact arrives from `from` along
/// `path`.
fn relay_branch(from: SocketAddr, path: ReturnPath) -> String {
    let transport = if matches!(path, ReturnPath::Flow(_)) {
        "TCP"
    } else {
        "UDP"
    };
    let invite = format!(
        "INVITE sip:uuid000001@192.0.2.1:5062 SIP/2.0\r\n\
         Via: SIP/2.0/{transport} {from};branch=z9hG4bK776asdhds\r\n\
         Max-Forwards: 70\r\n\
         To: <sip:uuid000001@192.0.2.1>\r\n\
         From: <sip:caller@example.com>;tag=1928301774\r\n\
         Call-ID: a84b4c76e66710\r\n\
         CSeq: 314159 INVITE\r\n\
         Contact: <sip:caller@{from}>\r\n\
         Content-Length: 0\r\n\r\n"
    );
    let config = relaying_config();
    let arrival = trusted_arrival(from, path);
    let decision = relay::handle_request(invite.as_bytes(), arrival, &config, |_| {
        Some("sip:alice@pbx.test".into())
    });
    let Action::Forward(forwarded) = decision.action else {
        panic!("the INVITE was not relayed: {:?}", decision.outcome);
    };
    let text = String::from_utf8(forwarded).expect("we relay what we were given");
    let start = text.find(";branch=").expect("our Via has a branch") + ";branch=".len();
    let end = text[start..]
        .find([';', '\r', ',', ' '])
        .map_or(text.len(), |n| start + n);
    text[start..end].to_string()
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let (flags, port, at) = (control(&mut u), control(&mut u), control(&mut u));
    let message = u.take_rest();
    let bit = |n: u8| flags & (1 << n) != 0;

    let (sender, path) = uacreg_fuzz::arrival(bit(2), port, bit(0), bit(1));
    let mut branch = relay_branch(sender, path).into_bytes();
    let at = usize::from(at) % branch.len();
    match (flags >> 6) & 3 {
        0 => {}
        1 => branch[..11].make_ascii_uppercase(),
        2 => branch[at] = if branch[at] == b'0' { b'1' } else { b'0' },
        _ => branch.truncate(at),
    }
    let response = placeholders::fill(message, &[(RELAY_BRANCH, &branch)], MAX_MESSAGE);

    let proxy = bit(3).then_some(PROXY);
    let from = match (flags >> 4) & 3 {
        0 => PROXY,
        1 => SocketAddr::new(
            IpAddr::V6(Ipv4Addr::new(192, 0, 2, 99).to_ipv6_mapped()),
            5060,
        ),
        2 => SocketAddr::new(PROXY.ip(), 5061),
        _ => sender,
    };
    match relay::route_response(&response, from, relay_key(), proxy) {
        ResponseRoute::Relay { bytes, path: back } => {
            assert!(proxy.is_some(), "relayed with no proxy configured");
            assert!((flags >> 4) & 3 < 2, "relayed a response from {from}");
            assert_eq!(back, path, "relayed along a path nobody sent");
            assert!(bytes.len() < response.len(), "our Via was not removed");
        }
        ResponseRoute::NotRelayed | ResponseRoute::Refused(_) => {}
    }
});

//! A request as it arrives on the SIP port: `relay::handle_request` (what the inbound side does
//! with it) for trusted and untrusted senders, on UDP and on connections, with a lookup that
//! knows a few l_uuids; and `Request::parse` (what the test registrar parses).
//!
//! Input: two control bytes, then the request.
//! * byte 0, bit by bit: 0 trusted sender; 1 arrived on a connection (else UDP); 2 a proxy is
//!   configured; 3 untrusted requests are relayed stripped (else dropped); 4 unknown users from
//!   strangers get silence (else 404); 5 arrived on an extra UDP socket; 6 the sender is IPv6;
//!   7 our Via towards the proxy says TCP.
//! * byte 1: the sender's port (5060 + n) and the connection number.
//!
//! Checks: a stranger never gets more bytes back than it sent; what we send back is a response;
//! nothing is relayed without a proxy, and nothing from a stranger unless the policy strips,
//! and then without identity headers; what we relay has a head every parser cuts where we do
//! (so no header can hide from us); and a response to what we relayed, coming back from the
//! proxy, verifies and goes back exactly the way the request came.

#![no_main]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use libfuzzer_sys::fuzz_target;
use uacreg::sip::message::{Request, is_response};
use uacreg::relay::{
    self, Action, Addressee, Arrival, IDENTITY_HEADERS, RelayConfig, ResponseRoute, Sender,
    UnknownUserReply, UntrustedPolicy,
};
use uacreg_fuzz::{Unstructured, control, head, is_unambiguous, relay_key};

const PROXY: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 99)), 5060);

/// The registrations the gateway holds: l_uuid → local URI.
fn lookup(addressee: &Addressee) -> Option<String> {
    match addressee.key() {
        "uuid000001" => Some("sip:alice@pbx.test".into()),
        "uuid-udp-1" => Some("sip:100@192.0.2.50".into()),
        "8c1e5d0f-2b7a-4c11-9f00-5e8a1b2c3d4e" => Some("sip:+4930123456@[2001:db8::50]".into()),
        _ => None,
    }
}

/// Whether a header line of `head` (after the start line) is named `name`.
fn has_header(head: &[u8], name: &str) -> bool {
    head.split(|b| *b == b'\n').skip(1).any(|line| {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        // A line starting with white space continues the previous header (folding).
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            return false;
        };
        line[..colon]
            .trim_ascii_end()
            .eq_ignore_ascii_case(name.as_bytes())
    })
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let (flags, port) = (control(&mut u), control(&mut u));
    let raw = u.take_rest();
    let bit = |n: u8| flags & (1 << n) != 0;

    let _ = Request::parse(raw);

    let (from, path) = uacreg_fuzz::arrival(bit(6), port, bit(1), bit(5));
    let sender = if bit(0) {
        Sender::Trusted
    } else {
        Sender::Untrusted
    };
    let config = RelayConfig {
        via_transport: if bit(7) { "TCP" } else { "UDP" },
        via_sent_by: "192.0.2.1:5062",
        key: relay_key(),
        user_agent: "uacreg/0.1.0",
        relaying: bit(2),
        untrusted: if bit(3) {
            UntrustedPolicy::Strip
        } else {
            UntrustedPolicy::Drop
        },
        unknown_user: if bit(4) {
            UnknownUserReply::Silent
        } else {
            UnknownUserReply::NotFound
        },
    };
    let decision = relay::handle_request(raw, Arrival { from, path, sender }, &config, lookup);

    match decision.action {
        Action::Nothing => {}
        Action::Reply(reply) => {
            assert!(is_response(&reply), "a reply that is no response");
            if sender == Sender::Untrusted {
                assert!(
                    reply.len() <= raw.len(),
                    "{} bytes back to a stranger for {}",
                    reply.len(),
                    raw.len()
                );
            }
        }
        Action::Forward(forwarded) => {
            assert!(config.relaying, "relayed without a proxy");
            // The proxy reads the head as we did, whatever its parser.
            assert!(
                is_unambiguous(&forwarded),
                "relayed a head parsers read differently"
            );
            if sender == Sender::Untrusted {
                assert_eq!(
                    config.untrusted,
                    UntrustedPolicy::Strip,
                    "relayed for a stranger"
                );
                let head = head(&forwarded);
                for name in IDENTITY_HEADERS {
                    assert!(!has_header(head, name), "{name} relayed from a stranger");
                }
            }
            // The proxy answers: the response carries the request's headers, our Via on top.
            // The start line ends as the sender's did (CRLF or a bare LF).
            let Some(lf) = forwarded.iter().position(|b| *b == b'\n') else {
                panic!("a relayed request without a start line");
            };
            let line_end = if lf > 0 && forwarded[lf - 1] == b'\r' {
                lf - 1
            } else {
                lf
            };
            let mut response = b"SIP/2.0 200 OK".to_vec();
            response.extend_from_slice(&forwarded[line_end..]);
            match relay::route_response(&response, PROXY, relay_key(), Some(PROXY)) {
                ResponseRoute::Relay { path: back, .. } => assert_eq!(back, path),
                ResponseRoute::Refused(outcome) => assert_eq!(
                    outcome,
                    relay::ResponseOutcome::Malformed,
                    "our own branch refused"
                ),
                ResponseRoute::NotRelayed => panic!("our own branch not recognised"),
            }
        }
    }
});

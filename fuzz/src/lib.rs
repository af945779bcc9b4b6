//! What the fuzz targets share: how an input is laid out, and the pieces of the daemon's state a
//! message meets on its way in (registrations with requests in flight, the relay's key).
//!
//! Every SIP target reads a few *control bytes* first (which registration a response claims to
//! answer, which way it arrived, who sent a request …) and takes the rest as the message, so a
//! seed is a captured message behind a short prefix and libFuzzer mutates both. Control bytes
//! are read with `arbitrary`'s [`Unstructured`], one byte each from the front; a missing byte
//! reads as 0, the default choice. The layout of each target's prefix is in its own file.
//!
//! * [`in_flight`] — a registration table and client transactions with REGISTERs in flight,
//!   driven the way the daemon drives them, to deliver fuzzed responses to.
//! * [`placeholders`] — `$branch`, `$call-id`, `$cseq`, `$relay-branch`: what a captured
//!   message cannot know (the random branch of a live transaction) is filled in at run time.
//! * [`rows`] — realistic and arbitrary `uacreg` rows.

pub mod in_flight;
pub mod placeholders;
pub mod rows;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::OnceLock;

pub use libfuzzer_sys::arbitrary::Unstructured;
use uacreg::relay::{
    Arrival, RelayConfig, RelayKey, ReturnPath, Sender, UnknownUserReply, UntrustedPolicy,
};

/// Largest message the daemon accepts anywhere.
pub use uacreg::sip::MAX_MESSAGE;

/// The next control byte (0 once the input is exhausted).
pub fn control(u: &mut Unstructured<'_>) -> u8 {
    u.arbitrary::<u8>().unwrap_or(0)
}

/// The relay key every target uses (fixed, so a seed's MAC stays valid from run to run).
pub fn relay_key() -> &'static RelayKey {
    static KEY: OnceLock<RelayKey> = OnceLock::new();
    KEY.get_or_init(|| RelayKey::from_secret(&[0x5a; 32]))
}

/// The relay as the targets that need a call relayed set it up: a proxy configured, our Via
/// sent-by `192.0.2.1:5062`, the fixed [`relay_key`], default answers to strangers.
pub fn relaying_config() -> RelayConfig<'static> {
    RelayConfig {
        via_transport: "UDP",
        via_sent_by: "192.0.2.1:5062",
        key: relay_key(),
        user_agent: "",
        relaying: true,
        untrusted: UntrustedPolicy::Drop,
        unknown_user: UnknownUserReply::NotFound,
    }
}

/// A request from a trusted sender `from` that arrived along `path`.
pub fn trusted_arrival(from: SocketAddr, path: ReturnPath) -> Arrival {
    Arrival {
        from,
        path,
        sender: Sender::Trusted,
    }
}

/// A request from outside: who sent it (an IPv6 or IPv4 documentation address, port
/// 5060 + `port`) and the path its answer takes back — connection number `port`, or UDP from
/// our main socket or an extra one.
pub fn arrival(
    ipv6: bool,
    port: u8,
    on_flow: bool,
    extra_socket: bool,
) -> (SocketAddr, ReturnPath) {
    let ip = if ipv6 {
        IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 5))
    } else {
        IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7))
    };
    let sender = SocketAddr::new(ip, 5060 + u16::from(port));
    let path = if on_flow {
        ReturnPath::Flow(u64::from(port))
    } else {
        ReturnPath::Udp {
            local: extra_socket.then(|| SocketAddr::from(([192, 0, 2, 1], 5080))),
            source: sender,
        }
    };
    (sender, path)
}

/// The parts of an input that holds several messages, each behind `N` control bytes:
/// `control message NUL control message NUL …` (a NUL never occurs in a SIP head), at most
/// `max` of them. Missing control bytes read as 0.
pub fn parts<const N: usize>(data: &[u8], max: usize) -> Vec<([u8; N], &[u8])> {
    let mut found = Vec::new();
    let mut rest = data;
    while found.len() < max && (found.is_empty() || !rest.is_empty()) {
        let mut u = Unstructured::new(rest);
        let mut control_bytes = [0u8; N];
        for byte in &mut control_bytes {
            *byte = control(&mut u);
        }
        rest = &rest[rest.len().min(N)..];
        let end = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
        found.push((control_bytes, &rest[..end]));
        rest = rest.get(end + 1..).unwrap_or(&[]);
    }
    found
}

/// The head of a message: its start line and header lines, up to (not including) the line end
/// before the empty line, where lines end at LF (CRLF or bare), as the daemon reads them. The
/// whole message if it has no empty line.
pub fn head(message: &[u8]) -> &[u8] {
    let end = message.iter().enumerate().position(|(i, b)| {
        *b == b'\n' && matches!(&message[i + 1..], [b'\n', ..] | [b'\r', b'\n', ..])
    });
    match end {
        Some(lf) => &message[..lf],
        None => message,
    }
}

/// Whether every parser cuts the head of `message` where [`head`] does: all its lines end like
/// its start line (all CRLF or all bare LF, the empty line too) and no line holds another
/// control character than HTAB (a bare CR ends a line for some parsers, a NUL the text for
/// others).
pub fn is_unambiguous(message: &[u8]) -> bool {
    let head = head(message);
    let lines: Vec<&[u8]> = head.split(|b| *b == b'\n').collect();
    let crlf = lines.first().is_some_and(|line| line.ends_with(b"\r"));
    let empty_line = &message[head.len().min(message.len())..];
    let empty_line_ok =
        empty_line.is_empty() || empty_line.starts_with(if crlf { b"\n\r\n" } else { b"\n\n" });
    empty_line_ok
        && lines.iter().all(|line| {
            let content = if crlf {
                line.strip_suffix(b"\r")
            } else {
                Some(*line)
            };
            content.is_some_and(|c| !c.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f))
        })
}

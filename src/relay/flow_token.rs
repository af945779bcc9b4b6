//! The flow token: the way back to whoever sent a request, written into our Via branch so that
//! the proxy's responses can follow it without our keeping any state.
//!
//! It records the path *as we observed it* — the local UDP socket and the source address, or
//! the TCP/TLS connection — never what the sender wrote, in letters and digits only so that it
//! fits a branch parameter. [`super::branch`] MACs it; [`Origin`] is where a message came from
//! as the I/O layer reports it.

use std::net::{IpAddr, SocketAddr};

use crate::transport::stream::FlowId;

/// Longest return path we write: UDP on an IPv6 extra socket from an IPv6 source, `u` + 2 × 37.
pub(crate) const MAX_PATH: usize = 75;

/// Where a message came from, as the I/O layer saw it, so that answers go back the same way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// A UDP socket: the main one (`None`) or a row's own, bound at that address.
    Udp(Option<SocketAddr>),
    /// A TCP or TLS connection.
    Flow(FlowId),
}

impl Origin {
    /// The connection, for a message that came on one.
    pub fn flow(self) -> Option<FlowId> {
        match self {
            Origin::Flow(flow) => Some(flow),
            Origin::Udp(_) => None,
        }
    }

    /// The way back to `from`, which sent a message that arrived here.
    pub fn return_path(self, from: SocketAddr) -> ReturnPath {
        match self {
            Origin::Flow(flow) => ReturnPath::Flow(flow),
            Origin::Udp(local) => ReturnPath::Udp {
                local,
                source: from,
            },
        }
    }
}

/// Where a request arrived, as the driver observed it: the way its responses must go back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReturnPath {
    /// A datagram: the local socket it arrived on (`None`: the main SIP socket) and the source
    /// address it came from.
    Udp {
        local: Option<SocketAddr>,
        source: SocketAddr,
    },
    /// A TCP or TLS connection, by the driver's flow id.
    Flow(u64),
}

impl ReturnPath {
    /// Letters and digits only: `f<flow id in hex>`, or `u` + `m` (main socket) or the local
    /// address + the source address, each address `4<8 hex ip><4 hex port>` or
    /// `6<32 hex ip><4 hex port>`.
    pub(crate) fn encode(&self) -> String {
        match self {
            ReturnPath::Flow(flow) => format!("f{flow:x}"),
            ReturnPath::Udp { local, source } => {
                let local = local.map_or_else(|| "m".to_string(), encode_addr);
                format!("u{local}{}", encode_addr(*source))
            }
        }
    }

    pub(crate) fn decode(text: &str) -> Option<ReturnPath> {
        if let Some(hex) = text.strip_prefix('f') {
            return parse_hex(hex).map(ReturnPath::Flow);
        }
        let rest = text.strip_prefix('u')?;
        let (local, rest) = match rest.strip_prefix('m') {
            Some(rest) => (None, rest),
            None => {
                let (local, rest) = decode_addr(rest)?;
                (Some(local), rest)
            }
        };
        let (source, rest) = decode_addr(rest)?;
        rest.is_empty().then_some(ReturnPath::Udp { local, source })
    }
}

fn encode_addr(addr: SocketAddr) -> String {
    match addr {
        SocketAddr::V4(v4) => format!("4{:08x}{:04x}", u32::from(*v4.ip()), v4.port()),
        SocketAddr::V6(v6) => format!("6{:032x}{:04x}", u128::from(*v6.ip()), v6.port()),
    }
}

/// One address of [`encode_addr`] at the start of `text`, and what follows it.
fn decode_addr(text: &str) -> Option<(SocketAddr, &str)> {
    let (ip_hex, rest) = match text.as_bytes().first()? {
        b'4' => (8, &text[1..]),
        b'6' => (32, &text[1..]),
        _ => return None,
    };
    let ip_text = rest.get(..ip_hex)?;
    let port_text = rest.get(ip_hex..ip_hex + 4)?;
    let rest = rest.get(ip_hex + 4..)?;
    let ip = match ip_hex {
        8 => IpAddr::V4(u32::try_from(parse_hex(ip_text)?).ok()?.into()),
        _ => IpAddr::V6(parse_hex_u128(ip_text)?.into()),
    };
    let port = u16::try_from(parse_hex(port_text)?).ok()?;
    Some((SocketAddr::new(ip, port), rest))
}

/// Lowercase hex digits only (no sign, no empty string), at most 16 of them.
fn parse_hex(text: &str) -> Option<u64> {
    if text.is_empty() || text.len() > 16 || !is_lower_hex(text) {
        return None;
    }
    u64::from_str_radix(text, 16).ok()
}

fn parse_hex_u128(text: &str) -> Option<u128> {
    if text.is_empty() || text.len() > 32 || !is_lower_hex(text) {
        return None;
    }
    u128::from_str_radix(text, 16).ok()
}

pub(crate) fn is_lower_hex(text: &str) -> bool {
    text.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

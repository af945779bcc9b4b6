//! Whom the inbound relay trusts: the registrars our rows are bound to, the connections we
//! opened to them, and the networks the operator lists in `[inbound] trusted`.
//!
//! A request from anyone else is a stranger's: it is not relayed as it came, and what it gets
//! back is small and rate-limited (see [`super::request`]). The question is asked for every
//! request that arrives, so the answer must not cost a scan of the table: registrar addresses
//! are kept as a reference-counted set that the driver updates whenever a row's binding moves,
//! and the configured networks as one hash set per prefix length, so a lookup costs one hash
//! probe per distinct prefix length in the configuration (a handful), however many rows there
//! are.
//!
//! IPv4-mapped IPv6 addresses (what a dual-stack socket reports for IPv4 peers) are compared
//! as the IPv4 addresses they are.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use crate::transport::stream::FlowId;

/// An IP network: an address and how many leading bits of it matter (`203.0.113.0/24`,
/// `2001:db8::1` = `/128`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IpPrefix {
    /// With every bit past `len` zero.
    network: IpAddr,
    len: u8,
}

/// Why a `trusted` entry is not an IP network.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum PrefixError {
    #[error("{0:?} is not an IP address or address/prefix-length")]
    Syntax(String),
    #[error("{text:?}: an {family} prefix length is at most {max}")]
    TooLong {
        text: String,
        family: &'static str,
        max: u8,
    },
    #[error("{text:?} has bits set after the prefix; did you mean {suggestion}?")]
    HostBits { text: String, suggestion: String },
}

impl IpPrefix {
    /// The network `ip/len`, or `None` when `len` is too long for its family.
    pub fn new(ip: IpAddr, len: u8) -> Option<IpPrefix> {
        let (ip, len) = canonical_prefix(ip, len)?;
        Some(IpPrefix {
            network: masked(ip, len),
            len,
        })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        ip.is_ipv4() == self.network.is_ipv4() && masked(ip, self.len) == self.network
    }
}

impl FromStr for IpPrefix {
    type Err = PrefixError;

    /// An address alone is the network of that one host. Bits past the prefix length are an
    /// error, not silently cleared: `203.0.113.7/24` is more likely a typo than a wish to trust
    /// 255 neighbours.
    fn from_str(text: &str) -> Result<IpPrefix, PrefixError> {
        let syntax = || PrefixError::Syntax(text.to_string());
        let trimmed = text.trim();
        let (ip_text, len_text) = match trimmed.split_once('/') {
            Some((ip, len)) => (ip, Some(len)),
            None => (trimmed, None),
        };
        let ip: IpAddr = ip_text.parse().map_err(|_| syntax())?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let len = match len_text {
            None => max,
            Some(len) if !len.is_empty() && len.bytes().all(|b| b.is_ascii_digit()) => {
                len.parse::<u8>().map_err(|_| syntax())?
            }
            Some(_) => return Err(syntax()),
        };
        if len > max {
            return Err(PrefixError::TooLong {
                text: text.to_string(),
                family: if ip.is_ipv4() { "IPv4" } else { "IPv6" },
                max,
            });
        }
        let (network, canonical_len) = canonical_prefix(ip, len).ok_or_else(syntax)?;
        if masked(network, canonical_len) != network {
            return Err(PrefixError::HostBits {
                text: text.to_string(),
                suggestion: format!("{}/{len}", masked(ip, len)),
            });
        }
        Ok(IpPrefix {
            network,
            len: canonical_len,
        })
    }
}

impl fmt::Display for IpPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.len)
    }
}

/// An IPv4-mapped IPv6 prefix of at least 96 bits as the IPv4 prefix it is; `None` when the
/// length does not fit the family.
fn canonical_prefix(ip: IpAddr, len: u8) -> Option<(IpAddr, u8)> {
    match ip {
        IpAddr::V4(_) if len <= 32 => Some((ip, len)),
        IpAddr::V6(v6) if len <= 128 => match v6.to_ipv4_mapped() {
            Some(v4) if len >= 96 => Some((IpAddr::V4(v4), len - 96)),
            _ => Some((ip, len)),
        },
        _ => None,
    }
}

/// `ip` with every bit past the first `len` cleared.
fn masked(ip: IpAddr, len: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let mask = u32::MAX
                .checked_shl(32 - u32::from(len.min(32)))
                .unwrap_or(0);
            IpAddr::V4((u32::from(v4) & mask).into())
        }
        IpAddr::V6(v6) => {
            let mask = u128::MAX
                .checked_shl(128 - u32::from(len.min(128)))
                .unwrap_or(0);
            IpAddr::V6((u128::from(v6) & mask).into())
        }
    }
}

/// The relay's view of who is trusted, kept up to date as bindings move and connections come
/// and go.
#[derive(Debug, Default)]
pub struct Trust {
    /// How many rows are bound to a registrar at each address.
    registrars: HashMap<IpAddr, usize>,
    /// Configured networks by (is IPv4, prefix length).
    networks: HashMap<(bool, u8), HashSet<IpAddr>>,
    /// Connections peers opened to us (all others are ours, to registrars).
    inbound_flows: HashSet<FlowId>,
}

impl Trust {
    pub fn new(trusted: &[IpPrefix]) -> Trust {
        let mut networks: HashMap<(bool, u8), HashSet<IpAddr>> = HashMap::new();
        for prefix in trusted {
            networks
                .entry((prefix.network.is_ipv4(), prefix.len))
                .or_default()
                .insert(prefix.network);
        }
        Trust {
            networks,
            ..Trust::default()
        }
    }

    /// A row's binding moved from a registrar at `from` to one at `to` (either may be none).
    pub fn registrar_moved(&mut self, from: Option<IpAddr>, to: Option<IpAddr>) {
        let (from, to) = (
            from.map(|ip| ip.to_canonical()),
            to.map(|ip| ip.to_canonical()),
        );
        if from == to {
            return;
        }
        if let Some(ip) = to {
            *self.registrars.entry(ip).or_default() += 1;
        }
        if let Some(ip) = from
            && let Some(count) = self.registrars.get_mut(&ip)
        {
            *count -= 1;
            if *count == 0 {
                self.registrars.remove(&ip);
            }
        }
    }

    pub fn flow_accepted(&mut self, flow: FlowId) {
        self.inbound_flows.insert(flow);
    }

    pub fn flow_closed(&mut self, flow: FlowId) {
        self.inbound_flows.remove(&flow);
    }

    /// A connection a peer opened to us (as opposed to one we opened to a registrar).
    pub fn is_inbound_flow(&self, flow: FlowId) -> bool {
        self.inbound_flows.contains(&flow)
    }

    /// Whether a message from `from`, on connection `flow` if any, comes from someone we trust:
    /// on a connection we opened to a registrar, or from a registrar's or a configured address.
    pub fn is_trusted(&self, from: SocketAddr, flow: Option<FlowId>) -> bool {
        if flow.is_some_and(|flow| !self.is_inbound_flow(flow)) {
            return true;
        }
        self.is_trusted_ip(from.ip())
    }

    pub fn is_trusted_ip(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        if self.registrars.contains_key(&ip) {
            return true;
        }
        self.networks
            .iter()
            .any(|(&(v4, len), set)| v4 == ip.is_ipv4() && set.contains(&masked(ip, len)))
    }

    /// Addresses with at least one row bound there (for tests and diagnostics).
    #[cfg(test)]
    fn registrar_count(&self) -> usize {
        self.registrars.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn prefixes_parse_and_match() {
        let net: IpPrefix = "203.0.113.0/24".parse().unwrap();
        assert!(net.contains(ip("203.0.113.255")));
        assert!(net.contains(ip("::ffff:203.0.113.9")), "mapped IPv4");
        assert!(!net.contains(ip("203.0.114.0")));
        let host: IpPrefix = "2001:db8::1".parse().unwrap();
        assert_eq!(host.to_string(), "2001:db8::1/128");
        assert!(host.contains(ip("2001:db8::1")));
        assert!(!host.contains(ip("2001:db8::2")));
        let all: IpPrefix = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("198.51.100.1")));
        assert!(
            !all.contains(ip("2001:db8::1")),
            "an IPv4 network holds no IPv6"
        );
        let mapped: IpPrefix = "::ffff:10.0.0.0/104".parse().unwrap();
        assert_eq!(mapped.to_string(), "10.0.0.0/8");
        for bad in [
            "",
            "10.0.0.0/",
            "10.0.0.0/33",
            "::/129",
            "10.0.0/8",
            "x",
            "10.0.0.0/+8",
        ] {
            assert!(bad.parse::<IpPrefix>().is_err(), "{bad:?}");
        }
        let err = "203.0.113.7/24".parse::<IpPrefix>().unwrap_err();
        assert!(err.to_string().contains("203.0.113.0/24"), "{err}");
    }

    #[test]
    fn registrars_are_trusted_while_rows_are_bound_to_them() {
        let mut trust = Trust::new(&["192.0.2.0/25".parse().unwrap()]);
        let registrar = ip("198.51.100.5");
        assert!(!trust.is_trusted_ip(registrar));
        trust.registrar_moved(None, Some(registrar));
        trust.registrar_moved(None, Some(registrar));
        trust.registrar_moved(Some(registrar), Some(registrar));
        assert!(trust.is_trusted_ip(registrar));
        assert!(trust.is_trusted_ip(ip("::ffff:198.51.100.5")));
        trust.registrar_moved(Some(registrar), None);
        assert!(
            trust.is_trusted_ip(registrar),
            "one row is still bound there"
        );
        trust.registrar_moved(Some(registrar), Some(ip("198.51.100.6")));
        assert!(!trust.is_trusted_ip(registrar));
        assert!(trust.is_trusted_ip(ip("198.51.100.6")));
        assert_eq!(trust.registrar_count(), 1);
        // An unbind that was never bound changes nothing.
        trust.registrar_moved(Some(ip("203.0.113.1")), None);
        assert_eq!(trust.registrar_count(), 1);
        // Configured networks.
        assert!(trust.is_trusted_ip(ip("192.0.2.127")));
        assert!(!trust.is_trusted_ip(ip("192.0.2.128")));
    }

    #[test]
    fn our_connections_are_trusted_and_inbound_ones_by_address() {
        let mut trust = Trust::new(&[]);
        let stranger: SocketAddr = "198.51.100.9:5060".parse().unwrap();
        trust.flow_accepted(7);
        assert!(
            trust.is_trusted(stranger, Some(3)),
            "a connection we opened"
        );
        assert!(!trust.is_trusted(stranger, Some(7)));
        assert!(!trust.is_trusted(stranger, None));
        trust.registrar_moved(None, Some(stranger.ip()));
        assert!(trust.is_trusted(stranger, Some(7)));
        trust.flow_closed(7);
        assert!(!trust.is_inbound_flow(7));
    }
}

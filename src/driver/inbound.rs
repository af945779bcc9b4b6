//! Requests that arrive at our contacts, on any socket or connection, and the responses to the
//! requests we relay.
//!
//! OPTIONS (registrar and proxy pings) get 200 from us. Any other request addressed to a
//! registered contact (by `l_uuid`, or Kamailio 6's `contact_user;line=l_uuid`) is relayed
//! statelessly to the configured proxy with the Request-URI rewritten to the row's local URI, as
//! Kamailio's `uac_reg_lookup()` does; the proxy's responses come back through us. The decisions
//! themselves are in [`crate::sip::relay`]; this file only picks sockets and connections.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use tracing::{debug, trace};

use super::Driver;
use crate::sip::message::{Response, is_response};
use crate::sip::relay::{self, Inbound, RelayConfig, ResponseRoute};
use crate::transport::stream::FlowId;
use crate::transport::udp::UdpTransport;

/// Settings for the inbound side.
#[derive(Clone, Debug, Default)]
pub struct InboundConfig {
    /// Where requests for registered contacts are relayed (UDP); `None`: they are not relayed
    /// (OPTIONS is still answered, unknown users still get 404).
    pub proxy: Option<SocketAddr>,
    /// `Server` header of our own replies.
    pub user_agent: String,
}

/// Where a message came from, so that answers go back the same way.
#[derive(Clone, Copy, Debug)]
pub(super) enum Origin {
    /// A UDP socket: the main one (`None`) or a row's own.
    Udp(Option<SocketAddr>),
    /// A TCP or TLS connection.
    Flow(FlowId),
}

impl Driver {
    pub(super) fn handle_datagram(
        &mut self,
        now: Instant,
        bytes: &[u8],
        from: SocketAddr,
        local: Option<SocketAddr>,
    ) {
        self.stats.datagrams_received += 1;
        self.handle_message(now, bytes, from, Origin::Udp(local));
    }

    pub(super) fn handle_message(
        &mut self,
        now: Instant,
        bytes: &[u8],
        from: SocketAddr,
        origin: Origin,
    ) {
        if bytes.iter().all(|b| b.is_ascii_whitespace()) {
            // RFC 5626 keep-alive (CRLF) or padding.
            return;
        }
        if is_response(bytes) {
            match relay::route_response(bytes) {
                ResponseRoute::NotRelayed => match Response::parse(bytes) {
                    Ok(response) => self.handle_register_response(now, response, from, origin),
                    Err(err) => {
                        self.stats.malformed_dropped += 1;
                        debug!(%from, "dropping malformed response: {err}");
                    }
                },
                ResponseRoute::Relay {
                    bytes,
                    to_host,
                    to_port,
                    flow_token,
                } => self.relay_response(bytes, &to_host, to_port, &flow_token),
                ResponseRoute::Drop => self.stats.malformed_dropped += 1,
            }
        } else {
            self.handle_request(bytes, from, origin);
        }
    }

    /// The UDP socket bound at `local`, or the main one.
    pub(super) fn udp_socket(&self, local: Option<SocketAddr>) -> &Arc<UdpTransport> {
        local
            .and_then(|addr| self.extra_udp.get(&addr))
            .unwrap_or(&self.udp)
    }

    fn handle_request(&mut self, bytes: &[u8], from: SocketAddr, origin: Origin) {
        let flow_token = match origin {
            Origin::Flow(flow) => format!("f{flow}"),
            Origin::Udp(None) => "u".to_string(),
            Origin::Udp(Some(local)) => format!("u{}", encode_addr(local)),
        };
        let config = RelayConfig {
            via_transport: "UDP",
            via_sent_by: &self.config.via_sent_by,
            branch_secret: self.branch_secret,
            flow_token: &flow_token,
            user_agent: &self.config.inbound.user_agent,
        };
        let relaying = self.config.inbound.proxy.is_some();
        let table = &self.table;
        let decision = relay::handle_request(bytes, from, &config, |addressee| {
            let registration = table.get(addressee.key())?;
            let record = registration.record();
            Some(format!("sip:{}@{}", record.l_username(), record.l_domain()))
        });
        match decision {
            Inbound::Reply(reply) => {
                if reply.starts_with(b"SIP/2.0 200") {
                    self.stats.options_answered += 1;
                } else if reply.starts_with(b"SIP/2.0 404") {
                    self.stats.unknown_user += 1;
                }
                self.send_back(origin, from, reply);
            }
            Inbound::Forward(forward) => match self.config.inbound.proxy {
                Some(proxy) if relaying => {
                    self.stats.requests_relayed += 1;
                    if self.udp.try_send(&forward, proxy).is_err() {
                        self.stats.send_errors += 1;
                    }
                }
                _ => {
                    self.stats.requests_ignored += 1;
                    debug!(%from, "a request for a registered contact arrived, but no inbound proxy is configured");
                }
            },
            Inbound::Drop => trace!(%from, "inbound request dropped"),
        }
    }

    fn send_back(&mut self, origin: Origin, to: SocketAddr, bytes: Vec<u8>) {
        match origin {
            Origin::Flow(flow) => {
                if !self.streams.send_on(flow, Arc::from(bytes)) {
                    self.stats.send_errors += 1;
                }
            }
            Origin::Udp(local) => {
                if self.udp_socket(local).try_send(&bytes, to).is_err() {
                    self.stats.send_errors += 1;
                }
            }
        }
    }

    /// A response from the proxy to a request we relayed: back the way the request came.
    fn relay_response(&mut self, bytes: Vec<u8>, to_host: &str, to_port: u16, flow_token: &str) {
        if let Some(flow) = flow_token
            .strip_prefix('f')
            .and_then(|f| f.parse::<FlowId>().ok())
        {
            if self.streams.send_on(flow, Arc::from(bytes)) {
                self.stats.responses_relayed += 1;
            } else {
                // The connection the request came on is gone; the sender retransmits or gives up.
                self.stats.send_errors += 1;
                debug!(flow, "cannot relay a response: its connection is closed");
            }
            return;
        }
        let local = flow_token
            .strip_prefix('u')
            .filter(|rest| !rest.is_empty())
            .and_then(decode_addr);
        let Ok(ip) = to_host.parse::<IpAddr>() else {
            debug!(to_host, "cannot relay a response to a host name");
            self.stats.requests_ignored += 1;
            return;
        };
        let to = SocketAddr::new(ip, to_port);
        if self.udp_socket(local).try_send(&bytes, to).is_err() {
            self.stats.send_errors += 1;
        } else {
            self.stats.responses_relayed += 1;
        }
    }
}

/// A local socket address as letters and digits only (the flow token alphabet).
fn encode_addr(addr: SocketAddr) -> String {
    match addr {
        SocketAddr::V4(v4) => format!("4x{:08x}x{:x}", u32::from(*v4.ip()), v4.port()),
        SocketAddr::V6(v6) => format!("6x{:032x}x{:x}", u128::from(*v6.ip()), v6.port()),
    }
}

fn decode_addr(token: &str) -> Option<SocketAddr> {
    let mut parts = token.split('x');
    let family = parts.next()?;
    let ip = parts.next()?;
    let port = u16::from_str_radix(parts.next()?, 16).ok()?;
    let ip: IpAddr = match family {
        "4" => IpAddr::V4(u32::from_str_radix(ip, 16).ok()?.into()),
        "6" => IpAddr::V6(u128::from_str_radix(ip, 16).ok()?.into()),
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_tokens_round_trip() {
        for addr in ["127.0.0.2:5070", "[::1]:5062", "[2001:db8::5]:1"] {
            let addr: SocketAddr = addr.parse().unwrap();
            let token = encode_addr(addr);
            assert!(token.chars().all(|c| c.is_ascii_alphanumeric()));
            assert_eq!(decode_addr(&token), Some(addr));
        }
    }
}

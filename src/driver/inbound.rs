//! Messages that arrive on any socket or connection, handed to the [`Relay`], and what it
//! answers sent where it says.
//!
//! The decisions — OPTIONS answered, calls for our contacts relayed to the proxy, the proxy's
//! responses relayed back, strangers' answers rate-limited, everything counted — are all the
//! relay's ([`crate::relay`]), which performs no I/O. This file only feeds it, sends its
//! [`Transmit`]s on the sockets and connections it names, and passes the responses that are not
//! the relay's (answers to our REGISTERs and keep-alives) on to the [`crate::engine::Engine`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tracing::debug;

use super::Driver;
pub(super) use crate::relay::Origin;
use crate::relay::{Handled, Relay, Transmit};
use crate::transport::udp::UdpTransport;

pub use crate::relay::{InboundConfig, InboundPolicy, InboundStats, IpPrefix};

/// The relay of a driver starting with `config`, under a fresh key.
pub(super) fn new_relay(config: InboundConfig, via_sent_by: String) -> Relay {
    // Without it nothing we relay could be told from a forgery: not worth running.
    let key =
        crate::relay::RelayKey::generate().expect("the OS random generator gives the relay key");
    Relay::new(config, via_sent_by, key)
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
        self.carry_out(now);
    }

    pub(super) fn handle_message(
        &mut self,
        now: Instant,
        bytes: &[u8],
        from: SocketAddr,
        origin: Origin,
    ) {
        let table = self.engine.table();
        let handled = self
            .relay
            .handle_message(now, bytes, from, origin, |addressee| {
                let record = table.get(addressee.key())?.record();
                Some(format!("sip:{}@{}", record.l_username(), record.l_domain()))
            });
        match handled {
            // A response to one of our own requests: the engine's.
            Handled::NotOurs => match origin {
                Origin::Udp(local) => self.engine.handle_datagram(now, local, from, bytes),
                Origin::Flow(flow) => self.engine.handle_stream_message(now, flow, from, bytes),
            },
            Handled::Send(transmit) => self.send_back(transmit),
            Handled::Relay(transmit) => {
                if !self.relay_back(transmit) {
                    self.relay.relay_failed();
                }
            }
            Handled::Done => {}
        }
    }

    /// The UDP socket bound at `local`, or the main one.
    pub(super) fn udp_socket(&self, local: Option<SocketAddr>) -> &Arc<UdpTransport> {
        local
            .and_then(|addr| self.extra_udp.get(&addr))
            .unwrap_or(&self.udp)
    }

    /// An answer of ours or a forwarded request; a failure is a send error.
    fn send_back(&mut self, transmit: Transmit) {
        let sent = match transmit {
            Transmit::Flow { flow, bytes } => self.streams.send_on(flow, Arc::from(bytes)),
            Transmit::Udp { local, to, bytes } => {
                self.udp_socket(local).try_send(&bytes, to).is_ok()
            }
        };
        if !sent {
            self.stats.send_errors += 1;
        }
    }

    /// A verified response from the proxy, exactly the way its request came: on that
    /// connection or from that socket, never another. False when that way is gone.
    fn relay_back(&mut self, transmit: Transmit) -> bool {
        match transmit {
            Transmit::Flow { flow, bytes } => {
                // The request came on this connection (the MAC says so): an inbound one, or
                // one of ours to a registrar that sent a call down it (RFC 5626). Either way it
                // is the only way back; a closed connection is not replaced by another.
                let sent = self.streams.send_on(flow, Arc::from(bytes));
                if !sent {
                    debug!(flow, "cannot relay a response: its connection is closed");
                }
                sent
            }
            Transmit::Udp { local, to, bytes } => {
                let socket = match local {
                    None => &self.udp,
                    Some(addr) => match self.extra_udp.get(&addr) {
                        Some(socket) => socket,
                        None => return false,
                    },
                };
                if socket.try_send(&bytes, to).is_err() {
                    self.stats.send_errors += 1;
                    return false;
                }
                true
            }
        }
    }
}

//! Requests that arrive at our contacts, on any socket or connection, and the responses to the
//! requests we relay.
//!
//! OPTIONS (registrar and proxy pings) get 200 from us. Any other request addressed to a
//! registered contact (by `l_uuid`, or Kamailio 6's `contact_user;line=l_uuid`) is relayed
//! statelessly to the configured proxy with the Request-URI rewritten to the row's local URI, as
//! Kamailio's `uac_reg_lookup()` does; the proxy's responses come back through us. The decisions
//! themselves are in [`crate::sip::relay`]; this file says who is trusted (from
//! [`super::trust`]), keeps strangers' answers within the [`super::reply_budget`], picks sockets
//! and connections, and counts what became of every message. Responses to our own requests
//! pass through to the [`crate::engine::Engine`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tracing::{debug, trace};

use super::Driver;
use super::trust::IpPrefix;
use crate::sip::message::is_response;
use crate::sip::relay::{
    self, Action, Arrival, Outcome, RelayConfig, ResponseOutcome, ResponseRoute, ReturnPath,
    Sender, UnknownUserReply, UntrustedPolicy,
};
use crate::transport::stream::FlowId;
use crate::transport::udp::UdpTransport;

/// Settings for the inbound side.
#[derive(Clone, Debug, Default)]
pub struct InboundConfig {
    /// Where requests for registered contacts are relayed (UDP); `None`: they are not relayed
    /// (OPTIONS is still answered, unknown users still get 404).
    pub proxy: Option<SocketAddr>,
    /// `Server` header of our replies to trusted senders.
    pub user_agent: String,
    pub policy: InboundPolicy,
}

/// `[inbound]`: whom the relay trusts and what everyone else gets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InboundPolicy {
    /// Networks trusted besides the registrars our rows are bound to.
    pub trusted: Vec<IpPrefix>,
    /// Requests from untrusted senders for registered contacts: not relayed, or relayed without
    /// identity headers.
    pub untrusted: UntrustedPolicy,
    /// What an untrusted sender gets for a user we do not relay for: 404 or nothing.
    pub unknown_user: UnknownUserReply,
    /// Answers per second to untrusted senders, all together (the burst is as large).
    pub reply_rate: u32,
}

impl Default for InboundPolicy {
    fn default() -> Self {
        InboundPolicy {
            trusted: Vec::new(),
            untrusted: UntrustedPolicy::Drop,
            unknown_user: UnknownUserReply::NotFound,
            reply_rate: 20,
        }
    }
}

/// What became of every request and every relay-marked response that arrived: each one is
/// counted under exactly one outcome, so the outcomes add up to what was received.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct InboundStats {
    /// Messages that were not responses (nor CRLF keep-alives): requests and garbage.
    pub requests_received: u64,
    pub requests: RequestCounts,
    /// Responses whose top Via carried our relay marker.
    pub relay_responses_received: u64,
    pub relay_responses: ResponseCounts,
}

/// One counter per [`Outcome`].
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct RequestCounts {
    pub options_answered: u64,
    pub relayed_trusted: u64,
    pub relayed_stripped: u64,
    pub refused_untrusted: u64,
    pub unknown_user: u64,
    pub rejected: u64,
    pub no_proxy: u64,
    pub ack_absorbed: u64,
    pub malformed: u64,
    pub reply_larger_than_request: u64,
    pub replies_rate_limited: u64,
}

impl RequestCounts {
    fn slot(&mut self, outcome: Outcome) -> &mut u64 {
        match outcome {
            Outcome::OptionsAnswered => &mut self.options_answered,
            Outcome::RelayedTrusted => &mut self.relayed_trusted,
            Outcome::RelayedStripped => &mut self.relayed_stripped,
            Outcome::RefusedUntrusted => &mut self.refused_untrusted,
            Outcome::UnknownUser => &mut self.unknown_user,
            Outcome::Rejected => &mut self.rejected,
            Outcome::NoProxy => &mut self.no_proxy,
            Outcome::AckAbsorbed => &mut self.ack_absorbed,
            Outcome::Malformed => &mut self.malformed,
            Outcome::ReplyLargerThanRequest => &mut self.reply_larger_than_request,
            Outcome::RepliesRateLimited => &mut self.replies_rate_limited,
        }
    }

    pub fn get(&self, outcome: Outcome) -> u64 {
        match outcome {
            Outcome::OptionsAnswered => self.options_answered,
            Outcome::RelayedTrusted => self.relayed_trusted,
            Outcome::RelayedStripped => self.relayed_stripped,
            Outcome::RefusedUntrusted => self.refused_untrusted,
            Outcome::UnknownUser => self.unknown_user,
            Outcome::Rejected => self.rejected,
            Outcome::NoProxy => self.no_proxy,
            Outcome::AckAbsorbed => self.ack_absorbed,
            Outcome::Malformed => self.malformed,
            Outcome::ReplyLargerThanRequest => self.reply_larger_than_request,
            Outcome::RepliesRateLimited => self.replies_rate_limited,
        }
    }

    /// All outcomes together: every request received ends in one.
    pub fn total(&self) -> u64 {
        Outcome::ALL.into_iter().map(|o| self.get(o)).sum()
    }

    /// `(label, count)` for every outcome.
    pub fn labelled(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        Outcome::ALL.into_iter().map(|o| (o.label(), self.get(o)))
    }
}

/// One counter per [`ResponseOutcome`].
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct ResponseCounts {
    pub relayed: u64,
    pub bad_mac: u64,
    pub wrong_source: u64,
    pub no_proxy: u64,
    pub no_flow: u64,
    pub malformed: u64,
}

impl ResponseCounts {
    fn slot(&mut self, outcome: ResponseOutcome) -> &mut u64 {
        match outcome {
            ResponseOutcome::Relayed => &mut self.relayed,
            ResponseOutcome::BadMac => &mut self.bad_mac,
            ResponseOutcome::WrongSource => &mut self.wrong_source,
            ResponseOutcome::NoProxy => &mut self.no_proxy,
            ResponseOutcome::NoFlow => &mut self.no_flow,
            ResponseOutcome::Malformed => &mut self.malformed,
        }
    }

    pub fn get(&self, outcome: ResponseOutcome) -> u64 {
        match outcome {
            ResponseOutcome::Relayed => self.relayed,
            ResponseOutcome::BadMac => self.bad_mac,
            ResponseOutcome::WrongSource => self.wrong_source,
            ResponseOutcome::NoProxy => self.no_proxy,
            ResponseOutcome::NoFlow => self.no_flow,
            ResponseOutcome::Malformed => self.malformed,
        }
    }

    /// All outcomes together: every relay-marked response received ends in one.
    pub fn total(&self) -> u64 {
        ResponseOutcome::ALL.into_iter().map(|o| self.get(o)).sum()
    }

    /// `(label, count)` for every outcome.
    pub fn labelled(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        ResponseOutcome::ALL
            .into_iter()
            .map(|o| (o.label(), self.get(o)))
    }
}

/// Where a message came from, so that answers go back the same way.
#[derive(Clone, Copy, Debug)]
pub(super) enum Origin {
    /// A UDP socket: the main one (`None`) or a row's own.
    Udp(Option<SocketAddr>),
    /// A TCP or TLS connection.
    Flow(FlowId),
}

impl Origin {
    fn flow(self) -> Option<FlowId> {
        match self {
            Origin::Flow(flow) => Some(flow),
            Origin::Udp(_) => None,
        }
    }

    fn return_path(self, from: SocketAddr) -> ReturnPath {
        match self {
            Origin::Flow(flow) => ReturnPath::Flow(flow),
            Origin::Udp(local) => ReturnPath::Udp {
                local,
                source: from,
            },
        }
    }
}

impl Driver {
    /// Where every message received goes: requests and responses carrying the relay's marker
    /// are handled here, everything else is a response to one of our requests and goes to the
    /// engine. This is the seam between the relay and the engine.
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
        if !is_response(bytes) {
            self.handle_request(now, bytes, from, origin);
            return;
        }
        let route = relay::route_response(bytes, from, &self.relay_key, self.config.inbound.proxy);
        let outcome = match route {
            ResponseRoute::NotRelayed => {
                match origin {
                    Origin::Udp(local) => self.engine.handle_datagram(now, local, from, bytes),
                    Origin::Flow(flow) => self.engine.handle_stream_message(now, flow, from, bytes),
                }
                return;
            }
            ResponseRoute::Relay { bytes, path } => self.relay_response(bytes, path),
            ResponseRoute::Refused(outcome) => {
                debug!(%from, outcome = outcome.label(), "relay-marked response dropped");
                outcome
            }
        };
        let counts = &mut self.stats.inbound;
        counts.relay_responses_received += 1;
        *counts.relay_responses.slot(outcome) += 1;
    }

    /// The UDP socket bound at `local`, or the main one.
    pub(super) fn udp_socket(&self, local: Option<SocketAddr>) -> &Arc<UdpTransport> {
        local
            .and_then(|addr| self.extra_udp.get(&addr))
            .unwrap_or(&self.udp)
    }

    fn handle_request(&mut self, now: Instant, bytes: &[u8], from: SocketAddr, origin: Origin) {
        let sender = if self.trust.is_trusted(from, origin.flow()) {
            Sender::Trusted
        } else {
            Sender::Untrusted
        };
        let inbound = &self.config.inbound;
        let config = RelayConfig {
            via_transport: "UDP",
            via_sent_by: &self.config.via_sent_by,
            key: &self.relay_key,
            user_agent: &inbound.user_agent,
            relaying: inbound.proxy.is_some(),
            untrusted: inbound.policy.untrusted,
            unknown_user: inbound.policy.unknown_user,
        };
        let arrival = Arrival {
            from,
            path: origin.return_path(from),
            sender,
        };
        let table = self.engine.table();
        let decision = relay::handle_request(bytes, arrival, &config, |addressee| {
            let registration = table.get(addressee.key())?;
            let record = registration.record();
            Some(format!("sip:{}@{}", record.l_username(), record.l_domain()))
        });
        let outcome = match decision.action {
            Action::Reply(reply) => {
                if sender == Sender::Untrusted && !self.reply_budget.try_take(now) {
                    Outcome::RepliesRateLimited
                } else {
                    self.send_back(origin, from, reply);
                    decision.outcome
                }
            }
            Action::Forward(forward) => match self.config.inbound.proxy {
                Some(proxy) => {
                    if self.udp.try_send(&forward, proxy).is_err() {
                        self.stats.send_errors += 1;
                    }
                    decision.outcome
                }
                // handle_request relays only when told a proxy is configured.
                None => Outcome::NoProxy,
            },
            Action::Nothing => decision.outcome,
        };
        if outcome == Outcome::NoProxy {
            debug!(%from, "a request for a registered contact arrived, but no inbound proxy is configured");
        } else {
            trace!(%from, outcome = outcome.label(), "inbound request");
        }
        let counts = &mut self.stats.inbound;
        counts.requests_received += 1;
        *counts.requests.slot(outcome) += 1;
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

    /// A verified response from the proxy to a request we relayed: back exactly the way the
    /// request came, as recorded (and MAC'd) in our branch.
    fn relay_response(&mut self, bytes: Vec<u8>, path: ReturnPath) -> ResponseOutcome {
        match path {
            ReturnPath::Flow(flow) => {
                // The request came on this connection (the MAC says so): an inbound one, or
                // one of ours to a registrar that sent a call down it (RFC 5626). Either way it
                // is the only way back; a closed connection is not replaced by another.
                if self.streams.send_on(flow, Arc::from(bytes)) {
                    ResponseOutcome::Relayed
                } else {
                    debug!(flow, "cannot relay a response: its connection is closed");
                    ResponseOutcome::NoFlow
                }
            }
            ReturnPath::Udp { local, source } => {
                let socket = match local {
                    None => &self.udp,
                    Some(addr) => match self.extra_udp.get(&addr) {
                        Some(socket) => socket,
                        None => return ResponseOutcome::NoFlow,
                    },
                };
                if socket.try_send(&bytes, source).is_err() {
                    self.stats.send_errors += 1;
                    ResponseOutcome::NoFlow
                } else {
                    ResponseOutcome::Relayed
                }
            }
        }
    }
}

//! The relay as one value that the I/O layer drives, in the manner of quinn-proto: it is given
//! the time, the bytes and where they came from, and answers with what to send where. It owns
//! the key, whom it trusts, the budget of answers to strangers and the counters; it never
//! touches a socket, so every decision is tested without one.
//!
//! What it cannot know is whether a send worked: a relayed response whose way back turns out
//! to be gone (a closed connection, a socket that is not ours) is reported back with
//! [`Relay::relay_failed`], so that it is counted as `no_flow` rather than `relayed`.

use std::net::SocketAddr;
use std::time::Instant;

use tracing::{debug, trace};

use super::branch::RelayKey;
use super::flow_token::{Origin, ReturnPath};
use super::outcome::{InboundStats, Outcome, ResponseOutcome};
use super::policy::{InboundConfig, Sender};
use super::reply_budget::ReplyBudget;
use super::request::{Action, Addressee, Arrival, RelayConfig, handle_request};
use super::response::{ResponseRoute, route_response};
use super::trust::Trust;
use crate::sip::message::is_response;
use crate::transport::stream::FlowId;

/// Bytes to send, and which way.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transmit {
    /// A datagram to `to` from the UDP socket bound at `local` (`None`: the main socket).
    Udp {
        local: Option<SocketAddr>,
        to: SocketAddr,
        bytes: Vec<u8>,
    },
    /// Bytes for a TCP or TLS connection.
    Flow { flow: FlowId, bytes: Vec<u8> },
}

impl Transmit {
    fn along(path: ReturnPath, bytes: Vec<u8>) -> Transmit {
        match path {
            ReturnPath::Flow(flow) => Transmit::Flow { flow, bytes },
            ReturnPath::Udp { local, source } => Transmit::Udp {
                local,
                to: source,
                bytes,
            },
        }
    }

    /// The bytes, wherever they go.
    pub fn bytes(&self) -> &[u8] {
        match self {
            Transmit::Udp { bytes, .. } | Transmit::Flow { bytes, .. } => bytes,
        }
    }
}

/// What the relay made of one received message. Everything but [`Handled::NotOurs`] is
/// counted in [`Relay::stats`] already.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Handled {
    /// An answer of ours to a request, or a request forwarded to the proxy: send it.
    Send(Transmit),
    /// A response from the proxy, back the way its request came: send it exactly there (no
    /// other socket or connection will do), and call [`Relay::relay_failed`] if that way is gone.
    Relay(Transmit),
    /// Nothing to send.
    Done,
    /// A response without our relay marker: an answer to one of our own requests, for the
    /// caller to match with its transactions.
    NotOurs,
}

/// The stateless proxy of this module's parent, with everything it keeps between messages.
#[derive(Debug)]
pub struct Relay {
    key: RelayKey,
    config: InboundConfig,
    /// Our Via sent-by towards the proxy.
    via_sent_by: String,
    trust: Trust,
    budget: ReplyBudget,
    stats: InboundStats,
}

impl Relay {
    pub fn new(config: InboundConfig, via_sent_by: String, key: RelayKey) -> Relay {
        Relay {
            trust: Trust::new(&config.policy.trusted),
            budget: ReplyBudget::new(config.policy.reply_rate),
            key,
            config,
            via_sent_by,
            stats: InboundStats::default(),
        }
    }

    /// Whom the relay trusts; the caller tells it as bindings move and connections come and go.
    pub fn trust(&self) -> &Trust {
        &self.trust
    }

    pub fn trust_mut(&mut self) -> &mut Trust {
        &mut self.trust
    }

    /// What became of every message so far.
    pub fn stats(&self) -> &InboundStats {
        &self.stats
    }

    /// One message received at `now` from `from`, on `origin`. `lookup(addressee)` gives the
    /// local URI (`sip:l_username@l_domain`) of the registration a request is for, or `None`.
    /// CR/LF keep-alives and padding are neither answered nor counted.
    pub fn handle_message(
        &mut self,
        now: Instant,
        bytes: &[u8],
        from: SocketAddr,
        origin: Origin,
        lookup: impl Fn(&Addressee) -> Option<String>,
    ) -> Handled {
        if bytes.iter().all(|b| b.is_ascii_whitespace()) {
            // RFC 5626 keep-alive (CRLF) or padding.
            return Handled::Done;
        }
        if is_response(bytes) {
            self.handle_response(bytes, from)
        } else {
            self.handle_request(now, bytes, from, origin, lookup)
        }
    }

    /// A relayed response could not be sent back (its connection closed, its socket is not
    /// ours, or sending failed): counted under `no_flow` instead of `relayed`.
    pub fn relay_failed(&mut self) {
        let counts = &mut self.stats.relay_responses;
        counts.relayed = counts.relayed.saturating_sub(1);
        counts.no_flow += 1;
    }

    fn handle_request(
        &mut self,
        now: Instant,
        bytes: &[u8],
        from: SocketAddr,
        origin: Origin,
        lookup: impl Fn(&Addressee) -> Option<String>,
    ) -> Handled {
        let sender = if self.trust.is_trusted(from, origin.flow()) {
            Sender::Trusted
        } else {
            Sender::Untrusted
        };
        let config = RelayConfig {
            via_transport: "UDP",
            via_sent_by: &self.via_sent_by,
            key: &self.key,
            user_agent: &self.config.user_agent,
            relaying: self.config.proxy.is_some(),
            untrusted: self.config.policy.untrusted,
            unknown_user: self.config.policy.unknown_user,
        };
        let arrival = Arrival {
            from,
            path: origin.return_path(from),
            sender,
        };
        let decision = handle_request(bytes, arrival, &config, lookup);
        let (outcome, handled) = match decision.action {
            Action::Reply(reply) => {
                if sender == Sender::Untrusted && !self.budget.try_take(now) {
                    (Outcome::RepliesRateLimited, Handled::Done)
                } else {
                    let back = Transmit::along(origin.return_path(from), reply);
                    (decision.outcome, Handled::Send(back))
                }
            }
            Action::Forward(forward) => match self.config.proxy {
                Some(proxy) => (
                    decision.outcome,
                    Handled::Send(Transmit::Udp {
                        local: None,
                        to: proxy,
                        bytes: forward,
                    }),
                ),
                // handle_request relays only when told a proxy is configured.
                None => (Outcome::NoProxy, Handled::Done),
            },
            Action::Nothing => (decision.outcome, Handled::Done),
        };
        if outcome == Outcome::NoProxy {
            debug!(%from, "a request for a registered contact arrived, but no inbound proxy is configured");
        } else {
            trace!(%from, outcome = outcome.label(), "inbound request");
        }
        self.stats.requests_received += 1;
        *self.stats.requests.slot(outcome) += 1;
        handled
    }

    fn handle_response(&mut self, bytes: &[u8], from: SocketAddr) -> Handled {
        let (outcome, handled) = match route_response(bytes, from, &self.key, self.config.proxy) {
            ResponseRoute::NotRelayed => return Handled::NotOurs,
            ResponseRoute::Relay { bytes, path } => (
                ResponseOutcome::Relayed,
                Handled::Relay(Transmit::along(path, bytes)),
            ),
            ResponseRoute::Refused(outcome) => {
                debug!(%from, outcome = outcome.label(), "relay-marked response dropped");
                (outcome, Handled::Done)
            }
        };
        self.stats.relay_responses_received += 1;
        *self.stats.relay_responses.slot(outcome) += 1;
        handled
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::relay::policy::InboundPolicy;

    const GATEWAY: &str = "192.0.2.10:5080";

    fn proxy() -> SocketAddr {
        "192.0.2.50:5060".parse().unwrap()
    }

    fn registrar() -> SocketAddr {
        "203.0.113.5:5060".parse().unwrap()
    }

    fn stranger() -> SocketAddr {
        "198.51.100.66:5060".parse().unwrap()
    }

    fn relay(proxy: Option<SocketAddr>, reply_rate: u32) -> Relay {
        let config = InboundConfig {
            proxy,
            user_agent: "uacreg".into(),
            policy: InboundPolicy {
                reply_rate,
                ..InboundPolicy::default()
            },
        };
        let mut relay = Relay::new(
            config,
            "192.0.2.10:5062".into(),
            RelayKey::from_secret(&[3; 32]),
        );
        relay
            .trust_mut()
            .registrar_moved(None, Some(registrar().ip()));
        relay
    }

    fn request(method: &str, user: &str, branch: &str) -> Vec<u8> {
        format!(
            "{method} sip:{user}@{GATEWAY} SIP/2.0\r\n\
Via: SIP/2.0/UDP 203.0.113.5:5060;branch=z9hG4bK{branch}\r\n\
Max-Forwards: 70\r\nTo: <sip:{user}@{GATEWAY}>\r\nFrom: <sip:bob@provider.example>;tag=1\r\n\
Call-ID: {branch}@provider.example\r\nCSeq: 1 {method}\r\n\
User-Agent: a caller with a long name, so that our answers are smaller than its requests\r\n\
Content-Length: 0\r\n\r\n"
        )
        .into_bytes()
    }

    fn lookup(addressee: &Addressee) -> Option<String> {
        (addressee.key() == "uuid1").then(|| "sip:alice@pbx.example".to_string())
    }

    /// The proxy's answer to a request we forwarded: our Via and the sender's, as they came.
    fn answer(forwarded: &[u8]) -> Vec<u8> {
        let text = String::from_utf8_lossy(forwarded);
        let vias: Vec<&str> = text.lines().filter(|l| l.starts_with("Via:")).collect();
        format!(
            "SIP/2.0 180 Ringing\r\n{}\r\nTo: <sip:alice@pbx.example>;tag=p\r\n\
From: <sip:bob@provider.example>;tag=1\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n",
            vias.join("\r\n")
        )
        .into_bytes()
    }

    #[test]
    fn a_call_goes_to_the_proxy_and_its_answer_back_the_way_it_came() {
        let now = Instant::now();
        let mut relay = relay(Some(proxy()), 20);
        let flow_origin = Origin::Flow(9);
        relay.trust_mut().flow_accepted(9);
        let Handled::Send(Transmit::Udp { local, to, bytes }) = relay.handle_message(
            now,
            &request("INVITE", "uuid1", "a1"),
            registrar(),
            flow_origin,
            lookup,
        ) else {
            panic!("not forwarded");
        };
        assert_eq!((local, to), (None, proxy()));
        assert!(bytes.starts_with(b"INVITE sip:alice@pbx.example SIP/2.0\r\n"));

        let back = relay.handle_message(now, &answer(&bytes), proxy(), Origin::Udp(None), lookup);
        let Handled::Relay(Transmit::Flow { flow, bytes }) = back else {
            panic!("not relayed back: {back:?}");
        };
        assert_eq!(flow, 9);
        assert!(bytes.starts_with(b"SIP/2.0 180 Ringing\r\n"));
        let stats = relay.stats();
        assert_eq!(stats.requests.relayed_trusted, 1);
        assert_eq!(stats.relay_responses.relayed, 1);

        // The connection closed before the answer could go: counted as such.
        relay.relay_failed();
        assert_eq!(relay.stats().relay_responses.relayed, 0);
        assert_eq!(relay.stats().relay_responses.no_flow, 1);
        assert_eq!(relay.stats().relay_responses.total(), 1);
    }

    #[test]
    fn answers_go_back_on_the_socket_the_request_came_on() {
        let now = Instant::now();
        let mut relay = relay(Some(proxy()), 20);
        let local: SocketAddr = "192.0.2.10:5090".parse().unwrap();
        let handled = relay.handle_message(
            now,
            &request("OPTIONS", "anyone", "o1"),
            registrar(),
            Origin::Udp(Some(local)),
            lookup,
        );
        let Handled::Send(Transmit::Udp {
            local: from_socket,
            to,
            bytes,
        }) = handled
        else {
            panic!("not answered: {handled:?}");
        };
        assert_eq!((from_socket, to), (Some(local), registrar()));
        assert!(bytes.starts_with(b"SIP/2.0 200 OK\r\n"));
        assert_eq!(relay.stats().requests.options_answered, 1);
    }

    #[test]
    fn strangers_answers_are_rate_limited_and_everything_is_counted_once() {
        let now = Instant::now();
        let mut relay = relay(Some(proxy()), 2);
        let mut sent = 0;
        for i in 0..5 {
            let handled = relay.handle_message(
                now,
                &request("INVITE", "nobody", &format!("s{i}")),
                stranger(),
                Origin::Udp(None),
                lookup,
            );
            if let Handled::Send(transmit) = handled {
                assert!(transmit.bytes().starts_with(b"SIP/2.0 404 Not Found\r\n"));
                sent += 1;
            }
        }
        assert_eq!(sent, 2, "the burst is the rate");
        let later = now + Duration::from_secs(1);
        assert!(matches!(
            relay.handle_message(
                later,
                &request("INVITE", "nobody", "s9"),
                stranger(),
                Origin::Udp(None),
                lookup
            ),
            Handled::Send(_)
        ));
        let stats = relay.stats();
        assert_eq!(stats.requests.unknown_user, 3);
        assert_eq!(stats.requests.replies_rate_limited, 3);
        assert_eq!(stats.requests.total(), stats.requests_received);
        // A trusted sender is never limited.
        for i in 0..5 {
            assert!(matches!(
                relay.handle_message(
                    now,
                    &request("INVITE", "nobody", &format!("t{i}")),
                    registrar(),
                    Origin::Udp(None),
                    lookup
                ),
                Handled::Send(_)
            ));
        }
    }

    #[test]
    fn keepalives_are_not_counted_and_other_responses_are_not_ours() {
        let now = Instant::now();
        let mut relay = relay(None, 20);
        let handled = relay.handle_message(now, b"\r\n\r\n", registrar(), Origin::Flow(1), lookup);
        assert_eq!(handled, Handled::Done);
        let register_answer = b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bK1\r\nCall-ID: c\r\nCSeq: 1 REGISTER\r\n\r\n";
        let handled =
            relay.handle_message(now, register_answer, registrar(), Origin::Udp(None), lookup);
        assert_eq!(handled, Handled::NotOurs);
        assert_eq!(relay.stats().requests_received, 0);
        assert_eq!(relay.stats().relay_responses_received, 0);
        // Without a proxy a call is not relayed, and an answer claiming to be one is refused.
        let handled = relay.handle_message(
            now,
            &request("INVITE", "uuid1", "n1"),
            registrar(),
            Origin::Udp(None),
            lookup,
        );
        assert_eq!(handled, Handled::Done);
        assert_eq!(relay.stats().requests.no_proxy, 1);
        let forged = b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bKrly-0.um.0\r\nVia: SIP/2.0/UDP 203.0.113.5\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n\r\n";
        let handled = relay.handle_message(now, forged, registrar(), Origin::Udp(None), lookup);
        assert_eq!(handled, Handled::Done);
        assert_eq!(relay.stats().relay_responses.no_proxy, 1);
    }
}

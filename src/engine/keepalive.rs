//! Keep-alives: finding dead paths between refreshes.
//!
//! Connections that carry bindings get a CRLF ping every interval and are closed when the pong
//! does not come within [`PONG_TIMEOUT`] (RFC 5626 §4.4.1); closing them re-registers their
//! bindings. UDP paths get an OPTIONS probe (a fresh dialog-less request with random Call-ID,
//! From tag and branch, so an answer cannot be forged from an earlier one); one unanswered
//! within the transaction timeout re-registers every binding on the path.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use rand::rngs::StdRng;
use tracing::warn;

use super::transaction::{Mismatch, Path, RequestIds, Route};
use super::{Engine, Event, TransmitRoute};
use crate::registration::RegKey;
use crate::sip::message::Response;
use crate::transport::stream::FlowId;

/// A CRLF ping not answered within this long means the connection is dead (RFC 5626 §4.4.1).
pub(crate) const PONG_TIMEOUT: Duration = Duration::from_secs(10);
/// Keep-alive OPTIONS branches start with this, so their answers are told apart (the
/// transactions' branches continue the cookie with `t`, the relay's with `rly-`).
pub(crate) const KEEPALIVE_BRANCH: &str = "z9hG4bKka";
/// How often the probes are looked at.
const TICK: Duration = Duration::from_secs(1);

/// Keep-alive bookkeeping per flow (connection) and per UDP path.
pub(crate) struct KeepAlive {
    interval: Option<Duration>,
    next_tick: Option<Instant>,
    flows: HashMap<FlowId, FlowProbe>,
    udp: HashMap<Route, UdpProbe>,
    /// The path of each probe waiting for its answer, by the probe's branch.
    waiting: HashMap<String, Route>,
    /// Where each probe's Call-ID, From tag and branch come from.
    rng: StdRng,
}

struct FlowProbe {
    next_ping: Instant,
    waiting_since: Option<Instant>,
}

struct UdpProbe {
    next_probe: Instant,
    waiting: Option<(RequestIds, Instant)>,
}

impl KeepAlive {
    pub(crate) fn new(interval: Option<Duration>, rng: StdRng) -> KeepAlive {
        KeepAlive {
            interval,
            next_tick: None,
            flows: HashMap::new(),
            udp: HashMap::new(),
            waiting: HashMap::new(),
            rng,
        }
    }

    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.next_tick
    }

    pub(crate) fn watch_flow(&mut self, now: Instant, flow: FlowId) {
        if let Some(interval) = self.interval {
            self.flows.entry(flow).or_insert(FlowProbe {
                next_ping: now + interval,
                waiting_since: None,
            });
            self.next_tick.get_or_insert(now + TICK);
        }
    }

    pub(crate) fn watch_udp(&mut self, now: Instant, route: Route) {
        if let Some(interval) = self.interval {
            self.udp.entry(route).or_insert(UdpProbe {
                next_probe: now + interval,
                waiting: None,
            });
            self.next_tick.get_or_insert(now + TICK);
        }
    }

    pub(crate) fn pong(&mut self, flow: FlowId) {
        if let Some(probe) = self.flows.get_mut(&flow) {
            probe.waiting_since = None;
        }
    }

    pub(crate) fn forget_flow(&mut self, flow: FlowId) {
        self.flows.remove(&flow);
    }
}

impl Engine {
    pub(crate) fn handle_keepalives(&mut self, now: Instant) {
        let (Some(interval), Some(tick)) = (self.keepalive.interval, self.keepalive.next_tick)
        else {
            return;
        };
        if now < tick {
            return;
        }
        self.keepalive.next_tick = Some(now + TICK);
        // Connections: CRLF ping, close when the pong does not come.
        let mut dead = Vec::new();
        let mut pings = Vec::new();
        for (flow, probe) in self.keepalive.flows.iter_mut() {
            if !self.bindings.has_members(*flow) {
                continue;
            }
            match probe.waiting_since {
                Some(since) if now.duration_since(since) >= PONG_TIMEOUT => dead.push(*flow),
                Some(_) => {}
                None if now >= probe.next_ping => {
                    probe.waiting_since = Some(now);
                    probe.next_ping = now + interval;
                    pings.push(*flow);
                }
                None => {}
            }
        }
        for flow in pings {
            self.stats.keepalives_sent += 1;
            self.transmit(TransmitRoute::Flow(flow), Arc::from(&b"\r\n\r\n"[..]));
        }
        for flow in dead {
            self.stats.keepalive_failures += 1;
            warn!(flow, "keep-alive pong missing; closing the connection");
            // The I/O side reports Closed, which registers its bindings again.
            self.events.push_back(Event::CloseFlow(flow));
            self.keepalive.flows.remove(&flow);
        }
        // UDP paths: OPTIONS, re-register everything on the path when it goes unanswered.
        let timeout = self.config.timers.timeout().min(interval);
        let mut probes = Vec::new();
        let mut failed = Vec::new();
        let KeepAlive { udp, waiting, .. } = &mut self.keepalive;
        for (route, probe) in udp.iter_mut() {
            match &probe.waiting {
                Some((ids, since)) if now.duration_since(*since) >= timeout => {
                    waiting.remove(&ids.branch);
                    probe.waiting = None;
                    probe.next_probe = now + interval;
                    failed.push(*route);
                }
                Some(_) => {}
                None if now >= probe.next_probe => probes.push(*route),
                None => {}
            }
        }
        for route in failed {
            self.stats.keepalive_failures += 1;
            let keys: Vec<RegKey> = self
                .bindings
                .on_udp_target(route.remote)
                .filter(|key| {
                    self.table.record_of(*key).is_some_and(|r| {
                        self.udp_local(r.local_socket().map(|s| s.addr)) == route.local
                    })
                })
                .collect();
            warn!(
                remote = %route.remote,
                registrations = keys.len(),
                "keep-alive OPTIONS unanswered; registering again"
            );
            self.keepalive.udp.remove(&route);
            for key in keys {
                self.rebind_later(now, key);
            }
        }
        for route in probes {
            let ids = self.send_keepalive_options(route);
            if let Some(probe) = self.keepalive.udp.get_mut(&route) {
                self.keepalive.waiting.insert(ids.branch.clone(), route);
                probe.waiting = Some((ids, now));
                probe.next_probe = now + interval;
            }
        }
    }

    /// Sends one OPTIONS probe along `route`; returns what its answer must carry back.
    fn send_keepalive_options(&mut self, route: Route) -> RequestIds {
        let rng = &mut self.keepalive.rng;
        let ids = RequestIds {
            branch: format!("{KEEPALIVE_BRANCH}{:032x}", rng.random::<u128>()),
            call_id: format!("{:032x}", rng.random::<u128>()),
            cseq: 1,
            method: "OPTIONS",
        };
        let tag: u64 = rng.random();
        let sent_by = match route.local {
            Some(addr) if !addr.ip().is_unspecified() => addr.to_string(),
            _ => self.config.via_sent_by.clone(),
        };
        let request = format!(
            "OPTIONS sip:{remote} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {sent_by};rport;branch={branch}\r\n\
             Max-Forwards: 70\r\n\
             To: <sip:{remote}>\r\n\
             From: <sip:keepalive@{sent_by}>;tag={tag:016x}\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: {cseq} {method}\r\n\
             Content-Length: 0\r\n\r\n",
            remote = route.remote,
            branch = ids.branch,
            call_id = ids.call_id,
            cseq = ids.cseq,
            method = ids.method,
        );
        self.transmit(TransmitRoute::Udp(route), Arc::from(request.into_bytes()));
        self.stats.keepalives_sent += 1;
        ids
    }

    /// A response with a keep-alive branch: the path is alive when it answers a waiting probe
    /// in every respect, like any response to our requests.
    pub(crate) fn keepalive_answered(
        &mut self,
        response: &Response,
        arrival: Path,
        from: SocketAddr,
    ) {
        let branch = response.branch.as_deref().unwrap_or("");
        let Some(route) = self.keepalive.waiting.get(branch).copied() else {
            self.count_unmatched(Mismatch::Branch, response, from);
            return;
        };
        let verdict = match self
            .keepalive
            .udp
            .get(&route)
            .and_then(|p| p.waiting.as_ref())
        {
            Some((ids, _)) => ids.check(&Path::Udp(route), response, &arrival),
            None => Err(Mismatch::Branch),
        };
        match verdict {
            Ok(()) => {
                self.keepalive.waiting.remove(branch);
                if let Some(probe) = self.keepalive.udp.get_mut(&route) {
                    probe.waiting = None;
                }
            }
            Err(mismatch) => self.count_unmatched(mismatch, response, from),
        }
    }
}

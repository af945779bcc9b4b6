//! Sending REGISTERs: from a queued request to a target on the wire, and what happens when the
//! target does not answer.
//!
//! RFC 3263 gives each destination an ordered list of targets (transport + address). A request
//! goes to the target its registration last got an answer from, so a binding stays where it was
//! accepted; a timeout, a 503 or a broken connection moves the same request (new branch, same
//! CSeq, RFC 3263 §4.3) to the next target before the core hears of any failure. Only when every
//! target failed does the registration's retry policy take over.
//!
//! Bindings made over TCP or TLS are tied to their connection: when it drops, the registrar can
//! no longer reach us through it, so those registrations register again at once (later and later
//! if connections keep dropping). Keep-alives (CRLF on connections, OPTIONS over UDP) find dead
//! paths between refreshes.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use rand::rngs::StdRng;
use tracing::{debug, info, trace, warn};

use super::inbound::Origin;
use super::{Driver, Event};
use crate::registration::record::Record;
use crate::registration::{Destination, RegKey, Transport};
use crate::sip::message::Response;
use crate::sip::register::{Hop, RegisterRequest};
use crate::transaction::{Matched, Mismatch, Owner, Path, RequestIds, Route, TimerEvent};
use crate::transport::resolve::{Query, Resolved, Target, literal_target};
use crate::transport::stream::{FlowId, FlowKey, StreamEvent};

/// A REGISTER waiting for the pacer (or for its destination to be resolved).
pub(super) struct Queued {
    pub key: RegKey,
    pub destination: Destination,
    pub request: RegisterRequest,
}

/// A request in flight and where else it may go.
pub(super) struct Attempt {
    queued: Queued,
    targets: Arc<[Target]>,
    index: usize,
    /// Targets tried so far for this request.
    tried: usize,
    branch: String,
    flow: Option<FlowId>,
}

/// The target that last answered a registration, and the connection its binding lives on.
#[derive(Clone, Copy, Debug)]
pub(super) struct Bound {
    target: Target,
    flow: Option<FlowId>,
}

/// How long resolution failures are remembered before asking DNS again.
const NEGATIVE_TTL: Duration = Duration::from_secs(30);
/// A CRLF ping not answered within this long means the connection is dead (RFC 5626 §4.4.1).
const PONG_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections that drop again within this window back their registrations off.
const DROP_WINDOW: Duration = Duration::from_secs(120);
const MAX_REBIND_DELAY: Duration = Duration::from_secs(300);
/// Keep-alive OPTIONS branches start with this, so their answers are told apart (the
/// transactions' branches continue the cookie with `t`, the relay's with `rly-`).
const KEEPALIVE_BRANCH: &str = "z9hG4bKka";

enum Lookup {
    Ready(Arc<[Target]>),
    Failed(String),
    Pending,
}

/// Keep-alive bookkeeping per flow (connection) and per UDP path.
pub(super) struct KeepAlive {
    interval: Option<Duration>,
    next_tick: Option<Instant>,
    flows: HashMap<FlowId, FlowProbe>,
    udp: HashMap<Route, UdpProbe>,
    /// The path of each probe waiting for its answer, by the probe's branch.
    waiting: HashMap<String, Route>,
    /// Where each probe's Call-ID, From tag and branch come from: fresh random values per
    /// probe, so an answer cannot be forged from an earlier one.
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
    pub(super) fn new(interval: Option<Duration>, rng: StdRng) -> KeepAlive {
        KeepAlive {
            interval,
            next_tick: None,
            flows: HashMap::new(),
            udp: HashMap::new(),
            waiting: HashMap::new(),
            rng,
        }
    }

    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.next_tick
    }

    fn watch_flow(&mut self, now: Instant, flow: FlowId) {
        if let Some(interval) = self.interval {
            self.flows.entry(flow).or_insert(FlowProbe {
                next_ping: now + interval,
                waiting_since: None,
            });
            self.next_tick.get_or_insert(now + Duration::from_secs(1));
        }
    }

    fn watch_udp(&mut self, now: Instant, route: Route) {
        if let Some(interval) = self.interval {
            self.udp.entry(route).or_insert(UdpProbe {
                next_probe: now + interval,
                waiting: None,
            });
            self.next_tick.get_or_insert(now + Duration::from_secs(1));
        }
    }
}

impl Driver {
    /// Sends queued requests as far as pacing allows.
    pub(super) fn flush(&mut self, now: Instant) {
        while let Some(front) = self.queue.front() {
            if !self.table.is_current(front.key, front.request.cseq) {
                self.queue.pop_front();
                continue;
            }
            if !self.pacer.try_admit(now, self.transactions.pending()) {
                break;
            }
            let Some(queued) = self.queue.pop_front() else {
                break;
            };
            self.send_now(now, queued);
        }
    }

    fn lookup(&mut self, now: Instant, destination: &Destination) -> Lookup {
        let query = Query {
            host: &destination.host,
            port: destination.port,
            transport: destination.transport,
            secure: destination.secure,
        };
        if let Some(target) = literal_target(&query) {
            // No DNS and no task for IP literals: the common case of 100,000 trunk rows.
            return Lookup::Ready(Arc::from(vec![target]));
        }
        match self.resolved.get(destination) {
            Some((result, until)) if now < *until => match result {
                Ok(targets) => Lookup::Ready(targets.clone()),
                Err(why) => Lookup::Failed(why.clone()),
            },
            _ => Lookup::Pending,
        }
    }

    fn send_now(&mut self, now: Instant, queued: Queued) {
        let targets = match self.lookup(now, &queued.destination) {
            Lookup::Ready(targets) => targets,
            Lookup::Failed(why) => {
                self.table
                    .handle_transaction_failure(now, queued.key, queued.request.cseq, &why);
                self.collect_actions();
                return;
            }
            Lookup::Pending => {
                self.start_resolving(queued);
                return;
            }
        };
        let index = self
            .bound
            .get(&queued.key)
            .and_then(|b| targets.iter().position(|t| *t == b.target))
            .unwrap_or(0);
        self.send_attempt(
            now,
            Attempt {
                queued,
                targets,
                index,
                tried: 1,
                branch: String::new(),
                flow: None,
            },
        );
    }

    /// Encodes and sends the attempt's request to its current target and starts its
    /// transaction.
    fn send_attempt(&mut self, now: Instant, mut attempt: Attempt) {
        let target = attempt.targets[attempt.index];
        let key = attempt.queued.key;
        let Some(record) = self.table.record_of(key) else {
            return;
        };
        let local = record.local_socket().map(|s| s.addr);
        let sent_by = match local {
            Some(addr) if !addr.ip().is_unspecified() => addr.to_string(),
            _ => self.config.via_sent_by.clone(),
        };
        let contact_uri_params = match target.transport {
            Transport::Udp => "",
            Transport::Tcp => ";transport=tcp",
            Transport::Tls => ";transport=tls",
        };
        let instance = if self.config.outbound {
            outbound_contact_params(record)
        } else {
            String::new()
        };
        let server_name = attempt.queued.destination.host.to_string();
        let branch = self.transactions.next_branch();
        self.encode_buf.clear();
        attempt.queued.request.encode(
            &Hop {
                transport: target.transport.via_token(),
                sent_by: &sent_by,
                branch: &branch,
                contact_uri_params,
                contact_header_params: &instance,
                supported: if self.config.outbound {
                    "path, outbound"
                } else {
                    ""
                },
            },
            &mut self.encode_buf,
        );
        let bytes: Arc<[u8]> = Arc::from(&self.encode_buf[..]);
        let path = if target.transport.is_stream() {
            let flow_key = FlowKey {
                transport: target.transport,
                peer: target.addr,
                local_ip: local.map(|a| a.ip()),
                server_name,
            };
            if self.streams.existing(&flow_key).is_none() {
                self.stats.connections_opened += 1;
            }
            let flow = self.streams.send(&flow_key, bytes.clone());
            attempt.flow = Some(flow);
            Path::Flow(flow)
        } else {
            if let Err(err) = self.udp_socket(local).try_send(&bytes, target.addr) {
                // Left to the transaction: timer E retransmits, timer F reports the failure.
                debug!(target = %target.addr, "send failed: {err}");
                self.stats.send_errors += 1;
            }
            Path::Udp(Route {
                local: self.udp_local(local),
                remote: target.addr,
            })
        };
        self.stats.registers_sent += 1;
        let ids = RequestIds {
            branch: branch.clone(),
            call_id: attempt.queued.request.call_id.clone(),
            cseq: attempt.queued.request.cseq,
            method: "REGISTER",
        };
        self.transactions.start(
            now,
            ids,
            Owner {
                key,
                cseq: attempt.queued.request.cseq,
            },
            path,
            bytes,
        );
        self.table
            .request_sent(now, key, attempt.queued.request.cseq);
        attempt.branch = branch;
        self.attempts.insert(key, attempt);
    }

    fn start_resolving(&mut self, queued: Queued) {
        let destination = queued.destination.clone();
        if let Some(waiting) = self.resolving.get_mut(&destination) {
            waiting.push(queued);
            return;
        }
        self.resolving.insert(destination.clone(), vec![queued]);
        let Some(resolver) = self.resolver.clone() else {
            let _ = self.events_tx.send(Event::Resolved {
                destination,
                result: Err("DNS: no resolver is configured".into()),
            });
            return;
        };
        let events = self.events_tx.clone();
        tokio::spawn(async move {
            let query = Query {
                host: &destination.host,
                port: destination.port,
                transport: destination.transport,
                secure: destination.secure,
            };
            let result = resolver
                .resolve(&query)
                .await
                .map_err(|err| err.to_string());
            let _ = events.send(Event::Resolved {
                destination,
                result,
            });
        });
    }

    pub(super) fn handle_resolved(
        &mut self,
        now: Instant,
        destination: Destination,
        result: Result<Resolved, String>,
    ) {
        let entry = match result {
            Ok(resolved) if !resolved.targets.is_empty() => {
                debug!(%destination, targets = ?resolved.targets, "resolved");
                (Ok(Arc::from(resolved.targets)), resolved.valid_until)
            }
            Ok(_) => (
                Err(format!("DNS: no SIP server found for {}", destination.host)),
                now + NEGATIVE_TTL,
            ),
            Err(why) => {
                warn!("{why}");
                self.stats.resolve_failures += 1;
                (Err(why), now + NEGATIVE_TTL)
            }
        };
        self.resolved.insert(destination.clone(), entry);
        for queued in self.resolving.remove(&destination).unwrap_or_default() {
            // Back to the front of the queue: they were admitted by the pacer already once,
            // but sending them again through it keeps the accounting simple.
            self.queue.push_front(queued);
        }
    }

    pub(super) fn handle_transaction_timers(&mut self, now: Instant) {
        let mut events = Vec::new();
        self.transactions.handle_timeout(now, &mut events);
        for event in events {
            match event {
                TimerEvent::Retransmit { destination, bytes } => {
                    self.pacer.on_late(now);
                    trace!(destination = %destination.remote, "retransmitting");
                    let socket = self.udp_socket(destination.local);
                    if socket.try_send(&bytes, destination.remote).is_err() {
                        self.stats.send_errors += 1;
                    }
                }
                TimerEvent::TimedOut(owner) => {
                    self.pacer.on_late(now);
                    self.fail_over_or_report(
                        now,
                        owner,
                        "no response (transaction timeout)".to_string(),
                    );
                }
            }
        }
    }

    /// The current target of `owner`'s request failed: try the next one, or tell the core.
    fn fail_over_or_report(&mut self, now: Instant, owner: Owner, why: String) {
        if !self.table.is_current(owner.key, owner.cseq) {
            // The registration stopped waiting for this request (its guard ran out, or it was
            // answered by another way): nothing to fail over or report.
            if self
                .attempts
                .get(&owner.key)
                .is_some_and(|a| a.queued.request.cseq == owner.cseq)
            {
                self.attempts.remove(&owner.key);
            }
            return;
        }
        if let Some(mut attempt) = self.attempts.remove(&owner.key) {
            if attempt.queued.request.cseq != owner.cseq {
                // A newer request of the same registration is in flight; keep it.
                self.attempts.insert(owner.key, attempt);
            } else if attempt.tried < attempt.targets.len() {
                let failed = attempt.targets[attempt.index];
                attempt.index = (attempt.index + 1) % attempt.targets.len();
                attempt.tried += 1;
                self.stats.failovers += 1;
                info!(
                    l_uuid = self.table.record_of(owner.key).map_or("", |r| r.l_uuid()),
                    failed = %failed.addr,
                    next = %attempt.targets[attempt.index].addr,
                    "{why}; trying the next server"
                );
                self.send_attempt(now, attempt);
                return;
            }
        }
        self.unbind(owner.key);
        self.table
            .handle_transaction_failure(now, owner.key, owner.cseq, &why);
        self.collect_actions();
    }

    /// A response to one of our REGISTERs (or keep-alive OPTIONS), received from `from` by
    /// `origin`.
    pub(super) fn handle_register_response(
        &mut self,
        now: Instant,
        response: Response,
        from: SocketAddr,
        origin: Origin,
    ) {
        let Some(branch) = response.branch.as_deref() else {
            self.stats.malformed_dropped += 1;
            return;
        };
        let arrival = match origin {
            Origin::Udp(local) => Path::Udp(Route {
                local,
                remote: from,
            }),
            Origin::Flow(flow) => Path::Flow(flow),
        };
        if branch.starts_with(KEEPALIVE_BRANCH) {
            self.keepalive_answered(&response, arrival, from);
            return;
        }
        match self.transactions.handle_response(now, &response, arrival) {
            Matched::Deliver(owner, latency) => {
                self.pacer.on_answer();
                *self.stats.responses.entry(response.code).or_default() += 1;
                self.stats.latency.observe(latency);
                let more_targets = self.attempts.get(&owner.key).is_some_and(|a| {
                    a.queued.request.cseq == owner.cseq && a.tried < a.targets.len()
                });
                if response.code == 503 && more_targets {
                    // RFC 3263 §4.3: a 503 sends the request to the next server.
                    self.fail_over_or_report(now, owner, format!("503 {}", response.reason));
                    return;
                }
                self.note_answer(now, owner, &response);
                self.table.handle_response(now, owner.key, &response);
                self.collect_actions();
            }
            Matched::Absorbed => {}
            Matched::Unknown(mismatch) => self.count_unmatched(mismatch, &response, from),
        }
    }

    /// A response that answers none of our requests: counted by reason, then dropped.
    fn count_unmatched(&mut self, mismatch: Mismatch, response: &Response, from: SocketAddr) {
        self.stats.unmatched_responses += 1;
        let branch = response.branch.as_deref().unwrap_or("");
        match mismatch {
            Mismatch::Branch => {
                self.stats.responses_unknown_branch += 1;
                trace!(%from, branch, "response matches no transaction");
            }
            // Someone knows one of our live branches: worth a line when debugging.
            Mismatch::Ids => {
                self.stats.responses_wrong_ids += 1;
                debug!(
                    %from,
                    branch,
                    call_id = %response.call_id,
                    cseq = response.cseq,
                    method = %response.cseq_method,
                    "dropping a response whose Call-ID or CSeq is not its request's"
                );
            }
            Mismatch::Source => {
                self.stats.responses_wrong_source += 1;
                debug!(%from, branch, "dropping a response that did not come from where its request went");
            }
        }
    }

    /// The key of the UDP socket a request to be sent from `local` (a row's `socket`) really
    /// leaves from, as received datagrams name it: `None` for the main socket.
    pub(super) fn udp_local(&self, local: Option<SocketAddr>) -> Option<SocketAddr> {
        local.filter(|addr| self.extra_udp.contains_key(addr))
    }

    /// Remembers which target answered (the registration stays there) and which connection
    /// a new binding lives on.
    fn note_answer(&mut self, now: Instant, owner: Owner, response: &Response) {
        let Some(attempt) = self.attempts.get(&owner.key) else {
            return;
        };
        if attempt.queued.request.cseq != owner.cseq {
            return;
        }
        let Some(attempt) = self.attempts.remove(&owner.key) else {
            return;
        };
        let target = attempt.targets[attempt.index];
        let registered = (200..300).contains(&response.code) && attempt.queued.request.expires > 0;
        let removed = (200..300).contains(&response.code) && attempt.queued.request.expires == 0;
        if removed {
            self.unbind(owner.key);
            return;
        }
        let flow = if registered { attempt.flow } else { None };
        self.set_bound(owner.key, Bound { target, flow });
        if registered {
            match flow {
                Some(flow) => self.keepalive.watch_flow(now, flow),
                None => {
                    let local = self.udp_local(
                        self.table
                            .record_of(owner.key)
                            .and_then(|r| r.local_socket())
                            .map(|s| s.addr),
                    );
                    self.keepalive.watch_udp(
                        now,
                        Route {
                            local,
                            remote: target.addr,
                        },
                    );
                }
            }
        }
    }

    fn set_bound(&mut self, key: RegKey, bound: Bound) {
        self.relay.trust_mut().registrar_moved(
            self.bound.get(&key).map(|b| b.target.addr.ip()),
            Some(bound.target.addr.ip()),
        );
        if let Some(old) = self.bound.insert(key, bound)
            && old.flow != bound.flow
            && let Some(flow) = old.flow
            && let Some(members) = self.flow_members.get_mut(&flow)
        {
            members.remove(&key);
        }
        if let Some(flow) = bound.flow {
            self.flow_members.entry(flow).or_default().insert(key);
        }
    }

    fn unbind(&mut self, key: RegKey) {
        self.relay
            .trust_mut()
            .registrar_moved(self.bound.get(&key).map(|b| b.target.addr.ip()), None);
        if let Some(old) = self.bound.remove(&key)
            && let Some(flow) = old.flow
            && let Some(members) = self.flow_members.get_mut(&flow)
        {
            members.remove(&key);
        }
    }

    pub(super) fn handle_stream_event(&mut self, now: Instant, event: StreamEvent) {
        match event {
            StreamEvent::Message { flow, peer, bytes } => {
                self.stats.stream_messages_received += 1;
                self.handle_message(now, &bytes, peer, super::inbound::Origin::Flow(flow));
            }
            StreamEvent::KeepAlive { flow } => {
                if let Some(probe) = self.keepalive.flows.get_mut(&flow) {
                    probe.waiting_since = None;
                }
            }
            StreamEvent::Closed { flow, why } => self.flow_closed(now, flow, &why.to_string()),
        }
    }

    /// A connection ended: requests on it fail over, bindings on it are registered again.
    fn flow_closed(&mut self, now: Instant, flow: FlowId, why: &str) {
        let peer = self.streams.peer(flow).map(|(_, addr)| addr);
        self.streams.forget(flow);
        self.relay.trust_mut().flow_closed(flow);
        self.keepalive.flows.remove(&flow);
        self.stats.connections_closed += 1;
        let broken: Vec<(RegKey, u32, String)> = self
            .attempts
            .iter()
            .filter(|(_, a)| a.flow == Some(flow))
            .map(|(key, a)| (*key, a.queued.request.cseq, a.branch.clone()))
            .collect();
        for (key, cseq, branch) in broken {
            if self.transactions.abandon(&branch).is_some() {
                let why = match peer {
                    Some(peer) => format!("connection to {peer} failed: {why}"),
                    None => format!("connection failed: {why}"),
                };
                self.fail_over_or_report(now, Owner { key, cseq }, why);
            }
        }
        let members = self.flow_members.remove(&flow).unwrap_or_default();
        if !members.is_empty() {
            info!(
                flow,
                registrations = members.len(),
                "connection lost ({why}); registering again"
            );
        }
        for key in members {
            if let Some(bound) = self.bound.get_mut(&key) {
                bound.flow = None;
            }
            self.schedule_rebind(now, key);
        }
    }

    /// Registers `key` again now, or later when its connections keep dropping.
    fn schedule_rebind(&mut self, now: Instant, key: RegKey) {
        let entry = self.drops.entry(key).or_insert((0, now));
        if now.duration_since(entry.1) < DROP_WINDOW && entry.0 > 0 {
            entry.0 += 1;
        } else {
            entry.0 = 1;
        }
        entry.1 = now;
        let delay = match entry.0 {
            1 => Duration::ZERO,
            n => Duration::from_secs(1u64 << (n - 1).min(9)).min(MAX_REBIND_DELAY),
        };
        self.rebind_at.insert((now + delay, key));
    }

    pub(super) fn handle_rebinds(&mut self, now: Instant) {
        while let Some(&(at, key)) = self.rebind_at.first() {
            if at > now {
                break;
            }
            self.rebind_at.pop_first();
            if self.table.rebind(now, key) {
                self.stats.rebinds += 1;
            }
        }
        if self.drops.len() > 1024 {
            self.drops
                .retain(|_, (_, last)| now.duration_since(*last) < DROP_WINDOW);
        }
    }

    pub(super) fn handle_keepalives(&mut self, now: Instant) {
        let (Some(interval), Some(tick)) = (self.keepalive.interval, self.keepalive.next_tick)
        else {
            return;
        };
        if now < tick {
            return;
        }
        self.keepalive.next_tick = Some(now + Duration::from_secs(1));
        // Connections: CRLF ping, close when the pong does not come.
        let mut dead = Vec::new();
        let mut pings = Vec::new();
        for (flow, probe) in self.keepalive.flows.iter_mut() {
            if self.flow_members.get(flow).is_none_or(|m| m.is_empty()) {
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
            self.streams.send_on(flow, Arc::from(&b"\r\n\r\n"[..]));
        }
        for flow in dead {
            self.stats.keepalive_failures += 1;
            warn!(flow, "keep-alive pong missing; closing the connection");
            // The flow task reports Closed, which registers its bindings again.
            self.streams.close(flow);
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
                .bound
                .iter()
                .filter(|(key, b)| {
                    b.flow.is_none()
                        && b.target.addr == route.remote
                        && self.table.record_of(**key).is_some_and(|r| {
                            self.udp_local(r.local_socket().map(|s| s.addr)) == route.local
                        })
                })
                .map(|(key, _)| *key)
                .collect();
            warn!(
                remote = %route.remote,
                registrations = keys.len(),
                "keep-alive OPTIONS unanswered; registering again"
            );
            self.keepalive.udp.remove(&route);
            for key in keys {
                self.schedule_rebind(now, key);
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

    /// Sends one OPTIONS probe along `route`; returns what its answer must carry back. Every
    /// probe is a new dialog-less request with its own random Call-ID, From tag and branch.
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
        let socket = self.udp_socket(route.local);
        if socket.try_send(request.as_bytes(), route.remote).is_err() {
            self.stats.send_errors += 1;
        }
        self.stats.keepalives_sent += 1;
        ids
    }

    /// A response with a keep-alive branch: the path is alive when it answers a waiting probe
    /// in every respect, like any response to our requests.
    fn keepalive_answered(&mut self, response: &Response, arrival: Path, from: SocketAddr) {
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

/// RFC 5626 Contact parameters: one flow (`reg-id=1`) and a stable instance id per row, derived
/// from its l_uuid so a restart presents the same instance and replaces the old binding.
fn outbound_contact_params(record: &Record) -> String {
    use md5::{Digest, Md5};
    let hash = Md5::digest(format!("uacreg instance {}", record.l_uuid()).as_bytes());
    let h: Vec<String> = hash.iter().map(|b| format!("{b:02x}")).collect();
    let hex = h.concat();
    format!(
        ";reg-id=1;+sip.instance=\"<urn:uuid:{}-{}-{}-{}-{}>\"",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

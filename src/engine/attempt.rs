//! One REGISTER on its way: from the send queue to a target, and what happens when the target
//! does not answer.
//!
//! RFC 3263 gives each destination an ordered list of targets (transport + address). A request
//! goes to the target its registration last got an answer from, so a binding stays where it was
//! accepted; a timeout, a 503 or a broken connection moves the same request (new branch, same
//! CSeq, RFC 3263 §4.3) to the next target before the table hears of any failure. Only when
//! every target failed does the registration's retry policy take over.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tracing::{debug, info, trace};

use super::binding::Bound;
use super::keepalive::KEEPALIVE_BRANCH;
use super::targets::Lookup;
use super::transaction::{Matched, Mismatch, Owner, Path, RequestIds, Route, TimerEvent};
use super::{Engine, Event, TransmitRoute, Unconfirmed};
use crate::registration::record::Record;
use crate::registration::{Destination, RegKey, Transport};
use crate::sip::message::Response;
use crate::sip::register::{Hop, RegisterRequest};
use crate::transport::resolve::Target;
use crate::transport::stream::{FlowId, FlowKey};

/// A REGISTER waiting for the pacer (or for its destination to be resolved).
pub(crate) struct Queued {
    pub key: RegKey,
    pub destination: Destination,
    pub request: RegisterRequest,
}

/// A request in flight and where else it may go.
pub(crate) struct Attempt {
    pub queued: Queued,
    pub targets: Arc<[Target]>,
    pub index: usize,
    /// Targets tried so far for this request.
    pub tried: usize,
    pub branch: String,
    /// The connection it went on (once the I/O side has named it).
    pub flow: Option<FlowId>,
}

impl Engine {
    /// Sends queued requests as far as pacing allows.
    pub(crate) fn flush(&mut self, now: Instant) {
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
        if self.timers_held && self.queue.len() < super::send_queue::HIGH_WATER {
            self.timers_held = false;
            self.timers_released = Some(now);
        }
    }

    fn send_now(&mut self, now: Instant, queued: Queued) {
        let targets = match self.targets.lookup(now, &queued.destination) {
            Lookup::Ready(targets) => targets,
            Lookup::Failed(why) => {
                self.table
                    .handle_transaction_failure(now, queued.key, queued.request.cseq, &why);
                self.collect_actions();
                return;
            }
            Lookup::Unknown => {
                let destination = queued.destination.clone();
                if self.targets.wait(queued) {
                    self.events.push_back(Event::Resolve(destination));
                }
                return;
            }
        };
        let index = self
            .bindings
            .target_of(queued.key)
            .and_then(|bound| targets.iter().position(|t| *t == bound))
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

    /// Encodes the attempt's request for its current target, hands it to the I/O side and
    /// starts its transaction.
    fn send_attempt(&mut self, now: Instant, mut attempt: Attempt) {
        let target = attempt.targets[attempt.index];
        let key = attempt.queued.key;
        let Some(record) = self.table.record_of(key) else {
            return;
        };
        let local = record.local_socket().map(|s| s.addr);
        let own_sent_by;
        let sent_by: &str = match local {
            Some(addr) if !addr.ip().is_unspecified() => {
                own_sent_by = addr.to_string();
                &own_sent_by
            }
            _ => &self.config.via_sent_by,
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
        let branch = self.transactions.next_branch();
        self.encode_buf.clear();
        attempt.queued.request.encode(
            &Hop {
                transport: target.transport.via_token(),
                sent_by,
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
                server_name: attempt.queued.destination.host.to_string(),
            };
            self.unconfirmed.push_back(Unconfirmed {
                key: flow_key.clone(),
                reg: key,
                branch: branch.clone(),
            });
            self.transmit(TransmitRoute::Connect(flow_key), bytes.clone());
            // Named by the I/O side's `Connected` before anything can answer on it.
            Path::Connecting
        } else {
            let route = Route {
                local: self.udp_local(local),
                remote: target.addr,
            };
            self.transmit(TransmitRoute::Udp(route), bytes.clone());
            Path::Udp(route)
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

    /// The I/O side says which connection a [`TransmitRoute::Connect`] went on.
    pub(crate) fn flow_connected(&mut self, key: FlowKey, flow: FlowId, opened: bool) {
        if opened {
            self.stats.connections_opened += 1;
        }
        let Some(position) = self.unconfirmed.iter().position(|u| u.key == key) else {
            debug!(flow, "connection named for no request waiting for one");
            return;
        };
        let Some(sent) = self.unconfirmed.remove(position) else {
            return;
        };
        self.transactions.connected(&sent.branch, flow);
        if let Some(attempt) = self.attempts.get_mut(&sent.reg)
            && attempt.branch == sent.branch
        {
            attempt.flow = Some(flow);
        }
    }

    pub(crate) fn handle_transaction_timers(&mut self, now: Instant) {
        let mut events = Vec::new();
        self.transactions.handle_timeout(now, &mut events);
        for event in events {
            match event {
                TimerEvent::Retransmit { destination, bytes } => {
                    self.pacer.on_late(now);
                    trace!(destination = %destination.remote, "retransmitting");
                    self.transmit(TransmitRoute::Udp(destination), bytes);
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

    /// The current target of `owner`'s request failed: try the next one, or tell the table.
    pub(crate) fn fail_over_or_report(&mut self, now: Instant, owner: Owner, why: String) {
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
                attempt.flow = None;
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

    /// A response to one of our REGISTERs (or keep-alive OPTIONS), from `from` by `arrival`.
    pub(crate) fn handle_response(
        &mut self,
        now: Instant,
        response: Response,
        from: SocketAddr,
        arrival: Path,
    ) {
        let Some(branch) = response.branch.as_deref() else {
            self.stats.malformed_dropped += 1;
            return;
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
    pub(crate) fn count_unmatched(
        &mut self,
        mismatch: Mismatch,
        response: &Response,
        from: SocketAddr,
    ) {
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

//! The sans-I/O engine: everything the gateway decides, and nothing it does.
//!
//! Modelled on quinn-proto's `Endpoint`: the [`Engine`] owns the registration table, the client
//! transactions, the pacer and send queue, RFC 3263 targets with fail-over and the DNS answer
//! cache, which connection each binding lives on, rebinds after lost connections, keep-alives,
//! shutdown progress and the counters. It never touches a socket, never reads the clock and
//! never spawns: inputs come in through `handle_*` with `now` passed in, and outputs are polled —
//! [`Engine::poll_transmit`] (bytes and where they go), [`Engine::poll_event`] (other work for
//! the I/O side: a DNS lookup, closing a connection, a trust update) and [`Engine::poll_timeout`]
//! (the one deadline of all its timers). The async driver around it only moves bytes, which is
//! what lets fail-over, rebinds, keep-alive failures and pacing under loss run in simulated time
//! (see `tests.rs`).
//!
//! * [`transaction`] — RFC 3261 non-INVITE client transactions.
//! * `tx_store` — where transactions are kept and when they come due, laid out for a million.
//! * `attempt` — one REGISTER on its way: targets, encoding, fail-over, answers.
//! * `targets` — the RFC 3263 answer cache and lookups in progress.
//! * `binding` — where each binding lives, and rebinds (with back-off) when that breaks.
//! * `keepalive` — CRLF pings on connections and OPTIONS probes on UDP paths.
//! * `send_queue` — REGISTERs waiting for the pacer, answers to challenges first.

mod attempt;
mod binding;
mod keepalive;
mod send_queue;
mod shards;
mod stats;
mod targets;
pub mod transaction;
mod tx_store;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use foldhash::{HashMap, HashSet};
use rand::SeedableRng;
use rand::rngs::StdRng;
use tracing::{info, warn};

use crate::registration::record::Record;
use crate::registration::{
    Action, AlreadyExists, Attribute, CoreConfig, Destination, RegKey, RegistrationTable,
    ReloadSummary, Snapshot, TIMERS_PER_CALL,
};
use crate::sip::message::Response;
use crate::transport::resolve::{ResolveError, Resolved};
use crate::transport::stream::{FlowId, FlowKey};
/// The pacer's token arithmetic lives with the transports; the engine owns the pacer.
pub use crate::transport::{Pacer, PacingConfig};
use attempt::{Attempt, Queued};
pub use shards::RowDialog;
pub use stats::{EngineStats, LATENCY_BOUNDS_MS, LatencyHistogram};
use transaction::{ClientTransactions, Path};
pub use transaction::{Route, Timers};

/// Settings for [`Engine::new`].
#[derive(Clone, Debug)]
pub struct EngineConfig {
    pub core: CoreConfig,
    pub pacing: PacingConfig,
    pub timers: Timers,
    /// `host:port` for the Via header when a row names no socket of its own.
    pub via_sent_by: String,
    /// Keep-alive period per flow (CRLF on connections, OPTIONS over UDP); `None`: off.
    pub keepalive: Option<Duration>,
    /// RFC 5626 outbound and RFC 3327 Path on every REGISTER.
    pub outbound: bool,
    /// The extra UDP sockets rows may name; a row naming any other address leaves from the
    /// main socket.
    pub extra_udp: Vec<SocketAddr>,
    /// One node of a cluster with this many shards: the engine runs only the rows of shards it
    /// is given ([`Engine::take_shards`]) and until their deadlines. `None`: every row.
    pub cluster_shards: Option<u32>,
}

/// Bytes to send and where.
#[derive(Clone, Debug)]
pub struct Transmit {
    pub route: TransmitRoute,
    pub bytes: Arc<[u8]>,
}

/// Where a [`Transmit`] goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TransmitRoute {
    /// A datagram from one of our UDP sockets (`route.local`: `None` for the main one).
    Udp(Route),
    /// On an open connection; nothing is sent when it has closed meanwhile.
    Flow(FlowId),
    /// On the connection for this key, opened first if there is none. The I/O side must answer
    /// at once with [`FlowEvent::Connected`] naming the flow the bytes went on.
    Connect(FlowKey),
}

/// Work for the I/O side other than sending.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// Look `destination` up (RFC 3263) and report with [`Engine::handle_resolved`].
    Resolve(Destination),
    /// Close this connection (its keep-alive went unanswered); report [`FlowEvent::Closed`]
    /// when it has.
    CloseFlow(FlowId),
    /// A registration's registrar changed address (`None`: no registrar): the inbound relay
    /// trusts the addresses our bindings live at.
    RegistrarMoved {
        from: Option<IpAddr>,
        to: Option<IpAddr>,
    },
}

/// What happened to a connection.
#[derive(Clone, Debug)]
pub enum FlowEvent {
    /// The bytes of a [`TransmitRoute::Connect`] went on `flow`; `opened`: a new connection.
    Connected {
        key: FlowKey,
        flow: FlowId,
        opened: bool,
    },
    /// A CRLF pong (RFC 5626 §4.4.1) arrived on `flow`.
    Pong(FlowId),
    /// The connection ended (`peer`: its address, for the reason given to waiting requests).
    Closed {
        flow: FlowId,
        peer: Option<SocketAddr>,
        why: String,
    },
}

/// A request sent on a connection the I/O side has not named yet.
struct Unconfirmed {
    key: FlowKey,
    reg: RegKey,
    branch: String,
}

/// The gateway's protocol state. See the module documentation.
pub struct Engine {
    config: EngineConfig,
    table: RegistrationTable,
    transactions: ClientTransactions,
    pacer: Pacer,
    queue: send_queue::SendQueue,
    targets: targets::TargetCache,
    /// The request in flight per registration, with the targets left to try.
    attempts: HashMap<RegKey, Attempt>,
    bindings: binding::Bindings,
    keepalive: keepalive::KeepAlive,
    /// Extra UDP sockets, by the address received datagrams name.
    extra_udp: HashSet<SocketAddr>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    /// Connect transmits waiting for their [`FlowEvent::Connected`], in order.
    unconfirmed: VecDeque<Unconfirmed>,
    stats: EngineStats,
    encode_buf: Vec<u8>,
    /// While shutting down: when to give up on unanswered un-REGISTERs.
    shutdown_deadline: Option<Instant>,
    last_shutdown_report: Option<Instant>,
    /// Clustered: the shards held and their deadlines.
    shard_gate: Option<shards::ShardGate>,
    /// Due registration timers are waiting for room in the send queue.
    timers_held: bool,
    /// When the send queue last made room for timers it had held: they are late only from then.
    timers_released: Option<Instant>,
}

impl Engine {
    /// `rng` seeds every generator inside (the table's, the transactions' branches, the
    /// keep-alive probes', the rebind jitter): seed it from the OS in production, since the
    /// branches it writes are what keeps strangers from answering our requests.
    pub fn new(config: EngineConfig, now: Instant, mut rng: StdRng) -> Engine {
        let mut config = config;
        // The core's guard must never end a request its transaction is still working on.
        let guard = &mut config.core.policy.in_flight_guard;
        *guard = (*guard).max(config.timers.timeout() * 2);
        let table = RegistrationTable::new(config.core.clone(), StdRng::from_rng(&mut rng));
        let keepalive = keepalive::KeepAlive::new(config.keepalive, StdRng::from_rng(&mut rng));
        let bindings = binding::Bindings::new(StdRng::from_rng(&mut rng));
        Engine {
            table,
            transactions: ClientTransactions::new(config.timers, rng),
            pacer: Pacer::new(config.pacing, now),
            queue: send_queue::SendQueue::default(),
            targets: targets::TargetCache::default(),
            attempts: HashMap::default(),
            bindings,
            keepalive,
            extra_udp: config.extra_udp.iter().copied().collect(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            unconfirmed: VecDeque::new(),
            stats: EngineStats::default(),
            encode_buf: Vec::with_capacity(1024),
            shutdown_deadline: None,
            last_shutdown_report: None,
            shard_gate: config.cluster_shards.map(shards::ShardGate::new),
            timers_held: false,
            timers_released: None,
            config,
        }
    }

    /// The registrations (read only: changes go through the engine's commands).
    pub fn table(&self) -> &RegistrationTable {
        &self.table
    }

    /// The next bytes to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next thing the I/O side must do besides sending.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Engine::handle_timeout`] next has work: the earliest of the registrations'
    /// timers, the transactions', rebinds, keep-alives, the pacer's next token (while requests
    /// wait) and the shutdown deadline. `now` is where the pacer counts its next token from.
    pub fn poll_timeout(&self, now: Instant) -> Option<Instant> {
        let queue_wait = if self.queue.is_empty() {
            None
        } else {
            self.pacer.next_token_at(now, self.queue.len())
        };
        // Registration timers held for room in the send queue wait for the pacer, not the clock.
        let table = if self.queue.len() < send_queue::HIGH_WATER {
            self.table.next_deadline()
        } else {
            None
        };
        [
            table,
            self.transactions.next_deadline(),
            self.bindings.next_rebind(),
            self.keepalive.next_deadline(),
            queue_wait,
            // Once past, the I/O side has heard of it from `shutdown_finished`: no busy loop.
            self.shutdown_deadline.filter(|at| *at > now),
            self.shard_gate
                .as_ref()
                .and_then(|gate| gate.next_deadline()),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Runs every timer due at `now` and sends what became sendable.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.enforce_shard_deadlines(now);
        // Only as many timers fire as the send queue has room for; the rest are held (see
        // `send_queue`), and `flush` notes when there is room again.
        let room = send_queue::HIGH_WATER.saturating_sub(self.queue.len());
        if let Some(due) = self.table.handle_timeout_up_to(now, room) {
            // The earliest due timer is the latest one: one observation per call. A timer
            // held for room in the queue is late from when the room came, not from its due
            // time: what this measures is the driver, and the queue has its own gauge.
            let since = self
                .timers_released
                .map_or(due, |released| due.max(released));
            self.stats
                .timer_lateness
                .observe(now.saturating_duration_since(since));
        }
        if room < TIMERS_PER_CALL && self.table.has_due_timer(now) {
            // The queue's room, not the budget per call, left these for later, whether it was
            // full or a few requests short of full (a reload of 10,000 rows amid a wave of
            // refreshes kept it so for seconds, and those seconds counted as the driver's).
            self.timers_held = true;
        }
        self.handle_transaction_timers(now);
        self.handle_rebinds(now);
        self.handle_keepalives(now);
        self.collect_actions();
        self.flush(now);
    }

    /// A datagram that is not a request nor the relay's: a response to one of our REGISTERs or
    /// keep-alive probes, received on the UDP socket at `local` (`None`: the main one).
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        local: Option<SocketAddr>,
        from: SocketAddr,
        bytes: &[u8],
    ) {
        let arrival = Path::Udp(Route {
            local,
            remote: from,
        });
        self.handle_response_bytes(now, bytes, from, arrival);
    }

    /// A message on a connection that is not a request nor the relay's (see
    /// [`Engine::handle_datagram`]); `peer` is the connection's other end.
    pub fn handle_stream_message(
        &mut self,
        now: Instant,
        flow: FlowId,
        peer: SocketAddr,
        bytes: &[u8],
    ) {
        self.handle_response_bytes(now, bytes, peer, Path::Flow(flow));
    }

    fn handle_response_bytes(&mut self, now: Instant, bytes: &[u8], from: SocketAddr, at: Path) {
        self.enforce_shard_deadlines(now);
        match Response::parse(bytes) {
            Ok(response) => self.handle_response(now, response, from, at),
            Err(err) => {
                self.stats.malformed_dropped += 1;
                tracing::debug!(%from, "dropping malformed response: {err}");
            }
        }
        self.flush(now);
    }

    /// A connection was used, answered a ping, or ended.
    pub fn handle_flow_event(&mut self, now: Instant, event: FlowEvent) {
        self.enforce_shard_deadlines(now);
        match event {
            FlowEvent::Connected { key, flow, opened } => self.flow_connected(key, flow, opened),
            FlowEvent::Pong(flow) => self.keepalive.pong(flow),
            FlowEvent::Closed { flow, peer, why } => self.flow_closed(now, flow, peer, &why),
        }
        self.flush(now);
    }

    /// The answer to an [`Event::Resolve`].
    pub fn handle_resolved(
        &mut self,
        now: Instant,
        destination: Destination,
        result: Result<Resolved, ResolveError>,
    ) {
        self.enforce_shard_deadlines(now);
        let waiting = self
            .targets
            .store(now, &destination, result, &mut self.stats);
        for queued in waiting {
            // Back to the front of the queue: they were admitted by the pacer already once,
            // but sending them again through it keeps the accounting simple.
            self.queue.push_front(queued);
        }
        self.flush(now);
    }

    /// Moves the table's new requests to the send queue.
    fn collect_actions(&mut self) {
        for action in self.table.drain_actions() {
            match action {
                Action::Send {
                    key,
                    destination,
                    request,
                } => self.queue.push(Queued {
                    key,
                    destination,
                    request,
                }),
            }
        }
    }

    /// After a command changed the table: queue and send what it asked for.
    fn after_command(&mut self, now: Instant) {
        self.enforce_shard_deadlines(now);
        self.collect_actions();
        self.flush(now);
    }

    // Commands (RPC, reloads, the daemon). Each runs at `now` and returns its answer.

    /// Up to `limit` snapshots in l_uuid order after `after` (a dump taken in slices).
    pub fn snapshots_after(&self, after: Option<&str>, limit: usize) -> Vec<Snapshot> {
        self.table.snapshots_after(after, limit)
    }

    /// The first registration whose `attribute` equals `value`.
    pub fn find(&self, attribute: Attribute, value: &str) -> Option<Snapshot> {
        self.table.find(attribute, value).map(|r| r.snapshot())
    }

    /// The registration with this local URI (`uac.reg_lookup`), from the table's index.
    pub fn find_by_local_uri(&self, user: &str, host: &str) -> Option<Snapshot> {
        self.table
            .find_by_local_uri(user, host)
            .map(|r| r.snapshot())
    }

    /// Replaces the rows with `records` (the whole table as just read).
    pub fn reload(&mut self, now: Instant, mut records: Vec<Record>) -> ReloadSummary {
        records.retain(|r| self.runs(r));
        let summary = self.table.reload(now, records);
        self.after_command(now);
        summary
    }

    /// [`Engine::reload`], refused (nothing changes) when `guard` finds that it would remove
    /// too many rows.
    pub fn reload_guarded(
        &mut self,
        now: Instant,
        records: Vec<Record>,
        guard: RemovalGuard,
    ) -> Result<ReloadSummary, Removal> {
        let mut records = records;
        records.retain(|r| self.runs(r));
        let removal = Removal {
            removed: self.table.removed_by(&records),
            running: self.table.len(),
        };
        if guard.refuses(removal) {
            return Err(removal);
        }
        Ok(self.reload(now, records))
    }

    /// `uac.reg_refresh` from the database: one row's new version (None: it is gone).
    pub fn apply_one(&mut self, now: Instant, l_uuid: &str, record: Option<Record>) -> bool {
        if record.as_ref().is_some_and(|r| !self.runs(r)) {
            // Another node's row.
            return false;
        }
        let found = self.table.apply_one(now, l_uuid, record);
        self.after_command(now);
        found
    }

    pub fn set_disabled(
        &mut self,
        now: Instant,
        attribute: Attribute,
        value: &str,
        disabled: bool,
    ) -> bool {
        let found = self.table.set_disabled(now, attribute, value, disabled);
        self.after_command(now);
        found
    }

    /// `uac.reg_register` (`register`) or `uac.reg_unregister`.
    pub fn register_now(
        &mut self,
        now: Instant,
        attribute: Attribute,
        value: &str,
        register: bool,
    ) -> bool {
        let found = if register {
            self.table.register_now(now, attribute, value)
        } else {
            self.table.unregister_now(now, attribute, value)
        };
        self.after_command(now);
        found
    }

    /// `uac.reg_active`: returns the previous mode.
    pub fn set_active(&mut self, now: Instant, active: bool) -> bool {
        let old = self.table.set_active(now, active);
        self.after_command(now);
        old
    }

    pub fn add(&mut self, now: Instant, record: Record) -> Result<(), AlreadyExists> {
        let added = self.table.add(now, record);
        self.after_command(now);
        added
    }

    pub fn remove(&mut self, now: Instant, l_uuid: &str) -> bool {
        let found = self.table.remove(now, l_uuid);
        self.after_command(now);
        found
    }

    pub fn status_counts(&self) -> BTreeMap<&'static str, usize> {
        self.table.status_counts()
    }

    /// The counters, with the gauges read now.
    pub fn stats(&self) -> EngineStats {
        let mut stats = self.stats.clone();
        stats.core = self.table.counters();
        stats.queued = self.queue.len();
        stats.in_flight = self.transactions.pending();
        (stats.pacing_window, stats.pacing_backoffs) = self.pacer.window();
        stats.leaving = self.table.leaving_count();
        stats.transactions = self.transactions.stats();
        stats
    }

    /// Starts a shutdown. With `unregister_within`, un-registers every binding first and
    /// waits up to that long for the answers; without, finishes at once.
    pub fn shutdown(&mut self, now: Instant, unregister_within: Option<Duration>) {
        match unregister_within {
            Some(within) => {
                let pending = self.table.shutdown(now);
                info!(pending, "shutting down: un-registering bindings");
                self.shutdown_deadline = Some(now + within);
            }
            None => {
                info!("shutting down; bindings are left to expire at the registrars");
                self.shutdown_deadline = Some(now);
            }
        }
        self.after_command(now);
    }

    /// During a shutdown: `Some(registrations left unfinished)` once every registration has
    /// finished or the deadline has passed; `None` while it goes on (or none was asked for).
    pub fn shutdown_finished(&mut self, now: Instant) -> Option<usize> {
        let deadline = self.shutdown_deadline?;
        let remaining = self.table.leaving_count() + self.table.len();
        if remaining > 0
            && self
                .last_shutdown_report
                .is_none_or(|at| now.duration_since(at) >= Duration::from_secs(1))
        {
            // A shutdown of many rows takes a while: say how far it got.
            info!(remaining, "un-registering");
            self.last_shutdown_report = Some(now);
        }
        if remaining == 0 || now >= deadline {
            if remaining > 0 {
                warn!(
                    remaining,
                    "shutdown deadline reached with un-REGISTERs unanswered"
                );
            }
            return Some(remaining);
        }
        None
    }

    /// The key of the UDP socket a request to be sent from `local` (a row's `socket`) really
    /// leaves from, as received datagrams name it: `None` for the main socket.
    fn udp_local(&self, local: Option<SocketAddr>) -> Option<SocketAddr> {
        local.filter(|addr| self.extra_udp.contains(addr))
    }

    fn transmit(&mut self, route: TransmitRoute, bytes: Arc<[u8]>) {
        self.transmits.push_back(Transmit { route, bytes });
    }
}

/// How many running rows a reload would remove.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Removal {
    pub removed: usize,
    pub running: usize,
}

/// The rule that refuses a reload removing too many rows (see [`Engine::reload`]), checked
/// and applied in one step so nothing changes the table in between.
#[derive(Clone, Copy, Debug)]
pub struct RemovalGuard {
    /// Rows the reload read from the database.
    pub loaded: usize,
    /// The largest share of running rows a reload may remove.
    pub max_share: f64,
}

impl RemovalGuard {
    /// A read that finds nothing while rows run is always suspect; a single removed row never
    /// is (an operator deleting one of two rows need not force it).
    pub fn refuses(&self, removal: Removal) -> bool {
        let Removal { removed, running } = removal;
        if removed == 0 || (removed as f64) <= self.max_share * running as f64 {
            return false;
        }
        self.loaded == 0 || removed >= 2
    }
}

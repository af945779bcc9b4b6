//! The async driver: one task that owns the registration table, the client transactions, the
//! pacer, the sockets and connections, and turns the core's actions into messages on the wire
//! and what arrives from the network into core inputs.
//!
//! Everything that touches registration state happens on this one task, so there are no locks
//! around the table; RPC handlers talk to it through [`DriverHandle`] commands and get copies
//! (snapshots) back. The loop sleeps until the earliest of: a datagram, a connection event, a
//! command, a finished DNS lookup, a core timer, a transaction timer, or the pacer's next token.
//!
//! The work is split by direction: [`outbound`] sends REGISTERs (RFC 3263 targets, fail-over,
//! connections, keep-alives), [`inbound`] answers and relays requests that arrive for our
//! contacts.

mod inbound;
mod outbound;
mod send_queue;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand::SeedableRng;
use rand::rngs::StdRng;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, trace, warn};

pub use inbound::{InboundConfig, InboundPolicy, InboundStats, RequestCounts, ResponseCounts};
pub use inbound::{IpPrefix, PrefixError};
use outbound::{Attempt, Bound, Queued};

use crate::registration::record::Record;
use crate::registration::{
    Action, Attribute, CoreConfig, Destination, RegKey, RegistrationTable, ReloadSummary, Snapshot,
};
use crate::transaction::{ClientTransactions, Timers, TransactionStats};
use crate::transport::admission::{AcceptBackoff, Admission, ConnectionLimits, Permit};
use crate::transport::resolve::{Resolved, SipResolver};
use crate::transport::stream::{FlowId, FlowSettings, StreamEvent, Streams};
use crate::transport::{Pacer, PacingConfig, UdpTransport, udp::MAX_DATAGRAM};

/// Maps the monotonic instants the core uses to wall-clock seconds for display.
#[derive(Clone, Copy, Debug)]
pub struct WallClock {
    base_instant: Instant,
    base_unix_ms: i128,
}

impl WallClock {
    pub fn now() -> WallClock {
        let base_unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i128)
            .unwrap_or(0);
        WallClock {
            base_instant: Instant::now(),
            base_unix_ms,
        }
    }

    /// Unix time in whole seconds of `at`.
    pub fn unix(&self, at: Instant) -> i64 {
        let offset_ms = if at >= self.base_instant {
            (at - self.base_instant).as_millis() as i128
        } else {
            -((self.base_instant - at).as_millis() as i128)
        };
        ((self.base_unix_ms + offset_ms) / 1000) as i64
    }
}

/// Registrations per driver command when dumping (see [`DriverHandle::snapshots`]).
pub const SNAPSHOT_SLICE: usize = 2000;

/// Upper bounds (ms) of the latency histograms' buckets; the last bucket is +Inf.
pub const LATENCY_BOUNDS_MS: [u64; 11] = [5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000];

/// A distribution of durations (transaction latency, timer lateness), cumulative like
/// Prometheus wants.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct LatencyHistogram {
    /// `counts[i]`: responses within `LATENCY_BOUNDS_MS[i]`; one more slot for +Inf.
    pub counts: [u64; 12],
    pub sum_seconds: f64,
    pub count: u64,
}

impl LatencyHistogram {
    fn observe(&mut self, latency: Duration) {
        let ms = latency.as_millis() as u64;
        for (i, bound) in LATENCY_BOUNDS_MS.iter().enumerate() {
            if ms <= *bound {
                self.counts[i] += 1;
            }
        }
        self.counts[LATENCY_BOUNDS_MS.len()] += 1;
        self.sum_seconds += latency.as_secs_f64();
        self.count += 1;
    }
}

/// Counters the driver keeps (besides the transactions' own).
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct DriverStats {
    pub datagrams_received: u64,
    /// Messages received over TCP and TLS connections.
    pub stream_messages_received: u64,
    pub malformed_dropped: u64,
    /// Responses that answer none of our requests, dropped: the sum of the three below.
    pub unmatched_responses: u64,
    /// ... whose Via branch is none of our live transactions' (guessed, forged or long over).
    pub responses_unknown_branch: u64,
    /// ... with one of our branches but another Call-ID, CSeq number or CSeq method.
    pub responses_wrong_ids: u64,
    /// ... that matched a request but came from another address, port, socket or connection
    /// than it went to.
    pub responses_wrong_source: u64,
    /// What became of every request and every relay-marked response (the inbound side).
    pub inbound: InboundStats,
    pub registers_sent: u64,
    pub send_errors: u64,
    pub resolve_failures: u64,
    /// Requests moved to the next RFC 3263 target after a timeout, 503 or broken connection.
    pub failovers: u64,
    /// TCP/TLS connections opened by us and accepted from peers; connections that ended.
    pub connections_opened: u64,
    pub connections_accepted: u64,
    pub connections_closed: u64,
    /// Open connections now.
    pub connections: usize,
    /// Of those, connections peers opened to us (each holds a place under `[limits]`).
    pub inbound_connections: usize,
    /// Accepted connections closed at once because `limits.max_connections` were open, or
    /// `limits.max_connections_per_ip` from the same source.
    pub connections_refused: u64,
    pub connections_refused_per_ip: u64,
    /// Accepted connections closed after `limits.idle_timeout_secs` without a message or ping
    /// (received) or a message of ours (sent).
    pub connections_idle_closed: u64,
    /// Connections closed because their bytes broke the framing rules (a head or declared
    /// message over the limit, a bad or missing Content-Length).
    pub connections_unframeable: u64,
    /// Connections closed because the peer stopped reading: the writer queue filled, or one
    /// write did not finish within its timeout.
    pub write_queue_overflows: u64,
    pub write_timeouts: u64,
    /// Failed `accept` calls (e.g. out of file descriptors); each makes the loop back off.
    pub accept_errors: u64,
    /// Datagrams on the extra UDP sockets dropped because the driver's event queue was full.
    pub datagrams_dropped: u64,
    /// Registrations re-registered because their connection or keep-alive failed.
    pub rebinds: u64,
    pub keepalives_sent: u64,
    pub keepalive_failures: u64,
    pub queued: usize,
    pub in_flight: usize,
    /// Unanswered transactions the pacer allows now (adapts to late answers), and how many
    /// times late answers or timeouts made it back off.
    pub pacing_window: usize,
    pub pacing_backoffs: u64,
    pub leaving: usize,
    pub transactions: TransactionStats,
    /// Final responses by status code.
    pub responses: std::collections::BTreeMap<u16, u64>,
    pub latency: LatencyHistogram,
    /// How late the registrations' timers (refreshes, retries) ran: time from a timer's
    /// deadline to the moment the driver got to it. Work that holds the driver (a large dump,
    /// a reload) shows up here as delayed refreshes.
    pub timer_lateness: LatencyHistogram,
    pub core: crate::registration::CoreCounters,
}

type Reply<T> = oneshot::Sender<T>;

/// A piece of work run against the table on the driver task.
type TableJob = Box<dyn FnOnce(&mut RegistrationTable, Instant) + Send>;

/// Requests from the RPC layer and the daemon.
enum Command {
    /// Needs the driver's own counters, not just the table.
    Stats(Reply<DriverStats>),
    Shutdown(Option<Duration>, Reply<usize>),
    /// Any other table operation, run on the driver task.
    Apply(TableJob),
}

/// Cheap, cloneable access to the driver task.
#[derive(Clone)]
pub struct DriverHandle {
    commands: mpsc::Sender<Command>,
    clock: WallClock,
    local_addr: SocketAddr,
}

/// The driver has stopped (shutdown finished or the task failed).
#[derive(Debug, thiserror::Error)]
#[error("the registration driver is not running")]
pub struct DriverGone;

impl DriverHandle {
    async fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, DriverGone> {
        let (tx, rx) = oneshot::channel();
        self.commands.send(make(tx)).await.map_err(|_| DriverGone)?;
        rx.await.map_err(|_| DriverGone)
    }

    pub fn clock(&self) -> WallClock {
        self.clock
    }

    /// Address the SIP socket is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Every current registration, in l_uuid order. Taken in slices of [`SNAPSHOT_SLICE`]: a
    /// whole table of 100,000 at once held the driver (and every refresh and response) for a
    /// quarter of a second; slices hold it for a few milliseconds each. A row added or removed
    /// meanwhile may or may not appear, as with any dump of a live table.
    pub async fn snapshots(&self) -> Result<Vec<Snapshot>, DriverGone> {
        let mut all: Vec<Snapshot> = Vec::new();
        loop {
            let after = all.last().map(|s| s.record.l_uuid().to_owned());
            let slice = self
                .apply(move |table, _| table.snapshots_after(after.as_deref(), SNAPSHOT_SLICE))
                .await?;
            let done = slice.len() < SNAPSHOT_SLICE;
            all.extend(slice);
            if done {
                return Ok(all);
            }
        }
    }

    pub async fn find(
        &self,
        attribute: Attribute,
        value: &str,
    ) -> Result<Option<Snapshot>, DriverGone> {
        let value = value.to_string();
        self.apply(move |table, _| table.find(attribute, &value).map(|r| r.snapshot()))
            .await
    }

    pub async fn reload(&self, records: Vec<Record>) -> Result<ReloadSummary, DriverGone> {
        self.apply(move |table, now| table.reload(now, records))
            .await
    }

    pub async fn set_disabled(
        &self,
        attribute: Attribute,
        value: &str,
        disabled: bool,
    ) -> Result<bool, DriverGone> {
        let value = value.to_string();
        self.apply(move |table, now| table.set_disabled(now, attribute, &value, disabled))
            .await
    }

    pub async fn refresh(&self, attribute: Attribute, value: &str) -> Result<bool, DriverGone> {
        let value = value.to_string();
        self.apply(move |table, now| table.refresh(now, attribute, &value))
            .await
    }

    /// Runs `f` on the table inside the driver task and returns its result: the general form
    /// behind operator commands (`reg_add`, `reg_remove`, `reg_active`, …).
    pub async fn apply<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut RegistrationTable, Instant) -> T + Send + 'static,
    ) -> Result<T, DriverGone> {
        let (tx, rx) = oneshot::channel();
        let job = Box::new(move |table: &mut RegistrationTable, now: Instant| {
            let _ = tx.send(f(table, now));
        });
        self.commands
            .send(Command::Apply(job))
            .await
            .map_err(|_| DriverGone)?;
        rx.await.map_err(|_| DriverGone)
    }

    pub async fn status_counts(
        &self,
    ) -> Result<std::collections::BTreeMap<&'static str, usize>, DriverGone> {
        self.apply(|table, _| table.status_counts()).await
    }

    pub async fn stats(&self) -> Result<DriverStats, DriverGone> {
        self.ask(Command::Stats).await
    }

    /// Stops the task. With `unregister_within`, first un-registers every binding and waits up
    /// to that long for the answers. Returns how many registrations were left unfinished.
    pub async fn shutdown(&self, unregister_within: Option<Duration>) -> Result<usize, DriverGone> {
        self.ask(|reply| Command::Shutdown(unregister_within, reply))
            .await
    }
}

/// Settings for [`Driver::start`].
#[derive(Clone)]
pub struct DriverConfig {
    pub core: CoreConfig,
    pub pacing: PacingConfig,
    pub timers: Timers,
    /// `host:port` for the Via header and connections' return address.
    pub via_sent_by: String,
    /// Name servers for RFC 3263 lookups; empty: the system's (`/etc/resolv.conf`).
    pub dns_servers: Vec<SocketAddr>,
    /// TLS client settings; `None` when TLS could not be set up (TLS rows then fail clearly).
    pub tls_client: Option<Arc<rustls::ClientConfig>>,
    /// Keep-alive period per flow (CRLF on connections, OPTIONS over UDP); `None`: off.
    pub keepalive: Option<Duration>,
    /// RFC 5626 outbound and RFC 3327 Path: `Supported: path, outbound`, `reg-id` and
    /// `+sip.instance` on the Contact.
    pub outbound: bool,
    pub inbound: InboundConfig,
    /// Connections peers may hold (`max_connections` already fitted to the descriptor limit).
    pub limits: ConnectionLimits,
}

/// Capacity of the driver's event channel (extra UDP sockets, accepted connections, DNS
/// answers).
pub const EVENT_QUEUE: usize = 1024;

/// The tasks [`Driver::start`] spawns. Every one is essential: if one ends while the daemon
/// runs, the gateway no longer does its job (see [`crate::daemon`]).
pub struct DriverTasks {
    /// The driver itself; it ends only after a shutdown.
    pub driver: tokio::task::JoinHandle<()>,
    /// The SIP listeners, by name: the TCP and TLS accept loops and the readers of the extra
    /// UDP sockets (the main UDP socket is read by the driver task). They never end on their
    /// own.
    pub listeners: Vec<(String, tokio::task::JoinHandle<()>)>,
}

/// The sockets the driver serves.
pub struct Sockets {
    /// The main UDP socket (default for rows without a `socket`).
    pub udp: UdpTransport,
    /// More UDP sockets rows can name in their `socket` column.
    pub extra_udp: Vec<UdpTransport>,
    /// TCP on the main port, for registrars and proxies that connect to us.
    pub tcp: Option<TcpListener>,
    /// TLS listener with its certificate, when configured.
    pub tls: Option<(TcpListener, Arc<rustls::ServerConfig>)>,
}

/// Things other tasks hand to the driver.
enum Event {
    /// A datagram on one of the extra UDP sockets.
    Datagram {
        local: SocketAddr,
        from: SocketAddr,
        bytes: Vec<u8>,
    },
    /// A peer connected to us, with its place under the connection limits.
    Accepted {
        stream: Box<dyn Io>,
        peer: SocketAddr,
        transport: crate::registration::Transport,
        permit: Permit,
    },
    Resolved {
        destination: Destination,
        result: Result<Resolved, String>,
    },
}

/// The sending side of the driver's bounded event channel, with the rule for each kind of
/// sender: nothing may block the driver task, datagrams are dropped (and counted) when the
/// queue is full, and accepted connections wait.
#[derive(Clone)]
struct EventSender {
    tx: mpsc::Sender<Event>,
    datagrams_dropped: Arc<AtomicU64>,
}

impl EventSender {
    /// For events that must not be lost and are few by construction (one DNS answer per
    /// destination being looked up): queued now if there is room, else by a task that waits
    /// for room, so the caller — often the driver itself — never blocks.
    fn send(&self, event: Event) -> Result<(), DriverGone> {
        match self.tx.try_send(event) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(event)) => {
                let tx = self.tx.clone();
                tokio::spawn(async move {
                    let _ = tx.send(event).await;
                });
                Ok(())
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(DriverGone),
        }
    }

    /// A datagram from an extra socket: dropped and counted when the queue is full (the UDP
    /// sender retransmits, and the count shows the driver could not keep up).
    fn offer(&self, event: Event) -> Result<(), DriverGone> {
        match self.tx.try_send(event) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.datagrams_dropped.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(DriverGone),
        }
    }

    /// Waits for room (accept loops: a waiting loop accepts nothing, and the kernel's backlog
    /// pushes back).
    async fn send_waiting(&self, event: Event) -> Result<(), DriverGone> {
        self.tx.send(event).await.map_err(|_| DriverGone)
    }
}

/// An RFC 3263 answer (or the reason there is none) and until when it may be reused.
type CachedTargets = (
    Result<Arc<[crate::transport::resolve::Target]>, String>,
    Instant,
);

/// A connection's byte stream, whichever its transport.
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

pub struct Driver {
    table: RegistrationTable,
    transactions: ClientTransactions,
    pacer: Pacer,
    config: DriverConfig,
    udp: Arc<UdpTransport>,
    extra_udp: HashMap<SocketAddr, Arc<UdpTransport>>,
    streams: Streams,
    stream_rx: mpsc::Receiver<StreamEvent>,
    events_tx: EventSender,
    events_rx: mpsc::Receiver<Event>,
    admission: Admission,
    resolver: Option<Arc<SipResolver>>,
    queue: send_queue::SendQueue,
    /// RFC 3263 answers by destination, until their TTL ends.
    resolved: HashMap<Destination, CachedTargets>,
    /// Requests waiting for a lookup in progress.
    resolving: HashMap<Destination, Vec<Queued>>,
    /// The request in flight per registration, with the targets left to try.
    attempts: HashMap<RegKey, Attempt>,
    /// Where each registration's binding was accepted (the target it stays on).
    bound: HashMap<RegKey, Bound>,
    /// Registrations whose binding lives on each connection.
    flow_members: HashMap<FlowId, HashSet<RegKey>>,
    /// Re-registrations after a lost connection, delayed when connections keep dropping.
    rebind_at: BTreeSet<(Instant, RegKey)>,
    drops: HashMap<RegKey, (u32, Instant)>,
    keepalive: outbound::KeepAlive,
    commands: mpsc::Receiver<Command>,
    stats: DriverStats,
    encode_buf: Vec<u8>,
    shutdown: Option<(Instant, Reply<usize>)>,
    last_shutdown_report: Option<Instant>,
    /// The inbound relay: its key, whom it trusts, strangers' answer budget, its counters.
    relay: crate::relay::Relay,
}

impl Driver {
    /// Takes bound sockets, spawns the task and its listeners, returns its handle and tasks.
    pub fn start(config: DriverConfig, sockets: Sockets) -> (DriverHandle, DriverTasks) {
        let mut config = config;
        // The core's guard must never end a request its transaction is still working on.
        let guard = &mut config.core.policy.in_flight_guard;
        *guard = (*guard).max(config.timers.timeout() * 2);
        let (commands_tx, commands_rx) = mpsc::channel(256);
        let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE);
        let events_tx = EventSender {
            tx: events_tx,
            datagrams_dropped: Arc::default(),
        };
        let (stream_tx, stream_rx) = mpsc::channel(crate::transport::stream::EVENT_QUEUE);
        let admission = Admission::new(
            config.limits.max_connections,
            config.limits.max_connections_per_ip,
        );
        let flow_settings = FlowSettings {
            idle_timeout: config.limits.idle_timeout,
            write_queue: crate::transport::stream::MIN_WRITE_QUEUE
                .max(config.pacing.max_in_flight.saturating_mul(2)),
        };
        let now = Instant::now();
        // One OS-seeded generator seeds the others (the table's, the transactions', the
        // keep-alives'), so each owner draws from its own stream without locks.
        let mut rng = StdRng::from_os_rng();
        let local_addr = sockets.udp.local_addr();
        let resolver = if config.dns_servers.is_empty() {
            match SipResolver::from_system() {
                Ok(resolver) => Some(Arc::new(resolver)),
                Err(err) => {
                    warn!("no system DNS resolver ({err}); rows naming hosts cannot register");
                    None
                }
            }
        } else {
            Some(Arc::new(SipResolver::with_nameservers(&config.dns_servers)))
        };
        let mut extra_udp = HashMap::new();
        let mut listeners = Vec::new();
        for socket in sockets.extra_udp {
            let socket = Arc::new(socket);
            let local = socket.local_addr();
            extra_udp.insert(local, socket.clone());
            let task = tokio::spawn(read_udp(socket, events_tx.clone()));
            listeners.push((format!("UDP reader {local}"), task));
        }
        if let Some(listener) = sockets.tcp {
            let name = listener_name("TCP", &listener);
            let task = tokio::spawn(accept(listener, None, events_tx.clone(), admission.clone()));
            listeners.push((name, task));
        }
        if let Some((listener, tls)) = sockets.tls {
            let name = listener_name("TLS", &listener);
            let acceptor = tokio_rustls::TlsAcceptor::from(tls);
            let task = tokio::spawn(accept(
                listener,
                Some(acceptor),
                events_tx.clone(),
                admission.clone(),
            ));
            listeners.push((name, task));
        }
        let keepalive = outbound::KeepAlive::new(config.keepalive, StdRng::from_rng(&mut rng));
        let relay = inbound::new_relay(config.inbound.clone(), config.via_sent_by.clone());
        let driver = Driver {
            table: RegistrationTable::new(config.core.clone(), StdRng::from_rng(&mut rng)),
            transactions: ClientTransactions::new(config.timers, rng),
            pacer: Pacer::new(config.pacing, now),
            streams: Streams::new(stream_tx, config.tls_client.clone(), flow_settings),
            config,
            udp: Arc::new(sockets.udp),
            extra_udp,
            stream_rx,
            events_tx,
            events_rx,
            admission,
            resolver,
            queue: send_queue::SendQueue::default(),
            resolved: HashMap::new(),
            resolving: HashMap::new(),
            attempts: HashMap::new(),
            bound: HashMap::new(),
            flow_members: HashMap::new(),
            rebind_at: BTreeSet::new(),
            drops: HashMap::new(),
            keepalive,
            commands: commands_rx,
            stats: DriverStats::default(),
            encode_buf: Vec::with_capacity(1024),
            shutdown: None,
            last_shutdown_report: None,
            relay,
        };
        let handle = DriverHandle {
            commands: commands_tx,
            clock: WallClock::now(),
            local_addr,
        };
        let driver = tokio::spawn(driver.run());
        (handle, DriverTasks { driver, listeners })
    }

    async fn run(mut self) {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        loop {
            let now = Instant::now();
            self.step(now);
            if self.finish_shutdown_if_done(now) {
                return;
            }
            let deadline = self.next_wakeup(now);
            let udp = self.udp.clone();
            tokio::select! {
                received = udp.recv(&mut buf) => {
                    match received {
                        Ok((len, from)) => {
                            let now = Instant::now();
                            self.handle_datagram(now, &buf[..len], from, None);
                            // Drain what else is already queued before doing timer work.
                            for _ in 0..256 {
                                match udp.try_recv(&mut buf) {
                                    Ok((len, from)) => self.handle_datagram(now, &buf[..len], from, None),
                                    Err(_) => break,
                                }
                            }
                        }
                        Err(err) => {
                            // ICMP errors surface here on some systems; they are not fatal.
                            debug!("SIP socket receive error: {err}");
                        }
                    }
                }
                Some(event) = self.stream_rx.recv() => {
                    self.handle_stream_event(Instant::now(), event);
                }
                Some(event) = self.events_rx.recv() => {
                    self.handle_event(Instant::now(), event);
                }
                command = self.commands.recv() => {
                    match command {
                        Some(command) => self.handle_command(Instant::now(), command),
                        None => {
                            // Every handle is gone: nobody can ask for anything any more.
                            info!("driver handles dropped; stopping");
                            return;
                        }
                    }
                }
                _ = sleep_until_opt(deadline) => {}
            }
        }
    }

    /// Runs due timers and sends whatever became sendable.
    fn step(&mut self, now: Instant) {
        if let Some(due) = self.table.next_deadline().filter(|due| *due <= now) {
            // The earliest due timer is the latest one: one observation per step.
            self.stats.timer_lateness.observe(now - due);
        }
        self.table.handle_timeout(now);
        self.handle_transaction_timers(now);
        self.handle_rebinds(now);
        self.handle_keepalives(now);
        self.collect_actions();
        self.flush(now);
    }

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

    fn next_wakeup(&self, now: Instant) -> Option<Instant> {
        let mut deadline = self.table.next_deadline();
        let mut consider = |at: Option<Instant>| {
            if let Some(at) = at {
                deadline = Some(deadline.map_or(at, |d: Instant| d.min(at)));
            }
        };
        consider(self.transactions.next_deadline());
        consider(self.rebind_at.first().map(|(at, _)| *at));
        consider(self.keepalive.next_deadline());
        if !self.queue.is_empty() {
            consider(self.pacer.next_token_at(now));
        }
        if let Some((at, _)) = &self.shutdown {
            consider(Some(*at));
        }
        deadline
    }

    fn handle_event(&mut self, now: Instant, event: Event) {
        match event {
            Event::Datagram { local, from, bytes } => {
                self.handle_datagram(now, &bytes, from, Some(local));
            }
            Event::Accepted {
                stream,
                peer,
                transport,
                permit,
            } => {
                self.stats.connections_accepted += 1;
                let flow = self.streams.adopt(stream, peer, transport, permit);
                self.relay.trust_mut().flow_accepted(flow);
                debug!(flow, %peer, "accepted a {} connection", transport.via_token());
            }
            Event::Resolved {
                destination,
                result,
            } => self.handle_resolved(now, destination, result),
        }
    }

    fn handle_command(&mut self, now: Instant, command: Command) {
        match command {
            Command::Stats(reply) => {
                let mut stats = self.stats.clone();
                stats.inbound = self.relay.stats().clone();
                stats.core = self.table.counters();
                stats.queued = self.queue.len();
                stats.in_flight = self.transactions.pending();
                (stats.pacing_window, stats.pacing_backoffs) = self.pacer.window();
                stats.leaving = self.table.leaving_count();
                stats.transactions = self.transactions.stats();
                stats.connections = self.streams.len();
                let admitted = self.admission.counts();
                stats.inbound_connections = admitted.open;
                stats.connections_refused = admitted.refused_total;
                stats.connections_refused_per_ip = admitted.refused_per_source;
                stats.accept_errors = admitted.accept_errors;
                let closed = self.streams.counts();
                stats.connections_idle_closed = closed.idle_closed;
                stats.connections_unframeable = closed.unframeable;
                stats.write_queue_overflows = closed.write_queue_overflows;
                stats.write_timeouts = closed.write_timeouts;
                stats.datagrams_dropped = self.events_tx.datagrams_dropped.load(Ordering::Relaxed);
                let _ = reply.send(stats);
            }
            Command::Shutdown(Some(timeout), reply) => {
                let pending = self.table.shutdown(now);
                info!(pending, "shutting down: un-registering bindings");
                self.shutdown = Some((now + timeout, reply));
            }
            Command::Apply(job) => job(&mut self.table, now),
            Command::Shutdown(None, reply) => {
                info!("shutting down; bindings are left to expire at the registrars");
                self.shutdown = Some((now, reply));
            }
        }
        self.collect_actions();
    }

    /// During shutdown: stop once every registration has finished, or at the deadline.
    fn finish_shutdown_if_done(&mut self, now: Instant) -> bool {
        let Some((deadline, _)) = &self.shutdown else {
            return false;
        };
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
        if remaining == 0 || now >= *deadline {
            if remaining > 0 {
                warn!(
                    remaining,
                    "shutdown deadline reached with un-REGISTERs unanswered"
                );
            }
            if let Some((_, reply)) = self.shutdown.take() {
                let _ = reply.send(remaining);
            }
            return true;
        }
        false
    }
}

/// Feeds an extra UDP socket's datagrams to the driver; drops (and counts) them when the
/// driver is behind.
async fn read_udp(socket: Arc<UdpTransport>, events: EventSender) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let local = socket.local_addr();
    loop {
        match socket.recv(&mut buf).await {
            Ok((len, from)) => {
                let event = Event::Datagram {
                    local,
                    from,
                    bytes: buf[..len].to_vec(),
                };
                if events.offer(event).is_err() {
                    return;
                }
            }
            Err(err) => trace!(%local, "receive error: {err}"),
        }
    }
}

fn listener_name(transport: &str, listener: &TcpListener) -> String {
    match listener.local_addr() {
        Ok(addr) => format!("{transport} listener {addr}"),
        Err(_) => format!("{transport} listener"),
    }
}

/// How long a peer has for its TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Accepts connections (and does the TLS handshake) off the driver task. A connection gets a
/// place under the limits before anything else (a handshake in progress holds one too), or is
/// closed at once.
async fn accept(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    events: EventSender,
    admission: Admission,
) {
    use crate::registration::Transport;
    let mut backoff = AcceptBackoff::new();
    loop {
        let (tcp, peer) = backoff
            .accept(
                "SIP listener (counted in accept_errors)",
                || listener.accept(),
                || admission.accept_failed(),
            )
            .await;
        let permit = match admission.admit(peer.ip()) {
            Ok(permit) => permit,
            Err(refusal) => {
                debug!(%peer, "connection closed at once: {refusal}");
                drop(tcp);
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        match &tls {
            None => {
                let event = Event::Accepted {
                    stream: Box::new(tcp),
                    peer,
                    transport: Transport::Tcp,
                    permit,
                };
                if events.send_waiting(event).await.is_err() {
                    return;
                }
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                let events = events.clone();
                tokio::spawn(async move {
                    let handshake =
                        tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await;
                    match handshake {
                        Ok(Ok(stream)) => {
                            let _ = events
                                .send_waiting(Event::Accepted {
                                    stream: Box::new(stream),
                                    peer,
                                    transport: Transport::Tls,
                                    permit,
                                })
                                .await;
                        }
                        Ok(Err(err)) => debug!(%peer, "TLS handshake failed: {err}"),
                        Err(_) => debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        }
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

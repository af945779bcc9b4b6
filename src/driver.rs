//! The async driver: one task that owns the registration table, the client transactions, the
//! pacer and the SIP socket, and turns the core's actions into datagrams and the network's
//! datagrams into core inputs.
//!
//! Everything that touches registration state happens on this one task, so there are no locks
//! around the table; RPC handlers talk to it through [`DriverHandle`] commands and get copies
//! (snapshots) back. The loop sleeps until the earliest of: a datagram, a command, a core timer,
//! a transaction timer, or the pacer's next token.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, trace, warn};

use crate::registration::record::Record;
use crate::registration::{
    Action, Attribute, CoreConfig, Destination, RegKey, RegistrationTable, ReloadSummary, Snapshot,
};
use crate::sip::message::{Response, is_response};
use crate::sip::register::RegisterRequest;
use crate::transaction::{
    ClientTransactions, Matched, Owner, TimerEvent, Timers, TransactionStats,
};
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

/// Upper bounds (ms) of the transaction latency histogram buckets; the last bucket is +Inf.
pub const LATENCY_BOUNDS_MS: [u64; 11] = [5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000];

/// Time from first sending a request to its final response, cumulative like Prometheus wants.
#[derive(Clone, Debug, Default, serde::Serialize)]
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
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct DriverStats {
    pub datagrams_received: u64,
    pub malformed_dropped: u64,
    pub unmatched_responses: u64,
    pub requests_ignored: u64,
    pub registers_sent: u64,
    pub send_errors: u64,
    pub resolve_failures: u64,
    pub queued: usize,
    pub in_flight: usize,
    pub leaving: usize,
    pub transactions: TransactionStats,
    /// Final responses by status code.
    pub responses: std::collections::BTreeMap<u16, u64>,
    pub latency: LatencyHistogram,
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

    pub async fn snapshots(&self) -> Result<Vec<Snapshot>, DriverGone> {
        self.apply(|table, _| table.snapshots()).await
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
#[derive(Clone, Debug)]
pub struct DriverConfig {
    pub core: CoreConfig,
    pub pacing: PacingConfig,
    pub timers: Timers,
    /// `host:port` for the Via header.
    pub via_sent_by: String,
}

/// A REGISTER waiting for the pacer (or for its destination to be resolved).
struct Queued {
    key: RegKey,
    destination: Destination,
    request: RegisterRequest,
}

/// How long a resolved host name is reused.
const RESOLVE_TTL: Duration = Duration::from_secs(300);

pub struct Driver {
    table: RegistrationTable,
    transactions: ClientTransactions,
    pacer: Pacer,
    transport: Arc<UdpTransport>,
    via_sent_by: String,
    queue: VecDeque<Queued>,
    resolved: HashMap<(String, u16), (Result<SocketAddr, String>, Instant)>,
    resolving: HashMap<(String, u16), Vec<Queued>>,
    resolve_tx: mpsc::UnboundedSender<((String, u16), Result<SocketAddr, String>)>,
    resolve_rx: mpsc::UnboundedReceiver<((String, u16), Result<SocketAddr, String>)>,
    commands: mpsc::Receiver<Command>,
    stats: DriverStats,
    encode_buf: Vec<u8>,
    shutdown: Option<(Instant, Reply<usize>)>,
    last_shutdown_report: Option<Instant>,
}

impl Driver {
    /// Binds nothing itself: takes a bound transport, spawns the task, returns its handle.
    pub fn start(
        config: DriverConfig,
        transport: UdpTransport,
    ) -> (DriverHandle, tokio::task::JoinHandle<()>) {
        let (commands_tx, commands_rx) = mpsc::channel(256);
        let (resolve_tx, resolve_rx) = mpsc::unbounded_channel();
        let now = Instant::now();
        let mut rng = fastrand::Rng::new();
        let salt = rng.u64(..);
        let local_addr = transport.local_addr();
        let driver = Driver {
            table: RegistrationTable::new(config.core, rng),
            transactions: ClientTransactions::new(config.timers, salt),
            pacer: Pacer::new(config.pacing, now),
            transport: Arc::new(transport),
            via_sent_by: config.via_sent_by,
            queue: VecDeque::new(),
            resolved: HashMap::new(),
            resolving: HashMap::new(),
            resolve_tx,
            resolve_rx,
            commands: commands_rx,
            stats: DriverStats::default(),
            encode_buf: Vec::with_capacity(1024),
            shutdown: None,
            last_shutdown_report: None,
        };
        let handle = DriverHandle {
            commands: commands_tx,
            clock: WallClock::now(),
            local_addr,
        };
        let task = tokio::spawn(driver.run());
        (handle, task)
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
            let transport = self.transport.clone();
            tokio::select! {
                received = transport.recv(&mut buf) => {
                    match received {
                        Ok((len, from)) => {
                            let now = Instant::now();
                            self.handle_datagram(now, &buf[..len], from);
                            // Drain what else is already queued before doing timer work.
                            for _ in 0..256 {
                                match transport.try_recv(&mut buf) {
                                    Ok((len, from)) => self.handle_datagram(now, &buf[..len], from),
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
                Some((host, result)) = self.resolve_rx.recv() => {
                    self.handle_resolved(Instant::now(), host, result);
                }
                _ = sleep_until_opt(deadline) => {}
            }
        }
    }

    /// Runs due timers and sends whatever became sendable.
    fn step(&mut self, now: Instant) {
        self.table.handle_timeout(now);
        let mut events = Vec::new();
        self.transactions.handle_timeout(now, &mut events);
        for event in events {
            match event {
                TimerEvent::Retransmit { destination, bytes } => {
                    trace!(%destination, "retransmitting");
                    if self.transport.try_send(&bytes, destination).is_err() {
                        self.stats.send_errors += 1;
                    }
                }
                TimerEvent::TimedOut(owner) => {
                    self.table.handle_transaction_failure(
                        now,
                        owner.key,
                        owner.cseq,
                        "no response (transaction timeout)",
                    );
                }
            }
        }
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
                } => self.queue.push_back(Queued {
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
        if !self.queue.is_empty() {
            consider(self.pacer.next_token_at(now));
        }
        if let Some((at, _)) = &self.shutdown {
            consider(Some(*at));
        }
        deadline
    }

    /// Sends queued requests as far as pacing allows.
    fn flush(&mut self, now: Instant) {
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

    fn send_now(&mut self, now: Instant, queued: Queued) {
        let port = queued.destination.port_or_default();
        let target = match queued.destination.host.parse::<IpAddr>() {
            Ok(ip) => SocketAddr::new(ip, port),
            Err(_) => {
                let name = (queued.destination.host.clone(), port);
                match self.resolved.get(&name) {
                    Some((Ok(addr), at)) if now.duration_since(*at) < RESOLVE_TTL => *addr,
                    Some((Err(why), at)) if now.duration_since(*at) < Duration::from_secs(30) => {
                        let why = why.clone();
                        self.table.handle_transaction_failure(
                            now,
                            queued.key,
                            queued.request.cseq,
                            &why,
                        );
                        self.collect_actions();
                        return;
                    }
                    _ => {
                        self.start_resolving(name, queued);
                        return;
                    }
                }
            }
        };
        let branch = self.transactions.next_branch();
        self.encode_buf.clear();
        queued.request.encode(
            queued.destination.transport.via_token(),
            &self.via_sent_by,
            &branch,
            &mut self.encode_buf,
        );
        let bytes: Arc<[u8]> = Arc::from(&self.encode_buf[..]);
        if let Err(err) = self.transport.try_send(&bytes, target) {
            // Left to the transaction: timer E retransmits, timer F reports the failure.
            debug!(%target, "send failed: {err}");
            self.stats.send_errors += 1;
        }
        self.stats.registers_sent += 1;
        self.transactions.start(
            now,
            branch,
            Owner {
                key: queued.key,
                cseq: queued.request.cseq,
            },
            target,
            bytes,
            false,
        );
    }

    fn start_resolving(&mut self, name: (String, u16), queued: Queued) {
        if let Some(waiting) = self.resolving.get_mut(&name) {
            waiting.push(queued);
            return;
        }
        self.resolving.insert(name.clone(), vec![queued]);
        let tx = self.resolve_tx.clone();
        tokio::spawn(async move {
            let host = name.0.clone();
            let lookup = tokio::time::timeout(
                Duration::from_secs(10),
                tokio::net::lookup_host((host.as_str(), name.1)),
            )
            .await;
            let result = match lookup {
                Ok(Ok(mut addrs)) => addrs
                    .next()
                    .ok_or_else(|| format!("DNS: no address for {}", name.0)),
                Ok(Err(err)) => Err(format!("DNS: cannot resolve {}: {err}", name.0)),
                Err(_) => Err(format!("DNS: lookup of {} timed out", name.0)),
            };
            let _ = tx.send((name, result));
        });
    }

    fn handle_resolved(
        &mut self,
        now: Instant,
        name: (String, u16),
        result: Result<SocketAddr, String>,
    ) {
        if let Err(why) = &result {
            warn!("{why}");
            self.stats.resolve_failures += 1;
        }
        self.resolved.insert(name.clone(), (result, now));
        for queued in self.resolving.remove(&name).unwrap_or_default() {
            // Back to the front of the queue: they were admitted by the pacer already once,
            // but sending them again through it keeps the accounting simple.
            self.queue.push_front(queued);
        }
    }

    fn handle_datagram(&mut self, now: Instant, bytes: &[u8], from: SocketAddr) {
        self.stats.datagrams_received += 1;
        if bytes.iter().all(|b| b.is_ascii_whitespace()) {
            // RFC 5626 keep-alive (CRLF) or padding.
            return;
        }
        if !is_response(bytes) {
            self.stats.requests_ignored += 1;
            trace!(%from, "ignoring a request on the registration socket");
            return;
        }
        let response = match Response::parse(bytes) {
            Ok(response) => response,
            Err(err) => {
                self.stats.malformed_dropped += 1;
                debug!(%from, "dropping malformed datagram: {err}");
                return;
            }
        };
        let Some(branch) = response.branch.as_deref() else {
            self.stats.malformed_dropped += 1;
            return;
        };
        match self
            .transactions
            .handle_response(now, branch, response.code)
        {
            Matched::Deliver(owner, latency) => {
                *self.stats.responses.entry(response.code).or_default() += 1;
                self.stats.latency.observe(latency);
                self.table.handle_response(now, owner.key, &response);
                self.collect_actions();
            }
            Matched::Absorbed => {}
            Matched::Unknown => {
                self.stats.unmatched_responses += 1;
                trace!(%from, branch, "response matches no transaction");
            }
        }
    }

    fn handle_command(&mut self, now: Instant, command: Command) {
        match command {
            Command::Stats(reply) => {
                let mut stats = self.stats.clone();
                stats.core = self.table.counters();
                stats.queued = self.queue.len();
                stats.in_flight = self.transactions.pending();
                stats.leaving = self.table.leaving_count();
                stats.transactions = self.transactions.stats();
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

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

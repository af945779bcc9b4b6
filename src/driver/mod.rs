//! The I/O shell around the [`crate::engine::Engine`]: one task that owns the sockets, the
//! connections, the DNS resolver and the command channel, feeds everything that arrives to the
//! engine, carries out what the engine asks (send these bytes, look this name up, close that
//! connection), and sleeps until the engine's next deadline. No protocol decision is made here.
//!
//! The registration state lives in the engine on this one task, so there are no locks around
//! the table; the RPC server and the daemon talk to it through [`DriverHandle`]'s typed commands
//! and get copies (snapshots) back.
//!
//! * `dispatch` — the receive/dispatch loop and the engine's outputs.
//! * [`handle`] — [`DriverHandle`] and its commands.
//! * `listen` — extra UDP sockets' readers, TCP/TLS accept loops, the event channel.
//! * [`inbound`] — every message that arrives goes to the [`crate::relay::Relay`] first (requests
//!   for our contacts, responses to what it relayed); what is not the relay's goes to the engine.

mod dispatch;
pub mod handle;
mod inbound;
mod listen;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tracing::warn;

pub use crate::engine::{LATENCY_BOUNDS_MS, LatencyHistogram};
pub use handle::{DriverGone, DriverHandle, SNAPSHOT_SLICE};
pub use inbound::{InboundConfig, InboundPolicy, InboundStats, IpPrefix};

use crate::engine::transaction::Timers;
use crate::engine::transaction::TransactionStats;
use crate::engine::{Engine, EngineConfig, EngineStats};
use crate::registration::CoreConfig;
use crate::transport::admission::{Admission, ConnectionLimits};
use crate::transport::resolve::SipResolver;
use crate::transport::stream::{FlowSettings, StreamEvent, Streams};
use crate::transport::{PacingConfig, UdpTransport};
use handle::Command;
use listen::{EventSender, Input};

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
    /// Clustered: rows started in the previous owner's dialog after taking their shard.
    pub rows_continued: u64,
    /// Clustered: rows stopped because their shard's deadline passed without a renewal (each
    /// a row this node stopped sending for before another node could take it).
    pub rows_fenced: u64,
}

impl DriverStats {
    /// Adds the engine's counters to the shell's own.
    fn merge(&mut self, engine: EngineStats) {
        self.malformed_dropped += engine.malformed_dropped;
        self.unmatched_responses = engine.unmatched_responses;
        self.responses_unknown_branch = engine.responses_unknown_branch;
        self.responses_wrong_ids = engine.responses_wrong_ids;
        self.responses_wrong_source = engine.responses_wrong_source;
        self.registers_sent = engine.registers_sent;
        self.resolve_failures = engine.resolve_failures;
        self.failovers = engine.failovers;
        self.connections_opened = engine.connections_opened;
        self.connections_closed = engine.connections_closed;
        self.rebinds = engine.rebinds;
        self.keepalives_sent = engine.keepalives_sent;
        self.keepalive_failures = engine.keepalive_failures;
        self.queued = engine.queued;
        self.in_flight = engine.in_flight;
        self.pacing_window = engine.pacing_window;
        self.pacing_backoffs = engine.pacing_backoffs;
        self.leaving = engine.leaving;
        self.transactions = engine.transactions;
        self.responses = engine.responses;
        self.latency = engine.latency;
        self.timer_lateness = engine.timer_lateness;
        self.core = engine.core;
        self.rows_continued = engine.rows_continued;
        self.rows_fenced = engine.rows_fenced;
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
    /// Clustered with this many shards: the engine runs only the shards the cluster task
    /// hands it. `None`: every row.
    pub cluster_shards: Option<u32>,
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

pub struct Driver {
    /// Everything the gateway decides.
    engine: Engine,
    udp: Arc<UdpTransport>,
    extra_udp: HashMap<SocketAddr, Arc<UdpTransport>>,
    streams: Streams,
    stream_rx: mpsc::Receiver<StreamEvent>,
    events_tx: EventSender,
    events_rx: mpsc::Receiver<Input>,
    admission: Admission,
    resolver: Option<Arc<SipResolver>>,
    commands: mpsc::Receiver<Command>,
    /// What the shell counts itself (messages received, send errors, accepted connections,
    /// the relay's outcomes); the engine's counters are added when asked.
    stats: DriverStats,
    /// Who to tell how the shutdown ended.
    shutdown_reply: Option<handle::Reply<usize>>,
    /// The inbound relay: its key, whom it trusts, strangers' answer budget, its counters.
    relay: crate::relay::Relay,
}

impl Driver {
    /// Takes bound sockets, spawns the task and its listeners, returns its handle and tasks.
    pub fn start(config: DriverConfig, sockets: Sockets) -> (DriverHandle, DriverTasks) {
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
            let task = tokio::spawn(listen::read_udp(socket, events_tx.clone()));
            listeners.push((format!("UDP reader {local}"), task));
        }
        if let Some(listener) = sockets.tcp {
            let name = listen::listener_name("TCP", &listener);
            let task = tokio::spawn(listen::accept(
                listener,
                None,
                events_tx.clone(),
                admission.clone(),
            ));
            listeners.push((name, task));
        }
        if let Some((listener, tls)) = sockets.tls {
            let name = listen::listener_name("TLS", &listener);
            let acceptor = tokio_rustls::TlsAcceptor::from(tls);
            let task = tokio::spawn(listen::accept(
                listener,
                Some(acceptor),
                events_tx.clone(),
                admission.clone(),
            ));
            listeners.push((name, task));
        }
        let engine = Engine::new(
            EngineConfig {
                core: config.core.clone(),
                pacing: config.pacing,
                timers: config.timers,
                via_sent_by: config.via_sent_by.clone(),
                keepalive: config.keepalive,
                outbound: config.outbound,
                extra_udp: extra_udp.keys().copied().collect(),
                cluster_shards: config.cluster_shards,
            },
            now,
            // The branches it writes keep strangers from answering our requests: OS-seeded.
            StdRng::from_os_rng(),
        );
        let relay = inbound::new_relay(config.inbound.clone(), config.via_sent_by.clone());
        let driver = Driver {
            engine,
            streams: Streams::new(stream_tx, config.tls_client.clone(), flow_settings),
            udp: Arc::new(sockets.udp),
            extra_udp,
            stream_rx,
            events_tx,
            events_rx,
            admission,
            resolver,
            commands: commands_rx,
            stats: DriverStats::default(),
            shutdown_reply: None,
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
}

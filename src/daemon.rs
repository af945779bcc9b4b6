//! Wiring: configuration → store → SIP socket → driver → first load → RPC server, and the orderly
//! way back down (un-REGISTER within a bound, then exit).
//!
//! [`Daemon`] is what `uacregd` runs and also what integration tests start in-process, so tests
//! exercise exactly the production wiring over real sockets.
//!
//! Some tasks the daemon cannot live without: the driver (it owns every registration), the SIP
//! listeners (the TCP and TLS accept loops, the readers of extra UDP sockets) and the JSON-RPC
//! servers (HTTP and Unix socket: the only way to steer it). If one of them ends while the
//! daemon runs — a panic, most likely — a process that stays up would answer "driver not
//! running" or stop accepting connections while its supervisor thinks all is well. So
//! [`Daemon::run_until_signal`] watches them, logs which one ended and why, and returns
//! [`DaemonError::TaskEnded`], which `uacregd` turns into a non-zero exit for systemd to
//! restart. The metrics endpoint and the database tasks (periodic reload, NOTIFY, status
//! writer) are not essential: registrations go on without them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tracing::{error, info, warn};

use crate::backoff::Backoff;
use crate::config::Config;
use crate::driver::{Driver, DriverConfig, InboundConfig, Sockets};
use crate::gateway::{Gateway, ReloadReport};
use crate::registration::CoreConfig;
use crate::registration::Transport;
use crate::registration::record::LocalSocket;
use crate::store::{DbUrl, Engine, RowDefaults, Store, StoreError};
use crate::transport::UdpTransport;

#[derive(Debug, Error)]
pub enum DaemonError {
    #[error("cannot open the database {url}: {source}")]
    Store { url: String, source: StoreError },
    #[error("cannot bind the SIP socket {addr}: {source}")]
    SipBind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start the JSON-RPC server on {addr}: {source}")]
    RpcBind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot serve JSON-RPC on the Unix socket {path}: {source}")]
    RpcSocket {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot start the metrics endpoint on {addr}: {source}")]
    MetricsBind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("start-up task failed: {0}")]
    Task(String),
    #[error("cannot start the cluster node: {0}")]
    Cluster(crate::cluster_node::ClusterTaskError),
    #[error("TLS: {0}")]
    Tls(crate::transport::tls::TlsError),
    #[error("essential task {task} ended: {reason}")]
    TaskEnded { task: String, reason: String },
}

pub struct Daemon {
    gateway: Arc<Gateway>,
    sip_addr: SocketAddr,
    rpc_addr: SocketAddr,
    rpc: jsonrpsee::server::ServerHandle,
    metrics: Option<(SocketAddr, tokio::task::JoinHandle<()>)>,
    rpc_unix: Option<jsonrpsee::server::ServerHandle>,
    /// `[web] listen`: the console and JSON-RPC on an address of their own.
    web: Option<(SocketAddr, jsonrpsee::server::ServerHandle)>,
    /// None once it has ended.
    driver_task: Option<tokio::task::JoinHandle<()>>,
    /// The SIP listeners, by name.
    listeners: Vec<(String, tokio::task::JoinHandle<()>)>,
    /// Retry of a failed first load, periodic reload, NOTIFY listener, status writer: all
    /// aborted by [`Daemon::stop`].
    background: Vec<tokio::task::JoinHandle<()>>,
    config: Config,
    /// The cluster task, when `[cluster]` is on.
    cluster: Option<crate::cluster_node::ClusterHandle>,
    /// Outcome of the load done at start-up (None when the database could not be read then).
    pub initial_load: Option<ReloadReport>,
    /// SIGTERM and SIGHUP, caught from the first moment of [`Daemon::start`]: a stop asked for
    /// while the rows load is kept for [`Daemon::run_until_signal`] instead of killing the
    /// process with the default action half-way through start-up.
    signals: Signals,
}

/// The signals the daemon acts on, registered once.
struct Signals {
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    hup: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn register() -> Signals {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let term = signal(SignalKind::terminate())
                .inspect_err(|err| error!("cannot catch SIGTERM: {err}"))
                .ok();
            let hup = signal(SignalKind::hangup())
                .inspect_err(|err| error!("cannot catch SIGHUP: {err}"))
                .ok();
            Signals { term, hup }
        }
        #[cfg(not(unix))]
        Signals {}
    }
}

impl Daemon {
    pub async fn start(config: Config) -> Result<Daemon, DaemonError> {
        let signals = Signals::register();
        #[cfg(feature = "fault-injection")]
        warn!("built with fault-injection: uacreg.debug_panic can crash this daemon (tests only)");
        let limits = connection_limits(&config);
        let store = open_store(
            &config.db_url,
            config.database.migrate,
            config.database.timeouts(),
        )
        .await?;

        let (transport, tcp) = bind_main(&config).await?;
        let sip_addr = transport.local_addr();
        let advertised = config.advertised_with_port(sip_addr);
        if config.sip_listen.ip().is_unspecified() && config.advertised_addr.starts_with("127.") {
            warn!(
                "advertised_addr is {advertised}: set advertised_addr to this host's public address \
                 unless every registrar is on this host"
            );
        }
        let (sockets, served) = bind_sockets(&config, transport, tcp, &advertised).await?;
        // TLS towards registrars: a broken CA file is a configuration error; missing system
        // roots only matter to TLS rows, which then fail with the reason.
        let tls_client = match crate::transport::tls::client_config(config.tls.ca_file.as_deref()) {
            Ok(tls) => Some(tls),
            Err(err) if config.tls.ca_file.is_some() => return Err(DaemonError::Tls(err)),
            Err(err) => {
                warn!("TLS rows will fail: {err}");
                None
            }
        };
        let driver_config = DriverConfig {
            core: CoreConfig {
                policy: config.retry_policy(),
                user_agent: config.user_agent.as_str().into(),
            },
            pacing: config.pacing.transport_pacing(),
            timers: config.sip.timers(),
            via_sent_by: advertised.clone(),
            dns_servers: config.sip.dns_servers.clone(),
            tls_client,
            keepalive: config.sip.keepalive,
            outbound: config.sip.outbound,
            inbound: InboundConfig {
                proxy: config.inbound.proxy,
                user_agent: config.user_agent.clone(),
                policy: config.inbound.policy(),
            },
            limits,
            cluster_shards: config.cluster.enabled.then_some(config.cluster.shards),
        };
        let (driver, tasks) = Driver::start(driver_config, sockets);

        let defaults = RowDefaults {
            contact_addr: advertised.clone(),
            sockets: served,
        };
        let db_url = store.url().clone();
        let cluster = if config.cluster.enabled {
            let params = crate::cluster_node::ClusterParams {
                settings: config.cluster.clone(),
                node_id: config.cluster.node_id(sip_addr.port()),
                sip_addr: advertised.clone(),
                db_url: config.db_url.clone(),
                defaults: defaults.clone(),
            };
            let handle = crate::cluster_node::start(params, driver.clone())
                .await
                .map_err(DaemonError::Cluster)?;
            info!(node_id = %handle.status().node_id, "cluster node started");
            Some(handle)
        } else {
            None
        };
        let gateway = Arc::new({
            let gateway = Gateway::new(driver, store, defaults, config.show_secrets)
                .with_max_removed_share(config.database.max_removed_share);
            match &cluster {
                Some(cluster) => gateway.with_cluster(cluster.status_board()),
                None => gateway,
            }
        });

        let mut background = Vec::new();
        let initial_load = match gateway.reload().await {
            Ok(report) => Some(report),
            Err(err) => {
                error!("initial load failed: {err}; retrying in the background");
                background.push(tokio::spawn(retry_initial_load(gateway.clone())));
                None
            }
        };

        let (rpc_addr, rpc) = crate::rpc::serve(
            config.rpc_listen,
            gateway.clone(),
            config.rpc_token.clone(),
            config.web.enabled,
        )
        .await
        .map_err(|source| DaemonError::RpcBind {
            addr: config.rpc_listen,
            source,
        })?;
        // The console's own listener, if it has one: the same methods and token.
        let web = match config.web.listen.filter(|_| config.web.enabled) {
            Some(addr) => Some(
                crate::rpc::serve(addr, gateway.clone(), config.rpc_token.clone(), true)
                    .await
                    .map_err(|source| DaemonError::RpcBind { addr, source })?,
            ),
            None => None,
        };
        if config.web.enabled {
            let sampler = gateway.clone();
            background.push(tokio::spawn(async move { sampler.sample_forever().await }));
        }
        let rpc_unix = match &config.rpc_socket {
            #[cfg(unix)]
            Some(path) => Some(
                crate::rpc::server::serve_unix(path, gateway.clone(), config.rpc_token.clone())
                    .await
                    .map_err(|source| DaemonError::RpcSocket {
                        path: path.display().to_string(),
                        source,
                    })?,
            ),
            _ => None,
        };
        if let Some(Some(addr)) = config.ctl_socket.as_deref().map(crate::rpc::ctl::tcp_addr) {
            let addr = addr.map_err(|why| DaemonError::RpcSocket {
                path: config.ctl_socket.clone().unwrap_or_default(),
                source: std::io::Error::other(why),
            })?;
            let (_, task) = crate::rpc::ctl::serve_tcp(addr, gateway.clone())
                .await
                .map_err(|source| DaemonError::RpcSocket {
                    path: addr.to_string(),
                    source,
                })?;
            background.push(task);
        }
        #[cfg(unix)]
        if let Some(setting) = config
            .ctl_socket
            .as_ref()
            .filter(|s| crate::rpc::ctl::tcp_addr(s).is_none())
        {
            let path = crate::rpc::ctl::socket_path(setting);
            let task = crate::rpc::ctl::serve(&path, gateway.clone())
                .await
                .map_err(|source| DaemonError::RpcSocket {
                    path: path.display().to_string(),
                    source,
                })?;
            background.push(task);
        }
        #[cfg(unix)]
        if let Some(path) = &config.rpc_fifo {
            let task =
                crate::rpc::serve_fifo(path, config.rpc_fifo_reply_dir.clone(), gateway.clone())
                    .map_err(|source| DaemonError::RpcSocket {
                        path: path.display().to_string(),
                        source,
                    })?;
            background.push(task);
        }
        let metrics = match config.metrics_listen {
            Some(addr) => Some(
                crate::metrics::serve(addr, gateway.clone())
                    .await
                    .map_err(|source| DaemonError::MetricsBind { addr, source })?,
            ),
            None => None,
        };
        background.extend(spawn_database_tasks(&config, &gateway, &db_url));
        info!(%sip_addr, %rpc_addr, advertised = %advertised, db = %db_url, "uacregd running");
        Ok(Daemon {
            gateway,
            sip_addr,
            rpc_addr,
            rpc,
            metrics,
            rpc_unix,
            web,
            driver_task: Some(tasks.driver),
            listeners: tasks.listeners,
            background,
            config,
            cluster,
            initial_load,
            signals,
        })
    }

    pub fn sip_addr(&self) -> SocketAddr {
        self.sip_addr
    }

    pub fn rpc_addr(&self) -> SocketAddr {
        self.rpc_addr
    }

    /// Where `[web] listen` serves the console, when it is set.
    pub fn web_addr(&self) -> Option<SocketAddr> {
        self.web.as_ref().map(|(addr, _)| *addr)
    }

    /// `http://addr/RPC` for clients.
    pub fn rpc_url(&self) -> String {
        format!("http://{}/RPC", self.rpc_addr)
    }

    /// Address of the Prometheus endpoint, if enabled.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().map(|(addr, _)| *addr)
    }

    pub fn gateway(&self) -> &Arc<Gateway> {
        &self.gateway
    }

    /// Stops: RPC first (no new commands), then un-REGISTER (if configured) within the bound.
    pub async fn stop(self) {
        // Un-REGISTER first while the RPC still answers, so `uacregctl shutdown` (or anyone
        // polling uacreg.status) can follow the progress; then close the listeners.
        let mut within = self
            .config
            .unregister_on_shutdown
            .then_some(self.config.shutdown_timeout);
        for task in &self.background {
            task.abort();
        }
        let mut handed_over = false;
        // A cluster node with live peers hands its shards over instead: the bindings live on
        // (the others continue them); only the last node, or an explicit request, un-REGISTERs.
        if let Some(cluster) = &self.cluster
            && !self.gateway.shutdown().wants_unregister()
            && cluster.hand_over().await
        {
            within = None;
            handed_over = true;
        }
        if self.gateway.shutdown().wants_unregister() {
            within = Some(self.config.shutdown_timeout);
        }
        match self.gateway.driver.shutdown(within).await {
            Ok(0) => info!("stopped"),
            Ok(left) => warn!(left, "stopped with registrations unfinished"),
            Err(_) => warn!("driver already stopped"),
        }
        if let Some(cluster) = self.cluster {
            cluster.finish().await;
        }
        // A node that handed its rows over leaves their status to the new owners; otherwise its
        // own rows (all of them, for a single node) say `stopped`.
        if self.config.database.status_table && !handed_over {
            let now = self.gateway.driver.clock().unix(std::time::Instant::now());
            let node_id = self.gateway.cluster_status().map(|status| status.node_id);
            let marked = tokio::time::timeout(
                Duration::from_secs(5),
                self.gateway.with_store(move |store| {
                    store.mark_status_stopped(
                        now,
                        crate::status_export::scope_of(node_id.as_deref()),
                    )
                }),
            )
            .await;
            if !matches!(marked, Ok(Ok(Ok(())))) {
                warn!("could not mark uacreg_status rows as stopped");
            }
        }
        let _ = self.rpc.stop();
        if let Some(unix) = &self.rpc_unix {
            let _ = unix.stop();
        }
        if let Some((_, web)) = &self.web {
            let _ = web.stop();
        }
        if let Some((_, task)) = &self.metrics {
            task.abort();
        }
        for (_, task) in &self.listeners {
            task.abort();
        }
        if let Some(task) = self.driver_task {
            let _ = task.await;
        }
    }

    /// Runs until SIGINT/SIGTERM or `uacreg.shutdown` (SIGHUP reloads the table), then stops.
    /// If an essential task ends first, logs it, stops what is left and returns
    /// [`DaemonError::TaskEnded`].
    pub async fn run_until_signal(mut self) -> Result<(), DaemonError> {
        let ended = {
            let essential = watch_essential(
                self.driver_task.as_mut(),
                &mut self.listeners,
                self.rpc.clone(),
                self.rpc_unix.clone(),
            );
            tokio::pin!(essential);
            wait_for_signal(&self.gateway, &mut self.signals, essential).await
        };
        let Some(ended) = ended else {
            self.stop().await;
            return Ok(());
        };
        error!(
            task = %ended.task,
            "essential task ended: {}; stopping with an error so that the supervisor restarts uacregd",
            ended.reason
        );
        if ended.driver {
            // Its handle has completed; there is nothing left to wait for.
            self.driver_task = None;
        }
        self.stop().await;
        Err(DaemonError::TaskEnded {
            task: ended.task,
            reason: ended.reason,
        })
    }
}

/// An essential task that ended while the daemon ran.
struct Ended {
    task: String,
    reason: String,
    /// It was the driver task.
    driver: bool,
}

/// Waits for SIGINT/SIGTERM, `uacreg.shutdown` or the end of an essential task (returned);
/// SIGHUP reloads the table meanwhile.
async fn wait_for_signal(
    gateway: &Gateway,
    signals: &mut Signals,
    mut essential: std::pin::Pin<&mut impl std::future::Future<Output = Ended>>,
) -> Option<Ended> {
    #[cfg(unix)]
    {
        /// A signal that could not be caught never arrives.
        async fn next(signal: &mut Option<tokio::signal::unix::Signal>) {
            match signal {
                Some(signal) => {
                    signal.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        loop {
            tokio::select! {
                ended = &mut essential => return Some(ended),
                _ = tokio::signal::ctrl_c() => return None,
                _ = next(&mut signals.term) => return None,
                _ = gateway.shutdown_requested() => {
                    info!("shutdown requested over RPC");
                    return None;
                }
                _ = next(&mut signals.hup) => {
                    info!("SIGHUP: reloading");
                    let _ = gateway.reload().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = signals;
        tokio::select! {
            ended = &mut essential => Some(ended),
            _ = tokio::signal::ctrl_c() => None,
            _ = gateway.shutdown_requested() => None,
        }
    }
}

/// Resolves when the first essential task ends, saying which and why.
async fn watch_essential(
    driver: Option<&mut tokio::task::JoinHandle<()>>,
    listeners: &mut [(String, tokio::task::JoinHandle<()>)],
    rpc: jsonrpsee::server::ServerHandle,
    rpc_unix: Option<jsonrpsee::server::ServerHandle>,
) -> Ended {
    use futures_util::FutureExt;
    type Watch<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = Ended> + Send + 'a>>;
    let mut watches: Vec<Watch<'_>> = Vec::new();
    if let Some(driver) = driver {
        watches.push(Box::pin(driver.map(|result| Ended {
            task: "driver".into(),
            reason: why_ended(result),
            driver: true,
        })));
    }
    for (name, task) in listeners.iter_mut() {
        let name = name.clone();
        watches.push(Box::pin(task.map(move |result| Ended {
            task: name,
            reason: why_ended(result),
            driver: false,
        })));
    }
    watches.push(Box::pin(rpc.stopped().map(|()| Ended {
        task: "JSON-RPC server".into(),
        reason: "stopped".into(),
        driver: false,
    })));
    if let Some(unix) = rpc_unix {
        watches.push(Box::pin(unix.stopped().map(|()| Ended {
            task: "JSON-RPC Unix socket server".into(),
            reason: "stopped".into(),
            driver: false,
        })));
    }
    futures_util::future::select_all(watches).await.0
}

/// A finished task's outcome in words: its panic message, or that it returned.
fn why_ended(result: Result<(), tokio::task::JoinError>) -> String {
    match result {
        Ok(()) => "returned".into(),
        Err(err) if err.is_panic() => {
            let payload = err.into_panic();
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a non-text payload".into());
            format!("panicked: {message}")
        }
        Err(err) => format!("cancelled: {err}"),
    }
}

/// The configured connection limits, with the total cap lowered if it does not fit the
/// open-files limit (raised to the hard limit first).
fn connection_limits(config: &Config) -> crate::transport::admission::ConnectionLimits {
    use crate::descriptors::{RESERVED, fitting_connection_cap, raise_open_files_limit};
    let mut limits = config.limits;
    match raise_open_files_limit() {
        Ok(files) => {
            info!(
                open_files = files.soft,
                was = files.before,
                hard = files.hard,
                "open-files limit"
            );
            if let Some(err) = &files.raise_failed {
                warn!(
                    "cannot raise the open-files limit from {} to {}: {err}",
                    files.before, files.hard
                );
            }
            let fitting = fitting_connection_cap(limits.max_connections, files.soft);
            if fitting < limits.max_connections {
                warn!(
                    configured = limits.max_connections,
                    using = fitting,
                    open_files = files.soft,
                    "limits.max_connections does not fit the open-files limit with {RESERVED} \
                     descriptors kept for our own connections, DNS and the database; \
                     raise LimitNOFILE or lower limits.max_connections"
                );
                limits.max_connections = fitting;
            }
        }
        Err(err) => warn!(
            "cannot read the open-files limit ({err}); limits.max_connections is used as configured"
        ),
    }
    limits
}

/// Opens the store. A malformed URL is an error at once; an unreachable or failing database is
/// waited for — logged on every attempt, 1, 2, 4 … 30 s apart (jittered) — because the daemon
/// is useless without its rows and a supervisor restarting it in a loop helps nobody.
async fn open_store(
    url: &str,
    migrate: bool,
    timeouts: crate::store::ServerTimeouts,
) -> Result<Store, DaemonError> {
    let mut store = Store::unconnected(url).map_err(|source| DaemonError::Store {
        url: crate::store::redact(url),
        source,
    })?;
    store.set_migrate(migrate);
    store.set_timeouts(timeouts);
    let shown = store.url().to_string();
    let mut wait = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
    let mut attempt = 1u32;
    loop {
        let (back, result) = tokio::task::spawn_blocking(move || {
            let result = store.connect();
            (store, result)
        })
        .await
        .map_err(|err| DaemonError::Task(err.to_string()))?;
        store = back;
        match result {
            Ok(()) => {
                if attempt > 1 {
                    info!(db = %shown, attempts = attempt, "database reachable; starting");
                }
                if let Some(layout) = store.layout() {
                    if !layout.has_contact_user {
                        info!(
                            kamailio_table_version = ?layout.kamailio_version,
                            "uacreg table without contact_user (Kamailio version 5): used as it is"
                        );
                    }
                }
                return Ok(store);
            }
            Err(source) if !source.is_transient() => {
                return Err(DaemonError::Store { url: shown, source });
            }
            Err(err) => {
                let delay = wait.next_delay();
                error!(
                    db = %shown,
                    attempt,
                    "database not available at start-up: {err}; trying again in {:.1}s \
                     (registrations start once it answers)",
                    delay.as_secs_f64()
                );
                tokio::time::sleep(delay).await;
                attempt += 1;
            }
        }
    }
}

/// Loads the table again every 10 s (jittered) until it works, after the first load failed.
async fn retry_initial_load(gateway: Arc<Gateway>) {
    let mut wait = Backoff::new(INITIAL_LOAD_RETRY, INITIAL_LOAD_RETRY).with_factor(1);
    loop {
        tokio::time::sleep(wait.next_delay()).await;
        if gateway
            .reload_because(crate::gateway::ReloadCause::Automatic)
            .await
            .is_ok()
        {
            return;
        }
    }
}

/// Spacing of the retries of a failed first load.
const INITIAL_LOAD_RETRY: Duration = Duration::from_secs(10);

/// Starts the tasks that follow the table and write status back, as configured.
fn spawn_database_tasks(
    config: &Config,
    gateway: &Arc<Gateway>,
    url: &DbUrl,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    if let Some(interval) = config.database.reload_interval {
        info!(every_secs = interval.as_secs(), "periodic reload on");
        tasks.push(tokio::spawn(crate::table_watch::periodic(
            gateway.clone(),
            interval,
        )));
    }
    if config.database.notify && url.engine == Engine::Postgres {
        tasks.push(tokio::spawn(crate::table_watch::listen(
            gateway.clone(),
            url.clone(),
            config.database.timeouts(),
        )));
    }
    if config.database.status_table {
        info!(
            every_secs = config.database.status_interval.as_secs(),
            "writing registration states to uacreg_status"
        );
        tasks.push(tokio::spawn(crate::status_export::run(
            gateway.clone(),
            config.database.status_interval,
        )));
    }
    tasks
}

/// Binds the main UDP socket and, on the same port, the TCP listener. With port 0 the system
/// picks a UDP port whose TCP twin may be taken; then another port is tried.
async fn bind_main(
    config: &Config,
) -> Result<(UdpTransport, Option<tokio::net::TcpListener>), DaemonError> {
    let mut attempts = 0;
    loop {
        attempts += 1;
        let udp = UdpTransport::bind(config.sip_listen)
            .await
            .map_err(|source| DaemonError::SipBind {
                addr: config.sip_listen,
                source,
            })?;
        if !config.sip.tcp {
            return Ok((udp, None));
        }
        let addr = udp.local_addr();
        match tokio::net::TcpListener::bind(addr).await {
            Ok(listener) => return Ok((udp, Some(listener))),
            Err(err)
                if config.sip_listen.port() == 0
                    && err.kind() == std::io::ErrorKind::AddrInUse
                    && attempts < 20 => {}
            Err(source) => return Err(DaemonError::SipBind { addr, source }),
        }
    }
}

/// Binds the extra UDP sockets, the TCP and TLS listeners, and lists every socket a row's
/// `socket` column may name.
async fn bind_sockets(
    config: &Config,
    udp: UdpTransport,
    tcp: Option<tokio::net::TcpListener>,
    advertised: &str,
) -> Result<(Sockets, Vec<LocalSocket>), DaemonError> {
    let sip_addr = udp.local_addr();
    let mut served = vec![LocalSocket {
        transport: Transport::Udp,
        addr: sip_addr,
    }];
    if let Ok(addr) = advertised.parse::<SocketAddr>() {
        served.push(LocalSocket {
            transport: Transport::Udp,
            addr,
        });
    }
    if tcp.is_some() {
        let more: Vec<LocalSocket> = served
            .iter()
            .map(|s| LocalSocket {
                transport: Transport::Tcp,
                addr: s.addr,
            })
            .collect();
        served.extend(more);
    }
    let tls = match (
        &config.tls.listen,
        &config.tls.cert_file,
        &config.tls.key_file,
    ) {
        (Some(addr), Some(cert), Some(key)) => {
            let server =
                crate::transport::tls::server_config(cert, key).map_err(DaemonError::Tls)?;
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| DaemonError::SipBind {
                    addr: *addr,
                    source,
                })?;
            served.push(LocalSocket {
                transport: Transport::Tls,
                addr: listener.local_addr().unwrap_or(*addr),
            });
            Some((listener, server))
        }
        _ => None,
    };
    let mut extra_udp = Vec::new();
    for socket in &config.sip.sockets {
        if socket.transport == Transport::Udp {
            let bound =
                UdpTransport::bind(socket.addr)
                    .await
                    .map_err(|source| DaemonError::SipBind {
                        addr: socket.addr,
                        source,
                    })?;
            served.push(LocalSocket {
                transport: Transport::Udp,
                addr: bound.local_addr(),
            });
            extra_udp.push(bound);
        } else {
            served.push(*socket);
        }
    }
    Ok((
        Sockets {
            udp,
            extra_udp,
            tcp,
            tls,
        },
        served,
    ))
}

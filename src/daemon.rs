//! Wiring: configuration → store → SIP socket → driver → first load → RPC server, and the orderly
//! way back down (un-REGISTER within a bound, then exit).
//!
//! [`Daemon`] is what `uacregd` runs and also what integration tests start in-process, so tests
//! exercise exactly the production wiring over real sockets.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tracing::{error, info, warn};

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
    #[error("TLS: {0}")]
    Tls(String),
}

pub struct Daemon {
    gateway: Arc<Gateway>,
    sip_addr: SocketAddr,
    rpc_addr: SocketAddr,
    rpc: jsonrpsee::server::ServerHandle,
    metrics: Option<(SocketAddr, tokio::task::JoinHandle<()>)>,
    rpc_unix: Option<jsonrpsee::server::ServerHandle>,
    driver_task: tokio::task::JoinHandle<()>,
    /// Periodic reload, NOTIFY listener, status writer.
    background: Vec<tokio::task::JoinHandle<()>>,
    config: Config,
    /// Outcome of the load done at start-up (None when the database could not be read then).
    pub initial_load: Option<ReloadReport>,
}

impl Daemon {
    pub async fn start(config: Config) -> Result<Daemon, DaemonError> {
        let store = open_store(
            &config.db_url,
            config.database.migrate,
            config.database.timeouts,
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
        let tls_client = match crate::transport::tls::client_config(config.tls_ca_file.as_deref()) {
            Ok(tls) => Some(tls),
            Err(err) if config.tls_ca_file.is_some() => return Err(DaemonError::Tls(err)),
            Err(err) => {
                warn!("TLS rows will fail: {err}");
                None
            }
        };
        let driver_config = DriverConfig {
            core: CoreConfig {
                policy: config.retry.clone(),
                user_agent: config.user_agent.clone(),
            },
            pacing: config.pacing,
            timers: config.timers,
            via_sent_by: advertised.clone(),
            dns_servers: config.dns_servers.clone(),
            tls_client,
            keepalive: config.keepalive,
            outbound: config.outbound,
            inbound: InboundConfig {
                proxy: config.inbound_proxy,
                user_agent: config.user_agent.clone(),
            },
        };
        let (driver, driver_task) = Driver::start(driver_config, sockets);

        let defaults = RowDefaults {
            contact_addr: advertised.clone(),
            sockets: served,
        };
        let db_url = store.url().clone();
        let gateway = Arc::new(
            Gateway::new(driver, store, defaults, config.show_secrets)
                .with_max_removed_share(config.database.max_removed_share),
        );

        let initial_load = match gateway.reload().await {
            Ok(report) => Some(report),
            Err(err) => {
                error!("initial load failed: {err}; retrying in the background");
                let gateway = gateway.clone();
                tokio::spawn(async move {
                    loop {
                        tokio::time::sleep(Duration::from_secs(10)).await;
                        if gateway
                            .reload_because(crate::gateway::ReloadCause::Automatic)
                            .await
                            .is_ok()
                        {
                            break;
                        }
                    }
                });
                None
            }
        };

        let (rpc_addr, rpc) =
            crate::rpc::serve(config.rpc_listen, gateway.clone(), config.rpc_token.clone())
                .await
                .map_err(|source| DaemonError::RpcBind {
                    addr: config.rpc_listen,
                    source,
                })?;
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
        let metrics = match config.metrics_listen {
            Some(addr) => Some(
                crate::metrics::serve(addr, gateway.clone())
                    .await
                    .map_err(|source| DaemonError::MetricsBind { addr, source })?,
            ),
            None => None,
        };
        let background = spawn_database_tasks(&config, &gateway, &db_url);
        info!(%sip_addr, %rpc_addr, advertised = %advertised, db = %db_url, "uacregd running");
        Ok(Daemon {
            gateway,
            sip_addr,
            rpc_addr,
            rpc,
            metrics,
            rpc_unix,
            driver_task,
            background,
            config,
            initial_load,
        })
    }

    pub fn sip_addr(&self) -> SocketAddr {
        self.sip_addr
    }

    pub fn rpc_addr(&self) -> SocketAddr {
        self.rpc_addr
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
        let within = self
            .config
            .unregister_on_shutdown
            .then_some(self.config.shutdown_timeout);
        for task in &self.background {
            task.abort();
        }
        match self.gateway.driver.shutdown(within).await {
            Ok(0) => info!("stopped"),
            Ok(left) => warn!(left, "stopped with registrations unfinished"),
            Err(_) => warn!("driver already stopped"),
        }
        if self.config.database.status_table {
            let now = self.gateway.driver.clock().unix(std::time::Instant::now());
            let marked = tokio::time::timeout(
                Duration::from_secs(5),
                self.gateway
                    .with_store(move |store| store.mark_status_stopped(now)),
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
        if let Some((_, task)) = &self.metrics {
            task.abort();
        }
        let _ = self.driver_task.await;
    }

    /// Runs until SIGINT/SIGTERM or `uacreg.shutdown`; SIGHUP reloads the table.
    pub async fn run_until_signal(self) {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let (Ok(mut term), Ok(mut hup)) = (
                signal(SignalKind::terminate()),
                signal(SignalKind::hangup()),
            ) else {
                error!("cannot install signal handlers");
                return self.stop().await;
            };
            loop {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => break,
                    _ = term.recv() => break,
                    _ = self.gateway.shutdown_requested() => {
                        info!("shutdown requested over RPC");
                        break;
                    }
                    _ = hup.recv() => {
                        info!("SIGHUP: reloading");
                        let _ = self.gateway.reload().await;
                    }
                }
            }
        }
        #[cfg(not(unix))]
        {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = self.gateway.shutdown_requested() => {}
            }
        }
        self.stop().await;
    }
}

/// Opens the store. A malformed URL is an error at once; an unreachable or failing database is
/// waited for — logged on every attempt, 1, 2, 4 … 30 s apart — because the daemon is useless
/// without its rows and a supervisor restarting it in a loop helps nobody.
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
    let mut wait = Duration::from_secs(1);
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
                error!(
                    db = %shown,
                    attempt,
                    "database not available at start-up: {err}; trying again in {}s \
                     (registrations start once it answers)",
                    wait.as_secs()
                );
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(30));
                attempt += 1;
            }
        }
    }
}

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
            config.database.timeouts,
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
        if !config.sip_tcp {
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
        &config.tls_listen,
        &config.tls_cert_file,
        &config.tls_key_file,
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
    for socket in &config.extra_sockets {
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

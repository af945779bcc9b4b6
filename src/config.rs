//! Daemon configuration: a TOML file, overridden by command-line flags, with defaults that let
//! `uacregd` run with no configuration at all (SQLite file `./uacreg.db`).
//!
//! Default ports stay clear of a SIP proxy on the same host: SIP on 5062 (the proxy keeps 5060
//! and 5061), JSON-RPC on 127.0.0.1:5063 (loopback only, since it can show and change
//! registrations).

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use thiserror::Error;

use crate::driver::{InboundPolicy, IpPrefix};
use crate::registration::RetryPolicy;
use crate::registration::record::LocalSocket;
use crate::transaction::Timers;
use crate::transport::PacingConfig;
use crate::transport::admission::ConnectionLimits;

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {source}")]
    Parse {
        path: String,
        source: toml::de::Error,
    },
    #[error("invalid {field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
}

/// The effective configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// `sqlite://path`, a bare path, `postgres://…`, `mysql://…`.
    pub db_url: String,
    /// Address the SIP socket binds to.
    pub sip_listen: SocketAddr,
    /// `host:port` put in Via and, for rows with an empty `contact_addr`, in the Contact.
    pub advertised_addr: String,
    /// Address of the JSON-RPC HTTP server.
    pub rpc_listen: SocketAddr,
    /// Address of the Prometheus endpoint (None: off).
    pub metrics_listen: Option<SocketAddr>,
    pub user_agent: String,
    /// Show `auth_password` / `auth_ha1` in RPC answers (off: they are masked).
    pub show_secrets: bool,
    /// Shared secret every RPC request must carry (None: no check; RPC is on loopback).
    pub rpc_token: Option<String>,
    /// Also serve JSON-RPC on this Unix socket (mode 0660).
    pub rpc_socket: Option<std::path::PathBuf>,
    pub pacing: PacingConfig,
    pub retry: RetryPolicy,
    /// RFC 3261 T1/T2/T4 (timer F, the no-answer timeout, is 64 × T1).
    pub timers: Timers,
    /// Send Expires: 0 for every binding on shutdown.
    pub unregister_on_shutdown: bool,
    /// How long shutdown waits for those un-REGISTERs.
    pub shutdown_timeout: Duration,
    /// Accept TCP connections on the SIP port (registrars and proxies calling our contacts).
    pub sip_tcp: bool,
    /// More local sockets rows may name in `socket` (`udp:10.0.0.5:5060` is bound;
    /// `tcp:10.0.0.5:5060` makes connections leave from that address).
    pub extra_sockets: Vec<LocalSocket>,
    /// Name servers for RFC 3263 lookups (empty: the system's).
    pub dns_servers: Vec<SocketAddr>,
    /// CRLF / OPTIONS keep-alive period per flow (None: off).
    pub keepalive: Option<Duration>,
    /// RFC 5626 outbound / RFC 3327 path in REGISTERs.
    pub outbound: bool,
    /// CA certificates registrars' TLS certificates must chain to (None: the system's).
    pub tls_ca_file: Option<std::path::PathBuf>,
    /// Certificate and key for a TLS listener, and where it listens.
    pub tls_cert_file: Option<std::path::PathBuf>,
    pub tls_key_file: Option<std::path::PathBuf>,
    pub tls_listen: Option<SocketAddr>,
    /// Where requests for registered contacts are relayed (None: not relayed).
    pub inbound_proxy: Option<SocketAddr>,
    /// Whom the relay trusts, and what untrusted senders get.
    pub inbound_policy: InboundPolicy,
    /// Picking up table changes and writing status back.
    pub database: DatabaseConfig,
    /// `[limits]`: connections peers may open to the SIP port, and for how long.
    pub limits: ConnectionLimits,
}

/// `[database]`: how the daemon follows the table without being told, and what it writes back.
#[derive(Clone, Debug, PartialEq)]
pub struct DatabaseConfig {
    /// Diff reload every so often (None: only on `uac.reg_reload`, SIGHUP or NOTIFY).
    pub reload_interval: Option<Duration>,
    /// PostgreSQL: LISTEN for the `uacreg_changed` notifications the migrations' trigger sends.
    pub notify: bool,
    /// Write each registration's state to the `uacreg_status` table.
    pub status_table: bool,
    /// How often changed status rows are written (one transaction per round).
    pub status_interval: Duration,
    /// Create and upgrade uacreg's tables (and the NOTIFY trigger) on connecting. Off for a
    /// database user that may only read: the tables must then exist already.
    pub migrate: bool,
    /// A reload that would remove more than this share of the running rows is refused unless
    /// forced (`uac.reg_reload force`): a truncated table, a wrong schema or user must not
    /// un-REGISTER every trunk at once. 1.0 lets any reload through.
    pub max_removed_share: f64,
    /// Statement and lock timeouts of PostgreSQL and MySQL/MariaDB sessions.
    pub timeouts: crate::store::ServerTimeouts,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            reload_interval: None,
            notify: true,
            status_table: false,
            status_interval: Duration::from_secs(5),
            migrate: true,
            max_removed_share: 0.5,
            timeouts: crate::store::ServerTimeouts::default(),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            db_url: "sqlite://uacreg.db".into(),
            sip_listen: "0.0.0.0:5062".parse().expect("valid literal"),
            advertised_addr: String::new(),
            rpc_listen: "127.0.0.1:5063".parse().expect("valid literal"),
            metrics_listen: Some("127.0.0.1:5064".parse().expect("valid literal")),
            user_agent: format!("uacreg/{}", env!("CARGO_PKG_VERSION")),
            show_secrets: false,
            rpc_token: None,
            rpc_socket: None,
            pacing: PacingConfig::default(),
            retry: RetryPolicy::default(),
            timers: Timers::default(),
            unregister_on_shutdown: true,
            shutdown_timeout: Duration::from_secs(5),
            sip_tcp: true,
            extra_sockets: Vec::new(),
            dns_servers: Vec::new(),
            keepalive: None,
            outbound: false,
            tls_ca_file: None,
            tls_cert_file: None,
            tls_key_file: None,
            tls_listen: None,
            inbound_proxy: None,
            inbound_policy: InboundPolicy::default(),
            database: DatabaseConfig::default(),
            limits: ConnectionLimits::default(),
        }
    }
}

/// The TOML file's shape; every key is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub db_url: Option<String>,
    pub sip_listen: Option<String>,
    pub advertised_addr: Option<String>,
    pub rpc_listen: Option<String>,
    /// `ip:port`, or "" to switch the metrics endpoint off.
    pub metrics_listen: Option<String>,
    pub user_agent: Option<String>,
    pub show_secrets: Option<bool>,
    pub rpc_token: Option<String>,
    pub rpc_socket: Option<String>,
    pub unregister_on_shutdown: Option<bool>,
    pub shutdown_timeout_secs: Option<u64>,
    pub pacing: Option<PacingFile>,
    pub retry: Option<RetryFile>,
    pub sip: Option<SipFile>,
    pub tls: Option<TlsFile>,
    pub inbound: Option<InboundFile>,
    pub database: Option<DatabaseFile>,
    pub limits: Option<LimitsFile>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsFile {
    /// Accepted TCP+TLS connections open at once (default 1000; lowered at start to fit the
    /// open-files limit).
    pub max_connections: Option<usize>,
    /// Accepted connections from one IPv4 address or IPv6 /64 (default 16).
    pub max_connections_per_ip: Option<usize>,
    /// Seconds an accepted connection may go without a whole message or CRLF ping received or
    /// a message of ours sent (default 300).
    pub idle_timeout_secs: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseFile {
    /// Seconds between automatic diff reloads (0, the default: off).
    pub reload_interval_secs: Option<u64>,
    /// PostgreSQL: reload when the table's trigger sends NOTIFY uacreg_changed (default true).
    pub notify: Option<bool>,
    /// Write registration states to the uacreg_status table (default false).
    pub status_table: Option<bool>,
    /// Seconds between status writes (default 5; at least 1).
    pub status_interval_secs: Option<u64>,
    /// Create/upgrade tables on start (default true).
    pub migrate: Option<bool>,
    /// Largest share of the running rows a reload may remove without `force` (default 0.5).
    pub max_removed_share: Option<f64>,
    /// PostgreSQL/MySQL: longest a statement may run, in seconds (default 60).
    pub statement_timeout_secs: Option<u64>,
    /// PostgreSQL/MySQL: longest a statement may wait for a lock, in seconds (default 10).
    pub lock_timeout_secs: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFile {
    /// PEM file of the CAs registrars' certificates must chain to (default: system roots).
    pub ca_file: Option<String>,
    /// PEM certificate chain and key for accepting TLS connections.
    pub cert_file: Option<String>,
    pub key_file: Option<String>,
    /// `ip:port` of the TLS listener (needs cert_file and key_file).
    pub listen: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InboundFile {
    /// `ip:port` of the SIP proxy that gets requests for registered contacts (UDP).
    pub proxy: Option<String>,
    /// Networks trusted besides the rows' registrars: `["203.0.113.0/24", "2001:db8::1"]`.
    pub trusted: Option<Vec<String>>,
    /// Untrusted senders' requests for registered contacts: "drop" (default) or "strip".
    pub untrusted: Option<String>,
    /// What untrusted senders get for users we do not relay for: "404" (default) or "silent".
    pub unknown_user: Option<String>,
    /// Answers per second to untrusted senders, all together (default 20; 0: none).
    pub reply_rate: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SipFile {
    /// RFC 3261 T1 in milliseconds (default 500; no-answer timeout = 64 × T1).
    pub t1_ms: Option<u64>,
    /// RFC 3261 T2 in milliseconds (default 4000).
    pub t2_ms: Option<u64>,
    /// Accept TCP on the SIP port (default true).
    pub tcp: Option<bool>,
    /// More local sockets rows may name: `["udp:10.0.0.5:5060", "tcp:10.0.0.5:5060"]`.
    pub sockets: Option<Vec<String>>,
    /// Name servers (`ip:port`) for NAPTR/SRV/A lookups; default: /etc/resolv.conf.
    pub dns_servers: Option<Vec<String>>,
    /// Keep-alive period in seconds (0: off).
    pub keepalive_secs: Option<u64>,
    /// Send `Supported: path, outbound` with reg-id and +sip.instance (RFC 5626).
    pub outbound: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PacingFile {
    pub rate: Option<u32>,
    pub burst: Option<u32>,
    pub max_in_flight: Option<usize>,
    /// Largest fraction of the rows whose refresh may be scheduled in one second (0: off;
    /// default 0.002). Refreshes of rows that registered together are moved earlier, never
    /// before half their grant, until no second carries more.
    pub max_refresh_share: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryFile {
    pub first_retry_secs: Option<u64>,
    pub max_retry_secs: Option<u64>,
    /// Consecutive temporary failures before giving up; 0 = never give up.
    pub max_retries: Option<u32>,
    /// Retry interval after 403; 0 = a 403 is permanent.
    pub forbidden_retry_secs: Option<u64>,
    /// Retry interval after other 3xx/4xx; 0 = permanent.
    pub fatal_retry_secs: Option<u64>,
    /// Retry interval after wrong credentials; 0 = permanent.
    pub auth_failure_retry_secs: Option<u64>,
    /// First REGISTERs of new rows are spread over this many seconds (plus reg_delay).
    pub start_spread_secs: Option<u64>,
    /// Longest expiry believed from a registrar, and the largest Min-Expires (423) followed
    /// (default 86,400). A grant is also never taken as longer than what was asked for.
    pub max_expires: Option<u32>,
}

/// `0` switches a retry interval off.
fn interval(secs: u64) -> Option<Duration> {
    (secs > 0).then(|| Duration::from_secs(secs))
}

/// Flag values that override the file (None = not given).
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub db_url: Option<String>,
    pub sip_listen: Option<String>,
    pub advertised_addr: Option<String>,
    pub rpc_listen: Option<String>,
    pub metrics_listen: Option<String>,
    pub show_secrets: bool,
    pub rpc_token: Option<String>,
}

fn parse_addr(field: &'static str, text: &str) -> Result<SocketAddr, ConfigError> {
    text.parse().map_err(|_| ConfigError::Invalid {
        field,
        message: format!("{text:?} is not an ip:port address"),
    })
}

impl Config {
    /// Reads `path` (if given) and applies `overrides` on top of the defaults.
    pub fn load(path: Option<&Path>, overrides: &Overrides) -> Result<Config, ConfigError> {
        let file = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.display().to_string(),
                    source,
                })?;
                toml::from_str::<FileConfig>(&text).map_err(|source| ConfigError::Parse {
                    path: path.display().to_string(),
                    source,
                })?
            }
            None => FileConfig::default(),
        };
        let mut config = Config::default();
        config.apply_file(file)?;
        config.apply_overrides(overrides)?;
        config.finish()?;
        Ok(config)
    }

    fn apply_file(&mut self, file: FileConfig) -> Result<(), ConfigError> {
        if let Some(v) = file.db_url {
            self.db_url = v;
        }
        if let Some(v) = file.sip_listen {
            self.sip_listen = parse_addr("sip_listen", &v)?;
        }
        if let Some(v) = file.advertised_addr {
            self.advertised_addr = v;
        }
        if let Some(v) = file.rpc_listen {
            self.rpc_listen = parse_addr("rpc_listen", &v)?;
        }
        if let Some(v) = file.metrics_listen {
            self.metrics_listen = if v.is_empty() {
                None
            } else {
                Some(parse_addr("metrics_listen", &v)?)
            };
        }
        if let Some(v) = file.user_agent {
            self.user_agent = v;
        }
        if let Some(v) = file.show_secrets {
            self.show_secrets = v;
        }
        if let Some(v) = file.rpc_token {
            self.rpc_token = (!v.is_empty()).then_some(v);
        }
        if let Some(v) = file.rpc_socket {
            self.rpc_socket = (!v.is_empty()).then(|| v.into());
        }
        if let Some(v) = file.unregister_on_shutdown {
            self.unregister_on_shutdown = v;
        }
        if let Some(v) = file.shutdown_timeout_secs {
            self.shutdown_timeout = Duration::from_secs(v);
        }
        if let Some(p) = file.pacing {
            if let Some(v) = p.rate {
                self.pacing.rate = v;
            }
            if let Some(v) = p.burst {
                self.pacing.burst = v;
            }
            if let Some(v) = p.max_in_flight {
                self.pacing.max_in_flight = v;
            }
            if let Some(v) = p.max_refresh_share {
                if !(0.0..=1.0).contains(&v) {
                    return Err(ConfigError::Invalid {
                        field: "pacing.max_refresh_share",
                        message: format!("{v} is not a fraction between 0 and 1"),
                    });
                }
                // Refreshes are the core's business: the share travels with its policy.
                self.retry.max_refresh_share = v;
            }
        }
        if let Some(tls) = file.tls {
            self.tls_ca_file = tls.ca_file.map(Into::into);
            self.tls_cert_file = tls.cert_file.map(Into::into);
            self.tls_key_file = tls.key_file.map(Into::into);
            if let Some(v) = tls.listen {
                self.tls_listen = Some(parse_addr("tls.listen", &v)?);
            }
            if self.tls_listen.is_some()
                && (self.tls_cert_file.is_none() || self.tls_key_file.is_none())
            {
                return Err(ConfigError::Invalid {
                    field: "tls.listen",
                    message: "a TLS listener needs tls.cert_file and tls.key_file".into(),
                });
            }
        }
        if let Some(db) = file.database {
            if let Some(v) = db.reload_interval_secs {
                self.database.reload_interval = interval(v);
            }
            if let Some(v) = db.notify {
                self.database.notify = v;
            }
            if let Some(v) = db.status_table {
                self.database.status_table = v;
            }
            if let Some(v) = db.status_interval_secs {
                self.database.status_interval = Duration::from_secs(v.max(1));
            }
            if let Some(v) = db.migrate {
                self.database.migrate = v;
            }
            if let Some(v) = db.max_removed_share {
                if !(0.0..=1.0).contains(&v) {
                    return Err(ConfigError::Invalid {
                        field: "database.max_removed_share",
                        message: format!("{v} is not a fraction between 0 and 1"),
                    });
                }
                self.database.max_removed_share = v;
            }
            if let Some(v) = db.statement_timeout_secs {
                self.database.timeouts.statement = Duration::from_secs(v.max(1));
            }
            if let Some(v) = db.lock_timeout_secs {
                self.database.timeouts.lock = Duration::from_secs(v.max(1));
            }
        }
        if let Some(limits) = file.limits {
            self.apply_limits(limits)?;
        }
        if let Some(inbound) = file.inbound {
            self.apply_inbound(inbound)?;
        }
        if let Some(sip) = file.sip {
            if let Some(v) = sip.tcp {
                self.sip_tcp = v;
            }
            for text in sip.sockets.unwrap_or_default() {
                let socket = LocalSocket::parse(&text).ok_or_else(|| ConfigError::Invalid {
                    field: "sip.sockets",
                    message: format!("{text:?} is not proto:ip:port (udp, tcp or tls)"),
                })?;
                self.extra_sockets.push(socket);
            }
            for text in sip.dns_servers.unwrap_or_default() {
                let addr = text
                    .parse()
                    .or_else(|_| {
                        text.parse::<std::net::IpAddr>()
                            .map(|ip| SocketAddr::new(ip, 53))
                    })
                    .map_err(|_| ConfigError::Invalid {
                        field: "sip.dns_servers",
                        message: format!("{text:?} is not an ip or ip:port"),
                    })?;
                self.dns_servers.push(addr);
            }
            if let Some(v) = sip.keepalive_secs {
                self.keepalive = interval(v);
            }
            if let Some(v) = sip.outbound {
                self.outbound = v;
            }
            if let Some(v) = sip.t1_ms {
                self.timers.t1 = Duration::from_millis(v.max(1));
            }
            if let Some(v) = sip.t2_ms {
                self.timers.t2 = Duration::from_millis(v.max(1));
            }
        }
        if let Some(r) = file.retry {
            if let Some(v) = r.first_retry_secs {
                self.retry.first_retry = Duration::from_secs(v.max(1));
            }
            if let Some(v) = r.max_retry_secs {
                self.retry.max_retry = Duration::from_secs(v.max(1));
            }
            if let Some(v) = r.max_retries {
                self.retry.max_retries = (v > 0).then_some(v);
            }
            if let Some(v) = r.forbidden_retry_secs {
                self.retry.forbidden_retry = interval(v);
            }
            if let Some(v) = r.fatal_retry_secs {
                self.retry.fatal_retry = interval(v);
            }
            if let Some(v) = r.auth_failure_retry_secs {
                self.retry.auth_failure_retry = interval(v);
            }
            if let Some(v) = r.max_expires {
                if v == 0 {
                    return Err(ConfigError::Invalid {
                        field: "retry.max_expires",
                        message: "must be at least 1 second".into(),
                    });
                }
                self.retry.max_expires = v;
            }
            if let Some(v) = r.start_spread_secs {
                self.retry.start_spread = Duration::from_secs(v);
            }
        }
        Ok(())
    }

    fn apply_inbound(&mut self, inbound: InboundFile) -> Result<(), ConfigError> {
        if let Some(v) = inbound.proxy
            && !v.is_empty()
        {
            self.inbound_proxy = Some(parse_addr("inbound.proxy", &v)?);
        }
        let policy = &mut self.inbound_policy;
        for text in inbound.trusted.unwrap_or_default() {
            let prefix = text
                .parse::<IpPrefix>()
                .map_err(|err| ConfigError::Invalid {
                    field: "inbound.trusted",
                    message: err.to_string(),
                })?;
            policy.trusted.push(prefix);
        }
        if let Some(v) = inbound.untrusted {
            policy.untrusted = v.parse().map_err(|err| ConfigError::Invalid {
                field: "inbound.untrusted",
                message: format!("{err}"),
            })?;
        }
        if let Some(v) = inbound.unknown_user {
            policy.unknown_user = v.parse().map_err(|err| ConfigError::Invalid {
                field: "inbound.unknown_user",
                message: format!("{err}"),
            })?;
        }
        if let Some(v) = inbound.reply_rate {
            policy.reply_rate = v;
        }
        Ok(())
    }

    fn apply_limits(&mut self, file: LimitsFile) -> Result<(), ConfigError> {
        let at_least_one = |field: &'static str, v: u64| {
            if v == 0 {
                Err(ConfigError::Invalid {
                    field,
                    message: "must be at least 1 (sip.tcp = false accepts no connections)".into(),
                })
            } else {
                Ok(())
            }
        };
        if let Some(v) = file.max_connections {
            at_least_one("limits.max_connections", v as u64)?;
            self.limits.max_connections = v;
        }
        if let Some(v) = file.max_connections_per_ip {
            at_least_one("limits.max_connections_per_ip", v as u64)?;
            self.limits.max_connections_per_ip = v;
        }
        if let Some(v) = file.idle_timeout_secs {
            at_least_one("limits.idle_timeout_secs", v)?;
            self.limits.idle_timeout = Duration::from_secs(v);
        }
        Ok(())
    }

    fn apply_overrides(&mut self, o: &Overrides) -> Result<(), ConfigError> {
        if let Some(v) = &o.db_url {
            self.db_url = v.clone();
        }
        if let Some(v) = &o.sip_listen {
            self.sip_listen = parse_addr("sip_listen", v)?;
        }
        if let Some(v) = &o.advertised_addr {
            self.advertised_addr = v.clone();
        }
        if let Some(v) = &o.rpc_listen {
            self.rpc_listen = parse_addr("rpc_listen", v)?;
        }
        if let Some(v) = &o.metrics_listen {
            self.metrics_listen = if v.is_empty() {
                None
            } else {
                Some(parse_addr("metrics_listen", v)?)
            };
        }
        if let Some(v) = &o.rpc_token {
            self.rpc_token = (!v.is_empty()).then(|| v.clone());
        }
        if o.show_secrets {
            self.show_secrets = true;
        }
        Ok(())
    }

    /// Fills in derived defaults once everything is known.
    pub fn finish(&mut self) -> Result<(), ConfigError> {
        if self.advertised_addr.is_empty() {
            self.advertised_addr = default_advertised(self.sip_listen);
        }
        if self.advertised_addr.contains(char::is_whitespace) {
            return Err(ConfigError::Invalid {
                field: "advertised_addr",
                message: format!("{:?} contains whitespace", self.advertised_addr),
            });
        }
        if self.timers.t2 < self.timers.t1 {
            self.timers.t2 = self.timers.t1;
        }
        if self.retry.max_retry < self.retry.first_retry {
            self.retry.max_retry = self.retry.first_retry;
        }
        Ok(())
    }

    /// The advertised address with the actual SIP port once the socket is bound (port 0 in the
    /// configuration means "any free port", used by tests).
    pub fn advertised_with_port(&self, bound: SocketAddr) -> String {
        if self.sip_listen.port() == 0 {
            let (host, _) = crate::registration::machine::split_host_port(&self.advertised_addr);
            let host = if host.contains(':') {
                format!("[{host}]")
            } else {
                host.to_string()
            };
            format!("{host}:{}", bound.port())
        } else {
            self.advertised_addr.clone()
        }
    }
}

/// `ip:port` of the listen address, with a wildcard IP replaced by loopback (the operator is
/// told at start-up to set `advertised_addr` for a registrar that is not on this host).
fn default_advertised(listen: SocketAddr) -> String {
    let ip = listen.ip();
    if ip.is_unspecified() {
        if ip.is_ipv4() {
            format!("127.0.0.1:{}", listen.port())
        } else {
            format!("[::1]:{}", listen.port())
        }
    } else {
        listen.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_do_not_clash_with_a_proxy() {
        let config = Config::load(None, &Overrides::default()).unwrap();
        assert_eq!(config.sip_listen.port(), 5062);
        assert!(config.rpc_listen.ip().is_loopback());
        assert_eq!(config.db_url, "sqlite://uacreg.db");
        assert_eq!(config.advertised_addr, "127.0.0.1:5062");
    }

    #[test]
    fn file_then_flags() {
        let dir = std::env::temp_dir().join(format!("uacreg-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("uacreg.toml");
        std::fs::write(
            &path,
            "db_url = \"sqlite:///tmp/x.db\"\nsip_listen = \"127.0.0.2:6000\"\n[pacing]\nrate = 50\n\
             [database]\nreload_interval_secs = 30\nstatus_table = true\nstatus_interval_secs = 0\n\
             max_removed_share = 0.25\nstatement_timeout_secs = 20\n[retry]\nmax_expires = 7200\n",
        )
        .unwrap();
        let overrides = Overrides {
            rpc_listen: Some("127.0.0.1:7000".into()),
            ..Overrides::default()
        };
        let config = Config::load(Some(&path), &overrides).unwrap();
        assert_eq!(config.db_url, "sqlite:///tmp/x.db");
        assert_eq!(config.sip_listen, "127.0.0.2:6000".parse().unwrap());
        assert_eq!(config.advertised_addr, "127.0.0.2:6000");
        assert_eq!(config.rpc_listen, "127.0.0.1:7000".parse().unwrap());
        assert_eq!(config.pacing.rate, 50);
        assert_eq!(config.retry.max_refresh_share, 0.002, "the default");
        assert_eq!(
            config.database,
            DatabaseConfig {
                reload_interval: Some(Duration::from_secs(30)),
                notify: true,
                status_table: true,
                status_interval: Duration::from_secs(1),
                migrate: true,
                max_removed_share: 0.25,
                timeouts: crate::store::ServerTimeouts {
                    statement: Duration::from_secs(20),
                    lock: Duration::from_secs(10),
                },
            }
        );
        assert_eq!(config.retry.max_expires, 7200);
        std::fs::write(&path, "[pacing]\nmax_refresh_share = 0.01\n").unwrap();
        let config = Config::load(Some(&path), &Overrides::default()).unwrap();
        assert_eq!(config.retry.max_refresh_share, 0.01);
        std::fs::write(&path, "[pacing]\nmax_refresh_share = 0\n").unwrap();
        let config = Config::load(Some(&path), &Overrides::default()).unwrap();
        assert_eq!(
            config.retry.refresh_cap(100_000),
            0,
            "0 switches spreading off"
        );
        std::fs::write(&path, "[pacing]\nmax_refresh_share = 2.5\n").unwrap();
        let err = Config::load(Some(&path), &Overrides::default()).unwrap_err();
        assert!(err.to_string().contains("max_refresh_share"), "{err}");
        std::fs::write(
            &path,
            "[inbound]\nproxy = \"127.0.0.1:5060\"\ntrusted = [\"203.0.113.0/24\", \"2001:db8::1\"]\n\
             untrusted = \"strip\"\nunknown_user = \"silent\"\nreply_rate = 5\n",
        )
        .unwrap();
        let config = Config::load(Some(&path), &Overrides::default()).unwrap();
        assert_eq!(
            config.inbound_proxy,
            Some("127.0.0.1:5060".parse().unwrap())
        );
        let policy = &config.inbound_policy;
        let trusted: Vec<String> = policy.trusted.iter().map(ToString::to_string).collect();
        assert_eq!(trusted, ["203.0.113.0/24", "2001:db8::1/128"]);
        assert_eq!(policy.untrusted, crate::sip::relay::UntrustedPolicy::Strip);
        assert_eq!(
            policy.unknown_user,
            crate::sip::relay::UnknownUserReply::Silent
        );
        assert_eq!(policy.reply_rate, 5);
        let defaults = Config::load(None, &Overrides::default())
            .unwrap()
            .inbound_policy;
        assert_eq!(defaults, InboundPolicy::default());
        assert_eq!(defaults.reply_rate, 20);
        assert!(defaults.trusted.is_empty());
        for (bad, field) in [
            ("trusted = [\"203.0.113.7/24\"]", "inbound.trusted"),
            ("trusted = [\"example.com\"]", "inbound.trusted"),
            ("untrusted = \"allow\"", "inbound.untrusted"),
            ("unknown_user = \"403\"", "inbound.unknown_user"),
        ] {
            std::fs::write(&path, format!("[inbound]\n{bad}\n")).unwrap();
            let err = Config::load(Some(&path), &Overrides::default()).unwrap_err();
            assert!(err.to_string().contains(field), "{bad}: {err}");
        }
        assert_eq!(config.limits, ConnectionLimits::default());
        std::fs::write(
            &path,
            "[limits]\nmax_connections = 200\nmax_connections_per_ip = 4\nidle_timeout_secs = 30\n",
        )
        .unwrap();
        let config = Config::load(Some(&path), &Overrides::default()).unwrap();
        assert_eq!(
            config.limits,
            ConnectionLimits {
                max_connections: 200,
                max_connections_per_ip: 4,
                idle_timeout: Duration::from_secs(30),
            }
        );
        std::fs::write(&path, "[limits]\nidle_timeout_secs = 0\n").unwrap();
        let err = Config::load(Some(&path), &Overrides::default()).unwrap_err();
        assert!(err.to_string().contains("idle_timeout_secs"), "{err}");
        std::fs::write(&path, "[database]\nmax_removed_share = 1.5\n").unwrap();
        let err = Config::load(Some(&path), &Overrides::default()).unwrap_err();
        assert!(err.to_string().contains("max_removed_share"), "{err}");
        std::fs::write(&path, "bogus_key = 1\n").unwrap();
        let err = Config::load(Some(&path), &Overrides::default()).unwrap_err();
        assert!(err.to_string().contains("bogus_key"), "{err}");
    }
}

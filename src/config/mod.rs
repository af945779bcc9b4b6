//! Daemon configuration: a TOML file, overridden by command-line flags, with defaults that let
//! `uacregd` run with no configuration at all (SQLite file `./uacreg.db`).
//!
//! [`Config`] is the file's shape: top-level keys are its fields, each `[section]` a struct of
//! [`sections`], all read by serde with every key optional and an unknown key an error (a typo
//! must not silently leave a default in force). How a value is written (`*_secs`, `""` for
//! none, `ip:port`) is one `deserialize_with` of [`value`]; what no single key can check
//! (a TLS listener needs its certificate) is [`Config::validate`]. The runtime types the daemon
//! wires up (`RetryPolicy`, `Timers`, `InboundPolicy`, …) come from the sections' methods.
//!
//! Default ports stay clear of a SIP proxy on the same host: SIP on 5062 (the proxy keeps 5060
//! and 5061), JSON-RPC on 127.0.0.1:5063 (loopback only, since it can show and change
//! registrations).

pub mod sections;
pub mod value;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use thiserror::Error;

use crate::registration::RetryPolicy;
use crate::transport::admission::ConnectionLimits;
pub use sections::{
    ClusterSettings, DatabaseSettings, InboundSettings, PacingSettings, RetrySettings, SipSettings,
    TlsSettings, WebSettings,
};

#[derive(Debug, Error)]
pub enum ConfigError {
    // The cause is part of the message and deliberately not a `source`: `uacregd` prints
    // the chain, and the cause would then appear twice.
    #[error("cannot read config file {path}: {error}")]
    Read { path: String, error: std::io::Error },
    /// A key the file may not have, a value of the wrong type or one that does not parse;
    /// `key` is where it stood (`inbound.untrusted`; empty at the top). toml's message shows
    /// the line.
    #[error("invalid config file {path}{}: {error}", key_note(key))]
    Parse {
        path: String,
        key: String,
        error: Box<toml::de::Error>,
    },
    /// A command-line value that does not parse.
    #[error("invalid {flag}: {message}")]
    Flag { flag: &'static str, message: String },
    #[error("invalid advertised_addr: {0:?} contains whitespace")]
    AdvertisedAddrWhitespace(String),
    #[error("invalid tls.listen: a TLS listener needs tls.cert_file and tls.key_file")]
    TlsListenerWithoutCertificate,
    #[error("invalid {key}: must be at least 1 (sip.tcp = false accepts no connections)")]
    ZeroLimit { key: &'static str },
    #[error(
        "[cluster] is enabled but the database is SQLite, which is single-node: a cluster needs \
         PostgreSQL or MySQL/MariaDB that every node reaches"
    )]
    ClusterOnSqlite,
    #[error("invalid cluster.{key}: {why}")]
    Cluster {
        key: &'static str,
        why: &'static str,
    },
}

/// `, key inbound.untrusted` after the file name, or nothing for the top level.
fn key_note(key: &str) -> String {
    if key.is_empty() || key == "." {
        String::new()
    } else {
        format!(", key {key}")
    }
}

/// The effective configuration: the file's keys, field by field and section by section.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `sqlite://path`, a bare path, `postgres://…`, `mysql://…`.
    pub db_url: String,
    /// Address the SIP socket binds to.
    #[serde(deserialize_with = "value::socket_addr")]
    pub sip_listen: SocketAddr,
    /// `host:port` put in Via and, for rows with an empty `contact_addr`, in the Contact
    /// (empty: derived from `sip_listen` by [`Config::finish`]).
    pub advertised_addr: String,
    /// Address of the JSON-RPC HTTP server.
    #[serde(deserialize_with = "value::socket_addr")]
    pub rpc_listen: SocketAddr,
    /// Address of the Prometheus endpoint (None, written `""`: off).
    #[serde(deserialize_with = "value::optional_socket_addr")]
    pub metrics_listen: Option<SocketAddr>,
    pub user_agent: String,
    /// Show `auth_password` / `auth_ha1` in RPC answers (off: they are masked).
    pub show_secrets: bool,
    /// Shared secret every RPC request must carry (None, written `""`: no check; RPC is on
    /// loopback).
    #[serde(deserialize_with = "value::optional_text")]
    pub rpc_token: Option<String>,
    /// Also serve JSON-RPC on this Unix socket (mode 0660).
    #[serde(deserialize_with = "value::optional_path")]
    pub rpc_socket: Option<PathBuf>,
    /// Kamailio's control socket for `kamcmd` (BINRPC): `unix:/run/uacreg/kamailio_ctl`.
    #[serde(deserialize_with = "value::optional_text")]
    pub ctl_socket: Option<String>,
    /// Kamailio's JSON-RPC FIFO for `kamctl rpc` (jsonrpcs' convention); answers go to the
    /// FIFO each request names in `rpc_fifo_reply_dir`.
    #[serde(deserialize_with = "value::optional_path")]
    pub rpc_fifo: Option<PathBuf>,
    /// Where the FIFOs `kamctl` reads answers from are (jsonrpcs' `fifo_reply_dir`).
    pub rpc_fifo_reply_dir: PathBuf,
    /// Send Expires: 0 for every binding on shutdown.
    pub unregister_on_shutdown: bool,
    /// How long shutdown waits for those un-REGISTERs (`shutdown_timeout_secs`).
    #[serde(rename = "shutdown_timeout_secs", deserialize_with = "value::seconds")]
    pub shutdown_timeout: Duration,
    pub pacing: PacingSettings,
    pub retry: RetrySettings,
    pub sip: SipSettings,
    pub tls: TlsSettings,
    pub inbound: InboundSettings,
    /// Picking up table changes and writing status back.
    pub database: DatabaseSettings,
    /// Connections peers may open to the SIP port, and for how long.
    pub limits: ConnectionLimits,
    /// Sharing the rows with other nodes on one database.
    pub cluster: ClusterSettings,
    /// The web console.
    pub web: WebSettings,
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
            ctl_socket: None,
            rpc_fifo: None,
            rpc_fifo_reply_dir: PathBuf::from("/tmp"),
            unregister_on_shutdown: true,
            shutdown_timeout: Duration::from_secs(5),
            pacing: PacingSettings::default(),
            retry: RetrySettings::default(),
            sip: SipSettings::default(),
            tls: TlsSettings::default(),
            inbound: InboundSettings::default(),
            database: DatabaseSettings::default(),
            cluster: ClusterSettings::default(),
            limits: ConnectionLimits::default(),
            web: WebSettings::default(),
        }
    }
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

fn flag_addr(flag: &'static str, text: &str) -> Result<SocketAddr, ConfigError> {
    value::parse_socket_addr(text).map_err(|message| ConfigError::Flag { flag, message })
}

impl Config {
    /// Reads `path` (if given), applies `overrides` on top, fills in derived defaults and
    /// validates the result.
    pub fn load(path: Option<&Path>, overrides: &Overrides) -> Result<Config, ConfigError> {
        let mut config = match path {
            Some(path) => {
                let shown = || path.display().to_string();
                let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
                    path: shown(),
                    error,
                })?;
                Config::from_toml(&text, &shown())?
            }
            None => Config::default(),
        };
        config.apply_overrides(overrides)?;
        config.finish()?;
        Ok(config)
    }

    /// A config file's contents as they are (no overrides, no derived defaults); `origin`
    /// names the file in an error, which also names the key that was wrong.
    pub fn from_toml(text: &str, origin: &str) -> Result<Config, ConfigError> {
        serde_path_to_error::deserialize(toml::Deserializer::new(text)).map_err(|err| {
            ConfigError::Parse {
                path: origin.to_string(),
                key: err.path().to_string(),
                error: Box::new(err.into_inner()),
            }
        })
    }

    fn apply_overrides(&mut self, o: &Overrides) -> Result<(), ConfigError> {
        if let Some(v) = &o.db_url {
            self.db_url = v.clone();
        }
        if let Some(v) = &o.sip_listen {
            self.sip_listen = flag_addr("sip_listen", v)?;
        }
        if let Some(v) = &o.advertised_addr {
            self.advertised_addr = v.clone();
        }
        if let Some(v) = &o.rpc_listen {
            self.rpc_listen = flag_addr("rpc_listen", v)?;
        }
        if let Some(v) = &o.metrics_listen {
            self.metrics_listen = if v.is_empty() {
                None
            } else {
                Some(flag_addr("metrics_listen", v)?)
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

    /// Fills in derived defaults once everything is known (the advertised address from the
    /// listen address), then [`validate`](Config::validate)s.
    pub fn finish(&mut self) -> Result<(), ConfigError> {
        if self.advertised_addr.is_empty() {
            self.advertised_addr = default_advertised(self.sip_listen);
        }
        self.validate()
    }

    /// What no single key can check, or what a config built in code must be told too.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.advertised_addr.contains(char::is_whitespace) {
            return Err(ConfigError::AdvertisedAddrWhitespace(
                self.advertised_addr.clone(),
            ));
        }
        if self.tls.listen.is_some()
            && (self.tls.cert_file.is_none() || self.tls.key_file.is_none())
        {
            return Err(ConfigError::TlsListenerWithoutCertificate);
        }
        for (key, value) in [
            ("limits.max_connections", self.limits.max_connections),
            (
                "limits.max_connections_per_ip",
                self.limits.max_connections_per_ip,
            ),
            (
                "limits.idle_timeout_secs",
                usize::from(!self.limits.idle_timeout.is_zero()),
            ),
        ] {
            if value == 0 {
                return Err(ConfigError::ZeroLimit { key });
            }
        }
        self.validate_cluster()
    }

    fn validate_cluster(&self) -> Result<(), ConfigError> {
        let cluster = &self.cluster;
        if !cluster.enabled {
            return Ok(());
        }
        let engine = crate::store::DbUrl::parse(&self.db_url).map(|url| url.engine);
        if matches!(engine, Ok(crate::store::Engine::Sqlite)) {
            return Err(ConfigError::ClusterOnSqlite);
        }
        if cluster.lease < Duration::from_secs(2) {
            return Err(ConfigError::Cluster {
                key: "lease_secs",
                why: "must be at least 2",
            });
        }
        if !(1..=4096).contains(&cluster.shards) {
            return Err(ConfigError::Cluster {
                key: "shards",
                why: "must be between 1 and 4096",
            });
        }
        if cluster.max_releases_per_round == 0 {
            return Err(ConfigError::Cluster {
                key: "max_releases_per_round",
                why: "must be at least 1",
            });
        }
        if cluster.node_id.as_deref().is_some_and(|id| id.len() > 128) {
            return Err(ConfigError::Cluster {
                key: "node_id",
                why: "must be at most 128 bytes",
            });
        }
        Ok(())
    }

    /// The core's retry and refresh policy: `[retry]` and `[pacing] max_refresh_share`.
    pub fn retry_policy(&self) -> RetryPolicy {
        self.retry.policy(self.pacing.max_refresh_share)
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
    use crate::driver::InboundPolicy;
    use crate::relay::{UnknownUserReply, UntrustedPolicy};

    /// A config file of its own for each test (tests run in parallel).
    struct File(PathBuf);

    impl File {
        fn new(name: &str) -> File {
            let dir = std::env::temp_dir().join(format!("uacreg-config-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            File(dir.join(format!("{name}.toml")))
        }

        fn load(&self, text: &str) -> Result<Config, ConfigError> {
            std::fs::write(&self.0, text).unwrap();
            Config::load(Some(&self.0), &Overrides::default())
        }

        fn error(&self, text: &str) -> String {
            match self.load(text) {
                Ok(_) => panic!("{text:?} was accepted"),
                Err(err) => err.to_string(),
            }
        }
    }

    impl Drop for File {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    #[test]
    fn defaults_do_not_clash_with_a_proxy() {
        let config = Config::load(None, &Overrides::default()).unwrap();
        assert_eq!(config.sip_listen.port(), 5062);
        assert!(config.rpc_listen.ip().is_loopback());
        assert_eq!(config.db_url, "sqlite://uacreg.db");
        assert_eq!(config.advertised_addr, "127.0.0.1:5062");
    }

    #[test]
    fn an_empty_file_is_the_defaults_and_they_are_the_runtime_types_defaults() {
        assert_eq!(Config::from_toml("", "empty").unwrap(), Config::default());
        let config = Config::default();
        let policy = config.retry_policy();
        let expected = RetryPolicy::default();
        assert_eq!(
            (policy.first_retry, policy.max_retry, policy.max_expires),
            (
                expected.first_retry,
                expected.max_retry,
                expected.max_expires
            )
        );
        assert_eq!(policy.max_refresh_share, 0.002);
        assert_eq!(
            config.sip.timers(),
            crate::engine::transaction::Timers::default()
        );
        assert_eq!(
            config.pacing.transport_pacing(),
            crate::transport::PacingConfig::default()
        );
        assert_eq!(config.inbound.policy(), InboundPolicy::default());
        assert_eq!(config.inbound.policy().reply_rate, 20);
        assert_eq!(
            config.database.timeouts(),
            crate::store::ServerTimeouts::default()
        );
        assert_eq!(config.limits, ConnectionLimits::default());
        assert!(config.sip.tcp && config.database.notify && config.database.migrate);
    }

    #[test]
    fn file_then_flags() {
        let file = File::new("file-then-flags");
        std::fs::write(
            &file.0,
            "db_url = \"sqlite:///tmp/x.db\"\nsip_listen = \"127.0.0.2:6000\"\n[pacing]\nrate = 50\n\
             [database]\nreload_interval_secs = 30\nstatus_table = true\nstatus_interval_secs = 0\n\
             max_removed_share = 0.25\nstatement_timeout_secs = 20\n[retry]\nmax_expires = 7200\n",
        )
        .unwrap();
        let overrides = Overrides {
            rpc_listen: Some("127.0.0.1:7000".into()),
            ..Overrides::default()
        };
        let config = Config::load(Some(&file.0), &overrides).unwrap();
        assert_eq!(config.db_url, "sqlite:///tmp/x.db");
        assert_eq!(config.sip_listen, "127.0.0.2:6000".parse().unwrap());
        assert_eq!(config.advertised_addr, "127.0.0.2:6000");
        assert_eq!(config.rpc_listen, "127.0.0.1:7000".parse().unwrap());
        assert_eq!(config.pacing.transport_pacing().rate, 50);
        assert_eq!(
            config.retry_policy().max_refresh_share,
            0.002,
            "the default"
        );
        assert_eq!(
            config.database,
            DatabaseSettings {
                reload_interval: Some(Duration::from_secs(30)),
                notify: true,
                status_table: true,
                status_interval: Duration::from_secs(1),
                migrate: true,
                max_removed_share: 0.25,
                statement_timeout: Duration::from_secs(20),
                lock_timeout: Duration::from_secs(10),
            }
        );
        assert_eq!(
            config.database.timeouts(),
            crate::store::ServerTimeouts {
                statement: Duration::from_secs(20),
                lock: Duration::from_secs(10),
            }
        );
        assert_eq!(config.retry_policy().max_expires, 7200);
    }

    #[test]
    fn flags_win_over_the_file_and_are_checked() {
        let file = File::new("flags");
        std::fs::write(
            &file.0,
            "db_url = \"sqlite://file.db\"\nmetrics_listen = \"127.0.0.1:9000\"\nrpc_token = \"file\"\n",
        )
        .unwrap();
        let overrides = Overrides {
            db_url: Some("postgres://u@h/db".into()),
            sip_listen: Some("[::1]:7062".into()),
            advertised_addr: Some("gw.example:7062".into()),
            metrics_listen: Some(String::new()),
            rpc_token: Some(String::new()),
            show_secrets: true,
            ..Overrides::default()
        };
        let config = Config::load(Some(&file.0), &overrides).unwrap();
        assert_eq!(config.db_url, "postgres://u@h/db");
        assert_eq!(config.sip_listen, "[::1]:7062".parse().unwrap());
        assert_eq!(config.advertised_addr, "gw.example:7062");
        assert_eq!(config.metrics_listen, None, "\"\" switches it off");
        assert_eq!(config.rpc_token, None, "an empty token is no token");
        assert!(config.show_secrets);
        let overrides = Overrides {
            rpc_listen: Some("localhost".into()),
            ..Overrides::default()
        };
        let err = Config::load(None, &overrides).unwrap_err().to_string();
        assert_eq!(
            err,
            "invalid rpc_listen: \"localhost\" is not an ip:port address"
        );
        let overrides = Overrides {
            advertised_addr: Some("gw example".into()),
            ..Overrides::default()
        };
        let err = Config::load(None, &overrides).unwrap_err();
        assert!(
            matches!(err, ConfigError::AdvertisedAddrWhitespace(_)),
            "{err}"
        );
    }

    #[test]
    fn pacing_carries_the_refresh_share() {
        let file = File::new("pacing");
        let config = file.load("[pacing]\nmax_refresh_share = 0.01\n").unwrap();
        assert_eq!(config.retry_policy().max_refresh_share, 0.01);
        let config = file.load("[pacing]\nmax_refresh_share = 0\n").unwrap();
        assert_eq!(
            config.retry_policy().refresh_cap(100_000),
            0,
            "0 switches spreading off"
        );
        let err = file.error("[pacing]\nmax_refresh_share = 2.5\n");
        assert!(err.contains("pacing.max_refresh_share"), "{err}");
        assert!(
            err.contains("2.5 is not a fraction between 0 and 1"),
            "{err}"
        );
    }

    #[test]
    fn inbound_policy_from_the_file() {
        let file = File::new("inbound");
        let config = file
            .load(
                "[inbound]\nproxy = \"127.0.0.1:5060\"\ntrusted = [\"203.0.113.0/24\", \"2001:db8::1\"]\n\
                 untrusted = \"strip\"\nunknown_user = \"silent\"\nreply_rate = 5\n",
            )
            .unwrap();
        assert_eq!(
            config.inbound.proxy,
            Some("127.0.0.1:5060".parse().unwrap())
        );
        let policy = config.inbound.policy();
        let trusted: Vec<String> = policy.trusted.iter().map(ToString::to_string).collect();
        assert_eq!(trusted, ["203.0.113.0/24", "2001:db8::1/128"]);
        assert_eq!(policy.untrusted, UntrustedPolicy::Strip);
        assert_eq!(policy.unknown_user, UnknownUserReply::Silent);
        assert_eq!(policy.reply_rate, 5);
        assert_eq!(
            file.load("[inbound]\nproxy = \"\"\n")
                .unwrap()
                .inbound
                .proxy,
            None
        );
        for (bad, key) in [
            ("trusted = [\"203.0.113.7/24\"]", "inbound.trusted"),
            ("trusted = [\"example.com\"]", "inbound.trusted"),
            ("untrusted = \"allow\"", "inbound.untrusted"),
            ("unknown_user = \"403\"", "inbound.unknown_user"),
            ("proxy = \"proxy.example:5060\"", "inbound.proxy"),
        ] {
            let err = file.error(&format!("[inbound]\n{bad}\n"));
            assert!(err.contains(key), "{bad}: {err}");
        }
        // The value's own complaint comes through.
        let err = file.error("[inbound]\nuntrusted = \"allow\"\n");
        assert!(err.contains("\"drop\", \"strip\""), "{err}");
    }

    #[test]
    fn limits_must_allow_a_connection() {
        let file = File::new("limits");
        let config = file
            .load(
                "[limits]\nmax_connections = 200\nmax_connections_per_ip = 4\nidle_timeout_secs = 30\n",
            )
            .unwrap();
        assert_eq!(
            config.limits,
            ConnectionLimits {
                max_connections: 200,
                max_connections_per_ip: 4,
                idle_timeout: Duration::from_secs(30),
            }
        );
        for key in [
            "max_connections",
            "max_connections_per_ip",
            "idle_timeout_secs",
        ] {
            let err = file.error(&format!("[limits]\n{key} = 0\n"));
            assert!(err.contains(&format!("limits.{key}")), "{err}");
            assert!(err.contains("sip.tcp = false"), "{err}");
        }
    }

    #[test]
    fn single_values_are_checked_where_they_stand() {
        let file = File::new("values");
        let err = file.error("[database]\nmax_removed_share = 1.5\n");
        assert!(err.contains("database.max_removed_share"), "{err}");
        let err = file.error("[retry]\nmax_expires = 0\n");
        assert!(err.contains("retry.max_expires"), "{err}");
        assert!(err.contains("at least 1 second"), "{err}");
        let err = file.error("[sip]\nsockets = [\"sctp:10.0.0.5:5060\"]\n");
        assert!(err.contains("sip.sockets"), "{err}");
        assert!(
            err.contains("\"sctp:10.0.0.5:5060\" is not proto:ip:port"),
            "{err}"
        );
        let err = file.error("[sip]\ndns_servers = [\"ns.example\"]\n");
        assert!(err.contains("sip.dns_servers"), "{err}");
        let err = file.error("sip_listen = \"0.0.0.0\"\n");
        assert!(err.contains("key sip_listen"), "{err}");
        assert!(
            err.contains("\"0.0.0.0\" is not an ip:port address"),
            "{err}"
        );
        let err = file.error("[tls]\nlisten = \"0.0.0.0:5061\"\n");
        assert_eq!(
            err,
            "invalid tls.listen: a TLS listener needs tls.cert_file and tls.key_file"
        );
    }

    #[test]
    fn a_wrong_type_or_unknown_key_names_the_key() {
        let file = File::new("keys");
        let err = file.error("[pacing]\nrate = \"fast\"\n");
        assert!(err.contains("key pacing.rate"), "{err}");
        assert!(err.contains("invalid type"), "{err}");
        let err = file.error("show_secrets = \"yes\"\n");
        assert!(err.contains("key show_secrets"), "{err}");
        let err = file.error("[sip]\nt1_ms = -5\n");
        assert!(err.contains("key sip.t1_ms"), "{err}");
        // Unknown keys, at the top and in a section: a typo must not leave a default in force.
        let err = file.error("bogus_key = 1\n");
        assert!(err.contains("unknown field `bogus_key`"), "{err}");
        let err = file.error("[database]\nstatus_interval = 5\n");
        assert!(err.contains("unknown field `status_interval`"), "{err}");
        assert!(err.contains("key database"), "{err}");
        let err = file.error("[logging]\nlevel = \"info\"\n");
        assert!(err.contains("unknown field `logging`"), "{err}");
        // The line is shown as well.
        assert!(err.contains("line 1"), "{err}");
    }

    #[test]
    fn zero_means_off_or_one_as_documented() {
        let file = File::new("zeros");
        let config = file
            .load(
                "shutdown_timeout_secs = 0\n[sip]\nt1_ms = 0\nt2_ms = 0\nkeepalive_secs = 0\n\
                 [retry]\nfirst_retry_secs = 0\nmax_retries = 0\nforbidden_retry_secs = 0\n\
                 [database]\nreload_interval_secs = 0\nlock_timeout_secs = 0\n",
            )
            .unwrap();
        assert_eq!(config.shutdown_timeout, Duration::ZERO);
        assert_eq!(config.sip.timers().t1, Duration::from_millis(1));
        assert_eq!(config.sip.keepalive, None);
        let policy = config.retry_policy();
        assert_eq!(policy.first_retry, Duration::from_secs(1));
        assert_eq!(policy.max_retries, None);
        assert_eq!(policy.forbidden_retry, None);
        assert_eq!(config.database.reload_interval, None);
        assert_eq!(config.database.timeouts().lock, Duration::from_secs(1));
        let config = file
            .load(
                "[sip]\nt1_ms = 800\nt2_ms = 300\nkeepalive_secs = 25\ndns_servers = [\"192.0.2.53\", \"[2001:db8::53]:5353\"]\n\
                 [retry]\nfirst_retry_secs = 90\nmax_retry_secs = 60\nmax_retries = 3\nauth_failure_retry_secs = 600\n",
            )
            .unwrap();
        // A ceiling below the start is raised to it, as before.
        assert_eq!(config.sip.timers().t2, Duration::from_millis(800));
        assert_eq!(config.retry_policy().max_retry, Duration::from_secs(90));
        assert_eq!(config.retry_policy().max_retries, Some(3));
        assert_eq!(
            config.retry_policy().auth_failure_retry,
            Some(Duration::from_secs(600))
        );
        assert_eq!(config.sip.keepalive, Some(Duration::from_secs(25)));
        assert_eq!(
            config.sip.dns_servers,
            [
                "192.0.2.53:53".parse::<SocketAddr>().unwrap(),
                "[2001:db8::53]:5353".parse().unwrap()
            ]
        );
    }

    /// The README's example file is accepted as it is, and the values it shows as defaults are
    /// the defaults.
    #[test]
    fn the_readme_example_is_a_valid_file() {
        let readme = include_str!("../../README.md");
        let section = &readme[readme.find("## Configuration").expect("section")..];
        let start = section.find("```toml\n").expect("example") + "```toml\n".len();
        let example = &section[start..start + section[start..].find("```").expect("end")];
        let config = Config::from_toml(example, "README.md").unwrap_or_else(|err| panic!("{err}"));
        let defaults = Config::default();
        assert_eq!(config.pacing, defaults.pacing);
        assert_eq!(config.retry, defaults.retry);
        assert_eq!(config.database, defaults.database);
        assert_eq!(config.limits, defaults.limits);
        assert_eq!(config.sip.timers(), defaults.sip.timers());
        assert_eq!(config.inbound.policy(), defaults.inbound.policy());
        assert_eq!(config.tls, defaults.tls, "\"\" is the same as no key");
        assert_eq!(config.sip.sockets.len(), 2);
        assert_eq!(config.rpc_token, None);
        assert_eq!(
            config.rpc_socket.as_deref(),
            Some(Path::new("/run/uacreg/rpc.sock"))
        );
    }

    /// The packaged /etc/uacreg/uacreg.toml is accepted, and every key it comments out is
    /// still a key the file would accept (uncommented, each section's defaults hold).
    #[test]
    fn the_packaged_config_is_a_valid_file() {
        let packaged = include_str!("../../contrib/uacreg.toml");
        let config = Config::from_toml(packaged, "contrib/uacreg.toml")
            .unwrap_or_else(|err| panic!("{err}"));
        assert_eq!(config.pacing, Config::default().pacing);
        assert!(!config.cluster.enabled);
        let uncommented: String = packaged
            .lines()
            .map(|line| line.strip_prefix('#').unwrap_or(line))
            .filter(|line| !line.starts_with(' ') && !line.starts_with('/'))
            .map(|line| format!("{line}\n"))
            .collect();
        let every_key = Config::from_toml(&uncommented, "contrib/uacreg.toml, uncommented")
            .unwrap_or_else(|err| panic!("{err}\n{uncommented}"));
        assert_eq!(every_key.pacing, Config::default().pacing);
        assert_eq!(every_key.retry, Config::default().retry);
    }

    #[test]
    fn a_cluster_section_is_read_and_checked() {
        let config = Config::from_toml(
            "db_url = \"postgres://u@127.0.0.1/db\"\n[cluster]\nenabled = true\n\
             node_id = \"node-a\"\nlease_secs = 3\nshards = 64\n",
            "test",
        )
        .unwrap();
        assert!(config.cluster.enabled);
        assert_eq!(config.cluster.node_id(5062), "node-a");
        assert_eq!(config.cluster.lease, Duration::from_secs(3));
        assert_eq!(config.cluster.shards, 64);
        assert_eq!(config.cluster.max_releases_per_round, 8);
        config.validate().unwrap();

        let on_sqlite = Config::from_toml("[cluster]\nenabled = true\n", "test").unwrap();
        let err = on_sqlite.validate().unwrap_err();
        assert!(matches!(err, ConfigError::ClusterOnSqlite), "{err}");
        assert!(err.to_string().contains("single-node"));

        let short = Config::from_toml(
            "db_url = \"mysql://u@127.0.0.1/db\"\n[cluster]\nenabled = true\nlease_secs = 1\n",
            "test",
        )
        .unwrap();
        assert!(matches!(
            short.validate(),
            Err(ConfigError::Cluster {
                key: "lease_secs",
                ..
            })
        ));
        // Off (the default), nothing is checked.
        assert!(!Config::default().cluster.enabled);
        let default_id = ClusterSettings::default().node_id(5070);
        assert!(
            default_id.ends_with(":5070") && default_id.len() > 5,
            "{default_id}"
        );
    }
}

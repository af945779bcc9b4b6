//! The config file's sections, one struct each, read by serde with every key optional.
//!
//! A section is its own struct when its keys do not map one to one onto a type the daemon runs
//! with: `[pacing]` also carries the core's refresh spreading, `[sip]` mixes timers and sockets,
//! `[inbound]` the relay's proxy and its trust policy. Each has a method that hands out the
//! runtime type (`RetryPolicy`, `Timers`, `InboundPolicy`, `PacingConfig`, `ServerTimeouts`), and
//! its `Default` takes that type's defaults, so a default is written down once. (`[limits]`
//! maps exactly onto [`crate::transport::admission::ConnectionLimits`], which is read
//! directly.)

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::value;
use crate::driver::{InboundPolicy, IpPrefix};
use crate::engine::transaction::Timers;
use crate::registration::RetryPolicy;
use crate::registration::record::LocalSocket;
use crate::relay::{UnknownUserReply, UntrustedPolicy};
use crate::store::ServerTimeouts;
use crate::transport::PacingConfig;

/// `[pacing]`: how fast REGISTERs go out, and how refreshes are spread over time.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PacingSettings {
    /// New REGISTER transactions per second (0: unlimited).
    pub rate: u32,
    /// Requests that may go out back to back before the rate applies.
    pub burst: u32,
    /// Unanswered transactions at once (0: unlimited).
    pub max_in_flight: usize,
    /// Largest share of the rows whose refresh may fall in one second (0: not spread). The
    /// core's business (it lives in [`RetryPolicy::max_refresh_share`]), written here because
    /// to an operator it is pacing.
    #[serde(deserialize_with = "value::fraction")]
    pub max_refresh_share: f64,
}

impl Default for PacingSettings {
    fn default() -> Self {
        let pacing = PacingConfig::default();
        PacingSettings {
            rate: pacing.rate,
            burst: pacing.burst,
            max_in_flight: pacing.max_in_flight,
            max_refresh_share: RetryPolicy::default().max_refresh_share,
        }
    }
}

impl PacingSettings {
    /// What the transport's pacer runs with.
    pub fn transport_pacing(&self) -> PacingConfig {
        PacingConfig {
            rate: self.rate,
            burst: self.burst,
            max_in_flight: self.max_in_flight,
        }
    }
}

/// `[retry]`: when a row tries again after a failure.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetrySettings {
    /// First delay after a temporary failure (`first_retry_secs`, at least 1).
    #[serde(
        rename = "first_retry_secs",
        deserialize_with = "value::seconds_at_least_one"
    )]
    pub first_retry: Duration,
    /// Ceiling of the back-off (`max_retry_secs`, at least 1; never below `first_retry`).
    #[serde(
        rename = "max_retry_secs",
        deserialize_with = "value::seconds_at_least_one"
    )]
    pub max_retry: Duration,
    /// Consecutive temporary failures before giving up (written 0: never).
    #[serde(deserialize_with = "value::count_or_unlimited")]
    pub max_retries: Option<u32>,
    /// Retry interval after 403 (`forbidden_retry_secs`; 0, None: permanent).
    #[serde(
        rename = "forbidden_retry_secs",
        deserialize_with = "value::seconds_or_off"
    )]
    pub forbidden_retry: Option<Duration>,
    /// Retry interval after other 3xx/4xx (`fatal_retry_secs`; 0, None: permanent).
    #[serde(
        rename = "fatal_retry_secs",
        deserialize_with = "value::seconds_or_off"
    )]
    pub fatal_retry: Option<Duration>,
    /// Retry interval after wrong credentials (`auth_failure_retry_secs`; 0, None: permanent).
    #[serde(
        rename = "auth_failure_retry_secs",
        deserialize_with = "value::seconds_or_off"
    )]
    pub auth_failure_retry: Option<Duration>,
    /// New rows' first REGISTERs are spread over this long, plus `reg_delay`
    /// (`start_spread_secs`).
    #[serde(rename = "start_spread_secs", deserialize_with = "value::seconds")]
    pub start_spread: Duration,
    /// Longest grant believed, and the largest Min-Expires (423) followed, in seconds.
    #[serde(deserialize_with = "value::at_least_one_second")]
    pub max_expires: u32,
}

impl Default for RetrySettings {
    fn default() -> Self {
        let policy = RetryPolicy::default();
        RetrySettings {
            first_retry: policy.first_retry,
            max_retry: policy.max_retry,
            max_retries: policy.max_retries,
            forbidden_retry: policy.forbidden_retry,
            fatal_retry: policy.fatal_retry,
            auth_failure_retry: policy.auth_failure_retry,
            start_spread: policy.start_spread,
            max_expires: policy.max_expires,
        }
    }
}

impl RetrySettings {
    /// The core's policy: these keys, `[pacing] max_refresh_share`, and the defaults of what
    /// the file does not set. A ceiling below the first delay is raised to it.
    pub fn policy(&self, max_refresh_share: f64) -> RetryPolicy {
        RetryPolicy {
            first_retry: self.first_retry,
            max_retry: self.max_retry.max(self.first_retry),
            max_retries: self.max_retries,
            forbidden_retry: self.forbidden_retry,
            fatal_retry: self.fatal_retry,
            auth_failure_retry: self.auth_failure_retry,
            start_spread: self.start_spread,
            max_expires: self.max_expires,
            max_refresh_share,
            ..RetryPolicy::default()
        }
    }
}

/// `[sip]`: transaction timers, transports, extra sockets, DNS, keep-alives, RFC 5626.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SipSettings {
    /// RFC 3261 T1 (`t1_ms`, at least 1 ms); no answer after 64 × T1 is a timeout.
    #[serde(rename = "t1_ms", deserialize_with = "value::millis_at_least_one")]
    pub t1: Duration,
    /// RFC 3261 T2 (`t2_ms`, at least 1 ms; never below T1).
    #[serde(rename = "t2_ms", deserialize_with = "value::millis_at_least_one")]
    pub t2: Duration,
    /// Accept TCP on the SIP port (registrars and proxies calling our contacts).
    pub tcp: bool,
    /// More local sockets rows may name in `socket` (`udp:10.0.0.5:5060` is bound;
    /// `tcp:10.0.0.5:5060` makes connections leave from that address).
    #[serde(deserialize_with = "value::local_sockets")]
    pub sockets: Vec<LocalSocket>,
    /// Name servers for RFC 3263 lookups (empty: the system's).
    #[serde(deserialize_with = "value::name_servers")]
    pub dns_servers: Vec<SocketAddr>,
    /// CRLF / OPTIONS keep-alive period per flow (`keepalive_secs`; 0, None: off).
    #[serde(rename = "keepalive_secs", deserialize_with = "value::seconds_or_off")]
    pub keepalive: Option<Duration>,
    /// RFC 5626 outbound / RFC 3327 path in REGISTERs.
    pub outbound: bool,
}

impl Default for SipSettings {
    fn default() -> Self {
        let timers = Timers::default();
        SipSettings {
            t1: timers.t1,
            t2: timers.t2,
            tcp: true,
            sockets: Vec::new(),
            dns_servers: Vec::new(),
            keepalive: None,
            outbound: false,
        }
    }
}

impl SipSettings {
    /// The transaction timers (T4 is not configurable).
    pub fn timers(&self) -> Timers {
        Timers {
            t1: self.t1,
            t2: self.t2.max(self.t1),
            ..Timers::default()
        }
    }
}

/// `[tls]`: the CAs registrars must chain to, and an optional TLS listener. An empty string is
/// the same as a missing key.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsSettings {
    /// PEM file of the CAs registrars' certificates must chain to (None: the system's roots).
    #[serde(deserialize_with = "value::optional_path")]
    pub ca_file: Option<PathBuf>,
    /// PEM certificate chain for the TLS listener.
    #[serde(deserialize_with = "value::optional_path")]
    pub cert_file: Option<PathBuf>,
    /// Its key.
    #[serde(deserialize_with = "value::optional_path")]
    pub key_file: Option<PathBuf>,
    /// Where the TLS listener listens (needs `cert_file` and `key_file`).
    #[serde(deserialize_with = "value::optional_socket_addr")]
    pub listen: Option<SocketAddr>,
}

/// `[inbound]`: where requests for registered contacts are relayed, whom the relay trusts and
/// what everyone else gets.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InboundSettings {
    /// The SIP proxy that gets requests for registered contacts, over UDP (None: not relayed).
    #[serde(deserialize_with = "value::optional_socket_addr")]
    pub proxy: Option<SocketAddr>,
    /// Networks trusted besides the rows' registrars (`"203.0.113.0/24"`, `"2001:db8::1"`).
    #[serde(deserialize_with = "value::each_parsed")]
    pub trusted: Vec<IpPrefix>,
    /// Untrusted senders' requests for registered contacts: `"drop"` or `"strip"`.
    #[serde(deserialize_with = "value::parsed")]
    pub untrusted: UntrustedPolicy,
    /// What untrusted senders get for users we do not relay for: `"404"` or `"silent"`.
    #[serde(deserialize_with = "value::parsed")]
    pub unknown_user: UnknownUserReply,
    /// Answers per second to untrusted senders, all together (0: none).
    pub reply_rate: u32,
}

impl Default for InboundSettings {
    fn default() -> Self {
        let policy = InboundPolicy::default();
        InboundSettings {
            proxy: None,
            trusted: policy.trusted,
            untrusted: policy.untrusted,
            unknown_user: policy.unknown_user,
            reply_rate: policy.reply_rate,
        }
    }
}

impl InboundSettings {
    /// The relay's trust policy.
    pub fn policy(&self) -> InboundPolicy {
        InboundPolicy {
            trusted: self.trusted.clone(),
            untrusted: self.untrusted,
            unknown_user: self.unknown_user,
            reply_rate: self.reply_rate,
        }
    }
}

/// `[database]`: how the daemon follows the table without being told, and what it writes back.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseSettings {
    /// Diff reload every so often (`reload_interval_secs`; 0, None: only on
    /// `uac.reg_reload`, SIGHUP or NOTIFY).
    #[serde(
        rename = "reload_interval_secs",
        deserialize_with = "value::seconds_or_off"
    )]
    pub reload_interval: Option<Duration>,
    /// PostgreSQL: LISTEN for the `uacreg_changed` notifications the migrations' trigger sends.
    pub notify: bool,
    /// Write each registration's state to the `uacreg_status` table.
    pub status_table: bool,
    /// How often changed status rows are written, one transaction per round
    /// (`status_interval_secs`, at least 1).
    #[serde(
        rename = "status_interval_secs",
        deserialize_with = "value::seconds_at_least_one"
    )]
    pub status_interval: Duration,
    /// Create and upgrade uacreg's tables (and the NOTIFY trigger) on connecting. Off for a
    /// database user that may only read: the tables must then exist already.
    pub migrate: bool,
    /// A reload that would remove more than this share of the running rows is refused unless
    /// forced (`uac.reg_reload force`): a truncated table, a wrong schema or user must not
    /// un-REGISTER every trunk at once. 1.0 lets any reload through.
    #[serde(deserialize_with = "value::fraction")]
    pub max_removed_share: f64,
    /// PostgreSQL/MySQL: longest a statement may run (`statement_timeout_secs`, at least 1).
    #[serde(
        rename = "statement_timeout_secs",
        deserialize_with = "value::seconds_at_least_one"
    )]
    pub statement_timeout: Duration,
    /// PostgreSQL/MySQL: longest a statement may wait for a lock (`lock_timeout_secs`, at
    /// least 1).
    #[serde(
        rename = "lock_timeout_secs",
        deserialize_with = "value::seconds_at_least_one"
    )]
    pub lock_timeout: Duration,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        let timeouts = ServerTimeouts::default();
        DatabaseSettings {
            reload_interval: None,
            notify: true,
            status_table: false,
            status_interval: Duration::from_secs(5),
            migrate: true,
            max_removed_share: 0.5,
            statement_timeout: timeouts.statement,
            lock_timeout: timeouts.lock,
        }
    }
}

impl DatabaseSettings {
    /// Statement and lock timeouts of PostgreSQL and MySQL/MariaDB sessions.
    pub fn timeouts(&self) -> ServerTimeouts {
        ServerTimeouts {
            statement: self.statement_timeout,
            lock: self.lock_timeout,
        }
    }
}

/// `[web]`: the web console (`/ui`), served with the JSON-RPC it uses.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebSettings {
    /// Serve the console at all.
    pub enabled: bool,
    /// Serve it (with the JSON-RPC, same token) on this address as well as on `rpc_listen`
    /// (None: only on `rpc_listen`).
    #[serde(deserialize_with = "value::optional_socket_addr")]
    pub listen: Option<std::net::SocketAddr>,
}

impl Default for WebSettings {
    fn default() -> Self {
        WebSettings {
            enabled: true,
            listen: None,
        }
    }
}

/// `[cluster]`: several nodes sharing the rows of one PostgreSQL or MySQL/MariaDB database.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterSettings {
    pub enabled: bool,
    /// This node's name among the others (None: the host name and the SIP port,
    /// `host:5062`). Two running nodes must never share one.
    #[serde(deserialize_with = "value::optional_text")]
    pub node_id: Option<String>,
    /// How long a shard lease lasts unrenewed (`lease_secs`); a dead node's rows move after
    /// about this long.
    #[serde(rename = "lease_secs", deserialize_with = "value::seconds")]
    pub lease: Duration,
    /// Shards the rows are divided into; every node of a cluster must use the same count.
    pub shards: u32,
    /// Shards a node gives back per round when it holds more than its share.
    pub max_releases_per_round: usize,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        ClusterSettings {
            enabled: false,
            node_id: None,
            lease: Duration::from_secs(10),
            shards: 256,
            max_releases_per_round: 8,
        }
    }
}

impl ClusterSettings {
    /// The node id: configured, or `host:port` from the host name and the SIP port.
    pub fn node_id(&self, sip_port: u16) -> String {
        if let Some(id) = &self.node_id {
            return id.clone();
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_else(|| "uacregd".to_owned());
        format!("{host}:{sip_port}")
    }
}

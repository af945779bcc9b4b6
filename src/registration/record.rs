//! A validated `uacreg` row: what one registration is asked to do.
//!
//! The store turns database rows into [`Record`]s (or into a named error for that row alone); the
//! core never sees an unvalidated row. Everything here is plain data so that a reload can compare
//! the old and the new record of an `l_uuid` field by field and decide whether the binding at the
//! registrar is still the same one.

use std::fmt;

/// Kamailio's `flags` bit that marks a row as disabled.
pub const FLAG_DISABLED: i32 = 1;

/// A secret column (`auth_password`, `auth_ha1`). Its `Debug` never prints the value, so a record
/// can be logged or shown in an error without leaking it.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    /// The clear value, for computing digests and for an operator who asked to see it.
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("Secret(empty)")
        } else {
            f.write_str("Secret(***)")
        }
    }
}

/// Transport named by `auth_proxy` (`;transport=`) or by a `sips:` URI.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
}

impl Transport {
    /// The token used in a Via header and in `;transport=` parameters.
    pub fn via_token(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
            Transport::Tls => "TLS",
        }
    }
}

impl Transport {
    /// `udp`, `tcp`, `tls` as in `;transport=` and Kamailio socket names.
    pub fn parse(token: &str) -> Option<Transport> {
        match token.to_ascii_lowercase().as_str() {
            "udp" => Some(Transport::Udp),
            "tcp" => Some(Transport::Tcp),
            "tls" => Some(Transport::Tls),
            _ => None,
        }
    }

    /// TCP and TLS: no retransmissions, connections to keep.
    pub fn is_stream(self) -> bool {
        self != Transport::Udp
    }

    pub fn default_port(self) -> u16 {
        match self {
            Transport::Tls => 5061,
            _ => 5060,
        }
    }
}

/// Where REGISTERs for a row are sent: the `auth_proxy` URI if set, otherwise `r_domain`.
/// `port` and `transport` are `None` when the row did not name them; RFC 3263 then decides
/// (NAPTR and SRV records, or 5060/5061 and UDP).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Destination {
    pub host: String,
    pub port: Option<u16>,
    pub transport: Option<Transport>,
    /// A `sips:` URI: only TLS may carry the requests.
    pub secure: bool,
}

impl Destination {
    /// A UDP destination at an explicit address (tests, the demo).
    pub fn udp(host: impl Into<String>, port: u16) -> Destination {
        Destination {
            host: host.into(),
            port: Some(port),
            transport: Some(Transport::Udp),
            secure: false,
        }
    }

    /// Whether the host is an IP literal (no DNS involved).
    pub fn is_ip_literal(&self) -> bool {
        self.host.parse::<std::net::IpAddr>().is_ok()
    }
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.secure { "sips:" } else { "sip:" })?;
        if self.host.contains(':') && !self.host.starts_with('[') {
            write!(f, "[{}]", self.host)?;
        } else {
            f.write_str(&self.host)?;
        }
        if let Some(port) = self.port {
            write!(f, ":{port}")?;
        }
        if let Some(transport) = self.transport {
            write!(
                f,
                ";transport={}",
                transport.via_token().to_ascii_lowercase()
            )?;
        }
        Ok(())
    }
}

/// A local socket as Kamailio names it in the `socket` column: `proto:ip:port`
/// (`udp:10.0.0.5:5060`, `tcp:[2001:db8::5]:5060`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LocalSocket {
    pub transport: Transport,
    pub addr: std::net::SocketAddr,
}

impl LocalSocket {
    pub fn parse(text: &str) -> Option<LocalSocket> {
        let (proto, rest) = text.trim().split_once(':')?;
        let transport = Transport::parse(proto)?;
        let addr = rest.parse().ok().or_else(|| {
            // Bare IPv6 without brackets: `udp:::1:5060` is ambiguous; accept `ip:port` with the
            // port after the last colon.
            let (ip, port) = rest.rsplit_once(':')?;
            Some(std::net::SocketAddr::new(
                ip.parse().ok()?,
                port.parse().ok()?,
            ))
        })?;
        Some(LocalSocket { transport, addr })
    }
}

impl fmt::Display for LocalSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}",
            self.transport.via_token().to_ascii_lowercase(),
            self.addr
        )
    }
}

/// What the digest answer is computed from. `auth_ha1` wins over `auth_password` when both are
/// set (Kamailio's rule); an HA1 is the MD5 `username:realm:password` hash, so it can only answer
/// MD5 challenges.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Credentials {
    Password { username: String, password: Secret },
    Ha1 { username: String, ha1: Secret },
}

impl Credentials {
    pub fn username(&self) -> &str {
        match self {
            Credentials::Password { username, .. } | Credentials::Ha1 { username, .. } => username,
        }
    }
}

/// One validated row of the `uacreg` table. The column fields keep the database values as they
/// were (RPC shows them back verbatim); the derived fields are what the core acts on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Database primary key (informational; rows are identified by `l_uuid`).
    pub id: i64,
    pub l_uuid: String,
    pub l_username: String,
    pub l_domain: String,
    pub r_username: String,
    pub r_domain: String,
    pub realm: String,
    pub auth_username: String,
    pub auth_password: Secret,
    pub auth_ha1: Secret,
    pub auth_proxy: String,
    pub expires: u32,
    pub flags: i32,
    pub reg_delay: u32,
    pub contact_addr: String,
    pub socket: String,
    /// Kamailio's version-6 column; empty when the table has no such column.
    pub contact_user: String,

    // ---- derived by validation ----
    /// Where to send the REGISTERs.
    pub destination: Destination,
    /// `host:port` put into the Contact URI (the row's `contact_addr`, or the daemon's default
    /// contact address when the row leaves it empty).
    pub contact_host_port: String,
    /// `None` when the row has no auth_username or no secret: such a row can only register with a
    /// registrar that does not challenge.
    pub credentials: Option<Credentials>,
    /// The row's `socket`, parsed: REGISTERs leave from there.
    pub local_socket: Option<LocalSocket>,
}

impl Record {
    /// `flags & 1`: the operator disabled the row.
    pub fn is_disabled(&self) -> bool {
        self.flags & FLAG_DISABLED != 0
    }

    /// Request-URI of the REGISTER: `sip:r_domain`.
    pub fn request_uri(&self) -> String {
        format!("sip:{}", self.r_domain)
    }

    /// Address of record used in To and From: `sip:r_username@r_domain`.
    pub fn aor(&self) -> String {
        format!("sip:{}@{}", self.r_username, self.r_domain)
    }

    /// The Contact URI this row binds: `sip:l_uuid@contact_addr`, or with Kamailio 6's
    /// `contact_user` set, `sip:contact_user@contact_addr;line=l_uuid`.
    pub fn contact_uri(&self) -> String {
        if self.contact_user.is_empty() {
            format!("sip:{}@{}", self.l_uuid, self.contact_host_port)
        } else {
            format!(
                "sip:{}@{};line={}",
                self.contact_user, self.contact_host_port, self.l_uuid
            )
        }
    }

    /// The user part that identifies our binding among the Contacts of a 200 OK.
    pub fn contact_user_part(&self) -> &str {
        if self.contact_user.is_empty() {
            &self.l_uuid
        } else {
            &self.contact_user
        }
    }

    /// True when `other` describes the same binding at the same registrar: a reload that changes
    /// only credentials, expires or delay refreshes the binding in place instead of removing it.
    pub fn same_binding(&self, other: &Record) -> bool {
        self.destination == other.destination
            && self.r_username == other.r_username
            && self.r_domain == other.r_domain
            && self.contact_uri() == other.contact_uri()
            && self.socket == other.socket
    }
}

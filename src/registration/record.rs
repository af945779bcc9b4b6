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
/// can be logged or shown in an error without leaking it. `Secret<&str>` is the same guard over a
/// value borrowed from a [`Record`], which keeps its columns packed.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct Secret<S = String>(S);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    /// The same secret, borrowed.
    pub fn borrowed(&self) -> Secret<&str> {
        Secret(&self.0)
    }
}

impl<S: AsRef<str>> Secret<S> {
    /// The clear value, for computing digests and for an operator who asked to see it.
    pub fn expose(&self) -> &str {
        self.0.as_ref()
    }
    pub fn is_empty(&self) -> bool {
        self.0.as_ref().is_empty()
    }
}

impl<'a> Secret<&'a str> {
    /// The clear value, borrowed for as long as the record it came from.
    pub fn expose_borrowed(&self) -> &'a str {
        self.0
    }
}

impl<S: AsRef<str>> fmt::Debug for Secret<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
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
    /// Boxed, not growable: every record keeps one.
    pub host: Box<str>,
    pub port: Option<u16>,
    pub transport: Option<Transport>,
    /// A `sips:` URI: only TLS may carry the requests.
    pub secure: bool,
}

impl Destination {
    /// A UDP destination at an explicit address (tests, the demo).
    pub fn udp(host: impl Into<String>, port: u16) -> Destination {
        Destination {
            host: host.into().into_boxed_str(),
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

/// What the digest answer is computed from, borrowed from the record's columns. `auth_ha1` wins
/// over `auth_password` when both are set (Kamailio's rule); an HA1 is the MD5
/// `username:realm:password` hash, so it can only answer MD5 challenges.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Credentials<'a> {
    Password {
        username: &'a str,
        password: Secret<&'a str>,
    },
    Ha1 {
        username: &'a str,
        /// As the row stores it; validation checked it is 32 hex digits, in either case.
        ha1: Secret<&'a str>,
    },
}

impl<'a> Credentials<'a> {
    pub fn username(&self) -> &'a str {
        match self {
            Credentials::Password { username, .. } | Credentials::Ha1 { username, .. } => username,
        }
    }
}

/// The columns of one validated `uacreg` row, each its own value: what the store builds a
/// [`Record`] from and what a test changes to make another one. The store builds it from
/// columns borrowed from the row it read (`RecordFields<&str>`): a record packs its text into
/// one buffer, so owned copies of every column would only be made to be thrown away.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordFields<S: AsRef<str> = String> {
    /// Database primary key (informational; rows are identified by `l_uuid`).
    pub id: i64,
    pub l_uuid: S,
    pub l_username: S,
    pub l_domain: S,
    pub r_username: S,
    pub r_domain: S,
    pub realm: S,
    pub auth_username: S,
    pub auth_password: Secret<S>,
    pub auth_ha1: Secret<S>,
    pub auth_proxy: S,
    pub expires: u32,
    pub flags: i32,
    pub reg_delay: u32,
    pub contact_addr: S,
    pub socket: S,
    /// Kamailio's version-6 column; empty when the table has no such column.
    pub contact_user: S,

    // ---- derived by validation ----
    /// Where to send the REGISTERs.
    pub destination: Destination,
    /// `host:port` put into the Contact URI (the row's `contact_addr`, or the daemon's default
    /// contact address when the row leaves it empty).
    pub contact_host_port: S,
}

/// The text columns of a [`Record`], in the order they are packed.
#[derive(Clone, Copy)]
enum Column {
    LUuid,
    LUsername,
    LDomain,
    RUsername,
    RDomain,
    Realm,
    AuthUsername,
    AuthPassword,
    AuthHa1,
    AuthProxy,
    ContactAddr,
    Socket,
    ContactUser,
    ContactHostPort,
}

const TEXT_COLUMNS: usize = Column::ContactHostPort as usize + 1;

/// Fourteen text columns in one heap block: their concatenation and where each ends.
///
/// A table of 100,000 rows keeps every record for as long as the daemon runs. Fourteen `String`s
/// cost 336 bytes inline and fourteen heap blocks, each rounded up to an allocator size class;
/// packed they cost 44 bytes inline and one block. Rows are rebuilt, never edited, so nothing
/// is lost by making a column unchangeable in place. Ends are 16-bit: Kamailio's columns are
/// at most 255 characters, so a row's text is under 4 KB, far from the 64 KiB limit
/// ([`RecordTooLong`] otherwise).
#[derive(Clone, PartialEq, Eq)]
struct PackedText {
    text: Box<str>,
    ends: [u16; TEXT_COLUMNS],
}

/// A row whose text columns together exceed [`MAX_RECORD_TEXT`] bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the row's text columns hold {0} bytes together; at most {MAX_RECORD_TEXT} fit")]
pub struct RecordTooLong(pub usize);

/// The most text a record's columns may hold together.
pub const MAX_RECORD_TEXT: usize = u16::MAX as usize;

impl PackedText {
    fn new(columns: [&str; TEXT_COLUMNS]) -> Result<PackedText, RecordTooLong> {
        let total = columns.iter().map(|c| c.len()).sum();
        if total > MAX_RECORD_TEXT {
            return Err(RecordTooLong(total));
        }
        let mut text = String::with_capacity(total);
        let mut ends = [0; TEXT_COLUMNS];
        for (end, column) in ends.iter_mut().zip(columns) {
            text.push_str(column);
            *end = text.len() as u16; // at most `total`, checked above
        }
        Ok(PackedText {
            text: text.into_boxed_str(),
            ends,
        })
    }

    fn get(&self, column: Column) -> &str {
        let index = column as usize;
        let start = if index == 0 { 0 } else { self.ends[index - 1] };
        &self.text[start as usize..self.ends[index] as usize]
    }
}

/// One validated row of the `uacreg` table. The columns keep the database values as they were
/// (RPC shows them back verbatim); the derived fields are what the core acts on. The text
/// columns are packed (see [`PackedText`]) and read through accessors; build a record from
/// [`RecordFields`].
#[derive(Clone, PartialEq, Eq)]
pub struct Record {
    /// Database primary key (informational; rows are identified by `l_uuid`).
    pub id: i64,
    pub expires: u32,
    pub flags: i32,
    pub reg_delay: u32,
    /// Where to send the REGISTERs.
    pub destination: Destination,
    text: PackedText,
}

impl<S: AsRef<str>> TryFrom<RecordFields<S>> for Record {
    type Error = RecordTooLong;

    fn try_from(fields: RecordFields<S>) -> Result<Record, RecordTooLong> {
        Ok(Record {
            id: fields.id,
            expires: fields.expires,
            flags: fields.flags,
            reg_delay: fields.reg_delay,
            destination: fields.destination,
            text: PackedText::new([
                fields.l_uuid.as_ref(),
                fields.l_username.as_ref(),
                fields.l_domain.as_ref(),
                fields.r_username.as_ref(),
                fields.r_domain.as_ref(),
                fields.realm.as_ref(),
                fields.auth_username.as_ref(),
                fields.auth_password.expose(),
                fields.auth_ha1.expose(),
                fields.auth_proxy.as_ref(),
                fields.contact_addr.as_ref(),
                fields.socket.as_ref(),
                fields.contact_user.as_ref(),
                fields.contact_host_port.as_ref(),
            ])?,
        })
    }
}

impl Record {
    /// The record's columns as separate values, to change some and build another record.
    pub fn to_fields(&self) -> RecordFields {
        RecordFields {
            id: self.id,
            l_uuid: self.l_uuid().to_owned(),
            l_username: self.l_username().to_owned(),
            l_domain: self.l_domain().to_owned(),
            r_username: self.r_username().to_owned(),
            r_domain: self.r_domain().to_owned(),
            realm: self.realm().to_owned(),
            auth_username: self.auth_username().to_owned(),
            auth_password: Secret::new(self.auth_password().expose()),
            auth_ha1: Secret::new(self.auth_ha1().expose()),
            auth_proxy: self.auth_proxy().to_owned(),
            expires: self.expires,
            flags: self.flags,
            reg_delay: self.reg_delay,
            contact_addr: self.contact_addr().to_owned(),
            socket: self.socket().to_owned(),
            contact_user: self.contact_user().to_owned(),
            destination: self.destination.clone(),
            contact_host_port: self.contact_host_port().to_owned(),
        }
    }

    pub fn l_uuid(&self) -> &str {
        self.text.get(Column::LUuid)
    }
    pub fn l_username(&self) -> &str {
        self.text.get(Column::LUsername)
    }
    pub fn l_domain(&self) -> &str {
        self.text.get(Column::LDomain)
    }
    pub fn r_username(&self) -> &str {
        self.text.get(Column::RUsername)
    }
    pub fn r_domain(&self) -> &str {
        self.text.get(Column::RDomain)
    }
    pub fn realm(&self) -> &str {
        self.text.get(Column::Realm)
    }
    pub fn auth_username(&self) -> &str {
        self.text.get(Column::AuthUsername)
    }
    pub fn auth_password(&self) -> Secret<&str> {
        Secret(self.text.get(Column::AuthPassword))
    }
    pub fn auth_ha1(&self) -> Secret<&str> {
        Secret(self.text.get(Column::AuthHa1))
    }
    pub fn auth_proxy(&self) -> &str {
        self.text.get(Column::AuthProxy)
    }
    pub fn contact_addr(&self) -> &str {
        self.text.get(Column::ContactAddr)
    }
    pub fn socket(&self) -> &str {
        self.text.get(Column::Socket)
    }
    /// The row's `socket`, parsed: REGISTERs leave from there. Validation refused a row whose
    /// socket does not parse or is not one the daemon serves, so `None` means the column is
    /// empty. Parsed on use (once per REGISTER) rather than kept: 36 bytes a row for a column
    /// most rows leave empty.
    pub fn local_socket(&self) -> Option<LocalSocket> {
        LocalSocket::parse(self.socket())
    }
    /// Kamailio's version-6 column; empty when the table has no such column.
    pub fn contact_user(&self) -> &str {
        self.text.get(Column::ContactUser)
    }
    /// `host:port` put into the Contact URI (the row's `contact_addr`, or the daemon's default
    /// contact address when the row leaves it empty).
    pub fn contact_host_port(&self) -> &str {
        self.text.get(Column::ContactHostPort)
    }

    /// What digests are computed from; `None` when the row has no auth_username or no secret:
    /// such a row can only register with a registrar that does not challenge.
    pub fn credentials(&self) -> Option<Credentials<'_>> {
        let username = self.auth_username();
        if username.is_empty() {
            None
        } else if !self.auth_ha1().is_empty() {
            Some(Credentials::Ha1 {
                username,
                ha1: self.auth_ha1(),
            })
        } else if !self.auth_password().is_empty() {
            Some(Credentials::Password {
                username,
                password: self.auth_password(),
            })
        } else {
            None
        }
    }

    /// `flags & 1`: the operator disabled the row.
    pub fn is_disabled(&self) -> bool {
        self.flags & FLAG_DISABLED != 0
    }

    /// Request-URI of the REGISTER: `sip:r_domain`.
    pub fn request_uri(&self) -> String {
        ["sip:", self.r_domain()].concat()
    }

    /// Address of record used in To and From: `sip:r_username@r_domain`, with what a URI's
    /// user part cannot hold %-escaped.
    pub fn aor(&self) -> String {
        let user = crate::sip::message::escape_user(self.r_username());
        ["sip:", &user, "@", self.r_domain()].concat()
    }

    /// The Contact URI this row binds: `sip:l_uuid@contact_addr`, or with Kamailio 6's
    /// `contact_user` set, `sip:contact_user@contact_addr;line=l_uuid`.
    pub fn contact_uri(&self) -> String {
        if self.contact_user().is_empty() {
            ["sip:", self.l_uuid(), "@", self.contact_host_port()].concat()
        } else {
            [
                "sip:",
                self.contact_user(),
                "@",
                self.contact_host_port(),
                ";line=",
                self.l_uuid(),
            ]
            .concat()
        }
    }

    /// The user part that identifies our binding among the Contacts of a 200 OK.
    pub fn contact_user_part(&self) -> &str {
        if self.contact_user().is_empty() {
            self.l_uuid()
        } else {
            self.contact_user()
        }
    }

    /// True when `other` describes the same binding at the same registrar: a reload that changes
    /// only credentials, expires or delay refreshes the binding in place instead of removing it.
    pub fn same_binding(&self, other: &Record) -> bool {
        self.destination == other.destination
            && self.r_username() == other.r_username()
            && self.r_domain() == other.r_domain()
            && self.contact_uri() == other.contact_uri()
            && self.socket() == other.socket()
    }
}

/// Like [`RecordFields`]' `Debug`: every column by name, secrets masked.
impl fmt::Debug for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Record")
            .field("id", &self.id)
            .field("l_uuid", &self.l_uuid())
            .field("l_username", &self.l_username())
            .field("l_domain", &self.l_domain())
            .field("r_username", &self.r_username())
            .field("r_domain", &self.r_domain())
            .field("realm", &self.realm())
            .field("auth_username", &self.auth_username())
            .field("auth_password", &self.auth_password())
            .field("auth_ha1", &self.auth_ha1())
            .field("auth_proxy", &self.auth_proxy())
            .field("expires", &self.expires)
            .field("flags", &self.flags)
            .field("reg_delay", &self.reg_delay)
            .field("contact_addr", &self.contact_addr())
            .field("socket", &self.socket())
            .field("contact_user", &self.contact_user())
            .field("destination", &self.destination)
            .field("contact_host_port", &self.contact_host_port())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields() -> RecordFields {
        RecordFields {
            id: 7,
            l_uuid: "line-1".into(),
            l_username: "alice".into(),
            l_domain: "gw.test".into(),
            r_username: "1001".into(),
            r_domain: "sip.example.net".into(),
            realm: String::new(),
            auth_username: "1001".into(),
            auth_password: Secret::new("s3cret-pw"),
            auth_ha1: Secret::new("0123456789ABCDEF0123456789abcdef"),
            auth_proxy: "sip:proxy.example.net;transport=tcp".into(),
            expires: 600,
            flags: 0,
            reg_delay: 2,
            contact_addr: String::new(),
            socket: "udp:127.0.0.1:5060".into(),
            contact_user: String::new(),
            destination: Destination::udp("proxy.example.net", 5060),
            contact_host_port: "192.0.2.1:5060".into(),
        }
    }

    #[test]
    fn packed_columns_read_back_as_built_including_empty_ones() {
        let fields = fields();
        let record = Record::try_from(fields.clone()).unwrap();
        assert_eq!(record.to_fields(), fields);
        assert_eq!(record.l_uuid(), "line-1");
        assert_eq!(record.realm(), "");
        assert_eq!(record.r_domain(), "sip.example.net");
        assert_eq!(record.contact_addr(), "");
        assert_eq!(record.contact_host_port(), "192.0.2.1:5060");
        assert_eq!(record.contact_uri(), "sip:line-1@192.0.2.1:5060");
        assert_eq!(
            record.local_socket(),
            Some(LocalSocket {
                transport: Transport::Udp,
                addr: "127.0.0.1:5060".parse().unwrap(),
            })
        );
    }

    #[test]
    fn ha1_wins_over_the_password_and_neither_counts_without_a_username() {
        let record = Record::try_from(fields()).unwrap();
        match record.credentials() {
            Some(Credentials::Ha1 { username, ha1 }) => {
                assert_eq!(username, "1001");
                assert_eq!(ha1.expose(), "0123456789ABCDEF0123456789abcdef");
            }
            other => panic!("expected HA1 credentials, got {other:?}"),
        }
        let mut no_ha1 = fields();
        no_ha1.auth_ha1 = Secret::default();
        let record = Record::try_from(no_ha1.clone()).unwrap();
        assert!(matches!(
            record.credentials(),
            Some(Credentials::Password { password, .. }) if password.expose() == "s3cret-pw"
        ));
        no_ha1.auth_username = String::new();
        assert_eq!(Record::try_from(no_ha1).unwrap().credentials(), None);
    }

    #[test]
    fn text_beyond_64_kib_is_refused_not_cut() {
        let base = fields();
        assert!(base.contact_user.is_empty());
        let others = Record::try_from(base.clone()).unwrap().text.text.len();
        let mut largest = base;
        largest.contact_user = "u".repeat(MAX_RECORD_TEXT - others);
        let record = Record::try_from(largest.clone()).unwrap();
        assert_eq!(record.contact_user().len(), MAX_RECORD_TEXT - others);
        assert_eq!(record.contact_host_port(), "192.0.2.1:5060");
        let mut too_long = largest;
        too_long.contact_user.push('u');
        assert_eq!(
            Record::try_from(too_long).unwrap_err(),
            RecordTooLong(MAX_RECORD_TEXT + 1)
        );
    }

    #[test]
    fn debug_output_masks_both_secrets() {
        let shown = format!("{:?}", Record::try_from(fields()).unwrap());
        assert!(shown.contains("l_uuid: \"line-1\""), "{shown}");
        assert!(!shown.contains("s3cret-pw"), "{shown}");
        assert!(!shown.contains("0123456789"), "{shown}");
        assert!(shown.contains("Secret(***)"), "{shown}");
    }
}

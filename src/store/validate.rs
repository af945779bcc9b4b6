//! Turning a stored row into a [`Record`] the core can act on, or into a named reason why not.
//!
//! A row is judged on its own: one bad row is reported (with its id and l_uuid, never with a
//! secret) and every other row still loads. The rules follow Kamailio's loader, stricter where a
//! value would otherwise produce a REGISTER no registrar can accept.

use std::net::Ipv4Addr;

use thiserror::Error;

use super::row::RawRow;
use crate::registration::record::LocalSocket;
use crate::registration::{Destination, Record, RecordFields, RecordTooLong, Transport};

/// Values the daemon supplies for rows that leave them open.
#[derive(Clone, Debug, Default)]
pub struct RowDefaults {
    /// `host:port` used in the Contact when `contact_addr` is empty.
    pub contact_addr: String,
    /// Sockets the daemon listens on (`udp:127.0.0.1:5062`); a non-empty `socket` column must
    /// name one of them.
    pub sockets: Vec<LocalSocket>,
}

/// Why a row was not loaded. Display names the column and, except for secrets, the value.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum RowError {
    #[error("{column} is empty")]
    Missing { column: &'static str },
    #[error("{column} is {len} characters long; at most {max} are allowed")]
    TooLong {
        column: &'static str,
        len: usize,
        max: usize,
    },
    #[error("l_uuid {value:?} cannot be a SIP URI user part: {reason}")]
    BadLUuid { value: String, reason: String },
    #[error("{column} {value:?} is not a valid host[:port]")]
    BadHost { column: &'static str, value: String },
    #[error("{column} {value:?} contains characters not allowed in a SIP URI user part")]
    BadUser { column: &'static str, value: String },
    #[error("auth_proxy {value:?} is not a SIP URI: {reason}")]
    BadAuthProxy { value: String, reason: String },
    #[error("auth_proxy asks for transport {transport:?}; uacreg speaks udp, tcp and tls")]
    UnsupportedTransport { transport: String },
    #[error("socket {value:?} asks for {socket}, but auth_proxy asks for {proxy}")]
    TransportConflict {
        value: String,
        socket: &'static str,
        proxy: &'static str,
    },
    /// Its value is not shown: printing it would put the control character into the log.
    #[error("{column} contains a control character")]
    ControlCharacter { column: &'static str },
    #[error("{column} is negative ({value})")]
    Negative { column: &'static str, value: i64 },
    #[error("auth_ha1 is not 32 hexadecimal digits (an MD5 HA1)")]
    BadHa1,
    #[error("socket {value:?} is not a socket uacregd listens on (it listens on {served})")]
    UnknownSocket { value: String, served: String },
    #[error("l_uuid {l_uuid:?} is already used by the row with id {first_id}")]
    Duplicate { l_uuid: String, first_id: i64 },
    #[error(transparent)]
    TooMuchText(#[from] RecordTooLong),
}

const MAX_FIELD: usize = 255;

fn require(column: &'static str, value: &str) -> Result<(), RowError> {
    if value.is_empty() {
        return Err(RowError::Missing { column });
    }
    if value.len() > MAX_FIELD {
        return Err(RowError::TooLong {
            column,
            len: value.len(),
            max: MAX_FIELD,
        });
    }
    Ok(())
}

/// RFC 3261 `user` characters: unreserved, escaped, and user-unreserved.
fn is_user_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-_.!~*'()&=+$,;?/%".contains(c)
}

fn check_l_uuid(value: &str) -> Result<(), RowError> {
    require("l_uuid", value)?;
    if value.len() > 64 {
        return Err(RowError::TooLong {
            column: "l_uuid",
            len: value.len(),
            max: 64,
        });
    }
    // `;` and `?` are legal in a user part but would change the meaning of our Contact URI.
    if let Some(c) = value
        .chars()
        .find(|&c| !is_user_char(c) || c == ';' || c == '?')
    {
        return Err(RowError::BadLUuid {
            value: value.into(),
            reason: format!("character {c:?} is not allowed"),
        });
    }
    Ok(())
}

fn is_hostname(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
}

/// Splits (with the one splitter, [`crate::sip::uri::split_host_port`]) and checks `host`,
/// `host:port`, `[v6]`, `[v6]:port`, bare `v6`. Returns the host without brackets and the port;
/// port 0 and white space around the text are refused.
fn parse_host_port(text: &str) -> Option<(String, Option<u16>)> {
    if text.trim() != text {
        return None;
    }
    let (host, port) = crate::sip::uri::split_host_port(text).ok()?;
    if port == Some(0) {
        return None;
    }
    // A host with a colon is an IPv6 address: the splitter lets no other through.
    let valid = host.contains(':') || host.parse::<Ipv4Addr>().is_ok() || is_hostname(&host);
    valid.then_some((host, port))
}

/// `sip:host[:port][;transport=x]`, `sips:…`, or Kamailio's bare `host[:port]`, read by the one
/// URI parser ([`crate::sip::uri::UriParts`]).
fn parse_proxy(value: &str) -> Result<Destination, RowError> {
    let bad = |reason: &str| RowError::BadAuthProxy {
        value: value.into(),
        reason: reason.into(),
    };
    let trimmed = value.trim().trim_start_matches('<').trim_end_matches('>');
    let lower = trimmed.to_ascii_lowercase();
    let has_scheme = lower.starts_with("sip:") || lower.starts_with("sips:");
    if !has_scheme && (lower.contains("://") || lower.starts_with("tel:")) {
        return Err(bad("only sip: and sips: URIs are supported"));
    }
    // The bare form is the `sip:` URI it stands for. A user part carries no meaning for routing.
    let text = if has_scheme {
        trimmed.to_string()
    } else {
        format!("sip:{trimmed}")
    };
    let uri = crate::sip::uri::UriParts::parse(&text).map_err(|err| bad(&err.0))?;
    let secure = uri.scheme == "sips";
    let mut transport = secure.then_some(Transport::Tls);
    for (name, val) in &uri.params {
        if name == "transport" {
            let val = val.as_deref().unwrap_or("");
            let Some(named) = Transport::parse(val) else {
                return Err(RowError::UnsupportedTransport {
                    transport: val.to_string(),
                });
            };
            if secure && named != Transport::Tls {
                return Err(bad("a sips: URI can only use transport=tls"));
            }
            transport = Some(named);
        }
    }
    let valid_host =
        uri.host.contains(':') || uri.host.parse::<Ipv4Addr>().is_ok() || is_hostname(&uri.host);
    if !valid_host || uri.port == Some(0) {
        return Err(bad("invalid host or port"));
    }
    Ok(Destination {
        host: uri.host.into(),
        port: uri.port,
        transport,
        secure,
    })
}

fn non_negative(column: &'static str, value: i64) -> Result<u32, RowError> {
    if value < 0 {
        return Err(RowError::Negative { column, value });
    }
    Ok(u32::try_from(value).unwrap_or(u32::MAX))
}

/// Refuses a control character (HTAB included) in any column that reaches the wire: the
/// REGISTER (r_username, r_domain, auth_proxy, contact_addr, contact_user, l_uuid through the
/// Contact, auth_username and realm in the Authorization header), a relayed call's Request-URI
/// (l_username, l_domain), or a `socket` name. A CR or LF there would end a header line and
/// start another that the row's author, or whoever reached `uac.reg_add`, chose. The password
/// only goes into hashes, and the HA1 is checked to be hexadecimal.
fn check_no_control(row: &RawRow) -> Result<(), RowError> {
    let columns = [
        ("l_uuid", &row.l_uuid),
        ("l_username", &row.l_username),
        ("l_domain", &row.l_domain),
        ("r_username", &row.r_username),
        ("r_domain", &row.r_domain),
        ("realm", &row.realm),
        ("auth_username", &row.auth_username),
        ("auth_proxy", &row.auth_proxy),
        ("contact_addr", &row.contact_addr),
        ("socket", &row.socket),
        ("contact_user", &row.contact_user),
    ];
    match columns
        .iter()
        .find(|(_, value)| value.chars().any(char::is_control))
    {
        Some((column, _)) => Err(RowError::ControlCharacter { column }),
        None => Ok(()),
    }
}

/// Validates one row.
pub fn validate(row: &RawRow, defaults: &RowDefaults) -> Result<Record, RowError> {
    check_no_control(row)?;
    check_l_uuid(&row.l_uuid)?;
    require("l_username", &row.l_username)?;
    require("r_username", &row.r_username)?;
    require("r_domain", &row.r_domain)?;
    if row
        .r_username
        .chars()
        .any(|c| c.is_whitespace() || "<>\"@".contains(c))
    {
        return Err(RowError::BadUser {
            column: "r_username",
            value: row.r_username.clone(),
        });
    }
    let (domain_host, domain_port) =
        parse_host_port(&row.r_domain).ok_or_else(|| RowError::BadHost {
            column: "r_domain",
            value: row.r_domain.clone(),
        })?;

    let mut destination = if row.auth_proxy.trim().is_empty() {
        Destination {
            host: domain_host.into(),
            port: domain_port,
            transport: None,
            secure: false,
        }
    } else {
        parse_proxy(&row.auth_proxy)?
    };

    let local_socket = if row.socket.is_empty() {
        None
    } else {
        let parsed = LocalSocket::parse(&row.socket);
        match parsed {
            Some(socket) if defaults.sockets.contains(&socket) => Some(socket),
            _ => {
                return Err(RowError::UnknownSocket {
                    value: row.socket.clone(),
                    served: defaults
                        .sockets
                        .iter()
                        .map(|s| s.to_string())
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            }
        }
    };
    // The socket's protocol decides the transport when auth_proxy leaves it open (Kamailio
    // sends from the socket the row names, so its protocol is the one used).
    if let Some(socket) = local_socket {
        match destination.transport {
            None if destination.secure && socket.transport != Transport::Tls => {
                return Err(RowError::TransportConflict {
                    value: row.socket.clone(),
                    socket: socket.transport.via_token(),
                    proxy: "TLS (sips:)",
                });
            }
            None => destination.transport = Some(socket.transport),
            Some(named) if named != socket.transport => {
                return Err(RowError::TransportConflict {
                    value: row.socket.clone(),
                    socket: socket.transport.via_token(),
                    proxy: named.via_token(),
                });
            }
            Some(_) => {}
        }
    }

    let contact_host_port = if row.contact_addr.is_empty() {
        match local_socket {
            // A row sending from its own address is reached there too.
            Some(socket) if !socket.addr.ip().is_unspecified() => socket_host_port(socket.addr),
            _ => defaults.contact_addr.clone(),
        }
    } else {
        let (host, port) = parse_host_port(&row.contact_addr).ok_or_else(|| RowError::BadHost {
            column: "contact_addr",
            value: row.contact_addr.clone(),
        })?;
        // A bare IPv6 address is accepted in the column but goes into the URI in brackets.
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host
        };
        match port {
            Some(port) => format!("{host}:{port}"),
            None => host,
        }
    };
    if !row.contact_user.is_empty()
        && row
            .contact_user
            .chars()
            .any(|c| !is_user_char(c) || c == ';')
    {
        return Err(RowError::BadUser {
            column: "contact_user",
            value: row.contact_user.clone(),
        });
    }

    let expires = non_negative("expires", row.expires)?;
    let reg_delay = non_negative("reg_delay", row.reg_delay)?;

    let ha1 = row.auth_ha1.expose();
    let is_md5_hex = ha1.len() == 32 && ha1.chars().all(|c| c.is_ascii_hexdigit());
    if !ha1.is_empty() && !is_md5_hex {
        return Err(RowError::BadHa1);
    }
    Ok(Record::try_from(RecordFields {
        id: row.id,
        l_uuid: row.l_uuid.as_str(),
        l_username: row.l_username.as_str(),
        l_domain: row.l_domain.as_str(),
        r_username: row.r_username.as_str(),
        r_domain: row.r_domain.as_str(),
        realm: row.realm.as_str(),
        auth_username: row.auth_username.as_str(),
        auth_password: row.auth_password.borrowed(),
        auth_ha1: row.auth_ha1.borrowed(),
        auth_proxy: row.auth_proxy.as_str(),
        expires,
        flags: row.flags.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32,
        reg_delay,
        contact_addr: row.contact_addr.as_str(),
        socket: row.socket.as_str(),
        contact_user: row.contact_user.as_str(),
        destination,
        contact_host_port: contact_host_port.as_str(),
    })?)
}

/// `ip:port` with IPv6 in brackets, as a Contact host part.
fn socket_host_port(addr: std::net::SocketAddr) -> String {
    addr.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registration::{Credentials, Secret};

    fn defaults() -> RowDefaults {
        RowDefaults {
            contact_addr: "127.0.0.1:5062".into(),
            sockets: vec![LocalSocket::parse("udp:127.0.0.1:5062").unwrap()],
        }
    }

    fn good() -> RawRow {
        let mut row = RawRow::new("uuid1", "alice", "sip.example.com");
        row.auth_username = "alice".into();
        row.auth_password = Secret::new("s3cret-pw");
        row
    }

    fn err(row: RawRow) -> RowError {
        validate(&row, &defaults()).unwrap_err()
    }

    /// Found by the `row` fuzz target (fuzz/seeds/row/crash-cr-in-auth-username): a CR in
    /// auth_username went verbatim into the Authorization header of the REGISTER answering a
    /// challenge, ending that header line.
    /// Found by the `row` fuzz target (fuzz/seeds/row/crash-bare-ipv6-contact-addr): a bare
    /// IPv6 contact_addr (`::`) was accepted and went into the Contact unbracketed,
    /// `<sip:trunk-a@::>`, which no parser reads as a host.
    #[test]
    fn a_bare_ipv6_contact_addr_is_bracketed_in_the_contact() {
        let mut row = good();
        row.contact_addr = "::".into();
        let record = validate(&row, &defaults()).unwrap();
        assert_eq!(record.contact_uri(), "sip:uuid1@[::]");
        let mut row = good();
        row.contact_addr = "2001:db8::1".into();
        let record = validate(&row, &defaults()).unwrap();
        assert_eq!(record.contact_uri(), "sip:uuid1@[2001:db8::1]");
        // The bracketed forms are kept as they are, with or without a port.
        for (column, uri) in [
            ("[2001:db8::1]:5070", "sip:uuid1@[2001:db8::1]:5070"),
            ("[2001:db8::1]", "sip:uuid1@[2001:db8::1]"),
            ("gw.test:5080", "sip:uuid1@gw.test:5080"),
            ("192.0.2.1", "sip:uuid1@192.0.2.1"),
        ] {
            let mut row = good();
            row.contact_addr = column.into();
            let record = validate(&row, &defaults()).unwrap();
            assert_eq!(record.contact_uri(), uri, "{column}");
            // The column itself is reported as the operator wrote it.
            assert_eq!(record.contact_addr(), column);
        }
    }

    #[test]
    fn control_characters_never_reach_the_wire() {
        let mut row = RawRow::new("trunk-a", "alice", "registrar.test");
        row.auth_username = "\r".into();
        row.auth_password = Secret::new("secret");
        row.expires = 3600;
        row.flags = 3600;
        row.socket = "udp:127.0.0.1:5062".into();
        row.contact_user = "+49-30".into();
        assert_eq!(
            err(row.clone()),
            RowError::ControlCharacter {
                column: "auth_username"
            }
        );
        // Every column that reaches the wire, with CR, LF, NUL and a C1 control.
        for bad in ["ali\rce", "a\nP-Asserted-Identity: x", "a\0b", "a\u{85}b"] {
            let mut row = good();
            row.l_domain = bad.into();
            assert_eq!(err(row), RowError::ControlCharacter { column: "l_domain" });
            let mut row = good();
            row.realm = bad.into();
            assert_eq!(err(row), RowError::ControlCharacter { column: "realm" });
            let mut row = good();
            row.auth_proxy = format!("sip:{bad}");
            assert_eq!(
                err(row),
                RowError::ControlCharacter {
                    column: "auth_proxy"
                }
            );
        }
        // Not shown in the message (it goes to the log).
        let shown = RowError::ControlCharacter { column: "realm" }.to_string();
        assert_eq!(shown, "realm contains a control character");
        // A password is only hashed.
        let mut row = good();
        row.auth_password = Secret::new("tab\tin password");
        assert!(validate(&row, &defaults()).is_ok());
    }

    #[test]
    fn good_row_derives_destination_contact_and_credentials() {
        let record = validate(&good(), &defaults()).unwrap();
        assert_eq!(&*record.destination.host, "sip.example.com");
        assert_eq!(record.destination.port, None);
        assert_eq!(record.contact_host_port(), "127.0.0.1:5062");
        assert_eq!(record.contact_uri(), "sip:uuid1@127.0.0.1:5062");
        assert!(matches!(
            record.credentials(),
            Some(Credentials::Password { .. })
        ));
    }

    #[test]
    fn auth_proxy_forms() {
        for (proxy, host, port) in [
            ("sip:127.0.0.1:5070", "127.0.0.1", Some(5070)),
            ("sip:proxy.example.com", "proxy.example.com", None),
            ("proxy.example.com:5080", "proxy.example.com", Some(5080)),
            (
                "sip:[2001:db8::1]:5060;transport=udp",
                "2001:db8::1",
                Some(5060),
            ),
            ("<sip:u@10.0.0.1:5999;lr>", "10.0.0.1", Some(5999)),
        ] {
            let mut row = good();
            row.auth_proxy = proxy.into();
            let record = validate(&row, &defaults()).unwrap();
            assert_eq!(&*record.destination.host, host, "{proxy}");
            assert_eq!(record.destination.port, port, "{proxy}");
        }
        for bad in [
            "sip:",
            "sip:host:99999",
            "sip:ho st",
            "sip:host:abc",
            "http://x",
        ] {
            let mut row = good();
            row.auth_proxy = bad.into();
            assert!(matches!(err(row), RowError::BadAuthProxy { .. }), "{bad}");
        }
        let mut row = good();
        row.auth_proxy = "sip:proxy.example.com;transport=tcp".into();
        assert_eq!(
            validate(&row, &defaults()).unwrap().destination.transport,
            Some(Transport::Tcp)
        );
        let mut row = good();
        row.auth_proxy = "sips:proxy.example.com".into();
        let destination = validate(&row, &defaults()).unwrap().destination;
        assert!(destination.secure);
        assert_eq!(destination.transport, Some(Transport::Tls));
        let mut row = good();
        row.auth_proxy = "sip:proxy.example.com;transport=sctp".into();
        assert_eq!(
            err(row).to_string(),
            "auth_proxy asks for transport \"sctp\"; uacreg speaks udp, tcp and tls"
        );
        let mut row = good();
        row.auth_proxy = "sips:proxy.example.com;transport=udp".into();
        assert!(matches!(err(row), RowError::BadAuthProxy { .. }));
    }

    #[test]
    fn socket_picks_the_transport_and_the_contact() {
        let mut defaults = defaults();
        defaults
            .sockets
            .push(LocalSocket::parse("tcp:127.0.0.3:5070").unwrap());
        let mut row = good();
        row.socket = "tcp:127.0.0.3:5070".into();
        let record = validate(&row, &defaults).unwrap();
        assert_eq!(record.destination.transport, Some(Transport::Tcp));
        assert_eq!(record.contact_host_port(), "127.0.0.3:5070");
        let mut row = good();
        row.socket = "tcp:127.0.0.3:5070".into();
        row.auth_proxy = "sip:127.0.0.1;transport=udp".into();
        let error = validate(&row, &defaults).unwrap_err();
        assert!(
            matches!(error, RowError::TransportConflict { .. }),
            "{error:?}"
        );
    }

    #[test]
    fn required_columns() {
        for (column, clear) in [
            (
                "l_uuid",
                (|r: &mut RawRow| r.l_uuid.clear()) as fn(&mut RawRow),
            ),
            ("l_username", |r: &mut RawRow| r.l_username.clear()),
            ("r_username", |r: &mut RawRow| r.r_username.clear()),
            ("r_domain", |r: &mut RawRow| r.r_domain.clear()),
        ] {
            let mut row = good();
            clear(&mut row);
            assert_eq!(err(row), RowError::Missing { column });
        }
    }

    #[test]
    fn bad_values_are_named() {
        let mut row = good();
        row.l_uuid = "has space".into();
        assert!(matches!(err(row), RowError::BadLUuid { .. }));
        let mut row = good();
        row.r_domain = "bad domain".into();
        assert!(matches!(
            err(row),
            RowError::BadHost {
                column: "r_domain",
                ..
            }
        ));
        let mut row = good();
        row.contact_addr = "1.2.3.4:0".into();
        assert!(matches!(
            err(row),
            RowError::BadHost {
                column: "contact_addr",
                ..
            }
        ));
        let mut row = good();
        row.expires = -1;
        assert_eq!(
            err(row),
            RowError::Negative {
                column: "expires",
                value: -1
            }
        );
        let mut row = good();
        row.reg_delay = -5;
        assert!(matches!(
            err(row),
            RowError::Negative {
                column: "reg_delay",
                ..
            }
        ));
        let mut row = good();
        row.socket = "udp:10.9.9.9:5060".into();
        assert!(matches!(err(row), RowError::UnknownSocket { .. }));
        let mut row = good();
        row.socket = "udp:127.0.0.1:5062".into();
        assert!(validate(&row, &defaults()).is_ok());
    }

    #[test]
    fn a_row_with_more_than_64_kib_of_text_is_reported_not_cut() {
        let mut row = good();
        row.contact_user = "u".repeat(70_000);
        let e = err(row);
        assert!(matches!(e, RowError::TooMuchText(RecordTooLong(len)) if len > 70_000));
        assert!(e.to_string().contains("at most 65535 fit"), "{e}");
    }

    #[test]
    fn ha1_rules_and_secrecy() {
        let mut row = good();
        row.auth_ha1 = Secret::new("zz-definitely-not-hex-zzzzzzzzzzz");
        let e = err(row);
        assert_eq!(e, RowError::BadHa1);
        assert!(!e.to_string().contains("zz-definitely"));
        assert!(!format!("{e:?}").contains("zz-definitely"));

        let mut row = good();
        row.auth_ha1 = Secret::new("0123456789ABCDEF0123456789abcdef");
        let record = validate(&row, &defaults()).unwrap();
        match record.credentials() {
            // Kept as stored; the digest computation reads hex in either case.
            Some(Credentials::Ha1 { ha1, .. }) => {
                assert_eq!(ha1.expose(), "0123456789ABCDEF0123456789abcdef")
            }
            other => panic!("HA1 must win over the password: {other:?}"),
        }
        assert!(!format!("{:?}", good()).contains("s3cret-pw"));
    }

    #[test]
    fn rows_without_credentials_load_for_ip_auth_trunks() {
        let mut row = good();
        row.auth_username.clear();
        assert_eq!(validate(&row, &defaults()).unwrap().credentials(), None);
        let mut row = good();
        row.auth_password = Secret::default();
        assert_eq!(validate(&row, &defaults()).unwrap().credentials(), None);
    }

    #[test]
    fn expires_zero_is_valid() {
        let mut row = good();
        row.expires = 0;
        assert_eq!(validate(&row, &defaults()).unwrap().expires, 0);
    }
}

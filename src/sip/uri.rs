//! SIP URIs and `host:port`: the one URI parser and the one host/port splitter, for every
//! place that reads either (responses and requests on the wire, the relay's Via handling, the
//! RPC lookup key, the host columns of a `uacreg` row).

use std::net::Ipv6Addr;

use super::message::ParseError;

fn fail<T>(why: impl Into<String>) -> Result<T, ParseError> {
    Err(ParseError(why.into()))
}

/// The parts of a SIP URI that registrations compare.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UriParts {
    pub scheme: String,
    pub user: Option<String>,
    /// Host without brackets for IPv6.
    pub host: String,
    pub port: Option<u16>,
    /// URI parameters in order (`;line=x`, `;transport=tcp`), names lowercase.
    pub params: Vec<(String, Option<String>)>,
}

impl UriParts {
    /// Parses `sip:user@host:port;params` (no angle brackets).
    pub fn parse(uri: &str) -> Result<UriParts, ParseError> {
        let uri = uri.trim();
        let (scheme, rest) = uri
            .split_once(':')
            .ok_or_else(|| ParseError(format!("URI without scheme: {uri:?}")))?;
        let scheme = scheme.to_ascii_lowercase();
        if scheme != "sip" && scheme != "sips" {
            return fail(format!("unsupported URI scheme {scheme:?}"));
        }
        // The user part may hold `?` and `;` (RFC 3261 user-unreserved) but never `@`, and
        // neither may parameters or headers: the first `@` ends it.
        let (user, host_and_params) = match rest.split_once('@') {
            Some((user_part, after)) => {
                // `user:password` — the password is never kept.
                let user = user_part.split(':').next().unwrap_or("");
                (Some(user.to_string()), after)
            }
            None => (None, rest),
        };
        // Headers (`?…`) are not needed; drop them.
        let host_and_params = host_and_params.split('?').next().unwrap_or("");
        let mut pieces = host_and_params.split(';');
        let host_port = pieces.next().unwrap_or("");
        let (host, port) = split_host_port(host_port)?;
        if host.is_empty() {
            return fail(format!("URI without host: {uri:?}"));
        }
        let params = pieces
            .filter(|p| !p.is_empty())
            .map(|p| match p.split_once('=') {
                Some((n, v)) => (n.trim().to_ascii_lowercase(), Some(v.trim().to_string())),
                None => (p.trim().to_ascii_lowercase(), None),
            })
            .collect();
        Ok(UriParts {
            scheme,
            user,
            host,
            port,
            params,
        })
    }
}

/// `user` as the user part of a SIP URI: characters RFC 3261 allows there stay as they are,
/// every other byte is %-escaped (`:` would start a password, `@` end the user, a space the
/// URI). A `%` already followed by two hex digits is taken as an escape the operator wrote.
pub fn escape_user(user: &str) -> std::borrow::Cow<'_, str> {
    let bytes = user.as_bytes();
    let is_escape = |at: usize| {
        bytes.len() > at + 2
            && bytes[at + 1].is_ascii_hexdigit()
            && bytes[at + 2].is_ascii_hexdigit()
    };
    let keeps = |at: usize, b: u8| {
        b.is_ascii_alphanumeric()
            || b"-_.!~*'()&=+$,;?/".contains(&b)
            || (b == b'%' && is_escape(at))
    };
    if bytes.iter().enumerate().all(|(at, &b)| keeps(at, b)) {
        return std::borrow::Cow::Borrowed(user);
    }
    let mut escaped = String::with_capacity(user.len() + 8);
    for (at, &b) in bytes.iter().enumerate() {
        if keeps(at, b) {
            escaped.push(char::from(b));
        } else {
            escaped.push_str(&format!("%{b:02X}"));
        }
    }
    std::borrow::Cow::Owned(escaped)
}

/// Splits `host`, `host:port`, `[v6]`, `[v6]:port`, or a bare IPv6 address, into the host
/// (without brackets) and the port. Brackets hold an IPv6 address and nothing else; text with
/// several colons and no brackets is a bare IPv6 address without port; a port is decimal digits
/// only (no sign, no spaces) and fits 16 bits.
pub fn split_host_port(text: &str) -> Result<(String, Option<u16>), ParseError> {
    let text = text.trim();
    if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| ParseError("unterminated IPv6 reference".into()))?;
        if host.parse::<Ipv6Addr>().is_err() {
            return fail(format!("not an IPv6 address in brackets: {host:?}"));
        }
        let port = match after.strip_prefix(':') {
            Some(p) => Some(parse_port(p)?),
            None if after.is_empty() => None,
            None => return fail("junk after IPv6 reference"),
        };
        return Ok((host.to_string(), port));
    }
    match text.split_once(':') {
        Some((host, port)) if !port.contains(':') => {
            Ok((host.to_string(), Some(parse_port(port)?)))
        }
        Some(_) if text.parse::<Ipv6Addr>().is_ok() => Ok((text.to_string(), None)),
        Some(_) => fail(format!("neither host:port nor an IPv6 address: {text:?}")),
        None => Ok((text.to_string(), None)),
    }
}

fn parse_port(text: &str) -> Result<u16, ParseError> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return fail(format!("bad port {text:?}"));
    }
    text.parse::<u16>()
        .map_err(|_| ParseError(format!("bad port {text:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(text: &str) -> Option<(String, Option<u16>)> {
        split_host_port(text).ok()
    }

    #[test]
    fn hosts_ports_and_ipv6() {
        let some = |h: &str, p: Option<u16>| Some((h.to_string(), p));
        assert_eq!(split("example.com"), some("example.com", None));
        assert_eq!(split(" example.com:5080 "), some("example.com", Some(5080)));
        assert_eq!(split("[2001:db8::1]"), some("2001:db8::1", None));
        assert_eq!(split("[2001:db8::1]:5061"), some("2001:db8::1", Some(5061)));
        assert_eq!(split("2001:db8::1"), some("2001:db8::1", None));
        assert_eq!(split("192.0.2.1:0"), some("192.0.2.1", Some(0)));
        for bad in [
            "h:",
            "h:+5060",
            "h: 5060",
            "h:65536",
            "h:50x",
            "[2001:db8::1",
            "[2001:db8::1]5060",
            "[example.com]:5060",
            "a:b:5060",
        ] {
            assert_eq!(split(bad), None, "{bad:?}");
        }
    }
}

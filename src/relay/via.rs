//! The Via values the relay reads: the sender's (for its transaction key and the
//! `received`/`rport` we write into it) and ours on a response coming back.

use crate::sip::message::header_params;
use crate::sip::uri::split_host_port;

/// Byte positions of the first value of a comma-separated header value.
pub(super) struct FirstValue {
    /// The value, trimmed.
    pub(super) start: usize,
    pub(super) end: usize,
    /// Where the second value starts (after the comma and any white space), if there is one.
    pub(super) rest: Option<usize>,
}

pub(super) fn first_value(data: &[u8], from: usize, to: usize) -> Option<FirstValue> {
    let region = &data[from..to];
    let (mut in_quotes, mut escaped) = (false, false);
    let mut comma = None;
    for (i, &b) in region.iter().enumerate() {
        if escaped {
            escaped = false;
            continue;
        }
        match b {
            b'\\' if in_quotes => escaped = true,
            b'"' => in_quotes = !in_quotes,
            b',' if !in_quotes => {
                comma = Some(i);
                break;
            }
            _ => {}
        }
    }
    let value_end = comma.unwrap_or(region.len());
    let start = region[..value_end]
        .iter()
        .position(|b| !b.is_ascii_whitespace())?;
    let end = region[..value_end]
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())?
        + 1;
    let rest = comma.and_then(|c| {
        region[c + 1..]
            .iter()
            .position(|b| !b.is_ascii_whitespace())
            .map(|p| from + c + 1 + p)
    });
    Some(FirstValue {
        start: from + start,
        end: from + end,
        rest,
    })
}

/// One Via value.
pub(super) struct Via {
    /// Without brackets for IPv6.
    pub(super) host: String,
    pub(super) port: Option<u16>,
    /// Names lowercase, values unquoted.
    pub(super) params: Vec<(String, Option<String>)>,
}

impl Via {
    pub(super) fn parse(text: &str) -> Option<Via> {
        let (protocol_and_host, params) = match text.split_once(';') {
            Some((a, b)) => (a, b),
            None => (text, ""),
        };
        // `SIP / 2.0 / UDP host:port`: the sent-by is the last word.
        let mut words: Vec<&str> = protocol_and_host.split_whitespace().collect();
        let sent_by = words.pop()?;
        let protocol: String = words.concat();
        let mut parts = protocol.split('/');
        let (Some(name), Some(version), Some(transport), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return None;
        };
        if !name.eq_ignore_ascii_case("SIP") || version != "2.0" || transport.is_empty() {
            return None;
        }
        let (host, port) = split_host_port(sent_by).ok()?;
        if host.is_empty() {
            return None;
        }
        Some(Via {
            host,
            port,
            params: header_params(params),
        })
    }

    /// The value of a parameter (`Some("")` for a parameter without value).
    pub(super) fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_deref().unwrap_or(""))
    }
}

//! The inbound side, without sockets or a clock: deciding what to do with a request that arrives
//! for one of our registrations, and routing the responses back.
//!
//! The gateway registers Contacts such as `sip:<l_uuid>@gw:port` or
//! `sip:<contact_user>@gw:port;line=<l_uuid>`. Calls for them reach the gateway and, like
//! Kamailio's `uac_reg_lookup()`, are forwarded to a configured proxy with the Request-URI
//! rewritten to the registration's local URI (`sip:l_username@l_domain`).
//!
//! # Why stateless
//!
//! The gateway acts as an RFC 3261 §16.11 stateless proxy: it keeps nothing between messages.
//! * Both ends are already stateful: the caller's side (the remote registrar / its proxy) and
//!   the configured proxy each run transactions and retransmit; a stateful hop in between would
//!   only duplicate timers and memory per call, and lose every call in progress on a restart.
//! * Everything a later message needs is recomputed from the message itself. Our Via branch is a
//!   keyed hash of the incoming transaction key, so a retransmission, the CANCEL of an INVITE and
//!   the ACK of a non-2xx final response all get the branch of the INVITE, exactly what the
//!   proxy's transaction layer needs to match them. Responses carry their way home in their Via
//!   header: we remove our own value (recognised by a marker in its branch) and send to the next
//!   one. The branch also carries an opaque flow token, so the driver can send a response back
//!   on the connection the request came in on without a table of its own.
//! * Our own replies (200 to OPTIONS, 404, 483, 400 …) get a To tag that is also a keyed hash of
//!   the transaction key, so the ACK for such a reply is recognised and absorbed without
//!   remembering that we sent it.
//!
//! The functions here never panic on malformed input (a property test feeds them arbitrary
//! bytes). What cannot be answered (no usable Via, no Call-ID …) is dropped; what can be answered
//! but not relayed gets a 400. Headers and body of a relayed message are copied byte for byte
//! except for the Request-URI, our Via, the received/rport parameters of the sender's Via and
//! Max-Forwards.

use std::borrow::Cow;
use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};

use sha2::{Digest, Sha256};

use super::message::{
    expand_compact, header_params, is_response, split_host_port, split_list, split_name_addr,
};

/// RFC 3261 magic cookie that starts every branch of a compliant element.
pub const BRANCH_COOKIE: &str = "z9hG4bK";
/// After the cookie, marks a branch as one of our relay branches. Not a hexadecimal digit, so it
/// cannot start one of our REGISTER branches (`z9hG4bK<hex salt>.<n>`).
pub const RELAY_MARKER: &str = "rly-";

/// Methods we relay, advertised in the 200 answering OPTIONS.
const ALLOW: &str =
    "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE, PRACK, REFER, NOTIFY, MESSAGE";

/// Largest head we look at.
const MAX_HEAD: usize = super::MAX_MESSAGE;
const MAX_HEADERS: usize = 256;

/// Who a request is for, from its Request-URI: the user part and the `line` URI parameter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Addressee {
    /// User part of the Request-URI (empty when there is none).
    pub user: String,
    /// Value of the `line` URI parameter (Kamailio 6 `contact_user;line=l_uuid` Contacts).
    pub line: Option<String>,
}

impl Addressee {
    /// The key to look the registration up by: the `line` parameter if present, else the user.
    pub fn key(&self) -> &str {
        self.line.as_deref().unwrap_or(&self.user)
    }
}

/// The decision for one received request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Inbound {
    /// Send these bytes back to the sender (OPTIONS → 200, unknown user → 404, 483 Too Many
    /// Hops, 400 for a request we cannot relay …).
    Reply(Vec<u8>),
    /// Send these bytes to the proxy.
    Forward(Vec<u8>),
    /// Nothing to send (an ACK we do not relay, or input too broken to answer).
    Drop,
}

/// What [`handle_request`] needs to know about the gateway.
#[derive(Clone, Copy, Debug)]
pub struct RelayConfig<'a> {
    /// Transport token of our Via towards the proxy: "UDP", "TCP" or "TLS".
    pub via_transport: &'a str,
    /// Our Via sent-by for the hop towards the proxy, e.g. "127.0.0.1:5062".
    pub via_sent_by: &'a str,
    /// Secret mixed into our branches (so they are not predictable) and into the To tag of our
    /// own replies.
    pub branch_secret: u64,
    /// Opaque token that comes back in our Via on the response (the driver uses it to find the
    /// connection the request came on). Only `[A-Za-z0-9]` characters are used; others are left
    /// out.
    pub flow_token: &'a str,
    /// `Server` header of our own replies (left out when empty).
    pub user_agent: &'a str,
}

/// Where a response goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResponseRoute {
    /// A response to a request we relayed, with our Via removed: send `bytes` to
    /// `to_host:to_port` (from the next Via: `received`/`rport` if present, else the sent-by
    /// host and port, default 5060, or 5061 for TLS). `flow_token` is what we put in our Via,
    /// so the caller can prefer the connection the request came on.
    Relay {
        bytes: Vec<u8>,
        /// Host name or IP address (IPv6 without brackets).
        to_host: String,
        to_port: u16,
        flow_token: String,
    },
    /// Not ours (the top Via branch does not carry our relay marker): the caller treats it as a
    /// response to its own REGISTER transactions.
    NotRelayed,
    /// Ours but unusable (no second Via, malformed head …): drop it.
    Drop,
}

/// Decides what to do with one received request. `received_from` is the packet's source
/// address; `lookup(addressee)` returns the local URI (`sip:l_username@l_domain`) of the
/// registration the request is for, or `None`.
pub fn handle_request(
    raw: &[u8],
    received_from: SocketAddr,
    config: &RelayConfig,
    lookup: impl Fn(&Addressee) -> Option<String>,
) -> Inbound {
    let Some(scan) = Scan::new(raw) else {
        return Inbound::Drop;
    };
    let Some((method, request_uri)) = scan.request_line() else {
        return Inbound::Drop;
    };
    let Some(basics) = Basics::new(&scan) else {
        return Inbound::Drop;
    };
    let is_ack = method == "ACK";
    let key = basics.transaction_key(&scan, &method, &request_uri);
    let reply = |code: u16, reason: &str, extra: &str| {
        if is_ack {
            // An ACK is never answered.
            Inbound::Drop
        } else {
            Inbound::Reply(basics.reply(&scan, received_from, config, &key, code, reason, extra))
        }
    };

    if is_ack && basics.to_tag.as_deref() == Some(reply_tag(config.branch_secret, &key).as_str()) {
        // The ACK for one of our own final replies.
        return Inbound::Drop;
    }
    if scan.malformed || scan.head_end.is_none() {
        return reply(400, "Bad Request", "");
    }
    if !basics.cseq_method.eq_ignore_ascii_case(&method) {
        return reply(400, "Bad Request", "");
    }
    if method == "OPTIONS" {
        let extra = format!("Allow: {ALLOW}\r\nAccept: application/sdp\r\n");
        return reply(200, "OK", &extra);
    }

    let scheme = request_uri
        .split_once(':')
        .map(|(s, _)| s.to_ascii_lowercase());
    if !matches!(scheme.as_deref(), Some("sip" | "sips")) {
        return reply(416, "Unsupported URI Scheme", "");
    }
    let Ok(uri) = super::message::UriParts::parse(&request_uri) else {
        return reply(400, "Bad Request", "");
    };

    let max_forwards = match scan.max_forwards() {
        Ok(value) => value,
        Err(()) => return reply(400, "Bad Request", ""),
    };
    if max_forwards == Some(0) {
        return reply(483, "Too Many Hops", "");
    }
    let Ok(body_len) = scan.body_len() else {
        return reply(400, "Bad Request", "");
    };

    let addressee = Addressee {
        user: uri.user.clone().unwrap_or_default(),
        line: uri
            .params
            .iter()
            .find(|(name, _)| name == "line")
            .and_then(|(_, value)| value.clone()),
    };
    if addressee.key().is_empty() {
        return reply(404, "Not Found", "");
    }
    let Some(local_uri) = lookup(&addressee) else {
        return reply(404, "Not Found", "");
    };
    if local_uri.is_empty()
        || local_uri
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
    {
        return reply(500, "Server Internal Error", "");
    }

    Inbound::Forward(forward(
        &scan,
        &basics,
        received_from,
        config,
        &method,
        &local_uri,
        max_forwards,
        body_len,
        &key,
    ))
}

/// Routes a received response: ours (top Via carries our marker) or not.
pub fn route_response(raw: &[u8]) -> ResponseRoute {
    if !is_response(raw) {
        return ResponseRoute::NotRelayed;
    }
    let Some(scan) = Scan::new(raw) else {
        return ResponseRoute::NotRelayed;
    };
    let Some(via_index) = scan.headers.iter().position(|h| h.name == "via") else {
        return ResponseRoute::NotRelayed;
    };
    let header = &scan.headers[via_index];
    let Some(top) = first_value(raw, header.value_start, header.value_end) else {
        return ResponseRoute::NotRelayed;
    };
    let Some(via) = Via::parse(&unfold(&raw[top.start..top.end])) else {
        return ResponseRoute::NotRelayed;
    };
    let Some(relay_part) = via
        .param("branch")
        .and_then(|b| b.strip_prefix(BRANCH_COOKIE))
        .and_then(|b| b.strip_prefix(RELAY_MARKER))
    else {
        return ResponseRoute::NotRelayed;
    };
    // From here on the response is ours.
    let Some((flow_token, hash)) = relay_part.split_once('.') else {
        return ResponseRoute::Drop;
    };
    if hash.is_empty() || !flow_token.chars().all(|c| c.is_ascii_alphanumeric()) {
        return ResponseRoute::Drop;
    }
    if scan.malformed || scan.head_end.is_none() {
        return ResponseRoute::Drop;
    }

    let mut bytes = Vec::with_capacity(raw.len());
    bytes.extend_from_slice(&raw[..header.start]);
    let next = match top.rest {
        // More values in the same line: keep the name and the rest of the line.
        Some(rest) => {
            bytes.extend_from_slice(&raw[header.start..top.start]);
            bytes.extend_from_slice(&raw[rest..header.end]);
            first_value(raw, rest, header.value_end)
        }
        None => scan.headers[via_index + 1..]
            .iter()
            .find(|h| h.name == "via")
            .and_then(|h| first_value(raw, h.value_start, h.value_end)),
    };
    bytes.extend_from_slice(&raw[header.end..]);

    let Some(next) = next.and_then(|n| Via::parse(&unfold(&raw[n.start..n.end]))) else {
        return ResponseRoute::Drop;
    };
    let to_host = match next.param("received") {
        Some(received) if !received.is_empty() => received
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string(),
        _ => next.host.clone(),
    };
    let default_port = if next.transport.eq_ignore_ascii_case("TLS") {
        5061
    } else {
        5060
    };
    let to_port = next
        .param("rport")
        .and_then(|p| p.parse::<u16>().ok())
        .or(next.port)
        .unwrap_or(default_port);
    if to_host.is_empty() || to_port == 0 {
        return ResponseRoute::Drop;
    }
    ResponseRoute::Relay {
        bytes,
        to_host,
        to_port,
        flow_token: flow_token.to_string(),
    }
}

/// One header as it lies in the message.
struct Header {
    /// Lowercase, expanded from the compact form.
    name: String,
    /// From the first byte of the name to after the line end of its last (folded) line.
    start: usize,
    end: usize,
    /// After the colon, up to (not including) the line end of the last line; not trimmed.
    value_start: usize,
    value_end: usize,
}

/// A message cut into start line, headers and body, with byte positions so that it can be
/// copied with a few edits.
struct Scan<'a> {
    data: &'a [u8],
    start_line: Cow<'a, str>,
    headers: Vec<Header>,
    /// Where the empty line that ends the head starts; `None` when there is none.
    head_end: Option<usize>,
    /// Where the body starts (after the empty line), or the end of the data.
    body_start: usize,
    /// The line end of the start line, used for lines we add or rewrite.
    line_end: &'static str,
    /// A header line could not be read (no colon, bad name, continuation first …).
    malformed: bool,
}

impl<'a> Scan<'a> {
    fn new(data: &'a [u8]) -> Option<Scan<'a>> {
        let mut pos = 0;
        // Leading empty lines (keep-alives) are ignored (RFC 3261 §7.5).
        while data[pos..].starts_with(b"\r\n") || data[pos..].starts_with(b"\n") {
            pos += if data[pos] == b'\r' { 2 } else { 1 };
        }
        let (line, ends_at, next) = next_line(data, pos)?;
        if line.is_empty() {
            return None;
        }
        let line_end = if data[ends_at..next].starts_with(b"\r\n") {
            "\r\n"
        } else {
            "\n"
        };
        let mut scan = Scan {
            data,
            start_line: String::from_utf8_lossy(line),
            headers: Vec::new(),
            head_end: None,
            body_start: data.len(),
            line_end,
            malformed: false,
        };
        pos = next;
        while let Some((line, ends_at, next)) = next_line(data, pos) {
            if pos > MAX_HEAD {
                return None;
            }
            if line.is_empty() {
                if ends_at < next {
                    scan.head_end = Some(pos);
                    scan.body_start = next;
                }
                break;
            }
            if line[0] == b' ' || line[0] == b'\t' {
                match scan.headers.last_mut() {
                    Some(last) => {
                        last.value_end = ends_at;
                        last.end = next;
                    }
                    None => scan.malformed = true,
                }
            } else {
                match line.iter().position(|&b| b == b':') {
                    Some(colon) => {
                        let name = String::from_utf8_lossy(&line[..colon]);
                        let name = name.trim();
                        if name.is_empty()
                            || !name.bytes().all(|b| b.is_ascii_graphic())
                            || scan.headers.len() >= MAX_HEADERS
                        {
                            scan.malformed = true;
                        } else {
                            scan.headers.push(Header {
                                name: expand_compact(name),
                                start: pos,
                                end: next,
                                value_start: pos + colon + 1,
                                value_end: ends_at,
                            });
                        }
                    }
                    None => scan.malformed = true,
                }
            }
            pos = next;
        }
        Some(scan)
    }

    /// `(method, Request-URI)` of a `METHOD uri SIP/2.0` start line.
    fn request_line(&self) -> Option<(String, String)> {
        let mut parts = self.start_line.split_whitespace();
        let (Some(method), Some(uri), Some(version), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return None;
        };
        if !version.eq_ignore_ascii_case("SIP/2.0")
            || method.is_empty()
            || !method.bytes().all(|b| b.is_ascii_alphabetic())
        {
            return None;
        }
        Some((method.to_string(), uri.to_string()))
    }

    fn all<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'s Header> + 's {
        self.headers.iter().filter(move |h| h.name == name)
    }

    fn value(&self, header: &Header) -> String {
        unfold(&self.data[header.value_start..header.value_end])
    }

    /// The only value of a header that must not repeat; `None` if absent or repeated.
    fn single(&self, name: &str) -> Option<String> {
        let mut all = self.all(name);
        let first = all.next()?;
        match all.next() {
            Some(_) => None,
            None => Some(self.value(first)),
        }
    }

    /// `Ok(None)` without Max-Forwards, `Err` for a bad or repeated one.
    fn max_forwards(&self) -> Result<Option<u32>, ()> {
        if self.all("max-forwards").next().is_none() {
            return Ok(None);
        }
        let value = self.single("max-forwards").ok_or(())?;
        parse_number(&value).map(Some).ok_or(())
    }

    /// How many body bytes to relay: the Content-Length (extra bytes after it are cut off as
    /// RFC 3261 §18.3 says for datagrams), or everything without one. `Err` when it is bad,
    /// repeated with different values, or larger than the body.
    fn body_len(&self) -> Result<usize, ()> {
        let available = self.data.len() - self.body_start;
        let mut declared: Option<usize> = None;
        for header in self.all("content-length") {
            let value = parse_number(&self.value(header)).ok_or(())?;
            let value = usize::try_from(value).map_err(|_| ())?;
            if declared.is_some_and(|d| d != value) {
                return Err(());
            }
            declared = Some(value);
        }
        match declared {
            Some(len) if len > available => Err(()),
            Some(len) => Ok(len),
            None => Ok(available),
        }
    }
}

/// The line starting at `pos`: its content without line end, where the line end starts, and
/// where the next line starts. `None` at the end of the data.
fn next_line(data: &[u8], pos: usize) -> Option<(&[u8], usize, usize)> {
    if pos >= data.len() {
        return None;
    }
    match data[pos..].iter().position(|&b| b == b'\n') {
        Some(nl) => {
            let nl = pos + nl;
            let ends_at = if nl > pos && data[nl - 1] == b'\r' {
                nl - 1
            } else {
                nl
            };
            Some((&data[pos..ends_at], ends_at, nl + 1))
        }
        None => Some((&data[pos..], data.len(), data.len())),
    }
}

/// A header value as text: folded lines joined with one space, trimmed.
fn unfold(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    let mut out = String::with_capacity(text.len());
    for piece in text.split('\n') {
        let piece = piece.trim();
        if piece.is_empty() {
            continue;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(piece);
    }
    out
}

fn parse_number(text: &str) -> Option<u32> {
    let text = text.trim();
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Byte positions of the first value of a comma-separated header value.
struct FirstValue {
    /// The value, trimmed.
    start: usize,
    end: usize,
    /// Where the second value starts (after the comma and any white space), if there is one.
    rest: Option<usize>,
}

fn first_value(data: &[u8], from: usize, to: usize) -> Option<FirstValue> {
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
struct Via {
    transport: String,
    /// Without brackets for IPv6.
    host: String,
    port: Option<u16>,
    /// Names lowercase, values unquoted.
    params: Vec<(String, Option<String>)>,
}

impl Via {
    fn parse(text: &str) -> Option<Via> {
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
            transport: transport.to_string(),
            host,
            port,
            params: header_params(params),
        })
    }

    /// The value of a parameter (`Some("")` for a parameter without value).
    fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_deref().unwrap_or(""))
    }

    fn has_empty_param(&self, name: &str) -> bool {
        self.params.iter().any(|(n, v)| n == name && v.is_none())
    }
}

/// What every answerable request has.
struct Basics {
    /// The first Via header and the position of its first value.
    top_header: usize,
    top: FirstValue,
    top_text: String,
    top_via: Via,
    from: String,
    to: String,
    to_tag: Option<String>,
    from_tag: Option<String>,
    call_id: String,
    cseq: String,
    cseq_number: u32,
    cseq_method: String,
}

impl Basics {
    fn new(scan: &Scan<'_>) -> Option<Basics> {
        let top_header = scan.headers.iter().position(|h| h.name == "via")?;
        let header = &scan.headers[top_header];
        let top = first_value(scan.data, header.value_start, header.value_end)?;
        let top_text = unfold(&scan.data[top.start..top.end]);
        let top_via = Via::parse(&top_text)?;
        let from = scan.single("from")?;
        let to = scan.single("to")?;
        let call_id = scan.single("call-id")?;
        let cseq = scan.single("cseq")?;
        let mut cseq_parts = cseq.split_whitespace();
        let cseq_number = parse_number(cseq_parts.next()?)?;
        let cseq_method = cseq_parts.next()?.to_string();
        if call_id.is_empty() || cseq_parts.next().is_some() {
            return None;
        }
        Some(Basics {
            top_header,
            top,
            top_text,
            top_via,
            to_tag: tag_of(&to),
            from_tag: tag_of(&from),
            from,
            to,
            call_id,
            cseq,
            cseq_number,
            cseq_method,
        })
    }

    /// What identifies the transaction across retransmissions, its CANCEL and the ACK of a
    /// non-2xx final response (RFC 3261 §16.11): the top Via branch when it has the magic
    /// cookie, else the top Via, the From tag, the Call-ID, the CSeq number, the Request-URI and
    /// the To tag (not for an ACK, whose To tag the INVITE did not have).
    fn transaction_key(&self, scan: &Scan<'_>, method: &str, request_uri: &str) -> Vec<u8> {
        let mut key = Vec::new();
        let mut field = |bytes: &[u8]| {
            key.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
            key.extend_from_slice(bytes);
        };
        match self.top_via.param("branch") {
            Some(branch) if branch.starts_with(BRANCH_COOKIE) => {
                field(b"3261");
                field(branch.as_bytes());
                let sent_by = match self.top_via.port {
                    Some(port) => format!("{}:{port}", self.top_via.host.to_ascii_lowercase()),
                    None => self.top_via.host.to_ascii_lowercase(),
                };
                field(sent_by.as_bytes());
            }
            _ => {
                field(b"2543");
                field(&scan.data[self.top.start..self.top.end]);
                field(self.from_tag.as_deref().unwrap_or("").as_bytes());
                field(self.call_id.as_bytes());
                field(&self.cseq_number.to_le_bytes());
                field(request_uri.as_bytes());
                let to_tag = match method {
                    "ACK" => "",
                    _ => self.to_tag.as_deref().unwrap_or(""),
                };
                field(to_tag.as_bytes());
            }
        }
        key
    }

    /// The top Via value with `received` (and a filled-in empty `rport`) as RFC 3261 §18.2.1 and
    /// RFC 3581 §4 require, or `None` when it stays as it is.
    fn received_top_via(&self, received_from: SocketAddr) -> Option<String> {
        let source = received_from.ip().to_canonical();
        let same_host = self
            .top_via
            .host
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.to_canonical() == source);
        let fill_rport = self.top_via.has_empty_param("rport");
        if same_host && !fill_rport {
            return None;
        }
        let (head, params) = match self.top_text.split_once(';') {
            Some((h, p)) => (h.trim_end(), p),
            None => (self.top_text.trim_end(), ""),
        };
        let mut out = head.to_string();
        for param in params.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let name = param.split('=').next().unwrap_or("").trim();
            if name.eq_ignore_ascii_case("received") {
                continue;
            }
            out.push(';');
            if name.eq_ignore_ascii_case("rport") && !param.contains('=') {
                out.push_str(&format!("rport={}", received_from.port()));
            } else {
                out.push_str(param);
            }
        }
        out.push_str(&format!(";received={source}"));
        Some(out)
    }

    /// One of our own responses to the request.
    #[allow(clippy::too_many_arguments)]
    fn reply(
        &self,
        scan: &Scan<'_>,
        received_from: SocketAddr,
        config: &RelayConfig,
        key: &[u8],
        code: u16,
        reason: &str,
        extra_headers: &str,
    ) -> Vec<u8> {
        let mut out = Vec::with_capacity(512);
        let _ = write!(out, "SIP/2.0 {code} {reason}\r\n");
        let mut first = true;
        for header in scan.all("via") {
            for value in split_list(&scan.value(header)) {
                if first {
                    first = false;
                    let top = self.received_top_via(received_from);
                    let _ = write!(out, "Via: {}\r\n", top.as_deref().unwrap_or(&self.top_text));
                } else {
                    let _ = write!(out, "Via: {value}\r\n");
                }
            }
        }
        let _ = write!(out, "From: {}\r\n", self.from);
        let _ = write!(out, "To: {}", self.to);
        if self.to_tag.is_none() {
            let _ = write!(out, ";tag={}", reply_tag(config.branch_secret, key));
        }
        let _ = write!(
            out,
            "\r\nCall-ID: {}\r\nCSeq: {}\r\n{extra_headers}",
            self.call_id, self.cseq
        );
        if !config.user_agent.is_empty() {
            let _ = write!(out, "Server: {}\r\n", config.user_agent);
        }
        out.extend_from_slice(b"Content-Length: 0\r\n\r\n");
        out
    }
}

/// The `tag` parameter of a From or To value.
fn tag_of(value: &str) -> Option<String> {
    let (_, params) = split_name_addr(value).ok()?;
    header_params(params)
        .into_iter()
        .find(|(name, _)| name == "tag")
        .and_then(|(_, v)| v)
}

/// First 64 bits of SHA-256 over the secret, a purpose and the transaction key, in hex.
fn keyed_hash(secret: u64, purpose: &str, key: &[u8]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(secret.to_le_bytes());
    hasher.update(purpose.as_bytes());
    hasher.update([0]);
    hasher.update(key);
    let digest = hasher.finalize();
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// The To tag of our own replies to a transaction.
fn reply_tag(secret: u64, key: &[u8]) -> String {
    format!("rly{}", keyed_hash(secret, "tag", key))
}

/// The full branch of our Via for a transaction.
fn relay_branch(config: &RelayConfig, key: &[u8]) -> String {
    let token: String = config
        .flow_token
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect();
    format!(
        "{BRANCH_COOKIE}{RELAY_MARKER}{token}.{}",
        keyed_hash(config.branch_secret, "branch", key)
    )
}

/// The request for the proxy: new Request-URI, our Via on top, received/rport on the sender's
/// Via, Max-Forwards decremented; all else copied.
#[allow(clippy::too_many_arguments)]
fn forward(
    scan: &Scan<'_>,
    basics: &Basics,
    received_from: SocketAddr,
    config: &RelayConfig,
    method: &str,
    local_uri: &str,
    max_forwards: Option<u32>,
    body_len: usize,
    key: &[u8],
) -> Vec<u8> {
    let data = scan.data;
    let le = scan.line_end;
    let mut out = Vec::with_capacity(data.len() + 256);
    let _ = write!(
        out,
        "{method} {local_uri} SIP/2.0{le}Via: SIP/2.0/{} {};branch={};rport{le}",
        config.via_transport,
        config.via_sent_by,
        relay_branch(config, key)
    );
    if max_forwards.is_none() {
        let _ = write!(out, "Max-Forwards: 69{le}");
    }
    for (index, header) in scan.headers.iter().enumerate() {
        if index == basics.top_header {
            match basics.received_top_via(received_from) {
                Some(top) => {
                    out.extend_from_slice(&data[header.start..basics.top.start]);
                    out.extend_from_slice(top.as_bytes());
                    out.extend_from_slice(&data[basics.top.end..header.end]);
                }
                None => out.extend_from_slice(&data[header.start..header.end]),
            }
        } else if header.name == "max-forwards" {
            let value = max_forwards.unwrap_or(70).saturating_sub(1);
            out.extend_from_slice(&data[header.start..header.value_start]);
            let _ = write!(out, " {value}{le}");
        } else {
            out.extend_from_slice(&data[header.start..header.end]);
        }
    }
    if scan.all("content-length").next().is_none() {
        let _ = write!(out, "Content-Length: {body_len}{le}");
    }
    let head_end = scan.head_end.unwrap_or(scan.body_start);
    out.extend_from_slice(&data[head_end..scan.body_start]);
    out.extend_from_slice(&data[scan.body_start..scan.body_start + body_len]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::{Request, Response};

    const CONFIG: RelayConfig<'static> = RelayConfig {
        via_transport: "UDP",
        via_sent_by: "127.0.0.1:5062",
        branch_secret: 0x5eed_1234_abcd_0001,
        flow_token: "u7",
        user_agent: "uacreg",
    };

    const SDP: &str = "v=0\r\no=- 1 1 IN IP4 203.0.113.5\r\ns=-\r\nc=IN IP4 203.0.113.5\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0 8\r\na=rtpmap:0 PCMU/8000\r\n";

    fn registrar() -> SocketAddr {
        "203.0.113.5:5060".parse().unwrap()
    }

    /// An INVITE from a remote registrar's proxy for our Contact `sip:uuid1@gw`.
    fn invite() -> String {
        format!(
            "INVITE sip:uuid1@192.0.2.10:5080 SIP/2.0\r\n\
Via: SIP/2.0/UDP sip.provider.example:5060;rport;branch=z9hG4bK776asdhds\r\n\
Via: SIP/2.0/TLS 10.1.1.1:5061;branch=z9hG4bKcaller1;received=198.51.100.9\r\n\
Max-Forwards: 70\r\n\
To: <sip:+4930123456@provider.example>\r\n\
From: \"Bob, Caller\" <sip:bob@provider.example>;tag=1928301774\r\n\
Call-ID: a84b4c76e66710@pc33.provider.example\r\n\
CSeq: 314159 INVITE\r\n\
Contact: <sip:bob@198.51.100.9:5061;transport=tls>\r\n\
Record-Route: <sip:sip.provider.example;lr>\r\n\
Content-Type: application/sdp\r\n\
Content-Length: {}\r\n\r\n{SDP}",
            SDP.len()
        )
    }

    fn cancel() -> String {
        "CANCEL sip:uuid1@192.0.2.10:5080 SIP/2.0\r\n\
Via: SIP/2.0/UDP sip.provider.example:5060;rport;branch=z9hG4bK776asdhds\r\n\
Max-Forwards: 70\r\n\
To: <sip:+4930123456@provider.example>\r\n\
From: \"Bob, Caller\" <sip:bob@provider.example>;tag=1928301774\r\n\
Call-ID: a84b4c76e66710@pc33.provider.example\r\n\
CSeq: 314159 CANCEL\r\n\
Content-Length: 0\r\n\r\n"
            .to_string()
    }

    /// ACK for a non-2xx final response to the INVITE: same branch, To tag of the response.
    fn ack(to_tag: &str, branch: &str) -> String {
        format!(
            "ACK sip:uuid1@192.0.2.10:5080 SIP/2.0\r\n\
Via: SIP/2.0/UDP sip.provider.example:5060;rport;branch={branch}\r\n\
Max-Forwards: 70\r\n\
To: <sip:+4930123456@provider.example>;tag={to_tag}\r\n\
From: \"Bob, Caller\" <sip:bob@provider.example>;tag=1928301774\r\n\
Call-ID: a84b4c76e66710@pc33.provider.example\r\n\
CSeq: 314159 ACK\r\n\
Content-Length: 0\r\n\r\n"
        )
    }

    fn lookup(addressee: &Addressee) -> Option<String> {
        match addressee.key() {
            "uuid1" => Some("sip:alice@pbx.example".into()),
            "uuid7" => Some("sip:carol@pbx.example".into()),
            _ => None,
        }
    }

    fn forwarded(inbound: Inbound) -> String {
        match inbound {
            Inbound::Forward(bytes) => String::from_utf8(bytes).unwrap(),
            other => panic!("expected Forward, got {other:?}"),
        }
    }

    fn replied(inbound: Inbound) -> String {
        match inbound {
            Inbound::Reply(bytes) => String::from_utf8(bytes).unwrap(),
            other => panic!("expected Reply, got {other:?}"),
        }
    }

    fn handle(raw: &str, from: SocketAddr) -> Inbound {
        handle_request(raw.as_bytes(), from, &CONFIG, lookup)
    }

    /// The branch of the first Via of a message.
    fn top_branch(text: &str) -> String {
        let request = Request::parse(text.as_bytes()).unwrap();
        let top = request.vias[0].clone();
        top.split(";branch=")
            .nth(1)
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_string()
    }

    fn header_line<'t>(text: &'t str, prefix: &str) -> &'t str {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix} line in {text}"))
    }

    #[test]
    fn invite_is_forwarded_with_new_uri_our_via_and_everything_else_kept() {
        let original = invite();
        let out = forwarded(handle(&original, registrar()));
        let mut lines = out.split("\r\n");
        assert_eq!(lines.next(), Some("INVITE sip:alice@pbx.example SIP/2.0"));
        let our_via = lines.next().unwrap();
        assert!(
            our_via.starts_with("Via: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bKrly-u7."),
            "{our_via}"
        );
        // The sender's Via: sent-by is a name, so received; empty rport filled in.
        assert_eq!(
            lines.next(),
            Some(
                "Via: SIP/2.0/UDP sip.provider.example:5060;rport=5060;branch=z9hG4bK776asdhds;received=203.0.113.5"
            )
        );
        assert!(out.contains("\r\nMax-Forwards: 69\r\n"));
        // Everything else is the original, byte for byte, body included.
        let expected = original
            .replacen(
                "INVITE sip:uuid1@192.0.2.10:5080 SIP/2.0\r\n",
                &format!("INVITE sip:alice@pbx.example SIP/2.0\r\n{our_via}\r\n"),
                1,
            )
            .replacen(
                ";rport;branch=z9hG4bK776asdhds\r\n",
                ";rport=5060;branch=z9hG4bK776asdhds;received=203.0.113.5\r\n",
                1,
            )
            .replacen("Max-Forwards: 70\r\n", "Max-Forwards: 69\r\n", 1);
        assert_eq!(out, expected);
        // Our parser reads it back.
        let parsed = Request::parse(out.as_bytes()).unwrap();
        assert_eq!(parsed.vias.len(), 3);
        assert_eq!(parsed.cseq, 314159);
    }

    #[test]
    fn retransmission_cancel_and_non_2xx_ack_share_the_invite_branch() {
        let invite_branch = top_branch(&forwarded(handle(&invite(), registrar())));
        let again = top_branch(&forwarded(handle(&invite(), registrar())));
        assert_eq!(invite_branch, again);

        let cancel = forwarded(handle(&cancel(), registrar()));
        assert!(cancel.starts_with("CANCEL sip:alice@pbx.example SIP/2.0\r\n"));
        assert_eq!(top_branch(&cancel), invite_branch);

        let ack_non_2xx = forwarded(handle(&ack("as83kd9bs", "z9hG4bK776asdhds"), registrar()));
        assert_eq!(top_branch(&ack_non_2xx), invite_branch);

        // The ACK for a 2xx is a transaction of its own with a new branch.
        let ack_2xx = forwarded(handle(&ack("as83kd9bs", "z9hG4bKnew2xx"), registrar()));
        assert_ne!(top_branch(&ack_2xx), invite_branch);

        // Another secret, other branches.
        let other = RelayConfig {
            branch_secret: 1,
            ..CONFIG
        };
        let out = forwarded(handle_request(
            invite().as_bytes(),
            registrar(),
            &other,
            lookup,
        ));
        assert_ne!(top_branch(&out), invite_branch);
        assert!(top_branch(&out).starts_with("z9hG4bKrly-u7."));
    }

    #[test]
    fn rfc2543_branches_are_derived_from_the_transaction_fields() {
        let old = |method: &str, cseq: &str, to_tag: &str| {
            format!(
                "{method} sip:uuid1@gw SIP/2.0\r\nVia: SIP/2.0/UDP 203.0.113.5:5060\r\n\
To: <sip:x@provider.example>{to_tag}\r\nFrom: <sip:bob@provider.example>;tag=77\r\n\
Call-ID: old-1\r\nCSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n"
            )
        };
        let branch = |text: String| top_branch(&forwarded(handle(&text, registrar())));
        let invite = branch(old("INVITE", "1", ""));
        assert_eq!(branch(old("CANCEL", "1", "")), invite);
        assert_eq!(branch(old("ACK", "1", ";tag=resp")), invite);
        assert_ne!(branch(old("BYE", "2", ";tag=resp")), invite);
        assert_ne!(branch(old("INVITE", "3", ";tag=resp")), invite);
    }

    #[test]
    fn line_parameter_is_the_lookup_key() {
        let request = "INVITE sip:alice@gw.example:5080;line=uuid7 SIP/2.0\r\n\
Via: SIP/2.0/UDP 203.0.113.5:5060;branch=z9hG4bKline7\r\n\
To: <sip:alice@provider.example>\r\nFrom: <sip:bob@provider.example>;tag=9\r\n\
Call-ID: line-call\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n";
        let seen = std::cell::RefCell::new(Vec::new());
        let out = handle_request(request.as_bytes(), registrar(), &CONFIG, |a| {
            seen.borrow_mut().push(a.clone());
            lookup(a)
        });
        assert_eq!(
            seen.into_inner(),
            vec![Addressee {
                user: "alice".into(),
                line: Some("uuid7".into())
            }]
        );
        let out = forwarded(out);
        assert!(out.starts_with("INVITE sip:carol@pbx.example SIP/2.0\r\n"));
        // No Max-Forwards: one is added. Same host as the source, no rport: Via unchanged.
        assert!(out.contains("\r\nMax-Forwards: 69\r\n"));
        assert!(out.contains("\r\nVia: SIP/2.0/UDP 203.0.113.5:5060;branch=z9hG4bKline7\r\n"));
        // `alice` alone is not a registration.
        let plain = request.replace(";line=uuid7", "");
        assert!(replied(handle(&plain, registrar())).starts_with("SIP/2.0 404 Not Found\r\n"));
    }

    #[test]
    fn options_is_answered_by_the_gateway() {
        for uri in [
            "sip:192.0.2.10:5080",
            "sip:uuid1@192.0.2.10:5080",
            "sip:nobody@gw",
        ] {
            let request = format!(
                "OPTIONS {uri} SIP/2.0\r\nVia: SIP/2.0/UDP 203.0.113.5:5060;rport;branch=z9hG4bKopt\r\n\
Max-Forwards: 0\r\nTo: <{uri}>\r\nFrom: <sip:ping@provider.example>;tag=p1\r\n\
Call-ID: ping-1\r\nCSeq: 7 OPTIONS\r\nContent-Length: 0\r\n\r\n"
            );
            let reply = replied(handle(&request, registrar()));
            assert!(reply.starts_with("SIP/2.0 200 OK\r\n"), "{reply}");
            assert_eq!(
                header_line(&reply, "Via:"),
                "Via: SIP/2.0/UDP 203.0.113.5:5060;rport=5060;branch=z9hG4bKopt;received=203.0.113.5"
            );
            assert!(header_line(&reply, "Allow:").contains("INVITE"));
            assert_eq!(header_line(&reply, "Accept:"), "Accept: application/sdp");
            assert!(header_line(&reply, "To:").starts_with(&format!("To: <{uri}>;tag=rly")));
            assert_eq!(header_line(&reply, "Call-ID:"), "Call-ID: ping-1");
            assert_eq!(header_line(&reply, "CSeq:"), "CSeq: 7 OPTIONS");
            assert_eq!(header_line(&reply, "Server:"), "Server: uacreg");
            assert!(reply.ends_with("\r\nContent-Length: 0\r\n\r\n"));
            let parsed = Response::parse(reply.as_bytes()).unwrap();
            assert_eq!(parsed.code, 200);
            assert_eq!(parsed.branch.as_deref(), Some("z9hG4bKopt"));
        }
    }

    #[test]
    fn unknown_user_gets_404_and_its_ack_is_absorbed() {
        let request = invite().replace("sip:uuid1@", "sip:stranger@");
        let reply = replied(handle(&request, registrar()));
        assert!(reply.starts_with("SIP/2.0 404 Not Found\r\n"));
        // Both Vias come back, the top one with received/rport.
        let vias: Vec<_> = reply.lines().filter(|l| l.starts_with("Via:")).collect();
        assert_eq!(vias.len(), 2);
        assert!(vias[1].contains("z9hG4bKcaller1"));
        let to = header_line(&reply, "To:");
        let tag = to.split(";tag=").nth(1).unwrap();
        // The tag is stable across retransmissions.
        assert_eq!(replied(handle(&request, registrar())), reply);

        // The ACK for our 404 (same branch, our tag) is dropped, also for a user we know.
        let our_ack = ack(tag, "z9hG4bK776asdhds");
        assert_eq!(handle(&our_ack, registrar()), Inbound::Drop);
        // Any ACK for an unknown user is dropped.
        let stray = ack("x", "z9hG4bKother").replace("sip:uuid1@", "sip:stranger@");
        assert_eq!(handle(&stray, registrar()), Inbound::Drop);
        // An ACK with someone else's tag for a known user is relayed.
        assert!(matches!(
            handle(&ack("theirs", "z9hG4bK776asdhds"), registrar()),
            Inbound::Forward(_)
        ));
    }

    #[test]
    fn max_forwards_zero_is_483_and_other_values_are_decremented() {
        let request = invite().replace("Max-Forwards: 70", "Max-Forwards: 0");
        let reply = replied(handle(&request, registrar()));
        assert!(reply.starts_with("SIP/2.0 483 Too Many Hops\r\n"));
        let request = invite().replace("Max-Forwards: 70", "max-forwards:  1");
        assert!(forwarded(handle(&request, registrar())).contains("\r\nmax-forwards: 0\r\n"));
        let request = invite().replace("Max-Forwards: 70", "Max-Forwards: many");
        assert!(replied(handle(&request, registrar())).starts_with("SIP/2.0 400 Bad Request\r\n"));
        // An ACK is never answered.
        let request = ack("t", "z9hG4bKa").replace("Max-Forwards: 70", "Max-Forwards: 0");
        assert_eq!(handle(&request, registrar()), Inbound::Drop);
    }

    #[test]
    fn compact_forms_several_vias_in_a_line_and_lf_line_ends() {
        let request = "MESSAGE sip:uuid1@gw SIP/2.0\n\
v: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bKm1 , SIP/2.0/TCP 10.0.0.1:5080;branch=z9hG4bKm0\n\
t: <sip:uuid1@gw>\nf: <sip:bob@provider.example>;tag=f1\ni: msg-1\nCSeq: 2 MESSAGE\n\
c: text/plain\nl: 5\n\nhello";
        let from: SocketAddr = "198.51.100.7:40000".parse().unwrap();
        let out = forwarded(handle(request, from));
        assert!(!out.contains('\r'), "line ends stay LF: {out:?}");
        let mut lines = out.split('\n');
        assert_eq!(lines.next(), Some("MESSAGE sip:alice@pbx.example SIP/2.0"));
        assert!(
            lines
                .next()
                .unwrap()
                .starts_with("Via: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bKrly-u7.")
        );
        assert_eq!(lines.next(), Some("Max-Forwards: 69"));
        // Same host, no rport: the line is copied as it was.
        assert_eq!(
            lines.next(),
            Some(
                "v: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bKm1 , SIP/2.0/TCP 10.0.0.1:5080;branch=z9hG4bKm0"
            )
        );
        assert!(out.ends_with("\nl: 5\n\nhello"));

        // From another address the first value of the line gets received.
        let other: SocketAddr = "192.0.2.99:5060".parse().unwrap();
        let out = forwarded(handle(request, other));
        assert!(out.contains(
            "\nv: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bKm1;received=192.0.2.99 , SIP/2.0/TCP 10.0.0.1:5080;branch=z9hG4bKm0\n"
        ));
    }

    #[test]
    fn content_length_is_checked_and_extra_bytes_cut() {
        let request = invite();
        let short = request.replace(
            &format!("Content-Length: {}", SDP.len()),
            "Content-Length: 999",
        );
        assert!(replied(handle(&short, registrar())).starts_with("SIP/2.0 400 Bad Request\r\n"));
        let padded = format!("{request}garbage after the body");
        let out = forwarded(handle(&padded, registrar()));
        assert!(out.ends_with(SDP));
        // No Content-Length (allowed on UDP): added, so the proxy may use a stream.
        let bye = "BYE sip:uuid1@gw SIP/2.0\r\nVia: SIP/2.0/UDP 203.0.113.5;branch=z9hG4bKbye\r\n\
Max-Forwards: 10\r\nTo: <sip:a@b>;tag=callee\r\nFrom: <sip:bob@provider.example>;tag=f\r\n\
Call-ID: c\r\nCSeq: 3 BYE\r\n\r\n";
        let out = forwarded(handle(bye, registrar()));
        assert!(out.starts_with("BYE sip:alice@pbx.example SIP/2.0\r\n"));
        assert!(
            out.ends_with("\r\nCSeq: 3 BYE\r\nContent-Length: 0\r\n\r\n"),
            "{out}"
        );
        assert!(out.contains("\r\nMax-Forwards: 9\r\n"));
    }

    #[test]
    fn requests_that_cannot_be_relayed() {
        let bad_line = invite().replace("Record-Route:", "Record-Route");
        assert!(replied(handle(&bad_line, registrar())).starts_with("SIP/2.0 400 Bad Request\r\n"));
        let tel = invite().replace("INVITE sip:uuid1@192.0.2.10:5080", "INVITE tel:+4930123456");
        assert!(replied(handle(&tel, registrar())).starts_with("SIP/2.0 416 "));
        let mismatch = invite().replace("CSeq: 314159 INVITE", "CSeq: 314159 BYE");
        assert!(replied(handle(&mismatch, registrar())).starts_with("SIP/2.0 400 "));
        // Nothing to answer to.
        let no_via = invite()
            .replace(
                "Via: SIP/2.0/UDP sip.provider.example:5060;rport;branch=z9hG4bK776asdhds\r\n",
                "",
            )
            .replace("Via: SIP/2.0/TLS", "X-Via: SIP/2.0/TLS");
        assert_eq!(handle(&no_via, registrar()), Inbound::Drop);
        assert_eq!(handle("SIP/2.0 200 OK\r\n\r\n", registrar()), Inbound::Drop);
        assert_eq!(handle("\r\n\r\n", registrar()), Inbound::Drop);
        // A local URI that would break the request line.
        let out = handle_request(invite().as_bytes(), registrar(), &CONFIG, |_| {
            Some("sip:a b".into())
        });
        assert!(replied(out).starts_with("SIP/2.0 500 "));
    }

    #[test]
    fn folded_via_and_non_utf8_headers() {
        let mut request = b"INFO sip:uuid1@gw SIP/2.0\r\nVia: SIP/2.0/UDP 203.0.113.5:5060\r\n  ;branch=z9hG4bKfold\r\n\
To: <sip:uuid1@gw>;tag=t\r\nFrom: \"M"
            .to_vec();
        request.extend_from_slice(b"\xfcller\" <sip:m@provider.example>;tag=f\r\nCall-ID: fold\r\nCSeq: 5 INFO\r\nContent-Length: 0\r\n\r\n");
        let Inbound::Forward(out) = handle_request(&request, registrar(), &CONFIG, lookup) else {
            panic!("not forwarded");
        };
        // Untouched headers are copied as bytes, folding and Latin-1 included.
        let start = out.windows(5).position(|w| w == b"Via: ").unwrap();
        let start = start
            + out[start + 5..]
                .windows(5)
                .position(|w| w == b"Via: ")
                .unwrap()
            + 5;
        assert_eq!(
            &out[start..],
            &request[request.windows(5).position(|w| w == b"Via: ").unwrap()..]
        );
        assert!(out.windows(6).any(|w| w == b"M\xfcller"));
        // From elsewhere the folded value is rewritten on one line.
        let other: SocketAddr = "192.0.2.1:5060".parse().unwrap();
        let Inbound::Forward(out) = handle_request(&request, other, &CONFIG, lookup) else {
            panic!("not forwarded");
        };
        let text = String::from_utf8_lossy(&out);
        assert!(
            text.contains(
                "\r\nVia: SIP/2.0/UDP 203.0.113.5:5060;branch=z9hG4bKfold;received=192.0.2.1\r\nTo:"
            ),
            "{text}"
        );
    }

    /// The proxy's answer to a forwarded request: its Vias, a To tag, a status line.
    fn proxy_response(forwarded: &str, status: &str) -> String {
        let request = Request::parse(forwarded.as_bytes()).unwrap();
        let mut out = format!("SIP/2.0 {status}\r\n");
        for via in &request.vias {
            out.push_str(&format!("Via: {via}\r\n"));
        }
        out.push_str(&format!(
            "From: {}\r\nTo: {};tag=pbx9\r\nCall-ID: {}\r\nCSeq: {} {}\r\n\
Contact: <sip:alice@10.9.9.9:5060>\r\nContent-Length: 0\r\n\r\n",
            request.from, request.to, request.call_id, request.cseq, request.cseq_method
        ));
        out
    }

    #[test]
    fn responses_go_back_to_received_and_rport() {
        let out = forwarded(handle(&invite(), registrar()));
        for status in ["180 Ringing", "200 OK", "486 Busy Here"] {
            let response = proxy_response(&out, status);
            let ResponseRoute::Relay {
                bytes,
                to_host,
                to_port,
                flow_token,
            } = route_response(response.as_bytes())
            else {
                panic!("not relayed: {response}");
            };
            assert_eq!((to_host.as_str(), to_port), ("203.0.113.5", 5060));
            assert_eq!(flow_token, "u7");
            let text = String::from_utf8(bytes).unwrap();
            assert!(!text.contains("rly-"), "{text}");
            assert_eq!(
                text,
                response.replacen(
                    &format!(
                        "Via: {}\r\n",
                        Request::parse(out.as_bytes()).unwrap().vias[0]
                    ),
                    "",
                    1
                )
            );
            let parsed = Response::parse(text.as_bytes()).unwrap();
            assert_eq!(parsed.branch.as_deref(), Some("z9hG4bK776asdhds"));
        }
    }

    #[test]
    fn our_via_first_of_several_in_one_line() {
        let response = "SIP/2.0 200 OK\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bKrly-k9.0011223344556677;rport=5062, SIP/2.0/UDP gw.provider.example;branch=z9hG4bKx1,SIP/2.0/UDP 10.0.0.2:5070;branch=z9hG4bKx0\r\n\
From: <sip:bob@provider.example>;tag=1\r\nTo: <sip:alice@pbx.example>;tag=2\r\nCall-ID: c\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n";
        let route = route_response(response.as_bytes());
        let expected = response.replace(
            "SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bKrly-k9.0011223344556677;rport=5062, ",
            "",
        );
        assert_eq!(
            route,
            ResponseRoute::Relay {
                bytes: expected.into_bytes(),
                to_host: "gw.provider.example".into(),
                to_port: 5060,
                flow_token: "k9".into(),
            }
        );
        // TLS sent-by without port: 5061.
        let tls = response.replace("UDP gw.provider.example", "TLS gw.provider.example");
        assert!(matches!(
            route_response(tls.as_bytes()),
            ResponseRoute::Relay { to_port: 5061, .. }
        ));
    }

    #[test]
    fn responses_that_are_not_ours_or_unusable() {
        let register_200 = "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5080;rport=5080;branch=z9hG4bK00000000000000ab.3\r\n\
From: <sip:u@r>;tag=1\r\nTo: <sip:u@r>;tag=2\r\nCall-ID: c\r\nCSeq: 1 REGISTER\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(
            route_response(register_200.as_bytes()),
            ResponseRoute::NotRelayed
        );
        assert_eq!(
            route_response(b"INVITE sip:a@b SIP/2.0\r\n\r\n"),
            ResponseRoute::NotRelayed
        );
        assert_eq!(
            route_response(b"SIP/2.0 200 OK\r\n\r\n"),
            ResponseRoute::NotRelayed
        );
        let alone = register_200.replace("z9hG4bK00000000000000ab.3", "z9hG4bKrly-u7.abcd");
        assert_eq!(route_response(alone.as_bytes()), ResponseRoute::Drop);
        let no_hash = register_200.replace("z9hG4bK00000000000000ab.3", "z9hG4bKrly-u7");
        assert_eq!(route_response(no_hash.as_bytes()), ResponseRoute::Drop);
    }

    #[test]
    fn ipv6_sender_round_trip() {
        let from: SocketAddr = "[::1]:5070".parse().unwrap();
        let request = "INVITE sip:uuid1@[::1]:5080 SIP/2.0\r\n\
Via: SIP/2.0/UDP [::1]:5070;rport;branch=z9hG4bKv6\r\nMax-Forwards: 70\r\n\
To: <sip:uuid1@[::1]>\r\nFrom: <sip:bob@[::1]>;tag=6\r\nCall-ID: v6-call\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n";
        let out = forwarded(handle(request, from));
        assert!(
            out.contains(
                "\r\nVia: SIP/2.0/UDP [::1]:5070;rport=5070;branch=z9hG4bKv6;received=::1\r\n"
            ),
            "{out}"
        );
        let response = proxy_response(&out, "180 Ringing");
        match route_response(response.as_bytes()) {
            ResponseRoute::Relay {
                to_host, to_port, ..
            } => {
                assert_eq!((to_host.as_str(), to_port), ("::1", 5070));
            }
            other => panic!("{other:?}"),
        }
        // A 404 for an unknown user goes back with the same Via edits.
        let reply = replied(handle(
            &request.replace("uuid1@[::1]:5080", "x@[::1]:5080"),
            from,
        ));
        assert!(reply.contains(
            "\r\nVia: SIP/2.0/UDP [::1]:5070;rport=5070;branch=z9hG4bKv6;received=::1\r\n"
        ));
        // Same address written differently and no rport: no received.
        let plain = request.replace("[::1]:5070;rport;", "[0:0::1]:5070;");
        assert!(
            forwarded(handle(&plain, from))
                .contains("\r\nVia: SIP/2.0/UDP [0:0::1]:5070;branch=z9hG4bKv6\r\n")
        );
    }

    mod prop {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
                let _ = handle_request(&data, registrar(), &CONFIG, lookup);
                let _ = route_response(&data);
            }

            #[test]
            fn mutated_messages_never_panic(cut in 0usize..900, byte in any::<u8>(), at in 0usize..900) {
                let mut request = invite().into_bytes();
                if at < request.len() { request[at] = byte; }
                request.truncate(cut.min(request.len()));
                let _ = handle_request(&request, registrar(), &CONFIG, lookup);
                let response = proxy_response(&forwarded(handle(&invite(), registrar())), "200 OK");
                let mut response = response.into_bytes();
                if at < response.len() { response[at] = byte; }
                response.truncate(cut.min(response.len()));
                let _ = route_response(&response);
            }

            #[test]
            fn arbitrary_via_and_uri_text_never_panics(value in "\\PC{0,120}") {
                let request = invite().replace("sip.provider.example:5060;rport", &value).replace("uuid1@192.0.2.10:5080", &value);
                let _ = handle_request(request.as_bytes(), registrar(), &CONFIG, lookup);
                let response = format!("SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bKrly-u7.1, {value}\r\nVia: {value}\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n\r\n");
                let _ = route_response(response.as_bytes());
            }
        }
    }
}

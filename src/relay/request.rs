//! Requests for our registrations: answered by us (OPTIONS, errors, unknown users) or forwarded
//! to the proxy with the Request-URI rewritten, our Via on top and the sender's Via marked with
//! what we saw.

use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};

use super::branch::{BRANCH_COOKIE, RelayKey, is_reply_tag, relay_branch, reply_tag};
use super::flow_token::ReturnPath;
use super::outcome::Outcome;
use super::policy::{IDENTITY_HEADERS, Sender, UnknownUserReply, UntrustedPolicy};
use super::via::{FirstValue, Via, first_value};
use crate::sip::head::{Head, unfold};
use crate::sip::message::{header_params, split_list, split_name_addr};
use crate::sip::uri::UriParts;

/// Methods we relay, advertised in the 200 answering OPTIONS.
const ALLOW: &str =
    "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE, PRACK, REFER, NOTIFY, MESSAGE";

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
pub struct Inbound {
    pub outcome: Outcome,
    pub action: Action,
}

/// What to send for a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Send these bytes back to the sender, along the way the request came.
    Reply(Vec<u8>),
    /// Send these bytes to the proxy.
    Forward(Vec<u8>),
    /// Nothing to send.
    Nothing,
}

impl Inbound {
    fn nothing(outcome: Outcome) -> Inbound {
        Inbound {
            outcome,
            action: Action::Nothing,
        }
    }
}

/// How a request reached us.
#[derive(Clone, Copy, Debug)]
pub struct Arrival {
    /// The packet's source address (for a connection, its peer).
    pub from: SocketAddr,
    /// The way back, as observed (it goes into our branch).
    pub path: ReturnPath,
    pub sender: Sender,
}

/// What [`handle_request`] needs to know about the gateway.
#[derive(Clone, Copy, Debug)]
pub struct RelayConfig<'a> {
    /// Transport token of our Via towards the proxy: "UDP", "TCP" or "TLS".
    pub via_transport: &'a str,
    /// Our Via sent-by for the hop towards the proxy, e.g. "127.0.0.1:5062".
    pub via_sent_by: &'a str,
    /// Keys the MAC of our branches and the To tag of our own replies.
    pub key: &'a RelayKey,
    /// `Server` header of our full replies (left out when empty).
    pub user_agent: &'a str,
    /// A proxy is configured: requests for registered contacts can be relayed.
    pub relaying: bool,
    pub untrusted: UntrustedPolicy,
    pub unknown_user: UnknownUserReply,
}

/// Decides what to do with one received request. `lookup(addressee)` returns the local URI
/// (`sip:l_username@l_domain`) of the registration the request is for, or `None`.
pub fn handle_request(
    raw: &[u8],
    arrival: Arrival,
    config: &RelayConfig,
    lookup: impl Fn(&Addressee) -> Option<String>,
) -> Inbound {
    let Ok(scan) = Head::scan(raw) else {
        return Inbound::nothing(Outcome::Malformed);
    };
    let Some((method, request_uri)) = request_line(&scan) else {
        return Inbound::nothing(Outcome::Malformed);
    };
    let Some(basics) = Basics::new(&scan) else {
        return Inbound::nothing(Outcome::Malformed);
    };
    let is_ack = method == "ACK";
    let trusted = arrival.sender == Sender::Trusted;
    let key = basics.transaction_key(&scan, &method, &request_uri);
    let not_answered = |outcome: Outcome| {
        // An ACK is never answered; one not relayed is absorbed, whatever else it was.
        Inbound::nothing(if is_ack {
            Outcome::AckAbsorbed
        } else {
            outcome
        })
    };
    let reply = |code: u16, reason: &str, outcome: Outcome| {
        if is_ack {
            return not_answered(outcome);
        }
        let extra = if trusted && code == 200 {
            format!("Allow: {ALLOW}\r\nAccept: application/sdp\r\n")
        } else {
            String::new()
        };
        let bytes = basics.reply(
            &scan,
            arrival.from,
            config,
            &key,
            code,
            reason,
            &extra,
            trusted,
        );
        if !trusted && bytes.len() > raw.len() {
            // Never more bytes to a stranger than it sent: the port is no amplifier.
            return Inbound::nothing(Outcome::ReplyLargerThanRequest);
        }
        Inbound {
            outcome,
            action: Action::Reply(bytes),
        }
    };
    // What an unknown user gets; also what an untrusted sender gets for a user we hold but
    // will not relay for, byte for byte, so that l_uuids cannot be probed.
    let unknown = |outcome: Outcome| match (trusted, config.unknown_user) {
        (false, UnknownUserReply::Silent) => not_answered(outcome),
        _ => reply(404, "Not Found", outcome),
    };

    if is_ack
        && basics
            .to_tag
            .as_deref()
            .is_some_and(|tag| is_reply_tag(config.key, &key, tag))
    {
        // The ACK for one of our own final replies.
        return Inbound::nothing(Outcome::AckAbsorbed);
    }
    if !scan.is_clean() {
        return reply(400, "Bad Request", Outcome::Rejected);
    }
    if !basics.cseq_method.eq_ignore_ascii_case(&method) {
        return reply(400, "Bad Request", Outcome::Rejected);
    }
    if method == "OPTIONS" {
        return reply(200, "OK", Outcome::OptionsAnswered);
    }

    let scheme = request_uri
        .split_once(':')
        .map(|(s, _)| s.to_ascii_lowercase());
    if !matches!(scheme.as_deref(), Some("sip" | "sips")) {
        return reply(416, "Unsupported URI Scheme", Outcome::Rejected);
    }
    let Ok(uri) = UriParts::parse(&request_uri) else {
        return reply(400, "Bad Request", Outcome::Rejected);
    };

    let max_forwards = match max_forwards(&scan) {
        Ok(value) => value,
        Err(()) => return reply(400, "Bad Request", Outcome::Rejected),
    };
    if max_forwards == Some(0) {
        return reply(483, "Too Many Hops", Outcome::Rejected);
    }
    let Ok(body_len) = body_len(&scan) else {
        return reply(400, "Bad Request", Outcome::Rejected);
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
        return unknown(Outcome::UnknownUser);
    }
    let Some(local_uri) = lookup(&addressee) else {
        return unknown(Outcome::UnknownUser);
    };
    let strip = match (arrival.sender, config.untrusted) {
        (Sender::Trusted, _) => false,
        (Sender::Untrusted, UntrustedPolicy::Strip) if config.relaying => true,
        (Sender::Untrusted, _) => return unknown(Outcome::RefusedUntrusted),
    };
    if !config.relaying {
        return not_answered(Outcome::NoProxy);
    }
    if local_uri.is_empty()
        || local_uri
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
    {
        return reply(500, "Server Internal Error", Outcome::Rejected);
    }

    let forwarded = forward(
        &scan,
        &basics,
        arrival,
        config,
        &Forwarding {
            method: &method,
            local_uri: &local_uri,
            max_forwards,
            body_len,
            key: &key,
            strip,
        },
    );
    Inbound {
        outcome: if strip {
            Outcome::RelayedStripped
        } else {
            Outcome::RelayedTrusted
        },
        action: Action::Forward(forwarded),
    }
}

/// `(method, Request-URI)` of a `METHOD uri SIP/2.0` start line.
fn request_line(head: &Head<'_>) -> Option<(String, String)> {
    let mut parts = head.start_line.split_whitespace();
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

/// `Ok(None)` without Max-Forwards, `Err` for a bad or repeated one.
fn max_forwards(head: &Head<'_>) -> Result<Option<u32>, ()> {
    if head.all("max-forwards").next().is_none() {
        return Ok(None);
    }
    let value = head.single("max-forwards").ok_or(())?;
    parse_number(&value).map(Some).ok_or(())
}

/// How many body bytes to relay: the Content-Length (extra bytes after it are cut off as
/// RFC 3261 §18.3 says for datagrams), or everything without one. `Err` when it is bad,
/// repeated with different values, or larger than the body.
fn body_len(head: &Head<'_>) -> Result<usize, ()> {
    let available = head.data().len() - head.body_start;
    let mut declared: Option<usize> = None;
    for header in head.all("content-length") {
        let value = parse_number(&head.value(header)).ok_or(())?;
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

fn parse_number(text: &str) -> Option<u32> {
    let text = text.trim();
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
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
    fn new(scan: &Head<'_>) -> Option<Basics> {
        let top_header = scan.headers.iter().position(|h| h.name == "via")?;
        let header = &scan.headers[top_header];
        let top = first_value(scan.data(), header.value_start, header.value_end)?;
        let top_text = unfold(&scan.data()[top.start..top.end]);
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
            top_text: top_text.into_owned(),
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
    fn transaction_key(&self, scan: &Head<'_>, method: &str, request_uri: &str) -> Vec<u8> {
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
                field(&scan.data()[self.top.start..self.top.end]);
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

    /// The top Via value with `received` and `rport` set from what we saw (RFC 3261 §18.2.1,
    /// RFC 3581 §4), or `None` when it stays as it is. Whatever the sender wrote into those two
    /// parameters is dropped, never kept: `received` is added when the sent-by host is not
    /// the source address or an `rport` was present; `rport` gets the source port where it was.
    fn received_top_via(&self, received_from: SocketAddr) -> Option<String> {
        let source = received_from.ip().to_canonical();
        let same_host = self
            .top_via
            .host
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.to_canonical() == source);
        let has_rport = self.top_via.param("rport").is_some();
        let has_received = self.top_via.param("received").is_some();
        if same_host && !has_rport && !has_received {
            return None;
        }
        let (head, params) = match self.top_text.split_once(';') {
            Some((h, p)) => (h.trim_end(), p),
            None => (self.top_text.trim_end(), ""),
        };
        let mut out = head.to_string();
        let mut rport_written = false;
        for param in params.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let name = param.split('=').next().unwrap_or("").trim();
            if name.eq_ignore_ascii_case("received") {
                continue;
            }
            if name.eq_ignore_ascii_case("rport") {
                if !rport_written {
                    rport_written = true;
                    out.push_str(&format!(";rport={}", received_from.port()));
                }
                continue;
            }
            out.push(';');
            out.push_str(param);
        }
        if has_rport || !same_host {
            out.push_str(&format!(";received={source}"));
        }
        Some(out)
    }

    /// One of our own responses to the request. `full`: with `extra_headers` and `Server`
    /// (for trusted senders); otherwise only what RFC 3261 §8.2.6 requires.
    #[allow(clippy::too_many_arguments)]
    fn reply(
        &self,
        scan: &Head<'_>,
        received_from: SocketAddr,
        config: &RelayConfig,
        key: &[u8],
        code: u16,
        reason: &str,
        extra_headers: &str,
        full: bool,
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
            let _ = write!(out, ";tag={}", reply_tag(config.key, key));
        }
        let _ = write!(
            out,
            "\r\nCall-ID: {}\r\nCSeq: {}\r\n",
            self.call_id, self.cseq
        );
        if full {
            out.extend_from_slice(extra_headers.as_bytes());
            if !config.user_agent.is_empty() {
                let _ = write!(out, "Server: {}\r\n", config.user_agent);
            }
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

/// What the request for the proxy is made of, besides the message itself.
struct Forwarding<'a> {
    method: &'a str,
    local_uri: &'a str,
    max_forwards: Option<u32>,
    body_len: usize,
    /// The transaction key (for our branch).
    key: &'a [u8],
    /// Leave out the identity headers (an untrusted sender's request).
    strip: bool,
}

/// The request for the proxy: new Request-URI, our Via on top, received/rport on the sender's
/// Via, Max-Forwards decremented, identity headers removed if asked; all else copied.
fn forward(
    scan: &Head<'_>,
    basics: &Basics,
    arrival: Arrival,
    config: &RelayConfig,
    what: &Forwarding<'_>,
) -> Vec<u8> {
    let data = scan.data();
    let le = scan.line_end;
    let mut out = Vec::with_capacity(data.len() + 256);
    let _ = write!(
        out,
        "{} {} SIP/2.0{le}Via: SIP/2.0/{} {};branch={};rport{le}",
        what.method,
        what.local_uri,
        config.via_transport,
        config.via_sent_by,
        relay_branch(config.key, what.key, arrival.path)
    );
    if what.max_forwards.is_none() {
        let _ = write!(out, "Max-Forwards: 69{le}");
    }
    for (index, header) in scan.headers.iter().enumerate() {
        if index == basics.top_header {
            match basics.received_top_via(arrival.from) {
                Some(top) => {
                    out.extend_from_slice(&data[header.start..basics.top.start]);
                    out.extend_from_slice(top.as_bytes());
                    out.extend_from_slice(&data[basics.top.end..header.end]);
                }
                None => out.extend_from_slice(&data[header.start..header.end]),
            }
        } else if header.name == "max-forwards" {
            let value = what.max_forwards.unwrap_or(70).saturating_sub(1);
            out.extend_from_slice(&data[header.start..header.value_start]);
            let _ = write!(out, " {value}{le}");
        } else if what.strip && IDENTITY_HEADERS.contains(&header.name.as_ref()) {
            // An untrusted sender's identity assertions do not cross into the proxy's domain.
        } else {
            out.extend_from_slice(&data[header.start..header.end]);
        }
    }
    if scan.all("content-length").next().is_none() {
        let _ = write!(out, "Content-Length: {}{le}", what.body_len);
    }
    let head_end = scan.head_end.unwrap_or(scan.body_start);
    out.extend_from_slice(&data[head_end..scan.body_start]);
    out.extend_from_slice(&data[scan.body_start..scan.body_start + what.body_len]);
    out
}

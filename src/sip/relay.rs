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
//! * Everything a later message needs is recomputed from the message itself. Our Via branch is
//!   `z9hG4bKrly-<tx>.<path>.<mac>`. `tx` is a keyed hash of the incoming transaction key, so a
//!   retransmission, the CANCEL of an INVITE and the ACK of a non-2xx final response all get the
//!   branch of the INVITE, exactly what the proxy's transaction layer needs to match them.
//!   `path` is the way back as *we observed* it — the local UDP socket and the source address,
//!   or the TCP/TLS connection — never what the sender wrote. `mac` is an HMAC-SHA256 over both
//!   with the process's [`RelayKey`]. A response is relayed only when it comes from the proxy and
//!   its MAC verifies, and then only along that path, never to where its other Vias point: no
//!   one but the proxy can make us send anything, and the proxy only back to where a request
//!   came from.
//! * Our own replies (200 to OPTIONS, 404, 483, 400 …) get a To tag that is also an HMAC of the
//!   transaction key, so the ACK for such a reply is recognised and absorbed without
//!   remembering that we sent it.
//!
//! # Whom we relay for
//!
//! The caller says whether a request's sender is trusted (see `driver::trust`). Trusted senders
//! get requests relayed as they came and our full answers. For untrusted senders
//! [`UntrustedPolicy`] decides: nothing relayed, or relayed without the identity headers of
//! [`IDENTITY_HEADERS`]. Our answers to them are minimal (no Allow, Accept or Server), never
//! larger than the request that caused them (else nothing is sent), and the same for a user we
//! refuse to relay for as for one we do not know, so the port is neither an amplifier nor an
//! oracle for l_uuids. Rate-limiting those answers needs a clock and is the driver's part. From
//! everyone, the `received`/`rport` of the sender's Via are what we saw, never what it wrote.
//!
//! The functions here never panic on malformed input (a property test feeds them arbitrary
//! bytes). What cannot be answered (no usable Via, no Call-ID …) is dropped; what can be answered
//! but not relayed gets a 400. Headers and body of a relayed message are copied byte for byte
//! except for the Request-URI, our Via, the received/rport parameters of the sender's Via,
//! Max-Forwards and (for an untrusted sender) the identity headers.

use std::borrow::Cow;
use std::fmt;
use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use ring::hmac;
use subtle::ConstantTimeEq as _;

use super::message::{
    expand_compact, header_params, is_response, split_host_port, split_list, split_name_addr,
};

/// RFC 3261 magic cookie that starts every branch of a compliant element.
pub const BRANCH_COOKIE: &str = "z9hG4bK";
/// After the cookie, marks a branch as one of our relay branches. Not a hexadecimal digit, so it
/// cannot start one of our REGISTER branches, and recognised in any letter case when a response
/// comes back, so that nothing carrying it is mistaken for a REGISTER answer.
pub const RELAY_MARKER: &str = "rly-";

/// Methods we relay, advertised in the 200 answering OPTIONS.
const ALLOW: &str =
    "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE, PRACK, REFER, NOTIFY, MESSAGE";

/// Largest head we look at.
const MAX_HEAD: usize = super::MAX_MESSAGE;
const MAX_HEADERS: usize = 256;

/// Hex digits of the per-transaction value in our branch (64 bits: unique, not a secret).
const TX_HEX: usize = 16;
/// Hex digits of the MAC in our branch (128 bits) and in our To tags (96 bits).
const BRANCH_MAC_HEX: usize = 32;
const TAG_MAC_HEX: usize = 24;
/// Longest return path we write: UDP on an IPv6 extra socket from an IPv6 source, `u` + 2 × 37.
const MAX_PATH: usize = 75;

/// Headers that assert who a caller is or what network it is in, meaningful only inside a
/// trust domain (RFC 3325, RFC 7315 and the Remote-Party-ID draft). An untrusted sender's are
/// removed before relaying, as an edge proxy does at its trust boundary. `P-Charging-Vector`
/// and `P-Charging-Function-Addresses` are among them: billing correlation from a stranger is
/// forgeable too. `Identity` (RFC 8224) is kept: it is signed, and the proxy can verify it.
pub const IDENTITY_HEADERS: [&str; 15] = [
    "p-asserted-identity",
    "p-preferred-identity",
    "remote-party-id",
    "rpid-privacy",
    "p-asserted-service",
    "p-preferred-service",
    "p-called-party-id",
    "p-served-user",
    "p-access-network-info",
    "p-visited-network-id",
    "p-charging-vector",
    "p-charging-function-addresses",
    "p-profile-key",
    "p-early-media",
    "p-associated-uri",
];

/// The relay's secret: 32 bytes from the operating system's random generator, drawn at start
/// and never shown. It keys the MAC in our branches and our reply To tags.
pub struct RelayKey(hmac::Key);

/// The operating system could not give us random bytes.
#[derive(Debug, thiserror::Error)]
#[error("the operating system's random generator failed")]
pub struct KeyError;

impl RelayKey {
    /// A fresh key from the OS CSPRNG.
    pub fn generate() -> Result<RelayKey, KeyError> {
        let rng = ring::rand::SystemRandom::new();
        hmac::Key::generate(hmac::HMAC_SHA256, &rng)
            .map(RelayKey)
            .map_err(|_| KeyError)
    }

    /// A key from known bytes (tests and fuzzing; the daemon uses [`RelayKey::generate`]).
    pub fn from_secret(secret: &[u8; 32]) -> RelayKey {
        RelayKey(hmac::Key::new(hmac::HMAC_SHA256, secret))
    }

    /// HMAC-SHA256 over a purpose and fields, each length-prefixed so that no two inputs
    /// collide, as the first `hex_len` lowercase hex digits.
    fn mac_hex(&self, purpose: &str, fields: &[&[u8]], hex_len: usize) -> String {
        let mut context = hmac::Context::with_key(&self.0);
        for field in std::iter::once(purpose.as_bytes()).chain(fields.iter().copied()) {
            context.update(&(field.len() as u64).to_le_bytes());
            context.update(field);
        }
        let tag = context.sign();
        let bytes = tag.as_ref();
        bytes[..hex_len / 2]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// Whether `claimed` is the MAC [`RelayKey::mac_hex`] gives, compared in constant time.
    fn verify_hex(&self, purpose: &str, fields: &[&[u8]], claimed: &str, hex_len: usize) -> bool {
        if claimed.len() != hex_len {
            return false;
        }
        let expected = self.mac_hex(purpose, fields, hex_len);
        expected.as_bytes().ct_eq(claimed.as_bytes()).into()
    }
}

impl fmt::Debug for RelayKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RelayKey(…)")
    }
}

/// Where a request arrived, as the driver observed it: the way its responses must go back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReturnPath {
    /// A datagram: the local socket it arrived on (`None`: the main SIP socket) and the source
    /// address it came from.
    Udp {
        local: Option<SocketAddr>,
        source: SocketAddr,
    },
    /// A TCP or TLS connection, by the driver's flow id.
    Flow(u64),
}

impl ReturnPath {
    /// Letters and digits only: `f<flow id in hex>`, or `u` + `m` (main socket) or the local
    /// address + the source address, each address `4<8 hex ip><4 hex port>` or
    /// `6<32 hex ip><4 hex port>`.
    fn encode(&self) -> String {
        match self {
            ReturnPath::Flow(flow) => format!("f{flow:x}"),
            ReturnPath::Udp { local, source } => {
                let local = local.map_or_else(|| "m".to_string(), encode_addr);
                format!("u{local}{}", encode_addr(*source))
            }
        }
    }

    fn decode(text: &str) -> Option<ReturnPath> {
        if let Some(hex) = text.strip_prefix('f') {
            return parse_hex(hex).map(ReturnPath::Flow);
        }
        let rest = text.strip_prefix('u')?;
        let (local, rest) = match rest.strip_prefix('m') {
            Some(rest) => (None, rest),
            None => {
                let (local, rest) = decode_addr(rest)?;
                (Some(local), rest)
            }
        };
        let (source, rest) = decode_addr(rest)?;
        rest.is_empty().then_some(ReturnPath::Udp { local, source })
    }
}

fn encode_addr(addr: SocketAddr) -> String {
    match addr {
        SocketAddr::V4(v4) => format!("4{:08x}{:04x}", u32::from(*v4.ip()), v4.port()),
        SocketAddr::V6(v6) => format!("6{:032x}{:04x}", u128::from(*v6.ip()), v6.port()),
    }
}

/// One address of [`encode_addr`] at the start of `text`, and what follows it.
fn decode_addr(text: &str) -> Option<(SocketAddr, &str)> {
    let (ip_hex, rest) = match text.as_bytes().first()? {
        b'4' => (8, &text[1..]),
        b'6' => (32, &text[1..]),
        _ => return None,
    };
    let ip_text = rest.get(..ip_hex)?;
    let port_text = rest.get(ip_hex..ip_hex + 4)?;
    let rest = rest.get(ip_hex + 4..)?;
    let ip = match ip_hex {
        8 => IpAddr::V4(u32::try_from(parse_hex(ip_text)?).ok()?.into()),
        _ => IpAddr::V6(parse_hex_u128(ip_text)?.into()),
    };
    let port = u16::try_from(parse_hex(port_text)?).ok()?;
    Some((SocketAddr::new(ip, port), rest))
}

/// Lowercase hex digits only (no sign, no empty string), at most 16 of them.
fn parse_hex(text: &str) -> Option<u64> {
    if text.is_empty() || text.len() > 16 || !is_lower_hex(text) {
        return None;
    }
    u64::from_str_radix(text, 16).ok()
}

fn parse_hex_u128(text: &str) -> Option<u128> {
    if text.is_empty() || text.len() > 32 || !is_lower_hex(text) {
        return None;
    }
    u128::from_str_radix(text, 16).ok()
}

fn is_lower_hex(text: &str) -> bool {
    text.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Whether the request's sender is one we relay for as it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sender {
    Trusted,
    Untrusted,
}

/// What happens to an untrusted sender's request for a registered contact.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum UntrustedPolicy {
    /// Not relayed: answered exactly as a request for an unknown user.
    #[default]
    Drop,
    /// Relayed without its identity headers ([`IDENTITY_HEADERS`]).
    Strip,
}

/// A value of `[inbound] untrusted` or `unknown_user` that is not one of the choices.
#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not one of {1}")]
pub struct PolicyError(String, &'static str);

impl FromStr for UntrustedPolicy {
    type Err = PolicyError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "drop" => Ok(UntrustedPolicy::Drop),
            "strip" => Ok(UntrustedPolicy::Strip),
            _ => Err(PolicyError(text.to_string(), "\"drop\", \"strip\"")),
        }
    }
}

/// What an untrusted sender gets for a request for a user we do not relay for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum UnknownUserReply {
    /// A minimal 404 (rate-limited by the driver).
    #[default]
    NotFound,
    /// Nothing at all.
    Silent,
}

impl FromStr for UnknownUserReply {
    type Err = PolicyError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "404" => Ok(UnknownUserReply::NotFound),
            "silent" => Ok(UnknownUserReply::Silent),
            _ => Err(PolicyError(text.to_string(), "\"404\", \"silent\"")),
        }
    }
}

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

/// What became of one received request. The driver counts every request under exactly one of
/// these, so that the counters add up to the requests received.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// OPTIONS answered with 200.
    OptionsAnswered,
    /// Relayed to the proxy as it came, from a trusted sender.
    RelayedTrusted,
    /// Relayed from an untrusted sender without its identity headers.
    RelayedStripped,
    /// For a registered contact, from an untrusted sender we do not relay for: treated exactly
    /// as a request for an unknown user.
    RefusedUntrusted,
    /// For no registration we hold: 404, or silence for untrusted senders if so configured.
    UnknownUser,
    /// Answered with an error: 400, 416, 483 or 500.
    Rejected,
    /// For a registered contact, from a trusted sender, but no proxy is configured.
    NoProxy,
    /// An ACK that is not relayed (ACKs are never answered).
    AckAbsorbed,
    /// Too broken to answer (not a request line, no Via, Call-ID, From, To or CSeq …).
    Malformed,
    /// Our answer to an untrusted sender would have been larger than its request: not sent.
    ReplyLargerThanRequest,
    /// Our answer to an untrusted sender found the reply budget empty (decided by the driver).
    RepliesRateLimited,
}

impl Outcome {
    pub const ALL: [Outcome; 11] = [
        Outcome::OptionsAnswered,
        Outcome::RelayedTrusted,
        Outcome::RelayedStripped,
        Outcome::RefusedUntrusted,
        Outcome::UnknownUser,
        Outcome::Rejected,
        Outcome::NoProxy,
        Outcome::AckAbsorbed,
        Outcome::Malformed,
        Outcome::ReplyLargerThanRequest,
        Outcome::RepliesRateLimited,
    ];

    /// The name of its counter (status and metrics label).
    pub fn label(self) -> &'static str {
        match self {
            Outcome::OptionsAnswered => "options_answered",
            Outcome::RelayedTrusted => "relayed_trusted",
            Outcome::RelayedStripped => "relayed_stripped",
            Outcome::RefusedUntrusted => "refused_untrusted",
            Outcome::UnknownUser => "unknown_user",
            Outcome::Rejected => "rejected",
            Outcome::NoProxy => "no_proxy",
            Outcome::AckAbsorbed => "ack_absorbed",
            Outcome::Malformed => "malformed",
            Outcome::ReplyLargerThanRequest => "reply_larger_than_request",
            Outcome::RepliesRateLimited => "replies_rate_limited",
        }
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

/// What became of a received response that carries our relay marker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResponseOutcome {
    /// Sent back along the path in its branch.
    Relayed,
    /// Its branch does not verify with our key (forged, tampered or unreadable).
    BadMac,
    /// It did not come from the configured proxy.
    WrongSource,
    /// No proxy is configured, so we relayed nothing it could answer.
    NoProxy,
    /// The way back is gone (the connection closed, the socket is not ours) or sending failed.
    NoFlow,
    /// Verified, but the head is broken or no Via is left once ours is removed.
    Malformed,
}

impl ResponseOutcome {
    pub const ALL: [ResponseOutcome; 6] = [
        ResponseOutcome::Relayed,
        ResponseOutcome::BadMac,
        ResponseOutcome::WrongSource,
        ResponseOutcome::NoProxy,
        ResponseOutcome::NoFlow,
        ResponseOutcome::Malformed,
    ];

    /// The name of its counter (status and metrics label).
    pub fn label(self) -> &'static str {
        match self {
            ResponseOutcome::Relayed => "relayed",
            ResponseOutcome::BadMac => "bad_mac",
            ResponseOutcome::WrongSource => "wrong_source",
            ResponseOutcome::NoProxy => "no_proxy",
            ResponseOutcome::NoFlow => "no_flow",
            ResponseOutcome::Malformed => "malformed",
        }
    }
}

/// Where a response goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResponseRoute {
    /// A response from the proxy to a request we relayed, with our Via removed: send `bytes`
    /// along `path`.
    Relay { bytes: Vec<u8>, path: ReturnPath },
    /// Not ours (the top Via branch does not carry our relay marker): the caller treats it as a
    /// response to its own transactions.
    NotRelayed,
    /// Carries our marker but is not relayed: drop it, count it.
    Refused(ResponseOutcome),
}

/// Decides what to do with one received request. `lookup(addressee)` returns the local URI
/// (`sip:l_username@l_domain`) of the registration the request is for, or `None`.
pub fn handle_request(
    raw: &[u8],
    arrival: Arrival,
    config: &RelayConfig,
    lookup: impl Fn(&Addressee) -> Option<String>,
) -> Inbound {
    let Some(scan) = Scan::new(raw) else {
        return Inbound::nothing(Outcome::Malformed);
    };
    let Some((method, request_uri)) = scan.request_line() else {
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
    if scan.malformed || scan.head_end.is_none() {
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
    let Ok(uri) = super::message::UriParts::parse(&request_uri) else {
        return reply(400, "Bad Request", Outcome::Rejected);
    };

    let max_forwards = match scan.max_forwards() {
        Ok(value) => value,
        Err(()) => return reply(400, "Bad Request", Outcome::Rejected),
    };
    if max_forwards == Some(0) {
        return reply(483, "Too Many Hops", Outcome::Rejected);
    }
    let Ok(body_len) = scan.body_len() else {
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

/// Routes a received response from `from`: ours (top Via carries our marker) or not. Ours is
/// relayed only if a proxy is configured, it came from that proxy, and its branch verifies.
pub fn route_response(
    raw: &[u8],
    from: SocketAddr,
    key: &RelayKey,
    proxy: Option<SocketAddr>,
) -> ResponseRoute {
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
    let Some(relay_part) = via.param("branch").and_then(strip_relay_marker) else {
        return ResponseRoute::NotRelayed;
    };
    // From here on the response carries our marker: relayed or refused, never anything else.
    let Some(proxy) = proxy else {
        return ResponseRoute::Refused(ResponseOutcome::NoProxy);
    };
    if !same_address(from, proxy) {
        return ResponseRoute::Refused(ResponseOutcome::WrongSource);
    }
    let Some(path) = verify_branch(key, relay_part) else {
        return ResponseRoute::Refused(ResponseOutcome::BadMac);
    };
    if scan.malformed || scan.head_end.is_none() {
        return ResponseRoute::Refused(ResponseOutcome::Malformed);
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
    // The next Via is the sender's; it is not where we send (the path is), but a response
    // without one is not a response to anything we relayed.
    if next
        .and_then(|n| Via::parse(&unfold(&raw[n.start..n.end])))
        .is_none()
    {
        return ResponseRoute::Refused(ResponseOutcome::Malformed);
    }
    ResponseRoute::Relay { bytes, path }
}

/// The part of a branch after `z9hG4bKrly-` (in any letter case), if it starts so.
fn strip_relay_marker(branch: &str) -> Option<&str> {
    let prefix_len = BRANCH_COOKIE.len() + RELAY_MARKER.len();
    let prefix = branch.get(..prefix_len)?;
    let ours = prefix
        .get(..BRANCH_COOKIE.len())?
        .eq_ignore_ascii_case(BRANCH_COOKIE)
        && prefix
            .get(BRANCH_COOKIE.len()..)?
            .eq_ignore_ascii_case(RELAY_MARKER);
    if ours { branch.get(prefix_len..) } else { None }
}

/// The same IP (an IPv4-mapped IPv6 address equals its IPv4 address) and port.
fn same_address(a: SocketAddr, b: SocketAddr) -> bool {
    a.ip().to_canonical() == b.ip().to_canonical() && a.port() == b.port()
}

/// The return path of a relay branch (after the marker) whose MAC verifies with `key`.
fn verify_branch(key: &RelayKey, relay_part: &str) -> Option<ReturnPath> {
    let mut parts = relay_part.split('.');
    let (Some(tx), Some(path), Some(mac), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    if tx.len() != TX_HEX || !is_lower_hex(tx) || path.is_empty() || path.len() > MAX_PATH {
        return None;
    }
    if !key.verify_hex(
        "branch",
        &[tx.as_bytes(), path.as_bytes()],
        mac,
        BRANCH_MAC_HEX,
    ) {
        return None;
    }
    ReturnPath::decode(path)
}

/// The full branch of our Via for a transaction arriving along `path`.
fn relay_branch(key: &RelayKey, transaction_key: &[u8], path: ReturnPath) -> String {
    let tx = key.mac_hex("tx", &[transaction_key], TX_HEX);
    let path = path.encode();
    let mac = key.mac_hex("branch", &[tx.as_bytes(), path.as_bytes()], BRANCH_MAC_HEX);
    format!("{BRANCH_COOKIE}{RELAY_MARKER}{tx}.{path}.{mac}")
}

/// The To tag of our own replies to a transaction.
fn reply_tag(key: &RelayKey, transaction_key: &[u8]) -> String {
    format!("rly{}", key.mac_hex("tag", &[transaction_key], TAG_MAC_HEX))
}

/// Whether `tag` is the To tag of our reply to the transaction, compared in constant time.
fn is_reply_tag(key: &RelayKey, transaction_key: &[u8], tag: &str) -> bool {
    tag.strip_prefix("rly")
        .is_some_and(|mac| key.verify_hex("tag", &[transaction_key], mac, TAG_MAC_HEX))
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
    /// A header line could not be read (no colon, bad name, continuation first …), or the
    /// head could be read differently by another parser (see [`Scan::new`]).
    malformed: bool,
}

/// Whether a line of a head holds a byte no header may hold: a control character other than
/// HTAB, a bare CR among them.
fn has_control(line: &[u8]) -> bool {
    line.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f)
}

impl<'a> Scan<'a> {
    /// Cuts `data` at its line ends (CRLF, or a bare LF for sloppy peers).
    ///
    /// What we relay must mean the same to the proxy as it meant to us, or a sender could hide
    /// headers from us (identity headers an untrusted sender may not pass on) that the proxy
    /// then reads. So a head that parsers could cut differently is malformed: one whose lines
    /// do not all end like its start line (a bare LF among CRLFs ends the head early for some
    /// parsers and not for others), or with a control character in a line (a bare CR is a
    /// line end to some parsers, a NUL the end of the text to others).
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
            malformed: has_control(line),
        };
        pos = next;
        while let Some((line, ends_at, next)) = next_line(data, pos) {
            if pos > MAX_HEAD {
                return None;
            }
            if has_control(line) || (ends_at < next && &data[ends_at..next] != line_end.as_bytes())
            {
                scan.malformed = true;
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
        scan: &Scan<'_>,
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
    scan: &Scan<'_>,
    basics: &Basics,
    arrival: Arrival,
    config: &RelayConfig,
    what: &Forwarding<'_>,
) -> Vec<u8> {
    let data = scan.data;
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
        } else if what.strip && IDENTITY_HEADERS.contains(&header.name.as_str()) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::{Request, Response};

    static KEY: std::sync::LazyLock<RelayKey> =
        std::sync::LazyLock::new(|| RelayKey::from_secret(&[7; 32]));

    fn config() -> RelayConfig<'static> {
        RelayConfig {
            via_transport: "UDP",
            via_sent_by: "127.0.0.1:5062",
            key: &KEY,
            user_agent: "uacreg",
            relaying: true,
            untrusted: UntrustedPolicy::Drop,
            unknown_user: UnknownUserReply::NotFound,
        }
    }

    /// The proxy our test gateway relays to.
    fn proxy() -> SocketAddr {
        "192.0.2.50:5060".parse().unwrap()
    }

    /// A datagram on the main socket from `from`.
    fn arrival(from: SocketAddr, sender: Sender) -> Arrival {
        Arrival {
            from,
            path: ReturnPath::Udp {
                local: None,
                source: from,
            },
            sender,
        }
    }

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
        match inbound.action {
            Action::Forward(bytes) => String::from_utf8(bytes).unwrap(),
            _ => panic!("expected Forward, got {inbound:?}"),
        }
    }

    fn replied(inbound: Inbound) -> String {
        match inbound.action {
            Action::Reply(bytes) => String::from_utf8(bytes).unwrap(),
            _ => panic!("expected Reply, got {inbound:?}"),
        }
    }

    /// A request from a trusted sender.
    fn handle(raw: &str, from: SocketAddr) -> Inbound {
        handle_request(
            raw.as_bytes(),
            arrival(from, Sender::Trusted),
            &config(),
            lookup,
        )
    }

    /// A request from an untrusted sender, under `adjust`ed settings.
    fn handle_untrusted(
        raw: &str,
        from: SocketAddr,
        adjust: impl FnOnce(&mut RelayConfig<'static>),
    ) -> Inbound {
        let mut config = config();
        adjust(&mut config);
        handle_request(
            raw.as_bytes(),
            arrival(from, Sender::Untrusted),
            &config,
            lookup,
        )
    }

    fn nothing(outcome: Outcome) -> Inbound {
        Inbound {
            outcome,
            action: Action::Nothing,
        }
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
            our_via.starts_with("Via: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bKrly-"),
            "{our_via}"
        );
        assert_eq!(
            handle(&original, registrar()).outcome,
            Outcome::RelayedTrusted
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

        // Another key, other branches.
        let other_key = RelayKey::from_secret(&[8; 32]);
        let other = RelayConfig {
            key: &other_key,
            ..config()
        };
        let out = forwarded(handle_request(
            invite().as_bytes(),
            arrival(registrar(), Sender::Trusted),
            &other,
            lookup,
        ));
        assert_ne!(top_branch(&out), invite_branch);
        assert!(top_branch(&out).starts_with("z9hG4bKrly-"));

        // The same transaction arriving another way is another branch (the path is in it).
        let elsewhere: SocketAddr = "203.0.113.5:5099".parse().unwrap();
        assert_ne!(
            top_branch(&forwarded(handle(&invite(), elsewhere))),
            invite_branch
        );
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
        let out = handle_request(
            request.as_bytes(),
            arrival(registrar(), Sender::Trusted),
            &config(),
            |a| {
                seen.borrow_mut().push(a.clone());
                lookup(a)
            },
        );
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
            let tag = header_line(&reply, "To:").split(";tag=rly").nth(1).unwrap();
            assert_eq!(tag.len(), TAG_MAC_HEX, "a 96-bit MAC");
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
        assert_eq!(handle(&our_ack, registrar()), nothing(Outcome::AckAbsorbed));
        // Our tag with one character changed is not ours: relayed for a known user.
        let mut forged = tag.to_string();
        let last = forged.pop().unwrap();
        forged.push(if last == '0' { '1' } else { '0' });
        assert_eq!(
            handle(&ack(&forged, "z9hG4bK776asdhds"), registrar()).outcome,
            Outcome::RelayedTrusted
        );
        // Any ACK for an unknown user is dropped.
        let stray = ack("x", "z9hG4bKother").replace("sip:uuid1@", "sip:stranger@");
        assert_eq!(handle(&stray, registrar()), nothing(Outcome::AckAbsorbed));
        // An ACK with someone else's tag for a known user is relayed.
        assert!(matches!(
            handle(&ack("theirs", "z9hG4bK776asdhds"), registrar()).action,
            Action::Forward(_)
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
        assert_eq!(handle(&request, registrar()), nothing(Outcome::AckAbsorbed));
    }

    /// Found by the `request` fuzz target (fuzz/seeds/request/crash-mixed-line-ends): after
    /// CRLF lines, a bare LF ended the head for us, so the identity headers after it were body
    /// and went to the proxy from a stranger whose policy is strip; a parser that ends lines
    /// only at CRLF reads them as headers. A bare CR or a NUL in a header line splits the line
    /// for other parsers in the same way. Such heads are malformed: not relayed, answered 400.
    #[test]
    fn a_head_other_parsers_would_cut_differently_is_not_relayed() {
        const FOUND: &[u8] = include_bytes!("../../fuzz/seeds/request/crash-mixed-line-ends");
        let (from, path) = ("198.51.100.7:5063".parse().unwrap(), ReturnPath::Flow(3));
        let strip = |config: &mut RelayConfig<'static>| config.untrusted = UntrustedPolicy::Strip;
        let mut config = config();
        strip(&mut config);
        // The fuzzer's input: two control bytes (untrusted, relaying, strip; port 3), then the
        // request; its l_uuid is the one the fuzz harness knows.
        let inbound = handle_request(
            &FOUND[2..],
            Arrival {
                from,
                path,
                sender: Sender::Untrusted,
            },
            &config,
            |a| (a.key() == "uuid000001").then(|| "sip:alice@pbx.example".into()),
        );
        assert_eq!(inbound.outcome, Outcome::Rejected);
        assert!(!matches!(inbound.action, Action::Forward(_)));

        let pai = "P-Asserted-Identity: <sip:ceo@provider.example>\r\n";
        let cut = invite().replacen("CSeq: 314159 INVITE\r\n", "CSeq: 314159 INVITE\r\n\n", 1);
        let cut = cut.replacen("Content-Type", &format!("{pai}Content-Type"), 1);
        let bare_cr = invite().replacen(
            "Content-Type",
            &format!("Subject: hi\r{pai}Content-Type"),
            1,
        );
        let nul = invite().replacen(
            "Content-Type",
            &format!("Subject: hi\0{pai}Content-Type"),
            1,
        );
        let stranger: SocketAddr = "198.51.100.7:5060".parse().unwrap();
        for request in [cut, bare_cr, nul] {
            let inbound = handle_untrusted(&request, stranger, strip);
            assert_eq!(inbound.outcome, Outcome::Rejected, "{request:?}");
            assert!(
                replied(handle(&request, registrar())).starts_with("SIP/2.0 400 Bad Request\r\n")
            );
        }
        // Consistent line ends, either kind, still pass.
        assert!(
            forwarded(handle_untrusted(&invite(), stranger, strip))
                .contains("\r\nCSeq: 314159 INVITE\r\n")
        );
        let crlf = invite();
        let (head, body) = crlf.split_once("\r\n\r\n").unwrap();
        let lf = format!("{}\n\n{body}", head.replace("\r\n", "\n"));
        let out = forwarded(handle(&lf, registrar()));
        assert!(!out.split_once("\n\n").unwrap().0.contains('\r'), "{out:?}");
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
                .starts_with("Via: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bKrly-")
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
        assert_eq!(handle(&no_via, registrar()), nothing(Outcome::Malformed));
        assert_eq!(
            handle("SIP/2.0 200 OK\r\n\r\n", registrar()),
            nothing(Outcome::Malformed)
        );
        assert_eq!(handle("\r\n\r\n", registrar()), nothing(Outcome::Malformed));
        assert_eq!(
            handle(&bad_line, registrar()).outcome,
            Outcome::Rejected,
            "a 400 is counted as rejected"
        );
        // A local URI that would break the request line.
        let out = handle_request(
            invite().as_bytes(),
            arrival(registrar(), Sender::Trusted),
            &config(),
            |_| Some("sip:a b".into()),
        );
        assert!(replied(out).starts_with("SIP/2.0 500 "));
    }

    #[test]
    fn folded_via_and_non_utf8_headers() {
        let mut request = b"INFO sip:uuid1@gw SIP/2.0\r\nVia: SIP/2.0/UDP 203.0.113.5:5060\r\n  ;branch=z9hG4bKfold\r\n\
To: <sip:uuid1@gw>;tag=t\r\nFrom: \"M"
            .to_vec();
        request.extend_from_slice(b"\xfcller\" <sip:m@provider.example>;tag=f\r\nCall-ID: fold\r\nCSeq: 5 INFO\r\nContent-Length: 0\r\n\r\n");
        let Action::Forward(out) = handle_request(
            &request,
            arrival(registrar(), Sender::Trusted),
            &config(),
            lookup,
        )
        .action
        else {
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
        let Action::Forward(out) =
            handle_request(&request, arrival(other, Sender::Trusted), &config(), lookup).action
        else {
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

    /// A response arriving from the proxy.
    fn route(response: &str) -> ResponseRoute {
        route_response(response.as_bytes(), proxy(), &KEY, Some(proxy()))
    }

    /// Our branch in a forwarded request, and the part after the marker.
    fn relay_part(forwarded: &str) -> String {
        top_branch(forwarded)
            .strip_prefix("z9hG4bKrly-")
            .unwrap()
            .to_string()
    }

    #[test]
    fn responses_go_back_along_the_observed_path() {
        let out = forwarded(handle(&invite(), registrar()));
        for status in ["180 Ringing", "200 OK", "486 Busy Here"] {
            let response = proxy_response(&out, status);
            let ResponseRoute::Relay { bytes, path } = route(&response) else {
                panic!("not relayed: {response}");
            };
            assert_eq!(
                path,
                ReturnPath::Udp {
                    local: None,
                    source: registrar()
                }
            );
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
        // The same on a row's own socket, and over a connection.
        let local: SocketAddr = "192.0.2.10:5080".parse().unwrap();
        for path in [
            ReturnPath::Udp {
                local: Some(local),
                source: registrar(),
            },
            ReturnPath::Flow(0x1234),
        ] {
            let arrival = Arrival {
                from: registrar(),
                path,
                sender: Sender::Trusted,
            };
            let out = forwarded(handle_request(
                invite().as_bytes(),
                arrival,
                &config(),
                lookup,
            ));
            match route(&proxy_response(&out, "200 OK")) {
                ResponseRoute::Relay { path: back, .. } => assert_eq!(back, path),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn the_second_via_never_says_where_a_response_goes() {
        // The sender's Via claims another host and port: the response still goes to the
        // address the request came from, the only one the MAC vouches for.
        let request = invite().replace(
            "Via: SIP/2.0/UDP sip.provider.example:5060;rport;branch=z9hG4bK776asdhds",
            "Via: SIP/2.0/UDP 198.51.100.77:9;received=198.51.100.77;rport=9;branch=z9hG4bK776asdhds",
        );
        let out = forwarded(handle(&request, registrar()));
        // The sender's received/rport are replaced by what we saw.
        assert!(
            out.contains(
                "\r\nVia: SIP/2.0/UDP 198.51.100.77:9;rport=5060;branch=z9hG4bK776asdhds;received=203.0.113.5\r\n"
            ),
            "{out}"
        );
        let ResponseRoute::Relay { path, .. } = route(&proxy_response(&out, "200 OK")) else {
            panic!("not relayed");
        };
        assert_eq!(
            path,
            ReturnPath::Udp {
                local: None,
                source: registrar()
            }
        );
    }

    #[test]
    fn received_and_rport_are_always_what_we_saw() {
        let from: SocketAddr = "198.51.100.20:40000".parse().unwrap();
        for (via, expected) in [
            // Forged received on a matching host, no rport: removed, nothing added.
            (
                "SIP/2.0/UDP 198.51.100.20:5060;received=192.0.2.66;branch=z9hG4bKr1",
                "SIP/2.0/UDP 198.51.100.20:5060;branch=z9hG4bKr1",
            ),
            // Forged rport value and received: both replaced.
            (
                "SIP/2.0/UDP 198.51.100.20:5060;rport=7;received=192.0.2.66;branch=z9hG4bKr2",
                "SIP/2.0/UDP 198.51.100.20:5060;rport=40000;branch=z9hG4bKr2;received=198.51.100.20",
            ),
            // Two rports, received in upper case: one rport, ours.
            (
                "SIP/2.0/UDP host.example;RECEIVED=192.0.2.66;rport=1;rport;branch=z9hG4bKr3",
                "SIP/2.0/UDP host.example;rport=40000;branch=z9hG4bKr3;received=198.51.100.20",
            ),
        ] {
            let request = invite().replace(
                "SIP/2.0/UDP sip.provider.example:5060;rport;branch=z9hG4bK776asdhds",
                via,
            );
            for inbound in [
                handle(&request, from),
                handle_untrusted(&request, from, |c| c.untrusted = UntrustedPolicy::Strip),
            ] {
                let out = forwarded(inbound);
                assert!(
                    out.contains(&format!("\r\nVia: {expected}\r\n")),
                    "{via}: {out}"
                );
            }
            // Our own answers carry the same Via.
            let unknown = request.replace("sip:uuid1@", "sip:nobody@");
            let reply = replied(handle(&unknown, from));
            assert!(
                reply.contains(&format!("\r\nVia: {expected}\r\n")),
                "{reply}"
            );
        }
    }

    #[test]
    fn our_via_first_of_several_in_one_line() {
        let out = forwarded(handle(&invite(), registrar()));
        let ours = Request::parse(out.as_bytes()).unwrap().vias[0].clone();
        let response = format!(
            "SIP/2.0 200 OK\r\n\
Via: {ours};rport=5062, SIP/2.0/UDP gw.provider.example;branch=z9hG4bKx1,SIP/2.0/UDP 10.0.0.2:5070;branch=z9hG4bKx0\r\n\
From: <sip:bob@provider.example>;tag=1\r\nTo: <sip:alice@pbx.example>;tag=2\r\nCall-ID: c\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n"
        );
        let expected = response.replace(&format!("{ours};rport=5062, "), "");
        assert_eq!(
            route(&response),
            ResponseRoute::Relay {
                bytes: expected.into_bytes(),
                path: ReturnPath::Udp {
                    local: None,
                    source: registrar()
                },
            }
        );
    }

    #[test]
    fn forged_and_tampered_branches_are_refused() {
        let out = forwarded(handle(&invite(), registrar()));
        let good = relay_part(&out);
        let response = proxy_response(&out, "200 OK");
        assert!(matches!(route(&response), ResponseRoute::Relay { .. }));
        let with_part = |part: &str| response.replacen(&good, part, 1);
        let bad_mac = ResponseRoute::Refused(ResponseOutcome::BadMac);

        // Every single character of the branch matters.
        for at in 0..good.len() {
            let mut part = good.clone().into_bytes();
            part[at] = if part[at] == b'0' { b'1' } else { b'0' };
            let part = String::from_utf8(part).unwrap();
            assert_eq!(route(&with_part(&part)), bad_mac, "{part}");
        }
        // Another path with the original MAC: a stranger cannot redirect the response.
        let (tx, rest) = good.split_once('.').unwrap();
        let (_, mac) = rest.split_once('.').unwrap();
        for path in [
            ReturnPath::Udp {
                local: None,
                source: "198.51.100.66:5060".parse().unwrap(),
            },
            ReturnPath::Flow(1),
        ] {
            let part = format!("{tx}.{}.{mac}", path.encode());
            assert_eq!(route(&with_part(&part)), bad_mac, "{part}");
        }
        // The old formats, an empty or truncated MAC, extra parts, upper-case hex.
        for part in [
            "u.0011223344556677",
            "u7.abcd",
            "f1.abcd",
            "f1",
            "",
            &format!("{tx}.{}.", rest.split_once('.').unwrap().0),
            &format!("{good}.x"),
            &good.to_ascii_uppercase(),
            &good[..good.len() - 1],
        ] {
            assert_eq!(route(&with_part(part)), bad_mac, "{part:?}");
        }
        // The marker in another letter case is still ours: refused, not taken for a REGISTER
        // answer.
        let shouting = response.replacen("z9hG4bKrly-", "Z9HG4BKRLY-", 1);
        assert!(matches!(route(&shouting), ResponseRoute::Relay { .. }));
        let forged = shouting.replacen(&good, "u7.abcd", 1);
        assert_eq!(route(&forged), bad_mac);

        // Another process's key.
        let other = RelayKey::from_secret(&[9; 32]);
        assert_eq!(
            route_response(response.as_bytes(), proxy(), &other, Some(proxy())),
            bad_mac
        );
    }

    #[test]
    fn only_the_proxy_gets_responses_relayed() {
        let out = forwarded(handle(&invite(), registrar()));
        let response = proxy_response(&out, "200 OK");
        let stranger: SocketAddr = "198.51.100.66:5060".parse().unwrap();
        let other_port: SocketAddr = "192.0.2.50:5061".parse().unwrap();
        for from in [stranger, other_port, registrar()] {
            assert_eq!(
                route_response(response.as_bytes(), from, &KEY, Some(proxy())),
                ResponseRoute::Refused(ResponseOutcome::WrongSource),
                "{from}"
            );
        }
        // The proxy's IPv4 address seen through a dual-stack socket is the proxy.
        let mapped: SocketAddr = "[::ffff:192.0.2.50]:5060".parse().unwrap();
        assert!(matches!(
            route_response(response.as_bytes(), mapped, &KEY, Some(proxy())),
            ResponseRoute::Relay { .. }
        ));
        // Without a proxy nothing carrying our marker is relayed, from anyone.
        assert_eq!(
            route_response(response.as_bytes(), proxy(), &KEY, None),
            ResponseRoute::Refused(ResponseOutcome::NoProxy)
        );
    }

    #[test]
    fn responses_that_are_not_ours_or_unusable() {
        let register_200 = "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5080;rport=5080;branch=z9hG4bK00000000000000ab.3\r\n\
From: <sip:u@r>;tag=1\r\nTo: <sip:u@r>;tag=2\r\nCall-ID: c\r\nCSeq: 1 REGISTER\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(route(register_200), ResponseRoute::NotRelayed);
        assert_eq!(
            route("INVITE sip:a@b SIP/2.0\r\n\r\n"),
            ResponseRoute::NotRelayed
        );
        assert_eq!(route("SIP/2.0 200 OK\r\n\r\n"), ResponseRoute::NotRelayed);
        // A genuine branch but nothing left after our Via: not a response to a relayed request.
        let out = forwarded(handle(&invite(), registrar()));
        let ours = Request::parse(out.as_bytes()).unwrap().vias[0].clone();
        let alone = register_200.replace(
            "SIP/2.0/UDP 127.0.0.1:5080;rport=5080;branch=z9hG4bK00000000000000ab.3",
            &ours,
        );
        assert_eq!(
            route(&alone),
            ResponseRoute::Refused(ResponseOutcome::Malformed)
        );
    }

    #[test]
    fn return_paths_round_trip() {
        for path in [
            ReturnPath::Flow(0),
            ReturnPath::Flow(u64::MAX),
            ReturnPath::Udp {
                local: None,
                source: "203.0.113.5:5060".parse().unwrap(),
            },
            ReturnPath::Udp {
                local: Some("[2001:db8::5]:5062".parse().unwrap()),
                source: "[2001:db8:ffff::1]:65535".parse().unwrap(),
            },
            ReturnPath::Udp {
                local: Some("10.0.0.5:5060".parse().unwrap()),
                source: "[::ffff:10.0.0.9]:1".parse().unwrap(),
            },
        ] {
            let text = path.encode();
            assert!(text.len() <= MAX_PATH, "{text}");
            assert!(text.bytes().all(|b| b.is_ascii_alphanumeric()), "{text}");
            assert_eq!(ReturnPath::decode(&text), Some(path));
        }
        for bad in [
            "",
            "u",
            "um",
            "um4",
            "f",
            "f+1",
            "fG",
            "x4",
            "um4cb007105013c4ff",
            "uq4cb00710513c4",
        ] {
            assert_eq!(ReturnPath::decode(bad), None, "{bad}");
        }
    }

    #[test]
    fn untrusted_senders_get_nothing_relayed_and_the_same_answer_as_for_an_unknown_user() {
        let stranger: SocketAddr = "198.51.100.66:5060".parse().unwrap();
        let known = invite();
        let unknown = invite().replace("sip:uuid1@", "sip:nobody@");
        let refused = handle_untrusted(&known, stranger, |_| {});
        let missing = handle_untrusted(&unknown, stranger, |_| {});
        assert_eq!(refused.outcome, Outcome::RefusedUntrusted);
        assert_eq!(missing.outcome, Outcome::UnknownUser);
        let (refused, missing) = (replied(refused), replied(missing));
        assert!(
            refused.starts_with("SIP/2.0 404 Not Found\r\n"),
            "{refused}"
        );
        // Byte for byte the same (the Request-URI is not in a response).
        assert_eq!(refused, missing);
        assert!(!refused.contains("Server:"), "{refused}");
        // Silent: nothing for either.
        let silent = |c: &mut RelayConfig<'static>| c.unknown_user = UnknownUserReply::Silent;
        assert_eq!(
            handle_untrusted(&known, stranger, silent),
            nothing(Outcome::RefusedUntrusted)
        );
        assert_eq!(
            handle_untrusted(&unknown, stranger, silent),
            nothing(Outcome::UnknownUser)
        );
        // "strip" without a proxy relays nothing either, and says so in the same way.
        let no_proxy = handle_untrusted(&known, stranger, |c| {
            c.untrusted = UntrustedPolicy::Strip;
            c.relaying = false;
        });
        assert_eq!(no_proxy.outcome, Outcome::RefusedUntrusted);
        assert_eq!(replied(no_proxy), missing);
        // A trusted sender without a proxy: nothing to relay to, nothing answered (as before).
        let trusted_no_proxy = handle_request(
            known.as_bytes(),
            arrival(registrar(), Sender::Trusted),
            &RelayConfig {
                relaying: false,
                ..config()
            },
            lookup,
        );
        assert_eq!(trusted_no_proxy, nothing(Outcome::NoProxy));
        // ACKs are never answered, from anyone.
        for request in [
            ack("x", "z9hG4bKu1"),
            ack("x", "z9hG4bKu1").replace("sip:uuid1@", "sip:nobody@"),
        ] {
            assert_eq!(
                handle_untrusted(&request, stranger, |_| {}),
                nothing(Outcome::AckAbsorbed)
            );
        }
    }

    #[test]
    fn untrusted_identity_headers_are_stripped() {
        let stranger: SocketAddr = "198.51.100.66:5060".parse().unwrap();
        let identities = "P-Asserted-Identity: <sip:+4930999@provider.example>\r\n\
p-preferred-identity: <sip:boss@provider.example>\r\n\
Remote-Party-ID: <sip:+4930999@provider.example>;screen=yes;party=calling\r\n\
P-Charging-Vector: icid-value=forged\r\n\
P-Asserted-Service: urn:urn-7:3gpp-service.ims.icsi.mmtel\r\n\
Route: <sip:pbx.example;lr>\r\n\
Identity: signed.by.someone;info=<https://cert.example/x.pem>\r\n";
        let request = invite().replace(
            "Max-Forwards: 70\r\n",
            &format!("Max-Forwards: 70\r\n{identities}"),
        );
        let out = handle_untrusted(&request, stranger, |c| c.untrusted = UntrustedPolicy::Strip);
        assert_eq!(out.outcome, Outcome::RelayedStripped);
        let out = forwarded(out);
        for gone in [
            "P-Asserted-Identity",
            "p-preferred-identity",
            "Remote-Party-ID",
            "P-Charging-Vector",
            "P-Asserted-Service",
        ] {
            assert!(!out.contains(gone), "{gone} left in {out}");
        }
        // Route (the proxy's business) and the signed Identity stay; all else as before.
        assert!(out.contains("\r\nRoute: <sip:pbx.example;lr>\r\n"));
        assert!(out.contains("\r\nIdentity: signed.by.someone"));
        assert_eq!(out, forwarded(handle_untrusted(&invite().replace("Max-Forwards: 70\r\n", "Max-Forwards: 70\r\nRoute: <sip:pbx.example;lr>\r\nIdentity: signed.by.someone;info=<https://cert.example/x.pem>\r\n"), stranger, |c| c.untrusted = UntrustedPolicy::Strip)));
        // Our Via carries the stranger's address as the way back.
        let ResponseRoute::Relay { path, .. } = route(&proxy_response(&out, "100 Trying")) else {
            panic!("not relayed");
        };
        assert_eq!(
            path,
            ReturnPath::Udp {
                local: None,
                source: stranger
            }
        );
        // Trusted senders' identity headers are kept.
        let trusted = forwarded(handle(&request, registrar()));
        assert!(trusted.contains("\r\nP-Asserted-Identity: <sip:+4930999@provider.example>\r\n"));
        assert!(trusted.contains("\r\nP-Charging-Vector: icid-value=forged\r\n"));
    }

    #[test]
    fn answers_to_strangers_are_minimal_and_never_larger_than_the_request() {
        let stranger: SocketAddr = "198.51.100.66:5060".parse().unwrap();
        let options = "OPTIONS sip:100@198.51.100.1 SIP/2.0\r\n\
Via: SIP/2.0/UDP 198.51.100.66:5060;branch=z9hG4bK-scan-1;rport\r\n\
Max-Forwards: 70\r\nTo: \"scan\" <sip:100@198.51.100.1>\r\nFrom: \"scan\" <sip:100@198.51.100.1>;tag=6331\r\n\
User-Agent: friendly-scanner\r\nCall-ID: 1234567890\r\nContact: <sip:100@198.51.100.66:5060>\r\n\
CSeq: 1 OPTIONS\r\nAccept: application/sdp\r\nContent-Length: 0\r\n\r\n";
        let out = handle_untrusted(options, stranger, |_| {});
        assert_eq!(out.outcome, Outcome::OptionsAnswered);
        let reply = replied(out);
        assert!(reply.starts_with("SIP/2.0 200 OK\r\n"), "{reply}");
        for absent in ["Server:", "Allow:", "Accept:", "User-Agent:", "uacreg"] {
            assert!(!reply.contains(absent), "{absent} in {reply}");
        }
        assert!(
            reply.len() <= options.len(),
            "{} > {}",
            reply.len(),
            options.len()
        );
        assert!(Response::parse(reply.as_bytes()).is_ok());
        // The trusted answer is the full one.
        let full = replied(handle(options, registrar()));
        assert!(full.contains("\r\nServer: uacreg\r\n") && full.contains("\r\nAllow: "));

        // A request squeezed below its answer gets nothing.
        let tiny = "OPTIONS sip:x SIP/2.0\r\nv:SIP/2.0/UDP h;rport\r\nf:<sip:a>\r\nt:<sip:b>\r\ni:c\r\nCSeq:1 OPTIONS\r\n\r\n";
        assert_eq!(
            handle_untrusted(tiny, stranger, |_| {}),
            nothing(Outcome::ReplyLargerThanRequest)
        );
        // Trusted senders are not held to it.
        assert!(replied(handle(tiny, registrar())).starts_with("SIP/2.0 200 OK"));
        // Same rule for errors: a 400 for a small broken request.
        let broken = "INVITE sip:x@y SIP/2.0\r\nv:SIP/2.0/UDP h;rport\r\nf:<sip:a>;tag=1\r\nt:<sip:b>\r\ni:c\r\nCSeq:1 BYE\r\n\r\n";
        assert_eq!(
            handle_untrusted(broken, stranger, |_| {}),
            nothing(Outcome::ReplyLargerThanRequest)
        );
        // Any answer to an untrusted sender, whatever the request: never larger.
        for request in [
            invite(),
            cancel(),
            invite().replace("sip:uuid1@", "sip:x@"),
            invite().replace("Max-Forwards: 70", "Max-Forwards: 0"),
        ] {
            if let Action::Reply(reply) = handle_untrusted(&request, stranger, |_| {}).action {
                assert!(reply.len() <= request.len());
            }
        }
    }

    mod prop {
        use super::*;
        use proptest::prelude::*;

        fn stranger() -> SocketAddr {
            "198.51.100.66:5060".parse().unwrap()
        }

        proptest! {
            #[test]
            fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
                let _ = handle_request(&data, arrival(registrar(), Sender::Trusted), &config(), lookup);
                let out = handle_request(&data, arrival(stranger(), Sender::Untrusted), &config(), lookup);
                if let Action::Reply(reply) = out.action {
                    prop_assert!(reply.len() <= data.len());
                }
                let _ = route_response(&data, proxy(), &KEY, Some(proxy()));
            }

            #[test]
            fn mutated_messages_never_panic(cut in 0usize..900, byte in any::<u8>(), at in 0usize..900) {
                let mut request = invite().into_bytes();
                if at < request.len() { request[at] = byte; }
                request.truncate(cut.min(request.len()));
                let _ = handle_request(&request, arrival(registrar(), Sender::Trusted), &config(), lookup);
                let out = handle_request(&request, arrival(stranger(), Sender::Untrusted), &config(), lookup);
                if let Action::Reply(reply) = out.action {
                    prop_assert!(reply.len() <= request.len());
                }
                let response = proxy_response(&forwarded(handle(&invite(), registrar())), "200 OK");
                let mut response = response.into_bytes();
                if at < response.len() { response[at] = byte; }
                response.truncate(cut.min(response.len()));
                let _ = route_response(&response, proxy(), &KEY, Some(proxy()));
            }

            #[test]
            fn arbitrary_via_and_uri_text_never_panics(value in "\\PC{0,120}") {
                let request = invite().replace("sip.provider.example:5060;rport", &value).replace("uuid1@192.0.2.10:5080", &value);
                let _ = handle_request(request.as_bytes(), arrival(registrar(), Sender::Trusted), &config(), lookup);
                let response = format!("SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bKrly-{value}, {value}\r\nVia: {value}\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n\r\n");
                let relayed = matches!(
                    route_response(response.as_bytes(), proxy(), &KEY, Some(proxy())),
                    ResponseRoute::Relay { .. }
                );
                prop_assert!(!relayed);
            }

            #[test]
            fn a_guessed_branch_never_verifies(part in "[0-9a-fu4m.]{0,90}") {
                let response = format!("SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bKrly-{part}\r\nVia: SIP/2.0/UDP 203.0.113.5;branch=z9hG4bKx\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n\r\n");
                prop_assert_eq!(
                    route_response(response.as_bytes(), proxy(), &KEY, Some(proxy())),
                    ResponseRoute::Refused(ResponseOutcome::BadMac)
                );
            }
        }
    }
}

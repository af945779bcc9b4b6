//! The inbound side, without sockets: deciding what to do with a request that arrives for one
//! of our registrations, and routing the responses back. [`Relay`] is the whole of it as one
//! value the driver feeds with received messages and whose [`Transmit`]s it sends.
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
//! [`trust`] says whether a request's sender is trusted. Trusted senders get requests relayed
//! as they came and our full answers. For untrusted senders [`UntrustedPolicy`] decides:
//! nothing relayed, or relayed without the identity headers of [`IDENTITY_HEADERS`]. Our
//! answers to them are minimal (no Allow, Accept or Server), never larger than the request that
//! caused them (else nothing is sent), the same for a user we refuse to relay for as for one we
//! do not know, and rate-limited all together (`reply_budget`, on the time the caller passes
//! in), so the port is neither an amplifier nor an oracle for l_uuids. From everyone, the
//! `received`/`rport` of the sender's Via are what we saw, never what it wrote.
//!
//! The decisions never panic on malformed input (a property test feeds them arbitrary
//! bytes). What cannot be answered (no usable Via, no Call-ID …) is dropped; what can be answered
//! but not relayed gets a 400. Headers and body of a relayed message are copied byte for byte
//! except for the Request-URI, our Via, the received/rport parameters of the sender's Via,
//! Max-Forwards and (for an untrusted sender) the identity headers.
//!
//! # Where things are
//!
//! * `stateless_proxy` — [`Relay`]: what the driver calls; trust, budget and counters.
//! * `request` / `response` — the decisions for one request and one response, pure functions.
//! * `branch` — [`RelayKey`], our MAC'd Via branch and reply To tags; `flow_token` — the way
//!   back ([`ReturnPath`]) written into the branch, and [`Origin`], where a message came from.
//! * `via` — reading Via values; `policy` — `[inbound]` settings; `outcome` — the counters.
//! * [`trust`] — whom we trust; `reply_budget` — how many answers strangers get.
//!
//! Messages are read with the one head scanner of [`crate::sip::head`].

mod branch;
mod flow_token;
mod outcome;
mod policy;
mod reply_budget;
mod request;
mod response;
mod stateless_proxy;
pub mod trust;
mod via;

#[cfg(test)]
mod tests;

pub use branch::{BRANCH_COOKIE, KeyError, RELAY_MARKER, RelayKey};
pub use flow_token::{Origin, ReturnPath};
pub use outcome::{InboundStats, Outcome, RequestCounts, ResponseCounts, ResponseOutcome};
pub use policy::{
    IDENTITY_HEADERS, InboundConfig, InboundPolicy, PolicyError, Sender, UnknownUserReply,
    UntrustedPolicy,
};
pub use request::{Action, Addressee, Arrival, Inbound, RelayConfig, handle_request};
pub use response::{ResponseRoute, route_response};
pub use stateless_proxy::{Handled, Relay, Transmit};
pub use trust::{IpPrefix, PrefixError, Trust};

//! Whom the relay relays for and what strangers get: the choices of `[inbound]`.

use std::net::SocketAddr;
use std::str::FromStr;

use super::trust::IpPrefix;

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
    /// A minimal 404 (rate-limited).
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

/// Settings for the inbound side.
#[derive(Clone, Debug, Default)]
pub struct InboundConfig {
    /// Where requests for registered contacts are relayed (UDP); `None`: they are not relayed
    /// (OPTIONS is still answered, unknown users still get 404).
    pub proxy: Option<SocketAddr>,
    /// `Server` header of our replies to trusted senders.
    pub user_agent: String,
    pub policy: InboundPolicy,
}

/// `[inbound]`: whom the relay trusts and what everyone else gets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InboundPolicy {
    /// Networks trusted besides the registrars our rows are bound to.
    pub trusted: Vec<IpPrefix>,
    /// Requests from untrusted senders for registered contacts: not relayed, or relayed without
    /// identity headers.
    pub untrusted: UntrustedPolicy,
    /// What an untrusted sender gets for a user we do not relay for: 404 or nothing.
    pub unknown_user: UnknownUserReply,
    /// Answers per second to untrusted senders, all together (the burst is as large).
    pub reply_rate: u32,
}

impl Default for InboundPolicy {
    fn default() -> Self {
        InboundPolicy {
            trusted: Vec::new(),
            untrusted: UntrustedPolicy::Drop,
            unknown_user: UnknownUserReply::NotFound,
            reply_rate: 20,
        }
    }
}

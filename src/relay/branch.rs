//! Our Via branch and the To tag of our own replies, both keyed with the process's
//! [`RelayKey`]: what lets a stateless relay recognise, later, what it sent.
//!
//! The branch is `z9hG4bKrly-<tx>.<path>.<mac>`: `tx` a keyed hash of the incoming transaction
//! key (the same for a retransmission, its CANCEL and the ACK of a non-2xx answer), `path` the
//! flow token of [`super::flow_token`], and `mac` an HMAC-SHA256 over both. A response is
//! relayed only when its branch verifies, and only along the path inside it.

use std::fmt;

use ring::hmac;
use subtle::ConstantTimeEq as _;

use super::flow_token::{MAX_PATH, ReturnPath, is_lower_hex};

/// RFC 3261 magic cookie that starts every branch of a compliant element.
pub const BRANCH_COOKIE: &str = "z9hG4bK";
/// After the cookie, marks a branch as one of our relay branches. Not a hexadecimal digit, so it
/// cannot start one of our REGISTER branches, and recognised in any letter case when a response
/// comes back, so that nothing carrying it is mistaken for a REGISTER answer.
pub const RELAY_MARKER: &str = "rly-";

/// Hex digits of the per-transaction value in our branch (64 bits: unique, not a secret).
const TX_HEX: usize = 16;
/// Hex digits of the MAC in our branch (128 bits) and in our To tags (96 bits).
const BRANCH_MAC_HEX: usize = 32;
pub(super) const TAG_MAC_HEX: usize = 24;

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

/// Whether `raw` holds `z9hG4bKrly-` (in any letter case) anywhere. A message without it
/// cannot carry a relay branch in its top Via, so it need not be parsed to be told apart from a
/// relayed one: every answer to our own REGISTERs is such a message, and parsing each of them
/// twice (here and in the engine) was a tenth of the CPU spent registering.
pub(super) fn may_carry_relay_marker(raw: &[u8]) -> bool {
    let mut rest = raw;
    while let Some(at) = memchr::memchr2(b'z', b'Z', rest) {
        if starts_with_relay_marker(&rest[at..]) {
            return true;
        }
        rest = &rest[at + 1..];
    }
    false
}

/// The part of a branch after `z9hG4bKrly-` (in any letter case), if it starts so.
pub(super) fn strip_relay_marker(branch: &str) -> Option<&str> {
    // The marker is ASCII, so where it ends is a character boundary.
    starts_with_relay_marker(branch.as_bytes())
        .then(|| &branch[BRANCH_COOKIE.len() + RELAY_MARKER.len()..])
}

/// Whether `bytes` begin with `z9hG4bKrly-`, in any letter case.
fn starts_with_relay_marker(bytes: &[u8]) -> bool {
    let (cookie, marker) = (BRANCH_COOKIE.as_bytes(), RELAY_MARKER.as_bytes());
    bytes.len() >= cookie.len() + marker.len()
        && bytes[..cookie.len()].eq_ignore_ascii_case(cookie)
        && bytes[cookie.len()..cookie.len() + marker.len()].eq_ignore_ascii_case(marker)
}

/// The return path of a relay branch (after the marker) whose MAC verifies with `key`.
pub(super) fn verify_branch(key: &RelayKey, relay_part: &str) -> Option<ReturnPath> {
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
pub(super) fn relay_branch(key: &RelayKey, transaction_key: &[u8], path: ReturnPath) -> String {
    let tx = key.mac_hex("tx", &[transaction_key], TX_HEX);
    let path = path.encode();
    let mac = key.mac_hex("branch", &[tx.as_bytes(), path.as_bytes()], BRANCH_MAC_HEX);
    format!("{BRANCH_COOKIE}{RELAY_MARKER}{tx}.{path}.{mac}")
}

/// The To tag of our own replies to a transaction.
pub(super) fn reply_tag(key: &RelayKey, transaction_key: &[u8]) -> String {
    format!("rly{}", key.mac_hex("tag", &[transaction_key], TAG_MAC_HEX))
}

/// Whether `tag` is the To tag of our reply to the transaction, compared in constant time.
pub(super) fn is_reply_tag(key: &RelayKey, transaction_key: &[u8], tag: &str) -> bool {
    tag.strip_prefix("rly")
        .is_some_and(|mac| key.verify_hex("tag", &[transaction_key], mac, TAG_MAC_HEX))
}

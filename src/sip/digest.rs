//! HTTP digest authentication as SIP uses it (RFC 2617, RFC 7616, RFC 8760): parsing challenges,
//! computing answers (client side) and checking them (the test registrar's side).

use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum DigestError {
    #[error("not a Digest challenge")]
    NotDigest,
    #[error("malformed digest header: {0}")]
    Malformed(String),
    #[error("unsupported digest algorithm {0}")]
    UnsupportedAlgorithm(String),
    #[error("unsupported qop {0}")]
    UnsupportedQop(String),
    #[error("an HA1 from the auth_ha1 column is an MD5 hash and cannot answer a {0} challenge")]
    Ha1NeedsMd5(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Algorithm {
    Md5,
    Md5Sess,
    Sha256,
    Sha256Sess,
    Sha512_256,
    Sha512_256Sess,
}

impl Algorithm {
    /// Case-insensitive parse of the `algorithm=` token.
    pub fn parse(token: &str) -> Option<Algorithm> {
        let _ = token;
        todo!()
    }
    /// The canonical token (`MD5`, `MD5-sess`, `SHA-256`, `SHA-256-sess`, `SHA-512-256`, `SHA-512-256-sess`).
    pub fn as_str(self) -> &'static str {
        todo!()
    }
    /// Lowercase hex of the algorithm's hash of `data`.
    pub fn hex_hash(self, data: &[u8]) -> String {
        let _ = data;
        todo!()
    }
    pub fn is_sess(self) -> bool {
        todo!()
    }
    /// Higher is stronger; used to pick among several challenges.
    pub fn strength(self) -> u8 {
        todo!()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Qop {
    Auth,
    AuthInt,
}

/// One `WWW-Authenticate` / `Proxy-Authenticate` value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Challenge {
    pub realm: String,
    pub nonce: String,
    pub opaque: Option<String>,
    pub algorithm: Algorithm,
    /// Whether the challenge named `algorithm=` (echoed back in the answer only if it did).
    pub algorithm_given: bool,
    /// qop options offered, in order; empty = RFC 2069 style (no qop).
    pub qop: Vec<Qop>,
    pub stale: bool,
    /// Came from a 407 / Proxy-Authenticate (answer goes in Proxy-Authorization).
    pub proxy: bool,
}

impl Challenge {
    /// Parses a header value such as `Digest realm="x", nonce="y", qop="auth,auth-int"`.
    /// Unknown qop tokens are skipped; an unknown algorithm is an error.
    pub fn parse(value: &str, proxy: bool) -> Result<Challenge, DigestError> {
        let _ = (value, proxy);
        todo!()
    }
}

/// The secret an answer is computed from.
#[derive(Clone, Copy, Debug)]
pub enum SecretInput<'a> {
    Password(&'a str),
    /// Precomputed MD5(username:realm:password), 32 hex digits.
    Ha1(&'a str),
}

/// A parsed or computed `Authorization` / `Proxy-Authorization` value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Authorization {
    pub username: String,
    pub realm: String,
    pub nonce: String,
    pub uri: String,
    pub response: String,
    pub algorithm: Option<Algorithm>,
    pub opaque: Option<String>,
    pub qop: Option<Qop>,
    /// Nonce count, printed as 8 lowercase hex digits.
    pub nc: Option<u32>,
    pub cnonce: Option<String>,
}

impl Authorization {
    /// Computes the answer to `challenge` for `method` and `uri` (qop=auth preferred over
    /// auth-int when both are offered; auth-int hashes `body`).
    pub fn answer(
        challenge: &Challenge,
        username: &str,
        secret: SecretInput<'_>,
        method: &str,
        uri: &str,
        body: &[u8],
        nc: u32,
        cnonce: &str,
    ) -> Result<Authorization, DigestError> {
        let _ = (challenge, username, secret, method, uri, body, nc, cnonce);
        todo!()
    }

    /// Parses a header value `Digest username="…", …`.
    pub fn parse(value: &str) -> Result<Authorization, DigestError> {
        let _ = value;
        todo!()
    }

    /// Recomputes the expected response from the secret and compares it (server side).
    pub fn verify(&self, secret: SecretInput<'_>, method: &str, body: &[u8]) -> bool {
        let _ = (secret, method, body);
        todo!()
    }

    /// The header value, `Digest username="…", realm="…", nonce="…", uri="…", response="…",
    /// [algorithm=…,] [cnonce="…", qop=auth, nc=00000001,] [opaque="…"]`.
    pub fn to_header_value(&self) -> String {
        todo!()
    }
}

//! HTTP digest authentication as SIP uses it (RFC 2617, RFC 7616, RFC 8760): parsing challenges,
//! computing answers (client side) and checking them (the test registrar's side).

use std::borrow::Cow;

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
    /// A control character (CR, LF, NUL, ESC …) in a challenge: its values would be copied into
    /// our next request and into logs, so such a challenge is never answered.
    #[error("control character in a digest header")]
    ControlCharacter,
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
        let token = token.trim().trim_matches('"');
        [
            Algorithm::Md5,
            Algorithm::Md5Sess,
            Algorithm::Sha256,
            Algorithm::Sha256Sess,
            Algorithm::Sha512_256,
            Algorithm::Sha512_256Sess,
        ]
        .into_iter()
        .find(|a| a.as_str().eq_ignore_ascii_case(token))
    }

    /// The canonical token.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Md5Sess => "MD5-sess",
            Algorithm::Sha256 => "SHA-256",
            Algorithm::Sha256Sess => "SHA-256-sess",
            Algorithm::Sha512_256 => "SHA-512-256",
            Algorithm::Sha512_256Sess => "SHA-512-256-sess",
        }
    }

    /// Lowercase hex of the algorithm's hash of `data`.
    pub fn hex_hash(self, data: &[u8]) -> String {
        self.hex_hash_of(&[data]).as_str().to_string()
    }

    /// Lowercase hex of the algorithm's hash of `parts` one after the other. Digest inputs are
    /// colon-joined fields: feeding them to the hash piece by piece assembles no text (and
    /// leaves no copy of a password in a freed buffer).
    fn hex_hash_of(self, parts: &[&[u8]]) -> HexHash {
        use md5::Digest as _;
        fn feed<D: md5::Digest>(mut hasher: D, parts: &[&[u8]]) -> HexHash {
            for part in parts {
                hasher.update(part);
            }
            HexHash::of(&hasher.finalize())
        }
        match self {
            Algorithm::Md5 | Algorithm::Md5Sess => feed(md5::Md5::new(), parts),
            Algorithm::Sha256 | Algorithm::Sha256Sess => feed(sha2::Sha256::new(), parts),
            Algorithm::Sha512_256 | Algorithm::Sha512_256Sess => {
                feed(sha2::Sha512_256::new(), parts)
            }
        }
    }

    pub fn is_sess(self) -> bool {
        matches!(
            self,
            Algorithm::Md5Sess | Algorithm::Sha256Sess | Algorithm::Sha512_256Sess
        )
    }

    /// Higher is stronger; used to pick among several challenges (MD5 family is 1).
    pub fn strength(self) -> u8 {
        match self {
            Algorithm::Md5 | Algorithm::Md5Sess => 1,
            Algorithm::Sha256 | Algorithm::Sha256Sess => 2,
            Algorithm::Sha512_256 | Algorithm::Sha512_256Sess => 3,
        }
    }

    fn is_md5(self) -> bool {
        self.strength() == 1
    }
}

/// The lowercase hex of a hash of up to 256 bits, on the stack.
#[derive(Clone, Copy)]
struct HexHash {
    digits: [u8; 64],
    len: usize,
}

impl HexHash {
    fn of(hash: &[u8]) -> HexHash {
        use super::hex::DIGITS;
        let mut digits = [0u8; 64];
        let len = (hash.len() * 2).min(digits.len());
        for (pair, b) in digits[..len].chunks_exact_mut(2).zip(hash) {
            pair[0] = DIGITS[usize::from(b >> 4)];
            pair[1] = DIGITS[usize::from(b & 15)];
        }
        HexHash { digits, len }
    }

    fn as_bytes(&self) -> &[u8] {
        &self.digits[..self.len]
    }

    fn as_str(&self) -> &str {
        // Hex digits only.
        std::str::from_utf8(self.as_bytes()).unwrap_or_default()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Qop {
    Auth,
    AuthInt,
}

impl Qop {
    fn parse(token: &str) -> Option<Qop> {
        let token = token.trim();
        [Qop::Auth, Qop::AuthInt]
            .into_iter()
            .find(|q| q.as_str().eq_ignore_ascii_case(token))
    }

    fn as_str(self) -> &'static str {
        match self {
            Qop::Auth => "auth",
            Qop::AuthInt => "auth-int",
        }
    }
}

/// The qop options a challenge offered. There are two we can answer, and the answer prefers
/// `auth` whatever the order, so a set is all a kept challenge needs (no vector on the heap for
/// each of 100,000 rows).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QopOffer {
    pub auth: bool,
    pub auth_int: bool,
}

impl QopOffer {
    pub fn contains(self, qop: Qop) -> bool {
        match qop {
            Qop::Auth => self.auth,
            Qop::AuthInt => self.auth_int,
        }
    }

    /// No qop offered: RFC 2069 style.
    pub fn is_empty(self) -> bool {
        !self.auth && !self.auth_int
    }

    fn with(mut self, qop: Qop) -> QopOffer {
        match qop {
            Qop::Auth => self.auth = true,
            Qop::AuthInt => self.auth_int = true,
        }
        self
    }
}

/// Splits `Digest a="x, y", b=c` into its scheme and parameters, borrowing from `value`: a
/// quoted value is copied only when it holds a backslash escape. Names keep their case (looked
/// up case-insensitively). A control character anywhere (HTAB aside, which is white space)
/// refuses the whole header: realm, nonce and opaque are echoed into the next REGISTER, where a
/// bare CR or LF would split a header line.
fn parse_params(value: &str) -> Result<(&str, Params<'_>), DigestError> {
    if has_control(value) {
        return Err(DigestError::ControlCharacter);
    }
    let value = value.trim();
    let (scheme, rest) = match value.find(|c: char| c.is_ascii_whitespace()) {
        Some(i) => (&value[..i], &value[i..]),
        None => (value, ""),
    };
    // A challenge has four to six parameters; an answer up to ten.
    let mut params = Vec::with_capacity(10);
    let malformed = |why: &str| DigestError::Malformed(why.to_string());
    // Bytes: every delimiter is ASCII and no byte of a multi-byte character is, so each cut
    // falls between characters.
    let bytes = rest.as_bytes();
    let end = bytes.len();
    let skip = |mut i: usize, keep: fn(u8) -> bool| {
        while i < end && keep(bytes[i]) {
            i += 1;
        }
        i
    };
    let mut i = 0;
    loop {
        i = skip(i, |b| b.is_ascii_whitespace() || b == b',');
        if i == end {
            break;
        }
        let name_start = i;
        i = skip(i, |b| b != b'=' && b != b',' && !b.is_ascii_whitespace());
        let name = &rest[name_start..i];
        i = skip(i, |b| b.is_ascii_whitespace());
        if bytes.get(i) != Some(&b'=') {
            let name = name.to_ascii_lowercase();
            return Err(malformed(&format!("parameter {name:?} without a value")));
        }
        i = skip(i + 1, |b| b.is_ascii_whitespace());
        let val = if bytes.get(i) == Some(&b'"') {
            let start = i + 1;
            let mut copy: Option<Vec<u8>> = None;
            let mut at = start;
            loop {
                let Some(found) = memchr::memchr2(b'"', b'\\', &bytes[at..]) else {
                    return Err(malformed("unterminated quoted string"));
                };
                let found = at + found;
                if bytes[found] == b'"' {
                    if let Some(copy) = copy.as_mut() {
                        copy.extend_from_slice(&bytes[at..found]);
                    }
                    i = found + 1;
                    break;
                }
                // A backslash: the value becomes a copy without it, the next byte kept as is
                // (the rest of a multi-byte character follows as ordinary bytes).
                let copy = copy.get_or_insert_with(|| Vec::with_capacity(found - start + 16));
                copy.extend_from_slice(&bytes[at..found]);
                match bytes.get(found + 1) {
                    Some(&escaped) => {
                        copy.push(escaped);
                        at = found + 2;
                    }
                    None => return Err(malformed("unterminated quoted string")),
                }
            }
            match copy {
                // Only ASCII backslashes were taken out: still UTF-8.
                Some(copy) => Cow::Owned(String::from_utf8_lossy(&copy).into_owned()),
                None => Cow::Borrowed(&rest[start..i - 1]),
            }
        } else {
            let start = i;
            i = skip(i, |b| b != b',' && !b.is_ascii_whitespace());
            Cow::Borrowed(&rest[start..i])
        };
        if name.is_empty() {
            return Err(malformed("empty parameter name"));
        }
        params.push((name, val));
    }
    Ok((scheme, params))
}

/// A control character (Unicode's Cc: C0, DEL, C1), HTAB aside.
fn has_control(value: &str) -> bool {
    let bytes = value.as_bytes();
    // C1 controls are U+0080..U+009F, in UTF-8 0xC2 0x80..0x9F.
    bytes.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f)
        || (memchr::memchr(0xc2, bytes).is_some()
            && value.chars().any(|c| ('\u{80}'..='\u{9f}').contains(&c)))
}

/// A digest header's parameters as [`parse_params`] found them: names as written.
type Params<'a> = Vec<(&'a str, Cow<'a, str>)>;

/// The value of the parameter named `name` (any case).
fn param<'a>(params: &'a Params<'_>, name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_ref())
}

/// One `WWW-Authenticate` / `Proxy-Authenticate` value.
///
/// A registration keeps its last challenge to answer refreshes up front, so there is one per
/// row: realm, nonce and opaque share one heap block (read through accessors) and the qop
/// offer is two flags.
#[derive(Clone, PartialEq, Eq)]
pub struct Challenge {
    /// `realm`, `nonce` and `opaque` one after the other.
    text: Box<str>,
    realm_end: u32,
    nonce_end: u32,
    has_opaque: bool,
    pub algorithm: Algorithm,
    /// Whether the challenge named `algorithm=` (echoed back in the answer only if it did).
    pub algorithm_given: bool,
    /// qop options offered; empty = RFC 2069 style (no qop).
    pub qop: QopOffer,
    pub stale: bool,
    /// Came from a 407 / Proxy-Authenticate (answer goes in Proxy-Authorization).
    pub proxy: bool,
}

impl std::fmt::Debug for Challenge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Challenge")
            .field("realm", &self.realm())
            .field("nonce", &self.nonce())
            .field("opaque", &self.opaque())
            .field("algorithm", &self.algorithm)
            .field("algorithm_given", &self.algorithm_given)
            .field("qop", &self.qop)
            .field("stale", &self.stale)
            .field("proxy", &self.proxy)
            .finish()
    }
}

impl Challenge {
    pub fn realm(&self) -> &str {
        &self.text[..self.realm_end as usize]
    }

    pub fn nonce(&self) -> &str {
        &self.text[self.realm_end as usize..self.nonce_end as usize]
    }

    pub fn opaque(&self) -> Option<&str> {
        self.has_opaque
            .then(|| &self.text[self.nonce_end as usize..])
    }

    /// Parses a header value such as `Digest realm="x", nonce="y", qop="auth,auth-int"`.
    /// Unknown qop tokens are skipped; an unknown algorithm is an error.
    pub fn parse(value: &str, proxy: bool) -> Result<Challenge, DigestError> {
        let (scheme, params) = parse_params(value)?;
        if !scheme.eq_ignore_ascii_case("digest") {
            return Err(DigestError::NotDigest);
        }
        let realm =
            param(&params, "realm").ok_or_else(|| DigestError::Malformed("no realm".into()))?;
        let nonce =
            param(&params, "nonce").ok_or_else(|| DigestError::Malformed("no nonce".into()))?;
        let (algorithm, algorithm_given) = match param(&params, "algorithm") {
            Some(token) => (
                Algorithm::parse(token)
                    .ok_or_else(|| DigestError::UnsupportedAlgorithm(token.to_string()))?,
                true,
            ),
            None => (Algorithm::Md5, false),
        };
        let qop = param(&params, "qop")
            .map(|list| {
                list.split(',')
                    .filter_map(Qop::parse)
                    .fold(QopOffer::default(), QopOffer::with)
            })
            .unwrap_or_default();
        let offered_qop = param(&params, "qop").is_some_and(|q| !q.trim().is_empty());
        if offered_qop && qop.is_empty() {
            return Err(DigestError::UnsupportedQop(
                param(&params, "qop").unwrap_or("").to_string(),
            ));
        }
        let opaque = param(&params, "opaque");
        let text = [realm, nonce, opaque.unwrap_or("")].concat();
        // A header is far below 4 GiB (the framing caps messages long before).
        let end = |len: usize| {
            u32::try_from(len).map_err(|_| DigestError::Malformed("oversized challenge".into()))
        };
        Ok(Challenge {
            realm_end: end(realm.len())?,
            nonce_end: end(realm.len() + nonce.len())?,
            has_opaque: opaque.is_some(),
            text: text.into_boxed_str(),
            algorithm,
            algorithm_given,
            qop,
            stale: param(&params, "stale").is_some_and(|v| v.eq_ignore_ascii_case("true")),
            proxy,
        })
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

/// Computes the digest `response` (RFC 7616 §3.4.1; RFC 2069 when `qop` is None).
#[allow(clippy::too_many_arguments)]
fn compute_response(
    algorithm: Algorithm,
    username: &str,
    realm: &str,
    secret: SecretInput<'_>,
    nonce: &str,
    cnonce: &str,
    nc: u32,
    qop: Option<Qop>,
    method: &str,
    uri: &str,
    body: &[u8],
) -> Result<HexHash, DigestError> {
    let given_ha1;
    let lower_ha1;
    let base_ha1: &[u8] = match secret {
        SecretInput::Password(password) => {
            given_ha1 = algorithm.hex_hash_of(&[
                username.as_bytes(),
                b":",
                realm.as_bytes(),
                b":",
                password.as_bytes(),
            ]);
            given_ha1.as_bytes()
        }
        SecretInput::Ha1(ha1) => {
            if !algorithm.is_md5() {
                return Err(DigestError::Ha1NeedsMd5(algorithm.as_str().to_string()));
            }
            lower_ha1 = ha1.to_ascii_lowercase();
            lower_ha1.as_bytes()
        }
    };
    let sess_ha1;
    let ha1 = if algorithm.is_sess() {
        sess_ha1 =
            algorithm.hex_hash_of(&[base_ha1, b":", nonce.as_bytes(), b":", cnonce.as_bytes()]);
        sess_ha1.as_bytes()
    } else {
        base_ha1
    };
    let ha2 = match qop {
        Some(Qop::AuthInt) => {
            let body_hash = algorithm.hex_hash_of(&[body]);
            algorithm.hex_hash_of(&[
                method.as_bytes(),
                b":",
                uri.as_bytes(),
                b":",
                body_hash.as_bytes(),
            ])
        }
        _ => algorithm.hex_hash_of(&[method.as_bytes(), b":", uri.as_bytes()]),
    };
    let response = match qop {
        Some(q) => {
            // Eight hex digits, as a hash's bytes are written.
            let nc_text = HexHash::of(&nc.to_be_bytes());
            algorithm.hex_hash_of(&[
                ha1,
                b":",
                nonce.as_bytes(),
                b":",
                nc_text.as_bytes(),
                b":",
                cnonce.as_bytes(),
                b":",
                q.as_str().as_bytes(),
                b":",
                ha2.as_bytes(),
            ])
        }
        None => algorithm.hex_hash_of(&[ha1, b":", nonce.as_bytes(), b":", ha2.as_bytes()]),
    };
    Ok(response)
}

/// Compares without an early exit, so timing does not reveal how much of a guess matched.
fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

impl Authorization {
    /// Computes the answer to `challenge` for `method` and `uri` (qop=auth preferred over
    /// auth-int when both are offered; auth-int hashes `body`).
    #[allow(clippy::too_many_arguments)]
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
        let response =
            AnswerResponse::compute(challenge, username, secret, method, uri, body, nc, cnonce)?;
        Ok(response.fields(challenge, username, uri).to_owned())
    }

    /// [`Authorization::answer`] written straight into its header value: what a request
    /// carries, without an owned copy of every field on the way.
    #[allow(clippy::too_many_arguments)]
    pub fn answer_header(
        challenge: &Challenge,
        username: &str,
        secret: SecretInput<'_>,
        method: &str,
        uri: &str,
        body: &[u8],
        nc: u32,
        cnonce: &str,
    ) -> Result<String, DigestError> {
        let response =
            AnswerResponse::compute(challenge, username, secret, method, uri, body, nc, cnonce)?;
        Ok(response.fields(challenge, username, uri).to_header_value())
    }

    /// Parses a header value `Digest username="…", …`.
    pub fn parse(value: &str) -> Result<Authorization, DigestError> {
        let (scheme, params) = parse_params(value)?;
        if !scheme.eq_ignore_ascii_case("digest") {
            return Err(DigestError::NotDigest);
        }
        let need = |name: &str| {
            param(&params, name)
                .map(String::from)
                .ok_or_else(|| DigestError::Malformed(format!("no {name}")))
        };
        let algorithm = match param(&params, "algorithm") {
            Some(token) => Some(
                Algorithm::parse(token)
                    .ok_or_else(|| DigestError::UnsupportedAlgorithm(token.to_string()))?,
            ),
            None => None,
        };
        let qop = match param(&params, "qop") {
            Some(token) => Some(
                Qop::parse(token).ok_or_else(|| DigestError::UnsupportedQop(token.to_string()))?,
            ),
            None => None,
        };
        let nc = match param(&params, "nc") {
            Some(text) => Some(
                u32::from_str_radix(text, 16)
                    .map_err(|_| DigestError::Malformed(format!("bad nc {text:?}")))?,
            ),
            None => None,
        };
        Ok(Authorization {
            username: need("username")?,
            realm: need("realm")?,
            nonce: need("nonce")?,
            uri: need("uri")?,
            response: need("response")?,
            algorithm,
            opaque: param(&params, "opaque").map(String::from),
            qop,
            nc,
            cnonce: param(&params, "cnonce").map(String::from),
        })
    }

    /// Recomputes the expected response from the secret and compares it (server side).
    pub fn verify(&self, secret: SecretInput<'_>, method: &str, body: &[u8]) -> bool {
        let algorithm = self.algorithm.unwrap_or(Algorithm::Md5);
        if self.qop.is_some() && (self.nc.is_none() || self.cnonce.is_none()) {
            return false;
        }
        let expected = compute_response(
            algorithm,
            &self.username,
            &self.realm,
            secret,
            &self.nonce,
            self.cnonce.as_deref().unwrap_or(""),
            self.nc.unwrap_or(0),
            self.qop,
            method,
            &self.uri,
            body,
        );
        expected.is_ok_and(|e| constant_time_eq(e.as_str(), &self.response.to_ascii_lowercase()))
    }

    /// The header value, `Digest username="…", realm="…", nonce="…", uri="…", response="…",
    /// [algorithm=…,] [cnonce="…", qop=auth, nc=00000001,] [opaque="…"]`.
    pub fn to_header_value(&self) -> String {
        AnswerFields {
            username: &self.username,
            realm: &self.realm,
            nonce: &self.nonce,
            uri: &self.uri,
            response: &self.response,
            algorithm: self.algorithm,
            opaque: self.opaque.as_deref(),
            qop: self.qop,
            nc: self.nc,
            cnonce: self.cnonce.as_deref(),
        }
        .to_header_value()
    }
}

/// A computed answer's response hash with the choices made on the way (the qop, whether a
/// cnonce goes along).
struct AnswerResponse<'a> {
    response: HexHash,
    qop: Option<Qop>,
    nc: u32,
    cnonce: Option<&'a str>,
}

impl<'a> AnswerResponse<'a> {
    #[allow(clippy::too_many_arguments)]
    fn compute(
        challenge: &Challenge,
        username: &str,
        secret: SecretInput<'_>,
        method: &str,
        uri: &str,
        body: &[u8],
        nc: u32,
        cnonce: &'a str,
    ) -> Result<AnswerResponse<'a>, DigestError> {
        let qop = if challenge.qop.contains(Qop::Auth) {
            Some(Qop::Auth)
        } else if challenge.qop.contains(Qop::AuthInt) {
            Some(Qop::AuthInt)
        } else {
            None
        };
        // Without qop, RFC 2069 has no cnonce; -sess still needs one.
        let uses_cnonce = qop.is_some() || challenge.algorithm.is_sess();
        let response = compute_response(
            challenge.algorithm,
            username,
            challenge.realm(),
            secret,
            challenge.nonce(),
            cnonce,
            nc,
            qop,
            method,
            uri,
            body,
        )?;
        Ok(AnswerResponse {
            response,
            qop,
            nc,
            cnonce: uses_cnonce.then_some(cnonce),
        })
    }

    /// The answer's fields: what the challenge gave, echoed, and what was computed.
    fn fields<'f>(
        &'f self,
        challenge: &'f Challenge,
        username: &'f str,
        uri: &'f str,
    ) -> AnswerFields<'f> {
        AnswerFields {
            username,
            realm: challenge.realm(),
            nonce: challenge.nonce(),
            uri,
            response: self.response.as_str(),
            algorithm: challenge.algorithm_given.then_some(challenge.algorithm),
            opaque: challenge.opaque(),
            qop: self.qop,
            nc: self.qop.map(|_| self.nc),
            cnonce: self.cnonce,
        }
    }
}

/// An `Authorization` value's fields, borrowed: written out without copying them first.
struct AnswerFields<'a> {
    username: &'a str,
    realm: &'a str,
    nonce: &'a str,
    uri: &'a str,
    response: &'a str,
    algorithm: Option<Algorithm>,
    opaque: Option<&'a str>,
    qop: Option<Qop>,
    nc: Option<u32>,
    cnonce: Option<&'a str>,
}

impl AnswerFields<'_> {
    fn to_owned(&self) -> Authorization {
        Authorization {
            username: self.username.to_string(),
            realm: self.realm.to_string(),
            nonce: self.nonce.to_string(),
            uri: self.uri.to_string(),
            response: self.response.to_string(),
            algorithm: self.algorithm,
            opaque: self.opaque.map(String::from),
            qop: self.qop,
            nc: self.nc,
            cnonce: self.cnonce.map(String::from),
        }
    }

    fn to_header_value(&self) -> String {
        let quoted = [
            self.username,
            self.realm,
            self.nonce,
            self.uri,
            self.response,
        ];
        let optional = [self.cnonce, self.opaque];
        let capacity = 120
            + quoted.iter().map(|v| v.len()).sum::<usize>()
            + optional.iter().flatten().map(|v| v.len()).sum::<usize>();
        let mut out = String::with_capacity(capacity);
        for (i, (name, value)) in ["username", "realm", "nonce", "uri", "response"]
            .iter()
            .zip(quoted)
            .enumerate()
        {
            out.push_str(if i == 0 { "Digest " } else { ", " });
            push_quoted_param(&mut out, name, value);
        }
        if let Some(algorithm) = self.algorithm {
            out.push_str(", algorithm=");
            out.push_str(algorithm.as_str());
        }
        if let Some(cnonce) = self.cnonce {
            out.push_str(", ");
            push_quoted_param(&mut out, "cnonce", cnonce);
        }
        if let (Some(qop), Some(nc)) = (self.qop, self.nc) {
            out.push_str(", qop=");
            out.push_str(qop.as_str());
            out.push_str(", nc=");
            super::hex::push_fixed(&mut out, u128::from(nc), 8);
        }
        if let Some(opaque) = self.opaque {
            out.push_str(", ");
            push_quoted_param(&mut out, "opaque", opaque);
        }
        out
    }
}

/// Appends `name="value"`, with `"` and `\` in the value escaped.
fn push_quoted_param(out: &mut String, name: &str, value: &str) {
    out.push_str(name);
    out.push_str("=\"");
    if memchr::memchr2(b'"', b'\\', value.as_bytes()).is_none() {
        // Nothing to escape (every value we send, in practice).
        out.push_str(value);
        out.push('"');
        return;
    }
    for piece in value.split_inclusive(['"', '\\']) {
        match piece.strip_suffix(['"', '\\']) {
            Some(before) => {
                out.push_str(before);
                out.push('\\');
                out.push_str(&piece[before.len()..]);
            }
            None => out.push_str(piece),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    // rsip 0.4.0 fails here: it refuses qop="auth,auth-int".
    #[test]
    fn rfc2617_example() {
        let challenge = Challenge::parse(
            "Digest realm=\"testrealm@host.com\", qop=\"auth,auth-int\", nonce=\"dcd98b7102dd2f0e8b11d0f600bfb0c093\", opaque=\"5ccc069c403ebaf9f0171e9517f40e41\"",
            false,
        )
        .unwrap();
        let answer = Authorization::answer(
            &challenge,
            "Mufasa",
            SecretInput::Password("Circle Of Life"),
            "GET",
            "/dir/index.html",
            b"",
            1,
            "0a4f113b",
        )
        .unwrap();
        assert_eq!(answer.response, "6629fae49393a05397450978507c4ef1");
        let header = answer.to_header_value();
        assert!(header.contains("nc=00000001"), "{header}");
        assert!(
            header.contains("qop=auth,") || header.contains("qop=auth, "),
            "{header}"
        );
        assert!(
            !header.contains("algorithm"),
            "not echoed when not given: {header}"
        );
        assert!(header.contains("opaque=\"5ccc069c403ebaf9f0171e9517f40e41\""));
        let parsed = Authorization::parse(&header).unwrap();
        assert_eq!(parsed, answer);
        assert!(parsed.verify(SecretInput::Password("Circle Of Life"), "GET", b""));
        assert!(!parsed.verify(SecretInput::Password("circle of life"), "GET", b""));
    }

    // rsip 0.4.0 fails here: it refuses algorithm=SHA-256 and qop="auth, auth-int".
    #[test]
    fn rfc7616_sha256_and_md5_examples() {
        for (algorithm, expected) in [
            ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
            (
                "SHA-256",
                "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1",
            ),
        ] {
            let challenge = Challenge::parse(
                &format!("Digest realm=\"http-auth@example.org\", qop=\"auth, auth-int\", algorithm={algorithm}, nonce=\"7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v\", opaque=\"FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS\""),
                false,
            )
            .unwrap();
            let answer = Authorization::answer(
                &challenge,
                "Mufasa",
                SecretInput::Password("Circle of Life"),
                "GET",
                "/dir/index.html",
                b"",
                1,
                "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
            )
            .unwrap();
            assert_eq!(answer.response, expected, "{algorithm}");
            assert_eq!(answer.algorithm.map(Algorithm::as_str), Some(algorithm));
        }
    }

    #[test]
    fn kamailio_trace_digest() {
        let challenge = Challenge::parse(
            "Digest realm=\"registrar.test\", nonce=\"awN21msDdpobD+hjRUs92zz15COlM0l9\", qop=\"auth\"",
            false,
        )
        .unwrap();
        let answer = Authorization::answer(
            &challenge,
            "user000000",
            SecretInput::Password("pw-user000000"),
            "REGISTER",
            "sip:registrar.test",
            b"",
            1,
            "1596745092",
        )
        .unwrap();
        assert_eq!(answer.response, "80a4f710e00f149e6dd41f9b768ffca0");
        // The same from an HA1.
        let ha1 = Algorithm::Md5.hex_hash(b"user000000:registrar.test:pw-user000000");
        let from_ha1 = Authorization::answer(
            &challenge,
            "user000000",
            SecretInput::Ha1(&ha1),
            "REGISTER",
            "sip:registrar.test",
            b"",
            1,
            "1596745092",
        )
        .unwrap();
        assert_eq!(from_ha1.response, answer.response);
    }

    // rsip 0.4.0 fails here: it reads nc as a decimal u8 and refuses 0000000a.
    #[test]
    fn nonce_count_is_hex() {
        let challenge =
            Challenge::parse("Digest realm=\"r\", nonce=\"n\", qop=auth", false).unwrap();
        let answer = Authorization::answer(
            &challenge,
            "u",
            SecretInput::Password("p"),
            "REGISTER",
            "sip:r",
            b"",
            10,
            "c",
        )
        .unwrap();
        assert!(answer.to_header_value().contains("nc=0000000a"));
        assert_eq!(
            Authorization::parse(&answer.to_header_value()).unwrap().nc,
            Some(10)
        );
    }

    // rsip 0.4.0 fails here: it loses the nonce after 'realm="a, b" ,' and does not know SHA-512-256-sess.
    #[test]
    fn challenge_forms() {
        let c = Challenge::parse("digest  REALM=\"a, b\" ,nonce=xyz,algorithm=sha-512-256-SESS,stale=TRUE,qop=\"auth-int\"", true).unwrap();
        assert_eq!(c.realm(), "a, b");
        assert_eq!(c.nonce(), "xyz");
        assert_eq!(c.opaque(), None);
        let with_opaque =
            Challenge::parse("Digest realm=\"r\", nonce=\"n1\", opaque=\"\"", false).unwrap();
        assert_eq!(
            (
                with_opaque.realm(),
                with_opaque.nonce(),
                with_opaque.opaque()
            ),
            ("r", "n1", Some(""))
        );
        assert_eq!(c.algorithm, Algorithm::Sha512_256Sess);
        assert!(c.stale && c.proxy);
        assert_eq!(
            c.qop,
            QopOffer {
                auth: false,
                auth_int: true
            }
        );
        assert_eq!(
            Challenge::parse("Basic realm=\"x\"", false),
            Err(DigestError::NotDigest)
        );
        assert!(matches!(
            Challenge::parse(
                "Digest realm=\"x\", nonce=\"y\", algorithm=AKAv1-MD5",
                false
            ),
            Err(DigestError::UnsupportedAlgorithm(_))
        ));
        assert!(Challenge::parse("Digest realm=\"x", false).is_err());
    }

    // rsip 0.4.0 fails here: it accepts every one of these (CR, LF, NUL, ESC, DEL) and refuses the HTAB form.
    #[test]
    fn control_characters_refuse_the_challenge() {
        for bad in [
            "Digest realm=\"evil\rVia: x\", nonce=\"n\"",
            "Digest realm=\"r\", nonce=\"n\nContact: *\"",
            "Digest realm=\"r\", nonce=\"n\0\"",
            "Digest realm=\"\u{1b}[31mred\", nonce=\"n\"",
            "Digest realm=r\r, nonce=n",
            "Digest realm=\"r\", nonce=\"n\", opaque=\"\\\r\"",
            "Digest realm=\"r\", nonce=\"n\u{7f}\"",
        ] {
            assert_eq!(
                Challenge::parse(bad, false),
                Err(DigestError::ControlCharacter),
                "{bad:?}"
            );
        }
        // HTAB is white space, not a control character to refuse.
        let tab = Challenge::parse("Digest\trealm=\"r\",\tnonce=\"n\"", false).unwrap();
        assert_eq!((tab.realm(), tab.nonce()), ("r", "n"));
    }

    // rsip 0.4.0 fails here: it refuses algorithm=SHA-256.
    #[test]
    fn ha1_cannot_answer_sha256() {
        let c =
            Challenge::parse("Digest realm=\"r\", nonce=\"n\", algorithm=SHA-256", false).unwrap();
        let err = Authorization::answer(
            &c,
            "u",
            SecretInput::Ha1("0123456789abcdef0123456789abcdef"),
            "REGISTER",
            "sip:r",
            b"",
            1,
            "c",
        )
        .unwrap_err();
        assert!(matches!(err, DigestError::Ha1NeedsMd5(_)));
    }

    // rsip 0.4.0 fails here: it knows MD5, SHA256 and SHA512 but not SHA-256, SHA-512-256 or their -sess forms.
    #[test]
    fn every_algorithm_round_trips_through_verify() {
        for algorithm in [
            "MD5",
            "MD5-sess",
            "SHA-256",
            "SHA-256-sess",
            "SHA-512-256",
            "SHA-512-256-sess",
        ] {
            for qop in ["", ", qop=\"auth\"", ", qop=\"auth-int\""] {
                let c = Challenge::parse(
                    &format!("Digest realm=\"r\", nonce=\"n\", algorithm={algorithm}{qop}"),
                    false,
                )
                .unwrap();
                let a = Authorization::answer(
                    &c,
                    "u",
                    SecretInput::Password("p"),
                    "REGISTER",
                    "sip:r",
                    b"",
                    3,
                    "cn",
                )
                .unwrap();
                let parsed = Authorization::parse(&a.to_header_value()).unwrap();
                assert!(
                    parsed.verify(SecretInput::Password("p"), "REGISTER", b""),
                    "{algorithm}{qop}"
                );
                assert!(
                    !parsed.verify(SecretInput::Password("q"), "REGISTER", b""),
                    "{algorithm}{qop}"
                );
            }
        }
    }

    mod prop {
        use super::super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn parsers_never_panic(value in "\\PC{0,300}") {
                let _ = Challenge::parse(&value, false);
                let _ = Authorization::parse(&value);
                let _ = Challenge::parse(&format!("Digest {value}"), true);
                let _ = Authorization::parse(&format!("Digest {value}"));
            }
        }
    }

    // rsip 0.4.0 fails here: it ends a quoted value at the first quote, escaped or not, and
    // then loses the parameters after it ("missing nonce").
    #[test]
    fn an_escaped_quote_stays_inside_a_quoted_value() {
        let c = Challenge::parse(
            "Digest realm=\"a\\\"b\", nonce=\"n\", opaque=\"o\\\"q\", stale=TRUE",
            false,
        )
        .unwrap();
        assert_eq!(c.realm(), "a\"b");
        assert_eq!(c.nonce(), "n");
        assert_eq!(c.opaque(), Some("o\"q"));
        assert!(c.stale);
    }

    // rsip 0.4.0 fails here, silently: it reads nc as a decimal u8, so 00000010 gives 10 and
    // 00000100 gives 100.
    #[test]
    fn nonce_counts_are_read_as_hex_beyond_nine() {
        for (text, count) in [("00000010", 16), ("00000100", 256), ("ffffffff", u32::MAX)] {
            let value = format!(
                "Digest username=\"u\", realm=\"r\", nonce=\"n\", uri=\"sip:r\", \
                 response=\"0\", qop=auth, nc={text}, cnonce=\"c\""
            );
            assert_eq!(
                Authorization::parse(&value).unwrap().nc,
                Some(count),
                "{text}"
            );
        }
    }
}

//! SIP wire format: reading message heads, URIs and `host:port`, building REGISTER requests,
//! parsing the responses (and, for the test registrar, the requests), cutting streams into
//! messages, and digest authentication.
//!
//! Nothing here performs I/O or keeps state between messages. Every message is read by the one
//! head scanner in [`head`] under the one set of [`limits`]; URIs and `host:port` only by
//! [`uri`]. The parser is our own, small and limited to what registrations and the relay need;
//! its tests pin down what real registrars send and rsip got wrong (several bindings in one
//! Contact line, compact header names, IPv6 contacts, `algorithm=SHA-256`,
//! `qop="auth,auth-int"`, hex nonce counts). It stays behind this module so it can be swapped.
//! The stateless proxy that relays calls is not wire format: it lives in [`crate::relay`].

pub mod digest;
pub mod framing;
pub mod head;
pub mod hex;
pub mod limits;
pub mod message;
pub mod register;
pub mod uri;

pub use limits::MAX_MESSAGE;

pub use digest::{Algorithm, Authorization, Challenge, DigestError};
pub use message::{ContactBinding, ParseError, Request, Response, UriParts};
pub use register::{Hop, RegisterRequest};

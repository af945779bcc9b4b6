//! SIP wire format for registrations: building REGISTER requests, parsing the responses (and, for
//! the test registrar, the requests), and digest authentication.
//!
//! Nothing here performs I/O or keeps state between messages. The parser is our own, small and
//! limited to what registrations need; its tests pin down what real registrars send and rsip got
//! wrong (several bindings in one Contact line, compact header names, IPv6 contacts,
//! `algorithm=SHA-256`, `qop="auth,auth-int"`, hex nonce counts). It stays behind this module so
//! it can be swapped.

pub mod digest;
pub mod framing;
pub mod message;
pub mod register;
pub mod relay;

pub use digest::{Algorithm, Authorization, Challenge, DigestError};
pub use message::{ContactBinding, ParseError, Request, Response, UriParts};
pub use register::{Hop, RegisterRequest};

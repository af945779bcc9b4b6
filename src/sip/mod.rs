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

/// Largest SIP message uacreg accepts anywhere: on a stream (head plus declared body), as a
/// datagram, and as a head to parse. 65,535 bytes so that every UDP datagram fits and a receive
/// buffer of this size never truncates one; registrations, their challenges and relayed calls
/// stay far below it. One value for every entry point, so no path accepts what another refuses.
pub const MAX_MESSAGE: usize = 65_535;

pub use digest::{Algorithm, Authorization, Challenge, DigestError};
pub use message::{ContactBinding, ParseError, Request, Response, UriParts};
pub use register::{Hop, RegisterRequest};

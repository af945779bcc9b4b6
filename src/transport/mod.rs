//! Moving bytes: the UDP sockets REGISTERs leave from and answers come back to, TCP and TLS
//! connections ([`stream`]), where a SIP URI's host leads (RFC 3263, [`resolve`]), and the
//! pacing that keeps a start-up of many rows from bursting past a registrar, and the limits on
//! connections peers open to us ([`admission`]).

pub mod admission;
pub mod pacing;
pub mod resolve;
pub mod stream;
pub mod tls;
pub mod udp;

pub use pacing::{Pacer, PacingConfig};
pub use udp::UdpTransport;

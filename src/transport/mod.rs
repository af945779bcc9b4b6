//! Moving bytes: the UDP socket the daemon sends REGISTERs from and receives answers on, and the
//! pacing that keeps a start-up of many rows from bursting past a registrar.
//!
//! TCP, TLS and RFC 3263 resolution come later behind the same `Transport` seam; for now a
//! destination host that is not an IP literal is resolved with the system resolver.

pub mod pacing;
pub mod udp;

pub use pacing::{Pacer, PacingConfig};
pub use udp::UdpTransport;

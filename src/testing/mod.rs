//! Test peers that ship with the crate, so the demo, the integration tests and the benchmarks
//! all run against the same real SIP implementations on loopback.

pub mod dns;
pub mod registrar;

/// A TLS server configuration from PEM text, for a test registrar that speaks TLS.
pub use crate::transport::tls::server_config_from_pem as tls_server_config;

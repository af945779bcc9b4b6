//! Test peers that ship with the crate, so the demo, the integration tests and the benchmarks
//! all run against the same real SIP implementations on loopback.

pub mod dns;
pub mod registrar;

//! The protocol core (sans-I/O). TODO: filled in by the core work.
pub mod record;
pub use record::{Credentials, Destination, Record, Secret, Transport, FLAG_DISABLED};

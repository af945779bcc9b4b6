//! uacreg — keeps a SIP registration alive for every row of Kamailio's `uacreg` table.
//!
//! The crate is layered; each layer only uses the ones above it in this list (the layers and
//! three flows through them are drawn in `docs/ARCHITECTURE.md`):
//!
//! * [`sip`] — wire format: building REGISTER requests, parsing responses, HTTP-style digest
//!   authentication. Pure functions, no I/O.
//! * [`registration`] — the protocol core. One [`registration::Registration`] per row and the
//!   [`registration::RegistrationTable`] holding all of them. It performs no I/O and never reads the
//!   clock: callers pass `now` in and carry out the actions it returns, which is what lets tests
//!   run a simulated day of 100,000 registrations in a second.
//! * [`engine`] — the sans-I/O engine around the table: RFC 3261 client transactions
//!   ([`transaction`]), RFC 3263 targets and fail-over, pacing and the send queue, where each
//!   binding lives and rebinds when that breaks, keep-alives. Driven by `handle_*(now, …)`,
//!   polled for transmits, I/O events and its next deadline; tested on simulated time.
//! * [`cluster`] — several nodes on one database: shards of rows, leases claimed and renewed
//!   through the database, the local deadline after which a node sends nothing for a shard.
//!   No I/O.
//! * [`transport`] — the sockets and connections the engine's transmits go over, RFC 3263
//!   lookups, and send pacing so that a start-up never bursts.
//! * [`store`] — the `uacreg` table through diesel on SQLite, PostgreSQL or MySQL/MariaDB:
//!   loading, validating (a bad row becomes a named error; the others load), migrating, and
//!   riding out database outages.
//! * [`rpc`] — Kamailio-compatible JSON-RPC (`uac.reg_dump`, `uac.reg_info`, `uac.reg_reload`, …).
//! * [`relay`] — the stateless proxy for calls to our contacts (RFC 3261 §16.11): whom it
//!   trusts, its keyed branches and flow tokens, what strangers get. No I/O.
//! * [`driver`] — the I/O shell: one async task that owns the engine, the sockets and
//!   connections, feeds the engine and the relay what arrives and carries out what they ask.
//! * [`gateway`] — loading rows (start-up and `uac.reg_reload`), the database's health record and
//!   the shutdown request, held together as the context RPC methods receive.
//! * [`table_watch`] — reloads without being asked: periodically, or on PostgreSQL NOTIFY.
//! * [`status_export`] — the optional `uacreg_status` table, written in batches.
//! * [`cluster_node`] — the cluster task: rounds with the database for [`cluster`]'s
//!   membership, shards handed to the driver and taken back.
//! * [`metrics`] — Prometheus text on `GET /metrics`.
//! * [`daemon`] — wires everything together for the `uacregd` binary, and ends the process when
//!   a task it cannot live without ends.
//! * [`backoff`] — the jittered exponential back-off of every retry loop.
//! * [`descriptors`] — the open-files limit, raised at start, and the connection cap under it.
//! * `demo` — `uacregd demo`: registrar, rows, daemon and report in one command.
//! * `testing` — a registrar with digest checking and a DNS server that tests, the demo and
//!   benchmarks run on loopback.
//!
//! # The public API
//!
//! Modules are private unless they are a library in their own right: the wire format ([`sip`]),
//! the two sans-I/O cores ([`registration`] with [`engine`], and [`relay`]), which fuzzers and
//! the simulation bench drive directly, and the `uacreg` table ([`store`]), which tools and
//! tests write rows into. Everything else — the driver, transports, RPC server, gateway,
//! metrics — is reached through the few types re-exported here: a [`Daemon`] started from a
//! [`Config`], steered with an [`RpcClient`] whose answers are the types in [`answer`], and a
//! [`StreamingClient`] that hands out the records of a large `uac.reg_dump` one by one.
//! `testing` and `demo` exist only with the `demo` feature (on by default; `uacregd demo` needs
//! it, a packaged daemon can leave it out).

mod backoff;
mod cluster_node;
mod config;
mod daemon;
mod descriptors;
mod driver;
mod gateway;
mod metrics;
mod rpc;
mod status_export;
mod table_watch;
mod transport;

pub mod cluster;
pub mod engine;
pub mod registration;
pub mod relay;
pub mod sip;
pub mod store;

#[cfg(feature = "demo")]
pub mod demo;
#[cfg(feature = "demo")]
pub mod testing;

pub use config::{Config, ConfigError, Overrides};
pub use daemon::{Daemon, DaemonError};
pub use descriptors::raise_open_files_limit;
pub use driver::{DriverStats, InboundStats, LATENCY_BOUNDS_MS};
pub use rpc::answer;
pub use rpc::{Fault, RecordView, RpcClient, RpcError, StreamingCallError, StreamingClient};
pub use transport::admission::ConnectionLimits;

/// What the fuzz targets feed untrusted bytes to, beyond the public modules.
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::rpc::array_answer::ArrayAnswerParser;
    pub use crate::rpc::binrpc;
    pub use crate::rpc::parse_params_for_fuzzing;
    /// The `rpc_fifo` line parser and its answer printer.
    pub mod fifo {
        pub use crate::rpc::fifo::{is_bare_name, kamailio_pretty, parse_line};
    }
}

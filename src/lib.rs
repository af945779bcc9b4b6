//! uacreg — keeps a SIP registration alive for every row of Kamailio's `uacreg` table.
//!
//! The crate is layered; each layer only uses the ones above it in this list:
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
//! * [`metrics`] — Prometheus text on `GET /metrics`.
//! * [`daemon`] — wires everything together for the `uacregd` binary, and ends the process when
//!   a task it cannot live without ends.
//! * [`backoff`] — the jittered exponential back-off of every retry loop.
//! * [`descriptors`] — the open-files limit, raised at start, and the connection cap under it.
//! * [`demo`] — `uacregd demo`: registrar, rows, daemon and report in one command.
//! * [`testing`] — a registrar with digest checking that tests, the demo and benchmarks run on
//!   loopback.

pub mod backoff;
pub mod config;
pub mod daemon;
pub mod demo;
pub mod descriptors;
pub mod driver;
pub mod engine;
pub mod gateway;
pub mod metrics;
pub mod registration;
pub mod relay;
pub mod rpc;
pub mod sip;
pub mod status_export;
pub mod store;
pub mod table_watch;
pub mod testing;
pub use engine::transaction;
pub mod transport;

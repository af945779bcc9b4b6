//! Kamailio-compatible JSON-RPC over HTTP: the server's `uac.*` methods, the parsing of their
//! parameters, the record view and the other answers they render (types the client reads back),
//! and the small clients `uacregctl` uses: one for any answer, one that streams the arrays of
//! `uac.reg_dump`.
//!
//! The web console (`web.rs`, its page in `web/`) is served in front of the same methods, and
//! reads the gateway through the console's own methods (`console.rs`).
//!
//! Secrets (`auth_password`, `auth_ha1`) are masked in every answer unless the daemon was started
//! with `show_secrets`.

pub mod answer;
pub mod array_answer;
#[doc(hidden)]
pub mod binrpc;
pub mod client;
mod cluster_dump;
mod console;
pub mod ctl;
mod dump;
mod dump_http;
pub(crate) mod fifo;
pub use fifo::serve as serve_fifo;
pub mod kamailio;
mod params;
pub mod server;
pub mod stream_client;
pub mod token;
pub mod view;
pub mod web;

pub use array_answer::Fault;
pub use client::{RpcClient, RpcError};
#[doc(hidden)]
pub use params::parse_params_for_fuzzing;
pub use server::serve;
pub use stream_client::{StreamingCallError, StreamingClient};
pub use view::RecordView;

//! Kamailio-compatible JSON-RPC over HTTP: the server's `uac.*` methods, the record view they
//! render, and the small client `uacregctl` uses.
//!
//! Secrets (`auth_password`, `auth_ha1`) are masked in every answer unless the daemon was started
//! with `show_secrets`.

pub mod client;
pub mod server;
pub mod token;
pub mod view;

pub use client::RpcClient;
pub use server::serve;
pub use view::RecordView;

//! Helpers shared by the integration tests: external SIP peers and database servers started
//! for one test.
//!
//! * [`kamailio`] — a real Kamailio registrar (digest auth, usrloc) on a spare loopback port.
//! * [`kamailio_uac`] — Kamailio running its own `uac` module, with `ctl` and jsonrpcs, to compare
//!   Kamailio's tools against.
//! * [`sipp`] — runs a sipp scenario as a UAC against a loopback target.
//! * [`dbserver`] — a throwaway PostgreSQL or MariaDB server (fresh data dir, database and
//!   user `uacreg`) on a spare loopback TCP port, which can be stopped and restarted.
//! * [`uacregd`] — the real `uacregd` binary in a process of its own (exit status, RSS, CPU),
//!   the one way tests run it as a process.
//! * [`stranger`] — what anyone on the network can send the SIP port: sockets on chosen
//!   127.0.0.x addresses, bounded receives, forged requests and responses.
//! * [`tcp_cut`] — a TCP forwarding proxy that can be cut (refuse, blackhole, freeze) and
//!   restored, between a uacregd and its database server.
//! * [`cluster`] — several uacregd processes on one database server, each through a
//!   `tcp_cut` of its own; rows for the in-repo registrar, a wait until it holds them all.
//! * [`browser`] — headless Chromium through chromedriver (WebDriver, fantoccini) on a spare
//!   loopback port, kept off the network; bounded waits on the page, screenshots under
//!   `target/web-screenshots/`, a narrow window.
//! * [`process`] — what they all need: unique temp dirs, spare ports, bounded waits, a watchdog
//!   that stops a server when the test process goes away.
//!
//! Everything here talks only to loopback (127.0.0.0/8) and every wait has a deadline. The
//! programs are installed by `scripts/install-test-deps`; when one is missing, `require_*` skips
//! the test locally and fails it in CI (`CI=true`).
//!
//! Use from a test crate with `mod support;`. Each test crate uses only part of this, hence the
//! `allow(dead_code)`.
#![allow(dead_code)]

pub mod browser;
pub mod cluster;
pub mod dbserver;
pub mod kamailio;
pub mod kamailio_uac;
pub mod process;
pub mod sipp;
pub mod stranger;
pub mod tcp_cut;
pub mod uacregd;

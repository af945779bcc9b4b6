//! The registrar side of a run: the in-repo registrar (one or several sockets), sipp, or
//! Kamailio's registrar, and the counters a run reads from it.
//!
//! One socket of the in-repo registrar is one task reading one UDP socket: at 1,000,000 rows
//! its receive path, not the gateway, could set the pace. So `--registrar-sockets K` starts K
//! registrars, each on a port of its own and knowing only its own users (row `i` goes through
//! socket `i % K`), and the runtime they share may have several threads; their counters are
//! summed.

use std::io;
use std::net::SocketAddr;

use uacreg::testing::registrar::{RegistrarConfig, TestRegistrar};

use crate::{PeerKind, kamailio, rows, sipp};

/// A registrar the rows register with.
pub enum Peer {
    Builtin(Vec<TestRegistrar>),
    Sipp(sipp::SippRegistrar),
    Kamailio(kamailio::KamailioLoadRegistrar),
}

impl Peer {
    /// Starts the registrar for `rows` rows, on `sockets` sockets (the in-repo registrar only).
    pub fn start(
        kind: PeerKind,
        rows: usize,
        sockets: usize,
        runtime: &tokio::runtime::Runtime,
    ) -> io::Result<Peer> {
        if sockets != 1 && kind != PeerKind::Builtin {
            return Err(io::Error::other(
                "--registrar-sockets other than 1 needs --peers builtin",
            ));
        }
        match kind {
            PeerKind::Builtin => {
                let mut registrars = Vec::with_capacity(sockets);
                for socket in 0..sockets.max(1) {
                    registrars.push(runtime.block_on(TestRegistrar::start(RegistrarConfig {
                        realm: rows::DOMAIN.into(),
                        users: rows::users(rows, socket, sockets).into_iter().collect(),
                        keep_history: false,
                        ..RegistrarConfig::default()
                    }))?);
                }
                Ok(Peer::Builtin(registrars))
            }
            PeerKind::Sipp => Ok(Peer::Sipp(sipp::SippRegistrar::start(rows)?)),
            PeerKind::Kamailio => Ok(Peer::Kamailio(kamailio::KamailioLoadRegistrar::start(
                &rows::users(rows, 0, 1),
            )?)),
        }
    }

    /// The address of each socket, in the order rows are spread over them.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        match self {
            Peer::Builtin(rs) => rs.iter().map(TestRegistrar::local_addr).collect(),
            Peer::Sipp(r) => vec![r.addr()],
            Peer::Kamailio(r) => vec![r.addr()],
        }
    }

    /// REGISTER requests received, retransmissions included.
    pub fn registers_seen(&self) -> io::Result<u64> {
        match self {
            Peer::Builtin(rs) => Ok(rs.iter().map(|r| r.stats().requests).sum()),
            Peer::Sipp(r) => r.registers_received(),
            Peer::Kamailio(r) => r.registers_received(),
        }
    }

    /// Bindings the registrar holds now (sipp keeps none: the 200 OKs it sent). For the in-repo
    /// registrar a walk over every binding under its lock: not for a tight loop at 1,000,000.
    pub fn bindings(&self) -> io::Result<u64> {
        match self {
            Peer::Builtin(rs) => Ok(rs.iter().map(|r| r.binding_count() as u64).sum()),
            Peer::Sipp(r) => r.registered(),
            Peer::Kamailio(r) => r.bindings(),
        }
    }

    /// Answers that refused a request (not counting digest challenges).
    pub fn error_answers(&self) -> io::Result<u64> {
        match self {
            Peer::Builtin(rs) => Ok(rs
                .iter()
                .map(|r| r.stats().rejected + r.stats().malformed)
                .sum()),
            Peer::Sipp(r) => r.errors(),
            Peer::Kamailio(r) => r.error_replies(),
        }
    }

    /// Refreshes that came after their binding had expired (the in-repo registrar only).
    pub fn lapsed(&self) -> Option<u64> {
        match self {
            Peer::Builtin(rs) => Some(rs.iter().map(|r| r.stats().lapsed).sum()),
            Peer::Sipp(_) | Peer::Kamailio(_) => None,
        }
    }

    pub fn stop(self, runtime: &tokio::runtime::Runtime) {
        match self {
            Peer::Builtin(rs) => {
                for r in rs {
                    runtime.block_on(r.stop());
                }
            }
            Peer::Sipp(r) => drop(r),
            Peer::Kamailio(r) => drop(r),
        }
    }
}

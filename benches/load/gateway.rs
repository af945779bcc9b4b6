//! The gateway under test — uacregd, or Kamailio's own uac module — behind the few operations a
//! run needs: its processes, its counters, a `reg_dump`, changing rows and reloading them.

use std::io;
use std::time::Duration;

use crate::kamailio;
use crate::rows::RowSet;
use crate::support;
use crate::table::Table;
use crate::uacregd;

pub enum Gateway {
    Uacregd {
        daemon: uacregd::Uacregd,
        table: Table,
    },
    Kamailio(kamailio::KamailioUacGateway),
}

/// Gateway-side counters, where the gateway has them.
#[derive(Clone, Debug, Default)]
pub struct GatewayCounters {
    pub registered: Option<u64>,
    pub registers_sent: Option<u64>,
    pub retransmissions: Option<u64>,
    pub timeouts: Option<u64>,
    pub granted: Option<u64>,
    pub pacing_backoffs: Option<u64>,
    /// Timer lateness histogram: (count within each bound, bound in ms; `u64::MAX` for +Inf).
    pub lateness: Option<Vec<(f64, u64)>>,
}

impl Gateway {
    pub fn pids(&self) -> Vec<u32> {
        match self {
            Gateway::Uacregd { daemon, .. } => vec![daemon.pid()],
            Gateway::Kamailio(gw) => gw.pids(),
        }
    }

    pub fn counters(&self) -> io::Result<GatewayCounters> {
        match self {
            Gateway::Uacregd { daemon, .. } => {
                let m = daemon.metrics()?;
                let get = |k: &str| m.get(k).map(|v| *v as u64);
                let lateness = uacreg::LATENCY_BOUNDS_MS
                    .iter()
                    .map(|bound| {
                        let le = *bound as f64 / 1000.0;
                        let key = format!("uacreg_timer_lateness_seconds_bucket{{le=\"{le}\"}}");
                        (m.get(&key).copied().unwrap_or(0.0), *bound)
                    })
                    .chain(std::iter::once((
                        m.get("uacreg_timer_lateness_seconds_bucket{le=\"+Inf\"}")
                            .copied()
                            .unwrap_or(0.0),
                        u64::MAX,
                    )))
                    .collect();
                Ok(GatewayCounters {
                    registered: get("uacreg_registrations{state=\"registered\"}"),
                    registers_sent: get("uacreg_registers_sent_total"),
                    retransmissions: get("uacreg_retransmissions_total"),
                    timeouts: get("uacreg_transaction_timeouts_total"),
                    granted: get("uacreg_registrations_granted_total"),
                    pacing_backoffs: get("uacreg_pacing_backoffs_total"),
                    lateness: Some(lateness),
                })
            }
            // Kamailio's uac module counts nothing cheaper than a full dump; the registrar's
            // side is what the run watches.
            Gateway::Kamailio(_) => Ok(GatewayCounters::default()),
        }
    }

    /// One `uac.reg_dump`: time to the whole answer, and how many records it held.
    pub fn dump(&self) -> io::Result<(Duration, usize)> {
        match self {
            Gateway::Uacregd { daemon, .. } => daemon.dump(),
            Gateway::Kamailio(gw) => gw.reg_dump(),
        }
    }

    /// Changes the rows at `indices`, each changed `earlier` times before, in the gateway's
    /// table (see [`RowSet::changed_row`]).
    pub fn change_rows(&self, rows: &RowSet, indices: &[usize], earlier: u32) -> io::Result<()> {
        match self {
            Gateway::Uacregd { table, .. } => {
                let changed: Vec<_> = indices
                    .iter()
                    .map(|&i| rows.changed_row(i, earlier + 1))
                    .collect();
                table.update(&changed)
            }
            Gateway::Kamailio(gw) => gw.change_rows(indices),
        }
    }

    /// `uac.reg_reload`: time to the answer.
    pub fn reload(&self) -> io::Result<Duration> {
        match self {
            Gateway::Uacregd { daemon, .. } => {
                let (took, body) = daemon.rpc("uac.reg_reload")?;
                let value: serde_json::Value = serde_json::from_slice(&body)?;
                if value.get("error").is_some() {
                    return Err(io::Error::other(format!("reg_reload: {value}")));
                }
                Ok(took)
            }
            Gateway::Kamailio(gw) => gw.reload(),
        }
    }

    pub fn log_tail(&self) -> String {
        match self {
            Gateway::Uacregd { daemon, .. } => daemon.log_tail(),
            Gateway::Kamailio(gw) => support::process::tail(&gw.log(), 20),
        }
    }

    pub fn stop(self) {
        match self {
            Gateway::Uacregd { daemon, .. } => daemon.stop(),
            Gateway::Kamailio(gw) => drop(gw),
        }
    }
}

//! The answers of the RPC methods other than the record view ([`super::view`]), as types the
//! server serialises and clients (`uacregctl`, the demo) deserialise.
//!
//! One type per answer keeps each JSON shape in one place, so the tool cannot drift from the
//! daemon. Field order is key order on the wire; the shapes are Kamailio 5.6's where Kamailio has
//! the method (`{}` for commands on one record, `omode`/`nmode` for `reg_active`), and must not
//! change: scripts written against Kamailio read them.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::driver::DriverStats;
use crate::gateway::{DatabaseHealth, ReloadReport};
use crate::registration::Status;

/// `uacreg.cluster`: this node's shards and counters, and every node as its last round saw it.
pub use crate::cluster_node::{ClusterStatus, NodeStatus};

/// Kamailio's answer to a command on one record (`reg_enable`, `reg_remove`, …): `{}`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Empty {}

/// `uac.reg_active`: the sending mode before the call and the one given (Kamailio echoes the
/// given value, not a normalised 0/1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActiveModes {
    pub omode: i64,
    pub nmode: i64,
}

/// `uac.reg_lookup`: a registration's local URI and the contact it registers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lookup {
    pub l_uuid: String,
    /// `sip:l_username@l_domain`.
    pub local_uri: String,
    pub contact: String,
}

/// `uacreg.shutdown`: the daemon is stopping and will un-register this many bindings; the
/// progress shows in `uacreg.status` as `sip.leaving`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShutdownStarted {
    pub stopping: bool,
    pub registered: usize,
}

/// A row the last load could not use.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvalidRowAnswer {
    pub id: i64,
    pub l_uuid: String,
    pub error: String,
}

/// `uac.reg_reload`: what the load changed. Kamailio answers `{}`; the figures are uacreg's, and
/// scripts written for Kamailio ignore the result anyway.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadAnswer {
    pub added: usize,
    pub changed: usize,
    pub removed: usize,
    pub unchanged: usize,
    /// Rows read from the table, valid or not.
    pub loaded: usize,
    pub invalid: Vec<InvalidRowAnswer>,
}

impl From<ReloadReport> for ReloadAnswer {
    fn from(report: ReloadReport) -> ReloadAnswer {
        ReloadAnswer {
            added: report.summary.added,
            changed: report.summary.changed,
            removed: report.summary.removed,
            unchanged: report.summary.unchanged,
            loaded: report.loaded,
            invalid: report
                .invalid
                .into_iter()
                .map(|bad| InvalidRowAnswer {
                    id: bad.id,
                    l_uuid: bad.l_uuid,
                    error: bad.error,
                })
                .collect(),
        }
    }
}

/// Registrations per state, under every state's name (zeros included), in name order.
pub type StateCounts = BTreeMap<Cow<'static, str>, usize>;

/// `uacreg.status`: counts per state, the database's health and the SIP counters.
///
/// The two large parts are the gateway's and the driver's own records, serialised as they are
/// and read back into the same types, so the daemon and `uacregctl` share one definition.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StatusAnswer {
    pub registrations: StateCounts,
    /// Rows of the last load that failed validation.
    pub invalid_rows: usize,
    pub database: DatabaseHealth,
    pub sip: DriverStats,
}

impl StatusAnswer {
    /// How many registrations are in `status` (0 for a state the answer does not list).
    pub fn count(&self, status: Status) -> usize {
        self.registrations.get(status.name()).copied().unwrap_or(0)
    }

    /// All registrations, whatever their state.
    pub fn total(&self) -> usize {
        self.registrations.values().sum()
    }
}

/// The counts as the driver keeps them, keyed by the states' static names.
pub fn state_counts(counts: BTreeMap<&'static str, usize>) -> StateCounts {
    counts
        .into_iter()
        .map(|(name, n)| (Cow::Borrowed(name), n))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::loader::InvalidRowReport;
    use crate::registration::ReloadSummary;
    use serde::de::DeserializeOwned;
    use serde_json::json;

    /// Serialises `answer`, checks the text against `wire` (keys in order, types as they were),
    /// and reads it back into the same value.
    fn same_wire_and_back<T>(answer: &T, wire: serde_json::Value)
    where
        T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
    {
        let text = serde_json::to_string(answer).expect("serialises");
        assert_eq!(text, wire.to_string());
        let back: T = serde_json::from_str(&text).expect("deserialises");
        assert_eq!(&back, answer);
    }

    #[test]
    fn empty_is_kamailios_empty_struct() {
        same_wire_and_back(&Empty {}, json!({}));
    }

    #[test]
    fn active_modes_keep_kamailios_keys() {
        same_wire_and_back(
            &ActiveModes { omode: 1, nmode: 0 },
            json!({"omode": 1, "nmode": 0}),
        );
    }

    #[test]
    fn lookup_round_trips() {
        same_wire_and_back(
            &Lookup {
                l_uuid: "uuid000002".into(),
                local_uri: "sip:local000002@gw.test".into(),
                contact: "sip:uuid000002@192.0.2.10:5062".into(),
            },
            json!({
                "l_uuid": "uuid000002",
                "local_uri": "sip:local000002@gw.test",
                "contact": "sip:uuid000002@192.0.2.10:5062",
            }),
        );
    }

    #[test]
    fn shutdown_started_round_trips() {
        same_wire_and_back(
            &ShutdownStarted {
                stopping: true,
                registered: 1200,
            },
            json!({"stopping": true, "registered": 1200}),
        );
    }

    /// The answer is what the gateway's report serialised to before it had its own type: the
    /// summary's four figures first (it was flattened), then `loaded` and `invalid`.
    #[test]
    fn reload_answer_has_the_reports_shape() {
        let report = ReloadReport {
            summary: ReloadSummary {
                added: 3,
                changed: 1,
                removed: 2,
                unchanged: 994,
            },
            loaded: 1001,
            invalid: vec![InvalidRowReport {
                id: 17,
                l_uuid: "uuid-bad".into(),
                error: "r_domain is empty".into(),
            }],
        };
        let as_report = serde_json::to_value(&report).expect("serialises");
        same_wire_and_back(&ReloadAnswer::from(report), as_report);
    }

    fn counts() -> BTreeMap<&'static str, usize> {
        Status::ALL
            .iter()
            .enumerate()
            .map(|(i, s)| (s.name(), i * 10))
            .collect()
    }

    /// The typed answer writes exactly what the server's `json!` literal did.
    #[test]
    fn status_answer_has_the_old_shape_and_round_trips() {
        let stats = DriverStats {
            registers_sent: 2400,
            leaving: 7,
            ..DriverStats::default()
        };
        let health = DatabaseHealth {
            engine: "SQLite".into(),
            url: "sqlite://uacreg.db".into(),
            reachable: true,
            reloads: 4,
            last_reload: Some(1_796_299_073),
            ..DatabaseHealth::default()
        };
        let answer = StatusAnswer {
            registrations: state_counts(counts()),
            invalid_rows: 2,
            database: health.clone(),
            sip: stats.clone(),
        };
        let before = json!({
            "registrations": counts(),
            "invalid_rows": 2,
            "database": health,
            "sip": stats,
        });
        let text = serde_json::to_string(&answer).expect("serialises");
        assert_eq!(text, before.to_string());

        // What uacregctl reads back is what was sent, and writes the same text again.
        let read: StatusAnswer = serde_json::from_str(&text).expect("deserialises");
        assert_eq!(read.registrations, answer.registrations);
        assert_eq!(read.invalid_rows, 2);
        assert_eq!(read.database, health);
        assert_eq!(read.sip.leaving, 7);
        assert_eq!(read.sip.registers_sent, 2400);
        assert_eq!(serde_json::to_string(&read).expect("serialises"), text);
        assert_eq!(read.count(Status::AuthFailed), 90);
        assert_eq!(read.total(), (0..11).map(|i| i * 10).sum::<usize>());
    }
}

//! The web console's methods: `uacreg.overview` (counts, the database, the cluster, the last
//! hour), `uacreg.rows` (one page of the table, filtered, searched and sorted on the server so
//! the page never holds 100,000 rows) and `uacreg.row` (one row in full, with its recent state
//! changes). Kamailio's `uac.*` methods stay as they are; the console acts through them.
//!
//! Rows that failed validation are listed too, in state `invalid` with the reason: on call at
//! 3 a.m. a row the gateway refused is as much a broken trunk as one the registrar refused.

use std::cmp::Ordering;

use jsonrpsee::RpcModule;
use jsonrpsee::types::ErrorObjectOwned;
use serde::{Deserialize, Serialize};

use super::params::fault;
use super::server::{internal, now_unix, render};
use crate::gateway::Gateway;
use crate::registration::{Attribute, Snapshot, Status};
use crate::store::InvalidRow;

/// Rows a page may ask for.
pub const MAX_PAGE: usize = 500;
/// State changes `uacreg.row` lists.
const HISTORY_SHOWN: usize = 10;
/// The longest search text (more is refused rather than searched).
const MAX_SEARCH: usize = 256;

/// `uacreg.rows`' parameters (a JSON object; every member optional).
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RowsQuery {
    pub offset: usize,
    /// 50 when absent, at most [`MAX_PAGE`].
    pub limit: Option<usize>,
    /// A state name, or `invalid`; empty: every state.
    pub state: String,
    /// Case-insensitive text found in the l_uuid, the AoR, the registrar or the realm.
    pub search: String,
    /// `l_uuid` (default), `state` (most urgent first: invalid, failed, auth_failed,
    /// realm_mismatch, retry_wait, …, registered last), `aor`, `registrar`, `realm`, `code`,
    /// `next_refresh`, `failures`.
    pub sort: String,
    /// `asc` (default) or `desc`.
    pub order: String,
}

/// One line of the console's table.
#[derive(Debug, Clone, Serialize)]
pub struct RowLine {
    pub l_uuid: String,
    /// `r_username@r_domain`.
    pub aor: String,
    /// Where REGISTERs go: `auth_proxy`, or the AoR's domain without one.
    pub registrar: String,
    pub realm: String,
    pub state: &'static str,
    pub last_code: Option<u16>,
    pub last_reason: String,
    /// Unix seconds of the next refresh, retry or first REGISTER.
    pub next_refresh: Option<i64>,
    pub failures: u32,
    pub expected_realm: Option<String>,
    pub offered_realm: Option<String>,
}

/// `uacreg.rows`' answer.
#[derive(Debug, Clone, Serialize)]
pub struct RowsPage {
    /// Rows matching the filter and search (all pages).
    pub total: usize,
    pub offset: usize,
    pub limit: usize,
    pub rows: Vec<RowLine>,
}

fn line_of(snapshot: &Snapshot, clock: &crate::driver::WallClock) -> RowLine {
    let r = &snapshot.record;
    RowLine {
        l_uuid: r.l_uuid().to_owned(),
        aor: format!("{}@{}", r.r_username(), r.r_domain()),
        registrar: registrar(r.auth_proxy(), r.r_domain()),
        realm: r.realm().to_owned(),
        state: snapshot.status.name(),
        last_code: snapshot.last_code,
        last_reason: snapshot.last_reason.clone(),
        next_refresh: snapshot.next_action.map(|at| clock.unix(at)),
        failures: snapshot.failures,
        expected_realm: snapshot.expected_realm.clone(),
        offered_realm: snapshot.offered_realm.clone(),
    }
}

fn line_of_invalid(bad: &InvalidRow) -> RowLine {
    let row = &bad.row;
    RowLine {
        l_uuid: row.l_uuid.clone(),
        aor: format!("{}@{}", row.r_username, row.r_domain),
        registrar: registrar(&row.auth_proxy, &row.r_domain),
        realm: row.realm.clone(),
        state: "invalid",
        last_code: None,
        last_reason: bad.error.to_string(),
        next_refresh: None,
        failures: 0,
        expected_realm: None,
        offered_realm: None,
    }
}

fn registrar(auth_proxy: &str, r_domain: &str) -> String {
    if auth_proxy.is_empty() {
        r_domain.to_owned()
    } else {
        auth_proxy.to_owned()
    }
}

/// How rows are compared for `sort`.
type RowOrder = fn(&RowLine, &RowLine) -> Ordering;

/// A `uacreg.rows` query whose values have been checked: every bound and name is known good.
pub struct CheckedQuery {
    query: RowsQuery,
    limit: usize,
    by: RowOrder,
    descending: bool,
}

impl RowsQuery {
    /// Refuses what no page can answer: a limit outside 1 to [`MAX_PAGE`], an over-long search,
    /// an unknown state, sort column or order.
    pub fn check(self) -> Result<CheckedQuery, ErrorObjectOwned> {
        let limit = self.limit.unwrap_or(50);
        if limit == 0 || limit > MAX_PAGE {
            return Err(fault(400, &format!("limit must be 1 to {MAX_PAGE}")));
        }
        if self.search.len() > MAX_SEARCH {
            return Err(fault(400, "search text too long"));
        }
        let state = self.state.as_str();
        if !state.is_empty() && state != "invalid" && !Status::ALL.iter().any(|s| s.name() == state)
        {
            return Err(fault(400, "unknown state"));
        }
        let by: RowOrder = match self.sort.as_str() {
            "" | "l_uuid" => |a, b| a.l_uuid.cmp(&b.l_uuid),
            "state" => |a, b| urgency(a.state).cmp(&urgency(b.state)),
            "aor" => |a, b| a.aor.cmp(&b.aor),
            "registrar" => |a, b| a.registrar.cmp(&b.registrar),
            "realm" => |a, b| a.realm.cmp(&b.realm),
            "code" => |a, b| a.last_code.cmp(&b.last_code),
            "next_refresh" => |a, b| a.next_refresh.cmp(&b.next_refresh),
            "failures" => |a, b| a.failures.cmp(&b.failures),
            _ => return Err(fault(400, "unknown sort column")),
        };
        let descending = match self.order.as_str() {
            "" | "asc" => false,
            "desc" => true,
            _ => return Err(fault(400, "order is asc or desc")),
        };
        Ok(CheckedQuery {
            query: self,
            limit,
            by,
            descending,
        })
    }
}

impl CheckedQuery {
    /// Every row in l_uuid order: the page the console opens on, which the registration
    /// table answers without copying the other rows.
    fn is_plain(&self) -> bool {
        let q = &self.query;
        q.state.is_empty()
            && q.search.trim().is_empty()
            && matches!(q.sort.as_str(), "" | "l_uuid")
            && !self.descending
    }
}

/// The matching rows of `lines`, sorted and cut to the page `query` asks for.
pub fn page(mut lines: Vec<RowLine>, query: &CheckedQuery) -> RowsPage {
    let CheckedQuery {
        query,
        limit,
        by,
        descending,
    } = query;
    let state = query.state.as_str();
    let needle = query.search.trim().to_lowercase();
    lines.retain(|line| {
        (state.is_empty() || line.state == state)
            && (needle.is_empty()
                || [&line.l_uuid, &line.aor, &line.registrar, &line.realm]
                    .iter()
                    .any(|text| contains_ignoring_case(text, &needle)))
    });
    lines.sort_by(|a, b| {
        let primary = if *descending { by(b, a) } else { by(a, b) };
        primary.then_with(|| a.l_uuid.cmp(&b.l_uuid))
    });
    let total = lines.len();
    let rows = lines.into_iter().skip(query.offset).take(*limit).collect();
    RowsPage {
        total,
        offset: query.offset,
        limit: *limit,
        rows,
    }
}

/// Where a state sorts (`sort: "state"`, ascending): the ones that need someone first, then
/// those on their way, then those switched off, registered last.
fn urgency(state: &str) -> u8 {
    match state {
        "invalid" => 0,
        "failed" => 1,
        "auth_failed" => 2,
        "realm_mismatch" => 3,
        "retry_wait" => 4,
        "pending" => 5,
        "registering" => 6,
        "authenticating" => 7,
        "unregistering" => 8,
        "unregistered" => 9,
        "disabled" => 10,
        _ => 11,
    }
}

/// `needle` (already lower case) in `text`, ASCII letters compared without case.
fn contains_ignoring_case(text: &str, needle: &str) -> bool {
    if needle.len() > text.len() {
        return false;
    }
    if text.is_ascii() && needle.is_ascii() {
        return text
            .as_bytes()
            .windows(needle.len())
            .any(|w| w.eq_ignore_ascii_case(needle.as_bytes()));
    }
    text.to_lowercase().contains(needle)
}

/// One remembered state change, as `uacreg.row` lists it.
#[derive(Debug, Serialize)]
struct Change {
    /// Unix seconds.
    at: i64,
    from: &'static str,
    to: &'static str,
    code: Option<u16>,
}

pub fn register(
    module: &mut RpcModule<Gateway>,
) -> Result<(), jsonrpsee::core::RegisterMethodError> {
    module.register_async_method("uacreg.overview", |_params, gw, _| async move {
        let counts = gw.driver.status_counts().await.map_err(internal)?;
        let invalid = gw.invalid_count();
        let total: usize = counts.values().sum::<usize>() + invalid;
        Ok::<_, ErrorObjectOwned>(serde_json::json!({
            "total": total,
            "states": counts,
            "invalid": invalid,
            "database": gw.database_health(),
            "cluster": gw.cluster_status(),
            "sample_every_secs": crate::gateway::history::SAMPLE_EVERY.as_secs(),
            "history": gw.history(),
            "now": now_unix(),
        }))
    })?;

    module.register_async_method("uacreg.rows", |params, gw, _| async move {
        let query = super::params::rows_query(&params)?;
        let clock = gw.driver.clock();
        let invalid_rows = gw.invalid_rows();
        // The page the console opens on straight from the table: only its 50 rows are copied,
        // not 100,000. Refused rows would have to be merged in l_uuid order, so with any of
        // them the general path below is taken.
        if query.is_plain() && invalid_rows.is_empty() {
            let (snapshots, total) = gw
                .driver
                .snapshot_page(query.query.offset, query.limit)
                .await
                .map_err(internal)?;
            return Ok(RowsPage {
                total,
                offset: query.query.offset,
                limit: query.limit,
                rows: snapshots.iter().map(|s| line_of(s, &clock)).collect(),
            });
        }
        let snapshots = gw.driver.snapshots().await.map_err(internal)?;
        let live = |l_uuid: &str| {
            snapshots
                .binary_search_by(|s| s.record.l_uuid().cmp(l_uuid))
                .is_ok()
        };
        let invalid: Vec<RowLine> = invalid_rows
            .iter()
            .filter(|bad| !live(&bad.row.l_uuid))
            .map(line_of_invalid)
            .collect();
        let mut lines: Vec<RowLine> = snapshots.iter().map(|s| line_of(s, &clock)).collect();
        drop(snapshots);
        lines.extend(invalid);
        Ok::<_, ErrorObjectOwned>(page(lines, &query))
    })?;

    module.register_async_method("uacreg.row", |params, gw, _| async move {
        let l_uuid = super::params::named_l_uuid(&params)?;
        let clock = gw.driver.clock();
        if let Some(snapshot) = gw
            .driver
            .find(Attribute::LUuid, &l_uuid)
            .await
            .map_err(internal)?
        {
            let changes: Vec<Change> = gw
                .driver
                .transitions(&l_uuid, HISTORY_SHOWN)
                .await
                .map_err(internal)?
                .into_iter()
                .map(|t| Change {
                    at: clock.unix(t.at),
                    from: t.from.name(),
                    to: t.to.name(),
                    code: t.code,
                })
                .collect();
            let mut answer = render(&gw, &snapshot);
            answer["registrar"] = serde_json::Value::from(registrar(
                snapshot.record.auth_proxy(),
                snapshot.record.r_domain(),
            ));
            answer["history"] = serde_json::to_value(changes).unwrap_or_default();
            return Ok::<_, ErrorObjectOwned>(answer);
        }
        let invalid = gw
            .invalid_rows()
            .into_iter()
            .find(|bad| bad.row.l_uuid == l_uuid);
        match invalid {
            Some(bad) => {
                let mut answer = serde_json::to_value(super::RecordView::from_invalid(
                    &bad.row,
                    bad.error.to_string(),
                    gw.show_secrets,
                ))
                .unwrap_or_default();
                answer["state"] = serde_json::Value::from("invalid");
                answer["history"] = serde_json::Value::Array(Vec::new());
                Ok(answer)
            }
            None => Err(fault(404, "Record not found")),
        }
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(l_uuid: &str, state: &'static str, realm: &str, failures: u32) -> RowLine {
        RowLine {
            l_uuid: l_uuid.into(),
            aor: format!("{l_uuid}@registrar.test"),
            registrar: "sip:127.0.0.1:5070".into(),
            realm: realm.into(),
            state,
            last_code: None,
            last_reason: String::new(),
            next_refresh: None,
            failures,
            expected_realm: None,
            offered_realm: None,
        }
    }

    fn table() -> Vec<RowLine> {
        (0..120)
            .map(|i| {
                let state = if i % 10 == 0 {
                    "realm_mismatch"
                } else {
                    "registered"
                };
                line(&format!("trunk{i:03}"), state, "registrar.test", i % 7)
            })
            .collect()
    }

    #[test]
    fn pages_filters_and_sorts() {
        let first = page(table(), &RowsQuery::default().check().unwrap());
        assert_eq!((first.total, first.rows.len()), (120, 50));
        assert_eq!(first.rows[0].l_uuid, "trunk000");
        let last = page(
            table(),
            &RowsQuery {
                offset: 100,
                ..RowsQuery::default()
            }
            .check()
            .unwrap(),
        );
        assert_eq!(last.rows.len(), 20);
        let mismatched = page(
            table(),
            &RowsQuery {
                state: "realm_mismatch".into(),
                ..RowsQuery::default()
            }
            .check()
            .unwrap(),
        );
        assert_eq!(mismatched.total, 12);
        assert!(mismatched.rows.iter().all(|r| r.state == "realm_mismatch"));
        let found = page(
            table(),
            &RowsQuery {
                search: "TRUNK042@REGISTRAR".into(),
                ..RowsQuery::default()
            }
            .check()
            .unwrap(),
        );
        assert_eq!(found.total, 1);
        assert_eq!(found.rows[0].l_uuid, "trunk042");
        let worst = page(
            table(),
            &RowsQuery {
                sort: "failures".into(),
                order: "desc".into(),
                limit: Some(3),
                ..RowsQuery::default()
            }
            .check()
            .unwrap(),
        );
        assert!(
            worst.rows.iter().all(|r| r.failures == 6),
            "{:?}",
            worst.rows
        );
        assert_eq!(worst.rows[0].l_uuid, "trunk006", "ties in l_uuid order");
    }

    #[test]
    fn bad_queries_are_refused() {
        for query in [
            RowsQuery {
                limit: Some(0),
                ..RowsQuery::default()
            },
            RowsQuery {
                limit: Some(MAX_PAGE + 1),
                ..RowsQuery::default()
            },
            RowsQuery {
                state: "nonsense".into(),
                ..RowsQuery::default()
            },
            RowsQuery {
                sort: "password".into(),
                ..RowsQuery::default()
            },
            RowsQuery {
                search: "x".repeat(MAX_SEARCH + 1),
                ..RowsQuery::default()
            },
        ] {
            let shown = format!("{query:?}");
            assert!(query.check().is_err(), "{shown}");
        }
    }
}

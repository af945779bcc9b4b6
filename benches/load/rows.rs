//! The rows every load run registers: one registration per row.
//!
//! Row `i` registers `user{i:07}@load.test` with password `pw{i:07}`, realm `load.test`, through
//! registrar socket `i % K` of the K the run started. The same rows are written for uacregd
//! and for Kamailio's uac module so the two are measured on identical input.
//!
//! A row is a function of its index, so a run keeps a [`RowSet`] (count, registrar addresses,
//! expires) and makes rows when it writes them, in batches: at 1,000,000 rows a vector of them
//! would hold some 400 MB in the tool, beside the gateway it measures.

use std::net::SocketAddr;

/// Domain and digest realm of every load row.
pub const DOMAIN: &str = "load.test";

/// Seconds a changed row's `expires` moves by, each time it is changed (Kamailio's gateway
/// uses the same step).
pub const EXPIRES_STEP: u32 = 60;

/// One uacreg row, in the columns both gateways read: the row type of the tests' Kamailio uac
/// harness, which writes Kamailio's table from it.
pub type LoadRow = crate::support::kamailio_uac::UacRow;

impl LoadRow {
    pub fn new(i: usize, registrar: SocketAddr, expires: u32) -> LoadRow {
        LoadRow {
            l_uuid: format!("load{i:07}"),
            l_username: format!("local{i:07}"),
            l_domain: "gw.load.test".into(),
            r_username: format!("user{i:07}"),
            r_domain: DOMAIN.into(),
            realm: DOMAIN.into(),
            auth_username: format!("user{i:07}"),
            auth_password: format!("pw{i:07}"),
            auth_proxy: format!("sip:{registrar}"),
            expires,
        }
    }
}

/// The rows of one run, made on demand.
#[derive(Clone, Debug)]
pub struct RowSet {
    count: usize,
    registrars: Vec<SocketAddr>,
    expires: u32,
}

impl RowSet {
    /// `count` rows spread over `registrars` (row `i` through `registrars[i % K]`).
    pub fn new(count: usize, registrars: Vec<SocketAddr>, expires: u32) -> RowSet {
        assert!(!registrars.is_empty(), "a row set needs a registrar");
        RowSet {
            count,
            registrars,
            expires,
        }
    }

    pub fn len(&self) -> usize {
        self.count
    }

    /// Row `i` as first written.
    pub fn row(&self, i: usize) -> LoadRow {
        LoadRow::new(i, self.registrars[i % self.registrars.len()], self.expires)
    }

    /// Rows `range`, as first written.
    pub fn rows(&self, range: std::ops::Range<usize>) -> Vec<LoadRow> {
        range.map(|i| self.row(i)).collect()
    }

    /// Row `i` after it was changed `times` times: its `expires` grown by that many steps, which
    /// changes the REGISTER it sends while the registrar keeps granting it.
    pub fn changed_row(&self, i: usize, times: u32) -> LoadRow {
        LoadRow {
            expires: self.expires + EXPIRES_STEP * times,
            ..self.row(i)
        }
    }
}

/// The users (name, password) registrar socket `socket` of `sockets` must accept for `count`
/// rows: those of rows `socket`, `socket + sockets`, ….
pub fn users(count: usize, socket: usize, sockets: usize) -> Vec<(String, String)> {
    (socket..count)
        .step_by(sockets.max(1))
        .map(|i| (format!("user{i:07}"), format!("pw{i:07}")))
        .collect()
}

/// The `share` of `count` rows changed by reload round `round` (0, 1, …): every `1 / share`-th
/// row, starting one further at each round, so that each round changes rows no earlier round
/// changed (until the rounds wrap around), and how many times each of those rows was changed
/// before (for [`RowSet::changed_row`]).
pub fn changed_by_round(count: usize, share: f64, round: usize) -> (Vec<usize>, u32) {
    let changed = ((count as f64 * share).round() as usize).clamp(1, count.max(1));
    let step = (count / changed).max(1);
    let offset = round % step;
    let earlier = u32::try_from(round / step).unwrap_or(u32::MAX);
    let indices = (offset..count).step_by(step).take(changed).collect();
    (indices, earlier)
}

//! The rows every load run registers: one registration per row, all through one registrar.
//!
//! Row `i` registers `user{i:07}@load.test` with password `pw{i:07}`, realm `load.test`, through
//! the registrar's loopback address. The same rows are written for uacregd and for Kamailio's
//! uac module so the two are measured on identical input.

use std::net::SocketAddr;

/// Domain and digest realm of every load row.
pub const DOMAIN: &str = "load.test";

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

/// The users (name, password) a registrar must accept for `count` rows.
pub fn users(count: usize) -> Vec<(String, String)> {
    (0..count)
        .map(|i| (format!("user{i:07}"), format!("pw{i:07}")))
        .collect()
}

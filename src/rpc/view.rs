//! Records rendered the way Kamailio's `uac.reg_dump` / `uac.reg_info` render them.
//!
//! Field names, order and JSON types follow what Kamailio 5.6's `uac` module answers, so scripts
//! written against Kamailio keep working; serde serialises struct fields in
//! declaration order, which is what fixes the key order. Our own fields come after Kamailio's.

use std::borrow::Cow;

use serde::Serialize;

use crate::driver::WallClock;
use crate::registration::{Record, Secret, Snapshot};
use crate::store::RawRow;

/// What a masked secret shows instead of its value.
pub const MASK: &str = "********";

/// One record in Kamailio's shape plus our extra fields.
#[derive(Clone, Debug, Serialize)]
pub struct RecordView<'a> {
    pub l_uuid: Cow<'a, str>,
    pub l_username: Cow<'a, str>,
    pub l_domain: Cow<'a, str>,
    pub r_username: Cow<'a, str>,
    pub r_domain: Cow<'a, str>,
    /// null when empty (Kamailio keeps an empty realm unset).
    pub realm: Option<Cow<'a, str>>,
    pub auth_username: Cow<'a, str>,
    pub auth_password: Cow<'a, str>,
    pub auth_ha1: Cow<'a, str>,
    pub auth_proxy: Cow<'a, str>,
    pub expires: i64,
    pub flags: i64,
    pub diff_expires: i64,
    pub timer_expires: i64,
    pub reg_init: i64,
    pub reg_delay: i64,
    pub contact_addr: Cow<'a, str>,
    pub socket: Option<Cow<'a, str>>,
    // ---- uacreg's own fields ----
    /// `registered`, `auth_failed`, `realm_mismatch`, `invalid`, …
    pub state: &'static str,
    pub last_code: Option<u16>,
    pub last_reason: Cow<'a, str>,
    pub expected_realm: Option<Cow<'a, str>>,
    pub offered_realm: Option<Cow<'a, str>>,
    /// Unix time of the next REGISTER (refresh or retry); null when none is scheduled.
    pub next_refresh: Option<i64>,
    /// Unix time the registrar's binding runs out; null without a binding.
    pub binding_expires: Option<i64>,
    /// Expiry the registrar granted in its last 200 OK.
    pub granted_expires: Option<u32>,
    /// Unix time of the last successful REGISTER; null if none yet.
    pub last_success: Option<i64>,
    /// Failed attempts since the last success.
    pub failures: u32,
    pub registers_sent: u64,
    /// Why the row is not used (state `invalid`); null otherwise.
    pub error: Option<Cow<'a, str>>,
}

fn show_secret<'a>(secret: Secret<&'a str>, show: bool, empty: &'static str) -> Cow<'a, str> {
    if secret.is_empty() {
        Cow::Borrowed(empty)
    } else if show {
        Cow::Borrowed(secret.expose_borrowed())
    } else {
        Cow::Borrowed(MASK)
    }
}

/// Kamailio's rendering of an unset optional column: JSON null.
fn null_if_empty(value: &str) -> Option<Cow<'_, str>> {
    (!value.is_empty()).then_some(Cow::Borrowed(value))
}

/// Kamailio's rendering of an empty string column that it prints as "none".
fn none_if_empty(value: &str) -> Cow<'_, str> {
    if value.is_empty() {
        Cow::Borrowed("none")
    } else {
        Cow::Borrowed(value)
    }
}

impl<'a> RecordView<'a> {
    /// A live registration. `now_unix` is the current wall-clock second.
    pub fn from_snapshot(
        s: &'a Snapshot,
        clock: &WallClock,
        now_unix: i64,
        show_secrets: bool,
    ) -> RecordView<'a> {
        let r: &'a Record = &s.record;
        let timer_at = match s.status {
            crate::registration::Status::Registered => s.binding_expires.or(s.next_action),
            _ => s.next_action.or(s.binding_expires),
        };
        let timer_expires = timer_at.map(|at| clock.unix(at)).unwrap_or(0);
        RecordView {
            l_uuid: Cow::Borrowed(r.l_uuid()),
            l_username: Cow::Borrowed(r.l_username()),
            l_domain: Cow::Borrowed(r.l_domain()),
            r_username: Cow::Borrowed(r.r_username()),
            r_domain: Cow::Borrowed(r.r_domain()),
            realm: null_if_empty(r.realm()),
            auth_username: Cow::Borrowed(r.auth_username()),
            auth_password: show_secret(r.auth_password(), show_secrets, "none"),
            auth_ha1: show_secret(r.auth_ha1(), show_secrets, "none"),
            auth_proxy: none_if_empty(r.auth_proxy()),
            expires: i64::from(r.expires),
            flags: i64::from(s.kamailio_flags()),
            diff_expires: if timer_expires == 0 {
                0
            } else {
                timer_expires - now_unix
            },
            timer_expires,
            reg_init: s.reg_init.map(|at| clock.unix(at)).unwrap_or(0),
            reg_delay: i64::from(r.reg_delay),
            contact_addr: none_if_empty(r.contact_addr()),
            socket: null_if_empty(r.socket()),
            state: s.status.name(),
            last_code: s.last_code,
            last_reason: Cow::Borrowed(&s.last_reason),
            expected_realm: s.expected_realm.as_deref().map(Cow::Borrowed),
            offered_realm: s.offered_realm.as_deref().map(Cow::Borrowed),
            next_refresh: s.next_action.map(|at| clock.unix(at)),
            binding_expires: s.binding_expires.map(|at| clock.unix(at)),
            granted_expires: s.granted_expires,
            last_success: s.last_registered.map(|at| clock.unix(at)),
            failures: s.failures,
            registers_sent: s.registers_sent,
            error: None,
        }
    }

    /// A row that failed validation: shown with its columns as stored and the reason.
    pub fn from_invalid(row: &'a RawRow, error: String, show_secrets: bool) -> RecordView<'a> {
        RecordView {
            l_uuid: Cow::Borrowed(&row.l_uuid),
            l_username: Cow::Borrowed(&row.l_username),
            l_domain: Cow::Borrowed(&row.l_domain),
            r_username: Cow::Borrowed(&row.r_username),
            r_domain: Cow::Borrowed(&row.r_domain),
            realm: null_if_empty(&row.realm),
            auth_username: Cow::Borrowed(&row.auth_username),
            auth_password: show_secret(row.auth_password.borrowed(), show_secrets, "none"),
            auth_ha1: show_secret(row.auth_ha1.borrowed(), show_secrets, "none"),
            auth_proxy: none_if_empty(&row.auth_proxy),
            expires: row.expires,
            flags: row.flags,
            diff_expires: 0,
            timer_expires: 0,
            reg_init: 0,
            reg_delay: row.reg_delay,
            contact_addr: none_if_empty(&row.contact_addr),
            socket: null_if_empty(&row.socket),
            state: "invalid",
            last_code: None,
            last_reason: Cow::Borrowed(""),
            expected_realm: None,
            offered_realm: None,
            next_refresh: None,
            binding_expires: None,
            granted_expires: None,
            last_success: None,
            failures: 0,
            registers_sent: 0,
            error: Some(Cow::Owned(error)),
        }
    }
}

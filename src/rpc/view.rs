//! Records rendered the way Kamailio's `uac.reg_dump` / `uac.reg_info` render them.
//!
//! Field names, order and JSON types follow what Kamailio 5.6's `uac` module answers, so scripts
//! written against Kamailio keep working; serde serialises struct fields in
//! declaration order, which is what fixes the key order. Our own fields come after Kamailio's.
//!
//! The same type reads an answer back (`uacregctl`, the demo): what the server writes and what the
//! tool reads are one definition.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::driver::WallClock;
use crate::registration::{Record, Secret, Snapshot};
use crate::store::{RawRow, StatusRow};

/// What a masked secret shows instead of its value.
pub const MASK: &str = "********";

/// The state of a row that failed validation (not a registration state: it never runs).
pub const INVALID: &str = "invalid";

/// `uacreg.cluster_dump`: a row no node has written a status for (yet, or `status_table` is
/// off).
pub const UNREPORTED: &str = "unreported";

/// One record in Kamailio's shape plus our extra fields. Built borrowing from a snapshot for
/// the server; read back owned (`RecordView<'static>`) by clients.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
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
    // Absent from Kamailio's answers: reading one of those leaves them empty.
    /// `registered`, `auth_failed`, `realm_mismatch`, `invalid`, …
    #[serde(default)]
    pub state: Cow<'a, str>,
    #[serde(default)]
    pub last_code: Option<u16>,
    #[serde(default)]
    pub last_reason: Cow<'a, str>,
    #[serde(default)]
    pub expected_realm: Option<Cow<'a, str>>,
    #[serde(default)]
    pub offered_realm: Option<Cow<'a, str>>,
    /// Unix time of the next REGISTER (refresh or retry); null when none is scheduled.
    #[serde(default)]
    pub next_refresh: Option<i64>,
    /// Unix time the registrar's binding runs out; null without a binding.
    #[serde(default)]
    pub binding_expires: Option<i64>,
    /// Expiry the registrar granted in its last 200 OK.
    #[serde(default)]
    pub granted_expires: Option<u32>,
    /// Unix time of the last successful REGISTER; null if none yet.
    #[serde(default)]
    pub last_success: Option<i64>,
    /// Failed attempts since the last success.
    #[serde(default)]
    pub failures: u32,
    #[serde(default)]
    pub registers_sent: u64,
    /// Why the row is not used (state `invalid`); null otherwise.
    #[serde(default)]
    pub error: Option<Cow<'a, str>>,
    /// Cluster mode: the node that runs the row (null in `uacreg.cluster_dump` while no node
    /// holds its shard). Absent on a single node, whose answers keep their usual shape.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<Cow<'a, str>>,
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

/// The address in the row's Contact, as Kamailio shows it: the row's `contact_addr`, or where
/// that is empty the one the gateway put there instead (Kamailio shows its `reg_contact_addr`).
fn contact_addr(r: &Record) -> Cow<'_, str> {
    if r.contact_addr().is_empty() {
        Cow::Borrowed(r.contact_host_port())
    } else {
        Cow::Borrowed(r.contact_addr())
    }
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
            flags: i64::from(super::kamailio::flags(s)),
            diff_expires: if timer_expires == 0 {
                0
            } else {
                timer_expires - now_unix
            },
            timer_expires,
            reg_init: s.reg_init.map(|at| clock.unix(at)).unwrap_or(0),
            reg_delay: i64::from(r.reg_delay),
            contact_addr: contact_addr(r),
            socket: null_if_empty(r.socket()),
            state: Cow::Borrowed(s.status.name()),
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
            node: None,
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
            state: Cow::Borrowed(INVALID),
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
            node: None,
        }
    }

    /// A row as the database tells it (`uacreg.cluster_dump`): its columns, the state the node
    /// running it last wrote to `uacreg_status` (`unreported` without one), and that node.
    pub fn from_stored(
        r: &'a Record,
        status: Option<&'a StatusRow>,
        node: Option<&'a str>,
        now_unix: i64,
        show_secrets: bool,
    ) -> RecordView<'a> {
        let set = |unix: i64| (unix > 0).then_some(unix);
        let state = status.map_or(UNREPORTED, |s| s.state.as_str());
        let next_refresh = status.and_then(|s| set(s.next_refresh));
        let binding_expires = status.and_then(|s| set(s.binding_expires));
        let timer_expires = if state == "registered" {
            binding_expires.or(next_refresh)
        } else {
            next_refresh.or(binding_expires)
        }
        .unwrap_or(0);
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
            flags: i64::from(super::kamailio::flags_of_state(state)),
            diff_expires: if timer_expires == 0 {
                0
            } else {
                timer_expires - now_unix
            },
            timer_expires,
            reg_init: 0,
            reg_delay: i64::from(r.reg_delay),
            contact_addr: contact_addr(r),
            socket: null_if_empty(r.socket()),
            state: Cow::Borrowed(state),
            last_code: status
                .and_then(|s| u16::try_from(s.last_code).ok())
                .filter(|&code| code > 0),
            last_reason: Cow::Borrowed(status.map_or("", |s| s.last_reason.as_str())),
            expected_realm: None,
            offered_realm: None,
            next_refresh,
            binding_expires,
            granted_expires: None,
            last_success: status.and_then(|s| set(s.last_success)),
            failures: status.map_or(0, |s| u32::try_from(s.failures).unwrap_or(0)),
            registers_sent: 0,
            error: None,
            node: node.map(Cow::Borrowed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A registered row as `uac.reg_info` shows it (figures from a real run).
    fn registered() -> RecordView<'static> {
        RecordView {
            l_uuid: "uuid000001".into(),
            l_username: "local000001".into(),
            l_domain: "gw.test".into(),
            r_username: "user000001".into(),
            r_domain: "registrar.test".into(),
            realm: Some("registrar.test".into()),
            auth_username: "user000001".into(),
            auth_password: MASK.into(),
            auth_ha1: "none".into(),
            auth_proxy: "sip:127.0.0.1:5070".into(),
            expires: 3600,
            flags: 20,
            diff_expires: 3599,
            timer_expires: 1_796_302_672,
            reg_init: 1_796_299_072,
            reg_delay: 0,
            contact_addr: "none".into(),
            socket: None,
            state: "registered".into(),
            last_code: Some(200),
            last_reason: "OK".into(),
            expected_realm: None,
            offered_realm: None,
            next_refresh: Some(1_796_302_239),
            binding_expires: Some(1_796_302_672),
            granted_expires: Some(3600),
            last_success: Some(1_796_299_072),
            failures: 0,
            registers_sent: 2,
            error: None,
            node: None,
        }
    }

    /// A row whose registrar offered another realm, then one that failed validation.
    fn troubled() -> [RecordView<'static>; 2] {
        let mismatch = RecordView {
            state: "realm_mismatch".into(),
            last_code: Some(401),
            last_reason: "Unauthorized".into(),
            expected_realm: Some("wrong.realm.test".into()),
            offered_realm: Some("registrar.test".into()),
            binding_expires: None,
            granted_expires: None,
            last_success: None,
            failures: 3,
            flags: 0,
            socket: Some("udp:192.0.2.1:5060".into()),
            ..registered()
        };
        let invalid = RecordView {
            r_domain: "".into(),
            realm: None,
            state: INVALID.into(),
            last_code: None,
            last_reason: "".into(),
            diff_expires: 0,
            timer_expires: 0,
            reg_init: 0,
            next_refresh: None,
            binding_expires: None,
            granted_expires: None,
            last_success: None,
            registers_sent: 0,
            error: Some("r_domain is empty".into()),
            ..registered()
        };
        [mismatch, invalid]
    }

    #[test]
    fn records_round_trip() {
        let [mismatch, invalid] = troubled();
        for view in [registered(), mismatch, invalid] {
            let text = serde_json::to_string(&view).expect("serialises");
            let back: RecordView<'static> = serde_json::from_str(&text).expect("deserialises");
            assert_eq!(back, view);
            // And writing it again gives the same text, keys in the same order.
            assert_eq!(serde_json::to_string(&back).expect("serialises"), text);
        }
    }

    /// Kamailio's fields first, in Kamailio's order, with Kamailio's JSON types.
    #[test]
    fn kamailio_keys_come_first_in_its_order() {
        let value = serde_json::to_value(registered()).expect("serialises");
        let object = value.as_object().expect("an object");
        let keys: Vec<&str> = object.keys().map(String::as_str).collect();
        assert_eq!(
            keys[..18],
            [
                "l_uuid",
                "l_username",
                "l_domain",
                "r_username",
                "r_domain",
                "realm",
                "auth_username",
                "auth_password",
                "auth_ha1",
                "auth_proxy",
                "expires",
                "flags",
                "diff_expires",
                "timer_expires",
                "reg_init",
                "reg_delay",
                "contact_addr",
                "socket"
            ]
        );
        assert_eq!(object["socket"], serde_json::Value::Null);
        assert_eq!(object["flags"], 20);
        assert_eq!(object["state"], "registered");
    }

    /// The view reads Kamailio 5.6's own `uac.reg_info` answer (figures from a real run): the
    /// Kamailio part is the same shape, uacreg's fields stay empty.
    #[test]
    fn reads_kamailios_own_answer() {
        let kamailio = serde_json::json!({
            "l_uuid": "uuid000000",
            "l_username": "local000000",
            "l_domain": "gw.test",
            "r_username": "user000000",
            "r_domain": "registrar.test",
            "realm": "registrar.test",
            "auth_username": "user000000",
            "auth_password": "pw-user000000",
            "auth_ha1": "none",
            "auth_proxy": "sip:127.0.0.1:5070",
            "expires": 3600,
            "flags": 20,
            "diff_expires": 3598,
            "timer_expires": 1_795_393_252,
            "reg_init": 1_795_389_652,
            "reg_delay": 0,
            "contact_addr": "127.0.0.1:5080",
            "socket": null
        });
        let view: RecordView<'static> =
            serde_json::from_value(kamailio.clone()).expect("Kamailio's shape");
        assert_eq!(view.timer_expires, 1_795_393_252);
        assert_eq!(view.contact_addr, "127.0.0.1:5080");
        assert_eq!(view.state, "");
        assert_eq!(view.last_code, None);
        // Written again, its first 18 keys are Kamailio's answer exactly.
        let written = serde_json::to_value(&view).expect("serialises");
        let written = written.as_object().expect("an object");
        let kamailio = kamailio.as_object().expect("an object");
        assert!(written.iter().zip(kamailio).all(|(a, b)| a == b));
    }

    /// A dump is a plain array of records; reading one back gives the records.
    #[test]
    fn a_dump_reads_back_as_records() {
        let [mismatch, invalid] = troubled();
        let dump = vec![registered(), mismatch, invalid];
        let text = serde_json::to_string(&dump).expect("serialises");
        let back: Vec<RecordView<'static>> = serde_json::from_str(&text).expect("deserialises");
        assert_eq!(back, dump);
    }
}

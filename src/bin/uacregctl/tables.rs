//! What uacregctl prints for the answers it understands.
//!
//! The tables are borderless and left-aligned like `kamcmd` and Asterisk print theirs, so they
//! read in a terminal and still `grep`/`awk` cleanly; no line ends in spaces. The small answers
//! are rendered with comfy-table, which measures (display width, not bytes) and aligns. The
//! record lists (`reg_dump`, `show registrations`) can have a million lines and are printed as
//! the records stream in ([`crate::dump_tables`]), laid out the same way.

use std::io;

use comfy_table::Table;
use comfy_table::presets::NOTHING;
use serde_json::Value;
use uacreg::registration::Status;
use uacreg::{
    RecordView,
    answer::{ReloadAnswer, StatusAnswer},
};

use crate::dump_tables::DumpTable;

/// A borderless table with `header`, if any, over `rows`.
fn borderless(header: Option<&[&str]>, rows: Vec<Vec<String>>) -> Table {
    let mut table = Table::new();
    table.load_preset(NOTHING);
    if let Some(header) = header {
        table.set_header(header.to_vec());
    }
    table.add_rows(rows);
    table
}

/// `gap` spaces after every column but the last (comfy-table pads both sides by default).
fn spaced(table: &mut Table, gap: u16) {
    let columns = table.column_iter().count();
    for (i, column) in table.column_iter_mut().enumerate() {
        let right = if i + 1 < columns { gap } else { 0 };
        column.set_padding((0, right));
    }
}

/// "55m00s" ahead, "-12s" past, "-" for none (Kamailio's 0 included).
pub fn relative(at: Option<i64>, now: i64) -> String {
    match at {
        Some(0) | None => "-".into(),
        Some(at) => {
            let d = at - now;
            let (n, later) = (d.unsigned_abs(), d >= 0);
            let amount = if n >= 3600 {
                format!("{}h{:02}m", n / 3600, (n % 3600) / 60)
            } else if n >= 60 {
                format!("{}m{:02}s", n / 60, n % 60)
            } else {
                format!("{n}s")
            };
            if later { amount } else { format!("-{amount}") }
        }
    }
}

pub fn code(record: &RecordView) -> String {
    record.last_code.map(|c| c.to_string()).unwrap_or_default()
}

pub fn aor(record: &RecordView) -> String {
    format!("{}@{}", record.r_username, record.r_domain)
}

/// Why a row is where it is: its validation error, the realms that differ, or the last reason.
pub fn detail(record: &RecordView) -> String {
    if let Some(error) = record.error.as_deref().filter(|e| !e.is_empty()) {
        return error.to_string();
    }
    if record.state == Status::RealmMismatch.name() {
        return format!(
            "expected realm \"{}\", offered \"{}\"",
            record.expected_realm.as_deref().unwrap_or_default(),
            record.offered_realm.as_deref().unwrap_or_default()
        );
    }
    record.last_reason.to_string()
}

/// A whole table printed by `print` into a string, without the last line's end.
fn printed(print: impl FnOnce(&mut Vec<u8>) -> io::Result<()>) -> String {
    let mut out = Vec::new();
    // Writing into a Vec does not fail.
    let _ = print(&mut out);
    let mut text = String::from_utf8_lossy(&out).into_owned();
    if text.ends_with('\n') {
        text.pop();
    }
    text
}

/// `reg_dump` of records already in hand (`watch`'s rows that are not registered).
pub fn records(rows: &[RecordView], now: i64) -> String {
    printed(|out| {
        let mut table = DumpTable::new(now, out);
        rows.iter().try_for_each(|r| table.push(r.clone()))?;
        table.finish().map(drop)
    })
}

/// `reg_info`: every field of the record under its name on the wire, one per line.
pub fn record(record: &RecordView) -> String {
    // The names come from the view's serde definition, so this lists exactly what the server
    // sends, in its order, without a second list of field names here.
    let fields = match serde_json::to_value(record) {
        Ok(Value::Object(fields)) => fields,
        _ => return String::new(),
    };
    let lines = fields
        .into_iter()
        .map(|(key, value)| {
            let shown = match value {
                Value::String(s) => s,
                Value::Null => "<null>".into(),
                other => other.to_string(),
            };
            vec![key, shown]
        })
        .collect();
    let mut table = borderless(None, lines);
    spaced(&mut table, 2);
    table.trim_fmt()
}

/// `show registrations` of records already in hand.
#[cfg(test)]
pub fn registrations(rows: &[RecordView], now: i64) -> String {
    printed(|out| {
        let mut table = crate::dump_tables::RegistrationsTable::new(now, out);
        rows.iter().try_for_each(|r| table.push(r.clone()))?;
        table.finish().map(drop)
    })
}

/// `cluster`: this node's line, then one line per node with its shards and last round.
pub fn cluster(status: &uacreg::answer::ClusterStatus, now_unix: i64) -> String {
    let mut out = format!(
        "node {}: {} of {} shards held (lease {} s); taken {} ({} rows), handed over {} ({} rows), \
         lost {}, lapsed {}",
        status.node_id,
        status.held.len(),
        status.shards,
        status.lease_secs,
        status.takeovers,
        status.rows_taken,
        status.handovers,
        status.rows_handed_over,
        status.shards_lost,
        status.shards_lapsed
    );
    if let Some(error) = &status.last_error {
        out.push_str(&format!("\nlast round failed: {error}"));
    }
    let rows = status
        .nodes
        .iter()
        .map(|node| {
            let state = match (node.live, node.leaving) {
                (_, true) => "leaving",
                (true, false) => "live",
                (false, false) => "gone",
            };
            vec![
                node.node_id.clone(),
                node.sip_addr.clone(),
                state.to_string(),
                node.shards.len().to_string(),
                relative(Some(node.seen_ms / 1000), now_unix),
            ]
        })
        .collect();
    let mut table = borderless(
        Some(&["NODE", "SIP", "STATE", "SHARDS", "LAST ROUND"]),
        rows,
    );
    spaced(&mut table, 2);
    out.push('\n');
    out.push_str(&table.trim_fmt());
    out
}

/// `reg_reload`: what changed, then each row that could not be used.
pub fn reload(answer: &ReloadAnswer) -> String {
    let mut out = format!(
        "loaded {} rows: {} added, {} changed, {} removed, {} unchanged",
        answer.loaded, answer.added, answer.changed, answer.removed, answer.unchanged
    );
    for bad in &answer.invalid {
        out.push_str(&format!(
            "\ninvalid row id {} l_uuid {:?}: {}",
            bad.id, bad.l_uuid, bad.error
        ));
    }
    out
}

/// The states that have registrations, with their counts, on one line.
pub fn state_counts(status: &StatusAnswer) -> String {
    let line: Vec<String> = status
        .registrations
        .iter()
        .filter(|(_, n)| **n != 0)
        .map(|(state, n)| format!("{state} {n}"))
        .collect();
    line.join("   ")
}

/// Whether a record is anything but registered (what `watch` lists).
pub fn troubled(record: &RecordView) -> bool {
    record.state != Status::Registered.name()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: i64 = 1_796_299_100;

    /// Records as `uac.reg_dump` sends them: one registered, one whose registrar wants another
    /// realm, one row that failed validation.
    fn dump() -> Vec<RecordView<'static>> {
        let registered = json!({
            "l_uuid": "uuid000001", "l_username": "local000001", "l_domain": "gw.test",
            "r_username": "user000001", "r_domain": "registrar.test", "realm": "registrar.test",
            "auth_username": "user000001", "auth_password": "********", "auth_ha1": "none",
            "auth_proxy": "sip:127.0.0.1:5070", "expires": 3600, "flags": 20,
            "diff_expires": 3572, "timer_expires": 1_796_302_672, "reg_init": 1_796_299_072,
            "reg_delay": 0, "contact_addr": "none", "socket": null,
            "state": "registered", "last_code": 200, "last_reason": "OK",
            "expected_realm": null, "offered_realm": null,
            "next_refresh": 1_796_302_239, "binding_expires": 1_796_302_672,
            "granted_expires": 3600, "last_success": 1_796_299_072, "failures": 0,
            "registers_sent": 2, "error": null
        });
        let mut mismatch = registered.clone();
        mismatch["l_uuid"] = json!("uuid000002");
        mismatch["r_username"] = json!("user000002");
        mismatch["auth_proxy"] = json!("none");
        mismatch["state"] = json!("realm_mismatch");
        mismatch["last_code"] = json!(401);
        mismatch["expected_realm"] = json!("wrong.realm.test");
        mismatch["offered_realm"] = json!("registrar.test");
        mismatch["binding_expires"] = json!(null);
        mismatch["next_refresh"] = json!(NOW - 12);
        let mut invalid = registered.clone();
        invalid["l_uuid"] = json!("uuid000003");
        invalid["r_username"] = json!("user000003");
        invalid["state"] = json!("invalid");
        invalid["last_code"] = json!(null);
        invalid["binding_expires"] = json!(null);
        invalid["next_refresh"] = json!(null);
        invalid["error"] = json!("expires is negative");
        serde_json::from_value(json!([registered, mismatch, invalid])).expect("records")
    }

    #[test]
    fn relative_times() {
        assert_eq!(relative(None, NOW), "-");
        assert_eq!(relative(Some(0), NOW), "-");
        assert_eq!(relative(Some(NOW + 42), NOW), "42s");
        assert_eq!(relative(Some(NOW + 3572), NOW), "59m32s");
        assert_eq!(relative(Some(NOW + 7260), NOW), "2h01m");
        assert_eq!(relative(Some(NOW - 75), NOW), "-1m15s");
    }

    #[test]
    fn reg_dump_table() {
        let expected = "\
L_UUID      AOR                        STATE           CODE  EXPIRES  NEXT    DETAIL
uuid000001  user000001@registrar.test  registered      200   59m32s   52m19s  OK
uuid000002  user000002@registrar.test  realm_mismatch  401   -        -12s    expected realm \"wrong.realm.test\", offered \"registrar.test\"
uuid000003  user000003@registrar.test  invalid               -        -       expires is negative
3 records: invalid 1, realm_mismatch 1, registered 1";
        assert_eq!(records(&dump(), NOW), expected);
    }

    #[test]
    fn show_registrations_table() {
        let expected = "\
<Registration>           <Server>                         <Username>                   <Status>        <Expires> <Code>
uuid000001               sip:127.0.0.1:5070               user000001@registrar.test    registered         59m32s    200
uuid000002               sip:registrar.test               user000002@registrar.test    realm_mismatch          -    401
uuid000003               sip:127.0.0.1:5070               user000003@registrar.test    invalid                 -
Objects found: 3";
        assert_eq!(registrations(&dump(), NOW), expected);
    }

    #[test]
    fn reg_info_lists_every_field_in_wire_order() {
        let shown = record(&dump()[0]);
        let lines: Vec<&str> = shown.lines().collect();
        assert_eq!(lines.len(), 30, "{shown}");
        assert_eq!(lines[0], "l_uuid           uuid000001");
        assert_eq!(lines[10], "expires          3600");
        assert_eq!(lines[17], "socket           <null>");
        assert_eq!(lines[29], "error            <null>");
        assert!(lines.iter().all(|l| !l.ends_with(' ')), "{shown}");
    }

    #[test]
    fn reload_figures_and_invalid_rows() {
        let answer = ReloadAnswer {
            added: 1,
            changed: 2,
            removed: 0,
            unchanged: 7,
            loaded: 11,
            invalid: vec![uacreg::answer::InvalidRowAnswer {
                id: 12,
                l_uuid: "uuid000003".into(),
                error: "expires is negative".into(),
            }],
        };
        assert_eq!(
            reload(&answer),
            "loaded 11 rows: 1 added, 2 changed, 0 removed, 7 unchanged\n\
             invalid row id 12 l_uuid \"uuid000003\": expires is negative"
        );
    }
}

//! The record lists — `reg_dump` and `show registrations` — printed as the records arrive.
//!
//! A million-row dump is never held: each table keeps its first block of records to measure
//! (crate::blocks) and, after that, only its counts: records per state and, in a cluster, per
//! node, printed under the table once the last record is in.

use std::collections::BTreeMap;
use std::io::{self, Write};

use uacreg::RecordView;

use crate::blocks::{Align, BLOCK_ROWS, BlockTable, Column, Layout};
use crate::tables::{aor, code, detail, relative};

/// Counts by name, in name order. The names come from the answer, so past [`Tally::NAMES`]
/// distinct ones the rest count under `other`.
#[derive(Default)]
struct Tally(BTreeMap<String, u64>);

impl Tally {
    const NAMES: usize = 100;

    fn add(&mut self, name: &str) {
        let name = if self.0.len() < Tally::NAMES || self.0.contains_key(name) {
            name
        } else {
            "other"
        };
        match self.0.get_mut(name) {
            Some(count) => *count += 1,
            None => {
                self.0.insert(name.to_string(), 1);
            }
        }
    }

    /// `name count, name count, …`
    fn line(&self) -> String {
        let counts: Vec<String> = self.0.iter().map(|(k, v)| format!("{k} {v}")).collect();
        counts.join(", ")
    }
}

/// `reg_dump`'s columns; NODE when the first block's records carry a node (a cluster).
struct DumpLayout {
    now: i64,
    clustered: bool,
}

impl Layout<RecordView<'_>> for DumpLayout {
    fn columns(&mut self, first_block: &[RecordView<'_>]) -> Vec<Column> {
        self.clustered = first_block.iter().any(|r| r.node.is_some());
        let mut header = vec![
            "L_UUID", "AOR", "STATE", "CODE", "EXPIRES", "NEXT", "DETAIL",
        ];
        if self.clustered {
            header.insert(3, "NODE");
        }
        header.into_iter().map(Column::left).collect()
    }

    fn cells(&self, r: &RecordView<'_>) -> Vec<String> {
        let mut line = vec![
            r.l_uuid.to_string(),
            aor(r),
            r.state.to_string(),
            code(r),
            relative(r.binding_expires, self.now),
            relative(r.next_refresh, self.now),
            detail(r),
        ];
        if self.clustered {
            line.insert(3, r.node.as_deref().unwrap_or("-").to_string());
        }
        line
    }
}

/// `reg_dump`: one line per record as the records arrive, then the count per state (and, in a
/// cluster, per node).
pub struct DumpTable<'a, W: Write> {
    table: BlockTable<RecordView<'a>, DumpLayout, W>,
    records: u64,
    states: Tally,
    nodes: Tally,
}

impl<'a, W: Write> DumpTable<'a, W> {
    pub fn new(now: i64, out: W) -> DumpTable<'a, W> {
        DumpTable::with_block_rows(now, out, BLOCK_ROWS)
    }

    fn with_block_rows(now: i64, out: W, block_rows: usize) -> DumpTable<'a, W> {
        let layout = DumpLayout {
            now,
            clustered: false,
        };
        DumpTable {
            table: BlockTable::with_block_rows(layout, 2, out, block_rows),
            records: 0,
            states: Tally::default(),
            nodes: Tally::default(),
        }
    }

    pub fn push(&mut self, record: RecordView<'a>) -> io::Result<()> {
        self.records += 1;
        self.states.add(&record.state);
        self.nodes.add(record.node.as_deref().unwrap_or("none"));
        self.table.push(record)
    }

    /// The rest of the table, then the counts.
    pub fn finish(self) -> io::Result<W> {
        let (layout, mut out) = self.table.finish()?;
        writeln!(out, "{} records: {}", self.records, self.states.line())?;
        if layout.clustered {
            writeln!(out, "by node: {}", self.nodes.line())?;
        }
        Ok(out)
    }
}

/// `show registrations`: Asterisk's `pjsip show registrations` layout.
struct RegistrationsLayout {
    now: i64,
}

impl Layout<RecordView<'_>> for RegistrationsLayout {
    fn columns(&mut self, _: &[RecordView<'_>]) -> Vec<Column> {
        // Asterisk's minimum widths; the expiry and the code are right-aligned.
        let column = |header, min_width, align| Column {
            header,
            min_width,
            align,
        };
        vec![
            column("<Registration>", 24, Align::Left),
            column("<Server>", 32, Align::Left),
            column("<Username>", 28, Align::Left),
            column("<Status>", 15, Align::Left),
            column("<Expires>", 9, Align::Right),
            column("<Code>", 4, Align::Right),
        ]
    }

    fn cells(&self, r: &RecordView<'_>) -> Vec<String> {
        let server = match &*r.auth_proxy {
            "" | "none" => format!("sip:{}", r.r_domain),
            proxy => proxy.to_string(),
        };
        vec![
            r.l_uuid.to_string(),
            server,
            aor(r),
            r.state.to_string(),
            relative(r.binding_expires, self.now),
            code(r),
        ]
    }
}

/// `show registrations` as the records arrive, then how many there were.
pub struct RegistrationsTable<'a, W: Write> {
    table: BlockTable<RecordView<'a>, RegistrationsLayout, W>,
    records: u64,
}

impl<'a, W: Write> RegistrationsTable<'a, W> {
    pub fn new(now: i64, out: W) -> RegistrationsTable<'a, W> {
        RegistrationsTable {
            table: BlockTable::with_block_rows(RegistrationsLayout { now }, 1, out, BLOCK_ROWS),
            records: 0,
        }
    }

    pub fn push(&mut self, record: RecordView<'a>) -> io::Result<()> {
        self.records += 1;
        self.table.push(record)
    }

    pub fn finish(self) -> io::Result<W> {
        let (_, mut out) = self.table.finish()?;
        writeln!(out, "Objects found: {}", self.records)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use comfy_table::presets::NOTHING;
    use comfy_table::{CellAlignment, ColumnConstraint, Table, Width};
    use serde_json::json;

    const NOW: i64 = 1_796_299_100;

    /// `n` records of assorted widths and states, `node` set from the `clustered_from`th on.
    fn records(n: usize, clustered_from: Option<usize>) -> Vec<RecordView<'static>> {
        let states = ["registered", "retry_wait", "auth_failed", "invalid"];
        (0..n)
            .map(|i| {
                let mut record = json!({
                    "l_uuid": format!("uuid{i:0w$}", w = 2 + i % 5),
                    "l_username": "l", "l_domain": "gw.test",
                    "r_username": if i % 7 == 3 { "ünïcödé-名前".to_string() } else { format!("user{i}") },
                    "r_domain": "registrar.test", "realm": null,
                    "auth_username": "u", "auth_password": "********", "auth_ha1": "none",
                    "auth_proxy": if i % 2 == 0 { "none" } else { "sip:127.0.0.1:5070" },
                    "expires": 3600, "flags": 20, "diff_expires": 0, "timer_expires": 0,
                    "reg_init": 0, "reg_delay": 0, "contact_addr": "none", "socket": null,
                    "state": states[i % states.len()],
                    "last_code": if i % 3 == 0 { json!(200) } else { json!(null) },
                    "last_reason": "x".repeat(i % 11),
                    "next_refresh": NOW + 37 * i as i64 - 100,
                    "binding_expires": if i % 4 == 0 { json!(null) } else { json!(NOW + 3600) },
                });
                if clustered_from.is_some_and(|from| i >= from) {
                    record["node"] = json!(format!("node-{}", i % 3));
                }
                serde_json::from_value(record).expect("a record")
            })
            .collect()
    }

    fn dump_table(rows: &[RecordView<'static>], block_rows: usize) -> String {
        let mut table = DumpTable::with_block_rows(NOW, Vec::new(), block_rows);
        for r in rows {
            table.push(r.clone()).expect("written");
        }
        String::from_utf8(table.finish().expect("written")).expect("text")
    }

    /// What `reg_dump` printed when comfy-table laid out the whole table.
    fn comfy_dump(rows: &[RecordView], now: i64) -> String {
        let clustered = rows.iter().any(|r| r.node.is_some());
        let mut header = vec![
            "L_UUID", "AOR", "STATE", "CODE", "EXPIRES", "NEXT", "DETAIL",
        ];
        if clustered {
            header.insert(3, "NODE");
        }
        let layout = DumpLayout { now, clustered };
        let mut table = Table::new();
        table.load_preset(NOTHING);
        table.set_header(header);
        table.add_rows(rows.iter().map(|r| layout.cells(r)));
        let columns = table.column_iter().count();
        for (i, column) in table.column_iter_mut().enumerate() {
            column.set_padding((0, if i + 1 < columns { 2 } else { 0 }));
        }
        let mut states: BTreeMap<&str, usize> = BTreeMap::new();
        let mut per_node: BTreeMap<&str, usize> = BTreeMap::new();
        for r in rows {
            *states.entry(&r.state).or_default() += 1;
            *per_node
                .entry(r.node.as_deref().unwrap_or("none"))
                .or_default() += 1;
        }
        let line = |counts: BTreeMap<&str, usize>| {
            let counts: Vec<String> = counts.iter().map(|(k, v)| format!("{k} {v}")).collect();
            counts.join(", ")
        };
        let mut text = format!(
            "{}\n{} records: {}\n",
            table.trim_fmt(),
            rows.len(),
            line(states)
        );
        if clustered {
            text.push_str(&format!("by node: {}\n", line(per_node)));
        }
        text
    }

    /// What `show registrations` printed when comfy-table laid it out.
    fn comfy_registrations(rows: &[RecordView], now: i64) -> String {
        let mut layout = RegistrationsLayout { now };
        let mut table = Table::new();
        table.load_preset(NOTHING);
        let columns = layout.columns(rows);
        table.set_header(columns.iter().map(|c| c.header).collect::<Vec<_>>());
        table.add_rows(rows.iter().map(|r| layout.cells(r)));
        let count = columns.len();
        for (i, column) in table.column_iter_mut().enumerate() {
            let gap = if i + 1 < count { 1 } else { 0 };
            column.set_padding((0, gap));
            let min = u16::try_from(columns[i].min_width).expect("narrow") + gap;
            column.set_constraint(ColumnConstraint::LowerBoundary(Width::Fixed(min)));
            if columns[i].align == Align::Right {
                column.set_cell_alignment(CellAlignment::Right);
            }
        }
        format!("{}\nObjects found: {}\n", table.trim_fmt(), rows.len())
    }

    #[test]
    fn a_dump_of_one_block_prints_as_comfy_table_printed_it() {
        for (n, clustered) in [
            (0, None),
            (1, None),
            (57, None),
            (40, Some(0)),
            (40, Some(39)),
        ] {
            let rows = records(n, clustered);
            let shown = dump_table(&rows, BLOCK_ROWS);
            assert_eq!(shown, comfy_dump(&rows, NOW), "{n} {clustered:?}");
            let mut table = RegistrationsTable::new(NOW, Vec::new());
            for r in &rows {
                table.push(r.clone()).expect("written");
            }
            let shown = String::from_utf8(table.finish().expect("written")).expect("text");
            assert_eq!(shown, comfy_registrations(&rows, NOW), "{n}");
        }
    }

    #[test]
    fn later_blocks_keep_the_first_blocks_widths() {
        let mut rows = records(30, None);
        // One l_uuid wider than any of the first block's.
        rows[20].l_uuid = "uuid-much-wider-than-the-rest".into();
        let shown = dump_table(&rows, 10);
        let lines: Vec<&str> = shown.lines().collect();
        assert_eq!(lines.len(), 1 + 30 + 1, "{shown}");
        // The first block is laid out as a table of its own …
        let first = comfy_dump(&rows[..10], NOW);
        assert_eq!(lines[..11], first.lines().take(11).collect::<Vec<_>>()[..]);
        // … and every later line as it would be in that table (these records are no wider
        // than the first block but in the last column, DETAIL, which has no padding) …
        for i in 10..30 {
            if i == 20 {
                continue;
            }
            let alone = comfy_dump(&[&rows[..10], &rows[i..=i]].concat(), NOW);
            assert_eq!(
                lines[1 + i],
                alone.lines().nth(11).expect("its line"),
                "{i}"
            );
        }
        // … but the wider value, which pushes the rest of its own line.
        let aor = format!("{}@{}", rows[20].r_username, rows[20].r_domain);
        assert!(
            lines[21].starts_with(&format!("uuid-much-wider-than-the-rest  {aor} ")),
            "{}",
            lines[21]
        );
        assert!(lines.iter().all(|l| !l.ends_with(' ')), "{shown}");
        // The counts cover every record, at the end.
        assert_eq!(
            lines[31],
            "30 records: auth_failed 7, invalid 7, registered 8, retry_wait 8"
        );
    }

    #[test]
    fn the_node_column_is_decided_by_the_first_block() {
        // Nodes only after the first block: no NODE column, no by-node line.
        let shown = dump_table(&records(12, Some(10)), 10);
        assert!(
            !shown.contains("NODE") && !shown.contains("by node"),
            "{shown}"
        );
        assert!(!shown.contains("node-"), "{shown}");
        // Nodes in the first block: the column, and the count over all records.
        let shown = dump_table(&records(12, Some(9)), 10);
        assert!(shown.lines().next().is_some_and(|h| h.contains("  NODE  ")));
        assert_eq!(
            shown.lines().last(),
            Some("by node: node-0 1, node-1 1, node-2 1, none 9")
        );
    }

    #[test]
    fn the_names_counted_are_bounded() {
        let mut tally = Tally::default();
        for i in 0..(Tally::NAMES + 50) {
            tally.add(&format!("state{i:04}"));
        }
        tally.add("state0000");
        assert_eq!(tally.0.len(), Tally::NAMES + 1);
        assert_eq!(tally.0["other"], 50);
        assert_eq!(tally.0["state0000"], 2);
    }
}

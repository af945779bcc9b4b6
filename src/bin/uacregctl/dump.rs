//! `reg_dump` (also `--cluster`), `show registrations` and their `--json`: printed while the
//! answer streams in.
//!
//! At a million rows the answer is about 700 MB. [`uacreg::StreamingClient`] hands out its
//! records one by one; each is printed (in blocks, for the tables) and dropped, so uacregctl's
//! memory does not grow with the table. The output is what uacregctl printed when it read the
//! answer whole: the same tables, and for `--json` the `result` array exactly as
//! `serde_json::to_string_pretty` wrote it.

use std::io::{self, BufWriter, Write};

use serde_json::Value;
use uacreg::{RecordView, StreamingCallError, StreamingClient};

use crate::dump_tables::{DumpTable, RegistrationsTable};

/// How the records are shown.
#[derive(Clone, Copy, Debug)]
pub enum DumpView {
    /// `reg_dump`'s table.
    Records,
    /// `show registrations`.
    Registrations,
    /// `--json`: the `result` array.
    Json,
}

/// Calls `method` (`uac.reg_dump` or `uacreg.cluster_dump`) and prints its records on stdout as
/// they arrive.
pub async fn print(
    client: &StreamingClient,
    method: &str,
    view: DumpView,
    now: i64,
) -> Result<(), StreamingCallError> {
    let mut out = BufWriter::with_capacity(64 * 1024, io::stdout().lock());
    let printed = match view {
        DumpView::Records => {
            let mut table = DumpTable::new(now, &mut out);
            client
                .for_each(method, &[], |r: RecordView<'static>| table.push(r))
                .await?;
            table.finish().map(drop)
        }
        DumpView::Registrations => {
            let mut table = RegistrationsTable::new(now, &mut out);
            client
                .for_each(method, &[], |r: RecordView<'static>| table.push(r))
                .await?;
            table.finish().map(drop)
        }
        DumpView::Json => {
            let mut array = PrettyArray::new(&mut out);
            client
                .for_each(method, &[], |v: Value| array.push(&v))
                .await?;
            array.finish()
        }
    };
    printed
        .and_then(|()| out.flush())
        .map_err(StreamingCallError::Handler)
}

/// A JSON array written element by element, laid out as `serde_json::to_string_pretty` lays
/// out the whole array: `[`, each element indented by two spaces, `]` on its own line, `[]`
/// when empty; then a line end (as `println!` added).
struct PrettyArray<W: Write> {
    out: W,
    elements: u64,
}

impl<W: Write> PrettyArray<W> {
    fn new(out: W) -> PrettyArray<W> {
        PrettyArray { out, elements: 0 }
    }

    fn push(&mut self, element: &Value) -> io::Result<()> {
        let text = serde_json::to_string_pretty(element)?;
        self.out.write_all(if self.elements == 0 {
            b"[\n  "
        } else {
            b",\n  "
        })?;
        // No string in pretty JSON holds a raw line end: each one starts a line to indent.
        for (i, line) in text.split('\n').enumerate() {
            if i > 0 {
                self.out.write_all(b"\n  ")?;
            }
            self.out.write_all(line.as_bytes())?;
        }
        self.elements += 1;
        Ok(())
    }

    fn finish(mut self) -> io::Result<()> {
        let end: &[u8] = if self.elements == 0 {
            b"[]\n"
        } else {
            b"\n]\n"
        };
        self.out.write_all(end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn streamed(elements: &[Value]) -> String {
        let mut out = Vec::new();
        let mut array = PrettyArray::new(&mut out);
        for element in elements {
            array.push(element).expect("written");
        }
        array.finish().expect("written");
        String::from_utf8(out).expect("text")
    }

    #[test]
    fn the_array_is_what_to_string_pretty_wrote() {
        let record = json!({
            "l_uuid": "uuid\n\"1\"", "socket": null, "expires": 3600, "flags": [],
            "nested": {"a": [1, {"b": {}}], "c": "ü"}, "empty": {}
        });
        for elements in [
            vec![],
            vec![record.clone()],
            vec![record.clone(), json!(1), json!("two"), json!([]), record],
        ] {
            let whole = serde_json::to_string_pretty(&elements).expect("written") + "\n";
            assert_eq!(streamed(&elements), whole);
        }
    }
}

//! Tables printed while their rows stream in.
//!
//! comfy-table measures every row before it prints the first, so a million-row `reg_dump`
//! would be held whole. A [`BlockTable`] measures only the first block of rows
//! ([`BLOCK_ROWS`]): it decides the columns and their widths from it, prints the header and
//! the block, then prints every later row as it comes with the same widths. A later value
//! wider than its column pushes the rest of its own line to the right and no other line.
//!
//! The lines are laid out as comfy-table lays out our borderless tables — widths by display
//! width (unicode-width, which comfy-table measures with too), a gap after every column but
//! the last, no spaces at the end of a line — so a table of one block prints exactly as it did
//! when comfy-table printed it (tables.rs's tests hold both outputs side by side).

use std::io::{self, Write};

use unicode_width::UnicodeWidthStr;

/// Rows measured before the first line is printed.
pub const BLOCK_ROWS: usize = 1000;

/// Where a cell's text sits in its column.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Align {
    Left,
    Right,
}

/// A column: its header and its narrowest width (Asterisk's layout has minimums).
#[derive(Clone, Debug)]
pub struct Column {
    pub header: &'static str,
    pub min_width: usize,
    pub align: Align,
}

impl Column {
    pub fn left(header: &'static str) -> Column {
        Column {
            header,
            min_width: 0,
            align: Align::Left,
        }
    }
}

/// What a table shows of its rows.
pub trait Layout<Row> {
    /// The columns, chosen once from the first block (`reg_dump`'s NODE column only when its
    /// records carry a node).
    fn columns(&mut self, first_block: &[Row]) -> Vec<Column>;
    /// One row's cells, one per column.
    fn cells(&self, row: &Row) -> Vec<String>;
}

/// The columns once fixed, with their widths.
struct Fixed {
    columns: Vec<Column>,
    widths: Vec<usize>,
}

/// A table written to `out` block by block; [`BlockTable::finish`] prints what is still held.
pub struct BlockTable<Row, L: Layout<Row>, W: Write> {
    layout: L,
    /// Spaces after every column but the last.
    gap: usize,
    block_rows: usize,
    first_block: Vec<Row>,
    fixed: Option<Fixed>,
    out: W,
    line: String,
}

impl<Row, L: Layout<Row>, W: Write> BlockTable<Row, L, W> {
    pub fn with_block_rows(
        layout: L,
        gap: usize,
        out: W,
        block_rows: usize,
    ) -> BlockTable<Row, L, W> {
        BlockTable {
            layout,
            gap,
            block_rows: block_rows.max(1),
            first_block: Vec::new(),
            fixed: None,
            out,
            line: String::new(),
        }
    }

    pub fn push(&mut self, row: Row) -> io::Result<()> {
        if self.fixed.is_some() {
            let cells = self.layout.cells(&row);
            return self.write_line(&cells);
        }
        self.first_block.push(row);
        if self.first_block.len() >= self.block_rows {
            self.print_first_block()?;
        }
        Ok(())
    }

    /// Prints the first block if it is still held (a table shorter than one block, or an
    /// empty one: its header); returns the layout and the output.
    pub fn finish(mut self) -> io::Result<(L, W)> {
        if self.fixed.is_none() {
            self.print_first_block()?;
        }
        Ok((self.layout, self.out))
    }

    fn print_first_block(&mut self) -> io::Result<()> {
        let block = std::mem::take(&mut self.first_block);
        let columns = self.layout.columns(&block);
        let rows: Vec<Vec<String>> = block.iter().map(|row| self.layout.cells(row)).collect();
        let mut widths: Vec<usize> = columns
            .iter()
            .map(|c| c.min_width.max(c.header.width()))
            .collect();
        for cells in &rows {
            for (width, cell) in widths.iter_mut().zip(cells) {
                *width = (*width).max(cell.width());
            }
        }
        let header: Vec<String> = columns.iter().map(|c| c.header.to_string()).collect();
        self.fixed = Some(Fixed { columns, widths });
        self.write_line(&header)?;
        for cells in &rows {
            self.write_line(cells)?;
        }
        Ok(())
    }

    fn write_line(&mut self, cells: &[String]) -> io::Result<()> {
        let Some(fixed) = &self.fixed else {
            return Ok(());
        };
        self.line.clear();
        let last = fixed.columns.len().saturating_sub(1);
        for (i, (column, &width)) in fixed.columns.iter().zip(&fixed.widths).enumerate() {
            let cell = cells.get(i).map_or("", String::as_str);
            let pad = width.saturating_sub(cell.width());
            if column.align == Align::Right {
                self.line.extend(std::iter::repeat_n(' ', pad));
            }
            self.line.push_str(cell);
            if column.align == Align::Left {
                self.line.extend(std::iter::repeat_n(' ', pad));
            }
            if i < last {
                self.line.extend(std::iter::repeat_n(' ', self.gap));
            }
        }
        let line = self.line.trim_end();
        self.out.write_all(line.as_bytes())?;
        self.out.write_all(b"\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows of (name, number); a third column only when the first block has a name over 3.
    struct Pairs;

    type Pair = (&'static str, u32);

    impl Layout<Pair> for Pairs {
        fn columns(&mut self, first_block: &[Pair]) -> Vec<Column> {
            let mut columns = vec![
                Column::left("NAME"),
                Column {
                    header: "N",
                    min_width: 3,
                    align: Align::Right,
                },
            ];
            if first_block.iter().any(|(name, _)| name.len() > 3) {
                columns.push(Column::left("LONG"));
            }
            columns
        }
        fn cells(&self, (name, n): &Pair) -> Vec<String> {
            vec![name.to_string(), n.to_string(), "x".repeat(name.len() / 4)]
        }
    }

    fn printed(rows: &[Pair], block_rows: usize) -> String {
        let mut table = BlockTable::with_block_rows(Pairs, 2, Vec::new(), block_rows);
        for row in rows {
            table.push(*row).expect("written");
        }
        let (_, out) = table.finish().expect("written");
        String::from_utf8(out).expect("text")
    }

    #[test]
    fn widths_come_from_the_first_block_and_stay() {
        let rows = [
            ("ab", 1),
            ("abcd", 22),
            ("é", 3),
            ("abcdefgh", 4444),
            ("z", 5),
        ];
        assert_eq!(
            printed(&rows, 3),
            "NAME    N  LONG\n\
             ab      1\n\
             abcd   22  x\n\
             é       3\n\
             abcdefgh  4444  xx\n\
             z       5\n"
        );
        // One block: measured on every row.
        assert_eq!(
            printed(&rows, 1000),
            "NAME         N  LONG\n\
             ab           1\n\
             abcd        22  x\n\
             é            3\n\
             abcdefgh  4444  xx\n\
             z            5\n"
        );
    }

    #[test]
    fn columns_are_chosen_from_the_first_block() {
        let rows = [("ab", 1), ("cd", 2), ("abcdefgh", 3)];
        assert_eq!(
            printed(&rows, 2),
            "NAME    N\nab      1\ncd      2\nabcdefgh    3\n"
        );
    }

    #[test]
    fn an_empty_table_is_its_header() {
        assert_eq!(printed(&[], 2), "NAME    N\n");
    }

    #[test]
    fn wide_characters_count_twice() {
        assert_eq!(
            printed(&[("日本", 1), ("ab", 2)], 9),
            "NAME    N  LONG\n日本    1  x\nab      2\n"
        );
    }
}

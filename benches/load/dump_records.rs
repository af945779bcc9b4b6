//! Counting the records of a `uac.reg_dump` answer while it streams in.
//!
//! Parsing the answer into `serde_json::Value` cost the tool several GB at 1,000,000 rows (a
//! 700 MB body, then a tree of values many times its size), and the time to build that tree
//! slowed the reading, so the server's answer looked slower than it was. The run only needs
//! how many records came back, so [`count`] scans the bytes once: it follows JSON strings (with
//! their escapes) and nesting, finds the top-level `"result"` member and counts the elements of
//! its array. Nothing is kept but a few flags and the first bytes (for the error message when
//! the answer is not a result).

use std::io::{self, Read};

/// Bytes of the answer kept for an error message.
const KEPT: usize = 200;

/// Reads `answer` to its end and returns how many elements the top-level `"result"` array held.
/// An answer without one (a JSON-RPC error, say) is an error quoting its start.
pub fn count(mut answer: impl Read) -> io::Result<usize> {
    let mut scan = Scan::default();
    let mut buf = vec![0u8; 64 * 1024];
    // Bounded: every round consumes bytes, and a read of 0 ends the answer.
    loop {
        let n = answer.read(&mut buf)?;
        if n == 0 {
            break;
        }
        scan.feed(&buf[..n]);
    }
    scan.finish()
}

/// The scanner's state between reads.
#[derive(Default)]
struct Scan {
    /// Objects and arrays open around the current byte.
    depth: usize,
    in_string: bool,
    escaped: bool,
    /// The string being read is a member name at depth 1 and so far a prefix of `result`.
    key_matches: bool,
    /// Bytes of that name so far.
    key_len: usize,
    /// The last complete string at depth 1 was `"result"`, and nothing but whitespace followed.
    after_result_key: bool,
    /// Its `:` was seen: the next value is the result.
    result_value_next: bool,
    /// The depth of the result array's elements, while the array is open.
    result_level: Option<usize>,
    /// The next byte at `result_level` starts an element (after `[` or `,`).
    expect_element: bool,
    /// Elements of the result array seen so far.
    elements: usize,
    /// The result array had begun and has closed.
    result_closed: bool,
    /// The result was there but not an array.
    result_not_array: bool,
    /// The first bytes, for messages.
    head: Vec<u8>,
}

impl Scan {
    fn feed(&mut self, bytes: &[u8]) {
        if self.head.len() < KEPT {
            let take = (KEPT - self.head.len()).min(bytes.len());
            self.head.extend_from_slice(&bytes[..take]);
        }
        for &b in bytes {
            if self.in_string {
                self.string_byte(b);
            } else if !b.is_ascii_whitespace() {
                self.structure_byte(b);
            }
        }
    }

    /// A byte outside strings and whitespace.
    fn structure_byte(&mut self, b: u8) {
        let at_elements = self.result_level == Some(self.depth);
        if at_elements && self.expect_element && b != b']' {
            self.elements += 1;
            self.expect_element = false;
        }
        let opens_result = std::mem::take(&mut self.result_value_next);
        if opens_result && b != b'[' {
            self.result_not_array = true;
        }
        let was_result_key = std::mem::take(&mut self.after_result_key);
        match b {
            b'"' => {
                self.in_string = true;
                self.key_matches = self.depth == 1;
                self.key_len = 0;
            }
            b':' if was_result_key => self.result_value_next = true,
            b'{' | b'[' => {
                self.depth += 1;
                if opens_result && b == b'[' {
                    self.result_level = Some(self.depth);
                    self.expect_element = true;
                }
            }
            b'}' | b']' => {
                if at_elements {
                    self.result_level = None;
                    self.result_closed = true;
                }
                self.depth = self.depth.saturating_sub(1);
            }
            b',' if at_elements => self.expect_element = true,
            _ => {}
        }
    }

    fn string_byte(&mut self, b: u8) {
        if self.escaped {
            self.escaped = false;
            self.key_matches = false;
            return;
        }
        match b {
            b'\\' => {
                self.escaped = true;
                self.key_matches = false;
            }
            b'"' => {
                self.in_string = false;
                self.after_result_key = self.key_matches && self.key_len == b"result".len();
            }
            _ => {
                if self.key_matches {
                    self.key_matches = b"result".get(self.key_len) == Some(&b);
                    self.key_len += 1;
                }
            }
        }
    }

    fn finish(self) -> io::Result<usize> {
        if self.result_closed && self.depth == 0 && !self.in_string {
            return Ok(self.elements);
        }
        let why = if self.result_not_array {
            "its result is not an array"
        } else if self.result_closed || self.result_level.is_some() {
            "it ends early"
        } else {
            "it has no result"
        };
        Err(io::Error::other(format!(
            "reg_dump answer: {why}: {}",
            String::from_utf8_lossy(&self.head)
        )))
    }
}

//! A JSON-RPC answer whose `result` is an array, parsed as its bytes arrive.
//!
//! `uac.reg_dump` of a million rows is about 700 MB of JSON. Read into one value, it costs the
//! reader memory in proportion to the table; this parser hands out each element of `result` as
//! soon as its last byte is in, and holds nothing but that element. It performs no I/O: the
//! caller feeds it the bytes in whatever pieces the network delivers ([`super::stream_client`]
//! does), so it is tested on answers cut into pieces of a few bytes.
//!
//! How: the extent of a JSON value can be found without parsing it. Outside strings, count the
//! brackets; back at depth zero, a `,` `:` `]` or `}` ends the value. Each piece found so — a
//! member's name, a member's value, an element of `result` — goes to serde_json whole, and
//! serde_json decides whether it is JSON. This file checks only the frame around the pieces:
//! `{`, `:` after a name, `,` or `}` after a value, `[` `,` `]` in `result`. A piece serde_json
//! accepts has balanced brackets and whole strings, so the extent found for it was right; one
//! it refuses ends the answer with an error. Every piece is bounded by [`MAX_PIECE_BYTES`]: the
//! bytes come from the network, and a piece without its end would otherwise grow without limit.

use std::fmt;

use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::Value;

/// The most bytes a piece of the answer (one element of `result`, one member's name or value,
/// the blanks before it included) may take. A record is under a kilobyte (its longest columns
/// are 255 characters); uacregctl holds a block of 1,000 of them, at most 64 MB even then.
pub const MAX_PIECE_BYTES: usize = 64 * 1024;

/// A JSON-RPC error object: the answer's `error` member.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct Fault {
    pub code: i64,
    pub message: String,
    #[serde(default)]
    pub data: Option<Value>,
}

/// `error CODE: MESSAGE`, then `: DATA` when `data` is a string: uacregd puts the cause there
/// (Kamailio's own text stays in `message`).
impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "error {}: {}", self.code, self.message)?;
        if let Some(Value::String(cause)) = &self.data {
            write!(f, ": {cause}")?;
        }
        Ok(())
    }
}

/// How a complete answer ended.
#[derive(Clone, Debug, PartialEq)]
pub enum AnswerEnd {
    /// `result` was an array of this many elements, each handed out.
    Result { elements: u64 },
    /// The answer was `error`.
    Fault(Fault),
}

/// Why the bytes are not a JSON-RPC answer with an array `result`.
#[derive(Debug, thiserror::Error)]
pub enum MalformedAnswer {
    #[error("unexpected {} {place}", shown(*.byte))]
    Unexpected { byte: u8, place: &'static str },
    #[error("a piece of the answer is longer than {MAX_PIECE_BYTES} bytes")]
    TooLarge,
    #[error("{what} is not valid JSON: {source}")]
    Json {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("an element of `result` is empty")]
    EmptyElement,
    #[error("`result` is not an array")]
    ResultNotAnArray,
    #[error("the answer has two `{0}` members")]
    Duplicate(&'static str),
    #[error("the answer is for request id {0}, not ours")]
    WrongId(String),
    #[error("the answer has neither `result` nor `error`")]
    NoOutcome,
    #[error("the answer ends before its closing `}}`")]
    EndedEarly,
}

/// A byte as an error message shows it: the character if printable, else its code.
fn shown(byte: u8) -> String {
    if byte.is_ascii_graphic() {
        format!("`{}`", byte as char)
    } else {
        format!("byte 0x{byte:02x}")
    }
}

/// JSON's insignificant whitespace.
fn blank(byte: u8) -> bool {
    matches!(byte, b' ' | b'\t' | b'\n' | b'\r')
}

/// The bytes of one JSON value, collected up to the byte that ends it.
#[derive(Default)]
struct Piece {
    bytes: Vec<u8>,
    /// Brackets open (outside strings).
    depth: u32,
    in_string: bool,
    /// The previous byte was a backslash inside a string.
    escaped: bool,
}

impl Piece {
    fn clear(&mut self) {
        self.bytes.clear();
        self.depth = 0;
        self.in_string = false;
        self.escaped = false;
    }

    /// Takes bytes of `input` up to the one that ends the value, which it leaves. Returns how
    /// many it took and, if the end is in `input`, the ending byte.
    fn take(&mut self, input: &[u8]) -> Result<(usize, Option<u8>), MalformedAnswer> {
        let mut end = None;
        let mut taken = input.len();
        for (i, &byte) in input.iter().enumerate() {
            if self.in_string {
                if self.escaped {
                    self.escaped = false;
                } else if byte == b'\\' {
                    self.escaped = true;
                } else if byte == b'"' {
                    self.in_string = false;
                }
                continue;
            }
            match byte {
                b'"' => self.in_string = true,
                b'[' | b'{' => self.depth = self.depth.saturating_add(1),
                b']' | b'}' if self.depth > 0 => self.depth -= 1,
                b',' | b':' if self.depth > 0 => {}
                b']' | b'}' | b',' | b':' => {
                    end = Some(byte);
                    taken = i;
                    break;
                }
                _ => {}
            }
        }
        if self.bytes.len() + taken > MAX_PIECE_BYTES {
            return Err(MalformedAnswer::TooLarge);
        }
        self.bytes.extend_from_slice(&input[..taken]);
        Ok((taken, end))
    }

    fn is_blank(&self) -> bool {
        self.bytes.iter().all(|&b| blank(b))
    }

    fn parse<'a, T: Deserialize<'a>>(&'a self, what: &'static str) -> Result<T, MalformedAnswer> {
        serde_json::from_slice(&self.bytes).map_err(|source| MalformedAnswer::Json { what, source })
    }
}

/// The members of the answer this parser looks at; any other is checked to be JSON and passed.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Member {
    Id,
    Error,
    Other,
}

/// Where in the answer the next byte falls.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Place {
    /// Before the answer's `{`.
    Opening,
    /// A member's name, up to its `:`.
    Name,
    /// A member's value, up to the `,` or `}` after it.
    Value(Member),
    /// Between `"result":` and its `[`.
    ResultOpening,
    /// Inside `result`: an element up to the `,` or `]` after it.
    Element,
    /// After `result`'s `]`: a `,` or the answer's `}`.
    AfterResult,
    /// After the answer's `}`: only blanks.
    Closed,
}

/// Parses one answer fed in pieces with [`ArrayAnswerParser::feed`]; [`ArrayAnswerParser::finish`]
/// once the bytes end.
pub struct ArrayAnswerParser {
    place: Place,
    piece: Piece,
    /// The piece holds an element already handed out: cleared on the next feed.
    handed_out: bool,
    /// The id of our request; the answer must carry it (or null, for a request it could not read).
    request_id: u64,
    members: u32,
    elements: u64,
    result_seen: bool,
    fault: Option<Fault>,
}

impl ArrayAnswerParser {
    pub fn new(request_id: u64) -> ArrayAnswerParser {
        ArrayAnswerParser {
            place: Place::Opening,
            piece: Piece::default(),
            handed_out: false,
            request_id,
            members: 0,
            elements: 0,
            result_seen: false,
            fault: None,
        }
    }

    /// Elements of `result` handed out so far.
    pub fn elements(&self) -> u64 {
        self.elements
    }

    /// Takes bytes from `input` until it ends or an element of `result` is complete. Returns how
    /// many bytes it took and the element's bytes, if one is complete: feed the rest of `input`
    /// again after handling it.
    pub fn feed(&mut self, input: &[u8]) -> Result<(usize, Option<&[u8]>), MalformedAnswer> {
        if self.handed_out {
            self.handed_out = false;
            self.piece.clear();
        }
        let mut used = 0;
        while used < input.len() {
            let rest = &input[used..];
            match self.place {
                Place::Name | Place::Value(_) | Place::Element => {
                    let (taken, end) = self.piece.take(rest)?;
                    used += taken;
                    let Some(end) = end else { continue };
                    used += 1;
                    if self.end_piece(end)? {
                        return Ok((used, Some(&self.piece.bytes)));
                    }
                }
                Place::Opening | Place::ResultOpening | Place::AfterResult | Place::Closed => {
                    used += 1;
                    if !blank(rest[0]) {
                        self.frame_byte(rest[0])?;
                    }
                }
            }
        }
        Ok((used, None))
    }

    /// The answer's bytes have ended: how the answer ended, or why it is not whole.
    pub fn finish(&self) -> Result<AnswerEnd, MalformedAnswer> {
        if self.place != Place::Closed {
            return Err(MalformedAnswer::EndedEarly);
        }
        match (&self.fault, self.result_seen) {
            (Some(fault), _) => Ok(AnswerEnd::Fault(fault.clone())),
            (None, true) => Ok(AnswerEnd::Result {
                elements: self.elements,
            }),
            (None, false) => Err(MalformedAnswer::NoOutcome),
        }
    }

    /// A byte of the frame between pieces (not a blank).
    fn frame_byte(&mut self, byte: u8) -> Result<(), MalformedAnswer> {
        let unexpected = |place| Err(MalformedAnswer::Unexpected { byte, place });
        match (self.place, byte) {
            (Place::Opening, b'{') => self.start(Place::Name),
            (Place::Opening, _) => return unexpected("where the answer's `{` should be"),
            (Place::ResultOpening, b'[') => self.start(Place::Element),
            (Place::ResultOpening, _) => return Err(MalformedAnswer::ResultNotAnArray),
            (Place::AfterResult, b',') => self.start(Place::Name),
            (Place::AfterResult, b'}') => self.place = Place::Closed,
            (Place::AfterResult, _) => return unexpected("after `result`"),
            _ => return unexpected("after the answer's end"),
        }
        Ok(())
    }

    fn start(&mut self, place: Place) {
        self.piece.clear();
        self.place = place;
    }

    /// The piece ended at `end`. True if it is an element to hand out.
    fn end_piece(&mut self, end: u8) -> Result<bool, MalformedAnswer> {
        let unexpected = |place| Err(MalformedAnswer::Unexpected { byte: end, place });
        match (self.place, end) {
            (Place::Name, b':') => {
                let name: String = self.piece.parse("a member's name")?;
                self.members += 1;
                match name.as_str() {
                    "result" if self.result_seen => {
                        return Err(MalformedAnswer::Duplicate("result"));
                    }
                    "result" => {
                        self.result_seen = true;
                        self.start(Place::ResultOpening);
                    }
                    "error" => self.start(Place::Value(Member::Error)),
                    "id" => self.start(Place::Value(Member::Id)),
                    _ => self.start(Place::Value(Member::Other)),
                }
            }
            // `{}`: no members (finish says what is missing).
            (Place::Name, b'}') if self.members == 0 && self.piece.is_blank() => {
                self.place = Place::Closed;
            }
            (Place::Name, _) => return unexpected("where a member's `:` should be"),
            (Place::Value(member), b',' | b'}') => {
                self.member_value(member)?;
                if end == b',' {
                    self.start(Place::Name);
                } else {
                    self.place = Place::Closed;
                }
            }
            (Place::Value(_), _) => return unexpected("after a member's value"),
            // `[]`
            (Place::Element, b']') if self.elements == 0 && self.piece.is_blank() => {
                self.place = Place::AfterResult;
            }
            (Place::Element, b',' | b']') => {
                if self.piece.is_blank() {
                    return Err(MalformedAnswer::EmptyElement);
                }
                if end == b']' {
                    self.place = Place::AfterResult;
                }
                self.elements += 1;
                self.handed_out = true;
                return Ok(true);
            }
            (Place::Element, _) => return unexpected("after an element of `result`"),
            _ => return unexpected("between members"),
        }
        Ok(false)
    }

    /// Checks the value of a member other than `result`, and keeps the fault.
    fn member_value(&mut self, member: Member) -> Result<(), MalformedAnswer> {
        match member {
            Member::Error => {
                if self.fault.is_some() {
                    return Err(MalformedAnswer::Duplicate("error"));
                }
                self.fault = Some(self.piece.parse("the `error` member")?);
            }
            Member::Id => {
                let id: Value = self.piece.parse("the `id` member")?;
                if !(id.is_null() || id.as_u64() == Some(self.request_id)) {
                    return Err(MalformedAnswer::WrongId(id.to_string()));
                }
            }
            Member::Other => {
                let _: IgnoredAny = self.piece.parse("a member's value")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `answer` to a parser in pieces of 1, 2, … 7 bytes, round and round; returns the
    /// elements handed out (as compact JSON) and how the answer ended.
    fn parse_in_pieces(answer: &str) -> (Vec<String>, Result<AnswerEnd, MalformedAnswer>) {
        let mut parser = ArrayAnswerParser::new(1);
        let mut elements = Vec::new();
        let mut bytes = answer.as_bytes();
        let mut size = 0;
        while !bytes.is_empty() {
            size = size % 7 + 1;
            let (mut piece, rest) = bytes.split_at(size.min(bytes.len()));
            bytes = rest;
            while !piece.is_empty() {
                let (used, element) = match parser.feed(piece) {
                    Ok(step) => step,
                    Err(err) => return (elements, Err(err)),
                };
                // What the caller does: serde_json decides whether an element is JSON.
                if let Some(element) = element {
                    match serde_json::from_slice::<Value>(element) {
                        Ok(value) => elements.push(value.to_string()),
                        Err(source) => {
                            let what = "an element";
                            return (elements, Err(MalformedAnswer::Json { what, source }));
                        }
                    }
                }
                piece = &piece[used..];
            }
        }
        (elements, parser.finish())
    }

    fn result(elements: u64) -> AnswerEnd {
        AnswerEnd::Result { elements }
    }

    #[test]
    fn elements_come_out_one_by_one_in_order() {
        let answer = r#"{"jsonrpc":"2.0","id":1,"result":[{"l_uuid":"a","n":[1,{"x":"]}"}]},
            {"l_uuid":"b\"},\\","n":[]} , {"l_uuid":"c"}]}"#;
        let (elements, end) = parse_in_pieces(answer);
        assert_eq!(
            elements,
            [
                r#"{"l_uuid":"a","n":[1,{"x":"]}"}]}"#,
                r#"{"l_uuid":"b\"},\\","n":[]}"#,
                r#"{"l_uuid":"c"}"#
            ]
        );
        assert_eq!(end.expect("whole"), result(3));
    }

    /// Every element is handed out as soon as its `,` or `]` is in, before the next byte.
    #[test]
    fn an_element_is_handed_out_as_soon_as_it_ends() {
        let mut parser = ArrayAnswerParser::new(1);
        let head = br#"{"id":1,"result":[{"a":1}"#;
        let (used, element) = parser.feed(head).expect("valid");
        assert_eq!((used, element), (head.len(), None));
        let (used, element) = parser.feed(b", {").expect("valid");
        assert_eq!((used, element), (1, Some(&br#"{"a":1}"#[..])));
        assert_eq!(parser.elements(), 1);
    }

    #[test]
    fn result_before_or_after_the_id_and_scalars() {
        for answer in [
            r#"{"result":[1,"two",null,true,{}],"id":1,"jsonrpc":"2.0"}"#,
            r#" { "jsonrpc" : "2.0" , "id" : 1 , "result" : [ 1 , "two" , null , true , { } ] }
            "#,
        ] {
            let (elements, end) = parse_in_pieces(answer);
            assert_eq!(elements, ["1", "\"two\"", "null", "true", "{}"], "{answer}");
            assert_eq!(end.expect("whole"), result(5), "{answer}");
        }
    }

    #[test]
    fn an_empty_result() {
        for answer in [
            r#"{"jsonrpc":"2.0","result":[],"id":1}"#,
            r#"{"result":[ ],"id":1}"#,
        ] {
            let (elements, end) = parse_in_pieces(answer);
            assert!(elements.is_empty());
            assert_eq!(end.expect("whole"), result(0));
        }
    }

    #[test]
    fn an_error_answer_is_a_fault() {
        let (elements, end) = parse_in_pieces(
            r#"{"jsonrpc":"2.0","error":{"code":404,"message":"Not found","data":"no l_uuid x"},"id":1}"#,
        );
        assert!(elements.is_empty());
        let AnswerEnd::Fault(fault) = end.expect("whole") else {
            panic!("not a fault")
        };
        assert_eq!(fault.to_string(), "error 404: Not found: no l_uuid x");
        // Data that is not a string is not shown; a request id of null is an answer to us.
        let (_, end) = parse_in_pieces(
            r#"{"id":null,"error":{"data":[1],"message":"Parse error","code":-32700}}"#,
        );
        let AnswerEnd::Fault(fault) = end.expect("whole") else {
            panic!("not a fault")
        };
        assert_eq!(fault.to_string(), "error -32700: Parse error");
    }

    #[test]
    fn a_truncated_answer_is_an_error_wherever_it_stops() {
        let answer = r#"{"jsonrpc":"2.0","id":1,"result":[{"a":"x,]}"},{"b":2}]}"#;
        for cut in 0..answer.len() {
            let (_, end) = parse_in_pieces(&answer[..cut]);
            assert!(
                matches!(end, Err(MalformedAnswer::EndedEarly)),
                "{cut}: {:?}",
                &answer[..cut]
            );
        }
        assert!(parse_in_pieces(answer).1.is_ok());
    }

    #[test]
    fn malformed_answers_are_errors() {
        for answer in [
            r#"[1]"#,
            r#"{"id":1,"result":[1,]}"#,
            r#"{"id":1,"result":[,1]}"#,
            r#"{"id":1,"result":[1 2]}"#,
            r#"{"id":1,"result":[{"a":1}}]}"#,
            r#"{"id":1,"result":[{"a":1]]}"#,
            r#"{"id":1,"result":{"a":1}}"#,
            r#"{"id":1,"result":[1],"result":[2]}"#,
            r#"{"id":1,"result":[1],}"#,
            r#"{"id":1,"result":[1]} x"#,
            r#"{"id":1,"result":[1]}}"#,
            r#"{"id":1 "result":[1]}"#,
            r#"{"id":,"result":[1]}"#,
            r#"{id:1,"result":[1]}"#,
            r#"{"id":2,"result":[1]}"#,
            r#"{"id":1}"#,
            r#"{}"#,
            r#"{"id":1,"error":{"message":"no code"}}"#,
            r#"{"id":1,"result":["a\"]}"#,
        ] {
            let (_, end) = parse_in_pieces(answer);
            assert!(end.is_err(), "accepted {answer}: {end:?}");
        }
    }

    #[test]
    fn a_piece_without_end_is_bounded() {
        let mut parser = ArrayAnswerParser::new(1);
        parser.feed(br#"{"id":1,"result":["#).expect("valid");
        let chunk = vec![b'7'; 64 * 1024];
        let mut fed = 0;
        let err = loop {
            match parser.feed(&chunk) {
                Ok(_) => fed += chunk.len(),
                Err(err) => break err,
            }
        };
        assert!(matches!(err, MalformedAnswer::TooLarge), "{err}");
        assert!(fed <= MAX_PIECE_BYTES, "{fed}");
    }
}

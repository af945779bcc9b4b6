//! BINRPC, the binary RPC encoding of Kamailio's `ctl` module, which `kamcmd` speaks: packets
//! in, packets out, no I/O.
//!
//! Why our own codec: no crate implements it, and it is small. A packet is a header (magic and
//! version, the packet type, then the body length and a cookie, each in as few bytes as they
//! need) and a body of records. Each record starts with one byte: a flag, a 3-bit size and a
//! 4-bit type. Integers take `size` bytes; strings and byte strings take `size` bytes, or, with
//! the flag set, `size` is the width of a separate length; arrays and structs are a start
//! record, their members, and an end record (flag set, size 0); a struct's members are a name
//! record (type AVP) followed by its value.
//!
//! Every length comes from the peer: each is checked against what is left of the packet before
//! it is used, a request may be at most [`MAX_REQUEST`] bytes, and nesting at most
//! [`MAX_DEPTH`] deep, so a hostile packet costs a bounded amount of work and never a panic.

use std::fmt;

/// Largest request accepted (header and body). `kamcmd` requests are a method name and a few
/// short parameters.
pub const MAX_REQUEST: usize = 64 * 1024;

/// Deepest nesting of arrays and structs accepted in a packet.
pub const MAX_DEPTH: usize = 16;

const MAGIC: u8 = 0xA;
const VERSION: u8 = 1;

const T_INT: u8 = 0;
const T_STR: u8 = 1;
const T_DOUBLE: u8 = 2;
const T_STRUCT: u8 = 3;
const T_ARRAY: u8 = 4;
const T_AVP: u8 = 5;
const T_BYTES: u8 = 6;

/// What a packet is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Request,
    Reply,
    Fault,
}

impl Kind {
    fn code(self) -> u8 {
        match self {
            Kind::Request => 0,
            Kind::Reply => 1,
            Kind::Fault => 3,
        }
    }
}

/// One value of a packet body.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Int(i32),
    Str(String),
    /// Kamailio sends doubles as fixed-point integers (thousandths).
    Double(f64),
    Bytes(Vec<u8>),
    Array(Vec<Value>),
    /// Named members, in order.
    Struct(Vec<(String, Value)>),
}

/// A whole packet.
#[derive(Clone, Debug, PartialEq)]
pub struct Packet {
    pub kind: Kind,
    /// Chosen by the client; the reply carries it back.
    pub cookie: u32,
    pub values: Vec<Value>,
}

/// Why bytes are not a packet.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BinrpcError {
    #[error("not a BINRPC packet (magic/version byte {0:#04x})")]
    NotBinrpc(u8),
    #[error("unknown packet type {0}")]
    UnknownKind(u8),
    #[error("packet of {0} bytes is over the limit of {1}")]
    TooLarge(usize, usize),
    #[error("packet ends inside a record")]
    Truncated,
    #[error("record of unknown type {0}")]
    UnknownType(u8),
    #[error("integer of {0} bytes")]
    IntTooWide(usize),
    #[error("end of {0} without its start")]
    UnexpectedEnd(&'static str),
    #[error("name outside a struct, or a struct member without a name")]
    MisplacedName,
    #[error("array or struct not closed")]
    Unclosed,
    #[error("nesting deeper than {MAX_DEPTH}")]
    TooDeep,
    #[error("string that is not UTF-8")]
    NotUtf8,
    #[error("body of {0} bytes does not fit a packet")]
    BodyTooLarge(usize),
}

/// How long the packet at the start of `bytes` is, once its header is complete: `Ok(None)`
/// means more bytes are needed. A stream reader calls this to frame packets.
pub fn packet_len(bytes: &[u8]) -> Result<Option<usize>, BinrpcError> {
    packet_len_within(bytes, MAX_REQUEST)
}

/// [`packet_len`] with another limit than a request's: a client reading a reply (a dump of
/// every row) chooses how much it takes.
pub fn packet_len_within(bytes: &[u8], limit: usize) -> Result<Option<usize>, BinrpcError> {
    let Some(&first) = bytes.first() else {
        return Ok(None);
    };
    if first != (MAGIC << 4) | VERSION {
        return Err(BinrpcError::NotBinrpc(first));
    }
    let Some(&second) = bytes.get(1) else {
        return Ok(None);
    };
    let len_len = usize::from((second >> 2) & 0x3) + 1;
    let cookie_len = usize::from(second & 0x3) + 1;
    let header = 2 + len_len + cookie_len;
    let Some(len_bytes) = bytes.get(2..2 + len_len) else {
        return Ok(None);
    };
    let body = len_bytes
        .iter()
        .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
    let total = header
        .checked_add(body)
        .ok_or(BinrpcError::TooLarge(usize::MAX, limit))?;
    if total > limit {
        return Err(BinrpcError::TooLarge(total, limit));
    }
    Ok(Some(total))
}

/// Decodes one whole packet (exactly `bytes`, as [`packet_len`] framed it).
pub fn decode(bytes: &[u8]) -> Result<Packet, BinrpcError> {
    decode_within(bytes, MAX_REQUEST)
}

/// [`decode`] with another size limit (see [`packet_len_within`]).
pub fn decode_within(bytes: &[u8], limit: usize) -> Result<Packet, BinrpcError> {
    let total = packet_len_within(bytes, limit)?.ok_or(BinrpcError::Truncated)?;
    if bytes.len() < total {
        return Err(BinrpcError::Truncated);
    }
    let second = bytes[1];
    let kind = match second >> 4 {
        0 => Kind::Request,
        1 => Kind::Reply,
        3 => Kind::Fault,
        other => return Err(BinrpcError::UnknownKind(other)),
    };
    let len_len = usize::from((second >> 2) & 0x3) + 1;
    let cookie_len = usize::from(second & 0x3) + 1;
    let header = 2 + len_len + cookie_len;
    let cookie = bytes[2 + len_len..header]
        .iter()
        .fold(0u32, |acc, b| (acc << 8) | u32::from(*b));
    let mut reader = Reader {
        body: &bytes[header..total],
        at: 0,
    };
    let mut values = Vec::new();
    while !reader.done() {
        match reader.record()? {
            Record::Value(value) => values.push(reader.complete(value, 0)?),
            Record::End(what) => return Err(BinrpcError::UnexpectedEnd(what)),
            Record::Name(_) => return Err(BinrpcError::MisplacedName),
        }
    }
    Ok(Packet {
        kind,
        cookie,
        values,
    })
}

/// One record as read: a value (arrays and structs still empty), an end, or a member name.
enum Record {
    Value(Value),
    End(&'static str),
    Name(String),
}

struct Reader<'a> {
    body: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn done(&self) -> bool {
        self.at >= self.body.len()
    }

    fn take(&mut self, n: usize) -> Result<&[u8], BinrpcError> {
        let end = self.at.checked_add(n).ok_or(BinrpcError::Truncated)?;
        let bytes = self.body.get(self.at..end).ok_or(BinrpcError::Truncated)?;
        self.at = end;
        Ok(bytes)
    }

    fn record(&mut self) -> Result<Record, BinrpcError> {
        let head = self.take(1)?[0];
        let flag = head & 0x80 != 0;
        let size = usize::from((head >> 4) & 0x7);
        let kind = head & 0x0f;
        if flag && size == 0 {
            return match kind {
                T_STRUCT => Ok(Record::End("struct")),
                T_ARRAY => Ok(Record::End("array")),
                other => Err(BinrpcError::UnknownType(other)),
            };
        }
        let len = if flag {
            let width = self.take(size)?;
            width
                .iter()
                .fold(0usize, |acc, b| (acc << 8) | usize::from(*b))
        } else {
            size
        };
        match kind {
            T_INT | T_DOUBLE => {
                if len > 4 {
                    return Err(BinrpcError::IntTooWide(len));
                }
                let raw = self
                    .take(len)?
                    .iter()
                    .fold(0u32, |acc, b| (acc << 8) | u32::from(*b));
                let int = i32::from_be_bytes(raw.to_be_bytes());
                Ok(Record::Value(if kind == T_INT {
                    Value::Int(int)
                } else {
                    Value::Double(f64::from(int) / 1000.0)
                }))
            }
            T_STR | T_AVP => {
                let raw = self.take(len)?;
                // The length counts a terminating NUL; a zero length is an empty string.
                let text = raw.strip_suffix(&[0]).unwrap_or(raw);
                let text = std::str::from_utf8(text)
                    .map_err(|_| BinrpcError::NotUtf8)?
                    .to_string();
                Ok(if kind == T_STR {
                    Record::Value(Value::Str(text))
                } else {
                    Record::Name(text)
                })
            }
            T_BYTES => Ok(Record::Value(Value::Bytes(self.take(len)?.to_vec()))),
            T_STRUCT => Ok(Record::Value(Value::Struct(Vec::new()))),
            T_ARRAY => Ok(Record::Value(Value::Array(Vec::new()))),
            other => Err(BinrpcError::UnknownType(other)),
        }
    }

    /// Fills an array or struct just started with its members, up to its end record.
    fn complete(&mut self, value: Value, depth: usize) -> Result<Value, BinrpcError> {
        match value {
            Value::Array(mut items) => {
                let depth = depth + 1;
                if depth > MAX_DEPTH {
                    return Err(BinrpcError::TooDeep);
                }
                loop {
                    if self.done() {
                        return Err(BinrpcError::Unclosed);
                    }
                    match self.record()? {
                        Record::End("array") => return Ok(Value::Array(items)),
                        Record::End(what) => return Err(BinrpcError::UnexpectedEnd(what)),
                        Record::Name(_) => return Err(BinrpcError::MisplacedName),
                        Record::Value(item) => items.push(self.complete(item, depth)?),
                    }
                }
            }
            Value::Struct(mut members) => {
                let depth = depth + 1;
                if depth > MAX_DEPTH {
                    return Err(BinrpcError::TooDeep);
                }
                loop {
                    if self.done() {
                        return Err(BinrpcError::Unclosed);
                    }
                    let name = match self.record()? {
                        Record::End("struct") => return Ok(Value::Struct(members)),
                        Record::End(what) => return Err(BinrpcError::UnexpectedEnd(what)),
                        Record::Value(_) => return Err(BinrpcError::MisplacedName),
                        Record::Name(name) => name,
                    };
                    if self.done() {
                        return Err(BinrpcError::Unclosed);
                    }
                    match self.record()? {
                        Record::Value(member) => {
                            members.push((name, self.complete(member, depth)?));
                        }
                        Record::End(what) => return Err(BinrpcError::UnexpectedEnd(what)),
                        Record::Name(_) => return Err(BinrpcError::MisplacedName),
                    }
                }
            }
            scalar => Ok(scalar),
        }
    }
}

/// Encodes a packet. Replies can be large (`uac.reg_dump` of every row); the only limit is
/// the four bytes the header has for the body length.
pub fn encode(packet: &Packet) -> Result<Vec<u8>, BinrpcError> {
    let mut body = Vec::new();
    for value in &packet.values {
        encode_value(&mut body, value);
    }
    let mut out = header(packet.kind, packet.cookie, body.len())?;
    out.extend_from_slice(&body);
    Ok(out)
}

/// The header of a packet whose body of `body_len` bytes is written separately (a reply too
/// large to hold in memory, spooled to a file value by value with [`encode_value`]).
pub fn header(kind: Kind, cookie: u32, body_len: usize) -> Result<Vec<u8>, BinrpcError> {
    let body_len = u32::try_from(body_len).map_err(|_| BinrpcError::BodyTooLarge(body_len))?;
    let len_bytes = minimal_be(body_len).max(1);
    let cookie_bytes = minimal_be(cookie).max(1);
    let mut out = Vec::with_capacity(2 + len_bytes + cookie_bytes);
    out.push((MAGIC << 4) | VERSION);
    // Both widths are 1..=4, so each fits its two bits after the minus one.
    out.push((kind.code() << 4) | (((len_bytes - 1) as u8) << 2) | ((cookie_bytes - 1) as u8));
    out.extend_from_slice(&body_len.to_be_bytes()[4 - len_bytes..]);
    out.extend_from_slice(&cookie.to_be_bytes()[4 - cookie_bytes..]);
    Ok(out)
}

/// Bytes needed for `value` big-endian without leading zeros (0 for zero).
fn minimal_be(value: u32) -> usize {
    4 - (value.leading_zeros() / 8) as usize
}

fn write_int(out: &mut Vec<u8>, kind: u8, value: i32) {
    let raw = u32::from_be_bytes(value.to_be_bytes());
    let width = minimal_be(raw);
    out.push(((width as u8) << 4) | kind);
    out.extend_from_slice(&raw.to_be_bytes()[4 - width..]);
}

fn write_text(out: &mut Vec<u8>, kind: u8, bytes: &[u8], nul: bool) {
    let len = bytes.len() + usize::from(nul);
    if len < 8 {
        out.push(((len as u8) << 4) | kind);
    } else {
        // Lengths over 4 GiB cannot be written; the body length check refuses such a packet.
        let len = u32::try_from(len).unwrap_or(u32::MAX);
        let width = minimal_be(len);
        out.push(0x80 | ((width as u8) << 4) | kind);
        out.extend_from_slice(&len.to_be_bytes()[4 - width..]);
    }
    out.extend_from_slice(bytes);
    if nul {
        out.push(0);
    }
}

/// Appends `value` as a packet body holds it.
pub fn encode_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Int(i) => write_int(out, T_INT, *i),
        Value::Double(f) => {
            let fixed = (f * 1000.0)
                .round()
                .clamp(f64::from(i32::MIN), f64::from(i32::MAX));
            write_int(out, T_DOUBLE, fixed as i32);
        }
        Value::Str(s) => write_text(out, T_STR, s.as_bytes(), true),
        Value::Bytes(b) => write_text(out, T_BYTES, b, false),
        Value::Array(items) => {
            out.push(T_ARRAY);
            for item in items {
                encode_value(out, item);
            }
            out.push(0x80 | T_ARRAY);
        }
        Value::Struct(members) => {
            out.push(T_STRUCT);
            for (name, member) in members {
                write_text(out, T_AVP, name.as_bytes(), true);
                encode_value(out, member);
            }
            out.push(0x80 | T_STRUCT);
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Int(i) => write!(f, "{i}"),
            Value::Double(d) => write!(f, "{d}"),
            Value::Str(s) => f.write_str(s),
            Value::Bytes(b) => write!(f, "{}", String::from_utf8_lossy(b)),
            Value::Array(items) => {
                f.write_str("[")?;
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{item}")?;
                }
                f.write_str("]")
            }
            Value::Struct(members) => {
                f.write_str("{")?;
                for (i, (name, member)) in members.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{name}: {member}")?;
                }
                f.write_str("}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The examples of Kamailio's binrpc.h, byte for byte.
    #[test]
    fn records_are_written_as_kamailio_writes_them() {
        let body = |value: Value| {
            let mut out = Vec::new();
            encode_value(&mut out, &value);
            out
        };
        assert_eq!(body(Value::Int(0x1234)), [0x20, 0x12, 0x34]);
        assert_eq!(body(Value::Int(7)), [0x10, 0x07]);
        assert_eq!(body(Value::Int(0)), [0x00]);
        assert_eq!(body(Value::Str("abcdef".into())), b"\x71abcdef\x00");
        assert_eq!(
            body(Value::Str("abcdefhij".into())),
            b"\x91\x0aabcdefhij\x00"
        );
        assert_eq!(body(Value::Str(String::new())), [0x11, 0x00]);
        assert_eq!(
            body(Value::Array(vec![Value::Int(1), Value::Int(2)])),
            [0x04, 0x10, 0x01, 0x10, 0x02, 0x84]
        );
        assert_eq!(
            body(Value::Struct(vec![
                ("intval".into(), Value::Int(3)),
                ("s".into(), Value::Str("abc".into())),
            ])),
            b"\x03\x75intval\x00\x10\x03\x25s\x00\x41abc\x00\x83"
        );
    }

    #[test]
    fn a_packet_round_trips_with_its_cookie() {
        let packet = Packet {
            kind: Kind::Reply,
            cookie: 0x1234_5678,
            values: vec![
                Value::Struct(vec![
                    ("l_uuid".into(), Value::Str("trunk1".into())),
                    ("flags".into(), Value::Int(20)),
                    ("diff_expires".into(), Value::Int(-5)),
                    ("nested".into(), Value::Array(vec![Value::Double(1.5)])),
                ]),
                Value::Str("x".repeat(70_000)),
            ],
        };
        let bytes = encode(&packet).unwrap();
        assert_eq!(bytes[0], 0xA1);
        // Decoding is for requests, which are bounded; a reply this large is refused.
        assert_eq!(
            packet_len(&bytes),
            Err(BinrpcError::TooLarge(bytes.len(), MAX_REQUEST))
        );
        let small = Packet {
            values: packet.values[..1].to_vec(),
            ..packet
        };
        let bytes = encode(&small).unwrap();
        assert_eq!(packet_len(&bytes), Ok(Some(bytes.len())));
        assert_eq!(decode(&bytes).unwrap(), small);
    }

    /// What `kamcmd uac.reg_info l_uuid 42` sends: the method, a string and an integer (kamcmd
    /// sends what looks like a number as one).
    #[test]
    fn a_kamcmd_request_decodes() {
        let request = Packet {
            kind: Kind::Request,
            cookie: 0x2a,
            values: vec![
                Value::Str("uac.reg_info".into()),
                Value::Str("l_uuid".into()),
                Value::Int(42),
            ],
        };
        let bytes = encode(&request).unwrap();
        assert_eq!(&bytes[..2], [0xA1, 0x00]);
        assert_eq!(decode(&bytes).unwrap(), request);
    }

    /// The fuzzer's seeds are what they say: a kamcmd request, and a struct holding an array.
    #[test]
    fn the_fuzz_seeds_decode() {
        let info = decode(include_bytes!("../../fuzz/seeds/binrpc/reg_info")).unwrap();
        assert_eq!(info.cookie, 0x1234);
        assert_eq!(
            info.values,
            [
                Value::Str("uac.reg_info".into()),
                Value::Str("l_uuid".into()),
                Value::Str("t1".into())
            ]
        );
        let nested = decode(include_bytes!("../../fuzz/seeds/binrpc/struct")).unwrap();
        assert_eq!(nested.kind, Kind::Reply);
        assert_eq!(
            nested.values,
            [Value::Struct(vec![
                ("a".into(), Value::Int(5)),
                ("b".into(), Value::Array(vec![Value::Int(0x1234)])),
            ])]
        );
        assert!(decode(include_bytes!("../../fuzz/seeds/binrpc/reg_dump")).is_ok());
    }

    #[test]
    fn hostile_packets_are_refused_not_trusted() {
        // A header promising more than the limit.
        assert_eq!(
            packet_len(&[0xA1, 0x0c, 0xff, 0xff, 0xff, 0xff, 0x01]),
            Err(BinrpcError::TooLarge(7 + 0xffff_ffff, MAX_REQUEST))
        );
        assert_eq!(packet_len(&[0x41]), Err(BinrpcError::NotBinrpc(0x41)));
        assert_eq!(packet_len(&[0xA1]), Ok(None));
        // A string whose length runs past the body.
        assert_eq!(
            decode(&[0xA1, 0x00, 0x03, 0x01, 0x91, 0x40, b'a']),
            Err(BinrpcError::Truncated)
        );
        // Integers wider than four bytes.
        assert_eq!(
            decode(&[0xA1, 0x00, 0x03, 0x01, 0x90, 0x08, 0x00]),
            Err(BinrpcError::IntTooWide(8))
        );
        assert_eq!(
            decode(&[0xA1, 0x00, 0x02, 0x01, 0x90, 0x05]),
            Err(BinrpcError::IntTooWide(5))
        );
        // Arrays nested past the limit, and never closed.
        let mut deep = vec![0xA1, 0x00, (MAX_DEPTH + 1) as u8, 0x01];
        deep.extend(std::iter::repeat_n(T_ARRAY, MAX_DEPTH + 1));
        assert_eq!(decode(&deep), Err(BinrpcError::TooDeep));
        assert_eq!(
            decode(&[0xA1, 0x00, 0x02, 0x01, T_ARRAY, 0x10]),
            Err(BinrpcError::Truncated)
        );
        assert_eq!(
            decode(&[0xA1, 0x00, 0x01, 0x01, 0x80 | T_ARRAY]),
            Err(BinrpcError::UnexpectedEnd("array"))
        );
        // A name outside a struct.
        assert_eq!(
            decode(&[0xA1, 0x00, 0x02, 0x01, 0x15, 0x00]),
            Err(BinrpcError::MisplacedName)
        );
    }
}

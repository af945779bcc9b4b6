//! The one reader of a SIP message head: start line, header lines (folding joined), and where
//! the body starts. The response parser, the stream framer and the relay all cut messages here,
//! so a message means the same to each of them.
//!
//! # The policy
//!
//! * **Line ends.** A line ends at LF; a CR right before it belongs to the line end. CRLF is the
//!   standard, bare LF is accepted from sloppy peers, but one head uses one of them: a line that
//!   ends otherwise than the start line is [`Defect::MixedLineEnds`], because a bare LF among
//!   CRLFs ends the head early for some parsers and not for others.
//! * **Bytes.** Header names are visible ASCII. The start line and header values may hold any
//!   other byte: text that is not UTF-8 (a Latin-1 display name) is read with U+FFFD in place
//!   of what cannot be decoded, and copied byte for byte by whoever forwards it. A control
//!   character other than HTAB (a bare CR, a NUL, ESC …) is [`Defect::ControlCharacter`].
//! * **Folding.** A line starting with SP or HTAB continues the header before it (RFC 3261
//!   §7.3.1); read as text, the pieces are joined with one space.
//! * **Empty lines** before the start line are skipped (RFC 3261 §7.5); the first empty line
//!   after it ends the head.
//! * **Limits** ([`super::limits`]): a head longer than [`MAX_MESSAGE`] is not read at all; the
//!   header lines beyond [`MAX_HEADERS`] are [`Defect::TooManyHeaders`].
//!
//! A defect does not stop the scan: the relay still needs Via, From and Call-ID to answer 400.
//! Every defect but one makes a head unreadable for everyone. A control character is the
//! exception: the head still reads one way to us (a reason phrase with an ESC in it is cleaned
//! and kept), but a forwarder must refuse it, since another parser may cut the line at a bare CR
//! or end the text at a NUL. See [`Head::unreadable`] and [`Head::is_clean`].

use std::borrow::Cow;

use super::limits::{MAX_HEADERS, MAX_MESSAGE};

/// One header as it lies in the message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// Lowercase, expanded from the compact form; borrowed from a table for the names SIP
    /// messages carry, so reading a head allocates nothing per common header.
    pub name: Cow<'static, str>,
    /// From the first byte of the name to after the line end of its last (folded) line.
    pub start: usize,
    pub end: usize,
    /// After the colon, up to (not including) the line end of the last line; not trimmed.
    pub value_start: usize,
    pub value_end: usize,
}

/// Something in a head that a strict reader does not accept; see the module documentation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Defect {
    /// A header line without a colon, or whose name is empty or not visible ASCII.
    BadHeaderLine,
    /// A folded continuation line before the first header.
    ContinuationFirst,
    /// More than [`MAX_HEADERS`] header lines.
    TooManyHeaders,
    /// Lines that do not all end like the start line (CRLF or bare LF).
    MixedLineEnds,
    /// A control character other than HTAB in a line.
    ControlCharacter,
}

impl Defect {
    const ALL: [Defect; 5] = [
        Defect::BadHeaderLine,
        Defect::ContinuationFirst,
        Defect::TooManyHeaders,
        Defect::MixedLineEnds,
        Defect::ControlCharacter,
    ];

    fn bit(self) -> u8 {
        1 << (self as u8)
    }

    /// What is wrong, for an error message.
    pub fn reason(self) -> &'static str {
        match self {
            Defect::BadHeaderLine => "header line without a colon or with a bad name",
            Defect::ContinuationFirst => "continuation line before any header",
            Defect::TooManyHeaders => "too many headers",
            Defect::MixedLineEnds => "lines end both in CRLF and in bare LF",
            Defect::ControlCharacter => "control character in a line",
        }
    }

    /// Whether a head with this defect still reads one way (to us).
    fn is_readable(self) -> bool {
        self == Defect::ControlCharacter
    }
}

/// Why a head cannot be read at all.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    #[error("empty message")]
    Empty,
    #[error("message head too large")]
    TooLarge,
}

/// A message cut into start line, headers and body, with byte positions so that it can be
/// copied with a few edits.
#[derive(Debug)]
pub struct Head<'a> {
    data: &'a [u8],
    /// The start line as text (see the policy on bytes).
    pub start_line: Cow<'a, str>,
    pub headers: Vec<Header>,
    /// Where the empty line that ends the head starts; `None` when there is none.
    pub head_end: Option<usize>,
    /// Where the body starts (after the empty line), or the end of the data.
    pub body_start: usize,
    /// The line end of the start line, for lines a forwarder adds or rewrites.
    pub line_end: &'static str,
    /// [`Defect`]s found, one bit each.
    defects: u8,
}

/// Whether lines that end in `crlf_ends` CRLFs (the rest in bare LFs, the last maybe in
/// nothing) hold a byte no line of a head may hold: a control character other than HTAB, or a
/// CR that does not end a line. One pass over all the lines, not one per line: every response
/// comes through here, and nearly none holds such a byte.
fn has_control(lines: &[u8], crlf_ends: usize) -> bool {
    // Without an early exit, and folding into a byte, the loop has no branch and checks many
    // bytes per instruction (two counters in the fold made it ten times slower).
    let others = lines.iter().fold(0u8, |found, &b| {
        found | u8::from((b < 0x20) & (b != b'\t') & (b != b'\n') & (b != b'\r') | (b == 0x7f))
    });
    others != 0 || memchr::memchr_iter(b'\r', lines).count() != crlf_ends
}

impl<'a> Head<'a> {
    /// Reads the head at the start of `data` by the policy of this module.
    pub fn scan(data: &'a [u8]) -> Result<Head<'a>, HeadError> {
        Head::scan_with(data, MAX_HEADERS)
    }

    /// The same, keeping every header line however many there are: for the stream framer,
    /// which must find a Content-Length wherever it is to stay in step with the stream (the
    /// message it cuts out is then judged by whoever reads it, under [`MAX_HEADERS`]).
    pub fn scan_all_headers(data: &'a [u8]) -> Result<Head<'a>, HeadError> {
        Head::scan_with(data, usize::MAX)
    }

    fn scan_with(data: &'a [u8], max_headers: usize) -> Result<Head<'a>, HeadError> {
        let mut pos = 0;
        while data[pos..].starts_with(b"\r\n") || data[pos..].starts_with(b"\n") {
            pos += if data[pos] == b'\r' { 2 } else { 1 };
        }
        let (line, ends_at, next) = next_line(data, pos).ok_or(HeadError::Empty)?;
        if line.is_empty() {
            return Err(HeadError::Empty);
        }
        if next > MAX_MESSAGE {
            return Err(HeadError::TooLarge);
        }
        let line_end = if data[ends_at..next].starts_with(b"\r\n") {
            "\r\n"
        } else {
            "\n"
        };
        let mut head = Head {
            data,
            start_line: text(line),
            headers: Vec::with_capacity(16),
            head_end: None,
            body_start: data.len(),
            line_end,
            defects: 0,
        };
        // Where the lines read start and end, and how many of them end in CRLF: what
        // has_control needs once the lines are known.
        let (lines_start, mut lines_end) = (pos, next);
        let mut crlf_ends = usize::from(next - ends_at == 2);
        pos = next;
        while let Some((line, ends_at, next)) = next_line(data, pos) {
            if pos > MAX_MESSAGE {
                return Err(HeadError::TooLarge);
            }
            lines_end = next;
            crlf_ends += usize::from(next - ends_at == 2);
            if ends_at < next && &data[ends_at..next] != line_end.as_bytes() {
                head.flag(Defect::MixedLineEnds);
            }
            if line.is_empty() {
                if ends_at < next {
                    head.head_end = Some(pos);
                    head.body_start = next;
                }
                break;
            }
            if line[0] == b' ' || line[0] == b'\t' {
                match head.headers.last_mut() {
                    Some(last) => {
                        last.value_end = ends_at;
                        last.end = next;
                    }
                    None => head.flag(Defect::ContinuationFirst),
                }
            } else {
                head.header_line(line, pos, ends_at, next, max_headers);
            }
            pos = next;
        }
        if has_control(&data[lines_start..lines_end], crlf_ends) {
            head.flag(Defect::ControlCharacter);
        }
        Ok(head)
    }

    fn header_line(
        &mut self,
        line: &[u8],
        pos: usize,
        ends_at: usize,
        next: usize,
        max_headers: usize,
    ) {
        let Some(colon) = memchr::memchr(b':', line) else {
            self.flag(Defect::BadHeaderLine);
            return;
        };
        let name = line[..colon].trim_ascii();
        if name.is_empty() || !name.iter().all(u8::is_ascii_graphic) {
            self.flag(Defect::BadHeaderLine);
        } else if self.headers.len() >= max_headers {
            self.flag(Defect::TooManyHeaders);
        } else {
            self.headers.push(Header {
                name: expand_compact(name),
                start: pos,
                end: next,
                value_start: pos + colon + 1,
                value_end: ends_at,
            });
        }
    }

    fn flag(&mut self, defect: Defect) {
        self.defects |= defect.bit();
    }

    /// The message the head was read from.
    pub fn data(&self) -> &'a [u8] {
        self.data
    }

    /// Whether `defect` was found.
    pub fn has(&self, defect: Defect) -> bool {
        self.defects & defect.bit() != 0
    }

    /// No defect at all, and an empty line ends the head: what a forwarder may pass on.
    pub fn is_clean(&self) -> bool {
        self.defects == 0 && self.head_end.is_some()
    }

    /// The first defect that keeps the head from being read one way, if any.
    pub fn unreadable(&self) -> Option<Defect> {
        Defect::ALL
            .into_iter()
            .find(|d| !d.is_readable() && self.has(*d))
    }

    /// Every header of that (lowercase, long-form) name, in order.
    pub fn all<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'s Header> + 's {
        self.headers.iter().filter(move |h| h.name == name)
    }

    /// A header value as text: folded lines joined with one space, trimmed.
    pub fn value(&self, header: &Header) -> Cow<'a, str> {
        unfold(&self.data[header.value_start..header.value_end])
    }

    /// Every value of that header, as text, in order.
    pub fn values<'s>(&'s self, name: &'s str) -> impl Iterator<Item = String> + 's {
        self.all(name).map(|h| self.value(h).into_owned())
    }

    /// The first value of that header.
    pub fn first(&self, name: &str) -> Option<String> {
        self.values(name).next()
    }

    /// The only value of a header that must not repeat; `None` if absent or repeated.
    pub fn single(&self, name: &str) -> Option<String> {
        let mut all = self.all(name);
        let first = all.next()?;
        match all.next() {
            Some(_) => None,
            None => Some(self.value(first).into_owned()),
        }
    }
}

/// Long header names for the compact forms of RFC 3261 §7.3.3 (and a few extensions), and
/// every name lowercased.
pub fn expand_compact(name: &[u8]) -> Cow<'static, str> {
    let full = match name {
        b"i" | b"I" => "call-id",
        b"m" | b"M" => "contact",
        b"v" | b"V" => "via",
        b"f" | b"F" => "from",
        b"t" | b"T" => "to",
        b"l" | b"L" => "content-length",
        b"c" | b"C" => "content-type",
        b"e" | b"E" => "content-encoding",
        b"k" | b"K" => "supported",
        b"s" | b"S" => "subject",
        _ => {
            return match lowercase_common(name) {
                Some(common) => Cow::Borrowed(common),
                // A name is visible ASCII (the scanner refuses others), so nothing is replaced.
                None => Cow::Owned(String::from_utf8_lossy(name).to_ascii_lowercase()),
            };
        }
    };
    Cow::Borrowed(full)
}

/// The lowercase long name of a header registrars, proxies and our own requests carry, if
/// `name` is one in any letter case: such a name is borrowed rather than allocated. The name is
/// lowered once, on the stack, and matched, rather than compared with each known name without
/// regard to case (a quarter fewer instructions per response).
fn lowercase_common(name: &[u8]) -> Option<&'static str> {
    let mut lower = [0u8; 24];
    let lower = lower.get_mut(..name.len())?;
    lower.copy_from_slice(name);
    lower.make_ascii_lowercase();
    Some(match &*lower {
        b"via" => "via",
        b"from" => "from",
        b"to" => "to",
        b"call-id" => "call-id",
        b"cseq" => "cseq",
        b"contact" => "contact",
        b"content-length" => "content-length",
        b"expires" => "expires",
        b"www-authenticate" => "www-authenticate",
        b"proxy-authenticate" => "proxy-authenticate",
        b"authorization" => "authorization",
        b"proxy-authorization" => "proxy-authorization",
        b"max-forwards" => "max-forwards",
        b"user-agent" => "user-agent",
        b"server" => "server",
        b"date" => "date",
        b"allow" => "allow",
        b"supported" => "supported",
        b"content-type" => "content-type",
        b"record-route" => "record-route",
        b"route" => "route",
        b"min-expires" => "min-expires",
        b"retry-after" => "retry-after",
        b"path" => "path",
        b"service-route" => "service-route",
        b"require" => "require",
        _ => return None,
    })
}

/// The line starting at `pos`: its content without line end, where the line end starts, and
/// where the next line starts. `None` at the end of the data.
fn next_line(data: &[u8], pos: usize) -> Option<(&[u8], usize, usize)> {
    if pos >= data.len() {
        return None;
    }
    match memchr::memchr(b'\n', &data[pos..]) {
        Some(nl) => {
            let nl = pos + nl;
            let ends_at = if nl > pos && data[nl - 1] == b'\r' {
                nl - 1
            } else {
                nl
            };
            Some((&data[pos..ends_at], ends_at, nl + 1))
        }
        None => Some((&data[pos..], data.len(), data.len())),
    }
}

/// Bytes as text, invalid UTF-8 replaced. Valid input (nearly all of it) takes the standard
/// library's fast validation and is borrowed; `from_utf8_lossy` alone walks it chunk by chunk,
/// which showed up in the 100,000-row profile.
fn text(bytes: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(valid) => Cow::Borrowed(valid),
        Err(_) => String::from_utf8_lossy(bytes),
    }
}

/// Header value bytes as text: folded lines joined with one space, trimmed. A value on one
/// line (nearly all of them) is borrowed.
pub fn unfold(raw: &[u8]) -> Cow<'_, str> {
    let folded = memchr::memchr(b'\n', raw).is_some();
    let text = text(raw);
    if !folded {
        return match text {
            Cow::Borrowed(line) => Cow::Borrowed(line.trim()),
            Cow::Owned(line) => Cow::Owned(line.trim().to_string()),
        };
    }
    let mut out = String::with_capacity(text.len());
    for piece in text.split('\n') {
        let piece = piece.trim();
        if piece.is_empty() {
            continue;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(piece);
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(text: &[u8]) -> Head<'_> {
        Head::scan(text).unwrap()
    }

    #[test]
    fn a_clean_head_with_body() {
        let msg = b"\r\nINVITE sip:a@b SIP/2.0\r\nv: SIP/2.0/UDP h\r\nCall-ID: x\r\n\r\nbody";
        let head = scan(msg);
        assert_eq!(head.start_line, "INVITE sip:a@b SIP/2.0");
        assert_eq!(head.first("via").as_deref(), Some("SIP/2.0/UDP h"));
        assert_eq!(head.single("call-id").as_deref(), Some("x"));
        assert_eq!(&msg[head.body_start..], b"body");
        assert_eq!(head.line_end, "\r\n");
        assert!(head.is_clean());
        assert_eq!(head.unreadable(), None);
    }

    #[test]
    fn folded_lines_are_one_header() {
        let msg = b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h\r\n\t;branch=z9hG4bKa\r\nExpires:\r\n 900\r\n\r\n";
        let head = scan(msg);
        assert_eq!(head.headers.len(), 2);
        assert_eq!(
            head.first("via").as_deref(),
            Some("SIP/2.0/UDP h ;branch=z9hG4bKa")
        );
        assert_eq!(head.first("expires").as_deref(), Some("900"));
        assert!(head.is_clean());
        let first = scan(b"SIP/2.0 200 OK\r\n folded: first\r\n\r\n");
        assert!(first.has(Defect::ContinuationFirst));
        assert_eq!(first.unreadable(), Some(Defect::ContinuationFirst));
    }

    /// One policy for line ends: bare LF throughout is read as CRLF is; a head mixing them is
    /// unreadable for every reader.
    #[test]
    fn bare_lf_is_accepted_but_not_mixed_with_crlf() {
        let lf = scan(b"SIP/2.0 200 OK\nCall-ID: x\n\nbody");
        assert!(lf.is_clean());
        assert_eq!(lf.line_end, "\n");
        assert_eq!(&lf.data()[lf.body_start..], b"body");
        let mixed = scan(b"SIP/2.0 200 OK\r\nCall-ID: x\nCSeq: 1 X\r\n\r\n");
        assert!(mixed.has(Defect::MixedLineEnds));
        assert_eq!(mixed.unreadable(), Some(Defect::MixedLineEnds));
        assert_eq!(mixed.headers.len(), 2, "the scan goes on");
    }

    /// One policy for bytes: a value that is not UTF-8 is read with U+FFFD and kept as bytes;
    /// a name that is not visible ASCII makes the head unreadable.
    #[test]
    fn non_utf8_values_are_read_lossily_names_are_not() {
        let msg = b"SIP/2.0 200 OK\r\nFrom: \"M\xfcller\" <sip:m@h>\r\n\r\n";
        let head = scan(msg);
        assert!(head.is_clean());
        assert_eq!(
            head.first("from").as_deref(),
            Some("\"M\u{fffd}ller\" <sip:m@h>")
        );
        let from = &head.headers[0];
        assert!(msg[from.value_start..from.value_end].contains(&0xfc));
        let bad_name = scan(b"SIP/2.0 200 OK\r\n\xff\xfe: x\r\nCall-ID: y\r\n\r\n");
        assert_eq!(bad_name.unreadable(), Some(Defect::BadHeaderLine));
        assert_eq!(bad_name.first("call-id").as_deref(), Some("y"));
    }

    #[test]
    fn control_characters_leave_the_head_readable_but_not_clean() {
        let head = scan(b"SIP/2.0 403 Bad\x1b[31m\0\rword\r\nCall-ID: x\r\n\r\n");
        assert!(head.has(Defect::ControlCharacter));
        assert!(!head.is_clean());
        assert_eq!(head.unreadable(), None);
        assert_eq!(head.first("call-id").as_deref(), Some("x"));
    }

    #[test]
    fn limits_and_empty_input() {
        assert_eq!(Head::scan(b"").unwrap_err(), HeadError::Empty);
        assert_eq!(Head::scan(b"\r\n\r\n").unwrap_err(), HeadError::Empty);
        let mut many = b"SIP/2.0 200 OK\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            many.extend_from_slice(format!("X-{i}: y\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        let head = scan(&many);
        assert_eq!(head.headers.len(), MAX_HEADERS);
        assert_eq!(head.unreadable(), Some(Defect::TooManyHeaders));
        let framer = Head::scan_all_headers(&many).unwrap();
        assert_eq!(framer.headers.len(), MAX_HEADERS + 1);
        assert_eq!(framer.unreadable(), None);
        let mut huge = b"SIP/2.0 200 OK\r\n".to_vec();
        while huge.len() <= MAX_MESSAGE {
            huge.extend_from_slice(b"X-Filler: yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy\r\n");
        }
        huge.extend_from_slice(b"Call-ID: x\r\n\r\n");
        assert_eq!(Head::scan(&huge).unwrap_err(), HeadError::TooLarge);
        let unterminated = scan(b"SIP/2.0 200 OK\r\nCall-ID: x\r\n");
        assert_eq!(unterminated.head_end, None);
        assert!(!unterminated.is_clean());
        assert_eq!(unterminated.unreadable(), None);
    }
}

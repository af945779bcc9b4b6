//! Parsing SIP messages received from the network: responses to our REGISTERs and, for the test
//! registrar, REGISTER requests. Any malformed input is an error, never a panic.
//!
//! Only what registrations need is extracted, with the forms real registrars send in mind:
//! compact header names (`i:`, `m:`, `v:` …), several bindings in one Contact line, display
//! names with commas, IPv6 hosts, folded header lines, bare LF line ends. Heads are cut by the
//! one scanner, [`super::head`], under its policy; URIs are read by [`super::uri`]. The parser is
//! small and written for this job (rsip was tried and failed on several of these); the tests at
//! the bottom pin each case down, and a property test feeds it arbitrary bytes.

use std::borrow::Cow;

use thiserror::Error;

use super::head::Head as ScannedHead;
pub use super::uri::{UriParts, escape_user};

#[derive(Debug, Error, PartialEq, Eq)]
#[error("malformed SIP message: {0}")]
pub struct ParseError(pub String);

fn fail<T>(why: impl Into<String>) -> Result<T, ParseError> {
    Err(ParseError(why.into()))
}

/// One binding in a Contact header (a header line may hold several, comma-separated).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContactBinding {
    pub uri: UriParts,
    /// The URI as it appeared (without angle brackets).
    pub uri_text: String,
    /// The `;expires=` header parameter.
    pub expires: Option<u32>,
}

/// A response to a request we sent. Its text is borrowed from the datagram where it lies there
/// as it is read (nearly always): every REGISTER is answered at least once, and whoever needs
/// a field beyond the datagram's life copies it.
#[derive(Clone, Debug)]
pub struct Response<'a> {
    pub code: u16,
    pub reason: Cow<'a, str>,
    /// `branch` parameter of the topmost Via.
    pub branch: Option<Cow<'a, str>>,
    pub call_id: Cow<'a, str>,
    pub cseq: u32,
    pub cseq_method: Cow<'a, str>,
    pub contacts: Vec<ContactBinding>,
    pub expires: Option<u32>,
    pub min_expires: Option<u32>,
    pub retry_after: Option<u32>,
    /// Raw `WWW-Authenticate` values, one per challenge.
    pub www_authenticate: Vec<Cow<'a, str>>,
    /// Raw `Proxy-Authenticate` values.
    pub proxy_authenticate: Vec<Cow<'a, str>>,
}

/// `part`, a slice of `whole`'s text, with `whole`'s lifetime when `whole` is borrowed (a copy
/// otherwise, or if `part` is not where it should be: checked, not assumed).
fn part_of<'a>(whole: &Cow<'a, str>, part: &str) -> Cow<'a, str> {
    if let Cow::Borrowed(text) = whole {
        let start = (part.as_ptr() as usize).checked_sub(text.as_ptr() as usize);
        let end = start.and_then(|start| start.checked_add(part.len()));
        if let (Some(start), Some(end)) = (start, end)
            && let Some(within) = text.get(start..end)
            && within.as_ptr() == part.as_ptr()
        {
            return Cow::Borrowed(within);
        }
    }
    Cow::Owned(part.to_string())
}

/// A request as the test registrar needs it.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    pub request_uri: String,
    /// Every Via value in order, verbatim (echoed back in responses).
    pub vias: Vec<String>,
    /// Verbatim From and To header values (the registrar adds a To tag).
    pub from: String,
    pub to: String,
    /// URI inside To.
    pub to_uri: UriParts,
    pub call_id: String,
    pub cseq: u32,
    pub cseq_method: String,
    pub contacts: Vec<ContactBinding>,
    /// `Contact: *`
    pub contact_star: bool,
    pub expires: Option<u32>,
    pub authorization: Option<String>,
    pub proxy_authorization: Option<String>,
}

/// Tells a response from a request by the first line, without parsing the rest.
pub fn is_response(datagram: &[u8]) -> bool {
    datagram.starts_with(b"SIP/2.0 ")
}

/// The start line and the headers (name lowercased and expanded from compact form, value
/// trimmed, folded lines joined), in order, as [`super::head`] reads them. A value is made
/// text only when asked for, and borrowed where it can be (see [`ScannedHead::value`]):
/// parsing a response is on the path of every REGISTER, and most of its headers are never
/// looked at.
struct Head<'a> {
    scanned: ScannedHead<'a>,
}

impl<'a> Head<'a> {
    fn start(&self) -> &str {
        &self.scanned.start_line
    }

    fn all<'s>(&'s self, name: &'s str) -> impl Iterator<Item = Cow<'a, str>> + 's {
        self.scanned.all(name).map(|h| self.scanned.value(h))
    }

    fn one(&self, name: &str) -> Option<Cow<'a, str>> {
        self.all(name).next()
    }

    fn required(&self, name: &str) -> Result<Cow<'a, str>, ParseError> {
        self.one(name)
            .ok_or_else(|| ParseError(format!("missing {name} header")))
    }
}

/// The head by the policy of [`super::head`]; a head that does not read one way is an error
/// (a control character alone does not stop us from reading it: see [`Response::reason`]).
fn split_head(datagram: &[u8]) -> Result<Head<'_>, ParseError> {
    let scanned = ScannedHead::scan(datagram).map_err(|err| ParseError(err.to_string()))?;
    if let Some(defect) = scanned.unreadable() {
        return fail(defect.reason());
    }
    Ok(Head { scanned })
}

/// Splits a header value at commas that are outside quotes and angle brackets.
pub(crate) fn split_list(value: &str) -> Vec<&str> {
    list_items(value).collect()
}

/// The items of a comma-separated header value (commas inside quotes or angle brackets do not
/// split), trimmed, empty ones skipped, one at a time: the first Via of a response is all its
/// matching needs, and a value without a comma is one item found by one `memchr`.
pub(crate) fn list_items(value: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(value);
    std::iter::from_fn(move || {
        loop {
            let text = rest?;
            let (item, after) = match first_top_level_comma(text) {
                Some(at) => (&text[..at], Some(&text[at + 1..])),
                None => (text, None),
            };
            rest = after;
            let item = item.trim();
            if !item.is_empty() {
                return Some(item);
            }
        }
    })
}

/// Where the first comma outside quotes and angle brackets is.
fn first_top_level_comma(value: &str) -> Option<usize> {
    let bytes = value.as_bytes();
    // Most values have no comma at all.
    memchr::memchr(b',', bytes)?;
    let (mut in_quotes, mut in_angle, mut escaped) = (false, false, false);
    // Bytes rather than chars: every delimiter is ASCII, and no byte of a multi-byte UTF-8
    // character is, so the cuts fall where they would between chars.
    for (i, &b) in bytes.iter().enumerate() {
        if escaped {
            escaped = false;
            continue;
        }
        match b {
            b'\\' if in_quotes => escaped = true,
            b'"' => in_quotes = !in_quotes,
            b'<' if !in_quotes => in_angle = true,
            b'>' if !in_quotes => in_angle = false,
            b',' if !in_quotes && !in_angle => return Some(i),
            _ => {}
        }
    }
    None
}

/// Header parameters (`;name=value`) after the name-addr or URI, names lowercased.
pub(crate) fn header_params(text: &str) -> Vec<(String, Option<String>)> {
    text.split(';')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((n, v)) => (
                n.trim().to_ascii_lowercase(),
                Some(v.trim().trim_matches('"').to_string()),
            ),
            None => (p.to_ascii_lowercase(), None),
        })
        .collect()
}

/// The value of the first parameter called `name` (ASCII case ignored) in `;name=value`
/// parameters, quotes taken off: what [`header_params`] finds, without building the list.
fn param_value<'t>(text: &'t str, name: &str) -> Option<&'t str> {
    let first = text.split(';').find_map(|piece| {
        let piece = piece.trim_ascii();
        let piece_name = match memchr::memchr(b'=', piece.as_bytes()) {
            Some(at) => &piece[..at],
            None => piece,
        };
        (!piece.is_empty() && piece_name.trim_ascii().eq_ignore_ascii_case(name)).then_some(piece)
    })?;
    first
        .split_once('=')
        .map(|(_, value)| value.trim_ascii().trim_matches('"'))
}

/// `"Display" <uri>;params`, `Name <uri>;params`, or `uri;params` → (uri text, params text).
pub(crate) fn split_name_addr(value: &str) -> Result<(&str, &str), ParseError> {
    // Skip a quoted display name first: it may contain '<'.
    let mut search_from = 0;
    let trimmed = value.trim_start();
    if trimmed.starts_with('"') {
        let offset = value.len() - trimmed.len();
        let mut escaped = false;
        let mut close = None;
        for (i, c) in trimmed.char_indices().skip(1) {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                close = Some(i);
                break;
            }
        }
        let close = close.ok_or_else(|| ParseError("unterminated display name".into()))?;
        search_from = offset + close + 1;
    }
    let rest = &value[search_from..];
    if let Some(open) = rest.find('<') {
        let after = &rest[open + 1..];
        let close = after
            .find('>')
            .ok_or_else(|| ParseError("unterminated <URI>".into()))?;
        Ok((&after[..close], &after[close + 1..]))
    } else {
        let rest = rest.trim();
        match rest.find(';') {
            Some(semi) => Ok((&rest[..semi], &rest[semi..])),
            None => Ok((rest, "")),
        }
    }
}

fn parse_u32(text: &str) -> Option<u32> {
    let digits: &str = text.trim();
    let end = digits
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    digits[..end].parse().ok()
}

fn parse_contacts(head: &Head) -> Result<(Vec<ContactBinding>, bool), ParseError> {
    let mut contacts = Vec::new();
    let mut star = false;
    for value in head.all("contact") {
        for item in list_items(&value) {
            if item == "*" {
                star = true;
                continue;
            }
            let (uri_text, params) = split_name_addr(item)?;
            let uri = UriParts::parse(uri_text)?;
            let expires = param_value(params, "expires").and_then(parse_u32);
            contacts.push(ContactBinding {
                uri,
                uri_text: uri_text.trim().to_string(),
                expires,
            });
        }
    }
    Ok((contacts, star))
}

fn parse_cseq<'a>(head: &Head<'a>) -> Result<(u32, Cow<'a, str>), ParseError> {
    let value = head.required("cseq")?;
    // Number, linear white space, method (RFC 3261 §20.16).
    let mut parts = value.split([' ', '\t']).filter(|part| !part.is_empty());
    let number = parts
        .next()
        .and_then(|n| n.parse::<u32>().ok())
        .ok_or_else(|| ParseError(format!("bad CSeq {value:?}")))?;
    let method = parts
        .next()
        .ok_or_else(|| ParseError(format!("CSeq without method {value:?}")))?;
    Ok((number, part_of(&value, method)))
}

fn top_via_branch<'a>(head: &Head<'a>) -> Option<Cow<'a, str>> {
    let via = head.one("via")?;
    let first = list_items(&via).next()?;
    let branch = param_value(
        first.split_once(';').map(|(_, p)| p).unwrap_or(""),
        "branch",
    )?;
    Some(part_of(&via, branch))
}

/// Longest reason phrase kept, in bytes: it is stored per row, logged and written to a
/// `VARCHAR(255)` status column, and nothing useful is said in more.
pub const MAX_REASON: usize = 255;

/// The reason phrase as it may be kept, shown and logged: control characters (a bare CR, ESC
/// sequences for a terminal, NUL, which PostgreSQL refuses in text) become `?`, and the text is
/// cut to [`MAX_REASON`] bytes at a character boundary.
fn clean_reason(reason: &str) -> Cow<'_, str> {
    let reason = reason.trim();
    if reason.len() <= MAX_REASON && !reason.contains(char::is_control) {
        return Cow::Borrowed(reason);
    }
    let mut out = String::with_capacity(reason.len().min(MAX_REASON));
    for c in reason.chars() {
        let c = if c.is_control() { '?' } else { c };
        if out.len() + c.len_utf8() > MAX_REASON {
            break;
        }
        out.push(c);
    }
    Cow::Owned(out)
}

impl<'a> Response<'a> {
    pub fn parse(datagram: &'a [u8]) -> Result<Response<'a>, ParseError> {
        let head = split_head(datagram)?;
        let status = head
            .start()
            .strip_prefix("SIP/2.0 ")
            .ok_or_else(|| ParseError("not a SIP/2.0 response".into()))?;
        let (code, reason) = status.split_once(' ').unwrap_or((status, ""));
        let code: u16 = code
            .parse()
            .ok()
            .filter(|c| (100..700).contains(c))
            .ok_or_else(|| ParseError(format!("bad status code {code:?}")))?;
        let (cseq, cseq_method) = parse_cseq(&head)?;
        let (contacts, _) = parse_contacts(&head)?;
        // Borrowed from the datagram with the start line, unless cleaned.
        let reason = match part_of(&head.scanned.start_line, reason) {
            Cow::Borrowed(reason) => clean_reason(reason),
            Cow::Owned(reason) => Cow::Owned(clean_reason(&reason).into_owned()),
        };
        Ok(Response {
            code,
            reason,
            branch: top_via_branch(&head),
            call_id: head.required("call-id")?,
            cseq,
            cseq_method,
            contacts,
            expires: head.one("expires").as_deref().and_then(parse_u32),
            min_expires: head.one("min-expires").as_deref().and_then(parse_u32),
            retry_after: head.one("retry-after").as_deref().and_then(parse_u32),
            www_authenticate: head.all("www-authenticate").collect(),
            proxy_authenticate: head.all("proxy-authenticate").collect(),
        })
    }
}

impl Response<'_> {
    /// The same response owning its text, to be kept beyond the datagram it was read from.
    pub fn into_owned(self) -> Response<'static> {
        let owned = |values: Vec<Cow<'_, str>>| {
            values
                .into_iter()
                .map(|v| Cow::Owned(v.into_owned()))
                .collect()
        };
        Response {
            code: self.code,
            reason: Cow::Owned(self.reason.into_owned()),
            branch: self.branch.map(|b| Cow::Owned(b.into_owned())),
            call_id: Cow::Owned(self.call_id.into_owned()),
            cseq: self.cseq,
            cseq_method: Cow::Owned(self.cseq_method.into_owned()),
            contacts: self.contacts,
            expires: self.expires,
            min_expires: self.min_expires,
            retry_after: self.retry_after,
            www_authenticate: owned(self.www_authenticate),
            proxy_authenticate: owned(self.proxy_authenticate),
        }
    }
}

impl Request {
    pub fn parse(datagram: &[u8]) -> Result<Request, ParseError> {
        let head = split_head(datagram)?;
        let mut parts = head.start().split_whitespace();
        let (Some(method), Some(uri), Some("SIP/2.0"), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return fail(format!("bad request line {:?}", head.start()));
        };
        if !method.chars().all(|c| c.is_ascii_alphabetic()) {
            return fail(format!("bad method {method:?}"));
        }
        let mut vias: Vec<String> = Vec::new();
        for value in head.all("via") {
            vias.extend(list_items(&value).map(String::from));
        }
        if vias.is_empty() {
            return fail("missing Via header");
        }
        let to = head.required("to")?.into_owned();
        let (to_uri_text, _) = split_name_addr(&to)?;
        let to_uri = UriParts::parse(to_uri_text)?;
        let (cseq, cseq_method) = parse_cseq(&head)?;
        let (contacts, contact_star) = parse_contacts(&head)?;
        Ok(Request {
            method: method.to_string(),
            request_uri: uri.to_string(),
            vias,
            from: head.required("from")?.into_owned(),
            to,
            to_uri,
            call_id: head.required("call-id")?.into_owned(),
            cseq,
            cseq_method: cseq_method.into_owned(),
            contacts,
            contact_star,
            expires: head.one("expires").as_deref().and_then(parse_u32),
            authorization: head.one("authorization").map(Cow::into_owned),
            proxy_authorization: head.one("proxy-authorization").map(Cow::into_owned),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_response_borrows_its_text_unless_a_folded_line_made_it_new() {
        let plain = b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKt1.ab\r\n\
            Call-ID: c1@h\r\nCSeq: 7 REGISTER\r\nContent-Length: 0\r\n\r\n";
        let r = Response::parse(plain).unwrap();
        assert!(matches!(r.branch, Some(Cow::Borrowed("z9hG4bKt1.ab"))));
        assert!(matches!(r.reason, Cow::Borrowed("OK")));
        assert!(matches!(r.call_id, Cow::Borrowed("c1@h")));
        assert!(matches!(r.cseq_method, Cow::Borrowed("REGISTER")));
        // A folded Via is joined into new text: its branch is a copy, and the same.
        let folded = b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 192.0.2.1\r\n ;branch=z9hG4bKt1.ab\r\n\
            Call-ID: c1@h\r\nCSeq: 7\r\n\tREGISTER\r\nContent-Length: 0\r\n\r\n";
        let r = Response::parse(folded).unwrap();
        assert!(matches!(r.branch, Some(Cow::Owned(ref b)) if b == "z9hG4bKt1.ab"));
        assert!(matches!(r.cseq_method, Cow::Owned(ref m) if m == "REGISTER"));
        let kept = r.into_owned();
        assert_eq!((kept.cseq, kept.call_id.as_ref()), (7, "c1@h"));
        // Text that is not a slice of the whole is copied, never cut out by its address.
        let elsewhere = String::from("b");
        assert!(matches!(
            part_of(&Cow::Borrowed("abc"), &elsewhere),
            Cow::Owned(_)
        ));
        let whole = Cow::Borrowed("abc");
        assert!(matches!(part_of(&whole, &whole[1..]), Cow::Borrowed("bc")));
    }

    /// Found by the `row` fuzz target (fuzz/seeds/row/crash-colon-in-r-username): an r_username
    /// holding `:` and `?` went into To and From as it was, so the user part read as
    /// `user:password` and the `?` cut the URI before its host.
    #[test]
    fn a_user_part_is_escaped_where_a_uri_cannot_hold_it() {
        assert_eq!(escape_user("alice"), "alice");
        assert_eq!(escape_user("+49-30;x?y/z"), "+49-30;x?y/z");
        assert_eq!(escape_user("a:b"), "a%3Ab");
        assert_eq!(escape_user("a b#c"), "a%20b%23c");
        assert_eq!(escape_user("ä"), "%C3%A4");
        // An escape the operator wrote is kept; a lone `%` is escaped.
        assert_eq!(escape_user("a%3Ab"), "a%3Ab");
        assert_eq!(escape_user("100%"), "100%25");
        assert_eq!(escape_user("%4"), "%254");
        for user in ["a:b?c:d", "x y", "%zz", "a?b"] {
            let uri = format!("sip:{}@registrar.test:5070", escape_user(user));
            let parts = UriParts::parse(&uri).unwrap();
            assert_eq!(parts.host, "registrar.test", "{uri}");
            assert_eq!(parts.port, Some(5070), "{uri}");
        }
    }

    // rsip 0.4.0 fails here: sip:host.test?subject=x gets the host "host.test?subject=x".
    #[test]
    fn a_question_mark_in_the_user_part_is_not_a_header() {
        let parts = UriParts::parse("sip:a?b;c@host.test:5080;transport=tcp?h=v").unwrap();
        assert_eq!(parts.user.as_deref(), Some("a?b;c"));
        assert_eq!(parts.host, "host.test");
        assert_eq!(parts.port, Some(5080));
        assert_eq!(parts.params, vec![("transport".into(), Some("tcp".into()))]);
        let parts = UriParts::parse("sip:host.test?subject=x").unwrap();
        assert_eq!(parts.user, None);
        assert_eq!(parts.host, "host.test");
    }

    const KAMAILIO_200: &str = "SIP/2.0 200 OK\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK029a.bf592641000000000000000000000000.0\r\n\
To: <sip:user000000@registrar.test>;tag=df673b98c9e0bd9172cfc0d849035098.d55fff61\r\n\
From: <sip:user000000@registrar.test>;tag=f69b45bdcdd2936db7f83961cb424461-ffc6c3f3\r\n\
CSeq: 11 REGISTER\r\n\
Call-ID: 733b4a0a78d114a8-11243@127.0.0.1\r\n\
Contact: <sip:uuid000000@127.0.0.1:5080>;expires=3600\r\n\
Server: anchors-registrar (kamailio)\r\n\
Content-Length: 0\r\n\r\n";

    const KAMAILIO_401: &str = "SIP/2.0 401 Unauthorized\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bKf19a.ebc48804000000000000000000000000.0\r\n\
To: <sip:user000000@registrar.test>;tag=df673b98c9e0bd9172cfc0d849035098.89abff61\r\n\
From: <sip:user000000@registrar.test>;tag=f69b45bdcdd2936db7f83961cb424461-ffc6c3f3\r\n\
CSeq: 10 REGISTER\r\n\
Call-ID: 733b4a0a78d114a8-11243@127.0.0.1\r\n\
WWW-Authenticate: Digest realm=\"registrar.test\", nonce=\"awN21msDdpobD+hjRUs92zz15COlM0l9\", qop=\"auth\"\r\n\
Server: anchors-registrar (kamailio)\r\n\
Content-Length: 0\r\n\r\n";

    #[test]
    fn kamailio_trace_responses() {
        let ok = Response::parse(KAMAILIO_200.as_bytes()).unwrap();
        assert_eq!(ok.code, 200);
        assert_eq!(ok.reason, "OK");
        assert_eq!(ok.cseq, 11);
        assert_eq!(ok.call_id, "733b4a0a78d114a8-11243@127.0.0.1");
        assert_eq!(
            ok.branch.as_deref(),
            Some("z9hG4bK029a.bf592641000000000000000000000000.0")
        );
        assert_eq!(ok.contacts.len(), 1);
        assert_eq!(ok.contacts[0].uri.user.as_deref(), Some("uuid000000"));
        assert_eq!(ok.contacts[0].uri.port, Some(5080));
        assert_eq!(ok.contacts[0].expires, Some(3600));

        let challenge = Response::parse(KAMAILIO_401.as_bytes()).unwrap();
        assert_eq!(challenge.code, 401);
        assert_eq!(challenge.www_authenticate.len(), 1);
        assert!(challenge.www_authenticate[0].starts_with("Digest realm=\"registrar.test\""));
    }

    // rsip 0.4.0 fails here: it refuses several bindings in one Contact line and an IPv6 host, and does not see the m: line.
    #[test]
    fn several_bindings_in_one_line_and_in_several_lines() {
        let msg = "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKa\r\nCall-ID: c\r\nCSeq: 2 REGISTER\r\n\
Contact: <sip:a@h>;expires=60, \"Desk, Office\" <sip:b@h:5080>;expires=3600;q=0.5\r\n\
Contact: sip:c@10.0.0.1;expires=120\r\n\
m: <sip:d@[2001:db8::1]:5090;transport=udp>;expires=30\r\n\r\n";
        let r = Response::parse(msg.as_bytes()).unwrap();
        let users: Vec<_> = r
            .contacts
            .iter()
            .map(|c| c.uri.user.clone().unwrap())
            .collect();
        assert_eq!(users, vec!["a", "b", "c", "d"]);
        let expires: Vec<_> = r.contacts.iter().map(|c| c.expires).collect();
        assert_eq!(expires, vec![Some(60), Some(3600), Some(120), Some(30)]);
        assert_eq!(r.contacts[1].uri.port, Some(5080));
        assert_eq!(r.contacts[3].uri.host, "2001:db8::1");
        assert_eq!(r.contacts[3].uri.port, Some(5090));
        assert_eq!(
            r.contacts[3].uri.params[0],
            ("transport".into(), Some("udp".into()))
        );
    }

    // rsip 0.4.0 fails here: it refuses bare-LF line ends and folded lines, and does not know v: or i:.
    #[test]
    fn compact_names_lf_only_folding_and_extra_headers() {
        let msg = "SIP/2.0 503 Service Unavailable\nv: SIP/2.0/UDP h;branch=z9hG4bKx, SIP/2.0/UDP other;branch=z9hG4bKy\ni: folded-id\nCSeq:   7    REGISTER\nRetry-After: 120 (maintenance);duration=60\nMin-Expires: 600\nExpires:\n 900\n\n";
        let r = Response::parse(msg.as_bytes()).unwrap();
        assert_eq!(r.code, 503);
        assert_eq!(r.branch.as_deref(), Some("z9hG4bKx"));
        assert_eq!(r.call_id, "folded-id");
        assert_eq!(r.cseq, 7);
        assert_eq!(r.retry_after, Some(120));
        assert_eq!(r.min_expires, Some(600));
        assert_eq!(r.expires, Some(900));
    }

    // rsip 0.4.0 fails here: it refuses algorithm=SHA-256 and qop="auth,auth-int".
    #[test]
    fn several_challenges() {
        let msg = "SIP/2.0 407 Proxy Authentication Required\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKa\r\nCall-ID: c\r\nCSeq: 1 REGISTER\r\n\
Proxy-Authenticate: Digest realm=\"r\", nonce=\"n1\", algorithm=SHA-256, qop=\"auth,auth-int\"\r\n\
Proxy-Authenticate: Digest realm=\"r\", nonce=\"n2\", algorithm=MD5, qop=\"auth,auth-int\"\r\n\r\n";
        let r = Response::parse(msg.as_bytes()).unwrap();
        assert_eq!(r.proxy_authenticate.len(), 2);
        assert!(r.proxy_authenticate[0].contains("SHA-256"));
    }

    // rsip 0.4.0 differs here: it drops the phrase of every status code it knows (this one reads "Forbidden").
    #[test]
    fn reason_phrases_are_cleaned_and_bounded() {
        let long = "é".repeat(200);
        let msg = format!(
            "SIP/2.0 403 Bad\u{1b}[31m\0\rword! {long}\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKa\r\nCall-ID: c\r\nCSeq: 1 REGISTER\r\n\r\n"
        );
        let r = Response::parse(msg.as_bytes()).unwrap();
        assert!(r.reason.starts_with("Bad?[31m??word! é"), "{:?}", r.reason);
        assert!(r.reason.len() <= MAX_REASON);
        assert!(!r.reason.chars().any(char::is_control));
        // Cut at a character boundary, as close to the limit as two-byte characters allow.
        assert!(r.reason.len() >= MAX_REASON - 1, "{}", r.reason.len());
    }

    /// The head scanner's policy (see `sip::head`), as a registrar's answer meets it. Changed
    /// when the three scanners became one: a header value that is not UTF-8 (here a Latin-1
    /// display name) used to make the whole response an error; it is now read with U+FFFD,
    /// as the relay always read it. A head mixing CRLF and bare LF line ends, which this parser
    /// used to read, is now refused, as the relay always refused it.
    #[test]
    fn the_one_head_policy_for_bytes_and_line_ends() {
        let latin1 = b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKa\r\nTo: \"M\xfcller\" <sip:m@h>;tag=1\r\nCall-ID: c\r\nCSeq: 1 REGISTER\r\n\r\n";
        let response = Response::parse(latin1).unwrap();
        assert_eq!(response.code, 200);
        assert_eq!(response.call_id, "c");
        let mixed = b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKa\nCall-ID: c\r\nCSeq: 1 REGISTER\r\n\r\n";
        let err = Response::parse(mixed).unwrap_err();
        assert!(err.0.contains("CRLF"), "{err}");
        let lf =
            b"SIP/2.0 200 OK\nVia: SIP/2.0/UDP h;branch=z9hG4bKa\nCall-ID: c\nCSeq: 1 REGISTER\n\n";
        assert_eq!(Response::parse(lf).unwrap().cseq, 1);
        let folded = b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h\r\n ;branch=z9hG4bKa\r\nCall-ID: c\r\nCSeq: 1 REGISTER\r\n\r\n";
        assert_eq!(
            Response::parse(folded).unwrap().branch.as_deref(),
            Some("z9hG4bKa")
        );
        // Names are ASCII: one that is not is an error, as before.
        assert!(
            Response::parse(
                b"SIP/2.0 200 OK\r\nCall-ID: c\r\nCSeq: 1 REGISTER\r\nX-\xfc: y\r\n\r\n"
            )
            .is_err()
        );
    }

    #[test]
    fn malformed_input_is_an_error() {
        for bad in [
            &b""[..],
            b"SIP/2.0 200 OK\r\n\r\n",
            b"SIP/2.0 abc OK\r\nCall-ID: x\r\nCSeq: 1 REGISTER\r\n\r\n",
            b"SIP/2.0 200 OK\r\nCall-ID: x\r\nCSeq: 99999999999999999999 REGISTER\r\n\r\n",
            b"SIP/2.0 200 OK\r\nCall-ID: x\r\nCSeq: 1 REGISTER\r\nContact: <sip:a@h\r\n\r\n",
            b"SIP/2.0 200 OK\r\nCall-ID: x\r\nCSeq: 1 REGISTER\r\nContact: <sip:a@h:99999>\r\n\r\n",
            b"SIP/2.0 200 OK\r\n\xff\xfe: x\r\n\r\n",
            b"SIP/2.0 200 OK\r\nno colon here\r\n\r\n",
        ] {
            assert!(
                Response::parse(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(Request::parse(b"REGISTER sip:x SIP/2.0\r\nCall-ID: x\r\n\r\n").is_err());
    }

    #[test]
    fn request_for_the_test_registrar() {
        let msg = "REGISTER sip:registrar.test SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5062;rport;branch=z9hG4bK1\r\n\
To: <sip:alice@registrar.test>\r\nFrom: <sip:alice@registrar.test>;tag=x\r\nCall-ID: c1\r\nCSeq: 3 REGISTER\r\n\
Contact: *\r\nExpires: 0\r\nAuthorization: Digest username=\"alice\"\r\n\r\n";
        let r = Request::parse(msg.as_bytes()).unwrap();
        assert_eq!(r.method, "REGISTER");
        assert!(r.contact_star);
        assert_eq!(r.expires, Some(0));
        assert_eq!(r.to_uri.user.as_deref(), Some("alice"));
        assert_eq!(r.vias.len(), 1);
        assert!(r.authorization.is_some());
    }

    mod prop {
        use super::super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
                let _ = Response::parse(&data);
                let _ = Request::parse(&data);
            }

            #[test]
            fn mutated_messages_never_panic(cut in 0usize..600, byte in any::<u8>(), at in 0usize..600) {
                let mut data = super::KAMAILIO_200.as_bytes().to_vec();
                if at < data.len() { data[at] = byte; }
                data.truncate(cut.min(data.len()));
                let _ = Response::parse(&data);
                let _ = Request::parse(&data);
            }

            #[test]
            fn arbitrary_text_headers_never_panic(value in "\\PC{0,200}") {
                let msg = format!("SIP/2.0 200 OK\r\nVia: {value}\r\nCall-ID: x\r\nCSeq: 1 REGISTER\r\nContact: {value}\r\nExpires: {value}\r\n\r\n");
                let _ = Response::parse(msg.as_bytes());
            }
        }
    }

    // rsip 0.4.0 fails here: it wants the colon right after the name and refuses the message.
    #[test]
    fn white_space_before_a_header_colon_is_tolerated() {
        let msg = "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKa\r\nCall-ID : c\r\n\
                   CSeq\t: 4 REGISTER\r\nExpires : 300\r\n\r\n";
        let r = Response::parse(msg.as_bytes()).unwrap();
        assert_eq!(r.call_id, "c");
        assert_eq!((r.cseq, r.cseq_method.as_ref()), (4, "REGISTER"));
        assert_eq!(r.expires, Some(300));
    }

    // rsip 0.4.0 fails here: it keeps only the first header line and makes the rest the body.
    #[test]
    fn a_datagram_without_the_empty_line_keeps_every_header() {
        let msg = "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKa\r\nCall-ID: c\r\n\
                   CSeq: 6 REGISTER\r\nExpires: 300\r\n";
        let r = Response::parse(msg.as_bytes()).unwrap();
        assert_eq!(r.branch.as_deref(), Some("z9hG4bKa"));
        assert_eq!(r.call_id, "c");
        assert_eq!(r.cseq, 6);
        assert_eq!(r.expires, Some(300));
    }
}

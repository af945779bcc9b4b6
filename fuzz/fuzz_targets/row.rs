//! `store::validate` on an arbitrary `uacreg` row (every column realistic, realistic with one
//! character inserted, arbitrary text or empty; see `uacreg_fuzz::rows`), and what a row that
//! passes puts on the wire.
//!
//! A valid row is registered: its first REGISTER, and the one answering a 401 challenge (which
//! carries auth_username and realm), must be well-formed requests with exactly our header lines
//! — a column must never inject a header — and must parse with our own parser. A call for it is
//! relayed: the Request-URI made from l_username and l_domain must not break the start line.

#![no_main]

use libfuzzer_sys::fuzz_target;
use uacreg::sip::message::{Request, Response};
use uacreg::relay::{self, Action, ReturnPath};
use uacreg::store::validate;
use uacreg_fuzz::in_flight::InFlight;
use uacreg_fuzz::rows::{arbitrary_row, defaults};
use uacreg_fuzz::{Unstructured, head, relaying_config, trusted_arrival};

/// Header names a REGISTER of ours carries, lowercase.
const REGISTER_HEADERS: [&str; 13] = [
    "via",
    "max-forwards",
    "to",
    "from",
    "call-id",
    "cseq",
    "contact",
    "expires",
    "supported",
    "authorization",
    "proxy-authorization",
    "user-agent",
    "content-length",
];

/// Whether `request` is one of our REGISTERs with nothing smuggled into it.
fn check_register(request: &[u8]) {
    let text = std::str::from_utf8(request).expect("a REGISTER is text");
    let head = text
        .strip_suffix("\r\n\r\n")
        .expect("a REGISTER ends its head, no body");
    let mut lines = head.split("\r\n");
    let start: Vec<&str> = lines.next().unwrap_or("").split(' ').collect();
    assert!(
        start.len() == 3 && start[0] == "REGISTER" && start[2] == "SIP/2.0",
        "start line {start:?}"
    );
    for line in lines {
        assert!(!line.contains(['\r', '\n']), "bare CR or LF in {line:?}");
        assert!(!line.starts_with([' ', '\t']), "folded line {line:?}");
        let (name, _) = line.split_once(':').expect("a header line has a colon");
        let name = name.to_ascii_lowercase();
        assert!(
            REGISTER_HEADERS.contains(&name.as_str()),
            "header {name:?} in a REGISTER"
        );
    }
    if let Err(error) = Request::parse(request) {
        panic!("our own REGISTER does not parse: {error}\n{text}");
    }
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let row = arbitrary_row(&mut u);
    let Ok(record) = validate(&row, &defaults()) else {
        return;
    };

    // The relay rewrites a call's Request-URI to the row's local URI.
    let l_uuid = record.l_uuid().to_string();
    let local_uri = format!("sip:{}@{}", record.l_username(), record.l_domain());
    let invite = format!(
        "INVITE sip:{l_uuid}@192.0.2.1:5062 SIP/2.0\r\n\
         Via: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK776asdhds\r\n\
         Max-Forwards: 70\r\n\
         To: <sip:{l_uuid}@192.0.2.1>\r\n\
         From: <sip:caller@example.com>;tag=1928301774\r\n\
         Call-ID: a84b4c76e66710\r\n\
         CSeq: 1 INVITE\r\n\
         Content-Length: 0\r\n\r\n"
    );
    let from = "198.51.100.7:5060".parse().expect("an address");
    let config = relaying_config();
    let arrival = trusted_arrival(
        from,
        ReturnPath::Udp {
            local: None,
            source: from,
        },
    );
    let decision = relay::handle_request(invite.as_bytes(), arrival, &config, |addressee| {
        (addressee.key() == l_uuid).then(|| local_uri.clone())
    });
    if let Action::Forward(forwarded) = decision.action {
        let head = head(&forwarded);
        let start = head.split(|b| *b == b'\n').next().unwrap_or(b"");
        let parts = start.trim_ascii_end().split(|b| *b == b' ').count();
        assert_eq!(parts, 3, "start line {:?}", String::from_utf8_lossy(start));
        let lines = head.split(|b| *b == b'\n').count();
        assert_eq!(lines, 9, "a relayed call gained header lines");
    }

    // Registering it.
    let realm = if record.realm().is_empty() {
        "registrar.test"
    } else {
        record.realm()
    };
    let realm = realm.replace(['\\', '"'], "");
    let mut state = InFlight::new(vec![record]);
    let Some(sent) = state.sent.first().cloned() else {
        return;
    };
    check_register(&sent.bytes);
    let challenge = format!(
        "SIP/2.0 401 Unauthorized\r\n\
         Via: SIP/2.0/UDP 192.0.2.1:5062;branch={}\r\n\
         Call-ID: {}\r\n\
         CSeq: {} REGISTER\r\n\
         WWW-Authenticate: Digest realm=\"{realm}\", nonce=\"abc\", qop=\"auth\"\r\n\
         Content-Length: 0\r\n\r\n",
        sent.ids.branch, sent.ids.call_id, sent.ids.cseq
    );
    let Ok(response) = Response::parse(challenge.as_bytes()) else {
        return;
    };
    state.handle_response(&response, sent.path);
    if let Some(answer) = state.sent.get(1) {
        check_register(&answer.bytes);
    }
    state.check_nothing_stuck();
});

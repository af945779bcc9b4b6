//! Hand-written edge cases: what real peers send rarely and attackers send on purpose. Each is
//! written in the layout of its target (control bytes first).

use crate::seeds::{Corpus, relayed};

/// Lines joined with CRLF, ending with the empty line of the head.
fn sip(lines: &[&str]) -> Vec<u8> {
    let mut out = lines.join("\r\n");
    out.push_str("\r\n\r\n");
    out.into_bytes()
}

fn with_prefix(prefix: &[u8], message: &[u8]) -> Vec<u8> {
    [prefix, message].concat()
}

/// Responses to our REGISTERs, with the placeholders of the response harness.
fn responses() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("compact", sip(&[
            "SIP/2.0 200 OK",
            "v: SIP/2.0/UDP 192.0.2.1:5062;rport=5062;branch=$branch;received=192.0.2.1",
            "f: <sip:alice@192.0.2.10>;tag=1",
            "t: <sip:alice@192.0.2.10>;tag=2",
            "i: $call-id",
            "CSeq: $cseq REGISTER",
            "m: <sip:uuid-udp-1@192.0.2.1:5062>;expires=300, <sip:other@198.51.100.1>;expires=60",
            "l: 0",
        ])),
        ("folded", sip(&[
            "SIP/2.0 401 Unauthorized",
            "Via: SIP/2.0/UDP 192.0.2.1:5062",
            " ;branch=$branch",
            "Call-ID: $call-id",
            "CSeq: $cseq",
            "\tREGISTER",
            "WWW-Authenticate: Digest realm=\"registrar.test\",",
            "  nonce=\"n1\", qop=\"auth,auth-int\", algorithm=MD5",
            "Content-Length: 0",
        ])),
        ("two-challenges", sip(&[
            "SIP/2.0 407 Proxy Authentication Required",
            "Via: SIP/2.0/UDP 192.0.2.1:5062;branch=$branch",
            "Call-ID: $call-id",
            "CSeq: $cseq REGISTER",
            "Proxy-Authenticate: Digest realm=\"proxy.test\", nonce=\"p1\", algorithm=SHA-256, qop=\"auth\"",
            "Proxy-Authenticate: Digest realm=\"proxy.test\", nonce=\"p2\", algorithm=MD5, qop=\"auth\"",
            "WWW-Authenticate: Digest realm=\"registrar.test\", nonce=\"w1\", opaque=\"o\\\"q\", stale=TRUE",
            "Content-Length: 0",
        ])),
        ("ipv6", sip(&[
            "SIP/2.0 200 OK",
            "Via: SIP/2.0/UDP [2001:db8::1]:5062;branch=$branch;received=2001:db8::1;rport=5062",
            "Call-ID: $call-id",
            "CSeq: $cseq REGISTER",
            "Contact: <sip:uuid-udp-2@[2001:db8::1]:5062>;expires=60",
            "Expires: 60",
            "Content-Length: 0",
        ])),
        ("expires-max", sip(&[
            "SIP/2.0 200 OK",
            "Via: SIP/2.0/UDP 192.0.2.1:5062;branch=$branch",
            "Call-ID: $call-id",
            "CSeq: $cseq REGISTER",
            "Contact: <sip:uuid-udp-1@192.0.2.1:5062>;expires=4294967295",
            "Expires: 99999999999999999999",
            "Content-Length: 0",
        ])),
        ("interval-too-brief", sip(&[
            "SIP/2.0 423 Interval Too Brief",
            "Via: SIP/2.0/UDP 192.0.2.1:5062;branch=$branch",
            "Call-ID: $call-id",
            "CSeq: $cseq REGISTER",
            "Min-Expires: 7200",
            "Content-Length: 0",
        ])),
        ("retry-after", sip(&[
            "SIP/2.0 503 Service Unavailable",
            "Via: SIP/2.0/UDP 192.0.2.1:5062;branch=$branch",
            "Call-ID: $call-id",
            "CSeq: $cseq REGISTER",
            "Retry-After: 18446744073709551616 (overloaded);duration=1",
            "Content-Length: 0",
        ])),
        ("provisional-then-body", sip(&[
            "SIP/2.0 100 Trying",
            "Via: SIP/2.0/UDP 192.0.2.1:5062;branch=$branch",
            "Call-ID: $call-id",
            "CSeq: $cseq REGISTER",
            "Content-Type: text/plain",
            "Content-Length: 5",
        ])),
        ("relay-marker", sip(&[
            "SIP/2.0 200 OK",
            "Via: SIP/2.0/UDP 192.0.2.1:5062;branch=z9hG4bKrly-0123456789abcdef.um40a0000011f5.00000000000000000000000000000000",
            "Via: SIP/2.0/UDP 198.51.100.7:5060;branch=$branch",
            "Call-ID: $call-id",
            "CSeq: $cseq REGISTER",
            "Content-Length: 0",
        ])),
        ("lf-only", b"SIP/2.0 200 OK\nVia: SIP/2.0/UDP 192.0.2.1:5062;branch=$branch\nCall-ID: $call-id\nCSeq: $cseq REGISTER\nContact: <sip:uuid-udp-1@192.0.2.1:5062>\nExpires: 3600\n\n".to_vec()),
    ]
}

/// Requests reaching the inbound side.
fn requests() -> Vec<(&'static str, u8, Vec<u8>)> {
    vec![
        (
            "options",
            0x00,
            sip(&[
                "OPTIONS sip:192.0.2.1:5062 SIP/2.0",
                "Via: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bKsv1;rport;received=203.0.113.1",
                "From: <sip:100@198.51.100.7>;tag=a",
                "To: <sip:100@192.0.2.1>",
                "Call-ID: probe-1",
                "CSeq: 1 OPTIONS",
                "Max-Forwards: 70",
                "Content-Length: 0",
            ]),
        ),
        (
            "identity",
            0x0c,
            sip(&[
                "INVITE sip:uuid000001@192.0.2.1:5062;transport=udp SIP/2.0",
                "Via: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bKinv1",
                "Max-Forwards: 70",
                "From: \"Boss\" <sip:ceo@example.com>;tag=x",
                "To: <sip:uuid000001@192.0.2.1>",
                "Call-ID: id-1",
                "CSeq: 1 INVITE",
                "P-Asserted-Identity: <sip:ceo@example.com>",
                "p-preferred-identity : <tel:+1>",
                "Remote-Party-ID: <sip:ceo@example.com>;party=calling",
                "Route: <sip:192.0.2.99;lr>",
                "Content-Length: 0",
            ]),
        ),
        (
            "line-param",
            0x05,
            sip(&[
                "INVITE sip:100@192.0.2.1:5062;line=uuid-udp-1 SIP/2.0",
                "v: SIP/2.0/TCP [2001:db8::5]:5060;branch=z9hG4bKinv2, SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKold",
                "f: <sip:a@example.com>;tag=y",
                "t: <sip:100@192.0.2.1>",
                "i: id-2",
                "CSeq: 2 INVITE",
                "c: application/sdp",
                "l: 4",
                "",
                "v=0",
            ]),
        ),
        (
            "max-forwards-zero",
            0x05,
            sip(&[
                "BYE sip:uuid000001@192.0.2.1 SIP/2.0",
                "Via: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bKbye",
                "Max-Forwards: 0",
                "From: <sip:a@example.com>;tag=1",
                "To: <sip:uuid000001@192.0.2.1>;tag=2",
                "Call-ID: id-3",
                "CSeq: 3 BYE",
                "Content-Length: 0",
            ]),
        ),
        (
            "huge-length",
            0x27,
            sip(&[
                "MESSAGE sips:8c1e5d0f-2b7a-4c11-9f00-5e8a1b2c3d4e@192.0.2.1 SIP/2.0",
                "Via: SIP/2.0/TLS 198.51.100.7:5061;branch=z9hG4bKmsg",
                "Max-Forwards: 70",
                "From: <sip:a@example.com>;tag=1",
                "To: <sip:b@192.0.2.1>",
                "Call-ID: id-4",
                "CSeq: 4 MESSAGE",
                "Content-Length: 18446744073709551616",
            ]),
        ),
        (
            "tel-uri",
            0x00,
            sip(&[
                "INVITE tel:+4930123456 SIP/2.0",
                "Via: SIP/2.0/UDP 198.51.100.7;branch=z9hG4bKtel",
                "From: <tel:+1>;tag=1",
                "To: <tel:+4930123456>",
                "Call-ID: id-5",
                "CSeq: 5 INVITE",
                "Content-Length: 0",
            ]),
        ),
        (
            "cancel-folded",
            0x0d,
            sip(&[
                "CANCEL sip:uuid000001@192.0.2.1 SIP/2.0",
                "Via: SIP/2.0/UDP 198.51.100.7:5060",
                "  ;branch=z9hG4bKinv1",
                "From: <sip:a@example.com>;tag=x",
                "To: <sip:uuid000001@192.0.2.1>",
                "Call-ID: id-1",
                "CSeq: 1 CANCEL",
                "P-Asserted-Identity:",
                " <sip:ceo@example.com>",
                "Content-Length: 0",
            ]),
        ),
        (
            "register-star",
            0x01,
            sip(&[
                "REGISTER sip:registrar.test SIP/2.0",
                "Via: SIP/2.0/UDP 192.0.2.1:5062;rport;branch=z9hG4bKt1.00",
                "To: <sip:alice@registrar.test>",
                "From: <sip:alice@registrar.test>;tag=1",
                "Call-ID: reg-1",
                "CSeq: 9 REGISTER",
                "Contact: *",
                "Expires: 0",
                "Authorization: Digest username=\"alice\", realm=\"registrar.test\", nonce=\"n\", uri=\"sip:registrar.test\", response=\"00\", qop=auth, nc=ffffffff, cnonce=\"c\"",
                "Content-Length: 0",
            ]),
        ),
    ]
}

/// Byte streams on a connection.
fn streams() -> Vec<(&'static str, Vec<u8>)> {
    let register = sip(&[
        "REGISTER sip:registrar.test SIP/2.0",
        "Via: SIP/2.0/TCP 192.0.2.1:5062;branch=z9hG4bKt1.00",
        "Call-ID: s1",
        "CSeq: 1 REGISTER",
        "Content-Length: 0",
    ]);
    let mut pings = b"\r\n\r\n\r\n\r\n\r\n".to_vec();
    pings.extend_from_slice(&register);
    pings.extend_from_slice(b"\r\n");
    pings.extend_from_slice(&register);
    vec![
        (
            "wrapping-length",
            sip(&[
                "INVITE sip:a@b SIP/2.0",
                "Content-Length: 18446744073709551615",
            ]),
        ),
        (
            "conflicting-lengths",
            sip(&["SIP/2.0 200 OK", "Content-Length: 4", "l: 5"]),
        ),
        ("no-length", sip(&["SIP/2.0 200 OK", "Via: x"])),
        (
            "signed-length",
            sip(&["SIP/2.0 200 OK", "Content-Length: +4"]),
        ),
        ("pings-between", pings),
        (
            "lf-lf",
            b"SIP/2.0 200 OK\nl: 3\n\nabcSIP/2.0 100 Trying\r\nl:0\n\r\n".to_vec(),
        ),
        (
            "length-at-limit",
            sip(&["SIP/2.0 200 OK", "Content-Length: 65535"]),
        ),
    ]
}

/// `WWW-Authenticate` / `Proxy-Authenticate` / `Authorization` values.
const CHALLENGES: [&str; 12] = [
    "Digest realm=\"testrealm@host.com\", qop=\"auth,auth-int\", nonce=\"dcd98b7102dd2f0e8b11d0f600bfb0c093\", opaque=\"5ccc069c403ebaf9f0171e9517f40e41\"",
    "Digest realm=\"http-auth@example.org\", qop=\"auth, auth-int\", algorithm=SHA-256, nonce=\"7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v\", opaque=\"FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS\"",
    "digest REALM=registrar.test,NONCE=abc,ALGORITHM=md5-sess,QOP=auth",
    "Digest realm=\"a\\\"b\\\\c\", nonce=\"n\", stale=true",
    "Digest realm=\"r\", nonce=\"n\", algorithm=SHA-512-256",
    "Digest realm=\"r\", nonce=\"n\", algorithm=AKAv1-MD5",
    "Digest realm=\"r\", nonce=\"n\", qop=\"auth-conf\"",
    "Digest realm=\"r\rInjected: yes\", nonce=\"n\"",
    "Basic realm=\"r\"",
    "Digest realm=\"unterminated, nonce=\"n\"",
    "Digest username=\"alice\", realm=\"registrar.test\", nonce=\"n\", uri=\"sip:registrar.test\", response=\"6629fae49393a05397450978507c4ef1\", algorithm=MD5, cnonce=\"0a4f113b\", qop=auth, nc=00000001, opaque=\"o\"",
    "Digest username=\"a\", realm=\"r\", nonce=\"n\", uri=\"u\", response=\"x\", nc=zz",
];

/// JSON-RPC `params` of each method, by the method index of the rpc_params harness.
const RPC: [(&str, u8, &str); 16] = [
    ("info", 0, r#"["l_uuid","uuid000001"]"#),
    ("info-object", 0, r#"{"attr":"l_uuid","val":"x"}"#),
    ("enable-number", 1, r#"["r_username", 4930123456]"#),
    ("disable-empty", 2, r#"["l_username",""]"#),
    ("register", 3, r#"["auth_username","alice"]"#),
    ("unregister-bad-attr", 4, r#"["realm","x"]"#),
    ("refresh", 5, r#"["uuid000001"]"#),
    ("remove-null", 6, r#"[null]"#),
    (
        "lookup-uri",
        7,
        r#"["sips:alice@[2001:db8::1]:5061;line=x?h=1"]"#,
    ),
    ("lookup-uuid", 7, r#"["uuid000001"]"#),
    ("reload", 8, "[]"),
    ("reload-force", 8, r#"["force"]"#),
    ("active", 9, r#"[" 1 "]"#),
    ("active-big", 9, r#"[1e400]"#),
    (
        "add",
        10,
        r#"["uuid9","alice","pbx.test","alice","registrar.test",".","alice","secret",".","sip:192.0.2.20;transport=tcp",3600,0,"5","udp:127.0.0.1:5062","192.0.2.1:5062"]"#,
    ),
    (
        "add-ha1",
        11,
        r#"["uuid10","bob","pbx.test","bob","[2001:db8::10]:5070","registrar.test","bob",".","0123456789abcdef0123456789abcdef","",-1,2147483648,0,"."]"#,
    ),
];

/// Rows for the row harness: per text column a mode byte (0: realistic) and a pick, the id
/// (eight bytes), then a mode byte per integer column (below 128: realistic, by index).
fn rows() -> Vec<(&'static str, Vec<u8>)> {
    let row = |picks: [u8; 13], integers: [u8; 3], inserted: Option<(usize, char)>| {
        let mut bytes = Vec::new();
        for (column, pick) in picks.iter().enumerate() {
            match inserted {
                Some((at, c)) if at == column => {
                    bytes.extend_from_slice(&[1, *pick]);
                    bytes.extend_from_slice(&u32::from(c).to_le_bytes());
                    bytes.push(3);
                }
                _ => bytes.extend_from_slice(&[0, *pick]),
            }
        }
        bytes.extend_from_slice(&7i64.to_le_bytes());
        bytes.extend_from_slice(&integers);
        bytes
    };
    vec![
        ("plain", row([0; 13], [0, 1, 1], None)),
        (
            "tcp-proxy-socket",
            row([1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 1], [2, 0, 0], None),
        ),
        (
            "ipv6",
            row([2, 2, 2, 1, 2, 1, 0, 0, 1, 5, 2, 0, 3], [4, 5, 6], None),
        ),
        (
            "sips",
            row([0, 0, 0, 0, 0, 2, 0, 0, 0, 2, 3, 3, 0], [0, 0, 0], None),
        ),
        (
            "cr-in-auth-username",
            row([0; 13], [0, 0, 0], Some((6, '\r'))),
        ),
        ("lf-in-l-domain", row([0; 13], [0, 0, 0], Some((2, '\n')))),
        (
            "nul-in-realm",
            row(
                [0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0],
                [0, 0, 0],
                Some((5, '\0')),
            ),
        ),
    ]
}

/// Adds every hand-written seed.
pub fn add(corpus: &mut Corpus) {
    for (i, (name, response)) in responses().into_iter().enumerate() {
        let claim = (i % 4) as u8;
        let arrival = if name == "ipv6" { 0 } else { (i % 3) as u8 * 7 };
        corpus.add(
            "response",
            &format!("edge-{name}"),
            with_prefix(&[claim, arrival, 0], &response),
        );
        let relay = relayed(&response);
        corpus.add(
            "relay_response",
            &format!("edge-{name}"),
            with_prefix(&[0x08 | (i as u8 & 7), 1, 0], &relay),
        );
    }
    for (name, flags, request) in requests() {
        corpus.add(
            "request",
            &format!("edge-{name}"),
            with_prefix(&[flags, 3], &request),
        );
        corpus.add(
            "stream",
            &format!("edge-request-{name}"),
            with_prefix(&[0, 7], &request),
        );
    }
    for (name, stream) in streams() {
        corpus.add(
            "stream",
            &format!("edge-{name}"),
            with_prefix(&[0, 0], &stream),
        );
        corpus.add(
            "stream",
            &format!("edge-{name}-bytewise"),
            with_prefix(&[0, 8], &stream),
        );
    }
    for (i, value) in CHALLENGES.iter().enumerate() {
        let flags = (i * 5) as u8 & 0x3f;
        corpus.add(
            "challenge",
            &format!("edge-{i}"),
            with_prefix(&[flags, i as u8], value.as_bytes()),
        );
    }
    for (name, method, params) in RPC {
        corpus.add(
            "rpc_params",
            &format!("rpc-{name}"),
            with_prefix(&[method], params.as_bytes()),
        );
    }
    corpus.add("rpc_params", "rpc-no-params", vec![0x88]);
    for (name, row) in rows() {
        corpus.add("row", &format!("edge-{name}"), row);
    }
    // A relayed response whose relay Via shares its line with the next one.
    let shared_line = sip(&[
        "SIP/2.0 180 Ringing",
        "v: SIP/2.0/UDP 192.0.2.1:5062;branch=$relay-branch , SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK776asdhds",
        "To: <sip:uuid000001@192.0.2.1>;tag=r",
        "Call-ID: a84b4c76e66710",
        "CSeq: 314159 INVITE",
        "Content-Length: 0",
    ]);
    corpus.add(
        "relay_response",
        "edge-shared-via-line",
        with_prefix(&[0x08, 0, 0], &shared_line),
    );
    corpus.add(
        "relay_response",
        "edge-upper-marker",
        with_prefix(&[0x48, 0, 0], &shared_line),
    );
    corpus.add(
        "relay_response",
        "edge-from-elsewhere",
        with_prefix(&[0x38, 0, 0], &shared_line),
    );
}

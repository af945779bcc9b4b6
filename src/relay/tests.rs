//! The decisions of [`super::request`] and [`super::response`] on real and broken messages.

use std::net::SocketAddr;

use super::branch::{RelayKey, TAG_MAC_HEX};
use super::flow_token::{MAX_PATH, ReturnPath};
use super::outcome::{Outcome, ResponseOutcome};
use super::policy::{Sender, UnknownUserReply, UntrustedPolicy};
use super::request::{Action, Addressee, Arrival, Inbound, RelayConfig, handle_request};
use super::response::{ResponseRoute, route_response};
use crate::sip::message::{Request, Response};

static KEY: std::sync::LazyLock<RelayKey> =
    std::sync::LazyLock::new(|| RelayKey::from_secret(&[7; 32]));

fn config() -> RelayConfig<'static> {
    RelayConfig {
        via_transport: "UDP",
        via_sent_by: "127.0.0.1:5062",
        key: &KEY,
        user_agent: "uacreg",
        relaying: true,
        untrusted: UntrustedPolicy::Drop,
        unknown_user: UnknownUserReply::NotFound,
    }
}

/// The proxy our test gateway relays to.
fn proxy() -> SocketAddr {
    "192.0.2.50:5060".parse().unwrap()
}

/// A datagram on the main socket from `from`.
fn arrival(from: SocketAddr, sender: Sender) -> Arrival {
    Arrival {
        from,
        path: ReturnPath::Udp {
            local: None,
            source: from,
        },
        sender,
    }
}

const SDP: &str = "v=0\r\no=- 1 1 IN IP4 203.0.113.5\r\ns=-\r\nc=IN IP4 203.0.113.5\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0 8\r\na=rtpmap:0 PCMU/8000\r\n";

fn registrar() -> SocketAddr {
    "203.0.113.5:5060".parse().unwrap()
}

/// An INVITE from a remote registrar's proxy for our Contact `sip:uuid1@gw`.
fn invite() -> String {
    format!(
        "INVITE sip:uuid1@192.0.2.10:5080 SIP/2.0\r\n\
Via: SIP/2.0/UDP sip.provider.example:5060;rport;branch=z9hG4bK776asdhds\r\n\
Via: SIP/2.0/TLS 10.1.1.1:5061;branch=z9hG4bKcaller1;received=198.51.100.9\r\n\
Max-Forwards: 70\r\n\
To: <sip:+4930123456@provider.example>\r\n\
From: \"Bob, Caller\" <sip:bob@provider.example>;tag=1928301774\r\n\
Call-ID: a84b4c76e66710@pc33.provider.example\r\n\
CSeq: 314159 INVITE\r\n\
Contact: <sip:bob@198.51.100.9:5061;transport=tls>\r\n\
Record-Route: <sip:sip.provider.example;lr>\r\n\
Content-Type: application/sdp\r\n\
Content-Length: {}\r\n\r\n{SDP}",
        SDP.len()
    )
}

fn cancel() -> String {
    "CANCEL sip:uuid1@192.0.2.10:5080 SIP/2.0\r\n\
Via: SIP/2.0/UDP sip.provider.example:5060;rport;branch=z9hG4bK776asdhds\r\n\
Max-Forwards: 70\r\n\
To: <sip:+4930123456@provider.example>\r\n\
From: \"Bob, Caller\" <sip:bob@provider.example>;tag=1928301774\r\n\
Call-ID: a84b4c76e66710@pc33.provider.example\r\n\
CSeq: 314159 CANCEL\r\n\
Content-Length: 0\r\n\r\n"
        .to_string()
}

/// ACK for a non-2xx final response to the INVITE: same branch, To tag of the response.
fn ack(to_tag: &str, branch: &str) -> String {
    format!(
        "ACK sip:uuid1@192.0.2.10:5080 SIP/2.0\r\n\
Via: SIP/2.0/UDP sip.provider.example:5060;rport;branch={branch}\r\n\
Max-Forwards: 70\r\n\
To: <sip:+4930123456@provider.example>;tag={to_tag}\r\n\
From: \"Bob, Caller\" <sip:bob@provider.example>;tag=1928301774\r\n\
Call-ID: a84b4c76e66710@pc33.provider.example\r\n\
CSeq: 314159 ACK\r\n\
Content-Length: 0\r\n\r\n"
    )
}

fn lookup(addressee: &Addressee) -> Option<String> {
    match addressee.key() {
        "uuid1" => Some("sip:alice@pbx.example".into()),
        "uuid7" => Some("sip:carol@pbx.example".into()),
        _ => None,
    }
}

fn forwarded(inbound: Inbound) -> String {
    match inbound.action {
        Action::Forward(bytes) => String::from_utf8(bytes).unwrap(),
        _ => panic!("expected Forward, got {inbound:?}"),
    }
}

fn replied(inbound: Inbound) -> String {
    match inbound.action {
        Action::Reply(bytes) => String::from_utf8(bytes).unwrap(),
        _ => panic!("expected Reply, got {inbound:?}"),
    }
}

/// A request from a trusted sender.
fn handle(raw: &str, from: SocketAddr) -> Inbound {
    handle_request(
        raw.as_bytes(),
        arrival(from, Sender::Trusted),
        &config(),
        lookup,
    )
}

/// A request from an untrusted sender, under `adjust`ed settings.
fn handle_untrusted(
    raw: &str,
    from: SocketAddr,
    adjust: impl FnOnce(&mut RelayConfig<'static>),
) -> Inbound {
    let mut config = config();
    adjust(&mut config);
    handle_request(
        raw.as_bytes(),
        arrival(from, Sender::Untrusted),
        &config,
        lookup,
    )
}

fn nothing(outcome: Outcome) -> Inbound {
    Inbound {
        outcome,
        action: Action::Nothing,
    }
}

/// The branch of the first Via of a message.
fn top_branch(text: &str) -> String {
    let request = Request::parse(text.as_bytes()).unwrap();
    let top = request.vias[0].clone();
    top.split(";branch=")
        .nth(1)
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string()
}

fn header_line<'t>(text: &'t str, prefix: &str) -> &'t str {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no {prefix} line in {text}"))
}

#[test]
fn invite_is_forwarded_with_new_uri_our_via_and_everything_else_kept() {
    let original = invite();
    let out = forwarded(handle(&original, registrar()));
    let mut lines = out.split("\r\n");
    assert_eq!(lines.next(), Some("INVITE sip:alice@pbx.example SIP/2.0"));
    let our_via = lines.next().unwrap();
    assert!(
        our_via.starts_with("Via: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bKrly-"),
        "{our_via}"
    );
    assert_eq!(
        handle(&original, registrar()).outcome,
        Outcome::RelayedTrusted
    );
    // The sender's Via: sent-by is a name, so received; empty rport filled in.
    assert_eq!(
        lines.next(),
        Some(
            "Via: SIP/2.0/UDP sip.provider.example:5060;rport=5060;branch=z9hG4bK776asdhds;received=203.0.113.5"
        )
    );
    assert!(out.contains("\r\nMax-Forwards: 69\r\n"));
    // Everything else is the original, byte for byte, body included.
    let expected = original
        .replacen(
            "INVITE sip:uuid1@192.0.2.10:5080 SIP/2.0\r\n",
            &format!("INVITE sip:alice@pbx.example SIP/2.0\r\n{our_via}\r\n"),
            1,
        )
        .replacen(
            ";rport;branch=z9hG4bK776asdhds\r\n",
            ";rport=5060;branch=z9hG4bK776asdhds;received=203.0.113.5\r\n",
            1,
        )
        .replacen("Max-Forwards: 70\r\n", "Max-Forwards: 69\r\n", 1);
    assert_eq!(out, expected);
    // Our parser reads it back.
    let parsed = Request::parse(out.as_bytes()).unwrap();
    assert_eq!(parsed.vias.len(), 3);
    assert_eq!(parsed.cseq, 314159);
}

#[test]
fn retransmission_cancel_and_non_2xx_ack_share_the_invite_branch() {
    let invite_branch = top_branch(&forwarded(handle(&invite(), registrar())));
    let again = top_branch(&forwarded(handle(&invite(), registrar())));
    assert_eq!(invite_branch, again);

    let cancel = forwarded(handle(&cancel(), registrar()));
    assert!(cancel.starts_with("CANCEL sip:alice@pbx.example SIP/2.0\r\n"));
    assert_eq!(top_branch(&cancel), invite_branch);

    let ack_non_2xx = forwarded(handle(&ack("as83kd9bs", "z9hG4bK776asdhds"), registrar()));
    assert_eq!(top_branch(&ack_non_2xx), invite_branch);

    // The ACK for a 2xx is a transaction of its own with a new branch.
    let ack_2xx = forwarded(handle(&ack("as83kd9bs", "z9hG4bKnew2xx"), registrar()));
    assert_ne!(top_branch(&ack_2xx), invite_branch);

    // Another key, other branches.
    let other_key = RelayKey::from_secret(&[8; 32]);
    let other = RelayConfig {
        key: &other_key,
        ..config()
    };
    let out = forwarded(handle_request(
        invite().as_bytes(),
        arrival(registrar(), Sender::Trusted),
        &other,
        lookup,
    ));
    assert_ne!(top_branch(&out), invite_branch);
    assert!(top_branch(&out).starts_with("z9hG4bKrly-"));

    // The same transaction arriving another way is another branch (the path is in it).
    let elsewhere: SocketAddr = "203.0.113.5:5099".parse().unwrap();
    assert_ne!(
        top_branch(&forwarded(handle(&invite(), elsewhere))),
        invite_branch
    );
}

#[test]
fn rfc2543_branches_are_derived_from_the_transaction_fields() {
    let old = |method: &str, cseq: &str, to_tag: &str| {
        format!(
            "{method} sip:uuid1@gw SIP/2.0\r\nVia: SIP/2.0/UDP 203.0.113.5:5060\r\n\
To: <sip:x@provider.example>{to_tag}\r\nFrom: <sip:bob@provider.example>;tag=77\r\n\
Call-ID: old-1\r\nCSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n"
        )
    };
    let branch = |text: String| top_branch(&forwarded(handle(&text, registrar())));
    let invite = branch(old("INVITE", "1", ""));
    assert_eq!(branch(old("CANCEL", "1", "")), invite);
    assert_eq!(branch(old("ACK", "1", ";tag=resp")), invite);
    assert_ne!(branch(old("BYE", "2", ";tag=resp")), invite);
    assert_ne!(branch(old("INVITE", "3", ";tag=resp")), invite);
}

#[test]
fn line_parameter_is_the_lookup_key() {
    let request = "INVITE sip:alice@gw.example:5080;line=uuid7 SIP/2.0\r\n\
Via: SIP/2.0/UDP 203.0.113.5:5060;branch=z9hG4bKline7\r\n\
To: <sip:alice@provider.example>\r\nFrom: <sip:bob@provider.example>;tag=9\r\n\
Call-ID: line-call\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n";
    let seen = std::cell::RefCell::new(Vec::new());
    let out = handle_request(
        request.as_bytes(),
        arrival(registrar(), Sender::Trusted),
        &config(),
        |a| {
            seen.borrow_mut().push(a.clone());
            lookup(a)
        },
    );
    assert_eq!(
        seen.into_inner(),
        vec![Addressee {
            user: "alice".into(),
            line: Some("uuid7".into())
        }]
    );
    let out = forwarded(out);
    assert!(out.starts_with("INVITE sip:carol@pbx.example SIP/2.0\r\n"));
    // No Max-Forwards: one is added. Same host as the source, no rport: Via unchanged.
    assert!(out.contains("\r\nMax-Forwards: 69\r\n"));
    assert!(out.contains("\r\nVia: SIP/2.0/UDP 203.0.113.5:5060;branch=z9hG4bKline7\r\n"));
    // `alice` alone is not a registration.
    let plain = request.replace(";line=uuid7", "");
    assert!(replied(handle(&plain, registrar())).starts_with("SIP/2.0 404 Not Found\r\n"));
}

#[test]
fn options_is_answered_by_the_gateway() {
    for uri in [
        "sip:192.0.2.10:5080",
        "sip:uuid1@192.0.2.10:5080",
        "sip:nobody@gw",
    ] {
        let request = format!(
            "OPTIONS {uri} SIP/2.0\r\nVia: SIP/2.0/UDP 203.0.113.5:5060;rport;branch=z9hG4bKopt\r\n\
Max-Forwards: 0\r\nTo: <{uri}>\r\nFrom: <sip:ping@provider.example>;tag=p1\r\n\
Call-ID: ping-1\r\nCSeq: 7 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        );
        let reply = replied(handle(&request, registrar()));
        assert!(reply.starts_with("SIP/2.0 200 OK\r\n"), "{reply}");
        assert_eq!(
            header_line(&reply, "Via:"),
            "Via: SIP/2.0/UDP 203.0.113.5:5060;rport=5060;branch=z9hG4bKopt;received=203.0.113.5"
        );
        assert!(header_line(&reply, "Allow:").contains("INVITE"));
        assert_eq!(header_line(&reply, "Accept:"), "Accept: application/sdp");
        assert!(header_line(&reply, "To:").starts_with(&format!("To: <{uri}>;tag=rly")));
        let tag = header_line(&reply, "To:").split(";tag=rly").nth(1).unwrap();
        assert_eq!(tag.len(), TAG_MAC_HEX, "a 96-bit MAC");
        assert_eq!(header_line(&reply, "Call-ID:"), "Call-ID: ping-1");
        assert_eq!(header_line(&reply, "CSeq:"), "CSeq: 7 OPTIONS");
        assert_eq!(header_line(&reply, "Server:"), "Server: uacreg");
        assert!(reply.ends_with("\r\nContent-Length: 0\r\n\r\n"));
        let parsed = Response::parse(reply.as_bytes()).unwrap();
        assert_eq!(parsed.code, 200);
        assert_eq!(parsed.branch.as_deref(), Some("z9hG4bKopt"));
    }
}

#[test]
fn unknown_user_gets_404_and_its_ack_is_absorbed() {
    let request = invite().replace("sip:uuid1@", "sip:stranger@");
    let reply = replied(handle(&request, registrar()));
    assert!(reply.starts_with("SIP/2.0 404 Not Found\r\n"));
    // Both Vias come back, the top one with received/rport.
    let vias: Vec<_> = reply.lines().filter(|l| l.starts_with("Via:")).collect();
    assert_eq!(vias.len(), 2);
    assert!(vias[1].contains("z9hG4bKcaller1"));
    let to = header_line(&reply, "To:");
    let tag = to.split(";tag=").nth(1).unwrap();
    // The tag is stable across retransmissions.
    assert_eq!(replied(handle(&request, registrar())), reply);

    // The ACK for our 404 (same branch, our tag) is dropped, also for a user we know.
    let our_ack = ack(tag, "z9hG4bK776asdhds");
    assert_eq!(handle(&our_ack, registrar()), nothing(Outcome::AckAbsorbed));
    // Our tag with one character changed is not ours: relayed for a known user.
    let mut forged = tag.to_string();
    let last = forged.pop().unwrap();
    forged.push(if last == '0' { '1' } else { '0' });
    assert_eq!(
        handle(&ack(&forged, "z9hG4bK776asdhds"), registrar()).outcome,
        Outcome::RelayedTrusted
    );
    // Any ACK for an unknown user is dropped.
    let stray = ack("x", "z9hG4bKother").replace("sip:uuid1@", "sip:stranger@");
    assert_eq!(handle(&stray, registrar()), nothing(Outcome::AckAbsorbed));
    // An ACK with someone else's tag for a known user is relayed.
    assert!(matches!(
        handle(&ack("theirs", "z9hG4bK776asdhds"), registrar()).action,
        Action::Forward(_)
    ));
}

#[test]
fn max_forwards_zero_is_483_and_other_values_are_decremented() {
    let request = invite().replace("Max-Forwards: 70", "Max-Forwards: 0");
    let reply = replied(handle(&request, registrar()));
    assert!(reply.starts_with("SIP/2.0 483 Too Many Hops\r\n"));
    let request = invite().replace("Max-Forwards: 70", "max-forwards:  1");
    assert!(forwarded(handle(&request, registrar())).contains("\r\nmax-forwards: 0\r\n"));
    let request = invite().replace("Max-Forwards: 70", "Max-Forwards: many");
    assert!(replied(handle(&request, registrar())).starts_with("SIP/2.0 400 Bad Request\r\n"));
    // An ACK is never answered.
    let request = ack("t", "z9hG4bKa").replace("Max-Forwards: 70", "Max-Forwards: 0");
    assert_eq!(handle(&request, registrar()), nothing(Outcome::AckAbsorbed));
}

/// Found by the `request` fuzz target (fuzz/seeds/request/crash-mixed-line-ends): after
/// CRLF lines, a bare LF ended the head for us, so the identity headers after it were body
/// and went to the proxy from a stranger whose policy is strip; a parser that ends lines
/// only at CRLF reads them as headers. A bare CR or a NUL in a header line splits the line
/// for other parsers in the same way. Such heads are malformed: not relayed, answered 400.
#[test]
fn a_head_other_parsers_would_cut_differently_is_not_relayed() {
    const FOUND: &[u8] = include_bytes!("../../fuzz/seeds/request/crash-mixed-line-ends");
    let (from, path) = ("198.51.100.7:5063".parse().unwrap(), ReturnPath::Flow(3));
    let strip = |config: &mut RelayConfig<'static>| config.untrusted = UntrustedPolicy::Strip;
    let mut config = config();
    strip(&mut config);
    // The fuzzer's input: two control bytes (untrusted, relaying, strip; port 3), then the
    // request; its l_uuid is the one the fuzz harness knows.
    let inbound = handle_request(
        &FOUND[2..],
        Arrival {
            from,
            path,
            sender: Sender::Untrusted,
        },
        &config,
        |a| (a.key() == "uuid000001").then(|| "sip:alice@pbx.example".into()),
    );
    assert_eq!(inbound.outcome, Outcome::Rejected);
    assert!(!matches!(inbound.action, Action::Forward(_)));

    let pai = "P-Asserted-Identity: <sip:ceo@provider.example>\r\n";
    let cut = invite().replacen("CSeq: 314159 INVITE\r\n", "CSeq: 314159 INVITE\r\n\n", 1);
    let cut = cut.replacen("Content-Type", &format!("{pai}Content-Type"), 1);
    let bare_cr = invite().replacen(
        "Content-Type",
        &format!("Subject: hi\r{pai}Content-Type"),
        1,
    );
    let nul = invite().replacen(
        "Content-Type",
        &format!("Subject: hi\0{pai}Content-Type"),
        1,
    );
    let stranger: SocketAddr = "198.51.100.7:5060".parse().unwrap();
    for request in [cut, bare_cr, nul] {
        let inbound = handle_untrusted(&request, stranger, strip);
        assert_eq!(inbound.outcome, Outcome::Rejected, "{request:?}");
        assert!(replied(handle(&request, registrar())).starts_with("SIP/2.0 400 Bad Request\r\n"));
    }
    // Consistent line ends, either kind, still pass.
    assert!(
        forwarded(handle_untrusted(&invite(), stranger, strip))
            .contains("\r\nCSeq: 314159 INVITE\r\n")
    );
    let crlf = invite();
    let (head, body) = crlf.split_once("\r\n\r\n").unwrap();
    let lf = format!("{}\n\n{body}", head.replace("\r\n", "\n"));
    let out = forwarded(handle(&lf, registrar()));
    assert!(!out.split_once("\n\n").unwrap().0.contains('\r'), "{out:?}");
}

#[test]
fn compact_forms_several_vias_in_a_line_and_lf_line_ends() {
    let request = "MESSAGE sip:uuid1@gw SIP/2.0\n\
v: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bKm1 , SIP/2.0/TCP 10.0.0.1:5080;branch=z9hG4bKm0\n\
t: <sip:uuid1@gw>\nf: <sip:bob@provider.example>;tag=f1\ni: msg-1\nCSeq: 2 MESSAGE\n\
c: text/plain\nl: 5\n\nhello";
    let from: SocketAddr = "198.51.100.7:40000".parse().unwrap();
    let out = forwarded(handle(request, from));
    assert!(!out.contains('\r'), "line ends stay LF: {out:?}");
    let mut lines = out.split('\n');
    assert_eq!(lines.next(), Some("MESSAGE sip:alice@pbx.example SIP/2.0"));
    assert!(
        lines
            .next()
            .unwrap()
            .starts_with("Via: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bKrly-")
    );
    assert_eq!(lines.next(), Some("Max-Forwards: 69"));
    // Same host, no rport: the line is copied as it was.
    assert_eq!(
        lines.next(),
        Some(
            "v: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bKm1 , SIP/2.0/TCP 10.0.0.1:5080;branch=z9hG4bKm0"
        )
    );
    assert!(out.ends_with("\nl: 5\n\nhello"));

    // From another address the first value of the line gets received.
    let other: SocketAddr = "192.0.2.99:5060".parse().unwrap();
    let out = forwarded(handle(request, other));
    assert!(out.contains(
        "\nv: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bKm1;received=192.0.2.99 , SIP/2.0/TCP 10.0.0.1:5080;branch=z9hG4bKm0\n"
    ));
}

#[test]
fn content_length_is_checked_and_extra_bytes_cut() {
    let request = invite();
    let short = request.replace(
        &format!("Content-Length: {}", SDP.len()),
        "Content-Length: 999",
    );
    assert!(replied(handle(&short, registrar())).starts_with("SIP/2.0 400 Bad Request\r\n"));
    let padded = format!("{request}garbage after the body");
    let out = forwarded(handle(&padded, registrar()));
    assert!(out.ends_with(SDP));
    // No Content-Length (allowed on UDP): added, so the proxy may use a stream.
    let bye = "BYE sip:uuid1@gw SIP/2.0\r\nVia: SIP/2.0/UDP 203.0.113.5;branch=z9hG4bKbye\r\n\
Max-Forwards: 10\r\nTo: <sip:a@b>;tag=callee\r\nFrom: <sip:bob@provider.example>;tag=f\r\n\
Call-ID: c\r\nCSeq: 3 BYE\r\n\r\n";
    let out = forwarded(handle(bye, registrar()));
    assert!(out.starts_with("BYE sip:alice@pbx.example SIP/2.0\r\n"));
    assert!(
        out.ends_with("\r\nCSeq: 3 BYE\r\nContent-Length: 0\r\n\r\n"),
        "{out}"
    );
    assert!(out.contains("\r\nMax-Forwards: 9\r\n"));
}

#[test]
fn requests_that_cannot_be_relayed() {
    let bad_line = invite().replace("Record-Route:", "Record-Route");
    assert!(replied(handle(&bad_line, registrar())).starts_with("SIP/2.0 400 Bad Request\r\n"));
    let tel = invite().replace("INVITE sip:uuid1@192.0.2.10:5080", "INVITE tel:+4930123456");
    assert!(replied(handle(&tel, registrar())).starts_with("SIP/2.0 416 "));
    let mismatch = invite().replace("CSeq: 314159 INVITE", "CSeq: 314159 BYE");
    assert!(replied(handle(&mismatch, registrar())).starts_with("SIP/2.0 400 "));
    // Nothing to answer to.
    let no_via = invite()
        .replace(
            "Via: SIP/2.0/UDP sip.provider.example:5060;rport;branch=z9hG4bK776asdhds\r\n",
            "",
        )
        .replace("Via: SIP/2.0/TLS", "X-Via: SIP/2.0/TLS");
    assert_eq!(handle(&no_via, registrar()), nothing(Outcome::Malformed));
    assert_eq!(
        handle("SIP/2.0 200 OK\r\n\r\n", registrar()),
        nothing(Outcome::Malformed)
    );
    assert_eq!(handle("\r\n\r\n", registrar()), nothing(Outcome::Malformed));
    assert_eq!(
        handle(&bad_line, registrar()).outcome,
        Outcome::Rejected,
        "a 400 is counted as rejected"
    );
    // A local URI that would break the request line.
    let out = handle_request(
        invite().as_bytes(),
        arrival(registrar(), Sender::Trusted),
        &config(),
        |_| Some("sip:a b".into()),
    );
    assert!(replied(out).starts_with("SIP/2.0 500 "));
}

#[test]
fn folded_via_and_non_utf8_headers() {
    let mut request = b"INFO sip:uuid1@gw SIP/2.0\r\nVia: SIP/2.0/UDP 203.0.113.5:5060\r\n  ;branch=z9hG4bKfold\r\n\
To: <sip:uuid1@gw>;tag=t\r\nFrom: \"M"
        .to_vec();
    request.extend_from_slice(b"\xfcller\" <sip:m@provider.example>;tag=f\r\nCall-ID: fold\r\nCSeq: 5 INFO\r\nContent-Length: 0\r\n\r\n");
    let Action::Forward(out) = handle_request(
        &request,
        arrival(registrar(), Sender::Trusted),
        &config(),
        lookup,
    )
    .action
    else {
        panic!("not forwarded");
    };
    // Untouched headers are copied as bytes, folding and Latin-1 included.
    let start = out.windows(5).position(|w| w == b"Via: ").unwrap();
    let start = start
        + out[start + 5..]
            .windows(5)
            .position(|w| w == b"Via: ")
            .unwrap()
        + 5;
    assert_eq!(
        &out[start..],
        &request[request.windows(5).position(|w| w == b"Via: ").unwrap()..]
    );
    assert!(out.windows(6).any(|w| w == b"M\xfcller"));
    // From elsewhere the folded value is rewritten on one line.
    let other: SocketAddr = "192.0.2.1:5060".parse().unwrap();
    let Action::Forward(out) =
        handle_request(&request, arrival(other, Sender::Trusted), &config(), lookup).action
    else {
        panic!("not forwarded");
    };
    let text = String::from_utf8_lossy(&out);
    assert!(
        text.contains(
            "\r\nVia: SIP/2.0/UDP 203.0.113.5:5060;branch=z9hG4bKfold;received=192.0.2.1\r\nTo:"
        ),
        "{text}"
    );
}

/// The proxy's answer to a forwarded request: its Vias, a To tag, a status line.
fn proxy_response(forwarded: &str, status: &str) -> String {
    let request = Request::parse(forwarded.as_bytes()).unwrap();
    let mut out = format!("SIP/2.0 {status}\r\n");
    for via in &request.vias {
        out.push_str(&format!("Via: {via}\r\n"));
    }
    out.push_str(&format!(
        "From: {}\r\nTo: {};tag=pbx9\r\nCall-ID: {}\r\nCSeq: {} {}\r\n\
Contact: <sip:alice@10.9.9.9:5060>\r\nContent-Length: 0\r\n\r\n",
        request.from, request.to, request.call_id, request.cseq, request.cseq_method
    ));
    out
}

/// A response arriving from the proxy.
fn route(response: &str) -> ResponseRoute {
    route_response(response.as_bytes(), proxy(), &KEY, Some(proxy()))
}

/// Our branch in a forwarded request, and the part after the marker.
fn relay_part(forwarded: &str) -> String {
    top_branch(forwarded)
        .strip_prefix("z9hG4bKrly-")
        .unwrap()
        .to_string()
}

#[test]
fn responses_go_back_along_the_observed_path() {
    let out = forwarded(handle(&invite(), registrar()));
    for status in ["180 Ringing", "200 OK", "486 Busy Here"] {
        let response = proxy_response(&out, status);
        let ResponseRoute::Relay { bytes, path } = route(&response) else {
            panic!("not relayed: {response}");
        };
        assert_eq!(
            path,
            ReturnPath::Udp {
                local: None,
                source: registrar()
            }
        );
        let text = String::from_utf8(bytes).unwrap();
        assert!(!text.contains("rly-"), "{text}");
        assert_eq!(
            text,
            response.replacen(
                &format!(
                    "Via: {}\r\n",
                    Request::parse(out.as_bytes()).unwrap().vias[0]
                ),
                "",
                1
            )
        );
        let parsed = Response::parse(text.as_bytes()).unwrap();
        assert_eq!(parsed.branch.as_deref(), Some("z9hG4bK776asdhds"));
    }
    // The same on a row's own socket, and over a connection.
    let local: SocketAddr = "192.0.2.10:5080".parse().unwrap();
    for path in [
        ReturnPath::Udp {
            local: Some(local),
            source: registrar(),
        },
        ReturnPath::Flow(0x1234),
    ] {
        let arrival = Arrival {
            from: registrar(),
            path,
            sender: Sender::Trusted,
        };
        let out = forwarded(handle_request(
            invite().as_bytes(),
            arrival,
            &config(),
            lookup,
        ));
        match route(&proxy_response(&out, "200 OK")) {
            ResponseRoute::Relay { path: back, .. } => assert_eq!(back, path),
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn the_second_via_never_says_where_a_response_goes() {
    // The sender's Via claims another host and port: the response still goes to the
    // address the request came from, the only one the MAC vouches for.
    let request = invite().replace(
        "Via: SIP/2.0/UDP sip.provider.example:5060;rport;branch=z9hG4bK776asdhds",
        "Via: SIP/2.0/UDP 198.51.100.77:9;received=198.51.100.77;rport=9;branch=z9hG4bK776asdhds",
    );
    let out = forwarded(handle(&request, registrar()));
    // The sender's received/rport are replaced by what we saw.
    assert!(
        out.contains(
            "\r\nVia: SIP/2.0/UDP 198.51.100.77:9;rport=5060;branch=z9hG4bK776asdhds;received=203.0.113.5\r\n"
        ),
        "{out}"
    );
    let ResponseRoute::Relay { path, .. } = route(&proxy_response(&out, "200 OK")) else {
        panic!("not relayed");
    };
    assert_eq!(
        path,
        ReturnPath::Udp {
            local: None,
            source: registrar()
        }
    );
}

#[test]
fn received_and_rport_are_always_what_we_saw() {
    let from: SocketAddr = "198.51.100.20:40000".parse().unwrap();
    for (via, expected) in [
        // Forged received on a matching host, no rport: removed, nothing added.
        (
            "SIP/2.0/UDP 198.51.100.20:5060;received=192.0.2.66;branch=z9hG4bKr1",
            "SIP/2.0/UDP 198.51.100.20:5060;branch=z9hG4bKr1",
        ),
        // Forged rport value and received: both replaced.
        (
            "SIP/2.0/UDP 198.51.100.20:5060;rport=7;received=192.0.2.66;branch=z9hG4bKr2",
            "SIP/2.0/UDP 198.51.100.20:5060;rport=40000;branch=z9hG4bKr2;received=198.51.100.20",
        ),
        // Two rports, received in upper case: one rport, ours.
        (
            "SIP/2.0/UDP host.example;RECEIVED=192.0.2.66;rport=1;rport;branch=z9hG4bKr3",
            "SIP/2.0/UDP host.example;rport=40000;branch=z9hG4bKr3;received=198.51.100.20",
        ),
    ] {
        let request = invite().replace(
            "SIP/2.0/UDP sip.provider.example:5060;rport;branch=z9hG4bK776asdhds",
            via,
        );
        for inbound in [
            handle(&request, from),
            handle_untrusted(&request, from, |c| c.untrusted = UntrustedPolicy::Strip),
        ] {
            let out = forwarded(inbound);
            assert!(
                out.contains(&format!("\r\nVia: {expected}\r\n")),
                "{via}: {out}"
            );
        }
        // Our own answers carry the same Via.
        let unknown = request.replace("sip:uuid1@", "sip:nobody@");
        let reply = replied(handle(&unknown, from));
        assert!(
            reply.contains(&format!("\r\nVia: {expected}\r\n")),
            "{reply}"
        );
    }
}

#[test]
fn our_via_first_of_several_in_one_line() {
    let out = forwarded(handle(&invite(), registrar()));
    let ours = Request::parse(out.as_bytes()).unwrap().vias[0].clone();
    let response = format!(
        "SIP/2.0 200 OK\r\n\
Via: {ours};rport=5062, SIP/2.0/UDP gw.provider.example;branch=z9hG4bKx1,SIP/2.0/UDP 10.0.0.2:5070;branch=z9hG4bKx0\r\n\
From: <sip:bob@provider.example>;tag=1\r\nTo: <sip:alice@pbx.example>;tag=2\r\nCall-ID: c\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n"
    );
    let expected = response.replace(&format!("{ours};rport=5062, "), "");
    assert_eq!(
        route(&response),
        ResponseRoute::Relay {
            bytes: expected.into_bytes(),
            path: ReturnPath::Udp {
                local: None,
                source: registrar()
            },
        }
    );
}

#[test]
fn forged_and_tampered_branches_are_refused() {
    let out = forwarded(handle(&invite(), registrar()));
    let good = relay_part(&out);
    let response = proxy_response(&out, "200 OK");
    assert!(matches!(route(&response), ResponseRoute::Relay { .. }));
    let with_part = |part: &str| response.replacen(&good, part, 1);
    let bad_mac = ResponseRoute::Refused(ResponseOutcome::BadMac);

    // Every single character of the branch matters.
    for at in 0..good.len() {
        let mut part = good.clone().into_bytes();
        part[at] = if part[at] == b'0' { b'1' } else { b'0' };
        let part = String::from_utf8(part).unwrap();
        assert_eq!(route(&with_part(&part)), bad_mac, "{part}");
    }
    // Another path with the original MAC: a stranger cannot redirect the response.
    let (tx, rest) = good.split_once('.').unwrap();
    let (_, mac) = rest.split_once('.').unwrap();
    for path in [
        ReturnPath::Udp {
            local: None,
            source: "198.51.100.66:5060".parse().unwrap(),
        },
        ReturnPath::Flow(1),
    ] {
        let part = format!("{tx}.{}.{mac}", path.encode());
        assert_eq!(route(&with_part(&part)), bad_mac, "{part}");
    }
    // The old formats, an empty or truncated MAC, extra parts, upper-case hex.
    for part in [
        "u.0011223344556677",
        "u7.abcd",
        "f1.abcd",
        "f1",
        "",
        &format!("{tx}.{}.", rest.split_once('.').unwrap().0),
        &format!("{good}.x"),
        &good.to_ascii_uppercase(),
        &good[..good.len() - 1],
    ] {
        assert_eq!(route(&with_part(part)), bad_mac, "{part:?}");
    }
    // The marker in another letter case is still ours: refused, not taken for a REGISTER
    // answer.
    let shouting = response.replacen("z9hG4bKrly-", "Z9HG4BKRLY-", 1);
    assert!(matches!(route(&shouting), ResponseRoute::Relay { .. }));
    let forged = shouting.replacen(&good, "u7.abcd", 1);
    assert_eq!(route(&forged), bad_mac);

    // Another process's key.
    let other = RelayKey::from_secret(&[9; 32]);
    assert_eq!(
        route_response(response.as_bytes(), proxy(), &other, Some(proxy())),
        bad_mac
    );
}

#[test]
fn only_the_proxy_gets_responses_relayed() {
    let out = forwarded(handle(&invite(), registrar()));
    let response = proxy_response(&out, "200 OK");
    let stranger: SocketAddr = "198.51.100.66:5060".parse().unwrap();
    let other_port: SocketAddr = "192.0.2.50:5061".parse().unwrap();
    for from in [stranger, other_port, registrar()] {
        assert_eq!(
            route_response(response.as_bytes(), from, &KEY, Some(proxy())),
            ResponseRoute::Refused(ResponseOutcome::WrongSource),
            "{from}"
        );
    }
    // The proxy's IPv4 address seen through a dual-stack socket is the proxy.
    let mapped: SocketAddr = "[::ffff:192.0.2.50]:5060".parse().unwrap();
    assert!(matches!(
        route_response(response.as_bytes(), mapped, &KEY, Some(proxy())),
        ResponseRoute::Relay { .. }
    ));
    // Without a proxy nothing carrying our marker is relayed, from anyone.
    assert_eq!(
        route_response(response.as_bytes(), proxy(), &KEY, None),
        ResponseRoute::Refused(ResponseOutcome::NoProxy)
    );
}

#[test]
fn responses_that_are_not_ours_or_unusable() {
    let register_200 = "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5080;rport=5080;branch=z9hG4bK00000000000000ab.3\r\n\
From: <sip:u@r>;tag=1\r\nTo: <sip:u@r>;tag=2\r\nCall-ID: c\r\nCSeq: 1 REGISTER\r\nContent-Length: 0\r\n\r\n";
    assert_eq!(route(register_200), ResponseRoute::NotRelayed);
    assert_eq!(
        route("INVITE sip:a@b SIP/2.0\r\n\r\n"),
        ResponseRoute::NotRelayed
    );
    assert_eq!(route("SIP/2.0 200 OK\r\n\r\n"), ResponseRoute::NotRelayed);
    // A genuine branch but nothing left after our Via: not a response to a relayed request.
    let out = forwarded(handle(&invite(), registrar()));
    let ours = Request::parse(out.as_bytes()).unwrap().vias[0].clone();
    let alone = register_200.replace(
        "SIP/2.0/UDP 127.0.0.1:5080;rport=5080;branch=z9hG4bK00000000000000ab.3",
        &ours,
    );
    assert_eq!(
        route(&alone),
        ResponseRoute::Refused(ResponseOutcome::Malformed)
    );
}

#[test]
fn return_paths_round_trip() {
    for path in [
        ReturnPath::Flow(0),
        ReturnPath::Flow(u64::MAX),
        ReturnPath::Udp {
            local: None,
            source: "203.0.113.5:5060".parse().unwrap(),
        },
        ReturnPath::Udp {
            local: Some("[2001:db8::5]:5062".parse().unwrap()),
            source: "[2001:db8:ffff::1]:65535".parse().unwrap(),
        },
        ReturnPath::Udp {
            local: Some("10.0.0.5:5060".parse().unwrap()),
            source: "[::ffff:10.0.0.9]:1".parse().unwrap(),
        },
    ] {
        let text = path.encode();
        assert!(text.len() <= MAX_PATH, "{text}");
        assert!(text.bytes().all(|b| b.is_ascii_alphanumeric()), "{text}");
        assert_eq!(ReturnPath::decode(&text), Some(path));
    }
    for bad in [
        "",
        "u",
        "um",
        "um4",
        "f",
        "f+1",
        "fG",
        "x4",
        "um4cb007105013c4ff",
        "uq4cb00710513c4",
    ] {
        assert_eq!(ReturnPath::decode(bad), None, "{bad}");
    }
}

#[test]
fn untrusted_senders_get_nothing_relayed_and_the_same_answer_as_for_an_unknown_user() {
    let stranger: SocketAddr = "198.51.100.66:5060".parse().unwrap();
    let known = invite();
    let unknown = invite().replace("sip:uuid1@", "sip:nobody@");
    let refused = handle_untrusted(&known, stranger, |_| {});
    let missing = handle_untrusted(&unknown, stranger, |_| {});
    assert_eq!(refused.outcome, Outcome::RefusedUntrusted);
    assert_eq!(missing.outcome, Outcome::UnknownUser);
    let (refused, missing) = (replied(refused), replied(missing));
    assert!(
        refused.starts_with("SIP/2.0 404 Not Found\r\n"),
        "{refused}"
    );
    // Byte for byte the same (the Request-URI is not in a response).
    assert_eq!(refused, missing);
    assert!(!refused.contains("Server:"), "{refused}");
    // Silent: nothing for either.
    let silent = |c: &mut RelayConfig<'static>| c.unknown_user = UnknownUserReply::Silent;
    assert_eq!(
        handle_untrusted(&known, stranger, silent),
        nothing(Outcome::RefusedUntrusted)
    );
    assert_eq!(
        handle_untrusted(&unknown, stranger, silent),
        nothing(Outcome::UnknownUser)
    );
    // "strip" without a proxy relays nothing either, and says so in the same way.
    let no_proxy = handle_untrusted(&known, stranger, |c| {
        c.untrusted = UntrustedPolicy::Strip;
        c.relaying = false;
    });
    assert_eq!(no_proxy.outcome, Outcome::RefusedUntrusted);
    assert_eq!(replied(no_proxy), missing);
    // A trusted sender without a proxy: nothing to relay to, nothing answered (as before).
    let trusted_no_proxy = handle_request(
        known.as_bytes(),
        arrival(registrar(), Sender::Trusted),
        &RelayConfig {
            relaying: false,
            ..config()
        },
        lookup,
    );
    assert_eq!(trusted_no_proxy, nothing(Outcome::NoProxy));
    // ACKs are never answered, from anyone.
    for request in [
        ack("x", "z9hG4bKu1"),
        ack("x", "z9hG4bKu1").replace("sip:uuid1@", "sip:nobody@"),
    ] {
        assert_eq!(
            handle_untrusted(&request, stranger, |_| {}),
            nothing(Outcome::AckAbsorbed)
        );
    }
}

#[test]
fn untrusted_identity_headers_are_stripped() {
    let stranger: SocketAddr = "198.51.100.66:5060".parse().unwrap();
    let identities = "P-Asserted-Identity: <sip:+4930999@provider.example>\r\n\
p-preferred-identity: <sip:boss@provider.example>\r\n\
Remote-Party-ID: <sip:+4930999@provider.example>;screen=yes;party=calling\r\n\
P-Charging-Vector: icid-value=forged\r\n\
P-Asserted-Service: urn:urn-7:3gpp-service.ims.icsi.mmtel\r\n\
Route: <sip:pbx.example;lr>\r\n\
Identity: signed.by.someone;info=<https://cert.example/x.pem>\r\n";
    let request = invite().replace(
        "Max-Forwards: 70\r\n",
        &format!("Max-Forwards: 70\r\n{identities}"),
    );
    let out = handle_untrusted(&request, stranger, |c| c.untrusted = UntrustedPolicy::Strip);
    assert_eq!(out.outcome, Outcome::RelayedStripped);
    let out = forwarded(out);
    for gone in [
        "P-Asserted-Identity",
        "p-preferred-identity",
        "Remote-Party-ID",
        "P-Charging-Vector",
        "P-Asserted-Service",
    ] {
        assert!(!out.contains(gone), "{gone} left in {out}");
    }
    // Route (the proxy's business) and the signed Identity stay; all else as before.
    assert!(out.contains("\r\nRoute: <sip:pbx.example;lr>\r\n"));
    assert!(out.contains("\r\nIdentity: signed.by.someone"));
    assert_eq!(out, forwarded(handle_untrusted(&invite().replace("Max-Forwards: 70\r\n", "Max-Forwards: 70\r\nRoute: <sip:pbx.example;lr>\r\nIdentity: signed.by.someone;info=<https://cert.example/x.pem>\r\n"), stranger, |c| c.untrusted = UntrustedPolicy::Strip)));
    // Our Via carries the stranger's address as the way back.
    let ResponseRoute::Relay { path, .. } = route(&proxy_response(&out, "100 Trying")) else {
        panic!("not relayed");
    };
    assert_eq!(
        path,
        ReturnPath::Udp {
            local: None,
            source: stranger
        }
    );
    // Trusted senders' identity headers are kept.
    let trusted = forwarded(handle(&request, registrar()));
    assert!(trusted.contains("\r\nP-Asserted-Identity: <sip:+4930999@provider.example>\r\n"));
    assert!(trusted.contains("\r\nP-Charging-Vector: icid-value=forged\r\n"));
}

#[test]
fn answers_to_strangers_are_minimal_and_never_larger_than_the_request() {
    let stranger: SocketAddr = "198.51.100.66:5060".parse().unwrap();
    let options = "OPTIONS sip:100@198.51.100.1 SIP/2.0\r\n\
Via: SIP/2.0/UDP 198.51.100.66:5060;branch=z9hG4bK-scan-1;rport\r\n\
Max-Forwards: 70\r\nTo: \"scan\" <sip:100@198.51.100.1>\r\nFrom: \"scan\" <sip:100@198.51.100.1>;tag=6331\r\n\
User-Agent: friendly-scanner\r\nCall-ID: 1234567890\r\nContact: <sip:100@198.51.100.66:5060>\r\n\
CSeq: 1 OPTIONS\r\nAccept: application/sdp\r\nContent-Length: 0\r\n\r\n";
    let out = handle_untrusted(options, stranger, |_| {});
    assert_eq!(out.outcome, Outcome::OptionsAnswered);
    let reply = replied(out);
    assert!(reply.starts_with("SIP/2.0 200 OK\r\n"), "{reply}");
    for absent in ["Server:", "Allow:", "Accept:", "User-Agent:", "uacreg"] {
        assert!(!reply.contains(absent), "{absent} in {reply}");
    }
    assert!(
        reply.len() <= options.len(),
        "{} > {}",
        reply.len(),
        options.len()
    );
    assert!(Response::parse(reply.as_bytes()).is_ok());
    // The trusted answer is the full one.
    let full = replied(handle(options, registrar()));
    assert!(full.contains("\r\nServer: uacreg\r\n") && full.contains("\r\nAllow: "));

    // A request squeezed below its answer gets nothing.
    let tiny = "OPTIONS sip:x SIP/2.0\r\nv:SIP/2.0/UDP h;rport\r\nf:<sip:a>\r\nt:<sip:b>\r\ni:c\r\nCSeq:1 OPTIONS\r\n\r\n";
    assert_eq!(
        handle_untrusted(tiny, stranger, |_| {}),
        nothing(Outcome::ReplyLargerThanRequest)
    );
    // Trusted senders are not held to it.
    assert!(replied(handle(tiny, registrar())).starts_with("SIP/2.0 200 OK"));
    // Same rule for errors: a 400 for a small broken request.
    let broken = "INVITE sip:x@y SIP/2.0\r\nv:SIP/2.0/UDP h;rport\r\nf:<sip:a>;tag=1\r\nt:<sip:b>\r\ni:c\r\nCSeq:1 BYE\r\n\r\n";
    assert_eq!(
        handle_untrusted(broken, stranger, |_| {}),
        nothing(Outcome::ReplyLargerThanRequest)
    );
    // Any answer to an untrusted sender, whatever the request: never larger.
    for request in [
        invite(),
        cancel(),
        invite().replace("sip:uuid1@", "sip:x@"),
        invite().replace("Max-Forwards: 70", "Max-Forwards: 0"),
    ] {
        if let Action::Reply(reply) = handle_untrusted(&request, stranger, |_| {}).action {
            assert!(reply.len() <= request.len());
        }
    }
}

mod prop {
    use super::*;
    use proptest::prelude::*;

    fn stranger() -> SocketAddr {
        "198.51.100.66:5060".parse().unwrap()
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = handle_request(&data, arrival(registrar(), Sender::Trusted), &config(), lookup);
            let out = handle_request(&data, arrival(stranger(), Sender::Untrusted), &config(), lookup);
            if let Action::Reply(reply) = out.action {
                prop_assert!(reply.len() <= data.len());
            }
            let _ = route_response(&data, proxy(), &KEY, Some(proxy()));
        }

        #[test]
        fn mutated_messages_never_panic(cut in 0usize..900, byte in any::<u8>(), at in 0usize..900) {
            let mut request = invite().into_bytes();
            if at < request.len() { request[at] = byte; }
            request.truncate(cut.min(request.len()));
            let _ = handle_request(&request, arrival(registrar(), Sender::Trusted), &config(), lookup);
            let out = handle_request(&request, arrival(stranger(), Sender::Untrusted), &config(), lookup);
            if let Action::Reply(reply) = out.action {
                prop_assert!(reply.len() <= request.len());
            }
            let response = proxy_response(&forwarded(handle(&invite(), registrar())), "200 OK");
            let mut response = response.into_bytes();
            if at < response.len() { response[at] = byte; }
            response.truncate(cut.min(response.len()));
            let _ = route_response(&response, proxy(), &KEY, Some(proxy()));
        }

        #[test]
        fn arbitrary_via_and_uri_text_never_panics(value in "\\PC{0,120}") {
            let request = invite().replace("sip.provider.example:5060;rport", &value).replace("uuid1@192.0.2.10:5080", &value);
            let _ = handle_request(request.as_bytes(), arrival(registrar(), Sender::Trusted), &config(), lookup);
            let response = format!("SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bKrly-{value}, {value}\r\nVia: {value}\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n\r\n");
            let relayed = matches!(
                route_response(response.as_bytes(), proxy(), &KEY, Some(proxy())),
                ResponseRoute::Relay { .. }
            );
            prop_assert!(!relayed);
        }

        #[test]
        fn a_guessed_branch_never_verifies(part in "[0-9a-fu4m.]{0,90}") {
            let response = format!("SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bKrly-{part}\r\nVia: SIP/2.0/UDP 203.0.113.5;branch=z9hG4bKx\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n\r\n");
            prop_assert_eq!(
                route_response(response.as_bytes(), proxy(), &KEY, Some(proxy())),
                ResponseRoute::Refused(ResponseOutcome::BadMac)
            );
        }
    }
}

#[test]
fn the_relay_marker_is_looked_for_in_any_letter_case_and_only_whole() {
    use super::branch::may_carry_relay_marker;
    let ours = b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKrly-u7.abcd\r\n\r\n";
    assert!(may_carry_relay_marker(ours));
    assert!(may_carry_relay_marker(b"branch=Z9HG4BKRLY-x"));
    assert!(may_carry_relay_marker(b"zz9hg4bkz9hG4bKrLy-"));
    for not_ours in [
        &b"SIP/2.0 401 Unauthorized\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKab12\r\n\r\n"[..],
        b"branch=z9hG4bKrly",
        b"branch=z9hG4bK-rly-",
        b"z",
        b"",
    ] {
        assert!(!may_carry_relay_marker(not_ours), "{not_ours:?}");
    }
}

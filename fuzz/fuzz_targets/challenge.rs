//! Digest authentication: `Challenge::parse` on a `WWW-Authenticate` / `Proxy-Authenticate`
//! value and, when it parses, `Authorization::answer` with a password and with an HA1; and
//! `Authorization::parse` (what the test registrar reads) on the same text.
//!
//! Input: two control bytes, then the header value (UTF-8; other inputs are skipped, as a
//! header value always reaches the parser as text).
//! * byte 0: bit 0 a proxy challenge; bits 1–2 the secret: a password, an HA1, the HA1 in upper
//!   case, an empty password; bits 3–4 the request URI; bit 5 a body (for qop=auth-int).
//! * byte 1: the nonce count.
//!
//! Checks: a challenge that parses holds no control character (its realm, nonce and opaque go
//! into our next REGISTER); an answer's header has none either, parses back to the same answer,
//! and verifies with the secret it was made from.

#![no_main]

use libfuzzer_sys::fuzz_target;
use uacreg::sip::digest::{Authorization, Challenge, SecretInput};
use uacreg_fuzz::{Unstructured, control};

const HA1: &str = "8f0b1c2d3e4f5061728394a5b6c7d8e9";
const HA1_UPPER: &str = "8F0B1C2D3E4F5061728394A5B6C7D8E9";
const URIS: [&str; 4] = [
    "sip:registrar.test",
    "sip:[2001:db8::10]:5070",
    "sips:registrar.test;transport=tls",
    "",
];

fn has_control(text: &str) -> bool {
    text.chars().any(|c| c.is_control() && c != '\t')
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let (flags, nc) = (control(&mut u), control(&mut u));
    let Ok(value) = std::str::from_utf8(u.take_rest()) else {
        return;
    };

    if let Ok(parsed) = Authorization::parse(value) {
        let _ = parsed.verify(SecretInput::Password("secret"), "REGISTER", b"");
        let _ = parsed.verify(SecretInput::Ha1(HA1), "REGISTER", b"");
        let _ = parsed.to_header_value();
    }

    let Ok(challenge) = Challenge::parse(value, flags & 1 != 0) else {
        return;
    };
    assert!(
        !has_control(challenge.realm()),
        "control character in the realm"
    );
    assert!(
        !has_control(challenge.nonce()),
        "control character in the nonce"
    );
    assert!(
        !challenge.opaque().is_some_and(has_control),
        "control character in opaque"
    );

    let secret = match (flags >> 1) & 3 {
        0 => SecretInput::Password("secret"),
        1 => SecretInput::Ha1(HA1),
        2 => SecretInput::Ha1(HA1_UPPER),
        _ => SecretInput::Password(""),
    };
    let uri = URIS[usize::from((flags >> 3) & 3)];
    let body: &[u8] = if flags & 0x20 != 0 { b"v=0\r\n" } else { b"" };
    let nc = u32::from(nc).wrapping_mul(0x0101_0101);
    let Ok(answer) = Authorization::answer(
        &challenge, "alice", secret, "REGISTER", uri, body, nc, "0a4f113b",
    ) else {
        // Only an HA1 with an algorithm other than MD5 is refused.
        assert!(
            matches!(secret, SecretInput::Ha1(_)),
            "a password answer refused"
        );
        return;
    };
    let header = answer.to_header_value();
    assert!(!has_control(&header), "control character in {header:?}");
    let reread = Authorization::parse(&header).expect("our own Authorization parses");
    assert_eq!(
        reread, answer,
        "our Authorization reads back differently: {header}"
    );
    assert!(
        reread.verify(secret, "REGISTER", body),
        "our answer does not verify"
    );
});

//! `uacreg` rows for the harnesses: a fixed set of realistic ones (the registrations responses
//! are delivered to), and arbitrary ones built from fuzz input, each column either realistic,
//! realistic with one character inserted, or arbitrary text.

use libfuzzer_sys::arbitrary::Unstructured;
use uacreg::registration::Record;
use uacreg::registration::Secret;
use uacreg::registration::record::LocalSocket;
use uacreg::store::{RawRow, RowDefaults, validate};

use crate::control;

/// What the daemon supplies: its contact address and the sockets it listens on.
pub fn defaults() -> RowDefaults {
    RowDefaults {
        contact_addr: "192.0.2.1:5062".into(),
        sockets: [
            "udp:192.0.2.1:5062",
            "tcp:[2001:db8::1]:5062",
            "tls:192.0.2.1:5061",
        ]
        .into_iter()
        .filter_map(LocalSocket::parse)
        .collect(),
    }
}

/// The registrations of the response harness: UDP with a password, UDP over IPv6 with an HA1
/// and a fixed realm, TCP through an outbound proxy, and one without credentials.
pub fn registrations() -> Vec<Record> {
    let mut rows = Vec::new();

    let mut row = RawRow::new("uuid-udp-1", "alice", "192.0.2.10");
    row.auth_username = "alice".into();
    row.auth_password = Secret::new("secret");
    rows.push(row);

    let mut row = RawRow::new("uuid-udp-2", "bob", "[2001:db8::10]:5070");
    row.realm = "registrar.test".into();
    row.auth_username = "bob".into();
    row.auth_ha1 = Secret::new("4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b");
    row.expires = 60;
    rows.push(row);

    let mut row = RawRow::new("uuid-tcp", "carol", "registrar.test");
    row.auth_proxy = "sip:192.0.2.20:5060;transport=tcp".into();
    row.auth_username = "carol".into();
    row.auth_password = Secret::new("secret");
    row.contact_user = "100".into();
    rows.push(row);

    rows.push(RawRow::new("uuid-nocred", "dave", "192.0.2.30:5080"));

    let defaults = defaults();
    rows.into_iter()
        .map(|row| validate(&row, &defaults).expect("the harness's rows are valid"))
        .collect()
}

/// Realistic values of each text column, good and bad, in `RawRow` order.
const REALISTIC: [&[&str]; 13] = [
    // l_uuid
    &[
        "uuid000001",
        "trunk-a",
        "8c1e5d0f-2b7a-4c11-9f00-5e8a1b2c3d4e",
        "a;b",
        "x?y",
    ],
    // l_username
    &["alice", "100", "+4930123456", "al ice"],
    // l_domain
    &["pbx.test", "192.0.2.1", "[2001:db8::1]", "pbx.test:5080"],
    // r_username
    &["alice", "4930123456", "user@x", "a<b>"],
    // r_domain
    &[
        "registrar.test",
        "192.0.2.10:5060",
        "[2001:db8::10]:5070",
        "2001:db8::10",
        "sip.example.com:0",
    ],
    // realm
    &["", "registrar.test", "asterisk"],
    // auth_username
    &["alice", "", "al\"ice", "a\\b"],
    // auth_password
    &["secret", "", "p\"w"],
    // auth_ha1
    &[
        "",
        "0123456789abcdef0123456789abcdef",
        "0123456789ABCDEF0123456789ABCDEF",
        "xyz",
    ],
    // auth_proxy
    &[
        "",
        "sip:192.0.2.20;transport=tcp",
        "sips:proxy.test",
        "sip:proxy.test:5061;transport=tls",
        "proxy.test:5060",
        "<sip:[2001:db8::20]:5060;transport=udp>",
        "sips:proxy.test;transport=udp",
        "tel:+123",
    ],
    // contact_addr
    &[
        "",
        "192.0.2.1:5062",
        "[2001:db8::1]:5062",
        "gw.test",
        "gw.test:99999",
    ],
    // socket
    &[
        "",
        "udp:192.0.2.1:5062",
        "tcp:[2001:db8::1]:5062",
        "tls:192.0.2.1:5061",
        "udp:10.0.0.1:5060",
    ],
    // contact_user
    &["", "100", "trunk;x", "+49-30"],
];

/// Realistic values of the integer columns (expires, flags, reg_delay).
const INTEGERS: [i64; 8] = [
    3600,
    0,
    60,
    -1,
    1,
    i32::MAX as i64,
    u32::MAX as i64 + 1,
    i64::MIN,
];

/// One text column: two control bytes choose realistic (0), realistic with a character
/// inserted (1), arbitrary text (2) or empty (3), and which realistic value.
fn text(u: &mut Unstructured<'_>, realistic: &[&str]) -> String {
    let mode = control(u);
    let pick = realistic[usize::from(control(u)) % realistic.len()];
    match mode % 4 {
        0 => pick.to_string(),
        1 => {
            let mut value = pick.to_string();
            let inserted: char = u.arbitrary().unwrap_or('\r');
            let mut at = usize::from(control(u)) % (value.len() + 1);
            while !value.is_char_boundary(at) {
                at -= 1;
            }
            value.insert(at, inserted);
            value
        }
        2 => u.arbitrary::<String>().unwrap_or_default(),
        _ => String::new(),
    }
}

/// One integer column: a control byte chooses a realistic value or arbitrary bits.
fn integer(u: &mut Unstructured<'_>) -> i64 {
    let mode = control(u);
    if mode < 128 {
        INTEGERS[usize::from(mode) % INTEGERS.len()]
    } else {
        u.arbitrary().unwrap_or(0)
    }
}

/// A row from fuzz input, column by column.
pub fn arbitrary_row(u: &mut Unstructured<'_>) -> RawRow {
    let mut t = REALISTIC
        .iter()
        .map(|values| text(u, values))
        .collect::<Vec<_>>()
        .into_iter();
    let mut next = || t.next().unwrap_or_default();
    let mut row = RawRow::new(&next(), "", "");
    row.l_username = next();
    row.l_domain = next();
    row.r_username = next();
    row.r_domain = next();
    row.realm = next();
    row.auth_username = next();
    row.auth_password = Secret::new(next());
    row.auth_ha1 = Secret::new(next());
    row.auth_proxy = next();
    row.contact_addr = next();
    row.socket = next();
    row.contact_user = next();
    row.id = u.arbitrary().unwrap_or(0);
    row.expires = integer(u);
    row.flags = integer(u);
    row.reg_delay = integer(u);
    row
}

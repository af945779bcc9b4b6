//! Side by side: Kamailio's own tools (`kamcmd` over BINRPC, `kamctl rpc` over the jsonrpcs
//! FIFO) against a real Kamailio 5.6 running its `uac` module and against uacregd, on the same
//! rows and the same registrar. What an operator's script reads must come out the same: the
//! record layout and field order, the values that describe the row, the flags of a registered
//! and of a disabled row, the faults. The differences that are deliberate are asserted as such:
//! uacregd masks `auth_password` (secrets are shown only when asked for), names itself in
//! `core.version`, and reports what a reload changed.
//!
//! Needs Kamailio, kamcmd and kamctl (scripts/install-test-deps); skipped locally without them,
//! failed in CI. All traffic is on 127.0.0.1.

mod common;
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{TempDir, registrar, test_config, write_rows};
use support::kamailio::require_kamailio;
use support::kamailio_uac::{KamailioUac, UacRow};
use support::process::{find_program, require};

/// Fields whose values describe the row, the same on both sides for the same table row.
const ROW_FIELDS: &[&str] = &[
    "l_uuid",
    "l_username",
    "l_domain",
    "r_username",
    "r_domain",
    "realm",
    "auth_username",
    "auth_ha1",
    "auth_proxy",
    "expires",
    "reg_delay",
    "socket",
];
/// Fields that are numbers of seconds or instants, different on each side.
const CLOCK_FIELDS: &[&str] = &["diff_expires", "timer_expires", "reg_init"];

fn tool(name: &str) -> Option<PathBuf> {
    let found = find_program(
        name,
        &[
            format!("/usr/sbin/{name}").as_str(),
            format!("/usr/local/sbin/{name}").as_str(),
        ],
    );
    if found.is_none() {
        require(name, false, || "not installed".to_string());
    }
    found
}

/// `kamcmd -s unix:SOCKET args…`: stdout and stderr as printed.
fn kamcmd(kamcmd: &Path, socket: &Path, args: &[&str]) -> String {
    let out = Command::new(kamcmd)
        .arg("-s")
        .arg(format!("unix:{}", socket.display()))
        .args(args)
        .output()
        .expect("kamcmd runs");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `RPCFIFOPATH=FIFO kamctl rpc args…`: what kamctl printed.
fn kamctl(kamctl: &Path, fifo: &Path, args: &[&str]) -> String {
    let out = Command::new(kamctl)
        .env("RPCFIFOPATH", fifo)
        .arg("rpc")
        .args(args)
        .output()
        .expect("kamctl runs");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// kamcmd's printout of structs (`{`, `\tname: value` lines, `}`) as records of fields.
fn records(printed: &str) -> Vec<Vec<(String, String)>> {
    let mut all = Vec::new();
    let mut current: Option<Vec<(String, String)>> = None;
    for line in printed.lines() {
        match line {
            "{" => current = Some(Vec::new()),
            "}" => all.extend(current.take()),
            _ => {
                if let (Some(fields), Some(field)) = (current.as_mut(), line.strip_prefix('\t')) {
                    let (name, value) = field.split_once(": ").unwrap_or((field, ""));
                    fields.push((name.to_string(), value.to_string()));
                }
            }
        }
    }
    all
}

fn field<'a>(record: &'a [(String, String)], name: &str) -> &'a str {
    record
        .iter()
        .find(|(n, _)| n == name)
        .map_or("<absent>", |(_, v)| v.as_str())
}

/// Kamailio's fields, in Kamailio's order, must open uacregd's record; the row's own values
/// must be equal, the clocks numbers on both sides, the password masked on ours.
fn assert_same_record(kamailio: &[(String, String)], ours: &[(String, String)], context: &str) {
    let names = |r: &[(String, String)]| r.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    let (theirs_names, our_names) = (names(kamailio), names(ours));
    assert!(
        our_names.starts_with(&theirs_names),
        "{context}: fields differ\nKamailio: {theirs_names:?}\nuacregd:  {our_names:?}"
    );
    for name in ROW_FIELDS {
        assert_eq!(
            field(kamailio, name),
            field(ours, name),
            "{context}: field {name}"
        );
    }
    for name in CLOCK_FIELDS {
        for (side, record) in [("Kamailio", kamailio), ("uacregd", ours)] {
            assert!(
                field(record, name).parse::<i64>().is_ok(),
                "{context}: {side}'s {name} is {:?}",
                field(record, name)
            );
        }
    }
    assert_eq!(field(ours, "auth_password"), "********", "{context}");
    assert!(
        !field(kamailio, "auth_password").is_empty(),
        "{context}: Kamailio prints the password"
    );
    // Both name an ip:port of their own as the Contact's address.
    for record in [kamailio, ours] {
        assert!(
            field(record, "contact_addr")
                .parse::<std::net::SocketAddr>()
                .is_ok(),
            "{context}: contact_addr {:?}",
            field(record, "contact_addr")
        );
    }
}

/// The JSON of kamctl's printout (without any line kamctl adds around it).
fn json_of(printed: &str) -> serde_json::Value {
    let start = printed
        .find('{')
        .unwrap_or_else(|| panic!("no JSON: {printed}"));
    let end = printed.rfind('}').unwrap_or(start);
    serde_json::from_str(&printed[start..=end]).unwrap_or_else(|e| panic!("{e}: {printed}"))
}

/// The layout of a pretty-printed JSON answer with every value replaced by its type, so two
/// answers with different values but the same shape and printing compare equal.
fn skeleton(printed: &str) -> String {
    let mut out = String::new();
    let mut chars = printed.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                let mut text = String::new();
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => {
                            chars.next();
                        }
                        '"' => break,
                        c => text.push(c),
                    }
                }
                // Keys stay; string values become a placeholder.
                if chars.peek() == Some(&':') {
                    out.push('"');
                    out.push_str(&text);
                    out.push('"');
                } else {
                    out.push_str("<string>");
                }
            }
            '-' | '0'..='9' => {
                while chars
                    .peek()
                    .is_some_and(|c| c.is_ascii_digit() || *c == '.')
                {
                    chars.next();
                }
                out.push_str("<number>");
            }
            c => out.push(c),
        }
    }
    out
}

/// Every line Kamailio's answer prints, uacregd's prints too, in the same order and with the
/// same indentation (values aside); uacregd may print more lines (its own fields) in between.
/// A member's trailing comma depends on what follows it, so it is not compared.
fn assert_lines_kept(theirs: &str, ours: &str, what: &str) {
    let lines = |printed: &str| {
        skeleton(printed)
            .lines()
            .map(|l| l.trim_end_matches(',').to_string())
            .collect::<Vec<_>>()
    };
    let ours_lines = lines(ours);
    let mut rest = ours_lines.iter();
    for line in lines(theirs) {
        assert!(
            rest.any(|l| *l == line),
            "{what}: Kamailio's line {line:?} is missing or out of order\n--- Kamailio ---\n\
             {theirs}\n--- uacregd ---\n{ours}"
        );
    }
}

/// The lines of one record of a pretty-printed dump: from its `l_uuid` member to the line
/// that closes it.
fn record_lines(printed: &str, l_uuid: &str) -> String {
    let lines: Vec<&str> = printed.lines().collect();
    let start = lines
        .iter()
        .position(|l| l.contains("\"l_uuid\"") && l.contains(&format!("\"{l_uuid}\"")))
        .unwrap_or_else(|| panic!("{l_uuid} not in\n{printed}"));
    lines[start..]
        .iter()
        .take_while(|l| !l.trim_start().starts_with('}'))
        .map(|l| format!("{l}\n"))
        .collect()
}

fn rows(registrar: std::net::SocketAddr) -> Vec<uacreg::store::RawRow> {
    let mut rows = uacreg::demo::demo_rows(3, registrar);
    // The third row's password is wrong: the registrar refuses it on both sides.
    rows[2].auth_password = uacreg::registration::Secret::new("not-the-password");
    rows
}

fn kamailio_rows(rows: &[uacreg::store::RawRow]) -> Vec<UacRow> {
    rows.iter()
        .map(|r| UacRow {
            l_uuid: r.l_uuid.clone(),
            l_username: r.l_username.clone(),
            l_domain: r.l_domain.clone(),
            r_username: r.r_username.clone(),
            r_domain: r.r_domain.clone(),
            realm: r.realm.clone(),
            auth_username: r.auth_username.clone(),
            auth_password: r.auth_password.expose().to_string(),
            auth_proxy: r.auth_proxy.clone(),
            expires: u32::try_from(r.expires).expect("demo rows expire within u32"),
        })
        .collect()
}

/// Polls `kamcmd uac.reg_info l_uuid X` on one side until its flags say registered (4).
fn wait_registered(kamcmd_bin: &Path, socket: &Path, l_uuid: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let printed = kamcmd(kamcmd_bin, socket, &["uac.reg_info", "l_uuid", l_uuid]);
        if let Some(record) = records(&printed).first()
            && field(record, "flags")
                .parse::<u32>()
                .is_ok_and(|f| f & 4 != 0)
        {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kamcmd_and_kamctl_print_for_uacregd_what_they_print_for_kamailio() {
    let available = require_kamailio();
    let (Some(kamcmd_bin), Some(kamctl_bin)) = (tool("kamcmd"), tool("kamctl")) else {
        return;
    };
    if !available {
        return;
    }
    let registrar = registrar(3).await;
    let rows = rows(registrar.local_addr());
    let table = kamailio_rows(&rows);
    let kamailio = tokio::task::spawn_blocking(move || KamailioUac::start(&table))
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("Kamailio uac: {e}"));

    let dir = TempDir::new("kamtools");
    write_rows(&dir.db_url(), &rows);
    let socket = dir.0.join("kamailio_ctl");
    let fifo = dir.0.join("kamailio_rpc.fifo");
    let mut config = test_config(&dir.db_url());
    config.ctl_socket = Some(format!("unix:{}", socket.display()));
    config.rpc_fifo = Some(fifo.clone());
    let daemon = uacreg::Daemon::start(config).await.unwrap();

    let ours = (socket.clone(), fifo.clone());
    let theirs = (
        kamailio.ctl_socket().to_path_buf(),
        kamailio.fifo().to_path_buf(),
    );
    let log = kamailio.dir().join("kamailio.1.log");
    let (kamcmd_bin2, kamctl_bin2) = (kamcmd_bin.clone(), kamctl_bin.clone());
    tokio::task::spawn_blocking(move || {
        let (kamcmd_bin, kamctl_bin) = (kamcmd_bin2, kamctl_bin2);
        let both = |args: &[&str]| {
            (
                kamcmd(&kamcmd_bin, &theirs.0, args),
                kamcmd(&kamcmd_bin, &ours.0, args),
            )
        };
        let both_kamctl = |args: &[&str]| {
            (
                kamctl(&kamctl_bin, &theirs.1, args),
                kamctl(&kamctl_bin, &ours.1, args),
            )
        };
        let kamailio_log = || support::process::read_lossy(&log);
        for row in ["uuid000000", "uuid000001"] {
            assert!(
                wait_registered(&kamcmd_bin, &theirs.0, row),
                "Kamailio never registered {row}\n{}",
                kamailio_log()
            );
            assert!(
                wait_registered(&kamcmd_bin, &ours.0, row),
                "uacregd never registered {row}"
            );
        }

        // kamcmd uac.reg_dump: the same records, in the same layout.
        let (theirs_dump, ours_dump) = both(&["uac.reg_dump"]);
        let (theirs_records, ours_records) = (records(&theirs_dump), records(&ours_dump));
        assert_eq!(theirs_records.len(), 3, "Kamailio's dump:\n{theirs_dump}");
        assert_eq!(ours_records.len(), 3, "uacregd's dump:\n{ours_dump}");
        for theirs_record in &theirs_records {
            let l_uuid = field(theirs_record, "l_uuid");
            let ours_record = ours_records
                .iter()
                .find(|r| field(r, "l_uuid") == l_uuid)
                .unwrap_or_else(|| panic!("{l_uuid} missing from uacregd's dump"));
            let context = format!(
                "reg_dump {l_uuid}\n--- Kamailio ---\n{theirs_dump}\n--- uacregd ---\n{ours_dump}"
            );
            assert_same_record(theirs_record, ours_record, &context);
            if l_uuid != "uuid000002" {
                assert_eq!(field(theirs_record, "flags"), "20", "{context}");
                assert_eq!(field(ours_record, "flags"), "20", "{context}");
            }
        }

        // kamcmd uac.reg_info l_uuid X, and by r_username.
        for args in [
            ["uac.reg_info", "l_uuid", "uuid000001"],
            ["uac.reg_info", "r_username", "user000001"],
        ] {
            let (theirs_info, ours_info) = both(&args);
            let context =
                format!("{args:?}\n--- Kamailio ---\n{theirs_info}\n--- uacregd ---\n{ours_info}");
            let (t, o) = (records(&theirs_info), records(&ours_info));
            assert_eq!((t.len(), o.len()), (1, 1), "{context}");
            assert_same_record(&t[0], &o[0], &context);
            assert_eq!(field(&t[0], "flags"), field(&o[0], "flags"), "{context}");
        }

        // Faults print the same line.
        for args in [
            &["uac.reg_info", "l_uuid", "no-such-row"][..],
            &["uac.reg_disable", "l_uuid", "no-such-row"][..],
            &["no.such.method"][..],
        ] {
            let (theirs_fault, ours_fault) = both(args);
            assert_eq!(theirs_fault, ours_fault, "{args:?}");
            assert!(theirs_fault.starts_with("error: "), "{theirs_fault}");
        }

        // Disable, then enable: the same (empty) answers and the same disabled flag (1).
        for (command, disabled) in [("uac.reg_disable", true), ("uac.reg_enable", false)] {
            let (theirs_said, ours_said) = both(&[command, "l_uuid", "uuid000000"]);
            assert_eq!(theirs_said, ours_said, "{command}");
            let (theirs_info, ours_info) = both(&["uac.reg_info", "l_uuid", "uuid000000"]);
            for (side, printed) in [("Kamailio", &theirs_info), ("uacregd", &ours_info)] {
                let flags: u32 = field(&records(printed)[0], "flags").parse().unwrap();
                assert_eq!(
                    flags & 1 != 0,
                    disabled,
                    "{side} after {command}:\n{printed}"
                );
            }
        }
        let (theirs_said, ours_said) = both(&["uac.reg_refresh", "uuid000001"]);
        assert_eq!(theirs_said, ours_said, "uac.reg_refresh");

        // Every uac method Kamailio lists, uacregd serves.
        let (theirs_methods, ours_methods) = both(&["system.listMethods"]);
        let theirs_uac: Vec<&str> = theirs_methods
            .lines()
            .filter(|m| m.starts_with("uac.reg"))
            .collect();
        assert!(!theirs_uac.is_empty(), "{theirs_methods}");
        for method in theirs_uac {
            assert!(
                ours_methods.lines().any(|m| m == method),
                "Kamailio serves {method}, uacregd does not:\n{ours_methods}"
            );
        }
        // core.version: one line, naming the server; core.uptime: the same fields.
        let (theirs_version, ours_version) = both(&["core.version"]);
        assert!(theirs_version.starts_with("kamailio "), "{theirs_version}");
        assert!(ours_version.starts_with("uacreg "), "{ours_version}");
        assert_eq!(theirs_version.lines().count(), ours_version.lines().count());
        let (theirs_uptime, ours_uptime) = both(&["core.uptime"]);
        let names = |printed: &str| {
            records(printed)
                .first()
                .map(|r| r.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>())
        };
        assert_eq!(names(&theirs_uptime), names(&ours_uptime), "core.uptime");

        // kamctl rpc: the same JSON document, printed the same way.
        let (theirs_info, ours_info) = both_kamctl(&["uac.reg_info", "l_uuid", "uuid000001"]);
        let (t, o) = (json_of(&theirs_info), json_of(&ours_info));
        for name in ROW_FIELDS {
            assert_eq!(
                t["result"][name], o["result"][name],
                "kamctl reg_info {name}\n{theirs_info}\n{ours_info}"
            );
        }
        assert_lines_kept(&theirs_info, &ours_info, "kamctl rpc uac.reg_info");
        let (theirs_missing, ours_missing) =
            both_kamctl(&["uac.reg_info", "l_uuid", "no-such-row"]);
        assert_eq!(
            skeleton(&theirs_missing),
            skeleton(&ours_missing),
            "kamctl fault\n{theirs_missing}\n{ours_missing}"
        );
        assert_eq!(
            json_of(&theirs_missing)["error"],
            json_of(&ours_missing)["error"]
        );
        let (theirs_unknown, ours_unknown) = both_kamctl(&["no.such.method"]);
        // The same but for the id (kamctl's pid).
        assert_eq!(
            skeleton(&theirs_unknown),
            skeleton(&ours_unknown),
            "kamctl rpc no.such.method"
        );
        assert_eq!(
            json_of(&theirs_unknown)["error"],
            json_of(&ours_unknown)["error"]
        );
        let (theirs_uptime, ours_uptime) = both_kamctl(&["core.uptime"]);
        // Times as C's ctime() prints them: "Thu Dec  3 23:10:34 2026".
        for printed in [&theirs_uptime, &ours_uptime] {
            let now = json_of(printed)["result"]["now"]
                .as_str()
                .unwrap_or("")
                .to_string();
            let words: Vec<&str> = now.split_whitespace().collect();
            assert!(
                words.len() == 5 && words[3].len() == 8 && words[4].len() == 4,
                "{printed}"
            );
        }
        assert_eq!(
            skeleton(&theirs_uptime),
            skeleton(&ours_uptime),
            "kamctl rpc core.uptime"
        );
        let (theirs_dump, ours_dump) = both_kamctl(&["uac.reg_dump"]);
        let (t, o) = (json_of(&theirs_dump), json_of(&ours_dump));
        assert_eq!(
            t["result"].as_array().map(Vec::len),
            o["result"].as_array().map(Vec::len),
            "kamctl reg_dump\n{theirs_dump}\n{ours_dump}"
        );
        // Record by record (Kamailio lists them in its hash table's order).
        for l_uuid in ["uuid000000", "uuid000001", "uuid000002"] {
            assert_lines_kept(
                &record_lines(&theirs_dump, l_uuid),
                &record_lines(&ours_dump, l_uuid),
                &format!("kamctl rpc uac.reg_dump, {l_uuid}"),
            );
        }
        let (theirs_reload, ours_reload) = both_kamctl(&["uac.reg_reload"]);
        assert!(
            json_of(&theirs_reload)["result"].is_object(),
            "{theirs_reload}"
        );
        assert!(json_of(&ours_reload)["result"].is_object(), "{ours_reload}");

        // kamctl's own command that reads an answer line by line.
        let uptime = |fifo: &Path| {
            let out = Command::new(&kamctl_bin)
                .env("RPCFIFOPATH", fifo)
                .arg("uptime")
                .output()
                .expect("kamctl runs");
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        let (theirs_uptime, ours_uptime) = (uptime(&theirs.1), uptime(&ours.1));
        let keys = |printed: &str| {
            printed
                .lines()
                .filter_map(|l| l.split(':').next().map(|k| k.trim().to_string()))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            keys(&theirs_uptime),
            keys(&ours_uptime),
            "kamctl uptime\n--- Kamailio ---\n{theirs_uptime}\n--- uacregd ---\n{ours_uptime}"
        );
    })
    .await
    .unwrap();
    daemon.stop().await;
    drop(kamailio);
}

//! Regenerates the fuzz seed corpus (`fuzz/seeds/<target>/`) from real SIP exchanges on
//! loopback: REGISTER flows against the in-repo test registrar (in several configurations) and
//! against Kamailio's registrar, sipp registering with Kamailio, and a sipp call (INVITE, ACK,
//! BYE) to a sipp UAS. Hand-written edge cases are added (folded and compact headers, IPv6,
//! several challenges, relay branches, hostile lengths …), see `edge.rs`.
//!
//! `scripts/fuzz --capture-seeds` runs it (`cargo run --example fuzz-seeds -- fuzz/seeds`).
//! Kamailio and sipp come from `scripts/install-test-deps`; without them their part is
//! skipped with a message. Files it did not generate (regression inputs, `crash-…`) are kept.

#[path = "../../tests/support/mod.rs"]
mod support;

mod client;
mod edge;
mod exchange;
mod seeds;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use uacreg::sip::digest::Algorithm;
use uacreg::testing::registrar::{Behavior, RegistrarConfig, TestRegistrar};

use client::{Account, register};
use exchange::{Exchange, from_sipp_log};
use seeds::Corpus;
use support::kamailio::{KamailioRegistrar, kamailio_available};
use support::process::{TempDir, spare_udp_port, wait_timeout};
use support::sipp::{SippUac, scenario, sipp_available, sipp_path};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// The registration the fuzz harness's first row makes (`fuzz/src/rows.rs`).
const ALICE: Account<'static> = Account {
    user: "alice",
    password: "secret",
    domain: "registrar.test",
    contact: "sip:uuid-udp-1@192.0.2.1:5062",
};

fn main() -> Result<()> {
    let root = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds"));
    let mut exchanges = Vec::new();
    test_registrar(&mut exchanges)?;
    if kamailio_available() {
        kamailio(&mut exchanges)?;
    } else {
        eprintln!("fuzz-seeds: no Kamailio (scripts/install-test-deps): its exchanges are skipped");
    }
    if sipp_available() {
        sipp_call(&mut exchanges)?;
    } else {
        eprintln!("fuzz-seeds: no sipp (scripts/install-test-deps): its exchanges are skipped");
    }

    let mut corpus = Corpus::default();
    for exchange in &exchanges {
        eprintln!(
            "fuzz-seeds: {} ({} messages)",
            exchange.stem(),
            exchange.messages.len()
        );
        seeds::cut(exchange, &mut corpus);
    }
    edge::add(&mut corpus);
    let written = corpus.write(&root)?;
    eprintln!("fuzz-seeds: {written} seed files under {}", root.display());
    Ok(())
}

/// The test registrar in each of its ways of answering.
fn test_registrar(exchanges: &mut Vec<Exchange>) -> Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    let users = HashMap::from([(ALICE.user.to_string(), ALICE.password.to_string())]);
    let base = RegistrarConfig {
        realm: ALICE.domain.to_string(),
        users,
        ..RegistrarConfig::default()
    };
    let variants: Vec<(&str, RegistrarConfig, Behavior)> = vec![
        ("qop", base.clone(), Behavior::Normal),
        (
            "no-qop",
            RegistrarConfig {
                qop: false,
                ..base.clone()
            },
            Behavior::Normal,
        ),
        (
            "sha256",
            RegistrarConfig {
                algorithm: Algorithm::Sha256,
                ..base.clone()
            },
            Behavior::Normal,
        ),
        (
            "proxy",
            RegistrarConfig {
                proxy_realm: Some("proxy.test".into()),
                ..base.clone()
            },
            Behavior::Normal,
        ),
        (
            "capped",
            RegistrarConfig {
                max_expires: Some(600),
                ..base.clone()
            },
            Behavior::Normal,
        ),
        (
            "overstated",
            RegistrarConfig {
                stated_expires: Some(u32::MAX),
                ..base.clone()
            },
            Behavior::Normal,
        ),
        ("stale", base.clone(), Behavior::StaleNonce),
        (
            "too-brief",
            base.clone(),
            Behavior::IntervalTooBrief { min_expires: 7200 },
        ),
        (
            "wrong-realm",
            base.clone(),
            Behavior::WrongRealm("other.test".into()),
        ),
        (
            "unavailable",
            base.clone(),
            Behavior::Reject {
                code: 503,
                reason: "Service Unavailable".into(),
                retry_after: Some(120),
            },
        ),
        (
            "forbidden",
            base.clone(),
            Behavior::Reject {
                code: 403,
                reason: "Forbidden".into(),
                retry_after: None,
            },
        ),
    ];
    for (name, config, behavior) in variants {
        let registrar = runtime.block_on(TestRegistrar::start(config))?;
        registrar.set_behavior(behavior);
        let mut exchange = Exchange::new("registrar", name);
        register(registrar.local_addr(), &ALICE, 3600, &mut exchange)?;
        if name == "qop" {
            // Refresh and removal, on the same binding.
            register(registrar.local_addr(), &ALICE, 0, &mut exchange)?;
            let wrong = Account {
                password: "wrong",
                ..ALICE
            };
            let mut refused = Exchange::new("registrar", "wrong-password");
            register(registrar.local_addr(), &wrong, 3600, &mut refused)?;
            exchanges.push(refused);
        }
        exchanges.push(exchange);
        drop(registrar);
    }
    Ok(())
}

/// Kamailio's registrar: our client, then sipp, registering with it.
fn kamailio(exchanges: &mut Vec<Exchange>) -> Result<()> {
    let users = vec![
        (ALICE.user.to_string(), ALICE.password.to_string()),
        ("bob".to_string(), "hunter2".to_string()),
    ];
    let registrar = KamailioRegistrar::start(ALICE.domain, &users)?;
    let mut exchange = Exchange::new("kamailio", "register");
    register(registrar.addr(), &ALICE, 3600, &mut exchange)?;
    register(registrar.addr(), &ALICE, 0, &mut exchange)?;
    exchanges.push(exchange);
    let mut refused = Exchange::new("kamailio", "wrong-password");
    register(
        registrar.addr(),
        &Account {
            password: "wrong",
            ..ALICE
        },
        3600,
        &mut refused,
    )?;
    exchanges.push(refused);
    let mut short = Exchange::new("kamailio", "short");
    register(
        registrar.addr(),
        &Account {
            user: "bob",
            password: "hunter2",
            ..ALICE
        },
        60,
        &mut short,
    )?;
    exchanges.push(short);

    if sipp_available() {
        let dir = TempDir::new("uacreg-fuzz-seeds")?;
        let log = dir.path().join("register.log");
        let outcome = SippUac::new(scenario("register_auth.xml"), registrar.addr())
            .inject(format!("bob;{};3600", ALICE.domain))
            .auth("bob", "hunter2")
            .arg("-trace_msg")
            .arg("-message_file")
            .arg(log.to_string_lossy().to_string())
            .run()?;
        if !outcome.success() {
            return Err(format!("sipp REGISTER with Kamailio failed:\n{}", outcome.output).into());
        }
        exchanges.push(from_sipp_log(&std::fs::read(&log)?, "kamailio-register"));
    }
    Ok(())
}

/// A call from sipp's built-in UAC to its built-in UAS, to a user the request harness knows:
/// INVITE, 100, 180, 200 with SDP, ACK, BYE, 200, as sipp logs them.
fn sipp_call(exchanges: &mut Vec<Exchange>) -> Result<()> {
    let sipp = sipp_path().ok_or("no sipp")?;
    let dir = TempDir::new("uacreg-fuzz-seeds")?;
    let uas_port = spare_udp_port()?;
    let uas_addr: SocketAddr = uas_port.addr();
    drop(uas_port);
    let mut uas = Command::new(&sipp)
        .args([
            "-sn",
            "uas",
            "-i",
            "127.0.0.1",
            "-p",
            &uas_addr.port().to_string(),
        ])
        .args(["-m", "1", "-nostdin", "-timeout", "20s"])
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    // The UAC's scenario is sipp's own, dumped to a file for SippUac.
    let uac_scenario = dir.path().join("uac.xml");
    let dumped = Command::new(&sipp).args(["-sd", "uac"]).output()?;
    std::fs::write(&uac_scenario, &dumped.stdout)?;
    std::thread::sleep(Duration::from_millis(500));
    let log = dir.path().join("call.log");
    let outcome = SippUac::new(&uac_scenario, uas_addr)
        .arg("-s")
        .arg("uuid000001")
        .arg("-trace_msg")
        .arg("-message_file")
        .arg(log.to_string_lossy().to_string())
        .run();
    let uas_done = wait_timeout(&mut uas, Duration::from_secs(5))?;
    if uas_done.is_none() {
        let _ = uas.kill();
        let _ = uas.wait();
    }
    let outcome = outcome?;
    if !outcome.success() {
        return Err(format!("sipp call failed:\n{}", outcome.output).into());
    }
    exchanges.push(from_sipp_log(&std::fs::read(&log)?, "call"));
    Ok(())
}

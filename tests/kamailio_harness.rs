//! Proves the Kamailio registrar harness (`tests/support/kamailio.rs`) with an independent
//! client, sipp: what sipp registers shows up in `binding_count`/`bindings_for`, what it fails
//! to register does not, and instances running side by side stay apart.
//!
//! Needs Kamailio and sipp (scripts/install-test-deps); skipped locally without them, failed in
//! CI. All traffic is on 127.0.0.1 and every sipp run is bounded.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::kamailio::{
    KamailioRegistrar, RegistrarOptions, processes_in_group, require_kamailio,
};
use support::sipp::{SippOutcome, SippUac, require_sipp, scenario};

const DOMAIN: &str = "registrar.test";

fn users(n: usize) -> Vec<(String, String)> {
    (0..n)
        .map(|i| (format!("user{i:03}"), format!("pw-{i}-secret")))
        .collect()
}

fn needs_peers() -> bool {
    // Evaluate both so a CI run reports every missing program, not just the first.
    let kamailio = require_kamailio();
    let sipp = require_sipp();
    kamailio && sipp
}

/// One sipp REGISTER (challenge, credentials, final response) for `user` against `registrar`.
fn sipp_register(
    registrar: &KamailioRegistrar,
    scenario_file: &str,
    user: &str,
    password: &str,
    expires: u32,
) -> SippOutcome {
    sipp_register_from(registrar, scenario_file, user, password, expires, None)
}

/// [`sipp_register`] from a given local port, which makes the Contact the same as an earlier
/// run's.
fn sipp_register_from(
    registrar: &KamailioRegistrar,
    scenario_file: &str,
    user: &str,
    password: &str,
    expires: u32,
    local_port: Option<u16>,
) -> SippOutcome {
    let mut uac = SippUac::new(scenario(scenario_file), registrar.addr())
        .inject(format!("{user};{};{expires}", registrar.domain()))
        .auth(user, password)
        .timeout(Duration::from_secs(10));
    if let Some(port) = local_port {
        uac = uac.local_port(port);
    }
    uac.run()
        .unwrap_or_else(|e| panic!("running sipp: {e}\n{}", registrar.log()))
}

fn assert_sipp_passed(outcome: &SippOutcome, registrar: &KamailioRegistrar, what: &str) {
    assert!(
        outcome.success(),
        "sipp {what} failed ({})\n{}\n--- Kamailio log ---\n{}",
        outcome.status,
        outcome.output,
        registrar.log()
    );
}

fn start(domain: &str, users: &[(String, String)]) -> KamailioRegistrar {
    let registrar = KamailioRegistrar::start(domain, users)
        .unwrap_or_else(|e| panic!("starting Kamailio: {e}"));
    eprintln!(
        "Kamailio registrar for {domain} on {} answered after {:?}",
        registrar.addr(),
        registrar.startup_time()
    );
    registrar
}

#[test]
fn sipp_registers_five_users_and_each_binding_is_visible() {
    if !needs_peers() {
        return;
    }
    let users = users(5);
    let registrar = start(DOMAIN, &users);
    assert!(registrar.addr().ip().is_loopback());
    assert_eq!(
        registrar.binding_count(),
        0,
        "a new registrar has no bindings"
    );

    let mut contacts = Vec::new();
    for (user, password) in &users {
        let outcome = sipp_register(&registrar, "register_auth.xml", user, password, 3600);
        assert_sipp_passed(&outcome, &registrar, &format!("REGISTER of {user}"));
        contacts.push(format!("sip:{user}@127.0.0.1:{}", outcome.local_port));
    }

    assert_eq!(
        registrar.binding_count(),
        5,
        "bindings: {:#?}\n{}",
        registrar.bindings(),
        registrar.log()
    );
    for ((user, _), contact) in users.iter().zip(&contacts) {
        assert_eq!(registrar.bindings_for(user), vec![contact.clone()]);
    }
    for binding in registrar.bindings() {
        assert_eq!(binding.domain, DOMAIN);
        assert_eq!(binding.user_agent, "uacreg-tests (sipp)");
        assert!(
            (3590..=3600).contains(&binding.expires_in),
            "granted expiry {} for {}",
            binding.expires_in,
            binding.contact
        );
    }
    assert!(registrar.bindings_for("nobody").is_empty());
}

#[test]
fn wrong_password_is_challenged_again_and_leaves_no_binding() {
    if !needs_peers() {
        return;
    }
    let users = users(1);
    let registrar = start(DOMAIN, &users);
    let (user, _) = &users[0];

    let outcome = sipp_register(
        &registrar,
        "register_auth_rejected.xml",
        user,
        "not-the-password",
        3600,
    );
    assert_sipp_passed(&outcome, &registrar, "REGISTER with a wrong password");
    assert_eq!(registrar.binding_count(), 0, "{:#?}", registrar.bindings());
    assert!(registrar.bindings_for(user).is_empty());

    // The same scenario that succeeds with the right password fails with a wrong one.
    let outcome = sipp_register(
        &registrar,
        "register_auth.xml",
        user,
        "not-the-password",
        3600,
    );
    assert!(
        !outcome.success(),
        "a wrong password was accepted:\n{}",
        outcome.output
    );
    assert_eq!(registrar.binding_count(), 0);
}

#[test]
fn unknown_user_gets_no_binding() {
    if !needs_peers() {
        return;
    }
    let registrar = start(DOMAIN, &users(1));
    let outcome = sipp_register(
        &registrar,
        "register_auth_rejected.xml",
        "stranger",
        "x",
        3600,
    );
    assert_sipp_passed(&outcome, &registrar, "REGISTER of an unknown user");
    assert_eq!(registrar.binding_count(), 0);
}

#[test]
fn expires_zero_removes_the_binding_and_short_expiry_lapses() {
    if !needs_peers() {
        return;
    }
    let users = users(2);
    let registrar = start(DOMAIN, &users);
    let (a, a_pw) = &users[0];
    let (b, b_pw) = &users[1];

    let outcome = sipp_register(&registrar, "register_auth.xml", a, a_pw, 3600);
    assert_sipp_passed(&outcome, &registrar, "REGISTER");
    assert_eq!(registrar.bindings_for(a).len(), 1);
    // Same contact (same local port), Expires: 0.
    let port = outcome.local_port;
    let outcome = sipp_register_from(&registrar, "register_auth.xml", a, a_pw, 0, Some(port));
    assert_sipp_passed(&outcome, &registrar, "un-REGISTER");
    assert!(
        registrar.bindings_for(a).is_empty(),
        "{:#?}",
        registrar.bindings()
    );

    // min_expires is 0 in the harness: a 2 s registration is granted as asked, then lapses.
    let outcome = sipp_register(&registrar, "register_auth.xml", b, b_pw, 2);
    assert_sipp_passed(&outcome, &registrar, "short REGISTER");
    let bindings = registrar.bindings();
    assert_eq!(bindings.len(), 1, "{bindings:#?}");
    assert!(bindings[0].expires_in <= 2, "{bindings:#?}");
    assert_eq!(
        registrar.wait_for_binding_count(0, Duration::from_secs(10)),
        0,
        "a 2 s binding outlived 10 s"
    );
}

#[test]
fn max_expires_option_caps_the_granted_expiry() {
    if !needs_peers() {
        return;
    }
    let users = users(1);
    let options = RegistrarOptions {
        max_expires: 120,
        ..RegistrarOptions::default()
    };
    let registrar = KamailioRegistrar::start_with(DOMAIN, &users, &options)
        .unwrap_or_else(|e| panic!("starting Kamailio: {e}"));
    let (user, password) = &users[0];
    let outcome = sipp_register(&registrar, "register_auth.xml", user, password, 3600);
    assert_sipp_passed(&outcome, &registrar, "REGISTER");
    let bindings = registrar.bindings();
    assert_eq!(bindings.len(), 1);
    assert!(
        (110..=120).contains(&bindings[0].expires_in),
        "{bindings:#?}"
    );
}

#[test]
fn password_change_takes_effect_at_once() {
    if !needs_peers() {
        return;
    }
    let registrar = start(DOMAIN, &users(1));
    registrar.set_user("late", "first").expect("adding a user");
    let outcome = sipp_register(&registrar, "register_auth.xml", "late", "first", 3600);
    assert_sipp_passed(&outcome, &registrar, "REGISTER of an added user");
    registrar
        .set_user("late", "second")
        .expect("changing a password");
    let outcome = sipp_register(
        &registrar,
        "register_auth_rejected.xml",
        "late",
        "first",
        3600,
    );
    assert_sipp_passed(&outcome, &registrar, "REGISTER with the old password");
}

#[test]
fn registrars_started_in_parallel_stay_apart() {
    if !needs_peers() {
        return;
    }
    let handles: Vec<_> = (0..4)
        .map(|i| {
            std::thread::spawn(move || {
                let user = (format!("par{i}"), format!("pw{i}"));
                let domain = format!("r{i}.{DOMAIN}");
                let registrar = start(&domain, std::slice::from_ref(&user));
                let outcome =
                    sipp_register(&registrar, "register_auth.xml", &user.0, &user.1, 3600);
                assert_sipp_passed(&outcome, &registrar, "REGISTER");
                let bindings = registrar.bindings();
                assert_eq!(bindings.len(), 1, "{bindings:#?}");
                assert_eq!(bindings[0].username, user.0);
                assert_eq!(bindings[0].domain, domain);
                registrar.addr()
            })
        })
        .collect();
    let mut addrs: Vec<SocketAddr> = handles
        .into_iter()
        .map(|h| h.join().expect("a registrar thread panicked"))
        .collect();
    addrs.sort();
    addrs.dedup();
    assert_eq!(addrs.len(), 4, "two registrars shared a port: {addrs:?}");
}

#[test]
fn drop_stops_kamailio_and_removes_its_dir() {
    if !needs_peers() {
        return;
    }
    let registrar = start(DOMAIN, &users(1));
    let dir = registrar.dir().to_path_buf();
    let group = registrar.process_group();
    let processes = registrar.processes();
    // The watchdog, Kamailio's main process and at least one worker.
    assert!(
        processes.len() >= 3,
        "processes in group {group}: {processes:?}"
    );
    assert!(dir.join("registrar.db").is_file());
    drop(registrar);

    assert!(!dir.exists(), "{} was left behind", dir.display());
    let left = processes_in_group(group);
    assert!(left.is_empty(), "still running after drop: {left:?}");
}

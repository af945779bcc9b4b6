//! Kamailio's own `kamcmd` (from Debian's `kamailio` package) against uacregd's control socket
//! (`ctl_socket`, BINRPC): the commands operators' scripts run print what they print for
//! Kamailio's uac module — records as `{ name: value … }`, faults as `error: 404 - …` — and a
//! stranger's bytes on the socket cost one connection, nothing more.

mod common;
mod support;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{TempDir, registered_count, registrar, test_config, wait_until, write_rows};
use support::process::{find_program, require};

fn kamcmd() -> Option<PathBuf> {
    let found = find_program("kamcmd", &["/usr/sbin/kamcmd", "/usr/local/sbin/kamcmd"]);
    if found.is_none() {
        require("kamcmd", false, || "not installed".to_string());
    }
    found
}

/// `kamcmd -s unix:SOCKET args…`: (succeeded, stdout and stderr).
fn run(kamcmd: &Path, socket: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(kamcmd)
        .arg("-s")
        .arg(format!("unix:{}", socket.display()))
        .args(args)
        .output()
        .expect("kamcmd runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kamcmd_runs_the_uac_commands_against_uacregd() {
    let Some(kamcmd) = kamcmd() else {
        return;
    };
    let dir = TempDir::new("kamcmd");
    let registrar = registrar(1).await;
    let rows = uacreg::demo::demo_rows(1, registrar.local_addr());
    let l_uuid = rows[0].l_uuid.clone();
    write_rows(&dir.db_url(), &rows);
    let socket = dir.0.join("kamailio_ctl");
    let mut config = test_config(&dir.db_url());
    config.ctl_socket = Some(format!("unix:{}", socket.display()));
    let daemon = uacreg::Daemon::start(config).await.unwrap();
    let registered = wait_until(Duration::from_secs(10), || async {
        registered_count(&daemon).await == 1
    })
    .await;
    assert!(registered, "the row never registered");

    let kam = |args: &[&str]| {
        let (kamcmd, socket) = (kamcmd.clone(), socket.clone());
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        async move {
            tokio::task::spawn_blocking(move || {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                run(&kamcmd, &socket, &args)
            })
            .await
            .unwrap()
        }
    };
    let (ok, dump) = kam(&["uac.reg_dump"]).await;
    assert!(ok, "{dump}");
    assert!(dump.starts_with("{\n"), "{dump}");
    assert!(dump.contains(&format!("\tl_uuid: {l_uuid}\n")), "{dump}");
    // ONLINE | INIT, as Kamailio shows a registered row; the password masked.
    assert!(dump.contains("\tflags: 20\n"), "{dump}");
    assert!(dump.contains("\tauth_password: ********\n"), "{dump}");

    let (ok, info) = kam(&["uac.reg_info", "l_uuid", &l_uuid]).await;
    assert!(ok, "{info}");
    assert!(info.contains(&format!("\tl_uuid: {l_uuid}\n")), "{info}");
    assert!(info.contains("\tstate: registered\n"), "{info}");

    let (_, missing) = kam(&["uac.reg_info", "l_uuid", "no-such-row"]).await;
    assert!(
        missing.contains("error: 404 - Record not found"),
        "{missing}"
    );

    let (ok, reload) = kam(&["uac.reg_reload"]).await;
    assert!(ok, "{reload}");
    assert!(reload.contains("\tunchanged: 1\n"), "{reload}");

    let (ok, enabled) = kam(&["uac.reg_enable", "l_uuid", &l_uuid]).await;
    assert!(ok && enabled.trim().is_empty(), "{enabled}");
    let (ok, refreshed) = kam(&["uac.reg_refresh", &l_uuid]).await;
    assert!(ok && refreshed.trim().is_empty(), "{refreshed}");

    let (ok, methods) = kam(&["system.listMethods"]).await;
    assert!(ok, "{methods}");
    for name in [
        "uac.reg_dump",
        "uac.reg_info",
        "core.version",
        "system.listMethods",
    ] {
        assert!(
            methods.lines().any(|l| l == name),
            "{name} missing:\n{methods}"
        );
    }
    let (ok, version) = kam(&["core.version"]).await;
    assert!(ok && version.starts_with("uacreg "), "{version}");
    let (ok, uptime) = kam(&["core.uptime"]).await;
    assert!(ok && uptime.contains("\tuptime: "), "{uptime}");
    let (_, unknown) = kam(&["no.such.method"]).await;
    assert!(
        unknown.contains("error: 500 - command no.such.method not found"),
        "{unknown}"
    );

    // A stranger's bytes: that connection is closed; the socket goes on serving.
    let garbage = socket.clone();
    tokio::task::spawn_blocking(move || {
        let mut stream = std::os::unix::net::UnixStream::connect(&garbage).unwrap();
        let _ = stream.write_all(b"GET / HTTP/1.0\r\n\r\n");
        let mut rest = Vec::new();
        let _ = std::io::Read::read_to_end(&mut stream, &mut rest);
        assert!(rest.is_empty(), "answered garbage: {rest:?}");
    })
    .await
    .unwrap();
    let (ok, again) = kam(&["core.version"]).await;
    assert!(ok && again.starts_with("uacreg "), "{again}");
    daemon.stop().await;
}

/// `ctl_socket = "tcp:127.0.0.1:PORT"`: kamcmd over TCP on loopback; any other address is
/// refused at start (BINRPC has no authentication).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kamcmd_over_tcp_on_loopback_and_nowhere_else() {
    let Some(kamcmd) = kamcmd() else {
        return;
    };
    let dir = TempDir::new("kamcmd-tcp");
    write_rows(&dir.db_url(), &[]);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut config = test_config(&dir.db_url());
    config.ctl_socket = Some(format!("tcp:127.0.0.1:{port}"));
    let daemon = uacreg::Daemon::start(config).await.unwrap();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(&kamcmd)
            .arg("-s")
            .arg(format!("tcp:127.0.0.1:{port}"))
            .arg("core.version")
            .output()
            .expect("kamcmd runs")
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.starts_with("uacreg "),
        "{text}"
    );
    daemon.stop().await;

    let mut open = test_config(&dir.db_url());
    open.ctl_socket = Some("tcp:0.0.0.0:2049".into());
    let refused = uacreg::Daemon::start(open).await.err().expect("refused");
    assert!(refused.to_string().contains("loopback"), "{refused}");
}

//! The shipped binaries: `uacregd demo` (the README's first command, small), and `uacregd` run on
//! a database file steered with `uacregctl`.

mod common;

use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::TempDir;
use uacreg::demo::demo_rows;
use uacreg::sip::digest::Algorithm;
use uacreg::testing::registrar::{RegistrarConfig, TestRegistrar};

const UACREGD: &str = env!("CARGO_BIN_EXE_uacregd");
const UACREGCTL: &str = env!("CARGO_BIN_EXE_uacregctl");

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn ctl(rpc: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(UACREGCTL)
        .arg("--rpc")
        .arg(rpc)
        .args(args)
        .output()
        .expect("run uacregctl");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// Runs `uacregd demo` with `args` in a new directory; its standard output, once it succeeded.
fn demo(name: &str, args: &[&str]) -> String {
    let dir = TempDir::new(name);
    let out = Command::new(UACREGD)
        .current_dir(&dir.0)
        .env_remove("UACREG_TOKEN")
        .arg("demo")
        .args(args)
        .output()
        .expect("run demo");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "demo failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn demo_command_registers_and_prints_the_table() {
    let stdout = demo("demo", &["--rows", "50", "--timeout", "60"]);
    assert!(stdout.contains("registered 50/50 rows"), "{stdout}");
    assert!(stdout.contains("uuid000000"), "{stdout}");
}

#[test]
fn demo_with_an_rpc_token_dumps_through_it() {
    let args = [
        "--rows",
        "20",
        "--timeout",
        "60",
        "--rpc-token",
        "demo-token",
    ];
    let stdout = demo("demo-token", &args);
    assert!(stdout.contains("registered 20/20 rows"), "{stdout}");
    assert!(
        stdout.contains("uuid000000"),
        "the dump came through: {stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_binary_with_uacregctl() {
    let registrar = TestRegistrar::start(RegistrarConfig {
        bind: "127.0.0.1:0".parse().unwrap(),
        realm: "registrar.test".into(),
        users: (0..10)
            .map(|i| (format!("user{i:06}"), format!("pw-user{i:06}")))
            .collect(),
        qop: true,
        algorithm: Algorithm::Md5,
        ..RegistrarConfig::default()
    })
    .await
    .unwrap();
    let dir = TempDir::new("binary");
    common::write_rows(&dir.db_url(), &demo_rows(10, registrar.local_addr()));
    let sip: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let rpc_port = free_port();
    let rpc = format!("http://127.0.0.1:{rpc_port}/RPC");
    let child = Command::new(UACREGD)
        .args(["--db", &dir.db_url(), "--sip-listen", &sip.to_string()])
        .args(["--rpc-listen", &format!("127.0.0.1:{rpc_port}")])
        .args(["--log", "debug", "--metrics-listen", "127.0.0.1:0"])
        .stdout(Stdio::null())
        .stderr(Stdio::from(
            std::fs::File::create(dir.0.join("uacregd.log")).unwrap(),
        ))
        .spawn()
        .expect("start uacregd");
    let mut guard = KillOnDrop(child);

    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = String::new();
    loop {
        let (ok, text) = ctl(&rpc, &["reg_dump"]);
        if ok && text.contains("10 records: registered 10") {
            break;
        }
        last = text;
        assert!(
            Instant::now() < deadline,
            "never all registered; last output:\n{last}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = last;
    let (ok, json) = ctl(&rpc, &["--json", "reg_info", "l_uuid", "uuid000003"]);
    assert!(ok, "{json}");
    let value: serde_json::Value = serde_json::from_str(&json).expect("json output");
    assert_eq!(value["r_username"], "user000003");
    assert_eq!(value["state"], "registered");
    let (ok, text) = ctl(&rpc, &["reg_info", "l_uuid", "missing"]);
    assert!(
        !ok && text.contains("404") && text.contains("Record not found"),
        "{text}"
    );
    let (ok, text) = ctl(&rpc, &["show", "registrations"]);
    assert!(
        ok && text.contains("Objects found: 10") && text.contains("user000004@registrar.test"),
        "{text}"
    );
    // Into a pipe the progress is plain lines: no bar redrawn with carriage returns.
    let (ok, text) = ctl(&rpc, &["reg_reload", "--wait"]);
    assert!(
        ok && text.contains("10/10 settled: 10 registered"),
        "{text}"
    );
    assert!(!text.contains('\r') && !text.contains('\x1b'), "{text:?}");
    let (ok, text) = ctl(&rpc, &["reg_reload"]);
    assert!(ok && text.contains("10 unchanged"), "{text}");
    // Graceful shutdown from uacregctl, with its progress: every binding is taken back.
    let (ok, text) = ctl(&rpc, &["shutdown"]);
    assert!(
        ok && text.contains("10/10 un-registered") && text.contains("uacregd stopped"),
        "{text}"
    );
    assert!(!text.contains('\r') && !text.contains('\x1b'), "{text:?}");
    let exited = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(50));
        guard.0.try_wait().ok().flatten().is_some()
    });
    assert!(exited, "uacregd did not exit after uacreg.shutdown");
    assert_eq!(registrar.binding_count(), 0);
    // Even at debug level, no password reaches the log.
    let log = std::fs::read_to_string(dir.0.join("uacregd.log")).unwrap();
    assert!(
        log.contains("registered"),
        "log too quiet to mean anything:\n{log}"
    );
    assert!(!log.contains("pw-user"), "a password leaked into the log");
    registrar.stop().await;
}

#[test]
fn uacregctl_says_when_the_daemon_is_not_reachable() {
    let port = free_port();
    let (ok, text) = ctl(&format!("http://127.0.0.1:{port}/RPC"), &["reg_dump"]);
    assert!(!ok);
    assert!(text.contains("cannot reach uacregd at"), "{text}");
}

/// The man pages and completion scripts in `contrib/` are what the binaries generate now (else:
/// `scripts/gen-docs`), and the man pages read as man pages.
#[test]
fn man_pages_and_completions_in_contrib_are_current() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib");
    let files = [
        (UACREGD, "man", "man/uacregd.8"),
        (UACREGCTL, "man", "man/uacregctl.1"),
        (UACREGD, "bash", "completions/uacregd.bash"),
        (UACREGCTL, "bash", "completions/uacregctl.bash"),
        (UACREGD, "zsh", "completions/_uacregd"),
        (UACREGCTL, "zsh", "completions/_uacregctl"),
        (UACREGD, "fish", "completions/uacregd.fish"),
        (UACREGCTL, "fish", "completions/uacregctl.fish"),
    ];
    for (binary, what, path) in files {
        let out = Command::new(binary)
            .args(["generate", what])
            .output()
            .expect("the binary runs");
        assert!(out.status.success(), "{binary} generate {what}");
        let committed = std::fs::read(root.join(path)).unwrap_or_default();
        assert!(
            out.stdout == committed,
            "contrib/{path} is not what {binary} generates now: run scripts/gen-docs"
        );
    }
    let daemon = std::fs::read_to_string(root.join("man/uacregd.8")).unwrap();
    assert!(daemon.contains(".TH uacregd 8"), "{daemon}");
    assert!(daemon.contains("\\-\\-config"), "{daemon}");
    let tool = std::fs::read_to_string(root.join("man/uacregctl.1")).unwrap();
    assert!(tool.contains(".TH uacregctl 1"), "{tool}");
    assert!(tool.contains("reg_dump"), "{tool}");
    assert!(
        !tool.contains("generate"),
        "the hidden subcommand stays out of the page"
    );
}

/// Under systemd (`Type=notify`, `WatchdogSec=`): uacregd says READY=1 on the notify socket once
/// started, then pings WATCHDOG=1 while its driver answers. The socket is ours, as systemd's
/// would be.
#[test]
fn systemd_hears_ready_and_watchdog_pings() {
    use std::os::unix::net::UnixDatagram;
    let dir = TempDir::new("cli-notify");
    let socket_path = dir.0.join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let rpc_port = free_port();
    let child = Command::new(UACREGD)
        .args(["--db", &dir.db_url(), "--sip-listen", "127.0.0.1:0"])
        .args(["--rpc-listen", &format!("127.0.0.1:{rpc_port}")])
        .args(["--metrics-listen", ""])
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "600000")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start uacregd");
    let guard = KillOnDrop(child);
    let mut heard = Vec::new();
    let mut buffer = [0u8; 4096];
    // READY, then at least two watchdog pings (every 0.3 s), within the read timeout.
    while heard
        .iter()
        .filter(|m: &&String| m.contains("WATCHDOG=1"))
        .count()
        < 2
    {
        let n = socket.recv(&mut buffer).expect("uacregd notifies");
        heard.push(String::from_utf8_lossy(&buffer[..n]).into_owned());
    }
    assert!(heard[0].contains("READY=1"), "{heard:?}");
    assert!(heard[0].contains("STATUS=SIP on 127.0.0.1:"), "{heard:?}");
    drop(guard);
}

/// An HTTP endpoint that turns every request away with `401`, as uacregd does without its token.
fn refusing_endpoint() -> SocketAddr {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(4) {
            let Ok(stream) = stream else { continue };
            let mut reader = BufReader::new(stream);
            let mut length = 0usize;
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                if let Some((name, value)) = line.split_once(':')
                    && name.eq_ignore_ascii_case("content-length")
                {
                    length = value.trim().parse().unwrap_or(0);
                }
                line.clear();
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            let refusal = "missing or wrong RPC token\n";
            let _ = write!(
                reader.get_mut(),
                "HTTP/1.1 401 Unauthorized\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{refusal}",
                refusal.len()
            );
        }
    });
    addr
}

#[test]
fn uacregctl_says_when_the_daemon_refuses_the_request() {
    let rpc = format!("http://{}/RPC", refusing_endpoint());
    // One call answered whole (reg_info) and one streamed (reg_dump): the same words, exit 2.
    for args in [&["reg_info", "l_uuid", "x"][..], &["reg_dump"][..]] {
        let out = Command::new(UACREGCTL)
            .arg("--rpc")
            .arg(&rpc)
            .args(args)
            .output()
            .expect("run uacregctl");
        let text = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {text}");
        assert!(
            text.contains("refused the request: HTTP status 401")
                && text.contains("--token")
                && !text.contains("cannot reach"),
            "{args:?}: {text}"
        );
    }
}

//! What `uacregd` writes to stderr when that is a pipe, as under a supervisor or a log shipper:
//! text without colour codes, or with `--log-format json` one JSON object a line — and in
//! neither a password.
//!
//! The daemon is pointed at a PostgreSQL URL on a port where nothing listens, so it logs its
//! start-up and then a line for every connection attempt, without binding any port.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const UACREGD: &str = env!("CARGO_BIN_EXE_uacregd");
const PASSWORD: &str = "hunter2-in-the-url";

/// The started `uacregd`, killed when the test ends however it ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `uacregd` with `args` and stderr to a pipe (NO_COLOR unset, so only the check for a
/// terminal can keep colours out), and returns what it wrote up to and including its first
/// "database not available" line.
fn stderr_until_first_attempt(args: &[&str]) -> Vec<String> {
    let dir = std::env::temp_dir().join(format!("uacreg-logs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let db = format!("postgres://uacreg:{PASSWORD}@127.0.0.1:1/uacreg");
    let child = Command::new(UACREGD)
        .args(["--db", &db, "--log", "info"])
        .args(args)
        .env_remove("NO_COLOR")
        .env_remove("RUST_LOG")
        .env_remove("UACREG_LOG_FORMAT")
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("uacregd starts");
    let mut running = Running(child);
    let stderr = running.0.stderr.take().expect("piped stderr");
    let (lines_tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(Ok(line)) => {
                let done = line.contains("database not available at start-up");
                seen.push(line);
                if done {
                    return seen;
                }
            }
            Ok(Err(err)) => panic!("reading stderr: {err}; so far:\n{}", seen.join("\n")),
            Err(_) => panic!(
                "no connection attempt logged within 30 s; so far:\n{}",
                seen.join("\n")
            ),
        }
    }
}

#[test]
fn text_logs_into_a_pipe_carry_no_colour_codes() {
    let lines = stderr_until_first_attempt(&[]);
    let all = lines.join("\n");
    assert!(!all.contains('\u{1b}'), "colour codes in:\n{all}");
    let attempt = lines.last().unwrap();
    assert!(attempt.contains("ERROR"), "{attempt}");
    assert!(
        attempt.contains("db=postgres://uacreg:***@127.0.0.1:1/uacreg"),
        "{attempt}"
    );
    assert!(!all.contains(PASSWORD), "password logged:\n{all}");
}

#[test]
fn json_logs_are_one_object_a_line_with_the_events_fields() {
    let lines = stderr_until_first_attempt(&["--log-format", "json"]);
    let all = lines.join("\n");
    assert!(!all.contains('\u{1b}'), "colour codes in:\n{all}");
    assert!(!all.contains(PASSWORD), "password logged:\n{all}");
    let events: Vec<serde_json::Map<String, serde_json::Value>> = lines
        .iter()
        .map(|line| match serde_json::from_str(line) {
            Ok(serde_json::Value::Object(event)) => event,
            other => panic!("not a JSON object: {line:?} ({other:?})"),
        })
        .collect();
    for event in &events {
        for key in ["timestamp", "level", "message", "target"] {
            assert!(
                event.get(key).is_some_and(serde_json::Value::is_string),
                "{key} missing in {event:?}"
            );
        }
    }
    let attempt = events.last().unwrap();
    assert_eq!(attempt["level"], "ERROR");
    assert_eq!(attempt["db"], "postgres://uacreg:***@127.0.0.1:1/uacreg");
    assert_eq!(attempt["attempt"], 1);
    let message = attempt["message"].as_str().unwrap();
    assert!(message.contains("trying again in"), "{message}");
    // The event's own fields sit next to the message, as a shipper indexes them.
    let limit = events
        .iter()
        .find(|event| event["message"] == "open-files limit")
        .unwrap_or_else(|| panic!("no open-files line in:\n{all}"));
    assert!(limit["open_files"].is_u64(), "{limit:?}");
}

/// Under systemd, stderr is the journal's stream (`JOURNAL_STREAM` names its device and inode):
/// each line starts with the syslog priority journald turns into the entry's level, without a
/// timestamp of its own. Here the stream is a file whose device and inode we pass the same way;
/// the same variable with another stream's numbers changes nothing.
#[test]
fn lines_for_the_journal_carry_their_level() {
    use std::os::unix::fs::MetadataExt;
    let dir = std::env::temp_dir().join(format!("uacreg-journal-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let run = |name: &str, stream_of: Option<&std::path::Path>| -> String {
        let path = dir.join(name);
        let file = std::fs::File::create(&path).unwrap();
        let meta = std::fs::metadata(stream_of.unwrap_or(&path)).unwrap();
        let db = format!("postgres://uacreg:{PASSWORD}@127.0.0.1:1/uacreg");
        let child = Command::new(UACREGD)
            .args(["--db", &db, "--log", "info"])
            .env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()))
            .env_remove("RUST_LOG")
            .env_remove("UACREG_LOG_FORMAT")
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("uacregd starts");
        let _running = Running(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            if text.contains("database not available at start-up") {
                return text;
            }
            assert!(Instant::now() < deadline, "nothing logged:\n{text}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let journal = run("journal.log", None);
    let lines: Vec<&str> = journal.lines().collect();
    let limit = lines
        .iter()
        .find(|l| l.contains("open-files limit"))
        .unwrap_or_else(|| panic!("{journal}"));
    assert!(limit.starts_with("<6> INFO open-files limit"), "{limit}");
    let attempt = lines
        .iter()
        .find(|l| l.contains("database not available"))
        .unwrap();
    assert!(attempt.starts_with("<3>ERROR "), "{attempt}");
    assert!(!journal.contains(PASSWORD), "password logged:\n{journal}");
    // Another stream's numbers (a shell that inherited the variable): ordinary text lines.
    let elsewhere = run("plain.log", Some(&dir.join("journal.log")));
    let first = elsewhere.lines().next().unwrap_or("");
    assert!(!first.starts_with('<'), "{first}");
    assert!(first.starts_with("20"), "a timestamp first: {first}");
    let _ = std::fs::remove_dir_all(&dir);
}

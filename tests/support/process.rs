//! Process plumbing for the test peers: temp dirs, spare loopback ports, bounded waits.

use std::collections::HashSet;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// True when running under CI (`CI=true`), where a missing test peer is a failure, not a skip.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// Handles the "is this program installed?" answer the same way for every peer: in CI a missing
/// program fails the test; locally the test is skipped with a message saying why.
pub fn require(what: &str, available: bool, why_missing: impl FnOnce() -> String) -> bool {
    if available {
        return true;
    }
    let why = why_missing();
    if in_ci() {
        panic!(
            "{what} is required in CI (CI=true) but unusable: {why}; run scripts/install-test-deps"
        );
    }
    eprintln!(
        "SKIPPED: {what} unusable ({why}); run scripts/install-test-deps to enable this test"
    );
    false
}

/// First path in `candidates` that exists, else the first `name` found on `PATH`.
pub fn find_program(name: &str, candidates: &[&str]) -> Option<PathBuf> {
    for c in candidates {
        let p = Path::new(c);
        if p.is_file() {
            return Some(p.to_path_buf());
        }
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// A directory under the system temp dir, unique to this process and call, removed on drop
/// (unless `UACREG_KEEP_TEST_DIRS` is set, for post-mortems).
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(prefix: &str) -> io::Result<TempDir> {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("{prefix}-{}-{n}", std::process::id()));
        // A leftover from an earlier process that had the same pid.
        if path.exists() {
            std::fs::remove_dir_all(&path)?;
        }
        std::fs::create_dir_all(&path)?;
        Ok(TempDir { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var_os("UACREG_KEEP_TEST_DIRS").is_none() {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// Ports handed out by [`spare_udp_port`] in this process and not yet released. Kamailio and
/// sipp set SO_REUSEADDR, so two of them given the same port would both bind it and split the
/// traffic; this set keeps two peers of one test binary from ever being given the same port.
static PORTS_IN_USE: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// A loopback UDP port that was free a moment ago and that no other caller in this process holds.
/// The reservation lasts until the returned guard is dropped.
pub fn spare_udp_port() -> io::Result<PortReservation> {
    for _ in 0..64 {
        let sock = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
        let port = sock.local_addr()?.port();
        drop(sock);
        let mut guard = PORTS_IN_USE.lock().unwrap_or_else(|e| e.into_inner());
        if guard.get_or_insert_with(HashSet::new).insert(port) {
            return Ok(PortReservation { port });
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AddrInUse,
        "no spare UDP port on 127.0.0.1 after 64 tries",
    ))
}

/// A port reserved by [`spare_udp_port`]; released (for this process) on drop.
#[derive(Debug)]
pub struct PortReservation {
    port: u16,
}

impl PortReservation {
    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }
}

impl Drop for PortReservation {
    fn drop(&mut self) {
        let mut guard = PORTS_IN_USE.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(set) = guard.as_mut() {
            set.remove(&self.port);
        }
    }
}

/// Waits for `child` to exit for at most `limit`; `Ok(None)` if it is still running.
pub fn wait_timeout(child: &mut Child, limit: Duration) -> io::Result<Option<ExitStatus>> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Sends `signal` (a name like "TERM") to every process in the process group `pgid`. Only used
/// on groups this harness created (`process_group(0)` at spawn), never on anything else.
pub fn signal_group(pgid: u32, signal: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg("--")
        .arg(format!("-{pgid}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
}

/// Reads a file written by a child (a log) as text, for failure messages. Never fails.
pub fn read_lossy(path: &Path) -> String {
    match std::fs::read(path) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(e) => format!("<cannot read {}: {e}>", path.display()),
    }
}

/// The last `max_lines` lines of `text`, to keep failure messages readable.
pub fn tail(text: &str, max_lines: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(max_lines);
    lines[start..].join("\n")
}

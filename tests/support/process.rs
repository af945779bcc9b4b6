//! Process plumbing for the test peers: temp dirs, spare loopback ports, bounded waits.

use std::io::{self, Write as _};
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
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

/// A loopback UDP port that was free a moment ago and that no other test process or thread
/// holds. The reservation lasts until the returned guard is dropped.
///
/// Why reservations: Kamailio and sipp bind with SO_REUSEADDR, so two of them given the same
/// port would both bind it and silently split its traffic. A reservation is a lock file
/// `<temp>/uacreg-test-ports/<port>` created exclusively (so it also holds across test
/// processes, e.g. under cargo-nextest); a port whose file exists is never handed out.
pub fn spare_udp_port() -> io::Result<PortReservation> {
    let dir = std::env::temp_dir().join("uacreg-test-ports");
    if !dir.is_dir() {
        std::fs::create_dir_all(&dir)?;
        // Shared by every user's test runs, like /tmp itself (sticky, world-writable).
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777));
    }
    for _ in 0..64 {
        let sock = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
        let port = sock.local_addr()?.port();
        drop(sock);
        let lock = dir.join(port.to_string());
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&lock)
        {
            Ok(mut f) => {
                let _ = write!(f, "{}", std::process::id());
                return Ok(PortReservation { port, lock });
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => remove_if_stale(&lock),
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AddrInUse,
        "no spare UDP port on 127.0.0.1 after 64 tries",
    ))
}

/// Removes a reservation left by a test process that died without dropping it (its pid is gone
/// and the file is over a minute old). The port is still skipped this time.
fn remove_if_stale(lock: &Path) {
    let old = std::fs::metadata(lock)
        .and_then(|m| m.modified())
        .is_ok_and(|t| t.elapsed().is_ok_and(|age| age > Duration::from_secs(60)));
    let owner_gone = std::fs::read_to_string(lock)
        .ok()
        .and_then(|pid| pid.trim().parse::<u32>().ok())
        .is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists());
    if old && owner_gone {
        let _ = std::fs::remove_file(lock);
    }
}

/// A port reserved by [`spare_udp_port`]; released on drop.
#[derive(Debug)]
pub struct PortReservation {
    port: u16,
    lock: PathBuf,
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
        let _ = std::fs::remove_file(&self.lock);
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

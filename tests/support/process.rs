//! Process plumbing for the test peers: temp dirs, spare loopback ports, bounded waits.

use std::io::{self, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
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
    reserve_port("UDP", || {
        UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?
            .local_addr()
            .map(|a| a.port())
    })
}

/// A loopback TCP port that was free a moment ago and that no other test process or thread
/// holds, reserved the same way as [`spare_udp_port`] (the lock files share one namespace, so a
/// number is never handed out for TCP and UDP at once).
pub fn spare_tcp_port() -> io::Result<PortReservation> {
    reserve_port("TCP", || {
        TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
            .local_addr()
            .map(|a| a.port())
    })
}

/// Asks the kernel for a free port with `probe` (which binds and releases it) until one has no
/// reservation, and reserves it.
fn reserve_port(
    protocol: &str,
    probe: impl Fn() -> io::Result<u16>,
) -> io::Result<PortReservation> {
    let dir = std::env::temp_dir().join("uacreg-test-ports");
    if !dir.is_dir() {
        std::fs::create_dir_all(&dir)?;
        // Shared by every user's test runs, like /tmp itself (sticky, world-writable).
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777));
    }
    for _ in 0..64 {
        let port = probe()?;
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
        format!("no spare {protocol} port on 127.0.0.1 after 64 tries"),
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

/// A port reserved by [`spare_udp_port`] or [`spare_tcp_port`]; released on drop.
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

/// Whether `child` has exited, without reaping it (so its pid, and the process group it leads,
/// stay reserved): a zombie shows state `Z` in `/proc/<pid>/stat`. Linux only, like the rest of
/// this harness.
pub fn has_exited(child: &Child) -> bool {
    match proc_stat(child.id()) {
        Some(stat) => stat.state == 'Z' || stat.state == 'X',
        None => true,
    }
}

/// The fields of `/proc/<pid>/stat` the harness looks at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcStat {
    pub state: char,
    pub ppid: u32,
    pub pgrp: u32,
    /// Clock ticks after boot; with the pid it names one process even if the pid is reused.
    pub start_time: u64,
}

/// Reads `/proc/<pid>/stat`; `None` if there is no such process.
pub fn proc_stat(pid: u32) -> Option<ProcStat> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) S ppid pgrp ...": comm may contain spaces and parentheses, so split after the
    // last ')'. start_time is field 22 of the whole line, the 20th after comm.
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(ProcStat {
        state: fields.first()?.chars().next()?,
        ppid: fields.get(1)?.parse().ok()?,
        pgrp: fields.get(2)?.parse().ok()?,
        start_time: fields.get(19)?.parse().ok()?,
    })
}

/// Pids of all processes descended from `root` (children, grandchildren, ...), not `root`
/// itself, from `/proc`. Also finds those that moved to a session of their own (PostgreSQL's
/// children call `setsid()`), which a process-group signal would miss.
pub fn descendants(root: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let parents: Vec<(u32, u32)> = entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| Some((pid, proc_stat(pid)?.ppid)))
        .collect();
    let mut found = Vec::new();
    let mut frontier = vec![root];
    while let Some(parent) = frontier.pop() {
        for &(pid, ppid) in &parents {
            if ppid == parent && !found.contains(&pid) {
                found.push(pid);
                frontier.push(pid);
            }
        }
    }
    found.sort();
    found
}

/// Runs `command` with `input` on its stdin and waits at most `limit` (then kills it). Returns
/// its exit status, stdout and stderr. stdout and stderr are read on threads, so a large result
/// cannot deadlock against the write of `input`.
pub fn run_with_input(
    command: &mut Command,
    input: &str,
    limit: Duration,
) -> io::Result<std::process::Output> {
    let program = command.get_program().to_string_lossy().into_owned();
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| io::Error::new(e.kind(), format!("spawning {program}: {e}")))?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    let mut out_pipe = child.stdout.take().expect("piped stdout");
    let mut err_pipe = child.stderr.take().expect("piped stderr");
    let out_reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = io::Read::read_to_end(&mut out_pipe, &mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = io::Read::read_to_end(&mut err_pipe, &mut s);
        s
    });
    // A program that exits early (a failed connection) closes its stdin: not our error.
    let _ = stdin.write_all(input.as_bytes());
    drop(stdin);
    let status = match wait_timeout(&mut child, limit)? {
        Some(status) => status,
        None => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("{program} took over {limit:?}"),
            ));
        }
    };
    Ok(std::process::Output {
        status,
        stdout: out_reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
    })
}

/// A long-running program under a small `sh` watchdog, in a process group of its own.
///
/// The watchdog holds a pipe (its stdin) from the test process. When [`Watched::stop`] closes
/// it — or the test process dies in any way and the kernel closes it — the watchdog sends the
/// program its stop signal. The watchdog exits with the program's status when the program
/// exits on its own. Nothing of this outlives the test process for longer than the program's
/// own shutdown takes.
#[derive(Debug)]
pub struct Watched {
    /// The `sh` watchdog; its pid is the process group of it and the program.
    watchdog: Child,
    /// Closing this tells the watchdog to stop the program.
    lifeline: Option<ChildStdin>,
    /// The watchdog has been reaped: its pid may belong to another process now.
    reaped: bool,
}

impl Watched {
    /// Starts `program` (its program, arguments, environment and working dir are taken from
    /// the `Command`) under a watchdog that sends `stop_signal` (a name like "TERM") when the
    /// lifeline closes; stdout and stderr go to `log`.
    pub fn spawn(program: &Command, stop_signal: &str, log: &std::fs::File) -> io::Result<Watched> {
        use std::os::unix::process::CommandExt;

        // An asynchronous list gets /dev/null as stdin before its own redirections, so the
        // lifeline is first saved as fd 3 and handed to the reader from there. $0 is the stop
        // signal, "$@" the program.
        const WATCHDOG: &str = r#"
exec 3<&0
"$@" 3<&- &
k=$!
( read -r _ignored <&3; kill -"$0" "$k" 2>/dev/null ) &
w=$!
exec 3<&-
wait "$k"
rc=$?
kill -TERM "$w" 2>/dev/null
exit "$rc"
"#;
        let mut sh = Command::new("/bin/sh");
        sh.arg("-c")
            .arg(WATCHDOG)
            .arg(stop_signal)
            .arg(program.get_program())
            .args(program.get_args());
        for (key, value) in program.get_envs() {
            match value {
                Some(v) => sh.env(key, v),
                None => sh.env_remove(key),
            };
        }
        if let Some(dir) = program.get_current_dir() {
            sh.current_dir(dir);
        }
        let mut watchdog = sh
            .stdin(Stdio::piped())
            .stdout(log.try_clone()?)
            .stderr(log.try_clone()?)
            .process_group(0)
            .spawn()
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!(
                        "spawning {} via /bin/sh: {e}",
                        program.get_program().to_string_lossy()
                    ),
                )
            })?;
        let lifeline = watchdog.stdin.take();
        Ok(Watched {
            watchdog,
            lifeline,
            reaped: false,
        })
    }

    /// Whether the program (and so the watchdog) has exited.
    pub fn has_exited(&self) -> bool {
        self.reaped || has_exited(&self.watchdog)
    }

    /// Process group of the watchdog and the program (the watchdog's pid).
    pub fn process_group(&self) -> u32 {
        self.watchdog.id()
    }

    /// Pids of the watchdog and everything descended from it, sorted.
    pub fn processes(&self) -> Vec<u32> {
        if self.reaped {
            return Vec::new();
        }
        let mut pids = descendants(self.watchdog.id());
        pids.retain(|&pid| proc_stat(pid).is_some_and(|s| s.state != 'Z' && s.state != 'X'));
        if !self.has_exited() {
            pids.push(self.watchdog.id());
        }
        pids.sort();
        pids
    }

    /// Closes the lifeline (the watchdog then sends the stop signal) and waits up to `limit`
    /// for the program to exit; after that everything still there is killed. Returns the
    /// program's exit status as the watchdog reports it, `None` if it had to be killed.
    ///
    /// Killing: the group is first stopped (SIGSTOP), so no process in it can reap a child and
    /// free its pid; then the whole tree under the watchdog — including descendants in other
    /// sessions — and the group get SIGKILL. The watchdog is reaped last, so its pid (the group
    /// id) cannot have been reused while it is signalled.
    pub fn stop(&mut self, limit: Duration) -> Option<ExitStatus> {
        drop(self.lifeline.take());
        if self.reaped {
            return None;
        }
        let deadline = Instant::now() + limit;
        while !self.has_exited() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let pgid = self.watchdog.id();
        let clean = self.has_exited();
        if !clean {
            signal_group(pgid, "STOP");
            let tree = descendants(pgid);
            if !tree.is_empty() {
                let _ = Command::new("kill")
                    .arg("-KILL")
                    .args(tree.iter().map(u32::to_string))
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
        }
        // Also reaches stragglers left in the group after a clean exit.
        signal_group(pgid, "KILL");
        let status = self.watchdog.wait().ok();
        self.reaped = true;
        if clean { status } else { None }
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(5));
    }
}

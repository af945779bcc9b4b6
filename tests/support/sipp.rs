//! Runs a sipp scenario (a file in `tests/sipp/`) as a UAC against a loopback target.
//!
//! Every run is bounded twice: sipp's own `-timeout` (with `-timeout_error`, so a timeout is a
//! failure) and a wall-clock limit after which the process is killed. sipp binds only to
//! 127.0.0.1 (`-i`), on a port reserved with [`spare_udp_port`] unless one is given.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use super::process::{
    PortReservation, TempDir, find_program, read_lossy, require, spare_udp_port, tail, wait_timeout,
};

const SIPP_CANDIDATES: &[&str] = &["/usr/bin/sipp", "/usr/local/bin/sipp"];

/// The sipp binary, if installed (Debian package `sip-tester`).
pub fn sipp_path() -> Option<PathBuf> {
    find_program("sipp", SIPP_CANDIDATES)
}

pub fn sipp_available() -> bool {
    sipp_path().is_some()
}

/// Like `require_kamailio`: in CI a missing sipp fails the test, locally it is skipped.
pub fn require_sipp() -> bool {
    require("sipp", sipp_available(), || {
        "no sipp binary (Debian package sip-tester)".to_owned()
    })
}

/// Path of a scenario shipped in `tests/sipp/`.
pub fn scenario(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/sipp")
        .join(name)
}

/// One sipp UAC run, configured builder-style and started with [`SippUac::run`].
#[derive(Clone, Debug)]
pub struct SippUac {
    scenario: PathBuf,
    target: SocketAddr,
    calls: u32,
    injection: Vec<String>,
    auth: Option<(String, String)>,
    local_port: Option<u16>,
    timeout: Duration,
    extra_args: Vec<String>,
}

/// What a finished sipp run left behind.
#[derive(Debug)]
pub struct SippOutcome {
    pub status: ExitStatus,
    /// The local port sipp used (its `[local_port]`).
    pub local_port: u16,
    /// sipp's stdout and stderr, then its error log: for failure messages.
    pub output: String,
    /// Keeps `local_port` reserved while the outcome lives, so a later run can reuse it
    /// (same Contact) without another test taking it in between.
    _port: Option<PortReservation>,
}

impl SippOutcome {
    /// sipp exits 0 only when every call passed the scenario.
    pub fn success(&self) -> bool {
        self.status.success()
    }
}

impl SippUac {
    /// `scenario` against `target`, one call, 10 s timeout.
    pub fn new(scenario: impl Into<PathBuf>, target: SocketAddr) -> SippUac {
        SippUac {
            scenario: scenario.into(),
            target,
            calls: 1,
            injection: Vec::new(),
            auth: None,
            local_port: None,
            timeout: Duration::from_secs(10),
            extra_args: Vec::new(),
        }
    }

    /// Number of calls (`-m`).
    pub fn calls(mut self, n: u32) -> SippUac {
        self.calls = n;
        self
    }

    /// One line of the `-inf` injection file (fields separated by `;`), used sequentially.
    pub fn inject(mut self, line: impl Into<String>) -> SippUac {
        self.injection.push(line.into());
        self
    }

    /// Digest credentials for the scenario's `[authentication]` (`-au`, `-ap`).
    pub fn auth(mut self, username: &str, password: &str) -> SippUac {
        self.auth = Some((username.to_owned(), password.to_owned()));
        self
    }

    /// Local port (`-p`); otherwise a spare one is reserved.
    pub fn local_port(mut self, port: u16) -> SippUac {
        self.local_port = Some(port);
        self
    }

    /// sipp's global timeout (`-timeout`); the process is killed 10 s after it.
    pub fn timeout(mut self, timeout: Duration) -> SippUac {
        self.timeout = timeout;
        self
    }

    /// Any further sipp argument.
    pub fn arg(mut self, arg: impl Into<String>) -> SippUac {
        self.extra_args.push(arg.into());
        self
    }

    /// Runs sipp to completion (bounded) and reports how it ended. An `Err` means sipp could not
    /// be run or had to be killed, not that the scenario failed: check
    /// [`SippOutcome::success`].
    pub fn run(&self) -> io::Result<SippOutcome> {
        let sipp = sipp_path()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "sipp is not installed"))?;
        if !self.target.ip().is_loopback() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("sipp target {} is not loopback", self.target),
            ));
        }
        let dir = TempDir::new("uacreg-sipp")?;
        let reservation: Option<PortReservation>;
        let local_port = match self.local_port {
            Some(p) => {
                reservation = None;
                p
            }
            None => {
                let r = spare_udp_port()?;
                let p = r.port();
                reservation = Some(r);
                p
            }
        };
        let stdout_path = dir.path().join("sipp.out");
        let error_path = dir.path().join("sipp.errors.log");
        let mut cmd = Command::new(&sipp);
        cmd.arg(self.target.to_string())
            .arg("-sf")
            .arg(&self.scenario)
            .args(["-i", "127.0.0.1", "-t", "u1", "-nostdin"])
            .args(["-p", &local_port.to_string()])
            .args(["-m", &self.calls.to_string()])
            .args(["-timeout", &format!("{}s", self.timeout.as_secs().max(1))])
            .arg("-timeout_error")
            .arg("-trace_err")
            .arg("-error_file")
            .arg(&error_path);
        if !self.injection.is_empty() {
            let csv = dir.path().join("inject.csv");
            let mut text = String::from("SEQUENTIAL\n");
            for line in &self.injection {
                text.push_str(line);
                text.push('\n');
            }
            std::fs::write(&csv, text)?;
            cmd.arg("-inf").arg(&csv);
        }
        if let Some((user, password)) = &self.auth {
            cmd.args(["-au", user, "-ap", password]);
        }
        cmd.args(&self.extra_args);
        let out = std::fs::File::create(&stdout_path)?;
        let mut child = cmd
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("spawning {}: {e}", sipp.display())))?;
        let limit = self.timeout + Duration::from_secs(10);
        let status = match wait_timeout(&mut child, limit)? {
            Some(status) => status,
            None => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "sipp ran past {limit:?} and was killed:\n{}",
                        tail(&read_lossy(&stdout_path), 40)
                    ),
                ));
            }
        };
        let mut output = tail(&read_lossy(&stdout_path), 60);
        if error_path.exists() {
            output.push_str("\n--- sipp error log ---\n");
            output.push_str(&tail(&read_lossy(&error_path), 40));
        }
        Ok(SippOutcome {
            status,
            local_port,
            output,
            _port: reservation,
        })
    }
}

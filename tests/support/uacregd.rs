//! The real `uacregd` binary in a process of its own, for tests that need what only a process
//! has: its exit status, its memory and CPU time apart from the test's.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use super::process::{self, Watched};

/// A running `uacregd` under a watchdog (stopped with SIGTERM when dropped).
pub struct Uacregd {
    watched: Watched,
    pub sip: SocketAddr,
    pub rpc: SocketAddr,
    log: PathBuf,
}

impl Uacregd {
    /// Starts `binary` (`env!("CARGO_BIN_EXE_uacregd")`) on `db_url` with loopback ports, no
    /// metrics endpoint, no un-REGISTER on stop, `extra_config` appended to its TOML file, and
    /// waits until its JSON-RPC answers.
    pub fn start(binary: &str, dir: &Path, db_url: &str, extra_config: &str) -> io::Result<Self> {
        let sip = process::spare_udp_port()?;
        let rpc = process::spare_tcp_port()?;
        let config = dir.join("uacregd.toml");
        std::fs::write(
            &config,
            format!(
                "db_url = \"{db_url}\"\nsip_listen = \"{}\"\nrpc_listen = \"{}\"\n\
                 metrics_listen = \"\"\nunregister_on_shutdown = false\n{extra_config}\n",
                sip.addr(),
                rpc.addr()
            ),
        )?;
        let log = dir.join("uacregd.log");
        let log_file = std::fs::File::create(&log)?;
        let mut command = Command::new(binary);
        command.arg("--config").arg(&config).args(["--log", "info"]);
        let (sip, rpc) = (sip.addr(), rpc.addr());
        let watched = Watched::spawn(&command, "TERM", &log_file)?;
        let daemon = Uacregd {
            watched,
            sip,
            rpc,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while daemon.call("uacreg.status", "").is_err() {
            if Instant::now() >= deadline || daemon.watched.has_exited() {
                return Err(io::Error::other(format!(
                    "uacregd did not come up:\n{}",
                    process::tail(&daemon.log(), 30)
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(daemon)
    }

    pub fn log(&self) -> String {
        process::read_lossy(&self.log)
    }

    /// Pid of the uacregd process itself (not its watchdog).
    pub fn pid(&self) -> Option<u32> {
        self.watched.processes().into_iter().find(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|comm| comm.trim() == "uacregd")
        })
    }

    /// Waits up to `limit` for the process to exit on its own; how long that took.
    pub fn exits_within(&self, limit: Duration) -> Option<Duration> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if self.watched.has_exited() {
                return Some(start.elapsed());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    /// SIGTERM, then waits up to `limit`; the exit status (None if it had to be killed).
    pub fn stop(&mut self, limit: Duration) -> Option<ExitStatus> {
        self.watched.stop(limit)
    }

    /// One JSON-RPC call over plain HTTP (`params` is the JSON array's inside); the whole
    /// HTTP answer.
    pub fn call(&self, method: &str, params: &str) -> io::Result<String> {
        let body = format!(r#"{{"jsonrpc":"2.0","id":1,"method":"{method}","params":[{params}]}}"#);
        let mut stream = TcpStream::connect_timeout(&self.rpc, Duration::from_secs(2))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(
            stream,
            "POST / HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.rpc,
            body.len()
        )?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer)?;
        Ok(answer)
    }
}

/// Resident memory of `pid` in KiB (`VmRSS`).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// CPU time `pid` used so far (user + system), in clock ticks (100 per second on Linux).
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // utime and stime are fields 14 and 15, the 12th and 13th after the ")" closing comm.
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let user: u64 = fields.get(11)?.parse().ok()?;
    let system: u64 = fields.get(12)?.parse().ok()?;
    Some(user + system)
}

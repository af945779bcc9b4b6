//! uacregd under test: the real daemon binary in a process of its own, so its memory and CPU
//! are its own and not the load tool's or the registrar's.
//!
//! It is watched through the same endpoints an operator uses: the Prometheus text for
//! counters (cheap to poll) and JSON-RPC for `uac.reg_dump` and `uac.reg_reload`, spoken as
//! plain HTTP so that the time measured is the server's answer, not a JSON parser's.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use uacreg::registration::Secret;
use uacreg::store::{RawRow, Store};

use crate::procfs;
use crate::rows::LoadRow;
use crate::support::process::{self, Watched};

pub struct Uacregd {
    watched: Watched,
    pid: u32,
    rpc: SocketAddr,
    metrics: SocketAddr,
    log: PathBuf,
}

pub fn raw_row(row: &LoadRow) -> RawRow {
    let mut raw = RawRow::new(&row.l_uuid, &row.r_username, &row.r_domain);
    raw.l_username = row.l_username.clone();
    raw.l_domain = row.l_domain.clone();
    raw.realm = row.realm.clone();
    raw.auth_username = row.auth_username.clone();
    raw.auth_password = Secret::new(row.auth_password.clone());
    raw.auth_proxy = row.auth_proxy.clone();
    raw.expires = i64::from(row.expires);
    raw
}

/// Writes the rows into a fresh SQLite database (created and migrated by the store).
pub fn write_rows(db: &Path, rows: &[LoadRow]) -> io::Result<()> {
    let _ = std::fs::remove_file(db);
    let mut store = Store::open(&format!("sqlite://{}", db.display())).map_err(io::Error::other)?;
    let raw: Vec<RawRow> = rows.iter().map(raw_row).collect();
    store.insert(&raw).map_err(io::Error::other)
}

/// Rewrites `rows` in the database (matched by l_uuid).
pub fn update_rows(db: &Path, rows: &[LoadRow]) -> io::Result<()> {
    let mut store = Store::open(&format!("sqlite://{}", db.display())).map_err(io::Error::other)?;
    for row in rows {
        if !store.update(&raw_row(row)).map_err(io::Error::other)? {
            return Err(io::Error::other(format!("row {} not found", row.l_uuid)));
        }
    }
    Ok(())
}

impl Uacregd {
    /// Starts the daemon on `db` with `extra_config` appended to its TOML file, and waits until
    /// its metrics endpoint answers.
    pub fn start(dir: &Path, db: &Path, extra_config: &str) -> io::Result<Uacregd> {
        let sip = process::spare_udp_port()?;
        let rpc = process::spare_tcp_port()?;
        let metrics = process::spare_tcp_port()?;
        let config = dir.join("uacregd.toml");
        std::fs::write(
            &config,
            format!(
                "db_url = \"sqlite://{}\"\nsip_listen = \"{}\"\nrpc_listen = \"{}\"\n\
                 metrics_listen = \"{}\"\nunregister_on_shutdown = false\n{extra_config}\n",
                db.display(),
                sip.addr(),
                rpc.addr(),
                metrics.addr()
            ),
        )?;
        let log = dir.join("uacregd.log");
        let log_file = std::fs::File::create(&log)?;
        // UACREG_LOAD_WRAPPER="heaptrack -o /tmp/ht" runs the daemon under a profiler.
        let wrapper = std::env::var("UACREG_LOAD_WRAPPER").unwrap_or_default();
        let mut words = wrapper.split_whitespace();
        let mut command = match words.next() {
            Some(program) => {
                let mut command = Command::new(program);
                command.args(words).arg(env!("CARGO_BIN_EXE_uacregd"));
                command
            }
            None => Command::new(env!("CARGO_BIN_EXE_uacregd")),
        };
        command
            .arg("--config")
            .arg(&config)
            .arg("--log")
            .arg("warn");
        let (rpc, metrics) = (rpc.addr(), metrics.addr());
        drop(sip);
        let watched = Watched::spawn(&command, "TERM", &log_file)?;
        let pid = find_pid(&watched)?;
        let mut daemon = Uacregd {
            watched,
            pid,
            rpc,
            metrics,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if daemon.metrics().is_ok() {
                return Ok(daemon);
            }
            if daemon.watched.has_exited() || Instant::now() > deadline {
                let log = process::tail(&process::read_lossy(&daemon.log), 20);
                daemon.watched.stop(Duration::from_secs(5));
                return Err(io::Error::other(format!("uacregd did not come up:\n{log}")));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Every sample of the Prometheus endpoint, keyed by name with labels
    /// (`uacreg_registrations{state="registered"}`).
    pub fn metrics(&self) -> io::Result<HashMap<String, f64>> {
        let (_, body) = http(self.metrics, "GET", "/metrics", "")?;
        Ok(String::from_utf8_lossy(&body)
            .lines()
            .filter(|line| !line.starts_with('#'))
            .filter_map(|line| {
                let (name, value) = line.rsplit_once(' ')?;
                Some((name.to_string(), value.parse().ok()?))
            })
            .collect())
    }

    /// One JSON-RPC call; the time until the whole answer was read, and the answer.
    pub fn rpc(&self, method: &str) -> io::Result<(Duration, Vec<u8>)> {
        let body = format!(r#"{{"jsonrpc":"2.0","id":1,"method":"{method}","params":[]}}"#);
        http(self.rpc, "POST", "/", &body)
    }

    pub fn log_tail(&self) -> String {
        process::tail(&process::read_lossy(&self.log), 20)
    }

    pub fn stop(mut self) {
        self.watched.stop(Duration::from_secs(10));
    }
}

fn find_pid(watched: &Watched) -> io::Result<u32> {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Some(pid) = watched
            .processes()
            .into_iter()
            .find(|pid| procfs::command_name(*pid).as_deref() == Some("uacregd"))
        {
            return Ok(pid);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Err(io::Error::other("uacregd process not found"))
}

/// A minimal HTTP/1.1 exchange with a loopback server: the time until the whole body was read,
/// and the body.
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &str,
) -> io::Result<(Duration, Vec<u8>)> {
    let started = Instant::now();
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(120)))?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer)?;
    let elapsed = started.elapsed();
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| io::Error::other("no HTTP header end"))?;
    let head = String::from_utf8_lossy(&answer[..split]).to_string();
    if !head.starts_with("HTTP/1.1 200") {
        return Err(io::Error::other(format!("HTTP answer: {head}")));
    }
    let mut body = answer.split_off(split + 4);
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body)?;
    }
    Ok((elapsed, body))
}

fn dechunk(mut data: &[u8]) -> io::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(data.len());
    loop {
        let line_end = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| io::Error::other("bad chunk"))?;
        let size_text = String::from_utf8_lossy(&data[..line_end]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| io::Error::other("bad chunk size"))?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        let chunk = data
            .get(..size)
            .ok_or_else(|| io::Error::other("short chunk"))?;
        out.extend_from_slice(chunk);
        data = data.get(size + 2..).unwrap_or(&[]);
    }
}

//! `uacregctl`: kamcmd-like control tool for uacregd's JSON-RPC interface.
//!
//! Human-readable tables by default, `--json` for the raw answer (the same JSON Kamailio's
//! `uac.reg_*` commands produce).

use std::time::{SystemTime, UNIX_EPOCH};

use clap::{Parser, Subcommand};
use serde_json::Value;
use uacreg::rpc::RpcClient;

#[derive(Parser)]
#[command(version, about = "Inspect and steer uacregd over JSON-RPC")]
struct Cli {
    /// JSON-RPC endpoint of uacregd.
    #[arg(long, env = "UACREG_RPC", default_value = "http://127.0.0.1:5063/RPC")]
    rpc: String,
    /// RPC token, if uacregd requires one.
    #[arg(long, env = "UACREG_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Print the raw JSON result.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// All registrations (uac.reg_dump).
    #[command(name = "reg_dump", alias = "dump")]
    RegDump,
    /// One registration (uac.reg_info ATTR VALUE); ATTR: l_uuid, l_username, r_username, auth_username.
    #[command(name = "reg_info", alias = "info")]
    RegInfo { attr: String, value: String },
    /// Re-read the table and apply the difference (uac.reg_reload).
    #[command(name = "reg_reload", alias = "reload")]
    RegReload {
        /// Then show progress until no row is still on its way to registered (at most 10 min).
        #[arg(long)]
        wait: bool,
        /// Apply the table even if it removes more than [database] max_removed_share of the
        /// running rows (uac.reg_reload force).
        #[arg(long)]
        force: bool,
    },
    /// Enable a registration (uac.reg_enable ATTR VALUE).
    #[command(name = "reg_enable")]
    RegEnable { attr: String, value: String },
    /// Disable a registration, un-registering it (uac.reg_disable ATTR VALUE).
    #[command(name = "reg_disable")]
    RegDisable { attr: String, value: String },
    /// Re-read one row from the database and register it again (uac.reg_refresh L_UUID).
    #[command(name = "reg_refresh")]
    RegRefresh { l_uuid: String },
    /// Register now (uac.reg_register ATTR VALUE).
    #[command(name = "reg_register")]
    RegRegister { attr: String, value: String },
    /// Un-REGISTER now and stay unregistered (uac.reg_unregister ATTR VALUE).
    #[command(name = "reg_unregister")]
    RegUnregister { attr: String, value: String },
    /// Local URI of a contact user (l_uuid), or the registration of a local URI
    /// (uac.reg_lookup L_UUID | sip:l_username@l_domain).
    #[command(name = "reg_lookup", alias = "lookup")]
    RegLookup { key: String },
    /// Switch sending on (1) or off (0) (uac.reg_active MODE).
    #[command(name = "reg_active")]
    RegActive { mode: String },
    /// Add a row in memory (uac.reg_add, Kamailio's 14 or 15 positional values; `.` = none).
    #[command(name = "reg_add")]
    RegAdd {
        #[arg(num_args = 14..=15)]
        values: Vec<String>,
    },
    /// Remove a row from memory, un-REGISTERing it (uac.reg_remove L_UUID).
    #[command(name = "reg_remove")]
    RegRemove { l_uuid: String },
    /// Counts per state and SIP counters (uacreg.status).
    Status,
    /// Stop uacregd gracefully (uacreg.shutdown), with a progress bar while it un-registers.
    Shutdown,
    /// `show registrations`: Asterisk-style list (name, server, username, status, expires, code).
    Show {
        #[arg(value_parser = ["registrations"])]
        what: String,
    },
    /// Redraw the state counts and the registrations that are not registered every few seconds.
    Watch {
        /// Seconds between refreshes.
        #[arg(long, default_value_t = 2)]
        interval: u64,
    },
    /// Any method with positional string parameters.
    Call { method: String, params: Vec<String> },
}

/// Rust ignores SIGPIPE, so printing to a closed pipe panics; a command-line tool should simply
/// end, like any other Unix tool.
fn default_sigpipe() {
    #[cfg(unix)]
    // SAFETY: called first thing in main, before any thread exists; resetting a signal
    // disposition to its default has no other effect on this process.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn main() -> anyhow::Result<()> {
    default_sigpipe();
    let cli = Cli::parse();
    let (method, params): (&str, Vec<String>) = match &cli.command {
        Command::RegDump => ("uac.reg_dump", vec![]),
        Command::RegInfo { attr, value } => ("uac.reg_info", vec![attr.clone(), value.clone()]),
        Command::RegReload { force, .. } => (
            "uac.reg_reload",
            if *force {
                vec!["force".to_string()]
            } else {
                vec![]
            },
        ),
        Command::RegLookup { key } => ("uac.reg_lookup", vec![key.clone()]),
        Command::RegEnable { attr, value } => ("uac.reg_enable", vec![attr.clone(), value.clone()]),
        Command::RegDisable { attr, value } => {
            ("uac.reg_disable", vec![attr.clone(), value.clone()])
        }
        Command::RegRefresh { l_uuid } => ("uac.reg_refresh", vec![l_uuid.clone()]),
        Command::RegRegister { attr, value } => {
            ("uac.reg_register", vec![attr.clone(), value.clone()])
        }
        Command::RegUnregister { attr, value } => {
            ("uac.reg_unregister", vec![attr.clone(), value.clone()])
        }
        Command::RegActive { mode } => ("uac.reg_active", vec![mode.clone()]),
        Command::RegAdd { values } => ("uac.reg_add", values.clone()),
        Command::RegRemove { l_uuid } => ("uac.reg_remove", vec![l_uuid.clone()]),
        Command::Status => ("uacreg.status", vec![]),
        Command::Shutdown => ("uacreg.shutdown", vec![]),
        Command::Show { .. } => ("uac.reg_dump", vec![]),
        Command::Watch { interval } => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let client = RpcClient::with_token(&cli.rpc, cli.token.as_deref())?;
            return runtime.block_on(watch(&client, &cli.rpc, *interval));
        }
        Command::Call { method, params } => (method.as_str(), params.clone()),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let client = RpcClient::with_token(&cli.rpc, cli.token.as_deref())?;
    let result = match runtime.block_on(client.call(method, &params)) {
        Ok(value) => value,
        Err(uacreg::rpc::client::RpcError::Call(err)) => {
            // The cause travels in `data` (Kamailio's own text stays in `message`).
            match err
                .data()
                .map(|d| serde_json::from_str::<serde_json::Value>(d.get()))
            {
                Some(Ok(serde_json::Value::String(cause))) => {
                    eprintln!("error {}: {}: {cause}", err.code(), err.message())
                }
                _ => eprintln!("error {}: {}", err.code(), err.message()),
            }
            std::process::exit(1);
        }
        Err(err) => {
            eprintln!("cannot reach uacregd at {}: {err}", cli.rpc);
            std::process::exit(2);
        }
    };
    if cli.json {
        println!("{}", serde_json::to_string_pretty(&result)?);
        return Ok(());
    }
    match &cli.command {
        Command::RegDump => print_table(&result),
        Command::RegInfo { .. } => print_record(&result),
        Command::RegReload { wait, .. } => {
            print_reload(&result);
            if *wait {
                runtime.block_on(wait_settled(&client))?;
            }
        }
        Command::Show { .. } => print_registrations(&result),
        Command::Shutdown => runtime.block_on(follow_shutdown(&client, &result))?,
        _ => println!("{}", serde_json::to_string_pretty(&result)?),
    }
    Ok(())
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn text(v: &Value, key: &str) -> String {
    match v.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

/// "in 55m", "12s ago", "" for missing.
fn relative(v: &Value, key: &str, now: i64) -> String {
    match v.get(key).and_then(Value::as_i64) {
        Some(0) | None => "-".into(),
        Some(at) => {
            let d = at - now;
            let (n, later) = (d.unsigned_abs(), d >= 0);
            let amount = if n >= 3600 {
                format!("{}h{:02}m", n / 3600, (n % 3600) / 60)
            } else if n >= 60 {
                format!("{}m{:02}s", n / 60, n % 60)
            } else {
                format!("{n}s")
            };
            if later { amount } else { format!("-{amount}") }
        }
    }
}

fn detail(v: &Value) -> String {
    let error = text(v, "error");
    if !error.is_empty() {
        return error;
    }
    if text(v, "state") == "realm_mismatch" {
        return format!(
            "expected realm \"{}\", offered \"{}\"",
            text(v, "expected_realm"),
            text(v, "offered_realm")
        );
    }
    text(v, "last_reason")
}

fn print_table(result: &Value) {
    let Some(rows) = result.as_array() else {
        println!("{result}");
        return;
    };
    let now = now();
    let header = [
        "L_UUID", "AOR", "STATE", "CODE", "EXPIRES", "NEXT", "DETAIL",
    ];
    let lines: Vec<[String; 7]> = rows
        .iter()
        .map(|r| {
            [
                text(r, "l_uuid"),
                format!("{}@{}", text(r, "r_username"), text(r, "r_domain")),
                text(r, "state"),
                text(r, "last_code"),
                relative(r, "binding_expires", now),
                relative(r, "next_refresh", now),
                detail(r),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for line in &lines {
        for (i, cell) in line.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let print = |cells: &[String]| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{:<w$}  ", cell, w = widths[i]));
            }
        }
        println!("{}", out.trim_end());
    };
    print(&header.map(String::from));
    for line in &lines {
        print(line);
    }
    let mut counts: std::collections::BTreeMap<String, usize> = Default::default();
    for r in rows {
        *counts.entry(text(r, "state")).or_default() += 1;
    }
    let summary: Vec<String> = counts.iter().map(|(k, v)| format!("{k} {v}")).collect();
    println!("{} records: {}", rows.len(), summary.join(", "));
}

fn print_record(result: &Value) {
    match result.as_object() {
        Some(map) => {
            let width = map.keys().map(String::len).max().unwrap_or(0);
            for (key, value) in map {
                let shown = match value {
                    Value::String(s) => s.clone(),
                    Value::Null => "<null>".into(),
                    other => other.to_string(),
                };
                println!("{key:<width$}  {shown}");
            }
        }
        None => println!("{result}"),
    }
}

fn print_reload(result: &Value) {
    println!(
        "loaded {} rows: {} added, {} changed, {} removed, {} unchanged",
        text(result, "loaded"),
        text(result, "added"),
        text(result, "changed"),
        text(result, "removed"),
        text(result, "unchanged")
    );
    if let Some(invalid) = result.get("invalid").and_then(Value::as_array) {
        for bad in invalid {
            println!(
                "invalid row id {} l_uuid {:?}: {}",
                text(bad, "id"),
                text(bad, "l_uuid"),
                text(bad, "error")
            );
        }
    }
}

/// Asterisk's `pjsip show registrations` layout, one line per row.
fn print_registrations(result: &Value) {
    let Some(rows) = result.as_array() else {
        println!("{result}");
        return;
    };
    let now = now();
    println!(
        "{:<24} {:<32} {:<28} {:<15} {:>9} {:>4}",
        "<Registration>", "<Server>", "<Username>", "<Status>", "<Expires>", "<Code>"
    );
    for r in rows {
        let server = match text(r, "auth_proxy").as_str() {
            "" | "none" => format!("sip:{}", text(r, "r_domain")),
            proxy => proxy.to_string(),
        };
        println!(
            "{:<24} {:<32} {:<28} {:<15} {:>9} {:>4}",
            text(r, "l_uuid"),
            server,
            format!("{}@{}", text(r, "r_username"), text(r, "r_domain")),
            text(r, "state"),
            relative(r, "binding_expires", now),
            text(r, "last_code"),
        );
    }
    println!("Objects found: {}", rows.len());
}

/// Live view: counts per state, then every row that is not registered. Runs until Ctrl-C.
async fn watch(client: &RpcClient, url: &str, interval: u64) -> anyhow::Result<()> {
    let interval = std::time::Duration::from_secs(interval.max(1));
    loop {
        let status = client.call("uacreg.status", &[]).await;
        let dump = client.call("uac.reg_dump", &[]).await;
        // Clear the screen and home the cursor.
        print!("\x1b[2J\x1b[H");
        match (status, dump) {
            (Ok(status), Ok(dump)) => {
                println!(
                    "uacregd at {url}   (every {}s, Ctrl-C to stop)\n",
                    interval.as_secs()
                );
                if let Some(counts) = status["registrations"].as_object() {
                    let line: Vec<String> = counts
                        .iter()
                        .filter(|(_, n)| n.as_u64() != Some(0))
                        .map(|(state, n)| format!("{state} {n}"))
                        .collect();
                    println!("{}", line.join("   "));
                }
                let troubled: Vec<Value> = dump
                    .as_array()
                    .map(|rows| {
                        rows.iter()
                            .filter(|r| text(r, "state") != "registered")
                            .take(40)
                            .cloned()
                            .collect()
                    })
                    .unwrap_or_default();
                println!();
                if troubled.is_empty() {
                    println!("every row is registered");
                } else {
                    print_table(&Value::Array(troubled));
                }
            }
            (Err(err), _) | (_, Err(err)) => println!("cannot reach uacregd at {url}: {err}"),
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

/// States on the way to registered.
const IN_PROGRESS: [&str; 3] = ["pending", "registering", "authenticating"];

/// Progress bar until no row is pending, registering or authenticating (bounded at 10 min).
async fn wait_settled(client: &RpcClient) -> anyhow::Result<()> {
    use std::io::Write;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(600);
    loop {
        let status = client.call("uacreg.status", &[]).await?;
        let counts = status["registrations"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        let count = |state: &str| counts.get(state).and_then(Value::as_u64).unwrap_or(0);
        let total: u64 = counts.values().filter_map(Value::as_u64).sum();
        let busy: u64 = IN_PROGRESS.iter().map(|s| count(s)).sum();
        let done = total.saturating_sub(busy);
        let width = 40u64;
        let filled = (done * width).checked_div(total).unwrap_or(width);
        let bar: String = (0..width)
            .map(|i| if i < filled { '#' } else { '.' })
            .collect();
        print!(
            "\r[{bar}] {done}/{total} settled: {} registered, {} waiting to retry, {} failed ",
            count("registered"),
            count("retry_wait"),
            count("failed") + count("auth_failed") + count("realm_mismatch")
        );
        let _ = std::io::stdout().flush();
        if busy == 0 || std::time::Instant::now() >= deadline {
            println!();
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}

/// Progress of a shutdown: bindings still being un-registered, until the daemon is gone.
async fn follow_shutdown(client: &RpcClient, started: &Value) -> anyhow::Result<()> {
    use std::io::Write;
    let total = started["registered"].as_u64().unwrap_or(0);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(600);
    let mut last_left = total;
    loop {
        let left = match client.call("uacreg.status", &[]).await {
            Ok(status) => status["sip"]["leaving"].as_u64().unwrap_or(0),
            // The daemon stops answering once it has finished.
            Err(_) => 0,
        };
        let left = left.min(last_left);
        last_left = left;
        let done = total.saturating_sub(left);
        let width = 40u64;
        let filled = (done * width).checked_div(total).unwrap_or(width);
        let bar: String = (0..width)
            .map(|i| if i < filled { '#' } else { '.' })
            .collect();
        print!("\r[{bar}] {done}/{total} un-registered ");
        let _ = std::io::stdout().flush();
        if left == 0 || std::time::Instant::now() >= deadline {
            // Wait for the daemon to go away (it closes RPC after un-registering).
            for _ in 0..40 {
                if client.call("uacreg.status", &[]).await.is_err() {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            }
            println!("\nuacregd stopped");
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}

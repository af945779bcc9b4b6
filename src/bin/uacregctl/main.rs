//! `uacregctl`: kamcmd-like control tool for uacregd's JSON-RPC interface.
//!
//! Human-readable tables by default, `--json` for the raw answer (the same JSON Kamailio's
//! `uac.reg_*` commands produce). Answers are read into the types the server writes them from
//! (`uacreg::answer`, `RecordView`), so the tool and the daemon share one definition of
//! each shape. The record lists (`reg_dump`, `show registrations`) are printed as they stream
//! in (`dump.rs`), whatever their length.

mod blocks;
mod dump;
mod dump_tables;
mod follow;
#[path = "../shared/generate.rs"]
mod generate;
mod progress;
mod tables;

use std::time::{SystemTime, UNIX_EPOCH};

use clap::{Parser, Subcommand};
use serde::de::DeserializeOwned;
use serde_json::Value;
use uacreg::answer::{ReloadAnswer, ShutdownStarted};
use uacreg::{RecordView, RpcClient, StreamingCallError, StreamingClient};

use crate::dump::DumpView;

#[derive(Parser)]
#[command(
    name = "uacregctl",
    version,
    about = "Inspect and steer uacregd over JSON-RPC",
    long_about = "Inspect and steer uacregd over its Kamailio-compatible JSON-RPC: list and look up \
        registrations, reload the table, enable, disable, refresh or add rows, follow states \
        live, and stop the daemon. Exit status 1: the daemon answered with an error; 2: it \
        could not be reached, or refused the request (an HTTP error status, such as 401 for a \
        missing or wrong --token)."
)]
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
    RegDump {
        /// Every row of the cluster with the node running it, read from the database by the
        /// node asked (uacreg.cluster_dump; states as of the last uacreg_status write).
        #[arg(long)]
        cluster: bool,
    },
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
    Shutdown {
        /// Un-REGISTER every binding even where uacregd would not (unregister_on_shutdown =
        /// false, or a cluster node that would hand its rows over to its peers).
        #[arg(long)]
        unregister: bool,
    },
    /// The cluster as this node sees it: nodes, their shards and last rounds (uacreg.cluster).
    Cluster,
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
    /// Print the man page or a shell completion script (for packagers: scripts/gen-docs).
    #[command(hide = true)]
    Generate {
        #[arg(value_enum)]
        what: generate::Generated,
    },
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
        Command::RegDump { cluster: false } => ("uac.reg_dump", vec![]),
        Command::RegDump { cluster: true } => ("uacreg.cluster_dump", vec![]),
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
        Command::Shutdown { unregister } => (
            "uacreg.shutdown",
            if *unregister {
                vec!["unregister".to_string()]
            } else {
                vec![]
            },
        ),
        Command::Cluster => ("uacreg.cluster", vec![]),
        Command::Show { .. } => ("uac.reg_dump", vec![]),
        Command::Watch { interval } => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let client = RpcClient::with_token(&cli.rpc, cli.token.as_deref())?;
            let streaming = StreamingClient::with_token(&cli.rpc, cli.token.as_deref())?;
            return runtime.block_on(follow::watch(&client, &streaming, &cli.rpc, *interval));
        }
        Command::Call { method, params } => (method.as_str(), params.clone()),
        Command::Generate { what } => {
            use clap::CommandFactory;
            return generate::print(Cli::command(), *what, "1");
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    if let Some(view) = dump_view(&cli.command, cli.json) {
        let client = StreamingClient::with_token(&cli.rpc, cli.token.as_deref())?;
        return match runtime.block_on(dump::print(&client, method, view, now())) {
            Ok(()) => Ok(()),
            Err(err) => streaming_failed(&cli.rpc, err),
        };
    }
    let client = RpcClient::with_token(&cli.rpc, cli.token.as_deref())?;
    let result = match runtime.block_on(client.call(method, &params)) {
        Ok(value) => value,
        Err(uacreg::RpcError::Call(err)) => {
            // The cause travels in `data` (Kamailio's own text stays in `message`).
            match err.data().map(|d| serde_json::from_str::<String>(d.get())) {
                Some(Ok(cause)) => eprintln!("error {}: {}: {cause}", err.code(), err.message()),
                _ => eprintln!("error {}: {}", err.code(), err.message()),
            }
            std::process::exit(1);
        }
        Err(err) => {
            match refused_with(&err) {
                Some(status) => eprintln!(
                    "uacregd at {} refused the request: HTTP status {status}{}",
                    cli.rpc,
                    status_hint(status)
                ),
                None => eprintln!("cannot reach uacregd at {}: {err}", cli.rpc),
            }
            std::process::exit(2);
        }
    };
    if cli.json {
        println!("{}", serde_json::to_string_pretty(&result)?);
        return Ok(());
    }
    match &cli.command {
        Command::RegInfo { .. } => {
            let record: RecordView = read(method, result)?;
            println!("{}", tables::record(&record));
        }
        Command::RegReload { wait, .. } => {
            let answer: ReloadAnswer = read(method, result)?;
            println!("{}", tables::reload(&answer));
            if *wait {
                runtime.block_on(follow::settled(&client))?;
            }
        }
        Command::Cluster => {
            let status: uacreg::answer::ClusterStatus = read(method, result)?;
            println!("{}", tables::cluster(&status, now()));
        }
        Command::Shutdown { .. } => {
            let started: ShutdownStarted = read(method, result)?;
            runtime.block_on(follow::shutdown(&client, started))?;
        }
        // The other answers are small structures printed as they came.
        _ => println!("{}", serde_json::to_string_pretty(&result)?),
    }
    Ok(())
}

/// The commands whose records are printed as they stream in, and how.
fn dump_view(command: &Command, json: bool) -> Option<DumpView> {
    match command {
        Command::RegDump { .. } | Command::Show { .. } if json => Some(DumpView::Json),
        Command::RegDump { .. } => Some(DumpView::Records),
        Command::Show { .. } => Some(DumpView::Registrations),
        _ => None,
    }
}

/// Says why a streamed call failed and exits as the other commands do: 1 when uacregd answered
/// with an error, 2 when no whole answer came. What was printed before the failure stays.
fn streaming_failed(url: &str, err: StreamingCallError) -> anyhow::Result<()> {
    match err {
        StreamingCallError::Fault(fault) => {
            eprintln!("{fault}");
            std::process::exit(1);
        }
        StreamingCallError::Handler(err) => Err(anyhow::anyhow!("cannot print the answer: {err}")),
        err if err.is_unreachable() => {
            eprintln!("cannot reach uacregd at {url}: {err}");
            std::process::exit(2);
        }
        StreamingCallError::Status { status, body } => {
            let hint = status_hint(status.as_u16());
            eprintln!(
                "uacregd at {url} refused the request: HTTP status {}{hint}: {}",
                status.as_u16(),
                body.trim_end()
            );
            std::process::exit(2);
        }
        err => {
            eprintln!("no whole answer from uacregd at {url}: {err}");
            std::process::exit(2);
        }
    }
}

/// The HTTP status with which the daemon turned a call away, if that is why it failed (the
/// daemon was reached: saying it was not would send the operator looking in the wrong place).
fn refused_with(err: &uacreg::RpcError) -> Option<u16> {
    use jsonrpsee_http_client::transport::Error as HttpTransportError;
    let uacreg::RpcError::Transport(cause) = err else {
        return None;
    };
    match cause.downcast_ref::<HttpTransportError>()? {
        HttpTransportError::Rejected { status_code } => Some(*status_code),
        _ => None,
    }
}

/// What an HTTP status usually means for uacregctl.
fn status_hint(status: u16) -> &'static str {
    match status {
        401 => {
            " (a missing or wrong RPC token: give uacregd's rpc_token with --token or UACREG_TOKEN)"
        }
        _ => "",
    }
}

/// The answer to `method` as the type the server wrote it from.
fn read<T: DeserializeOwned>(method: &str, answer: Value) -> anyhow::Result<T> {
    serde_json::from_value(answer).map_err(|err| {
        anyhow::anyhow!("uacregd answered {method} in a shape this uacregctl does not know: {err}")
    })
}

/// The current Unix second (relative times in the tables are counted from it).
fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

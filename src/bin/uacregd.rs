//! `uacregd`: the registration gateway daemon (and its self-contained demo).

use std::io::IsTerminal;
use std::path::PathBuf;

#[cfg(feature = "demo")]
#[path = "shared/generate.rs"]
mod generate;

use clap::Args;
use clap::{Parser, Subcommand, ValueEnum};
use tracing_subscriber::EnvFilter;
use uacreg::{Config, Overrides};
use uacreg::{Daemon, DaemonError};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc's `mi_option_e` (index 15 in versions 2 and 3; the Rust
/// bindings name only the older options). The test below checks it against the default.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// How long mimalloc keeps a freed page before it returns it to the system, in ms.
///
/// Returning each page the moment it empties (a delay of 0) costs a
/// `madvise`, a TLB flush on every core the process runs on and, when the page is used again
/// a moment later, a page fault and a zeroed page. A start-up frees and reuses pages all the
/// time (transactions, answers, the send backlog), and at a million rows this was the largest
/// part of what a row cost beyond 100,000 rows: the engine bench took 14.5–14.8 µs per row
/// with it and 10.8–11.0 with 10 ms, at the same peak RSS. Ten milliseconds is enough for a
/// page to be reused within a burst, and short enough that what a burst freed does not stay
/// resident after it.
const PURGE_DELAY_MS: std::ffi::c_long = 10;

/// How often the daemon asks mimalloc to return the pages whose delay has run out. mimalloc
/// only does so when a thread comes back to it (frees or allocates a page), so without this an
/// idle daemon could keep the pages freed at the end of its start-up.
const PURGE_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Keeps the daemon's resident memory close to what it holds. A table is built in a burst
/// (loading, a REGISTER and a challenge answer per row, transactions, the send backlog) and then
/// held for days, so what matters is what stays resident after the burst.
///
/// - Transparent huge pages are switched off for the process. mimalloc asks for them on its
///   arenas, and then every touched 4 KiB page brings in 2 MiB; at 100,000 rows this cost about
///   10 MiB empty and 20 MiB settled. `MIMALLOC_ALLOW_THP=1` keeps them.
/// - Freed memory goes back to the system after [`PURGE_DELAY_MS`] instead of mimalloc's
///   1 s, and [`return_freed_memory`] makes sure it does even when the daemon is idle.
///   `MIMALLOC_PURGE_DELAY` still wins when set.
///
/// `cargo bench --bench load -- --rows 100000` measures the effect (`bytes_per_row_settled`).
fn tune_allocator() {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_none() {
        // SAFETY: prctl with PR_SET_THP_DISABLE takes plain integers and touches no memory of
        // ours; it sets a flag on this process that the kernel checks when it faults pages in.
        let result = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
        if result != 0 {
            eprintln!(
                "uacregd: could not switch off transparent huge pages: {}",
                std::io::Error::last_os_error()
            );
        }
    }
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets one integer option; mimalloc reads options atomically when it purges.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) };
    }
}

/// Every [`PURGE_EVERY`], has mimalloc return to the system the freed pages whose purge delay
/// has run out. Runs on a runtime worker: `mi_collect` works on the calling thread's heap
/// (a worker's, which allocates) and then purges for the whole process.
async fn return_freed_memory() {
    let mut ticks = tokio::time::interval(PURGE_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        // SAFETY: takes a plain bool; mimalloc serialises purging across threads itself.
        unsafe { libmimalloc_sys::mi_collect(false) };
    }
}

#[derive(Parser)]
#[command(
    name = "uacregd",
    version,
    about = "Keeps a SIP registration alive for every row of the uacreg table",
    long_about = "Keeps a SIP registration alive for every row of the uacreg table (the table \
        Kamailio's uac module uses) in SQLite, PostgreSQL or MySQL/MariaDB: registers each row \
        with its registrar, answers digest challenges, refreshes bindings before they expire and \
        retries failures with back-off. Steered over Kamailio-compatible JSON-RPC (uacregctl), \
        watched over Prometheus metrics. SIGTERM or SIGINT stop it (un-REGISTERing unless \
        configured otherwise, or handing rows over to cluster peers); SIGHUP reloads the table."
)]
struct Cli {
    /// TOML configuration file.
    #[arg(short, long, global = true)]
    config: Option<PathBuf>,
    /// Database URL (default sqlite://uacreg.db): sqlite://path, postgres://user:pw@host/db,
    /// mysql://user:pw@host/db. UACREG_DB keeps a password out of the process list.
    #[arg(long, global = true, env = "UACREG_DB", hide_env_values = true)]
    db: Option<String>,
    /// SIP listen address (default 0.0.0.0:5062).
    #[arg(long, global = true)]
    sip_listen: Option<String>,
    /// host:port for Via and for rows without contact_addr.
    #[arg(long, alias = "contact-addr", global = true)]
    advertised_addr: Option<String>,
    /// JSON-RPC listen address (default 127.0.0.1:5063).
    #[arg(long, global = true)]
    rpc_listen: Option<String>,
    /// Prometheus endpoint address (default 127.0.0.1:5064; "" switches it off).
    #[arg(long, global = true)]
    metrics_listen: Option<String>,
    /// Require this token on every RPC request (Authorization: Bearer …); env UACREG_TOKEN.
    #[arg(long, env = "UACREG_TOKEN", global = true, hide_env_values = true)]
    rpc_token: Option<String>,
    /// Show passwords and HA1 in RPC answers.
    #[arg(long, global = true)]
    show_secrets: bool,
    /// Log filter (tracing syntax), e.g. `info`, `uacreg=debug`. RUST_LOG wins if set.
    #[arg(long, default_value = "info", global = true)]
    log: String,
    /// Log lines as text for people, or as JSON objects (one a line) for log shippers.
    #[arg(
        long,
        value_enum,
        default_value_t = LogFormat::Text,
        env = "UACREG_LOG_FORMAT",
        global = true
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway (the default).
    Run,
    /// Print the man page or a shell completion script (for packagers: scripts/gen-docs).
    #[command(hide = true)]
    Generate {
        #[arg(value_enum)]
        what: generate::Generated,
    },
    /// Self-contained demo: a test registrar on loopback, N rows in a fresh SQLite file, the
    /// gateway registering them, and the resulting table.
    #[cfg(feature = "demo")]
    Demo(DemoArgs),
}

#[cfg(feature = "demo")]
#[derive(Args)]
struct DemoArgs {
    /// Number of rows to register.
    #[arg(long, default_value_t = 20)]
    rows: usize,
    /// Database file for the demo (created fresh).
    #[arg(long, default_value = "uacreg-demo.db")]
    demo_db: PathBuf,
    /// Keep running after the table is printed (stop with Ctrl-C).
    #[arg(long)]
    keep_running: bool,
    /// Give up waiting for registrations after this many seconds.
    #[arg(long, default_value_t = 120)]
    timeout: u64,
}

/// How log lines are written to stderr.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    /// `2025-01-01T00:00:00Z  INFO message key=value`, coloured only on a terminal.
    Text,
    /// `{"timestamp":…,"level":"INFO","message":…,"key":…,"target":…}`: the event's fields at
    /// the top level, never colour codes.
    Json,
}

fn init_logging(filter: &str, format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(filter));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text if stderr_is_the_journal() => logs
            .event_format(JournalLine(
                tracing_subscriber::fmt::format()
                    .with_target(false)
                    .without_time()
                    .with_ansi(false),
            ))
            .init(),
        LogFormat::Text => logs.with_target(false).with_ansi(colour_on_stderr()).init(),
        LogFormat::Json => logs
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .with_ansi(false)
            .init(),
    }
}

/// Colour codes are for a person at a terminal: a file, a pipe or the journal would keep them
/// as `\x1b[…m` noise. `NO_COLOR` (any non-empty value) switches them off on a terminal too.
/// Whether stderr is connected to journald: systemd sets `JOURNAL_STREAM` to the `device:inode`
/// of the stream it gives the service, and a child whose stderr was redirected elsewhere must
/// not take the variable for its own (hence the comparison with stderr itself).
fn stderr_is_the_journal() -> bool {
    #[cfg(unix)]
    {
        let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
            return false;
        };
        let Some((device, inode)) = stream.to_str().and_then(|s| s.split_once(':')) else {
            return false;
        };
        let (Ok(device), Ok(inode)) = (device.parse::<u64>(), inode.parse::<u64>()) else {
            return false;
        };
        use std::os::fd::AsRawFd;
        let mut stat = std::mem::MaybeUninit::<libc::stat>::uninit();
        // SAFETY: fstat writes a `stat` for a valid descriptor (stderr's) into the buffer we own;
        // it is read only when fstat reports success.
        let stat = unsafe {
            if libc::fstat(std::io::stderr().as_raw_fd(), stat.as_mut_ptr()) != 0 {
                return false;
            }
            stat.assume_init()
        };
        #[allow(clippy::unnecessary_cast)] // the field types differ between platforms
        let same = stat.st_dev as u64 == device && stat.st_ino as u64 == inode;
        same
    }
    #[cfg(not(unix))]
    false
}

/// A text line for journald: the `<N>` syslog priority prefix it turns into the entry's level
/// (`journalctl -p warning` works), and no timestamp (the journal keeps its own).
struct JournalLine<F>(F);

impl<S, N, F> tracing_subscriber::fmt::FormatEvent<S, N> for JournalLine<F>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
    F: tracing_subscriber::fmt::FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let priority = match *event.metadata().level() {
            tracing::Level::ERROR => 3,
            tracing::Level::WARN => 4,
            tracing::Level::INFO => 6,
            _ => 7,
        };
        write!(writer, "<{priority}>")?;
        self.0.format_event(ctx, writer, event)
    }
}

fn colour_on_stderr() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Exit status when a task the daemon cannot live without ended (sysexits' EX_SOFTWARE):
/// systemd's `Restart=on-failure` restarts on it, and it tells this apart from a bad
/// configuration (status 1).
const EXIT_TASK_ENDED: u8 = 70;

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("uacregd: {err:#}");
            if matches!(
                err.downcast_ref::<DaemonError>(),
                Some(DaemonError::TaskEnded { .. })
            ) {
                std::process::ExitCode::from(EXIT_TASK_ENDED)
            } else {
                std::process::ExitCode::FAILURE
            }
        }
    }
}

fn run() -> anyhow::Result<()> {
    tune_allocator();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let overrides = Overrides {
        db_url: cli.db.clone(),
        sip_listen: cli.sip_listen.clone(),
        advertised_addr: cli.advertised_addr.clone(),
        rpc_listen: cli.rpc_listen.clone(),
        metrics_listen: cli.metrics_listen.clone(),
        show_secrets: cli.show_secrets,
        rpc_token: cli.rpc_token.clone(),
    };
    match cli.command {
        Some(Command::Generate { what }) => {
            use clap::CommandFactory;
            generate::print(Cli::command(), what, "8")
        }
        None | Some(Command::Run) => {
            init_logging(&cli.log, cli.log_format);
            let config = Config::load(cli.config.as_deref(), &overrides)?;
            let outcome = runtime.block_on(async {
                tokio::spawn(return_freed_memory());
                let daemon = Daemon::start(config).await?;
                tell_systemd(&daemon);
                daemon.run_until_signal().await?;
                anyhow::Ok(())
            });
            // A database call stuck in the blocking pool must not hold the exit (dropping the
            // runtime would wait for it without a bound).
            runtime.shutdown_timeout(std::time::Duration::from_secs(2));
            outcome
        }
        #[cfg(feature = "demo")]
        Some(Command::Demo(args)) => {
            // The demo prints its own report; keep the log to warnings unless asked.
            let filter = if cli.log == "info" {
                "warn"
            } else {
                cli.log.as_str()
            };
            init_logging(filter, cli.log_format);
            let mut config = Config::load(cli.config.as_deref(), &overrides)?;
            let options = uacreg::demo::DemoOptions {
                rows: args.rows,
                db_path: args.demo_db,
                keep_running: args.keep_running,
                timeout: std::time::Duration::from_secs(args.timeout),
            };
            if cli.sip_listen.is_none() {
                config.sip_listen = "127.0.0.1:0".parse()?;
            }
            if cli.rpc_listen.is_none() {
                config.rpc_listen = "127.0.0.1:0".parse()?;
            }
            if cli.metrics_listen.is_none() {
                config.metrics_listen = Some("127.0.0.1:0".parse()?);
            }
            if cli.advertised_addr.is_none() {
                config.advertised_addr = "127.0.0.1:5062".into();
            }
            runtime.block_on(uacreg::demo::run(config, options))
        }
    }
}

/// Under systemd (`Type=notify`): says the daemon is ready once it has started (listeners
/// bound, the table loaded or its retry scheduled), and, when the unit sets `WatchdogSec`,
/// pings the watchdog while the driver task answers, so that a driver that hangs gets the
/// service restarted. Outside systemd (`NOTIFY_SOCKET` unset) this does nothing.
fn tell_systemd(daemon: &Daemon) {
    use sd_notify::NotifyState;
    let status = format!(
        "SIP on {}, JSON-RPC on {}",
        daemon.sip_addr(),
        daemon.rpc_addr()
    );
    if let Err(err) = sd_notify::notify(&[NotifyState::Ready, NotifyState::Status(&status)]) {
        tracing::warn!("cannot tell systemd the service is ready: {err}");
    }
    let Some(every) = sd_notify::watchdog_enabled() else {
        return;
    };
    let gateway = daemon.gateway().clone();
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every / 2);
        loop {
            ticks.tick().await;
            let probe = tokio::time::timeout(every / 2, gateway.driver.status_counts()).await;
            if matches!(probe, Ok(Ok(_))) {
                let _ = sd_notify::notify(&[NotifyState::Watchdog]);
            } else {
                tracing::warn!("the driver did not answer the watchdog probe; not pinging systemd");
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_purge_delay_index_names_mimallocs_purge_delay() {
        // 1000 ms is the purge delay's default in the mimalloc 3 we build; the options next to
        // it default to 0 or 1, so a shifted index shows here.
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            // SAFETY: reads one integer option.
            assert_eq!(
                unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) },
                1000
            );
        }
    }
}

//! The commands that keep asking: `reg_reload --wait` until the rows settle, `shutdown` until
//! the bindings are taken back and the daemon is gone, and `watch` until Ctrl-C.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use uacreg::RpcError;
use uacreg::answer::{ShutdownStarted, StatusAnswer};
use uacreg::registration::Status;
use uacreg::{RecordView, RpcClient, StreamingClient};

use crate::progress::Progress;
use crate::tables;

/// How long a wait lasts at most.
const LONGEST_WAIT: Duration = Duration::from_secs(600);
/// Between two questions to the daemon.
const POLL: Duration = Duration::from_millis(250);

/// States on the way to registered.
const IN_PROGRESS: [Status; 3] = [Status::Pending, Status::Registering, Status::Authenticating];
/// The rows not registered that a `watch` round keeps and shows; past them it counts.
const WATCH_KEPT: usize = 1000;
/// States that ended in a failure the operator should look at.
const FAILED: [Status; 3] = [Status::Failed, Status::AuthFailed, Status::RealmMismatch];

/// `uacreg.status`.
async fn status(client: &RpcClient) -> Result<StatusAnswer, RpcError> {
    client.request("uacreg.status", &[]).await
}

/// Progress until no row is pending, registering or authenticating (at most 10 minutes).
pub async fn settled(client: &RpcClient) -> anyhow::Result<()> {
    let deadline = Instant::now() + LONGEST_WAIT;
    let mut progress = Progress::on_stderr();
    loop {
        let counts = status(client).await?;
        let sum = |states: &[Status]| -> usize { states.iter().map(|s| counts.count(*s)).sum() };
        let total = counts.total();
        let busy = sum(&IN_PROGRESS);
        progress.update(
            total.saturating_sub(busy) as u64,
            total as u64,
            &format!(
                "settled: {} registered, {} waiting to retry, {} failed",
                counts.count(Status::Registered),
                counts.count(Status::RetryWait),
                sum(&FAILED)
            ),
        );
        if busy == 0 || Instant::now() >= deadline {
            progress.finish(&mut std::io::stdout())?;
            return Ok(());
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Progress of a shutdown: bindings still being un-registered, until the daemon is gone.
pub async fn shutdown(client: &RpcClient, started: ShutdownStarted) -> anyhow::Result<()> {
    let total = started.registered;
    let deadline = Instant::now() + LONGEST_WAIT;
    let mut progress = Progress::on_stderr();
    let mut last_left = total;
    loop {
        let left = match status(client).await {
            Ok(status) => status.sip.leaving,
            // The daemon stops answering once it has finished.
            Err(_) => 0,
        };
        // A binding taken back stays taken back, whatever a late answer says.
        let left = left.min(last_left);
        last_left = left;
        progress.update(
            total.saturating_sub(left) as u64,
            total as u64,
            "un-registered",
        );
        if left == 0 || Instant::now() >= deadline {
            progress.finish(&mut std::io::stdout())?;
            // Wait for the daemon to go away (it closes RPC after un-registering).
            for _ in 0..40 {
                if status(client).await.is_err() {
                    break;
                }
                tokio::time::sleep(POLL).await;
            }
            println!("uacregd stopped");
            return Ok(());
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The rows of one `watch` round that are not registered: the first [`WATCH_KEPT`], and how
/// many more. The dump streams past; nothing else of it is kept.
#[derive(Default)]
struct Troubled {
    kept: Vec<RecordView<'static>>,
    more: u64,
}

impl Troubled {
    fn add(&mut self, record: RecordView<'static>) {
        if !tables::troubled(&record) {
            return;
        }
        if self.kept.len() < WATCH_KEPT {
            self.kept.push(record);
        } else {
            self.more += 1;
        }
    }
}

/// Live view: counts per state, then the rows that are not registered (the first
/// [`WATCH_KEPT`]). Runs until Ctrl-C.
///
/// On a terminal each round redraws the screen; into a pipe or file the rounds follow one
/// another, each after a blank line, with no escape codes.
pub async fn watch(
    client: &RpcClient,
    streaming: &StreamingClient,
    url: &str,
    every: u64,
) -> anyhow::Result<()> {
    let every = Duration::from_secs(every.max(1));
    let redraw = std::io::stdout().is_terminal();
    loop {
        let status = status(client).await;
        let mut troubled = Troubled::default();
        let dump = streaming
            .for_each("uac.reg_dump", &[], |record| {
                troubled.add(record);
                Ok(())
            })
            .await;
        if redraw {
            // Clear the screen and home the cursor.
            print!("\x1b[2J\x1b[H");
        } else {
            println!();
        }
        match (status, dump) {
            (Ok(status), Ok(_)) => {
                println!(
                    "uacregd at {url}   (every {}s, Ctrl-C to stop)\n",
                    every.as_secs()
                );
                println!("{}", tables::state_counts(&status));
                println!();
                if troubled.kept.is_empty() {
                    println!("every row is registered");
                } else {
                    println!("{}", tables::records(&troubled.kept, crate::now()));
                }
                if troubled.more > 0 {
                    println!("… and {} more rows not registered", troubled.more);
                }
            }
            (Err(err), _) => println!("cannot reach uacregd at {url}: {err}"),
            (_, Err(err)) if err.is_unreachable() => {
                println!("cannot reach uacregd at {url}: {err}")
            }
            (_, Err(err)) => println!("uac.reg_dump from uacregd at {url} failed: {err}"),
        }
        let _ = std::io::stdout().flush();
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

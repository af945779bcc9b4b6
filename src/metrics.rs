//! Prometheus metrics over plain HTTP: `GET /metrics` on its own loopback port.
//!
//! The exposition format is a few lines of text, and a scrape is one request on a fresh
//! connection, so a minimal HTTP/1.1 responder is enough and keeps a web framework out of the
//! build. Values come from the driver on each scrape; nothing is cached.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tracing::debug;

use crate::driver::{DriverStats, LATENCY_BOUNDS_MS, LatencyHistogram};
use crate::gateway::Gateway;

/// Starts the metrics listener; returns the bound address and the accept task.
pub async fn serve(
    addr: SocketAddr,
    gateway: Arc<Gateway>,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let task = tokio::spawn(async move {
        let mut backoff = crate::transport::admission::AcceptBackoff::new();
        loop {
            let (stream, _) = backoff
                .accept("metrics endpoint", || listener.accept(), || {})
                .await;
            let gateway = gateway.clone();
            tokio::spawn(async move {
                if let Err(err) = answer(stream, &gateway).await {
                    debug!("metrics request failed: {err}");
                }
            });
        }
    });
    Ok((local, task))
}

async fn answer(mut stream: TcpStream, gateway: &Gateway) -> std::io::Result<()> {
    let mut request = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    // Read the request head (bounded in size and time); the body, if any, is ignored.
    let read_head = async {
        while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 8192 {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            request.extend_from_slice(&buf[..n]);
        }
        Ok::<_, std::io::Error>(())
    };
    if tokio::time::timeout(Duration::from_secs(5), read_head)
        .await
        .is_err()
    {
        return Ok(());
    }
    let line = String::from_utf8_lossy(&request);
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (status, body) = if method == "GET" && (path == "/metrics" || path == "/") {
        match render(gateway).await {
            Some(body) => ("200 OK", body),
            None => ("503 Service Unavailable", "driver stopped\n".to_string()),
        }
    } else {
        ("404 Not Found", "try GET /metrics\n".to_string())
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

async fn render(gateway: &Gateway) -> Option<String> {
    let counts = gateway.driver.status_counts().await.ok()?;
    let stats = gateway.driver.stats().await.ok()?;
    let mut text = format_metrics(&counts, gateway.invalid_rows().len(), &stats);
    format_database(&mut text, &gateway.database_health());
    Some(text)
}

/// The database part: reachability, reloads, NOTIFY and status writes.
pub fn format_database(out: &mut String, health: &crate::gateway::DatabaseHealth) {
    let rows: [(&str, &str, &str, u64); 6] = [
        (
            "uacreg_database_reachable",
            "gauge",
            "1 when the last database statement succeeded.",
            u64::from(health.reachable),
        ),
        (
            "uacreg_reloads_total",
            "counter",
            "Successful table reloads (RPC, SIGHUP, periodic, NOTIFY).",
            health.reloads,
        ),
        (
            "uacreg_reload_failures_total",
            "counter",
            "Reloads that could not read the table (registrations left unchanged).",
            health.reload_failures,
        ),
        (
            "uacreg_notifications_total",
            "counter",
            "PostgreSQL NOTIFY uacreg_changed received.",
            health.notifications,
        ),
        (
            "uacreg_status_rows_written_total",
            "counter",
            "uacreg_status rows written or deleted.",
            health.status_rows_written,
        ),
        (
            "uacreg_status_write_failures_total",
            "counter",
            "uacreg_status write rounds that failed.",
            health.status_write_failures,
        ),
    ];
    for (name, kind, help, value) in rows {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    }
}

/// The exposition text.
pub fn format_metrics(
    counts: &std::collections::BTreeMap<&'static str, usize>,
    invalid_rows: usize,
    stats: &DriverStats,
) -> String {
    let mut out = String::new();
    let name = "uacreg_registrations";
    let _ = writeln!(
        out,
        "# HELP {name} Rows by registration state.\n# TYPE {name} gauge"
    );
    for (state, n) in counts {
        let _ = writeln!(out, "{name}{{state=\"{state}\"}} {n}");
    }
    let _ = writeln!(out, "{name}{{state=\"invalid\"}} {invalid_rows}");

    let simple: [(&str, &str, &str, u64); 11] = [
        (
            "uacreg_registers_sent_total",
            "counter",
            "REGISTER requests sent (new transactions).",
            stats.registers_sent,
        ),
        (
            "uacreg_retransmissions_total",
            "counter",
            "Requests retransmitted by timer E.",
            stats.transactions.retransmissions,
        ),
        (
            "uacreg_transaction_timeouts_total",
            "counter",
            "Transactions that got no final response (timer F).",
            stats.transactions.timeouts,
        ),
        (
            "uacreg_retries_total",
            "counter",
            "Failed attempts followed by a scheduled retry.",
            stats.core.retries_scheduled,
        ),
        (
            "uacreg_gave_up_total",
            "counter",
            "Failed attempts after which a row stopped retrying.",
            stats.core.gave_up,
        ),
        (
            "uacreg_registrations_granted_total",
            "counter",
            "Successful REGISTERs (new or refreshed bindings).",
            stats.core.registered,
        ),
        (
            "uacreg_malformed_datagrams_total",
            "counter",
            "Datagrams dropped as malformed.",
            stats.malformed_dropped,
        ),
        (
            "uacreg_unmatched_responses_total",
            "counter",
            "Responses that matched no transaction.",
            stats.unmatched_responses,
        ),
        (
            "uacreg_send_queue",
            "gauge",
            "REGISTERs waiting for the pacer.",
            stats.queued as u64,
        ),
        (
            "uacreg_pacing_window",
            "gauge",
            "Unanswered REGISTERs allowed now (halved on late answers, regrown by answers).",
            stats.pacing_window as u64,
        ),
        (
            "uacreg_pacing_backoffs_total",
            "counter",
            "Times late answers or timeouts halved the pacing window.",
            stats.pacing_backoffs,
        ),
    ];
    for (name, kind, help, value) in simple {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    }

    inbound(&mut out, &stats.inbound);
    format_limits(&mut out, stats);

    let _ = writeln!(
        out,
        "# HELP uacreg_responses_total Final responses by status code.\n# TYPE uacreg_responses_total counter"
    );
    for (code, n) in &stats.responses {
        let _ = writeln!(out, "uacreg_responses_total{{code=\"{code}\"}} {n}");
    }

    // The parts of uacreg_unmatched_responses_total, by why each response was not ours.
    let name = "uacreg_unmatched_responses_by_reason_total";
    let _ = writeln!(
        out,
        "# HELP {name} Responses dropped as answering none of our requests, by reason.\n# TYPE {name} counter"
    );
    for (reason, n) in [
        ("unknown_branch", stats.responses_unknown_branch),
        ("wrong_ids", stats.responses_wrong_ids),
        ("wrong_source", stats.responses_wrong_source),
    ] {
        let _ = writeln!(out, "{name}{{reason=\"{reason}\"}} {n}");
    }

    histogram(
        &mut out,
        "uacreg_transaction_latency_seconds",
        "Time from first sending a REGISTER to its final response.",
        &stats.latency,
    );
    histogram(
        &mut out,
        "uacreg_timer_lateness_seconds",
        "How late due refresh and retry timers ran (driver busy or asleep too long).",
        &stats.timer_lateness,
    );
    out
}

/// The inbound side: one labelled counter family for requests and one for relay-marked
/// responses; every message received is counted under exactly one label.
fn inbound(out: &mut String, stats: &crate::driver::InboundStats) {
    let name = "uacreg_inbound_requests_total";
    let _ = writeln!(
        out,
        "# HELP {name} Requests received on the SIP port, by what became of them.\n# TYPE {name} counter"
    );
    for (outcome, n) in stats.requests.labelled() {
        let _ = writeln!(out, "{name}{{outcome=\"{outcome}\"}} {n}");
    }
    let name = "uacreg_relay_responses_total";
    let _ = writeln!(
        out,
        "# HELP {name} Responses carrying our relay marker, by what became of them.\n# TYPE {name} counter"
    );
    for (outcome, n) in stats.relay_responses.labelled() {
        let _ = writeln!(out, "{name}{{outcome=\"{outcome}\"}} {n}");
    }
}

/// Connections and queues under `[limits]`: what was refused, closed or dropped.
fn format_limits(out: &mut String, stats: &DriverStats) {
    let _ = writeln!(
        out,
        "# HELP uacreg_inbound_connections TCP/TLS connections peers hold to us now.\n\
         # TYPE uacreg_inbound_connections gauge\nuacreg_inbound_connections {}",
        stats.inbound_connections
    );
    let name = "uacreg_connections_refused_total";
    let _ = writeln!(
        out,
        "# HELP {name} Accepted connections closed at once by a connection limit.\n\
         # TYPE {name} counter\n{name}{{limit=\"max_connections\"}} {}\n\
         {name}{{limit=\"max_connections_per_ip\"}} {}",
        stats.connections_refused, stats.connections_refused_per_ip
    );
    let counters: [(&str, &str, u64); 6] = [
        (
            "uacreg_connections_idle_closed_total",
            "Accepted connections closed after the idle timeout without a message or ping.",
            stats.connections_idle_closed,
        ),
        (
            "uacreg_connections_unframeable_total",
            "Connections closed for bytes that break SIP framing (oversized, bad Content-Length).",
            stats.connections_unframeable,
        ),
        (
            "uacreg_write_queue_overflows_total",
            "Connections closed because their peer stopped reading and the write queue filled.",
            stats.write_queue_overflows,
        ),
        (
            "uacreg_write_timeouts_total",
            "Connections closed because one write did not finish in time.",
            stats.write_timeouts,
        ),
        (
            "uacreg_accept_errors_total",
            "Failed accepts on the SIP TCP/TLS listeners (each backs the loop off).",
            stats.accept_errors,
        ),
        (
            "uacreg_datagrams_dropped_total",
            "Datagrams on extra UDP sockets dropped because the driver's queue was full.",
            stats.datagrams_dropped,
        ),
    ];
    for (name, help, value) in counters {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
        );
    }
}

fn histogram(out: &mut String, name: &str, help: &str, values: &LatencyHistogram) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
    for (i, bound) in LATENCY_BOUNDS_MS.iter().enumerate() {
        let le = *bound as f64 / 1000.0;
        let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {}", values.counts[i]);
    }
    let _ = writeln!(
        out,
        "{name}_bucket{{le=\"+Inf\"}} {}\n{name}_sum {}\n{name}_count {}",
        values.counts[LATENCY_BOUNDS_MS.len()],
        values.sum_seconds,
        values.count
    );
}

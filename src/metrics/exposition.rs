//! Every metric uacregd exports, built into a fresh prometheus-client `Registry` from one
//! [`Snapshot`] and encoded as Prometheus text (0.0.4).
//!
//! Names are written out whole (`…_total` included) so that a grep for a dashboard's series
//! lands here; prometheus-client adds the `_total` of counters itself, so `Page` takes it off
//! before registering. A quantity that differs only by reason or outcome is one name with a
//! label. Counters the driver keeps that merely repeat another series (a sum over a labelled
//! family) are left out, and the tests list them with the series that already shows them.

use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Metric, Registry};

use super::Snapshot;
use super::constant::{CountedHistogram, LabelledValues};
use crate::driver::{DriverStats, InboundStats};
use crate::gateway::DatabaseHealth;

/// The content type of the page: the classic Prometheus text format, version 0.0.4.
///
/// Always this one, even for scrapers that offer OpenMetrics in `Accept`: the page has been
/// served in it from the start, and OpenMetrics would rename histogram buckets (`le="1.0"` for
/// `le="1"`) under dashboards and alerts that select them.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// The metrics page for `snapshot`.
pub fn render(snapshot: &Snapshot) -> Result<String, std::fmt::Error> {
    let registry = registry(snapshot);
    let mut page = String::new();
    prometheus_text::encode(&mut page, &registry)?;
    Ok(page)
}

/// Every metric with its value in `snapshot`.
pub fn registry(snapshot: &Snapshot) -> Registry {
    let mut page = Page::default();
    registrations(&mut page, snapshot);
    transactions(&mut page, &snapshot.driver);
    transport(&mut page, &snapshot.driver);
    connections(&mut page, &snapshot.driver);
    inbound(&mut page, &snapshot.driver.inbound);
    database(&mut page, &snapshot.database);
    if let Some(status) = &snapshot.cluster {
        cluster(&mut page, status, snapshot);
    }
    page.registry
}

/// Registers metrics under the full names the exposition shows.
#[derive(Default)]
struct Page {
    registry: Registry,
}

impl Page {
    fn counter(&mut self, name: &str, help: &str, value: u64) {
        self.add_counter(name, help, ConstCounter::new(value));
    }

    fn counters<L: ToString>(
        &mut self,
        name: &str,
        help: &str,
        label: &'static str,
        members: impl IntoIterator<Item = (L, u64)>,
    ) {
        self.add_counter(name, help, LabelledValues::counters(label, members));
    }

    fn gauge(&mut self, name: &str, help: &str, value: u64) {
        self.registry.register(name, help, ConstGauge::new(value));
    }

    fn gauges<L: ToString>(
        &mut self,
        name: &str,
        help: &str,
        label: &'static str,
        members: impl IntoIterator<Item = (L, u64)>,
    ) {
        self.registry
            .register(name, help, LabelledValues::gauges(label, members));
    }

    fn histogram(&mut self, name: &str, help: &str, values: &crate::driver::LatencyHistogram) {
        self.registry
            .register(name, help, CountedHistogram::from(values));
    }

    /// prometheus-client appends `_total` to a counter's name; the name given is the one shown.
    fn add_counter(&mut self, name: &str, help: &str, metric: impl Metric) {
        debug_assert!(name.ends_with("_total"), "counter {name} without _total");
        let family = name.strip_suffix("_total").unwrap_or(name);
        self.registry.register(family, help, metric);
    }
}

fn registrations(page: &mut Page, snapshot: &Snapshot) {
    let by_state = snapshot
        .registrations
        .iter()
        .map(|(state, n)| (*state, *n as u64))
        .chain([("invalid", snapshot.invalid_rows as u64)]);
    page.gauges(
        "uacreg_registrations",
        "Rows by registration state",
        "state",
        by_state,
    );
    let driver = &snapshot.driver;
    page.gauge(
        "uacreg_registrations_leaving",
        "Registrations still un-registering after their row was removed or replaced",
        driver.leaving as u64,
    );
    page.counter(
        "uacreg_registrations_granted_total",
        "Successful REGISTERs (new or refreshed bindings)",
        driver.core.registered,
    );
    page.counter(
        "uacreg_retries_total",
        "Failed attempts followed by a scheduled retry",
        driver.core.retries_scheduled,
    );
    page.counter(
        "uacreg_gave_up_total",
        "Failed attempts after which a row stopped retrying",
        driver.core.gave_up,
    );
    page.histogram(
        "uacreg_timer_lateness_seconds",
        "How late due refresh and retry timers ran (driver busy or asleep too long), from when the send queue had room",
        &driver.timer_lateness,
    );
}

/// REGISTER transactions: sending, pacing, answers.
fn transactions(page: &mut Page, stats: &DriverStats) {
    page.counter(
        "uacreg_registers_sent_total",
        "REGISTER requests sent (new transactions)",
        stats.registers_sent,
    );
    page.counter(
        "uacreg_retransmissions_total",
        "Requests retransmitted by timer E",
        stats.transactions.retransmissions,
    );
    page.counter(
        "uacreg_transaction_timeouts_total",
        "Transactions that got no final response (timer F)",
        stats.transactions.timeouts,
    );
    page.gauge(
        "uacreg_transactions_in_flight",
        "REGISTER transactions sent and not yet answered",
        stats.in_flight as u64,
    );
    page.gauge(
        "uacreg_send_queue",
        "REGISTERs waiting for the pacer",
        stats.queued as u64,
    );
    page.gauge(
        "uacreg_pacing_window",
        "Unanswered REGISTERs allowed now (halved on late answers, regrown by answers)",
        stats.pacing_window as u64,
    );
    page.counter(
        "uacreg_pacing_backoffs_total",
        "Times late answers or timeouts halved the pacing window",
        stats.pacing_backoffs,
    );
    page.counter(
        "uacreg_resolve_failures_total",
        "Registrar lookups (RFC 3263) that failed with a DNS error or timeout",
        stats.resolve_failures,
    );
    page.counter(
        "uacreg_failovers_total",
        "Requests moved to the next RFC 3263 target after a timeout, 503 or broken connection",
        stats.failovers,
    );
    page.counter(
        "uacreg_send_errors_total",
        "Messages the operating system refused to send (UDP) or that found no open connection",
        stats.send_errors,
    );
    page.counters(
        "uacreg_responses_total",
        "Final responses by status code",
        "code",
        stats.responses.iter().map(|(code, n)| (*code, *n)),
    );
    page.histogram(
        "uacreg_transaction_latency_seconds",
        "Time from first sending a REGISTER to its final response",
        &stats.latency,
    );
    page.counter(
        "uacreg_unmatched_responses_total",
        "Responses that matched no transaction",
        stats.unmatched_responses,
    );
    // The parts of uacreg_unmatched_responses_total, by why each response was not ours.
    page.counters(
        "uacreg_unmatched_responses_by_reason_total",
        "Responses dropped as answering none of our requests, by reason",
        "reason",
        [
            ("unknown_branch", stats.responses_unknown_branch),
            ("wrong_ids", stats.responses_wrong_ids),
            ("wrong_source", stats.responses_wrong_source),
        ],
    );
}

/// Messages on the SIP sockets, and what kept the flows to registrars alive.
fn transport(page: &mut Page, stats: &DriverStats) {
    page.counters(
        "uacreg_messages_received_total",
        "SIP messages received, by transport (datagrams on every UDP socket; messages framed on TCP and TLS connections)",
        "transport",
        [
            ("udp", stats.datagrams_received),
            ("tcp_tls", stats.stream_messages_received),
        ],
    );
    page.counter(
        "uacreg_malformed_datagrams_total",
        "Datagrams dropped as malformed",
        stats.malformed_dropped,
    );
    page.counter(
        "uacreg_datagrams_dropped_total",
        "Datagrams on extra UDP sockets dropped because the driver's queue was full",
        stats.datagrams_dropped,
    );
    page.counter(
        "uacreg_keepalives_sent_total",
        "Keep-alives sent on flows to registrars (CRLF on connections, OPTIONS over UDP)",
        stats.keepalives_sent,
    );
    page.counter(
        "uacreg_keepalive_failures_total",
        "Keep-alives left unanswered (no CRLF pong, no answer to OPTIONS); each closes or re-registers the flow",
        stats.keepalive_failures,
    );
    page.counter(
        "uacreg_rebinds_total",
        "Registrations re-registered because their connection or keep-alive failed",
        stats.rebinds,
    );
}

/// TCP and TLS connections, and what `[limits]` refused, closed or dropped.
fn connections(page: &mut Page, stats: &DriverStats) {
    page.gauge(
        "uacreg_connections",
        "TCP/TLS connections open now, ours and peers' together",
        stats.connections as u64,
    );
    page.gauge(
        "uacreg_inbound_connections",
        "TCP/TLS connections peers hold to us now",
        stats.inbound_connections as u64,
    );
    page.counters(
        "uacreg_connections_opened_total",
        "TCP/TLS connections opened, by who opened them (outbound: we, to a registrar; inbound: a peer, accepted)",
        "direction",
        [
            ("outbound", stats.connections_opened),
            ("inbound", stats.connections_accepted),
        ],
    );
    page.counter(
        "uacreg_connections_closed_total",
        "TCP/TLS connections that ended, either way and for any reason",
        stats.connections_closed,
    );
    page.counters(
        "uacreg_connections_refused_total",
        "Accepted connections closed at once by a connection limit",
        "limit",
        [
            ("max_connections", stats.connections_refused),
            ("max_connections_per_ip", stats.connections_refused_per_ip),
        ],
    );
    page.counter(
        "uacreg_connections_idle_closed_total",
        "Accepted connections closed after the idle timeout without a message or ping",
        stats.connections_idle_closed,
    );
    page.counter(
        "uacreg_connections_unframeable_total",
        "Connections closed for bytes that break SIP framing (oversized, bad Content-Length)",
        stats.connections_unframeable,
    );
    page.counter(
        "uacreg_write_queue_overflows_total",
        "Connections closed because their peer stopped reading and the write queue filled",
        stats.write_queue_overflows,
    );
    page.counter(
        "uacreg_write_timeouts_total",
        "Connections closed because one write did not finish in time",
        stats.write_timeouts,
    );
    page.counter(
        "uacreg_accept_errors_total",
        "Failed accepts on the SIP TCP/TLS listeners (each backs the loop off)",
        stats.accept_errors,
    );
}

/// The inbound side: every message received is counted under exactly one outcome.
fn inbound(page: &mut Page, stats: &InboundStats) {
    page.counters(
        "uacreg_inbound_requests_total",
        "Requests received on the SIP port, by what became of them",
        "outcome",
        stats.requests.labelled(),
    );
    page.counters(
        "uacreg_relay_responses_total",
        "Responses carrying our relay marker, by what became of them",
        "outcome",
        stats.relay_responses.labelled(),
    );
}

/// Reachability, reloads, NOTIFY and status writes.
fn database(page: &mut Page, health: &DatabaseHealth) {
    page.gauge(
        "uacreg_database_reachable",
        "1 when the last database statement succeeded",
        u64::from(health.reachable),
    );
    page.counter(
        "uacreg_reloads_total",
        "Successful table reloads (RPC, SIGHUP, periodic, NOTIFY)",
        health.reloads,
    );
    page.counter(
        "uacreg_reload_failures_total",
        "Reloads that could not read the table (registrations left unchanged)",
        health.reload_failures,
    );
    page.counter(
        "uacreg_reloads_refused_total",
        "Reloads refused because they would have removed more rows than database.max_removed_share allows",
        health.reloads_refused,
    );
    if let Some(at) = health.last_reload {
        page.registry.register(
            "uacreg_last_reload_timestamp_seconds",
            "Unix time of the last successful reload",
            ConstGauge::new(at),
        );
    }
    page.gauge(
        "uacreg_database_listening",
        "1 while PostgreSQL LISTEN uacreg_changed is active",
        u64::from(health.listening),
    );
    if let Some(present) = health.notify_trigger {
        page.gauge(
            "uacreg_database_notify_trigger",
            "1 when the trigger that sends NOTIFY uacreg_changed exists (PostgreSQL, once checked)",
            u64::from(present),
        );
    }
    page.counter(
        "uacreg_notifications_total",
        "PostgreSQL NOTIFY uacreg_changed received",
        health.notifications,
    );
    page.counter(
        "uacreg_status_rows_written_total",
        "uacreg_status rows written or deleted",
        health.status_rows_written,
    );
    page.counter(
        "uacreg_status_write_failures_total",
        "uacreg_status write rounds that failed",
        health.status_write_failures,
    );
}

/// A cluster node's shards, leases and moves (only when `[cluster]` is on).
fn cluster(page: &mut Page, status: &crate::cluster_node::ClusterStatus, snapshot: &Snapshot) {
    page.gauge(
        "uacreg_cluster_shards_held",
        "Shards this node holds a lease on and may send for now",
        status.held.len() as u64,
    );
    page.gauge(
        "uacreg_cluster_rows_owned",
        "Rows this node runs (those of the shards it holds)",
        snapshot.registrations.values().sum::<usize>() as u64,
    );
    page.counter(
        "uacreg_cluster_rows_continued_total",
        "Rows started in the previous owner's dialog (same Call-ID, higher CSeq)",
        snapshot.driver.rows_continued,
    );
    page.counter(
        "uacreg_cluster_rows_fenced_total",
        "Rows stopped at their shard's deadline without a renewal: sends this node held back \
         before another node could take the shard",
        snapshot.driver.rows_fenced,
    );
    page.gauge(
        "uacreg_cluster_nodes_live",
        "Nodes whose last round is younger than a lease, this one included",
        status.nodes.iter().filter(|n| n.live).count() as u64,
    );
    page.counter(
        "uacreg_cluster_takeovers_total",
        "Shards claimed by this node (free, lapsed or given up by another)",
        status.takeovers,
    );
    page.counter(
        "uacreg_cluster_rows_taken_total",
        "Rows started on this node by taking a shard, most continuing the previous owner's dialog",
        status.rows_taken,
    );
    page.counter(
        "uacreg_cluster_handovers_total",
        "Shards this node gave back (rebalancing or stopping), dialogs written first",
        status.handovers,
    );
    page.counter(
        "uacreg_cluster_rows_handed_over_total",
        "Rows this node stopped running for a shard it gave back",
        status.rows_handed_over,
    );
    page.counter(
        "uacreg_cluster_shards_lost_total",
        "Shards found taken by another node or lapsed at the database",
        status.shards_lost,
    );
    page.counter(
        "uacreg_cluster_shards_lapsed_total",
        "Shards whose local deadline passed unrenewed: their rows stopped sending at once",
        status.shards_lapsed,
    );
    page.counter(
        "uacreg_cluster_dialogs_written_total",
        "Dialog rows written to uacreg_dialog for the next owner",
        status.dialogs_written,
    );
    page.counter(
        "uacreg_cluster_dialog_writes_fenced_total",
        "Dialog writes the database refused because this node no longer held the shard",
        status.dialog_writes_fenced,
    );
    page.gauge(
        "uacreg_cluster_round_failing",
        "1 when this node's last round with the database failed",
        u64::from(status.last_error.is_some()),
    );
}

//! The metrics endpoint over a loopback socket, fed a fixed snapshot.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{Snapshot, SnapshotSource, serve};
use crate::driver::{DriverStats, InboundStats, LatencyHistogram};
use crate::engine::transaction::TransactionStats;
use crate::gateway::DatabaseHealth;
use crate::registration::CoreCounters;
use crate::relay::{RequestCounts, ResponseCounts};

/// Serves the same snapshot to every scrape, or none (a stopped driver).
struct Fixed(Option<Snapshot>);

impl SnapshotSource for Fixed {
    async fn snapshot(&self) -> Option<Snapshot> {
        self.0.clone()
    }
}

async fn start(snapshot: Option<Snapshot>) -> SocketAddr {
    let (addr, _task) = serve("127.0.0.1:0".parse().unwrap(), Arc::new(Fixed(snapshot)))
        .await
        .unwrap();
    addr
}

/// The status line, the headers (names in lower case) and the body of one exchange.
struct Answer {
    status: String,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

async fn exchange(addr: SocketAddr, request: &str) -> Answer {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    // The server closes after one answer; a hang here is a failure, not a wait.
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw))
        .await
        .expect("the server closes the connection after answering")
        .unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("a whole response");
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap().to_string();
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Answer {
        status,
        headers,
        body: body.to_string(),
    }
}

async fn scrape(addr: SocketAddr) -> String {
    let answer = exchange(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(answer.status, "HTTP/1.1 200 OK", "{}", answer.body);
    answer.body
}

/// `(series with labels, value)` for every sample line of a page.
fn samples(page: &str) -> Vec<(String, f64)> {
    page.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').expect("series and value");
            let value = value.parse().unwrap_or_else(|_| panic!("value of {line}"));
            (series.to_string(), value)
        })
        .collect()
}

/// The sum of a series over all its label sets.
fn sum_of(page: &str, name: &str) -> f64 {
    samples(page)
        .into_iter()
        .filter(|(series, _)| series == name || series.starts_with(&format!("{name}{{")))
        .map(|(_, value)| value)
        .sum()
}

/// A snapshot in which every number differs from every other (and from 0 and 1, which
/// flags show), so that finding a field's value on the page means the field is exported.
/// Struct literals without `..Default::default()`: a field added to any of these structs
/// does not compile here until it is given a value, and then the test wants it on the page.
/// The fields left out of the page are [`SHOWN_ELSEWHERE`], set here to what they repeat.
fn distinct_snapshot() -> Snapshot {
    let requests = RequestCounts {
        options_answered: 1101,
        relayed_trusted: 1102,
        relayed_stripped: 1103,
        refused_untrusted: 1104,
        unknown_user: 1105,
        rejected: 1106,
        no_proxy: 1107,
        ack_absorbed: 1108,
        malformed: 1109,
        reply_larger_than_request: 1110,
        replies_rate_limited: 1111,
    };
    let relay_responses = ResponseCounts {
        relayed: 1201,
        bad_mac: 1202,
        wrong_source: 1203,
        no_proxy: 1204,
        no_flow: 1205,
        malformed: 1206,
    };
    let latency = LatencyHistogram {
        counts: [
            1301, 1302, 1303, 1304, 1305, 1306, 1307, 1308, 1309, 1310, 1311, 1312,
        ],
        sum_seconds: 1313.25,
        count: 1314,
    };
    let driver = DriverStats {
        datagrams_received: 1001,
        stream_messages_received: 1002,
        malformed_dropped: 1003,
        unmatched_responses: 1004,
        responses_unknown_branch: 1005,
        responses_wrong_ids: 1006,
        responses_wrong_source: 1007,
        inbound: InboundStats {
            requests_received: requests.total(),
            relay_responses_received: relay_responses.total(),
            requests,
            relay_responses,
        },
        registers_sent: 1008,
        send_errors: 1009,
        resolve_failures: 1010,
        failovers: 1011,
        connections_opened: 1012,
        connections_accepted: 1013,
        connections_closed: 1014,
        connections: 1015,
        inbound_connections: 1016,
        connections_refused: 1017,
        connections_refused_per_ip: 1018,
        connections_idle_closed: 1019,
        connections_unframeable: 1020,
        write_queue_overflows: 1021,
        write_timeouts: 1022,
        accept_errors: 1023,
        datagrams_dropped: 1024,
        rebinds: 1025,
        keepalives_sent: 1026,
        keepalive_failures: 1027,
        queued: 1028,
        in_flight: 1029,
        pacing_window: 1030,
        pacing_backoffs: 1031,
        leaving: 1032,
        transactions: TransactionStats {
            started: 1008,
            retransmissions: 1033,
            timeouts: 1034,
            completed: latency.count,
        },
        responses: BTreeMap::from([(200, 1035), (401, 1036), (503, 1037)]),
        latency,
        timer_lateness: LatencyHistogram {
            counts: [
                1401, 1402, 1403, 1404, 1405, 1406, 1407, 1408, 1409, 1410, 1411, 1412,
            ],
            sum_seconds: 1413.5,
            count: 1414,
        },
        core: CoreCounters {
            retries_scheduled: 1038,
            gave_up: 1039,
            registered: 1040,
        },
        rows_continued: 1041,
        rows_fenced: 1042,
    };
    let database = DatabaseHealth {
        engine: "postgresql".into(),
        url: "postgres://uacreg:***@127.0.0.1/kamailio".to_string(),
        reachable: true,
        kamailio_table_version: Some(4),
        contact_user_column: true,
        reloads: 1501,
        reload_failures: 1502,
        reloads_refused: 1503,
        last_reload: Some(1_700_000_000),
        last_error: Some("a reason".to_string()),
        listening: true,
        notify_trigger: Some(true),
        notifications: 1504,
        status_rows_written: 1505,
        status_write_failures: 1506,
    };
    Snapshot {
        registrations: BTreeMap::from([("registered", 1601), ("retry_wait", 1602)]),
        invalid_rows: 1603,
        driver,
        database,
        cluster: None,
    }
}

/// Kept values the page does not show on their own, each with the series that already does
/// (its value, or its sum over labels, equals the field).
const SHOWN_ELSEWHERE: [(&str, &str); 4] = [
    ("inbound.requests_received", "uacreg_inbound_requests_total"),
    (
        "inbound.relay_responses_received",
        "uacreg_relay_responses_total",
    ),
    ("transactions.started", "uacreg_registers_sent_total"),
    (
        "transactions.completed",
        "uacreg_transaction_latency_seconds_count",
    ),
];

/// Database facts that describe the schema and connection rather than count or measure
/// anything: `uacreg.status` shows them.
const DESCRIPTIVE: [&str; 2] = ["kamailio_table_version", "contact_user_column"];

/// `(path, number)` for every number in `value`, and the paths of the flags.
fn leaves(
    value: &serde_json::Value,
    path: &str,
    numbers: &mut Vec<(String, f64)>,
    flags: &mut Vec<String>,
) {
    let join = |key: &str| {
        if path.is_empty() {
            key.to_string()
        } else {
            format!("{path}.{key}")
        }
    };
    match value {
        serde_json::Value::Number(n) => numbers.push((path.to_string(), n.as_f64().unwrap())),
        serde_json::Value::Bool(_) => flags.push(path.to_string()),
        serde_json::Value::Object(fields) => {
            for (key, field) in fields {
                leaves(field, &join(key), numbers, flags);
            }
        }
        serde_json::Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                leaves(item, &join(&i.to_string()), numbers, flags);
            }
        }
        serde_json::Value::String(_) | serde_json::Value::Null => {}
    }
}

/// Checks that every number of `value` not listed in `skip` is a sample value on `page`, and
/// that those numbers are all different (else a match could be another field's).
fn assert_all_on_page(what: &str, value: &serde_json::Value, skip: &[&str], page: &str) {
    let mut numbers = Vec::new();
    let mut flags = Vec::new();
    leaves(value, "", &mut numbers, &mut flags);
    let shown: Vec<f64> = samples(page).into_iter().map(|(_, v)| v).collect();
    let mut seen = HashSet::new();
    let mut missing = Vec::new();
    for (path, number) in numbers.iter().filter(|(p, _)| !skip.contains(&p.as_str())) {
        assert!(
            seen.insert(number.to_bits()),
            "{what}.{path}: {number} is used twice in the test snapshot; give it its own value"
        );
        assert!(*number > 1.0, "{what}.{path}: pick a value above 1");
        if !shown.contains(number) {
            missing.push(format!("{what}.{path} = {number}"));
        }
    }
    assert!(
        missing.is_empty(),
        "kept but not exported (add them to src/metrics/exposition.rs):\n{}\n\n{page}",
        missing.join("\n")
    );
}

#[tokio::test]
async fn every_value_the_driver_and_the_database_keep_is_on_the_page() {
    // Clustered, so the engine's cluster counters (shown only then) are on the page too.
    let mut snapshot = distinct_snapshot();
    snapshot.cluster = Some(crate::cluster_node::ClusterStatus::default());
    let addr = start(Some(snapshot.clone())).await;
    let page = scrape(addr).await;

    let driver = serde_json::to_value(&snapshot.driver).unwrap();
    let skip: Vec<&str> = SHOWN_ELSEWHERE.iter().map(|(path, _)| *path).collect();
    assert_all_on_page("DriverStats", &driver, &skip, &page);
    for (path, series) in SHOWN_ELSEWHERE {
        let field = driver
            .pointer(&format!("/{}", path.replace('.', "/")))
            .and_then(serde_json::Value::as_f64)
            .unwrap_or_else(|| panic!("{path} is no longer a DriverStats field"));
        assert_eq!(sum_of(&page, series), field, "{path} vs {series}");
    }

    let database = serde_json::to_value(&snapshot.database).unwrap();
    assert_all_on_page("DatabaseHealth", &database, &DESCRIPTIVE, &page);
    let mut flags = Vec::new();
    leaves(&database, "", &mut Vec::new(), &mut flags);
    let flag_series = [
        ("reachable", "uacreg_database_reachable"),
        ("listening", "uacreg_database_listening"),
        ("notify_trigger", "uacreg_database_notify_trigger"),
    ];
    for flag in flags.iter().filter(|f| !DESCRIPTIVE.contains(&f.as_str())) {
        let series = flag_series
            .iter()
            .find(|(field, _)| field == flag)
            .map(|(_, series)| *series)
            .unwrap_or_else(|| panic!("DatabaseHealth.{flag} is not exported"));
        assert!(
            page.contains(&format!("\n{series} 1\n")),
            "{series} in:\n{page}"
        );
    }

    for line in [
        "uacreg_registrations{state=\"registered\"} 1601",
        "uacreg_registrations{state=\"retry_wait\"} 1602",
        "uacreg_registrations{state=\"invalid\"} 1603",
    ] {
        assert!(page.contains(&format!("{line}\n")), "{line} in:\n{page}");
    }
}

/// The names, types and labels dashboards already use, as they were before prometheus-client.
const EXISTING: [(&str, &str); 32] = [
    ("uacreg_registrations", "gauge"),
    ("uacreg_registers_sent_total", "counter"),
    ("uacreg_retransmissions_total", "counter"),
    ("uacreg_transaction_timeouts_total", "counter"),
    ("uacreg_retries_total", "counter"),
    ("uacreg_gave_up_total", "counter"),
    ("uacreg_registrations_granted_total", "counter"),
    ("uacreg_malformed_datagrams_total", "counter"),
    ("uacreg_unmatched_responses_total", "counter"),
    ("uacreg_send_queue", "gauge"),
    ("uacreg_pacing_window", "gauge"),
    ("uacreg_pacing_backoffs_total", "counter"),
    ("uacreg_inbound_requests_total", "counter"),
    ("uacreg_relay_responses_total", "counter"),
    ("uacreg_inbound_connections", "gauge"),
    ("uacreg_connections_refused_total", "counter"),
    ("uacreg_connections_idle_closed_total", "counter"),
    ("uacreg_connections_unframeable_total", "counter"),
    ("uacreg_write_queue_overflows_total", "counter"),
    ("uacreg_write_timeouts_total", "counter"),
    ("uacreg_accept_errors_total", "counter"),
    ("uacreg_datagrams_dropped_total", "counter"),
    ("uacreg_responses_total", "counter"),
    ("uacreg_unmatched_responses_by_reason_total", "counter"),
    ("uacreg_transaction_latency_seconds", "histogram"),
    ("uacreg_timer_lateness_seconds", "histogram"),
    ("uacreg_database_reachable", "gauge"),
    ("uacreg_reloads_total", "counter"),
    ("uacreg_reload_failures_total", "counter"),
    ("uacreg_notifications_total", "counter"),
    ("uacreg_status_rows_written_total", "counter"),
    ("uacreg_status_write_failures_total", "counter"),
];

#[tokio::test]
async fn names_types_and_labels_dashboards_use_are_unchanged() {
    let addr = start(Some(distinct_snapshot())).await;
    let page = scrape(addr).await;
    for (name, kind) in EXISTING {
        assert!(
            page.contains(&format!("# TYPE {name} {kind}\n")),
            "# TYPE {name} {kind} in:\n{page}"
        );
    }
    for line in [
        "uacreg_registers_sent_total 1008",
        "uacreg_responses_total{code=\"401\"} 1036",
        "uacreg_unmatched_responses_by_reason_total{reason=\"unknown_branch\"} 1005",
        "uacreg_unmatched_responses_by_reason_total{reason=\"wrong_ids\"} 1006",
        "uacreg_unmatched_responses_by_reason_total{reason=\"wrong_source\"} 1007",
        "uacreg_connections_refused_total{limit=\"max_connections\"} 1017",
        "uacreg_connections_refused_total{limit=\"max_connections_per_ip\"} 1018",
        "uacreg_inbound_requests_total{outcome=\"replies_rate_limited\"} 1111",
        "uacreg_relay_responses_total{outcome=\"bad_mac\"} 1202",
        // Buckets are cumulative, as the driver counts them, with +Inf last.
        "uacreg_transaction_latency_seconds_bucket{le=\"0.005\"} 1301",
        "uacreg_transaction_latency_seconds_bucket{le=\"10\"} 1311",
        "uacreg_transaction_latency_seconds_bucket{le=\"+Inf\"} 1312",
        "uacreg_transaction_latency_seconds_sum 1313.25",
        "uacreg_transaction_latency_seconds_count 1314",
        "uacreg_database_reachable 1",
    ] {
        assert!(page.contains(&format!("{line}\n")), "{line} in:\n{page}");
    }
}

#[tokio::test]
async fn prometheus_text_even_when_openmetrics_is_offered() {
    let addr = start(Some(distinct_snapshot())).await;
    // A plain request, and what Prometheus itself sends (OpenMetrics preferred).
    for request in [
        "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: \
         application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.3\r\n\r\n",
    ] {
        let answer = exchange(addr, request).await;
        assert_eq!(answer.status, "HTTP/1.1 200 OK", "{request}");
        assert_eq!(
            answer.header("content-type"),
            Some("text/plain; version=0.0.4; charset=utf-8"),
            "{request}"
        );
        assert!(!answer.body.contains("# EOF"), "{}", answer.body);
        assert!(
            answer
                .body
                .contains("# TYPE uacreg_registers_sent_total counter\n")
        );
        assert!(
            answer
                .body
                .contains("uacreg_transaction_latency_seconds_bucket{le=\"1\"} "),
            "{}",
            answer.body
        );
    }
}

#[tokio::test]
async fn other_paths_and_methods_are_not_found() {
    let addr = start(Some(distinct_snapshot())).await;
    for request in [
        "GET /other HTTP/1.1\r\nHost: x\r\n\r\n",
        "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
    ] {
        let answer = exchange(addr, request).await;
        assert_eq!(answer.status, "HTTP/1.1 404 Not Found", "{request}");
        assert_eq!(answer.body, "try GET /metrics\n");
    }
    // The root serves the page too, as it always did.
    let root = exchange(addr, "GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(root.status, "HTTP/1.1 200 OK");
    assert!(root.body.contains("uacreg_registers_sent_total 1008\n"));
}

#[tokio::test]
async fn a_stopped_driver_is_a_503() {
    let addr = start(None).await;
    let answer = exchange(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(answer.status, "HTTP/1.1 503 Service Unavailable");
    assert_eq!(answer.body, "driver stopped\n");
}

#[tokio::test]
async fn an_oversized_request_head_is_refused_without_a_page() {
    let addr = start(Some(distinct_snapshot())).await;
    let padding = "a".repeat(16 * 1024);
    let request = format!("GET /metrics HTTP/1.1\r\nHost: x\r\nX-Padding: {padding}\r\n\r\n");
    let answer = exchange(addr, &request).await;
    assert!(
        answer.status.starts_with("HTTP/1.1 431"),
        "{}",
        answer.status
    );
    assert!(!answer.body.contains("uacreg_"), "{}", answer.body);
}

#[tokio::test]
async fn connections_beyond_the_bound_wait_for_a_free_slot() {
    let addr = start(Some(distinct_snapshot())).await;
    // Connections that send nothing hold every slot (the listener hands connections out in
    // the order they arrived, so these are the ones served).
    let mut idle = Vec::new();
    for _ in 0..super::http::MAX_CONNECTIONS {
        idle.push(TcpStream::connect(addr).await.unwrap());
    }
    let waiting = tokio::spawn(exchange(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"));
    // Not answered while the slots are held (well within the idle ones' 5 s head timeout).
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !waiting.is_finished(),
        "a scrape was served beyond the bound"
    );
    // One idle connection goes away: its slot serves the waiting scrape.
    drop(idle.pop());
    let answer = waiting.await.unwrap();
    assert_eq!(answer.status, "HTTP/1.1 200 OK");
}

#[tokio::test]
async fn a_cluster_node_shows_its_shards_and_moves() {
    let mut snapshot = distinct_snapshot();
    let mut status = crate::cluster_node::ClusterStatus::default();
    status.node_id = "gw1".into();
    status.takeovers = 11;
    status.rows_taken = 12;
    status.handovers = 13;
    status.rows_handed_over = 14;
    status.shards_lost = 15;
    status.shards_lapsed = 16;
    status.dialogs_written = 17;
    status.dialog_writes_fenced = 18;
    status.held = vec![1, 2, 3];
    snapshot.cluster = Some(status);
    let page = scrape(start(Some(snapshot)).await).await;
    for (name, value) in [
        ("uacreg_cluster_shards_held", 3.0),
        ("uacreg_cluster_rows_owned", 1601.0 + 1602.0),
        ("uacreg_cluster_rows_continued_total", 1041.0),
        ("uacreg_cluster_rows_fenced_total", 1042.0),
        ("uacreg_cluster_takeovers_total", 11.0),
        ("uacreg_cluster_rows_taken_total", 12.0),
        ("uacreg_cluster_handovers_total", 13.0),
        ("uacreg_cluster_rows_handed_over_total", 14.0),
        ("uacreg_cluster_shards_lost_total", 15.0),
        ("uacreg_cluster_shards_lapsed_total", 16.0),
        ("uacreg_cluster_dialogs_written_total", 17.0),
        ("uacreg_cluster_dialog_writes_fenced_total", 18.0),
        ("uacreg_cluster_round_failing", 0.0),
    ] {
        assert_eq!(sum_of(&page, name), value, "{name}\n{page}");
    }
    // Not clustered: no cluster series at all.
    let plain = scrape(start(Some(distinct_snapshot())).await).await;
    assert!(!plain.contains("uacreg_cluster_"), "{plain}");
}

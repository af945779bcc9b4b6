//! The observability pack in `contrib/`: the Prometheus alert rules pass `promtool check rules`
//! and their own `promtool test rules` cases, the Grafana dashboard is well-formed, and every
//! metric the two name is one a running uacregd really exports (scraped from a cluster node on
//! PostgreSQL with a registered row, so the `uacreg_cluster_*` series are there too).

mod common;
mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{registered_count, registrar, scrape, test_config, wait_until, write_rows};
use support::dbserver::{DbServer, Engine, require_engine};
use support::process::{find_program, require};

fn contrib(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("contrib")
        .join(path)
}

fn promtool() -> Option<PathBuf> {
    let found = find_program("promtool", &["/usr/bin/promtool"]);
    if found.is_none() {
        require("promtool", false, || "not installed".to_string());
    }
    found
}

fn run(program: &Path, args: &[&str], dir: &Path) {
    let outcome = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .expect("promtool runs");
    assert!(
        outcome.status.success(),
        "{} {args:?}: {}\n{}{}",
        program.display(),
        outcome.status,
        String::from_utf8_lossy(&outcome.stdout),
        String::from_utf8_lossy(&outcome.stderr),
    );
}

#[test]
fn the_alert_rules_pass_promtools_checks_and_their_tests() {
    let Some(promtool) = promtool() else {
        return;
    };
    let dir = contrib("prometheus");
    run(&promtool, &["check", "rules", "uacreg-alerts.yml"], &dir);
    run(
        &promtool,
        &["test", "rules", "uacreg-alerts.test.yml"],
        &dir,
    );
}

/// The `expr` of every dashboard panel target, after checking the panels' shape.
fn dashboard_queries() -> Vec<String> {
    let text = std::fs::read_to_string(contrib("grafana/uacreg-dashboard.json")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    assert_eq!(dashboard["uid"], "uacreg-overview");
    let panels = dashboard["panels"].as_array().expect("panels");
    let mut ids = BTreeSet::new();
    let mut queries = Vec::new();
    for panel in panels {
        assert!(
            ids.insert(panel["id"].as_u64().expect("an id")),
            "ids repeat"
        );
        let grid = &panel["gridPos"];
        let (x, w) = (grid["x"].as_u64().unwrap(), grid["w"].as_u64().unwrap());
        assert!(
            x + w <= 24,
            "{} is wider than the dashboard",
            panel["title"]
        );
        if panel["type"] == "row" {
            continue;
        }
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{} has no query", panel["title"]);
        for target in targets {
            queries.push(target["expr"].as_str().expect("an expr").to_string());
        }
    }
    for variable in dashboard["templating"]["list"].as_array().unwrap() {
        if let Some(query) = variable["definition"].as_str() {
            queries.push(query.to_string());
        }
    }
    queries
}

/// The `expr` of every rule.
fn rule_queries() -> Vec<String> {
    let text = std::fs::read_to_string(contrib("prometheus/uacreg-alerts.yml")).unwrap();
    // `expr:` lines and the indented lines of a `|` block after one.
    let mut queries = Vec::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let Some(expr) = line.trim_start().strip_prefix("expr:") else {
            continue;
        };
        let mut query = expr.trim().trim_start_matches('|').to_string();
        let indent = line.len() - line.trim_start().len();
        while let Some(next) = lines.peek() {
            if next.len() - next.trim_start().len() <= indent || next.trim().is_empty() {
                break;
            }
            query.push(' ');
            query.push_str(next.trim());
            lines.next();
        }
        queries.push(query);
    }
    assert!(queries.len() >= 9, "{queries:?}");
    queries
}

/// Every `uacreg_…` name in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("uacreg_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

/// Sample names on a metrics page (`name{labels} value` or `name value`).
fn exported(page: &str) -> BTreeSet<String> {
    page.lines()
        .filter(|line| line.starts_with("uacreg_"))
        .filter_map(|line| line.split(['{', ' ']).next())
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_dashboard_and_rules_name_is_exported() {
    let mut wanted = BTreeSet::new();
    for query in dashboard_queries().iter().chain(rule_queries().iter()) {
        wanted.extend(metric_names(query));
    }
    assert!(wanted.len() > 20, "{wanted:?}");
    if !require_engine(Engine::Postgres) {
        return;
    }
    let server = tokio::task::spawn_blocking(|| DbServer::start(Engine::Postgres))
        .await
        .unwrap()
        .expect("PostgreSQL starts");
    let registrar = registrar(1).await;
    let (url, rows) = (
        server.url(),
        uacreg::demo::demo_rows(1, registrar.local_addr()),
    );
    tokio::task::spawn_blocking(move || write_rows(&url, &rows))
        .await
        .unwrap();
    let mut config = test_config(&server.url());
    config.cluster.enabled = true;
    config.cluster.node_id = Some("observed".into());
    config.cluster.lease = Duration::from_secs(3);
    config.finish().unwrap();
    let daemon = uacreg::Daemon::start(config).await.unwrap();
    let registered = wait_until(Duration::from_secs(20), || async {
        registered_count(&daemon).await == 1
    })
    .await;
    assert!(registered, "the row never registered");
    let page = scrape(&daemon).await;
    daemon.stop().await;
    let shown = exported(&page);
    let missing: Vec<&String> = wanted
        .iter()
        .filter(|name| !shown.contains(*name))
        .collect();
    assert!(
        missing.is_empty(),
        "named in contrib/ but not exported: {missing:?}\n{page}"
    );
}

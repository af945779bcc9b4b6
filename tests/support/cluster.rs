//! Several uacregd processes on one database, for the tests of a cluster: each node is a
//! [`Uacregd`] of its own (its own directory, ports, configuration and log) that reaches the
//! database through a [`TcpCut`] of its own, so a test can take the database away from one
//! node while the others keep it, or stop, pause and kill nodes one at a time.
//!
//! Also what every such test needs around the nodes: the rows the in-repo registrar accepts
//! ([`rows`], [`accounts`]), written through the store ([`write_rows`]), and a bounded wait
//! until the registrar holds a binding for every row ([`wait_all_bound`]).

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use uacreg::store::{RawRow, Store};
use uacreg::testing::registrar::TestRegistrar;

use super::dbserver::{self, DbServer};
use super::process::TempDir;
use super::tcp_cut::TcpCut;
use super::uacregd::Uacregd;

/// One node: the process, its link to the database, and its directory (configuration, log).
pub struct Node {
    /// `None` once stopped or killed and reaped by [`Cluster::stop_node`].
    daemon: Option<Uacregd>,
    /// Between this node and the database server.
    pub db_link: TcpCut,
    /// Appended to the node's TOML file.
    pub extra_config: String,
    dir: TempDir,
}

impl Node {
    /// The running process. Panics if the node was stopped with [`Cluster::stop_node`].
    pub fn daemon(&self) -> &Uacregd {
        self.daemon.as_ref().expect("the node runs")
    }

    pub fn daemon_mut(&mut self) -> &mut Uacregd {
        self.daemon.as_mut().expect("the node runs")
    }

    /// Whether a process was started and not stopped through the cluster (it may have exited
    /// on its own or been killed: see [`Uacregd::has_exited`]).
    pub fn is_started(&self) -> bool {
        self.daemon.is_some()
    }

    /// The node's SIP address: where its REGISTERs come from, as the registrar sees them.
    pub fn sip(&self) -> SocketAddr {
        self.daemon().sip
    }

    /// The node's log so far, for failure messages (empty before the first start).
    pub fn log_tail(&self, lines: usize) -> String {
        self.daemon
            .as_ref()
            .map(|d| d.log_tail(lines))
            .unwrap_or_default()
    }

    /// Where its configuration and log are.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }
}

/// uacregd nodes sharing one database server.
pub struct Cluster {
    binary: String,
    /// `postgres` or `mysql`.
    scheme: &'static str,
    db_addr: SocketAddr,
    nodes: Vec<Node>,
}

impl Cluster {
    /// Starts one node per entry of `extra_configs` (in order, each waited for), all on the
    /// database of `server`, each through its own [`TcpCut`].
    pub fn start(binary: &str, server: &DbServer, extra_configs: &[&str]) -> io::Result<Cluster> {
        let mut cluster = Cluster {
            binary: binary.to_string(),
            scheme: server.engine().scheme(),
            db_addr: server.addr(),
            nodes: Vec::new(),
        };
        for extra in extra_configs {
            cluster.add_node(extra)?;
        }
        Ok(cluster)
    }

    /// Starts one more node; its index.
    pub fn add_node(&mut self, extra_config: &str) -> io::Result<usize> {
        let index = self.nodes.len();
        let dir = TempDir::new(&format!("uacreg-cluster-node{index}"))?;
        let db_link = TcpCut::start(self.db_addr)?;
        let mut node = Node {
            daemon: None,
            db_link,
            extra_config: extra_config.to_string(),
            dir,
        };
        node.daemon = Some(self.launch(&node)?);
        self.nodes.push(node);
        Ok(index)
    }

    /// Starts node `index` again (after a stop, a kill, or an exit) with the same
    /// configuration and database link; its SIP and RPC ports are new.
    pub fn restart_node(&mut self, index: usize) -> io::Result<()> {
        self.stop_node(index, Duration::from_secs(10));
        let daemon = self.launch(&self.nodes[index])?;
        self.nodes[index].daemon = Some(daemon);
        Ok(())
    }

    /// Stops node `index` (SIGTERM, killed after `limit`) and reaps it; its exit status, None
    /// if it had to be killed or was not running.
    pub fn stop_node(&mut self, index: usize, limit: Duration) -> Option<std::process::ExitStatus> {
        self.nodes[index].daemon.take()?.stop(limit)
    }

    /// Stops every node, each given `limit`.
    pub fn stop_all(&mut self, limit: Duration) {
        for index in 0..self.nodes.len() {
            self.stop_node(index, limit);
        }
    }

    pub fn node(&self, index: usize) -> &Node {
        &self.nodes[index]
    }

    pub fn node_mut(&mut self, index: usize) -> &mut Node {
        &mut self.nodes[index]
    }

    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The database URL of node `index`: the server's, through the node's [`TcpCut`].
    pub fn db_url_of(&self, index: usize) -> String {
        db_url_via(self.scheme, self.nodes[index].db_link.addr())
    }

    /// The database URL straight to the server (for the test's own reads and writes).
    pub fn db_url(&self) -> String {
        db_url_via(self.scheme, self.db_addr)
    }

    /// The last `lines` lines of every node's log, headed by its index, for failure messages.
    pub fn logs(&self, lines: usize) -> String {
        self.nodes
            .iter()
            .enumerate()
            .map(|(i, node)| format!("--- node {i} ---\n{}\n", node.log_tail(lines)))
            .collect()
    }

    fn launch(&self, node: &Node) -> io::Result<Uacregd> {
        let url = db_url_via(self.scheme, node.db_link.addr());
        Uacregd::start(&self.binary, node.dir.path(), &url, &node.extra_config)
    }
}

/// A database URL for the test server's database and user, at `addr` (the server, or a
/// [`TcpCut`] in front of it).
///
/// MySQL URLs say `prefer_socket=false`: the client library otherwise asks a loopback server
/// for its Unix socket and moves the connection there, past the proxy.
pub fn db_url_via(scheme: &str, addr: SocketAddr) -> String {
    let tcp_only = if scheme == "mysql" {
        "?prefer_socket=false"
    } else {
        ""
    };
    format!(
        "{scheme}://{}:{}@{addr}/{}{tcp_only}",
        dbserver::USER,
        dbserver::PASSWORD,
        dbserver::DATABASE
    )
}

/// The registrar account of row `i` (`user000042`); [`rows`] registers row `i` as this user.
pub fn user(i: usize) -> String {
    format!("user{i:06}")
}

/// The registrar accounts of [`rows`]`(count, …)`: `user000000` … with password
/// `pw-user000000` … (for `RegistrarConfig::users`).
pub fn accounts(count: usize) -> HashMap<String, String> {
    (0..count)
        .map(|i| (user(i), format!("pw-{}", user(i))))
        .collect()
}

/// `count` rows (`uuid000000` …) registering [`user`]`(i)` with the registrar at `registrar`,
/// asking for `expires` seconds.
pub fn rows(count: usize, registrar: SocketAddr, expires: u32) -> Vec<RawRow> {
    let mut rows = uacreg::demo::demo_rows(count, registrar);
    for row in &mut rows {
        row.expires = i64::from(expires);
    }
    rows
}

/// Writes `rows` to the database at `db_url` (creating the tables if needed). Blocks: from
/// async code, call it on a blocking thread.
pub fn write_rows(db_url: &str, rows: &[RawRow]) -> io::Result<()> {
    let mut store = Store::open(db_url).map_err(|e| io::Error::other(e.to_string()))?;
    store
        .insert(rows)
        .map_err(|e| io::Error::other(e.to_string()))
}

/// Waits until `registrar` holds a live binding for each of [`user`]`(0..count)`; how long that
/// took, or after `limit` which users still have none.
pub async fn wait_all_bound(
    registrar: &TestRegistrar,
    count: usize,
    limit: Duration,
) -> Result<Duration, String> {
    let began = Instant::now();
    loop {
        // Cheap check first; the per-user one only when the totals say it may be done.
        if registrar.bound_users() >= count {
            let missing: Vec<String> = (0..count)
                .map(user)
                .filter(|u| registrar.bindings(u).is_empty())
                .collect();
            if missing.is_empty() {
                return Ok(began.elapsed());
            }
        }
        if began.elapsed() >= limit {
            let missing: Vec<String> = (0..count)
                .map(user)
                .filter(|u| registrar.bindings(u).is_empty())
                .collect();
            return Err(format!(
                "{} of {count} users without a binding after {limit:?}: {:?}",
                missing.len(),
                &missing[..missing.len().min(10)]
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

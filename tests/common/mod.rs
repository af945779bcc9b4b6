//! Shared set-up for the gateway integration tests: a temporary SQLite file, a daemon on
//! ephemeral loopback ports, and bounded waiting.

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use uacreg::Config;
use uacreg::Daemon;
use uacreg::RpcClient;
use uacreg::store::{RawRow, Store};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let path =
            std::env::temp_dir().join(format!("uacreg-test-{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }

    pub fn db_url(&self) -> String {
        format!("sqlite://{}", self.0.join("uacreg.db").display())
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The registrar accounts `demo_rows` expects: `user000000` … with password `pw-user000000` ….
pub fn users(n: usize) -> std::collections::HashMap<String, String> {
    (0..n)
        .map(|i| (format!("user{i:06}"), format!("pw-user{i:06}")))
        .collect()
}

/// The in-repo registrar (realm `registrar.test`, MD5 with qop, on 127.0.0.1) with the accounts
/// of [`users`]`(n)`, bound to `bind` (`ip:port`, port 0 for any), TCP on the same port when
/// `tcp`.
pub async fn registrar_at(
    n: usize,
    bind: &str,
    tcp: bool,
) -> uacreg::testing::registrar::TestRegistrar {
    use uacreg::testing::registrar::{RegistrarConfig, TestRegistrar};
    TestRegistrar::start(RegistrarConfig {
        bind: bind.parse().expect("an ip:port to bind"),
        users: users(n),
        tcp,
        ..RegistrarConfig::default()
    })
    .await
    .expect("registrar starts")
}

/// [`registrar_at`] on 127.0.0.1, UDP only.
pub async fn registrar(n: usize) -> uacreg::testing::registrar::TestRegistrar {
    registrar_at(n, "127.0.0.1:0", false).await
}

/// Writes `rows` into a new database at `url`.
pub fn write_rows(url: &str, rows: &[RawRow]) {
    let mut store = Store::open(url).expect("open store");
    store.insert(rows).expect("insert rows");
}

/// Daemon configuration on ephemeral loopback ports; no un-REGISTER wait on stop unless asked.
pub fn test_config(db_url: &str) -> Config {
    let mut config = Config {
        db_url: db_url.to_string(),
        sip_listen: "127.0.0.1:0".parse().unwrap(),
        rpc_listen: "127.0.0.1:0".parse().unwrap(),
        metrics_listen: Some("127.0.0.1:0".parse().unwrap()),
        advertised_addr: "127.0.0.1:5062".into(),
        ..Config::default()
    };
    config.finish().unwrap();
    config
}

pub async fn start_daemon(db_url: &str) -> Daemon {
    Daemon::start(test_config(db_url))
        .await
        .expect("daemon starts")
}

/// Polls `check` every 20 ms until it returns true or `limit` passes.
pub async fn wait_until<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn registered_count(daemon: &Daemon) -> usize {
    daemon
        .gateway()
        .driver
        .status_counts()
        .await
        .expect("driver running")
        .get("registered")
        .copied()
        .unwrap_or(0)
}

pub fn rpc(daemon: &Daemon) -> RpcClient {
    RpcClient::new(&daemon.rpc_url()).expect("rpc client")
}

/// A plain HTTP GET of the metrics page.
pub async fn scrape(daemon: &uacreg::Daemon) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = daemon.metrics_addr().expect("metrics enabled");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).await.unwrap();
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
    text
}

pub fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| {
            line.strip_prefix(series)
                .and_then(|rest| rest.trim().parse().ok())
        })
        .unwrap_or_else(|| panic!("no {series} in:\n{text}"))
}

/// A throwaway CA and a server certificate for 127.0.0.1 signed by it.
pub fn test_pki(dir: &TempDir) -> (std::path::PathBuf, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let server_key = KeyPair::generate().unwrap();
    let server_params =
        CertificateParams::new(vec!["127.0.0.1".to_string(), "registrar.test".to_string()])
            .unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let server = server_params.signed_by(&server_key, &issuer).unwrap();
    let ca_file = dir.0.join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    (ca_file, server.pem(), server_key.serialize_pem())
}

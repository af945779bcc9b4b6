//! Kamailio's own `kamctl rpc` (from Debian's `kamailio` package) against uacregd's JSON-RPC FIFO
//! (`rpc_fifo`, jsonrpcs' convention): the request line goes into our FIFO, the answer comes back
//! on the FIFO kamctl made in /tmp; and what a stranger writes into the FIFO goes nowhere else.

mod common;
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{TempDir, registered_count, registrar, test_config, wait_until, write_rows};
use support::process::{find_program, require};

fn kamctl() -> Option<PathBuf> {
    let found = find_program("kamctl", &["/usr/sbin/kamctl", "/usr/local/sbin/kamctl"]);
    if found.is_none() {
        require("kamctl", false, || "not installed".to_string());
    }
    found
}

/// `RPCFIFOPATH=fifo kamctl rpc args…`: the JSON answer kamctl printed.
fn rpc(kamctl: &Path, fifo: &Path, args: &[String]) -> serde_json::Value {
    let out = Command::new(kamctl)
        .env("RPCFIFOPATH", fifo)
        .arg("rpc")
        .args(args)
        .output()
        .expect("kamctl runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    // The answer is pretty-printed over several lines, as jsonrpcs prints it.
    let json = text
        .find('{')
        .map(|start| &text[start..])
        .unwrap_or_else(|| {
            panic!(
                "kamctl printed no answer: {text}{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {json}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kamctl_rpc_runs_uac_commands_through_the_fifo() {
    let Some(kamctl) = kamctl() else {
        return;
    };
    let dir = TempDir::new("kamctl");
    let registrar = registrar(1).await;
    let rows = uacreg::demo::demo_rows(1, registrar.local_addr());
    let l_uuid = rows[0].l_uuid.clone();
    write_rows(&dir.db_url(), &rows);
    let fifo = dir.0.join("kamailio_rpc.fifo");
    let mut config = test_config(&dir.db_url());
    config.rpc_fifo = Some(fifo.clone());
    let daemon = uacreg::Daemon::start(config).await.unwrap();
    let registered = wait_until(Duration::from_secs(10), || async {
        registered_count(&daemon).await == 1
    })
    .await;
    assert!(registered, "the row never registered");

    let call = |args: Vec<&str>| {
        let (kamctl, fifo) = (kamctl.clone(), fifo.clone());
        let args: Vec<String> = args.into_iter().map(str::to_string).collect();
        async move {
            tokio::task::spawn_blocking(move || rpc(&kamctl, &fifo, &args))
                .await
                .unwrap()
        }
    };
    let dump = call(vec!["uac.reg_dump"]).await;
    let records = dump["result"].as_array().expect("a list");
    assert_eq!(records.len(), 1, "{dump}");
    assert_eq!(records[0]["l_uuid"], l_uuid.as_str());
    assert_eq!(records[0]["flags"], 20, "registered: ONLINE | INIT");
    assert_eq!(records[0]["auth_password"], "********");

    let info = call(vec!["uac.reg_info", "l_uuid", &l_uuid]).await;
    assert_eq!(info["result"]["state"], "registered", "{info}");
    let missing = call(vec!["uac.reg_info", "l_uuid", "no-such-row"]).await;
    assert_eq!(missing["error"]["code"], 404, "{missing}");
    assert_eq!(missing["error"]["message"], "Record not found");
    let reload = call(vec!["uac.reg_reload"]).await;
    assert_eq!(reload["result"]["unchanged"], 1, "{reload}");

    // A stranger's lines: not JSON, and a reply_name that climbs out of the reply directory.
    // Neither is answered anywhere, and the FIFO keeps serving.
    let target = dir.0.join("escaped");
    let stranger = fifo.clone();
    let escape = format!(
        "not json\n{{\"jsonrpc\":\"2.0\",\"method\":\"core.version\",\"reply_name\":\"../{}\",\"id\":1}}\n",
        target.strip_prefix("/").unwrap_or(&target).display()
    );
    tokio::task::spawn_blocking(move || std::fs::write(&stranger, escape))
        .await
        .unwrap()
        .unwrap();
    let version = call(vec!["core.version"]).await;
    assert!(
        version["result"]
            .as_str()
            .is_some_and(|v| v.starts_with("uacreg ")),
        "{version}"
    );
    assert!(
        !target.exists(),
        "an answer was written outside the reply directory"
    );
    daemon.stop().await;
}

//! `uac.reg_dump` of more rows than the driver hands out at once (2,000), while the rows are
//! registering, over each transport that streams it: HTTP JSON-RPC (chunked), BINRPC on the
//! control socket (spooled) and the JSON-RPC FIFO. Each must list every live row exactly once,
//! in l_uuid order, then the row that failed validation — the same answer the whole-table path
//! (a batch request) gives.

mod common;
mod support;

use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use common::{TempDir, registrar, test_config, write_rows};
use uacreg::fuzzing::binrpc::{self, Kind, Packet, Value};
use uacreg::store::RawRow;

/// Rows: two full driver slices and part of a third.
const ROWS: usize = 4_321;
/// The row that fails validation (a space in its domain); sorts after every `uuidNNNNNN`.
const BAD: &str = "zz-bad-domain";

/// A POST of `body` to the daemon's JSON-RPC port: (response head, de-chunked body).
fn post(addr: std::net::SocketAddr, body: &str) -> (String, Vec<u8>) {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    write!(
        stream,
        "POST /RPC HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).unwrap();
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a head");
    let head = String::from_utf8_lossy(&answer[..split]).to_ascii_lowercase();
    let mut rest = &answer[split + 4..];
    if !head.contains("transfer-encoding: chunked") {
        return (head, rest.to_vec());
    }
    let mut body = Vec::new();
    loop {
        let line = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("size line");
        let size = usize::from_str_radix(std::str::from_utf8(&rest[..line]).unwrap(), 16).unwrap();
        rest = &rest[line + 2..];
        if size == 0 {
            return (head, body);
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

/// The l_uuids of a JSON `result` array, in its order.
fn l_uuids(result: &serde_json::Value) -> Vec<String> {
    result
        .as_array()
        .expect("an array")
        .iter()
        .map(|r| r["l_uuid"].as_str().expect("an l_uuid").to_string())
        .collect()
}

/// `uac.reg_dump` over BINRPC on the Unix socket: each record's l_uuid and state.
fn binrpc_dump(socket: &Path) -> Vec<(String, String)> {
    let mut stream = std::os::unix::net::UnixStream::connect(socket).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let request = Packet {
        kind: Kind::Request,
        cookie: 0x1234,
        values: vec![Value::Str("uac.reg_dump".into())],
    };
    stream
        .write_all(&binrpc::encode(&request).unwrap())
        .unwrap();
    let limit = 64 * 1024 * 1024;
    let mut reply = Vec::new();
    let mut piece = vec![0u8; 64 * 1024];
    loop {
        if let Some(len) = binrpc::packet_len_within(&reply, limit).unwrap() {
            if reply.len() >= len {
                break;
            }
        }
        let read = stream.read(&mut piece).unwrap();
        assert!(read > 0, "the reply ended after {} bytes", reply.len());
        reply.extend_from_slice(&piece[..read]);
    }
    let packet = binrpc::decode_within(&reply, limit).unwrap();
    assert_eq!((packet.kind, packet.cookie), (Kind::Reply, 0x1234));
    packet
        .values
        .iter()
        .map(|value| {
            let Value::Struct(members) = value else {
                panic!("a record that is not a struct: {value:?}");
            };
            let member = |name: &str| {
                members
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, v)| v.to_string())
                    .unwrap_or_default()
            };
            (member("l_uuid"), member("state"))
        })
        .collect()
}

/// `uac.reg_dump` over the FIFO: the answer read from the reply FIFO `reply_name`.
fn fifo_dump(fifo: &Path, reply_dir: &Path, reply_name: &str) -> serde_json::Value {
    let reply = reply_dir.join(reply_name);
    let c_path = std::ffi::CString::new(reply.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo reads the NUL-terminated path we own.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
    let reader = std::thread::spawn(move || {
        // Blocks until the daemon opens the FIFO to answer; ends when it closes it.
        let mut text = String::new();
        std::fs::File::open(&reply)
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        text
    });
    let mut requests = std::fs::OpenOptions::new().write(true).open(fifo).unwrap();
    writeln!(
        requests,
        r#"{{"jsonrpc":"2.0","method":"uac.reg_dump","id":41,"reply_name":"{reply_name}"}}"#
    )
    .unwrap();
    let text = reader.join().unwrap();
    assert!(
        text.starts_with("{\n\t\"jsonrpc\":\t\"2.0\",\n\t\"result\":\t[{\n"),
        "{:.200}",
        text
    );
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{e}: …{}", &text[text.len().saturating_sub(200)..]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reg_dump_streams_every_row_once_over_http_binrpc_and_the_fifo() {
    let dir = TempDir::new("dump-stream");
    let registrar = registrar(ROWS).await;
    let mut rows = uacreg::demo::demo_rows(ROWS, registrar.local_addr());
    rows.push(RawRow::new(BAD, "nobody", "bad domain"));
    write_rows(&dir.db_url(), &rows);
    let socket = dir.0.join("kamailio_ctl");
    let fifo = dir.0.join("kamailio_rpc.fifo");
    let mut config = test_config(&dir.db_url());
    config.ctl_socket = Some(format!("unix:{}", socket.display()));
    config.rpc_fifo = Some(fifo.clone());
    config.rpc_fifo_reply_dir = dir.0.clone();
    let daemon = uacreg::Daemon::start(config).await.unwrap();
    let addr = daemon.rpc_addr();

    let mut expected: Vec<String> = rows[..ROWS].iter().map(|r| r.l_uuid.clone()).collect();
    expected.sort();
    expected.push(BAD.to_string());

    // HTTP: chunked, one record per row, live rows in order, then the invalid one.
    let (head, body) = tokio::task::spawn_blocking(move || {
        post(
            addr,
            r#"{"jsonrpc":"2.0","id":"d1","method":"uac.reg_dump","params":[]}"#,
        )
    })
    .await
    .unwrap();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("transfer-encoding: chunked"), "{head}");
    let answer: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(answer["id"], "d1");
    assert_eq!(answer["jsonrpc"], "2.0");
    assert_eq!(l_uuids(&answer["result"]), expected);
    assert_eq!(answer["result"][ROWS]["state"], "invalid");
    assert_eq!(answer["result"][0]["auth_password"], "********");

    // The same method in a batch goes the whole-answer way: the same records.
    let (_, body) = tokio::task::spawn_blocking(move || {
        post(
            addr,
            r#"[{"jsonrpc":"2.0","id":1,"method":"uac.reg_dump"}]"#,
        )
    })
    .await
    .unwrap();
    let batch: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(l_uuids(&batch[0]["result"]), expected);

    // BINRPC: one struct per record, spooled and sent as one reply.
    let ctl = socket.clone();
    let records = tokio::task::spawn_blocking(move || binrpc_dump(&ctl))
        .await
        .unwrap();
    let binrpc_uuids: Vec<String> = records.iter().map(|(l, _)| l.clone()).collect();
    assert_eq!(binrpc_uuids, expected);
    assert_eq!(records[ROWS].1, "invalid");

    // The FIFO, in jsonrpcs' pretty format.
    let (requests, replies) = (fifo.clone(), dir.0.clone());
    let answer = tokio::task::spawn_blocking(move || fifo_dump(&requests, &replies, "dump_reply"))
        .await
        .unwrap();
    assert_eq!(answer["id"], 41);
    assert_eq!(l_uuids(&answer["result"]), expected);

    // Every transport still answers other methods, and the daemon is still registering.
    let version: serde_json::Value = common::rpc(&daemon)
        .call("core.version", &[])
        .await
        .unwrap();
    assert!(version.as_str().unwrap().starts_with("uacreg "));
    daemon.stop().await;
}

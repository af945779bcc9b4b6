//! Kamailio's control socket (`ctl_socket`): BINRPC over a Unix stream socket, so `kamcmd -s
//! unix:/run/uacreg/kamailio_ctl uac.reg_dump` and the scripts built on it work unchanged.
//!
//! Why it calls the JSON-RPC methods: every method, its parameter checks, its answer and its
//! faults exist once (`server.rs`); a request here is decoded ([`super::binrpc`]), run on the
//! same [`RpcModule`] in-process, and its JSON answer written back as Kamailio writes the same
//! answer in BINRPC: a top-level list becomes one value per element (each `uac.reg_dump`
//! record a struct, as `kamcmd` prints them), an object a struct, a null the text Kamailio's
//! `ctl` sends for a NULL string. `uac.reg_dump` is the exception to "run on the module": its
//! reply at a million rows is hundreds of megabytes and BINRPC puts the body's length first, so
//! it is written a slice of rows at a time to an unnamed temporary file and sent from there.
//!
//! The socket file is the access control (mode 0660, as Kamailio's); connections at once are
//! bounded, each request is framed by [`super::binrpc::packet_len`] under its size limit, a
//! connection whose next request is not whole within [`IDLE`] (however it trickles in) is
//! closed, and so is one that does not take its answer within [`WRITE_LIMIT`]: a client cannot
//! hold one of the places for longer than that.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use jsonrpsee::RpcModule;
use jsonrpsee::core::params::ArrayParams;
use jsonrpsee::core::server::MethodsError;
use jsonrpsee::types::error::METHOD_NOT_FOUND_CODE as METHOD_NOT_FOUND;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio::sync::Semaphore;
use tracing::{debug, warn};

use super::binrpc::{self, Kind, Packet, Value};
use crate::gateway::Gateway;

/// Connections served at once; more wait for a place.
pub const MAX_CONNECTIONS: usize = 16;
/// A connection without a whole request for this long is closed.
pub const IDLE: Duration = Duration::from_secs(30);
/// A connection that has not taken its whole answer after this long is closed.
pub const WRITE_LIMIT: Duration = Duration::from_secs(30);

/// Where `ctl_socket` points: `unix:/path` (Kamailio's spelling) or a bare path.
pub fn socket_path(setting: &str) -> PathBuf {
    PathBuf::from(setting.strip_prefix("unix:").unwrap_or(setting))
}

/// `tcp:127.0.0.1:2049` (Kamailio's spelling): a loopback address to serve on instead of a Unix
/// socket. `None` for a Unix socket; an error for TCP on any other address, because BINRPC
/// carries no credentials and only the local machine may steer the daemon this way.
pub fn tcp_addr(setting: &str) -> Option<Result<std::net::SocketAddr, String>> {
    let addr = setting.strip_prefix("tcp:")?;
    Some(match addr.parse::<std::net::SocketAddr>() {
        Ok(addr) if addr.ip().is_loopback() => Ok(addr),
        Ok(addr) => Err(format!(
            "ctl_socket tcp:{addr}: only a loopback address (BINRPC has no authentication)"
        )),
        Err(err) => Err(format!("ctl_socket {setting}: {err}")),
    })
}

/// Serves BINRPC on TCP at the loopback `addr` until the returned task is aborted.
pub async fn serve_tcp(
    addr: std::net::SocketAddr,
    gateway: Arc<Gateway>,
) -> std::io::Result<(std::net::SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    Ok((local, spawn_accepting(listener, gateway)))
}

/// Serves BINRPC on the Unix socket at `path` until the returned task is aborted. A stale
/// socket file from an earlier run is replaced.
#[cfg(unix)]
pub async fn serve(
    path: &Path,
    gateway: Arc<Gateway>,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
        std::fs::remove_file(path)?;
    }
    let listener = tokio::net::UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    Ok(spawn_accepting(listener, gateway))
}

/// A listener of the control socket: Unix or TCP.
trait CtlListener: Send + Sync + 'static {
    type Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static;
    fn accept_stream(
        &self,
    ) -> impl std::future::Future<Output = std::io::Result<Self::Stream>> + Send;
}

#[cfg(unix)]
impl CtlListener for tokio::net::UnixListener {
    type Stream = tokio::net::UnixStream;
    async fn accept_stream(&self) -> std::io::Result<Self::Stream> {
        self.accept().await.map(|(stream, _)| stream)
    }
}

impl CtlListener for tokio::net::TcpListener {
    type Stream = tokio::net::TcpStream;
    async fn accept_stream(&self) -> std::io::Result<Self::Stream> {
        self.accept().await.map(|(stream, _)| stream)
    }
}

/// Accepts connections while fewer than [`MAX_CONNECTIONS`] are open, each served by
/// [`connection`], until the returned task is aborted.
fn spawn_accepting(
    listener: impl CtlListener,
    gateway: Arc<Gateway>,
) -> tokio::task::JoinHandle<()> {
    let module = Arc::new(super::server::methods(gateway.clone()));
    let places = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    tokio::spawn(async move {
        let mut backoff = crate::transport::admission::AcceptBackoff::new();
        loop {
            let Ok(place) = places.clone().acquire_owned().await else {
                return;
            };
            let socket = backoff
                .accept("ctl socket", || listener.accept_stream(), || {})
                .await;
            let module = module.clone();
            let gateway = gateway.clone();
            tokio::spawn(async move {
                if let Err(err) = connection(socket, &module, Some(&gateway)).await {
                    debug!("ctl connection ended: {err}");
                }
                drop(place);
            });
        }
    })
}

/// Requests on one connection, one after another, until the peer closes it. With `dumps`,
/// `uac.reg_dump` is spooled ([`spool_dump`]) rather than answered through `module` whole.
async fn connection<C: Send + Sync + 'static>(
    mut socket: impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    module: &RpcModule<C>,
    dumps: Option<&Arc<Gateway>>,
) -> std::io::Result<()> {
    let mut buffer = Vec::with_capacity(1024);
    loop {
        // One deadline for the whole request, not one per read: a byte every few seconds
        // does not keep the connection.
        let deadline = tokio::time::Instant::now() + IDLE;
        let len = loop {
            match binrpc::packet_len(&buffer) {
                Ok(Some(len)) if buffer.len() >= len => break len,
                Ok(_) => {}
                Err(err) => {
                    warn!("ctl socket: {err}; closing the connection");
                    return Ok(());
                }
            }
            let mut chunk = [0u8; 4096];
            let read = tokio::time::timeout_at(deadline, socket.read(&mut chunk))
                .await
                .map_err(|_| std::io::Error::other("no whole request in time"))??;
            if read == 0 {
                return Ok(());
            }
            buffer.extend_from_slice(&chunk[..read]);
        };
        let request: Vec<u8> = buffer.drain(..len).collect();
        let packet = match binrpc::decode(&request) {
            Ok(packet) => packet,
            Err(err) => {
                warn!("ctl socket: {err}; closing the connection");
                return Ok(());
            }
        };
        if let Some(gateway) = dumps.filter(|_| is_reg_dump(&packet)) {
            match spool_dump(gateway.clone(), packet.cookie).await {
                Ok(spooled) => {
                    send_spooled(&mut socket, spooled).await?;
                    continue;
                }
                Err(err) => {
                    warn!("ctl socket: uac.reg_dump: {err}");
                    let fault = Packet {
                        kind: Kind::Fault,
                        cookie: packet.cookie,
                        values: vec![Value::Int(500), Value::Str(err.to_string())],
                    };
                    let bytes = binrpc::encode(&fault).map_err(std::io::Error::other)?;
                    write_within(&mut socket, &bytes).await?;
                    continue;
                }
            }
        }
        let reply = answer(module, packet).await;
        let bytes = binrpc::encode(&reply).map_err(std::io::Error::other)?;
        write_within(&mut socket, &bytes).await?;
    }
}

async fn write_within(
    socket: &mut (impl tokio::io::AsyncWrite + Unpin),
    bytes: &[u8],
) -> std::io::Result<()> {
    tokio::time::timeout(WRITE_LIMIT, socket.write_all(bytes))
        .await
        .map_err(|_| std::io::Error::other("the answer was not taken in time"))?
}

/// A request for `uac.reg_dump` without parameters.
fn is_reg_dump(packet: &Packet) -> bool {
    packet.kind == Kind::Request
        && matches!(packet.values.as_slice(), [Value::Str(method)] if method == "uac.reg_dump")
}

/// Why a dump could not be spooled.
#[derive(Debug, thiserror::Error)]
enum SpoolError {
    #[error("the driver is gone")]
    DriverGone,
    #[error("spooling the answer to a temporary file: {0}")]
    File(#[from] std::io::Error),
    #[error(transparent)]
    Packet(#[from] binrpc::BinrpcError),
}

/// A reply written to an unnamed temporary file: its header, and the body to copy after it.
struct Spooled {
    header: Vec<u8>,
    body: tokio::fs::File,
}

/// `uac.reg_dump` as a BINRPC reply, one value per record, written to a temporary file a slice
/// at a time. Why a file: the header carries the body's length, which is known only at the end,
/// and at a million rows the body is hundreds of megabytes the daemon should not hold.
async fn spool_dump(gateway: Arc<Gateway>, cookie: u32) -> Result<Spooled, SpoolError> {
    let mut file = tokio::fs::File::from_std(tempfile::tempfile()?);
    let mut cursor = super::dump::DumpCursor::new(gateway);
    let mut body_len = 0usize;
    let mut buffer = Vec::new();
    while let Some(slice) = cursor.next().await.map_err(|_| SpoolError::DriverGone)? {
        buffer.clear();
        for view in cursor.views(&slice) {
            let json = serde_json::to_value(&view).map_err(std::io::Error::other)?;
            binrpc::encode_value(&mut buffer, &from_json(json));
        }
        file.write_all(&buffer).await?;
        body_len = body_len.saturating_add(buffer.len());
    }
    file.flush().await?;
    file.seek(std::io::SeekFrom::Start(0)).await?;
    Ok(Spooled {
        header: binrpc::header(Kind::Reply, cookie, body_len)?,
        body: file,
    })
}

/// Writes a spooled reply; each piece must be taken within [`WRITE_LIMIT`].
async fn send_spooled(
    socket: &mut (impl tokio::io::AsyncWrite + Unpin),
    mut spooled: Spooled,
) -> std::io::Result<()> {
    write_within(socket, &spooled.header).await?;
    let mut piece = vec![0u8; 256 * 1024];
    loop {
        let read = spooled.body.read(&mut piece).await?;
        if read == 0 {
            return Ok(());
        }
        write_within(socket, &piece[..read]).await?;
    }
}

/// Runs the request's method and builds the reply (or fault) packet.
async fn answer<C: Send + Sync + 'static>(module: &RpcModule<C>, request: Packet) -> Packet {
    let fault = |code: i32, message: &str| Packet {
        kind: Kind::Fault,
        cookie: request.cookie,
        values: vec![Value::Int(code), Value::Str(message.to_string())],
    };
    if request.kind != Kind::Request {
        return fault(400, "Not a request");
    }
    let mut values = request.values.iter();
    let Some(Value::Str(method)) = values.next() else {
        return fault(400, "No method name");
    };
    let mut params = ArrayParams::new();
    for value in values {
        if params.insert(to_json(value)).is_err() {
            return fault(400, "Invalid Parameters");
        }
    }
    match module.call::<_, serde_json::Value>(method, params).await {
        Ok(result) => Packet {
            kind: Kind::Reply,
            cookie: request.cookie,
            values: match result {
                serde_json::Value::Array(items) => items.into_iter().map(from_json).collect(),
                // Kamailio's enable, disable, refresh … add nothing to their reply.
                serde_json::Value::Object(members) if members.is_empty() => Vec::new(),
                other => vec![from_json(other)],
            },
        },
        // Kamailio's own text for a method it does not know (the name goes back only to the
        // client that sent it).
        Err(MethodsError::JsonRpc(err)) if err.code() == METHOD_NOT_FOUND => {
            fault(500, &format!("command {method} not found"))
        }
        Err(MethodsError::JsonRpc(err)) => fault(err.code(), err.message()),
        Err(err) => fault(500, &err.to_string()),
    }
}

fn to_json(value: &Value) -> serde_json::Value {
    match value {
        Value::Int(i) => serde_json::Value::from(*i),
        Value::Double(d) => serde_json::Value::from(*d),
        Value::Str(s) => serde_json::Value::from(s.as_str()),
        Value::Bytes(b) => serde_json::Value::from(String::from_utf8_lossy(b).into_owned()),
        Value::Array(items) => serde_json::Value::Array(items.iter().map(to_json).collect()),
        Value::Struct(members) => serde_json::Value::Object(
            members
                .iter()
                .map(|(name, value)| (name.clone(), to_json(value)))
                .collect(),
        ),
    }
}

/// What Kamailio's `ctl` module writes for a string that is not there (JSON's `null`).
const NULL_STRING: &str = "<null string>";

/// A JSON answer as Kamailio writes the same answer in BINRPC.
fn from_json(value: serde_json::Value) -> Value {
    convert(value, false)
}

/// Kamailio's BINRPC has no arrays inside structs (`kamcmd` refuses the packet): a list that is
/// a member is written as a struct keyed by position ("0", "1", …), which `kamcmd` prints.
fn convert(value: serde_json::Value, in_struct: bool) -> Value {
    match value {
        // Kamailio's ctl module sends a NULL string as this text, and kamcmd prints it.
        serde_json::Value::Null => Value::Str(NULL_STRING.into()),
        serde_json::Value::Bool(b) => Value::Int(i32::from(b)),
        serde_json::Value::Number(n) => match n.as_i64().map(i32::try_from) {
            Some(Ok(i)) => Value::Int(i),
            // Wider than BINRPC's integers (a Unix time in ms, a large counter): as text,
            // exactly, rather than wrapped.
            Some(Err(_)) => Value::Str(n.to_string()),
            None => match n.as_f64() {
                Some(f) if n.is_f64() => Value::Double(f),
                _ => Value::Str(n.to_string()),
            },
        },
        serde_json::Value::String(s) => Value::Str(s),
        serde_json::Value::Array(items) if in_struct => Value::Struct(
            items
                .into_iter()
                .enumerate()
                .map(|(i, item)| (i.to_string(), convert(item, true)))
                .collect(),
        ),
        serde_json::Value::Array(items) => {
            Value::Array(items.into_iter().map(|item| convert(item, false)).collect())
        }
        serde_json::Value::Object(members) => Value::Struct(
            members
                .into_iter()
                .map(|(name, value)| (name, convert(value, true)))
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `kamcmd method` as bytes, for a method name of `len` characters.
    fn request(method: &str) -> Vec<u8> {
        binrpc::encode(&Packet {
            kind: Kind::Request,
            cookie: 7,
            values: vec![Value::Str(method.into())],
        })
        .unwrap()
    }

    /// A request that trickles in a byte every 10 s never becomes whole: the connection is
    /// closed when the request's own deadline passes, not kept alive by each byte.
    #[tokio::test(start_paused = true)]
    async fn a_trickling_request_loses_its_place() {
        let module = RpcModule::new(());
        let (mut client, server) = tokio::io::duplex(4096);
        let started = tokio::time::Instant::now();
        let served = tokio::spawn(async move {
            let ended = connection(server, &module, None).await;
            (ended, started.elapsed())
        });
        let bytes = request(&"m".repeat(200));
        client.write_all(&bytes[..8]).await.unwrap();
        for byte in &bytes[8..] {
            tokio::time::sleep(Duration::from_secs(10)).await;
            if client.write_all(&[*byte]).await.is_err() {
                break;
            }
        }
        let (ended, held) = served.await.unwrap();
        assert!(ended.is_err(), "{ended:?}");
        assert!(
            held >= IDLE && held < IDLE + Duration::from_secs(1),
            "{held:?}"
        );
    }

    /// A client that asks and never reads its (large) answer is let go after WRITE_LIMIT.
    #[tokio::test(start_paused = true)]
    async fn an_answer_nobody_takes_frees_the_place() {
        let mut module = RpcModule::new(());
        module
            .register_method("big", |_, _, _| "x".repeat(200_000))
            .unwrap();
        let (mut client, server) = tokio::io::duplex(1024);
        let served = tokio::spawn(async move { connection(server, &module, None).await });
        client.write_all(&request("big")).await.unwrap();
        let started = tokio::time::Instant::now();
        let ended = served.await.unwrap();
        assert!(ended.is_err(), "{ended:?}");
        assert!(started.elapsed() >= WRITE_LIMIT, "{:?}", started.elapsed());
        drop(client);
    }

    #[test]
    fn answers_take_kamailios_binrpc_shapes() {
        let record = serde_json::json!({"l_uuid": "t1", "realm": null, "flags": 20,
            "last_success": 1_796_299_072_000_i64, "ok": true});
        assert_eq!(
            from_json(record),
            Value::Struct(vec![
                ("l_uuid".into(), Value::Str("t1".into())),
                ("realm".into(), Value::Str("<null string>".into())),
                ("flags".into(), Value::Int(20)),
                ("last_success".into(), Value::Str("1796299072000".into())),
                ("ok".into(), Value::Int(1)),
            ])
        );
        assert_eq!(
            from_json(serde_json::json!({"invalid": [], "codes": [200, 401]})),
            Value::Struct(vec![
                ("invalid".into(), Value::Struct(Vec::new())),
                (
                    "codes".into(),
                    Value::Struct(vec![
                        ("0".into(), Value::Int(200)),
                        ("1".into(), Value::Int(401)),
                    ])
                ),
            ])
        );
        assert_eq!(socket_path("unix:/run/x/ctl"), PathBuf::from("/run/x/ctl"));
        assert_eq!(socket_path("/run/x/ctl"), PathBuf::from("/run/x/ctl"));
        assert_eq!(tcp_addr("unix:/run/x/ctl"), None);
        assert_eq!(
            tcp_addr("tcp:127.0.0.1:2049"),
            Some(Ok("127.0.0.1:2049".parse().unwrap()))
        );
        assert!(matches!(tcp_addr("tcp:0.0.0.0:2049"), Some(Err(e)) if e.contains("loopback")));
    }
}

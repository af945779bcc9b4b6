//! Kamailio's JSON-RPC FIFO (`rpc_fifo`), the transport `kamctl rpc` uses: a named pipe that
//! takes one JSON-RPC request a line, each naming (`reply_name`) a FIFO in the reply directory
//! (`/tmp`, as jsonrpcs' `fifo_reply_dir`) that the client reads the answer from.
//!
//! Requests run on the same [`RpcModule`] as the HTTP server, so answers and faults are the
//! same. Anyone who can write the FIFO (mode 0660) chooses `reply_name`, so it is a bare file
//! name (no `/`, no leading dot), the file must already be a FIFO with a reader (we never create
//! or follow anything else; a symlink is refused), a line may be 64 KiB, and a reader that does
//! not take the answer within [`REPLY_TIMEOUT`] loses it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use jsonrpsee::RpcModule;
use jsonrpsee::core::params::ArrayParams;
use jsonrpsee::core::server::MethodsError;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::{debug, warn};

use crate::gateway::Gateway;

/// Longest request line.
pub const MAX_LINE: usize = 64 * 1024;
/// How long an answer waits for its reader.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// Creates the FIFO at `path` (mode 0660; a stale FIFO is replaced) and serves it until the
/// returned task is aborted. Answers go to FIFOs in `reply_dir`.
#[cfg(unix)]
pub fn serve(
    path: &Path,
    reply_dir: PathBuf,
    module: RpcModule<Gateway>,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_fifo()) {
        std::fs::remove_file(path)?;
    }
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::other("a NUL in the FIFO path"))?;
    // SAFETY: mkfifo reads the NUL-terminated path we own and creates the node; nothing else.
    if unsafe { libc::mkfifo(c_path.as_ptr(), 0o660) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    // Read-write, so the pipe never reports end-of-file between writers.
    let mut pipe = tokio::net::unix::pipe::OpenOptions::new()
        .read_write(true)
        .open_receiver(path)?;
    Ok(tokio::spawn(async move {
        let mut pending: Vec<u8> = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let read = match pipe.read(&mut chunk).await {
                Ok(0) => continue,
                Ok(n) => n,
                Err(err) => {
                    warn!("rpc FIFO: {err}; no longer served");
                    return;
                }
            };
            pending.extend_from_slice(&chunk[..read]);
            while let Some(end) = pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                handle_line(&line, &reply_dir, &module).await;
            }
            if pending.len() > MAX_LINE {
                warn!("rpc FIFO: a request line over {MAX_LINE} bytes, dropped");
                pending.clear();
            }
        }
    }))
}

async fn handle_line(line: &[u8], reply_dir: &Path, module: &RpcModule<Gateway>) {
    let Ok(request) = serde_json::from_slice::<serde_json::Value>(line) else {
        warn!("rpc FIFO: a line that is not JSON, dropped");
        return;
    };
    let Some(reply_name) = request["reply_name"].as_str().filter(|n| is_bare_name(n)) else {
        warn!("rpc FIFO: a request without a usable reply_name, dropped");
        return;
    };
    let answer = answer(&request, module).await;
    let target = reply_dir.join(reply_name);
    if let Err(err) = reply(&target, answer.to_string()).await {
        debug!("rpc FIFO: no answer to {}: {err}", target.display());
    }
}

/// A file name in the reply directory, nothing more.
fn is_bare_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// The JSON-RPC answer to `request`.
async fn answer(request: &serde_json::Value, module: &RpcModule<Gateway>) -> serde_json::Value {
    let id = request
        .get("id")
        .cloned()
        .unwrap_or(serde_json::Value::Null);
    let error = |code: i32, message: &str| serde_json::json!({"jsonrpc": "2.0", "error": {"code": code, "message": message}, "id": id});
    let Some(method) = request["method"].as_str() else {
        return error(-32600, "Invalid Request");
    };
    let mut params = ArrayParams::new();
    if let Some(values) = request["params"].as_array() {
        for value in values {
            if params.insert(value).is_err() {
                return error(-32602, "Invalid params");
            }
        }
    }
    match module.call::<_, serde_json::Value>(method, params).await {
        Ok(result) => serde_json::json!({"jsonrpc": "2.0", "result": result, "id": id}),
        Err(MethodsError::JsonRpc(err)) => error(err.code(), err.message()),
        Err(err) => error(500, &err.to_string()),
    }
}

/// Writes `text` to the FIFO at `path` if it is one and has a reader.
async fn reply(path: &Path, text: String) -> std::io::Result<()> {
    let meta = std::fs::symlink_metadata(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if !meta.file_type().is_fifo() {
            return Err(std::io::Error::other("not a FIFO"));
        }
    }
    // Non-blocking open: fails at once without a reader. kamctl starts its reader in the
    // background just before it writes the request, so the reader may not be there yet: tried
    // again for up to a second, as jsonrpcs does.
    let mut tries = 0;
    let mut sender = loop {
        match tokio::net::unix::pipe::OpenOptions::new().open_sender(path) {
            Ok(sender) => break sender,
            Err(err) if err.raw_os_error() == Some(libc::ENXIO) && tries < 100 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(err) => return Err(err),
        }
    };
    tokio::time::timeout(REPLY_TIMEOUT, async {
        sender.write_all(text.as_bytes()).await?;
        sender.write_all(b"\n").await
    })
    .await
    .map_err(|_| std::io::Error::other("the reader did not take the answer"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_names_are_bare_file_names() {
        assert!(is_bare_name("kamailio_receiver_1234"));
        for bad in ["", "../etc/passwd", "a/b", ".hidden", "x y", "/tmp/x"] {
            assert!(!is_bare_name(bad), "{bad}");
        }
    }
}

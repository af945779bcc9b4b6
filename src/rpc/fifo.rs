//! Kamailio's JSON-RPC FIFO (`rpc_fifo`), the transport `kamctl rpc` uses: a named pipe that
//! takes one JSON-RPC request a line, each naming (`reply_name`) a FIFO in the reply directory
//! (`/tmp`, as jsonrpcs' `fifo_reply_dir`) that the client reads the answer from.
//!
//! Requests run on the same [`RpcModule`] as the HTTP server, so answers and faults are the
//! same. Anyone who can write the FIFO (mode 0660) chooses `reply_name`, so it is a bare file
//! name (no `/`, no leading dot), the file must already be a FIFO with a reader (we never create
//! or follow anything else; a symlink is refused), a line may be 64 KiB, and a reader that does
//! not take the answer within [`REPLY_TIMEOUT`] loses it.
//!
//! Answers are printed the way jsonrpcs prints them (its default `pretty_format`): one member a
//! line, tab-indented, `"name":<TAB>value`, arrays on one line. kamctl's own commands read the
//! answer line by line (`kamctl uptime` greps for `uptime`), so a one-line answer would break
//! them. `uac.reg_dump` is written to the reply FIFO a slice of rows at a time in that same
//! format, never built whole.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use jsonrpsee::RpcModule;
use jsonrpsee::core::params::ArrayParams;
use jsonrpsee::core::server::MethodsError;
use jsonrpsee::types::error::METHOD_NOT_FOUND_CODE;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::{debug, warn};

use crate::gateway::Gateway;

/// Longest request line.
pub const MAX_LINE: usize = 64 * 1024;
/// How long an answer (or, for a streamed dump, each part of it) waits for its reader.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// Creates the FIFO at `path` (mode 0660; a stale FIFO is replaced) and serves it until the
/// returned task is aborted. Answers go to FIFOs in `reply_dir`.
#[cfg(unix)]
pub fn serve(
    path: &Path,
    reply_dir: PathBuf,
    gateway: Arc<Gateway>,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let module = super::server::methods(gateway.clone());
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
                handle_line(&line, &reply_dir, &module, &gateway).await;
            }
            if pending.len() > MAX_LINE {
                warn!("rpc FIFO: a request line over {MAX_LINE} bytes, dropped");
                pending.clear();
            }
        }
    }))
}

/// Why a FIFO line is dropped without an answer.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FifoLineError {
    #[error("a line that is not JSON")]
    NotJson,
    #[error("a request without a usable reply_name")]
    NoReplyName,
}

/// One FIFO line: the JSON-RPC request, and the bare file name its answer goes to.
pub fn parse_line(line: &[u8]) -> Result<(serde_json::Value, String), FifoLineError> {
    let request =
        serde_json::from_slice::<serde_json::Value>(line).map_err(|_| FifoLineError::NotJson)?;
    let reply_name = request["reply_name"]
        .as_str()
        .filter(|n| is_bare_name(n))
        .ok_or(FifoLineError::NoReplyName)?
        .to_string();
    Ok((request, reply_name))
}

async fn handle_line(
    line: &[u8],
    reply_dir: &Path,
    module: &RpcModule<Gateway>,
    gateway: &Arc<Gateway>,
) {
    let (request, reply_name) = match parse_line(line) {
        Ok(parsed) => parsed,
        Err(err) => {
            warn!("rpc FIFO: {err}, dropped");
            return;
        }
    };
    let target = reply_dir.join(reply_name.as_str());
    let sent = if is_reg_dump(&request) {
        stream_dump(&target, &request, gateway.clone()).await
    } else {
        let answer = kamailio_pretty(&answer(&request, module).await);
        match open_reply(&target).await {
            Ok(mut sender) => write_within(&mut sender, answer.as_bytes()).await,
            Err(err) => Err(err),
        }
    };
    if let Err(err) = sent {
        debug!("rpc FIFO: no answer to {}: {err}", target.display());
    }
}

/// A `uac.reg_dump` call without parameters.
fn is_reg_dump(request: &serde_json::Value) -> bool {
    request["method"].as_str() == Some("uac.reg_dump")
        && match &request["params"] {
            serde_json::Value::Null => true,
            serde_json::Value::Array(items) => items.is_empty(),
            _ => false,
        }
}

/// `uac.reg_dump` written to the reply FIFO a slice of registrations at a time, in jsonrpcs'
/// pretty format: at a million rows the answer is far too large to build first. If the driver
/// goes away mid-answer the answer stops there (incomplete JSON, not a wrong complete one).
async fn stream_dump(
    target: &Path,
    request: &serde_json::Value,
    gateway: Arc<Gateway>,
) -> std::io::Result<()> {
    let id = request
        .get("id")
        .cloned()
        .unwrap_or(serde_json::Value::Null);
    let mut sender = open_reply(target).await?;
    let mut cursor = super::dump::DumpCursor::new(gateway);
    let mut out = DUMP_HEAD.as_bytes().to_vec();
    let mut first = true;
    while let Some(slice) = cursor
        .next()
        .await
        .map_err(|_| std::io::Error::other("the driver is gone"))?
    {
        for view in cursor.views(&slice) {
            if !first {
                out.extend_from_slice(b", ");
            }
            first = false;
            pretty_record(&mut out, &view);
        }
        write_within(&mut sender, &out).await?;
        out.clear();
    }
    out.extend_from_slice(b"],\n\t\"id\":\t");
    out.extend_from_slice(kamailio_pretty(&id).as_bytes());
    out.extend_from_slice(b"\n}");
    write_within(&mut sender, &out).await
}

/// What jsonrpcs writes before the first record of a `result` array.
const DUMP_HEAD: &str = "{\n\t\"jsonrpc\":\t\"2.0\",\n\t\"result\":\t[";

/// One record as jsonrpcs prints an element of the top-level `result` array (two levels deep).
fn pretty_record(out: &mut Vec<u8>, record: &impl serde::Serialize) {
    let formatter = JsonrpcsFormatter {
        depth: 2,
        has_members: Vec::new(),
    };
    let mut serializer = serde_json::Serializer::with_formatter(out, formatter);
    // Writing into a Vec cannot fail, and a record has no map with non-string keys.
    let _ = record.serialize(&mut serializer);
}

/// A file name in the reply directory, nothing more.
pub fn is_bare_name(name: &str) -> bool {
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
        // jsonrpcs' own answer to a method it does not know.
        Err(MethodsError::JsonRpc(err)) if err.code() == METHOD_NOT_FOUND_CODE => {
            error(500, "Method Not Found")
        }
        Err(MethodsError::JsonRpc(err)) => error(err.code(), err.message()),
        Err(err) => error(500, &err.to_string()),
    }
}

/// Opens the FIFO at `path` for the answer, if it is one and has a reader.
async fn open_reply(path: &Path) -> std::io::Result<tokio::net::unix::pipe::Sender> {
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
    loop {
        match tokio::net::unix::pipe::OpenOptions::new().open_sender(path) {
            Ok(sender) => return Ok(sender),
            Err(err) if err.raw_os_error() == Some(libc::ENXIO) && tries < 100 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(err) => return Err(err),
        }
    }
}

/// Writes `bytes` (no newline after an answer: jsonrpcs writes none); a reader that does not
/// take them within [`REPLY_TIMEOUT`] loses the answer.
async fn write_within(
    sender: &mut tokio::net::unix::pipe::Sender,
    bytes: &[u8],
) -> std::io::Result<()> {
    tokio::time::timeout(REPLY_TIMEOUT, sender.write_all(bytes))
        .await
        .map_err(|_| std::io::Error::other("the reader did not take the answer"))?
}

/// `value` as jsonrpcs prints it.
pub fn kamailio_pretty(value: &serde_json::Value) -> String {
    let mut out = Vec::new();
    let mut serializer =
        serde_json::Serializer::with_formatter(&mut out, JsonrpcsFormatter::default());
    // Writing a Value into a Vec cannot fail.
    let _ = serde::Serialize::serialize(value, &mut serializer);
    String::from_utf8(out).unwrap_or_default()
}

/// jsonrpcs' pretty printing (srjson's): an object opens with `{` and a newline, each member on
/// a line of its own indented one tab deeper than the object, `"name":<TAB>value`, members
/// separated by `,` and a newline, the closing `}` on a line at the object's own depth (an
/// empty object is `{`, newline, `}`); an array is one line, `[a, b]`, its items one level
/// deeper than the array.
#[derive(Default)]
struct JsonrpcsFormatter {
    depth: usize,
    /// For each open object: whether it has had a member.
    has_members: Vec<bool>,
}

impl JsonrpcsFormatter {
    fn indent<W: ?Sized + std::io::Write>(
        &self,
        writer: &mut W,
        depth: usize,
    ) -> std::io::Result<()> {
        for _ in 0..depth {
            writer.write_all(b"\t")?;
        }
        Ok(())
    }
}

impl serde_json::ser::Formatter for JsonrpcsFormatter {
    fn begin_array<W: ?Sized + std::io::Write>(&mut self, writer: &mut W) -> std::io::Result<()> {
        self.depth += 1;
        writer.write_all(b"[")
    }

    fn end_array<W: ?Sized + std::io::Write>(&mut self, writer: &mut W) -> std::io::Result<()> {
        self.depth = self.depth.saturating_sub(1);
        writer.write_all(b"]")
    }

    fn begin_array_value<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first {
            Ok(())
        } else {
            writer.write_all(b", ")
        }
    }

    fn begin_object<W: ?Sized + std::io::Write>(&mut self, writer: &mut W) -> std::io::Result<()> {
        self.depth += 1;
        self.has_members.push(false);
        writer.write_all(b"{\n")
    }

    fn end_object<W: ?Sized + std::io::Write>(&mut self, writer: &mut W) -> std::io::Result<()> {
        self.depth = self.depth.saturating_sub(1);
        if self.has_members.pop().unwrap_or(false) {
            writer.write_all(b"\n")?;
        }
        self.indent(writer, self.depth)?;
        writer.write_all(b"}")
    }

    fn begin_object_key<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if let Some(has) = self.has_members.last_mut() {
            *has = true;
        }
        if !first {
            writer.write_all(b",\n")?;
        }
        self.indent(writer, self.depth)
    }

    fn begin_object_value<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
    ) -> std::io::Result<()> {
        writer.write_all(b":\t")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Byte for byte what Kamailio 5.6's jsonrpcs wrote for these answers (captured from
    /// `uac.reg_dump`, `uac.reg_reload` and a fault).
    #[test]
    fn answers_print_as_jsonrpcs_prints_them() {
        let dump = serde_json::json!({"jsonrpc": "2.0", "result": [
            {"l_uuid": "uuid000001", "expires": 3600, "socket": null},
            {"l_uuid": "uuid000002", "expires": 3600, "socket": null}], "id": 7});
        assert_eq!(
            kamailio_pretty(&dump),
            "{\n\t\"jsonrpc\":\t\"2.0\",\n\t\"result\":\t[{\n\t\t\t\"l_uuid\":\t\"uuid000001\",\n\
             \t\t\t\"expires\":\t3600,\n\t\t\t\"socket\":\tnull\n\t\t}, {\n\t\t\t\"l_uuid\":\t\
             \"uuid000002\",\n\t\t\t\"expires\":\t3600,\n\t\t\t\"socket\":\tnull\n\t\t}],\n\t\"id\":\t7\n}"
        );
        let reload = serde_json::json!({"jsonrpc": "2.0", "result": {}, "id": 7});
        assert_eq!(
            kamailio_pretty(&reload),
            "{\n\t\"jsonrpc\":\t\"2.0\",\n\t\"result\":\t{\n\t},\n\t\"id\":\t7\n}"
        );
        let fault = serde_json::json!({"jsonrpc": "2.0",
            "error": {"code": 404, "message": "Record not found"}, "id": 7});
        assert_eq!(
            kamailio_pretty(&fault),
            "{\n\t\"jsonrpc\":\t\"2.0\",\n\t\"error\":\t{\n\t\t\"code\":\t404,\n\t\t\"message\":\t\
             \"Record not found\"\n\t},\n\t\"id\":\t7\n}"
        );
        let methods = serde_json::json!({"jsonrpc": "2.0", "result": ["a.b", "c.d"], "id": 7});
        assert_eq!(
            kamailio_pretty(&methods),
            "{\n\t\"jsonrpc\":\t\"2.0\",\n\t\"result\":\t[\"a.b\", \"c.d\"],\n\t\"id\":\t7\n}"
        );
    }

    /// The streamed dump's pieces put together are what the whole answer prints as.
    #[test]
    fn a_streamed_dump_prints_as_the_whole_answer() {
        let records = [
            serde_json::json!({"l_uuid": "uuid000001", "expires": 3600, "socket": null,
                "nested": {"a": [1, 2]}}),
            serde_json::json!({"l_uuid": "uuid000002", "expires": 3600, "socket": null}),
        ];
        for count in 0..=records.len() {
            let mut streamed = DUMP_HEAD.as_bytes().to_vec();
            for (i, record) in records[..count].iter().enumerate() {
                if i > 0 {
                    streamed.extend_from_slice(b", ");
                }
                pretty_record(&mut streamed, record);
            }
            streamed.extend_from_slice(b"],\n\t\"id\":\t");
            streamed.extend_from_slice(kamailio_pretty(&serde_json::json!(7)).as_bytes());
            streamed.extend_from_slice(b"\n}");
            let whole = serde_json::json!({"jsonrpc": "2.0", "result": records[..count], "id": 7});
            assert_eq!(
                String::from_utf8(streamed).unwrap(),
                kamailio_pretty(&whole)
            );
        }
        assert!(is_reg_dump(
            &serde_json::json!({"method": "uac.reg_dump", "params": []})
        ));
        assert!(is_reg_dump(&serde_json::json!({"method": "uac.reg_dump"})));
        assert!(!is_reg_dump(
            &serde_json::json!({"method": "uac.reg_dump", "params": ["x"]})
        ));
        assert!(!is_reg_dump(
            &serde_json::json!({"method": "uac.reg_info", "params": []})
        ));
    }

    #[test]
    fn reply_names_are_bare_file_names() {
        assert!(is_bare_name("kamailio_receiver_1234"));
        for bad in ["", "../etc/passwd", "a/b", ".hidden", "x y", "/tmp/x"] {
            assert!(!is_bare_name(bad), "{bad}");
        }
    }
}

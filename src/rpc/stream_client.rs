//! A JSON-RPC client for answers too large to hold: `uac.reg_dump` of a million rows.
//!
//! [`super::RpcClient`] (jsonrpsee) reads a whole answer before it returns: about 700 MB, then
//! the values built from it, for a million-row `uac.reg_dump`. This client posts the same
//! request (same URL, same `Authorization: Bearer` token) over an HTTP/1.1 connection of its own
//! (hyper) and feeds the body, chunked or with a `Content-Length`, to [`ArrayAnswerParser`] as
//! it arrives; each element of `result` is deserialized and handed to the caller before the
//! next one is read. It holds one element and hyper's bounded read buffer, whatever the size of
//! the table.
//!
//! Timeouts bound connecting and every wait for the next bytes, not the whole answer, which may
//! take minutes to stream and is still alive while bytes come.

use std::io;
use std::time::Duration;

use http::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use http::{HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use super::array_answer::{AnswerEnd, ArrayAnswerParser, Fault, MalformedAnswer};

/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the answer may go without a byte: before its head (the server may read a table
/// first), and between any two pieces of its body.
const STALL_TIMEOUT: Duration = Duration::from_secs(120);
/// How much of a refusal's body (a 401's text) is read and shown.
const REFUSAL_TEXT_BYTES: usize = 4096;
/// The id of every request: one request per connection.
const REQUEST_ID: u64 = 1;

/// Why a streamed call did not end with a whole `result`.
#[derive(Debug, thiserror::Error)]
pub enum StreamingCallError {
    #[error("{url:?} is not a usable RPC URL: {reason}")]
    BadUrl { url: String, reason: &'static str },
    #[error("the token is not a valid header value")]
    BadToken,
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: String,
        #[source]
        source: io::Error,
    },
    /// The HTTP exchange failed before the answer's head arrived.
    #[error("the request failed: {0}")]
    Exchange(#[source] hyper::Error),
    #[error("no byte of the answer for {} s, after {records} records", .waited.as_secs())]
    Stalled { waited: Duration, records: u64 },
    /// The server answered with another status than 200 (401: no token or a wrong one).
    #[error("HTTP {status}: {body}")]
    Status { status: StatusCode, body: String },
    /// The server answered with a JSON-RPC error object.
    #[error("{0}")]
    Fault(Fault),
    #[error("the answer broke off after {records} records: {reason}")]
    Truncated { records: u64, reason: String },
    #[error("the answer is malformed after {records} records: {source}")]
    Malformed {
        records: u64,
        #[source]
        source: MalformedAnswer,
    },
    #[error("element {index} of the result is not of the expected shape: {source}")]
    Element {
        index: u64,
        #[source]
        source: serde_json::Error,
    },
    /// The caller's handler of an element failed (printing it, say).
    #[error("{0}")]
    Handler(#[source] io::Error),
}

impl StreamingCallError {
    /// The server could not be reached or stopped answering: no answer to show.
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            StreamingCallError::Connect { .. }
                | StreamingCallError::Exchange(_)
                | StreamingCallError::Stalled { .. }
        )
    }
}

/// Calls methods whose `result` is an array and hands out its elements one by one.
pub struct StreamingClient {
    /// `host:port` to connect to (an IPv6 host without its brackets).
    host: String,
    port: u16,
    /// The Host header: the URL's authority as written.
    authority: HeaderValue,
    path: Uri,
    authorization: Option<HeaderValue>,
    /// [`STALL_TIMEOUT`], shorter in tests.
    stall_timeout: Duration,
}

impl StreamingClient {
    /// `url` like `http://127.0.0.1:5063/RPC`; with a token, every request carries
    /// `Authorization: Bearer <token>`.
    pub fn with_token(
        url: &str,
        token: Option<&str>,
    ) -> Result<StreamingClient, StreamingCallError> {
        let bad = |reason| StreamingCallError::BadUrl {
            url: url.to_string(),
            reason,
        };
        let uri: Uri = url.parse().map_err(|_| bad("not a URL"))?;
        if uri.scheme_str() != Some("http") {
            return Err(bad("only http:// is spoken"));
        }
        let authority = uri.authority().ok_or_else(|| bad("no host"))?;
        let host = authority.host();
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let path = uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .parse()
            .map_err(|_| bad("not a URL path"))?;
        let authorization = match token.filter(|t| !t.is_empty()) {
            Some(token) => Some(
                HeaderValue::from_str(&format!("Bearer {token}"))
                    .map_err(|_| StreamingCallError::BadToken)?,
            ),
            None => None,
        };
        Ok(StreamingClient {
            host: host.to_string(),
            port: authority.port_u16().unwrap_or(80),
            authority: HeaderValue::from_str(authority.as_str()).map_err(|_| bad("bad host"))?,
            path,
            authorization,
            stall_timeout: STALL_TIMEOUT,
        })
    }

    /// Calls `method` with positional string parameters; hands each element of the `result`
    /// array to `each` as a `T` as soon as it is read, and returns how many there were.
    pub async fn for_each<T: DeserializeOwned>(
        &self,
        method: &str,
        params: &[String],
        mut each: impl FnMut(T) -> io::Result<()>,
    ) -> Result<u64, StreamingCallError> {
        let (mut body, _connection) = self.send(method, params).await?;
        let mut parser = ArrayAnswerParser::new(REQUEST_ID);
        while let Some(data) = next_data(&mut body, self.stall_timeout, parser.elements()).await? {
            let mut input = &data[..];
            while !input.is_empty() {
                let records = parser.elements();
                let (used, element) = parser
                    .feed(input)
                    .map_err(|source| StreamingCallError::Malformed { records, source })?;
                input = &input[used..];
                if let Some(element) = element {
                    let element = serde_json::from_slice(element).map_err(|source| {
                        StreamingCallError::Element {
                            index: records,
                            source,
                        }
                    })?;
                    each(element).map_err(StreamingCallError::Handler)?;
                }
            }
        }
        let records = parser.elements();
        match parser.finish() {
            Ok(AnswerEnd::Result { elements }) => Ok(elements),
            Ok(AnswerEnd::Fault(fault)) => Err(StreamingCallError::Fault(fault)),
            Err(MalformedAnswer::EndedEarly) => Err(StreamingCallError::Truncated {
                records,
                reason: "the body ended before the answer's closing `}`".into(),
            }),
            Err(source) => Err(StreamingCallError::Malformed { records, source }),
        }
    }

    /// Connects, sends the request and waits for the answer's head: its body if the status is
    /// 200, with the task that drives the connection (aborted when dropped).
    async fn send(
        &self,
        method: &str,
        params: &[String],
    ) -> Result<(Incoming, ConnectionTask), StreamingCallError> {
        let addr = format!("{}:{}", self.host, self.port);
        let connect = |source| StreamingCallError::Connect {
            addr: addr.clone(),
            source,
        };
        let stream = tokio::time::timeout(
            CONNECT_TIMEOUT,
            TcpStream::connect((self.host.as_str(), self.port)),
        )
        .await
        .map_err(|_| connect(io::Error::new(io::ErrorKind::TimedOut, "timed out")))?
        .map_err(connect)?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(StreamingCallError::Exchange)?;
        let connection = ConnectionTask(tokio::spawn(async move {
            // Its errors reach us through the request and the body.
            let _ = connection.await;
        }));
        let request = serde_json::json!({
            "jsonrpc": "2.0",
            "id": REQUEST_ID,
            "method": method,
            "params": params,
        });
        let mut request = Request::new(Full::new(Bytes::from(request.to_string())));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = self.path.clone();
        let headers = request.headers_mut();
        headers.insert(HOST, self.authority.clone());
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(authorization) = &self.authorization {
            headers.insert(AUTHORIZATION, authorization.clone());
        }
        let response = tokio::time::timeout(self.stall_timeout, sender.send_request(request))
            .await
            .map_err(|_| StreamingCallError::Stalled {
                waited: self.stall_timeout,
                records: 0,
            })?
            .map_err(StreamingCallError::Exchange)?;
        let (head, body) = response.into_parts();
        if head.status != StatusCode::OK {
            return Err(StreamingCallError::Status {
                status: head.status,
                body: refusal_text(body, self.stall_timeout).await,
            });
        }
        Ok((body, connection))
    }
}

/// The next data of the body (trailers skipped); None at its end.
async fn next_data(
    body: &mut Incoming,
    stall_timeout: Duration,
    records: u64,
) -> Result<Option<Bytes>, StreamingCallError> {
    loop {
        let frame = tokio::time::timeout(stall_timeout, body.frame())
            .await
            .map_err(|_| StreamingCallError::Stalled {
                waited: stall_timeout,
                records,
            })?;
        match frame {
            None => return Ok(None),
            Some(Err(err)) => {
                return Err(StreamingCallError::Truncated {
                    records,
                    reason: err.to_string(),
                });
            }
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    return Ok(Some(data));
                }
            }
        }
    }
}

/// The start of a refusal's body, as text on one line (what a 401 says, say).
async fn refusal_text(mut body: Incoming, stall_timeout: Duration) -> String {
    let mut text = Vec::new();
    while text.len() < REFUSAL_TEXT_BYTES {
        match next_data(&mut body, stall_timeout, 0).await {
            Ok(Some(data)) => text.extend_from_slice(&data),
            _ => break,
        }
    }
    text.truncate(REFUSAL_TEXT_BYTES);
    let text = String::from_utf8_lossy(&text);
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The task that drives a connection, ended with the call.
struct ConnectionTask(JoinHandle<()>);

impl Drop for ConnectionTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    async fn serve_once(pieces: Vec<Vec<u8>>) -> (String, JoinHandle<String>) {
        serve_once_holding(pieces, Duration::ZERO).await
    }

    /// A server for one request: reads it whole, then writes `pieces` one by one (each flushed,
    /// a little apart), waits `hold` and closes. Returns its URL and the request it read.
    async fn serve_once_holding(
        pieces: Vec<Vec<u8>>,
        hold: Duration,
    ) -> (String, JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}/RPC", listener.local_addr().expect("address"));
        let server = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.expect("accept");
            let mut request = Vec::new();
            let mut buf = [0; 4096];
            loop {
                let n = stream.read(&mut buf).await.expect("read");
                request.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&request).to_string();
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let length = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length: "))
                        .and_then(|l| l.parse::<usize>().ok())
                        .expect("a content-length");
                    if body.len() >= length || n == 0 {
                        break;
                    }
                }
            }
            for piece in pieces {
                if stream.write_all(&piece).await.is_err() {
                    break;
                }
                let _ = stream.flush().await;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            tokio::time::sleep(hold).await;
            let _ = stream.shutdown().await;
            String::from_utf8_lossy(&request).to_string()
        });
        (url, server)
    }

    /// `body` in chunks of 1 to 7 bytes, in the chunked transfer coding, each chunk written
    /// on its own; `last` ends it properly.
    fn chunked(head: &str, body: &str, last: bool) -> Vec<Vec<u8>> {
        let mut pieces = vec![format!("{head}transfer-encoding: chunked\r\n\r\n").into_bytes()];
        let mut rest = body.as_bytes();
        let mut size = 0;
        while !rest.is_empty() {
            size = size % 7 + 1;
            let (chunk, tail) = rest.split_at(size.min(rest.len()));
            let mut piece = format!("{:x}\r\n", chunk.len()).into_bytes();
            piece.extend_from_slice(chunk);
            piece.extend_from_slice(b"\r\n");
            pieces.push(piece);
            rest = tail;
        }
        if last {
            pieces.push(b"0\r\n\r\n".to_vec());
        }
        pieces
    }

    const OK: &str = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n";
    const DUMP: &str =
        r#"{"jsonrpc":"2.0","result":[{"l_uuid":"a"},{"l_uuid":"b"},{"l_uuid":"c"}],"id":1}"#;

    /// Calls `uac.reg_dump` on `url`; returns the l_uuids seen and how the call ended.
    async fn dump(
        url: &str,
        token: Option<&str>,
    ) -> (Vec<String>, Result<u64, StreamingCallError>) {
        let client = StreamingClient::with_token(url, token).expect("a client");
        let mut seen = Vec::new();
        let end = client
            .for_each("uac.reg_dump", &[], |record: Value| {
                seen.push(record["l_uuid"].as_str().unwrap_or_default().to_string());
                Ok(())
            })
            .await;
        (seen, end)
    }

    #[tokio::test]
    async fn a_chunked_answer_is_read_record_by_record() {
        let (url, server) = serve_once(chunked(OK, DUMP, true)).await;
        let (seen, end) = dump(&url, Some("s3cret")).await;
        assert_eq!(seen, ["a", "b", "c"]);
        assert_eq!(end.expect("whole"), 3);
        let request = server.await.expect("served").to_ascii_lowercase();
        assert!(request.starts_with("post /rpc http/1.1\r\n"), "{request}");
        assert!(
            request.contains("\r\nauthorization: bearer s3cret\r\n"),
            "{request}"
        );
        assert!(request.contains(r#""method":"uac.reg_dump""#), "{request}");
    }

    #[tokio::test]
    async fn an_answer_with_a_content_length() {
        let head = format!("{OK}content-length: {}\r\n\r\n", DUMP.len());
        let pieces = [head.as_bytes(), DUMP.as_bytes()]
            .iter()
            .flat_map(|part| part.chunks(5).map(<[u8]>::to_vec))
            .collect();
        let (url, _server) = serve_once(pieces).await;
        let (seen, end) = dump(&url, None).await;
        assert_eq!(seen, ["a", "b", "c"]);
        assert_eq!(end.expect("whole"), 3);
    }

    #[tokio::test]
    async fn a_body_cut_off_is_an_error_after_the_records_before() {
        let cut = &DUMP[..DUMP.find(r#"{"l_uuid":"c"#).expect("c") + 5];
        // The connection closes inside a chunk.
        let (url, _server) = serve_once(chunked(OK, cut, false)).await;
        let (seen, end) = dump(&url, None).await;
        assert_eq!(seen, ["a", "b"]);
        let err = end.expect_err("cut off");
        assert!(
            matches!(err, StreamingCallError::Truncated { records: 2, .. }),
            "{err}"
        );
        // The HTTP body is whole, the JSON in it is not.
        let (url, _server) = serve_once(chunked(OK, cut, true)).await;
        let (_, end) = dump(&url, None).await;
        let err = end.expect_err("cut off");
        assert!(
            matches!(err, StreamingCallError::Truncated { records: 2, .. }),
            "{err}"
        );
        assert!(!err.is_unreachable());
    }

    #[tokio::test]
    async fn an_error_answer_is_a_fault() {
        let answer = r#"{"jsonrpc":"2.0","error":{"code":500,"message":"Reload failed","data":"database down"},"id":1}"#;
        let (url, _server) = serve_once(chunked(OK, answer, true)).await;
        let (seen, end) = dump(&url, None).await;
        assert!(seen.is_empty());
        let err = end.expect_err("a fault");
        assert_eq!(err.to_string(), "error 500: Reload failed: database down");
        assert!(matches!(err, StreamingCallError::Fault(_)), "{err:?}");
    }

    #[tokio::test]
    async fn a_refusal_shows_its_status_and_text() {
        let text = "missing or wrong RPC token";
        let response = format!(
            "HTTP/1.1 401 Unauthorized\r\ncontent-length: {}\r\n\r\n{text}",
            text.len()
        );
        let (url, _server) = serve_once(vec![response.into_bytes()]).await;
        let (_, end) = dump(&url, None).await;
        let err = end.expect_err("refused");
        assert_eq!(
            err.to_string(),
            "HTTP 401 Unauthorized: missing or wrong RPC token"
        );
    }

    #[tokio::test]
    async fn a_record_of_the_wrong_shape_is_an_error() {
        let answer = r#"{"id":1,"result":[{"l_uuid":"a"},7]}"#;
        let (url, _server) = serve_once(chunked(OK, answer, true)).await;
        let client = StreamingClient::with_token(&url, None).expect("a client");
        let end = client
            .for_each("uac.reg_dump", &[], |_: serde_json::Map<String, Value>| {
                Ok(())
            })
            .await;
        let err = end.expect_err("not a record");
        assert!(
            matches!(err, StreamingCallError::Element { index: 1, .. }),
            "{err}"
        );
    }

    #[tokio::test]
    async fn nobody_listening_is_unreachable() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}/RPC", listener.local_addr().expect("address"));
        drop(listener);
        let (_, end) = dump(&url, None).await;
        let err = end.expect_err("nobody there");
        assert!(matches!(err, StreamingCallError::Connect { .. }), "{err}");
        assert!(err.is_unreachable());
    }

    #[tokio::test]
    async fn a_server_that_stops_sending_is_given_up() {
        // The connection stays open, silent, past the timeout.
        let pieces = chunked(OK, &DUMP[..30], false);
        let (url, _server) = serve_once_holding(pieces, Duration::from_secs(10)).await;
        let mut client = StreamingClient::with_token(&url, None).expect("a client");
        client.stall_timeout = Duration::from_millis(300);
        let started = std::time::Instant::now();
        let end = client
            .for_each("uac.reg_dump", &[], |_: Value| Ok(()))
            .await;
        let err = end.expect_err("stalled");
        assert!(matches!(err, StreamingCallError::Stalled { .. }), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn urls() {
        let client =
            StreamingClient::with_token("http://[::1]:5063/RPC?x=1", Some("t")).expect("a client");
        assert_eq!((client.host.as_str(), client.port), ("::1", 5063));
        assert_eq!(client.authority, "[::1]:5063");
        assert_eq!(client.path, "/RPC?x=1");
        let client = StreamingClient::with_token("http://localhost", None).expect("a client");
        assert_eq!((client.host.as_str(), client.port), ("localhost", 80));
        assert_eq!(client.path, "/");
        assert!(client.authorization.is_none());
        for bad in ["https://127.0.0.1/RPC", "127.0.0.1:5063", "http:///RPC"] {
            assert!(
                StreamingClient::with_token(bad, None).is_err(),
                "{bad} accepted"
            );
        }
    }
}

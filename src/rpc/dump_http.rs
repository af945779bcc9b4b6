//! `uac.reg_dump` over HTTP as a streamed answer.
//!
//! jsonrpsee renders every answer into one buffer before it sends a byte; at 1,000,000 rows that
//! buffer is ~700 MB on top of a copy of every registration. This middleware sits behind the
//! token check and in front of jsonrpsee: a single `uac.reg_dump` call is answered here, a slice
//! of registrations at a time ([`DumpCursor`]) as HTTP chunks, each written before the next
//! slice is copied; every other request goes on to jsonrpsee unchanged. The JSON is Kamailio's
//! shape, `{"jsonrpc":"2.0","result":[…],"id":…}`.
//!
//! A slow reader slows the dump, not the daemon (the channel to the connection holds two
//! chunks); one that takes nothing for [`STALL_LIMIT`] loses the answer; at most
//! [`MAX_DUMPS`] stream at once. If the driver goes away mid-answer the body is cut short, so
//! the client sees an incomplete answer rather than a wrong complete one.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http_body_util::BodyExt;
use hyper::body::{Bytes, Frame};
use jsonrpsee::server::{HttpBody, HttpResponse};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use super::dump::DumpCursor;
use crate::gateway::Gateway;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Dumps streaming at once; another gets HTTP 429.
pub const MAX_DUMPS: usize = 4;
/// A reader that takes nothing for this long loses the rest of the answer.
pub const STALL_LIMIT: Duration = Duration::from_secs(30);
/// Largest request body read (jsonrpsee's own default limit).
const MAX_REQUEST: usize = 10 * 1024 * 1024;
/// Bytes gathered before a chunk is handed to the connection.
const CHUNK: usize = 256 * 1024;

/// The layer: answers `uac.reg_dump` itself, passes everything else on.
#[derive(Clone)]
pub struct StreamDumpLayer {
    gateway: Arc<Gateway>,
    places: Arc<Semaphore>,
}

impl StreamDumpLayer {
    pub fn new(gateway: Arc<Gateway>) -> StreamDumpLayer {
        StreamDumpLayer {
            gateway,
            places: Arc::new(Semaphore::new(MAX_DUMPS)),
        }
    }
}

impl<S> tower::Layer<S> for StreamDumpLayer {
    type Service = StreamDump<S>;

    fn layer(&self, inner: S) -> StreamDump<S> {
        StreamDump {
            inner,
            gateway: self.gateway.clone(),
            places: self.places.clone(),
        }
    }
}

/// The service [`StreamDumpLayer`] wraps around the JSON-RPC server.
#[derive(Clone)]
pub struct StreamDump<S> {
    inner: S,
    gateway: Arc<Gateway>,
    places: Arc<Semaphore>,
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S, B> tower::Service<http::Request<B>> for StreamDump<S>
where
    S: tower::Service<http::Request<HttpBody>, Response = HttpResponse> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = HttpResponse;
    type Error = S::Error;
    type Future = BoxFuture<HttpResponse, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if request.method() != http::Method::POST {
            return Box::pin(self.inner.call(request.map(HttpBody::new)));
        }
        // The ready service goes into the future; a clone stays for the next call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let gateway = self.gateway.clone();
        let places = self.places.clone();
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            let bytes = match http_body_util::Limited::new(body, MAX_REQUEST)
                .collect()
                .await
            {
                Ok(collected) => collected.to_bytes(),
                Err(_) => {
                    return Ok(plain(
                        http::StatusCode::PAYLOAD_TOO_LARGE,
                        "request too large\n",
                    ));
                }
            };
            let Some(id) = reg_dump_id(&bytes) else {
                return inner
                    .call(http::Request::from_parts(
                        parts,
                        HttpBody::new(http_body_util::Full::new(bytes)),
                    ))
                    .await;
            };
            match places.try_acquire_owned() {
                Ok(place) => Ok(stream(gateway, id, place)),
                Err(_) => Ok(plain(
                    http::StatusCode::TOO_MANY_REQUESTS,
                    "too many reg_dump answers streaming; try again\n",
                )),
            }
        })
    }
}

fn plain(status: http::StatusCode, text: &'static str) -> HttpResponse {
    let mut response = http::Response::new(HttpBody::from(text));
    *response.status_mut() = status;
    response
}

/// The id of a request that is exactly one `uac.reg_dump` call without parameters (a batch, a
/// notification or anything else is jsonrpsee's to answer).
fn reg_dump_id(body: &[u8]) -> Option<serde_json::Value> {
    #[derive(serde::Deserialize)]
    struct Call {
        jsonrpc: String,
        method: String,
        id: Option<serde_json::Value>,
        #[serde(default)]
        params: serde_json::Value,
    }
    let call: Call = serde_json::from_slice(body).ok()?;
    let no_params = match &call.params {
        serde_json::Value::Null => true,
        serde_json::Value::Array(items) => items.is_empty(),
        serde_json::Value::Object(members) => members.is_empty(),
        _ => false,
    };
    let id = call.id.filter(|id| id.is_number() || id.is_string())?;
    (call.jsonrpc == "2.0" && call.method == "uac.reg_dump" && no_params).then_some(id)
}

/// The 200 answer whose body a task writes slice by slice.
fn stream(
    gateway: Arc<Gateway>,
    id: serde_json::Value,
    place: OwnedSemaphorePermit,
) -> HttpResponse {
    let (chunks, body) = mpsc::channel::<Result<Frame<Bytes>, BoxError>>(2);
    tokio::spawn(async move {
        let _place = place;
        if let Err(err) = produce(gateway, &id, &chunks).await {
            tracing::debug!("reg_dump answer cut short: {err}");
            // An error frame makes hyper end the connection without the last chunk.
            let _ = tokio::time::timeout(STALL_LIMIT, chunks.send(Err(err.into()))).await;
        }
    });
    let frames = futures_util::stream::unfold(body, |mut body| async move {
        body.recv().await.map(|frame| (frame, body))
    });
    let mut response = http::Response::new(HttpBody::new(http_body_util::StreamBody::new(frames)));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json; charset=utf-8"),
    );
    response
}

/// Why a streamed answer stopped before its end.
#[derive(Debug, thiserror::Error)]
enum Cut {
    #[error("the driver is gone")]
    DriverGone,
    #[error("the reader took nothing for {0:?}")]
    Stalled(Duration),
    #[error("the reader went away")]
    ReaderGone,
    #[error("rendering a record: {0}")]
    Render(#[from] serde_json::Error),
}

async fn produce(
    gateway: Arc<Gateway>,
    id: &serde_json::Value,
    chunks: &mpsc::Sender<Result<Frame<Bytes>, BoxError>>,
) -> Result<(), Cut> {
    let mut cursor = DumpCursor::new(gateway);
    let mut out: Vec<u8> = Vec::with_capacity(CHUNK + 4096);
    out.extend_from_slice(br#"{"jsonrpc":"2.0","result":["#);
    let mut first = true;
    while let Some(slice) = cursor.next().await.map_err(|_| Cut::DriverGone)? {
        for view in cursor.views(&slice) {
            if !first {
                out.push(b',');
            }
            first = false;
            serde_json::to_writer(&mut out, &view)?;
            if out.len() >= CHUNK {
                send(chunks, &mut out).await?;
            }
        }
    }
    out.extend_from_slice(br#"],"id":"#);
    serde_json::to_writer(&mut out, id)?;
    out.push(b'}');
    send(chunks, &mut out).await
}

async fn send(
    chunks: &mpsc::Sender<Result<Frame<Bytes>, BoxError>>,
    out: &mut Vec<u8>,
) -> Result<(), Cut> {
    let chunk = Bytes::from(std::mem::replace(out, Vec::with_capacity(CHUNK + 4096)));
    match tokio::time::timeout(STALL_LIMIT, chunks.send(Ok(Frame::data(chunk)))).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(Cut::ReaderGone),
        Err(_) => Err(Cut::Stalled(STALL_LIMIT)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_single_parameterless_reg_dump_is_streamed() {
        let id = |body: &str| reg_dump_id(body.as_bytes());
        assert_eq!(
            id(r#"{"jsonrpc":"2.0","id":7,"method":"uac.reg_dump","params":[]}"#),
            Some(serde_json::json!(7))
        );
        assert_eq!(
            id(r#"{"jsonrpc":"2.0","method":"uac.reg_dump","id":"a"}"#),
            Some(serde_json::json!("a"))
        );
        for other in [
            r#"{"jsonrpc":"2.0","method":"uac.reg_dump"}"#,
            r#"{"jsonrpc":"2.0","id":null,"method":"uac.reg_dump"}"#,
            r#"{"jsonrpc":"1.0","id":1,"method":"uac.reg_dump"}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"uac.reg_dump","params":["x"]}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"uac.reg_info","params":[]}"#,
            r#"[{"jsonrpc":"2.0","id":1,"method":"uac.reg_dump"}]"#,
            "not json",
        ] {
            assert_eq!(id(other), None, "{other}");
        }
    }
}

//! `GET /metrics` over HTTP/1.1 with hyper: one request per connection, few connections at a
//! time, small requests, short deadlines. A scraper needs nothing more, and anything else that
//! reaches the port should cost us little.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tracing::debug;

use super::SnapshotSource;
use super::exposition::{self, render};
use crate::transport::admission::AcceptBackoff;

/// Connections served at once; the next ones wait in the listen backlog. Each scrape asks the
/// driver for its counters, so a flood of them must not queue work there.
pub(super) const MAX_CONNECTIONS: usize = 4;
/// A request head larger than this is refused (hyper's smallest allowed buffer).
const MAX_REQUEST_BYTES: usize = 8192;
/// The request head must arrive within this time.
const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// The whole exchange, answer included, must be over within this time.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(15);

/// Starts the metrics listener; returns the bound address and the accept task.
pub async fn serve<S: SnapshotSource>(
    addr: SocketAddr,
    source: Arc<S>,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let task = tokio::spawn(accept_loop(listener, source));
    Ok((local, task))
}

async fn accept_loop<S: SnapshotSource>(listener: TcpListener, source: Arc<S>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut backoff = AcceptBackoff::new();
    loop {
        // Never closed, so this only waits for a connection to finish.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let (stream, _) = backoff
            .accept("metrics endpoint", || listener.accept(), || {})
            .await;
        let source = source.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let service = service_fn(move |request| {
                let source = source.clone();
                async move { Ok::<_, Infallible>(answer(&request, source.as_ref()).await) }
            });
            let connection = http1::Builder::new()
                .keep_alive(false)
                .max_buf_size(MAX_REQUEST_BYTES)
                .timer(TokioTimer::new())
                .header_read_timeout(HEAD_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            match tokio::time::timeout(CONNECTION_TIMEOUT, connection).await {
                Ok(Ok(())) => {}
                Ok(Err(err)) => debug!("metrics request failed: {err}"),
                Err(_) => debug!("metrics connection took too long; closed"),
            }
        });
    }
}

async fn answer<S: SnapshotSource>(
    request: &Request<Incoming>,
    source: &S,
) -> Response<Full<Bytes>> {
    let path = request.uri().path();
    if request.method() != Method::GET || !(path == "/metrics" || path == "/") {
        return plain(StatusCode::NOT_FOUND, "try GET /metrics\n");
    }
    let Some(snapshot) = source.snapshot().await else {
        return plain(StatusCode::SERVICE_UNAVAILABLE, "driver stopped\n");
    };
    match render(&snapshot) {
        Ok(page) => {
            let mut response = Response::new(Full::new(Bytes::from(page)));
            response.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static(exposition::CONTENT_TYPE),
            );
            response
        }
        Err(err) => {
            debug!("cannot encode the metrics: {err}");
            plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                "cannot encode the metrics\n",
            )
        }
    }
}

fn plain(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

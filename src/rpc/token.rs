//! Optional shared-secret check in front of the JSON-RPC server.
//!
//! The RPC can disable registrations and, with `show_secrets`, reveal credentials, so an operator
//! who exposes it beyond loopback can require a token. It is checked as HTTP middleware, before
//! any JSON is parsed: `Authorization: Bearer <token>` or `X-Uacreg-Token: <token>`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use jsonrpsee::server::{HttpBody, HttpResponse};

/// The tower layer's service: passes requests that carry the token, answers 401 to the rest.
#[derive(Clone)]
pub struct RequireToken<S> {
    inner: S,
    token: Option<Arc<str>>,
}

impl<S> RequireToken<S> {
    /// `token` None lets every request through (the default: RPC listens on loopback only).
    pub fn new(inner: S, token: Option<Arc<str>>) -> Self {
        RequireToken { inner, token }
    }
}

/// The layer that wraps the RPC service in [`RequireToken`].
#[derive(Clone)]
pub struct TokenLayer {
    token: Option<Arc<str>>,
}

impl TokenLayer {
    /// An empty or absent token means no check.
    pub fn new(token: Option<String>) -> TokenLayer {
        TokenLayer {
            token: token.filter(|t| !t.is_empty()).map(Arc::from),
        }
    }
}

impl<S> tower::Layer<S> for TokenLayer {
    type Service = RequireToken<S>;

    fn layer(&self, inner: S) -> RequireToken<S> {
        RequireToken::new(inner, self.token.clone())
    }
}

/// Compares without an early exit, so timing does not reveal a prefix of the token.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn presented<B>(request: &http::Request<B>) -> Option<&[u8]> {
    let headers = request.headers();
    if let Some(value) = headers.get("x-uacreg-token") {
        return Some(value.as_bytes());
    }
    let auth = headers.get(http::header::AUTHORIZATION)?.as_bytes();
    auth.strip_prefix(b"Bearer ")
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S, B> tower::Service<http::Request<B>> for RequireToken<S>
where
    S: tower::Service<http::Request<B>, Response = HttpResponse>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = HttpResponse;
    type Error = S::Error;
    type Future = BoxFuture<HttpResponse, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let allowed = match &self.token {
            None => true,
            Some(token) => presented(&request).is_some_and(|given| same(given, token.as_bytes())),
        };
        if allowed {
            return Box::pin(self.inner.call(request));
        }
        let mut response = http::Response::new(HttpBody::from(
            "missing or wrong RPC token (send Authorization: Bearer <token>)\n",
        ));
        *response.status_mut() = http::StatusCode::UNAUTHORIZED;
        Box::pin(async move { Ok(response) })
    }
}

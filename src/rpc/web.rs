//! The web console's files: `GET /ui` (the page), `/ui/app.js`, `/ui/app.css`, served from the
//! binary by HTTP middleware in front of the JSON-RPC server on the same port.
//!
//! Why in front of the token check: the files hold no data (the page asks for everything over
//! JSON-RPC with the token the operator typed into its login form), and the login form has to
//! load before there is a token to send. Why embedded: nothing to install, nothing to find on
//! disk, the page always matches the daemon. The page is plain HTML, CSS and JavaScript with no
//! library and no build step; a strict Content-Security-Policy allows only its own files.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use jsonrpsee::server::{HttpBody, HttpResponse};

const INDEX_HTML: &str = include_str!("web/index.html");
const APP_JS: &str = include_str!("web/app.js");
const APP_CSS: &str = include_str!("web/app.css");

/// The page's own files only; no inline script, no frames, no other origin.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; form-action 'none'; frame-ancestors 'none'; \
     base-uri 'none'";

/// The file at `path`, if it is one of the console's: (content type, body).
fn asset(path: &str) -> Option<(&'static str, &'static str)> {
    match path {
        "/ui" | "/ui/" | "/ui/index.html" => Some(("text/html; charset=utf-8", INDEX_HTML)),
        "/ui/app.js" => Some(("text/javascript; charset=utf-8", APP_JS)),
        "/ui/app.css" => Some(("text/css; charset=utf-8", APP_CSS)),
        _ => None,
    }
}

/// Serves the console's files when `enabled`; everything else goes to the inner service.
#[derive(Clone)]
pub struct ConsoleLayer {
    enabled: bool,
}

impl ConsoleLayer {
    pub fn new(enabled: bool) -> ConsoleLayer {
        ConsoleLayer { enabled }
    }
}

impl<S> tower::Layer<S> for ConsoleLayer {
    type Service = ServeConsole<S>;

    fn layer(&self, inner: S) -> ServeConsole<S> {
        ServeConsole {
            inner,
            enabled: self.enabled,
        }
    }
}

/// The service [`ConsoleLayer`] wraps around the JSON-RPC server.
#[derive(Clone)]
pub struct ServeConsole<S> {
    inner: S,
    enabled: bool,
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S, B> tower::Service<http::Request<B>> for ServeConsole<S>
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
        let found = (self.enabled
            && matches!(*request.method(), http::Method::GET | http::Method::HEAD))
        .then(|| asset(request.uri().path()))
        .flatten();
        let Some((content_type, body)) = found else {
            return Box::pin(self.inner.call(request));
        };
        let head_only = request.method() == http::Method::HEAD;
        let response = http::Response::builder()
            .status(http::StatusCode::OK)
            .header(http::header::CONTENT_TYPE, content_type)
            .header(http::header::CACHE_CONTROL, "no-cache")
            .header("content-security-policy", CONTENT_SECURITY_POLICY)
            .header("x-content-type-options", "nosniff")
            .header("referrer-policy", "no-referrer")
            .body(HttpBody::from(if head_only { "" } else { body }));
        let response = response.unwrap_or_else(|_| http::Response::new(HttpBody::from("")));
        Box::pin(async move { Ok(response) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_console_files_are_served() {
        assert!(
            asset("/ui").is_some_and(|(t, b)| t.starts_with("text/html") && b.contains("app.js"))
        );
        assert!(asset("/ui/app.js").is_some());
        assert!(asset("/ui/app.css").is_some());
        for other in ["/", "/ui/../Cargo.toml", "/ui/secret", "/uix", "/metrics"] {
            assert!(asset(other).is_none(), "{other}");
        }
    }

    /// The page runs under a CSP without 'unsafe-inline': no inline script or style, no
    /// handler attributes.
    #[test]
    fn the_page_needs_nothing_inline() {
        for banned in ["<script>", "onclick=", "onload=", "style=\"", "<style"] {
            assert!(!INDEX_HTML.contains(banned), "index.html has {banned}");
        }
        assert!(
            !APP_JS.contains("innerHTML"),
            "app.js builds the DOM with textContent"
        );
    }
}

//! A thin JSON-RPC client for `uacregctl`, tests and the demo.
//!
//! [`RpcClient::request`] reads an answer straight into its type ([`super::answer`],
//! [`super::RecordView`]); [`RpcClient::call`] keeps the raw JSON for those who print or inspect
//! it as it came.

use jsonrpsee::core::client::ClientT;
use jsonrpsee::core::params::ArrayParams;
use jsonrpsee_http_client::{HttpClient, HttpClientBuilder};
use serde::de::DeserializeOwned;
use serde_json::Value;

pub use jsonrpsee::core::client::Error as RpcError;

pub struct RpcClient {
    inner: HttpClient,
}

impl RpcClient {
    /// `url` like `http://127.0.0.1:5063/RPC`.
    pub fn new(url: &str) -> Result<RpcClient, RpcError> {
        RpcClient::with_token(url, None)
    }

    /// A client that sends `Authorization: Bearer <token>` with every request.
    pub fn with_token(url: &str, token: Option<&str>) -> Result<RpcClient, RpcError> {
        let mut headers = jsonrpsee_http_client::HeaderMap::new();
        if let Some(token) = token.filter(|t| !t.is_empty()) {
            let value = jsonrpsee_http_client::HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| RpcError::Custom("the token is not a valid header value".into()))?;
            headers.insert("authorization", value);
        }
        let inner = HttpClientBuilder::default()
            .max_response_size(u32::MAX)
            .request_timeout(std::time::Duration::from_secs(120))
            .set_headers(headers)
            .build(url)?;
        Ok(RpcClient { inner })
    }

    /// Calls `method` with positional string parameters and returns the raw result.
    pub async fn call(&self, method: &str, params: &[String]) -> Result<Value, RpcError> {
        self.request(method, params).await
    }

    /// Calls `method` with named parameters (the members of `params`, a JSON object) and
    /// returns the raw result.
    pub async fn call_named(
        &self,
        method: &str,
        params: serde_json::Map<String, Value>,
    ) -> Result<Value, RpcError> {
        let mut named = jsonrpsee::core::params::ObjectParams::new();
        for (name, value) in params {
            named.insert(&name, value)?;
        }
        self.inner.request(method, named).await
    }

    /// Calls `method` and reads the result as a `T`; an answer of another shape is an error
    /// (`RpcError::ParseError`).
    pub async fn request<T: DeserializeOwned>(
        &self,
        method: &str,
        params: &[String],
    ) -> Result<T, RpcError> {
        let mut array = ArrayParams::new();
        for param in params {
            array.insert(param)?;
        }
        self.inner.request(method, array).await
    }
}

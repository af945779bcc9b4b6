//! Parsing SIP messages received from the network: responses to our REGISTERs and, for the test
//! registrar, REGISTER requests. Any malformed input is an error, never a panic.

use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
#[error("malformed SIP message: {0}")]
pub struct ParseError(pub String);

/// The parts of a SIP URI that registrations compare.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UriParts {
    pub scheme: String,
    pub user: Option<String>,
    /// Host without brackets for IPv6.
    pub host: String,
    pub port: Option<u16>,
    /// URI parameters in order (`;line=x`, `;transport=tcp`), names lowercase.
    pub params: Vec<(String, Option<String>)>,
}

impl UriParts {
    /// Parses `sip:user@host:port;params` (no angle brackets).
    pub fn parse(uri: &str) -> Result<UriParts, ParseError> {
        let _ = uri;
        todo!()
    }
}

/// One binding in a Contact header (a header line may hold several, comma-separated).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContactBinding {
    pub uri: UriParts,
    /// The URI as it appeared (without angle brackets).
    pub uri_text: String,
    /// The `;expires=` header parameter.
    pub expires: Option<u32>,
}

/// A response to a request we sent.
#[derive(Clone, Debug)]
pub struct Response {
    pub code: u16,
    pub reason: String,
    /// `branch` parameter of the topmost Via.
    pub branch: Option<String>,
    pub call_id: String,
    pub cseq: u32,
    pub cseq_method: String,
    pub contacts: Vec<ContactBinding>,
    pub expires: Option<u32>,
    pub min_expires: Option<u32>,
    pub retry_after: Option<u32>,
    /// Raw `WWW-Authenticate` values, one per challenge.
    pub www_authenticate: Vec<String>,
    /// Raw `Proxy-Authenticate` values.
    pub proxy_authenticate: Vec<String>,
}

impl Response {
    pub fn parse(datagram: &[u8]) -> Result<Response, ParseError> {
        let _ = datagram;
        todo!()
    }
}

/// A request as the test registrar needs it.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    pub request_uri: String,
    /// Every Via value in order, verbatim (echoed back in responses).
    pub vias: Vec<String>,
    /// Verbatim From and To header values (the registrar adds a To tag).
    pub from: String,
    pub to: String,
    /// URI inside To.
    pub to_uri: UriParts,
    pub call_id: String,
    pub cseq: u32,
    pub cseq_method: String,
    pub contacts: Vec<ContactBinding>,
    /// `Contact: *`
    pub contact_star: bool,
    pub expires: Option<u32>,
    pub authorization: Option<String>,
    pub proxy_authorization: Option<String>,
}

impl Request {
    pub fn parse(datagram: &[u8]) -> Result<Request, ParseError> {
        let _ = datagram;
        todo!()
    }
}

/// Tells a response from a request by the first line, without parsing the rest.
pub fn is_response(datagram: &[u8]) -> bool {
    datagram.starts_with(b"SIP/2.0 ")
}

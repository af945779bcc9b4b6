//! Building a REGISTER request.

/// Everything a REGISTER carries except the Via branch, which belongs to the transaction that
/// sends it (a retransmission reuses the bytes; a new request gets a new branch).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegisterRequest {
    /// `sip:r_domain`
    pub request_uri: String,
    /// `sip:r_username@r_domain`, used in To and From.
    pub aor: String,
    pub from_tag: String,
    pub call_id: String,
    pub cseq: u32,
    /// The Contact URI without angle brackets, e.g. `sip:uuid1@127.0.0.1:5080`.
    pub contact_uri: String,
    /// Value of the Expires header (0 removes the binding).
    pub expires: u32,
    /// `("Authorization" | "Proxy-Authorization", value)` when answering a challenge.
    pub authorization: Option<(&'static str, String)>,
    pub user_agent: String,
}

impl RegisterRequest {
    /// Appends the encoded request to `out`. `transport` is the Via token (`UDP`, `TCP`, `TLS`),
    /// `sent_by` the Via host:port, `branch` the full branch (starting with `z9hG4bK`).
    pub fn encode(&self, transport: &str, sent_by: &str, branch: &str, out: &mut Vec<u8>) {
        let _ = (transport, sent_by, branch, out);
        todo!("sip helper")
    }
}

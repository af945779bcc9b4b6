//! Building a REGISTER request.

use std::io::Write;

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
        // Writing into a Vec cannot fail.
        let _ = write!(
            out,
            "REGISTER {} SIP/2.0\r\n\
             Via: SIP/2.0/{} {};rport;branch={}\r\n\
             Max-Forwards: 70\r\n\
             To: <{}>\r\n\
             From: <{}>;tag={}\r\n\
             Call-ID: {}\r\n\
             CSeq: {} REGISTER\r\n\
             Contact: <{}>\r\n\
             Expires: {}\r\n",
            self.request_uri,
            transport,
            sent_by,
            branch,
            self.aor,
            self.aor,
            self.from_tag,
            self.call_id,
            self.cseq,
            self.contact_uri,
            self.expires,
        );
        if let Some((name, value)) = &self.authorization {
            let _ = write!(out, "{name}: {value}\r\n");
        }
        if !self.user_agent.is_empty() {
            let _ = write!(out, "User-Agent: {}\r\n", self.user_agent);
        }
        out.extend_from_slice(b"Content-Length: 0\r\n\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_like_the_kamailio_trace() {
        let request = RegisterRequest {
            request_uri: "sip:registrar.test".into(),
            aor: "sip:user000000@registrar.test".into(),
            from_tag: "abc".into(),
            call_id: "cid@x".into(),
            cseq: 10,
            contact_uri: "sip:uuid000000@127.0.0.1:5080".into(),
            expires: 3600,
            authorization: Some(("Authorization", "Digest username=\"u\"".into())),
            user_agent: "uacreg".into(),
        };
        let mut out = Vec::new();
        request.encode("UDP", "127.0.0.1:5080", "z9hG4bK1", &mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("REGISTER sip:registrar.test SIP/2.0\r\n"));
        assert!(text.contains("Via: SIP/2.0/UDP 127.0.0.1:5080;rport;branch=z9hG4bK1\r\n"));
        assert!(text.contains("From: <sip:user000000@registrar.test>;tag=abc\r\n"));
        assert!(text.contains("Contact: <sip:uuid000000@127.0.0.1:5080>\r\n"));
        assert!(text.contains("Authorization: Digest username=\"u\"\r\n"));
        assert!(text.ends_with("Content-Length: 0\r\n\r\n"));
        // And our own parser reads it back.
        let parsed = crate::sip::message::Request::parse(text.as_bytes()).unwrap();
        assert_eq!(parsed.cseq, 10);
        assert_eq!(parsed.contacts[0].uri.user.as_deref(), Some("uuid000000"));
    }
}

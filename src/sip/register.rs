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
    /// Another contact of this registration to remove in the same request (`;expires=0`):
    /// the one another node registered before this one took the row over, so the registrar
    /// holds one binding, not two.
    pub retire_contact: Option<Box<str>>,
    /// `("Authorization" | "Proxy-Authorization", value)` for each challenge answered: an
    /// authenticating proxy and the registrar behind it each need theirs (RFC 3261 §22.3).
    pub authorization: Vec<(&'static str, String)>,
    pub user_agent: String,
}

/// What the hop a request takes adds to it: the Via, and Contact parameters that depend on the
/// transport chosen (RFC 3263 may only pick it when sending) and on RFC 5626 outbound.
#[derive(Clone, Copy, Debug)]
pub struct Hop<'a> {
    /// Via transport token: `UDP`, `TCP`, `TLS`.
    pub transport: &'a str,
    /// Via sent-by `host:port`.
    pub sent_by: &'a str,
    /// Full branch, starting with `z9hG4bK`.
    pub branch: &'a str,
    /// Appended inside the Contact URI, e.g. `;transport=tcp`.
    pub contact_uri_params: &'a str,
    /// Appended after the Contact's `>`, e.g. `;reg-id=1;+sip.instance="<urn:uuid:…>"`.
    pub contact_header_params: &'a str,
    /// Value of a Supported header (`path, outbound`), empty for none.
    pub supported: &'a str,
}

impl<'a> Hop<'a> {
    /// A plain hop: only the Via.
    pub fn plain(transport: &'a str, sent_by: &'a str, branch: &'a str) -> Hop<'a> {
        Hop {
            transport,
            sent_by,
            branch,
            contact_uri_params: "",
            contact_header_params: "",
            supported: "",
        }
    }
}

impl RegisterRequest {
    /// Appends the encoded request, as sent over `hop`, to `out`.
    pub fn encode(&self, hop: &Hop<'_>, out: &mut Vec<u8>) {
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
             Contact: <{}{}>{}\r\n\
             Expires: {}\r\n",
            self.request_uri,
            hop.transport,
            hop.sent_by,
            hop.branch,
            self.aor,
            self.aor,
            self.from_tag,
            self.call_id,
            self.cseq,
            self.contact_uri,
            hop.contact_uri_params,
            hop.contact_header_params,
            self.expires,
        );
        if let Some(old) = &self.retire_contact {
            let _ = write!(
                out,
                "Contact: <{old}{}>;expires=0\r\n",
                hop.contact_uri_params
            );
        }
        if !hop.supported.is_empty() {
            let _ = write!(out, "Supported: {}\r\n", hop.supported);
        }
        for (name, value) in &self.authorization {
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
            retire_contact: None,
            request_uri: "sip:registrar.test".into(),
            aor: "sip:user000000@registrar.test".into(),
            from_tag: "abc".into(),
            call_id: "cid@x".into(),
            cseq: 10,
            contact_uri: "sip:uuid000000@127.0.0.1:5080".into(),
            expires: 3600,
            authorization: vec![("Authorization", "Digest username=\"u\"".into())],
            user_agent: "uacreg".into(),
        };
        let mut out = Vec::new();
        request.encode(&Hop::plain("UDP", "127.0.0.1:5080", "z9hG4bK1"), &mut out);
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

    #[test]
    fn stream_and_outbound_hop_parameters() {
        let request = RegisterRequest {
            retire_contact: None,
            request_uri: "sip:registrar.test".into(),
            aor: "sip:alice@registrar.test".into(),
            from_tag: "abc".into(),
            call_id: "cid@x".into(),
            cseq: 1,
            contact_uri: "sip:uuid1@[::1]:5062".into(),
            expires: 600,
            authorization: Vec::new(),
            user_agent: String::new(),
        };
        let mut out = Vec::new();
        request.encode(
            &Hop {
                transport: "TLS",
                sent_by: "[::1]:5062",
                branch: "z9hG4bK2",
                contact_uri_params: ";transport=tls",
                contact_header_params: ";reg-id=1;+sip.instance=\"<urn:uuid:00000000-0000-0000-0000-000000000001>\"",
                supported: "path, outbound",
            },
            &mut out,
        );
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("Via: SIP/2.0/TLS [::1]:5062;rport;branch=z9hG4bK2\r\n"));
        assert!(text.contains(
            "Contact: <sip:uuid1@[::1]:5062;transport=tls>;reg-id=1;+sip.instance=\"<urn:uuid:00000000-0000-0000-0000-000000000001>\"\r\n"
        ));
        assert!(text.contains("Supported: path, outbound\r\n"));
        let parsed = crate::sip::message::Request::parse(text.as_bytes()).unwrap();
        assert_eq!(parsed.contacts[0].uri.user.as_deref(), Some("uuid1"));
    }
}

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
    /// Another contact of this registration to remove in the same request (`;expires=0`):
    /// the one another node registered before this one took the row over, so the registrar
    /// holds one binding, not two.
    pub retire_contact: Option<Box<str>>,
    /// `("Authorization" | "Proxy-Authorization", value)` for each challenge answered: an
    /// authenticating proxy and the registrar behind it each need theirs (RFC 3261 §22.3).
    pub authorization: Vec<(&'static str, String)>,
    pub user_agent: std::sync::Arc<str>,
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
    /// Appends the encoded request, as sent over `hop`, to `out`. Every request is encoded
    /// once per attempt: the pieces are copied as they are, without the formatting machinery.
    pub fn encode(&self, hop: &Hop<'_>, out: &mut Vec<u8>) {
        let mut numbers = itoa::Buffer::new();
        let mut put = |pieces: &[&str]| {
            for piece in pieces {
                out.extend_from_slice(piece.as_bytes());
            }
        };
        put(&["REGISTER ", &self.request_uri, " SIP/2.0\r\n"]);
        put(&[
            "Via: SIP/2.0/",
            hop.transport,
            " ",
            hop.sent_by,
            ";rport;branch=",
            hop.branch,
            "\r\n",
        ]);
        put(&["Max-Forwards: 70\r\n"]);
        put(&["To: <", &self.aor, ">\r\n"]);
        put(&["From: <", &self.aor, ">;tag=", &self.from_tag, "\r\n"]);
        put(&["Call-ID: ", &self.call_id, "\r\n"]);
        put(&["CSeq: ", numbers.format(self.cseq), " REGISTER\r\n"]);
        put(&[
            "Contact: <",
            &self.contact_uri,
            hop.contact_uri_params,
            ">",
            hop.contact_header_params,
            "\r\n",
        ]);
        put(&["Expires: ", numbers.format(self.expires), "\r\n"]);
        if let Some(old) = &self.retire_contact {
            put(&["Contact: <", old, hop.contact_uri_params, ">;expires=0\r\n"]);
        }
        if !hop.supported.is_empty() {
            put(&["Supported: ", hop.supported, "\r\n"]);
        }
        for (name, value) in &self.authorization {
            put(&[name, ": ", value, "\r\n"]);
        }
        if !self.user_agent.is_empty() {
            put(&["User-Agent: ", &self.user_agent, "\r\n"]);
        }
        put(&["Content-Length: 0\r\n\r\n"]);
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
            user_agent: "".into(),
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

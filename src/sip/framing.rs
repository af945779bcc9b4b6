//! Cutting a TCP or TLS byte stream into SIP messages (RFC 3261 §18.3).
//!
//! On a stream the only message boundary is the end of the header block plus `Content-Length`
//! bytes of body, and RFC 5626 §4.4.1 puts keep-alives between messages: a double CRLF "ping"
//! that the peer answers with a single CRLF "pong". [`next_frame`] is a pure function over the
//! bytes received so far so the connection tasks stay trivial and the rules can be tested
//! without sockets. A stream that breaks the rules (no `Content-Length`, a header block larger
//! than [`MAX_MESSAGE`]) cannot be resynchronised and must be closed.

/// Largest message we accept on a stream; far above any REGISTER exchange or INVITE.
pub const MAX_MESSAGE: usize = 64 * 1024;

/// What the start of a stream buffer holds.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// A whole message of this many bytes.
    Message(usize),
    /// This many bytes of CR/LF between messages; `ping` when a double CRLF (RFC 5626 ping)
    /// was among them, otherwise a pong or padding.
    KeepAlive { len: usize, ping: bool },
    /// More bytes are needed.
    Incomplete,
    /// The stream cannot be framed any more; close it.
    Invalid(&'static str),
}

/// Looks at the start of `buf`.
pub fn next_frame(buf: &[u8]) -> Frame {
    let blank = buf
        .iter()
        .take_while(|b| **b == b'\r' || **b == b'\n')
        .count();
    if blank > 0 {
        let ping = buf[..blank].windows(4).any(|w| w == b"\r\n\r\n");
        return Frame::KeepAlive { len: blank, ping };
    }
    let Some((head_len, body_start)) = find_header_end(buf) else {
        return if buf.len() > MAX_MESSAGE {
            Frame::Invalid("header block too large")
        } else {
            Frame::Incomplete
        };
    };
    let Some(body_len) = content_length(&buf[..head_len]) else {
        return Frame::Invalid("message without a valid Content-Length on a stream");
    };
    let total = body_start + body_len;
    if total > MAX_MESSAGE {
        return Frame::Invalid("message too large");
    }
    if buf.len() < total {
        Frame::Incomplete
    } else {
        Frame::Message(total)
    }
}

/// The end of the header block: (length of the headers, offset where the body starts). Accepts
/// CRLF CRLF and, for sloppy peers, LF LF.
fn find_header_end(buf: &[u8]) -> Option<(usize, usize)> {
    let mut i = 0;
    while i < buf.len() {
        if buf[i] == b'\n' {
            if buf.get(i + 1) == Some(&b'\n') {
                return Some((i, i + 2));
            }
            if buf.get(i + 1) == Some(&b'\r') && buf.get(i + 2) == Some(&b'\n') {
                return Some((i, i + 3));
            }
        }
        i += 1;
    }
    None
}

/// Value of `Content-Length` (or compact `l`) in a header block.
fn content_length(head: &[u8]) -> Option<usize> {
    let text = std::str::from_utf8(head).ok()?;
    let mut found = None;
    for line in text.split('\n').skip(1) {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim();
        if name.eq_ignore_ascii_case("content-length") || name.eq_ignore_ascii_case("l") {
            let value: usize = value.trim().parse().ok()?;
            if found.is_some_and(|earlier| earlier != value) {
                // Two different lengths: there is no safe way to frame this stream.
                return None;
            }
            found = Some(value);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn frames_a_message_with_body() {
        let msg = b"INVITE sip:a@b SIP/2.0\r\nl: 4\r\nVia: x\r\n\r\nbodyREGISTER";
        assert_eq!(next_frame(msg), Frame::Message(msg.len() - 8));
    }

    #[test]
    fn waits_for_the_rest() {
        assert_eq!(
            next_frame(b"SIP/2.0 200 OK\r\nContent-Len"),
            Frame::Incomplete
        );
        assert_eq!(
            next_frame(b"SIP/2.0 200 OK\r\nContent-Length: 5\r\n\r\nab"),
            Frame::Incomplete
        );
    }

    #[test]
    fn keepalives_between_messages() {
        assert_eq!(
            next_frame(b"\r\n\r\nSIP"),
            Frame::KeepAlive { len: 4, ping: true }
        );
        assert_eq!(
            next_frame(b"\r\nSIP"),
            Frame::KeepAlive {
                len: 2,
                ping: false
            }
        );
    }

    #[test]
    fn refuses_what_cannot_be_framed() {
        assert!(matches!(
            next_frame(b"SIP/2.0 200 OK\r\nVia: x\r\n\r\n"),
            Frame::Invalid(_)
        ));
        assert!(matches!(
            next_frame(b"SIP/2.0 200 OK\r\nContent-Length: 1\r\nl: 2\r\n\r\n"),
            Frame::Invalid(_)
        ));
        let huge = vec![b'a'; MAX_MESSAGE + 1];
        assert!(matches!(next_frame(&huge), Frame::Invalid(_)));
        assert!(matches!(
            next_frame(b"SIP/2.0 200 OK\r\nContent-Length: 999999\r\n\r\n"),
            Frame::Invalid(_)
        ));
    }

    #[test]
    fn lf_only_line_ends() {
        let msg = b"SIP/2.0 200 OK\nContent-Length: 0\n\n";
        assert_eq!(next_frame(msg), Frame::Message(msg.len()));
    }

    proptest! {
        #[test]
        fn never_panics_and_never_overreads(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            match next_frame(&bytes) {
                Frame::Message(n) => prop_assert!(n > 0 && n <= bytes.len()),
                Frame::KeepAlive { len, .. } => prop_assert!(len > 0 && len <= bytes.len()),
                Frame::Incomplete | Frame::Invalid(_) => {}
            }
        }
    }
}

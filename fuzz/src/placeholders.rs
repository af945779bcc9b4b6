//! Filling in what a captured message cannot know.
//!
//! A response only reaches the transaction matcher if it carries the random branch of a live
//! transaction, and a relayed response only reaches the MAC check and the path decoding if it
//! carries a branch made with the harness's key. Seeds therefore hold placeholders where those
//! values go, and the harness replaces them before the message is handled; libFuzzer mutates
//! everything around them (and may move, repeat or break them).

/// Placeholder for the Via branch of the transaction a response claims to answer.
pub const BRANCH: &[u8] = b"$branch";
/// Placeholder for the Call-ID of that transaction's request.
pub const CALL_ID: &[u8] = b"$call-id";
/// Placeholder for the CSeq number of that request.
pub const CSEQ: &[u8] = b"$cseq";
/// Placeholder for a relay branch made with the harness's relay key.
pub const RELAY_BRANCH: &[u8] = b"$relay-branch";

/// `message` with every occurrence of each `(placeholder, value)` replaced, cut to `limit`
/// bytes (the daemon never receives more).
pub fn fill(message: &[u8], values: &[(&[u8], &[u8])], limit: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len().min(limit));
    let mut rest = message;
    'outer: while !rest.is_empty() && out.len() < limit {
        for (placeholder, value) in values {
            if let Some(after) = rest.strip_prefix(*placeholder) {
                out.extend_from_slice(value);
                rest = after;
                continue 'outer;
            }
        }
        out.push(rest[0]);
        rest = &rest[1..];
    }
    out.truncate(limit);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_every_occurrence_and_respects_the_limit() {
        let filled = fill(
            b"Via: x;branch=$branch\r\nCSeq: $cseq REGISTER\r\n$branch",
            &[(BRANCH, b"z9hG4bKt1.ab"), (CSEQ, b"7")],
            100,
        );
        assert_eq!(
            filled,
            b"Via: x;branch=z9hG4bKt1.ab\r\nCSeq: 7 REGISTER\r\nz9hG4bKt1.ab"
        );
        assert_eq!(
            fill(b"$branch$branch", &[(BRANCH, b"abcdef")], 8),
            b"abcdefab"
        );
    }
}

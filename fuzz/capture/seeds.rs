//! Turning captured messages into seeds of each fuzz target, in the layout each target reads
//! (its control bytes first; see the doc comment of each file in `fuzz/fuzz_targets/`).

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use uacreg::sip::message::{Request, Response};

use crate::exchange::Exchange;

/// Prefix of every file this program writes; files named otherwise (regression inputs of
/// crashes, `crash-…`) are left alone.
pub const GENERATED: [&str; 5] = ["registrar-", "kamailio-", "sipp-", "edge-", "rpc-"];

/// The Via line the relay harness fills with a branch made with its key.
const RELAY_VIA: &[u8] = b"Via: SIP/2.0/UDP 192.0.2.1:5062;branch=$relay-branch\r\n";

/// The seed files, by target and name, written at the end.
#[derive(Default)]
pub struct Corpus {
    files: BTreeMap<(String, String), Vec<u8>>,
}

impl Corpus {
    pub fn add(&mut self, target: &str, name: &str, bytes: Vec<u8>) {
        self.files
            .insert((target.to_string(), name.to_string()), bytes);
    }

    /// Replaces the generated files under `root/<target>/` by the ones collected.
    pub fn write(&self, root: &Path) -> io::Result<usize> {
        let targets: Vec<&String> = self.files.keys().map(|(target, _)| target).collect();
        for target in targets {
            let dir = root.join(target);
            std::fs::create_dir_all(&dir)?;
            for entry in std::fs::read_dir(&dir)? {
                let path = entry?.path();
                if is_generated(&path) {
                    std::fs::remove_file(&path)?;
                }
            }
        }
        for ((target, name), bytes) in &self.files {
            let path: PathBuf = root.join(target).join(name);
            std::fs::write(path, bytes)?;
        }
        Ok(self.files.len())
    }
}

fn is_generated(path: &Path) -> bool {
    path.file_name()
        .and_then(|name| name.to_str())
        .is_some_and(|name| GENERATED.iter().any(|prefix| name.starts_with(prefix)))
}

fn with_prefix(prefix: &[u8], message: &[u8]) -> Vec<u8> {
    [prefix, message].concat()
}

fn replace(haystack: &[u8], needle: &[u8], with: &[u8]) -> Vec<u8> {
    if needle.is_empty() {
        return haystack.to_vec();
    }
    let mut out = Vec::with_capacity(haystack.len());
    let mut rest = haystack;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix(needle) {
            out.extend_from_slice(with);
            rest = after;
        } else {
            out.push(rest[0]);
            rest = &rest[1..];
        }
    }
    out
}

/// A response with its branch, Call-ID and CSeq number replaced by the placeholders the
/// response harness fills from a live transaction.
pub fn templated(response: &[u8]) -> Option<Vec<u8>> {
    let parsed = Response::parse(response).ok()?;
    let branch = parsed.branch?;
    let mut out = replace(response, branch.as_bytes(), b"$branch");
    out = replace(&out, parsed.call_id.as_bytes(), b"$call-id");
    let cseq = format!(" {} {}", parsed.cseq, parsed.cseq_method);
    out = replace(
        &out,
        cseq.as_bytes(),
        format!(" $cseq {}", parsed.cseq_method).as_bytes(),
    );
    Some(out)
}

/// A response with our relay Via on top of its own.
pub fn relayed(response: &[u8]) -> Vec<u8> {
    let Some(line_end) = response.windows(2).position(|w| w == b"\r\n") else {
        return response.to_vec();
    };
    let at = line_end + 2;
    [&response[..at], RELAY_VIA, &response[at..]].concat()
}

/// Cuts every target's seeds from one exchange.
pub fn cut(exchange: &Exchange, corpus: &mut Corpus) {
    let stem = exchange.stem();
    // Request flags of the request harness, in turn: trusted and relaying; untrusted,
    // relaying, strip; untrusted, nothing configured; trusted on a connection from IPv6.
    const REQUEST_FLAGS: [u8; 4] = [0x05, 0x0c, 0x00, 0x47];
    let mut flow = Vec::new();
    let mut stream = Vec::new();
    for (i, message) in exchange.messages.iter().enumerate() {
        let bytes = &message.bytes;
        stream.extend_from_slice(bytes);
        if i % 2 == 1 {
            stream.extend_from_slice(b"\r\n\r\n");
        }
        if message.is_response() {
            let parsed = Response::parse(bytes).ok();
            if let Some(template) = templated(bytes) {
                // Alone, claimed by the registrations in turn; and as a step of the flow, for
                // the first registration (which answers challenges with a password).
                let claim = (i % 3) as u8;
                corpus.add(
                    "response",
                    &format!("{stem}-{i}"),
                    with_prefix(&[claim, 0, 0], &template),
                );
                if !flow.is_empty() {
                    flow.push(0);
                }
                flow.extend_from_slice(&with_prefix(&[0, 0, 1], &template));
            }
            corpus.add(
                "relay_response",
                &format!("{stem}-{i}"),
                with_prefix(&[0x08, 0, 0], &relayed(bytes)),
            );
            for (j, value) in parsed
                .iter()
                .flat_map(|r| r.www_authenticate.iter().chain(&r.proxy_authenticate))
                .enumerate()
            {
                let flags = (i + j) as u8 & 0x3f;
                corpus.add(
                    "challenge",
                    &format!("{stem}-{i}-{j}"),
                    with_prefix(&[flags, 1], value.as_bytes()),
                );
            }
        } else {
            let flags = REQUEST_FLAGS[i % REQUEST_FLAGS.len()];
            corpus.add(
                "request",
                &format!("{stem}-{i}"),
                with_prefix(&[flags, 0], bytes),
            );
            if let Ok(request) = Request::parse(bytes) {
                for (j, value) in request
                    .authorization
                    .iter()
                    .chain(&request.proxy_authorization)
                    .enumerate()
                {
                    corpus.add(
                        "challenge",
                        &format!("{stem}-{i}-auth{j}"),
                        with_prefix(&[0, 1], value.as_bytes()),
                    );
                }
            }
        }
    }
    if flow.iter().filter(|b| **b == 0).count() > 2 {
        corpus.add("response", &format!("{stem}-flow"), flow);
    }
    corpus.add(
        "stream",
        &format!("{stem}-whole"),
        with_prefix(&[0, 0], &stream),
    );
    corpus.add(
        "stream",
        &format!("{stem}-split"),
        with_prefix(&[0x5a, 0x01], &stream),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_replace_what_a_live_transaction_decides() {
        let response = b"SIP/2.0 200 OK\r\n\
            Via: SIP/2.0/UDP 192.0.2.1:5062;branch=z9hG4bKt1.ab\r\n\
            Call-ID: c1@x\r\nCSeq: 7 REGISTER\r\nContent-Length: 0\r\n\r\n";
        let template = templated(response).unwrap();
        let text = String::from_utf8(template).unwrap();
        assert!(text.contains("branch=$branch\r\n"), "{text}");
        assert!(text.contains("Call-ID: $call-id\r\n"), "{text}");
        assert!(text.contains("CSeq: $cseq REGISTER\r\n"), "{text}");
        let relayed = String::from_utf8(relayed(response)).unwrap();
        assert!(relayed.starts_with("SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 192.0.2.1:5062;branch=$relay-branch\r\nVia: SIP/2.0/UDP 192.0.2.1:5062;branch=z9hG4bKt1.ab"));
    }
}

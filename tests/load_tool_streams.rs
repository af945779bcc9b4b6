//! The load tool's stream readers (benches/load), tested here because a `harness = false` bench
//! runs no `#[test]`: the chunked-body reader and the reg_dump record counter, which replaced
//! reading whole answers into memory and must not miscount at any split of the bytes.

#[allow(dead_code)]
#[path = "../benches/load/dump_records.rs"]
mod dump_records;
#[allow(dead_code)]
#[path = "../benches/load/http.rs"]
mod http;

use std::io::{self, BufReader, Read};

/// Hands out at most `step` bytes per read, to cut the input at every place.
struct Trickle<'a> {
    data: &'a [u8],
    step: usize,
}

impl Read for Trickle<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let n = self.step.min(out.len()).min(self.data.len());
        out[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

fn count_at_every_split(answer: &str) -> Vec<io::Result<usize>> {
    (1..=answer.len().min(17))
        .map(|step| {
            dump_records::count(Trickle {
                data: answer.as_bytes(),
                step,
            })
        })
        .collect()
}

fn counts(answer: &str) -> usize {
    let all = count_at_every_split(answer);
    let first = *all[0].as_ref().expect("a count");
    for (step, other) in all.iter().enumerate() {
        assert_eq!(other.as_ref().ok(), Some(&first), "step {}", step + 1);
    }
    first
}

#[test]
fn records_are_counted_whatever_their_content() {
    let answer = r#"{"jsonrpc":"2.0","result":[{"l_uuid":"a,]}\"x","n":[1,{"result":[9,9]}]},
        {"l_uuid":"b\\","flags":{}} , "plain", 7, [ ], null],"id":1}"#;
    assert_eq!(counts(answer), 6);
}

#[test]
fn an_empty_result_is_zero_and_a_decoy_result_string_is_ignored() {
    assert_eq!(counts(r#"{"jsonrpc":"2.0","result":[ ],"id":1}"#), 0);
    let decoy = r#"{"note":"\"result\":[1,2]","id":1,"result":[{"a":1},{"b":2},{"c":3}]}"#;
    assert_eq!(counts(decoy), 3);
}

#[test]
fn an_error_answer_or_a_cut_answer_is_an_error() {
    let error = r#"{"jsonrpc":"2.0","error":{"code":-32601,"message":"no"},"id":1}"#;
    for outcome in count_at_every_split(error) {
        let message = outcome.expect_err("no result").to_string();
        assert!(message.contains("no result"), "{message}");
    }
    let cut = r#"{"jsonrpc":"2.0","result":[{"a":1},{"b""#;
    assert!(count_at_every_split(cut).iter().all(|o| o.is_err()));
    assert!(dump_records::count(&br#"{"result":{"a":1}}"#[..]).is_err());
}

fn dechunk(wire: &str, step: usize) -> io::Result<Vec<u8>> {
    let reader = BufReader::with_capacity(
        3,
        Trickle {
            data: wire.as_bytes(),
            step,
        },
    );
    let mut body = http::Body::chunked(reader);
    let mut out = Vec::new();
    body.read_to_end(&mut out)?;
    Ok(out)
}

#[test]
fn chunked_bodies_are_joined_at_any_split() {
    let wire = "5\r\nhello\r\n6;ext=1\r\n world\r\nA\r\n and more!\r\n0\r\nX-Trailer: 1\r\n\r\n";
    for step in 1..=wire.len() {
        assert_eq!(
            dechunk(wire, step).expect("a body"),
            b"hello world and more!",
            "step {step}"
        );
    }
}

#[test]
fn broken_chunk_framing_is_an_error() {
    for wire in [
        "5\r\nhello world\r\n0\r\n\r\n",
        "zz\r\nhello\r\n0\r\n\r\n",
        "5\r\nhel",
        "5\r\nhello\r\n",
    ] {
        assert!(dechunk(wire, 4).is_err(), "{wire:?}");
    }
}

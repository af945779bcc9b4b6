//! A TCP/TLS byte stream cut into messages by `StreamBuffer`, fed in arbitrary reads.
//!
//! Input: two control bytes choosing how the stream is split into reads, then the stream.
//! 0 0: each read as large as the buffer offers; otherwise the two bytes seed a generator of
//! read sizes from 1 up to 1, 2, 3, 7, 64, 1,500, 4,096 or 65,536 bytes (low three bits).
//!
//! Checks: every message is non-empty, at most `MAX_MESSAGE` bytes and starts with no CR/LF;
//! the buffer never grows past `BUFFER_LIMIT`; every frame consumes bytes; and however the
//! stream is split, the frames are exactly those the pure `next_frame` finds in the whole
//! stream: the same messages, the same number of keep-alive pings, the same error at the same
//! place, the same bytes left over.

#![no_main]

use libfuzzer_sys::fuzz_target;
use uacreg::sip::MAX_MESSAGE;
use uacreg::sip::framing::{BUFFER_LIMIT, Frame, Framed, StreamBuffer, next_frame};
use uacreg_fuzz::{Unstructured, control};

/// Read sizes: a xorshift generator (reproducible, and no part of the library under test).
struct Reads {
    state: u32,
    max: usize,
}

impl Reads {
    fn new(seed: u16) -> Reads {
        const MAX: [usize; 8] = [1, 2, 3, 7, 64, 1500, 4096, 65_536];
        Reads {
            state: u32::from(seed) | 0x1_0000,
            max: MAX[usize::from(seed & 7)],
        }
    }

    fn next(&mut self) -> usize {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 17;
        self.state ^= self.state << 5;
        1 + self.state as usize % self.max
    }
}

/// RFC 5626 pings (CRLF CRLF) completed in a run of CR/LF bytes, counted without overlap.
fn pings_in(run: &[u8]) -> usize {
    let mut count = 0;
    let mut i = 0;
    while i + 4 <= run.len() {
        if &run[i..i + 4] == b"\r\n\r\n" {
            count += 1;
            i += 4;
        } else {
            i += 1;
        }
    }
    count
}

/// What `next_frame` finds in the whole stream.
struct Reference<'a> {
    messages: Vec<&'a [u8]>,
    pings: usize,
    error: Option<&'static str>,
    left: usize,
}

fn reference(stream: &[u8]) -> Reference<'_> {
    let mut at = 0;
    let mut found = Reference {
        messages: Vec::new(),
        pings: 0,
        error: None,
        left: 0,
    };
    loop {
        match next_frame(&stream[at..]) {
            Frame::Message(len) => {
                assert!(len > 0 && len <= MAX_MESSAGE && at + len <= stream.len());
                found.messages.push(&stream[at..at + len]);
                at += len;
            }
            Frame::KeepAlive { len, ping } => {
                assert!(len > 0);
                let pings = pings_in(&stream[at..at + len]);
                assert_eq!(ping, pings > 0);
                found.pings += pings;
                at += len;
            }
            Frame::Incomplete => break,
            Frame::Invalid(why) => {
                found.error = Some(why);
                break;
            }
        }
    }
    found.left = stream.len() - at;
    found
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let seed = u16::from_be_bytes([control(&mut u), control(&mut u)]);
    let stream = u.take_rest();
    let mut reads = (seed != 0).then(|| Reads::new(seed));

    let mut buffer = StreamBuffer::new();
    let mut messages: Vec<Vec<u8>> = Vec::new();
    let mut pings = 0;
    let mut error = None;
    let mut fed = 0;
    'stream: while fed < stream.len() {
        let space = buffer.read_space();
        assert!(!space.is_empty(), "no room to read into");
        let wanted = reads.as_mut().map_or(usize::MAX, Reads::next);
        let n = wanted.min(space.len()).min(stream.len() - fed);
        space[..n].copy_from_slice(&stream[fed..fed + n]);
        buffer.filled(n);
        fed += n;
        assert!(
            buffer.size() <= BUFFER_LIMIT,
            "buffer grew to {}",
            buffer.size()
        );
        loop {
            let before = buffer.buffered();
            match buffer.take_frame() {
                Ok(None) => break,
                Ok(Some(frame)) => {
                    assert!(buffer.buffered() < before, "a frame that consumed nothing");
                    match frame {
                        Framed::Message(message) => {
                            assert!(!message.is_empty() && message.len() <= MAX_MESSAGE);
                            assert!(message[0] != b'\r' && message[0] != b'\n');
                            messages.push(message);
                        }
                        Framed::KeepAlive { pings: n } => pings += n,
                    }
                }
                Err(err) => {
                    // Broken for good.
                    assert_eq!(buffer.take_frame(), Err(err));
                    error = Some(err.reason());
                    break 'stream;
                }
            }
        }
    }

    let expected = reference(stream);
    assert_eq!(error, expected.error, "a different verdict on the stream");
    assert_eq!(
        messages.len(),
        expected.messages.len(),
        "a different number of messages"
    );
    for (got, want) in messages.iter().zip(&expected.messages) {
        assert_eq!(got.as_slice(), *want);
    }
    if error.is_none() {
        assert_eq!(pings, expected.pings, "a different number of pings");
        assert_eq!(
            buffer.buffered(),
            expected.left,
            "different bytes left over"
        );
    }
});

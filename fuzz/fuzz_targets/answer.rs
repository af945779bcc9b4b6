//! uacregctl's streaming reader of a JSON-RPC answer (`rpc::array_answer`): any bytes from the
//! daemon's socket, fed in pieces cut where the input says. Whatever the cuts, the parser hands
//! out the same elements and ends the same way as when it is fed everything at once.

#![no_main]

use libfuzzer_sys::fuzz_target;
use uacreg::fuzzing::ArrayAnswerParser;

/// Elements handed out and how the answer ended, feeding `data` in pieces of `sizes` (cycled).
fn run(data: &[u8], sizes: &[usize]) -> (Vec<Vec<u8>>, String) {
    let mut parser = ArrayAnswerParser::new(1);
    let mut elements = Vec::new();
    let mut at = 0;
    let mut turn = 0;
    while at < data.len() {
        let size = sizes[turn % sizes.len()].max(1);
        turn += 1;
        let mut piece = &data[at..(at + size).min(data.len())];
        at += piece.len();
        while !piece.is_empty() {
            match parser.feed(piece) {
                Ok((used, element)) => {
                    if let Some(element) = element {
                        elements.push(element.to_vec());
                    }
                    piece = &piece[used..];
                }
                Err(err) => return (elements, format!("malformed: {err}")),
            }
        }
    }
    let end = match parser.finish() {
        Ok(end) => format!("{end:?}"),
        Err(err) => format!("malformed: {err}"),
    };
    assert!(elements.len() as u64 <= parser.elements());
    (elements, end)
}

fuzz_target!(|data: &[u8]| {
    let Some((&cuts, answer)) = data.split_first() else {
        return;
    };
    let whole = run(answer, &[answer.len().max(1)]);
    let sizes = [usize::from(cuts & 7) + 1, usize::from(cuts >> 3) + 1];
    let pieces = run(answer, &sizes);
    assert_eq!(whole.0, pieces.0, "the same elements whatever the cuts");
    // An error may be found at a different byte, but an answer is whole or not either way.
    assert_eq!(
        whole.1.starts_with("malformed"),
        pieces.1.starts_with("malformed"),
        "{} / {}",
        whole.1,
        pieces.1
    );
});

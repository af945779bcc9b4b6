//! What the fuzz targets share: how an input is laid out, and the pieces of the daemon's state a
//! message meets on its way in (registrations with requests in flight, the relay's key).
//!
//! Every SIP target reads a few *control bytes* first (which registration a response claims to
//! answer, which way it arrived, who sent a request …) and takes the rest as the message, so a
//! seed is a captured message behind a short prefix and libFuzzer mutates both. Control bytes
//! are read with `arbitrary`'s [`Unstructured`], one byte each from the front; a missing byte
//! reads as 0, the default choice. The layout of each target's prefix is in its own file and
//! in `fuzz/README.md`.
//!
//! * [`in_flight`] — a registration table and client transactions with REGISTERs in flight,
//!   driven the way the daemon drives them, to deliver fuzzed responses to.
//! * [`placeholders`] — `$branch`, `$call-id`, `$cseq`, `$relay-branch`: what a captured
//!   message cannot know (the random branch of a live transaction) is filled in at run time.
//! * [`rows`] — realistic and arbitrary `uacreg` rows.

pub mod in_flight;
pub mod placeholders;
pub mod rows;

pub use libfuzzer_sys::arbitrary::Unstructured;

/// Largest message the daemon accepts anywhere.
pub use uacreg::sip::MAX_MESSAGE;

/// The next control byte (0 once the input is exhausted).
pub fn control(u: &mut Unstructured<'_>) -> u8 {
    u.arbitrary::<u8>().unwrap_or(0)
}

/// The parts of an input that holds several messages, each behind `N` control bytes:
/// `control message NUL control message NUL …` (a NUL never occurs in a SIP head), at most
/// `max` of them. Missing control bytes read as 0.
pub fn parts<const N: usize>(data: &[u8], max: usize) -> Vec<([u8; N], &[u8])> {
    let mut found = Vec::new();
    let mut rest = data;
    while found.len() < max && (found.is_empty() || !rest.is_empty()) {
        let mut u = Unstructured::new(rest);
        let mut control_bytes = [0u8; N];
        for byte in &mut control_bytes {
            *byte = control(&mut u);
        }
        rest = &rest[rest.len().min(N)..];
        let end = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
        found.push((control_bytes, &rest[..end]));
        rest = rest.get(end + 1..).unwrap_or(&[]);
    }
    found
}

/// The head of a message: everything before the first empty line.
pub fn head(message: &[u8]) -> &[u8] {
    message
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(message, |end| &message[..end])
}

//! The size limits of every SIP entry point, in one place so that no path accepts what another
//! refuses: the stream framer, the datagram receiver, the response parser and the relay all
//! read these.

/// Largest SIP message uacreg accepts anywhere: on a stream (head plus declared body), as a
/// datagram, and as a head to parse. 65,535 bytes so that every UDP datagram fits and a receive
/// buffer of this size never truncates one; registrations, their challenges and relayed calls
/// stay far below it.
pub const MAX_MESSAGE: usize = 65_535;

/// Most header lines (after unfolding) a head may have. A registrar's answer has a dozen, a
/// relayed INVITE a few dozen; more is an attempt to make us do work.
pub const MAX_HEADERS: usize = 256;

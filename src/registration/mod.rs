//! The protocol core: what to send when, for every row, without doing any I/O.
//!
//! Modelled on quinn-proto: [`RegistrationTable`] is driven by explicit calls —
//! `reload`, `handle_response`, `handle_transaction_failure`, `handle_timeout(now)` — and hands
//! back [`Action`]s plus a `next_deadline()` for the caller's single timer. Time is always a
//! parameter, so tests can run 100,000 registrations through a simulated day deterministically,
//! and the async driver stays a thin loop around sockets and a sleep.
//!
//! * [`record`] — a validated row and what it means on the wire.
//! * [`machine`] — one registration's state machine.
//! * [`table`] — all registrations, the timer queue, reload diffs, operator commands.
//! * [`policy`] — refresh timing and failure back-off.
//! * [`calendar`] — refreshes scheduled per second, so bunched refreshes spread out.
//! * `timer_queue` — every armed timer in firing order, in 16-byte entries.

mod by_key;
pub mod calendar;
pub mod machine;
pub mod policy;
pub mod record;
pub mod table;
mod timer_queue;

pub use machine::{
    Action, CONTINUED_CSEQ_STEP, Continuation, RegKey, Registration, Snapshot, Status,
};
pub use policy::RetryPolicy;
pub use record::{
    Credentials, Destination, FLAG_DISABLED, MAX_RECORD_TEXT, Record, RecordFields, RecordTooLong,
    Secret, Transport,
};
pub use table::{
    AlreadyExists, Attribute, CoreConfig, CoreCounters, RegistrationTable, ReloadSummary,
    TIMERS_PER_CALL, TRANSITIONS_KEPT, Transition, sort_by_l_uuid,
};

#[cfg(test)]
mod tests;

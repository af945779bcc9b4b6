//! One registration's state machine.
//!
//! A [`Registration`] owns everything about one binding at one registrar: the row it came from,
//! the dialog-like identifiers RFC 3261 §10.2 wants kept stable (Call-ID, From tag, increasing
//! CSeq), the last digest challenge (so refreshes can carry credentials up front), what the
//! operator wants (registered or not) and what the registrar last said.
//!
//! It reacts to three things — a response, a transaction timeout, its own timer — and to operator
//! commands, always with `now` passed in. Each reaction may queue [`Action`]s in the [`Ctx`] and
//! (re)arm the registration's single timer; the table does the bookkeeping around it. Nothing here
//! sends, sleeps or reads a clock.
//!
//! While a request is in flight the timer is its guard ([`RetryPolicy::in_flight_guard`]): a
//! registration never waits for an answer without a deadline, so no lost, refused or forged
//! response can leave a row stuck where neither a reload nor an operator command reaches it.

use std::time::{Duration, Instant};

use rand::Rng;
use rand::rngs::StdRng;

use tracing::{debug, error, info, warn};

use super::calendar::RefreshCalendar;
use super::policy::{Failure, RetryPolicy, Verdict};
use super::record::{Credentials, Destination, Record};
use crate::sip::digest::{Authorization, Challenge, DigestError, SecretInput};
use crate::sip::message::Response;
use crate::sip::register::RegisterRequest;

/// Key of a registration inside the table. Never reused, so a late response for a registration
/// that has since been replaced or removed finds nothing and is dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RegKey(pub u64);

/// What the registration is doing or last achieved, as an operator reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Status {
    /// Loaded; the first REGISTER waits for `reg_delay`.
    Pending,
    /// A REGISTER is in flight and no binding is held yet.
    Registering,
    /// The answer to a digest challenge is in flight.
    Authenticating,
    /// The registrar holds our binding (a refresh may be in flight).
    Registered,
    /// An un-REGISTER (Expires: 0) is in flight.
    Unregistering,
    /// No binding wanted: `expires` is 0, or the binding was removed on request.
    Unregistered,
    /// The row is disabled (`flags & 1`, or `uac.reg_disable`).
    Disabled,
    /// A temporary failure (no answer, 5xx, 6xx, …); a retry is scheduled.
    RetryWait,
    /// A failure retrying will not fix (403, 404, …) or too many retries: no retry until the
    /// operator enables, refreshes or reloads the row.
    Failed,
    /// The registrar rejected our credentials, or challenged a row that has none.
    AuthFailed,
    /// The challenge named a realm other than the row's `realm`: no credentials were sent.
    RealmMismatch,
}

impl Status {
    /// Stable lowercase name used in RPC answers, logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Registering => "registering",
            Status::Authenticating => "authenticating",
            Status::Registered => "registered",
            Status::Unregistering => "unregistering",
            Status::Unregistered => "unregistered",
            Status::Disabled => "disabled",
            Status::RetryWait => "retry_wait",
            Status::Failed => "failed",
            Status::AuthFailed => "auth_failed",
            Status::RealmMismatch => "realm_mismatch",
        }
    }

    pub const ALL: [Status; 11] = [
        Status::Pending,
        Status::Registering,
        Status::Authenticating,
        Status::Registered,
        Status::Unregistering,
        Status::Unregistered,
        Status::Disabled,
        Status::RetryWait,
        Status::Failed,
        Status::AuthFailed,
        Status::RealmMismatch,
    ];
}

/// What the caller must do on behalf of the core.
#[derive(Clone, Debug)]
pub enum Action {
    /// Start a new client transaction carrying `request` to `destination`.
    Send {
        key: RegKey,
        destination: Destination,
        request: RegisterRequest,
    },
}

/// Shared, per-call context: the clock reading, randomness, policy and the action queue.
pub struct Ctx<'a> {
    pub now: Instant,
    pub rng: &'a mut StdRng,
    pub policy: &'a RetryPolicy,
    pub user_agent: &'a std::sync::Arc<str>,
    pub actions: &'a mut Vec<Action>,
    pub counters: &'a mut super::table::CoreCounters,
    /// Refreshes per second already scheduled, for spreading a new one.
    pub calendar: &'a mut RefreshCalendar,
    /// Refreshes allowed in one second (0: refreshes are not spread).
    pub refresh_cap: u32,
}

impl Ctx<'_> {
    /// When the refresh after a success granting `granted` seconds goes: the policy's refresh
    /// point, moved earlier into a second with room when refreshes are spread. The second is
    /// the calendar slot the refresh must be counted in (None: not spread).
    fn refresh_time(&mut self, granted: u32) -> (Instant, Option<u32>) {
        let target = self.now + self.policy.refresh_after(granted, self.rng);
        if self.refresh_cap == 0 {
            return (target, None);
        }
        let earliest = self.now + self.policy.earliest_refresh(granted);
        match self
            .calendar
            .choose(self.now, earliest, target, self.refresh_cap)
        {
            Some(placement) => (placement.at, Some(placement.second)),
            None => (target, None),
        }
    }
}

/// Why the in-flight request was sent; decides what its answer means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Purpose {
    Register,
    Unregister,
}

/// How the credentials of the in-flight request were obtained.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AuthUse {
    /// No Authorization header.
    None,
    /// Computed from a challenge received in an earlier round (nonce reuse on refresh); a
    /// challenge in reply is normal and is answered.
    Cached,
    /// Computed from the challenge just received; a new challenge in reply means the
    /// credentials are wrong (unless the nonce was only stale).
    Fresh,
}

#[derive(Clone, Debug)]
struct InFlight {
    cseq: u32,
    purpose: Purpose,
    expires: u32,
    auth: AuthUse,
}

/// The Call-ID and From tag of a registration's REGISTERs, kept as the random numbers they are
/// written from: 24 bytes instead of two strings (~130 bytes with their heap blocks), which
/// matters at 100,000 rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct DialogIds {
    call_id: [u64; 2],
    from_tag: u64,
}

impl DialogIds {
    fn call_id(&self) -> String {
        let mut call_id = String::with_capacity(39);
        crate::sip::hex::push_fixed(&mut call_id, u128::from(self.call_id[0]), 16);
        crate::sip::hex::push_fixed(&mut call_id, u128::from(self.call_id[1]), 16);
        call_id.push_str("@uacreg");
        call_id
    }

    fn tag(&self) -> String {
        let mut tag = String::with_capacity(16);
        crate::sip::hex::push_fixed(&mut tag, u128::from(self.from_tag), 16);
        tag
    }

    /// The ids `call_id()` and `tag()` wrote, read back (None: not text of ours).
    fn parse(call_id: &str, tag: &str) -> Option<DialogIds> {
        let hex = call_id.strip_suffix("@uacreg")?;
        let lower_hex = |t: &str, len: usize| {
            t.len() == len
                && t.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        if !lower_hex(hex, 32) || !lower_hex(tag, 16) {
            return None;
        }
        Some(DialogIds {
            call_id: [
                u64::from_str_radix(&hex[..16], 16).ok()?,
                u64::from_str_radix(&hex[16..], 16).ok()?,
            ],
            from_tag: u64::from_str_radix(tag, 16).ok()?,
        })
    }

    fn is_call_id(&self, text: &str) -> bool {
        let Some(hex) = text.strip_suffix("@uacreg") else {
            return false;
        };
        // Exactly what call_id() writes: 32 lower-case hex digits (from_str_radix alone would
        // also take a sign or upper case).
        hex.len() == 32
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            && u64::from_str_radix(&hex[..16], 16) == Ok(self.call_id[0])
            && u64::from_str_radix(&hex[16..], 16) == Ok(self.call_id[1])
    }
}

#[cfg(test)]
mod dialog_id_tests {
    use super::DialogIds;

    #[test]
    fn call_id_matches_only_its_own_text() {
        let ids = DialogIds {
            call_id: [0x0123_4567_89ab_cdef, 0xf],
            from_tag: 7,
        };
        let text = ids.call_id();
        assert_eq!(text, "0123456789abcdef000000000000000f@uacreg");
        assert!(ids.is_call_id(&text));
        assert!(!ids.is_call_id(&text.to_uppercase()));
        assert!(!ids.is_call_id("+123456789abcdef000000000000000f@uacreg"));
        assert!(!ids.is_call_id("0123456789abcdef000000000000000e@uacreg"));
        assert!(!ids.is_call_id("0123456789abcdef000000000000000f@other"));
        assert!(!ids.is_call_id("é"));
        assert_eq!(ids.tag(), "0000000000000007");
    }
}

/// A digest challenge kept for answering this and future requests with the same nonce.
///
/// A registration keeps one per kind and realm (RFC 3261 §22.3): an authenticating outbound
/// proxy (407, `Proxy-Authorization`) and the registrar behind it (401, `Authorization`) each
/// challenge in turn, and every later request must answer both.
#[derive(Clone, Debug)]
struct KeptChallenge {
    challenge: Challenge,
    /// Answers computed from this challenge so far: 1 means only the request just sent carried
    /// one, so a new challenge for the same realm in reply rejects our credentials.
    nonce_count: u32,
}

impl KeptChallenge {
    fn is_for(&self, challenge: &Challenge) -> bool {
        self.challenge.proxy == challenge.proxy && self.challenge.realm() == challenge.realm()
    }
}

/// At most this many challenges are kept per registration (a proxy and a registrar need two);
/// a registrar that keeps naming new realms cannot grow it without bound.
const MAX_KEPT_CHALLENGES: usize = 4;

/// Challenge rounds answered within one round of registering; a peer that challenges forever
/// (new realms, fresh nonces for good answers) ends in an authentication failure.
const MAX_CHALLENGE_ROUNDS: u8 = 4;

/// Operator-visible facts about a registration at one instant; what RPC renders.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub key: RegKey,
    pub record: Record,
    pub status: Status,
    /// Whether a REGISTER is out, and whether it carries an answer to a challenge (what
    /// Kamailio shows as its ONGOING and AUTHSENT flag bits).
    pub in_flight: bool,
    pub auth_sent: bool,
    pub initialized: bool,
    pub operator_disabled: bool,
    /// When the current round of registering started (Kamailio's `reg_init`).
    pub reg_init: Option<Instant>,
    /// When the next thing happens for this row (refresh, retry, first REGISTER).
    pub next_action: Option<Instant>,
    /// When the binding the registrar granted runs out.
    pub binding_expires: Option<Instant>,
    /// Expiry the registrar granted last time.
    pub granted_expires: Option<u32>,
    pub last_code: Option<u16>,
    pub last_reason: String,
    pub expected_realm: Option<String>,
    pub offered_realm: Option<String>,
    pub failures: u32,
    pub registers_sent: u64,
    pub last_registered: Option<Instant>,
}

/// How far a node that continues another node's dialog moves the CSeq on: the old node may have
/// sent a few more REGISTERs after it last wrote its state down (a challenge and its answer per
/// round, rounds seconds apart), and the registrar only accepts a higher CSeq for the same
/// Call-ID (RFC 3261 §10.3, step 7).
pub const CONTINUED_CSEQ_STEP: u32 = 100;

/// CSeq numbers must stay below 2**31 (RFC 3261 §8.1.1.5); a dialog that would pass it starts
/// afresh instead.
const MAX_CSEQ: u32 = 1 << 31;

/// A registration's dialog as another node needs it to carry on with the same binding: the
/// same Call-ID and From tag, a higher CSeq, and how long the binding has left. Times are
/// relative to the `now` it was taken at, so no clock is read here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Continuation {
    pub call_id: String,
    pub from_tag: String,
    /// The CSeq the next REGISTER would carry.
    pub next_cseq: u32,
    /// What the registrar granted last, with how much of it is left (None: no binding known).
    pub binding: Option<(u32, Duration)>,
    /// The Contact URI the binding was made with (empty: unknown).
    pub contact: String,
}

/// One row's registration.
#[derive(Debug)]
pub struct Registration {
    key: RegKey,
    record: Record,
    status: Status,
    /// Operator switch from `uac.reg_disable` / `reg_enable`, on top of the row's own flag.
    operator_disabled: bool,
    /// `uac.reg_unregister`: binding taken back on request; `reg_register` or a changed row
    /// undoes it.
    operator_unregistered: bool,
    /// Being removed (row deleted or replaced): un-register if needed, then drop.
    leaving: bool,

    /// Random bits the Call-ID and From tag are written from (see [`DialogIds`]).
    ids: DialogIds,
    next_cseq: u32,
    /// Expiry we ask for; starts at the row's `expires`, raised by a 423's Min-Expires.
    requested_expires: u32,

    in_flight: Option<InFlight>,
    /// Challenges kept for answering (empty: none; one heap block for all of them).
    auth: Box<[KeptChallenge]>,
    /// Challenges answered in the current round after a stale nonce (bounded to one).
    stale_answers: u8,
    /// Challenges answered in the current round (bounded by [`MAX_CHALLENGE_ROUNDS`]).
    challenge_rounds: u8,
    /// 423 answers followed in the current round (bounded).
    interval_raises: u8,

    timer: Option<Instant>,
    /// The calendar second `timer` is counted in when it is a spread refresh. Set only with
    /// the timer ([`Registration::arm_refresh`]) and cleared with every other change of it, so
    /// the table can keep the calendar exact by comparing it before and after each call.
    refresh_second: Option<u32>,
    reg_init: Option<Instant>,
    binding_expires: Option<Instant>,
    granted_expires: Option<u32>,
    last_code: Option<u16>,
    /// Boxed, not growable: one per row, rewritten whole by each answer.
    last_reason: Box<str>,
    /// The realm a registrar challenged for when it was not the row's `realm` (the expected
    /// one, which the record holds); cleared by any other outcome.
    offered_realm: Option<Box<str>>,
    failures: u32,
    /// 32 bits (saturating) keep the registration within a 320-byte allocator class; a row
    /// refreshing every minute takes 8,000 years to fill them.
    registers_sent: u32,
    last_registered: Option<Instant>,
    /// A binding may exist at the registrar (we sent a REGISTER that may have been accepted).
    maybe_bound: bool,
    /// Taken over from another node whose contact differed: removed with the next REGISTER.
    retire_contact: Option<Box<str>>,
    /// The row or the operator's wishes changed while a request was in flight.
    redo_after_flight: bool,
}

impl Registration {
    /// A registration for `record`; call [`Registration::start`] to schedule its first REGISTER.
    pub fn new(key: RegKey, record: Record, rng: &mut StdRng) -> Registration {
        let requested_expires = record.expires;
        Registration {
            key,
            record,
            status: Status::Pending,
            operator_disabled: false,
            operator_unregistered: false,
            leaving: false,
            ids: DialogIds {
                call_id: [rng.random::<u64>(), rng.random::<u64>()],
                from_tag: rng.random::<u64>(),
            },
            next_cseq: 1,
            requested_expires,
            in_flight: None,
            auth: Box::default(),
            stale_answers: 0,
            challenge_rounds: 0,
            interval_raises: 0,
            timer: None,
            refresh_second: None,
            reg_init: None,
            binding_expires: None,
            granted_expires: None,
            last_code: None,
            last_reason: Box::default(),
            offered_realm: None,
            failures: 0,
            registers_sent: 0,
            last_registered: None,
            maybe_bound: false,
            retire_contact: None,
            redo_after_flight: false,
        }
    }

    pub fn key(&self) -> RegKey {
        self.key
    }
    pub fn record(&self) -> &Record {
        &self.record
    }
    pub fn last_code(&self) -> Option<u16> {
        self.last_code
    }

    pub fn status(&self) -> Status {
        self.status
    }
    pub fn timer(&self) -> Option<Instant> {
        self.timer
    }
    /// Last final response (code, reason), as `uac.reg_info` shows it.
    pub fn last_response(&self) -> (Option<u16>, &str) {
        (self.last_code, &self.last_reason)
    }
    /// When the registrar last accepted the binding.
    pub fn last_registered(&self) -> Option<Instant> {
        self.last_registered
    }
    /// When the binding the registrar granted runs out.
    pub fn binding_expires(&self) -> Option<Instant> {
        self.binding_expires
    }
    /// Failures in a row.
    pub fn failures(&self) -> u32 {
        self.failures
    }
    /// The calendar second this registration's refresh timer is counted in, if spread.
    pub(super) fn refresh_second(&self) -> Option<u32> {
        self.refresh_second
    }
    /// The table popped this registration's timer from its queue; returns the calendar second
    /// the timer was counted in, for the table to count it out.
    pub(super) fn clear_timer(&mut self) -> Option<u32> {
        self.timer = None;
        self.refresh_second.take()
    }
    /// Arms (or disarms) the timer for anything but a spread refresh.
    fn set_timer(&mut self, at: Option<Instant>) {
        self.timer = at;
        self.refresh_second = None;
    }
    /// Arms the in-flight guard: `in_flight_guard` from now, unless the timer already runs out
    /// within the last sixteenth of that (armed a moment ago, for this round's previous request
    /// or this one). A challenge answered in milliseconds then keeps the guard of the request it
    /// answers instead of moving the timer twice more: at a million rows each move is a search
    /// of the table's timer queue. A request that waited in the send queue or on an earlier
    /// server is still given at least 15/16 of the guard from when it went out.
    fn arm_guard(&mut self, ctx: &Ctx<'_>) {
        let guard = ctx.policy.in_flight_guard;
        let full = ctx.now + guard;
        let fresh = self.refresh_second.is_none()
            && self
                .timer
                .is_some_and(|at| at <= full && at >= full - guard / 16);
        if !fresh {
            self.set_timer(Some(full));
        }
    }
    /// Arms the refresh timer; `second` is its calendar slot when it was spread.
    fn arm_refresh(&mut self, at: Instant, second: Option<u32>) {
        self.timer = Some(at);
        self.refresh_second = second;
    }
    pub fn is_leaving(&self) -> bool {
        self.leaving
    }
    /// The CSeq of the request in flight, if any (the driver drops queued sends that are no
    /// longer current).
    pub fn in_flight_cseq(&self) -> Option<u32> {
        self.in_flight.as_ref().map(|f| f.cseq)
    }
    /// A leaving registration with nothing more to do can be dropped from the table.
    pub fn is_finished(&self) -> bool {
        self.leaving && self.in_flight.is_none() && self.timer.is_none()
    }

    /// Whether the operator and the row want a binding.
    fn wants_binding(&self) -> bool {
        !self.leaving
            && !self.operator_disabled
            && !self.operator_unregistered
            && !self.record.is_disabled()
            && self.record.expires > 0
    }

    /// Schedules the first REGISTER (after `reg_delay`) or settles in the idle state the row asks
    /// for.
    pub fn start(&mut self, ctx: &mut Ctx<'_>) {
        if self.wants_binding() {
            self.status = Status::Pending;
            let delay = ctx
                .policy
                .first_register_after(self.record.reg_delay, ctx.rng);
            self.set_timer(Some(ctx.now + delay));
        } else {
            self.settle_idle();
        }
    }

    /// The dialog as of `now`, for the node that takes this row over.
    pub fn continuation(&self, now: Instant) -> Continuation {
        let binding = match (self.maybe_bound, self.granted_expires, self.binding_expires) {
            (true, Some(granted), Some(expires)) if expires > now => Some((granted, expires - now)),
            _ => None,
        };
        Continuation {
            call_id: self.ids.call_id(),
            from_tag: self.ids.tag(),
            next_cseq: self.next_cseq,
            binding,
            contact: self
                .retire_contact
                .as_deref()
                .map_or_else(|| self.record.contact_uri(), str::to_owned),
        }
    }

    /// Takes over the dialog another node kept for this row, instead of [`Registration::start`]:
    /// its next REGISTER carries the same Call-ID and From tag and a higher CSeq, so the
    /// registrar replaces the binding rather than adding one. A binding with time left counts
    /// as registered and is refreshed when the old node would have refreshed it (or within a
    /// few seconds, if that moment has passed). False, and nothing changed, when the dialog
    /// cannot be continued (not ids of ours, or CSeq at its limit): start afresh then.
    pub fn continue_dialog(&mut self, ctx: &mut Ctx<'_>, from: &Continuation) -> bool {
        let Some(ids) = DialogIds::parse(&from.call_id, &from.from_tag) else {
            return false;
        };
        let Some(next_cseq) = from
            .next_cseq
            .checked_add(CONTINUED_CSEQ_STEP)
            .filter(|c| *c < MAX_CSEQ)
        else {
            return false;
        };
        self.ids = ids;
        self.next_cseq = next_cseq.max(1);
        // The previous node's contact (its own address) goes away with our first REGISTER.
        if !from.contact.is_empty() && from.contact != self.record.contact_uri() {
            self.retire_contact = Some(from.contact.as_str().into());
        }
        let Some((granted, left)) = from.binding.filter(|(g, l)| *g > 0 && !l.is_zero()) else {
            self.start(ctx);
            return true;
        };
        self.maybe_bound = true;
        if !self.wants_binding() {
            // The row does not want a binding here: take it back now (it is ours to end).
            self.status = Status::Registered;
            self.set_timer(Some(ctx.now));
            return true;
        }
        self.status = Status::Registered;
        self.granted_expires = Some(granted);
        self.binding_expires = Some(ctx.now + left);
        let elapsed = Duration::from_secs(u64::from(granted)).saturating_sub(left);
        let due_after_grant = ctx.policy.refresh_after(granted, ctx.rng);
        let at = match due_after_grant.checked_sub(elapsed) {
            Some(wait) if !wait.is_zero() => ctx.now + wait,
            // Overdue: soon, but spread over a few seconds so a takeover is no burst.
            _ => {
                let spread_ms = (left.as_millis() / 4).min(5_000) as u64;
                let jitter = if spread_ms > 0 {
                    ctx.rng.random_range(0..=spread_ms)
                } else {
                    0
                };
                ctx.now + Duration::from_millis(jitter)
            }
        };
        self.arm_refresh(at, None);
        true
    }

    /// Lets go of the row without a word to the registrar: another node continues its binding.
    /// Afterwards the registration is finished and the table drops it.
    pub fn abandon(&mut self) {
        self.leaving = true;
        self.in_flight = None;
        self.set_timer(None);
    }

    /// Idle status for a row that wants no binding.
    fn settle_idle(&mut self) {
        self.set_timer(None);
        self.status = if self.operator_disabled || self.record.is_disabled() {
            Status::Disabled
        } else {
            Status::Unregistered
        };
    }

    /// The registration's timer fired.
    pub fn handle_timer(&mut self, ctx: &mut Ctx<'_>) {
        self.set_timer(None);
        if let Some(flight) = self.in_flight.clone() {
            // The guard: whatever became of the request, it will not be answered now.
            let guard = ctx.policy.in_flight_guard.as_secs();
            warn!(
                l_uuid = %self.record.l_uuid(),
                cseq = flight.cseq,
                "no final response within {guard} s of sending (or queueing) the request"
            );
            self.fail_in_flight(ctx, &flight, &format!("no final response within {guard} s"));
            return;
        }
        if self.wants_binding() {
            self.begin_round(ctx, Purpose::Register);
        } else if self.maybe_bound {
            self.begin_round(ctx, Purpose::Unregister);
        } else if !self.leaving {
            self.settle_idle();
        }
    }

    /// Starts a new round (fresh REGISTER or un-REGISTER, not an answer to a challenge).
    fn begin_round(&mut self, ctx: &mut Ctx<'_>, purpose: Purpose) {
        self.stale_answers = 0;
        self.challenge_rounds = 0;
        self.interval_raises = 0;
        self.reg_init = Some(ctx.now);
        match purpose {
            Purpose::Register => {
                if self.status != Status::Registered {
                    self.status = Status::Registering;
                }
            }
            Purpose::Unregister => self.status = Status::Unregistering,
        }
        // Reuse the last nonce if we have one: most registrars accept it within its lifetime,
        // which saves a round trip; if not, they challenge and we answer that.
        self.send_with_cached_auth(ctx, purpose);
    }

    /// Sends with credentials computed from the last challenge (next nonce count), or without
    /// any when there is none to reuse.
    fn send_with_cached_auth(&mut self, ctx: &mut Ctx<'_>, purpose: Purpose) {
        let (auth, _) = self.answer_kept_challenges(ctx);
        let auth_use = if auth.is_empty() {
            AuthUse::None
        } else {
            AuthUse::Cached
        };
        self.send(ctx, purpose, auth, auth_use);
    }

    fn send(
        &mut self,
        ctx: &mut Ctx<'_>,
        purpose: Purpose,
        authorization: Vec<(&'static str, String)>,
        auth: AuthUse,
    ) {
        let expires = match purpose {
            Purpose::Register => self.requested_expires,
            Purpose::Unregister => 0,
        };
        let cseq = self.next_cseq;
        self.next_cseq = self.next_cseq.wrapping_add(1).max(1);
        let request = RegisterRequest {
            request_uri: self.record.request_uri(),
            aor: self.record.aor(),
            from_tag: self.ids.tag(),
            call_id: self.ids.call_id(),
            cseq,
            contact_uri: self.record.contact_uri(),
            expires,
            retire_contact: self.retire_contact.clone(),
            authorization,
            user_agent: ctx.user_agent.clone(),
        };
        self.in_flight = Some(InFlight {
            cseq,
            purpose,
            expires,
            auth,
        });
        self.registers_sent = self.registers_sent.saturating_add(1);
        if purpose == Purpose::Register {
            self.maybe_bound = true;
        }
        self.arm_guard(ctx);
        ctx.actions.push(Action::Send {
            key: self.key,
            destination: self.record.destination.clone(),
            request,
        });
    }

    fn authorize(
        &self,
        ctx: &mut Ctx<'_>,
        challenge: &Challenge,
        credentials: &Credentials,
        nc: u32,
    ) -> Result<(&'static str, String), DigestError> {
        let secret = match credentials {
            Credentials::Password { password, .. } => SecretInput::Password(password.expose()),
            Credentials::Ha1 { ha1, .. } => SecretInput::Ha1(ha1.expose()),
        };
        let mut cnonce = String::with_capacity(32);
        crate::sip::hex::push_fixed(&mut cnonce, ctx.rng.random::<u128>(), 32);
        let value = Authorization::answer_header(
            challenge,
            credentials.username(),
            secret,
            "REGISTER",
            &self.record.request_uri(),
            b"",
            nc,
            &cnonce,
        )?;
        let name = if challenge.proxy {
            "Proxy-Authorization"
        } else {
            "Authorization"
        };
        Ok((name, value))
    }

    /// A final response for the request with `response.cseq` arrived.
    pub fn handle_response(&mut self, ctx: &mut Ctx<'_>, response: &Response) {
        let Some(flight) = self.in_flight.clone() else {
            return;
        };
        if response.code < 200 || response.cseq != flight.cseq {
            // Provisional, or for an earlier request: the one in flight is still being worked
            // on (and its guard still runs).
            return;
        }
        if !self.ids.is_call_id(&response.call_id) || response.cseq_method != "REGISTER" {
            // The transaction layer matched this response to our request and ended it, yet it
            // is not an answer to it: nothing else will come for this request, so count it as
            // unanswered now rather than waiting for the guard.
            warn!(
                l_uuid = %self.record.l_uuid(),
                cseq = flight.cseq,
                "a response delivered for our request carries another Call-ID or method; counting the request as unanswered"
            );
            self.fail_in_flight(ctx, &flight, "response for another request");
            return;
        }
        self.in_flight = None;
        self.last_code = Some(response.code);
        self.last_reason = response.reason.as_ref().into();
        match response.code {
            200..=299 => self.on_success(ctx, &flight, response),
            401 | 407 => self.on_challenge(ctx, &flight, response),
            423 => self.on_interval_too_brief(ctx, &flight, response),
            code => self.on_failure(ctx, &flight, Failure::Response(code), response.retry_after),
        }
    }

    /// The transaction carrying request `cseq` timed out (timer F) or could not be sent.
    pub fn handle_transaction_failure(&mut self, ctx: &mut Ctx<'_>, cseq: u32, reason: &str) {
        let Some(flight) = self.in_flight.clone() else {
            return;
        };
        if flight.cseq != cseq {
            return;
        }
        self.fail_in_flight(ctx, &flight, reason);
    }

    /// The request in flight ends without an answer (timer F, a broken connection, the guard,
    /// a refused response): a temporary failure, retried by the policy.
    fn fail_in_flight(&mut self, ctx: &mut Ctx<'_>, flight: &InFlight, reason: &str) {
        self.in_flight = None;
        self.last_code = Some(408);
        self.last_reason = reason.into();
        self.on_failure(ctx, flight, Failure::NoResponse, None);
    }

    /// The driver put request `cseq` on the wire (first time, or to another server): the guard
    /// counts from now (give or take a sixteenth, see `arm_guard`), so time spent in the send
    /// queue or on earlier servers does not shorten the time this server has to answer.
    pub fn request_sent(&mut self, ctx: &mut Ctx<'_>, cseq: u32) {
        if self.in_flight.as_ref().is_some_and(|f| f.cseq == cseq) {
            self.arm_guard(ctx);
        }
    }

    fn on_success(&mut self, ctx: &mut Ctx<'_>, flight: &InFlight, response: &Response) {
        self.failures = 0;
        // Any 2xx applied the whole request, the old contact's removal included.
        self.retire_contact = None;
        self.offered_realm = None;
        if flight.purpose == Purpose::Unregister {
            self.maybe_bound = false;
            self.binding_expires = None;
            self.granted_expires = None;
            debug!(l_uuid = %self.record.l_uuid(), "binding removed");
            self.after_round(ctx);
            return;
        }
        // A registrar may shorten what we asked for, never lengthen it (RFC 3261 §10.3): a
        // larger grant, up to `expires=4294967295`, would park the row without refreshes.
        let offered = self.granted_expiry(flight.expires, response);
        let granted = offered.min(flight.expires).min(ctx.policy.max_expires);
        if granted < offered {
            debug!(
                l_uuid = %self.record.l_uuid(),
                offered,
                granted,
                "registrar granted more than we asked for; refreshing as if it had granted what we asked"
            );
        }
        if granted == 0 {
            // A 200 that grants nothing leaves us without a binding: treat it as a failure
            // rather than refreshing in a tight loop.
            warn!(l_uuid = %self.record.l_uuid(), "registrar answered 200 but granted no expiry");
            self.last_reason = "200 OK without a binding for our contact".into();
            self.on_failure(ctx, flight, Failure::NoResponse, None);
            return;
        }
        if self.status != Status::Registered {
            info!(l_uuid = %self.record.l_uuid(), expires = granted, "registered");
        }
        self.status = Status::Registered;
        ctx.counters.registered += 1;
        self.granted_expires = Some(granted);
        self.binding_expires = Some(ctx.now + Duration::from_secs(u64::from(granted)));
        self.last_registered = Some(ctx.now);
        if self.wants_binding() && !std::mem::take(&mut self.redo_after_flight) {
            let (at, second) = ctx.refresh_time(granted);
            self.arm_refresh(at, second);
        } else {
            // Disabled or removed while the REGISTER was in flight: take the binding back.
            self.set_timer(Some(ctx.now));
        }
    }

    /// Expiry the registrar granted us: the `expires` parameter of our own Contact among those
    /// listed, else the Expires header, else what we asked for.
    fn granted_expiry(&self, requested: u32, response: &Response) -> u32 {
        // Exact match first; then, like Kamailio, by user part alone, since a registrar behind
        // NAT handling may rewrite the host of the contact it stores.
        let ours = response
            .contacts
            .iter()
            .find(|c| self.is_our_contact(&c.uri, true))
            .or_else(|| {
                response
                    .contacts
                    .iter()
                    .find(|c| self.is_our_contact(&c.uri, false))
            });
        match ours {
            Some(contact) => contact.expires.or(response.expires).unwrap_or(requested),
            None => {
                if !response.contacts.is_empty() {
                    debug!(
                        l_uuid = %self.record.l_uuid(),
                        "our contact is not among the {} bindings in the 200 OK",
                        response.contacts.len()
                    );
                }
                response.expires.unwrap_or(requested)
            }
        }
    }

    fn is_our_contact(&self, uri: &crate::sip::message::UriParts, exact_host: bool) -> bool {
        if uri.user.as_deref() != Some(self.record.contact_user_part()) {
            return false;
        }
        if exact_host {
            let (host, port) = split_host_port(self.record.contact_host_port());
            if !uri.host.eq_ignore_ascii_case(host)
                || uri.port.unwrap_or(5060) != port.unwrap_or(5060)
            {
                return false;
            }
        }
        if !self.record.contact_user().is_empty() {
            let line = uri
                .params
                .iter()
                .find(|(name, _)| name == "line")
                .and_then(|(_, v)| v.as_deref());
            return line == Some(self.record.l_uuid());
        }
        true
    }

    fn on_challenge(&mut self, ctx: &mut Ctx<'_>, flight: &InFlight, response: &Response) {
        let proxy = response.code == 407;
        let raw = if proxy {
            &response.proxy_authenticate
        } else {
            &response.www_authenticate
        };
        let challenges: Vec<Challenge> = raw
            .iter()
            .filter_map(|value| Challenge::parse(value, proxy).ok())
            .collect();
        let Some(challenge) = self.pick_challenge(&challenges) else {
            self.last_reason =
                format!("{} without a usable digest challenge", response.code).into();
            self.on_failure(ctx, flight, Failure::Credentials, None);
            return;
        };

        let expected = self.record.realm();
        if !expected.is_empty() && challenge.realm() != expected {
            error!(
                l_uuid = %self.record.l_uuid(),
                expected_realm = %expected,
                offered_realm = %challenge.realm(),
                "realm mismatch: the registrar challenged for realm \"{}\" but the row names \"{}\"; no credentials sent",
                challenge.realm(),
                expected
            );
            self.offered_realm = Some(challenge.realm().into());
            self.last_reason = format!(
                "realm mismatch: expected \"{}\", offered \"{}\"",
                expected,
                challenge.realm()
            )
            .into();
            self.auth = Box::default();
            self.on_failure(ctx, flight, Failure::RealmMismatch, None);
            return;
        }

        let Some(credentials) = self.record.credentials() else {
            warn!(l_uuid = %self.record.l_uuid(), "challenged, but the row has no credentials");
            self.last_reason = "challenged, but the row has no auth_username/password".into();
            self.on_failure(ctx, flight, Failure::Credentials, None);
            return;
        };

        // A challenge for a realm whose answer went out in this very request (computed from the
        // challenge received just before) rejects our credentials, unless only the nonce was
        // stale. A challenge for a realm not answered yet is the next hop asking in turn (a
        // registrar behind an authenticating proxy); one answered from a kept challenge means
        // the nonce we reused has expired.
        let rejected = self
            .auth
            .iter()
            .any(|kept| kept.is_for(&challenge) && kept.nonce_count == 1);
        if rejected {
            if challenge.stale && self.stale_answers == 0 {
                self.stale_answers += 1;
            } else {
                error!(
                    l_uuid = %self.record.l_uuid(),
                    username = %credentials.username(),
                    realm = %challenge.realm(),
                    "authentication failed: the registrar rejected our credentials"
                );
                self.last_reason = format!("{} after credentials were sent", response.code).into();
                self.auth = Box::default();
                self.on_failure(ctx, flight, Failure::Credentials, None);
                return;
            }
        }
        if self.challenge_rounds >= MAX_CHALLENGE_ROUNDS {
            warn!(
                l_uuid = %self.record.l_uuid(),
                rounds = self.challenge_rounds,
                "challenged again and again; giving up this round"
            );
            self.last_reason = format!(
                "{} after {} answered challenges",
                response.code, self.challenge_rounds
            )
            .into();
            self.auth = Box::default();
            self.on_failure(ctx, flight, Failure::Credentials, None);
            return;
        }
        // The challenge is kept beside the others and all are answered at once; the new one
        // comes last.
        self.keep_challenge(challenge);
        let (headers, refused) = self.answer_kept_challenges(ctx);
        if let Some(err) = refused {
            warn!(l_uuid = %self.record.l_uuid(), "cannot answer the challenge: {err}");
            self.last_reason = format!("cannot answer challenge: {err}").into();
            self.auth = Box::default();
            self.on_failure(ctx, flight, Failure::Credentials, None);
            return;
        }
        self.challenge_rounds += 1;
        if flight.purpose == Purpose::Register && self.status != Status::Registered {
            self.status = Status::Authenticating;
        }
        self.send(ctx, flight.purpose, headers, AuthUse::Fresh);
    }

    /// Keeps `challenge` in place of the one for the same kind and realm, or beside the others
    /// (dropping the oldest when [`MAX_KEPT_CHALLENGES`] are kept already).
    fn keep_challenge(&mut self, challenge: Challenge) {
        let mut kept: Vec<KeptChallenge> = std::mem::take(&mut self.auth).into_vec();
        kept.retain(|k| !k.is_for(&challenge));
        if kept.len() >= MAX_KEPT_CHALLENGES {
            kept.remove(0);
        }
        kept.push(KeptChallenge {
            challenge,
            nonce_count: 0,
        });
        self.auth = kept.into_boxed_slice();
    }

    /// Among several challenges (e.g. SHA-256 and MD5), the strongest one we can answer whose
    /// realm is acceptable; a realm mismatch is only reported when no challenge matches.
    fn pick_challenge(&self, challenges: &[Challenge]) -> Option<Challenge> {
        let can_answer = |c: &&Challenge| match &self.record.credentials() {
            Some(Credentials::Ha1 { .. }) => c.algorithm.strength() <= 1,
            _ => true,
        };
        let realm_ok =
            |c: &&Challenge| self.record.realm().is_empty() || c.realm() == self.record.realm();
        challenges
            .iter()
            .filter(realm_ok)
            .filter(can_answer)
            .max_by_key(|c| c.algorithm.strength())
            .or_else(|| challenges.iter().find(realm_ok))
            .or_else(|| challenges.first())
            .cloned()
    }

    fn on_interval_too_brief(&mut self, ctx: &mut Ctx<'_>, flight: &InFlight, response: &Response) {
        let min = response.min_expires.unwrap_or(0);
        let acceptable = min > flight.expires && min <= ctx.policy.max_expires;
        if flight.purpose == Purpose::Register && acceptable && self.interval_raises < 2 {
            self.interval_raises += 1;
            info!(l_uuid = %self.record.l_uuid(), min_expires = min, "registrar asked for a longer expiry");
            self.requested_expires = min;
            self.send_with_cached_auth(ctx, Purpose::Register);
        } else {
            self.last_reason = format!("423 with unusable Min-Expires {min}").into();
            self.on_failure(ctx, flight, Failure::Response(423), None);
        }
    }

    /// Answers every kept challenge with its next nonce count: the credentials a request
    /// carries. A kept challenge these credentials cannot answer is forgotten; when that is
    /// the newest (the last kept), why comes back too.
    fn answer_kept_challenges(
        &mut self,
        ctx: &mut Ctx<'_>,
    ) -> (Vec<(&'static str, String)>, Option<DigestError>) {
        let Some(credentials) = self.record.credentials() else {
            return (Vec::new(), None);
        };
        let mut headers = Vec::with_capacity(self.auth.len());
        let mut kept = std::mem::take(&mut self.auth).into_vec();
        let newest = kept.len().saturating_sub(1);
        let mut refused = None;
        let mut index = 0;
        kept.retain_mut(|entry| {
            entry.nonce_count = entry.nonce_count.saturating_add(1);
            let answered = self.authorize(ctx, &entry.challenge, &credentials, entry.nonce_count);
            let usable = match answered {
                Ok(header) => {
                    headers.push(header);
                    true
                }
                Err(err) => {
                    if index == newest {
                        refused = Some(err);
                    }
                    false
                }
            };
            index += 1;
            usable
        });
        self.auth = kept.into_boxed_slice();
        (headers, refused)
    }

    fn on_failure(
        &mut self,
        ctx: &mut Ctx<'_>,
        flight: &InFlight,
        failure: Failure,
        retry_after: Option<u32>,
    ) {
        if flight.purpose == Purpose::Unregister {
            // An un-REGISTER is best effort: the binding expires on its own.
            debug!(l_uuid = %self.record.l_uuid(), "un-REGISTER failed: {}", self.last_reason);
            self.maybe_bound = false;
            self.binding_expires = None;
            self.after_round(ctx);
            return;
        }
        self.failures = self.failures.saturating_add(1);
        if failure != Failure::RealmMismatch {
            self.offered_realm = None;
        }
        // A binding granted earlier is still held until it expires.
        if self.binding_expires.is_some_and(|expiry| expiry <= ctx.now) {
            self.binding_expires = None;
        }
        let verdict = ctx
            .policy
            .after_failure(failure, self.failures, retry_after, ctx.rng);
        self.status = match (failure, verdict) {
            (Failure::RealmMismatch, _) => Status::RealmMismatch,
            (Failure::Credentials, _) => Status::AuthFailed,
            (_, Verdict::RetryIn(_)) => Status::RetryWait,
            (_, Verdict::GiveUp) => Status::Failed,
        };
        if !self.wants_binding() {
            self.after_round(ctx);
            return;
        }
        let mut at = match verdict {
            Verdict::RetryIn(delay) => {
                ctx.counters.retries_scheduled += 1;
                Some(ctx.now + delay)
            }
            Verdict::GiveUp => {
                ctx.counters.gave_up += 1;
                warn!(
                    l_uuid = %self.record.l_uuid(),
                    failures = self.failures,
                    "giving up: {} (enable, refresh or reload the row to try again)",
                    self.last_reason
                );
                None
            }
        };
        // While a binding still holds, a temporary failure is retried before it runs out.
        if let (Some(retry), Some(expiry), Status::RetryWait) =
            (at, self.binding_expires, self.status)
        {
            let before_expiry = expiry.checked_sub(Duration::from_secs(5)).unwrap_or(expiry);
            if before_expiry > ctx.now && before_expiry < retry {
                at = Some(before_expiry);
            }
        }
        if std::mem::take(&mut self.redo_after_flight) {
            at = Some(ctx.now);
        }
        debug!(
            l_uuid = %self.record.l_uuid(),
            status = self.status.name(),
            retry_in_ms = at.map(|at| (at - ctx.now).as_millis() as u64),
            "registration attempt failed: {}",
            self.last_reason
        );
        self.set_timer(at);
    }

    /// Whether the row stopped trying and waits for the operator.
    pub fn has_given_up(&self) -> bool {
        self.timer.is_none()
            && self.in_flight.is_none()
            && matches!(
                self.status,
                Status::Failed | Status::AuthFailed | Status::RealmMismatch
            )
    }

    /// After an un-REGISTER (or when a round ends while no binding is wanted): settle, or go on
    /// registering if the operator changed their mind meanwhile.
    fn after_round(&mut self, ctx: &mut Ctx<'_>) {
        self.redo_after_flight = false;
        if self.wants_binding() || self.maybe_bound {
            self.set_timer(Some(ctx.now));
        } else if self.leaving {
            self.set_timer(None);
        } else {
            self.settle_idle();
        }
    }

    // ---- operator commands ----

    /// Operator switch (`uac.reg_enable` / `uac.reg_disable`).
    pub fn set_operator_disabled(&mut self, ctx: &mut Ctx<'_>, disabled: bool) {
        if self.operator_disabled == disabled && (disabled || !self.has_given_up()) {
            return;
        }
        self.operator_disabled = disabled;
        self.failures = 0;
        self.reconcile_now(ctx);
    }

    /// Register again right now (`uac.reg_refresh`), keeping Call-ID and CSeq sequence.
    pub fn refresh_now(&mut self, ctx: &mut Ctx<'_>) {
        self.failures = 0;
        self.reconcile_now(ctx);
    }

    /// `uac.reg_register`: register now, undoing an earlier `reg_unregister`.
    pub fn register_now(&mut self, ctx: &mut Ctx<'_>) {
        self.operator_unregistered = false;
        self.refresh_now(ctx);
    }

    /// `uac.reg_unregister`: take the binding back now and do not refresh it.
    pub fn unregister_now(&mut self, ctx: &mut Ctx<'_>) {
        self.operator_unregistered = true;
        self.reconcile_now(ctx);
    }

    /// Row removed or replaced by a different binding: un-register if a binding may exist, then
    /// the table drops it.
    pub fn leave(&mut self, ctx: &mut Ctx<'_>) {
        self.leaving = true;
        if self.in_flight.is_some() {
            // The outcome of the request in flight decides (its answer, or its guard running
            // out); `after_round` un-registers.
            return;
        }
        if self.maybe_bound {
            self.set_timer(Some(ctx.now));
        } else {
            self.set_timer(None);
        }
    }

    /// The row changed but still describes the same binding (new credentials, expiry, delay,
    /// flags): adopt it, and re-register now if the change affects the registrar.
    pub fn update_record(&mut self, ctx: &mut Ctx<'_>, record: Record) {
        let credentials_changed = record.credentials() != self.record.credentials()
            || record.realm() != self.record.realm();
        let expires_changed = record.expires != self.record.expires;
        let disabled_changed = record.is_disabled() != self.record.is_disabled();
        if credentials_changed {
            self.auth = Box::default();
        }
        if expires_changed {
            self.requested_expires = record.expires;
        }
        self.record = record;
        self.failures = 0;
        let was_unregistered = std::mem::take(&mut self.operator_unregistered);
        if credentials_changed || expires_changed || disabled_changed || was_unregistered {
            self.reconcile_now(ctx);
        }
    }

    /// Act on the current wishes as soon as nothing is in flight.
    fn reconcile_now(&mut self, ctx: &mut Ctx<'_>) {
        if self.in_flight.is_some() {
            // The answer to the request in flight was asked for under the old wishes: act again
            // as soon as it arrives (or its guard runs out).
            self.redo_after_flight = true;
            return;
        }
        if self.wants_binding() || self.maybe_bound {
            self.set_timer(Some(ctx.now));
        } else {
            self.settle_idle();
        }
    }

    /// Shutdown: take the binding back if one may exist.
    pub fn shutdown(&mut self, ctx: &mut Ctx<'_>) {
        self.leave(ctx);
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            key: self.key,
            record: self.record.clone(),
            status: self.status,
            in_flight: self.in_flight.is_some(),
            auth_sent: self
                .in_flight
                .as_ref()
                .is_some_and(|f| f.auth != AuthUse::None),
            initialized: self.reg_init.is_some(),
            operator_disabled: self.operator_disabled || self.record.is_disabled(),
            reg_init: self.reg_init,
            // While a request is in flight the timer is only its guard, not a next action.
            next_action: self.timer.filter(|_| self.in_flight.is_none()),
            binding_expires: self.binding_expires,
            granted_expires: self.granted_expires,
            last_code: self.last_code,
            last_reason: self.last_reason.to_string(),
            expected_realm: self
                .offered_realm
                .as_ref()
                .map(|_| self.record.realm().to_owned()),
            offered_realm: self.offered_realm.as_deref().map(str::to_owned),
            failures: self.failures,
            registers_sent: u64::from(self.registers_sent),
            last_registered: self.last_registered,
        }
    }
}

/// Splits `host:port`, `[v6]:port`, `host`, `[v6]` into host (without brackets) and port.
pub(crate) fn split_host_port(text: &str) -> (&str, Option<u16>) {
    if let Some(rest) = text.strip_prefix('[') {
        if let Some(end) = rest.find(']') {
            let host = &rest[..end];
            let port = rest[end + 1..]
                .strip_prefix(':')
                .and_then(|p| p.parse().ok());
            return (host, port);
        }
        return (text, None);
    }
    match text.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => (host, port.parse().ok()),
        _ => (text, None),
    }
}

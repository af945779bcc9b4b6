//! The table of all registrations: lookup by `l_uuid`, one ordered timer queue, reload diffs.
//!
//! The table is what the driver talks to. It routes each input to the right [`Registration`],
//! keeps the timer queue in step with every registration's single timer, and collects the
//! actions they produce. A reload is computed as a diff so that rows that did not change keep
//! their binding untouched — no REGISTER is sent for them.

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, VecDeque};
use std::hash::{BuildHasher, Hash, Hasher};
use std::time::Instant;

use rand::rngs::StdRng;

use hashbrown::HashTable;

use super::by_key::Registrations;
use super::calendar::RefreshCalendar;
use super::machine::{Action, Continuation, Ctx, RegKey, Registration, Snapshot, Status};
use super::policy::RetryPolicy;
use super::record::Record;
use super::timer_queue::TimerQueue;
use crate::sip::message::Response;

/// Settings the core needs from configuration.
#[derive(Clone, Debug)]
pub struct CoreConfig {
    pub policy: RetryPolicy,
    /// Shared by every request (one reference count, no copy per REGISTER).
    pub user_agent: std::sync::Arc<str>,
}

impl Default for CoreConfig {
    fn default() -> Self {
        CoreConfig {
            policy: RetryPolicy::default(),
            user_agent: concat!("uacreg/", env!("CARGO_PKG_VERSION")).into(),
        }
    }
}

/// Totals over the table's lifetime, for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CoreCounters {
    /// Failed attempts followed by a scheduled retry.
    pub retries_scheduled: u64,
    /// Failed attempts after which the row gave up.
    pub gave_up: u64,
    /// Successful REGISTERs (bindings granted or refreshed).
    pub registered: u64,
}

/// What a reload changed.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReloadSummary {
    pub added: usize,
    pub changed: usize,
    pub removed: usize,
    pub unchanged: usize,
}

/// Selects registrations the way Kamailio's `uac.reg_info` / `reg_enable` … do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attribute {
    LUuid,
    LUsername,
    RUsername,
    AuthUsername,
}

impl Attribute {
    pub fn parse(name: &str) -> Option<Attribute> {
        match name {
            "l_uuid" => Some(Attribute::LUuid),
            "l_username" => Some(Attribute::LUsername),
            "r_username" => Some(Attribute::RUsername),
            "auth_username" => Some(Attribute::AuthUsername),
            _ => None,
        }
    }

    fn matches(self, record: &Record, value: &str) -> bool {
        match self {
            Attribute::LUuid => record.l_uuid() == value,
            Attribute::LUsername => record.l_username() == value,
            Attribute::RUsername => record.r_username() == value,
            Attribute::AuthUsername => record.auth_username() == value,
        }
    }
}

/// Timers one [`RegistrationTable::handle_timeout`] call fires. A start-up or a large reload
/// makes a million first REGISTERs due at the same instant; firing them all in one call held
/// the driver for seconds, and the requests it then sent carried that call's `now` as their
/// start, so their retransmission timers were already due when they left. A few thousand at a
/// time keeps each call to milliseconds, with answers read and time taken anew between calls.
pub const TIMERS_PER_CALL: usize = 4096;

/// All registrations, keyed by a never-reused [`RegKey`].
pub struct RegistrationTable {
    config: CoreConfig,
    rng: StdRng,
    next_key: u64,
    /// Boxed: a hash table keeps up to twice as many slots as entries (load factor 7/8,
    /// power-of-two growth), so inline 320-byte slots would cost up to ~350 bytes per row in
    /// empty space; a box costs 8 bytes per slot instead.
    registrations: Registrations,
    /// Current (not leaving) registrations by l_uuid, in l_uuid order for dumps. Boxed keys:
    /// 8 bytes less than a String in each of the tree's slots.
    by_uuid: BTreeMap<Box<str>, RegKey>,
    /// Current registrations by a keyed hash of their local URI (l_username, lowercased
    /// l_domain): `uac.reg_lookup` by URI answers from here instead of walking every row on the
    /// driver. Only the keys are kept, hashed by their row's local URI (about 12 bytes a row;
    /// a map of hashes to keys cost 33, one of owned URIs to sets of l_uuids ~400): the rows
    /// themselves confirm a match.
    by_local_uri: HashTable<RegKey>,
    local_uri_hasher: RandomState,
    timers: TimerQueue,
    actions: Vec<Action>,
    /// `uac.reg_active`: while false, due timers are parked instead of sending.
    active: bool,
    parked: Vec<RegKey>,
    counters: CoreCounters,
    /// Current (not leaving) registrations per status, kept up to date on every change:
    /// `uacreg.status`, metrics and start-up progress ask often, and a walk over 100,000
    /// registrations inside the driver task each time starved the sockets.
    status_counts: [usize; Status::ALL.len()],
    /// Spread refresh timers per second (see [`RetryPolicy::max_refresh_share`]), counted in
    /// and out as registrations arm and drop them.
    calendar: RefreshCalendar,
    /// The last [`TRANSITIONS_KEPT`] state changes, oldest first.
    transitions: VecDeque<Transition>,
}

/// A reload that adds at least this many rows (and a quarter of the table) rebuilds the l_uuid
/// index compactly.
const COMPACT_AFTER_ADDED: usize = 1024;

/// Room for queued actions the table keeps between calls.
const ACTIONS_KEPT: usize = 1024;

/// State changes remembered for the console's row history, across all rows (32 bytes each, so
/// 2 MiB). One ring for the table rather than a few per row: a row's `Registration` is kept
/// within its allocator class (see the size test), and what an operator looks at is recent
/// trouble, which a ring keeps; on a large table a quiet row's old changes give way.
pub const TRANSITIONS_KEPT: usize = 65_536;

/// One change of a registration's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transition {
    pub at: Instant,
    pub key: RegKey,
    pub from: Status,
    pub to: Status,
    /// The last final response code when it changed.
    pub code: Option<u16>,
}

/// `uac.reg_add` on an l_uuid that exists.
#[derive(Debug, PartialEq, Eq)]
pub struct AlreadyExists;

impl RegistrationTable {
    pub fn new(config: CoreConfig, rng: StdRng) -> RegistrationTable {
        RegistrationTable {
            config,
            rng,
            next_key: 1,
            registrations: Registrations::default(),
            by_uuid: BTreeMap::new(),
            by_local_uri: HashTable::new(),
            local_uri_hasher: RandomState::new(),
            timers: TimerQueue::default(),
            actions: Vec::new(),
            active: true,
            parked: Vec::new(),
            counters: CoreCounters::default(),
            status_counts: [0; Status::ALL.len()],
            calendar: RefreshCalendar::default(),
            transitions: VecDeque::new(),
        }
    }

    /// The status a registration is counted under: None while it is leaving.
    fn counted(registration: &Registration) -> Option<Status> {
        (!registration.is_leaving()).then(|| registration.status())
    }

    fn recount(&mut self, was: Option<Status>, now: Option<Status>) {
        if was != now {
            if let Some(s) = was {
                self.status_counts[s as usize] -= 1;
            }
            if let Some(s) = now {
                self.status_counts[s as usize] += 1;
            }
        }
    }

    /// Runs `f` on one registration with a context, then brings the timer queue in step and
    /// drops the registration if it has finished leaving.
    fn with_registration<R>(
        &mut self,
        key: RegKey,
        now: Instant,
        f: impl FnOnce(&mut Registration, &mut Ctx<'_>) -> R,
    ) -> Option<R> {
        let refresh_cap = self.config.policy.refresh_cap(self.by_uuid.len());
        self.calendar.start(now);
        let registration = self.registrations.get_mut(&key)?;
        let before = registration.timer();
        let second_before = registration.refresh_second();
        let counted_before = Self::counted(registration);
        let status_before = registration.status();
        let mut ctx = Ctx {
            now,
            rng: &mut self.rng,
            policy: &self.config.policy,
            user_agent: &self.config.user_agent,
            actions: &mut self.actions,
            counters: &mut self.counters,
            calendar: &mut self.calendar,
            refresh_cap,
        };
        let result = f(registration, &mut ctx);
        debug_assert!(
            registration.in_flight_cseq().is_none() || registration.timer().is_some(),
            "{key:?} has a request in flight and no guard"
        );
        let after = registration.timer();
        let second_after = registration.refresh_second();
        if second_before != second_after {
            if let Some(second) = second_before {
                self.calendar.remove(second);
            }
            if let Some(second) = second_after {
                self.calendar.add(second);
            }
        }
        let status_after = registration.status();
        if status_after != status_before {
            let code = registration.last_code();
            if self.transitions.len() == TRANSITIONS_KEPT {
                self.transitions.pop_front();
            }
            self.transitions.push_back(Transition {
                at: now,
                key,
                from: status_before,
                to: status_after,
                code,
            });
        }
        let finished = registration.is_finished();
        let counted_after = if finished {
            None
        } else {
            Self::counted(registration)
        };
        self.recount(counted_before, counted_after);
        if before != after {
            if let Some(at) = before {
                self.timers.remove(at, key);
            }
            if let Some(at) = after {
                self.timers.insert(at, key);
            }
        }
        if finished {
            self.registrations.remove(&key);
        }
        Some(result)
    }

    fn insert(&mut self, now: Instant, record: Record) {
        self.insert_continued(now, record, None);
    }

    /// Adds a row; with `from`, continuing the dialog another node kept for it.
    fn insert_continued(&mut self, now: Instant, record: Record, from: Option<&Continuation>) {
        let key = RegKey(self.next_key);
        self.next_key += 1;
        let l_uuid = Box::from(record.l_uuid());
        let registration = Registration::new(key, record, &mut self.rng);
        self.recount(None, Self::counted(&registration));
        self.registrations.insert(Box::new(registration));
        self.by_uuid.insert(l_uuid, key);
        self.index(key);
        self.with_registration(key, now, |r, ctx| {
            if !from.is_some_and(|from| r.continue_dialog(ctx, from)) {
                r.start(ctx);
            }
        });
    }

    /// Adds `key`'s row to the local-URI index.
    ///
    /// Every key in it is a current registration's: rows are taken out ([`Self::unindex`])
    /// before they leave or change, which is what lets the table rehash from the rows.
    fn index(&mut self, key: RegKey) {
        let Some(hash) = self.local_uri_hash_of(key) else {
            return;
        };
        if self.by_local_uri.find(hash, |k| *k == key).is_some() {
            return;
        }
        let rehash = indexed_row_hash(&self.registrations, &self.local_uri_hasher);
        self.by_local_uri.insert_unique(hash, key, rehash);
    }

    /// Makes room in the local-URI index for `rows` rows at once. The index keeps keys only, so
    /// each time it grows it hashes every row again from the row itself (a lookup and a keyed
    /// hash): grown one row at a time to a million it spent seconds of the first load doing so.
    fn reserve_local_uri_index(&mut self, rows: usize) {
        let additional = rows.saturating_sub(self.by_local_uri.len());
        let rehash = indexed_row_hash(&self.registrations, &self.local_uri_hasher);
        self.by_local_uri.reserve(additional, rehash);
    }

    fn local_uri_hash_of(&self, key: RegKey) -> Option<u64> {
        row_local_uri_hash(&self.registrations, &self.local_uri_hasher, key)
    }

    /// Takes `key`'s row out of the local-URI index (before it leaves or changes).
    fn unindex(&mut self, key: RegKey) {
        let Some(hash) = self.local_uri_hash_of(key) else {
            return;
        };
        if let Ok(slot) = self.by_local_uri.find_entry(hash, |k| *k == key) {
            slot.remove();
        }
    }

    /// The first current registration (in l_uuid order) whose local URI is
    /// `sip:user@host` (the host in any letter case), as Kamailio's `uac_reg_lookup()` finds it.
    pub fn find_by_local_uri(&self, user: &str, host: &str) -> Option<&Registration> {
        self.by_local_uri
            .iter_hash(local_uri_hash(&self.local_uri_hasher, user, host))
            .filter_map(|key| self.registrations.get(key))
            .filter(|r| {
                let record = r.record();
                record.l_username() == user && record.l_domain().eq_ignore_ascii_case(host)
            })
            .min_by(|a, b| a.record().l_uuid().cmp(b.record().l_uuid()))
    }

    fn retire(&mut self, now: Instant, key: RegKey) {
        self.with_registration(key, now, |r, ctx| r.leave(ctx));
    }

    /// Replaces the table's rows with `records` (the whole table as just read from the
    /// database). Unchanged rows are left alone; rows whose binding is the same are updated in
    /// place; others are un-registered and registered anew.
    ///
    /// Records in l_uuid order (the loader sorts them off the driver task) make the rows that
    /// are gone a walk along the l_uuid index, and a duplicate the record before it: no set of
    /// every l_uuid, which at a million rows cost a million small allocations on the task that
    /// runs the refreshes. Unsorted records are sorted here first.
    pub fn reload(&mut self, now: Instant, mut records: Vec<Record>) -> ReloadSummary {
        sort_by_l_uuid(&mut records);
        // Validation already reports duplicates; never let one displace the first.
        records.dedup_by(|later, first| later.l_uuid() == first.l_uuid());
        let gone: Vec<(Box<str>, RegKey)> = self
            .gone_from(&records)
            .map(|(l_uuid, key)| (l_uuid.clone(), *key))
            .collect();
        let mut summary = ReloadSummary::default();
        self.reserve_local_uri_index(records.len());
        // A reload of a running table keeps only the records that changed: copy each one here,
        // so that none stays in the pages the reading thread filled. With every 100th record
        // kept, each of those allocator pages kept a few and none could be handed back: at
        // 200,000 rows the first reload of 1 % left RSS 28 MiB higher than with copies.
        let copy_kept = !self.by_uuid.is_empty();
        let keep = |record: Record| if copy_kept { record.clone() } else { record };
        for record in records {
            match self.by_uuid.get(record.l_uuid()).copied() {
                None => {
                    summary.added += 1;
                    self.insert(now, keep(record));
                }
                Some(key) => {
                    let Some(current) = self.registrations.get(&key) else {
                        summary.added += 1;
                        self.insert(now, keep(record));
                        continue;
                    };
                    if *current.record() == record {
                        summary.unchanged += 1;
                        if current.has_given_up() {
                            // A reload is one of the ways an operator says "try again".
                            self.with_registration(key, now, |r, ctx| r.refresh_now(ctx));
                        }
                    } else if current.record().same_binding(&record) {
                        summary.changed += 1;
                        self.unindex(key);
                        let record = keep(record);
                        self.with_registration(key, now, |r, ctx| r.update_record(ctx, record));
                        self.index(key);
                    } else {
                        summary.changed += 1;
                        self.unindex(key);
                        self.by_uuid.remove(record.l_uuid());
                        self.retire(now, key);
                        self.insert(now, keep(record));
                    }
                }
            }
        }
        for (l_uuid, key) in gone {
            summary.removed += 1;
            self.unindex(key);
            self.by_uuid.remove(&l_uuid);
            self.retire(now, key);
        }
        if summary.added >= COMPACT_AFTER_ADDED && summary.added * 4 >= self.by_uuid.len() {
            self.compact_uuid_index();
        }
        summary
    }

    /// The running rows whose l_uuid is not among `sorted` (records in l_uuid order): both
    /// sides are walked once, side by side.
    fn gone_from<'a>(
        &'a self,
        sorted: &'a [Record],
    ) -> impl Iterator<Item = (&'a Box<str>, &'a RegKey)> + 'a {
        let mut incoming = sorted.iter().map(Record::l_uuid).peekable();
        self.by_uuid.iter().filter(move |(l_uuid, _)| {
            while incoming.next_if(|next| *next < &***l_uuid).is_some() {}
            incoming.peek() != Some(&&***l_uuid)
        })
    }

    /// Rebuilds the l_uuid index with full nodes. Rows arrive in l_uuid order, and a B-tree
    /// that is only ever appended to splits every full leaf in two and leaves the left half
    /// alone: nodes stay a little over half full, ~50 bytes a row. Built from the sorted
    /// entries at once the nodes are full (~30 bytes a row); 10 ms at 100,000 rows.
    fn compact_uuid_index(&mut self) {
        self.by_uuid = std::mem::take(&mut self.by_uuid).into_iter().collect();
    }

    /// How many running rows a [`RegistrationTable::reload`] with `records` would remove.
    pub fn removed_by(&self, records: &[Record]) -> usize {
        if records.is_sorted_by(|a, b| a.l_uuid() <= b.l_uuid()) {
            return self.gone_from(records).count();
        }
        let kept: std::collections::HashSet<&str> = records.iter().map(|r| r.l_uuid()).collect();
        self.by_uuid
            .keys()
            .filter(|l_uuid| !kept.contains(&***l_uuid))
            .count()
    }

    /// When to call [`RegistrationTable::handle_timeout`] next: never later than the earliest
    /// armed timer, but a timer of a later second is only known by its second, so the caller
    /// may wake up once a second and find nothing due yet.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.timers.earliest()
    }

    /// Whether a timer is due at `now`, as far as the queue knows (one disarmed while it
    /// waited in a bucket may still count).
    pub fn has_due_timer(&mut self, now: Instant) -> bool {
        self.timers.advance(now);
        self.timers.earliest().is_some_and(|at| at <= now)
    }

    /// Fires the timers due at or before `now`, at most [`TIMERS_PER_CALL`] of them; the rest
    /// stay due, so [`RegistrationTable::next_deadline`] is still in the past and the caller
    /// comes back at once.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.handle_timeout_up_to(now, TIMERS_PER_CALL);
    }

    /// [`RegistrationTable::handle_timeout`] firing at most `max` timers (the caller's send
    /// queue decides how many requests it can take now).
    /// Returns when the first timer it fired was due (the one that waited longest).
    pub fn handle_timeout_up_to(&mut self, now: Instant, max: usize) -> Option<Instant> {
        let mut budget = max.min(TIMERS_PER_CALL);
        let mut first_due = None;
        while budget > 0 {
            let Some((at, key)) = self.timers.pop_due(now) else {
                break;
            };
            // A timer disarmed while it waited in a bucket of the queue is skipped.
            let Some(registration) = self
                .registrations
                .get_mut(&key)
                .filter(|r| r.timer() == Some(at))
            else {
                continue;
            };
            budget -= 1;
            first_due.get_or_insert(at);
            // The timer entry is gone; make the registration agree before it reacts.
            if let Some(second) = registration.clear_timer() {
                self.calendar.remove(second);
            }
            // Leaving registrations still finish (un-REGISTER) while inactive, and a request in
            // flight still ends when its guard runs out (that sends nothing by itself).
            let must_run = registration.is_leaving() || registration.in_flight_cseq().is_some();
            if !self.active && !must_run {
                self.parked.push(key);
                continue;
            }
            self.with_registration(key, now, |r, ctx| r.handle_timer(ctx));
        }
        first_due
    }

    /// A final (or provisional — ignored) response for a request of registration `key`.
    pub fn handle_response(&mut self, now: Instant, key: RegKey, response: &Response) {
        self.with_registration(key, now, |r, ctx| r.handle_response(ctx, response));
    }

    /// The driver sent request `cseq` of `key` (to its first server or, after a failure, to
    /// the next): its in-flight guard restarts.
    pub fn request_sent(&mut self, now: Instant, key: RegKey, cseq: u32) {
        self.with_registration(key, now, |r, ctx| r.request_sent(ctx, cseq));
    }

    /// The transaction for request `cseq` of `key` timed out or could not be sent.
    pub fn handle_transaction_failure(&mut self, now: Instant, key: RegKey, cseq: u32, why: &str) {
        self.with_registration(key, now, |r, ctx| {
            r.handle_transaction_failure(ctx, cseq, why)
        });
    }

    /// All queued actions, in the order they were produced.
    pub fn drain_actions(&mut self) -> std::vec::Drain<'_, Action> {
        // A start-up fires every row's first REGISTER in one call, and the queue would keep room
        // for all of them (~250 bytes a row) for good: give back what a quarter of it would not
        // use. Shrinking only below a quarter keeps this amortised O(1).
        let len = self.actions.len();
        if self.actions.capacity() > ACTIONS_KEPT.max(4 * len) {
            self.actions.shrink_to(ACTIONS_KEPT.max(2 * len));
        }
        self.actions.drain(..)
    }

    /// Whether request `cseq` of `key` is still the one its registration waits for (a queued
    /// send that is no longer current is dropped).
    pub fn is_current(&self, key: RegKey, cseq: u32) -> bool {
        self.registrations
            .get(&key)
            .and_then(|r| r.in_flight_cseq())
            == Some(cseq)
    }

    // ---- queries ----

    pub fn counters(&self) -> CoreCounters {
        self.counters
    }

    pub fn len(&self) -> usize {
        self.by_uuid.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_uuid.is_empty()
    }

    /// Registrations still un-registering after their row was removed or replaced.
    pub fn leaving_count(&self) -> usize {
        self.registrations.len() - self.by_uuid.len()
    }

    pub fn get(&self, l_uuid: &str) -> Option<&Registration> {
        self.by_uuid
            .get(l_uuid)
            .and_then(|key| self.registrations.get(key))
    }

    /// Current registrations in l_uuid order.
    pub fn iter(&self) -> impl Iterator<Item = &Registration> {
        self.by_uuid
            .values()
            .filter_map(|key| self.registrations.get(key))
    }

    /// First registration whose `attribute` equals `value` (Kamailio's lookup rule).
    pub fn find(&self, attribute: Attribute, value: &str) -> Option<&Registration> {
        if attribute == Attribute::LUuid {
            return self.get(value);
        }
        self.iter().find(|r| attribute.matches(r.record(), value))
    }

    pub fn snapshots(&self) -> Vec<Snapshot> {
        self.iter().map(Registration::snapshot).collect()
    }

    /// The `limit` snapshots from position `offset` in l_uuid order, and how many current
    /// registrations there are: one page of the console's table without copying the others.
    pub fn snapshot_page(&self, offset: usize, limit: usize) -> (Vec<Snapshot>, usize) {
        let page = self
            .by_uuid
            .values()
            .skip(offset)
            .take(limit)
            .filter_map(|key| self.registrations.get(key))
            .map(|r| r.snapshot())
            .collect();
        (page, self.by_uuid.len())
    }

    /// Up to `limit` snapshots in l_uuid order, starting after `after` (None: from the start):
    /// a dump taken in slices, so the driver never stops for the whole table at once.
    pub fn snapshots_after(&self, after: Option<&str>, limit: usize) -> Vec<Snapshot> {
        use std::ops::Bound;
        let start = match after {
            Some(l_uuid) => Bound::Excluded(l_uuid),
            None => Bound::Unbounded,
        };
        self.by_uuid
            .range::<str, _>((start, Bound::Unbounded))
            .filter_map(|(_, key)| self.registrations.get(key))
            .take(limit)
            .map(|r| r.snapshot())
            .collect()
    }

    /// The remembered state changes of the current registration of `l_uuid`, oldest first, at
    /// most `limit` (the latest).
    pub fn transitions_of(&self, l_uuid: &str, limit: usize) -> Vec<Transition> {
        let Some(&key) = self.by_uuid.get(l_uuid) else {
            return Vec::new();
        };
        let mut found: Vec<Transition> = self
            .transitions
            .iter()
            .rev()
            .filter(|t| t.key == key)
            .take(limit)
            .copied()
            .collect();
        found.reverse();
        found
    }

    /// Number of current registrations in each status.
    pub fn status_counts(&self) -> BTreeMap<&'static str, usize> {
        let counts: BTreeMap<&'static str, usize> = Status::ALL
            .iter()
            .map(|s| (s.name(), self.status_counts[*s as usize]))
            .collect();
        // Every test that looks at the counts also checks them against a full walk.
        debug_assert_eq!(counts, self.walk_status_counts(), "status counts drifted");
        counts
    }

    /// The counts by walking every current registration (what the kept counts must equal).
    fn walk_status_counts(&self) -> BTreeMap<&'static str, usize> {
        let mut counts: BTreeMap<&'static str, usize> =
            Status::ALL.iter().map(|s| (s.name(), 0)).collect();
        for registration in self.iter() {
            *counts.entry(registration.status().name()).or_default() += 1;
        }
        counts
    }

    /// Refresh timers currently counted in the spreading calendar.
    pub fn scheduled_refreshes(&self) -> usize {
        let scheduled = self.calendar.scheduled();
        // Every test that looks at the calendar also checks it against the armed timers.
        #[cfg(debug_assertions)]
        if let Err(drift) = self.check_calendar() {
            panic!("refresh calendar drifted: {drift}");
        }
        scheduled
    }

    /// Refreshes allowed to share one second now (0: refreshes are not spread).
    pub fn refresh_cap(&self) -> u32 {
        self.config.policy.refresh_cap(self.by_uuid.len())
    }

    /// The calendar's counts against every registration's refresh timer: each spread refresh
    /// is counted once, in the second its timer falls in.
    #[cfg(debug_assertions)]
    fn check_calendar(&self) -> Result<(), String> {
        for registration in self.registrations.values() {
            if let Some(second) = registration.refresh_second() {
                let timer_second = registration
                    .timer()
                    .and_then(|at| self.calendar.second_of(at));
                if timer_second != Some(u64::from(second)) {
                    return Err(format!(
                        "{:?} is counted in second {second}, its timer is in {timer_second:?}",
                        registration.key()
                    ));
                }
            }
        }
        self.calendar.agrees_with(
            self.registrations
                .values()
                .filter_map(|r| r.refresh_second()),
        )
    }

    // ---- operator commands (return false when no row matched) ----

    fn command(
        &mut self,
        now: Instant,
        attribute: Attribute,
        value: &str,
        f: impl FnOnce(&mut Registration, &mut Ctx<'_>),
    ) -> bool {
        let Some(key) = self.find(attribute, value).map(Registration::key) else {
            return false;
        };
        self.with_registration(key, now, f).is_some()
    }

    pub fn set_disabled(
        &mut self,
        now: Instant,
        attribute: Attribute,
        value: &str,
        disabled: bool,
    ) -> bool {
        self.command(now, attribute, value, |r, ctx| {
            r.set_operator_disabled(ctx, disabled)
        })
    }

    pub fn refresh(&mut self, now: Instant, attribute: Attribute, value: &str) -> bool {
        self.command(now, attribute, value, |r, ctx| r.refresh_now(ctx))
    }

    /// The row behind a registration, also while it is leaving.
    pub fn record_of(&self, key: RegKey) -> Option<&Record> {
        self.registrations.get(&key).map(|r| r.record())
    }

    /// The connection a binding was registered over is gone, so the registrar can no longer
    /// reach us through it: register again now. Only for registrations that hold a binding.
    pub fn rebind(&mut self, now: Instant, key: RegKey) -> bool {
        let holds_binding = self
            .registrations
            .get(&key)
            .is_some_and(|r| !r.is_leaving() && r.status() == Status::Registered);
        holds_binding
            && self
                .with_registration(key, now, |r, ctx| r.refresh_now(ctx))
                .is_some()
    }

    /// `uac.reg_register`: register now (undoes `reg_unregister`).
    pub fn register_now(&mut self, now: Instant, attribute: Attribute, value: &str) -> bool {
        self.command(now, attribute, value, |r, ctx| r.register_now(ctx))
    }

    /// `uac.reg_unregister`: un-REGISTER now and stay unregistered.
    pub fn unregister_now(&mut self, now: Instant, attribute: Attribute, value: &str) -> bool {
        self.command(now, attribute, value, |r, ctx| r.unregister_now(ctx))
    }

    /// `uac.reg_add`: a row kept in memory only (a reload drops it unless the table has it).
    pub fn add(&mut self, now: Instant, record: Record) -> Result<(), AlreadyExists> {
        if self.by_uuid.contains_key(record.l_uuid()) {
            return Err(AlreadyExists);
        }
        self.insert(now, record);
        Ok(())
    }

    /// A row taken over from another node: like [`RegistrationTable::add`], continuing the
    /// dialog that node kept (see [`Registration::continue_dialog`]).
    pub fn add_continued(
        &mut self,
        now: Instant,
        record: Record,
        from: Option<&Continuation>,
    ) -> Result<(), AlreadyExists> {
        if self.by_uuid.contains_key(record.l_uuid()) {
            return Err(AlreadyExists);
        }
        self.insert_continued(now, record, from);
        Ok(())
    }

    /// Forgets the row without un-REGISTERing (its shard went to another node, or this node
    /// may no longer send for it): returns its key and dialog, for the next owner.
    pub fn abandon(&mut self, now: Instant, l_uuid: &str) -> Option<(RegKey, Continuation)> {
        let key = self.by_uuid.remove(l_uuid)?;
        self.unindex(key);
        let dialog = self.registrations.get(&key)?.continuation(now);
        self.with_registration(key, now, |r, _| r.abandon());
        Some((key, dialog))
    }

    /// `uac.reg_remove`: un-REGISTER (if bound) and forget the row.
    pub fn remove(&mut self, now: Instant, l_uuid: &str) -> bool {
        match self.by_uuid.remove(l_uuid) {
            Some(key) => {
                self.unindex(key);
                self.retire(now, key);
                true
            }
            None => false,
        }
    }

    /// `uac.reg_refresh` from the database: apply one row's new version (None: the row is gone).
    /// Returns false when neither the table nor the database knows the l_uuid.
    pub fn apply_one(&mut self, now: Instant, l_uuid: &str, record: Option<Record>) -> bool {
        let current = self.by_uuid.get(l_uuid).copied();
        match (current, record) {
            (None, None) => false,
            (Some(_), None) => self.remove(now, l_uuid),
            (None, Some(record)) => {
                self.insert(now, record);
                true
            }
            (Some(key), Some(record)) => {
                let same_binding = self
                    .registrations
                    .get(&key)
                    .is_some_and(|r| r.record().same_binding(&record));
                if same_binding {
                    self.unindex(key);
                    self.with_registration(key, now, |r, ctx| {
                        r.update_record(ctx, record);
                        // Kamailio's reg_refresh registers the row again in any case.
                        r.register_now(ctx);
                    });
                    self.index(key);
                } else {
                    self.unindex(key);
                    self.by_uuid.remove(l_uuid);
                    self.retire(now, key);
                    self.insert(now, record);
                }
                true
            }
        }
    }

    /// `uac.reg_active`: switch sending on or off; returns the previous mode. Turning it back on
    /// releases every parked registration at once (the transport's pacing spreads them).
    pub fn set_active(&mut self, now: Instant, active: bool) -> bool {
        let old = self.active;
        self.active = active;
        if active {
            for key in std::mem::take(&mut self.parked) {
                self.with_registration(key, now, |r, ctx| r.handle_timer(ctx));
            }
        }
        old
    }

    /// Un-registers everything (shutdown). Returns how many registrations still have work.
    pub fn shutdown(&mut self, now: Instant) -> usize {
        let keys: Vec<RegKey> = self.by_uuid.values().copied().collect();
        self.by_uuid.clear();
        self.by_local_uri.clear();
        for key in keys {
            self.with_registration(key, now, |r, ctx| r.shutdown(ctx));
        }
        self.registrations.len()
    }
}

/// The local-URI hash of registration `key`'s row.
fn row_local_uri_hash(
    registrations: &Registrations,
    hasher: &RandomState,
    key: RegKey,
) -> Option<u64> {
    let record = registrations.get(&key)?.record();
    Some(local_uri_hash(
        hasher,
        record.l_username(),
        record.l_domain(),
    ))
}

/// How the local-URI index hashes a key it holds again when it grows: from the key's row,
/// which every indexed key has (see [`RegistrationTable::index`]).
fn indexed_row_hash<'a>(
    registrations: &'a Registrations,
    hasher: &'a RandomState,
) -> impl Fn(&RegKey) -> u64 + 'a {
    move |key| {
        let hash = row_local_uri_hash(registrations, hasher, *key);
        debug_assert!(hash.is_some(), "{key:?} is indexed but not in the table");
        hash.unwrap_or_default()
    }
}

/// The index's hash of a local URI: the user exactly, the domain in any letter case.
fn local_uri_hash(hasher: &RandomState, user: &str, domain: &str) -> u64 {
    let mut hasher = hasher.build_hasher();
    user.hash(&mut hasher);
    for byte in domain.bytes() {
        hasher.write_u8(byte.to_ascii_lowercase());
    }
    hasher.finish()
}

/// Sorts `records` by l_uuid unless they already are; stable, so of two rows with one l_uuid
/// the one read first stays first.
pub fn sort_by_l_uuid(records: &mut [Record]) {
    if !records.is_sorted_by(|a, b| a.l_uuid() <= b.l_uuid()) {
        records.sort_by(|a, b| a.l_uuid().cmp(b.l_uuid()));
    }
}

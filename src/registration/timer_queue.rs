//! Every armed registration timer, ordered as far as firing them needs.
//!
//! One entry per row for the daemon's lifetime, and nearly every one is a refresh minutes
//! ahead, landing at a random place among the others. Kept in one ordered set, each insert was
//! a search down a million-entry B-tree, several cache misses deep: 5 % of a million-row
//! start-up's CPU. So only the timers of the current second are kept in order (`near`); a later
//! one is appended to the bucket of its second (`far`, 2^30 ns ≈ 1.07 s), and a bucket is put
//! in order when its second comes. The ~2,000 bucket ends a start-up appends to stay in cache.
//!
//! Finding a timer in its bucket to take it out would take a scan, so a far timer that is
//! disarmed stays where it is: its bucket only counts its live timers, and is dropped, stale
//! entries and all, when that count falls to zero (an in-flight guard replaced a moment after
//! it was armed). The rest reach `near` with their bucket, so whoever pops a timer checks it is
//! still armed, as the registration table does.
//!
//! Entries are a tick (u64 nanoseconds; the first timer armed is at tick [`BIAS`], so earlier
//! ones need no special case) and the key: 16 bytes.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use super::RegKey;

/// A far bucket spans 2^30 ns.
const BUCKET_BITS: u32 = 30;
const BUCKET_NANOS: u64 = 1 << BUCKET_BITS;

/// The epoch's tick: timers up to 146 years before or after the first one armed are exact. A
/// multiple of [`BUCKET_NANOS`], so the epoch starts a bucket.
const BIAS: u64 = 1 << 62;
const _: () = assert!(BIAS % BUCKET_NANOS == 0);

#[derive(Default)]
struct Bucket {
    /// Unordered; disarmed ones included.
    entries: Vec<(u64, RegKey)>,
    /// Entries not disarmed since they were put here.
    live: usize,
}

#[derive(Default)]
pub(crate) struct TimerQueue {
    /// The instant of tick [`BIAS`]: the first timer armed; `None` until then.
    epoch: Option<Instant>,
    /// A multiple of [`BUCKET_NANOS`]; entries before it are in `near`, the others in `far`.
    horizon: u64,
    /// In order, and only armed timers (removed exactly) plus the stale ones a bucket brought.
    near: BTreeSet<(u64, RegKey)>,
    /// By bucket number (tick >> [`BUCKET_BITS`]).
    far: BTreeMap<u64, Bucket>,
}

/// Saturates at [`BIAS`] (146 years), far beyond any timer.
fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).map_or(BIAS, |n| n.min(BIAS))
}

impl TimerQueue {
    /// `None` before the first insert, when the queue is empty anyway.
    fn tick(&self, at: Instant) -> Option<u64> {
        let epoch = self.epoch?;
        Some(if at >= epoch {
            BIAS + nanos(at - epoch)
        } else {
            BIAS - nanos(epoch - at)
        })
    }

    fn instant(&self, tick: u64) -> Instant {
        let epoch = self
            .epoch
            .expect("entries exist only after an epoch is set");
        if tick >= BIAS {
            epoch + Duration::from_nanos(tick - BIAS)
        } else {
            epoch - Duration::from_nanos(BIAS - tick)
        }
    }

    pub(crate) fn insert(&mut self, at: Instant, key: RegKey) {
        self.epoch.get_or_insert(at);
        let tick = self.tick(at).unwrap_or(BIAS);
        if tick < self.horizon {
            self.near.insert((tick, key));
        } else {
            let bucket = self.far.entry(tick >> BUCKET_BITS).or_default();
            bucket.entries.push((tick, key));
            bucket.live += 1;
        }
    }

    /// Disarms the timer `(at, key)`, which the caller armed and has not popped. Returns false
    /// when the queue holds nothing there.
    pub(crate) fn remove(&mut self, at: Instant, key: RegKey) -> bool {
        let Some(tick) = self.tick(at) else {
            return false;
        };
        if tick < self.horizon {
            return self.near.remove(&(tick, key));
        }
        let number = tick >> BUCKET_BITS;
        let Some(bucket) = self.far.get_mut(&number) else {
            return false;
        };
        debug_assert!(
            bucket.entries.contains(&(tick, key)),
            "{key:?} was not armed at tick {tick}"
        );
        bucket.live -= 1;
        if bucket.live == 0 {
            self.far.remove(&number);
        }
        true
    }

    /// No armed timer fires before this. Exact when a timer of the current second is
    /// known (the usual case); otherwise the start of the next bucket with a timer in it, so the
    /// caller may wake up once per bucket and find nothing due yet.
    pub(crate) fn earliest(&self) -> Option<Instant> {
        let tick = match self.near.first() {
            Some(&(tick, _)) => tick,
            None => *self.far.first_key_value()?.0 << BUCKET_BITS,
        };
        Some(self.instant(tick))
    }

    /// Puts in order the buckets whose second has started by `now`.
    pub(crate) fn advance(&mut self, now: Instant) {
        let Some(now) = self.tick(now) else {
            return;
        };
        while let Some(entry) = self.far.first_entry() {
            let number = *entry.key();
            if number << BUCKET_BITS > now {
                break;
            }
            let bucket = entry.remove();
            self.horizon = (number + 1) << BUCKET_BITS;
            if self.near.is_empty() {
                // From a sorted run the set is built in one pass (a start-up's first bucket
                // holds every row).
                let mut entries = bucket.entries;
                entries.sort_unstable();
                self.near = entries.into_iter().collect();
            } else {
                self.near.extend(bucket.entries);
            }
        }
    }

    /// The earliest timer due at `now`, if any, taken out. It may have been disarmed while it
    /// waited in a bucket: the caller checks.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<(Instant, RegKey)> {
        self.advance(now);
        let &(tick, _) = self.near.first()?;
        if self.instant(tick) > now {
            return None;
        }
        let (tick, key) = self.near.pop_first()?;
        Some((self.instant(tick), key))
    }

    /// Entries held, disarmed ones still in their bucket included.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.near.len() + self.far.values().map(|b| b.entries.len()).sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pops everything due by `until`, skipping what `armed` says was disarmed.
    fn drain(
        queue: &mut TimerQueue,
        until: Instant,
        armed: impl Fn(Instant, RegKey) -> bool,
    ) -> Vec<(Instant, RegKey)> {
        std::iter::from_fn(|| queue.pop_due(until))
            .filter(|&(at, key)| armed(at, key))
            .collect()
    }

    #[test]
    fn entries_keep_their_instants_and_order_whatever_the_insertion_order() {
        let t0 = Instant::now() + Duration::from_secs(3600);
        let mut queue = TimerQueue::default();
        queue.insert(t0 + Duration::from_millis(1500), RegKey(1));
        queue.insert(t0, RegKey(2));
        // Earlier than the first timer armed.
        queue.insert(t0 - Duration::from_secs(60), RegKey(3));
        queue.insert(t0 + Duration::from_nanos(1), RegKey(4));
        queue.insert(t0 + Duration::from_secs(600), RegKey(5));
        assert_eq!(queue.len(), 5);
        assert!(queue.remove(t0, RegKey(2)));
        assert!(!queue.remove(t0 - Duration::from_secs(3600), RegKey(9)));
        assert!(!queue.remove(t0 + Duration::from_secs(7200), RegKey(9)));
        // Nothing is in order yet: the bound is the first bucket's start.
        let first = t0 - Duration::from_secs(60);
        let bound = queue.earliest().expect("timers are armed");
        assert!(bound <= first && first - bound < Duration::from_nanos(BUCKET_NANOS));
        let armed = |at: Instant, key: RegKey| (at, key) != (t0, RegKey(2));
        let order = drain(&mut queue, t0 + Duration::from_secs(3600), armed);
        assert_eq!(
            order,
            [
                (t0 - Duration::from_secs(60), RegKey(3)),
                (t0 + Duration::from_nanos(1), RegKey(4)),
                (t0 + Duration::from_millis(1500), RegKey(1)),
                (t0 + Duration::from_secs(600), RegKey(5)),
            ]
        );
        assert_eq!(queue.len(), 0);
        assert_eq!(queue.earliest(), None);
    }

    #[test]
    fn nothing_is_popped_before_it_is_due_and_earliest_never_passes_a_timer() {
        let t0 = Instant::now();
        let mut queue = TimerQueue::default();
        let due = t0 + Duration::from_millis(2500);
        queue.insert(t0, RegKey(1));
        queue.insert(due, RegKey(2));
        assert_eq!(queue.pop_due(t0), Some((t0, RegKey(1))));
        // Only the bucket is known until its second: the bound is its start, not later.
        let bound = queue.earliest().expect("a timer is armed");
        assert!(bound <= due && due - bound < Duration::from_nanos(BUCKET_NANOS));
        assert_eq!(
            queue.pop_due(bound),
            None,
            "the bucket's start is not the timer"
        );
        assert_eq!(
            queue.earliest(),
            Some(due),
            "exact once its bucket is in order"
        );
        assert_eq!(queue.pop_due(due - Duration::from_nanos(1)), None);
        assert_eq!(queue.pop_due(due), Some((due, RegKey(2))));
        assert_eq!(queue.pop_due(due + Duration::from_secs(9)), None);
    }

    #[test]
    fn a_bucket_whose_timers_were_all_disarmed_goes_at_once() {
        let t0 = Instant::now();
        let mut queue = TimerQueue::default();
        queue.insert(t0, RegKey(0));
        // In-flight guards five minutes ahead, each replaced by the refresh its answer armed.
        let guard = t0 + Duration::from_secs(300);
        for n in 1..=1000 {
            queue.insert(guard, RegKey(n));
        }
        for n in 1..=1000 {
            queue.insert(t0 + Duration::from_secs(1800 + n), RegKey(n));
            assert!(queue.remove(guard, RegKey(n)));
        }
        assert_eq!(queue.len(), 1001, "the guards' bucket is gone");
        // One guard left armed keeps its bucket; the other 999 reach the caller as stale.
        queue.insert(guard, RegKey(5000));
        let popped = drain(&mut queue, guard, |_, _| true);
        assert_eq!(popped, [(t0, RegKey(0)), (guard, RegKey(5000))]);
    }

    #[test]
    fn a_disarmed_timer_in_a_bucket_kept_by_others_reaches_the_caller_to_be_skipped() {
        let t0 = Instant::now();
        let mut queue = TimerQueue::default();
        queue.insert(t0, RegKey(0));
        let at = t0 + Duration::from_secs(60);
        queue.insert(at, RegKey(1));
        queue.insert(at + Duration::from_millis(1), RegKey(2));
        queue.insert(at + Duration::from_millis(2), RegKey(3));
        assert!(queue.remove(at, RegKey(1)));
        // Disarmed and armed again at the same instant: one entry reaches the caller, not two.
        assert!(queue.remove(at + Duration::from_millis(1), RegKey(2)));
        queue.insert(at + Duration::from_millis(1), RegKey(2));
        let popped: Vec<_> =
            std::iter::from_fn(|| queue.pop_due(at + Duration::from_secs(5))).collect();
        assert_eq!(
            popped,
            [
                (t0, RegKey(0)),
                (at, RegKey(1)),
                (at + Duration::from_millis(1), RegKey(2)),
                (at + Duration::from_millis(2), RegKey(3))
            ]
        );
    }

    #[test]
    fn timers_of_the_current_second_are_exact_in_order_and_removed_at_once() {
        let t0 = Instant::now();
        let mut queue = TimerQueue::default();
        queue.insert(t0, RegKey(0));
        assert_eq!(queue.pop_due(t0), Some((t0, RegKey(0))));
        // The first bucket is in order now: these go straight into it.
        let soon = t0 + Duration::from_millis(300);
        queue.insert(soon, RegKey(1));
        queue.insert(soon - Duration::from_millis(100), RegKey(2));
        assert_eq!(queue.earliest(), Some(soon - Duration::from_millis(100)));
        assert!(queue.remove(soon - Duration::from_millis(100), RegKey(2)));
        assert!(!queue.remove(soon - Duration::from_millis(100), RegKey(2)));
        assert_eq!(queue.earliest(), Some(soon));
        assert_eq!(queue.len(), 1);
    }

    #[test]
    fn timers_before_the_first_one_armed_keep_their_buckets_and_counts() {
        let t0 = Instant::now() + Duration::from_secs(3600);
        let mut queue = TimerQueue::default();
        queue.insert(t0, RegKey(1));
        queue.insert(t0 + Duration::from_secs(100), RegKey(2));
        queue.insert(t0 + Duration::from_secs(100), RegKey(3));
        // A day and more before the first timer armed, and not a whole number of buckets.
        let early = t0 - Duration::from_millis(123_456_789);
        queue.insert(early, RegKey(4));
        assert!(queue.remove(t0 + Duration::from_secs(100), RegKey(2)));
        assert!(queue.remove(t0 + Duration::from_secs(100), RegKey(3)));
        assert_eq!(queue.len(), 2, "the emptied bucket was found");
        let popped = drain(&mut queue, t0 + Duration::from_secs(200), |_, _| true);
        assert_eq!(popped, [(early, RegKey(4)), (t0, RegKey(1))]);
    }

    #[test]
    fn an_entry_is_16_bytes() {
        assert_eq!(std::mem::size_of::<(u64, RegKey)>(), 16);
    }
}

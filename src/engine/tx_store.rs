//! Where the client transactions are kept and in what order they come due, laid out for the
//! way a gateway uses them: numbers are handed out one after another, nearly every
//! transaction ends a few milliseconds after it starts, and nearly every deadline is "now plus
//! a constant" (T1 after sending, T4 once answered, timer F on a connection).
//!
//! A hash map by number and an ordered set of deadlines cost two or three cache misses per
//! lookup, spread over hundreds of thousands of transactions (timer K keeps each answered one
//! for T4): at a million rows that was a sixth of the daemon's CPU. Here the transactions sit
//! in a deque in the order they started, so the ones in flight are neighbours in memory, and
//! constant-offset deadlines go to FIFO lanes that are already in firing order; only the odd
//! deadline (a retransmission, a provisional answer's T2) goes to an ordered set.
//!
//! Deadline entries are hints, not bookings: a transaction that is answered, moved or ended
//! leaves its old entry behind, and whoever pops an entry checks it against the transaction.

use std::collections::{BTreeSet, VecDeque};
use std::time::Instant;

use foldhash::HashMap;

/// Values by number, for numbers that are inserted in increasing order and mostly removed
/// soon after.
pub(super) struct Numbered<T> {
    /// Number of `recent[0]`.
    base: u64,
    /// Values from `base` on, in number order; `None` where one was removed. The front is
    /// never `None`.
    recent: VecDeque<Option<T>>,
    /// Values older than `base` that were still there when the deque grew too long for how
    /// few values it holds (a transaction retransmitted for 32 s while thousands of others
    /// came and went).
    old: HashMap<u64, T>,
    len: usize,
}

/// The deque may span up to twice as many numbers as there are values, plus this.
const SPAN_SLACK: usize = 1024;

impl<T> Default for Numbered<T> {
    fn default() -> Self {
        Numbered {
            base: 0,
            recent: VecDeque::new(),
            old: HashMap::default(),
            len: 0,
        }
    }
}

impl<T> Numbered<T> {
    /// Adds `value` under `number`, which must be higher than every number inserted before.
    pub(super) fn insert(&mut self, number: u64, value: T) {
        let end = self.base + self.recent.len() as u64;
        if self.recent.is_empty() {
            self.base = number;
        } else if number < end {
            debug_assert!(false, "numbers must increase: {number} after {end}");
            self.old.insert(number, value);
            self.len += 1;
            return;
        } else {
            // Numbers are consecutive in practice; a gap is filled with empty places.
            for _ in end..number {
                self.recent.push_back(None);
            }
        }
        self.recent.push_back(Some(value));
        self.len += 1;
        while self.recent.len() > 2 * self.len + SPAN_SLACK {
            // Move the oldest (still there, or the front would be gone) out of the way.
            if let Some(Some(value)) = self.recent.pop_front() {
                self.old.insert(self.base, value);
            }
            self.base += 1;
            self.trim_front();
        }
    }

    fn index(&self, number: u64) -> Option<usize> {
        let offset = number.checked_sub(self.base)?;
        usize::try_from(offset)
            .ok()
            .filter(|&i| i < self.recent.len())
    }

    pub(super) fn get(&self, number: u64) -> Option<&T> {
        match self.index(number) {
            Some(i) => self.recent[i].as_ref(),
            None => self.old.get(&number),
        }
    }

    pub(super) fn get_mut(&mut self, number: u64) -> Option<&mut T> {
        match self.index(number) {
            Some(i) => self.recent[i].as_mut(),
            None => self.old.get_mut(&number),
        }
    }

    pub(super) fn remove(&mut self, number: u64) -> Option<T> {
        let value = match self.index(number) {
            Some(i) => {
                let value = self.recent[i].take();
                self.trim_front();
                value
            }
            None => self.old.remove(&number),
        };
        if value.is_some() {
            self.len -= 1;
        }
        value
    }

    fn trim_front(&mut self) {
        while let Some(None) = self.recent.front() {
            self.recent.pop_front();
            self.base += 1;
        }
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }

    #[cfg(test)]
    pub(super) fn values(&self) -> impl Iterator<Item = &T> {
        self.recent.iter().flatten().chain(self.old.values())
    }

    /// Places held, for values and empty places alike.
    #[cfg(test)]
    pub(super) fn capacity(&self) -> usize {
        self.recent.capacity() + self.old.capacity()
    }

    /// After a burst: gives back most of the room once a quarter of it is used. Each shrink
    /// follows at least as many removals as it moves values, so it stays O(1) per value.
    pub(super) fn release_spare(&mut self, keep: usize) {
        shrink_deque(&mut self.recent, keep);
        let capacity = self.old.capacity();
        if capacity > keep && self.old.len() < capacity / 4 {
            self.old.shrink_to((self.old.len() * 2).max(keep));
        }
    }
}

fn shrink_deque<T>(deque: &mut VecDeque<T>, keep: usize) {
    let capacity = deque.capacity();
    if capacity > keep && deque.len() < capacity / 4 {
        deque.shrink_to((deque.len() * 2).max(keep));
    }
}

/// Which FIFO lane a deadline goes to: each holds deadlines that are "now plus one constant",
/// so entries pushed in time order are in firing order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Lane {
    /// The first timer E of a UDP request: sent + T1.
    Sent,
    /// Timer K of an answered UDP request: answered + T4.
    Answered,
    /// Timer F of a request on a connection: sent + 64 × T1.
    Reliable,
}

/// Deadlines of numbered things, earliest first; entries may be stale (see the module docs).
#[derive(Default)]
pub(super) struct Deadlines {
    lanes: [VecDeque<(Instant, u64)>; 3],
    /// Deadlines of no lane, and lane deadlines that came out of order (a caller whose `now`
    /// went backwards).
    other: BTreeSet<(Instant, u64)>,
}

impl Deadlines {
    pub(super) fn push(&mut self, lane: Lane, at: Instant, number: u64) {
        let fifo = &mut self.lanes[lane as usize];
        if fifo.back().is_none_or(|&(last, _)| last <= at) {
            fifo.push_back((at, number));
        } else {
            self.other.insert((at, number));
        }
    }

    pub(super) fn push_other(&mut self, at: Instant, number: u64) {
        self.other.insert((at, number));
    }

    /// The earliest entry, and where it is.
    fn earliest(&self) -> Option<((Instant, u64), Option<usize>)> {
        let mut best = self.other.first().map(|&entry| (entry, None));
        for (i, fifo) in self.lanes.iter().enumerate() {
            if let Some(&entry) = fifo.front()
                && best.is_none_or(|(b, _)| entry < b)
            {
                best = Some((entry, Some(i)));
            }
        }
        best
    }

    pub(super) fn first(&self) -> Option<(Instant, u64)> {
        self.earliest().map(|(entry, _)| entry)
    }

    /// Takes the earliest entry if it is due at `now`.
    pub(super) fn pop_due(&mut self, now: Instant) -> Option<(Instant, u64)> {
        let (entry, place) = self.earliest().filter(|&((at, _), _)| at <= now)?;
        match place {
            Some(i) => self.lanes[i].pop_front(),
            None => self.other.pop_first(),
        };
        Some(entry)
    }

    /// Removes entries at the front of every lane (and of the set) that `is_live` says are
    /// stale, so that [`Deadlines::first`] does not name a moment when nothing is due.
    pub(super) fn drop_stale_fronts(&mut self, is_live: impl Fn(Instant, u64) -> bool) {
        for fifo in &mut self.lanes {
            while let Some(&(at, number)) = fifo.front() {
                if is_live(at, number) {
                    break;
                }
                fifo.pop_front();
            }
        }
        while let Some(&(at, number)) = self.other.first() {
            if is_live(at, number) {
                break;
            }
            self.other.pop_first();
        }
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.lanes.iter().map(VecDeque::len).sum::<usize>() + self.other.len()
    }

    pub(super) fn release_spare(&mut self, keep: usize) {
        for fifo in &mut self.lanes {
            shrink_deque(fifo, keep);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn numbered_values_are_found_removed_and_their_room_given_back() {
        let mut values = Numbered::default();
        for n in 1..=10_000u64 {
            values.insert(n, n * 10);
        }
        assert_eq!(values.len(), 10_000);
        assert_eq!(values.get(7), Some(&70));
        assert_eq!(values.get(0), None);
        assert_eq!(values.get(10_001), None);
        // Removed out of order: the front only advances past removed places.
        assert_eq!(values.remove(2), Some(20));
        assert_eq!(values.remove(2), None);
        assert_eq!(values.get(1), Some(&10));
        for n in 1..=9_990u64 {
            values.remove(n);
        }
        assert_eq!(values.len(), 10);
        assert_eq!(
            values.recent.len(),
            10,
            "the front moved up to the oldest left"
        );
        *values.get_mut(9_995).unwrap() += 1;
        assert_eq!(values.get(9_995), Some(&99_951));
        let grown = values.capacity();
        values.release_spare(64);
        assert!(values.capacity() < grown / 4, "{}", values.capacity());
        // After everything is gone, numbering may go on anywhere higher.
        for n in 9_991..=10_000u64 {
            values.remove(n);
        }
        assert_eq!(values.len(), 0);
        values.insert(50_000, 1);
        assert_eq!(values.get(50_000), Some(&1));
    }

    #[test]
    fn a_value_that_stays_long_moves_aside_and_is_still_found() {
        let mut values = Numbered::default();
        values.insert(1, "straggler");
        for n in 2..100_000u64 {
            values.insert(n, "brief");
            values.remove(n);
        }
        assert_eq!(values.len(), 1);
        assert!(
            values.recent.len() <= 2 + SPAN_SLACK,
            "{}",
            values.recent.len()
        );
        assert_eq!(values.old.len(), 1);
        assert_eq!(values.get(1), Some(&"straggler"));
        assert_eq!(values.remove(1), Some("straggler"));
        assert_eq!(values.len(), 0);
        assert_eq!(values.get(1), None);
    }

    #[test]
    fn deadlines_come_out_in_time_order_across_lanes_and_the_set() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut deadlines = Deadlines::default();
        deadlines.push(Lane::Sent, ms(500), 1);
        deadlines.push(Lane::Answered, ms(5_000), 1);
        deadlines.push(Lane::Sent, ms(510), 2);
        // Earlier than the lane's last: goes to the set, still in order.
        deadlines.push(Lane::Sent, ms(400), 3);
        deadlines.push_other(ms(4_000), 4);
        deadlines.push(Lane::Reliable, ms(32_000), 5);
        assert_eq!(deadlines.len(), 6);
        assert_eq!(deadlines.first(), Some((ms(400), 3)));
        assert_eq!(deadlines.pop_due(ms(399)), None, "nothing is due yet");
        let order: Vec<u64> = std::iter::from_fn(|| deadlines.pop_due(ms(32_000)))
            .map(|(_, n)| n)
            .collect();
        assert_eq!(order, [3, 1, 2, 4, 1, 5]);
    }

    #[test]
    fn stale_fronts_are_dropped_until_a_live_one() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut deadlines = Deadlines::default();
        for n in 1..=5 {
            deadlines.push(Lane::Sent, ms(n), n);
        }
        deadlines.push_other(ms(0), 0);
        deadlines.drop_stale_fronts(|_, n| n >= 3);
        assert_eq!(deadlines.first(), Some((ms(3), 3)));
        assert_eq!(deadlines.len(), 3);
    }
}

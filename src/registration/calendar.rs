//! The refresh calendar: how many refreshes are scheduled in each second, so that a new one can
//! be put in the latest second that still has room.
//!
//! Rows that register together — a start-up of 100,000 rows within a minute — would otherwise
//! refresh together an hour later, and every hour after: the few percent of random jitter taken
//! off each refresh only smears the bunch over a few minutes. With a cap on refreshes per second,
//! a refresh whose due second is full moves earlier, to the latest second before it that has
//! room. It never moves earlier than the window the caller gives (half the grant after now, so a
//! row at most doubles its REGISTER rate, once) and never later than due, so it still goes out
//! before the binding expires. When every second of the window is full it takes the least-loaded
//! one.
//!
//! Counts are kept per second since the calendar's epoch (the first instant the table saw), in a
//! ring of [`RING`] seconds (~73 h) that forms the leaves of a min segment tree. "Latest second in
//! `[lo, hi]` below the cap" and "least-loaded second in `[lo, hi]`" are each one descent of the
//! tree, O(log RING) = 18 levels, whatever the table size or window length; counting a refresh in
//! or out updates one leaf-to-root path. Only refreshes due less than half a ring ahead are
//! spread, so a count is never taken for one a whole ring away unless a timer is left overdue
//! for more than ~36 h.
//!
//! The calendar only answers where a refresh should go; the table counts it in ([`add`]) once a
//! registration holds that timer and out ([`remove`]) when the timer fires or is replaced, so
//! the counts always equal the refresh timers actually armed.
//!
//! [`add`]: RefreshCalendar::add
//! [`remove`]: RefreshCalendar::remove

use std::time::{Duration, Instant};

/// Seconds in the ring (a power of two).
const RING: usize = 1 << 18;
/// Refreshes due this far ahead or further are not spread (nor counted).
const HORIZON_SECS: u64 = RING as u64 / 2;

/// Scheduled refreshes per second.
#[derive(Debug, Default)]
pub struct RefreshCalendar {
    /// Second 0 of the calendar (see [`RefreshCalendar::start`]; else the first placement).
    epoch: Option<Instant>,
    /// Min segment tree over the ring: `tree[RING + slot]` is the count of `slot`,
    /// `tree[n] = min(tree[2n], tree[2n + 1])`, `tree[0]` unused. Empty (no memory) until the
    /// first refresh is placed, so a table that does not spread pays nothing.
    tree: Vec<u32>,
    /// Refreshes counted in, over all seconds.
    scheduled: usize,
}

/// Where a spread refresh goes: the instant, and the calendar second to count it in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placement {
    pub at: Instant,
    pub second: u32,
}

impl RefreshCalendar {
    /// Fixes second 0 at `now` unless already fixed. The table calls this with the first instant
    /// it is given, so its calendar seconds are whole seconds since then.
    pub fn start(&mut self, now: Instant) {
        self.epoch.get_or_insert(now);
    }

    /// Where a refresh due at `target` goes when at most `cap` refreshes should share a second
    /// and it may go no earlier than `earliest`: the latest whole second in
    /// `[earliest, target]` with fewer than `cap` refreshes, else the least-loaded one (the
    /// latest of those), at the same fraction of its second as `target`. None when `target` is
    /// not ahead of `now` or beyond the calendar's horizon: such a refresh is not spread.
    ///
    /// The refresh is not counted in; see [`RefreshCalendar::add`].
    pub fn choose(
        &mut self,
        now: Instant,
        earliest: Instant,
        target: Instant,
        cap: u32,
    ) -> Option<Placement> {
        let epoch = *self.epoch.get_or_insert(now);
        if self.tree.is_empty() {
            self.tree = vec![0; 2 * RING];
        }
        if target <= now {
            return None;
        }
        let now_second = target_second(epoch, now);
        let hi = target_second(epoch, target);
        if hi >= now_second + HORIZON_SECS || hi > u64::from(u32::MAX) {
            return None;
        }
        // Whole seconds only: the first full second at or after `earliest`.
        let since = earliest.saturating_duration_since(epoch);
        let lo_second = since.as_secs() + u64::from(since.subsec_nanos() > 0);
        let lo = lo_second.clamp(now_second, hi);
        let second = match self.latest_below(lo, hi, cap.max(1)) {
            Some(second) => second,
            None => self.least_loaded(lo, hi),
        };
        let at = target - Duration::from_secs(hi - second);
        Some(Placement {
            at,
            second: second as u32,
        })
    }

    /// Counts a refresh in `second`.
    pub fn add(&mut self, second: u32) {
        let slot = slot(u64::from(second));
        let count = self.tree[RING + slot];
        self.set(slot, count + 1);
        self.scheduled += 1;
    }

    /// Counts a refresh out of `second` (it fired, or its timer was replaced or dropped).
    pub fn remove(&mut self, second: u32) {
        let slot = slot(u64::from(second));
        let count = self.tree[RING + slot];
        debug_assert!(
            count > 0,
            "refresh calendar: second {second} is already empty"
        );
        self.set(slot, count.saturating_sub(1));
        self.scheduled = self.scheduled.saturating_sub(1);
    }

    /// Refreshes counted in, over all seconds.
    pub fn scheduled(&self) -> usize {
        self.scheduled
    }

    /// Refreshes counted in `second`.
    pub fn count(&self, second: u32) -> u32 {
        self.tree
            .get(RING + slot(u64::from(second)))
            .copied()
            .unwrap_or(0)
    }

    /// The calendar second `at` falls in (None before the first placement).
    pub fn second_of(&self, at: Instant) -> Option<u64> {
        self.epoch.map(|epoch| target_second(epoch, at))
    }

    /// Checks the counts against `seconds`, one entry per refresh timer armed, and the tree's
    /// inner nodes against its leaves: a full O(RING + n) walk, for debug checks in tests.
    pub fn agrees_with(&self, seconds: impl Iterator<Item = u32>) -> Result<(), String> {
        let mut expected = vec![0u32; if self.tree.is_empty() { 0 } else { RING }];
        let mut total = 0usize;
        for second in seconds {
            let Some(count) = expected.get_mut(slot(u64::from(second))) else {
                return Err(format!("second {second} held before the calendar started"));
            };
            *count += 1;
            total += 1;
        }
        if total != self.scheduled {
            return Err(format!(
                "{} refreshes counted, {total} timers armed",
                self.scheduled
            ));
        }
        if let Some(slot) = (0..expected.len()).find(|&s| self.tree[RING + s] != expected[s]) {
            return Err(format!(
                "slot {slot}: counted {}, armed {}",
                self.tree[RING + slot],
                expected[slot]
            ));
        }
        if self.tree.is_empty() {
            return Ok(());
        }
        if let Some(node) =
            (1..RING).find(|&n| self.tree[n] != self.tree[2 * n].min(self.tree[2 * n + 1]))
        {
            return Err(format!(
                "inner node {node} does not hold its children's minimum"
            ));
        }
        Ok(())
    }

    fn set(&mut self, slot: usize, count: u32) {
        let mut node = RING + slot;
        self.tree[node] = count;
        node /= 2;
        while node >= 1 {
            let min = self.tree[2 * node].min(self.tree[2 * node + 1]);
            if self.tree[node] == min {
                // Nothing above changes either.
                break;
            }
            self.tree[node] = min;
            node /= 2;
        }
    }

    /// The latest second in `[lo, hi]` (less than a ring apart) whose count is below
    /// `threshold`.
    fn latest_below(&self, lo: u64, hi: u64, threshold: u32) -> Option<u64> {
        let (lo_slot, hi_slot) = (slot(lo), slot(hi));
        // How many seconds before `hi` a slot lies.
        let back = |found: usize| ((hi_slot + RING - found) % RING) as u64;
        let found = if lo_slot <= hi_slot {
            self.rightmost_below(lo_slot, hi_slot, threshold)
        } else {
            // The window wraps around the ring: its later part is at the start of the ring.
            self.rightmost_below(0, hi_slot, threshold)
                .or_else(|| self.rightmost_below(lo_slot, RING - 1, threshold))
        };
        found.map(|slot| hi - back(slot))
    }

    /// The latest of the least-loaded seconds in `[lo, hi]`.
    fn least_loaded(&self, lo: u64, hi: u64) -> u64 {
        let (lo_slot, hi_slot) = (slot(lo), slot(hi));
        let min = if lo_slot <= hi_slot {
            self.min_in(lo_slot, hi_slot)
        } else {
            self.min_in(0, hi_slot).min(self.min_in(lo_slot, RING - 1))
        };
        // The minimum is in the window, so this finds a second; `hi` is a safe answer anyway.
        self.latest_below(lo, hi, min.saturating_add(1))
            .unwrap_or(hi)
    }

    /// The rightmost slot in `[lo, hi]` whose count is below `threshold`.
    fn rightmost_below(&self, lo: usize, hi: usize, threshold: u32) -> Option<usize> {
        self.descend(1, 0, RING, lo, hi, threshold)
    }

    /// Right-first search under `node`, which covers slots `start .. start + len`. A node that
    /// lies wholly inside `[lo, hi]` with a minimum below the threshold always yields a slot, so
    /// besides the two boundary paths only one successful descent is made: O(log RING).
    fn descend(
        &self,
        node: usize,
        start: usize,
        len: usize,
        lo: usize,
        hi: usize,
        threshold: u32,
    ) -> Option<usize> {
        if start > hi || start + len <= lo || self.tree[node] >= threshold {
            return None;
        }
        if len == 1 {
            return Some(start);
        }
        let half = len / 2;
        self.descend(2 * node + 1, start + half, half, lo, hi, threshold)
            .or_else(|| self.descend(2 * node, start, half, lo, hi, threshold))
    }

    /// The smallest count in slots `[lo, hi]`.
    fn min_in(&self, lo: usize, hi: usize) -> u32 {
        let (mut left, mut right) = (lo + RING, hi + RING + 1);
        let mut min = u32::MAX;
        while left < right {
            if left % 2 == 1 {
                min = min.min(self.tree[left]);
                left += 1;
            }
            if right % 2 == 1 {
                right -= 1;
                min = min.min(self.tree[right]);
            }
            left /= 2;
            right /= 2;
        }
        min
    }
}

/// The whole second since `epoch` that `at` falls in.
fn target_second(epoch: Instant, at: Instant) -> u64 {
    at.saturating_duration_since(epoch).as_secs()
}

fn slot(second: u64) -> usize {
    (second % RING as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    /// The same choice by a plain scan of `counts` (second → count).
    fn naive(counts: &[u32], lo: u64, hi: u64, cap: u32) -> u64 {
        let window = lo..=hi;
        if let Some(second) = window.clone().rev().find(|&s| counts[s as usize] < cap) {
            return second;
        }
        let min = window.clone().map(|s| counts[s as usize]).min().unwrap();
        window.rev().find(|&s| counts[s as usize] == min).unwrap()
    }

    #[test]
    fn latest_second_with_room_then_least_loaded() {
        let t0 = Instant::now();
        let mut calendar = RefreshCalendar::default();
        let target = t0 + secs(100) + Duration::from_millis(250);
        let earliest = t0 + secs(97);
        let place = |calendar: &mut RefreshCalendar| {
            let p = calendar.choose(t0, earliest, target, 2).unwrap();
            calendar.add(p.second);
            p
        };
        // Two fit in the due second, at the due instant.
        for _ in 0..2 {
            assert_eq!(
                place(&mut calendar),
                Placement {
                    at: target,
                    second: 100
                }
            );
        }
        // Then the seconds before it, latest first, at the same fraction of the second.
        let third = place(&mut calendar);
        assert_eq!(third.second, 99);
        assert_eq!(third.at, target - secs(1));
        for _ in 0..5 {
            place(&mut calendar);
        }
        // 97..=100 now hold two each: the window is full, the least-loaded latest second wins.
        assert_eq!((97..=100).map(|s| calendar.count(s)).sum::<u32>(), 8);
        assert_eq!(place(&mut calendar).second, 100);
        assert_eq!(place(&mut calendar).second, 99);
        // Counting out frees room again.
        calendar.remove(98);
        calendar.remove(98);
        assert_eq!(place(&mut calendar).second, 98);
        assert_eq!(calendar.scheduled(), 9);
    }

    #[test]
    fn never_earlier_than_asked_nor_beyond_the_horizon() {
        let t0 = Instant::now();
        let mut calendar = RefreshCalendar::default();
        // `earliest` in the middle of second 10: second 10 is not whole, 11 is the first.
        let earliest = t0 + Duration::from_millis(10_500);
        for _ in 0..3 {
            let p = calendar.choose(t0, earliest, t0 + secs(12), 1).unwrap();
            calendar.add(p.second);
        }
        assert_eq!((calendar.count(11), calendar.count(12)), (1, 2));
        // A window that ends before it starts is just the due second.
        let p = calendar
            .choose(t0, t0 + secs(50), t0 + secs(40), 1)
            .unwrap();
        assert_eq!(p.second, 40);
        // Too far ahead, or not ahead at all: not spread.
        let far = t0 + secs(HORIZON_SECS + 5);
        assert_eq!(calendar.choose(t0, far - secs(100), far, 1), None);
        assert_eq!(calendar.choose(t0 + secs(5), t0, t0 + secs(5), 1), None);
    }

    #[test]
    fn windows_that_wrap_around_the_ring() {
        let t0 = Instant::now();
        let mut calendar = RefreshCalendar::default();
        calendar.choose(t0, t0, t0 + secs(1), 1);
        let ring = RING as u64;
        // A window that straddles the end of the ring, seen from late enough that it is ahead.
        let now = t0 + secs(ring - 10);
        let (lo, hi) = (ring - 3, ring + 2);
        let mut seconds = Vec::new();
        for _ in 0..(hi - lo + 1) {
            let p = calendar
                .choose(now, t0 + secs(lo), t0 + secs(hi), 1)
                .unwrap();
            calendar.add(p.second);
            seconds.push(u64::from(p.second));
        }
        assert_eq!(seconds, (lo..=hi).rev().collect::<Vec<_>>());
        // Full: the least-loaded is the latest again.
        let p = calendar
            .choose(now, t0 + secs(lo), t0 + secs(hi), 1)
            .unwrap();
        assert_eq!(u64::from(p.second), hi);
        calendar
            .agrees_with(seconds.iter().map(|s| *s as u32))
            .unwrap();
    }

    #[test]
    fn agrees_with_a_plain_scan() {
        let t0 = Instant::now();
        let mut calendar = RefreshCalendar::default();
        let mut counts = vec![0u32; 4000];
        let mut held: Vec<u32> = Vec::new();
        let mut rng = StdRng::seed_from_u64(11);
        for _ in 0..20_000 {
            if !held.is_empty() && rng.random_range(0..4u8) == 0 {
                let second = held.swap_remove(rng.random_range(0..held.len()));
                calendar.remove(second);
                counts[second as usize] -= 1;
                continue;
            }
            let hi: u64 = rng.random_range(1..4000);
            let lo = hi.saturating_sub(rng.random_range(0..300)).max(1);
            let cap = rng.random_range(1..6);
            let target = t0 + secs(hi) + Duration::from_millis(rng.random_range(0..1000));
            let p = calendar.choose(t0, t0 + secs(lo), target, cap).unwrap();
            assert_eq!(u64::from(p.second), naive(&counts, lo, hi, cap));
            assert!(p.at <= target && p.at >= t0 + secs(lo));
            calendar.add(p.second);
            counts[p.second as usize] += 1;
            held.push(p.second);
        }
        calendar.agrees_with(held.iter().copied()).unwrap();
        assert!(calendar.agrees_with(held.iter().copied().skip(1)).is_err());
    }
}

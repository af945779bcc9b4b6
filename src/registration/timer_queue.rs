//! Every armed registration timer, in firing order.
//!
//! One entry per row for the daemon's lifetime, so its size matters: an `Instant` is 16 bytes,
//! and `(Instant, RegKey)` entries made a B-tree leaf 276 bytes (mimalloc's 320-byte class).
//! Entries here are nanoseconds since an epoch (u64) and the key: 16 bytes, a 188-byte leaf
//! (the 192-byte class), about 20 bytes less per row. Times before the epoch are never
//! rounded: the queue moves its epoch back instead, which is exact and rare.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use super::RegKey;

#[derive(Default)]
pub(crate) struct TimerQueue {
    /// No entry lies before it; `None` until the first insert.
    epoch: Option<Instant>,
    entries: BTreeSet<(u64, RegKey)>,
}

/// Saturates at 584 years after the epoch, far beyond any timer.
fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

impl TimerQueue {
    fn tick(&self, at: Instant) -> Option<u64> {
        let epoch = self.epoch?;
        (at >= epoch).then(|| nanos(at - epoch))
    }

    fn instant(&self, tick: u64) -> Instant {
        let epoch = self
            .epoch
            .expect("entries exist only after an epoch is set");
        epoch + Duration::from_nanos(tick)
    }

    pub(crate) fn insert(&mut self, at: Instant, key: RegKey) {
        let tick = match self.tick(at) {
            Some(tick) => tick,
            None => {
                self.rebase(at);
                0
            }
        };
        self.entries.insert((tick, key));
    }

    pub(crate) fn remove(&mut self, at: Instant, key: RegKey) -> bool {
        match self.tick(at) {
            Some(tick) => self.entries.remove(&(tick, key)),
            None => false,
        }
    }

    pub(crate) fn first(&self) -> Option<(Instant, RegKey)> {
        let &(tick, key) = self.entries.first()?;
        Some((self.instant(tick), key))
    }

    pub(crate) fn pop_first(&mut self) -> Option<(Instant, RegKey)> {
        let (tick, key) = self.entries.pop_first()?;
        Some((self.instant(tick), key))
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Makes `epoch` the new epoch (earlier than the current one, or the first), shifting
    /// every entry so that it keeps its instant.
    fn rebase(&mut self, epoch: Instant) {
        if let Some(old) = self.epoch.replace(epoch) {
            let shift = nanos(old - epoch);
            self.entries = std::mem::take(&mut self.entries)
                .into_iter()
                .map(|(tick, key)| (tick.saturating_add(shift), key))
                .collect();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_keep_their_instants_and_order_whatever_the_insertion_order() {
        let t0 = Instant::now() + Duration::from_secs(3600);
        let mut queue = TimerQueue::default();
        queue.insert(t0 + Duration::from_millis(1500), RegKey(1));
        queue.insert(t0, RegKey(2));
        // Earlier than the epoch the first insert set: the queue moves its epoch back.
        queue.insert(t0 - Duration::from_secs(60), RegKey(3));
        queue.insert(t0 + Duration::from_nanos(1), RegKey(4));
        assert_eq!(queue.len(), 4);
        assert!(queue.remove(t0, RegKey(2)));
        assert!(!queue.remove(t0, RegKey(2)), "already gone");
        assert!(!queue.remove(t0 - Duration::from_secs(3600), RegKey(9)));
        let order: Vec<(Instant, RegKey)> = std::iter::from_fn(|| queue.pop_first()).collect();
        assert_eq!(
            order,
            [
                (t0 - Duration::from_secs(60), RegKey(3)),
                (t0 + Duration::from_nanos(1), RegKey(4)),
                (t0 + Duration::from_millis(1500), RegKey(1)),
            ]
        );
    }

    #[test]
    fn an_entry_is_16_bytes() {
        assert_eq!(std::mem::size_of::<(u64, RegKey)>(), 16);
    }
}

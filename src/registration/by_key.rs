//! The registrations themselves, found by their [`RegKey`].
//!
//! A `HashMap<RegKey, Box<Registration>>` slot is 16 bytes (the key and the box); here a slot
//! is the box alone, 8 bytes, since the registration carries its key: 10 bytes less per row at
//! 100,000 rows. Keys are the table's own counter, never chosen by a peer, so a fixed mix of
//! the number spreads them well enough and nothing needs a keyed hash.

use hashbrown::HashTable;

use super::{RegKey, Registration};

#[derive(Default)]
pub(crate) struct Registrations {
    slots: HashTable<Box<Registration>>,
}

/// Fibonacci hashing: the counter's low bits spread over the whole word, the high bits
/// (which hashbrown's control bytes use) included.
fn hash(key: RegKey) -> u64 {
    key.0.wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

impl Registrations {
    pub(crate) fn get(&self, key: &RegKey) -> Option<&Registration> {
        self.slots
            .find(hash(*key), |r| r.key() == *key)
            .map(|r| &**r)
    }

    pub(crate) fn get_mut(&mut self, key: &RegKey) -> Option<&mut Registration> {
        self.slots
            .find_mut(hash(*key), |r| r.key() == *key)
            .map(|r| &mut **r)
    }

    /// Adds `registration`, replacing one under the same key.
    pub(crate) fn insert(&mut self, registration: Box<Registration>) {
        let key = registration.key();
        match self
            .slots
            .entry(hash(key), |r| r.key() == key, |r| hash(r.key()))
        {
            hashbrown::hash_table::Entry::Occupied(mut slot) => *slot.get_mut() = registration,
            hashbrown::hash_table::Entry::Vacant(slot) => {
                slot.insert(registration);
            }
        }
    }

    pub(crate) fn remove(&mut self, key: &RegKey) -> Option<Box<Registration>> {
        let slot = self
            .slots
            .find_entry(hash(*key), |r| r.key() == *key)
            .ok()?;
        Some(slot.remove().0)
    }

    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    /// Every registration, in no order (the calendar's consistency check).
    #[cfg(debug_assertions)]
    pub(crate) fn values(&self) -> impl Iterator<Item = &Registration> {
        self.slots.iter().map(|r| &**r)
    }
}

//! Which shard a row belongs to, and sets of shards.
//!
//! The hash is CRC-32 (IEEE) of the l_uuid's bytes, modulo the shard count: every node, every
//! version and an operator at a SQL prompt compute the same shard (MySQL and MariaDB have
//! `CRC32(l_uuid) % 256` built in).

/// The shard of the row `l_uuid` among `shards` (at least 1).
pub fn shard_of(l_uuid: &str, shards: u32) -> u32 {
    crc32fast::hash(l_uuid.as_bytes()) % shards.max(1)
}

/// A set of shards, one bit each: cheap to copy into the engine and to test per row.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShardSet {
    shards: u32,
    bits: Vec<u64>,
}

impl ShardSet {
    /// No shard of `shards`.
    pub fn empty(shards: u32) -> ShardSet {
        ShardSet {
            shards,
            bits: vec![0; shards.div_ceil(64) as usize],
        }
    }

    /// Every shard of `shards` (a node without clustering holds them all).
    pub fn all(shards: u32) -> ShardSet {
        let mut set = ShardSet::empty(shards);
        for shard in 0..shards {
            set.insert(shard);
        }
        set
    }

    /// How many shards there are (not how many are in the set).
    pub fn shard_count(&self) -> u32 {
        self.shards
    }

    pub fn contains(&self, shard: u32) -> bool {
        let (word, bit) = (shard / 64, shard % 64);
        self.bits
            .get(word as usize)
            .is_some_and(|w| w & (1 << bit) != 0)
    }

    /// Adds `shard`; shards beyond the count the set was made for are ignored.
    pub fn insert(&mut self, shard: u32) {
        if shard >= self.shards {
            return;
        }
        let (word, bit) = (shard / 64, shard % 64);
        if let Some(w) = self.bits.get_mut(word as usize) {
            *w |= 1 << bit;
        }
    }

    pub fn remove(&mut self, shard: u32) {
        let (word, bit) = (shard / 64, shard % 64);
        if let Some(w) = self.bits.get_mut(word as usize) {
            *w &= !(1 << bit);
        }
    }

    pub fn len(&self) -> usize {
        self.bits.iter().map(|w| w.count_ones() as usize).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.bits.iter().all(|w| *w == 0)
    }

    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.bits.iter().enumerate().flat_map(|(i, word)| {
            (0..64u32)
                .filter(move |bit| word & (1 << bit) != 0)
                .map(move |bit| i as u32 * 64 + bit)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shard_is_crc32_of_the_l_uuid() {
        // CRC-32 of "123456789" is the standard check value 0xCBF43926.
        assert_eq!(shard_of("123456789", u32::MAX), 0xCBF4_3926);
        assert_eq!(shard_of("123456789", 256), 0x26);
        assert_eq!(shard_of("anything", 1), 0);
        assert_eq!(shard_of("anything", 0), 0, "a zero count is taken as one");
    }

    #[test]
    fn rows_spread_over_the_shards() {
        let mut per_shard = [0u32; 256];
        for i in 0..25_600 {
            per_shard[shard_of(&format!("trunk-{i:06}"), 256) as usize] += 1;
        }
        let (min, max) = (per_shard.iter().min(), per_shard.iter().max());
        assert!(min >= Some(&60) && max <= Some(&140), "{min:?}..{max:?}");
    }

    #[test]
    fn a_set_holds_what_was_put_in() {
        let mut set = ShardSet::empty(130);
        assert!(set.is_empty());
        for shard in [0, 63, 64, 129, 130, 500] {
            set.insert(shard);
        }
        assert_eq!(set.iter().collect::<Vec<_>>(), vec![0, 63, 64, 129]);
        assert_eq!(set.len(), 4);
        set.remove(63);
        assert!(!set.contains(63) && set.contains(64));
        assert_eq!(ShardSet::all(130).len(), 130);
    }
}

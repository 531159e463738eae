//! A pool of fixed-size KV blocks: a free list, a reference count per block, and the blocks the
//! prefix cache keeps. Sharing a block between sequences (after a fork or a prefix hit) is just a
//! second reference. A block that holds a full, hashed run of tokens is not freed when its last
//! reference goes: it becomes *idle* and stays reusable until a fresh block is needed and no free
//! one is left, when the least recently released idle block is evicted. It knows nothing about
//! tokens or layers (see `kv::KvCache` and `kv::prefix`).

use std::collections::BTreeSet;

/// Index of a block inside its pool.
pub type BlockId = u32;

pub struct BlockPool {
    refs: Vec<u32>,
    free: Vec<BlockId>,
    /// The prefix-cache hash of a full block, when it is registered.
    hash: Vec<Option<u64>>,
    /// Registered blocks nobody references, as (release stamp, id): oldest first.
    idle: BTreeSet<(u64, BlockId)>,
    stamp: Vec<u64>,
    clock: u64,
}

impl BlockPool {
    pub fn new(blocks: usize) -> Self {
        // Reverse so that blocks are handed out in ascending order (easier to read in tests).
        Self {
            refs: vec![0; blocks],
            free: (0..blocks as BlockId).rev().collect(),
            hash: vec![None; blocks],
            idle: BTreeSet::new(),
            stamp: vec![0; blocks],
            clock: 0,
        }
    }

    pub fn capacity(&self) -> usize {
        self.refs.len()
    }

    /// Blocks a new allocation can take: free ones plus idle cached ones.
    pub fn available(&self) -> usize {
        self.free.len() + self.idle.len()
    }

    /// Blocks with at least one reference.
    pub fn used_count(&self) -> usize {
        self.capacity() - self.available()
    }

    /// Cached blocks that nobody references (evictable).
    pub fn idle_count(&self) -> usize {
        self.idle.len()
    }

    /// A fresh block with one reference, or `None` when the pool is exhausted. When no free
    /// block is left the least recently used idle block is evicted; its hash is returned so that
    /// the caller can forget it.
    pub fn alloc(&mut self) -> Option<(BlockId, Option<u64>)> {
        let (id, evicted) = match self.free.pop() {
            Some(id) => (id, None),
            None => {
                let (_, id) = self.idle.pop_first()?;
                (id, self.hash[id as usize].take())
            }
        };
        self.refs[id as usize] = 1;
        Some((id, evicted))
    }

    /// One more reference; an idle cached block becomes used again.
    pub fn retain(&mut self, id: BlockId) {
        let i = id as usize;
        if self.refs[i] == 0 {
            let was_idle = self.idle.remove(&(self.stamp[i], id));
            debug_assert!(was_idle, "retain of a free block");
        }
        self.refs[i] += 1;
    }

    /// Drops one reference; with none left the block goes idle (when hashed) or free.
    pub fn release(&mut self, id: BlockId) {
        let i = id as usize;
        debug_assert!(self.refs[i] > 0, "release of a free block");
        self.refs[i] -= 1;
        if self.refs[i] == 0 {
            if self.hash[i].is_some() {
                self.clock += 1;
                self.stamp[i] = self.clock;
                self.idle.insert((self.clock, id));
            } else {
                self.free.push(id);
            }
        }
    }

    pub fn ref_count(&self, id: BlockId) -> u32 {
        self.refs[id as usize]
    }

    pub fn hash(&self, id: BlockId) -> Option<u64> {
        self.hash[id as usize]
    }

    /// Registers a used block's content hash.
    pub fn set_hash(&mut self, id: BlockId, h: u64) {
        debug_assert!(self.refs[id as usize] > 0, "hashing a free block");
        self.hash[id as usize] = Some(h);
    }

    /// Unregisters a used block (its content is about to change); returns the hash it had.
    pub fn clear_hash(&mut self, id: BlockId) -> Option<u64> {
        debug_assert!(self.refs[id as usize] > 0, "unhashing a free block");
        self.hash[id as usize].take()
    }

    /// Frees every idle block; returns their hashes.
    pub fn evict_idle(&mut self) -> Vec<u64> {
        let idle = std::mem::take(&mut self.idle);
        idle.into_iter()
            .filter_map(|(_, id)| {
                self.free.push(id);
                self.hash[id as usize].take()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alloc_retain_release() {
        let mut p = BlockPool::new(2);
        let (a, _) = p.alloc().unwrap();
        let (b, _) = p.alloc().unwrap();
        assert_eq!((a, b), (0, 1));
        assert!(p.alloc().is_none());
        p.retain(a);
        p.release(a);
        assert_eq!(p.available(), 0);
        p.release(a);
        assert_eq!(p.available(), 1);
        assert_eq!(p.alloc(), Some((a, None)));
    }

    #[test]
    fn hashed_blocks_idle_until_evicted_least_recent_first() {
        let mut p = BlockPool::new(3);
        let ids: Vec<BlockId> = (0..3).map(|_| p.alloc().unwrap().0).collect();
        p.set_hash(ids[0], 10);
        p.set_hash(ids[1], 11);
        p.release(ids[1]);
        p.release(ids[0]);
        assert_eq!((p.idle_count(), p.used_count(), p.available()), (2, 1, 2));
        // A hit revives an idle block without evicting it.
        p.retain(ids[1]);
        assert_eq!((p.idle_count(), p.used_count()), (1, 2));
        p.release(ids[1]);
        // Block 0 was released before block 1's second release: it goes first.
        assert_eq!(p.alloc(), Some((ids[0], Some(10))));
        assert_eq!(p.alloc(), Some((ids[1], Some(11))));
        assert!(p.alloc().is_none());
        assert_eq!(p.hash(ids[0]), None);
    }
}

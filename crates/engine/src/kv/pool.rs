//! A pool of fixed-size KV blocks: a free list and a reference count per block. Sharing a block
//! between sequences (after a fork) is just a second reference. It knows nothing about tokens
//! or layers (see `kv::KvCache`).

/// Index of a block inside its pool.
pub type BlockId = u32;

pub struct BlockPool {
    refs: Vec<u32>,
    free: Vec<BlockId>,
}

impl BlockPool {
    pub fn new(blocks: usize) -> Self {
        // Reverse so that blocks are handed out in ascending order (easier to read in tests).
        Self {
            refs: vec![0; blocks],
            free: (0..blocks as BlockId).rev().collect(),
        }
    }

    pub fn capacity(&self) -> usize {
        self.refs.len()
    }

    pub fn free_count(&self) -> usize {
        self.free.len()
    }

    pub fn used_count(&self) -> usize {
        self.capacity() - self.free_count()
    }

    /// A fresh block with one reference, or `None` when the pool is exhausted.
    pub fn alloc(&mut self) -> Option<BlockId> {
        let id = self.free.pop()?;
        self.refs[id as usize] = 1;
        Some(id)
    }

    pub fn retain(&mut self, id: BlockId) {
        debug_assert!(self.refs[id as usize] > 0, "retain of a free block");
        self.refs[id as usize] += 1;
    }

    /// Drops one reference; the block returns to the free list when none are left.
    pub fn release(&mut self, id: BlockId) {
        let r = &mut self.refs[id as usize];
        debug_assert!(*r > 0, "release of a free block");
        *r -= 1;
        if *r == 0 {
            self.free.push(id);
        }
    }

    pub fn ref_count(&self, id: BlockId) -> u32 {
        self.refs[id as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alloc_retain_release() {
        let mut p = BlockPool::new(2);
        let a = p.alloc().unwrap();
        let b = p.alloc().unwrap();
        assert_eq!((a, b), (0, 1));
        assert!(p.alloc().is_none());
        p.retain(a);
        p.release(a);
        assert_eq!(p.free_count(), 0);
        p.release(a);
        assert_eq!(p.free_count(), 1);
        assert_eq!(p.alloc(), Some(a));
    }
}

//! Reservation: how many fresh blocks a sequence needs for its next tokens, and taking them
//! (all or nothing), copying a shared or cached block before anything is written into it.

use super::{KvCache, KvFull, SeqId};

impl KvCache {
    /// Blocks that `reserve(id, n)` would take from the neediest group's pool.
    pub fn blocks_for(&self, id: SeqId, n: usize) -> usize {
        self.blocks_needed(id, n).into_iter().max().unwrap_or(0)
    }

    /// Blocks an allocation can take in every group (free or idle cached).
    pub fn available_blocks(&self) -> usize {
        self.groups
            .iter()
            .map(|g| g.pool.available())
            .min()
            .unwrap_or(0)
    }

    /// Blocks that `reserve(id, n)` would take from each group's pool.
    fn blocks_needed(&self, id: SeqId, n: usize) -> Vec<usize> {
        let seq = self.seq(id);
        let bs = self.block_size;
        let have = seq.tables[0].len();
        let need_total = (seq.len() + n).div_ceil(bs);
        let fresh = need_total.saturating_sub(have);
        self.groups
            .iter()
            .enumerate()
            .map(|(g, grp)| {
                let t = &seq.tables[g];
                // Writing into a shared partial block copies it.
                let cow = n > 0 && !seq.len().is_multiple_of(bs) && grp.shared(t[seq.len() / bs]);
                fresh + usize::from(cow)
            })
            .collect()
    }

    /// Makes room for `n` more tokens of `id`: allocates blocks and un-shares the block the first
    /// new token lands in. All or nothing: on `KvFull` nothing changed.
    pub fn reserve(&mut self, id: SeqId, n: usize) -> Result<(), KvFull> {
        let need = self.blocks_needed(id, n);
        if need
            .iter()
            .zip(&self.groups)
            .any(|(&k, g)| k > g.pool.available())
        {
            return Err(KvFull);
        }
        let bs = self.block_size;
        let mut seq = self.seqs[id].take().expect("unknown sequence id");
        let len = seq.len();
        let index = &mut self.prefix;
        for (g, grp) in self.groups.iter_mut().enumerate() {
            let t = &mut seq.tables[g];
            if n > 0 && !len.is_multiple_of(bs) {
                let at = len / bs;
                if grp.shared(t[at]) {
                    let fresh = grp.alloc(index, g);
                    grp.copy_block(t[at], fresh, bs * self.row);
                    grp.pool.release(t[at]);
                    t[at] = fresh;
                }
            }
            while t.len() < (len + n).div_ceil(bs) {
                t.push(grp.alloc(index, g));
            }
        }
        self.seqs[id] = Some(seq);
        Ok(())
    }
}

//! Streaming past the window (StreamingLLM): a sequence forgets a run of whole blocks after its
//! first ones (the attention sinks) and every position after the run moves down by its length.
//! Keys are cached after RoPE, so the kept keys must be turned back by as many positions:
//! `drop_middle` does the table surgery and makes every block that will be turned private to the
//! sequence; `map_keys` then lets the model rotate them (the cache knows nothing of RoPE).

use super::{KvCache, KvFull, SeqId, DROPPED};

impl KvCache {
    /// Forgets positions `keep..keep + drop` of `id` (both whole blocks): the blocks are released,
    /// the positions after them move down by `drop`. The kept blocks after the gap will be
    /// rewritten (their keys rotated), so a block another sequence shares is copied first and a
    /// block of the prefix cache leaves it; the sequence feeds the prefix cache no more (its keys
    /// are no longer what its tokens alone would give). `KvFull` (nothing changed) when the copies
    /// do not fit.
    pub fn drop_middle(&mut self, id: SeqId, keep: usize, drop: usize) -> Result<(), KvFull> {
        let bs = self.block_size;
        let seq = self.seq(id);
        assert!(
            keep.is_multiple_of(bs) && drop.is_multiple_of(bs) && keep + drop <= seq.len(),
            "drop_middle of {drop} after {keep} in a sequence of {}",
            seq.len()
        );
        let (kb, db) = (keep / bs, drop / bs);
        for (g, grp) in self.groups.iter().enumerate() {
            let copies = seq.tables[g][kb + db..]
                .iter()
                .filter(|&&b| b != DROPPED && grp.pool.ref_count(b) > 1)
                .count();
            if copies > grp.pool.available() {
                return Err(KvFull);
            }
        }
        let mut seq = self.seqs[id].take().expect("unknown sequence id");
        let index = &mut self.prefix;
        let per_layer = bs * self.row;
        for (g, grp) in self.groups.iter_mut().enumerate() {
            let t = &mut seq.tables[g];
            for b in t.drain(kb..kb + db) {
                if b != DROPPED {
                    grp.pool.release(b);
                }
            }
            for b in t[kb..].iter_mut().filter(|b| **b != DROPPED) {
                if grp.pool.ref_count(*b) > 1 {
                    let fresh = grp.alloc(index, g);
                    grp.copy_block(*b, fresh, per_layer);
                    grp.pool.release(*b);
                    *b = fresh;
                } else if let Some(h) = grp.pool.clear_hash(*b) {
                    index.forget(h, g);
                }
            }
        }
        seq.tokens.drain(keep..keep + drop);
        seq.hashes.truncate(kb);
        seq.cacheable = false;
        self.seqs[id] = Some(seq);
        Ok(())
    }

    /// Passes every cached key row (all KV heads) of `layer` of `id` at positions `from..` through
    /// `f`, in f32 whatever the stored type; positions behind the layer's window are skipped.
    pub fn map_keys(&mut self, layer: usize, id: SeqId, from: usize, f: &dyn Fn(&mut [f32])) {
        let (g, li) = self.layer_slot[layer];
        let (bs, row) = (self.block_size, self.row);
        let seq = self.seqs[id].as_ref().expect("unknown sequence id");
        let grp = &mut self.groups[g];
        let mut pos = from;
        while pos < seq.len() {
            let count = (bs - pos % bs).min(seq.len() - pos);
            let block = seq.tables[g][pos / bs];
            if block != DROPPED {
                let at = ((block as usize * grp.layers + li) * bs + pos % bs) * row;
                grp.k.update(at, count * row, &|run| {
                    run.chunks_exact_mut(row).for_each(f)
                });
            }
            pos += count;
        }
    }
}

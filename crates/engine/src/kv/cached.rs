//! Prefix caching over the block tables: a sequence starts on the longest cached prefix of its
//! prompt (`new_seq_cached`), and `commit` records written rows, offers the blocks they filled
//! to the prefix index and releases blocks that fell behind every sliding window.

use super::prefix::{block_hash, PrefixStats, ROOT};
use super::{BlockId, KvCache, Seq, SeqId, DROPPED};

impl KvCache {
    /// A sequence for `prompt` that starts on the longest cached prefix of it, always leaving at
    /// least the last prompt token to compute (its logits are wanted). Returns the sequence and
    /// how many prompt tokens are already in its cache.
    pub fn new_seq_cached(&mut self, prompt: &[u32]) -> (SeqId, usize) {
        let bs = self.block_size;
        let (hit, blocks, hashes) = self.lookup(prompt);
        let mut tables = vec![Vec::new(); self.groups.len()];
        for (g, grp) in self.groups.iter_mut().enumerate() {
            let first = grp.window.map_or(0, |w| (hit + 1).saturating_sub(w) / bs);
            for (b, entry) in blocks.iter().enumerate() {
                let id = if b < first {
                    DROPPED
                } else {
                    entry[g].expect("checked by lookup")
                };
                if id != DROPPED {
                    grp.pool.retain(id);
                }
                tables[g].push(id);
            }
        }
        self.prefix.stats.queried_tokens += prompt.len() as u64;
        self.prefix.stats.hit_tokens += hit as u64;
        let id = self.insert_seq(Seq {
            tables,
            tokens: prompt[..hit].to_vec(),
            hashes: hashes[..hit / bs].to_vec(),
            cacheable: true,
            slack: 0,
        });
        (id, hit)
    }

    /// The longest usable cached prefix of `prompt`: (tokens, per-block group entries, hashes).
    fn lookup(&self, prompt: &[u32]) -> (usize, Vec<Vec<Option<BlockId>>>, Vec<u64>) {
        let bs = self.block_size;
        if prompt.len() <= 1 {
            return (0, Vec::new(), Vec::new());
        }
        let (mut chain, mut hashes, mut parent) = (Vec::new(), Vec::new(), ROOT);
        // Global groups need every block of the prefix.
        for toks in prompt.chunks_exact(bs) {
            let h = block_hash(parent, toks);
            let Some(e) = self.prefix.get(h, parent, toks) else {
                break;
            };
            let global_ok = self
                .groups
                .iter()
                .zip(e)
                .all(|(g, b)| g.window.is_some() || b.is_some());
            if !global_ok {
                break;
            }
            chain.push(e.to_vec());
            hashes.push(h);
            parent = h;
        }
        // Sliding groups need the blocks inside the window of the first computed token.
        let usable = |m: usize| {
            let hit = (m * bs).min(prompt.len() - 1);
            self.groups.iter().enumerate().all(|(g, grp)| {
                let first = grp.window.map_or(0, |w| (hit + 1).saturating_sub(w) / bs);
                chain[first.min(m)..m].iter().all(|e| e[g].is_some())
            })
        };
        let m = (1..=chain.len()).rev().find(|&m| usable(m)).unwrap_or(0);
        chain.truncate(m);
        let hit = (m * bs).min(prompt.len().saturating_sub(1));
        (hit, chain, hashes)
    }

    /// Statistics of prefix-cache lookups since the cache was made.
    pub fn prefix_stats(&self) -> PrefixStats {
        self.prefix.stats
    }

    /// Frees every idle cached block (the cache forgets them).
    pub fn clear_prefix_cache(&mut self) {
        for (g, grp) in self.groups.iter_mut().enumerate() {
            for h in grp.pool.evict_idle() {
                self.prefix.forget(h, g);
            }
        }
    }

    /// Records that `tokens` were written at the end of `id` (into reserved blocks), offers the
    /// blocks they filled to the prefix cache, and drops blocks that fell out of every sliding
    /// window.
    pub fn commit(&mut self, id: SeqId, tokens: &[u32]) {
        let bs = self.block_size;
        let seq = self.seqs[id].as_mut().expect("unknown sequence id");
        seq.tokens.extend_from_slice(tokens);
        let len = seq.len();
        while seq.hashes.len() < len / bs {
            let b = seq.hashes.len();
            let parent = seq.hashes.last().copied().unwrap_or(ROOT);
            let toks = &seq.tokens[b * bs..(b + 1) * bs];
            let h = block_hash(parent, toks);
            seq.hashes.push(h);
            if !seq.cacheable {
                continue;
            }
            let n_groups = self.groups.len();
            for (g, grp) in self.groups.iter_mut().enumerate() {
                let block = seq.tables[g][b];
                if block != DROPPED
                    && grp.pool.hash(block).is_none()
                    && self.prefix.insert(h, parent, toks, n_groups, g, block)
                {
                    grp.pool.set_hash(block, h);
                }
            }
        }
        for (g, grp) in self.groups.iter_mut().enumerate() {
            let Some(win) = grp.window else { continue };
            // The next query (position len) sees keys from len + 1 - win on; `slack` more are
            // kept for a query after a truncation.
            let first_needed = (len + 1).saturating_sub(win + seq.slack);
            for b in 0..first_needed / bs {
                let t = &mut seq.tables[g];
                if t[b] != DROPPED {
                    grp.pool.release(t[b]);
                    t[b] = DROPPED;
                }
            }
        }
    }
}

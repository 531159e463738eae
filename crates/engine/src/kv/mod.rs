//! The paged KV cache. Layers are split into groups by attention window (Gemma 3: 15 sliding
//! layers, 3 global): each group has its own block pool and a block table per sequence, so
//! sliding-window layers can drop blocks that fell out of the window while global layers keep
//! theirs. `fork` shares every block (ref counts) and a write into a shared block copies just
//! that block first (copy-on-write). Running out of blocks is `KvFull`, a normal outcome.
//! Keys and values are stored as f16 (half the memory traffic of attention, as llama.cpp and
//! vLLM do) or, on request, as f32: exactly what the model computed.
//!
//! Prefix caching: every block a sequence fills is registered under the hash of its token prefix
//! (`prefix`); when its last reference goes it stays idle in its pool instead of being freed, and
//! `new_seq_cached` starts a sequence on the longest cached prefix of its prompt. A cached block
//! is never written in place: a sequence that continues inside one copies it first, like a fork.

mod config;
pub mod pool;
pub mod prefix;
mod store;
#[cfg(test)]
mod tests;
mod view;

pub use config::{KvConfig, KvType};
use pool::{BlockId, BlockPool};
pub use prefix::PrefixStats;
use prefix::{block_hash, PrefixIndex, ROOT};
use store::Store;
pub use view::SeqView;

/// Handle of a sequence in the cache.
pub type SeqId = usize;

/// Not enough free blocks for the requested tokens; nothing was changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvFull;

/// A table entry for a block that fell behind a sliding window (released, never read).
const DROPPED: BlockId = BlockId::MAX;

struct Group {
    window: Option<usize>,
    layers: usize,
    pool: BlockPool,
    k: Store,
    v: Store,
}

#[derive(Clone)]
struct Seq {
    /// Per group: block ids in position order; `DROPPED` for blocks behind the window.
    tables: Vec<Vec<BlockId>>,
    /// The tokens written so far (the sequence's length) and the hash of each full block.
    tokens: Vec<u32>,
    hashes: Vec<u64>,
    /// Whether its full blocks are offered to the prefix cache.
    cacheable: bool,
    /// Tokens that `truncate` may take back: sliding windows keep this many more positions.
    slack: usize,
}

pub struct KvCache {
    block_size: usize,
    row: usize,
    groups: Vec<Group>,
    /// Per model layer: (group, index inside the group).
    layer_slot: Vec<(usize, usize)>,
    seqs: Vec<Option<Seq>>,
    prefix: PrefixIndex,
}

impl Seq {
    fn len(&self) -> usize {
        self.tokens.len()
    }
}

impl KvCache {
    /// Allocates the cache; `cfg.bytes()` tells beforehand how much (callers taking sizes from
    /// users check it: an absurd size must be an error, not an allocation failure).
    pub fn new(cfg: &KvConfig) -> Self {
        let mut windows: Vec<Option<usize>> = Vec::new();
        let mut layer_slot = Vec::new();
        let mut counts: Vec<usize> = Vec::new();
        for w in &cfg.layer_windows {
            let g = windows.iter().position(|x| x == w).unwrap_or_else(|| {
                windows.push(*w);
                counts.push(0);
                windows.len() - 1
            });
            layer_slot.push((g, counts[g]));
            counts[g] += 1;
        }
        let bs = cfg.block_size;
        let groups = windows
            .iter()
            .zip(&counts)
            .map(|(w, &layers)| {
                let blocks = cfg
                    .blocks_per_group()
                    .expect("a cache size that `bytes` accepts");
                let floats = blocks * layers * bs * cfg.row;
                Group {
                    window: *w,
                    layers,
                    pool: BlockPool::new(blocks),
                    k: Store::new(cfg.dtype, floats),
                    v: Store::new(cfg.dtype, floats),
                }
            })
            .collect();
        Self {
            block_size: bs,
            row: cfg.row,
            groups,
            layer_slot,
            seqs: Vec::new(),
            prefix: PrefixIndex::default(),
        }
    }

    pub fn block_size(&self) -> usize {
        self.block_size
    }

    /// An empty sequence whose full blocks will be offered to the prefix cache.
    pub fn new_seq(&mut self) -> SeqId {
        self.insert_seq(Seq {
            tables: vec![Vec::new(); self.groups.len()],
            tokens: Vec::new(),
            hashes: Vec::new(),
            cacheable: true,
            slack: 0,
        })
    }

    /// An empty sequence that neither reads nor feeds the prefix cache (its KV is private).
    pub fn new_private_seq(&mut self) -> SeqId {
        let id = self.new_seq();
        self.seqs[id].as_mut().expect("just made").cacheable = false;
        id
    }

    fn insert_seq(&mut self, seq: Seq) -> SeqId {
        match self.seqs.iter().position(Option::is_none) {
            Some(i) => {
                self.seqs[i] = Some(seq);
                i
            }
            None => {
                self.seqs.push(Some(seq));
                self.seqs.len() - 1
            }
        }
    }

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

    fn seq(&self, id: SeqId) -> &Seq {
        self.seqs
            .get(id)
            .and_then(Option::as_ref)
            .expect("unknown sequence id")
    }

    pub fn len(&self, id: SeqId) -> usize {
        self.seq(id).len()
    }

    /// Positions of `id` that have blocks (written or reserved).
    pub fn reserved(&self, id: SeqId) -> usize {
        self.seq(id).tables[0].len() * self.block_size
    }

    /// A new sequence sharing every block of `id` (no KV bytes are copied).
    pub fn fork(&mut self, id: SeqId) -> SeqId {
        let copy = self.seq(id).clone();
        for (g, t) in copy.tables.iter().enumerate() {
            for &b in t.iter().filter(|&&b| b != DROPPED) {
                self.groups[g].pool.retain(b);
            }
        }
        self.insert_seq(copy)
    }

    /// Lets `truncate` take back up to `tokens` tokens of `id` (sliding windows keep that many
    /// more positions).
    pub fn set_slack(&mut self, id: SeqId, tokens: usize) {
        self.seqs[id].as_mut().expect("unknown sequence id").slack = tokens;
    }

    /// Forgets every token of `id` from `len` on and releases the blocks past it: speculative
    /// tokens that were written but not kept. At most the sequence's slack may be taken back
    /// (its windows still hold what a query at `len` sees). A full block that `len` cuts keeps
    /// its prefix-cache entry (its keys are right for the tokens it held); the sequence copies
    /// it before writing there again, like any cached block.
    pub fn truncate(&mut self, id: SeqId, len: usize) {
        let bs = self.block_size;
        let seq = self.seqs[id].as_mut().expect("unknown sequence id");
        if len >= seq.len() {
            return;
        }
        debug_assert!(seq.len() - len <= seq.slack, "truncating past the slack");
        seq.tokens.truncate(len);
        seq.hashes.truncate(len / bs);
        for (g, grp) in self.groups.iter_mut().enumerate() {
            let t = &mut seq.tables[g];
            for b in t.drain(len.div_ceil(bs).min(t.len())..) {
                if b != DROPPED {
                    grp.pool.release(b);
                }
            }
        }
    }

    /// Releases every block of the sequence.
    pub fn free(&mut self, id: SeqId) {
        if let Some(seq) = self.seqs.get_mut(id).and_then(Option::take) {
            for (g, t) in seq.tables.iter().enumerate() {
                for &b in t.iter().filter(|&&b| b != DROPPED) {
                    self.groups[g].pool.release(b);
                }
            }
        }
    }

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

    /// Blocks referenced by some sequence, over all groups (idle cached blocks excluded).
    pub fn used_blocks(&self) -> usize {
        self.groups.iter().map(|g| g.pool.used_count()).sum()
    }

    /// Idle cached blocks over all groups (evicted when fresh blocks run out).
    pub fn idle_blocks(&self) -> usize {
        self.groups.iter().map(|g| g.pool.idle_count()).sum()
    }

    /// Blocks over all groups.
    pub fn capacity_blocks(&self) -> usize {
        self.groups.iter().map(|g| g.pool.capacity()).sum()
    }

    /// Tokens one sequence could hold if it had the cache to itself (the smallest group's pool).
    pub fn capacity_tokens(&self) -> usize {
        let blocks = self.groups.iter().map(|g| g.pool.capacity()).min();
        blocks.unwrap_or(0) * self.block_size
    }

    /// Distinct blocks and block references held by the sequences `ids`.
    pub fn blocks_of(&self, ids: &[SeqId]) -> (usize, usize) {
        let mut all: Vec<(usize, BlockId)> =
            ids.iter()
                .flat_map(|&id| {
                    let seq = self.seq(id);
                    seq.tables.iter().enumerate().flat_map(|(g, t)| {
                        t.iter().filter(|&&b| b != DROPPED).map(move |&b| (g, b))
                    })
                })
                .collect();
        let refs = all.len();
        all.sort_unstable();
        all.dedup();
        (all.len(), refs)
    }

    /// Stores the key and value rows of position `pos` of `id` for `layer` (a reserved block).
    pub fn write(&mut self, layer: usize, id: SeqId, pos: usize, key: &[f32], value: &[f32]) {
        let (g, li) = self.layer_slot[layer];
        let (bs, row) = (self.block_size, self.row);
        assert!(key.len() == row && value.len() == row, "KV row size");
        let block = self.seqs[id].as_ref().expect("unknown sequence id").tables[g][pos / bs];
        debug_assert!(block != DROPPED, "write into a dropped block");
        let grp = &mut self.groups[g];
        let at = ((block as usize * grp.layers + li) * bs + pos % bs) * row;
        grp.k.write(at, key);
        grp.v.write(at, value);
    }

    /// A read view of `layer` for sequence `id`.
    pub fn view(&self, layer: usize, id: SeqId) -> SeqView<'_> {
        let (g, li) = self.layer_slot[layer];
        let grp = &self.groups[g];
        SeqView {
            table: &self.seq(id).tables[g],
            k: &grp.k,
            v: &grp.v,
            layer: li,
            layers: grp.layers,
            bs: self.block_size,
            row: self.row,
            window: grp.window,
        }
    }
}

impl Group {
    /// A block that must be copied before it is written: referenced twice, or in the prefix cache.
    fn shared(&self, b: BlockId) -> bool {
        self.pool.ref_count(b) > 1 || self.pool.hash(b).is_some()
    }

    /// A fresh block; `reserve` counted that one is available. An evicted block leaves the index.
    fn alloc(&mut self, index: &mut PrefixIndex, g: usize) -> BlockId {
        let (id, evicted) = self.pool.alloc().expect("counted by reserve");
        if let Some(h) = evicted {
            index.forget(h, g);
        }
        id
    }

    fn copy_block(&mut self, from: BlockId, to: BlockId, per_layer: usize) {
        let n = self.layers * per_layer;
        let (f, t) = (from as usize * n, to as usize * n);
        self.k.copy_within(f..f + n, t);
        self.v.copy_within(f..f + n, t);
    }
}

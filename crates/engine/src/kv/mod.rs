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
//!
//! Files: this one holds the sequences' lifecycle (new, fork, truncate, free, write, view);
//! `alloc` reservation, `cached` prefix lookup and commit, `pool` the ref-counted blocks,
//! `prefix` the hash index, `shift` forgetting the middle of a sequence (streaming past the
//! window), `store` the K/V memory, `view` what attention reads, `config` sizes.

mod alloc;
mod cached;
mod config;
pub mod pool;
pub mod prefix;
mod shift;
mod store;
#[cfg(test)]
mod tests;
mod view;

pub use config::{KvConfig, KvType};
use pool::{BlockId, BlockPool};
use prefix::PrefixIndex;
pub use prefix::PrefixStats;
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

    fn seq(&self, id: SeqId) -> &Seq {
        self.seqs
            .get(id)
            .and_then(Option::as_ref)
            .expect("unknown sequence id")
    }

    pub fn len(&self, id: SeqId) -> usize {
        self.seq(id).len()
    }

    /// The widest sliding window of the model's layers (0 when none has one).
    pub fn widest_window(&self) -> usize {
        self.groups
            .iter()
            .filter_map(|g| g.window)
            .max()
            .unwrap_or(0)
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

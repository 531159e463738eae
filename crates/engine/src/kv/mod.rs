//! The paged KV cache. Layers are split into groups by attention window (Gemma 3: 15 sliding
//! layers, 3 global): each group has its own block pool and a block table per sequence, so
//! sliding-window layers can drop blocks that fell out of the window while global layers keep
//! theirs. `fork` shares every block (ref counts) and a write into a shared block copies just
//! that block first (copy-on-write). Running out of blocks is `KvFull`, a normal outcome.
//! Keys and values are stored as f16 (half the memory traffic of attention, as llama.cpp and
//! vLLM do) or, on request, as f32: exactly what the model computed.

pub mod pool;

use crate::kernels::heads::KvRows;
use half::f16;
use pool::{BlockId, BlockPool};

/// Handle of a sequence in the cache.
pub type SeqId = usize;

/// Not enough free blocks for the requested tokens; nothing was changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvFull;

const DROPPED: BlockId = BlockId::MAX;

/// How cached keys and values are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KvType {
    #[default]
    F16,
    F32,
}

impl KvType {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "f16" => Some(Self::F16),
            "f32" => Some(Self::F32),
            _ => None,
        }
    }
}

/// One group's keys or values, `[blocks][layers][block_size][row]`.
enum Store {
    F32(Vec<f32>),
    F16(Vec<u16>),
}

impl Store {
    fn new(ty: KvType, len: usize) -> Self {
        match ty {
            KvType::F32 => Self::F32(vec![0.0; len]),
            KvType::F16 => Self::F16(vec![0; len]),
        }
    }
    fn write(&mut self, at: usize, x: &[f32]) {
        match self {
            Self::F32(s) => s[at..at + x.len()].copy_from_slice(x),
            Self::F16(s) => {
                for (h, &v) in s[at..at + x.len()].iter_mut().zip(x) {
                    *h = f16::from_f32(v).to_bits();
                }
            }
        }
    }
    fn rows(&self, range: std::ops::Range<usize>) -> KvRows<'_> {
        match self {
            Self::F32(s) => KvRows::F32(&s[range]),
            Self::F16(s) => KvRows::F16(&s[range]),
        }
    }
    fn copy_within(&mut self, from: std::ops::Range<usize>, to: usize) {
        match self {
            Self::F32(s) => s.copy_within(from, to),
            Self::F16(s) => s.copy_within(from, to),
        }
    }
}

struct Group {
    window: Option<usize>,
    layers: usize,
    pool: BlockPool,
    k: Store,
    v: Store,
}

struct Seq {
    len: usize,
    /// Per group: block ids in position order; `DROPPED` for blocks behind the window.
    tables: Vec<Vec<BlockId>>,
}

/// How to build a cache: per layer its window (`None` = global), and sizes.
pub struct KvConfig {
    pub layer_windows: Vec<Option<usize>>,
    pub row: usize,
    pub block_size: usize,
    /// Tokens of capacity for global layers (sliding groups get what their windows need).
    pub capacity_tokens: usize,
    pub max_seqs: usize,
    pub dtype: KvType,
}

pub struct KvCache {
    block_size: usize,
    row: usize,
    groups: Vec<Group>,
    /// Per model layer: (group, index inside the group).
    layer_slot: Vec<(usize, usize)>,
    seqs: Vec<Option<Seq>>,
}

impl KvCache {
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
                // A whole prompt is written before the window drops anything, so sliding groups
                // get the same capacity; dropping frees their blocks for other sequences.
                let blocks = cfg.capacity_tokens.div_ceil(bs) + cfg.max_seqs;
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
        }
    }

    pub fn block_size(&self) -> usize {
        self.block_size
    }

    pub fn new_seq(&mut self) -> SeqId {
        let seq = Seq {
            len: 0,
            tables: vec![Vec::new(); self.groups.len()],
        };
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
        self.seq(id).len
    }

    /// Positions of `id` that have blocks (written or reserved).
    pub fn reserved(&self, id: SeqId) -> usize {
        self.seq(id).tables[0].len() * self.block_size
    }

    /// A new sequence sharing every block of `id` (no KV bytes are copied).
    pub fn fork(&mut self, id: SeqId) -> SeqId {
        let src = self.seq(id);
        let (len, tables) = (src.len, src.tables.clone());
        for (g, t) in tables.iter().enumerate() {
            for &b in t.iter().filter(|&&b| b != DROPPED) {
                self.groups[g].pool.retain(b);
            }
        }
        let new = self.new_seq();
        self.seqs[new] = Some(Seq { len, tables });
        new
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

    /// Blocks that `reserve(id, n)` would take from each group's pool.
    fn blocks_needed(&self, id: SeqId, n: usize) -> Vec<usize> {
        let seq = self.seq(id);
        let bs = self.block_size;
        let have = seq.tables[0].len();
        let need_total = (seq.len + n).div_ceil(bs);
        let fresh = need_total.saturating_sub(have);
        self.groups
            .iter()
            .enumerate()
            .map(|(g, grp)| {
                let t = &seq.tables[g];
                // Writing into a shared partial block copies it.
                let cow =
                    n > 0 && !seq.len.is_multiple_of(bs) && grp.pool.ref_count(t[seq.len / bs]) > 1;
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
            .any(|(&k, g)| k > g.pool.free_count())
        {
            return Err(KvFull);
        }
        let bs = self.block_size;
        let mut seq = self.seqs[id].take().expect("unknown sequence id");
        for (g, grp) in self.groups.iter_mut().enumerate() {
            let t = &mut seq.tables[g];
            if n > 0 && !seq.len.is_multiple_of(bs) {
                let at = seq.len / bs;
                if grp.pool.ref_count(t[at]) > 1 {
                    let fresh = grp.pool.alloc().expect("counted above");
                    grp.copy_block(t[at], fresh, bs * self.row);
                    grp.pool.release(t[at]);
                    t[at] = fresh;
                }
            }
            while t.len() < (seq.len + n).div_ceil(bs) {
                t.push(grp.pool.alloc().expect("counted above"));
            }
        }
        self.seqs[id] = Some(seq);
        Ok(())
    }

    /// Records that `n` reserved tokens were written, and drops blocks that fell out of every
    /// sliding window.
    pub fn commit(&mut self, id: SeqId, n: usize) {
        let bs = self.block_size;
        let seq = self.seqs[id].as_mut().expect("unknown sequence id");
        seq.len += n;
        let len = seq.len;
        for (g, grp) in self.groups.iter_mut().enumerate() {
            let Some(win) = grp.window else { continue };
            // The next query (position len) sees keys from len + 1 - win on.
            let first_needed = (len + 1).saturating_sub(win);
            for b in 0..first_needed / bs {
                let t = &mut seq.tables[g];
                if t[b] != DROPPED {
                    grp.pool.release(t[b]);
                    t[b] = DROPPED;
                }
            }
        }
    }

    /// Blocks in use over all groups.
    pub fn used_blocks(&self) -> usize {
        self.groups.iter().map(|g| g.pool.used_count()).sum()
    }

    /// Blocks the live sequences would hold if nothing were shared.
    pub fn unshared_blocks(&self) -> usize {
        self.seqs
            .iter()
            .flatten()
            .map(|s| s.tables.iter().flatten().filter(|&&b| b != DROPPED).count())
            .sum()
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
    fn copy_block(&mut self, from: BlockId, to: BlockId, per_layer: usize) {
        let n = self.layers * per_layer;
        let (f, t) = (from as usize * n, to as usize * n);
        self.k.copy_within(f..f + n, t);
        self.v.copy_within(f..f + n, t);
    }
}

/// Read access to one layer of one sequence's cache.
pub struct SeqView<'a> {
    table: &'a [BlockId],
    k: &'a Store,
    v: &'a Store,
    layer: usize,
    layers: usize,
    bs: usize,
    row: usize,
    pub window: Option<usize>,
}

impl SeqView<'_> {
    fn at(&self, pos: usize) -> usize {
        let block = self.table[pos / self.bs];
        debug_assert!(
            block != DROPPED,
            "read of a dropped block at position {pos}"
        );
        ((block as usize * self.layers + self.layer) * self.bs + pos % self.bs) * self.row
    }
    /// Floats per cached row (all KV heads).
    pub fn row(&self) -> usize {
        self.row
    }
    /// Positions `from..to` as runs that lie contiguously in memory: (first position, count,
    /// keys, values), each slice starting at the run's first row with rows `row()` apart.
    pub fn runs(
        &self,
        from: usize,
        to: usize,
    ) -> impl Iterator<Item = (usize, usize, KvRows<'_>, KvRows<'_>)> + '_ {
        let mut p = from;
        std::iter::from_fn(move || {
            if p >= to {
                return None;
            }
            let count = (self.bs - p % self.bs).min(to - p);
            let (a, len) = (self.at(p), count * self.row);
            let run = (p, count, self.k.rows(a..a + len), self.v.rows(a..a + len));
            p += count;
            Some(run)
        })
    }
    /// First position a query at `pos` may attend to.
    pub fn first_visible(&self, pos: usize) -> usize {
        self.window.map_or(0, |w| (pos + 1).saturating_sub(w))
    }
}

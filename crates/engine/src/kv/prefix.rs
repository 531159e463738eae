//! The prefix cache's index: a full KV block is named by a hash of (its parent block's hash, its
//! tokens), so equal hashes mean equal token prefixes up to and including that block. Each entry
//! keeps its parent hash and tokens, and a hit is verified against them, so a hash collision can
//! never hand one sequence another's KV. Per layer group an entry holds the block id, or `None`
//! where that group's block was evicted (or never kept, behind a sliding window). It only indexes:
//! which blocks may be reused, and when, is `KvCache`'s business.

use super::pool::BlockId;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};

/// The parent hash of a sequence's first block.
pub const ROOT: u64 = 0x9E37_79B9_7F4A_7C15;

/// The name of a full block: its parent's name and its tokens.
pub fn block_hash(parent: u64, tokens: &[u32]) -> u64 {
    // SipHash with fixed keys: the same everywhere, and an attacker who controls prompts cannot
    // choose collisions cheaply (and a collision is only a missed hit, see `get`).
    let mut h = std::hash::DefaultHasher::new();
    parent.hash(&mut h);
    tokens.hash(&mut h);
    h.finish()
}

/// How much of the queried prompts the cache could serve.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PrefixStats {
    /// Prompt tokens looked up.
    pub queried_tokens: u64,
    /// Of those, tokens whose KV came from the cache.
    pub hit_tokens: u64,
}

struct Entry {
    parent: u64,
    tokens: Box<[u32]>,
    /// Per layer group.
    blocks: Vec<Option<BlockId>>,
}

#[derive(Default)]
pub struct PrefixIndex {
    map: HashMap<u64, Entry>,
    pub stats: PrefixStats,
}

impl PrefixIndex {
    /// The per-group blocks of the block named `h`, if it holds exactly `tokens` after `parent`.
    pub fn get(&self, h: u64, parent: u64, tokens: &[u32]) -> Option<&[Option<BlockId>]> {
        self.map
            .get(&h)
            .filter(|e| e.parent == parent && *e.tokens == *tokens)
            .map(|e| e.blocks.as_slice())
    }

    /// Records `block` as group `g`'s copy of the block named `h`. False when the name is taken
    /// by other tokens (a collision) or the group already has a copy: then `block` stays private.
    pub fn insert(
        &mut self,
        h: u64,
        parent: u64,
        tokens: &[u32],
        groups: usize,
        g: usize,
        block: BlockId,
    ) -> bool {
        let e = self.map.entry(h).or_insert_with(|| Entry {
            parent,
            tokens: tokens.into(),
            blocks: vec![None; groups],
        });
        if e.parent != parent || *e.tokens != *tokens || e.blocks[g].is_some() {
            return false;
        }
        e.blocks[g] = Some(block);
        true
    }

    /// Group `g`'s copy of `h` was evicted.
    pub fn forget(&mut self, h: u64, g: usize) {
        if let Some(e) = self.map.get_mut(&h) {
            e.blocks[g] = None;
            if e.blocks.iter().all(Option::is_none) {
                self.map.remove(&h);
            }
        }
    }
}

//! How a KV cache is sized and stored: per layer its attention window, the row width, the block
//! size, the capacity in tokens and the element type; and the bytes that makes.

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

/// How to build a cache: per layer its window (`None` = global), and sizes.
pub struct KvConfig {
    pub layer_windows: Vec<Option<usize>>,
    pub row: usize,
    pub block_size: usize,
    /// Tokens of capacity for global layers (sliding groups get what their windows need).
    pub capacity_tokens: usize,
    pub dtype: KvType,
}

impl KvConfig {
    /// Blocks in each group's pool: `capacity_tokens` rounded up to whole blocks, nothing
    /// more (`--kv-tokens N` holds N tokens). A whole prompt is written before the window drops
    /// anything, so sliding groups get the same capacity as global ones; dropping frees their
    /// blocks for other sequences.
    pub(super) fn blocks_per_group(&self) -> Option<usize> {
        let blocks = self.capacity_tokens.div_ceil(self.block_size);
        // Bounded here so that `bytes` can refuse it before anything is allocated.
        (blocks < u32::MAX as usize).then_some(blocks)
    }

    /// Bytes of keys and values the cache will allocate; `None` when that overflows.
    pub fn bytes(&self) -> Option<usize> {
        let per_value = match self.dtype {
            KvType::F16 => 2,
            KvType::F32 => 4,
        };
        let per_layer = self
            .blocks_per_group()?
            .checked_mul(self.block_size)?
            .checked_mul(self.row)?
            .checked_mul(2 * per_value)?;
        per_layer.checked_mul(self.layer_windows.len())
    }
}

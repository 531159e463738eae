//! How a KV cache is sized and stored: per layer its attention window, the row width, the block
//! size, the capacity in tokens and the element type; and the bytes that makes.

/// How cached keys and values are stored: floats, or GGML's 8- and 4-bit blocks (32 values
/// with one f16 scale: 34 and 18 bytes), which attention reads as they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[allow(non_camel_case_types)]
pub enum KvType {
    #[default]
    F16,
    F32,
    Q8_0,
    Q4_0,
}

/// Values per block of the quantized types.
pub const KV_BLOCK_VALUES: usize = 32;

impl KvType {
    /// Every type, as `parse` spells them.
    pub const NAMES: [&'static str; 4] = ["f16", "f32", "q8_0", "q4_0"];

    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "f16" => Some(Self::F16),
            "f32" => Some(Self::F32),
            "q8_0" => Some(Self::Q8_0),
            "q4_0" => Some(Self::Q4_0),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::F16 => "f16",
            Self::F32 => "f32",
            Self::Q8_0 => "q8_0",
            Self::Q4_0 => "q4_0",
        }
    }

    /// Bytes for `n` values (`n` a whole number of blocks for the quantized types).
    pub fn bytes_for(self, n: usize) -> Option<usize> {
        match self {
            Self::F16 => n.checked_mul(2),
            Self::F32 => n.checked_mul(4),
            Self::Q8_0 => (n / KV_BLOCK_VALUES).checked_mul(34),
            Self::Q4_0 => (n / KV_BLOCK_VALUES).checked_mul(18),
        }
    }

    /// Whether heads of `head_dim` values can be stored: a quantized block must not straddle
    /// two heads (attention reads one head's run of blocks).
    pub fn check_head_dim(self, head_dim: usize) -> Result<(), String> {
        match self {
            Self::Q8_0 | Self::Q4_0 if !head_dim.is_multiple_of(KV_BLOCK_VALUES) => Err(format!(
                "a {} KV cache needs heads whose size is a multiple of {KV_BLOCK_VALUES}; this \
                 model's are {head_dim} (use f16)",
                self.name()
            )),
            _ => Ok(()),
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
        let values = self
            .blocks_per_group()?
            .checked_mul(self.block_size)?
            .checked_mul(self.row)?;
        let per_layer = self.dtype.bytes_for(values)?.checked_mul(2)?;
        per_layer.checked_mul(self.layer_windows.len())
    }
}

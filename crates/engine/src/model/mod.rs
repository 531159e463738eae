//! A loaded model: config, weights in our packed layout, and the batched forward pass. The
//! architectures (`gemma` for Gemma 2/3, `llama` for the Llama/Qwen/Phi-3 family and their
//! mixtures of experts, `gpt2`) only say which tensors and options make up the shared `Block`;
//! the forward itself is in `transformer` (and `ffn` for the MLP and expert layers).

pub mod attention;
pub mod config;
mod ffn;
mod gemma;
mod gpt2;
pub mod layers;
mod llama;
pub mod observe;
mod transformer;

use crate::error::Result;
use crate::gguf::GgufFile;
use crate::kernels::matmul::Isa;
use crate::kernels::ops::Rope;
use crate::kernels::pack::PackedMatrix;
use crate::kernels::pool::ThreadPool;
use crate::kv::{KvCache, KvConfig, KvType, SeqId};
pub use config::{Arch, Config};
use layers::{Embedding, Ffn, Linear, Norm};

/// Tokens per KV block.
pub const KV_BLOCK_SIZE: usize = 16;

/// Query/key/value projections: separate matrices or one fused `[q; k; v]` matrix (GPT-2).
#[allow(clippy::large_enum_variant)] // one per layer, built once
pub enum Qkv {
    Separate { q: Linear, k: Linear, v: Linear },
    Fused(Linear),
}

/// One transformer block, described as data.
pub struct Block {
    pub attn_norm: Norm,
    pub qkv: Qkv,
    pub q_norm: Option<Norm>,
    pub k_norm: Option<Norm>,
    pub o: Linear,
    pub post_attn_norm: Option<Norm>,
    pub ffn_norm: Norm,
    pub ffn: Ffn,
    pub post_ffn_norm: Option<Norm>,
    pub rope: Option<Rope>,
    pub window: Option<usize>,
}

/// Everything the forward pass reads.
pub struct Weights {
    pub embedding: Embedding,
    /// Multiplies embeddings (Gemma: sqrt(n_embd)).
    pub embd_scale: f32,
    /// Learned absolute positions `[ctx, n_embd]` (GPT-2).
    pub pos_embd: Option<Vec<f32>>,
    pub blocks: Vec<Block>,
    pub output_norm: Norm,
    /// `[vocab, n_embd]`.
    pub output: PackedMatrix,
}

impl Weights {
    /// The MLP of block `il`, or `None` for an expert layer.
    pub fn dense_mlp(&self, il: usize) -> Option<&layers::Mlp> {
        match &self.blocks[il].ffn {
            Ffn::Dense(m) => Some(m),
            Ffn::Moe(_) => None,
        }
    }
}

pub struct Model {
    pub config: Config,
    pub weights: Weights,
    /// How the caches from `kv_config` store keys and values (f16 unless set).
    pub kv_type: KvType,
    pool: ThreadPool,
    isa: Isa,
    scratch: transformer::Scratch,
}

impl Model {
    pub fn from_gguf(file: &GgufFile, threads: usize) -> Result<Self> {
        let config = Config::from_gguf(file)?;
        let weights = match config.arch {
            Arch::Gemma2 | Arch::Gemma3 => gemma::load(file, &config)?,
            Arch::Gpt2 => gpt2::load(file, &config)?,
            _ => llama::load(file, &config)?,
        };
        Ok(Self {
            config,
            weights,
            kv_type: KvType::default(),
            pool: ThreadPool::new(threads),
            isa: Isa::detect(),
            scratch: Default::default(),
        })
    }

    /// Starts collecting calibration statistics of every matmul input (`observe::ActStats`)
    /// in the forward passes that follow; `take_observations` ends it and hands them over.
    pub fn observe(&mut self) {
        self.scratch.observe = Some(Default::default());
    }

    pub fn take_observations(&mut self) -> Option<observe::ActStats> {
        self.scratch.observe.take()
    }

    pub fn threads(&self) -> usize {
        self.pool.threads()
    }

    /// The compute threads, for work beside the forward pass (e.g. reading many logit rows).
    pub fn pool(&self) -> &ThreadPool {
        &self.pool
    }

    /// Whether cached keys can move to other positions (`shift_keys`): not with learned
    /// absolute positions (GPT-2), which are mixed into the hidden state, not the keys.
    pub fn can_shift(&self) -> bool {
        self.weights.pos_embd.is_none()
    }

    /// After `KvCache::drop_middle`: turns the cached keys of `seq` at positions `from..` back by
    /// `back` positions in every layer with RoPE (keys are cached rotated).
    pub fn shift_keys(&self, kv: &mut KvCache, seq: SeqId, from: usize, back: usize) {
        let hd = self.config.head_dim;
        for (layer, blk) in self.weights.blocks.iter().enumerate() {
            if let Some(rope) = &blk.rope {
                kv.map_keys(layer, seq, from, &|row| rope.rotate_back(row, hd, back));
            }
        }
    }

    /// Sets how the caches from `kv_config` store keys and values; a quantized type needs heads
    /// of whole 32-value blocks (the parameter error names `kv_type`).
    pub fn set_kv_type(&mut self, t: KvType) -> crate::Result<()> {
        t.check_head_dim(self.config.head_dim)
            .map_err(|problem| crate::Error::param("kv_type", problem))?;
        self.kv_type = t;
        Ok(())
    }

    /// Refuses a KV cache of `kv_tokens` bigger than this machine's memory, naming the sizes
    /// (the parameter error names `kv_tokens`).
    pub fn check_kv_memory(&self, kv_tokens: usize) -> crate::Result<()> {
        let bytes = self.kv_config(kv_tokens).bytes();
        let total = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                let line = m.lines().find(|l| l.starts_with("MemTotal:"))?.to_string();
                line.split_whitespace().nth(1)?.parse::<usize>().ok()
            })
            .map_or(usize::MAX, |kb| kb.saturating_mul(1024));
        match bytes {
            Some(b) if b <= total && kv_tokens > 0 => Ok(()),
            _ => Err(crate::Error::param(
                "kv_tokens",
                format!(
                    "{kv_tokens} tokens need {} of KV cache; this machine has {} MB",
                    bytes.map_or("over 16 EiB".to_string(), |b| format!("{} MB", b >> 20)),
                    total >> 20
                ),
            )),
        }
    }

    /// A KV cache layout for this model holding `capacity_tokens` tokens.
    pub fn kv_config(&self, capacity_tokens: usize) -> KvConfig {
        KvConfig {
            layer_windows: self.weights.blocks.iter().map(|b| b.window).collect(),
            row: self.config.kv_row(),
            block_size: KV_BLOCK_SIZE,
            capacity_tokens,
            dtype: self.kv_type,
        }
    }
}

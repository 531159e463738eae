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
mod transformer;

use crate::error::Result;
use crate::gguf::GgufFile;
use crate::kernels::matmul::Isa;
use crate::kernels::ops::Rope;
use crate::kernels::pack::PackedMatrix;
use crate::kernels::pool::ThreadPool;
use crate::kv::{KvConfig, KvType};
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

    pub fn threads(&self) -> usize {
        self.pool.threads()
    }

    /// The compute threads, for work beside the forward pass (e.g. reading many logit rows).
    pub fn pool(&self) -> &ThreadPool {
        &self.pool
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

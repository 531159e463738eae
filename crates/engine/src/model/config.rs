//! The model's hyper-parameters, read once from GGUF metadata into a typed struct and checked
//! for consistency (a zero head count or a head size that does not divide would otherwise
//! surface as a panic deep inside a kernel).

use crate::error::{Error, Result};
use crate::gguf::GgufFile;

/// The largest size any hyper-parameter may have (16 Mi): far beyond real models, small enough
/// that products of two sizes cannot overflow.
const MAX_DIM: usize = 1 << 24;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    Gemma3,
    Llama,
    Gpt2,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub arch: Arch,
    pub n_embd: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub head_dim: usize,
    pub n_ff: usize,
    pub eps: f32,
    pub rope_base: f32,
    /// Gemma 3: RoPE base of the sliding-window layers.
    pub rope_base_local: f32,
    pub sliding_window: Option<usize>,
    pub context_length: usize,
    pub vocab: usize,
}

impl Config {
    pub fn from_gguf(f: &GgufFile) -> Result<Self> {
        let arch_name = f.get_str("general.architecture")?;
        let arch = match arch_name {
            "gemma3" => Arch::Gemma3,
            "llama" | "mistral" | "qwen2" => Arch::Llama,
            "gpt2" => Arch::Gpt2,
            other => return Err(Error::UnsupportedArchitecture(other.to_string())),
        };
        let key = |k: &str| format!("{arch_name}.{k}");
        let usize_of = |k: &str| -> Result<usize> { Ok(f.get_u64(&key(k))? as usize) };
        let n_embd = usize_of("embedding_length")?;
        let n_head = usize_of("attention.head_count")?;
        let n_head_kv = match f.get(&key("attention.head_count_kv")) {
            Some(_) => usize_of("attention.head_count_kv")?,
            None => n_head,
        };
        let head_dim = match f.get(&key("attention.key_length")) {
            Some(_) => usize_of("attention.key_length")?,
            None if n_head > 0 => n_embd / n_head,
            None => 0,
        };
        let eps_key = if arch == Arch::Gpt2 {
            "attention.layer_norm_epsilon"
        } else {
            "attention.layer_norm_rms_epsilon"
        };
        let eps = f.get_f64(&key(eps_key)).unwrap_or(1e-5) as f32;
        let rope_base = f.get_f64(&key("rope.freq_base")).unwrap_or(10_000.0) as f32;
        let sliding_window = match arch {
            Arch::Gemma3 => Some(usize_of("attention.sliding_window")?),
            _ => None,
        };
        let vocab = f
            .get_array("tokenizer.ggml.tokens")
            .map(|a| a.len())
            .unwrap_or(0);
        let c = Config {
            arch,
            n_embd,
            n_layer: usize_of("block_count")?,
            n_head,
            n_head_kv,
            head_dim,
            n_ff: usize_of("feed_forward_length")?,
            eps,
            rope_base,
            rope_base_local: 10_000.0,
            sliding_window,
            context_length: usize_of("context_length")?,
            vocab,
        };
        c.validate()?;
        // Every block owns at least one tensor: a block count beyond the tensor count is a
        // corrupt header, caught here before anything is sized by it.
        if c.n_layer > f.tensors.len() {
            return Err(Error::meta(
                &key("block_count"),
                format!("{} blocks but only {} tensors", c.n_layer, f.tensors.len()),
            ));
        }
        Ok(c)
    }

    fn validate(&self) -> Result<()> {
        let check = |ok: bool, key: &str, what: String| {
            if ok {
                Ok(())
            } else {
                Err(Error::meta(key, what))
            }
        };
        // Products of these sizes index memory: bounding each keeps them far from overflow.
        let sizes = [
            (self.n_embd, "embedding_length"),
            (self.n_layer, "block_count"),
            (self.n_head, "attention.head_count"),
            (self.n_head_kv, "attention.head_count_kv"),
            (self.head_dim, "attention.key_length"),
            (self.n_ff, "feed_forward_length"),
            (self.context_length, "context_length"),
            (self.vocab, "tokenizer.ggml.tokens"),
        ];
        for (v, key) in sizes {
            check(
                v <= MAX_DIM,
                key,
                format!("{v} exceeds the limit {MAX_DIM}"),
            )?;
        }
        check(
            self.n_head * self.head_dim <= MAX_DIM,
            "attention.key_length",
            format!(
                "{} heads of {} exceed the limit {MAX_DIM}",
                self.n_head, self.head_dim
            ),
        )?;
        check(self.n_embd > 0, "embedding_length", "must be > 0".into())?;
        check(self.n_layer > 0, "block_count", "must be > 0".into())?;
        check(
            self.n_head > 0,
            "attention.head_count",
            "must be > 0".into(),
        )?;
        check(
            self.n_head_kv > 0 && self.n_head.is_multiple_of(self.n_head_kv),
            "attention.head_count_kv",
            format!(
                "{} must divide the head count {}",
                self.n_head_kv, self.n_head
            ),
        )?;
        check(
            self.head_dim > 0 && self.head_dim.is_multiple_of(2),
            "attention.key_length",
            format!("{} must be even", self.head_dim),
        )?;
        check(self.n_ff > 0, "feed_forward_length", "must be > 0".into())?;
        check(
            self.vocab > 0,
            "tokenizer.ggml.tokens",
            "vocabulary is empty".into(),
        )?;
        check(
            self.eps.is_finite() && self.eps > 0.0,
            "layer_norm epsilon",
            format!("{} is not a positive number", self.eps),
        )?;
        check(
            self.sliding_window != Some(0),
            "attention.sliding_window",
            "must be > 0".into(),
        )?;
        Ok(())
    }

    /// The attention window of layer `il`: Gemma 3 makes every 6th layer global.
    pub fn layer_window(&self, il: usize) -> Option<usize> {
        match self.arch {
            Arch::Gemma3 if !(il + 1).is_multiple_of(6) => self.sliding_window,
            _ => None,
        }
    }

    pub fn kv_row(&self) -> usize {
        self.n_head_kv * self.head_dim
    }
}

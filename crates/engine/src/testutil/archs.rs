//! Small GGUF models with random weights but each architecture's real metadata keys and tensor
//! layout, for checking everett against llama.cpp (`tools/archs/compare.py` writes them with
//! `everett-archgen`, runs both engines and commits llama.cpp's outputs; the tests rebuild the
//! same bytes from the same seed and compare). Weights are scaled so that next-token
//! distributions are peaked (greedy steps rarely near-tie), and every feature under test is set
//! strongly enough to move the output: RoPE factors far from 1, a sliding window shorter than
//! the prompts, soft-caps that bite, experts that differ.

use super::{quantize_q8_0, rand_f32};
use crate::gguf::write::GgufWriter;
use crate::gguf::{GgmlType, Value};
use crate::sample::Rng;
use half::f16;

/// The architectures (and variants) the comparison covers.
pub const ARCHS: [&str; 11] = [
    "llama",
    "llama31",
    "mixtral",
    "qwen2",
    "qwen3",
    "qwen3yarn",
    "qwen2moe",
    "qwen3moe",
    "phi3",
    "gemma2",
    "gemma3",
];

pub const VOCAB: usize = 384;
const N_EMBD: usize = 128;
const N_HEAD: usize = 4;
const N_HEAD_KV: usize = 2;
const HEAD_DIM: usize = 32;
const N_FF: usize = 256;
const N_LAYER: usize = 4;
pub const CTX: usize = 512;
/// Sliding window of the Gemma files: shorter than the comparison's prompts.
const WINDOW: usize = 24;
const EXPERTS: usize = 4;
const EXPERTS_USED: usize = 2;
const N_FF_EXP: usize = 128;

/// How the matrices are stored.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Storage {
    F16,
    Q8_0,
    /// The Q8_0 model's weights dequantized to F32: the same numbers without activation
    /// quantization, to tell an engine's quantization noise from its arithmetic.
    Q8_0AsF32,
}

struct Gen<'a> {
    w: GgufWriter,
    rng: Rng,
    storage: Storage,
    arch: &'a str,
}

impl Gen<'_> {
    fn key(&self, k: &str) -> String {
        format!("{}.{k}", self.arch)
    }
    fn u32(&mut self, k: &str, v: usize) {
        let key = self.key(k);
        self.w.meta(&key, Value::U32(v as u32));
    }
    fn f32(&mut self, k: &str, v: f32) {
        let key = self.key(k);
        self.w.meta(&key, Value::F32(v));
    }
    /// A matrix of `n` outputs over `k` inputs (GGUF dims `[k, n, extra…]`), entries uniform in
    /// ±scale/sqrt(k).
    fn mat(&mut self, name: &str, dims: &[usize], scale: f32) {
        let n: usize = dims.iter().product();
        // Drawn even when scaled to zero, so the other tensors keep their values.
        let data = rand_f32(&mut self.rng, n, 1.0);
        let s = scale / (dims[0] as f32).sqrt();
        let data: Vec<f32> = data.iter().map(|v| v * s).collect();
        let dims: Vec<u64> = dims.iter().map(|&d| d as u64).collect();
        match self.storage {
            Storage::F16 => {
                let bytes = data
                    .iter()
                    .flat_map(|v| f16::from_f32(*v).to_le_bytes())
                    .collect();
                self.w.tensor(name, &dims, GgmlType::F16, bytes);
            }
            Storage::Q8_0 => {
                self.w
                    .tensor(name, &dims, GgmlType::Q8_0, quantize_q8_0(&data));
            }
            Storage::Q8_0AsF32 => {
                let mut back = vec![0f32; data.len()];
                crate::kernels::quant::dequantize(GgmlType::Q8_0, &quantize_q8_0(&data), &mut back);
                self.w.tensor_f32(name, &dims, &back);
            }
        }
    }
    /// A norm weight around 1.
    fn norm(&mut self, name: &str, n: usize) {
        let v: Vec<f32> = rand_f32(&mut self.rng, n, 0.2)
            .iter()
            .map(|x| 1.0 + x)
            .collect();
        self.w.tensor_f32(name, &[n as u64], &v);
    }
    fn vec(&mut self, name: &str, n: usize, scale: f32) {
        let v: Vec<f32> = rand_f32(&mut self.rng, n, 1.0)
            .iter()
            .map(|x| x * scale)
            .collect();
        self.w.tensor_f32(name, &[n as u64], &v);
    }
}

/// The GGUF architecture name of variant `name`.
pub fn gguf_arch(name: &str) -> &str {
    match name {
        "llama31" | "mixtral" => "llama",
        "qwen3yarn" => "qwen3",
        other => other,
    }
}

/// The model file of variant `name` (one of `ARCHS`). With `ablate`, the same weights with the
/// architecture's own feature switched off (no `rope_freqs`, one expert, zero biases, no shared
/// expert, short RoPE factors, soft-caps out of reach, a window as long as the context), to show
/// that the comparison notices it; plain Llama has none.
pub fn arch_model(name: &str, storage: Storage, seed: u64, ablate: bool) -> Vec<u8> {
    let arch = gguf_arch(name);
    let mut g = Gen {
        w: GgufWriter::new(),
        rng: Rng::new(seed),
        storage,
        arch,
    };
    g.w.meta("general.architecture", Value::Str(arch.into()));
    // (Not the architecture's name: llama.cpp keys Phi-3 tokenizer quirks on it.)
    g.w.meta("general.name", Value::Str("everett random weights".into()));
    g.u32("embedding_length", N_EMBD);
    g.u32("block_count", N_LAYER);
    g.u32("attention.head_count", N_HEAD);
    g.u32("attention.head_count_kv", N_HEAD_KV);
    g.u32("attention.key_length", HEAD_DIM);
    g.u32("attention.value_length", HEAD_DIM);
    g.u32("rope.dimension_count", HEAD_DIM);
    g.u32("context_length", CTX);
    g.f32("attention.layer_norm_rms_epsilon", 1e-6);
    let base = match name {
        "llama31" => 500_000.0,
        "gemma3" => 1_000_000.0,
        _ => 10_000.0,
    };
    g.f32("rope.freq_base", base);
    let moe = matches!(name, "mixtral" | "qwen2moe" | "qwen3moe");
    g.u32("feed_forward_length", N_FF);
    if moe {
        g.u32("expert_count", EXPERTS);
        g.u32("expert_used_count", if ablate { 1 } else { EXPERTS_USED });
        if name != "mixtral" {
            g.u32("expert_feed_forward_length", N_FF_EXP);
        }
        if name == "qwen2moe" {
            g.u32("expert_shared_feed_forward_length", N_FF);
        }
    }
    match name {
        "gemma2" => {
            g.u32("attention.sliding_window", WINDOW);
            g.f32("attn_logit_softcapping", if ablate { 1e4 } else { 3.0 });
            g.f32("final_logit_softcapping", if ablate { 1e4 } else { 20.0 });
        }
        "gemma3" => {
            g.u32(
                "attention.sliding_window",
                if ablate { CTX } else { WINDOW },
            );
            // Every other layer global (4 layers would otherwise have none), and linear RoPE
            // scaling as Gemma 3 4B+ has it: the global layers only.
            g.u32("attention.sliding_window_pattern", 2);
            g.w.meta("gemma3.rope.scaling.type", Value::Str("linear".into()));
            g.f32("rope.scaling.factor", if ablate { 1.0 } else { 8.0 });
        }
        // YaRN as Qwen's long-context files set it: factor 4 over an original context of 64.
        "qwen3yarn" => {
            let kind = if ablate { "none" } else { "yarn" };
            g.w.meta("qwen3.rope.scaling.type", Value::Str(kind.into()));
            g.f32("rope.scaling.factor", 4.0);
            g.u32("rope.scaling.original_context_length", 64);
        }
        "phi3" => {
            g.u32(
                "rope.scaling.original_context_length",
                if ablate { CTX } else { 128 },
            );
            g.f32("rope.scaling.attn_factor", if ablate { 1.0 } else { 1.2 });
        }
        _ => {}
    }
    super::write_vocab(VOCAB, &mut g.w);
    let (d, hd) = (N_EMBD, HEAD_DIM);
    let (qn, kvn) = (N_HEAD * hd, N_HEAD_KV * hd);
    // Tied output for the Gemmas (their real layout), separate for the others.
    let tied = name.starts_with("gemma");
    // The Gemmas share embeddings with the output, so the current token's own embedding in
    // the residual stream would make it the next token forever: their final norm weights have
    // random signs, which cancels that self-match and leaves peaked, context-driven logits.
    g.mat(
        "token_embd.weight",
        &[d, VOCAB],
        if tied { 3.0 } else { 16.0 },
    );
    if !tied {
        g.mat("output.weight", &[d, VOCAB], 24.0);
        g.norm("output_norm.weight", d);
    } else {
        g.vec("output_norm.weight", d, 8.0);
    }
    let half = hd / 2;
    match name {
        // Llama 3.1-style factors: high frequencies kept, low ones slowed down to 8×.
        "llama31" if !ablate => {
            let f: Vec<f32> = (0..half)
                .map(|i| 1.0 + 7.0 * i as f32 / (half - 1) as f32)
                .collect();
            g.w.tensor_f32("rope_freqs.weight", &[half as u64], &f);
        }
        "phi3" => {
            let long: Vec<f32> = (0..half)
                .map(|i| 1.0 + 3.0 * i as f32 / half as f32)
                .collect();
            let short: Vec<f32> = (0..half)
                .map(|i| 1.0 + 0.5 * i as f32 / half as f32)
                .collect();
            g.w.tensor_f32("rope_factors_long.weight", &[half as u64], &long);
            g.w.tensor_f32("rope_factors_short.weight", &[half as u64], &short);
        }
        _ => {}
    }
    for il in 0..N_LAYER {
        let p = |s: &str| format!("blk.{il}.{s}");
        g.norm(&p("attn_norm.weight"), d);
        g.norm(&p("ffn_norm.weight"), d);
        if name == "phi3" {
            g.mat(&p("attn_qkv.weight"), &[d, qn + 2 * kvn], 1.5);
        } else {
            g.mat(&p("attn_q.weight"), &[d, qn], 1.5);
            g.mat(&p("attn_k.weight"), &[d, kvn], 1.5);
            g.mat(&p("attn_v.weight"), &[d, kvn], 2.0);
        }
        if matches!(name, "qwen2" | "qwen2moe") {
            let zero = ablate && name == "qwen2";
            g.vec(&p("attn_q.bias"), qn, if zero { 0.0 } else { 0.5 });
            g.vec(&p("attn_k.bias"), kvn, if zero { 0.0 } else { 0.5 });
            g.vec(&p("attn_v.bias"), kvn, if zero { 0.0 } else { 0.5 });
        }
        if matches!(name, "qwen3" | "qwen3yarn" | "qwen3moe" | "gemma3") {
            g.norm(&p("attn_q_norm.weight"), hd);
            g.norm(&p("attn_k_norm.weight"), hd);
        }
        g.mat(&p("attn_output.weight"), &[qn, d], 1.5);
        if tied {
            g.norm(&p("post_attention_norm.weight"), d);
            g.w.scale_last_f32(0.5);
            g.norm(&p("post_ffw_norm.weight"), d);
            g.w.scale_last_f32(0.5);
        }
        if moe {
            let nf = if name == "mixtral" { N_FF } else { N_FF_EXP };
            g.mat(&p("ffn_gate_inp.weight"), &[d, EXPERTS], 16.0);
            g.mat(&p("ffn_gate_exps.weight"), &[d, nf, EXPERTS], 2.0);
            g.mat(&p("ffn_up_exps.weight"), &[d, nf, EXPERTS], 2.0);
            g.mat(&p("ffn_down_exps.weight"), &[nf, d, EXPERTS], 1.5);
            if name == "qwen2moe" {
                g.vec(&p("ffn_gate_inp_shexp.weight"), d, 0.3);
                g.mat(&p("ffn_gate_shexp.weight"), &[d, N_FF], 2.0);
                g.mat(&p("ffn_up_shexp.weight"), &[d, N_FF], 2.0);
                g.mat(
                    &p("ffn_down_shexp.weight"),
                    &[N_FF, d],
                    if ablate { 0.0 } else { 1.5 },
                );
            }
        } else if name == "phi3" {
            g.mat(&p("ffn_up.weight"), &[d, 2 * N_FF], 2.0);
            g.mat(&p("ffn_down.weight"), &[N_FF, d], 1.5);
        } else {
            g.mat(&p("ffn_gate.weight"), &[d, N_FF], 2.0);
            g.mat(&p("ffn_up.weight"), &[d, N_FF], 2.0);
            g.mat(&p("ffn_down.weight"), &[N_FF, d], 1.5);
        }
    }
    g.w.to_bytes()
}

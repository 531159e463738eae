//! The Llama family's wiring: RMSNorm, SwiGLU, grouped-query attention, RoPE, tied or separate
//! output. Per architecture:
//! * `llama` (Llama 2/3, Mistral, SmolLM): adjacent-pair RoPE; Llama 3.1+'s frequency factors
//!   (`rope_freqs`); with `expert_count`, Mixtral's experts (top-k, renormalised).
//! * `qwen2`: NeoX RoPE, QKV biases. `qwen3`: NeoX RoPE, RMS norms on each query and key head.
//! * `qwen2moe`: experts (not renormalised) plus a sigmoid-gated shared expert; `qwen3moe`:
//!   experts (renormalised) and Qwen 3's QK norms.
//! * `phi3`: fused `[q; k; v]` and `[gate; up]` matrices (split here at load), NeoX RoPE with
//!   LongRoPE's long/short factors and attention factor.

use super::layers::{Activation, Ffn, Linear, Loader, Mlp, Moe};
use super::{Arch, Block, Config, Qkv, Weights};
use crate::error::Result;
use crate::gguf::GgufFile;
use crate::kernels::ops::Rope;

/// A linear layer of `k` inputs cut from rows `first..first + n` of a fused `[total, k]` one.
fn part(l: &Loader, name: &str, total: usize, first: usize, n: usize, k: usize) -> Result<Linear> {
    let w = l.matrix_rows(&format!("{name}.weight"), &[k, total], first, n, k)?;
    let bias = l
        .opt_vector(&format!("{name}.bias"), total)?
        .map(|b| b[first..first + n].to_vec());
    Ok(Linear { w, bias })
}

/// The RoPE of every layer: frequency factors from `rope_freqs` (Llama 3.1+) or Phi-3's long
/// factors when the model's context goes past its original one (short ones otherwise).
fn rope(l: &Loader, c: &Config, neox: bool) -> Result<Rope> {
    let half = c.head_dim / 2;
    let rs = &c.rope_scaling;
    let factors = if l.has("rope_freqs.weight") {
        Some(l.vector("rope_freqs.weight", half)?)
    } else if c.context_length > rs.original_context && l.has("rope_factors_long.weight") {
        Some(l.vector("rope_factors_long.weight", half)?)
    } else {
        l.opt_vector("rope_factors_short.weight", half)?
    };
    Ok(Rope::scaled(
        c.head_dim,
        c.rope_base,
        neox,
        rs.freq_scale,
        factors.as_deref(),
        rs.attn_factor,
        rs.yarn_context,
    ))
}

fn swiglu(l: &Loader, p: &dyn Fn(&str) -> String, n_ff: usize, d: usize) -> Result<Mlp> {
    Ok(Mlp {
        gate: Some(l.linear(&p("ffn_gate"), n_ff, d)?),
        up: l.linear(&p("ffn_up"), n_ff, d)?,
        down: l.linear(&p("ffn_down"), d, n_ff)?,
        act: Activation::SwiGlu,
    })
}

fn ffn(l: &Loader, c: &Config, p: &dyn Fn(&str) -> String) -> Result<Ffn> {
    let d = c.n_embd;
    let Some(e) = c.experts else {
        if c.arch == Arch::Phi3 {
            let name = p("ffn_up");
            return Ok(Ffn::Dense(Mlp {
                gate: Some(part(l, &name, 2 * c.n_ff, 0, c.n_ff, d)?),
                up: part(l, &name, 2 * c.n_ff, c.n_ff, c.n_ff, d)?,
                down: l.linear(&p("ffn_down"), d, c.n_ff)?,
                act: Activation::SwiGlu,
            }));
        }
        return swiglu(l, p, c.n_ff, d).map(Ffn::Dense);
    };
    let gates = l.experts(&p("ffn_gate_exps.weight"), e.count, e.n_ff, d)?;
    let ups = l.experts(&p("ffn_up_exps.weight"), e.count, e.n_ff, d)?;
    let downs = l.experts(&p("ffn_down_exps.weight"), e.count, d, e.n_ff)?;
    let experts = gates
        .into_iter()
        .zip(ups)
        .zip(downs)
        .map(|((gate, up), down)| Mlp {
            gate: Some(gate),
            up,
            down,
            act: Activation::SwiGlu,
        })
        .collect();
    let shared = e.n_ff_shared > 0;
    Ok(Ffn::Moe(Box::new(Moe {
        router: l.linear(&p("ffn_gate_inp"), e.count, d)?,
        experts,
        used: e.used,
        norm_weights: e.norm_weights,
        weights_scale: e.weights_scale,
        shared: if shared {
            Some(Mlp {
                gate: Some(l.linear(&p("ffn_gate_shexp"), e.n_ff_shared, d)?),
                up: l.linear(&p("ffn_up_shexp"), e.n_ff_shared, d)?,
                down: l.linear(&p("ffn_down_shexp"), d, e.n_ff_shared)?,
                act: Activation::SwiGlu,
            })
        } else {
            None
        },
        shared_gate: if shared {
            Some(l.vector(&p("ffn_gate_inp_shexp.weight"), d)?)
        } else {
            None
        },
    })))
}

pub fn load(file: &GgufFile, c: &Config) -> Result<Weights> {
    let l = Loader { file };
    let (d, hd) = (c.n_embd, c.head_dim);
    let (qn, kvn) = (c.n_head * hd, c.n_head_kv * hd);
    let neox = c.arch != Arch::Llama;
    let qk_norm = matches!(c.arch, Arch::Qwen3 | Arch::Qwen3Moe);
    let (output, embedding) = l.output_and_embedding(c.vocab, d)?;
    let mut blocks = Vec::new();
    for il in 0..c.n_layer {
        let p = |s: &str| format!("blk.{il}.{s}");
        let qkv = if l.has(&p("attn_qkv.weight")) {
            let (name, total) = (p("attn_qkv"), qn + 2 * kvn);
            Qkv::Separate {
                q: part(&l, &name, total, 0, qn, d)?,
                k: part(&l, &name, total, qn, kvn, d)?,
                v: part(&l, &name, total, qn + kvn, kvn, d)?,
            }
        } else {
            Qkv::Separate {
                q: l.linear(&p("attn_q"), qn, d)?,
                k: l.linear(&p("attn_k"), kvn, d)?,
                v: l.linear(&p("attn_v"), kvn, d)?,
            }
        };
        blocks.push(Block {
            attn_norm: l.rms_norm(&p("attn_norm"), d)?,
            qkv,
            q_norm: l.opt_rms_norm(qk_norm, &p("attn_q_norm"), hd)?,
            k_norm: l.opt_rms_norm(qk_norm, &p("attn_k_norm"), hd)?,
            o: l.linear(&p("attn_output"), d, qn)?,
            post_attn_norm: None,
            ffn_norm: l.rms_norm(&p("ffn_norm"), d)?,
            ffn: ffn(&l, c, &p)?,
            post_ffn_norm: None,
            rope: Some(rope(&l, c, neox)?),
            window: None,
        });
    }
    Ok(Weights {
        embedding,
        embd_scale: 1.0,
        pos_embd: None,
        blocks,
        output_norm: l.rms_norm("output_norm", d)?,
        output,
    })
}

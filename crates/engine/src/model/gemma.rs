//! Gemma 2 and Gemma 3 wiring: norms before and after attention and MLP, GeGLU, embeddings
//! scaled by sqrt(n_embd), tied output, NeoX RoPE, sliding-window layers between global ones
//! (Gemma 2: every other layer, the same RoPE; Gemma 3: 5 of 6, RoPE base 10 000 and no linear
//! scaling there).
//! Gemma 3 adds QK-norm; Gemma 2 soft-caps attention scores and logits (in `Config`). The GGUF
//! norms already include Gemma's +1.

use super::layers::{Activation, Ffn, Loader, Mlp};
use super::{Arch, Block, Config, Qkv, Weights};
use crate::error::Result;
use crate::gguf::GgufFile;
use crate::kernels::ops::Rope;

pub fn load(file: &GgufFile, c: &Config) -> Result<Weights> {
    let l = Loader { file };
    let (d, hd) = (c.n_embd, c.head_dim);
    let qk_norm = c.arch == Arch::Gemma3;
    let (output, embedding) = l.output_and_embedding(c.vocab, d)?;
    let mut blocks = Vec::new();
    for il in 0..c.n_layer {
        let p = |s: &str| format!("blk.{il}.{s}");
        let window = c.layer_window(il);
        let rs = &c.rope_scaling;
        // Sliding layers have their own base; Gemma 3's keep unscaled positions (its linear
        // RoPE scaling is for the global layers), Gemma 2's scale as the global ones.
        let (base, freq_scale) = match window {
            Some(_) if c.arch == Arch::Gemma3 => (c.rope_base_local, 1.0),
            Some(_) => (c.rope_base_local, rs.freq_scale),
            None => (c.rope_base, rs.freq_scale),
        };
        blocks.push(Block {
            attn_norm: l.rms_norm(&p("attn_norm"), d)?,
            qkv: Qkv::Separate {
                q: l.linear(&p("attn_q"), c.n_head * hd, d)?,
                k: l.linear(&p("attn_k"), c.n_head_kv * hd, d)?,
                v: l.linear(&p("attn_v"), c.n_head_kv * hd, d)?,
            },
            q_norm: l.opt_rms_norm(qk_norm, &p("attn_q_norm"), hd)?,
            k_norm: l.opt_rms_norm(qk_norm, &p("attn_k_norm"), hd)?,
            o: l.linear(&p("attn_output"), d, c.n_head * hd)?,
            post_attn_norm: Some(l.rms_norm(&p("post_attention_norm"), d)?),
            ffn_norm: l.rms_norm(&p("ffn_norm"), d)?,
            ffn: Ffn::Dense(Mlp {
                gate: Some(l.linear(&p("ffn_gate"), c.n_ff, d)?),
                up: l.linear(&p("ffn_up"), c.n_ff, d)?,
                down: l.linear(&p("ffn_down"), d, c.n_ff)?,
                act: Activation::GeGlu,
            }),
            post_ffn_norm: Some(l.rms_norm(&p("post_ffw_norm"), d)?),
            rope: Some(Rope::scaled(
                hd,
                base,
                true,
                freq_scale,
                None,
                rs.attn_factor,
                rs.yarn_context,
            )),
            window,
        });
    }
    Ok(Weights {
        embedding,
        embd_scale: (d as f32).sqrt(),
        pos_embd: None,
        blocks,
        output_norm: l.rms_norm("output_norm", d)?,
        output,
    })
}

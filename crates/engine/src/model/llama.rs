//! Llama / Mistral / Qwen2 wiring: RMSNorm, SwiGLU, grouped-query attention, RoPE (adjacent
//! pairs for Llama, halves for Qwen2), optional QKV biases, tied or separate output.

use super::layers::{Activation, Loader, Mlp};
use super::{Block, Config, Qkv, Weights};
use crate::error::Result;
use crate::gguf::GgufFile;
use crate::kernels::ops::Rope;

pub fn load(file: &GgufFile, c: &Config) -> Result<Weights> {
    let l = Loader { file };
    let (d, hd) = (c.n_embd, c.head_dim);
    let neox = file
        .get_str("general.architecture")
        .is_ok_and(|a| a == "qwen2");
    let (output, embedding) = l.output_and_embedding(c.vocab, d)?;
    let mut blocks = Vec::new();
    for il in 0..c.n_layer {
        let p = |s: &str| format!("blk.{il}.{s}");
        blocks.push(Block {
            attn_norm: l.rms_norm(&p("attn_norm"), d)?,
            qkv: Qkv::Separate {
                q: l.linear(&p("attn_q"), c.n_head * hd, d)?,
                k: l.linear(&p("attn_k"), c.n_head_kv * hd, d)?,
                v: l.linear(&p("attn_v"), c.n_head_kv * hd, d)?,
            },
            q_norm: None,
            k_norm: None,
            o: l.linear(&p("attn_output"), d, c.n_head * hd)?,
            post_attn_norm: None,
            ffn_norm: l.rms_norm(&p("ffn_norm"), d)?,
            mlp: Mlp {
                gate: Some(l.linear(&p("ffn_gate"), c.n_ff, d)?),
                up: l.linear(&p("ffn_up"), c.n_ff, d)?,
                down: l.linear(&p("ffn_down"), d, c.n_ff)?,
                act: Activation::SwiGlu,
            },
            post_ffn_norm: None,
            rope: Some(Rope::new(hd, c.rope_base, neox)),
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

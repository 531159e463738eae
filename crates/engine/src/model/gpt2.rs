//! GPT-2 wiring: LayerNorm with biases, a fused QKV projection, GELU MLP without a gate, learned
//! absolute position embeddings, no RoPE.

use super::layers::{Activation, Ffn, Loader, Mlp};
use super::{Block, Config, Qkv, Weights};
use crate::error::Result;
use crate::gguf::GgufFile;

pub fn load(file: &GgufFile, c: &Config) -> Result<Weights> {
    let l = Loader { file };
    let d = c.n_embd;
    let (output, embedding) = l.output_and_embedding(c.vocab, d)?;
    let mut blocks = Vec::new();
    for il in 0..c.n_layer {
        let p = |s: &str| format!("blk.{il}.{s}");
        blocks.push(Block {
            attn_norm: l.layer_norm(&p("attn_norm"), d)?,
            qkv: Qkv::Fused(l.linear(&p("attn_qkv"), 3 * d, d)?),
            q_norm: None,
            k_norm: None,
            o: l.linear(&p("attn_output"), d, d)?,
            post_attn_norm: None,
            ffn_norm: l.layer_norm(&p("ffn_norm"), d)?,
            ffn: Ffn::Dense(Mlp {
                gate: None,
                up: l.linear(&p("ffn_up"), c.n_ff, d)?,
                down: l.linear(&p("ffn_down"), d, c.n_ff)?,
                act: Activation::Gelu,
            }),
            post_ffn_norm: None,
            rope: None,
            window: None,
        });
    }
    Ok(Weights {
        embedding,
        embd_scale: 1.0,
        pos_embd: Some(l.vector("position_embd.weight", c.context_length * d)?),
        blocks,
        output_norm: l.layer_norm("output_norm", d)?,
        output,
    })
}

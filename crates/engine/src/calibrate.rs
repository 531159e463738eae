//! Calibration (seed 004's post-training quantization): runs the model over a representative
//! text in llama.cpp's perplexity chunks (BOS first, `ctx` tokens each) and accumulates each
//! matmul input's per-column sum of squares — llama-imatrix's importance matrix — measuring the
//! text's perplexity on the way, as llama-imatrix does.

use crate::error::{Error, Result};
use crate::model::Model;
use crate::perplexity;
use crate::quantize::imatrix::{Entry, Imatrix};
use crate::tokenizer::Tokenizer;

/// What a calibration run measured besides the matrix.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Calibration {
    pub chunks: usize,
    pub ctx: usize,
    pub perplexity: f64,
    pub entries: usize,
}

/// Runs `text` through `model` in chunks of `ctx` and returns its importance matrix, naming the
/// dataset `dataset` (the file it came from). `progress(done, chunks, ppl)` as chunks finish.
pub fn imatrix(
    model: &mut Model,
    tok: &Tokenizer,
    text: &str,
    ctx: usize,
    dataset: &str,
    progress: &mut dyn FnMut(usize, usize, f64),
) -> Result<(Imatrix, Calibration)> {
    let tokens = tok.encode(text, true, false);
    model.observe();
    let run = perplexity::measure(model, tok, &tokens, ctx, true, progress);
    let stats = model.take_observations();
    let (ppl, _, chunks) = run?;
    let stats = stats.ok_or_else(|| Error::Internal("the observations were lost".into()))?;
    let mut m = Imatrix {
        datasets: vec![dataset.to_string()],
        chunk_count: chunks as u32,
        chunk_size: ctx as u32,
        ..Default::default()
    };
    for (name, s) in stats.entries {
        m.entries.insert(
            name,
            Entry {
                sums: s.sums,
                counts: s.counts,
            },
        );
    }
    let report = Calibration {
        chunks,
        ctx,
        perplexity: ppl,
        entries: m.entries.len(),
    };
    Ok((m, report))
}

//! llama.cpp's perplexity method as tasks and a running sum, shared by `everett perplexity` and
//! the Python package: consecutive chunks of `ctx` tokens, BOS first in each, the predictions
//! of each chunk's second half scored, ppl = exp(mean NLL). Chunks are summed in position
//! order, as llama.cpp sums them, whatever order they finish in. Running them is the caller's.

use crate::engine::{EngineConfig, Event};
use crate::error::{Error, Result};
use crate::model::Model;
use crate::oneshot;
use crate::overflow::Overflow;
use crate::request::{ScoreRequest, Task};
use crate::scheduler::SchedulerConfig;
use crate::tokenizer::Tokenizer;

/// One scoring task per whole chunk of `ctx` tokens of `tokens` (a trailing part is left out).
pub fn chunk_tasks(tok: &Tokenizer, tokens: &[u32], ctx: usize) -> Vec<Task> {
    tokens
        .chunks_exact(ctx)
        .map(|chunk| {
            let mut chunk = chunk.to_vec();
            if let Some(bos) = tok.bos.filter(|_| tok.add_bos) {
                chunk[0] = bos;
            }
            Task::Score(ScoreRequest {
                ids: chunk,
                from: ctx / 2,
                overflow: Overflow::Stop,
            })
        })
        .collect()
}

/// Perplexity of `tokens` (the text with BOS, as `encode` adds it) in chunks of `ctx`:
/// returns (perplexity, predictions scored, chunks). A few chunks run side by side; logit rows
/// per step are capped (each is a whole vocabulary row). `progress(summed, chunks, ppl so far)`
/// is called whenever chunks have been summed. `every_row`: compute every chunk's every row
/// even where a chunk repeats an earlier one's prefix (no prefix cache).
pub fn measure(
    model: &mut Model,
    tok: &Tokenizer,
    tokens: &[u32],
    ctx: usize,
    every_row: bool,
    progress: &mut dyn FnMut(usize, usize, f64),
) -> Result<(f64, usize, usize)> {
    if ctx < 16 || ctx > model.config.context_length {
        return Err(Error::Param {
            name: "ctx",
            problem: format!("must be between 16 and {}", model.config.context_length),
        });
    }
    let n_chunks = tokens.len() / ctx;
    if n_chunks == 0 {
        return Err(Error::InvalidRequest(format!(
            "the text has {} tokens, fewer than one chunk of {ctx}",
            tokens.len()
        )));
    }
    let cfg = EngineConfig {
        kv_tokens: 2 * ctx,
        scheduler: SchedulerConfig {
            max_seqs: 2,
            max_logit_rows: 64,
            prefix_cache: !every_row,
            ..SchedulerConfig::default()
        },
    };
    let mut sum = ChunkSum::new(n_chunks);
    oneshot::run(
        &mut *model,
        tok,
        cfg,
        chunk_tasks(tok, tokens, ctx),
        |c, e| {
            if let Event::Scored(v) = e {
                if sum.add(c, v) > 0 {
                    progress(sum.summed, n_chunks, sum.perplexity());
                }
            }
            Ok(())
        },
    )?;
    if !sum.complete() {
        return Err(Error::Internal(format!(
            "chunk {} ended without a score",
            sum.summed
        )));
    }
    Ok((sum.perplexity(), sum.scored, n_chunks))
}

/// The negative log-likelihoods of `chunks` chunks, summed in chunk order as they arrive.
#[derive(Debug, Clone)]
pub struct ChunkSum {
    pending: Vec<Option<Vec<f32>>>,
    /// Chunks summed so far (all before it).
    pub summed: usize,
    nll: f64,
    /// Predictions summed so far.
    pub scored: usize,
}

impl ChunkSum {
    pub fn new(chunks: usize) -> Self {
        Self {
            pending: vec![None; chunks],
            summed: 0,
            nll: 0.0,
            scored: 0,
        }
    }

    /// Records chunk `c`'s scores; sums every chunk now complete in order. Returns how many
    /// chunks became summed.
    pub fn add(&mut self, c: usize, nll: Vec<f32>) -> usize {
        if let Some(slot) = self.pending.get_mut(c) {
            *slot = Some(nll);
        }
        let before = self.summed;
        while let Some(values) = self.pending.get_mut(self.summed).and_then(Option::take) {
            for v in values {
                self.nll += v as f64;
                self.scored += 1;
            }
            self.summed += 1;
        }
        self.summed - before
    }

    /// Whether every chunk has been summed.
    pub fn complete(&self) -> bool {
        self.summed == self.pending.len()
    }

    /// exp(mean NLL) over the predictions summed so far.
    pub fn perplexity(&self) -> f64 {
        (self.nll / self.scored as f64).exp()
    }
}

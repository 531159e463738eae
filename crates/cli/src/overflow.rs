//! The flags that say what a sequence does at the end of the model's context, shared by
//! `generate`, `chat`, `serve` and `perplexity`.

use anyhow::{bail, Result};
use clap::Args;
use everett_engine::model::{Model, KV_BLOCK_SIZE};
use everett_engine::overflow::{Overflow, Stream};

#[derive(Args, Clone, Debug)]
pub struct OverflowArgs {
    /// At the end of the context: `stop` (finish_reason length), or `stream` on past it,
    /// keeping the first tokens (attention sinks) and the most recent window (StreamingLLM).
    #[arg(long, default_value = "stop", value_parser = ["stop", "stream"])]
    pub context_overflow: String,
    /// With `--context-overflow stream`: most tokens a sequence keeps in its KV cache (default:
    /// the model's context, or the KV cache's size when smaller).
    #[arg(long)]
    pub window: Option<usize>,
    /// With `--context-overflow stream`: tokens kept from the start, a multiple of 16 (0: none).
    #[arg(long, default_value_t = KV_BLOCK_SIZE)]
    pub sink_tokens: usize,
}

impl OverflowArgs {
    pub fn overflow(&self) -> Result<Overflow> {
        if self.context_overflow == "stop" {
            if self.window.is_some() {
                bail!("--window applies to --context-overflow stream");
            }
            return Ok(Overflow::Stop);
        }
        Ok(Overflow::Stream(Stream {
            window: self.window,
            sinks: self.sink_tokens,
        }))
    }

    /// The streaming window for `model` with a cache of `kv_tokens`, checked as the engine will
    /// check it (a bad `--window` fails at startup, not on every request).
    pub fn check(&self, model: &Model, kv_tokens: usize) -> Result<()> {
        if let Overflow::Stream(s) = self.overflow()? {
            let sliding = model
                .kv_config(1)
                .layer_windows
                .iter()
                .flatten()
                .max()
                .copied();
            s.resolve(model.config.context_length, kv_tokens, sliding.unwrap_or(0))?;
        }
        Ok(())
    }

    /// KV tokens enough for `seqs` streaming sequences, when a window is given.
    pub fn kv_tokens(&self, seqs: usize) -> Option<usize> {
        let w = self.window.filter(|_| self.context_overflow == "stream")?;
        Some(seqs.saturating_mul(w.saturating_add(KV_BLOCK_SIZE)))
    }
}

//! Running one collapse request to completion on a private engine, and its record: the output
//! (identical to greedy generation's) and what each pass did.

use super::{CollapseParams, CollapsePass};
use crate::engine::{Engine, EngineConfig, Event, Task};
use crate::error::{Error, Result};
use crate::generate::{kv_tokens_for, FinishReason, Output, Request};
use crate::model::Model;
use crate::tokenizer::Tokenizer;
use serde_json::{json, Value};
use std::time::Instant;

/// A finished collapse run.
#[derive(Debug, Clone)]
pub struct Collapsed {
    pub params: CollapseParams,
    pub output: Output,
    pub passes: Vec<CollapsePass>,
    pub wall_ms: f64,
}

impl Collapsed {
    /// Tokens committed per forward pass.
    pub fn tokens_per_pass(&self) -> f64 {
        self.output.tokens.len() as f64 / self.passes.len().max(1) as f64
    }

    /// The `everett collapse --json` record.
    pub fn to_json(&self, tok: &Tokenizer) -> Value {
        let piece = |id: u32| String::from_utf8_lossy(&tok.token_bytes(id)).into_owned();
        json!({
            "prompt_token_ids": self.output.prompt_ids,
            "tokens": self.output.tokens.iter().map(|t| json!({
                "id": t.id, "text": piece(t.id), "logprob": t.logprob, "entropy": t.entropy,
            })).collect::<Vec<_>>(),
            "text": self.output.text,
            "finish_reason": self.output.finish_reason.map(FinishReason::as_str),
            "forward_passes": self.passes.len(),
            "accepted_per_pass": self.passes.iter().map(|p| p.accepted).collect::<Vec<_>>(),
            "tokens_per_pass": self.tokens_per_pass(),
            "entropy_curves": self.passes.iter().map(|p| &p.entropies).collect::<Vec<_>>(),
            "passes": self.passes,
            "params": self.params,
            "wall_ms": self.wall_ms,
        })
    }
}

/// Runs `req` (its `collapse` set, or the defaults) alone on `model`; `on_event` sees every
/// event as it comes (to stream the text).
pub fn collapse(
    model: &mut Model,
    tok: &Tokenizer,
    mut req: Request,
    mut on_event: impl FnMut(&Event),
) -> Result<Collapsed> {
    let params = *req.collapse.get_or_insert_with(CollapseParams::default);
    let cfg = EngineConfig {
        kv_tokens: kv_tokens_for(std::slice::from_ref(&req), model.config.context_length),
        ..EngineConfig::for_seqs(params.candidates)
    };
    let mut out = Output::new(req.prompt_ids.clone());
    let mut passes = Vec::new();
    let start = Instant::now();
    let mut engine = Engine::new(model, tok, cfg);
    let (_, mut events) = engine.submit(Task::Generate(req))?;
    while engine.has_work() {
        engine.step()?;
        while let Ok(e) = events.try_recv() {
            on_event(&e);
            match e {
                Event::CollapsePass(p) => passes.push(*p),
                Event::Error(e) => return Err(e),
                e => {
                    out.absorb(&e, 0);
                }
            }
        }
    }
    if out.finish_reason.is_none() {
        return Err(Error::Internal(
            "the collapse request ended unfinished".into(),
        ));
    }
    Ok(Collapsed {
        params,
        output: out,
        passes,
        wall_ms: start.elapsed().as_secs_f64() * 1e3,
    })
}

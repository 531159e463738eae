//! The record of one collapse run (`oneshot::collapse` makes it): the output (identical to
//! greedy generation's) and what each pass did.

use crate::collapse::{CollapseParams, CollapsePass};
use crate::generate::FinishReason;
use crate::request::Output;
use crate::tokenizer::Tokenizer;
use serde_json::{json, Value};

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

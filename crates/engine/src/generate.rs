//! What a generation request is and what it produces: the parameters a front end fills in
//! (`Request`), each token with what the model thought of it (`TokenInfo`) and why a sample
//! ended (`FinishReason`). The policy that runs it is `policies::generate`; collapse decoding
//! (`collapse`) is a way of running the same request.

use crate::collapse::CollapseParams;
use crate::constraint::Grammar;
use crate::error::{Error, Result};
use crate::model::KV_BLOCK_SIZE;
use crate::overflow::Overflow;
use crate::sample::SamplingParams;

/// Largest accepted `n` (samples of one prompt).
pub const MAX_SAMPLES: usize = 128;

/// One generation request.
#[derive(Debug, Clone)]
pub struct Request {
    pub prompt_ids: Vec<u32>,
    pub sampling: SamplingParams,
    pub max_tokens: usize,
    pub stop_strings: Vec<String>,
    pub stop_ids: Vec<u32>,
    /// Samples of this prompt; sample `i` is seeded with `sampling.seed + i`.
    pub n: usize,
    /// Keep going past end-of-generation tokens (benchmarks); stop ids still stop.
    pub ignore_eos: bool,
    /// Tokens each sample produces before it may stop: until then end-of-generation and stop
    /// ids are never sampled and stop strings are not looked for (vLLM's `min_tokens`).
    pub min_tokens: usize,
    /// Collapse (lookahead) decoding instead of one token per pass: greedy, one sample, the
    /// same tokens and logprobs.
    pub collapse: Option<CollapseParams>,
    /// Added to the logits of these token ids before every sampling step (OpenAI's
    /// `logit_bias`; -100 bans a token, +100 all but forces it); ids are checked against the
    /// vocabulary by the engine.
    pub logit_bias: Vec<(u32, f32)>,
    /// What every sample's output must match (compiled by `constraint::Compiler` for the
    /// engine's tokenizer); `None`: free text.
    pub constraint: Option<Grammar>,
    /// What each sample does at the end of the context: stop (the default; a prompt plus
    /// `max_tokens` beyond it is refused) or stream on past it (`overflow`).
    pub overflow: Overflow,
}

impl Request {
    /// A request for one sample with no stop conditions but end-of-generation tokens.
    pub fn new(prompt_ids: Vec<u32>, sampling: SamplingParams, max_tokens: usize) -> Self {
        Self {
            prompt_ids,
            sampling,
            max_tokens,
            stop_strings: Vec::new(),
            stop_ids: Vec::new(),
            n: 1,
            ignore_eos: false,
            min_tokens: 0,
            collapse: None,
            logit_bias: Vec::new(),
            constraint: None,
            overflow: Overflow::Stop,
        }
    }

    /// Most tokens the request's sequences hold together: the prompt once, shared by the
    /// samples, and each sample's own tokens plus the partial block its fork copies.
    pub fn max_tokens_held(&self) -> usize {
        // Saturating: an absurd `max_tokens` must reach validation, not overflow here.
        let own = self.max_tokens.saturating_add(KV_BLOCK_SIZE);
        let first = self.prompt_ids.len().saturating_add(self.max_tokens);
        let drafts = self.collapse.as_ref().map_or(0, CollapseParams::kv_tokens);
        first
            .saturating_add(self.n.saturating_sub(1).saturating_mul(own))
            .saturating_add(drafts)
    }

    /// Checks everything that does not depend on the model.
    pub fn validate(&self) -> Result<()> {
        self.sampling.validate()?;
        if self.max_tokens == 0 {
            return Err(Error::param("max_tokens", "must be at least 1"));
        }
        if self.n == 0 || self.n > MAX_SAMPLES {
            return Err(Error::param(
                "n",
                format!("{} is not in 1..={MAX_SAMPLES}", self.n),
            ));
        }
        if self.min_tokens > self.max_tokens {
            return Err(Error::param(
                "min_tokens",
                format!(
                    "{} is more than max_tokens ({})",
                    self.min_tokens, self.max_tokens
                ),
            ));
        }
        if let Some(s) = self.stop_strings.iter().find(|s| s.is_empty()) {
            return Err(Error::param("stop", format!("stop string {s:?} is empty")));
        }
        if let Some(&(id, b)) = self
            .logit_bias
            .iter()
            .find(|(_, b)| !(-100.0..=100.0).contains(b))
        {
            return Err(Error::param(
                "logit_bias",
                format!("the bias of token {id} is {b}; biases lie in -100..=100"),
            ));
        }
        if let Some(c) = &self.collapse {
            c.validate(self.sampling.temperature, self.n)?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// End-of-generation token, stop token or stop string.
    Stop,
    /// `max_tokens` reached.
    Length,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
        }
    }
}

/// One generated token and what the model thought of it.
#[derive(Debug, Clone)]
pub struct TokenInfo {
    pub id: u32,
    /// The text this token added (may be empty while a character or stop string is pending).
    pub text: String,
    pub logprob: f32,
    pub entropy: f32,
    pub top: Vec<(u32, f32)>,
}

/// KV tokens that let `reqs` all run at once without preemption. Each request counts at most
/// what it could hold within the model's `context`, so an absurd `max_tokens` reaches the
/// engine's validation (a `TooLarge` error) instead of sizing a cache that cannot be allocated.
pub fn kv_tokens_for(reqs: &[Request], context: usize) -> usize {
    let per = |r: &Request| {
        let drafts = r.collapse.as_ref().map_or(0, CollapseParams::kv_tokens);
        let cap =
            r.n.saturating_mul(context.saturating_add(KV_BLOCK_SIZE))
                .saturating_add(drafts);
        r.max_tokens_held().min(cap).saturating_add(1)
    };
    reqs.iter()
        .fold(0usize, |acc, r| acc.saturating_add(per(r)))
        .max(1)
}

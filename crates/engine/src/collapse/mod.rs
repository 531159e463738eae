//! Collapse decoding (seed 003): hold a block of future positions in superposition, refine them
//! in parallel, and collapse the ones that converged into the past. On a causal model this is
//! Jacobi decoding — the window's fixed point is exactly the greedy continuation — and its
//! practical form, lookahead decoding: guesses come from the Jacobi trajectory (n-grams that
//! the model's own iterations produced), from earlier text, and from the window itself.
//!
//! Every pass runs, per chain, `[last token, guess₁ … guessₘ]` as one sequence of the batch
//! (a chain is the request's sequence itself, or a fork of it when several candidates are
//! verified side by side). Row j's greedy choice is the true next token whenever guesses 1..j
//! were right, so a pass commits the matching guesses plus one token of the model's own: never
//! fewer tokens than a greedy step, and exactly the tokens (and logprobs) of greedy decoding,
//! since a row's logits do not depend on what else is in the batch. The guesses' KV is taken
//! back (`KvCache::truncate`) and losing chains are dropped.
//!
//! This module holds the parameters, what a pass reports and the drafting; the policy that runs
//! it is `policies::collapse`, and `oneshot::collapse` runs one request alone.
//!
//! Under a constraint (`Request::constraint`) every row is masked as plain constrained
//! generation masks it, with the matcher advanced over the chain's guesses before it; the tokens
//! the grammar forces after the committed text (llguidance's fast-forward tokens) are the
//! guesses, so the punctuation and keys of a JSON schema cost no passes of their own.
//!
//! What it does not do: sample. Verification that preserves a sampling distribution is a later
//! step; `temperature > 0` is refused.

pub(crate) mod draft;

use crate::error::{Error, Result};
use serde::Serialize;

/// Most guessed tokens per chain.
pub const MAX_WINDOW: usize = 32;
/// Largest n-gram size.
pub const MAX_NGRAM: usize = 8;
/// Most chains verified in one pass.
pub const MAX_CANDIDATES: usize = 8;

/// Where a chain's guesses come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// The Jacobi window alone: last pass's outputs past the accepted point, refined again.
    Jacobi,
    /// Lookahead: earlier text that ends like the text so far, n-grams from the Jacobi
    /// trajectory keyed by their first token, then the Jacobi window; the rows spent follow the
    /// measured acceptance, so text that guesses badly costs (almost) nothing extra.
    Lookahead,
}

/// How a request collapses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CollapseParams {
    pub mode: Mode,
    /// W: most guessed tokens per chain.
    pub window: usize,
    /// N: size of the n-grams harvested from the trajectory (the key and N − 1 guesses).
    pub ngram: usize,
    /// G: most chains verified per pass (each costs its guesses plus the last token again).
    pub candidates: usize,
    /// Under a constraint, guess the tokens it forces (on by default; off to measure them).
    pub fast_forward: bool,
}

impl Default for CollapseParams {
    fn default() -> Self {
        Self {
            mode: Mode::Lookahead,
            window: 8,
            ngram: 4,
            candidates: 1,
            fast_forward: true,
        }
    }
}

impl CollapseParams {
    /// Jacobi decoding with a window of `window` tokens.
    pub fn jacobi(window: usize) -> Self {
        Self {
            mode: Mode::Jacobi,
            window,
            ..Self::default()
        }
    }

    /// Checks the parameters and that a request of `temperature` and `n` samples can be
    /// collapsed.
    pub fn validate(&self, temperature: f32, n: usize) -> Result<()> {
        let range = |name: &'static str, v: usize, lo: usize, hi: usize| {
            if (lo..=hi).contains(&v) {
                Ok(())
            } else {
                Err(Error::param(name, format!("{v} is not in {lo}..={hi}")))
            }
        };
        range("window", self.window, 1, MAX_WINDOW)?;
        range("ngram", self.ngram, 2, MAX_NGRAM)?;
        range("candidates", self.candidates, 1, MAX_CANDIDATES)?;
        if temperature > 0.0 {
            return Err(Error::param(
                "temperature",
                "collapse (lookahead) decoding is greedy only: use temperature 0",
            ));
        }
        if n != 1 {
            return Err(Error::param(
                "n",
                "collapse (lookahead) decoding makes one sample: use n = 1",
            ));
        }
        Ok(())
    }

    /// KV tokens the guesses may hold beside the committed text: every chain's window, and a
    /// copied block per forked chain.
    pub fn kv_tokens(&self) -> usize {
        let per_chain = self.window + 1 + crate::model::KV_BLOCK_SIZE;
        self.candidates.saturating_mul(per_chain)
    }
}

/// What one pass of a collapse request did (sent before the pass's tokens).
#[derive(Debug, Clone, Serialize)]
pub struct CollapsePass {
    /// Tokens committed by the pass (accepted guesses + the model's own next token).
    pub accepted: usize,
    /// Guesses the winning chain offered.
    pub guessed: usize,
    /// Where the winning chain's guesses came from.
    pub source: Source,
    /// Chains verified in the pass.
    pub chains: usize,
    /// Token rows the request ran in the pass.
    pub rows: usize,
    /// Entropy (nats) of the model's distribution at each position of the winning chain: the
    /// last committed token's row, then one per guess.
    pub entropies: Vec<f32>,
}

/// The origin of a chain's guesses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// Nothing guessed: a plain greedy step.
    None,
    /// Earlier text (prompt or output) that ends like the text so far.
    Context,
    /// An n-gram from the Jacobi trajectory.
    Ngram,
    /// The Jacobi window.
    Jacobi,
    /// Tokens a constraint forces next (JSON punctuation, a schema's keys): guesses that cost
    /// no pass of their own.
    Grammar,
}

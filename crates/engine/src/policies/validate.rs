//! Validation at the engine's edge: a task that is malformed (empty prompt, a token outside the
//! vocabulary, bad parameters) is an `InvalidRequest`/`Param` error, and one that could never
//! run here (beyond the context, or more KV than the whole cache) is `TooLarge`, with the numbers
//! named. Nothing that passes can fail later for these reasons.

use crate::error::{Error, Result};
use crate::generate::Request;
use crate::overflow::{Overflow, Window};
use crate::request::{ExploreRequest, ScoreRequest};

pub(crate) struct Limits {
    pub vocab: usize,
    pub context: usize,
    pub kv_tokens: usize,
    /// The model's largest sliding attention window (0: none).
    pub sliding: usize,
    /// Whether its cached keys can move to other positions (streaming needs it).
    pub can_shift: bool,
}

impl Limits {
    fn prompt(&self, what: &str, ids: &[u32]) -> Result<()> {
        if ids.is_empty() {
            return Err(Error::InvalidRequest(format!("the {what} is empty")));
        }
        if let Some((i, &bad)) = ids
            .iter()
            .enumerate()
            .find(|(_, &t)| t as usize >= self.vocab)
        {
            return Err(Error::InvalidRequest(format!(
                "{what} token {i} has id {bad}, outside the vocabulary of {} tokens",
                self.vocab
            )));
        }
        Ok(())
    }

    fn context(&self, what: &str, prompt: usize, more: usize, more_name: &str) -> Result<()> {
        if prompt.saturating_add(more) > self.context {
            return Err(Error::TooLarge(format!(
                "{what} ({prompt} tokens) + {more_name} ({more}) exceed the model's context of {} tokens",
                self.context
            )));
        }
        Ok(())
    }

    /// The window of a request of `len` tokens at most that streams past the context; `None`
    /// for one that stops. A request that fits the context and the cache never reaches the end
    /// of either: a window that does not suit it (too small for a cache sized to the request,
    /// say) is not held against it.
    fn window(&self, overflow: Overflow, len: usize) -> Result<Option<Window>> {
        let window = self.stream_window(overflow);
        if self.fits(len) && window.is_err() {
            return Ok(None);
        }
        window
    }

    /// Whether `len` tokens fit the context and the cache.
    fn fits(&self, len: usize) -> bool {
        len <= self.context.min(self.kv_tokens)
    }

    fn stream_window(&self, overflow: Overflow) -> Result<Option<Window>> {
        let Overflow::Stream(s) = overflow else {
            return Ok(None);
        };
        if !self.can_shift {
            return Err(Error::param(
                "context_overflow",
                "this model learns absolute positions: its cached tokens cannot move, so it \
                 cannot stream past its context",
            ));
        }
        s.resolve(self.context, self.kv_tokens, self.sliding)
            .map(Some)
    }

    fn kv(&self, need: usize) -> Result<()> {
        if need > self.kv_tokens {
            return Err(Error::TooLarge(format!(
                "the request needs up to {need} tokens of KV cache, more than its capacity of {}",
                self.kv_tokens
            )));
        }
        Ok(())
    }

    /// Checks a generation; returns its window when it streams past the context.
    pub fn generate(&self, r: &Request) -> Result<Option<Window>> {
        r.validate()?;
        self.prompt("prompt", &r.prompt_ids)?;
        let len = r.prompt_ids.len().saturating_add(r.max_tokens);
        let mut window = self.window(r.overflow, len)?;
        if window.is_some() && r.collapse.is_some() {
            // A collapse request that fits never needs to stream (a server may stream by default).
            if self.fits(len) {
                window = None;
            } else {
                return Err(Error::param(
                    "context_overflow",
                    "collapse decoding does not stream past the context",
                ));
            }
        }
        if window.is_none() {
            self.context("prompt", r.prompt_ids.len(), r.max_tokens, "max_tokens")?;
        }
        if let Some(&bad) = r.stop_ids.iter().find(|&&t| t as usize >= self.vocab) {
            return Err(Error::param(
                "stop_ids",
                format!("{bad} is outside the vocabulary of {} tokens", self.vocab),
            ));
        }
        if let Some(&(bad, _)) = r.logit_bias.iter().find(|(t, _)| *t as usize >= self.vocab) {
            return Err(Error::param(
                "logit_bias",
                format!(
                    "token {bad} is outside the vocabulary of {} tokens",
                    self.vocab
                ),
            ));
        }
        // A streaming sample never holds more than its window.
        let held = match window {
            Some(w) => r.max_tokens_held().min(r.n.saturating_mul(w.size)),
            None => r.max_tokens_held(),
        };
        self.kv(held)?;
        Ok(window)
    }

    /// Checks a scoring; returns its window when it streams past the context.
    pub fn score(&self, r: &ScoreRequest) -> Result<Option<Window>> {
        self.prompt("text", &r.ids)?;
        let window = self.window(r.overflow, r.ids.len())?;
        if window.is_none() {
            self.context("text", r.ids.len(), 0, "nothing")?;
        }
        if r.from >= r.ids.len() {
            return Err(Error::param(
                "from",
                format!("{} is not below the text's {} tokens", r.from, r.ids.len()),
            ));
        }
        self.kv(window.map_or(r.ids.len(), |w| w.size.min(r.ids.len())))?;
        Ok(window)
    }

    pub fn explore(&self, r: &ExploreRequest) -> Result<()> {
        let p = &r.params;
        p.validate()?;
        self.prompt("prompt", &r.prompt_ids)?;
        self.context("prompt", r.prompt_ids.len(), p.steps, "steps")?;
        self.kv(r.kv_tokens())
    }
}

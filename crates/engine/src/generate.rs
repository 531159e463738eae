//! Text generation as an engine policy: each sample of a request draws its next token from its
//! logits row (seeded, so a sample's tokens do not depend on what else runs), streams the text as
//! whole UTF-8 and holds back any tail that could still become a stop string. `n > 1` samples
//! of one prompt fork the prompt's KV when its last row is read, instead of recomputing it.
//! `generate_batch` runs many requests to completion on a private `Engine`.

use crate::collapse::CollapseParams;
use crate::engine::policy::{Ctx, Read};
use crate::engine::request::{Event, Seq};
use crate::error::{Error, Result};
use crate::model::KV_BLOCK_SIZE;
use crate::sample::{sample, Choice, Rng, SamplingParams};
use crate::tokenizer::stream::Detokenizer;

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
            c.validate(self)?;
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

/// A finished (or still running) generation.
#[derive(Debug, Clone)]
pub struct Output {
    pub prompt_ids: Vec<u32>,
    pub tokens: Vec<TokenInfo>,
    pub text: String,
    pub finish_reason: Option<FinishReason>,
}

impl Output {
    pub fn new(prompt_ids: Vec<u32>) -> Self {
        Self {
            prompt_ids,
            tokens: Vec::new(),
            text: String::new(),
            finish_reason: None,
        }
    }

    /// Folds one event of sample `index` into this output; false for events of other samples.
    pub fn absorb(&mut self, e: &Event, index: usize) -> bool {
        match e {
            Event::Token { index: i, token } if *i == index => {
                self.text.push_str(&token.text);
                self.tokens.push(token.clone());
            }
            Event::Finished { index: i, reason } if *i == index => {
                self.finish_reason = Some(*reason)
            }
            _ => return false,
        }
        true
    }
}

/// One sample's running state.
struct Sample {
    rng: Rng,
    detok: Detokenizer,
    /// Text held back because it could be the start of a stop string.
    held: String,
    produced: usize,
    finished: bool,
}

pub(crate) struct GeneratePolicy {
    req: Request,
    samples: Vec<Sample>,
    /// Tokens that would stop a sample: masked out while it is below `min_tokens`.
    stoppers: Vec<u32>,
}

impl GeneratePolicy {
    /// The policy for `req`; `eog` are the tokenizer's end-of-generation ids.
    pub fn new(req: Request, eog: &[u32]) -> Self {
        let mut stoppers = req.stop_ids.clone();
        if !req.ignore_eos {
            stoppers.extend_from_slice(eog);
        }
        let samples = (0..req.n as u64)
            .map(|i| Sample {
                rng: Rng::new(req.sampling.seed.wrapping_add(i)),
                detok: Detokenizer::default(),
                held: String::new(),
                produced: 0,
                finished: false,
            })
            .collect();
        Self {
            req,
            samples,
            stoppers,
        }
    }

    /// The sequences a new request starts with: the prompt once.
    pub fn seqs(&self) -> Vec<Seq> {
        vec![Seq::new(self.req.prompt_ids.clone())]
    }

    /// Samples of sequence `s` read from this row: all `n` from the prompt's last row, else one.
    pub fn read(&self, s: usize, seq: &Seq, row: &mut [f32]) -> Vec<(Choice, Rng)> {
        let first = seq.ids.len() == self.req.prompt_ids.len();
        let who: Vec<usize> = if first && s == 0 {
            (0..self.req.n).collect()
        } else {
            vec![s]
        };
        // Every sample read from one row has produced the same number of tokens.
        self.shape_row(self.samples[who[0]].produced, row);
        let original = (who.len() > 1).then(|| row.to_vec());
        who.iter()
            .map(|&i| {
                let mut rng = self.samples[i].rng.clone();
                let choice = match (&original, i) {
                    (Some(orig), 1..) => {
                        sample(&mut orig.clone(), &self.req.sampling, &seq.ids, &mut rng)
                    }
                    _ => sample(row, &self.req.sampling, &seq.ids, &mut rng),
                };
                (choice, rng)
            })
            .collect()
    }

    /// Sample 0's choice from a row that follows `history`, had it produced `produced` tokens
    /// by then (a collapse policy reads rows ahead of what it has produced).
    pub fn choose_at(&self, history: &[u32], produced: usize, row: &mut [f32]) -> Choice {
        self.shape_row(produced, row);
        let mut rng = self.samples[0].rng.clone();
        sample(row, &self.req.sampling, history, &mut rng)
    }

    /// What the request does to a row before sampling, for a sample that has produced
    /// `produced` tokens: its logit biases, and no stopping before `min_tokens`.
    fn shape_row(&self, produced: usize, row: &mut [f32]) {
        for &(t, b) in &self.req.logit_bias {
            row[t as usize] += b;
        }
        if produced < self.req.min_tokens {
            for &t in &self.stoppers {
                row[t as usize] = f32::NEG_INFINITY;
            }
        }
    }

    /// Tokens sample 0 has produced.
    pub fn produced(&self) -> usize {
        self.samples[0].produced
    }

    pub fn request(&self) -> &Request {
        &self.req
    }

    pub fn apply(&mut self, ctx: &mut Ctx, reads: Vec<(usize, Read)>) {
        for (s, read) in reads {
            let Read::Sample(choices) = read else {
                continue;
            };
            // Every fork of the prompt is made before sample 0 extends it and before any
            // sample can finish (a finished sequence's slot would be reused by the next fork).
            let mut picks = Vec::with_capacity(choices.len());
            for (k, (choice, rng)) in choices.into_iter().enumerate() {
                let i = if k == 0 { s } else { ctx.fork(s, choice.id) };
                debug_assert!(k == 0 || i == k, "sample k runs on sequence k");
                picks.push((i, choice, rng));
            }
            ctx.seqs[s].ids.push(picks[0].1.id);
            for (i, choice, rng) in picks {
                self.samples[i].rng = rng;
                self.emit(ctx, i, choice);
            }
        }
    }

    /// Turns sample `i`'s choice into a token event (and a finish, freeing its KV).
    pub fn emit(&mut self, ctx: &mut Ctx, i: usize, choice: Choice) {
        let (req, smp) = (&self.req, &mut self.samples[i]);
        smp.produced += 1;
        let eog =
            (ctx.tok.is_eog(choice.id) && !req.ignore_eos) || req.stop_ids.contains(&choice.id);
        let mut text = if eog {
            String::new()
        } else {
            smp.detok.push(&ctx.tok.token_bytes(choice.id))
        };
        let mut reason = if eog {
            Some(FinishReason::Stop)
        } else {
            (smp.produced >= req.max_tokens).then_some(FinishReason::Length)
        };
        if reason.is_some() {
            text.push_str(&smp.detok.finish());
        }
        let stops: &[String] = if smp.produced > req.min_tokens {
            &req.stop_strings
        } else {
            &[]
        };
        let text = release_text(stops, &mut smp.held, text, &mut reason);
        let token = TokenInfo {
            id: choice.id,
            text,
            logprob: choice.logprob,
            entropy: choice.entropy,
            top: choice.top,
        };
        ctx.send(Event::Token { index: i, token });
        if let Some(reason) = reason {
            smp.finished = true;
            ctx.finish(i);
            ctx.send(Event::Finished { index: i, reason });
        }
    }

    pub fn is_done(&self) -> bool {
        self.samples.iter().all(|s| s.finished)
    }
}

/// Applies stop strings to newly decoded text: returns what may be shown now and keeps in
/// `held` a tail that could still grow into a stop string. A match cuts the text before the
/// stop string and sets `reason` to `Stop`; once `reason` is set, everything held is released.
pub(crate) fn release_text(
    stops: &[String],
    held: &mut String,
    new: String,
    reason: &mut Option<FinishReason>,
) -> String {
    if stops.is_empty() {
        return new;
    }
    let mut pending = std::mem::take(held) + &new;
    if let Some(at) = stops.iter().filter_map(|s| pending.find(s.as_str())).min() {
        pending.truncate(at);
        *reason = Some(FinishReason::Stop);
        return pending;
    }
    if reason.is_some() {
        return pending;
    }
    // Hold the longest suffix that is a prefix of some stop string.
    let hold = stops
        .iter()
        .flat_map(|s| {
            (1..s.len())
                .filter(|&n| s.is_char_boundary(n))
                .map(move |n| &s[..n])
        })
        .filter(|p| pending.ends_with(p))
        .map(|p| p.len())
        .max()
        .unwrap_or(0);
    *held = pending.split_off(pending.len() - hold);
    pending
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `pieces` through `release_text` the way the engine does, finishing after the last.
    fn run(stops: &[&str], pieces: &[&str]) -> (Vec<String>, Option<FinishReason>) {
        let stops: Vec<String> = stops.iter().map(|s| s.to_string()).collect();
        let (mut held, mut reason, mut shown) = (String::new(), None, Vec::new());
        for (i, p) in pieces.iter().enumerate() {
            if i + 1 == pieces.len() && reason.is_none() {
                reason = Some(FinishReason::Length);
            }
            shown.push(release_text(&stops, &mut held, p.to_string(), &mut reason));
            if reason == Some(FinishReason::Stop) {
                break;
            }
        }
        (shown, reason)
    }

    #[test]
    fn a_stop_string_split_over_tokens_is_held_then_cut() {
        let (shown, reason) = run(&["END"], &["Hello E", "N", "D and more"]);
        assert_eq!(shown, ["Hello ", "", ""]);
        assert_eq!(reason, Some(FinishReason::Stop));
    }

    #[test]
    fn a_false_start_is_released_when_it_stops_matching() {
        let (shown, reason) = run(&["END"], &["we E", "N", "joy", " it"]);
        assert_eq!(shown.concat(), "we ENjoy it");
        assert_eq!(shown[..2], ["we ", ""]);
        assert_eq!(reason, Some(FinishReason::Length));
    }

    #[test]
    fn the_earliest_of_several_stops_wins_and_multibyte_prefixes_are_held_whole() {
        let (shown, reason) = run(&["zz", "é!"], &["caf", "é", "! zz"]);
        assert_eq!(shown, ["caf", "", ""]);
        assert_eq!(reason, Some(FinishReason::Stop));
        let (shown, _) = run(&["zz", "é!"], &["a zz b é! c"]);
        assert_eq!(shown, ["a "]);
    }

    #[test]
    fn held_text_is_released_at_the_end() {
        let (shown, reason) = run(&["STOP"], &["x ST", "O"]);
        assert_eq!(shown.concat(), "x STO");
        assert_eq!(reason, Some(FinishReason::Length));
    }
}

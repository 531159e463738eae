//! Text generation over the batched forward: `Generator` owns the model's KV cache and a set of
//! running sequences and advances all of them by one `step()` (schedule → forward → sample →
//! update); `generate_batch` runs many prompts to completion as one batch. The serving scheduler
//! (admission, chunked prefill, preemption) will drive the same step.

use crate::batch::Batch;
use crate::error::{Error, Result};
use crate::kv::{KvCache, SeqId};
use crate::model::Model;
use crate::sample::{sample, Choice, Rng, SamplingParams};
use crate::tokenizer::stream::Detokenizer;
use crate::tokenizer::Tokenizer;
use std::sync::OnceLock;

/// One generation request.
#[derive(Debug, Clone)]
pub struct Request {
    pub prompt_ids: Vec<u32>,
    pub sampling: SamplingParams,
    pub max_tokens: usize,
    pub stop_strings: Vec<String>,
    pub stop_ids: Vec<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// End-of-generation token, stop token or stop string.
    Stop,
    /// `max_tokens` reached (or the context is full).
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

struct Running {
    seq: SeqId,
    req: Request,
    /// Prompt plus generated ids.
    ids: Vec<u32>,
    /// Tokens of `ids` already in the KV cache.
    cached: usize,
    rng: Rng,
    detok: Detokenizer,
    /// Text held back because it could be the start of a stop string.
    held: String,
    out: Output,
}

/// Drives a set of sequences through the model, one batched step at a time.
pub struct Generator<'m> {
    model: &'m mut Model,
    tok: &'m Tokenizer,
    kv: KvCache,
    running: Vec<Running>,
    batch: Batch,
    logits: Vec<f32>,
}

impl<'m> Generator<'m> {
    /// A generator whose KV cache holds `capacity_tokens` tokens over at most `max_seqs` sequences.
    pub fn new(
        model: &'m mut Model,
        tok: &'m Tokenizer,
        capacity_tokens: usize,
        max_seqs: usize,
    ) -> Self {
        let kv = KvCache::new(&model.kv_config(capacity_tokens, max_seqs));
        Self {
            model,
            tok,
            kv,
            running: Vec::new(),
            batch: Batch::default(),
            logits: Vec::new(),
        }
    }

    /// Validates and admits a request; returns its index among the outputs.
    pub fn add(&mut self, req: Request) -> Result<usize> {
        req.sampling.validate()?;
        if req.prompt_ids.is_empty() {
            return Err(Error::Request("the prompt is empty".into()));
        }
        if let Some(&bad) = req
            .prompt_ids
            .iter()
            .find(|&&t| t as usize >= self.model.config.vocab)
        {
            return Err(Error::Request(format!(
                "prompt token id {bad} is outside the vocabulary"
            )));
        }
        let seq = self.kv.new_seq();
        let rng = Rng::new(req.sampling.seed);
        let out = Output {
            prompt_ids: req.prompt_ids.clone(),
            tokens: Vec::new(),
            text: String::new(),
            finish_reason: None,
        };
        self.running.push(Running {
            seq,
            ids: req.prompt_ids.clone(),
            req,
            cached: 0,
            rng,
            detok: Detokenizer::default(),
            held: String::new(),
            out,
        });
        Ok(self.running.len() - 1)
    }

    /// True while some sequence has not finished.
    pub fn busy(&self) -> bool {
        self.running.iter().any(|r| r.out.finish_reason.is_none())
    }

    /// One engine step: every unfinished sequence feeds its uncached tokens as one batch.
    /// Returns (output index, new token) for each token produced.
    pub fn step(&mut self) -> Result<Vec<(usize, TokenInfo)>> {
        self.schedule();
        if self.batch.is_empty() {
            return Ok(Vec::new());
        }
        self.model
            .forward(&self.batch, &mut self.kv, &mut self.logits)?;
        Ok(self.sample_and_update())
    }

    fn schedule(&mut self) {
        self.batch.clear();
        for r in self
            .running
            .iter_mut()
            .filter(|r| r.out.finish_reason.is_none())
        {
            let new = &r.ids[r.cached..];
            if self.kv.reserve(r.seq, new.len()).is_err() {
                // No room: this sequence ends here (the serving scheduler preempts instead).
                r.out.finish_reason = Some(FinishReason::Length);
                continue;
            }
            self.batch.push_seq(r.seq, r.cached, new, true);
            r.cached = r.ids.len();
        }
    }

    fn sample_and_update(&mut self) -> Vec<(usize, TokenInfo)> {
        let vocab = self.model.config.vocab;
        // The running requests that own this step's logit rows, in row order.
        let active: Vec<usize> = (0..self.running.len())
            .filter(|&i| {
                let r = &self.running[i];
                r.out.finish_reason.is_none() && self.batch.seqs.contains(&r.seq)
            })
            .collect();
        // Sampling reads a whole vocabulary row several times, so rows are sampled in parallel;
        // each uses its own seeded stream, so a choice does not depend on the thread that made it.
        let picks: Vec<OnceLock<(Choice, Rng)>> = active.iter().map(|_| OnceLock::new()).collect();
        let running = &self.running;
        let rows = &mut self.logits[..active.len() * vocab];
        self.model.pool().for_rows(rows, vocab, &|row, logits| {
            let r = &running[active[row]];
            let mut rng = r.rng.clone();
            let choice = sample(logits, &r.req.sampling, &r.ids, &mut rng);
            let _ = picks[row].set((choice, rng));
        });
        let mut events = Vec::new();
        for (&i, pick) in active.iter().zip(picks) {
            let (choice, rng) = pick.into_inner().expect("every row was sampled");
            let r = &mut self.running[i];
            r.rng = rng;
            r.ids.push(choice.id);
            let eog = self.tok.is_eog(choice.id) || r.req.stop_ids.contains(&choice.id);
            let mut text = if eog {
                String::new()
            } else {
                r.detok.push(&self.tok.token_bytes(choice.id))
            };
            if eog {
                r.out.finish_reason = Some(FinishReason::Stop);
            } else if r.out.tokens.len() + 1 >= r.req.max_tokens {
                r.out.finish_reason = Some(FinishReason::Length);
            }
            if r.out.finish_reason.is_some() {
                text.push_str(&r.detok.finish());
            }
            text = release_text(r, text);
            let info = TokenInfo {
                id: choice.id,
                text,
                logprob: choice.logprob,
                entropy: choice.entropy,
                top: choice.top,
            };
            r.out.text.push_str(&info.text);
            r.out.tokens.push(info.clone());
            events.push((i, info));
            if r.out.finish_reason.is_some() {
                self.kv.free(r.seq);
            }
        }
        events
    }

    /// The outputs in admission order.
    pub fn into_outputs(self) -> Vec<Output> {
        self.running.into_iter().map(|r| r.out).collect()
    }
}

/// Applies stop strings to newly decoded text: returns what may be shown now, holding back a
/// tail that could still grow into a stop string; on a match, ends the sequence.
fn release_text(r: &mut Running, new: String) -> String {
    if r.req.stop_strings.is_empty() {
        return new;
    }
    let mut pending = std::mem::take(&mut r.held) + &new;
    if let Some(at) = r
        .req
        .stop_strings
        .iter()
        .filter_map(|s| pending.find(s.as_str()))
        .min()
    {
        pending.truncate(at);
        r.out.finish_reason = Some(FinishReason::Stop);
        return pending;
    }
    if r.out.finish_reason.is_some() {
        return pending;
    }
    // Hold the longest suffix that is a prefix of some stop string.
    let hold = r
        .req
        .stop_strings
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
    r.held = pending.split_off(pending.len() - hold);
    pending
}

/// Runs every request to completion as one batch; outputs in input order.
pub fn generate_batch(
    model: &mut Model,
    tok: &Tokenizer,
    reqs: Vec<Request>,
) -> Result<Vec<Output>> {
    let capacity: usize = reqs
        .iter()
        .map(|r| r.prompt_ids.len() + r.max_tokens + 1)
        .sum();
    let n = reqs.len();
    let mut g = Generator::new(model, tok, capacity, n.max(1));
    for r in reqs {
        g.add(r)?;
    }
    while g.busy() {
        g.step()?;
    }
    Ok(g.into_outputs())
}

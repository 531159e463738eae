//! Text generation as a policy: each sample of a request draws its next token from its logits
//! row (seeded, so a sample's tokens do not depend on what else runs), streams the text as whole
//! UTF-8 and holds back any tail that could still become a stop string. `n > 1` samples of one
//! prompt fork the prompt's KV when its last row is read, instead of recomputing it.
//!
//! Under a constraint (`Request::constraint`) each sample has its own grammar state and draws
//! only tokens it allows (`sample::sample_with`: a greedy row skips the mask when its best
//! token is allowed). A sampled row always takes its mask: `prepare` computes it beside the
//! forward pass when a core is free of the compute threads (the grammar's state is known before
//! the logits are), else `read` computes it on the compute threads, row by row.

use crate::constraint::{Grammar, Mask, Shared};
use crate::error::Error;
use crate::generate::{FinishReason, Request, TokenInfo};
use crate::request::policy::{Ctx, Policy};
use crate::request::{Event, Seq};
use crate::sample::{sample, sample_with, Choice, Rng};
use crate::tokenizer::stream::Detokenizer;
use std::sync::{Mutex, PoisonError};

/// One sample's running state.
struct Sample {
    rng: Rng,
    detok: Detokenizer,
    /// Text held back because it could be the start of a stop string.
    held: String,
    produced: usize,
    finished: bool,
    /// The constraint's state after this sample's tokens (locked only by this sample's row).
    grammar: Option<Mutex<Grammar>>,
    /// The mask of that state, when `prepare` computed it ahead of the row.
    premask: Mutex<Option<Mask>>,
}

/// A sample's draw from one row: its choice (or why the constraint could not give one) and
/// its random stream after the draw.
pub(crate) type Draw = (Result<Choice, Error>, Rng);

pub(crate) struct GeneratePolicy {
    req: Request,
    samples: Vec<Sample>,
    /// Tokens that would stop a sample: masked out while it is below `min_tokens`.
    stoppers: Vec<u32>,
    /// The request failed (its constraint broke); its error was sent.
    failed: bool,
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
                grammar: req.constraint.clone().map(Mutex::new),
                premask: Mutex::new(None),
            })
            .collect();
        Self {
            req,
            samples,
            stoppers,
            failed: false,
        }
    }

    /// The sequences a new request starts with: the prompt once.
    pub fn seqs(&self) -> Vec<Seq> {
        vec![Seq::new(self.req.prompt_ids.clone())]
    }

    /// Sample 0's choice from a row that follows `history`, had it produced `produced` tokens
    /// by then (a collapse policy reads rows ahead of what it has produced), under `grammar`'s
    /// state at that row when the request is constrained.
    pub fn choose_at(
        &self,
        history: &[u32],
        produced: usize,
        row: &mut [f32],
        grammar: Option<&mut Grammar>,
    ) -> Result<Choice, Error> {
        self.shape_row(produced, row);
        let mut rng = self.samples[0].rng.clone();
        match grammar {
            None => Ok(sample(row, &self.req.sampling, history, &mut rng)),
            Some(g) => sample_with(row, &self.req.sampling, history, &mut rng, Some(g)),
        }
    }

    /// Sample 0's constraint in its present state (after the tokens it emitted).
    pub fn grammar(&self) -> Option<Grammar> {
        let g = self.samples[0].grammar.as_ref()?;
        Some(g.lock().unwrap_or_else(PoisonError::into_inner).clone())
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

    /// Sample `i`'s draw from `row` (already shaped) after `history`: under a constraint, of a
    /// token its grammar allows.
    /// `shared`: the mask of sample `i`'s state when it was computed already.
    fn draw(
        &self,
        i: usize,
        row: &mut [f32],
        history: &[u32],
        mut rng: Rng,
        shared: Option<&Mask>,
    ) -> Draw {
        let p = &self.req.sampling;
        let premask = self.samples[i]
            .premask
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let shared = shared.or(premask.as_ref());
        let choice = match (&self.samples[i].grammar, shared) {
            (None, _) => sample_with(row, p, history, &mut rng, None),
            (Some(_), Some(m)) => sample_with(row, p, history, &mut rng, Some(&mut Shared(m))),
            (Some(g), None) => {
                let mut g = g.lock().unwrap_or_else(PoisonError::into_inner);
                sample_with(row, p, history, &mut rng, Some(&mut *g))
            }
        };
        (choice, rng)
    }

    /// Ends every sample: the request failed with `e` (sent as its last event).
    pub fn fail(&mut self, ctx: &mut Ctx, e: Error) {
        for (i, smp) in self.samples.iter_mut().enumerate() {
            if !smp.finished {
                smp.finished = true;
                if i < ctx.seqs.len() && !ctx.seqs[i].done {
                    ctx.finish(i);
                }
            }
        }
        self.failed = true;
        ctx.send(Event::Error(e));
    }

    /// Turns sample `i`'s choice into a token event (and a finish, freeing its KV).
    pub fn emit(&mut self, ctx: &mut Ctx, i: usize, choice: Choice) {
        if self.failed {
            return;
        }
        let mut complete = false;
        let smp = &mut self.samples[i];
        if let Some(g) = &mut smp.grammar {
            let g = g.get_mut().unwrap_or_else(PoisonError::into_inner);
            let consumed = g.consume(choice.id);
            complete = g.is_stopped();
            // A mask made ahead belongs to the state before this token.
            *smp.premask
                .get_mut()
                .unwrap_or_else(PoisonError::into_inner) = None;
            if let Err(e) = consumed {
                return self.fail(ctx, e);
            }
        }
        let (req, smp) = (&self.req, &mut self.samples[i]);
        smp.produced += 1;
        let eog =
            (ctx.tok.is_eog(choice.id) && !req.ignore_eos) || req.stop_ids.contains(&choice.id);
        let mut text = if eog {
            String::new()
        } else {
            smp.detok.push(&ctx.tok.token_bytes(choice.id))
        };
        let mut reason = if eog || complete {
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
}

impl Policy for GeneratePolicy {
    /// One choice per sample the row feeds (several when `n > 1` samples share a prompt).
    type Read = Vec<Draw>;

    /// Samples of sequence `s` read from this row: all `n` from the prompt's last row, else one.
    fn read(&self, s: usize, seq: &Seq, _: usize, row: &mut [f32]) -> Vec<Draw> {
        let first = seq.history_len() == self.req.prompt_ids.len();
        let who: Vec<usize> = if first && s == 0 {
            (0..self.req.n).collect()
        } else {
            vec![s]
        };
        // Every sample read from one row has produced the same number of tokens.
        self.shape_row(self.samples[who[0]].produced, row);
        let original = (who.len() > 1).then(|| row.to_vec());
        // The samples of one prompt start in one state: one mask serves them all.
        let shared = match (&original, &self.samples[0].grammar) {
            (Some(_), Some(g)) => {
                let pre = self.samples[0].premask.lock();
                match pre.unwrap_or_else(PoisonError::into_inner).take() {
                    Some(m) => Some(m),
                    None => g.lock().unwrap_or_else(PoisonError::into_inner).mask().ok(),
                }
            }
            _ => None,
        };
        who.iter()
            .map(|&i| {
                let rng = self.samples[i].rng.clone();
                let (ids, m) = (&seq.ids, shared.as_ref());
                match (&original, i) {
                    (Some(orig), 1..) => self.draw(i, &mut orig.clone(), ids, rng, m),
                    _ => self.draw(i, row, ids, rng, m),
                }
            })
            .collect()
    }

    /// A constrained request that samples: every row will take its mask.
    fn prepares(&self) -> bool {
        self.req.constraint.is_some() && self.req.sampling.temperature > 0.0 && !self.failed
    }

    /// The mask of the sample that reads sequence `s`'s next row (sample 0's for a prompt's
    /// `n` samples), computed ahead of the row.
    fn prepare(&self, s: usize, _: &Seq) {
        let Some(smp) = self.samples.get(s).filter(|smp| !smp.finished) else {
            return;
        };
        let Some(g) = &smp.grammar else { return };
        let mask = g.lock().unwrap_or_else(PoisonError::into_inner).mask().ok();
        *smp.premask.lock().unwrap_or_else(PoisonError::into_inner) = mask;
    }

    fn apply(&mut self, ctx: &mut Ctx, reads: Vec<(usize, Self::Read)>) {
        for (s, draws) in reads {
            if self.failed {
                return;
            }
            let mut choices = Vec::with_capacity(draws.len());
            for (choice, rng) in draws {
                match choice {
                    Ok(c) => choices.push((c, rng)),
                    Err(e) => return self.fail(ctx, e),
                }
            }
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

    fn is_done(&self) -> bool {
        self.failed || self.samples.iter().all(|s| s.finished)
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

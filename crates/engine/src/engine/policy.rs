//! A request's policy: which logits it wants from the forward pass and what it does with them.
//! `read` turns one logit row into a small `Read` (a sampled token, a log-likelihood, a leaf's
//! candidates); it runs on the compute threads, many rows at once, and must not depend on which
//! thread runs it. `apply` then, on the engine thread, turns a request's reads into tokens,
//! forks, frees and events through `Ctx`. The engine does not care which policy it runs.

use super::request::{Event, EventSender, Seq};
use crate::collapse::policy::CollapsePolicy;
use crate::generate::GeneratePolicy;
use crate::kv::KvCache;
use crate::sample::{Choice, Rng};
use crate::superposition::search::{ExplorePolicy, LeafRead};
use crate::tokenizer::Tokenizer;
use std::ops::Range;

pub(crate) enum Policy {
    Generate(Box<GeneratePolicy>),
    Score(ScorePolicy),
    Explore(Box<ExplorePolicy>),
    Collapse(Box<CollapsePolicy>),
}

/// What a policy took from one logit row.
pub(crate) enum Read {
    /// One choice per sample the row feeds (several when `n > 1` samples share a prompt).
    Sample(Vec<(Choice, Rng)>),
    /// Negative log-likelihood of the next token.
    Nll(f32),
    Leaf(Box<LeafRead>),
    /// One greedy choice (collapse decoding).
    Choice(Choice),
}

/// What `apply` may touch: its request's sequences, the KV cache (forks and frees), the
/// tokenizer, and its event stream.
pub(crate) struct Ctx<'a> {
    pub seqs: &'a mut Vec<Seq>,
    pub kv: &'a mut KvCache,
    pub tok: &'a Tokenizer,
    pub events: &'a EventSender,
    /// Token rows this request ran in the step.
    pub tokens_run: usize,
}

impl Ctx<'_> {
    pub fn send(&self, e: Event) {
        let _ = self.events.send(e);
    }

    /// A new sequence sharing all of sequence `i`'s KV (copy-on-write), extended by `token`.
    pub fn fork(&mut self, i: usize, token: u32) -> usize {
        let src = &self.seqs[i];
        let kv = src.kv.map(|h| self.kv.fork(h));
        let mut ids = src.ids.clone();
        ids.push(token);
        let cached = if kv.is_some() { src.cached } else { 0 };
        self.place(Seq {
            kv,
            ids,
            cached,
            done: false,
            draft: 0,
        })
    }

    /// A new sequence of `ids` with private KV, computed from its first token.
    pub fn spawn(&mut self, ids: Vec<u32>) -> usize {
        let kv = Some(self.kv.new_private_seq());
        self.place(Seq {
            kv,
            ids,
            cached: 0,
            done: false,
            draft: 0,
        })
    }

    /// Puts a new sequence in the first finished slot (a long search finishes many) or at the end.
    fn place(&mut self, seq: Seq) -> usize {
        match self.seqs.iter().position(|s| s.done) {
            Some(i) => {
                self.seqs[i] = seq;
                i
            }
            None => {
                self.seqs.push(seq);
                self.seqs.len() - 1
            }
        }
    }

    /// Ends sequence `i` and frees its KV at once.
    pub fn finish(&mut self, i: usize) {
        let s = &mut self.seqs[i];
        if let Some(h) = s.kv.take() {
            self.kv.free(h);
        }
        s.done = true;
        s.ids = Vec::new();
    }
}

impl Policy {
    /// Positions of `seq` whose logits the policy wants.
    pub fn logit_positions(&self, seq: &Seq) -> Range<usize> {
        let n = seq.ids.len();
        match self {
            Policy::Score(p) => p.from.min(n.saturating_sub(1))..n.saturating_sub(1),
            Policy::Generate(_) | Policy::Explore(_) => n - 1..n,
            Policy::Collapse(p) => p.logit_positions(seq),
        }
    }

    /// Tokens the KV cache must be able to take back from each of the request's sequences.
    pub fn slack(&self) -> usize {
        match self {
            Policy::Collapse(p) => p.slack(),
            _ => 0,
        }
    }

    /// Reads the logits row of position `pos` of sequence `s` (penalties may modify the row).
    pub fn read(&self, s: usize, seq: &Seq, pos: usize, row: &mut [f32]) -> Read {
        match self {
            Policy::Generate(p) => Read::Sample(p.read(s, seq, row)),
            Policy::Score(_) => {
                let (lse, _) = crate::sample::log_norm_and_entropy(row);
                Read::Nll(lse - row[seq.ids[pos + 1] as usize])
            }
            Policy::Explore(p) => Read::Leaf(Box::new(p.read(s, row))),
            Policy::Collapse(p) => Read::Choice(p.read(seq, pos, row)),
        }
    }

    /// Consumes this step's reads of the request, in batch order as (sequence, read).
    pub fn apply(&mut self, ctx: &mut Ctx, reads: Vec<(usize, Read)>) {
        match self {
            Policy::Generate(p) => p.apply(ctx, reads),
            Policy::Score(p) => p.apply(ctx, reads),
            Policy::Explore(p) => p.apply(ctx, reads),
            Policy::Collapse(p) => p.apply(ctx, reads),
        }
    }

    /// True when the request has sent its last event.
    pub fn is_done(&self) -> bool {
        match self {
            Policy::Generate(p) => p.is_done(),
            Policy::Score(p) => p.done,
            Policy::Explore(p) => p.is_done(),
            Policy::Collapse(p) => p.is_done(),
        }
    }
}

/// Perplexity scoring: one sequence, no generation; the log-likelihoods are sent when its last
/// token has run.
pub(crate) struct ScorePolicy {
    pub from: usize,
    pub nll: Vec<f32>,
    pub done: bool,
}

impl ScorePolicy {
    fn apply(&mut self, ctx: &mut Ctx, reads: Vec<(usize, Read)>) {
        for (_, r) in reads {
            if let Read::Nll(v) = r {
                self.nll.push(v);
            }
        }
        if ctx.seqs[0].pending() == 0 {
            ctx.finish(0);
            ctx.send(Event::Scored(std::mem::take(&mut self.nll)));
            self.done = true;
        }
    }
}

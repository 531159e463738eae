//! Perplexity scoring as a policy: one sequence, no generation; the negative log-likelihood of
//! each token after `from` is taken from the row before it, and all are sent when the last
//! token has run.

use crate::request::policy::{Ctx, Policy};
use crate::request::{Event, Seq};
use std::ops::Range;

pub(crate) struct ScorePolicy {
    from: usize,
    nll: Vec<f32>,
    done: bool,
}

impl ScorePolicy {
    pub fn new(from: usize) -> Self {
        Self {
            from,
            nll: Vec::new(),
            done: false,
        }
    }
}

impl Policy for ScorePolicy {
    type Read = f32;

    /// From the first prediction not yet scored: a request that was preempted recomputes its
    /// text but scores each token once.
    fn logit_positions(&self, seq: &Seq) -> Range<usize> {
        let last = seq.ids.len().saturating_sub(1);
        seq.index_of(self.from + self.nll.len()).min(last)..last
    }

    fn read(&self, _: usize, seq: &Seq, pos: usize, row: &mut [f32]) -> f32 {
        let (lse, _) = crate::sample::log_norm_and_entropy(row);
        lse - row[seq.ids[pos + 1] as usize]
    }

    fn apply(&mut self, ctx: &mut Ctx, reads: Vec<(usize, f32)>) {
        self.nll.extend(reads.into_iter().map(|(_, v)| v));
        if ctx.seqs[0].pending() == 0 {
            ctx.finish(0);
            ctx.send(Event::Scored(std::mem::take(&mut self.nll)));
            self.done = true;
        }
    }

    fn is_done(&self) -> bool {
        self.done
    }
}

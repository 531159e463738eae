//! The contract between the engine loop and a request's policy (generation, scoring,
//! exploration, collapse decoding live in `policies`; the engine names none of them). A policy
//! says which logit rows it wants (`logit_positions`); `read` turns one row into a small value of
//! its own (`Policy::Read`: a sampled token, a log-likelihood, a leaf's candidates) on the
//! compute threads, many rows at once, and must not depend on which thread runs it; `apply` then
//! turns the request's reads into tokens, forks, frees and events through `Ctx`, on the engine
//! thread. `DynPolicy` is the same contract with the reads boxed, so requests of every kind sit
//! side by side in the scheduler.

use super::{Event, EventSender, Seq};
use crate::kv::{KvCache, SeqId};
use crate::tokenizer::Tokenizer;
use std::any::Any;
use std::ops::Range;

pub(crate) trait Policy: Send + Sync {
    /// What the policy takes from one logit row.
    type Read: Send + Sync + 'static;

    /// Positions of `seq` whose logits the policy wants: by default its last one.
    fn logit_positions(&self, seq: &Seq) -> Range<usize> {
        let n = seq.ids.len();
        n.saturating_sub(1)..n
    }

    /// Tokens the KV cache must be able to take back from each of the request's sequences.
    fn slack(&self) -> usize {
        0
    }

    /// Reads the logits row of position `pos` of sequence `s` (the policy may modify the row).
    fn read(&self, s: usize, seq: &Seq, pos: usize, row: &mut [f32]) -> Self::Read;

    /// Whether `prepare` has work this step.
    fn prepares(&self) -> bool {
        false
    }

    /// Work for sequence `s`'s next read that needs no logits (a constraint's mask), run beside
    /// the forward pass on a spare core when there is one.
    fn prepare(&self, _s: usize, _seq: &Seq) {}

    /// Consumes this step's reads of the request, in batch order as (sequence, read).
    fn apply(&mut self, ctx: &mut Ctx, reads: Vec<(usize, Self::Read)>);

    /// True when the request has sent its last event.
    fn is_done(&self) -> bool;
}

/// A read of some policy, boxed; only the policy that made it opens it.
pub(crate) struct AnyRead(Box<dyn Any + Send + Sync>);

/// `Policy` with its reads boxed: what the scheduler stores for every request.
pub(crate) trait DynPolicy: Send + Sync {
    fn logit_positions(&self, seq: &Seq) -> Range<usize>;
    fn slack(&self) -> usize;
    fn read(&self, s: usize, seq: &Seq, pos: usize, row: &mut [f32]) -> AnyRead;
    fn prepares(&self) -> bool;
    fn prepare(&self, s: usize, seq: &Seq);
    fn apply(&mut self, ctx: &mut Ctx, reads: Vec<(usize, AnyRead)>);
    fn is_done(&self) -> bool;
}

impl<P: Policy> DynPolicy for P {
    fn logit_positions(&self, seq: &Seq) -> Range<usize> {
        Policy::logit_positions(self, seq)
    }
    fn slack(&self) -> usize {
        Policy::slack(self)
    }
    fn read(&self, s: usize, seq: &Seq, pos: usize, row: &mut [f32]) -> AnyRead {
        AnyRead(Box::new(Policy::read(self, s, seq, pos, row)))
    }
    fn prepares(&self) -> bool {
        Policy::prepares(self)
    }
    fn prepare(&self, s: usize, seq: &Seq) {
        Policy::prepare(self, s, seq)
    }
    fn apply(&mut self, ctx: &mut Ctx, reads: Vec<(usize, AnyRead)>) {
        // The engine hands a request back only the reads its own policy made.
        let reads = reads
            .into_iter()
            .map(|(s, r)| (s, *r.0.downcast::<P::Read>().expect("a policy's own read")))
            .collect();
        Policy::apply(self, ctx, reads)
    }
    fn is_done(&self) -> bool {
        Policy::is_done(self)
    }
}

/// What `apply` may touch: its request's sequences, their KV through the verbs below (fork,
/// spawn, truncate, finish), the tokenizer, and its event stream.
pub(crate) struct Ctx<'a> {
    pub seqs: &'a mut Vec<Seq>,
    kv: &'a mut KvCache,
    pub tok: &'a Tokenizer,
    events: &'a EventSender,
    /// Token rows this request ran in the step.
    pub tokens_run: usize,
}

impl<'a> Ctx<'a> {
    pub(crate) fn new(
        seqs: &'a mut Vec<Seq>,
        kv: &'a mut KvCache,
        tok: &'a Tokenizer,
        events: &'a EventSender,
        tokens_run: usize,
    ) -> Self {
        Self {
            seqs,
            kv,
            tok,
            events,
            tokens_run,
        }
    }

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
        let (dropped, gap) = (src.dropped, src.gap);
        self.place(Seq {
            kv,
            ids,
            cached,
            done: false,
            draft: 0,
            dropped,
            gap,
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
            dropped: 0,
            gap: 0,
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

    /// Takes sequence `i` back to its first `keep` tokens, KV included (guesses that lost).
    pub fn truncate(&mut self, i: usize, keep: usize) {
        let seq = &mut self.seqs[i];
        seq.ids.truncate(keep);
        seq.draft = 0;
        seq.cached = seq.cached.min(keep);
        if let Some(h) = seq.kv {
            self.kv.truncate(h, keep);
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

    /// KV blocks the request's live sequences hold: (all, those held by one sequence only).
    pub fn blocks_held(&self) -> (usize, usize) {
        let held: Vec<SeqId> = self.seqs.iter().filter_map(|s| s.kv).collect();
        self.kv.blocks_of(&held)
    }
}

//! The scheduler: which requests run in the next forward pass, how many tokens each, and which
//! logit rows belong to whom. It hands the engine a `SchedulerOutput`, the one contract between
//! scheduling and the model, so nobody has to rediscover ownership from the batch.
//!
//! Policy, each step:
//! 1. **Decode first.** Every running request's sequences that need exactly one token (decode)
//!    are scheduled, in admission order.
//! 2. **Then prompt chunks.** Running sequences with more to compute (a prompt being prefilled,
//!    or a preempted request recomputing) get chunks of what budget is left, in admission order:
//!    a long prompt is spread over steps and never stalls the decodes of others (chunked prefill).
//! 3. **Then admission.** Waiting requests are admitted in queue order while the token budget,
//!    the sequence cap and the KV cache allow (free blocks for the whole remaining prompt, after
//!    prefix hits, plus 1 % to spare); the head of the queue is never skipped (no starvation).
//!    An admitted sequence starts on its longest cached prefix. The queue is ordered by
//!    `priority` (lower first, vLLM's meaning; all 0 by default), then round-robin over groups
//!    (the engine requests of one HTTP request form a group: a 256-prompt request takes turns
//!    with a 1-prompt request that came after it instead of going all before it; a preempted
//!    request keeps its turn), then preempted requests first, then arrival. With one request
//!    per group and equal priorities that is first come, first served, preempted ones first.
//!    When the sequence cap holds back a request whose group has nothing running, the group
//!    running the most requests gives one up (`make_room_for_a_new_group`), so a small request
//!    beside a huge one starts within a step.
//!
//! 4. **Then drafts, with what is left.** A collapse request's guessed future tokens (`Seq::draft`)
//!    extend its sequence's run only while the step's token and logit-row budgets have room after
//!    all of the above, and only into free KV blocks (a draft never preempts anyone). So a busy
//!    server spends nothing on speculation, and an idle one spends its spare rows on it.
//!
//! The token budget (`max_batch_tokens`) bounds the rows of a step; `max_logit_rows` bounds the
//! rows whose logits are kept (a vocabulary row is a megabyte for large vocabularies).
//!
//! **Preemption.** When a running request needs a KV block and none is free (after evicting idle
//! prefix-cache blocks), the running request of the lowest priority (the highest `priority`
//! value; among equals the most recently admitted) that has nothing scheduled this step, and is
//! not more important than the needy one, gives up all its blocks and goes back to the front of the waiting queue, keeping
//! its generated tokens; on readmission it recomputes them (a prefill, usually helped by the
//! prefix cache). If no such request exists the needy request itself steps back, unless it runs
//! alone: then it can never fit and fails with `TooLarge` (the engine refuses such requests up
//! front, so this is a last guard against livelock, not a normal path).
//!
//! **Streaming past the window.** A request that streams (`overflow`) runs chunks of at most a
//! quarter of its window; before a chunk would pass the window, the sequence forgets a run of
//! whole blocks after its sinks (`KvCache::drop_middle`), its kept keys are turned back by the
//! run's length (the engine's `shift`, i.e. the model's RoPE), and the tokens leave its `ids`,
//! so a position is always its index there. A preempted streaming request recomputes exactly
//! what it kept.
//!
//! **Ownership.** The scheduler owns the requests (`Req`: sequences and policy) and the KV
//! cache, so every change to a block table happens in its two calls of a step: `schedule`
//! (admission, reservation, preemption) before the forward pass, and `update` after it
//! (committing the rows the pass wrote, then each policy's forks, truncations and frees through
//! `Ctx`, then freeing the requests that ended). The forward pass only writes K/V rows into
//! slots `schedule` reserved; the engine reads the policies' logit rows and handles events.
//!
//! What it does not do: sample, detokenize or touch the model.

mod queues;
#[cfg(test)]
mod tests;

use crate::batch::Batch;
use crate::kv::{KvCache, SeqId};
use crate::request::policy::{AnyRead, Ctx};
use crate::request::{Req, RequestId};
use crate::tokenizer::Tokenizer;
use queues::Queues;
use std::collections::HashMap;
use std::ops::Range;

/// Turns the kept keys of a sequence back after it forgot the middle of its history:
/// `(cache, sequence, first moved position, positions moved back)` (the model's
/// `Runner::shift_keys`; the scheduler knows no RoPE).
pub(crate) type ShiftKeys<'a> = &'a dyn Fn(&mut KvCache, SeqId, usize, usize);

/// Limits of one step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchedulerConfig {
    /// Token rows per forward pass.
    pub max_batch_tokens: usize,
    /// Running sequences before admission stops (a request that runs alone is always admitted).
    pub max_seqs: usize,
    /// Logit rows per forward pass.
    pub max_logit_rows: usize,
    /// Sequences waiting for admission (a request counts its samples or paths) before new
    /// requests are turned away (`Error::QueueFull`).
    pub max_waiting: usize,
    /// Start sequences on cached prefixes. Off when every row must be computed (calibration
    /// observes the forward passes themselves).
    pub prefix_cache: bool,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            max_batch_tokens: 512,
            max_seqs: 64,
            max_logit_rows: 256,
            max_waiting: 1024,
            prefix_cache: true,
        }
    }
}

/// One sequence's share of a step: `len` tokens from position `start`, of which the positions in
/// `logits` want their logits, in rows `first_row..` of the step's logits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scheduled {
    pub req: RequestId,
    /// The sequence's index inside its request.
    pub seq: usize,
    pub kv: SeqId,
    pub start: usize,
    pub len: usize,
    pub logits: Range<usize>,
    pub first_row: usize,
}

/// What runs in one step, and what changed in the queues.
#[derive(Debug, Default)]
pub struct SchedulerOutput {
    /// In batch order.
    pub runs: Vec<Scheduled>,
    /// Requests that gave up their KV this step (they wait to be readmitted).
    pub preempted: Vec<RequestId>,
    /// Requests that can never fit (running alone, still out of KV): the engine fails them.
    pub refused: Vec<RequestId>,
    pub tokens: usize,
    pub logit_rows: usize,
}

/// Counters over the scheduler's life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SchedulerStats {
    pub steps: u64,
    pub preemptions: u64,
    pub admitted: u64,
}

/// How a request is queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Admission {
    /// Lower runs first and is preempted last (vLLM's `priority`); 0 by default.
    pub priority: i64,
    /// The requests of one group (one HTTP request's prompts) take turns with other groups;
    /// `None`: a group of its own.
    pub group: Option<u64>,
}

/// The scheduler: the one owner of the requests and the KV cache (see the module header).
pub struct Scheduler {
    /// Every request the engine holds, waiting or running.
    reqs: HashMap<RequestId, Req>,
    kv: KvCache,
    q: Queues,
}

impl Scheduler {
    pub(crate) fn new(cfg: SchedulerConfig, kv: KvCache) -> Self {
        Self {
            reqs: HashMap::new(),
            kv,
            q: Queues::new(cfg),
        }
    }

    pub fn cfg(&self) -> &SchedulerConfig {
        &self.q.cfg
    }

    pub fn stats(&self) -> SchedulerStats {
        self.q.stats
    }

    /// Takes the requests and counters out, letting the KV cache go.
    pub(crate) fn into_parts(self) -> (HashMap<RequestId, Req>, SchedulerStats) {
        (self.reqs, self.q.stats)
    }

    /// Carries counters over from a scheduler this one replaces.
    pub(crate) fn set_stats(&mut self, stats: SchedulerStats) {
        self.q.stats = stats;
    }

    pub fn kv(&self) -> &KvCache {
        &self.kv
    }

    /// The requests (for work beside the forward pass), and the cache for the pass to write
    /// the scheduled rows into (their slots were reserved by `schedule`; `update` commits them).
    pub(crate) fn forward_parts(&mut self) -> (&HashMap<RequestId, Req>, &mut KvCache) {
        (&self.reqs, &mut self.kv)
    }

    /// Drops every idle prefix-cache block.
    pub fn clear_prefix_cache(&mut self) {
        self.kv.clear_prefix_cache();
    }

    pub(crate) fn get(&self, id: RequestId) -> Option<&Req> {
        self.reqs.get(&id)
    }

    pub(crate) fn reqs(&self) -> &HashMap<RequestId, Req> {
        &self.reqs
    }

    /// Requests held, waiting or running.
    pub fn len(&self) -> usize {
        self.reqs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.reqs.is_empty()
    }

    /// Queues a new request that will run at most `weight` sequences (its samples or paths).
    pub(crate) fn add(&mut self, req: Req, adm: Admission, weight: usize) {
        self.q.add(req.id, adm, weight);
        self.reqs.insert(req.id, req);
    }

    /// Ends a request (finished, failed or aborted): frees its KV and hands back its record.
    pub(crate) fn remove(&mut self, id: RequestId) -> Option<Req> {
        let mut req = self.reqs.remove(&id)?;
        req.release(&mut self.kv);
        self.q.remove(id);
        Some(req)
    }

    /// Requests waiting for admission.
    pub fn waiting(&self) -> usize {
        self.q.waiting.len()
    }

    /// Sequences the waiting requests will run (what `max_waiting` bounds).
    pub fn waiting_weight(&self) -> usize {
        self.q.waiting_weight()
    }

    /// How `id` was queued (`None` for an unknown id).
    pub fn admission(&self, id: RequestId) -> Option<Admission> {
        self.q.admission(id)
    }

    /// The waiting queue, front first.
    pub fn waiting_ids(&self) -> impl Iterator<Item = RequestId> + '_ {
        self.q.waiting.iter().copied()
    }

    pub fn running(&self) -> &[RequestId] {
        &self.q.running
    }

    /// Plans the next step: reserves KV for every scheduled token (preempting when needed)
    /// and advances each scheduled sequence's `cached` count. A streaming sequence that would
    /// pass its window forgets the middle of its history first, and `shift` turns its kept keys.
    pub(crate) fn schedule(&mut self, shift: ShiftKeys) -> SchedulerOutput {
        self.q.schedule(&mut self.reqs, &mut self.kv, shift)
    }

    /// After the forward pass ran `batch` (the rows `plan` scheduled): commits its rows to the
    /// KV cache, then hands each request that ran its `reads` (one per logit row, in batch
    /// order) through its policy, which may fork, truncate and free its sequences' KV. Returns
    /// the requests that ran, in batch order, and those whose policy is done (still held:
    /// the caller ends them).
    pub(crate) fn update(
        &mut self,
        plan: &SchedulerOutput,
        batch: &Batch,
        reads: Vec<AnyRead>,
        tok: &Tokenizer,
    ) -> (Vec<RequestId>, Vec<RequestId>) {
        batch.commit_to(&mut self.kv);
        // Per request that ran: (id, token rows run, its reads in batch order).
        type Share = (RequestId, usize, Vec<(usize, AnyRead)>);
        let mut per_req: Vec<Share> = Vec::new();
        let mut reads = reads.into_iter();
        for r in &plan.runs {
            let mine: Vec<(usize, AnyRead)> = r
                .logits
                .clone()
                .map(|_| (r.seq, reads.next().expect("one read per row")))
                .collect();
            match per_req.iter_mut().find(|p| p.0 == r.req) {
                Some(p) => {
                    p.1 += r.len;
                    p.2.extend(mine);
                }
                None => per_req.push((r.req, r.len, mine)),
            }
        }
        let ran = per_req.iter().map(|p| p.0).collect();
        let mut done = Vec::new();
        for (id, tokens_run, reads) in per_req {
            let Some(req) = self.reqs.get_mut(&id) else {
                continue;
            };
            let mut ctx = Ctx::new(&mut req.seqs, &mut self.kv, tok, &req.events, tokens_run);
            req.policy.apply(&mut ctx, reads);
            if req.policy.is_done() {
                done.push(id);
            }
        }
        (ran, done)
    }
}

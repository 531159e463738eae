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
//! **Ownership.** The scheduler owns the requests (`Req`: sequences and policy) and the KV
//! cache, so every change to a block table happens in its two calls of a step: `schedule`
//! (admission, reservation, preemption) before the forward pass, and `update` after it
//! (committing the rows the pass wrote, then each policy's forks, truncations and frees through
//! `Ctx`, then freeing the requests that ended). The forward pass only writes K/V rows into
//! slots `schedule` reserved; the engine reads the policies' logit rows and handles events.
//!
//! What it does not do: sample, detokenize or touch the model.

#[cfg(test)]
mod tests;

use crate::batch::Batch;
use crate::kv::{KvCache, SeqId};
use crate::request::policy::{AnyRead, Ctx};
use crate::request::{Req, RequestId};
use crate::tokenizer::Tokenizer;
use std::collections::{HashMap, HashSet, VecDeque};
use std::ops::Range;

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
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            max_batch_tokens: 512,
            max_seqs: 64,
            max_logit_rows: 256,
            max_waiting: 1024,
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

/// What the scheduler knows of a request besides its sequences.
#[derive(Debug, Clone, Copy)]
struct Entry {
    priority: i64,
    group: u64,
    arrival: u64,
    /// Sequences it will run at most (its samples or paths): what it counts for in the queue.
    weight: usize,
    preempted: bool,
}

/// The scheduler: the one owner of the requests and the KV cache (see the module header).
pub struct Scheduler {
    /// Every request the engine holds, waiting or running.
    reqs: HashMap<RequestId, Req>,
    kv: KvCache,
    q: Queues,
}

/// The order of things: who waits, who runs, by which turn.
struct Queues {
    cfg: SchedulerConfig,
    /// In admission order once `order_waiting` ran (see the module header).
    waiting: VecDeque<RequestId>,
    /// By priority, then admission order.
    running: Vec<RequestId>,
    entries: HashMap<RequestId, Entry>,
    arrivals: u64,
    /// Per group with requests left: how many it has and how many were admitted.
    groups: HashMap<u64, Group>,
    stats: SchedulerStats,
}

#[derive(Debug, Default)]
struct Group {
    members: usize,
    admitted: usize,
}

/// Per-step bookkeeping while building a `SchedulerOutput`.
struct Step {
    out: SchedulerOutput,
    budget: usize,
    rows_left: usize,
    busy: HashSet<RequestId>,
}

impl Scheduler {
    pub(crate) fn new(cfg: SchedulerConfig, kv: KvCache) -> Self {
        Self {
            reqs: HashMap::new(),
            kv,
            q: Queues {
                cfg,
                waiting: VecDeque::new(),
                running: Vec::new(),
                entries: HashMap::new(),
                arrivals: 0,
                groups: HashMap::new(),
                stats: SchedulerStats::default(),
            },
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

    /// The cache for the forward pass to write the scheduled rows into (their slots were
    /// reserved by `schedule`; `update` commits them).
    pub(crate) fn kv_for_forward(&mut self) -> &mut KvCache {
        &mut self.kv
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
    /// and advances each scheduled sequence's `cached` count.
    pub(crate) fn schedule(&mut self) -> SchedulerOutput {
        self.q.schedule(&mut self.reqs, &mut self.kv)
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

impl Queues {
    /// Queues a new request that will run at most `weight` sequences.
    fn add(&mut self, id: RequestId, adm: Admission, weight: usize) {
        self.arrivals += 1;
        let e = Entry {
            priority: adm.priority,
            group: adm.group.unwrap_or(u64::MAX - id.0),
            arrival: self.arrivals,
            weight,
            preempted: false,
        };
        self.entries.insert(id, e);
        self.groups.entry(e.group).or_default().members += 1;
        self.waiting.push_back(id);
    }

    fn remove(&mut self, id: RequestId) {
        self.waiting.retain(|&r| r != id);
        self.running.retain(|&r| r != id);
        if let Some(e) = self.entries.remove(&id) {
            if let Some(g) = self.groups.get_mut(&e.group) {
                g.members -= 1;
                if g.members == 0 {
                    self.groups.remove(&e.group);
                }
            }
        }
    }

    fn waiting_weight(&self) -> usize {
        self.waiting.iter().map(|id| self.entries[id].weight).sum()
    }

    fn admission(&self, id: RequestId) -> Option<Admission> {
        self.entries.get(&id).map(|e| Admission {
            priority: e.priority,
            group: Some(e.group),
        })
    }

    /// Sorts the waiting queue into admission order (see the module header).
    fn order_waiting(&mut self) {
        if self.waiting.len() < 2 {
            return;
        }
        let mut by_arrival: Vec<RequestId> = self.waiting.iter().copied().collect();
        by_arrival.sort_by_key(|id| self.entries[id].arrival);
        // A group's turns start after those it has had: the group admitted least goes next.
        let mut turns: HashMap<u64, usize> = HashMap::new();
        let mut rank: HashMap<RequestId, usize> = HashMap::new();
        for id in by_arrival {
            let g = self.entries[&id].group;
            let t = turns
                .entry(g)
                .or_insert_with(|| self.groups.get(&g).map_or(0, |g| g.admitted));
            rank.insert(id, *t);
            *t += 1;
        }
        let entries = &self.entries;
        self.waiting.make_contiguous().sort_by_key(|id| {
            let e = &entries[id];
            (e.priority, rank[id], !e.preempted, e.arrival)
        });
    }

    fn schedule(
        &mut self,
        reqs: &mut HashMap<RequestId, Req>,
        kv: &mut KvCache,
    ) -> SchedulerOutput {
        self.stats.steps += 1;
        let mut st = Step {
            out: SchedulerOutput::default(),
            budget: self.cfg.max_batch_tokens,
            rows_left: self.cfg.max_logit_rows,
            busy: HashSet::new(),
        };
        self.make_room_for_a_new_group(reqs, kv, &mut st);
        for decode in [true, false] {
            let mut i = 0;
            while i < self.running.len() {
                let id = self.running[i];
                if self.run_request(id, decode, reqs, kv, &mut st) {
                    i += 1;
                }
            }
        }
        self.admit(reqs, kv, &mut st);
        extend_drafts(reqs, kv, &mut st);
        st.out.tokens = self.cfg.max_batch_tokens - st.budget;
        st.out.logit_rows = self.cfg.max_logit_rows - st.rows_left;
        st.out
    }

    /// Fair share of the running slots: when the next request to admit belongs to a group with
    /// nothing running and the sequence cap holds it back, the group running the most requests
    /// (at least two, none more important than the newcomer) gives up its most recent one, which
    /// waits to be readmitted at its group's turn. So a big request (hundreds of prompts) does not
    /// keep a one-prompt request waiting until its prompts finish.
    fn make_room_for_a_new_group(
        &mut self,
        reqs: &mut HashMap<RequestId, Req>,
        kv: &mut KvCache,
        st: &mut Step,
    ) {
        self.order_waiting();
        let Some(&head) = self.waiting.front() else {
            return;
        };
        let newcomer = self.entries[&head];
        if self
            .running
            .iter()
            .any(|r| self.entries[r].group == newcomer.group)
        {
            return;
        }
        let need = reqs[&head].live().max(newcomer.weight);
        loop {
            let running_seqs: usize = self.running.iter().map(|r| reqs[r].live()).sum();
            if self.running.is_empty() || running_seqs + need <= self.cfg.max_seqs {
                return;
            }
            let mut per_group: HashMap<u64, usize> = HashMap::new();
            for r in &self.running {
                *per_group.entry(self.entries[r].group).or_insert(0) += 1;
            }
            let Some((&group, &count)) = per_group.iter().max_by_key(|(g, c)| (**c, **g)) else {
                return;
            };
            let victim = self.running.iter().rev().copied().find(|r| {
                let e = &self.entries[r];
                e.group == group && e.priority >= newcomer.priority
            });
            match victim {
                Some(v) if count >= 2 => self.preempt(v, reqs, kv, st),
                _ => return,
            }
        }
    }

    /// Schedules the decode (or the chunked) sequences of running request `id`. False when `id`
    /// left the running list (preempted or refused).
    fn run_request(
        &mut self,
        id: RequestId,
        decode: bool,
        reqs: &mut HashMap<RequestId, Req>,
        kv: &mut KvCache,
        st: &mut Step,
    ) -> bool {
        let n_seqs = reqs[&id].seqs.len();
        for s in 0..n_seqs {
            let seq = &reqs[&id].seqs[s];
            let pending = seq.pending();
            if pending == 0 || (pending == 1 && seq.cached > 0) != decode {
                continue;
            }
            let Some(n) = chunk(&reqs[&id], s, st) else {
                continue;
            };
            let handle = seq.kv.expect("running sequences hold KV");
            loop {
                if kv.reserve(handle, n).is_ok() {
                    break;
                }
                match self.victim(id, st) {
                    Some(v) => self.preempt(v, reqs, kv, st),
                    None if st.busy.contains(&id) => return true, // keep what it has
                    None if self.running.len() == 1 => {
                        self.drop_request(id, reqs, kv);
                        st.out.refused.push(id);
                        return false;
                    }
                    None => {
                        self.preempt(id, reqs, kv, st);
                        return false;
                    }
                }
            }
            push_run(reqs.get_mut(&id).expect("running"), s, n, st);
        }
        true
    }

    /// The running request to preempt for `needy`: of the lowest priority, among equals the
    /// most recently admitted, with nothing scheduled, and not more important than `needy`.
    fn victim(&self, needy: RequestId, st: &Step) -> Option<RequestId> {
        let priority = |r: &RequestId| self.entries[r].priority;
        self.running
            .iter()
            .filter(|&&r| r != needy && !st.busy.contains(&r))
            .max_by_key(|r| (priority(r), self.entries[r].arrival))
            .filter(|r| priority(r) >= priority(&needy))
            .copied()
    }

    fn preempt(
        &mut self,
        id: RequestId,
        reqs: &mut HashMap<RequestId, Req>,
        kv: &mut KvCache,
        st: &mut Step,
    ) {
        self.drop_request(id, reqs, kv);
        // `order_waiting` puts it back before the requests of its priority that never ran.
        let e = self.entries.get_mut(&id).expect("running request is known");
        e.preempted = true;
        // Its turn is given back: it waits at the place it had in its group's turns.
        if let Some(g) = self.groups.get_mut(&e.group) {
            g.admitted = g.admitted.saturating_sub(1);
        }
        self.waiting.push_back(id);
        st.out.preempted.push(id);
        self.stats.preemptions += 1;
    }

    /// Takes `id` out of the running list and frees its KV (generated tokens are kept).
    fn drop_request(
        &mut self,
        id: RequestId,
        reqs: &mut HashMap<RequestId, Req>,
        kv: &mut KvCache,
    ) {
        self.running.retain(|&r| r != id);
        reqs.get_mut(&id).expect("known request").release(kv);
    }

    /// Admits waiting requests in order while they fit.
    fn admit(&mut self, reqs: &mut HashMap<RequestId, Req>, kv: &mut KvCache, st: &mut Step) {
        // `make_room_for_a_new_group` ordered the queue; only this step's preemptions join it since.
        if !st.out.preempted.is_empty() {
            self.order_waiting();
        }
        while let Some(&id) = self.waiting.front() {
            if st.budget == 0 || st.out.preempted.contains(&id) {
                return;
            }
            let running_seqs: usize = self.running.iter().map(|r| reqs[r].live()).sum();
            let req = reqs.get_mut(&id).expect("waiting request is known");
            // A request that has not run yet counts the samples or paths it will fork into.
            let e = self.entries[&id];
            let weight = if e.preempted {
                req.live()
            } else {
                req.live().max(e.weight)
            };
            if !self.running.is_empty() && running_seqs + weight > self.cfg.max_seqs {
                return;
            }
            for seq in req.seqs.iter_mut().filter(|s| !s.done) {
                // A draft is never looked up: its tokens are not known to be right.
                let (handle, hit) = if req.cacheable {
                    kv.new_seq_cached(&seq.ids[..seq.ids.len() - seq.draft])
                } else {
                    (kv.new_private_seq(), 0)
                };
                kv.set_slack(handle, req.policy.slack());
                seq.kv = Some(handle);
                seq.cached = hit;
            }
            // Its whole prompt must fit beside what runs, with a little to spare: admitting
            // what cannot finish its prefill only buys a preemption later. Alone, it always goes
            // (it was checked to fit an empty cache).
            let need: usize = req
                .seqs
                .iter()
                .filter_map(|s| Some(kv.blocks_for(s.kv?, s.pending())))
                .sum();
            let spare = kv.capacity_tokens() / kv.block_size() / 100;
            if !self.running.is_empty() && need + spare > kv.available_blocks() {
                req.release(kv);
                return;
            }
            for s in 0..req.seqs.len() {
                if req.seqs[s].done {
                    continue;
                }
                let Some(n) = chunk(req, s, st) else { continue };
                if kv
                    .reserve(req.seqs[s].kv.expect("just admitted"), n)
                    .is_ok()
                {
                    push_run(req, s, n, st);
                }
            }
            self.waiting.pop_front();
            let e = self.entries[&id];
            self.groups.entry(e.group).or_default().admitted += 1;
            // Running requests stay ordered by priority, then admission.
            let at = self
                .running
                .iter()
                .position(|r| self.entries[r].priority > e.priority)
                .unwrap_or(self.running.len());
            self.running.insert(at, id);
            self.stats.admitted += 1;
        }
    }
}

/// How many tokens sequence `s` of `req` may run this step (`None`: none), within the token
/// budget and the logit-row budget.
fn chunk(req: &Req, s: usize, st: &Step) -> Option<usize> {
    let seq = &req.seqs[s];
    let mut n = seq.pending().min(st.budget);
    let want = req.policy.logit_positions(seq);
    let start = seq.cached;
    let rows = |n: usize| {
        (start + n)
            .min(want.end)
            .saturating_sub(start.max(want.start))
    };
    if rows(n) > st.rows_left {
        n = start.max(want.start) + st.rows_left - start;
    }
    (n > 0).then_some(n)
}

/// Records that `n` tokens of sequence `s` run this step.
fn push_run(req: &mut Req, s: usize, n: usize, st: &mut Step) {
    let seq = &mut req.seqs[s];
    let want = req.policy.logit_positions(seq);
    let start = seq.cached;
    let logits = start.max(want.start)..(start + n).min(want.end).max(start.max(want.start));
    let first_row = st.out.logit_rows_used();
    st.rows_left -= logits.len();
    st.budget -= n;
    st.busy.insert(req.id);
    st.out.runs.push(Scheduled {
        req: req.id,
        seq: s,
        kv: seq.kv.expect("admitted"),
        start,
        len: n,
        logits,
        first_row,
    });
    seq.cached += n;
}

/// Lets each scheduled sequence that reached its draft run as much of it as the step's budgets
/// and the free KV blocks allow. Runs grow in place, so every sequence's rows stay contiguous.
fn extend_drafts(reqs: &mut HashMap<RequestId, Req>, kv: &mut KvCache, st: &mut Step) {
    for i in 0..st.out.runs.len() {
        let run = &st.out.runs[i];
        let req = reqs.get_mut(&run.req).expect("scheduled request");
        let seq = &req.seqs[run.seq];
        // Only a sequence with nothing else left to run this step has reached its draft.
        let extra = seq.draft_pending().min(st.budget).min(st.rows_left);
        if extra == 0 || seq.pending() > 0 {
            continue;
        }
        if kv.reserve(run.kv, run.len + extra).is_err() {
            continue;
        }
        let want = req.policy.logit_positions(seq);
        let run = &mut st.out.runs[i];
        run.len += extra;
        let before = run.logits.len();
        run.logits = run.start.max(want.start)..(run.start + run.len).min(want.end);
        st.rows_left -= run.logits.len() - before;
        st.budget -= extra;
        req.seqs[run.seq].cached += extra;
    }
    let mut row = 0;
    for run in &mut st.out.runs {
        run.first_row = row;
        row += run.logits.len();
    }
}

impl SchedulerOutput {
    fn logit_rows_used(&self) -> usize {
        self.runs.last().map_or(0, |r| r.first_row + r.logits.len())
    }
}

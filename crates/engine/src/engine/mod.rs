//! The engine: one loop for every kind of work. `Engine::step()` is the design's diagram —
//! schedule → forward → each request's policy reads its logit rows → update — over requests
//! of any kind (generation, scoring, exploration) sharing one forward pass and one paged KV
//! cache. `submit` validates a task at the edge and returns its id and event stream; dropping
//! the stream or `abort(id)` cancels the request and frees its blocks before the next forward.
//! `handle` runs an engine on its own thread behind a cloneable `EngineHandle`.
//!
//! It deliberately knows nothing of HTTP or the command line, and nothing of how a policy
//! samples, scores or branches: `policies::build` makes a task's policy, and the engine holds
//! it as a `DynPolicy`. Requests and the KV cache belong to the scheduler; the engine moves
//! between its calls (`schedule`, then the forward pass, the policies' reads, `update`).

pub mod handle;

use crate::batch::Batch;
use crate::error::{Error, Result};
use crate::kernels::pool::ThreadPool;
use crate::kv::{KvCache, KvConfig, PrefixStats, SeqId};
use crate::model::Model;
use crate::policies::{self, Limits};
use crate::request::policy::AnyRead;
pub use crate::request::{Event, Events, ExploreRequest, RequestId, ScoreRequest, Task};
use crate::request::{EventSender, Req};
use crate::scheduler::{Admission, Scheduler, SchedulerConfig, SchedulerOutput, SchedulerStats};
use crate::tokenizer::Tokenizer;
use std::ops::Deref;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

/// What the engine needs of a model: the batched forward and a few facts. `Model` is the real
/// one; tests use small fakes.
pub trait Runner {
    fn vocab(&self) -> usize;
    fn context_length(&self) -> usize;
    fn kv_config(&self, capacity_tokens: usize) -> KvConfig;
    /// Runs `batch` (KV reserved): writes its rows' K/V into their slots (the scheduler commits
    /// them) and fills `[logit rows, vocab]`.
    fn forward(&mut self, batch: &Batch, kv: &mut KvCache, logits: &mut Vec<f32>) -> Result<()>;
    /// Threads for work beside the forward pass (reading many logit rows).
    fn pool(&self) -> &ThreadPool;
    /// Whether cached keys can move to other positions (`shift_keys`), as streaming past the
    /// context needs.
    fn can_shift(&self) -> bool;
    /// Turns the cached keys of `seq` at positions `from..` back by `back` positions (after
    /// `KvCache::drop_middle`).
    fn shift_keys(&self, kv: &mut KvCache, seq: SeqId, from: usize, back: usize);
}

impl Runner for Model {
    fn vocab(&self) -> usize {
        self.config.vocab
    }
    fn context_length(&self) -> usize {
        self.config.context_length
    }
    fn kv_config(&self, capacity_tokens: usize) -> KvConfig {
        Model::kv_config(self, capacity_tokens)
    }
    fn forward(&mut self, batch: &Batch, kv: &mut KvCache, logits: &mut Vec<f32>) -> Result<()> {
        Model::forward(self, batch, kv, logits)
    }
    fn pool(&self) -> &ThreadPool {
        Model::pool(self)
    }
    fn can_shift(&self) -> bool {
        Model::can_shift(self)
    }
    fn shift_keys(&self, kv: &mut KvCache, seq: SeqId, from: usize, back: usize) {
        Model::shift_keys(self, kv, seq, from, back)
    }
}

impl<R: Runner + ?Sized> Runner for &mut R {
    fn vocab(&self) -> usize {
        (**self).vocab()
    }
    fn context_length(&self) -> usize {
        (**self).context_length()
    }
    fn kv_config(&self, capacity_tokens: usize) -> KvConfig {
        (**self).kv_config(capacity_tokens)
    }
    fn forward(&mut self, batch: &Batch, kv: &mut KvCache, logits: &mut Vec<f32>) -> Result<()> {
        (**self).forward(batch, kv, logits)
    }
    fn pool(&self) -> &ThreadPool {
        (**self).pool()
    }
    fn can_shift(&self) -> bool {
        (**self).can_shift()
    }
    fn shift_keys(&self, kv: &mut KvCache, seq: SeqId, from: usize, back: usize) {
        (**self).shift_keys(kv, seq, from, back)
    }
}

/// How big the engine is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineConfig {
    /// KV cache capacity in tokens (per layer group).
    pub kv_tokens: usize,
    pub scheduler: SchedulerConfig,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            kv_tokens: 16_384,
            scheduler: SchedulerConfig::default(),
        }
    }
}

impl EngineConfig {
    /// Defaults, with room to run `seqs` sequences side by side.
    pub fn for_seqs(seqs: usize) -> Self {
        let d = SchedulerConfig::default();
        Self {
            scheduler: SchedulerConfig {
                max_seqs: d.max_seqs.max(seqs),
                max_logit_rows: d.max_logit_rows.max(seqs),
                ..d
            },
            ..Self::default()
        }
    }
}

/// What one step did.
#[derive(Debug, Default)]
pub struct StepReport {
    pub tokens: usize,
    pub logit_rows: usize,
    /// The requests that had rows in this step's forward pass, in batch order.
    pub ran: Vec<RequestId>,
    pub preempted: Vec<RequestId>,
    /// Requests that completed, failed or were cancelled in this step.
    pub finished: Vec<RequestId>,
}

/// Counters over the engine's life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineStats {
    pub scheduler: SchedulerStats,
    pub prefix: PrefixStats,
    pub forward_tokens: u64,
    pub peak_used_blocks: usize,
    pub capacity_blocks: usize,
    pub used_blocks: usize,
    pub running: usize,
    pub waiting: usize,
    /// Requests cancelled because their event stream was dropped.
    pub cancelled: u64,
    /// Times the engine was rebuilt after a fault (`recover`).
    pub restarts: u64,
}

pub struct Engine<M: Runner, T: Deref<Target = Tokenizer>> {
    model: M,
    tok: T,
    /// Owns the requests and the KV cache.
    scheduler: Scheduler,
    next_id: Arc<AtomicU64>,
    accepting: bool,
    batch: Batch,
    logits: Vec<f32>,
    stats: EngineStats,
    cfg: EngineConfig,
    /// Steps at which to panic, and submissions (counted from 1) at which to panic (test builds
    /// only; see `inject_faults`).
    #[cfg(feature = "fault-injection")]
    faults: Vec<u64>,
    #[cfg(feature = "fault-injection")]
    submit_faults: (u64, Vec<u64>),
}

impl<M: Runner, T: Deref<Target = Tokenizer>> Engine<M, T> {
    pub fn new(model: M, tok: T, cfg: EngineConfig) -> Self {
        let kv = KvCache::new(&model.kv_config(cfg.kv_tokens));
        let stats = EngineStats {
            capacity_blocks: kv.capacity_blocks(),
            ..Default::default()
        };
        Self {
            model,
            tok,
            scheduler: Scheduler::new(cfg.scheduler, kv),
            next_id: Arc::new(AtomicU64::new(1)),
            accepting: true,
            batch: Batch::default(),
            logits: Vec::new(),
            stats,
            cfg,
            #[cfg(feature = "fault-injection")]
            faults: Vec::new(),
            #[cfg(feature = "fault-injection")]
            submit_faults: (0, Vec::new()),
        }
    }

    /// Makes the engine panic while it takes the submissions numbered `nth` (counted from 1):
    /// after validation, before the request is queued.
    #[cfg(feature = "fault-injection")]
    pub fn inject_submit_faults(&mut self, nth: &[u64]) {
        self.submit_faults.1.extend_from_slice(nth);
    }

    /// Makes the engine panic inside the steps numbered `steps` (counted from 1 over its
    /// life), after scheduling and before the forward pass: the failure boundary's tests use it.
    #[cfg(feature = "fault-injection")]
    pub fn inject_faults(&mut self, steps: &[u64]) {
        self.faults.extend_from_slice(steps);
    }

    /// Rebuilds the engine's mutable state after a panic left it unknown (`cause` says what
    /// happened): a new, empty KV cache and scheduler over the same weights, which nothing
    /// writes. Requests that had been admitted (they held KV, or ran) end with
    /// `Error::Internal`; requests still waiting with no KV (never admitted, or preempted) keep
    /// their place in the queue and run again, recomputing what they had. Returns the failed ids.
    pub fn recover(&mut self, cause: &str) -> Vec<RequestId> {
        let order: Vec<(RequestId, Admission)> = self
            .scheduler
            .waiting_ids()
            .filter_map(|id| Some((id, self.scheduler.admission(id)?)))
            .collect();
        let waiting: std::collections::HashSet<RequestId> = order.iter().map(|o| o.0).collect();
        // The old cache goes before the new one is taken: never both in memory at once.
        let empty = KvCache::new(&self.model.kv_config(0));
        let old = std::mem::replace(
            &mut self.scheduler,
            Scheduler::new(self.cfg.scheduler, empty),
        );
        let (mut reqs, stats) = old.into_parts();
        let kv = KvCache::new(&self.model.kv_config(self.cfg.kv_tokens));
        self.scheduler = Scheduler::new(self.cfg.scheduler, kv);
        self.scheduler.set_stats(stats);
        let mut failed: Vec<RequestId> = reqs
            .values()
            .filter(|r| !waiting.contains(&r.id) || r.seqs.iter().any(|s| s.kv.is_some()))
            .map(|r| r.id)
            .collect();
        failed.sort();
        for &id in &failed {
            if let Some(req) = reqs.remove(&id) {
                req.send(Event::Error(Error::Internal(format!(
                    "the engine failed while running request {id} ({cause}); it was rebuilt, \
                     retry the request"
                ))));
            }
        }
        for (id, adm) in order {
            if let Some(mut req) = reqs.remove(&id) {
                req.seqs.iter_mut().for_each(|s| s.cached = 0);
                let weight = req.live();
                self.scheduler.add(req, adm, weight);
            }
        }
        self.stats.restarts += 1;
        failed
    }

    pub fn model(&self) -> &M {
        &self.model
    }

    /// For the engine's own tests (a fake model's switches).
    #[cfg(test)]
    pub(crate) fn model_mut(&mut self) -> &mut M {
        &mut self.model
    }

    /// Idle prefix-cache blocks (kept for reuse, evicted when blocks run out).
    pub fn kv_idle_blocks(&self) -> usize {
        self.scheduler.kv().idle_blocks()
    }

    /// Validates `task` and queues it; returns its id and event stream.
    pub fn submit(&mut self, task: Task) -> Result<(RequestId, Events)> {
        self.submit_with(task, Admission::default())
    }

    /// As `submit`, queued with a priority and a group (see `scheduler`).
    pub fn submit_with(&mut self, task: Task, adm: Admission) -> Result<(RequestId, Events)> {
        let id = RequestId(self.next_id.fetch_add(1, Ordering::Relaxed));
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        self.submit_as(id, task, adm, tx)?;
        Ok((id, rx))
    }

    /// Queues `task` under an id issued by `ids()` (the engine thread's path). A request counts
    /// in the waiting queue as the sequences it will run (`n` samples, an exploration's width):
    /// one that could never fit the queue is refused as too large, one that does not fit now
    /// gets `QueueFull`.
    pub(crate) fn submit_as(
        &mut self,
        id: RequestId,
        task: Task,
        adm: Admission,
        tx: EventSender,
    ) -> Result<()> {
        if !self.accepting {
            return Err(Error::ShuttingDown);
        }
        if self.scheduler.get(id).is_some() {
            return Err(Error::Internal(format!("request id {id} issued twice")));
        }
        let weight = task.sequences();
        let limits = Limits {
            vocab: self.model.vocab(),
            context: self.model.context_length(),
            kv_tokens: self.scheduler.kv().capacity_tokens(),
            sliding: self.scheduler.kv().widest_window(),
            can_shift: self.model.can_shift(),
        };
        let built = policies::build(task, &self.tok, &limits)?;
        #[cfg(feature = "fault-injection")]
        {
            self.submit_faults.0 += 1;
            let n = self.submit_faults.0;
            if self.submit_faults.1.contains(&n) {
                panic!("injected fault at submission {n}");
            }
        }
        let max_waiting = self.scheduler.cfg().max_waiting;
        if weight > max_waiting {
            return Err(Error::TooLarge(format!(
                "the request runs {weight} sequences; the waiting queue holds {max_waiting}"
            )));
        }
        if self.scheduler.waiting_weight() + weight > max_waiting {
            return Err(Error::QueueFull(self.scheduler.waiting_weight()));
        }
        let req = Req {
            id,
            policy: built.policy,
            seqs: built.seqs,
            events: tx,
            cacheable: built.cacheable,
            window: built.window,
        };
        self.scheduler.add(req, adm, weight);
        Ok(())
    }

    /// The id counter, shared with handles so that ids stay unique.
    pub(crate) fn ids(&self) -> Arc<AtomicU64> {
        self.next_id.clone()
    }

    /// Cancels a request: its blocks are freed now and its stream ends with `Error::Aborted`.
    pub fn abort(&mut self, id: RequestId) -> Result<()> {
        if self.scheduler.get(id).is_none() {
            return Err(Error::UnknownRequest(id.0));
        }
        self.end(id, Some(Error::Aborted(id.0)));
        Ok(())
    }

    /// Stops admitting new requests (those already queued still run).
    pub fn stop_accepting(&mut self) {
        self.accepting = false;
    }

    /// Ends every request with `err`.
    pub fn abort_all(&mut self, err: impl Fn() -> Error) {
        let ids: Vec<RequestId> = self.scheduler.reqs().keys().copied().collect();
        for id in ids {
            self.end(id, Some(err()));
        }
    }

    /// True while some request is waiting or running.
    pub fn has_work(&self) -> bool {
        !self.scheduler.is_empty()
    }

    pub fn stats(&self) -> EngineStats {
        let kv = self.scheduler.kv();
        EngineStats {
            scheduler: self.scheduler.stats(),
            prefix: kv.prefix_stats(),
            used_blocks: kv.used_blocks(),
            running: self.scheduler.running().len(),
            waiting: self.scheduler.waiting(),
            ..self.stats
        }
    }

    /// Blocks referenced by sequences (idle prefix-cache blocks excluded).
    pub fn used_blocks(&self) -> usize {
        self.scheduler.kv().used_blocks()
    }

    /// Drops every idle prefix-cache block.
    pub fn clear_prefix_cache(&mut self) {
        self.scheduler.clear_prefix_cache();
    }

    /// Steps until no request is left.
    pub fn run_until_idle(&mut self) -> Result<()> {
        while self.has_work() {
            self.step()?;
        }
        Ok(())
    }

    /// One engine step: schedule → forward → read logits → update.
    pub fn step(&mut self) -> Result<StepReport> {
        let mut finished = self.reap();
        let model = &self.model;
        let plan = self
            .scheduler
            .schedule(&|kv, seq, from, back| model.shift_keys(kv, seq, from, back));
        for id in &plan.preempted {
            if let Some(req) = self.scheduler.get(*id) {
                req.send(Event::Preempted);
            }
        }
        #[cfg(feature = "fault-injection")]
        if let Some(i) = self
            .faults
            .iter()
            .position(|&s| s == self.scheduler.stats().steps)
        {
            self.faults.swap_remove(i);
            panic!("injected fault at step {}", self.scheduler.stats().steps);
        }
        self.refuse(&plan, &mut finished);
        // The batch holds this step's rows only: `update` commits what it holds.
        self.batch.clear();
        if plan.runs.is_empty() {
            self.stalled(&plan, &mut finished);
        } else if let Err(e) = self.forward(&plan) {
            self.fail_runs(&plan, &e, &mut finished);
            return Err(e);
        }
        let reads = self.read(&plan);
        let (ran, done) = self.scheduler.update(&plan, &self.batch, reads, &self.tok);
        for id in done {
            self.end(id, None);
            finished.push(id);
        }
        Ok(StepReport {
            tokens: plan.tokens,
            logit_rows: plan.logit_rows,
            ran,
            preempted: plan.preempted,
            finished,
        })
    }

    /// Cancels requests whose event stream was dropped.
    fn reap(&mut self) -> Vec<RequestId> {
        let gone: Vec<RequestId> = self
            .scheduler
            .reqs()
            .values()
            .filter(|r| r.events.is_closed())
            .map(|r| r.id)
            .collect();
        for &id in &gone {
            self.end(id, None);
        }
        self.stats.cancelled += gone.len() as u64;
        gone
    }

    fn refuse(&mut self, plan: &SchedulerOutput, finished: &mut Vec<RequestId>) {
        for &id in &plan.refused {
            let e = Error::TooLarge(format!(
                "request {id} does not fit in the KV cache ({} tokens) even alone",
                self.scheduler.kv().capacity_tokens()
            ));
            self.end(id, Some(e));
            finished.push(id);
        }
    }

    /// A step with work but nothing to run cannot make progress: fail the head of the queue
    /// rather than spin (the scheduler's admission rules make this unreachable).
    fn stalled(&mut self, plan: &SchedulerOutput, finished: &mut Vec<RequestId>) {
        if !self.has_work() || !plan.preempted.is_empty() || !plan.refused.is_empty() {
            return;
        }
        let oldest = self
            .scheduler
            .reqs()
            .keys()
            .min()
            .copied()
            .expect("has work");
        let e = Error::Internal(format!("request {oldest} could not be scheduled"));
        self.end(oldest, Some(e));
        finished.push(oldest);
    }

    fn forward(&mut self, plan: &SchedulerOutput) -> Result<()> {
        let reqs = self.scheduler.reqs();
        for r in &plan.runs {
            let ids = &reqs[&r.req].seqs[r.seq].ids;
            let tokens = &ids[r.start..r.start + r.len];
            self.batch
                .push_rows(r.kv, r.start, tokens, r.logits.clone());
        }
        let (reqs, kv) = self.scheduler.forward_parts();
        // Policies' preparations (constraint masks) run beside the forward pass when a core is
        // free of the pool's threads; otherwise their reads do the same work after it.
        let prepares: Vec<(&Req, usize)> = plan
            .runs
            .iter()
            .filter(|r| !r.logits.is_empty())
            .map(|r| (&reqs[&r.req], r.seq))
            .filter(|(req, _)| req.policy.prepares())
            .collect();
        let (model, batch, logits) = (&mut self.model, &self.batch, &mut self.logits);
        if prepares.is_empty() || !spare_core(model.pool().threads()) {
            model.forward(batch, kv, logits)?;
        } else {
            std::thread::scope(|scope| {
                scope.spawn(|| {
                    for (req, s) in &prepares {
                        req.policy.prepare(*s, &req.seqs[*s]);
                    }
                });
                model.forward(batch, kv, logits)
            })?;
        }
        self.stats.forward_tokens += self.batch.len() as u64;
        let used = self.scheduler.kv().used_blocks();
        self.stats.peak_used_blocks = self.stats.peak_used_blocks.max(used);
        Ok(())
    }

    fn fail_runs(&mut self, plan: &SchedulerOutput, e: &Error, finished: &mut Vec<RequestId>) {
        for r in &plan.runs {
            if self.scheduler.get(r.req).is_some() {
                self.end(r.req, Some(Error::Internal(e.to_string())));
                finished.push(r.req);
            }
        }
    }

    /// Every logit row read by its request's policy, on the compute threads; returns, per row,
    /// what the policy took from it.
    fn read(&mut self, plan: &SchedulerOutput) -> Vec<AnyRead> {
        let vocab = self.model.vocab();
        let rows: Vec<(RequestId, usize, usize)> = plan
            .runs
            .iter()
            .flat_map(|r| r.logits.clone().map(move |pos| (r.req, r.seq, pos)))
            .collect();
        if rows.is_empty() {
            return Vec::new();
        }
        let slots: Vec<OnceLock<AnyRead>> = rows.iter().map(|_| OnceLock::new()).collect();
        let reqs = self.scheduler.reqs();
        let logits = &mut self.logits[..rows.len() * vocab];
        self.model.pool().for_rows(logits, vocab, &|i, row| {
            let (id, s, pos) = rows[i];
            let req = &reqs[&id];
            let _ = slots[i].set(req.policy.read(s, &req.seqs[s], pos, row));
        });
        slots
            .into_iter()
            .map(|s| s.into_inner().expect("every row was read"))
            .collect()
    }

    /// Removes a request, frees its KV and, with `err`, tells its stream why.
    fn end(&mut self, id: RequestId, err: Option<Error>) {
        let Some(req) = self.scheduler.remove(id) else {
            return;
        };
        if let Some(e) = err {
            req.send(Event::Error(e));
        }
    }
}

/// Whether the machine has a core beside the pool's `threads`.
fn spare_core(threads: usize) -> bool {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get())) > threads
}

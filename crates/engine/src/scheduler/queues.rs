//! The queues behind `Scheduler`: the waiting order (priority, group turns, preempted first,
//! arrival), the running list, admission, preemption and the per-step plan (see the module
//! header of `scheduler` for the policy).

use super::{Admission, Scheduled, SchedulerConfig, SchedulerOutput, SchedulerStats, ShiftKeys};
use crate::kv::{KvCache, KvFull};
use crate::request::{Req, RequestId};
use std::collections::{HashMap, HashSet, VecDeque};

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

/// The order of things: who waits, who runs, by which turn.
pub(super) struct Queues {
    pub cfg: SchedulerConfig,
    /// In admission order once `order_waiting` ran (see the module header).
    pub waiting: VecDeque<RequestId>,
    /// By priority, then admission order.
    pub running: Vec<RequestId>,
    entries: HashMap<RequestId, Entry>,
    arrivals: u64,
    /// Per group with requests left: how many it has and how many were admitted.
    groups: HashMap<u64, Group>,
    pub stats: SchedulerStats,
}

#[derive(Debug, Default)]
struct Group {
    members: usize,
    admitted: usize,
}

/// Per-step bookkeeping while building a `SchedulerOutput`.
struct Step<'a> {
    out: SchedulerOutput,
    /// Turns a streaming sequence's kept keys after it forgot the middle of its history.
    shift: ShiftKeys<'a>,
    budget: usize,
    rows_left: usize,
    busy: HashSet<RequestId>,
}

impl Queues {
    pub fn new(cfg: SchedulerConfig) -> Self {
        Self {
            cfg,
            waiting: VecDeque::new(),
            running: Vec::new(),
            entries: HashMap::new(),
            arrivals: 0,
            groups: HashMap::new(),
            stats: SchedulerStats::default(),
        }
    }

    /// Queues a new request that will run at most `weight` sequences.
    pub fn add(&mut self, id: RequestId, adm: Admission, weight: usize) {
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

    pub fn remove(&mut self, id: RequestId) {
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

    pub fn waiting_weight(&self) -> usize {
        self.waiting.iter().map(|id| self.entries[id].weight).sum()
    }

    pub fn admission(&self, id: RequestId) -> Option<Admission> {
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

    pub fn schedule(
        &mut self,
        reqs: &mut HashMap<RequestId, Req>,
        kv: &mut KvCache,
        shift: ShiftKeys,
    ) -> SchedulerOutput {
        self.stats.steps += 1;
        let mut st = Step {
            out: SchedulerOutput::default(),
            shift,
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
            loop {
                let req = reqs.get_mut(&id).expect("running");
                if make_room(req, s, n, kv, st.shift).is_ok() {
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
                let (handle, hit) = if req.cacheable && self.cfg.prefix_cache {
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
                .filter_map(|s| {
                    let upto = req.window.map_or(usize::MAX, |w| w.size);
                    Some(kv.blocks_for(s.kv?, s.pending().min(upto)))
                })
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
                if make_room(req, s, n, kv, st.shift).is_ok() {
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
    if let Some(w) = req.window {
        n = n.min(w.max_chunk());
    }
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

/// Makes room in the KV for `n` more tokens of sequence `s` of `req`: a streaming sequence that
/// would pass its window first forgets the middle of its history (see `overflow`; the tokens it
/// forgot stay forgotten even when the reservation then fails), then blocks are reserved.
fn make_room(
    req: &mut Req,
    s: usize,
    n: usize,
    kv: &mut KvCache,
    shift: ShiftKeys,
) -> Result<(), KvFull> {
    let seq = &mut req.seqs[s];
    let handle = seq.kv.expect("scheduled sequences hold KV");
    if let Some(w) = req.window {
        let drop = w.to_drop(seq.cached, n);
        if drop > 0 {
            kv.drop_middle(handle, w.sinks, drop)?;
            shift(kv, handle, w.sinks, drop);
            seq.ids.drain(w.sinks..w.sinks + drop);
            seq.cached -= drop;
            seq.dropped += drop;
            seq.gap = w.sinks;
        }
    }
    kv.reserve(handle, n)
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

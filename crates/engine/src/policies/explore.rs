//! The explore policy: a tree search that runs as one engine request. Each level, every live leaf
//! (one sequence of the request) proposes its candidates from its logits row, the best `width`
//! over all of them survive, and the survivors' sequences are forked from their parents' (shared
//! blocks, copy-on-write) so that the next step runs them all in one forward pass beside whatever
//! else the engine runs. With `no_share` the survivors instead get fresh private sequences that
//! recompute the whole path (the seed prototype's method): the same tree at a much higher cost.
//! A level is decided only when every leaf's row has been read, so chunking or preemption of the
//! request changes when, never what. Analysis of the finished tree is in `analysis`.
//!
//! Under a constraint every leaf carries its matcher's state: its row is masked to the tokens
//! the constraint allows before the leaf is read (so scores are renormalised over the allowed
//! tokens), each surviving child takes a copy advanced by its token, and a path whose
//! constraint is complete finishes (`Stop`).

use crate::constraint::Grammar;
use crate::request::policy::{Ctx, Policy};
use crate::request::{Event, ExploreRequest, Seq};
use crate::sample::dist::{self, DistStats};
use crate::sample::Rng;
use crate::superposition::{
    analysis, normalized, path_ids, token_text, Alt, ExploreParams, ExploreStep, FinishReason,
    NextDist, Node, Stats, Status,
};
use crate::tokenizer::Tokenizer;
use std::cmp::Ordering;
use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

/// Alternatives kept per expanded node for display.
const TOP_ALTS: usize = 5;

/// A live path: its node and the request sequence that computes its logits.
struct Leaf {
    node: usize,
    seq: usize,
}

struct Candidate {
    parent: usize,
    /// Index of the parent in the current leaf list.
    leaf: usize,
    token: u32,
    logprob: f32,
    score: f64,
    rank: usize,
    stats: DistStats,
}

/// Best first: higher score, then lower token id, then lower parent id.
fn better(a: &Candidate, b: &Candidate) -> Ordering {
    b.score
        .total_cmp(&a.score)
        .then(a.token.cmp(&b.token))
        .then(a.parent.cmp(&b.parent))
}

pub(crate) struct ExplorePolicy {
    p: ExploreParams,
    prompt: String,
    prompt_ids: Vec<u32>,
    nodes: Vec<Node>,
    stats: Stats,
    leaves: Vec<Leaf>,
    /// Each leaf's read of its row, once it has arrived.
    reads: Vec<Option<LeafRead>>,
    /// The node each request sequence currently computes.
    seq_node: Vec<usize>,
    /// Depth of the next level to build (0: the prompt's row is awaited).
    depth: usize,
    start: Instant,
    done: bool,
    /// Under a constraint: each live leaf's matcher, by node.
    grammars: HashMap<usize, Mutex<Grammar>>,
}

impl ExplorePolicy {
    pub fn new(r: ExploreRequest) -> Self {
        let root = Node {
            id: 0,
            parent: None,
            token_id: None,
            text: String::new(),
            logprob: 0.0,
            score: 0.0,
            depth: 0,
            rank: 1,
            entropy: 0.0,
            varentropy: 0.0,
            status: Status::Live,
            finish_reason: None,
            next: None,
            bifurcation: false,
        };
        let grammars = r
            .constraint
            .map(|g| (0, Mutex::new(g)))
            .into_iter()
            .collect();
        Self {
            grammars,
            p: r.params,
            prompt: r.prompt,
            prompt_ids: r.prompt_ids,
            nodes: vec![root],
            stats: Stats::default(),
            leaves: vec![Leaf { node: 0, seq: 0 }],
            reads: vec![None],
            seq_node: vec![0],
            depth: 0,
            start: Instant::now(),
            done: false,
        }
    }

    /// The sequences the request starts with: the prompt.
    pub fn seqs(&self) -> Vec<Seq> {
        vec![Seq::new(self.prompt_ids.clone())]
    }

    /// The tokens of the path to `id` (generated only, or with the prompt in front).
    fn path_tokens(&self, id: usize, with_prompt: bool) -> Vec<u32> {
        let generated = path_ids(&self.nodes, id);
        if with_prompt {
            [self.prompt_ids.as_slice(), &generated].concat()
        } else {
            generated
        }
    }
}

impl Policy for ExplorePolicy {
    type Read = LeafRead;

    fn is_done(&self) -> bool {
        self.done
    }

    /// Reads sequence `s`'s row. Each leaf draws from its own seeded stream, so results do not
    /// depend on the thread, the batch or the step the row came from.
    fn read(&self, s: usize, _: &Seq, _: usize, row: &mut [f32]) -> LeafRead {
        let node = self.seq_node[s];
        let seed = self.p.seed ^ (node as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let Some(g) = self.grammars.get(&node) else {
            return read_leaf(row, &self.p, seed);
        };
        let mask = g.lock().unwrap_or_else(PoisonError::into_inner).mask();
        if let Ok(m) = &mask {
            m.apply(row);
        }
        let mut leaf = read_leaf(row, &self.p, seed);
        // Only allowed tokens become children (or alternatives): with fewer allowed tokens than
        // `branches`, the top list would reach into the masked ones. A matcher that cannot
        // continue leaves none, and the path ends here.
        let allowed = |t: &(u32, f32)| mask.as_ref().is_ok_and(|m| m.allows(t.0));
        leaf.children.retain(allowed);
        leaf.best.retain(allowed);
        leaf
    }

    fn apply(&mut self, ctx: &mut Ctx, reads: Vec<(usize, LeafRead)>) {
        self.count(ctx);
        for (s, read) in reads {
            if let Some(i) = self.leaves.iter().position(|l| l.seq == s) {
                self.reads[i] = Some(read);
            }
        }
        if self.reads.iter().any(Option::is_none) {
            return;
        }
        if self.depth == 0 {
            let st = self.reads[0].as_ref().expect("all read").stats;
            self.nodes[0].entropy = st.entropy as f32;
            self.nodes[0].varentropy = st.varentropy as f32;
            self.depth = 1;
        }
        let reads: Vec<LeafRead> = std::mem::take(&mut self.reads)
            .into_iter()
            .map(|r| r.expect("all read"))
            .collect();
        self.level(ctx, reads);
        self.depth += 1;
        if self.leaves.is_empty() {
            self.stats.wall_ms = self.start.elapsed().as_secs_f64() * 1e3;
            let nodes = std::mem::take(&mut self.nodes);
            let x = analysis::analyse(
                &self.prompt,
                &self.prompt_ids,
                &self.p,
                nodes,
                std::mem::take(&mut self.stats),
                ctx.tok,
            );
            ctx.send(Event::Explored(Box::new(x)));
            self.done = true;
        }
    }
}

impl ExplorePolicy {
    /// Forward passes, rows and KV peaks of the step that just ran (measured before this
    /// level's forks and frees, when the live paths hold the most).
    fn count(&mut self, ctx: &Ctx) {
        self.stats.forward_passes += 1;
        self.stats.tokens_computed += ctx.tokens_run;
        let (used, unshared) = ctx.blocks_held();
        self.stats.kv_blocks_used = self.stats.kv_blocks_used.max(used);
        self.stats.kv_blocks_unshared = self.stats.kv_blocks_unshared.max(unshared);
    }

    /// One level: candidates from every leaf, selection, then the survivors' sequences.
    fn level(&mut self, ctx: &mut Ctx, reads: Vec<LeafRead>) {
        let depth = self.depth;
        let (expanded, first_new): (Vec<usize>, usize) = (
            self.leaves.iter().map(|l| l.node).collect(),
            self.nodes.len(),
        );
        let mut cands = self.candidates(ctx.tok, &reads);
        cands.sort_by(better);
        let kept = cands.len().min(self.p.width);
        let mut children: Vec<Vec<usize>> = vec![Vec::new(); self.leaves.len()];
        let mut live: Vec<usize> = Vec::new();
        // Node ids follow the ranking, so the best candidate of a level gets the lowest id.
        let mut grammars = HashMap::new();
        for (i, c) in cands.iter().enumerate() {
            let id = self.push_node(ctx.tok, c, depth);
            if i >= kept {
                continue;
            }
            let mut complete = false;
            if let Some(parent) = self.grammars.get_mut(&c.parent) {
                let mut g = parent
                    .get_mut()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone();
                if g.consume(c.token).is_err() {
                    continue; // the mask allowed it; a matcher that disagrees drops the path
                }
                complete = g.is_stopped();
                grammars.insert(id, Mutex::new(g));
            }
            let reason = match self.finish_reason(ctx.tok, id, depth) {
                None if complete => Some(FinishReason::Stop),
                r => r,
            };
            match reason {
                Some(r) => {
                    self.nodes[id].status = Status::Finished;
                    self.nodes[id].finish_reason = Some(r);
                }
                None => {
                    self.nodes[id].status = Status::Live;
                    children[c.leaf].push(id);
                    live.push(id);
                }
            }
        }
        grammars.retain(|id, _| live.contains(id));
        self.grammars = grammars;
        if !live.is_empty() && self.cannot_win(&live) {
            for &id in &live {
                self.nodes[id].status = Status::Pruned;
            }
            live.clear();
            children.iter_mut().for_each(Vec::clear);
        }
        self.assign_sequences(ctx, &children, &live);
        let new = &self.nodes[first_new..];
        let with = |s: Status| new.iter().filter(|n| n.status == s).cloned().collect();
        let step = ExploreStep {
            depth,
            expanded: expanded.iter().map(|&id| self.nodes[id].clone()).collect(),
            live: with(Status::Live),
            pruned: with(Status::Pruned),
            finished: with(Status::Finished),
        };
        ctx.send(Event::ExploreStep(Box::new(step)));
    }

    /// Every leaf's proposed children, and each leaf's own next-token summary on its node.
    fn candidates(&mut self, tok: &Tokenizer, reads: &[LeafRead]) -> Vec<Candidate> {
        let t = self.p.temperature;
        let mut out = Vec::with_capacity(reads.len() * self.p.branches);
        for (i, (leaf, read)) in self.leaves.iter().zip(reads).enumerate() {
            let st = read.stats;
            let lp = |l: f32| (l as f64 / t as f64 - st.log_norm) as f32;
            let gap = match read.best.as_slice() {
                [a, b, ..] => lp(a.1).exp() - lp(b.1).exp(),
                _ => 1.0,
            };
            let top = read.best[..read.best.len().min(TOP_ALTS)]
                .iter()
                .map(|&(id, l)| Alt {
                    token_id: id,
                    text: token_text(tok, id),
                    logprob: lp(l),
                })
                .collect();
            self.nodes[leaf.node].next = Some(NextDist {
                entropy: st.entropy as f32,
                varentropy: st.varentropy as f32,
                top_gap: gap,
                top,
            });
            let parent_score = self.nodes[leaf.node].score;
            for (r, &(token, l)) in read.children.iter().enumerate() {
                let logprob = lp(l);
                out.push(Candidate {
                    parent: leaf.node,
                    leaf: i,
                    token,
                    logprob,
                    score: parent_score + logprob as f64,
                    rank: r + 1,
                    stats: st,
                });
            }
        }
        out
    }

    fn push_node(&mut self, tok: &Tokenizer, c: &Candidate, depth: usize) -> usize {
        let id = self.nodes.len();
        self.nodes.push(Node {
            id,
            parent: Some(c.parent),
            token_id: Some(c.token),
            text: token_text(tok, c.token),
            logprob: c.logprob,
            score: c.score,
            depth,
            rank: c.rank,
            entropy: c.stats.entropy as f32,
            varentropy: c.stats.varentropy as f32,
            status: Status::Pruned,
            finish_reason: None,
            next: None,
            bifurcation: false,
        });
        id
    }

    fn finish_reason(&self, tok: &Tokenizer, id: usize, depth: usize) -> Option<FinishReason> {
        let token = self.nodes[id].token_id.expect("children have tokens");
        if tok.is_eog(token) {
            return Some(FinishReason::Eos);
        }
        if !self.p.stop.is_empty() {
            let text = tok.decode(&self.path_tokens(id, false));
            if self.p.stop.iter().any(|s| text.contains(s.as_str())) {
                return Some(FinishReason::Stop);
            }
        }
        (depth == self.p.steps).then_some(FinishReason::Length)
    }

    /// True when no live path can still enter the best `width` finished paths: a path's score
    /// only falls as it grows, so `score / steps^alpha` bounds every normalised score it can reach.
    fn cannot_win(&self, live: &[usize]) -> bool {
        let mut finished: Vec<f64> = self
            .nodes
            .iter()
            .filter(|n| n.status == Status::Finished)
            .map(|n| normalized(n.score, n.depth, self.p.alpha))
            .collect();
        if finished.len() < self.p.width {
            return false;
        }
        finished.sort_by(|a, b| b.total_cmp(a));
        let threshold = finished[self.p.width - 1];
        let bound =
            |id: usize| self.nodes[id].score / (self.p.steps as f64).powf(self.p.alpha as f64);
        live.iter().all(|&id| bound(id) <= threshold)
    }

    /// Gives the surviving children sequences: shared, the last child of a leaf takes over the
    /// leaf's sequence and the others fork it; unshared, each child gets a fresh private
    /// sequence of its whole path. Leaves without survivors free theirs at once.
    fn assign_sequences(&mut self, ctx: &mut Ctx, children: &[Vec<usize>], live: &[usize]) {
        let mut seq_of: Vec<(usize, usize)> = Vec::with_capacity(live.len());
        for (leaf, kids) in std::mem::take(&mut self.leaves).into_iter().zip(children) {
            if self.p.no_share {
                ctx.finish(leaf.seq);
                for &id in kids {
                    let ids = self.path_tokens(id, true);
                    seq_of.push((id, ctx.spawn(ids)));
                }
                continue;
            }
            match kids.split_last() {
                None => ctx.finish(leaf.seq),
                Some((&last, rest)) => {
                    for &id in rest {
                        seq_of.push((id, ctx.fork(leaf.seq, self.token(id))));
                    }
                    ctx.seqs[leaf.seq].ids.push(self.token(last));
                    seq_of.push((last, leaf.seq));
                }
            }
        }
        self.seq_node.resize(ctx.seqs.len(), 0);
        // Leaves keep the ranking order (the order of `live`).
        self.leaves = live
            .iter()
            .map(|&id| {
                let seq = seq_of.iter().find(|s| s.0 == id).expect("assigned").1;
                self.seq_node[seq] = id;
                Leaf { node: id, seq }
            })
            .collect();
        self.reads = self.leaves.iter().map(|_| None).collect();
    }

    fn token(&self, id: usize) -> u32 {
        self.nodes[id].token_id.expect("children have tokens")
    }
}

/// What one leaf's logits row says: its distribution, its best tokens, its proposed children.
pub(crate) struct LeafRead {
    stats: DistStats,
    /// The best `max(branches, TOP_ALTS)` tokens, best first.
    best: Vec<(u32, f32)>,
    /// The children, ranked by probability (lower id first on ties).
    children: Vec<(u32, f32)>,
}

fn read_leaf(row: &mut [f32], p: &ExploreParams, seed: u64) -> LeafRead {
    let t = p.temperature;
    let mut stats = dist::stats(row, t);
    if !(stats.log_norm.is_finite() && stats.entropy.is_finite()) {
        crate::sample::sanitize(row);
        stats = dist::stats(row, t);
    }
    let row: &[f32] = row;
    // p_i ≥ min_p · p_max  ⇔  l_i / T ≥ max_scaled + ln(min_p).
    let floor = if p.min_p > 0.0 {
        (stats.max_scaled + p.min_p.ln()) * t
    } else {
        f32::NEG_INFINITY
    };
    let best = dist::top_k(row, p.branches.max(TOP_ALTS), f32::NEG_INFINITY);
    let mut children: Vec<(u32, f32)> = if p.stochastic {
        dist::sample_k(row, p.branches, floor, t, &mut Rng::new(seed))
    } else {
        // The top-k above the floor are the floored prefix of the unfloored top list.
        best.iter()
            .copied()
            .filter(|c| c.1 >= floor)
            .take(p.branches)
            .collect()
    };
    children.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    LeafRead {
        stats,
        best,
        children,
    }
}

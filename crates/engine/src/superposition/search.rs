//! The search loop: expand every live leaf into candidates, keep the best `width` over all of
//! them, fork KV for the survivors and run them as one batch. With `no_share` the survivors are
//! instead recomputed from the first prompt token each step (the seed prototype's method), which
//! gives the same tree at a much higher cost. Analysis of the finished tree is in `analysis`.

use super::{path_ids, Alt, ExploreParams, FinishReason, NextDist, Node, Stats, Status};
use crate::batch::Batch;
use crate::error::{Error, Result};
use crate::kv::{KvCache, SeqId};
use crate::model::{Model, KV_BLOCK_SIZE};
use crate::sample::dist::{self, DistStats};
use crate::sample::Rng;
use crate::tokenizer::Tokenizer;
use std::cmp::Ordering;

/// Alternatives kept per expanded node for display.
const TOP_ALTS: usize = 5;

/// A live path whose logits are row `i` of the last forward when it is `leaves[i]`.
struct Leaf {
    node: usize,
    /// Its KV sequence (shared mode only).
    seq: Option<SeqId>,
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

struct Search<'a> {
    model: &'a mut Model,
    tok: &'a Tokenizer,
    p: &'a ExploreParams,
    prompt: &'a [u32],
    kv: KvCache,
    batch: Batch,
    logits: Vec<f32>,
    nodes: Vec<Node>,
    stats: Stats,
}

/// Runs the search; returns every node created and the counters.
pub(super) fn run(
    model: &mut Model,
    tok: &Tokenizer,
    prompt: &[u32],
    p: &ExploreParams,
) -> Result<(Vec<Node>, Stats)> {
    let bs = KV_BLOCK_SIZE;
    let max_len = prompt.len() + p.steps;
    // Shared: the prompt once, plus each live path's own blocks (and one copied partial block).
    // Unshared: every live path holds its whole sequence.
    let (capacity, max_seqs) = if p.no_share {
        (p.width * (max_len + bs), p.width + 1)
    } else {
        (max_len + bs + p.width * (p.steps + 2 * bs), 2 * p.width + 2)
    };
    let kv = KvCache::new(&model.kv_config(capacity, max_seqs));
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
    let mut s = Search {
        model,
        tok,
        p,
        prompt,
        kv,
        batch: Batch::default(),
        logits: Vec::new(),
        nodes: vec![root],
        stats: Stats::default(),
    };
    let seq = s.kv.new_seq();
    s.run_rows(&[(seq, 0, prompt.to_vec())])?;
    if p.no_share {
        s.kv.free(seq);
    }
    let mut leaves = vec![Leaf {
        node: 0,
        seq: (!p.no_share).then_some(seq),
    }];
    let root_stats = dist::stats(&s.logits[..s.model.config.vocab], p.temperature);
    s.nodes[0].entropy = root_stats.entropy as f32;
    s.nodes[0].varentropy = root_stats.varentropy as f32;
    for depth in 1..=p.steps {
        leaves = s.step(leaves, depth)?;
        if leaves.is_empty() {
            break;
        }
    }
    Ok((s.nodes, s.stats))
}

impl Search<'_> {
    /// One level: candidates from every leaf, selection, then the survivors' forward pass.
    /// Returns the new leaves (empty when the search is over).
    fn step(&mut self, leaves: Vec<Leaf>, depth: usize) -> Result<Vec<Leaf>> {
        let mut cands = self.candidates(&leaves);
        cands.sort_by(better);
        let kept = cands.len().min(self.p.width);
        let mut children: Vec<Vec<usize>> = vec![Vec::new(); leaves.len()];
        let mut live: Vec<usize> = Vec::new();
        // Node ids follow the ranking, so the best candidate of a level gets the lowest id.
        for (i, c) in cands.iter().enumerate() {
            let id = self.push_node(c, depth);
            if i >= kept {
                continue;
            }
            match self.finish_reason(id, depth) {
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
        if !live.is_empty() && self.cannot_win(&live) {
            for &id in &live {
                self.nodes[id].status = Status::Pruned;
            }
            live.clear();
            children.iter_mut().for_each(Vec::clear);
        }
        let next = self.assign_sequences(leaves, &children, &live);
        if next.is_empty() {
            return Ok(next);
        }
        let pos = self.prompt.len() + depth - 1;
        let rows: Vec<(SeqId, usize, Vec<u32>)> = if self.p.no_share {
            next.iter()
                .map(|l| (self.kv.new_seq(), 0, self.path_tokens(l.node, true)))
                .collect()
        } else {
            next.iter()
                .map(|l| {
                    let token = self.nodes[l.node].token_id.expect("children have tokens");
                    (l.seq.expect("shared mode"), pos, vec![token])
                })
                .collect()
        };
        self.run_rows(&rows)?;
        if self.p.no_share {
            rows.iter().for_each(|r| self.kv.free(r.0));
        }
        Ok(next)
    }

    /// Every leaf's proposed children, and each leaf's own next-token summary on its node.
    /// The vocabulary-long reads are spread over the thread pool by leaf; each leaf draws from
    /// its own seeded stream, so results do not depend on the thread count.
    fn candidates(&mut self, leaves: &[Leaf]) -> Vec<Candidate> {
        let (vocab, t, k) = (self.model.config.vocab, self.p.temperature, self.p.branches);
        let (p, logits) = (self.p, &self.logits);
        let mut reads: Vec<Option<LeafRead>> = leaves.iter().map(|_| None).collect();
        self.model.pool().for_rows(&mut reads, 1, &|i, slot| {
            let row = &logits[i * vocab..(i + 1) * vocab];
            let seed = p.seed ^ (leaves[i].node as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            slot[0] = Some(read_leaf(row, p, seed));
        });
        let mut out = Vec::with_capacity(leaves.len() * k);
        for (i, (leaf, read)) in leaves.iter().zip(reads).enumerate() {
            let read = read.expect("every leaf was read");
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
                    text: token_text(self.tok, id),
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

    fn push_node(&mut self, c: &Candidate, depth: usize) -> usize {
        let id = self.nodes.len();
        self.nodes.push(Node {
            id,
            parent: Some(c.parent),
            token_id: Some(c.token),
            text: token_text(self.tok, c.token),
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

    fn finish_reason(&self, id: usize, depth: usize) -> Option<FinishReason> {
        let token = self.nodes[id].token_id.expect("children have tokens");
        if self.tok.is_eog(token) {
            return Some(FinishReason::Eos);
        }
        if !self.p.stop.is_empty() {
            let text = self.tok.decode(&self.path_tokens(id, false));
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

    /// Hands KV sequences to the surviving children: the last child of a leaf takes the leaf's
    /// sequence, the others fork it; leaves without survivors free theirs at once.
    fn assign_sequences(
        &mut self,
        leaves: Vec<Leaf>,
        children: &[Vec<usize>],
        live: &[usize],
    ) -> Vec<Leaf> {
        let mut seq_of: Vec<(usize, Option<SeqId>)> = Vec::with_capacity(live.len());
        for (leaf, kids) in leaves.into_iter().zip(children) {
            let Some(seq) = leaf.seq else {
                seq_of.extend(kids.iter().map(|&id| (id, None)));
                continue;
            };
            match kids.split_last() {
                None => self.kv.free(seq),
                Some((&last, rest)) => {
                    for &id in rest {
                        let forked = self.kv.fork(seq);
                        seq_of.push((id, Some(forked)));
                    }
                    seq_of.push((last, Some(seq)));
                }
            }
        }
        // Leaves run in ranking order (the order of `live`).
        live.iter()
            .map(|&id| Leaf {
                node: id,
                seq: seq_of.iter().find(|s| s.0 == id).and_then(|s| s.1),
            })
            .collect()
    }

    /// The tokens of the path to `id` (generated only, or with the prompt in front).
    fn path_tokens(&self, id: usize, with_prompt: bool) -> Vec<u32> {
        let generated = path_ids(&self.nodes, id);
        if with_prompt {
            [self.prompt, &generated].concat()
        } else {
            generated
        }
    }

    /// Reserves KV for, and runs, one forward over `(seq, start position, tokens)` rows, each
    /// asking for the logits of its last token.
    fn run_rows(&mut self, rows: &[(SeqId, usize, Vec<u32>)]) -> Result<()> {
        self.batch.clear();
        for (seq, start, tokens) in rows {
            self.kv
                .reserve(*seq, tokens.len())
                .map_err(|_| Error::Request("the exploration ran out of KV cache blocks".into()))?;
            self.batch.push_seq(*seq, *start, tokens, true);
        }
        self.model
            .forward(&self.batch, &mut self.kv, &mut self.logits)?;
        self.stats.forward_passes += 1;
        self.stats.tokens_computed += self.batch.len();
        self.stats.kv_blocks_used = self.stats.kv_blocks_used.max(self.kv.used_blocks());
        self.stats.kv_blocks_unshared =
            self.stats.kv_blocks_unshared.max(self.kv.unshared_blocks());
        Ok(())
    }
}

/// What one leaf's logits row says: its distribution, its best tokens, its proposed children.
struct LeafRead {
    stats: DistStats,
    /// The best `max(branches, TOP_ALTS)` tokens, best first.
    best: Vec<(u32, f32)>,
    /// The children, ranked by probability (lower id first on ties).
    children: Vec<(u32, f32)>,
}

fn read_leaf(row: &[f32], p: &ExploreParams, seed: u64) -> LeafRead {
    let t = p.temperature;
    let stats = dist::stats(row, t);
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

/// `score / generated_len^alpha`.
pub(super) fn normalized(score: f64, len: usize, alpha: f32) -> f64 {
    if alpha == 0.0 || len == 0 {
        score
    } else {
        score / (len as f64).powf(alpha as f64)
    }
}

/// Display text of one token: its bytes as (lossy) UTF-8, or its piece for control tokens.
pub(super) fn token_text(tok: &Tokenizer, id: u32) -> String {
    if tok.is_eog(id) {
        return tok.piece(id).to_string();
    }
    String::from_utf8_lossy(&tok.token_bytes(id)).into_owned()
}

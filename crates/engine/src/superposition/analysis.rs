//! Reading the finished tree: ranked paths with Born-rule probabilities, the measurement,
//! bifurcation points, entropy by depth, and the convergence verdict. Pure functions of the
//! nodes and the parameters; no model calls.
//!
//! Verdict (documented in the README): let the finished paths' probabilities be
//! `softmax(normalized_score)`. `leading_mass` is the leading path's probability; `agreement`
//! is the probability-weighted share of the leading path's token positions on which each path
//! has the same token (the leading path agrees with itself fully). The model is `confident`
//! when `leading_mass ≥ 0.5` or `agreement ≥ 0.75` — most of the mass is on one answer, or the
//! paths mostly say the same thing — and `uncertain` otherwise. `common_prefix_tokens` is the
//! longest common prefix of the (up to) three best paths.

use super::{normalized, path_ids, Exploration, ExploreParams, Measure, Node, Path, Stats, Status};
use crate::sample::Rng;
use crate::tokenizer::Tokenizer;
use serde::Serialize;

pub const CONFIDENT_MASS: f64 = 0.5;
pub const CONFIDENT_AGREEMENT: f64 = 0.75;
const PREFIX_PATHS: usize = 3;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdict {
    /// "confident" or "uncertain".
    pub verdict: &'static str,
    pub leading_mass: f64,
    pub agreement: f64,
    pub common_prefix_tokens: usize,
    pub common_prefix_text: String,
    pub paths_compared: usize,
}

pub(crate) fn analyse(
    prompt: &str,
    prompt_ids: &[u32],
    params: &ExploreParams,
    mut nodes: Vec<Node>,
    stats: Stats,
    tok: &Tokenizer,
) -> Exploration {
    let mut bifurcations = Vec::new();
    for n in nodes.iter_mut() {
        if let Some(next) = &n.next {
            if next.top.len() >= 2 && next.top_gap < params.bifurcation_gap {
                n.bifurcation = true;
                bifurcations.push(n.id);
            }
        }
    }
    let paths = ranked_paths(&nodes, params, tok);
    let measured = match params.measure {
        Measure::Max => vec![0],
        Measure::All => (0..paths.len()).collect(),
        Measure::Sample => vec![born_sample(&paths, params.seed)],
    };
    let measured = if paths.is_empty() {
        Vec::new()
    } else {
        measured
    };
    let verdict = verdict(&paths, tok);
    let entropy_by_depth = entropy_by_depth(&nodes);
    Exploration {
        prompt: prompt.to_string(),
        prompt_token_ids: prompt_ids.to_vec(),
        params: params.clone(),
        nodes,
        paths,
        measured,
        bifurcations,
        verdict,
        entropy_by_depth,
        stats,
    }
}

fn ranked_paths(nodes: &[Node], p: &ExploreParams, tok: &Tokenizer) -> Vec<Path> {
    let mut paths: Vec<Path> = nodes
        .iter()
        .filter(|n| n.status == Status::Finished)
        .map(|n| {
            let token_ids = path_ids(nodes, n.id);
            let shown: Vec<u32> = token_ids
                .iter()
                .copied()
                .filter(|&t| !tok.is_eog(t))
                .collect();
            let mut text = tok.decode(&shown);
            if let Some(cut) = p.stop.iter().filter_map(|s| text.find(s.as_str())).min() {
                text.truncate(cut);
            }
            Path {
                node: n.id,
                text,
                token_ids,
                score: n.score,
                normalized_score: normalized(n.score, n.depth, p.alpha),
                probability: 0.0,
                finish_reason: n.finish_reason.expect("finished nodes have a reason"),
            }
        })
        .collect();
    paths.sort_by(|a, b| {
        b.normalized_score
            .total_cmp(&a.normalized_score)
            .then(a.node.cmp(&b.node))
    });
    if let Some(best) = paths.first().map(|p| p.normalized_score) {
        let z: f64 = paths
            .iter()
            .map(|p| (p.normalized_score - best).exp())
            .sum();
        for path in paths.iter_mut() {
            path.probability = (path.normalized_score - best).exp() / z;
        }
    }
    paths
}

/// Index of a path drawn with its Born probability, from its own seeded stream.
fn born_sample(paths: &[Path], seed: u64) -> usize {
    let u = Rng::new(seed ^ 0x5eed_b042).next_f64();
    let mut cum = 0.0;
    for (i, p) in paths.iter().enumerate() {
        cum += p.probability;
        if u < cum {
            return i;
        }
    }
    paths.len().saturating_sub(1)
}

fn verdict(paths: &[Path], tok: &Tokenizer) -> Verdict {
    let Some(lead) = paths.first() else {
        return Verdict {
            verdict: "uncertain",
            leading_mass: 0.0,
            agreement: 0.0,
            common_prefix_tokens: 0,
            common_prefix_text: String::new(),
            paths_compared: 0,
        };
    };
    let agreement: f64 = paths
        .iter()
        .map(|p| {
            let same = lead
                .token_ids
                .iter()
                .zip(&p.token_ids)
                .filter(|(a, b)| a == b)
                .count();
            p.probability * same as f64 / lead.token_ids.len().max(1) as f64
        })
        .sum();
    let top = &paths[..paths.len().min(PREFIX_PATHS)];
    let prefix = (0..lead.token_ids.len())
        .take_while(|&i| {
            top.iter()
                .all(|p| p.token_ids.get(i) == lead.token_ids.get(i))
        })
        .count();
    let confident = lead.probability >= CONFIDENT_MASS || agreement >= CONFIDENT_AGREEMENT;
    Verdict {
        verdict: if confident { "confident" } else { "uncertain" },
        leading_mass: lead.probability,
        agreement,
        common_prefix_tokens: prefix,
        common_prefix_text: tok.decode(&lead.token_ids[..prefix]),
        paths_compared: top.len(),
    }
}

/// Mean entropy of the next-token distributions of the nodes expanded at each depth.
fn entropy_by_depth(nodes: &[Node]) -> Vec<f32> {
    let mut sums: Vec<(f64, usize)> = Vec::new();
    for n in nodes {
        if let Some(next) = &n.next {
            if sums.len() <= n.depth {
                sums.resize(n.depth + 1, (0.0, 0));
            }
            sums[n.depth].0 += next.entropy as f64;
            sums[n.depth].1 += 1;
        }
    }
    sums.iter()
        .map(|&(s, c)| if c == 0 { 0.0 } else { (s / c as f64) as f32 })
        .collect()
}

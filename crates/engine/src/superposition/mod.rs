//! Superposition decoding: many futures of one prompt in one batched pass. Every live path
//! ("universe") branches into its best `branches` next tokens, the best `width` candidates over
//! all of them survive (interference), and all survivors run as ONE batch whose KV blocks are
//! forked from their parents', so the shared past is stored and computed once. Finished paths
//! are *measured* (best, Born-rule sample, or all), and the tree is kept as data with per-node
//! entropy, bifurcation points and a confident/uncertain verdict.
//!
//! Scoring: a node's `score` is the sum of its path's log-probabilities under
//! `softmax(logits / temperature)` (prompt excluded). Paths are ranked by
//! `normalized_score = score / generated_len^alpha` (`alpha = 0`, the default, is the plain
//! joint probability). Min-p only restricts which tokens may become children; it does not
//! renormalise scores. Ties break deterministically: higher score, then lower token id, then
//! lower parent id.
//!
//! This module holds the tree and its analysis; the search that grows it is the policy in
//! `policies::explore`. It renders nothing itself except through `render` (terminal text); the offline
//! HTML page is `everett_server::pages::explore`, and the CLI and the server choose which to
//! show.

pub(crate) mod analysis;
pub mod render;

use crate::error::{check_range, Error, Result};
use crate::tokenizer::Tokenizer;
use serde::Serialize;

pub use analysis::Verdict;

/// How the answer is taken from the finished paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Measure {
    /// The best normalised score.
    Max,
    /// One path drawn with probability ∝ exp(normalized_score) (the Born rule), seeded.
    Sample,
    /// Every finished path, ranked.
    All,
}

impl Measure {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Max => "max",
            Self::Sample => "sample",
            Self::All => "all",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "max" => Some(Self::Max),
            "sample" => Some(Self::Sample),
            "all" => Some(Self::All),
            _ => None,
        }
    }
}

/// Everything that shapes one exploration.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExploreParams {
    /// Children proposed by each live leaf (k).
    pub branches: usize,
    /// Live paths kept after each step (N).
    pub width: usize,
    /// Maximum generated depth.
    pub steps: usize,
    /// Scales logits before branching and scoring; higher spreads the tree.
    pub temperature: f32,
    /// Children must have p ≥ min_p · p_max (0 disables).
    pub min_p: f32,
    /// Draw the k children without replacement instead of taking the top-k.
    pub stochastic: bool,
    pub seed: u64,
    pub measure: Measure,
    /// Length normalisation exponent: rank by score / generated_len^alpha.
    pub alpha: f32,
    /// A node is a bifurcation point when p1 − p2 of its next-token distribution is below this.
    pub bifurcation_gap: f32,
    /// Text that ends a path (excluded from its text).
    pub stop: Vec<String>,
    /// Re-run every path from scratch each step (the seed prototype's way) instead of forking
    /// KV; for comparison and as a reference, never faster.
    pub no_share: bool,
}

impl Default for ExploreParams {
    fn default() -> Self {
        Self {
            branches: 3,
            width: 10,
            steps: 6,
            temperature: 1.0,
            min_p: 0.0,
            stochastic: false,
            seed: 0,
            measure: Measure::Max,
            alpha: 0.0,
            bifurcation_gap: 0.1,
            stop: Vec::new(),
            no_share: false,
        }
    }
}

/// Upper bounds that keep one exploration's memory and time sane.
pub const MAX_BRANCHES: usize = 64;
pub const MAX_WIDTH: usize = 256;
pub const MAX_STEPS: usize = 1024;
/// Upper bound of `width × steps`: the KV the live paths' own tokens may need.
pub const MAX_TREE_TOKENS: usize = 32_768;

impl ExploreParams {
    pub fn validate(&self) -> Result<()> {
        let range = |name, v: usize, max: usize| {
            if v == 0 || v > max {
                Err(Error::param(name, format!("must be 1..={max}, got {v}")))
            } else {
                Ok(())
            }
        };
        range("branches", self.branches, MAX_BRANCHES)?;
        range("width", self.width, MAX_WIDTH)?;
        range("steps", self.steps, MAX_STEPS)?;
        // Range tests are false for NaN, and every upper bound rules out infinity.
        let (t, gap) = (self.temperature, self.bifurcation_gap);
        check_range("temperature", t, t > 0.0 && t <= 100.0, "(0, 100]")?;
        check_range(
            "min_p",
            self.min_p,
            (0.0..=1.0).contains(&self.min_p),
            "[0, 1]",
        )?;
        check_range(
            "alpha",
            self.alpha,
            (0.0..=10.0).contains(&self.alpha),
            "[0, 10]",
        )?;
        check_range("bifurcation_gap", gap, (0.0..=1.0).contains(&gap), "[0, 1]")?;
        if self.stop.iter().any(String::is_empty) {
            return Err(Error::param("stop", "stop strings must not be empty"));
        }
        // Each live path may hold up to `steps` tokens of its own KV.
        if self.width * self.steps > MAX_TREE_TOKENS {
            return Err(Error::param(
                "width",
                format!(
                    "width × steps = {} exceeds {MAX_TREE_TOKENS} tokens of KV for the tree",
                    self.width * self.steps
                ),
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Kept in the frontier (and expanded, unless the search ended first).
    Live,
    /// A candidate that did not make the frontier, or a live path cut when it could no longer
    /// beat the finished ones.
    Pruned,
    /// Ends a finished path.
    Finished,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FinishReason {
    /// End-of-generation token.
    Eos,
    /// A stop string appeared, or the path's constraint is complete.
    Stop,
    /// Reached `steps`.
    Length,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Eos => "eos",
            Self::Stop => "stop",
            Self::Length => "length",
        }
    }
}

/// An alternative next token at a node, for display.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Alt {
    pub token_id: u32,
    pub text: String,
    pub logprob: f32,
}

/// One node of the tree. The root (id 0) is the prompt: no token, depth 0.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Node {
    pub id: usize,
    pub parent: Option<usize>,
    pub token_id: Option<u32>,
    pub text: String,
    /// log p of this token under its parent's tempered distribution (0 at the root).
    pub logprob: f32,
    /// Cumulative log-probability of the path to here.
    pub score: f64,
    pub depth: usize,
    /// 1 = the parent's most likely candidate.
    pub rank: usize,
    /// Entropy (nats) and varentropy of the distribution this node was drawn from (at the root:
    /// of its own next-token distribution).
    pub entropy: f32,
    pub varentropy: f32,
    pub status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finish_reason: Option<FinishReason>,
    /// This node's own next-token distribution, when it was expanded: its entropy, the gap
    /// p1 − p2 between its two best tokens, and its best tokens.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<NextDist>,
    pub bifurcation: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NextDist {
    pub entropy: f32,
    pub varentropy: f32,
    pub top_gap: f32,
    pub top: Vec<Alt>,
}

/// A finished path, identified by its last node.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Path {
    pub node: usize,
    pub text: String,
    pub token_ids: Vec<u32>,
    pub score: f64,
    pub normalized_score: f64,
    /// exp(normalized_score) normalised over all finished paths.
    pub probability: f64,
    pub finish_reason: FinishReason,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Stats {
    pub forward_passes: usize,
    /// Rows run through the model (prompt rows included).
    pub tokens_computed: usize,
    /// Peak KV blocks in use during the search.
    pub kv_blocks_used: usize,
    /// Peak blocks the same live paths would hold with no sharing.
    pub kv_blocks_unshared: usize,
    pub wall_ms: f64,
}

/// The result: the tree, the ranked finished paths, what was measured, and the analysis.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Exploration {
    pub prompt: String,
    pub prompt_token_ids: Vec<u32>,
    pub params: ExploreParams,
    pub nodes: Vec<Node>,
    /// Finished paths, best normalised score first.
    pub paths: Vec<Path>,
    /// Indices into `paths` of the measured answer(s).
    pub measured: Vec<usize>,
    pub bifurcations: Vec<usize>,
    pub verdict: Verdict,
    /// Mean entropy of the expanded nodes at each depth (index 0 = the prompt's next token).
    pub entropy_by_depth: Vec<f32>,
    pub stats: Stats,
}

/// What one level of the search decided, for watching the tree grow: the nodes expanded this
/// level (now with their `next` distribution) and the new nodes by status. Bifurcation flags and
/// the measured answer come only with the finished `Exploration`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExploreStep {
    /// Depth of the new nodes.
    pub depth: usize,
    pub expanded: Vec<Node>,
    pub live: Vec<Node>,
    pub pruned: Vec<Node>,
    pub finished: Vec<Node>,
}

/// The generated tokens of the path from the root to node `id`.
pub(crate) fn path_ids(nodes: &[Node], id: usize) -> Vec<u32> {
    let mut out = Vec::with_capacity(nodes[id].depth);
    let mut at = Some(id);
    while let Some(n) = at {
        out.extend(nodes[n].token_id);
        at = nodes[n].parent;
    }
    out.reverse();
    out
}

/// `score / generated_len^alpha`.
pub(crate) fn normalized(score: f64, len: usize, alpha: f32) -> f64 {
    if alpha == 0.0 || len == 0 {
        score
    } else {
        score / (len as f64).powf(alpha as f64)
    }
}

/// Display text of one token: its bytes as (lossy) UTF-8, or its piece for control tokens.
pub(crate) fn token_text(tok: &Tokenizer, id: u32) -> String {
    if tok.is_eog(id) {
        return tok.piece(id).to_string();
    }
    String::from_utf8_lossy(&tok.token_bytes(id)).into_owned()
}

//! The contract every part of a request's life shares, below the engine: what a front end
//! hands the engine (`Task`) and what it gets back (`Event`s on the request's own stream), the
//! record of a request that the scheduler owns (`Req`: its sequences and its policy), and the
//! policy contract itself (`policy`). A request is one or more sequences (n samples, or the live
//! paths of an exploration) that are admitted, preempted and finished together.

pub(crate) mod policy;

use crate::error::Error;
use crate::generate::{FinishReason, Request, TokenInfo};
use crate::kv::SeqId;
use crate::model::KV_BLOCK_SIZE;
use crate::overflow::{Overflow, Window};
use crate::superposition::{Exploration, ExploreParams, ExploreStep};
use policy::DynPolicy;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};

/// Names a request for its whole life. Ids are never reused; an id whose request has ended is
/// stale, and using it is an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub u64);

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Token log-probabilities of a text under the model (perplexity): the logits of positions
/// `from..ids.len() - 1` score the token after each.
#[derive(Debug, Clone)]
pub struct ScoreRequest {
    pub ids: Vec<u32>,
    pub from: usize,
    /// What to do past the context: a text longer than it is refused unless it streams.
    pub overflow: Overflow,
}

/// A superposition search (see `superposition`).
#[derive(Debug, Clone)]
pub struct ExploreRequest {
    pub prompt: String,
    pub prompt_ids: Vec<u32>,
    pub params: ExploreParams,
    /// What every path must match (compiled by `constraint::Compiler`): each branch carries
    /// its own matcher state, and the tree holds only futures that satisfy it.
    pub constraint: Option<crate::constraint::Grammar>,
}

impl ExploreRequest {
    /// KV tokens the search may hold at once (what `oneshot::explore` sizes its private engine
    /// with). Shared: the prompt once plus each live path's own blocks (one copied partial
    /// block); unshared: every live path holds its whole sequence.
    pub fn kv_tokens(&self) -> usize {
        let (p, bs) = (&self.params, KV_BLOCK_SIZE);
        let max_len = self.prompt_ids.len() + p.steps;
        if p.no_share {
            p.width * (max_len + bs)
        } else {
            max_len + bs + p.width * (p.steps + 2 * bs)
        }
    }
}

/// Work for the engine; each kind is a policy over the same forward pass.
#[derive(Debug, Clone)]
pub enum Task {
    Generate(Request),
    Score(ScoreRequest),
    Explore(ExploreRequest),
}

impl Task {
    /// Sequences the task runs at most: what it counts for in the waiting queue.
    pub fn sequences(&self) -> usize {
        match self {
            Task::Generate(r) if r.collapse.is_some() => 1,
            Task::Generate(r) => r.n.max(1),
            Task::Score(_) => 1,
            Task::Explore(r) => r.params.width.max(1),
        }
    }
}

/// What a request's stream carries. The stream ends (the channel closes) after the request's
/// last event.
#[derive(Debug)]
pub enum Event {
    /// Sample `index` produced a token.
    Token { index: usize, token: TokenInfo },
    /// Sample `index` is complete.
    Finished { index: usize, reason: FinishReason },
    /// A score request's negative log-likelihoods, one per scored position, in order.
    Scored(Vec<f32>),
    /// One level of an exploration was decided (sent before its `Explored`).
    ExploreStep(Box<ExploreStep>),
    /// One pass of a collapse request (sent before the tokens it committed).
    CollapsePass(Box<crate::collapse::CollapsePass>),
    /// A finished exploration.
    Explored(Box<Exploration>),
    /// The request gave up its KV cache to others; it waits to be readmitted and recomputes
    /// what it had (its results are unchanged). Informational.
    Preempted,
    /// The request failed or was cancelled; nothing follows.
    Error(Error),
}

/// A finished (or still running) generation.
#[derive(Debug, Clone)]
pub struct Output {
    pub prompt_ids: Vec<u32>,
    pub tokens: Vec<TokenInfo>,
    pub text: String,
    pub finish_reason: Option<FinishReason>,
}

impl Output {
    pub fn new(prompt_ids: Vec<u32>) -> Self {
        Self {
            prompt_ids,
            tokens: Vec::new(),
            text: String::new(),
            finish_reason: None,
        }
    }

    /// Folds one event of sample `index` into this output; false for events of other samples.
    pub fn absorb(&mut self, e: &Event, index: usize) -> bool {
        match e {
            Event::Token { index: i, token } if *i == index => {
                self.text.push_str(&token.text);
                self.tokens.push(token.clone());
            }
            Event::Finished { index: i, reason } if *i == index => {
                self.finish_reason = Some(*reason)
            }
            _ => return false,
        }
        true
    }
}

pub type Events = UnboundedReceiver<Event>;
pub(crate) type EventSender = UnboundedSender<Event>;

/// One sequence of a request.
#[derive(Debug, Clone)]
pub(crate) struct Seq {
    /// Its KV sequence while admitted; `None` while waiting or preempted.
    pub kv: Option<SeqId>,
    /// Prompt plus generated tokens: everything the KV must hold before its next logits.
    pub ids: Vec<u32>,
    /// Tokens of `ids` already in the KV cache (or scheduled into it this step).
    pub cached: usize,
    /// Finished: holds no KV and needs no compute.
    pub done: bool,
    /// Trailing tokens of `ids` that are speculative (a collapse policy's guesses): they run
    /// only when the step has budget left after everything else, and may be taken back.
    pub draft: usize,
    /// Tokens a streaming overflow took out of `ids` (`overflow`), all from index `gap` on:
    /// `ids` holds the sinks and the recent window, and a token's position is its index there.
    pub dropped: usize,
    pub gap: usize,
}

impl Seq {
    pub fn new(ids: Vec<u32>) -> Self {
        Self {
            kv: None,
            ids,
            cached: 0,
            done: false,
            draft: 0,
            dropped: 0,
            gap: 0,
        }
    }

    /// Tokens of the whole history, prompt and generated, dropped ones included.
    pub fn history_len(&self) -> usize {
        self.ids.len() + self.dropped
    }

    /// Where token `i` of the whole history is now in `ids`; a dropped token maps to the gap.
    pub fn index_of(&self, i: usize) -> usize {
        if i < self.gap {
            i
        } else {
            i.saturating_sub(self.dropped).max(self.gap)
        }
    }

    /// Tokens still to compute before this sequence's next logits (its draft not counted).
    pub fn pending(&self) -> usize {
        if self.done {
            0
        } else {
            (self.ids.len() - self.draft).saturating_sub(self.cached)
        }
    }

    /// Draft tokens not yet scheduled.
    pub fn draft_pending(&self) -> usize {
        if self.done {
            0
        } else {
            self.ids.len() - self.cached.max(self.ids.len() - self.draft)
        }
    }
}

/// The record of one request, owned by the scheduler.
pub(crate) struct Req {
    pub id: RequestId,
    pub policy: Box<dyn DynPolicy>,
    pub seqs: Vec<Seq>,
    pub events: EventSender,
    /// Whether its sequences read and feed the prefix cache.
    pub cacheable: bool,
    /// Streaming past the window (`overflow`): its sequences' KV never holds more than this.
    pub window: Option<Window>,
}

impl Req {
    /// Sequences that still need KV.
    pub fn live(&self) -> usize {
        self.seqs.iter().filter(|s| !s.done).count()
    }

    /// Frees every sequence's KV; their tokens stay, to be recomputed if the request runs again.
    pub fn release(&mut self, kv: &mut crate::kv::KvCache) {
        for seq in &mut self.seqs {
            if let Some(h) = seq.kv.take() {
                kv.free(h);
            }
            seq.cached = 0;
        }
    }

    /// Sends an event; a closed stream is noticed at the next step (`Engine::reap`).
    pub fn send(&self, e: Event) {
        let _ = self.events.send(e);
    }
}

//! The collapse policy over the engine loop. Sequence 0 of the request holds the committed
//! text — prompt and produced tokens, the last of which has no KV yet — followed by the guesses
//! of chain 0 (`Seq::draft`); further chains are forks of it with their own guesses. Each pass
//! reads every chain's rows greedily, keeps the chain that matched longest, emits its tokens
//! through the generation policy (stop strings, EOS, `max_tokens`, `min_tokens` behave exactly
//! as in plain generation), takes back the guesses' KV and plans the next chains.
//!
//! Under a constraint each chain carries the matcher's state at each of its rows (the committed
//! state advanced over the guesses before the row), so a row's choice is the one constrained
//! generation makes there. A chain's guesses end before the first one the constraint refuses;
//! when the constraint forces tokens after the committed text, those are chain 0's guesses.

use super::generate::GeneratePolicy;
use crate::collapse::draft::{Chain, Drafter};
use crate::collapse::{CollapseParams, CollapsePass};
use crate::constraint::Grammar;
use crate::error::Error;
use crate::generate::Request;
use crate::request::policy::{Ctx, Policy};
use crate::request::{Event, Seq};
use crate::sample::Choice;
use std::ops::Range;
use std::sync::{Mutex, PoisonError};

pub(crate) struct CollapsePolicy {
    gen: GeneratePolicy,
    params: CollapseParams,
    drafter: Drafter,
    /// The chain each sequence of the request runs, by sequence index.
    chains: Vec<Chain>,
    /// Under a constraint: by sequence index, the matcher's state at each row of its chain
    /// (row 0 is the last committed token's), each locked only by its own row's read.
    states: Vec<Vec<Mutex<Grammar>>>,
    /// Tokens of sequence 0's `ids` that are committed (the rest are guesses).
    committed: usize,
    context: usize,
}

impl CollapsePolicy {
    /// The policy for `req` (which has `collapse` set) on a model of `context` positions.
    pub fn new(mut req: Request, eog: &[u32], context: usize) -> Self {
        let params = req.collapse.unwrap_or_default();
        // Every pass reports its rows' entropies, so the statistics are always computed.
        req.sampling.stats = true;
        let drafter = Drafter::new(params, &req.prompt_ids);
        let committed = req.prompt_ids.len();
        Self {
            gen: GeneratePolicy::new(req, eog),
            params,
            drafter,
            chains: Vec::new(),
            states: Vec::new(),
            committed,
            context,
        }
    }

    /// The next pass's chains, from the drafter, fitted to the constraint if there is one.
    fn chains(&mut self) -> Vec<Chain> {
        let room = self.room();
        let mut chains = self.drafter.plan(room);
        let Some(start) = self.gen.grammar() else {
            self.states.clear();
            return chains;
        };
        let mut forced = if self.params.fast_forward {
            start.clone().forced()
        } else {
            Vec::new()
        };
        forced.truncate(room.min(self.params.window));
        if !forced.is_empty() {
            chains[0] = Chain::forced(forced);
        }
        self.states = chains
            .iter_mut()
            .map(|c| {
                let mut states = vec![start.clone()];
                let valid = c
                    .guesses
                    .iter()
                    .take_while(|&&g| {
                        let mut next = states.last().expect("row 0's state").clone();
                        let ok = next.consume(g).is_ok();
                        if ok {
                            states.push(next);
                        }
                        ok
                    })
                    .count();
                c.truncate(valid);
                states.into_iter().map(Mutex::new).collect()
            })
            .collect();
        chains
    }

    /// The sequences a new request starts with: the prompt and its first guesses.
    pub fn seqs(&mut self) -> Vec<Seq> {
        let chain = self.chains().swap_remove(0);
        self.states.truncate(1);
        let mut seq = Seq::new(self.gen.request().prompt_ids.clone());
        seq.ids.extend_from_slice(&chain.guesses);
        seq.draft = chain.guesses.len();
        self.chains = vec![chain];
        vec![seq]
    }

    /// Guesses one pass may run: no more than the tokens still to produce (a pass also makes
    /// its own), nor past the model's context.
    fn room(&self) -> usize {
        let req = self.gen.request();
        let left = req.max_tokens.saturating_sub(self.gen.produced() + 1);
        left.min(self.context.saturating_sub(self.committed))
    }
}

impl Policy for CollapsePolicy {
    /// One greedy choice (or why the constraint could not give one).
    type Read = Result<Choice, Error>;

    /// Tokens the KV cache must be able to take back: a chain's guesses.
    fn slack(&self) -> usize {
        self.params.window
    }

    /// Every row from the last committed token on.
    fn logit_positions(&self, seq: &Seq) -> Range<usize> {
        self.committed - 1..seq.ids.len()
    }

    /// The greedy choice at `pos`, made as plain generation would make it there.
    fn read(&self, s: usize, seq: &Seq, pos: usize, row: &mut [f32]) -> Result<Choice, Error> {
        let ahead = pos + 1 - self.committed;
        let produced = self.gen.produced() + ahead;
        if self.gen.request().constraint.is_none() {
            return self.gen.choose_at(&seq.ids[..=pos], produced, row, None);
        }
        let Some(state) = self.states.get(s).and_then(|rows| rows.get(ahead)) else {
            return Err(Error::Internal(format!(
                "collapse: no constraint state for sequence {s}, row {ahead}"
            )));
        };
        let mut g = state.lock().unwrap_or_else(PoisonError::into_inner);
        self.gen
            .choose_at(&seq.ids[..=pos], produced, row, Some(&mut *g))
    }

    fn apply(&mut self, ctx: &mut Ctx, reads: Vec<(usize, Result<Choice, Error>)>) {
        let mut outs: Vec<Vec<Choice>> = vec![Vec::new(); ctx.seqs.len()];
        // A row the constraint could not continue ends its chain there: the rows before it
        // are still good, and if the chain's first row failed, so does the request.
        let mut broken: Vec<Option<Error>> = ctx.seqs.iter().map(|_| None).collect();
        for (s, c) in reads {
            match c {
                Ok(c) if broken[s].is_none() => outs[s].push(c),
                Ok(_) => {}
                Err(e) => {
                    broken[s].get_or_insert(e);
                }
            }
        }
        if outs[0].is_empty() {
            if let Some(e) = broken[0].take() {
                return self.gen.fail(ctx, e);
            }
        }
        // While the prompt is being prefilled its last token has not run: nothing to decide.
        if outs[0].is_empty() {
            return;
        }
        let ids: Vec<Vec<u32>> = outs
            .iter()
            .map(|o| o.iter().map(|c| c.id).collect())
            .collect();
        let mut hits: Vec<usize> = Vec::with_capacity(outs.len());
        for (i, out) in ids.iter().enumerate() {
            let Some(chain) = self.chains.get(i).filter(|_| !out.is_empty()) else {
                hits.push(0);
                continue;
            };
            let g = &chain.guesses;
            let n = (0..g.len().min(out.len() - 1))
                .take_while(|&j| out[j] == g[j])
                .count();
            self.drafter.learn(chain, out, n);
            hits.push(n);
        }
        let best = (0..outs.len())
            .filter(|&i| !outs[i].is_empty())
            .max_by_key(|&i| (hits[i], std::cmp::Reverse(i)))
            .expect("sequence 0 has reads");
        let chain = self.chains[best].clone();
        self.drafter.advance_window(&chain, &ids[best], hits[best]);
        // The winner becomes sequence 0; every other chain is dropped.
        ctx.seqs.swap(0, best);
        for i in 1..ctx.seqs.len() {
            if !ctx.seqs[i].done {
                ctx.finish(i);
            }
        }
        let chains = outs.iter().filter(|o| !o.is_empty()).count();
        let k = hits[best];
        let mut won = std::mem::take(&mut outs[best]);
        let entropies = won.iter().map(|c| c.entropy).collect();
        won.truncate(k + 1);
        ctx.send(Event::CollapsePass(Box::new(CollapsePass {
            accepted: k + 1,
            guessed: chain.guesses.len(),
            source: chain.source,
            chains,
            rows: ctx.tokens_run,
            entropies,
        })));
        self.commit(ctx, won);
        if !self.gen.is_done() {
            self.plan(ctx);
        }
    }

    fn is_done(&self) -> bool {
        self.gen.is_done()
    }
}

impl CollapsePolicy {
    /// Keeps the KV of the last committed token and the accepted guesses, and emits the pass's
    /// tokens (stopping where generation would stop).
    fn commit(&mut self, ctx: &mut Ctx, won: Vec<Choice>) {
        let keep = self.committed + won.len() - 1;
        ctx.truncate(0, keep);
        let tokens: Vec<u32> = won.iter().map(|c| c.id).collect();
        ctx.seqs[0]
            .ids
            .push(*tokens.last().expect("a pass commits a token"));
        self.committed = keep + 1;
        self.drafter.commit(&tokens);
        for choice in won {
            self.gen.emit(ctx, 0, choice);
            if self.gen.is_done() {
                return;
            }
        }
    }

    /// Lays out the next pass: chain 0's guesses after sequence 0's text, and a fork per
    /// further chain.
    fn plan(&mut self, ctx: &mut Ctx) {
        let chains = self.chains();
        let mut by_chain = std::mem::take(&mut self.states).into_iter();
        let mut states = vec![by_chain.next().unwrap_or_default()];
        self.chains = vec![chains[0].clone()];
        for c in &chains[1..] {
            let st = by_chain.next().unwrap_or_default();
            // A chain the constraint cut to nothing has nothing to verify.
            let Some(&first) = c.guesses.first() else {
                continue;
            };
            let i = ctx.fork(0, first);
            let seq = &mut ctx.seqs[i];
            seq.ids.extend_from_slice(&c.guesses[1..]);
            seq.draft = c.guesses.len();
            if self.chains.len() <= i {
                self.chains.resize(i + 1, chains[0].clone());
                states.resize_with(i + 1, Vec::new);
            }
            self.chains[i] = c.clone();
            states[i] = st;
        }
        self.states = states;
        let seq = &mut ctx.seqs[0];
        seq.ids.extend_from_slice(&chains[0].guesses);
        seq.draft = chains[0].guesses.len();
    }
}

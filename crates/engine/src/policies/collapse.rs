//! The collapse policy over the engine loop. Sequence 0 of the request holds the committed
//! text — prompt and produced tokens, the last of which has no KV yet — followed by the guesses
//! of chain 0 (`Seq::draft`); further chains are forks of it with their own guesses. Each pass
//! reads every chain's rows greedily, keeps the chain that matched longest, emits its tokens
//! through the generation policy (stop strings, EOS, `max_tokens`, `min_tokens` behave exactly
//! as in plain generation), takes back the guesses' KV and plans the next chains.

use super::generate::GeneratePolicy;
use crate::collapse::draft::{Chain, Drafter};
use crate::collapse::{CollapseParams, CollapsePass};
use crate::generate::Request;
use crate::request::policy::{Ctx, Policy};
use crate::request::{Event, Seq};
use crate::sample::Choice;
use std::ops::Range;

pub(crate) struct CollapsePolicy {
    gen: GeneratePolicy,
    params: CollapseParams,
    drafter: Drafter,
    /// The chain each sequence of the request runs, by sequence index.
    chains: Vec<Chain>,
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
            committed,
            context,
        }
    }

    /// The sequences a new request starts with: the prompt and its first guesses.
    pub fn seqs(&mut self) -> Vec<Seq> {
        let chain = self.drafter.plan(self.room()).swap_remove(0);
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
    /// One greedy choice.
    type Read = Choice;

    /// Tokens the KV cache must be able to take back: a chain's guesses.
    fn slack(&self) -> usize {
        self.params.window
    }

    /// Every row from the last committed token on.
    fn logit_positions(&self, seq: &Seq) -> Range<usize> {
        self.committed - 1..seq.ids.len()
    }

    /// The greedy choice at `pos`, made as plain generation would make it there.
    fn read(&self, _: usize, seq: &Seq, pos: usize, row: &mut [f32]) -> Choice {
        let ahead = pos + 1 - self.committed;
        self.gen
            .choose_at(&seq.ids[..=pos], self.gen.produced() + ahead, row)
    }

    fn apply(&mut self, ctx: &mut Ctx, reads: Vec<(usize, Choice)>) {
        let mut outs: Vec<Vec<Choice>> = vec![Vec::new(); ctx.seqs.len()];
        for (s, c) in reads {
            outs[s].push(c);
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
        let chains = self.drafter.plan(self.room());
        self.chains = vec![chains[0].clone()];
        for c in &chains[1..] {
            let i = ctx.fork(0, c.guesses[0]);
            let seq = &mut ctx.seqs[i];
            seq.ids.extend_from_slice(&c.guesses[1..]);
            seq.draft = c.guesses.len();
            if self.chains.len() <= i {
                self.chains.resize(i + 1, chains[0].clone());
            }
            self.chains[i] = c.clone();
        }
        let seq = &mut ctx.seqs[0];
        seq.ids.extend_from_slice(&chains[0].guesses);
        seq.draft = chains[0].guesses.len();
    }
}

//! Where a pass's guesses come from, and how many rows they are worth. The drafter keeps the
//! committed text, the Jacobi window (last pass's outputs past the accepted point, each with its
//! trajectory: the tokens that preceded it in earlier passes) and the n-gram pool harvested from
//! those trajectories, keyed by first token. It learns, per source and per guess index, how
//! often a guess is accepted when the guesses before it were, and in lookahead mode runs a guess
//! only while the chance that it gets accepted pays for its row.
//!
//! It never pads: a pass with nothing worth guessing is a plain greedy step.

use super::{CollapseParams, Mode, Source, MAX_WINDOW};
use std::collections::HashMap;

/// Marginal cost of one more row in a pass, as a fraction of a one-row pass (measured on the
/// default model, 2 threads: 1 → 4 rows cost 1.54×, 8 rows 2.6×). A guess runs while the
/// estimated chance that it and the guesses before it are all accepted is at least this.
const ROW_COST: f32 = 0.25;
/// Passes without a guess before one is tried anyway, so that the estimates keep learning.
const PROBE_EVERY: usize = 16;
/// Weight of the newest observation in the acceptance estimates.
const LEARN: f32 = 0.2;
/// Longest suffix of the text looked for earlier in the text.
const MAX_MATCH: usize = 3;
/// Trajectory n-grams kept per first token.
const POOL_PER_KEY: usize = 8;

/// A chain's guesses, each with the tokens before it on its trajectory.
#[derive(Debug, Clone)]
pub(crate) struct Chain {
    pub source: Source,
    pub guesses: Vec<u32>,
    lineages: Vec<Vec<u32>>,
    /// Whose acceptance estimates it feeds.
    kind: Option<Kind>,
}

impl Chain {
    /// The trajectory that row `j`'s output continues: guess `j`'s lineage and guess `j`
    /// itself (`None` past the chain's guesses).
    fn trajectory(&self, j: usize) -> Option<Vec<u32>> {
        let input = *self.guesses.get(j.checked_sub(1)?)?;
        let mut traj = self.lineages[j - 1].clone();
        traj.push(input);
        Some(traj)
    }

    /// A chain of `guesses` that come from no draft (the tokens a constraint forces).
    pub fn forced(guesses: Vec<u32>) -> Self {
        Self {
            source: Source::Grammar,
            lineages: vec![Vec::new(); guesses.len()],
            guesses,
            kind: None,
        }
    }

    /// Keeps the first `n` guesses.
    pub fn truncate(&mut self, n: usize) {
        self.guesses.truncate(n);
        self.lineages.truncate(n);
    }

    fn none() -> Self {
        Self {
            source: Source::None,
            guesses: Vec::new(),
            lineages: Vec::new(),
            kind: None,
        }
    }
}

/// Acceptance estimates are kept per kind of guess.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// The text's last 3 tokens occurred before; what followed them.
    Match3,
    Match2,
    Match1,
    Ngram,
    Jacobi,
}

pub(crate) struct Drafter {
    p: CollapseParams,
    text: Vec<u32>,
    window: Vec<(u32, Vec<u32>)>,
    pool: HashMap<u32, Vec<Vec<u32>>>,
    /// Per kind and guess index: P(accepted | the guesses before it were).
    accept: [[f32; MAX_WINDOW]; 5],
    /// Passes since lookahead last guessed.
    idle: usize,
}

impl Drafter {
    pub fn new(p: CollapseParams, prompt: &[u32]) -> Self {
        let prior = |first: f32, then: f32| {
            let mut a = [then; MAX_WINDOW];
            a[0] = first;
            a
        };
        Self {
            p,
            text: prompt.to_vec(),
            window: Vec::new(),
            pool: HashMap::new(),
            accept: [
                prior(0.6, 0.8),
                prior(0.4, 0.75),
                prior(0.28, 0.7),
                prior(0.3, 0.6),
                prior(0.26, 0.4),
            ],
            idle: 0,
        }
    }

    /// Appends committed tokens to the text.
    pub fn commit(&mut self, tokens: &[u32]) {
        self.text.extend_from_slice(tokens);
    }

    /// The chains to verify after the last committed token, each with at most `room` guesses;
    /// the first is never absent (it may guess nothing).
    pub fn plan(&mut self, room: usize) -> Vec<Chain> {
        let room = room.min(self.p.window);
        let mut chains = match self.p.mode {
            Mode::Jacobi => vec![self.jacobi_chain()],
            Mode::Lookahead => self.lookahead_chains(),
        };
        for c in &mut chains {
            c.guesses.truncate(room);
            c.lineages.truncate(room);
        }
        chains.retain(|c| !c.guesses.is_empty());
        if chains.is_empty() {
            chains.push(Chain::none());
        }
        chains
    }

    /// Learns from a verified chain: `outputs[j]` is the model's choice at row j (row 0 is the
    /// last committed token, row j the chain's guess j), of which `hits` guesses matched.
    pub fn learn(&mut self, chain: &Chain, outputs: &[u32], hits: usize) {
        if let Some(kind) = chain.kind {
            let a = &mut self.accept[kind as usize];
            // Guesses a tight step budget left unrun were never verified: they teach nothing.
            let verified = chain.guesses.len().min(outputs.len().saturating_sub(1));
            for (j, slot) in a.iter_mut().enumerate().take(verified) {
                if j > hits {
                    break;
                }
                let seen = if j < hits { 1.0 } else { 0.0 };
                *slot += LEARN * (seen - *slot);
            }
        }
        // Past the first miss every output is a Jacobi step: a guess for the next position
        // made on the chain's own guesses, and the last token of an n-gram on its trajectory.
        let n = self.p.ngram;
        for (j, &out) in outputs.iter().enumerate().skip(hits + 1) {
            let Some(mut gram) = chain.trajectory(j) else {
                break;
            };
            if gram.len() + 1 >= n {
                gram.drain(..gram.len() + 1 - n);
                gram.push(out);
                self.remember(gram);
            }
        }
    }

    /// Makes the winning chain's outputs past its accepted point the next Jacobi window.
    pub fn advance_window(&mut self, chain: &Chain, outputs: &[u32], hits: usize) {
        let keep = self.p.ngram.saturating_sub(2);
        self.window = outputs
            .iter()
            .enumerate()
            .skip(hits + 1)
            .map_while(|(j, &out)| {
                let mut traj = chain.trajectory(j)?;
                let cut = traj.len().saturating_sub(keep);
                Some((out, traj.split_off(cut)))
            })
            .collect();
    }

    fn remember(&mut self, gram: Vec<u32>) {
        let list = self.pool.entry(gram[0]).or_default();
        let rest = gram[1..].to_vec();
        list.retain(|g| *g != rest);
        list.insert(0, rest);
        list.truncate(POOL_PER_KEY);
    }

    fn lookahead_chains(&mut self) -> Vec<Chain> {
        let last = *self.text.last().expect("the prompt is not empty");
        let mut found: Vec<(Kind, Vec<u32>)> = Vec::new();
        let matched = self.context_match();
        let (long, short): (Vec<_>, Vec<_>) =
            matched.into_iter().partition(|m| m.0 != Kind::Match1);
        found.extend(long);
        for g in self.pool.get(&last).into_iter().flatten() {
            found.push((Kind::Ngram, g.clone()));
        }
        found.extend(short);
        if !self.window.is_empty() {
            found.push((Kind::Jacobi, Vec::new()));
        }
        let build = |this: &Self, kind: Kind, guesses: Vec<u32>| match kind {
            Kind::Jacobi => this.jacobi_chain(),
            _ => this.text_chain(kind, guesses),
        };
        let mut chains: Vec<Chain> = Vec::new();
        let mut best = None;
        for (kind, guesses) in found {
            if chains.len() == self.p.candidates {
                break;
            }
            let mut chain = build(self, kind, guesses);
            let worth = self.worth(kind);
            let first = chain.guesses.first().copied();
            if worth == 0 || chains.iter().any(|c| c.guesses.first().copied() == first) {
                best.get_or_insert(chain);
                continue;
            }
            chain.guesses.truncate(worth);
            chain.lineages.truncate(worth);
            chains.push(chain);
        }
        if !chains.is_empty() {
            self.idle = 0;
            return chains;
        }
        // Nothing is worth its row: a plain step, but now and then the best guess is tried
        // anyway, so that a kind that failed earlier can earn its rows back.
        self.idle += 1;
        match best {
            Some(mut probe) if self.idle >= PROBE_EVERY => {
                self.idle = 0;
                probe.guesses.truncate(1);
                probe.lineages.truncate(1);
                vec![probe]
            }
            _ => Vec::new(),
        }
    }

    /// How many guesses of `kind` pay for their rows.
    fn worth(&self, kind: Kind) -> usize {
        let mut p = 1.0;
        let mut n = 0;
        for &a in &self.accept[kind as usize] {
            p *= a;
            if p < ROW_COST {
                break;
            }
            n += 1;
        }
        n
    }

    /// Guesses taken from the text itself, each with the tokens before it as its trajectory.
    fn text_chain(&self, kind: Kind, guesses: Vec<u32>) -> Chain {
        let keep = self.p.ngram.saturating_sub(2);
        let mut lineages = Vec::with_capacity(guesses.len());
        let mut before: Vec<u32> = self.text[self.text.len().saturating_sub(keep)..].to_vec();
        for &g in &guesses {
            lineages.push(before.clone());
            before.push(g);
            if before.len() > keep {
                before.remove(0);
            }
        }
        let source = match kind {
            Kind::Ngram => Source::Ngram,
            _ => Source::Context,
        };
        Chain {
            source,
            guesses,
            lineages,
            kind: Some(kind),
        }
    }

    /// The Jacobi window, extended from the text or the pool when it ran short (never padded).
    fn jacobi_chain(&self) -> Chain {
        let (mut guesses, mut lineages): (Vec<u32>, Vec<Vec<u32>>) =
            self.window.iter().cloned().unzip();
        if guesses.is_empty() {
            let Some((kind, g)) = self.context_match() else {
                return Chain::none();
            };
            return self.text_chain(kind, g);
        }
        while guesses.len() < self.p.window {
            let last = *guesses.last().expect("not empty");
            let Some(more) = self.pool.get(&last).and_then(|l| l.first()) else {
                break;
            };
            for &t in more {
                lineages.push(Vec::new());
                guesses.push(t);
            }
        }
        Chain {
            source: Source::Jacobi,
            guesses,
            lineages,
            kind: Some(Kind::Jacobi),
        }
    }

    /// What followed the latest earlier occurrence of the text's last `s` tokens, for the
    /// longest `s` from `MAX_MATCH` down to 1 that occurs.
    fn context_match(&self) -> Option<(Kind, Vec<u32>)> {
        let t = &self.text;
        let n = t.len();
        for s in (1..=MAX_MATCH.min(n.saturating_sub(1))).rev() {
            let tail = &t[n - s..];
            // `end` is where an occurrence ends (exclusive); it must leave a token after it.
            let hit = (s..n).rev().find(|&end| &t[end - s..end] == tail);
            if let Some(end) = hit {
                let take = self.p.window.min(n - end);
                let kind = [Kind::Match1, Kind::Match2, Kind::Match3][s - 1];
                return Some((kind, t[end..end + take].to_vec()));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookahead(window: usize, candidates: usize) -> CollapseParams {
        CollapseParams {
            window,
            candidates,
            ..CollapseParams::default()
        }
    }

    #[test]
    fn repeated_text_is_guessed_from_what_followed_it_before() {
        // "1 2 3 4 5 1 2 3": the last three tokens occurred before, followed by 4 5 1 2 3.
        let mut d = Drafter::new(lookahead(8, 1), &[1, 2, 3, 4, 5, 1, 2, 3]);
        let chains = d.plan(8);
        assert_eq!(chains.len(), 1);
        assert_eq!(chains[0].source, Source::Context);
        assert_eq!(chains[0].guesses[..2], [4, 5]);
        assert_eq!(chains[0].guesses.len(), chains[0].lineages.len());
    }

    #[test]
    fn guesses_never_exceed_the_room_nor_the_window_and_nothing_is_padded() {
        let text: Vec<u32> = (0..40).map(|i| i % 5).collect();
        for (room, window) in [(0, 8), (1, 8), (3, 8), (20, 4)] {
            let mut d = Drafter::new(CollapseParams::jacobi(window), &text);
            let chains = d.plan(room);
            assert!(!chains.is_empty(), "the first chain is never absent");
            for c in &chains {
                assert!(
                    c.guesses.len() <= room.min(window),
                    "room {room} window {window}"
                );
                assert_eq!(c.guesses.len(), c.lineages.len());
            }
        }
        // Text with no repetition and no history gives a plain step: no guesses at all.
        let mut d = Drafter::new(lookahead(8, 4), &[7, 8, 9]);
        let chains = d.plan(8);
        assert_eq!(chains.len(), 1);
        assert_eq!(chains[0].source, Source::None);
        assert!(chains[0].guesses.is_empty());
    }

    #[test]
    fn chains_start_with_different_tokens_and_respect_the_candidate_cap() {
        let mut d = Drafter::new(lookahead(6, 2), &[1, 2, 3, 1, 2, 4, 1, 2]);
        // Teach the pool an n-gram after the last token as well.
        d.remember(vec![2, 9, 9, 9]);
        let chains = d.plan(6);
        assert!(chains.len() <= 2);
        let firsts: Vec<u32> = chains
            .iter()
            .filter_map(|c| c.guesses.first().copied())
            .collect();
        let mut unique = firsts.clone();
        unique.dedup();
        assert_eq!(
            firsts, unique,
            "two chains never verify the same first guess"
        );
    }

    #[test]
    fn rejected_guesses_lower_their_kind_until_it_is_not_worth_a_row() {
        let mut d = Drafter::new(lookahead(8, 1), &[1, 2, 3, 4, 1, 2, 3]);
        let before = d.worth(Kind::Match3);
        assert!(before > 0);
        for _ in 0..30 {
            let chains = d.plan(8);
            let Some(c) = chains.into_iter().find(|c| c.kind == Some(Kind::Match3)) else {
                break;
            };
            // The model disagrees with the first guess every time.
            let outputs: Vec<u32> = (0..=c.guesses.len()).map(|_| 99).collect();
            d.learn(&c, &outputs, 0);
        }
        assert_eq!(
            d.worth(Kind::Match3),
            0,
            "a kind that always misses stops costing rows"
        );
    }

    #[test]
    fn the_jacobi_window_is_the_winners_outputs_past_its_accepted_point() {
        let mut d = Drafter::new(CollapseParams::jacobi(4), &[1, 2, 3, 1, 2]);
        let c = d.plan(4).swap_remove(0);
        let n = c.guesses.len();
        assert!(n >= 2, "the text repeats: {c:?}");
        // One guess accepted: rows 2.. are the next window.
        let outputs: Vec<u32> = (0..=n as u32).map(|j| 50 + j).collect();
        d.advance_window(&c, &outputs, 1);
        let next: Vec<u32> = d.window.iter().map(|w| w.0).collect();
        assert_eq!(next, outputs[2..]);
        d.commit(&outputs[..2]);
        let again = d.plan(4).swap_remove(0);
        assert_eq!(again.source, Source::Jacobi);
        assert_eq!(
            again.guesses[..next.len().min(4)],
            next[..next.len().min(4)]
        );
    }
}

//! The one contract between the scheduler and the model: a flat list of tokens from any number
//! of sequences (prompt chunks and single decode tokens mixed, no padding), each with its
//! position and sequence, and a flag for the rows whose logits are wanted. The forward pass
//! writes each row's K/V into the slot its sequence reserved; `commit_to` then records the rows
//! in the cache's block tables (the scheduler's `update` does it in the engine loop).

use crate::kv::{KvCache, SeqId};

#[derive(Debug, Default, Clone)]
pub struct Batch {
    pub tokens: Vec<u32>,
    pub positions: Vec<usize>,
    pub seqs: Vec<SeqId>,
    /// Whether row i's logits are computed; logits come back in row order of the `true` rows.
    pub want_logits: Vec<bool>,
}

impl Batch {
    pub fn clear(&mut self) {
        self.tokens.clear();
        self.positions.clear();
        self.seqs.clear();
        self.want_logits.clear();
    }

    /// Appends `tokens` of sequence `seq` starting at position `start`; only the last row asks
    /// for logits when `logits_last` is set.
    pub fn push_seq(&mut self, seq: SeqId, start: usize, tokens: &[u32], logits_last: bool) {
        for (i, &t) in tokens.iter().enumerate() {
            self.tokens.push(t);
            self.positions.push(start + i);
            self.seqs.push(seq);
            self.want_logits.push(logits_last && i + 1 == tokens.len());
        }
    }

    /// Appends `tokens` of sequence `seq` starting at position `start`; the rows whose positions
    /// fall in `want` ask for logits.
    pub fn push_rows(
        &mut self,
        seq: SeqId,
        start: usize,
        tokens: &[u32],
        want: std::ops::Range<usize>,
    ) {
        for (i, &t) in tokens.iter().enumerate() {
            self.tokens.push(t);
            self.positions.push(start + i);
            self.seqs.push(seq);
            self.want_logits.push(want.contains(&(start + i)));
        }
    }

    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Each sequence's rows as (seq, first row, row count), in order of first appearance.
    /// Rows of one sequence must be contiguous and consecutive in position.
    pub fn spans(&self) -> Vec<(SeqId, usize, usize)> {
        let mut out: Vec<(SeqId, usize, usize)> = Vec::new();
        for (i, &s) in self.seqs.iter().enumerate() {
            match out.last_mut() {
                Some(last) if last.0 == s => last.2 += 1,
                _ => out.push((s, i, 1)),
            }
        }
        out
    }

    /// Records in `kv` that this batch's rows were written (after the forward pass): each
    /// sequence grows by its rows, full blocks join the prefix cache.
    pub fn commit_to(&self, kv: &mut KvCache) {
        for (seq, first, n) in self.spans() {
            kv.commit(seq, &self.tokens[first..first + n]);
        }
    }
}

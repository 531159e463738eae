//! What goes into each weight matrix, for calibration (`everett imatrix`): per matrix the sum
//! of squared input values per column and the rows summed, per expert for expert matrices —
//! llama-imatrix's statistics, collected where our forward pass computes each matmul's input.
//! Off unless `Model::observe` turns it on; the forward pass is unchanged either way.

use std::collections::BTreeMap;

/// Sums for one matrix: `sums` is `[n_mat][cols]`, `counts` `[n_mat]`.
#[derive(Debug, Clone, Default)]
pub struct Sums {
    pub sums: Vec<f32>,
    pub counts: Vec<f32>,
}

/// Statistics keyed by weight name (`blk.3.ffn_down.weight`).
#[derive(Debug, Default)]
pub struct ActStats {
    pub entries: BTreeMap<String, Sums>,
}

impl ActStats {
    /// Adds `rows` rows of `x` (`[rows, cols]`) as input of matrix `mat` of `n_mat` (1 for an
    /// ordinary weight) named `name`.
    pub fn add(
        &mut self,
        name: String,
        x: &[f32],
        rows: usize,
        cols: usize,
        mat: usize,
        n_mat: usize,
    ) {
        let e = self.entries.entry(name).or_default();
        if e.sums.is_empty() {
            e.sums = vec![0.0; cols * n_mat];
            e.counts = vec![0.0; n_mat];
        }
        let acc = &mut e.sums[mat * cols..(mat + 1) * cols];
        for r in x[..rows * cols].chunks_exact(cols) {
            for (a, v) in acc.iter_mut().zip(r) {
                *a += v * v;
            }
        }
        e.counts[mat] += rows as f32;
    }
}

/// Where an MLP's matrices are: their layer, name suffix (`""`, `_exps`, `_shexp`) and, for
/// experts, which of how many.
pub(super) struct Site<'a> {
    pub stats: &'a mut ActStats,
    pub layer: usize,
    pub suffix: &'static str,
    pub mat: usize,
    pub n_mat: usize,
}

impl Site<'_> {
    pub fn add(&mut self, role: &str, x: &[f32], rows: usize, cols: usize) {
        let name = format!("blk.{}.{role}{}.weight", self.layer, self.suffix);
        self.stats.add(name, x, rows, cols, self.mat, self.n_mat);
    }
}

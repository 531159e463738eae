//! The feed-forward part of a block: the dense MLP, and expert layers, batch-first — the router
//! scores every row, then the rows of the step are grouped by the experts they chose, so each
//! chosen expert's matrices run once over all of its rows (`[rows_e, n_embd] @ W_e`) instead of
//! once per row. A row's output sums its experts in ascending expert order, so it does not
//! depend on what else is in the batch.

use super::layers::{Ffn, Mlp, Moe};
use super::observe::{ActStats, Site};
use crate::kernels::act::QuantActs;
use crate::kernels::matmul::{matmul, Isa};
use crate::kernels::ops::activate;
use crate::kernels::pool::ThreadPool;

/// Buffers reused across steps.
#[derive(Default)]
pub struct FfnScratch {
    logits: Vec<f32>,
    x: Vec<f32>,
    gate: Vec<f32>,
    up: Vec<f32>,
    y: Vec<f32>,
    acts: QuantActs,
}

fn grow(v: &mut Vec<f32>, n: usize) {
    if v.len() < n {
        v.resize(n, 0.0);
    }
}

/// Quantizes activations when the row length allows it (float-only models may not).
pub(super) fn quantize(pool: &ThreadPool, acts: &mut QuantActs, x: &[f32], rows: usize, k: usize) {
    if k.is_multiple_of(32) {
        acts.quantize_on(pool, x, rows, k);
    }
}

/// `out[t, d]` = the feed-forward part applied to `h[t, d]`. `obs`: calibration statistics
/// to add this layer's (layer `il`) matmul inputs to.
#[allow(clippy::too_many_arguments)]
pub(super) fn forward(
    pool: &ThreadPool,
    isa: Isa,
    ffn: &Ffn,
    h: &[f32],
    t: usize,
    s: &mut FfnScratch,
    out: &mut [f32],
    obs: Option<(&mut ActStats, usize)>,
) {
    match ffn {
        Ffn::Dense(m) => {
            let site = obs.map(|(stats, layer)| Site {
                stats,
                layer,
                suffix: "",
                mat: 0,
                n_mat: 1,
            });
            mlp(pool, isa, m, &h[..t * m.up.w.k()], t, s, out, site)
        }
        Ffn::Moe(m) => experts(pool, isa, m, h, t, s, out, obs),
    }
}

/// `out[rows, d] = down(act(gate(x), up(x)))` for `rows` rows of `x` (`[rows, d]`).
#[allow(clippy::too_many_arguments)]
fn mlp(
    pool: &ThreadPool,
    isa: Isa,
    m: &Mlp,
    x: &[f32],
    rows: usize,
    s: &mut FfnScratch,
    out: &mut [f32],
    mut site: Option<Site>,
) {
    let (d, nf) = (m.up.w.k(), m.up.w.n());
    grow(&mut s.gate, rows * nf);
    grow(&mut s.up, rows * nf);
    quantize(pool, &mut s.acts, x, rows, d);
    if let Some(site) = &mut site {
        site.add("ffn_up", x, rows, d);
        if m.gate.is_some() {
            site.add("ffn_gate", x, rows, d);
        }
    }
    let lin = |l: &super::layers::Linear, x: &[f32], acts: &QuantActs, out: &mut [f32]| {
        matmul(pool, isa, &l.w, x, acts, rows, out);
        if let Some(b) = &l.bias {
            out.chunks_exact_mut(b.len())
                .for_each(|r| r.iter_mut().zip(b).for_each(|(o, bb)| *o += bb));
        }
    };
    lin(&m.up, x, &s.acts, &mut s.up[..rows * nf]);
    if let Some(g) = &m.gate {
        lin(g, x, &s.acts, &mut s.gate[..rows * nf]);
    }
    let gate = &s.gate[..rows * nf];
    pool.for_rows(&mut s.up[..rows * nf], nf, &|i, up| {
        activate(m.act, up, &gate[i * nf..(i + 1) * nf]);
    });
    quantize(pool, &mut s.acts, &s.up, rows, nf);
    if let Some(site) = &mut site {
        site.add("ffn_down", &s.up, rows, nf);
    }
    lin(&m.down, &s.up, &s.acts, &mut out[..rows * d]);
}

/// The experts each row uses and their weights: softmax over all experts, the best `used`
/// (lower index on ties), renormalised and scaled as the model says.
fn route(moe: &Moe, logits: &[f32]) -> Vec<(usize, f32)> {
    let max = logits.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let e: Vec<f32> = logits.iter().map(|&v| (v - max).exp()).collect();
    let z: f32 = e.iter().sum();
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| e[b].total_cmp(&e[a]).then(a.cmp(&b)));
    let mut chosen: Vec<(usize, f32)> = order[..moe.used].iter().map(|&i| (i, e[i] / z)).collect();
    if moe.norm_weights {
        let sum: f32 = chosen.iter().map(|c| c.1).sum::<f32>().max(6.103_515_6e-5);
        chosen.iter_mut().for_each(|c| c.1 /= sum);
    }
    chosen.iter_mut().for_each(|c| c.1 *= moe.weights_scale);
    chosen
}

/// `out[t, d]` = the expert layer applied to `h[t, d]`.
#[allow(clippy::too_many_arguments)]
fn experts(
    pool: &ThreadPool,
    isa: Isa,
    moe: &Moe,
    h: &[f32],
    t: usize,
    s: &mut FfnScratch,
    out: &mut [f32],
    mut obs: Option<(&mut ActStats, usize)>,
) {
    let d = moe.router.w.k();
    let n_exp = moe.experts.len();
    grow(&mut s.logits, t * n_exp);
    quantize(pool, &mut s.acts, h, t, d);
    if let Some((o, il)) = &mut obs {
        o.add(format!("blk.{il}.ffn_gate_inp.weight"), h, t, d, 0, 1);
    }
    matmul(
        pool,
        isa,
        &moe.router.w,
        h,
        &s.acts,
        t,
        &mut s.logits[..t * n_exp],
    );
    // Rows of each expert, with the weight each row gives it.
    let mut by_expert: Vec<Vec<(usize, f32)>> = vec![Vec::new(); n_exp];
    for row in 0..t {
        for (e, w) in route(moe, &s.logits[row * n_exp..(row + 1) * n_exp]) {
            by_expert[e].push((row, w));
        }
    }
    out[..t * d].fill(0.0);
    let mut y = std::mem::take(&mut s.y);
    let mut x = std::mem::take(&mut s.x);
    for (e, rows) in by_expert.iter().enumerate() {
        if rows.is_empty() {
            continue;
        }
        let m = rows.len();
        grow(&mut x, m * d);
        grow(&mut y, m * d);
        for (j, &(row, _)) in rows.iter().enumerate() {
            x[j * d..(j + 1) * d].copy_from_slice(&h[row * d..(row + 1) * d]);
        }
        let site = obs.as_mut().map(|(stats, layer)| Site {
            stats,
            layer: *layer,
            suffix: "_exps",
            mat: e,
            n_mat: n_exp,
        });
        mlp(pool, isa, &moe.experts[e], &x[..m * d], m, s, &mut y, site);
        for (j, &(row, w)) in rows.iter().enumerate() {
            out[row * d..(row + 1) * d]
                .iter_mut()
                .zip(&y[j * d..(j + 1) * d])
                .for_each(|(o, v)| *o += w * v);
        }
    }
    if let (Some(shared), Some(gate)) = (&moe.shared, &moe.shared_gate) {
        grow(&mut y, t * d);
        let site = obs.map(|(stats, layer)| Site {
            stats,
            layer,
            suffix: "_shexp",
            mat: 0,
            n_mat: 1,
        });
        mlp(pool, isa, shared, &h[..t * d], t, s, &mut y, site);
        for row in 0..t {
            let g = crate::kernels::ops::dot(&h[row * d..(row + 1) * d], gate);
            let g = 1.0 / (1.0 + (-g).exp());
            out[row * d..(row + 1) * d]
                .iter_mut()
                .zip(&y[row * d..(row + 1) * d])
                .for_each(|(o, v)| *o += g * v);
        }
    }
    s.y = y;
    s.x = x;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routing_takes_the_best_experts_and_renormalises() {
        let moe = |norm: bool| Moe {
            router: super::super::layers::Linear {
                w: crate::kernels::pack::PackedMatrix::Float {
                    n: 1,
                    k: 1,
                    data: vec![0.0],
                },
                bias: None,
            },
            experts: Vec::new(),
            used: 2,
            norm_weights: norm,
            weights_scale: 1.0,
            shared: None,
            shared_gate: None,
        };
        let logits = [0.0f32, 2.0, 1.0, 2.0];
        let r = route(&moe(true), &logits);
        // Ties go to the lower index; renormalised weights sum to 1.
        assert_eq!(r.iter().map(|c| c.0).collect::<Vec<_>>(), vec![1, 3]);
        assert!((r[0].1 - 0.5).abs() < 1e-6 && (r[1].1 - 0.5).abs() < 1e-6);
        let r = route(&moe(false), &logits);
        let z: f32 = logits.iter().map(|v| v.exp()).sum();
        assert!((r[0].1 - 2f32.exp() / z).abs() < 1e-6);
    }
}

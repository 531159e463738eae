//! Causal attention of a flat batch over the paged KV cache: each row attends to its own
//! sequence's positions up to its own (inside the layer's window), never to another sequence.
//! Rows × (groups of heads sharing a KV head) are split across the thread pool; every
//! (row, head) is computed in a fixed order, so results do not depend on what else is in the
//! batch or on how heads were grouped.

use crate::batch::Batch;
use crate::kernels::disjoint::Disjoint;
use crate::kernels::heads::{self, Run, MAX_HEADS};
use crate::kernels::pool::{split, ThreadPool};
use crate::kv::KvCache;

pub struct AttnShape {
    pub n_head: usize,
    pub n_head_kv: usize,
    pub head_dim: usize,
    pub scale: f32,
    /// Scores become `cap · tanh(score / cap)` before the softmax (Gemma 2).
    pub softcap: Option<f32>,
}

/// The KV cache as one layer reads it.
#[derive(Clone, Copy)]
pub struct LayerKv<'a> {
    pub kv: &'a KvCache,
    pub layer: usize,
}

/// `out[t, h*hd..]` = softmax(q·K^T·scale) V for every row t and head h.
/// `q`: `[rows, n_head*head_dim]`; `scores`: per-thread scratch of
/// `threads * n_head * (max_len + 1)`, `max_len` the batch's largest position plus one.
pub fn attend(
    pool: &ThreadPool,
    cache: LayerKv,
    batch: &Batch,
    shape: &AttnShape,
    q: &[f32],
    out: &mut [f32],
    scores: &mut [f32],
) {
    let LayerKv { kv, layer } = cache;
    let max_len = batch.positions.iter().max().map_or(1, |p| p + 1);
    assert!(scores.len() >= pool.threads() * shape.n_head * (max_len + 1));
    let (nh, hd) = (shape.n_head, shape.head_dim);
    let group = nh / shape.n_head_kv;
    // Heads that share a KV head are computed together, so each cached key and value row is
    // read once for all of them; with too few rows to keep every thread busy the group is split.
    let mut per = group;
    while per > 1 && per.is_multiple_of(2) && batch.len() * nh / per < pool.threads() {
        per /= 2;
    }
    let out_ptr = Disjoint::new(out);
    let sc_ptr = Disjoint::new(scores);
    let items = batch.len() * nh / per;
    pool.run(&|ti, nt| {
        let span = per * (max_len + 1);
        // SAFETY: each thread owns scores[ti*span..(ti+1)*span].
        let sc = unsafe { sc_ptr.part(ti * span, span) };
        for item in split(items, ti, nt) {
            let (t, h0) = (item / (nh / per), item % (nh / per) * per);
            let pos = batch.positions[t];
            let view = kv.view(layer, batch.seqs[t]);
            let first = view.first_visible(pos);
            let len = pos + 1 - first;
            let (kvh, stride) = (h0 / group, view.row());
            let qs = &q[(t * nh + h0) * hd..(t * nh + h0 + per) * hd];
            // sc[j * len + i]: head h0 + j, key first + i; then 1/sum of each head.
            let (sc, inv) = sc.split_at_mut(per * len);
            let mut i0 = 0;
            for (_, count, keys, _) in view.runs(first, pos + 1) {
                for hc in (0..per).step_by(MAX_HEADS) {
                    let hn = MAX_HEADS.min(per - hc);
                    let (q_part, keys) = (&qs[hc * hd..(hc + hn) * hd], keys.skip(kvh * hd));
                    let out = &mut sc[hc * len + i0..];
                    let run = Run {
                        rows: keys,
                        stride,
                        n: count,
                    };
                    heads::scores(q_part, hd, run, shape.scale, out, len);
                }
                i0 += count;
            }
            for j in 0..per {
                let row = &mut sc[j * len..(j + 1) * len];
                if let Some(cap) = shape.softcap {
                    row.iter_mut().for_each(|s| *s = cap * (*s / cap).tanh());
                }
                let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
                let mut sum = 0f32;
                for s in row.iter_mut() {
                    *s = (*s - max).exp();
                    sum += *s;
                }
                inv[j] = 1.0 / sum;
            }
            // SAFETY: row t, heads h0..h0+per are written by this thread only.
            let o = unsafe { out_ptr.part((t * nh + h0) * hd, per * hd) };
            o.fill(0.0);
            let mut i0 = 0;
            for (_, count, _, values) in view.runs(first, pos + 1) {
                for hc in (0..per).step_by(MAX_HEADS) {
                    let hn = MAX_HEADS.min(per - hc);
                    let (o_part, values) = (&mut o[hc * hd..(hc + hn) * hd], values.skip(kvh * hd));
                    let w = &sc[hc * len + i0..];
                    let run = Run {
                        rows: values,
                        stride,
                        n: count,
                    };
                    heads::weighted_sum(o_part, hd, w, len, run);
                }
                i0 += count;
            }
            for (j, oh) in o.chunks_exact_mut(hd).enumerate() {
                oh.iter_mut().for_each(|v| *v *= inv[j]);
            }
        }
    });
}

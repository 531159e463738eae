//! Causal attention of a flat batch over the paged KV cache: each row attends to its own
//! sequence's positions up to its own (inside the layer's window), never to another sequence.
//! Rows × heads are split across the thread pool; every (row, head) is computed in a fixed
//! order, so results do not depend on what else is in the batch.

use crate::batch::Batch;
use crate::kernels::matmul::OutPtr;
use crate::kernels::ops::{axpy, dot};
use crate::kernels::pool::{split, ThreadPool};
use crate::kv::KvCache;

pub struct AttnShape {
    pub n_head: usize,
    pub n_head_kv: usize,
    pub head_dim: usize,
    pub scale: f32,
}

/// `out[t, h*hd..]` = softmax(q·K^T·scale) V for every row t and head h.
/// `q`: `[rows, n_head*head_dim]`; `scores`: per-thread scratch of `threads * max_len`.
pub fn attend(
    pool: &ThreadPool,
    kv: &KvCache,
    layer: usize,
    batch: &Batch,
    shape: &AttnShape,
    q: &[f32],
    out: &mut [f32],
    scores: &mut [f32],
    max_len: usize,
) {
    let (nh, hd) = (shape.n_head, shape.head_dim);
    let group = nh / shape.n_head_kv;
    let out_ptr = OutPtr(out.as_mut_ptr());
    let sc_ptr = OutPtr(scores.as_mut_ptr());
    let items = batch.len() * nh;
    pool.run(&|ti, nt| {
        // SAFETY: each thread owns scores[ti*max_len..(ti+1)*max_len].
        let sc = unsafe { std::slice::from_raw_parts_mut(sc_ptr.get().add(ti * max_len), max_len) };
        for item in split(items, ti, nt) {
            let (t, h) = (item / nh, item % nh);
            let pos = batch.positions[t];
            let view = kv.view(layer, batch.seqs[t]);
            let first = view.first_visible(pos);
            let qh = &q[(t * nh + h) * hd..(t * nh + h + 1) * hd];
            let kvh = h / group;
            let sc = &mut sc[..pos + 1 - first];
            let mut max = f32::NEG_INFINITY;
            for (i, p) in (first..=pos).enumerate() {
                let s = dot(qh, &view.key(p)[kvh * hd..(kvh + 1) * hd]) * shape.scale;
                sc[i] = s;
                max = max.max(s);
            }
            let mut sum = 0f32;
            for s in sc.iter_mut() {
                *s = (*s - max).exp();
                sum += *s;
            }
            // SAFETY: row t, head h is written by this thread only.
            let o =
                unsafe { std::slice::from_raw_parts_mut(out_ptr.get().add((t * nh + h) * hd), hd) };
            o.fill(0.0);
            for (i, p) in (first..=pos).enumerate() {
                axpy(o, sc[i], &view.value(p)[kvh * hd..(kvh + 1) * hd]);
            }
            let inv = 1.0 / sum;
            o.iter_mut().for_each(|v| *v *= inv);
        }
    });
}

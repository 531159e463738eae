//! Causal attention of a flat batch over the paged KV cache: each row attends to its own
//! sequence's positions up to its own (inside the layer's window), never to another sequence.
//!
//! A row's visible positions are cut at multiples of `SPAN`. Each span gives, per head, a
//! partial softmax: its largest score, the sum of its exponentials and their weighted sum of
//! values; the partials are folded in span order (the online softmax of flash attention), and
//! the row's output is the folded sum over the folded total. How the work is shared out never
//! changes that arithmetic, so a row's result depends only on its own sequence:
//! * Consecutive rows of one sequence (a prefill chunk) form tiles; a tile takes each span in
//!   turn for all its rows, so the span's keys and values are read from memory once per tile
//!   and per KV head (for all the query heads that share it) and then come from cache.
//! * When the batch has fewer (row, KV head) pairs than threads (one long sequence decoding),
//!   every span's partial is computed on its own, on any thread, and the partials are folded
//!   afterwards in span order: one sequence uses every core.

use crate::batch::Batch;
use crate::kernels::disjoint::Disjoint;
use crate::kernels::heads::{self, Run, MAX_HEADS, MAX_QUERIES};
use crate::kernels::pool::ThreadPool;
use crate::kernels::softmax::{exp, exp_sub_sum};
use crate::kv::{KvCache, SeqView};

/// Positions per span (aligned to multiples of it); a span of keys and values at head size
/// 256 in f16 is 128 KiB each, which a core's L2 cache holds while a tile reads it.
pub const SPAN: usize = 256;
/// Most rows in a tile.
const TILE: usize = 16;

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

/// The partial softmax of `heads` heads: `[max per head, sum per head, weighted sums (heads ×
/// head_dim)]`, `heads * (head_dim + 2)` floats.
fn part_len(heads: usize, hd: usize) -> usize {
    heads * (hd + 2)
}

/// Spans `first / SPAN ..= last / SPAN`, each cut to `first..=last`.
fn spans(first: usize, last: usize) -> impl Iterator<Item = (usize, usize)> {
    (first / SPAN..=last / SPAN)
        .map(move |c| (first.max(c * SPAN), last.min(c * SPAN + SPAN - 1) + 1))
}

/// One row's work for one KV head: where its queries are and what it sees.
struct Query<'a> {
    view: SeqView<'a>,
    /// The query heads that share the KV head, `[heads, head_dim]`.
    q: &'a [f32],
    kvh: usize,
}

/// Scores of positions `from..to` for every query of `q` (`[queries, head_dim]`, queries of KV
/// head `kvh`): query j's at `sc[j * stride..]`.
fn span_scores(
    shape: &AttnShape,
    view: &SeqView,
    kvh: usize,
    q: &[f32],
    (from, to): (usize, usize),
    sc: &mut [f32],
    stride: usize,
) {
    let hd = shape.head_dim;
    let queries = q.len() / hd;
    let mut i0 = 0;
    for (_, count, keys, _) in view.runs(from, to) {
        for qc in (0..queries).step_by(MAX_QUERIES) {
            let qn = MAX_QUERIES.min(queries - qc);
            let run = Run {
                rows: keys.skip(kvh * hd),
                stride: view.row(),
                n: count,
            };
            let out = &mut sc[qc * stride + i0..];
            heads::scores(
                &q[qc * hd..(qc + qn) * hd],
                hd,
                run,
                shape.scale,
                out,
                stride,
            );
        }
        i0 += count;
    }
}

/// The partial softmax (see `part_len`) of `heads` heads over positions `from..to`, from their
/// scores: head j's at `sc[j * stride + at..][..to - from]` (turned into weights in place).
fn span_finish(
    shape: &AttnShape,
    view: &SeqView,
    kvh: usize,
    heads: usize,
    (sc, stride, at): (&mut [f32], usize, usize),
    (from, to): (usize, usize),
    part: &mut [f32],
) {
    let hd = shape.head_dim;
    let len = to - from;
    let (ml, o) = part.split_at_mut(2 * heads);
    for j in 0..heads {
        let row = &mut sc[j * stride + at..j * stride + at + len];
        if let Some(cap) = shape.softcap {
            row.iter_mut().for_each(|s| *s = cap * (*s / cap).tanh());
        }
        let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        ml[j] = max;
        ml[heads + j] = exp_sub_sum(row, max);
    }
    o.fill(0.0);
    let mut i0 = 0;
    for (_, count, _, values) in view.runs(from, to) {
        for hc in (0..heads).step_by(MAX_HEADS) {
            let hn = MAX_HEADS.min(heads - hc);
            let run = Run {
                rows: values.skip(kvh * hd),
                stride: view.row(),
                n: count,
            };
            let w = &sc[hc * stride + at + i0..];
            heads::weighted_sum(&mut o[hc * hd..(hc + hn) * hd], hd, w, stride, run);
        }
        i0 += count;
    }
}

/// The partial softmax of positions `from..to` for `qr`'s heads into `part` (see `part_len`);
/// `sc`: scratch of `heads * SPAN`.
fn span_part(
    shape: &AttnShape,
    qr: &Query,
    range: (usize, usize),
    sc: &mut [f32],
    part: &mut [f32],
) {
    let heads = qr.q.len() / shape.head_dim;
    let len = range.1 - range.0;
    span_scores(shape, &qr.view, qr.kvh, qr.q, range, sc, len);
    span_finish(shape, &qr.view, qr.kvh, heads, (sc, len, 0), range, part);
}

/// An empty fold: max −∞, sum 0, weighted sums 0 (folding a partial into it gives the partial).
fn fold_start(acc: &mut [f32], heads: usize) {
    acc[..heads].fill(f32::NEG_INFINITY);
    acc[heads..].fill(0.0);
}

/// Folds partial `part` into `acc` (both `part_len(heads, hd)`).
fn fold(acc: &mut [f32], part: &[f32], heads: usize, hd: usize) {
    let (aml, ao) = acc.split_at_mut(2 * heads);
    let (pml, po) = part.split_at(2 * heads);
    for j in 0..heads {
        let m = aml[j].max(pml[j]);
        let (a, b) = (exp(aml[j] - m), exp(pml[j] - m));
        aml[j] = m;
        aml[heads + j] = aml[heads + j] * a + pml[heads + j] * b;
        for (x, &y) in ao[j * hd..(j + 1) * hd]
            .iter_mut()
            .zip(&po[j * hd..(j + 1) * hd])
        {
            *x = *x * a + y * b;
        }
    }
}

/// The output of a fold: each head's weighted sum over its sum.
fn fold_end(acc: &[f32], heads: usize, hd: usize, out: &mut [f32]) {
    for j in 0..heads {
        let inv = 1.0 / acc[heads + j];
        let o = &acc[2 * heads + j * hd..2 * heads + (j + 1) * hd];
        for (x, &y) in out[j * hd..(j + 1) * hd].iter_mut().zip(o) {
            *x = y * inv;
        }
    }
}

/// `out[t, h*hd..]` = softmax(q·K^T·scale) V for every row t and head h.
/// `q`, `out`: `[rows, n_head*head_dim]`; `scratch` grows as needed.
pub fn attend(
    pool: &ThreadPool,
    cache: LayerKv,
    batch: &Batch,
    shape: &AttnShape,
    q: &[f32],
    out: &mut [f32],
    scratch: &mut Vec<f32>,
) {
    let (nh, nkv, hd) = (shape.n_head, shape.n_head_kv, shape.head_dim);
    let group = nh / nkv;
    let plen = part_len(group, hd);
    let LayerKv { kv, layer } = cache;
    let query = |t: usize, kvh: usize| Query {
        view: kv.view(layer, batch.seqs[t]),
        q: &q[(t * nh + kvh * group) * hd..(t * nh + (kvh + 1) * group) * hd],
        kvh,
    };
    let visible = |t: usize| {
        let pos = batch.positions[t];
        (kv.view(layer, batch.seqs[t]).first_visible(pos), pos)
    };
    let nt = pool.threads();
    let out_ptr = Disjoint::new(out);
    if batch.len() * nkv >= nt {
        // Tiles of consecutive rows of one sequence.
        let mut tiles: Vec<(usize, usize)> = Vec::new();
        for t in 0..batch.len() {
            match tiles.last_mut() {
                Some((start, n))
                    if *n < TILE
                        && batch.seqs[t] == batch.seqs[t - 1]
                        && batch.positions[t] == batch.positions[t - 1] + 1
                        && *start + *n == t =>
                {
                    *n += 1
                }
                _ => tiles.push((t, 1)),
            }
        }
        let per_thread = 2 * group * SPAN + TILE * group * hd + (TILE + 1) * plen;
        if scratch.len() < nt * per_thread {
            scratch.resize(nt * per_thread, 0.0);
        }
        let sc_ptr = Disjoint::new(&mut scratch[..]);
        let items = tiles.len() * nkv;
        pool.run(&|ti, nt| {
            // SAFETY: each thread owns its own `per_thread` floats of the scratch.
            let mine = unsafe { sc_ptr.part(ti * per_thread, per_thread) };
            let (sc, rest) = mine.split_at_mut(2 * group * SPAN);
            let (qt, rest) = rest.split_at_mut(TILE * group * hd);
            let (part, accs) = rest.split_at_mut(plen);
            // Items dealt round-robin: a prefill's later tiles cost more than its first.
            for item in (ti..items).step_by(nt) {
                let ((start, n), kvh) = (tiles[item / nkv], item % nkv);
                let rows: Vec<(Query, (usize, usize))> = (start..start + n)
                    .map(|t| (query(t, kvh), visible(t)))
                    .collect();
                for acc in accs.chunks_exact_mut(plen).take(n) {
                    fold_start(acc, group);
                }
                let lo = rows.iter().map(|r| r.1 .0).min().unwrap_or(0);
                let hi = rows.iter().map(|r| r.1 .1).max().unwrap_or(0);
                // The tile's queries side by side, so that two rows score in one pass.
                for (r, (qr, _)) in rows.iter().enumerate() {
                    qt[r * group * hd..(r + 1) * group * hd].copy_from_slice(qr.q);
                }
                let range = |r: usize, c: usize| {
                    let (first, last) = rows[r].1;
                    let seen = c >= first / SPAN && c <= last / SPAN;
                    seen.then(|| (first.max(c * SPAN), last.min(c * SPAN + SPAN - 1) + 1))
                };
                for c in lo / SPAN..=hi / SPAN {
                    let mut r = 0;
                    while r < n {
                        let Some(a) = range(r, c) else {
                            r += 1;
                            continue;
                        };
                        // Two rows of one sequence share the span's keys: score them together
                        // (each dot product as it would be alone), finish each on its own.
                        let b = (r + 1 < n && 2 * group <= MAX_QUERIES)
                            .then(|| range(r + 1, c))
                            .flatten();
                        let k = 1 + usize::from(b.is_some());
                        let union = (
                            a.0.min(b.map_or(a.0, |b| b.0)),
                            a.1.max(b.map_or(a.1, |b| b.1)),
                        );
                        let ulen = union.1 - union.0;
                        let view = &rows[r].0.view;
                        let q = &qt[r * group * hd..(r + k) * group * hd];
                        span_scores(shape, view, kvh, q, union, sc, ulen);
                        for (i, range) in [Some(a), b].into_iter().flatten().enumerate() {
                            let rows_sc = &mut sc[i * group * ulen..];
                            span_finish(
                                shape,
                                view,
                                kvh,
                                group,
                                (rows_sc, ulen, range.0 - union.0),
                                range,
                                part,
                            );
                            fold(
                                &mut accs[(r + i) * plen..(r + i + 1) * plen],
                                part,
                                group,
                                hd,
                            );
                        }
                        r += k;
                    }
                }
                for r in 0..n {
                    let t = start + r;
                    // SAFETY: row t, heads of KV head kvh are written by this item only.
                    let o = unsafe { out_ptr.part((t * nh + kvh * group) * hd, group * hd) };
                    fold_end(&accs[r * plen..(r + 1) * plen], group, hd, o);
                }
            }
        });
        return;
    }
    // Few pairs: every span's partial on its own, then the folds.
    let mut items: Vec<(usize, usize, (usize, usize))> = Vec::new();
    let mut firsts = Vec::with_capacity(batch.len() * nkv + 1);
    for t in 0..batch.len() {
        let (first, last) = visible(t);
        for kvh in 0..nkv {
            firsts.push(items.len());
            items.extend(spans(first, last).map(|s| (t, kvh, s)));
        }
    }
    firsts.push(items.len());
    let (parts_len, sc_len) = (items.len() * plen, group * SPAN);
    if scratch.len() < parts_len + nt * sc_len {
        scratch.resize(parts_len + nt * sc_len, 0.0);
    }
    let (parts, scs) = scratch.split_at_mut(parts_len);
    let (parts_ptr, sc_ptr) = (Disjoint::new(parts), Disjoint::new(scs));
    pool.run(&|ti, nt| {
        // SAFETY: each thread owns its scores scratch.
        let sc = unsafe { sc_ptr.part(ti * sc_len, sc_len) };
        for (i, &(t, kvh, range)) in items.iter().enumerate().skip(ti).step_by(nt) {
            // SAFETY: item i's partial is written by this thread only.
            let part = unsafe { parts_ptr.part(i * plen, plen) };
            span_part(shape, &query(t, kvh), range, sc, part);
        }
    });
    let parts = &*parts;
    pool.run(&|ti, nt| {
        let mut acc = vec![0f32; plen];
        for pair in (ti..firsts.len() - 1).step_by(nt) {
            let (t, kvh) = (pair / nkv, pair % nkv);
            fold_start(&mut acc, group);
            for i in firsts[pair]..firsts[pair + 1] {
                fold(&mut acc, &parts[i * plen..(i + 1) * plen], group, hd);
            }
            // SAFETY: row t, heads of KV head kvh are written by this pair only.
            let o = unsafe { out_ptr.part((t * nh + kvh * group) * hd, group * hd) };
            fold_end(&acc, group, hd, o);
        }
    });
}

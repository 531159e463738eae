//! The batched forward pass shared by every architecture: embeddings, then per block
//! norm → QKV → (QK-norm, RoPE) → KV write → attention → output projection → (post-norm) →
//! residual → norm → MLP → (post-norm) → residual, then the final norm and logits for the rows
//! that want them. Every linear layer runs once over all rows of the batch.

use super::attention::{attend, AttnShape, LayerKv};
use super::ffn::{self, quantize, FfnScratch};
use super::layers::Linear;
use super::observe::ActStats;
use super::{Model, Qkv};
use crate::batch::Batch;
use crate::error::{Error, Result};
use crate::kernels::act::QuantActs;
use crate::kernels::matmul::matmul;
use crate::kv::KvCache;

/// Buffers reused across steps; they grow to the largest batch seen and then stay.
#[derive(Default)]
pub struct Scratch {
    x: Vec<f32>,
    h: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    qkv: Vec<f32>,
    att: Vec<f32>,
    o: Vec<f32>,
    scores: Vec<f32>,
    acts: QuantActs,
    ffn: FfnScratch,
    /// Calibration statistics, collected while set (`Model::observe`).
    pub(super) observe: Option<ActStats>,
}

fn grow(v: &mut Vec<f32>, n: usize) {
    if v.len() < n {
        v.resize(n, 0.0);
    }
}

impl Model {
    /// Runs one step. KV space for every row must have been reserved (`KvCache::reserve`); each
    /// row's K/V is written into its slot, and the caller commits the rows afterwards
    /// (`Batch::commit_to`). `logits` receives `[logit_rows, vocab]`.
    pub fn forward(
        &mut self,
        batch: &Batch,
        kv: &mut KvCache,
        logits: &mut Vec<f32>,
    ) -> Result<()> {
        self.check(batch, kv)?;
        let c = &self.config;
        let (t, d, hd) = (batch.len(), c.n_embd, c.head_dim);
        let (qn, kvn) = (c.n_head * hd, c.n_head_kv * hd);
        let s = &mut self.scratch;
        grow(&mut s.x, t * d);
        grow(&mut s.h, t * d);
        grow(&mut s.q, t * qn);
        grow(&mut s.k, t * kvn);
        grow(&mut s.v, t * kvn);
        grow(&mut s.att, t * qn);
        grow(&mut s.o, t * d);
        let w = &self.weights;
        for (i, &tok) in batch.tokens.iter().enumerate() {
            let row = &mut s.x[i * d..(i + 1) * d];
            w.embedding.row(&w.output, tok as usize, row);
            if w.embd_scale != 1.0 {
                row.iter_mut().for_each(|v| *v *= w.embd_scale);
            }
            if let Some(pe) = &w.pos_embd {
                let p = batch.positions[i];
                row.iter_mut()
                    .zip(&pe[p * d..(p + 1) * d])
                    .for_each(|(a, b)| *a += b);
            }
        }
        let shape = AttnShape {
            n_head: c.n_head,
            n_head_kv: c.n_head_kv,
            head_dim: hd,
            scale: c.attn_scale,
            softcap: c.attn_softcap,
        };
        let lin = |pool, isa, l: &Linear, x: &[f32], acts: &QuantActs, out: &mut [f32]| {
            matmul(pool, isa, &l.w, x, acts, t, out);
            if let Some(b) = &l.bias {
                out.chunks_exact_mut(b.len())
                    .for_each(|r| r.iter_mut().zip(b).for_each(|(o, bb)| *o += bb));
            }
        };
        let (pool, isa) = (&self.pool, self.isa);
        for (il, blk) in w.blocks.iter().enumerate() {
            // Attention.
            s.h[..t * d].copy_from_slice(&s.x[..t * d]);
            pool.for_rows(&mut s.h[..t * d], d, &|_, r| blk.attn_norm.apply(r, c.eps));
            quantize(pool, &mut s.acts, &s.h, t, d);
            if let Some(o) = &mut s.observe {
                let roles: &[&str] = match &blk.qkv {
                    Qkv::Separate { .. } => &["attn_q", "attn_k", "attn_v"],
                    Qkv::Fused(_) => &["attn_qkv"],
                };
                for r in roles {
                    o.add(format!("blk.{il}.{r}.weight"), &s.h, t, d, 0, 1);
                }
            }
            match &blk.qkv {
                Qkv::Separate { q, k, v } => {
                    lin(pool, isa, q, &s.h, &s.acts, &mut s.q[..t * qn]);
                    lin(pool, isa, k, &s.h, &s.acts, &mut s.k[..t * kvn]);
                    lin(pool, isa, v, &s.h, &s.acts, &mut s.v[..t * kvn]);
                }
                Qkv::Fused(l) => {
                    grow(&mut s.qkv, t * (qn + 2 * kvn));
                    lin(
                        pool,
                        isa,
                        l,
                        &s.h,
                        &s.acts,
                        &mut s.qkv[..t * (qn + 2 * kvn)],
                    );
                    for (i, r) in s.qkv.chunks_exact(qn + 2 * kvn).take(t).enumerate() {
                        s.q[i * qn..(i + 1) * qn].copy_from_slice(&r[..qn]);
                        s.k[i * kvn..(i + 1) * kvn].copy_from_slice(&r[qn..qn + kvn]);
                        s.v[i * kvn..(i + 1) * kvn].copy_from_slice(&r[qn + kvn..]);
                    }
                }
            }
            // Per-head norms and RoPE, row-parallel; then the keys and values go to the cache.
            let positions = &batch.positions;
            pool.for_rows(&mut s.q[..t * qn], qn, &|i, qr| {
                if let Some(n) = &blk.q_norm {
                    qr.chunks_exact_mut(hd).for_each(|h| n.apply(h, c.eps));
                }
                if let Some(rope) = &blk.rope {
                    rope.apply(qr, hd, positions[i]);
                }
            });
            pool.for_rows(&mut s.k[..t * kvn], kvn, &|i, kr| {
                if let Some(n) = &blk.k_norm {
                    kr.chunks_exact_mut(hd).for_each(|h| n.apply(h, c.eps));
                }
                if let Some(rope) = &blk.rope {
                    rope.apply(kr, hd, positions[i]);
                }
            });
            for i in 0..t {
                let (key, value) = (&s.k[i * kvn..(i + 1) * kvn], &s.v[i * kvn..(i + 1) * kvn]);
                kv.write(il, batch.seqs[i], batch.positions[i], key, value);
            }
            attend(
                pool,
                LayerKv { kv, layer: il },
                batch,
                &shape,
                &s.q[..t * qn],
                &mut s.att[..t * qn],
                &mut s.scores,
            );
            quantize(pool, &mut s.acts, &s.att, t, qn);
            if let Some(o) = &mut s.observe {
                o.add(format!("blk.{il}.attn_output.weight"), &s.att, t, qn, 0, 1);
            }
            lin(pool, isa, &blk.o, &s.att, &s.acts, &mut s.o[..t * d]);
            if let Some(n) = &blk.post_attn_norm {
                pool.for_rows(&mut s.o[..t * d], d, &|_, r| n.apply(r, c.eps));
            }
            s.x[..t * d]
                .iter_mut()
                .zip(&s.o[..t * d])
                .for_each(|(a, b)| *a += b);
            // MLP.
            s.h[..t * d].copy_from_slice(&s.x[..t * d]);
            pool.for_rows(&mut s.h[..t * d], d, &|_, r| blk.ffn_norm.apply(r, c.eps));
            let obs = s.observe.as_mut().map(|o| (o, il));
            ffn::forward(pool, isa, &blk.ffn, &s.h, t, &mut s.ffn, &mut s.o, obs);
            if let Some(n) = &blk.post_ffn_norm {
                pool.for_rows(&mut s.o[..t * d], d, &|_, r| n.apply(r, c.eps));
            }
            s.x[..t * d]
                .iter_mut()
                .zip(&s.o[..t * d])
                .for_each(|(a, b)| *a += b);
        }
        // Logits for the rows that want them.
        let rows: Vec<usize> = (0..t).filter(|&i| batch.want_logits[i]).collect();
        for (j, &i) in rows.iter().enumerate() {
            let (src, dst) = (i * d, j * d);
            s.h[dst..dst + d].copy_from_slice(&s.x[src..src + d]);
            w.output_norm.apply(&mut s.h[dst..dst + d], c.eps);
        }
        logits.resize(rows.len() * c.vocab, 0.0);
        if !rows.is_empty() {
            quantize(pool, &mut s.acts, &s.h, rows.len(), d);
            matmul(pool, isa, &w.output, &s.h, &s.acts, rows.len(), logits);
        }
        if let Some(cap) = c.final_softcap {
            pool.for_rows(logits, c.vocab, &|_, r| {
                r.iter_mut().for_each(|v| *v = cap * (*v / cap).tanh())
            });
        }
        Ok(())
    }

    /// Rejects a batch the model cannot run, naming the offending row.
    fn check(&self, batch: &Batch, kv: &KvCache) -> Result<()> {
        let n = batch.len();
        if batch.positions.len() != n || batch.seqs.len() != n || batch.want_logits.len() != n {
            return Err(Error::Internal(
                "batch columns have different lengths".into(),
            ));
        }
        if let Some((i, &tok)) = batch
            .tokens
            .iter()
            .enumerate()
            .find(|(_, &t)| t as usize >= self.config.vocab)
        {
            return Err(Error::Internal(format!(
                "token id {tok} at row {i} is outside the vocabulary ({})",
                self.config.vocab
            )));
        }
        let max_pos = if self.weights.pos_embd.is_some() {
            self.config.context_length
        } else {
            usize::MAX
        };
        for (seq, first, len) in batch.spans() {
            let start = batch.positions[first];
            if kv.len(seq) != start || (0..len).any(|j| batch.positions[first + j] != start + j) {
                return Err(Error::Internal(format!(
                    "rows of sequence {seq} do not continue its cache at position {}",
                    kv.len(seq)
                )));
            }
            if kv.reserved(seq) < start + len {
                return Err(Error::Internal(format!(
                    "sequence {seq}: KV space was not reserved"
                )));
            }
            if start + len > max_pos {
                return Err(Error::Internal(format!(
                    "sequence {seq} exceeds the context length {max_pos}"
                )));
            }
        }
        Ok(())
    }

    /// Decodes row `id` of the tied/untied embedding (used by tests and tools).
    pub fn embedding_row(&self, id: usize, out: &mut [f32]) {
        self.weights.embedding.row(&self.weights.output, id, out)
    }
}

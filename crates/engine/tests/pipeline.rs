//! The whole pipeline on tiny synthetic models of every architecture: against a straightforward
//! f64 reference forward (no KV cache, explicit causal + window mask), batch invariance, prefill
//! vs token-by-token decode, fork, and KV exhaustion.

use everett_engine::batch::Batch;
use everett_engine::gguf::GgufFile;
use everett_engine::kv::{KvCache, KvConfig, KvType};
use everett_engine::model::layers::{packed_row, Activation, Linear, Norm};
use everett_engine::model::{Model, Qkv};
use everett_engine::testutil::{tiny_model, Tiny};

/// One f64 vector per position.
type Rows = Vec<Vec<f64>>;

fn load(t: &Tiny) -> Model {
    Model::from_gguf(&GgufFile::from_bytes(tiny_model(t, 42)).unwrap(), 2).unwrap()
}

fn cache(m: &Model, tokens: usize) -> KvCache {
    // Small blocks so that short test sequences span many of them.
    KvCache::new(&KvConfig {
        block_size: 4,
        ..m.kv_config(tokens)
    })
}

/// Runs `tokens` as one sequence in one batch; returns logits of every row.
fn prefill(m: &mut Model, tokens: &[u32]) -> Vec<f32> {
    let mut kv = cache(m, tokens.len() + 8);
    let s = kv.new_seq();
    kv.reserve(s, tokens.len()).unwrap();
    let mut b = Batch::default();
    b.push_seq(s, 0, tokens, false);
    b.want_logits.iter_mut().for_each(|w| *w = true);
    let mut logits = Vec::new();
    m.forward(&b, &mut kv, &mut logits).unwrap();
    b.commit_to(&mut kv);
    logits
}

fn lin(l: &Linear, x: &[f64]) -> Vec<f64> {
    let (n, k) = (l.w.n(), l.w.k());
    let mut row = vec![0f32; k];
    (0..n)
        .map(|i| {
            packed_row(&l.w, i, &mut row);
            let b = l.bias.as_ref().map_or(0.0, |b| b[i] as f64);
            row.iter().zip(x).map(|(w, v)| *w as f64 * v).sum::<f64>() + b
        })
        .collect()
}

fn norm(n: &Norm, x: &[f64], eps: f32) -> Vec<f64> {
    let len = x.len() as f64;
    match &n.b {
        None => {
            let inv = 1.0 / (x.iter().map(|v| v * v).sum::<f64>() / len + eps as f64).sqrt();
            x.iter()
                .zip(&n.w)
                .map(|(v, w)| v * inv * *w as f64)
                .collect()
        }
        Some(b) => {
            let mean = x.iter().sum::<f64>() / len;
            let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / len;
            let inv = 1.0 / (var + eps as f64).sqrt();
            x.iter()
                .zip(&n.w)
                .zip(b)
                .map(|((v, w), bb)| (v - mean) * inv * *w as f64 + *bb as f64)
                .collect()
        }
    }
}

fn gelu(x: f64) -> f64 {
    0.5 * x * (1.0 + (0.797_884_560_8 * x * (1.0 + 0.044715 * x * x)).tanh())
}

fn rope(x: &mut [f64], hd: usize, pos: usize, base: f64, neox: bool) {
    for head in x.chunks_exact_mut(hd) {
        for i in 0..hd / 2 {
            let th = pos as f64 * base.powf(-((2 * i) as f64) / hd as f64);
            let (a, b) = if neox {
                (i, i + hd / 2)
            } else {
                (2 * i, 2 * i + 1)
            };
            let (x0, x1) = (head[a], head[b]);
            head[a] = x0 * th.cos() - x1 * th.sin();
            head[b] = x0 * th.sin() + x1 * th.cos();
        }
    }
}

/// The plain forward: every position recomputed, attention over an explicit mask.
/// The f64 forward; with `kv16` the cached keys and values are rounded to f16 as the cache
/// stores them.
fn reference(m: &Model, t: &Tiny, tokens: &[u32], kv: KvType) -> Vec<Vec<f64>> {
    let c = &m.config;
    let w = &m.weights;
    let (d, hd, n) = (c.n_embd, c.head_dim, tokens.len());
    let mut row = vec![0f32; d];
    let mut x: Vec<Vec<f64>> = tokens
        .iter()
        .enumerate()
        .map(|(p, &tok)| {
            m.embedding_row(tok as usize, &mut row);
            let pe = w.pos_embd.as_ref().map(|pe| &pe[p * d..(p + 1) * d]);
            (0..d)
                .map(|i| row[i] as f64 * w.embd_scale as f64 + pe.map_or(0.0, |pe| pe[i] as f64))
                .collect()
        })
        .collect();
    for (il, b) in w.blocks.iter().enumerate() {
        let h: Vec<Vec<f64>> = x.iter().map(|r| norm(&b.attn_norm, r, c.eps)).collect();
        let (mut q, mut k, mut v): (Rows, Rows, Rows) = match &b.qkv {
            Qkv::Separate { q, k, v } => (
                h.iter().map(|r| lin(q, r)).collect(),
                h.iter().map(|r| lin(k, r)).collect(),
                h.iter().map(|r| lin(v, r)).collect(),
            ),
            Qkv::Fused(l) => {
                let all: Vec<Vec<f64>> = h.iter().map(|r| lin(l, r)).collect();
                (
                    all.iter().map(|r| r[..d].to_vec()).collect(),
                    all.iter().map(|r| r[d..2 * d].to_vec()).collect(),
                    all.iter().map(|r| r[2 * d..].to_vec()).collect(),
                )
            }
        };
        let window = c.layer_window(il);
        let base = if window.is_some() {
            c.rope_base_local
        } else {
            c.rope_base
        } as f64;
        for p in 0..n {
            if let (Some(qn), Some(kn)) = (&b.q_norm, &b.k_norm) {
                q[p] = q[p].chunks(hd).flat_map(|h| norm(qn, h, c.eps)).collect();
                k[p] = k[p].chunks(hd).flat_map(|h| norm(kn, h, c.eps)).collect();
            }
            if b.rope.is_some() {
                let neox = t.arch == "gemma3";
                rope(&mut q[p], hd, p, base, neox);
                rope(&mut k[p], hd, p, base, neox);
            }
        }
        for row in k.iter_mut().chain(v.iter_mut()) {
            *row = as_cached(row, kv);
        }
        let group = c.n_head / c.n_head_kv;
        let mut att = vec![vec![0f64; c.n_head * hd]; n];
        for p in 0..n {
            for hh in 0..c.n_head {
                let kh = hh / group;
                let first = window.map_or(0, |w| (p + 1).saturating_sub(w));
                let s: Vec<f64> = (first..=p)
                    .map(|j| {
                        (0..hd)
                            .map(|i| q[p][hh * hd + i] * k[j][kh * hd + i])
                            .sum::<f64>()
                            / (hd as f64).sqrt()
                    })
                    .collect();
                let mx = s.iter().cloned().fold(f64::MIN, f64::max);
                let e: Vec<f64> = s.iter().map(|v| (v - mx).exp()).collect();
                let z: f64 = e.iter().sum();
                for (jj, j) in (first..=p).enumerate() {
                    for i in 0..hd {
                        att[p][hh * hd + i] += e[jj] / z * v[j][kh * hd + i];
                    }
                }
            }
        }
        for p in 0..n {
            let mut o = lin(&b.o, &att[p]);
            if let Some(pn) = &b.post_attn_norm {
                o = norm(pn, &o, c.eps);
            }
            x[p].iter_mut().zip(&o).for_each(|(a, b)| *a += b);
            let h = norm(&b.ffn_norm, &x[p], c.eps);
            let mlp = m.weights.dense_mlp(il).expect("dense layers only");
            let up = lin(&mlp.up, &h);
            let act: Vec<f64> = match mlp.act {
                Activation::Gelu => up.iter().map(|u| gelu(*u)).collect(),
                Activation::GeGlu => lin(mlp.gate.as_ref().unwrap(), &h)
                    .iter()
                    .zip(&up)
                    .map(|(g, u)| gelu(*g) * u)
                    .collect(),
                Activation::SwiGlu => lin(mlp.gate.as_ref().unwrap(), &h)
                    .iter()
                    .zip(&up)
                    .map(|(g, u)| g / (1.0 + (-g).exp()) * u)
                    .collect(),
            };
            let mut f = lin(&mlp.down, &act);
            if let Some(pn) = &b.post_ffn_norm {
                f = norm(pn, &f, c.eps);
            }
            x[p].iter_mut().zip(&f).for_each(|(a, b)| *a += b);
        }
    }
    let out = Linear {
        w: clone_output(m),
        bias: None,
    };
    x.iter()
        .map(|r| lin(&out, &norm(&w.output_norm, r, c.eps)))
        .collect()
}

fn clone_output(m: &Model) -> everett_engine::kernels::pack::PackedMatrix {
    let (n, k) = (m.weights.output.n(), m.weights.output.k());
    let mut data = vec![0f32; n * k];
    for i in 0..n {
        packed_row(&m.weights.output, i, &mut data[i * k..(i + 1) * k]);
    }
    everett_engine::kernels::pack::PackedMatrix::Float { n, k, data }
}

/// Every position's logits (`ours`, rows of `v`) within `tol` × the row's scale of `want`.
fn assert_near(ours: &[f32], want: &Rows, v: usize, tol: f64, what: &str) {
    for (p, w) in want.iter().enumerate() {
        let scale = w.iter().fold(0f64, |a, b| a.max(b.abs()));
        let err = w
            .iter()
            .zip(&ours[p * v..(p + 1) * v])
            .map(|(a, b)| (a - *b as f64).abs())
            .fold(0f64, f64::max);
        assert!(
            err <= tol * scale,
            "{what} pos {p}: max error {err} (scale {scale})"
        );
    }
}

fn prompt(len: usize, salt: u32) -> Vec<u32> {
    (0..len as u32)
        .map(|i| 4 + (i * 7 + salt * 13) % 90)
        .collect()
}

#[test]
fn matches_the_reference_forward_for_every_architecture() {
    let quantized = [KvType::Q8_0, KvType::Q4_0].map(|k| (Tiny::gemma3().float(), k));
    for (t, kv_type) in [Tiny::gemma3(), Tiny::llama(), Tiny::gpt2()]
        .into_iter()
        .flat_map(|t| [(t.float(), KvType::F32), (t.float(), KvType::F16)])
        .chain(quantized)
    {
        let mut m = load(&t);
        m.kv_type = kv_type;
        // 20 tokens: past the tiny Gemma window of 8, so dropped blocks and the mask are exercised.
        let toks = prompt(20, 1);
        let ours = prefill(&mut m, &toks);
        let want = reference(&m, &t, &toks, kv_type);
        // Float weights and activations: only f32 rounding separates us from the f64
        // reference. With a rounded cache, a value that lies near a half-way point can round
        // to the other neighbour than the reference's: a little more room, one block step
        // of 8 or 4 bits for the quantized caches.
        let tol = match kv_type {
            KvType::F32 => 1e-4,
            KvType::F16 => 3e-4,
            KvType::Q8_0 => 3e-3,
            KvType::Q4_0 => 3e-2,
        };
        let what = format!("{} {kv_type:?}", t.arch);
        assert_near(&ours, &want, m.config.vocab, tol, &what);
    }
}

#[test]
fn prefill_equals_token_by_token_decode() {
    let quantized = [KvType::Q8_0, KvType::Q4_0].map(|k| (Tiny::gemma3(), k));
    for (t, kv) in [Tiny::gemma3(), Tiny::llama(), Tiny::gpt2()]
        .map(|t| (t, KvType::F16))
        .into_iter()
        .chain(quantized)
    {
        let mut m = load(&t);
        m.set_kv_type(kv).unwrap();
        let toks = prompt(19, 2);
        let all = prefill(&mut m, &toks);
        assert_decode_equals(&mut m, &toks, &all, &format!("{} {kv:?}", t.arch));
    }
}

/// A row of keys or values as the cache of type `kv` holds it (f64 here).
fn as_cached(row: &[f64], kv: KvType) -> Vec<f64> {
    use everett_engine::gguf::GgmlType;
    let x: Vec<f32> = row.iter().map(|&v| v as f32).collect();
    let ty = match kv {
        KvType::F32 => return x.iter().map(|&v| v as f64).collect(),
        KvType::F16 => return x.iter().map(|&v| half::f16::from_f32(v).to_f64()).collect(),
        KvType::Q8_0 => GgmlType::Q8_0,
        KvType::Q4_0 => GgmlType::Q4_0,
    };
    let mut bytes = vec![0u8; ty.bytes_for(x.len()).unwrap()];
    everett_engine::quantize::quantize_rows(ty, &x, x.len(), None, &mut bytes).unwrap();
    let mut back = vec![0f32; x.len()];
    everett_engine::kernels::quant::dequantize(ty, &bytes, &mut back);
    back.iter().map(|&v| v as f64).collect()
}

/// Decoding `toks` one at a time gives, bit for bit, the logits `all` of their prefill.
fn assert_decode_equals(m: &mut Model, toks: &[u32], all: &[f32], what: &str) {
    let mut kv = cache(m, toks.len() + 8);
    let s = kv.new_seq();
    let (mut b, mut logits) = (Batch::default(), Vec::new());
    let v = m.config.vocab;
    for (p, &tok) in toks.iter().enumerate() {
        b.clear();
        b.push_seq(s, p, &[tok], true);
        kv.reserve(s, 1).unwrap();
        m.forward(&b, &mut kv, &mut logits).unwrap();
        b.commit_to(&mut kv);
        assert_eq!(logits, all[p * v..(p + 1) * v], "{what} position {p}");
    }
}

#[test]
fn logits_are_batch_invariant() {
    for kv in [KvType::F16, KvType::F32, KvType::Q8_0, KvType::Q4_0] {
        batch_invariant(kv);
    }
}

fn batch_invariant(kv_type: KvType) {
    let t = Tiny::gemma3();
    let mut m = load(&t);
    m.set_kv_type(kv_type).unwrap();
    let target = prompt(11, 3);
    let alone = prefill(&mut m, &target);
    let v = m.config.vocab;
    let mut kv = cache(&m, 400);
    let mut b = Batch::default();
    let mut target_seq = 0;
    for i in 0..17 {
        let s = kv.new_seq();
        let toks = if i == 9 {
            target.clone()
        } else {
            prompt(1 + (i * 5) % 23, i as u32 + 10)
        };
        if i == 9 {
            target_seq = s;
        }
        kv.reserve(s, toks.len()).unwrap();
        b.push_seq(s, 0, &toks, true);
    }
    let mut logits = Vec::new();
    m.forward(&b, &mut kv, &mut logits).unwrap();
    b.commit_to(&mut kv);
    let row = b.spans().iter().position(|sp| sp.0 == target_seq).unwrap();
    assert_eq!(
        logits[row * v..(row + 1) * v],
        alone[(target.len() - 1) * v..target.len() * v],
        "{kv_type:?}"
    );
}

#[test]
fn forked_sequence_continues_like_a_fresh_one() {
    for kv in [KvType::F16, KvType::Q8_0, KvType::Q4_0] {
        fork_continues(kv);
    }
}

fn fork_continues(kv_type: KvType) {
    let t = Tiny::gemma3();
    let mut m = load(&t);
    m.set_kv_type(kv_type).unwrap();
    let base = prompt(10, 4);
    let v = m.config.vocab;
    let mut kv = cache(&m, 64);
    let s = kv.new_seq();
    kv.reserve(s, base.len()).unwrap();
    let (mut b, mut logits) = (Batch::default(), Vec::new());
    b.push_seq(s, 0, &base, true);
    m.forward(&b, &mut kv, &mut logits).unwrap();
    b.commit_to(&mut kv);
    let used = kv.used_blocks();
    let f = kv.fork(s);
    assert_eq!(kv.used_blocks(), used, "fork copies nothing");
    // Two branches continue with different tokens in one batch.
    b.clear();
    kv.reserve(s, 1).unwrap();
    kv.reserve(f, 1).unwrap();
    b.push_seq(s, base.len(), &[50], true);
    b.push_seq(f, base.len(), &[60], true);
    m.forward(&b, &mut kv, &mut logits).unwrap();
    b.commit_to(&mut kv);
    for (row, tok) in [(0, 50), (1, 60)] {
        let mut full = base.clone();
        full.push(tok);
        let fresh = prefill(&mut m, &full);
        assert_eq!(logits[row * v..(row + 1) * v], fresh[base.len() * v..]);
    }
}

#[test]
fn a_quantized_cache_needs_heads_of_whole_blocks() {
    // Tiny Llama's heads have 16 values: half a block.
    let mut m = load(&Tiny::llama());
    let err = m.set_kv_type(KvType::Q8_0).unwrap_err().to_string();
    assert!(
        err.contains("kv_type") && err.contains("multiple of 32") && err.contains("16"),
        "{err}"
    );
    assert_eq!(m.kv_type, KvType::F16);
}

#[test]
fn running_out_of_blocks_is_reported_not_panicked() {
    let m = load(&Tiny::gemma3());
    let mut kv = cache(&m, 8);
    let s = kv.new_seq();
    assert!(kv.reserve(s, 1000).is_err());
    assert!(kv.reserve(s, 4).is_ok());
}

#[test]
fn bad_batches_are_rejected_with_a_reason() {
    let mut m = load(&Tiny::gemma3());
    let mut kv = cache(&m, 16);
    let s = kv.new_seq();
    let (mut b, mut logits) = (Batch::default(), Vec::new());
    b.push_seq(s, 0, &[5, 9999], true);
    kv.reserve(s, 2).unwrap();
    let e = m.forward(&b, &mut kv, &mut logits).unwrap_err().to_string();
    assert!(e.contains("9999"), "{e}");
    b.clear();
    b.push_seq(s, 3, &[5], true);
    assert!(m.forward(&b, &mut kv, &mut logits).is_err());
}

/// Attention over many spans (`attention::SPAN` positions each): a 600-token prefill, whose rows
/// run in tiles, matches the f64 reference at every position, and decoding the same tokens one
/// at a time — one row, its spans spread over the threads and folded after — gives the very
/// same logits.
#[test]
fn long_rows_cross_spans_exactly() {
    use everett_engine::model::attention::SPAN;
    let n = 2 * SPAN + 88;
    for t in [Tiny::gemma3(), Tiny::llama()] {
        let t = Tiny {
            ctx: 1024,
            ..t.float()
        };
        let mut m = load(&t);
        m.kv_type = KvType::F32;
        let toks = prompt(n, 5);
        let all = prefill(&mut m, &toks);
        let want = reference(&m, &t, &toks, KvType::F32);
        assert_near(&all, &want, m.config.vocab, 1e-4, t.arch);
        assert_decode_equals(&mut m, &toks, &all, t.arch);
    }
}

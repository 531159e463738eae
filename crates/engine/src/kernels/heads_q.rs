//! Attention's inner loops over a quantized KV cache — GGML Q8_0 or Q4_0 blocks of 32 values
//! with one f16 scale — read in place: each block's codes are widened in registers and its
//! scale applied once per block, so no dequantized copy of the cache is ever made. Same
//! contracts as `heads::scores` and `heads::weighted_sum` (fixed arithmetic order per row, so a
//! row's result does not depend on the batch); rows start on block boundaries.

use super::heads::KvRows;
use super::ops::has_fma;
use half::f16;

const QK: usize = 32;

/// Block `b` of `rows`: its scale and its 32 codes as floats (Q4_0's offset of 8 removed).
#[inline(always)]
fn block(rows: KvRows, b: usize) -> (f32, [f32; QK]) {
    let mut c = [0f32; QK];
    let (bytes, per) = match rows {
        KvRows::Q8_0(s) => (s, 34),
        KvRows::Q4_0(s) => (s, 18),
        _ => unreachable!("float rows go to `heads`"),
    };
    let blk = &bytes[b * per..(b + 1) * per];
    let d = f16::from_le_bytes([blk[0], blk[1]]).to_f32();
    match rows {
        KvRows::Q8_0(_) => {
            for (o, &q) in c.iter_mut().zip(&blk[2..34]) {
                *o = q as i8 as f32;
            }
        }
        _ => {
            for l in 0..16 {
                c[l] = (blk[2 + l] & 0xF) as f32 - 8.0;
                c[l + 16] = (blk[2 + l] >> 4) as f32 - 8.0;
            }
        }
    }
    (d, c)
}

/// Rows of `rows` in values (a quantized run).
pub(super) fn len(rows: KvRows) -> usize {
    match rows {
        KvRows::Q8_0(s) => s.len() / 34 * QK,
        KvRows::Q4_0(s) => s.len() / 18 * QK,
        _ => unreachable!("float rows go to `heads`"),
    }
}

/// `(q, d, keys, stride, n, scale, out, out_stride)` as `heads::scores` takes them.
pub(super) type ScoreArgs<'a> = (
    &'a [f32],
    usize,
    KvRows<'a>,
    usize,
    usize,
    f32,
    &'a mut [f32],
    usize,
);

/// `heads::scores` over quantized keys.
pub(super) fn scores(heads: usize, a: ScoreArgs) {
    #[cfg(target_arch = "x86_64")]
    if has_fma() {
        // SAFETY: the CPU has avx2 and fma (checked above).
        return unsafe { scores_fma(heads, a) };
    }
    scores_any(heads, a)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn scores_fma(heads: usize, a: ScoreArgs) {
    scores_any(heads, a)
}

#[inline(always)]
fn scores_any(heads: usize, (q, d, keys, stride, n, scale, out, out_stride): ScoreArgs) {
    let nb = d / QK;
    for i in 0..n {
        let first = i * stride / QK;
        // Eight lanes per query across the whole row, each block's lanes scaled in: one
        // horizontal sum per row, not per block.
        let mut acc = [[0f32; 8]; 8];
        let acc = &mut acc[..heads];
        for b in 0..nb {
            let (s, c) = block(keys, first + b);
            for (j, a) in acc.iter_mut().enumerate() {
                let qb = &q[j * d + b * QK..j * d + (b + 1) * QK];
                let mut lanes = [0f32; 8];
                for k in 0..QK / 8 {
                    for l in 0..8 {
                        lanes[l] = qb[k * 8 + l].mul_add(c[k * 8 + l], lanes[l]);
                    }
                }
                for l in 0..8 {
                    a[l] = s.mul_add(lanes[l], a[l]);
                }
            }
        }
        for (j, a) in acc.iter().enumerate() {
            out[j * out_stride + i] = a.iter().sum::<f32>() * scale;
        }
    }
}

/// `(out, d, w, w_stride, values, stride, n)` as `heads::weighted_sum` takes them.
pub(super) type SumArgs<'a> = (
    &'a mut [f32],
    usize,
    &'a [f32],
    usize,
    KvRows<'a>,
    usize,
    usize,
);

/// `heads::weighted_sum` over quantized values.
pub(super) fn weighted_sum(heads: usize, a: SumArgs) {
    #[cfg(target_arch = "x86_64")]
    if has_fma() {
        // SAFETY: the CPU has avx2 and fma (checked above).
        return unsafe { weighted_fma(heads, a) };
    }
    weighted_any(heads, a)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn weighted_fma(heads: usize, a: SumArgs) {
    weighted_any(heads, a)
}

#[inline(always)]
fn weighted_any(heads: usize, (out, d, w, w_stride, values, stride, n): SumArgs) {
    let nb = d / QK;
    for i in 0..n {
        let first = i * stride / QK;
        for b in 0..nb {
            let (s, c) = block(values, first + b);
            for j in 0..heads {
                let f = w[j * w_stride + i] * s;
                let o = &mut out[j * d + b * QK..j * d + (b + 1) * QK];
                for l in 0..QK {
                    o[l] = f.mul_add(c[l], o[l]);
                }
            }
        }
    }
}

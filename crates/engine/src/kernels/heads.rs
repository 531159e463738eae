//! The inner loops of attention for a group of heads that share one KV head: the scores of every
//! head against one run of cached keys, and the score-weighted sum of a run of cached values.
//! Each head's arithmetic is exactly that of `ops::dot` and repeated `ops::axpy` (same lanes,
//! same order, one fused multiply-add per term): the heads are interleaved only so that their
//! independent chains overlap and each cached row is loaded once for all of them.

use super::ops::has_fma;

/// Heads handled together by one pass (the register budget of the AVX2 variants).
pub const MAX_HEADS: usize = 4;

/// `out[j * out_stride + i] = dot(q[j*d..(j+1)*d], keys[i*stride..][..d]) * scale` for heads
/// `j < q.len() / d` and rows `i < n`.
#[allow(clippy::too_many_arguments)]
pub fn scores(
    q: &[f32],
    d: usize,
    keys: &[f32],
    stride: usize,
    n: usize,
    scale: f32,
    out: &mut [f32],
    out_stride: usize,
) {
    let heads = q.len() / d;
    assert!((1..=MAX_HEADS).contains(&heads) && q.len() == heads * d);
    assert!(n == 0 || (n - 1) * stride + d <= keys.len());
    assert!((heads - 1) * out_stride + n <= out.len());
    let args = (q, d, keys, stride, n, scale, out, out_stride);
    #[cfg(target_arch = "x86_64")]
    if has_fma() {
        // SAFETY: the CPU has avx2 and fma (checked above).
        return unsafe { scores_fma(heads, args) };
    }
    scores_any(heads, args)
}

type ScoreArgs<'a> = (
    &'a [f32],
    usize,
    &'a [f32],
    usize,
    usize,
    f32,
    &'a mut [f32],
    usize,
);

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn scores_fma(heads: usize, a: ScoreArgs) {
    scores_any(heads, a)
}

#[inline(always)]
fn scores_any(heads: usize, a: ScoreArgs) {
    match heads {
        1 => scores_h::<1>(a),
        2 => scores_h::<2>(a),
        3 => scores_h::<3>(a),
        _ => scores_h::<4>(a),
    }
}

#[inline(always)]
fn scores_h<const H: usize>((q, d, keys, stride, n, scale, out, out_stride): ScoreArgs) {
    let full = d - d % 8;
    for i in 0..n {
        let key = &keys[i * stride..i * stride + d];
        let mut acc = [[0f32; 8]; H];
        for c in (0..full).step_by(8) {
            let k8: &[f32; 8] = key[c..c + 8].try_into().unwrap();
            for (j, lanes) in acc.iter_mut().enumerate() {
                let q8: &[f32; 8] = q[j * d + c..j * d + c + 8].try_into().unwrap();
                for l in 0..8 {
                    lanes[l] = q8[l].mul_add(k8[l], lanes[l]);
                }
            }
        }
        for (j, lanes) in acc.iter().enumerate() {
            let tail: f32 = q[j * d + full..(j + 1) * d]
                .iter()
                .zip(&key[full..])
                .map(|(x, y)| x * y)
                .sum();
            out[j * out_stride + i] = (lanes.iter().sum::<f32>() + tail) * scale;
        }
    }
}

/// `out[j*d..(j+1)*d] += Σ_i w[j * w_stride + i] · values[i*stride..][..d]` for heads
/// `j < out.len() / d` and rows `i < n`, each element accumulated in row order.
#[allow(clippy::too_many_arguments)]
pub fn weighted_sum(
    out: &mut [f32],
    d: usize,
    w: &[f32],
    w_stride: usize,
    values: &[f32],
    stride: usize,
    n: usize,
) {
    let heads = out.len() / d;
    assert!((1..=MAX_HEADS).contains(&heads) && out.len() == heads * d);
    assert!(n == 0 || (n - 1) * stride + d <= values.len());
    assert!((heads - 1) * w_stride + n <= w.len());
    let args = (out, d, w, w_stride, values, stride, n);
    #[cfg(target_arch = "x86_64")]
    if has_fma() {
        // SAFETY: the CPU has avx2 and fma (checked above).
        return unsafe { weighted_fma(heads, args) };
    }
    weighted_any(heads, args)
}

type SumArgs<'a> = (
    &'a mut [f32],
    usize,
    &'a [f32],
    usize,
    &'a [f32],
    usize,
    usize,
);

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn weighted_fma(heads: usize, a: SumArgs) {
    weighted_any(heads, a)
}

#[inline(always)]
fn weighted_any(heads: usize, a: SumArgs) {
    match heads {
        1 => weighted_h::<1>(a),
        2 => weighted_h::<2>(a),
        3 => weighted_h::<3>(a),
        _ => weighted_h::<4>(a),
    }
}

#[inline(always)]
fn weighted_h<const H: usize>((out, d, w, w_stride, values, stride, n): SumArgs) {
    const C: usize = 16;
    let full = d - d % C;
    for c in (0..full).step_by(C) {
        // A 16-wide column chunk of every head stays in registers over all rows.
        let mut acc = [[0f32; C]; H];
        for (j, a) in acc.iter_mut().enumerate() {
            a.copy_from_slice(&out[j * d + c..j * d + c + C]);
        }
        for i in 0..n {
            let v: &[f32; C] = values[i * stride + c..i * stride + c + C]
                .try_into()
                .unwrap();
            for (j, a) in acc.iter_mut().enumerate() {
                let s = w[j * w_stride + i];
                for l in 0..C {
                    a[l] = s.mul_add(v[l], a[l]);
                }
            }
        }
        for (j, a) in acc.iter().enumerate() {
            out[j * d + c..j * d + c + C].copy_from_slice(a);
        }
    }
    for c in full..d {
        for j in 0..H {
            let mut o = out[j * d + c];
            for i in 0..n {
                o = w[j * w_stride + i].mul_add(values[i * stride + c], o);
            }
            out[j * d + c] = o;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::ops::{axpy, dot};

    fn data(n: usize, salt: u32) -> Vec<f32> {
        (0..n)
            .map(|i| (((i as u32).wrapping_mul(2_654_435_761) ^ salt) % 2001) as f32 / 1000.0 - 1.0)
            .collect()
    }

    #[test]
    fn heads_together_give_the_bits_of_one_head_at_a_time() {
        for (heads, d, n, stride) in [
            (1, 32, 5, 40),
            (4, 256, 9, 256),
            (3, 20, 7, 24),
            (2, 16, 1, 16),
        ] {
            let q = data(heads * d, 1);
            let rows = data(n * stride + d, 2);
            let (ws, scale) = (n + 3, 0.125);
            let mut sc = vec![0f32; heads * ws];
            scores(&q, d, &rows, stride, n, scale, &mut sc, ws);
            let mut out = data(heads * d, 3);
            let mut expect = out.clone();
            weighted_sum(&mut out, d, &sc, ws, &rows, stride, n);
            for j in 0..heads {
                for i in 0..n {
                    let key = &rows[i * stride..i * stride + d];
                    let s = dot(&q[j * d..(j + 1) * d], key) * scale;
                    assert_eq!(sc[j * ws + i].to_bits(), s.to_bits(), "score h{j} r{i}");
                    axpy(&mut expect[j * d..(j + 1) * d], s, key);
                }
            }
            assert!(out
                .iter()
                .zip(&expect)
                .all(|(a, b)| a.to_bits() == b.to_bits()));
        }
    }
}

//! The inner loops of attention for a group of heads that share one KV head: the scores of every
//! head against one run of cached keys, and the score-weighted sum of a run of cached values.
//! Each head's arithmetic is exactly that of `ops::dot` and repeated `ops::axpy` (same lanes,
//! same order, one fused multiply-add per term): the heads are interleaved only so that their
//! independent chains overlap and each cached row is loaded once for all of them. Rows cached
//! as f16 are widened to f32 exactly before that same arithmetic.

use super::ops::has_fma;
use half::f16;

/// Cached rows as stored: f32, f16 bits, or the bytes of Q8_0 / Q4_0 blocks (`heads_q`).
#[derive(Clone, Copy)]
pub enum KvRows<'a> {
    F32(&'a [f32]),
    F16(&'a [u16]),
    Q8_0(&'a [u8]),
    Q4_0(&'a [u8]),
}

impl<'a> KvRows<'a> {
    /// Values held.
    pub fn len(&self) -> usize {
        match self {
            Self::F32(r) => r.len(),
            Self::F16(r) => r.len(),
            _ => super::heads_q::len(*self),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The rows from value `at` on (a block boundary for the quantized types).
    pub fn skip(self, at: usize) -> Self {
        match self {
            Self::F32(r) => Self::F32(&r[at..]),
            Self::F16(r) => Self::F16(&r[at..]),
            Self::Q8_0(r) => {
                assert!(at.is_multiple_of(32), "a Q8_0 run starts on a block");
                Self::Q8_0(&r[at / 32 * 34..])
            }
            Self::Q4_0(r) => {
                assert!(at.is_multiple_of(32), "a Q4_0 run starts on a block");
                Self::Q4_0(&r[at / 32 * 18..])
            }
        }
    }
}

/// `n` cached rows of one KV head, `stride` elements apart (the first `d` of each are read).
#[derive(Clone, Copy)]
pub struct Run<'a> {
    pub rows: KvRows<'a>,
    pub stride: usize,
    pub n: usize,
}

/// An element of a cached row, widened to f32 exactly.
trait Elem: Copy {
    fn f32(self) -> f32;
}
impl Elem for f32 {
    #[inline(always)]
    fn f32(self) -> f32 {
        self
    }
}
impl Elem for u16 {
    #[inline(always)]
    fn f32(self) -> f32 {
        f16::from_bits(self).to_f32()
    }
}

/// Heads handled together by one pass of `weighted_sum` (the register budget of the AVX2
/// variants: two accumulators per head).
pub const MAX_HEADS: usize = 4;
/// Queries handled together by one pass of `scores` (one accumulator each): the heads of two
/// rows of a prefill tile, so each key is widened once for both.
pub const MAX_QUERIES: usize = 8;

/// Calls `$f::<H>` (then the other generic parameters) with the query count as a constant.
macro_rules! by_queries {
    ($heads:expr, $f:ident, $a:expr $(, $t:ty)?) => {
        match $heads {
            1 => $f::<1 $(, $t)?>($a),
            2 => $f::<2 $(, $t)?>($a),
            3 => $f::<3 $(, $t)?>($a),
            4 => $f::<4 $(, $t)?>($a),
            5 => $f::<5 $(, $t)?>($a),
            6 => $f::<6 $(, $t)?>($a),
            7 => $f::<7 $(, $t)?>($a),
            _ => $f::<8 $(, $t)?>($a),
        }
    };
}

/// Calls `$f::<H>` (then the other generic parameters) with the head count as a constant.
macro_rules! by_heads {
    ($heads:expr, $f:ident, $a:expr $(, $t:ty)?) => {
        match $heads {
            1 => $f::<1 $(, $t)?>($a),
            2 => $f::<2 $(, $t)?>($a),
            3 => $f::<3 $(, $t)?>($a),
            _ => $f::<4 $(, $t)?>($a),
        }
    };
}

/// `out[j * out_stride + i] = dot(q[j*d..(j+1)*d], keys[i*stride..][..d]) * scale` for queries
/// `j < q.len() / d` (at most `MAX_QUERIES`) and rows `i < n` of `keys`; each dot product's
/// arithmetic is the same whatever the number of queries.
pub fn scores(q: &[f32], d: usize, keys: Run, scale: f32, out: &mut [f32], out_stride: usize) {
    let Run {
        rows: keys,
        stride,
        n,
    } = keys;
    let heads = q.len() / d;
    assert!((1..=MAX_QUERIES).contains(&heads) && q.len() == heads * d);
    assert!(n == 0 || (n - 1) * stride + d <= keys.len());
    assert!((heads - 1) * out_stride + n <= out.len());
    match keys {
        KvRows::F32(k) => {
            let a = (q, d, k, stride, n, scale, out, out_stride);
            #[cfg(target_arch = "x86_64")]
            if has_fma() {
                // SAFETY: the CPU has avx2 and fma (checked above).
                return unsafe { scores_fma(heads, a) };
            }
            scores_any(heads, a)
        }
        KvRows::F16(k) => {
            let a = (q, d, k, stride, n, scale, out, out_stride);
            #[cfg(target_arch = "x86_64")]
            if has_f16c() {
                // SAFETY: the CPU has avx2, fma and f16c (checked above).
                return unsafe { x86::scores_f16c(heads, a) };
            }
            scores_any(heads, a)
        }
        quantized => {
            assert!(
                d.is_multiple_of(32) && stride.is_multiple_of(32),
                "rows of whole blocks"
            );
            super::heads_q::scores(heads, (q, d, quantized, stride, n, scale, out, out_stride))
        }
    }
}

type ScoreArgs<'a, E> = (
    &'a [f32],
    usize,
    &'a [E],
    usize,
    usize,
    f32,
    &'a mut [f32],
    usize,
);

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn scores_fma(heads: usize, a: ScoreArgs<f32>) {
    scores_any(heads, a)
}

#[inline(always)]
fn scores_any<E: Elem>(heads: usize, a: ScoreArgs<E>) {
    by_queries!(heads, scores_h, a, E)
}

#[inline(always)]
fn scores_h<const H: usize, E: Elem>(
    (q, d, keys, stride, n, scale, out, out_stride): ScoreArgs<E>,
) {
    let full = d - d % 8;
    for i in 0..n {
        let key = &keys[i * stride..i * stride + d];
        let mut acc = [[0f32; 8]; H];
        for c in (0..full).step_by(8) {
            let k8: [f32; 8] = std::array::from_fn(|l| key[c + l].f32());
            for (j, lanes) in acc.iter_mut().enumerate() {
                let q8: &[f32; 8] = q[j * d + c..j * d + c + 8].try_into().unwrap();
                for l in 0..8 {
                    lanes[l] = q8[l].mul_add(k8[l], lanes[l]);
                }
            }
        }
        for (j, lanes) in acc.iter().enumerate() {
            out[j * out_stride + i] =
                finish(lanes, &q[j * d + full..(j + 1) * d], &key[full..]) * scale;
        }
    }
}

/// The end of one head's dot product, as `ops::dot` ends it: the lanes summed in order, plus
/// the products of the last `d % 8` elements.
#[inline(always)]
fn finish<E: Elem>(lanes: &[f32; 8], q_tail: &[f32], key_tail: &[E]) -> f32 {
    let tail: f32 = q_tail.iter().zip(key_tail).map(|(x, y)| x * y.f32()).sum();
    lanes.iter().sum::<f32>() + tail
}

/// `out[j*d..(j+1)*d] += Σ_i w[j * w_stride + i] · values[i*stride..][..d]` for heads
/// `j < out.len() / d` and rows `i < n` of `values`, each element accumulated in row order.
pub fn weighted_sum(out: &mut [f32], d: usize, w: &[f32], w_stride: usize, values: Run) {
    let Run {
        rows: values,
        stride,
        n,
    } = values;
    let heads = out.len() / d;
    assert!((1..=MAX_HEADS).contains(&heads) && out.len() == heads * d);
    assert!(n == 0 || (n - 1) * stride + d <= values.len());
    assert!((heads - 1) * w_stride + n <= w.len());
    match values {
        KvRows::F32(v) => {
            let a = (out, d, w, w_stride, v, stride, n);
            #[cfg(target_arch = "x86_64")]
            if has_fma() {
                // SAFETY: the CPU has avx2 and fma (checked above).
                return unsafe { weighted_fma(heads, a) };
            }
            weighted_any(heads, a)
        }
        KvRows::F16(v) => {
            let a = (out, d, w, w_stride, v, stride, n);
            #[cfg(target_arch = "x86_64")]
            if has_f16c() {
                // SAFETY: the CPU has avx2, fma and f16c (checked above).
                return unsafe { x86::weighted_f16c(heads, a) };
            }
            weighted_any(heads, a)
        }
        quantized => {
            assert!(
                d.is_multiple_of(32) && stride.is_multiple_of(32),
                "rows of whole blocks"
            );
            super::heads_q::weighted_sum(heads, (out, d, w, w_stride, quantized, stride, n))
        }
    }
}

type SumArgs<'a, E> = (
    &'a mut [f32],
    usize,
    &'a [f32],
    usize,
    &'a [E],
    usize,
    usize,
);

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn weighted_fma(heads: usize, a: SumArgs<f32>) {
    weighted_any(heads, a)
}

#[inline(always)]
fn weighted_any<E: Elem>(heads: usize, a: SumArgs<E>) {
    by_heads!(heads, weighted_h, a, E)
}

/// Columns of every head kept in registers over all rows.
const CHUNK: usize = 16;

#[inline(always)]
fn weighted_h<const H: usize, E: Elem>((out, d, w, w_stride, values, stride, n): SumArgs<E>) {
    let full = d - d % CHUNK;
    for c in (0..full).step_by(CHUNK) {
        let mut acc = [[0f32; CHUNK]; H];
        for (j, a) in acc.iter_mut().enumerate() {
            a.copy_from_slice(&out[j * d + c..j * d + c + CHUNK]);
        }
        for i in 0..n {
            let v: [f32; CHUNK] = std::array::from_fn(|l| values[i * stride + c + l].f32());
            for (j, a) in acc.iter_mut().enumerate() {
                let s = w[j * w_stride + i];
                for l in 0..CHUNK {
                    a[l] = s.mul_add(v[l], a[l]);
                }
            }
        }
        for (j, a) in acc.iter().enumerate() {
            out[j * d + c..j * d + c + CHUNK].copy_from_slice(a);
        }
    }
    weighted_tail((out, d, full), w, w_stride, (values, stride, n), H);
}

/// Columns `from..d` of `weighted_sum` for `heads` heads, one element at a time; `cached` is
/// (values, stride, rows).
#[inline(always)]
fn weighted_tail<E: Elem>(
    (out, d, from): (&mut [f32], usize, usize),
    w: &[f32],
    w_stride: usize,
    (values, stride, n): (&[E], usize, usize),
    heads: usize,
) {
    for c in from..d {
        for j in 0..heads {
            let mut o = out[j * d + c];
            for i in 0..n {
                o = w[j * w_stride + i].mul_add(values[i * stride + c].f32(), o);
            }
            out[j * d + c] = o;
        }
    }
}

/// Whether the F16C variants may run on this CPU.
#[cfg(target_arch = "x86_64")]
fn has_f16c() -> bool {
    has_fma() && std::is_x86_feature_detected!("f16c")
}

/// The f16 kernels with the CPU's exact half-to-float conversion.
#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{finish, weighted_tail, ScoreArgs, SumArgs, CHUNK};
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn scores_f16c(heads: usize, a: ScoreArgs<u16>) {
        // SAFETY: forwarded target features.
        unsafe { by_queries!(heads, scores_h, a) }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn scores_h<const H: usize>(
        (q, d, keys, stride, n, scale, out, out_stride): ScoreArgs<u16>,
    ) {
        let full = d - d % 8;
        for i in 0..n {
            let key = &keys[i * stride..i * stride + d];
            let mut acc = [_mm256_setzero_ps(); H];
            for c in (0..full).step_by(8) {
                // SAFETY: c + 8 <= d = key.len() = each head's q length.
                unsafe {
                    let k8 = _mm256_cvtph_ps(_mm_loadu_si128(key.as_ptr().add(c) as *const _));
                    for (j, lanes) in acc.iter_mut().enumerate() {
                        let q8 = _mm256_loadu_ps(q.as_ptr().add(j * d + c));
                        *lanes = _mm256_fmadd_ps(q8, k8, *lanes);
                    }
                }
            }
            for (j, lanes) in acc.iter().enumerate() {
                let mut l = [0f32; 8];
                // SAFETY: l holds 8 floats.
                unsafe { _mm256_storeu_ps(l.as_mut_ptr(), *lanes) };
                out[j * out_stride + i] =
                    finish(&l, &q[j * d + full..(j + 1) * d], &key[full..]) * scale;
            }
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn weighted_f16c(heads: usize, a: SumArgs<u16>) {
        // SAFETY: forwarded target features.
        unsafe { by_heads!(heads, weighted_h, a) }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn weighted_h<const H: usize>((out, d, w, w_stride, values, stride, n): SumArgs<u16>) {
        let full = d - d % CHUNK;
        // SAFETY: the caller checked that rows i < n of `values` hold d elements at stride
        // `stride`, that `w` holds every (head, row) weight and `out` every head's d columns.
        unsafe {
            let (o, v) = (out.as_mut_ptr(), values.as_ptr());
            for c in (0..full).step_by(CHUNK) {
                let mut acc = [[_mm256_setzero_ps(); 2]; H];
                for (j, a) in acc.iter_mut().enumerate() {
                    a[0] = _mm256_loadu_ps(o.add(j * d + c));
                    a[1] = _mm256_loadu_ps(o.add(j * d + c + 8));
                }
                for i in 0..n {
                    let row = v.add(i * stride + c);
                    let v0 = _mm256_cvtph_ps(_mm_loadu_si128(row as *const _));
                    let v1 = _mm256_cvtph_ps(_mm_loadu_si128(row.add(8) as *const _));
                    for (j, a) in acc.iter_mut().enumerate() {
                        let s = _mm256_set1_ps(*w.get_unchecked(j * w_stride + i));
                        a[0] = _mm256_fmadd_ps(s, v0, a[0]);
                        a[1] = _mm256_fmadd_ps(s, v1, a[1]);
                    }
                }
                for (j, a) in acc.iter().enumerate() {
                    _mm256_storeu_ps(o.add(j * d + c), a[0]);
                    _mm256_storeu_ps(o.add(j * d + c + 8), a[1]);
                }
            }
        }
        weighted_tail((out, d, full), w, w_stride, (values, stride, n), H);
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
            let run = Run {
                rows: KvRows::F32(&rows),
                stride,
                n,
            };
            scores(&q, d, run, scale, &mut sc, ws);
            let mut out = data(heads * d, 3);
            let mut expect = out.clone();
            weighted_sum(&mut out, d, &sc, ws, run);
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

    #[test]
    fn eight_queries_score_as_one_at_a_time() {
        let (d, n, stride) = (256, 6, 256);
        let q = data(MAX_QUERIES * d, 7);
        let half: Vec<u16> = data(n * stride, 8)
            .into_iter()
            .map(|x| f16::from_f32(x).to_bits())
            .collect();
        let mut all = vec![0f32; MAX_QUERIES * n];
        let run = Run {
            rows: KvRows::F16(&half),
            stride,
            n,
        };
        scores(&q, d, run, 0.25, &mut all, n);
        for j in 0..MAX_QUERIES {
            let mut one = vec![0f32; n];
            scores(&q[j * d..(j + 1) * d], d, run, 0.25, &mut one, n);
            assert_eq!(one, all[j * n..(j + 1) * n], "query {j}");
        }
    }

    #[test]
    fn f16_rows_give_the_bits_of_their_f32_values_on_every_path() {
        for (heads, d, n, stride) in [(4, 256, 9, 256), (3, 20, 7, 24), (1, 48, 3, 48)] {
            let q = data(heads * d, 4);
            let half: Vec<u16> = data(n * stride + d, 5)
                .into_iter()
                .map(|x| f16::from_f32(x).to_bits())
                .collect();
            let wide: Vec<f32> = half.iter().map(|&h| f16::from_bits(h).to_f32()).collect();
            let ws = n;
            let run = |rows: KvRows| {
                let mut sc = vec![0f32; heads * ws];
                let run = Run { rows, stride, n };
                scores(&q, d, run, 0.5, &mut sc, ws);
                let mut out = data(heads * d, 6);
                weighted_sum(&mut out, d, &sc, ws, run);
                (sc, out)
            };
            let generic = {
                let mut sc = vec![0f32; heads * ws];
                scores_any(
                    heads,
                    (&q[..], d, &half[..], stride, n, 0.5, &mut sc[..], ws),
                );
                let mut out = data(heads * d, 6);
                weighted_any(heads, (&mut out[..], d, &sc[..], ws, &half[..], stride, n));
                (sc, out)
            };
            let bits = |v: &(Vec<f32>, Vec<f32>)| {
                let (a, b) = v;
                a.iter().chain(b).map(|x| x.to_bits()).collect::<Vec<_>>()
            };
            let expect = bits(&run(KvRows::F32(&wide)));
            assert_eq!(bits(&run(KvRows::F16(&half))), expect);
            assert_eq!(bits(&generic), expect);
        }
    }
}

//! Quantizes activations once per step to signed 8-bit with one f32 scale per 32 values, plus
//! the integer sums per 16 and per 32 that the affine weight formats need. The buffers are kept
//! and reused across steps: after warm-up nothing here allocates.

use super::disjoint::Disjoint;
use super::pool::{split, ThreadPool, PAR_ROWS};

/// Activation rows `[rows, k]` as int8 codes with per-32 scales. Only `quantize` sets them, so
/// the buffers always have the lengths `rows` and `k` say (the SIMD tiles rely on it); outside
/// the kernels they are read through the accessors.
#[derive(Default)]
pub struct QuantActs {
    pub(super) rows: usize,
    pub(super) k: usize,
    /// `[rows, k]`.
    pub(super) codes: Vec<i8>,
    /// `[rows, k/32]`.
    pub(super) scales: Vec<f32>,
    /// `[rows, k/16]`: sum of the codes of each 16-value sub-block.
    pub(super) sums16: Vec<i32>,
    /// `[rows, k/32]`.
    pub(super) sums32: Vec<i32>,
}

impl QuantActs {
    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn k(&self) -> usize {
        self.k
    }

    /// `[rows, k]`.
    pub fn codes(&self) -> &[i8] {
        &self.codes
    }

    /// `[rows, k/32]`.
    pub fn scales(&self) -> &[f32] {
        &self.scales
    }

    /// Quantizes `x` (`[rows, k]`, k a multiple of 32). Each row's result depends on that row only.
    pub fn quantize(&mut self, x: &[f32], rows: usize, k: usize) {
        self.resize(rows, k);
        for r in 0..rows {
            let row = Row {
                codes: &mut self.codes[r * k..(r + 1) * k],
                scales: &mut self.scales[r * k / 32..(r + 1) * k / 32],
                sums16: &mut self.sums16[r * k / 16..(r + 1) * k / 16],
                sums32: &mut self.sums32[r * k / 32..(r + 1) * k / 32],
            };
            quantize_row(&x[r * k..(r + 1) * k], row);
        }
    }

    /// `quantize`, with the rows spread over `pool` (the same bits: rows are independent).
    pub fn quantize_on(&mut self, pool: &ThreadPool, x: &[f32], rows: usize, k: usize) {
        if rows < PAR_ROWS || pool.threads() == 1 {
            return self.quantize(x, rows, k);
        }
        self.resize(rows, k);
        let bufs = Bufs {
            codes: Disjoint::new(&mut self.codes),
            scales: Disjoint::new(&mut self.scales),
            sums16: Disjoint::new(&mut self.sums16),
            sums32: Disjoint::new(&mut self.sums32),
        };
        pool.run(&|i, n| {
            for r in split(rows, i, n) {
                // SAFETY: row r's cells of each buffer (sized by `resize` above, untouched
                // otherwise until `run` returns) are written by this thread only: thread i owns
                // rows split(rows, i, n), disjoint from the other threads'.
                let row = unsafe { bufs.row(r, k) };
                quantize_row(&x[r * k..(r + 1) * k], row);
            }
        });
    }

    fn resize(&mut self, rows: usize, k: usize) {
        assert!(k.is_multiple_of(32), "k = {k} is not a multiple of 32");
        self.rows = rows;
        self.k = k;
        self.codes.resize(rows * k, 0);
        self.scales.resize(rows * k / 32, 0.0);
        self.sums16.resize(rows * k / 16, 0);
        self.sums32.resize(rows * k / 32, 0);
    }
}

/// One row's outputs: k codes, k/32 scales and sums32, k/16 sums16.
struct Row<'a> {
    codes: &'a mut [i8],
    scales: &'a mut [f32],
    sums16: &'a mut [i32],
    sums32: &'a mut [i32],
}

impl Row<'_> {
    /// Records 32-block `b`'s scale and the code sums of its two 16-value halves.
    #[inline(always)]
    fn set_block(&mut self, b: usize, d: f32, s0: i32, s1: i32) {
        self.scales[b] = d;
        self.sums16[2 * b] = s0;
        self.sums16[2 * b + 1] = s1;
        self.sums32[b] = s0 + s1;
    }
}

/// Quantizes one row of k values (`src`) into `out`.
fn quantize_row(src: &[f32], out: Row) {
    #[cfg(target_arch = "x86_64")]
    if avx512() {
        // SAFETY: the CPU has avx512f and avx512bw (checked above).
        return unsafe { quantize_row_avx512(src, out) };
    }
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has avx2 (checked above).
        return unsafe { quantize_row_avx2(src, out) };
    }
    quantize_row_generic(src, out)
}

#[cfg(target_arch = "x86_64")]
fn avx512() -> bool {
    std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("avx512bw")
}

/// `quantize_row_generic` in 16-lane registers, with the same bits for finite input: the
/// maximum does not depend on order, and the conversion rounds to nearest even like the
/// generic code's add-and-subtract.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn quantize_row_avx512(src: &[f32], mut out: Row) {
    use std::arch::x86_64::*;
    let blocks = src.len() / 32;
    assert!(out.codes.len() >= blocks * 32);
    // SAFETY: every pointer stays inside the slices checked above.
    unsafe {
        for b in 0..blocks {
            let x0 = _mm512_loadu_ps(src.as_ptr().add(b * 32));
            let x1 = _mm512_loadu_ps(src.as_ptr().add(b * 32 + 16));
            // max(|x|, acc) keeps acc when |x| is NaN, as the generic comparison does.
            let m = _mm512_max_ps(_mm512_abs_ps(x1), _mm512_abs_ps(x0));
            let amax = _mm512_reduce_max_ps(m);
            let d = amax / 127.0;
            let inv = _mm512_set1_ps(if d > 0.0 { 1.0 / d } else { 0.0 });
            let q0 = _mm512_cvtps_epi32(_mm512_mul_ps(x0, inv));
            let q1 = _mm512_cvtps_epi32(_mm512_mul_ps(x1, inv));
            let dst = out.codes.as_mut_ptr().add(b * 32) as *mut __m128i;
            _mm_storeu_si128(dst, _mm512_cvtepi32_epi8(q0));
            _mm_storeu_si128(dst.add(1), _mm512_cvtepi32_epi8(q1));
            let (s0, s1) = (_mm512_reduce_add_epi32(q0), _mm512_reduce_add_epi32(q1));
            out.set_block(b, d, s0, s1);
        }
    }
}

/// `quantize_row_avx512` in 8-lane registers: the same bits for finite input. The codes are
/// packed i32 → i16 → i8 (no saturation: they lie in ±127), which interleaves 4-code runs
/// across the two 128-bit lanes; one dword permutation puts them back in order.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn quantize_row_avx2(src: &[f32], mut out: Row) {
    use std::arch::x86_64::*;
    let blocks = src.len() / 32;
    assert!(out.codes.len() >= blocks * 32);
    // SAFETY: every pointer stays inside the slices checked above.
    unsafe {
        let abs = _mm256_castsi256_ps(_mm256_set1_epi32(i32::MAX));
        let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
        let hsum = |v: __m256i| {
            let v = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
            let v = _mm_add_epi32(v, _mm_shuffle_epi32::<0b01_00_11_10>(v));
            _mm_cvtsi128_si32(_mm_add_epi32(v, _mm_shuffle_epi32::<0b00_00_00_01>(v)))
        };
        for b in 0..blocks {
            let x: [__m256; 4] =
                std::array::from_fn(|i| _mm256_loadu_ps(src.as_ptr().add(b * 32 + 8 * i)));
            // max(|x|, acc) keeps acc when |x| is NaN, as the generic comparison does.
            let mut m = _mm256_setzero_ps();
            for v in x {
                m = _mm256_max_ps(_mm256_and_ps(v, abs), m);
            }
            let m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps::<1>(m));
            let m2 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
            let amax = _mm_cvtss_f32(_mm_max_ss(m2, _mm_shuffle_ps::<1>(m2, m2)));
            let d = amax / 127.0;
            let inv = _mm256_set1_ps(if d > 0.0 { 1.0 / d } else { 0.0 });
            let q = x.map(|v| _mm256_cvtps_epi32(_mm256_mul_ps(v, inv)));
            let bytes = _mm256_packs_epi16(
                _mm256_packs_epi32(q[0], q[1]),
                _mm256_packs_epi32(q[2], q[3]),
            );
            let bytes = _mm256_permutevar8x32_epi32(bytes, order);
            _mm256_storeu_si256(out.codes.as_mut_ptr().add(b * 32) as *mut __m256i, bytes);
            let s0 = hsum(_mm256_add_epi32(q[0], q[1]));
            let s1 = hsum(_mm256_add_epi32(q[2], q[3]));
            out.set_block(b, d, s0, s1);
        }
    }
}

#[inline(always)]
fn quantize_row_generic(src: &[f32], mut out: Row) {
    // Adding and subtracting 1.5·2^23 rounds to nearest (ties to even), branch-free.
    const ROUND: f32 = 12_582_912.0;
    for (b, src) in src.chunks_exact(32).enumerate() {
        let dst = &mut out.codes[b * 32..(b + 1) * 32];
        let mut lanes = [0f32; 8];
        for c in src.chunks_exact(8) {
            for j in 0..8 {
                let a = c[j].abs();
                lanes[j] = if a > lanes[j] { a } else { lanes[j] };
            }
        }
        let amax = lanes.iter().fold(0f32, |m, &v| m.max(v));
        let d = amax / 127.0;
        let inv = if d > 0.0 { 1.0 / d } else { 0.0 };
        for (o, v) in dst.iter_mut().zip(src) {
            *o = ((v * inv + ROUND) - ROUND) as i32 as i8;
        }
        let mut sum = [0i32; 2];
        for (i, &q) in dst.iter().enumerate() {
            sum[i / 16] += q as i32;
        }
        out.set_block(b, d, sum[0], sum[1]);
    }
}

/// The four buffers, shared out to pool threads that each take their own rows.
struct Bufs<'a> {
    codes: Disjoint<'a, i8>,
    scales: Disjoint<'a, f32>,
    sums16: Disjoint<'a, i32>,
    sums32: Disjoint<'a, i32>,
}

impl<'a> Bufs<'a> {
    /// Row `r`'s slices of the four buffers (k-wide rows).
    ///
    /// # Safety
    /// No one else uses row r meanwhile.
    unsafe fn row(&self, r: usize, k: usize) -> Row<'a> {
        // SAFETY: per the contract; `part` checks the bounds.
        unsafe {
            Row {
                codes: self.codes.part(r * k, k),
                scales: self.scales.part(r * k / 32, k / 32),
                sums16: self.sums16.part(r * k / 16, k / 16),
                sums32: self.sums32.part(r * k / 32, k / 32),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variant_gives_the_generic_bits() {
        let k = 256;
        // Values whose scaled codes land exactly on .5 (ties) and zeros, then noise.
        let mut x: Vec<f32> = (0..k).map(|i| (i as f32 - 100.0) * 0.5).collect();
        x[..32].iter_mut().for_each(|v| *v = 0.0);
        x.extend((0..k).map(|i| ((i * 7919 % 1000) as f32 - 500.0) * 1e-3));
        let rows = x.len() / k;
        let fresh = || {
            (
                vec![0i8; rows * k],
                vec![0f32; rows * k / 32],
                vec![0i32; rows * k / 16],
                vec![0i32; rows * k / 32],
            )
        };
        let (mut c0, mut d0, mut s16a, mut s32a) = fresh();
        let (mut c1, mut d1, mut s16b, mut s32b) = fresh();
        let row = |codes, scales, sums16, sums32| Row {
            codes,
            scales,
            sums16,
            sums32,
        };
        quantize_row_generic(&x, row(&mut c0, &mut d0, &mut s16a, &mut s32a));
        quantize_row(&x, row(&mut c1, &mut d1, &mut s16b, &mut s32b));
        assert_eq!(c0, c1);
        assert_eq!(s16a, s16b);
        assert_eq!(s32a, s32b);
        assert!(d0.iter().zip(&d1).all(|(a, b)| a.to_bits() == b.to_bits()));
        assert!(c0.contains(&-127) && c0.contains(&127));
    }
}

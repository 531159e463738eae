//! The AVX2 micro-kernels, the baseline for x86-64 CPUs without AVX-512 VNNI: up to 4 activation
//! rows × one group of 16 output columns. `vpmaddubsw` multiplies unsigned weight codes by
//! signed activation codes into i16 pairs, `vpmaddwd` folds them to i32. Integer sums are exact
//! (see below), and the float scaling follows `matmul::code_tile_scalar` operation for operation,
//! so these kernels give the scalar kernel's bits.
//!
//! Overflow: a pair sum is at most 2 · 63 · 127 for codes below 64 (every type but Q8_0), so
//! `tile` adds two steps' pairs in i16 before folding. Q8_0 codes (zero point 128) are flipped
//! back to signed bytes and multiplied with the sign trick (`|w| · sign(a, w)`), at most
//! 2 · 128 · 127 < 2^15 per pair; that computes `Σ (code − 128) · a` directly, which is the
//! scalar kernel's `Σ code · a − 128 · Σ a` as an integer.
//!
//! Both kernels keep their step loop a loop (`black_box` on its trip count): fully unrolled,
//! LLVM reorders the steps row by row and spills every step's weight operands to the stack,
//! which cost the 4–6-bit types a quarter to a third of their speed.

#![cfg(target_arch = "x86_64")]

use super::act::QuantActs;
use super::disjoint::Disjoint;
use super::matmul::{Tile, ROW_TILE};
use super::pack::{mask_at, pair_bytes, CodeMatrix, GROUP};
use std::arch::x86_64::*;

/// # Safety
/// CPU must have avx2 and fma; caller owns the output cells of group `g`, rows `r0..r0+r`.
/// `codes`: group `g` in the plain layout.
pub(crate) unsafe fn code_tile(t: &Tile, out: Disjoint<'_, f32>) {
    let Tile {
        m, codes, g, acts, ..
    } = *t;
    let (r0, r) = (t.rows.start, t.rows.len());
    let signed = m.layout.zero == 128;
    assert!(codes.len() >= m.k * GROUP);
    let c = codes.as_ptr();
    // SAFETY: forwarded contract.
    unsafe {
        // `rows!(f, P…)` calls `f::<R, P…>` for this call's row count R.
        macro_rules! rows {
            ($f:ident $(, $p:literal)*) => {
                match r {
                    1 => $f::<1 $(, $p)*>(m, c, g, acts, r0, out),
                    2 => $f::<2 $(, $p)*>(m, c, g, acts, r0, out),
                    3 => $f::<3 $(, $p)*>(m, c, g, acts, r0, out),
                    _ => $f::<4 $(, $p)*>(m, c, g, acts, r0, out),
                }
            };
        }
        debug_assert!((1..=ROW_TILE).contains(&r));
        match (m.layout.sub_block, m.layout.has_offset, signed) {
            (32, false, true) => rows!(tile_q8),
            (32, false, false) => rows!(tile, 32, false),
            (32, true, false) => rows!(tile, 32, true),
            (16, false, false) => rows!(tile, 16, false),
            (16, true, false) => rows!(tile, 16, true),
            _ => super::matmul::code_tile_scalar(t, out),
        }
    }
}

/// `m.unpack_group` in registers: group `g` in the plain layout into `out` (`k * GROUP`
/// bytes), the same bytes. Compact codes are split into nibbles, and each extra bit's 64-bit
/// mask is spread to one byte per code (bit i of the mask → byte i) and added in.
///
/// # Safety
/// CPU must have avx2.
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn unpack_group(m: &CodeMatrix, g: usize, out: &mut [u8]) {
    let (bits, k) = (m.layout.bits as usize, m.k);
    assert!(out.len() >= k * GROUP);
    if bits >= 8 {
        return out[..k * GROUP].copy_from_slice(m.group(g));
    }
    let (codes, pb) = (m.group(g).as_ptr(), pair_bytes(bits as u32));
    // SAFETY: pair p < k/8 spans `pb` bytes at p*pb in the group and 128 bytes at p*128 in
    // `out` (asserted above); the rest are register intrinsics on enabled features.
    unsafe {
        let low = _mm256_set1_epi8(15);
        // Byte j of a 32-byte half reads mask byte j/8 (+4 for the second half) and tests
        // bit j%8 of it.
        let first = _mm256_setr_epi8(
            0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, //
            2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3,
        );
        let pick = [first, _mm256_add_epi8(first, _mm256_set1_epi8(4))];
        let select = _mm256_set1_epi64x(0x8040_2010_0804_0201_u64 as i64);
        for p in 0..k / 8 {
            let at = codes.add(p * pb);
            let o = out.as_mut_ptr().add(p * 128);
            for q in 0..2 {
                let nib = _mm256_loadu_si256(at.add(32 * q) as *const __m256i);
                let mut plane = [
                    _mm256_and_si256(nib, low),
                    _mm256_and_si256(_mm256_srli_epi16::<4>(nib), low),
                ];
                for e in 0..bits - 4 {
                    let bit = _mm256_set1_epi8(1 << (4 + e));
                    for (half, v) in plane.iter_mut().enumerate() {
                        let mask = (at.add(mask_at(e, half)) as *const i64).read_unaligned();
                        let spread = _mm256_shuffle_epi8(_mm256_set1_epi64x(mask), pick[q]);
                        let set = _mm256_cmpeq_epi8(_mm256_and_si256(spread, select), select);
                        *v = _mm256_or_si256(*v, _mm256_and_si256(set, bit));
                    }
                }
                // Operand `half` of the pair is output bytes half*64.., this is its q-th 32.
                for (half, v) in plane.iter().enumerate() {
                    _mm256_storeu_si256(o.add(half * 64 + 32 * q) as *mut __m256i, *v);
                }
            }
        }
    }
}

/// The activation pointers of rows `r0..r0+R`: codes (4 per i32), the code sums per weight
/// sub-block of `bs`, and the per-32 scales, after checking the buffers hold those rows.
#[inline(always)]
fn act_rows<const R: usize>(
    acts: &QuantActs,
    r0: usize,
    bs: usize,
) -> ([*const i32; R], [*const i32; R], [*const f32; R]) {
    let k = acts.k;
    let sums = if bs == 16 { &acts.sums16 } else { &acts.sums32 };
    assert!(acts.codes.len() >= (r0 + R) * k && acts.scales.len() >= (r0 + R) * k / 32);
    assert!(sums.len() >= (r0 + R) * k / bs);
    // `wrapping_add` keeps this safe code; every offset is in bounds per the asserts.
    let codes = std::array::from_fn(|i| acts.codes.as_ptr().wrapping_add((r0 + i) * k) as _);
    let sums = std::array::from_fn(|i| sums.as_ptr().wrapping_add((r0 + i) * k / bs));
    let scales = std::array::from_fn(|i| acts.scales.as_ptr().wrapping_add((r0 + i) * k / 32));
    (codes, sums, scales)
}

/// Stores row `i`'s 8 columns from `col` (of which `valid` exist) of `acc`.
///
/// # Safety
/// The caller owns those output cells.
#[inline(always)]
unsafe fn store(out: Disjoint<'_, f32>, at: usize, valid: usize, acc: __m256) {
    // SAFETY: the caller owns cells at..at+valid.min(8); register intrinsics on avx (the
    // enclosing functions enable avx2).
    unsafe {
        if valid >= 8 {
            _mm256_storeu_ps(out.ptr().add(at), acc);
        } else if valid > 0 {
            let mut tmp = [0f32; 8];
            _mm256_storeu_ps(tmp.as_mut_ptr(), acc);
            std::ptr::copy_nonoverlapping(tmp.as_ptr(), out.ptr().add(at), valid);
        }
    }
}

/// Codes below 64 (every type but Q8_0), one 8-column half of the group at a time, so that
/// the R rows' integer and float accumulators (2R registers) stay in registers beside the
/// weight and activation operands. Two steps' i16 pair sums are added before one `vpmaddwd`:
/// 2 · 2 · 63 · 127 < 2^15.
#[target_feature(enable = "avx2,fma")]
unsafe fn tile<const R: usize, const BS: usize, const OFF: bool>(
    m: &CodeMatrix,
    codes: *const u8,
    g: usize,
    acts: &QuantActs,
    r0: usize,
    out: Disjoint<'_, f32>,
) {
    debug_assert!(R <= ROW_TILE);
    let k = m.k;
    let n_sub = k / BS;
    // Opaque to the optimiser: see the module header.
    let pairs = std::hint::black_box(BS / 8);
    let (a, sum, da) = act_rows::<R>(acts, r0, BS);
    // SAFETY: all pointers index inside the packed buffers whose shapes `pack` established and
    // inside the activation rows `act_rows` checked.
    unsafe {
        let ones = _mm256_set1_epi16(1);
        let scales = m.scales.as_ptr().add(g * n_sub * GROUP);
        let offsets = if OFF {
            m.offsets.as_ptr().add(g * n_sub * GROUP)
        } else {
            scales
        };
        let col0 = g * GROUP;
        let valid = (m.n - col0).min(GROUP);
        for half in [0, 8] {
            let w = codes.add(half * 4);
            let mut facc = [_mm256_setzero_ps(); R];
            for b in 0..n_sub {
                let mut iacc = [_mm256_setzero_si256(); R];
                for p in 0..pairs {
                    let t = b * BS / 4 + 2 * p;
                    let w0 = _mm256_loadu_si256(w.add(t * 64) as *const __m256i);
                    let w1 = _mm256_loadu_si256(w.add(t * 64 + 64) as *const __m256i);
                    for i in 0..R {
                        let a0 = _mm256_set1_epi32(*a[i].add(t));
                        let a1 = _mm256_set1_epi32(*a[i].add(t + 1));
                        let p = _mm256_add_epi16(
                            _mm256_maddubs_epi16(w0, a0),
                            _mm256_maddubs_epi16(w1, a1),
                        );
                        iacc[i] = _mm256_add_epi32(iacc[i], _mm256_madd_epi16(p, ones));
                    }
                }
                let s = _mm256_loadu_ps(scales.add(b * GROUP + half));
                for i in 0..R {
                    let (sum, da) = (*sum[i].add(b), *da[i].add(b * BS / 32));
                    let iv = _mm256_sub_epi32(iacc[i], _mm256_set1_epi32(m.layout.zero * sum));
                    facc[i] = _mm256_fmadd_ps(
                        _mm256_cvtepi32_ps(iv),
                        _mm256_mul_ps(s, _mm256_set1_ps(da)),
                        facc[i],
                    );
                    if OFF {
                        let o = _mm256_loadu_ps(offsets.add(b * GROUP + half));
                        facc[i] = _mm256_fmadd_ps(o, _mm256_set1_ps(da * sum as f32), facc[i]);
                    }
                }
            }
            for (i, acc) in facc.iter().enumerate() {
                let at = (r0 + i) * m.n + col0 + half;
                store(out, at, valid.saturating_sub(half), *acc);
            }
        }
    }
}

/// Q8_0 (zero point 128): both halves of the group per step, so each weight line is read once
/// (one row streams the matrix from memory). The codes are flipped back to signed bytes and
/// multiplied with the sign trick, `|w| · sign(a, w)`; pairs can reach 2 · 128 · 127, so each
/// step folds to i32 alone. The float accumulators are touched once per block and may live in
/// memory; the step's operands and the integer accumulators fill the registers.
#[target_feature(enable = "avx2,fma")]
unsafe fn tile_q8<const R: usize>(
    m: &CodeMatrix,
    codes: *const u8,
    g: usize,
    acts: &QuantActs,
    r0: usize,
    out: Disjoint<'_, f32>,
) {
    debug_assert!(R <= ROW_TILE && m.layout.sub_block == 32);
    let k = m.k;
    let n_sub = k / 32;
    // Opaque to the optimiser: see the module header.
    let steps = std::hint::black_box(8);
    let (a, _, da) = act_rows::<R>(acts, r0, 32);
    // SAFETY: as in `tile`.
    unsafe {
        let ones = _mm256_set1_epi16(1);
        let flip = _mm256_set1_epi8(-128);
        let scales = m.scales.as_ptr().add(g * n_sub * GROUP);
        let mut facc = [[_mm256_setzero_ps(); 2]; R];
        for b in 0..n_sub {
            let mut iacc = [[_mm256_setzero_si256(); 2]; R];
            for s in 0..steps {
                let t = b * 8 + s;
                let w0 = _mm256_xor_si256(_mm256_loadu_si256(codes.add(t * 64) as _), flip);
                let w1 = _mm256_xor_si256(_mm256_loadu_si256(codes.add(t * 64 + 32) as _), flip);
                let (u0, u1) = (_mm256_abs_epi8(w0), _mm256_abs_epi8(w1));
                for i in 0..R {
                    let av = _mm256_set1_epi32(*a[i].add(t));
                    let p0 = _mm256_maddubs_epi16(u0, _mm256_sign_epi8(av, w0));
                    let p1 = _mm256_maddubs_epi16(u1, _mm256_sign_epi8(av, w1));
                    iacc[i][0] = _mm256_add_epi32(iacc[i][0], _mm256_madd_epi16(p0, ones));
                    iacc[i][1] = _mm256_add_epi32(iacc[i][1], _mm256_madd_epi16(p1, ones));
                }
            }
            for (h, half) in [0, 8].into_iter().enumerate() {
                let s = _mm256_loadu_ps(scales.add(b * GROUP + half));
                for i in 0..R {
                    let da = _mm256_set1_ps(*da[i].add(b));
                    let (iv, f) = (_mm256_cvtepi32_ps(iacc[i][h]), _mm256_mul_ps(s, da));
                    facc[i][h] = _mm256_fmadd_ps(iv, f, facc[i][h]);
                }
            }
        }
        let col0 = g * GROUP;
        let valid = (m.n - col0).min(GROUP);
        for (i, acc) in facc.iter().enumerate() {
            for (h, half) in [0, 8].into_iter().enumerate() {
                let at = (r0 + i) * m.n + col0 + half;
                store(out, at, valid.saturating_sub(half), acc[h]);
            }
        }
    }
}

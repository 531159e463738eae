//! The AVX2 micro-kernel, the baseline for x86-64 CPUs without AVX-512 VNNI: up to 4 activation
//! rows × 16 output columns (two 8-column halves). `vpmaddubsw` multiplies unsigned weight codes
//! by signed activation codes into i16 pairs, `vpmaddwd` folds them to i32. Integer sums are exact
//! (see below), and the float scaling follows `matmul::code_tile_scalar` operation for operation,
//! so this kernel gives the scalar kernel's bits.
//!
//! Overflow: a pair sum is at most 2 · 63 · 127 for codes below 64 (every type but Q8_0). Q8_0
//! codes (zero point 128) are flipped back to signed bytes and multiplied with the sign trick
//! (`|w| · sign(a, w)`), at most 2 · 128 · 127 < 2^15; that computes `Σ (code − 128) · a`
//! directly, which is the scalar kernel's `Σ code · a − 128 · Σ a` as an integer.

#![cfg(target_arch = "x86_64")]

use super::act::QuantActs;
use super::disjoint::Disjoint;
use super::matmul::{block_sums, ROW_TILE};
use super::pack::{mask_at, pair_bytes, CodeMatrix, GROUP};
use std::arch::x86_64::*;

/// # Safety
/// CPU must have avx2 and fma; caller owns the output cells of group `g`, rows `r0..r0+r`.
/// `codes`: group `g` in the plain layout.
pub(crate) unsafe fn code_tile(
    m: &CodeMatrix,
    codes: &[u8],
    g: usize,
    acts: &QuantActs,
    r0: usize,
    r: usize,
    out: Disjoint<'_, f32>,
) {
    let signed = m.layout.zero == 128;
    assert!(codes.len() >= m.k * GROUP);
    let c = codes.as_ptr();
    // SAFETY: forwarded contract.
    unsafe {
        match (r, m.layout.sub_block, m.layout.has_offset, signed) {
            (1, 32, false, true) => tile::<1, 32, false, true>(m, c, g, acts, r0, out),
            (2, 32, false, true) => tile::<2, 32, false, true>(m, c, g, acts, r0, out),
            (3, 32, false, true) => tile::<3, 32, false, true>(m, c, g, acts, r0, out),
            (4, 32, false, true) => tile::<4, 32, false, true>(m, c, g, acts, r0, out),
            (1, 32, false, false) => tile::<1, 32, false, false>(m, c, g, acts, r0, out),
            (2, 32, false, false) => tile::<2, 32, false, false>(m, c, g, acts, r0, out),
            (3, 32, false, false) => tile::<3, 32, false, false>(m, c, g, acts, r0, out),
            (4, 32, false, false) => tile::<4, 32, false, false>(m, c, g, acts, r0, out),
            (1, 32, true, false) => tile::<1, 32, true, false>(m, c, g, acts, r0, out),
            (2, 32, true, false) => tile::<2, 32, true, false>(m, c, g, acts, r0, out),
            (3, 32, true, false) => tile::<3, 32, true, false>(m, c, g, acts, r0, out),
            (4, 32, true, false) => tile::<4, 32, true, false>(m, c, g, acts, r0, out),
            (1, 16, false, false) => tile::<1, 16, false, false>(m, c, g, acts, r0, out),
            (2, 16, false, false) => tile::<2, 16, false, false>(m, c, g, acts, r0, out),
            (3, 16, false, false) => tile::<3, 16, false, false>(m, c, g, acts, r0, out),
            (4, 16, false, false) => tile::<4, 16, false, false>(m, c, g, acts, r0, out),
            _ => super::matmul::code_tile_scalar(m, codes, g, acts, r0, r, out),
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

/// Σ over each column's 4 byte pairs of `w · a` as i32 lanes (8 columns).
#[inline(always)]
unsafe fn dot4<const SIGNED: bool>(w: __m256i, a: __m256i, ones: __m256i) -> __m256i {
    // SAFETY: register-only intrinsics; the enclosing function enables avx2.
    unsafe {
        let pairs = if SIGNED {
            let ws = _mm256_xor_si256(w, _mm256_set1_epi8(-128));
            _mm256_maddubs_epi16(_mm256_abs_epi8(ws), _mm256_sign_epi8(a, ws))
        } else {
            _mm256_maddubs_epi16(w, a)
        };
        _mm256_madd_epi16(pairs, ones)
    }
}

#[target_feature(enable = "avx2,fma")]
unsafe fn tile<const R: usize, const BS: usize, const OFF: bool, const SIGNED: bool>(
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
    let steps = BS / 4;
    // SAFETY: all pointers index inside the packed buffers whose shapes `pack` established.
    unsafe {
        let ones = _mm256_set1_epi16(1);
        let scales = m.scales.as_ptr().add(g * n_sub * GROUP);
        let offsets = if OFF {
            m.offsets.as_ptr().add(g * n_sub * GROUP)
        } else {
            scales
        };
        let a: [*const i32; R] =
            std::array::from_fn(|i| acts.codes.as_ptr().add((r0 + i) * k) as *const i32);
        let mut facc = [[_mm256_setzero_ps(); 2]; R];
        for b in 0..n_sub {
            let mut iacc = [[_mm256_setzero_si256(); 2]; R];
            for t in 0..steps {
                let step = b * steps + t;
                let w0 = _mm256_loadu_si256(codes.add(step * 64) as *const __m256i);
                let w1 = _mm256_loadu_si256(codes.add(step * 64 + 32) as *const __m256i);
                for i in 0..R {
                    let av = _mm256_set1_epi32(*a[i].add(step));
                    iacc[i][0] = _mm256_add_epi32(iacc[i][0], dot4::<SIGNED>(w0, av, ones));
                    iacc[i][1] = _mm256_add_epi32(iacc[i][1], dot4::<SIGNED>(w1, av, ones));
                }
            }
            for (h, half) in [0, 8].into_iter().enumerate() {
                let s = _mm256_loadu_ps(scales.add(b * GROUP + half));
                for i in 0..R {
                    let (sum, da) = block_sums(acts, r0 + i, b, BS);
                    let iv = if SIGNED {
                        iacc[i][h]
                    } else {
                        _mm256_sub_epi32(iacc[i][h], _mm256_set1_epi32(m.layout.zero * sum))
                    };
                    facc[i][h] = _mm256_fmadd_ps(
                        _mm256_cvtepi32_ps(iv),
                        _mm256_mul_ps(s, _mm256_set1_ps(da)),
                        facc[i][h],
                    );
                    if OFF {
                        let o = _mm256_loadu_ps(offsets.add(b * GROUP + half));
                        facc[i][h] =
                            _mm256_fmadd_ps(o, _mm256_set1_ps(da * sum as f32), facc[i][h]);
                    }
                }
            }
        }
        let col0 = g * GROUP;
        let valid = (m.n - col0).min(GROUP);
        for i in 0..R {
            let dst = out.ptr().add((r0 + i) * m.n + col0);
            if valid == GROUP {
                _mm256_storeu_ps(dst, facc[i][0]);
                _mm256_storeu_ps(dst.add(8), facc[i][1]);
            } else {
                let mut tmp = [0f32; GROUP];
                _mm256_storeu_ps(tmp.as_mut_ptr(), facc[i][0]);
                _mm256_storeu_ps(tmp.as_mut_ptr().add(8), facc[i][1]);
                std::ptr::copy_nonoverlapping(tmp.as_ptr(), dst, valid);
            }
        }
    }
}

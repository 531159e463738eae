//! The AVX-512 VNNI micro-kernel: up to 4 activation rows × 16 output columns, `vpdpbusd` over
//! unsigned weight codes and signed activation codes, then the per-sub-block float scaling in
//! exactly the order of `matmul::code_tile_scalar`, so both give identical bits.

#![cfg(target_arch = "x86_64")]

use super::act::QuantActs;
use super::matmul::{block_sums, OutPtr, ROW_TILE};
use super::pack::{CodeMatrix, GROUP};
use std::arch::x86_64::*;

/// # Safety
/// CPU must have avx512f/bw/vnni; caller owns the output cells of group `g`, rows `r0..r0+r`.
pub(crate) unsafe fn code_tile(
    m: &CodeMatrix,
    g: usize,
    acts: &QuantActs,
    r0: usize,
    r: usize,
    out: OutPtr,
) {
    // SAFETY: forwarded contract.
    unsafe {
        match (r, m.layout.sub_block, m.layout.has_offset) {
            (1, 32, false) => tile::<1, 32, false>(m, g, acts, r0, out),
            (2, 32, false) => tile::<2, 32, false>(m, g, acts, r0, out),
            (3, 32, false) => tile::<3, 32, false>(m, g, acts, r0, out),
            (4, 32, false) => tile::<4, 32, false>(m, g, acts, r0, out),
            (1, 32, true) => tile::<1, 32, true>(m, g, acts, r0, out),
            (2, 32, true) => tile::<2, 32, true>(m, g, acts, r0, out),
            (3, 32, true) => tile::<3, 32, true>(m, g, acts, r0, out),
            (4, 32, true) => tile::<4, 32, true>(m, g, acts, r0, out),
            (1, 16, false) => tile::<1, 16, false>(m, g, acts, r0, out),
            (2, 16, false) => tile::<2, 16, false>(m, g, acts, r0, out),
            (3, 16, false) => tile::<3, 16, false>(m, g, acts, r0, out),
            (4, 16, false) => tile::<4, 16, false>(m, g, acts, r0, out),
            _ => super::matmul::code_tile_scalar(m, g, acts, r0, r, out),
        }
    }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn tile<const R: usize, const BS: usize, const OFF: bool>(
    m: &CodeMatrix,
    g: usize,
    acts: &QuantActs,
    r0: usize,
    out: OutPtr,
) {
    debug_assert!(R <= ROW_TILE);
    let k = m.k;
    let n_sub = k / BS;
    let steps = BS / 4;
    // SAFETY: all pointers index inside the packed buffers whose shapes `pack` established.
    unsafe {
        let codes = m.codes.as_ptr().add(g * k * GROUP);
        let scales = m.scales.as_ptr().add(g * n_sub * GROUP);
        let offsets = if OFF {
            m.offsets.as_ptr().add(g * n_sub * GROUP)
        } else {
            scales
        };
        let a: [*const i32; R] =
            std::array::from_fn(|i| acts.codes.as_ptr().add((r0 + i) * k) as *const i32);
        // Per row: the activation code sums per weight sub-block and the per-32 scales, read
        // through raw pointers (no bounds checks in the epilogue) and broadcast from memory.
        let sums = if BS == 16 { &acts.sums16 } else { &acts.sums32 };
        let sum_at: [*const i32; R] = std::array::from_fn(|i| sums.as_ptr().add((r0 + i) * n_sub));
        let da_at: [*const f32; R] =
            std::array::from_fn(|i| acts.scales.as_ptr().add((r0 + i) * (k / 32)));
        // Every zero point is 0 or a power of two, so `zero · sum` is a shift: exact, one µop.
        let zero = m.layout.zero;
        debug_assert!(zero == 0 || (zero as u32).is_power_of_two());
        let zshift = _mm_cvtsi32_si128(zero.trailing_zeros() as i32);
        let mut facc = [_mm512_setzero_ps(); R];
        for b in 0..n_sub {
            let mut iacc = [_mm512_setzero_si512(); R];
            for t in 0..steps {
                let step = b * steps + t;
                let w = _mm512_loadu_si512(codes.add(step * 64) as *const __m512i);
                for i in 0..R {
                    iacc[i] = _mm512_dpbusd_epi32(iacc[i], w, _mm512_set1_epi32(*a[i].add(step)));
                }
            }
            let s = _mm512_loadu_ps(scales.add(b * GROUP));
            for i in 0..R {
                let da = _mm512_set1_ps(*da_at[i].add(b * BS / 32));
                let iv = if zero != 0 {
                    let zs = _mm512_sll_epi32(_mm512_set1_epi32(*sum_at[i].add(b)), zshift);
                    _mm512_sub_epi32(iacc[i], zs)
                } else {
                    iacc[i]
                };
                facc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(iv), _mm512_mul_ps(s, da), facc[i]);
                if OFF {
                    let (sum, da) = block_sums(acts, r0 + i, b, BS);
                    let o = _mm512_loadu_ps(offsets.add(b * GROUP));
                    facc[i] = _mm512_fmadd_ps(o, _mm512_set1_ps(da * sum as f32), facc[i]);
                }
            }
        }
        let col0 = g * GROUP;
        let valid = (m.n - col0).min(GROUP);
        let mask: __mmask16 = if valid == GROUP {
            0xFFFF
        } else {
            (1u16 << valid) - 1
        };
        for i in 0..R {
            _mm512_mask_storeu_ps(out.get().add((r0 + i) * m.n + col0), mask, facc[i]);
        }
    }
}

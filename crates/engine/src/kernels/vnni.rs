//! The AVX-512 VNNI micro-kernel: up to 4 activation rows × 16 output columns, `vpdpbusd` over
//! unsigned weight codes and signed activation codes, then the per-sub-block float scaling in
//! exactly the order of `matmul::code_tile_scalar`, so both give identical bits.

#![cfg(target_arch = "x86_64")]

use super::act::QuantActs;
use super::disjoint::Disjoint;
use super::matmul::{block_sums, Tile, ROW_TILE};
use super::pack::{mask_at, pair_bytes, CodeMatrix, GROUP};
use super::quant::CodeLayout;
use std::arch::x86_64::*;

/// Whether `code_tile` reads this layout's compact codes directly (`bits < 8`).
pub(crate) fn has_direct(l: CodeLayout) -> bool {
    matches!(
        (l.sub_block, l.has_offset, l.bits),
        (32, false, 4) | (32, false, 5) | (32, true, 4) | (32, true, 5) | (16, false, 6)
    )
}

/// `codes` holds group `g` stored with `bits`-bit codes: 8 for the plain layout, else the
/// compact one (then `has_direct(m.layout)` must hold).
///
/// # Safety
/// CPU must have avx512f/bw/vnni; caller owns the output cells of group `g`, rows `r0..r0+r`;
/// `codes` holds the whole group.
pub(crate) unsafe fn code_tile(t: &Tile, out: Disjoint<'_, f32>) {
    let Tile {
        m,
        codes,
        bits,
        g,
        acts,
        ..
    } = *t;
    let (r0, r) = (t.rows.start, t.rows.len());
    let c = codes.as_ptr();
    macro_rules! rows {
        ($bs:literal, $off:literal, $bits:literal) => {
            match r {
                1 => tile::<1, $bs, $off, $bits>(m, c, g, acts, r0, out),
                2 => tile::<2, $bs, $off, $bits>(m, c, g, acts, r0, out),
                3 => tile::<3, $bs, $off, $bits>(m, c, g, acts, r0, out),
                _ => tile::<4, $bs, $off, $bits>(m, c, g, acts, r0, out),
            }
        };
    }
    // SAFETY: forwarded contract.
    unsafe {
        match (m.layout.sub_block, m.layout.has_offset, bits) {
            (32, false, 8) => rows!(32, false, 8),
            (32, true, 8) => rows!(32, true, 8),
            (16, false, 8) => rows!(16, false, 8),
            (16, true, 8) => rows!(16, true, 8),
            (32, false, 4) => rows!(32, false, 4),
            (32, false, 5) => rows!(32, false, 5),
            (32, true, 4) => rows!(32, true, 4),
            (32, true, 5) => rows!(32, true, 5),
            (16, false, 6) => rows!(16, false, 6),
            _ => {
                assert!(
                    bits >= 8,
                    "compact codes need a direct kernel (see has_direct)"
                );
                super::matmul::code_tile_scalar(t, out)
            }
        }
    }
}

/// The two 64-byte operands of pair `p` (inputs 8p..8p+8 of 16 columns) as plain codes.
#[inline(always)]
unsafe fn load_pair<const BITS: u32>(codes: *const u8, p: usize) -> (__m512i, __m512i) {
    // SAFETY: the caller's pointer holds pair p; register intrinsics need avx512f/bw, which
    // every caller enables.
    unsafe {
        if BITS >= 8 {
            let at = codes.add(p * 128);
            return (
                _mm512_loadu_si512(at as *const __m512i),
                _mm512_loadu_si512(at.add(64) as *const __m512i),
            );
        }
        let at = codes.add(p * pair_bytes(BITS));
        let nib = _mm512_loadu_si512(at as *const __m512i);
        let low = _mm512_set1_epi8(15);
        let mut a = _mm512_and_si512(nib, low);
        let mut b = _mm512_and_si512(_mm512_srli_epi16::<4>(nib), low);
        for e in 0..(BITS as usize).saturating_sub(4) {
            let bit = _mm512_set1_epi8(1 << (4 + e));
            let ka = (at.add(mask_at(e, 0)) as *const u64).read_unaligned();
            let kb = (at.add(mask_at(e, 1)) as *const u64).read_unaligned();
            a = _mm512_mask_add_epi8(a, ka, a, bit);
            b = _mm512_mask_add_epi8(b, kb, b, bit);
        }
        (a, b)
    }
}

/// `m.unpack_group` in registers: group `g` in the plain layout into `out` (`k * GROUP` bytes).
///
/// # Safety
/// CPU must have avx512f/bw; `has_direct(m.layout)` or `m.is_plain()`.
#[target_feature(enable = "avx512f,avx512bw")]
pub(crate) unsafe fn unpack_group(m: &CodeMatrix, g: usize, out: &mut [u8]) {
    assert!(out.len() >= m.k * GROUP);
    let codes = m.group(g).as_ptr();
    macro_rules! unpack {
        ($bits:literal) => {
            for p in 0..m.k / 8 {
                // SAFETY: pair p < k/8 lies in the group and 128 bytes at p*128 in `out`.
                unsafe {
                    let (a, b) = load_pair::<$bits>(codes, p);
                    let o = out.as_mut_ptr().add(p * 128);
                    _mm512_storeu_si512(o as *mut __m512i, a);
                    _mm512_storeu_si512(o.add(64) as *mut __m512i, b);
                }
            }
        };
    }
    match m.layout.bits {
        4 => unpack!(4),
        5 => unpack!(5),
        6 => unpack!(6),
        _ => out[..m.k * GROUP].copy_from_slice(m.group(g)),
    }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn tile<const R: usize, const BS: usize, const OFF: bool, const BITS: u32>(
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
            for t in (0..steps).step_by(2) {
                let step = b * steps + t;
                let (w0, w1) = load_pair::<BITS>(codes, step / 2);
                for (s, w) in [(step, w0), (step + 1, w1)] {
                    for i in 0..R {
                        let x = _mm512_set1_epi32(*a[i].add(s));
                        iacc[i] = _mm512_dpbusd_epi32(iacc[i], w, x);
                    }
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
            _mm512_mask_storeu_ps(out.ptr().add((r0 + i) * m.n + col0), mask, facc[i]);
        }
    }
}

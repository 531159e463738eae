//! IQ4_NL (32-value blocks) and IQ4_XS (256-value super-blocks of eight 32-value blocks with
//! 6-bit scales): 4-bit indices into a fixed non-linear table. One search serves both, with or
//! without importance weights, as in ggml (`quantize_row_iq4_nl_impl`, 7 scale trials each side).

use super::kquant::{signed_absmax, GROUP_MAX_EPS};
use super::round::{f16_bits, nearest_int};

/// The non-linear levels an index stands for.
const VALUES: [i8; 16] = [
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
];
const NTRY: i32 = 7;

/// The index of the level nearest `x` (ties to the upper one, as ggml's search resolves them).
fn best_index(x: f32) -> u8 {
    let v = |i: usize| VALUES[i] as f32;
    if x <= v(0) {
        return 0;
    }
    if x >= v(15) {
        return 15;
    }
    let (mut ml, mut mu) = (0usize, 15usize);
    while mu - ml > 1 {
        let mid = (ml + mu) / 2;
        if x < v(mid) {
            mu = mid;
        } else {
            ml = mid;
        }
    }
    if x - v(mu - 1) < v(mu) - x {
        (mu - 1) as u8
    } else {
        mu as u8
    }
}

/// One 32-value block's scale: start from `-max / -127`, then try 15 starting scales and keep
/// the best weighted least-squares fit. `l` gets the indices of the first start.
fn block_scale(xb: &[f32], weight: &[f32], l: &mut [u8]) -> Option<f32> {
    let (max, amax) = signed_absmax(xb);
    if amax < GROUP_MAX_EPS {
        return None;
    }
    let fit = |id: f32, l: Option<&mut [u8]>| {
        let (mut sumqx, mut sumq2) = (0.0f32, 0.0f32);
        let mut l = l;
        for j in 0..32 {
            let idx = best_index(id * xb[j]);
            if let Some(l) = l.as_deref_mut() {
                l[j] = idx;
            }
            let q = VALUES[idx as usize] as f32;
            sumqx += weight[j] * q * xb[j];
            sumq2 += weight[j] * q * q;
        }
        (sumqx, sumq2)
    };
    let d = -max / VALUES[0] as f32;
    let (sumqx, sumq2) = fit(1.0 / d, Some(l));
    let mut d = if sumq2 > 0.0 { sumqx / sumq2 } else { 0.0 };
    let mut best = d * sumqx;
    for itry in -NTRY..=NTRY {
        let id = (itry + VALUES[0] as i32) as f32 / max;
        let (sumqx, sumq2) = fit(id, None);
        if sumq2 > 0.0 && sumqx * sumqx > best * sumq2 {
            d = sumqx / sumq2;
            best = d * sumqx;
        }
    }
    Some(d)
}

/// The weights of one block: x² without an importance matrix, else `qw · sqrt(σ² + x²)` with σ²
/// twice the super-block's mean square.
fn block_weights(xb: &[f32], qw: Option<&[f32]>, sigma2: f32, out: &mut [f32; 32]) {
    for j in 0..32 {
        out[j] = match qw {
            Some(w) => w[j] * (sigma2 + xb[j] * xb[j]).sqrt(),
            None => xb[j] * xb[j],
        };
    }
}

fn sigma2(x: &[f32]) -> f32 {
    let mut s = 0.0f32;
    for v in x {
        s += v * v;
    }
    s * (2.0 / x.len() as f32)
}

/// Packs 32 indices per 16 bytes: byte `j` holds `j` (low nibble) and `j+16`.
fn pack(l: &[u8], q4: &mut [u8]) {
    for (lb, qb) in l.chunks_exact(32).zip(q4.chunks_exact_mut(16)) {
        for j in 0..16 {
            qb[j] = lb[j] | (lb[16 + j] << 4);
        }
    }
}

/// IQ4_NL rows: block = d (f16), qs[16] (18 bytes). `qw`: one weight per column of the row.
pub fn iq4_nl(x: &[f32], n_per_row: usize, qw: Option<&[f32]>, out: &mut [u8]) {
    let mut weight = [0.0f32; 32];
    let mut l = [0u8; 32];
    for (row, orow) in x
        .chunks_exact(n_per_row)
        .zip(out.chunks_exact_mut(n_per_row / 32 * 18))
    {
        for (ib, (xb, y)) in row
            .chunks_exact(32)
            .zip(orow.chunks_exact_mut(18))
            .enumerate()
        {
            let w = qw.map(|w| &w[32 * ib..32 * ib + 32]);
            block_weights(xb, w, sigma2(xb), &mut weight);
            let d = block_scale(xb, &weight, &mut l).unwrap_or(0.0);
            y[..2].copy_from_slice(&f16_bits(d).to_le_bytes());
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            for j in 0..32 {
                l[j] = best_index(id * xb[j]);
            }
            pack(&l, &mut y[2..]);
        }
    }
}

/// IQ4_XS rows: block = d (f16), scales_h (u16), scales_l[4], qs[128] (136 bytes).
pub fn iq4_xs(x: &[f32], n_per_row: usize, qw: Option<&[f32]>, out: &mut [u8]) {
    let mut weight = [0.0f32; 32];
    let mut l = [0u8; 256];
    for (row, orow) in x
        .chunks_exact(n_per_row)
        .zip(out.chunks_exact_mut(n_per_row / 256 * 136))
    {
        for (ibl, (xs, y)) in row
            .chunks_exact(256)
            .zip(orow.chunks_exact_mut(136))
            .enumerate()
        {
            let s2 = sigma2(xs);
            let mut scales = [0.0f32; 8];
            let (mut max_scale, mut amax_scale) = (0.0f32, 0.0f32);
            for ib in 0..8 {
                let xb = &xs[32 * ib..32 * ib + 32];
                let w = qw.map(|w| &w[256 * ibl + 32 * ib..256 * ibl + 32 * ib + 32]);
                block_weights(xb, w, s2, &mut weight);
                scales[ib] = block_scale(xb, &weight, &mut l[32 * ib..32 * ib + 32]).unwrap_or(0.0);
                if scales[ib].abs() > amax_scale {
                    amax_scale = scales[ib].abs();
                    max_scale = scales[ib];
                }
            }
            let d = -max_scale / 32.0;
            y[..2].copy_from_slice(&f16_bits(d).to_le_bytes());
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            let (mut scales_h, mut scales_l) = (0u16, [0u8; 4]);
            for ib in 0..8 {
                let ls = nearest_int(id * scales[ib]).clamp(-32, 31);
                let dl = d * ls as f32;
                let idl = if dl != 0.0 { 1.0 / dl } else { 0.0 };
                for j in 0..32 {
                    l[32 * ib + j] = best_index(idl * xs[32 * ib + j]);
                }
                let ls = (ls + 32) as u8;
                scales_l[ib / 2] |= (ls & 0xF) << (4 * (ib % 2));
                scales_h |= ((ls >> 4) as u16) << (2 * ib);
            }
            y[2..4].copy_from_slice(&scales_h.to_le_bytes());
            y[4..8].copy_from_slice(&scales_l);
            pack(&l, &mut y[8..]);
        }
    }
}

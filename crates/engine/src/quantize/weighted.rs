//! Quantization driven by an importance matrix (`qw`: one weight per column, the calibration
//! text's mean squared activation of that input): each block's scale search minimises the
//! error weighted by `qw · sqrt(σ² + x²)`, and the K-quants also fit their sub-block scales by
//! weighted least squares. The same operations in the same order as ggml's `*_impl`
//! quantizers, so a given imatrix gives llama-quantize's bytes. IQ4 takes weights in `iq4`.

use super::kquant::{
    make_qkx2_quants, make_qx_quants, pack2, pack4, pack5k, pack_q3, put_q3_scales,
    put_scale_min_k4, q3_scale, q6_k_finish, requantize_k4, Sweep, GROUP_MAX_EPS,
};
use super::round::{f16_bits, nearest_int, via_f16};

/// The weighted searches' sweep of starting scales.
const SWEEP: Sweep = Sweep {
    rmin: -0.9,
    rdelta: 0.05,
    nstep: 36,
    use_mad: false,
};

fn sum_sq(x: &[f32]) -> f32 {
    let mut s = 0.0f32;
    for v in x {
        s += v * v;
    }
    s
}

/// `qw[j] · sqrt(σ² + x[j]²)` for one block.
fn block_weights(x: &[f32], qw: &[f32], sigma2: f32, out: &mut [f32]) {
    for j in 0..x.len() {
        out[j] = qw[j] * (sigma2 + x[j] * x[j]).sqrt();
    }
}

/// Codes in `[0, nmax]` for non-negative values (sub-block scales or mins) with one scale,
/// found by a sweep and then single-code moves, weighted by `w`.
fn make_qp_quants(x: &[f32], nmax: i32, l: &mut [u8], w: &[f32]) -> f32 {
    let max = x.iter().fold(0.0f32, |m, &v| if m > v { m } else { v });
    if max < GROUP_MAX_EPS {
        l.fill(0);
        return 0.0;
    }
    let mut iscale = nmax as f32 / max;
    for i in 0..x.len() {
        l[i] = nearest_int(iscale * x[i]) as u8;
    }
    let scale = 1.0 / iscale;
    let mut best_mse = 0.0f32;
    for i in 0..x.len() {
        let diff = x[i] - scale * l[i] as f32;
        best_mse += w[i] * diff * diff;
    }
    for is in -4..=4 {
        if is == 0 {
            continue;
        }
        let iscale_is = (0.1 * is as f32 + nmax as f32) / max;
        let scale_is = 1.0 / iscale_is;
        let mut mse = 0.0f32;
        for i in 0..x.len() {
            let q = nearest_int(iscale_is * x[i]).min(nmax);
            let diff = x[i] - scale_is * q as f32;
            mse += w[i] * diff * diff;
        }
        if mse < best_mse {
            best_mse = mse;
            iscale = iscale_is;
        }
    }
    let (mut sumlx, mut suml2) = (0.0f32, 0.0f32);
    for i in 0..x.len() {
        let q = nearest_int(iscale * x[i]).min(nmax);
        l[i] = q as u8;
        sumlx += w[i] * x[i] * q as f32;
        suml2 += w[i] * q as f32 * q as f32;
    }
    for _ in 0..5 {
        let mut changed = 0;
        for i in 0..x.len() {
            let li = l[i] as f32;
            let mut slx = sumlx - w[i] * x[i] * li;
            let mut sl2 = suml2 - w[i] * li * li;
            if slx > 0.0 && sl2 > 0.0 {
                let new_l = nearest_int(x[i] * sl2 / slx).min(nmax);
                if new_l != l[i] as i32 {
                    slx += w[i] * x[i] * new_l as f32;
                    sl2 += w[i] * new_l as f32 * new_l as f32;
                    if slx * slx * suml2 > sumlx * sumlx * sl2 {
                        l[i] = new_l as u8;
                        sumlx = slx;
                        suml2 = sl2;
                        changed += 1;
                    }
                }
            }
        }
        if changed == 0 {
            break;
        }
    }
    if suml2 > 0.0 {
        sumlx / suml2
    } else {
        0.0
    }
}

/// Rows of 32-value blocks: `block(xb, weights, out_block)` per block, σ² over the whole row.
fn rows32(
    x: &[f32],
    n_per_row: usize,
    qw: &[f32],
    out: &mut [u8],
    bytes: usize,
    block: impl Fn(&[f32], &[f32], &mut [u8]),
) {
    let mut weight = [0.0f32; 32];
    for (row, orow) in x
        .chunks_exact(n_per_row)
        .zip(out.chunks_exact_mut(n_per_row / 32 * bytes))
    {
        let sigma2 = sum_sq(row) / n_per_row as f32;
        for (ib, (xb, y)) in row
            .chunks_exact(32)
            .zip(orow.chunks_exact_mut(bytes))
            .enumerate()
        {
            block_weights(xb, &qw[32 * ib..32 * ib + 32], sigma2, &mut weight);
            block(xb, &weight, y);
        }
    }
}

/// Writes 32 five-bit codes as Q5_0/Q5_1 store them (`qh` u32 of fifth bits, then nibbles).
fn put5(l: &[u8], qh: &mut [u8], qs: &mut [u8]) {
    let mut h = 0u32;
    for j in 0..16 {
        qs[j] = (l[j] & 0x0F) | ((l[j + 16] & 0x0F) << 4);
        h |= ((l[j] as u32 & 0x10) >> 4) << j;
        h |= ((l[j + 16] as u32 & 0x10) >> 4) << (j + 16);
    }
    qh.copy_from_slice(&h.to_le_bytes());
}

pub fn q4_0(x: &[f32], n_per_row: usize, qw: &[f32], out: &mut [u8]) {
    rows32(x, n_per_row, qw, out, 18, |xb, w, y| {
        let mut l = [0i8; 32];
        let d = make_qx_quants(xb, 8, &mut l, Some(w));
        y[..2].copy_from_slice(&f16_bits(d).to_le_bytes());
        for j in 0..16 {
            y[2 + j] = l[j] as u8 | ((l[j + 16] as u8) << 4);
        }
    });
}

pub fn q4_1(x: &[f32], n_per_row: usize, qw: &[f32], out: &mut [u8]) {
    rows32(x, n_per_row, qw, out, 20, |xb, w, y| {
        let (mut l, mut min) = ([0u8; 32], 0.0f32);
        let d = make_qkx2_quants(xb, 15, w, &mut l, &mut min, &SWEEP);
        y[..2].copy_from_slice(&f16_bits(d).to_le_bytes());
        y[2..4].copy_from_slice(&f16_bits(-min).to_le_bytes());
        for j in 0..16 {
            y[4 + j] = l[j] | (l[j + 16] << 4);
        }
    });
}

pub fn q5_0(x: &[f32], n_per_row: usize, qw: &[f32], out: &mut [u8]) {
    rows32(x, n_per_row, qw, out, 22, |xb, w, y| {
        let mut l = [0i8; 32];
        let d = make_qx_quants(xb, 16, &mut l, Some(w));
        y[..2].copy_from_slice(&f16_bits(d).to_le_bytes());
        let l: Vec<u8> = l.iter().map(|&v| v as u8).collect();
        let (qh, qs) = y[2..].split_at_mut(4);
        put5(&l, qh, qs);
    });
}

pub fn q5_1(x: &[f32], n_per_row: usize, qw: &[f32], out: &mut [u8]) {
    rows32(x, n_per_row, qw, out, 24, |xb, w, y| {
        let (mut l, mut min) = ([0u8; 32], 0.0f32);
        let d = make_qkx2_quants(xb, 31, w, &mut l, &mut min, &SWEEP);
        y[..2].copy_from_slice(&f16_bits(d).to_le_bytes());
        y[2..4].copy_from_slice(&f16_bits(-min).to_le_bytes());
        let (qh, qs) = y[4..].split_at_mut(4);
        put5(&l, qh, qs);
    });
}

/// Rows of 256-value super-blocks: `block(xs, qw_slice, out_block)`.
fn rows256(
    x: &[f32],
    n_per_row: usize,
    qw: &[f32],
    out: &mut [u8],
    bytes: usize,
    mut block: impl FnMut(&[f32], &[f32], &mut [u8]),
) {
    for (row, orow) in x
        .chunks_exact(n_per_row)
        .zip(out.chunks_exact_mut(n_per_row / 256 * bytes))
    {
        for (i, (xs, y)) in row
            .chunks_exact(256)
            .zip(orow.chunks_exact_mut(bytes))
            .enumerate()
        {
            block(xs, &qw[256 * i..256 * i + 256], y);
        }
    }
}

pub fn q2_k(x: &[f32], n_per_row: usize, qw: &[f32], out: &mut [u8]) {
    rows256(x, n_per_row, qw, out, 84, |xs, qw, y| {
        let mut codes = [0u8; 256];
        let (mut scales, mut mins, mut sw) = ([0.0f32; 16], [0.0f32; 16], [0.0f32; 16]);
        let mut weight = [0.0f32; 16];
        let sigma2 = sum_sq(xs) / 256.0;
        for j in 0..16 {
            let g = &xs[16 * j..16 * j + 16];
            block_weights(g, &qw[16 * j..16 * j + 16], sigma2, &mut weight);
            for w in weight {
                sw[j] += w;
            }
            let l = &mut codes[16 * j..16 * j + 16];
            scales[j] = make_qkx2_quants(g, 3, &weight, l, &mut mins[j], &SWEEP);
        }
        let (mut ls, mut lm) = ([0u8; 16], [0u8; 16]);
        let dm = make_qp_quants(&scales, 15, &mut ls, &sw);
        let mm = make_qp_quants(&mins, 15, &mut lm, &sw);
        let (sc, rest) = y.split_at_mut(16);
        let (qs, dd) = rest.split_at_mut(64);
        dd[..2].copy_from_slice(&f16_bits(dm).to_le_bytes());
        dd[2..].copy_from_slice(&f16_bits(mm).to_le_bytes());
        let (dm, mm) = (via_f16(dm), via_f16(mm));
        for j in 0..16 {
            sc[j] = ls[j] | (lm[j] << 4);
        }
        for j in 0..16 {
            let d = dm * (sc[j] & 0xF) as f32;
            if d == 0.0 {
                continue;
            }
            let m = mm * (sc[j] >> 4) as f32;
            for ii in 0..16 {
                codes[16 * j + ii] = nearest_int((xs[16 * j + ii] + m) / d).clamp(0, 3) as u8;
            }
        }
        pack2(&codes, qs);
    });
}

pub fn q3_k(x: &[f32], n_per_row: usize, qw: &[f32], out: &mut [u8]) {
    rows256(x, n_per_row, qw, out, 110, |xs, qw, y| {
        let mut l = [0i8; 256];
        let (mut scales, mut sw) = ([0.0f32; 16], [0.0f32; 16]);
        let mut weight = [0.0f32; 16];
        let sigma2 = 2.0 * sum_sq(xs) / 256.0;
        for j in 0..16 {
            let g = &xs[16 * j..16 * j + 16];
            block_weights(g, &qw[16 * j..16 * j + 16], sigma2, &mut weight);
            sw[j] = weight.iter().fold(0.0f32, |a, w| a + w);
            scales[j] = make_qx_quants(g, 4, &mut l[16 * j..16 * j + 16], Some(&weight));
        }
        let (hmask, rest) = y.split_at_mut(32);
        let (qs, rest) = rest.split_at_mut(64);
        let (sc, dd) = rest.split_at_mut(12);
        let mut ls = [0i8; 16];
        let d_block = make_qx_quants(&scales, 32, &mut ls, Some(&sw));
        put_q3_scales(&ls.map(|v| v as i32), sc);
        dd.copy_from_slice(&f16_bits(d_block).to_le_bytes());
        let d_all = via_f16(d_block);
        for j in 0..16 {
            let d = d_all * q3_scale(sc, j) as f32;
            if d == 0.0 {
                continue;
            }
            for ii in 0..16 {
                l[16 * j + ii] = (nearest_int(xs[16 * j + ii] / d).clamp(-4, 3) + 4) as i8;
            }
        }
        let mut codes = l.map(|v| v as u8);
        pack_q3(&mut codes, hmask, qs);
    });
}

/// Q4_K (`nmax` 15) and Q5_K (31) with weights: d, dmin, scales in `head`, codes returned.
fn k4_weighted(xs: &[f32], qw: &[f32], nmax: i32, head: &mut [u8]) -> [u8; 256] {
    let mut codes = [0u8; 256];
    let (mut scales, mut mins, mut sw) = ([0.0f32; 8], [0.0f32; 8], [0.0f32; 8]);
    let mut weights = [0.0f32; 32];
    let sigma2 = 2.0 * sum_sq(xs) / 256.0;
    for j in 0..8 {
        let g = &xs[32 * j..32 * j + 32];
        block_weights(g, &qw[32 * j..32 * j + 32], sigma2, &mut weights);
        sw[j] = weights.iter().fold(0.0f32, |a, w| a + w);
        let l = &mut codes[32 * j..32 * j + 32];
        scales[j] = make_qkx2_quants(g, nmax, &weights, l, &mut mins[j], &SWEEP);
    }
    let (mut ls, mut lm) = ([0u8; 8], [0u8; 8]);
    let d_block = make_qp_quants(&scales, 63, &mut ls, &sw);
    let m_block = make_qp_quants(&mins, 63, &mut lm, &sw);
    let (ls, lm) = (ls.map(|v| v.min(63)), lm.map(|v| v.min(63)));
    head[..2].copy_from_slice(&f16_bits(d_block).to_le_bytes());
    head[2..4].copy_from_slice(&f16_bits(m_block).to_le_bytes());
    put_scale_min_k4(&ls, &lm, &mut head[4..16]);
    requantize_k4(xs, nmax, head, &mut codes);
    codes
}

pub fn q4_k(x: &[f32], n_per_row: usize, qw: &[f32], out: &mut [u8]) {
    rows256(x, n_per_row, qw, out, 144, |xs, qw, y| {
        let (head, qs) = y.split_at_mut(16);
        let codes = k4_weighted(xs, qw, 15, head);
        pack4(&codes, qs);
    });
}

pub fn q5_k(x: &[f32], n_per_row: usize, qw: &[f32], out: &mut [u8]) {
    rows256(x, n_per_row, qw, out, 176, |xs, qw, y| {
        let (head, rest) = y.split_at_mut(16);
        let codes = k4_weighted(xs, qw, 31, head);
        pack5k(&codes, rest);
    });
}

pub fn q6_k(x: &[f32], n_per_row: usize, qw: &[f32], out: &mut [u8]) {
    rows256(x, n_per_row, qw, out, 210, |xs, qw, y| {
        let mut l = [0i8; 256];
        let mut scales = [0.0f32; 16];
        let (mut max_scale, mut max_abs) = (0.0f32, 0.0f32);
        for ib in 0..16 {
            let g = &xs[16 * ib..16 * ib + 16];
            let w = &qw[16 * ib..16 * ib + 16];
            scales[ib] = make_qx_quants(g, 32, &mut l[16 * ib..16 * ib + 16], Some(w));
            if scales[ib].abs() > max_abs {
                max_abs = scales[ib].abs();
                max_scale = scales[ib];
            }
        }
        q6_k_finish(xs, &scales, max_scale, max_abs, &mut l, y);
    });
}

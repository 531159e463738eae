//! The K-quants (Q2_K … Q6_K: 256-value super-blocks of 16- or 32-value sub-blocks with their own
//! quantized scales) without an importance matrix. Scale searches follow ggml's reference
//! quantizers operation for operation, so the bytes match llama-quantize's; the weighted
//! searches that an importance matrix drives are in `weighted`.

use super::round::{f16_bits, nearest_int, via_f16};

/// Below this a group counts as all zero.
pub(super) const GROUP_MAX_EPS: f32 = 1e-15;

/// The first value of largest magnitude, with its sign, and that magnitude.
pub(super) fn signed_absmax(x: &[f32]) -> (f32, f32) {
    let (mut amax, mut max) = (0.0f32, 0.0f32);
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    (max, amax)
}

/// Symmetric codes in `[-nmax, nmax)` for one group, the scale chosen by a search around
/// `max / -nmax` that maximises the weighted fit (`rmse_type` 1: weights x², as Q6_K uses).
/// `l` gets the codes offset by `nmax`.
pub(super) fn make_qx_quants(x: &[f32], nmax: i32, l: &mut [i8], qw: Option<&[f32]>) -> f32 {
    let (max, amax) = signed_absmax(x);
    if amax < GROUP_MAX_EPS {
        l.fill(0);
        return 0.0;
    }
    let weight = |i: usize| qw.map_or(x[i] * x[i], |w| w[i]);
    let code = |iscale: f32, v: f32| nearest_int(iscale * v).clamp(-nmax, nmax - 1);
    let mut iscale = -nmax as f32 / max;
    let (mut sumlx, mut suml2) = (0.0f32, 0.0f32);
    for i in 0..x.len() {
        let q = code(iscale, x[i]);
        l[i] = (q + nmax) as i8;
        let w = weight(i);
        sumlx += w * x[i] * q as f32;
        suml2 += w * q as f32 * q as f32;
    }
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    for is in -9..=9 {
        if is == 0 {
            continue;
        }
        iscale = -(nmax as f32 + 0.1 * is as f32) / max;
        (sumlx, suml2) = (0.0, 0.0);
        for i in 0..x.len() {
            let q = code(iscale, x[i]) as f32;
            let w = weight(i);
            sumlx += w * x[i] * q;
            suml2 += w * q * q;
        }
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            for i in 0..x.len() {
                l[i] = (code(iscale, x[i]) + nmax) as i8;
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

/// Q3_K's group search: start from `max / -nmax`, then move single codes while that improves
/// the x²-weighted fit (at most 5 passes). `l` gets codes offset by `nmax`.
fn make_q3_quants(x: &[f32], nmax: i32, l: &mut [i8]) -> f32 {
    let (max, amax) = signed_absmax(x);
    if amax < GROUP_MAX_EPS {
        l.fill(0);
        return 0.0;
    }
    let iscale = -nmax as f32 / max;
    let (mut sumlx, mut suml2) = (0.0f32, 0.0f32);
    for i in 0..x.len() {
        let q = nearest_int(iscale * x[i]).clamp(-nmax, nmax - 1);
        l[i] = q as i8;
        let w = x[i] * x[i];
        sumlx += w * x[i] * q as f32;
        suml2 += w * q as f32 * q as f32;
    }
    for _ in 0..5 {
        let mut changed = 0;
        for i in 0..x.len() {
            let w = x[i] * x[i];
            let li = l[i] as f32;
            let mut slx = sumlx - w * x[i] * li;
            if slx > 0.0 {
                let mut sl2 = suml2 - w * li * li;
                let new_l = nearest_int(x[i] * sl2 / slx).clamp(-nmax, nmax - 1);
                if new_l != l[i] as i32 {
                    slx += w * x[i] * new_l as f32;
                    sl2 += w * new_l as f32 * new_l as f32;
                    if sl2 > 0.0 && slx * slx * suml2 > sumlx * sumlx * sl2 {
                        l[i] = new_l as i8;
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
    for v in l.iter_mut() {
        *v += nmax as i8;
    }
    if suml2 > 0.0 {
        sumlx / suml2
    } else {
        0.0
    }
}

/// Search settings of `make_qkx2_quants`: scales tried are `(rmin + rdelta·is + nmax) / range`.
pub(super) struct Sweep {
    pub rmin: f32,
    pub rdelta: f32,
    pub nstep: i32,
    /// Absolute instead of squared error.
    pub use_mad: bool,
}

/// Asymmetric codes in `[0, nmax]` with a scale and a (non-positive) min, fitted by weighted
/// least squares over a sweep of starting scales. Returns the scale; `the_min` gets `-min`.
pub(super) fn make_qkx2_quants(
    x: &[f32],
    nmax: i32,
    weights: &[f32],
    l: &mut [u8],
    the_min: &mut f32,
    s: &Sweep,
) -> f32 {
    let n = x.len();
    let (mut min, mut max) = (x[0], x[0]);
    let mut sum_w = weights[0];
    let mut sum_x = sum_w * x[0];
    for i in 1..n {
        if x[i] < min {
            min = x[i];
        }
        if x[i] > max {
            max = x[i];
        }
        sum_w += weights[i];
        sum_x += weights[i] * x[i];
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        l.fill(0);
        *the_min = -min;
        return 0.0;
    }
    let err = |d: f32| if s.use_mad { d.abs() } else { d * d };
    let mut iscale = nmax as f32 / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best_error = 0.0f32;
    for i in 0..n {
        l[i] = nearest_int(iscale * (x[i] - min)).clamp(0, nmax) as u8;
        best_error += weights[i] * err(scale * l[i] as f32 + min - x[i]);
    }
    if s.nstep < 1 {
        *the_min = -min;
        return scale;
    }
    let mut laux = [0u8; 32];
    for is in 0..=s.nstep {
        iscale = (s.rmin + s.rdelta * is as f32 + nmax as f32) / (max - min);
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0.0f32, 0.0f32, 0.0f32);
        for i in 0..n {
            let q = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
            laux[i] = q as u8;
            let w = weights[i];
            sum_l += w * q as f32;
            sum_l2 += w * q as f32 * q as f32;
            sum_xl += w * q as f32 * x[i];
        }
        let det = sum_w * sum_l2 - sum_l * sum_l;
        if det > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / det;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut cur_error = 0.0f32;
            for i in 0..n {
                cur_error += weights[i] * err(this_scale * laux[i] as f32 + this_min - x[i]);
            }
            if cur_error < best_error {
                l[..n].copy_from_slice(&laux[..n]);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    *the_min = -min;
    scale
}

/// Packs 2-bit codes: byte `l` of each 32-byte group holds codes `l`, `l+32`, `l+64`, `l+96`.
pub(super) fn pack2(codes: &[u8], qs: &mut [u8]) {
    for (c, q) in codes.chunks_exact(128).zip(qs.chunks_exact_mut(32)) {
        for l in 0..32 {
            q[l] = c[l] | (c[l + 32] << 2) | (c[l + 64] << 4) | (c[l + 96] << 6);
        }
    }
}

/// Q2_K block: scales[16] (4-bit scale | 4-bit min), qs[64], d, dmin (84 bytes).
pub fn q2_k(x: &[f32], out: &mut [u8]) {
    let sweep = Sweep {
        rmin: -0.5,
        rdelta: 0.1,
        nstep: 15,
        use_mad: true,
    };
    for (xb, y) in x.chunks_exact(256).zip(out.chunks_exact_mut(84)) {
        let mut codes = [0u8; 256];
        let (mut scales, mut mins) = ([0.0f32; 16], [0.0f32; 16]);
        let (mut max_scale, mut max_min) = (0.0f32, 0.0f32);
        for j in 0..16 {
            let g = &xb[16 * j..16 * j + 16];
            let weights: Vec<f32> = g.iter().map(|v| v.abs()).collect();
            scales[j] = make_qkx2_quants(
                g,
                3,
                &weights,
                &mut codes[16 * j..16 * j + 16],
                &mut mins[j],
                &sweep,
            );
            max_scale = max_scale.max_keep(scales[j]);
            max_min = max_min.max_keep(mins[j]);
        }
        let (sc, rest) = y.split_at_mut(16);
        let (qs, dd) = rest.split_at_mut(64);
        if max_scale > 0.0 {
            let iscale = 15.0 / max_scale;
            for j in 0..16 {
                sc[j] = nearest_int(iscale * scales[j]) as u8;
            }
            dd[..2].copy_from_slice(&f16_bits(max_scale / 15.0).to_le_bytes());
        } else {
            sc.fill(0);
            dd[..2].copy_from_slice(&f16_bits(0.0).to_le_bytes());
        }
        if max_min > 0.0 {
            let iscale = 15.0 / max_min;
            for j in 0..16 {
                sc[j] |= (nearest_int(iscale * mins[j]) << 4) as u8;
            }
            dd[2..].copy_from_slice(&f16_bits(max_min / 15.0).to_le_bytes());
        } else {
            dd[2..].copy_from_slice(&f16_bits(0.0).to_le_bytes());
        }
        let d_all = f16_at(dd, 0);
        let m_all = f16_at(dd, 2);
        for j in 0..16 {
            let d = d_all * (sc[j] & 0xF) as f32;
            if d == 0.0 {
                continue;
            }
            let dm = m_all * (sc[j] >> 4) as f32;
            for ii in 0..16 {
                codes[16 * j + ii] = nearest_int((xb[16 * j + ii] + dm) / d).clamp(0, 3) as u8;
            }
        }
        pack2(&codes, qs);
    }
}

pub(super) fn f16_at(b: &[u8], at: usize) -> f32 {
    half::f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

/// `a > b ? a : b` as C writes it (keeps `a` on ties and NaN).
pub(super) trait MaxKeep {
    fn max_keep(self, other: f32) -> f32;
}
impl MaxKeep for f32 {
    fn max_keep(self, other: f32) -> f32 {
        if other > self {
            other
        } else {
            self
        }
    }
}

/// Writes Q3_K's 16 six-bit signed scales (offset 32) into its 12 scale bytes.
pub(super) fn put_q3_scales(levels: &[i32; 16], sc: &mut [u8]) {
    sc.fill(0);
    for (j, &l) in levels.iter().enumerate() {
        let l = l as u8;
        if j < 8 {
            sc[j] = l & 0xF;
        } else {
            sc[j - 8] |= (l & 0xF) << 4;
        }
        sc[j % 4 + 8] |= (l >> 4) << (2 * (j / 4));
    }
}

/// Q3_K's scale `j` as stored (6 bits, minus 32).
pub(super) fn q3_scale(sc: &[u8], j: usize) -> i32 {
    let low = if j < 8 { sc[j] & 0xF } else { sc[j - 8] >> 4 };
    let high = (sc[8 + j % 4] >> (2 * (j / 4))) & 3;
    (low | (high << 4)) as i32 - 32
}

/// Q3_K's high bits and low pairs from codes in `[0, 8)`.
pub(super) fn pack_q3(codes: &mut [u8; 256], hmask: &mut [u8], qs: &mut [u8]) {
    hmask.fill(0);
    let (mut m, mut hm) = (0, 1u8);
    for c in codes.iter_mut() {
        if *c > 3 {
            hmask[m] |= hm;
            *c -= 4;
        }
        m += 1;
        if m == 32 {
            m = 0;
            hm <<= 1;
        }
    }
    pack2(codes, qs);
}

/// Q3_K block: hmask[32], qs[64], scales[12], d (110 bytes).
pub fn q3_k(x: &[f32], out: &mut [u8]) {
    for (xb, y) in x.chunks_exact(256).zip(out.chunks_exact_mut(110)) {
        let mut l = [0i8; 256];
        let mut scales = [0.0f32; 16];
        let (mut max_scale, mut amax) = (0.0f32, 0.0f32);
        for j in 0..16 {
            scales[j] = make_q3_quants(&xb[16 * j..16 * j + 16], 4, &mut l[16 * j..16 * j + 16]);
            if scales[j].abs() > amax {
                amax = scales[j].abs();
                max_scale = scales[j];
            }
        }
        let (hmask, rest) = y.split_at_mut(32);
        let (qs, rest) = rest.split_at_mut(64);
        let (sc, dd) = rest.split_at_mut(12);
        if max_scale != 0.0 {
            let iscale = -32.0 / max_scale;
            let mut levels = [0i32; 16];
            for j in 0..16 {
                levels[j] = (nearest_int(iscale * scales[j]) as i8).clamp(-32, 31) as i32 + 32;
            }
            put_q3_scales(&levels, sc);
            dd.copy_from_slice(&f16_bits(1.0 / iscale).to_le_bytes());
        } else {
            sc.fill(0);
            dd.copy_from_slice(&f16_bits(0.0).to_le_bytes());
        }
        let d_all = f16_at(dd, 0);
        for j in 0..16 {
            let d = d_all * q3_scale(sc, j) as f32;
            if d == 0.0 {
                continue;
            }
            for ii in 0..16 {
                l[16 * j + ii] = (nearest_int(xb[16 * j + ii] / d).clamp(-4, 3) + 4) as i8;
            }
        }
        let mut codes = [0u8; 256];
        for (c, v) in codes.iter_mut().zip(l) {
            *c = v as u8;
        }
        pack_q3(&mut codes, hmask, qs);
    }
}

/// Writes eight 6-bit scales and mins into the 12 bytes Q4_K and Q5_K share.
pub(super) fn put_scale_min_k4(ls: &[u8; 8], lm: &[u8; 8], sc: &mut [u8]) {
    for j in 0..8 {
        if j < 4 {
            sc[j] = ls[j];
            sc[j + 4] = lm[j];
        } else {
            sc[j + 4] = (ls[j] & 0xF) | ((lm[j] & 0xF) << 4);
            sc[j - 4] |= (ls[j] >> 4) << 6;
            sc[j] |= (lm[j] >> 4) << 6;
        }
    }
}

/// Reads scale and min `j` back from those 12 bytes.
pub(super) fn get_scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// Q4_K (`nmax` 15) or Q5_K (31): eight 32-value groups with 6-bit scales and mins. Writes
/// d, dmin and the scale bytes to `head` (16 bytes) and the codes to `codes`.
fn k4_groups(xb: &[f32], nmax: i32, sweep: &Sweep, head: &mut [u8], codes: &mut [u8; 256]) {
    let (mut scales, mut mins) = ([0.0f32; 8], [0.0f32; 8]);
    let (mut max_scale, mut max_min) = (0.0f32, 0.0f32);
    for j in 0..8 {
        let g = &xb[32 * j..32 * j + 32];
        let mut sum_x2 = 0.0f32;
        for v in g {
            sum_x2 += v * v;
        }
        let av_x = (sum_x2 / 32.0).sqrt();
        let weights: Vec<f32> = g.iter().map(|v| av_x + v.abs()).collect();
        scales[j] = make_qkx2_quants(
            g,
            nmax,
            &weights,
            &mut codes[32 * j..32 * j + 32],
            &mut mins[j],
            sweep,
        );
        max_scale = max_scale.max_keep(scales[j]);
        max_min = max_min.max_keep(mins[j]);
    }
    let inv_scale = if max_scale > 0.0 {
        63.0 / max_scale
    } else {
        0.0
    };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    let (mut ls, mut lm) = ([0u8; 8], [0u8; 8]);
    for j in 0..8 {
        ls[j] = (nearest_int(inv_scale * scales[j]) as u8).min(63);
        lm[j] = (nearest_int(inv_min * mins[j]) as u8).min(63);
    }
    head[..2].copy_from_slice(&f16_bits(max_scale / 63.0).to_le_bytes());
    head[2..4].copy_from_slice(&f16_bits(max_min / 63.0).to_le_bytes());
    put_scale_min_k4(&ls, &lm, &mut head[4..16]);
    requantize_k4(xb, nmax, head, codes);
}

/// Codes against the scales and mins as stored (after their rounding to 6 bits and f16).
pub(super) fn requantize_k4(xb: &[f32], nmax: i32, head: &[u8], codes: &mut [u8; 256]) {
    let (d_all, m_all) = (f16_at(head, 0), f16_at(head, 2));
    for j in 0..8 {
        let (sc, m) = get_scale_min_k4(j, &head[4..16]);
        let d = d_all * sc as f32;
        if d == 0.0 {
            continue;
        }
        let dm = m_all * m as f32;
        for ii in 0..32 {
            codes[32 * j + ii] = nearest_int((xb[32 * j + ii] + dm) / d).clamp(0, nmax) as u8;
        }
    }
}

/// Q4_K block: d, dmin, scales[12], qs[128] (144 bytes).
pub fn q4_k(x: &[f32], out: &mut [u8]) {
    let sweep = Sweep {
        rmin: -1.0,
        rdelta: 0.1,
        nstep: 20,
        use_mad: false,
    };
    for (xb, y) in x.chunks_exact(256).zip(out.chunks_exact_mut(144)) {
        let mut codes = [0u8; 256];
        let (head, qs) = y.split_at_mut(16);
        k4_groups(xb, 15, &sweep, head, &mut codes);
        pack4(&codes, qs);
    }
}

/// Byte `l` of each 32-byte group holds codes `l` (low nibble) and `l+32` (high).
pub(super) fn pack4(codes: &[u8; 256], qs: &mut [u8]) {
    for (c, q) in codes.chunks_exact(64).zip(qs.chunks_exact_mut(32)) {
        for l in 0..32 {
            q[l] = c[l] | (c[l + 32] << 4);
        }
    }
}

/// Q5_K block: d, dmin, scales[12], qh[32], qs[128] (176 bytes).
pub fn q5_k(x: &[f32], out: &mut [u8]) {
    let sweep = Sweep {
        rmin: -0.5,
        rdelta: 0.1,
        nstep: 15,
        use_mad: false,
    };
    for (xb, y) in x.chunks_exact(256).zip(out.chunks_exact_mut(176)) {
        let mut codes = [0u8; 256];
        let (head, rest) = y.split_at_mut(16);
        k4_groups(xb, 31, &sweep, head, &mut codes);
        pack5k(&codes, rest);
    }
}

/// Q5_K's qh[32] and qs[128] from codes in `[0, 32)`.
pub(super) fn pack5k(codes: &[u8; 256], rest: &mut [u8]) {
    let (qh, ql) = rest.split_at_mut(32);
    qh.fill(0);
    let (mut m1, mut m2) = (1u8, 2u8);
    for (n, q) in (0..256).step_by(64).zip(ql.chunks_exact_mut(32)) {
        for j in 0..32 {
            let mut l1 = codes[n + j];
            if l1 > 15 {
                l1 -= 16;
                qh[j] |= m1;
            }
            let mut l2 = codes[n + j + 32];
            if l2 > 15 {
                l2 -= 16;
                qh[j] |= m2;
            }
            q[j] = l1 | (l2 << 4);
        }
        m1 <<= 2;
        m2 <<= 2;
    }
}

/// Q6_K block: ql[128], qh[64], scales[16] (i8), d (210 bytes).
pub fn q6_k(x: &[f32], out: &mut [u8]) {
    for (xb, y) in x.chunks_exact(256).zip(out.chunks_exact_mut(210)) {
        let mut l = [0i8; 256];
        let mut scales = [0.0f32; 16];
        let (mut max_scale, mut max_abs) = (0.0f32, 0.0f32);
        for ib in 0..16 {
            scales[ib] = make_qx_quants(
                &xb[16 * ib..16 * ib + 16],
                32,
                &mut l[16 * ib..16 * ib + 16],
                None,
            );
            if scales[ib].abs() > max_abs {
                max_abs = scales[ib].abs();
                max_scale = scales[ib];
            }
        }
        q6_k_finish(xb, &scales, max_scale, max_abs, &mut l, y);
    }
}

/// Stores Q6_K's scales (relative to `max_scale`), then codes against them as stored.
pub(super) fn q6_k_finish(
    xb: &[f32],
    scales: &[f32; 16],
    max_scale: f32,
    max_abs: f32,
    l: &mut [i8; 256],
    y: &mut [u8],
) {
    if max_abs < GROUP_MAX_EPS {
        y.fill(0);
        return;
    }
    let iscale = -128.0 / max_scale;
    y[208..].copy_from_slice(&f16_bits(1.0 / iscale).to_le_bytes());
    for ib in 0..16 {
        y[192 + ib] = nearest_int(iscale * scales[ib]).min(127) as i8 as u8;
    }
    let d_all = via_f16(1.0 / iscale);
    for j in 0..16 {
        let d = d_all * y[192 + j] as i8 as f32;
        if d == 0.0 {
            continue;
        }
        for ii in 0..16 {
            l[16 * j + ii] = (nearest_int(xb[16 * j + ii] / d).clamp(-32, 31) + 32) as i8;
        }
    }
    let (ql, rest) = y.split_at_mut(128);
    let qh = &mut rest[..64];
    for (jb, (ql, qh)) in ql
        .chunks_exact_mut(64)
        .zip(qh.chunks_exact_mut(32))
        .enumerate()
    {
        let c = &l[128 * jb..128 * jb + 128];
        for k in 0..32 {
            let q = |o: usize| c[k + o] as u8;
            ql[k] = (q(0) & 0xF) | ((q(64) & 0xF) << 4);
            ql[k + 32] = (q(32) & 0xF) | ((q(96) & 0xF) << 4);
            qh[k] = (q(0) >> 4) | ((q(32) >> 4) << 2) | ((q(64) >> 4) << 4) | ((q(96) >> 4) << 6);
        }
    }
}

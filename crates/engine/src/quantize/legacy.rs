//! Float conversions and the 32-element block types (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0) without an
//! importance matrix. Each function is written so its float operations happen in the order
//! ggml's reference quantizers perform them (no fused multiply-adds, sequential sums): files
//! made here are byte-identical to llama-quantize's. The weighted variants are in `weighted`.

use super::round::f16_bits;
use half::bf16;

/// f32 → f16, round to nearest even (ggml's `GGML_FP32_TO_FP16`).
pub fn to_f16(x: &[f32], out: &mut [u8]) {
    for (v, o) in x.iter().zip(out.chunks_exact_mut(2)) {
        o.copy_from_slice(&f16_bits(*v).to_le_bytes());
    }
}

/// f32 → bf16, round to nearest even, NaN made quiet (ggml's `ggml_compute_fp32_to_bf16`).
pub fn to_bf16(x: &[f32], out: &mut [u8]) {
    for (v, o) in x.iter().zip(out.chunks_exact_mut(2)) {
        let u = v.to_bits();
        let bits = if u & 0x7fff_ffff > 0x7f80_0000 {
            ((u >> 16) | 64) as u16
        } else {
            (u.wrapping_add(0x7fff + ((u >> 16) & 1)) >> 16) as u16
        };
        o.copy_from_slice(&bf16::from_bits(bits).to_le_bytes());
    }
}

/// The value of largest magnitude (the first such, keeping its sign) in a block.
fn signed_absmax(x: &[f32]) -> f32 {
    super::kquant::signed_absmax(x).0
}

fn min_max(x: &[f32]) -> (f32, f32) {
    let (mut min, mut max) = (f32::MAX, -f32::MAX);
    for &v in x {
        if v < min {
            min = v;
        }
        if v > max {
            max = v;
        }
    }
    (min, max)
}

/// Q4_0: per 32 values one f16 scale `d = max / -8` and 4-bit codes `x/d + 8`.
pub fn q4_0(x: &[f32], out: &mut [u8]) {
    for (xb, y) in x.chunks_exact(32).zip(out.chunks_exact_mut(18)) {
        let d = signed_absmax(xb) / -8.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        y[..2].copy_from_slice(&f16_bits(d).to_le_bytes());
        for j in 0..16 {
            let c0 = 15.min((xb[j] * id + 8.5) as i32 as i8) as u8;
            let c1 = 15.min((xb[j + 16] * id + 8.5) as i32 as i8) as u8;
            y[2 + j] = c0 | (c1 << 4);
        }
    }
}

/// Q4_1: per 32 values an f16 step `(max - min) / 15`, the f16 min, and 4-bit codes.
pub fn q4_1(x: &[f32], out: &mut [u8]) {
    for (xb, y) in x.chunks_exact(32).zip(out.chunks_exact_mut(20)) {
        let (min, max) = min_max(xb);
        let d = (max - min) / 15.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        y[..2].copy_from_slice(&f16_bits(d).to_le_bytes());
        y[2..4].copy_from_slice(&f16_bits(min).to_le_bytes());
        for j in 0..16 {
            let c0 = 15.min(((xb[j] - min) * id + 0.5) as i32 as i8) as u8;
            let c1 = 15.min(((xb[j + 16] - min) * id + 0.5) as i32 as i8) as u8;
            y[4 + j] = c0 | (c1 << 4);
        }
    }
}

/// Writes 32 five-bit codes: low nibbles in `qs`, the fifth bits in the u32 `qh`.
fn pack5(codes: &[u8; 32], qh: &mut [u8], qs: &mut [u8]) {
    let mut h = 0u32;
    for j in 0..16 {
        qs[j] = (codes[j] & 0xF) | ((codes[j + 16] & 0xF) << 4);
        h |= ((codes[j] as u32 & 0x10) >> 4) << j;
        h |= ((codes[j + 16] as u32 & 0x10) >> 4) << (j + 16);
    }
    qh.copy_from_slice(&h.to_le_bytes());
}

/// Q5_0: `d = max / -16`, 5-bit codes `x/d + 16`.
pub fn q5_0(x: &[f32], out: &mut [u8]) {
    for (xb, y) in x.chunks_exact(32).zip(out.chunks_exact_mut(22)) {
        let d = signed_absmax(xb) / -16.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        y[..2].copy_from_slice(&f16_bits(d).to_le_bytes());
        let mut codes = [0u8; 32];
        for (c, v) in codes.iter_mut().zip(xb) {
            *c = 31.min((v * id + 16.5) as i32 as i8) as u8;
        }
        let (qh, qs) = y[2..].split_at_mut(4);
        pack5(&codes, qh, qs);
    }
}

/// Q5_1: step `(max - min) / 31`, the min, 5-bit codes.
pub fn q5_1(x: &[f32], out: &mut [u8]) {
    for (xb, y) in x.chunks_exact(32).zip(out.chunks_exact_mut(24)) {
        let (min, max) = min_max(xb);
        let d = (max - min) / 31.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        y[..2].copy_from_slice(&f16_bits(d).to_le_bytes());
        y[2..4].copy_from_slice(&f16_bits(min).to_le_bytes());
        let mut codes = [0u8; 32];
        for (c, v) in codes.iter_mut().zip(xb) {
            *c = ((v - min) * id + 0.5) as i32 as u8;
        }
        let (qh, qs) = y[4..].split_at_mut(4);
        pack5(&codes, qh, qs);
    }
}

/// C's `roundf` (half away from zero) for |x| < 2^31, without a libm call: the truncation and
/// the fraction are exact.
fn round_half_away(x: f32) -> i32 {
    let t = x as i32;
    let frac = x - t as f32;
    if frac >= 0.5 {
        t + 1
    } else if frac <= -0.5 {
        t - 1
    } else {
        t
    }
}

/// Q8_0: `d = absmax / 127`, codes `round(x/d)`.
pub fn q8_0(x: &[f32], out: &mut [u8]) {
    for (xb, y) in x.chunks_exact(32).zip(out.chunks_exact_mut(34)) {
        let amax = xb.iter().fold(0.0f32, |a, v| a.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        y[..2].copy_from_slice(&f16_bits(d).to_le_bytes());
        for (o, v) in y[2..].iter_mut().zip(xb) {
            *o = round_half_away(v * id) as i8 as u8;
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn rounding_is_c_roundf() {
        for x in [
            0.5f32, -0.5, 1.5, -1.5, 2.4999998, -2.5000002, 126.5, -127.49, 0.0, -0.0, 3.0,
        ] {
            assert_eq!(super::round_half_away(x), x.round() as i32, "{x}");
        }
    }
}

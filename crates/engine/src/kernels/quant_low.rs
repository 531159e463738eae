//! Decoding of the low-bit and non-linear GGML formats into `(u8 code, scale, offset)` form:
//! Q2_K and Q3_K (16-element sub-blocks), IQ4_NL, IQ4_XS and MXFP4 (a 16-entry value table per
//! 4-bit index, stored as 8-bit codes around 128), the ternary TQ1_0/TQ2_0 and the 1/2-bit
//! Q1_0/Q2_0 (codes around 1). Block layouts follow the public GGML definitions.

use super::quant::{f16_at, SubBlock};
use crate::gguf::GgmlType;

/// IQ4_NL's and IQ4_XS's non-linear 4-bit values.
const IQ4NL: [i8; 16] = [
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
];
/// MXFP4's values (twice the E2M1 numbers; the block scale carries the half).
const MXFP4: [i8; 16] = [0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12];

/// An E8M0 exponent as a float, halved (as GGML reads MXFP4 scales).
fn e8m0_half(e: u8) -> f32 {
    if e < 2 {
        f32::from_bits(0x0020_0000 << e)
    } else {
        f32::from_bits((e as u32 - 1) << 23)
    }
}

fn push(subs: &mut Vec<SubBlock>, n: usize, scale: f32, offset: f32) {
    for _ in 0..n {
        subs.push(SubBlock { scale, offset });
    }
}

/// 4-bit table indices, low nibbles first then high ones, as table values + 128.
fn table_codes(table: &[i8; 16], qs: &[u8], codes: &mut [u8]) {
    let half = qs.len();
    for (j, q) in qs.iter().enumerate() {
        codes[j] = (table[(q & 0xF) as usize] as i32 + 128) as u8;
        codes[j + half] = (table[(q >> 4) as usize] as i32 + 128) as u8;
    }
}

/// Q3_K's sixteen 6-bit scales, unpacked from 12 bytes.
fn q3k_scales(s: &[u8]) -> [i32; 16] {
    let mut out = [0i32; 16];
    for (j, o) in out.iter_mut().enumerate() {
        let low = if j < 8 { s[j] & 0xF } else { s[j - 8] >> 4 };
        let high = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
        *o = (low | (high << 4)) as i32 - 32;
    }
    out
}

pub(crate) fn decode_block(ty: GgmlType, b: &[u8], codes: &mut [u8], subs: &mut Vec<SubBlock>) {
    match ty {
        GgmlType::Q2_K => {
            let (scales, qs) = (&b[0..16], &b[16..80]);
            let (d, dmin) = (f16_at(b, 80), f16_at(b, 82));
            for sc in scales {
                subs.push(SubBlock {
                    scale: d * (sc & 0xF) as f32,
                    offset: -dmin * (sc >> 4) as f32,
                });
            }
            // 128-element halves; within one, 2-bit planes j of bytes 0..16 and 16..32.
            for (i, c) in codes.iter_mut().enumerate() {
                let (half, rest) = (i / 128, i % 128);
                let (plane, sub, l) = (rest / 32, rest % 32 / 16, rest % 16);
                *c = (qs[half * 32 + sub * 16 + l] >> (2 * plane)) & 3;
            }
        }
        GgmlType::Q3_K => {
            let (hmask, qs, d) = (&b[0..32], &b[32..96], f16_at(b, 108));
            for sc in q3k_scales(&b[96..108]) {
                subs.push(SubBlock {
                    scale: d * sc as f32,
                    offset: 0.0,
                });
            }
            for (i, c) in codes.iter_mut().enumerate() {
                let (half, rest) = (i / 128, i % 128);
                let (plane, sub, l) = (rest / 32, rest % 32 / 16, rest % 16);
                let low = (qs[half * 32 + sub * 16 + l] >> (2 * plane)) & 3;
                let high = (hmask[sub * 16 + l] >> (half * 4 + plane)) & 1;
                *c = low + 4 * high;
            }
        }
        GgmlType::IQ4_NL => {
            push(subs, 1, f16_at(b, 0), 0.0);
            table_codes(&IQ4NL, &b[2..18], codes);
        }
        GgmlType::IQ4_XS => {
            let d = f16_at(b, 0);
            let scales_h = u16::from_le_bytes([b[2], b[3]]);
            for ib in 0..8 {
                let low = (b[4 + ib / 2] >> (4 * (ib % 2))) & 0xF;
                let ls = low as i32 | ((((scales_h >> (2 * ib)) & 3) as i32) << 4);
                push(subs, 1, d * (ls - 32) as f32, 0.0);
                let qs = &b[8 + ib * 16..8 + (ib + 1) * 16];
                table_codes(&IQ4NL, qs, &mut codes[ib * 32..(ib + 1) * 32]);
            }
        }
        GgmlType::MXFP4 => {
            push(subs, 1, e8m0_half(b[0]), 0.0);
            table_codes(&MXFP4, &b[1..17], codes);
        }
        GgmlType::TQ2_0 => {
            push(subs, 8, f16_at(b, 64), 0.0);
            for (i, c) in codes.iter_mut().enumerate() {
                let (chunk, plane, m) = (i / 128, i % 128 / 32, i % 32);
                *c = (b[chunk * 32 + m] >> (2 * plane)) & 3;
            }
        }
        GgmlType::TQ1_0 => {
            push(subs, 8, f16_at(b, 52), 0.0);
            // Base-3 digits, five per byte of qs (the first 32 bytes, then 16), four per qh byte.
            let trit = |q: u8, n: u32| -> u8 {
                let q = q.wrapping_mul(3u8.pow(n));
                ((q as u16 * 3) >> 8) as u8
            };
            let mut i = 0;
            for (start, width) in [(0, 32), (32, 16)] {
                for n in 0..5 {
                    for m in 0..width {
                        codes[i] = trit(b[start + m], n);
                        i += 1;
                    }
                }
            }
            for n in 0..4 {
                for j in 0..4 {
                    codes[i] = trit(b[48 + j], n);
                    i += 1;
                }
            }
        }
        GgmlType::Q1_0 => {
            push(subs, 4, f16_at(b, 0), 0.0);
            for (i, c) in codes.iter_mut().enumerate() {
                *c = 2 * ((b[2 + i / 8] >> (i % 8)) & 1);
            }
        }
        GgmlType::Q2_0 => {
            push(subs, 2, f16_at(b, 0), 0.0);
            for (i, c) in codes.iter_mut().enumerate() {
                *c = (b[2 + i / 4] >> (2 * (i % 4))) & 3;
            }
        }
        _ => unreachable!("{} is decoded in quant", ty.name()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::quant::dequantize;

    /// Dequantizes one block of `ty` from hand-set bytes.
    fn deq(ty: GgmlType, b: &[u8]) -> Vec<f32> {
        let mut out = vec![0f32; ty.block_elems()];
        dequantize(ty, b, &mut out);
        out
    }

    #[test]
    fn q2_k_and_q3_k_follow_the_block_layout() {
        // Q2_K: sub-block 0 scale 3, min 1; d = 1, dmin = 0.5; element 0 code 2, element 16 of
        // sub-block 1 (scale 0) reads 0 - min.
        let mut b = vec![0u8; 84];
        b[0] = 0x13;
        b[1] = 0x20;
        b[16] = 2;
        b[80..82].copy_from_slice(&half::f16::from_f32(1.0).to_le_bytes());
        b[82..84].copy_from_slice(&half::f16::from_f32(0.5).to_le_bytes());
        let y = deq(GgmlType::Q2_K, &b);
        assert_eq!(y[0], 3.0 * 2.0 - 0.5);
        assert_eq!(y[16], -0.5 * 2.0);
        // Q3_K: all scales 32 + 1 = 33 → 1; high bits set give code - 0, unset code - 4.
        let mut b = vec![0u8; 110];
        b[96..104].fill(0x11);
        b[104..108].fill(0xAA);
        b[108..110].copy_from_slice(&half::f16::from_f32(2.0).to_le_bytes());
        b[32] = 3;
        b[0] = 1;
        let y = deq(GgmlType::Q3_K, &b);
        assert_eq!(q3k_scales(&b[96..108]), [1; 16]);
        assert_eq!(y[0], 2.0 * 3.0);
        assert_eq!(y[1], 2.0 * -4.0);
    }

    #[test]
    fn tables_and_ternary_formats_decode() {
        let mut b = vec![0u8; 18];
        b[0..2].copy_from_slice(&half::f16::from_f32(0.5).to_le_bytes());
        b[2] = 0xF0;
        let y = deq(GgmlType::IQ4_NL, &b);
        assert_eq!((y[0], y[16]), (-127.0 * 0.5, 113.0 * 0.5));
        let mut b = vec![0u8; 17];
        b[0] = 128;
        b[1] = 0x97;
        let y = deq(GgmlType::MXFP4, &b);
        assert_eq!((y[0], y[16]), (12.0, -1.0));
        // TQ2_0: code 2 in plane 1 of byte 0 → element 32 is +d.
        let mut b = vec![0u8; 66];
        b[0] = 2 << 2;
        b[64..66].copy_from_slice(&half::f16::from_f32(1.5).to_le_bytes());
        let y = deq(GgmlType::TQ2_0, &b);
        assert_eq!((y[0], y[32]), (-1.5, 1.5));
        // TQ1_0: byte 0 = 0 gives trits 0 (→ -d) in every digit.
        let mut b = vec![0u8; 54];
        b[52..54].copy_from_slice(&half::f16::from_f32(1.0).to_le_bytes());
        assert!(deq(GgmlType::TQ1_0, &b).iter().all(|&v| v == -1.0));
        // Q1_0: bit set → +d.
        let mut b = vec![0u8; 18];
        b[0..2].copy_from_slice(&half::f16::from_f32(1.0).to_le_bytes());
        b[2] = 1;
        let y = deq(GgmlType::Q1_0, &b);
        assert_eq!((y[0], y[1]), (1.0, -1.0));
    }
}

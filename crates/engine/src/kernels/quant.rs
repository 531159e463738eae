//! Scalar decoding of every supported GGML block format into `(u8 code, scale, offset)` form and
//! into plain f32. These are the reference semantics: the packed matmul (`pack`, `matmul`) is
//! tested against `dequantize`. Formats follow the public GGML block definitions.

use crate::gguf::GgmlType;
use half::{bf16, f16};

pub(crate) fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// Integer codes and affine parameters of one sub-block: `w = scale * (code - zero) + offset`.
pub(crate) struct SubBlock {
    pub scale: f32,
    pub offset: f32,
}

/// How a quantized type decodes into codes: codes per sub-block, the constant zero point of
/// symmetric types, whether sub-blocks carry a float offset (a "min"), and the bits a code needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CodeLayout {
    pub sub_block: usize,
    pub zero: i32,
    pub has_offset: bool,
    pub bits: u32,
}

pub(crate) fn code_layout(ty: GgmlType) -> Option<CodeLayout> {
    let l = |sub_block, zero, has_offset, bits| {
        Some(CodeLayout {
            sub_block,
            zero,
            has_offset,
            bits,
        })
    };
    match ty {
        GgmlType::Q4_0 => l(32, 8, false, 4),
        GgmlType::Q5_0 => l(32, 16, false, 5),
        GgmlType::Q8_0 => l(32, 128, false, 8),
        GgmlType::Q4_1 | GgmlType::Q4_K => l(32, 0, true, 4),
        GgmlType::Q5_1 | GgmlType::Q5_K => l(32, 0, true, 5),
        GgmlType::Q6_K => l(16, 32, false, 6),
        // Fewer than 4 bits are stored as 4 (the compact layout's smallest).
        GgmlType::Q2_K => l(16, 0, true, 4),
        GgmlType::Q3_K => l(16, 4, false, 4),
        // Non-linear 4-bit tables become 8-bit codes around 128, as Q8_0's.
        GgmlType::IQ4_NL | GgmlType::IQ4_XS | GgmlType::MXFP4 => l(32, 128, false, 8),
        // Ternary and 1/2-bit: codes 0..3 around 1.
        GgmlType::TQ1_0 | GgmlType::TQ2_0 | GgmlType::Q1_0 | GgmlType::Q2_0 => l(32, 1, false, 4),
        GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => None,
    }
}

fn k_scale_min(scales: &[u8], j: usize) -> (u8, u8) {
    if j < 4 {
        (scales[j] & 63, scales[j + 4] & 63)
    } else {
        (
            (scales[j + 4] & 0xF) | ((scales[j - 4] >> 6) << 4),
            (scales[j + 4] >> 4) | ((scales[j] >> 6) << 4),
        )
    }
}

/// Decodes one GGML block into unsigned codes (`codes.len() == ty.block_elems()`) and pushes one
/// `SubBlock` per sub-block. Panics only on wrong slice lengths (callers size them).
pub(crate) fn decode_block(ty: GgmlType, b: &[u8], codes: &mut [u8], subs: &mut Vec<SubBlock>) {
    match ty {
        GgmlType::Q4_0 | GgmlType::Q4_1 => {
            let (qs, d, m) = if ty == GgmlType::Q4_0 {
                (&b[2..18], f16_at(b, 0), 0.0)
            } else {
                (&b[4..20], f16_at(b, 0), f16_at(b, 2))
            };
            for j in 0..16 {
                codes[j] = qs[j] & 0xF;
                codes[j + 16] = qs[j] >> 4;
            }
            subs.push(SubBlock {
                scale: d,
                offset: m,
            });
        }
        GgmlType::Q5_0 | GgmlType::Q5_1 => {
            let (h, qs, d, m) = if ty == GgmlType::Q5_0 {
                (2, &b[6..22], f16_at(b, 0), 0.0)
            } else {
                (4, &b[8..24], f16_at(b, 0), f16_at(b, 2))
            };
            let qh = u32::from_le_bytes([b[h], b[h + 1], b[h + 2], b[h + 3]]);
            for j in 0..16 {
                codes[j] = (qs[j] & 0xF) | ((((qh >> j) << 4) & 0x10) as u8);
                codes[j + 16] = (qs[j] >> 4) | (((qh >> (j + 12)) & 0x10) as u8);
            }
            subs.push(SubBlock {
                scale: d,
                offset: m,
            });
        }
        GgmlType::Q8_0 => {
            for j in 0..32 {
                codes[j] = (b[2 + j] as i8 as i32 + 128) as u8;
            }
            subs.push(SubBlock {
                scale: f16_at(b, 0),
                offset: 0.0,
            });
        }
        GgmlType::Q4_K | GgmlType::Q5_K => {
            let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
            let scales = &b[4..16];
            let (qh, ql) = if ty == GgmlType::Q5_K {
                (Some(&b[16..48]), &b[48..176])
            } else {
                (None, &b[16..144])
            };
            for chunk in 0..4 {
                for half in 0..2 {
                    let is = chunk * 2 + half;
                    let (sc, m) = k_scale_min(scales, is);
                    subs.push(SubBlock {
                        scale: d * sc as f32,
                        offset: -dmin * m as f32,
                    });
                    for l in 0..32 {
                        let q = ql[chunk * 32 + l];
                        let mut c = if half == 0 { q & 0xF } else { q >> 4 };
                        if let Some(qh) = qh {
                            if qh[l] & (1 << is) != 0 {
                                c += 16;
                            }
                        }
                        codes[is * 32 + l] = c;
                    }
                }
            }
        }
        GgmlType::Q6_K => {
            let (ql, qh, sc) = (&b[0..128], &b[128..192], &b[192..208]);
            let d = f16_at(b, 208);
            for s in sc {
                subs.push(SubBlock {
                    scale: d * (*s as i8) as f32,
                    offset: 0.0,
                });
            }
            for n in 0..2 {
                let (ql, qh, y) = (&ql[n * 64..], &qh[n * 32..], &mut codes[n * 128..]);
                for l in 0..32 {
                    y[l] = (ql[l] & 0xF) | ((qh[l] & 3) << 4);
                    y[l + 32] = (ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4);
                    y[l + 64] = (ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4);
                    y[l + 96] = (ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4);
                }
            }
        }
        GgmlType::Q2_K
        | GgmlType::Q3_K
        | GgmlType::IQ4_NL
        | GgmlType::IQ4_XS
        | GgmlType::MXFP4
        | GgmlType::TQ1_0
        | GgmlType::TQ2_0
        | GgmlType::Q1_0
        | GgmlType::Q2_0 => super::quant_low::decode_block(ty, b, codes, subs),
        GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => unreachable!("float types have no codes"),
    }
}

/// Decodes `n` elements of `ty` from `src` into `dst` (the scalar reference for every type).
pub fn dequantize(ty: GgmlType, src: &[u8], dst: &mut [f32]) {
    match ty {
        GgmlType::F32 => {
            for (d, c) in dst.iter_mut().zip(src.chunks_exact(4)) {
                *d = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
        GgmlType::F16 => {
            // Exact either way; half's slice conversion uses F16C when the CPU has it.
            let bits: Vec<f16> = src
                .chunks_exact(2)
                .map(|c| f16::from_le_bytes([c[0], c[1]]))
                .collect();
            use half::slice::HalfFloatSliceExt;
            let n = bits.len().min(dst.len());
            bits[..n].convert_to_f32_slice(&mut dst[..n]);
        }
        GgmlType::BF16 => {
            for (d, c) in dst.iter_mut().zip(src.chunks_exact(2)) {
                *d = bf16::from_le_bytes([c[0], c[1]]).to_f32();
            }
        }
        _ => {
            let layout = code_layout(ty).expect("quantized type");
            let be = ty.block_elems();
            let mut codes = vec![0u8; be];
            let mut subs = Vec::with_capacity(16);
            for (blk, out) in src.chunks_exact(ty.block_bytes()).zip(dst.chunks_mut(be)) {
                subs.clear();
                decode_block(ty, blk, &mut codes, &mut subs);
                for (i, o) in out.iter_mut().enumerate() {
                    let s = &subs[i / layout.sub_block];
                    // Adding a zero offset would turn ggml's -0.0 into +0.0 (a different
                    // f16 when the values are converted on).
                    let v = s.scale * (codes[i] as i32 - layout.zero) as f32;
                    *o = if s.offset == 0.0 { v } else { v + s.offset };
                }
            }
        }
    }
}

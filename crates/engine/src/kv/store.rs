//! Where a layer group's keys and values live: one flat buffer per group, indexed in values
//! `[blocks][layers][block_size][row]`, stored as f16, f32, or GGML Q8_0/Q4_0 blocks of 32
//! values (rows are whole blocks, so every address the cache uses is a block boundary). It
//! knows nothing about sequences or block tables.

use super::config::KV_BLOCK_VALUES;
use super::KvType;
use crate::gguf::GgmlType;
use crate::kernels::heads::KvRows;
use crate::kernels::quant::dequantize;
use crate::quantize::quantize_rows;
use half::f16;
use std::ops::Range;

/// One group's keys or values, `[blocks][layers][block_size][row]`.
pub(super) enum Store {
    F32(Vec<f32>),
    F16(Vec<u16>),
    /// Blocks of 32 values; the type says which.
    Blocks(GgmlType, Vec<u8>),
}

/// `len` zeros, written (not the lazily mapped pages of a zeroed allocation): the cache's memory
/// is taken when the engine starts, so a machine without it fails then, not in the middle of
/// serving, and the server's resident size does not creep up as blocks are first used.
fn committed<T: Copy>(len: usize, zero: T) -> Vec<T> {
    let mut v = Vec::with_capacity(len);
    v.resize(len, zero);
    v
}

/// Byte range of the blocks holding values `r` (block-aligned).
fn block_bytes(ty: GgmlType, r: Range<usize>) -> Range<usize> {
    debug_assert!(r.start.is_multiple_of(KV_BLOCK_VALUES) && r.end.is_multiple_of(KV_BLOCK_VALUES));
    let per = ty.block_bytes();
    r.start / KV_BLOCK_VALUES * per..r.end / KV_BLOCK_VALUES * per
}

impl Store {
    pub(super) fn new(ty: KvType, len: usize) -> Self {
        match ty {
            KvType::F32 => Self::F32(committed(len, 0.0)),
            KvType::F16 => Self::F16(committed(len, 0)),
            KvType::Q8_0 => Self::Blocks(GgmlType::Q8_0, committed(len / KV_BLOCK_VALUES * 34, 0)),
            KvType::Q4_0 => Self::Blocks(GgmlType::Q4_0, committed(len / KV_BLOCK_VALUES * 18, 0)),
        }
    }
    pub(super) fn write(&mut self, at: usize, x: &[f32]) {
        match self {
            Self::F32(s) => s[at..at + x.len()].copy_from_slice(x),
            Self::F16(s) => {
                for (h, &v) in s[at..at + x.len()].iter_mut().zip(x) {
                    *h = f16::from_f32(v).to_bits();
                }
            }
            Self::Blocks(ty, s) => {
                let out = &mut s[block_bytes(*ty, at..at + x.len())];
                quantize_rows(*ty, x, x.len(), None, out).expect("rows are whole blocks");
            }
        }
    }
    pub(super) fn rows(&self, range: Range<usize>) -> KvRows<'_> {
        match self {
            Self::F32(s) => KvRows::F32(&s[range]),
            Self::F16(s) => KvRows::F16(&s[range]),
            Self::Blocks(GgmlType::Q8_0, s) => KvRows::Q8_0(&s[block_bytes(GgmlType::Q8_0, range)]),
            Self::Blocks(ty, s) => KvRows::Q4_0(&s[block_bytes(*ty, range)]),
        }
    }
    /// Rewrites the `len` values at `at` through `f` (in f32, whatever the stored type; the
    /// quantized types round the result again).
    pub(super) fn update(&mut self, at: usize, len: usize, f: &dyn Fn(&mut [f32])) {
        match self {
            Self::F32(s) => f(&mut s[at..at + len]),
            Self::F16(s) => {
                let mut x: Vec<f32> = s[at..at + len]
                    .iter()
                    .map(|&h| f16::from_bits(h).to_f32())
                    .collect();
                f(&mut x);
                for (h, v) in s[at..at + len].iter_mut().zip(x) {
                    *h = f16::from_f32(v).to_bits();
                }
            }
            Self::Blocks(ty, s) => {
                let bytes = &mut s[block_bytes(*ty, at..at + len)];
                let mut x = vec![0f32; len];
                dequantize(*ty, bytes, &mut x);
                f(&mut x);
                quantize_rows(*ty, &x, len, None, bytes).expect("rows are whole blocks");
            }
        }
    }
    pub(super) fn copy_within(&mut self, from: Range<usize>, to: usize) {
        match self {
            Self::F32(s) => s.copy_within(from, to),
            Self::F16(s) => s.copy_within(from, to),
            Self::Blocks(ty, s) => {
                let len = from.len();
                let to = block_bytes(*ty, to..to + len).start;
                s.copy_within(block_bytes(*ty, from), to);
            }
        }
    }
}

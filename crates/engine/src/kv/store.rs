//! Where a layer group's keys and values live: one flat buffer per group, f16 or f32, indexed
//! `[blocks][layers][block_size][row]`. It knows nothing about sequences or block tables.

use super::KvType;
use crate::kernels::heads::KvRows;
use half::f16;

/// One group's keys or values, `[blocks][layers][block_size][row]`.
pub(super) enum Store {
    F32(Vec<f32>),
    F16(Vec<u16>),
}

/// `len` zeros, written (not the lazily mapped pages of a zeroed allocation): the cache's memory
/// is taken when the engine starts, so a machine without it fails then, not in the middle of
/// serving, and the server's resident size does not creep up as blocks are first used.
fn committed<T: Copy>(len: usize, zero: T) -> Vec<T> {
    let mut v = Vec::with_capacity(len);
    v.resize(len, zero);
    v
}

impl Store {
    pub(super) fn new(ty: KvType, len: usize) -> Self {
        match ty {
            KvType::F32 => Self::F32(committed(len, 0.0)),
            KvType::F16 => Self::F16(committed(len, 0)),
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
        }
    }
    pub(super) fn rows(&self, range: std::ops::Range<usize>) -> KvRows<'_> {
        match self {
            Self::F32(s) => KvRows::F32(&s[range]),
            Self::F16(s) => KvRows::F16(&s[range]),
        }
    }
    /// Rewrites the `len` floats at `at` through `f` (in f32, whatever the stored type).
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
        }
    }
    pub(super) fn copy_within(&mut self, from: std::ops::Range<usize>, to: usize) {
        match self {
            Self::F32(s) => s.copy_within(from, to),
            Self::F16(s) => s.copy_within(from, to),
        }
    }
}

//! Repacks a GGUF weight matrix once, at load time, into the layout our matmul kernels stream:
//! unsigned 8-bit codes interleaved as `[col_group][k/4][16 cols][4]` (one 64-byte VNNI operand
//! per step), with per-sub-block f32 scales (and offsets for types with a min). Every quantized
//! GGML type becomes this one layout, so there is one kernel family instead of one per type.
//! Float weights stay f32, row-major. It does not compute anything (see `matmul`).

use super::quant::{code_layout, decode_block, dequantize, CodeLayout, SubBlock};
use crate::error::{Error, Result};
use crate::gguf::GgmlType;

/// Output columns per interleaved group: one 512-bit register of i32 lanes.
pub const GROUP: usize = 16;

/// Codes plus affine parameters: `w[n][k] = scale[n][b] * (code[n][k] - zero) + offset[n][b]`.
pub struct CodeMatrix {
    pub n: usize,
    pub k: usize,
    pub layout: CodeLayout,
    /// `[n_groups][k/4][GROUP][4]`.
    pub codes: Vec<u8>,
    /// `[n_groups][k/sub_block][GROUP]`.
    pub scales: Vec<f32>,
    /// Same shape as `scales`; empty when the type has no offsets.
    pub offsets: Vec<f32>,
}

/// A weight matrix `W` of shape `[n, k]` (n outputs, each a row of k inputs) ready for `x @ W^T`.
pub enum PackedMatrix {
    Codes(CodeMatrix),
    /// `[n][k]` row-major f32, for F32/F16/BF16 tensors.
    Float {
        n: usize,
        k: usize,
        data: Vec<f32>,
    },
}

impl PackedMatrix {
    pub fn n(&self) -> usize {
        match self {
            Self::Codes(c) => c.n,
            Self::Float { n, .. } => *n,
        }
    }
    pub fn k(&self) -> usize {
        match self {
            Self::Codes(c) => c.k,
            Self::Float { k, .. } => *k,
        }
    }

    /// Packs `n` rows of `k` elements of type `ty` from `data` (GGUF row-major bytes).
    pub fn pack(name: &str, ty: GgmlType, data: &[u8], n: usize, k: usize) -> Result<Self> {
        Self::pack_with(name, ty, data, n, k, |_| {})
    }

    /// `pack`, calling `consumed(bytes)` now and then with how much of `data` it has finished
    /// reading, so a caller can let the OS drop those source pages while packing goes on.
    pub fn pack_with(
        name: &str,
        ty: GgmlType,
        data: &[u8],
        n: usize,
        k: usize,
        mut consumed: impl FnMut(usize),
    ) -> Result<Self> {
        const ROWS_PER_REPORT: usize = 1024;
        let expect = ty
            .bytes_for(n * k)
            .ok_or_else(|| Error::tensor(name, "size is not whole blocks"))?;
        if data.len() != expect {
            return Err(Error::tensor(
                name,
                format!("has {} bytes, expected {expect}", data.len()),
            ));
        }
        let Some(layout) = code_layout(ty) else {
            let mut out = vec![0f32; n * k];
            dequantize(ty, data, &mut out);
            return Ok(Self::Float { n, k, data: out });
        };
        if !k.is_multiple_of(ty.block_elems()) || !k.is_multiple_of(32) {
            return Err(Error::tensor(
                name,
                format!(
                    "row length {k} is not a multiple of the {} block",
                    ty.name()
                ),
            ));
        }
        let n_groups = n.div_ceil(GROUP);
        let n_sub = k / layout.sub_block;
        let mut m = CodeMatrix {
            n,
            k,
            layout,
            codes: vec![0u8; n_groups * GROUP * k],
            scales: vec![0f32; n_groups * n_sub * GROUP],
            offsets: if layout.has_offset {
                vec![0f32; n_groups * n_sub * GROUP]
            } else {
                Vec::new()
            },
        };
        let row_bytes = expect / n;
        let be = ty.block_elems();
        let mut codes = vec![0u8; k];
        let mut subs: Vec<SubBlock> = Vec::with_capacity(n_sub);
        for row in 0..n {
            subs.clear();
            let src = &data[row * row_bytes..(row + 1) * row_bytes];
            for (b, blk) in src.chunks_exact(ty.block_bytes()).enumerate() {
                decode_block(ty, blk, &mut codes[b * be..(b + 1) * be], &mut subs);
            }
            let (g, c) = (row / GROUP, row % GROUP);
            for (kk, &code) in codes.iter().enumerate() {
                m.codes[((g * (k / 4) + kk / 4) * GROUP + c) * 4 + kk % 4] = code;
            }
            for (s, sub) in subs.iter().enumerate() {
                let at = (g * n_sub + s) * GROUP + c;
                m.scales[at] = sub.scale;
                if layout.has_offset {
                    m.offsets[at] = sub.offset;
                }
            }
            if (row + 1) % ROWS_PER_REPORT == 0 {
                consumed((row + 1) * row_bytes);
            }
        }
        // Padding columns keep code = zero point so they contribute exactly 0.
        for row in n..n_groups * GROUP {
            let (g, c) = (row / GROUP, row % GROUP);
            for kk in 0..k {
                m.codes[((g * (k / 4) + kk / 4) * GROUP + c) * 4 + kk % 4] = layout.zero as u8;
            }
        }
        Ok(Self::Codes(m))
    }
}

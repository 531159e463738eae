//! Repacks a GGUF weight matrix once, at load time, into the layout our matmul kernels stream:
//! unsigned codes interleaved as `[col_group][k/4][16 cols][4]` (one 64-byte VNNI operand per
//! step of 4 inputs), with per-sub-block f32 scales (and offsets for types with a min). Every
//! quantized GGML type becomes this one layout, so there is one kernel family instead of one per
//! type. Codes of fewer than 8 bits are stored compactly (single-sequence decode is bound by
//! memory bandwidth): each pair of operands becomes one 64-byte nibble plane (low nibble: first
//! operand, high nibble: second) plus, per further bit, one 8-byte mask per operand (bit i =
//! that bit of byte i). Float weights stay f32, row-major. It does not compute anything.

use super::quant::{code_layout, decode_block, dequantize, CodeLayout, SubBlock};
use crate::error::{Error, Result};
use crate::gguf::GgmlType;

/// Output columns per interleaved group: one 512-bit register of i32 lanes.
pub const GROUP: usize = 16;

/// Codes plus affine parameters: `w[n][k] = scale[n][b] * (code[n][k] - zero) + offset[n][b]`.
pub struct CodeMatrix {
    // Private to the kernels: the SIMD tiles rely on these lengths matching `n`, `k` and
    // `layout`, which only `pack` sets; readers outside use the accessors.
    pub(super) n: usize,
    pub(super) k: usize,
    pub(super) layout: CodeLayout,
    /// `[n_groups][k/8][pair_bytes(bits)]` (see the module comment); for 8-bit codes that is
    /// the plain `[n_groups][k/4][GROUP][4]`.
    codes: Vec<u8>,
    /// `[n_groups][k/sub_block][GROUP]`.
    pub(super) scales: Vec<f32>,
    /// Same shape as `scales`; empty when the type has no offsets.
    pub(super) offsets: Vec<f32>,
}

/// Stored bytes of 8 inputs × 16 columns (two VNNI operands) of `bits`-bit codes.
pub const fn pair_bytes(bits: u32) -> usize {
    if bits >= 8 {
        128
    } else {
        64 + 16 * (bits as usize - 4)
    }
}

/// Where, inside a stored pair, the 8-byte mask of extra bit `e` (bit 4 + e of each code) of
/// operand `half` (0: first, 1: second) starts.
pub const fn mask_at(e: usize, half: usize) -> usize {
    64 + 16 * e + 8 * half
}

/// The mask of extra bit `e` of operand `half` in `pair`.
fn mask(pair: &[u8], e: usize, half: usize) -> u64 {
    let at = mask_at(e, half);
    u64::from_le_bytes(pair[at..at + 8].try_into().expect("8 bytes"))
}

impl CodeMatrix {
    /// Outputs (rows of `W`).
    pub fn n(&self) -> usize {
        self.n
    }

    /// Inputs per output.
    pub fn k(&self) -> usize {
        self.k
    }

    pub fn layout(&self) -> CodeLayout {
        self.layout
    }

    /// `[n_groups][k/sub_block][GROUP]`.
    pub fn scales(&self) -> &[f32] {
        &self.scales
    }

    /// Same shape as `scales`; empty when the type has no offsets.
    pub fn offsets(&self) -> &[f32] {
        &self.offsets
    }

    /// Stored bytes of one column group.
    pub fn group_bytes(&self) -> usize {
        self.k / 8 * pair_bytes(self.layout.bits)
    }

    /// The stored codes of column group `g`.
    pub fn group(&self, g: usize) -> &[u8] {
        let gb = self.group_bytes();
        &self.codes[g * gb..(g + 1) * gb]
    }

    /// Whether groups are stored in the plain 8-bit layout the tiles read.
    pub fn is_plain(&self) -> bool {
        self.layout.bits >= 8
    }

    /// The code of column `c` of group `g` at input `kk`.
    pub fn code(&self, g: usize, kk: usize, c: usize) -> u8 {
        let (step, i) = (kk / 4, c * 4 + kk % 4);
        let group = self.group(g);
        if self.is_plain() {
            return group[step * 64 + i];
        }
        let pair = &group[step / 2 * pair_bytes(self.layout.bits)..];
        let half = step % 2;
        let mut code = (pair[i] >> (4 * half)) & 15;
        for e in 0..self.layout.bits as usize - 4 {
            code |= (((mask(pair, e, half) >> i) & 1) as u8) << (4 + e);
        }
        code
    }

    /// Row `n` of `W` back in f32 (`k` values): exactly the values the matmul uses.
    pub fn decode_row(&self, n: usize, out: &mut [f32]) {
        let (g, col, bs) = (n / GROUP, n % GROUP, self.layout.sub_block);
        let n_sub = self.k / bs;
        for (kk, o) in out.iter_mut().enumerate() {
            let code = self.code(g, kk, col) as i32;
            let at = (g * n_sub + kk / bs) * GROUP + col;
            let off = if self.layout.has_offset {
                self.offsets[at]
            } else {
                0.0
            };
            *o = self.scales[at] * (code - self.layout.zero) as f32 + off;
        }
    }

    /// Writes group `g` in the plain layout `[k/4][GROUP][4]` into `out` (`k * GROUP` bytes).
    pub fn unpack_group(&self, g: usize, out: &mut [u8]) {
        if self.is_plain() {
            return out.copy_from_slice(self.group(g));
        }
        let (pb, extra) = (pair_bytes(self.layout.bits), self.layout.bits as usize - 4);
        for (pair, plain) in self
            .group(g)
            .chunks_exact(pb)
            .zip(out.chunks_exact_mut(128))
        {
            for half in 0..2 {
                // Bits a layout does not have read as zero masks.
                let masks: [u64; 2] =
                    std::array::from_fn(|e| if e < extra { mask(pair, e, half) } else { 0 });
                for i in 0..64 {
                    let mut code = (pair[i] >> (4 * half)) & 15;
                    for (e, m) in masks.iter().enumerate() {
                        code |= (((m >> i) & 1) as u8) << (4 + e);
                    }
                    plain[half * 64 + i] = code;
                }
            }
        }
    }

    /// Re-stores plain 8-bit groups compactly (see the module comment).
    fn compact(&mut self) {
        let (bits, pb) = (self.layout.bits, pair_bytes(self.layout.bits));
        if bits >= 8 {
            return;
        }
        let mut out = vec![0u8; self.codes.len() / 128 * pb];
        for (plain, pair) in self.codes.chunks_exact(128).zip(out.chunks_exact_mut(pb)) {
            let (a, b) = plain.split_at(64);
            for i in 0..64 {
                pair[i] = (a[i] & 15) | (b[i] << 4);
            }
            for e in 0..bits as usize - 4 {
                for (half, op) in [a, b].into_iter().enumerate() {
                    let bit_e =
                        (0..64).fold(0u64, |m, i| m | (((op[i] >> (4 + e)) & 1) as u64) << i);
                    let at = mask_at(e, half);
                    pair[at..at + 8].copy_from_slice(&bit_e.to_le_bytes());
                }
            }
        }
        self.codes = out;
    }
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
        m.compact();
        Ok(Self::Codes(m))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::Rng;
    use crate::testutil::random_blocks;

    #[test]
    fn compact_codes_read_back_as_the_plain_layout() {
        let mut rng = Rng::new(3);
        for ty in [
            GgmlType::Q4_0,
            GgmlType::Q5_0,
            GgmlType::Q4_K,
            GgmlType::Q6_K,
        ] {
            let (n, k) = (37, 512);
            let raw = random_blocks(&mut rng, ty, n * k);
            let PackedMatrix::Codes(m) = PackedMatrix::pack("w", ty, &raw, n, k).unwrap() else {
                panic!("{ty:?} packs to codes");
            };
            assert!(!m.is_plain());
            assert_eq!(m.group_bytes() * 8, k * GROUP * m.layout.bits as usize);
            // Every code decoded by `code` equals the source block's code, and `unpack_group`
            // agrees with `code` everywhere (padding columns hold the zero point).
            let be = ty.block_elems();
            let row_bytes = raw.len() / n;
            let mut plain = vec![0u8; k * GROUP];
            let (mut codes, mut subs) = (vec![0u8; k], Vec::new());
            for g in 0..n.div_ceil(GROUP) {
                m.unpack_group(g, &mut plain);
                // The SIMD unpackers write the same bytes.
                #[cfg(target_arch = "x86_64")]
                if std::is_x86_feature_detected!("avx2") {
                    let mut simd = vec![0u8; k * GROUP];
                    // SAFETY: the CPU has avx2.
                    unsafe { super::super::avx2::unpack_group(&m, g, &mut simd) };
                    assert_eq!(simd, plain, "{ty:?} group {g}: avx2 unpack");
                }
                for c in 0..GROUP {
                    let row = g * GROUP + c;
                    if row < n {
                        let src = &raw[row * row_bytes..(row + 1) * row_bytes];
                        for (b, blk) in src.chunks_exact(ty.block_bytes()).enumerate() {
                            decode_block(ty, blk, &mut codes[b * be..(b + 1) * be], &mut subs);
                        }
                    } else {
                        codes.fill(m.layout.zero as u8);
                    }
                    for (kk, &want) in codes.iter().enumerate() {
                        assert_eq!(m.code(g, kk, c), want, "{ty:?} g{g} c{c} k{kk}");
                        assert_eq!(plain[(kk / 4) * 64 + c * 4 + kk % 4], want);
                    }
                }
            }
        }
    }
}

//! Post-training quantization (seed 004): f32 rows into every GGML type llama-quantize makes
//! without an importance matrix (`legacy`, `kquant`, `iq4`), byte for byte as ggml makes them;
//! the per-tensor type mixes of llama.cpp's file types (`mix`); and whole-file conversion with a
//! per-tensor error report (`file`). Reading quantized types back is `kernels::quant`.

mod file;
mod iq4;
mod kquant;
mod legacy;
pub mod mix;
mod round;

use crate::error::{Error, Result};
use crate::gguf::GgmlType;
pub use file::{quantize_file, Options, Report, TensorReport};
pub use mix::{FileType, ModelShape};

/// Converts `src` (rows of `n_per_row` values) into `ty`, writing `out` (exactly
/// `ty.bytes_for(src.len())` bytes). Rows are independent: any split of the rows over threads
/// gives the same bytes.
pub fn quantize_rows(ty: GgmlType, src: &[f32], n_per_row: usize, out: &mut [u8]) -> Result<()> {
    let want = ty
        .bytes_for(src.len())
        .filter(|_| n_per_row > 0 && src.len().is_multiple_of(n_per_row));
    if want != Some(out.len()) || !n_per_row.is_multiple_of(ty.block_elems()) {
        return Err(Error::Quantize(format!(
            "{} values in rows of {n_per_row} do not make whole {} blocks",
            src.len(),
            ty.name()
        )));
    }
    match ty {
        GgmlType::F32 => {
            for (v, o) in src.iter().zip(out.chunks_exact_mut(4)) {
                o.copy_from_slice(&v.to_le_bytes());
            }
        }
        GgmlType::F16 => legacy::to_f16(src, out),
        GgmlType::BF16 => legacy::to_bf16(src, out),
        GgmlType::Q4_0 => legacy::q4_0(src, out),
        GgmlType::Q4_1 => legacy::q4_1(src, out),
        GgmlType::Q5_0 => legacy::q5_0(src, out),
        GgmlType::Q5_1 => legacy::q5_1(src, out),
        GgmlType::Q8_0 => legacy::q8_0(src, out),
        GgmlType::Q2_K => kquant::q2_k(src, out),
        GgmlType::Q3_K => kquant::q3_k(src, out),
        GgmlType::Q4_K => kquant::q4_k(src, out),
        GgmlType::Q5_K => kquant::q5_k(src, out),
        GgmlType::Q6_K => kquant::q6_k(src, out),
        GgmlType::IQ4_NL => iq4::iq4_nl(src, n_per_row, None, out),
        GgmlType::IQ4_XS => iq4::iq4_xs(src, n_per_row, None, out),
        other => {
            return Err(Error::Quantize(format!(
                "quantizing into {} is not supported",
                other.name()
            )))
        }
    }
    Ok(())
}

//! Post-training quantization (seed 004): f32 rows into every GGML type llama-quantize makes
//! without an importance matrix (`legacy`, `kquant`, `iq4`), byte for byte as ggml makes them;
//! the per-tensor type mixes of llama.cpp's file types (`mix`); and whole-file conversion with a
//! per-tensor error report (`file`); importance matrices (`imatrix`; made by `calibrate`).
//! Reading quantized types back is `kernels::quant`.

mod file;
pub mod imatrix;
mod iq4;
mod kquant;
mod legacy;
pub mod mix;
mod round;
mod weighted;

use crate::error::{Error, Result};
use crate::gguf::GgmlType;
pub use file::{quantize_file, Options, Report, TensorReport};
pub use imatrix::Imatrix;
pub use mix::{FileType, ModelShape};

/// Converts `src` (rows of `n_per_row` values) into `ty`, writing `out` (exactly
/// `ty.bytes_for(src.len())` bytes). `imatrix`: one importance weight per column, for the types
/// whose search takes one (all but the float types and Q8_0). Rows are independent: any split
/// of the rows over threads gives the same bytes.
pub fn quantize_rows(
    ty: GgmlType,
    src: &[f32],
    n_per_row: usize,
    imatrix: Option<&[f32]>,
    out: &mut [u8],
) -> Result<()> {
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
    if imatrix.is_some_and(|w| w.len() != n_per_row) {
        return Err(Error::Quantize(format!(
            "the importance matrix has {} values for rows of {n_per_row}",
            imatrix.map_or(0, <[f32]>::len)
        )));
    }
    if let Some(w) = imatrix {
        let weighted = match ty {
            GgmlType::Q4_0 => weighted::q4_0,
            GgmlType::Q4_1 => weighted::q4_1,
            GgmlType::Q5_0 => weighted::q5_0,
            GgmlType::Q5_1 => weighted::q5_1,
            GgmlType::Q2_K => weighted::q2_k,
            GgmlType::Q3_K => weighted::q3_k,
            GgmlType::Q4_K => weighted::q4_k,
            GgmlType::Q5_K => weighted::q5_k,
            GgmlType::Q6_K => weighted::q6_k,
            GgmlType::IQ4_NL => {
                |x: &[f32], n: usize, w: &[f32], o: &mut [u8]| iq4::iq4_nl(x, n, Some(w), o)
            }
            GgmlType::IQ4_XS => {
                |x: &[f32], n: usize, w: &[f32], o: &mut [u8]| iq4::iq4_xs(x, n, Some(w), o)
            }
            _ => return quantize_rows(ty, src, n_per_row, None, out),
        };
        weighted(src, n_per_row, w, out);
        return Ok(());
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

//! Building blocks shared by every architecture: typed weight loading with shape checks, linear
//! layers over packed weights, norms, the MLP variants, and the embedding table.

use crate::error::{Error, Result};
use crate::gguf::GgufFile;
use crate::kernels::pack::PackedMatrix;
use crate::kernels::quant::dequantize;

/// Reads tensors from a GGUF file by name, checking shapes.
pub struct Loader<'a> {
    pub file: &'a GgufFile,
}

impl Loader<'_> {
    fn info(&self, name: &str) -> Result<&crate::gguf::TensorInfo> {
        self.file
            .tensor_info(name)
            .ok_or_else(|| Error::tensor(name, "missing from the model file"))
    }

    pub fn has(&self, name: &str) -> bool {
        self.file.tensor_info(name).is_some()
    }

    /// A weight matrix with `n` outputs of `k` inputs (GGUF dims `[k, n]`).
    pub fn matrix(&self, name: &str, n: usize, k: usize) -> Result<PackedMatrix> {
        let t = self.info(name)?;
        if t.dims.iter().map(|&d| d as usize).collect::<Vec<_>>() != [k, n] {
            return Err(Error::tensor(
                name,
                format!("shape {:?}, expected [{k}, {n}]", t.dims),
            ));
        }
        let mut done = 0;
        let packed = PackedMatrix::pack_with(name, t.ty, self.file.tensor_data(t), n, k, |d| {
            self.file.release_tensor_range(t, done..d);
            done = d;
        });
        self.file.release_tensor_range(t, done..t.n_bytes);
        packed
    }

    /// Rows `first..first + n` of a matrix of `k` inputs stored with `total` rows in all (a
    /// fused `[q; k; v]` or `[gate; up]` matrix, or the experts of a 3-D `[k, n, experts]`
    /// tensor seen as `experts · n` rows).
    pub fn matrix_rows(
        &self,
        name: &str,
        dims: &[usize],
        first: usize,
        n: usize,
        k: usize,
    ) -> Result<PackedMatrix> {
        let t = self.info(name)?;
        if t.dims.iter().map(|&d| d as usize).collect::<Vec<_>>() != dims {
            return Err(Error::tensor(
                name,
                format!("shape {:?}, expected {dims:?}", t.dims),
            ));
        }
        let row_bytes =
            t.ty.bytes_for(k)
                .ok_or_else(|| Error::tensor(name, format!("rows of {k} are not whole blocks")))?;
        let data = self.file.tensor_data(t);
        let range = first * row_bytes..(first + n) * row_bytes;
        if range.end > data.len() {
            return Err(Error::tensor(name, "rows past the end of the tensor"));
        }
        let packed = PackedMatrix::pack(name, t.ty, &data[range.clone()], n, k);
        self.file.release_tensor_range(t, range);
        packed
    }

    /// The experts of `[k, n, count]` tensor `name`, one matrix of `n` rows each.
    pub fn experts(&self, name: &str, count: usize, n: usize, k: usize) -> Result<Vec<Linear>> {
        (0..count)
            .map(|e| {
                Ok(Linear {
                    w: self.matrix_rows(name, &[k, n, count], e * n, n, k)?,
                    bias: None,
                })
            })
            .collect()
    }

    /// A 1-D f32 vector of `len` elements, from any float or quantized type.
    pub fn vector(&self, name: &str, len: usize) -> Result<Vec<f32>> {
        let t = self.info(name)?;
        if t.n_elems != len {
            return Err(Error::tensor(
                name,
                format!("has {} elements, expected {len}", t.n_elems),
            ));
        }
        let mut out = vec![0f32; len];
        dequantize(t.ty, self.file.tensor_data(t), &mut out);
        Ok(out)
    }

    pub fn opt_vector(&self, name: &str, len: usize) -> Result<Option<Vec<f32>>> {
        if self.has(name) {
            self.vector(name, len).map(Some)
        } else {
            Ok(None)
        }
    }

    pub fn linear(&self, name: &str, n: usize, k: usize) -> Result<Linear> {
        let w = self.matrix(&format!("{name}.weight"), n, k)?;
        let bias = self.opt_vector(&format!("{name}.bias"), n)?;
        Ok(Linear { w, bias })
    }

    /// The output matrix `[vocab, d]` and the embedding table: tied models (no `output.weight`)
    /// read embeddings back from the packed output matrix instead of keeping a second copy.
    pub fn output_and_embedding(
        &self,
        vocab: usize,
        d: usize,
    ) -> Result<(PackedMatrix, Embedding)> {
        if !self.has("output.weight") {
            return Ok((self.matrix("token_embd.weight", vocab, d)?, Embedding::Tied));
        }
        let table = self.vector("token_embd.weight", vocab * d)?;
        Ok((
            self.matrix("output.weight", vocab, d)?,
            Embedding::Table {
                dim: d,
                data: table,
            },
        ))
    }

    pub fn rms_norm(&self, name: &str, len: usize) -> Result<Norm> {
        Ok(Norm {
            w: self.vector(&format!("{name}.weight"), len)?,
            b: None,
        })
    }

    /// `rms_norm` when the architecture has this norm (`present`), else `None`.
    pub fn opt_rms_norm(&self, present: bool, name: &str, len: usize) -> Result<Option<Norm>> {
        present.then(|| self.rms_norm(name, len)).transpose()
    }

    pub fn layer_norm(&self, name: &str, len: usize) -> Result<Norm> {
        Ok(Norm {
            w: self.vector(&format!("{name}.weight"), len)?,
            b: Some(self.vector(&format!("{name}.bias"), len)?),
        })
    }
}

/// `y = x @ W^T + b`.
pub struct Linear {
    pub w: PackedMatrix,
    pub bias: Option<Vec<f32>>,
}

/// RMSNorm when `b` is `None`, LayerNorm otherwise.
pub struct Norm {
    pub w: Vec<f32>,
    pub b: Option<Vec<f32>>,
}

impl Norm {
    pub fn apply(&self, x: &mut [f32], eps: f32) {
        match &self.b {
            None => crate::kernels::ops::rms_norm(x, &self.w, eps),
            Some(b) => crate::kernels::ops::layer_norm(x, &self.w, b, eps),
        }
    }
}

pub use crate::kernels::ops::Activation;

pub struct Mlp {
    pub gate: Option<Linear>,
    pub up: Linear,
    pub down: Linear,
    pub act: Activation,
}

/// The feed-forward part of a block.
#[allow(clippy::large_enum_variant)] // one per layer, built once
pub enum Ffn {
    Dense(Mlp),
    Moe(Box<Moe>),
}

/// Mixture of experts: a router picks `used` of the experts per row (softmax over all, the
/// best `used`, optionally renormalised and scaled); their SwiGLU outputs are summed with those
/// weights. Qwen2-MoE adds a shared expert, gated per row by `sigmoid(shared_gate · x)`.
pub struct Moe {
    /// `[count, n_embd]`.
    pub router: Linear,
    pub experts: Vec<Mlp>,
    pub used: usize,
    pub norm_weights: bool,
    pub weights_scale: f32,
    pub shared: Option<Mlp>,
    /// `[n_embd]`.
    pub shared_gate: Option<Vec<f32>>,
}

/// Token embeddings: either rows of the packed output matrix (tied models) or a raw table.
pub enum Embedding {
    Tied,
    Table { dim: usize, data: Vec<f32> },
}

impl Embedding {
    /// Writes row `id` into `out` (`[dim]`).
    pub fn row(&self, output: &PackedMatrix, id: usize, out: &mut [f32]) {
        match self {
            Embedding::Table { dim, data, .. } => {
                out.copy_from_slice(&data[id * dim..(id + 1) * dim])
            }
            Embedding::Tied => packed_row(output, id, out),
        }
    }
}

/// Decodes row `n` of a packed matrix back to f32 (exactly the values the matmul uses).
pub fn packed_row(m: &PackedMatrix, n: usize, out: &mut [f32]) {
    match m {
        PackedMatrix::Float { k, data, .. } => out.copy_from_slice(&data[n * k..(n + 1) * k]),
        PackedMatrix::Codes(c) => c.decode_row(n, out),
    }
}

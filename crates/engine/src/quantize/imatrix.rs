//! Importance matrices in llama.cpp's formats, so either tool's file works with either
//! quantizer: the GGUF one (`<weight>.in_sum2` [cols, experts] sums of squared inputs and
//! `<weight>.counts` [1, experts] rows summed, `imatrix.datasets`, `imatrix.chunk_count`,
//! `imatrix.chunk_size`) read and written, and the older `.dat` one read. The sums are what
//! `everett imatrix` accumulates; a quantizer reads `weights`: sum / count per expert.

use crate::error::{Error, Result};
use crate::gguf::write::GgufWriter;
use crate::gguf::{GgmlType, GgufFile, Value};
use std::collections::BTreeMap;
use std::path::Path;

/// One weight matrix's statistics.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Entry {
    /// `[experts][cols]` sums of squared input values.
    pub sums: Vec<f32>,
    /// Rows (tokens) summed, per expert.
    pub counts: Vec<f32>,
}

/// A whole importance matrix.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Imatrix {
    /// Keyed by weight name (`blk.0.attn_q.weight`).
    pub entries: BTreeMap<String, Entry>,
    pub datasets: Vec<String>,
    pub chunk_count: u32,
    pub chunk_size: u32,
}

fn bad(path: &Path, what: impl std::fmt::Display) -> Error {
    Error::Quantize(format!("importance matrix {}: {what}", path.display()))
}

impl Imatrix {
    /// Reads a GGUF imatrix, or the legacy `.dat` format when the file does not start `GGUF`.
    pub fn read(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        if bytes.starts_with(b"GGUF") {
            let f = GgufFile::from_bytes(bytes).map_err(|e| bad(path, e))?;
            Self::from_gguf(path, f)
        } else {
            Self::from_dat(path, &bytes)
        }
    }

    fn from_gguf(path: &Path, f: GgufFile) -> Result<Self> {
        let u32_key = |k: &str| f.get(k).and_then(Value::as_u64).unwrap_or(0) as u32;
        let datasets = match f.get("imatrix.datasets") {
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(|v| match v {
                    Value::Str(s) => Some(s.clone()),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        };
        let mut m = Imatrix {
            datasets,
            chunk_count: u32_key("imatrix.chunk_count"),
            chunk_size: u32_key("imatrix.chunk_size"),
            ..Default::default()
        };
        let floats = |name: &str| -> Result<Vec<f32>> {
            let t = f
                .tensor_info(name)
                .ok_or_else(|| bad(path, format!("`{name}` missing")))?;
            if t.ty != GgmlType::F32 {
                return Err(bad(path, format!("`{name}` is {}, not F32", t.ty.name())));
            }
            let mut v = vec![0f32; t.n_elems];
            crate::kernels::quant::dequantize(GgmlType::F32, f.tensor_data(t), &mut v);
            Ok(v)
        };
        for t in &f.tensors {
            let Some(name) = t.name.strip_suffix(".in_sum2") else {
                continue;
            };
            let sums = floats(&t.name)?;
            let counts = floats(&format!("{name}.counts"))?;
            if counts.is_empty() || sums.len() % counts.len() != 0 {
                return Err(bad(
                    path,
                    format!("`{name}`: {} sums for {} counts", sums.len(), counts.len()),
                ));
            }
            m.entries.insert(name.to_string(), Entry { sums, counts });
        }
        if m.entries.is_empty() {
            return Err(bad(
                path,
                "no `*.in_sum2` tensors: not an importance matrix",
            ));
        }
        Ok(m)
    }

    /// The legacy format: entry count; per entry its name, call count and mean squares
    /// (scaled by the call count); then optionally the chunk count and the dataset's name.
    fn from_dat(path: &Path, b: &[u8]) -> Result<Self> {
        let mut at = 0usize;
        let mut take = |n: usize| -> Result<&[u8]> {
            let s = b
                .get(at..at + n)
                .ok_or_else(|| bad(path, "truncated (not GGUF, not .dat)"))?;
            at += n;
            Ok(s)
        };
        let i32_at = |s: &[u8]| i32::from_le_bytes([s[0], s[1], s[2], s[3]]);
        let n = i32_at(take(4)?);
        if !(1..=1 << 20).contains(&n) {
            return Err(bad(path, "neither GGUF nor the .dat format"));
        }
        let mut m = Imatrix::default();
        for _ in 0..n {
            let len = i32_at(take(4)?).clamp(0, 1 << 16) as usize;
            let name = String::from_utf8_lossy(take(len)?).into_owned();
            let ncall = i32_at(take(4)?);
            let nval = i32_at(take(4)?).clamp(0, 1 << 28) as usize;
            let raw = take(4 * nval)?;
            let means: Vec<f32> = raw
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            // Stored as (sum / count) · ncall: keep them with a count of ncall (llama-quantize
            // takes them as they are when ncall is 0).
            let counts = vec![if ncall > 0 { ncall as f32 } else { 1.0 }];
            m.entries.insert(
                name,
                Entry {
                    sums: means,
                    counts,
                },
            );
        }
        if let Ok(calls) = take(4) {
            m.chunk_count = i32_at(calls).max(0) as u32;
            if let Ok(len) = take(4) {
                let len = i32_at(len).clamp(0, 1 << 16) as usize;
                if let Ok(name) = take(len) {
                    m.datasets.push(String::from_utf8_lossy(name).into_owned());
                }
            }
        }
        Ok(m)
    }

    /// A weight's importance per column (for experts, `[experts][cols]`): the mean squared
    /// input, 1 where an expert saw no rows. `None` when the matrix has no entry for it.
    pub fn weights(&self, name: &str) -> Option<Vec<f32>> {
        let e = self.entries.get(name)?;
        let per = e.sums.len() / e.counts.len();
        let mut out = vec![0f32; e.sums.len()];
        for (j, &count) in e.counts.iter().enumerate() {
            for i in 0..per {
                out[j * per + i] = if count > 0.0 {
                    e.sums[j * per + i] / count
                } else {
                    1.0
                };
            }
        }
        Some(out)
    }

    /// Writes the GGUF format, entries in name order as llama-imatrix writes them.
    pub fn write(&self, path: &Path) -> Result<()> {
        let mut w = GgufWriter::new();
        w.meta("general.type", Value::Str("imatrix".into()));
        w.meta(
            "imatrix.datasets",
            Value::Array(self.datasets.iter().cloned().map(Value::Str).collect()),
        );
        w.meta("imatrix.chunk_count", Value::U32(self.chunk_count));
        w.meta("imatrix.chunk_size", Value::U32(self.chunk_size));
        for (name, e) in &self.entries {
            let n = e.counts.len() as u64;
            w.tensor_f32(
                &format!("{name}.in_sum2"),
                &[e.sums.len() as u64 / n, n],
                &e.sums,
            );
            w.tensor_f32(&format!("{name}.counts"), &[1, n], &e.counts);
        }
        std::fs::write(path, w.to_bytes()).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })
    }
}

//! Whole-file quantization: reads a GGUF, picks each tensor's type with the file type's mix,
//! converts tensors in slabs of rows spread over threads, and writes the file the way
//! llama-quantize lays it out — the input's metadata entries copied verbatim and in order, then
//! `general.quantization_version` and `general.file_type`; tensors ordered by layer, then name;
//! 32-byte alignment — so that the same input and type give the same bytes. Alongside it
//! measures what each conversion cost: RMSE and largest absolute error of the weights.

use super::imatrix::Imatrix;
use super::mix::{FileType, Mix, ModelShape};
use super::quantize_rows;
use crate::error::{Error, Result};
use crate::gguf::{GgmlType, GgufFile, TensorInfo, Value};
use crate::kernels::quant::dequantize;
use serde::Serialize;
use std::io::Write;
use std::path::Path;
use std::time::Instant;

const ALIGN: usize = 32;
/// ggml's `GGML_QNT_VERSION`.
const QUANTIZATION_VERSION: u32 = 2;
/// Values converted per slab: bounds memory to a few hundred MB whatever the tensor's size.
const SLAB_VALUES: usize = 1 << 24;
/// Split-file keys llama-quantize drops (the output is one file).
const DROPPED_KEYS: [&str; 5] = [
    "general.quantization_version",
    "general.file_type",
    "split.no",
    "split.count",
    "split.tensors.count",
];

/// What to make.
#[derive(Debug, Clone)]
pub struct Options {
    pub ftype: FileType,
    /// Leave `output.weight` as it is (llama-quantize's `--leave-output-tensor`).
    pub keep_output: bool,
    /// Allow converting tensors that are already quantized (their rounding errors add up).
    pub allow_requantize: bool,
    pub threads: usize,
    /// An importance matrix and the name to record for it (`quantize.imatrix.file`).
    pub imatrix: Option<(Imatrix, String)>,
}

/// One tensor's conversion.
#[derive(Debug, Clone, Serialize)]
pub struct TensorReport {
    pub name: String,
    pub dims: Vec<u64>,
    pub old_type: &'static str,
    pub new_type: &'static str,
    pub old_bytes: usize,
    pub new_bytes: usize,
    /// Root-mean-square and largest absolute difference between the weights before and after;
    /// absent for tensors copied unchanged.
    pub rmse: Option<f64>,
    pub max_abs_error: Option<f64>,
}

/// The whole file's conversion.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub file_type: &'static str,
    pub n_elements: u64,
    pub old_bytes: u64,
    pub new_bytes: u64,
    /// Tensor data bits per weight, before and after.
    pub old_bpw: f64,
    pub new_bpw: f64,
    /// Tensors whose rows the mix's type did not divide and that got a 32-block type instead.
    pub fallbacks: usize,
    pub seconds: f64,
    pub tensors: Vec<TensorReport>,
}

fn model_shape(f: &GgufFile) -> Result<ModelShape> {
    let arch = f.get_str("general.architecture")?.to_string();
    let first = |key: &str| -> Option<u64> {
        match f.get(key)? {
            crate::gguf::Value::Array(a) => a.first()?.as_u64(),
            v => v.as_u64(),
        }
    };
    let n_head = first(&format!("{arch}.attention.head_count")).unwrap_or(0) as usize;
    Ok(ModelShape {
        n_layer: f.get_u64(&format!("{arch}.block_count"))? as usize,
        n_head,
        n_head_kv: first(&format!("{arch}.attention.head_count_kv")).map_or(n_head, |v| v as usize),
        n_expert: first(&format!("{arch}.expert_count")).unwrap_or(0) as usize,
        arch,
    })
}

/// llama.cpp's tensor order: tensors outside layers first, then layer by layer, names sorted.
fn writing_order(tensors: &[TensorInfo]) -> Vec<&TensorInfo> {
    let layer = |n: &str| -> i64 {
        n.strip_prefix("blk.")
            .map(|r| r.bytes().take_while(u8::is_ascii_digit).count())
            .filter(|&len| len > 0)
            .and_then(|len| n[4..4 + len].parse().ok())
            .unwrap_or(-1)
    };
    let mut order: Vec<&TensorInfo> = tensors.iter().collect();
    order.sort_by(|a, b| (layer(&a.name), &a.name).cmp(&(layer(&b.name), &b.name)));
    order
}

/// Dimensions as GGUF stores them: trailing ones dropped (at least one kept).
fn stored_dims(dims: &[u64]) -> &[u64] {
    let n = dims.iter().rposition(|&d| d > 1).map_or(1, |i| i + 1);
    &dims[..n.min(dims.len())]
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// Header, metadata and tensor directory, padded to the data section.
fn header(f: &GgufFile, plan: &[(&TensorInfo, GgmlType, usize)], opts: &Options) -> Vec<u8> {
    let kept: Vec<&[u8]> = f
        .raw_metadata()
        .filter(|(k, _)| !DROPPED_KEYS.contains(k))
        .map(|(_, b)| b)
        .collect();
    let mut out = b"GGUF".to_vec();
    out.extend_from_slice(&3u32.to_le_bytes());
    out.extend_from_slice(&(plan.len() as u64).to_le_bytes());
    let mut added = vec![
        (
            "general.quantization_version",
            Value::U32(QUANTIZATION_VERSION),
        ),
        ("general.file_type", Value::U32(opts.ftype.id())),
    ];
    if let Some((m, file)) = &opts.imatrix {
        // As llama-quantize records them (its overrides keep 127 bytes of a string).
        let cut = |s: &str| s[..s.floor_char_boundary(127)].to_string();
        added.push(("quantize.imatrix.file", Value::Str(cut(file))));
        if let Some(d) = m.datasets.first() {
            added.push(("quantize.imatrix.dataset", Value::Str(cut(d))));
        }
        added.push((
            "quantize.imatrix.entries_count",
            Value::U32(m.entries.len() as u32),
        ));
        if m.chunk_count > 0 {
            added.push(("quantize.imatrix.chunks_count", Value::U32(m.chunk_count)));
        }
    }
    out.extend_from_slice(&((kept.len() + added.len()) as u64).to_le_bytes());
    for kv in kept {
        out.extend_from_slice(kv);
    }
    for (key, value) in added {
        put_str(&mut out, key);
        match value {
            Value::U32(v) => {
                out.extend_from_slice(&4u32.to_le_bytes());
                out.extend_from_slice(&v.to_le_bytes());
            }
            Value::Str(s) => {
                out.extend_from_slice(&8u32.to_le_bytes());
                put_str(&mut out, &s);
            }
            _ => unreachable!("only u32 and string keys are added"),
        }
    }
    let mut offset = 0usize;
    for (t, ty, bytes) in plan {
        put_str(&mut out, &t.name);
        let dims = stored_dims(&t.dims);
        out.extend_from_slice(&(dims.len() as u32).to_le_bytes());
        for d in dims {
            out.extend_from_slice(&d.to_le_bytes());
        }
        out.extend_from_slice(&ty.id().to_le_bytes());
        out.extend_from_slice(&(offset as u64).to_le_bytes());
        offset += bytes.next_multiple_of(ALIGN);
    }
    out.resize(out.len().next_multiple_of(ALIGN), 0);
    out
}

/// Converts `rows` rows of `t` (from `src`, its bytes) into `ty`, spread over `threads`.
/// Returns the bytes and (sum of squared errors, largest absolute error).
fn convert(
    t: &TensorInfo,
    src: &[u8],
    ty: GgmlType,
    n_per_row: usize,
    qw: Option<&[f32]>,
    threads: usize,
) -> Result<(Vec<u8>, f64, f64)> {
    let rows = src.len() / t.ty.bytes_for(n_per_row).expect("rows are whole blocks");
    let (in_row, out_row) = (
        src.len() / rows,
        ty.bytes_for(n_per_row).expect("checked by the mix"),
    );
    let mut out = vec![0u8; rows * out_row];
    let threads = threads.clamp(1, rows);
    let per = rows.div_ceil(threads);
    let results: Vec<Result<(f64, f64)>> = std::thread::scope(|s| {
        let handles: Vec<_> = out
            .chunks_mut(per * out_row)
            .zip(src.chunks(per * in_row))
            .map(|(o, i)| {
                s.spawn(move || -> Result<(f64, f64)> {
                    let mut x = vec![0f32; i.len() / in_row * n_per_row];
                    dequantize(t.ty, i, &mut x);
                    if let Some(p) = x.iter().position(|v| !v.is_finite()) {
                        return Err(Error::tensor(
                            &t.name,
                            format!("value {} is not finite", x[p]),
                        ));
                    }
                    quantize_rows(ty, &x, n_per_row, qw, o)?;
                    let mut back = vec![0f32; x.len()];
                    dequantize(ty, o, &mut back);
                    // Differences in f32 (exact for nearby values), squares summed per 32.
                    let (mut sq, mut max) = (0f64, 0f32);
                    for (a, b) in x.chunks(32).zip(back.chunks(32)) {
                        let mut s = 0f32;
                        for (a, b) in a.iter().zip(b) {
                            let d = (a - b).abs();
                            s += d * d;
                            max = max.max(d);
                        }
                        sq += s as f64;
                    }
                    Ok((sq, max as f64))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a quantizing thread panicked"))
            .collect()
    });
    let (mut sq, mut max) = (0f64, 0f64);
    for r in results {
        let (s, m) = r?;
        sq += s;
        max = max.max(m);
    }
    Ok((out, sq, max))
}

/// Quantizes `input` into `output`. `progress(done, total, tensor)` is called after each tensor.
pub fn quantize_file(
    input: &Path,
    output: &Path,
    opts: &Options,
    progress: &mut dyn FnMut(usize, usize, &TensorReport),
) -> Result<Report> {
    let start = Instant::now();
    let f = GgufFile::open(input)?;
    let order = writing_order(&f.tensors);
    let names: Vec<&str> = order.iter().map(|t| t.name.as_str()).collect();
    let has_imatrix = opts.imatrix.is_some();
    let mut mix = Mix::new(
        opts.ftype,
        model_shape(&f)?,
        &names,
        opts.keep_output,
        has_imatrix,
    );
    let mut plan = Vec::with_capacity(order.len());
    for t in &order {
        let ty = mix.choose(&t.name, &t.dims, t.ty);
        let bytes = ty
            .bytes_for(t.n_elems)
            .ok_or_else(|| Error::tensor(&t.name, format!("not whole {} blocks", ty.name())))?;
        let is_float = matches!(t.ty, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16);
        if ty != t.ty && !is_float && !opts.allow_requantize {
            return Err(Error::Quantize(format!(
                "tensor `{}` is already {}; requantizing adds the two roundings' errors \
                 (pass --allow-requantize to do it anyway)",
                t.name,
                t.ty.name()
            )));
        }
        plan.push((*t, ty, bytes));
    }
    let io = |source| Error::Io {
        path: output.to_path_buf(),
        source,
    };
    let file = std::fs::File::create(output).map_err(io)?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
    let result = write_all(&f, &plan, opts, &mut w, progress, mix.n_fallback).and_then(|r| {
        w.flush().map_err(io)?;
        Ok(r)
    });
    match result {
        Ok(mut r) => {
            r.seconds = start.elapsed().as_secs_f64();
            Ok(r)
        }
        Err(e) => {
            drop(w);
            let _ = std::fs::remove_file(output);
            Err(e)
        }
    }
}

/// The importance weights for tensor `t` (`[experts][cols]`), if the matrix has them.
fn importance(opts: &Options, t: &TensorInfo) -> Result<Option<Vec<f32>>> {
    let Some((m, _)) = &opts.imatrix else {
        return Ok(None);
    };
    let Some(w) = m.weights(&t.name) else {
        tracing::info!("the importance matrix has no entry for {}", t.name);
        return Ok(None);
    };
    let experts: u64 = t.dims.iter().skip(2).product();
    if w.len() as u64 == t.dims[0] * experts {
        return Ok(Some(w));
    }
    if matches!(
        t.name.as_str(),
        "token_embd.weight" | "per_layer_token_embd.weight"
    ) {
        return Ok(None);
    }
    Err(Error::Quantize(format!(
        "the importance matrix has {} values for `{}`, which needs {} ({} columns × {experts} experts)",
        w.len(),
        t.name,
        t.dims[0] * experts,
        t.dims[0]
    )))
}

fn write_all(
    f: &GgufFile,
    plan: &[(&TensorInfo, GgmlType, usize)],
    opts: &Options,
    w: &mut impl Write,
    progress: &mut dyn FnMut(usize, usize, &TensorReport),
    fallbacks: usize,
) -> Result<Report> {
    let io = |source| Error::Io {
        path: "the output file".into(),
        source,
    };
    w.write_all(&header(f, plan, opts)).map_err(io)?;
    let mut report = Report {
        file_type: opts.ftype.name(),
        n_elements: 0,
        old_bytes: 0,
        new_bytes: 0,
        old_bpw: 0.0,
        new_bpw: 0.0,
        fallbacks,
        seconds: 0.0,
        tensors: Vec::with_capacity(plan.len()),
    };
    for (i, (t, ty, bytes)) in plan.iter().enumerate() {
        let src = f.tensor_data(t);
        let n_per_row = t.dims[0] as usize;
        let (mut sq, mut max, mut written) = (0f64, 0f64, 0usize);
        if *ty == t.ty {
            w.write_all(src).map_err(io)?;
            written = src.len();
        } else {
            let row_bytes =
                t.ty.bytes_for(n_per_row)
                    .expect("the parser checked the rows");
            let slab_rows = (SLAB_VALUES / n_per_row).max(1);
            let qw = importance(opts, t)?;
            // Experts (dims[2..]) are whole matrices, each with its own importance slice.
            let expert_bytes = row_bytes * t.dims.get(1).copied().unwrap_or(1) as usize;
            for (e, expert) in src.chunks(expert_bytes).enumerate() {
                let qw = qw
                    .as_deref()
                    .map(|w| &w[e * n_per_row..(e + 1) * n_per_row]);
                for slab in expert.chunks(slab_rows * row_bytes) {
                    let (out, s, m) = convert(t, slab, *ty, n_per_row, qw, opts.threads)?;
                    w.write_all(&out).map_err(io)?;
                    written += out.len();
                    sq += s;
                    max = max.max(m);
                }
            }
        }
        debug_assert_eq!(written, *bytes);
        w.write_all(&vec![0u8; written.next_multiple_of(ALIGN) - written])
            .map_err(io)?;
        let changed = *ty != t.ty;
        let tr = TensorReport {
            name: t.name.clone(),
            dims: t.dims.clone(),
            old_type: t.ty.name(),
            new_type: ty.name(),
            old_bytes: t.n_bytes,
            new_bytes: written,
            rmse: changed.then(|| (sq / t.n_elems as f64).sqrt()),
            max_abs_error: changed.then_some(max),
        };
        report.n_elements += t.n_elems as u64;
        report.old_bytes += t.n_bytes as u64;
        report.new_bytes += written as u64;
        progress(i + 1, plan.len(), &tr);
        report.tensors.push(tr);
    }
    let n = report.n_elements.max(1) as f64;
    report.old_bpw = report.old_bytes as f64 * 8.0 / n;
    report.new_bpw = report.new_bytes as f64 * 8.0 / n;
    Ok(report)
}

//! `quantize_file` against llama-quantize: for both models of `testutil::quant_models` and
//! every file type, the output's sha256 equals that of llama-quantize's file for the same input
//! (`tools/quantize/reference.py` made `reference.json` with llama.cpp). Plus what the report
//! says and what bad requests get.

use everett_engine::gguf::GgufFile;
use everett_engine::quantize::Imatrix;
use everett_engine::quantize::{quantize_file, FileType, Options};
use everett_engine::testutil::{quant_imatrix, quant_models};
use sha2::{Digest, Sha256};
use std::path::PathBuf;

const REFERENCE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tools/quantize/reference.json"
);

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("everett-quantize-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn opts(ftype: FileType) -> Options {
    Options {
        ftype,
        keep_output: false,
        allow_requantize: false,
        threads: 2,
        imatrix: None,
    }
}

#[test]
fn every_file_type_is_byte_identical_to_llama_quantize() {
    let reference: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(REFERENCE).unwrap()).unwrap();
    let mut checked = 0;
    for (name, bytes) in quant_models() {
        let input = scratch(&format!("{name}.f32.gguf"));
        std::fs::write(&input, &bytes).unwrap();
        let want = reference[name]
            .as_object()
            .expect("the model is in the reference");
        assert_eq!(
            want.len(),
            FileType::names().count() + 15,
            "every run has a reference"
        );
        let imatrix = quant_imatrix(&bytes, 5);
        for (run, w) in want {
            let output = scratch(&format!("{name}.{run}.gguf"));
            let (ty, weighted) = match run.strip_suffix("+imatrix") {
                Some(ty) => (ty, true),
                None => (run.as_str(), false),
            };
            let o = Options {
                imatrix: weighted.then(|| (imatrix.clone(), "imatrix.gguf".to_string())),
                ..opts(FileType::parse(ty).unwrap())
            };
            quantize_file(&input, &output, &o, &mut |_, _, _| {}).unwrap();
            let got = std::fs::read(&output).unwrap();
            assert_eq!(
                got.len() as u64,
                w["bytes"].as_u64().unwrap(),
                "{name} {run}: size"
            );
            let hash = format!("{:x}", Sha256::digest(&got));
            assert_eq!(
                hash,
                w["sha256"].as_str().unwrap(),
                "{name} {run}: bytes differ"
            );
            std::fs::remove_file(&output).unwrap();
            checked += 1;
        }
    }
    assert_eq!(checked, 2 * (19 + 15));
}

#[test]
fn the_report_measures_each_tensor() {
    let (_, bytes) = quant_models().remove(0);
    let input = scratch("report.f32.gguf");
    std::fs::write(&input, bytes).unwrap();
    let output = scratch("report.q4_k_m.gguf");
    let mut seen = 0;
    let r = quantize_file(
        &input,
        &output,
        &opts(FileType::Q4_K_M),
        &mut |done, total, _| {
            assert!(done <= total);
            seen = done;
        },
    )
    .unwrap();
    assert_eq!(seen, r.tensors.len());
    let file = GgufFile::open(&output).unwrap();
    assert_eq!(file.get_u64("general.file_type").unwrap(), 15);
    let data: usize = file.tensors.iter().map(|t| t.n_bytes).sum();
    assert_eq!(r.new_bytes as usize, data);
    for t in &r.tensors {
        let written = file.tensor_info(&t.name).unwrap();
        assert_eq!(written.ty.name(), t.new_type, "{}", t.name);
        if t.old_type == t.new_type {
            assert!(t.rmse.is_none(), "{} was copied", t.name);
        } else {
            // Uniform weights in ±0.5 on a 4-to-6-bit grid: errors are small but never zero.
            let (rmse, max) = (t.rmse.unwrap(), t.max_abs_error.unwrap());
            assert!(
                rmse > 1e-4 && rmse < 0.05 && max >= rmse && max < 0.2,
                "{}: {rmse} {max}",
                t.name
            );
        }
    }
    // The mix keeps some layers' value and down matrices in Q6_K, the rest in Q4_K.
    let types: Vec<&str> = r.tensors.iter().map(|t| t.new_type).collect();
    assert!(
        types.contains(&"Q6_K") && types.contains(&"Q4_K"),
        "{types:?}"
    );
    assert!(
        r.new_bpw > 4.0 && r.new_bpw < 6.5 && r.old_bpw == 32.0,
        "{} {}",
        r.old_bpw,
        r.new_bpw
    );
}

#[test]
fn requantizing_needs_leave_and_a_failed_run_leaves_no_file() {
    let (_, bytes) = quant_models().remove(0);
    let input = scratch("requant.f32.gguf");
    std::fs::write(&input, bytes).unwrap();
    let q8 = scratch("requant.q8_0.gguf");
    quantize_file(&input, &q8, &opts(FileType::Q8_0), &mut |_, _, _| {}).unwrap();
    let out = scratch("requant.q4_0.gguf");
    let err = quantize_file(&q8, &out, &opts(FileType::Q4_0), &mut |_, _, _| {}).unwrap_err();
    assert!(err.to_string().contains("--allow-requantize"), "{err}");
    assert!(!out.exists());
    let allowed = Options {
        allow_requantize: true,
        ..opts(FileType::Q4_0)
    };
    quantize_file(&q8, &out, &allowed, &mut |_, _, _| {}).unwrap();
    assert_eq!(
        GgufFile::open(&out)
            .unwrap()
            .get_u64("general.file_type")
            .unwrap(),
        2
    );
    let truncated = scratch("requant.truncated.gguf");
    let whole = std::fs::read(&input).unwrap();
    std::fs::write(&truncated, &whole[..whole.len() / 2]).unwrap();
    let err = quantize_file(&truncated, &out, &opts(FileType::Q8_0), &mut |_, _, _| {});
    assert!(err.unwrap_err().to_string().contains("truncated"));
}

#[test]
fn importance_matrices_round_trip_through_the_gguf_format() {
    let (_, bytes) = quant_models().remove(1);
    let m = quant_imatrix(&bytes, 9);
    let path = scratch("roundtrip.imatrix.gguf");
    m.write(&path).unwrap();
    assert_eq!(Imatrix::read(&path).unwrap(), m);
    let name = m.entries.keys().next().unwrap();
    let w = m.weights(name).unwrap();
    assert_eq!(w[0], m.entries[name].sums[0] / 1024.0);
    std::fs::write(&path, b"not an imatrix at all").unwrap();
    let err = Imatrix::read(&path).unwrap_err().to_string();
    assert!(
        err.contains("importance matrix") && err.contains("roundtrip"),
        "{err}"
    );
}

/// Calibration's sums, checked where they can be computed by hand: layer 0's query, key and
/// value matrices read the RMS-normed token embeddings, so their per-column sums of squares
/// follow from the weights and the tokens alone (f64 here).
#[test]
fn calibration_sums_the_squares_of_what_each_matrix_reads() {
    use everett_engine::calibrate;
    use everett_engine::model::Model;
    use everett_engine::tokenizer::Tokenizer;
    let (_, bytes) = quant_models().remove(0);
    let f = GgufFile::from_bytes(bytes).unwrap();
    let tok = Tokenizer::from_gguf(&f).unwrap();
    let mut model = Model::from_gguf(&f, 2).unwrap();
    let text = "hello the a b c the hello hello a ".repeat(40);
    let ctx = 64;
    let (m, report) =
        calibrate::imatrix(&mut model, &tok, &text, ctx, "t", &mut |_, _, _| {}).unwrap();
    let ids = tok.encode(&text, true, false);
    assert_eq!(report.chunks, ids.len() / ctx);
    let floats = |name: &str| {
        let t = f.tensor_info(name).unwrap();
        let mut v = vec![0f32; t.n_elems];
        everett_engine::kernels::quant::dequantize(t.ty, f.tensor_data(t), &mut v);
        v
    };
    let (embd, norm) = (
        floats("token_embd.weight"),
        floats("blk.0.attn_norm.weight"),
    );
    let d = norm.len();
    let mut want = vec![0f64; d];
    for chunk in ids.chunks_exact(ctx) {
        for (i, &id) in chunk.iter().enumerate() {
            let id = if i == 0 { tok.bos.unwrap() } else { id } as usize;
            let x = &embd[id * d..(id + 1) * d];
            let ms = x.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / d as f64;
            let inv = 1.0 / (ms + 1e-6).sqrt();
            for j in 0..d {
                want[j] += (x[j] as f64 * inv * norm[j] as f64).powi(2);
            }
        }
    }
    for role in ["attn_q", "attn_k", "attn_v"] {
        let e = &m.entries[&format!("blk.0.{role}.weight")];
        assert_eq!(e.counts, vec![(report.chunks * ctx) as f32]);
        for (j, (got, want)) in e.sums.iter().zip(&want).enumerate() {
            assert!(
                (*got as f64 - want).abs() <= 1e-4 * want,
                "{role} column {j}: {got} vs {want}"
            );
        }
    }
}

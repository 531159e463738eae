//! `everett imatrix` and `everett quantize` end to end on a generated model: the calibration
//! file is readable and complete, quantizing with it records it, `--eval` measures perplexity
//! before and after, `--json` reports every tensor, and bad requests are refused clearly.

mod common;

use common::{everett, refused, workdir};
use everett_engine::gguf::GgufFile;
use everett_engine::quantize::Imatrix;
use everett_engine::testutil::quant_models;

/// Text the tiny SentencePiece vocabulary covers (its words and bytes).
fn text() -> String {
    "hello the a b c the hello ".repeat(400)
}

#[test]
fn calibrate_quantize_and_evaluate() {
    let dir = workdir("quantize", "flow");
    let model = dir.join("llama.f32.gguf");
    std::fs::write(&model, &quant_models()[0].1).unwrap();
    let calib = dir.join("calib.txt");
    std::fs::write(&calib, text()).unwrap();
    let im = dir.join("imatrix.gguf");
    let (m, c, i) = (
        model.to_str().unwrap(),
        calib.to_str().unwrap(),
        im.to_str().unwrap(),
    );
    let out = everett(&[
        "imatrix", "--model", m, "--file", c, "--ctx", "64", "-o", i, "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let chunks = report["chunks"].as_u64().unwrap();
    assert!(chunks >= 2, "{report}");
    let matrix = Imatrix::read(&im).unwrap();
    // Every layer matrix of the 8 layers: q, k, v, output, gate, up, down.
    assert_eq!(matrix.entries.len(), 8 * 7, "{:?}", matrix.entries.keys());
    for (name, e) in &matrix.entries {
        assert_eq!(e.counts, vec![(chunks * 64) as f32], "{name}");
        assert!(e.sums.iter().all(|v| v.is_finite() && *v > 0.0), "{name}");
    }
    assert_eq!(matrix.chunk_size, 64);
    assert_eq!(matrix.datasets, vec![c.to_string()]);

    let q = dir.join("q4_k_m.gguf");
    let out = everett(&[
        "quantize",
        m,
        q.to_str().unwrap(),
        "--type",
        "q4_k_m",
        "--imatrix",
        i,
        "--eval",
        c,
        "--eval-ctx",
        "64",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let (before, after) = (
        r["eval"]["before"].as_f64().unwrap(),
        r["eval"]["after"].as_f64().unwrap(),
    );
    assert!(
        before > 1.0 && after > 1.0 && before != after,
        "{}",
        r["eval"]
    );
    let f = GgufFile::open(&q).unwrap();
    assert_eq!(f.get_str("quantize.imatrix.file").unwrap(), i);
    assert_eq!(f.get_u64("quantize.imatrix.entries_count").unwrap(), 56);
    assert_eq!(r["tensors"].as_array().unwrap().len(), f.tensors.len());
    assert_eq!(r["file_type"], "Q4_K_M");
}

#[test]
fn bad_requests_are_refused_clearly() {
    let dir = workdir("quantize", "bad");
    let model = dir.join("llama.f32.gguf");
    std::fs::write(&model, &quant_models()[0].1).unwrap();
    let m = model.to_str().unwrap();
    let out = dir.join("out.gguf");
    let o = out.to_str().unwrap();
    refused(
        &["quantize", m, o, "--type", "Q3_XS"],
        "unknown type \"Q3_XS\"",
    );
    refused(
        &["quantize", "/nonexistent.gguf", o, "--type", "Q8_0"],
        "/nonexistent.gguf",
    );
    refused(
        &["quantize", m, o, "--type", "Q8_0", "--threads", "0"],
        "--threads",
    );
    let junk = dir.join("junk.gguf");
    std::fs::write(&junk, b"GGUF\x03\x00\x00\x00").unwrap();
    refused(
        &["quantize", junk.to_str().unwrap(), o, "--type", "Q8_0"],
        "malformed GGUF",
    );
    refused(
        &[
            "quantize",
            m,
            o,
            "--type",
            "Q8_0",
            "--imatrix",
            junk.to_str().unwrap(),
        ],
        "importance matrix",
    );
    assert!(!out.exists());
    // A matrix whose rows do not fit the model is named, and no file is left behind.
    let other = dir.join("other.imatrix.gguf");
    everett_engine::testutil::quant_imatrix(&quant_models()[1].1, 1)
        .write(&other)
        .unwrap();
    refused(
        &[
            "quantize",
            m,
            o,
            "--type",
            "Q4_0",
            "--imatrix",
            other.to_str().unwrap(),
        ],
        "blk.0.attn_k.weight",
    );
    assert!(!out.exists());
    let text = dir.join("short.txt");
    std::fs::write(&text, "hello").unwrap();
    let t = text.to_str().unwrap();
    refused(
        &["imatrix", "--model", m, "--file", t],
        "--ctx must be between 16 and 256",
    );
    refused(
        &["imatrix", "--model", m, "--file", t, "--ctx", "64"],
        "fewer than one chunk",
    );
}

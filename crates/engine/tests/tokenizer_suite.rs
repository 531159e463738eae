//! llama.cpp's own tokenizer suite: every `models/ggml-vocab-*.gguf` that has `.inp`/`.out`
//! cases, read as llama.cpp's `tests/test-tokenizer-0.cpp` reads them (cases separated by
//! `\n__ggml_vocab_test__\n`, one line of ids per case; no special tokens added, special text
//! not parsed). Every case must give llama.cpp's ids exactly. The vocabularies come from
//! `tools/vocab/fetch.sh` (a cache outside the repository); CI requires them. Then all cases
//! joined into one text (new contexts at every seam) must give llama-tokenize's ids, checked by
//! count and hash against `tools/vocab/joined_reference.json` (its script says how).

use everett_engine::gguf::GgufFile;
use everett_engine::testutil::vocab_dir;
use everett_engine::tokenizer::Tokenizer;
use std::collections::BTreeMap;
use std::path::Path;

/// The vocabularies of llama.cpp's suite that carry cases (all of them must be present).
const SUITE: [&str; 15] = [
    "bert-bge",
    "command-r",
    "deepseek-coder",
    "deepseek-llm",
    "falcon",
    "gemma-4",
    "gpt-2",
    "llama-bpe",
    "llama-spm",
    "mpt",
    "phi-3",
    "qwen2",
    "qwen35",
    "refact",
    "starcoder",
];

/// Input text → expected ids, as `read_tests` builds its map (a repeated input keeps its last).
fn cases(dir: &Path, name: &str) -> BTreeMap<String, Vec<u32>> {
    let base = dir.join(format!("ggml-vocab-{name}.gguf"));
    let inp = std::fs::read(base.with_extension("gguf.inp")).expect("the .inp file");
    let inp = String::from_utf8(inp).expect("the cases are UTF-8");
    let out = std::fs::read_to_string(base.with_extension("gguf.out")).expect("the .out file");
    let sep = "\n__ggml_vocab_test__\n";
    let mut texts = Vec::new();
    let mut pos = 0;
    while pos < inp.len() {
        match inp[pos..].find(sep) {
            Some(n) => {
                texts.push(&inp[pos..pos + n]);
                pos += n + sep.len();
            }
            None => {
                texts.push(&inp[pos..]);
                break;
            }
        }
    }
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        texts.len(),
        lines.len(),
        "{name}: inputs and outputs differ in count"
    );
    texts
        .into_iter()
        .zip(lines)
        .map(|(t, l)| {
            let ids = l
                .split_whitespace()
                .map(|x| x.parse().expect("an id"))
                .collect();
            (t.to_string(), ids)
        })
        .collect()
}

#[test]
fn every_case_of_llamacpp_tokenizer_suite() {
    let Some(dir) = vocab_dir() else { return };
    let mut report = Vec::new();
    let (mut total, mut passed) = (0, 0);
    for name in SUITE {
        let path = dir.join(format!("ggml-vocab-{name}.gguf"));
        let tok = match GgufFile::open(&path).and_then(|f| Tokenizer::from_gguf(&f)) {
            Ok(t) => t,
            Err(e) => {
                let n = cases(&dir, name).len();
                total += n;
                report.push(format!("{name}: refused: {e} (0/{n})"));
                continue;
            }
        };
        let cases = cases(&dir, name);
        let mut ok = 0;
        for (text, want) in &cases {
            let got = tok.encode(text, false, false);
            if &got == want {
                ok += 1;
            } else {
                report.push(format!(
                    "{name}: {text:?}\n   want {want:?}\n    got {got:?}"
                ));
            }
        }
        report.push(format!("{name}: {ok}/{}", cases.len()));
        total += cases.len();
        passed += ok;
    }
    eprintln!("{}", report.join("\n"));
    assert_eq!(passed, total, "{passed} of {total} cases match llama.cpp");
}

#[test]
fn joined_suite_text_gives_llamacpp_ids() {
    use sha2::{Digest, Sha256};
    let Some(dir) = vocab_dir() else { return };
    let mut inputs: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "inp"))
        .collect();
    inputs.sort();
    let text: String = inputs
        .iter()
        .map(|p| {
            std::fs::read_to_string(p)
                .unwrap()
                .replace("\n__ggml_vocab_test__\n", "\n")
        })
        .collect();
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tools/vocab/joined_reference.json"
    );
    let reference: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert_eq!(reference["bytes"].as_u64().unwrap() as usize, text.len());
    let mut bad = Vec::new();
    for name in SUITE {
        let f = GgufFile::open(&dir.join(format!("ggml-vocab-{name}.gguf"))).unwrap();
        let ids = Tokenizer::from_gguf(&f)
            .unwrap()
            .encode(&text, false, false);
        let joined: Vec<String> = ids.iter().map(u32::to_string).collect();
        let digest = Sha256::digest(joined.join(",").as_bytes());
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        let want = &reference["vocabularies"][name];
        if want["sha256"].as_str() != Some(hex.as_str()) {
            bad.push(format!(
                "{name}: {} ids, llama.cpp {}",
                ids.len(),
                want["ids"]
            ));
        }
    }
    assert!(
        bad.is_empty(),
        "joined text differs from llama.cpp: {bad:?}"
    );
}

#[test]
fn unsupported_vocabularies_are_refused_by_name() {
    let Some(dir) = vocab_dir() else { return };
    // T5's Unigram model (nomic-bert-moe) is not read: the error names the model and its pre.
    let f = GgufFile::open(&dir.join("ggml-vocab-nomic-bert-moe.gguf")).unwrap();
    let err = Tokenizer::from_gguf(&f).err().expect("refused").to_string();
    assert!(err.contains("`t5`") && err.contains("default"), "{err}");
    // The suite's vocabularies without cases load (a BPE file without `pre` gets llama.cpp's
    // default pre-tokenizer, as llama.cpp does).
    for name in ["aquila", "baichuan", "gpt-neox"] {
        let f = GgufFile::open(&dir.join(format!("ggml-vocab-{name}.gguf"))).unwrap();
        let tok = Tokenizer::from_gguf(&f).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(
            !tok.encode("Hello world", false, false).is_empty(),
            "{name}"
        );
    }
}

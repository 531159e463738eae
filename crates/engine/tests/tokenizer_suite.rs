//! llama.cpp's own tokenizer suite: every `models/ggml-vocab-*.gguf` that has `.inp`/`.out`
//! cases, read as llama.cpp's `tests/test-tokenizer-0.cpp` reads them (cases separated by
//! `\n__ggml_vocab_test__\n`, one line of ids per case; no special tokens added, special text
//! not parsed). Every case must give llama.cpp's ids exactly. The vocabularies come from
//! `tools/vocab/fetch.sh` (a cache outside the repository); CI requires them.

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

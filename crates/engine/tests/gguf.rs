//! GGUF reader: round trip, and malformed input (truncation at every byte, random corruption)
//! must give errors, never panics. Files that once broke the reader live in tests/corpus/.

use everett_engine::gguf::write::GgufWriter;
use everett_engine::gguf::{GgmlType, GgufFile, Value};
use everett_engine::testutil::{tiny_model, Tiny};
use proptest::prelude::*;

fn small_file() -> Vec<u8> {
    let mut w = GgufWriter::new();
    w.meta("general.architecture", Value::Str("gemma3".into()))
        .meta("x.list", Value::Array(vec![Value::U32(1), Value::U32(2)]))
        .tensor_f32("a", &[4, 2], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0])
        .tensor("b", &[32], GgmlType::Q8_0, vec![0u8; 34]);
    w.to_bytes()
}

#[test]
fn round_trip() {
    let f = GgufFile::from_bytes(small_file()).unwrap();
    assert_eq!(f.get_str("general.architecture").unwrap(), "gemma3");
    let a = f.tensor_info("a").unwrap();
    assert_eq!(
        (a.dims.clone(), a.ty, a.n_bytes),
        (vec![4, 2], GgmlType::F32, 32)
    );
    assert_eq!(&f.tensor_data(a)[4..8], &2.0f32.to_le_bytes());
    assert_eq!(f.tensor_info("b").unwrap().n_bytes, 34);
}

#[test]
fn every_truncation_is_an_error() {
    let bytes = small_file();
    // The file ends with tensor b's 34 bytes and 30 bytes of padding; any shorter cut loses data.
    for len in 0..bytes.len() - 30 {
        let e = GgufFile::from_bytes(bytes[..len].to_vec()).err();
        assert!(e.is_some(), "a file cut to {len} bytes was accepted");
    }
    let e = GgufFile::from_bytes(bytes[..60].to_vec())
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("truncated") || e.contains("cannot fit"), "{e}");
}

/// A corrupt key of 66 000 raw bytes followed by a bad value type: the error names the key by a
/// short, printable excerpt, never the whole blob.
#[test]
fn errors_quote_a_corrupt_key_by_a_short_excerpt() {
    let mut w = GgufWriter::new();
    let key: String = (0..66_000u32)
        .map(|i| char::from(b"\x01\x02ab\n"[i as usize % 5]))
        .collect();
    w.meta(&key, Value::U32(7));
    let mut bytes = w.to_bytes();
    // The value type follows the key: make it unknown.
    let at = bytes
        .windows(4)
        .rposition(|x| x == 4u32.to_le_bytes())
        .expect("the u32 type id");
    bytes[at..at + 4].copy_from_slice(&99u32.to_le_bytes());
    let e = GgufFile::from_bytes(bytes)
        .err()
        .expect("refused")
        .to_string();
    assert!(e.contains("unknown value type 99"), "{e}");
    assert!(e.len() < 400, "{} bytes: {e}", e.len());
    assert!(
        e.contains("66000 bytes in all") && !e.contains('\u{1}'),
        "{e}"
    );
}

#[test]
fn unsupported_type_is_named() {
    let mut bytes = small_file();
    // Tensor b's entry: name (u64 len 1, "b"), n_dims u32, one u64 dim, then the type id.
    let name = [1u8, 0, 0, 0, 0, 0, 0, 0, b'b'];
    let pos = bytes
        .windows(9)
        .position(|w| w == name)
        .expect("tensor b entry");
    let at = pos + 9 + 4 + 8;
    assert_eq!(bytes[at..at + 4], 8u32.to_le_bytes());
    bytes[at..at + 4].copy_from_slice(&10u32.to_le_bytes());
    let e = GgufFile::from_bytes(bytes)
        .err()
        .expect("unsupported")
        .to_string();
    assert!(e.contains("Q2_K") && e.contains("`b`"), "{e}");
}

#[test]
fn corpus_files_are_rejected_cleanly() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        assert!(GgufFile::from_bytes(bytes).is_err());
        n += 1;
    }
    assert!(n > 0);
}

fn corrupt_and_load(tiny: &Tiny, flips: Vec<(usize, u8)>) {
    let mut bytes = tiny_model(tiny, 1);
    let header = 2048.min(bytes.len());
    for (at, v) in flips {
        bytes[at % header] = v;
    }
    if let Ok(f) = GgufFile::from_bytes(bytes) {
        let _ = everett_engine::model::Model::from_gguf(&f, 1);
        let _ = everett_engine::tokenizer::Tokenizer::from_gguf(&f);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]
    // A corrupt header once declared 10^11 blocks and the loader tried to reserve them all.
    #[test]
    fn corrupted_bytes_never_panic(
        arch in 0usize..3,
        flips in proptest::collection::vec((0usize..4096, any::<u8>()), 1..8),
    ) {
        let tiny = [Tiny::gemma3(), Tiny::llama(), Tiny::gpt2()][arch];
        corrupt_and_load(&tiny, flips);
    }
}

#[test]
fn absurd_block_count_is_refused() {
    let mut bytes = tiny_model(&Tiny::gemma3(), 1);
    // Metadata entry layout: key, u32 value type, u32 value.
    let key = b"gemma3.block_count";
    let at = bytes.windows(key.len()).position(|w| w == key).unwrap() + key.len() + 4;
    bytes[at..at + 4].copy_from_slice(&3_000_000_000u32.to_le_bytes());
    let f = GgufFile::from_bytes(bytes).unwrap();
    let e = everett_engine::model::Model::from_gguf(&f, 1)
        .err()
        .expect("a block count beyond the tensors must be refused")
        .to_string();
    assert!(e.contains("block_count"), "{e}");
}

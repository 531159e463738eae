//! Every quantized block format decodes as llama.cpp decodes it: random blocks and the values
//! ggml's own C decoders give for them (`tools/archs/quant_reference.py` wrote them), against
//! everett's reference decoder — which the packed kernels are tested against in `kernels.rs`.

use everett_engine::gguf::GgmlType;
use everett_engine::kernels::quant::dequantize;
use serde_json::Value;

#[test]
fn every_block_format_decodes_as_llamacpp_does() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tools/archs/reference/quant_blocks.json"
    );
    let cases: Vec<Value> = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    // Every quantized type everett reads (the float ones need no table).
    let quantized = GgmlType::all().filter(|t| t.block_elems() > 1).count();
    assert_eq!(cases.len(), quantized);
    for c in cases {
        let name = c["type"].as_str().unwrap();
        let ty = GgmlType::all()
            .find(|t| t.name() == name)
            .unwrap_or_else(|| panic!("{name} is not supported"));
        let hex = c["hex"].as_str().unwrap();
        let bytes: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        let want: Vec<f32> = c["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        let mut got = vec![0f32; want.len()];
        dequantize(ty, &bytes, &mut got);
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!(
                (g - w).abs() <= 1e-6 * w.abs().max(1e-3),
                "{name} element {i}: {g} against llama.cpp's {w}"
            );
        }
    }
}

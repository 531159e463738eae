//! Writes the models of `testutil::quant_models` into a folder as `<name>.f32.gguf`, with their
//! made-up importance matrices (`quant_imatrix`) as `<name>.imatrix.gguf`, for
//! `tools/quantize/reference.py` (llama-quantize converts the same files).
//! usage: cargo run --release -p everett-engine --example quantgen -- OUT_DIR

use everett_engine::testutil::{quant_imatrix, quant_models};

fn main() {
    let Some(dir) = std::env::args().nth(1) else {
        eprintln!("usage: quantgen OUT_DIR");
        std::process::exit(2);
    };
    std::fs::create_dir_all(&dir).expect("the output folder");
    for (name, bytes) in quant_models() {
        let path = format!("{dir}/{name}.f32.gguf");
        std::fs::write(&path, &bytes).expect("written");
        let imatrix = format!("{dir}/{name}.imatrix.gguf");
        quant_imatrix(&bytes, 5)
            .write(imatrix.as_ref())
            .expect("written");
        println!("{path}");
    }
}

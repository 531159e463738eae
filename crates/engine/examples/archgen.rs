//! Writes the random-weight model of every architecture in `testutil::archs` into a folder, as
//! `<name>.<f16|q8_0>.gguf`, for `tools/archs/compare.py` (llama.cpp runs the same files).
//! `--ablate` also writes `<name>.<tag>.off.gguf`: the same weights, the architecture's feature
//! switched off. usage: cargo run --release -p everett-engine --example archgen -- OUT_DIR SEED
//! [--ablate]

use everett_engine::testutil::archs::{arch_model, Storage, ARCHS};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(dir), Some(seed)) = (args.get(1), args.get(2).and_then(|s| s.parse().ok())) else {
        eprintln!("usage: archgen OUT_DIR SEED");
        std::process::exit(2);
    };
    std::fs::create_dir_all(dir).expect("the output folder");
    for name in ARCHS {
        for (storage, tag) in [(Storage::F16, "f16"), (Storage::Q8_0, "q8_0")] {
            let path = format!("{dir}/{name}.{tag}.gguf");
            std::fs::write(&path, arch_model(name, storage, seed, false)).expect("written");
            println!("{path}");
            if args.iter().any(|a| a == "--ablate") && name != "llama" && name != "qwen3" {
                let path = format!("{dir}/{name}.{tag}.off.gguf");
                std::fs::write(&path, arch_model(name, storage, seed, true)).expect("written");
                println!("{path}");
            }
        }
    }
}

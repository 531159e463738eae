//! `cargo bench -p everett-engine --bench matmul`: GMAC/s of the batched quantized matmul for
//! the default model's shapes and types, per kernel family and batch size (median of 5 runs).

use everett_engine::gguf::GgmlType;
use everett_engine::kernels::act::QuantActs;
use everett_engine::kernels::matmul::{matmul, Isa};
use everett_engine::kernels::pack::PackedMatrix;
use everett_engine::kernels::pool::ThreadPool;
use everett_engine::sample::Rng;
use everett_engine::testutil::{rand_f32, random_blocks};
use std::time::Instant;

fn main() {
    let threads = std::env::var("EVERETT_THREADS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    let pool = ThreadPool::new(threads);
    let mut rng = Rng::new(1);
    let shapes = [
        ("ffn_up Q5_0", GgmlType::Q5_0, 2048, 640),
        ("ffn_down Q6_K", GgmlType::Q6_K, 640, 2048),
        ("attn_output Q4_K", GgmlType::Q4_K, 640, 1024),
        ("output Q8_0", GgmlType::Q8_0, 32768, 640),
    ];
    for (name, ty, n, k) in shapes {
        let raw = random_blocks(&mut rng, ty, n * k);
        let w = PackedMatrix::pack(name, ty, &raw, n, k).unwrap();
        for rows in [1, 16, 32, 128] {
            let x = rand_f32(&mut rng, rows * k, 1.0);
            let mut acts = QuantActs::default();
            acts.quantize(&x, rows, k);
            let mut out = vec![0f32; rows * n];
            let mut line = format!("{name:<18} rows {rows:>4}");
            for isa in Isa::available().into_iter().skip(1) {
                let mut times = Vec::new();
                for _ in 0..5 {
                    let t = Instant::now();
                    let reps = (4096 / rows).max(2);
                    for _ in 0..reps {
                        matmul(&pool, isa, &w, &x, &acts, rows, &mut out);
                    }
                    times.push(t.elapsed().as_secs_f64() / reps as f64);
                }
                times.sort_by(f64::total_cmp);
                let gmac = (rows * n * k) as f64 / times[2] / 1e9;
                line += &format!("  {isa:?} {gmac:7.1}");
            }
            println!("{line}  GMAC/s");
        }
    }
}

//! CPU compute: weight repacking, activation quantization, the batched matmul (scalar reference
//! AVX2 and AVX-512 VNNI), the thread pool, the small per-row ops (norms, RoPE, activations),
//! and attention's inner loops over a group of heads.

pub mod act;
mod avx2;
pub mod disjoint;
pub mod heads;
mod heads_q;
pub mod matmul;
pub mod ops;
pub mod pack;
pub mod pool;
pub mod quant;
mod quant_low;
pub mod softmax;
mod vnni;

//! CPU compute: weight repacking, activation quantization, the batched matmul (scalar reference
//! AVX2 and AVX-512 VNNI), the thread pool, and the small per-row ops (norms, RoPE, activations).

pub mod act;
mod avx2;
pub mod matmul;
pub mod ops;
pub mod pack;
pub mod pool;
pub mod quant;
mod vnni;

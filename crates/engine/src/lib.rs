//! everett-engine: request in, token events out. GGUF models on CPU with batched quantized
//! kernels over a paged KV cache. No HTTP and no command-line parsing live here.

pub mod batch;
pub mod calibrate;
pub mod collapse;
pub mod constraint;
pub mod engine;
pub mod error;
pub mod generate;
pub mod gguf;
pub mod kernels;
pub mod kv;
pub mod model;
pub mod oneshot;
pub mod overflow;
pub mod perplexity;
pub(crate) mod policies;
pub mod pull;
pub mod quantize;
pub mod request;
pub mod sample;
pub mod scheduler;
pub mod superposition;
#[doc(hidden)]
pub mod testutil;
pub mod tokenizer;

pub use error::{Error, Result};

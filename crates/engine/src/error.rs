//! The engine's one error type. Every variant names what was wrong (the file, field, tensor or
//! token) so that a user can act on it. It deliberately carries no backtraces or internals.

use std::path::PathBuf;

/// Everything that can go wrong inside `everett-engine`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot open {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("malformed GGUF: {0}")]
    Gguf(String),
    #[error("GGUF metadata key `{key}`: {problem}")]
    Metadata { key: String, problem: String },
    #[error("tensor `{name}`: {problem}")]
    Tensor { name: String, problem: String },
    #[error("unsupported tensor type {0}")]
    UnsupportedType(String),
    #[error("unsupported architecture `{0}` (supported: gemma3, llama, gpt2)")]
    UnsupportedArchitecture(String),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("invalid parameter `{name}`: {problem}")]
    Param { name: &'static str, problem: String },
    #[error("request: {0}")]
    Request(String),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub(crate) fn gguf(msg: impl Into<String>) -> Self {
        Error::Gguf(msg.into())
    }
    pub(crate) fn meta(key: &str, problem: impl Into<String>) -> Self {
        Error::Metadata {
            key: key.to_string(),
            problem: problem.into(),
        }
    }
    pub(crate) fn tensor(name: &str, problem: impl Into<String>) -> Self {
        Error::Tensor {
            name: name.to_string(),
            problem: problem.into(),
        }
    }
    pub(crate) fn param(name: &'static str, problem: impl Into<String>) -> Self {
        Error::Param {
            name,
            problem: problem.into(),
        }
    }
}

/// `Ok` when `ok`, else the parameter error "`v` is not in `bounds`" (bounds as written in
/// interval notation, e.g. "(0, 100]").
pub(crate) fn check_range(name: &'static str, v: f32, ok: bool, bounds: &str) -> Result<()> {
    if ok {
        Ok(())
    } else {
        Err(Error::param(name, format!("{v} is not in {bounds}")))
    }
}

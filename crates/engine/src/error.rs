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
    /// The request itself is wrong (empty prompt, unknown token, ...): the client's to fix.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The request can never run here (prompt and output beyond the context or the KV cache).
    #[error("request too large: {0}")]
    TooLarge(String),
    /// An id that names no running or waiting request (finished, aborted, or never issued).
    #[error("unknown request id {0}")]
    UnknownRequest(u64),
    /// The request was cancelled by `abort` before it finished.
    #[error("request {0} was aborted")]
    Aborted(u64),
    /// Too many requests are already waiting; try again later.
    #[error("the waiting queue is full ({0} sequences waiting)")]
    QueueFull(usize),
    /// The engine stopped admitting work, or stopped.
    #[error("the engine is shutting down")]
    ShuttingDown,
    /// The default model could not be fetched or assembled (`pull`).
    #[error("pulling the default model: {0}")]
    Pull(String),
    /// `quantize` or `imatrix` cannot do what was asked (requantizing without leave, a missing
    /// importance matrix, an output that cannot be written).
    #[error("quantize: {0}")]
    Quantize(String),
    /// A broken invariant inside the engine (a batch the model cannot run): not the client's fault.
    #[error("internal error: {0}")]
    Internal(String),
}

pub type Result<T> = std::result::Result<T, Error>;

/// At most `max_chars` of `s`, printable: control characters are escaped and a longer text is
/// cut with a note of its length. Errors quote input (a GGUF's key, a request's field) only
/// through this, so that corrupt or hostile input cannot flood a log or a reply.
pub fn excerpt(s: &str, max_chars: usize) -> String {
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i == max_chars {
            out.push_str(&format!("… ({} bytes in all)", s.len()));
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

impl Error {
    /// Whether the caller's input caused this error (an HTTP front end answers 4xx) rather than
    /// the engine, the model file or the machine.
    pub fn is_client_error(&self) -> bool {
        matches!(
            self,
            Error::Param { .. }
                | Error::InvalidRequest(_)
                | Error::TooLarge(_)
                | Error::UnknownRequest(_)
                | Error::Aborted(_)
        )
    }

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
            name: excerpt(name, 80),
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

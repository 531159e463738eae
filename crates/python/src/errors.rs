//! Engine errors as Python exceptions: what the caller got wrong (a bad parameter, a prompt
//! too long, an unknown token) is a `ValueError`; everything else (a model file that cannot be
//! read, an engine that failed or stopped) is an `everett.EverettError`. The message is the
//! engine's, with a parameter named as the Python API names it.

use everett_engine::Error;
use pyo3::exceptions::{PyException, PyValueError};
use pyo3::PyErr;

pyo3::create_exception!(
    everett,
    EverettError,
    PyException,
    "An error of the engine, the model file or the machine (not the caller's input)."
);

/// The Python API's name for an engine parameter.
fn api_name(engine: &str) -> &str {
    match engine {
        "repeat_penalty" => "repetition_penalty",
        "top_logprobs" => "logprobs",
        other => other,
    }
}

/// The exception for an engine error.
pub fn to_py(e: Error) -> PyErr {
    let msg = match &e {
        Error::Param { name, problem } => {
            format!("invalid parameter `{}`: {problem}", api_name(name))
        }
        other => other.to_string(),
    };
    if e.is_client_error() {
        PyValueError::new_err(msg)
    } else {
        EverettError::new_err(msg)
    }
}

/// A `ValueError` naming parameter `name`.
pub fn bad(name: &str, problem: impl std::fmt::Display) -> PyErr {
    PyValueError::new_err(format!("invalid parameter `{name}`: {problem}"))
}

//! The `everett` Python package's native module (`everett._everett`): the engine in-process
//! through PyO3. `LLM` (offline, vLLM's API) and `AsyncLLM` (asyncio) hold one engine thread
//! each; everything else is the parameters and results they exchange. No engine code lives
//! here: this crate converts between Python objects and the engine's requests and events.

mod aio;
mod core;
mod errors;
mod llm;
mod outputs;
mod params;
mod record;
mod stream;
mod wait;

use pyo3::prelude::*;

#[pymodule]
fn _everett(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<llm::Llm>()?;
    m.add_class::<aio::AsyncLlm>()?;
    m.add_class::<aio::AsyncStream>()?;
    m.add_class::<params::SamplingParams>()?;
    m.add_class::<outputs::RequestOutput>()?;
    m.add_class::<outputs::CompletionOutput>()?;
    m.add_class::<outputs::Logprob>()?;
    m.add_class::<stream::Stream>()?;
    m.add_class::<record::Record>()?;
    m.add("EverettError", m.py().get_type::<errors::EverettError>())?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}

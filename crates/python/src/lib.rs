//! The `everett` Python package's native module (`everett._everett`): the engine in-process
//! through PyO3. `LLM` (vLLM's offline API) holds one engine thread; everything else is the
//! parameters and results it exchanges (`AsyncLLM` is Python, in `everett/_aio.py`, over `LLM`). No engine code lives
//! here: this crate converts between Python objects and the engine's requests and events.

mod core;
mod errors;
mod http;
mod job;
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
    m.add_class::<job::Job>()?;
    m.add_class::<params::SamplingParams>()?;
    m.add_class::<outputs::RequestOutput>()?;
    m.add_class::<outputs::CompletionOutput>()?;
    m.add_class::<outputs::Logprob>()?;
    m.add_class::<stream::Stream>()?;
    m.add_class::<record::Record>()?;
    m.add_class::<http::HttpApp>()?;
    m.add_class::<http::HttpBody>()?;
    m.add("EverettError", m.py().get_type::<errors::EverettError>())?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}

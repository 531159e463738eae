//! `everett.AsyncLLM`: the same engine for asyncio programs. Its methods return awaitables
//! (tokio futures bridged to asyncio), so awaiting a result never blocks the event loop and
//! any number of requests are in flight on one loop thread. Cancelling an awaitable (a task's
//! `cancel()`, a timeout) drops its stream, which cancels the request in the engine.

use crate::core::{Core, LoadOptions, Prompt};
use crate::errors::{to_py, EverettError};
use crate::llm::{params_for, ParamsArg};
use crate::outputs::{Collector, RequestOutput};
use crate::params::SamplingParams;
use everett_engine::engine::{Event, Events};
use everett_engine::tokenizer::Tokenizer;
use pyo3::exceptions::PyStopAsyncIteration;
use pyo3::prelude::*;
use pyo3_async_runtimes::tokio::future_into_py;
use std::path::PathBuf;
use std::sync::Arc;

/// Runs one request's stream to its end.
async fn finish(
    tok: Arc<Tokenizer>,
    mut c: Collector,
    mut events: Events,
) -> PyResult<RequestOutput> {
    while let Some(e) = events.recv().await {
        if let Event::Error(e) = e {
            return Err(to_py(e));
        }
        c.absorb(&tok, &e);
    }
    if !c.finished() {
        return Err(EverettError::new_err(format!(
            "request {} ended unfinished",
            c.request_id
        )));
    }
    Ok(c.output())
}

/// A model loaded in this process, for asyncio.
#[pyclass(module = "everett", name = "AsyncLLM", frozen)]
pub struct AsyncLlm {
    core: Arc<Core>,
}

#[pymethods]
impl AsyncLlm {
    #[new]
    #[pyo3(signature = (model=None, *, threads=None, kv_tokens=16384, max_running=64, kv_type="f16"))]
    fn new(
        py: Python<'_>,
        model: Option<PathBuf>,
        threads: Option<i64>,
        kv_tokens: i64,
        max_running: i64,
        kv_type: &str,
    ) -> PyResult<Self> {
        let o = LoadOptions::new(model, threads, kv_tokens, max_running, kv_type)?;
        Core::load(py, o).map(|core| Self {
            core: Arc::new(core),
        })
    }

    /// Awaitable `RequestOutput`: the completion of one prompt (a str or token ids).
    #[pyo3(signature = (prompt, params=None))]
    fn generate<'py>(
        &self,
        py: Python<'py>,
        prompt: Prompt,
        params: Option<SamplingParams>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let (text, ids) = self.core.prompt_ids(prompt)?;
        let (c, events) = self.core.start(text, ids, &params.unwrap_or_default())?;
        future_into_py(py, finish(self.core.tok.clone(), c, events))
    }

    /// An async iterator of `RequestOutput` deltas, as `LLM.stream`.
    #[pyo3(signature = (prompt, params=None))]
    fn stream(&self, prompt: Prompt, params: Option<SamplingParams>) -> PyResult<AsyncStream> {
        let (text, ids) = self.core.prompt_ids(prompt)?;
        let (c, events) = self.core.start(text, ids, &params.unwrap_or_default())?;
        Ok(AsyncStream {
            tok: self.core.tok.clone(),
            state: Arc::new(tokio::sync::Mutex::new((c, Some(events)))),
        })
    }

    /// Awaitable `RequestOutput`: the answer to one conversation through the chat template.
    #[pyo3(signature = (messages, params=None, *, tools=None))]
    fn chat<'py>(
        &self,
        py: Python<'py>,
        messages: &Bound<'py, PyAny>,
        params: Option<SamplingParams>,
        tools: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let mut prompts = self.core.chat_prompts(py, messages, tools)?;
        if prompts.len() != 1 {
            return Err(crate::errors::bad(
                "messages",
                "AsyncLLM.chat takes one conversation",
            ));
        }
        let (text, ids) = prompts.remove(0);
        let sp = params_for(params.map(ParamsArg::One), 1)?.remove(0);
        let (c, events) = self.core.start(Some(text), ids, &sp)?;
        future_into_py(py, finish(self.core.tok.clone(), c, events))
    }

    /// Token ids of `text` (with the model's BOS when `add_special_tokens`).
    #[pyo3(signature = (text, add_special_tokens=true))]
    fn tokenize(&self, text: &str, add_special_tokens: bool) -> Vec<u32> {
        self.core.tok.encode(text, add_special_tokens, false)
    }

    /// The engine's counters (a dict; see the README).
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, pyo3::types::PyDict>> {
        self.core.stats(py)
    }

    /// Stops the engine.
    fn close(&self, py: Python<'_>) {
        py.detach(|| self.core.close());
    }
}

type StreamState = Arc<tokio::sync::Mutex<(Collector, Option<Events>)>>;

/// One request's deltas for `async for`.
#[pyclass(module = "everett", frozen)]
pub struct AsyncStream {
    tok: Arc<Tokenizer>,
    state: StreamState,
}

#[pymethods]
impl AsyncStream {
    fn __aiter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __anext__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let (tok, state) = (self.tok.clone(), self.state.clone());
        future_into_py(py, async move {
            let mut guard = state.lock().await;
            let (c, events) = &mut *guard;
            while let Some(ev) = events.as_mut() {
                match ev.recv().await {
                    Some(Event::Error(e)) => {
                        *events = None;
                        return Err(to_py(e));
                    }
                    Some(e) => {
                        if let Some(delta) = c.absorb(&tok, &e) {
                            return Ok(c.with_outputs(vec![delta]));
                        }
                    }
                    None => *events = None,
                }
            }
            Err(PyStopAsyncIteration::new_err(()))
        })
    }

    /// Cancels the request.
    fn close(&self) {
        if let Ok(mut g) = self.state.try_lock() {
            g.1 = None;
        }
    }
}

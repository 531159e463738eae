//! `LLM.stream`'s iterator: each `next()` waits (GIL released, Ctrl-C honoured) for the
//! request's next event and yields it as a `RequestOutput` delta. Closing it, or dropping it,
//! cancels the request.

use crate::core::Core;
use crate::errors::{to_py, EverettError};
use crate::outputs::{Collector, RequestOutput};
use crate::wait::Waiter;
use everett_engine::engine::{Event, Events};
use pyo3::prelude::*;
use std::sync::Arc;

/// An iterator of one request's deltas.
#[pyclass(module = "everett")]
pub struct Stream {
    core: Arc<Core>,
    collector: Collector,
    events: Option<Events>,
    waiter: Waiter,
}

impl Stream {
    pub fn new(core: Arc<Core>, collector: Collector, events: Events) -> PyResult<Self> {
        Ok(Self {
            core,
            collector,
            events: Some(events),
            waiter: Waiter::new()?,
        })
    }
}

#[pymethods]
impl Stream {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&mut self, py: Python<'_>) -> PyResult<Option<RequestOutput>> {
        while let Some(events) = self.events.as_mut() {
            match self.waiter.next(py, events)? {
                Some(Event::Error(e)) => {
                    self.events = None;
                    return Err(to_py(e));
                }
                Some(e) => {
                    if let Some(delta) = self.collector.absorb(&self.core.tok, &e) {
                        return Ok(Some(self.collector.with_outputs(vec![delta])));
                    }
                }
                None => {
                    self.events = None;
                    if !self.collector.finished() {
                        return Err(EverettError::new_err(format!(
                            "request {} ended unfinished",
                            self.collector.request_id
                        )));
                    }
                }
            }
        }
        Ok(None)
    }

    /// Everything produced so far, whole.
    fn output(&self) -> RequestOutput {
        self.collector.output()
    }

    /// Cancels the request (nothing more is yielded).
    fn close(&mut self) {
        self.events = None;
    }
}

//! `LLM.stream`'s iterator: each `next()` waits (GIL released, Ctrl-C honoured) for the
//! request's next event and yields it as a `RequestOutput` delta. `close()`, from any thread,
//! cancels the request (a `next()` waiting in another thread ends with an error); dropping the
//! iterator cancels it too.

use crate::core::Core;
use crate::errors::{to_py, EverettError};
use crate::outputs::{Collector, RequestOutput};
use crate::wait::Waiter;
use everett_engine::engine::{Event, Events};
use pyo3::prelude::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

struct State {
    collector: Collector,
    events: Option<Events>,
    waiter: Waiter,
}

/// An iterator of one request's deltas.
#[pyclass(module = "everett", frozen)]
pub struct Stream {
    core: Arc<Core>,
    state: Mutex<State>,
    cancel: Arc<AtomicBool>,
}

impl Stream {
    pub fn new(core: Arc<Core>, collector: Collector, events: Events) -> PyResult<Self> {
        let waiter = Waiter::new()?;
        let cancel = waiter.cancel.clone();
        Ok(Self {
            core,
            state: Mutex::new(State {
                collector,
                events: Some(events),
                waiter,
            }),
            cancel,
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[pymethods]
impl Stream {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Option<RequestOutput>> {
        self.next_delta(py)
    }

    /// The next delta, `None` at the end (what `__next__` yields, for callers that cannot
    /// take `StopIteration`, such as an executor's future).
    fn next_delta(&self, py: Python<'_>) -> PyResult<Option<RequestOutput>> {
        let mut guard = self.state();
        let st = &mut *guard;
        while let Some(events) = st.events.as_mut() {
            let next = st.waiter.next(py, events);
            match next {
                Err(e) => {
                    st.events = None;
                    return Err(e);
                }
                Ok(Some(Event::Error(e))) => {
                    st.events = None;
                    return Err(to_py(e));
                }
                Ok(Some(e)) => {
                    if let Some(delta) = st.collector.absorb(&self.core.tok, &e) {
                        return Ok(Some(st.collector.with_outputs(vec![delta])));
                    }
                }
                Ok(None) => {
                    st.events = None;
                    if !st.collector.finished() {
                        return Err(EverettError::new_err(format!(
                            "request {} ended unfinished",
                            st.collector.request_id
                        )));
                    }
                }
            }
        }
        Ok(None)
    }

    /// Everything produced so far, whole.
    fn output(&self) -> RequestOutput {
        self.state().collector.output()
    }

    /// Cancels the request (nothing more is yielded).
    fn close(&self) {
        self.cancel.store(true, Ordering::Relaxed);
        if let Ok(mut st) = self.state.try_lock() {
            st.events = None;
        }
    }
}

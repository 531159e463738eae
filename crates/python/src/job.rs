//! `LLM.submit`: a request already in the engine, to be waited for later (`Job.wait`, from any
//! thread, with the GIL released) or cancelled from another thread (`Job.cancel`). `AsyncLLM`
//! awaits jobs on a pool of Python threads, so that no thread of ours ever calls into Python.

use crate::core::Core;
use crate::errors::EverettError;
use crate::llm::collect;
use crate::outputs::{Collector, RequestOutput};
use crate::wait::Waiter;
use everett_engine::engine::Events;
use pyo3::prelude::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// A submitted generation.
#[pyclass(module = "everett", frozen)]
pub struct Job {
    core: Arc<Core>,
    run: Mutex<Option<(Collector, Events)>>,
    cancel: Arc<AtomicBool>,
}

impl Job {
    pub fn new(core: Arc<Core>, collector: Collector, events: Events) -> Self {
        Self {
            core,
            run: Mutex::new(Some((collector, events))),
            cancel: Arc::default(),
        }
    }
}

#[pymethods]
impl Job {
    /// Waits for the whole result (once); Ctrl-C or `cancel()` end the wait and the request.
    fn wait(&self, py: Python<'_>) -> PyResult<RequestOutput> {
        let taken = self.run.lock().unwrap_or_else(|e| e.into_inner()).take();
        let Some((mut c, mut events)) = taken else {
            return Err(EverettError::new_err("this job was already waited for"));
        };
        let mut waiter = Waiter::new()?;
        waiter.cancel = self.cancel.clone();
        collect(py, &waiter, &self.core, &mut c, &mut events)?;
        Ok(c.output())
    }

    /// Cancels the request: a wait in progress ends with an error, and the engine drops it.
    fn cancel(&self) {
        self.cancel.store(true, Ordering::Relaxed);
        // Not waited for yet: dropping the stream cancels it now.
        if let Ok(mut run) = self.run.try_lock() {
            run.take();
        }
    }
}

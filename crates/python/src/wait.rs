//! Waiting for engine events from Python without holding the GIL: other Python threads run (and
//! submit their own requests, which join the same forward passes) while one waits. Every wait
//! returns to Python at least every `TICK` to run its signal handlers, so Ctrl-C raises
//! `KeyboardInterrupt` in the waiting thread; the caller then drops its streams, which cancels
//! their requests at the engine's next step.
//!
//! A `Waiter` drives its timer on the waiting thread itself (a current-thread runtime), so a
//! wait wakes no other thread: on a machine whose cores all run the engine's compute threads,
//! every extra thread woken per token would steal time from a forward pass.

use everett_engine::engine::{Event, Events};
use pyo3::prelude::*;
use std::time::Duration;
use tokio::runtime::Runtime;
use tokio::sync::mpsc::error::TryRecvError;

/// Longest a wait goes without looking at Python's signals.
const TICK: Duration = Duration::from_millis(50);

/// Waits on event streams from one Python thread at a time.
pub struct Waiter {
    rt: Runtime,
}

impl Waiter {
    pub fn new() -> PyResult<Self> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .map_err(|e| crate::errors::EverettError::new_err(format!("a timer runtime: {e}")))?;
        Ok(Self { rt })
    }

    /// The next event of `events` (`None` once the stream has ended), or the exception a
    /// signal handler raised while waiting.
    pub fn next(&self, py: Python<'_>, events: &mut Events) -> PyResult<Option<Event>> {
        loop {
            py.check_signals()?;
            match events.try_recv() {
                Ok(e) => return Ok(Some(e)),
                Err(TryRecvError::Disconnected) => return Ok(None),
                Err(TryRecvError::Empty) => {}
            }
            // The timer must be made inside the runtime, so the future is built there.
            let got = py.detach(|| {
                self.rt
                    .block_on(async { tokio::time::timeout(TICK, events.recv()).await })
            });
            if let Ok(e) = got {
                return Ok(e);
            }
        }
    }
}

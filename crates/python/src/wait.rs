//! Waiting for engine events from Python without holding the GIL: other Python threads run (and
//! submit their own requests, which join the same forward passes) while one waits. Every wait
//! returns to Python at least every `TICK` to run its signal handlers, so Ctrl-C raises
//! `KeyboardInterrupt` in the waiting thread; the caller then drops its streams, which cancels
//! their requests at the engine's next step.

use everett_engine::engine::{Event, Events};
use pyo3::prelude::*;
use std::time::Duration;
use tokio::sync::mpsc::error::TryRecvError;

/// Longest a wait goes without looking at Python's signals.
const TICK: Duration = Duration::from_millis(50);

/// The next event of `events` (`None` once the stream has ended), or the exception a signal
/// handler raised while waiting.
pub fn next_event(py: Python<'_>, events: &mut Events) -> PyResult<Option<Event>> {
    loop {
        py.check_signals()?;
        match events.try_recv() {
            Ok(e) => return Ok(Some(e)),
            Err(TryRecvError::Disconnected) => return Ok(None),
            Err(TryRecvError::Empty) => {}
        }
        let rt = pyo3_async_runtimes::tokio::get_runtime();
        // The timer must be made inside the runtime, so the future is built there.
        let got =
            py.detach(|| rt.block_on(async { tokio::time::timeout(TICK, events.recv()).await }));
        if let Ok(e) = got {
            return Ok(e);
        }
    }
}

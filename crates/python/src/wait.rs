//! Waiting for engine events from Python without holding the GIL: other Python threads run (and
//! submit their own requests, which join the same forward passes) while one waits. Every wait
//! returns to Python at least every `TICK` to run its signal handlers, so Ctrl-C raises
//! `KeyboardInterrupt` in the waiting thread, and to look at its cancel flag (set by another
//! thread: an asyncio task that was cancelled); the caller then drops its streams, which cancels
//! their requests at the engine's next step.
//!
//! A `Waiter` drives its timer on the waiting thread itself (a current-thread runtime), so a
//! wait wakes no other thread: on a machine whose cores all run the engine's compute threads,
//! every extra thread woken per token would steal time from a forward pass. No thread of ours
//! ever calls into Python: waits run on the caller's (Python) thread, so nothing touches the
//! interpreter while it shuts down.

use crate::errors::EverettError;
use everett_engine::engine::{Event, Events};
use pyo3::prelude::*;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::runtime::Runtime;
use tokio::sync::mpsc::error::TryRecvError;

/// Longest a wait goes without looking at Python's signals and its cancel flag.
const TICK: Duration = Duration::from_millis(50);

/// Waits on event streams from one Python thread at a time.
pub struct Waiter {
    rt: Runtime,
    /// Set from any thread to end the wait with an error.
    pub cancel: Arc<AtomicBool>,
}

impl Waiter {
    pub fn new() -> PyResult<Self> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .map_err(|e| EverettError::new_err(format!("a timer runtime: {e}")))?;
        Ok(Self {
            rt,
            cancel: Arc::default(),
        })
    }

    fn check(&self, py: Python<'_>) -> PyResult<()> {
        py.check_signals()?;
        if self.cancel.load(Ordering::Relaxed) {
            return Err(EverettError::new_err("the request was cancelled"));
        }
        Ok(())
    }

    /// The next event of `events` (`None` once the stream has ended), or the exception a
    /// signal handler raised while waiting, or a cancellation.
    pub fn next(&self, py: Python<'_>, events: &mut Events) -> PyResult<Option<Event>> {
        loop {
            self.check(py)?;
            match events.try_recv() {
                Ok(e) => return Ok(Some(e)),
                Err(TryRecvError::Disconnected) => return Ok(None),
                Err(TryRecvError::Empty) => {}
            }
            if let Some(e) = self.tick(py, events.recv()) {
                return Ok(e);
            }
        }
    }

    /// `fut`'s output, waiting in ticks with the GIL released (`fut` is polled again after
    /// each tick, so it must be restartable: a receive, not a one-shot computation).
    pub fn tick<F: Future + Send>(&self, py: Python<'_>, fut: F) -> Option<F::Output>
    where
        F::Output: Send,
    {
        // The timer must be made inside the runtime, so the future is built there.
        py.detach(|| {
            self.rt
                .block_on(async { tokio::time::timeout(TICK, fut).await })
                .ok()
        })
    }

    /// Runs `fut` to its end on this thread with the GIL released, checking signals and the
    /// cancel flag every tick.
    pub fn run<F: Future + Send>(&self, py: Python<'_>, fut: F) -> PyResult<F::Output>
    where
        F::Output: Send,
    {
        let mut fut = std::pin::pin!(fut);
        loop {
            self.check(py)?;
            if let Some(v) = self.tick(py, fut.as_mut()) {
                return Ok(v);
            }
        }
    }
}

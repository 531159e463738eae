//! The engine on its own thread. The thread owns the `Engine` (model, KV cache, scheduler);
//! front ends hold cloneable `EngineHandle`s and talk to it only through channels: `submit`
//! returns at once with the request's id and its event stream, `abort` and `stats` wait for the
//! thread's answer. Dropping a stream cancels its request at the next step.
//!
//! Shutdown (`EngineHandle::shutdown(grace)`): admission stops at once (new submissions get
//! `ShuttingDown`), queued and running requests keep stepping for at most `grace`, and whatever
//! is left then ends with `Error::ShuttingDown`; the thread exits within `grace` plus one step.

use super::request::{Event, EventSender, Events, RequestId, Task};
use super::{Engine, EngineStats, Runner};
use crate::error::{Error, Result};
use crate::tokenizer::Tokenizer;
use std::ops::Deref;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

enum Command {
    Submit(RequestId, Task, EventSender),
    Abort(RequestId, mpsc::Sender<Result<()>>),
    Stats(mpsc::Sender<EngineStats>),
    Shutdown(Duration),
}

/// A cheap, cloneable way to talk to the engine thread.
#[derive(Clone)]
pub struct EngineHandle {
    tx: UnboundedSender<Command>,
    ids: Arc<AtomicU64>,
}

impl EngineHandle {
    /// Queues `task`; validation errors arrive as the stream's only event.
    pub fn submit(&self, task: Task) -> (RequestId, Events) {
        let id = RequestId(self.ids.fetch_add(1, Ordering::Relaxed));
        let (tx, rx) = unbounded_channel();
        if let Err(tokio::sync::mpsc::error::SendError(Command::Submit(_, _, tx))) =
            self.tx.send(Command::Submit(id, task, tx))
        {
            let _ = tx.send(Event::Error(Error::ShuttingDown));
        }
        (id, rx)
    }

    /// Cancels a request; `UnknownRequest` for an id that is not waiting or running.
    pub fn abort(&self, id: RequestId) -> Result<()> {
        let (tx, rx) = mpsc::channel();
        self.tx
            .send(Command::Abort(id, tx))
            .map_err(|_| Error::ShuttingDown)?;
        rx.recv().map_err(|_| Error::ShuttingDown)?
    }

    pub fn stats(&self) -> Result<EngineStats> {
        let (tx, rx) = mpsc::channel();
        self.tx
            .send(Command::Stats(tx))
            .map_err(|_| Error::ShuttingDown)?;
        rx.recv().map_err(|_| Error::ShuttingDown)
    }

    /// Stops admission now and the thread after at most `grace` (see the module header).
    pub fn shutdown(&self, grace: Duration) {
        let _ = self.tx.send(Command::Shutdown(grace));
    }
}

/// Starts `engine` on a thread of its own.
pub fn spawn<M, T>(engine: Engine<M, T>) -> (EngineHandle, JoinHandle<()>)
where
    M: Runner + Send + 'static,
    T: Deref<Target = Tokenizer> + Send + 'static,
{
    let (tx, rx) = unbounded_channel();
    let handle = EngineHandle {
        tx,
        ids: engine.ids(),
    };
    let join = std::thread::Builder::new()
        .name("everett-engine".into())
        .spawn(move || run(engine, rx))
        .expect("spawning the engine thread");
    (handle, join)
}

fn run<M: Runner, T: Deref<Target = Tokenizer>>(
    mut engine: Engine<M, T>,
    mut rx: UnboundedReceiver<Command>,
) {
    let mut deadline: Option<Instant> = None;
    loop {
        // Block only when there is nothing to step.
        let first = if engine.has_work() || deadline.is_some() {
            rx.try_recv().ok()
        } else {
            match rx.blocking_recv() {
                Some(c) => Some(c),
                None => return, // every handle is gone and nothing runs
            }
        };
        let mut next = first;
        while let Some(cmd) = next {
            if let Some(grace) = handle_command(&mut engine, cmd) {
                engine.stop_accepting();
                let d = Instant::now() + grace;
                deadline = Some(deadline.map_or(d, |old| old.min(d)));
            }
            next = rx.try_recv().ok();
        }
        if let Some(d) = deadline {
            if !engine.has_work() {
                return;
            }
            if Instant::now() >= d {
                engine.abort_all(|| Error::ShuttingDown);
                return;
            }
        }
        if engine.has_work() {
            // A failed forward has already failed its requests; the engine goes on.
            let _ = engine.step();
        }
    }
}

/// Carries out a command; returns the grace period of a shutdown.
fn handle_command<M: Runner, T: Deref<Target = Tokenizer>>(
    engine: &mut Engine<M, T>,
    cmd: Command,
) -> Option<Duration> {
    match cmd {
        Command::Submit(id, task, tx) => {
            if let Err(e) = engine.submit_as(id, task, tx.clone()) {
                let _ = tx.send(Event::Error(e));
            }
        }
        Command::Abort(id, reply) => {
            let _ = reply.send(engine.abort(id));
        }
        Command::Stats(reply) => {
            let _ = reply.send(engine.stats());
        }
        Command::Shutdown(grace) => return Some(grace),
    }
    None
}

//! The engine on its own thread. The thread owns the `Engine` (model, KV cache, scheduler);
//! front ends hold cloneable `EngineHandle`s and talk to it only through channels: `submit`
//! returns at once with the request's id and its event stream, `abort` and `stats` wait for the
//! thread's answer. Dropping a stream cancels its request at the next step.
//!
//! Failure boundary: a panic inside a step (or while taking a command) is caught on the thread.
//! The engine is rebuilt in place (`Engine::recover`: same weights, empty KV cache); the
//! requests it had admitted end with `Error::Internal`, the panic is logged, and serving goes
//! on. `EngineHandle::health` says `Rebuilding` meanwhile and `Failed` if rebuilding itself
//! panicked (then the thread ends and every later request gets `ShuttingDown`).
//!
//! Shutdown (`EngineHandle::shutdown(grace)`): admission stops at once (new submissions get
//! `ShuttingDown`), queued and running requests keep stepping for at most `grace`, and whatever
//! is left then ends with `Error::ShuttingDown`; the thread exits within `grace` plus one step.

use super::{Engine, EngineStats, Runner};
use crate::error::{Error, Result};
use crate::request::{Event, EventSender, Events, RequestId, Task};
use crate::scheduler::Admission;
use crate::tokenizer::Tokenizer;
use std::any::Any;
use std::ops::Deref;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

enum Command {
    Submit(RequestId, Box<Task>, Admission, EventSender),
    Abort(RequestId, mpsc::Sender<Result<()>>),
    Stats(mpsc::Sender<EngineStats>),
    Shutdown(Duration),
}

/// Whether the engine thread can take work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    Ok,
    /// A step panicked (the message says how); the engine is being rebuilt.
    Rebuilding(String),
    /// Rebuilding failed too; the engine thread has ended.
    Failed(String),
}

/// A cheap, cloneable way to talk to the engine thread.
#[derive(Clone)]
pub struct EngineHandle {
    tx: UnboundedSender<Command>,
    ids: Arc<AtomicU64>,
    health: Arc<Mutex<Health>>,
}

impl EngineHandle {
    /// Queues `task`; validation errors arrive as the stream's only event.
    pub fn submit(&self, task: Task) -> (RequestId, Events) {
        self.submit_with(task, Admission::default())
    }

    /// As `submit`, queued with a priority and a group (see `scheduler`).
    pub fn submit_with(&self, task: Task, adm: Admission) -> (RequestId, Events) {
        let id = RequestId(self.ids.fetch_add(1, Ordering::Relaxed));
        let (tx, rx) = unbounded_channel();
        if let Err(tokio::sync::mpsc::error::SendError(Command::Submit(_, _, _, tx))) =
            self.tx.send(Command::Submit(id, Box::new(task), adm, tx))
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

    /// The engine thread's state (`Failed` also when the thread has ended some other way).
    pub fn health(&self) -> Health {
        let h = lock(&self.health).clone();
        if h == Health::Ok && self.tx.is_closed() {
            return Health::Failed("the engine thread has stopped".into());
        }
        h
    }
}

/// The health cell; it holds no invariant a panic could break, so a poisoned lock is read as is.
fn lock(h: &Mutex<Health>) -> std::sync::MutexGuard<'_, Health> {
    h.lock().unwrap_or_else(|e| e.into_inner())
}

/// The text of a panic's payload.
fn panic_message(p: &(dyn Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".into()
    }
}

/// Starts `engine` on a thread of its own.
pub fn spawn<M, T>(engine: Engine<M, T>) -> (EngineHandle, JoinHandle<()>)
where
    M: Runner + Send + 'static,
    T: Deref<Target = Tokenizer> + Send + 'static,
{
    let (tx, rx) = unbounded_channel();
    let health = Arc::new(Mutex::new(Health::Ok));
    let handle = EngineHandle {
        tx,
        ids: engine.ids(),
        health: health.clone(),
    };
    let join = std::thread::Builder::new()
        .name("everett-engine".into())
        .spawn(move || run(engine, rx, &health))
        .expect("spawning the engine thread");
    (handle, join)
}

fn run<M: Runner, T: Deref<Target = Tokenizer>>(
    mut engine: Engine<M, T>,
    mut rx: UnboundedReceiver<Command>,
    health: &Mutex<Health>,
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
            // A submission that panics still gets its answer: an internal error.
            let submitter = match &cmd {
                Command::Submit(id, _, _, tx) => Some((*id, tx.clone())),
                _ => None,
            };
            match catch_unwind(AssertUnwindSafe(|| handle_command(&mut engine, cmd))) {
                Ok(Some(grace)) => {
                    engine.stop_accepting();
                    let d = Instant::now() + grace;
                    deadline = Some(deadline.map_or(d, |old| old.min(d)));
                }
                Ok(None) => {}
                Err(p) => {
                    if let Some((id, tx)) = submitter {
                        let cause = panic_message(&*p);
                        let e = format!("the engine failed taking request {id} ({cause})");
                        let _ = tx.send(Event::Error(Error::Internal(e)));
                    }
                    if !rebuild(&mut engine, &*p, health) {
                        return;
                    }
                }
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
            if let Err(p) = catch_unwind(AssertUnwindSafe(|| engine.step())) {
                if !rebuild(&mut engine, &*p, health) {
                    return;
                }
            }
        }
    }
}

/// Rebuilds `engine` after the panic `p`; false (and `Failed`) when rebuilding panicked too.
fn rebuild<M: Runner, T: Deref<Target = Tokenizer>>(
    engine: &mut Engine<M, T>,
    p: &(dyn Any + Send),
    health: &Mutex<Health>,
) -> bool {
    let cause = panic_message(p);
    *lock(health) = Health::Rebuilding(cause.clone());
    tracing::error!(cause = %cause, "engine step panicked; rebuilding the engine");
    match catch_unwind(AssertUnwindSafe(|| engine.recover(&cause))) {
        Ok(failed) => {
            tracing::warn!(failed = ?failed, "engine rebuilt; requests in flight got an internal error");
            *lock(health) = Health::Ok;
            true
        }
        Err(p2) => {
            let why = format!("{cause}; then rebuilding failed: {}", panic_message(&*p2));
            tracing::error!(cause = %why, "the engine cannot be rebuilt; it stops");
            *lock(health) = Health::Failed(why);
            false
        }
    }
}

/// Carries out a command; returns the grace period of a shutdown.
fn handle_command<M: Runner, T: Deref<Target = Tokenizer>>(
    engine: &mut Engine<M, T>,
    cmd: Command,
) -> Option<Duration> {
    match cmd {
        Command::Submit(id, task, adm, tx) => {
            if let Err(e) = engine.submit_as(id, *task, adm, tx.clone()) {
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

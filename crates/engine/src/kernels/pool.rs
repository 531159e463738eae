//! A fixed pool of worker threads for data-parallel kernels. `run(f)` calls `f(i, n)` on every
//! thread i of n (the caller is thread 0) and returns when all are done. Workers spin briefly
//! before sleeping so that the hundreds of short parallel sections in one decode step do not pay
//! a wake-up each; nothing is allocated per call. It does not schedule tasks or steal work: the
//! kernels split their work evenly themselves.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

type Job = dyn Fn(usize, usize) + Sync;

struct Shared {
    /// The current job, valid while `pending > 0` for this generation.
    job: Mutex<Option<&'static Job>>,
    generation: AtomicUsize,
    pending: AtomicUsize,
    wake: Condvar,
    shutdown: AtomicBool,
}

/// The pool. Dropping it stops the workers.
pub struct ThreadPool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
}

const SPIN: usize = 200_000;

impl ThreadPool {
    /// A pool of `threads` threads in total (the caller counts as one).
    pub fn new(threads: usize) -> Self {
        let threads = threads.max(1);
        let shared = Arc::new(Shared {
            job: Mutex::new(None),
            generation: AtomicUsize::new(0),
            pending: AtomicUsize::new(0),
            wake: Condvar::new(),
            shutdown: AtomicBool::new(false),
        });
        let workers = (1..threads)
            .map(|i| {
                let s = shared.clone();
                std::thread::Builder::new()
                    .name(format!("everett-worker-{i}"))
                    .spawn(move || worker(s, i, threads))
                    .expect("spawn worker thread")
            })
            .collect();
        Self { shared, workers }
    }

    pub fn threads(&self) -> usize {
        self.workers.len() + 1
    }

    /// Runs `f(thread_index, thread_count)` on every thread and waits for all of them.
    pub fn run<'f>(&self, f: &'f (dyn Fn(usize, usize) + Sync + 'f)) {
        let n = self.threads();
        if n == 1 {
            f(0, 1);
            return;
        }
        // SAFETY: the reference outlives every use: we wait below until all workers finished it
        // and cleared their claim (`pending` reaches 0) before returning.
        let job: &'static Job = unsafe {
            std::mem::transmute::<&'f (dyn Fn(usize, usize) + Sync + 'f), &'static Job>(f)
        };
        *self.shared.job.lock().unwrap_or_else(|e| e.into_inner()) = Some(job);
        self.shared.pending.store(n - 1, Ordering::SeqCst);
        self.shared.generation.fetch_add(1, Ordering::SeqCst);
        {
            let _g = self.shared.job.lock().unwrap_or_else(|e| e.into_inner());
            self.shared.wake.notify_all();
        }
        f(0, n);
        while self.shared.pending.load(Ordering::Acquire) != 0 {
            std::hint::spin_loop();
        }
    }
}

fn worker(s: Arc<Shared>, index: usize, n: usize) {
    let mut seen = 0usize;
    loop {
        let mut spins = 0;
        while s.generation.load(Ordering::Acquire) == seen && spins < SPIN {
            std::hint::spin_loop();
            spins += 1;
        }
        let job = {
            let mut g = s.job.lock().unwrap_or_else(|e| e.into_inner());
            while s.generation.load(Ordering::Acquire) == seen {
                if s.shutdown.load(Ordering::Acquire) {
                    return;
                }
                g = s.wake.wait(g).unwrap_or_else(|e| e.into_inner());
            }
            seen = s.generation.load(Ordering::Acquire);
            *g
        };
        if s.shutdown.load(Ordering::Acquire) {
            return;
        }
        if let Some(job) = job {
            job(index, n);
        }
        s.pending.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::SeqCst);
        self.shared.generation.fetch_add(1, Ordering::SeqCst);
        {
            let _g = self.shared.job.lock().unwrap_or_else(|e| e.into_inner());
            self.shared.wake.notify_all();
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

/// Below this many rows, row-wise work runs on the calling thread: waking the pool would cost
/// more than it saves.
pub const PAR_ROWS: usize = 8;

impl ThreadPool {
    /// Calls `f(row, data_row)` for every `row_len`-long row of `data`, spread over the pool
    /// when there are at least `PAR_ROWS` rows. Rows are disjoint, so each is written by exactly one thread.
    pub fn for_rows<T: Send>(
        &self,
        data: &mut [T],
        row_len: usize,
        f: &(dyn Fn(usize, &mut [T]) + Sync),
    ) {
        let rows = data.len() / row_len.max(1);
        if rows < PAR_ROWS || self.threads() == 1 {
            data.chunks_exact_mut(row_len)
                .enumerate()
                .for_each(|(r, row)| f(r, row));
            return;
        }
        let base = RowsPtr(data.as_mut_ptr());
        self.run(&|i, n| {
            for r in split(rows, i, n) {
                // SAFETY: thread i owns rows split(rows, i, n), disjoint from every other
                // thread's; the rows lie inside `data`, which outlives `run`.
                let row =
                    unsafe { std::slice::from_raw_parts_mut(base.get().add(r * row_len), row_len) };
                f(r, row);
            }
        });
    }
}

struct RowsPtr<T>(*mut T);
// SAFETY: only used to hand disjoint rows to the pool's threads (see `for_rows`).
unsafe impl<T: Send> Send for RowsPtr<T> {}
unsafe impl<T: Send> Sync for RowsPtr<T> {}

impl<T> RowsPtr<T> {
    fn get(&self) -> *mut T {
        self.0
    }
}

/// The half-open range of `total` items that thread `i` of `n` owns (contiguous, balanced).
pub fn split(total: usize, i: usize, n: usize) -> std::ops::Range<usize> {
    let base = total / n;
    let extra = total % n;
    let start = i * base + i.min(extra);
    start..start + base + usize::from(i < extra)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_thread_runs_once_per_call() {
        let pool = ThreadPool::new(3);
        let hits = AtomicUsize::new(0);
        for _ in 0..1000 {
            pool.run(&|i, n| {
                assert!(i < n);
                hits.fetch_add(1, Ordering::Relaxed);
            });
        }
        assert_eq!(hits.load(Ordering::Relaxed), 3000);
    }

    #[test]
    fn split_covers_everything_once() {
        for total in 0..50 {
            for n in 1..5 {
                let mut covered = 0;
                let mut next = 0;
                for i in 0..n {
                    let r = split(total, i, n);
                    assert_eq!(r.start, next);
                    next = r.end;
                    covered += r.len();
                }
                assert_eq!(covered, total);
            }
        }
    }
}

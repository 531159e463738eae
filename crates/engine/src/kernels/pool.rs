//! A fixed pool of worker threads for data-parallel kernels. `run(f)` calls `f(i, n)` on every
//! thread i of n (the caller is thread 0) and returns when all are done. Workers spin briefly
//! before sleeping so that the hundreds of short parallel sections in one decode step do not pay
//! a wake-up each, and the hand-off takes no lock unless a worker sleeps; nothing is allocated
//! per call. It does not schedule tasks: kernels split their work themselves, evenly (`split`)
//! or in parts that an idle thread may finish for a slow one (`Shares`).
use super::disjoint::Disjoint;
use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

type Job = dyn Fn(usize, usize) + Sync;

struct Shared {
    /// The current job. Written by the caller of `run` only while no worker can read it (all
    /// finished the previous job: `pending` was 0); read by workers after they see the
    /// generation that published it.
    job: UnsafeCell<Option<&'static Job>>,
    generation: AtomicUsize,
    pending: AtomicUsize,
    /// Workers that gave up spinning and wait on `wake`; `run` signals only when there are any.
    sleepers: AtomicUsize,
    sleep: Mutex<()>,
    wake: Condvar,
    shutdown: AtomicBool,
    /// A job is in flight: a concurrent or nested `run` does its parts itself instead.
    busy: AtomicBool,
    /// A worker's part of the current job panicked (the worker caught it and lives on).
    panicked: AtomicBool,
}

// SAFETY: `job` is the only field that is not Sync by itself; its accesses are ordered by the
// generation/pending protocol described on the field.
unsafe impl Sync for Shared {}

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
            job: UnsafeCell::new(None),
            generation: AtomicUsize::new(0),
            pending: AtomicUsize::new(0),
            sleepers: AtomicUsize::new(0),
            sleep: Mutex::new(()),
            wake: Condvar::new(),
            shutdown: AtomicBool::new(false),
            busy: AtomicBool::new(false),
            panicked: AtomicBool::new(false),
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

    /// Runs `f(thread_index, thread_count)` on every thread and waits for all of them. Safe to
    /// call from anywhere: while the pool is busy (another thread's job, or a job calling back
    /// into its own pool) the caller runs all the parts itself, in order. A panic in any part is
    /// raised here once every thread has let go of `f`; the workers survive it.
    pub fn run<'f>(&self, f: &'f (dyn Fn(usize, usize) + Sync + 'f)) {
        let n = self.threads();
        if n == 1 || self.shared.busy.swap(true, Ordering::Acquire) {
            (0..n).for_each(|i| f(i, n));
            return;
        }
        // SAFETY: the reference outlives every use: we wait below until all workers finished it
        // and cleared their claim (`pending` reaches 0) before returning, even when `f` panics.
        let job: &'static Job = unsafe {
            std::mem::transmute::<&'f (dyn Fn(usize, usize) + Sync + 'f), &'static Job>(f)
        };
        // SAFETY: no worker reads `job` now: each finished the previous job (the last `run`
        // waited for `pending` to reach 0) and reads it again only after the increment below;
        // `busy` keeps any other caller out until we are done.
        unsafe { *self.shared.job.get() = Some(job) };
        self.shared.pending.store(n - 1, Ordering::Relaxed);
        self.shared.generation.fetch_add(1, Ordering::SeqCst);
        // A worker registers as a sleeper before its last look at `generation` (both SeqCst):
        // either it sees the new generation, or this sees it registered and wakes it.
        if self.shared.sleepers.load(Ordering::SeqCst) > 0 {
            let _g = self.shared.sleep.lock().unwrap_or_else(|e| e.into_inner());
            self.shared.wake.notify_all();
        }
        let mine = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(0, n)));
        while self.shared.pending.load(Ordering::Acquire) != 0 {
            std::hint::spin_loop();
        }
        let theirs = self.shared.panicked.swap(false, Ordering::AcqRel);
        self.shared.busy.store(false, Ordering::Release);
        if let Err(p) = mine {
            std::panic::resume_unwind(p);
        }
        assert!(!theirs, "a thread-pool worker panicked in a parallel job");
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
        if s.generation.load(Ordering::Acquire) == seen {
            let mut g = s.sleep.lock().unwrap_or_else(|e| e.into_inner());
            s.sleepers.fetch_add(1, Ordering::SeqCst);
            while s.generation.load(Ordering::SeqCst) == seen {
                g = s.wake.wait(g).unwrap_or_else(|e| e.into_inner());
            }
            s.sleepers.fetch_sub(1, Ordering::SeqCst);
        }
        seen = s.generation.load(Ordering::Acquire);
        if s.shutdown.load(Ordering::Acquire) {
            return;
        }
        // SAFETY: the generation we just saw was published after `job` was written, and the
        // job stays valid until this worker decrements `pending` below.
        if let Some(job) = unsafe { *s.job.get() } {
            // A panic stays on this side: the caller raises it once every part is done.
            let done = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(index, n)));
            if done.is_err() {
                s.panicked.store(true, Ordering::Release);
            }
        }
        s.pending.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::SeqCst);
        self.shared.generation.fetch_add(1, Ordering::SeqCst);
        {
            let _g = self.shared.sleep.lock().unwrap_or_else(|e| e.into_inner());
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
        let base = Disjoint::new(data);
        // Interleaved, not in halves: neighbouring rows often belong to one request, and some
        // requests' rows cost more (a constraint's mask), so this spreads them over threads.
        self.run(&|i, n| {
            for r in (i..rows).step_by(n.max(1)) {
                // SAFETY: thread i owns the rows r ≡ i (mod n), disjoint from every other
                // thread's.
                let row = unsafe { base.part(r * row_len, row_len) };
                f(r, row);
            }
        });
    }
}

/// The half-open range of `total` items that thread `i` of `n` owns (contiguous, balanced).
pub fn split(total: usize, i: usize, n: usize) -> std::ops::Range<usize> {
    let base = total / n;
    let extra = total % n;
    let start = i * base + i.min(extra);
    start..start + base + usize::from(i < extra)
}

/// The most threads `Shares` balances; beyond it `Shares::new` declines (callers split evenly).
const MAX_SHARE_THREADS: usize = 64;

/// One thread's part of the items: the next item from the front (low 32 bits) and the end
/// (high 32 bits), on its own cache line.
#[repr(align(64))]
struct Part(AtomicU64);

fn pack(lo: usize, hi: usize) -> u64 {
    lo as u64 | (hi as u64) << 32
}

fn unpack(v: u64) -> (usize, usize) {
    ((v & 0xffff_ffff) as usize, (v >> 32) as usize)
}

/// Items `0..total` shared out among `n` threads for one `run`: each thread starts on its own
/// contiguous part (the same as `split`) and works through it from the front in chunks; a thread
/// that finishes early then takes chunks from the back of the others' parts. One slow thread
/// thus no longer holds the rest waiting at the end of the section. Every item is handed out
/// exactly once, so results that depend only on the item are unchanged. Lives on the caller's
/// stack: nothing is allocated.
pub struct Shares {
    parts: [Part; MAX_SHARE_THREADS],
    n: usize,
    chunk: usize,
}

impl Shares {
    /// `None` when there are more threads than it balances or more items than it counts.
    pub fn new(total: usize, n: usize) -> Option<Self> {
        if n == 0 || n > MAX_SHARE_THREADS || total > u32::MAX as usize {
            return None;
        }
        let parts = std::array::from_fn(|i| {
            let r = if i < n {
                split(total, i, n)
            } else {
                total..total
            };
            Part(AtomicU64::new(pack(r.start, r.end)))
        });
        // Each part goes out in about 16 chunks: fine enough to even out the tail, coarse
        // enough that a chunk is a run of consecutive reads.
        let chunk = total.div_ceil(n * 16).clamp(1, 64);
        Some(Self { parts, n, chunk })
    }

    /// Calls `f` on every chunk that thread `t` obtains, its own part first.
    pub fn run(&self, t: usize, mut f: impl FnMut(std::ops::Range<usize>)) {
        while let Some(r) = self.take(t, true) {
            f(r);
        }
        for d in 1..self.n {
            let victim = (t + d) % self.n;
            while let Some(r) = self.take(victim, false) {
                f(r);
            }
        }
    }

    /// The next chunk of part `i`, from its front (its owner) or its back (anyone else).
    fn take(&self, i: usize, front: bool) -> Option<std::ops::Range<usize>> {
        let part = &self.parts[i].0;
        let mut cur = part.load(Ordering::Acquire);
        loop {
            let (lo, hi) = unpack(cur);
            if lo >= hi {
                return None;
            }
            let (next, range) = if front {
                let mid = (lo + self.chunk).min(hi);
                (pack(mid, hi), lo..mid)
            } else {
                let mid = hi.saturating_sub(self.chunk).max(lo);
                (pack(lo, mid), mid..hi)
            };
            match part.compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Some(range),
                Err(seen) => cur = seen,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    fn sum_of_parts(pool: &ThreadPool, total: usize) -> usize {
        let acc = AtomicUsize::new(0);
        pool.run(&|i, n| {
            let s: usize = split(total, i, n).sum();
            acc.fetch_add(s, Ordering::Relaxed);
        });
        acc.into_inner()
    }

    #[test]
    fn concurrent_and_nested_runs_do_every_part_once() {
        let pool = Arc::new(ThreadPool::new(3));
        let expect = (0..1000).sum::<usize>();
        let callers: Vec<_> = (0..4)
            .map(|_| {
                let p = pool.clone();
                std::thread::spawn(move || (0..200).all(|_| sum_of_parts(&p, 1000) == expect))
            })
            .collect();
        assert!(callers.into_iter().all(|c| c.join().unwrap()));
        // A job that calls back into its own pool runs the inner job's parts itself.
        let inner = AtomicUsize::new(0);
        pool.run(&|_, _| {
            inner.fetch_add(sum_of_parts(&pool, 1000), Ordering::Relaxed);
        });
        assert_eq!(inner.into_inner(), 3 * expect);
    }

    #[test]
    fn a_panicking_part_is_raised_to_the_caller_and_the_pool_lives_on() {
        let pool = ThreadPool::new(2);
        for bad in [0, 1] {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                pool.run(&|i, _| assert!(i != bad, "part {i} fails"));
            }));
            assert!(r.is_err(), "part {bad}'s panic reached the caller");
            assert_eq!(sum_of_parts(&pool, 100), (0..100).sum::<usize>());
        }
    }

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

    #[test]
    fn shares_hand_out_every_item_once() {
        for threads in 1..5 {
            let pool = ThreadPool::new(threads);
            for total in [0, 1, 7, 16, 100, 1000] {
                let shares = Shares::new(total, pool.threads()).unwrap();
                let seen: Vec<AtomicUsize> = (0..total).map(|_| AtomicUsize::new(0)).collect();
                pool.run(&|t, _| {
                    shares.run(t, |r| {
                        for i in r {
                            seen[i].fetch_add(1, Ordering::Relaxed);
                        }
                    })
                });
                assert!(
                    seen.iter().all(|c| c.load(Ordering::Relaxed) == 1),
                    "{threads} {total}"
                );
            }
        }
    }

    #[test]
    fn an_idle_thread_takes_over_a_slow_threads_part() {
        let shares = Shares::new(64, 2).unwrap();
        let mut took = Vec::new();
        // Thread 1 runs alone (thread 0 never starts): it does its part, then all of thread 0's.
        shares.run(1, |r| took.extend(r));
        took.sort();
        assert_eq!(took, (0..64).collect::<Vec<_>>());
        assert!(Shares::new(10, MAX_SHARE_THREADS + 1).is_none());
    }
}

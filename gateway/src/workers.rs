//! The request workers: the threads that carry out runtime requests for the
//! API (they call plugins and write the store, so they cannot run on the
//! async executor).
//!
//! First come, first served, with at most `limit` requests *computing* at
//! once. A worker that is about to wait — for a flush, a user's lock, a
//! plugin instance slot, or (later) the network — says so with
//! [`waiting`], and for that long it does not count: another worker takes
//! the next request. So a slow directory holds up only the requests that
//! use it, while the CPU work stays in arrival order on about as many
//! threads as there are cores.
//!
//! Why not tokio's blocking pool: it runs every request at once on its own
//! thread, and the kernel then shares the cores among all of them, so each
//! request takes as long as the slowest mix of its neighbours. Measured at
//! 64 concurrent flows: see `BENCHMARKS.md` ("Request workers").

use std::cell::RefCell;
use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// How long a spare worker (beyond `limit`) stays idle before it ends.
const SPARE_IDLE: Duration = Duration::from_secs(10);

type Job = Box<dyn FnOnce() + Send>;

/// A pool of request workers. Dropping it lets the workers finish the queue
/// and end.
pub struct Workers {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    /// Idle workers wait here for a job they may run.
    work: Condvar,
    /// Most requests computing at once.
    limit: usize,
    /// Most threads, computing and waiting together.
    max_threads: usize,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Job>,
    /// Workers running a job and not inside [`waiting`].
    computing: usize,
    /// Workers parked on `work`.
    idle: usize,
    /// Worker threads alive.
    threads: usize,
    shutdown: bool,
}

thread_local! {
    /// The pool this thread works for, if any (for [`waiting`]).
    static POOL: RefCell<Option<Arc<Shared>>> = const { RefCell::new(None) };
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Workers {
    /// A pool keeping at most `limit` requests computing at once, on at most
    /// `max_threads` threads (requests beyond that queue even while others
    /// wait). Threads start as needed.
    pub fn new(limit: usize, max_threads: usize) -> Workers {
        let limit = limit.max(1);
        Workers {
            shared: Arc::new(Shared {
                state: Mutex::new(State::default()),
                work: Condvar::new(),
                limit,
                max_threads: max_threads.max(limit),
            }),
        }
    }

    /// The default limit: one request computing per core.
    pub fn per_core() -> Workers {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Workers::new(cores, 512)
    }

    /// Runs `f` on a worker, in arrival order; resolves to its result, or
    /// `None` if it panicked.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Option<T> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.submit(Box::new(move || {
            if let Ok(out) = catch_unwind(AssertUnwindSafe(f)) {
                let _ = tx.send(out);
            }
        }));
        rx.await.ok()
    }

    fn submit(&self, job: Job) {
        let mut state = lock(&self.shared.state);
        state.queue.push_back(job);
        self.shared.wake_or_spawn(&mut state);
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        lock(&self.shared.state).shutdown = true;
        self.shared.work.notify_all();
    }
}

impl Shared {
    /// With a job queued and a turn free, gets a worker to take it: an idle
    /// one, or a new thread.
    fn wake_or_spawn(self: &Arc<Self>, state: &mut State) {
        if state.queue.is_empty() || state.computing >= self.limit {
            return;
        }
        if state.idle > 0 {
            self.work.notify_one();
        } else if state.threads < self.max_threads {
            let shared = self.clone();
            let spawned = std::thread::Builder::new()
                .name("request-worker".to_owned())
                .spawn(move || shared.work_loop());
            match spawned {
                Ok(_) => state.threads += 1,
                // Running workers still drain the queue.
                Err(e) => tracing::error!(error = %e, "cannot start a request worker"),
            }
        }
    }

    fn work_loop(self: Arc<Self>) {
        POOL.with(|p| *p.borrow_mut() = Some(self.clone()));
        let mut state = lock(&self.state);
        loop {
            if state.computing < self.limit
                && let Some(job) = state.queue.pop_front()
            {
                state.computing += 1;
                drop(state);
                job();
                state = lock(&self.state);
                state.computing -= 1;
                continue;
            }
            if state.shutdown && state.queue.is_empty() {
                break;
            }
            state.idle += 1;
            let (next, timeout) = self
                .work
                .wait_timeout(state, SPARE_IDLE)
                .unwrap_or_else(PoisonError::into_inner);
            state = next;
            state.idle -= 1;
            if timeout.timed_out() && state.threads > self.limit && state.queue.is_empty() {
                break;
            }
        }
        state.threads -= 1;
        drop(state);
        POOL.with(|p| *p.borrow_mut() = None);
    }

    fn begin_wait(self: &Arc<Self>) {
        let mut state = lock(&self.state);
        state.computing -= 1;
        self.wake_or_spawn(&mut state);
    }

    fn end_wait(&self) {
        // Back to computing at once: the request is part done, and making it
        // queue again would only lengthen it.
        lock(&self.state).computing += 1;
    }
}

/// Runs `f`, which waits (for a flush, a lock, the network) rather than
/// computes. On a request worker the wait gives its turn to the next
/// request; anywhere else this is just `f()`.
pub fn waiting<T>(f: impl FnOnce() -> T) -> T {
    // Off the pool, or already waiting (a wait inside a wait): just run.
    let Some(shared) = POOL.with(|p| p.borrow_mut().take()) else {
        return f();
    };
    shared.begin_wait();
    struct End(Option<Arc<Shared>>);
    impl Drop for End {
        fn drop(&mut self) {
            if let Some(shared) = self.0.take() {
                shared.end_wait();
                POOL.with(|p| *p.borrow_mut() = Some(shared));
            }
        }
    }
    let _end = End(Some(shared));
    f()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn requests_beyond_the_limit_wait_their_turn_in_arrival_order() {
        let workers = Arc::new(Workers::new(1, 8));
        let order = Arc::new(Mutex::new(Vec::new()));
        rt().block_on(async {
            let (gate_tx, gate_rx) = std::sync::mpsc::channel::<()>();
            // The first request holds the only turn until released.
            let first = {
                let w = workers.clone();
                let order = order.clone();
                tokio::spawn(async move {
                    w.run(move || {
                        gate_rx.recv().unwrap();
                        order.lock().unwrap().push(0);
                    })
                    .await
                })
            };
            tokio::time::sleep(Duration::from_millis(50)).await;
            let mut rest = Vec::new();
            for i in 1..=5 {
                let w = workers.clone();
                let order = order.clone();
                rest.push(tokio::spawn(async move {
                    w.run(move || order.lock().unwrap().push(i)).await
                }));
                // Arrival order is submission order.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            assert_eq!(
                *order.lock().unwrap(),
                Vec::<i32>::new(),
                "ran past the limit"
            );
            gate_tx.send(()).unwrap();
            first.await.unwrap().unwrap();
            for r in rest {
                r.await.unwrap().unwrap();
            }
        });
        assert_eq!(*order.lock().unwrap(), vec![0, 1, 2, 3, 4, 5]);
    }

    #[test]
    fn a_waiting_request_gives_its_turn_to_the_next() {
        // One turn; eight requests that each wait 200 ms (a slow directory).
        // Waiting inside `waiting`, all eight wait at once; otherwise they
        // would wait one after another.
        let workers = Arc::new(Workers::new(1, 16));
        let most = Arc::new(AtomicUsize::new(0));
        let now = Arc::new(AtomicUsize::new(0));
        rt().block_on(async {
            let mut all = Vec::new();
            for _ in 0..8 {
                let w = workers.clone();
                let (most, now) = (most.clone(), now.clone());
                all.push(tokio::spawn(async move {
                    w.run(move || {
                        waiting(|| {
                            let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                            most.fetch_max(n, Ordering::SeqCst);
                            std::thread::sleep(Duration::from_millis(200));
                            now.fetch_sub(1, Ordering::SeqCst);
                        })
                    })
                    .await
                }));
            }
            for a in all {
                a.await.unwrap().unwrap();
            }
        });
        assert_eq!(most.load(Ordering::SeqCst), 8, "the waits did not overlap");
    }

    #[test]
    fn a_panicking_request_fails_alone_and_the_worker_goes_on() {
        let workers = Workers::new(1, 1);
        rt().block_on(async {
            assert_eq!(workers.run(|| -> u32 { panic!("boom") }).await, None);
            assert_eq!(workers.run(|| 7).await, Some(7));
        });
    }

    #[test]
    fn a_wait_inside_a_wait_gives_the_turn_back_once() {
        // A miscount would leave the one turn taken, and the next request
        // would never run (or the count would overflow).
        let workers = Workers::new(1, 4);
        rt().block_on(async {
            for _ in 0..3 {
                let out = workers.run(|| waiting(|| waiting(|| 5))).await;
                assert_eq!(out, Some(5));
            }
        });
    }

    #[test]
    fn waiting_off_the_pool_just_runs() {
        assert_eq!(waiting(|| 3), 3);
    }
}

//! Running one inference on a thread pool so that the pool's threads actually share its ops.
//!
//! A plan's ops are short: at 224 px an EfficientNet-Lite0 convolution takes 30–400 µs on one
//! core. Handing each op to an idle rayon pool costs a wake-up per op, and a sleeping thread woke
//! too late to help: on this project's 2-vCPU VM two threads were *slower* than one for both the
//! float and the int8 model, and a 75 µs split loop ran at 1.0× (docs/benchmarks.md, issue 14).
//! So an inference runs on a thread of the pool (the caller then works on every parallel op
//! instead of sleeping until it is done), and while it runs the pool's other threads keep looking
//! for work instead of going to sleep: onnxruntime's intra-op threads spin the same way by
//! default (`session.intra_op.allow_spinning`). The spinning ends with the inference.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use rayon::ThreadPool;
use tract_linalg::multithread::Executor;

/// The thread pool behind a tract executor (`LoadOptions::threads` above 1), if any.
pub(crate) fn pool_of(executor: &Executor) -> Option<&Arc<ThreadPool>> {
    match executor {
        Executor::MultiThread(pool) => Some(pool),
        _ => None,
    }
}

/// `f` on a thread of `pool`, the pool's other threads stealing its parallel work until it
/// returns. Without a pool, `f` on the calling thread.
pub(crate) fn run<R: Send>(pool: Option<&ThreadPool>, f: impl FnOnce() -> R + Send) -> R {
    match pool {
        Some(pool) => run_counted(pool, &AtomicUsize::new(0), f),
        None => f(),
    }
}

/// [`run`], counting in `spinning` the threads that are looking for work at the moment.
fn run_counted<R: Send>(pool: &ThreadPool, spinning: &AtomicUsize, f: impl FnOnce() -> R + Send) -> R {
    pool.install(|| {
        let done = AtomicBool::new(false);
        let caller = rayon::current_thread_index();
        rayon::scope(|s| {
            for _ in 1..pool.current_num_threads() {
                s.spawn(|_| {
                    // The caller sets `done`: were it to run a spinner itself (its own queue's
                    // oldest job, if no other thread took it), it would wait for itself.
                    if rayon::current_thread_index() == caller {
                        return;
                    }
                    spinning.fetch_add(1, Ordering::AcqRel);
                    while !done.load(Ordering::Acquire) {
                        if rayon::yield_now() == Some(rayon::Yield::Idle) {
                            std::hint::spin_loop();
                        }
                    }
                    spinning.fetch_sub(1, Ordering::AcqRel);
                });
            }
            // Set even if `f` panics, so the scope's spinners end and the panic reaches the caller.
            struct Done<'a>(&'a AtomicBool);
            impl Drop for Done<'_> {
                fn drop(&mut self) {
                    self.0.store(true, Ordering::Release);
                }
            }
            let _done = Done(&done);
            f()
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rayon::prelude::*;
    use std::time::{Duration, Instant};

    fn pool(threads: usize) -> ThreadPool {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .expect("a thread pool")
    }

    /// Waits up to 10 s for `spinning` to reach `want`; what it reached.
    fn settle(spinning: &AtomicUsize, want: usize) -> usize {
        let deadline = Instant::now() + Duration::from_secs(10);
        while spinning.load(Ordering::Acquire) != want && Instant::now() < deadline {
            std::thread::yield_now();
        }
        spinning.load(Ordering::Acquire)
    }

    #[test]
    fn every_other_thread_looks_for_work_while_f_runs_and_stops_after() {
        for threads in [1, 2, 3, 4] {
            let pool = pool(threads);
            let spinning = AtomicUsize::new(0);
            let (during, sum) = run_counted(&pool, &spinning, || {
                let during = settle(&spinning, threads - 1);
                let sum: u64 = (0..100_000u64).into_par_iter().map(|i| i % 7).sum();
                (during, sum)
            });
            assert_eq!(
                during,
                threads - 1,
                "{threads} threads: other threads spinning during f"
            );
            assert_eq!(sum, (0..100_000u64).map(|i| i % 7).sum::<u64>(), "{threads} threads");
            assert_eq!(
                spinning.load(Ordering::Acquire),
                0,
                "{threads} threads: still spinning after f"
            );
        }
    }

    #[test]
    fn f_runs_on_the_pool_and_a_panic_in_it_reaches_the_caller() {
        let pool = pool(3);
        assert!(run(Some(&pool), rayon::current_thread_index).is_some());
        assert_eq!(run(None, rayon::current_thread_index), None);
        let spinning = AtomicUsize::new(0);
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            run_counted(&pool, &spinning, || {
                settle(&spinning, 2);
                panic!("inside f")
            })
        }));
        assert!(caught.is_err());
        assert_eq!(
            spinning.load(Ordering::Acquire),
            0,
            "spinners left running after a panic"
        );
        // The pool still works afterwards.
        assert_eq!(run(Some(&pool), || 41 + 1), 42);
    }
}

//! A future polled again only when it has woken its task: [`Quiet`].
//!
//! A task that waits for its work and, beside it, for a stop signal (`select!` on a
//! `CancellationToken`) polls the stop signal at every wake-up of the work, and
//! `Notified::poll` takes the `Notify`'s lock each time: a few hundred instructions per event
//! on the delivery path (callgrind). Wrapped in [`Quiet`], the stop signal costs two atomic
//! operations per wake-up of the task until it fires.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use futures::task::AtomicWaker;

pin_project_lite::pin_project! {
    /// `inner`, polled on the first poll and after each time it woke the task; any other
    /// poll answers `Pending` at once.
    pub(crate) struct Quiet<F> {
        #[pin]
        inner: F,
        flag: Option<Arc<Flag>>,
    }
}

/// What `inner` wakes: it notes the wake-up and wakes the task.
struct Flag {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

impl<F: Future> Quiet<F> {
    pub(crate) fn new(inner: F) -> Quiet<F> {
        Quiet { inner, flag: None }
    }

    /// `inner`, to change what it waits for (reset a timer): the next poll polls it, since
    /// it may need to register its waker again.
    pub(crate) fn inner(self: Pin<&mut Self>) -> Pin<&mut F> {
        let this = self.project();
        if let Some(flag) = this.flag {
            flag.woken.store(true, Ordering::Release);
        }
        this.inner
    }
}

impl<F: Future> Future for Quiet<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let flag = match this.flag {
            Some(flag) => {
                // Registered before the flag is read: a wake-up after the read wakes this
                // task's current waker, so it is not missed.
                flag.task.register(cx.waker());
                if !flag.woken.swap(false, Ordering::AcqRel) {
                    return Poll::Pending;
                }
                flag.clone()
            }
            None => {
                let flag = Arc::new(Flag {
                    woken: AtomicBool::new(false),
                    task: AtomicWaker::new(),
                });
                flag.task.register(cx.waker());
                *this.flag = Some(flag.clone());
                flag
            }
        };
        // The same `Arc` each time, so `inner` sees the same waker (`will_wake`) and keeps it.
        let waker = Waker::from(flag.clone());
        let r = this.inner.poll(&mut Context::from_waker(&waker));
        if r.is_ready() {
            // Polled again, a finished future answers as `inner` does (a cancelled token's
            // wait is ready again), not `Pending` for want of a wake-up.
            flag.woken.store(true, Ordering::Release);
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// Pending until `go`'s permit is there; counts its polls.
    struct Counted {
        polls: Arc<AtomicUsize>,
        go: Arc<tokio::sync::Notify>,
    }

    impl Counted {
        async fn run(self) -> usize {
            self.polls.fetch_add(1, Ordering::SeqCst);
            let mut notified = std::pin::pin!(self.go.notified());
            std::future::poll_fn(|cx| {
                self.polls.fetch_add(1, Ordering::SeqCst);
                notified.as_mut().poll(cx)
            })
            .await;
            self.polls.load(Ordering::SeqCst)
        }
    }

    #[tokio::test]
    async fn the_inner_future_is_polled_only_when_it_woke_the_task() {
        let polls = Arc::new(AtomicUsize::new(0));
        let go = Arc::new(tokio::sync::Notify::new());
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
        let quiet = Quiet::new(
            Counted {
                polls: polls.clone(),
                go: go.clone(),
            }
            .run(),
        );
        let task = tokio::spawn(async move {
            let mut quiet = std::pin::pin!(quiet);
            let mut other_wakes = 0;
            loop {
                tokio::select! {
                    biased;
                    n = quiet.as_mut() => return (n, other_wakes),
                    Some(()) = rx.recv() => other_wakes += 1,
                }
            }
        });
        // Wake the task 100 times for something else: the quiet future is not polled.
        for _ in 0..100 {
            tx.send(()).unwrap();
            tokio::task::yield_now().await;
        }
        let before = polls.load(Ordering::SeqCst);
        go.notify_one();
        let (total, other_wakes) = task.await.unwrap();
        assert!(other_wakes > 0);
        // First poll (two counts), then only the poll after `go` woke it.
        assert_eq!(before, 2, "polled while nothing woke it");
        assert_eq!(total, 3);
    }

    #[tokio::test]
    async fn once_ready_it_is_polled_again_every_time() {
        // A worker polls its abort wait at every select: once cancelled, it stays ready.
        let token = tokio_util::sync::CancellationToken::new();
        let mut quiet = Box::pin(Quiet::new(token.clone().cancelled_owned()));
        assert!(futures::poll!(quiet.as_mut()).is_pending());
        token.cancel();
        for _ in 0..3 {
            assert!(futures::poll!(quiet.as_mut()).is_ready());
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_timer_reset_after_it_fired_fires_again() {
        let start = tokio::time::Instant::now();
        let timer = Quiet::new(tokio::time::sleep(std::time::Duration::from_secs(1)));
        let mut timer = std::pin::pin!(timer);
        timer.as_mut().await;
        timer
            .as_mut()
            .inner()
            .reset(tokio::time::Instant::now() + std::time::Duration::from_secs(1));
        tokio::time::timeout(std::time::Duration::from_secs(10), timer.as_mut())
            .await
            .expect("the reset timer never fired");
        assert_eq!(start.elapsed(), std::time::Duration::from_secs(2));
    }

    #[tokio::test]
    async fn a_wake_up_on_another_task_reaches_the_new_task() {
        // Polled once on one task, then moved to another: the wake-up goes to the second.
        let go = Arc::new(tokio::sync::Notify::new());
        let mut quiet = Box::pin(Quiet::new({
            let go = go.clone();
            async move { go.notified().await }
        }));
        let first = futures::poll!(quiet.as_mut());
        assert!(first.is_pending());
        let task = tokio::spawn(quiet);
        tokio::task::yield_now().await;
        go.notify_one();
        tokio::time::timeout(std::time::Duration::from_secs(10), task)
            .await
            .expect("the wake-up was lost")
            .unwrap();
    }
}

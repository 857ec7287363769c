//! A one-time signal that many tasks wait on: the gateway beginning to
//! stop, the drain's grace running out.
//!
//! Every connection task waits on two of them (stop and abort) beside its
//! own work, so the wait is polled at every wakeup of every connection.
//! `CancellationToken`'s wait takes two locks per poll, about 2 % of an
//! HTTP/1.1 request in `perf` (bench/RESULTS.md, "Issue 12, fourth round").
//! Here a poll is one atomic load while the task's waker is the one the
//! wait registered; only a first poll, or one with another waker, touches
//! the lock of the underlying [`Notify`].

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use pin_project_lite::pin_project;
use tokio::sync::futures::OwnedNotified;
use tokio::sync::Notify;

/// Fired once; every wait, begun before or after, then completes. Cheap to
/// clone: clones fire and wait on the same signal.
#[derive(Clone, Default)]
pub struct StopSignal {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    fired: AtomicBool,
    notify: Arc<Notify>,
}

impl StopSignal {
    pub fn new() -> Self {
        Self::default()
    }

    /// Fires the signal: every wait completes. Firing again does nothing.
    pub fn fire(&self) {
        // Set before waking: a woken wait reads the flag, and a wait begun
        // after `notify_waiters` reads it as set (see `Fired`).
        self.inner.fired.store(true, Ordering::SeqCst);
        self.inner.notify.notify_waiters();
    }

    pub fn is_fired(&self) -> bool {
        self.inner.fired.load(Ordering::SeqCst)
    }

    /// Completes once the signal has fired (at once if it already has).
    pub fn fired(&self) -> Fired {
        Fired {
            // Created before the flag is first read: `notify_waiters` wakes
            // every `Notified` created before it, polled yet or not, so no
            // firing falls between the read and the registration.
            notified: Arc::clone(&self.inner.notify).notified_owned(),
            signal: self.clone(),
            registered: None,
        }
    }

    /// Fires the signal when the guard is dropped.
    pub fn fire_on_drop(&self) -> FireOnDrop {
        FireOnDrop(self.clone())
    }
}

pin_project! {
    /// The wait of [`StopSignal::fired`].
    pub struct Fired {
        #[pin]
        notified: OwnedNotified,
        signal: StopSignal,
        // The waker `notified` holds, so a poll with the same one skips it.
        registered: Option<Waker>,
    }
}

impl Future for Fired {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.project();
        if this.signal.is_fired() {
            return Poll::Ready(());
        }
        if this
            .registered
            .as_ref()
            .is_some_and(|waker| waker.will_wake(cx.waker()))
        {
            // `notified` will wake this waker when the signal fires.
            return Poll::Pending;
        }
        match this.notified.poll(cx) {
            Poll::Ready(()) => Poll::Ready(()),
            Poll::Pending => {
                *this.registered = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

/// Fires its signal when dropped (see [`StopSignal::fire_on_drop`]).
pub struct FireOnDrop(StopSignal);

impl Drop for FireOnDrop {
    fn drop(&mut self) {
        self.0.fire();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::task::Wake;

    /// Counts its wakes.
    #[derive(Default)]
    struct CountingWaker(AtomicUsize);

    impl Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn poll(fired: &mut Pin<Box<Fired>>, waker: &Arc<CountingWaker>) -> Poll<()> {
        let waker = Waker::from(Arc::clone(waker));
        fired.as_mut().poll(&mut Context::from_waker(&waker))
    }

    #[test]
    fn a_registered_wait_is_woken_when_the_signal_fires() {
        let signal = StopSignal::new();
        let mut fired = Box::pin(signal.fired());
        let waker = Arc::new(CountingWaker::default());
        assert!(poll(&mut fired, &waker).is_pending());
        // Polled again with the same waker: still waiting, nothing woken.
        assert!(poll(&mut fired, &waker).is_pending());
        assert_eq!(waker.0.load(Ordering::SeqCst), 0);
        signal.clone().fire();
        assert_eq!(waker.0.load(Ordering::SeqCst), 1);
        assert!(poll(&mut fired, &waker).is_ready());
    }

    #[test]
    fn a_wait_polled_with_a_new_waker_wakes_the_new_one() {
        let signal = StopSignal::new();
        let mut fired = Box::pin(signal.fired());
        let first = Arc::new(CountingWaker::default());
        let second = Arc::new(CountingWaker::default());
        assert!(poll(&mut fired, &first).is_pending());
        assert!(poll(&mut fired, &second).is_pending());
        signal.fire();
        assert_eq!(second.0.load(Ordering::SeqCst), 1);
        assert!(poll(&mut fired, &second).is_ready());
    }

    #[test]
    fn a_wait_made_before_the_signal_fires_and_first_polled_after_completes() {
        let signal = StopSignal::new();
        let mut fired = Box::pin(signal.fired());
        signal.fire();
        let waker = Arc::new(CountingWaker::default());
        assert!(poll(&mut fired, &waker).is_ready());
        // And one made afterwards.
        let mut late = Box::pin(signal.fired());
        assert!(poll(&mut late, &waker).is_ready());
    }

    #[test]
    fn dropping_the_guard_fires_the_signal() {
        let signal = StopSignal::new();
        drop(signal.fire_on_drop());
        assert!(signal.is_fired());
    }
}

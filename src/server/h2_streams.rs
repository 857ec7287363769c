//! HTTP/2 streams run inside their connection's task. hyper hands each
//! stream's handler to an executor; as a tokio task of its own, a stream
//! cost an aligned allocation, a schedule on every wake, a registration
//! with the shutdown signal, and a second schedule of the connection's task
//! to send what it answered. A worker runs on one thread, so the task gained
//! the stream nothing: here the connection's task polls its streams beside
//! the connection, and whatever drops the connection (the shutdown grace,
//! a peer that ignores GOAWAY) drops its streams with it.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use futures_util::stream::{FuturesUnordered, StreamExt};
use pin_project_lite::pin_project;

type Stream = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The executor hyper is given for one connection: it queues each stream
/// for the connection's [`WithStreams`] to run.
#[derive(Clone, Default)]
pub(super) struct StreamQueue {
    /// Locked only by the connection's own task (hyper starts streams while
    /// it is polled), so never contended; a `Mutex` because the connection
    /// future must be `Send`.
    started: Arc<Mutex<Vec<Stream>>>,
}

impl StreamQueue {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Stream>> {
        // Pushing or taking cannot leave the vector half-changed.
        self.started.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<F> hyper::rt::Executor<F> for StreamQueue
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, stream: F) {
        self.lock().push(Box::pin(stream));
    }
}

pin_project! {
    /// An HTTP/2 connection and the streams it started. Completes with the
    /// connection's outcome once the connection and every stream have ended.
    pub(super) struct WithStreams<C: Future> {
        #[pin]
        connection: C,
        ended: Option<C::Output>,
        queue: StreamQueue,
        running: FuturesUnordered<Stream>,
    }
}

impl<C: Future> WithStreams<C> {
    /// `connection` must have been built with `queue` as its executor.
    pub(super) fn new(connection: C, queue: StreamQueue) -> Self {
        Self {
            connection,
            ended: None,
            queue,
            running: FuturesUnordered::new(),
        }
    }

    pub(super) fn connection(self: Pin<&mut Self>) -> Pin<&mut C> {
        self.project().connection
    }
}

impl<C: Future> Future for WithStreams<C> {
    type Output = C::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<C::Output> {
        let mut this = self.project();
        loop {
            // Streams first: what they answer is sent by the connection's
            // poll right after, not on the task's next turn.
            while let Poll::Ready(Some(())) = this.running.poll_next_unpin(cx) {}
            if this.ended.is_none() {
                if let Poll::Ready(output) = this.connection.as_mut().poll(cx) {
                    *this.ended = Some(output);
                }
            }
            // Requests the connection just read: started now, so each
            // reaches its upstream in this turn. Drained, not taken: the
            // queue keeps its capacity for the next ones.
            let mut started = this.queue.lock();
            if started.is_empty() {
                break;
            }
            this.running.extend(started.drain(..));
        }
        match this.ended.take() {
            Some(output) if this.running.is_empty() => Poll::Ready(output),
            ended => {
                *this.ended = ended;
                Poll::Pending
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use futures_util::FutureExt;
    use hyper::rt::Executor;
    use tokio::sync::oneshot;

    use super::*;

    /// A connection that starts one stream each time it is polled, and ends
    /// when told to.
    fn connection(
        queue: StreamQueue,
        streams: Vec<Stream>,
        mut end: oneshot::Receiver<()>,
    ) -> impl Future<Output = &'static str> {
        let mut streams = streams.into_iter();
        std::future::poll_fn(move |cx| {
            if let Some(stream) = streams.next() {
                queue.execute(stream);
            }
            match Pin::new(&mut end).poll(cx) {
                Poll::Ready(_) => Poll::Ready("ended"),
                Poll::Pending => Poll::Pending,
            }
        })
    }

    #[tokio::test]
    async fn the_connection_ends_only_after_its_last_stream() {
        let finished = Arc::new(AtomicUsize::new(0));
        let (release, released) = oneshot::channel::<()>();
        let slow: Stream = {
            let finished = Arc::clone(&finished);
            Box::pin(async move {
                let _ = released.await;
                finished.fetch_add(1, Ordering::SeqCst);
            })
        };
        let quick: Stream = {
            let finished = Arc::clone(&finished);
            Box::pin(async move {
                finished.fetch_add(1, Ordering::SeqCst);
            })
        };
        let (end, ended) = oneshot::channel();
        let queue = StreamQueue::default();
        let with = WithStreams::new(connection(queue.clone(), vec![slow, quick], ended), queue);
        tokio::pin!(with);

        // One turn starts both streams as the connection hands them over:
        // the quick one ends in it, the slow one waits.
        assert!(with.as_mut().now_or_never().is_none());
        assert_eq!(finished.load(Ordering::SeqCst), 1, "the quick stream ran");
        // The connection ends, but a stream is still running.
        end.send(()).expect("the connection is waiting");
        assert!(with.as_mut().now_or_never().is_none());
        assert_eq!(finished.load(Ordering::SeqCst), 1);
        // The last stream ends: so does the whole.
        release.send(()).expect("the slow stream is waiting");
        assert_eq!(with.await, "ended");
        assert_eq!(finished.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn dropping_the_connection_drops_its_streams() {
        let dropped = Arc::new(AtomicUsize::new(0));
        struct CountDrop(Arc<AtomicUsize>);
        impl Drop for CountDrop {
            fn drop(&mut self) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let held = CountDrop(Arc::clone(&dropped));
        let waiting: Stream = Box::pin(async move {
            let _held = held;
            std::future::pending::<()>().await;
        });
        let (_end, ended) = oneshot::channel();
        let queue = StreamQueue::default();
        let mut with = Box::pin(WithStreams::new(
            connection(queue.clone(), vec![waiting], ended),
            queue,
        ));
        assert!(with.as_mut().now_or_never().is_none());
        assert_eq!(dropped.load(Ordering::SeqCst), 0);
        drop(with);
        assert_eq!(dropped.load(Ordering::SeqCst), 1);
    }
}

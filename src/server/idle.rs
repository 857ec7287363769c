//! When a connection has been quiet too long. hyper's HTTP/2 keep-alive
//! PINGs keep a silent peer alive, so each h2 connection counts its open
//! streams here and `server.rs` closes it (GOAWAY) once it has none for long
//! enough. An HTTP/1 connection counts its one request at a time the same
//! way, in place of hyper's header timeout (a timer armed and cancelled for
//! every request): it is dropped once no head has come in time.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::time::Instant;

/// The open streams of one connection (on HTTP/1, its one request at a
/// time). Cheap on the request path: five atomic read-modify-writes (the
/// guard's reference count, the open count, the end time) and a clock read
/// per stream; no timer, no wakeup.
#[derive(Clone)]
pub(super) struct Streams {
    shared: Arc<Shared>,
}

struct Shared {
    /// When the connection was ready for its first request (TLS done).
    since: Instant,
    /// Streams whose request reached the service and whose response body
    /// has not been dropped yet.
    open: AtomicUsize,
    /// A request has reached the service at least once.
    used: AtomicBool,
    /// Milliseconds after `since` at which the last stream ended.
    last_end_ms: AtomicU64,
}

/// What the connection is doing right now.
enum State {
    /// At least one stream is open.
    Busy,
    /// No request has arrived yet.
    Unused,
    /// No stream is open; the last one ended at this instant.
    IdleSince(Instant),
}

impl Streams {
    pub(super) fn new(since: Instant) -> Self {
        Self {
            shared: Arc::new(Shared {
                since,
                open: AtomicUsize::new(0),
                used: AtomicBool::new(false),
                last_end_ms: AtomicU64::new(0),
            }),
        }
    }

    /// Counts a stream as open until the returned guard is dropped: keep it
    /// in the response body ([`Tracked`]) so the stream counts until its last
    /// byte is sent or it is reset.
    pub(super) fn open(&self) -> StreamGuard {
        self.shared.used.store(true, Ordering::Relaxed);
        self.shared.open.fetch_add(1, Ordering::AcqRel);
        StreamGuard {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Completes once, after `start`, the connection has had no open stream
    /// for `before_first` when it never had a request, or for `between`
    /// since its last stream ended. Sleeps on timers only; never busy.
    pub(super) async fn quiet(&self, start: Instant, before_first: Duration, between: Duration) {
        loop {
            let now = Instant::now();
            let deadline = match self.state() {
                // A stream ending resets the idle clock, so check again no
                // sooner than one idle period from now.
                State::Busy => now + between,
                State::Unused => start.max(self.shared.since) + before_first,
                State::IdleSince(ended) => ended.max(start) + between,
            };
            if deadline <= now {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }

    fn state(&self) -> State {
        // `open` is read first: a guard stores its end time before it
        // decrements, so a zero seen here comes with that end time.
        if self.shared.open.load(Ordering::Acquire) > 0 {
            return State::Busy;
        }
        if !self.shared.used.load(Ordering::Relaxed) {
            return State::Unused;
        }
        let ended = Duration::from_millis(self.shared.last_end_ms.load(Ordering::Acquire));
        State::IdleSince(self.shared.since + ended)
    }
}

/// One open stream; dropping it ends the stream's count.
pub(super) struct StreamGuard {
    shared: Arc<Shared>,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let elapsed = self.shared.since.elapsed();
        // Rounded up, so the idle clock never starts before the stream ended.
        let ms = u64::try_from(elapsed.as_millis())
            .unwrap_or(u64::MAX)
            .saturating_add(1);
        self.shared.last_end_ms.fetch_max(ms, Ordering::AcqRel);
        self.shared.open.fetch_sub(1, Ordering::AcqRel);
    }
}

pin_project! {
    /// A response body that holds its stream's [`StreamGuard`] until hyper
    /// drops it (sent in full, or the stream was reset).
    pub struct Tracked<B> {
        #[pin]
        inner: B,
        _guard: StreamGuard,
    }
}

impl<B> Tracked<B> {
    pub(super) fn new(inner: B, guard: StreamGuard) -> Self {
        Self {
            inner,
            _guard: guard,
        }
    }
}

impl<B: Body> Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: Duration = Duration::from_secs(10);

    #[tokio::test]
    async fn an_unused_connection_is_quiet_after_the_first_deadline() {
        let start = Instant::now();
        let streams = Streams::new(start);
        let first = Duration::from_millis(100);
        tokio::time::timeout(LIMIT, streams.quiet(start, first, LIMIT))
            .await
            .unwrap();
        assert!(start.elapsed() >= first);
    }

    #[tokio::test]
    async fn an_open_stream_holds_the_connection_and_its_end_restarts_the_clock() {
        let start = Instant::now();
        let streams = Streams::new(start);
        let between = Duration::from_millis(100);
        let guard = streams.open();
        let mut watcher = {
            let streams = streams.clone();
            tokio::spawn(async move {
                streams.quiet(start, between, between).await;
                Instant::now()
            })
        };
        // Several idle periods pass with the stream open.
        let early = tokio::time::timeout(between * 4, &mut watcher).await;
        assert!(early.is_err(), "quiet with a stream open");
        drop(guard);
        let ended = Instant::now();
        let quiet_at = tokio::time::timeout(LIMIT, watcher).await.unwrap().unwrap();
        assert!(quiet_at - ended >= between - Duration::from_millis(1));
    }
}

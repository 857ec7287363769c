//! An upstream's response body on its way to the client. For HTTP/1 it
//! carries the connection it arrives on: each poll drives that connection,
//! and the moment the body ends the connection goes back to the pool (or is
//! closed if it cannot be reused). It also keeps the request counted as in
//! flight for least-requests balancing until it ends.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use pin_project_lite::pin_project;

use super::h1::H1Conn;
use super::target::InFlight;

pin_project! {
    pub struct UpstreamBody {
        #[pin]
        inner: Incoming,
        // The HTTP/1 connection this body is read from, until it ends.
        conn: Option<H1Conn>,
        in_flight: Option<InFlight>,
    }

    impl PinnedDrop for UpstreamBody {
        fn drop(this: Pin<&mut Self>) {
            // A body dropped unread (HEAD, 204, client gone) still returns a
            // connection that finished cleanly; one cut mid-body is closed.
            if let Some(conn) = this.project().conn.take() {
                conn.release();
            }
        }
    }
}

impl UpstreamBody {
    pub fn new(inner: Incoming, conn: Option<H1Conn>, in_flight: InFlight) -> Self {
        Self {
            inner,
            conn,
            in_flight: Some(in_flight),
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let mut this = self.project();
        if let Some(conn) = this.conn.as_mut() {
            conn.drive(cx);
        }
        let polled = this.inner.as_mut().poll_frame(cx);
        match &polled {
            Poll::Ready(None | Some(Err(_))) => {
                if let Some(conn) = this.conn.take() {
                    conn.release();
                }
                this.in_flight.take();
            }
            // The last frame of a body of known length: hyper may never poll
            // again, so the exchange is over now. The connection goes back at
            // once if it is ready; otherwise the end or the drop returns it.
            Poll::Ready(Some(Ok(_))) if this.inner.is_end_stream() => {
                this.in_flight.take();
                if this.conn.as_mut().is_some_and(H1Conn::is_reusable) {
                    if let Some(conn) = this.conn.take() {
                        conn.release();
                    }
                }
            }
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

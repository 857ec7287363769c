//! An upstream's response body on its way to the client. For HTTP/1 it
//! carries the connection it arrives on: each poll drives that connection,
//! and the moment the body ends the connection goes back to the pool (or is
//! closed if it cannot be reused). It also keeps the request counted as in
//! flight for least-requests balancing until it ends.
//!
//! A small body of known length is read whole before the answer starts
//! ([`UpstreamBody::read_small`]), as nginx's proxy buffering does: its
//! connection is back in the pool before the client is written to, so a
//! client that reads slowly (or an HTTP/2 stream waiting for its turn to
//! send) does not hold an upstream connection.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::h1::{unwoken, H1Conn};
use super::target::InFlight;

/// Bodies up to this many bytes (by their Content-Length) are read whole
/// before the answer starts; larger ones stream.
pub(crate) const READ_WHOLE_UP_TO: u64 = 32 * 1024;

pub struct UpstreamBody {
    source: Source,
    /// The HTTP/1 connection the body is read from, until it ends.
    conn: Option<H1Conn>,
    in_flight: Option<InFlight>,
}

/// Where the body's bytes come from.
enum Source {
    /// Streamed from the upstream as they arrive.
    Upstream(Incoming),
    /// Read whole by `read_small`; `None` once sent.
    Whole(Option<Bytes>),
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        // A body dropped unread (HEAD, 204, client gone) still returns a
        // connection that finished cleanly; one cut mid-body is closed.
        if let Some(conn) = self.conn.take() {
            conn.release();
        }
    }
}

impl UpstreamBody {
    pub fn new(inner: Incoming, conn: Option<H1Conn>, in_flight: InFlight) -> Self {
        Self {
            source: Source::Upstream(inner),
            conn,
            in_flight: Some(in_flight),
        }
    }

    /// Reads the body to its end when it comes over a pooled HTTP/1
    /// connection and its length is known and at most [`READ_WHOLE_UP_TO`]:
    /// the connection returns to the pool now, and the answer leaves in one
    /// piece. Any other body is returned untouched, to be streamed.
    pub async fn read_small(mut self) -> Result<Self, hyper::Error> {
        let Source::Upstream(inner) = &self.source else {
            return Ok(self);
        };
        let small = inner
            .size_hint()
            .exact()
            .is_some_and(|len| len > 0 && len <= READ_WHOLE_UP_TO);
        if self.conn.is_none() || !small || inner.is_end_stream() {
            return Ok(self);
        }
        let mut first: Option<Bytes> = None;
        let mut rest: Option<BytesMut> = None;
        // Stops at the last byte the length announced: waiting for hyper to
        // say the body is over would cost another wakeup of this task, and
        // the connection goes back as soon as it is ready either way.
        while !self.is_end_stream() {
            let Some(frame) = self.frame().await else {
                break;
            };
            // A body with a Content-Length has no trailers in HTTP/1.
            let Ok(data) = frame?.into_data() else {
                continue;
            };
            match (&first, &mut rest) {
                (None, _) => first = Some(data),
                (Some(head), None) => {
                    let mut joined = BytesMut::with_capacity(head.len() + data.len());
                    joined.extend_from_slice(head);
                    joined.extend_from_slice(&data);
                    rest = Some(joined);
                }
                (Some(_), Some(joined)) => joined.extend_from_slice(&data),
            }
        }
        // The upstream's body has ended: dropping it leaves the connection
        // reusable.
        self.source = Source::Whole(Some(match rest {
            Some(joined) => joined.freeze(),
            None => first.unwrap_or_default(),
        }));
        Ok(self)
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let inner = match &mut this.source {
            Source::Whole(whole) => {
                return Poll::Ready(whole.take().map(|data| Ok(Frame::data(data))))
            }
            Source::Upstream(inner) => inner,
        };
        let polled = match this.conn.as_mut() {
            // The body first: hyper has usually read a small body along
            // with the head, and then the connection need not be driven
            // here (each drive tries the socket). Otherwise drive it, and
            // ask again. Only the drive advances the body ([`unwoken`]).
            Some(conn) => match Pin::new(&mut *inner).poll_frame(&mut unwoken()) {
                Poll::Pending => {
                    conn.drive(cx);
                    Pin::new(&mut *inner).poll_frame(&mut unwoken())
                }
                ready => ready,
            },
            // Over HTTP/2 a task of its own drives the connection and wakes
            // this one. (An HTTP/1 body without its connection has ended.)
            None => Pin::new(&mut *inner).poll_frame(cx),
        };
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
            Poll::Ready(Some(Ok(_))) if inner.is_end_stream() => {
                this.in_flight.take();
                if let Some(conn) = this.conn.take_if(|conn| conn.is_reusable()) {
                    conn.return_to_pool();
                }
            }
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.source {
            Source::Upstream(inner) => inner.is_end_stream(),
            Source::Whole(whole) => whole.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.source {
            Source::Upstream(inner) => inner.size_hint(),
            Source::Whole(whole) => {
                let len = whole.as_ref().map_or(0, Bytes::len);
                SizeHint::with_exact(u64::try_from(len).unwrap_or(u64::MAX))
            }
        }
    }
}

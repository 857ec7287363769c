//! The client's request body on its way upstream: streamed frame by frame,
//! limited, timed and with identity trailers removed; and why it stopped.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use pin_project_lite::pin_project;
use tokio::time::Sleep;

use super::headers::IdentityScrubber;

/// Why a client's body stopped being forwarded.
#[derive(Debug, thiserror::Error)]
pub enum ForwardBodyError {
    #[error("request body exceeds the route's limit of {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("request body stalled for longer than {0:?}")]
    Stalled(Duration),
    #[error("reading the request body failed: {0}")]
    Client(#[source] hyper::Error),
}

pin_project! {
    /// The client's request body on its way upstream: streamed frame by frame,
    /// cut off past `limit` bytes or after `stall_timeout` without progress,
    /// and with identity headers removed from trailers.
    pub struct ForwardBody {
        // `None`: no body at all (requests the gateway makes itself).
        #[pin]
        inner: Option<Incoming>,
        remaining: u64,
        limit: u64,
        stall_timeout: Duration,
        // Created only when the body actually waits, so bodies that arrive
        // with their headers cost no timer.
        stall: Option<Pin<Box<Sleep>>>,
        scrubber: IdentityScrubber,
    }
}

impl ForwardBody {
    pub fn new(
        inner: Incoming,
        limit: Option<u64>,
        stall_timeout: Duration,
        scrubber: IdentityScrubber,
    ) -> Self {
        let limit = limit.unwrap_or(u64::MAX);
        Self {
            inner: Some(inner),
            remaining: limit,
            limit,
            stall_timeout,
            stall: None,
            scrubber,
        }
    }
}

impl ForwardBody {
    /// A body that ends at once.
    pub fn empty(scrubber: IdentityScrubber) -> Self {
        Self {
            inner: None,
            remaining: 0,
            limit: 0,
            stall_timeout: Duration::ZERO,
            stall: None,
            scrubber,
        }
    }
}

impl Body for ForwardBody {
    type Data = Bytes;
    type Error = ForwardBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ForwardBodyError>>> {
        let this = self.project();
        let Some(inner) = this.inner.as_pin_mut() else {
            return Poll::Ready(None);
        };
        let polled = inner.poll_frame(cx);
        let Poll::Ready(next) = polled else {
            let timeout = *this.stall_timeout;
            let stall = this
                .stall
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
            ready!(stall.as_mut().poll(cx));
            return Poll::Ready(Some(Err(ForwardBodyError::Stalled(timeout))));
        };
        if let Some(stall) = this.stall.as_mut() {
            stall
                .as_mut()
                .reset(tokio::time::Instant::now() + *this.stall_timeout);
        }
        Poll::Ready(match next {
            None => None,
            Some(Err(err)) => Some(Err(ForwardBodyError::Client(err))),
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => {
                    let len = data.len() as u64;
                    if len > *this.remaining {
                        Some(Err(ForwardBodyError::TooLarge { limit: *this.limit }))
                    } else {
                        *this.remaining -= len;
                        Some(Ok(Frame::data(data)))
                    }
                }
                Err(frame) => match frame.into_trailers() {
                    Ok(mut trailers) => {
                        this.scrubber.scrub_trailers(&mut trailers);
                        Some(Ok(Frame::trailers(trailers)))
                    }
                    // Neither data nor trailers: an extension frame hyper
                    // does not forward meaningfully; drop it.
                    Err(_) => Some(Ok(Frame::trailers(HeaderMap::new()))),
                },
            },
        })
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Some(inner) => inner.size_hint(),
            None => SizeHint::with_exact(0),
        }
    }
}

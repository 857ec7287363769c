//! The body of every answer the gateway sends: one it wrote itself, or an
//! upstream's body streamed through, cut when its session ends. Defined here,
//! above `body` and `error`, because it names the upstream body.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use super::upstream::body::UpstreamBody;
use crate::auth::session_watch::{SessionEnded, SessionWatch};
use crate::body::{BoxError, ResponseBody};

pin_project! {
    /// Every response body the gateway sends, without boxing on the hot path.
    #[project = AnswerBodyProj]
    pub enum AnswerBody {
        /// The gateway's own answer (JSON, errors, echo).
        Local { #[pin] inner: ResponseBody },
        Upstream { #[pin] inner: UpstreamBody },
        /// An upstream body that ends with an error (hyper then closes the
        /// HTTP/1 connection or resets the HTTP/2 stream) once `ended`
        /// completes: the session behind the request was revoked.
        Watched { #[pin] inner: UpstreamBody, ended: Pin<Box<dyn Future<Output = ()> + Send>> },
    }
}

impl AnswerBody {
    pub fn upstream(inner: UpstreamBody) -> Self {
        Self::Upstream { inner }
    }

    /// An upstream body cut when `watch`'s session ends.
    pub fn watched(inner: UpstreamBody, watch: SessionWatch) -> Self {
        Self::Watched {
            inner,
            ended: Box::pin(watch.ended()),
        }
    }
}

impl From<ResponseBody> for AnswerBody {
    fn from(inner: ResponseBody) -> Self {
        Self::Local { inner }
    }
}

impl Body for AnswerBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project() {
            AnswerBodyProj::Local { inner } => inner.poll_frame(cx),
            AnswerBodyProj::Upstream { inner } => inner.poll_frame(cx).map_err(Into::into),
            AnswerBodyProj::Watched { inner, ended } => {
                // Checked before every frame, so even a body that is always
                // ready stops at once; the wait also wakes an idle stream.
                if ended.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Some(Err(Box::new(SessionEnded))));
                }
                inner.poll_frame(cx).map_err(Into::into)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Local { inner } => inner.is_end_stream(),
            Self::Upstream { inner } | Self::Watched { inner, .. } => inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Local { inner } => inner.size_hint(),
            Self::Upstream { inner } | Self::Watched { inner, .. } => inner.size_hint(),
        }
    }
}

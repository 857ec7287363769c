//! Request and response bodies for tests: generated streams of a given size,
//! so 100 MB can cross the gateway without ever existing in memory.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

const CHUNK: usize = 64 * 1024;

/// `remaining` zero bytes in 64 KiB frames.
pub struct Zeros {
    remaining: u64,
    chunk: Bytes,
}

impl Zeros {
    pub fn new(len: u64) -> Self {
        Self {
            remaining: len,
            chunk: Bytes::from(vec![0u8; CHUNK]),
        }
    }
}

impl Body for Zeros {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let n = self.remaining.min(CHUNK as u64) as usize;
        self.remaining -= n as u64;
        Poll::Ready(Some(Ok(Frame::data(self.chunk.slice(..n)))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

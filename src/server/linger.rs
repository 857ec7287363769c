//! Lingering close for the client's TCP connection: once hyper has sent its
//! last response and closed the write side, what the client is still sending
//! is read and discarded for a bounded time before the socket is dropped.
//!
//! Why: an HTTP/1.1 answer given before the request body was read (401 to an
//! upload with an expired token, 413, 429, ...) makes hyper close the
//! connection with the body's rest still arriving. Closing a socket with
//! unread data makes the kernel send a reset, and a client still writing its
//! body sees "connection reset" instead of the answer waiting in its buffer
//! (RFC 9112 §9.6; nginx's `lingering_close`).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

/// Longest a closed connection keeps discarding what the client sends.
pub(super) const LINGER_TIME: Duration = Duration::from_secs(2);
/// Most bytes discarded before the socket is dropped anyway. Larger than the
/// bodies browsers and SDKs upload in one go, so their answer is read.
pub(super) const LINGER_BYTES: u64 = 8 * 1024 * 1024;

/// The client's TCP stream as hyper sees it. When hyper drops it (the
/// connection ended without an upgrade), the stream goes back to the
/// connection task through `back`, which lingers on it.
pub(super) struct LingeringStream {
    stream: Option<TcpStream>,
    back: Option<oneshot::Sender<TcpStream>>,
}

impl LingeringStream {
    /// Wraps `stream`; the receiver yields it once hyper is done with it.
    pub(super) fn new(stream: TcpStream) -> (Self, oneshot::Receiver<TcpStream>) {
        let (back, returned) = oneshot::channel();
        let wrapped = Self {
            stream: Some(stream),
            back: Some(back),
        };
        (wrapped, returned)
    }

    fn stream(&mut self) -> io::Result<&mut TcpStream> {
        self.stream
            .as_mut()
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotConnected))
    }
}

impl Drop for LingeringStream {
    fn drop(&mut self) {
        if let (Some(stream), Some(back)) = (self.stream.take(), self.back.take()) {
            // Nobody waiting (an upgraded tunnel outlived its connection
            // task): the tunnel's own end was orderly, drop it as is.
            let _ = back.send(stream);
        }
    }
}

impl AsyncRead for LingeringStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(self.stream()?).poll_read(cx, buf)
    }
}

impl AsyncWrite for LingeringStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(self.stream()?).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(self.stream()?).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream
            .as_ref()
            .is_some_and(AsyncWrite::is_write_vectored)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.stream()?).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.stream()?).poll_shutdown(cx)
    }
}

/// Closes the write side (the answer, and TLS's close_notify, are already
/// written) and discards what the client still sends, until it closes its
/// side, [`LINGER_BYTES`] were discarded or [`LINGER_TIME`] passed.
pub(super) async fn linger(mut stream: TcpStream) {
    use tokio::io::AsyncWriteExt;
    // Usually already done by the TLS layer's shutdown; a FIN tells the
    // client no more answers come, so it can stop sending.
    let _ = stream.shutdown().await;
    let drain = async {
        let mut discarded = 0u64;
        let mut buf = vec![0u8; 16 * 1024];
        while discarded < LINGER_BYTES {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => discarded += n as u64,
            }
        }
    };
    let _ = tokio::time::timeout(LINGER_TIME, drain).await;
}

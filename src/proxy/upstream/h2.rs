//! The HTTP/2 connection of one target, shared by every request to it:
//! streams are multiplexed, so one connection per target replaces a pool.
//! Its frames are driven by a spawned task (HTTP/2 serves many requests at
//! once, so no single request task can own it). Opened on first use and
//! again after it closes, by one request while the others wait.

use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::time::Instant;

use super::connector::{ConnectError, Connector};
use crate::proxy::forward_body::ForwardBody;

#[derive(Default)]
pub(crate) struct H2Shared {
    current: std::sync::Mutex<Option<http2::SendRequest<ForwardBody>>>,
    /// Held while a connection is being opened, so only one is.
    opening: tokio::sync::Mutex<()>,
}

impl H2Shared {
    fn open_sender(&self) -> Option<http2::SendRequest<ForwardBody>> {
        let current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        current.as_ref().filter(|s| !s.is_closed()).cloned()
    }

    /// Open connections: 0 or 1.
    pub(crate) fn live(&self) -> usize {
        usize::from(self.open_sender().is_some())
    }

    /// A handle to the open connection, opening it first if needed, by
    /// `deadline`.
    pub(crate) async fn sender(
        &self,
        connector: &Connector,
        deadline: Instant,
    ) -> Result<http2::SendRequest<ForwardBody>, ConnectError> {
        if let Some(sender) = self.open_sender() {
            return Ok(sender);
        }
        // A timer of its own only here, off the path of a request that finds
        // the connection open: a target that takes the connection but never
        // completes the HTTP/2 handshake fails as a connect, and is ejected.
        tokio::time::timeout_at(deadline, self.open(connector, deadline))
            .await
            .unwrap_or(Err(ConnectError::Timeout))
    }

    async fn open(
        &self,
        connector: &Connector,
        deadline: Instant,
    ) -> Result<http2::SendRequest<ForwardBody>, ConnectError> {
        let _opening = self.opening.lock().await;
        if let Some(sender) = self.open_sender() {
            return Ok(sender);
        }
        // Boxed, as for HTTP/1: the connect is rare, its state large.
        let (sender, connection) = Box::pin(async {
            let io = connector.connect(deadline).await?;
            http2::Builder::new(TokioExecutor::new())
                .timer(hyper_util::rt::TokioTimer::new())
                .handshake(TokioIo::new(io))
                .await
                .map_err(ConnectError::Handshake)
        })
        .await?;
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(error = %err, "upstream HTTP/2 connection ended");
            }
        });
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = Some(sender.clone());
        Ok(sender)
    }
}

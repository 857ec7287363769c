//! One HTTP/1.1 connection to a target, driven by whichever request task
//! holds it: the connection future is polled beside the request and then
//! inside the response body, so no task and no channel hop sit between a
//! request and its socket (as Pingora drives its HTTP/1 client).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::{http1, TrySendError};
use hyper_util::rt::TokioIo;
use pin_project_lite::pin_project;
use tokio::time::Instant;

use super::io::UpstreamIo;
use super::pool::Slot;
use crate::proxy::forward_body::ForwardBody;

/// hyper's connection future (with upgrades); its type is unnameable.
type Driver = Pin<Box<dyn Future<Output = hyper::Result<()>> + Send>>;

/// A live connection and its place in the target's pool.
pub struct H1Conn {
    sender: http1::SendRequest<ForwardBody>,
    /// `None` once the connection has ended (or was handed to a tunnel).
    driver: Option<Driver>,
    /// Counts this connection against the target's cap while it lives.
    slot: Slot,
    /// When it was last put back idle.
    pub idle_since: Instant,
    /// The worker whose runtime drives its socket (`crate::worker`): the
    /// one that opened it.
    pub worker: usize,
}

impl H1Conn {
    /// The HTTP/1.1 handshake over a fresh stream (no bytes are exchanged).
    pub async fn handshake(io: UpstreamIo, slot: Slot) -> hyper::Result<Self> {
        let (sender, connection) = http1::Builder::new().handshake(TokioIo::new(io)).await?;
        Ok(Self {
            sender,
            driver: Some(Box::pin(connection.with_upgrades())),
            worker: slot.worker(),
            slot,
            idle_since: Instant::now(),
        })
    }

    /// Sends `request`, driving the connection until the response head
    /// arrives. On an error that hyper raised before writing anything, the
    /// request comes back inside the error.
    pub fn send(
        &mut self,
        request: Request<ForwardBody>,
    ) -> Exchange<'_, impl Future<Output = Answer>> {
        // Handed to hyper here, not inside an `async fn`: that would keep
        // the request in its state beside hyper's future holding it, one
        // more copy in every request's future (rust-lang/rust#62958).
        Exchange {
            answer: self.sender.try_send_request(request),
            driver: &mut self.driver,
            asked: false,
        }
    }

    /// Advances the connection (reads, writes the request body) with `cx`.
    pub fn drive(&mut self, cx: &mut Context<'_>) {
        poll_driver(&mut self.driver, cx);
    }

    /// True when the previous exchange finished cleanly and the connection
    /// can carry another request now.
    pub fn is_reusable(&mut self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        poll_driver(&mut self.driver, &mut cx);
        self.driver.is_some() && self.sender.is_ready()
    }

    /// After a 101: the connection future must run to completion for the
    /// upgrade to be handed over, and the socket leaves the pool for good.
    pub fn into_upgrade(mut self) {
        if let Some(driver) = self.driver.take() {
            tokio::spawn(async move {
                if let Err(err) = driver.await {
                    tracing::debug!(error = %err, "upstream connection ended during upgrade");
                }
            });
        }
    }

    /// Returns the connection to its pool, or closes it when it cannot be
    /// used again.
    pub fn release(mut self) {
        if self.is_reusable() {
            self.return_to_pool();
        }
    }

    /// Returns a connection just found reusable to its pool, without
    /// polling it again.
    pub fn return_to_pool(self) {
        let home = self.slot.home();
        home.check_in(self);
    }
}

/// What [`H1Conn::send`] resolves to.
type Answer = Result<Response<Incoming>, TrySendError<Request<ForwardBody>>>;

pin_project! {
    /// One request's exchange on a connection: hyper's answer to it,
    /// polled right after the connection's driver.
    pub struct Exchange<'conn, A> {
        #[pin]
        answer: A,
        driver: &'conn mut Option<Driver>,
        // The first poll writes the request; later ones look for the answer.
        asked: bool,
    }
}

impl<A: Future<Output = Answer>> Future for Exchange<'_, A> {
    type Output = Answer;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Answer> {
        let mut this = self.project();
        // Woken once the request is out: usually the answer has come.
        // Read it without registering this task's waker anywhere, since
        // hyper would otherwise keep that waker for the body it read with
        // the head and wake the task when the body is taken, for nothing:
        // a whole extra poll of the client's connection. Only if the
        // answer is not complete is the waker registered.
        if *this.asked {
            poll_driver(this.driver, &mut unwoken());
            if let Poll::Ready(answer) = this.answer.as_mut().poll(&mut unwoken()) {
                return Poll::Ready(answer);
            }
        }
        *this.asked = true;
        poll_driver(this.driver, cx);
        this.answer.poll(&mut unwoken())
    }
}

/// A context for polling what only this connection's driver can advance:
/// the response to a request, and its body. Each is polled right after the
/// driver, in the same task, so it needs no waker of its own; with one,
/// hyper handing it over while the task polls the driver would wake the
/// task, and tokio would poll the whole task again for nothing.
pub(super) fn unwoken() -> Context<'static> {
    Context::from_waker(Waker::noop())
}

fn poll_driver(driver: &mut Option<Driver>, cx: &mut Context<'_>) {
    if let Some(running) = driver {
        if let Poll::Ready(result) = running.as_mut().poll(cx) {
            if let Err(err) = result {
                tracing::debug!(error = %err, "upstream connection ended");
            }
            *driver = None;
        }
    }
}

//! A deadline on a new connection's first bytes.
//!
//! Before the first request, the HTTP stack reads a few bytes to learn whether the client
//! speaks HTTP/1 or HTTP/2, and nothing times that read out: hyper's header-read timer only
//! starts once the HTTP/1 connection runs. A client that connects and sends nothing (or one byte
//! every few seconds) would hold a socket and its memory for as long as it likes. The acceptor
//! here wraps every accepted stream so that its first [`FIRST_BYTES`] bytes must arrive within
//! the header-read timeout; after that hyper's own timers take over.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum_server::accept::Accept;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// How many bytes the deadline covers: the length of the HTTP/2 connection preface, the most
/// the version detection reads. Any HTTP/1 request line is longer.
pub(crate) const FIRST_BYTES: usize = 24;

/// Wraps an acceptor so that every stream it yields carries the first-bytes deadline.
#[derive(Clone, Debug)]
pub(crate) struct FirstBytesDeadline<A> {
    inner: A,
    within: Duration,
}

impl<A> FirstBytesDeadline<A> {
    pub(crate) fn new(inner: A, within: Duration) -> Self {
        FirstBytesDeadline { inner, within }
    }
}

impl<A, I, S> Accept<I, S> for FirstBytesDeadline<A>
where
    A: Accept<I, S>,
    A::Future: Send + 'static,
    A::Stream: Send + 'static,
    A::Service: Send + 'static,
{
    type Stream = Deadlined<A::Stream>;
    type Service = A::Service;
    type Future = Pin<Box<dyn Future<Output = io::Result<(Self::Stream, Self::Service)>> + Send>>;

    fn accept(&self, stream: I, service: S) -> Self::Future {
        // The clock starts at the accept: a TLS handshake counts against it too (it has its own,
        // longer limit as well).
        let deadline = Box::pin(tokio::time::sleep(self.within));
        let accepted = self.inner.accept(stream, service);
        Box::pin(async move {
            let (inner, service) = accepted.await?;
            Ok((
                Deadlined {
                    inner,
                    deadline: Some(deadline),
                    seen: 0,
                },
                service,
            ))
        })
    }
}

/// A stream whose reads fail with `TimedOut` if its first [`FIRST_BYTES`] bytes are late.
#[derive(Debug)]
pub(crate) struct Deadlined<S> {
    inner: S,
    /// `None` once the first bytes arrived.
    deadline: Option<Pin<Box<Sleep>>>,
    seen: usize,
}

impl<S: AsyncRead + Unpin> AsyncRead for Deadlined<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        let read = Pin::new(&mut this.inner).poll_read(cx, buf);
        if read.is_ready() {
            this.seen = this.seen.saturating_add(buf.filled().len() - before);
            if this.seen >= FIRST_BYTES {
                this.deadline = None;
            }
            return read;
        }
        if let Some(deadline) = this.deadline.as_mut()
            && deadline.as_mut().poll(cx).is_ready()
        {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no request within the header-read timeout",
            )));
        }
        Poll::Pending
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Deadlined<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

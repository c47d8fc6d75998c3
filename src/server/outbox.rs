//! A connection's outbound queue, between the hub (which decides what to send) and the
//! connection's writer task (which puts it on the socket).
//!
//! Bounded twice: in frames (a client that reads nothing fills it with small frames) and in
//! bytes (a few large frames, say presence snapshots of a big channel, would otherwise hold
//! hundreds of megabytes for one slow client). A frame that does not fit marks the connection a
//! slow consumer; the hub then closes it with 1008.
//!
//! One frame slot is never used for data or pings: it is kept for the close frame, so a client
//! that stopped reading still gets a clean close code rather than a reset. Closing also wakes
//! the connection task (`closing`), which from then on gives the client a bounded time to finish
//! the close handshake and then drops the socket, whatever the client does.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use tokio::sync::{Notify, mpsc};

use crate::protocol::CloseCode;
use crate::protocol::frames::FrameKind;

/// What the writer task is asked to put on the socket.
#[derive(Debug)]
pub(crate) enum Outbound {
    Text {
        text: Arc<str>,
        kind: FrameKind,
        /// When the inbound frame that caused this one was read (for the fan-out histogram).
        cause: Option<Instant>,
    },
    Ping,
    Close(CloseCode),
}

/// The frame did not fit: the client is not reading fast enough.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Full;

/// The hub's end of one connection's queue.
#[derive(Debug)]
pub(crate) struct Outbox {
    tx: mpsc::Sender<Outbound>,
    queued_bytes: Arc<AtomicUsize>,
    max_bytes: usize,
    closing: Arc<Notify>,
}

/// The writer's end. Bytes count as queued until the writer has handed them to the socket.
#[derive(Debug)]
pub(crate) struct OutboxReceiver {
    rx: mpsc::Receiver<Outbound>,
    queued_bytes: Arc<AtomicUsize>,
}

impl Outbox {
    /// A queue for `frames` frames and `max_bytes` bytes of text, plus the close slot. The
    /// returned `Notify` fires once the queue has been closed.
    pub(crate) fn new(frames: usize, max_bytes: usize) -> (Outbox, OutboxReceiver, Arc<Notify>) {
        let (tx, rx) = mpsc::channel(frames.max(1) + 1);
        let queued_bytes = Arc::new(AtomicUsize::new(0));
        let closing = Arc::new(Notify::new());
        (
            Outbox {
                tx,
                queued_bytes: queued_bytes.clone(),
                max_bytes,
                closing: closing.clone(),
            },
            OutboxReceiver { rx, queued_bytes },
            closing,
        )
    }

    /// Queues a text frame, or says the client is too slow for it.
    pub(crate) fn push_text(
        &self,
        text: Arc<str>,
        kind: FrameKind,
        cause: Option<Instant>,
    ) -> Result<(), Full> {
        let len = text.len();
        if self.tx.capacity() <= 1 {
            return Err(Full);
        }
        // One atomic operation on the common path (this runs once per recipient of every
        // fan-out); only the hub adds, the writer subtracts in batches.
        if self.queued_bytes.fetch_add(len, Ordering::Relaxed) + len > self.max_bytes {
            self.queued_bytes.fetch_sub(len, Ordering::Relaxed);
            return Err(Full);
        }
        if self
            .tx
            .try_send(Outbound::Text { text, kind, cause })
            .is_err()
        {
            self.queued_bytes.fetch_sub(len, Ordering::Relaxed);
            return Err(Full);
        }
        Ok(())
    }

    /// Queues a keepalive ping unless that would take the close slot (then the client is not
    /// reading anyway, and the keepalive timeout will tell).
    pub(crate) fn push_ping(&self) -> bool {
        self.tx.capacity() > 1 && self.tx.try_send(Outbound::Ping).is_ok()
    }

    /// Queues the close frame (into the kept slot) and tells the connection task to start the
    /// close timeout.
    pub(crate) fn close(self, code: CloseCode) {
        let _ = self.tx.try_send(Outbound::Close(code));
        self.closing.notify_one();
    }

    /// Text bytes waiting for the writer.
    #[cfg(test)]
    pub(crate) fn queued_bytes(&self) -> usize {
        self.queued_bytes.load(Ordering::Relaxed)
    }
}

impl OutboxReceiver {
    pub(crate) async fn recv(&mut self) -> Option<Outbound> {
        self.rx.recv().await
    }

    pub(crate) fn try_recv(&mut self) -> Option<Outbound> {
        self.rx.try_recv().ok()
    }

    /// The writer handed `len` bytes of text to the socket.
    pub(crate) fn written(&self, len: usize) {
        self.queued_bytes.fetch_sub(len, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(n: usize) -> Arc<str> {
        "x".repeat(n).into()
    }

    #[test]
    fn frames_and_bytes_are_both_bounded_and_written_bytes_free_room() {
        let (o, mut rx, _) = Outbox::new(4, 1000);
        assert_eq!(o.push_text(text(600), FrameKind::Message, None), Ok(()));
        assert_eq!(
            o.push_text(text(600), FrameKind::Message, None),
            Err(Full),
            "over the byte bound"
        );
        assert_eq!(o.push_text(text(300), FrameKind::Message, None), Ok(()));
        assert_eq!(o.queued_bytes(), 900);
        let Some(Outbound::Text { text: t, .. }) = rx.try_recv() else {
            panic!("a text frame")
        };
        assert_eq!(o.queued_bytes(), 900, "counted until written");
        rx.written(t.len());
        assert_eq!(o.queued_bytes(), 300);
        for _ in 0..3 {
            assert_eq!(o.push_text(text(1), FrameKind::Message, None), Ok(()));
        }
        assert_eq!(
            o.push_text(text(1), FrameKind::Message, None),
            Err(Full),
            "over the frame bound"
        );
    }

    #[test]
    fn a_full_queue_keeps_its_slot_for_the_close_frame_even_against_pings() {
        let (o, mut rx, closing) = Outbox::new(2, 1 << 20);
        assert!(o.push_ping());
        assert_eq!(o.push_text(text(10), FrameKind::Message, None), Ok(()));
        assert!(!o.push_ping(), "the keepalive must not take the close slot");
        o.close(CloseCode::AdminDisconnect);
        let mut last = None;
        while let Some(item) = rx.try_recv() {
            last = Some(item);
        }
        assert!(
            matches!(last, Some(Outbound::Close(CloseCode::AdminDisconnect))),
            "{last:?}"
        );
        // The connection task learns about the close even if it was not waiting yet.
        let woke = futures_util::FutureExt::now_or_never(closing.notified());
        assert!(woke.is_some());
    }
}

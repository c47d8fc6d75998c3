//! The DataChannel wrapper: an ordered send queue with backpressure and an event
//! stream. Sends go out strictly in call order from one task; each `send` resolves when SCTP
//! has taken the bytes. The PeerConnection is built with a 1 MiB per-channel send buffer, so a
//! send waits while more than that is in flight; the low-water mark is half of it. More than
//! 256 queued sends is an overflow error, not unbounded memory.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use bytes::BytesMut;
use tokio::sync::{mpsc, oneshot};
use webrtc::data_channel::{DataChannel as RawDataChannel, DataChannelEvent};

use super::error::PeerError;
use super::events::{Emitter, EventStream};

/// Sends that may wait in the queue before `send` fails with an overflow.
pub const MAX_QUEUED_SENDS: usize = 256;

/// One data-channel message, as sent or received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DcMessage {
    /// A string message. Received text that is not valid UTF-8 is decoded lossily.
    Text(String),
    /// A binary message.
    Binary(Vec<u8>),
}

/// What a [`DataChannel`] reports on [`DataChannel::events`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DcEvent {
    /// The channel opened; `send` is accepted from now on.
    Open,
    /// A message from the remote side.
    Message(DcMessage),
    /// The channel closed (either side, or [`DataChannel::close`]); emitted once, and last.
    Close,
    /// webrtc-rs reported an error on the channel. It carries no detail and does not by itself
    /// close the channel: check [`DataChannel::is_open`] or wait for `Close`.
    Error,
}

struct Outgoing {
    msg: DcMessage,
    done: oneshot::Sender<Result<(), PeerError>>,
}

/// A data channel with ordered, backpressured sends. Cheap to clone.
#[derive(Clone)]
pub struct DataChannel {
    inner: Arc<Inner>,
}

struct Inner {
    label: String,
    raw: Arc<dyn RawDataChannel>,
    queue: mpsc::Sender<Outgoing>,
    queued: AtomicUsize,
    open: AtomicBool,
    closed: AtomicBool,
    events: Emitter<DcEvent>,
}

impl DataChannel {
    /// Wraps a raw channel and takes over its event stream (do not poll `raw` yourself).
    pub async fn wrap(raw: Arc<dyn RawDataChannel>) -> DataChannel {
        let label = raw.label().await.unwrap_or_default();
        let (tx, rx) = mpsc::channel(MAX_QUEUED_SENDS);
        let already_open = matches!(
            raw.ready_state().await,
            Ok(webrtc::data_channel::RTCDataChannelState::Open)
        );
        let _ = raw.set_buffered_amount_low_threshold(512 * 1024).await;
        let inner = Arc::new(Inner {
            label,
            raw: raw.clone(),
            queue: tx,
            queued: AtomicUsize::new(0),
            open: AtomicBool::new(already_open),
            closed: AtomicBool::new(false),
            events: Emitter::new(1024),
        });
        tokio::spawn(send_loop(inner.clone(), rx));
        tokio::spawn(event_loop(inner.clone()));
        DataChannel { inner }
    }

    /// The label the opening side gave the channel (empty if webrtc-rs could not report it).
    pub fn label(&self) -> &str {
        &self.inner.label
    }

    /// True between `Open` and `Close`: the only time [`Self::send`] accepts a message.
    pub fn is_open(&self) -> bool {
        self.inner.open.load(Ordering::SeqCst) && !self.inner.closed.load(Ordering::SeqCst)
    }

    /// True once the channel closed (either side closed it, or the connection went away).
    pub fn is_closed(&self) -> bool {
        self.inner.closed.load(Ordering::SeqCst)
    }

    /// Events: open, messages, close. Subscribe before the channel opens to see `Open`.
    pub fn events(&self) -> EventStream<DcEvent> {
        self.inner.events.subscribe()
    }

    /// Waits until the channel is open (or fails if it closes first).
    pub async fn wait_open(&self) -> Result<(), PeerError> {
        let mut ev = self.events();
        if self.is_open() {
            return Ok(());
        }
        loop {
            if self.is_open() {
                return Ok(());
            }
            match ev.next_item().await {
                Some(DcEvent::Open) => return Ok(()),
                Some(DcEvent::Close) | None => return Err(PeerError::DataChannelClosed),
                _ => {}
            }
        }
    }

    /// [`Self::send`] of a [`DcMessage::Text`].
    pub async fn send_text(&self, text: impl Into<String>) -> Result<(), PeerError> {
        self.send(DcMessage::Text(text.into())).await
    }

    /// [`Self::send`] of a [`DcMessage::Binary`].
    pub async fn send_binary(&self, data: impl Into<Vec<u8>>) -> Result<(), PeerError> {
        self.send(DcMessage::Binary(data.into())).await
    }

    /// Queues a message; resolves once SCTP accepted it. Fails at once when closed, when the
    /// channel is not open, or when [`MAX_QUEUED_SENDS`] sends are already waiting.
    pub async fn send(&self, msg: DcMessage) -> Result<(), PeerError> {
        if self.inner.closed.load(Ordering::SeqCst) || !self.inner.open.load(Ordering::SeqCst) {
            return Err(PeerError::DataChannelClosed);
        }
        let (done, wait) = oneshot::channel();
        let queued = self.inner.queued.fetch_add(1, Ordering::SeqCst);
        if queued >= MAX_QUEUED_SENDS {
            self.inner.queued.fetch_sub(1, Ordering::SeqCst);
            return Err(PeerError::DataChannelOverflow {
                queued,
                cap: MAX_QUEUED_SENDS,
            });
        }
        if self.inner.queue.try_send(Outgoing { msg, done }).is_err() {
            self.inner.queued.fetch_sub(1, Ordering::SeqCst);
            return Err(PeerError::DataChannelOverflow {
                queued,
                cap: MAX_QUEUED_SENDS,
            });
        }
        wait.await.unwrap_or(Err(PeerError::DataChannelClosed))
    }

    /// Sends waiting in the queue right now.
    pub fn queued(&self) -> usize {
        self.inner.queued.load(Ordering::SeqCst)
    }

    /// Idempotent. Pending sends fail.
    pub async fn close(&self) {
        if !self.inner.closed.swap(true, Ordering::SeqCst) {
            let _ = self.inner.raw.close().await;
            self.inner.events.emit(DcEvent::Close);
        }
    }
}

async fn send_loop(inner: Arc<Inner>, mut rx: mpsc::Receiver<Outgoing>) {
    while let Some(Outgoing { msg, done }) = rx.recv().await {
        let result = if inner.closed.load(Ordering::SeqCst) {
            Err(PeerError::DataChannelClosed)
        } else {
            // `send` waits while the channel's in-flight bytes exceed the PC's buffer limit.
            let r = match &msg {
                DcMessage::Text(t) => inner.raw.send_text(t).await,
                DcMessage::Binary(b) => inner.raw.send(BytesMut::from(&b[..])).await,
            };
            r.map_err(|e| PeerError::WebRtc(e.to_string()))
        };
        inner.queued.fetch_sub(1, Ordering::SeqCst);
        let _ = done.send(result);
    }
}

async fn event_loop(inner: Arc<Inner>) {
    while let Some(ev) = inner.raw.poll().await {
        match ev {
            DataChannelEvent::OnOpen => {
                inner.open.store(true, Ordering::SeqCst);
                inner.events.emit(DcEvent::Open);
            }
            DataChannelEvent::OnMessage(m) => {
                let msg = if m.is_string {
                    DcMessage::Text(String::from_utf8_lossy(&m.data).into_owned())
                } else {
                    DcMessage::Binary(m.data.to_vec())
                };
                inner.events.emit(DcEvent::Message(msg));
            }
            DataChannelEvent::OnClose => {
                if !inner.closed.swap(true, Ordering::SeqCst) {
                    inner.events.emit(DcEvent::Close);
                }
                break;
            }
            DataChannelEvent::OnError => inner.events.emit(DcEvent::Error),
            _ => {}
        }
    }
    if !inner.closed.swap(true, Ordering::SeqCst) {
        inner.events.emit(DcEvent::Close);
    }
}

//! Public event streams: bounded broadcast channels. Every subscriber gets every event; a
//! subscriber that falls more than the capacity behind is told how many it missed instead of
//! silently losing them.

use tokio::sync::broadcast;

/// A subscription to one kind of event.
pub struct EventStream<T> {
    rx: broadcast::Receiver<T>,
}

/// What `EventStream::next` yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event<T> {
    /// The next event, in emission order.
    Item(T),
    /// This many events were dropped because the subscriber was too slow.
    Missed(u64),
}

impl<T: Clone> EventStream<T> {
    pub(crate) fn new(rx: broadcast::Receiver<T>) -> Self {
        EventStream { rx }
    }

    /// The next event; `None` once the source is gone (peer closed).
    pub async fn next(&mut self) -> Option<Event<T>> {
        match self.rx.recv().await {
            Ok(v) => Some(Event::Item(v)),
            Err(broadcast::error::RecvError::Lagged(n)) => Some(Event::Missed(n)),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }

    /// The next item, skipping (and ignoring) lag notices.
    pub async fn next_item(&mut self) -> Option<T> {
        loop {
            match self.next().await? {
                Event::Item(v) => return Some(v),
                Event::Missed(_) => continue,
            }
        }
    }
}

/// The sending side, held by the peer objects.
#[derive(Debug)]
pub(crate) struct Emitter<T> {
    tx: broadcast::Sender<T>,
}

impl<T: Clone> Emitter<T> {
    pub(crate) fn new(capacity: usize) -> Self {
        Emitter {
            tx: broadcast::channel(capacity.max(1)).0,
        }
    }

    pub(crate) fn emit(&self, v: T) {
        // No subscriber is fine: nobody is listening for this kind of event.
        let _ = self.tx.send(v);
    }

    pub(crate) fn subscribe(&self) -> EventStream<T> {
        EventStream::new(self.tx.subscribe())
    }
}

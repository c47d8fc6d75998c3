//! A small bounded queue between a device thread (or an audio callback) and the blocking
//! consumer of a source or sink.
//!
//! Why not `std::sync::mpsc::sync_channel`: a capture device must never block on a slow
//! consumer, and when the queue is full the *oldest* item is the one to drop (a camera frame or
//! audio sample that is already late is worth less than a fresh one). A channel can only refuse
//! the newest. The queue also carries a "closed" reason, so a consumer learns *why* the device
//! stopped (unplugged, backend error) instead of just timing out.
//!
//! Locking: the critical sections are a few `VecDeque` operations, short enough for a real-time
//! audio callback in practice. A poisoned lock is recovered (the data is plain samples), so no
//! thread ever panics on it.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Why a wait on the queue ended without data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RingWait {
    /// Nothing (or not enough) arrived before the deadline.
    TimedOut,
    /// The producer closed the queue; the string says why.
    Closed(String),
}

struct State<T> {
    items: VecDeque<T>,
    closed: Option<String>,
    dropped: u64,
}

pub(crate) struct Ring<T> {
    state: Mutex<State<T>>,
    ready: Condvar,
    capacity: usize,
}

impl<T> Ring<T> {
    pub(crate) fn new(capacity: usize) -> Ring<T> {
        let capacity = capacity.max(1);
        Ring {
            state: Mutex::new(State {
                items: VecDeque::with_capacity(capacity),
                closed: None,
                dropped: 0,
            }),
            ready: Condvar::new(),
            capacity,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends items, dropping the oldest ones when the queue is full (a producer that must
    /// never wait: camera thread, microphone callback).
    pub(crate) fn push_overwrite(&self, items: impl IntoIterator<Item = T>) {
        let mut s = self.lock();
        for item in items {
            if s.items.len() == self.capacity {
                s.items.pop_front();
                s.dropped += 1;
            }
            s.items.push_back(item);
        }
        drop(s);
        self.ready.notify_all();
    }

    /// Appends as many items as fit and returns how many were taken (a sink that refuses excess
    /// instead of discarding what is already queued for playout).
    pub(crate) fn push_bounded(&self, items: impl IntoIterator<Item = T>) -> usize {
        let mut s = self.lock();
        let mut taken = 0;
        for item in items {
            if s.items.len() == self.capacity {
                break;
            }
            s.items.push_back(item);
            taken += 1;
        }
        drop(s);
        self.ready.notify_all();
        taken
    }

    /// Free slots right now.
    pub(crate) fn free(&self) -> usize {
        self.capacity - self.lock().items.len()
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().items.len()
    }

    /// How many items were dropped because the consumer was too slow.
    pub(crate) fn dropped(&self) -> u64 {
        self.lock().dropped
    }

    /// Marks the queue closed (the first reason wins) and wakes every waiter. Items already
    /// queued can still be taken.
    pub(crate) fn close(&self, reason: impl Into<String>) {
        let mut s = self.lock();
        if s.closed.is_none() {
            s.closed = Some(reason.into());
        }
        drop(s);
        self.ready.notify_all();
    }

    pub(crate) fn closed(&self) -> Option<String> {
        self.lock().closed.clone()
    }

    /// Takes one item, waiting at most `timeout`.
    pub(crate) fn pop_wait(&self, timeout: Duration) -> Result<T, RingWait> {
        let deadline = Instant::now() + timeout;
        let mut s = self.lock();
        loop {
            if let Some(item) = s.items.pop_front() {
                return Ok(item);
            }
            if let Some(reason) = &s.closed {
                return Err(RingWait::Closed(reason.clone()));
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(RingWait::TimedOut);
            }
            s = self
                .ready
                .wait_timeout(s, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Takes exactly `n` items, waiting at most `timeout` for all of them to be queued. On
    /// failure nothing is taken, so a later call still sees a contiguous stream.
    pub(crate) fn pop_exact_wait(&self, n: usize, timeout: Duration) -> Result<Vec<T>, RingWait> {
        let deadline = Instant::now() + timeout;
        let mut s = self.lock();
        loop {
            if s.items.len() >= n {
                return Ok(s.items.drain(..n).collect());
            }
            if let Some(reason) = &s.closed {
                return Err(RingWait::Closed(reason.clone()));
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(RingWait::TimedOut);
            }
            s = self
                .ready
                .wait_timeout(s, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Moves up to `out.len()` items into `out` without waiting; returns how many were moved
    /// (an output callback fills the rest with silence).
    pub(crate) fn pop_into(&self, out: &mut [T]) -> usize {
        let mut s = self.lock();
        let n = out.len().min(s.items.len());
        for (slot, item) in out.iter_mut().zip(s.items.drain(..n)) {
            *slot = item;
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn overwrite_drops_the_oldest_and_bounded_refuses_the_excess() {
        let r = Ring::new(3);
        r.push_overwrite([1, 2, 3, 4, 5]);
        assert_eq!(r.len(), 3);
        assert_eq!(r.dropped(), 2);
        assert_eq!(r.pop_wait(Duration::ZERO), Ok(3));
        assert_eq!(r.push_bounded([6, 7, 8]), 1, "one slot was free");
        assert_eq!(r.pop_exact_wait(3, Duration::ZERO), Ok(vec![4, 5, 6]));
        let mut out = [0; 4];
        assert_eq!(r.pop_into(&mut out), 0);
        assert_eq!(r.free(), 3);
    }

    #[test]
    fn waits_time_out_and_close_wakes_waiters_with_the_reason() {
        let r = Arc::new(Ring::<u8>::new(2));
        let t0 = Instant::now();
        assert_eq!(
            r.pop_wait(Duration::from_millis(50)),
            Err(RingWait::TimedOut)
        );
        assert!(t0.elapsed() >= Duration::from_millis(50));
        r.push_overwrite([1]);
        assert_eq!(
            r.pop_exact_wait(2, Duration::from_millis(10)),
            Err(RingWait::TimedOut)
        );
        assert_eq!(r.len(), 1, "a failed exact pop takes nothing");

        let closer = Arc::clone(&r);
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            closer.close("unplugged");
            closer.close("second reason is ignored");
        });
        let t0 = Instant::now();
        assert_eq!(
            r.pop_exact_wait(2, Duration::from_secs(5)),
            Err(RingWait::Closed("unplugged".into()))
        );
        assert!(t0.elapsed() < Duration::from_secs(2), "woken by close");
        let _ = t.join();
        assert_eq!(r.pop_wait(Duration::ZERO), Ok(1), "queued items survive");
        assert_eq!(r.closed().as_deref(), Some("unplugged"));
    }
}

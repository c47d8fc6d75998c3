//! A webrtc-rs runtime whose sleeps are capped.
//!
//! webrtc 0.21's driver only flushes DTLS/SCTP/DCEP flights produced by internal state changes
//! when its timer fires, and the next timer is often the 200 ms ICE tick: connection setup then
//! costs 200–600 ms. Capping every driver sleep at ~2 ms turns that into < 10 ms for about 1 %
//! of a core per idle connection. Everything else delegates to the tokio runtime.
//!
//! The runtime also wraps every UDP socket of its connection in a [`NetworkGate`], so the
//! Troubleshoot action "blackhole this peer's media for N s" can silence one connection for real
//! (ICE consent and media alike) without root, firewalls or touching other peers.

use std::future::Future;
use std::io::IoSliceMut;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use webrtc::runtime::{
    AsyncInterval, AsyncTcpListener, AsyncTcpStream, AsyncUdpSocket, JoinHandle, RecvMeta, Runtime,
    TokioRuntime, Transmit,
};

/// A switch that drops every datagram of one peer's connections until a deadline.
///
/// Owned by the RemotePeer, so it outlives connection generations: a blackhole started before
/// an ICE restart or a rebuild keeps covering the new connection until it ends.
#[derive(Debug)]
pub struct NetworkGate {
    base: Instant,
    /// Nanoseconds after `base` until which traffic is dropped (0: open).
    closed_until_ns: AtomicU64,
}

impl Default for NetworkGate {
    fn default() -> Self {
        NetworkGate {
            base: Instant::now(),
            closed_until_ns: AtomicU64::new(0),
        }
    }
}

impl NetworkGate {
    /// Drops all traffic from `now` for `d` (replaces any earlier deadline; zero reopens).
    pub fn close_for(&self, now: Instant, d: Duration) {
        let until = now.saturating_duration_since(self.base) + d;
        let ns = if d.is_zero() {
            0
        } else {
            u64::try_from(until.as_nanos()).unwrap_or(u64::MAX)
        };
        self.closed_until_ns.store(ns, Ordering::Relaxed);
    }

    /// Whether traffic is being dropped at `now`.
    pub fn is_closed(&self, now: Instant) -> bool {
        let until = self.closed_until_ns.load(Ordering::Relaxed);
        until != 0 && (now.saturating_duration_since(self.base).as_nanos() as u64) < until
    }
}

/// A UDP socket whose datagrams vanish (both ways) while its gate is closed.
#[derive(Debug)]
struct GatedSocket {
    inner: Arc<dyn AsyncUdpSocket>,
    gate: Arc<NetworkGate>,
}

impl AsyncUdpSocket for GatedSocket {
    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn poll_send(
        &self,
        cx: &mut Context<'_>,
        transmit: &Transmit<'_>,
    ) -> Poll<std::io::Result<usize>> {
        if self.gate.is_closed(Instant::now()) {
            // "Sent" into the void, like a link that silently eats packets.
            return Poll::Ready(Ok(transmit.contents.len()));
        }
        self.inner.poll_send(cx, transmit)
    }

    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<std::io::Result<usize>> {
        loop {
            match self.inner.poll_recv(cx, bufs, meta) {
                // Drain and discard; polling again re-registers the waker when nothing is left.
                Poll::Ready(Ok(_)) if self.gate.is_closed(Instant::now()) => continue,
                other => return other,
            }
        }
    }

    fn max_gso_segments(&self) -> usize {
        self.inner.max_gso_segments()
    }

    fn max_gro_segments(&self) -> usize {
        self.inner.max_gro_segments()
    }
}

/// The webrtc-rs [`Runtime`] each connection runs on: tokio underneath, every driver sleep capped
/// at `max_sleep`, and UDP sockets behind a [`NetworkGate`] when one is given.
#[derive(Debug)]
pub struct ClampedRuntime {
    inner: TokioRuntime,
    max_sleep: Duration,
    gate: Option<Arc<NetworkGate>>,
}

impl ClampedRuntime {
    /// `max_sleep` of zero disables the cap.
    pub fn new(max_sleep: Duration) -> Self {
        ClampedRuntime {
            inner: TokioRuntime,
            max_sleep,
            gate: None,
        }
    }

    /// Every UDP socket this runtime wraps obeys `gate`.
    pub fn with_gate(mut self, gate: Arc<NetworkGate>) -> Self {
        self.gate = Some(gate);
        self
    }
}

impl Runtime for ClampedRuntime {
    fn spawn(&self, future: Pin<Box<dyn Future<Output = ()> + Send>>) -> Box<dyn JoinHandle> {
        self.inner.spawn(future)
    }

    fn spawn_reactor(
        &self,
        reactor_pool_size: usize,
        future: Pin<Box<dyn Future<Output = ()> + Send>>,
    ) -> Box<dyn JoinHandle> {
        self.inner.spawn_reactor(reactor_pool_size, future)
    }

    fn wrap_udp_socket(
        &self,
        socket: std::net::UdpSocket,
    ) -> std::io::Result<Arc<dyn AsyncUdpSocket>> {
        let inner = self.inner.wrap_udp_socket(socket)?;
        Ok(match &self.gate {
            Some(gate) => Arc::new(GatedSocket {
                inner,
                gate: gate.clone(),
            }),
            None => inner,
        })
    }

    fn wrap_tcp_listener(
        &self,
        listener: std::net::TcpListener,
    ) -> std::io::Result<Arc<dyn AsyncTcpListener>> {
        self.inner.wrap_tcp_listener(listener)
    }

    fn connect_tcp<'a>(
        &'a self,
        remote_addr: SocketAddr,
    ) -> Pin<Box<dyn Future<Output = std::io::Result<Arc<dyn AsyncTcpStream>>> + Send + 'a>> {
        self.inner.connect_tcp(remote_addr)
    }

    fn resolve_host<'a>(
        &'a self,
        host: &'a str,
    ) -> Pin<Box<dyn Future<Output = std::io::Result<Vec<SocketAddr>>> + Send + 'a>> {
        self.inner.resolve_host(host)
    }

    fn now(&self) -> Instant {
        self.inner.now()
    }

    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        let d = if self.max_sleep.is_zero() {
            duration
        } else {
            duration.min(self.max_sleep)
        };
        self.inner.sleep(d)
    }

    fn interval(&self, period: Duration) -> Box<dyn AsyncInterval> {
        self.inner.interval(period)
    }

    fn block_on(&self, future: Pin<Box<dyn Future<Output = ()> + '_>>) {
        self.inner.block_on(future)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gate_closes_for_the_given_time_then_reopens() {
        let g = NetworkGate::default();
        let t0 = Instant::now();
        assert!(!g.is_closed(t0));
        g.close_for(t0, Duration::from_secs(2));
        assert!(g.is_closed(t0));
        assert!(g.is_closed(t0 + Duration::from_millis(1999)));
        assert!(!g.is_closed(t0 + Duration::from_secs(2)));
        g.close_for(t0, Duration::ZERO);
        assert!(!g.is_closed(t0));
    }

    #[tokio::test]
    async fn a_closed_gate_drops_datagrams_both_ways() {
        let gate = Arc::new(NetworkGate::default());
        let rt = ClampedRuntime::new(Duration::ZERO).with_gate(gate.clone());
        let wrap = |s: std::net::UdpSocket| {
            s.set_nonblocking(true).unwrap();
            rt.wrap_udp_socket(s).unwrap()
        };
        let a = wrap(std::net::UdpSocket::bind("127.0.0.1:0").unwrap());
        let plain = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        plain
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let b_addr = plain.local_addr().unwrap();
        let a_addr = a.local_addr().unwrap();
        let mut buf = [0u8; 64];

        // Open: both directions pass.
        a.send_to(b"one", b_addr).await.unwrap();
        assert_eq!(plain.recv(&mut buf).unwrap(), 3);
        plain.send_to(b"two", a_addr).unwrap();
        let (n, _) = a.recv_from(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"two");

        // Closed: a's sends vanish, datagrams to a are discarded.
        gate.close_for(Instant::now(), Duration::from_millis(400));
        assert_eq!(a.send_to(b"lost", b_addr).await.unwrap(), 4);
        assert!(
            plain.recv(&mut buf).is_err(),
            "a datagram got through a closed gate"
        );
        plain.send_to(b"eaten", a_addr).unwrap();
        // A pending receive (the driver always has one) sees nothing while closed.
        let r = tokio::time::timeout(Duration::from_millis(200), a.recv_from(&mut buf)).await;
        assert!(r.is_err(), "a datagram got through a closed gate");

        // After the deadline the next datagram arrives, and the eaten one never does.
        tokio::time::sleep(Duration::from_millis(250)).await;
        plain.send_to(b"three", a_addr).unwrap();
        let (n, _) = tokio::time::timeout(Duration::from_secs(2), a.recv_from(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&buf[..n], b"three");
    }
}

//! Rate limiters as pure state: time goes in as an argument, decisions come out.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// A classic token bucket: `burst` tokens at most, refilled at `rate` tokens per second.
/// Every inbound text frame takes one token; an empty bucket closes the connection with 4011.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket. A `rate` of 0 disables limiting.
    pub fn new(rate: f64, burst: f64, now: Instant) -> Self {
        TokenBucket {
            rate,
            burst,
            tokens: burst,
            last: now,
        }
    }

    /// Takes one token if there is one. Time going backwards is treated as no time passing.
    pub fn try_take(&mut self, now: Instant) -> bool {
        if self.rate <= 0.0 {
            return true;
        }
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = self.last.max(now);
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Per-source-IP connection attempts in a sliding window (60 per 60 s by default); over the
/// limit the upgrade is refused with HTTP 429. Memory stays bounded: entries whose window has
/// passed are swept whenever the table grows past `max_tracked`.
#[derive(Debug)]
pub struct ConnectRateLimiter {
    limit: u32,
    window: Duration,
    max_tracked: usize,
    seen: HashMap<IpAddr, (Instant, u32)>,
}

impl ConnectRateLimiter {
    /// `limit` of 0 disables the check.
    pub fn new(limit: u32, window: Duration) -> Self {
        ConnectRateLimiter {
            limit,
            window,
            max_tracked: 100_000,
            seen: HashMap::new(),
        }
    }

    /// Records an attempt from `ip` and says whether it may proceed. The window is fixed per IP,
    /// starting at its first attempt, which is simple and never lets more than `2 × limit`
    /// through in any `window`.
    pub fn allow(&mut self, ip: IpAddr, now: Instant) -> bool {
        if self.limit == 0 {
            return true;
        }
        if self.seen.len() >= self.max_tracked {
            let window = self.window;
            self.seen
                .retain(|_, (start, _)| now.saturating_duration_since(*start) < window);
        }
        let entry = self.seen.entry(ip).or_insert((now, 0));
        if now.saturating_duration_since(entry.0) >= self.window {
            *entry = (now, 0);
        }
        if entry.1 >= self.limit {
            return false;
        }
        entry.1 += 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_burst_then_sustained_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(100.0, 200.0, t0);
        for i in 0..200 {
            assert!(b.try_take(t0), "burst token {i}");
        }
        assert!(!b.try_take(t0), "201st frame in the same instant");
        // 10 ms refill one token at 100/s.
        assert!(b.try_take(t0 + Duration::from_millis(10)));
        assert!(!b.try_take(t0 + Duration::from_millis(10)));
        // One second of silence refills 100, not more than burst.
        let t1 = t0 + Duration::from_millis(1010);
        for _ in 0..100 {
            assert!(b.try_take(t1));
        }
        assert!(!b.try_take(t1));
        // A long silence caps at the burst.
        let t2 = t1 + Duration::from_secs(60);
        let taken = (0..500).take_while(|_| b.try_take(t2)).count();
        assert_eq!(taken, 200);
    }

    #[test]
    fn bucket_sustained_100_per_second_is_never_refused() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(100.0, 200.0, t0);
        for i in 0..10_000u64 {
            assert!(b.try_take(t0 + Duration::from_millis(10 * i)), "frame {i}");
        }
    }

    #[test]
    fn bucket_zero_rate_is_unlimited_and_time_may_go_backwards() {
        let t0 = Instant::now() + Duration::from_secs(5);
        let mut b = TokenBucket::new(0.0, 0.0, t0);
        assert!((0..10_000).all(|_| b.try_take(t0)));
        let mut b = TokenBucket::new(1.0, 1.0, t0);
        assert!(b.try_take(t0));
        assert!(!b.try_take(t0 - Duration::from_secs(1)));
    }

    #[test]
    fn connect_limiter_windows_per_ip() {
        let t0 = Instant::now();
        let mut l = ConnectRateLimiter::new(60, Duration::from_secs(60));
        let a: IpAddr = "127.0.0.1".parse().expect("ip");
        let b: IpAddr = "127.0.0.2".parse().expect("ip");
        for _ in 0..60 {
            assert!(l.allow(a, t0));
        }
        assert!(!l.allow(a, t0 + Duration::from_secs(59)));
        assert!(l.allow(b, t0), "other IPs are independent");
        assert!(l.allow(a, t0 + Duration::from_secs(60)), "window passed");
        let mut off = ConnectRateLimiter::new(0, Duration::from_secs(60));
        assert!((0..1000).all(|_| off.allow(a, t0)));
    }
}

//! Rate limiters as pure state: time goes in as an argument, decisions come out.

use std::collections::{HashMap, VecDeque};
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

/// Per-source connection attempts in a fixed window (60 per 60 s by default); over the limit
/// the upgrade is refused with HTTP 429.
///
/// A source is an IPv4 address or an IPv6 /64: a single IPv6 subscriber usually holds a whole
/// /64, so keying by the full address would let one client rotate through 2^64 budgets.
/// Memory is bounded: at most `max_tracked` sources are remembered; past that the one whose
/// window started longest ago is forgotten. Each attempt costs O(1) amortised (an insertion
/// order queue with lazy removal, never a scan of the table).
#[derive(Debug)]
pub struct ConnectRateLimiter {
    limit: u32,
    window: Duration,
    max_tracked: usize,
    seen: HashMap<SourceKey, (Instant, u32)>,
    /// Window starts in the order they happened; an entry whose start no longer matches the
    /// table (the window restarted) is stale and skipped.
    order: VecDeque<(SourceKey, Instant)>,
}

/// What a budget is kept for: an IPv4 address, or the first 64 bits of an IPv6 address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum SourceKey {
    V4(u32),
    V6Prefix(u64),
}

impl From<IpAddr> for SourceKey {
    fn from(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(a) => SourceKey::V4(u32::from(a)),
            IpAddr::V6(a) => match a.to_ipv4_mapped() {
                Some(v4) => SourceKey::V4(u32::from(v4)),
                None => SourceKey::V6Prefix((u128::from(a) >> 64) as u64),
            },
        }
    }
}

impl ConnectRateLimiter {
    /// `limit` of 0 disables the check.
    pub fn new(limit: u32, window: Duration) -> Self {
        ConnectRateLimiter::with_capacity(limit, window, 100_000)
    }

    /// As [`Self::new`], remembering at most `max_tracked` sources.
    pub fn with_capacity(limit: u32, window: Duration, max_tracked: usize) -> Self {
        ConnectRateLimiter {
            limit,
            window,
            max_tracked: max_tracked.max(1),
            seen: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// Sources currently remembered.
    pub fn tracked(&self) -> usize {
        self.seen.len()
    }

    /// Records an attempt from `ip` and says whether it may proceed. The window is fixed per
    /// source, starting at its first attempt, which is simple and never lets more than
    /// `2 × limit` through in any `window`.
    pub fn allow(&mut self, ip: IpAddr, now: Instant) -> bool {
        if self.limit == 0 {
            return true;
        }
        let key = SourceKey::from(ip);
        let window = self.window;
        let entry = match self.seen.get_mut(&key) {
            Some(e) if now.saturating_duration_since(e.0) < window => e,
            _ => {
                self.seen.insert(key, (now, 0));
                self.order.push_back((key, now));
                self.evict(now);
                match self.seen.get_mut(&key) {
                    Some(e) => e,
                    None => return true,
                }
            }
        };
        if entry.1 >= self.limit {
            return false;
        }
        entry.1 += 1;
        true
    }

    /// Forgets sources whose window has passed, and the oldest ones beyond the capacity.
    fn evict(&mut self, now: Instant) {
        while let Some(&(key, start)) = self.order.front() {
            let current = self.seen.get(&key).map(|e| e.0);
            let stale = current != Some(start);
            let expired = now.saturating_duration_since(start) >= self.window;
            let over = self.seen.len() > self.max_tracked;
            if !(stale || expired || over) {
                break;
            }
            self.order.pop_front();
            if !stale {
                self.seen.remove(&key);
            }
        }
    }
}

/// Proxies (load balancers) whose forwarding headers are believed, as address/prefix pairs.
///
/// Behind a load balancer every client arrives from the balancer's address, so the per-source
/// connect budget would be shared by everybody. A connection from a trusted proxy is therefore
/// keyed by the client address the proxy reports: the right-most address in `X-Forwarded-For`
/// (or `Forwarded: for=`) that is not itself a trusted proxy. Headers from anyone else are
/// ignored, since any client can write them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TrustedProxies(Vec<(IpAddr, u8)>);

impl TrustedProxies {
    /// Parses `ADDR` or `ADDR/PREFIX` entries (IPv4 or IPv6).
    pub fn parse(entries: &[String]) -> Result<TrustedProxies, String> {
        let mut out = Vec::with_capacity(entries.len());
        for e in entries {
            let (addr, prefix) = match e.split_once('/') {
                Some((a, p)) => (a, Some(p)),
                None => (e.as_str(), None),
            };
            let ip: IpAddr = addr
                .trim()
                .parse()
                .map_err(|_| format!("'{e}' is not an IP address or CIDR block"))?;
            let max = if ip.is_ipv4() { 32 } else { 128 };
            let prefix = match prefix {
                None => max,
                Some(p) => p
                    .trim()
                    .parse::<u8>()
                    .ok()
                    .filter(|p| *p <= max)
                    .ok_or_else(|| format!("'{e}' has an invalid prefix length"))?,
            };
            out.push((ip, prefix));
        }
        Ok(TrustedProxies(out))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.0
            .iter()
            .any(|&(net, prefix)| match (canonical(net), ip) {
                (IpAddr::V4(n), IpAddr::V4(a)) => {
                    let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
                    u32::from(n) & mask == u32::from(a) & mask
                }
                (IpAddr::V6(n), IpAddr::V6(a)) => {
                    let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
                    u128::from(n) & mask == u128::from(a) & mask
                }
                _ => false,
            })
    }

    /// The address to budget a connection by: `peer` itself unless it is a trusted proxy that
    /// reports the client in `x_forwarded_for` or `forwarded` (header values as received).
    pub fn client_ip(
        &self,
        peer: IpAddr,
        x_forwarded_for: Option<&str>,
        forwarded: Option<&str>,
    ) -> IpAddr {
        if !self.contains(peer) {
            return peer;
        }
        let mut chain: Vec<IpAddr> = Vec::new();
        if let Some(f) = forwarded {
            for part in f.split(',') {
                for pair in part.split(';') {
                    let Some((k, v)) = pair.trim().split_once('=') else {
                        continue;
                    };
                    if k.trim().eq_ignore_ascii_case("for")
                        && let Some(ip) = parse_forwarded_node(v)
                    {
                        chain.push(ip);
                    }
                }
            }
        } else if let Some(x) = x_forwarded_for {
            chain.extend(x.split(',').filter_map(|a| a.trim().parse::<IpAddr>().ok()));
        }
        chain
            .into_iter()
            .rev()
            .find(|ip| !self.contains(*ip))
            .unwrap_or(peer)
    }
}

/// `Forwarded: for=` values: `192.0.2.1`, `"192.0.2.1:4711"`, `"[2001:db8::1]:4711"`.
fn parse_forwarded_node(v: &str) -> Option<IpAddr> {
    let v = v.trim().trim_matches('"');
    if let Some(rest) = v.strip_prefix('[') {
        return rest.split(']').next()?.parse().ok();
    }
    v.parse()
        .ok()
        .or_else(|| v.rsplit_once(':').and_then(|(a, _)| a.parse().ok()))
}

/// IPv4-mapped IPv6 addresses compare as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
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

    #[test]
    fn ipv6_clients_share_one_budget_per_64_prefix() {
        let t0 = Instant::now();
        let mut l = ConnectRateLimiter::new(3, Duration::from_secs(60));
        let addrs: Vec<IpAddr> = ["2001:db8:1:2::1", "2001:db8:1:2::2", "2001:db8:1:2:ffff::9"]
            .iter()
            .map(|a| a.parse().expect("ip"))
            .collect();
        for a in &addrs {
            assert!(l.allow(*a, t0));
        }
        let same_64: IpAddr = "2001:db8:1:2:abcd::1".parse().expect("ip");
        assert!(
            !l.allow(same_64, t0),
            "a fourth address in the same /64 is over the budget"
        );
        let other_64: IpAddr = "2001:db8:1:3::1".parse().expect("ip");
        assert!(l.allow(other_64, t0));
    }

    #[test]
    fn the_table_stays_bounded_when_every_entry_is_fresh() {
        let t0 = Instant::now();
        let mut l = ConnectRateLimiter::with_capacity(60, Duration::from_secs(60), 1_000);
        for i in 0..50_000u32 {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            assert!(l.allow(ip, t0 + Duration::from_micros(u64::from(i))));
        }
        assert!(l.tracked() <= 1_000, "{} entries", l.tracked());
    }

    #[test]
    fn forwarding_headers_count_only_from_trusted_proxies() {
        let t = TrustedProxies::parse(&["10.0.0.0/8".into(), "2001:db8::1".into()]).expect("parse");
        let lb: IpAddr = "10.1.2.3".parse().expect("ip");
        let client: IpAddr = "203.0.113.7".parse().expect("ip");
        let stranger: IpAddr = "198.51.100.9".parse().expect("ip");
        // From the balancer: the right-most untrusted address of the chain.
        assert_eq!(
            t.client_ip(lb, Some("1.2.3.4, 203.0.113.7, 10.9.9.9"), None),
            client
        );
        assert_eq!(
            t.client_ip(
                lb,
                None,
                Some("for=1.2.3.4, for=\"203.0.113.7:4711\";proto=https")
            ),
            client
        );
        assert_eq!(
            t.client_ip(lb, None, Some("for=\"[2001:db8:5::7]:443\"")),
            "2001:db8:5::7".parse::<IpAddr>().expect("ip")
        );
        // Garbage or an all-trusted chain: the balancer itself.
        assert_eq!(t.client_ip(lb, Some("not an ip"), None), lb);
        assert_eq!(t.client_ip(lb, Some("10.0.0.1"), None), lb);
        // From anyone else the headers are ignored (anyone can write them).
        assert_eq!(t.client_ip(stranger, Some("203.0.113.7"), None), stranger);
        // IPv4-mapped IPv6 peers match IPv4 blocks.
        assert!(t.contains("::ffff:10.0.0.5".parse().expect("ip")));
        assert!(t.contains("2001:db8::1".parse().expect("ip")));
        assert!(!t.contains("2001:db8::2".parse().expect("ip")));
        assert!(TrustedProxies::parse(&["10.0.0.0/33".into()]).is_err());
        assert!(TrustedProxies::parse(&["example.com".into()]).is_err());
    }
}

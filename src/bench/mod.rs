//! Load generators behind `meshcall bench …`. They print numbers; they assert nothing, because
//! speed targets belong in benchmarks, not in timed tests.

pub mod call;
pub mod loss;
pub mod media;
pub mod server;
pub mod ui;

/// CPU seconds (user + system) a process has used, from `/proc/PID/stat`.
pub fn process_cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some(ticks / hz.max(1.0))
}

/// Resident memory of a process in MiB, from `/proc/PID/status`.
pub fn process_rss_mib(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// A log-bucketed latency histogram (1 µs … ~17 min, ~4 % resolution), cheap enough to record
/// every sample of a run.
#[derive(Debug, Clone)]
pub struct LatencyHistogram {
    counts: Vec<u64>,
    total: u64,
}

const SUB_BUCKETS: u32 = 16;

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram {
            counts: vec![0; (40 * SUB_BUCKETS) as usize],
            total: 0,
        }
    }
}

impl LatencyHistogram {
    fn index(us: u64) -> usize {
        let v = us.max(1);
        let exp = 63 - v.leading_zeros();
        let sub = if exp >= 4 {
            ((v >> (exp - 4)) & 0xF) as u32
        } else {
            ((v << (4 - exp)) & 0xF) as u32
        };
        ((exp * SUB_BUCKETS + sub) as usize).min(40 * SUB_BUCKETS as usize - 1)
    }

    fn lower_bound(idx: usize) -> u64 {
        let exp = idx as u32 / SUB_BUCKETS;
        let sub = u64::from(idx as u32 % SUB_BUCKETS);
        if exp >= 4 {
            (16 + sub) << (exp - 4)
        } else {
            (16 + sub) >> (4 - exp)
        }
    }

    pub fn record_us(&mut self, us: u64) {
        self.counts[Self::index(us)] += 1;
        self.total += 1;
    }

    pub fn merge(&mut self, other: &LatencyHistogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.total += other.total;
    }

    pub fn count(&self) -> u64 {
        self.total
    }

    /// The value at quantile `q` (0..=1), in microseconds (bucket lower bound).
    pub fn quantile_us(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Self::lower_bound(i);
            }
        }
        Self::lower_bound(self.counts.len() - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_within_bucket_resolution() {
        let mut h = LatencyHistogram::default();
        for us in 1..=10_000u64 {
            h.record_us(us);
        }
        let p50 = h.quantile_us(0.5) as f64;
        let p99 = h.quantile_us(0.99) as f64;
        assert!((p50 - 5000.0).abs() / 5000.0 < 0.07, "p50 {p50}");
        assert!((p99 - 9900.0).abs() / 9900.0 < 0.07, "p99 {p99}");
        let mut other = LatencyHistogram::default();
        other.record_us(1_000_000);
        h.merge(&other);
        assert_eq!(h.count(), 10_001);
        assert!(h.quantile_us(1.0) >= 950_000);
        assert_eq!(LatencyHistogram::default().quantile_us(0.5), 0);
    }
}

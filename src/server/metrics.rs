//! Prometheus text exposition for `/metrics`: hub counters plus shell-side measurements
//! (fan-out delivery latency, refused upgrades). Lock-free on the hot path: the latency histogram
//! is a fixed array of atomics.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::hub::HubStats;
use crate::protocol::frames::FrameKind;
use crate::protocol::{CloseCode, ErrorCode};

/// Upper bounds of the latency buckets, in microseconds.
const BUCKETS_US: [u64; 14] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000,
];

/// A cumulative-on-export histogram with fixed buckets.
#[derive(Debug, Default)]
pub struct Histogram {
    counts: [AtomicU64; BUCKETS_US.len() + 1],
    sum_us: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let idx = BUCKETS_US
            .iter()
            .position(|&b| us <= b)
            .unwrap_or(BUCKETS_US.len());
        self.counts[idx].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    fn render(&self, name: &str, help: &str, out: &mut String) {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} histogram");
        let mut cumulative = 0;
        for (i, bound) in BUCKETS_US.iter().enumerate() {
            cumulative += self.counts[i].load(Ordering::Relaxed);
            let le = *bound as f64 / 1e6;
            let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
        }
        cumulative += self.counts[BUCKETS_US.len()].load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
        let sum = self.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}");
        let _ = writeln!(out, "{name}_count {cumulative}");
    }
}

/// Measurements only the network shell can make.
#[derive(Debug, Default)]
pub struct ShellMetrics {
    /// Inbound frame read → the resulting `message`/`direct` written to a recipient's socket.
    pub fanout_latency: Histogram,
    /// Upgrades refused with HTTP 429 by the per-IP connect limiter.
    pub connects_rate_limited: AtomicU64,
    /// Connections refused at authentication (closed 4001/4002 before welcome).
    pub auth_failures: AtomicU64,
    /// Connections closed because their outbound queue overflowed.
    pub slow_consumers: AtomicU64,
}

/// Renders every metric. `connections` and `channels` are gauges read under the hub lock.
pub fn render(
    stats: &HubStats,
    connections: usize,
    channels: usize,
    shell: &ShellMetrics,
) -> String {
    let mut out = String::with_capacity(4096);
    gauge(
        &mut out,
        "meshcall_connections",
        "Open WebSocket connections.",
        connections as u64,
    );
    gauge(
        &mut out,
        "meshcall_channels",
        "Channels with at least one subscriber.",
        channels as u64,
    );
    gauge(
        &mut out,
        "meshcall_connections_peak",
        "Highest number of concurrent connections since start.",
        stats.peak_connections as u64,
    );
    counter(
        &mut out,
        "meshcall_connections_total",
        "Connections admitted since start.",
        stats.connections_total,
    );
    counter(
        &mut out,
        "meshcall_messages_used_total",
        "publish + send attempts (the quota counter).",
        stats.messages_used,
    );
    let _ = writeln!(
        out,
        "# HELP meshcall_frames_in_total Inbound frames by type."
    );
    let _ = writeln!(out, "# TYPE meshcall_frames_in_total counter");
    for k in FrameKind::INBOUND {
        let v = stats.frames_in.get(&k).copied().unwrap_or(0);
        let _ = writeln!(
            out,
            "meshcall_frames_in_total{{type=\"{}\"}} {v}",
            k.as_str()
        );
    }
    let _ = writeln!(
        out,
        "# HELP meshcall_frames_out_total Outbound frames by type."
    );
    let _ = writeln!(out, "# TYPE meshcall_frames_out_total counter");
    for k in FrameKind::OUTBOUND {
        let v = stats.frames_out.get(&k).copied().unwrap_or(0);
        let _ = writeln!(
            out,
            "meshcall_frames_out_total{{type=\"{}\"}} {v}",
            k.as_str()
        );
    }
    let _ = writeln!(
        out,
        "# HELP meshcall_errors_total Error frames sent, by code."
    );
    let _ = writeln!(out, "# TYPE meshcall_errors_total counter");
    for c in ErrorCode::ALL {
        let v = stats.errors.get(&c).copied().unwrap_or(0);
        let _ = writeln!(out, "meshcall_errors_total{{code=\"{}\"}} {v}", c.as_str());
    }
    let _ = writeln!(
        out,
        "# HELP meshcall_closes_total Server-initiated closes, by close code."
    );
    let _ = writeln!(out, "# TYPE meshcall_closes_total counter");
    for c in CloseCode::ALL {
        let v = stats.closes.get(&c).copied().unwrap_or(0);
        let _ = writeln!(out, "meshcall_closes_total{{code=\"{}\"}} {v}", c.code());
    }
    counter(
        &mut out,
        "meshcall_connects_rate_limited_total",
        "Upgrades refused with HTTP 429.",
        shell.connects_rate_limited.load(Ordering::Relaxed),
    );
    counter(
        &mut out,
        "meshcall_auth_failures_total",
        "Connections refused at authentication.",
        shell.auth_failures.load(Ordering::Relaxed),
    );
    counter(
        &mut out,
        "meshcall_slow_consumers_total",
        "Connections closed because they did not drain their queue.",
        shell.slow_consumers.load(Ordering::Relaxed),
    );
    shell.fanout_latency.render(
        "meshcall_fanout_latency_seconds",
        "Inbound frame read to message/direct written to the recipient's socket.",
        &mut out,
    );
    out
}

fn gauge(out: &mut String, name: &str, help: &str, v: u64) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
}

fn counter(out: &mut String, name: &str, help: &str, v: u64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(40));
        h.observe(Duration::from_micros(700));
        h.observe(Duration::from_secs(5));
        let mut s = String::new();
        h.render("x", "help", &mut s);
        assert!(s.contains("x_bucket{le=\"0.00005\"} 1\n"), "{s}");
        assert!(s.contains("x_bucket{le=\"0.001\"} 2\n"), "{s}");
        assert!(s.contains("x_bucket{le=\"1\"} 2\n"), "{s}");
        assert!(s.contains("x_bucket{le=\"+Inf\"} 3\n"), "{s}");
        assert!(s.contains("x_count 3\n"), "{s}");
        assert_eq!(h.count(), 3);
    }

    #[test]
    fn render_lists_every_code_and_type() {
        let mut stats = HubStats::default();
        stats.errors.insert(ErrorCode::PeerNotFound, 4);
        stats.closes.insert(CloseCode::AdminDisconnect, 2);
        let text = render(&stats, 7, 3, &ShellMetrics::default());
        assert!(text.contains("meshcall_connections 7\n"));
        assert!(text.contains("meshcall_channels 3\n"));
        assert!(text.contains("meshcall_errors_total{code=\"peer_not_found\"} 4\n"));
        assert!(text.contains("meshcall_errors_total{code=\"missing_data\"} 0\n"));
        assert!(text.contains("meshcall_closes_total{code=\"4020\"} 2\n"));
        assert!(text.contains("meshcall_frames_in_total{type=\"publish\"} 0\n"));
        assert!(text.contains("meshcall_frames_out_total{type=\"going_away\"} 0\n"));
    }
}

//! Video under random packet loss: a two-peer call run through phases of loss, measured on the
//! receiver's decoded pictures.
//!
//! Used by `meshcall bench call --loss 10,20` (prints the numbers) and by `tests/media_loss.rs`
//! (asserts floors). The loss is real: an nftables rule in the caller's own loopback-only network
//! namespace drops a random share of every UDP packet (media, RTCP and ICE alike) in both
//! directions, as a bad Wi-Fi or mobile link would. [`LossShaper`] refuses to touch the firewall
//! outside such a namespace.
//!
//! What counts is what the receiver decoded: per-second decoded frame counts, the longest gap
//! between two decoded pictures (a freeze), and how long after the loss ends the picture is back
//! at full rate. Sender counters are printed for diagnosis only.

use std::process::Command;
use std::time::{Duration, Instant};

use super::call::{bench_peer, bench_server, first_video, synthetic_sender, wait_remote};
use crate::media::receive::VideoReceiver;
use crate::media::stats::{ReceiveStats, SendStats};

/// Whether this process sees only `lo` (a loopback-only network namespace such as the one
/// `scripts/test` runs in). `/proc/net/dev` lists the interfaces of this process's namespace.
pub fn loopback_only_namespace() -> bool {
    std::fs::read_to_string("/proc/net/dev")
        .map(|t| {
            t.lines()
                .skip(2)
                .filter_map(|l| l.split(':').next())
                .all(|name| name.trim() == "lo")
        })
        .unwrap_or(false)
}

/// Drops a random share of UDP packets with nftables, or polices UDP to a rate. Removes its
/// table when dropped. Only inside a loopback-only namespace.
pub struct LossShaper {
    table: String,
}

impl LossShaper {
    /// Creates an empty table (no loss yet).
    pub fn new(table: &str) -> Result<LossShaper, String> {
        if !loopback_only_namespace() {
            return Err(
                "refusing to install a firewall rule outside a loopback-only network namespace \
                 (run inside `unshare -n` with `ip link set lo up`)"
                    .into(),
            );
        }
        let s = LossShaper {
            table: table.into(),
        };
        let _ = s.nft(&["delete", "table", "inet", table]);
        s.nft(&["add", "table", "inet", table])?;
        s.nft(&[
            "add",
            "chain",
            "inet",
            table,
            "out",
            "{ type filter hook output priority 0 ; }",
        ])?;
        Ok(s)
    }

    fn nft(&self, args: &[&str]) -> Result<(), String> {
        let out = Command::new("nft")
            .args(args)
            .output()
            .map_err(|e| format!("nft: {e} (install nftables)"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "nft {args:?}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    /// Drops `percent` % of UDP packets at random from now on (0 removes the rule).
    pub fn set_loss(&self, percent: u32) -> Result<(), String> {
        let p = percent.min(100).to_string();
        self.replace_rule(
            percent > 0,
            &["numgen", "random", "mod", "100", "<", &p, "drop"],
        )
    }

    /// Polices all UDP on the namespace's loopback to `kbit_per_sec` (packets over the rate are
    /// dropped, as a saturated link would; no queue). 0 removes the rule.
    pub fn set_rate_limit(&self, kbit_per_sec: u32) -> Result<(), String> {
        let bytes = (kbit_per_sec / 8).max(1).to_string();
        let rule = [
            "limit",
            "rate",
            "over",
            &bytes,
            "kbytes/second",
            "burst",
            "32",
            "kbytes",
            "drop",
        ];
        self.replace_rule(kbit_per_sec > 0, &rule)
    }

    /// Polices UDP *to* local port `port` (one peer's ICE socket: what it downloads) to
    /// `kbit_per_sec`. 0 removes the rule.
    pub fn set_port_rate_limit(&self, port: u16, kbit_per_sec: u32) -> Result<(), String> {
        let bytes = (kbit_per_sec / 8).max(1).to_string();
        let port = port.to_string();
        let rule = [
            "udp",
            "dport",
            &port,
            "limit",
            "rate",
            "over",
            &bytes,
            "kbytes/second",
            "burst",
            "16",
            "kbytes",
            "drop",
        ];
        self.replace_rule(kbit_per_sec > 0, &rule)
    }

    /// Replaces the chain's rule by `udp <rule>` (or just empties it).
    fn replace_rule(&self, install: bool, rule: &[&str]) -> Result<(), String> {
        self.nft(&["flush", "chain", "inet", &self.table, "out"])?;
        if !install {
            return Ok(());
        }
        let mut args = vec![
            "add",
            "rule",
            "inet",
            &self.table,
            "out",
            "meta",
            "l4proto",
            "udp",
        ];
        args.extend_from_slice(rule);
        self.nft(&args)
    }
}

impl Drop for LossShaper {
    fn drop(&mut self) {
        let _ = self.nft(&["delete", "table", "inet", &self.table]);
    }
}

/// What the receiver saw during one phase.
#[derive(Debug, Clone, PartialEq)]
pub struct PhaseMetrics {
    /// Decoded frames per whole second of the phase, in order.
    pub fps_per_second: Vec<u32>,
    /// Median of the per-second counts over the last 10 s of the phase (all of it if shorter).
    pub median_fps_last10: f64,
    /// The lowest per-second count, ignoring the first second (the transition).
    pub min_fps: u32,
    /// The longest time without a new decoded picture, including the gap running into the
    /// phase from before it.
    pub longest_freeze_ms: f64,
}

/// Computes [`PhaseMetrics`] from the decoding times (µs, media clock, ascending) of every
/// picture, for the phase `[from_us, to_us)`.
pub fn phase_metrics(decoded_us: &[u64], from_us: u64, to_us: u64) -> PhaseMetrics {
    let secs = (to_us.saturating_sub(from_us) / 1_000_000) as usize;
    let mut per = vec![0u32; secs];
    // A freeze running when the phase starts counts from the phase's start.
    let mut last = Some(
        decoded_us
            .iter()
            .rev()
            .find(|&&t| t < from_us)
            .copied()
            .unwrap_or(from_us),
    );
    let mut freeze_us = 0u64;
    for &t in decoded_us.iter().filter(|&&t| t >= from_us && t < to_us) {
        let i = ((t - from_us) / 1_000_000) as usize;
        if let Some(c) = per.get_mut(i) {
            *c += 1;
        }
        if let Some(l) = last {
            freeze_us = freeze_us.max(t - l);
        }
        last = Some(t);
    }
    // A freeze still running at the end of the phase counts too.
    let end_gap = to_us.saturating_sub(last.unwrap_or(from_us));
    freeze_us = freeze_us.max(end_gap);
    let tail: Vec<u32> = per.iter().rev().take(10).copied().collect();
    PhaseMetrics {
        median_fps_last10: median(&tail),
        min_fps: per.iter().skip(1).copied().min().unwrap_or(0),
        fps_per_second: per,
        longest_freeze_ms: freeze_us as f64 / 1000.0,
    }
}

/// Time from `from_us` until the first sliding one-second window (in 100 ms steps) holds at
/// least `fps` decoded pictures; `None` if it never does before `to_us`.
pub fn recovery_ms(decoded_us: &[u64], from_us: u64, to_us: u64, fps: u32) -> Option<f64> {
    let mut start = from_us;
    while start + 1_000_000 <= to_us {
        let n = decoded_us
            .iter()
            .filter(|&&t| t >= start && t < start + 1_000_000)
            .count();
        if n >= fps as usize {
            return Some((start + 1_000_000 - from_us) as f64 / 1000.0);
        }
        start += 100_000;
    }
    None
}

fn median(v: &[u32]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let mut s = v.to_vec();
    s.sort_unstable();
    let n = s.len();
    if n % 2 == 1 {
        f64::from(s[n / 2])
    } else {
        (f64::from(s[n / 2 - 1]) + f64::from(s[n / 2])) / 2.0
    }
}

/// One phase of a run: a random loss percentage, or a rate cap, held for a duration.
#[derive(Debug, Clone, Copy)]
pub struct Phase {
    pub loss_percent: u32,
    /// Police all UDP to this many kbit/s (0: no cap). Takes the place of `loss_percent`.
    pub cap_kbit: u32,
    pub duration: Duration,
}

impl Phase {
    pub fn loss(percent: u32, secs: u64) -> Phase {
        Phase {
            loss_percent: percent,
            cap_kbit: 0,
            duration: Duration::from_secs(secs),
        }
    }

    pub fn cap(kbit: u32, secs: u64) -> Phase {
        Phase {
            loss_percent: 0,
            cap_kbit: kbit,
            duration: Duration::from_secs(secs),
        }
    }

    fn impaired(&self) -> bool {
        self.loss_percent > 0 || self.cap_kbit > 0
    }
}

/// The result of one phase.
#[derive(Debug, Clone)]
pub struct PhaseReport {
    pub phase: Phase,
    pub metrics: PhaseMetrics,
    /// After a lossy phase: time until a one-second window is back at `recover_fps`, measured
    /// in the phase that follows.
    pub recovery_ms: Option<f64>,
    pub sender: SendStats,
    pub receiver: ReceiveStats,
    /// The sender's encoder target every 200 ms: (ms into the phase, kbit/s).
    pub target_trace: Vec<(u64, u32)>,
}

impl PhaseReport {
    /// How long into the phase the encoder target first fell to `kbit` or below.
    pub fn target_at_or_below_ms(&self, kbit: u32) -> Option<u64> {
        self.target_trace
            .iter()
            .find(|&&(_, t)| t <= kbit)
            .map(|&(ms, _)| ms)
    }
}

/// Settings of a loss run.
#[derive(Debug, Clone)]
pub struct LossRunOptions {
    pub width: usize,
    pub height: usize,
    pub fps: f32,
    pub phases: Vec<Phase>,
    /// The frame rate that counts as "back to full rate" after a lossy phase.
    pub recover_fps: u32,
    /// The nftables table name (unique per concurrent run).
    pub table: String,
}

impl LossRunOptions {
    /// 720p30; each loss in `losses` for `secs`, with a clean phase before the first and after
    /// each (so every lossy phase has a recovery measured).
    pub fn standard(losses: &[u32], secs: u64) -> LossRunOptions {
        let mut phases = vec![Phase::loss(0, 5)];
        for &l in losses {
            phases.push(Phase::loss(l, secs));
            phases.push(Phase::loss(0, 5));
        }
        LossRunOptions {
            width: 1280,
            height: 720,
            fps: 30.0,
            phases,
            recover_fps: 25,
            table: "meshcall_loss".into(),
        }
    }
}

/// Runs a two-peer call on an embedded server through the phases and reports each one.
/// Must run inside a loopback-only network namespace.
pub async fn run_loss_call(opts: &LossRunOptions) -> Result<Vec<PhaseReport>, String> {
    let shaper = LossShaper::new(&opts.table)?;
    let (server, _, _) = bench_server().await?;
    let origin = server.ws_origin();
    let (sender, camera) = synthetic_sender(
        &origin,
        "loss-sender",
        "loss",
        (opts.width, opts.height, opts.fps),
    )
    .await?;
    let receiver = bench_peer(&origin, "loss-receiver")?;
    receiver
        .join("loss", false)
        .await
        .map_err(|e| e.to_string())?;
    let remote = wait_remote(&receiver, "loss-sender")
        .await
        .ok_or("the sender never appeared")?;
    let track = tokio::time::timeout(Duration::from_secs(20), first_video(&remote))
        .await
        .ok()
        .flatten()
        .ok_or("no video track")?;
    let rx = VideoReceiver::start(&track).map_err(|e| e.to_string())?;
    tokio::time::timeout(Duration::from_secs(20), async {
        while rx.frames_decoded() < u64::from(opts.recover_fps) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .map_err(|_| "video never started")?;

    let mut decoded: Vec<u64> = Vec::new();
    let mut bounds = Vec::new();
    let mut stats = Vec::new();
    for phase in &opts.phases {
        if phase.cap_kbit > 0 {
            shaper.set_rate_limit(phase.cap_kbit)?;
        } else {
            shaper.set_loss(phase.loss_percent)?;
        }
        let from = crate::media::source::media_clock_us();
        let started = Instant::now();
        let until = started + phase.duration;
        let mut trace = Vec::new();
        while Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(200)).await;
            decoded.extend(rx.drain_log().iter().map(|r| r.decoded_us));
            trace.push((
                started.elapsed().as_millis() as u64,
                camera.stats().target_bitrate_bps / 1000,
            ));
        }
        let to = crate::media::source::media_clock_us();
        bounds.push((from, to));
        stats.push((camera.stats(), rx.stats(), trace));
    }
    shaper.set_loss(0)?;
    drop(rx);
    sender.close().await;
    receiver.close().await;
    drop(camera);
    server.shutdown().await;
    decoded.sort_unstable();

    let mut out = Vec::new();
    for (i, phase) in opts.phases.iter().enumerate() {
        let (from, to) = bounds[i];
        let recovery = if phase.impaired() {
            bounds
                .get(i + 1)
                .and_then(|&(nf, nt)| recovery_ms(&decoded, nf, nt, opts.recover_fps))
        } else {
            None
        };
        let (sender, receiver, target_trace) = stats[i].clone();
        out.push(PhaseReport {
            phase: *phase,
            metrics: phase_metrics(&decoded, from, to),
            recovery_ms: recovery,
            sender,
            receiver,
            target_trace,
        });
    }
    Ok(out)
}

/// One line per phase, for people.
pub fn describe(r: &PhaseReport) -> String {
    let what = if r.phase.cap_kbit > 0 {
        format!("cap {} kbit/s", r.phase.cap_kbit)
    } else {
        format!("loss {:>2} %", r.phase.loss_percent)
    };
    format!(
        "{what} for {:>2} s: median {:>4.1} fps (last 10 s), min {:>2} fps, longest freeze {:>5.0} ms{}; \
         sender target {} kbit/s at {}x{}; receiver lost {} repaired {} late {}, frames lost {}, keyframe requests {}; per second {:?}",
        r.phase.duration.as_secs(),
        r.metrics.median_fps_last10,
        r.metrics.min_fps,
        r.metrics.longest_freeze_ms,
        match r.recovery_ms {
            Some(ms) => format!(", full rate {ms:.0} ms after"),
            None if r.phase.impaired() => ", never back to full rate".into(),
            None => String::new(),
        },
        r.sender.target_bitrate_bps / 1000,
        r.sender.width,
        r.sender.height,
        r.receiver.packets_lost,
        r.receiver.packets_repaired,
        r.receiver.late_packets,
        r.receiver.frames_lost,
        r.receiver.keyframe_requests,
        r.metrics.fps_per_second,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn steady(from_us: u64, secs: u64, fps: u64) -> Vec<u64> {
        (0..secs * fps)
            .map(|i| from_us + i * 1_000_000 / fps)
            .collect()
    }

    #[test]
    fn a_steady_stream_has_its_rate_and_no_freeze() {
        let d = steady(0, 12, 30);
        let m = phase_metrics(&d, 0, 12_000_000);
        assert_eq!(m.fps_per_second.len(), 12);
        assert!(m.fps_per_second.iter().all(|&c| c == 30), "{m:?}");
        assert_eq!(m.median_fps_last10, 30.0);
        assert_eq!(m.min_fps, 30);
        assert!((m.longest_freeze_ms - 33.333).abs() < 0.5, "{m:?}");
    }

    #[test]
    fn a_gap_is_a_freeze_and_lowers_that_second() {
        let mut d = steady(0, 10, 30);
        // Nothing decoded between 4.0 s and 5.5 s.
        d.retain(|&t| !(4_000_000..5_500_000).contains(&t));
        let m = phase_metrics(&d, 0, 10_000_000);
        assert_eq!(m.fps_per_second[4], 0);
        assert_eq!(m.fps_per_second[5], 15);
        assert_eq!(m.min_fps, 0);
        assert!(
            (m.longest_freeze_ms - 1533.3).abs() < 1.0,
            "{}",
            m.longest_freeze_ms
        );
    }

    #[test]
    fn a_freeze_running_into_the_phase_or_out_of_it_counts() {
        let d = steady(0, 3, 30);
        // The phase starts at 3 s and nothing arrives until its end at 5 s.
        let m = phase_metrics(&d, 3_000_000, 5_000_000);
        assert!(m.longest_freeze_ms > 2000.0, "{m:?}");
        assert_eq!(m.median_fps_last10, 0.0);
    }

    #[test]
    fn recovery_is_the_end_of_the_first_full_window() {
        // 5 fps for 2 s, then 30 fps.
        let mut d: Vec<u64> = (0..10).map(|i| i * 200_000).collect();
        d.extend(steady(2_000_000, 3, 30));
        let r = recovery_ms(&d, 0, 5_000_000, 25).expect("recovers");
        assert!((2_700.0..=3_000.0).contains(&r), "{r}");
        assert_eq!(recovery_ms(&d, 0, 1_900_000, 25), None);
    }
}

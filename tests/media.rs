//! Media end to end: two Rust peers in one process exchange real H.264 video and Opus
//! audio through the real server and real webrtc-rs connections (ICE on 127.0.0.1; CI runs this in
//! a loopback-only network namespace). The synthetic sources stamp every picture, so the
//! receiver can check which frames arrived, in what order, and how late.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;

use common::net::{loopback_peer, wait_remote};
use common::*;
use meshcall::media::MediaError;
use meshcall::media::mixer::{AudioReceiver, Mixer};
use meshcall::media::receive::VideoReceiver;
use meshcall::media::send::{AudioSender, TrackSpec, VideoSendSettings, VideoSender};
use meshcall::media::source::AudioSink;
use meshcall::media::synthetic::{SyntheticAudioSource, SyntheticVideoSource};
use meshcall::peer::PeerConnectionState;

async fn within<T>(what: &str, secs: u64, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(secs), f)
        .await
        .unwrap_or_else(|_| panic!("timed out after {secs} s waiting for {what}"))
}

struct Recorder(Arc<Mutex<Vec<f32>>>);
impl AudioSink for Recorder {
    fn name(&self) -> &str {
        "recorder"
    }
    fn play(&mut self, s: &[f32]) -> Result<usize, MediaError> {
        self.0.lock().expect("lock").extend_from_slice(s);
        Ok(s.len())
    }
}

fn percentile(v: &mut [u64], p: f64) -> u64 {
    v.sort_unstable();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn video_and_audio_flow_between_two_rust_peers_with_stamps_in_order() {
    let server = start(config()).await;
    let origin = server.ws_origin();
    let a = loopback_peer(&origin, "m-a", "Alice");
    let b = loopback_peer(&origin, "m-b", "Bob");

    let mut camera = VideoSender::start(
        Box::new(SyntheticVideoSource::new(640, 480, 30.0).expect("source")),
        TrackSpec::unique("cam-video", "cam"),
        VideoSendSettings::default(),
    )
    .expect("video sender");
    let mut mic = AudioSender::start(
        Box::new(SyntheticAudioSource::default()),
        TrackSpec::unique("cam-audio", "cam"),
        32_000,
    )
    .expect("audio sender");
    a.add_media(camera.media(), Some(json!({"role": "camera"})))
        .await
        .expect("add video");
    a.add_media(mic.media(), Some(json!({"role": "camera"})))
        .await
        .expect("add audio");

    a.join("media-room", false).await.expect("join a");
    let mut b_joined = b.on_peer_joined();
    b.join("media-room", false).await.expect("join b");
    let ra = match b.remote_peer("m-a") {
        Some(p) => p,
        None => within("a at b", 10, b_joined.next_item())
            .await
            .expect("peer"),
    };
    let mut tracks = ra.on_track();
    let existing: Vec<_> = ra
        .current_streams()
        .into_iter()
        .flat_map(|s| s.tracks)
        .collect();

    // Receivers for whatever arrives (video → decoder, audio → mixer with a recording sink).
    let recorded = Arc::new(Mutex::new(Vec::new()));
    let (mixer, playout) = Mixer::start(Box::new(Recorder(recorded.clone()))).expect("mixer");
    let mut video_rx: Option<VideoReceiver> = None;
    let mut audio_rx: Option<AudioReceiver> = None;
    let mut pending = existing;
    within("both tracks at b", 15, async {
        while video_rx.is_none() || audio_rx.is_none() {
            let t = match pending.pop() {
                Some(t) => t,
                None => tracks.next_item().await.expect("track").track,
            };
            assert_eq!(t.metadata, Some(json!({"role": "camera"})));
            match t.kind.as_str() {
                "video" if video_rx.is_none() => {
                    video_rx = Some(VideoReceiver::start(&t).expect("video receiver"))
                }
                "audio" if audio_rx.is_none() => {
                    audio_rx = Some(AudioReceiver::start(&t, mixer.clone()).expect("audio rx"))
                }
                _ => {}
            }
        }
    })
    .await;
    let video_rx = video_rx.expect("video");
    let audio_rx = audio_rx.expect("audio");

    // Let 3 s of media flow after the first decoded frame.
    within("first decoded frame", 10, async {
        while video_rx.frames_decoded() == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let log = video_rx.drain_log();
    let stamps: Vec<_> = log.iter().filter_map(|r| r.stamp).collect();
    assert_eq!(
        stamps.len(),
        log.len(),
        "every decoded picture carries a readable stamp"
    );
    assert!(log.iter().all(|r| (r.width, r.height) == (640, 480)));
    assert!(
        stamps.windows(2).all(|w| w[1].frame > w[0].frame),
        "frames decoded in order"
    );
    let first = stamps.first().expect("frames").frame;
    let last = stamps.last().expect("frames").frame;
    let span = u64::from(last - first) + 1;
    let ratio = stamps.len() as f64 / span as f64;
    let mut latency: Vec<u64> = log
        .iter()
        .filter_map(|r| r.stamp.map(|s| r.decoded_us.saturating_sub(s.capture_us)))
        .collect();
    let p50 = percentile(&mut latency, 0.5);
    let p99 = percentile(&mut latency, 0.99);
    println!(
        "decoded {} of {} frames ({:.1} %), capture→decode p50 {:.1} ms p99 {:.1} ms, stats {:?}",
        stamps.len(),
        span,
        ratio * 100.0,
        p50 as f64 / 1000.0,
        p99 as f64 / 1000.0,
        video_rx.stats()
    );
    assert!(span >= 60, "about 3 s of 30 fps video, got {span} frames");
    assert!(
        ratio >= 0.95,
        "decoded {:.1} % of the stamps",
        ratio * 100.0
    );
    assert!(
        p50 < 200_000,
        "capture→decode p50 {p50} µs is implausible on loopback"
    );
    assert!(camera.stats().frames_encoded >= span);

    // Audio: the mixer played the remote tone at its pitch.
    assert!(
        audio_rx.packets() > 100,
        "{} audio packets",
        audio_rx.packets()
    );
    let rec = recorded.lock().expect("lock").clone();
    let start = rec
        .iter()
        .position(|s| s.abs() > 0.05)
        .expect("remote audio played");
    // Skip the start, measure a stretch between beeps (beeps are the first 50 ms of each second).
    let tail = &rec[start..];
    let mut best = None;
    for chunk in tail.chunks(9_600).skip(1) {
        let f = meshcall::media::audio::dominant_frequency(chunk, 48_000);
        if (f - 440.0).abs() < 5.0 {
            best = Some(f);
            break;
        }
    }
    assert!(best.is_some(), "no 200 ms stretch played the 440 Hz tone");
    assert!(audio_rx.level() >= 0.0);

    // A screen share arrives as its own stream with its metadata; stopping it removes it.
    let mut added = ra.on_stream_added();
    let mut removed = ra.on_stream_removed();
    let mut screen = VideoSender::start(
        Box::new(SyntheticVideoSource::new(1280, 720, 15.0).expect("source")),
        TrackSpec::unique("screen-video", "screen"),
        VideoSendSettings::default(),
    )
    .expect("screen sender");
    a.add_media(screen.media(), Some(json!({"role": "screen"})))
        .await
        .expect("add screen");
    let s = within("screen stream at b", 15, async {
        loop {
            let s = added.next_item().await.expect("stream");
            if s.stream_id == "screen" {
                return s;
            }
        }
    })
    .await;
    assert_eq!(s.metadata, Some(json!({"role": "screen"})));
    let screen_rx = VideoReceiver::start(&s.tracks[0]).expect("screen receiver");
    within("a decoded screen frame", 10, async {
        while screen_rx.frames_decoded() == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let shot = screen_rx.latest().expect("frame");
    assert_eq!((shot.frame.width, shot.frame.height), (1280, 720));
    a.remove_track(screen.track_id())
        .await
        .expect("remove screen");
    let gone = within("screen stream removed", 15, async {
        loop {
            let s = removed.next_item().await.expect("removed");
            if s.stream_id == "screen" {
                return s;
            }
        }
    })
    .await;
    assert_eq!(gone.stream_id, "screen");
    assert_eq!(ra.state(), PeerConnectionState::Connected);

    screen.stop();
    camera.stop();
    mic.stop();
    mixer.stop();
    let _ = playout.join();
    a.close().await;
    b.close().await;
}

/// One encoder feeds three receivers; a late joiner gets a keyframe and decodes at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_encoder_fans_out_to_every_peer_and_late_joiners_start_on_a_keyframe() {
    let server = start(config()).await;
    let origin = server.ws_origin();
    let a = loopback_peer(&origin, "f-a", "Sender");
    let mut camera = VideoSender::start(
        Box::new(SyntheticVideoSource::new(320, 240, 30.0).expect("source")),
        TrackSpec::unique("cam-video", "cam"),
        VideoSendSettings::default(),
    )
    .expect("video sender");
    a.add_media(camera.media(), None).await.expect("add");
    a.join("fan", false).await.expect("join");
    let mut receivers = Vec::new();
    let mut peers = Vec::new();
    for (i, id) in ["f-b", "f-c", "f-d"].iter().enumerate() {
        let p = loopback_peer(&origin, id, id);
        p.join("fan", false).await.expect("join");
        let ra = wait_remote(&p, "f-a").await;
        let mut tracks = ra.on_track();
        let t = match ra
            .current_streams()
            .into_iter()
            .flat_map(|s| s.tracks)
            .next()
        {
            Some(t) => t,
            None => {
                within("track", 15, tracks.next_item())
                    .await
                    .expect("track")
                    .track
            }
        };
        let rx = VideoReceiver::start(&t).expect("receiver");
        let joined_at = std::time::Instant::now();
        within(&format!("first frame at receiver {i}"), 10, async {
            while rx.frames_decoded() == 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        println!(
            "receiver {i}: first frame {} ms after its receiver started",
            joined_at.elapsed().as_millis()
        );
        receivers.push(rx);
        peers.push(p);
    }
    assert_eq!(camera.fanout().ready_legs(), 3);
    let before: Vec<u64> = receivers.iter().map(|r| r.frames_decoded()).collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    for (r, b) in receivers.iter().zip(before) {
        assert!(
            r.frames_decoded() >= b + 20,
            "every receiver keeps decoding"
        );
    }
    // One encoder: frames encoded ≈ frames of the source while someone listened, not 3×.
    let s = camera.stats();
    assert!(
        s.frames_encoded < 200,
        "encoded {} frames",
        s.frames_encoded
    );
    camera.stop();
    for p in peers {
        p.close().await;
    }
    a.close().await;
}

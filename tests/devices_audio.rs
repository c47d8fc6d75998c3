//! Speaker → microphone through a real PulseAudio server: the test starts its own `pulseaudio`
//! with a private configuration (a 48 kHz null sink; its monitor is the default source), plays
//! a 440 Hz tone with `SpeakerSink`, records it with `MicrophoneSource` and checks the pitch and
//! level. Then it kills the server and checks that the microphone reports `DeviceLost`.
//!
//! Skipped, with a message, only when the `pulseaudio` binary is not installed (CI installs it
//! via `scripts/setup-system`).
//!
//! This file holds exactly one test: it points cpal at the private server through the
//! process environment (`PULSE_SERVER`), which no other test may race with.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::pulse::Pulse;

use meshcall::media::MediaError;
use meshcall::media::audio::{OpusEncoder, dominant_frequency};
use meshcall::media::devices::{
    MicrophoneSource, SourceChoice, SpeakerSink, audio_sinks, audio_sources, list_microphones,
    list_speakers,
};
use meshcall::media::mixer::Mixer;
use meshcall::media::source::{AUDIO_FRAME, AudioSink, AudioSource};

fn rms(s: &[f32]) -> f64 {
    (s.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>() / s.len().max(1) as f64).sqrt()
}

fn socket_env(socket: &Path) -> String {
    format!("unix:{}", socket.display())
}

#[test]
fn tone_played_to_the_null_sink_is_recorded_from_its_monitor() {
    let Some(mut pulse) = Pulse::start() else {
        eprintln!("SKIPPED: the pulseaudio binary is not installed (apt-get install pulseaudio)");
        return;
    };
    // SAFETY: this test binary has a single test, and nothing else reads the environment
    // concurrently; cpal's PulseAudio client (which reads it) is only created below.
    unsafe { std::env::set_var("PULSE_SERVER", socket_env(&pulse.socket)) };

    // The socket appears before the server has finished starting; until it answers, cpal
    // falls back to its ALSA host. Wait (bounded) until the PulseAudio host lists our sink.
    let deadline = Instant::now() + Duration::from_secs(10);
    let speakers = loop {
        let speakers = list_speakers().expect("list speakers");
        if speakers.iter().any(|d| d.id == "pulseaudio:meshcall_null") {
            break speakers;
        }
        assert!(
            Instant::now() < deadline,
            "PulseAudio never answered; cpal lists {speakers:?}\n{}",
            pulse.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let mics = list_microphones().expect("list microphones");
    assert!(
        mics.iter()
            .any(|d| d.id == "pulseaudio:meshcall_null.monitor"),
        "{mics:?}"
    );
    assert!(
        speakers.iter().any(|d| d.id == "pulseaudio:meshcall_null"),
        "{speakers:?}"
    );
    assert!(matches!(audio_sources()[0], SourceChoice::Microphone(_)));
    assert!(
        audio_sources()
            .iter()
            .any(|c| matches!(c, SourceChoice::Synthetic { .. }))
    );
    assert_eq!(audio_sinks()[0].label(), "MeshcallNull");

    // Default devices: the null sink and its monitor (set by the .pa file).
    let mut mic = MicrophoneSource::open(None).expect("open default microphone");
    let mut speaker = SpeakerSink::open(None).expect("open default speaker");
    assert_eq!(speaker.name(), "MeshcallNull");
    assert_eq!(
        mic.device_format(),
        (48_000, 1),
        "PulseAudio converts for us"
    );
    assert_eq!(speaker.device_format(), (48_000, 1));

    // Play 3 s of 440 Hz at amplitude 0.5 in real time (20 ms frames), from another thread.
    let played_at = Instant::now();
    let player = std::thread::spawn(move || {
        let mut n = 0u64;
        let mut refused = 0usize;
        for _ in 0..150 {
            let frame: Vec<f32> = (0..AUDIO_FRAME)
                .map(|_| {
                    let t = n as f64 / 48_000.0;
                    n += 1;
                    (0.5 * (2.0 * std::f64::consts::PI * 440.0 * t).sin()) as f32
                })
                .collect();
            let mut off = 0;
            while off < frame.len() {
                let took = speaker.play(&frame[off..]).expect("play");
                off += took;
                if off < frame.len() {
                    refused += 1;
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
        (speaker, refused)
    });

    // Record 3.5 s.
    let mut recorded = Vec::new();
    let mut first_sound = None;
    for _ in 0..175 {
        let frame = mic.next_frame().expect("record");
        assert_eq!(frame.len(), AUDIO_FRAME);
        if first_sound.is_none() && rms(&frame) > 0.05 {
            first_sound = Some(played_at.elapsed());
        }
        recorded.extend(frame);
    }
    let (speaker, refused) = player.join().expect("player thread");

    let loud: Vec<usize> = recorded
        .chunks(AUDIO_FRAME)
        .enumerate()
        .filter(|(_, c)| rms(c) > 0.05)
        .map(|(i, _)| i)
        .collect();
    assert!(
        loud.len() >= 100,
        "only {} of 175 recorded frames carry the tone",
        loud.len()
    );
    // Analyse 1 s from the middle of the loud part (away from onset and end).
    let mid = loud[loud.len() / 2];
    let start = mid.saturating_sub(25) * AUDIO_FRAME;
    let segment = &recorded[start..(start + 48_000).min(recorded.len())];
    let pitch = dominant_frequency(segment, 48_000);
    let level = rms(segment);
    eprintln!(
        "recorded pitch {pitch:.2} Hz, rms {level:.3} (played 0.354), first sound after {:?}, \
         play() back-pressure {refused}x, speaker underruns {}",
        first_sound,
        speaker.underruns()
    );
    assert!((pitch - 440.0).abs() <= 5.0, "recorded pitch {pitch:.2} Hz");
    assert!(level > 0.2 && level < 0.5, "recorded level rms {level:.3}");
    drop(speaker);

    // The receive side end to end: a remote 660 Hz tone arrives as Opus packets (20 ms, real
    // time), goes through the jitter buffer and the mixer's playout thread to the speaker, and
    // is recorded back from the monitor at its pitch.
    let (mixer, playout) = Mixer::start(Box::new(
        SpeakerSink::open(None).expect("open default speaker"),
    ))
    .expect("mixer");
    let input = mixer.add_input().expect("mixer input");
    let feeder = {
        let mixer = mixer.clone();
        std::thread::spawn(move || {
            let mut enc = OpusEncoder::new(32_000).expect("opus");
            let mut n = 0u64;
            let t0 = Instant::now();
            for seq in 0..125u16 {
                let pcm: Vec<f32> = (0..AUDIO_FRAME)
                    .map(|_| {
                        let t = n as f64 / 48_000.0;
                        n += 1;
                        (0.5 * (2.0 * std::f64::consts::PI * 660.0 * t).sin()) as f32
                    })
                    .collect();
                let packet = enc.encode(&pcm).expect("encode");
                mixer.push(input, seq, bytes::Bytes::from(packet));
                // the network's pace: one packet every 20 ms
                let due = t0 + Duration::from_millis(20 * (u64::from(seq) + 1));
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
            }
        })
    };
    let mut remote = Vec::new();
    for _ in 0..150 {
        remote.extend(mic.next_frame().expect("record"));
    }
    feeder.join().expect("feeder");
    mixer.stop();
    let _ = playout.join();
    let loud: Vec<usize> = remote
        .chunks(AUDIO_FRAME)
        .enumerate()
        .filter(|(_, c)| rms(c) > 0.05)
        .map(|(i, _)| i)
        .collect();
    assert!(
        loud.len() >= 80,
        "only {} of 150 recorded frames carry the decoded remote tone",
        loud.len()
    );
    let mid = loud[loud.len() / 2];
    let start = mid.saturating_sub(20) * AUDIO_FRAME;
    let segment = &remote[start..(start + 38_400).min(remote.len())];
    let pitch = dominant_frequency(segment, 48_000);
    eprintln!(
        "decoded remote tone recorded at {pitch:.2} Hz over {} loud frames",
        loud.len()
    );
    assert!(
        (pitch - 660.0).abs() <= 5.0,
        "decoded remote tone at {pitch:.2} Hz"
    );

    // The server dying is DeviceLost within the 2 s timeout, not a hang.
    pulse.kill();
    let t0 = Instant::now();
    let err = loop {
        match mic.next_frame() {
            Ok(_) => assert!(t0.elapsed() < Duration::from_secs(3), "still delivering"),
            Err(e) => break e,
        }
    };
    assert!(
        matches!(
            err,
            MediaError::DeviceLost {
                kind: "microphone",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
}

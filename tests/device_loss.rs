//! Audio devices that come and go mid-call, on a private PulseAudio: a headset plugged in
//! (a second null sink) is announced; then the sound server behind the microphone and speaker
//! in use is killed. The engine must say so, keep sending audio (the system default, or here,
//! with no sound server left, the test tone) on the same track, and keep the call going.
//!
//! One test in this file: it points cpal at the private server through `PULSE_SERVER`.
//! Run inside a loopback-only network namespace (scripts/test does).

mod common;

use std::time::{Duration, Instant};

use common::pulse::Pulse;
use common::*;
use meshcall::engine::api::{
    AudioChoice, Auth, Command, Event, JoinRequest, SpeakerChoice, VideoChoice,
};
use meshcall::engine::{EngineEvent, EngineOptions, spawn};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unplugged_microphone_is_replaced_and_the_user_is_told() {
    let Some(mut pulse) = Pulse::start_for_this_process() else {
        eprintln!("SKIPPED: the pulseaudio binary is not installed (apt-get install pulseaudio)");
        return;
    };
    let server = start(config()).await;
    let handle = spawn(
        &tokio::runtime::Handle::current(),
        EngineOptions {
            device_scan_every: Some(Duration::from_secs(1)),
            ..EngineOptions::default()
        },
    );
    let (cmd, mut events) = handle.into_parts();
    let mut req = JoinRequest::new(
        &server.ws_origin(),
        "lossy",
        "Ada",
        Auth::Token(token("ada", "Ada")),
    );
    req.video = VideoChoice::None;
    req.audio = AudioChoice::Microphone(None);
    req.speaker = SpeakerChoice::Speaker(None);
    req.loopback_only = true;
    cmd.send(Command::Join(Box::new(req)))
        .await
        .expect("engine");

    // Joined, with the microphone (the null sink's monitor: silence) running.
    let mut joined = false;
    let until = Instant::now() + Duration::from_secs(10);
    while !joined && Instant::now() < until {
        if let Ok(Some(EngineEvent::Call(Event::Joined { .. }))) =
            tokio::time::timeout(Duration::from_millis(200), events.recv()).await
        {
            joined = true;
        }
    }
    assert!(joined, "joined the call");
    // The first scans see the devices present at joining; then a headset is plugged in.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    pulse.plug_in("USBHeadset");
    let mut announced: Vec<String> = Vec::new();
    let until = Instant::now() + Duration::from_secs(10);
    while announced.len() < 2 && Instant::now() < until {
        if let Ok(Some(EngineEvent::Call(Event::Error { message, fatal, .. }))) =
            tokio::time::timeout(Duration::from_millis(200), events.recv()).await
        {
            assert!(!fatal, "{message}");
            if message.starts_with("New ") {
                announced.push(message);
            }
        }
    }
    announced.sort();
    println!("announced: {announced:?}");
    assert_eq!(announced.len(), 2, "{announced:?}");
    assert!(
        announced[0].starts_with("New microphone available: ")
            && announced[0].contains("USBHeadset"),
        "{announced:?}"
    );
    assert_eq!(
        announced[1],
        "New speaker available: USBHeadset. Choose it in Settings."
    );

    // Unplug: the sound server goes away.
    pulse.kill();
    let mut notice = None;
    let mut speaker_notice = None;
    let mut level_after = 0.0f32;
    let until = Instant::now() + Duration::from_secs(15);
    while Instant::now() < until {
        match tokio::time::timeout(Duration::from_millis(200), events.recv()).await {
            Ok(Some(EngineEvent::Call(Event::Error { message, fatal, .. }))) => {
                assert!(
                    !fatal,
                    "losing a microphone does not end the call: {message}"
                );
                if message.starts_with("Microphone lost") {
                    notice = Some(message);
                } else if message.starts_with("Speaker lost") {
                    speaker_notice = Some(message);
                }
            }
            Ok(Some(EngineEvent::Call(Event::Levels { local, .. }))) if notice.is_some() => {
                level_after = level_after.max(local);
                if level_after > 0.05 && speaker_notice.is_some() {
                    break;
                }
            }
            Ok(Some(EngineEvent::Call(Event::Left))) => panic!("the call ended"),
            Ok(None) => panic!("the engine stopped"),
            _ => {}
        }
    }
    let notice = notice.expect("the user is told the microphone stopped");
    println!("notice: {notice}; local level afterwards {level_after:.3}");
    assert!(notice.contains("test tone"), "{notice}");
    let speaker_notice = speaker_notice.expect("the user is told the speaker stopped");
    println!("speaker notice: {speaker_notice}");
    assert!(
        speaker_notice.contains("No other speaker found"),
        "{speaker_notice}"
    );
    assert!(
        level_after > 0.05,
        "audio flows again (the tone): {level_after}"
    );
    cmd.send(Command::Leave).await.expect("leave");
}

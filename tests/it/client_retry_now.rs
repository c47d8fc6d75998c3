//! "Retry now" (the call screen's reconnect banner): `SignallingClient::retry_now` cuts a long
//! reconnect back-off short, and is a no-op while connected so a stray press cannot shorten a
//! later back-off.

use crate::common;

use std::time::{Duration, Instant};

use common::*;
use meshcall::client::{ClientEvent, ClientOptions, Credential, ReconnectPolicy, SignallingClient};
use tokio::sync::mpsc;

async fn next(
    rx: &mut mpsc::Receiver<ClientEvent>,
    within: Duration,
    pred: impl Fn(&ClientEvent) -> bool,
) -> Option<ClientEvent> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(ev)) if pred(&ev) => return Some(ev),
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => return None,
        }
    }
}

#[tokio::test]
async fn retry_now_skips_the_back_off_and_is_ignored_while_connected() {
    let server = start(config()).await;
    let t = token("retry", "Retry");
    let mut o = ClientOptions::new(
        server.ws_origin(),
        Credential::token_provider(move || {
            let t = t.clone();
            async move { Ok::<String, String>(t) }
        }),
    );
    // A back-off far longer than the test: only `retry_now` can bring the client back in time.
    o.reconnect = Some(ReconnectPolicy {
        initial: Duration::from_secs(20),
        max_delay: Duration::from_secs(30),
        ..ReconnectPolicy::default()
    });
    let (c, mut rx) = SignallingClient::new(o).expect("valid options");
    c.connect().await.expect("connects");
    let connected = |e: &ClientEvent| matches!(e, ClientEvent::Connected(_));
    next(&mut rx, Duration::from_secs(5), connected)
        .await
        .expect("first Connected");

    // Pressed while connected: must not be remembered for the next outage.
    c.retry_now();
    c.simulate_drop();
    next(&mut rx, Duration::from_secs(5), |e| {
        matches!(
            e,
            ClientEvent::Disconnected {
                will_reconnect: true,
                ..
            }
        )
    })
    .await
    .expect("drop reported");
    assert!(
        next(&mut rx, Duration::from_millis(1500), connected)
            .await
            .is_none(),
        "no reconnect before the back-off (the early press was ignored)"
    );

    let t0 = Instant::now();
    c.retry_now();
    let ev = next(&mut rx, Duration::from_secs(5), connected)
        .await
        .expect("reconnected");
    assert!(
        matches!(ev, ClientEvent::Connected(ref i) if i.is_reconnect),
        "{ev:?}"
    );
    assert!(
        t0.elapsed() < Duration::from_secs(3),
        "took {:?}",
        t0.elapsed()
    );
    c.close().await;
    server.shutdown().await;
}

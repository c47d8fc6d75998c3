//! Reconcile deadline: after a reconnect, a MeteredPeer waits for the snapshot of its channel; when
//! none comes it re-subscribes twice, then reports `ReconcileTimeout`. A scripted WebSocket server
//! on 127.0.0.1 plays a Metered server that never sends the snapshot on the second connection.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

use meshcall::client::{ClientOptions, Credential};
use meshcall::peer::{MeteredPeer, MeteredPeerState, PeerEventError, PeerSettings};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_snapshot_forces_two_resubscribes_then_reconcile_timeout() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let subscribes_after_reconnect = Arc::new(AtomicUsize::new(0));
    let counter = subscribes_after_reconnect.clone();
    tokio::spawn(async move {
        let mut connection = 0;
        while let Ok((tcp, _)) = listener.accept().await {
            connection += 1;
            let n = connection;
            let counter = counter.clone();
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
                    return;
                };
                let welcome = json!({"type":"welcome","peerId":"me","expiresAt":null,"serverTime":1,"maxMessageSize":65536});
                let _ = ws.send(Message::Text(welcome.to_string().into())).await;
                while let Some(Ok(msg)) = ws.next().await {
                    let Message::Text(t) = msg else { continue };
                    let v: Value = serde_json::from_str(t.as_str()).unwrap_or(Value::Null);
                    if v["type"] == "subscribe" {
                        let ack = json!({"type":"ack","requestId":v["requestId"]});
                        let _ = ws.send(Message::Text(ack.to_string().into())).await;
                        if n == 1 {
                            // First connection: a normal snapshot with one other peer, then drop.
                            let snap = json!({"type":"presence","channel":"room","joined":[{"peerId":"other"}],"left":[]});
                            let _ = ws.send(Message::Text(snap.to_string().into())).await;
                            tokio::time::sleep(Duration::from_millis(300)).await;
                            return; // TCP drop without a close frame
                        }
                        counter.fetch_add(1, Ordering::SeqCst);
                    } else if v["type"] == "ping" {
                        let _ = ws.send(Message::Text(r#"{"type":"pong"}"#.into())).await;
                    } else if let Some(rid) = v["requestId"].as_str() {
                        let ack = json!({"type":"ack","requestId":rid});
                        let _ = ws.send(Message::Text(ack.to_string().into())).await;
                    }
                }
            });
        }
    });

    let settings = PeerSettings {
        reconcile_deadline: Duration::from_millis(500),
        ..PeerSettings::loopback_only()
    };
    let peer = MeteredPeer::new(
        ClientOptions::new(
            format!("ws://{addr}"),
            Credential::api_key("pk_test_scripted"),
        ),
        settings,
    )
    .expect("options");
    let mut errors = peer.errors();
    let mut states = peer.state_changes();
    let mut joined = peer.on_peer_joined();
    peer.join("room", false).await.expect("join");
    let other = tokio::time::timeout(Duration::from_secs(5), joined.next_item())
        .await
        .expect("the first snapshot's peer")
        .expect("peer");
    assert_eq!(other.id(), "other");
    tokio::time::timeout(Duration::from_secs(10), async {
        while peer.state() != MeteredPeerState::Reconnecting {
            let _ = states.next().await;
        }
    })
    .await
    .expect("reconnecting after the drop");
    let err = tokio::time::timeout(Duration::from_secs(15), errors.next_item())
        .await
        .expect("reconcile timeout reported")
        .expect("error");
    assert_eq!(err, PeerEventError::ReconcileTimeout);
    // The client's automatic re-subscribe plus exactly two forced ones.
    assert_eq!(subscribes_after_reconnect.load(Ordering::SeqCst), 3);
    assert_eq!(
        peer.state(),
        MeteredPeerState::Reconnecting,
        "still waiting; the app decides"
    );
    assert_eq!(peer.remote_peers().len(), 1, "peers are kept, not dropped");
    peer.close().await;
}

//! Real peers and the test network namespace: MeteredPeers with real tokens on loopback-only
//! ICE, waiting for peers and states, and nftables rules (only ever inside the namespace).

use std::time::Duration;

use meshcall::auth::MintRequest;
use meshcall::client::{ClientOptions, Credential};
use meshcall::peer::{MeteredPeer, PeerConnectionState, PeerSettings, RemotePeer};
use serde_json::json;

use super::token_with;

/// A MeteredPeer for `sub` (peerMetadata.username = `name`) with `settings`; its token provider
/// hands out the same 10-minute token on every connect.
pub fn peer_with(origin: &str, sub: &str, name: &str, settings: PeerSettings) -> MeteredPeer {
    let t = token_with(MintRequest {
        sub: sub.into(),
        ttl_secs: 600,
        peer_metadata: Some(json!({ "username": name })),
        ..MintRequest::default()
    });
    let provider = Credential::token_provider(move || {
        let t = t.clone();
        async move { Ok::<String, String>(t) }
    });
    MeteredPeer::new(ClientOptions::new(origin, provider), settings).expect("peer options")
}

/// [`peer_with`] on loopback-only ICE with the default settings.
pub fn loopback_peer(origin: &str, sub: &str, name: &str) -> MeteredPeer {
    peer_with(origin, sub, name, PeerSettings::loopback_only())
}

/// The RemotePeer `id` as `p` sees it, waiting up to 10 s for it to join.
pub async fn wait_remote(p: &MeteredPeer, id: &str) -> RemotePeer {
    let mut joined = p.on_peer_joined();
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Some(r) = p.remote_peer(id) {
                return r;
            }
            let _ = joined.next().await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("peer {id} never joined"))
}

/// Waits until `p` is in state `want`.
pub async fn wait_for_state(p: &RemotePeer, want: PeerConnectionState, secs: u64) {
    let mut changes = p.state_changes();
    tokio::time::timeout(Duration::from_secs(secs), async {
        while p.state() != want {
            let _ = changes.next().await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{} never reached {want:?} (now {:?})", p.id(), p.state()));
}

/// Whether this process sees only `lo`: the loopback-only namespace `scripts/test` creates.
/// `/proc/net/dev` lists the interfaces of this process's network namespace (unlike
/// `/sys/class/net`, which shows the mount namespace's view).
pub fn isolated() -> bool {
    meshcall::bench::loss::loopback_only_namespace()
}

/// Runs `nft ARGS`; refuses outside the loopback-only namespace, so a firewall rule never
/// touches a real machine.
pub fn nft(args: &[&str]) {
    assert!(
        isolated(),
        "nft refused: run inside a loopback-only network namespace (scripts/test does)"
    );
    let ok = std::process::Command::new("nft")
        .args(args)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        ok,
        "nft {args:?} failed (nftables installed, root in the namespace?)"
    );
}

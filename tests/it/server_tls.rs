//! `wss://` and `https://` with a certificate from the config: a self-signed certificate made
//! for the test, a rustls client that trusts exactly that certificate.

use crate::common;

use std::sync::Arc;

use futures_util::StreamExt;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tokio_tungstenite::tungstenite::Message;

use common::*;
use meshcall::server::TlsConfig;

#[tokio::test]
async fn serves_wss_with_the_configured_certificate() {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("cert");
    let dir = tempfile::tempdir().expect("tempdir");
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&cert_path, cert.cert.pem()).expect("write cert");
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).expect("write key");

    let mut cfg = config();
    cfg.tls = Some(TlsConfig {
        cert: cert_path,
        key: key_path,
    });
    let server = start(cfg).await;
    assert!(server.ws_origin().starts_with("wss://"));

    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from(cert.cert.der().to_vec()))
        .expect("trust the test cert");
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let client = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocols")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(server.local_addr())
        .await
        .expect("tcp");
    let tls = TlsConnector::from(Arc::new(client))
        .connect(ServerName::try_from("localhost").expect("name"), tcp)
        .await
        .expect("TLS handshake");
    let url = format!(
        "wss://localhost:{}/v1?token={}",
        server.local_addr().port(),
        token("secure", "S")
    );
    let (mut ws, _) = tokio_tungstenite::client_async(url, tls)
        .await
        .expect("upgrade over TLS");
    match ws.next().await {
        Some(Ok(Message::Text(t))) => {
            let v: serde_json::Value = serde_json::from_str(t.as_str()).expect("json");
            assert_eq!(v["type"], "welcome");
            assert_eq!(v["peerId"], "secure");
        }
        other => panic!("expected welcome, got {other:?}"),
    }

    // A plain (non-TLS) client is refused at the TLS layer rather than served.
    let plain =
        tokio_tungstenite::connect_async(format!("ws://{}/v1?key={PK}", server.local_addr())).await;
    assert!(plain.is_err(), "plain ws must not work on a TLS listener");
}

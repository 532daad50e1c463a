//! Real mTLS handshakes on loopback: who is accepted and who is not, and why.
// Test helpers outside #[test] fns fail loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use mesh_identity::rustls::{self, CertificateError};
use mesh_identity::{CertStore, IdentityMismatch, MESH_ALPN, tls};
use support::*;

struct Pair {
    server: EchoServer,
    client: Arc<rustls::ClientConfig>,
}

async fn pair(ca: &Ca, server: CertStore, client: CertStore) -> Pair {
    let server = EchoServer::start(tls::server_config(server, ca.trust()).unwrap()).await;
    let client = Arc::new(tls::client_config(client, ca.trust()).unwrap());
    Pair { server, client }
}

#[tokio::test]
async fn accepts_the_expected_identity_both_ways() {
    let ca = Ca::new();
    let (web, api) = (id("emojivoto", "web"), id("emojivoto", "api"));
    let mut p = pair(
        &ca,
        CertStore::with(ca.creds(&api)),
        CertStore::with(ca.creds(&web)),
    )
    .await;
    let reply = request(p.client.clone(), p.server.addr, &api)
        .await
        .unwrap();
    assert_eq!(reply.server, api);
    assert_eq!(reply.answer, web.to_string());
    assert_eq!(p.server.next_seen().await.unwrap(), web);
    assert!(!reply.resumed);

    // A second connection resumes the session and still knows both identities.
    let again = request(p.client.clone(), p.server.addr, &api)
        .await
        .unwrap();
    assert!(again.resumed, "the second handshake should resume");
    assert_eq!(again.server, api);
    assert_eq!(again.answer, web.to_string());
}

#[tokio::test]
async fn negotiates_tls13_and_the_mesh_alpn() {
    let ca = Ca::new();
    let (web, api) = (id("emojivoto", "web"), id("emojivoto", "api"));
    let server = tls::server_config(CertStore::with(ca.creds(&api)), ca.trust()).unwrap();
    let client = tls::client_config(CertStore::with(ca.creds(&web)), ca.trust()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accept = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        mesh_identity::tokio_rustls::TlsAcceptor::from(Arc::new(server))
            .accept(tcp)
            .await
            .unwrap()
    });
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let c = mesh_identity::tokio_rustls::TlsConnector::from(Arc::new(client))
        .connect(tls::server_name(&api).unwrap(), tcp)
        .await
        .unwrap();
    let s = accept.await.unwrap();
    let (_, conn) = c.get_ref();
    assert_eq!(
        conn.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    assert_eq!(conn.alpn_protocol(), Some(MESH_ALPN));
    assert_eq!(
        mesh_identity::PeerIdentity::peer_identity(&s),
        Some(web.clone())
    );
}

#[tokio::test]
async fn rejects_a_server_with_another_identity_naming_both() {
    let ca = Ca::new();
    let (web, api, db) = (
        id("emojivoto", "web"),
        id("emojivoto", "api"),
        id("emojivoto", "db"),
    );
    let p = pair(
        &ca,
        CertStore::with(ca.creds(&db)),
        CertStore::with(ca.creds(&web)),
    )
    .await;
    let err = request(p.client.clone(), p.server.addr, &api)
        .await
        .unwrap_err();
    let mismatch = IdentityMismatch::find(&err).expect("an IdentityMismatch in the cause chain");
    assert_eq!(mismatch.expected, api);
    assert_eq!(mismatch.actual, db.to_string());
    let msg = mismatch.to_string();
    assert!(
        msg.contains(&api.to_string()) && msg.contains(&db.to_string()),
        "{msg}"
    );
}

#[tokio::test]
async fn rejects_certificates_from_another_anchor_both_ways() {
    // Both CAs have the same subject names, so webpki may find the rogue issuer's name in the
    // bundle and fail on its signature (BadSignature) rather than not find it (UnknownIssuer).
    let ca = Ca::new();
    let rogue = Ca::new();
    let (web, api) = (id("emojivoto", "web"), id("emojivoto", "api"));

    // A server whose certificate chains to another anchor.
    let p = pair(
        &ca,
        CertStore::with(rogue.creds(&api)),
        CertStore::with(ca.creds(&web)),
    )
    .await;
    let err = request(p.client.clone(), p.server.addr, &api)
        .await
        .unwrap_err();
    assert!(
        matches!(
            rustls_error(&err),
            Some(rustls::Error::InvalidCertificate(
                CertificateError::UnknownIssuer | CertificateError::BadSignature
            ))
        ),
        "{err:?}"
    );

    // A client whose certificate chains to another anchor.
    let mut p = pair(
        &ca,
        CertStore::with(ca.creds(&api)),
        CertStore::with(rogue.creds(&web)),
    )
    .await;
    assert!(
        request(p.client.clone(), p.server.addr, &api)
            .await
            .is_err()
    );
    let seen = p.server.next_seen().await.unwrap_err();
    assert!(
        matches!(
            rustls_error(&seen),
            Some(rustls::Error::InvalidCertificate(
                CertificateError::UnknownIssuer | CertificateError::BadSignature
            ))
        ),
        "{seen:?}"
    );
}

#[tokio::test]
async fn rejects_expired_and_not_yet_valid_certificates() {
    let ca = Ca::new();
    let (web, api) = (id("emojivoto", "web"), id("emojivoto", "api"));
    let now = SystemTime::now();
    let expired = ca.creds_valid(&web, now - 2 * HOUR, now - HOUR);
    let future = ca.creds_valid(&api, now + HOUR, now + 2 * HOUR);

    // An expired client certificate: the server refuses it.
    let mut p = pair(
        &ca,
        CertStore::with(ca.creds(&api)),
        CertStore::with(expired),
    )
    .await;
    assert!(
        request(p.client.clone(), p.server.addr, &api)
            .await
            .is_err()
    );
    let seen = p.server.next_seen().await.unwrap_err();
    assert!(
        matches!(
            rustls_error(&seen),
            Some(rustls::Error::InvalidCertificate(
                CertificateError::Expired | CertificateError::ExpiredContext { .. }
            ))
        ),
        "{seen:?}"
    );

    // A server certificate that is not valid yet: the client refuses it.
    let p = pair(
        &ca,
        CertStore::with(future),
        CertStore::with(ca.creds(&web)),
    )
    .await;
    let err = request(p.client.clone(), p.server.addr, &api)
        .await
        .unwrap_err();
    assert!(
        matches!(
            rustls_error(&err),
            Some(rustls::Error::InvalidCertificate(
                CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. }
            ))
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn rejects_a_client_without_a_certificate() {
    let ca = Ca::new();
    let api = id("emojivoto", "api");
    let mut p = pair(&ca, CertStore::with(ca.creds(&api)), CertStore::new()).await;
    assert!(
        request(p.client.clone(), p.server.addr, &api)
            .await
            .is_err()
    );
    let seen = p.server.next_seen().await.unwrap_err();
    assert!(
        matches!(
            rustls_error(&seen),
            Some(rustls::Error::NoCertificatesPresented)
        ),
        "{seen:?}"
    );
}

#[tokio::test]
async fn the_server_name_must_be_an_identity() {
    let ca = Ca::new();
    let (web, api) = (id("emojivoto", "web"), id("emojivoto", "api"));
    let p = pair(
        &ca,
        CertStore::with(ca.creds(&api)),
        CertStore::with(ca.creds(&web)),
    )
    .await;
    let tcp = tokio::net::TcpStream::connect(p.server.addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("api.example.com").unwrap();
    let res = tokio::time::timeout(
        Duration::from_secs(5),
        mesh_identity::tokio_rustls::TlsConnector::from(p.client.clone()).connect(name, tcp),
    )
    .await
    .unwrap();
    assert!(res.is_err());
}

#[test]
fn identities_with_an_ambiguous_dns_form_cannot_be_dialed() {
    // Found by the identity_parse fuzz target: this service account's DNS form would parse
    // back as another identity. Such names are refused when parsed, so none can become a
    // server name.
    let tricky = "spiffe://cl.wl/ns/o/sa/x.em.serviceaccount.identity.lr.la9";
    assert!(tricky.parse::<mesh_identity::Identity>().is_err());
    assert!(tls::server_name(&id("emojivoto", "web")).is_ok());
}

//! The issuer service over real HTTPS on loopback: what it signs, what it refuses, and that it
//! keeps serving after bad requests.
// Test helpers outside #[test] fns fail loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, SystemTime};

use mesh_identity::client::ClientError;
use mesh_identity::{IdentityMismatch, ca, issuer::issuer_identity, tls};
use support::*;
use x509_parser::extensions::{GeneralName, ParsedExtension};

fn refused(res: Result<impl std::fmt::Debug, ClientError>) -> (u16, String) {
    match res {
        Err(ClientError::Refused { status, reason }) => (status, reason),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn signs_a_csr_for_the_tokens_identity() {
    let ca = Ca::new();
    let issuer = IssuerHarness::start(&ca, 24 * HOUR).await;
    let creds = issuer
        .client(ca.trust(), "web-token")
        .fetch()
        .await
        .unwrap();
    let web = id("emojivoto", "web");
    assert_eq!(creds.identity(), &web);
    assert_eq!(creds.chain().len(), 2, "leaf then issuer");
    assert_eq!(&creds.chain()[1], ca.issuer.cert_der());

    // 24 h from 20 s ago, client and server auth, SPIFFE URI SAN and DNS-form DNS SAN.
    let (_, leaf) = x509_parser::parse_x509_certificate(&creds.chain()[0]).unwrap();
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let nb = leaf.validity().not_before.timestamp();
    let na = leaf.validity().not_after.timestamp();
    assert!(
        (now - 25..=now - 15).contains(&nb),
        "notBefore {nb} vs now {now}"
    );
    assert!(
        (na - now - 24 * 3600).abs() <= 5,
        "notAfter {na} vs now {now}"
    );
    let mut uris = vec![];
    let mut dns = vec![];
    let (mut client_auth, mut server_auth) = (false, false);
    for ext in leaf.extensions() {
        match ext.parsed_extension() {
            ParsedExtension::SubjectAlternativeName(san) => {
                for n in &san.general_names {
                    match n {
                        GeneralName::URI(u) => uris.push(u.to_string()),
                        GeneralName::DNSName(d) => dns.push(d.to_string()),
                        _ => {}
                    }
                }
            }
            ParsedExtension::ExtendedKeyUsage(eku) => {
                client_auth = eku.client_auth;
                server_auth = eku.server_auth;
            }
            _ => {}
        }
    }
    assert_eq!(uris, vec!["spiffe://cluster.local/ns/emojivoto/sa/web"]);
    assert_eq!(
        dns,
        vec!["web.emojivoto.serviceaccount.identity.linkerd.cluster.local"]
    );
    assert!(client_auth && server_auth);
    assert!(!leaf.is_ca());
}

#[tokio::test]
async fn refuses_a_csr_for_another_service_account_with_403() {
    let ca = Ca::new();
    let issuer = IssuerHarness::start(&ca, HOUR).await;
    let key = ca::generate_key().unwrap();
    let mut params = rcgen::CertificateParams::new(vec![]).unwrap();
    params.subject_alt_names = vec![rcgen::SanType::URI(
        "spiffe://cluster.local/ns/emojivoto/sa/api"
            .try_into()
            .unwrap(),
    )];
    let csr = params.serialize_request(&key).unwrap().pem().unwrap();
    let (status, reason) = refused(issuer.client(ca.trust(), "web-token").sign(&csr).await);
    assert_eq!(status, 403);
    assert!(
        reason.contains("sa/api") && reason.contains("sa/web"),
        "{reason}"
    );

    // The same CSR with the api token is fine, and a CSR naming its own identity is too.
    issuer
        .client(ca.trust(), "api-token")
        .sign(&csr)
        .await
        .unwrap();
}

#[tokio::test]
async fn bad_requests_get_clear_4xx_and_the_issuer_keeps_serving() {
    let ca = Ca::new();
    let issuer = IssuerHarness::start(&ca, HOUR).await;
    let good_csr = ca::csr_pem(&ca::generate_key().unwrap()).unwrap();

    // Missing and unknown tokens.
    let (status, reason) = refused(issuer.client(ca.trust(), "").sign(&good_csr).await);
    assert_eq!(status, 401);
    assert!(reason.contains("bearer token"), "{reason}");
    let (status, reason) = refused(issuer.client(ca.trust(), "nope").sign(&good_csr).await);
    assert_eq!(status, 401);
    assert!(reason.contains("unknown token"), "{reason}");

    let client = issuer.client(ca.trust(), "web-token");
    // Garbage.
    let (status, reason) = refused(client.sign("hello, issuer").await);
    assert_eq!(status, 400);
    assert!(reason.contains("CERTIFICATE REQUEST"), "{reason}");
    let (status, _) = refused(
        client
            .sign("-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n")
            .await,
    );
    assert_eq!(status, 400);

    // A P-384 key.
    let p384 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
    let csr = rcgen::CertificateParams::new(vec![])
        .unwrap()
        .serialize_request(&p384)
        .unwrap()
        .pem()
        .unwrap();
    let (status, reason) = refused(client.sign(&csr).await);
    assert_eq!(status, 400);
    assert!(reason.contains("unsupported key type"), "{reason}");

    // A CSR whose signature does not verify: flip a byte of the signature.
    let key = ca::generate_key().unwrap();
    let der = rcgen::CertificateParams::new(vec![])
        .unwrap()
        .serialize_request(&key)
        .unwrap()
        .der()
        .to_vec();
    let mut tampered = der.clone();
    let last = tampered.len() - 2;
    tampered[last] ^= 0x55;
    let pem = mesh_identity::cert::certs_to_pem(&[tampered.into()])
        .replace("CERTIFICATE", "CERTIFICATE REQUEST");
    let (status, _) = refused(client.sign(&pem).await);
    assert_eq!(status, 400);

    // Oversized.
    let huge = "A".repeat(64 * 1024);
    match client.sign(&huge).await {
        Err(ClientError::Refused { status, .. }) => assert_eq!(status, 413),
        // The issuer may answer and close before the client has sent the whole body.
        Err(ClientError::Http(_)) => {}
        other => panic!("expected 413, got {other:?}"),
    }

    // Still serving.
    let creds = client.fetch().await.unwrap();
    assert_eq!(creds.identity(), &id("emojivoto", "web"));
}

#[tokio::test]
async fn a_slow_body_gets_408_while_a_good_client_is_served() {
    use mesh_identity::tokio_rustls::TlsConnector;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    let ca = Ca::new();
    let issuer = IssuerHarness::start_with(&ca, HOUR, Duration::from_secs(1)).await;
    let addr: std::net::SocketAddr = issuer.url["https://".len()..].parse().unwrap();
    let config = std::sync::Arc::new(tls::issuer_client_config(ca.trust()).unwrap());
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = tls::server_name(&issuer.identity).unwrap();
    let conn = TlsConnector::from(config).connect(name, tcp).await.unwrap();
    let (mut rx, mut tx) = tokio::io::split(conn);
    // A valid token, then a byte of body every 100 ms: 100 s to send, were it let to.
    let head = "POST /v1/certificate HTTP/1.1\r\nhost: issuer\r\n\
                authorization: Bearer web-token\r\ncontent-length: 1000\r\n\r\n";
    tx.write_all(head.as_bytes()).await.unwrap();
    let writer = tokio::spawn(async move {
        for _ in 0..1000 {
            if tx.write_all(b"A").await.is_err() || tx.flush().await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });

    // Meanwhile a good client is served.
    let creds = issuer
        .client(ca.trust(), "web-token")
        .fetch()
        .await
        .unwrap();
    assert_eq!(creds.identity(), &id("emojivoto", "web"));

    let mut answer = Vec::new();
    // Bounded, so an issuer that never cuts the client off fails instead of hanging.
    let read = tokio::time::timeout(Duration::from_secs(60), rx.read_to_end(&mut answer)).await;
    writer.abort();
    assert!(read.is_ok(), "the slow client was never cut off");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
}

#[tokio::test]
async fn the_client_verifies_the_issuer_identity_not_the_host() {
    let ca = Ca::new();
    let issuer = IssuerHarness::start(&ca, HOUR).await;
    let impostor = issuer_identity(TD, "other-control-plane").unwrap();
    let client =
        mesh_identity::client::IssuerClient::new(&issuer.url, &impostor, ca.trust(), "web-token")
            .unwrap();
    let err = client.fetch().await.unwrap_err();
    let mismatch = IdentityMismatch::find(&err).expect("an identity mismatch");
    assert_eq!(mismatch.expected, impostor);
    assert_eq!(mismatch.actual, issuer.identity.to_string());

    // And an issuer from another trust anchor is refused.
    let rogue = Ca::new();
    let err = issuer
        .client(rogue.trust(), "web-token")
        .fetch()
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Connect { .. }), "{err:?}");
}

#[tokio::test]
async fn requests_are_bounded_in_time() {
    // A listener that never answers: the client gives up after its timeout.
    let ca = Ca::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    let client = mesh_identity::client::IssuerClient::new(
        &url,
        &issuer_identity(TD, "linkerd").unwrap(),
        ca.trust(),
        "web-token",
    )
    .unwrap()
    .with_timeout(Duration::from_millis(300));
    let err = client.fetch().await.unwrap_err();
    assert!(matches!(err, ClientError::Timeout(_)), "{err:?}");
    drop(listener);
}

#[tokio::test]
async fn switching_the_issuer_serves_clients_that_trust_both_anchors() {
    let old = Ca::new();
    let new = Ca::new();
    let issuer = IssuerHarness::start(&old, HOUR).await;
    let both = mesh_identity::TrustStore::new(old.bundle().merged(&new.bundle()).unwrap());

    let before = issuer
        .client(both.clone(), "web-token")
        .fetch()
        .await
        .unwrap();
    assert_eq!(&before.chain()[1], old.issuer.cert_der());

    issuer.service.set_issuer(new.issuer.clone());
    let after = issuer.client(both, "web-token").fetch().await.unwrap();
    assert_eq!(&after.chain()[1], new.issuer.cert_der());

    // A client that only trusts the old anchor refuses the new chain.
    let err = issuer
        .client(old.trust(), "web-token")
        .fetch()
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::BadResponse(_)), "{err:?}");
}

//! Rotation under load: certificates and anchors change while a client keeps opening new
//! connections, and no request fails.
// Test helpers outside #[test] fns fail loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use mesh_identity::ca::{CaError, Issuer};
use mesh_identity::rotate::{CertificateSource, LocalSource, Rotation, RotationConfig};
use mesh_identity::rustls::client::Resumption;
use mesh_identity::rustls::pki_types::CertificateDer;
use mesh_identity::{CertStore, Credentials, Identity, TrustBundle, TrustStore, tls};
use support::*;

const SHORT: Duration = Duration::from_secs(3);

fn fast_retries() -> RotationConfig {
    RotationConfig {
        min_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_millis(400),
        ..RotationConfig::default()
    }
}

/// Full handshakes every time, so each connection verifies the certificates in use now.
fn no_resumption(certs: CertStore, trust: TrustStore) -> Arc<mesh_identity::rustls::ClientConfig> {
    let mut config = tls::client_config(certs, trust).unwrap();
    config.resumption = Resumption::disabled();
    Arc::new(config)
}

struct Load {
    ok: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Vec<CertificateDer<'static>>>,
}

/// Sends requests over new connections (alternating full and resumed handshakes) until
/// stopped; returns the distinct server leaves seen, in order.
fn load(
    full: Arc<mesh_identity::rustls::ClientConfig>,
    resuming: Arc<mesh_identity::rustls::ClientConfig>,
    addr: std::net::SocketAddr,
    expected: Identity,
    me: Identity,
) -> Load {
    let ok = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let (ok2, failed2, stop2) = (ok.clone(), failed.clone(), stop.clone());
    let task = tokio::spawn(async move {
        let mut seen: Vec<CertificateDer<'static>> = vec![];
        let mut i = 0u64;
        while !stop2.load(Ordering::Relaxed) {
            let config = if i.is_multiple_of(2) {
                &full
            } else {
                &resuming
            };
            i += 1;
            match request(config.clone(), addr, &expected).await {
                Ok(reply) if reply.server == expected && reply.answer == me.to_string() => {
                    ok2.fetch_add(1, Ordering::Relaxed);
                    if !reply.resumed && seen.last() != Some(&reply.server_cert) {
                        seen.push(reply.server_cert);
                    }
                }
                Ok(reply) => panic!("wrong peer: {reply:?}"),
                Err(e) => {
                    eprintln!("request failed: {e}");
                    failed2.fetch_add(1, Ordering::Relaxed);
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        seen
    });
    Load {
        ok,
        failed,
        stop,
        task,
    }
}

impl Load {
    async fn finish(self) -> (usize, usize, Vec<CertificateDer<'static>>) {
        self.stop.store(true, Ordering::Relaxed);
        let seen = tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .unwrap()
            .unwrap();
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
            seen,
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_rotate_under_load_without_a_failed_request() {
    let ca = Ca::new();
    let (web, api) = (id("emojivoto", "web"), id("emojivoto", "api"));
    let server_rot = Rotation::start(
        LocalSource::new(ca.issuer.clone(), api.clone(), SHORT),
        fast_retries(),
    )
    .await
    .unwrap();
    let client_rot = Rotation::start(
        LocalSource::new(ca.issuer.clone(), web.clone(), SHORT),
        fast_retries(),
    )
    .await
    .unwrap();
    let first_server = server_rot.store().current().unwrap();
    let first_client = client_rot.store().current().unwrap();
    let mut changes = server_rot.store().subscribe();

    let server =
        EchoServer::start(tls::server_config(server_rot.store().clone(), ca.trust()).unwrap())
            .await;
    let full = no_resumption(client_rot.store().clone(), ca.trust());
    let resuming = Arc::new(tls::client_config(client_rot.store().clone(), ca.trust()).unwrap());
    let load = load(full, resuming, server.addr, api.clone(), web.clone());

    // The watch channel tells of each renewal.
    tokio::time::timeout(Duration::from_secs(5), changes.changed())
        .await
        .unwrap()
        .unwrap();
    // Run through about three lifetimes.
    tokio::time::sleep(3 * SHORT).await;
    let (ok, failed, seen) = load.finish().await;

    assert_eq!(failed, 0, "{failed} of {} requests failed", ok + failed);
    assert!(ok > 50, "only {ok} requests");
    assert!(
        seen.len() >= 3,
        "the server certificate rotated {} times",
        seen.len() - 1
    );
    let now_server = server_rot.store().current().unwrap();
    let now_client = client_rot.store().current().unwrap();
    assert_ne!(now_server.chain()[0], first_server.chain()[0]);
    assert_ne!(now_client.chain()[0], first_client.chain()[0]);
    assert_eq!(seen.first(), Some(&first_server.chain()[0]));
    // The newest certificate is the one in use.
    let fresh = no_resumption(client_rot.store().clone(), ca.trust());
    let reply = request(fresh, server.addr, &api).await.unwrap();
    assert_eq!(
        reply.server_cert,
        server_rot.store().current().unwrap().chain()[0]
    );
}

/// A source that fails while `failing` is set.
#[derive(Clone)]
struct Flaky {
    inner: LocalSource,
    failing: Arc<AtomicBool>,
    attempts: Arc<AtomicUsize>,
}

impl CertificateSource for Flaky {
    type Error = CaError;

    async fn fetch(&self) -> Result<Credentials, CaError> {
        self.attempts.fetch_add(1, Ordering::Relaxed);
        if self.failing.load(Ordering::Relaxed) {
            return Err(CaError::NoTrustDomain);
        }
        self.inner.fetch().await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keeps_the_old_certificate_while_the_issuer_is_down() {
    let ca = Ca::new();
    let api = id("emojivoto", "api");
    let flaky = Flaky {
        inner: LocalSource::new(ca.issuer.clone(), api.clone(), Duration::from_secs(4)),
        failing: Arc::new(AtomicBool::new(false)),
        attempts: Arc::new(AtomicUsize::new(0)),
    };
    let rot = Rotation::start(flaky.clone(), fast_retries())
        .await
        .unwrap();
    let first = rot.store().current().unwrap();
    flaky.failing.store(true, Ordering::Relaxed);

    // Past the renewal point (~2.8 s) renewal fails and is retried; the old cert stays.
    tokio::time::sleep(Duration::from_millis(3300)).await;
    assert!(
        flaky.attempts.load(Ordering::Relaxed) >= 2,
        "renewal was retried"
    );
    assert_eq!(rot.store().current().unwrap().chain(), first.chain());

    // The issuer comes back: a new certificate arrives within the backoff.
    flaky.failing.store(false, Ordering::Relaxed);
    let mut changes = rot.store().subscribe();
    tokio::time::timeout(Duration::from_secs(2), changes.changed())
        .await
        .unwrap()
        .unwrap();
    assert_ne!(rot.store().current().unwrap().chain(), first.chain());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anchors_rotate_under_load_without_a_failed_request() {
    let old = Ca::new();
    let new = Ca::new();
    let (web, api) = (id("emojivoto", "web"), id("emojivoto", "api"));
    let server_src = LocalSource::new(old.issuer.clone(), api.clone(), SHORT);
    let client_src = LocalSource::new(old.issuer.clone(), web.clone(), SHORT);
    let server_rot = Rotation::start(server_src.clone(), fast_retries())
        .await
        .unwrap();
    let client_rot = Rotation::start(client_src.clone(), fast_retries())
        .await
        .unwrap();
    // Each side has its own bundle, as separate workloads would.
    let server_trust = old.trust();
    let client_trust = old.trust();

    let server = EchoServer::start(
        tls::server_config(server_rot.store().clone(), server_trust.clone()).unwrap(),
    )
    .await;
    let full = no_resumption(client_rot.store().clone(), client_trust.clone());
    let resuming =
        Arc::new(tls::client_config(client_rot.store().clone(), client_trust.clone()).unwrap());
    let load = load(full, resuming, server.addr, api.clone(), web.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;

    // 1. Everyone trusts old + new.
    let both = old.bundle().merged(&new.bundle()).unwrap();
    assert_eq!(both.anchors().len(), 2);
    server_trust.store(TrustBundle::new(both.anchors().to_vec()).unwrap());
    client_trust.store(TrustBundle::new(both.anchors().to_vec()).unwrap());
    tokio::time::sleep(Duration::from_millis(300)).await;

    // 2. Switch the issuer; wait until both workloads hold certificates from the new one.
    let new_issuer: Arc<Issuer> = new.issuer.clone();
    server_src.set_issuer(new_issuer.clone());
    client_src.set_issuer(new_issuer.clone());
    let on_new = |store: &CertStore| store.current().unwrap().chain()[1] == *new.issuer.cert_der();
    tokio::time::timeout(Duration::from_secs(10), async {
        while !(on_new(server_rot.store()) && on_new(client_rot.store())) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("both workloads renewed from the new issuer");
    tokio::time::sleep(Duration::from_millis(300)).await;

    // 3. Drop the old anchor.
    server_trust.store(new.bundle());
    client_trust.store(new.bundle());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (ok, failed, seen) = load.finish().await;

    assert_eq!(failed, 0, "{failed} of {} requests failed", ok + failed);
    assert!(ok > 30, "only {ok} requests");
    assert!(seen.len() >= 2);

    // Only the new anchor is trusted now, and a fresh handshake works.
    let fresh = no_resumption(client_rot.store().clone(), client_trust.clone());
    let reply = request(fresh, server.addr, &api).await.unwrap();
    assert_eq!(reply.answer, web.to_string());
    let old_only = no_resumption(client_rot.store().clone(), old.trust());
    assert!(request(old_only, server.addr, &api).await.is_err());
}

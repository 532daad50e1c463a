//! Identity hot paths: a full mTLS handshake, a resumed one, and the issuer signing a CSR.
//!
//! Handshakes run in memory (rustls connections exchanging buffers), so they measure
//! crypto and TLS state machines, not the kernel.
//!
//! `cargo bench --bench identity -- --warm-up-time 1 --measurement-time 3`
// A benchmark that cannot set itself up should stop loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mesh::identity::rustls::client::Resumption;
use mesh::identity::rustls::{ClientConfig, ClientConnection, HandshakeKind, ServerConnection};
use mesh::identity::{CertStore, Identity, TrustBundle, TrustStore, ca, tls};

const HOUR: Duration = Duration::from_secs(3600);

struct Mesh {
    issuer: ca::Issuer,
    trust: TrustStore,
    web: Identity,
    api: Identity,
}

fn mesh() -> Mesh {
    let anchor = ca::TrustAnchor::generate("cluster.local", 24 * HOUR).unwrap();
    let issuer = ca::Issuer::generate(&anchor, 12 * HOUR).unwrap();
    let trust = TrustStore::new(TrustBundle::from_pem(&anchor.cert_pem()).unwrap());
    Mesh {
        issuer,
        trust,
        web: Identity::new("cluster.local", "emojivoto", "web").unwrap(),
        api: Identity::new("cluster.local", "emojivoto", "api").unwrap(),
    }
}

/// Runs a handshake to completion, including the session tickets sent after it.
fn handshake(
    client: &Arc<ClientConfig>,
    server: &Arc<mesh::identity::rustls::ServerConfig>,
    name: &Identity,
) -> ClientConnection {
    let mut c = ClientConnection::new(client.clone(), tls::server_name(name).unwrap()).unwrap();
    let mut s = ServerConnection::new(server.clone()).unwrap();
    let mut buf = Vec::with_capacity(8192);
    while c.is_handshaking() || s.is_handshaking() || c.wants_write() || s.wants_write() {
        buf.clear();
        while c.wants_write() {
            c.write_tls(&mut buf).unwrap();
        }
        let mut rd = buf.as_slice();
        while !rd.is_empty() {
            s.read_tls(&mut rd).unwrap();
            s.process_new_packets().unwrap();
        }
        buf.clear();
        while s.wants_write() {
            s.write_tls(&mut buf).unwrap();
        }
        let mut rd = buf.as_slice();
        while !rd.is_empty() {
            c.read_tls(&mut rd).unwrap();
            c.process_new_packets().unwrap();
        }
    }
    c
}

fn handshakes(cr: &mut Criterion) {
    let m = mesh();
    let client_certs = CertStore::with(m.issuer.issue_local(&m.web, HOUR).unwrap());
    let server_certs = CertStore::with(m.issuer.issue_local(&m.api, HOUR).unwrap());
    let server = Arc::new(tls::server_config(server_certs, m.trust.clone()).unwrap());

    let mut full = tls::client_config(client_certs.clone(), m.trust.clone()).unwrap();
    full.resumption = Resumption::disabled();
    let full = Arc::new(full);
    let resuming = Arc::new(tls::client_config(client_certs, m.trust.clone()).unwrap());

    assert_eq!(
        handshake(&full, &server, &m.api).handshake_kind(),
        Some(HandshakeKind::Full)
    );
    handshake(&resuming, &server, &m.api);
    assert_eq!(
        handshake(&resuming, &server, &m.api).handshake_kind(),
        Some(HandshakeKind::Resumed),
        "the resuming config must resume"
    );

    let mut g = cr.benchmark_group("mtls_handshake");
    g.throughput(Throughput::Elements(1));
    g.bench_function("full", |b| {
        b.iter(|| black_box(handshake(&full, &server, &m.api)))
    });
    g.bench_function("resumed", |b| {
        b.iter(|| black_box(handshake(&resuming, &server, &m.api)))
    });
    g.finish();
}

fn csr_signing(cr: &mut Criterion) {
    let m = mesh();
    let key = ca::generate_key().unwrap();
    let csr = ca::csr_pem(&key).unwrap();
    let mut g = cr.benchmark_group("issuer");
    g.throughput(Throughput::Elements(1));
    g.bench_function("sign_csr", |b| {
        b.iter(|| {
            black_box(
                m.issuer
                    .sign_csr(csr.as_bytes(), &m.web, 24 * HOUR)
                    .unwrap(),
            )
        })
    });
    g.finish();
}

criterion_group!(benches, handshakes, csr_signing);
criterion_main!(benches);

//! `identity_cert_expiration_timestamp_seconds` on a loopback proxy's `/metrics`: the
//! `notAfter` of the certificate it really serves, from files, and from an issuer through a
//! rotation. Every process is killed on drop; every wait is bounded.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mesh_identity::{CertStore, Identity, TrustBundle, TrustStore, ca, cert, tls};
use support::ChildGuard;
use support::loopback::{LoopbackProxy, app, free_port, get};
use support::pods::Trust;

const GAUGE: &str = "identity_cert_expiration_timestamp_seconds";
/// Short enough that the proxy renews (at ~70 %) within the test.
const LEAF_LIFETIME: &str = "4s";

/// The gauge's value on the proxy's admin endpoint.
fn gauge(admin: SocketAddr) -> Option<u64> {
    let rsp = get(admin, "/metrics");
    let v: f64 = rsp
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{GAUGE} ")))?
        .parse()
        .ok()?;
    Some(v as u64)
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_secs()
}

#[test]
fn a_proxy_reports_the_not_after_of_its_certificate_files() {
    let trust = Trust::new();
    trust.issue(&["api"]);
    let dir = trust.certs("api");
    let pem = std::fs::read_to_string(dir.join("tls.crt")).unwrap();
    let leaf = &cert::certs_from_pem(&pem).unwrap()[0];
    let want = unix(cert::validity_of(leaf).unwrap().not_after);
    let p = LoopbackProxy::start(app(), &["--identity-dir", dir.to_str().unwrap()]);
    assert_eq!(gauge(p.admin), Some(want));
    let text = get(p.admin, "/metrics");
    assert!(text.contains(&format!("# TYPE {GAUGE} gauge")), "{text}");
}

#[test]
fn a_proxy_without_identity_reports_no_expiry() {
    let p = LoopbackProxy::start(app(), &[]);
    let text = get(p.admin, "/metrics");
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(!text.contains(GAUGE), "{text}");
}

/// `mesh identity serve` issuing [`LEAF_LIFETIME`] certificates to `default/api`.
fn start_issuer(ca: &Path, tokens: &Path) -> (ChildGuard, SocketAddr) {
    let addr = free_port();
    let mut cmd = Command::new(support::mesh_bin());
    cmd.args(["identity", "serve", "--dir"])
        .arg(ca)
        .args(["--listen", &addr.to_string(), "--tokens"])
        .arg(tokens)
        .args(["--leaf-lifetime", LEAF_LIFETIME])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let child = ChildGuard::spawn(cmd, "issuer");
    (child, addr)
}

/// The `notAfter` of the certificate `api`'s proxy serves now, from a real mTLS handshake
/// as a `web` workload (signed in-process by the same issuer).
fn served_not_after(rt: &tokio::runtime::Runtime, ca: &Path, inbound: SocketAddr) -> u64 {
    let issuer = ca::Issuer::load_dir(ca).unwrap();
    let web = Identity::new("cluster.local", "default", "web").unwrap();
    let certs = CertStore::with(issuer.issue_local(&web, Duration::from_secs(600)).unwrap());
    let anchors = std::fs::read_to_string(ca.join("ca.crt")).unwrap();
    let trust = TrustStore::new(TrustBundle::from_pem(&anchors).unwrap());
    let config = tls::client_config(certs, trust).unwrap();
    let api = Identity::new("cluster.local", "default", "api").unwrap();
    let name = tls::server_name(&api).unwrap();
    rt.block_on(async {
        let tcp = tokio::net::TcpStream::connect(inbound).await.unwrap();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let tls = tokio::time::timeout(Duration::from_secs(5), connector.connect(name, tcp))
            .await
            .expect("the handshake finishes")
            .expect("the proxy serves api's certificate");
        let leaf = &tls.get_ref().1.peer_certificates().unwrap()[0];
        unix(cert::validity_of(leaf).unwrap().not_after)
    })
}

#[test]
fn the_expiry_follows_the_certificate_through_rotation() {
    let trust = Trust::new();
    let ca = trust.dir.join("ca");
    let tokens = trust.dir.join("tokens");
    std::fs::write(&tokens, "tok-api default/api\n").unwrap();
    let token = trust.dir.join("api.token");
    std::fs::write(&token, "tok-api").unwrap();
    let (_issuer, issuer) = start_issuer(&ca, &tokens);
    let p = LoopbackProxy::start(
        app(),
        &[
            "--identity-issuer",
            &issuer.to_string(),
            "--identity-token-file",
            token.to_str().unwrap(),
            "--trust-anchors",
            ca.join("ca.crt").to_str().unwrap(),
        ],
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // Each reading is the gauge on both sides of a handshake; a rotation between the reads
    // makes it inconclusive, and it is taken again.
    let mut seen: Vec<u64> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.len() < 2 {
        assert!(
            Instant::now() < deadline,
            "no rotation seen in 30 s: {seen:?}"
        );
        let before = gauge(p.admin);
        let served = served_not_after(&rt, &ca, p.inbound);
        if before == Some(served) && gauge(p.admin) == Some(served) && seen.last() != Some(&served)
        {
            seen.push(served);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(seen[1] > seen[0], "a renewal expires later: {seen:?}");
}

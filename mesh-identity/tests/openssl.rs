//! Interop with the `openssl` command: our certificates verify with `openssl verify`, and our
//! TLS configs complete mTLS handshakes with `openssl s_server` and `s_client`.
//!
//! Skipped, with a note, when `openssl` is not on PATH.
// Test helpers outside #[test] fns fail loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mesh_identity::tokio_rustls::{TlsAcceptor, TlsConnector};
use mesh_identity::{CertStore, Identity, MESH_ALPN, PeerIdentity, ca, cert, tls};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn have_openssl() -> bool {
    let found = Command::new("openssl")
        .arg("version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        eprintln!("note: `openssl` is not on PATH; skipping the OpenSSL interop test");
    }
    found
}

/// A scratch directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir = std::env::temp_dir().join(format!("mesh-{name}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn write(&self, name: &str, data: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, data).unwrap();
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child process killed on drop, so a failing test leaves nothing running.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Writes `<name>.crt` (leaf, issuer) and `<name>.key` for `id`; returns (cert, key) paths.
fn leaf_files(ca: &Ca, dir: &TempDir, name: &str, id: &Identity) -> (PathBuf, PathBuf) {
    let key = ca::generate_key().unwrap();
    let chain = ca
        .issuer
        .sign_csr(ca::csr_pem(&key).unwrap().as_bytes(), id, HOUR)
        .unwrap();
    (
        dir.write(&format!("{name}.crt"), &cert::certs_to_pem(&chain)),
        dir.write(&format!("{name}.key"), &key.serialize_pem()),
    )
}

fn openssl(args: &[&str]) -> (bool, String) {
    let out = Command::new("openssl").args(args).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn openssl_verifies_our_chain() {
    if !have_openssl() {
        return;
    }
    let ca = Ca::new();
    let dir = TempDir::new("verify");
    let anchor = dir.write("ca.crt", &ca.anchor.cert_pem());
    let issuer = dir.write("issuer.crt", &ca.issuer.cert_pem());
    let (leaf, _) = leaf_files(&ca, &dir, "web", &id("emojivoto", "web"));
    for purpose in ["sslclient", "sslserver"] {
        let (ok, out) = openssl(&[
            "verify",
            "-CAfile",
            path(&anchor),
            "-untrusted",
            path(&issuer),
            "-purpose",
            purpose,
            path(&leaf),
        ]);
        assert!(ok && out.contains(": OK"), "{purpose}: {out}");
    }
    // The DNS-form identity is a DNS SAN that OpenSSL's hostname check accepts.
    let (ok, out) = openssl(&[
        "verify",
        "-CAfile",
        path(&anchor),
        "-untrusted",
        path(&issuer),
        "-verify_hostname",
        "web.emojivoto.serviceaccount.identity.linkerd.cluster.local",
        path(&leaf),
    ]);
    assert!(ok, "{out}");
    // A leaf from another anchor does not verify.
    let rogue = Ca::new();
    let (other, _) = leaf_files(&rogue, &dir, "rogue", &id("emojivoto", "web"));
    let (ok, out) = openssl(&[
        "verify",
        "-CAfile",
        path(&anchor),
        "-untrusted",
        path(&issuer),
        path(&other),
    ]);
    assert!(!ok, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_client_and_openssl_s_server_do_mtls() {
    if !have_openssl() {
        return;
    }
    let ca = Ca::new();
    let dir = TempDir::new("s-server");
    let anchor = dir.write("ca.crt", &ca.anchor.cert_pem());
    let api = id("emojivoto", "api");
    let web = id("emojivoto", "web");
    let (cert, key) = leaf_files(&ca, &dir, "api", &api);
    // OpenSSL sends only the first certificate of -cert; the issuer goes in -cert_chain.
    let issuer = dir.write("issuer.crt", &ca.issuer.cert_pem());
    let port = free_port();
    let _server = Child(
        Command::new("openssl")
            .args([
                "s_server",
                "-accept",
                &format!("127.0.0.1:{port}"),
                "-cert",
                path(&cert),
                "-cert_chain",
                path(&issuer),
                "-key",
                path(&key),
                "-CAfile",
                path(&anchor),
                "-Verify",
                "2",
                "-verify_return_error",
                "-tls1_3",
                "-alpn",
                "mesh/1",
                "-www",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );

    let config = Arc::new(tls::client_config(CertStore::with(ca.creds(&web)), ca.trust()).unwrap());
    let deadline = Instant::now() + Duration::from_secs(10);
    let tcp = loop {
        match tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
            Ok(tcp) => break tcp,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("s_server did not start: {e}"),
        }
    };
    let mut stream = tokio::time::timeout(
        Duration::from_secs(5),
        TlsConnector::from(config).connect(tls::server_name(&api).unwrap(), tcp),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(stream.peer_identity(), Some(api));
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(MESH_ALPN));
    stream.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
    let mut page = String::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut page))
        .await
        .unwrap()
        .ok();
    // s_server's status page names the client certificate it verified.
    assert!(page.contains("TLSv1.3"), "{page}");
    assert!(page.contains("Verify return code: 0 (ok)"), "{page}");
    assert!(page.contains("Client certificate"), "{page}");
    assert!(
        page.contains("URI:spiffe://cluster.local/ns/emojivoto/sa/web"),
        "{page}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssl_s_client_and_our_server_do_mtls() {
    if !have_openssl() {
        return;
    }
    let ca = Ca::new();
    let dir = TempDir::new("s-client");
    let anchor = dir.write("ca.crt", &ca.anchor.cert_pem());
    let api = id("emojivoto", "api");
    let web = id("emojivoto", "web");
    let (cert, key) = leaf_files(&ca, &dir, "web", &web);
    let issuer = dir.write("issuer.crt", &ca.issuer.cert_pem());

    let config = tls::server_config(CertStore::with(ca.creds(&api)), ca.trust()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut tls = TlsAcceptor::from(Arc::new(config))
            .accept(tcp)
            .await
            .unwrap();
        let peer = tls.peer_identity();
        tls.write_all(format!("hello {}\n", peer.as_ref().unwrap()).as_bytes())
            .await
            .unwrap();
        tls.shutdown().await.ok();
        peer
    });

    let out = tokio::task::spawn_blocking(move || {
        let mut child = Child(
            Command::new("openssl")
                .args([
                    "s_client",
                    "-connect",
                    &format!("127.0.0.1:{port}"),
                    "-servername",
                    &api.to_dns("linkerd"),
                    "-verify_hostname",
                    &api.to_dns("linkerd"),
                    "-cert",
                    path(&cert),
                    "-cert_chain",
                    path(&issuer),
                    "-key",
                    path(&key),
                    "-CAfile",
                    path(&anchor),
                    "-verify_return_error",
                    "-tls1_3",
                    "-alpn",
                    "mesh/1",
                ])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        // Keep stdin open briefly so s_client reads the server's line before it quits.
        let mut stdin = child.0.stdin.take().unwrap();
        std::thread::sleep(Duration::from_millis(1500));
        stdin.write_all(b"Q\n").ok();
        drop(stdin);
        let mut stdout = String::new();
        child
            .0
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut stdout)
            .ok();
        let mut stderr = String::new();
        child
            .0
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .ok();
        format!("{stdout}{stderr}")
    });
    let out = tokio::time::timeout(Duration::from_secs(15), out)
        .await
        .unwrap()
        .unwrap();
    let peer = tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(peer, Some(web.clone()), "{out}");
    assert!(out.contains("Verify return code: 0 (ok)"), "{out}");
    assert!(out.contains("ALPN protocol: mesh/1"), "{out}");
    assert!(out.contains(&format!("hello {web}")), "{out}");
}

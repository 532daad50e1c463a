//! Hostile clients of the control-plane servers, against the real `mesh identity serve` on
//! loopback: many clients with a valid token sending their bodies a byte at a time (issue 15
//! measured 500 such connections held 25+ s and RSS 50 → 92 MB, not given back). Each is cut
//! off with 408, the connections and memory are released, and a good client is served
//! meanwhile. Injector attacks live in `injector_https.rs`; see tests/HOSTILE.md.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use mesh_identity::{TrustBundle, TrustStore, tls};
use support::procfs::{open_fds, rss_kib};
use support::{Killed, TempDir};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const SLOW_CLIENTS: usize = 100;

/// `mesh identity serve` on a fresh CA with one token, `web-token`, and its address.
fn issuer(dir: &Path, extra: &[&str]) -> (Killed, SocketAddr) {
    let ca = dir.join("ca");
    let o = support::output_within(
        Command::new(support::mesh_bin())
            .args(["identity", "init", "--out"])
            .arg(&ca),
        Duration::from_secs(30),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    std::fs::write(dir.join("tokens"), "web-token emojivoto/web\n").unwrap();
    let (child, url) = support::issuer::serve(&ca, &dir.join("tokens"), extra);
    let addr = url["https://".len()..]
        .parse()
        .expect("the issuer's address");
    (child, addr)
}

/// A TLS connection to the issuer that verifies its identity, as `mesh identity issue` does.
async fn connect(
    dir: &Path,
    addr: SocketAddr,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let anchors = std::fs::read_to_string(dir.join("ca").join("ca.crt")).unwrap();
    let trust = TrustStore::new(TrustBundle::from_pem(&anchors).unwrap());
    let config = Arc::new(tls::issuer_client_config(trust).unwrap());
    let id = mesh_identity::issuer::issuer_identity("cluster.local", "linkerd").unwrap();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tokio_rustls::TlsConnector::from(config)
        .connect(tls::server_name(&id).unwrap(), tcp)
        .await
        .unwrap()
}

/// A valid token, then a body promised at 1,000 bytes and sent a byte every 200 ms; what
/// the issuer answered before it closed the connection.
async fn slow_body(dir: Arc<Path>, addr: SocketAddr) -> String {
    let (mut rx, mut tx) = tokio::io::split(connect(&dir, addr).await);
    let head = "POST /v1/certificate HTTP/1.1\r\nhost: issuer\r\n\
                authorization: Bearer web-token\r\ncontent-length: 1000\r\n\r\n";
    let writer = tokio::spawn(async move {
        tx.write_all(head.as_bytes()).await?;
        for _ in 0..1000 {
            tx.write_all(b"A").await?;
            tx.flush().await?;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        std::io::Result::Ok(())
    });
    let mut answer = Vec::new();
    // Bounded, so an issuer that never cuts the client off fails instead of hanging.
    let read = tokio::time::timeout(Duration::from_secs(20), rx.read_to_end(&mut answer)).await;
    writer.abort();
    assert!(read.is_ok(), "a slow client was never cut off");
    String::from_utf8_lossy(&answer).into_owned()
}

/// `mesh identity issue` with the good token: whether it got a certificate.
fn issue(dir: &Path, addr: SocketAddr) -> bool {
    std::fs::write(dir.join("token"), "web-token").unwrap();
    let o = support::output_within(
        Command::new(support::mesh_bin())
            .args(["identity", "issue", "--issuer", &format!("https://{addr}")])
            .arg("--token-file")
            .arg(dir.join("token"))
            .arg("--trust-anchors")
            .arg(dir.join("ca").join("ca.crt"))
            .arg("--out")
            .arg(dir.join("out")),
        Duration::from_secs(30),
    );
    o.status.success()
}

#[test]
fn slow_bodies_with_a_valid_token_get_408_and_release_what_they_held() {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let dir = TempDir(std::env::temp_dir().join(format!(
        "mesh-hostile-issuer-{}-{nanos}",
        std::process::id()
    )));
    std::fs::create_dir_all(&dir.0).unwrap();
    let (issuer, addr) = issuer(&dir.0, &["--body-read-timeout", "2s"]);
    let pid = issuer.0.id();
    assert!(
        issue(&dir.0, addr),
        "the issuer does not serve a good client"
    );
    let (fds_before, rss_before) = (open_fds(pid), rss_kib(pid));

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let shared: Arc<Path> = Arc::from(dir.0.as_path());
    let slow = rt.spawn(async move {
        let tasks: Vec<_> = (0..SLOW_CLIENTS)
            .map(|_| tokio::spawn(slow_body(Arc::clone(&shared), addr)))
            .collect();
        let mut answers = Vec::new();
        for t in tasks {
            answers.push(t.await.unwrap());
        }
        answers
    });
    // While they trickle, a good client is served.
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        issue(&dir.0, addr),
        "a good client was not served during the attack"
    );
    for answer in rt.block_on(slow).unwrap() {
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    }

    // The connections are released, and the memory with them.
    assert!(
        support::loopback::wait_for(Duration::from_secs(10), || open_fds(pid) <= fds_before + 2),
        "issuer fds: {fds_before} before, {} after",
        open_fds(pid)
    );
    let grown = rss_kib(pid).saturating_sub(rss_before);
    assert!(grown < 32 * 1024, "issuer RSS grew by {grown} KiB");
    assert!(issue(&dir.0, addr), "the issuer stopped serving");
}

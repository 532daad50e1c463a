//! Shutdown and opaque connections: a silent one is closed at once, an active one keeps
//! flowing within the grace period. Explicit mode on loopback.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use support::loopback::{LoopbackProxy, exchange};

/// A TCP app that echoes what it is sent.
fn echo_app() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            std::thread::spawn(move || {
                let mut r = s.try_clone().unwrap();
                let mut w = s;
                let _ = std::io::copy(&mut r, &mut w);
            });
        }
    });
    addr
}

/// Opens an opaque connection through the proxy and proves bytes go both ways.
fn open(p: &LoopbackProxy) -> TcpStream {
    let mut s = TcpStream::connect(p.inbound).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"ping").unwrap();
    let mut buf = [0u8; 4];
    s.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"ping");
    s
}

#[test]
fn shutdown_closes_idle_opaque_connections_at_once_and_lets_active_ones_flow() {
    let dir = std::env::temp_dir().join(format!("mesh-drain-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let app = echo_app();
    let path = dir.join("opaque.yaml");
    let server = format!(
        "apiVersion: policy.linkerd.io/v1beta3
kind: Server
metadata: {{ name: app, namespace: default }}
spec: {{ podSelector: {{}}, port: {}, proxyProtocol: opaque, accessPolicy: all-unauthenticated }}
",
        app.port()
    );
    std::fs::write(&path, server).unwrap();
    let flags = [
        "--config",
        path.to_str().unwrap(),
        "--shutdown-grace",
        "20s",
    ];
    let p = LoopbackProxy::start(app, &flags);

    let mut idle = open(&p);
    let mut active = open(&p);
    // The idle connection has been silent a while when shutdown begins; the active one not.
    let mut buf = [0u8; 1];
    let opened = Instant::now();
    while opened.elapsed() < Duration::from_millis(1200) {
        active.write_all(b"x").unwrap();
        active.read_exact(&mut buf).unwrap();
        std::thread::sleep(Duration::from_millis(100));
    }
    let r = exchange(
        p.admin,
        b"POST /shutdown HTTP/1.1\r\nHost: admin\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    );
    assert!(r.starts_with("HTTP/1.1 2"), "{r:?}");
    let began = Instant::now();

    // The active one keeps flowing during the drain.
    while began.elapsed() < Duration::from_millis(1500) {
        active.write_all(b"x").unwrap();
        active.read_exact(&mut buf).unwrap();
        std::thread::sleep(Duration::from_millis(100));
    }

    // The silent one was closed at once (not after the 20 s grace).
    let mut rest = Vec::new();
    let n = idle.read_to_end(&mut rest);
    assert!(matches!(n, Ok(0)) || n.is_err(), "{n:?}");
    assert!(began.elapsed() < Duration::from_secs(3), "idle closed late");

    // Once the active one falls silent, it is closed too, long before the grace ends.
    let quiet = Instant::now();
    let n = active.read_to_end(&mut rest);
    assert!(matches!(n, Ok(0)) || n.is_err(), "{n:?}");
    assert!(
        quiet.elapsed() < Duration::from_secs(3),
        "active closed late"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

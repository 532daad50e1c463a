//! Endpoints follow `--config`: when a Service's EndpointSlice is emptied, new requests stop
//! reaching the removed endpoint and fail fast with 503. Explicit mode on loopback.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use support::loopback::{LoopbackProxy, app, exchange, get, recording_app};

/// A Service `web.shop:80` whose one endpoint is `endpoint` (none if `None`).
fn config(endpoint: Option<SocketAddr>) -> String {
    let endpoints = endpoint.map_or_else(
        || "[]".to_owned(),
        |a| format!("[{{ addresses: [\"{}\"] }}]", a.ip()),
    );
    // With no endpoints the slice's port is kept, as Kubernetes keeps it.
    let port = endpoint.map_or(1, |a| a.port());
    format!(
        "apiVersion: v1
kind: Service
metadata: {{ name: web, namespace: shop }}
spec: {{ ports: [{{ name: http, port: 80 }}] }}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-x
  namespace: shop
  labels: {{ kubernetes.io/service-name: web }}
addressType: IPv4
ports: [{{ name: http, port: {port} }}]
endpoints: {endpoints}
"
    )
}

/// An app that answers each request only when released: it says when a request arrives, then
/// waits for a message on the returned sender.
fn held_app() -> (SocketAddr, mpsc::Receiver<()>, mpsc::Sender<()>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let (arrived_tx, arrived) = mpsc::channel();
    let (release, release_rx) = mpsc::channel::<()>();
    std::thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && s.read_exact(&mut byte).is_ok() {
                head.push(byte[0]);
            }
            let _ = arrived_tx.send(());
            if release_rx.recv_timeout(Duration::from_secs(10)).is_err() {
                return;
            }
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nheld");
        }
    });
    (addr, arrived, release)
}

/// Writes `text` to `path` whole, so the proxy never reads half a file.
fn write(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Writes `text` to `path` and waits until the proxy has loaded it.
fn reload(p: &LoopbackProxy, path: &Path, text: &str) {
    let before = reloads_ok(p);
    write(path, text);
    let deadline = Instant::now() + Duration::from_secs(10);
    while reloads_ok(p) <= before {
        assert!(Instant::now() < deadline, "the new config was not loaded");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn reloads_ok(p: &LoopbackProxy) -> f64 {
    get(p.admin, "/metrics")
        .lines()
        .filter(|l| l.starts_with("config_reload_total{") && l.contains("result=\"ok\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn call_web(p: &LoopbackProxy) -> String {
    exchange(
        p.outbound,
        b"GET /web HTTP/1.1\r\nHost: web.shop:80\r\nConnection: close\r\n\r\n",
    )
}

#[test]
fn an_emptied_endpoint_set_stops_new_traffic_with_503() {
    let dir = std::env::temp_dir().join(format!("mesh-endpoints-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("mesh.yaml");
    let (web, seen) = recording_app();
    write(&path, &config(Some(web)));
    let flags = ["--config", path.to_str().unwrap(), "--config-poll", "100ms"];
    let p = LoopbackProxy::start(app(), &flags);

    let r = call_web(&p);
    assert!(r.starts_with("HTTP/1.1 200"), "{r:?}");
    assert_eq!(seen.lock().len(), 1);

    reload(&p, &path, &config(None));

    let started = Instant::now();
    let r = call_web(&p);
    assert!(r.starts_with("HTTP/1.1 503"), "{r:?}");
    assert!(started.elapsed() < Duration::from_secs(2), "not fast");
    assert!(r.contains("no endpoints"), "{r:?}");
    assert_eq!(
        seen.lock().len(),
        1,
        "the removed endpoint got a new request"
    );

    // And back: endpoints that come again are used again.
    reload(&p, &path, &config(Some(web)));
    let r = call_web(&p);
    assert!(r.starts_with("HTTP/1.1 200"), "{r:?}");
    assert_eq!(seen.lock().len(), 2);

    // Deleting the slice (the Service stays) stops traffic the same way.
    let service_only = config(Some(web));
    reload(&p, &path, service_only.split("---").next().unwrap());
    let r = call_web(&p);
    assert!(r.starts_with("HTTP/1.1 503"), "{r:?}");
    assert_eq!(
        seen.lock().len(),
        2,
        "the removed endpoint got a new request"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_request_in_flight_to_a_removed_endpoint_finishes() {
    let dir = std::env::temp_dir().join(format!("mesh-inflight-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("mesh.yaml");
    let (web, arrived, release) = held_app();
    write(&path, &config(Some(web)));
    let flags = ["--config", path.to_str().unwrap(), "--config-poll", "100ms"];
    let p = LoopbackProxy::start(app(), &flags);

    let outbound = p.outbound;
    let in_flight = std::thread::spawn(move || {
        exchange(
            outbound,
            b"GET /slow HTTP/1.1\r\nHost: web.shop:80\r\nConnection: close\r\n\r\n",
        )
    });
    arrived.recv_timeout(Duration::from_secs(5)).unwrap();
    reload(&p, &path, &config(None));
    let r = call_web(&p);
    assert!(r.starts_with("HTTP/1.1 503"), "{r:?}");

    release.send(()).unwrap();
    let r = in_flight.join().unwrap();
    assert!(
        r.starts_with("HTTP/1.1 200") && r.ends_with("held"),
        "{r:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

//! Bad input never crashes the proxy: malformed HTTP, oversized headers, slow clients,
//! half-closed TCP and peers that reset mid-body are each answered or closed cleanly, counted,
//! and the next client is served. Explicit mode on loopback: no root needed.

mod support;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use support::loopback::{LoopbackProxy, app, exchange, get, recording_app, slow_exchange};

fn start(app: SocketAddr) -> LoopbackProxy {
    LoopbackProxy::start(
        app,
        &[
            "--header-read-timeout",
            "500ms",
            "--detect-timeout",
            "300ms",
        ],
    )
}

fn served(p: &LoopbackProxy) {
    let r = get(p.inbound, "/");
    assert!(
        r.starts_with("HTTP/1.1 200") && r.ends_with("ok"),
        "the proxy stopped serving: {r:?}"
    );
}

#[test]
fn bad_clients_are_answered_or_closed_and_the_proxy_keeps_serving() {
    let p = start(app());
    served(&p);

    // Malformed HTTP: a 400, not a crash.
    let r = exchange(p.inbound, b"GET / HTTP/1.1\r\nBad Header Line\r\n\r\n");
    assert!(r.starts_with("HTTP/1.1 400"), "{r:?}");
    served(&p);

    // Oversized headers: refused (431) or the connection closed, never buffered forever.
    let big = format!(
        "GET / HTTP/1.1\r\nHost: app\r\nX-Big: {}\r\n\r\n",
        "a".repeat(200 * 1024)
    );
    let r = exchange(p.inbound, big.as_bytes());
    assert!(
        !r.starts_with("HTTP/1.1 200"),
        "{:?}",
        &r[..r.len().min(80)]
    );
    served(&p);

    // A slow client that never finishes its headers is cut off after the header timeout.
    let mut slow = TcpStream::connect(p.inbound).unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: a").unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let started = Instant::now();
    let mut buf = Vec::new();
    let _ = slow.read_to_end(&mut buf);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the slow client was never cut off"
    );
    served(&p);

    // Half-closed: the client sends its request and shuts its side; the answer still comes.
    let mut half = TcpStream::connect(p.inbound).unwrap();
    half.write_all(b"GET / HTTP/1.1\r\nHost: app\r\n\r\n")
        .unwrap();
    half.shutdown(Shutdown::Write).unwrap();
    half.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut out = String::new();
    let _ = half.read_to_string(&mut out);
    assert!(out.starts_with("HTTP/1.1 200"), "{out:?}");

    // A peer that vanishes mid-body: reset, and the proxy carries on.
    {
        let s = TcpStream::connect(p.inbound).unwrap();
        (&s).write_all(b"POST / HTTP/1.1\r\nHost: app\r\nContent-Length: 100000\r\n\r\npartial")
            .unwrap();
        std::thread::sleep(Duration::from_millis(50));
        // SO_LINGER 0 turns the close into a reset.
        let sock = socket2::SockRef::from(&s);
        sock.set_linger(Some(Duration::ZERO)).unwrap();
    }
    // Opaque bytes on the outbound side with no destination to send them to: closed.
    let r = exchange(p.outbound, b"\x00\x01\x02 not http");
    assert!(r.is_empty(), "{r:?}");
    served(&p);

    // And each of those was counted.
    let metrics = get(p.admin, "/metrics");
    let errors: u64 = metrics
        .lines()
        .filter(|l| l.starts_with("tcp_connection_errors_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert!(errors >= 3, "connection errors not counted:\n{metrics}");
    assert!(
        metrics.contains("tcp_open_total{direction=\"inbound\""),
        "{metrics}"
    );
}

/// The issue's policy: the Server on the app's port denies by default; `/` is open to every
/// network, `/admin` only to the mesh identity `web` (which a loopback client cannot have).
fn route_policy(dir: &Path, app: SocketAddr, proxy_protocol: Option<&str>) -> std::path::PathBuf {
    let protocol = proxy_protocol.map_or(String::new(), |p| format!(", proxyProtocol: {p}"));
    let yaml = format!(
        r#"
apiVersion: policy.linkerd.io/v1beta3
kind: Server
metadata: {{ name: app, namespace: default }}
spec: {{ podSelector: {{}}, port: {port}, accessPolicy: deny{protocol} }}
---
apiVersion: policy.linkerd.io/v1beta1
kind: HTTPRoute
metadata: {{ name: open, namespace: default }}
spec:
  parentRefs: [{{ name: app, kind: Server, group: policy.linkerd.io }}]
  rules: [{{ matches: [{{ path: {{ type: PathPrefix, value: / }} }}] }}]
---
apiVersion: policy.linkerd.io/v1beta1
kind: HTTPRoute
metadata: {{ name: admin, namespace: default }}
spec:
  parentRefs: [{{ name: app, kind: Server, group: policy.linkerd.io }}]
  rules: [{{ matches: [{{ path: {{ type: PathPrefix, value: /admin }} }}] }}]
---
apiVersion: policy.linkerd.io/v1alpha1
kind: NetworkAuthentication
metadata: {{ name: everyone, namespace: default }}
spec: {{ networks: [{{ cidr: 0.0.0.0/0 }}, {{ cidr: "::/0" }}] }}
---
apiVersion: policy.linkerd.io/v1alpha1
kind: AuthorizationPolicy
metadata: {{ name: open, namespace: default }}
spec:
  targetRef: {{ group: policy.linkerd.io, kind: HTTPRoute, name: open }}
  requiredAuthenticationRefs: [{{ group: policy.linkerd.io, kind: NetworkAuthentication, name: everyone }}]
---
apiVersion: policy.linkerd.io/v1alpha1
kind: MeshTLSAuthentication
metadata: {{ name: web, namespace: default }}
spec: {{ identities: [web.default.serviceaccount.identity.linkerd.cluster.local] }}
---
apiVersion: policy.linkerd.io/v1alpha1
kind: AuthorizationPolicy
metadata: {{ name: admin, namespace: default }}
spec:
  targetRef: {{ group: policy.linkerd.io, kind: HTTPRoute, name: admin }}
  requiredAuthenticationRefs: [{{ group: policy.linkerd.io, kind: MeshTLSAuthentication, name: web }}]
"#,
        port = app.port()
    );
    let path = dir.join(format!(
        "policy-{}.yaml",
        proxy_protocol.map_or("detect", |_| "http")
    ));
    std::fs::write(&path, yaml).unwrap();
    path
}

fn counter_sum(metrics: &str, name: &str, parts: &[&str]) -> u64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && parts.iter().all(|p| l.contains(p)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

const ADMIN: &[u8] = b" /admin/secret HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";

fn request(method: &str) -> Vec<u8> {
    [method.as_bytes(), ADMIN].concat()
}

#[test]
fn route_authorization_cannot_be_sidestepped_by_how_the_bytes_arrive() {
    let dir = std::env::temp_dir().join(format!("mesh-bypass-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (app, seen) = recording_app();
    // The first byte comes after the detect timeout, well within the header timeout.
    let timeouts = ["--detect-timeout", "200ms", "--header-read-timeout", "5s"];
    let slow = Duration::from_millis(600);
    let not_http = b"\x00\x01\x02 not http /admin/secret\r\n\r\n";

    // 1. The Server says HTTP/1: the port is HTTP whatever the bytes, every request is
    //    authorized by its route and counted.
    let policy = route_policy(&dir, app, Some("HTTP/1"));
    let config = ["--config", policy.to_str().unwrap()];
    let p = LoopbackProxy::start(app, &[&timeouts[..], &config].concat());
    served(&p);
    for bytes in [request("GET"), request("PROPFIND"), request("PURGE")] {
        let r = exchange(p.inbound, &bytes);
        assert!(r.starts_with("HTTP/1.1 403"), "{r:?}");
        // An unauthenticated client learns nothing of the policy that refused it.
        assert!(r.ends_with("\r\n\r\nforbidden\n"), "{r:?}");
        assert!(r.contains("l5d-proxy-error: forbidden\r\n"), "{r:?}");
        assert!(!r.contains("Server/"), "{r:?}");
    }
    let r = slow_exchange(p.inbound, b"G", slow, &request("ET"));
    assert!(r.starts_with("HTTP/1.1 403"), "slow first byte: {r:?}");
    let r = exchange(p.inbound, not_http);
    assert!(r.starts_with("HTTP/1.1 400"), "not HTTP: {r:?}");
    served(&p);
    let m = get(p.admin, "/metrics");
    let denied = counter_sum(&m, "inbound_http_authz_deny_total", &["srv_name=\"app\""]);
    assert_eq!(denied, 4, "{m}");
    // Denied requests are counted by authorization (with the Server and route that refused
    // them); request_total counts what was admitted: the two served probes.
    assert_eq!(
        counter_sum(&m, "request_total", &["direction=\"inbound\""]),
        2,
        "{m}"
    );
    drop(p);
    // Debugging a policy, the operator may ask for the reason in the answer.
    let debug = [&timeouts[..], &config, &["--debug-authz-responses"]].concat();
    let p = LoopbackProxy::start(app, &debug);
    served(&p);
    let r = exchange(p.inbound, &request("GET"));
    assert!(
        r.starts_with("HTTP/1.1 403") && r.contains("Server/"),
        "{r:?}"
    );
    drop(p);

    // 2. No proxyProtocol: the bytes are detected. Any token is a method, so PROPFIND and
    //    PURGE are HTTP; what stays unclassified is a connection that could carry /admin,
    //    which an unauthenticated client may not reach, so it is refused and counted.
    let policy = route_policy(&dir, app, None);
    let config = ["--config", policy.to_str().unwrap()];
    let p = LoopbackProxy::start(app, &[&timeouts[..], &config].concat());
    served(&p);
    for bytes in [request("PROPFIND"), request("PURGE")] {
        let r = exchange(p.inbound, &bytes);
        assert!(r.starts_with("HTTP/1.1 403"), "{r:?}");
    }
    let r = slow_exchange(p.inbound, b"G", slow, &request("ET"));
    assert!(r.is_empty(), "slow first byte: {r:?}");
    let r = exchange(p.inbound, not_http);
    assert!(r.is_empty(), "not HTTP: {r:?}");
    served(&p);
    let m = get(p.admin, "/metrics");
    let tcp_denied = counter_sum(&m, "inbound_tcp_authz_deny_total", &["srv_name=\"app\""]);
    assert_eq!(tcp_denied, 2, "{m}");
    let denied = counter_sum(&m, "inbound_http_authz_deny_total", &["srv_name=\"app\""]);
    assert_eq!(denied, 2, "{m}");

    // Whatever was tried, the app saw only the open route.
    let seen = seen.lock().clone();
    assert!(
        seen.iter().all(|l| l == "GET / HTTP/1.1"),
        "the app was sent: {seen:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

//! The sidecar end to end: "pods" are network namespaces joined by veth pairs, each with
//! `mesh init` (iptables) and `mesh proxy` running as UID 2102 beside an application that is
//! not written in Rust (Python's http.server). The applications know nothing of the mesh.
//!
//! Needs root, `ip netns` and iptables; skips with a printed reason elsewhere. Every
//! namespace, veth and process is removed when the test ends, pass or fail.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use support::pods::{
    CLIENT_PY, PROXY_UID, Trust, count, link, metric_line, start_pod, write_config,
};
use support::{Netns, python3, run_ok, skip_unless_root_and_netns};

#[test]
fn two_pods_talk_mtls_through_transparent_sidecars() {
    if !skip_unless_root_and_netns() || !support::require(&["setpriv"]) || python3().is_none() {
        return;
    }
    let trust = Trust::new();
    trust.issue(&["client", "web", "web-v2"]);

    let (a, b1, b2) = (Netns::new(), Netns::new(), Netns::new());
    let (_, ip1) = link(&a, "to-web", &b1, "eth0", 1);
    let (_, ip2) = link(&a, "to-v2", &b2, "eth0", 2);

    // What the client pod's proxy knows: two backend Services, a split Service over them.
    let client_cfg = trust.dir.join("client.yaml");
    write_config(
        &client_cfg,
        &format!(
            r#"
apiVersion: v1
kind: Service
metadata: {{ name: web-svc, namespace: default }}
spec: {{ clusterIP: 10.213.1.100, ports: [{{ name: http, port: 80 }}] }}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{ name: web-split, namespace: default }}
spec:
  parentRefs: [{{ name: web-svc, kind: Service, group: core, port: 80 }}]
  rules:
  - backendRefs:
    - {{ name: web-v1, port: 80, weight: 90 }}
    - {{ name: web-v2, port: 80, weight: 10 }}
---
apiVersion: v1
kind: Service
metadata: {{ name: web-v1, namespace: default }}
spec: {{ ports: [{{ name: http, port: 80, targetPort: 8080 }}] }}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-v1-x
  namespace: default
  labels: {{ kubernetes.io/service-name: web-v1 }}
  annotations: {{ mesh.io/service-account: web }}
addressType: IPv4
ports: [{{ name: http, port: 8080 }}]
endpoints: [{{ addresses: ["{ip1}"] }}]
---
apiVersion: v1
kind: Service
metadata: {{ name: web-v2, namespace: default }}
spec: {{ ports: [{{ name: http, port: 80, targetPort: 8080 }}] }}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-v2-x
  namespace: default
  labels: {{ kubernetes.io/service-name: web-v2 }}
  annotations: {{ mesh.io/service-account: web-v2 }}
addressType: IPv4
ports: [{{ name: http, port: 8080 }}]
endpoints: [{{ addresses: ["{ip2}"] }}]
"#
        ),
    );
    // The servers admit only authenticated (meshed) clients.
    let server_cfg = trust.dir.join("server.yaml");
    write_config(
        &server_cfg,
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: default\n  annotations: { config.linkerd.io/default-inbound-policy: all-authenticated }\n",
    );

    let web = start_pod(
        b1,
        ip1.clone(),
        &trust.certs("web"),
        &server_cfg,
        Some("web-v1"),
    );
    let v2 = start_pod(
        b2,
        ip2.clone(),
        &trust.certs("web-v2"),
        &server_cfg,
        Some("web-v2"),
    );
    let client = start_pod(
        a,
        "10.213.1.1".into(),
        &trust.certs("client"),
        &client_cfg,
        None,
    );

    // 1. The app calls the other pod's IP and port; both sidecars carry it, unseen.
    let r = client.requests(None, &web.ip, 8080, &format!("{}:8080", web.ip), 5, "/");
    assert_eq!(count(&r, "200 web-v1"), 5, "{r:?}");

    // 2. Both sides count it, with mTLS and each other's identities: the app's plaintext
    //    did not cross the veth.
    let out = client.metrics();
    let line = metric_line(
        &out,
        "response_total",
        &[
            "direction=\"outbound\"",
            "tls=\"true\"",
            "server_id=\"web.default.serviceaccount.identity.linkerd.cluster.local\"",
            "status_code=\"200\"",
        ],
    )
    .unwrap_or_else(|| panic!("client outbound metrics:\n{out}"));
    assert!(line.ends_with(" 5"), "{line}");
    let inb = web.metrics();
    let line = metric_line(
        &inb,
        "request_total",
        &[
            "direction=\"inbound\"",
            "tls=\"true\"",
            "client_id=\"client.default.serviceaccount.identity.linkerd.cluster.local\"",
        ],
    )
    .unwrap_or_else(|| panic!("server inbound metrics:\n{inb}"));
    assert!(line.ends_with(" 5"), "{line}");
    assert!(
        metric_line(&inb, "request_total", &["tls=\"no_identity\""]).is_none(),
        "plaintext reached the server pod:\n{inb}"
    );

    // 3. A client without a sidecar (the proxy's UID bypasses the redirect) is refused:
    //    the server pod admits only authenticated clients.
    let r = client.requests(Some(PROXY_UID), &web.ip, 8080, "web", 3, "/");
    assert_eq!(
        r.iter()
            .filter(|(_, k)| k.starts_with("403 "))
            .map(|(n, _)| n)
            .sum::<usize>(),
        3,
        "{r:?}"
    );

    // 4. A 90/10 split between two backend pods holds within ±3 % over 2,000 requests made
    //    to the Service's ClusterIP (the original destination decides, not the Host).
    let r = client.requests(None, "10.213.1.100", 80, "web-svc.default:80", 2000, "/");
    let (v1n, v2n) = (count(&r, "200 web-v1"), count(&r, "200 web-v2"));
    assert_eq!(v1n + v2n, 2000, "{r:?}");
    let share = v2n as f64 / 2000.0;
    assert!(
        (0.07..=0.13).contains(&share),
        "web-v2 got {share:.3} of requests: {r:?}"
    );

    // 5. SIGTERM drains an in-flight slow request before the proxy exits.
    let slow = {
        let ns_name = client.ns.name().to_owned();
        let ip = v2.ip.clone();
        std::thread::spawn(move || {
            let out = Command::new("ip")
                .args(["netns", "exec", &ns_name])
                .arg(python3().unwrap())
                .args([
                    "-c",
                    CLIENT_PY,
                    &ip,
                    "8080",
                    &format!("{ip}:8080"),
                    "1",
                    "/slow",
                ])
                .output()
                .unwrap();
            support::stdout(&out)
        })
    };
    std::thread::sleep(Duration::from_millis(700));
    let mut v2 = v2;
    run_ok(Command::new("kill").args(["-TERM", &v2.proxy.id().to_string()]));
    let reply = slow.join().unwrap();
    assert!(
        reply.contains("1 200 web-v2"),
        "the in-flight request was not drained: {reply}"
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(s) = v2.proxy.try_wait() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the proxy did not exit after draining"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        status.success(),
        "the proxy exited with {status} after SIGTERM"
    );
    drop(trust);
}

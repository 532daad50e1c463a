//! Outbound, end to end, as in a real pod: the original destination decides where a
//! connection goes, never the Host header. A Service's ClusterIP gets its routes, split and
//! mTLS; a pod's IP goes to that pod; anything else passes through unchanged. Short names
//! resolve in the proxy's own namespace in explicit mode.
//!
//! Needs root, `ip netns` and iptables; skips with a printed reason elsewhere. Every
//! namespace, veth and process is removed when the test ends, pass or fail.

mod support;

use std::process::Command;

use support::pods::{
    PROXY_UID, Pod, Trust, count, link, start_app, start_pod, start_pod_with, write_config,
};
use support::{Netns, python3, run_ok, skip_unless_root_and_netns};

/// The ClusterIP of Service `web` in pod a's config; routed into pod a so the app's connect
/// reaches the redirect, as kube-proxy's DNAT would have it outside the pod.
const CLUSTER_IP: &str = "10.213.200.10";

/// Backend pods accept anyone: these tests are about where the client's traffic goes.
const SERVER_CFG: &str = "apiVersion: v1\nkind: Namespace\nmetadata: { name: default }\n";

fn ready() -> bool {
    skip_unless_root_and_netns() && support::require(&["setpriv"]) && python3().is_some()
}

/// Pod a's config: `web` with a ClusterIP and a 90/10 HTTPRoute over two backend Services
/// whose named `targetPort` resolves through their EndpointSlices' port names.
fn client_config(ip1: &str, ip2: &str) -> String {
    let backend = |name: &str, ip: &str, sa: &str| {
        format!(
            r#"---
apiVersion: v1
kind: Service
metadata: {{ name: {name}, namespace: default }}
spec: {{ ports: [{{ name: http, port: 80, targetPort: app }}] }}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {name}-x
  namespace: default
  labels: {{ kubernetes.io/service-name: {name} }}
  annotations: {{ mesh.io/service-account: {sa} }}
addressType: IPv4
ports: [{{ name: app, port: 8080 }}]
endpoints: [{{ addresses: ["{ip}"], targetRef: {{ kind: Pod, name: {name}-0 }} }}]
"#
        )
    };
    format!(
        r#"
apiVersion: v1
kind: Service
metadata: {{ name: web, namespace: default }}
spec: {{ clusterIP: {CLUSTER_IP}, ports: [{{ name: http, port: 80 }}] }}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{ name: web-split, namespace: default }}
spec:
  parentRefs: [{{ name: web, kind: Service, group: core, port: 80 }}]
  rules:
  - backendRefs:
    - {{ name: web-v1, port: 80, weight: 90 }}
    - {{ name: web-v2, port: 80, weight: 10 }}
{}{}"#,
        backend("web-v1", ip1, "web"),
        backend("web-v2", ip2, "web-v2"),
    )
}

/// The sum of the samples of `name` whose labels include all of `parts`.
fn metric_sum(text: &str, name: &str, parts: &[&str]) -> u64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && parts.iter().all(|p| l.contains(p)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

#[test]
fn the_original_destination_decides_and_unknown_traffic_passes_through() {
    if !ready() {
        return;
    }
    let trust = Trust::new();
    trust.issue(&["client", "web", "web-v2"]);
    let (a, b1, b2, ext) = (Netns::new(), Netns::new(), Netns::new(), Netns::new());
    let (_, ip1) = link(&a, "to-v1", &b1, "eth0", 1);
    let (_, ip2) = link(&a, "to-v2", &b2, "eth0", 2);
    let (_, ext_ip) = link(&a, "to-ext", &ext, "eth0", 3);
    run_ok(Command::new("ip").args([
        "-n",
        a.name(),
        "route",
        "add",
        &format!("{CLUSTER_IP}/32"),
        "dev",
        "to-v1",
    ]));
    // The third namespace is in no config and runs no proxy: an HTTP app and a listener that
    // speaks first (on a port detection waits on, and on a default opaque port).
    let _ext_app = start_app(&ext, "ext");
    let _ext_tcp = ext.listen("ext-tcp", &[9090, 5432]);

    let client_cfg = trust.dir.join("client.yaml");
    write_config(&client_cfg, &client_config(&ip1, &ip2));
    let server_cfg = trust.dir.join("server.yaml");
    write_config(&server_cfg, SERVER_CFG);
    let _v1 = start_pod(
        b1,
        ip1.clone(),
        &trust.certs("web"),
        &server_cfg,
        Some("web-v1"),
    );
    let _v2 = start_pod(b2, ip2, &trust.certs("web-v2"), &server_cfg, Some("web-v2"));
    let client = start_pod(
        a,
        "10.213.1.1".into(),
        &trust.certs("client"),
        &client_cfg,
        None,
    );

    cluster_ip_gets_the_split_over_mtls(&client);
    pod_ip_goes_to_that_pod(&client, &ip1);
    unknown_traffic_passes_through(&client, &ext_ip);
    drop(trust);
}

/// (a) The ClusterIP, with a Host naming nothing: the Service's 90/10 split, over mTLS.
fn cluster_ip_gets_the_split_over_mtls(client: &Pod) {
    let r = client.requests(None, CLUSTER_IP, 80, "nothing.invalid", 2000, "/");
    let (v1, v2) = (count(&r, "200 web-v1"), count(&r, "200 web-v2"));
    assert_eq!(v1 + v2, 2000, "{r:?}");
    let share = v2 as f64 / 2000.0;
    assert!(
        (0.07..=0.13).contains(&share),
        "web-v2 got {share:.3}: {r:?}"
    );
    let m = client.metrics();
    let mtls = |svc: &str| {
        metric_sum(
            &m,
            "response_total",
            &[
                "direction=\"outbound\"",
                "tls=\"true\"",
                &format!("dst_service=\"{svc}\""),
                "status_code=\"200\"",
            ],
        )
    };
    assert_eq!(mtls("web-v1") + mtls("web-v2"), 2000, "{m}");
}

/// A pod by its IP: to that pod, over mTLS with its identity, labelled with its Service,
/// namespace and pod name rather than its address.
fn pod_ip_goes_to_that_pod(client: &Pod, ip1: &str) {
    let r = client.requests(None, ip1, 8080, "web-v2.default", 5, "/");
    assert_eq!(count(&r, "200 web-v1"), 5, "{r:?}");
    let m = client.metrics();
    let n = metric_sum(
        &m,
        "response_total",
        &[
            "tls=\"true\"",
            "dst_service=\"web-v1\"",
            "dst_namespace=\"default\"",
            "dst_pod=\"web-v1-0\"",
        ],
    );
    assert_eq!(n, 5, "{m}");
    assert!(!m.contains(&format!("dst_service=\"{ip1}\"")), "{m}");
}

/// (b) A server in no config: by IP with Hosts that name nothing, an IP or even a known
/// Service, HTTP and opaque TCP answer exactly as they do without the mesh (UID 2102 bypasses
/// the redirect); counted, and labelled as plaintext for want of an identity.
fn unknown_traffic_passes_through(client: &Pod, ext_ip: &str) {
    for host in [
        "ext.example.com",
        ext_ip,
        &format!("{ext_ip}:8080"),
        "web",
        "web.default.svc.cluster.local",
    ] {
        let meshed = client.requests(None, ext_ip, 8080, host, 3, "/");
        let bare = client.requests(Some(PROXY_UID), ext_ip, 8080, host, 3, "/");
        assert_eq!(meshed, bare, "Host {host}");
        assert_eq!(count(&meshed, "200 ext"), 3, "Host {host}: {meshed:?}");
    }
    let uid: u32 = PROXY_UID.parse().unwrap();
    for port in [9090, 5432] {
        let dst = std::net::SocketAddrV4::new(ext_ip.parse().unwrap(), port);
        let meshed = client.ns.connect(None, dst);
        let bare = client.ns.connect(Some(uid), dst);
        assert!(meshed.is_ok(), "port {port}: {meshed:?}");
        assert_eq!(meshed, bare, "port {port}");
    }
    let m = client.metrics();
    let plaintext = metric_sum(
        &m,
        "request_total",
        &[
            "direction=\"outbound\"",
            &format!("target_addr=\"{ext_ip}:8080\""),
            "tls=\"no_identity\"",
            "no_tls_reason=\"not_provided_by_service_discovery\"",
        ],
    );
    assert_eq!(plaintext, 15, "{m}");
    let opaque = metric_sum(&m, "tcp_open_total", &["direction=\"outbound\""]);
    assert!(opaque >= 2, "{m}");
}

/// (c) In explicit mode, `Host: web` from a proxy in namespace `shop` reaches `web.shop`, not
/// the `web` of `default`.
#[test]
fn a_short_name_resolves_in_the_proxys_namespace() {
    if !ready() {
        return;
    }
    let trust = Trust::new();
    trust.issue(&["client", "web"]);
    let (c, shop, other) = (Netns::new(), Netns::new(), Netns::new());
    let (_, shop_ip) = link(&c, "to-shop", &shop, "eth0", 4);
    let (_, other_ip) = link(&c, "to-other", &other, "eth0", 5);
    let slice = |ns: &str, ip: &str| {
        format!(
            r#"---
apiVersion: v1
kind: Service
metadata: {{ name: web, namespace: {ns} }}
spec: {{ ports: [{{ name: http, port: 80, targetPort: 8080 }}] }}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{ name: web-x, namespace: {ns}, labels: {{ kubernetes.io/service-name: web }} }}
addressType: IPv4
ports: [{{ name: http, port: 8080 }}]
endpoints: [{{ addresses: ["{ip}"] }}]
"#
        )
    };
    let cfg = trust.dir.join("c.yaml");
    write_config(
        &cfg,
        &format!("{}{}", slice("shop", &shop_ip), slice("default", &other_ip)),
    );
    let server_cfg = trust.dir.join("server.yaml");
    write_config(&server_cfg, SERVER_CFG);
    let _shop = start_pod(
        shop,
        shop_ip,
        &trust.certs("web"),
        &server_cfg,
        Some("web.shop"),
    );
    let _other = start_pod(
        other,
        other_ip,
        &trust.certs("web"),
        &server_cfg,
        Some("web.default"),
    );
    let client = start_pod_with(
        c,
        "10.213.4.1".into(),
        &trust.certs("client"),
        &cfg,
        None,
        &["--mode", "explicit", "--namespace", "shop"],
    );
    for host in ["web", "web.shop", "web.shop.svc.cluster.local"] {
        let r = client.requests(None, "127.0.0.1", 4140, host, 3, "/");
        assert_eq!(count(&r, "200 web.shop"), 3, "Host {host}: {r:?}");
    }
    let r = client.requests(None, "127.0.0.1", 4140, "web.default", 3, "/");
    assert_eq!(count(&r, "200 web.default"), 3, "{r:?}");
    drop(trust);
}

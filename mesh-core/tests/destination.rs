//! Destinations as Kubernetes resolves them: addresses (ClusterIPs, pod IPs) and names
//! relative to the caller's namespace. Tables of cases over one small cluster.

use mesh_core::destination::{Destination, NameContext};
use mesh_core::{MeshPolicy, Request};

const CLUSTER: &str = r#"
apiVersion: v1
kind: Service
metadata: { name: web, namespace: shop }
spec:
  clusterIP: 10.96.0.10
  clusterIPs: [10.96.0.10, "fd00::10"]
  ports: [{ name: http, port: 80, targetPort: web-http }]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: web-split, namespace: shop }
spec:
  parentRefs: [{ name: web, kind: Service, group: core, port: 80 }]
  rules:
  - backendRefs:
    - { name: web-v1, port: 80, weight: 90 }
    - { name: web-v2, port: 80, weight: 10 }
---
apiVersion: v1
kind: Service
metadata: { name: web, namespace: default }
spec: { clusterIP: 10.96.0.20, ports: [{ port: 80 }] }
---
apiVersion: v1
kind: Service
metadata: { name: db, namespace: shop }
spec: { clusterIP: None, ports: [{ name: pg, port: 5432 }] }
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: db-1
  namespace: shop
  labels: { kubernetes.io/service-name: db }
addressType: IPv4
ports: [{ name: pg, port: 5432 }]
endpoints:
- addresses: ["10.0.0.5"]
  targetRef: { kind: Pod, name: db-0 }
---
apiVersion: v1
kind: Pod
metadata: { name: db-0, namespace: shop }
spec: { serviceAccountName: db, containers: [{ name: pg, image: postgres }] }
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-1
  namespace: shop
  labels: { kubernetes.io/service-name: web }
  annotations: { mesh.io/service-account: web }
addressType: IPv4
ports: [{ name: web-http, port: 8080 }]
endpoints: [{ addresses: ["10.0.0.7"] }]
"#;

fn policy() -> MeshPolicy {
    MeshPolicy::from_yaml(CLUSTER).expect("valid cluster")
}

/// What an address is, as a short string for the tables.
fn describe(d: Destination<'_>) -> String {
    match d {
        Destination::Service { service, port } => {
            format!("svc {}.{}:{port}", service.name(), service.namespace())
        }
        Destination::Endpoint(p) => format!(
            "pod {}.{} {} sa={}",
            p.service,
            p.namespace,
            p.pod.as_deref().unwrap_or("-"),
            p.service_account.as_deref().unwrap_or("-")
        ),
        Destination::Unknown => "unknown".to_owned(),
    }
}

#[test]
fn addresses_resolve_to_services_pods_or_nothing() {
    let p = policy();
    let cases = [
        ("10.96.0.10:80", "svc web.shop:80"),
        ("[fd00::10]:80", "svc web.shop:80"),
        // Kubernetes forwards only the Service's ports.
        ("10.96.0.10:8080", "unknown"),
        ("10.96.0.20:80", "svc web.default:80"),
        ("10.0.0.5:5432", "pod db.shop db-0 sa=db"),
        // A pod is that pod at any port.
        ("10.0.0.5:9999", "pod db.shop db-0 sa=db"),
        ("10.0.0.7:8080", "pod web.shop - sa=web"),
        ("10.0.0.99:80", "unknown"),
        ("93.184.216.34:443", "unknown"),
    ];
    for (addr, want) in cases {
        let got = describe(p.lookup_addr(addr.parse().expect("addr")));
        assert_eq!(got, want, "{addr}");
    }
}

#[test]
fn headless_services_have_no_cluster_ip() {
    let p = policy();
    let db = p.service("db", "shop").expect("db");
    assert!(db.is_headless());
    assert!(db.cluster_ips().is_empty());
    let web = p.service("web", "shop").expect("web");
    assert!(!web.is_headless());
    assert_eq!(web.cluster_ips().len(), 2);
}

#[test]
fn bad_cluster_ip_is_an_error_naming_the_field() {
    let err = MeshPolicy::from_yaml(
        "apiVersion: v1\nkind: Service\nmetadata: { name: x, namespace: y }\nspec: { clusterIP: nope }\n",
    )
    .expect_err("not an address");
    assert!(err.to_string().contains("spec.clusterIP"), "{err}");
}

#[test]
fn names_resolve_relative_to_the_callers_namespace() {
    let p = policy();
    let cases = [
        ("shop", "web", Some("web.shop")),
        ("default", "web", Some("web.default")),
        ("default", "web.shop", Some("web.shop")),
        ("other", "web.shop.svc", Some("web.shop")),
        ("other", "web.shop.svc.cluster.local", Some("web.shop")),
        ("other", "web.shop.svc.cluster.local.", Some("web.shop")),
        ("other", "web", None),
        ("shop", "web.shop.svc.example.org", None),
        ("shop", "10.96.0.10", None),
        ("shop", "ext.example.com", None),
    ];
    for (from, host, want) in cases {
        let got = p
            .lookup_name(&NameContext::new(from), host)
            .map(|s| format!("{}.{}", s.name(), s.namespace()));
        assert_eq!(got.as_deref(), want, "{host} from {from}");
    }
}

#[test]
fn short_name_and_cluster_ip_decide_as_the_full_name_does() {
    let p = policy();
    let req = Request::new("GET", "http://web.shop.svc.cluster.local/").expect("url");
    let full = p
        .route("web.shop.svc.cluster.local", 80, &req)
        .sample(10_000, 3);
    let short = p
        .route_from(&NameContext::new("shop"), "web", 80, &req)
        .sample(10_000, 3);
    assert_eq!(full, short);
    let Destination::Service { service, port } = p.lookup_addr("10.96.0.10:80".parse().expect("a"))
    else {
        panic!("the ClusterIP is web.shop");
    };
    assert_eq!(service.decide(port, &req).sample(10_000, 3), full);
    assert!((0.08..0.12).contains(&full.share("web-v2")), "{full}");
}

#[test]
fn unknown_names_go_to_themselves_in_the_callers_namespace() {
    let p = policy();
    let req = Request::new("GET", "http://nope/").expect("url");
    let d = p.route_from(&NameContext::new("shop"), "nope", 80, &req);
    assert!(d.service().is_none());
    let b: Vec<String> = d.backends().map(|b| b.backend.to_string()).collect();
    assert_eq!(b, ["nope.shop:80"]);
}

#[test]
fn target_ports_resolve_through_slice_port_names() {
    let p = policy();
    let web = p.service("web", "shop").expect("web");
    let slice = |ports: &[(Option<&str>, u16)]| -> Vec<(Option<String>, u16)> {
        ports
            .iter()
            .map(|(n, p)| (n.map(str::to_owned), *p))
            .collect()
    };
    // Named targetPort `web-http` → the slice port of that name.
    let by_target = slice(&[(Some("metrics"), 9090), (Some("web-http"), 8080)]);
    assert_eq!(web.endpoint_port(80, &by_target), Some(8080));
    // The slice port named after the Service port wins (as Kubernetes writes slices).
    let by_name = slice(&[(Some("web-http"), 8080), (Some("http"), 8081)]);
    assert_eq!(web.endpoint_port(80, &by_name), Some(8081));
    // An unnamed single port serves; two unnamed ones are ambiguous.
    assert_eq!(web.endpoint_port(80, &slice(&[(None, 7000)])), Some(7000));
    assert_eq!(
        web.endpoint_port(80, &slice(&[(None, 7000), (None, 7001)])),
        None
    );
    let dflt = p.service("web", "default").expect("web.default");
    assert_eq!(dflt.endpoint_port(80, &slice(&[(None, 80)])), Some(80));
}

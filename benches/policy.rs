//! One outbound decision (route + split + classify) on a snapshot compiled from 1,000
//! HTTPRoutes over 100 Services — by name, and by original destination (a ClusterIP) as a
//! transparent proxy decides — and the compile of that stream.
//!
//! `cargo bench --bench policy`

use std::fmt::Write as _;
use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use mesh::core::{Destination, MeshPolicy, Request};

/// 100 Services × 10 HTTPRoutes, each with a path match, some with header or method matches,
/// each splitting between two backends.
fn stream() -> String {
    let mut s = String::new();
    for svc in 0..100 {
        for r in 0..10 {
            let _ = write!(
                s,
                "---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{ name: svc{svc}-r{r}, namespace: bench }}
spec:
  parentRefs: [{{ name: svc{svc}, kind: Service, group: core, port: 80 }}]
  rules:
  - matches:
    - path: {{ type: PathPrefix, value: /api/v{r} }}
{extra}    backendRefs:
    - {{ name: svc{svc}-stable, port: 80, weight: 90 }}
    - {{ name: svc{svc}-canary, port: 80, weight: 10 }}
",
                extra = match r % 3 {
                    0 => "      headers: [{ name: x-tenant, value: gold }]\n".to_owned(),
                    1 => "      method: GET\n".to_owned(),
                    _ => String::new(),
                }
            );
        }
    }
    s
}

fn bench(c: &mut Criterion) {
    let yaml = stream();
    c.bench_function("compile 1000 HTTPRoutes over 100 Services", |b| {
        b.iter(|| MeshPolicy::from_yaml(black_box(&yaml)).expect("valid stream"))
    });

    let policy = MeshPolicy::from_yaml(&yaml).expect("valid stream");
    // A request that walks past most of its Service's routes before it matches.
    let req = Request::new("GET", "http://svc57.bench:80/api/v8/items?page=2")
        .expect("valid URL")
        .header("x-tenant", "silver");
    let mut sample = 0x9E37_79B9_7F4A_7C15u64;
    c.bench_function("outbound decision: route + split + classify", |b| {
        b.iter(|| {
            sample = sample
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            let d = policy.route(black_box("svc57.bench"), 80, black_box(&req));
            let backend = d.pick(sample).map(|b| b.name.len());
            let class = d.classify(black_box(503), None);
            (backend, class)
        })
    });
}

/// The same Services, each with a ClusterIP, as a transparent proxy looks them up.
fn cluster_ips() -> String {
    let mut s = String::new();
    for svc in 0..100 {
        let _ = write!(
            s,
            "---
apiVersion: v1
kind: Service
metadata: {{ name: svc{svc}, namespace: bench }}
spec: {{ clusterIP: 10.96.0.{svc}, ports: [{{ port: 80 }}] }}
"
        );
    }
    s
}

/// Transparent mode: the original destination (a ClusterIP) finds the Service, then the same
/// route, split and classify.
fn bench_by_address(c: &mut Criterion) {
    let policy = MeshPolicy::from_yaml(&(stream() + &cluster_ips())).expect("valid stream");
    let req = Request::new("GET", "http://10.96.0.57/api/v8/items?page=2")
        .expect("valid URL")
        .header("x-tenant", "silver");
    let dst: std::net::SocketAddr = "10.96.0.57:80".parse().expect("address");
    let mut sample = 0x9E37_79B9_7F4A_7C15u64;
    c.bench_function("outbound decision by original destination", |b| {
        b.iter(|| {
            sample = sample
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            let Destination::Service { service, port } = policy.lookup_addr(black_box(dst)) else {
                return None;
            };
            let d = service.decide(port, black_box(&req));
            let backend = d.pick(sample).map(|b| b.name.len());
            Some((backend, d.classify(black_box(503), None)))
        })
    });
}

criterion_group!(benches, bench, bench_by_address);
criterion_main!(benches);

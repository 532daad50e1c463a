//! One outbound decision (route + split + classify) on a snapshot compiled from 1,000
//! HTTPRoutes over 100 Services — by name, and by original destination (a ClusterIP) as a
//! transparent proxy decides — and the compile of that stream.
//!
//! Then the live index (`PolicyIndex`) at the size of a large cluster: 10,000 HTTPRoutes over
//! 1,000 Services with 10,000 endpoints. One HTTPRoute change applied, one EndpointSlice
//! change applied, `snapshot()`, and one outbound decision on that snapshot; before the
//! timings it prints the memory the index holds per route and per endpoint, counted by an
//! instrumented global allocator. `MESH_BENCH_SERVICES` scales the index down (10 routes and
//! 10 endpoints a Service) where building the full one takes too long.
//!
//! `cargo bench --bench policy -- --warm-up-time 1 --measurement-time 3`
// A benchmark that cannot set itself up should stop loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::alloc::System;
use std::fmt::Write as _;
use std::hint::black_box;
use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use mesh::core::{Destination, MeshPolicy, PolicyConfig, PolicyIndex, Request};
use serde_json::{Value, json};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

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
            let backend = d.pick(sample).map(|b| b.name().len());
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
    c.bench_function("outbound decision by original destination", |b| {
        let mut sample = 0x9E37_79B9_7F4A_7C15u64;
        b.iter(|| decide_by_address(&policy, dst, &req, &mut sample))
    });
}

/// What a transparent proxy decides per request: the Service behind the original
/// destination, then route, split pick and classify.
fn decide_by_address(
    policy: &MeshPolicy,
    dst: std::net::SocketAddr,
    req: &Request,
    sample: &mut u64,
) {
    *sample = sample
        .wrapping_mul(6_364_136_223_846_793_005)
        .wrapping_add(1);
    let Destination::Service { service, port } = policy.lookup_addr(black_box(dst)) else {
        panic!("{dst} is a Service's ClusterIP");
    };
    let d = service.decide(port, black_box(req));
    let backend = d.pick(*sample).map(|b| b.name().len());
    black_box((backend, d.classify(black_box(503), None)));
}

/// Routes and endpoints per Service in the index bench.
const PER_SERVICE: usize = 10;

/// How many Services the index bench holds: 1,000 unless `MESH_BENCH_SERVICES` says less.
fn index_services() -> usize {
    std::env::var("MESH_BENCH_SERVICES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000)
}

/// Service `i` of namespace `bench`, with a ClusterIP, as the API server lists it.
fn service(i: usize) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": format!("svc{i}"), "namespace": "bench"},
        "spec": {"clusterIP": cluster_ip(i), "ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
    })
}

fn cluster_ip(i: usize) -> String {
    format!("10.96.{}.{}", i / 250, i % 250 + 1)
}

/// The EndpointSlice of Service `i`: `PER_SERVICE` ready pods; `generation` moves one of them.
fn slice(i: usize, generation: usize) -> Value {
    let endpoints: Vec<Value> = (0..PER_SERVICE)
        .map(|e| {
            let host = if e == 0 { generation % 200 + 50 } else { e };
            json!({
                "addresses": [format!("10.{}.{}.{host}", 100 + i / 250, i % 250)],
                "conditions": {"ready": true},
                "targetRef": {"kind": "Pod", "name": format!("svc{i}-pod{e}"), "namespace": "bench"},
            })
        })
        .collect();
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {
            "name": format!("svc{i}-abcde"), "namespace": "bench",
            "labels": {"kubernetes.io/service-name": format!("svc{i}")},
        },
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080}],
        "endpoints": endpoints,
    })
}

/// HTTPRoute `r` of Service `i`, as in [`stream`]; `canary` is the canary's weight.
fn index_route(i: usize, r: usize, canary: u32) -> Value {
    let mut m = json!({"path": {"type": "PathPrefix", "value": format!("/api/v{r}")}});
    match r % 3 {
        0 => m["headers"] = json!([{"name": "x-tenant", "value": "gold"}]),
        1 => m["method"] = json!("GET"),
        _ => {}
    }
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": format!("svc{i}-r{r}"), "namespace": "bench"},
        "spec": {
            "parentRefs": [{"name": format!("svc{i}"), "kind": "Service", "group": "core", "port": 80}],
            "rules": [{
                "matches": [m],
                "backendRefs": [
                    {"name": format!("svc{i}-stable"), "port": 80, "weight": 100 - canary},
                    {"name": format!("svc{i}-canary"), "port": 80, "weight": canary},
                ],
            }],
        },
    })
}

/// Bytes the program holds now, by the instrumented allocator.
fn live(region: &Region<'_, System>) -> i128 {
    let c = region.change();
    c.bytes_allocated as i128 - c.bytes_deallocated as i128
}

/// Builds the index, printing how long it took and the memory per route and per endpoint.
fn build_index(services: usize) -> PolicyIndex {
    let started = Instant::now();
    let region = Region::new(GLOBAL);
    let mut index = PolicyIndex::new(PolicyConfig::default());
    for i in 0..services {
        index.apply(&service(i)).expect("a valid Service");
    }
    let with_services = live(&region);
    for i in 0..services {
        index.apply(&slice(i, 0)).expect("a valid EndpointSlice");
    }
    let with_endpoints = live(&region);
    for i in 0..services {
        for r in 0..PER_SERVICE {
            index
                .apply(&index_route(i, r, 10))
                .expect("a valid HTTPRoute");
        }
    }
    let with_routes = live(&region);
    let n = (services * PER_SERVICE) as i128;
    println!(
        "index of {services} Services, {n} endpoints, {n} HTTPRoutes built in {:?}",
        started.elapsed()
    );
    println!(
        "memory held by the index: {} bytes per endpoint, {} bytes per HTTPRoute ({} bytes for the Services)",
        (with_endpoints - with_services) / n,
        (with_routes - with_endpoints) / n,
        with_services,
    );
    index
}

/// The live index at a large cluster's size: what one change costs, and a decision on it.
fn bench_index(c: &mut Criterion) {
    let services = index_services();
    let mut index = build_index(services);
    let what = format!(
        "index of {} HTTPRoutes over {services} Services",
        services * PER_SERVICE
    );
    let mid = services / 2;

    // Two versions of one route: each apply is a real change (the weights move).
    let routes = [index_route(mid, 5, 20), index_route(mid, 5, 10)];
    let mut n = 0usize;
    c.bench_function(&format!("{what}: apply one HTTPRoute change"), |b| {
        b.iter(|| {
            n += 1;
            index.apply(black_box(&routes[n % 2])).expect("valid")
        })
    });

    let slices = [slice(mid, 1), slice(mid, 0)];
    c.bench_function(&format!("{what}: apply one EndpointSlice change"), |b| {
        b.iter(|| {
            n += 1;
            index.apply(black_box(&slices[n % 2])).expect("valid")
        })
    });

    c.bench_function(&format!("{what}: snapshot()"), |b| {
        b.iter(|| index.snapshot())
    });

    let policy = index.snapshot();
    let req = Request::new(
        "GET",
        &format!("http://{}/api/v8/items?page=2", cluster_ip(mid)),
    )
    .expect("valid URL")
    .header("x-tenant", "silver");
    let dst: std::net::SocketAddr = format!("{}:80", cluster_ip(mid)).parse().expect("address");
    c.bench_function(
        &format!("{what}: outbound decision by original destination"),
        |b| {
            let mut sample = 0x9E37_79B9_7F4A_7C15u64;
            b.iter(|| decide_by_address(&policy, dst, &req, &mut sample))
        },
    );
}

criterion_group!(benches, bench, bench_by_address, bench_index);
criterion_main!(benches);

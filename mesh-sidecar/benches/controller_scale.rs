//! `mesh controller` at cluster scale, against the in-repo test API server: 1,000 Services,
//! 10,000 Pods behind 1,000 EndpointSlices, 2,000 HTTPRoutes; 200 simulated proxies, each
//! one mTLS HTTP/2 connection watching the outbound policy and endpoints of 5 Services (all
//! of them `svc-0`, plus 4 of their own).
//!
//! Prints: the controller's time to ready (every kind listed and indexed) and to the first
//! answer of all 2,000 streams, its resident memory, the propagation time of an HTTPRoute
//! change to the 200 proxies watching that Service and of an endpoint change to the one
//! watching that Service (p50/p99/max), the bytes sent per change, and how many proxies
//! received an endpoint change for a Service they do not watch (must be 0).
//!
//! `cargo bench -p mesh-sidecar --bench controller_scale` (the `mesh` binary is built by it);
//! `MESH_BENCH_SERVICES=100` runs a tenth of it. Results go in benches/README.md.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

#[allow(unreachable_pub)]
#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use mesh_api::v1::destination_client::DestinationClient;
use mesh_api::v1::outbound_policies_client::OutboundPoliciesClient;
use mesh_api::v1::{OutboundTarget, ServiceRef, outbound_target};
use prost::Message;
use serde_json::{Value, json};
use support::apiserver::ApiServer;
use support::controller::{Controller, H2, connect, origin};
use support::pods::{Trust, free_port};
use tokio::sync::mpsc;

const CLIENTS: usize = 200;
const PER_CLIENT: usize = 4;
const PODS_PER_SERVICE: usize = 10;
const NAMESPACES: usize = 10;
const ROUNDS: usize = 20;
/// A bound on any one expected message (a hang fails the bench, not a measurement).
const WAIT: Duration = Duration::from_secs(30);

/// One message a simulated proxy received.
struct Arrival {
    client: usize,
    service: usize,
    api: &'static str,
    bytes: usize,
    at: Instant,
}

fn ns(i: usize) -> String {
    format!("ns-{}", i % NAMESPACES)
}

fn ip(base: u8, idx: usize) -> String {
    format!("10.{base}.{}.{}", idx / 250, idx % 250 + 1)
}

fn service(i: usize) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": { "name": format!("svc-{i}"), "namespace": ns(i) },
        "spec": { "clusterIP": ip(96, i), "selector": { "app": format!("svc-{i}") },
                  "ports": [{ "name": "http", "port": 80, "targetPort": 8080 }] },
    })
}

fn pod(i: usize, j: usize) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": { "name": format!("svc-{i}-{j}"), "namespace": ns(i),
                      "labels": { "app": format!("svc-{i}") } },
        "spec": { "serviceAccountName": format!("svc-{i}"),
                  "containers": [{ "name": "app", "image": "app", "ports": [{ "name": "http", "containerPort": 8080 }] }] },
    })
}

/// The EndpointSlice of Service `i` with its first `n` pods ready.
fn slice(i: usize, n: usize) -> Value {
    let endpoints: Vec<Value> = (0..n)
        .map(|j| {
            json!({
                "addresses": [ip(1, i * PODS_PER_SERVICE + j)],
                "conditions": { "ready": true },
                "targetRef": { "kind": "Pod", "name": format!("svc-{i}-{j}"), "namespace": ns(i) },
            })
        })
        .collect();
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": { "name": format!("svc-{i}-1"), "namespace": ns(i),
                      "labels": { "kubernetes.io/service-name": format!("svc-{i}") } },
        "addressType": "IPv4",
        "ports": [{ "name": "http", "port": 8080 }],
        "endpoints": endpoints,
    })
}

/// Route `a` of Service `i` (a 90/10 split with a neighbour, `canary` percent to it) or `b`
/// (a header match).
fn route(i: usize, services: usize, which: char, canary: u32) -> Value {
    let me = format!("svc-{i}");
    let other = format!("svc-{}", (i + NAMESPACES) % services);
    let rules = if which == 'a' {
        json!([{ "matches": [{ "path": { "type": "PathPrefix", "value": "/api" } }],
                 "backendRefs": [{ "name": me, "port": 80, "weight": 100 - canary },
                                 { "name": other, "port": 80, "weight": canary }] }])
    } else {
        json!([{ "matches": [{ "headers": [{ "name": "x-canary", "value": "1" }] }],
                 "backendRefs": [{ "name": other, "port": 80 }] }])
    };
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": { "name": format!("svc-{i}-{which}"), "namespace": ns(i) },
        "spec": { "parentRefs": [{ "name": me, "kind": "Service", "group": "core", "port": 80 }],
                  "rules": rules },
    })
}

fn stream_of(values: impl Iterator<Item = Value>) -> String {
    values
        .map(|v| serde_json::to_string(&v).unwrap())
        .collect::<Vec<_>>()
        .join("\n---\n")
}

fn load(api: &ApiServer, services: usize) {
    let started = Instant::now();
    api.apply(&stream_of((0..services).map(service)));
    api.apply(&stream_of(
        (0..services).flat_map(|i| (0..PODS_PER_SERVICE).map(move |j| pod(i, j))),
    ));
    api.apply(&stream_of(
        (0..services).map(|i| slice(i, PODS_PER_SERVICE)),
    ));
    api.apply(&stream_of((0..services).flat_map(|i| {
        [route(i, services, 'a', 10), route(i, services, 'b', 0)]
    })));
    println!(
        "loaded {services} Services, {} Pods, {services} EndpointSlices, {} HTTPRoutes in {:.1?}",
        services * PODS_PER_SERVICE,
        services * 2,
        started.elapsed()
    );
}

/// The Services client `c` watches: svc-0 and 4 of its own.
fn watched(c: usize, services: usize) -> Vec<usize> {
    let own = (0..PER_CLIENT).map(|k| 1 + (c * PER_CLIENT + k) % (services - 1));
    std::iter::once(0).chain(own).collect()
}

async fn client(c: usize, conn: H2, services: usize, tx: mpsc::UnboundedSender<Arrival>) {
    for s in watched(c, services) {
        let target = ServiceRef {
            namespace: ns(s),
            name: format!("svc-{s}"),
        };
        let mut outbound = OutboundPoliciesClient::with_origin(conn.clone(), origin());
        let mut stream = outbound
            .watch(OutboundTarget {
                target: Some(outbound_target::Target::Service(target.clone())),
                source_namespace: ns(c),
            })
            .await
            .unwrap()
            .into_inner();
        let t = tx.clone();
        tokio::spawn(async move {
            while let Ok(Some(m)) = stream.message().await {
                let (bytes, at) = (m.encoded_len(), Instant::now());
                let _ = t.send(Arrival {
                    client: c,
                    service: s,
                    api: "outbound",
                    bytes,
                    at,
                });
            }
        });
        let mut destination = DestinationClient::with_origin(conn.clone(), origin());
        let mut stream = destination.get(target).await.unwrap().into_inner();
        let t = tx.clone();
        tokio::spawn(async move {
            while let Ok(Some(m)) = stream.message().await {
                let (bytes, at) = (m.encoded_len(), Instant::now());
                let _ = t.send(Arrival {
                    client: c,
                    service: s,
                    api: "destination",
                    bytes,
                    at,
                });
            }
        });
    }
}

/// Receives until `want` arrivals matching `pred` came (bounded); returns those and counts
/// every other arrival in `others`.
fn collect(
    rx: &mut mpsc::UnboundedReceiver<Arrival>,
    want: usize,
    pred: impl Fn(&Arrival) -> bool,
    others: &mut Vec<Arrival>,
) -> Vec<Arrival> {
    let deadline = Instant::now() + WAIT;
    let mut got = Vec::new();
    while got.len() < want {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "only {} of {want} arrived", got.len());
        match rx.blocking_recv_timeout(left) {
            Some(a) if pred(&a) => got.push(a),
            Some(a) => others.push(a),
            None => panic!("only {} of {want} arrived", got.len()),
        }
    }
    // Anything else this change caused arrives right behind.
    std::thread::sleep(Duration::from_millis(200));
    while let Ok(a) = rx.try_recv() {
        others.push(a);
    }
    got
}

trait RecvTimeout {
    fn blocking_recv_timeout(&mut self, d: Duration) -> Option<Arrival>;
}

impl RecvTimeout for mpsc::UnboundedReceiver<Arrival> {
    fn blocking_recv_timeout(&mut self, d: Duration) -> Option<Arrival> {
        let deadline = Instant::now() + d;
        loop {
            if let Ok(a) = self.try_recv() {
                return Some(a);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }
}

fn percentiles(label: &str, mut ms: Vec<f64>) {
    ms.sort_by(f64::total_cmp);
    let at = |p: f64| ms[((ms.len() as f64 - 1.0) * p).round() as usize];
    println!(
        "{label}: n={} p50={:.1} ms p99={:.1} ms max={:.1} ms",
        ms.len(),
        at(0.5),
        at(0.99),
        at(1.0)
    );
}

fn rss(pid: u32) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |k: &str| {
        status
            .lines()
            .find(|l| l.starts_with(k))
            .map_or("?".to_owned(), |l| l[k.len()..].trim().to_owned())
    };
    format!("VmRSS {} (peak VmHWM {})", field("VmRSS:"), field("VmHWM:"))
}

fn main() {
    if !support::require(&["chown"]) {
        return;
    }
    let services: usize = std::env::var("MESH_BENCH_SERVICES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000);
    let api = ApiServer::start();
    load(&api, services);
    let trust = Trust::new();
    trust.issue(&["mesh-controller", "client"]);
    let kubeconfig = api.kubeconfig(&trust.dir);
    let grpc = free_port();
    let started = Instant::now();
    let controller = Controller::start(
        &kubeconfig,
        &trust.certs("mesh-controller"),
        grpc,
        &trust.dir,
    );
    controller.wait_ready();
    println!(
        "controller ready (every kind listed and indexed) in {:.1?}",
        started.elapsed()
    );
    println!("controller memory, no clients: {}", rss(controller.pid()));

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let connecting = Instant::now();
    for c in 0..CLIENTS {
        let conn = rt.block_on(connect(&trust, "client", grpc));
        rt.spawn(client(c, conn, services, tx.clone()));
    }
    let mut others = Vec::new();
    let streams = CLIENTS * (PER_CLIENT + 1) * 2;
    let first = collect(&mut rx, streams, |_| true, &mut others);
    let first_bytes: usize = first.iter().map(|a| a.bytes).sum();
    println!(
        "{CLIENTS} clients, {streams} streams: every first answer in {:.1?} ({first_bytes} bytes)",
        connecting.elapsed()
    );
    println!(
        "controller memory, {CLIENTS} clients: {}",
        rss(controller.pid())
    );

    // HTTPRoute changes on svc-0: every client watches it.
    let mut samples = Vec::new();
    let mut bytes = Vec::new();
    for round in 0..ROUNDS {
        let canary = if round % 2 == 0 { 20 } else { 10 };
        let t0 = Instant::now();
        api.apply(&serde_json::to_string(&route(0, services, 'a', canary)).unwrap());
        let got = collect(
            &mut rx,
            CLIENTS,
            |a| a.api == "outbound" && a.service == 0,
            &mut others,
        );
        samples.extend(got.iter().map(|a| (a.at - t0).as_secs_f64() * 1e3));
        bytes.push(got.iter().map(|a| a.bytes).sum::<usize>() / got.len());
    }
    percentiles(
        &format!("HTTPRoute change → {CLIENTS} watching proxies"),
        samples,
    );
    println!("  bytes per proxy per route change: {:?}", bytes.first());
    let stray = others.len();
    others.clear();

    // Endpoint changes: each on a Service exactly one client watches.
    let mut samples = Vec::new();
    let mut counts: HashMap<usize, usize> = HashMap::new();
    let mut bytes = Vec::new();
    for round in 0..ROUNDS {
        let c = round * (CLIENTS / ROUNDS);
        let s = watched(c, services)[1];
        // One watcher at full scale; a smaller run shares Services between clients.
        let watchers = (0..CLIENTS)
            .filter(|c| watched(*c, services).contains(&s))
            .count();
        let t0 = Instant::now();
        api.apply(&serde_json::to_string(&slice(s, PODS_PER_SERVICE - 1)).unwrap());
        let got = collect(
            &mut rx,
            watchers,
            |a| a.api == "destination" && a.service == s,
            &mut others,
        );
        samples.extend(got.iter().map(|a| (a.at - t0).as_secs_f64() * 1e3));
        bytes.extend(got.iter().map(|a| a.bytes));
        for a in &got {
            *counts.entry(a.client).or_default() += 1;
        }
        api.apply(&serde_json::to_string(&slice(s, PODS_PER_SERVICE)).unwrap());
        collect(
            &mut rx,
            watchers,
            |a| a.api == "destination" && a.service == s,
            &mut others,
        );
    }
    percentiles(
        "endpoint change → the proxies watching that Service",
        samples,
    );
    println!(
        "  bytes per endpoint change (one removal): {:?}",
        bytes.first()
    );
    let wrong = others.iter().filter(|a| a.api == "destination").count();
    println!(
        "  destination messages to proxies not watching the changed Service: {wrong} (outbound messages caused by the change: {})",
        others.len() - wrong
    );
    println!("  arrivals outside the expected ones during route changes: {stray}");
    println!("controller memory at the end: {}", rss(controller.pid()));
    let (_, metrics) = controller.admin("/metrics").unwrap_or_default();
    for l in metrics
        .lines()
        .filter(|l| l.starts_with("controller_update"))
    {
        println!("  {l}");
    }
    drop(tx);
    drop(rt);
}

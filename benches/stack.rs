//! Per-request cost of the mesh stacks over in-memory services: the outbound stack
//! (Respond → Route → Metrics → Trace → Timeout → Retry → Split → Balance, in front of an
//! in-memory service where `Connect` would be) and the inbound stack (Respond → Metrics →
//! Authorize → RateLimit → Trace, in front of an in-memory app), each against the bare service,
//! on a current-thread runtime. No sockets, no TLS: what the layers add, nothing else.
//!
//! Before the timings it prints allocations per request, counted by an instrumented global
//! allocator.
//!
//! `cargo bench --bench stack -- --warm-up-time 1 --measurement-time 4`
// A benchmark that cannot set itself up should stop loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::alloc::System;
use std::convert::Infallible;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, criterion_group};
use http::{Request, Response};
use http_body_util::Full;
use mesh::core::Identity;
use mesh::tower::PolicyHandle;
use mesh::tower::accepted::Accepted;
use mesh::tower::authz::{AuthorizeLayer, ClientInfo};
use mesh::tower::balance::BalanceLayer;
use mesh::tower::body::ReplayBody;
use mesh::tower::discover::{Endpoint, StaticResolver};
use mesh::tower::errors::RespondLayer;
use mesh::tower::metrics::{Direction, MetricsLayer, Registry};
use mesh::tower::rate_limit::RateLimitLayer;
use mesh::tower::retry::RetryLayer;
use mesh::tower::route::RouteLayer;
use mesh::tower::server::local_target;
use mesh::tower::split::SplitLayer;
use mesh::tower::tap::{Subscription, Tap, TapConfig, TapFilter, TapLimits};
use mesh::tower::timeout::TimeoutLayer;
use mesh::tower::trace::TraceLayer;
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use tokio::runtime::Runtime;
use tower::{Layer, Service, ServiceBuilder, ServiceExt};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

type Body = Full<Bytes>;
/// What the stacks answer: the mesh's error body around the metrics layer's, around the app's.
type Metered = mesh::tower::body::ResponseBody<mesh::tower::metrics::ResponseBody<Body>>;

/// The canary route of `examples/in_process.rs`: a 90/10 split with retries, so the retry
/// layer buffers the body and takes from the budget as it would in production.
const OUTBOUND: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: web-canary
  namespace: shop
  annotations: { retry.linkerd.io/http: 5xx, retry.linkerd.io/limit: "3" }
spec:
  parentRefs: [{ name: web, kind: Service, port: 80 }]
  rules:
  - backendRefs:
    - { name: web-v1, port: 80, weight: 90 }
    - { name: web-v2, port: 80, weight: 10 }
"#;

/// The canary route less its retry annotations: the path most routes take (no body buffered,
/// no budget).
fn outbound_no_retry() -> String {
    let retries = "  annotations: { retry.linkerd.io/http: 5xx, retry.linkerd.io/limit: \"3\" }\n";
    assert!(OUTBOUND.contains(retries));
    OUTBOUND.replace(retries, "")
}

/// A Server that only `frontend` may call, with a rate limit far above the bench's rate.
const INBOUND: &str = r#"
apiVersion: policy.linkerd.io/v1beta3
kind: Server
metadata: { name: web-http, namespace: shop }
spec:
  podSelector: { matchLabels: { app: web } }
  port: 8080
---
apiVersion: policy.linkerd.io/v1alpha1
kind: MeshTLSAuthentication
metadata: { name: frontend, namespace: shop }
spec:
  identities: ["frontend.shop.serviceaccount.identity.linkerd.cluster.local"]
---
apiVersion: policy.linkerd.io/v1alpha1
kind: AuthorizationPolicy
metadata: { name: web-from-frontend, namespace: shop }
spec:
  targetRef: { group: policy.linkerd.io, kind: Server, name: web-http }
  requiredAuthenticationRefs: [{ group: policy.linkerd.io, kind: MeshTLSAuthentication, name: frontend }]
---
apiVersion: policy.linkerd.io/v1alpha1
kind: HTTPLocalRateLimitPolicy
metadata: { name: web-rl, namespace: shop }
spec:
  targetRef: { group: policy.linkerd.io, kind: Server, name: web-http }
  total: { requestsPerSecond: 1000000000 }
"#;

fn ok() -> Response<Body> {
    Response::new(Full::new(Bytes::from_static(b"ok")))
}

fn request() -> Request<Body> {
    Request::get("http://web.shop/api/items")
        .body(Body::default())
        .unwrap()
}

/// The in-memory service where `Connect` would be.
fn endpoint_svc(
    _: Request<ReplayBody<Body>>,
) -> std::future::Ready<Result<Response<Body>, Infallible>> {
    std::future::ready(Ok(ok()))
}

/// The bare application.
fn app<B>(_: Request<B>) -> std::future::Ready<Result<Response<Body>, Infallible>> {
    std::future::ready(Ok(ok()))
}

fn id(sa: &str) -> Identity {
    Identity::new("cluster.local", "shop", sa).unwrap()
}

type Svc<Req> = tower::util::BoxCloneService<Req, Response<Body>, Infallible>;

fn bare() -> Svc<Request<Body>> {
    tower::util::BoxCloneService::new(tower::service_fn(app::<Body>))
}

fn outbound(
    tap: Option<&Tap>,
) -> tower::util::BoxCloneService<Request<Body>, Response<Metered>, Infallible> {
    outbound_with(OUTBOUND, tap)
}

/// The outbound stack over the routes of `policy`.
fn outbound_with(
    policy: &str,
    tap: Option<&Tap>,
) -> tower::util::BoxCloneService<Request<Body>, Response<Metered>, Infallible> {
    let resolver = StaticResolver::new()
        .with(
            "web-v1.shop",
            vec![Endpoint::meshed(
                "10.0.0.1:8080".parse().unwrap(),
                id("web-v1"),
            )],
        )
        .with(
            "web-v2.shop",
            vec![Endpoint::meshed(
                "10.0.0.2:8080".parse().unwrap(),
                id("web-v2"),
            )],
        );
    let balanced = BalanceLayer::new(resolver).layer(tower::service_fn(endpoint_svc));
    let svc = ServiceBuilder::new()
        .layer(RespondLayer::new())
        .layer(RouteLayer::new(PolicyHandle::from_yaml(policy).unwrap()))
        .layer(metrics(Registry::new(), Direction::Outbound, tap))
        .layer(TraceLayer::new())
        .layer(TimeoutLayer::new())
        .layer(RetryLayer::new())
        .layer(SplitLayer::new())
        .service(balanced);
    tower::util::BoxCloneService::new(svc)
}

/// The metrics layer, publishing to `tap` when given one.
fn metrics(registry: Registry, direction: Direction, tap: Option<&Tap>) -> MetricsLayer {
    let layer = MetricsLayer::new(registry, direction);
    match tap {
        Some(t) => layer.with_tap(t.clone()),
        None => layer,
    }
}

/// A tap hub nobody subscribes to (`None`), or one whose only subscriber never reads (its
/// queue fills, then every event is built, offered and dropped): the two costs tap can add.
fn tap(slow_reader: bool) -> (Tap, Option<Subscription>) {
    let tap = Tap::new(TapConfig::default(), &Registry::new());
    let sub = slow_reader.then(|| {
        tap.subscribe(TapFilter::default(), TapLimits::default())
            .unwrap()
    });
    (tap, sub)
}

fn inbound(
    tap: Option<&Tap>,
) -> tower::util::BoxCloneService<Request<Body>, Response<Metered>, Infallible> {
    let registry = Registry::new();
    let policy = PolicyHandle::from_yaml(INBOUND).unwrap();
    let stack = ServiceBuilder::new()
        .layer(RespondLayer::new())
        .layer(metrics(registry.clone(), Direction::Inbound, tap))
        .layer(AuthorizeLayer::new(policy).with_metrics(registry))
        .layer(RateLimitLayer::new())
        .layer(TraceLayer::new())
        .service(tower::service_fn(app::<Body>));
    // What MeshServer attaches to each request of a connection.
    let accepted = Accepted {
        client: Some(ClientInfo {
            identity: Some(id("frontend")),
            addr: "10.0.0.9:40000".parse().unwrap(),
        }),
        target: Some(Arc::new(local_target("shop", 8080, &[("app", "web")]))),
        ..Accepted::default()
    };
    let svc = stack.map_request(move |mut req: Request<Body>| {
        req.extensions_mut().insert(accepted.clone());
        req
    });
    tower::util::BoxCloneService::new(svc)
}

/// Sends `n` requests one after another; returns the time they took.
async fn drive<S, R>(svc: &mut S, n: u64) -> Duration
where
    S: Service<Request<Body>, Response = Response<R>, Error = Infallible>,
{
    let start = Instant::now();
    for _ in 0..n {
        let rsp = svc.ready().await.unwrap().call(request()).await.unwrap();
        black_box(rsp);
    }
    start.elapsed()
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
}

/// Allocations per request, after a warm-up that fills the stacks' caches.
fn allocations<S, R>(rt: &Runtime, mut svc: S) -> f64
where
    S: Service<Request<Body>, Response = Response<R>, Error = Infallible>,
{
    const N: u64 = 10_000;
    rt.block_on(drive(&mut svc, 1_000));
    let region = Region::new(GLOBAL);
    rt.block_on(drive(&mut svc, N));
    region.change().allocations as f64 / N as f64
}

fn report_allocations() {
    let rt = runtime();
    let bare_out = allocations(&rt, bare());
    let out = allocations(&rt, outbound(None));
    let out_once = allocations(&rt, outbound_with(&outbound_no_retry(), None));
    let bare_in = allocations(&rt, bare());
    let inb = allocations(&rt, inbound(None));
    let (idle, _) = tap(false);
    let out_idle = allocations(&rt, outbound(Some(&idle)));
    let in_idle = allocations(&rt, inbound(Some(&idle)));
    let (slow, _sub) = tap(true);
    let out_slow = allocations(&rt, outbound(Some(&slow)));
    println!("allocations per request:");
    println!("  bare service      {bare_out:6.1}");
    println!("  outbound stack    {out:6.1}  (+{:.1})", out - bare_out);
    println!(
        "  outbound, no retries {out_once:3.1}  (+{:.1})",
        out_once - bare_out
    );
    println!("  inbound stack     {inb:6.1}  (+{:.1})", inb - bare_in);
    println!("  outbound, idle tap {out_idle:5.1}");
    println!("  inbound, idle tap  {in_idle:5.1}");
    println!("  outbound, tapped by a reader that never reads {out_slow:5.1}");
}

fn stacks(c: &mut Criterion) {
    let rt = runtime();
    let mut g = c.benchmark_group("stack");
    let mut svc = bare();
    g.bench_function("bare service", |b| {
        b.iter_custom(|n| rt.block_on(drive(&mut svc, n)))
    });
    let (idle, _) = tap(false);
    let (slow, _sub) = tap(true);
    let cases = [
        ("outbound stack", outbound(None)),
        (
            "outbound stack, route without retries",
            outbound_with(&outbound_no_retry(), None),
        ),
        ("outbound stack, idle tap", outbound(Some(&idle))),
        (
            "outbound stack, tapped by a slow reader",
            outbound(Some(&slow)),
        ),
    ];
    for (name, mut svc) in cases {
        g.bench_function(name, |b| b.iter_custom(|n| rt.block_on(drive(&mut svc, n))));
    }
    let cases = [
        ("inbound stack", inbound(None)),
        ("inbound stack, idle tap", inbound(Some(&idle))),
    ];
    for (name, mut svc) in cases {
        g.bench_function(name, |b| b.iter_custom(|n| rt.block_on(drive(&mut svc, n))));
    }
    g.finish();
}

criterion_group!(benches, stacks);

fn main() {
    report_allocations();
    benches();
    Criterion::default().configure_from_args().final_summary();
}

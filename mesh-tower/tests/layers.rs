//! Each layer on its own over `tower_test::mock`, in paused time: timeouts, retries, the retry
//! budget, failure accrual and its backoff, rate limits and authorization are deterministic
//! and instant.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use mesh_core::split::BackendRef;
use mesh_core::{Identity, InboundTarget};
use mesh_tower::accepted::Accepted;
use mesh_tower::accrual::AccrualConfig;
use mesh_tower::authz::{AuthorizeLayer, ClientInfo};
use mesh_tower::balance::{BalanceLayer, DEFAULT_DECAY};
use mesh_tower::body::ReplayBody;
use mesh_tower::discover::{Endpoint, StaticResolver};
use mesh_tower::dispatch::Dispatch;
use mesh_tower::errors::{
    BackendTimeout, CircuitOpen, PROXY_ERROR_HEADER, RequestTimeout, RespondLayer,
};
use mesh_tower::metrics::{Direction, MetricsLayer, Registry};
use mesh_tower::rate_limit::RateLimitLayer;
use mesh_tower::retry::RetryLayer;
use mesh_tower::route::RouteLayer;
use mesh_tower::server::local_target;
use mesh_tower::split::Backend;
use mesh_tower::timeout::TimeoutLayer;
use mesh_tower::{BoxError, PolicyHandle, is_caused_by};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceBuilder, ServiceExt};
use tower_test::mock;

type Body = Full<Bytes>;
type Handle = mock::Handle<Request<ReplayBody<Body>>, Response<Body>>;

fn req(method: &str, uri: &str) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(uri)
        .body(Body::default())
        .unwrap()
}

fn status(s: StatusCode) -> Response<Body> {
    let mut r = Response::new(Body::default());
    *r.status_mut() = s;
    r
}

/// Answers every request the mock gets with `answer(attempt number)`; `None` leaves the
/// attempt hanging. Returns the attempt counter.
fn respond(
    mut handle: Handle,
    answer: impl Fn(usize, &Request<ReplayBody<Body>>) -> Option<StatusCode> + Send + 'static,
) -> Arc<AtomicUsize> {
    let attempts = Arc::new(AtomicUsize::new(0));
    let n = Arc::clone(&attempts);
    tokio::spawn(async move {
        let mut hung = Vec::new();
        while let Some((req, send)) = handle.next_request().await {
            let i = n.fetch_add(1, Ordering::SeqCst);
            match answer(i, &req) {
                Some(s) => send.send_response(status(s)),
                None => hung.push(send),
            }
        }
        // The stack no longer keeps the mock alive from its response futures (the no-retry
        // path calls it directly): hung answers stay hung after the last clone is dropped.
        std::future::pending::<()>().await;
        drop(hung);
    });
    attempts
}

/// Route → Timeout → Retry over a mock, as in the outbound stack.
fn outbound(
    yaml: &str,
) -> (
    impl Service<Request<Body>, Response = Response<Body>, Error = BoxError> + Clone,
    Handle,
) {
    let (mock, handle) = mock::pair();
    let svc = ServiceBuilder::new()
        .layer(RouteLayer::new(PolicyHandle::from_yaml(yaml).unwrap()))
        .layer(TimeoutLayer::new())
        .layer(RetryLayer::new())
        .service(mock);
    (svc, handle)
}

const RETRIES: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: web
  namespace: shop
  annotations:
    retry.linkerd.io/http: 5xx
    retry.linkerd.io/limit: "3"
    retry.linkerd.io/timeout: 300ms
spec:
  parentRefs: [{ name: web, kind: Service }]
  rules: [{ timeouts: { request: 5s } }]
"#;

// === timeouts ===

#[tokio::test(start_paused = true)]
async fn the_route_timeout_ends_the_request_at_its_deadline() {
    let (svc, handle) = outbound(
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: web, namespace: shop }
spec:
  parentRefs: [{ name: web, kind: Service }]
  rules: [{ timeouts: { request: 1s } }]
"#,
    );
    let attempts = respond(handle, |_, _| None);
    let start = Instant::now();
    let err = svc
        .oneshot(req("GET", "http://web.shop/"))
        .await
        .unwrap_err();
    assert!(is_caused_by::<RequestTimeout>(&*err), "{err}");
    assert_eq!(start.elapsed(), Duration::from_secs(1));
    assert_eq!(attempts.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn without_a_route_timeout_a_request_may_take_as_long_as_it_takes() {
    let (svc, handle) = outbound("");
    respond(handle, |_, _| None);
    let call = svc.oneshot(req("GET", "http://web.shop/"));
    assert!(
        tokio::time::timeout(Duration::from_secs(3600), call)
            .await
            .is_err(),
        "nothing may end the request"
    );
}

// === retries ===

#[tokio::test(start_paused = true)]
async fn a_failing_get_is_retried_up_to_the_limit_and_the_last_response_returned() {
    let (svc, handle) = outbound(RETRIES);
    let attempts = respond(handle, |_, _| Some(StatusCode::BAD_GATEWAY));
    let rsp = svc.oneshot(req("GET", "http://web.shop/")).await.unwrap();
    assert_eq!(rsp.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(attempts.load(Ordering::SeqCst), 1 + 3);
}

#[tokio::test(start_paused = true)]
async fn a_retry_that_succeeds_is_what_the_caller_sees() {
    let (svc, handle) = outbound(RETRIES);
    let attempts = respond(handle, |i, _| {
        Some(if i < 2 {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::OK
        })
    });
    let rsp = svc.oneshot(req("PUT", "http://web.shop/x")).await.unwrap();
    assert_eq!(rsp.status(), StatusCode::OK);
    assert_eq!(attempts.load(Ordering::SeqCst), 3);
}

#[tokio::test(start_paused = true)]
async fn a_post_is_retried_as_linkerd_does_and_a_4xx_is_not() {
    let (svc, handle) = outbound(RETRIES);
    let attempts = respond(handle, |_, r| {
        Some(if r.method() == http::Method::POST {
            StatusCode::INTERNAL_SERVER_ERROR
        } else {
            StatusCode::NOT_FOUND
        })
    });
    let rsp = svc
        .clone()
        .oneshot(req("POST", "http://web.shop/orders"))
        .await
        .unwrap();
    assert_eq!(rsp.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(attempts.load(Ordering::SeqCst), 1 + 3);
    let rsp = svc.oneshot(req("GET", "http://web.shop/")).await.unwrap();
    assert_eq!(rsp.status(), StatusCode::NOT_FOUND);
    assert_eq!(attempts.load(Ordering::SeqCst), 1 + 3 + 1);
}

#[tokio::test(start_paused = true)]
async fn a_post_is_sent_once_where_retries_are_idempotent_only() {
    let strict = RETRIES.replace(
        "    retry.linkerd.io/timeout: 300ms\n",
        "    retry.linkerd.io/timeout: 300ms\n    retry.mesh.io/methods: idempotent\n",
    );
    let (svc, handle) = outbound(&strict);
    let attempts = respond(handle, |_, _| Some(StatusCode::INTERNAL_SERVER_ERROR));
    let rsp = svc
        .clone()
        .oneshot(req("POST", "http://web.shop/orders"))
        .await
        .unwrap();
    assert_eq!(rsp.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(attempts.load(Ordering::SeqCst), 1);
    svc.oneshot(req("GET", "http://web.shop/")).await.unwrap();
    assert_eq!(attempts.load(Ordering::SeqCst), 1 + 1 + 3);
}

#[tokio::test(start_paused = true)]
async fn a_hung_attempt_is_cut_by_the_per_try_timeout_and_retried() {
    let (svc, handle) = outbound(RETRIES);
    let attempts = respond(handle, |i, _| (i >= 2).then_some(StatusCode::OK));
    let start = Instant::now();
    let rsp = svc.oneshot(req("GET", "http://web.shop/")).await.unwrap();
    assert_eq!(rsp.status(), StatusCode::OK);
    assert_eq!(attempts.load(Ordering::SeqCst), 3);
    assert_eq!(start.elapsed(), Duration::from_millis(600));

    // When every attempt hangs, the last per-try timeout is the error.
    let (svc, handle) = outbound(RETRIES);
    respond(handle, |_, _| None);
    let err = svc
        .oneshot(req("GET", "http://web.shop/"))
        .await
        .unwrap_err();
    assert!(is_caused_by::<BackendTimeout>(&*err), "{err}");
}

#[tokio::test(start_paused = true)]
async fn the_budget_allows_a_fifth_of_requests_plus_ten_per_second_of_ttl() {
    let (svc, handle) = outbound(RETRIES);
    let attempts = respond(handle, |_, _| Some(StatusCode::SERVICE_UNAVAILABLE));
    let send = |n: usize| {
        let svc = svc.clone();
        async move {
            for _ in 0..n {
                let rsp = svc
                    .clone()
                    .oneshot(req("GET", "http://web.shop/"))
                    .await
                    .unwrap();
                assert_eq!(rsp.status(), StatusCode::SERVICE_UNAVAILABLE);
            }
        }
    };
    // 50 requests at once against a dead backend: 0.2 × 50 = 10 retries, plus the floor's
    // reserve of 10/s × 10 s = 100, where the limit alone would allow 150.
    send(50).await;
    assert_eq!(attempts.load(Ordering::SeqCst), 50 + 10 + 100);

    // Spent: with no time passing, requests get no retries beyond what they earn.
    send(10).await;
    assert_eq!(attempts.load(Ordering::SeqCst), 160 + 10 + 2);

    // A TTL later the window is empty and the reserve is whole again.
    tokio::time::advance(Duration::from_secs(10)).await;
    send(10).await;
    assert_eq!(attempts.load(Ordering::SeqCst), 172 + 10 * 4);
}

#[tokio::test(start_paused = true)]
async fn under_sustained_failure_retries_stay_within_the_budget_in_every_window() {
    let (svc, handle) = outbound(RETRIES);
    let attempts = respond(handle, |_, _| Some(StatusCode::SERVICE_UNAVAILABLE));
    // 200 requests per second for 30 seconds; per second, count requests and retries.
    let mut per_second = Vec::new();
    for _ in 0..30 {
        let before = attempts.load(Ordering::SeqCst);
        for _ in 0..200 {
            svc.clone()
                .oneshot(req("GET", "http://web.shop/"))
                .await
                .unwrap();
            tokio::time::advance(Duration::from_millis(5)).await;
        }
        per_second.push(attempts.load(Ordering::SeqCst) - before - 200);
    }
    // Over any ten seconds: at most 0.2 × 2,000 requests + 10/s × 10 s.
    for w in per_second.windows(10) {
        let retries: usize = w.iter().sum();
        assert!(retries <= 400 + 100, "{per_second:?}");
    }
    // In the long run: a fifth of the requests plus the 10/s floor.
    let total: usize = per_second.iter().sum();
    assert!(
        total as f64 <= 0.2 * 6000.0 + 10.0 * 30.0,
        "{total} retries: {per_second:?}"
    );
    // And the budget is used: the floor and the ratio are both spent.
    assert!(total >= 6000 / 5, "{per_second:?}");
}

#[tokio::test(start_paused = true)]
async fn at_low_traffic_the_floor_lets_every_request_retry() {
    let (svc, handle) = outbound(RETRIES);
    let attempts = respond(handle, |_, _| Some(StatusCode::SERVICE_UNAVAILABLE));
    // 2 requests a second for a minute: 6 retries a second, under the floor of 10.
    for _ in 0..120 {
        svc.clone()
            .oneshot(req("GET", "http://web.shop/"))
            .await
            .unwrap();
        tokio::time::advance(Duration::from_millis(500)).await;
    }
    assert_eq!(attempts.load(Ordering::SeqCst), 120 * 4);
}

// === failure accrual through the balancer ===

fn backend_req() -> Request<()> {
    let mut r = Request::new(());
    Dispatch::get_mut(r.extensions_mut()).backend =
        Some(Backend(BackendRef::new("web", "shop", Some(80))));
    r
}

const A: &str = "10.0.0.1:80";
const B: &str = "10.0.0.2:80";

/// A balancer over endpoints A and B (no jitter); B always answers 200, A answers 500 while
/// `a_down` is set. Returns the balancer and a count of A's attempts.
fn balancer(
    a_down: Arc<AtomicBool>,
) -> (
    impl Service<Request<()>, Response = Response<()>, Error = BoxError> + Clone,
    Arc<AtomicUsize>,
) {
    let resolver = StaticResolver::new().with(
        "web.shop",
        vec![
            Endpoint::new(A.parse().unwrap()),
            Endpoint::new(B.parse().unwrap()),
        ],
    );
    let accrual = AccrualConfig {
        jitter: 0.0,
        ..AccrualConfig::default()
    };
    let (mock, mut handle) = mock::pair::<Request<()>, Response<()>>();
    let svc = BalanceLayer::with_config(resolver, accrual, DEFAULT_DECAY).layer(mock);
    let a_hits = Arc::new(AtomicUsize::new(0));
    let hits = Arc::clone(&a_hits);
    tokio::spawn(async move {
        while let Some((req, send)) = handle.next_request().await {
            let to_a = Endpoint::of(req.extensions()).unwrap().addr == A.parse().unwrap();
            let mut rsp = Response::new(());
            if to_a {
                hits.fetch_add(1, Ordering::SeqCst);
                if a_down.load(Ordering::SeqCst) {
                    *rsp.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                }
            }
            send.send_response(rsp);
        }
    });
    (svc, a_hits)
}

async fn send_many<S>(svc: &S, n: usize) -> usize
where
    S: Service<Request<()>, Response = Response<()>, Error = BoxError> + Clone,
{
    let mut failed = 0;
    for _ in 0..n {
        let rsp = svc.clone().oneshot(backend_req()).await.unwrap();
        if rsp.status() != StatusCode::OK {
            failed += 1;
        }
    }
    failed
}

#[tokio::test(start_paused = true)]
async fn accrual_ejects_after_seven_failures_probes_with_doubling_backoff_and_restores() {
    let a_down = Arc::new(AtomicBool::new(true));
    let (svc, a_hits) = balancer(Arc::clone(&a_down));
    assert_eq!(
        send_many(&svc, 200).await,
        7,
        "seven failures, then A is out"
    );
    assert_eq!(a_hits.load(Ordering::SeqCst), 7);

    // After 1 s, one probe; it fails and A is out for 2 s.
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(send_many(&svc, 100).await, 1);
    tokio::time::advance(Duration::from_millis(1999)).await;
    assert_eq!(send_many(&svc, 100).await, 0);
    tokio::time::advance(Duration::from_millis(1)).await;
    assert_eq!(send_many(&svc, 100).await, 1);
    assert_eq!(a_hits.load(Ordering::SeqCst), 9);

    // A recovers; after the 4 s backoff its probe succeeds and it takes traffic again.
    a_down.store(false, Ordering::SeqCst);
    tokio::time::advance(Duration::from_secs(4)).await;
    assert_eq!(send_many(&svc, 200).await, 0);
    assert!(
        a_hits.load(Ordering::SeqCst) > 9 + 20,
        "A is back in rotation"
    );
}

#[tokio::test(start_paused = true)]
async fn a_probe_that_never_answers_does_not_leave_the_endpoint_out_for_good() {
    let resolver = StaticResolver::new().with("web.shop", vec![Endpoint::new(A.parse().unwrap())]);
    let accrual = AccrualConfig {
        jitter: 0.0,
        ..AccrualConfig::default()
    };
    let (mock, mut handle) = mock::pair::<Request<()>, Response<()>>();
    let svc = BalanceLayer::with_config(resolver, accrual, DEFAULT_DECAY).layer(mock);
    // Seven 500s, then a probe that hangs, then healthy again.
    tokio::spawn(async move {
        let mut hung = Vec::new();
        let mut i = 0;
        while let Some((_, send)) = handle.next_request().await {
            let mut rsp = Response::new(());
            match i {
                0..7 => {
                    *rsp.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                    send.send_response(rsp);
                }
                7 => hung.push(send),
                _ => send.send_response(rsp),
            }
            i += 1;
        }
    });
    assert_eq!(send_many(&svc, 7).await, 7);
    let err = svc.clone().oneshot(backend_req()).await.unwrap_err();
    assert!(is_caused_by::<CircuitOpen>(&*err), "{err}");

    // The probe goes out after 1 s, and its caller gives up on it (a timeout above, a client
    // that went away): the balancer never learns its outcome.
    tokio::time::advance(Duration::from_secs(1)).await;
    let probe = svc.clone().oneshot(backend_req());
    assert!(
        tokio::time::timeout(Duration::from_millis(100), probe)
            .await
            .is_err()
    );

    // An abandoned probe counts as a failed one: the endpoint backs off and is probed again,
    // rather than staying out forever.
    tokio::time::advance(Duration::from_secs(10)).await;
    assert_eq!(send_many(&svc, 10).await, 0);
}

#[tokio::test(start_paused = true)]
async fn a_probe_dropped_before_it_ran_does_not_leave_the_endpoint_out_for_good() {
    let resolver = StaticResolver::new().with("web.shop", vec![Endpoint::new(A.parse().unwrap())]);
    let accrual = AccrualConfig {
        jitter: 0.0,
        ..AccrualConfig::default()
    };
    let (mock, mut handle) = mock::pair::<Request<()>, Response<()>>();
    let svc = BalanceLayer::with_config(resolver, accrual, DEFAULT_DECAY).layer(mock);
    // Seven 500s, then healthy.
    tokio::spawn(async move {
        let mut i = 0;
        while let Some((_, send)) = handle.next_request().await {
            let mut rsp = Response::new(());
            if i < 7 {
                *rsp.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            }
            send.send_response(rsp);
            i += 1;
        }
    });
    assert_eq!(send_many(&svc, 7).await, 7);

    // The backoff is over: the next call takes the probe when it is made, and is dropped
    // without ever being polled.
    tokio::time::advance(Duration::from_secs(1)).await;
    let mut s = svc.clone();
    s.ready().await.unwrap();
    drop(s.call(backend_req()));

    // Later the endpoint is probed again, answers, and is back.
    tokio::time::advance(Duration::from_secs(10)).await;
    assert_eq!(send_many(&svc, 10).await, 0);
}

// === inbound: authorization and rate limits ===

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
metadata: { name: callers, namespace: shop }
spec:
  identities:
  - "frontend.shop.serviceaccount.identity.linkerd.cluster.local"
  - "batch.shop.serviceaccount.identity.linkerd.cluster.local"
---
apiVersion: policy.linkerd.io/v1alpha1
kind: AuthorizationPolicy
metadata: { name: web-callers, namespace: shop }
spec:
  targetRef: { group: policy.linkerd.io, kind: Server, name: web-http }
  requiredAuthenticationRefs: [{ group: policy.linkerd.io, kind: MeshTLSAuthentication, name: callers }]
---
apiVersion: policy.linkerd.io/v1alpha1
kind: HTTPLocalRateLimitPolicy
metadata: { name: web-rl, namespace: shop }
spec:
  targetRef: { group: policy.linkerd.io, kind: Server, name: web-http }
  total: { requestsPerSecond: 5 }
  identity: { requestsPerSecond: 3 }
"#;

fn id(sa: &str) -> Identity {
    Identity::new("cluster.local", "shop", sa).unwrap()
}

fn from(sa: &str) -> Request<()> {
    let mut r = Request::get("http://web.shop/").body(()).unwrap();
    let addr: SocketAddr = "10.1.0.7:40000".parse().unwrap();
    let target: InboundTarget = local_target("shop", 8080, &[("app", "web")]);
    r.extensions_mut().insert(Accepted {
        client: Some(ClientInfo {
            identity: Some(id(sa)),
            addr,
        }),
        target: Some(Arc::new(target)),
        ..Accepted::default()
    });
    r
}

/// Respond → Authorize → RateLimit over a mock app that answers 200.
fn inbound() -> (
    impl Service<
        Request<()>,
        Response = Response<mesh_tower::body::ResponseBody<Body>>,
        Error = std::convert::Infallible,
    > + Clone,
    Arc<AtomicUsize>,
) {
    let (mock, mut handle) = mock::pair::<Request<()>, Response<Body>>();
    let svc = ServiceBuilder::new()
        .layer(RespondLayer::new())
        .layer(AuthorizeLayer::new(
            PolicyHandle::from_yaml(INBOUND).unwrap(),
        ))
        .layer(RateLimitLayer::new())
        .service(mock);
    let seen = Arc::new(AtomicUsize::new(0));
    let n = Arc::clone(&seen);
    tokio::spawn(async move {
        while let Some((_, send)) = handle.next_request().await {
            n.fetch_add(1, Ordering::SeqCst);
            send.send_response(status(StatusCode::OK));
        }
    });
    (svc, seen)
}

async fn statuses<S>(svc: &S, sa: &str, n: usize) -> Vec<u16>
where
    S: Service<Request<()>, Response = Response<mesh_tower::body::ResponseBody<Body>>> + Clone,
    S::Error: std::fmt::Debug,
{
    let mut out = Vec::new();
    for _ in 0..n {
        let rsp = svc.clone().oneshot(from(sa)).await.unwrap();
        out.push(rsp.status().as_u16());
    }
    out
}

#[tokio::test(start_paused = true)]
async fn a_denied_identity_is_answered_403_and_the_app_never_sees_it() {
    let (svc, seen) = inbound();
    let rsp = svc.clone().oneshot(from("intruder")).await.unwrap();
    assert_eq!(rsp.status(), StatusCode::FORBIDDEN);
    assert!(rsp.headers().contains_key(PROXY_ERROR_HEADER));
    assert_eq!(seen.load(Ordering::SeqCst), 0);
    assert_eq!(statuses(&svc, "frontend", 1).await, [200]);
    assert_eq!(seen.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn rate_limits_apply_per_identity_and_in_total_and_refill_over_time() {
    let (svc, seen) = inbound();
    // Three a second per identity...
    assert_eq!(statuses(&svc, "frontend", 4).await, [200, 200, 200, 429]);
    // ...and five in total: the other caller gets the remaining two.
    assert_eq!(statuses(&svc, "batch", 3).await, [200, 200, 429]);
    assert_eq!(seen.load(Ordering::SeqCst), 5);
    // A second later the buckets are full again.
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(statuses(&svc, "batch", 4).await, [200, 200, 200, 429]);
    // The total has two left; a request it refuses does not count against frontend's own three.
    assert_eq!(statuses(&svc, "frontend", 3).await, [200, 200, 429]);
    // 200 ms refill one request of the total.
    tokio::time::advance(Duration::from_millis(200)).await;
    assert_eq!(statuses(&svc, "frontend", 2).await, [200, 429]);
}

// === metrics ===

#[tokio::test(start_paused = true)]
async fn metrics_classify_responses_by_the_routes_response_classes() {
    let policy = PolicyHandle::from_yaml(
        r#"
apiVersion: linkerd.io/v1alpha2
kind: ServiceProfile
metadata: { name: web.shop.svc.cluster.local, namespace: shop }
spec:
  routes:
  - name: GET /items
    condition: { method: GET, pathRegex: /items }
    responseClasses:
    - condition: { status: { min: 404, max: 404 } }
      isFailure: true
"#,
    )
    .unwrap();
    let registry = Registry::new();
    let (mock, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
    let svc = ServiceBuilder::new()
        .layer(RouteLayer::new(policy))
        .layer(MetricsLayer::new(registry.clone(), Direction::Outbound))
        .service(mock);
    tokio::spawn(async move {
        while let Some((_, send)) = handle.next_request().await {
            send.send_response(status(StatusCode::NOT_FOUND));
        }
    });
    let rsp = svc
        .oneshot(req("GET", "http://web.shop/items"))
        .await
        .unwrap();
    assert_eq!(rsp.status(), StatusCode::NOT_FOUND);
    let text = registry.render();
    let line = text
        .lines()
        .find(|l| l.starts_with("response_total{") && l.contains("status_code=\"404\""))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(line.contains("classification=\"failure\""), "{text}");
    let line = text
        .lines()
        .find(|l| l.starts_with("route_response_total{"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(line.contains("rt_route=\"GET /items\""), "{text}");
    assert!(line.contains("classification=\"failure\""), "{text}");
}

//! The mesh stacks over real loopback sockets with real mTLS: a `MeshClient` calling
//! `MeshServer` backends that each hold their own identity, as a Rust service would use them.

mod support;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::Full;
use mesh_tower::PolicyHandle;
use mesh_tower::accrual::AccrualConfig;
use mesh_tower::client::MeshClient;
use mesh_tower::discover::{Endpoint, StaticResolver};
use mesh_tower::errors::PROXY_ERROR_HEADER;
use support::*;
use tokio::time::Instant;

fn split_yaml(v1: u32, v2: u32) -> String {
    format!(
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{ name: web-split, namespace: shop }}
spec:
  parentRefs: [{{ name: web, kind: Service, port: 80 }}]
  rules:
  - backendRefs:
    - {{ name: web-v1, port: 80, weight: {v1} }}
    - {{ name: web-v2, port: 80, weight: {v2} }}
"#
    )
}

/// Two backends with distinct identities, `web-v1` and `web-v2`, behind Service `web`.
async fn two_backends(pki: &Pki) -> (Backend, Backend, StaticResolver) {
    let v1 = Backend::start(pki, "web-v1").await;
    let v2 = Backend::start(pki, "web-v2").await;
    let resolver = StaticResolver::new()
        .with("web-v1.shop", vec![v1.endpoint()])
        .with("web-v2.shop", vec![v2.endpoint()]);
    (v1, v2, resolver)
}

/// Sends `n` GETs, `concurrency` at a time; returns how many each response body named.
async fn spray(
    client: &MeshClient<Full<Bytes>>,
    n: usize,
    concurrency: usize,
) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    let per_task = n / concurrency;
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move {
                let mut seen = Vec::with_capacity(per_task);
                for _ in 0..per_task {
                    let (status, body) =
                        read(client.request(get("http://web.shop/api")).await).await;
                    assert_eq!(status, StatusCode::OK, "{body}");
                    seen.push(body);
                }
                seen
            })
        })
        .collect();
    for t in tasks {
        for body in t.await.unwrap() {
            *counts.entry(body).or_insert(0) += 1;
        }
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_90_10_split_holds_over_2000_requests() {
    let pki = Pki::new();
    let (v1, v2, resolver) = two_backends(&pki).await;
    let policy = PolicyHandle::from_yaml(&split_yaml(90, 10)).unwrap();
    let (client, _) = client(&pki, "frontend", policy, resolver);

    let counts = spray(&client, 2000, 8).await;
    let v2_share = counts.get("web-v2").copied().unwrap_or(0) as f64 / 2000.0;
    assert!((0.07..=0.13).contains(&v2_share), "{counts:?}");
    assert_eq!(counts.values().sum::<usize>(), 2000);
    // Each backend saw exactly what it answered: no request went twice or astray.
    assert_eq!(v1.hits(), counts["web-v1"]);
    assert_eq!(v2.hits(), counts["web-v2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_50_50_split_holds_over_2000_requests() {
    let pki = Pki::new();
    let (_v1, _v2, resolver) = two_backends(&pki).await;
    let policy = PolicyHandle::from_yaml(&split_yaml(50, 50)).unwrap();
    let (client, _) = client(&pki, "frontend", policy, resolver);

    let counts = spray(&client, 2000, 8).await;
    let v1_share = counts["web-v1"] as f64 / 2000.0;
    // Picks are random: ±0.05 is 4.5 standard deviations at 2,000 requests, so this fails
    // for a wrong split, not for an unlucky run (±0.03 failed about one run in 150).
    assert!((0.45..=0.55).contains(&v1_share), "{counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_changed_live_take_effect_without_dropping_a_request() {
    let pki = Pki::new();
    let (v1, v2, resolver) = two_backends(&pki).await;
    let policy = PolicyHandle::from_yaml(&split_yaml(100, 0)).unwrap();
    let (client, _) = client(&pki, "frontend", policy.clone(), resolver);

    // Background load across every change: not one request may fail.
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let load: Vec<_> = (0..4)
        .map(|_| {
            let (client, stop, sent) = (client.clone(), Arc::clone(&stop), Arc::clone(&sent));
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let (status, body) = read(client.request(get("http://web.shop/")).await).await;
                    assert_eq!(status, StatusCode::OK, "{body}");
                    sent.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();

    let only = |want: &str, counts: &BTreeMap<String, usize>| {
        assert_eq!(counts.keys().collect::<Vec<_>>(), vec![want], "{counts:?}");
    };
    only("web-v1", &spray(&client, 200, 2).await);

    policy.update_yaml(&split_yaml(90, 10)).unwrap();
    let counts = spray(&client, 1000, 4).await;
    let v2_share = counts.get("web-v2").copied().unwrap_or(0) as f64 / 1000.0;
    assert!((0.05..=0.15).contains(&v2_share), "{counts:?}");

    policy.update_yaml(&split_yaml(0, 100)).unwrap();
    only("web-v2", &spray(&client, 200, 2).await);

    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.await.unwrap();
    }
    assert_eq!(policy.version(), 2);
    // The background load ran through every change without a failure (it asserts each
    // response), and both versions served it.
    assert!(sent.load(Ordering::Relaxed) > 0);
    assert!(v1.hits() > 0 && v2.hits() > 0);
}

const RETRY_ROUTE: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: web-retry
  namespace: shop
  annotations: { retry.linkerd.io/http: 5xx, retry.linkerd.io/limit: "3" }
spec:
  parentRefs: [{ name: web, kind: Service }]
  rules: [{ backendRefs: [{ name: web-v1, port: 80 }] }]
"#;

/// A client of `web` with retries (limit 3, Linkerd's default budget) to one backend, by
/// `route`.
async fn retrying_client(backend: &Backend, pki: &Pki, route: &str) -> MeshClient<Full<Bytes>> {
    let resolver = StaticResolver::new().with("web-v1.shop", vec![backend.endpoint()]);
    client(
        pki,
        "frontend",
        PolicyHandle::from_yaml(route).unwrap(),
        resolver,
    )
    .0
}

/// With mesh's opt-in rule (`retry.mesh.io/methods: idempotent`) a POST is never replayed;
/// Linkerd's default retries it (tests/layers.rs).
#[tokio::test]
async fn retries_mask_a_30_percent_failing_backend_and_idempotent_only_never_replays_a_post() {
    let pki = Pki::new();
    // Seeded, so the run is the same every time; every POST fails.
    let rng = Arc::new(parking_lot::Mutex::new(fastrand::Rng::with_seed(7)));
    let backend = Backend::start_with(&pki, "web-v1", "", move |parts| {
        let fail = parts.method == http::Method::POST || rng.lock().f64() < 0.3;
        async move {
            if fail {
                StatusCode::INTERNAL_SERVER_ERROR.with_body("flaky")
            } else {
                StatusCode::OK.with_body("ok")
            }
        }
    })
    .await;
    let strict = RETRY_ROUTE.replace(
        "retry.linkerd.io/limit: \"3\" }",
        "retry.linkerd.io/limit: \"3\", retry.mesh.io/methods: idempotent }",
    );
    let client = retrying_client(&backend, &pki, &strict).await;

    // ~20 requests per second for 4 seconds.
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    let mut ok = 0;
    for i in 0..80 {
        tick.tick().await;
        let req = http::Request::get("http://web.shop/items")
            .header("x-request-id", i.to_string())
            .body(Full::default())
            .unwrap();
        if client.request(req).await.status() == StatusCode::OK {
            ok += 1;
        }
    }
    assert!(ok >= 80 * 99 / 100, "{ok} of 80 succeeded");
    let gets = backend.hits();
    assert!(
        gets > 80,
        "some GETs must have been retried ({gets} attempts)"
    );

    for _ in 0..5 {
        let (status, _) = read(client.request(post("http://web.shop/items", "{}")).await).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    }
    let posts = backend
        .seen()
        .iter()
        .filter(|s| s.method == http::Method::POST)
        .count();
    assert_eq!(posts, 5, "a POST must reach the backend exactly once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retry_budget_bounds_retries_against_a_dead_backend() {
    let pki = Pki::new();
    let backend = Backend::start_with(&pki, "web-v1", "", |_| async {
        StatusCode::SERVICE_UNAVAILABLE.with_body("down")
    })
    .await;
    // Failure accrual would eject the endpoint after seven 503s and shield it better than any
    // budget (see `failure_accrual_shields_an_endpoint_that_only_fails`); turn it off so the
    // backend sees what the budget alone lets through.
    let resolver = StaticResolver::new().with("web-v1.shop", vec![backend.endpoint()]);
    let builder = MeshClient::builder(PolicyHandle::from_yaml(RETRY_ROUTE).unwrap(), resolver)
        .mtls(pki.client_tls(&id("frontend")))
        .failure_accrual(AccrualConfig {
            max_failures: u32::MAX,
            ..AccrualConfig::default()
        });
    // Two clients from one builder, as a proxy's workers each build theirs: requests alternate
    // between them, and the one budget must bound their retries together.
    let clients: [MeshClient<Full<Bytes>>; 2] = [builder.clone().build(), builder.build()];

    // ~200 requests per second for 3 seconds, each on its own task so the rate holds.
    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    let mut sent_at = Vec::new();
    let mut tasks = Vec::new();
    for i in 0..600 {
        tick.tick().await;
        sent_at.push(Instant::now());
        let req = http::Request::get("http://web.shop/")
            .header("x-request-id", i.to_string())
            .body(Full::default())
            .unwrap();
        let client = clients[i % 2].clone();
        tasks.push(tokio::spawn(
            async move { client.request(req).await.status() },
        ));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), StatusCode::SERVICE_UNAVAILABLE);
    }

    let attempts = backend.seen();
    let requests = sent_at.len();
    let mut first = HashSet::new();
    let retries_at: Vec<Instant> = attempts
        .iter()
        .filter(|s| !first.insert(s.request_id.clone()))
        .map(|s| s.at)
        .collect();
    assert_eq!(
        first.len(),
        requests,
        "every request reached the backend once"
    );
    // Without a budget, each request would be tried 4 times.
    let retries = retries_at.len();
    assert!(retries > 0, "a fresh budget allows some retries");
    // Linkerd's budget (ratio 0.2, 10/s floor, 10 s TTL): within one TTL, retries stay within
    // 0.2 × requests plus the floor's reserve of 10/s × 10 s, which a fresh budget may spend at
    // once.
    assert!(
        retries as f64 <= 0.2 * requests as f64 + 100.0,
        "{retries} retries for {requests} requests"
    );
    // Once the reserve is spent, each second's retries stay within 0.2 × its requests + 10.
    let elapsed = start.elapsed().as_secs();
    for s in 1..elapsed {
        let lo = start + Duration::from_secs(s);
        let hi = lo + Duration::from_secs(1);
        let in_window = |t: &&Instant| (lo..hi).contains(*t);
        let reqs = sent_at.iter().filter(in_window).count();
        let rets = retries_at.iter().filter(in_window).count();
        assert!(
            rets as f64 <= 0.2 * reqs as f64 + 10.0,
            "second {s}: {rets} retries for {reqs} requests"
        );
    }
}

const LOCKED_SERVER: &str = r#"
apiVersion: policy.linkerd.io/v1beta3
kind: Server
metadata: { name: web-http, namespace: shop }
spec:
  podSelector: { matchLabels: { app: web-v1 } }
  port: 8080
---
apiVersion: policy.linkerd.io/v1alpha1
kind: MeshTLSAuthentication
metadata: { name: frontend-only, namespace: shop }
spec:
  identities: ["frontend.shop.serviceaccount.identity.linkerd.cluster.local"]
---
apiVersion: policy.linkerd.io/v1alpha1
kind: AuthorizationPolicy
metadata: { name: web-from-frontend, namespace: shop }
spec:
  targetRef: { group: policy.linkerd.io, kind: Server, name: web-http }
  requiredAuthenticationRefs:
  - { group: policy.linkerd.io, kind: MeshTLSAuthentication, name: frontend-only }
"#;

#[tokio::test]
async fn a_denied_identity_gets_403_and_the_app_never_sees_it() {
    let pki = Pki::new();
    let backend = Backend::start_with(&pki, "web-v1", LOCKED_SERVER, |_| async {
        StatusCode::OK.with_body("secret")
    })
    .await;
    let resolver = StaticResolver::new().with("web.shop", vec![backend.endpoint()]);
    let policy = PolicyHandle::from_yaml("").unwrap();

    let (intruder, _) = client(&pki, "intruder", policy.clone(), resolver.clone());
    let rsp = intruder.request(get("http://web.shop/admin")).await;
    assert_eq!(rsp.status(), StatusCode::FORBIDDEN);
    assert!(rsp.headers().contains_key(PROXY_ERROR_HEADER));
    assert_eq!(backend.hits(), 0);

    let (frontend, _) = client(&pki, "frontend", policy, resolver);
    let (status, body) = read(frontend.request(get("http://web.shop/admin")).await).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "secret"));
    assert_eq!(backend.hits(), 1);

    let text = backend.registry.render();
    let deny = sample(
        &text,
        "inbound_http_authz_deny_total",
        &[("srv_name", "web-http")],
    );
    assert_eq!(deny, 1.0, "{text}");
}

#[tokio::test]
async fn metrics_carry_linkerd_names_and_labels() {
    let pki = Pki::new();
    let (v1, _v2, resolver) = two_backends(&pki).await;
    let policy = PolicyHandle::from_yaml(&split_yaml(100, 0)).unwrap();
    let (client, registry) = client(&pki, "frontend", policy, resolver);
    for _ in 0..3 {
        let (status, _) = read(client.request(get("http://web.shop/api")).await).await;
        assert_eq!(status, StatusCode::OK);
    }

    let out = registry.render();
    let target = v1.addr.to_string();
    let labels = [
        ("direction", "outbound"),
        ("authority", "web.shop:80"),
        ("tls", "true"),
        ("server_id", &dns("web-v1")),
        ("target_addr", &target),
        ("dst_service", "web-v1"),
        ("dst_namespace", "shop"),
    ];
    assert_eq!(sample(&out, "request_total", &labels), 3.0);
    let mut rsp = labels.to_vec();
    rsp.extend([("status_code", "200"), ("classification", "success")]);
    assert_eq!(sample(&out, "response_total", &rsp), 3.0);
    let route = [
        ("direction", "outbound"),
        ("dst", "web.shop:80"),
        ("rt_route", "web-split"),
    ];
    assert_eq!(sample(&out, "route_request_total", &route), 3.0);
    assert!(
        out.contains("# TYPE response_latency_ms histogram"),
        "{out}"
    );
    for le in [
        "1", "2", "3", "4", "5", "10", "20", "30", "40", "50", "100", "200", "300", "400", "500",
        "1000", "2000", "3000", "4000", "5000", "10000", "20000", "30000", "40000", "50000",
    ] {
        let mut l = labels.to_vec();
        l.push(("le", le));
        assert_eq!(
            samples(&out, "response_latency_ms_bucket", &l).len(),
            1,
            "le={le}\n{out}"
        );
    }
    let mut inf = labels.to_vec();
    inf.push(("le", "+Inf"));
    assert_eq!(sample(&out, "response_latency_ms_bucket", &inf), 3.0);

    // Inbound series name what admitted the request, not the Host the client chose.
    let inbound = v1.registry.render();
    let labels = [
        ("direction", "inbound"),
        ("tls", "true"),
        ("client_id", &dns("frontend")),
        ("srv_kind", "default"),
        ("srv_name", "all-unauthenticated"),
    ];
    assert_eq!(sample(&inbound, "request_total", &labels), 3.0);
    assert!(!inbound.contains("authority=\"web.shop:80\""), "{inbound}");
    let mut rsp = labels.to_vec();
    rsp.extend([("status_code", "200"), ("classification", "success")]);
    assert_eq!(sample(&inbound, "response_total", &rsp), 3.0);
}

#[tokio::test]
async fn a_slow_backend_is_answered_504_by_the_route_timeout() {
    let pki = Pki::new();
    let backend = Backend::start_with(&pki, "web-v1", "", |_| async {
        tokio::time::sleep(Duration::from_secs(30)).await;
        StatusCode::OK.with_body("late")
    })
    .await;
    let policy = PolicyHandle::from_yaml(
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: web, namespace: shop }
spec:
  parentRefs: [{ name: web, kind: Service }]
  rules: [{ timeouts: { request: 200ms }, backendRefs: [{ name: web-v1, port: 80 }] }]
"#,
    )
    .unwrap();
    let resolver = StaticResolver::new().with("web-v1.shop", vec![backend.endpoint()]);
    let (client, _) = client(&pki, "frontend", policy, resolver);
    let rsp = client.request(get("http://web.shop/slow")).await;
    assert_eq!(rsp.status(), StatusCode::GATEWAY_TIMEOUT);
    assert!(rsp.headers().contains_key(PROXY_ERROR_HEADER));
    assert_eq!(backend.hits(), 1);
}

#[tokio::test]
async fn no_endpoints_is_503_and_a_refused_connect_is_502() {
    let pki = Pki::new();
    let policy = PolicyHandle::from_yaml("").unwrap();
    let resolver = StaticResolver::new().with("empty.shop", vec![]).with(
        "gone.shop",
        vec![Endpoint::meshed(refused_addr().await, id("gone"))],
    );
    let (client, _) = client(&pki, "frontend", policy, resolver);

    for uri in ["http://empty.shop/", "http://unknown.shop/"] {
        let rsp = client.request(get(uri)).await;
        assert_eq!(rsp.status(), StatusCode::SERVICE_UNAVAILABLE, "{uri}");
        assert!(rsp.headers().contains_key(PROXY_ERROR_HEADER), "{uri}");
    }
    let rsp = client.request(get("http://gone.shop/")).await;
    assert_eq!(rsp.status(), StatusCode::BAD_GATEWAY);
    assert!(rsp.headers().contains_key(PROXY_ERROR_HEADER));
}

#[tokio::test]
async fn failure_accrual_ejects_a_dead_endpoint() {
    let pki = Pki::new();
    let live = Backend::start(&pki, "web-v1").await;
    let dead = Endpoint::meshed(refused_addr().await, id("web-v1"));
    let resolver = StaticResolver::new().with("web.shop", vec![dead, live.endpoint()]);
    let (client, _) = client(
        &pki,
        "frontend",
        PolicyHandle::from_yaml("").unwrap(),
        resolver,
    );

    let mut failed = 0;
    for _ in 0..100 {
        if client.request(get("http://web.shop/")).await.status() != StatusCode::OK {
            failed += 1;
        }
    }
    // Seven consecutive failures eject the dead endpoint; after that only the probes that
    // follow each backoff (1 s, then 2 s, …) may reach it.
    assert!(failed <= 7 + 3, "{failed} of 100 failed");
    assert!(
        live.hits() >= 90,
        "{} reached the live endpoint",
        live.hits()
    );
}

#[tokio::test]
async fn an_endpoint_with_the_wrong_identity_never_gets_the_request() {
    let pki = Pki::new();
    let impostor = Backend::start(&pki, "impostor").await;
    // Discovery says `web-v1` lives there; the server proves another identity.
    let resolver = StaticResolver::new().with(
        "web.shop",
        vec![Endpoint::meshed(impostor.addr, id("web-v1"))],
    );
    let (client, _) = client(
        &pki,
        "frontend",
        PolicyHandle::from_yaml("").unwrap(),
        resolver,
    );
    let rsp = client.request(get("http://web.shop/")).await;
    assert_eq!(rsp.status(), StatusCode::BAD_GATEWAY);
    assert!(rsp.headers().contains_key(PROXY_ERROR_HEADER));
    assert_eq!(impostor.hits(), 0);
}

#[tokio::test]
async fn failure_accrual_shields_an_endpoint_that_only_fails() {
    let pki = Pki::new();
    let backend = Backend::start_with(&pki, "web-v1", "", |_| async {
        StatusCode::INTERNAL_SERVER_ERROR.with_body("down")
    })
    .await;
    let resolver = StaticResolver::new().with("web.shop", vec![backend.endpoint()]);
    let (client, _) = client(
        &pki,
        "frontend",
        PolicyHandle::from_yaml("").unwrap(),
        resolver,
    );
    for _ in 0..50 {
        let status = client.request(get("http://web.shop/")).await.status();
        assert!(status.is_server_error(), "{status}");
    }
    // Seven 500s eject the only endpoint; the mesh answers 503 itself until a probe is due.
    let rsp = client.request(get("http://web.shop/")).await;
    assert_eq!(rsp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(rsp.headers().contains_key(PROXY_ERROR_HEADER));
    assert!(
        backend.hits() < 7 + 3,
        "{} reached the backend",
        backend.hits()
    );
}

#[tokio::test]
async fn a_trace_is_continued_across_both_hops() {
    let pki = Pki::new();
    let backend = Backend::start(&pki, "web-v1").await;
    let resolver = StaticResolver::new().with("web.shop", vec![backend.endpoint()]);
    let (client, _) = client(
        &pki,
        "frontend",
        PolicyHandle::from_yaml("").unwrap(),
        resolver,
    );
    let caller = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let req = http::Request::get("http://web.shop/")
        .header("traceparent", caller)
        .body(Full::default())
        .unwrap();
    assert_eq!(client.request(req).await.status(), StatusCode::OK);

    let seen = backend.seen()[0]
        .traceparent
        .clone()
        .expect("a traceparent");
    // Same trace, sampled, but a span of the mesh's own: the app's parent is the mesh hop.
    assert!(
        seen.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
        "{seen}"
    );
    assert!(seen.ends_with("-01"), "{seen}");
    assert!(!seen.contains("00f067aa0ba902b7"), "{seen}");
}

#[tokio::test]
async fn an_endpoint_outside_the_mesh_is_reached_in_plaintext_and_metrics_say_so() {
    let pki = Pki::new();
    // A plain hyper server: no TLS, no mesh.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            tokio::spawn(hyper::server::conn::http1::Builder::new().serve_connection(
                hyper_util::rt::TokioIo::new(tcp),
                hyper::service::service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(StatusCode::OK.with_body("plain"))
                }),
            ));
        }
    });
    let resolver = StaticResolver::new().with("legacy.shop", vec![Endpoint::new(addr)]);
    let (client, registry) = client(
        &pki,
        "frontend",
        PolicyHandle::from_yaml("").unwrap(),
        resolver,
    );
    let (status, body) = read(client.request(get("http://legacy.shop/")).await).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "plain"));
    let text = registry.render();
    let labels = [
        ("tls", "no_identity"),
        ("no_tls_reason", "not_provided_by_service_discovery"),
    ];
    assert_eq!(sample(&text, "request_total", &labels), 1.0);
}

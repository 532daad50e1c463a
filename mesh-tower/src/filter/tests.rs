#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use tower::{ServiceBuilder, ServiceExt};
use tower_test::mock;

use super::*;
use crate::errors::{RespondLayer, is_caused_by};
use crate::mirror::{MIRROR_TOTAL, MirrorConfig};
use crate::policy::PolicyHandle;
use crate::route::RouteLayer;

type Req = Request<FilterBody<Full<Bytes>>>;
type Handle = mock::Handle<Req, Response<String>>;

/// An HTTPRoute on `web.shop` whose one rule (`/api` prefix) has `filters` (YAML flow list).
fn route(filters: &str) -> PolicyHandle {
    PolicyHandle::from_yaml(&route_yaml(filters)).unwrap()
}

fn route_yaml(filters: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{ name: api, namespace: shop }}
spec:
  parentRefs: [{{ name: web, kind: Service }}]
  rules:
  - matches: [{{ path: {{ type: PathPrefix, value: /api }} }}]
    filters: {filters}
"
    )
}

fn stack(
    policy: PolicyHandle,
    registry: Registry,
    mirror: MirrorConfig,
) -> (
    impl Service<Request<Full<Bytes>>, Response = Response<String>, Error = BoxError, Future: Send>
    + Clone,
    Handle,
) {
    let (svc, handle) = mock::pair::<Req, Response<String>>();
    let svc = ServiceBuilder::new()
        .layer(RouteLayer::new(policy))
        .layer(FilterLayer::with_mirror_config(registry, mirror))
        .service(svc);
    (svc, handle)
}

fn get(uri: &str) -> Request<Full<Bytes>> {
    Request::get(uri).body(Full::default()).unwrap()
}

/// Sends `req`, answers it with `rsp` at the mock; the request the backend saw and the answer.
async fn exchange(
    policy: PolicyHandle,
    req: Request<Full<Bytes>>,
    rsp: Response<String>,
) -> (Req, Response<String>) {
    let (svc, mut handle) = stack(policy, Registry::new(), MirrorConfig::default());
    let call = tokio::spawn(svc.oneshot(req));
    let (seen, send) = handle.next_request().await.expect("forwarded");
    send.send_response(rsp);
    (seen, call.await.unwrap().unwrap())
}

#[tokio::test]
async fn header_modifiers_change_the_request_and_the_response() {
    let policy = route(
        "[{ type: RequestHeaderModifier, requestHeaderModifier: { set: [{ name: X-Set, value: new }], add: [{ name: x-add, value: two }], remove: [x-gone] } },
          { type: ResponseHeaderModifier, responseHeaderModifier: { add: [{ name: x-rsp, value: added }], remove: [server] } }]",
    );
    let req = Request::get("http://web.shop/api/x")
        .header("x-set", "old")
        .header("x-add", "one")
        .header("x-gone", "bye")
        .body(Full::default())
        .unwrap();
    let rsp = Response::builder()
        .header("server", "app")
        .body(String::new())
        .unwrap();
    let (seen, rsp) = exchange(policy, req, rsp).await;
    let h = seen.headers();
    assert_eq!(h["x-set"], "new");
    let added: Vec<_> = h.get_all("x-add").iter().collect();
    assert_eq!(added, ["one", "two"]);
    assert!(!h.contains_key("x-gone"));
    assert_eq!(rsp.headers()["x-rsp"], "added");
    assert!(!rsp.headers().contains_key("server"));
}

#[tokio::test]
async fn rewrites_keep_the_query_and_the_port() {
    let policy = route(
        "[{ type: URLRewrite, urlRewrite: { hostname: api.internal, path: { type: ReplacePrefixMatch, replacePrefixMatch: /v2 } } }]",
    );
    let req = Request::get("http://web.shop:8080/api/users?page=2")
        .header("host", "web.shop:8080")
        .body(Full::default())
        .unwrap();
    let (seen, _) = exchange(policy, req, Response::new(String::new())).await;
    assert_eq!(seen.uri(), "http://api.internal:8080/v2/users?page=2");
    assert_eq!(seen.headers()["host"], "api.internal:8080");
}

#[tokio::test]
async fn a_redirect_is_answered_and_nothing_is_forwarded() {
    let policy = route(
        "[{ type: RequestRedirect, requestRedirect: { scheme: https, hostname: example.org, statusCode: 308 } }]",
    );
    let registry = Registry::new();
    let (svc, mut handle) = stack(policy, registry.clone(), MirrorConfig::default());
    let err = svc
        .clone()
        .oneshot(get("http://web.shop/api/x?a=1"))
        .await
        .unwrap_err();
    assert!(is_caused_by::<Redirected>(&*err));
    // The edge layer makes it the answer.
    let rsp = RespondLayer::new()
        .layer(svc)
        .oneshot(get("http://web.shop/api/x?a=1"))
        .await
        .unwrap();
    assert_eq!(rsp.status(), 308);
    assert_eq!(rsp.headers()["location"], "https://example.org/api/x?a=1");
    assert!(
        !rsp.headers()
            .contains_key(crate::errors::PROXY_ERROR_HEADER)
    );
    assert!(
        rsp.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .is_empty()
    );
    assert_eq!(
        registry.counter_value(REDIRECT_TOTAL, &[("status_code", "308")]),
        Some(2)
    );
    let forwarded = tokio::time::timeout(Duration::from_millis(10), handle.next_request()).await;
    assert!(
        !matches!(forwarded, Ok(Some(_))),
        "a redirected request was forwarded"
    );
}

#[tokio::test]
async fn invalid_header_names_are_left_out_and_counted() {
    let policy = route(
        "[{ type: RequestHeaderModifier, requestHeaderModifier: { set: [{ name: \"bad name\", value: x }, { name: x-ok, value: y }] } }]",
    );
    let registry = Registry::new();
    let (svc, mut handle) = stack(policy, registry.clone(), MirrorConfig::default());
    let call = tokio::spawn(svc.oneshot(get("http://web.shop/api")));
    let (seen, send) = handle.next_request().await.unwrap();
    send.send_response(Response::new(String::new()));
    call.await.unwrap().unwrap();
    assert_eq!(seen.headers()["x-ok"], "y");
    assert_eq!(
        registry.counter_value(INVALID_TOTAL, &[("what", "header")]),
        Some(1)
    );
}

const MIRROR: &str =
    "[{ type: RequestMirror, requestMirror: { backendRef: { name: shadow, port: 80 } } }]";

fn mirrors(registry: &Registry, result: &str) -> u64 {
    registry
        .counter_value(MIRROR_TOTAL, &[("result", result)])
        .unwrap_or(0)
}

/// The backend a request was routed to, by its `RouteTarget`.
fn backends(req: &Req) -> Vec<String> {
    let t = RouteTarget::of(req.extensions()).unwrap();
    t.backends
        .iter()
        .map(|b| b.backend.name().to_owned())
        .collect()
}

#[tokio::test]
async fn a_mirror_gets_a_copy_and_the_original_does_not_wait_for_it() {
    let registry = Registry::new();
    let (svc, mut handle) = stack(route(MIRROR), registry.clone(), MirrorConfig::default());
    let req = Request::post("http://web.shop/api")
        .body(Full::new(Bytes::from_static(b"payload")))
        .unwrap();
    let call = tokio::spawn(svc.oneshot(req));
    let (original, send) = handle.next_request().await.unwrap();
    assert_eq!(backends(&original), ["web"]);
    // The original is answered while the copy is not yet even sent: its body is unread.
    send.send_response(Response::new("answer".into()));
    assert_eq!(call.await.unwrap().unwrap().body(), "answer");
    // Reading the original body lets the copy go, with the same body, to the mirror only.
    let body = original.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "payload");
    let (copy, send) = handle.next_request().await.unwrap();
    assert_eq!(backends(&copy), ["shadow"]);
    assert!(RouteTarget::of(copy.extensions()).unwrap().route.is_none());
    assert_eq!(
        copy.into_body().collect().await.unwrap().to_bytes(),
        "payload"
    );
    send.send_error("the mirror is down");
    tokio::task::yield_now().await;
    wait_for(|| mirrors(&registry, "failed") == 1).await;
}

#[tokio::test]
async fn mirrors_past_the_bound_are_dropped_and_large_bodies_skipped() {
    let registry = Registry::new();
    let config = MirrorConfig {
        max_in_flight: 1,
        body_limit: 4,
        ..MirrorConfig::default()
    };
    let (svc, mut handle) = stack(route(MIRROR), registry.clone(), config);
    // The first copy (of an empty GET) is held unanswered at the mirror.
    let first = tokio::spawn(svc.clone().oneshot(get("http://web.shop/api")));
    let mut held = Vec::new();
    for _ in 0..2 {
        let (req, send) = handle.next_request().await.unwrap();
        if backends(&req) == ["web"] {
            send.send_response(Response::new(String::new()));
        } else {
            held.push(send);
        }
    }
    first.await.unwrap().unwrap();
    // The second finds no slot.
    let second = tokio::spawn(svc.clone().oneshot(get("http://web.shop/api")));
    let (req, send) = handle.next_request().await.unwrap();
    assert_eq!(backends(&req), ["web"]);
    send.send_response(Response::new(String::new()));
    second.await.unwrap().unwrap();
    assert_eq!(mirrors(&registry, "dropped"), 1);
    // Its slot freed, a body over the limit is not copied.
    held.pop()
        .unwrap()
        .send_response(Response::new(String::new()));
    wait_for(|| mirrors(&registry, "sent") == 1).await;
    let big = Request::post("http://web.shop/api")
        .body(Full::new(Bytes::from_static(b"too large")))
        .unwrap();
    let third = tokio::spawn(svc.oneshot(big));
    let (req, send) = handle.next_request().await.unwrap();
    assert_eq!(backends(&req), ["web"]);
    assert_eq!(
        req.into_body().collect().await.unwrap().to_bytes(),
        "too large"
    );
    send.send_response(Response::new(String::new()));
    third.await.unwrap().unwrap();
    wait_for(|| mirrors(&registry, "skipped") == 1).await;
}

#[tokio::test]
async fn grpc_routes_get_header_modifiers() {
    let policy = PolicyHandle::from_yaml(
        "apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: { name: greet, namespace: shop }
spec:
  parentRefs: [{ name: web, kind: Service }]
  rules:
  - matches: [{ method: { service: hello.Greeter, method: SayHello } }]
    filters:
    - { type: RequestHeaderModifier, requestHeaderModifier: { add: [{ name: x-via, value: mesh }] } }
    - { type: ResponseHeaderModifier, responseHeaderModifier: { set: [{ name: x-served, value: greeter }] } }
",
    )
    .unwrap();
    let req = Request::post("http://web.shop/hello.Greeter/SayHello")
        .header("content-type", "application/grpc")
        .body(Full::default())
        .unwrap();
    let (seen, rsp) = exchange(policy, req, Response::new(String::new())).await;
    assert_eq!(seen.headers()["x-via"], "mesh");
    assert_eq!(rsp.headers()["x-served"], "greeter");
}

/// Waits (a bounded number of scheduler turns) until `f` holds.
async fn wait_for(f: impl Fn() -> bool) {
    for _ in 0..1000 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("the condition never held");
}

/// [`route`] with the FaultInjection `flaky` of `spec` (YAML flow mapping) named by its rule.
fn faulty(spec: &str) -> PolicyHandle {
    let route = route_yaml(
        "[{ type: ExtensionRef, extensionRef: { group: policy.mesh.io, kind: FaultInjection, name: flaky } }]",
    );
    PolicyHandle::from_yaml(&format!(
        "{route}---\napiVersion: policy.mesh.io/v1alpha1\nkind: FaultInjection\nmetadata: {{ name: flaky, namespace: shop }}\nspec: {spec}\n"
    ))
    .unwrap()
}

#[tokio::test]
async fn an_abort_answers_without_calling_the_backend_and_is_counted() {
    let registry = Registry::new();
    let policy = faulty("{ abort: { httpStatus: 503 } }");
    let (svc, mut handle) = stack(policy, registry.clone(), MirrorConfig::default());
    let err = svc.oneshot(get("http://web.shop/api/x")).await.unwrap_err();
    assert!(is_caused_by::<FaultAborted>(&*err));
    assert_eq!(
        crate::errors::status_for(&*err),
        StatusCode::SERVICE_UNAVAILABLE
    );
    // The service went with the call: the mock sees no request, and then its end.
    let next = tokio::time::timeout(Duration::from_millis(50), handle.next_request()).await;
    assert!(!matches!(next, Ok(Some(_))), "forwarded");
    let labels = [("fault", "abort"), ("rt_route", "api")];
    assert_eq!(registry.counter_value(FAULT_TOTAL, &labels), Some(1));
}

#[tokio::test(start_paused = true)]
async fn a_delay_holds_the_request_and_is_cancelled_with_it() {
    let policy = faulty("{ delay: { fixedDelay: 1s } }");
    let (svc, mut handle) = stack(policy, Registry::new(), MirrorConfig::default());
    let call = tokio::spawn(svc.clone().oneshot(get("http://web.shop/api/x")));
    let early = tokio::time::timeout(Duration::from_millis(999), handle.next_request()).await;
    assert!(early.is_err(), "forwarded before its delay");
    let (_, send) = handle
        .next_request()
        .await
        .expect("forwarded after the delay");
    send.send_response(Response::new("ok".to_owned()));
    assert_eq!(call.await.unwrap().unwrap().into_body(), "ok");

    // Dropped while held: nothing is sent, ever.
    let held = tokio::spawn(svc.oneshot(get("http://web.shop/api/x")));
    tokio::time::sleep(Duration::from_millis(500)).await;
    held.abort();
    let late = tokio::time::timeout(Duration::from_secs(5), handle.next_request()).await;
    assert!(
        !matches!(late, Ok(Some(_))),
        "a cancelled request was forwarded"
    );
}

#[tokio::test]
async fn a_missing_fault_injection_fails_the_request() {
    let policy = route(
        "[{ type: ExtensionRef, extensionRef: { group: policy.mesh.io, kind: FaultInjection, name: absent } }]",
    );
    let (svc, _handle) = stack(policy, Registry::new(), MirrorConfig::default());
    let err = svc.oneshot(get("http://web.shop/api/x")).await.unwrap_err();
    assert!(is_caused_by::<UnresolvedFilter>(&*err));
    assert_eq!(
        crate::errors::status_for(&*err),
        StatusCode::INTERNAL_SERVER_ERROR
    );
}

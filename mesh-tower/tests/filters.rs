//! Route filters in the in-process client: a `MeshClient` over mesh mTLS (HTTP/2 between the
//! meshed peers) redirects, changes headers and mirrors as the sidecar does.

mod support;

use std::time::Duration;

use http::StatusCode;
use mesh_tower::PolicyHandle;
use mesh_tower::discover::StaticResolver;
use mesh_tower::errors::PROXY_ERROR_HEADER;
use support::*;

const POLICY: &str = "
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: web, namespace: shop }
spec:
  parentRefs: [{ name: web, kind: Service }]
  rules:
  - matches: [{ path: { type: PathPrefix, value: /old } }]
    filters:
    - { type: RequestRedirect, requestRedirect: { path: { type: ReplacePrefixMatch, replacePrefixMatch: /new }, statusCode: 301 } }
  - matches: [{ path: { type: PathPrefix, value: /api } }]
    filters:
    - { type: RequestHeaderModifier, requestHeaderModifier: { add: [{ name: x-via, value: mesh }] } }
    - { type: ResponseHeaderModifier, responseHeaderModifier: { set: [{ name: x-served, value: web }] } }
    - { type: RequestMirror, requestMirror: { backendRef: { name: shadow, port: 80 } } }
";

/// Polls `f` (bounded) until it holds.
async fn eventually(f: impl Fn() -> bool) -> bool {
    for _ in 0..500 {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

#[tokio::test]
async fn a_mesh_client_redirects_changes_headers_and_mirrors() {
    let pki = Pki::new();
    // The backend answers with the x-via header it was sent.
    let web = Backend::start_with(&pki, "web", "", |parts| async move {
        let via = parts.headers.get("x-via").cloned();
        StatusCode::OK.with_body(via.map_or_else(Vec::new, |v| v.as_bytes().to_vec()))
    })
    .await;
    let shadow = Backend::start(&pki, "shadow").await;
    let resolver = StaticResolver::new()
        .with("web.shop", vec![web.endpoint()])
        .with("shadow.shop", vec![shadow.endpoint()]);
    let policy = PolicyHandle::from_yaml(POLICY).unwrap();
    let (client, registry) = client(&pki, "frontend", policy, resolver);

    let rsp = client.request(get("http://web.shop/old/page?x=1")).await;
    assert_eq!(rsp.status(), StatusCode::MOVED_PERMANENTLY);
    assert_eq!(rsp.headers()["location"], "http://web.shop/new/page?x=1");
    assert!(!rsp.headers().contains_key(PROXY_ERROR_HEADER));
    assert_eq!(web.hits(), 0, "a redirect reached the backend");

    let rsp = client.request(get("http://web.shop/api/items")).await;
    assert_eq!(rsp.headers()["x-served"], "web");
    assert_eq!(read(rsp).await, (StatusCode::OK, "mesh".to_owned()));
    assert!(eventually(|| shadow.hits() == 1).await, "no mirrored copy");
    assert_eq!(shadow.seen()[0].path, "/api/items");
    let sent = [("result", "sent")];
    assert!(
        eventually(|| sample(&registry.render(), "outbound_http_mirror_total", &sent) == 1.0).await
    );
    let redirects = [("status_code", "301")];
    let text = registry.render();
    assert_eq!(
        sample(&text, "outbound_http_redirect_total", &redirects),
        1.0
    );
}

//! What the authorization layer tells the outside world about a decision, and what it hands
//! the layers after it: the `inbound_http_authz_*` labels Linkerd dashboards query, the
//! `l5d-proxy-error` text of a denial, and the [`Authorized`] extension. These are contracts;
//! who decided is carried as data, and these strings are rendered from it.

use std::convert::Infallible;
use std::sync::Arc;

use http::{Request, Response};
use mesh_core::Identity;
use mesh_core::authz::DecidedBy;
use mesh_tower::accepted::Accepted;
use mesh_tower::authz::{AuthorizeLayer, Authorized, ClientInfo};
use mesh_tower::errors::{Unauthorized, find};
use mesh_tower::metrics::Registry;
use mesh_tower::server::local_target;
use mesh_tower::{BoxError, PolicyHandle};
use tower::{Layer, ServiceExt};

/// One Server per way of deciding: an AuthorizationPolicy (8080), a ServerAuthorization
/// (9090), a Server whose routes leave `/admin` unrouted (7070); other ports fall back to the
/// default policy.
const POLICY: &str = r#"
apiVersion: policy.linkerd.io/v1beta3
kind: Server
metadata: { name: web-http, namespace: shop }
spec: { podSelector: { matchLabels: { app: web } }, port: 8080 }
---
apiVersion: policy.linkerd.io/v1alpha1
kind: MeshTLSAuthentication
metadata: { name: frontend, namespace: shop }
spec: { identities: ["frontend.shop.serviceaccount.identity.linkerd.cluster.local"] }
---
apiVersion: policy.linkerd.io/v1alpha1
kind: AuthorizationPolicy
metadata: { name: web-from-frontend, namespace: shop }
spec:
  targetRef: { group: policy.linkerd.io, kind: Server, name: web-http }
  requiredAuthenticationRefs: [{ group: policy.linkerd.io, kind: MeshTLSAuthentication, name: frontend }]
---
apiVersion: policy.linkerd.io/v1beta3
kind: Server
metadata: { name: web-admin, namespace: shop }
spec: { podSelector: { matchLabels: { app: web } }, port: 9090 }
---
apiVersion: policy.linkerd.io/v1beta1
kind: ServerAuthorization
metadata: { name: admin-open, namespace: shop }
spec:
  server: { name: web-admin }
  client: { unauthenticated: true }
---
apiVersion: policy.linkerd.io/v1beta3
kind: Server
metadata: { name: web-api, namespace: shop }
spec: { podSelector: { matchLabels: { app: web } }, port: 7070, accessPolicy: all-unauthenticated }
---
apiVersion: policy.linkerd.io/v1beta1
kind: HTTPRoute
metadata: { name: api, namespace: shop }
spec:
  parentRefs: [{ name: web-api, kind: Server, group: policy.linkerd.io }]
  rules: [{ matches: [{ path: { type: PathPrefix, value: /api } }] }]
"#;

fn frontend() -> Option<Identity> {
    Some(Identity::new("cluster.local", "shop", "frontend").unwrap())
}

/// Sends one request to `port` through an authorization layer counting into `registry`;
/// returns what the application saw, or the error the layer answered with.
async fn send(
    registry: &Registry,
    port: u16,
    path: &str,
    identity: Option<Identity>,
) -> Result<Authorized, BoxError> {
    let policy = PolicyHandle::from_yaml(POLICY).unwrap();
    let app = tower::service_fn(|req: Request<()>| async move {
        let a = Authorized::of(req.extensions()).cloned().unwrap();
        Ok::<_, Infallible>(Response::new(a))
    });
    let svc = AuthorizeLayer::new(policy)
        .with_metrics(registry.clone())
        .layer(app);
    let mut req = Request::get(format!("http://web.shop:{port}{path}"))
        .body(())
        .unwrap();
    req.extensions_mut().insert(Accepted {
        client: Some(ClientInfo {
            identity,
            addr: "10.213.0.9:40000".parse().unwrap(),
        }),
        target: Some(Arc::new(local_target("shop", port, &[("app", "web")]))),
        ..Accepted::default()
    });
    svc.oneshot(req).await.map(Response::into_body)
}

#[tokio::test]
async fn allowed_requests_are_counted_with_linkerds_authz_labels() {
    let registry = Registry::new();
    let cases = [
        // (port, path, identity, srv_kind, srv_name, authz_kind, authz_name)
        (
            8080,
            "/",
            frontend(),
            "server",
            "web-http",
            "authorizationpolicy",
            "web-from-frontend",
        ),
        (
            9090,
            "/",
            None,
            "server",
            "web-admin",
            "serverauthorization",
            "admin-open",
        ),
        (
            7070,
            "/api/x",
            None,
            "server",
            "web-api",
            "default",
            "all-unauthenticated",
        ),
        (
            6060,
            "/",
            None,
            "default",
            "all-unauthenticated",
            "default",
            "all-unauthenticated",
        ),
    ];
    for (port, path, id, srv_kind, srv_name, authz_kind, authz_name) in cases {
        let a = send(&registry, port, path, id)
            .await
            .unwrap_or_else(|e| panic!("{port}{path}: {e}"));
        let labels = [
            ("target_port", &*port.to_string()),
            ("srv_kind", srv_kind),
            ("srv_name", srv_name),
            ("authz_kind", authz_kind),
            ("authz_name", authz_name),
        ];
        assert_eq!(
            registry.counter_value("inbound_http_authz_allow_total", &labels),
            Some(1),
            "{port}{path}: {}",
            registry.render()
        );
        // The layers after authorization read the same decision, shared, not re-parsed.
        assert_eq!(
            a.server.as_ref().map(|s| s.name.as_str()),
            (srv_kind == "server").then_some(srv_name)
        );
    }
    let a = send(&registry, 7070, "/api/x", None).await.unwrap();
    assert_eq!(
        a.route.map(|r| r.to_string()).as_deref(),
        Some("HTTPRoute/shop/api")
    );
}

#[tokio::test]
async fn denials_are_counted_by_server_and_say_who_refused_and_why() {
    let registry = Registry::new();
    let cases = [
        (
            8080,
            "/",
            "Server/shop/web-http",
            "no authorization of Server/shop/web-http admits an unauthenticated client from 10.213.0.9",
        ),
        (
            7070,
            "/admin",
            "Server/shop/web-api",
            "no route of Server/shop/web-api matches the request",
        ),
    ];
    for (port, path, by, reason) in cases {
        let e = send(&registry, port, path, None).await.unwrap_err();
        let denied = find::<Unauthorized>(&*e).unwrap_or_else(|| panic!("{port}: {e}"));
        assert!(matches!(denied.by, DecidedBy::Server(_)), "{denied:?}");
        assert_eq!(e.to_string(), format!("unauthorized by {by}: {reason}"));
    }
    for srv_name in ["web-http", "web-api"] {
        let labels = [("srv_kind", "server"), ("srv_name", srv_name)];
        assert_eq!(
            registry.counter_value("inbound_http_authz_deny_total", &labels),
            Some(1),
            "{}",
            registry.render()
        );
    }
}

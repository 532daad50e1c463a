//! The route layer's choice of destination: the original destination in transparent mode
//! (the Host chooses nothing), `l5d-dst-override`, and names relative to the caller's
//! namespace otherwise.

mod support;

use http::StatusCode;
use mesh_core::NameContext;
use mesh_tower::PolicyHandle;
use mesh_tower::client::MeshClient;
use mesh_tower::discover::StaticResolver;
use mesh_tower::route::{DST_OVERRIDE, OrigDst, RouteLayer, RouteTarget};
use tower::{ServiceBuilder, ServiceExt, service_fn};

const POLICY: &str = r#"
apiVersion: v1
kind: Service
metadata: { name: web, namespace: shop }
spec: { clusterIP: 10.96.0.10, ports: [{ name: http, port: 80 }] }
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: web-canary, namespace: shop }
spec:
  parentRefs: [{ name: web, kind: Service, group: core, port: 80 }]
  rules:
  - backendRefs: [{ name: web-v2, port: 80 }]
---
apiVersion: v1
kind: Service
metadata: { name: db, namespace: shop }
spec: { clusterIP: None, ports: [{ port: 5432 }] }
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: { name: db-1, namespace: shop, labels: { kubernetes.io/service-name: db } }
addressType: IPv4
ports: [{ port: 5432 }]
endpoints: [{ addresses: ["10.0.0.5"], targetRef: { kind: Pod, name: db-0 } }]
"#;

/// Where the route layer sent a request: its backends and the pod, if any.
async fn routed(layer: RouteLayer, req: http::Request<()>) -> (Vec<String>, Option<String>) {
    let svc = ServiceBuilder::new().layer(layer).service(service_fn(
        |req: http::Request<()>| async move {
            let t = RouteTarget::of(req.extensions()).cloned();
            Ok::<_, std::convert::Infallible>(t)
        },
    ));
    let t = svc.oneshot(req).await.expect("routed").expect("a target");
    let backends = t.backends.iter().map(|b| b.backend.to_string()).collect();
    (backends, t.pod.and_then(|p| p.pod.clone()))
}

fn layer() -> RouteLayer {
    RouteLayer::new(PolicyHandle::from_yaml(POLICY).expect("policy"))
}

fn transparent(dst: &str, host: &str) -> http::Request<()> {
    let mut req = http::Request::get("/x")
        .header("host", host)
        .body(())
        .expect("request");
    req.extensions_mut()
        .insert(OrigDst(dst.parse().expect("addr")));
    req
}

#[tokio::test]
async fn the_original_destination_decides_not_the_host() {
    let cases = [
        // The ClusterIP: the Service's route, whatever the Host says.
        (
            "10.96.0.10:80",
            "nothing.example",
            vec!["web-v2.shop:80"],
            None,
        ),
        (
            "10.96.0.10:80",
            "db.shop:5432",
            vec!["web-v2.shop:80"],
            None,
        ),
        // A pod by its IP: straight to it, labelled as that pod.
        (
            "10.0.0.5:5432",
            "web.shop",
            vec!["10.0.0.5:5432"],
            Some("db-0"),
        ),
        // Unknown: to the original destination, its port kept (not the Host's 80).
        ("10.1.2.3:8080", "web.shop", vec!["10.1.2.3:8080"], None),
        ("10.1.2.3:8080", "10.1.2.3", vec!["10.1.2.3:8080"], None),
    ];
    for (dst, host, want, pod) in cases {
        let (b, p) = routed(layer(), transparent(dst, host)).await;
        assert_eq!(b, want, "{dst} Host {host}");
        assert_eq!(p.as_deref(), pod, "{dst} Host {host}");
    }
}

#[tokio::test]
async fn dst_override_names_a_known_service() {
    let mut req = transparent("10.1.2.3:8080", "anything");
    req.headers_mut().insert(
        DST_OVERRIDE,
        "web.shop.svc.cluster.local:80".parse().expect("value"),
    );
    assert_eq!(routed(layer(), req).await.0, ["web-v2.shop:80"]);
    // An override naming nothing known changes nothing.
    let mut req = transparent("10.1.2.3:8080", "anything");
    req.headers_mut()
        .insert(DST_OVERRIDE, "nope.shop:80".parse().expect("value"));
    assert_eq!(routed(layer(), req).await.0, ["10.1.2.3:8080"]);
}

#[tokio::test]
async fn names_resolve_from_the_callers_namespace() {
    let get = |uri: &str| http::Request::get(uri).body(()).expect("request");
    let shop = || layer().with_names(NameContext::new("shop"));
    assert_eq!(
        routed(shop(), get("http://web/")).await.0,
        ["web-v2.shop:80"]
    );
    assert_eq!(
        routed(shop(), get("http://web.shop.svc.cluster.local/"))
            .await
            .0,
        ["web-v2.shop:80"]
    );
    // From `default`, `web` is another Service (unknown here).
    assert_eq!(
        routed(layer(), get("http://web/")).await.0,
        ["web.default:80"]
    );
}

#[tokio::test]
async fn mesh_client_resolves_short_names_in_its_namespace() {
    let pki = support::Pki::new();
    let web = support::Backend::start(&pki, "web").await;
    let resolver = StaticResolver::new().with("web.shop", vec![web.endpoint()]);
    let client = |ns: &str| {
        MeshClient::builder(
            PolicyHandle::from_yaml("").expect("policy"),
            resolver.clone(),
        )
        .mtls(pki.client_tls(&support::id("client")))
        .namespace(ns)
        .build()
    };
    let shop = client("shop");
    for uri in [
        "http://web/",
        "http://web.shop/",
        "http://web.shop.svc.cluster.local/",
    ] {
        let (status, body) = support::read(shop.request(support::get(uri)).await).await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "web"), "{uri}");
    }
    // From `default`, `web` is web.default, which has no endpoints.
    let rsp = client("default").request(support::get("http://web/")).await;
    assert_eq!(rsp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(web.hits(), 3);
}

/// A proxy knows its own namespace: a client-side ServiceProfile there (here with
/// `dstOverrides`) decides its calls, by ClusterIP too; proxies elsewhere keep the Service's
/// own routes.
#[tokio::test]
async fn a_proxy_uses_the_client_side_profile_of_its_namespace() {
    let profile = r#"
---
apiVersion: linkerd.io/v1alpha2
kind: ServiceProfile
metadata: { name: web.shop.svc.cluster.local, namespace: ann }
spec:
  dstOverrides: [{ authority: "web-v3.shop.svc.cluster.local:80", weight: 1 }]
"#;
    let policy = PolicyHandle::from_yaml(&format!("{POLICY}{profile}")).expect("policy");
    let from = |ns: &str| RouteLayer::new(policy.clone()).with_names(NameContext::new(ns));
    let req = || transparent("10.96.0.10:80", "web.shop");
    assert_eq!(routed(from("ann"), req()).await.0, ["web-v3.shop:80"]);
    assert_eq!(routed(from("shop"), req()).await.0, ["web-v2.shop:80"]);
    assert_eq!(routed(from("other"), req()).await.0, ["web-v2.shop:80"]);
}

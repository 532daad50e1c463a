//! Linkerd's client-side ServiceProfiles: a profile named for `<svc>.<ns>.svc.<cluster-domain>`
//! but placed in a caller's namespace applies to that namespace's callers only; every other
//! caller gets the Service's own (server-side) profile, or its routes.

use std::time::Duration;

use mesh_core::{MeshPolicy, NameContext, Request};

const SERVICE: &str = r#"
apiVersion: v1
kind: Service
metadata: { name: web, namespace: prod }
spec: { clusterIP: 10.96.0.20, ports: [{ port: 80 }] }
---
"#;

/// The Service's own profile: GETs time out after 1 s, nothing is retried.
const SERVER_SIDE: &str = r#"
apiVersion: linkerd.io/v1alpha2
kind: ServiceProfile
metadata: { name: web.prod.svc.cluster.local, namespace: prod }
spec:
  routes:
  - name: server-get
    condition: { method: GET, pathRegex: /.* }
    timeout: 1s
---
"#;

/// `shop`'s own view of the Service: retry GETs, 3 s, and 429 is a failure too.
const CLIENT_SIDE: &str = r#"
apiVersion: linkerd.io/v1alpha2
kind: ServiceProfile
metadata: { name: web.prod.svc.cluster.local, namespace: shop }
spec:
  routes:
  - name: shop-get
    condition: { method: GET, pathRegex: /.* }
    timeout: 3s
    isRetryable: true
    responseClasses:
    - condition: { status: { min: 429, max: 429 } }
      isFailure: true
  retryBudget: { retryRatio: 0.2, minRetriesPerSecond: 10, ttl: 10s }
---
"#;

const PRODUCER_ROUTE: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: producer, namespace: prod }
spec:
  parentRefs: [{ name: web, kind: Service, group: core, port: 80 }]
  rules: [{ backendRefs: [{ name: web-stable, port: 80 }] }]
---
"#;

fn policy(parts: &[&str]) -> MeshPolicy {
    MeshPolicy::from_yaml(&parts.concat()).unwrap_or_else(|e| panic!("{e}"))
}

fn get() -> Request {
    Request::new("GET", "http://web.prod/items").unwrap()
}

#[test]
fn a_client_side_profile_governs_its_namespace_only() {
    let p = policy(&[SERVICE, SERVER_SIDE, CLIENT_SIDE]);
    let web = p.service("web", "prod").expect("the Service");
    let req = get();

    let shop = web.decide_from("shop", 80, &req);
    assert_eq!(shop.route_name(), Some("shop-get"));
    let source = shop
        .route()
        .and_then(|r| r.source())
        .map(ToString::to_string);
    assert_eq!(
        source.as_deref(),
        Some("ServiceProfile/shop/web.prod.svc.cluster.local")
    );
    assert_eq!(shop.timeouts().request, Some(Duration::from_secs(3)));
    assert!(shop.retry().is_some(), "isRetryable in shop's profile");
    assert!(shop.classify(429, None).is_failure(), "429 fails for shop");
    assert!(
        shop.classify(503, None).is_failure(),
        "5xx still fails by default"
    );

    for from in ["prod", "other"] {
        let d = web.decide_from(from, 80, &req);
        assert_eq!(d.route_name(), Some("server-get"), "from {from}");
        assert_eq!(d.timeouts().request, Some(Duration::from_secs(1)));
        assert!(d.retry().is_none(), "from {from}");
        assert!(!d.classify(429, None).is_failure(), "from {from}");
    }
    assert_eq!(web.decide(80, &req).route_name(), Some("server-get"));
    assert_eq!(
        web.profile_from("shop").map(ToString::to_string).as_deref(),
        Some("ServiceProfile/shop/web.prod.svc.cluster.local")
    );
    assert_eq!(
        web.profile_from("other")
            .map(ToString::to_string)
            .as_deref(),
        Some("ServiceProfile/prod/web.prod.svc.cluster.local")
    );

    // By name, from a caller's namespace, as a proxy resolves it.
    let by_name = |ns: &str| {
        let cx = NameContext::new(ns);
        let d = p.route_from(&cx, "web.prod", 80, &req);
        d.route_name().map(str::to_owned)
    };
    assert_eq!(by_name("shop").as_deref(), Some("shop-get"));
    assert_eq!(by_name("other").as_deref(), Some("server-get"));
}

#[test]
fn the_order_of_the_two_profiles_does_not_matter() {
    let p = policy(&[SERVICE, CLIENT_SIDE, SERVER_SIDE]);
    let web = p.service("web", "prod").expect("the Service");
    let req = get();
    assert_eq!(
        web.decide_from("shop", 80, &req).route_name(),
        Some("shop-get")
    );
    assert_eq!(
        web.decide_from("other", 80, &req).route_name(),
        Some("server-get")
    );
    let notes = format!("{:?}", p.notes());
    assert!(!notes.contains("replaces it"), "{notes}");
}

/// Without a server-side profile, the Service's HTTPRoutes still steer every other caller; the
/// client-side profile makes them inert for its own namespace only.
#[test]
fn a_client_side_profile_leaves_other_callers_on_the_routes() {
    let p = policy(&[SERVICE, PRODUCER_ROUTE, CLIENT_SIDE]);
    let web = p.service("web", "prod").expect("the Service");
    let req = get();
    let shop = web.decide_from("shop", 80, &req);
    assert_eq!(shop.route_name(), Some("shop-get"));
    let picked = shop.pick(0).map(|b| b.service());
    assert_eq!(picked.as_deref(), Some("web.prod"), "to the Service itself");
    let other = web.decide_from("other", 80, &req);
    assert_eq!(other.route_name(), Some("producer"));
    assert_eq!(
        other.pick(0).map(|b| b.service()).as_deref(),
        Some("web-stable.prod")
    );
    // A request the client-side profile has no route for gets the plain default there.
    let post = Request::new("POST", "http://web.prod/items").unwrap();
    let d = web.decide_from("shop", 80, &post);
    assert_eq!(d.route_name(), None, "no route of the profile");
    assert!(d.retry().is_none());
    assert_eq!(d.timeouts().request, None);

    let notes = format!("{:?}", p.notes());
    assert!(notes.contains("client-side"), "{notes}");
    assert!(
        !notes.contains("inert"),
        "the producer route is not inert: {notes}"
    );
}

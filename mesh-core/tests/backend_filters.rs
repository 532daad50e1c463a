//! Filters on a `backendRef` (Gateway API `HTTPBackendRef.filters`, `GRPCBackendRef.filters`):
//! read with the same checks as a rule's filters, each mistake refused with its field path,
//! kept apart from the rule's own filters so that only requests sent to that backend get
//! them, and a `FaultInjection` they name resolved (and relinked) like a rule's.

use mesh_core::filter::fault::AbortStatus;
use mesh_core::filter::{self, Filter, Outcome, RequestLine};
use mesh_core::split::BackendRef;
use mesh_core::{MeshPolicy, PolicyConfig, PolicyIndex, Request};

const SERVICES: &str = r#"
apiVersion: v1
kind: Service
metadata: { name: web, namespace: shop }
spec: { clusterIP: 10.96.0.10, ports: [{ port: 80 }] }
---
apiVersion: v1
kind: Service
metadata: { name: web-v1, namespace: shop }
spec: { clusterIP: 10.96.0.11, ports: [{ port: 80 }] }
---
apiVersion: v1
kind: Service
metadata: { name: web-v2, namespace: shop }
spec: { clusterIP: 10.96.0.12, ports: [{ port: 80 }] }
"#;

const FAULT: &str = r#"
apiVersion: policy.mesh.io/v1alpha1
kind: FaultInjection
metadata: { name: flaky, namespace: shop }
spec:
  abort: { percentage: 60, httpStatus: 503 }
"#;

/// HTTPRoute `web` split 90/10 between `web-v1` and `web-v2`, `web-v2` with `filters`.
fn route(kind: &str, filters: &str) -> String {
    format!(
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: {kind}
metadata: {{ name: web, namespace: shop }}
spec:
  parentRefs: [{{ name: web, kind: Service, group: core, port: 80 }}]
  rules:
  - backendRefs:
    - {{ name: web-v1, port: 80, weight: 90 }}
    - name: web-v2
      port: 80
      weight: 10
      filters:
{filters}"#
    )
}

const HEADER_AND_FAULT: &str = "      - type: RequestHeaderModifier
        requestHeaderModifier: { set: [{ name: x-canary, value: 'true' }] }
      - type: ExtensionRef
        extensionRef: { group: policy.mesh.io, kind: FaultInjection, name: flaky }
";

fn policy(docs: &[&str]) -> Result<MeshPolicy, String> {
    MeshPolicy::from_yaml(&docs.join("\n---\n")).map_err(|e| e.to_string())
}

fn backend(name: &str) -> BackendRef {
    BackendRef::new(name, "shop", Some(80))
}

/// The rule's own filters and those of `web-v1` and `web-v2`, for `method url`.
fn filters_of(p: &MeshPolicy, method: &str, url: &str) -> [Vec<Filter>; 3] {
    let req = Request::new(method, url).expect("a request");
    let d = p.outbound(&req);
    let route = d.route().expect("a route");
    [
        route.filters().to_vec(),
        route.backend_filters(&backend("web-v1")).to_vec(),
        route.backend_filters(&backend("web-v2")).to_vec(),
    ]
}

/// What a backend's filters do to `GET http://web.shop/`.
fn plan(filters: &[Filter]) -> Outcome<'_> {
    filter::plan(filters, &LINE)
}

const LINE: RequestLine<'static> = RequestLine {
    scheme: "http",
    host: "web.shop",
    port: 80,
    path: "/",
    query: None,
};

#[test]
fn only_the_backend_that_names_filters_gets_them() {
    let p = policy(&[SERVICES, &route("HTTPRoute", HEADER_AND_FAULT), FAULT]).expect("compiles");
    let [rule, v1, v2] = filters_of(&p, "GET", "http://web.shop/");
    assert!(rule.is_empty(), "the rule's own filters: {rule:?}");
    assert!(v1.is_empty(), "the stable backend's: {v1:?}");
    let Outcome::Forward(f) = plan(&v2) else {
        panic!("the canary's filters forward: {v2:?}")
    };
    assert_eq!(f.request_headers.len(), 1);
    assert_eq!(
        f.faults[0].abort.map(|a| a.status),
        Some(AbortStatus::Http(503))
    );
    // A chosen backend's port is resolved; the rule's naming matches it either way.
    let unported = BackendRef::new("web-v2", "shop", None);
    let req = Request::new("GET", "http://web.shop/").expect("a request");
    let d = p.outbound(&req);
    assert_eq!(d.route().unwrap().backend_filters(&unported).len(), 2);
    // The split itself is unchanged by the filters.
    let weights: Vec<u64> = d.backends().map(|b| b.weight).collect();
    assert_eq!(weights, [90, 10]);
}

#[test]
fn a_grpc_backend_takes_a_fault_too() {
    let filters = "      - type: ExtensionRef
        extensionRef: { group: policy.mesh.io, kind: FaultInjection, name: flaky }
";
    let p = policy(&[SERVICES, &route("GRPCRoute", filters), FAULT]).expect("compiles");
    let [_, v1, v2] = filters_of(&p, "POST", "http://web.shop/pkg.Svc/Call");
    assert!(v1.is_empty());
    assert_eq!(
        v2[0].to_string(),
        "FaultInjection/flaky: abort 503 for 60 % of requests"
    );
}

#[test]
fn a_backend_fault_applied_later_relinks_the_route() {
    let value = |yaml: &str| -> serde_json::Value { serde_norway::from_str(yaml).expect("YAML") };
    let mut index = PolicyIndex::new(PolicyConfig::default());
    for doc in SERVICES.split("\n---\n") {
        index.apply(&value(doc)).expect("service");
    }
    index
        .apply(&value(&route("HTTPRoute", HEADER_AND_FAULT)))
        .expect("route");
    // Missing, it fails the requests sent to that backend only (Gateway API: 500).
    let [_, v1, v2] = filters_of(&index.snapshot(), "GET", "http://web.shop/");
    assert!(v1.is_empty());
    assert_eq!(
        plan(&v2),
        Outcome::Unresolved {
            filter: "FaultInjection/flaky".to_owned()
        }
    );
    index.apply(&value(FAULT)).expect("fault");
    let [_, _, v2] = filters_of(&index.snapshot(), "GET", "http://web.shop/");
    let Outcome::Forward(f) = plan(&v2) else {
        panic!("not forwarded once the FaultInjection exists")
    };
    assert_eq!(f.faults.len(), 1);
}

#[test]
fn each_mistake_is_refused_with_its_field_path() {
    let at = "spec.rules[0].backendRefs[1].filters[0]";
    let cases = [
        (
            "      - { type: RequestRedirect, requestRedirect: { statusCode: 302 } }\n",
            format!("{at}.type"),
            "not supported on a backendRef",
        ),
        (
            "      - { type: URLRewrite, urlRewrite: { hostname: other } }\n",
            format!("{at}.type"),
            "not supported on a backendRef",
        ),
        (
            "      - { type: RequestMirror, requestMirror: { backendRef: { name: web-v1, port: 80 } } }\n",
            format!("{at}.type"),
            "not supported on a backendRef",
        ),
        (
            "      - { type: RequestHeaderModifier }\n",
            format!("{at}.requestHeaderModifier"),
            "missing",
        ),
        (
            "      - { type: ExtensionRef, extensionRef: { group: example.com, kind: RateLimit, name: x } }\n",
            format!("{at}.extensionRef"),
            "not an extension this mesh implements",
        ),
        (
            "      - { type: Teleport }\n",
            format!("{at}.type"),
            "not a filter type",
        ),
        (
            "      - { type: ResponseHeaderModifier, responseHeaderModifier: {} }\n      - { type: ResponseHeaderModifier, responseHeaderModifier: {} }\n",
            "spec.rules[0].backendRefs[1].filters[1].type".to_owned(),
            "only once",
        ),
    ];
    for (filters, field, why) in cases {
        let e = policy(&[SERVICES, &route("HTTPRoute", filters)]).expect_err(filters);
        assert!(e.contains(&field) && e.contains(why), "{filters}: {e}");
    }
}

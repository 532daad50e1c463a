//! Gateway API filters compiled as data: what each rule's filters do to a request, and the
//! rules the Gateway API CRDs enforce on them, refused with the field that breaks them.

use mesh_core::filter::{self, Filter, Outcome, RequestLine};
use mesh_core::{MeshPolicy, Request};

fn route(rules: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Service
metadata: {{ name: web, namespace: shop }}
spec: {{ clusterIP: 10.96.0.10, ports: [{{ port: 80 }}] }}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{ name: web, namespace: shop }}
spec:
  parentRefs: [{{ name: web, kind: Service, group: core, port: 80 }}]
  rules:
{rules}"#
    )
}

fn refused(rules: &str) -> String {
    match MeshPolicy::from_yaml(&route(rules)) {
        Ok(_) => panic!("accepted:\n{rules}"),
        Err(e) => e.to_string(),
    }
}

/// What the route's filters make of `GET http://web.shop<path>`.
fn outcome(policy: &MeshPolicy, path: &str) -> String {
    let req = Request::new("GET", &format!("http://web.shop{path}")).expect("a request");
    let d = policy.outbound(&req);
    let route = d.route().expect("a route");
    let (path, query) = path
        .split_once('?')
        .map_or((path, None), |(p, q)| (p, Some(q)));
    let line = RequestLine {
        scheme: "http",
        host: "web.shop",
        port: 80,
        path,
        query,
    };
    match filter::plan(route.filters(), &line) {
        Outcome::Redirect { status, location } => format!("{status} {location}"),
        Outcome::Forward(f) => format!(
            "forward host={} path={} mirrors={}",
            f.host.as_deref().unwrap_or("-"),
            f.path.as_deref().unwrap_or("-"),
            f.mirrors.len()
        ),
        Outcome::Unresolved { filter } => format!("500 {filter}"),
    }
}

#[test]
fn every_redirect_status_of_gateway_api_v1_compiles_and_answers() {
    for status in [301, 302, 303, 307, 308] {
        let policy = MeshPolicy::from_yaml(&route(&format!(
            r#"
  - matches: [{{ path: {{ type: PathPrefix, value: /old }} }}]
    filters:
    - type: RequestRedirect
      requestRedirect:
        scheme: https
        statusCode: {status}
        path: {{ type: ReplacePrefixMatch, replacePrefixMatch: /new }}
"#
        )))
        .unwrap_or_else(|e| panic!("{status}: {e}"));
        assert_eq!(
            outcome(&policy, "/old/page?x=1"),
            format!("{status} https://web.shop/new/page?x=1")
        );
    }
    let e = refused(
        r#"
  - filters: [{ type: RequestRedirect, requestRedirect: { statusCode: 304 } }]
"#,
    );
    assert!(e.contains("304 is not a redirect status"), "{e}");
}

#[test]
fn rewrites_and_mirrors_are_kept_as_data() {
    let policy = MeshPolicy::from_yaml(&route(
        r#"
  - matches: [{ path: { type: PathPrefix, value: /api } }]
    filters:
    - type: URLRewrite
      urlRewrite: { hostname: api.internal, path: { type: ReplacePrefixMatch, replacePrefixMatch: / } }
    - type: RequestMirror
      requestMirror: { backendRef: { name: shadow, port: 80 }, percent: 25 }
    - type: RequestHeaderModifier
      requestHeaderModifier: { set: [{ name: x-env, value: prod }] }
    backendRefs: [{ name: web, port: 80 }]
"#,
    ))
    .expect("compiles");
    assert_eq!(
        outcome(&policy, "/api/users"),
        "forward host=api.internal path=/users mirrors=1"
    );
    let req = Request::new("GET", "http://web.shop/api").expect("a request");
    let d = policy.outbound(&req);
    let shown: Vec<String> = (d.route().expect("a route").filters().iter())
        .map(Filter::to_string)
        .collect();
    assert_eq!(
        shown,
        [
            "URLRewrite hostname=api.internal path ReplacePrefixMatch /api → /",
            "RequestMirror to shadow.shop:80 (25/100 of requests)",
            "RequestHeaderModifier set x-env: prod",
        ]
    );
}

#[test]
fn the_gateway_api_rules_on_filters_are_enforced() {
    let cases = [
        (
            r#"
  - filters:
    - { type: RequestRedirect, requestRedirect: { scheme: https } }
    - { type: URLRewrite, urlRewrite: { hostname: x } }
"#,
            "a RequestRedirect or a URLRewrite, not both",
        ),
        (
            r#"
  - filters:
    - { type: RequestHeaderModifier, requestHeaderModifier: { remove: [a] } }
    - { type: RequestHeaderModifier, requestHeaderModifier: { remove: [b] } }
"#,
            "RequestHeaderModifier may appear only once in a rule",
        ),
        (
            r#"
  - matches: [{ path: { type: PathPrefix, value: /a } }, { path: { type: PathPrefix, value: /b } }]
    filters: [{ type: URLRewrite, urlRewrite: { path: { type: ReplacePrefixMatch, replacePrefixMatch: /c } } }]
"#,
            "exactly one match, of type PathPrefix",
        ),
        (
            r#"
  - matches: [{ path: { type: Exact, value: /a } }]
    filters: [{ type: URLRewrite, urlRewrite: { path: { type: ReplacePrefixMatch, replacePrefixMatch: /c } } }]
"#,
            "exactly one match, of type PathPrefix",
        ),
        (
            r#"
  - filters: [{ type: URLRewrite, urlRewrite: { path: { type: ReplaceFullPath } } }]
"#,
            "missing for type ReplaceFullPath",
        ),
        (
            r#"
  - filters: [{ type: RequestMirror, requestMirror: { backendRef: { name: s, port: 80 }, percent: 101 } }]
"#,
            "101 is not within 0–100",
        ),
        (
            r#"
  - filters: [{ type: RequestMirror, requestMirror: { backendRef: { name: s, port: 80 }, fraction: { numerator: 3, denominator: 2 } } }]
"#,
            "3/2 is not a fraction",
        ),
    ];
    for (rules, want) in cases {
        let e = refused(rules);
        assert!(e.contains(want), "want {want:?} in:\n{e}");
        assert!(e.contains("spec.rules[0]"), "names the field:\n{e}");
    }
}

#[test]
fn grpc_routes_take_only_the_filters_grpcroute_defines() {
    let yaml = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: { name: g, namespace: shop }
spec:
  parentRefs: [{ name: web, kind: Service, group: core, port: 80 }]
  rules:
  - filters: [{ type: URLRewrite, urlRewrite: { hostname: x } }]
"#;
    let e = MeshPolicy::from_yaml(yaml)
        .expect_err("refused")
        .to_string();
    assert!(e.contains("URLRewrite is not a GRPCRoute filter"), "{e}");
}

#[test]
fn a_service_backend_needs_a_port() {
    let e = refused(
        r#"
  - backendRefs: [{ name: web }]
"#,
    );
    assert!(e.contains("backendRefs[0].port"), "{e}");
    assert!(e.contains("required for a Service backend"), "{e}");
}

//! Outbound decisions, as tables of cases written from the Gateway API and Linkerd specs.

use std::time::Duration;

use mesh_core::{MeshPolicy, Request};

fn policy(yaml: &str) -> MeshPolicy {
    MeshPolicy::from_yaml(yaml).unwrap_or_else(|e| panic!("{e}"))
}

fn req(method: &str, url: &str, headers: &[(&str, &str)]) -> Request {
    headers
        .iter()
        .fold(Request::new(method, url).unwrap(), |r, (k, v)| {
            r.header(k, v)
        })
}

/// Routes for one Service whose rules compete under Gateway API precedence.
const PRECEDENCE: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: catch-all, namespace: shop }
spec:
  parentRefs: [{ name: web, kind: Service, group: "", port: 80 }]
  rules:
  - backendRefs: [{ name: web-default, port: 80 }]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: api, namespace: shop }
spec:
  parentRefs: [{ name: web, kind: Service, group: core, port: 80 }]
  rules:
  - matches: [{ path: { type: PathPrefix, value: /api } }]
    backendRefs: [{ name: api, port: 80 }]
  - matches: [{ path: { type: PathPrefix, value: /api/v2 } }]
    backendRefs: [{ name: api-v2, port: 80 }]
  - matches: [{ path: { type: Exact, value: /api/v2/health } }]
    backendRefs: [{ name: health, port: 80 }]
  - matches:
    - path: { type: PathPrefix, value: /api }
      method: POST
    backendRefs: [{ name: api-writes, port: 80 }]
  - matches:
    - path: { type: PathPrefix, value: /api }
      headers:
      - { name: x-canary, value: "1" }
      - { name: x-user, type: RegularExpression, value: "[a-z]+" }
    backendRefs: [{ name: api-canary, port: 80 }]
  - matches:
    - path: { type: PathPrefix, value: /api }
      headers: [{ name: x-canary, value: "1" }]
    backendRefs: [{ name: api-canary-1h, port: 80 }]
  - matches:
    - path: { type: PathPrefix, value: /api }
      queryParams: [{ name: debug, value: "true" }]
    backendRefs: [{ name: api-debug, port: 80 }]
  - matches: [{ path: { type: RegularExpression, value: "/img/[0-9]+\\.png" } }]
    backendRefs: [{ name: images, port: 80 }]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: other-port, namespace: shop }
spec:
  parentRefs: [{ name: web, kind: Service, port: 8080 }]
  rules:
  - matches: [{ path: { type: PathPrefix, value: /api } }]
    backendRefs: [{ name: admin, port: 8080 }]
"#;

#[test]
fn gateway_api_precedence() {
    let p = policy(PRECEDENCE);
    type Case<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], &'a str);
    let cases: &[Case<'_>] = &[
        ("GET", "http://web.shop/", &[], "web-default"),
        ("GET", "http://web.shop/apix", &[], "web-default"),
        ("GET", "http://web.shop/api", &[], "api"),
        ("GET", "http://web.shop/api/v1", &[], "api"),
        // The longest prefix wins.
        ("GET", "http://web.shop/api/v2/list", &[], "api-v2"),
        // Exact beats any prefix.
        ("GET", "http://web.shop/api/v2/health", &[], "health"),
        // Same prefix: a method match wins over header and query matches.
        (
            "POST",
            "http://web.shop/api/x",
            &[("x-canary", "1")],
            "api-writes",
        ),
        // Same prefix, no method: more header matches win.
        (
            "GET",
            "http://web.shop/api/x",
            &[("x-canary", "1"), ("x-user", "ann")],
            "api-canary",
        ),
        (
            "GET",
            "http://web.shop/api/x",
            &[("X-Canary", "1"), ("x-user", "A1")],
            "api-canary-1h",
        ),
        (
            "GET",
            "http://web.shop/api/x",
            &[("x-canary", "1")],
            "api-canary-1h",
        ),
        ("GET", "http://web.shop/api/x", &[("x-canary", "2")], "api"),
        // Then more query matches.
        ("GET", "http://web.shop/api/x?debug=true", &[], "api-debug"),
        ("GET", "http://web.shop/api/x?debug=false", &[], "api"),
        // Regular expressions match the whole path.
        ("GET", "http://web.shop/img/12.png", &[], "images"),
        ("GET", "http://web.shop/img/12.png.bak", &[], "web-default"),
        // Routes attached to another port do not apply.
        ("GET", "http://web.shop:8080/api", &[], "admin"),
        // FQDN and .svc forms find the same Service.
        ("GET", "http://web.shop.svc.cluster.local/api", &[], "api"),
        ("GET", "http://web.shop.svc/api", &[], "api"),
    ];
    for (method, url, headers, want) in cases {
        let r = req(method, url, headers);
        let d = p.outbound(&r);
        let got: Vec<_> = d.backends().map(|b| b.backend.name().to_owned()).collect();
        assert_eq!(got, vec![want.to_string()], "{method} {url} {headers:?}");
    }
}

#[test]
fn no_matching_route_on_an_attached_port_is_a_404_and_unattached_ports_pass_through() {
    let p = policy(
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: only-api, namespace: shop }
spec:
  parentRefs: [{ name: web, kind: Service, port: 80 }]
  rules:
  - matches: [{ path: { type: PathPrefix, value: /api } }]
"#,
    );
    let d = p.outbound(&req("GET", "http://web.shop/other", &[]));
    assert!(d.is_no_route());
    assert_eq!(d.backends().count(), 0);
    // A rule without backendRefs sends traffic to its parent Service.
    let d = p.outbound(&req("GET", "http://web.shop/api", &[]));
    assert_eq!(d.route_name(), Some("only-api"));
    let b: Vec<_> = d.backends().collect();
    assert_eq!(
        (b[0].backend.service(), b[0].backend.port()),
        ("web.shop".into(), Some(80))
    );
    // Another port of the Service has no route attached: straight to the Service.
    let d = p.outbound(&req("GET", "http://web.shop:9090/other", &[]));
    assert!(!d.is_no_route());
    assert_eq!(d.route_name(), None);
    // An unknown Service goes straight through.
    let d = p.outbound(&req("GET", "http://elsewhere.other:81/", &[]));
    assert!(d.service().is_none());
    assert_eq!(
        d.backends().next().unwrap().backend.service(),
        "elsewhere.other"
    );
}

#[test]
fn older_routes_win_ties_then_names() {
    let p = policy(
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: a-newer, namespace: ns, creationTimestamp: "2024-02-01T00:00:00Z" }
spec:
  parentRefs: [{ name: svc, kind: Service }]
  rules: [{ backendRefs: [{ name: newer, port: 80 }] }]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: b-older, namespace: ns, creationTimestamp: "2024-01-01T00:00:00Z" }
spec:
  parentRefs: [{ name: svc, kind: Service }]
  rules: [{ backendRefs: [{ name: older, port: 80 }] }]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: z, namespace: ns2 }
spec:
  parentRefs: [{ name: svc, kind: Service }]
  rules: [{ backendRefs: [{ name: z, port: 80 }] }]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: y, namespace: ns2 }
spec:
  parentRefs: [{ name: svc, kind: Service }]
  rules: [{ backendRefs: [{ name: y, port: 80 }] }]
"#,
    );
    let d = p.outbound(&req("GET", "http://svc.ns/", &[]));
    assert_eq!(d.route_name(), Some("b-older"));
    let d = p.outbound(&req("GET", "http://svc.ns2/", &[]));
    assert_eq!(d.route_name(), Some("y"));
}

/// Creation times tie-break as instants, not as text: an offset names the same instant as UTC,
/// and a fraction of a second is later than the whole second.
#[test]
fn route_ages_compare_as_instants_with_offsets_and_fractions() {
    let route = |name: &str, created: &str| {
        format!(
            r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{ name: {name}, namespace: ns, creationTimestamp: "{created}" }}
spec:
  parentRefs: [{{ name: svc, kind: Service }}]
  rules: [{{ backendRefs: [{{ name: {name}, port: 80 }}] }}]
---"#
        )
    };
    let winner = |a: (&str, &str), b: (&str, &str)| {
        let p = policy(&format!("{}{}", route(a.0, a.1), route(b.0, b.1)));
        let d = p.outbound(&req("GET", "http://svc.ns/", &[]));
        d.route_name().map(str::to_owned)
    };
    // "…T00:30:00-01:00" is 01:30 UTC: newer than "…T01:00:00Z", though it sorts first as text.
    let w = winner(
        ("a", "2024-01-01T00:30:00-01:00"),
        ("b", "2024-01-01T01:00:00Z"),
    );
    assert_eq!(w.as_deref(), Some("b"));
    // "…00.5Z" is half a second after "…00Z", though "." sorts before "Z" as text.
    let w = winner(
        ("a", "2024-01-01T00:00:00.5Z"),
        ("b", "2024-01-01T00:00:00Z"),
    );
    assert_eq!(w.as_deref(), Some("b"));
    // The same instant written two ways is a tie: the name decides.
    let w = winner(
        ("b", "2024-01-01T00:00:00Z"),
        ("a", "2024-01-01T01:00:00+01:00"),
    );
    assert_eq!(w.as_deref(), Some("a"));
    let w = winner(
        ("a", "2024-01-01T00:00:00Z"),
        ("b", "2024-01-01T01:00:00+01:00"),
    );
    assert_eq!(w.as_deref(), Some("a"));
}

#[test]
fn grpc_routes_match_service_and_method() {
    let p = policy(
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: { name: emoji, namespace: emojivoto }
spec:
  parentRefs: [{ name: emoji-svc, kind: Service, port: 8080 }]
  rules:
  - matches: [{ method: { service: emojivoto.v1.EmojiService, method: FindByShortcode } }]
    backendRefs: [{ name: emoji-find, port: 8080 }]
  - matches: [{ method: { service: emojivoto.v1.EmojiService } }]
    backendRefs: [{ name: emoji-any, port: 8080 }]
  - matches: [{ method: { method: Check } }]
    backendRefs: [{ name: health, port: 8080 }]
  - backendRefs: [{ name: emoji-svc, port: 8080 }]
"#,
    );
    let cases = [
        ("/emojivoto.v1.EmojiService/FindByShortcode", "emoji-find"),
        ("/emojivoto.v1.EmojiService/ListAll", "emoji-any"),
        ("/grpc.health.v1.Health/Check", "health"),
        ("/other.Service/Call", "emoji-svc"),
    ];
    for (path, want) in cases {
        let r = req(
            "POST",
            &format!("http://emoji-svc.emojivoto:8080{path}"),
            &[],
        );
        let d = p.outbound(&r);
        assert_eq!(d.backends().next().unwrap().backend.name(), want, "{path}");
        assert!(d.route().unwrap().is_grpc());
    }
}

#[test]
fn timeouts_annotations_override_rules_and_response_is_per_attempt() {
    let p = policy(
        r#"
apiVersion: policy.linkerd.io/v1beta3
kind: HTTPRoute
metadata:
  name: r
  namespace: ns
  annotations:
    timeout.linkerd.io/request: 3s
spec:
  parentRefs: [{ name: svc, kind: Service, group: core }]
  rules:
  - matches: [{ path: { value: /a } }]
    timeouts: { request: 10s, backendRequest: 2s }
  - matches: [{ path: { value: /b } }]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: r2
  namespace: ns
  annotations:
    timeout.linkerd.io/response: 250ms
spec:
  parentRefs: [{ name: svc2, kind: Service }]
  rules:
  - timeouts: { request: 10s, backendRequest: 2s }
---
apiVersion: v1
kind: Service
metadata:
  name: svc3
  namespace: ns
  annotations:
    timeout.linkerd.io/request: 7s
    retry.linkerd.io/http: gateway-error
spec:
  ports: [{ port: 80 }]
"#,
    );
    let t = |url: &str| p.outbound(&req("GET", url, &[])).timeouts();
    let s = Duration::from_secs;
    assert_eq!(t("http://svc.ns/a").request, Some(s(3)));
    assert_eq!(t("http://svc.ns/a").backend_request, Some(s(2)));
    assert_eq!(t("http://svc.ns/b").request, Some(s(3)));
    assert_eq!(t("http://svc.ns/b").backend_request, None);
    assert_eq!(t("http://svc2.ns/").request, Some(s(10)));
    assert_eq!(
        t("http://svc2.ns/").backend_request,
        Some(Duration::from_millis(250))
    );
    // Service annotations apply where no route does.
    assert_eq!(t("http://svc3.ns/").request, Some(s(7)));
    let d = p.outbound(&req("GET", "http://svc3.ns/", &[]));
    let retry = d.retry().unwrap();
    assert_eq!(retry.limit, 1);
    assert_eq!(retry.conditions.http, vec![(502, 504)]);
}

#[test]
fn a_service_profile_makes_httproutes_and_annotations_inert() {
    let p = policy(
        r#"
apiVersion: linkerd.io/v1alpha2
kind: ServiceProfile
metadata: { name: web-svc.emojivoto.svc.cluster.local, namespace: emojivoto }
spec:
  routes:
  - name: GET /api/vote
    condition: { method: GET, pathRegex: /api/vote }
    timeout: 500ms
    isRetryable: true
    responseClasses:
    - condition: { status: { min: 404, max: 404 } }
      isFailure: true
  - name: POST /api/vote
    condition: { method: POST, pathRegex: /api/vote }
    isRetryable: true
  - name: both fields ANDed
    condition: { method: DELETE, pathRegex: /api/.* }
  retryBudget: { retryRatio: 0.5, minRetriesPerSecond: 3, ttl: 20s }
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: ignored
  namespace: emojivoto
  annotations: { timeout.linkerd.io/request: 1s }
spec:
  parentRefs: [{ name: web-svc, kind: Service }]
  rules: [{ backendRefs: [{ name: elsewhere, port: 80 }] }]
"#,
    );
    assert!(
        p.notes().iter().any(|n| n.to_string().contains("inert")),
        "{:?}",
        p.notes()
    );
    let d = p.outbound(&req("GET", "http://web-svc.emojivoto/api/vote", &[]));
    assert_eq!(d.route_name(), Some("GET /api/vote"));
    assert_eq!(d.timeouts().request, Some(Duration::from_millis(500)));
    assert_eq!(d.backends().next().unwrap().backend.name(), "web-svc");
    assert!(d.classify(404, None).is_failure());
    assert!(!d.classify(403, None).is_failure());
    assert!(d.classify(500, None).is_failure());
    let retry = d.retry().unwrap();
    assert!(retry.method_allowed("GET"));
    assert_eq!(retry.budget.retry_ratio, 0.5);
    assert_eq!(retry.budget.min_retries_per_second, 3);
    assert_eq!(retry.budget.ttl, Duration::from_secs(20));
    // A route that names POST explicitly may retry it.
    let d = p.outbound(&req("POST", "http://web-svc.emojivoto/api/vote", &[]));
    assert!(d.retry().unwrap().method_allowed("POST"));
    // Fields of one condition are ANDed.
    let d = p.outbound(&req("GET", "http://web-svc.emojivoto/api/list", &[]));
    assert_eq!(d.route_name(), None);
    let d = p.outbound(&req("DELETE", "http://web-svc.emojivoto/api/list", &[]));
    assert_eq!(d.route_name(), Some("both fields ANDed"));
}

#[test]
fn retries_cover_any_method_as_linkerd_unless_idempotent_only_is_asked_for() {
    let route = |extra: &str| {
        policy(&format!(
            r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: r
  namespace: ns
  annotations: {{ retry.linkerd.io/http: 5xx, retry.linkerd.io/limit: "3", retry.linkerd.io/timeout: 300ms{extra} }}
spec:
  parentRefs: [{{ name: svc, kind: Service }}]
  rules:
  - matches: [{{ path: {{ value: /orders }}, method: POST }}]
  - matches: [{{ path: {{ value: / }} }}]
"#
        ))
    };
    // Linkerd retries a retry.linkerd.io route whatever the method.
    let p = route("");
    let d = p.outbound(&req("POST", "http://svc.ns/orders", &[]));
    let r = d.retry().unwrap();
    assert_eq!(r.limit, 3);
    assert_eq!(r.per_try_timeout, Some(Duration::from_millis(300)));
    assert!(r.method_allowed("POST"));
    let d = p.outbound(&req("POST", "http://svc.ns/other", &[]));
    assert!(d.retry().unwrap().method_allowed("POST"));
    // Ours, asked for: idempotent methods, and POST only where the route names it.
    let p = route(", retry.mesh.io/methods: idempotent");
    let d = p.outbound(&req("POST", "http://svc.ns/orders", &[]));
    assert!(d.retry().unwrap().method_allowed("POST"));
    let d = p.outbound(&req("POST", "http://svc.ns/other", &[]));
    assert!(!d.retry().unwrap().method_allowed("POST"));
    assert!(d.retry().unwrap().method_allowed("GET"));
    let e = MeshPolicy::from_yaml(
        r#"
apiVersion: v1
kind: Service
metadata: { name: svc, namespace: ns, annotations: { retry.linkerd.io/http: 5xx, retry.mesh.io/methods: safe } }
"#,
    )
    .expect_err("an unknown value is refused")
    .to_string();
    assert!(e.contains("\"safe\" is not any or idempotent"), "{e}");
}

#[test]
fn smi_split_with_route_group_applies_only_to_matching_requests() {
    let p = policy(
        r#"
apiVersion: split.smi-spec.io/v1alpha3
kind: TrafficSplit
metadata: { name: ab-test }
spec:
  service: website
  matches: [{ kind: HTTPRouteGroup, name: ab-test }]
  backends:
  - { service: website-v1, weight: 0 }
  - { service: website-v2, weight: 100 }
---
apiVersion: specs.smi-spec.io/v1alpha3
kind: HTTPRouteGroup
metadata: { name: ab-test }
spec:
  matches:
  - name: firefox-users
    headers: { user-agent: ".*Firefox.*" }
"#,
    );
    let ff = req(
        "GET",
        "http://website/",
        &[("User-Agent", "Mozilla/5.0 Firefox/118")],
    );
    let other = req("GET", "http://website/", &[("User-Agent", "curl/8")]);
    assert_eq!(p.sample_backends(&ff, 1000, 3).share("website-v2"), 1.0);
    assert_eq!(p.sample_backends(&ff, 1000, 3).count("website-v1"), 0);
    assert_eq!(p.sample_backends(&other, 1000, 3).share("website"), 1.0);
}

#[test]
fn smi_weights_in_every_form() {
    let cases = [
        // (weights as written, expected shares)
        ("[900m, 100m]", [0.9, 0.1]),
        ("[1, 1000m]", [0.5, 0.5]),
        ("[90, 10]", [0.9, 0.1]),
        ("[1, 0]", [1.0, 0.0]),
        ("[null, 3]", [0.25, 0.75]),
    ];
    for (weights, shares) in cases {
        let w: Vec<weights::W> = weights::parse(weights);
        let yaml = format!(
            "apiVersion: split.smi-spec.io/v1alpha1\nkind: TrafficSplit\nmetadata: {{ name: s, namespace: n }}\nspec:\n  service: apex\n  backends:\n  - {{ service: a{} }}\n  - {{ service: b{} }}\n",
            w[0].field(),
            w[1].field()
        );
        let p = policy(&yaml);
        let s = p.sample_backends(&req("GET", "http://apex.n/", &[]), 20_000, 11);
        for (name, want) in ["a", "b"].iter().zip(shares) {
            let got = s.share(name);
            assert!(
                (got - want).abs() < 0.02,
                "{weights}: {name} got {got}, want {want}"
            );
        }
    }
}

/// A tiny helper so the table above reads like the manifests it stands for.
mod weights {
    pub(crate) struct W(Option<String>);

    impl W {
        pub(crate) fn field(&self) -> String {
            match &self.0 {
                Some(w) => format!(", weight: {w}"),
                None => String::new(),
            }
        }
    }

    pub(crate) fn parse(list: &str) -> Vec<W> {
        list.trim_matches(['[', ']'])
            .split(',')
            .map(|s| s.trim())
            .map(|s| W((s != "null").then(|| s.to_owned())))
            .collect()
    }
}

/// What linkerd2-proxy ignores in a ServiceProfile, mesh ignores too, and says so.
#[test]
fn profile_parts_linkerd2_proxy_ignores_are_ignored_with_a_note() {
    let profile = |ttl: &str, status: &str| {
        policy(&format!(
            r#"
apiVersion: linkerd.io/v1alpha2
kind: ServiceProfile
metadata: {{ name: web.shop.svc.cluster.local, namespace: shop }}
spec:
  retryBudget: {{ retryRatio: 0.2, minRetriesPerSecond: 10, ttl: {ttl} }}
  routes:
  - name: get
    condition: {{ method: GET }}
    isRetryable: true
    responseClasses:
    - condition: {{ status: {status} }}
      isFailure: true
"#
        ))
    };
    let get = req("GET", "http://web.shop/", &[]);
    let p = profile("10s", "{ min: 400, max: 499 }");
    assert!(p.notes().is_empty(), "{:?}", p.notes());
    let d = p.outbound(&get);
    assert!(d.retry().is_some());
    assert_eq!(d.classify(404, None).as_str(), "failure");

    // A budget ttl outside 1s–60s: no retries at all.
    for ttl in ["500ms", "61s"] {
        let p = profile(ttl, "{ min: 400, max: 499 }");
        assert!(p.outbound(&get).retry().is_none(), "ttl {ttl}");
        let notes = format!("{:?}", p.notes());
        assert!(notes.contains("outside 1s–60s"), "{notes}");
    }

    // An open-ended range: the response class is ignored, not read as 400–599.
    let p = profile("10s", "{ min: 400 }");
    assert_eq!(p.outbound(&get).classify(404, None).as_str(), "success");
    let notes = format!("{:?}", p.notes());
    assert!(notes.contains("needs both min and max"), "{notes}");
}

/// GAMMA consumer routes: an HTTPRoute in namespace `shop` whose parent is Service
/// `web.prod` applies to callers in `shop` only, and there instead of `prod`'s own route;
/// callers in `prod` and elsewhere get the producer route, whatever the names sort as.
#[test]
fn consumer_routes_apply_to_their_namespace_only() {
    let p = policy(
        r#"
apiVersion: v1
kind: Service
metadata: { name: web, namespace: prod }
spec: { clusterIP: 10.96.0.20, ports: [{ port: 80 }] }
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: producer, namespace: prod }
spec:
  parentRefs: [{ name: web, kind: Service, group: core, port: 80 }]
  rules: [{ backendRefs: [{ name: web-stable, port: 80 }] }]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: consumer, namespace: ann }
spec:
  parentRefs: [{ name: web, namespace: prod, kind: Service, group: core, port: 80 }]
  rules: [{ backendRefs: [{ name: web-canary, namespace: prod, port: 80 }] }]
"#,
    );
    let get = req("GET", "http://web.prod/", &[]);
    let from = |ns: &str| {
        let cx = mesh_core::NameContext::new(ns);
        p.route_from(&cx, "web.prod", 80, &get)
            .route_name()
            .unwrap_or("default")
            .to_owned()
    };
    assert_eq!(from("ann"), "consumer");
    assert_eq!(from("prod"), "producer");
    assert_eq!(from("zzz"), "producer");
    let web = p.service("web", "prod").unwrap();
    assert_eq!(web.decide(80, &get).route_name(), Some("producer"));
    assert_eq!(
        web.decide_from("ann", 80, &get).route_name(),
        Some("consumer")
    );
}

/// A backend Service absent from the input is noted (it is still sampled); one present is not.
#[test]
fn an_absent_backend_service_is_noted() {
    let p = policy(
        r#"
apiVersion: v1
kind: Service
metadata: { name: web, namespace: shop }
spec: { ports: [{ port: 80 }] }
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: canary, namespace: shop }
spec:
  parentRefs: [{ name: web, kind: Service, group: core, port: 80 }]
  rules:
  - backendRefs: [{ name: web, port: 80, weight: 90 }, { name: web-v2, port: 80, weight: 10 }]
"#,
    );
    let notes: Vec<String> = p.notes().iter().map(ToString::to_string).collect();
    assert_eq!(
        notes
            .iter()
            .filter(|n| n.contains("is not in the input"))
            .count(),
        1,
        "{notes:?}"
    );
    assert!(
        notes
            .iter()
            .any(|n| n.contains("backend Service web-v2.shop")),
        "{notes:?}"
    );
    let get = req("GET", "http://web.shop/", &[]);
    assert!(p.sample_backends(&get, 1_000, 1).share("web-v2") > 0.0);
}

/// `rules[].retry` and `rules[].sessionPersistence` (Gateway API experimental channel) are
/// accepted, as an API server with those CRDs accepts them, and noted as not applied: the
/// route still routes, and no retry policy appears from the field.
#[test]
fn experimental_rule_fields_are_accepted_and_noted_as_not_applied() {
    let p = policy(
        r#"
apiVersion: v1
kind: Service
metadata: { name: web, namespace: shop }
spec: { ports: [{ port: 80 }] }
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: web, namespace: shop }
spec:
  parentRefs: [{ name: web, kind: Service, group: core, port: 80 }]
  rules:
  - backendRefs: [{ name: web, port: 80 }]
    retry: { attempts: 3, codes: [503], backoff: 100ms }
    sessionPersistence: { sessionName: s, type: Cookie }
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: { name: grpc, namespace: shop }
spec:
  parentRefs: [{ name: web, kind: Service, group: core, port: 80 }]
  rules:
  - matches: [{ method: { service: shop.Web } }]
    backendRefs: [{ name: web, port: 80 }]
    sessionPersistence: { type: Header }
"#,
    );
    let notes: Vec<String> = p.notes().iter().map(ToString::to_string).collect();
    let with = |s: &str| notes.iter().filter(|n| n.contains(s)).count();
    assert_eq!(with("spec.rules[0].retry is not applied"), 1, "{notes:?}");
    assert_eq!(
        with("spec.rules[0].sessionPersistence is not applied"),
        2,
        "{notes:?}"
    );
    assert!(
        notes.iter().any(|n| n.contains("retry.linkerd.io")),
        "{notes:?}"
    );
    let d = p.outbound(&req("POST", "http://web.shop/x", &[]));
    assert!(d.retry().is_none());
}

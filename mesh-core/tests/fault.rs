//! Fault injection: mesh's `FaultInjection` (policy.mesh.io/v1alpha1) named by a Gateway API
//! `ExtensionRef` filter: read with each mistake refused by its field, resolved while the
//! route is linked (a missing one answers 500, as Gateway API says), and decided per request
//! from random draws.

use std::time::Duration;

use mesh_core::filter::fault::{AbortStatus, Fault, Share};
use mesh_core::filter::{self, Filter, Outcome, RequestLine};
use mesh_core::{MeshPolicy, PolicyConfig, PolicyIndex, Request};

const SERVICE: &str = r#"
apiVersion: v1
kind: Service
metadata: { name: web, namespace: shop }
spec: { clusterIP: 10.96.0.10, ports: [{ port: 80 }] }
"#;

const ROUTE: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: web, namespace: shop }
spec:
  parentRefs: [{ name: web, kind: Service, group: core, port: 80 }]
  rules:
  - filters:
    - type: ExtensionRef
      extensionRef: { group: policy.mesh.io, kind: FaultInjection, name: flaky }
"#;

fn fault(spec: &str) -> String {
    format!(
        "apiVersion: policy.mesh.io/v1alpha1\nkind: FaultInjection\nmetadata: {{ name: flaky, namespace: shop }}\nspec:\n{spec}"
    )
}

fn policy(docs: &[&str]) -> Result<MeshPolicy, String> {
    MeshPolicy::from_yaml(&docs.join("\n---\n")).map_err(|e| e.to_string())
}

/// The filters of the route `GET http://web.shop/` takes.
fn filters(policy: &MeshPolicy) -> Vec<Filter> {
    let req = Request::new("GET", "http://web.shop/").expect("a request");
    let d = policy.outbound(&req);
    d.route().expect("a route").filters().to_vec()
}

fn plan(filters: &[Filter]) -> Outcome<'_> {
    let line = RequestLine {
        scheme: "http",
        host: "web.shop",
        port: 80,
        path: "/",
        query: None,
    };
    filter::plan(filters, &line)
}

#[test]
fn a_route_applies_the_fault_it_names_and_explain_reads_it() {
    let spec = "  abort: { percentage: 10, httpStatus: 503 }\n  delay: { percentage: 50.5, fixedDelay: 200ms }\n";
    let p = policy(&[SERVICE, ROUTE, &fault(spec)]).expect("compiles");
    let filters = filters(&p);
    let Outcome::Forward(f) = plan(&filters) else {
        panic!("not forwarded")
    };
    let [fault] = f.faults.as_slice() else {
        panic!("one fault: {:?}", f.faults)
    };
    assert_eq!(
        fault.abort.map(|a| (a.status, a.share.percentage())),
        Some((AbortStatus::Http(503), 10.0))
    );
    assert_eq!(
        fault.delay.map(|d| (d.fixed, d.share.percentage())),
        Some((Duration::from_millis(200), 50.5))
    );
    assert_eq!(
        filters[0].to_string(),
        "FaultInjection/flaky: abort 503 for 10 % of requests; delay 200ms for 50.5 %"
    );
    assert!(p.notes().is_empty(), "{:?}", p.notes());
}

#[test]
fn a_missing_fault_injection_answers_500_and_check_says_so() {
    let p = policy(&[SERVICE, ROUTE]).expect("compiles: the reference is resolved when linking");
    let filters = filters(&p);
    assert_eq!(
        plan(&filters),
        Outcome::Unresolved {
            filter: "FaultInjection/flaky".into()
        }
    );
    let notes: Vec<String> = p.notes().iter().map(|n| n.to_string()).collect();
    assert!(
        notes
            .iter()
            .any(|n| n.contains("FaultInjection flaky is not in the input")),
        "{notes:?}"
    );
}

#[test]
fn a_fault_injection_applied_later_relinks_the_route_that_names_it() {
    let value = |yaml: &str| -> serde_json::Value { serde_norway::from_str(yaml).expect("YAML") };
    let mut index = PolicyIndex::new(PolicyConfig::default());
    index.apply(&value(SERVICE)).expect("service");
    index.apply(&value(ROUTE)).expect("route");
    assert!(matches!(
        plan(&filters(&index.snapshot())),
        Outcome::Unresolved { .. }
    ));
    let spec = "  abort: { grpcStatus: 14 }\n";
    index.apply(&value(&fault(spec))).expect("fault");
    let filters = filters(&index.snapshot());
    let Outcome::Forward(f) = plan(&filters) else {
        panic!("not forwarded once the FaultInjection exists")
    };
    assert_eq!(
        f.faults[0].abort.map(|a| a.status),
        Some(AbortStatus::Grpc(14))
    );
}

#[test]
fn each_mistake_is_refused_with_its_field() {
    let cases = [
        ("  {}\n", "spec", "an abort, a delay or both"),
        (
            "  abort: { percentage: 101, httpStatus: 503 }\n",
            "spec.abort.percentage",
            "within 0–100",
        ),
        (
            "  abort: { percentage: -1, httpStatus: 503 }\n",
            "spec.abort.percentage",
            "within 0–100",
        ),
        (
            "  abort: { httpStatus: 99 }\n",
            "spec.abort.httpStatus",
            "200–599",
        ),
        (
            "  abort: { grpcStatus: 0 }\n",
            "spec.abort.grpcStatus",
            "1–16",
        ),
        (
            "  abort: { httpStatus: 503, grpcStatus: 14 }\n",
            "spec.abort",
            "exclusive",
        ),
        (
            "  abort: { percentage: 5 }\n",
            "spec.abort",
            "httpStatus or grpcStatus",
        ),
        (
            "  delay: { percentage: 5 }\n",
            "spec.delay.fixedDelay",
            "missing",
        ),
        (
            "  delay: { fixedDelay: soon }\n",
            "spec.delay.fixedDelay",
            "soon",
        ),
    ];
    for (spec, field, why) in cases {
        let e = policy(&[&fault(spec)]).expect_err(spec);
        assert!(e.contains(field) && e.contains(why), "{spec}: {e}");
    }
}

#[test]
fn extension_refs_to_other_kinds_are_still_refused() {
    let route = ROUTE.replace("kind: FaultInjection", "kind: RateLimit");
    let e = policy(&[SERVICE, &route]).expect_err("another kind");
    assert!(
        e.contains("spec.rules[0].filters[0].extensionRef")
            && e.contains("not an extension this mesh implements"),
        "{e}"
    );
    let route = ROUTE.replace("group: policy.mesh.io", "group: example.com");
    assert!(policy(&[SERVICE, &route]).is_err());
}

#[test]
fn a_grpc_route_names_a_fault_too() {
    let route = ROUTE.replace("kind: HTTPRoute", "kind: GRPCRoute");
    let p = policy(&[SERVICE, &route, &fault("  abort: { grpcStatus: 14 }\n")]).expect("compiles");
    let req = Request::new("POST", "http://web.shop/pkg.Svc/Call").expect("a request");
    let d = p.outbound(&req);
    let filters = d.route().expect("a route").filters();
    assert_eq!(
        filters[0].to_string(),
        "FaultInjection/flaky: abort grpc-status 14 for 100 % of requests"
    );
}

#[test]
fn the_decision_follows_the_draws_and_the_shares() {
    let f = Fault {
        abort: Some(mesh_core::filter::fault::Abort {
            share: Share::from_percentage(25.0).expect("a share"),
            status: AbortStatus::Http(503),
        }),
        delay: Some(mesh_core::filter::fault::Delay {
            share: Share::from_percentage(0.0).expect("a share"),
            fixed: Duration::from_secs(1),
        }),
    };
    // 25 % is 250,000 millionths: draws are read modulo a million.
    let table = [
        (0, Some(AbortStatus::Http(503))),
        (249_999, Some(AbortStatus::Http(503))),
        (250_000, None),
        (1_000_000 + 10, Some(AbortStatus::Http(503))),
        (999_999, None),
    ];
    for (draw, abort) in table {
        let injected = f.decide(draw, 0);
        assert_eq!(injected.abort, abort, "draw {draw}");
        assert_eq!(injected.delay, None, "0 % never delays");
    }
    // Over a uniform sweep, the share hit is the share asked for.
    let share = Share::from_percentage(12.3456).expect("a share");
    let hits = (0..1_000_000u64).filter(|d| share.hit(*d)).count();
    assert_eq!(hits, 123_456);
    assert!(Share::ALL.hit(u64::MAX));
    assert_eq!(Share::from_percentage(100.5), None);
    assert_eq!(Share::from_percentage(f64::NAN), None);
}

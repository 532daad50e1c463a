//! Bad input: every error found, each naming document, resource, field and why; nothing compiled.

use mesh_core::MeshPolicy;

#[test]
fn every_error_in_the_stream_is_reported_and_nothing_compiles() {
    let yaml = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: a, namespace: ns }
spec:
  parentRefs: [{ name: svc, kind: Service, port: 0 }]
  rules:
  - matches: [{ path: { type: Exact, value: "no-slash" } }]
    backendRefs: [{ name: b, port: 80, weight: -1 }]
    timeouts: { request: 1s, backendRequest: 5s }
---
apiVersion: split.smi-spec.io/v1alpha1
kind: TrafficSplit
metadata: { name: s, namespace: ns }
spec:
  service: apex
  backends: [{ service: a, weight: "12x" }]
---
this: [is not, closed
---
apiVersion: linkerd.io/v1alpha2
kind: ServiceProfile
metadata: { name: web.ns.svc.cluster.local, namespace: ns }
spec:
  routes:
  - name: r
    condition: {}
    responseClasses:
    - condition: { status: { min: 600 } }
---
apiVersion: policy.linkerd.io/v9
kind: Server
metadata: { name: srv, namespace: ns }
spec: {}
---
apiVersion: policy.linkerd.io/v1beta1
kind: Server
metadata: { name: srv2, namespace: ns }
spec:
  podSelector: { matchLabels: {} }
  port: "Not_A_Name"
---
apiVersion: policy.linkerd.io/v1alpha1
kind: MeshTLSAuthentication
metadata: { name: m, namespace: ns }
spec:
  identities: ["spiffe://cluster.local/ns/UPPER/sa/x"]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: typed, namespace: ns }
spec:
  rules: "not a list"
"#;
    let errs = MeshPolicy::from_yaml(yaml).unwrap_err();
    let text: Vec<String> = errs.errors().iter().map(ToString::to_string).collect();
    let expect = [
        ("document 1", "spec.parentRefs[0].port: 0 is not a port"),
        (
            "document 1",
            "spec.rules[0].matches[0].path.value: \"no-slash\" must start with '/'",
        ),
        (
            "document 1",
            "spec.rules[0].backendRefs[0].weight: -1 is not a weight",
        ),
        ("document 1", "spec.rules[0].timeouts.backendRequest"),
        (
            "document 2",
            "spec.backends[0].weight: \"12x\" is not a weight",
        ),
        ("document 3", "not valid YAML"),
        (
            "document 4",
            "spec.routes[0].condition: a request match must have a field set",
        ),
        (
            "document 4",
            "range min and max must be between 100 and 599",
        ),
        (
            "document 5",
            "apiVersion: policy.linkerd.io/v9 is not a served version of Server",
        ),
        (
            "document 6",
            "spec.port: \"Not_A_Name\" is neither a port number nor a port name",
        ),
        ("document 7", "spec.identities[0]: invalid identity"),
        (
            "document 8",
            "HTTPRoute/ns/typed: spec.rules: invalid type: string \"not a list\", expected a sequence",
        ),
    ];
    for (doc, want) in expect {
        assert!(
            text.iter()
                .any(|t| t.starts_with(&format!("{doc} ")) && t.contains(want)),
            "missing {doc}: {want:?} in\n{}",
            text.join("\n")
        );
    }
    assert_eq!(text.len(), expect.len(), "{}", text.join("\n"));
}

#[test]
fn typed_errors_carry_the_line_of_the_bad_value() {
    let yaml = "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata:\n  name: r\nspec:\n  rules:\n  - backendRefs:\n    - name: b\n      weight: lots\n";
    let errs = MeshPolicy::from_yaml(yaml).unwrap_err();
    let e = &errs.errors()[0];
    assert_eq!(
        e.field.as_deref(),
        Some("spec.rules[0].backendRefs[0].weight")
    );
    assert_eq!(e.line, Some(10), "{e}");
}

#[test]
fn later_documents_replace_earlier_ones_as_kubectl_apply_would() {
    let yaml = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: r, namespace: ns }
spec:
  parentRefs: [{ name: svc, kind: Service }]
  rules: [{ backendRefs: [{ name: old, port: 80 }] }]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: r, namespace: ns }
spec:
  parentRefs: [{ name: svc, kind: Service }]
  rules: [{ backendRefs: [{ name: new, port: 80 }] }]
"#;
    let p = MeshPolicy::from_yaml(yaml).unwrap();
    assert!(p.notes().iter().any(|n| n.message.contains("replaces")));
    let d = p.outbound(&mesh_core::Request::new("GET", "http://svc.ns/").unwrap());
    let names: Vec<_> = d.backends().map(|b| b.backend.name().to_owned()).collect();
    assert_eq!(names, ["new"]);
}

#[test]
fn unknown_and_istio_kinds_are_skipped_with_a_note() {
    let yaml = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: v }
---
apiVersion: example.com/v1
kind: Widget
metadata: { name: w }
---
---
"#;
    let p = MeshPolicy::from_yaml(yaml).unwrap();
    let notes: Vec<String> = p.notes().iter().map(ToString::to_string).collect();
    assert!(
        notes[0].contains("Istio kind skipped; use a Gateway API HTTPRoute"),
        "{notes:?}"
    );
    assert!(notes[1].contains("not a kind the mesh reads"), "{notes:?}");
}

#[test]
fn deep_nesting_is_refused_before_it_is_parsed() {
    // 100,000 levels in 200 KB: the YAML parser alone took a minute on this.
    let deep = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{ name: ok }}\n---\n\
         apiVersion: v1\nkind: ConfigMap\nmetadata: {{ name: deep }}\ndata: {}{}\n",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let errs = MeshPolicy::from_yaml(&deep).unwrap_err();
    let [e] = errs.errors() else { panic!("{errs}") };
    assert_eq!(e.origin.document, 2, "{e}");
    assert_eq!(e.line, Some(8), "{e}");
    assert!(
        e.message.contains(&format!(
            "nested more than {} levels",
            mesh_core::manifest::MAX_DEPTH
        )),
        "{e}"
    );
    // Indentation and `- ` indicators nest as well as brackets do.
    let dashes = format!("items:\n{}x\n", "- ".repeat(100_000));
    assert!(
        MeshPolicy::from_yaml(&dashes)
            .unwrap_err()
            .to_string()
            .contains("nested more than")
    );
}

#[test]
fn route_lists_are_capped_where_the_gateway_api_caps_them() {
    let route = |rules: &str| {
        format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
             metadata: {{ name: r, namespace: ns }}\nspec:\n  rules:\n{rules}"
        )
    };
    // A million rules (the Gateway API allows 16): refused at the 17th.
    let errs = MeshPolicy::from_yaml(&route(&"  - {}\n".repeat(1_000_000))).unwrap_err();
    let [e] = errs.errors() else { panic!("{errs}") };
    assert_eq!(e.field.as_deref(), Some("spec.rules"), "{e}");
    assert!(e.message.contains("more than 16 items"), "{e}");
    // 65 matches in one rule, where 64 are allowed.
    let matches = format!("  - matches:\n{}", "    - path: { value: / }\n".repeat(65));
    let errs = MeshPolicy::from_yaml(&route(&matches)).unwrap_err();
    assert!(errs.to_string().contains("more than 64 items"), "{errs}");
    // At the caps, the route is fine.
    let full = format!(
        "  - matches:\n{}{}",
        "    - path: { value: / }\n".repeat(64),
        "  - {}\n".repeat(15)
    );
    MeshPolicy::from_yaml(&route(&full)).unwrap();
}

#[test]
fn a_stream_over_the_size_limit_is_refused_whole() {
    let padding = "#".repeat(mesh_core::manifest::MAX_STREAM_BYTES);
    let errs = MeshPolicy::from_yaml(&format!("a: 1\n{padding}\n")).unwrap_err();
    assert!(errs.to_string().contains("at most"), "{errs}");
}

/// The API server never stores a malformed `metav1.Time`; a file that has one is refused, with
/// the field named, rather than ordered by its text.
#[test]
fn a_malformed_creation_timestamp_is_refused_naming_the_field() {
    let yaml = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: r, namespace: ns, creationTimestamp: "2024-01-01 noon" }
spec:
  parentRefs: [{ name: svc, kind: Service }]
"#;
    let e = MeshPolicy::from_yaml(yaml).expect_err("a malformed timestamp");
    let e = &e.0[0];
    assert_eq!(e.field.as_deref(), Some("metadata.creationTimestamp"));
    assert!(
        e.message
            .contains("\"2024-01-01 noon\" is not an RFC 3339 timestamp"),
        "{}",
        e.message
    );
}

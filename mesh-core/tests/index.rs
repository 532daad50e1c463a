//! The incremental index against compiling from scratch: whatever the order of applies,
//! refusals and deletes, the decisions are those of the final accepted set; and a bad object
//! in one namespace changes nothing anywhere, its previous good version serving on.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use mesh_core::destination::Destination;
use mesh_core::{
    Identity, InboundTarget, MeshPolicy, ObjectRef, ObjectStatus, Peer, PolicyConfig, PolicyIndex,
    Request,
};
use proptest::prelude::*;

const NAMESPACES: [&str; 2] = ["a", "b"];

/// Every kind the index reads, each with two good versions and one bad one.
const KINDS: [&str; 17] = [
    "Service/web",
    "Service/api",
    "HTTPRoute",
    "TrafficSplit",
    "HTTPRouteGroup",
    "ServiceProfile",
    "Server",
    "ServerAuthorization",
    "AuthorizationPolicy",
    "MeshTLSAuthentication",
    "NetworkAuthentication",
    "HTTPLocalRateLimitPolicy",
    "EndpointSlice",
    "Pod",
    "Namespace",
    "Deployment",
    "GRPCRoute",
];

/// Looked up by name by other objects: a reference compile applies them first, so that it
/// never depends on the index noticing a name appear after its reader.
const NAMED: [&str; 4] = [
    "HTTPRouteGroup",
    "MeshTLSAuthentication",
    "NetworkAuthentication",
    "Pod",
];

/// One object of `kind` in namespace `ns`: version 0 and 1 are good, 2 is refused.
fn object(kind: &str, ns: &str, version: u8) -> String {
    let n = if ns == "a" { 1 } else { 2 };
    let other = if ns == "a" { "b" } else { "a" };
    let pick = |good0: &str, good1: &str, bad: &str| match version {
        0 => good0.to_owned(),
        1 => good1.to_owned(),
        _ => bad.to_owned(),
    };
    match kind {
        "Service/web" => format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{ name: web, namespace: {ns}{} }}\nspec: {{ clusterIP: {}, selector: {{ app: web }}, ports: [{{ name: http, port: 80, targetPort: 8080 }}] }}\n",
            pick("", ", annotations: { timeout.linkerd.io/request: 3s }", ""),
            pick(&format!("10.96.{n}.10"), &format!("10.96.{n}.10"), "nope"),
        ),
        "Service/api" => format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{ name: api, namespace: {ns}{} }}\nspec: {{ clusterIP: 10.96.{n}.11, ports: [{{ port: {} }}] }}\n",
            pick("", ", annotations: { retry.linkerd.io/http: 5xx }", ""),
            pick("80", "80", "70000"),
        ),
        "HTTPRoute" => format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{ name: web-route, namespace: {ns} }}\nspec:\n  parentRefs: [{{ name: web, kind: Service, group: core, port: 80 }}]\n  rules:\n  - matches: [{{ path: {} }}]\n    backendRefs: [{{ name: api, port: 80 }}]\n  - backendRefs: [{{ name: web, port: 80, weight: 3 }}, {{ name: api, port: 80, weight: 1 }}]\n",
            pick(
                "{ type: PathPrefix, value: /api }",
                "{ type: Exact, value: /split/1 }",
                "{ type: RegularExpression, value: '/api/([' }",
            ),
        ),
        "GRPCRoute" => format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: GRPCRoute\nmetadata: {{ name: api-grpc, namespace: {ns} }}\nspec:\n  parentRefs: [{{ name: api, kind: Service, group: core }}]\n  rules:\n  - matches: [{{ method: {} }}]\n    backendRefs: [{{ name: web, port: 80 }}]\n",
            pick(
                "{ service: shop.Cart, method: Get }",
                "{ service: shop.Cart }",
                "{ type: Sometimes, service: shop.Cart }",
            ),
        ),
        "TrafficSplit" => format!(
            "apiVersion: split.smi-spec.io/v1alpha2\nkind: TrafficSplit\nmetadata: {{ name: web-split, namespace: {ns} }}\nspec:\n  service: web\n  backends: [{{ service: web, weight: {} }}, {{ service: api, weight: 100m }}]\n{}",
            pick("900m", "500m", "-1"),
            pick(
                "",
                "  matches: [{ kind: HTTPRouteGroup, name: web-group }]\n",
                ""
            ),
        ),
        "HTTPRouteGroup" => format!(
            "apiVersion: specs.smi-spec.io/v1alpha4\nkind: HTTPRouteGroup\nmetadata: {{ name: web-group, namespace: {ns} }}\nspec:\n  matches: [{{ name: m, pathRegex: '{}' }}]\n",
            pick("/split/.*", "/other", "("),
        ),
        "ServiceProfile" => format!(
            "apiVersion: linkerd.io/v1alpha2\nkind: ServiceProfile\nmetadata: {{ name: api.{ns}.svc.cluster.local, namespace: {ns} }}\nspec:\n  routes:\n  - name: slow\n    condition: {{ method: POST, pathRegex: /slow }}\n    timeout: {}\n    isRetryable: {}\n",
            pick("1s", "2s", "soon"),
            pick("false", "true", "false"),
        ),
        "Server" => format!(
            "apiVersion: policy.linkerd.io/v1beta3\nkind: Server\nmetadata: {{ name: web-http, namespace: {ns}, labels: {{ tier: front }} }}\nspec: {{ podSelector: {{ matchLabels: {{ app: web }} }}, port: {}, accessPolicy: {} }}\n",
            pick("8080", "http", "0"),
            pick("deny", "all-authenticated", "deny"),
        ),
        "ServerAuthorization" => format!(
            "apiVersion: policy.linkerd.io/v1beta1\nkind: ServerAuthorization\nmetadata: {{ name: web-auth, namespace: {ns} }}\nspec:\n  server: {}\n  client: {}\n",
            pick(
                "{ name: web-http }",
                "{ selector: { matchLabels: { tier: front } } }",
                "{ name: web-http }"
            ),
            pick(
                "{ meshTLS: { serviceAccounts: [{ name: web }] } }",
                "{ unauthenticated: true }",
                "{}",
            ),
        ),
        "AuthorizationPolicy" => format!(
            "apiVersion: policy.linkerd.io/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {{ name: web-policy, namespace: {ns} }}\nspec:\n  targetRef: {}\n  requiredAuthenticationRefs: [{}]\n",
            pick(
                "{ group: policy.linkerd.io, kind: Server, name: web-http }",
                &format!("{{ kind: Namespace, name: {ns} }}"),
                "{ kind: Pod, name: web-pod }",
            ),
            pick(
                "{ group: policy.linkerd.io, kind: MeshTLSAuthentication, name: web-ids }",
                "{ group: policy.linkerd.io, kind: NetworkAuthentication, name: nets }",
                "{ kind: MeshTLSAuthentication, name: web-ids }",
            ),
        ),
        "MeshTLSAuthentication" => format!(
            "apiVersion: policy.linkerd.io/v1alpha1\nkind: MeshTLSAuthentication\nmetadata: {{ name: web-ids, namespace: {ns} }}\nspec: {}\n",
            pick(
                &format!(
                    "{{ identities: ['web.{other}.serviceaccount.identity.linkerd.cluster.local'] }}"
                ),
                "{ identityRefs: [{ kind: ServiceAccount, name: api }] }",
                "{ identityRefs: [{ kind: Foo, name: api }] }",
            ),
        ),
        "NetworkAuthentication" => format!(
            "apiVersion: policy.linkerd.io/v1alpha1\nkind: NetworkAuthentication\nmetadata: {{ name: nets, namespace: {ns} }}\nspec: {{ networks: [{{ cidr: {} }}] }}\n",
            pick("10.0.0.0/8", "192.168.0.0/16", "x"),
        ),
        "HTTPLocalRateLimitPolicy" => format!(
            "apiVersion: policy.linkerd.io/v1alpha1\nkind: HTTPLocalRateLimitPolicy\nmetadata: {{ name: web-rl, namespace: {ns} }}\nspec:\n  targetRef: {{ group: policy.linkerd.io, kind: Server, name: web-http }}\n  total: {{ requestsPerSecond: {} }}\n",
            pick("10", "20", "0"),
        ),
        "EndpointSlice" => format!(
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{ name: web-1, namespace: {ns}, labels: {{ kubernetes.io/service-name: web }} }}\naddressType: IPv4\nports: [{{ name: http, port: 8080 }}]\nendpoints:\n- addresses: [{}]\n  targetRef: {{ kind: Pod, name: web-pod }}\n",
            pick(
                &format!("10.1.{n}.1"),
                &format!("10.1.{n}.1, 10.1.{n}.2"),
                "nope",
            ),
        ),
        "Pod" => format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{ name: web-pod, namespace: {ns}, labels: {{ app: web }} }}\nspec:\n  serviceAccountName: {}\n  containers: {}\n",
            pick("web", "web-v2", "web"),
            pick(
                "[{ name: web, image: web, ports: [{ name: http, containerPort: 8080 }] }]",
                "[{ name: web, image: web, ports: [{ name: http, containerPort: 8080 }], readinessProbe: { httpGet: { path: /ready, port: http } } }]",
                "notalist",
            ),
        ),
        "Namespace" => format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{ name: {ns}, annotations: {{ config.linkerd.io/default-inbound-policy: {} }} }}\n",
            pick("deny", "all-unauthenticated", "sometimes"),
        ),
        "Deployment" => format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{ name: web, namespace: {ns} }}\nspec:\n{}",
            pick(
                "  template:\n    metadata: { labels: { app: web-deploy } }\n    spec: { containers: [{ name: web, image: web, ports: [{ containerPort: 9090 }] }] }\n",
                "  template:\n    metadata: { labels: { app: web-deploy }, annotations: { config.linkerd.io/default-inbound-policy: all-authenticated } }\n    spec: { containers: [{ name: web, image: web, ports: [{ containerPort: 9090 }] }] }\n",
                "  replicas: 1\n",
            ),
        ),
        other => unreachable!("no object for {other}"),
    }
}

fn value(yaml: &str) -> serde_json::Value {
    serde_norway::from_str(yaml).expect("test objects are YAML")
}

/// Every decision the tests compare, for the objects of namespace `ns`, as text.
fn decisions(p: &MeshPolicy, ns: &str) -> BTreeMap<String, String> {
    let n = if ns == "a" { 1 } else { 2 };
    let mut out = BTreeMap::new();
    let requests = [
        ("GET", "/", None),
        ("GET", "/api/x", None),
        ("GET", "/split/1", Some("1")),
        ("POST", "/slow", None),
        ("POST", "/shop.Cart/Get", None),
    ];
    for host in ["web", "api"] {
        for (method, path, canary) in requests {
            let mut req = Request::new(method, &format!("http://{host}.{ns}{path}")).unwrap();
            if let Some(v) = canary {
                req = req.header("x-canary", v);
            }
            let d = p.outbound(&req);
            let backends: Vec<String> = d
                .backends()
                .map(|b| format!("{}:{}", b.backend.service(), b.weight))
                .collect();
            let summary = format!(
                "route={:?} no_route={} backends={backends:?} timeouts={:?} retry={:?} class={:?}",
                d.route_name(),
                d.is_no_route(),
                d.timeouts(),
                d.retry(),
                d.classify(503, None),
            );
            out.insert(format!("outbound {method} {host}.{ns}{path}"), summary);
        }
    }
    let peers = [
        (
            "web-other",
            Some(("web", if ns == "a" { "b" } else { "a" })),
            None,
        ),
        ("api-same", Some(("api", ns)), None),
        ("plain-10", None, Some("10.2.3.4")),
        ("plain-192", None, Some("192.168.1.1")),
    ];
    for port in [8080, 9090] {
        let target = InboundTarget {
            namespace: ns.to_owned(),
            labels: BTreeMap::from([("app".to_owned(), "web".to_owned())]),
            port,
            port_name: (port == 8080).then(|| "http".to_owned()),
            probe_paths: Vec::new(),
            default_policy: p.namespace_default_policy(ns),
        };
        for (name, id, ip) in peers {
            let peer = Peer {
                identity: id.map(|(sa, ns)| Identity::new("cluster.local", ns, sa).unwrap()),
                ip: ip.map(|ip| ip.parse().unwrap()),
            };
            let req = Request::new("GET", &format!("http://web.{ns}/")).unwrap();
            let d = p.authorize(&target, &peer, &req);
            out.insert(format!("inbound {ns}:{port} {name}"), format!("{d:?}"));
        }
    }
    let sets: Vec<String> = (p.endpoints().iter())
        .filter(|s| s.namespace == ns)
        .map(|s| format!("{s:?}"))
        .collect();
    out.insert(format!("endpoints {ns}"), format!("{sets:?}"));
    for addr in [
        format!("10.96.{n}.10:80"),
        format!("10.96.{n}.11:80"),
        format!("10.1.{n}.1:8080"),
        format!("10.1.{n}.2:8080"),
    ] {
        let addr: SocketAddr = addr.parse().unwrap();
        let d = match p.lookup_addr(addr) {
            Destination::Service { service, port } => {
                format!("service {}.{} {port}", service.name(), service.namespace())
            }
            Destination::Endpoint(pod) => format!("endpoint {pod:?}"),
            Destination::Unknown => "unknown".to_owned(),
        };
        out.insert(format!("addr {addr}"), d);
    }
    for w in ["deployment/web", "pod/web-pod"] {
        let t = p.workload_target(ns, w, 8080);
        out.insert(format!("workload {ns} {w}"), format!("{t:?}"));
    }
    let (target, why) = p.inbound_target(&format!("web.{ns}"), 80);
    out.insert(
        format!("inbound target web.{ns}"),
        format!("{target:?} {why:?}"),
    );
    out
}

fn all_decisions(p: &MeshPolicy) -> BTreeMap<String, String> {
    NAMESPACES.iter().flat_map(|ns| decisions(p, ns)).collect()
}

/// One step of a live source.
#[derive(Clone, Debug)]
enum Op {
    Apply { kind: usize, ns: usize, version: u8 },
    Delete { kind: usize, ns: usize },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..KINDS.len(), 0..NAMESPACES.len(), 0u8..3)
            .prop_map(|(kind, ns, version)| Op::Apply { kind, ns, version }),
        1 => (0..KINDS.len(), 0..NAMESPACES.len()).prop_map(|(kind, ns)| Op::Delete { kind, ns }),
    ]
}

fn object_ref(kind: &str, ns: &str) -> ObjectRef {
    let v = value(&object(kind, ns, 0));
    let api = v["apiVersion"].as_str().unwrap_or_default();
    let group = api.rsplit_once('/').map_or("", |(g, _)| g);
    let kind_name = v["kind"].as_str().unwrap_or_default();
    ObjectRef {
        group: group.to_owned(),
        kind: kind_name.to_owned(),
        namespace: if kind_name == "Namespace" {
            String::new()
        } else {
            ns.to_owned()
        },
        name: v["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn any_sequence_decides_as_the_final_accepted_set(ops in prop::collection::vec(op(), 1..40)) {
        let mut index = PolicyIndex::new(PolicyConfig::default());
        // What a from-scratch compile must hold: per object, its accepted version, in the
        // order objects were first accepted (since their last delete).
        let mut accepted: Vec<((usize, usize), u8)> = Vec::new();
        for op in &ops {
            match *op {
                Op::Apply { kind, ns, version } => {
                    let text = object(KINDS[kind], NAMESPACES[ns], version);
                    let result = index.apply(&value(&text));
                    prop_assert_eq!(result.is_ok(), version < 2, "{}", text);
                    if version < 2 {
                        match accepted.iter_mut().find(|(k, _)| *k == (kind, ns)) {
                            Some(slot) => slot.1 = version,
                            None => accepted.push(((kind, ns), version)),
                        }
                    }
                }
                Op::Delete { kind, ns } => {
                    index.delete(&object_ref(KINDS[kind], NAMESPACES[ns]));
                    accepted.retain(|(k, _)| *k != (kind, ns));
                }
            }
        }
        let mut stream: Vec<&((usize, usize), u8)> = accepted.iter().collect();
        stream.sort_by_key(|((kind, _), _)| !NAMED.contains(&KINDS[*kind]));
        let text: Vec<String> = stream
            .iter()
            .map(|((kind, ns), v)| object(KINDS[*kind], NAMESPACES[*ns], *v))
            .collect();
        let fresh = MeshPolicy::from_yaml(&text.join("---\n"))
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let live = index.snapshot();
        prop_assert_eq!(all_decisions(&live), all_decisions(&fresh));
        prop_assert_eq!(live.resource_counts(), fresh.resource_counts());
    }
}

#[test]
fn a_bad_object_changes_nothing_and_its_good_version_serves_on() {
    for (kind, name) in KINDS.iter().enumerate() {
        let mut index = PolicyIndex::new(PolicyConfig::default());
        for k in KINDS {
            for ns in NAMESPACES {
                index.apply(&value(&object(k, ns, 0))).unwrap();
            }
        }
        let before = all_decisions(&index.snapshot());
        let bad = object(KINDS[kind], "a", 2);
        let err = index.apply(&value(&bad));
        assert!(err.is_err(), "{name}: the bad version is refused");
        assert_eq!(
            all_decisions(&index.snapshot()),
            before,
            "{name}: a refused object changes no decision, in its namespace or another"
        );
        let target = object_ref(name, "a");
        assert!(
            matches!(
                index.status(&target),
                Some(ObjectStatus::Refused { previous_serves: true, errors }) if !errors.is_empty()
            ),
            "{name}: refused with its errors, the previous version serving: {:?}",
            index.status(&target)
        );
        assert_eq!(index.refused().count(), 1, "{name}");

        // Fixing it is accepted, and clears the refusal.
        index.apply(&value(&object(name, "a", 1))).unwrap();
        assert!(matches!(
            index.status(&target),
            Some(ObjectStatus::Accepted { .. })
        ));
        assert_eq!(index.refused().count(), 0, "{name}");
        // ...and still leaves namespace b alone.
        let b_before: BTreeMap<_, _> = before
            .iter()
            .filter(|(k, _)| k.contains(" b") || k.contains(".b") || k.contains(".2."))
            .collect();
        let after = all_decisions(&index.snapshot());
        let b_after: BTreeMap<_, _> = after
            .iter()
            .filter(|(k, _)| k.contains(" b") || k.contains(".b") || k.contains(".2."))
            .collect();
        assert_eq!(
            b_after, b_before,
            "{name}: namespace b is untouched by a's fix"
        );
    }
}

#[test]
fn a_first_version_that_is_refused_serves_nothing() {
    let mut index = PolicyIndex::new(PolicyConfig::default());
    let bad = object("HTTPRoute", "a", 2);
    assert!(index.apply(&value(&bad)).is_err());
    let object = object_ref("HTTPRoute", "a");
    assert!(matches!(
        index.status(&object),
        Some(ObjectStatus::Refused {
            previous_serves: false,
            ..
        })
    ));
    assert!(index.snapshot().service("web", "a").is_none());
    // Forgetting it forgets the refusal too.
    assert!(index.delete(&object).is_empty());
    assert!(index.status(&object).is_none());
}

#[test]
fn changes_name_what_an_object_touched() {
    let mut index = PolicyIndex::new(PolicyConfig::default());
    let split = index
        .apply(&value(&object("TrafficSplit", "a", 1)))
        .unwrap();
    assert_eq!(
        split.services.iter().collect::<Vec<_>>(),
        [&("a".to_owned(), "web".to_owned())]
    );
    assert!(!split.workloads && split.endpoints.is_empty());
    // The route group it names reaches the split's Service through the split.
    let group = index
        .apply(&value(&object("HTTPRouteGroup", "a", 0)))
        .unwrap();
    assert!(group.services.contains(&("a".to_owned(), "web".to_owned())));
    // An EndpointSlice touches endpoints only, never policy.
    let slice = index
        .apply(&value(&object("EndpointSlice", "a", 0)))
        .unwrap();
    assert!(!slice.policy_changed());
    assert_eq!(
        slice.endpoints.iter().collect::<Vec<_>>(),
        [&("a".to_owned(), "web".to_owned())]
    );
    // The Pod behind it changes its service account: endpoints and workloads, not policy.
    let pod = index.apply(&value(&object("Pod", "a", 0))).unwrap();
    assert!(pod.workloads && pod.endpoints.contains(&("a".to_owned(), "web".to_owned())));
    assert!(!pod.policy_changed());
    let sets = index.service_endpoints("web", "a");
    assert_eq!(sets.len(), 1);
    assert_eq!(sets[0].addresses[0].service_account.as_deref(), Some("web"));
    // A MeshTLSAuthentication reaches the namespaces whose policies name it.
    index.apply(&value(&object("Server", "b", 0))).unwrap();
    index
        .apply(&value(&object("AuthorizationPolicy", "b", 0)))
        .unwrap();
    let ids = index
        .apply(&value(&object("MeshTLSAuthentication", "b", 0)))
        .unwrap();
    assert_eq!(
        ids.inbound_namespaces.iter().collect::<Vec<_>>(),
        [&"b".to_owned()]
    );
    assert!(ids.services.is_empty());
}

/// The outbound decisions for Service `host` in `ns`, and what its cluster IP resolves to.
fn outbound_decisions(p: &MeshPolicy, ns: &str, host: &str) -> BTreeMap<String, String> {
    let n = if ns == "a" { 1 } else { 2 };
    let ip = if host == "web" { 10 } else { 11 };
    let addr = format!("addr 10.96.{n}.{ip}:80");
    decisions(p, ns)
        .into_iter()
        .filter(|(k, _)| k.contains(&format!(" {host}.{ns}/")) || *k == addr)
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// What a controller sends a client watching a Service: the client's own index, fed only
    /// those objects (their accepted versions, in no particular order), decides every request
    /// to the Service as the controller's whole index does.
    #[test]
    fn a_services_outbound_objects_decide_as_the_whole_index(ops in prop::collection::vec(op(), 1..40)) {
        let mut index = PolicyIndex::new(PolicyConfig::default());
        let mut accepted: BTreeMap<ObjectRef, serde_json::Value> = BTreeMap::new();
        for op in &ops {
            match *op {
                Op::Apply { kind, ns, version } => {
                    let v = value(&object(KINDS[kind], NAMESPACES[ns], version));
                    if index.apply(&v).is_ok() {
                        accepted.insert(object_ref(KINDS[kind], NAMESPACES[ns]), v);
                    }
                }
                Op::Delete { kind, ns } => {
                    let r = object_ref(KINDS[kind], NAMESPACES[ns]);
                    index.delete(&r);
                    accepted.remove(&r);
                }
            }
        }
        let whole = index.snapshot();
        for ns in NAMESPACES {
            for host in ["web", "api"] {
                let mut client = PolicyIndex::new(PolicyConfig::default());
                for r in index.outbound_objects(ns, host) {
                    let doc = accepted.get(&r);
                    prop_assert!(doc.is_some(), "{r:?} is not accepted");
                    if let Some(doc) = doc {
                        prop_assert!(client.apply(doc).is_ok());
                    }
                }
                prop_assert_eq!(
                    outbound_decisions(&client.snapshot(), ns, host),
                    outbound_decisions(&whole, ns, host)
                );
            }
        }
    }
}

#[test]
fn outbound_objects_are_the_services_own_and_what_it_reads() {
    let mut index = PolicyIndex::new(PolicyConfig::default());
    for kind in [
        "HTTPRouteGroup",
        "Service/web",
        "Service/api",
        "TrafficSplit",
        "Server",
        "Pod",
    ] {
        index.apply(&value(&object(kind, "a", 1))).unwrap();
    }
    index.apply(&value(&object("Service/web", "b", 0))).unwrap();
    let objects: std::collections::BTreeSet<String> = (index.outbound_objects("a", "web"))
        .into_iter()
        .map(|r| format!("{}/{}/{}", r.kind, r.namespace, r.name))
        .collect();
    // The split sends to api too: a client needs api's Service (its ports) to ask for its
    // endpoints.
    let expected = [
        "Service/a/web",
        "Service/a/api",
        "HTTPRouteGroup/a/web-group",
        "TrafficSplit/a/web-split",
    ];
    assert_eq!(objects, expected.map(String::from).into());
    let inbound: Vec<String> = (index.inbound_objects("a").into_iter())
        .map(|r| r.kind)
        .collect();
    assert_eq!(inbound, ["Server"]);
    assert!(index.outbound_objects("a", "nope").is_empty());
}

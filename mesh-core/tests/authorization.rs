//! Inbound authorization, as tables of cases written from Linkerd's policy docs.

use mesh_core::filter::Filter;
use mesh_core::{Identity, MeshPolicy, Peer, Request};

const POLICY: &str = r#"
apiVersion: v1
kind: Namespace
metadata:
  name: locked
  annotations: { config.linkerd.io/default-inbound-policy: all-authenticated }
---
apiVersion: v1
kind: Service
metadata: { name: books, namespace: booksapp }
spec:
  selector: { app: books }
  ports: [{ name: http, port: 80, targetPort: service }]
---
apiVersion: apps/v1
kind: Deployment
metadata: { name: books, namespace: booksapp }
spec:
  selector: { matchLabels: { app: books } }
  template:
    metadata: { labels: { app: books, tier: api } }
    spec:
      containers:
      - name: books
        image: books
        ports: [{ name: service, containerPort: 7002 }, { name: admin, containerPort: 9990 }]
        livenessProbe: { httpGet: { path: /ping, port: service } }
        readinessProbe: { httpGet: { path: /ready, port: 7002 } }
---
apiVersion: policy.linkerd.io/v1beta3
kind: Server
metadata: { name: books-http, namespace: booksapp, labels: { api: internal } }
spec:
  podSelector: { matchLabels: { app: books } }
  port: service
  proxyProtocol: HTTP/1
---
apiVersion: policy.linkerd.io/v1beta1
kind: HTTPRoute
metadata: { name: books-read, namespace: booksapp }
spec:
  parentRefs: [{ name: books-http, kind: Server, group: policy.linkerd.io }]
  rules:
  - matches: [{ path: { value: /books }, method: GET }]
---
apiVersion: policy.linkerd.io/v1beta1
kind: HTTPRoute
metadata: { name: books-write, namespace: booksapp }
spec:
  parentRefs: [{ name: books-http, kind: Server, group: policy.linkerd.io }]
  rules:
  - matches: [{ path: { value: /books }, method: POST }]
---
apiVersion: policy.linkerd.io/v1alpha1
kind: MeshTLSAuthentication
metadata: { name: readers, namespace: booksapp }
spec:
  identities:
  - "*.booksapp.serviceaccount.identity.linkerd.cluster.local"
---
apiVersion: policy.linkerd.io/v1alpha1
kind: MeshTLSAuthentication
metadata: { name: webapp, namespace: booksapp }
spec:
  identityRefs: [{ kind: ServiceAccount, name: webapp }]
---
apiVersion: policy.linkerd.io/v1alpha1
kind: NetworkAuthentication
metadata: { name: office, namespace: booksapp }
spec:
  networks: [{ cidr: 192.0.2.0/24, except: [192.0.2.66/32] }]
---
apiVersion: policy.linkerd.io/v1alpha1
kind: AuthorizationPolicy
metadata: { name: read, namespace: booksapp }
spec:
  targetRef: { group: policy.linkerd.io, kind: HTTPRoute, name: books-read }
  requiredAuthenticationRefs: [{ group: policy.linkerd.io, kind: MeshTLSAuthentication, name: readers }]
---
apiVersion: policy.linkerd.io/v1alpha1
kind: AuthorizationPolicy
metadata: { name: write, namespace: booksapp }
spec:
  targetRef: { group: policy.linkerd.io, kind: HTTPRoute, name: books-write }
  requiredAuthenticationRefs:
  - { group: policy.linkerd.io, kind: MeshTLSAuthentication, name: webapp }
  - { group: policy.linkerd.io, kind: NetworkAuthentication, name: office }
---
apiVersion: policy.linkerd.io/v1beta1
kind: Server
metadata: { name: books-admin, namespace: booksapp }
spec:
  podSelector: { matchExpressions: [{ key: tier, operator: In, values: [api, web] }] }
  port: 9990
---
apiVersion: policy.linkerd.io/v1beta1
kind: ServerAuthorization
metadata: { name: admin-from-cluster, namespace: booksapp }
spec:
  server: { name: books-admin }
  client:
    unauthenticated: true
    networks: [{ cidr: 10.0.0.0/8 }]
---
apiVersion: policy.linkerd.io/v1alpha1
kind: HTTPLocalRateLimitPolicy
metadata: { name: books-rl, namespace: booksapp }
spec:
  targetRef: { group: policy.linkerd.io, kind: Server, name: books-http }
  total: { requestsPerSecond: 100 }
  identity: { requestsPerSecond: 20 }
  overrides:
  - requestsPerSecond: 50
    clientRefs: [{ kind: ServiceAccount, name: webapp, namespace: booksapp }]
"#;

fn id(s: &str) -> Option<Identity> {
    Some(s.parse().unwrap())
}

/// The pod `app: <app>` in `namespace`, reached at `port`.
fn pod(namespace: &str, app: &str, port: u16) -> mesh_core::InboundTarget {
    mesh_core::InboundTarget {
        namespace: namespace.to_owned(),
        labels: [("app".to_owned(), app.to_owned())].into(),
        port,
        ..Default::default()
    }
}

#[test]
fn authorization_table() {
    let p = MeshPolicy::from_yaml(POLICY).unwrap_or_else(|e| panic!("{e}"));
    let (target, why) = p.inbound_target("books.booksapp", 80);
    assert!(why.is_empty(), "{why:?}");
    assert_eq!(target.port, 7002);
    assert_eq!(target.port_name.as_deref(), Some("service"));

    let webapp = "spiffe://cluster.local/ns/booksapp/sa/webapp";
    let authors = "authors.booksapp.serviceaccount.identity.linkerd.cluster.local";
    let outsider = "spiffe://cluster.local/ns/other/sa/bot";
    let office = Some("192.0.2.10".parse().unwrap());
    let blocked = Some("192.0.2.66".parse().unwrap());
    let cases = [
        // (method, path, identity, ip, allowed, by)
        (
            "GET",
            "/books",
            id(authors),
            None,
            true,
            "AuthorizationPolicy/booksapp/read",
        ),
        (
            "GET",
            "/books",
            id(outsider),
            None,
            false,
            "Server/booksapp/books-http",
        ),
        (
            "GET",
            "/books",
            None,
            office,
            false,
            "Server/booksapp/books-http",
        ),
        (
            "POST",
            "/books",
            id(webapp),
            office,
            true,
            "AuthorizationPolicy/booksapp/write",
        ),
        // Both required authentications must hold.
        (
            "POST",
            "/books",
            id(webapp),
            blocked,
            false,
            "Server/booksapp/books-http",
        ),
        (
            "POST",
            "/books",
            id(authors),
            office,
            false,
            "Server/booksapp/books-http",
        ),
        // The Server has routes: a request matching none is refused.
        (
            "DELETE",
            "/books",
            id(webapp),
            office,
            false,
            "Server/booksapp/books-http",
        ),
    ];
    for (method, path, identity, ip, allowed, by) in cases {
        let r = Request::new(method, &format!("http://books.booksapp{path}")).unwrap();
        let peer = Peer {
            identity: identity.clone(),
            ip,
        };
        let d = p.authorize(&target, &peer, &r);
        assert_eq!(
            (d.allowed, d.by.to_string().as_str()),
            (allowed, by),
            "{method} {path} {identity:?} {ip:?}: {}",
            d.reason
        );
    }
}

#[test]
fn probes_defaults_and_selectors() {
    let p = MeshPolicy::from_yaml(POLICY).unwrap();
    let (mut target, _) = p.inbound_target("books.booksapp", 80);

    // The admin port: a Server selected by an expression, open to cluster addresses only.
    target.port = 9990;
    target.port_name = Some("admin".into());
    target.probe_paths.clear();
    let get = Request::new("GET", "http://books.booksapp/metrics").unwrap();
    let inside = Peer {
        identity: None,
        ip: Some("10.1.2.3".parse().unwrap()),
    };
    let outside = Peer {
        identity: None,
        ip: Some("203.0.113.5".parse().unwrap()),
    };
    assert!(p.authorize(&target, &inside, &get).allowed);
    let d = p.authorize(&target, &outside, &get);
    assert!(!d.allowed, "{}", d.reason);

    // A port no Server selects falls back to the cluster default (all-unauthenticated).
    target.port = 1234;
    target.port_name = None;
    let d = p.authorize(&target, &outside, &get);
    assert_eq!(
        (d.allowed, d.by.to_string().as_str()),
        (true, "default:all-unauthenticated")
    );

    // ...or to the namespace's default policy.
    let mut locked = target.clone();
    locked.namespace = "locked".into();
    locked.default_policy = None;
    let (t2, _) = p.inbound_target("nothing.locked", 1234);
    assert_eq!(
        t2.default_policy,
        Some(mesh_core::authz::DefaultPolicy::AllAuthenticated)
    );
    let d = p.authorize(&t2, &outside, &get);
    assert_eq!(
        (d.allowed, d.by.to_string().as_str()),
        (false, "default:all-authenticated")
    );
    // Kubelet probes are allowed even there.
    let mut t3 = t2.clone();
    t3.probe_paths = vec!["/live".into()];
    let probe = Request::new("GET", "http://nothing.locked:1234/live").unwrap();
    assert_eq!(
        p.authorize(&t3, &outside, &probe).by,
        mesh_core::authz::DecidedBy::Probe
    );
}

#[test]
fn rate_limit_policy_attaches_to_its_server() {
    let p = MeshPolicy::from_yaml(POLICY).unwrap();
    let (target, _) = p.inbound_target("books.booksapp", 80);
    let r = Request::new("GET", "http://books.booksapp/books").unwrap();
    let webapp = id("spiffe://cluster.local/ns/booksapp/sa/webapp");
    let peer = Peer {
        identity: webapp.clone(),
        ip: None,
    };
    let d = p.authorize(&target, &peer, &r);
    let rl = d.rate_limit.expect("rate limit");
    assert_eq!(rl.total, Some(100));
    assert_eq!(rl.per_identity_limit(webapp.as_ref()), Some(50));
    assert_eq!(
        rl.per_identity_limit(id("spiffe://cluster.local/ns/booksapp/sa/x").as_ref()),
        Some(20)
    );
}

#[test]
fn emojivoto_policy_fixture_in_the_repo_style() {
    // The shape of Linkerd's published emojivoto policy: ServerAuthorization by label selector.
    let p = MeshPolicy::from_yaml(
        r#"
apiVersion: policy.linkerd.io/v1beta1
kind: Server
metadata: { namespace: emojivoto, name: emoji-grpc, labels: { emojivoto/api: internal-grpc } }
spec:
  podSelector: { matchLabels: { app: emoji-svc } }
  port: grpc
  proxyProtocol: gRPC
---
apiVersion: policy.linkerd.io/v1beta1
kind: ServerAuthorization
metadata: { namespace: emojivoto, name: internal-grpc }
spec:
  server: { selector: { matchLabels: { emojivoto/api: internal-grpc } } }
  client: { meshTLS: { serviceAccounts: [{ name: web }] } }
"#,
    )
    .unwrap();
    let target = mesh_core::InboundTarget {
        namespace: "emojivoto".into(),
        labels: [("app".to_owned(), "emoji-svc".to_owned())].into(),
        port: 8080,
        port_name: Some("grpc".into()),
        ..Default::default()
    };
    let r = Request::new(
        "POST",
        "http://emoji-svc.emojivoto:8080/emojivoto.v1.EmojiService/ListAll",
    )
    .unwrap();
    let web = Peer {
        identity: id("spiffe://cluster.local/ns/emojivoto/sa/web"),
        ip: None,
    };
    let voting = Peer {
        identity: id("spiffe://cluster.local/ns/emojivoto/sa/voting"),
        ip: None,
    };
    assert!(p.authorize(&target, &web, &r).allowed);
    assert!(!p.authorize(&target, &voting, &r).allowed);
    assert!(!p.authorize(&target, &Peer::default(), &r).allowed);
}

/// Linkerd refuses a policy that reaches into another namespace; so do we, per object, so a
/// live index keeps the rest and a file is refused whole.
#[test]
fn policy_never_reaches_across_namespaces() {
    let cases = [
        (
            r#"
apiVersion: policy.linkerd.io/v1alpha1
kind: AuthorizationPolicy
metadata: { name: open-up, namespace: attacker }
spec:
  targetRef: { kind: Namespace, name: emojivoto }
  requiredAuthenticationRefs: []
"#,
            "spec.targetRef.name",
        ),
        (
            r#"
apiVersion: policy.linkerd.io/v1alpha1
kind: AuthorizationPolicy
metadata: { name: open-up, namespace: attacker }
spec:
  targetRef: { group: policy.linkerd.io, kind: Server, name: web-http, namespace: emojivoto }
  requiredAuthenticationRefs: []
"#,
            "spec.targetRef.namespace",
        ),
        (
            r#"
apiVersion: policy.linkerd.io/v1alpha1
kind: HTTPLocalRateLimitPolicy
metadata: { name: throttle, namespace: attacker }
spec:
  targetRef: { group: policy.linkerd.io, kind: Server, name: web-http, namespace: emojivoto }
  total: { requestsPerSecond: 1 }
"#,
            "spec.targetRef.namespace",
        ),
    ];
    for (yaml, field) in cases {
        let e = MeshPolicy::from_yaml(yaml)
            .expect_err("refused")
            .to_string();
        assert!(e.contains(field), "want {field} in:\n{e}");
        assert!(e.contains("may target only its own namespace"), "{e}");
    }
    let own = r#"
apiVersion: policy.linkerd.io/v1alpha1
kind: AuthorizationPolicy
metadata: { name: all, namespace: emojivoto }
spec:
  targetRef: { kind: Namespace, name: emojivoto }
  requiredAuthenticationRefs: []
"#;
    assert!(MeshPolicy::from_yaml(own).is_ok());
}

/// Two Servers select the same pod port: the older applies (then the first by name), as in
/// Linkerd, whatever order they were written or applied in; `check` notes the other.
#[test]
fn of_two_servers_on_one_port_the_oldest_applies() {
    let server = |name: &str, created: Option<&str>, access: &str| {
        let created = created.map_or(String::new(), |c| format!(", creationTimestamp: \"{c}\""));
        format!(
            r#"
apiVersion: policy.linkerd.io/v1beta3
kind: Server
metadata: {{ name: {name}, namespace: shop{created} }}
spec:
  podSelector: {{ matchLabels: {{ app: web }} }}
  port: http
  accessPolicy: {access}
---"#
        )
    };
    let workload = r#"
apiVersion: apps/v1
kind: Deployment
metadata: { name: web, namespace: shop }
spec:
  selector: { matchLabels: { app: web } }
  template:
    metadata: { labels: { app: web } }
    spec:
      containers: [{ name: web, image: web, ports: [{ name: http, containerPort: 8080 }] }]
"#;
    let decide = |yaml: String| {
        let p = MeshPolicy::from_yaml(&yaml).unwrap_or_else(|e| panic!("{e}"));
        let target = p
            .workload_target("shop", "deployment/web", 8080)
            .expect("the workload");
        let peer = Peer::default();
        let req = Request::new("GET", "http://web.shop:8080/").unwrap();
        let d = p.authorize(&target, &peer, &req);
        let notes = format!("{:?}", p.notes());
        (d.allowed, notes)
    };
    // The newer one is written first; the older one (which allows everyone) applies.
    let (allowed, notes) = decide(format!(
        "{}{}{workload}",
        server("newer", Some("2026-02-01T00:00:00Z"), "deny"),
        server("older", Some("2025-01-01T00:00:00Z"), "all-unauthenticated"),
    ));
    assert!(allowed, "the older Server applies");
    assert!(notes.contains("as Server older does"), "{notes}");
    // Without timestamps (a file): the first by name.
    let (allowed, _) = decide(format!(
        "{}{}{workload}",
        server("b-deny", None, "deny"),
        server("a-open", None, "all-unauthenticated"),
    ));
    assert!(allowed, "a-open comes first by name");
    // Ages compare as instants: "…T00:30:00-01:00" (01:30 UTC) is newer than "…T01:00:00Z",
    // and "…00.5Z" is newer than "…00Z", though text comparison says the opposite of both.
    for (newer, older) in [
        ("2025-01-01T00:30:00-01:00", "2025-01-01T01:00:00Z"),
        ("2025-01-01T00:00:00.5Z", "2025-01-01T00:00:00Z"),
    ] {
        let (allowed, notes) = decide(format!(
            "{}{}{workload}",
            server("a-deny", Some(newer), "deny"),
            server("b-open", Some(older), "all-unauthenticated"),
        ));
        assert!(
            allowed,
            "b-open, created {older}, is older than {newer}: {notes}"
        );
    }
}

#[test]
fn a_network_exception_must_lie_inside_its_network() {
    let yaml = r#"
apiVersion: policy.linkerd.io/v1alpha1
kind: NetworkAuthentication
metadata: { name: office, namespace: shop }
spec:
  networks: [{ cidr: 192.0.2.0/24, except: [192.0.2.66/32, 198.51.100.0/24, 192.0.0.0/16] }]
"#;
    let e = MeshPolicy::from_yaml(yaml)
        .expect_err("refused")
        .to_string();
    assert!(
        e.contains("except[1]") && e.contains("198.51.100.0/24 is not inside 192.0.2.0/24"),
        "{e}"
    );
    assert!(
        e.contains("except[2]"),
        "a wider exception is refused too: {e}"
    );
    assert!(!e.contains("except[0]"), "{e}");
}

/// Linkerd's `MeshTLSAuthentication.spec.identities` takes any name, not only service-account
/// identities; a namespace wildcard matches every label of its suffix.
#[test]
fn mesh_tls_identities_take_any_name_and_wildcards_match_every_label() {
    let policy = |identities: &str| {
        format!(
            r#"
apiVersion: policy.linkerd.io/v1beta3
kind: Server
metadata: {{ name: db, namespace: data }}
spec:
  podSelector: {{ matchLabels: {{ app: db }} }}
  port: 5432
---
apiVersion: policy.linkerd.io/v1alpha1
kind: MeshTLSAuthentication
metadata: {{ name: clients, namespace: data }}
spec:
  identities: {identities}
---
apiVersion: policy.linkerd.io/v1alpha1
kind: AuthorizationPolicy
metadata: {{ name: db-clients, namespace: data }}
spec:
  targetRef: {{ group: policy.linkerd.io, kind: Server, name: db }}
  requiredAuthenticationRefs: [{{ group: policy.linkerd.io, kind: MeshTLSAuthentication, name: clients }}]
"#
        )
    };
    let target = pod("data", "db", 5432);
    let admits = |identities: &str, client: &str| {
        let p = MeshPolicy::from_yaml(&policy(identities)).unwrap_or_else(|e| panic!("{e}"));
        let peer = Peer {
            identity: id(client),
            ip: None,
        };
        let req = Request::new("GET", "http://db.data:5432/").unwrap();
        p.authorize(&target, &peer, &req).allowed
    };
    let web = "spiffe://cluster.local/ns/emojivoto/sa/web";
    let cases = [
        // From Linkerd's docs: every account of a namespace, and one account.
        (
            r#"["*.emojivoto.serviceaccount.identity.linkerd.cluster.local"]"#,
            true,
        ),
        (
            r#"["web.emojivoto.serviceaccount.identity.linkerd.cluster.local"]"#,
            true,
        ),
        (r#"["*"]"#, true),
        // Another control plane's names are other names.
        (
            r#"["*.emojivoto.serviceaccount.identity.other.cluster.local"]"#,
            false,
        ),
        (
            r#"["web.emojivoto.serviceaccount.identity.other.cluster.local"]"#,
            false,
        ),
        // Names outside the service-account scheme are accepted; no mesh workload has them.
        (
            r#"["spiffe://cluster.local/vm/db", "db.example.org"]"#,
            false,
        ),
        (
            r#"["spiffe://cluster.local/vm/db", "*.emojivoto.serviceaccount.identity.linkerd.cluster.local"]"#,
            true,
        ),
    ];
    for (identities, want) in cases {
        assert_eq!(admits(identities, web), want, "{identities}");
    }
    // A string no peer can carry is still refused, naming the entry.
    let e = MeshPolicy::from_yaml(&policy(r#"["db.example.org", "not a name"]"#))
        .expect_err("not a name");
    assert_eq!(e.0[0].field.as_deref(), Some("spec.identities[1]"));
}

/// A Server's routes carry the filters Linkerd applies inbound (header modifiers, redirects)
/// into the decision of each request their rules match, once it is allowed; a route with a
/// filter Linkerd does not apply inbound (URLRewrite, RequestMirror) is ignored by the Server,
/// as Linkerd's policy controller ignores it, and `check` says so. A denied request carries
/// none: a redirect is never answered to a client the Server refuses.
#[test]
fn inbound_routes_carry_their_filters() {
    let yaml = r#"
apiVersion: policy.linkerd.io/v1beta3
kind: Server
metadata: { name: web, namespace: shop }
spec:
  podSelector: { matchLabels: { app: web } }
  port: 8080
  accessPolicy: all-authenticated
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: web-in, namespace: shop }
spec:
  parentRefs: [{ name: web, kind: Server, group: policy.linkerd.io }]
  rules:
  - matches: [{ path: { value: /old } }]
    filters:
    - type: RequestRedirect
      requestRedirect: { path: { type: ReplaceFullPath, replaceFullPath: /new }, statusCode: 301 }
  - matches: [{ path: { value: /api } }]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier: { set: [{ name: x-env, value: prod }] }
    - type: ResponseHeaderModifier
      responseHeaderModifier: { remove: [server] }
---
apiVersion: policy.linkerd.io/v1beta3
kind: HTTPRoute
metadata: { name: plain-in, namespace: shop }
spec:
  parentRefs: [{ name: web, kind: Server, group: policy.linkerd.io }]
  rules: [{ matches: [{ path: { value: /plain } }] }]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: rewrite-in, namespace: shop }
spec:
  parentRefs: [{ name: web, kind: Server, group: policy.linkerd.io }]
  rules:
  - matches: [{ path: { value: /rewritten } }]
    filters: [{ type: URLRewrite, urlRewrite: { path: { type: ReplaceFullPath, replaceFullPath: /x } } }]
"#;
    let p = MeshPolicy::from_yaml(yaml).unwrap_or_else(|e| panic!("{e}"));
    let target = pod("shop", "web", 8080);
    let peer = Peer {
        identity: id("spiffe://cluster.local/ns/shop/sa/client"),
        ip: None,
    };
    let kinds = |path: &str| {
        let req = Request::new("GET", &format!("http://web.shop:8080{path}")).unwrap();
        let d = p.decide_inbound(&target, &peer, &req);
        let kinds: Option<Vec<&str>> = d
            .filters
            .as_ref()
            .map(|f| f.iter().map(Filter::kind).collect());
        (
            d.authz.allowed,
            d.authz.route.map(|r| r.name.clone()),
            kinds,
        )
    };
    let cases = [
        (
            "/old",
            (true, Some("web-in"), Some(vec!["RequestRedirect"])),
        ),
        (
            "/api/users",
            (
                true,
                Some("web-in"),
                Some(vec!["RequestHeaderModifier", "ResponseHeaderModifier"]),
            ),
        ),
        ("/plain", (true, Some("plain-in"), None)),
        // Ignored by the Server, so no route of it matches.
        ("/rewritten", (false, None, None)),
    ];
    for (path, (allowed, route, filters)) in cases {
        let got = kinds(path);
        assert_eq!(got.0, allowed, "{path}");
        assert_eq!(got.1.as_deref(), route, "{path}");
        assert_eq!(got.2, filters, "{path}");
    }

    let anonymous = Peer::default();
    let req = Request::new("GET", "http://web.shop:8080/old").unwrap();
    let d = p.decide_inbound(&target, &anonymous, &req);
    assert!(!d.authz.allowed, "{}", d.authz.reason);
    assert!(d.filters.is_none());

    let notes: Vec<String> = p.notes().iter().map(ToString::to_string).collect();
    let filters: Vec<&String> = notes
        .iter()
        .filter(|n| n.contains("filters not applied inbound"))
        .collect();
    assert_eq!(filters.len(), 1, "{notes:?}");
    assert!(
        filters[0].contains("HTTPRoute/shop/rewrite-in"),
        "{filters:?}"
    );
    assert!(filters[0].contains("URLRewrite;"), "{filters:?}");
}

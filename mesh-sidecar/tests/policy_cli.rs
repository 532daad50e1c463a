//! `mesh policy check` and `mesh policy explain`, run as a user runs them.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn mesh(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mesh"))
        .args(args)
        .output()
        .expect("run mesh")
}

fn fixtures() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures");
    if dir.is_dir() {
        Some(dir)
    } else {
        println!("note: {} is absent; skipping", dir.display());
        None
    }
}

fn tmp_yaml(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mesh-policy-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn s(o: &[u8]) -> String {
    String::from_utf8_lossy(o).into_owned()
}

#[test]
fn check_reports_every_file_and_fails_on_invalid_ones() {
    let Some(dir) = fixtures() else { return };
    let out = mesh(&["policy", "check", dir.to_str().unwrap()]);
    let stdout = s(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains(
            "linkerd/emojivoto-policy.yml: ok, 9 resources (5 Server, 4 ServerAuthorization)"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("invalid/httproute-backend-port-out-of-range.yaml: 1 error"),
        "{stdout}"
    );
    assert!(
        stdout.contains("spec.rules[0].backendRefs[0].port: 800080 is not a port (1–65535)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("invalid/deployment-bad-indentation.yaml: 2 errors"),
        "{stdout}"
    );
    assert!(
        stdout.contains("invalid/list-with-null-items.yaml: ok"),
        "{stdout}"
    );

    let valid: Vec<String> = ["linkerd", "smi", "gateway-api", "istio", "apps"]
        .iter()
        .map(|d| dir.join(d).display().to_string())
        .collect();
    let mut args = vec!["policy", "check"];
    args.extend(valid.iter().map(String::as_str));
    let out = mesh(&args);
    assert_eq!(out.status.code(), Some(0), "{}", s(&out.stdout));
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(mesh(&["policy", "check"]).status.code(), Some(2));
    assert_eq!(
        mesh(&["policy", "check", "/no/such/file.yaml"])
            .status
            .code(),
        Some(2)
    );
    let f = tmp_yaml(
        "empty-route.yaml",
        "apiVersion: v1\nkind: Service\nmetadata: {name: a}\n",
    );
    let f = f.to_str().unwrap();
    assert_eq!(
        mesh(&["policy", "explain", f, "--request", "GET"])
            .status
            .code(),
        Some(2)
    );
    assert_eq!(
        mesh(&[
            "policy",
            "explain",
            f,
            "--request",
            "GET http://a",
            "--from",
            "nobody"
        ])
        .status
        .code(),
        Some(2)
    );
    assert_eq!(
        mesh(&[
            "policy",
            "explain",
            f,
            "--request",
            "GET http://a",
            "--header",
            "novalue"
        ])
        .status
        .code(),
        Some(2)
    );
}

#[test]
fn explain_json_for_the_linkerd_and_smi_splits() {
    let Some(dir) = fixtures() else { return };
    let cases = [
        (
            "linkerd/httproute-v1beta2-weighted.yaml",
            "GET http://bb.traffic-shift-demo:8080/",
            "bb.traffic-shift-demo",
            "bb-v2.traffic-shift-demo",
        ),
        (
            "smi/linkerd-fault-injection-900m-100m.yaml",
            "GET http://books.booksapp:7000/",
            "books.booksapp",
            "error-injector.booksapp",
        ),
    ];
    for (file, request, main, canary) in cases {
        let f = dir.join(file);
        let out = mesh(&[
            "policy",
            "explain",
            f.to_str().unwrap(),
            "--request",
            request,
            "--samples",
            "10000",
            "-o",
            "json",
        ]);
        assert_eq!(out.status.code(), Some(0), "{}", s(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let main_n = v["samples"][main].as_u64().unwrap();
        let canary_n = v["samples"][canary].as_u64().unwrap();
        assert!((8_800..=9_200).contains(&main_n), "{file}: {v}");
        assert!((800..=1_200).contains(&canary_n), "{file}: {v}");
        assert_eq!(v["backends"].as_array().unwrap().len(), 2);
        assert!(v["authorization"].is_null());
        assert!(v["timeout_ms"]["request"].is_null());
        assert_eq!(v["retry"]["retryable"], false);
    }
    let f = dir.join("linkerd/httproute-v1beta2-weighted.yaml");
    let out = mesh(&[
        "policy",
        "explain",
        f.to_str().unwrap(),
        "--request",
        "GET http://bb.traffic-shift-demo:8080/",
        "-o",
        "json",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["route"]["name"], "bb-route");
    assert_eq!(
        v["route"]["source"],
        "HTTPRoute/traffic-shift-demo/bb-route"
    );
    assert_eq!(
        v["backends"][0],
        serde_json::json!({"service": "bb.traffic-shift-demo", "port": 8080, "weight": 90})
    );
    assert!(v.get("samples").is_none());
}

#[test]
fn explain_inbound_authorization_and_timeouts() {
    let Some(dir) = fixtures() else { return };
    let policy = dir.join("linkerd/emojivoto-policy.yml");
    let app = dir.join("apps/emojivoto.yml");
    let (p, a) = (policy.to_str().unwrap(), app.to_str().unwrap());
    let run = |from: &[&str]| {
        let mut args = vec![
            "policy",
            "explain",
            p,
            a,
            "--inbound",
            "--request",
            "POST http://voting-svc.emojivoto:8080/emojivoto.v1.VotingService/VoteDoughnut",
            "-o",
            "json",
        ];
        args.extend_from_slice(from);
        let out = mesh(&args);
        assert_eq!(out.status.code(), Some(0), "{}", s(&out.stderr));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let v = run(&[
        "--from",
        "web.emojivoto.serviceaccount.identity.linkerd.cluster.local",
    ]);
    assert_eq!(v["authorization"]["allowed"], true, "{v}");
    assert_eq!(
        v["authorization"]["by"],
        "ServerAuthorization/emojivoto/internal-grpc"
    );
    let v = run(&[
        "--from",
        "spiffe://cluster.local/ns/emojivoto/sa/voting",
        "--client-ip",
        "10.1.1.1",
    ]);
    assert_eq!(v["authorization"]["allowed"], false, "{v}");
    assert!(
        v["authorization"]["reason"]
            .as_str()
            .unwrap()
            .contains("voting"),
        "{v}"
    );

    let t = dir.join("linkerd/httproute-timeout-annotations.yaml");
    let out = mesh(&[
        "policy",
        "explain",
        t.to_str().unwrap(),
        "--request",
        "GET http://schlep.schlep/",
        "-o",
        "json",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["timeout_ms"],
        serde_json::json!({"request": 2000, "backend_request": 1000})
    );

    // The human table says the same.
    let out = mesh(&[
        "policy",
        "explain",
        t.to_str().unwrap(),
        "--request",
        "GET http://schlep.schlep/",
    ]);
    let text = s(&out.stdout);
    assert!(
        text.contains("request 2000ms, backend request 1000ms"),
        "{text}"
    );
}

#[test]
fn explain_refuses_invalid_input_naming_the_file() {
    let bad = tmp_yaml(
        "bad-route.yaml",
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r}\nspec:\n  rules:\n  - backendRefs: [{name: x, port: 70000}]\n",
    );
    let out = mesh(&[
        "policy",
        "explain",
        bad.to_str().unwrap(),
        "--request",
        "GET http://x/",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = s(&out.stderr);
    assert!(
        err.contains("bad-route.yaml") && err.contains("70000 is not a port"),
        "{err}"
    );
}

/// A Service with a ClusterIP in `shop`, a 90/10 HTTPRoute on it, and a namesake in `default`.
const SHOP: &str = r#"
apiVersion: v1
kind: Service
metadata: { name: web, namespace: shop }
spec: { clusterIP: 10.96.7.10, ports: [{ name: http, port: 80 }] }
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: web-split, namespace: shop }
spec:
  parentRefs: [{ name: web, kind: Service, group: core, port: 80 }]
  rules:
  - backendRefs:
    - { name: web-v1, port: 80, weight: 90 }
    - { name: web-v2, port: 80, weight: 10 }
---
apiVersion: v1
kind: Service
metadata: { name: api, namespace: shop }
spec: { ports: [{ port: 80 }] }
---
apiVersion: v1
kind: Service
metadata: { name: api, namespace: default }
spec: { ports: [{ port: 80 }] }
"#;

fn explain_json(file: &Path, request: &str, extra: &[&str]) -> serde_json::Value {
    let mut args = vec![
        "policy",
        "explain",
        file.to_str().unwrap(),
        "--request",
        request,
        "--samples",
        "10000",
        "-o",
        "json",
    ];
    args.extend_from_slice(extra);
    let out = mesh(&args);
    assert_eq!(out.status.code(), Some(0), "{}", s(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn explain_a_cluster_ip_and_short_names_as_the_full_name() {
    let f = tmp_yaml("shop.yaml", SHOP);
    let full = explain_json(&f, "GET http://web.shop.svc.cluster.local/", &[]);
    assert_eq!(full["service"], "web.shop", "{full}");
    assert_eq!(full["route"]["name"], "web-split", "{full}");
    let same = |v: &serde_json::Value| {
        assert_eq!(v["service"], full["service"], "{v}");
        assert_eq!(v["route"], full["route"], "{v}");
        assert_eq!(v["backends"], full["backends"], "{v}");
        assert_eq!(v["samples"], full["samples"], "{v}");
    };
    let by_ip = explain_json(&f, "GET http://10.96.7.10/", &[]);
    same(&by_ip);
    assert_eq!(by_ip["destination"]["by"], "address", "{by_ip}");
    let short = explain_json(&f, "GET http://web/", &["--from-namespace", "shop"]);
    same(&short);
    assert_eq!(short["destination"]["from_namespace"], "shop");
    assert_eq!(short["destination"]["assumed"], false);
    same(&explain_json(&f, "GET http://web.shop/", &[]));
    // Without --from-namespace, a name only one namespace has is assumed to be there, and the
    // table says so.
    let assumed = explain_json(&f, "GET http://web/", &[]);
    same(&assumed);
    assert_eq!(assumed["destination"]["assumed"], true);
    let out = mesh(&[
        "policy",
        "explain",
        f.to_str().unwrap(),
        "--request",
        "GET http://web/",
    ]);
    let table = s(&out.stdout);
    assert!(
        table.contains("by name, from namespace shop (assumed"),
        "{table}"
    );
    // From another namespace, `web` is no Service; `api` is each namespace's own.
    let other = explain_json(&f, "GET http://web/", &["--from-namespace", "other"]);
    assert!(other["service"].is_null(), "{other}");
    let api = explain_json(&f, "GET http://api/", &["--from-namespace", "shop"]);
    assert_eq!(api["service"], "api.shop");
    // An address nobody knows goes where it was addressed.
    let unknown = explain_json(&f, "GET http://10.96.7.99:8080/", &[]);
    assert!(unknown["service"].is_null(), "{unknown}");
    assert_eq!(unknown["backends"][0]["service"], "10.96.7.99");
    assert_eq!(unknown["backends"][0]["port"], 8080);
}

const FILTERS: &str = r#"
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
  - matches: [{ path: { type: PathPrefix, value: /old } }]
    filters:
    - type: RequestRedirect
      requestRedirect: { scheme: https, statusCode: 308, path: { type: ReplacePrefixMatch, replacePrefixMatch: /new } }
  - matches: [{ path: { type: PathPrefix, value: /api } }]
    filters:
    - type: URLRewrite
      urlRewrite: { hostname: api.internal, path: { type: ReplacePrefixMatch, replacePrefixMatch: /v2 } }
    - type: RequestHeaderModifier
      requestHeaderModifier: { set: [{ name: x-env, value: prod }], remove: [x-debug] }
    - type: ResponseHeaderModifier
      responseHeaderModifier: { add: [{ name: x-served-by, value: mesh }] }
    - type: RequestMirror
      requestMirror: { backendRef: { name: shadow, port: 80 }, percent: 10 }
    backendRefs: [{ name: web, port: 80 }]
"#;

#[test]
fn explain_shows_the_filters_and_what_the_request_becomes() {
    let f = tmp_yaml("filters", FILTERS);
    let redirect = explain_json(&f, "GET http://web.shop/old/page?x=1", &[]);
    assert_eq!(
        redirect["after_filters"]["redirect"],
        serde_json::json!({"status": 308, "location": "https://web.shop/new/page?x=1"}),
        "{redirect}"
    );
    let out = mesh(&[
        "policy",
        "explain",
        f.to_str().unwrap(),
        "--request",
        "GET http://web.shop/api/users?page=2",
        "--header",
        "x-debug: 1",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", s(&out.stderr));
    let text = s(&out.stdout);
    for want in [
        "URLRewrite hostname=api.internal path ReplacePrefixMatch /api → /v2",
        "forwarded as    GET api.internal:80/v2/users?page=2",
        "with headers    x-env: prod",
        "response        add x-served-by: mesh",
        "mirrored        RequestMirror to shadow.shop:80 (10/100 of requests)",
    ] {
        assert!(text.contains(want), "want {want:?} in:\n{text}");
    }
    assert!(
        !text.contains("x-debug: 1"),
        "removed header still shown:\n{text}"
    );
}

/// A workload `web.shop` (Service port 80 → pod port 8080) whose Server's route redirects
/// `/old` and changes the headers of `/api`, for authenticated clients only.
const INBOUND_FILTERS: &str = r#"
apiVersion: v1
kind: Service
metadata: { name: web, namespace: shop }
spec: { selector: { app: web }, ports: [{ port: 80, targetPort: 8080 }] }
---
apiVersion: apps/v1
kind: Deployment
metadata: { name: web, namespace: shop }
spec:
  selector: { matchLabels: { app: web } }
  template:
    metadata: { labels: { app: web } }
    spec: { containers: [{ name: web, image: web, ports: [{ containerPort: 8080 }] }] }
---
apiVersion: policy.linkerd.io/v1beta3
kind: Server
metadata: { name: web, namespace: shop }
spec: { podSelector: { matchLabels: { app: web } }, port: 8080, accessPolicy: all-authenticated }
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
      requestRedirect: { path: { type: ReplacePrefixMatch, replacePrefixMatch: /new }, statusCode: 301 }
  - matches: [{ path: { value: /api } }]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier: { set: [{ name: x-env, value: prod }], remove: [x-debug] }
    - type: ResponseHeaderModifier
      responseHeaderModifier: { add: [{ name: x-served-by, value: mesh }] }
"#;

/// Inbound, `explain` shows the filters of the Server's route that admits the request and
/// what the application gets (or the redirect the proxy answers); a denied request gets its
/// 403 unchanged, so no filters.
#[test]
fn explain_inbound_shows_the_server_routes_filters() {
    let f = tmp_yaml("inbound-filters", INBOUND_FILTERS);
    let client = ["--from", "spiffe://cluster.local/ns/shop/sa/client"];
    let explain = |request: &str, extra: &[&str]| {
        let mut args = vec!["policy", "explain", f.to_str().unwrap(), "--inbound"];
        args.extend_from_slice(&["--request", request]);
        args.extend_from_slice(extra);
        let out = mesh(&args);
        assert_eq!(out.status.code(), Some(0), "{}", s(&out.stderr));
        s(&out.stdout)
    };
    let text = explain(
        "GET http://web.shop/api/users?page=2",
        &[&client[..], &["--header", "x-debug: 1"]].concat(),
    );
    for want in [
        "filters         RequestHeaderModifier set x-env: prod, remove x-debug",
        "forwarded as    GET web.shop:80/api/users?page=2",
        "with headers    x-env: prod",
        "response        add x-served-by: mesh",
    ] {
        assert!(text.contains(want), "want {want:?} in:\n{text}");
    }
    assert!(
        !text.contains("x-debug: 1"),
        "removed header shown:\n{text}"
    );

    let text = explain("GET http://web.shop/old/page?x=1", &client);
    let want = "answer          redirect 301 to http://web.shop/new/page?x=1";
    assert!(text.contains(want), "want {want:?} in:\n{text}");

    let denied = explain("GET http://web.shop/old/page", &["-o", "json"]);
    let v: serde_json::Value = serde_json::from_str(&denied).unwrap();
    assert_eq!(v["authorization"]["allowed"], false, "{v}");
    assert_eq!(v["filters"], serde_json::json!([]), "{v}");
    assert!(v["after_filters"].is_null(), "{v}");
}

#[test]
fn explain_classifies_any_status_asked_for() {
    let f = tmp_yaml("status", FILTERS);
    let v = explain_json(
        &f,
        "GET http://web.shop/api/x",
        &["--status", "429", "--status", "502"],
    );
    assert_eq!(
        v["classification"],
        serde_json::json!({"429": "success", "502": "failure"}),
        "{v}"
    );
    let out = mesh(&[
        "policy",
        "explain",
        f.to_str().unwrap(),
        "--request",
        "GET http://web.shop/api/x",
        "--status",
        "700",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", s(&out.stderr));
}

const CLIENT_SIDE_PROFILE: &str = r#"
apiVersion: v1
kind: Service
metadata: { name: web, namespace: prod }
spec: { clusterIP: 10.96.0.20, ports: [{ port: 80 }] }
---
apiVersion: linkerd.io/v1alpha2
kind: ServiceProfile
metadata: { name: web.prod.svc.cluster.local, namespace: prod }
spec:
  routes:
  - { name: server-get, condition: { method: GET }, timeout: 1s }
---
apiVersion: linkerd.io/v1alpha2
kind: ServiceProfile
metadata: { name: web.prod.svc.cluster.local, namespace: shop }
spec:
  routes:
  - name: shop-get
    condition: { method: GET }
    timeout: 3s
    isRetryable: true
    responseClasses: [{ condition: { status: { min: 429, max: 429 } }, isFailure: true }]
"#;

/// A ServiceProfile in the caller's namespace governs that namespace's calls only; `explain
/// --from-namespace` shows which one applies, by name and by ClusterIP alike.
#[test]
fn explain_from_namespace_shows_the_client_side_profile() {
    let f = tmp_yaml("client-side.yaml", CLIENT_SIDE_PROFILE);
    // (caller's namespace, the profile that applies, its timeout, retried, 429's class)
    let cases = [
        (
            "shop",
            "ServiceProfile/shop/web.prod.svc.cluster.local",
            3000,
            true,
            "failure",
        ),
        (
            "other",
            "ServiceProfile/prod/web.prod.svc.cluster.local",
            1000,
            false,
            "success",
        ),
    ];
    for request in ["GET http://web.prod/x", "GET http://10.96.0.20/x"] {
        for (ns, source, timeout, retried, class) in cases {
            let v = explain_json(&f, request, &["--from-namespace", ns, "--status", "429"]);
            assert_eq!(v["route"]["source"], source, "{v}");
            assert_eq!(v["timeout_ms"]["request"], timeout, "{v}");
            assert_eq!(v["retry"]["retryable"], retried, "{v}");
            assert_eq!(v["classification"]["429"], class, "{v}");
        }
    }
    let out = mesh(&["policy", "check", f.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", s(&out.stderr));
    assert!(s(&out.stdout).contains("client-side"), "{}", s(&out.stdout));
}

/// The summary counts what `check` applies, says what it skipped, calls an empty file empty,
/// and sets the closing count apart from the last file's errors.
#[test]
fn check_summaries_count_only_what_is_applied() {
    let mixed = tmp_yaml(
        "summary-mixed.yaml",
        r#"
apiVersion: v1
kind: ConfigMap
metadata: { name: settings, namespace: shop }
data: { a: b }
---
apiVersion: policy.linkerd.io/v1beta3
kind: Server
metadata: { name: web, namespace: shop }
spec:
  podSelector: { matchLabels: { app: web } }
  port: 8080
"#,
    );
    let empty = tmp_yaml("summary-empty.yaml", "# nothing yet\n---\n");
    let bad = tmp_yaml(
        "summary-bad.yaml",
        "apiVersion: policy.linkerd.io/v1beta3\nkind: Server\nmetadata: { name: x }\nspec: {}\n",
    );
    let path = |p: &Path| p.to_str().unwrap().to_owned();

    let out = mesh(&["policy", "check", &path(&mixed)]);
    assert_eq!(out.status.code(), Some(0), "{}", s(&out.stdout));
    let first = s(&out.stdout).lines().next().unwrap_or_default().to_owned();
    assert_eq!(
        first,
        format!(
            "{}: ok, 1 resource (1 Server), 1 skipped, 1 note",
            mixed.display()
        )
    );

    // Empty is valid (kubectl apply does not fail on it either) but says so.
    let out = mesh(&["policy", "check", &path(&empty)]);
    assert_eq!(out.status.code(), Some(0), "{}", s(&out.stdout));
    assert_eq!(
        s(&out.stdout),
        format!("{}: empty: no resources\n", empty.display())
    );

    let out = mesh(&["policy", "check", &path(&mixed), &path(&bad), &path(&empty)]);
    assert_eq!(out.status.code(), Some(1), "{}", s(&out.stdout));
    let stdout = s(&out.stdout);
    assert!(
        stdout.ends_with("\n\n1 of 3 files invalid\n"),
        "the count stands apart, last:\n{stdout}"
    );
    assert!(s(&out.stderr).is_empty(), "{}", s(&out.stderr));
}

/// `mesh policy explain … | head`: a reader that goes away before the output is written ends
/// the command quietly (status 141, as a shell shows for a command stopped by a closed pipe),
/// without a panic on stderr.
#[test]
fn a_closed_pipe_ends_explain_quietly() {
    use std::process::Stdio;
    let f = tmp_yaml("shop-pipe.yaml", SHOP);
    let mut child = Command::new(env!("CARGO_BIN_EXE_mesh"))
        .args(["policy", "explain"])
        .arg(&f)
        .args(["--request", "GET http://web.shop/", "--samples", "1000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run mesh");
    // The reading end closes before the command has compiled the file and written a byte.
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("wait for mesh");
    let stderr = s(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), Some(141), "{stderr}");
}

#[test]
fn check_and_explain_understand_a_canary() {
    let f = tmp_yaml(
        "canary.yaml",
        r#"
apiVersion: v1
kind: Service
metadata: { name: voting, namespace: emojivoto }
spec: { ports: [{ port: 8080 }] }
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: voting, namespace: emojivoto }
spec:
  parentRefs: [{ name: voting, kind: Service, group: core, port: 8080 }]
  rules:
  - backendRefs:
    - { name: voting-v1, port: 8080, weight: 75 }
    - { name: voting-v2, port: 8080, weight: 25 }
---
apiVersion: policy.mesh.io/v1alpha1
kind: Canary
metadata: { name: voting, namespace: emojivoto }
spec:
  targetRef: { kind: HTTPRoute, name: voting }
  stable: { name: voting-v1, port: 8080 }
  canary: { name: voting-v2, port: 8080 }
  analysis:
    interval: 10s
    stepWeight: 25
    metrics: [{ name: request-success-rate, thresholdRange: { min: 99 } }]
"#,
    );
    let out = mesh(&["policy", "check", f.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", s(&out.stderr));
    assert!(s(&out.stdout).contains("1 Canary"), "{}", s(&out.stdout));

    let v = explain_json(&f, "GET http://voting.emojivoto:8080/", &[]);
    let [c] = v["canaries"].as_array().unwrap().as_slice() else {
        panic!("{v:#}")
    };
    assert_eq!(c["name"], "emojivoto/voting");
    assert_eq!(c["plan"], serde_json::json!([25, 50, 100]));
    assert_eq!(c["checks"][0], "success rate ≥ 99%");
    let table = mesh(&[
        "policy",
        "explain",
        f.to_str().unwrap(),
        "--request",
        "GET http://voting.emojivoto:8080/",
    ]);
    let text = s(&table.stdout);
    assert!(
        text.contains("emojivoto/voting moves HTTPRoute/voting from voting-v1 to voting-v2"),
        "{text}"
    );
    assert!(text.contains("25% → 50% → 100%"), "{text}");

    let bad = tmp_yaml(
        "bad-canary.yaml",
        &std::fs::read_to_string(&f)
            .unwrap()
            .replace("stepWeight: 25", "stepWeight: 0"),
    );
    let out = mesh(&["policy", "check", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        s(&out.stdout).contains("spec.analysis: stepWeight must be between 1 and 100, not 0"),
        "{}",
        s(&out.stdout)
    );
}

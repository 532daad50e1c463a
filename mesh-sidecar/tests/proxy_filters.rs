//! Gateway API route filters through a real `mesh proxy` (explicit mode, loopback): one table
//! per filter, each case from the Gateway API spec text (`HTTPRouteFilter`,
//! `HTTPHeaderFilter`, `HTTPURLRewriteFilter`, `HTTPRequestRedirectFilter`,
//! `HTTPRequestMirrorFilter`), checked by what the backend received and what the client got.
//!
//! Every wait is bounded; proxies and apps die with the test (on drop), also on failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use parking_lot::Mutex;
use support::loopback::{
    ConfiguredProxy, LoopbackProxy, exchange, get, grpc_call, metric, service, wait_for,
};

/// What a backend was sent: the request head (request line and headers), lower-cased names.
#[derive(Clone, Debug)]
struct Seen {
    line: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Seen {
    fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

type Log = Arc<Mutex<Vec<Seen>>>;

/// Reads one request (head and a `Content-Length` body); `None` at end of stream.
fn read_request(r: &mut BufReader<TcpStream>) -> Option<Seen> {
    let mut line = String::new();
    if r.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (n, v) = h.split_once(':')?;
        headers.push((n.trim().to_ascii_lowercase(), v.trim().to_owned()));
    }
    let len = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).ok()?;
    Some(Seen {
        line: line.trim_end().to_owned(),
        headers,
        body,
    })
}

/// An HTTP/1.1 backend that logs every request and answers `ok` with two headers of its own
/// (`x-app`, `x-drop`), after `hold` lets it (each request sends on `arrived` first).
fn backend(hold: Option<(mpsc::Sender<()>, mpsc::Receiver<()>)>) -> (SocketAddr, Log) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let log = Log::default();
    let seen = Arc::clone(&log);
    let hold = hold.map(|h| Arc::new(Mutex::new(h)));
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            let (log, hold) = (Arc::clone(&log), hold.clone());
            std::thread::spawn(move || {
                let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                let mut w = s.try_clone().unwrap();
                let mut r = BufReader::new(s);
                while let Some(req) = read_request(&mut r) {
                    log.lock().push(req);
                    if let Some(h) = &hold {
                        let h = h.lock();
                        let _ = h.0.send(());
                        if h.1.recv_timeout(Duration::from_secs(10)).is_err() {
                            return;
                        }
                    }
                    let rsp = "HTTP/1.1 200 OK\r\nx-app: one\r\nx-drop: gone\r\nContent-Length: 2\r\n\r\nok";
                    if w.write_all(rsp.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, seen)
}

/// A route rule: `(path prefix, filters)`.
type Rule<'a> = (&'a str, &'a str);

/// A route's rules, as YAML under `rules:`.
fn push_rules(s: &mut String, rules: &[Rule<'_>]) {
    for (prefix, filters) in rules {
        s.push_str(&format!(
            "  - matches: [{{ path: {{ type: PathPrefix, value: {prefix} }} }}]\n    filters: {filters}\n"
        ));
    }
}

/// One HTTPRoute on `web.shop`: a rule per `(path prefix, filters)`.
fn http_route(rules: &[Rule<'_>]) -> String {
    let mut s = String::from(
        "---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: filters, namespace: shop }
spec:
  parentRefs: [{ name: web, kind: Service, group: core, port: 80 }]
  rules:
",
    );
    push_rules(&mut s, rules);
    s
}

fn start(name: &str, config: &str) -> ConfiguredProxy {
    ConfiguredProxy::start(name, config)
}

/// A proxy serving `config` whose inbound side forwards to `app`.
fn start_in_front_of(name: &str, app: SocketAddr, config: &str) -> ConfiguredProxy {
    ConfiguredProxy::start_in_front_of(name, app, config)
}

/// A request to `web.shop` through the proxy's outbound listener with `headers` (`Name: v`
/// lines); the whole answer.
fn call(p: &LoopbackProxy, path: &str, headers: &[&str]) -> String {
    call_at(p.outbound, path, headers)
}

/// As [`call`], through the proxy listener at `addr`.
fn call_at(addr: SocketAddr, path: &str, headers: &[&str]) -> String {
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: web.shop\r\nConnection: close\r\n");
    for h in headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    exchange(addr, req.as_bytes())
}

/// The values of header `name` in a response (names compared case-insensitively).
fn header<'a>(rsp: &'a str, name: &str) -> Vec<&'a str> {
    let head = rsp.split("\r\n\r\n").next().unwrap_or_default();
    head.lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .filter(|(n, _)| n.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
        .collect()
}

/// The sum of `name{…label…}` on the proxy's admin `/metrics`.
fn proxy_metric(p: &LoopbackProxy, name: &str, label: &str) -> f64 {
    metric(&get(p.admin, "/metrics"), name, label)
}

/// Rules with header modifiers, from the spec text of `HTTPHeaderFilter`: `(path prefix,
/// filters)`.
const HEADER_RULES: [Rule<'_>; 4] = [
    // "my-header: foo" → set bar → "my-header: bar".
    (
        "/set",
        "[{ type: RequestHeaderModifier, requestHeaderModifier: { set: [{ name: my-header, value: bar }] } }]",
    ),
    // "my-header: foo" → add bar → "my-header: foo" and "my-header: bar".
    (
        "/add",
        "[{ type: RequestHeaderModifier, requestHeaderModifier: { add: [{ name: my-header, value: bar }] } }]",
    ),
    // my-header1, 2, 3 → remove 1 and 3 → my-header2 only.
    (
        "/remove",
        "[{ type: RequestHeaderModifier, requestHeaderModifier: { remove: [my-header1, my-header3] } }]",
    ),
    (
        "/response",
        "[{ type: ResponseHeaderModifier, responseHeaderModifier: { set: [{ name: x-app, value: two }], add: [{ name: x-extra, value: yes }], remove: [x-drop] } }]",
    ),
];

/// Requests to [`HEADER_RULES`] sent through `addr`, checked by what the backend saw and what
/// the client got; a rule without a response modifier leaves the answer's headers alone.
fn check_header_rules(addr: SocketAddr, seen: &Log) {
    // (path, request headers, header the backend saw, its values)
    let cases: &[(&str, &[&str], &str, &[&str])] = &[
        ("/set", &["my-header: foo"], "my-header", &["bar"]),
        ("/add", &["my-header: foo"], "my-header", &["foo", "bar"]),
        (
            "/remove",
            &["my-header1: a", "my-header2: b", "my-header3: c"],
            "my-header2",
            &["b"],
        ),
        ("/remove", &["my-header1: a"], "my-header1", &[]),
        ("/remove", &["my-header3: c"], "my-header3", &[]),
    ];
    for (path, send, name, want) in cases {
        let rsp = call_at(addr, path, send);
        assert!(rsp.starts_with("HTTP/1.1 200"), "{path}: {rsp:?}");
        let got = seen.lock().last().cloned().unwrap();
        assert_eq!(got.all(name), *want, "{path} {send:?}: {:?}", got.headers);
    }

    let rsp = call_at(addr, "/response", &[]);
    assert_eq!(header(&rsp, "x-app"), ["two"], "{rsp:?}");
    assert_eq!(header(&rsp, "x-extra"), ["yes"], "{rsp:?}");
    assert!(header(&rsp, "x-drop").is_empty(), "{rsp:?}");
    // Routes without the filter leave the backend's headers alone.
    let rsp = call_at(addr, "/set", &[]);
    assert_eq!(header(&rsp, "x-drop"), ["gone"], "{rsp:?}");
}

#[test]
fn header_modifiers_change_requests_and_responses() {
    let (web, seen) = backend(None);
    let config = service("web", web) + &http_route(&HEADER_RULES);
    let f = start("filters-headers", &config);
    check_header_rules(f.proxy.outbound, &seen);
}

#[test]
fn rewrites_change_the_path_and_host_the_backend_sees() {
    let (web, seen) = backend(None);
    let config = service("web", web)
        + &http_route(&[
            (
                "/full",
                "[{ type: URLRewrite, urlRewrite: { path: { type: ReplaceFullPath, replaceFullPath: /rewritten } } }]",
            ),
            (
                "/prefix",
                "[{ type: URLRewrite, urlRewrite: { path: { type: ReplacePrefixMatch, replacePrefixMatch: /new } } }]",
            ),
            (
                "/strip",
                "[{ type: URLRewrite, urlRewrite: { path: { type: ReplacePrefixMatch, replacePrefixMatch: / } } }]",
            ),
            (
                "/host",
                "[{ type: URLRewrite, urlRewrite: { hostname: elsewhere.example } }]",
            ),
        ]);
    let f = start("filters-rewrite", &config);
    // (path sent, request line the backend saw, its Host)
    let cases = [
        ("/full/a/b?x=1", "GET /rewritten?x=1 HTTP/1.1", "web.shop"),
        (
            "/prefix/users?page=2",
            "GET /new/users?page=2 HTTP/1.1",
            "web.shop",
        ),
        ("/prefix", "GET /new HTTP/1.1", "web.shop"),
        ("/strip/users", "GET /users HTTP/1.1", "web.shop"),
        ("/host/x", "GET /host/x HTTP/1.1", "elsewhere.example"),
    ];
    for (path, line, host) in cases {
        let rsp = call(&f.proxy, path, &[]);
        assert!(rsp.starts_with("HTTP/1.1 200"), "{path}: {rsp:?}");
        let got = seen.lock().last().cloned().unwrap();
        assert_eq!(got.line, line, "{path}");
        assert_eq!(got.all("host"), [host], "{path}");
    }
}

/// Rules that redirect, one per status Gateway API allows: `(path prefix, filters)`.
const REDIRECT_RULES: [Rule<'_>; 5] = [
    (
        "/r301",
        "[{ type: RequestRedirect, requestRedirect: { hostname: example.org, statusCode: 301 } }]",
    ),
    // No status: 302.
    (
        "/r302",
        "[{ type: RequestRedirect, requestRedirect: { scheme: https } }]",
    ),
    (
        "/r303",
        "[{ type: RequestRedirect, requestRedirect: { port: 8080, statusCode: 303 } }]",
    ),
    (
        "/r307",
        "[{ type: RequestRedirect, requestRedirect: { path: { type: ReplaceFullPath, replaceFullPath: /elsewhere }, statusCode: 307 } }]",
    ),
    (
        "/r308",
        "[{ type: RequestRedirect, requestRedirect: { scheme: https, port: 8443, path: { type: ReplacePrefixMatch, replacePrefixMatch: /moved }, statusCode: 308 } }]",
    ),
];

/// Requests to [`REDIRECT_RULES`] sent through `addr` (as `Host: web.shop`): each answered
/// with its status and `Location`, an empty body, nothing forwarded to the backend.
fn check_redirect_rules(addr: SocketAddr, seen: &Log) {
    let cases = [
        ("/r301/a", "301", "http://example.org/r301/a"),
        ("/r302/a?q=1", "302", "https://web.shop/r302/a?q=1"),
        ("/r303", "303", "http://web.shop:8080/r303"),
        ("/r307/a?q=1", "307", "http://web.shop/elsewhere?q=1"),
        ("/r308/x", "308", "https://web.shop:8443/moved/x"),
    ];
    for (path, status, location) in cases {
        let rsp = call_at(addr, path, &[]);
        assert!(
            rsp.starts_with(&format!("HTTP/1.1 {status} ")),
            "{path}: {rsp:?}"
        );
        assert_eq!(header(&rsp, "location"), [location], "{path}");
        assert!(
            header(&rsp, "l5d-proxy-error").is_empty(),
            "{path}: {rsp:?}"
        );
        assert!(rsp.ends_with("\r\n\r\n"), "{path}: a body: {rsp:?}");
    }
    assert!(seen.lock().is_empty(), "a redirect was forwarded");
}

#[test]
fn redirects_are_answered_by_the_proxy_with_each_status() {
    let (web, seen) = backend(None);
    let config = service("web", web) + &http_route(&REDIRECT_RULES);
    let f = start("filters-redirect", &config);
    check_redirect_rules(f.proxy.outbound, &seen);
    assert_eq!(
        proxy_metric(&f.proxy, "outbound_http_redirect_total", ""),
        5.0
    );
    // A redirect is the route's response.
    let routed = proxy_metric(&f.proxy, "route_response_total", "status_code=\"301\"");
    assert_eq!(routed, 1.0);
}

#[test]
fn mirrors_get_their_share_and_never_hold_up_the_client() {
    let (web, seen) = backend(None);
    let (shadow, mirrored) = backend(None);
    let (arrived_tx, arrived) = mpsc::channel();
    let (release, release_rx) = mpsc::channel();
    let (held, _) = backend(Some((arrived_tx, release_rx)));
    // Bound and not listening: connections are refused, and no other test can take the port
    // (as it could a free port's) while this test runs.
    let refusing =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    refusing
        .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    let mirror = |svc: &str, extra: &str| {
        format!(
            "[{{ type: RequestMirror, requestMirror: {{ backendRef: {{ name: {svc}, port: 80 }}{extra} }} }}]"
        )
    };
    let (all, none, half, slow, down) = (
        mirror("shadow", ""),
        mirror("shadow", ", percent: 0"),
        mirror("shadow", ", percent: 50"),
        mirror("held", ""),
        mirror("down", ""),
    );
    let config = service("web", web)
        + &service("shadow", shadow)
        + &service("held", held)
        + &service("down", refusing.local_addr().unwrap().as_socket().unwrap())
        + &http_route(&[
            ("/all", &all),
            ("/none", &none),
            ("/half", &half),
            ("/slow", &slow),
            ("/down", &down),
        ]);
    let f = start("filters-mirror", &config);

    // percent 100: every request, body and headers included; the client's answer is the
    // backend's.
    for i in 0..5 {
        let body = format!("copy {i}");
        let req = format!(
            "POST /all HTTP/1.1\r\nHost: web.shop\r\nx-n: {i}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let rsp = exchange(f.proxy.outbound, req.as_bytes());
        assert!(
            rsp.starts_with("HTTP/1.1 200") && rsp.ends_with("ok"),
            "{rsp:?}"
        );
    }
    assert!(wait_for(Duration::from_secs(5), || mirrored.lock().len() == 5));
    let copies = mirrored.lock().clone();
    for i in 0..5 {
        let copy = copies.iter().find(|c| c.all("x-n") == [i.to_string()]);
        let copy = copy.unwrap_or_else(|| panic!("copy {i} missing: {copies:?}"));
        assert_eq!(copy.line, "POST /all HTTP/1.1");
        assert_eq!(copy.body, format!("copy {i}").as_bytes());
    }
    assert_eq!(seen.lock().len(), 5);

    // percent 0: none; percent 50 over 40 requests: some, not all (each way 2^-40 to fail).
    for _ in 0..10 {
        assert!(call(&f.proxy, "/none", &[]).starts_with("HTTP/1.1 200"));
    }
    for _ in 0..40 {
        assert!(call(&f.proxy, "/half", &[]).starts_with("HTTP/1.1 200"));
    }
    assert!(wait_for(Duration::from_secs(5), || {
        proxy_metric(&f.proxy, "outbound_http_mirror_total", "result=\"sent\"")
            >= 5.0
                + mirrored
                    .lock()
                    .iter()
                    .filter(|c| c.line.contains("/half"))
                    .count() as f64
    }));
    let half_copies = mirrored
        .lock()
        .iter()
        .filter(|c| c.line.contains("/half"))
        .count();
    assert!(mirrored.lock().iter().all(|c| !c.line.contains("/none")));
    assert!(
        (1..40).contains(&half_copies),
        "{half_copies} of 40 mirrored"
    );

    // A slow mirror: the client is answered while the mirror still holds its copy.
    let outbound = f.proxy.outbound;
    let client = std::thread::spawn(move || {
        exchange(
            outbound,
            b"GET /slow HTTP/1.1\r\nHost: web.shop\r\nConnection: close\r\n\r\n",
        )
    });
    arrived
        .recv_timeout(Duration::from_secs(5))
        .expect("the mirror got its copy");
    let rsp = client.join().unwrap();
    assert!(
        rsp.starts_with("HTTP/1.1 200") && rsp.ends_with("ok"),
        "{rsp:?}"
    );
    release.send(()).unwrap();

    // A mirror nobody listens at: the client is answered, the copy counts as failed.
    let rsp = call(&f.proxy, "/down", &[]);
    assert!(
        rsp.starts_with("HTTP/1.1 200") && rsp.ends_with("ok"),
        "{rsp:?}"
    );
    assert!(wait_for(Duration::from_secs(5), || {
        proxy_metric(&f.proxy, "outbound_http_mirror_total", "result=\"failed\"") >= 1.0
    }));
}

/// An h2c backend that reads each request, logs its path and headers, and answers like a gRPC
/// server (`grpc-status: 0`) with `x-app: one`.
async fn grpc_backend() -> (SocketAddr, Arc<Mutex<Vec<http::Request<()>>>>) {
    use hyper::service::service_fn;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&log);
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let log = Arc::clone(&log);
            let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                let log = Arc::clone(&log);
                async move {
                    // A gRPC server reads the request message before it answers.
                    let (parts, body) = req.into_parts();
                    let _ = http_body_util::BodyExt::collect(body).await;
                    log.lock().push(http::Request::from_parts(parts, ()));
                    http::Response::builder()
                        .header("content-type", "application/grpc")
                        .header("grpc-status", "0")
                        .header("x-app", "one")
                        .body(http_body_util::Full::new(bytes::Bytes::new()))
                }
            });
            tokio::spawn(
                hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(s), svc),
            );
        }
    });
    (addr, seen)
}

#[test]
fn grpc_routes_get_header_modifiers_and_mirrors() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (web, seen) = rt.block_on(grpc_backend());
    let (shadow, mirrored) = rt.block_on(grpc_backend());
    let config = service("web", web)
        + &service("shadow", shadow)
        + "---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: { name: greet, namespace: shop }
spec:
  parentRefs: [{ name: web, kind: Service, group: core, port: 80 }]
  rules:
  - matches: [{ method: { service: hello.Greeter, method: SayHello } }]
    filters:
    - { type: RequestHeaderModifier, requestHeaderModifier: { add: [{ name: x-via, value: mesh }], remove: [x-secret] } }
    - { type: ResponseHeaderModifier, responseHeaderModifier: { set: [{ name: x-app, value: two }] } }
    - { type: RequestMirror, requestMirror: { backendRef: { name: shadow, port: 80 } } }
";
    let f = start("filters-grpc", &config);
    let rsp = grpc_call(
        &rt,
        f.proxy.outbound,
        "/hello.Greeter/SayHello",
        &[("x-secret", "s3cr3t")],
    );
    assert_eq!(rsp.status(), 200);
    assert_eq!(rsp.headers()["x-app"], "two");
    assert_eq!(rsp.headers()["grpc-status"], "0");
    let got = seen.lock().pop().expect("the backend got the call");
    assert_eq!(got.uri().path(), "/hello.Greeter/SayHello");
    assert_eq!(got.headers()["x-via"], "mesh");
    assert!(!got.headers().contains_key("x-secret"));
    assert!(wait_for(Duration::from_secs(5), || mirrored.lock().len() == 1));
    let copy = mirrored.lock().pop().unwrap();
    assert_eq!(copy.uri().path(), "/hello.Greeter/SayHello");
    assert_eq!(copy.headers()["x-via"], "mesh");
}

// === inbound: filters of a Server's routes ===

/// A Server selecting the proxy's own workload port `port` (explicit mode: namespace
/// `default`, no labels), open to everyone, with one route per `(api_version, name, rules)`
/// (Gateway API's HTTPRoute or Linkerd's).
fn server_routes(port: u16, routes: &[(&str, &str, &[Rule<'_>])]) -> String {
    let mut s = format!(
        "apiVersion: policy.linkerd.io/v1beta3
kind: Server
metadata: {{ name: app, namespace: default }}
spec: {{ podSelector: {{}}, port: {port}, proxyProtocol: HTTP/1, accessPolicy: all-unauthenticated }}
"
    );
    for (api_version, name, rules) in routes {
        s.push_str(&format!(
            "---
apiVersion: {api_version}
kind: HTTPRoute
metadata: {{ name: {name}, namespace: default }}
spec:
  parentRefs: [{{ name: app, kind: Server, group: policy.linkerd.io }}]
  rules:
"
        ));
        push_rules(&mut s, rules);
    }
    s
}

/// Inbound, after authorization, a Server's route changes the request the application gets
/// and the answer the client gets, as the same filters do outbound; a route without filters
/// passes both unchanged.
#[test]
fn inbound_header_modifiers_change_what_the_app_and_the_client_see() {
    let (app, seen) = backend(None);
    let plain: &[Rule<'_>] = &[("/plain", "[]")];
    let config = server_routes(
        app.port(),
        &[
            ("gateway.networking.k8s.io/v1", "headers", &HEADER_RULES),
            ("policy.linkerd.io/v1beta3", "plain", plain),
        ],
    );
    let f = start_in_front_of("filters-inbound-headers", app, &config);
    check_header_rules(f.proxy.inbound, &seen);

    let rsp = call_at(f.proxy.inbound, "/plain/x?q=1", &["my-header: foo"]);
    assert!(rsp.starts_with("HTTP/1.1 200"), "{rsp:?}");
    assert_eq!(header(&rsp, "x-app"), ["one"], "{rsp:?}");
    assert_eq!(header(&rsp, "x-drop"), ["gone"], "{rsp:?}");
    let got = seen.lock().last().cloned().unwrap();
    assert_eq!(got.line, "GET /plain/x?q=1 HTTP/1.1");
    assert_eq!(got.all("my-header"), ["foo"], "{:?}", got.headers);
}

/// Inbound, a redirect is answered by the proxy with each status Gateway API allows, the
/// application sees nothing, and it is counted as the route's response.
#[test]
fn inbound_redirects_are_answered_by_the_proxy() {
    let (app, seen) = backend(None);
    let config = server_routes(
        app.port(),
        &[("policy.linkerd.io/v1beta3", "redirects", &REDIRECT_RULES)],
    );
    let f = start_in_front_of("filters-inbound-redirect", app, &config);
    check_redirect_rules(f.proxy.inbound, &seen);
    assert_eq!(
        proxy_metric(&f.proxy, "inbound_http_redirect_total", ""),
        5.0
    );
    assert_eq!(
        proxy_metric(
            &f.proxy,
            "inbound_http_redirect_total",
            "status_code=\"308\""
        ),
        1.0
    );
    let answered = proxy_metric(&f.proxy, "response_total", "route_name=\"redirects\"");
    assert_eq!(answered, 5.0);
}

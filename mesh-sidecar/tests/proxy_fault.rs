//! Fault injection through a real `mesh proxy` (explicit mode, loopback): a Gateway API
//! `ExtensionRef` filter naming mesh's `FaultInjection`. Over 2,000 requests the abort share
//! holds within three standard deviations of the binomial, aborted requests never reach the
//! backend and are recorded as responses; delayed requests are late for the client and in
//! `response_latency_ms`, and count toward the route's request timeout; a GRPCRoute's abort is a
//! trailers-only `grpc-status`; a missing `FaultInjection` answers 500.
//!
//! Every wait is bounded; proxies and apps die with the test (on drop), also on failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use support::loopback::{ConfiguredProxy, get, grpc_call, metric, service, status_app};

/// Requests per share measured.
const N: usize = 2_000;

/// An app that answers 200 and counts what reached it.
fn counting_app() -> (SocketAddr, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&calls);
    let addr = status_app(move |_| {
        seen.fetch_add(1, Ordering::Relaxed);
        "200 OK"
    });
    (addr, calls)
}

/// Service `web` at `app`, an HTTPRoute whose rules are `rules` (YAML under `rules:`), and the
/// FaultInjections `faults` (`(name, spec YAML)`).
fn config(app: SocketAddr, rules: &str, faults: &[(&str, &str)]) -> String {
    let mut s = service("web", app)
        + "---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: faulty, namespace: shop }
spec:
  parentRefs: [{ name: web, kind: Service, group: core, port: 80 }]
  rules:
" + rules;
    for (name, spec) in faults {
        s.push_str(&format!(
            "---\napiVersion: policy.mesh.io/v1alpha1\nkind: FaultInjection\nmetadata: {{ name: {name}, namespace: shop }}\nspec: {spec}\n"
        ));
    }
    s
}

/// A rule for paths under `prefix` through the FaultInjection `name`, with `extra` rule fields.
fn rule(prefix: &str, name: &str, extra: &str) -> String {
    format!(
        "  - matches: [{{ path: {{ type: PathPrefix, value: {prefix} }} }}]\n    filters: [{{ type: ExtensionRef, extensionRef: {{ group: policy.mesh.io, kind: FaultInjection, name: {name} }} }}]\n{extra}"
    )
}

/// `n` sequential GETs of `path` on one HTTP/1.1 connection to the proxy's outbound side
/// (a new one if the proxy closes it): each answer's status and how long it took.
async fn send(outbound: SocketAddr, path: &str, n: usize) -> Vec<(u16, Duration)> {
    let mut out = Vec::with_capacity(n);
    let mut conn = None;
    while out.len() < n {
        let sender = match &mut conn {
            Some(s) => s,
            None => {
                let s = tokio::net::TcpStream::connect(outbound).await.unwrap();
                let (send, c) = hyper::client::conn::http1::handshake(TokioIo::new(s))
                    .await
                    .unwrap();
                tokio::spawn(c);
                conn.insert(send)
            }
        };
        if sender.ready().await.is_err() {
            conn = None;
            continue;
        }
        let req = http::Request::get(format!("http://web.shop{path}"))
            .header("host", "web.shop")
            .body(Empty::<bytes::Bytes>::new())
            .unwrap();
        let start = Instant::now();
        let rsp = tokio::time::timeout(Duration::from_secs(10), sender.send_request(req))
            .await
            .expect("answered in time")
            .unwrap();
        let status = rsp.status().as_u16();
        rsp.into_body().collect().await.unwrap();
        out.push((status, start.elapsed()));
    }
    out
}

/// The bounds of three standard deviations around the mean of `Binomial(n, p)`.
fn three_sigma(n: usize, p: f64) -> std::ops::RangeInclusive<usize> {
    let mean = n as f64 * p;
    let sd = (n as f64 * p * (1.0 - p)).sqrt();
    ((mean - 3.0 * sd).floor() as usize)..=((mean + 3.0 * sd).ceil() as usize)
}

#[test]
fn aborts_and_delays_take_their_share_and_are_recorded() {
    let (app, calls) = counting_app();
    let rules = rule("/", "flaky", "");
    let spec = "{ abort: { percentage: 20, httpStatus: 503 }, delay: { percentage: 10, fixedDelay: 25ms } }";
    let f = ConfiguredProxy::start("fault-share", &config(app, &rules, &[("flaky", spec)]));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let answers = rt.block_on(send(f.proxy.outbound, "/", N));

    let aborted = answers.iter().filter(|(s, _)| *s == 503).count();
    let ok = answers.iter().filter(|(s, _)| *s == 200).count();
    assert_eq!(aborted + ok, N, "only 200s and 503s");
    assert!(
        three_sigma(N, 0.2).contains(&aborted),
        "{aborted} of {N} aborted, 20 % asked"
    );
    // An aborted request never reaches the backend.
    assert_eq!(calls.load(Ordering::Relaxed), ok);

    let text = get(f.proxy.admin, "/metrics");
    let injected = |fault: &str| {
        metric(
            &text,
            "route_fault_injected_total",
            &format!("fault=\"{fault}\""),
        ) as usize
    };
    assert_eq!(injected("abort"), aborted);
    let delayed = injected("delay");
    assert!(
        three_sigma(N, 0.1).contains(&delayed),
        "{delayed} of {N} delayed, 10 % asked"
    );
    // Every delayed request was at least 25 ms late for the client.
    let late = answers
        .iter()
        .filter(|(_, t)| *t >= Duration::from_millis(25))
        .count();
    assert!(
        late >= delayed,
        "{late} answers took 25 ms, {delayed} delayed"
    );
    // The aborts are responses like any other: a 503, a failure.
    let outbound = "direction=\"outbound\"";
    let failures = metric(&text, "response_total", "classification=\"failure\"");
    assert_eq!(failures as usize, aborted, "{text}");
    let by_status = metric(&text, "response_total", "status_code=\"503\"");
    assert_eq!(by_status as usize, aborted);
    // And the delays are in the latency histogram: none of them at or under 20 ms.
    let count = metric(&text, "response_latency_ms_count", outbound) as usize;
    let fast = metric(&text, "response_latency_ms_bucket", "le=\"20\"") as usize;
    assert_eq!(count, N);
    assert!(
        fast <= N - delayed,
        "{fast} answers within 20 ms, but {delayed} were held 25 ms"
    );
}

#[test]
fn a_delay_counts_toward_the_route_request_timeout() {
    let (app, calls) = counting_app();
    let rules = rule("/", "slow", "    timeouts: { request: 100ms }\n");
    let spec = "{ delay: { fixedDelay: 2s } }";
    let f = ConfiguredProxy::start("fault-timeout", &config(app, &rules, &[("slow", spec)]));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let answers = rt.block_on(send(f.proxy.outbound, "/", 3));
    assert!(answers.iter().all(|(s, _)| *s == 504), "{answers:?}");
    // The timeout cancelled the delay: nothing was forwarded.
    assert_eq!(calls.load(Ordering::Relaxed), 0);
}

#[test]
fn a_missing_fault_injection_answers_500() {
    let (app, calls) = counting_app();
    let rules = rule("/", "absent", "");
    let f = ConfiguredProxy::start("fault-missing", &config(app, &rules, &[]));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let answers = rt.block_on(send(f.proxy.outbound, "/", 3));
    assert!(answers.iter().all(|(s, _)| *s == 500), "{answers:?}");
    assert_eq!(calls.load(Ordering::Relaxed), 0);
}

#[test]
fn a_grpc_route_aborts_with_the_grpc_status() {
    let (app, calls) = counting_app();
    let config = service("web", app)
        + "---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: { name: greet, namespace: shop }
spec:
  parentRefs: [{ name: web, kind: Service, group: core, port: 80 }]
  rules:
  - matches: [{ method: { service: hello.Greeter } }]
    filters: [{ type: ExtensionRef, extensionRef: { group: policy.mesh.io, kind: FaultInjection, name: down } }]
---
apiVersion: policy.mesh.io/v1alpha1
kind: FaultInjection
metadata: { name: down, namespace: shop }
spec: { abort: { grpcStatus: 14 } }
";
    let f = ConfiguredProxy::start("fault-grpc", &config);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let rsp = grpc_call(&rt, f.proxy.outbound, "/hello.Greeter/SayHello", &[]);
    assert_eq!(rsp.status(), 200);
    assert_eq!(rsp.headers()["grpc-status"], "14");
    assert_eq!(rsp.headers()["content-type"], "application/grpc");
    assert_eq!(calls.load(Ordering::Relaxed), 0);
    let text = get(f.proxy.admin, "/metrics");
    let failed = metric(&text, "response_total", "grpc_status=\"14\"");
    assert_eq!(failed, 1.0, "{text}");
}

/// What `mesh policy explain` prints for `GET http://web.shop/` under the policy `yaml`
/// (written to a file named after `name` and this process).
fn explain(name: &str, yaml: &str) -> String {
    let path = std::env::temp_dir().join(format!("mesh-{name}-{}.yaml", std::process::id()));
    std::fs::write(&path, yaml).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mesh"))
        .args(["policy", "explain", "--request", "GET http://web.shop/"])
        .arg(&path)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&path);
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn explain_shows_the_fault_and_the_answer_of_a_missing_one() {
    let app: SocketAddr = "127.0.0.1:8080".parse().unwrap();
    let rules = rule("/", "flaky", "");
    let spec = "{ abort: { percentage: 10, httpStatus: 503 }, delay: { percentage: 50, fixedDelay: 200ms } }";
    let shown = explain("fault-explain", &config(app, &rules, &[("flaky", spec)]));
    assert!(
        shown
            .contains("FaultInjection/flaky: abort 503 for 10 % of requests; delay 200ms for 50 %"),
        "{shown}"
    );
    let missing = explain("fault-explain-missing", &config(app, &rules, &[]));
    assert!(
        missing.contains("500 (FaultInjection/flaky is not resolved)"),
        "{missing}"
    );
}

/// Service `web` split evenly between `web-v1` at `v1` and `web-v2` at `v2`, `web-v2` with
/// its own filters: a response header and the FaultInjection `flaky`.
fn split_config(v1: SocketAddr, v2: SocketAddr, fault: &str) -> String {
    [service("web", v1), service("web-v1", v1), service("web-v2", v2)].concat()
        + &format!(
            "---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{ name: split, namespace: shop }}
spec:
  parentRefs: [{{ name: web, kind: Service, group: core, port: 80 }}]
  rules:
  - backendRefs:
    - {{ name: web-v1, port: 80, weight: 50 }}
    - name: web-v2
      port: 80
      weight: 50
      filters:
      - {{ type: ResponseHeaderModifier, responseHeaderModifier: {{ set: [{{ name: x-backend, value: v2 }}] }} }}
      - {{ type: ExtensionRef, extensionRef: {{ group: policy.mesh.io, kind: FaultInjection, name: flaky }} }}
---
apiVersion: policy.mesh.io/v1alpha1
kind: FaultInjection
metadata: {{ name: flaky, namespace: shop }}
spec: {fault}
"
        )
}

#[test]
fn a_backend_fault_fails_only_the_requests_sent_to_that_backend() {
    const REQUESTS: usize = 600;
    let (v1, v1_calls) = counting_app();
    let (v2, v2_calls) = counting_app();
    let config = split_config(v1, v2, "{ abort: { percentage: 60, httpStatus: 503 } }");
    let f = ConfiguredProxy::start("fault-backend", &config);
    let answers: Vec<String> = (0..REQUESTS)
        .map(|_| {
            support::loopback::exchange(
                f.proxy.outbound,
                b"GET / HTTP/1.1\r\nHost: web.shop\r\nConnection: close\r\n\r\n",
            )
        })
        .collect();
    let status = |a: &String| a.split(' ').nth(1).unwrap_or_default().to_owned();
    let aborted = answers.iter().filter(|a| status(a) == "503").count();
    let (v1_calls, v2_calls) = (
        v1_calls.load(Ordering::Relaxed),
        v2_calls.load(Ordering::Relaxed),
    );
    assert_eq!(
        aborted + v1_calls + v2_calls,
        REQUESTS,
        "only 200s and 503s"
    );
    // Half the requests go to web-v2, and 60 % of those are aborted: 30 % of all.
    assert!(
        three_sigma(REQUESTS, 0.3).contains(&aborted),
        "{aborted} of {REQUESTS} aborted, 30 % expected"
    );
    assert!(
        three_sigma(REQUESTS, 0.2).contains(&v2_calls),
        "{v2_calls} of {REQUESTS} reached web-v2, 20 % expected"
    );
    // The backend's response header is on web-v2's answers only.
    let marked = answers
        .iter()
        .filter(|a| a.to_ascii_lowercase().contains("x-backend: v2"))
        .count();
    assert_eq!(marked, v2_calls);

    // The aborts count as web-v2's failures, where a canary's analysis looks.
    let text = get(f.proxy.admin, "/metrics");
    let failures = |svc: &str| {
        let rows: Vec<&str> = (text.lines())
            .filter(|l| {
                l.starts_with("response_total{") && l.contains(&format!("dst_service=\"{svc}\""))
            })
            .filter(|l| l.contains("classification=\"failure\""))
            .collect();
        rows.iter()
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as usize
    };
    assert_eq!(failures("web-v2"), aborted, "{text}");
    assert_eq!(failures("web-v1"), 0, "{text}");
    let injected = metric(&text, "route_fault_injected_total", "fault=\"abort\"") as usize;
    assert_eq!(injected, aborted);
}

#[test]
fn explain_shows_a_backend_filter_under_its_backend() {
    let app: SocketAddr = "127.0.0.1:8080".parse().unwrap();
    let config = split_config(app, app, "{ abort: { percentage: 60, httpStatus: 503 } }");
    let shown = explain("backend-explain", &config);
    // web-v2's line, then its filters; web-v1 has none.
    let lines: Vec<&str> = shown.lines().collect();
    let at = (lines.iter())
        .position(|l| l.contains("web-v2.shop:80"))
        .unwrap_or_else(|| panic!("{shown}"));
    assert!(
        lines[at + 1].contains("filter ResponseHeaderModifier set x-backend: v2"),
        "{shown}"
    );
    assert!(
        lines[at + 2].contains("filter FaultInjection/flaky: abort 503 for 60 % of requests"),
        "{shown}"
    );
    assert!(!lines[at - 1].contains("filter"), "{shown}");
}

//! The whole chain on loopback: the test API server, a real `mesh controller`, and two real
//! `mesh proxy --controller` processes (explicit mode) as two workloads with their own mesh
//! identities. What a user would see: a route change reaches both proxies, an invalid object
//! changes nothing and says why in its status, a controller restart leaves the proxies serving
//! and then resyncing, and a proxy cannot read another workload's inbound policy.
//!
//! Every child process is killed on drop, also when the test fails; every wait is bounded.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::apiserver::ApiServer;
use support::controller::{Controller, endpoint_slice_yaml, pod_proxy as proxy, service_yaml};
use support::loopback::{LoopbackProxy, Seen, exchange, get, recording_app};
use support::pods::{Trust, free_port};

/// How long one expected change may take to show (a bound, not a measurement).
const WAIT: Duration = Duration::from_secs(15);

/// Service `web` with a route to `web-v1` or `web-v2`, each of those one plaintext endpoint
/// on loopback, and the two client pods.
fn objects(v1: SocketAddr, v2: SocketAddr) -> String {
    let service = service_yaml;
    let slice = endpoint_slice_yaml;
    let pod = |name: &str, sa: &str| {
        format!(
            "apiVersion: v1
kind: Pod
metadata: {{ name: {name}, namespace: default, labels: {{ app: {sa} }} }}
spec: {{ serviceAccountName: {sa}, containers: [{{ name: app, image: app, ports: [{{ name: http, containerPort: 8080 }}] }}] }}
---
"
        )
    };
    [
        service("web", "10.96.0.10"),
        service("web-v1", "10.96.0.11"),
        service("web-v2", "10.96.0.12"),
        slice("web-v1", v1),
        slice("web-v2", v2),
        pod("a-pod", "a"),
        pod("b-pod", "b"),
    ]
    .concat()
}

/// HTTPRoute `web-route` on web: everything to `backend`, or a path regex that does not compile.
fn route(backend: &str, broken: bool) -> String {
    let path = if broken {
        "{ type: RegularExpression, value: '/api/([' }"
    } else {
        "{ type: PathPrefix, value: / }"
    };
    format!(
        "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{ name: web-route, namespace: default }}
spec:
  parentRefs: [{{ name: web, kind: Service, group: core, port: 80 }}]
  rules: [{{ matches: [{{ path: {path} }}], backendRefs: [{{ name: {backend}, port: 80 }}] }}]
"
    )
}

fn call_web(p: &LoopbackProxy) -> String {
    exchange(
        p.outbound,
        b"GET /x HTTP/1.1\r\nHost: web.default\r\nConnection: close\r\n\r\n",
    )
}

/// Calls web through `p` until `app` has seen one more request (bounded).
fn reaches(p: &LoopbackProxy, app: &Seen, what: &str) {
    let before = app.lock().len();
    let deadline = Instant::now() + WAIT;
    loop {
        let rsp = call_web(p);
        if app.lock().len() > before {
            assert!(rsp.starts_with("HTTP/1.1 200"), "{what}: {rsp}");
            return;
        }
        assert!(Instant::now() < deadline, "{what}: last answer {rsp}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The route's `Accepted` condition for Service web, as the controller wrote it.
fn accepted(api: &ApiServer) -> Option<(String, String)> {
    let route = api.get(
        "gateway.networking.k8s.io",
        "httproutes",
        "default",
        "web-route",
    )?;
    let parents = route["status"]["parents"].as_array()?.clone();
    let conditions = parents.first()?["conditions"].as_array()?.clone();
    let c = conditions.iter().find(|c| c["type"] == "Accepted")?;
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    Some((text(&c["status"]), text(&c["message"])))
}

#[test]
fn proxies_follow_the_controller_and_survive_it() {
    let (v1, v1_seen) = recording_app();
    let (v2, v2_seen) = recording_app();
    let api = ApiServer::start();
    api.apply(&objects(v1, v2));
    api.apply(&route("web-v1", false));
    let trust = Trust::new();
    trust.issue(&["mesh-controller", "a", "b"]);
    let kubeconfig = api.kubeconfig(&trust.dir);
    let grpc = free_port();
    let identity = trust.certs("mesh-controller");
    let controller = Controller::start(&kubeconfig, &identity, grpc, &trust.dir);
    controller.wait_ready();

    let a = proxy(&trust, grpc, "a", "a-pod", false);
    let b = proxy(&trust, grpc, "b", "b-pod", false);
    reaches(&a, &v1_seen, "a: the route from the controller");
    reaches(&b, &v1_seen, "b: the route from the controller");

    // A route change reaches both.
    api.apply(&route("web-v2", false));
    reaches(&a, &v2_seen, "a: the changed route");
    reaches(&b, &v2_seen, "b: the changed route");

    // An invalid version is refused where users look, and changes nothing.
    api.apply(&route("web-v1", true));
    let deadline = Instant::now() + WAIT;
    let message = loop {
        if let Some((status, message)) = accepted(&api)
            && status == "False"
        {
            break message;
        }
        assert!(
            Instant::now() < deadline,
            "no Accepted=False: {:?}\n{}",
            accepted(&api),
            controller.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        message.contains("regex") || message.contains("regular expression"),
        "{message}"
    );
    let v1_before = v1_seen.lock().len();
    for p in [&a, &b] {
        for _ in 0..5 {
            assert!(call_web(p).starts_with("HTTP/1.1 200"));
        }
    }
    assert_eq!(
        v1_seen.lock().len(),
        v1_before,
        "the refused version took traffic"
    );

    // The controller goes away: both keep serving what they had.
    drop(controller);
    reaches(&a, &v2_seen, "a: the last route, controller away");
    reaches(&b, &v2_seen, "b: the last route, controller away");
    let ready = get(a.admin, "/ready");
    assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");

    // A fix made while it is away arrives once it is back.
    api.apply(&route("web-v1", false));
    let controller = Controller::start(&kubeconfig, &identity, grpc, &trust.dir);
    controller.wait_ready();
    reaches(&a, &v1_seen, "a: resynced after the controller returned");
    reaches(&b, &v1_seen, "b: resynced after the controller returned");
    assert_eq!(accepted(&api).map(|(s, _)| s).as_deref(), Some("True"));

    // Identity a asking for pod b's inbound policy is refused: that proxy never gets ready,
    // and says why.
    let wrong = proxy(&trust, grpc, "a", "b-pod", true);
    let deadline = Instant::now() + WAIT;
    loop {
        let ready = get(wrong.admin, "/ready");
        if ready.to_lowercase().contains("permission") {
            assert!(ready.starts_with("HTTP/1.1 503"), "{ready}");
            break;
        }
        assert!(Instant::now() < deadline, "{ready}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

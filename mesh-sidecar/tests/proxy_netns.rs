//! The sidecar end to end: "pods" are network namespaces joined by veth pairs, each with
//! `mesh init` (iptables) and `mesh proxy` running as UID 2102 beside an application that is
//! not written in Rust (Python's http.server). The applications know nothing of the mesh.
//!
//! Needs root, `ip netns` and iptables; skips with a printed reason elsewhere. Every
//! namespace, veth and process is removed when the test ends, pass or fail.

mod support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{ChildGuard, Netns, mesh_bin, python3, run_ok, skip_unless_root_and_netns};

const PROXY_UID: &str = "2102";

/// A tiny app: answers every request with its name; `/slow` takes two seconds.
const APP_PY: &str = r#"
import sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
name = sys.argv[1].encode()
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes: without this, Nagle's algorithm and delayed
    # ACKs add 40 ms to every response.
    disable_nagle_algorithm = True
    def do_GET(self):
        if self.path.startswith("/slow"):
            time.sleep(2)
        self.send_response(200)
        self.send_header("Content-Length", str(len(name)))
        self.end_headers()
        self.wfile.write(name)
    def log_message(self, *a):
        pass
s = ThreadingHTTPServer(("0.0.0.0", 8080), H)
print("ready", flush=True)
s.serve_forever()
"#;

/// A client: `n` GETs over one keep-alive connection; prints `status body` counts as lines.
const CLIENT_PY: &str = r#"
import sys, http.client, collections
host, port, hosthdr, n, path = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), sys.argv[5]
counts = collections.Counter()
conn = None
for i in range(n):
    try:
        if conn is None:
            conn = http.client.HTTPConnection(host, port, timeout=15)
        conn.request("GET", path, headers={"Host": hosthdr})
        r = conn.getresponse()
        body = r.read().decode(errors="replace").strip().replace(" ", "_")[:60]
        counts["%d %s" % (r.status, body or "-")] += 1
        if r.getheader("connection", "").lower() == "close":
            conn.close(); conn = None
    except Exception as e:
        counts["error %s" % type(e).__name__] += 1
        conn = None
for k, v in sorted(counts.items()):
    print(v, k)
"#;

/// An admin scrape from inside a namespace.
const GET_PY: &str = r#"
import sys, urllib.request
try:
    print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())
except Exception as e:
    print("error:", e)
"#;

struct Pod {
    // Dropped in order: the proxy and app first, then the namespace.
    proxy: ChildGuard,
    _app: Option<ChildGuard>,
    ns: Netns,
    ip: String,
}

/// Certificates from a real issuer, one directory per service account.
struct Trust {
    dir: PathBuf,
}

impl Trust {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("mesh-e2e-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        run_ok(
            Command::new(mesh_bin())
                .args([
                    "identity",
                    "init",
                    "--trust-domain",
                    "cluster.local",
                    "--out",
                ])
                .arg(dir.join("ca")),
        );
        Self { dir }
    }

    /// Issues certificates for `sas` (in namespace `default`) through `mesh identity serve`
    /// and `mesh identity issue`, readable by the proxy's UID.
    fn issue(&self, sas: &[&str]) {
        let tokens: String = sas
            .iter()
            .map(|sa| format!("tok-{sa} default/{sa}\n"))
            .collect();
        std::fs::write(self.dir.join("tokens"), tokens).unwrap();
        let addr = free_port();
        let mut issuer = Command::new(mesh_bin())
            .args(["identity", "serve", "--dir"])
            .arg(self.dir.join("ca"))
            .args(["--listen", &addr.to_string(), "--tokens"])
            .arg(self.dir.join("tokens"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        for sa in sas {
            std::fs::write(self.dir.join(format!("{sa}.token")), format!("tok-{sa}")).unwrap();
            loop {
                let out = Command::new(mesh_bin())
                    .args([
                        "identity",
                        "issue",
                        "--issuer",
                        &format!("https://{addr}"),
                        "--token-file",
                    ])
                    .arg(self.dir.join(format!("{sa}.token")))
                    .arg("--trust-anchors")
                    .arg(self.dir.join("ca/ca.crt"))
                    .arg("--out")
                    .arg(self.dir.join(sa))
                    .output()
                    .unwrap();
                if out.status.success() {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "issue {sa}: {}",
                    support::stderr(&out)
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        let _ = issuer.kill();
        let _ = issuer.wait();
        run_ok(
            Command::new("chown")
                .args(["-R", &format!("{PROXY_UID}:{PROXY_UID}")])
                .arg(&self.dir),
        );
    }

    fn certs(&self, sa: &str) -> PathBuf {
        self.dir.join(sa)
    }
}

impl Drop for Trust {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// A veth pair named `a_if`/`b_if` between two namespaces, addressed 10.213.<subnet>.1/.2.
fn link(a: &Netns, a_if: &str, b: &Netns, b_if: &str, subnet: u8) -> (String, String) {
    let (ia, ib) = (format!("10.213.{subnet}.1"), format!("10.213.{subnet}.2"));
    run_ok(Command::new("ip").args([
        "-n",
        a.name(),
        "link",
        "add",
        a_if,
        "type",
        "veth",
        "peer",
        "name",
        b_if,
        "netns",
        b.name(),
    ]));
    for (ns, ifname, ip) in [(a, a_if, &ia), (b, b_if, &ib)] {
        run_ok(Command::new("ip").args([
            "-n",
            ns.name(),
            "addr",
            "add",
            &format!("{ip}/24"),
            "dev",
            ifname,
        ]));
        run_ok(Command::new("ip").args(["-n", ns.name(), "link", "set", ifname, "up"]));
    }
    (ia, ib)
}

/// Starts `mesh init` and `mesh proxy` (as UID 2102) in `ns`, and the app if `app` is given.
fn start_pod(ns: Netns, ip: String, certs: &Path, config: &Path, app: Option<&str>) -> Pod {
    let app = app.map(|name| {
        let mut cmd = ns.command(python3().unwrap());
        cmd.args(["-c", APP_PY, name])
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut g = ns.spawn(cmd, &format!("app {name}"));
        g.wait_for_line("ready", Duration::from_secs(10));
        g
    });
    ns.run_ok(
        mesh_bin().to_str().unwrap(),
        &["init", "--proxy-uid", PROXY_UID],
    );
    let mut cmd = ns.command("setpriv");
    cmd.args(["--reuid", PROXY_UID, "--regid", PROXY_UID, "--clear-groups"])
        .arg(mesh_bin())
        .args(["proxy", "--identity-dir"])
        .arg(certs)
        .arg("--config")
        .arg(config)
        .args(["--shutdown-grace", "10s"])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut proxy = ns.spawn(cmd, &format!("proxy in {}", ns.name()));
    // Echo the proxy's log to the test output, to see why when something fails.
    if let Some(err) = proxy.take_stderr() {
        let label = ns.name().to_owned();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                println!("[{label}] {line}");
            }
        });
    }
    let pod = Pod {
        proxy,
        _app: app,
        ns,
        ip,
    };
    pod.wait_ready();
    pod
}

impl Pod {
    fn get(&self, url: &str) -> String {
        self.ns
            .run_ok(python3().unwrap().to_str().unwrap(), &["-c", GET_PY, url])
    }

    fn metrics(&self) -> String {
        self.get("http://127.0.0.1:4191/metrics")
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.get("http://127.0.0.1:4191/ready").trim() != "ready" {
            assert!(
                Instant::now() < deadline,
                "the proxy in {} is not ready",
                self.ns.name()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Runs the client script in this pod, as `uid` (None: root, whose traffic is redirected).
    fn requests(
        &self,
        uid: Option<&str>,
        dst: &str,
        port: u16,
        host: &str,
        n: usize,
        path: &str,
    ) -> Vec<(usize, String)> {
        let python = python3().unwrap();
        let mut cmd = match uid {
            Some(u) => {
                let mut c = self.ns.command("setpriv");
                c.args(["--reuid", u, "--regid", u, "--clear-groups"])
                    .arg(&python);
                c
            }
            None => self.ns.command(&python),
        };
        cmd.args([
            "-c",
            CLIENT_PY,
            dst,
            &port.to_string(),
            host,
            &n.to_string(),
            path,
        ]);
        run_ok(&mut cmd)
            .lines()
            .filter_map(|l| {
                l.split_once(' ')
                    .map(|(n, k)| (n.parse().unwrap_or(0), k.to_owned()))
            })
            .collect()
    }
}

fn count(results: &[(usize, String)], key: &str) -> usize {
    results
        .iter()
        .filter(|(_, k)| k == key)
        .map(|(n, _)| n)
        .sum()
}

fn metric_line<'a>(text: &'a str, name: &str, parts: &[&str]) -> Option<&'a str> {
    text.lines()
        .find(|l| l.starts_with(&format!("{name}{{")) && parts.iter().all(|p| l.contains(p)))
}

fn write_config(path: &Path, yaml: &str) {
    std::fs::write(path, yaml).unwrap();
    run_ok(
        Command::new("chown")
            .args([&format!("{PROXY_UID}:{PROXY_UID}")])
            .arg(path),
    );
}

#[test]
fn two_pods_talk_mtls_through_transparent_sidecars() {
    if !skip_unless_root_and_netns() || !support::require(&["setpriv"]) || python3().is_none() {
        return;
    }
    let trust = Trust::new();
    trust.issue(&["client", "web", "web-v2"]);

    let (a, b1, b2) = (Netns::new(), Netns::new(), Netns::new());
    let (_, ip1) = link(&a, "to-web", &b1, "eth0", 1);
    let (_, ip2) = link(&a, "to-v2", &b2, "eth0", 2);

    // What the client pod's proxy knows: two backend Services, a split Service over them.
    let client_cfg = trust.dir.join("client.yaml");
    write_config(
        &client_cfg,
        &format!(
            r#"
apiVersion: v1
kind: Service
metadata: {{ name: web-svc, namespace: default }}
spec: {{ ports: [{{ name: http, port: 80 }}] }}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{ name: web-split, namespace: default }}
spec:
  parentRefs: [{{ name: web-svc, kind: Service, group: core, port: 80 }}]
  rules:
  - backendRefs:
    - {{ name: web-v1, port: 80, weight: 90 }}
    - {{ name: web-v2, port: 80, weight: 10 }}
---
apiVersion: v1
kind: Service
metadata: {{ name: web-v1, namespace: default }}
spec: {{ ports: [{{ name: http, port: 80, targetPort: 8080 }}] }}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-v1-x
  namespace: default
  labels: {{ kubernetes.io/service-name: web-v1 }}
  annotations: {{ mesh.io/service-account: web }}
addressType: IPv4
ports: [{{ name: http, port: 8080 }}]
endpoints: [{{ addresses: ["{ip1}"] }}]
---
apiVersion: v1
kind: Service
metadata: {{ name: web-v2, namespace: default }}
spec: {{ ports: [{{ name: http, port: 80, targetPort: 8080 }}] }}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-v2-x
  namespace: default
  labels: {{ kubernetes.io/service-name: web-v2 }}
  annotations: {{ mesh.io/service-account: web-v2 }}
addressType: IPv4
ports: [{{ name: http, port: 8080 }}]
endpoints: [{{ addresses: ["{ip2}"] }}]
"#
        ),
    );
    // The servers admit only authenticated (meshed) clients.
    let server_cfg = trust.dir.join("server.yaml");
    write_config(
        &server_cfg,
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: default\n  annotations: { config.linkerd.io/default-inbound-policy: all-authenticated }\n",
    );

    let web = start_pod(
        b1,
        ip1.clone(),
        &trust.certs("web"),
        &server_cfg,
        Some("web-v1"),
    );
    let v2 = start_pod(
        b2,
        ip2.clone(),
        &trust.certs("web-v2"),
        &server_cfg,
        Some("web-v2"),
    );
    let client = start_pod(
        a,
        "10.213.1.1".into(),
        &trust.certs("client"),
        &client_cfg,
        None,
    );

    // 1. The app calls the other pod's IP and port; both sidecars carry it, unseen.
    let r = client.requests(None, &web.ip, 8080, &format!("{}:8080", web.ip), 5, "/");
    assert_eq!(count(&r, "200 web-v1"), 5, "{r:?}");

    // 2. Both sides count it, with mTLS and each other's identities: the app's plaintext
    //    did not cross the veth.
    let out = client.metrics();
    let line = metric_line(
        &out,
        "response_total",
        &[
            "direction=\"outbound\"",
            "tls=\"true\"",
            "server_id=\"web.default.serviceaccount.identity.linkerd.cluster.local\"",
            "status_code=\"200\"",
        ],
    )
    .unwrap_or_else(|| panic!("client outbound metrics:\n{out}"));
    assert!(line.ends_with(" 5"), "{line}");
    let inb = web.metrics();
    let line = metric_line(
        &inb,
        "request_total",
        &[
            "direction=\"inbound\"",
            "tls=\"true\"",
            "client_id=\"client.default.serviceaccount.identity.linkerd.cluster.local\"",
        ],
    )
    .unwrap_or_else(|| panic!("server inbound metrics:\n{inb}"));
    assert!(line.ends_with(" 5"), "{line}");
    assert!(
        metric_line(&inb, "request_total", &["tls=\"no_identity\""]).is_none(),
        "plaintext reached the server pod:\n{inb}"
    );

    // 3. A client without a sidecar (the proxy's UID bypasses the redirect) is refused:
    //    the server pod admits only authenticated clients.
    let r = client.requests(Some(PROXY_UID), &web.ip, 8080, "web", 3, "/");
    assert_eq!(
        r.iter()
            .filter(|(_, k)| k.starts_with("403 "))
            .map(|(n, _)| n)
            .sum::<usize>(),
        3,
        "{r:?}"
    );

    // 4. A 90/10 split between two backend pods holds within ±3 % over 2,000 requests.
    let r = client.requests(None, "10.213.1.100", 80, "web-svc.default:80", 2000, "/");
    let (v1n, v2n) = (count(&r, "200 web-v1"), count(&r, "200 web-v2"));
    assert_eq!(v1n + v2n, 2000, "{r:?}");
    let share = v2n as f64 / 2000.0;
    assert!(
        (0.07..=0.13).contains(&share),
        "web-v2 got {share:.3} of requests: {r:?}"
    );

    // 5. SIGTERM drains an in-flight slow request before the proxy exits.
    let slow = {
        let ns_name = client.ns.name().to_owned();
        let ip = v2.ip.clone();
        std::thread::spawn(move || {
            let out = Command::new("ip")
                .args(["netns", "exec", &ns_name])
                .arg(python3().unwrap())
                .args([
                    "-c",
                    CLIENT_PY,
                    &ip,
                    "8080",
                    &format!("{ip}:8080"),
                    "1",
                    "/slow",
                ])
                .output()
                .unwrap();
            support::stdout(&out)
        })
    };
    std::thread::sleep(Duration::from_millis(700));
    let mut v2 = v2;
    run_ok(Command::new("kill").args(["-TERM", &v2.proxy.id().to_string()]));
    let reply = slow.join().unwrap();
    assert!(
        reply.contains("1 200 web-v2"),
        "the in-flight request was not drained: {reply}"
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(s) = v2.proxy.try_wait() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the proxy did not exit after draining"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        status.success(),
        "the proxy exited with {status} after SIGTERM"
    );
    drop(trust);
}

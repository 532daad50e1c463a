//! "Pods" for end-to-end sidecar tests: a network namespace with `mesh init`, `mesh proxy`
//! (as UID 2102, with certificates from a real issuer) and an application that knows nothing
//! of the mesh, plus the small Python clients the tests drive them with.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{ChildGuard, Netns, mesh_bin, python3, run_ok};

pub(crate) const PROXY_UID: &str = "2102";

/// A tiny app: answers every request with its name; `/slow` takes two seconds.
pub(crate) const APP_PY: &str = r#"
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
pub(crate) const CLIENT_PY: &str = r#"
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
pub(crate) const GET_PY: &str = r#"
import sys, urllib.request
try:
    print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())
except Exception as e:
    print("error:", e)
"#;

pub(crate) struct Pod {
    // Dropped in order: the proxy and app first, then the namespace.
    pub(crate) proxy: ChildGuard,
    _app: Option<ChildGuard>,
    pub(crate) ns: Netns,
    pub(crate) ip: String,
}

/// Certificates from a real issuer, one directory per service account.
pub(crate) struct Trust {
    pub(crate) dir: PathBuf,
}

impl Trust {
    pub(crate) fn new() -> Self {
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
    pub(crate) fn issue(&self, sas: &[&str]) {
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
                    super::stderr(&out)
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

    pub(crate) fn certs(&self, sa: &str) -> PathBuf {
        self.dir.join(sa)
    }
}

impl Drop for Trust {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub(crate) use super::loopback::free_port;

/// A veth pair named `a_if`/`b_if` between two namespaces, addressed 10.213.<subnet>.1/.2.
pub(crate) fn link(a: &Netns, a_if: &str, b: &Netns, b_if: &str, subnet: u8) -> (String, String) {
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

/// Starts [`APP_PY`] answering with `name` on port 8080 in `ns`, and waits until it listens.
pub(crate) fn start_app(ns: &Netns, name: &str) -> ChildGuard {
    let mut cmd = ns.command(python3().unwrap());
    cmd.args(["-c", APP_PY, name])
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut g = ns.spawn(cmd, &format!("app {name}"));
    g.wait_for_line("ready", Duration::from_secs(10));
    g
}

/// Starts `mesh init` and `mesh proxy` (as UID 2102) in `ns`, and the app if `app` is given.
pub(crate) fn start_pod(
    ns: Netns,
    ip: String,
    certs: &Path,
    config: &Path,
    app: Option<&str>,
) -> Pod {
    start_pod_with(ns, ip, certs, config, app, &[])
}

/// [`start_pod`] with more `mesh proxy` arguments (`--namespace shop`, ...).
pub(crate) fn start_pod_with(
    ns: Netns,
    ip: String,
    certs: &Path,
    config: &Path,
    app: Option<&str>,
    proxy_args: &[&str],
) -> Pod {
    let app = app.map(|name| start_app(&ns, name));
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
        .args(proxy_args)
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
    pub(crate) fn get(&self, url: &str) -> String {
        self.ns
            .run_ok(python3().unwrap().to_str().unwrap(), &["-c", GET_PY, url])
    }

    pub(crate) fn metrics(&self) -> String {
        self.get("http://127.0.0.1:4191/metrics")
    }

    pub(crate) fn wait_ready(&self) {
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
    pub(crate) fn requests(
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

pub(crate) fn count(results: &[(usize, String)], key: &str) -> usize {
    results
        .iter()
        .filter(|(_, k)| k == key)
        .map(|(n, _)| n)
        .sum()
}

pub(crate) fn metric_line<'a>(text: &'a str, name: &str, parts: &[&str]) -> Option<&'a str> {
    text.lines()
        .find(|l| l.starts_with(&format!("{name}{{")) && parts.iter().all(|p| l.contains(p)))
}

pub(crate) fn write_config(path: &Path, yaml: &str) {
    std::fs::write(path, yaml).unwrap();
    run_ok(
        Command::new("chown")
            .args([&format!("{PROXY_UID}:{PROXY_UID}")])
            .arg(path),
    );
}

//! The demo's files and processes: the trust anchor and tokens, the issuer and a proxy per
//! workload as child processes, the config directory they read, and the temporary directory
//! it all lives in. Every child is stopped when the demo ends, however it ends.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use http::StatusCode;
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// The workloads and their service accounts in `emojivoto`.
const NAMES: [(&str, &str); 5] = [
    ("vote-bot", "default"),
    ("web", "web"),
    ("emoji", "emoji"),
    ("voting-v1", "voting"),
    ("voting-v2", "voting"),
];

/// Children that are killed when the demo ends, however it ends.
#[derive(Default)]
pub(super) struct Children(Vec<(String, Child)>);

pub(super) struct Workload {
    pub(super) name: &'static str,
    pub(super) sa: &'static str,
    pub(super) inbound: SocketAddr,
    pub(super) outbound: SocketAddr,
    pub(super) admin: SocketAddr,
    pub(super) app: SocketAddr,
    /// The app's listener, bound from the start: a port picked now and bound later could be
    /// taken in between (by a concurrent test's connection, say), and the demo would fail.
    pub(super) app_listener: Option<std::net::TcpListener>,
    pub(super) tap: SocketAddr,
}

/// The demo's mesh: where its files are, its workloads, its issuer and its children.
pub(super) struct Mesh {
    pub(super) dir: PathBuf,
    /// The directory every proxy reads (`--config`).
    pub(super) config: PathBuf,
    pub(super) ws: Vec<Workload>,
    pub(super) issuer: SocketAddr,
    exe: PathBuf,
    children: Children,
    // Last: removed after the children are stopped.
    tmp: TempDir,
}

/// A temporary directory removed on drop (or a kept one).
struct TempDir {
    path: PathBuf,
    keep: bool,
}

// === impl Children ===

impl Drop for Children {
    fn drop(&mut self) {
        for (_, c) in &mut self.0 {
            let _ = c.kill();
        }
        for (_, c) in &mut self.0 {
            let _ = c.wait();
        }
    }
}

// === impl Mesh ===

impl Mesh {
    /// Trust, the issuer, the workloads' addresses and the config directory with
    /// `route_yaml` as the voting route; no proxy yet.
    pub(super) fn start(keep: Option<PathBuf>, route_yaml: &str) -> anyhow::Result<Self> {
        let tmp = TempDir::new(keep)?;
        let dir = tmp.path.clone();
        let exe = std::env::current_exe().context("cannot find the mesh binary")?;
        trust(&exe, &dir)?;
        let mut children = Children::default();
        let issuer = crate::ports::unused_loopback_port()?;
        children.0.push((
            "issuer".into(),
            Command::new(&exe)
                .args(["identity", "serve", "--dir"])
                .arg(dir.join("ca"))
                .args(["--listen", &issuer.to_string(), "--tokens"])
                .arg(dir.join("tokens"))
                .stdout(Stdio::null())
                .stderr(log(&dir, "issuer")?)
                .spawn()
                .context("cannot start the issuer")?,
        ));
        let mut ws = Vec::new();
        for (name, sa) in NAMES {
            let app = std::net::TcpListener::bind("127.0.0.1:0")?;
            app.set_nonblocking(true)?;
            ws.push(Workload {
                name,
                sa,
                inbound: crate::ports::unused_loopback_port()?,
                outbound: crate::ports::unused_loopback_port()?,
                admin: crate::ports::unused_loopback_port()?,
                app: app.local_addr()?,
                app_listener: Some(app),
                tap: crate::ports::unused_loopback_port()?,
            });
        }
        let config = dir.join("config");
        std::fs::create_dir_all(&config)?;
        write(&config.join("discovery.yaml"), &discovery_yaml(&ws))?;
        write(&config.join("voting-route.yaml"), route_yaml)?;
        Ok(Self {
            dir,
            config,
            ws,
            issuer,
            exe,
            children,
            tmp,
        })
    }

    /// The workload called `name`.
    pub(super) fn workload(&self, name: &str) -> anyhow::Result<&Workload> {
        (self.ws.iter().find(|w| w.name == name)).with_context(|| format!("no {name}"))
    }

    /// A proxy beside each workload, each ready to serve.
    pub(super) async fn start_proxies(&mut self) -> anyhow::Result<()> {
        for w in &self.ws {
            let child = self.proxy(w)?;
            self.children.0.push((w.name.to_owned(), child));
        }
        self.wait_ready().await
    }

    fn proxy(&self, w: &Workload) -> anyhow::Result<Child> {
        Command::new(&self.exe)
            .args(["proxy", "--mode", "explicit", "--namespace", "emojivoto"])
            .args([
                "--inbound-addr",
                &w.inbound.to_string(),
                "--outbound-addr",
                &w.outbound.to_string(),
            ])
            .args([
                "--admin-addr",
                &w.admin.to_string(),
                "--inbound-forward",
                &w.app.to_string(),
                "--tap-addr",
                &w.tap.to_string(),
            ])
            .arg("--config")
            .arg(&self.config)
            .args([
                "--identity-issuer",
                &format!("https://{}", self.issuer),
                "--identity-token-file",
            ])
            .arg(self.dir.join(format!("{}.token", w.name)))
            .arg("--trust-anchors")
            .arg(self.dir.join("ca").join("ca.crt"))
            .args(["--config-poll", "500ms", "--shutdown-grace", "2s"])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log(&self.dir, w.name)?)
            .spawn()
            .with_context(|| format!("cannot start the {} proxy", w.name))
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let client: Client<HttpConnector, Empty<Bytes>> =
            Client::builder(TokioExecutor::new()).build_http();
        let deadline = Instant::now() + Duration::from_secs(30);
        for w in &self.ws {
            loop {
                let uri = format!("http://{}/ready", w.admin);
                if let Ok(r) = client.get(uri.parse::<http::Uri>()?).await
                    && r.status() == StatusCode::OK
                {
                    break;
                }
                for (name, c) in &mut self.children.0 {
                    if let Ok(Some(status)) = c.try_wait() {
                        bail!(
                            "{name} exited ({status}); see {}",
                            self.dir.join(format!("{name}.log")).display()
                        );
                    }
                }
                if Instant::now() > deadline {
                    bail!("the {} proxy was not ready within 30s", w.name);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(())
    }

    /// Where the logs went, for the last line the demo prints.
    pub(super) fn kept(&self) -> String {
        if self.tmp.keep {
            self.dir.display().to_string()
        } else {
            "removed (use --keep DIR to keep them)".to_owned()
        }
    }

    /// Proxies drain on SIGTERM; whatever is left is killed, then the files removed.
    pub(super) async fn stop(self) {
        for (_, c) in &self.children.0 {
            if let Ok(pid) = i32::try_from(c.id()) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// An anchor and issuer, and a token per workload, as an operator would make them.
fn trust(exe: &Path, dir: &Path) -> anyhow::Result<()> {
    let status = Command::new(exe)
        .args([
            "identity",
            "init",
            "--trust-domain",
            "cluster.local",
            "--out",
        ])
        .arg(dir.join("ca"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?;
    if !status.success() {
        bail!("mesh identity init failed");
    }
    let mut tokens = String::new();
    for (name, sa) in NAMES {
        let _ = writeln!(tokens, "token-{name} emojivoto/{sa}");
        write(&dir.join(format!("{name}.token")), &format!("token-{name}"))?;
    }
    // The dashboard's tap identity: the `mesh-tap` account the proxies allow by default.
    tokens.push_str("token-mesh-tap linkerd/mesh-tap\n");
    write(&dir.join("mesh-tap.token"), "token-mesh-tap")?;
    write(&dir.join("tokens"), &tokens)
}

fn log(dir: &Path, name: &str) -> std::io::Result<std::fs::File> {
    std::fs::File::create(dir.join(format!("{name}.log")))
}

/// The voting route. With `retries`, voting-v2's failures are retried (and masked); without,
/// its callers get them, which is what a canary's analysis must see.
pub(super) fn route_yaml(v1: u32, v2: u32, retries: bool) -> String {
    let annotations = if retries {
        "\n  annotations:\n    retry.linkerd.io/http: 5xx\n    retry.linkerd.io/limit: \"3\""
    } else {
        ""
    };
    format!(
        "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: voting-canary
  namespace: emojivoto{annotations}
spec:
  parentRefs: [{{ name: voting-svc, kind: Service, group: core, port: 8080 }}]
  rules:
  - backendRefs:
    - {{ name: voting-v1, port: 8080, weight: {v1} }}
    - {{ name: voting-v2, port: 8080, weight: {v2} }}
"
    )
}

fn discovery_yaml(ws: &[Workload]) -> String {
    let mut s = String::new();
    let services = [
        ("web-svc", "web"),
        ("emoji-svc", "emoji"),
        ("voting-v1", "voting-v1"),
        ("voting-v2", "voting-v2"),
    ];
    s.push_str("apiVersion: v1\nkind: Service\nmetadata: { name: voting-svc, namespace: emojivoto }\nspec:\n  ports: [{ name: http, port: 8080 }]\n");
    for (svc, wl) in services {
        let Some(w) = ws.iter().find(|w| w.name == wl) else {
            continue;
        };
        let _ = write!(
            s,
            "---
apiVersion: v1
kind: Service
metadata: {{ name: {svc}, namespace: emojivoto }}
spec:
  ports: [{{ name: http, port: 8080 }}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {svc}-demo
  namespace: emojivoto
  labels: {{ kubernetes.io/service-name: {svc} }}
  annotations: {{ mesh.io/service-account: {sa} }}
addressType: IPv4
ports: [{{ name: http, port: {port} }}]
endpoints: [{{ addresses: [\"{ip}\"] }}]
",
            sa = w.sa,
            port = w.inbound.port(),
            ip = w.inbound.ip(),
        );
    }
    s
}

pub(super) fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    // Write then rename, so a watching proxy never reads half a file.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).with_context(|| tmp.display().to_string())?;
    std::fs::rename(&tmp, path).with_context(|| path.display().to_string())
}

// === impl TempDir ===

impl TempDir {
    fn new(keep: Option<PathBuf>) -> anyhow::Result<Self> {
        let (path, keep) = match keep {
            Some(p) => (p, true),
            None => (
                std::env::temp_dir().join(format!("mesh-demo-{}", std::process::id())),
                false,
            ),
        };
        std::fs::create_dir_all(&path).with_context(|| path.display().to_string())?;
        Ok(Self { path, keep })
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

// `ports` is also compiled into every end-to-end test binary (tests/support), so its test lives
// here, beside its main user, to run once.
#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, TcpListener};

    use crate::ports::{FLOOR, ephemeral_low, unused_loopback_port};

    #[test]
    fn the_demo_picks_distinct_free_ports_outside_the_ephemeral_range() {
        let low = ephemeral_low().unwrap_or(32_768);
        let ports: Vec<u16> = (0..50)
            .map(|_| unused_loopback_port().unwrap().port())
            .collect();
        let mut unique = ports.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(
            unique.len(),
            ports.len(),
            "a port was handed out twice: {ports:?}"
        );
        if low > FLOOR + 1_000 {
            assert!(ports.iter().all(|p| (FLOOR..low).contains(p)), "{ports:?}");
        }
        for p in ports {
            TcpListener::bind((Ipv4Addr::LOCALHOST, p)).expect("the port is still free");
        }
    }
}

//! `mesh demo`: a local mesh on loopback, no root and no setup.
//!
//! An issuer (`mesh identity serve`) signs certificates for four workloads modelled on
//! emojivoto — `vote-bot` → `web` → `emoji`, and `web` → `voting` split 90/10 between
//! `voting-v1` and a faulty `voting-v2` — each behind its own real `mesh proxy` in explicit
//! mode, talking mTLS to each other. The apps run in this process; the proxies and the issuer
//! are child processes. Every second it prints the table `mesh stat --scrape` prints (the
//! same code, over the last second's scrapes of each proxy's `/metrics`); half-way the canary
//! shifts to 50/50 by rewriting the route file the proxies watch. Every child is stopped on exit, on Ctrl-C too.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use clap::Args;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use crate::stat;
use crate::stat::print::{self, Output};
use crate::stat::query::{self, Kind, Resource, Scope, StatQuery};
use crate::stat::source::{Scraped, Source, Target, scrape_all};

/// Run a local mesh on loopback and watch it work.
#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// How long to run (the canary shifts half-way).
    #[arg(long, default_value = "20s", value_parser = mesh_core::values::parse_duration)]
    duration: Duration,
    /// Requests per second from the traffic generator.
    #[arg(long, default_value_t = 50)]
    rps: u32,
    /// Share of voting-v2's requests that fail with 500.
    #[arg(long, default_value_t = 0.25)]
    fault_rate: f64,
    /// Keep the generated files (certificates, config, logs) in this directory.
    #[arg(long)]
    keep: Option<PathBuf>,
    /// Also serve the dashboard over the demo's proxies (default 127.0.0.1:50750); the URL is
    /// printed, no browser is opened.
    #[arg(long, num_args = 0..=1, default_missing_value = "127.0.0.1:50750")]
    dashboard: Option<SocketAddr>,
}

/// Children that are killed when the demo ends, however it ends.
#[derive(Default)]
struct Children(Vec<(String, Child)>);

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

struct Workload {
    name: &'static str,
    sa: &'static str,
    inbound: SocketAddr,
    outbound: SocketAddr,
    admin: SocketAddr,
    app: SocketAddr,
    tap: SocketAddr,
}

pub(crate) fn run(args: DemoArgs) -> ExitCode {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build();
    crate::out::block_on(runtime, demo(args))
}

fn free_port() -> std::io::Result<SocketAddr> {
    std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()
}

fn route_yaml(v1: u32, v2: u32) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: voting-canary
  namespace: emojivoto
  annotations:
    retry.linkerd.io/http: 5xx
    retry.linkerd.io/limit: \"3\"
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

async fn demo(args: DemoArgs) -> anyhow::Result<()> {
    let tmp = TempDir::new(args.keep.clone())?;
    let dir = tmp.path().to_owned();
    let exe = std::env::current_exe().context("cannot find the mesh binary")?;
    let mut children = Children::default();

    // Trust: an anchor and issuer, then the issuer service, as an operator would run them.
    let status = Command::new(&exe)
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
    let names = [
        ("vote-bot", "default"),
        ("web", "web"),
        ("emoji", "emoji"),
        ("voting-v1", "voting"),
        ("voting-v2", "voting"),
    ];
    let mut tokens = String::new();
    for (name, sa) in names {
        let _ = writeln!(tokens, "token-{name} emojivoto/{sa}");
        write(&dir.join(format!("{name}.token")), &format!("token-{name}"))?;
    }
    // The dashboard's tap identity: the `mesh-tap` account the proxies allow by default.
    tokens.push_str("token-mesh-tap linkerd/mesh-tap\n");
    write(&dir.join("mesh-tap.token"), "token-mesh-tap")?;
    write(&dir.join("tokens"), &tokens)?;
    let issuer = free_port()?;
    let log = |name: &str| std::fs::File::create(dir.join(format!("{name}.log")));
    children.0.push((
        "issuer".into(),
        Command::new(&exe)
            .args(["identity", "serve", "--dir"])
            .arg(dir.join("ca"))
            .args(["--listen", &issuer.to_string(), "--tokens"])
            .arg(dir.join("tokens"))
            .stdout(Stdio::null())
            .stderr(log("issuer")?)
            .spawn()
            .context("cannot start the issuer")?,
    ));

    let mut ws = Vec::new();
    for (name, sa) in names {
        ws.push(Workload {
            name,
            sa,
            inbound: free_port()?,
            outbound: free_port()?,
            admin: free_port()?,
            app: free_port()?,
            tap: free_port()?,
        });
    }
    let config = dir.join("config");
    std::fs::create_dir_all(&config)?;
    write(&config.join("discovery.yaml"), &discovery_yaml(&ws))?;
    write(&config.join("voting-route.yaml"), &route_yaml(90, 10))?;

    // The apps, in this process.
    let stats = Arc::new(AppStats::default());
    for w in &ws {
        let listener = TcpListener::bind(w.app)
            .await
            .with_context(|| w.app.to_string())?;
        let web_out = ws.iter().find(|x| x.name == "web").map(|x| x.outbound);
        tokio::spawn(serve_app(
            listener,
            w.name,
            web_out,
            args.fault_rate,
            Arc::clone(&stats),
        ));
    }
    // A proxy beside each.
    for w in &ws {
        let child = Command::new(&exe)
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
            .arg(&config)
            .args([
                "--identity-issuer",
                &format!("https://{issuer}"),
                "--identity-token-file",
            ])
            .arg(dir.join(format!("{}.token", w.name)))
            .arg("--trust-anchors")
            .arg(dir.join("ca").join("ca.crt"))
            .args(["--config-poll", "500ms", "--shutdown-grace", "2s"])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log(w.name)?)
            .spawn()
            .with_context(|| format!("cannot start the {} proxy", w.name))?;
        children.0.push((w.name.to_owned(), child));
    }
    wait_ready(&ws, &mut children, &dir).await?;
    println!(
        "mesh demo: 5 workloads, each behind its own mesh proxy with an issued identity; traffic for {:?}",
        args.duration
    );
    println!(
        "  vote-bot → web → emoji, and web → voting-svc = 90% voting-v1 + 10% voting-v2 ({}% of v2's answers are 500s; retries mask them)\n",
        (args.fault_rate * 100.0).round()
    );

    // Traffic: vote-bot's app sends through vote-bot's outbound proxy to web.
    let bot = ws
        .iter()
        .find(|w| w.name == "vote-bot")
        .map(|w| w.outbound)
        .context("no vote-bot")?;
    let start = Instant::now();
    let traffic = tokio::spawn(generate(bot, args.rps, args.duration, Arc::clone(&stats)));
    let targets: Vec<Target> = ws
        .iter()
        .map(|w| Target {
            labels: stat::workload_labels("emojivoto", w.name),
            addr: w.admin,
        })
        .collect();
    if let Some(addr) = args.dashboard {
        let tap = crate::dashboard::DemoTap {
            namespace: "emojivoto",
            issuer,
            dir: dir.clone(),
            proxies: ws.iter().map(|w| (w.name, w.sa, w.tap)).collect(),
        };
        let addr =
            crate::dashboard::start_for_demo(addr, targets.clone(), config.clone(), tap).await?;
        println!("dashboard: http://{addr}/\n");
    }
    let client = stat::source::http_client();
    let mut last = (Instant::now(), scrape_all(&client, &targets).await);
    let mut shifted = false;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = &mut ctrl_c => { println!("interrupted"); break; }
        }
        let elapsed = start.elapsed();
        if !shifted && elapsed >= args.duration / 2 {
            write(&config.join("voting-route.yaml"), &route_yaml(50, 50))?;
            println!(
                ">>> shifting the canary: voting-v1 50% / voting-v2 50% (route file rewritten; proxies reload it)"
            );
            shifted = true;
        }
        // The table of `mesh stat --scrape`, over the last second.
        let now = scrape_all(&client, &targets).await;
        let at = Instant::now();
        let before = std::mem::replace(&mut last, (at, now.clone()));
        let source = Source::Scraped(Scraped::from_scrapes(
            &targets,
            before.1,
            now,
            at - before.0,
        ));
        print_tick(elapsed, &source).await;
        if elapsed >= args.duration {
            break;
        }
    }
    traffic.abort();
    let sent = stats.sent.load(Ordering::Relaxed);
    let ok = stats.ok.load(Ordering::Relaxed);
    println!(
        "\nvote-bot sent {sent} requests, {ok} succeeded ({:.2}%); voting-v2 failed {} of its answers and retries hid them.",
        if sent > 0 {
            ok as f64 * 100.0 / sent as f64
        } else {
            0.0
        },
        stats.faults.load(Ordering::Relaxed)
    );
    println!(
        "logs and certificates: {}",
        if args.keep.is_some() {
            dir.display().to_string()
        } else {
            "removed (use --keep DIR to keep them)".to_owned()
        }
    );
    // Proxies drain on SIGTERM; `Children` kills whatever is left.
    for (_, c) in &children.0 {
        if let Ok(pid) = i32::try_from(c.id()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(children);
    drop(tmp);
    Ok(())
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    // Write then rename, so a watching proxy never reads half a file.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).with_context(|| tmp.display().to_string())?;
    std::fs::rename(&tmp, path).with_context(|| path.display().to_string())
}

/// This second's golden metrics per workload, and the calls vote-bot made as it saw them.
async fn print_tick(elapsed: Duration, source: &Source) {
    let q = StatQuery {
        resource: Resource {
            kind: Kind::Deployment,
            name: None,
        },
        scope: Scope::Namespace("emojivoto".into()),
        from: None,
        to: None,
    };
    match query::stat(source, &q, false).await {
        Ok(rows) => print!(
            "t={:.1}s\n{}",
            elapsed.as_secs_f64(),
            print::workloads(&rows, Output::Table)
        ),
        Err(e) => eprintln!("t={:.1}s: {e}", elapsed.as_secs_f64()),
    }
    let from = StatQuery {
        from: Some(Resource {
            kind: Kind::Deployment,
            name: Some("vote-bot".into()),
        }),
        ..q
    };
    for r in query::stat(source, &from, false).await.unwrap_or_default() {
        if let Some(sr) = r.success_rate {
            println!(
                "vote-bot → {}: {:.2}% success, {:.1} rps (as vote-bot sees it, through the mesh)",
                r.name,
                sr * 100.0,
                r.golden.rps
            );
        }
    }
}

async fn wait_ready(ws: &[Workload], children: &mut Children, dir: &Path) -> anyhow::Result<()> {
    let client: Client<HttpConnector, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let deadline = Instant::now() + Duration::from_secs(30);
    for w in ws {
        loop {
            let uri = format!("http://{}/ready", w.admin);
            if let Ok(r) = client.get(uri.parse::<http::Uri>()?).await
                && r.status() == StatusCode::OK
            {
                break;
            }
            for (name, c) in &mut children.0 {
                if let Ok(Some(status)) = c.try_wait() {
                    bail!(
                        "{name} exited ({status}); see {}",
                        dir.join(format!("{name}.log")).display()
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

#[derive(Debug, Default)]
struct AppStats {
    sent: AtomicU64,
    ok: AtomicU64,
    faults: AtomicU64,
}

async fn serve_app(
    listener: TcpListener,
    name: &'static str,
    web_out: Option<SocketAddr>,
    fault_rate: f64,
    stats: Arc<AppStats>,
) {
    let client: Client<HttpConnector, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let client = client.clone();
        let stats = Arc::clone(&stats);
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let client = client.clone();
                let stats = Arc::clone(&stats);
                async move {
                    Ok::<_, Infallible>(app(name, req, web_out, fault_rate, client, stats).await)
                }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tcp), svc)
                .await;
        });
    }
}

async fn call(
    client: &Client<HttpConnector, Empty<Bytes>>,
    out: SocketAddr,
    host: &str,
    path: &str,
) -> StatusCode {
    let req = Request::get(format!("http://{out}{path}"))
        .header(http::header::HOST, host)
        .body(Empty::new());
    let Ok(req) = req else {
        return StatusCode::INTERNAL_SERVER_ERROR;
    };
    match client.request(req).await {
        Ok(r) => {
            let status = r.status();
            let _ = r.into_body().collect().await;
            status
        }
        Err(_) => StatusCode::BAD_GATEWAY,
    }
}

async fn app(
    name: &str,
    _req: Request<Incoming>,
    web_out: Option<SocketAddr>,
    fault_rate: f64,
    client: Client<HttpConnector, Empty<Bytes>>,
    stats: Arc<AppStats>,
) -> Response<Full<Bytes>> {
    let (status, body) = match name {
        "web" => {
            let Some(out) = web_out else {
                return text(StatusCode::INTERNAL_SERVER_ERROR, "no outbound");
            };
            let emoji = call(&client, out, "emoji-svc.emojivoto:8080", "/list").await;
            let vote = call(&client, out, "voting-svc.emojivoto:8080", "/vote/doughnut").await;
            if emoji.is_success() && vote.is_success() {
                (StatusCode::OK, "voted 🍩")
            } else {
                (StatusCode::BAD_GATEWAY, "a backend failed")
            }
        }
        "voting-v2" if fastrand::f64() < fault_rate => {
            stats.faults.fetch_add(1, Ordering::Relaxed);
            (StatusCode::INTERNAL_SERVER_ERROR, "injected fault")
        }
        _ => (StatusCode::OK, "ok"),
    };
    text(status, body)
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r
}

async fn generate(bot_out: SocketAddr, rps: u32, duration: Duration, stats: Arc<AppStats>) {
    let client: Client<HttpConnector, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let mut tick = tokio::time::interval(Duration::from_secs(1) / rps.max(1));
    let end = Instant::now() + duration;
    while Instant::now() < end {
        tick.tick().await;
        let client = client.clone();
        let stats = Arc::clone(&stats);
        tokio::spawn(async move {
            stats.sent.fetch_add(1, Ordering::Relaxed);
            if call(&client, bot_out, "web-svc.emojivoto:8080", "/api/vote")
                .await
                .is_success()
            {
                stats.ok.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
}

/// A temporary directory removed on drop (or a kept one).
struct TempDir {
    path: PathBuf,
    keep: bool,
}

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

    fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

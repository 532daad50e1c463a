//! `mesh dashboard`: a web page of the mesh's golden metrics, served by the binary, as
//! `linkerd viz dashboard` shows them: workloads with success rate, RPS and latencies (and
//! sparklines of the last two minutes), the topology of who calls whom over mTLS, routes with
//! their backends' configured weights beside the traffic they take, each proxy's certificate
//! expiry, and a live tap view.
//!
//! The numbers come from the same sources and queries as `mesh stat` ([`crate::stat`]): a
//! Prometheus, or the proxies' admin endpoints scraped directly. A poller refreshes them every
//! [`REFRESH`] into one snapshot that every browser reads, so the number of open pages never
//! multiplies the load on Prometheus or the proxies. The policy files (`--policy`) are
//! compiled by the proxy's own [`ConfigSource`], watched the same way.
//!
//! `mesh demo --dashboard` serves the same page over the demo's proxies ([`start`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use arc_swap::ArcSwap;
use clap::Args;
use mesh_core::PolicyConfig;
use mesh_tower::metrics::Registry;
use serde_json::json;
use tokio::net::TcpListener;

use crate::canary::board::Board;
use crate::proxy::config::ConfigSource;
use crate::stat::query::Scope;
use crate::stat::series::Sample;
use crate::stat::source::{
    HttpClient, Prometheus, Scraped, Source, Target, http_client, scrape_all,
};
use crate::stat::{Origin, SourceArgs, StatError};

pub(crate) mod api;
mod server;
pub(crate) mod tap;

use tap::Tap;

/// How often the numbers are refreshed (and the page polls).
pub(crate) const REFRESH: Duration = Duration::from_secs(2);

/// Serve the dashboard: golden metrics, topology, routes, certificates and tap in a browser.
#[derive(Debug, Args)]
pub(crate) struct DashboardArgs {
    /// Where to serve the page.
    #[arg(long, default_value = "127.0.0.1:50750")]
    addr: SocketAddr,
    /// Route, TrafficSplit and HTTPRoute files or directories (repeatable): the routes'
    /// configured weights. Re-read when they change.
    #[arg(long)]
    policy: Vec<PathBuf>,
    /// The proxies' tap addresses for the live tap view: [NAMESPACE/]NAME=HOST:PORT,
    /// comma-separated (as `mesh tap --proxy`).
    #[arg(long, value_delimiter = ',', requires = "identity_dir")]
    tap_proxy: Vec<String>,
    /// The dashboard's mesh certificate for tap: a directory with tls.crt, tls.key and ca.crt,
    /// of an identity the proxies allow (`--tap-allow`).
    #[arg(long, env = "MESH_IDENTITY_DIR", value_name = "DIR")]
    identity_dir: Option<PathBuf>,
    /// The trust domain of the proxies' identities.
    #[arg(long, env = "MESH_TRUST_DOMAIN", default_value = mesh_core::identity::DEFAULT_TRUST_DOMAIN)]
    trust_domain: String,
    #[command(flatten)]
    source: SourceArgs,
}

/// What every connection reads: the last refresh, and how to tap.
#[derive(Debug)]
pub(crate) struct Shared {
    latest: ArcSwap<Latest>,
    tap: Tap,
    /// The canaries `mesh demo --canary` drives; `None` elsewhere (the cluster's Canary
    /// objects are not read: their status is in `kubectl get canary`).
    canaries: Option<Arc<Board>>,
}

/// One refresh's answers, ready to send.
#[derive(Debug)]
struct Latest {
    workloads: serde_json::Value,
    edges: serde_json::Value,
    routes: serde_json::Value,
    certs: serde_json::Value,
    status: serde_json::Value,
}

/// Where each refresh's numbers come from.
enum Live {
    Prometheus(Prometheus),
    /// Scrapes kept for one window, so each refresh takes rates over the last `window`.
    Scrape {
        client: HttpClient,
        targets: Vec<Target>,
        window: Duration,
        past: std::collections::VecDeque<(Instant, Vec<Option<Vec<Sample>>>)>,
    },
}

/// The poller's inputs.
struct Poller {
    live: Live,
    scope: Scope,
    policy: Option<Arc<ConfigSource>>,
    history: api::History,
    shared: Arc<Shared>,
}

pub(crate) fn run(args: DashboardArgs) -> ExitCode {
    // A refused policy file is logged (and the last good one kept), as the proxy does.
    crate::identity::init_tracing();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build();
    crate::out::block_on(runtime, dashboard(args))
}

async fn dashboard(args: DashboardArgs) -> anyhow::Result<()> {
    // A path that cannot be read is a mistake to report now, not a route list left empty.
    crate::files::yaml_files(&args.policy)?;
    let live = match args.source.origin()? {
        Origin::Prometheus(p) => Live::Prometheus(*p),
        Origin::Scrape { targets, window } => Live::scrape(targets, window),
    };
    let scope = args.source.scope();
    let tap = match &args.identity_dir {
        Some(dir) if !args.tap_proxy.is_empty() => {
            let ns = args.source.namespace();
            let targets =
                crate::tap::targets(&args.tap_proxy, ns, &args.trust_domain, |_, _| true)?;
            Tap::proxies(dir, targets)?
        }
        _ => Tap::not_configured(),
    };
    let (addr, server) = start(args.addr, live, scope, args.policy, tap, None).await?;
    println!("mesh dashboard: http://{addr}/");
    server.await.context("the dashboard server failed")?;
    Ok(())
}

/// Binds `addr`, starts the poller and returns the address served and the server's task
/// (which ends on SIGTERM or Ctrl-C).
async fn start(
    addr: SocketAddr,
    live: Live,
    scope: Scope,
    policy: Vec<PathBuf>,
    tap: Tap,
    canaries: Option<Arc<Board>>,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let addr = listener.local_addr()?;
    let policy = (!policy.is_empty()).then(|| {
        Arc::new(ConfigSource::with_paths(
            policy,
            PolicyConfig::default(),
            Registry::new(),
        ))
    });
    let shared = Arc::new(Shared {
        latest: ArcSwap::from_pointee(Latest::default()),
        tap,
        canaries,
    });
    let poller = Poller {
        live,
        scope,
        policy,
        history: api::History::default(),
        shared: Arc::clone(&shared),
    };
    tokio::spawn(poller.run());
    Ok((addr, tokio::spawn(server::serve(listener, shared))))
}

/// What the demo's dashboard taps: the issuer that signs its `mesh-tap` certificate (token
/// file `mesh-tap.token` and anchors `ca/ca.crt` in `dir`), and each proxy's name, service
/// account and tap address in `namespace`.
pub(crate) struct DemoTap {
    pub(crate) namespace: &'static str,
    pub(crate) issuer: SocketAddr,
    pub(crate) dir: PathBuf,
    pub(crate) proxies: Vec<(&'static str, &'static str, SocketAddr)>,
}

/// `mesh demo --dashboard`: the dashboard over the demo's proxies and its route files, with
/// rates over the last few seconds so the canary's shift shows quickly, tapping as `mesh-tap`,
/// and the demo's canaries (`--canary`) from the `board` its driver records on.
pub(crate) async fn start_for_demo(
    addr: SocketAddr,
    targets: Vec<Target>,
    config: PathBuf,
    tap: DemoTap,
    board: Option<Arc<Board>>,
) -> anyhow::Result<SocketAddr> {
    let live = Live::scrape(targets, Duration::from_secs(4));
    let scope = Scope::Namespace(tap.namespace.to_owned());
    let tap = tap
        .issue()
        .unwrap_or_else(|e| Tap::Unavailable(format!("{e:#}")));
    let (addr, _server) = start(addr, live, scope, vec![config], tap, board).await?;
    Ok(addr)
}

impl DemoTap {
    /// Gets the `mesh-tap` certificate from the issuer, as an operator would with
    /// `mesh identity issue`.
    fn issue(self) -> anyhow::Result<Tap> {
        let out = self.dir.join("mesh-tap");
        let status = std::process::Command::new(std::env::current_exe()?)
            .args([
                "identity",
                "issue",
                "--issuer",
                &format!("https://{}", self.issuer),
            ])
            .arg("--token-file")
            .arg(self.dir.join("mesh-tap.token"))
            .arg("--trust-anchors")
            .arg(self.dir.join("ca").join("ca.crt"))
            .arg("--out")
            .arg(&out)
            .stdout(std::process::Stdio::null())
            .status()?;
        anyhow::ensure!(
            status.success(),
            "the dashboard's tap certificate was refused: {status}"
        );
        let mut targets = Vec::new();
        for (name, sa, addr) in self.proxies {
            let identity = mesh_core::identity::Identity::new(
                mesh_core::identity::DEFAULT_TRUST_DOMAIN,
                self.namespace,
                sa,
            )?;
            targets.push(crate::tap::client::TapTarget {
                name: format!("{}/{name}", self.namespace),
                addr,
                identity,
            });
        }
        Ok(Tap::proxies(&out, targets)?)
    }
}

// === impl Latest ===

impl Default for Latest {
    /// Before the first refresh: empty lists, and a status that says so.
    fn default() -> Self {
        Self {
            workloads: json!([]),
            edges: json!([]),
            routes: json!([]),
            certs: json!([]),
            status: json!({ "error": null, "starting": true }),
        }
    }
}

// === impl Live ===

impl Live {
    fn scrape(targets: Vec<Target>, window: Duration) -> Self {
        Self::Scrape {
            client: http_client(),
            targets,
            window,
            past: std::collections::VecDeque::new(),
        }
    }

    /// This refresh's source, or `None` while there is only one scrape to take rates from.
    async fn next(&mut self) -> Result<Option<Source>, StatError> {
        let (client, targets, window, past) = match self {
            Self::Prometheus(p) => return Ok(Some(Source::Prometheus(Box::new(p.clone())))),
            Self::Scrape {
                client,
                targets,
                window,
                past,
            } => (client, targets, *window, past),
        };
        let now = scrape_all(client, targets).await;
        if now.iter().all(Option::is_none) {
            return Err(StatError::NoProxy);
        }
        let at = Instant::now();
        // Keep the newest scrape at least `window` old and everything after it: a bounded
        // few scrapes, since one is taken per refresh.
        while past.len() > 1 && past.get(1).is_some_and(|(t, _)| at - *t >= window) {
            past.pop_front();
        }
        past.push_back((at, now.clone()));
        match past.front() {
            Some((t, before)) if past.len() > 1 => Ok(Some(Source::Scraped(
                Scraped::from_scrapes(targets, before.clone(), now, at - *t),
            ))),
            _ => Ok(None),
        }
    }

    fn describe(&self) -> serde_json::Value {
        match self {
            Self::Prometheus(_) => json!({ "kind": "prometheus" }),
            Self::Scrape { targets, .. } => json!({ "kind": "scrape", "proxies": targets.len() }),
        }
    }
}

// === impl Poller ===

impl Poller {
    async fn run(mut self) {
        let mut tick = tokio::time::interval(REFRESH);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.refresh().await;
        }
    }

    async fn refresh(&mut self) {
        if let Some(p) = &self.policy {
            p.load().await;
        }
        let snapshot = self
            .policy
            .as_ref()
            .filter(|p| p.is_ready())
            .map(|p| p.policy.load());
        let (answers, error) = match self.live.next().await {
            Ok(Some(source)) => {
                match api::answers(&source, &self.scope, snapshot.as_deref(), &mut self.history)
                    .await
                {
                    Ok(a) => (Some((a, source.window())), None),
                    Err(e) => (None, Some(e.to_string())),
                }
            }
            Ok(None) => (None, None),
            Err(e) => (None, Some(e.to_string())),
        };
        let previous = self.shared.latest.load_full();
        let updated = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let tap = match &self.shared.tap {
            Tap::Feed(_) => json!({ "available": true }),
            Tap::Unavailable(why) => json!({ "available": false, "reason": why }),
        };
        let status = |window: Option<Duration>| {
            json!({
                "source": self.live.describe(),
                "window_seconds": window.map(|w| w.as_secs_f64()),
                "updated_at": updated,
                "error": error,
                "policy_loaded": snapshot.is_some(),
                "tap": tap,
            })
        };
        let latest = match answers {
            Some((a, window)) => Latest {
                workloads: a.workloads,
                edges: a.edges,
                routes: a.routes,
                certs: a.certs,
                status: status(Some(window)),
            },
            // Nothing new: the last numbers stay on the page, with the error beside them.
            None => Latest {
                workloads: previous.workloads.clone(),
                edges: previous.edges.clone(),
                routes: previous.routes.clone(),
                certs: previous.certs.clone(),
                status: status(None),
            },
        };
        self.shared.latest.store(Arc::new(latest));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt as _;
    use std::io::{Read as _, Write as _};

    /// Two fixed events, whatever the filter; it echoes the filter's path so the test sees
    /// the query string reached the feed.
    struct Fixed;

    impl tap::TapFeed for Fixed {
        fn open(
            &self,
            filter: &tap::TapFilter,
        ) -> futures_util::stream::BoxStream<'static, serde_json::Value> {
            let path = filter.path.clone().unwrap_or_default();
            futures_util::stream::iter([
                json!({ "method": "GET", "path": path, "status": 200 }),
                json!({ "method": "POST", "path": path, "status": 500 }),
            ])
            .boxed()
        }
    }

    fn get(addr: SocketAddr, path: &str) -> String {
        let mut tcp = std::net::TcpStream::connect(addr).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(
            tcp,
            "GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        let _ = tcp.read_to_string(&mut out);
        out
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn serves_the_page_and_streams_a_tap_feed_as_sse() {
        let live = Live::scrape(Vec::new(), Duration::from_secs(1));
        let tap = Tap::Feed(Arc::new(Fixed));
        let addr: SocketAddr = ([127, 0, 0, 1], 0).into();
        let (addr, server) = start(addr, live, Scope::All, Vec::new(), tap, None)
            .await
            .unwrap();
        let (page, sse, post) = tokio::task::spawn_blocking(move || {
            (get(addr, "/"), get(addr, "/api/tap?path=%2Fapi"), {
                let mut tcp = std::net::TcpStream::connect(addr).unwrap();
                tcp.write_all(b"POST /api/tap HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}").unwrap();
                let mut out = String::new();
                let _ = tcp.read_to_string(&mut out);
                out
            })
        })
        .await
        .unwrap();
        server.abort();
        assert!(page.contains("id=\"workloads\""), "{page}");
        assert!(sse.contains("content-type: text/event-stream"), "{sse}");
        assert!(
            sse.contains("data: {\"method\":\"GET\",\"path\":\"/api\",\"status\":200}"),
            "{sse}"
        );
        assert!(sse.contains("\"status\":500"), "{sse}");
        assert!(post.starts_with("HTTP/1.1 405"), "{post}");
    }
}

//! `mesh proxy`: the sidecar. The same mesh-tower layers as the in-process mesh, behind
//! transparent (iptables) or explicit redirection, for workloads in any language.
//!
//! Listeners, with Linkerd's defaults: inbound `:4143`, outbound `127.0.0.1:4140`, admin
//! `:4191`. Each accepted connection is detected: mesh mTLS (by ALPN) on inbound, then
//! HTTP/1.x, HTTP/2 with prior knowledge, or opaque TCP proxied byte for byte. Known
//! server-speaks-first ports skip detection, and detection gives up after `--detect-timeout`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use mesh_core::{Identity, InboundTarget, PolicyConfig};
use mesh_tower::client::{MeshClient, MeshClientBuilder};
use mesh_tower::metrics::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub(crate) mod accept;
mod admin;
mod app;
pub(crate) mod config;
mod controller;
mod inbound;
mod io;
mod kube;
mod limits;
mod orig_dst;
mod outbound;
mod tap;
mod workers;

use accept::Listener;
use config::ConfigSource;
use workers::Source;

/// Linkerd's default opaque ports: protocols where the server speaks first.
const DEFAULT_OPAQUE_PORTS: &str = "25,587,3306,4444,5432,6379,9300,11211";

/// How long `--kube` waits after a change for more before recompiling.
const KUBE_DEBOUNCE: Duration = Duration::from_millis(50);

use crate::workload_identity::LoadedIdentity;

/// Server and client TLS configs, the workload's identity, and the rotation to keep alive.
type TlsConfigs = (
    Option<Arc<rustls::ServerConfig>>,
    Option<rustls::ClientConfig>,
    Option<Identity>,
    Option<mesh_identity::rotate::Rotation>,
);

/// Run the sidecar proxy, or wait for one to be ready.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct ProxyCommand {
    #[command(subcommand)]
    sub: Option<ProxySub>,
    #[command(flatten)]
    args: ProxyArgs,
}

#[derive(Debug, Subcommand)]
enum ProxySub {
    /// Wait until the proxy's admin endpoint says ready (for a postStart hook or a script).
    Await(AwaitArgs),
}

#[derive(Debug, Args)]
struct AwaitArgs {
    /// The proxy's admin address.
    #[arg(long, env = "MESH_PROXY_ADMIN_ADDR", default_value = "127.0.0.1:4191")]
    admin_addr: SocketAddr,
    /// Give up after this long (e.g. 2m).
    #[arg(long, default_value = "2m", value_parser = parse_duration)]
    timeout: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// Connections arrive through iptables redirection; their original destination is read
    /// with SO_ORIGINAL_DST.
    Transparent,
    /// Destinations come from the request (HTTP Host) or from flags: no iptables needed.
    Explicit,
}

#[derive(Debug, Args)]
struct ProxyArgs {
    /// Inbound listener.
    #[arg(long, env = "MESH_PROXY_INBOUND_ADDR", default_value = "0.0.0.0:4143")]
    inbound_addr: SocketAddr,
    /// Outbound listener.
    #[arg(
        long,
        env = "MESH_PROXY_OUTBOUND_ADDR",
        default_value = "127.0.0.1:4140"
    )]
    outbound_addr: SocketAddr,
    /// Admin listener: /metrics, /ready, /live, POST /shutdown.
    #[arg(long, env = "MESH_PROXY_ADMIN_ADDR", default_value = "0.0.0.0:4191")]
    admin_addr: SocketAddr,
    /// How connections find their destination.
    #[arg(long, env = "MESH_PROXY_MODE", value_enum, default_value_t = Mode::Transparent)]
    mode: Mode,
    /// Explicit mode: the application's address, where inbound traffic goes.
    #[arg(long, env = "MESH_PROXY_INBOUND_FORWARD", value_name = "ADDR")]
    inbound_forward: Option<SocketAddr>,
    /// Explicit mode: where outbound traffic without an HTTP Host goes.
    #[arg(long, env = "MESH_PROXY_OUTBOUND_DST", value_name = "ADDR")]
    outbound_dst: Option<SocketAddr>,
    /// Policy and static discovery (Services, EndpointSlices, Pods) as Kubernetes YAML: a
    /// file or a directory of *.yaml; watched and reloaded.
    #[arg(
        long,
        env = "MESH_PROXY_CONFIG",
        value_name = "FILE|DIR",
        conflicts_with = "kube"
    )]
    config: Option<PathBuf>,
    #[command(flatten)]
    controller: controller::ControllerArgs,
    /// Policy and discovery live from the Kubernetes API server (in-cluster config or
    /// KUBECONFIG): policy kinds in the workload's namespace, routes, Services,
    /// EndpointSlices and Pods in --kube-namespaces.
    #[arg(long, env = "MESH_PROXY_KUBE")]
    kube: bool,
    /// With --kube: the namespaces whose routes and endpoints to watch (default: all).
    #[arg(
        long,
        env = "MESH_PROXY_KUBE_NAMESPACES",
        value_delimiter = ',',
        requires = "kube"
    )]
    kube_namespaces: Vec<String>,
    /// The workload's namespace: short names (`web`) resolve in it, as Kubernetes DNS does.
    #[arg(long, env = "MESH_POD_NAMESPACE", default_value = "default")]
    namespace: String,
    /// The cluster domain of full Service names (`web.shop.svc.<domain>`).
    #[arg(long, env = "MESH_CLUSTER_DOMAIN", default_value = mesh_core::destination::DEFAULT_CLUSTER_DOMAIN)]
    cluster_domain: String,
    /// The workload in the config whose pod template describes this pod (`deployment/web`):
    /// labels, named ports and probes for inbound policy.
    #[arg(long, env = "MESH_PROXY_WORKLOAD", value_name = "KIND/NAME")]
    workload: Option<String>,
    /// Pod labels, `k=v,k=v`, when no workload in the config describes the pod.
    #[arg(long, env = "MESH_PROXY_LABELS", value_delimiter = ',')]
    labels: Vec<String>,
    /// Certificate, trust anchors, trust domain: shared with `mesh controller`.
    #[command(flatten)]
    identity: crate::workload_identity::IdentityArgs,
    /// Policy for inbound ports no Server selects (all-unauthenticated, all-authenticated,
    /// cluster-authenticated, cluster-unauthenticated, deny, audit); a namespace or workload
    /// annotation in the config takes precedence.
    #[arg(long, env = "MESH_PROXY_DEFAULT_INBOUND_POLICY", value_parser = parse_policy)]
    default_inbound_policy: Option<mesh_core::authz::DefaultPolicy>,
    /// Ports whose traffic is proxied without protocol detection.
    #[arg(long, env = "MESH_OPAQUE_PORTS", value_delimiter = ',', default_value = DEFAULT_OPAQUE_PORTS)]
    opaque_ports: Vec<u16>,
    /// How long to wait for a client's first bytes before treating the connection as opaque.
    #[arg(long, env = "MESH_PROXY_DETECT_TIMEOUT", default_value = "1s", value_parser = parse_duration)]
    detect_timeout: Duration,
    /// How long a client may take to send a request's headers.
    #[arg(long, env = "MESH_PROXY_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    header_read_timeout: Duration,
    /// Tell a denied client why (the Server, route and policy that refused it) in the 403's
    /// body and l5d-proxy-error header. Off, it is told only "forbidden"; the reason is always
    /// logged and counted in inbound_http_authz_deny_total.
    #[arg(long, env = "MESH_PROXY_DEBUG_AUTHZ_RESPONSES")]
    debug_authz_responses: bool,
    /// How long in-flight requests may take to finish after SIGTERM or /shutdown.
    #[arg(long, env = "MESH_PROXY_SHUTDOWN_GRACE", default_value = "30s", value_parser = parse_duration)]
    shutdown_grace: Duration,
    /// Worker threads, each a single-threaded runtime serving the connections handed to it
    /// (each new one to the worker holding the fewest) with its own connections onward; 1
    /// serves everything on one thread.
    #[arg(long, env = "MESH_PROXY_WORKERS", default_value_t = 1)]
    workers: usize,
    /// How often to look for config changes.
    #[arg(long, env = "MESH_PROXY_CONFIG_POLL", default_value = "1s", value_parser = parse_duration)]
    config_poll: Duration,
    #[command(flatten)]
    limits: limits::LimitArgs,
    #[command(flatten)]
    tap: tap::TapArgs,
}

/// Serves a worker's `source` of connections: a listener with the one accept loop (see
/// `accept`), bounded by its flags, or the connections that loop hands this worker.
async fn accept_loop<F, Fut>(proxy: Arc<Proxy>, source: Source, which: Listener, handle: F)
where
    F: Fn(tokio::net::TcpStream, SocketAddr) -> Fut,
    Fut: std::future::Future<Output = Result<(), mesh_tower::BoxError>> + Send + 'static,
{
    let listener = match source {
        Source::Listener(l) => l,
        Source::Handed(handed) => return workers::serve_handed(handed, handle).await,
    };
    let config = accept::Config {
        direction: which.as_str(),
        max_connections: proxy.args.limits.max_connections(which),
        registry: proxy.registry.clone(),
        shutdown: proxy.shutdown.subscribe(),
    };
    accept::serve(listener, config, handle).await;
}

/// The HTTP server both listeners use: HTTP/1 and HTTP/2, a bound on header size and time,
/// half-closed HTTP/1 connections kept open for their answer.
fn http_server(
    args: &ProxyArgs,
) -> hyper_util::server::conn::auto::Builder<hyper_util::rt::TokioExecutor> {
    use hyper_util::rt::{TokioExecutor, TokioTimer};
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(args.header_read_timeout)
        .half_close(true)
        .max_buf_size(64 * 1024);
    builder.http2().timer(TokioTimer::new());
    builder
}

/// Completes once shutdown has begun.
pub(crate) async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await.map(|_| ());
}

fn parse_policy(
    s: &str,
) -> Result<mesh_core::authz::DefaultPolicy, mesh_core::authz::UnknownDefaultPolicy> {
    s.parse()
}

fn parse_duration(s: &str) -> Result<Duration, mesh_core::values::InvalidDuration> {
    mesh_core::values::parse_duration(s)
}

/// Everything the listeners share.
pub(crate) struct Proxy {
    args: ProxyArgs,
    pub(crate) registry: Registry,
    pub(crate) config: Arc<ConfigSource>,
    pub(crate) tls_server: Option<Arc<rustls::ServerConfig>>,
    pub(crate) tls_client: Option<Arc<rustls::ClientConfig>>,
    pub(crate) identity: Option<Identity>,
    /// Builds each worker's outbound client (its own connections and balancer state, shared
    /// budgets and metrics).
    pub(crate) client: MeshClientBuilder<config::SidecarResolver>,
    pub(crate) shutdown: watch::Sender<bool>,
    pub(crate) open_opaque: AtomicUsize,
    pub(crate) outbound: outbound::Outbound,
    /// With --controller: asked where an original destination is unknown yet.
    pub(crate) controller: Option<mesh_tower::controller::ControllerClient>,
    /// Where both stacks publish tap events.
    pub(crate) tap: mesh_tower::tap::Tap,
    labels: std::collections::BTreeMap<String, String>,
}

impl Proxy {
    /// The inbound target for a pod port.
    pub(crate) fn target(&self, port: u16) -> InboundTarget {
        let policy = self.config.policy.load();
        let mut target = self
            .args
            .workload
            .as_ref()
            .and_then(|w| policy.workload_target(&self.args.namespace, w, port))
            .unwrap_or_else(|| InboundTarget {
                namespace: self.args.namespace.clone(),
                labels: self.labels.clone(),
                port,
                ..InboundTarget::default()
            });
        if target.default_policy.is_none() {
            target.default_policy = policy
                .namespace_default_policy(&self.args.namespace)
                .or(self.args.default_inbound_policy);
        }
        target
    }

    fn is_opaque(&self, port: u16) -> bool {
        self.args.opaque_ports.contains(&port)
    }
}

pub(crate) fn run(cmd: ProxyCommand) -> ExitCode {
    if let Some(ProxySub::Await(a)) = cmd.sub {
        return admin::await_ready(a.admin_addr, a.timeout);
    }
    // Refused configs and failing watches are reported only in the log: keep one (stderr,
    // RUST_LOG, info by default).
    crate::identity::init_tracing();
    let args = cmd.args;
    // The main thread is the first worker (see `workers`).
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    crate::out::block_on(runtime, serve(args))
}

async fn serve(mut args: ProxyArgs) -> Result<(), String> {
    if let Some(p) = &args.config {
        config::check_path(p)?;
    }
    let identity_wanted =
        args.identity.identity_dir.is_some() || args.identity.identity_issuer.is_some();
    if args.controller.addr.is_some() && !identity_wanted {
        return Err(controller::NEEDS_IDENTITY.to_owned());
    }
    let labels = parse_labels(&args.labels)?;
    let registry = Registry::with_series_limit(args.limits.metrics_series_limit);
    let mut policy_config = PolicyConfig::default();
    policy_config.inbound.trust_domain = args.identity.trust_domain.clone();
    policy_config.inbound.control_namespace = args.identity.control_namespace.clone();
    let config = Arc::new(ConfigSource::new(
        args.config.clone(),
        policy_config,
        registry.clone(),
    ));
    let (shutdown, mut shutdown_rx) = watch::channel(false);
    tokio::spawn(signals(shutdown.clone()));

    // Admin first, so /live answers and /ready says what is missing while the rest starts:
    // a restarted proxy whose issuer is away is alive, only not ready.
    let admin = start_admin(&args, &registry, &config, &shutdown).await?;
    config.load().await;
    tokio::spawn(Arc::clone(&config).watch(args.config_poll));
    if args.kube {
        let kube = kube::KubeSource::start(
            Arc::clone(&config),
            registry.clone(),
            &args.namespace,
            &args.kube_namespaces,
            KUBE_DEBOUNCE,
        )
        .await?;
        admin.readiness().kube_started(kube);
    }
    let inbound = TcpListener::bind(args.inbound_addr)
        .await
        .map_err(|e| format!("inbound {}: {e}", args.inbound_addr))?;
    let outbound = TcpListener::bind(args.outbound_addr)
        .await
        .map_err(|e| format!("outbound {}: {e}", args.outbound_addr))?;

    let id = args.identity.source().load(&mut shutdown_rx).await?;
    if let Some((certs, _, _)) = &id {
        registry.track_cert_expiry(certs);
    }
    admin.readiness().identity_ready();
    let (tls_server, tls_client, identity, _rotation) = tls_configs(id)?;
    let setup = controller::Setup {
        namespace: &args.namespace,
        policy: config.policy.load().config().clone(),
        tls: tls_client.clone(),
        config: Arc::clone(&config),
        registry: registry.clone(),
    };
    let controller = args.controller.start(setup).await?;
    if let Some(c) = &controller {
        admin.readiness().controller_started(c.clone());
        args.workload = args.workload.take().or_else(|| args.controller.workload());
    }
    let own = outbound::Outbound::new(vec![args.inbound_addr, args.outbound_addr, args.admin_addr]);
    let tap = (args.tap).hub(&args.namespace, args.workload.as_deref(), &registry);
    let mut builder = MeshClient::builder(config.policy.clone(), config.resolver.clone())
        .metrics(registry.clone())
        .tap(tap.clone())
        .control_namespace(&args.identity.control_namespace)
        .namespace(&args.namespace)
        .cluster_domain(&args.cluster_domain)
        .refuse(own.own.clone())
        .pool(
            args.limits.outbound_pool(args.workers),
            limits::outbound_pool_metrics(&registry),
        );
    if let Some(c) = &tls_client {
        builder = builder.mtls(c.clone());
    }
    if let Some(c) = &controller {
        builder = builder.controller(c.clone());
    }
    let proxy = Arc::new(Proxy {
        registry,
        config: Arc::clone(&config),
        tls_server,
        tls_client: tls_client.map(Arc::new),
        identity,
        client: builder,
        shutdown: shutdown.clone(),
        open_opaque: AtomicUsize::new(0),
        outbound: own,
        controller,
        tap,
        labels,
        args,
    });
    let tap_addr = tap::start(&proxy).await?;
    let graceful = Arc::new(hyper_util::server::graceful::GracefulShutdown::new());
    let (inbound, in_feed) = workers::fan_out(inbound, proxy.args.workers);
    let (outbound, out_feed) = workers::fan_out(outbound, proxy.args.workers);
    let mut sources = inbound.into_iter().zip(outbound);
    let (inbound, outbound) = sources.next().ok_or("no worker")?;
    let other_workers = workers::start(&proxy, &graceful, sources.collect());
    let mut listeners = vec![
        tokio::spawn(inbound::serve(
            Arc::clone(&proxy),
            inbound,
            Arc::clone(&graceful),
        )),
        tokio::spawn(outbound::serve(
            Arc::clone(&proxy),
            outbound,
            Arc::clone(&graceful),
        )),
    ];
    // With several workers, each listener's accept loop runs here and hands connections out.
    for (feed, which) in [(in_feed, Listener::Inbound), (out_feed, Listener::Outbound)] {
        if let Some((listener, dispatch)) = feed {
            let source = Source::Listener(listener);
            let hand = move |tcp, peer| dispatch.hand(tcp, peer);
            let feed = accept_loop(Arc::clone(&proxy), source, which, hand);
            listeners.push(tokio::spawn(feed));
        }
    }
    admin.readiness().serving();
    tracing::info!(
        inbound = %proxy.args.inbound_addr,
        outbound = %proxy.args.outbound_addr,
        admin = %proxy.args.admin_addr,
        tap = ?tap_addr,
        mode = ?proxy.args.mode,
        identity = ?proxy.identity.as_ref().map(ToString::to_string),
        "proxy ready"
    );

    stopped(&mut shutdown_rx).await;
    for w in other_workers {
        let _ = w.await;
    }
    drain(&proxy, graceful, listeners).await;
    tracing::info!("stopped");
    Ok(())
}

/// After shutdown began: lets the listeners stop, then waits up to the grace period for
/// open connections to finish.
async fn drain(
    proxy: &Proxy,
    graceful: Arc<hyper_util::server::graceful::GracefulShutdown>,
    listeners: Vec<tokio::task::JoinHandle<()>>,
) {
    tracing::info!(grace = ?proxy.args.shutdown_grace, "draining");
    for t in listeners {
        let _ = t.await;
    }
    let grace = proxy.args.shutdown_grace;
    let drained = tokio::time::timeout(grace, async {
        if let Ok(g) = Arc::try_unwrap(graceful) {
            g.shutdown().await;
        }
        while proxy.open_opaque.load(Ordering::Acquire) > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            ?grace,
            "connections still open after the grace period; exiting"
        );
    }
}

/// The TLS configs and identity a loaded certificate gives (none without one).
fn tls_configs(id: Option<LoadedIdentity>) -> Result<TlsConfigs, String> {
    Ok(match id {
        Some((certs, trust, rotation)) => {
            let server = mesh_identity::tls::server_config(certs.clone(), trust.clone())
                .map_err(|e| e.to_string())?;
            let client = mesh_identity::tls::client_config(certs.clone(), trust)
                .map_err(|e| e.to_string())?;
            let id = certs.current().map(|c| c.identity().clone());
            (Some(Arc::new(server)), Some(client), id, rotation)
        }
        None => {
            tracing::warn!(
                "no identity configured: traffic goes without mTLS (tls=\"no_identity\")"
            );
            (None, None, None, None)
        }
    })
}

/// `--labels k=v,k=v`.
fn parse_labels(labels: &[String]) -> Result<std::collections::BTreeMap<String, String>, String> {
    let mut out = std::collections::BTreeMap::new();
    for l in labels {
        let (k, v) = l
            .split_once('=')
            .ok_or_else(|| format!("--labels: {l:?} is not k=v"))?;
        out.insert(k.trim().to_owned(), v.trim().to_owned());
    }
    Ok(out)
}

/// Binds the admin listener and serves it from now on.
async fn start_admin(
    args: &ProxyArgs,
    registry: &Registry,
    config: &Arc<ConfigSource>,
    shutdown: &watch::Sender<bool>,
) -> Result<Arc<admin::Admin>, String> {
    let listener = TcpListener::bind(args.admin_addr)
        .await
        .map_err(|e| format!("admin {}: {e}", args.admin_addr))?;
    let identity_wanted =
        args.identity.identity_dir.is_some() || args.identity.identity_issuer.is_some();
    let readiness = admin::Readiness::new(
        Arc::clone(config),
        admin::Sources {
            kube: args.kube,
            controller: args.controller.addr.is_some(),
            identity: identity_wanted,
        },
        shutdown.clone(),
    );
    let limits = &args.limits;
    let admin = Arc::new(admin::Admin::new(
        registry.clone(),
        readiness,
        limits.admin_header_read_timeout,
        limits.admin_idle_timeout,
    ));
    let accept = accept::Config {
        direction: Listener::Admin.as_str(),
        max_connections: limits.max_connections(Listener::Admin),
        registry: registry.clone(),
        shutdown: shutdown.subscribe(),
    };
    tokio::spawn(admin::serve(Arc::clone(&admin), listener, accept));
    Ok(admin)
}

async fn signals(shutdown: watch::Sender<bool>) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::warn!("cannot listen for signals");
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM"),
        _ = int.recv() => tracing::info!("SIGINT"),
    }
    shutdown.send_replace(true);
}

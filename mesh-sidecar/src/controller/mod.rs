//! `mesh controller`: the only component that reads the cluster. It watches the policy kinds,
//! Services, EndpointSlices, Pods and Namespaces (see `crate::kube_watch`), keeps them in one
//! incremental `mesh_core::PolicyIndex`, and streams to each proxy or in-process client only
//! what it asks for over gRPC with mTLS (`mesh-api`): the objects a Service's outbound
//! policy is linked from, the endpoints of a Service as add/remove diffs, and a pod's own
//! inbound policy. Each refused object gets a status condition and an Event (`status`).
//!
//! It keeps no state of its own: any number of replicas serve the same answers, and a
//! restarted one lists the cluster again before it reports ready.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::Args;
use mesh_core::{PolicyConfig, PolicyIndex};
use mesh_tower::metrics::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::canary::goldens::StatGoldens;
use crate::kube_watch::{Applier, KINDS, Scope, Watches};

mod grpc;
mod index;
mod lease;
pub(crate) mod status;

/// How long a client may take to complete the TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serve policy and discovery from the cluster to the mesh's proxies.
#[derive(Debug, Args)]
pub(crate) struct ControllerArgs {
    /// Where proxies connect (gRPC over mesh mTLS).
    #[arg(
        long,
        env = "MESH_CONTROLLER_GRPC_ADDR",
        default_value = "0.0.0.0:8090"
    )]
    grpc_addr: SocketAddr,
    /// `/ready`, `/live` and `/metrics`.
    #[arg(
        long,
        env = "MESH_CONTROLLER_ADMIN_ADDR",
        default_value = "0.0.0.0:9996"
    )]
    admin_addr: SocketAddr,
    #[command(flatten)]
    identity: crate::workload_identity::IdentityArgs,
    /// The namespaces to watch (default: all).
    #[arg(long, env = "MESH_CONTROLLER_NAMESPACES", value_delimiter = ',')]
    namespaces: Vec<String>,
    /// How long to wait after a change for more before pushing to clients.
    #[arg(long, default_value = "50ms", value_parser = mesh_core::values::parse_duration)]
    debounce: Duration,
    /// Client connections held open at once (one per proxy).
    #[arg(long, default_value_t = 20_000)]
    max_connections: usize,
    /// Canaries read their golden metrics from this Prometheus (base URL).
    #[arg(
        long,
        env = "MESH_CONTROLLER_CANARY_PROMETHEUS",
        conflicts_with = "canary_scrape"
    )]
    canary_prometheus: Option<String>,
    /// Canaries read their golden metrics by scraping these proxies' admin addresses
    /// ([NAMESPACE/]NAME=HOST:PORT, comma-separated): the callers of the canaried Services.
    /// Without either flag, every running meshed pod's admin port (4191) is scraped.
    #[arg(long, env = "MESH_CONTROLLER_CANARY_SCRAPE", value_delimiter = ',')]
    canary_scrape: Vec<String>,
    /// Where the replicas elect the one that drives canaries: the namespace of the Lease
    /// `mesh-controller-canary` (the install passes the control plane's namespace).
    #[arg(
        long,
        env = "MESH_CONTROLLER_LEADER_ELECTION_NAMESPACE",
        default_value = "mesh"
    )]
    leader_election_namespace: String,
}

/// Runs the controller until SIGTERM or Ctrl-C.
pub(crate) fn run(args: ControllerArgs) -> ExitCode {
    crate::identity::init_tracing();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build();
    crate::out::block_on(runtime, serve(args))
}

async fn serve(args: ControllerArgs) -> Result<(), String> {
    let registry = Registry::new();
    let ready = Arc::new(AtomicBool::new(false));
    let (stop, mut stopped) = watch::channel(false);
    tokio::spawn(async move {
        crate::server_limits::shutdown_signal().await;
        stop.send_replace(true);
    });
    let (certs, trust, _rotation) = (args.identity.source())
        .load(&mut stopped)
        .await?
        .ok_or("mesh controller serves over mTLS only: give --identity-dir or --identity-issuer")?;
    let tls = mesh_identity::tls::server_config(certs, trust).map_err(|e| e.to_string())?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));

    let client = kube::Client::try_default()
        .await
        .map_err(|e| format!("cannot configure a Kubernetes client: {e}"))?;
    let (status_tx, status_rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(status::run(client.clone(), status_rx));

    let scopes = Scope::all(KINDS.iter(), None, &args.namespaces);
    let mut config = PolicyConfig::default();
    config
        .inbound
        .trust_domain
        .clone_from(&args.identity.trust_domain);
    config
        .inbound
        .control_namespace
        .clone_from(&args.identity.control_namespace);
    let documents = index::Documents::new(Some(status_tx));
    let applier = Applier::new(
        PolicyIndex::new(config),
        documents,
        registry.clone(),
        &scopes,
    );
    let mut hub = index::Hub::new(grpc::Sent::new(registry.clone()), Arc::clone(&ready));
    let (input, rx) = std::sync::mpsc::channel();
    let debounce = args.debounce;
    std::thread::Builder::new()
        .name("mesh-controller-index".to_owned())
        .spawn(move || applier.run(&rx, debounce, &mut hub))
        .map_err(|e| format!("cannot start the policy index thread: {e}"))?;
    let watches = Watches::start(&client, &scopes, input.clone(), registry.clone());

    let goldens = canary_goldens(&args, &client)?;
    let metrics = crate::canary::CanaryMetrics::new(registry.clone());
    let namespaces = args.namespaces.clone();
    let leases = kube::Api::namespaced(client.clone(), &args.leader_election_namespace);
    let leader = lease::elect(leases, lease::holder_identity());
    tokio::spawn(crate::canary::kube::run(
        client.clone(),
        namespaces,
        goldens,
        metrics,
        leader,
    ));
    let admin_listener = bind(args.admin_addr).await?;
    let admin = crate::admin::Admin::new(registry.clone(), move || not_ready(&watches, &ready));
    tokio::spawn(admin.serve(admin_listener));
    let listener = bind(args.grpc_addr).await?;
    tracing::info!(
        grpc = %args.grpc_addr,
        admin = %args.admin_addr,
        namespaces = ?args.namespaces,
        "mesh controller serving"
    );
    let services = grpc::Services::new(input);
    let handle = move |tcp, _| grpc::serve_connection(tcp, acceptor.clone(), services.clone());
    crate::server_limits::serve(
        listener,
        "controller",
        args.max_connections,
        registry,
        handle,
    )
    .await;
    Ok(())
}

/// Where canaries' golden metrics come from: Prometheus, the proxies listed, or else every
/// meshed pod's proxy.
fn canary_goldens(args: &ControllerArgs, client: &kube::Client) -> Result<StatGoldens, String> {
    if let Some(url) = &args.canary_prometheus {
        return Ok(StatGoldens::Prometheus(url.clone()));
    }
    if args.canary_scrape.is_empty() {
        return Ok(StatGoldens::Pods(client.clone()));
    }
    let targets = (args.canary_scrape.iter())
        .map(|t| crate::stat::target(t, "default").map_err(|e| e.to_string()))
        .collect::<Result<_, _>>()?;
    Ok(StatGoldens::Scrape(targets))
}

/// Ready once every kind is listed and the index has been published: a proxy never gets half
/// a picture.
fn not_ready(watches: &Watches, ready: &AtomicBool) -> Option<String> {
    let unsynced = watches.unsynced();
    if !unsynced.is_empty() {
        return Some(format!(
            "kubernetes watch not synced: {}",
            unsynced.join(", ")
        ));
    }
    if !ready.load(Ordering::Acquire) {
        return Some("the policy index is not published yet".to_owned());
    }
    None
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, String> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))
}

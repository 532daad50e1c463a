//! `mesh tap` and `mesh top`: live request metadata from the proxies' tap listeners, as
//! `linkerd viz tap` and `linkerd viz top` show it.
//!
//! The client proves a mesh identity (`--identity-dir`, e.g. the `mesh-tap` service account's
//! certificate from `mesh identity issue`) that the proxies' `--tap-allow` admits, and checks
//! each proxy's own identity: the proxy `[NAMESPACE/]NAME=HOST:PORT` must present service
//! account `NAME` of `NAMESPACE` (Linkerd's convention of a workload running as its own
//! service account). Filters are applied in the proxies; bodies are never shown, and header
//! values only for the names a proxy is configured with (`--tap-header`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use mesh_core::Identity;
use mesh_tower::tap::{TapFilter, TapRequest};

pub(crate) mod client;
mod print;
mod top;

use crate::stat::StatError;
use crate::stat::print::Output;
use crate::stat::query::Kind;
use client::{TapClient, TapClientError, TapTarget};

/// Why a tap could not start.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TapError {
    #[error(transparent)]
    Target(#[from] StatError),
    #[error(transparent)]
    Client(#[from] TapClientError),
    #[error("no --proxy matches {0}")]
    NoProxy(String),
    #[error("`{name}`: {reason}")]
    BadIdentity { name: String, reason: String },
}

/// The target, filters and proxies `mesh tap` and `mesh top` share.
#[derive(Debug, Args)]
pub(crate) struct TapArgs {
    /// deploy, pod or ns, optionally /NAME: whose proxies to tap.
    resource: String,
    /// Namespace of the resource.
    #[arg(short, long, default_value = "default")]
    namespace: String,
    /// Only requests to this resource (svc/NAME or deploy/NAME, in -n's namespace): its
    /// inbound traffic, or its callers' outbound traffic to it.
    #[arg(long)]
    to: Option<String>,
    /// Only requests with this method.
    #[arg(long)]
    method: Option<String>,
    /// Only requests whose path starts with this.
    #[arg(long)]
    path: Option<String>,
    /// Only requests to this authority (host:port).
    #[arg(long)]
    authority: Option<String>,
    /// At most this many events per second from each proxy.
    #[arg(long)]
    max_rps: Option<u32>,
    /// Stop after this many events from each proxy.
    #[arg(long)]
    max_events: Option<u64>,
    /// The proxies' tap addresses: [NAMESPACE/]NAME=HOST:PORT, comma-separated.
    #[arg(long, value_delimiter = ',', required = true)]
    proxy: Vec<String>,
    /// This client's certificate: a directory with tls.crt, tls.key and ca.crt.
    #[arg(long, env = "MESH_IDENTITY_DIR", value_name = "DIR")]
    identity_dir: PathBuf,
    /// The trust domain of the proxies' identities.
    #[arg(long, env = "MESH_TRUST_DOMAIN", default_value = mesh_core::identity::DEFAULT_TRUST_DOMAIN)]
    trust_domain: String,
}

/// Live requests, one line each (or JSON lines).
#[derive(Debug, Args)]
pub(crate) struct TapCommand {
    #[command(flatten)]
    tap: TapArgs,
    /// Output format (table: linkerd viz tap's lines; json: one event per line).
    #[arg(short, long, value_enum, default_value_t)]
    output: Output,
}

/// The busiest paths, live.
#[derive(Debug, Args)]
pub(crate) struct TopCommand {
    #[command(flatten)]
    tap: TapArgs,
    /// Print the table once after this long (e.g. 10s); without it, refresh every second
    /// on a terminal until Ctrl-C, else print once at Ctrl-C.
    #[arg(long, value_parser = mesh_core::values::parse_duration)]
    duration: Option<Duration>,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t)]
    output: Output,
}

// === impl TapArgs ===

impl TapArgs {
    /// The proxies the resource names.
    fn targets(&self) -> Result<Vec<TapTarget>, TapError> {
        let r = crate::stat::resource(&self.resource)?;
        if r.kind == Kind::Service {
            return Err(StatError::Unsupported {
                command: "tap",
                resource: self.resource.clone(),
                reads: "deploy, pod or ns (use --to svc/NAME for a Service)",
            }
            .into());
        }
        let out = targets(
            &self.proxy,
            &self.namespace,
            &self.trust_domain,
            |ns, name| match (r.kind, &r.name) {
                (Kind::Namespace, Some(n)) => ns == n,
                (Kind::Namespace, None) => true,
                (_, Some(n)) => ns == self.namespace && name == n,
                (_, None) => ns == self.namespace,
            },
        )?;
        if out.is_empty() {
            return Err(TapError::NoProxy(self.resource.clone()));
        }
        Ok(out)
    }

    /// What each proxy is asked for.
    fn request(&self) -> Result<TapRequest, TapError> {
        let to = self.to.as_deref().map(crate::stat::resource).transpose()?;
        let filter = TapFilter {
            namespace: to.as_ref().map(|_| self.namespace.clone()),
            workload: to.and_then(|r| r.name),
            path_prefix: self.path.clone(),
            method: self.method.clone(),
            authority: self.authority.clone(),
        };
        Ok(TapRequest {
            filter,
            max_rps: self.max_rps,
            max_events: self.max_events,
        })
    }

    /// Opens the streams and says so on stderr (a person, or a test, learns it is live).
    async fn open(&self) -> Result<(Vec<TapTarget>, client::TapStream), TapError> {
        let targets = self.targets()?;
        let request = self.request()?;
        let client = TapClient::from_dir(&self.identity_dir)?;
        let stream = client::open(&client, &targets, &request).await?;
        eprintln!("tapping {} proxies", targets.len());
        Ok((targets, stream))
    }
}

/// The tap addresses `[NAMESPACE/]NAME=HOST:PORT` that `wanted(namespace, name)` keeps, each
/// expecting the identity of service account NAME in NAMESPACE (Linkerd's convention).
pub(crate) fn targets(
    proxies: &[String],
    namespace: &str,
    trust_domain: &str,
    wanted: impl Fn(&str, &str) -> bool,
) -> Result<Vec<TapTarget>, TapError> {
    let mut out = Vec::new();
    for p in proxies {
        let t = crate::stat::target(p, namespace)?;
        let (ns, name) = (&t.labels["namespace"], &t.labels["deployment"]);
        if !wanted(ns, name) {
            continue;
        }
        let identity =
            Identity::new(trust_domain, ns, name).map_err(|e| TapError::BadIdentity {
                name: p.clone(),
                reason: e.to_string(),
            })?;
        out.push(TapTarget {
            name: format!("{ns}/{name}"),
            addr: t.addr,
            identity,
        });
    }
    Ok(out)
}

async fn tap(cmd: &TapCommand) -> Result<(), TapError> {
    let (targets, mut stream) = cmd.tap.open().await?;
    let mut seq = vec![0u64; targets.len()];
    loop {
        let next = tokio::select! {
            n = stream.recv() => n,
            _ = tokio::signal::ctrl_c() => None,
        };
        let Some(tapped) = next else { return Ok(()) };
        let tapped = tapped?;
        let text = match cmd.output {
            Output::Json => print::json_line(&tapped.event),
            Output::Table | Output::Wide => {
                let id = &mut seq[tapped.proxy];
                *id += 1;
                print::lines(&format!("{}:{}", tapped.proxy, *id - 1), &tapped.event)
            }
        };
        crate::out::print(&text);
    }
}

pub(crate) fn run_tap(cmd: TapCommand) -> ExitCode {
    crate::out::block_on(runtime(), tap(&cmd))
}

pub(crate) fn run_top(cmd: TopCommand) -> ExitCode {
    crate::out::block_on(runtime(), top::run(&cmd))
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

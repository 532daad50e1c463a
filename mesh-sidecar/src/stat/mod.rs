//! `mesh stat`, `mesh routes`, `mesh edges`: golden metrics from the command line, as
//! `linkerd viz stat|routes|edges` print them.
//!
//! Two sources answer the same queries (see [`source`]):
//!
//! - `--prometheus URL`: PromQL over a Prometheus that scrapes the proxies, in the shape of
//!   Linkerd viz's queries (`sum(increase(response_total{…}[1m])) by (…)`,
//!   `histogram_quantile(0.95, sum(increase(response_latency_ms_bucket{…}[1m])) by (le, …))`).
//!   The proxies' own series do not say which workload they belong to; as in Linkerd, the
//!   scrape config attaches that: each target carries the labels `namespace`, `deployment` and
//!   `pod` (Linkerd's Prometheus relabels them from the pod's metadata).
//! - `--scrape [NAMESPACE/]NAME=ADDR,…`: each proxy's admin `/metrics`, scraped twice
//!   `--time-window` apart (10 s by default); rates and quantiles come from the differences.
//!   The target names its workload: `deployment` and `pod` are `NAME` (one proxy is one pod
//!   of that workload), `namespace` is `NAMESPACE` or `-n`. A bare `ADDR` is named after itself.
//!
//! Workloads are read from their own proxies' inbound series; a Service (`stat svc`, `--to`,
//! `--from`'s rows, `routes svc/NAME`) from its callers' outbound series, which name it in
//! `dst_service`. Rows are typed numbers ([`query`]) until they are printed ([`print`]).

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

pub(crate) mod print;
pub(crate) mod query;
pub(crate) mod series;
pub(crate) mod source;

#[cfg(test)]
mod golden_tests;

use print::Output;
use query::{Kind, Resource, RoutesQuery, Scope, StatQuery};
use series::Labels;
use source::{Prometheus, Scraped, Source, Target};

/// Why a table could not be made.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StatError {
    #[error("{uri}: {reason}")]
    Http { uri: String, reason: String },
    #[error("prometheus query `{query}` failed: {reason}")]
    Prometheus { query: String, reason: String },
    #[error("no proxy answered at its admin address")]
    NoProxy,
    #[error("give --prometheus URL or --scrape ADDR[,ADDR…]")]
    NoSource,
    #[error("unknown resource `{0}` (deploy, pod, ns or svc, optionally /NAME)")]
    BadResource(String),
    #[error("mesh {command} does not read `{resource}`; it reads {reads}")]
    Unsupported {
        command: &'static str,
        resource: String,
        reads: &'static str,
    },
    #[error("`{0}`: expected [NAMESPACE/]NAME=HOST:PORT or HOST:PORT")]
    BadTarget(String),
}

/// Where the numbers come from, and how to print them.
#[derive(Debug, Args)]
pub(crate) struct SourceArgs {
    /// Query this Prometheus (base URL, e.g. http://127.0.0.1:9090).
    #[arg(long, conflicts_with = "scrape")]
    prometheus: Option<String>,
    /// Scrape these proxies' admin addresses directly: [NAMESPACE/]NAME=HOST:PORT, comma-separated.
    #[arg(long, value_delimiter = ',')]
    scrape: Vec<String>,
    /// The window rates are taken over (default 1m with Prometheus, 10s when scraping).
    #[arg(long, value_parser = mesh_core::values::parse_duration)]
    time_window: Option<Duration>,
    /// Namespace of the resources.
    #[arg(short, long, default_value = "default")]
    namespace: String,
    /// All namespaces.
    #[arg(short = 'A', long)]
    all_namespaces: bool,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t)]
    output: Output,
}

/// A Prometheus to query, or proxies to scrape a window apart.
#[derive(Debug)]
pub(crate) enum Origin {
    Prometheus(Box<Prometheus>),
    Scrape {
        targets: Vec<Target>,
        window: Duration,
    },
}

/// Success rate, RPS, latencies and TCP connections per workload.
#[derive(Debug, Args)]
pub(crate) struct StatArgs {
    /// deploy, pod, ns or svc, optionally /NAME.
    #[arg(default_value = "deploy")]
    resource: String,
    /// Only traffic from this resource (its outbound view, per destination Service).
    #[arg(long, conflicts_with = "to")]
    from: Option<String>,
    /// Only traffic to this Service (the callers' outbound view).
    #[arg(long)]
    to: Option<String>,
    #[command(flatten)]
    source: SourceArgs,
}

/// Per route (and with -o wide per backend) of the destinations a workload or Service serves.
#[derive(Debug, Args)]
pub(crate) struct RoutesArgs {
    /// svc/NAME (its routes, from every caller) or deploy/NAME (the routes it calls).
    resource: String,
    /// Only destinations that name this Service.
    #[arg(long)]
    to: Option<String>,
    #[command(flatten)]
    source: SourceArgs,
}

/// Who calls whom, and whether over mTLS with which identities.
#[derive(Debug, Args)]
pub(crate) struct EdgesArgs {
    /// deploy.
    #[arg(default_value = "deploy")]
    resource: String,
    #[command(flatten)]
    source: SourceArgs,
}

/// The command's table, or why there is none.
async fn stat(args: &StatArgs) -> Result<String, StatError> {
    let q = StatQuery {
        resource: resource(&args.resource)?,
        scope: args.source.scope(),
        from: args.from.as_deref().map(resource).transpose()?,
        to: args.to.as_deref().map(resource).transpose()?,
    };
    let source = args.source.open().await?;
    let wide = args.source.output == Output::Wide;
    let rows = query::stat(&source, &q, wide).await?;
    Ok(print::workloads(&rows, args.source.output))
}

async fn routes(args: &RoutesArgs) -> Result<String, StatError> {
    let to = args.to.as_deref().map(resource).transpose()?;
    let q = RoutesQuery {
        resource: resource(&args.resource)?,
        scope: args.source.scope(),
        to: to.and_then(|r| r.name),
    };
    let source = args.source.open().await?;
    let rows = query::routes(&source, &q, args.source.output == Output::Wide).await?;
    Ok(print::routes(&rows, args.source.output))
}

async fn edges(args: &EdgesArgs) -> Result<String, StatError> {
    let r = resource(&args.resource)?;
    if r.kind != Kind::Deployment || r.name.is_some() {
        return Err(StatError::Unsupported {
            command: "edges",
            resource: args.resource.clone(),
            reads: "deploy",
        });
    }
    let source = args.source.open().await?;
    let rows = query::edges(&source, &args.source.scope()).await?;
    Ok(print::edges(&rows, args.source.output))
}

pub(crate) fn run_stat(args: StatArgs) -> ExitCode {
    block_on(stat(&args))
}

pub(crate) fn run_routes(args: RoutesArgs) -> ExitCode {
    block_on(routes(&args))
}

pub(crate) fn run_edges(args: EdgesArgs) -> ExitCode {
    block_on(edges(&args))
}

fn block_on(f: impl Future<Output = Result<String, StatError>>) -> ExitCode {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    crate::out::block_on(runtime, async {
        f.await.map(|text| crate::out::print(&text))
    })
}

/// `KIND[/NAME]`, with kubectl's short names.
pub(crate) fn resource(s: &str) -> Result<Resource, StatError> {
    let (kind, name) = match s.split_once('/') {
        Some((k, n)) if !n.is_empty() => (k, Some(n.to_owned())),
        Some(_) => return Err(StatError::BadResource(s.to_owned())),
        None => (s, None),
    };
    let kind = match kind {
        "deploy" | "deployment" | "deployments" => Kind::Deployment,
        "po" | "pod" | "pods" => Kind::Pod,
        "ns" | "namespace" | "namespaces" => Kind::Namespace,
        "svc" | "service" | "services" => Kind::Service,
        _ => return Err(StatError::BadResource(s.to_owned())),
    };
    Ok(Resource { kind, name })
}

/// `[NAMESPACE/]NAME=HOST:PORT` or `HOST:PORT`.
pub(crate) fn target(s: &str, namespace: &str) -> Result<Target, StatError> {
    let bad = || StatError::BadTarget(s.to_owned());
    let (name, addr) = s.split_once('=').unwrap_or((s, s));
    let (ns, name) = name.split_once('/').unwrap_or((namespace, name));
    if name.is_empty() || ns.is_empty() {
        return Err(bad());
    }
    let addr = addr.parse().map_err(|_| bad())?;
    Ok(Target {
        labels: workload_labels(ns, name),
        addr,
    })
}

/// The labels Linkerd's Prometheus attaches to a proxy's series.
pub(crate) fn workload_labels(namespace: &str, name: &str) -> Labels {
    [
        ("namespace".to_owned(), namespace.to_owned()),
        ("deployment".to_owned(), name.to_owned()),
        ("pod".to_owned(), name.to_owned()),
    ]
    .into()
}

// === impl SourceArgs ===

impl SourceArgs {
    /// `-n`: the namespace of names given without one.
    pub(crate) fn namespace(&self) -> &str {
        &self.namespace
    }

    pub(crate) fn scope(&self) -> Scope {
        if self.all_namespaces {
            Scope::All
        } else {
            Scope::Namespace(self.namespace.clone())
        }
    }

    /// Where the numbers come from, checked but not yet asked.
    pub(crate) fn origin(&self) -> Result<Origin, StatError> {
        if let Some(url) = &self.prometheus {
            let window = self.time_window.unwrap_or(Duration::from_secs(60));
            return Ok(Origin::Prometheus(Box::new(Prometheus::new(url, window))));
        }
        if self.scrape.is_empty() {
            return Err(StatError::NoSource);
        }
        let targets = self
            .scrape
            .iter()
            .map(|s| target(s, &self.namespace))
            .collect::<Result<Vec<_>, _>>()?;
        let window = self.time_window.unwrap_or(Duration::from_secs(10));
        Ok(Origin::Scrape { targets, window })
    }

    async fn open(&self) -> Result<Source, StatError> {
        match self.origin()? {
            Origin::Prometheus(p) => Ok(Source::Prometheus(p)),
            Origin::Scrape { targets, window } => {
                let scraped = Scraped::collect(&targets, window, |n| {
                    // A person (or a test) learns when the window opened.
                    eprintln!("scraped {n} proxies; scraping again in {window:?}");
                })
                .await?;
                Ok(Source::Scraped(scraped))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_parse_with_short_names() {
        let r = resource("deploy/web").unwrap();
        assert_eq!((r.kind, r.name.as_deref()), (Kind::Deployment, Some("web")));
        assert_eq!(resource("ns").unwrap().kind, Kind::Namespace);
        assert_eq!(resource("svc/api").unwrap().kind, Kind::Service);
        assert!(resource("deploy/").is_err());
        assert!(resource("cronjob/x").is_err());
    }

    #[test]
    fn targets_name_their_workload() {
        let t = target("shop/web=127.0.0.1:4191", "default").unwrap();
        assert_eq!(t.labels["namespace"], "shop");
        assert_eq!(t.labels["deployment"], "web");
        assert_eq!(t.addr.port(), 4191);
        let t = target("api=127.0.0.1:1", "default").unwrap();
        assert_eq!(t.labels["namespace"], "default");
        let t = target("127.0.0.1:2", "default").unwrap();
        assert_eq!(t.labels["deployment"], "127.0.0.1:2");
        assert!(target("web=nowhere", "default").is_err());
    }
}

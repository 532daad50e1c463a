//! `mesh check`: the health of an install (or with `--pre`, of a cluster before one, or with
//! `--proxy`, of the pod it runs in), as `linkerd check` reports it: checks grouped under
//! headings, `✓`/`‼`/`×` and a hint under each problem, exit 1 when anything failed.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use clap::{Args, ValueEnum};
use serde_json::Value;

mod control_plane;
mod kube;
mod pki;
mod pre;
mod proxy;
mod report;

use control_plane::Install;
use kube::Kube;
use report::{Category, Outcome, Report};

/// Linkerd's allowance: a node heartbeat (5 min) plus the 10 s TLS allows for.
const ALLOWED_CLOCK_SKEW: Duration = Duration::from_secs(5 * 60 + 10);
/// Init containers with `restartPolicy: Always` (native sidecars) are on by default from here.
const NATIVE_SIDECARS: (u64, u64) = (1, 29);

/// Check the health of the mesh (or with --pre, whether the cluster is ready for it).
#[derive(Debug, Args)]
pub(crate) struct CheckArgs {
    /// Check what `mesh install` needs instead: RBAC rights, API versions, native sidecars.
    #[arg(long, conflicts_with = "proxy")]
    pre: bool,
    /// Check the pod this runs in: the iptables redirect and the proxy's admin server.
    #[arg(long)]
    proxy: bool,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
    output: Output,
    /// The control-plane namespace.
    #[arg(long, default_value = "mesh")]
    namespace: String,
    /// The kubeconfig to use [default: in-cluster config, else $KUBECONFIG or ~/.kube/config].
    #[arg(long, value_name = "FILE")]
    kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use [default: the current context].
    #[arg(long)]
    context: Option<String>,
    /// With --proxy: the UID the proxy runs as (`mesh init --proxy-uid`).
    #[arg(long, default_value_t = 2102)]
    proxy_uid: u32,
    /// With --proxy: the proxy's admin address (`mesh proxy --admin-addr`).
    #[arg(long, default_value = "127.0.0.1:4191")]
    admin_addr: SocketAddr,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Output {
    /// Lines with ✓/‼/× and hints, for people.
    Table,
    /// `{"success": …, "categories": [{"categoryName", "checks": [...]}]}`, for scripts.
    Json,
}

pub(crate) fn run(args: CheckArgs) -> ExitCode {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let report = match rt {
        Ok(rt) => rt.block_on(check(&args)),
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let text = match args.output {
        Output::Table => Ok(report.to_text()),
        Output::Json => report.to_json().map(|mut j| {
            j.push('\n');
            j
        }),
    };
    match text {
        Ok(text) => crate::out::print(&text),
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    }
    match report.success() {
        true => ExitCode::SUCCESS,
        false => ExitCode::FAILURE,
    }
}

async fn check(args: &CheckArgs) -> Report {
    let mut report = Report::default();
    if args.proxy {
        report.categories = proxy::checks(args.proxy_uid, args.admin_addr).await;
        return report;
    }
    let (api, kube) = kubernetes_api(args).await;
    report.categories.push(api);
    let Some((kube, version)) = kube else {
        return report;
    };
    report.categories.push(kubernetes_version(&version));
    let install = match Install::new(&args.namespace) {
        Ok(i) => i,
        Err(e) => {
            let mut c = Category::new("mesh-existence");
            c.push(
                "mesh can describe its install",
                Outcome::error(e.to_string(), "a bug in mesh"),
            );
            report.categories.push(c);
            return report;
        }
    };
    if args.pre {
        report.categories.extend(pre::checks(&kube, &install).await);
        return report;
    }
    let now = SystemTime::now();
    let existence = control_plane::existence(&kube, &install).await;
    let namespace_missing = existence
        .checks
        .first()
        .is_some_and(|c| c.outcome.is_error());
    report.categories.push(existence);
    report.categories.push(control_plane::config(&kube).await);
    if namespace_missing {
        return report;
    }
    report
        .categories
        .push(control_plane::identity(&kube, &install, now).await);
    report
        .categories
        .push(control_plane::webhooks(&kube, &install, now).await);
    report
        .categories
        .push(control_plane::data_plane(&kube, &install).await);
    report
}

/// The client, a first request, and the API server's clock against ours.
async fn kubernetes_api(args: &CheckArgs) -> (Category, Option<(Kube, Value)>) {
    let mut c = Category::new("kubernetes-api");
    let hint = "check the kubeconfig (`--kubeconfig`, `--context`, $KUBECONFIG) and that \
        `kubectl version` reaches the cluster";
    let kube = match Kube::connect(args.kubeconfig.clone(), args.context.clone()).await {
        Ok(k) => k,
        Err(e) => {
            c.push(
                "can initialize the client",
                Outcome::error(e.to_string(), hint),
            );
            return (c, None);
        }
    };
    c.push("can initialize the client", Outcome::Success);
    let (version, date) = match kube.version().await {
        Ok(v) => v,
        Err(e) => {
            c.push(
                "can query the Kubernetes API",
                Outcome::error(e.to_string(), hint),
            );
            return (c, None);
        }
    };
    c.push("can query the Kubernetes API", Outcome::Success);
    c.push(
        "no clock skew detected",
        clock_skew(date, SystemTime::now()),
    );
    (c, Some((kube, version)))
}

fn clock_skew(server: Option<SystemTime>, local: SystemTime) -> Outcome {
    let Some(server) = server else {
        return Outcome::warning(
            "the API server's answer carried no Date header",
            "nothing to fix if certificates verify; a proxy in front of the API server drops it",
        );
    };
    let skew = match server.duration_since(local) {
        Ok(d) => d,
        Err(e) => e.duration(),
    };
    if skew <= ALLOWED_CLOCK_SKEW {
        return Outcome::Success;
    }
    Outcome::warning(
        format!(
            "this machine's clock and the API server's differ by {}s",
            skew.as_secs()
        ),
        "synchronise the clocks (NTP, `timedatectl`): certificates are refused as \
         not yet valid or expired when clocks disagree",
    )
}

fn kubernetes_version(version: &Value) -> Category {
    let mut c = Category::new("kubernetes-version");
    let number = |key: &str| {
        let s = version[key].as_str().unwrap_or("");
        // Providers append to the minor version ("29+").
        s.trim_end_matches(|ch: char| !ch.is_ascii_digit())
            .parse::<u64>()
            .ok()
    };
    let outcome = match (number("major"), number("minor")) {
        (Some(major), Some(minor)) if (major, minor) >= NATIVE_SIDECARS => Outcome::Success,
        (Some(major), Some(minor)) => Outcome::error(
            format!("the API server is Kubernetes {major}.{minor}; native sidecars need 1.29"),
            "the injector adds the proxy as a native sidecar and does not fall back by itself: \
             inject with `mesh inject --legacy-sidecar`, or upgrade the cluster",
        ),
        _ => Outcome::warning(
            format!("cannot read the version from /version: {version}"),
            "native sidecars need Kubernetes 1.29; check `kubectl version`",
        ),
    };
    c.push("supports native sidecar containers", outcome);
    c
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn versions_before_1_29_cannot_run_native_sidecars() {
        let at = |major: &str, minor: &str| {
            let c = kubernetes_version(&json!({"major": major, "minor": minor}));
            c.checks[0].outcome.clone()
        };
        assert_eq!(at("1", "29"), Outcome::Success);
        assert_eq!(at("1", "33+"), Outcome::Success);
        assert!(at("1", "28").is_error());
        assert!(matches!(at("", ""), Outcome::Warning(_)));
    }

    #[test]
    fn skew_over_linkerds_allowance_warns() {
        let now = SystemTime::now();
        assert_eq!(
            clock_skew(Some(now + Duration::from_secs(60)), now),
            Outcome::Success
        );
        let late = clock_skew(Some(now - Duration::from_secs(400)), now);
        assert!(matches!(late, Outcome::Warning(_)), "{late:?}");
    }
}

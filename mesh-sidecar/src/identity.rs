//! `mesh identity`: create a trust anchor and issuer, run the issuer service, get a certificate.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args as ClapArgs, Subcommand};
use mesh_core::Identity;
use mesh_core::identity::InvalidIdentity;
use mesh_identity::ca::{self, InitConfig, Issuer};
use mesh_identity::client::IssuerClient;
use mesh_identity::issuer::{
    ConnectionConfig, IssueError, IssuerService, TokenAuthenticator, TokenFile, issuer_identity,
    serve_connection,
};
use mesh_identity::rotate::{LocalSource, Rotation, RotationConfig};
use mesh_identity::{TrustBundle, TrustStore, cert, tls};
use mesh_tower::metrics::Registry;
use metrics::Label;

use crate::admin::Admin;
use crate::server_limits::{self, ServerLimitArgs};
use crate::tokenreview::TokenReviewer;

/// Trust anchors, the issuer service and workload certificates.
#[derive(Debug, ClapArgs)]
pub(crate) struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write a new trust anchor and issuer (ECDSA P-256, PEM) to a directory: ca.crt, ca.key,
    /// issuer.crt, issuer.key.
    Init(InitArgs),
    /// Serve the issuer: sign CSRs posted to /v1/certificate by holders of a token.
    Serve(ServeArgs),
    /// Get a workload certificate from the issuer and write tls.crt, tls.key and ca.crt.
    Issue(IssueArgs),
}

#[derive(Debug, ClapArgs)]
struct InitArgs {
    /// The trust domain identities live in.
    #[arg(long, default_value = mesh_core::identity::DEFAULT_TRUST_DOMAIN)]
    trust_domain: String,
    /// The directory to write to (created if missing).
    #[arg(long)]
    out: PathBuf,
    /// Lifetime of the trust anchor, e.g. 365d.
    #[arg(long, default_value = "365d", value_parser = parse_duration)]
    anchor_lifetime: Duration,
    /// Lifetime of the issuer certificate, e.g. 180d.
    #[arg(long, default_value = "180d", value_parser = parse_duration)]
    issuer_lifetime: Duration,
    /// Overwrite existing files.
    #[arg(long)]
    force: bool,
}

#[derive(Debug, ClapArgs)]
struct ServeArgs {
    /// The directory `mesh identity init` wrote (issuer.crt and issuer.key are read).
    #[arg(long)]
    dir: PathBuf,
    /// The address to listen on; port 0 picks a free port (the address is printed).
    #[arg(long, default_value = "127.0.0.1:8443")]
    listen: SocketAddr,
    /// The token file: one `<token> <namespace>/<service-account>` per line, `#` comments.
    #[arg(long, required_unless_present = "kube", conflicts_with = "kube")]
    tokens: Option<PathBuf>,
    /// Authenticate service-account tokens with a TokenReview against the Kubernetes API
    /// server (in-cluster config or KUBECONFIG) instead of a token file.
    #[arg(long)]
    kube: bool,
    /// With --kube: the audience tokens must be valid for (as `mesh inject` projects them).
    #[arg(long, default_value = "identity.mesh.io", requires = "kube")]
    audience: String,
    /// The control-plane namespace in the DNS-form SANs of issued certificates.
    #[arg(long, default_value = mesh_core::identity::DEFAULT_CONTROL_NAMESPACE)]
    control_namespace: String,
    /// The namespace and service account the issuer runs as: its own certificate names
    /// spiffe://<trust-domain>/ns/<namespace>/sa/<name>. Default: <control-namespace>/identity.
    #[arg(long, value_name = "NAMESPACE/NAME")]
    service_account: Option<IssuerAccount>,
    /// Lifetime of issued workload certificates, e.g. 24h.
    #[arg(long, default_value = "24h", value_parser = parse_duration)]
    leaf_lifetime: Duration,
    /// Serve `/metrics`, `/ready` and `/live` in plain HTTP on this address (the install uses
    /// port 9990, as Linkerd's identity does).
    #[arg(long)]
    admin_addr: Option<SocketAddr>,
    #[command(flatten)]
    limits: ServerLimitArgs,
}

#[derive(Debug, ClapArgs)]
struct IssueArgs {
    /// The issuer's URL, https://<host>:<port>. Its certificate must carry the issuer identity;
    /// the host is not checked.
    #[arg(long)]
    issuer: String,
    /// A file holding the bearer token.
    #[arg(long)]
    token_file: PathBuf,
    /// PEM file of the trust anchors (the issuer's ca.crt).
    #[arg(long)]
    trust_anchors: PathBuf,
    /// The directory to write tls.crt, tls.key and ca.crt to (created if missing; existing
    /// files are replaced, so re-running renews).
    #[arg(long)]
    out: PathBuf,
    /// The trust domain; by default read from the trust anchors.
    #[arg(long)]
    trust_domain: Option<String>,
    /// The issuer's control-plane namespace.
    #[arg(long, default_value = mesh_core::identity::DEFAULT_CONTROL_NAMESPACE)]
    control_namespace: String,
    /// The namespace and service account the issuer runs as (`mesh install`'s is
    /// mesh/mesh-identity): its certificate must name them. Default: <control-namespace>/identity.
    #[arg(long, value_name = "NAMESPACE/NAME")]
    issuer_service_account: Option<IssuerAccount>,
}

/// The namespace and service account the issuer runs as, `NAMESPACE/NAME`. Its serving
/// certificate names them, and clients verify that name rather than the URL's host; without
/// one, the issuer is `<control-namespace>/identity`, as in Linkerd.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct IssuerAccount {
    namespace: String,
    name: String,
}

/// A `--service-account` that is not `NAMESPACE/NAME` with Kubernetes names.
#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not NAMESPACE/NAME of a service account")]
pub(crate) struct InvalidIssuerAccount(String);

pub(crate) fn run(args: Args) -> ExitCode {
    let res = match args.command {
        Command::Init(a) => init(a),
        Command::Serve(a) => runtime().and_then(|rt| rt.block_on(serve_cmd(a))),
        Command::Issue(a) => runtime().and_then(|rt| rt.block_on(issue(a))),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn init(a: InitArgs) -> anyhow::Result<()> {
    let config = InitConfig {
        trust_domain: a.trust_domain.clone(),
        anchor_lifetime: a.anchor_lifetime,
        issuer_lifetime: a.issuer_lifetime,
        force: a.force,
    };
    let written = ca::init_dir(&a.out, &config)?;
    for p in &written {
        println!("wrote {}", p.display());
    }
    println!(
        "trust domain {}; give workloads {} as their trust anchors, keep the .key files secret",
        a.trust_domain,
        a.out.join(ca::files::ANCHOR_CERT).display()
    );
    Ok(())
}

async fn serve_cmd(a: ServeArgs) -> anyhow::Result<()> {
    init_tracing();
    let issuer = Issuer::load_dir(&a.dir)?.with_control_namespace(a.control_namespace.clone());
    let td = issuer.trust_domain().to_owned();
    if a.kube {
        let auth = TokenReviewer::connect(&td, &a.audience)
            .await
            .context("--kube: cannot configure a Kubernetes client")?;
        let how = format!("TokenReview, audience {}", a.audience);
        return serve_with(a, issuer, auth, how).await;
    }
    let path = a.tokens.clone().context("--tokens or --kube is required")?;
    let tokens = TokenFile::load(&path, &td)?;
    let token_count = tokens.len();
    if tokens.is_empty() {
        tracing::warn!(file = %path.display(), "the token file holds no token; every request will be refused");
    }
    serve_with(a, issuer, tokens, format!("tokens: {token_count}")).await
}

async fn serve_with<A: TokenAuthenticator>(
    a: ServeArgs,
    issuer: Issuer,
    auth: A,
    how: String,
) -> anyhow::Result<()> {
    let td = issuer.trust_domain().to_owned();
    let identity =
        IssuerAccount::identity_of(a.service_account.as_ref(), &td, &a.control_namespace)?;
    let issuer = Arc::new(issuer);
    // The serving certificate is short-lived like any other and renews itself in-process.
    let source = LocalSource::new(issuer.clone(), identity.clone(), a.leaf_lifetime);
    let rotation = Rotation::start(source, RotationConfig::default())
        .await
        .context("cannot issue the issuer's own serving certificate")?;
    let tls = tls::issuer_server_config(rotation.store().clone())?;
    let registry = Registry::new();
    registry.track_cert_expiry(rotation.store());
    let service = Arc::new(
        IssuerService::new(issuer, auth)
            .with_lifetime(a.leaf_lifetime)
            .with_body_read_timeout(a.limits.body_read_timeout)
            .observe(count_requests(&registry)),
    );
    if let Some(addr) = a.admin_addr {
        let admin = Admin::ready(registry.clone()).spawn(addr).await;
        let admin = admin.with_context(|| format!("cannot listen on {addr}"))?;
        tracing::info!(%admin, "admin listening");
    }

    let listener = tokio::net::TcpListener::bind(a.listen)
        .await
        .with_context(|| format!("cannot listen on {}", a.listen))?;
    let addr = listener.local_addr()?;
    println!("serving https://{addr} as {identity} ({how})");
    tracing::info!(%addr, %identity, "issuer listening");

    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let config = ConnectionConfig {
        header_read_timeout: a.limits.header_read_timeout,
        ..ConnectionConfig::default()
    };
    let handle = move |tcp, _| {
        let conn = serve_connection(tcp, acceptor.clone(), service.clone(), config);
        async move { conn.await.map_err(Into::into) }
    };
    server_limits::serve(
        listener,
        "identity",
        a.limits.max_connections,
        registry,
        handle,
    )
    .await;
    tracing::info!("shutting down");
    drop(rotation);
    Ok(())
}

/// Counts every answered certificate request in `identity_certificate_requests_total`, by
/// `result` (`issued` or `refused`) and, for refusals, a fixed `reason`.
fn count_requests(registry: &Registry) -> impl Fn(Result<(), &IssueError>) + Send + Sync + 'static {
    const REQUESTS: &str = "identity_certificate_requests_total";
    registry.describe(
        REQUESTS,
        "Certificate signing requests answered, by result and reason.",
    );
    let registry = registry.clone();
    move |outcome| {
        let labels = match outcome {
            Ok(()) => vec![Label::new("result", "issued")],
            Err(e) => vec![
                Label::new("result", "refused"),
                Label::new("reason", e.reason()),
            ],
        };
        registry.counter(REQUESTS, labels).increment(1);
    }
}

async fn issue(a: IssueArgs) -> anyhow::Result<()> {
    let anchors_pem = read(&a.trust_anchors)?;
    let bundle = TrustBundle::from_pem(&anchors_pem)
        .with_context(|| format!("{}: not a trust bundle", a.trust_anchors.display()))?;
    let td = match a.trust_domain {
        Some(td) => td,
        None => bundle
            .anchors()
            .iter()
            .find_map(|c| ca::anchor_trust_domain(c).ok())
            .unwrap_or_else(|| mesh_core::identity::DEFAULT_TRUST_DOMAIN.to_owned()),
    };
    let token = read(&a.token_file)?;
    let token = token.trim();
    if token.is_empty() {
        bail!("{}: the token file is empty", a.token_file.display());
    }
    let issuer_id =
        IssuerAccount::identity_of(a.issuer_service_account.as_ref(), &td, &a.control_namespace)?;
    let client = IssuerClient::new(&a.issuer, &issuer_id, TrustStore::new(bundle), token)?;
    let (key, chain) = client.fetch_with_key().await?;
    let id = cert::identity_of(&chain[0])?;
    let not_after = cert::validity_of(&chain[0])?.not_after;

    std::fs::create_dir_all(&a.out)
        .with_context(|| format!("cannot create {}", a.out.display()))?;
    let crt = a.out.join("tls.crt");
    let key_path = a.out.join("tls.key");
    let ca_path = a.out.join("ca.crt");
    ca::write_file(&key_path, key.serialize_pem().as_bytes(), true, true)?;
    ca::write_file(&crt, cert::certs_to_pem(&chain).as_bytes(), false, true)?;
    ca::write_file(&ca_path, anchors_pem.as_bytes(), false, true)?;
    let left = not_after
        .duration_since(std::time::SystemTime::now())
        .unwrap_or_default();
    println!("issued {id}, valid for {}s", left.as_secs());
    for p in [&crt, &key_path, &ca_path] {
        println!("wrote {}", p.display());
    }
    Ok(())
}

fn read(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

pub(crate) fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

// === impl IssuerAccount ===

impl IssuerAccount {
    /// `namespace/name`, for the flags `mesh install` passes.
    pub(crate) fn new(namespace: &str, name: &str) -> Self {
        Self {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }
    }

    /// The identity the issuer's certificate carries: `account`'s, or Linkerd's default.
    pub(crate) fn identity_of(
        account: Option<&Self>,
        trust_domain: &str,
        control_namespace: &str,
    ) -> Result<Identity, InvalidIdentity> {
        match account {
            Some(a) => Identity::new(trust_domain, &a.namespace, &a.name),
            None => issuer_identity(trust_domain, control_namespace),
        }
    }
}

impl std::str::FromStr for IssuerAccount {
    type Err = InvalidIssuerAccount;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || InvalidIssuerAccount(s.to_owned());
        let (namespace, name) = s.split_once('/').ok_or_else(bad)?;
        // The names are checked as an identity checks them, in any trust domain.
        Identity::new(mesh_core::identity::DEFAULT_TRUST_DOMAIN, namespace, name)
            .map_err(|_| bad())?;
        Ok(Self::new(namespace, name))
    }
}

impl std::fmt::Display for IssuerAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// A certificate lifetime flag that is not `90s`, `30m`, `24h`, `365d` or plain seconds.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
enum InvalidLifetime {
    #[error("{0:?} is not a duration like 90s, 30m, 24h or 365d")]
    Number(String),
    #[error("{0:?}: the unit must be s, m, h or d")]
    Unit(String),
    #[error("a lifetime must be positive")]
    Zero,
    #[error("{0:?} is too long")]
    TooLong(String),
}

/// Parses `90s`, `30m`, `24h`, `365d` (or plain seconds). Not mesh-core's Go durations:
/// certificate lifetimes are counted in days, which Go durations have no unit for.
fn parse_duration(s: &str) -> Result<Duration, InvalidLifetime> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| InvalidLifetime::Number(s.to_owned()))?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return Err(InvalidLifetime::Unit(s.to_owned())),
    };
    if n == 0 {
        return Err(InvalidLifetime::Zero);
    }
    n.checked_mul(secs)
        .map(Duration::from_secs)
        .ok_or_else(|| InvalidLifetime::TooLong(s.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86400)));
        assert_eq!(parse_duration("365d"), Ok(Duration::from_secs(365 * 86400)));
        assert_eq!(parse_duration("15"), Ok(Duration::from_secs(15)));
        for bad in ["", "h", "1y", "0s", "-1s", "99999999999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_issuer_is_named_by_its_service_account() {
        let account: IssuerAccount = "mesh/mesh-identity".parse().unwrap();
        assert_eq!(account.to_string(), "mesh/mesh-identity");
        let id = IssuerAccount::identity_of(Some(&account), "example.org", "linkerd").unwrap();
        assert_eq!(
            id.to_string(),
            "spiffe://example.org/ns/mesh/sa/mesh-identity"
        );
        // Without one, Linkerd's name in the control namespace.
        let id = IssuerAccount::identity_of(None, "example.org", "linkerd").unwrap();
        assert_eq!(
            id.to_string(),
            "spiffe://example.org/ns/linkerd/sa/identity"
        );
        for bad in ["mesh", "/x", "mesh/", "Mesh/x", "a/b/c"] {
            assert!(bad.parse::<IssuerAccount>().is_err(), "{bad}");
        }
    }
}

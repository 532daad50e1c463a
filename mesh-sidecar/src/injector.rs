//! `mesh injector`: the mutating admission webhook that adds the mesh to pods as they are
//! created, with the same [`mesh_inject::inject_pod`] as `mesh inject`; the review itself is
//! [`mesh_inject::review`], pure and fuzzed, and this module serves it.
//!
//! Routes (HTTPS only, HTTP/1.1):
//! - `POST /inject`: inject pods annotated `mesh.io/inject: enabled` (or `linkerd.io/inject`),
//!   and, with `--default-inject`, every pod not annotated disabled.
//! - `POST /inject/enabled`: for namespaces `mesh install`'s webhook selects by the label
//!   `mesh.io/inject=enabled`: inject every pod not annotated disabled. An AdmissionReview
//!   carries no namespace metadata, so the namespace's choice arrives as the path.
//! - `POST /validate`: the validating webhook for the policy kinds ([`crate::validate`]).
//! - `GET /ready`, `GET /live`: probes (also on `--admin-addr`, with `/metrics`:
//!   `injector_admission_reviews_total{webhook, result}`).
//!
//! Malformed input: a body that is not an `admission.k8s.io/v1` AdmissionReview with a
//! request uid gets HTTP 400 and a plain-text message (there is no uid to answer to; the API
//! server then applies the webhook's failurePolicy, `Ignore`). A well-formed review whose
//! object cannot be injected (not a Pod, an unreadable spec, a bad annotation) is answered
//! `allowed: true` with no patch and a warning: the mesh never stops a pod from being created.
//!
//! Bounds (flags, with defaults): a review over `--max-review-bytes` gets 413 (before it is
//! read when it declares its length, else as soon as it passes the limit), a body not whole
//! within `--body-read-timeout` gets 408, headers slower than `--header-read-timeout` close
//! the connection, and past `--max-connections` new connections are closed on accept. Each
//! refusal closes its connection: the unread rest of a body is not a next request.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use clap::Args;
use http_body_util::{BodyExt as _, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use mesh_inject::InjectConfig;
use mesh_inject::review::review;
use mesh_tower::metrics::Registry;
use metrics::Label;

use crate::admin::Admin;
use crate::inject::ProxyArgs;
use crate::server_limits::{self, ServerLimitArgs};
use crate::tls_files::{TlsFiles, TlsFilesError};

/// The API server refuses requests over 3 MiB, so no honest review is larger; a larger body
/// is refused before it is parsed, since parsing costs a hundred times its size in memory.
pub(crate) const DEFAULT_MAX_REVIEW_BYTES: usize = 3 * 1024 * 1024;
/// The API server gives up on a webhook after at most 30 s; a handshake that takes longer
/// than this is not the API server.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serve the mutating admission webhook that injects pods as they are created.
#[derive(Debug, Args)]
pub(crate) struct InjectorArgs {
    /// The address to listen on; port 0 picks a free one (the address is printed on stderr).
    #[arg(long, default_value = "0.0.0.0:8443")]
    listen: SocketAddr,
    /// A directory holding tls.crt and tls.key (PEM), as a kubernetes.io/tls Secret mounts;
    /// read again when they change.
    #[arg(long, value_name = "DIR")]
    tls_dir: PathBuf,
    /// How often to look for a rotated tls.crt and tls.key.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    tls_reload_interval: Duration,
    /// On /inject, inject pods that carry no inject annotation.
    #[arg(long)]
    default_inject: bool,
    /// The largest AdmissionReview body read, in bytes; larger ones get 413.
    #[arg(long, default_value_t = DEFAULT_MAX_REVIEW_BYTES)]
    max_review_bytes: usize,
    /// Reviews decoded and patched at once; the rest wait their turn. A review at the size
    /// limit takes tens of MiB while it is worked on, so this, not the number of clients,
    /// bounds the injector's memory (the install gives it 256 Mi).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    max_concurrent_reviews: u32,
    /// Serve `/metrics`, `/ready` and `/live` in plain HTTP on this address (the install uses
    /// port 9995, as Linkerd's proxy injector does).
    #[arg(long)]
    admin_addr: Option<SocketAddr>,
    #[command(flatten)]
    limits: ServerLimitArgs,
    #[command(flatten)]
    proxy: ProxyArgs,
}

/// The counter of answered reviews.
const REVIEWS: &str = "injector_admission_reviews_total";

/// What every connection shares.
#[derive(Debug)]
struct State {
    /// What the admin endpoint serves.
    registry: Registry,
    /// With `inject_by_default` from `--default-inject`; /inject/enabled overrides it.
    config: InjectConfig,
    max_review_bytes: usize,
    body_read_timeout: Duration,
    /// One permit per review being worked on (`--max-concurrent-reviews`).
    reviews: tokio::sync::Semaphore,
}

#[derive(Debug, thiserror::Error)]
enum ServeError {
    #[error(transparent)]
    Cert(#[from] TlsFilesError),
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0:#}")]
    Config(anyhow::Error),
}

/// Which answer a path asks for.
#[derive(Clone, Copy, Debug)]
enum Route {
    Inject { by_default: bool },
    Validate,
}

pub(crate) fn run(args: InjectorArgs) -> ExitCode {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build();
    let res = match runtime {
        Ok(rt) => rt.block_on(serve(args)),
        Err(e) => Err(ServeError::Io(e)),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: InjectorArgs) -> Result<(), ServeError> {
    let files = Arc::new(TlsFiles::load(&args.tls_dir)?);
    let tls = tls_config(files.clone())?;
    let acceptor = TlsAcceptor::from(Arc::new(tls));
    let registry = Registry::new();
    registry.describe(
        REVIEWS,
        "AdmissionReviews answered, by webhook (inject, validate) and result.",
    );
    let state = Arc::new(State {
        registry: registry.clone(),
        config: args
            .proxy
            .config(args.default_inject)
            .map_err(ServeError::Config)?,
        max_review_bytes: args.max_review_bytes,
        body_read_timeout: args.limits.body_read_timeout,
        reviews: tokio::sync::Semaphore::new(args.max_concurrent_reviews as usize),
    });
    let listener = TcpListener::bind(args.listen).await?;
    let admin = match args.admin_addr {
        Some(addr) => Some(Admin::ready(registry.clone()).spawn(addr).await?),
        None => None,
    };
    // The first line on stderr says where it listens (scripts and tests wait for it).
    eprintln!(
        "mesh injector listening on https://{}",
        listener.local_addr()?
    );
    crate::identity::init_tracing();
    if let Some(admin) = admin {
        tracing::info!(%admin, "admin listening");
    }
    files.watch(args.tls_reload_interval);
    let header_read_timeout = args.limits.header_read_timeout;
    let handle = move |tcp, _| {
        let (acceptor, state) = (acceptor.clone(), state.clone());
        async move {
            let tls = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await??;
            let svc = hyper::service::service_fn(move |req| handle(state.clone(), req));
            hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_read_timeout)
                .serve_connection(TokioIo::new(tls), svc)
                .await?;
            Ok(())
        }
    };
    let max_connections = args.limits.max_connections;
    server_limits::serve(listener, "injector", max_connections, registry, handle).await;
    Ok(())
}

/// Serves the certificate of `files`, whichever it holds at each handshake.
fn tls_config(files: Arc<TlsFiles>) -> Result<rustls::ServerConfig, ServeError> {
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_cert_resolver(files);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

fn parse_duration(s: &str) -> Result<Duration, mesh_core::values::InvalidDuration> {
    mesh_core::values::parse_duration(s)
}

async fn handle(
    state: Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let route = match (req.method(), req.uri().path()) {
        (&Method::GET, "/ready" | "/live") => return Ok(text(StatusCode::OK, "ok\n")),
        (&Method::POST, "/inject") => Route::Inject {
            by_default: state.config.inject_by_default,
        },
        (&Method::POST, "/inject/enabled") => Route::Inject { by_default: true },
        (&Method::POST, "/validate") => Route::Validate,
        (_, "/inject" | "/inject/enabled" | "/validate") => {
            return Ok(text(
                StatusCode::METHOD_NOT_ALLOWED,
                "POST an AdmissionReview\n",
            ));
        }
        _ => return Ok(text(StatusCode::NOT_FOUND, "not found\n")),
    };
    let answer = answer(&state, route, req).await;
    let result = match answer.status() {
        StatusCode::OK => "reviewed",
        StatusCode::BAD_REQUEST => "malformed",
        StatusCode::REQUEST_TIMEOUT => "body_timeout",
        StatusCode::PAYLOAD_TOO_LARGE => "too_large",
        _ => "failed",
    };
    let webhook = match route {
        Route::Inject { .. } => "inject",
        Route::Validate => "validate",
    };
    let labels = vec![Label::new("webhook", webhook), Label::new("result", result)];
    state.registry.counter(REVIEWS, labels).increment(1);
    Ok(answer)
}

/// The answer to a review request on `route`: the review, or why there is none.
async fn answer(state: &State, route: Route, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let body = match read_body(state, req).await {
        Ok(body) => body,
        Err(refusal) => return refusal,
    };
    // The semaphore is never closed, so acquiring fails only if it were.
    let Ok(_permit) = state.reviews.acquire().await else {
        return text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n");
    };
    let config = match route {
        Route::Inject { by_default } => Some(InjectConfig {
            inject_by_default: by_default,
            ..state.config.clone()
        }),
        Route::Validate => None,
    };
    // Decoding and patching is CPU work: off the threads that serve connections.
    let work = tokio::task::spawn_blocking(move || match config {
        Some(config) => review(&body, &config),
        None => crate::validate::review(&body),
    });
    match work.await {
        Ok(Ok(json)) => Response::builder()
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(json)))
            .unwrap_or_else(|_| text(StatusCode::INTERNAL_SERVER_ERROR, "response\n")),
        Ok(Err(msg)) => text(StatusCode::BAD_REQUEST, &format!("{msg}\n")),
        Err(_) => text(StatusCode::INTERNAL_SERVER_ERROR, "the review failed\n"),
    }
}

/// The whole review body, or the response refusing it: 413 over the size limit (at once when
/// the declared length says so), 408 past the body read timeout.
async fn read_body(state: &State, req: Request<Incoming>) -> Result<Bytes, Response<Full<Bytes>>> {
    let max = state.max_review_bytes;
    let too_large = || {
        closing(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("an AdmissionReview is at most {max} bytes\n"),
        )
    };
    let declared = req
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(too_large());
    }
    let collect = Limited::new(req.into_body(), max).collect();
    match tokio::time::timeout(state.body_read_timeout, collect).await {
        Ok(Ok(b)) => Ok(b.to_bytes()),
        Ok(Err(e)) if e.is::<LengthLimitError>() => Err(too_large()),
        Ok(Err(e)) => Err(text(
            StatusCode::BAD_REQUEST,
            &format!("reading the body: {e}\n"),
        )),
        Err(_) => Err(closing(
            StatusCode::REQUEST_TIMEOUT,
            &format!(
                "the body did not arrive within {:?}\n",
                state.body_read_timeout
            ),
        )),
    }
}

/// A refusal after which the connection closes: the unread rest of the body must not be
/// taken for a next request.
fn closing(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut r = text(status, body);
    r.headers_mut().insert(
        hyper::header::CONNECTION,
        hyper::header::HeaderValue::from_static("close"),
    );
    r
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_owned())));
    *r.status_mut() = status;
    r
}

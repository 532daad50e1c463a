//! The admin endpoint: `/metrics` (Prometheus text, Linkerd's names), `/ready` (503 until
//! identity and config are ready), `/live`, and `POST /shutdown` (from loopback) to drain; and
//! `mesh proxy await`, its client.
//!
//! It is served from the moment the proxy starts, before identity and config are fetched, so
//! `/live` answers a restarted proxy at once and `/ready` says what is still missing. Its
//! clients are bounded like any listener's (see `accept`), and each connection by a
//! header-read timeout (slow or absent headers) and an idle timeout (no bytes either way, as
//! from a client that stops reading a large `/metrics`). `/metrics` is rendered on a blocking
//! thread: with `--workers 1` the data plane has one thread, and a scrape must not stall it.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use mesh_tower::metrics::Registry;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};

use super::accept;
use super::config::ConfigSource;
use super::kube::KubeSource;
use mesh_tower::controller::ControllerClient;

/// What the admin endpoint serves from, available before the proxy itself is built.
pub(crate) struct Admin {
    registry: Registry,
    readiness: Readiness,
    header_read_timeout: Duration,
    idle_timeout: Duration,
}

/// What `/ready` waits for.
pub(crate) struct Readiness {
    config: Arc<ConfigSource>,
    /// Set once the Kubernetes client is up, when `--kube` asks for one.
    kube: OnceLock<Arc<KubeSource>>,
    /// Set once the controller client is up, when `--controller` asks for one.
    controller: OnceLock<ControllerClient>,
    wanted: Sources,
    identity_pending: AtomicBool,
    /// Set once the inbound and outbound listeners serve.
    serving: AtomicBool,
    shutdown: watch::Sender<bool>,
}

/// Which sources of readiness the flags ask for.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Sources {
    pub(crate) kube: bool,
    pub(crate) controller: bool,
    pub(crate) identity: bool,
}

/// A stream that fails with `TimedOut` once no bytes have passed either way for a while.
struct IdleTimeout<T> {
    io: T,
    sleep: Pin<Box<Sleep>>,
    timeout: Duration,
}

// === impl Admin ===

impl Admin {
    pub(crate) fn new(
        registry: Registry,
        readiness: Readiness,
        header_read_timeout: Duration,
        idle_timeout: Duration,
    ) -> Self {
        Self {
            registry,
            readiness,
            header_read_timeout,
            idle_timeout,
        }
    }

    pub(crate) fn readiness(&self) -> &Readiness {
        &self.readiness
    }
}

/// Serves the admin endpoint until shutdown.
pub(crate) async fn serve(admin: Arc<Admin>, listener: TcpListener, config: accept::Config) {
    accept::serve(listener, config, move |tcp, peer| {
        connection(Arc::clone(&admin), tcp, peer)
    })
    .await;
}

async fn connection(
    admin: Arc<Admin>,
    tcp: TcpStream,
    peer: SocketAddr,
) -> Result<(), mesh_tower::BoxError> {
    let io = IdleTimeout::new(tcp, admin.idle_timeout);
    let timeout = admin.header_read_timeout;
    let svc = service_fn(move |req| handle(Arc::clone(&admin), peer, req));
    hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(timeout)
        .max_buf_size(16 * 1024)
        .serve_connection(TokioIo::new(io), svc)
        .await?;
    Ok(())
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut rsp = Response::new(Full::new(body.into()));
    *rsp.status_mut() = status;
    rsp
}

async fn handle(
    admin: Arc<Admin>,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let ready = &admin.readiness;
    Ok(match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => metrics(admin.registry.clone()).await,
        (&Method::GET, "/live") => text(StatusCode::OK, "live\n"),
        (&Method::GET, "/ready") => {
            let missing = ready.not_ready();
            let degraded = ready.degraded();
            if missing.is_empty() && degraded.is_empty() {
                text(StatusCode::OK, "ready\n")
            } else if missing.is_empty() {
                // Still ready: the last good data serves while the sources reconnect.
                text(StatusCode::OK, format!("ready ({})\n", degraded.join("; ")))
            } else {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("not ready: {}\n", missing.join(", ")),
                )
            }
        }
        (&Method::POST, "/shutdown") if peer.ip().is_loopback() => {
            tracing::info!("shutdown requested on the admin endpoint");
            ready.shutdown.send_replace(true);
            text(StatusCode::OK, "shutting down\n")
        }
        (_, "/shutdown") => text(
            StatusCode::FORBIDDEN,
            "POST /shutdown is accepted from loopback only\n",
        ),
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /metrics, /ready, /live, POST /shutdown\n",
        ),
    })
}

/// Renders `/metrics` off the runtime's threads.
async fn metrics(registry: Registry) -> Response<Full<Bytes>> {
    let rendered = tokio::task::spawn_blocking(move || {
        let mut body = registry.render();
        body.push_str(&process_metrics());
        body
    })
    .await;
    match rendered {
        Ok(body) => {
            let mut rsp = text(StatusCode::OK, body);
            rsp.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            rsp
        }
        Err(e) => {
            tracing::warn!(error = %e, "rendering /metrics failed");
            text(StatusCode::INTERNAL_SERVER_ERROR, "cannot render metrics\n")
        }
    }
}

// === impl Readiness ===

impl Readiness {
    pub(crate) fn new(
        config: Arc<ConfigSource>,
        wanted: Sources,
        shutdown: watch::Sender<bool>,
    ) -> Self {
        Self {
            config,
            kube: OnceLock::new(),
            controller: OnceLock::new(),
            wanted,
            identity_pending: AtomicBool::new(wanted.identity),
            serving: AtomicBool::new(false),
            shutdown,
        }
    }

    /// The Kubernetes watches have started.
    pub(crate) fn kube_started(&self, kube: Arc<KubeSource>) {
        let _ = self.kube.set(kube);
    }

    /// The controller client has started.
    pub(crate) fn controller_started(&self, controller: ControllerClient) {
        let _ = self.controller.set(controller);
    }

    /// The workload's certificate is in hand.
    pub(crate) fn identity_ready(&self) {
        self.identity_pending.store(false, Ordering::Release);
    }

    /// The inbound and outbound listeners serve.
    pub(crate) fn serving(&self) {
        self.serving.store(true, Ordering::Release);
    }

    /// What is not ready yet.
    fn not_ready(&self) -> Vec<String> {
        let mut v: Vec<String> = Vec::new();
        if self.identity_pending.load(Ordering::Acquire) {
            v.push("identity not issued yet".into());
        } else if !self.serving.load(Ordering::Acquire) {
            v.push("listeners starting".into());
        }
        if !self.config.is_ready() {
            v.push("config not loaded".into());
        }
        match self.kube.get() {
            Some(k) => v.extend(k.not_ready().map(String::from)),
            None if self.wanted.kube => v.push("kubernetes client starting".into()),
            None => {}
        }
        match self.controller.get() {
            Some(c) => v.extend(c.not_ready()),
            // Before the identity is issued, which the controller's mTLS needs.
            None if self.wanted.controller => v.push("controller client starting".into()),
            None => {}
        }
        if *self.shutdown.borrow() {
            v.push("shutting down".into());
        }
        v
    }

    /// Sources that are failing while the last good data serves.
    fn degraded(&self) -> Vec<String> {
        let mut v: Vec<String> = (self.kube.get().map(|k| k.degraded()).into_iter().flatten())
            .map(|w| format!("kubernetes watch failing, serving the last good snapshot: {w}"))
            .collect();
        if let Some(c) = self.controller.get() {
            v.extend(
                (c.degraded().into_iter()).map(|r| format!("{r}; serving the last data received")),
            );
        }
        v
    }
}

/// `process_*` metrics from /proc, as Prometheus clients export them.
fn process_metrics() -> String {
    let mut out = String::new();
    let ticks = 100.0; // USER_HZ on Linux
    if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
        // Fields after the command name, which is in parentheses and may hold spaces.
        if let Some(rest) = stat.rsplit_once(") ").map(|(_, r)| r) {
            let f: Vec<&str> = rest.split_whitespace().collect();
            let utime: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0);
            let stime: f64 = f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
            out.push_str("# TYPE process_cpu_seconds_total counter\n");
            out.push_str(&format!(
                "process_cpu_seconds_total {}\n",
                (utime + stime) / ticks
            ));
        }
    }
    if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
        for (key, name) in [
            ("VmRSS:", "process_resident_memory_bytes"),
            ("VmHWM:", "process_resident_memory_max_bytes"),
        ] {
            if let Some(kb) = status
                .lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
            {
                out.push_str(&format!("# TYPE {name} gauge\n{name} {}\n", kb * 1024));
            }
        }
    }
    out
}

/// `mesh proxy await`: polls `/ready` at `addr` until it answers 200 or `timeout` passes.
pub(crate) fn await_ready(addr: SocketAddr, timeout: Duration) -> ExitCode {
    use std::io::{Read, Write};
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let ready = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).and_then(
            |mut s| {
                s.set_read_timeout(Some(Duration::from_secs(2)))?;
                write!(
                    s,
                    "GET /ready HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
                    addr
                )?;
                let mut buf = String::new();
                s.read_to_string(&mut buf)?;
                Ok(buf.starts_with("HTTP/1.1 200"))
            },
        );
        if matches!(ready, Ok(true)) {
            return ExitCode::SUCCESS;
        }
        if std::time::Instant::now() >= deadline {
            eprintln!(
                "error: the proxy at {} was not ready within {:?}",
                addr, timeout
            );
            return ExitCode::FAILURE;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

// === impl IdleTimeout ===

impl<T> IdleTimeout<T> {
    fn new(io: T, timeout: Duration) -> Self {
        Self {
            io,
            sleep: Box::pin(tokio::time::sleep(timeout)),
            timeout,
        }
    }

    /// Passes `res` on, restarting the idle clock when bytes moved and failing the stream
    /// once the clock runs out while nothing does.
    fn watch<R>(&mut self, cx: &mut Context<'_>, res: Poll<io::Result<R>>) -> Poll<io::Result<R>> {
        match res {
            Poll::Ready(r) => {
                let deadline = Instant::now() + self.timeout;
                self.sleep.as_mut().reset(deadline);
                Poll::Ready(r)
            }
            Poll::Pending => match self.sleep.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(io::ErrorKind::TimedOut.into())),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for IdleTimeout<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let res = Pin::new(&mut self.io).poll_read(cx, buf);
        self.watch(cx, res)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for IdleTimeout<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let res = Pin::new(&mut self.io).poll_write(cx, buf);
        self.watch(cx, res)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let res = Pin::new(&mut self.io).poll_flush(cx);
        self.watch(cx, res)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

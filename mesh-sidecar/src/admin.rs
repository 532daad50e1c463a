//! The admin endpoint of the control-plane servers (`mesh controller`, `mesh identity serve`,
//! `mesh injector`): `/live`, `/ready` (200 once the server can do its work, else 503 with the
//! reason) and `/metrics` (Prometheus text), in plain HTTP on a port of its own, as Linkerd's
//! control-plane components have theirs. Kubernetes probes and Prometheus read it; nothing on it
//! changes state.

use std::convert::Infallible;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use mesh_tower::metrics::Registry;
use tokio::net::TcpListener;

/// Why the server is not ready yet, or `None` when it is.
type NotReady = dyn Fn() -> Option<String> + Send + Sync;

/// What the admin endpoint reports from.
#[derive(Clone)]
pub(crate) struct Admin {
    registry: Registry,
    not_ready: Arc<NotReady>,
}

/// How long a scraper or probe may take to send its request headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections one admin endpoint holds at once: probes and a scraper or two.
pub(crate) const MAX_CONNECTIONS: usize = 64;

// === impl Admin ===

impl Admin {
    /// Reports `registry`, and readiness by asking `not_ready` on every probe.
    pub(crate) fn new(
        registry: Registry,
        not_ready: impl Fn() -> Option<String> + Send + Sync + 'static,
    ) -> Self {
        Self {
            registry,
            not_ready: Arc::new(not_ready),
        }
    }

    /// For a server that is ready as soon as it listens.
    pub(crate) fn ready(registry: Registry) -> Self {
        Self::new(registry, || None)
    }

    /// Binds `addr` and serves on a task of its own until shutdown.
    pub(crate) async fn spawn(self, addr: SocketAddr) -> std::io::Result<SocketAddr> {
        let listener = TcpListener::bind(addr).await?;
        let local = listener.local_addr()?;
        tokio::spawn(self.serve(listener));
        Ok(local)
    }

    /// Serves until shutdown. Its connections are counted in its own registry, under
    /// `direction="admin"`.
    pub(crate) async fn serve(self, listener: TcpListener) {
        let registry = self.registry.clone();
        let handle = move |tcp, _| {
            let admin = self.clone();
            async move {
                let svc = hyper::service::service_fn(move |req| {
                    let admin = admin.clone();
                    async move { Ok::<_, Infallible>(admin.respond(&req)) }
                });
                hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_READ_TIMEOUT)
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await?;
                Ok(())
            }
        };
        crate::server_limits::serve(listener, "admin", MAX_CONNECTIONS, registry, handle).await;
    }

    fn respond(&self, req: &Request<Incoming>) -> Response<Full<Bytes>> {
        match req.uri().path() {
            "/live" => text(StatusCode::OK, "live\n".to_owned()),
            "/ready" => match (self.not_ready)() {
                None => text(StatusCode::OK, "ready\n".to_owned()),
                Some(why) => text(StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
            },
            "/metrics" => text(StatusCode::OK, self.registry.render()),
            _ => text(StatusCode::NOT_FOUND, "not found\n".to_owned()),
        }
    }
}

impl fmt::Debug for Admin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Admin").finish_non_exhaustive()
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut rsp = Response::new(Full::new(Bytes::from(body)));
    *rsp.status_mut() = status;
    rsp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    rsp
}

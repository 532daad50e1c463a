//! The controller's admin endpoint: `/ready` (200 once every kind is listed and the index
//! has been published, else 503 with the reason), `/live`, `/metrics` (Prometheus text).

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use mesh_tower::metrics::Registry;
use tokio::net::TcpListener;

use crate::kube_watch::Watches;

/// What the admin endpoint reports from.
#[derive(Clone, Debug)]
pub(crate) struct Admin {
    pub(crate) registry: Registry,
    pub(crate) watches: Arc<Watches>,
    /// The index thread has published a whole picture.
    pub(crate) ready: Arc<AtomicBool>,
}

/// How long a scraper may take to send its request headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

// === impl Admin ===

impl Admin {
    /// Serves until shutdown.
    pub(crate) async fn serve(self, listener: TcpListener, max_connections: usize) {
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
        crate::server_limits::serve(listener, "admin", max_connections, handle).await;
    }

    fn respond(&self, req: &Request<Incoming>) -> Response<Full<Bytes>> {
        match req.uri().path() {
            "/live" => text(StatusCode::OK, "live\n".to_owned()),
            "/ready" => match self.not_ready() {
                None => text(StatusCode::OK, "ready\n".to_owned()),
                Some(why) => text(StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
            },
            "/metrics" => text(StatusCode::OK, self.registry.render()),
            _ => text(StatusCode::NOT_FOUND, "not found\n".to_owned()),
        }
    }

    fn not_ready(&self) -> Option<String> {
        let unsynced = self.watches.unsynced();
        if !unsynced.is_empty() {
            return Some(format!(
                "kubernetes watch not synced: {}",
                unsynced.join(", ")
            ));
        }
        if !self.ready.load(Ordering::Acquire) {
            return Some("the policy index is not published yet".to_owned());
        }
        None
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

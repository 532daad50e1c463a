//! The inbound proxy's connections to the application, in the protocol the client used.
//!
//! HTTP/2 (and so gRPC, trailers included) stays HTTP/2: one multiplexed connection per
//! application address, shared by every client connection. HTTP/1 stays HTTP/1 — also when it
//! crossed between proxies over HTTP/2, which the outbound proxy marks with
//! [`ORIG_PROTO_HEADER`] — over connections pooled per application address and shared by every
//! client connection (`mesh_tower::pool`): at most `--inbound-app-max-connections`, requests
//! beyond it queued (bounded) or refused with 503, idle ones closed after
//! `--inbound-app-idle-timeout`. Hitting a bound is counted in
//! `inbound_app_connection_limit_total`.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response, Uri, Version};
use hyper::body::Incoming;
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};
use mesh_tower::BoxError;
use mesh_tower::connect::ORIG_PROTO_HEADER;
use mesh_tower::errors::ConnectFailed;
use mesh_tower::metrics::Registry;
use mesh_tower::pool::{Http1Pool, PoolConfig, PoolMetrics};
use metrics::{Counter, Label};
use parking_lot::Mutex;
use tokio::net::TcpStream;
use tower_service::Service;

/// At most this many application addresses with a shared HTTP/2 connection.
const MAX_H2_APPS: usize = 64;

/// Which protocol the application is spoken to in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AppProtocol {
    Http1,
    Http2,
}

/// What every client connection shares: the HTTP/2 connections and the counters.
#[derive(Clone)]
pub(crate) struct AppClients {
    h2: Arc<Mutex<HashMap<SocketAddr, http2::SendRequest<AppBody>>>>,
    h1: Http1Pool<AppBody>,
    h2_limited: Counter,
}

/// Forwards one client connection's requests to the application at `addr`.
#[derive(Clone)]
pub(crate) struct AppForward {
    addr: SocketAddr,
    shared: AppClients,
}

/// A request body on its way to the application: the client's, through the route filters.
pub(crate) type AppBody = mesh_tower::filter::FilterBody<Incoming>;

/// The response future of [`AppForward`].
pub(crate) type ResponseFuture =
    Pin<Box<dyn Future<Output = Result<Response<Incoming>, BoxError>> + Send>>;

// === impl AppProtocol ===

impl AppProtocol {
    /// The protocol the client used: HTTP/2 unless the request came as HTTP/1, or as HTTP/1
    /// carried over the mesh's HTTP/2 (the marker is removed either way: it is ours).
    fn of<B>(req: &mut Request<B>) -> Self {
        let marked = req.headers_mut().remove(ORIG_PROTO_HEADER);
        if req.version() != Version::HTTP_2 {
            return Self::Http1;
        }
        match marked.as_ref().map(http::HeaderValue::as_bytes) {
            Some(v) if v.starts_with(b"HTTP/1") => Self::Http1,
            _ => Self::Http2,
        }
    }
}

// === impl AppClients ===

impl AppClients {
    pub(crate) fn new(registry: &Registry, config: PoolConfig) -> Self {
        registry.describe(
            "inbound_app_connection_limit_total",
            "Times a bound on connections to the application was hit: an HTTP/1 request queued for a connection (outcome=\"queued\") or was refused with 503 (outcome=\"refused\"), idle connections were closed to bound the addresses holding them (outcome=\"evicted\"), or a shared HTTP/2 connection was let go.",
        );
        let limited = |protocol: &'static str, outcome: &'static str| {
            registry.counter(
                "inbound_app_connection_limit_total",
                vec![
                    Label::new("protocol", protocol),
                    Label::new("outcome", outcome),
                ],
            )
        };
        let metrics = PoolMetrics {
            queued: limited("http1", "queued"),
            refused: limited("http1", "refused"),
            evicted: limited("http1", "evicted"),
        };
        Self {
            h2: Arc::new(Mutex::new(HashMap::new())),
            h1: Http1Pool::new(config, metrics),
            h2_limited: limited("http2", "evicted"),
        }
    }

    /// The shared HTTP/2 connection to `addr`, made when there is none alive.
    async fn h2(&self, addr: SocketAddr) -> Result<http2::SendRequest<AppBody>, BoxError> {
        if let Some(s) = self.h2.lock().get(&addr)
            && !s.is_closed()
        {
            return Ok(s.clone());
        }
        let tcp = connect(addr).await?;
        let (send, conn) = http2::Builder::new(TokioExecutor::new())
            .handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| connect_failed(addr, e.into()))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "application HTTP/2 connection closed");
            }
        });
        let mut map = self.h2.lock();
        map.retain(|_, s| !s.is_closed());
        if map.len() >= MAX_H2_APPS && !map.contains_key(&addr) {
            // Requests in flight on the evicted connection finish; it closes after them.
            self.h2_limited.increment(1);
            if let Some(k) = map.keys().next().copied() {
                map.remove(&k);
            }
        }
        map.insert(addr, send.clone());
        Ok(send)
    }
}

// === impl AppForward ===

impl AppForward {
    pub(crate) fn new(addr: SocketAddr, shared: AppClients) -> Self {
        Self { addr, shared }
    }

    async fn send_h1(&self, mut req: Request<AppBody>) -> Result<Response<Incoming>, BoxError> {
        // The application gets HTTP/1.1 in origin form with a Host, as a client would send.
        if let Some(a) = req.uri().authority().cloned()
            && !req.headers().contains_key(http::header::HOST)
            && let Ok(v) = http::HeaderValue::from_str(a.as_str())
        {
            req.headers_mut().insert(http::header::HOST, v);
        }
        if req.uri().scheme().is_some() {
            let pq = req
                .uri()
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_owned();
            *req.uri_mut() = pq.parse()?;
        }
        *req.version_mut() = Version::HTTP_11;
        self.shared.h1.send(self.addr, req).await
    }

    async fn send_h2(&self, mut req: Request<AppBody>) -> Result<Response<Incoming>, BoxError> {
        // HTTP/2 needs :scheme and :authority; a request that arrived without them gets the
        // Host it named, else the application's address.
        if req.uri().scheme().is_none() {
            let authority = req
                .headers()
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .map_or_else(|| self.addr.to_string(), str::to_owned);
            let pq = req.uri().path_and_query().map_or("/", |p| p.as_str());
            let uri: Uri = format!("http://{authority}{pq}").parse()?;
            *req.uri_mut() = uri;
        }
        *req.version_mut() = Version::HTTP_2;
        let mut sender = self.shared.h2(self.addr).await?;
        sender
            .ready()
            .await
            .map_err(|e| connect_failed(self.addr, e.into()))?;
        sender.send_request(req).await.map_err(Into::into)
    }
}

impl Service<Request<AppBody>> for AppForward {
    type Response = Response<Incoming>;
    type Error = BoxError;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<AppBody>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            match AppProtocol::of(&mut req) {
                AppProtocol::Http1 => this.send_h1(req).await,
                AppProtocol::Http2 => this.send_h2(req).await,
            }
        })
    }
}

async fn connect(addr: SocketAddr) -> Result<TcpStream, BoxError> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| connect_failed(addr, e.into()))?;
    let _ = tcp.set_nodelay(true);
    Ok(tcp)
}

fn connect_failed(addr: SocketAddr, source: BoxError) -> BoxError {
    Box::new(ConnectFailed { addr, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_protocol_decides_and_the_marker_is_removed() {
        let cases = [
            (Version::HTTP_11, None, AppProtocol::Http1),
            (Version::HTTP_10, None, AppProtocol::Http1),
            (Version::HTTP_2, None, AppProtocol::Http2),
            (Version::HTTP_2, Some("HTTP/1.1"), AppProtocol::Http1),
            (Version::HTTP_2, Some("HTTP/1.0"), AppProtocol::Http1),
            (Version::HTTP_2, Some("HTTP/3"), AppProtocol::Http2),
            (Version::HTTP_11, Some("HTTP/1.1"), AppProtocol::Http1),
        ];
        for (version, marker, want) in cases {
            let mut req = Request::builder().version(version);
            if let Some(m) = marker {
                req = req.header(ORIG_PROTO_HEADER, m);
            }
            let mut req = req.body(()).unwrap();
            assert_eq!(AppProtocol::of(&mut req), want, "{version:?} {marker:?}");
            assert!(!req.headers().contains_key(ORIG_PROTO_HEADER));
        }
    }
}

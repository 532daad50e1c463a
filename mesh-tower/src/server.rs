//! The in-process mesh server: wraps any `tower::Service<http::Request<Incoming>>` (an axum
//! `Router`, a tonic service) with the mesh's TLS acceptor and inbound stack — authorization,
//! rate limits, metrics, trace propagation — serving HTTP/1.1 and HTTP/2.
//!
//! Connections that open with a TLS handshake must complete mesh mTLS; the verified peer
//! identity travels with each request. Plaintext connections are accepted too (kubelet probes,
//! clients outside the mesh) and are authorized as unauthenticated.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use mesh_core::InboundTarget;
use mesh_identity::PeerIdentity;
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceExt;
use tower_service::Service;

use crate::BoxError;
use crate::accepted::Accepted;
use crate::authz::{AuthorizeLayer, ClientInfo};
use crate::errors::RespondLayer;
use crate::metrics::{Direction, MetricsLayer, Registry};
use crate::policy::PolicyHandle;
use crate::rate_limit::RateLimitLayer;
use crate::trace::TraceLayer;

/// How long a new connection may take to send its first byte or finish its TLS handshake.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// See the [module docs](self).
#[derive(Clone)]
pub struct MeshServer {
    tls: Option<tokio_rustls::TlsAcceptor>,
    policy: PolicyHandle,
    target: Arc<InboundTarget>,
    registry: Registry,
    control_namespace: String,
    handshake_timeout: Duration,
}

// === impl MeshServer ===

impl MeshServer {
    /// A server for the workload port described by `target`, authorizing by `policy`. `tls`
    /// comes from `mesh_identity::tls::server_config`; without it only plaintext is served.
    pub fn new(
        tls: Option<rustls::ServerConfig>,
        policy: PolicyHandle,
        target: InboundTarget,
    ) -> Self {
        Self {
            tls: tls.map(|c| tokio_rustls::TlsAcceptor::from(Arc::new(c))),
            policy,
            target: Arc::new(target),
            registry: Registry::new(),
            control_namespace: mesh_core::identity::DEFAULT_CONTROL_NAMESPACE.to_owned(),
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
        }
    }

    /// Records metrics into `registry`.
    #[must_use]
    pub fn metrics(mut self, registry: Registry) -> Self {
        self.registry = registry;
        self
    }

    /// The control namespace of DNS-form identities in metrics (default `linkerd`).
    #[must_use]
    pub fn control_namespace(mut self, ns: &str) -> Self {
        self.control_namespace = ns.to_owned();
        self
    }

    /// The registry the server records into.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Serves `app` on `listener` until `shutdown` completes, then lets in-flight requests
    /// finish for up to `grace`.
    pub async fn serve_with_shutdown<S, B>(
        self,
        listener: TcpListener,
        app: S,
        shutdown: impl Future<Output = ()>,
        grace: Duration,
    ) -> std::io::Result<()>
    where
        S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + Sync + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        let stack = tower::ServiceBuilder::new()
            .layer(RespondLayer::new())
            // Metrics after authorization, so series carry the Server and route that admitted
            // the request; denials are counted in `inbound_http_authz_deny_total`.
            .layer(AuthorizeLayer::new(self.policy.clone()).with_metrics(self.registry.clone()))
            .layer(MetricsLayer::with_control_namespace(
                self.registry.clone(),
                Direction::Inbound,
                &self.control_namespace,
            ))
            .layer(RateLimitLayer::new())
            .layer(TraceLayer::new())
            .service(app);
        tokio::pin!(shutdown);
        loop {
            let (tcp, addr) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: back off, keep serving.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = &mut shutdown => break,
            };
            let _ = tcp.set_nodelay(true);
            let this = self.clone();
            let stack = stack.clone();
            let watcher = graceful.watcher();
            tokio::spawn(async move {
                let (io, identity) = match this.accept(tcp).await {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::debug!(%addr, error = %e, "connection refused");
                        return;
                    }
                };
                let accepted = Accepted {
                    client: Some(ClientInfo { identity, addr }),
                    target: Some(Arc::clone(&this.target)),
                    ..Accepted::default()
                };
                let svc = stack.map_request(move |mut req: Request<Incoming>| {
                    // The mesh's own marker (see `connect`) is not the application's business.
                    req.headers_mut().remove(crate::connect::ORIG_PROTO_HEADER);
                    req.extensions_mut().insert(accepted.clone());
                    req
                });
                let builder = auto::Builder::new(TokioExecutor::new());
                let conn = builder.serve_connection(io, TowerToHyperService::new(svc));
                if let Err(e) = watcher.watch(conn.into_owned()).await {
                    tracing::debug!(%addr, error = %e, "connection ended with an error");
                }
            });
        }
        drop(listener);
        if tokio::time::timeout(grace, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!(?grace, "connections still open after the grace period");
        }
        Ok(())
    }

    /// Serves `app` on `listener` forever.
    pub async fn serve<S, B>(self, listener: TcpListener, app: S) -> std::io::Result<()>
    where
        S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + Sync + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        self.serve_with_shutdown(listener, app, std::future::pending(), Duration::ZERO)
            .await
    }

    /// Detects TLS by the first byte and completes the handshake.
    async fn accept(
        &self,
        tcp: TcpStream,
    ) -> Result<(TokioIo<Conn>, Option<mesh_core::Identity>), BoxError> {
        let mut first = [0u8; 1];
        let n = tokio::time::timeout(self.handshake_timeout, tcp.peek(&mut first)).await??;
        // 0x16 opens a TLS handshake record.
        if n == 1 && first[0] == 0x16 {
            let Some(acceptor) = &self.tls else {
                return Err("TLS offered but this server has no certificate".into());
            };
            let tls = tokio::time::timeout(self.handshake_timeout, acceptor.accept(tcp)).await??;
            let identity = tls.get_ref().1.peer_identity();
            return Ok((TokioIo::new(Conn::Tls(Box::new(tls))), identity));
        }
        Ok((TokioIo::new(Conn::Plain(tcp)), None))
    }
}

impl std::fmt::Debug for MeshServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeshServer")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

/// A server-side connection, with or without TLS.
pub enum Conn {
    /// Plaintext.
    Plain(TcpStream),
    /// Mesh mTLS.
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl tokio::io::AsyncRead for Conn {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => std::pin::Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => std::pin::Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl tokio::io::AsyncWrite for Conn {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => std::pin::Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => std::pin::Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => std::pin::Pin::new(s).poll_flush(cx),
            Self::Tls(s) => std::pin::Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => std::pin::Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => std::pin::Pin::new(s).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => std::pin::Pin::new(s).poll_write_vectored(cx, bufs),
            Self::Tls(s) => std::pin::Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(s) => s.is_write_vectored(),
            Self::Tls(s) => s.is_write_vectored(),
        }
    }
}

/// Describes a local workload port for [`MeshServer::new`] when there is no pod to read it from.
pub fn local_target(namespace: &str, port: u16, labels: &[(&str, &str)]) -> InboundTarget {
    InboundTarget {
        namespace: namespace.to_owned(),
        labels: labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        port,
        ..InboundTarget::default()
    }
}

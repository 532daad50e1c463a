//! The issuer's HTTPS server: one connection at a time ([`serve_connection`]), each bounded
//! in how long its handshake and request headers may take, and a plain accept loop
//! ([`serve`]) for callers that bring no connection limit of their own.
//!
//! The body read timeout belongs to the [`IssuerService`] (it reads the body); the `mesh`
//! binary caps concurrent connections in its own accept loop, shared with its other servers.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use rustls::ServerConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use super::{IssuerService, TokenAuthenticator};

/// How long one connection may take for each step before the request is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionConfig {
    /// The TLS handshake.
    pub handshake_timeout: Duration,
    /// A request's headers, counted from when the connection is idle (opened, or its last
    /// response sent), so an idle keep-alive connection is closed after this too.
    pub header_read_timeout: Duration,
}

/// Why a connection ended early. Each ends that connection only.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    /// The TLS handshake failed.
    #[error("TLS handshake failed")]
    Handshake(#[source] std::io::Error),
    /// The TLS handshake did not finish in time.
    #[error("TLS handshake did not finish within {0:?}")]
    HandshakeTimeout(Duration),
    /// HTTP failed: a malformed request, headers too slow, the peer gone.
    #[error("HTTP connection failed")]
    Http(#[from] hyper::Error),
}

// === impl ConnectionConfig ===

impl Default for ConnectionConfig {
    /// The API server and our clients finish both in well under a second; 10 s is generous
    /// to a slow network and short for a client that only holds the connection.
    fn default() -> Self {
        Self {
            handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
        }
    }
}

/// Serves `service` over HTTPS on `listener` with `tls` (see
/// [`issuer_server_config`](crate::tls::issuer_server_config)) until the future is dropped,
/// with the default [`ConnectionConfig`] and no limit on concurrent connections.
///
/// Each connection runs in its own task; a failed handshake or a broken request ends that
/// connection only.
pub async fn serve<A: TokenAuthenticator>(
    listener: TcpListener,
    service: Arc<IssuerService<A>>,
    tls: Arc<ServerConfig>,
) {
    let acceptor = TlsAcceptor::from(tls);
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                // E.g. out of file descriptors: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let conn = serve_connection(
            tcp,
            acceptor.clone(),
            service.clone(),
            ConnectionConfig::default(),
        );
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %crate::error_chain(&e), "connection ended");
            }
        });
    }
}

/// Serves one accepted connection: TLS, then HTTP/1.1 requests to `service` until the client
/// closes, a request fails, or a step takes longer than `config` allows.
pub async fn serve_connection<A: TokenAuthenticator>(
    tcp: TcpStream,
    acceptor: TlsAcceptor,
    service: Arc<IssuerService<A>>,
    config: ConnectionConfig,
) -> Result<(), ConnectionError> {
    let tls = tokio::time::timeout(config.handshake_timeout, acceptor.accept(tcp))
        .await
        .map_err(|_| ConnectionError::HandshakeTimeout(config.handshake_timeout))?
        .map_err(ConnectionError::Handshake)?;
    let svc = hyper::service::service_fn(move |req| {
        let service = service.clone();
        async move { Ok::<_, Infallible>(service.handle(req).await) }
    });
    hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout)
        .serve_connection(TokioIo::new(tls), svc)
        .await?;
    Ok(())
}

//! The bottom of the outbound stack: sends a request to the [`Endpoint`] the balancer chose.
//!
//! A meshed endpoint (one with an expected identity) is reached over mutual TLS that must prove
//! exactly that identity, with HTTP/2 multiplexed on one connection per endpoint; an HTTP/1
//! request crosses it marked with [`ORIG_PROTO_HEADER`], so the peer's proxy hands it to its
//! application as HTTP/1 again (Linkerd's `l5d-orig-proto`). An endpoint outside the mesh is
//! reached in plaintext in the client's own protocol: HTTP/2 (gRPC) on one connection per
//! endpoint, HTTP/1.1 from a connection pool (`crate::pool`) — and metrics say
//! `tls="no_identity"`, never silently. Connections idle longer than the pool's idle timeout are
//! closed, HTTP/2 ones included, so a proxy that called many destinations once gives their
//! file descriptors back.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response, Uri};
use http_body::Body;
use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use parking_lot::Mutex;
use tokio::net::TcpStream;
use tower_service::Service;

use crate::BoxError;
use crate::discover::Endpoint;
use crate::errors::ConnectFailed;
use crate::pool::{Http1Pool, PoolConfig, PoolMetrics};

/// The header that carries an HTTP/1 request's version across the mesh's HTTP/2 connection;
/// the receiving proxy removes it. A `HeaderName` made once: inserting a custom header by its
/// `&str` name allocates the name on every request.
pub const ORIG_PROTO_HEADER: http::HeaderName = http::HeaderName::from_static("l5d-orig-proto");

/// At most this many endpoints keep an HTTP/2 connection; beyond it the oldest is let go (its
/// requests in flight finish first).
const MAX_H2_ENDPOINTS: usize = 1024;

/// Sends requests to their chosen endpoint. Cheap to clone: clones share connections.
pub struct Connect<B> {
    shared: Arc<Shared<B>>,
}

struct Shared<B> {
    tls: Option<Arc<rustls::ClientConfig>>,
    plain: Http1Pool<B>,
    h2: Mutex<HashMap<Endpoint, H2Entry<B>>>,
    idle_timeout: std::time::Duration,
    sweeping: std::sync::atomic::AtomicBool,
}

/// A shared HTTP/2 connection and when a request last took it.
struct H2Entry<B> {
    send: SendRequest<B>,
    used: tokio::time::Instant,
}

/// Response future of [`Connect`].
pub type ResponseFuture =
    Pin<Box<dyn Future<Output = Result<Response<Incoming>, BoxError>> + Send>>;

// === impl Connect ===

impl<B> Connect<B>
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    /// Connects meshed endpoints with `tls` (from `mesh_identity::tls::client_config`), others in
    /// plaintext. Without `tls`, every endpoint is reached in plaintext.
    pub fn new(tls: Option<rustls::ClientConfig>) -> Self {
        Self::with_pool(tls, PoolConfig::default(), PoolMetrics::default())
    }

    /// As [`Connect::new`], with these bounds on plaintext HTTP/1 connections; its idle
    /// timeout closes idle HTTP/2 connections too.
    pub fn with_pool(
        tls: Option<rustls::ClientConfig>,
        pool: PoolConfig,
        metrics: PoolMetrics,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                tls: tls.map(Arc::new),
                plain: Http1Pool::new(pool, metrics),
                h2: Mutex::new(HashMap::new()),
                idle_timeout: pool.idle_timeout,
                sweeping: std::sync::atomic::AtomicBool::new(false),
            }),
        }
    }
}

impl<B> Clone for Connect<B> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<B> std::fmt::Debug for Connect<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connect")
            .field("mtls", &self.shared.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl<B> Shared<B>
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    /// An HTTP/2 connection to `ep`, reused while it lives: over mesh mTLS proving the
    /// endpoint's identity when `tls` is given, else in plaintext with prior knowledge.
    async fn h2(
        &self,
        ep: &Endpoint,
        tls: Option<&Arc<rustls::ClientConfig>>,
    ) -> Result<SendRequest<B>, BoxError> {
        if let Some(e) = self.h2.lock().get_mut(ep)
            && !e.send.is_closed()
        {
            e.used = tokio::time::Instant::now();
            return Ok(e.send.clone());
        }
        let fail = |source: BoxError| -> BoxError {
            Box::new(ConnectFailed {
                addr: ep.addr,
                source,
            })
        };
        let tcp = TcpStream::connect(ep.addr)
            .await
            .map_err(|e| fail(e.into()))?;
        let _ = tcp.set_nodelay(true);
        let handshake = hyper::client::conn::http2::Builder::new(TokioExecutor::new());
        let (send, conn) = match tls {
            Some(tls) => {
                let Some(identity) = &ep.identity else {
                    return Err(fail("endpoint has no identity".into()));
                };
                let name = mesh_identity::tls::server_name(identity).map_err(|e| fail(e.into()))?;
                let tls = tokio_rustls::TlsConnector::from(Arc::clone(tls))
                    .connect(name, tcp)
                    .await
                    .map_err(|e| fail(e.into()))?;
                let (send, conn) = handshake
                    .handshake(TokioIo::new(tls))
                    .await
                    .map_err(|e| fail(e.into()))?;
                (send, Box::pin(conn) as H2Conn)
            }
            None => {
                let (send, conn) = handshake
                    .handshake(TokioIo::new(tcp))
                    .await
                    .map_err(|e| fail(e.into()))?;
                (send, Box::pin(conn) as H2Conn)
            }
        };
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "HTTP/2 connection to an endpoint closed");
            }
        });
        let mut map = self.h2.lock();
        map.retain(|_, e| !e.send.is_closed());
        if map.len() >= MAX_H2_ENDPOINTS
            && let Some(k) = map
                .iter()
                .min_by_key(|(_, e)| e.used)
                .map(|(k, _)| k.clone())
        {
            tracing::debug!(endpoint = %k.addr, "too many HTTP/2 endpoints: letting the least recently used go");
            map.remove(&k);
        }
        let used = tokio::time::Instant::now();
        map.insert(
            ep.clone(),
            H2Entry {
                send: send.clone(),
                used,
            },
        );
        Ok(send)
    }

    /// Lets go of HTTP/2 connections no request took for the idle timeout (requests still in
    /// flight on one finish first), from a task that lives as long as the connector.
    fn start_sweeping(self: &Arc<Self>) {
        if self
            .sweeping
            .swap(true, std::sync::atomic::Ordering::AcqRel)
        {
            return;
        }
        let shared = Arc::downgrade(self);
        let period = (self.idle_timeout / 2).max(std::time::Duration::from_millis(50));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            loop {
                tick.tick().await;
                let Some(shared) = shared.upgrade() else {
                    return;
                };
                let idle = shared.idle_timeout;
                shared
                    .h2
                    .lock()
                    .retain(|_, e| e.used.elapsed() < idle && !e.send.is_closed());
            }
        });
    }

    /// Sends `req` on an HTTP/2 connection to `ep`.
    async fn send_h2(
        &self,
        ep: &Endpoint,
        tls: Option<&Arc<rustls::ClientConfig>>,
        mut req: Request<B>,
    ) -> Result<Response<Incoming>, BoxError> {
        let mut send = self.h2(ep, tls).await?;
        *req.version_mut() = http::Version::HTTP_2;
        send.ready().await.map_err(|e| -> BoxError {
            Box::new(ConnectFailed {
                addr: ep.addr,
                source: e.into(),
            })
        })?;
        send.send_request(req).await.map_err(Into::into)
    }
}

/// A spawned HTTP/2 connection driver, over TLS or not.
type H2Conn = Pin<Box<dyn Future<Output = hyper::Result<()>> + Send>>;

impl<B> Service<Request<B>> for Connect<B>
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<Incoming>;
    type Error = BoxError;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let shared = Arc::clone(&self.shared);
        Box::pin(async move {
            shared.start_sweeping();
            let ep = Endpoint::of(req.extensions())
                .cloned()
                .ok_or("connect: no endpoint was chosen for the request")?;
            let http1 = req.version() < http::Version::HTTP_2;
            // Keep the logical authority for the server's routing.
            if http1
                && !req.headers().contains_key(http::header::HOST)
                && let Some(a) = req.uri().authority()
                && let Ok(v) = http::HeaderValue::from_str(a.as_str())
            {
                req.headers_mut().insert(http::header::HOST, v);
            }
            match (&ep.identity, &shared.tls) {
                (Some(_), Some(tls)) => {
                    if http1 {
                        req.headers_mut().insert(
                            ORIG_PROTO_HEADER,
                            http::HeaderValue::from_static("HTTP/1.1"),
                        );
                    }
                    shared.send_h2(&ep, Some(tls), req).await
                }
                // The client spoke HTTP/2 with prior knowledge to the original destination:
                // so does the proxy.
                _ if !http1 => shared.send_h2(&ep, None, req).await,
                _ => {
                    // Origin form: the Host header above names the destination.
                    let pq = req.uri().path_and_query().map_or("/", |p| p.as_str());
                    let uri: Uri = pq.parse()?;
                    *req.uri_mut() = uri;
                    *req.version_mut() = http::Version::HTTP_11;
                    shared.plain.send(ep.addr, req).await
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use http_body_util::{BodyExt, Empty, Full};
    use hyper_util::server::conn::auto;
    use tokio::net::TcpListener;

    use super::*;

    /// A plaintext server outside the mesh, HTTP/1 and HTTP/2, that answers with the version
    /// the request arrived in and whether it carried the mesh's marker.
    async fn version_echo() -> std::net::SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let svc = hyper::service::service_fn(|req: Request<Incoming>| async move {
                    let marked = req.headers().contains_key(ORIG_PROTO_HEADER);
                    let text = format!("{:?} marked={marked}", req.version());
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(text))))
                });
                tokio::spawn(async move {
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        addr
    }

    /// One request in `version` to the endpoint at `addr`; the response body.
    async fn get(
        connect: &mut Connect<Empty<Bytes>>,
        addr: std::net::SocketAddr,
        version: http::Version,
    ) -> Bytes {
        let mut req = Request::get("http://svc.ns:8080/x")
            .version(version)
            .body(Empty::new())
            .unwrap();
        crate::dispatch::Dispatch::get_mut(req.extensions_mut()).endpoint =
            Some(Endpoint::new(addr));
        let rsp = connect.call(req).await.unwrap();
        rsp.into_body().collect().await.unwrap().to_bytes()
    }

    #[tokio::test]
    async fn an_unmeshed_endpoint_is_spoken_to_in_the_clients_protocol() {
        let addr = version_echo().await;
        let mut connect = Connect::<Empty<Bytes>>::new(None);
        let cases = [
            (http::Version::HTTP_11, "HTTP/1.1 marked=false"),
            (http::Version::HTTP_2, "HTTP/2.0 marked=false"),
            (http::Version::HTTP_2, "HTTP/2.0 marked=false"),
            (http::Version::HTTP_11, "HTTP/1.1 marked=false"),
        ];
        for (version, want) in cases {
            let body = get(&mut connect, addr, version).await;
            assert_eq!(body, want.as_bytes(), "{version:?}");
        }
        // One HTTP/2 connection serves every HTTP/2 request to the endpoint.
        assert_eq!(connect.shared.h2.lock().len(), 1);
    }

    #[tokio::test]
    async fn idle_connections_are_let_go_after_the_idle_timeout() {
        let addr = version_echo().await;
        let pool = PoolConfig {
            idle_timeout: std::time::Duration::from_millis(100),
            ..PoolConfig::default()
        };
        let mut connect = Connect::<Empty<Bytes>>::with_pool(None, pool, PoolMetrics::default());
        for version in [http::Version::HTTP_11, http::Version::HTTP_2] {
            get(&mut connect, addr, version).await;
        }
        assert_eq!(connect.shared.h2.lock().len(), 1);
        tokio::time::sleep(std::time::Duration::from_millis(400)).await;
        assert!(connect.shared.h2.lock().is_empty());
        assert!(format!("{:?}", connect.shared.plain).contains("addresses: 0"));
    }
}

//! The bottom of the outbound stack: sends a request to the [`Endpoint`] the balancer chose.
//!
//! A meshed endpoint (one with an expected identity) is reached over mutual TLS that must prove
//! exactly that identity, with HTTP/2 multiplexed on one connection per endpoint. An endpoint
//! outside the mesh is reached in plaintext HTTP/1.1 from a connection pool — and metrics say
//! `tls="no_identity"`, never silently.

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
use hyper_util::client::legacy::Client as PoolClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use parking_lot::Mutex;
use tokio::net::TcpStream;
use tower_service::Service;

use crate::BoxError;
use crate::discover::Endpoint;
use crate::errors::ConnectFailed;

/// Sends requests to their chosen endpoint. Cheap to clone: clones share connections.
pub struct Connect<B> {
    shared: Arc<Shared<B>>,
}

struct Shared<B> {
    tls: Option<Arc<rustls::ClientConfig>>,
    plain: PoolClient<HttpConnector, B>,
    h2: Mutex<HashMap<Endpoint, SendRequest<B>>>,
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
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        Self {
            shared: Arc::new(Shared {
                tls: tls.map(Arc::new),
                plain: PoolClient::builder(TokioExecutor::new()).build(http),
                h2: Mutex::new(HashMap::new()),
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
    /// An HTTP/2 connection over mesh mTLS to `ep`, reused while it lives.
    async fn h2(
        &self,
        ep: &Endpoint,
        tls: &Arc<rustls::ClientConfig>,
    ) -> Result<SendRequest<B>, BoxError> {
        if let Some(s) = self.h2.lock().get(ep)
            && !s.is_closed()
        {
            return Ok(s.clone());
        }
        let fail = |source: BoxError| -> BoxError {
            Box::new(ConnectFailed {
                addr: ep.addr,
                source,
            })
        };
        let Some(identity) = &ep.identity else {
            return Err(fail("endpoint has no identity".into()));
        };
        let tcp = TcpStream::connect(ep.addr)
            .await
            .map_err(|e| fail(e.into()))?;
        let _ = tcp.set_nodelay(true);
        let name = mesh_identity::tls::server_name(identity).map_err(|e| fail(e.into()))?;
        let tls = tokio_rustls::TlsConnector::from(Arc::clone(tls))
            .connect(name, tcp)
            .await
            .map_err(|e| fail(e.into()))?;
        let (send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .handshake(TokioIo::new(tls))
            .await
            .map_err(|e| fail(e.into()))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "mesh connection closed");
            }
        });
        self.h2.lock().insert(ep.clone(), send.clone());
        Ok(send)
    }
}

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
            let ep = req
                .extensions()
                .get::<Endpoint>()
                .cloned()
                .ok_or("connect: no endpoint was chosen for the request")?;
            // Keep the logical authority for the server's routing.
            if !req.headers().contains_key(http::header::HOST)
                && let Some(a) = req.uri().authority()
                && let Ok(v) = http::HeaderValue::from_str(a.as_str())
            {
                req.headers_mut().insert(http::header::HOST, v);
            }
            match (&ep.identity, &shared.tls) {
                (Some(_), Some(tls)) => {
                    let mut send = shared.h2(&ep, tls).await?;
                    *req.version_mut() = http::Version::HTTP_2;
                    send.ready().await.map_err(|e| -> BoxError {
                        Box::new(ConnectFailed {
                            addr: ep.addr,
                            source: e.into(),
                        })
                    })?;
                    send.send_request(req).await.map_err(Into::into)
                }
                _ => {
                    let pq = req.uri().path_and_query().map_or("/", |p| p.as_str());
                    let uri: Uri = format!("http://{}{pq}", ep.addr).parse()?;
                    *req.uri_mut() = uri;
                    *req.version_mut() = http::Version::HTTP_11;
                    shared.plain.request(req).await.map_err(|e| -> BoxError {
                        if e.is_connect() {
                            Box::new(ConnectFailed {
                                addr: ep.addr,
                                source: e.into(),
                            })
                        } else {
                            e.into()
                        }
                    })
                }
            }
        })
    }
}

//! The inbound side: mesh TLS accept (peer identity), protocol detection, then authorization,
//! rate limits and metrics in front of the application on `127.0.0.1:<original port>`.

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use mesh_core::{InboundTarget, Peer, Request as FactsRequest};
use mesh_identity::PeerIdentity;
use mesh_tower::BoxError;
use mesh_tower::authz::{AuthorizeLayer, ClientInfo};
use mesh_tower::errors::{ConnectFailed, RespondLayer};
use mesh_tower::metrics::{Direction, MetricsLayer, TargetAddr};
use mesh_tower::rate_limit::RateLimitLayer;
use mesh_tower::trace::TraceLayer;
use parking_lot::Mutex;
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceExt;
use tower_service::Service;

use super::detect::{Prefixed, Protocol, detect};
use super::io::{BoxIo, ConnMetrics, Counted};
use super::{Mode, Proxy};

/// At most this many idle upstream connections per client connection.
const MAX_IDLE_UPSTREAM: usize = 16;

pub(crate) async fn serve(
    proxy: Arc<Proxy>,
    listener: TcpListener,
    graceful: Arc<GracefulShutdown>,
) {
    let layers = Layers {
        metrics: MetricsLayer::with_control_namespace(
            proxy.registry.clone(),
            Direction::Inbound,
            &proxy.args.control_namespace,
        ),
        authz: AuthorizeLayer::new(proxy.config.policy.clone())
            .with_metrics(proxy.registry.clone()),
        rate: RateLimitLayer::new(),
    };
    let p = Arc::clone(&proxy);
    super::accept_loop(
        proxy,
        listener,
        super::Listener::Inbound,
        move |tcp, peer| {
            handle(
                Arc::clone(&p),
                layers.clone(),
                tcp,
                peer,
                graceful.watcher(),
            )
        },
    )
    .await;
}

#[derive(Clone)]
struct Layers {
    metrics: MetricsLayer,
    authz: AuthorizeLayer,
    rate: RateLimitLayer,
}

/// Whether the client opens with a TLS ClientHello that offers the mesh ALPN. Peeks, so the
/// bytes stay for whoever reads next.
async fn offers_mesh_tls(tcp: &TcpStream, timeout: Duration) -> bool {
    let needle = {
        let mut n = vec![mesh_identity::MESH_ALPN.len() as u8];
        n.extend_from_slice(mesh_identity::MESH_ALPN);
        n
    };
    let mut buf = [0u8; 2048];
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let Ok(Ok(n)) = tokio::time::timeout_at(deadline, tcp.peek(&mut buf)).await else {
            return false;
        };
        if n == 0 || buf[0] != 0x16 {
            return false;
        }
        if buf[..n]
            .windows(needle.len())
            .any(|w| w == needle.as_slice())
        {
            return true;
        }
        // The ClientHello record is complete and names no mesh ALPN: the app's own TLS.
        if n >= 5 {
            let record = 5 + usize::from(u16::from_be_bytes([buf[3], buf[4]]));
            if n >= record.min(buf.len()) {
                return false;
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

async fn handle(
    proxy: Arc<Proxy>,
    layers: Layers,
    tcp: TcpStream,
    peer: SocketAddr,
    watcher: hyper_util::server::graceful::Watcher,
) -> Result<(), BoxError> {
    let args = &proxy.args;
    let app = match args.mode {
        Mode::Transparent => {
            let dst = super::orig_dst::original_dst(&tcp)?;
            if dst.port() == args.inbound_addr.port() {
                return Err(
                    "refusing a connection addressed to the inbound port itself (a redirect loop)"
                        .into(),
                );
            }
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), dst.port())
        }
        Mode::Explicit => args
            .inbound_forward
            .ok_or("explicit mode needs --inbound-forward to know where the application is")?,
    };
    let port = app.port();
    let target_addr = TargetAddr(target_addr(&tcp, port));
    let is_opaque = proxy.is_opaque(port);
    // Server-speaks-first ports must not wait long for a ClientHello that will not come.
    let tls_wait = if is_opaque {
        args.detect_timeout.min(Duration::from_millis(100))
    } else {
        args.detect_timeout
    };
    let (io, identity): (BoxIo, _) = match &proxy.tls_server {
        Some(cfg) if offers_mesh_tls(&tcp, tls_wait).await => {
            let acceptor = tokio_rustls::TlsAcceptor::from(Arc::clone(cfg));
            let tls =
                tokio::time::timeout(args.detect_timeout * 10, acceptor.accept(tcp)).await??;
            let id = tls.get_ref().1.peer_identity();
            (Box::new(tls), id)
        }
        _ => (Box::new(tcp), None),
    };
    let io = Counted::new(
        io,
        ConnMetrics::open(&proxy.registry, "inbound", identity.is_some()),
    );
    let target = Arc::new(proxy.target(port));
    let client = ClientInfo {
        identity,
        addr: peer,
    };
    let (proto, io) = if is_opaque {
        (Protocol::Opaque, Prefixed::new(io))
    } else {
        detect(io, args.detect_timeout).await?
    };
    if proto == Protocol::Opaque {
        return opaque(&proxy, io, app, &target, &client).await;
    }

    let forward = AppForward::new(app);
    let stack = tower::ServiceBuilder::new()
        .layer(RespondLayer::new())
        // Metrics after authorization: series carry the Server and route that admitted a
        // request (denials are counted by authz), never the client's Host.
        .layer(layers.authz)
        .layer(layers.metrics)
        .layer(layers.rate)
        .layer(TraceLayer::new())
        .service(forward)
        .map_request(move |mut req: Request<Incoming>| {
            req.extensions_mut().insert(client.clone());
            req.extensions_mut().insert(Arc::clone(&target));
            req.extensions_mut().insert(target_addr);
            req
        });
    let builder = super::http_server(args);
    let conn = builder.serve_connection(TokioIo::new(io), TowerToHyperService::new(stack));
    watcher
        .watch(conn.into_owned())
        .await
        .map_err(|e| -> BoxError { e })?;
    Ok(())
}

/// Where a connection arrived, for `target_addr`: the pod's address and the application's
/// port (the listener's own port in transparent mode is the redirect's, not the target's).
fn target_addr(tcp: &TcpStream, port: u16) -> SocketAddr {
    let ip = tcp
        .local_addr()
        .map_or(Ipv4Addr::UNSPECIFIED.into(), |a| a.ip());
    SocketAddr::new(ip, port)
}

/// Opaque TCP: authorized as a connection, then copied byte for byte to the application.
async fn opaque(
    proxy: &Proxy,
    mut io: Prefixed<Counted<BoxIo>>,
    app: SocketAddr,
    target: &InboundTarget,
    client: &ClientInfo,
) -> Result<(), BoxError> {
    let facts = FactsRequest::new("CONNECT", &format!("http://{app}/"))?;
    let peer = Peer {
        identity: client.identity.clone(),
        ip: Some(client.addr.ip()),
    };
    let d = proxy.config.policy.load().authorize(target, &peer, &facts);
    proxy.registry.count_authz(target, &d);
    if !d.allowed {
        tracing::info!(by = %d.by, reason = %d.reason, "TCP connection denied");
        return Ok(());
    }
    let _guard = OpaqueGuard::new(proxy);
    let mut upstream = TcpStream::connect(app).await.map_err(|e| ConnectFailed {
        addr: app,
        source: e.into(),
    })?;
    let _ = upstream.set_nodelay(true);
    tokio::io::copy_bidirectional(&mut io, &mut upstream).await?;
    Ok(())
}

/// Counts open opaque connections, so shutdown can wait for them.
pub(crate) struct OpaqueGuard<'a>(&'a Proxy);

impl<'a> OpaqueGuard<'a> {
    pub(crate) fn new(p: &'a Proxy) -> Self {
        p.open_opaque.fetch_add(1, Ordering::AcqRel);
        Self(p)
    }
}

impl Drop for OpaqueGuard<'_> {
    fn drop(&mut self) {
        self.0.open_opaque.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Forwards requests to the application over HTTP/1.1, reusing this client connection's own
/// upstream connections (no shared pool on the hot path).
#[derive(Clone)]
struct AppForward {
    addr: SocketAddr,
    idle: Arc<Mutex<Vec<SendRequest<Incoming>>>>,
}

impl AppForward {
    fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            idle: Arc::new(Mutex::new(Vec::new())),
        }
    }

    fn take_ready(&self) -> Option<SendRequest<Incoming>> {
        let mut idle = self.idle.lock();
        while let Some(s) = idle.pop() {
            if s.is_ready() {
                return Some(s);
            }
            if !s.is_closed() {
                // Busy with a response body: keep it for later, try another.
                idle.insert(0, s);
                if idle.iter().all(|s| !s.is_ready()) {
                    return None;
                }
            }
        }
        None
    }

    async fn connect(addr: SocketAddr) -> Result<SendRequest<Incoming>, BoxError> {
        let fail = |e: BoxError| -> BoxError { Box::new(ConnectFailed { addr, source: e }) };
        let tcp = TcpStream::connect(addr).await.map_err(|e| fail(e.into()))?;
        let _ = tcp.set_nodelay(true);
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| fail(e.into()))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "application connection closed");
            }
        });
        Ok(send)
    }
}

impl Service<Request<Incoming>> for AppForward {
    type Response = Response<Incoming>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Incoming>, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<Incoming>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            // The application speaks HTTP/1.1 in origin form, whatever the client spoke.
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
            *req.version_mut() = http::Version::HTTP_11;
            let mut sender = match this.take_ready() {
                Some(s) => s,
                None => Self::connect(this.addr).await?,
            };
            if sender.ready().await.is_err() {
                sender = Self::connect(this.addr).await?;
            }
            let fut = sender.send_request(req);
            {
                let mut idle = this.idle.lock();
                if idle.len() < MAX_IDLE_UPSTREAM {
                    idle.push(sender);
                }
            }
            fut.await.map_err(Into::into)
        })
    }
}

//! The outbound side: the application's connections, redirected to `127.0.0.1:4140`.
//! HTTP goes through the full outbound stack (route, timeout, retry, split, balance, failure
//! accrual, mTLS); anything else is proxied byte for byte — over mTLS where the destination is
//! a meshed workload.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Uri};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use mesh_tower::BoxError;
use mesh_tower::client::MeshResponse;
use mesh_tower::errors::ConnectFailed;
use tokio::net::{TcpListener, TcpStream};
use tower_service::Service;

use super::detect::{Prefixed, Protocol, detect};
use super::inbound::OpaqueGuard;
use super::io::{BoxIo, ConnMetrics, Counted};
use super::{Mode, Proxy};

pub(crate) async fn serve(
    proxy: Arc<Proxy>,
    listener: TcpListener,
    graceful: Arc<GracefulShutdown>,
) {
    let p = Arc::clone(&proxy);
    super::accept_loop(proxy, listener, super::Listener::Outbound, move |tcp, _| {
        handle(Arc::clone(&p), tcp, graceful.watcher())
    })
    .await;
}

async fn handle(
    proxy: Arc<Proxy>,
    tcp: TcpStream,
    watcher: hyper_util::server::graceful::Watcher,
) -> Result<(), BoxError> {
    let args = &proxy.args;
    let dst = match args.mode {
        Mode::Transparent => Some(super::orig_dst::original_dst(&tcp)?),
        Mode::Explicit => args.outbound_dst,
    };
    if dst.is_some_and(|d| d.port() == args.outbound_addr.port() && d.ip().is_loopback()) {
        return Err(
            "refusing a connection addressed to the outbound port itself (a redirect loop)".into(),
        );
    }
    let io: BoxIo = Box::new(tcp);
    let io = Counted::new(io, ConnMetrics::open(&proxy.registry, "outbound", false));
    let (proto, io) = if dst.is_some_and(|d| proxy.is_opaque(d.port())) {
        (Protocol::Opaque, Prefixed::new(io))
    } else {
        detect(io, args.detect_timeout).await?
    };
    if proto == Protocol::Opaque {
        let dst =
            dst.ok_or("an opaque connection needs a destination: --outbound-dst in explicit mode")?;
        return opaque(&proxy, io, dst).await;
    }
    let svc = OutboundHttp {
        proxy: Arc::clone(&proxy),
        dst,
    };
    let builder = super::http_server(args);
    let conn = builder.serve_connection(TokioIo::new(io), TowerToHyperService::new(svc));
    watcher
        .watch(conn.into_owned())
        .await
        .map_err(|e| -> BoxError { e })?;
    Ok(())
}

/// Opaque TCP to `dst`, over mesh mTLS when `dst` is a meshed workload.
async fn opaque(
    proxy: &Proxy,
    mut io: Prefixed<Counted<BoxIo>>,
    dst: SocketAddr,
) -> Result<(), BoxError> {
    let _guard = OpaqueGuard::new(proxy);
    let fail = |e: BoxError| -> BoxError {
        Box::new(ConnectFailed {
            addr: dst,
            source: e,
        })
    };
    let tcp = TcpStream::connect(dst).await.map_err(|e| fail(e.into()))?;
    let _ = tcp.set_nodelay(true);
    match (
        proxy.config.resolver.identity_of(dst.ip()),
        &proxy.tls_client,
    ) {
        (Some(id), Some(cfg)) => {
            let name = mesh_identity::tls::server_name(&id).map_err(|e| fail(e.into()))?;
            let mut tls = tokio_rustls::TlsConnector::from(Arc::clone(cfg))
                .connect(name, tcp)
                .await
                .map_err(|e| fail(e.into()))?;
            tokio::io::copy_bidirectional(&mut io, &mut tls).await?;
        }
        _ => {
            let mut tcp = tcp;
            tokio::io::copy_bidirectional(&mut io, &mut tcp).await?;
        }
    }
    Ok(())
}

/// Hands each HTTP request to the outbound stack, addressed by its Host (or the original
/// destination).
#[derive(Clone)]
struct OutboundHttp {
    proxy: Arc<Proxy>,
    dst: Option<SocketAddr>,
}

impl Service<Request<Incoming>> for OutboundHttp {
    type Response = MeshResponse;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<MeshResponse, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<Incoming>) -> Self::Future {
        let proxy = Arc::clone(&self.proxy);
        let dst = self.dst;
        Box::pin(async move {
            if req.uri().authority().is_none() {
                let host = req
                    .headers()
                    .get(http::header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .map(str::to_owned)
                    .or_else(|| dst.map(|d| d.to_string()))
                    .ok_or("the request names no destination (no Host header)")?;
                let pq = req.uri().path_and_query().map_or("/", |p| p.as_str());
                let uri: Uri = format!("http://{host}{pq}").parse()?;
                *req.uri_mut() = uri;
            }
            Ok(proxy.client.request(req).await)
        })
    }
}

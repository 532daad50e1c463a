//! The outbound side: the application's connections, redirected to `127.0.0.1:4140`.
//! HTTP goes through the full outbound stack (route, timeout, retry, split, balance, failure
//! accrual, mTLS); anything else is proxied byte for byte — over mTLS where the destination is
//! a meshed workload.
//!
//! In transparent mode the original destination decides, as in Linkerd: a Service's
//! ClusterIP:port gets that Service's policy, a known pod's address goes to that pod (over
//! mTLS when it is meshed), and anything else is forwarded, unchanged, to where it was
//! addressed. The Host header never changes where a connection goes. Nothing reaches the
//! proxy's own listeners: HTTP gets a 502, opaque connections are closed.

use std::collections::HashSet;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Uri};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use mesh_core::Destination;
use mesh_core::split::BackendRef;
use mesh_tower::BoxError;
use mesh_tower::client::{MeshClient, MeshResponse};
use mesh_tower::discover::{Endpoint, Resolve};
use mesh_tower::errors::{ConnectFailed, NoEndpoints, ProxyLoop};
use mesh_tower::listeners::OwnListeners;
use mesh_tower::route::OrigDst;
use parking_lot::Mutex;
use tokio::net::TcpStream;
use tower_service::Service;

use super::inbound::OpaqueGuard;
use super::io::{BoxIo, ConnMetrics, Counted};
use super::{Mode, Proxy};
use mesh_tower::detect::{Prefixed, Protocol, detect};

/// How many destinations the plaintext notice remembers; past that it says so once and stops.
const PLAINTEXT_NOTED_MAX: usize = 1024;

/// What the outbound side keeps: the proxy's own addresses, and the destinations already
/// logged as going out in plaintext.
#[derive(Debug)]
pub(crate) struct Outbound {
    pub(crate) own: OwnListeners,
    plaintext_noted: Mutex<HashSet<SocketAddr>>,
}

impl Outbound {
    /// The listeners of this proxy, on this host's addresses.
    pub(crate) fn new(listeners: Vec<SocketAddr>) -> Self {
        Self {
            own: OwnListeners::new(listeners).with_local_ips(local_ips()),
            plaintext_noted: Mutex::new(HashSet::new()),
        }
    }

    /// Logs, once per destination and for a bounded number of them, that a meshed proxy sends
    /// to `dst` in plaintext because discovery gives it no identity. Returns whether it did.
    fn note_plaintext(&self, dst: SocketAddr, why: &'static str) -> bool {
        let mut noted = self.plaintext_noted.lock();
        if noted.len() > PLAINTEXT_NOTED_MAX || !noted.insert(dst) {
            return false;
        }
        if noted.len() > PLAINTEXT_NOTED_MAX {
            tracing::info!(
                max = PLAINTEXT_NOTED_MAX,
                "more destinations without an identity; no longer logging each"
            );
            return false;
        }
        tracing::info!(
            %dst,
            why,
            no_tls_reason = "not_provided_by_service_discovery",
            "sending in plaintext: service discovery gives this destination no identity"
        );
        true
    }
}

/// The host's interface addresses: a wildcard listener answers on each of them.
fn local_ips() -> Vec<IpAddr> {
    match nix::ifaddrs::getifaddrs() {
        Ok(addrs) => addrs
            .filter_map(|a| a.address)
            .filter_map(|a| {
                a.as_sockaddr_in()
                    .map(|v4| IpAddr::V4(v4.ip()))
                    .or_else(|| a.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip())))
            })
            .collect(),
        Err(e) => {
            // Loopback and wildcard destinations are still refused without this list.
            tracing::warn!(error = %e, "cannot list the host's addresses");
            Vec::new()
        }
    }
}

pub(crate) async fn serve(
    proxy: Arc<Proxy>,
    source: super::workers::Source,
    graceful: Arc<GracefulShutdown>,
) {
    // This worker's own client: its connections are driven on this thread. Shared by
    // reference, since cloning a client allocates.
    let client = Arc::new(proxy.client.clone().build::<Incoming>());
    let p = Arc::clone(&proxy);
    super::accept_loop(proxy, source, super::Listener::Outbound, move |tcp, _| {
        handle(Arc::clone(&p), Arc::clone(&client), tcp, graceful.watcher())
    })
    .await;
}

async fn handle(
    proxy: Arc<Proxy>,
    client: Arc<MeshClient<Incoming>>,
    tcp: TcpStream,
    watcher: hyper_util::server::graceful::Watcher,
) -> Result<(), BoxError> {
    let args = &proxy.args;
    let (dst, orig) = match args.mode {
        Mode::Transparent => {
            let d = super::orig_dst::original_dst(&tcp)?;
            (Some(d), Some(OrigDst(d)))
        }
        Mode::Explicit => (args.outbound_dst, None),
    };
    if let Some(OrigDst(d)) = orig {
        if let Some(c) = &proxy.controller
            && !proxy.outbound.own.contains(d)
        {
            // An address not asked about yet waits (a bounded time) for the controller to
            // say what it is, so that the first connection is routed as a later one would be;
            // unanswered, it is forwarded as an unknown address.
            c.ensure_addr(d).await;
        }
        note_discovery(&proxy, d);
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
    let svc = OutboundHttp { client, dst, orig };
    let builder = super::http_server(args);
    let conn = builder.serve_connection(TokioIo::new(io), TowerToHyperService::new(svc));
    watcher
        .watch(conn.into_owned())
        .await
        .map_err(|e| -> BoxError { e })?;
    Ok(())
}

/// Logs once why a meshed proxy will send to `dst` in plaintext, where discovery has no
/// identity for it.
fn note_discovery(proxy: &Proxy, dst: SocketAddr) {
    if proxy.tls_client.is_none() || proxy.outbound.own.contains(dst) {
        return;
    }
    let policy = proxy.config.policy.load();
    let why = match policy.lookup_addr(dst) {
        Destination::Unknown => "the address is no known Service or pod",
        Destination::Endpoint(p) if p.service_account.is_none() => {
            "the pod is known, but not as meshed (no service account)"
        }
        Destination::Endpoint(_) | Destination::Service { .. } => return,
    };
    proxy.outbound.note_plaintext(dst, why);
}

/// Where an opaque connection to `dst` goes: one endpoint of the Service whose ClusterIP it
/// is, else `dst` itself with the identity discovery gives it.
fn opaque_endpoint(proxy: &Proxy, dst: SocketAddr) -> Result<Endpoint, BoxError> {
    let policy = proxy.config.policy.load();
    if let Destination::Service { service, port } = policy.lookup_addr(dst) {
        let backend = BackendRef::new(service.name(), service.namespace(), Some(port));
        let none = || NoEndpoints {
            backend: backend.to_string(),
        };
        let rx = proxy.config.resolver.resolve(&backend).ok_or_else(none)?;
        let eps = rx.borrow();
        return Ok(fastrand::choice(eps.iter()).ok_or_else(none)?.clone());
    }
    Ok(Endpoint {
        addr: dst,
        identity: proxy.config.resolver.identity_of(dst.ip()),
    })
}

/// Opaque TCP to `dst`, over mesh mTLS when it is a meshed workload.
async fn opaque(
    proxy: &Proxy,
    mut io: Prefixed<Counted<BoxIo>>,
    dst: SocketAddr,
) -> Result<(), BoxError> {
    let _guard = OpaqueGuard::new(proxy);
    let ep = opaque_endpoint(proxy, dst)?;
    if proxy.outbound.own.contains(ep.addr) {
        return Err(ProxyLoop { addr: ep.addr }.into());
    }
    let fail = |e: BoxError| -> BoxError {
        Box::new(ConnectFailed {
            addr: ep.addr,
            source: e,
        })
    };
    let tcp = TcpStream::connect(ep.addr)
        .await
        .map_err(|e| fail(e.into()))?;
    let _ = tcp.set_nodelay(true);
    match (ep.identity, &proxy.tls_client) {
        (Some(id), Some(cfg)) => {
            let name = mesh_identity::tls::server_name(&id).map_err(|e| fail(e.into()))?;
            let mut tls = tokio_rustls::TlsConnector::from(Arc::clone(cfg))
                .connect(name, tcp)
                .await
                .map_err(|e| fail(e.into()))?;
            super::io::splice(&mut io, &mut tls, proxy.shutdown.subscribe()).await?;
        }
        _ => {
            let mut tcp = tcp;
            super::io::splice(&mut io, &mut tcp, proxy.shutdown.subscribe()).await?;
        }
    }
    Ok(())
}

/// Hands each HTTP request to the outbound stack: with the original destination, which
/// decides, in transparent mode; addressed by its Host in explicit mode.
#[derive(Clone)]
struct OutboundHttp {
    client: Arc<MeshClient<Incoming>>,
    dst: Option<SocketAddr>,
    orig: Option<OrigDst>,
}

impl Service<Request<Incoming>> for OutboundHttp {
    type Response = MeshResponse;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<MeshResponse, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<Incoming>) -> Self::Future {
        let client = Arc::clone(&self.client);
        let dst = self.dst;
        if let Some(orig) = self.orig {
            req.extensions_mut().insert(orig);
        }
        Box::pin(async move {
            // The authority names the request for metrics and for the peer; in transparent
            // mode it routes nothing.
            // A Host that makes no URI does not stop a request the original destination
            // can carry.
            if req.uri().authority().is_none() {
                let pq = req.uri().path_and_query().map_or("/", |p| p.as_str());
                let absolute = |host: &str| format!("http://{host}{pq}").parse::<Uri>().ok();
                let uri = req
                    .headers()
                    .get(http::header::HOST)
                    .and_then(|h| absolute(h.to_str().ok()?))
                    .or_else(|| absolute(&dst?.to_string()))
                    .ok_or("the request names no destination (no usable Host header)")?;
                *req.uri_mut() = uri;
            }
            Ok(client.request(req).await)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plaintext_is_noted_once_per_destination_for_a_bounded_set() {
        let out = Outbound::new(Vec::new());
        let addr = |i: usize| SocketAddr::from(([10, 213, (i / 256) as u8, (i % 256) as u8], 80));
        assert!(out.note_plaintext(addr(0), "test"));
        assert!(!out.note_plaintext(addr(0), "test"));
        let logged = (1..PLAINTEXT_NOTED_MAX * 2)
            .filter(|&i| out.note_plaintext(addr(i), "test"))
            .count();
        assert_eq!(logged, PLAINTEXT_NOTED_MAX - 1);
        assert_eq!(out.plaintext_noted.lock().len(), PLAINTEXT_NOTED_MAX + 1);
    }
}

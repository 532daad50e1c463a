//! The inbound side: mesh TLS accept (peer identity), protocol detection (unless the port's
//! Server declares its protocol), then authorization, rate limits, metrics and the admitting
//! route's filters in front of the application on `127.0.0.1:<original port>`, spoken to in the client's protocol (`app`).
//! What is not HTTP is authorized as a connection that could carry any request.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use http::Request;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use mesh_core::authz::{ConnectionDecision, ProxyProtocol, authorize_connection, server_protocol};
use mesh_core::{InboundTarget, Peer};
use mesh_identity::PeerIdentity;
use mesh_tower::BoxError;
use mesh_tower::accepted::Accepted;
use mesh_tower::authz::{AuthorizeLayer, Authorized, ClientInfo};
use mesh_tower::errors::{ConnectFailed, DenialDetail, RespondLayer};
use mesh_tower::filter::FilterLayer;
use mesh_tower::metrics::{Direction, MetricsLayer, Registry, TargetAddr, server_labels};
use mesh_tower::rate_limit::RateLimitLayer;
use mesh_tower::trace::TraceLayer;
use metrics::Label;
use tokio::net::TcpStream;
use tower::ServiceExt;

use super::app::{AppClients, AppForward};
use super::io::{BoxIo, ConnMetrics, Counted};
use super::{Mode, Proxy};
use mesh_tower::detect::{Prefixed, Protocol, detect, read_until};

/// How a connection's first bytes are read, by what its port is known to speak.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    /// Classify the first bytes (HTTP/1, HTTP/2, else opaque) within `--detect-timeout`.
    Detect,
    /// HTTP whatever the bytes: a Server says so. Slow bytes wait for the header timeout.
    Http,
    /// Bytes, without detection: an opaque port (server-speaks-first protocols).
    Opaque,
}

pub(crate) async fn serve(
    proxy: Arc<Proxy>,
    source: super::workers::Source,
    graceful: Arc<GracefulShutdown>,
) {
    let layers = Layers {
        metrics: MetricsLayer::with_control_namespace(
            proxy.registry.clone(),
            Direction::Inbound,
            &proxy.args.identity.control_namespace,
        )
        .with_tap(proxy.tap.clone()),
        authz: AuthorizeLayer::new(proxy.config.policy.clone())
            .with_metrics(proxy.registry.clone()),
        rate: RateLimitLayer::new(),
        filter: FilterLayer::inbound(proxy.registry.clone()),
        app: AppClients::new(
            &proxy.registry,
            proxy.args.limits.app_pool(proxy.args.workers),
        ),
    };
    let p = Arc::clone(&proxy);
    super::accept_loop(proxy, source, super::Listener::Inbound, move |tcp, peer| {
        handle(
            Arc::clone(&p),
            layers.clone(),
            tcp,
            peer,
            graceful.watcher(),
        )
    })
    .await;
}

#[derive(Clone)]
struct Layers {
    metrics: MetricsLayer,
    authz: AuthorizeLayer,
    rate: RateLimitLayer,
    filter: FilterLayer<Authorized>,
    app: AppClients,
}

// === impl Expect ===

impl Expect {
    /// A Server's `proxyProtocol` decides; without one, the opaque ports skip detection.
    fn for_port(declared: ProxyProtocol, opaque_port: bool) -> Self {
        match declared {
            p if p.is_http() => Self::Http,
            ProxyProtocol::Opaque | ProxyProtocol::Tls => Self::Opaque,
            _ if opaque_port => Self::Opaque,
            _ => Self::Detect,
        }
    }
}

/// The most a ClientHello is read for its ALPN: one whole TLS record.
const MAX_CLIENT_HELLO: usize = 5 + 16 * 1024;

/// Whether the client opens with a TLS ClientHello that offers the mesh ALPN, read within
/// `timeout`. The bytes read are replayed by the returned stream for whoever reads next.
async fn offers_mesh_tls(
    tcp: TcpStream,
    timeout: Duration,
) -> Result<(bool, Prefixed<TcpStream>), BoxError> {
    let (offered, io) = read_until(tcp, timeout, MAX_CLIENT_HELLO, mesh_client_hello).await?;
    Ok((offered == Some(true), io))
}

/// Decides from the first bytes whether they are a ClientHello offering the mesh ALPN:
/// `None` while more bytes could still tell.
fn mesh_client_hello(buf: &[u8]) -> Option<bool> {
    let first = *buf.first()?;
    if first != 0x16 {
        return Some(false);
    }
    let alpn = mesh_identity::MESH_ALPN;
    let offered = buf
        .windows(alpn.len() + 1)
        .any(|w| usize::from(w[0]) == alpn.len() && &w[1..] == alpn);
    if offered {
        return Some(true);
    }
    // The ClientHello record is complete and names no mesh ALPN: the app's own TLS.
    let header = buf.get(..5)?;
    let record = 5 + usize::from(u16::from_be_bytes([header[3], header[4]]));
    (buf.len() >= record).then_some(false)
}

/// Where the application is: the original destination's port on loopback, or
/// `--inbound-forward` in explicit mode.
fn app_addr(args: &super::ProxyArgs, tcp: &TcpStream) -> Result<SocketAddr, BoxError> {
    Ok(match args.mode {
        Mode::Transparent => {
            let dst = super::orig_dst::original_dst(tcp)?;
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
    })
}

/// Completes mesh mTLS when the client offers it (waiting at most `tls_wait` for its
/// ClientHello), with the peer's verified identity; else the plain stream.
async fn accept_tls(
    proxy: &Proxy,
    tcp: TcpStream,
    tls_wait: Duration,
) -> Result<(BoxIo, Option<mesh_core::Identity>), BoxError> {
    let Some(cfg) = &proxy.tls_server else {
        return Ok((Box::new(tcp), None));
    };
    let (offered, io) = offers_mesh_tls(tcp, tls_wait).await?;
    if !offered {
        return Ok((Box::new(io), None));
    }
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::clone(cfg));
    let timeout = proxy.args.detect_timeout * 10;
    let tls = tokio::time::timeout(timeout, acceptor.accept(io)).await??;
    let id = tls.get_ref().1.peer_identity();
    Ok((Box::new(tls), id))
}

async fn handle(
    proxy: Arc<Proxy>,
    layers: Layers,
    tcp: TcpStream,
    peer: SocketAddr,
    watcher: hyper_util::server::graceful::Watcher,
) -> Result<(), BoxError> {
    let args = &proxy.args;
    let app = app_addr(args, &tcp)?;
    let port = app.port();
    let target_addr = TargetAddr(target_addr(&tcp, port));
    let target = Arc::new(proxy.target(port));
    let declared = server_protocol(proxy.config.policy.load().servers(), &target);
    let expect = Expect::for_port(declared, proxy.is_opaque(port));
    // Server-speaks-first ports must not wait long for a ClientHello that will not come.
    let tls_wait = if expect == Expect::Opaque {
        args.detect_timeout.min(Duration::from_millis(100))
    } else {
        args.detect_timeout
    };
    let (io, identity) = accept_tls(&proxy, tcp, tls_wait).await?;
    let io = Counted::new(
        io,
        ConnMetrics::accepted(
            &proxy.registry,
            identity.as_ref(),
            &args.identity.control_namespace,
        ),
    );
    let client = ClientInfo {
        identity,
        addr: peer,
    };
    let (proto, io) = match expect {
        Expect::Opaque => (Protocol::Opaque, Prefixed::new(io)),
        Expect::Detect => detect(io, args.detect_timeout).await?,
        Expect::Http => match detect(io, args.header_read_timeout).await? {
            // Not HTTP/1 or HTTP/2 (or too slow to say): hyper's HTTP/1 parser answers it.
            (Protocol::Opaque, io) => (Protocol::Http1, io),
            decided => decided,
        },
    };
    if proto == Protocol::Opaque {
        return opaque(&proxy, io, app, &target, &client).await;
    }

    // What each request of this connection carries: one extension, cloned (reference counts).
    let accepted = Accepted {
        client: Some(client),
        target: Some(target),
        target_addr: Some(target_addr),
        authorized: None,
    };
    let forward = AppForward::new(app, layers.app);
    let denial = if args.debug_authz_responses {
        DenialDetail::Shown
    } else {
        DenialDetail::Hidden
    };
    let stack = tower::ServiceBuilder::new()
        .layer(RespondLayer::new().with_denial_detail(denial))
        // Metrics after authorization: series carry the Server and route that admitted a
        // request (denials are counted by authz), never the client's Host.
        .layer(layers.authz)
        .layer(layers.metrics)
        .layer(layers.rate)
        // The admitting route's filters: a redirect is answered here (and counted above as
        // the route's response); header changes reach the application and the client.
        .layer(layers.filter)
        .layer(TraceLayer::new())
        .service(forward)
        .map_request(move |mut req: Request<Incoming>| {
            req.extensions_mut().insert(accepted.clone());
            req
        });
    // Served in the protocol detected, so that slow or odd bytes meet HTTP/1's header timeout
    // and parser rather than waiting on HTTP/2 preface detection.
    let builder = match proto {
        Protocol::Http2 => super::http_server(args).http2_only(),
        _ => super::http_server(args).http1_only(),
    };
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

/// Opaque TCP: authorized as a connection that could carry any request (so never more
/// loosely than its requests would be), then copied byte for byte to the application.
async fn opaque(
    proxy: &Proxy,
    mut io: Prefixed<Counted<BoxIo>>,
    app: SocketAddr,
    target: &InboundTarget,
    client: &ClientInfo,
) -> Result<(), BoxError> {
    let peer = Peer {
        identity: client.identity.clone(),
        ip: Some(client.addr.ip()),
    };
    let allowed = {
        let policy = proxy.config.policy.load();
        let d = authorize_connection(policy.servers(), &policy.config().inbound, target, &peer);
        count_tcp_authz(&proxy.registry, target, &d);
        if !d.allowed() {
            tracing::info!(by = %d.authz.by, scope = ?d.scope, reason = %d.authz.reason, "TCP connection refused");
        }
        d.allowed()
    };
    if !allowed {
        return Ok(());
    }
    let _guard = OpaqueGuard::new(proxy);
    let mut upstream = TcpStream::connect(app).await.map_err(|e| ConnectFailed {
        addr: app,
        source: e.into(),
    })?;
    let _ = upstream.set_nodelay(true);
    super::io::splice(&mut io, &mut upstream, proxy.shutdown.subscribe()).await?;
    Ok(())
}

/// Counts a connection decision as Linkerd does: `inbound_tcp_authz_allow_total` or
/// `inbound_tcp_authz_deny_total`, by port and Server (labels that come from policy only).
fn count_tcp_authz(registry: &Registry, target: &InboundTarget, d: &ConnectionDecision<'_>) {
    let a = &d.authz;
    let (srv_kind, srv_name) = server_labels(a.server.as_deref(), &a.by);
    let mut labels = vec![
        Label::new("target_port", target.port.to_string()),
        Label::new("srv_kind", srv_kind),
        Label::new("srv_name", srv_name.to_owned()),
    ];
    let name = if a.allowed {
        // What decided, whole (`AuthorizationPolicy/ns/name`, `default:…`), as the TCP
        // series have always read.
        labels.push(Label::new("authz_name", a.by.to_string()));
        "inbound_tcp_authz_allow_total"
    } else {
        "inbound_tcp_authz_deny_total"
    };
    registry.counter(name, labels).increment(1);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_hello_is_judged_by_its_alpn_once_it_can_be() {
        let alpn = mesh_identity::MESH_ALPN;
        let mut mesh = vec![0x16, 3, 1, 0, 200, 1, 0];
        mesh.push(u8::try_from(alpn.len()).unwrap());
        mesh.extend_from_slice(alpn);
        let cases: &[(&[u8], Option<bool>)] = &[
            (b"", None),
            (&[0x16], None),
            (&[0x16, 3, 1], None),
            (b"GET / HTTP/1.1", Some(false)),
            // A complete 4-byte record without the mesh ALPN: the application's own TLS.
            (&[0x16, 3, 1, 0, 4, 1, 0, 0, 0], Some(false)),
            (&mesh, Some(true)),
        ];
        for (input, want) in cases {
            assert_eq!(mesh_client_hello(input), *want, "{input:?}");
        }
    }
}

//! Route classification: finds the route of each outbound request in the live policy and
//! attaches it, with the route's weighted backends, as a [`RouteTarget`] in the request's
//! [`Dispatch`](crate::dispatch::Dispatch) extension.
//!
//! What decides where a request goes:
//! - an [`OrigDst`] extension (a transparent proxy's `SO_ORIGINAL_DST`): a Service's
//!   ClusterIP and port get that Service's policy, a known pod's address goes to that pod,
//!   anything else goes where it was addressed, unchanged. The Host header chooses nothing;
//!   only Linkerd's [`DST_OVERRIDE`] header may name a known Service instead;
//! - otherwise the URI's authority or the Host, named as Kubernetes DNS resolves names from
//!   the caller's namespace ([`RouteLayer::with_names`]; `default` unless set).
//!
//! ```
//! use mesh_tower::{policy::PolicyHandle, route::{RouteLayer, RouteTarget}};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let policy = PolicyHandle::from_yaml(r#"
//! apiVersion: gateway.networking.k8s.io/v1
//! kind: HTTPRoute
//! metadata: { name: api, namespace: shop }
//! spec:
//!   parentRefs: [{ name: web, kind: Service }]
//!   rules: [{ matches: [{ path: { value: /api } }] }]
//! "#)?;
//! let svc = ServiceBuilder::new().layer(RouteLayer::new(policy)).service(service_fn(
//!     |req: http::Request<()>| async move {
//!         let t = RouteTarget::of(req.extensions()).expect("routed");
//!         Ok::<_, std::convert::Infallible>(t.route_name().to_owned())
//!     },
//! ));
//! let name = svc.oneshot(http::Request::get("http://web.shop/api/x").body(())?).await?;
//! assert_eq!(name, "api");
//! # Ok(()) }
//! ```

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use futures_util::future::Either;
use http::Request;
use mesh_core::RequestFacts;
use mesh_core::destination::{Destination, NameContext, PodEndpoint};
use mesh_core::policy::{MeshPolicy, OutboundDecision, Route as PolicyRoute};
use mesh_core::split::Backends;
use parking_lot::RwLock;
use tower_layer::Layer;
use tower_service::Service;

use crate::BoxError;
use crate::errors::NoRoute;
use crate::policy::PolicyHandle;

/// Linkerd's header by which an ingress-like caller names the Service (`web.shop.svc.cluster.local:80`)
/// a transparently proxied request is for.
pub const DST_OVERRIDE: &str = "l5d-dst-override";

/// The address a connection was sent to before a transparent proxy took it over. On a request,
/// it, not the Host, decides where the request goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct OrigDst(pub SocketAddr);

/// The route decision carried with a request.
#[derive(Clone, Debug)]
pub struct RouteTarget {
    /// `host:port` the request was addressed to.
    pub authority: Arc<str>,
    /// The port.
    pub port: u16,
    /// The matched route (the Service's default route where no route resource matched, `None`
    /// for a destination the policy does not know).
    pub route: Option<Arc<PolicyRoute>>,
    /// The weighted backends to choose from.
    pub backends: Arc<Backends>,
    /// The pod, when the request goes to a known pod by its address.
    pub pod: Option<Arc<PodEndpoint>>,
}

/// Request facts read straight from an `http::Request`, without copying.
#[derive(Debug)]
pub struct HttpFacts<'a, B>(pub &'a Request<B>);

/// See the [module docs](self).
#[derive(Clone, Debug)]
pub struct RouteLayer {
    policy: PolicyHandle,
    authorities: Arc<Authorities>,
    names: Arc<NameContext>,
}

/// See the [module docs](self).
#[derive(Clone, Debug)]
pub struct Route<S> {
    inner: S,
    policy: PolicyHandle,
    authorities: Arc<Authorities>,
    names: Arc<NameContext>,
}

/// Shared `host:port` strings, so that naming a request's authority allocates nothing once
/// it has been seen. Authorities come from the network, so at most `limit` are kept; past
/// that, each is made afresh for its request.
#[derive(Debug)]
pub(crate) struct Authorities {
    map: RwLock<foldhash::HashMap<u16, HostNames>>,
    len: AtomicUsize,
    limit: usize,
}

/// `host:port` by host, for one port.
type HostNames = foldhash::HashMap<Box<str>, Arc<str>>;

// === impl RouteTarget ===

impl RouteTarget {
    /// The route's name for metrics (`rt_route`): the route resource's name, `default`.
    pub fn route_name(&self) -> &str {
        self.route.as_deref().map_or("default", |r| r.name())
    }
}

// === impl HttpFacts ===

impl<B> RequestFacts for HttpFacts<'_, B> {
    fn method(&self) -> &str {
        self.0.method().as_str()
    }

    fn path(&self) -> &str {
        self.0.uri().path()
    }

    fn query(&self) -> Option<&str> {
        self.0.uri().query()
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.0.headers().get(name).and_then(|v| v.to_str().ok())
    }
}

/// The `host` and `port` a request is addressed to: its URI's authority, else its `Host`.
pub fn destination<B>(req: &Request<B>) -> Option<(&str, u16)> {
    let default_port = if req.uri().scheme() == Some(&http::uri::Scheme::HTTPS) {
        443
    } else {
        80
    };
    if let Some(a) = req.uri().authority() {
        return Some((a.host(), a.port_u16().unwrap_or(default_port)));
    }
    let host = req.headers().get(http::header::HOST)?.to_str().ok()?;
    let a: http::uri::Authority = host.parse().ok()?;
    // Borrow the host from the header itself, not the parsed copy.
    let h = host.get(..a.host().len())?;
    Some((h, a.port_u16().unwrap_or(default_port)))
}

// === impl Authorities ===

impl Authorities {
    /// A table that keeps at most `limit` authorities.
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            map: RwLock::default(),
            len: AtomicUsize::new(0),
            limit,
        }
    }

    /// `host:port`.
    pub(crate) fn get(&self, host: &str, port: u16) -> Arc<str> {
        if let Some(a) = self.map.read().get(&port).and_then(|m| m.get(host)) {
            return Arc::clone(a);
        }
        let authority: Arc<str> = format!("{host}:{port}").into();
        // Two levels (port, then host) let a lookup borrow the host, so the bound is kept
        // here rather than in a `BoundedMap`.
        if self.len.load(Ordering::Relaxed) >= self.limit {
            return authority;
        }
        let mut map = self.map.write();
        if let Some(a) = map.get(&port).and_then(|m| m.get(host)) {
            return Arc::clone(a);
        }
        // Again under the lock, which every insert holds: the check above may be stale.
        if self.len.load(Ordering::Relaxed) >= self.limit {
            return authority;
        }
        self.len.fetch_add(1, Ordering::Relaxed);
        map.entry(port)
            .or_default()
            .insert(host.into(), Arc::clone(&authority));
        authority
    }
}

impl Default for Authorities {
    fn default() -> Self {
        Self::new(crate::metrics::DEFAULT_SERIES_LIMIT)
    }
}

// === impl RouteLayer ===

impl RouteLayer {
    /// Routes by the policy behind `policy`.
    pub fn new(policy: PolicyHandle) -> Self {
        Self {
            policy,
            authorities: Arc::default(),
            names: Arc::default(),
        }
    }

    /// Resolves names (`web`, `web.shop`, …) from this namespace and cluster domain.
    #[must_use]
    pub fn with_names(mut self, names: NameContext) -> Self {
        self.names = Arc::new(names);
        self
    }
}

impl<S> Layer<S> for RouteLayer {
    type Service = Route<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Route {
            inner,
            policy: self.policy.clone(),
            authorities: Arc::clone(&self.authorities),
            names: Arc::clone(&self.names),
        }
    }
}

// === impl Route ===

impl<S> Route<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, policy: PolicyHandle) -> Self {
        Self {
            inner,
            policy,
            authorities: Arc::default(),
            names: Arc::default(),
        }
    }

    /// The layer.
    pub fn layer(policy: PolicyHandle) -> RouteLayer {
        RouteLayer::new(policy)
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

type Ready<T> = std::future::Ready<Result<T, BoxError>>;

impl<S, B> Service<Request<B>> for Route<S>
where
    S: Service<Request<B>>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = Either<MapErr<S::Future>, Ready<S::Response>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let snapshot = self.policy.load();
        let target = match req.extensions().get::<OrigDst>() {
            Some(&OrigDst(addr)) => Ok(self.by_addr(&snapshot, addr, &req)),
            None => self.by_name(&snapshot, &req),
        };
        match target.and_then(|t| t.check()) {
            Ok(t) => {
                crate::dispatch::Dispatch::get_mut(req.extensions_mut()).target = Some(t.target);
                Either::Left(map_err(self.inner.call(req)))
            }
            Err(e) => Either::Right(std::future::ready(Err(e))),
        }
    }
}

/// A decision on its way to becoming a [`RouteTarget`].
struct Decided<'a> {
    decision: OutboundDecision<'a>,
    target: RouteTarget,
}

impl Decided<'_> {
    /// Routes are attached to the Service and none matches: refused, as Gateway API says.
    fn check(self) -> Result<Self, BoxError> {
        if self.decision.is_no_route() {
            let authority = self.target.authority.to_string();
            return Err(NoRoute { authority }.into());
        }
        Ok(self)
    }
}

impl<S> Route<S> {
    fn decided<'a>(
        &self,
        authority: Arc<str>,
        port: u16,
        decision: OutboundDecision<'a>,
        pod: Option<Arc<PodEndpoint>>,
    ) -> Decided<'a> {
        let target = RouteTarget {
            authority,
            port,
            route: decision.route_arc(),
            backends: decision.backends_arc(),
            pod,
        };
        Decided { decision, target }
    }

    /// Explicit mode and in-process: the authority (or Host) names the destination.
    fn by_name<'a, B>(
        &self,
        snapshot: &'a MeshPolicy,
        req: &Request<B>,
    ) -> Result<Decided<'a>, BoxError> {
        let (host, port) =
            destination(req).ok_or("the request names no destination (no authority, no Host)")?;
        let d = snapshot.route_from(&self.names, host, port, &HttpFacts(req));
        Ok(self.decided(self.authorities.get(host, port), port, d, None))
    }

    /// Transparent mode: the original destination decides, or an `l5d-dst-override` naming a
    /// known Service. The Host only labels metrics.
    fn by_addr<'a, B>(
        &self,
        snapshot: &'a MeshPolicy,
        addr: SocketAddr,
        req: &Request<B>,
    ) -> Decided<'a> {
        let facts = HttpFacts(req);
        if let Some((host, port)) = dst_override(req)
            && let Some(svc) = snapshot.lookup_name(&self.names, host)
        {
            let d = svc.decide_from(self.names.namespace(), port, &facts);
            return self.decided(self.authorities.get(host, port), port, d, None);
        }
        let authority = match destination(req) {
            Some((host, port)) => self.authorities.get(host, port),
            None => self.authorities.get(&addr.ip().to_string(), addr.port()),
        };
        let port = addr.port();
        match snapshot.lookup_addr(addr) {
            Destination::Service { service, port } => {
                let d = service.decide_from(self.names.namespace(), port, &facts);
                self.decided(authority, port, d, None)
            }
            Destination::Endpoint(p) => {
                let d = OutboundDecision::forward(addr);
                self.decided(authority, port, d, Some(Arc::clone(p)))
            }
            Destination::Unknown => {
                self.decided(authority, port, OutboundDecision::forward(addr), None)
            }
        }
    }
}

/// The `host` and `port` of an `l5d-dst-override` header (the port defaults to 80).
fn dst_override<B>(req: &Request<B>) -> Option<(&str, u16)> {
    let v = req.headers().get(DST_OVERRIDE)?.to_str().ok()?;
    let a: http::uri::Authority = v.parse().ok()?;
    Some((v.get(..a.host().len())?, a.port_u16().unwrap_or(80)))
}

pin_project_lite::pin_project! {
    /// Maps an inner error into a [`BoxError`].
    pub struct MapErr<F> {
        #[pin]
        f: F,
    }
}

/// Wraps a future so its error becomes a [`BoxError`].
pub(crate) fn map_err<F>(f: F) -> MapErr<F> {
    MapErr { f }
}

impl<F, T, E> Future for MapErr<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().f.poll(cx).map_err(Into::into)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn authorities_stop_being_kept_at_the_limit() {
        let a = Authorities::new(3);
        for i in 0..100 {
            assert_eq!(&*a.get(&format!("h{i}"), 80), format!("h{i}:80"));
        }
        let kept: usize = a.map.read().values().map(HashMap::len).sum();
        assert_eq!(kept, 3);
        // A kept authority is shared, not made again.
        assert!(Arc::ptr_eq(&a.get("h0", 80), &a.get("h0", 80)));
    }
}

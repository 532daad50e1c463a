//! Refuses to connect to the proxy's own listeners. A request addressed to the outbound
//! port (`Host: 127.0.0.1:4140` in explicit mode, an original destination that is the proxy
//! itself) would otherwise come back in, be forwarded again, and repeat until the process
//! runs out of file descriptors.
//!
//! The check reads the [`Endpoint`] the balancer chose, or else the [`Backend`] the split
//! chose when that is an address: stacked above the balancer, it refuses before failure
//! accrual counts anything (a refusal is no sign the destination is sick); stacked above the
//! connector, no discovery answer can lead around it.
//!
//! ```
//! use mesh_tower::listeners::OwnListeners;
//!
//! let own = OwnListeners::new(vec!["127.0.0.1:4140".parse()?, "0.0.0.0:4143".parse()?])
//!     .with_local_ips(vec!["10.1.0.7".parse()?]);
//! assert!(own.contains("127.0.0.1:4140".parse()?));
//! assert!(own.contains("10.1.0.7:4143".parse()?)); // 0.0.0.0: every local address
//! assert!(!own.contains("10.1.0.8:4143".parse()?)); // another pod
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::Either;
use http::Request;
use tower_layer::Layer;
use tower_service::Service;

use crate::BoxError;
use crate::discover::Endpoint;
use crate::errors::ProxyLoop;
use crate::route::MapErr;
use crate::split::Backend;

/// The addresses the proxy listens on, and the host's own addresses that a wildcard listener
/// (`0.0.0.0`, `::`) answers on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OwnListeners {
    listeners: Vec<SocketAddr>,
    local_ips: Vec<IpAddr>,
}

/// See the [module docs](self).
#[derive(Clone, Debug)]
pub struct RefuseOwnLayer {
    own: Arc<OwnListeners>,
}

/// See the [module docs](self).
#[derive(Clone, Debug)]
pub struct RefuseOwn<S> {
    inner: S,
    own: Arc<OwnListeners>,
}

// === impl OwnListeners ===

impl OwnListeners {
    /// The proxy's listening addresses.
    pub fn new(listeners: Vec<SocketAddr>) -> Self {
        Self {
            listeners,
            local_ips: Vec::new(),
        }
    }

    /// The host's (pod's) own interface addresses.
    #[must_use]
    pub fn with_local_ips(mut self, ips: Vec<IpAddr>) -> Self {
        self.local_ips = ips;
        self
    }

    /// Whether a connection to `addr` would reach one of the listeners.
    pub fn contains(&self, addr: SocketAddr) -> bool {
        let local =
            |ip: IpAddr| ip.is_loopback() || ip.is_unspecified() || self.local_ips.contains(&ip);
        self.listeners.iter().any(|l| {
            l.port() == addr.port()
                && (l.ip() == addr.ip()
                    // A wildcard listener answers on every local address.
                    || l.ip().is_unspecified() && local(addr.ip())
                    // Every 127/8 address (and ::1) reaches a loopback listener on Linux.
                    || l.ip().is_loopback() && addr.ip().is_loopback()
                    // 0.0.0.0 as a destination means this host.
                    || addr.ip().is_unspecified() && local(l.ip()))
        })
    }
}

// === impl RefuseOwnLayer ===

impl RefuseOwnLayer {
    /// Refuses endpoints in `own`.
    pub fn new(own: OwnListeners) -> Self {
        Self { own: Arc::new(own) }
    }
}

impl<S> Layer<S> for RefuseOwnLayer {
    type Service = RefuseOwn<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RefuseOwn {
            inner,
            own: Arc::clone(&self.own),
        }
    }
}

// === impl RefuseOwn ===

impl<S> RefuseOwn<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, own: OwnListeners) -> Self {
        Self {
            inner,
            own: Arc::new(own),
        }
    }

    /// The layer.
    pub fn layer(own: OwnListeners) -> RefuseOwnLayer {
        RefuseOwnLayer::new(own)
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

impl<S, B> Service<Request<B>> for RefuseOwn<S>
where
    S: Service<Request<B>>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = Either<MapErr<S::Future>, std::future::Ready<Result<S::Response, BoxError>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let ext = req.extensions();
        let addr = Endpoint::of(ext).map(|e| e.addr).or_else(|| {
            let b = &Backend::of(ext)?.0;
            Some(SocketAddr::new(b.ip()?, b.port()?))
        });
        if let Some(addr) = addr.filter(|a| self.own.contains(*a)) {
            let e = ProxyLoop { addr };
            return Either::Right(std::future::ready(Err(e.into())));
        }
        Either::Left(crate::route::map_err(self.inner.call(req)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dispatch::Dispatch;
    use mesh_core::split::BackendRef;
    use tower::ServiceExt;

    fn own() -> OwnListeners {
        OwnListeners::new(vec![
            "127.0.0.1:4140".parse().unwrap(),
            "0.0.0.0:4143".parse().unwrap(),
            "[::]:4191".parse().unwrap(),
        ])
        .with_local_ips(vec!["10.1.0.7".parse().unwrap()])
    }

    #[test]
    fn own_addresses() {
        let own = own();
        let cases = [
            ("127.0.0.1:4140", true),
            ("127.0.0.2:4140", true),
            ("0.0.0.0:4140", true),
            ("10.1.0.7:4140", false), // outbound binds loopback only
            ("10.1.0.7:4143", true),
            ("127.0.0.1:4143", true),
            ("10.1.0.8:4143", false),
            ("[::1]:4191", true),
            ("10.1.0.7:4191", true),
            ("10.1.0.7:8080", false),
        ];
        for (addr, want) in cases {
            assert_eq!(own.contains(addr.parse().unwrap()), want, "{addr}");
        }
    }

    #[tokio::test]
    async fn refuses_an_endpoint_that_is_the_proxy() {
        let svc = RefuseOwn::new(
            tower::service_fn(|_: Request<()>| async { Ok::<_, BoxError>("connected") }),
            own(),
        );
        let mut req = Request::new(());
        Dispatch::get_mut(req.extensions_mut()).endpoint =
            Some(Endpoint::new("127.0.0.1:4140".parse().unwrap()));
        let err = svc.clone().oneshot(req).await.unwrap_err();
        assert!(crate::is_caused_by::<ProxyLoop>(&*err), "{err}");

        // Above the balancer: the split's choice, when it is an address.
        let mut req = Request::new(());
        Dispatch::get_mut(req.extensions_mut()).backend =
            Some(Backend(BackendRef::new("10.1.0.7", "", Some(4143))));
        let err = svc.clone().oneshot(req).await.unwrap_err();
        assert!(crate::is_caused_by::<ProxyLoop>(&*err), "{err}");

        let mut req = Request::new(());
        Dispatch::get_mut(req.extensions_mut()).endpoint =
            Some(Endpoint::new("10.1.0.8:8080".parse().unwrap()));
        assert_eq!(svc.oneshot(req).await.unwrap(), "connected");
    }
}

//! Weighted traffic split: picks one backend per request from the route's live weights and
//! attaches it as the [`Backend`] of the request's [`Dispatch`](crate::dispatch::Dispatch)
//! extension. A weight change in the policy applies to the next
//! request: the weights come with each request's [`RouteTarget`].

use std::task::{Context, Poll};

use futures_util::future::Either;
use http::Request;
use mesh_core::split::BackendRef;
use tower_layer::Layer;
use tower_service::Service;

use crate::BoxError;
use crate::errors::NoBackends;
use crate::route::{MapErr, RouteTarget};

/// The backend chosen for a request: a Service and a port.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Backend(pub BackendRef);

/// See the [module docs](self).
#[derive(Clone, Copy, Debug, Default)]
pub struct SplitLayer(());

/// See the [module docs](self).
#[derive(Clone, Debug)]
pub struct Split<S> {
    inner: S,
}

// === impl SplitLayer ===

impl SplitLayer {
    /// The layer.
    pub fn new() -> Self {
        Self(())
    }
}

impl<S> Layer<S> for SplitLayer {
    type Service = Split<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Split { inner }
    }
}

// === impl Split ===

impl<S> Split<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Self {
        Self { inner }
    }

    /// The layer.
    pub fn layer() -> SplitLayer {
        SplitLayer::new()
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

impl<S, B> Service<Request<B>> for Split<S>
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

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let Some(target) = RouteTarget::of(req.extensions()) else {
            let e: BoxError = "split: the request was not routed (no RouteTarget)".into();
            return Either::Right(std::future::ready(Err(e)));
        };
        let Some(b) = target.backends.pick(fastrand::u64(..)) else {
            let e = NoBackends {
                authority: target.authority.to_string(),
            };
            return Either::Right(std::future::ready(Err(e.into())));
        };
        let backend = Backend(b.or_port(target.port));
        crate::dispatch::Dispatch::get_mut(req.extensions_mut()).backend = Some(backend);
        Either::Left(crate::route::map_err(self.inner.call(req)))
    }
}

//! A backendRef's own filters (Gateway API `HTTPBackendRef.filters`), applied below the split
//! to the requests it sent to that backend, by the same plan and fault machinery as a rule's
//! filters: `RequestHeaderModifier`, `ResponseHeaderModifier` and `ExtensionRef` to a
//! `FaultInjection`. The policy compiler refuses on a backendRef the filters that would send a
//! request elsewhere (redirects, rewrites, mirrors).
//!
//! A request this layer answers itself (an abort, a missing `FaultInjection`) never reaches the
//! balancer, so the layer tells the metrics above where it was going ([`Sent`]): a fault
//! injected into a canary counts under the canary's `dst_service`, as the canary's own failures
//! would, which is what a canary's analysis reads.

use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::Either;
use http::{Request, Response};
use mesh_core::filter::{self, HeaderModifier, Outcome};
use mesh_core::policy::Route;
use mesh_core::split::BackendRef;
use tower_layer::Layer;
use tower_service::Service;

use super::fault::{self, Later};
use super::{
    FAULT_TOTAL, FilterTarget, INVALID_TOTAL, REDIRECT_TOTAL, ResponseFuture, Shared, request_line,
};
use crate::BoxError;
use crate::errors::{FaultAborted, UnresolvedFilter};
use crate::metrics::{Registry, Sent};
use crate::route::RouteTarget;
use crate::split::Backend;

/// See the [module docs](self).
#[derive(Clone, Debug)]
pub struct BackendFilterLayer {
    shared: Arc<Shared>,
}

/// See the [module docs](self).
#[derive(Clone, Debug)]
pub struct BackendFilter<S> {
    inner: S,
    shared: Arc<Shared>,
}

// === impl BackendFilterLayer ===

impl BackendFilterLayer {
    /// Applies backendRef filters, counting into `registry` (the counters of the rule filters'
    /// [`super::FilterLayer::new`]).
    pub fn new(registry: Registry) -> Self {
        registry.describe(FAULT_TOTAL, "Total count of faults a route injected.");
        let shared = Shared {
            registry,
            mirrors: None,
            redirect_total: REDIRECT_TOTAL,
            invalid_total: INVALID_TOTAL,
        };
        Self {
            shared: Arc::new(shared),
        }
    }
}

impl<S> Layer<S> for BackendFilterLayer {
    type Service = BackendFilter<S>;

    fn layer(&self, inner: S) -> Self::Service {
        BackendFilter {
            inner,
            shared: Arc::clone(&self.shared),
        }
    }
}

// === impl BackendFilter ===

impl<S> BackendFilter<S> {
    /// Wraps `inner`, counting into `registry`.
    pub fn new(inner: S, registry: Registry) -> Self {
        BackendFilterLayer::new(registry).layer(inner)
    }

    /// The layer.
    pub fn layer(registry: Registry) -> BackendFilterLayer {
        BackendFilterLayer::new(registry)
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

    fn forward<B, RB>(
        &mut self,
        req: Request<B>,
        edits: Vec<HeaderModifier>,
    ) -> ResponseFuture<S::Future>
    where
        S: Service<Request<B>, Response = Response<RB>>,
    {
        ResponseFuture {
            inner: self.inner.call(req),
            edits,
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S, B, RB> Service<Request<B>> for BackendFilter<S>
where
    S: Service<Request<B>, Response = Response<RB>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    B: Send + 'static,
    RB: Send + 'static,
{
    type Response = Response<RB>;
    type Error = BoxError;
    type Future = Either<ResponseFuture<S::Future>, Later<Response<RB>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        // Most backends have no filters: those requests pass with nothing copied.
        let Some((target, route, backend)) = chosen(&req) else {
            return Either::Left(self.forward(req, Vec::new()));
        };
        let filters = route.backend_filters(&backend);
        let fallback = match crate::route::destination(&req) {
            Some(_) => None,
            None => target.addressed_to(req.extensions()),
        };
        let forward = match filter::plan(filters, &request_line(&req, fallback.as_ref())) {
            Outcome::Forward(f) => f,
            // The compiler refuses redirects on a backendRef; answered as a rule's would be.
            Outcome::Redirect { status, location } => {
                sent_to(&req, &backend);
                return Either::Right(fault::answer(self.shared.redirect(status, &location)));
            }
            Outcome::Unresolved { filter } => {
                sent_to(&req, &backend);
                return Either::Right(fault::answer(UnresolvedFilter(filter)));
            }
        };
        let injected = fault::draw(&forward.faults);
        if injected.abort.is_some() || injected.delay.is_some() {
            fault::count(&self.shared.registry, target.fault_labels(), &injected);
        }
        if injected.abort.is_some() {
            sent_to(&req, &backend);
        }
        if let (Some(abort), None) = (injected.abort, injected.delay) {
            return Either::Right(fault::answer(FaultAborted(abort)));
        }
        self.shared
            .edit_request(req.headers_mut(), &forward.request_headers);
        let edits = forward.response_headers.into_iter().cloned().collect();
        if let Some(delay) = injected.delay {
            let later = fault::delayed(
                delay,
                injected.abort,
                &mut self.inner,
                req,
                edits,
                &self.shared,
            );
            return Either::Right(later);
        }
        Either::Left(self.forward(req, edits))
    }
}

/// The route target, route and chosen backend of a request whose backend has filters.
fn chosen<B>(req: &Request<B>) -> Option<(RouteTarget, Arc<Route>, BackendRef)> {
    let target = RouteTarget::of(req.extensions())?;
    let route = target.route.as_ref()?;
    let Backend(backend) = Backend::of(req.extensions())?;
    if route.backend_filters(backend).is_empty() {
        return None;
    }
    Some((target.clone(), Arc::clone(route), backend.clone()))
}

/// Tells the metrics above that the request answered here was on its way to `backend`.
fn sent_to<B>(req: &Request<B>, backend: &BackendRef) {
    if let Some(sent) = Sent::of(req.extensions()) {
        sent.record(None, Some(backend));
    }
}

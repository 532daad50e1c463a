//! Gateway API route filters in the data plane: the matched rule's filters, planned by
//! [`mesh_core::filter::plan`], applied to each request a layer before this one attached its
//! route to ([`FilterTarget`]): outbound, the route layer's [`RouteTarget`]
//! ([`FilterLayer::new`]); inbound, after authorization, the [`Authorized`] of a Server's
//! route ([`FilterLayer::inbound`]: header modifiers and redirects, the filters Linkerd applies
//! inbound; no mirrors).
//!
//! - `RequestRedirect`: the proxy answers itself (the status and a `Location`, an empty body);
//!   nothing is forwarded. The layer fails the request with [`Redirected`], which the edge
//!   layer ([`crate::errors::RespondLayer`]) answers, as it answers every response the proxy
//!   makes itself; metrics see it as the route's response. Counted in
//!   [`REDIRECT_TOTAL`]`{status_code}` (inbound, [`INBOUND_REDIRECT_TOTAL`]).
//! - `URLRewrite`: the path the backend sees (the query is kept), and the host (`Host` and the
//!   URI's authority, the port kept).
//! - `RequestHeaderModifier` / `ResponseHeaderModifier`: headers set, added and removed on the
//!   way to the backend and on the way back (gRPC routes too).
//! - `RequestMirror`: copies to the mirror backend; see [`crate::mirror`].
//! - `ExtensionRef` to a `FaultInjection`: a drawn share of requests is held for the fixed
//!   delay, and a drawn share is aborted with [`FaultAborted`] (answered by the edge layer
//!   with the status, or `grpc-status`) without calling the backend. Outbound, this layer sits
//!   below the route's request timeout, so a delay counts toward it. Counted in
//!   [`FAULT_TOTAL`]. A reference to a `FaultInjection` that does not exist fails the request
//!   with [`UnresolvedFilter`] (500), as Gateway API requires.
//!
//! Header names and values, paths and hosts are not checked when the policy is compiled, so one
//! that HTTP cannot carry is left out here and counted in [`INVALID_TOTAL`]`{what}` (inbound,
//! [`INBOUND_INVALID_TOTAL`]).
//!
//! Below this layer, request bodies are [`FilterBody`]s.
//!
//! A backendRef's own filters are applied further down, after the split chose the backend:
//! [`BackendFilterLayer`].
//!
//! # Examples
//!
//! ```
//! use mesh_tower::{errors::RespondLayer, filter::FilterLayer, metrics::Registry, route::RouteLayer, PolicyHandle};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let policy = PolicyHandle::from_yaml(r#"
//! apiVersion: gateway.networking.k8s.io/v1
//! kind: HTTPRoute
//! metadata: { name: old, namespace: shop }
//! spec:
//!   parentRefs: [{ name: web, kind: Service }]
//!   rules:
//!   - matches: [{ path: { value: /old } }]
//!     filters: [{ type: RequestRedirect, requestRedirect: { path: { type: ReplaceFullPath, replaceFullPath: /new }, statusCode: 301 } }]
//! "#)?;
//! let svc = ServiceBuilder::new()
//!     .layer(RespondLayer::new())
//!     .layer(RouteLayer::new(policy))
//!     .layer(FilterLayer::new(Registry::new()))
//!     .service(service_fn(|_req: http::Request<_>| async {
//!         Ok::<_, std::convert::Infallible>(http::Response::new(String::from("forwarded")))
//!     }));
//! let rsp = svc.oneshot(http::Request::get("http://web.shop/old").body(String::new())?).await?;
//! assert_eq!(rsp.status(), 301);
//! assert_eq!(rsp.headers()["location"], "http://web.shop/new");
//! # Ok(()) }
//! ```

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use futures_util::future::Either;
use http::header::HOST;
use http::uri::{Authority, PathAndQuery};
use http::{Extensions, HeaderMap, HeaderValue, Request, Response, StatusCode, Uri};
use mesh_core::filter::{self, HeaderModifier, Outcome, RequestLine};
use mesh_core::split::BackendRef;
use metrics::Label;
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use crate::BoxError;
use crate::authz::Authorized;
use crate::errors::{FaultAborted, Redirected, UnresolvedFilter};
use crate::metrics::Registry;
pub use crate::mirror::FilterBody;
use crate::mirror::{MirrorConfig, Mirrors};
use crate::route::RouteTarget;

mod backend;
mod fault;
mod headers;
mod target;

pub use backend::{BackendFilter, BackendFilterLayer};
pub use fault::FAULT_TOTAL;
use fault::Later;

/// The counter of redirects the proxy answered itself, labelled `status_code`.
pub const REDIRECT_TOTAL: &str = "outbound_http_redirect_total";

/// The counter of filter parts HTTP cannot carry (left out), labelled `what` (`header`,
/// `path`, `host`, `location`).
pub const INVALID_TOTAL: &str = "outbound_http_filter_invalid_total";

/// [`REDIRECT_TOTAL`] of the inbound proxy: redirects a Server's route answered.
pub const INBOUND_REDIRECT_TOTAL: &str = "inbound_http_redirect_total";

/// [`INVALID_TOTAL`] of the inbound proxy.
pub const INBOUND_INVALID_TOTAL: &str = "inbound_http_filter_invalid_total";

/// The route a request matched, as the filter layer reads it from the request's extensions
/// (a layer before it attached it). Most requests' routes have no filters: they pass through
/// with nothing copied.
pub trait FilterTarget: Clone + Send + Sync + 'static {
    /// The counter of redirects the proxy answered itself, labelled `status_code`.
    const REDIRECT_TOTAL: &'static str;
    /// The counter of filter parts HTTP cannot carry, labelled `what`.
    const INVALID_TOTAL: &'static str;

    /// The target attached to a request, if any.
    fn of(extensions: &Extensions) -> Option<&Self>;

    /// The matched rule's filters.
    fn filters(&self) -> &[mesh_core::filter::Filter];

    /// The host and port a request was addressed to when neither its URI nor its `Host`
    /// says (an HTTP/1.0 request), read from this target or the request's `extensions`.
    fn addressed_to(&self, extensions: &Extensions) -> Option<(String, u16)>;

    /// The target of a copy to `backend`, where this side mirrors.
    fn mirror_target(&self, backend: &BackendRef) -> Option<RouteTarget>;

    /// The labels of the route in [`FAULT_TOTAL`].
    fn fault_labels(&self) -> Vec<Label>;
}

/// See the [module docs](self).
#[derive(Debug)]
pub struct FilterLayer<T = RouteTarget> {
    shared: Arc<Shared>,
    _target: PhantomData<fn() -> T>,
}

/// See the [module docs](self).
#[derive(Debug)]
pub struct Filter<S, T = RouteTarget> {
    inner: S,
    shared: Arc<Shared>,
    _target: PhantomData<fn() -> T>,
}

#[derive(Debug)]
struct Shared {
    registry: Registry,
    /// Copies in flight, where this side mirrors.
    mirrors: Option<Mirrors>,
    redirect_total: &'static str,
    invalid_total: &'static str,
}

/// An `http::HeaderMap` as a [`HeaderEdit`]: names or values HTTP cannot carry are left out
/// and counted.
#[derive(Debug)]
pub struct HeaderEdits<'a> {
    headers: &'a mut HeaderMap,
    invalid: u64,
}

pin_project! {
    /// Response future of [`Filter`]: applies the response header changes.
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        edits: Vec<HeaderModifier>,
        shared: Arc<Shared>,
    }
}

// === impl FilterLayer ===

impl FilterLayer {
    /// Applies filters, counting into `registry`, with the default mirror bounds.
    pub fn new(registry: Registry) -> Self {
        Self::with_mirror_config(registry, MirrorConfig::default())
    }

    /// As [`FilterLayer::new`], with these mirror bounds.
    pub fn with_mirror_config(registry: Registry, config: MirrorConfig) -> Self {
        let mirrors = Mirrors::new(&registry, config);
        Self::counting_into(registry, Some(mirrors))
    }
}

impl FilterLayer<Authorized> {
    /// Applies the filters of the Server route that admitted each request (the inbound
    /// proxy, after authorization), counting into `registry`.
    pub fn inbound(registry: Registry) -> Self {
        Self::counting_into(registry, None)
    }
}

impl<T: FilterTarget> FilterLayer<T> {
    fn counting_into(registry: Registry, mirrors: Option<Mirrors>) -> Self {
        registry.describe(
            T::REDIRECT_TOTAL,
            "Total count of redirects the proxy answered.",
        );
        registry.describe(FAULT_TOTAL, "Total count of faults a route injected.");
        registry.describe(
            T::INVALID_TOTAL,
            "Total count of route filter parts HTTP cannot carry, left out.",
        );
        let shared = Shared {
            registry,
            mirrors,
            redirect_total: T::REDIRECT_TOTAL,
            invalid_total: T::INVALID_TOTAL,
        };
        Self {
            shared: Arc::new(shared),
            _target: PhantomData,
        }
    }
}

impl<T> Clone for FilterLayer<T> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
            _target: PhantomData,
        }
    }
}

impl<S, T> Layer<S> for FilterLayer<T> {
    type Service = Filter<S, T>;

    fn layer(&self, inner: S) -> Self::Service {
        Filter {
            inner,
            shared: Arc::clone(&self.shared),
            _target: PhantomData,
        }
    }
}

// === impl Filter ===

impl<S> Filter<S> {
    /// Wraps `inner`, counting into `registry`.
    pub fn new(inner: S, registry: Registry) -> Self {
        FilterLayer::new(registry).layer(inner)
    }

    /// The layer.
    pub fn layer(registry: Registry) -> FilterLayer {
        FilterLayer::new(registry)
    }
}

impl<S, T> Filter<S, T> {
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

impl<S: Clone, T> Clone for Filter<S, T> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
            _target: PhantomData,
        }
    }
}

impl<S, T, B, RB> Service<Request<B>> for Filter<S, T>
where
    S: Service<Request<FilterBody<B>>, Response = Response<RB>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    B: http_body::Body + Send + 'static,
    RB: Send + 'static,
    T: FilterTarget,
{
    type Response = Response<RB>;
    type Error = BoxError;
    type Future = Either<ResponseFuture<S::Future>, Later<Response<RB>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        // Most routes have no filters: those requests pass with nothing copied.
        let target = match T::of(req.extensions()) {
            Some(t) if !t.filters().is_empty() => t.clone(),
            _ => return Either::Left(self.forward(req.map(FilterBody::new), Vec::new())),
        };
        // Only a request that names no host (HTTP/1.0) needs one made up from the target.
        let fallback = match crate::route::destination(&req) {
            Some(_) => None,
            None => target.addressed_to(req.extensions()),
        };
        let outcome = filter::plan(target.filters(), &request_line(&req, fallback.as_ref()));
        let forward = match outcome {
            Outcome::Redirect { status, location } => {
                return Either::Right(fault::answer(self.shared.redirect(status, &location)));
            }
            Outcome::Unresolved { filter } => {
                return Either::Right(fault::answer(UnresolvedFilter(filter)));
            }
            Outcome::Forward(f) => f,
        };
        let injected = fault::draw(&forward.faults);
        if injected.abort.is_some() || injected.delay.is_some() {
            fault::count(&self.shared.registry, target.fault_labels(), &injected);
        }
        if let (Some(abort), None) = (injected.abort, injected.delay) {
            return Either::Right(fault::answer(FaultAborted(abort)));
        }
        if let Some(host) = &forward.host {
            self.rewrite_host(&mut req, host);
        }
        if let Some(path) = &forward.path {
            self.rewrite_path(&mut req, path);
        }
        self.shared
            .edit_request(req.headers_mut(), &forward.request_headers);
        // A request that will be aborted is not forwarded, so it is not copied either.
        let mirrors: Vec<RouteTarget> = (forward.mirrors.iter())
            .filter(|_| injected.abort.is_none())
            .filter(|m| m.sampled(fastrand::u64(..)))
            .filter_map(|m| target.mirror_target(&m.backend))
            .collect();
        let edits = forward.response_headers.into_iter().cloned().collect();
        let req = match &self.shared.mirrors {
            Some(m) if !mirrors.is_empty() => m.start(&self.inner, req, mirrors),
            _ => req.map(FilterBody::new),
        };
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

impl<S, T> Filter<S, T> {
    fn forward<B, RB>(
        &mut self,
        req: Request<FilterBody<B>>,
        edits: Vec<HeaderModifier>,
    ) -> ResponseFuture<S::Future>
    where
        S: Service<Request<FilterBody<B>>, Response = Response<RB>>,
    {
        ResponseFuture {
            inner: self.inner.call(req),
            edits,
            shared: Arc::clone(&self.shared),
        }
    }

    /// The URI's authority and the `Host` header name `host`, each keeping its port.
    fn rewrite_host<B>(&self, req: &mut Request<B>, host: &str) {
        let mut ok = true;
        if let Some(a) = req.uri().authority() {
            match with_port(host, a.port_u16()).parse::<Authority>() {
                Ok(a) => {
                    let mut parts = req.uri().clone().into_parts();
                    parts.authority = Some(a);
                    ok &= set_uri(req, parts);
                }
                Err(_) => ok = false,
            }
        }
        let port = req
            .headers()
            .get(HOST)
            .and_then(|h| h.to_str().ok())
            .map(|h| h.parse::<Authority>().ok().and_then(|a| a.port_u16()));
        if let Some(port) = port {
            match HeaderValue::from_str(&with_port(host, port)) {
                Ok(v) => {
                    req.headers_mut().insert(HOST, v);
                }
                Err(_) => ok = false,
            }
        }
        if !ok {
            self.shared.invalid("host", 1);
        }
    }

    /// The URI's path becomes `path`; its query is kept.
    fn rewrite_path<B>(&self, req: &mut Request<B>, path: &str) {
        let pq = match req.uri().query() {
            Some(q) => format!("{path}?{q}"),
            None => path.to_owned(),
        };
        let mut parts = req.uri().clone().into_parts();
        let ok = match pq.parse::<PathAndQuery>() {
            Ok(pq) => {
                parts.path_and_query = Some(pq);
                set_uri(req, parts)
            }
            Err(_) => false,
        };
        if !ok {
            self.shared.invalid("path", 1);
        }
    }
}

/// What the filters read of `req`: the host and port it was addressed to (its authority or
/// `Host`, else `fallback`), its path and query.
fn request_line<'a, B>(
    req: &'a Request<B>,
    fallback: Option<&'a (String, u16)>,
) -> RequestLine<'a> {
    let scheme = if req.uri().scheme() == Some(&http::uri::Scheme::HTTPS) {
        "https"
    } else {
        "http"
    };
    let (host, port) = crate::route::destination(req)
        .or_else(|| fallback.map(|(h, p)| (h.as_str(), *p)))
        .unwrap_or(("", 0));
    RequestLine {
        scheme,
        host,
        port,
        path: req.uri().path(),
        query: req.uri().query(),
    }
}

fn with_port(host: &str, port: Option<u16>) -> String {
    match port {
        Some(p) => format!("{host}:{p}"),
        None => host.to_owned(),
    }
}

fn set_uri<B>(req: &mut Request<B>, parts: http::uri::Parts) -> bool {
    match Uri::from_parts(parts) {
        Ok(uri) => {
            *req.uri_mut() = uri;
            true
        }
        Err(_) => false,
    }
}

// === impl Shared ===

impl Shared {
    /// What the edge layer answers a redirected request with.
    fn redirect(&self, status: u16, location: &str) -> Redirected {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::FOUND);
        self.registry
            .counter(
                self.redirect_total,
                vec![Label::new("status_code", status.as_str().to_owned())],
            )
            .increment(1);
        let location = HeaderValue::from_str(location).ok();
        if location.is_none() {
            self.invalid("location", 1);
        }
        Redirected { status, location }
    }

    /// Applies the request header changes `mods`, counting what HTTP cannot carry.
    fn edit_request(&self, headers: &mut HeaderMap, mods: &[&HeaderModifier]) {
        let mut edits = HeaderEdits::new(headers);
        for m in mods {
            m.apply(&mut edits);
        }
        self.invalid("header", edits.invalid());
    }

    fn invalid(&self, what: &'static str, n: u64) {
        if n > 0 {
            self.registry
                .counter(self.invalid_total, vec![Label::new("what", what)])
                .increment(n);
        }
    }
}

// === impl ResponseFuture ===

impl<F, RB, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<RB>, E>>,
    E: Into<BoxError>,
{
    type Output = Result<Response<RB>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut rsp = ready!(this.inner.poll(cx)).map_err(Into::into)?;
        if !this.edits.is_empty() {
            let mut edits = HeaderEdits::new(rsp.headers_mut());
            for m in this.edits.iter() {
                m.apply(&mut edits);
            }
            this.shared.invalid("header", edits.invalid());
        }
        Poll::Ready(Ok(rsp))
    }
}

#[cfg(test)]
mod tests;

//! Gateway API route filters in the data plane: the matched rule's filters, planned by
//! [`mesh_core::filter::plan`], applied to each outbound request the route layer attached a
//! [`RouteTarget`] to.
//!
//! - `RequestRedirect`: the proxy answers itself (the status and a `Location`, an empty body);
//!   nothing is forwarded. The layer fails the request with [`Redirected`], which the edge
//!   layer ([`crate::errors::RespondLayer`]) answers, as it answers every response the proxy
//!   makes itself; metrics see it as the route's response. Counted in
//!   [`REDIRECT_TOTAL`]`{status_code}`.
//! - `URLRewrite`: the path the backend sees (the query is kept), and the host (`Host` and the
//!   URI's authority, the port kept).
//! - `RequestHeaderModifier` / `ResponseHeaderModifier`: headers set, added and removed on the
//!   way to the backend and on the way back (gRPC routes too).
//! - `RequestMirror`: copies to the mirror backend; see [`crate::mirror`].
//!
//! Header names and values, paths and hosts are not checked when the policy is compiled, so one
//! that HTTP cannot carry is left out here and counted in [`INVALID_TOTAL`]`{what}`.
//!
//! Below this layer, request bodies are [`FilterBody`]s.
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
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use futures_util::future::Either;
use http::header::HOST;
use http::uri::{Authority, PathAndQuery};
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, Uri};
use mesh_core::filter::{self, HeaderEdit, HeaderModifier, Outcome, RequestLine};
use mesh_core::split::{Backends, WeightedBackend};
use metrics::Label;
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use crate::BoxError;
use crate::errors::Redirected;
use crate::metrics::Registry;
pub use crate::mirror::FilterBody;
use crate::mirror::{MirrorConfig, Mirrors};
use crate::route::RouteTarget;

/// The counter of redirects the proxy answered itself, labelled `status_code`.
pub const REDIRECT_TOTAL: &str = "outbound_http_redirect_total";

/// The counter of filter parts HTTP cannot carry (left out), labelled `what` (`header`,
/// `path`, `host`, `location`).
pub const INVALID_TOTAL: &str = "outbound_http_filter_invalid_total";

/// See the [module docs](self).
#[derive(Clone, Debug)]
pub struct FilterLayer {
    shared: Arc<Shared>,
}

/// See the [module docs](self).
#[derive(Clone, Debug)]
pub struct Filter<S> {
    inner: S,
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    registry: Registry,
    mirrors: Mirrors,
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
        registry.describe(
            REDIRECT_TOTAL,
            "Total count of redirects the proxy answered.",
        );
        registry.describe(
            INVALID_TOTAL,
            "Total count of route filter parts HTTP cannot carry, left out.",
        );
        let mirrors = Mirrors::new(&registry, config);
        Self {
            shared: Arc::new(Shared { registry, mirrors }),
        }
    }
}

impl<S> Layer<S> for FilterLayer {
    type Service = Filter<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Filter {
            inner,
            shared: Arc::clone(&self.shared),
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

type Answered<T> = std::future::Ready<Result<T, BoxError>>;

impl<S, B, RB> Service<Request<B>> for Filter<S>
where
    S: Service<Request<FilterBody<B>>, Response = Response<RB>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    B: http_body::Body + Send + 'static,
{
    type Response = Response<RB>;
    type Error = BoxError;
    type Future = Either<ResponseFuture<S::Future>, Answered<Response<RB>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        // Most routes have no filters: those requests pass with nothing copied.
        let target = match req.extensions().get::<RouteTarget>() {
            Some(t) if t.route.as_ref().is_some_and(|r| !r.filters().is_empty()) => t.clone(),
            _ => return Either::Left(self.forward(req.map(FilterBody::new), Vec::new())),
        };
        let filters = target.route.as_deref().map_or(&[][..], |r| r.filters());
        let outcome = filter::plan(filters, &request_line(&req, &target));
        let forward = match outcome {
            Outcome::Redirect { status, location } => {
                let e = self.redirect(status, &location);
                return Either::Right(std::future::ready(Err(e.into())));
            }
            Outcome::Forward(f) => f,
        };
        if let Some(host) = &forward.host {
            self.rewrite_host(&mut req, host);
        }
        if let Some(path) = &forward.path {
            self.rewrite_path(&mut req, path);
        }
        let mut edits = HeaderEdits::new(req.headers_mut());
        for m in &forward.request_headers {
            m.apply(&mut edits);
        }
        let invalid = edits.invalid();
        self.shared.invalid("header", invalid);
        let mirrors: Vec<RouteTarget> = forward
            .mirrors
            .iter()
            .filter(|m| m.sampled(fastrand::u64(..)))
            .map(|m| mirror_target(&target, &m.backend))
            .collect();
        let edits = forward.response_headers.into_iter().cloned().collect();
        let req = if mirrors.is_empty() {
            req.map(FilterBody::new)
        } else {
            self.shared.mirrors.start(&self.inner, req, mirrors)
        };
        Either::Left(self.forward(req, edits))
    }
}

impl<S> Filter<S> {
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

    /// What the edge layer answers a redirected request with.
    fn redirect(&self, status: u16, location: &str) -> Redirected {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::FOUND);
        self.shared
            .registry
            .counter(
                REDIRECT_TOTAL,
                vec![Label::new("status_code", status.as_str().to_owned())],
            )
            .increment(1);
        let location = HeaderValue::from_str(location).ok();
        if location.is_none() {
            self.shared.invalid("location", 1);
        }
        Redirected { status, location }
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
/// `Host`, else the route's), its path and query.
fn request_line<'a, B>(req: &'a Request<B>, target: &'a RouteTarget) -> RequestLine<'a> {
    let scheme = if req.uri().scheme() == Some(&http::uri::Scheme::HTTPS) {
        "https"
    } else {
        "http"
    };
    let (host, port) = crate::route::destination(req).unwrap_or_else(|| {
        let host = target
            .authority
            .rsplit_once(':')
            .map_or(&*target.authority, |(h, _)| h);
        (host, target.port)
    });
    RequestLine {
        scheme,
        host,
        port,
        path: req.uri().path(),
        query: req.uri().query(),
    }
}

/// The target of a copy to `backend`: only that backend, and no route, so that the copy is
/// neither retried nor timed out by the original's route (the mirror has its own timeout).
fn mirror_target(target: &RouteTarget, backend: &mesh_core::split::BackendRef) -> RouteTarget {
    RouteTarget {
        route: None,
        backends: Arc::new(Backends::new(vec![WeightedBackend {
            backend: backend.clone(),
            weight: 1,
        }])),
        pod: None,
        ..target.clone()
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
    fn invalid(&self, what: &'static str, n: u64) {
        if n > 0 {
            self.registry
                .counter(INVALID_TOTAL, vec![Label::new("what", what)])
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

// === impl HeaderEdits ===

impl<'a> HeaderEdits<'a> {
    /// Edits `headers`.
    pub fn new(headers: &'a mut HeaderMap) -> Self {
        Self {
            headers,
            invalid: 0,
        }
    }

    /// How many names or values were left out.
    pub fn invalid(&self) -> u64 {
        self.invalid
    }

    fn parse(&mut self, name: &str, value: &str) -> Option<(HeaderName, HeaderValue)> {
        match (HeaderName::try_from(name), HeaderValue::from_str(value)) {
            (Ok(n), Ok(v)) => Some((n, v)),
            _ => {
                self.invalid += 1;
                None
            }
        }
    }
}

impl HeaderEdit for HeaderEdits<'_> {
    fn set_header(&mut self, name: &str, value: &str) {
        if let Some((n, v)) = self.parse(name, value) {
            self.headers.insert(n, v);
        }
    }

    fn add_header(&mut self, name: &str, value: &str) {
        if let Some((n, v)) = self.parse(name, value) {
            self.headers.append(n, v);
        }
    }

    fn remove_header(&mut self, name: &str) {
        match HeaderName::try_from(name) {
            Ok(n) => {
                self.headers.remove(n);
            }
            Err(_) => self.invalid += 1,
        }
    }
}

#[cfg(test)]
mod tests;

//! Request timeouts: the whole request, retries included, is bounded by the route's request
//! timeout (`timeouts.request`, `timeout.linkerd.io/request`, a ServiceProfile route's
//! `timeout`). Per-attempt timeouts (`backendRequest`, `timeout.linkerd.io/response`) are applied
//! to each attempt by the [retry layer](crate::retry).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Request;
use pin_project_lite::pin_project;
use tokio::time::Sleep;
use tower_layer::Layer;
use tower_service::Service;

use crate::BoxError;
use crate::errors::RequestTimeout;
use crate::route::RouteTarget;

/// See the [module docs](self).
#[derive(Clone, Copy, Debug, Default)]
pub struct TimeoutLayer {
    default: Option<Duration>,
}

/// See the [module docs](self).
#[derive(Clone, Debug)]
pub struct Timeout<S> {
    inner: S,
    default: Option<Duration>,
}

pin_project! {
    /// Response future of [`Timeout`].
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        #[pin]
        sleep: Option<Sleep>,
        after: Duration,
    }
}

// === impl TimeoutLayer ===

impl TimeoutLayer {
    /// Times out requests by their route's timeout; requests whose route has none are not
    /// timed out.
    pub fn new() -> Self {
        Self { default: None }
    }

    /// Applies `timeout` where the route names none.
    pub fn with_default(timeout: Duration) -> Self {
        Self {
            default: Some(timeout),
        }
    }
}

impl<S> Layer<S> for TimeoutLayer {
    type Service = Timeout<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Timeout {
            inner,
            default: self.default,
        }
    }
}

// === impl Timeout ===

impl<S> Timeout<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            default: None,
        }
    }

    /// The layer.
    pub fn layer() -> TimeoutLayer {
        TimeoutLayer::new()
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

impl<S, B> Service<Request<B>> for Timeout<S>
where
    S: Service<Request<B>>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let after = RouteTarget::of(req.extensions())
            .and_then(|t| t.route.as_ref())
            .and_then(|r| r.timeouts().request)
            .or(self.default);
        ResponseFuture {
            inner: self.inner.call(req),
            sleep: after.map(tokio::time::sleep),
            after: after.unwrap_or_default(),
        }
    }
}

impl<F, T, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(r) = this.inner.poll(cx) {
            return Poll::Ready(r.map_err(Into::into));
        }
        if let Some(sleep) = this.sleep.as_pin_mut()
            && sleep.poll(cx).is_ready()
        {
            return Poll::Ready(Err(RequestTimeout(*this.after).into()));
        }
        Poll::Pending
    }
}

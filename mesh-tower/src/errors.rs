//! The mesh's typed errors, and the one edge layer that turns them into HTTP responses.
//!
//! Layers fail with a small typed error; callers test the cause chain with
//! [`is_caused_by`], never message text. [`RespondLayer`] sits at the edge of a stack and answers
//! each error with a status (502 connect failure, 503 no endpoints or circuit open, 504
//! timeout, 403 unauthorized, 429 rate limited, 404 no route) and an `l5d-proxy-error` header
//! saying why, as Linkerd's proxy does.
//!
//! A redirect (a route's `RequestRedirect` filter) is answered here too, as linkerd2-proxy
//! answers its `HttpRouteRedirect`: the status and a `Location`, an empty body, no
//! `l5d-proxy-error` (it is the route's answer, not a failure).
//!
//! A fault a route's `FaultInjection` injects ([`FaultAborted`]) is answered with its status
//! and `l5d-proxy-error`; a gRPC one as a trailers-only response (HTTP 200, `grpc-status`),
//! as a gRPC server that fails a call answers. A custom filter that is not resolved
//! ([`UnresolvedFilter`]) is answered 500, as Gateway API requires.
//!
//! A 403 is the exception: its body and header say only `forbidden` unless the layer is built
//! with [`DenialDetail::Shown`]. A denied client may be anyone, and the names of the Server,
//! route and policy that refused it map the mesh's policy for them; the authorization layer
//! logs the reason and counts it in `inbound_http_authz_deny_total` instead.

use std::convert::Infallible;
use std::error::Error;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use mesh_core::authz::DecidedBy;
use mesh_core::filter::fault::AbortStatus;
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use crate::BoxError;
use crate::body::ResponseBody;

/// The header that says why the mesh answered instead of the application.
pub const PROXY_ERROR_HEADER: &str = "l5d-proxy-error";

/// All a denied client is told by default, in the body and in [`PROXY_ERROR_HEADER`].
pub const FORBIDDEN: &str = "forbidden";

/// What a 403 tells the client about why it was refused.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DenialDetail {
    /// Only [`FORBIDDEN`].
    #[default]
    Hidden,
    /// The full reason (which Server, route or policy refused it), for debugging a policy
    /// where every client is trusted with it.
    Shown,
}

/// No route attached to the Service matches the request.
#[derive(Clone, Debug, thiserror::Error)]
#[error("no route matches the request to {authority}")]
pub struct NoRoute {
    /// The authority the request was addressed to.
    pub authority: String,
}

/// Every backend of the route has weight zero.
#[derive(Clone, Debug, thiserror::Error)]
#[error("the route to {authority} has no backend with a positive weight")]
pub struct NoBackends {
    /// The authority the request was addressed to.
    pub authority: String,
}

/// The chosen backend has no endpoints.
#[derive(Clone, Debug, thiserror::Error)]
#[error("backend {backend} has no endpoints")]
pub struct NoEndpoints {
    /// The backend, `name.namespace:port`.
    pub backend: String,
}

/// The destination is one of the proxy's own listeners: connecting would loop (502).
#[derive(Clone, Debug, thiserror::Error)]
#[error("refusing to connect to {addr}: it is the proxy's own listener (a loop)")]
pub struct ProxyLoop {
    /// The destination.
    pub addr: std::net::SocketAddr,
}

/// Every endpoint of the backend is ejected by failure accrual.
#[derive(Clone, Debug, thiserror::Error)]
#[error("backend {backend} is unavailable: every endpoint failed repeatedly (circuit open)")]
pub struct CircuitOpen {
    /// The backend, `name.namespace:port`.
    pub backend: String,
}

/// Connecting to an endpoint failed.
#[derive(Debug, thiserror::Error)]
#[error("connect to {addr} failed: {source}")]
pub struct ConnectFailed {
    /// The endpoint.
    pub addr: std::net::SocketAddr,
    /// Why.
    #[source]
    pub source: BoxError,
}

/// The upstream address is at its connection cap and the request could not wait for one
/// (503): see [`crate::pool`].
#[derive(Clone, Copy, Debug, thiserror::Error)]
#[error("{addr} is at its connection limit ({why:?})")]
pub struct PoolExhausted {
    /// The upstream address.
    pub addr: std::net::SocketAddr,
    /// Whether the queue was full or the wait ran out.
    pub why: crate::pool::Exhausted,
}

/// The whole request, retries included, took longer than the route allows.
#[derive(Clone, Copy, Debug, thiserror::Error)]
#[error("request timed out after {0:?}")]
pub struct RequestTimeout(pub Duration);

/// One attempt to a backend took longer than the route allows.
#[derive(Clone, Copy, Debug, thiserror::Error)]
#[error("backend request timed out after {0:?}")]
pub struct BackendTimeout(pub Duration);

/// Authorization refused the request.
#[derive(Clone, Debug, thiserror::Error)]
#[error("unauthorized by {by}: {reason}")]
pub struct Unauthorized {
    /// What refused it (prints as `Server/ns/name`, `default:deny`).
    pub by: DecidedBy,
    /// Why, rendered: the decision it came from borrowed the request.
    pub reason: String,
}

/// A route's `RequestRedirect` filter answers the request: nothing is forwarded.
#[derive(Clone, Debug, thiserror::Error)]
#[error("request redirected with {status}")]
pub struct Redirected {
    /// 301, 302, 303, 307 or 308.
    pub status: StatusCode,
    /// The `Location` header (left out if HTTP cannot carry it).
    pub location: Option<HeaderValue>,
}

/// A route's `FaultInjection` aborted the request: nothing is forwarded.
#[derive(Clone, Copy, Debug, thiserror::Error)]
#[error("fault injected: abort {0}")]
pub struct FaultAborted(pub AbortStatus);

/// A route's custom (`ExtensionRef`) filter names an object that does not exist: Gateway API
/// says the request gets an error rather than the filter being skipped.
#[derive(Clone, Debug, thiserror::Error)]
#[error("route filter {0} is not resolved")]
pub struct UnresolvedFilter(pub String);

/// A rate limit refused the request.
#[derive(Clone, Debug, thiserror::Error)]
#[error("rate limited by {by}")]
pub struct RateLimited {
    /// The `HTTPLocalRateLimitPolicy`.
    pub by: String,
}

/// Whether `err`, or anything in its chain of sources, is an `E`.
pub fn is_caused_by<E: Error + 'static>(err: &(dyn Error + 'static)) -> bool {
    find::<E>(err).is_some()
}

/// The first `E` in the chain of `err`.
pub fn find<'a, E: Error + 'static>(err: &'a (dyn Error + 'static)) -> Option<&'a E> {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(found) = e.downcast_ref::<E>() {
            return Some(found);
        }
        cur = e.source();
    }
    None
}

/// The status the mesh answers an error with.
pub fn status_for(err: &(dyn Error + 'static)) -> StatusCode {
    if let Some(r) = find::<Redirected>(err) {
        r.status
    } else if let Some(FaultAborted(abort)) = find::<FaultAborted>(err) {
        match abort {
            AbortStatus::Http(s) => {
                StatusCode::from_u16(*s).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
            }
            AbortStatus::Grpc(_) => StatusCode::OK,
        }
    } else if is_caused_by::<UnresolvedFilter>(err) {
        StatusCode::INTERNAL_SERVER_ERROR
    } else if is_caused_by::<Unauthorized>(err) {
        StatusCode::FORBIDDEN
    } else if is_caused_by::<RateLimited>(err) {
        StatusCode::TOO_MANY_REQUESTS
    } else if is_caused_by::<NoRoute>(err) {
        StatusCode::NOT_FOUND
    } else if is_caused_by::<RequestTimeout>(err) || is_caused_by::<BackendTimeout>(err) {
        StatusCode::GATEWAY_TIMEOUT
    } else if is_caused_by::<NoEndpoints>(err)
        || is_caused_by::<CircuitOpen>(err)
        || is_caused_by::<NoBackends>(err)
        || is_caused_by::<PoolExhausted>(err)
    {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        // Connect failures and anything the upstream connection did wrong.
        StatusCode::BAD_GATEWAY
    }
}

/// The gRPC status code the mesh answers an error with, where it answers as gRPC.
pub fn grpc_status_for(err: &(dyn Error + 'static)) -> Option<u16> {
    match find::<FaultAborted>(err) {
        Some(FaultAborted(AbortStatus::Grpc(code))) => Some(*code),
        _ => None,
    }
}

/// A gRPC call failed without a body: the status in the headers, which end the stream.
fn grpc_trailers_only<B>(code: u16, message: &str) -> Response<ResponseBody<B>> {
    let mut rsp = Response::new(ResponseBody::default());
    let headers = rsp.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    headers.insert("grpc-status", HeaderValue::from(code));
    if let Ok(v) = HeaderValue::from_str(message) {
        headers.insert("grpc-message", v);
    }
    rsp
}

/// Builds the response for an error; a denial says why only when `denial` is
/// [`DenialDetail::Shown`].
pub fn error_response<B>(
    err: &(dyn Error + 'static),
    denial: DenialDetail,
) -> Response<ResponseBody<B>> {
    if let Some(r) = find::<Redirected>(err) {
        let mut rsp = Response::new(ResponseBody::default());
        *rsp.status_mut() = r.status;
        if let Some(l) = &r.location {
            rsp.headers_mut().insert(http::header::LOCATION, l.clone());
        }
        return rsp;
    }
    if let Some(FaultAborted(AbortStatus::Grpc(code))) = find::<FaultAborted>(err) {
        return grpc_trailers_only(*code, "fault injected");
    }
    let status = status_for(err);
    let msg = match denial {
        DenialDetail::Hidden if is_caused_by::<Unauthorized>(err) => FORBIDDEN.to_owned(),
        _ => err.to_string(),
    };
    // Header values cannot hold control characters; keep the message readable.
    let clean: String = msg
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let mut rsp = Response::new(ResponseBody::full(Bytes::from(format!("{clean}\n"))));
    *rsp.status_mut() = status;
    if let Ok(v) = HeaderValue::from_str(&clean) {
        rsp.headers_mut().insert(PROXY_ERROR_HEADER, v);
    }
    rsp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    rsp
}

/// Turns errors from the inner stack into responses.
#[derive(Clone, Copy, Debug, Default)]
pub struct RespondLayer {
    denial: DenialDetail,
}

/// See [`RespondLayer`].
#[derive(Clone, Debug)]
pub struct Respond<S> {
    inner: S,
    denial: DenialDetail,
}

pin_project! {
    /// Response future of [`Respond`].
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        denial: DenialDetail,
    }
}

// === impl RespondLayer ===

impl RespondLayer {
    /// The layer; denials say only [`FORBIDDEN`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets what a 403 tells the client.
    pub fn with_denial_detail(mut self, denial: DenialDetail) -> Self {
        self.denial = denial;
        self
    }
}

impl<S> Layer<S> for RespondLayer {
    type Service = Respond<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Respond {
            inner,
            denial: self.denial,
        }
    }
}

// === impl Respond ===

impl<S> Respond<S> {
    /// Wraps `inner`; denials say only [`FORBIDDEN`].
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            denial: DenialDetail::Hidden,
        }
    }

    /// The layer.
    pub fn layer() -> RespondLayer {
        RespondLayer::new()
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

impl<S, B, RB> Service<Request<B>> for Respond<S>
where
    S: Service<Request<B>, Response = Response<RB>>,
    S::Error: Into<BoxError>,
{
    type Response = Response<ResponseBody<RB>>;
    type Error = Infallible;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // A stack that cannot become ready is answered per request, in `call`.
        let _ = ready!(self.inner.poll_ready(cx));
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        ResponseFuture {
            inner: self.inner.call(req),
            denial: self.denial,
        }
    }
}

impl<F, RB, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<RB>, E>>,
    E: Into<BoxError>,
{
    type Output = Result<Response<ResponseBody<RB>>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        Poll::Ready(Ok(match ready!(this.inner.poll(cx)) {
            Ok(rsp) => rsp.map(ResponseBody::new),
            Err(e) => {
                let e: BoxError = e.into();
                tracing::debug!(error = %e, "answering with an error response");
                error_response(&*e, *this.denial)
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use mesh_core::authz::{DefaultPolicy, ResourceId};

    use super::*;

    #[test]
    fn statuses_follow_the_cause_chain() {
        let wrapped: BoxError = Box::new(ConnectFailed {
            addr: "127.0.0.1:1".parse().unwrap(),
            source: Box::new(std::io::Error::other("refused")),
        });
        assert_eq!(status_for(&*wrapped), StatusCode::BAD_GATEWAY);
        let cases: Vec<(BoxError, StatusCode)> = vec![
            (
                Box::new(RequestTimeout(Duration::from_secs(1))),
                StatusCode::GATEWAY_TIMEOUT,
            ),
            (
                Box::new(BackendTimeout(Duration::from_secs(1))),
                StatusCode::GATEWAY_TIMEOUT,
            ),
            (
                Box::new(CircuitOpen {
                    backend: "b".into(),
                }),
                StatusCode::SERVICE_UNAVAILABLE,
            ),
            (
                Box::new(NoEndpoints {
                    backend: "b".into(),
                }),
                StatusCode::SERVICE_UNAVAILABLE,
            ),
            (
                Box::new(Unauthorized {
                    by: DecidedBy::Default(DefaultPolicy::Deny),
                    reason: "y".into(),
                }),
                StatusCode::FORBIDDEN,
            ),
            (
                Box::new(RateLimited { by: "x".into() }),
                StatusCode::TOO_MANY_REQUESTS,
            ),
            (
                Box::new(NoRoute {
                    authority: "a".into(),
                }),
                StatusCode::NOT_FOUND,
            ),
        ];
        for (e, want) in cases {
            assert_eq!(status_for(&*e), want, "{e}");
            let rsp = error_response::<()>(&*e, DenialDetail::Hidden);
            assert_eq!(rsp.status(), want);
            assert!(rsp.headers().contains_key(PROXY_ERROR_HEADER));
        }
    }

    #[test]
    fn denials_name_no_policy_unless_asked_to() {
        let server = ResourceId::new("Server", "emojivoto", "web-http");
        let denied: BoxError = Box::new(Unauthorized {
            by: DecidedBy::Server(Arc::new(server)),
            reason: "HTTPRoute/emojivoto/admin allows no unauthenticated client".into(),
        });
        let header = |rsp: &Response<ResponseBody<()>>| {
            rsp.headers()[PROXY_ERROR_HEADER]
                .to_str()
                .unwrap()
                .to_owned()
        };
        let hidden = error_response::<()>(&*denied, DenialDetail::Hidden);
        assert_eq!(hidden.status(), StatusCode::FORBIDDEN);
        assert_eq!(header(&hidden), FORBIDDEN);
        let shown = error_response::<()>(&*denied, DenialDetail::Shown);
        assert!(header(&shown).contains("Server/emojivoto/web-http"));
        // Only denials are redacted: a timeout names nothing secret and helps the caller.
        let timeout: BoxError = Box::new(RequestTimeout(Duration::from_secs(1)));
        let rsp = error_response::<()>(&*timeout, DenialDetail::Hidden);
        assert!(header(&rsp).contains("timed out"));
    }
}

//! The layer that records Linkerd's per-request metrics; see the [module docs](super).

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};

use http::{Request, Response};
use mesh_core::destination::PodEndpoint;
use mesh_core::split::BackendRef;
use parking_lot::Mutex;
use pin_project_lite::pin_project;
use tokio::time::Instant;
use tower_layer::Layer;
use tower_service::Service;

use super::body::{Pending, ResponseBody};
use super::classify::{Eos, Outcome};
use super::series::{Interned, Series, SeriesKey, Shared};
use super::{BoundedMap, Direction, Registry};
use crate::BoxError;
use crate::accepted::Accepted;
use crate::authz::{Authorized, ClientInfo};
use crate::discover::Endpoint;
use crate::errors::status_for;
use crate::route::RouteTarget;
use crate::tap::{Capture, Tap};

/// The address an inbound request arrived at (the connection's original destination), for the
/// `target_addr` label. Without it, inbound series read `0.0.0.0:<port>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TargetAddr(pub SocketAddr);

/// See the [module docs](super).
#[derive(Clone, Debug)]
pub struct MetricsLayer {
    shared: Arc<Shared>,
    tap: Option<Tap>,
}

/// See the [module docs](super).
#[derive(Clone, Debug)]
pub struct Metrics<S> {
    inner: S,
    shared: Arc<Shared>,
    tap: Option<Tap>,
}

/// An outbound request's series, waiting for the balancer to say where it goes: the handle
/// in the request's [`Dispatch`](crate::dispatch::Dispatch) through which `request_total` is counted when the request is sent (see the
/// [module docs](super)). Attempts share it, so a retried request counts once.
#[derive(Clone, Debug)]
pub struct Sent(Arc<SentInner>);

#[derive(Debug)]
struct SentInner {
    shared: Arc<Shared>,
    labels: RequestLabels,
    counted: AtomicBool,
    /// Where the latest attempt went, and its series: a response that arrives came from
    /// there, so it is labelled without a second lookup or anything carried on the response.
    to: Mutex<Option<SentTo>>,
}

/// Where an attempt was sent.
#[derive(Debug)]
struct SentTo {
    endpoint: Option<Endpoint>,
    backend: Option<Arc<BackendRef>>,
    series: Arc<Series>,
}

/// What a request's series depend on that is known when it is called.
#[derive(Clone, Debug)]
struct RequestLabels {
    authority: Option<Arc<str>>,
    route: Option<Arc<str>>,
    // The route's response classes decide `classification`.
    policy_route: Option<Arc<mesh_core::policy::Route>>,
    pod: Option<Arc<PodEndpoint>>,
}

/// Where a response future records.
#[derive(Debug)]
enum Record {
    /// Inbound labels are all known at the call: the request was counted there.
    Known {
        series: Arc<Series>,
        policy_route: Option<Arc<mesh_core::policy::Route>>,
    },
    /// Outbound labels depend on where the balancer sent the request.
    Sent(Sent),
}

pin_project! {
    /// Response future of [`Metrics`].
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        start: Instant,
        record: Option<Record>,
        tap: Option<Box<Capture>>,
    }
}

// === impl MetricsLayer ===

impl MetricsLayer {
    /// Records into `registry`, labelling requests with `direction`. DNS-form identities use
    /// Linkerd's default control namespace.
    pub fn new(registry: Registry, direction: Direction) -> Self {
        Self::with_control_namespace(
            registry,
            direction,
            mesh_core::identity::DEFAULT_CONTROL_NAMESPACE,
        )
    }

    /// As [`MetricsLayer::new`], naming the control namespace of DNS-form identities.
    pub fn with_control_namespace(
        registry: Registry,
        direction: Direction,
        control_namespace: &str,
    ) -> Self {
        registry.describe("request_total", "Total count of HTTP requests.");
        registry.describe("response_total", "Total count of HTTP responses.");
        registry.describe("response_latency_ms", "Elapsed times between a request's headers being sent and its response's headers being received.");
        registry.describe(
            "route_request_total",
            "Total count of HTTP requests, per route.",
        );
        registry.describe(
            "route_response_total",
            "Total count of HTTP responses, per route.",
        );
        registry.describe("route_response_latency_ms", "Response latency per route.");
        let limit = registry.series_limit();
        Self {
            shared: Arc::new(Shared {
                registry,
                direction,
                control_namespace: control_namespace.to_owned(),
                series: BoundedMap::new(limit),
                interned: Interned::new(limit),
            }),
            tap: None,
        }
    }

    /// Also publishes each request to `tap`, from the same facts the metrics record (see
    /// [`crate::tap`]); with nobody subscribed, that costs one atomic load per request.
    #[must_use]
    pub fn with_tap(mut self, tap: Tap) -> Self {
        self.tap = Some(tap);
        self
    }
}

impl<S> Layer<S> for MetricsLayer {
    type Service = Metrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Metrics {
            inner,
            shared: Arc::clone(&self.shared),
            tap: self.tap.clone(),
        }
    }
}

// === impl Metrics ===

impl<S> Metrics<S> {
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

impl<S, B, RB> Service<Request<B>> for Metrics<S>
where
    S: Service<Request<B>, Response = Response<RB>>,
    S::Error: Into<BoxError>,
    RB: http_body::Body,
{
    type Response = Response<ResponseBody<RB>>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let shared = &self.shared;
        let tap = Capture::request(
            self.tap.as_ref(),
            shared.direction,
            &req,
            &shared.control_namespace,
        );
        let interned = &shared.interned;
        let routed = RouteTarget::of(req.extensions());
        let policy_route = routed.and_then(|t| t.route.clone());
        let route = policy_route.as_ref().map(|r| interned.name(r.name()));
        let pod = routed.and_then(|t| t.pod.clone());
        let record = match shared.direction {
            Direction::Outbound => {
                let authority = match routed {
                    Some(t) => Arc::clone(&t.authority),
                    None => crate::route::destination(&req)
                        .map_or_else(|| Arc::from(""), |(h, p)| interned.authorities.get(h, p)),
                };
                let sent = Sent(Arc::new(SentInner {
                    shared: Arc::clone(shared),
                    labels: RequestLabels {
                        authority: Some(authority),
                        route,
                        policy_route,
                        pod,
                    },
                    counted: AtomicBool::new(false),
                    to: Mutex::new(None),
                }));
                crate::dispatch::Dispatch::get_mut(req.extensions_mut()).sent = Some(sent.clone());
                Record::Sent(sent)
            }
            // The Host is the client's choice: inbound series are keyed by where the request
            // arrived and what admitted it. All of it is known now, so the request is
            // counted now.
            Direction::Inbound => {
                let ext = req.extensions();
                let series = shared.series(SeriesKey {
                    authority: None,
                    route,
                    peer: ClientInfo::of(ext)
                        .and_then(|c| c.identity.as_ref())
                        .map(|id| interned.identity(id)),
                    target: inbound_target(&req),
                    backend: None,
                    pod,
                    server: Authorized::of(ext).map(|a| interned.server(a)),
                });
                series.request();
                Record::Known {
                    series,
                    policy_route,
                }
            }
        };
        ResponseFuture {
            start: Instant::now(),
            record: Some(record),
            tap,
            inner: self.inner.call(req),
        }
    }
}

/// Where an inbound request arrived: its [`TargetAddr`], else its port.
fn inbound_target<B>(req: &Request<B>) -> Option<SocketAddr> {
    let ext = req.extensions();
    TargetAddr::of(ext).map(|t| t.0).or_else(|| {
        Accepted::target_of(ext).map(|t| SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), t.port))
    })
}

// === impl Sent ===

impl Sent {
    /// Counts the request as sent to `endpoint` of `backend` (the labels `request_total` has
    /// carried since before this count moved here); later attempts are not counted again.
    /// Each attempt records; the response is labelled with the last one's destination.
    pub fn record(&self, endpoint: Option<&Endpoint>, backend: Option<&BackendRef>) {
        let series = self.series(endpoint, backend);
        if !self.0.counted.swap(true, Ordering::Relaxed) {
            series.request();
        }
        *self.0.to.lock() = Some(SentTo {
            endpoint: endpoint.cloned(),
            backend: backend.map(|b| self.0.shared.interned.backend(b)),
            series,
        });
    }

    fn series(&self, endpoint: Option<&Endpoint>, backend: Option<&BackendRef>) -> Arc<Series> {
        let SentInner { shared, labels, .. } = &*self.0;
        let interned = &shared.interned;
        shared.series(SeriesKey {
            authority: labels.authority.clone(),
            route: labels.route.clone(),
            peer: endpoint
                .and_then(|e| e.identity.as_ref())
                .map(|id| interned.identity(id)),
            target: endpoint.map(|e| e.addr),
            backend: backend.map(|b| interned.backend(b)),
            pod: labels.pod.clone(),
            server: None,
        })
    }

    /// The series of a response (or error) that arrived: counts the request if nothing below
    /// did (a filter answered, or no endpoint could be chosen).
    fn responded(&self, endpoint: Option<&Endpoint>, backend: Option<&BackendRef>) -> Arc<Series> {
        let series = self.series(endpoint, backend);
        if !self.0.counted.swap(true, Ordering::Relaxed) {
            series.request();
        }
        series
    }
}

// === impl Record ===

impl Record {
    /// The series of a response that arrived (`answered`), or of an error. An error carries
    /// no destination (as when it was read from the response), whatever an attempt reached,
    /// unless it stands for the destination's answer (`answered`: a backendRef's fault).
    fn series(&self, answered: bool) -> Arc<Series> {
        match self {
            Self::Known { series, .. } => Arc::clone(series),
            Self::Sent(sent) => {
                if answered && let Some(to) = &*sent.0.to.lock() {
                    return Arc::clone(&to.series);
                }
                sent.responded(None, None)
            }
        }
    }

    /// Tells the tap where the response came from.
    fn tap_response(&self, tap: &mut Capture, status: u16) {
        let Self::Sent(sent) = self else {
            return tap.response(status, None, None);
        };
        match &*sent.0.to.lock() {
            Some(to) => tap.response(status, to.endpoint.as_ref(), to.backend.as_deref()),
            None => tap.response(status, None, None),
        }
    }

    fn policy_route(&self) -> Option<&Arc<mesh_core::policy::Route>> {
        match self {
            Self::Known { policy_route, .. } => policy_route.as_ref(),
            Self::Sent(sent) => sent.0.labels.policy_route.as_ref(),
        }
    }
}

// === impl ResponseFuture ===

impl<F, RB, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<RB>, E>>,
    E: Into<BoxError>,
    RB: http_body::Body,
{
    type Output = Result<Response<ResponseBody<RB>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let res = ready!(this.inner.poll(cx)).map_err(Into::into);
        let elapsed_ms = this.start.elapsed().as_secs_f64() * 1000.0;
        let Some(record) = this.record.take() else {
            // Polled after completion: nothing left to record.
            return Poll::Ready(res.map(|rsp| rsp.map(ResponseBody::recorded)));
        };
        let route = record.policy_route().cloned();
        let rsp = match res {
            Ok(rsp) => rsp,
            Err(e) => {
                let status = status_for(&*e).as_u16();
                // A backendRef's fault is that backend's answer: it keeps the destination
                // the filter recorded (a canary's injected failures are the canary's).
                let injected = crate::is_caused_by::<crate::errors::FaultAborted>(&*e)
                    || crate::is_caused_by::<crate::errors::UnresolvedFilter>(&*e);
                let series = record.series(injected).status(status);
                series.latency(elapsed_ms);
                let outcome = Outcome::answered(status, route.as_deref(), &*e);
                series.respond(outcome);
                if let Some(mut tap) = this.tap.take() {
                    tap.response(status, None, None);
                    outcome.tap(tap);
                }
                return Poll::Ready(Err(e));
            }
        };
        let status = rsp.status().as_u16();
        let series = record.series(true).status(status);
        series.latency(elapsed_ms);
        let mut tap = this.tap.take();
        if let Some(t) = &mut tap {
            record.tap_response(t, status);
        }
        let pending = Pending::new(series, Eos::new(status, rsp.headers(), route), tap);
        Poll::Ready(Ok(if rsp.body().is_end_stream() {
            // Nothing will follow (a trailers-only or empty response): decided now.
            pending.end(None);
            rsp.map(ResponseBody::recorded)
        } else {
            rsp.map(|b| ResponseBody::pending(b, pending))
        }))
    }
}

#[cfg(test)]
mod tests {
    use tower::ServiceExt;

    use super::*;

    type Empty = http_body_util::Empty<bytes::Bytes>;

    fn ok() -> impl Service<
        Request<()>,
        Response = Response<Empty>,
        Error = BoxError,
        Future = impl Future<Output = Result<Response<Empty>, BoxError>>,
    > + Clone {
        tower::service_fn(|_: Request<()>| async { Ok::<_, BoxError>(Response::new(Empty::new())) })
    }

    fn series(text: &str, name: &str) -> usize {
        text.lines()
            .filter(|l| l.starts_with(&format!("{name}{{")))
            .count()
    }

    #[tokio::test]
    async fn inbound_series_do_not_follow_the_clients_host() {
        let registry = Registry::with_series_limit(5);
        let layer = MetricsLayer::new(registry.clone(), Direction::Inbound);
        for i in 0..200 {
            let mut req = Request::get(format!("http://h{i}.example/{i}"))
                .body(())
                .unwrap();
            Accepted::get_mut(req.extensions_mut()).target_addr =
                Some(TargetAddr(SocketAddr::from(([10, 0, 0, 1], 8080))));
            layer.layer(ok()).oneshot(req).await.unwrap();
        }
        let text = registry.render();
        assert_eq!(series(&text, "request_total"), 1, "{text}");
        assert!(
            text.contains("request_total{direction=\"inbound\",target_addr=\"10.0.0.1:8080\",tls=\"no_identity\",no_tls_reason=\"no_tls_from_remote\"} 200"),
            "{text}"
        );
        assert!(!text.contains(crate::metrics::SERIES_DROPPED), "{text}");
    }

    #[tokio::test]
    async fn outbound_series_past_the_limit_fold_into_other() {
        let registry = Registry::with_series_limit(5);
        let layer = MetricsLayer::new(registry.clone(), Direction::Outbound);
        for i in 0..200 {
            let req = Request::get(format!("http://h{i}.example/"))
                .body(())
                .unwrap();
            layer.layer(ok()).oneshot(req).await.unwrap();
        }
        let text = registry.render();
        assert_eq!(series(&text, "request_total"), 6, "{text}");
        assert_eq!(
            registry.counter_value("request_total", &[("authority", "other")]),
            Some(195),
            "{text}"
        );
        assert!(
            registry.counter_value(
                crate::metrics::SERIES_DROPPED,
                &[("family", "request_total")]
            ) >= Some(195),
            "{text}"
        );
        // The layer's own tables stopped growing with the registry's.
        assert!(layer.shared.series.len() <= 5);
    }
}

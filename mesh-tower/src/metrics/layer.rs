//! The layer that records Linkerd's per-request metrics; see the [module docs](super).

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use http::{Request, Response};
use mesh_core::classify::Class;
use mesh_core::destination::PodEndpoint;
use mesh_core::split::BackendRef;
use mesh_core::{Identity, InboundTarget};
use metrics::{Counter, Histogram, Label};
use pin_project_lite::pin_project;
use tokio::time::Instant;
use tower_layer::Layer;
use tower_service::Service;

use super::server_labels;
use super::{BoundedMap, Direction, Registry};
use crate::BoxError;
use crate::authz::{Authorized, ClientInfo};
use crate::discover::Endpoint;
use crate::errors::status_for;
use crate::route::{Authorities, RouteTarget};
use crate::split::Backend;

/// The address an inbound request arrived at (the connection's original destination), for the
/// `target_addr` label. Without it, inbound series read `0.0.0.0:<port>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TargetAddr(pub SocketAddr);

/// See the [module docs](super).
#[derive(Clone, Debug)]
pub struct MetricsLayer {
    shared: Arc<Shared>,
}

/// See the [module docs](super).
#[derive(Clone, Debug)]
pub struct Metrics<S> {
    inner: S,
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    registry: Registry,
    direction: Direction,
    control_namespace: String,
    series: BoundedMap<SeriesKey, Arc<Series>>,
    interned: Interned,
}

/// Shared copies of the values series keys hold, so that keying a response's series costs no
/// allocation once a value has been seen. Each table is bounded by the registry's series
/// limit, as the series themselves are.
#[derive(Debug)]
struct Interned {
    identities: BoundedMap<Identity, Arc<Identity>>,
    backends: BoundedMap<BackendRef, Arc<BackendRef>>,
    /// Route, Server and policy names.
    names: BoundedMap<Box<str>, Arc<str>>,
    authorities: Authorities,
}

/// Everything a response's labels depend on. Inbound keys hold nothing the client chose but
/// its verified identity; outbound keys hold the destination.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct SeriesKey {
    authority: Option<Arc<str>>,
    route: Option<Arc<str>>,
    peer: Option<Arc<Identity>>,
    target: Option<SocketAddr>,
    backend: Option<Arc<BackendRef>>,
    /// A pod called by its address labels `dst_*` in place of the backend.
    pod: Option<Arc<PodEndpoint>>,
    server: Option<ServerKey>,
    status: u16,
    class: Class,
}

/// The Server (or default policy) and inbound route that admitted a request.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct ServerKey {
    kind: &'static str,
    name: Arc<str>,
    route: Option<(Arc<str>, Arc<str>)>,
}

/// The handles of one label set.
#[derive(Debug)]
struct Series {
    requests: Counter,
    responses: Counter,
    latency: Histogram,
    route: Option<(Counter, Counter, Histogram)>,
}

pin_project! {
    /// Response future of [`Metrics`].
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        shared: Arc<Shared>,
        start: Instant,
        authority: Option<Arc<str>>,
        route: Option<Arc<str>>,
        // The route's response classes decide `classification`.
        policy_route: Option<Arc<mesh_core::policy::Route>>,
        client: Option<Arc<Identity>>,
        server: Option<ServerKey>,
        target: Option<SocketAddr>,
        pod: Option<Arc<PodEndpoint>>,
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
                interned: Interned {
                    identities: BoundedMap::new(limit),
                    backends: BoundedMap::new(limit),
                    names: BoundedMap::new(limit),
                    authorities: Authorities::new(limit),
                },
            }),
        }
    }
}

impl<S> Layer<S> for MetricsLayer {
    type Service = Metrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Metrics {
            inner,
            shared: Arc::clone(&self.shared),
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

// === impl Interned ===

impl Interned {
    fn identity(&self, id: &Identity) -> Arc<Identity> {
        self.identities
            .get_or_insert_with(id, || id.clone(), || Arc::new(id.clone()))
    }

    fn backend(&self, b: &BackendRef) -> Arc<BackendRef> {
        self.backends
            .get_or_insert_with(b, || b.clone(), || Arc::new(b.clone()))
    }

    fn name(&self, name: &str) -> Arc<str> {
        self.names
            .get_or_insert_with(name, || name.into(), || name.into())
    }

    fn server(&self, a: &Authorized) -> ServerKey {
        let (kind, name) = server_labels(a.server.as_deref(), &a.by);
        ServerKey {
            kind,
            name: self.name(name),
            route: a
                .route
                .as_ref()
                .map(|r| (self.name(&r.kind), self.name(&r.name))),
        }
    }
}

// === impl Shared ===

impl Shared {
    fn series(&self, key: SeriesKey) -> Arc<Series> {
        self.series
            .get_or_insert_with(&key, || key.clone(), || Arc::new(self.resolve(&key)))
    }

    /// Builds the label sets of a series; runs once per distinct set while the table has
    /// room (the registry folds what is past its limit).
    fn resolve(&self, k: &SeriesKey) -> Series {
        let r = &self.registry;
        let mut base = vec![Label::new("direction", self.direction.as_str())];
        if let Some(a) = &k.authority {
            base.push(Label::new("authority", a.to_string()));
        }
        if let Some(t) = k.target {
            base.push(Label::new("target_addr", t.to_string()));
        }
        self.tls_labels(k, &mut base);
        match (&k.pod, &k.backend) {
            (Some(p), _) => {
                base.push(Label::new("dst_service", p.service.clone()));
                base.push(Label::new("dst_namespace", p.namespace.clone()));
                if let Some(pod) = &p.pod {
                    base.push(Label::new("dst_pod", pod.clone()));
                }
            }
            // An address the mesh does not know is no Service: `target_addr` says where.
            (None, Some(b)) if b.ip().is_none() => {
                base.push(Label::new("dst_service", b.name.clone()));
                base.push(Label::new("dst_namespace", b.namespace.clone()));
            }
            (None, _) => {}
        }
        if let Some(s) = &k.server {
            base.push(Label::new("srv_kind", s.kind));
            base.push(Label::new("srv_name", s.name.to_string()));
            if let Some((kind, name)) = &s.route {
                base.push(Label::new("route_kind", kind.to_string()));
                base.push(Label::new("route_name", name.to_string()));
            }
        }
        let status = Label::new("status_code", k.status.to_string());
        let class = Label::new("classification", k.class.as_str());
        let mut rsp = base.clone();
        rsp.push(status.clone());
        rsp.push(class.clone());
        let mut lat = base.clone();
        lat.push(status.clone());
        let route = k.route.as_ref().map(|name| {
            let rb = vec![
                Label::new("direction", self.direction.as_str()),
                Label::new("dst", k.authority.as_deref().unwrap_or("").to_owned()),
                Label::new("rt_route", name.to_string()),
            ];
            let mut rr = rb.clone();
            rr.push(status.clone());
            rr.push(class.clone());
            let mut rl = rb.clone();
            rl.push(status.clone());
            (
                r.counter("route_request_total", rb),
                r.counter("route_response_total", rr),
                r.histogram("route_response_latency_ms", rl),
            )
        });
        Series {
            requests: r.counter("request_total", base),
            responses: r.counter("response_total", rsp),
            latency: r.histogram("response_latency_ms", lat),
            route,
        }
    }

    fn tls_labels(&self, k: &SeriesKey, labels: &mut Vec<Label>) {
        let (id_label, no_tls_reason) = match self.direction {
            Direction::Inbound => ("client_id", "no_tls_from_remote"),
            Direction::Outbound => ("server_id", "not_provided_by_service_discovery"),
        };
        match &k.peer {
            Some(id) => {
                labels.push(Label::new("tls", "true"));
                labels.push(Label::new(id_label, id.to_dns(&self.control_namespace)));
            }
            None => {
                labels.push(Label::new("tls", "no_identity"));
                labels.push(Label::new("no_tls_reason", no_tls_reason));
            }
        }
    }
}

impl<S, B, RB> Service<Request<B>> for Metrics<S>
where
    S: Service<Request<B>, Response = Response<RB>>,
    S::Error: Into<BoxError>,
{
    type Response = Response<RB>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let routed = req.extensions().get::<RouteTarget>();
        let interned = &self.shared.interned;
        let (authority, server, target) = match self.shared.direction {
            Direction::Outbound => {
                let authority = match routed {
                    Some(t) => Arc::clone(&t.authority),
                    None => crate::route::destination(&req)
                        .map_or_else(|| Arc::from(""), |(h, p)| interned.authorities.get(h, p)),
                };
                (Some(authority), None, None)
            }
            // The Host is the client's choice: inbound series are keyed by where the request
            // arrived and what admitted it.
            Direction::Inbound => (
                None,
                req.extensions()
                    .get::<Authorized>()
                    .map(|a| interned.server(a)),
                inbound_target(&req),
            ),
        };
        let policy_route = routed.and_then(|t| t.route.clone());
        let pod = routed.and_then(|t| t.pod.clone());
        let route = policy_route.as_ref().map(|r| interned.name(r.name()));
        let client = req
            .extensions()
            .get::<ClientInfo>()
            .and_then(|c| c.identity.as_ref())
            .map(|id| interned.identity(id));
        ResponseFuture {
            shared: Arc::clone(&self.shared),
            start: Instant::now(),
            authority,
            route,
            policy_route,
            client,
            server,
            target,
            pod,
            inner: self.inner.call(req),
        }
    }
}

/// Where an inbound request arrived: its [`TargetAddr`], else its port.
fn inbound_target<B>(req: &Request<B>) -> Option<SocketAddr> {
    let ext = req.extensions();
    ext.get::<TargetAddr>().map(|t| t.0).or_else(|| {
        ext.get::<Arc<InboundTarget>>()
            .map(|t| SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), t.port))
    })
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
        let res = ready!(this.inner.poll(cx)).map_err(Into::into);
        let elapsed_ms = this.start.elapsed().as_secs_f64() * 1000.0;
        let (status, grpc, endpoint, backend) = match &res {
            Ok(rsp) => (
                rsp.status().as_u16(),
                rsp.headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok()),
                rsp.extensions().get::<Endpoint>(),
                rsp.extensions().get::<Backend>().map(|b| &b.0),
            ),
            Err(e) => (status_for(&**e).as_u16(), None, None, None),
        };
        let class = match this.policy_route {
            Some(r) => r.classify(status, grpc),
            None => mesh_core::classify::classify(&[], status, grpc),
        };
        let interned = &this.shared.interned;
        let (peer, target) = match this.shared.direction {
            Direction::Inbound => (this.client.clone(), *this.target),
            Direction::Outbound => (
                endpoint
                    .and_then(|e| e.identity.as_ref())
                    .map(|id| interned.identity(id)),
                endpoint.map(|e| e.addr),
            ),
        };
        let backend = backend.map(|b| interned.backend(b));
        let series = this.shared.series(SeriesKey {
            authority: this.authority.clone(),
            route: this.route.clone(),
            peer,
            target,
            backend,
            pod: this.pod.clone(),
            server: this.server.clone(),
            status,
            class,
        });
        series.requests.increment(1);
        series.responses.increment(1);
        series.latency.record(elapsed_ms);
        if let Some((rq, rs, lat)) = &series.route {
            rq.increment(1);
            rs.increment(1);
            lat.record(elapsed_ms);
        }
        Poll::Ready(res)
    }
}

#[cfg(test)]
mod tests {
    use tower::ServiceExt;

    use super::*;

    fn ok() -> impl Service<
        Request<()>,
        Response = Response<()>,
        Error = BoxError,
        Future = impl Future<Output = Result<Response<()>, BoxError>>,
    > + Clone {
        tower::service_fn(|_: Request<()>| async { Ok::<_, BoxError>(Response::new(())) })
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
            req.extensions_mut()
                .insert(TargetAddr(SocketAddr::from(([10, 0, 0, 1], 8080))));
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

//! Golden metrics with Linkerd's names and labels, through the `metrics` facade.
//!
//! [`Registry`] is a `metrics::Recorder` that keeps counters and gauges as atomics and
//! histograms as real fixed-bucket histograms (Linkerd's latency bounds for `*_latency_ms`), and
//! renders the Prometheus text format. It keeps no raw samples, so memory does not grow with
//! load. Handles are resolved once per label set and cached, so the per-request cost is a hash
//! lookup and a few atomic adds.
//!
//! [`MetricsLayer`] records, per response: `request_total`, `response_total` (with
//! `status_code` and `classification`), `response_latency_ms`; and per route:
//! `route_request_total`, `route_response_total`, `route_response_latency_ms` labelled `dst` and
//! `rt_route`. Labels: `direction`, `authority`, `target_addr`, `tls` (`true`, or `no_identity`
//! with `no_tls_reason`), `server_id` (outbound) / `client_id` (inbound) in Linkerd's DNS form,
//! `dst_service`, `dst_namespace`. Requests are counted when their response (or error) is seen.
//!
//! ```
//! use mesh_tower::metrics::Registry;
//! use metrics::Recorder;
//!
//! let registry = Registry::new();
//! let key = metrics::Key::from_parts("request_total", vec![metrics::Label::new("direction", "inbound")]);
//! let meta = metrics::Metadata::new("mesh", metrics::Level::INFO, None);
//! registry.register_counter(&key, &meta).increment(2);
//! assert!(registry.render().contains("request_total{direction=\"inbound\"} 2"));
//! ```

use std::collections::HashMap;
use std::fmt::Write as _;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};

use http::{Request, Response};
use mesh_core::authz::AuthzDecision;
use mesh_core::classify::Class;
use mesh_core::{Identity, InboundTarget};
use metrics::{
    Counter, CounterFn, Gauge, GaugeFn, Histogram, HistogramFn, Key, KeyName, Label, Metadata,
    Recorder, SharedString, Unit,
};
use parking_lot::RwLock;
use pin_project_lite::pin_project;
use tokio::time::Instant;
use tower_layer::Layer;
use tower_service::Service;

use crate::BoxError;
use crate::authz::ClientInfo;
use crate::discover::Endpoint;
use crate::errors::status_for;
use crate::route::{Authorities, DstPod, RouteTarget};
use crate::split::Backend;
use mesh_core::split::BackendRef;

/// Linkerd's latency histogram bounds, in milliseconds.
pub const LATENCY_BUCKETS_MS: &[f64] = &[
    1.0, 2.0, 3.0, 4.0, 5.0, 10.0, 20.0, 30.0, 40.0, 50.0, 100.0, 200.0, 300.0, 400.0, 500.0,
    1000.0, 2000.0, 3000.0, 4000.0, 5000.0, 10000.0, 20000.0, 30000.0, 40000.0, 50000.0,
];

/// Bounds for other histograms.
pub const DEFAULT_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Which way a request travels through this workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Into the workload.
    Inbound,
    /// Out of the workload.
    Outbound,
}

/// A metrics registry that renders Prometheus text. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct Registry {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    counters: RwLock<HashMap<Key, Arc<CounterCell>>>,
    gauges: RwLock<HashMap<Key, Arc<GaugeCell>>>,
    histograms: RwLock<HashMap<Key, Arc<HistogramCell>>>,
    help: RwLock<HashMap<String, String>>,
    authz: RwLock<AuthzCounters>,
}

/// Authorization counters by (allowed, target port), then by what decided, then by Server, so
/// that counting a decision allocates nothing once its label set has been seen.
type AuthzCounters = HashMap<(bool, u16), HashMap<Box<str>, Vec<(Option<Box<str>>, Counter)>>>;

#[derive(Debug, Default)]
struct CounterCell(AtomicU64);

#[derive(Debug, Default)]
struct GaugeCell(AtomicU64);

#[derive(Debug)]
struct HistogramCell {
    bounds: &'static [f64],
    buckets: Box<[AtomicU64]>,
    count: AtomicU64,
    sum: AtomicU64,
}

// === impl Direction ===

impl Direction {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Inbound => "inbound",
            Self::Outbound => "outbound",
        }
    }
}

// === cells ===

impl CounterFn for CounterCell {
    fn increment(&self, value: u64) {
        self.0.fetch_add(value, Ordering::Relaxed);
    }

    fn absolute(&self, value: u64) {
        self.0.fetch_max(value, Ordering::Relaxed);
    }
}

impl GaugeFn for GaugeCell {
    fn increment(&self, value: f64) {
        self.update(|v| v + value);
    }

    fn decrement(&self, value: f64) {
        self.update(|v| v - value);
    }

    fn set(&self, value: f64) {
        self.0.store(value.to_bits(), Ordering::Relaxed);
    }
}

impl GaugeCell {
    fn update(&self, f: impl Fn(f64) -> f64) {
        let _ = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                Some(f(f64::from_bits(b)).to_bits())
            });
    }

    fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }
}

impl HistogramCell {
    fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            buckets: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum: AtomicU64::new(0f64.to_bits()),
        }
    }
}

impl HistogramFn for HistogramCell {
    fn record(&self, value: f64) {
        // Buckets are not cumulative here; render adds them up.
        if let Some(i) = self.bounds.iter().position(|b| value <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        let _ = self
            .sum
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                Some((f64::from_bits(b) + value).to_bits())
            });
    }
}

// === impl Registry ===

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    fn meta() -> Metadata<'static> {
        Metadata::new("mesh", metrics::Level::INFO, Some(module_path!()))
    }

    /// A counter handle for `name` with `labels`: resolve it once, increment it often.
    pub fn counter(&self, name: &'static str, labels: Vec<Label>) -> Counter {
        self.register_counter(&Key::from_parts(name, labels), &Self::meta())
    }

    /// A gauge handle.
    pub fn gauge(&self, name: &'static str, labels: Vec<Label>) -> Gauge {
        self.register_gauge(&Key::from_parts(name, labels), &Self::meta())
    }

    /// A histogram handle; `*_ms` histograms get Linkerd's latency buckets.
    pub fn histogram(&self, name: &'static str, labels: Vec<Label>) -> Histogram {
        self.register_histogram(&Key::from_parts(name, labels), &Self::meta())
    }

    /// Sets the `# HELP` text of a metric.
    pub fn describe(&self, name: &str, help: &str) {
        self.inner
            .help
            .write()
            .insert(name.to_owned(), help.to_owned());
    }

    /// The current value of a counter, for tests and tools.
    pub fn counter_value(&self, name: &str, labels: &[(&str, &str)]) -> Option<u64> {
        let counters = self.inner.counters.read();
        counters
            .iter()
            .find(|(k, _)| {
                k.name() == name
                    && labels
                        .iter()
                        .all(|(n, v)| k.labels().any(|l| l.key() == *n && l.value() == *v))
            })
            .map(|(_, c)| c.0.load(Ordering::Relaxed))
    }

    /// The sum of a counter over every label set that includes `labels`.
    pub fn counter_sum(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        let counters = self.inner.counters.read();
        counters
            .iter()
            .filter(|(k, _)| {
                k.name() == name
                    && labels
                        .iter()
                        .all(|(n, v)| k.labels().any(|l| l.key() == *n && l.value() == *v))
            })
            .map(|(_, c)| c.0.load(Ordering::Relaxed))
            .sum()
    }

    /// Renders every metric in the Prometheus text format, sorted by name and labels.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let help = self.inner.help.read();
        let header = |out: &mut String, name: &str, kind: &str, last: &mut String| {
            if last != name {
                if let Some(h) = help.get(name) {
                    let _ = writeln!(out, "# HELP {name} {h}");
                }
                let _ = writeln!(out, "# TYPE {name} {kind}");
                *last = name.to_owned();
            }
        };
        let mut last = String::new();
        for (key, value) in sorted(&self.inner.counters.read(), |c| c.0.load(Ordering::Relaxed)) {
            header(&mut out, key.name(), "counter", &mut last);
            let _ = writeln!(out, "{}{} {value}", key.name(), labels(&key, None));
        }
        for (key, value) in sorted(&self.inner.gauges.read(), |g| g.get()) {
            header(&mut out, key.name(), "gauge", &mut last);
            let _ = writeln!(out, "{}{} {value}", key.name(), labels(&key, None));
        }
        let histograms = self.inner.histograms.read();
        let mut hs: Vec<_> = histograms.iter().collect();
        hs.sort_by_key(|a| sort_key(a.0));
        for (key, h) in hs {
            header(&mut out, key.name(), "histogram", &mut last);
            let mut cumulative = 0;
            for (bound, n) in h.bounds.iter().zip(h.buckets.iter()) {
                cumulative += n.load(Ordering::Relaxed);
                let le = format!("{bound}");
                let _ = writeln!(
                    out,
                    "{}_bucket{} {cumulative}",
                    key.name(),
                    labels(key, Some(&le))
                );
            }
            let count = h.count.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "{}_bucket{} {count}",
                key.name(),
                labels(key, Some("+Inf"))
            );
            let _ = writeln!(
                out,
                "{}_sum{} {}",
                key.name(),
                labels(key, None),
                f64::from_bits(h.sum.load(Ordering::Relaxed))
            );
            let _ = writeln!(out, "{}_count{} {count}", key.name(), labels(key, None));
        }
        out
    }

    /// Counts an inbound authorization decision.
    pub fn count_authz(&self, target: &InboundTarget, d: &AuthzDecision) {
        let server = d.server.as_ref().map(|s| s.name.as_str());
        let cached = |m: &AuthzCounters| {
            m.get(&(d.allowed, target.port))?
                .get(d.by.as_str())?
                .iter()
                .find(|(s, _)| s.as_deref() == server)
                .map(|(_, c)| c.clone())
        };
        if let Some(c) = cached(&self.inner.authz.read()) {
            c.increment(1);
            return;
        }
        let (srv_kind, srv_name) = d.server.as_ref().map_or(
            ("default", d.by.trim_start_matches("default:").to_owned()),
            |s| ("server", s.name.clone()),
        );
        let (authz_kind, authz_name) = match d.by.split_once('/') {
            Some((kind, rest)) => (
                kind.to_ascii_lowercase(),
                rest.rsplit('/').next().unwrap_or(rest).to_owned(),
            ),
            None => (
                "default".to_owned(),
                d.by.trim_start_matches("default:").to_owned(),
            ),
        };
        let name = if d.allowed {
            "inbound_http_authz_allow_total"
        } else {
            "inbound_http_authz_deny_total"
        };
        let mut l = vec![
            Label::new("target_port", target.port.to_string()),
            Label::new("srv_kind", srv_kind),
            Label::new("srv_name", srv_name),
        ];
        if d.allowed {
            l.push(Label::new("authz_kind", authz_kind));
            l.push(Label::new("authz_name", authz_name));
        }
        let counter = self.counter(name, l);
        counter.increment(1);
        self.inner
            .authz
            .write()
            .entry((d.allowed, target.port))
            .or_default()
            .entry(d.by.as_str().into())
            .or_default()
            .push((server.map(Into::into), counter));
    }
}

fn sort_key(k: &Key) -> (String, Vec<(String, String)>) {
    (
        k.name().to_owned(),
        k.labels()
            .map(|l| (l.key().to_owned(), l.value().to_owned()))
            .collect(),
    )
}

fn sorted<T, V>(map: &HashMap<Key, Arc<T>>, get: impl Fn(&T) -> V) -> Vec<(Key, V)> {
    let mut v: Vec<_> = map.iter().map(|(k, c)| (k.clone(), get(c))).collect();
    v.sort_by_key(|a| sort_key(&a.0));
    v
}

fn labels(key: &Key, le: Option<&str>) -> String {
    let mut parts: Vec<String> = key
        .labels()
        .map(|l| format!("{}=\"{}\"", l.key(), escape(l.value())))
        .collect();
    if let Some(le) = le {
        parts.push(format!("le=\"{le}\""));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", parts.join(","))
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Recorder for Registry {
    fn describe_counter(&self, key: KeyName, _: Option<Unit>, description: SharedString) {
        self.describe(key.as_str(), &description);
    }

    fn describe_gauge(&self, key: KeyName, _: Option<Unit>, description: SharedString) {
        self.describe(key.as_str(), &description);
    }

    fn describe_histogram(&self, key: KeyName, _: Option<Unit>, description: SharedString) {
        self.describe(key.as_str(), &description);
    }

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        if let Some(c) = self.inner.counters.read().get(key) {
            return Counter::from_arc(Arc::clone(c));
        }
        let c = Arc::clone(self.inner.counters.write().entry(key.clone()).or_default());
        Counter::from_arc(c)
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        if let Some(g) = self.inner.gauges.read().get(key) {
            return Gauge::from_arc(Arc::clone(g));
        }
        let g = Arc::clone(self.inner.gauges.write().entry(key.clone()).or_default());
        Gauge::from_arc(g)
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        if let Some(h) = self.inner.histograms.read().get(key) {
            return Histogram::from_arc(Arc::clone(h));
        }
        let bounds = if key.name().ends_with("_ms") {
            LATENCY_BUCKETS_MS
        } else {
            DEFAULT_BUCKETS
        };
        let h = Arc::clone(
            self.inner
                .histograms
                .write()
                .entry(key.clone())
                .or_insert_with(|| Arc::new(HistogramCell::new(bounds))),
        );
        Histogram::from_arc(h)
    }
}

// === the layer ===

/// See the [module docs](self).
#[derive(Clone, Debug)]
pub struct MetricsLayer {
    shared: Arc<Shared>,
}

/// See the [module docs](self).
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
    series: RwLock<HashMap<SeriesKey, Arc<Series>>>,
    interned: Interned,
}

/// Shared copies of the values series keys hold, so that keying a response's series costs no
/// allocation once a value has been seen. Bounded like the series themselves: by the peers,
/// backends, routes and authorities that occur.
#[derive(Debug, Default)]
struct Interned {
    identities: RwLock<HashMap<Identity, Arc<Identity>>>,
    backends: RwLock<HashMap<BackendRef, Arc<BackendRef>>>,
    routes: RwLock<HashMap<Box<str>, Arc<str>>>,
    authorities: Authorities,
}

/// Everything a response's labels depend on.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct SeriesKey {
    authority: Arc<str>,
    route: Option<Arc<str>>,
    peer: Option<Arc<Identity>>,
    target: Option<std::net::SocketAddr>,
    backend: Option<Arc<BackendRef>>,
    /// A pod called by its address labels `dst_*` in place of the backend.
    pod: Option<Arc<DstPod>>,
    status: u16,
    class: Class,
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
        authority: Arc<str>,
        route: Option<Arc<str>>,
        // The route's response classes decide `classification`.
        policy_route: Option<Arc<mesh_core::policy::Route>>,
        client: Option<Arc<Identity>>,
        pod: Option<Arc<DstPod>>,
    }
}

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
        Self {
            shared: Arc::new(Shared {
                registry,
                direction,
                control_namespace: control_namespace.to_owned(),
                series: RwLock::new(HashMap::new()),
                interned: Interned::default(),
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

impl Interned {
    fn identity(&self, id: &Identity) -> Arc<Identity> {
        if let Some(a) = self.identities.read().get(id) {
            return Arc::clone(a);
        }
        let mut map = self.identities.write();
        Arc::clone(
            map.entry(id.clone())
                .or_insert_with(|| Arc::new(id.clone())),
        )
    }

    fn backend(&self, b: &BackendRef) -> Arc<BackendRef> {
        if let Some(a) = self.backends.read().get(b) {
            return Arc::clone(a);
        }
        let mut map = self.backends.write();
        Arc::clone(map.entry(b.clone()).or_insert_with(|| Arc::new(b.clone())))
    }

    fn route(&self, name: &str) -> Arc<str> {
        if let Some(a) = self.routes.read().get(name) {
            return Arc::clone(a);
        }
        let mut map = self.routes.write();
        Arc::clone(map.entry(name.into()).or_insert_with(|| name.into()))
    }
}

impl Shared {
    fn series(&self, key: SeriesKey) -> Arc<Series> {
        if let Some(s) = self.series.read().get(&key) {
            return Arc::clone(s);
        }
        let s = Arc::new(self.resolve(&key));
        Arc::clone(self.series.write().entry(key).or_insert(s))
    }

    /// Builds the label sets of a series; runs once per distinct set.
    fn resolve(&self, k: &SeriesKey) -> Series {
        let r = &self.registry;
        let mut base = vec![
            Label::new("direction", self.direction.as_str()),
            Label::new("authority", k.authority.to_string()),
        ];
        if let Some(t) = k.target {
            base.push(Label::new("target_addr", t.to_string()));
        }
        let id_label = match self.direction {
            Direction::Inbound => "client_id",
            Direction::Outbound => "server_id",
        };
        match &k.peer {
            Some(id) => {
                base.push(Label::new("tls", "true"));
                base.push(Label::new(id_label, id.to_dns(&self.control_namespace)));
            }
            None => {
                base.push(Label::new("tls", "no_identity"));
                base.push(Label::new(
                    "no_tls_reason",
                    match self.direction {
                        Direction::Inbound => "no_tls_from_remote",
                        Direction::Outbound => "not_provided_by_service_discovery",
                    },
                ));
            }
        }
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
                Label::new("dst", k.authority.to_string()),
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
        let target = req.extensions().get::<RouteTarget>();
        let interned = &self.shared.interned;
        let authority: Arc<str> = match target {
            Some(t) => Arc::clone(&t.authority),
            None => crate::route::destination(&req)
                .map_or_else(|| Arc::from(""), |(h, p)| interned.authorities.get(h, p)),
        };
        let policy_route = target.and_then(|t| t.route.clone());
        let pod = target.and_then(|t| t.pod.clone());
        let route = policy_route.as_ref().map(|r| interned.route(r.name()));
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
            pod,
            inner: self.inner.call(req),
        }
    }
}

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
            Direction::Inbound => (this.client.clone(), None),
            Direction::Outbound => (
                endpoint
                    .and_then(|e| e.identity.as_ref())
                    .map(|id| interned.identity(id)),
                endpoint.map(|e| e.addr),
            ),
        };
        let backend = backend.map(|b| interned.backend(b));
        let series = this.shared.series(SeriesKey {
            authority: Arc::clone(this.authority),
            route: this.route.clone(),
            peer,
            target,
            backend,
            pod: this.pod.clone(),
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
    use super::*;

    #[test]
    fn histograms_render_cumulative_buckets_with_linkerd_bounds() {
        let r = Registry::new();
        let h = r.histogram(
            "response_latency_ms",
            vec![Label::new("direction", "inbound")],
        );
        h.record(0.5);
        h.record(3.0);
        h.record(70_000.0);
        let text = r.render();
        assert!(
            text.contains("# TYPE response_latency_ms histogram"),
            "{text}"
        );
        assert!(
            text.contains("response_latency_ms_bucket{direction=\"inbound\",le=\"1\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("response_latency_ms_bucket{direction=\"inbound\",le=\"3\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("response_latency_ms_bucket{direction=\"inbound\",le=\"50000\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("response_latency_ms_bucket{direction=\"inbound\",le=\"+Inf\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("response_latency_ms_count{direction=\"inbound\"} 3"),
            "{text}"
        );
    }

    #[test]
    fn labels_are_escaped() {
        let r = Registry::new();
        r.counter("x_total", vec![Label::new("a", "q\"uo\\te\n")])
            .increment(1);
        assert!(r.render().contains("x_total{a=\"q\\\"uo\\\\te\\n\"} 1"));
    }
}

//! Load balancing across a backend's endpoints: power of two choices over peak-EWMA latency,
//! skipping endpoints that failure accrual has ejected.
//!
//! The backend comes from the [`Backend`](crate::split::Backend) the split attached;
//! its endpoints from a [`Resolve`], and may change at run time. The chosen endpoint is attached
//! as the [`Endpoint`] of the request's [`Dispatch`](crate::dispatch::Dispatch) for the
//! connecting service below, and reported with the
//! backend to the metrics layer above through the request's
//! [`Sent`](crate::metrics::Sent) handle.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use http::{Request, Response};
use mesh_core::split::BackendRef;
use parking_lot::Mutex;
use pin_project_lite::pin_project;
use tokio::time::Instant;
use tower_layer::Layer;
use tower_service::Service;

use crate::BoxError;
use crate::accrual::{AccrualConfig, FailureAccrual};
use crate::discover::{Endpoint, Endpoints, Resolve};
use crate::dispatch::Dispatch;
use crate::errors::{CircuitOpen, NoEndpoints};
use crate::split::Backend;

/// How fast old latency observations fade (Finagle's and tower's default).
pub const DEFAULT_DECAY: Duration = Duration::from_secs(10);
/// The latency assumed for an endpoint that has not answered yet.
pub const DEFAULT_RTT: Duration = Duration::from_millis(30);

/// See the [module docs](self).
pub struct BalanceLayer<R> {
    shared: Arc<Shared<R>>,
}

/// See the [module docs](self).
pub struct Balance<R, S> {
    inner: S,
    shared: Arc<Shared<R>>,
}

struct Shared<R> {
    resolver: R,
    accrual: AccrualConfig,
    decay: Duration,
    /// Read on every request without a lock; copied and swapped only when a backend is seen
    /// for the first time (under `adding`), so requests to different backends never contend.
    backends: ArcSwap<BackendMap>,
    adding: Mutex<()>,
}

type BackendMap = foldhash::HashMap<BackendRef, Arc<BackendState>>;

/// One backend's endpoints, locked per backend.
struct BackendState {
    inner: Mutex<BackendInner>,
}

struct BackendInner {
    rx: Endpoints,
    endpoints: Vec<Arc<EndpointState>>,
}

/// Load and health of one endpoint.
#[derive(Debug)]
struct EndpointState {
    endpoint: Endpoint,
    pending: AtomicU32,
    stats: Mutex<Stats>,
}

#[derive(Debug)]
struct Stats {
    ewma: PeakEwma,
    accrual: FailureAccrual,
}

/// Peak-EWMA latency: jumps up to a slow observation at once, decays towards faster ones.
#[derive(Clone, Copy, Debug)]
struct PeakEwma {
    cost_ns: f64,
    stamp: Instant,
    decay_ns: f64,
}

pin_project! {
    /// The response future of [`Balance`]: the inner call, then the endpoint's load and
    /// health recorded and where the request went attached to the response.
    pub struct ResponseFuture<F> {
        #[pin]
        state: State<F>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        // No endpoint could be chosen.
        Failed { error: Option<BoxError> },
        Called {
            #[pin]
            call: F,
            in_flight: Option<InFlight>,
        },
    }
}

// === impl BalanceLayer ===

impl<R: Resolve> BalanceLayer<R> {
    /// Balances over the endpoints `resolver` gives, with Linkerd's failure accrual defaults.
    pub fn new(resolver: R) -> Self {
        Self::with_config(resolver, AccrualConfig::default(), DEFAULT_DECAY)
    }

    /// Balances with explicit failure accrual and latency decay settings.
    pub fn with_config(resolver: R, accrual: AccrualConfig, decay: Duration) -> Self {
        Self {
            shared: Arc::new(Shared {
                resolver,
                accrual,
                decay,
                backends: ArcSwap::default(),
                adding: Mutex::new(()),
            }),
        }
    }
}

impl<R> Clone for BalanceLayer<R> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<R> std::fmt::Debug for BalanceLayer<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BalanceLayer").finish_non_exhaustive()
    }
}

impl<R, S> Layer<S> for BalanceLayer<R> {
    type Service = Balance<R, S>;

    fn layer(&self, inner: S) -> Self::Service {
        Balance {
            inner,
            shared: Arc::clone(&self.shared),
        }
    }
}

// === impl Balance ===

impl<R, S: Clone> Clone for Balance<R, S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<R, S: std::fmt::Debug> std::fmt::Debug for Balance<R, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Balance")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<R, S> Balance<R, S> {
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

impl<R: Resolve> Shared<R> {
    /// Chooses an endpoint of `backend` by power of two choices.
    fn choose(&self, backend: &BackendRef, now: Instant) -> Result<Arc<EndpointState>, BoxError> {
        if backend.ip().is_some() {
            return self.address(backend, now);
        }
        let backends = self.backends.load();
        let state = match backends.get(backend) {
            Some(s) => &**s,
            None => &*self.add(backend, now)?,
        };
        self.choose_in(&mut state.inner.lock(), backend, now)
    }

    /// Resolves a backend seen for the first time and publishes its state.
    fn add(&self, backend: &BackendRef, now: Instant) -> Result<Arc<BackendState>, BoxError> {
        let _adding = self.adding.lock();
        if let Some(s) = self.backends.load().get(backend) {
            return Ok(Arc::clone(s));
        }
        let mut rx = self.resolver.resolve(backend).ok_or_else(|| NoEndpoints {
            backend: backend.to_string(),
        })?;
        let list = Arc::clone(&rx.borrow_and_update());
        let endpoints = list
            .iter()
            .map(|e| Arc::new(EndpointState::new(e.clone(), self.accrual, self.decay, now)))
            .collect();
        let state = Arc::new(BackendState {
            inner: Mutex::new(BackendInner { rx, endpoints }),
        });
        let mut map = BackendMap::clone(&self.backends.load());
        map.insert(backend.clone(), Arc::clone(&state));
        self.backends.store(Arc::new(map));
        Ok(state)
    }

    fn choose_in(
        &self,
        state: &mut BackendInner,
        backend: &BackendRef,
        now: Instant,
    ) -> Result<Arc<EndpointState>, BoxError> {
        // A closed source keeps its last endpoints.
        if state.rx.has_changed().unwrap_or(false) {
            let list = Arc::clone(&state.rx.borrow_and_update());
            // Keep the load and health of endpoints that stay.
            let old = std::mem::take(&mut state.endpoints);
            state.endpoints = list
                .iter()
                .map(|e| {
                    old.iter()
                        .find(|o| o.endpoint == *e)
                        .cloned()
                        .unwrap_or_else(|| {
                            Arc::new(EndpointState::new(e.clone(), self.accrual, self.decay, now))
                        })
                })
                .collect();
        }
        let eps = &state.endpoints;
        if eps.is_empty() {
            return Err(NoEndpoints {
                backend: backend.to_string(),
            }
            .into());
        }
        let cost = |e: &EndpointState| {
            let pending = e.pending.load(Ordering::Relaxed);
            e.stats.lock().ewma.cost(now) * f64::from(pending + 1)
        };
        let available = |e: &EndpointState| !e.stats.lock().accrual.is_ejected(now);
        let pick = match eps.len() {
            1 => 0,
            n => {
                let a = fastrand::usize(..n);
                let mut b = fastrand::usize(..n - 1);
                if b >= a {
                    b += 1;
                }
                match (available(&eps[a]), available(&eps[b])) {
                    (true, true) => {
                        if cost(&eps[a]) <= cost(&eps[b]) {
                            a
                        } else {
                            b
                        }
                    }
                    (true, false) => a,
                    (false, true) => b,
                    // Both out: look for any endpoint that is in, or due for its probe.
                    (false, false) => eps
                        .iter()
                        .position(|e| e.stats.lock().accrual.try_acquire(now))
                        .unwrap_or(a),
                }
            }
        };
        let chosen = &eps[pick];
        if !chosen.stats.lock().accrual.try_acquire(now) {
            return Err(CircuitOpen {
                backend: backend.to_string(),
            }
            .into());
        }
        Ok(Arc::clone(chosen))
    }
}

impl<R: Resolve> Shared<R> {
    /// A backend that is an address (a pod by its IP, a destination the mesh does not know)
    /// is its own one endpoint: nothing to balance, and no state kept. Kept, its state would
    /// grow with every address an application calls, and failure accrual would answer
    /// "circuit open" for a server that is not the mesh's to judge.
    fn address(&self, backend: &BackendRef, now: Instant) -> Result<Arc<EndpointState>, BoxError> {
        let none = || NoEndpoints {
            backend: backend.to_string(),
        };
        let rx = self.resolver.resolve(backend).ok_or_else(none)?;
        let ep = rx.borrow().first().cloned().ok_or_else(none)?;
        Ok(Arc::new(EndpointState::new(
            ep,
            self.accrual,
            self.decay,
            now,
        )))
    }
}

// === impl EndpointState ===

impl EndpointState {
    fn new(endpoint: Endpoint, accrual: AccrualConfig, decay: Duration, now: Instant) -> Self {
        Self {
            endpoint,
            pending: AtomicU32::new(0),
            stats: Mutex::new(Stats {
                ewma: PeakEwma {
                    cost_ns: DEFAULT_RTT.as_nanos() as f64,
                    stamp: now,
                    decay_ns: decay.as_nanos().max(1) as f64,
                },
                accrual: FailureAccrual::new(accrual),
            }),
        }
    }

    fn record(&self, rtt: Duration, success: bool, now: Instant) {
        let mut s = self.stats.lock();
        s.ewma.observe(rtt, now);
        s.accrual.record(now, success, fastrand::f64());
    }
}

/// One request in flight to an endpoint: counted as pending until it ends, and recorded
/// however it ends.
struct InFlight {
    ep: Arc<EndpointState>,
    start: Instant,
    done: bool,
}

impl InFlight {
    /// `start` is the clock read that chose the endpoint: one read per request at each end.
    fn new(ep: Arc<EndpointState>, start: Instant) -> Self {
        ep.pending.fetch_add(1, Ordering::Relaxed);
        Self {
            ep,
            start,
            done: false,
        }
    }

    fn finish(mut self, success: bool) {
        self.done = true;
        self.end(success);
    }

    fn end(&self, success: bool) {
        let now = Instant::now();
        let rtt = now.saturating_duration_since(self.start);
        self.ep.record(rtt, success, now);
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.ep.pending.fetch_sub(1, Ordering::Relaxed);
        if !self.done {
            // The caller gave up before the endpoint answered (a timeout above, a client that
            // went away). Count it as a failure: otherwise an abandoned probe would leave the
            // endpoint ejected for good, and an endpoint that never answers would never be.
            self.end(false);
        }
    }
}

// === impl PeakEwma ===

impl PeakEwma {
    fn observe(&mut self, rtt: Duration, now: Instant) {
        let rtt = rtt.as_nanos() as f64;
        if rtt > self.cost_ns {
            self.cost_ns = rtt;
        } else {
            let elapsed = now.saturating_duration_since(self.stamp).as_nanos() as f64;
            let w = (-elapsed / self.decay_ns).exp();
            self.cost_ns = self.cost_ns * w + rtt * (1.0 - w);
        }
        self.stamp = now;
    }

    /// The estimate decays towards zero while the endpoint is not observed (as tower's
    /// peak-EWMA does), so that an endpoint that was slow once is tried again: with two
    /// endpoints, power of two choices compares both on every request, and a stale high cost
    /// would keep one out of rotation for good.
    fn cost(&self, now: Instant) -> f64 {
        let idle = now.saturating_duration_since(self.stamp).as_nanos() as f64;
        self.cost_ns * (-idle / self.decay_ns).exp()
    }
}

impl<R, S, B, RB> Service<Request<B>> for Balance<R, S>
where
    R: Resolve,
    S: Service<Request<B>, Response = Response<RB>>,
    S::Error: Into<BoxError>,
{
    type Response = Response<RB>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let dispatch = Dispatch::get_mut(req.extensions_mut());
        // Nothing below needs the backend; metrics above learn it through `Sent`.
        let backend = dispatch.backend.take();
        let now = Instant::now();
        let chosen = match &backend {
            Some(Backend(b)) => self.shared.choose(b, now),
            None => Err("balance: no backend was chosen for the request".into()),
        };
        // In flight from here: choosing may have taken the endpoint's probe, and a future
        // dropped unpolled must still give it back.
        let in_flight = match chosen {
            Ok(ep) => InFlight::new(ep, now),
            Err(e) => return ResponseFuture::failed(e),
        };
        let endpoint = &in_flight.ep.endpoint;
        dispatch.endpoint = Some(endpoint.clone());
        // Sent from here: the metrics above count the request with where it went, and label
        // its response so (the response itself carries nothing: no extension map to make).
        if let Some(sent) = &dispatch.sent {
            sent.record(Some(endpoint), backend.as_ref().map(|b| &b.0));
        }
        ResponseFuture {
            state: State::Called {
                call: self.inner.call(req),
                in_flight: Some(in_flight),
            },
        }
    }
}

// === impl ResponseFuture ===

impl<F> ResponseFuture<F> {
    fn failed(error: BoxError) -> Self {
        Self {
            state: State::Failed { error: Some(error) },
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
        match self.project().state.project() {
            StateProj::Failed { error } => Poll::Ready(Err(error
                .take()
                .unwrap_or_else(|| "balance: polled after completion".into()))),
            StateProj::Called { call, in_flight } => {
                let res = std::task::ready!(call.poll(cx)).map_err(Into::into);
                let Some(in_flight) = in_flight.take() else {
                    return Poll::Ready(Err("balance: polled after completion".into()));
                };
                let ok = matches!(&res, Ok(rsp) if !rsp.status().is_server_error());
                in_flight.finish(ok);
                Poll::Ready(res)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discover::StaticResolver;

    fn backend() -> BackendRef {
        BackendRef::new("web", "ns", Some(80))
    }

    #[tokio::test(start_paused = true)]
    async fn p2c_prefers_the_faster_endpoint() {
        let r = StaticResolver::new().with(
            "web.ns",
            vec![
                Endpoint::new("10.0.0.1:80".parse().unwrap()),
                Endpoint::new("10.0.0.2:80".parse().unwrap()),
            ],
        );
        let layer = BalanceLayer::new(r);
        let shared = &layer.shared;
        let first = shared.choose(&backend(), Instant::now()).unwrap();
        // Make the first endpoint slow.
        let slow = first.endpoint.addr;
        first.record(Duration::from_millis(500), true, Instant::now());
        for _ in 0..50 {
            let e = shared.choose(&backend(), Instant::now()).unwrap();
            assert_ne!(e.endpoint.addr, slow);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_address_is_its_own_endpoint_and_keeps_no_state() {
        let layer = BalanceLayer::new(StaticResolver::new());
        let addr = BackendRef::new("10.9.0.1", "", Some(8080));
        for _ in 0..20 {
            let e = layer.shared.choose(&addr, Instant::now()).unwrap();
            assert_eq!(e.endpoint.addr, "10.9.0.1:8080".parse().unwrap());
            // Failures of a server the mesh does not know never open a circuit.
            e.record(Duration::from_millis(1), false, Instant::now());
        }
        assert!(layer.shared.backends.load().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn ejected_endpoints_are_skipped_and_all_ejected_is_circuit_open() {
        let r = StaticResolver::new().with(
            "web.ns",
            vec![
                Endpoint::new("10.0.0.1:80".parse().unwrap()),
                Endpoint::new("10.0.0.2:80".parse().unwrap()),
            ],
        );
        let layer = BalanceLayer::new(r.clone());
        let eps: Vec<_> = {
            let _ = layer.shared.choose(&backend(), Instant::now()).unwrap();
            let map = layer.shared.backends.load();
            map[&backend()].inner.lock().endpoints.clone()
        };
        for _ in 0..7 {
            eps[0].record(Duration::from_millis(1), false, Instant::now());
        }
        for _ in 0..20 {
            assert_eq!(
                layer
                    .shared
                    .choose(&backend(), Instant::now())
                    .unwrap()
                    .endpoint
                    .addr,
                eps[1].endpoint.addr
            );
        }
        for _ in 0..7 {
            eps[1].record(Duration::from_millis(1), false, Instant::now());
        }
        let err = layer.shared.choose(&backend(), Instant::now()).unwrap_err();
        assert!(crate::errors::is_caused_by::<CircuitOpen>(&*err), "{err}");
        // A minute later both are due a probe.
        tokio::time::advance(Duration::from_secs(61)).await;
        assert!(layer.shared.choose(&backend(), Instant::now()).is_ok());
        // Endpoint sets change at run time.
        r.set("web.ns", vec![]);
        let err = layer.shared.choose(&backend(), Instant::now()).unwrap_err();
        assert!(crate::errors::is_caused_by::<NoEndpoints>(&*err), "{err}");
    }
}

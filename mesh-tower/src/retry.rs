//! Retries, where the policy allows them, within a budget.
//!
//! A request is retried only when its route has a retry policy, the method is idempotent (or
//! the route names the non-idempotent method explicitly), the response meets a retry condition,
//! the per-request limit is not reached, and the route's retry budget has a retry to spend —
//! so retries never add more than `retry_ratio` of the load plus a small floor, even when every
//! backend fails. Bodies are buffered for replay up to a bound (64 KiB by default); larger
//! bodies, or bodies that are still streaming past the bound, are sent once and not retried.
//!
//! Each attempt is bounded by the route's backend-request timeout (`timeouts.backendRequest`,
//! `timeout.linkerd.io/response`) and the per-retry timeout (`retry.linkerd.io/timeout`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use mesh_core::authz::ResourceId;
use mesh_core::policy::Route as PolicyRoute;
use mesh_core::retry::{RetryBudget, RetryBudgetConfig};
use parking_lot::Mutex;
use pin_project_lite::pin_project;
use tower::ServiceExt;
use tower_layer::Layer;
use tower_service::Service;

use crate::BoxError;
use crate::body::ReplayBody;
use crate::errors::BackendTimeout;
use crate::route::RouteTarget;

/// The default bound on a body buffered for retries.
pub const DEFAULT_BUFFER_LIMIT: usize = 64 * 1024;

/// See the [module docs](self).
#[derive(Clone, Debug)]
pub struct RetryLayer {
    budgets: Arc<Budgets>,
    buffer_limit: usize,
}

/// See the [module docs](self).
#[derive(Clone, Debug)]
pub struct Retry<S> {
    inner: S,
    budgets: Arc<Budgets>,
    buffer_limit: usize,
}

/// Retry budgets, one per route, shared by every clone of a layer.
#[derive(Debug)]
pub struct Budgets {
    epoch: tokio::time::Instant,
    /// Read without a lock; copied and swapped only when a route is first seen (under
    /// `adding`). Each budget has its own lock, so routes never contend with each other.
    by_route: ArcSwap<RouteBudgets>,
    adding: Mutex<()>,
}

/// One route's budget.
type Budget = Arc<Mutex<RetryBudget>>;

/// Budgets looked up by reference, so that a request finds its route's budget without
/// building a key: routes from a resource by the resource and rule, default routes by
/// authority.
#[derive(Clone, Debug, Default)]
struct RouteBudgets {
    by_rule: foldhash::HashMap<ResourceId, foldhash::HashMap<usize, Budget>>,
    by_authority: foldhash::HashMap<Box<str>, Budget>,
}

/// Which budget a request draws on; prints as `Kind/namespace/name#rule` or
/// `default/host:port`.
#[derive(Clone, Copy, Debug)]
enum BudgetKey<'a> {
    Rule(&'a ResourceId, usize),
    Default(&'a str),
}

pin_project! {
    /// The response future of [`Retry`]: the inner call itself when no retry can happen,
    /// else the boxed retry loop (which owns a clone of the inner service and the buffered
    /// body).
    pub struct ResponseFuture<F, T> {
        #[pin]
        kind: Kind<F, T>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, T> {
        Once { #[pin] call: F },
        Timed { #[pin] call: tokio::time::Timeout<F>, timeout: Duration },
        Retrying { fut: Pin<Box<dyn Future<Output = Result<T, BoxError>> + Send>> },
    }
}

// === impl RetryLayer ===

impl RetryLayer {
    /// Retries with a 64 KiB replay buffer.
    pub fn new() -> Self {
        Self {
            budgets: Arc::new(Budgets::new()),
            buffer_limit: DEFAULT_BUFFER_LIMIT,
        }
    }

    /// Sets the bound on buffered request bodies.
    #[must_use]
    pub fn buffer_limit(mut self, bytes: usize) -> Self {
        self.buffer_limit = bytes;
        self
    }

    /// The budgets this layer's services share.
    pub fn budgets(&self) -> &Arc<Budgets> {
        &self.budgets
    }
}

impl Default for RetryLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl<S> Layer<S> for RetryLayer {
    type Service = Retry<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Retry {
            inner,
            budgets: Arc::clone(&self.budgets),
            buffer_limit: self.buffer_limit,
        }
    }
}

// === impl Budgets ===

impl Budgets {
    fn new() -> Self {
        Self {
            epoch: tokio::time::Instant::now(),
            by_route: ArcSwap::default(),
            adding: Mutex::new(()),
        }
    }

    fn now(&self) -> Duration {
        tokio::time::Instant::now().saturating_duration_since(self.epoch)
    }

    fn with<T>(
        &self,
        key: BudgetKey<'_>,
        cfg: RetryBudgetConfig,
        f: impl FnOnce(&mut RetryBudget, Duration) -> T,
    ) -> T {
        self.apply(&self.budget(key, cfg), f)
    }

    /// Runs `f` on a budget resolved by [`Budgets::budget`], at the current time.
    fn apply<T>(&self, budget: &Budget, f: impl FnOnce(&mut RetryBudget, Duration) -> T) -> T {
        let now = self.now();
        f(&mut budget.lock(), now)
    }

    /// The budget of `key`, made with `cfg` the first time the route is seen.
    fn budget(&self, key: BudgetKey<'_>, cfg: RetryBudgetConfig) -> Budget {
        if let Some(b) = self.by_route.load().get(key) {
            return b;
        }
        let _adding = self.adding.lock();
        let mut map = RouteBudgets::clone(&self.by_route.load());
        let budget = || Arc::new(Mutex::new(RetryBudget::new(cfg)));
        let b = match key {
            BudgetKey::Rule(id, rule) => (map.by_rule.entry(id.clone()).or_default())
                .entry(rule)
                .or_insert_with(budget),
            BudgetKey::Default(authority) => {
                (map.by_authority.entry(authority.into())).or_insert_with(budget)
            }
        }
        .clone();
        self.by_route.store(Arc::new(map));
        b
    }

    /// Retries the budget of a route would allow now. `key` is `Kind/namespace/name#rule` for
    /// a route from a resource, `default/host:port` for a Service's default route.
    pub fn available(&self, key: &str, cfg: RetryBudgetConfig) -> u64 {
        let parsed = key
            .strip_prefix("default/")
            .map(|a| (None, a, 0))
            .or_else(|| {
                let (id, rule) = key.rsplit_once('#')?;
                let mut parts = id.splitn(3, '/');
                let id = ResourceId {
                    kind: parts.next()?.to_owned(),
                    namespace: parts.next()?.to_owned(),
                    name: parts.next()?.to_owned(),
                };
                Some((Some(id), "", rule.parse().ok()?))
            });
        match parsed {
            Some((Some(id), _, rule)) => {
                self.with(BudgetKey::Rule(&id, rule), cfg, |b, now| b.available(now))
            }
            Some((None, authority, _)) => {
                self.with(BudgetKey::Default(authority), cfg, |b, now| {
                    b.available(now)
                })
            }
            // A key no route could have: a budget nobody has drawn on yet.
            None => RetryBudget::new(cfg).available(Duration::ZERO),
        }
    }
}

// === impl RouteBudgets ===

impl RouteBudgets {
    fn get(&self, key: BudgetKey<'_>) -> Option<Budget> {
        match key {
            BudgetKey::Rule(id, rule) => self.by_rule.get(id)?.get(&rule).cloned(),
            BudgetKey::Default(authority) => self.by_authority.get(authority).cloned(),
        }
    }
}

/// The budget of a route: its resource and rule, or its authority for a default route.
fn budget_key<'a>(route: &'a PolicyRoute, authority: &'a str) -> BudgetKey<'a> {
    match route.source() {
        Some(s) => BudgetKey::Rule(s, route.rule().unwrap_or(0)),
        None => BudgetKey::Default(authority),
    }
}

impl std::fmt::Display for BudgetKey<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Rule(id, rule) => write!(f, "{id}#{rule}"),
            Self::Default(authority) => write!(f, "default/{authority}"),
        }
    }
}

// === impl Retry ===

impl<S> Retry<S> {
    /// Wraps `inner` with a fresh set of budgets.
    pub fn new(inner: S) -> Self {
        RetryLayer::new().layer(inner)
    }

    /// The layer.
    pub fn layer() -> RetryLayer {
        RetryLayer::new()
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

async fn attempt<S, B, RB>(
    svc: &mut S,
    req: Request<ReplayBody<B>>,
    timeout: Option<Duration>,
) -> Result<Response<RB>, BoxError>
where
    S: Service<Request<ReplayBody<B>>, Response = Response<RB>>,
    S::Error: Into<BoxError>,
{
    let call = svc.ready().await.map_err(Into::into)?.call(req);
    match timeout {
        None => call.await.map_err(Into::into),
        Some(t) => match tokio::time::timeout(t, call).await {
            Ok(r) => r.map_err(Into::into),
            Err(_) => Err(BackendTimeout(t).into()),
        },
    }
}

/// What a request's route allows: one attempt (bounded by the backend-request timeout, if
/// any), or retries under a policy.
enum Plan {
    Once(Option<Duration>),
    Retry(RouteTarget, Arc<PolicyRoute>),
}

impl Plan {
    fn of<B>(req: &Request<B>) -> Self {
        let Some(target) = RouteTarget::of(req.extensions()) else {
            return Self::Once(None);
        };
        let Some(route) = &target.route else {
            return Self::Once(None);
        };
        let may_retry = route
            .retry()
            .is_some_and(|p| p.limit > 0 && p.method_allowed(req.method().as_str()));
        if may_retry {
            Self::Retry(target.clone(), Arc::clone(route))
        } else {
            Self::Once(route.timeouts().backend_request)
        }
    }
}

impl<S, B, RB> Service<Request<B>> for Retry<S>
where
    S: Service<Request<ReplayBody<B>>, Response = Response<RB>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
    RB: Send + 'static,
{
    type Response = Response<RB>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, Response<RB>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let (target, route) = match Plan::of(&req) {
            // No retry can happen: the inner service, made ready, is called directly, and
            // nothing is boxed, cloned or buffered.
            Plan::Once(timeout) => {
                let call = self.inner.call(req.map(ReplayBody::stream));
                return ResponseFuture::once(call, timeout);
            }
            Plan::Retry(target, route) => (target, route),
        };
        // Take the service that was made ready; leave a clone for the next request.
        let clone = self.inner.clone();
        let svc = std::mem::replace(&mut self.inner, clone);
        let budgets = Arc::clone(&self.budgets);
        let limit = self.buffer_limit;
        ResponseFuture::retrying(Box::pin(retrying(svc, req, target, route, budgets, limit)))
    }
}

/// Sends `req` and retries it as its route's policy and budget allow.
async fn retrying<S, B, RB>(
    mut svc: S,
    req: Request<B>,
    target: RouteTarget,
    route: Arc<PolicyRoute>,
    budgets: Arc<Budgets>,
    limit: usize,
) -> Result<Response<RB>, BoxError>
where
    S: Service<Request<ReplayBody<B>>, Response = Response<RB>>,
    S::Error: Into<BoxError>,
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    let Some(policy) = route.retry() else {
        // Unreachable: `Plan::of` chose this path because the route has a policy.
        return Err("retry: the route has no retry policy".into());
    };
    let backend_timeout = route.timeouts().backend_request;
    let per_try = match (backend_timeout, policy.per_try_timeout) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let (parts, body) = req.into_parts();
    let body = ReplayBody::buffer(body, limit).await?;
    let key = budget_key(&route, &target.authority);
    // Resolved once per request: each attempt draws on it without a lookup.
    let budget = budgets.budget(key, policy.budget);
    budgets.apply(&budget, |b, now| b.deposit(now));

    let mut body = Some(body);
    let mut retries = 0u32;
    loop {
        let Some(current) = body.take() else {
            // Unreachable: the loop only continues with a replayable body.
            return Err("retry: no body left to send".into());
        };
        let next = current.try_clone();
        let req = Request::from_parts(parts.clone(), current);
        let result = attempt(&mut svc, req, per_try).await;
        let retryable = match &result {
            Ok(rsp) => {
                let grpc = crate::metrics::grpc_status(rsp.headers());
                let status = rsp.status().as_u16();
                let class = route.classify(status, grpc);
                policy.is_retryable(parts.method.as_str(), status, grpc, class)
            }
            // The request may not have reached the application: connect failures,
            // unavailable endpoints and attempt timeouts are worth another try.
            Err(_) => true,
        };
        if !retryable || retries >= policy.limit || next.is_none() {
            return result;
        }
        if !budgets.apply(&budget, |b, now| b.withdraw(now)) {
            tracing::debug!(route = %key, "retry budget exhausted; not retrying");
            return result;
        }
        retries += 1;
        tracing::debug!(route = %key, retries, "retrying");
        drop(result);
        body = next;
    }
}

// === impl ResponseFuture ===

impl<F: Future, T> ResponseFuture<F, T> {
    fn once(call: F, timeout: Option<Duration>) -> Self {
        let kind = match timeout {
            None => Kind::Once { call },
            Some(t) => Kind::Timed {
                call: tokio::time::timeout(t, call),
                timeout: t,
            },
        };
        Self { kind }
    }

    fn retrying(fut: Pin<Box<dyn Future<Output = Result<T, BoxError>> + Send>>) -> Self {
        Self {
            kind: Kind::Retrying { fut },
        }
    }
}

impl<F, T, E> Future for ResponseFuture<F, T>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Once { call } => call.poll(cx).map_err(Into::into),
            KindProj::Timed { call, timeout } => match std::task::ready!(call.poll(cx)) {
                Ok(r) => Poll::Ready(r.map_err(Into::into)),
                Err(_) => Poll::Ready(Err(BackendTimeout(*timeout).into())),
            },
            KindProj::Retrying { fut } => fut.as_mut().poll(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn available_reads_a_budget_by_its_printed_key() {
        let budgets = Budgets::new();
        let cfg = RetryBudgetConfig::default();
        let id = ResourceId {
            kind: "HTTPRoute".into(),
            namespace: "shop".into(),
            name: "web".into(),
        };
        let key = BudgetKey::Rule(&id, 1);
        assert_eq!(key.to_string(), "HTTPRoute/shop/web#1");
        for _ in 0..50 {
            budgets.with(key, cfg, |b, now| b.deposit(now));
        }
        assert_eq!(budgets.available("HTTPRoute/shop/web#1", cfg), 110);
        assert_eq!(budgets.available("HTTPRoute/shop/web#0", cfg), 100);
        assert!(
            budgets.with(BudgetKey::Default("web.shop:80"), cfg, |b, now| b
                .withdraw(now))
        );
        assert_eq!(budgets.available("default/web.shop:80", cfg), 99);
        assert_eq!(budgets.available("nonsense", cfg), 100);
    }
}

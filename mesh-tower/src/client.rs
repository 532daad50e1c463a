//! The in-process mesh client: a Rust service's outbound requests get routing, traffic split,
//! retries with a budget, timeouts, load balancing with failure accrual, metrics, trace
//! propagation and mTLS to the destination's expected identity — with no sidecar.
//!
//! Requests are addressed by name as in Kubernetes: `http://web/` is `web` in the namespace
//! given to [`MeshClientBuilder::namespace`] (`default` unless set), `http://web.shop/` and
//! `http://web.shop.svc.cluster.local/` are `web` in `shop`.
//!
//! In a cluster, policy and endpoints come from `mesh controller` instead: see
//! [`MeshClientBuilder::controller`].
//!
//! ```no_run
//! use mesh_tower::{client::MeshClient, discover::{Endpoint, StaticResolver}, PolicyHandle};
//! use http_body_util::Empty;
//!
//! # async fn run(tls: rustls::ClientConfig, id: mesh_core::Identity) -> Result<(), Box<dyn std::error::Error>> {
//! let resolver = StaticResolver::new()
//!     .with("web-svc.emojivoto", vec![Endpoint::meshed("10.0.0.7:8080".parse()?, id)]);
//! let client = MeshClient::builder(PolicyHandle::from_yaml("")?, resolver).mtls(tls).build();
//! let rsp = client.request(http::Request::get("http://web-svc.emojivoto/api/list").body(Empty::new())?).await;
//! println!("{}", rsp.status());
//! # Ok(()) }
//! ```

use std::convert::Infallible;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use hyper::body::Incoming;
use mesh_core::NameContext;
use tower::ServiceExt;
use tower::util::BoxCloneSyncService;
use tower_layer::Layer;
use tower_service::Service;

use crate::BoxError;
use crate::accrual::AccrualConfig;
use crate::balance::{BalanceLayer, DEFAULT_DECAY};
use crate::body::{ReplayBody, ResponseBody};
use crate::connect::Connect;
use crate::controller::{ControllerClient, EnsureLayer};
use crate::discover::Resolve;
use crate::errors::RespondLayer;
use crate::filter::{BackendFilterLayer, FilterBody, FilterLayer};
use crate::listeners::{OwnListeners, RefuseOwnLayer};
use crate::metrics::{Direction, MetricsLayer, Registry};
use crate::policy::PolicyHandle;
use crate::pool::{PoolConfig, PoolMetrics};
use crate::retry::RetryLayer;
use crate::route::RouteLayer;
use crate::split::SplitLayer;
use crate::timeout::TimeoutLayer;
use crate::trace::TraceLayer;

/// The response of a [`MeshClient`]: the destination's, or the mesh's own error response.
pub type MeshResponse = Response<ResponseBody<crate::metrics::ResponseBody<Incoming>>>;

/// See the [module docs](self). Clones share the client's connections and state.
pub struct MeshClient<B> {
    inner: BoxCloneSyncService<Request<B>, MeshResponse, Infallible>,
}

impl<B> Clone for MeshClient<B> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

/// Builds a [`MeshClient`].
///
/// Clients built from clones of one builder share policy, metrics, tap and retry budgets (a
/// budget bounds retries across all of them); each has its own connections to endpoints and
/// its own load-balancer and failure-accrual state. A proxy with a runtime per thread builds
/// one per thread, so a request never waits on a connection driven by another thread.
#[derive(Clone)]
pub struct MeshClientBuilder<R> {
    policy: PolicyHandle,
    resolver: R,
    tls: Option<rustls::ClientConfig>,
    pool: (PoolConfig, PoolMetrics),
    registry: Registry,
    control_namespace: String,
    retry: RetryLayer,
    accrual: AccrualConfig,
    names: NameContext,
    own: OwnListeners,
    controller: Option<ControllerClient>,
    tap: Option<crate::tap::Tap>,
}

// === impl MeshClient ===

impl MeshClient<()> {
    /// Starts building a client that routes by `policy` and finds endpoints with `resolver`.
    pub fn builder<R: Resolve>(policy: PolicyHandle, resolver: R) -> MeshClientBuilder<R> {
        MeshClientBuilder {
            policy,
            resolver,
            tls: None,
            pool: (PoolConfig::default(), PoolMetrics::default()),
            registry: Registry::new(),
            control_namespace: mesh_core::identity::DEFAULT_CONTROL_NAMESPACE.to_owned(),
            retry: RetryLayer::new(),
            accrual: AccrualConfig::default(),
            names: NameContext::default(),
            own: OwnListeners::default(),
            controller: None,
            tap: None,
        }
    }
}

impl<B> MeshClient<B> {
    /// Sends a request. Failures come back as responses with an `l5d-proxy-error` header.
    pub async fn request(&self, req: Request<B>) -> MeshResponse {
        match self.inner.clone().oneshot(req).await {
            Ok(rsp) => rsp,
            Err(never) => match never {},
        }
    }
}

impl<B> std::fmt::Debug for MeshClient<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeshClient").finish_non_exhaustive()
    }
}

impl<B> Service<Request<B>> for MeshClient<B> {
    type Response = MeshResponse;
    type Error = Infallible;
    type Future =
        <BoxCloneSyncService<Request<B>, MeshResponse, Infallible> as Service<Request<B>>>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        self.inner.call(req)
    }
}

// === impl MeshClientBuilder ===

impl<R: Resolve> MeshClientBuilder<R> {
    /// Uses mutual TLS (a config from `mesh_identity::tls::client_config`) for meshed endpoints.
    #[must_use]
    pub fn mtls(mut self, tls: rustls::ClientConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Bounds the connections to endpoints (see [`crate::pool`]): idle ones are closed after
    /// the idle timeout, and hitting a bound is counted in `metrics`.
    #[must_use]
    pub fn pool(mut self, config: PoolConfig, metrics: PoolMetrics) -> Self {
        self.pool = (config, metrics);
        self
    }

    /// Records metrics into `registry` (each client has its own otherwise).
    #[must_use]
    pub fn metrics(mut self, registry: Registry) -> Self {
        self.registry = registry;
        self
    }

    /// The control namespace of DNS-form identities in metrics (default `linkerd`).
    #[must_use]
    pub fn control_namespace(mut self, ns: &str) -> Self {
        self.control_namespace = ns.to_owned();
        self
    }

    /// Sets the retry layer (e.g. its replay-buffer bound).
    #[must_use]
    pub fn retry(mut self, retry: RetryLayer) -> Self {
        self.retry = retry;
        self
    }

    /// Sets when failure accrual ejects an endpoint (default: seven consecutive failures,
    /// backing off from 1 s to 1 min).
    #[must_use]
    pub fn failure_accrual(mut self, accrual: AccrualConfig) -> Self {
        self.accrual = accrual;
        self
    }

    /// The caller's namespace: short names (`web`, `web.shop`) resolve from it, as Kubernetes
    /// DNS does for a pod there (default `default`).
    #[must_use]
    pub fn namespace(mut self, ns: &str) -> Self {
        self.names = NameContext::new(ns).with_cluster_domain(self.names.cluster_domain());
        self
    }

    /// The cluster domain of full Service names (default `cluster.local`).
    #[must_use]
    pub fn cluster_domain(mut self, domain: &str) -> Self {
        self.names = self.names.with_cluster_domain(domain);
        self
    }

    /// Addresses this client must never connect to (a proxy's own listeners): requests that
    /// would are answered 502 instead of looping.
    #[must_use]
    pub fn refuse(mut self, own: OwnListeners) -> Self {
        self.own = own;
        self
    }

    /// Takes policy and endpoints from `mesh controller`: each request first makes
    /// `controller` watch the Service it names and waits (a bounded time) for its first
    /// answer. The builder's policy and resolver must be the ones the controller client
    /// publishes to.
    ///
    /// ```no_run
    /// use mesh_tower::client::MeshClient;
    /// use mesh_tower::controller::{ControllerClient, ControllerConfig, PolicyResolver};
    /// use mesh_tower::metrics::Registry;
    /// use mesh_tower::PolicyHandle;
    /// use http_body_util::Empty;
    /// use bytes::Bytes;
    ///
    /// # async fn run(tls: rustls::ClientConfig) -> Result<(), Box<dyn std::error::Error>> {
    /// let identity = mesh_core::Identity::new("cluster.local", "mesh", "mesh-controller")?;
    /// let mut config = ControllerConfig::new("10.96.0.20:8090".parse()?, identity);
    /// config.source_namespace = "shop".into();
    /// let (policy, resolver) = (PolicyHandle::from_yaml("")?, PolicyResolver::default());
    /// let registry = Registry::new();
    /// let controller = ControllerClient::start(
    ///     config,
    ///     tls.clone(),
    ///     (policy.clone(), resolver.clone()),
    ///     registry.clone(),
    /// );
    /// let client = MeshClient::builder(policy, resolver)
    ///     .mtls(tls)
    ///     .namespace("shop")
    ///     .metrics(registry)
    ///     .controller(controller)
    ///     .build::<Empty<Bytes>>();
    /// let rsp = client.request(http::Request::get("http://web/").body(Empty::new())?).await;
    /// # Ok(()) }
    /// ```
    #[must_use]
    pub fn controller(mut self, controller: ControllerClient) -> Self {
        self.controller = Some(controller);
        self
    }

    /// Publishes each request to `tap` (see [`crate::tap`]).
    #[must_use]
    pub fn tap(mut self, tap: crate::tap::Tap) -> Self {
        self.tap = Some(tap);
        self
    }

    /// The registry the client records into.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Builds the client.
    pub fn build<B>(self) -> MeshClient<B>
    where
        B: Body<Data = Bytes> + Send + Sync + Unpin + 'static,
        B::Error: Into<BoxError>,
    {
        let connect =
            Connect::<ReplayBody<FilterBody<B>>>::with_pool(self.tls, self.pool.0, self.pool.1);
        let refuse = RefuseOwnLayer::new(self.own);
        let connect = refuse.layer(connect);
        let balanced =
            BalanceLayer::with_config(self.resolver, self.accrual, DEFAULT_DECAY).layer(connect);
        let ensure = (self.controller).map(|c| EnsureLayer::new(c, self.names.clone()));
        let mut metrics = MetricsLayer::with_control_namespace(
            self.registry.clone(),
            Direction::Outbound,
            &self.control_namespace,
        );
        if let Some(tap) = self.tap {
            metrics = metrics.with_tap(tap);
        }
        let backend_filters = BackendFilterLayer::new(self.registry.clone());
        let svc = tower::ServiceBuilder::new()
            .layer(RespondLayer::new())
            .option_layer(ensure)
            .layer(RouteLayer::new(self.policy).with_names(self.names))
            .layer(metrics)
            .layer(TraceLayer::new())
            // Below the request timeout, so that an injected delay counts toward it.
            .layer(TimeoutLayer::new())
            .layer(FilterLayer::new(self.registry))
            .layer(self.retry)
            .layer(SplitLayer::new())
            // A backendRef's own filters, once the split has chosen the backend.
            .layer(backend_filters)
            .layer(refuse)
            .service(balanced);
        MeshClient {
            inner: BoxCloneSyncService::new(svc),
        }
    }
}

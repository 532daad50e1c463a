//! Inbound authorization: the caller's verified identity and address against the policy.
//! A denied request is answered 403 by the edge layer and never reaches the application.
//!
//! The server that accepted the connection attaches [`ClientInfo`] (who is calling) and an
//! `Arc<`[`InboundTarget`](mesh_core::InboundTarget)`>` (which workload port it arrived at) to each request, in its
//! [`Accepted`] extension; an admitted request's [`Authorized`] is added there.

use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::Either;
use http::Request;
use mesh_core::authz::{DecidedBy, RateLimit, ResourceId};
use mesh_core::filter::Filter;
use mesh_core::{Identity, Peer};
use tower_layer::Layer;
use tower_service::Service;

use crate::BoxError;
use crate::accepted::Accepted;
use crate::errors::Unauthorized;
use crate::metrics::Registry;
use crate::policy::PolicyHandle;
use crate::route::{HttpFacts, MapErr, map_err};

/// Who is calling, as the server saw the connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientInfo {
    /// The peer's verified mesh identity (mTLS), if any.
    pub identity: Option<Identity>,
    /// The peer's address.
    pub addr: SocketAddr,
}

/// The authorization that admitted a request, for the layers after it (rate limits, metrics).
/// Its parts are shared with the policy that decided, so attaching it copies nothing.
#[derive(Clone, Debug)]
pub struct Authorized {
    /// What admitted it (a `ServerAuthorization`, an `AuthorizationPolicy`, a default policy…).
    pub by: DecidedBy,
    /// The Server that applies.
    pub server: Option<Arc<ResourceId>>,
    /// The inbound route that matched, if the Server has routes.
    pub route: Option<Arc<ResourceId>>,
    /// The Server's rate limit.
    pub rate_limit: Option<Arc<RateLimit>>,
    /// The filters of the matched route rule, when it has any ([`crate::filter`] applies them).
    pub filters: Option<Arc<[Filter]>>,
}

/// See the [module docs](self).
#[derive(Clone, Debug)]
pub struct AuthorizeLayer {
    policy: PolicyHandle,
    metrics: Option<Registry>,
}

/// See the [module docs](self).
#[derive(Clone, Debug)]
pub struct Authorize<S> {
    inner: S,
    policy: PolicyHandle,
    metrics: Option<Registry>,
}

// === impl AuthorizeLayer ===

impl AuthorizeLayer {
    /// Authorizes by the policy behind `policy`.
    pub fn new(policy: PolicyHandle) -> Self {
        Self {
            policy,
            metrics: None,
        }
    }

    /// Counts decisions as `inbound_http_authz_allow_total` / `inbound_http_authz_deny_total`.
    #[must_use]
    pub fn with_metrics(mut self, registry: Registry) -> Self {
        self.metrics = Some(registry);
        self
    }
}

impl<S> Layer<S> for AuthorizeLayer {
    type Service = Authorize<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Authorize {
            inner,
            policy: self.policy.clone(),
            metrics: self.metrics.clone(),
        }
    }
}

// === impl Authorize ===

impl<S> Authorize<S> {
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

impl<S, B> Service<Request<B>> for Authorize<S>
where
    S: Service<Request<B>>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = Either<MapErr<S::Future>, std::future::Ready<Result<S::Response, BoxError>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        // An identity is an `Arc`: the peer the policy reads is a reference count, and the
        // request keeps its ClientInfo for the layers after this one.
        let accepted = Accepted::get(req.extensions());
        let (Some(target), Some(client)) = (
            accepted.and_then(|a| a.target.clone()),
            accepted.and_then(|a| a.client.as_ref()),
        ) else {
            let e: BoxError =
                "authorize: the server attached no InboundTarget or ClientInfo".into();
            return Either::Right(std::future::ready(Err(e)));
        };
        let peer = Peer {
            identity: client.identity.clone(),
            ip: Some(client.addr.ip()),
        };
        // The decision borrows the policy, the peer and the request: keep what outlives it
        // (shared handles when allowed, the rendered reason when not).
        let outcome = {
            let policy = self.policy.load();
            let facts = HttpFacts(&req);
            let decision = policy.decide_inbound(&target, &peer, &facts);
            let d = decision.authz;
            if let Some(m) = &self.metrics {
                m.count_authz(&target, &d);
            }
            if d.allowed {
                Ok(Authorized {
                    by: d.by,
                    server: d.server,
                    route: d.route,
                    rate_limit: d.rate_limit,
                    filters: decision.filters,
                })
            } else {
                tracing::info!(by = %d.by, reason = %d.reason, "request denied");
                Err(Unauthorized {
                    reason: d.reason.to_string(),
                    by: d.by,
                })
            }
        };
        match outcome {
            Ok(authorized) => {
                Accepted::get_mut(req.extensions_mut()).authorized = Some(authorized);
                Either::Left(map_err(self.inner.call(req)))
            }
            Err(e) => Either::Right(std::future::ready(Err(e.into()))),
        }
    }
}

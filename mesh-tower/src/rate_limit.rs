//! Inbound rate limits with `HTTPLocalRateLimitPolicy` semantics: a total requests-per-second
//! limit for a Server, a limit per client identity, and per-client overrides. Refused requests
//! are answered 429 by the edge layer.
//!
//! The limit comes from the [`Authorized`] extension the authorization layer attaches.

use std::collections::HashMap;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::future::Either;
use http::Request;
use mesh_core::Identity;
use mesh_core::authz::ResourceId;
use parking_lot::Mutex;
use tokio::time::Instant;
use tower_layer::Layer;
use tower_service::Service;

use crate::BoxError;
use crate::authz::{Authorized, ClientInfo};
use crate::errors::RateLimited;
use crate::route::{MapErr, map_err};

/// A token bucket that holds one second's worth of requests.
#[derive(Clone, Copy, Debug)]
pub struct TokenBucket {
    rps: u32,
    tokens: f64,
    stamp: Instant,
}

/// Buckets by policy, looked up by reference so that admitting a request allocates nothing
/// once its client has been seen.
type Buckets = Arc<Mutex<HashMap<ResourceId, PolicyBuckets>>>;

/// The buckets of one policy: its total, and one per client identity.
#[derive(Debug, Default)]
struct PolicyBuckets {
    total: Option<TokenBucket>,
    per_identity: HashMap<Identity, TokenBucket>,
}

/// See the [module docs](self).
#[derive(Clone, Debug, Default)]
pub struct RateLimitLayer {
    buckets: Buckets,
}

/// See the [module docs](self).
#[derive(Clone, Debug)]
pub struct RateLimit<S> {
    inner: S,
    buckets: Buckets,
}

// === impl TokenBucket ===

impl TokenBucket {
    /// A full bucket refilling at `rps` per second.
    pub fn new(rps: u32, now: Instant) -> Self {
        Self {
            rps,
            tokens: f64::from(rps),
            stamp: now,
        }
    }

    /// Takes a token if one is there.
    pub fn try_take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.stamp);
        self.stamp = now;
        let cap = f64::from(self.rps);
        self.tokens = (self.tokens + elapsed.as_secs_f64() * cap).min(cap);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// How long until a token is available.
    pub fn wait(&self) -> Duration {
        if self.tokens >= 1.0 || self.rps == 0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64((1.0 - self.tokens) / f64::from(self.rps))
        }
    }
}

// === impl RateLimitLayer ===

impl RateLimitLayer {
    /// A layer with its own buckets, shared by the services it makes.
    pub fn new() -> Self {
        Self::default()
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimit {
            inner,
            buckets: Arc::clone(&self.buckets),
        }
    }
}

// === impl RateLimit ===

impl<S> RateLimit<S> {
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

    fn admit(&self, limit: &mesh_core::authz::RateLimit, identity: Option<&Identity>) -> bool {
        let now = Instant::now();
        let mut buckets = self.buckets.lock();
        let policy = match buckets.get_mut(&limit.source) {
            Some(p) => p,
            None => buckets.entry(limit.source.clone()).or_default(),
        };
        // The per-identity limit applies first, so that one noisy client does not use up the
        // total for everyone else.
        let own = match (identity, limit.per_identity_limit(identity)) {
            (Some(id), Some(rps)) => {
                let b = match policy.per_identity.get_mut(id) {
                    Some(b) => b,
                    None => policy
                        .per_identity
                        .entry(id.clone())
                        .or_insert_with(|| TokenBucket::new(rps, now)),
                };
                if !b.try_take(now) {
                    return false;
                }
                Some(id)
            }
            _ => None,
        };
        if let Some(total) = limit.total {
            let b = policy
                .total
                .get_or_insert_with(|| TokenBucket::new(total, now));
            if !b.try_take(now) {
                // Refused for everyone's load: that must not use up this client's own share.
                if let Some(b) = own.and_then(|id| policy.per_identity.get_mut(id)) {
                    b.tokens += 1.0;
                }
                return false;
            }
        }
        true
    }
}

impl<S, B> Service<Request<B>> for RateLimit<S>
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

    fn call(&mut self, req: Request<B>) -> Self::Future {
        if let Some(limit) = Authorized::of(req.extensions()).and_then(|a| a.rate_limit.as_ref()) {
            let identity = ClientInfo::of(req.extensions()).and_then(|c| c.identity.as_ref());
            if !self.admit(limit, identity) {
                let e = RateLimited {
                    by: limit.source.to_string(),
                };
                return Either::Right(std::future::ready(Err(e.into())));
            }
        }
        Either::Left(map_err(self.inner.call(req)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn buckets_refill_at_their_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10, t0);
        for _ in 0..10 {
            assert!(b.try_take(t0));
        }
        assert!(!b.try_take(t0));
        assert_eq!(b.wait(), Duration::from_millis(100));
        assert!(!b.try_take(t0 + Duration::from_millis(99)));
        assert!(b.try_take(t0 + Duration::from_millis(201)));
        // Idle time does not bank more than one second of tokens.
        let later = t0 + Duration::from_secs(60);
        let n = (0..100).filter(|_| b.try_take(later)).count();
        assert_eq!(n, 10);
    }
}

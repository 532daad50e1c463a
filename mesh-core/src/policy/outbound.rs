//! The routing decision for one outbound request, and sampled backend choices.

use crate::classify::{self, Class};
use crate::retry::RetryPolicy;
use crate::split::{BackendRef, Backends, SplitMix64, WeightedBackend};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use super::{Route, ServicePolicy, Timeouts};

/// The routing decision for one outbound request.
#[derive(Clone, Debug)]
pub struct OutboundDecision<'a> {
    pub(super) service: Option<&'a ServicePolicy>,
    pub(super) route: Option<&'a Arc<Route>>,
    pub(super) backends: Cow<'a, Arc<Backends>>,
    pub(super) port: u16,
    pub(super) no_route: bool,
}

/// Counts of backends chosen over many simulated requests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Samples {
    counts: BTreeMap<String, u64>,
    total: u64,
}

// === impl OutboundDecision ===

impl<'a> OutboundDecision<'a> {
    /// Straight to `addr`, with no Service's policy: an address the mesh does not know, or a
    /// pod called by its own IP.
    pub fn forward(addr: std::net::SocketAddr) -> Self {
        Self::to_backend(BackendRef::address(addr))
    }

    pub(super) fn to_backend(backend: BackendRef) -> Self {
        let port = backend.port().unwrap_or_default();
        OutboundDecision {
            service: None,
            route: None,
            backends: Cow::Owned(Arc::new(Backends::new(vec![WeightedBackend {
                backend,
                weight: 1,
            }]))),
            port,
            no_route: false,
        }
    }

    /// The Service the request is addressed to, when the input describes it.
    pub fn service(&self) -> Option<&'a ServicePolicy> {
        self.service
    }

    /// The route that matched. `None` when the Service is unknown, or when routes are
    /// attached to it and none matches (see [`OutboundDecision::is_no_route`]).
    pub fn route(&self) -> Option<&'a Route> {
        self.route.map(|r| &**r)
    }

    /// The matched route, shared: for carrying the decision along with a request.
    pub fn route_arc(&self) -> Option<Arc<Route>> {
        self.route.cloned()
    }

    /// The weighted backends, shared: for carrying the decision along with a request.
    pub fn backends_arc(&self) -> Arc<Backends> {
        Arc::clone(&self.backends)
    }

    /// The matched route's name, if a route resource matched (not the default route).
    pub fn route_name(&self) -> Option<&'a str> {
        self.route
            .filter(|r| r.source.is_some())
            .map(|r| r.name.as_str())
    }

    /// Routes are attached to the Service but none matches: Gateway API answers 404.
    pub fn is_no_route(&self) -> bool {
        self.no_route
    }

    /// The weighted backends to choose from, ports resolved.
    pub fn backends(&self) -> impl Iterator<Item = WeightedBackend> + '_ {
        self.backends.iter().map(|b| WeightedBackend {
            backend: b.backend.or_port(self.port),
            weight: b.weight,
        })
    }

    /// Chooses a backend for a uniform random sample; zero weights are never chosen.
    /// The port is `None` where it is the request's own port.
    pub fn pick(&self, sample: u64) -> Option<&BackendRef> {
        self.backends.pick(sample)
    }

    /// The port the request was sent to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The route's timeouts (none where no route matched).
    pub fn timeouts(&self) -> Timeouts {
        self.route.map(|r| r.timeouts).unwrap_or_default()
    }

    /// The route's retry policy.
    pub fn retry(&self) -> Option<&'a RetryPolicy> {
        self.route.and_then(|r| r.retry.as_ref())
    }

    /// Classifies a response to this request.
    pub fn classify(&self, status: u16, grpc_status: Option<u32>) -> Class {
        match self.route {
            Some(r) => r.classify(status, grpc_status),
            None => classify::classify(&[], status, grpc_status),
        }
    }

    /// Simulates `n` choices with a seeded generator.
    pub fn sample(&self, n: u64, seed: u64) -> Samples {
        let mut rng = SplitMix64::new(seed);
        let mut counts: BTreeMap<String, u64> = BTreeMap::new();
        // Count per index first: no allocation per sample.
        let list: Vec<&WeightedBackend> = self.backends.iter().collect();
        let mut per = vec![0u64; list.len()];
        for _ in 0..n {
            if let Some(b) = self.backends.pick(rng.next())
                && let Some(i) = list.iter().position(|w| &w.backend == b)
            {
                per[i] += 1;
            }
        }
        for (w, c) in list.iter().zip(per) {
            *counts.entry(w.backend.service()).or_default() += c;
        }
        Samples { counts, total: n }
    }
}

// === impl Samples ===

impl Samples {
    /// How many samples chose this Service (`name` or `name.namespace`).
    pub fn count(&self, service: &str) -> u64 {
        self.counts
            .iter()
            .filter(|(k, _)| {
                k.as_str() == service || k.split_once('.').is_some_and(|(n, _)| n == service)
            })
            .map(|(_, c)| c)
            .sum()
    }

    /// The share of samples (0.0–1.0) that chose this Service.
    pub fn share(&self, service: &str) -> f64 {
        if self.total == 0 {
            return 0.0;
        }
        self.count(service) as f64 / self.total as f64
    }

    /// Counts by `name.namespace`.
    pub fn counts(&self) -> &BTreeMap<String, u64> {
        &self.counts
    }
}

impl fmt::Display for Samples {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (k, v)) in self.counts.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{k}: {v}")?;
        }
        Ok(())
    }
}

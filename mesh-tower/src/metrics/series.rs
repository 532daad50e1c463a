//! The label sets of [`Metrics`](super::Metrics) and their cached handles.
//!
//! A request's labels are resolved once into a [`Series`] (its `request_total` and the shared
//! part of its response labels); the status, known at the response headers, picks a
//! [`StatusSeries`] (the latency histograms); the outcome, known at the end of the stream,
//! picks the `response_total` counters. Each step is a lookup in a small bounded table, so a
//! label set seen before costs no allocation.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use mesh_core::Identity;
use mesh_core::destination::PodEndpoint;
use mesh_core::split::BackendRef;
use metrics::{Counter, Histogram, Label};

use super::classify::Outcome;
use super::{BoundedMap, Direction, Registry, server_labels};
use crate::authz::Authorized;
use crate::route::Authorities;

/// How many statuses a series keeps handles for, and how many outcomes a status does; past
/// that, handles are looked up in the registry each time (correct, only slower).
const STATUSES_PER_SERIES: usize = 32;
const OUTCOMES_PER_STATUS: usize = 32;

#[derive(Debug)]
pub(super) struct Shared {
    pub(super) registry: Registry,
    pub(super) direction: Direction,
    pub(super) control_namespace: String,
    pub(super) series: BoundedMap<SeriesKey, Arc<Series>>,
    pub(super) interned: Interned,
}

/// Shared copies of the values series keys hold, so that keying a response's series costs no
/// allocation once a value has been seen. Each table is bounded by the registry's series
/// limit, as the series themselves are.
#[derive(Debug)]
pub(super) struct Interned {
    pub(super) identities: BoundedMap<Identity, Arc<Identity>>,
    pub(super) backends: BoundedMap<BackendRef, Arc<BackendRef>>,
    /// Route, Server and policy names.
    pub(super) names: BoundedMap<Box<str>, Arc<str>>,
    pub(super) authorities: Authorities,
}

/// Everything a request's labels depend on. Inbound keys hold nothing the client chose but
/// its verified identity; outbound keys hold the destination.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) struct SeriesKey {
    pub(super) authority: Option<Arc<str>>,
    pub(super) route: Option<Arc<str>>,
    pub(super) peer: Option<Arc<Identity>>,
    pub(super) target: Option<SocketAddr>,
    pub(super) backend: Option<Arc<BackendRef>>,
    /// A pod called by its address labels `dst_*` in place of the backend.
    pub(super) pod: Option<Arc<PodEndpoint>>,
    pub(super) server: Option<ServerKey>,
}

/// The Server (or default policy) and inbound route that admitted a request.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) struct ServerKey {
    kind: &'static str,
    name: Arc<str>,
    route: Option<(Arc<str>, Arc<str>)>,
}

/// The handles of one request label set.
#[derive(Debug)]
pub(super) struct Series {
    registry: Registry,
    /// Made when first counted: a series seen only through responses (a request counted
    /// with other labels when it was sent) shows no `request_total` of 0.
    requests: OnceLock<(Counter, Option<Counter>)>,
    /// The labels responses share: the request's (and, per route, `direction`, `dst`,
    /// `rt_route`).
    base: Vec<Label>,
    route_base: Option<Vec<Label>>,
    by_status: BoundedMap<u16, Arc<StatusSeries>>,
}

/// The handles of one request label set and response status.
#[derive(Debug)]
pub(crate) struct StatusSeries {
    registry: Registry,
    latency: Histogram,
    route_latency: Option<Histogram>,
    labels: Vec<Label>,
    route_labels: Option<Vec<Label>>,
    responses: BoundedMap<Outcome, (Counter, Option<Counter>)>,
}

// === impl Interned ===

impl Interned {
    pub(super) fn new(limit: usize) -> Self {
        Self {
            identities: BoundedMap::new(limit),
            backends: BoundedMap::new(limit),
            names: BoundedMap::new(limit),
            authorities: Authorities::new(limit),
        }
    }

    pub(super) fn identity(&self, id: &Identity) -> Arc<Identity> {
        self.identities
            .get_or_insert_with(id, || id.clone(), || Arc::new(id.clone()))
    }

    pub(super) fn backend(&self, b: &BackendRef) -> Arc<BackendRef> {
        self.backends
            .get_or_insert_with(b, || b.clone(), || Arc::new(b.clone()))
    }

    pub(super) fn name(&self, name: &str) -> Arc<str> {
        self.names
            .get_or_insert_with(name, || name.into(), || name.into())
    }

    pub(super) fn server(&self, a: &Authorized) -> ServerKey {
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
    pub(super) fn series(&self, key: SeriesKey) -> Arc<Series> {
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
                base.push(Label::new("dst_service", b.name().to_owned()));
                base.push(Label::new("dst_namespace", b.namespace().to_owned()));
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
        let route_base = k.route.as_ref().map(|name| {
            vec![
                Label::new("direction", self.direction.as_str()),
                Label::new("dst", k.authority.as_deref().unwrap_or("").to_owned()),
                Label::new("rt_route", name.to_string()),
            ]
        });
        Series {
            registry: r.clone(),
            requests: OnceLock::new(),
            base,
            route_base,
            by_status: BoundedMap::new(STATUSES_PER_SERIES),
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

// === impl Series ===

impl Series {
    /// Counts a request (and, on a route, a route request).
    pub(super) fn request(&self) {
        let (c, route) = self.requests.get_or_init(|| {
            let r = &self.registry;
            (
                r.counter("request_total", self.base.clone()),
                self.route_base
                    .as_ref()
                    .map(|rb| r.counter("route_request_total", rb.clone())),
            )
        });
        c.increment(1);
        if let Some(c) = route {
            c.increment(1);
        }
    }

    /// The handles of responses with `status`.
    pub(super) fn status(&self, status: u16) -> Arc<StatusSeries> {
        self.by_status.get_or_insert_with(
            &status,
            || status,
            || Arc::new(self.resolve_status(status)),
        )
    }

    fn resolve_status(&self, status: u16) -> StatusSeries {
        let r = &self.registry;
        let with_status = |base: &[Label]| {
            let mut l = base.to_vec();
            l.push(Label::new("status_code", status.to_string()));
            l
        };
        let labels = with_status(&self.base);
        let route_labels = self.route_base.as_deref().map(with_status);
        StatusSeries {
            registry: r.clone(),
            latency: r.histogram("response_latency_ms", labels.clone()),
            route_latency: route_labels
                .as_ref()
                .map(|l| r.histogram("route_response_latency_ms", l.clone())),
            labels,
            route_labels,
            responses: BoundedMap::new(OUTCOMES_PER_STATUS),
        }
    }
}

// === impl StatusSeries ===

impl StatusSeries {
    /// Records the time to the response headers.
    pub(super) fn latency(&self, ms: f64) {
        self.latency.record(ms);
        if let Some(h) = &self.route_latency {
            h.record(ms);
        }
    }

    /// Counts a response that ended with `outcome`.
    pub(crate) fn respond(&self, outcome: Outcome) {
        let (c, route) = self.responses.get_or_insert_with(
            &outcome,
            || outcome,
            || self.resolve_outcome(outcome),
        );
        c.increment(1);
        if let Some(c) = route {
            c.increment(1);
        }
    }

    /// Linkerd's outcome labels: `classification`, then `grpc_status` or `error`.
    fn resolve_outcome(&self, o: Outcome) -> (Counter, Option<Counter>) {
        let with_outcome = |base: &[Label]| {
            let mut l = base.to_vec();
            l.push(Label::new("classification", o.class.as_str()));
            if let Some(g) = o.grpc {
                l.push(Label::new("grpc_status", g.to_string()));
            }
            if let Some(e) = o.error {
                l.push(Label::new("error", e.as_str()));
            }
            l
        };
        let r = &self.registry;
        (
            r.counter("response_total", with_outcome(&self.labels)),
            self.route_labels
                .as_deref()
                .map(|l| r.counter("route_response_total", with_outcome(l))),
        )
    }
}

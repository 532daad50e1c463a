//! What the mesh knows about one Service: its ports, routes, split and profile, and how a
//! request is matched to one of its routes.

use crate::authz::ResourceId;
use crate::classify::{self, Class, ResponseClass};
use crate::filter::Filter;
use crate::retry::RetryPolicy;
use crate::route::{HttpMatch, RequestFacts};
use crate::split::{BackendRef, Backends, WeightedBackend};
use crate::values::Timestamp;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::OutboundDecision;

/// What the mesh knows about one Service: its ports, routes, split and profile.
#[derive(Clone, Debug)]
pub struct ServicePolicy {
    pub(crate) name: String,
    pub(crate) namespace: String,
    pub(crate) ports: Vec<ServicePort>,
    /// `spec.clusterIP`/`clusterIPs`.
    pub(crate) cluster_ips: Vec<std::net::IpAddr>,
    /// `clusterIP: None`.
    pub(crate) headless: bool,
    pub(crate) selector: Option<BTreeMap<String, String>>,
    pub(crate) annotations: BTreeMap<String, String>,
    pub(crate) routes: Vec<Arc<Route>>,
    /// HTTPRoute/GRPCRoute matches in precedence order.
    pub(crate) entries: Vec<RouteEntry>,
    /// ServiceProfile routes in the order written: the first match wins.
    pub(crate) profile_routes: Vec<(ProfileMatch, usize)>,
    pub(crate) profile: Option<ResourceId>,
    /// Client-side ServiceProfiles: each applies to callers in its own namespace only.
    pub(crate) client_profiles: Vec<ClientProfile>,
    pub(crate) split: Option<Split>,
    /// The route used when no route resource applies.
    pub(crate) default_route: Arc<Route>,
}

/// A port of a Service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePort {
    /// The port's name.
    pub name: Option<String>,
    /// The Service port.
    pub port: u16,
    /// The pod port it forwards to.
    pub target: Option<TargetPort>,
}

/// A Service's `targetPort`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TargetPort {
    /// A number.
    Number(u16),
    /// A container port name.
    Name(String),
}

#[derive(Clone, Debug)]
pub(crate) struct RouteEntry {
    pub(crate) route: usize,
    pub(crate) port: Option<u16>,
    pub(crate) m: HttpMatch,
    /// A consumer route's namespace (the route lives outside the Service's namespace): it
    /// applies only to callers in that namespace, and there instead of the producer's routes.
    pub(crate) consumer: Option<String>,
}

/// A client-side ServiceProfile (Linkerd): one named for this Service but living in a caller's
/// namespace. For callers there it replaces the Service's own profile and routes whole.
#[derive(Clone, Debug)]
pub(crate) struct ClientProfile {
    /// The callers' namespace (the profile's own).
    pub(crate) namespace: String,
    pub(crate) id: ResourceId,
    /// Conditions in the order written, each with its index in the Service's `routes`.
    pub(crate) matches: Vec<(ProfileMatch, usize)>,
    /// For requests no route matches: none of the Service's annotations (the profile makes
    /// them inert), sent to the profile's `dstOverrides` when it has any.
    pub(crate) default_route: Arc<Route>,
    /// Whether `default_route`'s backends are `dstOverrides` (else a split may still apply).
    pub(crate) overrides: bool,
}

/// A ServiceProfile route condition.
#[derive(Clone, Debug)]
pub(crate) enum ProfileMatch {
    All(Vec<Self>),
    Any(Vec<Self>),
    Not(Box<Self>),
    Path(regex::Regex),
    Method(String),
}

/// An SMI TrafficSplit of a Service.
#[derive(Clone, Debug)]
pub(crate) struct Split {
    pub(crate) backends: Arc<Backends>,
    /// When non-empty, the split applies only to requests matching one of these.
    pub(crate) matches: Vec<HttpMatch>,
}

/// A route: where its requests go and how they are treated.
#[derive(Clone, Debug)]
pub struct Route {
    pub(crate) name: String,
    pub(crate) source: Option<ResourceId>,
    pub(crate) rule: Option<usize>,
    pub(crate) backends: Arc<Backends>,
    pub(crate) timeouts: Timeouts,
    pub(crate) retry: Option<RetryPolicy>,
    pub(crate) response_classes: Vec<ResponseClass>,
    pub(crate) filters: Vec<Filter>,
    /// The filters of the rule's backendRefs that have any, applied only to requests sent
    /// to that backend (after the split chose it).
    pub(crate) backend_filters: Vec<BackendFilters>,
    pub(crate) grpc: bool,
    pub(crate) created: Option<Timestamp>,
}

/// The `filters` of one `backendRef`: Gateway API applies them only to requests forwarded to
/// that backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendFilters {
    /// The backend, as the rule names it.
    pub backend: BackendRef,
    /// Its filters, in order (header modifiers and `FaultInjection` references).
    pub filters: Vec<Filter>,
}

/// Request timeouts of a route.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Timeouts {
    /// The whole request, retries included (`timeouts.request`, `timeout.linkerd.io/request`,
    /// a ServiceProfile route's `timeout`).
    pub request: Option<Duration>,
    /// Each attempt to a backend (`timeouts.backendRequest`, `timeout.linkerd.io/response`).
    pub backend_request: Option<Duration>,
}

// === impl ServicePolicy ===

impl ServicePolicy {
    /// A Service named by some object, before anything is linked to it: its calls go to
    /// itself.
    pub(crate) fn new(name: &str, namespace: &str) -> Self {
        Self {
            name: name.to_owned(),
            namespace: namespace.to_owned(),
            ports: Vec::new(),
            cluster_ips: Vec::new(),
            headless: false,
            selector: None,
            annotations: BTreeMap::new(),
            routes: Vec::new(),
            entries: Vec::new(),
            profile_routes: Vec::new(),
            profile: None,
            client_profiles: Vec::new(),
            split: None,
            default_route: Arc::new(Route::default_to(name, namespace)),
        }
    }

    /// The Service's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The Service's namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The Service's ports (from a `Service` in the input).
    pub fn ports(&self) -> &[ServicePort] {
        &self.ports
    }

    /// The ServiceProfile that governs this Service, if any.
    pub fn profile(&self) -> Option<&ResourceId> {
        self.profile.as_ref()
    }

    /// Routes of this Service (HTTPRoute rules, GRPCRoute rules or ServiceProfile routes).
    pub fn routes(&self) -> &[Arc<Route>] {
        &self.routes
    }

    /// The backends of the TrafficSplit whose apex this Service is, if any.
    pub fn traffic_split(&self) -> Option<&Backends> {
        self.split.as_ref().map(|s| &*s.backends)
    }

    /// Routes a request to this Service's `port` as a caller in the Service's own namespace
    /// (or any namespace without consumer routes for it) would: its routes, split and profile.
    pub fn decide(&self, port: u16, req: &impl RequestFacts) -> OutboundDecision<'_> {
        self.decide_from(&self.namespace, port, req)
    }

    /// The ServiceProfile that governs calls from namespace `from`: a client-side profile in
    /// `from`, else the Service's own.
    pub fn profile_from(&self, from: &str) -> Option<&ResourceId> {
        self.client_profile(from)
            .map(|c| &c.id)
            .or(self.profile.as_ref())
    }

    /// Routes a request from a caller in namespace `from`. Linkerd's client-side
    /// ServiceProfile (one in `from` named for this Service) applies to it first; then the
    /// Service's own profile; then GAMMA's consumer routes (routes in `from` whose parent is
    /// this Service, in another namespace) instead of the Service's own (producer) routes.
    /// Callers elsewhere get the producer's profile or routes.
    pub fn decide_from(
        &self,
        from: &str,
        port: u16,
        req: &impl RequestFacts,
    ) -> OutboundDecision<'_> {
        if let Some(c) = self.client_profile(from) {
            let route = (c.matches.iter().find(|(m, _)| m.matches(req)))
                .map_or(&c.default_route, |(_, i)| &self.routes[*i]);
            let backends = match self.split_backends(req) {
                Some(split) if !c.overrides => split,
                _ => &c.default_route.backends,
            };
            return OutboundDecision {
                service: Some(self),
                route: Some(route),
                backends: Cow::Borrowed(backends),
                port,
                no_route: false,
            };
        }
        if self.profile.is_some() {
            if let Some((_, i)) = self.profile_routes.iter().find(|(m, _)| m.matches(req)) {
                // Profile routes classify and time out; the split still picks the backend.
                return OutboundDecision {
                    service: Some(self),
                    route: Some(&self.routes[*i]),
                    backends: Cow::Borrowed(self.default_backends(req)),
                    port,
                    no_route: false,
                };
            }
            return self.default_decision(port, req);
        }
        let consumer = (from != self.namespace
            && self
                .entries
                .iter()
                .any(|e| e.consumer.as_deref() == Some(from)))
        .then_some(from);
        let mut attached = false;
        for e in &self.entries {
            if e.port.is_some_and(|p| p != port) || e.consumer.as_deref() != consumer {
                continue;
            }
            attached = true;
            if e.m.matches(req) {
                let route = &self.routes[e.route];
                return OutboundDecision {
                    service: Some(self),
                    route: Some(route),
                    backends: Cow::Borrowed(&route.backends),
                    port,
                    no_route: false,
                };
            }
        }
        if attached {
            return OutboundDecision {
                service: Some(self),
                route: None,
                backends: Cow::Owned(Arc::default()),
                port,
                no_route: true,
            };
        }
        self.default_decision(port, req)
    }

    /// Every backend its routes, split and default routes may send to (with repeats).
    pub(crate) fn backends(&self) -> impl Iterator<Item = &BackendRef> {
        let split = self.split.iter().flat_map(|s| s.backends.iter());
        let client = self.client_profiles.iter().map(|c| &c.default_route);
        (self.routes.iter())
            .chain(std::iter::once(&self.default_route))
            .chain(client)
            .flat_map(|r| r.backends.iter())
            .chain(split)
            .map(|w| &w.backend)
    }

    fn client_profile(&self, from: &str) -> Option<&ClientProfile> {
        if from == self.namespace {
            return None;
        }
        self.client_profiles.iter().find(|c| c.namespace == from)
    }

    /// The split's backends, when the Service has a split that applies to `req`.
    fn split_backends(&self, req: &impl RequestFacts) -> Option<&Arc<Backends>> {
        self.split
            .as_ref()
            .filter(|s| s.matches.is_empty() || s.matches.iter().any(|m| m.matches(req)))
            .map(|s| &s.backends)
    }

    fn default_backends(&self, req: &impl RequestFacts) -> &Arc<Backends> {
        self.split_backends(req)
            .unwrap_or(&self.default_route.backends)
    }

    fn default_decision(&self, port: u16, req: &impl RequestFacts) -> OutboundDecision<'_> {
        OutboundDecision {
            service: Some(self),
            route: Some(&self.default_route),
            backends: Cow::Borrowed(self.default_backends(req)),
            port,
            no_route: false,
        }
    }
}

// === impl ProfileMatch ===

impl ProfileMatch {
    pub(crate) fn matches(&self, req: &impl RequestFacts) -> bool {
        match self {
            Self::All(v) => v.iter().all(|m| m.matches(req)),
            Self::Any(v) => v.iter().any(|m| m.matches(req)),
            Self::Not(m) => !m.matches(req),
            Self::Path(r) => r.is_match(req.path()),
            Self::Method(m) => m.eq_ignore_ascii_case(req.method()),
        }
    }
}

// === impl Route ===

impl Route {
    /// The route of requests no route resource takes: to Service `name` itself, plainly.
    pub(crate) fn default_to(name: &str, namespace: &str) -> Self {
        Self {
            name: "default".to_owned(),
            source: None,
            rule: None,
            backends: Arc::new(Backends::new(vec![WeightedBackend {
                backend: BackendRef::new(name, namespace, None),
                weight: 1,
            }])),
            timeouts: Timeouts::default(),
            retry: None,
            response_classes: Vec::new(),
            filters: Vec::new(),
            backend_filters: Vec::new(),
            grpc: false,
            created: None,
        }
    }

    /// The route's name: the route resource's name, or the ServiceProfile route's name, or
    /// `default`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The resource the route came from (`HTTPRoute/ns/name`), or `None` for the default
    /// route of a Service.
    pub fn source(&self) -> Option<&ResourceId> {
        self.source.as_ref()
    }

    /// The index of the rule within the route resource.
    pub fn rule(&self) -> Option<usize> {
        self.rule
    }

    /// The weighted backends the route names (before any TrafficSplit).
    pub fn backends(&self) -> &Backends {
        &self.backends
    }

    /// Timeouts.
    pub fn timeouts(&self) -> Timeouts {
        self.timeouts
    }

    /// Retry policy, if the route retries.
    pub fn retry(&self) -> Option<&RetryPolicy> {
        self.retry.as_ref()
    }

    /// Filters, as written.
    pub fn filters(&self) -> &[Filter] {
        &self.filters
    }

    /// The filters of the backendRef `backend` (a backend [`Backends::pick`] chose, its port
    /// resolved or not); empty for a backend without filters. Where a rule names one backend
    /// twice, the first naming's filters apply.
    pub fn backend_filters(&self, backend: &BackendRef) -> &[Filter] {
        let same = |b: &BackendRef| {
            b.name() == backend.name()
                && b.namespace() == backend.namespace()
                && (b.port().is_none() || backend.port().is_none() || b.port() == backend.port())
        };
        (self.backend_filters.iter())
            .find(|f| same(&f.backend))
            .map_or(&[], |f| &f.filters)
    }

    /// Whether this is a gRPC route.
    pub fn is_grpc(&self) -> bool {
        self.grpc
    }

    /// Classifies a response on this route (its ServiceProfile `responseClasses`, else 5xx
    /// or a non-zero `grpc-status` is a failure).
    pub fn classify(&self, status: u16, grpc_status: Option<u32>) -> Class {
        classify::classify(&self.response_classes, status, grpc_status)
    }
}

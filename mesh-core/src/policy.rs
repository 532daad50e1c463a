//! The compiled snapshot and the decisions taken on it.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::authz::{self, AuthzDecision, InboundConfig, InboundTarget, Peer, ResourceId, Server};
use crate::classify::{self, Class, ResponseClass};
use crate::compile;
use crate::destination::{AddressIndex, DEFAULT_CLUSTER_DOMAIN, ServiceName, service_name};
use crate::error::{LoadErrors, Note};
use crate::index::Sharded;
use crate::retry::RetryPolicy;
use crate::route::{HttpMatch, Request, RequestFacts};
use crate::split::{BackendRef, Backends, SplitMix64, WeightedBackend};

/// Settings that shape compilation: the trust domain and the inbound defaults.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PolicyConfig {
    /// Inbound defaults, trust domain and control namespace.
    pub inbound: InboundConfig,
}

/// One immutable snapshot of the mesh's policy, compiled from a YAML stream.
///
/// Cheap to share (`Arc<MeshPolicy>`); all decisions are pure functions of the snapshot and the
/// request described to them.
///
/// Its pieces are shared with the [`PolicyIndex`](crate::PolicyIndex) it came from, so taking
/// one copies pointers, not policy.
#[derive(Clone, Debug)]
pub struct MeshPolicy {
    pub(crate) services: Sharded<String, Arc<ServicePolicy>>,
    pub(crate) servers: Arc<Vec<Server>>,
    pub(crate) workloads: Arc<Vec<Arc<Workload>>>,
    pub(crate) endpoints: Vec<Arc<EndpointSet>>,
    pub(crate) addresses: AddressIndex,
    pub(crate) namespaces: Arc<BTreeMap<String, NamespaceInfo>>,
    pub(crate) config: PolicyConfig,
    pub(crate) notes: Vec<Note>,
    pub(crate) counts: BTreeMap<String, usize>,
}

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
    pub(crate) grpc: bool,
    pub(crate) created: Option<String>,
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

/// A Gateway API filter of a route, kept as data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Filter {
    /// `RequestHeaderModifier`.
    RequestHeaders(HeaderModifier),
    /// `ResponseHeaderModifier`.
    ResponseHeaders(HeaderModifier),
    /// `RequestRedirect`.
    Redirect {
        /// New scheme.
        scheme: Option<String>,
        /// New host.
        hostname: Option<String>,
        /// New port.
        port: Option<u16>,
        /// Status code (301 or 302).
        status: u16,
    },
    /// `RequestMirror`: a copy of each request goes to this backend.
    Mirror(BackendRef),
    /// `URLRewrite`.
    UrlRewrite,
}

/// Header changes of a `*HeaderModifier` filter.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeaderModifier {
    /// Headers to set, replacing existing values.
    pub set: Vec<(String, String)>,
    /// Headers to add.
    pub add: Vec<(String, String)>,
    /// Headers to remove.
    pub remove: Vec<String>,
}

/// A pod template from a workload in the input, for inbound decisions.
#[derive(Clone, Debug)]
pub(crate) struct Workload {
    pub(crate) id: ResourceId,
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) annotations: BTreeMap<String, String>,
    /// Container ports: (number, name).
    pub(crate) ports: Vec<(u16, Option<String>)>,
    /// HTTP probes: (port, path).
    pub(crate) probes: Vec<(u16, String)>,
    /// The pod's service account.
    pub(crate) service_account: Option<String>,
}

/// Endpoints of a Service from EndpointSlices, for static discovery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointSet {
    /// The Service (`kubernetes.io/service-name`).
    pub service: String,
    /// Its namespace.
    pub namespace: String,
    /// Ports: (name, number).
    pub ports: Vec<(Option<String>, u16)>,
    /// Ready addresses.
    pub addresses: Vec<EndpointAddress>,
}

/// One ready address of an EndpointSlice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointAddress {
    /// The address.
    pub ip: std::net::IpAddr,
    /// The service account of the pod behind it, from the endpoint's `targetRef` Pod in the
    /// input or the slice's `mesh.io/service-account` annotation: the identity it must present.
    pub service_account: Option<String>,
    /// The pod behind it, from the endpoint's `targetRef`.
    pub pod: Option<String>,
}

#[derive(Clone, Debug, Default)]
pub(crate) struct NamespaceInfo {
    pub(crate) default_policy: Option<authz::DefaultPolicy>,
}

/// The routing decision for one outbound request.
#[derive(Clone, Debug)]
pub struct OutboundDecision<'a> {
    service: Option<&'a ServicePolicy>,
    route: Option<&'a Arc<Route>>,
    backends: Cow<'a, Arc<Backends>>,
    port: u16,
    no_route: bool,
}

/// Counts of backends chosen over many simulated requests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Samples {
    counts: BTreeMap<String, u64>,
    total: u64,
}

// === impl MeshPolicy ===

impl MeshPolicy {
    /// Compiles a multi-document YAML stream with the default settings.
    ///
    /// All-or-nothing: any error in any document yields every error found and no snapshot.
    pub fn from_yaml(input: &str) -> Result<Self, LoadErrors> {
        Self::compile(input, &PolicyConfig::default())
    }

    /// Compiles a multi-document YAML stream.
    pub fn compile(input: &str, config: &PolicyConfig) -> Result<Self, LoadErrors> {
        compile::compile(input, config)
    }

    /// Notes about the input: skipped kinds, replaced duplicates, inert resources.
    pub fn notes(&self) -> &[Note] {
        &self.notes
    }

    /// How many resources of each kind were read (skipped kinds included).
    pub fn resource_counts(&self) -> &BTreeMap<String, usize> {
        &self.counts
    }

    /// The settings this snapshot was compiled with.
    pub fn config(&self) -> &PolicyConfig {
        &self.config
    }

    /// A Service's policy, by name and namespace.
    pub fn service(&self, name: &str, namespace: &str) -> Option<&ServicePolicy> {
        self.services
            .get(&format!("{name}.{namespace}"))
            .map(|s| &**s)
    }

    /// Every compiled Server.
    pub fn servers(&self) -> &[Server] {
        &self.servers
    }

    /// Endpoints from EndpointSlices in the input, one set per slice.
    pub fn endpoints(&self) -> &[Arc<EndpointSet>] {
        &self.endpoints
    }

    /// The default inbound policy a namespace's `config.linkerd.io/default-inbound-policy`
    /// annotation sets, if the input has that Namespace.
    pub fn namespace_default_policy(&self, namespace: &str) -> Option<authz::DefaultPolicy> {
        self.namespaces
            .get(namespace)
            .and_then(|n| n.default_policy)
    }

    /// Describes the pod of a workload in the input (`deployment/web` in `namespace`) at one
    /// of its ports, for a proxy that serves it: labels, the port's name, probe paths, its
    /// default policy annotation.
    pub fn workload_target(
        &self,
        namespace: &str,
        kind_name: &str,
        port: u16,
    ) -> Option<InboundTarget> {
        let (kind, name) = kind_name.split_once('/')?;
        let w = self.workloads.iter().find(|w| {
            w.id.namespace == namespace && w.id.name == name && w.id.kind.eq_ignore_ascii_case(kind)
        })?;
        Some(InboundTarget {
            namespace: namespace.to_owned(),
            labels: w.labels.clone(),
            port,
            port_name: w
                .ports
                .iter()
                .find(|(p, _)| *p == port)
                .and_then(|(_, n)| n.clone()),
            probe_paths: w
                .probes
                .iter()
                .filter(|(p, _)| *p == port)
                .map(|(_, path)| path.clone())
                .collect(),
            default_policy: w
                .annotations
                .get("config.linkerd.io/default-inbound-policy")
                .and_then(|p| p.parse().ok())
                .or_else(|| {
                    self.namespaces
                        .get(namespace)
                        .and_then(|n| n.default_policy)
                }),
        })
    }

    /// Routes an outbound request described by a [`Request`].
    pub fn outbound(&self, req: &Request) -> OutboundDecision<'_> {
        self.route(req.host(), req.port(), req)
    }

    /// Routes an outbound request to `host:port` as a caller in the `default` namespace would
    /// (see [`MeshPolicy::route_from`] for any other). `host` is a Service name in any of the
    /// forms Kubernetes DNS resolves (`web`, `web.ns`, `web.ns.svc`,
    /// `web.ns.svc.cluster.local`). This is the hot path: no allocation when the Service is
    /// known.
    pub fn route<'a>(
        &'a self,
        host: &str,
        port: u16,
        req: &impl RequestFacts,
    ) -> OutboundDecision<'a> {
        self.route_in(host, "default", DEFAULT_CLUSTER_DOMAIN, port, req)
    }

    pub(crate) fn route_in<'a>(
        &'a self,
        host: &str,
        namespace: &str,
        domain: &str,
        port: u16,
        req: &impl RequestFacts,
    ) -> OutboundDecision<'a> {
        let name = service_name(host, namespace, domain);
        match name.and_then(|n| self.lookup_service_name(n)) {
            Some(svc) => svc.decide(port, req),
            // Not a Service we know: straight through, to the host itself.
            None => OutboundDecision::to_backend(match name {
                Some(n) => BackendRef {
                    name: n.name.to_owned(),
                    namespace: n.namespace.to_owned(),
                    port: Some(port),
                },
                None => BackendRef {
                    name: host
                        .trim_start_matches('[')
                        .trim_end_matches(']')
                        .to_owned(),
                    namespace: String::new(),
                    port: Some(port),
                },
            }),
        }
    }

    fn lookup_service(&self, host: &str) -> Option<&ServicePolicy> {
        self.lookup_service_name(service_name(host, "default", DEFAULT_CLUSTER_DOMAIN)?)
    }

    /// Simulates `n` requests like `req` with a seeded generator and counts the backends
    /// chosen. The same seed gives the same counts on every machine.
    pub fn sample_backends(&self, req: &Request, n: u64, seed: u64) -> Samples {
        self.outbound(req).sample(n, seed)
    }

    /// Decides whether `peer` may make `req` to `target`.
    pub fn authorize(
        &self,
        target: &InboundTarget,
        peer: &Peer,
        req: &impl RequestFacts,
    ) -> AuthzDecision {
        authz::authorize(&self.servers, &self.config.inbound, target, peer, req)
    }

    /// Describes the pod behind a Service port, from the Service's selector and the pod
    /// templates of the input, for [`MeshPolicy::authorize`]. Where the input has no such
    /// Service or workload, the target has the port and namespace only, with a reason.
    pub fn inbound_target(&self, host: &str, port: u16) -> (InboundTarget, Vec<String>) {
        let mut why = Vec::new();
        let (name, namespace) = split_service_host(host);
        let mut target = InboundTarget {
            namespace: namespace.to_owned(),
            port,
            ..InboundTarget::default()
        };
        let svc = self.lookup_service(host);
        let workload = match svc.and_then(|s| s.selector.as_ref().map(|sel| (s, sel))) {
            Some((s, sel)) => {
                let w = self.workloads.iter().find(|w| {
                    w.id.namespace == s.namespace
                        && !sel.is_empty()
                        && sel.iter().all(|(k, v)| w.labels.get(k) == Some(v))
                });
                if w.is_none() {
                    why.push(format!(
                        "no workload in the input matches the selector of Service {name}.{namespace}"
                    ));
                }
                w
            }
            None => {
                why.push(format!(
                    "Service {name}.{namespace} with a selector is not in the input; pod labels unknown"
                ));
                None
            }
        };
        // Service port → targetPort → container port.
        let target_port = svc
            .and_then(|s| s.ports.iter().find(|p| p.port == port))
            .and_then(|p| p.target.clone());
        if let Some(w) = workload {
            target.labels = w.labels.clone();
            let (number, name) = match target_port {
                Some(TargetPort::Number(n)) => {
                    let name = w
                        .ports
                        .iter()
                        .find(|(p, _)| *p == n)
                        .and_then(|(_, n)| n.clone());
                    (n, name)
                }
                Some(TargetPort::Name(name)) => {
                    match w.ports.iter().find(|(_, n)| n.as_deref() == Some(&name)) {
                        Some((p, _)) => (*p, Some(name)),
                        None => {
                            why.push(format!("no container port is named {name:?}"));
                            (port, Some(name))
                        }
                    }
                }
                None => {
                    let name = w
                        .ports
                        .iter()
                        .find(|(p, _)| *p == port)
                        .and_then(|(_, n)| n.clone());
                    (port, name)
                }
            };
            target.port = number;
            target.port_name = name;
            target.probe_paths = w
                .probes
                .iter()
                .filter(|(p, _)| *p == number)
                .map(|(_, path)| path.clone())
                .collect();
            target.default_policy = w
                .annotations
                .get("config.linkerd.io/default-inbound-policy")
                .and_then(|p| p.parse().ok());
        } else if let Some(TargetPort::Number(n)) = target_port {
            target.port = n;
        }
        if target.default_policy.is_none() {
            target.default_policy = self
                .namespaces
                .get(&target.namespace)
                .and_then(|n| n.default_policy);
        }
        (target, why)
    }
}

/// `web.ns.svc.cluster.local` → (`web`, `ns`); a bare name is in `default`. Anything else
/// (an IP address, an outside name) is no Service: it comes back whole, with an empty
/// namespace.
fn split_service_host(host: &str) -> (&str, &str) {
    match service_name(host, "default", DEFAULT_CLUSTER_DOMAIN) {
        Some(ServiceName { name, namespace }) => (name, namespace),
        None => (host.trim_start_matches('[').trim_end_matches(']'), ""),
    }
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
            split: None,
            default_route: Arc::new(Route {
                name: "default".to_owned(),
                source: None,
                rule: None,
                backends: Arc::new(Backends::new(vec![WeightedBackend {
                    backend: BackendRef {
                        name: name.to_owned(),
                        namespace: namespace.to_owned(),
                        port: None,
                    },
                    weight: 1,
                }])),
                timeouts: Timeouts::default(),
                retry: None,
                response_classes: Vec::new(),
                filters: Vec::new(),
                grpc: false,
                created: None,
            }),
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

    /// Routes a request to this Service's `port`: its routes, split and profile.
    pub fn decide(&self, port: u16, req: &impl RequestFacts) -> OutboundDecision<'_> {
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
        let mut attached = false;
        for e in &self.entries {
            if e.port.is_some_and(|p| p != port) {
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

    fn default_backends(&self, req: &impl RequestFacts) -> &Arc<Backends> {
        match &self.split {
            Some(s) if s.matches.is_empty() || s.matches.iter().any(|m| m.matches(req)) => {
                &s.backends
            }
            _ => &self.default_route.backends,
        }
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

// === impl OutboundDecision ===

impl<'a> OutboundDecision<'a> {
    /// Straight to `addr`, with no Service's policy: an address the mesh does not know, or a
    /// pod called by its own IP.
    pub fn forward(addr: std::net::SocketAddr) -> Self {
        Self::to_backend(BackendRef {
            name: addr.ip().to_string(),
            namespace: String::new(),
            port: Some(addr.port()),
        })
    }

    fn to_backend(backend: BackendRef) -> Self {
        let port = backend.port.unwrap_or_default();
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
            backend: BackendRef {
                port: Some(b.backend.port.unwrap_or(self.port)),
                ..b.backend.clone()
            },
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

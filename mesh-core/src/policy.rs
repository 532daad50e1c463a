//! The compiled snapshot and the decisions taken on it.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::authz::{
    self, AuthzDecision, InboundConfig, InboundTarget, Peer, RequestDecision, ResourceId, Server,
};
use crate::canary::Canary;
use crate::compile;
use crate::destination::{AddressIndex, DEFAULT_CLUSTER_DOMAIN, ServiceName, service_name};
use crate::error::{LoadErrors, Note};
use crate::index::Sharded;
use crate::route::{Request, RequestFacts};
use crate::split::BackendRef;

mod outbound;
mod service;

pub use crate::filter::{Filter, HeaderModifier};
pub use outbound::{OutboundDecision, Samples};
pub use service::{BackendFilters, Route, ServicePolicy, ServicePort, TargetPort, Timeouts};
pub(crate) use service::{ClientProfile, ProfileMatch, RouteEntry, Split};

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
    pub(crate) canaries: Vec<Arc<Canary>>,
    pub(crate) config: PolicyConfig,
    pub(crate) notes: Vec<Note>,
    pub(crate) counts: BTreeMap<String, usize>,
    /// Documents of kinds the mesh does not read, skipped with a note.
    pub(crate) skipped: usize,
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

    /// How many resources of each kind were applied (a later document replacing an earlier
    /// one counts once; skipped kinds are not counted here but in [`Self::skipped_count`]).
    pub fn resource_counts(&self) -> &BTreeMap<String, usize> {
        &self.counts
    }

    /// How many documents were of kinds the mesh does not read (each skipped with a note).
    pub fn skipped_count(&self) -> usize {
        self.skipped
    }

    /// The settings this snapshot was compiled with.
    pub fn config(&self) -> &PolicyConfig {
        &self.config
    }

    /// Every Canary, in apply order.
    pub fn canaries(&self) -> &[Arc<Canary>] {
        &self.canaries
    }

    /// A Service's policy, by name and namespace.
    pub fn service(&self, name: &str, namespace: &str) -> Option<&ServicePolicy> {
        self.services
            .get(&format!("{name}.{namespace}"))
            .map(|s| &**s)
    }

    /// Every Service's policy, in no particular order (a dashboard lists their routes).
    pub fn services(&self) -> impl Iterator<Item = &ServicePolicy> {
        self.services.values().map(|s| &**s)
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
            Some(svc) => svc.decide_from(namespace, port, req),
            // Not a Service we know: straight through, to the host itself.
            None => OutboundDecision::to_backend(match name {
                Some(n) => BackendRef::new(n.name, n.namespace, Some(port)),
                None => BackendRef::new(
                    host.trim_start_matches('[').trim_end_matches(']'),
                    "",
                    Some(port),
                ),
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
    pub fn authorize<'a>(
        &'a self,
        target: &InboundTarget,
        peer: &'a Peer,
        req: &'a impl RequestFacts,
    ) -> AuthzDecision<'a> {
        self.decide_inbound(target, peer, req).authz
    }

    /// Decides whether `peer` may make `req` to `target`, and which filters of the route
    /// that admits it apply (what the inbound proxy does with an HTTP request).
    pub fn decide_inbound<'a>(
        &'a self,
        target: &InboundTarget,
        peer: &'a Peer,
        req: &'a impl RequestFacts,
    ) -> RequestDecision<'a> {
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

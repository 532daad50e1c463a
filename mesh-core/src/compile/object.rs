//! One object read and checked alone into a typed value, and the keys it is filed under so
//! that linking finds it and knows what to recompute when it changes.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::delivery::{parse_canary, parse_fault};
use super::doc::{Cx, Doc};
use super::gateway::{ParsedRoute, RouteParent, parse_grpc_route, parse_http_route};
use super::identify::Kind;
use super::inbound::{ParsedServer, parse_server};
use super::linkerd::{
    ParsedAuthPolicy, ParsedRateLimit, ParsedServerAuth, PolicyTarget, parse_auth_policy,
    parse_mesh_tls, parse_network, parse_rate_limit, parse_server_authorization,
};
use super::profile::{ParsedProfile, parse_profile};
use super::smi::{ParsedSplit, parse_route_group, parse_split};
use super::workloads::{
    ParsedService, parse_endpoint_slice, parse_namespace, parse_pod, parse_service, parse_workload,
};
use crate::authz::{IdentityMatch, NetworkMatch};
use crate::canary::Canary;
use crate::filter::fault::Fault;
use crate::kinds;
use crate::manifest::Origin;
use crate::policy::{EndpointSet, NamespaceInfo, PolicyConfig, Workload};
use crate::route::HttpMatch;

/// An object after its own checks: what linking reads, never re-parsed.
#[derive(Clone, Debug)]
pub(crate) enum Object {
    Route(ParsedRoute),
    Split(ParsedSplit),
    RouteGroup(Vec<HttpMatch>),
    Profile(ParsedProfile),
    Server(ParsedServer),
    ServerAuth(ParsedServerAuth),
    AuthPolicy(ParsedAuthPolicy),
    MeshTls(Vec<IdentityMatch>),
    Network(Vec<NetworkMatch>),
    RateLimit(ParsedRateLimit),
    Canary(Arc<Canary>),
    Fault(Arc<Fault>),
    Service(ParsedService),
    EndpointSlice(EndpointSet),
    Namespace(NamespaceInfo),
    /// A Pod or a workload's pod template.
    Workload(Arc<Workload>),
}

/// An accepted object as the index keeps it.
#[derive(Debug)]
pub(crate) struct Entry {
    /// Order of first acceptance: where two objects claim one thing, the later wins.
    pub(crate) seq: u64,
    pub(crate) object: Object,
    pub(crate) origin: Origin,
    /// `Kind/namespace/name`, for notes.
    pub(crate) res: String,
    pub(crate) namespace: String,
    pub(crate) name: String,
}

/// Where linking files and finds objects. The first four are the units linking recomputes;
/// the others are looked up by name, and a change to them reaches the units that read them.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Key {
    /// A Service's outbound policy: (namespace, name).
    Service(String, String),
    /// A namespace's Servers and what attaches to them.
    Inbound(String),
    /// A Service's endpoint sets: (namespace, name).
    Endpoints(String, String),
    /// Pods and workload templates.
    Workloads,
    /// An object read by name: (kind, namespace, name).
    Named(&'static str, String, String),
    /// The AuthorizationPolicies that target a route: (namespace, name).
    RoutePolicies(String, String),
    /// Every Canary, which no linking reads: snapshots list them.
    Canaries,
}

/// Accepted objects by key, in apply order.
pub(crate) type Members = HashMap<Key, BTreeMap<u64, Arc<Entry>>>;

/// What linking reads: objects by key. Every key read is recorded, so that a change under
/// it reaches the unit being linked.
pub(crate) struct Reader<'a> {
    members: &'a Members,
    pub(crate) reads: Vec<Key>,
}

// === impl Reader ===

impl<'a> Reader<'a> {
    pub(crate) fn new(members: &'a Members) -> Self {
        Self {
            members,
            reads: Vec::new(),
        }
    }

    /// The objects filed under `key`, in apply order.
    pub(crate) fn members(&mut self, key: Key) -> impl Iterator<Item = &'a Entry> + 'a {
        let found = self.members.get(&key);
        self.reads.push(key);
        found.into_iter().flat_map(|m| m.values().map(|e| &**e))
    }
}

/// Reads and checks one object alone. The object comes back only if it has no errors.
pub(crate) fn parse(doc: &Doc, config: &PolicyConfig) -> (Cx, Option<Object>) {
    let mut cx = Cx::default();
    let object = parse_kind(&mut cx, doc, &config.inbound.trust_domain);
    let object = if cx.errors.is_empty() { object } else { None };
    (cx, object)
}

fn parse_kind(cx: &mut Cx, doc: &Doc, trust_domain: &str) -> Option<Object> {
    Some(match doc.kind {
        Kind::TrafficSplit => Object::Split(parse_split(cx, doc)?),
        Kind::HttpRouteGroup => Object::RouteGroup(parse_route_group(cx, doc)?),
        Kind::HttpRoute | Kind::LinkerdHttpRoute => {
            let spec = cx.typed::<kinds::HttpRouteSpec>(doc, "spec")?;
            Object::Route(parse_http_route(cx, doc, spec))
        }
        Kind::GrpcRoute => {
            let spec = cx.typed::<kinds::GrpcRouteSpec>(doc, "spec")?;
            Object::Route(parse_grpc_route(cx, doc, spec))
        }
        Kind::ServiceProfile => {
            let spec = cx.typed::<kinds::ServiceProfileSpec>(doc, "spec")?;
            Object::Profile(parse_profile(cx, doc, &spec))
        }
        Kind::Server => {
            let spec = cx.typed::<kinds::ServerSpec>(doc, "spec")?;
            Object::Server(parse_server(cx, doc, &spec)?)
        }
        Kind::ServerAuthorization => {
            let spec = cx.typed::<kinds::ServerAuthorizationSpec>(doc, "spec")?;
            Object::ServerAuth(parse_server_authorization(cx, doc, trust_domain, &spec)?)
        }
        Kind::AuthorizationPolicy => {
            let spec = cx.typed::<kinds::AuthorizationPolicySpec>(doc, "spec")?;
            Object::AuthPolicy(parse_auth_policy(cx, doc, trust_domain, &spec)?)
        }
        Kind::MeshTlsAuthentication => {
            let spec = cx.typed::<kinds::MeshTlsAuthenticationSpec>(doc, "spec")?;
            Object::MeshTls(parse_mesh_tls(cx, doc, trust_domain, &spec))
        }
        Kind::NetworkAuthentication => {
            let spec = cx.typed::<kinds::NetworkAuthenticationSpec>(doc, "spec")?;
            Object::Network(parse_network(cx, doc, &spec)?)
        }
        Kind::RateLimitPolicy => {
            let spec = cx.typed::<kinds::RateLimitPolicySpec>(doc, "spec")?;
            Object::RateLimit(parse_rate_limit(cx, doc, trust_domain, &spec))
        }
        Kind::Canary => {
            let spec = cx.typed::<kinds::CanarySpec>(doc, "spec")?;
            Object::Canary(Arc::new(parse_canary(cx, doc, &spec)?))
        }
        Kind::FaultInjection => {
            let spec = cx.typed::<kinds::FaultInjectionSpec>(doc, "spec")?;
            Object::Fault(Arc::new(parse_fault(cx, doc, &spec)?))
        }
        Kind::Service => Object::Service(parse_service(cx, doc)?),
        Kind::EndpointSlice => Object::EndpointSlice(parse_endpoint_slice(cx, doc)?),
        Kind::Namespace => Object::Namespace(parse_namespace(cx, doc)),
        Kind::Workload => Object::Workload(Arc::new(parse_workload(cx, doc, "spec.template")?)),
        Kind::CronJob => Object::Workload(Arc::new(parse_workload(
            cx,
            doc,
            "spec.jobTemplate.spec.template",
        )?)),
        Kind::Pod => Object::Workload(Arc::new(parse_pod(cx, doc)?)),
    })
}

// === impl Entry ===

impl Entry {
    pub(crate) fn new(seq: u64, doc: &Doc, object: Object) -> Self {
        Self {
            seq,
            object,
            origin: doc.raw.origin.clone(),
            res: doc.res(),
            namespace: doc.namespace.clone(),
            name: doc.name.clone(),
        }
    }

    /// The keys this object is filed under.
    pub(crate) fn keys(&self) -> Vec<Key> {
        let (ns, name) = (&self.namespace, &self.name);
        let named = |kind| vec![Key::Named(kind, ns.clone(), name.clone())];
        match &self.object {
            Object::Route(r) => r
                .parents
                .iter()
                .map(|p| match p {
                    RouteParent::Service {
                        name, namespace, ..
                    } => Key::Service(namespace.clone(), name.clone()),
                    RouteParent::Server { namespace, .. } => Key::Inbound(namespace.clone()),
                })
                .collect(),
            Object::Split(s) => vec![Key::Service(ns.clone(), s.apex.clone())],
            Object::RouteGroup(_) => named("HTTPRouteGroup"),
            Object::Profile(p) => vec![Key::Service(p.namespace.clone(), p.service.clone())],
            Object::Server(_) | Object::ServerAuth(_) => vec![Key::Inbound(ns.clone())],
            Object::AuthPolicy(p) => vec![match &p.target {
                PolicyTarget::Server { namespace, .. } => Key::Inbound(namespace.clone()),
                PolicyTarget::Namespace(target) => Key::Inbound(target.clone()),
                PolicyTarget::Route {
                    namespace, name, ..
                } => Key::RoutePolicies(namespace.clone(), name.clone()),
            }],
            Object::MeshTls(_) => named("MeshTLSAuthentication"),
            Object::Network(_) => named("NetworkAuthentication"),
            Object::RateLimit(r) => vec![Key::Inbound(r.server_namespace.clone())],
            Object::Canary(_) => vec![Key::Canaries],
            Object::Fault(_) => named("FaultInjection"),
            Object::Service(_) => vec![Key::Service(ns.clone(), name.clone())],
            Object::EndpointSlice(set) => vec![Key::Endpoints(ns.clone(), set.service.clone())],
            Object::Namespace(_) => vec![Key::Inbound(name.clone())],
            Object::Workload(w) if w.id.kind == "Pod" => {
                vec![Key::Workloads, Key::Named("Pod", ns.clone(), name.clone())]
            }
            Object::Workload(_) => vec![Key::Workloads],
        }
    }
}

// === impl Key ===

impl Key {
    /// Whether linking recomputes this key itself (rather than the units that read it).
    pub(crate) fn is_unit(&self) -> bool {
        matches!(
            self,
            Self::Service(..) | Self::Inbound(_) | Self::Endpoints(..) | Self::Workloads
        )
    }
}

//! From a YAML stream to a [`MeshPolicy`]: identify kinds, check fields, link references,
//! apply Linkerd's precedence rules.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_norway::Value;

use crate::authz::{
    Authorization, Cidr, DefaultPolicy, IdentityMatch, InboundRoute, NetworkMatch, ProxyProtocol,
    RateLimit, Requirement, ResourceId, Selector, SelectorExpr, Server, ServerPort,
};
use crate::classify::{ResponseClass, ResponseMatch};
use crate::error::{LoadError, LoadErrors, Note};
use crate::identity::Identity;
use crate::index::{ObjectRef, ObjectStatus, PolicyIndex};
use crate::kinds::{self, IntOrString};
use crate::manifest::{self, RawObject};
use crate::policy::{
    EndpointAddress, EndpointSet, Filter, HeaderModifier, MeshPolicy, NamespaceInfo, PolicyConfig,
    ProfileMatch, Route, RouteEntry, ServicePolicy, ServicePort, Split, TargetPort, Timeouts,
    Workload,
};
use crate::retry::{DEFAULT_RETRY_LIMIT, RetryBudgetConfig, RetryConditions, RetryPolicy};
use crate::route::{self, HttpMatch, PathMatch, ValueMatch, ValuePattern};
use crate::split::{BackendRef, Backends, WeightedBackend};
use crate::values::{parse_duration, parse_milli_quantity};

/// Retries per request for ServiceProfile routes, which name no limit: the budget is what
/// bounds them, this only keeps one request from draining it.
const PROFILE_RETRY_LIMIT: u32 = 3;
/// Gateway API's upper bound for a backendRef weight.
const MAX_WEIGHT: i64 = 1_000_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Kind {
    TrafficSplit,
    HttpRouteGroup,
    HttpRoute,
    LinkerdHttpRoute,
    GrpcRoute,
    ServiceProfile,
    Server,
    ServerAuthorization,
    AuthorizationPolicy,
    MeshTlsAuthentication,
    NetworkAuthentication,
    RateLimitPolicy,
    Service,
    EndpointSlice,
    Namespace,
    Workload,
    CronJob,
    Pod,
}

/// One resource of a known kind, identified but not yet interpreted.
#[derive(Clone, Debug)]
pub(crate) struct Doc {
    kind: Kind,
    /// The API group the object was read as ("" for core).
    group: String,
    kind_name: String,
    version: String,
    meta: kinds::ObjectMeta,
    name: String,
    namespace: String,
    raw: RawObject,
}

/// Errors and notes collected while reading.
#[derive(Debug, Default)]
pub(crate) struct Cx {
    pub(crate) errors: Vec<LoadError>,
    pub(crate) notes: Vec<Note>,
}

/// A route (HTTPRoute, GRPCRoute) after its own checks, before linking.
struct ParsedRoute {
    id: ResourceId,
    created: Option<String>,
    grpc: bool,
    parents: Vec<RouteParent>,
    rules: Vec<ParsedRule>,
    annotations: BTreeMap<String, String>,
}

/// What a ServerAuthorization targets.
enum ServerTarget {
    Name(String),
    Selector(Selector),
}

/// An AuthorizationPolicy after its own checks: what it requires and what it targets.
#[derive(Clone, Debug)]
struct ParsedAuthPolicy {
    id: ResourceId,
    requires: Vec<AuthRef>,
    target: PolicyTarget,
}

/// One `requiredAuthenticationRefs` entry.
#[derive(Clone, Debug)]
enum AuthRef {
    MeshTls { namespace: String, name: String },
    Network { namespace: String, name: String },
    Identity(Identity),
}

/// An AuthorizationPolicy's `targetRef`.
#[derive(Clone, Debug)]
enum PolicyTarget {
    Server {
        namespace: String,
        name: String,
    },
    Namespace(String),
    /// An HTTPRoute or GRPCRoute (the kind, as written, for notes).
    Route {
        kind: String,
        namespace: String,
        name: String,
    },
}

enum RouteParent {
    Service {
        name: String,
        namespace: String,
        port: Option<u16>,
    },
    Server {
        name: String,
        namespace: String,
    },
}

struct ParsedRule {
    matches: Vec<HttpMatch>,
    backends: Vec<WeightedBackend>,
    timeouts: Timeouts,
    filters: Vec<Filter>,
}

/// Route-level settings from `retry.linkerd.io/*` and `timeout.linkerd.io/*` annotations.
#[derive(Clone, Debug, Default)]
struct Annotated {
    request: Option<Duration>,
    response: Option<Duration>,
    retry: Option<RetryPolicy>,
}

/// What one object, read alone, bears on: the Services, inbound namespaces and endpoint sets
/// it is part of, and the objects it looks up by name (whose changes reach it).
#[derive(Clone, Debug, Default)]
pub(crate) struct Touch {
    pub(crate) services: BTreeSet<(String, String)>,
    pub(crate) inbound: BTreeSet<String>,
    pub(crate) endpoints: BTreeSet<(String, String)>,
    pub(crate) workloads: bool,
    /// Objects it reads by (kind, namespace, name).
    pub(crate) reads: BTreeSet<(String, String, String)>,
    /// Routes it targets by (namespace, name): it bears on the namespaces of their Servers.
    pub(crate) routes: BTreeSet<(String, String)>,
}

/// The pieces of a policy linked from accepted objects, and the notes linking raised.
pub(crate) struct Linked {
    pub(crate) policy: MeshPolicy,
    pub(crate) notes: Vec<Note>,
}

/// Compiles a stream all-or-nothing, on top of a fresh [`PolicyIndex`].
pub(crate) fn compile(input: &str, config: &PolicyConfig) -> Result<MeshPolicy, LoadErrors> {
    let (raws, syntax) = manifest::read_stream(input);
    let mut cx = Cx::default();
    for e in syntax {
        cx.errors.push(LoadError {
            origin: e.origin,
            line: e.line,
            resource: None,
            field: None,
            message: e.message,
        });
    }

    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    let mut docs: Vec<Doc> = Vec::new();
    let mut seen: HashMap<(Kind, String, String), usize> = HashMap::new();
    for raw in raws {
        let Some(doc) = cx.identify(raw, &mut counts) else {
            continue;
        };
        let key = (doc.kind, doc.namespace.clone(), doc.name.clone());
        if let Some(&i) = seen.get(&key) {
            let earlier = docs[i].raw.origin.clone();
            cx.notes.push(Note {
                origin: Some(doc.raw.origin.clone()),
                resource: Some(doc.res()),
                message: format!(
                    "replaces the same resource from {earlier}, as kubectl apply would"
                ),
            });
            docs[i] = doc;
        } else {
            seen.insert(key, docs.len());
            docs.push(doc);
        }
    }

    // Every object is checked alone; a stream is refused if any object is.
    let mut index = PolicyIndex::new(config.clone());
    for doc in docs {
        let object = doc.object_ref();
        match index.apply_doc(doc, Vec::new()) {
            Ok(_) => {
                if let Some(ObjectStatus::Accepted { notes }) = index.status(&object) {
                    cx.notes.extend(notes.iter().cloned());
                }
            }
            Err((_, errors)) => cx.errors.extend(errors),
        }
    }
    cx.errors
        .sort_by_key(|e| (e.origin.document, e.origin.item));
    if !cx.errors.is_empty() {
        return Err(LoadErrors(cx.errors));
    }
    let mut policy = index.snapshot();
    cx.notes.extend(index.notes().iter().cloned());
    policy.notes = cx.notes;
    policy.counts = counts;
    Ok(policy)
}

/// Checks one object alone: its errors and notes, and what it bears on.
pub(crate) fn check(doc: &Doc, config: &PolicyConfig) -> (Cx, Touch) {
    let mut cx = Cx::default();
    let mut b = Builder::new(config);
    b.add(&mut cx, doc);
    let touch = b.touch();
    (cx, touch)
}

/// Links accepted objects, in the order given, into a policy.
pub(crate) fn link<'d>(docs: impl Iterator<Item = &'d Doc>, config: &PolicyConfig) -> Linked {
    let mut b = Builder::new(config);
    // Their own errors and notes were taken when each was accepted.
    let mut read = Cx::default();
    for doc in docs {
        b.add(&mut read, doc);
    }
    let mut cx = Cx::default();
    b.link(&mut cx);
    Linked {
        policy: MeshPolicy {
            addresses: crate::destination::AddressIndex::build(&b.services, &b.endpoints),
            services: b
                .services
                .into_iter()
                .map(|(k, s)| (k, Arc::new(s)))
                .collect(),
            servers: b.servers,
            workloads: b.workloads,
            endpoints: b.endpoints,
            namespaces: b.namespaces,
            config: config.clone(),
            notes: Vec::new(),
            counts: BTreeMap::new(),
        },
        notes: cx.notes,
    }
}

// === impl Doc ===

impl Doc {
    /// Which object this is, for the index.
    pub(crate) fn object_ref(&self) -> ObjectRef {
        ObjectRef {
            group: self.group.clone(),
            kind: self.kind_name.clone(),
            // Namespaces are cluster-scoped; everything else read defaults to `default`.
            namespace: if self.kind == Kind::Namespace {
                String::new()
            } else {
                self.namespace.clone()
            },
            name: self.name.clone(),
        }
    }

    pub(crate) fn kind_name(&self) -> &str {
        &self.kind_name
    }

    pub(crate) fn namespace(&self) -> &str {
        &self.namespace
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    fn res(&self) -> String {
        format!("{}/{}/{}", self.kind_name, self.namespace, self.name)
    }

    fn id(&self) -> ResourceId {
        ResourceId::new(&self.kind_name, &self.namespace, &self.name)
    }
}

// === impl Cx ===

impl Cx {
    fn err(&mut self, doc: &Doc, field: impl Into<String>, message: impl Into<String>) {
        let field = field.into();
        self.errors.push(LoadError {
            origin: doc.raw.origin.clone(),
            line: None,
            resource: Some(doc.res()),
            field: (!field.is_empty()).then_some(field),
            message: message.into(),
        });
    }

    fn note(&mut self, doc: &Doc, message: impl Into<String>) {
        self.notes.push(Note {
            origin: Some(doc.raw.origin.clone()),
            resource: Some(doc.res()),
            message: message.into(),
        });
    }

    /// Recognises the kind; counts and notes what is skipped.
    pub(crate) fn identify(
        &mut self,
        raw: RawObject,
        counts: &mut BTreeMap<String, usize>,
    ) -> Option<Doc> {
        let origin = raw.origin.clone();
        let kind_name = match raw.value.get("kind") {
            Some(Value::String(k)) => k.clone(),
            _ => {
                let message = if raw.value.is_mapping() {
                    "kind: missing; every resource needs a kind"
                } else {
                    "a resource must be a mapping with apiVersion, kind and metadata"
                };
                self.errors.push(LoadError {
                    origin,
                    line: None,
                    resource: None,
                    field: None,
                    message: message.to_owned(),
                });
                return None;
            }
        };
        *counts.entry(kind_name.clone()).or_default() += 1;
        let api_version = raw
            .value
            .get("apiVersion")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let (group, version) = match &api_version {
            Some(v) => match v.as_str().rsplit_once('/') {
                Some((g, v)) => (g.to_owned(), v.to_owned()),
                None => (String::new(), v.to_owned()),
            },
            None => match infer_group(&kind_name) {
                Some((g, v)) => {
                    self.notes.push(Note {
                        origin: Some(origin.clone()),
                        resource: Some(kind_name.clone()),
                        message: format!("no apiVersion; read as {g}/{v}"),
                    });
                    (g.to_owned(), v.to_owned())
                }
                None => {
                    self.notes.push(Note {
                        origin: Some(origin),
                        resource: Some(kind_name.clone()),
                        message: "no apiVersion and not a kind the mesh reads; skipped".to_owned(),
                    });
                    return None;
                }
            },
        };

        if let Some(instead) = istio_replacement(&group, &kind_name) {
            self.notes.push(Note {
                origin: Some(origin),
                resource: Some(format!("{kind_name} ({group})")),
                message: format!("Istio kind skipped; {instead}"),
            });
            return None;
        }

        let Some((kind, served)) = known_kind(&group, &kind_name) else {
            // Pods are `v1`; Linkerd's injector reads one under any apiVersion, and so do we.
            if kind_name == "Pod" {
                let doc = self.doc(raw, Kind::Pod, String::new(), kind_name, version)?;
                let av = api_version.unwrap_or_default();
                self.note(
                    &doc,
                    format!("apiVersion {av} is wrong for a Pod (Pods are v1); read as v1"),
                );
                return Some(doc);
            }
            let what = if group.is_empty() {
                version.clone()
            } else {
                format!("{group}/{version}")
            };
            self.notes.push(Note {
                origin: Some(origin),
                resource: Some(format!("{kind_name} ({what})")),
                message: "not a kind the mesh reads; skipped".to_owned(),
            });
            return None;
        };
        if !served.contains(&version.as_str()) {
            let mut doc = self.doc(raw, kind, group.clone(), kind_name, version.clone())?;
            doc.version = version.clone();
            self.err(
                &doc,
                "apiVersion",
                format!(
                    "{group}/{version} is not a served version of {} (served: {})",
                    doc.kind_name,
                    served.join(", ")
                ),
            );
            return None;
        }
        self.doc(raw, kind, group, kind_name, version)
    }

    fn doc(
        &mut self,
        raw: RawObject,
        kind: Kind,
        group: String,
        kind_name: String,
        version: String,
    ) -> Option<Doc> {
        let meta: kinds::ObjectMeta = match raw.value.get("metadata") {
            None | Some(Value::Null) => kinds::ObjectMeta::default(),
            Some(m) => match serde_path_to_error::deserialize(m.clone()) {
                Ok(m) => m,
                Err(e) => {
                    self.errors.push(LoadError {
                        origin: raw.origin.clone(),
                        line: None,
                        resource: Some(kind_name),
                        field: Some(join_path("metadata", &e.path().to_string())),
                        message: e.into_inner().to_string(),
                    });
                    return None;
                }
            },
        };
        let Some(name) = meta.name.clone().filter(|n| !n.is_empty()) else {
            self.errors.push(LoadError {
                origin: raw.origin.clone(),
                line: None,
                resource: Some(kind_name),
                field: Some("metadata.name".to_owned()),
                message: "missing; every resource needs a name".to_owned(),
            });
            return None;
        };
        let namespace = meta
            .namespace
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "default".to_owned());
        Some(Doc {
            kind,
            group,
            kind_name,
            version,
            meta,
            name,
            namespace,
            raw,
        })
    }

    /// Deserializes `field` of the document (`spec`, or `""` for the whole object), naming the
    /// field path, and the line where the YAML parser can tell.
    fn typed<T: DeserializeOwned>(&mut self, doc: &Doc, field: &str) -> Option<T> {
        // Deserialize from a borrowed subtree: no copy of the document.
        let mut value = &doc.raw.value;
        if !field.is_empty() {
            for part in field.split('.') {
                value = value.get(part).unwrap_or(&Value::Null);
            }
        }
        match serde_path_to_error::deserialize::<_, T>(value) {
            Ok(t) => Some(t),
            Err(e) => {
                let path = join_path(field, &e.path().to_string());
                let line = (field == "spec")
                    .then(|| {
                        doc.raw
                            .text
                            .as_deref()
                            .and_then(|t| spec_error_line::<T>(t))
                    })
                    .flatten()
                    .map(|l| doc.raw.origin.line + l - 1);
                let msg = e.into_inner().to_string();
                let msg = match msg.find(" at line ") {
                    Some(i) => msg[..i].to_owned(),
                    None => msg,
                };
                let msg = if msg.starts_with("invalid type: unit value") {
                    "missing".to_owned()
                } else {
                    msg
                };
                self.errors.push(LoadError {
                    origin: doc.raw.origin.clone(),
                    line,
                    resource: Some(doc.res()),
                    field: Some(path),
                    message: msg,
                });
                None
            }
        }
    }
}

/// Re-parses a document from its text to learn the line of a `spec` error.
fn spec_error_line<T: DeserializeOwned>(text: &str) -> Option<usize> {
    #[derive(serde::Deserialize)]
    #[serde(bound = "T: DeserializeOwned")]
    struct SpecOf<T> {
        #[allow(dead_code)]
        spec: T,
    }
    match serde_norway::from_str::<SpecOf<T>>(text) {
        Ok(_) => None,
        Err(e) => e.location().map(|l| l.line()),
    }
}

fn join_path(prefix: &str, path: &str) -> String {
    match (prefix, path) {
        (p, ".") | (p, "") => p.to_owned(),
        ("", path) => path.to_owned(),
        (p, path) => format!("{p}.{path}"),
    }
}

fn infer_group(kind: &str) -> Option<(&'static str, &'static str)> {
    Some(match kind {
        "TrafficSplit" => ("split.smi-spec.io", "v1alpha4"),
        "HTTPRouteGroup" => ("specs.smi-spec.io", "v1alpha4"),
        "HTTPRoute" | "GRPCRoute" => ("gateway.networking.k8s.io", "v1"),
        "ServiceProfile" => ("linkerd.io", "v1alpha2"),
        "Server" => ("policy.linkerd.io", "v1beta3"),
        "ServerAuthorization" => ("policy.linkerd.io", "v1beta1"),
        "AuthorizationPolicy"
        | "MeshTLSAuthentication"
        | "NetworkAuthentication"
        | "HTTPLocalRateLimitPolicy" => ("policy.linkerd.io", "v1alpha1"),
        _ => return None,
    })
}

fn known_kind(group: &str, kind: &str) -> Option<(Kind, &'static [&'static str])> {
    const SMI: &[&str] = &["v1alpha1", "v1alpha2", "v1alpha3", "v1alpha4"];
    Some(match (group, kind) {
        ("split.smi-spec.io", "TrafficSplit") => (Kind::TrafficSplit, SMI),
        ("specs.smi-spec.io", "HTTPRouteGroup") => (Kind::HttpRouteGroup, SMI),
        ("gateway.networking.k8s.io", "HTTPRoute") => {
            (Kind::HttpRoute, &["v1", "v1beta1", "v1alpha2"])
        }
        ("gateway.networking.k8s.io", "GRPCRoute") => (Kind::GrpcRoute, &["v1", "v1alpha2"]),
        ("policy.linkerd.io", "HTTPRoute") => (
            Kind::LinkerdHttpRoute,
            &["v1alpha1", "v1beta1", "v1beta2", "v1beta3"],
        ),
        ("linkerd.io", "ServiceProfile") => (Kind::ServiceProfile, &["v1alpha1", "v1alpha2"]),
        ("policy.linkerd.io", "Server") => {
            (Kind::Server, &["v1alpha1", "v1beta1", "v1beta2", "v1beta3"])
        }
        ("policy.linkerd.io", "ServerAuthorization") => {
            (Kind::ServerAuthorization, &["v1alpha1", "v1beta1"])
        }
        ("policy.linkerd.io", "AuthorizationPolicy") => (Kind::AuthorizationPolicy, &["v1alpha1"]),
        ("policy.linkerd.io", "MeshTLSAuthentication") => {
            (Kind::MeshTlsAuthentication, &["v1alpha1"])
        }
        ("policy.linkerd.io", "NetworkAuthentication") => {
            (Kind::NetworkAuthentication, &["v1alpha1"])
        }
        ("policy.linkerd.io", "HTTPLocalRateLimitPolicy") => (Kind::RateLimitPolicy, &["v1alpha1"]),
        ("", "Service") => (Kind::Service, &["v1"]),
        ("", "Pod") => (Kind::Pod, &["v1"]),
        ("", "Namespace") => (Kind::Namespace, &["v1"]),
        ("discovery.k8s.io", "EndpointSlice") => (Kind::EndpointSlice, &["v1"]),
        ("apps", "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet") => {
            (Kind::Workload, &["v1"])
        }
        ("batch", "Job") => (Kind::Workload, &["v1"]),
        ("batch", "CronJob") => (Kind::CronJob, &["v1", "v1beta1"]),
        _ => return None,
    })
}

fn istio_replacement(group: &str, kind: &str) -> Option<&'static str> {
    if !group.ends_with("istio.io") {
        return None;
    }
    Some(match kind {
        "VirtualService" => {
            "use a Gateway API HTTPRoute with a Service parentRef (weighted backendRefs, matches, timeouts)"
        }
        "DestinationRule" => {
            "load balancing (EWMA) and failure accrual are built in; express subsets as separate Services"
        }
        "PeerAuthentication" => {
            "mesh mTLS is automatic; require it with a Server and AuthorizationPolicy (or the all-authenticated default policy)"
        }
        "AuthorizationPolicy" => {
            "use policy.linkerd.io AuthorizationPolicy with a MeshTLSAuthentication or NetworkAuthentication"
        }
        "ServiceEntry" => "describe external destinations as a Service with EndpointSlices",
        "Gateway" => "use a Gateway API Gateway",
        _ => "the mesh reads Gateway API, SMI and Linkerd kinds instead",
    })
}

/// Collects compiled pieces while the documents are read, then links references.
struct Builder<'c> {
    config: &'c PolicyConfig,
    services: HashMap<String, ServicePolicy>,
    servers: Vec<Server>,
    server_labels: Vec<BTreeMap<String, String>>,
    workloads: Vec<Workload>,
    endpoints: Vec<EndpointSet>,
    namespaces: BTreeMap<String, NamespaceInfo>,
    routes: Vec<ParsedRoute>,
    splits: Vec<(ResourceId, String, Backends, Vec<String>, usize)>,
    route_groups: HashMap<(String, String), Vec<HttpMatch>>,
    profiles: Vec<(ResourceId, String, String, kinds::ServiceProfileSpec, usize)>,
    server_auths: Vec<(ResourceId, ServerTarget, Authorization, usize)>,
    auth_policies: Vec<(ParsedAuthPolicy, usize)>,
    mesh_tls: HashMap<(String, String), Vec<IdentityMatch>>,
    networks: HashMap<(String, String), Vec<NetworkMatch>>,
    rate_limits: Vec<(RateLimit, kinds::PolicyRef, usize)>,
    /// (endpoint set, address, pod name) to resolve to the pod's service account.
    endpoint_pods: Vec<(usize, usize, String)>,
    /// Documents by index, for notes raised while linking.
    origins: Vec<(crate::manifest::Origin, String)>,
}

// === impl Builder ===

impl<'c> Builder<'c> {
    fn new(config: &'c PolicyConfig) -> Self {
        Self {
            config,
            services: HashMap::new(),
            servers: Vec::new(),
            server_labels: Vec::new(),
            workloads: Vec::new(),
            endpoints: Vec::new(),
            namespaces: BTreeMap::new(),
            routes: Vec::new(),
            splits: Vec::new(),
            route_groups: HashMap::new(),
            profiles: Vec::new(),
            server_auths: Vec::new(),
            auth_policies: Vec::new(),
            mesh_tls: HashMap::new(),
            networks: HashMap::new(),
            rate_limits: Vec::new(),
            endpoint_pods: Vec::new(),
            origins: Vec::new(),
        }
    }

    fn trust_domain(&self) -> &str {
        &self.config.inbound.trust_domain
    }

    fn origin(&mut self, doc: &Doc) -> usize {
        self.origins.push((doc.raw.origin.clone(), doc.res()));
        self.origins.len() - 1
    }

    fn note_at(&self, cx: &mut Cx, at: usize, message: String) {
        let (origin, res) = &self.origins[at];
        cx.notes.push(Note {
            origin: Some(origin.clone()),
            resource: Some(res.clone()),
            message,
        });
    }

    fn service_mut(&mut self, name: &str, namespace: &str) -> &mut ServicePolicy {
        self.services
            .entry(format!("{name}.{namespace}"))
            .or_insert_with(|| ServicePolicy {
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
            })
    }

    fn add(&mut self, cx: &mut Cx, doc: &Doc) {
        match doc.kind {
            Kind::TrafficSplit => self.add_split(cx, doc),
            Kind::HttpRouteGroup => self.add_route_group(cx, doc),
            Kind::HttpRoute | Kind::LinkerdHttpRoute => {
                if let Some(spec) = cx.typed::<kinds::HttpRouteSpec>(doc, "spec") {
                    self.add_http_route(cx, doc, spec);
                }
            }
            Kind::GrpcRoute => {
                if let Some(spec) = cx.typed::<kinds::GrpcRouteSpec>(doc, "spec") {
                    self.add_grpc_route(cx, doc, spec);
                }
            }
            Kind::ServiceProfile => {
                if let Some(spec) = cx.typed::<kinds::ServiceProfileSpec>(doc, "spec") {
                    self.add_profile(cx, doc, spec);
                }
            }
            Kind::Server => {
                if let Some(spec) = cx.typed::<kinds::ServerSpec>(doc, "spec") {
                    self.add_server(cx, doc, spec);
                }
            }
            Kind::ServerAuthorization => {
                if let Some(spec) = cx.typed::<kinds::ServerAuthorizationSpec>(doc, "spec") {
                    self.add_server_authorization(cx, doc, spec);
                }
            }
            Kind::AuthorizationPolicy => {
                if let Some(spec) = cx.typed::<kinds::AuthorizationPolicySpec>(doc, "spec") {
                    self.add_auth_policy(cx, doc, spec);
                }
            }
            Kind::MeshTlsAuthentication => {
                if let Some(spec) = cx.typed::<kinds::MeshTlsAuthenticationSpec>(doc, "spec") {
                    self.add_mesh_tls(cx, doc, spec);
                }
            }
            Kind::NetworkAuthentication => {
                if let Some(spec) = cx.typed::<kinds::NetworkAuthenticationSpec>(doc, "spec") {
                    if spec.networks.is_empty() {
                        cx.err(doc, "spec.networks", "at least one network is required");
                    }
                    if let Some(nets) = networks(cx, doc, "spec.networks", &spec.networks) {
                        self.networks
                            .insert((doc.namespace.clone(), doc.name.clone()), nets);
                    }
                }
            }
            Kind::RateLimitPolicy => {
                if let Some(spec) = cx.typed::<kinds::RateLimitPolicySpec>(doc, "spec") {
                    self.add_rate_limit(cx, doc, spec);
                }
            }
            Kind::Service => self.add_service(cx, doc),
            Kind::EndpointSlice => self.add_endpoint_slice(cx, doc),
            Kind::Namespace => {
                let policy = self.default_policy_annotation(cx, doc);
                self.namespaces.insert(
                    doc.name.clone(),
                    NamespaceInfo {
                        default_policy: policy,
                    },
                );
            }
            Kind::Workload => self.add_workload(cx, doc, "spec.template"),
            Kind::CronJob => self.add_workload(cx, doc, "spec.jobTemplate.spec.template"),
            Kind::Pod => self.add_pod(cx, doc),
        }
    }

    fn default_policy_annotation(&self, cx: &mut Cx, doc: &Doc) -> Option<DefaultPolicy> {
        let key = "config.linkerd.io/default-inbound-policy";
        let v = doc.meta.annotations.get(key)?;
        match v.parse() {
            Ok(p) => Some(p),
            Err(e) => {
                cx.err(doc, format!("metadata.annotations[{key:?}]"), e);
                None
            }
        }
    }

    // --- SMI ---

    fn add_split(&mut self, cx: &mut Cx, doc: &Doc) {
        let Some(spec) = cx.typed::<kinds::TrafficSplitSpec>(doc, "spec") else {
            return;
        };
        let quantities = spec
            .backends
            .iter()
            .any(|b| matches!(b.weight, Some(IntOrString::String(_))));
        let mut list = Vec::new();
        for (i, b) in spec.backends.iter().enumerate() {
            let field = format!("spec.backends[{i}].weight");
            let weight = match &b.weight {
                None => Some(if quantities { 1000 } else { 1 }),
                Some(IntOrString::Int(n)) if *n < 0 => {
                    cx.err(
                        doc,
                        field,
                        format!("{n} is negative; weights are 0 or more"),
                    );
                    None
                }
                Some(IntOrString::Int(n)) => Some(if quantities {
                    *n as u64 * 1000
                } else {
                    *n as u64
                }),
                Some(IntOrString::String(q)) => match parse_milli_quantity(q) {
                    Ok(m) => Some(m),
                    Err(e) => {
                        cx.err(doc, field, e);
                        None
                    }
                },
            };
            if b.service.is_empty() {
                cx.err(doc, format!("spec.backends[{i}].service"), "empty");
                continue;
            }
            if let Some(weight) = weight {
                list.push(WeightedBackend {
                    backend: service_ref(&b.service, &doc.namespace, None),
                    weight,
                });
            }
        }
        if spec.backends.is_empty() {
            cx.err(doc, "spec.backends", "at least one backend is required");
        }
        if spec.service.is_empty() {
            cx.err(doc, "spec.service", "empty; name the apex Service");
            return;
        }
        // Checked here, with the split alone, so that linking only links.
        let mut groups = Vec::new();
        for (i, r) in spec.matches.iter().enumerate() {
            if r.kind.as_deref().is_some_and(|k| k != "HTTPRouteGroup") {
                cx.err(
                    doc,
                    format!("spec.matches[{i}].kind"),
                    "only HTTPRouteGroup matches are supported",
                );
            } else {
                groups.push(r.name.clone());
            }
        }
        let at = self.origin(doc);
        let apex = spec
            .service
            .split('.')
            .next()
            .unwrap_or(&spec.service)
            .to_owned();
        self.splits
            .push((doc.id(), apex, Backends::new(list), groups, at));
    }

    fn add_route_group(&mut self, cx: &mut Cx, doc: &Doc) {
        let spec: kinds::HttpRouteGroupSpec = match doc.raw.value.get("spec") {
            Some(_) => match cx.typed(doc, "spec") {
                Some(s) => s,
                None => return,
            },
            None => {
                // smi-spec's own examples put `matches` beside `spec`; read it there too.
                let Some(matches) =
                    cx.typed::<Option<Vec<kinds::HttpRouteGroupMatch>>>(doc, "matches")
                else {
                    return;
                };
                if matches.is_some() {
                    cx.note(doc, "`matches` is outside `spec`; read as spec.matches");
                }
                kinds::HttpRouteGroupSpec {
                    matches: matches.unwrap_or_default(),
                }
            }
        };
        for (i, m) in spec.matches.iter().enumerate() {
            let field = format!("spec.matches[{i}]");
            let path = match &m.path_regex {
                Some(r) => match route::full_regex(r) {
                    Ok(r) => PathMatch::Regex(r),
                    Err(e) => {
                        cx.err(doc, format!("{field}.pathRegex"), e);
                        continue;
                    }
                },
                None => PathMatch::Prefix("/".to_owned()),
            };
            let mut headers = Vec::new();
            let pairs: Vec<(String, String)> = match &m.headers {
                None => Vec::new(),
                Some(kinds::SmiHeaders::Map(map)) => map.clone().into_iter().collect(),
                Some(kinds::SmiHeaders::List(l)) => l.iter().flat_map(|m| m.clone()).collect(),
            };
            for (name, value) in pairs {
                match route::full_regex(&value) {
                    Ok(r) => headers.push(ValueMatch {
                        name: name.to_ascii_lowercase(),
                        value: ValuePattern::Regex(r),
                    }),
                    Err(e) => cx.err(doc, format!("{field}.headers.{name}"), e),
                }
            }
            let methods: Vec<Option<String>> =
                if m.methods.is_empty() || m.methods.iter().any(|x| x == "*") {
                    vec![None]
                } else {
                    m.methods
                        .iter()
                        .map(|x| Some(x.to_ascii_uppercase()))
                        .collect()
                };
            let group = self
                .route_groups
                .entry((doc.namespace.clone(), doc.name.clone()))
                .or_default();
            for method in methods {
                group.push(HttpMatch {
                    path: path.clone(),
                    method,
                    headers: headers.clone(),
                    query: Vec::new(),
                });
            }
        }
        self.route_groups
            .entry((doc.namespace.clone(), doc.name.clone()))
            .or_default();
    }

    // --- routes ---

    fn parents(&mut self, cx: &mut Cx, doc: &Doc, refs: &[kinds::ParentRef]) -> Vec<RouteParent> {
        let mut out = Vec::new();
        if refs.is_empty() {
            cx.note(
                doc,
                "no parentRefs: validated, but it steers no mesh traffic",
            );
        }
        for (i, p) in refs.iter().enumerate() {
            let group = p.group.as_deref().unwrap_or("gateway.networking.k8s.io");
            let kind = p.kind.as_deref().unwrap_or("Gateway");
            let namespace = p.namespace.clone().unwrap_or_else(|| doc.namespace.clone());
            // An omitted group defaults to Gateway API's own, which has no Service kind: a
            // user who wrote `kind: Service` means the core one.
            let core = p.group.is_none() || matches!(group, "" | "core");
            match (group, kind) {
                (_, "Service") if core => {
                    let port = match p.port {
                        None => None,
                        Some(n) => match port(n) {
                            Ok(n) => Some(n),
                            Err(e) => {
                                cx.err(doc, format!("spec.parentRefs[{i}].port"), e);
                                continue;
                            }
                        },
                    };
                    out.push(RouteParent::Service {
                        name: p.name.clone(),
                        namespace,
                        port,
                    });
                }
                ("policy.linkerd.io", "Server") => out.push(RouteParent::Server {
                    name: p.name.clone(),
                    namespace,
                }),
                _ => cx.note(
                    doc,
                    format!(
                        "spec.parentRefs[{i}] is a {kind} ({group}), not a Service or Server: validated, but it steers no mesh traffic"
                    ),
                ),
            }
        }
        out
    }

    fn add_http_route(&mut self, cx: &mut Cx, doc: &Doc, spec: kinds::HttpRouteSpec) {
        annotated(cx, doc, false);
        let parents = self.parents(cx, doc, &spec.parent_refs);
        let mut rules = Vec::new();
        for (r, rule) in spec.rules.iter().enumerate() {
            let field = format!("spec.rules[{r}]");
            let mut matches = Vec::new();
            for (m, hm) in rule.matches.iter().enumerate() {
                if let Some(m) = http_match(cx, doc, &format!("{field}.matches[{m}]"), hm) {
                    matches.push(m);
                }
            }
            if rule.matches.is_empty() {
                matches.push(HttpMatch::any());
            }
            let backends = backend_refs(cx, doc, &field, &rule.backend_refs);
            let mut timeouts = Timeouts::default();
            if let Some(t) = &rule.timeouts {
                let mut dur = |name: &str, v: &Option<String>| {
                    v.as_deref().and_then(|v| match parse_duration(v) {
                        Ok(d) => Some(d),
                        Err(e) => {
                            cx.err(doc, format!("{field}.timeouts.{name}"), e);
                            None
                        }
                    })
                };
                timeouts.request = dur("request", &t.request).filter(|d| !d.is_zero());
                timeouts.backend_request =
                    dur("backendRequest", &t.backend_request).filter(|d| !d.is_zero());
                if let (Some(req), Some(be)) = (timeouts.request, timeouts.backend_request)
                    && be > req
                {
                    cx.err(
                        doc,
                        format!("{field}.timeouts.backendRequest"),
                        format!("{be:?} is longer than timeouts.request ({req:?})"),
                    );
                }
            }
            let filters = filters(cx, doc, &format!("{field}.filters"), &rule.filters);
            rules.push(ParsedRule {
                matches,
                backends,
                timeouts,
                filters,
            });
        }
        if spec.rules.is_empty() {
            rules.push(ParsedRule {
                matches: vec![HttpMatch::any()],
                backends: Vec::new(),
                timeouts: Timeouts::default(),
                filters: Vec::new(),
            });
        }
        self.routes.push(ParsedRoute {
            id: doc.id(),
            created: doc.meta.creation_timestamp.clone(),
            grpc: false,
            parents,
            rules,
            annotations: doc.meta.annotations.clone(),
        });
    }

    fn add_grpc_route(&mut self, cx: &mut Cx, doc: &Doc, spec: kinds::GrpcRouteSpec) {
        annotated(cx, doc, true);
        let parents = self.parents(cx, doc, &spec.parent_refs);
        let mut rules = Vec::new();
        for (r, rule) in spec.rules.iter().enumerate() {
            let field = format!("spec.rules[{r}]");
            let mut matches = Vec::new();
            for (m, gm) in rule.matches.iter().enumerate() {
                let mfield = format!("{field}.matches[{m}]");
                let path = match &gm.method {
                    None => Some(PathMatch::Prefix("/".to_owned())),
                    Some(mm) => grpc_path(cx, doc, &format!("{mfield}.method"), mm),
                };
                let headers = value_matches(cx, doc, &format!("{mfield}.headers"), &gm.headers);
                if let (Some(path), Some(headers)) = (path, headers) {
                    matches.push(HttpMatch {
                        path,
                        method: None,
                        headers,
                        query: Vec::new(),
                    });
                }
            }
            if rule.matches.is_empty() {
                matches.push(HttpMatch::any());
            }
            let backends = backend_refs(cx, doc, &field, &rule.backend_refs);
            let filters = filters(cx, doc, &format!("{field}.filters"), &rule.filters);
            rules.push(ParsedRule {
                matches,
                backends,
                timeouts: Timeouts::default(),
                filters,
            });
        }
        self.routes.push(ParsedRoute {
            id: doc.id(),
            created: doc.meta.creation_timestamp.clone(),
            grpc: true,
            parents,
            rules,
            annotations: doc.meta.annotations.clone(),
        });
    }

    // --- ServiceProfile ---

    fn add_profile(&mut self, cx: &mut Cx, doc: &Doc, spec: kinds::ServiceProfileSpec) {
        // The name is the Service's FQDN: <svc>.<ns>.svc.<cluster-domain>.
        let mut parts = doc.name.split('.');
        let svc = parts.next().unwrap_or(&doc.name).to_owned();
        let ns = parts
            .next()
            .map_or_else(|| doc.namespace.clone(), str::to_owned);
        // Check everything now, so that errors name the profile's fields.
        for (i, r) in spec.routes.iter().enumerate() {
            let field = format!("spec.routes[{i}]");
            if r.name.is_empty() {
                cx.err(doc, format!("{field}.name"), "a route needs a name");
            }
            profile_match(cx, doc, &format!("{field}.condition"), &r.condition);
            for (j, c) in r.response_classes.iter().enumerate() {
                response_match(
                    cx,
                    doc,
                    &format!("{field}.responseClasses[{j}].condition"),
                    &c.condition,
                );
            }
            if let Some(t) = &r.timeout
                && let Err(e) = parse_duration(t)
            {
                cx.err(doc, format!("{field}.timeout"), e);
            }
        }
        if let Some(b) = &spec.retry_budget {
            if !(0.0..=1000.0).contains(&b.retry_ratio) || b.retry_ratio.is_nan() {
                cx.err(
                    doc,
                    "spec.retryBudget.retryRatio",
                    format!("{} is not a ratio of 0 or more", b.retry_ratio),
                );
            }
            if b.min_retries_per_second < 0 || b.min_retries_per_second > i64::from(u32::MAX) {
                cx.err(
                    doc,
                    "spec.retryBudget.minRetriesPerSecond",
                    format!("{} is out of range", b.min_retries_per_second),
                );
            }
            if let Err(e) = parse_duration(&b.ttl) {
                cx.err(doc, "spec.retryBudget.ttl", e);
            }
        }
        for (i, o) in spec.dst_overrides.iter().enumerate() {
            let w = match &o.weight {
                IntOrString::Int(n) => u64::try_from(*n).map_err(|_| format!("{n} is negative")),
                IntOrString::String(s) => parse_milli_quantity(s),
            };
            if let Err(e) = w {
                cx.err(doc, format!("spec.dstOverrides[{i}].weight"), e);
            }
            if o.authority.is_empty() {
                cx.err(doc, format!("spec.dstOverrides[{i}].authority"), "empty");
            }
        }
        let at = self.origin(doc);
        self.profiles.push((doc.id(), svc, ns, spec, at));
    }

    // --- inbound ---

    fn add_server(&mut self, cx: &mut Cx, doc: &Doc, spec: kinds::ServerSpec) {
        let selector = match (&spec.pod_selector, &spec.external_workload_selector) {
            (Some(s), None) | (None, Some(s)) => selector(cx, doc, "spec.podSelector", s),
            (Some(_), Some(_)) => {
                cx.err(
                    doc,
                    "spec",
                    "podSelector and externalWorkloadSelector are exclusive",
                );
                None
            }
            (None, None) => {
                cx.err(doc, "spec.podSelector", "missing; a Server selects pods");
                None
            }
        };
        let port = match &spec.port {
            IntOrString::Int(n) => match port(*n) {
                Ok(p) => Some(ServerPort::Number(p)),
                Err(e) => {
                    cx.err(doc, "spec.port", e);
                    None
                }
            },
            IntOrString::String(name) => match port_name(name) {
                Ok(()) => Some(ServerPort::Name(name.clone())),
                Err(e) => {
                    cx.err(doc, "spec.port", e);
                    None
                }
            },
        };
        let proxy_protocol = match spec.proxy_protocol.as_deref().map(str::parse) {
            None => Some(ProxyProtocol::Unknown),
            Some(Ok(p)) => Some(p),
            Some(Err(e)) => {
                cx.err(doc, "spec.proxyProtocol", e);
                None
            }
        };
        let access_policy = match spec.access_policy.as_deref() {
            None => Some(DefaultPolicy::Deny),
            Some(p) => match p.parse() {
                Ok(p) => Some(p),
                Err(e) => {
                    cx.err(doc, "spec.accessPolicy", e);
                    None
                }
            },
        };
        if let (Some(selector), Some(port), Some(access_policy), Some(proxy_protocol)) =
            (selector, port, access_policy, proxy_protocol)
        {
            self.servers.push(Server {
                id: doc.id(),
                selector,
                port,
                proxy_protocol,
                access_policy,
                authorizations: Vec::new(),
                routes: Vec::new(),
                rate_limit: None,
            });
            self.server_labels.push(doc.meta.labels.clone());
        }
    }

    fn add_server_authorization(
        &mut self,
        cx: &mut Cx,
        doc: &Doc,
        spec: kinds::ServerAuthorizationSpec,
    ) {
        let mut requires = Vec::new();
        if spec.server.name.is_none() == spec.server.selector.is_none() {
            cx.err(
                doc,
                "spec.server",
                "exactly one of name or selector is required",
            );
        }
        if let Some(nets) = &spec.client.networks
            && let Some(n) = networks(cx, doc, "spec.client.networks", nets)
        {
            requires.push(Requirement::Network(n));
        }
        match (&spec.client.mesh_tls, spec.client.unauthenticated) {
            (Some(_), true) => {
                cx.err(
                    doc,
                    "spec.client",
                    "unauthenticated and meshTLS are exclusive",
                );
            }
            (None, false) => {
                cx.err(
                    doc,
                    "spec.client",
                    "one of unauthenticated or meshTLS is required",
                );
            }
            (None, true) => {}
            (Some(tls), false) => {
                let mut ids = Vec::new();
                if tls.unauthenticated_tls {
                    // TLS without a mesh identity: the closest we admit is any mesh client.
                    ids.push(IdentityMatch::Any);
                }
                for (i, s) in tls.identities.iter().enumerate() {
                    match IdentityMatch::parse(s) {
                        Ok(m) => ids.push(m),
                        Err(e) => cx.err(doc, format!("spec.client.meshTLS.identities[{i}]"), e),
                    }
                }
                for (i, sa) in tls.service_accounts.iter().enumerate() {
                    let ns = sa.namespace.as_deref().unwrap_or(&doc.namespace);
                    match Identity::new(self.trust_domain(), ns, &sa.name) {
                        Ok(id) => ids.push(IdentityMatch::Exact(id)),
                        Err(e) => cx.err(
                            doc,
                            format!("spec.client.meshTLS.serviceAccounts[{i}]"),
                            e.to_string(),
                        ),
                    }
                }
                if tls.identities.is_empty()
                    && tls.service_accounts.is_empty()
                    && !tls.unauthenticated_tls
                {
                    ids.push(IdentityMatch::Any);
                }
                requires.push(Requirement::MeshTls(ids));
            }
        }
        let target = match (&spec.server.name, &spec.server.selector) {
            (Some(n), _) => Some(ServerTarget::Name(n.clone())),
            (None, Some(sel)) => {
                selector(cx, doc, "spec.server.selector", sel).map(ServerTarget::Selector)
            }
            (None, None) => None,
        };
        if let Some(target) = target {
            let at = self.origin(doc);
            let auth = Authorization {
                source: doc.id(),
                requires,
            };
            self.server_auths.push((doc.id(), target, auth, at));
        }
    }

    fn add_auth_policy(&mut self, cx: &mut Cx, doc: &Doc, spec: kinds::AuthorizationPolicySpec) {
        let mut requires = Vec::new();
        for (i, r) in spec.required_authentication_refs.iter().enumerate() {
            let namespace = r.namespace.clone().unwrap_or_else(|| doc.namespace.clone());
            let name = r.name.clone().unwrap_or_default();
            match r.kind.as_str() {
                "MeshTLSAuthentication" => requires.push(AuthRef::MeshTls { namespace, name }),
                "NetworkAuthentication" => requires.push(AuthRef::Network { namespace, name }),
                "ServiceAccount" => match Identity::new(self.trust_domain(), &namespace, &name) {
                    Ok(id) => requires.push(AuthRef::Identity(id)),
                    Err(e) => cx.err(
                        doc,
                        format!("spec.requiredAuthenticationRefs[{i}]"),
                        e.to_string(),
                    ),
                },
                other => cx.err(
                    doc,
                    format!("spec.requiredAuthenticationRefs[{i}].kind"),
                    format!(
                        "{other:?} is not MeshTLSAuthentication, NetworkAuthentication or ServiceAccount"
                    ),
                ),
            }
        }
        let t = &spec.target_ref;
        let namespace = t.namespace.clone().unwrap_or_else(|| doc.namespace.clone());
        let name = t.name.clone().unwrap_or_default();
        let target = match t.kind.as_str() {
            "Server" => PolicyTarget::Server { namespace, name },
            "Namespace" => PolicyTarget::Namespace(name),
            "HTTPRoute" | "GRPCRoute" => PolicyTarget::Route {
                kind: t.kind.clone(),
                namespace,
                name,
            },
            other => {
                cx.err(
                    doc,
                    "spec.targetRef.kind",
                    format!("{other:?} is not Server, HTTPRoute, GRPCRoute or Namespace"),
                );
                return;
            }
        };
        let at = self.origin(doc);
        let policy = ParsedAuthPolicy {
            id: doc.id(),
            requires,
            target,
        };
        self.auth_policies.push((policy, at));
    }

    fn add_mesh_tls(&mut self, cx: &mut Cx, doc: &Doc, spec: kinds::MeshTlsAuthenticationSpec) {
        let mut ids = Vec::new();
        if spec.identities.is_empty() == spec.identity_refs.is_empty() {
            cx.err(
                doc,
                "spec",
                "exactly one of identities or identityRefs is required",
            );
        }
        for (i, s) in spec.identities.iter().enumerate() {
            match IdentityMatch::parse(s) {
                Ok(m) => ids.push(m),
                Err(e) => cx.err(doc, format!("spec.identities[{i}]"), e),
            }
        }
        for (i, r) in spec.identity_refs.iter().enumerate() {
            let field = format!("spec.identityRefs[{i}]");
            let ns = r.namespace.as_deref().unwrap_or(&doc.namespace);
            match (r.kind.as_str(), r.name.as_deref()) {
                ("ServiceAccount", Some("*")) | ("Namespace", None) => {
                    ids.push(IdentityMatch::Namespace {
                        namespace: ns.to_owned(),
                        trust_domain: Some(self.trust_domain().to_owned()),
                    })
                }
                ("Namespace", Some(name)) => ids.push(IdentityMatch::Namespace {
                    namespace: name.to_owned(),
                    trust_domain: Some(self.trust_domain().to_owned()),
                }),
                ("ServiceAccount", Some(name)) => {
                    match Identity::new(self.trust_domain(), ns, name) {
                        Ok(id) => ids.push(IdentityMatch::Exact(id)),
                        Err(e) => cx.err(doc, field, e.to_string()),
                    }
                }
                ("ServiceAccount", None) => cx.err(doc, format!("{field}.name"), "missing"),
                (k, _) => cx.err(
                    doc,
                    format!("{field}.kind"),
                    format!("{k:?} is not ServiceAccount or Namespace"),
                ),
            }
        }
        self.mesh_tls
            .insert((doc.namespace.clone(), doc.name.clone()), ids);
    }

    fn add_rate_limit(&mut self, cx: &mut Cx, doc: &Doc, spec: kinds::RateLimitPolicySpec) {
        if spec.target_ref.kind != "Server" {
            cx.err(
                doc,
                "spec.targetRef.kind",
                format!("{:?}: a rate limit targets a Server", spec.target_ref.kind),
            );
        }
        let rps = |cx: &mut Cx, field: &str, v: i64| match u32::try_from(v) {
            Ok(n) if n > 0 => Some(n),
            _ => {
                cx.err(
                    doc,
                    field,
                    format!("{v} is not a positive number of requests per second"),
                );
                None
            }
        };
        let total = spec
            .total
            .as_ref()
            .and_then(|t| rps(cx, "spec.total.requestsPerSecond", t.requests_per_second));
        let per_identity = spec
            .identity
            .as_ref()
            .and_then(|t| rps(cx, "spec.identity.requestsPerSecond", t.requests_per_second));
        let mut overrides = Vec::new();
        for (i, o) in spec.overrides.iter().enumerate() {
            let Some(n) = rps(
                cx,
                &format!("spec.overrides[{i}].requestsPerSecond"),
                o.requests_per_second,
            ) else {
                continue;
            };
            let mut ids = Vec::new();
            for (j, c) in o.client_refs.iter().enumerate() {
                let field = format!("spec.overrides[{i}].clientRefs[{j}]");
                if c.kind != "ServiceAccount" {
                    cx.err(
                        doc,
                        format!("{field}.kind"),
                        format!("{:?}: overrides name ServiceAccounts", c.kind),
                    );
                    continue;
                }
                let ns = c.namespace.as_deref().unwrap_or(&doc.namespace);
                match c
                    .name
                    .as_deref()
                    .map(|n| Identity::new(self.trust_domain(), ns, n))
                {
                    Some(Ok(id)) => ids.push(id),
                    Some(Err(e)) => cx.err(doc, field, e.to_string()),
                    None => cx.err(doc, format!("{field}.name"), "missing"),
                }
            }
            overrides.push((n, ids));
        }
        let at = self.origin(doc);
        self.rate_limits.push((
            RateLimit {
                source: doc.id(),
                total,
                per_identity,
                overrides,
            },
            spec.target_ref,
            at,
        ));
    }

    // --- core kinds ---

    fn add_service(&mut self, cx: &mut Cx, doc: &Doc) {
        use k8s_openapi::api::core::v1::ServiceSpec;
        use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString as K8sIntOrString;
        let Some(spec) = cx.typed::<Option<ServiceSpec>>(doc, "spec") else {
            return;
        };
        let spec = spec.unwrap_or_default();
        let mut ports = Vec::new();
        for (i, p) in spec.ports.iter().flatten().enumerate() {
            let number = match port(i64::from(p.port)) {
                Ok(n) => n,
                Err(e) => {
                    cx.err(doc, format!("spec.ports[{i}].port"), e);
                    continue;
                }
            };
            let target = match &p.target_port {
                None => None,
                Some(K8sIntOrString::Int(n)) => match port(i64::from(*n)) {
                    Ok(n) => Some(TargetPort::Number(n)),
                    Err(e) => {
                        cx.err(doc, format!("spec.ports[{i}].targetPort"), e);
                        continue;
                    }
                },
                Some(K8sIntOrString::String(s)) => Some(TargetPort::Name(s.clone())),
            };
            ports.push(ServicePort {
                name: p.name.clone(),
                port: number,
                target,
            });
        }
        let (cluster_ips, headless) = cluster_ips(cx, doc, &spec);
        // Check the annotations here, where errors can name the Service.
        annotated(cx, doc, false);
        let svc = self.service_mut(&doc.name, &doc.namespace);
        svc.ports = ports;
        svc.cluster_ips = cluster_ips;
        svc.headless = headless;
        svc.selector = spec.selector;
        svc.annotations = doc.meta.annotations.clone();
    }

    fn add_endpoint_slice(&mut self, cx: &mut Cx, doc: &Doc) {
        use k8s_openapi::api::discovery::v1::EndpointSlice;
        let Some(slice) = cx.typed::<EndpointSlice>(doc, "") else {
            return;
        };
        let Some(service) = doc.meta.labels.get("kubernetes.io/service-name").cloned() else {
            cx.err(
                doc,
                "metadata.labels",
                "an EndpointSlice needs the kubernetes.io/service-name label",
            );
            return;
        };
        let mut ports = Vec::new();
        for (i, p) in slice.ports.iter().flatten().enumerate() {
            match p.port.map(|n| port(i64::from(n))) {
                Some(Ok(n)) => ports.push((p.name.clone(), n)),
                Some(Err(e)) => cx.err(doc, format!("ports[{i}].port"), e),
                None => {}
            }
        }
        let slice_sa = doc.meta.annotations.get("mesh.io/service-account").cloned();
        let mut addresses = Vec::new();
        for (i, e) in slice.endpoints.iter().flatten().enumerate() {
            if e.conditions.as_ref().and_then(|c| c.ready) == Some(false) {
                continue;
            }
            // The pod behind the endpoint, resolved to its service account when linking.
            let pod = e
                .target_ref
                .as_ref()
                .filter(|r| r.kind.as_deref() == Some("Pod"))
                .and_then(|r| r.name.clone());
            for (j, a) in e.addresses.iter().enumerate() {
                match a.parse() {
                    Ok(ip) => {
                        addresses.push(EndpointAddress {
                            ip,
                            service_account: slice_sa.clone(),
                            pod: pod.clone(),
                        });
                        if let Some(pod) = &pod {
                            self.endpoint_pods.push((
                                self.endpoints.len(),
                                addresses.len() - 1,
                                pod.clone(),
                            ));
                        }
                    }
                    Err(_) => cx.err(
                        doc,
                        format!("endpoints[{i}].addresses[{j}]"),
                        format!("{a:?} is not an IP address"),
                    ),
                }
            }
        }
        self.endpoints.push(EndpointSet {
            service,
            namespace: doc.namespace.clone(),
            ports,
            addresses,
        });
    }

    fn add_workload(&mut self, cx: &mut Cx, doc: &Doc, template: &str) {
        use k8s_openapi::api::core::v1::PodTemplateSpec;
        let Some(t) = cx.typed::<Option<PodTemplateSpec>>(doc, template) else {
            return;
        };
        let Some(t) = t else {
            cx.err(doc, template, "missing; a workload needs a pod template");
            return;
        };
        let meta = t.metadata.unwrap_or_default();
        self.push_workload(
            cx,
            doc,
            meta.labels.unwrap_or_default(),
            meta.annotations.unwrap_or_default(),
            t.spec,
        );
    }

    fn add_pod(&mut self, cx: &mut Cx, doc: &Doc) {
        use k8s_openapi::api::core::v1::PodSpec;
        let Some(spec) = cx.typed::<Option<PodSpec>>(doc, "spec") else {
            return;
        };
        self.push_workload(
            cx,
            doc,
            doc.meta.labels.clone(),
            doc.meta.annotations.clone(),
            spec,
        );
    }

    fn push_workload(
        &mut self,
        cx: &mut Cx,
        doc: &Doc,
        labels: BTreeMap<String, String>,
        annotations: BTreeMap<String, String>,
        spec: Option<k8s_openapi::api::core::v1::PodSpec>,
    ) {
        use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString as K8sIntOrString;
        let mut ports = Vec::new();
        let mut probes = Vec::new();
        let service_account = spec.as_ref().and_then(|s| {
            s.service_account_name
                .clone()
                .or_else(|| s.service_account.clone())
        });
        let containers = spec.map(|s| s.containers).unwrap_or_default();
        for c in &containers {
            for p in c.ports.iter().flatten() {
                if let Ok(n) = port(i64::from(p.container_port)) {
                    ports.push((n, p.name.clone()));
                }
            }
        }
        for c in &containers {
            for probe in [&c.liveness_probe, &c.readiness_probe, &c.startup_probe]
                .into_iter()
                .flatten()
            {
                let Some(get) = &probe.http_get else { continue };
                let number = match &get.port {
                    K8sIntOrString::Int(n) => port(i64::from(*n)).ok(),
                    K8sIntOrString::String(name) => ports
                        .iter()
                        .find(|(_, n)| n.as_deref() == Some(name.as_str()))
                        .map(|(p, _)| *p),
                };
                if let Some(n) = number {
                    probes.push((n, get.path.clone().unwrap_or_else(|| "/".to_owned())));
                }
            }
        }
        if let Some(p) = annotations.get("config.linkerd.io/default-inbound-policy")
            && let Err(e) = p.parse::<DefaultPolicy>()
        {
            cx.err(
                doc,
                "spec.template.metadata.annotations[\"config.linkerd.io/default-inbound-policy\"]",
                e,
            );
        }
        self.workloads.push(Workload {
            id: doc.id(),
            labels,
            annotations,
            ports,
            probes,
            service_account,
        });
    }

    /// What the objects added so far bear on (used with one object added alone).
    fn touch(&self) -> Touch {
        let mut t = Touch {
            workloads: !self.workloads.is_empty(),
            ..Touch::default()
        };
        for svc in self.services.values() {
            t.services.insert((svc.namespace.clone(), svc.name.clone()));
        }
        for r in &self.routes {
            for p in &r.parents {
                match p {
                    RouteParent::Service {
                        name, namespace, ..
                    } => t.services.insert((namespace.clone(), name.clone())),
                    RouteParent::Server { namespace, .. } => t.inbound.insert(namespace.clone()),
                };
            }
        }
        for (id, apex, _, groups, _) in &self.splits {
            t.services.insert((id.namespace.clone(), apex.clone()));
            for g in groups {
                let read = ("HTTPRouteGroup".to_owned(), id.namespace.clone(), g.clone());
                t.reads.insert(read);
            }
        }
        for (_, svc, ns, _, _) in &self.profiles {
            t.services.insert((ns.clone(), svc.clone()));
        }
        for s in &self.servers {
            t.inbound.insert(s.id.namespace.clone());
        }
        for (id, ..) in &self.server_auths {
            t.inbound.insert(id.namespace.clone());
        }
        for (p, _) in &self.auth_policies {
            match &p.target {
                PolicyTarget::Server { namespace, .. } => t.inbound.insert(namespace.clone()),
                PolicyTarget::Namespace(ns) => t.inbound.insert(ns.clone()),
                PolicyTarget::Route {
                    namespace, name, ..
                } => t.routes.insert((namespace.clone(), name.clone())),
            };
            for r in &p.requires {
                let read = match r {
                    AuthRef::MeshTls { namespace, name } => {
                        ("MeshTLSAuthentication", namespace, name)
                    }
                    AuthRef::Network { namespace, name } => {
                        ("NetworkAuthentication", namespace, name)
                    }
                    AuthRef::Identity(_) => continue,
                };
                t.reads
                    .insert((read.0.to_owned(), read.1.clone(), read.2.clone()));
            }
        }
        for (rl, target, _) in &self.rate_limits {
            let ns = target
                .namespace
                .clone()
                .unwrap_or_else(|| rl.source.namespace.clone());
            t.inbound.insert(ns);
        }
        for set in &self.endpoints {
            t.endpoints
                .insert((set.namespace.clone(), set.service.clone()));
        }
        for (set, _, pod) in &self.endpoint_pods {
            let ns = self.endpoints[*set].namespace.clone();
            t.reads.insert(("Pod".to_owned(), ns, pod.clone()));
        }
        t.inbound.extend(self.namespaces.keys().cloned());
        t
    }

    // --- linking ---

    fn link(&mut self, cx: &mut Cx) {
        for (set, addr, pod) in std::mem::take(&mut self.endpoint_pods) {
            let ns = self.endpoints[set].namespace.clone();
            let sa = self
                .workloads
                .iter()
                .find(|w| w.id.kind == "Pod" && w.id.name == pod && w.id.namespace == ns)
                .map(|w| {
                    w.service_account
                        .clone()
                        .unwrap_or_else(|| "default".to_owned())
                });
            if let Some(sa) = sa {
                self.endpoints[set].addresses[addr].service_account = Some(sa);
            }
        }
        self.link_profiles(cx);
        self.link_routes(cx);
        self.link_splits(cx);
        self.link_authorizations(cx);
        self.link_rate_limits(cx);
        // Service-level annotations apply to the default route of Services without a profile.
        for svc in self.services.values_mut() {
            if svc.profile.is_none() {
                let a = annotations_of(&svc.annotations, false);
                let route = Arc::make_mut(&mut svc.default_route);
                route.timeouts = Timeouts {
                    request: a.request,
                    backend_request: a.response,
                };
                route.retry = a.retry;
            }
        }
    }

    fn link_profiles(&mut self, cx: &mut Cx) {
        let profiles = std::mem::take(&mut self.profiles);
        for (id, svc_name, ns, spec, at) in profiles {
            let budget = spec
                .retry_budget
                .as_ref()
                .map(|b| RetryBudgetConfig {
                    retry_ratio: b.retry_ratio,
                    min_retries_per_second: u32::try_from(b.min_retries_per_second).unwrap_or(0),
                    ttl: parse_duration(&b.ttl).unwrap_or(Duration::from_secs(10)),
                })
                .unwrap_or_default();
            let overrides: Vec<WeightedBackend> = spec
                .dst_overrides
                .iter()
                .filter_map(|o| {
                    let w = match &o.weight {
                        IntOrString::Int(n) => u64::try_from(*n).ok()?.checked_mul(1000)?,
                        IntOrString::String(s) => parse_milli_quantity(s).ok()?,
                    };
                    let (host, port) = route::split_authority(&o.authority, 0).ok()?;
                    let port = (port != 0).then_some(port);
                    let short = host.strip_suffix(".cluster.local").unwrap_or(host);
                    let short = short.strip_suffix(".svc").unwrap_or(short);
                    Some(WeightedBackend {
                        backend: service_ref(short, &ns, port),
                        weight: w,
                    })
                })
                .collect();
            let mut routes = Vec::new();
            let mut matches = Vec::new();
            for r in &spec.routes {
                let Some(m) = compile_profile_match(&r.condition) else {
                    continue;
                };
                let explicit_method = profile_methods(&r.condition);
                let retry = r.is_retryable.then(|| RetryPolicy {
                    limit: PROFILE_RETRY_LIMIT,
                    conditions: RetryConditions {
                        http: Vec::new(),
                        grpc: Vec::new(),
                        on_failure_class: true,
                    },
                    per_try_timeout: None,
                    allow_non_idempotent: explicit_method
                        .iter()
                        .any(|m| !crate::retry::is_idempotent(m)),
                    budget,
                });
                let classes = r
                    .response_classes
                    .iter()
                    .filter_map(|c| {
                        Some(ResponseClass {
                            condition: compile_response_match(&c.condition)?,
                            is_failure: c.is_failure,
                        })
                    })
                    .collect();
                matches.push((m, routes.len()));
                routes.push(Arc::new(Route {
                    name: r.name.clone(),
                    source: Some(id.clone()),
                    rule: None,
                    backends: Arc::default(),
                    timeouts: Timeouts {
                        request: r.timeout.as_deref().and_then(|t| parse_duration(t).ok()),
                        backend_request: None,
                    },
                    retry,
                    response_classes: classes,
                    filters: Vec::new(),
                    grpc: false,
                    created: None,
                }));
            }
            let svc = self.service_mut(&svc_name, &ns);
            if let Some(prev) = &svc.profile {
                let msg =
                    format!("{prev} already governs {svc_name}.{ns}; this profile replaces it");
                self.note_at(cx, at, msg);
            }
            let svc = self.service_mut(&svc_name, &ns);
            svc.profile = Some(id);
            svc.routes = routes;
            svc.profile_routes = matches;
            if !overrides.is_empty() {
                Arc::make_mut(&mut svc.default_route).backends = Arc::new(Backends::new(overrides));
            }
        }
    }

    fn link_routes(&mut self, cx: &mut Cx) {
        let routes = std::mem::take(&mut self.routes);
        // (service key, route) pairs, then sort entries by precedence per service.
        let mut inert = Vec::new();
        for pr in routes {
            let ann = annotations_of(&pr.annotations, pr.grpc);
            for parent in &pr.parents {
                match parent {
                    RouteParent::Service {
                        name,
                        namespace,
                        port,
                    } => {
                        let svc = self.service_mut(name, namespace);
                        if svc.profile.is_some() {
                            inert.push((
                                pr.id.clone(),
                                format!("{name}.{namespace}"),
                                svc.profile.clone(),
                            ));
                            continue;
                        }
                        // Service annotations fill what the route's own do not set.
                        let svc_ann = annotations_of(&svc.annotations, pr.grpc);
                        for (i, rule) in pr.rules.iter().enumerate() {
                            let backends = if rule.backends.is_empty() {
                                vec![WeightedBackend {
                                    backend: BackendRef {
                                        name: name.clone(),
                                        namespace: namespace.clone(),
                                        port: *port,
                                    },
                                    weight: 1,
                                }]
                            } else {
                                rule.backends.clone()
                            };
                            let timeouts = Timeouts {
                                request: ann.request.or(rule.timeouts.request).or(svc_ann.request),
                                backend_request: ann
                                    .response
                                    .or(rule.timeouts.backend_request)
                                    .or(svc_ann.response),
                            };
                            let mut retry = ann.retry.clone().or_else(|| svc_ann.retry.clone());
                            if let Some(r) = &mut retry {
                                r.allow_non_idempotent = rule.matches.iter().any(|m| {
                                    m.method().is_some_and(|m| !crate::retry::is_idempotent(m))
                                });
                            }
                            let idx = svc.routes.len();
                            svc.routes.push(Arc::new(Route {
                                name: pr.id.name.clone(),
                                source: Some(pr.id.clone()),
                                rule: Some(i),
                                backends: Arc::new(Backends::new(backends)),
                                timeouts,
                                retry,
                                response_classes: Vec::new(),
                                filters: rule.filters.clone(),
                                grpc: pr.grpc,
                                created: pr.created.clone(),
                            }));
                            for m in &rule.matches {
                                svc.entries.push(RouteEntry {
                                    route: idx,
                                    port: *port,
                                    m: m.clone(),
                                });
                            }
                        }
                    }
                    RouteParent::Server { name, namespace } => {
                        let matches: Vec<HttpMatch> = pr
                            .rules
                            .iter()
                            .flat_map(|r| r.matches.iter().cloned())
                            .collect();
                        match self
                            .servers
                            .iter_mut()
                            .find(|s| s.id.name == *name && s.id.namespace == *namespace)
                        {
                            Some(s) => s.routes.push(InboundRoute {
                                source: pr.id.clone(),
                                matches,
                                authorizations: Vec::new(),
                            }),
                            None => cx.notes.push(Note {
                                origin: None,
                                resource: Some(pr.id.to_string()),
                                message: format!(
                                    "its parent Server {namespace}/{name} is not in the input; it has no effect"
                                ),
                            }),
                        }
                    }
                }
            }
        }
        for (id, svc, profile) in inert {
            let profile = profile.map(|p| p.to_string()).unwrap_or_default();
            cx.notes.push(Note {
                origin: None,
                resource: Some(id.to_string()),
                message: format!(
                    "inert: {profile} governs Service {svc}, and a ServiceProfile takes precedence over HTTPRoutes (as in Linkerd)"
                ),
            });
        }
        for svc in self.services.values_mut() {
            let routes = &svc.routes;
            svc.entries.sort_by(|a, b| {
                let (ra, rb) = (&routes[a.route], &routes[b.route]);
                a.m.precedence(&b.m)
                    .then_with(|| match (&ra.created, &rb.created) {
                        (Some(x), Some(y)) => x.cmp(y),
                        (Some(_), None) => std::cmp::Ordering::Less,
                        (None, Some(_)) => std::cmp::Ordering::Greater,
                        (None, None) => std::cmp::Ordering::Equal,
                    })
                    .then_with(|| ra.source.cmp(&rb.source))
                    .then_with(|| ra.rule.cmp(&rb.rule))
            });
        }
    }

    fn link_splits(&mut self, cx: &mut Cx) {
        let splits = std::mem::take(&mut self.splits);
        for (id, apex, backends, refs, at) in splits {
            let mut matches = Vec::new();
            for r in &refs {
                match self.route_groups.get(&(id.namespace.clone(), r.clone())) {
                    Some(m) => matches.extend(m.iter().cloned()),
                    None => self.note_at(
                        cx,
                        at,
                        format!("HTTPRouteGroup {r} is not in the input; the split applies to no request until it exists"),
                    ),
                }
            }
            if !refs.is_empty() && matches.is_empty() {
                // Matches named but none resolved: the split must not apply to everything.
                matches.push(HttpMatch {
                    path: PathMatch::Exact(String::new()),
                    method: None,
                    headers: Vec::new(),
                    query: Vec::new(),
                });
            }
            let svc = self.service_mut(&apex, &id.namespace);
            if let Some(prev) = &svc.split {
                let msg = format!(
                    "{} already splits {apex}.{}; this split replaces it",
                    prev.source, id.namespace
                );
                self.note_at(cx, at, msg);
            }
            let svc = self.service_mut(&apex, &id.namespace);
            if !svc.entries.is_empty() {
                let msg = format!(
                    "HTTPRoutes steer {apex}.{}; the split applies only to requests no route attaches to",
                    id.namespace
                );
                self.note_at(cx, at, msg);
            }
            let svc = self.service_mut(&apex, &id.namespace);
            svc.split = Some(Split {
                source: id,
                backends: Arc::new(backends),
                matches,
            });
        }
    }

    fn link_authorizations(&mut self, cx: &mut Cx) {
        for (id, target, auth, at) in std::mem::take(&mut self.server_auths) {
            let mut hit = false;
            for (s, labels) in self.servers.iter_mut().zip(&self.server_labels) {
                if s.id.namespace != id.namespace {
                    continue;
                }
                let selected = match &target {
                    ServerTarget::Name(n) => &s.id.name == n,
                    ServerTarget::Selector(sel) => sel.matches(labels),
                };
                if selected {
                    s.authorizations.push(auth.clone());
                    hit = true;
                }
            }
            if !hit {
                self.note_at(
                    cx,
                    at,
                    "selects no Server in the input; it has no effect".to_owned(),
                );
            }
        }

        for (policy, at) in std::mem::take(&mut self.auth_policies) {
            let mut requires = Vec::new();
            let mut complete = true;
            for r in &policy.requires {
                match r {
                    AuthRef::MeshTls { namespace, name } => {
                        match self.mesh_tls.get(&(namespace.clone(), name.clone())) {
                            Some(ids) => requires.push(Requirement::MeshTls(ids.clone())),
                            None => {
                                complete = false;
                                self.note_at(cx, at, format!("MeshTLSAuthentication {namespace}/{name} is not in the input; this policy grants nothing until it exists"));
                            }
                        }
                    }
                    AuthRef::Network { namespace, name } => {
                        match self.networks.get(&(namespace.clone(), name.clone())) {
                            Some(n) => requires.push(Requirement::Network(n.clone())),
                            None => {
                                complete = false;
                                self.note_at(cx, at, format!("NetworkAuthentication {namespace}/{name} is not in the input; this policy grants nothing until it exists"));
                            }
                        }
                    }
                    AuthRef::Identity(id) => {
                        requires.push(Requirement::MeshTls(vec![IdentityMatch::Exact(id.clone())]))
                    }
                }
            }
            if !complete {
                continue;
            }
            let auth = Authorization {
                source: policy.id.clone(),
                requires,
            };
            let hit =
                match &policy.target {
                    PolicyTarget::Server { namespace, name } => {
                        let mut hit = false;
                        for s in self
                            .servers
                            .iter_mut()
                            .filter(|s| s.id.namespace == *namespace && s.id.name == *name)
                        {
                            s.authorizations.push(auth.clone());
                            hit = true;
                        }
                        hit
                    }
                    PolicyTarget::Namespace(ns) => {
                        for s in self.servers.iter_mut().filter(|s| s.id.namespace == *ns) {
                            s.authorizations.push(auth.clone());
                        }
                        // A namespace-wide policy holds whether or not Servers exist yet.
                        true
                    }
                    PolicyTarget::Route {
                        namespace, name, ..
                    } => {
                        let mut hit = false;
                        for s in &mut self.servers {
                            for r in s.routes.iter_mut().filter(|r| {
                                r.source.namespace == *namespace && r.source.name == *name
                            }) {
                                r.authorizations.push(auth.clone());
                                hit = true;
                            }
                        }
                        hit
                    }
                };
            if !hit {
                let (kind, tns, tname) = match &policy.target {
                    PolicyTarget::Server { namespace, name } => ("Server", namespace, name),
                    PolicyTarget::Namespace(ns) => ("Namespace", ns, ns),
                    PolicyTarget::Route {
                        kind,
                        namespace,
                        name,
                    } => (kind.as_str(), namespace, name),
                };
                self.note_at(cx, at, format!("its target {kind} {tns}/{tname} is not in the input (or not attached to a Server); it has no effect"));
            }
        }
    }

    fn link_rate_limits(&mut self, cx: &mut Cx) {
        for (rl, target, at) in std::mem::take(&mut self.rate_limits) {
            let ns = target
                .namespace
                .clone()
                .unwrap_or_else(|| rl.source.namespace.clone());
            let name = target.name.clone().unwrap_or_default();
            match self
                .servers
                .iter_mut()
                .find(|s| s.id.namespace == ns && s.id.name == name)
            {
                Some(s) => s.rate_limit = Some(rl),
                None => self.note_at(
                    cx,
                    at,
                    format!("its Server {ns}/{name} is not in the input; it has no effect"),
                ),
            }
        }
    }
}

// === field compilers ===

fn port(n: i64) -> Result<u16, String> {
    u16::try_from(n)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("{n} is not a port (1–65535)"))
}

fn port_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 15
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && name.bytes().any(|b| b.is_ascii_lowercase())
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is neither a port number nor a port name (lowercase, at most 15 characters)"
        ))
    }
}

fn service_ref(service: &str, namespace: &str, port: Option<u16>) -> BackendRef {
    let (name, ns) = service.split_once('.').unwrap_or((service, namespace));
    BackendRef {
        name: name.to_owned(),
        namespace: ns.to_owned(),
        port,
    }
}

fn http_match(cx: &mut Cx, doc: &Doc, field: &str, m: &kinds::HttpRouteMatch) -> Option<HttpMatch> {
    let path = match &m.path {
        None => PathMatch::Prefix("/".to_owned()),
        Some(p) => {
            let value = p.value.clone().unwrap_or_else(|| "/".to_owned());
            match p.kind.as_deref().unwrap_or("PathPrefix") {
                "Exact" | "PathPrefix" if !value.starts_with('/') => {
                    cx.err(
                        doc,
                        format!("{field}.path.value"),
                        format!("{value:?} must start with '/'"),
                    );
                    return None;
                }
                "Exact" => PathMatch::Exact(value),
                "PathPrefix" => PathMatch::Prefix(value),
                "RegularExpression" => match route::full_regex(&value) {
                    Ok(r) => PathMatch::Regex(r),
                    Err(e) => {
                        cx.err(doc, format!("{field}.path.value"), e);
                        return None;
                    }
                },
                other => {
                    cx.err(
                        doc,
                        format!("{field}.path.type"),
                        format!("{other:?} is not Exact, PathPrefix or RegularExpression"),
                    );
                    return None;
                }
            }
        }
    };
    let method = match &m.method {
        None => None,
        Some(x) => {
            const METHODS: &[&str] = &[
                "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
            ];
            if !METHODS.contains(&x.as_str()) {
                cx.err(
                    doc,
                    format!("{field}.method"),
                    format!("{x:?} is not one of {}", METHODS.join(", ")),
                );
                return None;
            }
            Some(x.clone())
        }
    };
    let headers = value_matches(cx, doc, &format!("{field}.headers"), &m.headers)?;
    let query = value_matches(cx, doc, &format!("{field}.queryParams"), &m.query_params)?;
    let headers_ok = headers.iter().all(|h| {
        h.name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    });
    if !headers_ok {
        cx.err(
            doc,
            format!("{field}.headers"),
            "a header name holds a character HTTP does not allow",
        );
        return None;
    }
    Some(HttpMatch {
        path,
        method,
        headers,
        query,
    })
}

fn value_matches(
    cx: &mut Cx,
    doc: &Doc,
    field: &str,
    list: &[kinds::ValueMatch],
) -> Option<Vec<ValueMatch>> {
    let mut out = Vec::new();
    let mut ok = true;
    for (i, v) in list.iter().enumerate() {
        if v.name.is_empty() {
            cx.err(doc, format!("{field}[{i}].name"), "empty");
            ok = false;
            continue;
        }
        // Only the first of several matches on one name counts (Gateway API).
        if out
            .iter()
            .any(|o: &ValueMatch| o.name.eq_ignore_ascii_case(&v.name))
        {
            continue;
        }
        let value = match v.kind.as_deref().unwrap_or("Exact") {
            "Exact" => ValuePattern::Exact(v.value.clone()),
            "RegularExpression" => match route::full_regex(&v.value) {
                Ok(r) => ValuePattern::Regex(r),
                Err(e) => {
                    cx.err(doc, format!("{field}[{i}].value"), e);
                    ok = false;
                    continue;
                }
            },
            other => {
                cx.err(
                    doc,
                    format!("{field}[{i}].type"),
                    format!("{other:?} is not Exact or RegularExpression"),
                );
                ok = false;
                continue;
            }
        };
        out.push(ValueMatch {
            name: if field.ends_with("headers") {
                v.name.to_ascii_lowercase()
            } else {
                v.name.clone()
            },
            value,
        });
    }
    ok.then_some(out)
}

fn grpc_path(cx: &mut Cx, doc: &Doc, field: &str, m: &kinds::GrpcMethodMatch) -> Option<PathMatch> {
    let (svc, method) = (m.service.as_deref(), m.method.as_deref());
    match m.kind.as_deref().unwrap_or("Exact") {
        "Exact" => Some(match (svc, method) {
            (Some(s), Some(me)) => PathMatch::Exact(format!("/{s}/{me}")),
            (Some(s), None) => PathMatch::Prefix(format!("/{s}")),
            (None, Some(me)) => match route::full_regex(&format!("/[^/]+/{}", regex::escape(me))) {
                Ok(r) => PathMatch::Regex(r),
                Err(e) => {
                    cx.err(doc, field, e);
                    return None;
                }
            },
            (None, None) => {
                cx.err(doc, field, "one of service or method is required");
                return None;
            }
        }),
        "RegularExpression" => {
            let s = svc.unwrap_or("[^/]+");
            let me = method.unwrap_or("[^/]+");
            match route::full_regex(&format!("/(?:{s})/(?:{me})")) {
                Ok(r) => Some(PathMatch::Regex(r)),
                Err(e) => {
                    cx.err(doc, field, e);
                    None
                }
            }
        }
        other => {
            cx.err(
                doc,
                format!("{field}.type"),
                format!("{other:?} is not Exact or RegularExpression"),
            );
            None
        }
    }
}

fn backend_refs(
    cx: &mut Cx,
    doc: &Doc,
    field: &str,
    refs: &[kinds::BackendRef],
) -> Vec<WeightedBackend> {
    let mut out = Vec::new();
    for (i, b) in refs.iter().enumerate() {
        let f = format!("{field}.backendRefs[{i}]");
        if let Some(b) = backend_ref(cx, doc, &f, b) {
            out.push(b);
        }
    }
    out
}

fn backend_ref(cx: &mut Cx, doc: &Doc, f: &str, b: &kinds::BackendRef) -> Option<WeightedBackend> {
    let group = b.group.as_deref().unwrap_or("");
    let kind = b.kind.as_deref().unwrap_or("Service");
    if !(matches!(group, "" | "core") && kind == "Service") {
        cx.err(
            doc,
            format!("{f}.kind"),
            format!("{kind} ({group}) backends are not supported; name a Service"),
        );
        return None;
    }
    if b.name.is_empty() {
        cx.err(doc, format!("{f}.name"), "empty");
        return None;
    }
    let port = match b.port {
        None => None,
        Some(n) => match port(n) {
            Ok(p) => Some(p),
            Err(e) => {
                cx.err(doc, format!("{f}.port"), e);
                return None;
            }
        },
    };
    let weight = b.weight.unwrap_or(1);
    if !(0..=MAX_WEIGHT).contains(&weight) {
        cx.err(
            doc,
            format!("{f}.weight"),
            format!("{weight} is not a weight (0–{MAX_WEIGHT})"),
        );
        return None;
    }
    Some(WeightedBackend {
        backend: BackendRef {
            name: b.name.clone(),
            namespace: b.namespace.clone().unwrap_or_else(|| doc.namespace.clone()),
            port,
        },
        weight: weight as u64,
    })
}

fn filters(cx: &mut Cx, doc: &Doc, field: &str, list: &[kinds::HttpRouteFilter]) -> Vec<Filter> {
    let mut out = Vec::new();
    for (i, f) in list.iter().enumerate() {
        let fi = format!("{field}[{i}]");
        let missing = |cx: &mut Cx, what: &str| {
            cx.err(
                doc,
                format!("{fi}.{what}"),
                format!("missing for type {}", f.kind),
            )
        };
        let modifier = |m: &kinds::HeaderModifier| HeaderModifier {
            set: m
                .set
                .iter()
                .map(|h| (h.name.clone(), h.value.clone()))
                .collect(),
            add: m
                .add
                .iter()
                .map(|h| (h.name.clone(), h.value.clone()))
                .collect(),
            remove: m.remove.clone(),
        };
        match f.kind.as_str() {
            "RequestHeaderModifier" => match &f.request_header_modifier {
                Some(m) => out.push(Filter::RequestHeaders(modifier(m))),
                None => missing(cx, "requestHeaderModifier"),
            },
            "ResponseHeaderModifier" => match &f.response_header_modifier {
                Some(m) => out.push(Filter::ResponseHeaders(modifier(m))),
                None => missing(cx, "responseHeaderModifier"),
            },
            "RequestRedirect" => match &f.request_redirect {
                Some(r) => {
                    let status = r.status_code.unwrap_or(302);
                    if status != 301 && status != 302 {
                        cx.err(
                            doc,
                            format!("{fi}.requestRedirect.statusCode"),
                            format!("{status} is not 301 or 302"),
                        );
                        continue;
                    }
                    let port = match r.port.map(port) {
                        Some(Err(e)) => {
                            cx.err(doc, format!("{fi}.requestRedirect.port"), e);
                            continue;
                        }
                        Some(Ok(p)) => Some(p),
                        None => None,
                    };
                    out.push(Filter::Redirect {
                        scheme: r.scheme.clone(),
                        hostname: r.hostname.clone(),
                        port,
                        status: status as u16,
                    });
                }
                None => missing(cx, "requestRedirect"),
            },
            "RequestMirror" => match &f.request_mirror {
                Some(m) => {
                    if let Some(b) = backend_ref(
                        cx,
                        doc,
                        &format!("{fi}.requestMirror.backendRef"),
                        &m.backend_ref,
                    ) {
                        out.push(Filter::Mirror(b.backend));
                    }
                }
                None => missing(cx, "requestMirror"),
            },
            "URLRewrite" => out.push(Filter::UrlRewrite),
            other => cx.err(
                doc,
                format!("{fi}.type"),
                format!("{other:?} is not a filter type this mesh knows"),
            ),
        }
    }
    out
}

fn selector(cx: &mut Cx, doc: &Doc, field: &str, s: &kinds::LabelSelector) -> Option<Selector> {
    let mut expressions = Vec::new();
    for (i, e) in s.match_expressions.iter().enumerate() {
        let f = format!("{field}.matchExpressions[{i}]");
        let expr = match e.operator.as_str() {
            "In" | "NotIn" if e.values.is_empty() => {
                cx.err(
                    doc,
                    format!("{f}.values"),
                    format!("{} needs at least one value", e.operator),
                );
                return None;
            }
            "In" => SelectorExpr::In(e.key.clone(), e.values.clone()),
            "NotIn" => SelectorExpr::NotIn(e.key.clone(), e.values.clone()),
            "Exists" => SelectorExpr::Exists(e.key.clone()),
            "DoesNotExist" => SelectorExpr::DoesNotExist(e.key.clone()),
            other => {
                cx.err(
                    doc,
                    format!("{f}.operator"),
                    format!("{other:?} is not In, NotIn, Exists or DoesNotExist"),
                );
                return None;
            }
        };
        expressions.push(expr);
    }
    Some(Selector {
        labels: s.match_labels.clone(),
        expressions,
    })
}

fn networks(
    cx: &mut Cx,
    doc: &Doc,
    field: &str,
    list: &[kinds::Network],
) -> Option<Vec<NetworkMatch>> {
    let mut out = Vec::new();
    let mut ok = true;
    for (i, n) in list.iter().enumerate() {
        let net = match n.cidr.parse::<Cidr>() {
            Ok(c) => c,
            Err(e) => {
                cx.err(doc, format!("{field}[{i}].cidr"), e);
                ok = false;
                continue;
            }
        };
        let mut except = Vec::new();
        for (j, e) in n.except.iter().enumerate() {
            match e.parse::<Cidr>() {
                Ok(c) => except.push(c),
                Err(err) => {
                    cx.err(doc, format!("{field}[{i}].except[{j}]"), err);
                    ok = false;
                }
            }
        }
        out.push(NetworkMatch { net, except });
    }
    ok.then_some(out)
}

/// Checks a ServiceProfile request condition as Linkerd's validator does.
fn profile_match(cx: &mut Cx, doc: &Doc, field: &str, m: &kinds::SpRequestMatch) {
    let set = m.path_regex.is_some()
        || m.method.is_some()
        || !m.all.is_empty()
        || !m.any.is_empty()
        || m.not.is_some();
    if !set {
        cx.err(doc, field, "a request match must have a field set");
    }
    if let Some(r) = &m.path_regex
        && let Err(e) = route::full_regex(r)
    {
        cx.err(doc, format!("{field}.pathRegex"), e);
    }
    if let Some(me) = &m.method
        && (me.is_empty() || !me.bytes().all(|b| b.is_ascii_alphabetic()))
    {
        cx.err(
            doc,
            format!("{field}.method"),
            format!("{me:?} is not an HTTP method"),
        );
    }
    for (i, s) in m.all.iter().enumerate() {
        profile_match(cx, doc, &format!("{field}.all[{i}]"), s);
    }
    for (i, s) in m.any.iter().enumerate() {
        profile_match(cx, doc, &format!("{field}.any[{i}]"), s);
    }
    if let Some(n) = &m.not {
        profile_match(cx, doc, &format!("{field}.not"), n);
    }
}

fn response_match(cx: &mut Cx, doc: &Doc, field: &str, m: &kinds::SpResponseMatch) {
    let set = m.status.is_some() || !m.all.is_empty() || !m.any.is_empty() || m.not.is_some();
    if !set {
        cx.err(doc, field, "a response match must have a field set");
    }
    if let Some(s) = &m.status {
        let check = |v: Option<i64>| v.is_none_or(|v| (100..=599).contains(&v));
        if !check(s.min) || !check(s.max) {
            cx.err(
                doc,
                format!("{field}.status"),
                "range min and max must be between 100 and 599",
            );
        } else if let (Some(lo), Some(hi)) = (s.min, s.max)
            && lo > hi
        {
            cx.err(
                doc,
                format!("{field}.status"),
                format!("range min {lo} is above max {hi}"),
            );
        }
        if s.min.is_none() && s.max.is_none() {
            cx.err(doc, format!("{field}.status"), "a range needs min or max");
        }
    }
    for (i, s) in m.all.iter().enumerate() {
        response_match(cx, doc, &format!("{field}.all[{i}]"), s);
    }
    for (i, s) in m.any.iter().enumerate() {
        response_match(cx, doc, &format!("{field}.any[{i}]"), s);
    }
    if let Some(n) = &m.not {
        response_match(cx, doc, &format!("{field}.not"), n);
    }
}

/// Several fields of one condition are ANDed, as in Linkerd.
fn compile_profile_match(m: &kinds::SpRequestMatch) -> Option<ProfileMatch> {
    let mut parts = Vec::new();
    if let Some(r) = &m.path_regex {
        parts.push(ProfileMatch::Path(route::full_regex(r).ok()?));
    }
    if let Some(me) = &m.method {
        parts.push(ProfileMatch::Method(me.to_ascii_uppercase()));
    }
    if !m.all.is_empty() {
        parts.push(ProfileMatch::All(
            m.all
                .iter()
                .map(compile_profile_match)
                .collect::<Option<_>>()?,
        ));
    }
    if !m.any.is_empty() {
        parts.push(ProfileMatch::Any(
            m.any
                .iter()
                .map(compile_profile_match)
                .collect::<Option<_>>()?,
        ));
    }
    if let Some(n) = &m.not {
        parts.push(ProfileMatch::Not(Box::new(compile_profile_match(n)?)));
    }
    match parts.len() {
        0 => None,
        1 => parts.pop(),
        _ => Some(ProfileMatch::All(parts)),
    }
}

/// Methods a profile condition requires (outside any `not`/`any`).
fn profile_methods(m: &kinds::SpRequestMatch) -> Vec<String> {
    let mut out: Vec<String> = m.method.iter().map(|x| x.to_ascii_uppercase()).collect();
    for a in &m.all {
        out.extend(profile_methods(a));
    }
    out
}

fn compile_response_match(m: &kinds::SpResponseMatch) -> Option<ResponseMatch> {
    let mut parts = Vec::new();
    if let Some(s) = &m.status {
        let min = u16::try_from(s.min.unwrap_or(100)).ok()?;
        let max = u16::try_from(s.max.unwrap_or(599)).ok()?;
        parts.push(ResponseMatch::Status { min, max });
    }
    if !m.all.is_empty() {
        parts.push(ResponseMatch::All(
            m.all
                .iter()
                .map(compile_response_match)
                .collect::<Option<_>>()?,
        ));
    }
    if !m.any.is_empty() {
        parts.push(ResponseMatch::Any(
            m.any
                .iter()
                .map(compile_response_match)
                .collect::<Option<_>>()?,
        ));
    }
    if let Some(n) = &m.not {
        parts.push(ResponseMatch::Not(Box::new(compile_response_match(n)?)));
    }
    match parts.len() {
        0 => None,
        1 => parts.pop(),
        _ => Some(ResponseMatch::All(parts)),
    }
}

/// A Service's `spec.clusterIP` and `spec.clusterIPs` (which repeats the first), and whether
/// it is headless (`None`). A value that is no address is an error naming the field.
fn cluster_ips(
    cx: &mut Cx,
    doc: &Doc,
    spec: &k8s_openapi::api::core::v1::ServiceSpec,
) -> (Vec<std::net::IpAddr>, bool) {
    let listed = spec.cluster_ips.iter().flatten().enumerate();
    let fields = spec
        .cluster_ip
        .iter()
        .map(|ip| ("spec.clusterIP".to_owned(), ip))
        .chain(listed.map(|(i, ip)| (format!("spec.clusterIPs[{i}]"), ip)));
    let (mut ips, mut headless) = (Vec::new(), false);
    for (field, value) in fields {
        match value.as_str() {
            "None" => headless = true,
            "" => {}
            v => match v.parse() {
                Ok(ip) if !ips.contains(&ip) => ips.push(ip),
                Ok(_) => {}
                Err(_) => cx.err(doc, field, format!("{v:?} is not an IP address or None")),
            },
        }
    }
    (ips, headless)
}

/// Checks `retry.linkerd.io/*` and `timeout.linkerd.io/*` annotations of a document, naming
/// the annotation in errors.
fn annotated(cx: &mut Cx, doc: &Doc, grpc: bool) {
    if let Err((key, e)) = parse_annotations(&doc.meta.annotations, grpc) {
        cx.err(doc, format!("metadata.annotations[{key:?}]"), e);
    }
}

/// Annotations already checked; errors were reported where the document was read.
fn annotations_of(map: &BTreeMap<String, String>, grpc: bool) -> Annotated {
    parse_annotations(map, grpc).unwrap_or_default()
}

fn parse_annotations(
    map: &BTreeMap<String, String>,
    grpc: bool,
) -> Result<Annotated, (String, String)> {
    let dur = |key: &str| -> Result<Option<Duration>, (String, String)> {
        match map.get(key) {
            None => Ok(None),
            Some(v) => parse_duration(v)
                .map(|d| (!d.is_zero()).then_some(d))
                .map_err(|e| (key.to_owned(), e)),
        }
    };
    let request = dur("timeout.linkerd.io/request")?;
    let response = dur("timeout.linkerd.io/response")?;
    let per_try = dur("retry.linkerd.io/timeout")?;
    let http = map
        .get("retry.linkerd.io/http")
        .map(|v| {
            RetryConditions::parse_http(v).map_err(|e| ("retry.linkerd.io/http".to_owned(), e))
        })
        .transpose()?;
    let grpc_codes = map
        .get("retry.linkerd.io/grpc")
        .map(|v| {
            RetryConditions::parse_grpc(v).map_err(|e| ("retry.linkerd.io/grpc".to_owned(), e))
        })
        .transpose()?;
    let limit = map
        .get("retry.linkerd.io/limit")
        .map(|v| {
            v.trim().parse::<u32>().map_err(|_| {
                (
                    "retry.linkerd.io/limit".to_owned(),
                    format!("{v:?} is not a whole number of retries"),
                )
            })
        })
        .transpose()?;
    let retry = (http.is_some() || grpc_codes.is_some() || limit.is_some()).then(|| {
        let (http, grpc_codes) = match (http, grpc_codes) {
            (None, None) if grpc => (Vec::new(), vec![1, 4, 8, 14]),
            (None, None) => (vec![(500, 599)], Vec::new()),
            (h, g) => (h.unwrap_or_default(), g.unwrap_or_default()),
        };
        RetryPolicy {
            limit: limit.unwrap_or(DEFAULT_RETRY_LIMIT),
            conditions: RetryConditions {
                http,
                grpc: grpc_codes,
                on_failure_class: false,
            },
            per_try_timeout: per_try,
            allow_non_idempotent: false,
            budget: RetryBudgetConfig::default(),
        }
    });
    Ok(Annotated {
        request,
        response,
        retry,
    })
}

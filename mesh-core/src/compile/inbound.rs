//! Inbound: Servers, and linking one namespace's inbound policy — the Servers there with the
//! routes, authorizations and rate limits that attach to them.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::delivery::resolve_faults;
use super::doc::{Cx, Doc};
use super::fields::{port, port_name, selector};
use super::gateway::{ParsedRoute, RouteParent};
use super::linkerd::{AuthRef, ParsedAuthPolicy, PolicyTarget, ServerTarget};
use super::object::{Entry, Key, Object, Reader};
use crate::authz::{
    Authorization, AuthorizationKind, DefaultPolicy, IdentityMatch, InboundRoute, InboundRule,
    ProxyProtocol, Requirement, Server, ServerPort,
};
use crate::filter::Filter;
use crate::kinds::{self, IntOrString};
use crate::policy::NamespaceInfo;

/// A Server after its own checks, with its labels (which ServerAuthorizations select on).
#[derive(Clone, Debug)]
pub(crate) struct ParsedServer {
    pub(crate) server: Server,
    pub(crate) labels: BTreeMap<String, String>,
}

/// One namespace's inbound policy, linked.
#[derive(Debug, Default)]
pub(crate) struct Inbound {
    /// Servers with what attaches to them, each with the apply order of its Server.
    pub(crate) servers: Vec<(u64, Server)>,
    /// The Namespace's `config.linkerd.io/default-inbound-policy`, when the index has it.
    pub(crate) namespace: Option<NamespaceInfo>,
}

pub(crate) fn parse_server(
    cx: &mut Cx,
    doc: &Doc,
    spec: &kinds::ServerSpec,
) -> Option<ParsedServer> {
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
    Some(ParsedServer {
        server: Server {
            id: Arc::new(doc.id()),
            selector: selector?,
            port: port?,
            proxy_protocol: proxy_protocol?,
            access_policy: access_policy?,
            authorizations: Vec::new(),
            routes: Vec::new(),
            rate_limit: None,
            created: doc.meta.creation_timestamp,
        },
        labels: doc.meta.labels.clone(),
    })
}

/// Links the inbound policy of `namespace` from the objects filed under it.
pub(crate) fn link_inbound(r: &mut Reader<'_>, namespace: &str) -> Inbound {
    let members: Vec<&Entry> = r.members(Key::Inbound(namespace.to_owned())).collect();
    let mut inbound = Inbound::default();
    let mut labels = Vec::new();
    for e in &members {
        match &e.object {
            Object::Server(s) => {
                inbound.servers.push((e.seq, s.server.clone()));
                labels.push(&s.labels);
            }
            Object::Namespace(info) if e.name == namespace => {
                inbound.namespace = Some(info.clone());
            }
            _ => {}
        }
    }
    let servers = &mut inbound.servers;
    let routes = attach_routes(r, &members, namespace, servers);
    attach_server_auths(&members, servers, &labels);
    // Policies apply in apply order, whether they target a Server, the namespace or a route.
    let mut policies: BTreeMap<u64, &ParsedAuthPolicy> = BTreeMap::new();
    for e in &members {
        if let Object::AuthPolicy(p) = &e.object {
            policies.insert(e.seq, p);
        }
    }
    for (ns, name) in routes {
        for e in r.members(Key::RoutePolicies(ns, name)) {
            if let Object::AuthPolicy(p) = &e.object {
                policies.insert(e.seq, p);
            }
        }
    }
    for p in policies.values() {
        if let Some(auth) = resolve_policy(r, p) {
            attach_policy(servers, namespace, p, &auth);
        }
    }
    for e in &members {
        if let Object::RateLimit(rl) = &e.object
            && let Some((_, s)) = servers
                .iter_mut()
                .find(|(_, s)| s.id.name == rl.server_name)
        {
            s.rate_limit = Some(Arc::clone(&rl.limit));
        }
    }
    inbound
}

/// Attaches the routes whose parent is a Server here; returns every route with a Server
/// parent, which policies may target.
fn attach_routes(
    r: &mut Reader<'_>,
    members: &[&Entry],
    namespace: &str,
    servers: &mut [(u64, Server)],
) -> BTreeSet<(String, String)> {
    let mut routes = BTreeSet::new();
    for e in members {
        let Object::Route(route) = &e.object else {
            continue;
        };
        for p in &route.parents {
            let RouteParent::Server {
                name,
                namespace: ns,
            } = p
            else {
                continue;
            };
            routes.insert((route.id.namespace.clone(), route.id.name.clone()));
            // Linkerd's policy controller ignores, for its Servers, a route with a filter the
            // inbound proxy cannot apply; `check` says so (`notes::inbound_filter_note`).
            if ns != namespace || !inbound_filters_supported(route) {
                continue;
            }
            if let Some((_, s)) = servers.iter_mut().find(|(_, s)| s.id.name == *name) {
                s.routes.push(inbound_route(r, route));
            }
        }
    }
    routes
}

/// A route as a Server's: its rules' matches and filters.
fn inbound_route(r: &mut Reader<'_>, route: &ParsedRoute) -> InboundRoute {
    let rules = (route.rules.iter())
        .map(|rule| InboundRule {
            matches: rule.matches.clone(),
            filters: resolve_faults(r, &route.id.namespace, &rule.filters).into(),
        })
        .collect();
    InboundRoute {
        source: Arc::new(route.id.clone()),
        rules,
        authorizations: Vec::new(),
    }
}

/// Whether the inbound proxy applies every filter of `route` (Linkerd applies header
/// modifiers and redirects to a Server's routes, not rewrites or mirrors).
pub(crate) fn inbound_filters_supported(route: &ParsedRoute) -> bool {
    unsupported_inbound(route).next().is_none()
}

/// The filters of `route` the inbound proxy does not apply.
pub(crate) fn unsupported_inbound(route: &ParsedRoute) -> impl Iterator<Item = &Filter> {
    (route.rules.iter())
        .flat_map(|r| &r.filters)
        .filter(|f| matches!(f, Filter::Rewrite(_) | Filter::Mirror(_)))
}

/// Attaches ServerAuthorizations to the Servers (here) they name or select.
fn attach_server_auths(
    members: &[&Entry],
    servers: &mut [(u64, Server)],
    labels: &[&BTreeMap<String, String>],
) {
    for e in members {
        let Object::ServerAuth(sa) = &e.object else {
            continue;
        };
        for ((_, s), labels) in servers.iter_mut().zip(labels) {
            let selected = match &sa.target {
                ServerTarget::Name(n) => &s.id.name == n,
                ServerTarget::Selector(sel) => sel.matches(labels),
            };
            if selected {
                s.authorizations.push(sa.auth.clone());
            }
        }
    }
}

/// What a policy requires, once every authentication it names is in the index; until then it
/// grants nothing.
fn resolve_policy(r: &mut Reader<'_>, p: &ParsedAuthPolicy) -> Option<Authorization> {
    let mut requires = Vec::new();
    for a in &p.requires {
        let found = match a {
            AuthRef::MeshTls { namespace, name } => {
                let key = Key::Named("MeshTLSAuthentication", namespace.clone(), name.clone());
                r.members(key).find_map(|e| match &e.object {
                    Object::MeshTls(ids) => Some(Requirement::MeshTls(ids.clone())),
                    _ => None,
                })
            }
            AuthRef::Network { namespace, name } => {
                let key = Key::Named("NetworkAuthentication", namespace.clone(), name.clone());
                r.members(key).find_map(|e| match &e.object {
                    Object::Network(n) => Some(Requirement::Network(n.clone())),
                    _ => None,
                })
            }
            AuthRef::Identity(id) => {
                Some(Requirement::MeshTls(vec![IdentityMatch::Exact(id.clone())]))
            }
        };
        requires.push(found?);
    }
    Some(Authorization {
        source: Arc::new(p.id.clone()),
        kind: AuthorizationKind::AuthorizationPolicy,
        requires,
    })
}

fn attach_policy(
    servers: &mut [(u64, Server)],
    namespace: &str,
    p: &ParsedAuthPolicy,
    auth: &Authorization,
) {
    for (_, s) in servers {
        match &p.target {
            PolicyTarget::Server {
                namespace: ns,
                name,
            } => {
                if ns == namespace && s.id.name == *name {
                    s.authorizations.push(auth.clone());
                }
            }
            PolicyTarget::Namespace(ns) => {
                if ns == namespace {
                    s.authorizations.push(auth.clone());
                }
            }
            PolicyTarget::Route {
                namespace: ns,
                name,
                ..
            } => {
                for r in s
                    .routes
                    .iter_mut()
                    .filter(|r| r.source.namespace == *ns && r.source.name == *name)
                {
                    r.authorizations.push(auth.clone());
                }
            }
        }
    }
}

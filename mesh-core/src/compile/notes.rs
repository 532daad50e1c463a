//! Notes that need the whole picture: profiles and splits that replace others, routes made
//! inert by a profile, references to objects that are not there. Linking never raises them;
//! this pass reads the accepted objects in apply order, as a stream's compile reports them.

use std::collections::{BTreeSet, HashMap};

use super::gateway::{ParsedRoute, RouteParent};
use super::inbound::{ParsedServer, unsupported_inbound};
use super::linkerd::{AuthRef, PolicyTarget, ServerTarget};
use super::object::{Entry, Object};
use crate::authz::ResourceId;
use crate::error::Note;
use crate::filter::Filter;

type Name = (String, String);

/// What the notes look up, gathered once.
#[derive(Default)]
struct Seen<'a> {
    /// The Service's own profile in force per Service (the last applied).
    profiles: HashMap<Name, &'a ResourceId>,
    /// Client-side profiles in force, by (callers' namespace, Service namespace, Service).
    client_profiles: HashMap<(String, String, String), &'a ResourceId>,
    servers: HashMap<Name, &'a ParsedServer>,
    route_groups: BTreeSet<Name>,
    faults: BTreeSet<Name>,
    mesh_tls: BTreeSet<Name>,
    networks: BTreeSet<Name>,
    /// Services that routes attach to.
    routed: BTreeSet<Name>,
    /// Routes attached to a Server that exists.
    on_servers: BTreeSet<Name>,
    /// Services in the input.
    services: BTreeSet<Name>,
}

/// Every note about how the accepted objects (in apply order) link.
pub(crate) fn notes(entries: &[&Entry]) -> Vec<Note> {
    let seen = Seen::gather(entries);
    let mut out = Vec::new();
    profile_notes(entries, &mut out);
    super::overlap::server_overlap_notes(entries, &mut out);
    route_notes(entries, &seen, &mut out);
    split_notes(entries, &seen, &mut out);
    for e in entries {
        let Object::ServerAuth(sa) = &e.object else {
            continue;
        };
        let hit = seen.servers.iter().any(|((ns, name), s)| {
            *ns == e.namespace
                && match &sa.target {
                    ServerTarget::Name(n) => n == name,
                    ServerTarget::Selector(sel) => sel.matches(&s.labels),
                }
        });
        if !hit {
            out.push(at(
                e,
                "selects no Server in the input; it has no effect".into(),
            ));
        }
    }
    for e in entries {
        if let Object::AuthPolicy(p) = &e.object {
            policy_notes(e, p, &seen, &mut out);
        }
    }
    for e in entries {
        if let Object::RateLimit(rl) = &e.object {
            let (ns, name) = (&rl.server_namespace, &rl.server_name);
            if !seen.servers.contains_key(&(ns.clone(), name.clone())) {
                let msg = format!("its Server {ns}/{name} is not in the input; it has no effect");
                out.push(at(e, msg));
            }
        }
    }
    out
}

fn at(e: &Entry, message: String) -> Note {
    Note {
        origin: Some(e.origin.clone()),
        resource: Some(e.res.clone()),
        message,
    }
}

fn profile_notes(entries: &[&Entry], out: &mut Vec<Note>) {
    let mut previous: HashMap<(String, String, String), &ResourceId> = HashMap::new();
    for e in entries {
        if let Object::Profile(p) = &e.object {
            let (svc, ns, from) = (&p.service, &p.namespace, &p.id.namespace);
            let key = (from.clone(), ns.clone(), svc.clone());
            if let Some(prev) = previous.insert(key, &p.id) {
                let msg = format!("{prev} already governs {svc}.{ns}; this profile replaces it");
                out.push(at(e, msg));
            }
            if from != ns {
                // Often meant, sometimes a profile applied to the wrong namespace: say which.
                let msg = format!(
                    "client-side: governs calls to {svc}.{ns} from namespace {from} only; other callers get {ns}'s own profile or routes"
                );
                out.push(at(e, msg));
            }
        }
    }
}

fn route_notes(entries: &[&Entry], seen: &Seen<'_>, out: &mut Vec<Note>) {
    let mut inert = Vec::new();
    for e in entries {
        let Object::Route(r) = &e.object else {
            continue;
        };
        let mut absent = BTreeSet::new();
        for b in r.rules.iter().flat_map(|rule| &rule.backends) {
            let key = (
                b.backend.namespace().to_owned(),
                b.backend.name().to_owned(),
            );
            if !seen.services.contains(&key) && absent.insert(key) {
                out.push(at(
                    e,
                    format!(
                        "backend Service {}.{} is not in the input: its share is still sampled, but a proxy sends it nowhere until the Service exists",
                        b.backend.name(),
                        b.backend.namespace()
                    ),
                ));
            }
        }
        for parent in &r.parents {
            match parent {
                RouteParent::Service {
                    name, namespace, ..
                } => {
                    let client = (r.id.namespace.clone(), namespace.clone(), name.clone());
                    let profile = (seen.client_profiles.get(&client))
                        .or_else(|| seen.profiles.get(&(namespace.clone(), name.clone())));
                    if let Some(profile) = profile {
                        inert.push(Note {
                            origin: None,
                            resource: Some(r.id.to_string()),
                            message: format!(
                                "inert: {profile} governs Service {name}.{namespace}, and a ServiceProfile takes precedence over HTTPRoutes (as in Linkerd)"
                            ),
                        });
                    }
                }
                RouteParent::Server { name, namespace } => {
                    if !seen
                        .servers
                        .contains_key(&(namespace.clone(), name.clone()))
                    {
                        out.push(Note {
                            origin: None,
                            resource: Some(r.id.to_string()),
                            message: format!(
                                "its parent Server {namespace}/{name} is not in the input; it has no effect"
                            ),
                        });
                    }
                }
            }
        }
        inbound_filter_note(e, r, out);
        fault_notes(e, r, seen, out);
    }
    out.extend(inert);
}

/// Gateway API answers requests through an unresolved custom filter with an error rather
/// than skipping it: a missing `FaultInjection` fails its rule's every request (or, named by a
/// backendRef, every request sent to that backend).
fn fault_notes(e: &Entry, r: &ParsedRoute, seen: &Seen<'_>, out: &mut Vec<Note>) {
    let named: BTreeSet<&str> = (r.rules.iter())
        .flat_map(|rule| {
            rule.filters
                .iter()
                .chain(rule.backend_filters.iter().flat_map(|(_, f)| f))
        })
        .filter_map(|f| match f {
            Filter::Fault(fr) => Some(fr.name.as_str()),
            _ => None,
        })
        .collect();
    for name in named {
        if !seen
            .faults
            .contains(&(r.id.namespace.clone(), name.to_owned()))
        {
            out.push(at(e, format!("FaultInjection {name} is not in the input: every request of the rules (or backends) naming it is answered 500 until it exists")));
        }
    }
}

/// Linkerd's inbound proxy applies a Server route's header modifiers and redirects, and its
/// policy controller ignores, for the route's Servers, a route with any other filter; a user
/// relying on a rewrite or mirror there must hear it from `check`, not from production.
fn inbound_filter_note(e: &Entry, r: &ParsedRoute, out: &mut Vec<Note>) {
    if !(r.parents.iter()).any(|p| matches!(p, RouteParent::Server { .. })) {
        return;
    }
    let kinds: BTreeSet<&str> = unsupported_inbound(r).map(Filter::kind).collect();
    if kinds.is_empty() {
        return;
    }
    let kinds: Vec<&str> = kinds.into_iter().collect();
    let msg = format!(
        "filters not applied inbound: {}; the route is ignored by its Server, as Linkerd ignores it (a Server's routes may use RequestHeaderModifier, ResponseHeaderModifier and RequestRedirect)",
        kinds.join(", ")
    );
    out.push(at(e, msg));
}

fn split_notes(entries: &[&Entry], seen: &Seen<'_>, out: &mut Vec<Note>) {
    let mut previous: HashMap<Name, &ResourceId> = HashMap::new();
    for e in entries {
        let Object::Split(s) = &e.object else {
            continue;
        };
        let ns = &s.id.namespace;
        for g in &s.groups {
            if !seen.route_groups.contains(&(ns.clone(), g.clone())) {
                out.push(at(e, format!("HTTPRouteGroup {g} is not in the input; the split applies to no request until it exists")));
            }
        }
        let apex = (ns.clone(), s.apex.clone());
        if let Some(prev) = previous.insert(apex.clone(), &s.id) {
            let msg = format!(
                "{prev} already splits {}.{ns}; this split replaces it",
                s.apex
            );
            out.push(at(e, msg));
        }
        if seen.routed.contains(&apex) && !seen.profiles.contains_key(&apex) {
            out.push(at(e, format!("HTTPRoutes steer {}.{ns}; the split applies only to requests no route attaches to", s.apex)));
        }
    }
}

fn policy_notes(
    e: &Entry,
    p: &super::linkerd::ParsedAuthPolicy,
    seen: &Seen<'_>,
    out: &mut Vec<Note>,
) {
    let mut complete = true;
    for r in &p.requires {
        let (kind, set, ns, name) = match r {
            AuthRef::MeshTls { namespace, name } => {
                ("MeshTLSAuthentication", &seen.mesh_tls, namespace, name)
            }
            AuthRef::Network { namespace, name } => {
                ("NetworkAuthentication", &seen.networks, namespace, name)
            }
            AuthRef::Identity(_) => continue,
        };
        if !set.contains(&(ns.clone(), name.clone())) {
            complete = false;
            out.push(at(e, format!("{kind} {ns}/{name} is not in the input; this policy grants nothing until it exists")));
        }
    }
    if !complete {
        return;
    }
    let (kind, tns, tname, hit) = match &p.target {
        PolicyTarget::Server { namespace, name } => {
            let hit = seen
                .servers
                .contains_key(&(namespace.clone(), name.clone()));
            ("Server", namespace, name, hit)
        }
        // A namespace-wide policy holds whether or not Servers exist yet.
        PolicyTarget::Namespace(ns) => ("Namespace", ns, ns, true),
        PolicyTarget::Route {
            kind,
            namespace,
            name,
        } => {
            let hit = seen.on_servers.contains(&(namespace.clone(), name.clone()));
            (kind.as_str(), namespace, name, hit)
        }
    };
    if !hit {
        out.push(at(e, format!("its target {kind} {tns}/{tname} is not in the input (or not attached to a Server); it has no effect")));
    }
}

// === impl Seen ===

impl<'a> Seen<'a> {
    fn gather(entries: &[&'a Entry]) -> Self {
        let mut seen = Self::default();
        let name = |e: &Entry| (e.namespace.clone(), e.name.clone());
        for e in entries {
            match &e.object {
                Object::Profile(p) if p.id.namespace != p.namespace => {
                    let key = (
                        p.id.namespace.clone(),
                        p.namespace.clone(),
                        p.service.clone(),
                    );
                    seen.client_profiles.insert(key, &p.id);
                }
                Object::Profile(p) => {
                    let key = (p.namespace.clone(), p.service.clone());
                    seen.profiles.insert(key, &p.id);
                }
                Object::Server(s) => {
                    seen.servers.insert(name(e), s);
                }
                Object::RouteGroup(_) => {
                    seen.route_groups.insert(name(e));
                }
                Object::Fault(_) => {
                    seen.faults.insert(name(e));
                }
                Object::MeshTls(_) => {
                    seen.mesh_tls.insert(name(e));
                }
                Object::Network(_) => {
                    seen.networks.insert(name(e));
                }
                Object::Service(_) => {
                    seen.services.insert(name(e));
                }
                _ => {}
            }
        }
        for e in entries {
            let Object::Route(r) = &e.object else {
                continue;
            };
            for parent in &r.parents {
                match parent {
                    RouteParent::Service {
                        name, namespace, ..
                    } => {
                        seen.routed.insert((namespace.clone(), name.clone()));
                    }
                    RouteParent::Server { name, namespace } => {
                        if seen
                            .servers
                            .contains_key(&(namespace.clone(), name.clone()))
                        {
                            let route = (r.id.namespace.clone(), r.id.name.clone());
                            seen.on_servers.insert(route);
                        }
                    }
                }
            }
        }
        seen
    }
}

//! Linking one Service's outbound policy and one Service's endpoints from the objects filed
//! under them, with Linkerd's precedence: a ServiceProfile makes the Service's HTTPRoutes and
//! retry/timeout annotations inert; route annotations override `rules[].timeouts`, which
//! override the Service's annotations; a TrafficSplit applies where no route attaches.

use std::cmp::Ordering;
use std::sync::Arc;

use super::delivery::resolve_faults;
use super::fields::Annotated;
use super::gateway::{ParsedRoute, RouteParent};
use super::object::{Entry, Key, Object, Reader};
use super::profile::ParsedProfile;
use crate::policy::{
    BackendFilters, ClientProfile, EndpointSet, Route, RouteEntry, ServicePolicy, Split, Timeouts,
};
use crate::retry::RetryMethods;
use crate::route::{HttpMatch, PathMatch};
use crate::split::{BackendRef, Backends, WeightedBackend};

/// Links the outbound policy of Service `name` in `namespace`; `None` when nothing in the
/// index names it.
pub(crate) fn link_service(
    r: &mut Reader<'_>,
    namespace: &str,
    name: &str,
) -> Option<ServicePolicy> {
    let members: Vec<&Entry> = r
        .members(Key::Service(namespace.to_owned(), name.to_owned()))
        .collect();
    if members.is_empty() {
        return None;
    }
    let mut svc = ServicePolicy::new(name, namespace);
    let mut annotations = Annotated::default();
    for e in &members {
        if let Object::Service(s) = &e.object {
            svc.ports.clone_from(&s.ports);
            svc.cluster_ips.clone_from(&s.cluster_ips);
            svc.headless = s.headless;
            svc.selector.clone_from(&s.selector);
            svc.annotations.clone_from(&s.annotations);
            annotations = s.annotated.clone();
        }
    }
    // Later profiles replace earlier ones; an earlier one's dstOverrides stay unless replaced.
    // A profile outside the Service's namespace is client-side: linked after the Service's own,
    // whose routes replace the list.
    let (server_side, client_side): (Vec<_>, Vec<_>) = members
        .iter()
        .filter_map(|e| match &e.object {
            Object::Profile(p) => Some(p),
            _ => None,
        })
        .partition(|p| p.id.namespace == namespace);
    for p in server_side {
        svc.profile = Some(p.id.clone());
        svc.routes.clone_from(&p.routes);
        svc.profile_routes.clone_from(&p.matches);
        if !p.overrides.is_empty() {
            Arc::make_mut(&mut svc.default_route).backends = Arc::clone(&p.overrides);
        }
    }
    for p in client_side {
        attach_client_profile(&mut svc, p);
    }
    if svc.profile.is_none() {
        for e in &members {
            if let Object::Route(route) = &e.object {
                attach_route(r, &mut svc, route, &annotations);
            }
        }
        sort_entries(&mut svc);
        let route = Arc::make_mut(&mut svc.default_route);
        route.timeouts = Timeouts {
            request: annotations.request,
            backend_request: annotations.response,
        };
        route.retry.clone_from(&annotations.retry);
    }
    for e in &members {
        if let Object::Split(s) = &e.object {
            let mut matches = Vec::new();
            for g in &s.groups {
                let key = Key::Named("HTTPRouteGroup", namespace.to_owned(), g.clone());
                for found in r.members(key) {
                    if let Object::RouteGroup(m) = &found.object {
                        matches.extend(m.iter().cloned());
                    }
                }
            }
            if !s.groups.is_empty() && matches.is_empty() {
                // Matches named but none resolved: the split must not apply to everything.
                matches.push(HttpMatch {
                    path: PathMatch::Exact(String::new()),
                    method: None,
                    headers: Vec::new(),
                    query: Vec::new(),
                });
            }
            svc.split = Some(Split {
                backends: Arc::clone(&s.backends),
                matches,
            });
        }
    }
    Some(svc)
}

/// Adds a client-side profile: its routes join the Service's, reachable from its namespace only.
fn attach_client_profile(svc: &mut ServicePolicy, p: &ParsedProfile) {
    let base = svc.routes.len();
    svc.routes.extend(p.routes.iter().cloned());
    let mut default_route = Route::default_to(&svc.name, &svc.namespace);
    let overrides = !p.overrides.is_empty();
    if overrides {
        default_route.backends = Arc::clone(&p.overrides);
    }
    let client = ClientProfile {
        namespace: p.id.namespace.clone(),
        id: p.id.clone(),
        matches: (p.matches.iter())
            .map(|(m, i)| (m.clone(), base + i))
            .collect(),
        default_route: Arc::new(default_route),
        overrides,
    };
    // A later profile for the same callers replaces an earlier one, as on the server side.
    svc.client_profiles
        .retain(|c| c.namespace != client.namespace);
    svc.client_profiles.push(client);
}

/// Adds the rules of a route to each of its parentRefs that is this Service.
fn attach_route(
    r: &mut Reader<'_>,
    svc: &mut ServicePolicy,
    pr: &ParsedRoute,
    svc_ann: &Annotated,
) {
    let ann = &pr.annotations;
    for parent in &pr.parents {
        let RouteParent::Service {
            name,
            namespace,
            port,
        } = parent
        else {
            continue;
        };
        if *name != svc.name || *namespace != svc.namespace {
            continue;
        }
        for (i, rule) in pr.rules.iter().enumerate() {
            let backends = if rule.backends.is_empty() {
                vec![WeightedBackend {
                    backend: BackendRef::new(name.clone(), namespace.clone(), *port),
                    weight: 1,
                }]
            } else {
                rule.backends.clone()
            };
            let timeouts = Timeouts {
                request: ann.request.or(rule.timeouts.request).or(svc_ann.request),
                backend_request: (ann.response)
                    .or(rule.timeouts.backend_request)
                    .or(svc_ann.response),
            };
            let mut retry = ann.retry.clone().or_else(|| svc_ann.retry.clone());
            if let Some(RetryMethods::Idempotent { route_names_method }) =
                retry.as_mut().map(|r| &mut r.methods)
            {
                *route_names_method = rule
                    .matches
                    .iter()
                    .any(|m| m.method().is_some_and(|m| !crate::retry::is_idempotent(m)));
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
                filters: resolve_faults(r, &pr.id.namespace, &rule.filters),
                backend_filters: (rule.backend_filters.iter())
                    .map(|(backend, filters)| BackendFilters {
                        backend: backend.clone(),
                        filters: resolve_faults(r, &pr.id.namespace, filters),
                    })
                    .collect(),
                grpc: pr.grpc,
                created: pr.created,
            }));
            for m in &rule.matches {
                svc.entries.push(RouteEntry {
                    route: idx,
                    port: *port,
                    m: m.clone(),
                    consumer: (pr.id.namespace != svc.namespace).then(|| pr.id.namespace.clone()),
                });
            }
        }
    }
}

/// Gateway API precedence: the more specific match first, then the older route, then the
/// route's name, then the rule's order.
fn sort_entries(svc: &mut ServicePolicy) {
    let routes = &svc.routes;
    svc.entries.sort_by(|a, b| {
        let (ra, rb) = (&routes[a.route], &routes[b.route]);
        a.m.precedence(&b.m)
            .then_with(|| match (&ra.created, &rb.created) {
                (Some(x), Some(y)) => x.cmp(y),
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (None, None) => Ordering::Equal,
            })
            .then_with(|| ra.source.cmp(&rb.source))
            .then_with(|| ra.rule.cmp(&rb.rule))
    });
}

/// Links the endpoint sets of Service `name` (one per EndpointSlice, in apply order), each
/// address that names a Pod in the index carrying that Pod's service account.
pub(crate) fn link_endpoints(
    r: &mut Reader<'_>,
    namespace: &str,
    name: &str,
) -> Vec<(u64, EndpointSet)> {
    let slices: Vec<&Entry> = r
        .members(Key::Endpoints(namespace.to_owned(), name.to_owned()))
        .collect();
    let mut out = Vec::new();
    for e in slices {
        let Object::EndpointSlice(set) = &e.object else {
            continue;
        };
        let mut set = set.clone();
        for a in &mut set.addresses {
            let Some(pod) = &a.pod else { continue };
            let key = Key::Named("Pod", namespace.to_owned(), pod.clone());
            let sa = r.members(key).find_map(|p| match &p.object {
                Object::Workload(w) => Some(
                    w.service_account
                        .clone()
                        .unwrap_or_else(|| "default".to_owned()),
                ),
                _ => None,
            });
            if sa.is_some() {
                a.service_account = sa;
            }
        }
        out.push((e.seq, set));
    }
    out
}

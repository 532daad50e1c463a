//! Gateway API routes (HTTPRoute, GRPCRoute, and Linkerd's policy.linkerd.io HTTPRoute):
//! parent references, matches, backends, timeouts and filters, each read once into a
//! [`ParsedRoute`].

use super::doc::{Cx, Doc};
use super::fields::{Annotated, annotated, port};
use super::filters::{RuleCx, filters};
use crate::authz::ResourceId;
use crate::filter::Filter;
use crate::kinds;
use crate::policy::Timeouts;
use crate::route::{self, HttpMatch, PathMatch, ValueMatch, ValuePattern};
use crate::split::{BackendRef, WeightedBackend};
use crate::values::{Timestamp, parse_duration};

/// Gateway API's upper bound for a backendRef weight.
const MAX_WEIGHT: i64 = 1_000_000;

/// A route (HTTPRoute, GRPCRoute) after its own checks, before linking.
#[derive(Clone, Debug)]
pub(crate) struct ParsedRoute {
    pub(crate) id: ResourceId,
    pub(crate) created: Option<Timestamp>,
    pub(crate) grpc: bool,
    pub(crate) parents: Vec<RouteParent>,
    pub(crate) rules: Vec<ParsedRule>,
    /// Its own `retry.linkerd.io/*` and `timeout.linkerd.io/*` annotations.
    pub(crate) annotations: Annotated,
}

/// A parentRef the mesh acts on.
#[derive(Clone, Debug)]
pub(crate) enum RouteParent {
    /// A Service (GAMMA): the route steers calls to it.
    Service {
        name: String,
        namespace: String,
        port: Option<u16>,
    },
    /// A Linkerd Server: the route scopes inbound authorization.
    Server { name: String, namespace: String },
}

/// One rule of a route.
#[derive(Clone, Debug)]
pub(crate) struct ParsedRule {
    pub(crate) matches: Vec<HttpMatch>,
    pub(crate) backends: Vec<WeightedBackend>,
    pub(crate) timeouts: Timeouts,
    pub(crate) filters: Vec<Filter>,
    /// The filters of backendRefs that have any, before `FaultInjection`s are linked.
    pub(crate) backend_filters: Vec<(BackendRef, Vec<Filter>)>,
}

/// Says which experimental-channel rule fields (`retry`, `sessionPersistence`) are accepted
/// but not applied, and what to use instead: an API server with those CRDs accepts them.
fn note_unapplied(cx: &mut Cx, doc: &Doc, field: &str, rule: &impl kinds::ExperimentalRule) {
    let (retry, session) = rule.unapplied();
    if retry {
        cx.note(
            doc,
            format!(
                "{field}.retry is not applied: this mesh retries as Linkerd does, by the \
                 retry.linkerd.io/* annotations or a ServiceProfile's isRetryable"
            ),
        );
    }
    if session {
        cx.note(
            doc,
            format!("{field}.sessionPersistence is not applied: requests are balanced as usual"),
        );
    }
}

fn parents(cx: &mut Cx, doc: &Doc, refs: &[kinds::ParentRef]) -> Vec<RouteParent> {
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
        match kinds::route_parent(p.group.as_deref(), p.kind.as_deref()) {
            kinds::RouteParent::Service => {
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
            kinds::RouteParent::Server => out.push(RouteParent::Server {
                name: p.name.clone(),
                namespace,
            }),
            kinds::RouteParent::Other => cx.note(
                doc,
                format!(
                    "spec.parentRefs[{i}] is a {kind} ({group}), not a Service or Server: validated, but it steers no mesh traffic"
                ),
            ),
        }
    }
    out
}

pub(crate) fn parse_http_route(cx: &mut Cx, doc: &Doc, spec: kinds::HttpRouteSpec) -> ParsedRoute {
    let annotations = annotated(cx, doc, false);
    let parents = parents(cx, doc, &spec.parent_refs);
    let mut rules = Vec::new();
    for (r, rule) in spec.rules.iter().enumerate() {
        let field = format!("spec.rules[{r}]");
        note_unapplied(cx, doc, &field, rule);
        let mut matches = Vec::new();
        for (m, hm) in rule.matches.iter().enumerate() {
            if let Some(m) = http_match(cx, doc, &format!("{field}.matches[{m}]"), hm) {
                matches.push(m);
            }
        }
        if rule.matches.is_empty() {
            matches.push(HttpMatch::any());
        }
        let rcx = RuleCx {
            matches: &matches,
            grpc: false,
            backend: false,
        };
        let (backends, backend_filters) = backend_refs(cx, doc, &field, &rule.backend_refs, &rcx);
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
        let filters = filters(cx, doc, &format!("{field}.filters"), &rule.filters, &rcx);
        rules.push(ParsedRule {
            matches,
            backends,
            timeouts,
            filters,
            backend_filters,
        });
    }
    if spec.rules.is_empty() {
        rules.push(ParsedRule {
            matches: vec![HttpMatch::any()],
            backends: Vec::new(),
            timeouts: Timeouts::default(),
            filters: Vec::new(),
            backend_filters: Vec::new(),
        });
    }
    ParsedRoute {
        id: doc.id(),
        created: doc.meta.creation_timestamp,
        grpc: false,
        parents,
        rules,
        annotations,
    }
}

pub(crate) fn parse_grpc_route(cx: &mut Cx, doc: &Doc, spec: kinds::GrpcRouteSpec) -> ParsedRoute {
    let annotations = annotated(cx, doc, true);
    let parents = parents(cx, doc, &spec.parent_refs);
    let mut rules = Vec::new();
    for (r, rule) in spec.rules.iter().enumerate() {
        let field = format!("spec.rules[{r}]");
        note_unapplied(cx, doc, &field, rule);
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
        let rcx = RuleCx {
            matches: &matches,
            grpc: true,
            backend: false,
        };
        let (backends, backend_filters) = backend_refs(cx, doc, &field, &rule.backend_refs, &rcx);
        let filters = filters(cx, doc, &format!("{field}.filters"), &rule.filters, &rcx);
        rules.push(ParsedRule {
            matches,
            backends,
            timeouts: Timeouts::default(),
            filters,
            backend_filters,
        });
    }
    ParsedRoute {
        id: doc.id(),
        created: doc.meta.creation_timestamp,
        grpc: true,
        parents,
        rules,
        annotations,
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

/// A rule's backendRefs, and the filters of those that have any (read as the rule's own, with
/// `rule` marked as a backend's).
fn backend_refs(
    cx: &mut Cx,
    doc: &Doc,
    field: &str,
    refs: &[kinds::BackendRef],
    rule: &RuleCx<'_>,
) -> (Vec<WeightedBackend>, Vec<(BackendRef, Vec<Filter>)>) {
    let rule = RuleCx {
        backend: true,
        ..*rule
    };
    let mut out = Vec::new();
    let mut with_filters = Vec::new();
    for (i, b) in refs.iter().enumerate() {
        let f = format!("{field}.backendRefs[{i}]");
        let list = filters(cx, doc, &format!("{f}.filters"), &b.filters, &rule);
        if let Some(b) = backend_ref(cx, doc, &f, b) {
            if !list.is_empty() {
                with_filters.push((b.backend.clone(), list));
            }
            out.push(b);
        }
    }
    (out, with_filters)
}

pub(super) fn backend_ref(
    cx: &mut Cx,
    doc: &Doc,
    f: &str,
    b: &kinds::BackendRef,
) -> Option<WeightedBackend> {
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
        // Gateway API's CRDs refuse this ("Must have port for Service reference").
        None => {
            cx.err(
                doc,
                format!("{f}.port"),
                "required for a Service backend (Gateway API)",
            );
            return None;
        }
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
        backend: BackendRef::new(
            b.name.as_str(),
            b.namespace.as_deref().unwrap_or(&doc.namespace),
            port,
        ),
        weight: weight as u64,
    })
}

//! Linkerd's policy kinds: ServerAuthorization, AuthorizationPolicy, MeshTLSAuthentication,
//! NetworkAuthentication and HTTPLocalRateLimitPolicy, each read once into typed values that
//! linking attaches to Servers.
use std::sync::Arc;

use super::doc::{Cx, Doc};
use super::fields::{networks, selector};
use crate::authz::{
    Authorization, AuthorizationKind, IdentityMatch, NetworkMatch, RateLimit, Requirement,
    ResourceId, Selector,
};
use crate::identity::Identity;
use crate::kinds;

/// What a ServerAuthorization targets, in its own namespace.
#[derive(Clone, Debug)]
pub(crate) enum ServerTarget {
    Name(String),
    Selector(Selector),
}

/// A ServerAuthorization after its own checks.
#[derive(Clone, Debug)]
pub(crate) struct ParsedServerAuth {
    pub(crate) target: ServerTarget,
    pub(crate) auth: Authorization,
}

/// An HTTPLocalRateLimitPolicy after its own checks, with the Server it targets.
#[derive(Clone, Debug)]
pub(crate) struct ParsedRateLimit {
    pub(crate) limit: Arc<RateLimit>,
    pub(crate) server_namespace: String,
    pub(crate) server_name: String,
}

#[derive(Clone, Debug)]
pub(crate) struct ParsedAuthPolicy {
    pub(crate) id: ResourceId,
    pub(crate) requires: Vec<AuthRef>,
    pub(crate) target: PolicyTarget,
}

/// One `requiredAuthenticationRefs` entry.
#[derive(Clone, Debug)]
pub(crate) enum AuthRef {
    MeshTls { namespace: String, name: String },
    Network { namespace: String, name: String },
    Identity(Identity),
}

/// An AuthorizationPolicy's `targetRef`.
#[derive(Clone, Debug)]
pub(crate) enum PolicyTarget {
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

pub(crate) fn parse_server_authorization(
    cx: &mut Cx,
    doc: &Doc,
    trust_domain: &str,
    spec: &kinds::ServerAuthorizationSpec,
) -> Option<ParsedServerAuth> {
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
            let ids = mesh_tls_client(cx, doc, trust_domain, tls);
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
    target.map(|target| ParsedServerAuth {
        target,
        auth: Authorization {
            source: Arc::new(doc.id()),
            kind: AuthorizationKind::ServerAuthorization,
            requires,
        },
    })
}

/// The identities a ServerAuthorization's `client.meshTLS` admits.
fn mesh_tls_client(
    cx: &mut Cx,
    doc: &Doc,
    trust_domain: &str,
    tls: &kinds::SaMeshTls,
) -> Vec<IdentityMatch> {
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
        match Identity::new(trust_domain, ns, &sa.name) {
            Ok(id) => ids.push(IdentityMatch::Exact(id)),
            Err(e) => cx.err(
                doc,
                format!("spec.client.meshTLS.serviceAccounts[{i}]"),
                e.to_string(),
            ),
        }
    }
    if tls.identities.is_empty() && tls.service_accounts.is_empty() && !tls.unauthenticated_tls {
        ids.push(IdentityMatch::Any);
    }
    ids
}

pub(crate) fn parse_auth_policy(
    cx: &mut Cx,
    doc: &Doc,
    trust_domain: &str,
    spec: &kinds::AuthorizationPolicySpec,
) -> Option<ParsedAuthPolicy> {
    let mut requires = Vec::new();
    for (i, r) in spec.required_authentication_refs.iter().enumerate() {
        let namespace = r.namespace.clone().unwrap_or_else(|| doc.namespace.clone());
        let name = r.name.clone().unwrap_or_default();
        match r.kind.as_str() {
            "MeshTLSAuthentication" => requires.push(AuthRef::MeshTls { namespace, name }),
            "NetworkAuthentication" => requires.push(AuthRef::Network { namespace, name }),
            "ServiceAccount" => match Identity::new(trust_domain, &namespace, &name) {
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
    if !own_namespace(cx, doc, t.namespace.as_deref()) {
        return None;
    }
    let namespace = doc.namespace.clone();
    let name = t.name.clone().unwrap_or_default();
    if t.kind == "Namespace" && name != doc.namespace {
        // Linkerd's admission refuses this too: a policy would open up another team's pods.
        cx.err(
            doc,
            "spec.targetRef.name",
            format!(
                "{name:?}: a policy in namespace {:?} may target only its own namespace",
                doc.namespace
            ),
        );
        return None;
    }
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
            return None;
        }
    };
    Some(ParsedAuthPolicy {
        id: doc.id(),
        requires,
        target,
    })
}

pub(crate) fn parse_mesh_tls(
    cx: &mut Cx,
    doc: &Doc,
    trust_domain: &str,
    spec: &kinds::MeshTlsAuthenticationSpec,
) -> Vec<IdentityMatch> {
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
                    trust_domain: Some(trust_domain.to_owned()),
                })
            }
            ("Namespace", Some(name)) => ids.push(IdentityMatch::Namespace {
                namespace: name.to_owned(),
                trust_domain: Some(trust_domain.to_owned()),
            }),
            ("ServiceAccount", Some(name)) => match Identity::new(trust_domain, ns, name) {
                Ok(id) => ids.push(IdentityMatch::Exact(id)),
                Err(e) => cx.err(doc, field, e.to_string()),
            },
            ("ServiceAccount", None) => cx.err(doc, format!("{field}.name"), "missing"),
            (k, _) => cx.err(
                doc,
                format!("{field}.kind"),
                format!("{k:?} is not ServiceAccount or Namespace"),
            ),
        }
    }
    ids
}

pub(crate) fn parse_network(
    cx: &mut Cx,
    doc: &Doc,
    spec: &kinds::NetworkAuthenticationSpec,
) -> Option<Vec<NetworkMatch>> {
    if spec.networks.is_empty() {
        cx.err(doc, "spec.networks", "at least one network is required");
    }
    networks(cx, doc, "spec.networks", &spec.networks)
}

pub(crate) fn parse_rate_limit(
    cx: &mut Cx,
    doc: &Doc,
    trust_domain: &str,
    spec: &kinds::RateLimitPolicySpec,
) -> ParsedRateLimit {
    if spec.target_ref.kind != "Server" {
        cx.err(
            doc,
            "spec.targetRef.kind",
            format!("{:?}: a rate limit targets a Server", spec.target_ref.kind),
        );
    }
    own_namespace(cx, doc, spec.target_ref.namespace.as_deref());
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
                .map(|n| Identity::new(trust_domain, ns, n))
            {
                Some(Ok(id)) => ids.push(id),
                Some(Err(e)) => cx.err(doc, field, e.to_string()),
                None => cx.err(doc, format!("{field}.name"), "missing"),
            }
        }
        overrides.push((n, ids));
    }
    let target = &spec.target_ref;
    ParsedRateLimit {
        limit: Arc::new(RateLimit {
            source: doc.id(),
            total,
            per_identity,
            overrides,
        }),
        server_namespace: doc.namespace.clone(),
        server_name: target.name.clone().unwrap_or_default(),
    }
}

/// A `targetRef.namespace` may only name the object's own namespace: policy never reaches
/// across namespaces (Linkerd's admission controller and index refuse it alike). Reports and
/// returns `false` otherwise.
fn own_namespace(cx: &mut Cx, doc: &Doc, target: Option<&str>) -> bool {
    match target {
        Some(ns) if ns != doc.namespace => {
            cx.err(
                doc,
                "spec.targetRef.namespace",
                format!(
                    "{ns:?}: a policy in namespace {:?} may target only its own namespace",
                    doc.namespace
                ),
            );
            false
        }
        _ => true,
    }
}

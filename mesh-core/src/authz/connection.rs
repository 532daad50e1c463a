//! Authorizing a connection whose requests the proxy cannot see: opaque TCP, or bytes that
//! protocol detection could not classify.
//!
//! Such a connection may carry any HTTP request, so it must never be admitted more loosely
//! than the requests it may carry. Where the port's Server has routes (route-level
//! authorization), the peer is admitted only if every route would admit it and every request
//! is routed at all; otherwise the connection is decided as a whole, as Linkerd does for TCP.

use std::str::FromStr;
use std::sync::Arc;

use super::decision::{decide, default_decision};
use super::{
    AuthzDecision, DecidedBy, InboundConfig, InboundRoute, InboundTarget, Peer, Reason, ResourceId,
    Server,
};
use crate::route::{HttpMatch, PathMatch};

/// A Server's `proxyProtocol`: what its port speaks, as Linkerd names it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ProxyProtocol {
    /// Detect it from the first bytes (Linkerd's default).
    #[default]
    Unknown,
    /// HTTP/1.x, whatever the bytes look like.
    Http1,
    /// HTTP/2 with prior knowledge.
    Http2,
    /// gRPC (HTTP/2).
    Grpc,
    /// Bytes, proxied without detection.
    Opaque,
    /// TLS the application terminates itself, proxied without detection.
    Tls,
}

/// Why a connection was admitted or refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConnectionScope {
    /// No Server selects the port: the default policy decided for the whole connection.
    DefaultPolicy,
    /// The Server has no routes: its authorizations decided for the whole connection.
    Server,
    /// Every route of the Server would admit the peer, and every request matches a route.
    EveryRoute,
    /// This route of the Server would refuse the peer.
    RouteRefuses(Arc<ResourceId>),
    /// Some requests match no route of the Server (HTTP refuses those), and an unclassified
    /// connection could carry them.
    Unrouted,
}

/// The answer to "may this peer open a connection whose requests cannot be seen?".
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionDecision<'a> {
    /// Why.
    pub scope: ConnectionScope,
    /// The decision, for logs and metrics; `authz.allowed` says whether it may connect.
    pub authz: AuthzDecision<'a>,
}

/// A string that is not one of the `proxyProtocol` values Linkerd defines.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{input:?} is not one of {}", ProxyProtocol::ALL.map(ProxyProtocol::as_str).join(", "))]
pub struct UnknownProxyProtocol {
    /// What the manifest said.
    pub input: String,
}

// === impl ProxyProtocol ===

impl ProxyProtocol {
    /// Every value, as written in a manifest.
    pub const ALL: [Self; 6] = [
        Self::Unknown,
        Self::Http1,
        Self::Http2,
        Self::Grpc,
        Self::Opaque,
        Self::Tls,
    ];

    /// The name Linkerd uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::Http1 => "HTTP/1",
            Self::Http2 => "HTTP/2",
            Self::Grpc => "gRPC",
            Self::Opaque => "opaque",
            Self::Tls => "TLS",
        }
    }

    /// Whether the port is HTTP whatever its first bytes look like.
    pub fn is_http(self) -> bool {
        matches!(self, Self::Http1 | Self::Http2 | Self::Grpc)
    }
}

impl FromStr for ProxyProtocol {
    type Err = UnknownProxyProtocol;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| UnknownProxyProtocol {
                input: s.to_owned(),
            })
    }
}

// === impl ConnectionDecision ===

impl ConnectionDecision<'_> {
    /// Whether the connection may reach the application.
    pub fn allowed(&self) -> bool {
        self.authz.allowed
    }
}

/// What the Server that selects `target` says its port speaks; `Unknown` (detect) when no
/// Server selects it.
pub fn server_protocol(servers: &[Server], target: &InboundTarget) -> ProxyProtocol {
    servers
        .iter()
        .find(|s| s.selects(target))
        .map_or(ProxyProtocol::Unknown, |s| s.proxy_protocol)
}

/// Decides whether `peer` may open a connection to `target` whose requests the proxy cannot
/// see. See the [module docs](self).
pub fn authorize_connection<'a>(
    servers: &'a [Server],
    config: &InboundConfig,
    target: &InboundTarget,
    peer: &'a Peer,
) -> ConnectionDecision<'a> {
    let Some(server) = servers.iter().find(|s| s.selects(target)) else {
        let policy = target.default_policy.unwrap_or(config.default_policy);
        return ConnectionDecision {
            scope: ConnectionScope::DefaultPolicy,
            authz: default_decision(policy, false, peer, config),
        };
    };
    if server.routes.is_empty() {
        return ConnectionDecision {
            scope: ConnectionScope::Server,
            authz: decide(server, &[], None, peer, config),
        };
    }
    let mut first = None;
    for route in &server.routes {
        let d = decide(
            server,
            &route.authorizations,
            Some(&route.source),
            peer,
            config,
        );
        if !d.allowed {
            return ConnectionDecision {
                scope: ConnectionScope::RouteRefuses(Arc::clone(&route.source)),
                authz: AuthzDecision {
                    reason: Reason::ConnectionCouldCarry(Box::new(d.reason)),
                    ..d
                },
            };
        }
        first.get_or_insert(d);
    }
    let routes_everything = server
        .routes
        .iter()
        .flat_map(InboundRoute::matches)
        .any(|(_, m)| matches_every_request(m));
    let Some(first) = first.filter(|_| routes_everything) else {
        return ConnectionDecision {
            scope: ConnectionScope::Unrouted,
            authz: AuthzDecision {
                allowed: false,
                by: DecidedBy::Server(Arc::clone(&server.id)),
                reason: Reason::ConnectionUnrouted { server: &server.id },
                server: Some(Arc::clone(&server.id)),
                route: None,
                rate_limit: server.rate_limit.clone(),
            },
        };
    };
    ConnectionDecision {
        scope: ConnectionScope::EveryRoute,
        authz: AuthzDecision {
            reason: Reason::EveryRouteAdmits {
                server: &server.id,
                peer,
            },
            route: None,
            ..first
        },
    }
}

/// Whether a match admits any request: a `/` prefix with no other condition.
fn matches_every_request(m: &HttpMatch) -> bool {
    matches!(&m.path, PathMatch::Prefix(p) if p.trim_end_matches('/').is_empty())
        && m.method.is_none()
        && m.headers.is_empty()
        && m.query.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Identity, MeshPolicy, Request};

    /// The issue's setup: a Server that denies by default, an open catch-all route and an
    /// `/admin` route only for `web`; a second Server whose only route is `/api`; a third with
    /// no routes, open to `web`.
    const POLICY: &str = r#"
apiVersion: policy.linkerd.io/v1beta3
kind: Server
metadata: { name: app, namespace: shop }
spec: { podSelector: {}, port: 8080, proxyProtocol: HTTP/1, accessPolicy: deny }
---
apiVersion: policy.linkerd.io/v1beta1
kind: HTTPRoute
metadata: { name: open, namespace: shop }
spec:
  parentRefs: [{ name: app, kind: Server, group: policy.linkerd.io }]
  rules: [{ matches: [{ path: { type: PathPrefix, value: / } }] }]
---
apiVersion: policy.linkerd.io/v1beta1
kind: HTTPRoute
metadata: { name: admin, namespace: shop }
spec:
  parentRefs: [{ name: app, kind: Server, group: policy.linkerd.io }]
  rules: [{ matches: [{ path: { type: PathPrefix, value: /admin } }] }]
---
apiVersion: policy.linkerd.io/v1alpha1
kind: NetworkAuthentication
metadata: { name: everyone, namespace: shop }
spec: { networks: [{ cidr: 0.0.0.0/0 }, { cidr: "::/0" }] }
---
apiVersion: policy.linkerd.io/v1alpha1
kind: AuthorizationPolicy
metadata: { name: open, namespace: shop }
spec:
  targetRef: { group: policy.linkerd.io, kind: HTTPRoute, name: open }
  requiredAuthenticationRefs: [{ group: policy.linkerd.io, kind: NetworkAuthentication, name: everyone }]
---
apiVersion: policy.linkerd.io/v1alpha1
kind: MeshTLSAuthentication
metadata: { name: web, namespace: shop }
spec: { identities: [web.shop.serviceaccount.identity.linkerd.cluster.local] }
---
apiVersion: policy.linkerd.io/v1alpha1
kind: AuthorizationPolicy
metadata: { name: admin, namespace: shop }
spec:
  targetRef: { group: policy.linkerd.io, kind: HTTPRoute, name: admin }
  requiredAuthenticationRefs: [{ group: policy.linkerd.io, kind: MeshTLSAuthentication, name: web }]
---
apiVersion: policy.linkerd.io/v1alpha1
kind: AuthorizationPolicy
metadata: { name: admin-too, namespace: shop }
spec:
  targetRef: { group: policy.linkerd.io, kind: HTTPRoute, name: open }
  requiredAuthenticationRefs: [{ group: policy.linkerd.io, kind: MeshTLSAuthentication, name: web }]
---
apiVersion: policy.linkerd.io/v1beta3
kind: Server
metadata: { name: api, namespace: shop }
spec: { podSelector: {}, port: 9090, proxyProtocol: gRPC }
---
apiVersion: policy.linkerd.io/v1beta1
kind: HTTPRoute
metadata: { name: api, namespace: shop }
spec:
  parentRefs: [{ name: api, kind: Server, group: policy.linkerd.io }]
  rules: [{ matches: [{ path: { type: PathPrefix, value: /api } }] }]
---
apiVersion: policy.linkerd.io/v1alpha1
kind: AuthorizationPolicy
metadata: { name: api, namespace: shop }
spec:
  targetRef: { group: policy.linkerd.io, kind: HTTPRoute, name: api }
  requiredAuthenticationRefs: [{ group: policy.linkerd.io, kind: MeshTLSAuthentication, name: web }]
---
apiVersion: policy.linkerd.io/v1beta3
kind: Server
metadata: { name: db, namespace: shop }
spec: { podSelector: {}, port: 5432, proxyProtocol: opaque }
---
apiVersion: policy.linkerd.io/v1alpha1
kind: AuthorizationPolicy
metadata: { name: db, namespace: shop }
spec:
  targetRef: { group: policy.linkerd.io, kind: Server, name: db }
  requiredAuthenticationRefs: [{ group: policy.linkerd.io, kind: MeshTLSAuthentication, name: web }]
"#;

    fn target(port: u16) -> InboundTarget {
        InboundTarget {
            namespace: "shop".to_owned(),
            port,
            ..InboundTarget::default()
        }
    }

    fn peer(identity: Option<&str>) -> Peer {
        Peer {
            identity: identity.map(|i| i.parse::<Identity>().unwrap()),
            ip: Some("10.213.0.9".parse().unwrap()),
        }
    }

    fn route(name: &str) -> ConnectionScope {
        ConnectionScope::RouteRefuses(Arc::new(ResourceId::new("HTTPRoute", "shop", name)))
    }

    #[test]
    fn connection_decisions() {
        let p = MeshPolicy::from_yaml(POLICY).unwrap_or_else(|e| panic!("{e}"));
        let web = Some("spiffe://cluster.local/ns/shop/sa/web");
        let bot = Some("spiffe://cluster.local/ns/shop/sa/bot");
        let cases = [
            // (port, identity, scope, allowed)
            (8080, None, route("admin"), false),
            (8080, bot, route("admin"), false),
            (8080, web, ConnectionScope::EveryRoute, true),
            (9090, web, ConnectionScope::Unrouted, false),
            (9090, None, route("api"), false),
            (5432, web, ConnectionScope::Server, true),
            (5432, bot, ConnectionScope::Server, false),
            (7000, None, ConnectionScope::DefaultPolicy, true),
        ];
        for (port, id, scope, allowed) in cases {
            let peer = peer(id);
            let d = authorize_connection(p.servers(), &p.config().inbound, &target(port), &peer);
            assert_eq!(
                (d.scope.clone(), d.allowed()),
                (scope, allowed),
                "{port} {id:?}: {d:?}"
            );
        }
    }

    #[test]
    fn a_connection_is_never_admitted_more_loosely_than_a_request_it_could_carry() {
        let p = MeshPolicy::from_yaml(POLICY).unwrap_or_else(|e| panic!("{e}"));
        let peers = [
            None,
            Some("spiffe://cluster.local/ns/shop/sa/web"),
            Some("spiffe://cluster.local/ns/shop/sa/bot"),
        ];
        let paths = ["/", "/admin/secret", "/api/x", "/other"];
        for port in [8080, 9090, 5432, 7000] {
            for id in peers {
                let peer = peer(id);
                let d =
                    authorize_connection(p.servers(), &p.config().inbound, &target(port), &peer);
                if !d.allowed() {
                    continue;
                }
                for path in paths {
                    for method in ["GET", "PROPFIND"] {
                        let req =
                            Request::new(method, &format!("http://app:{port}{path}")).unwrap();
                        let r = p.authorize(&target(port), &peer, &req);
                        assert!(r.allowed, "{port} {id:?} {method} {path}: {r:?} vs {d:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn server_protocols() {
        let p = MeshPolicy::from_yaml(POLICY).unwrap_or_else(|e| panic!("{e}"));
        let cases = [
            (8080, ProxyProtocol::Http1),
            (9090, ProxyProtocol::Grpc),
            (5432, ProxyProtocol::Opaque),
            (7000, ProxyProtocol::Unknown),
        ];
        for (port, want) in cases {
            assert_eq!(server_protocol(p.servers(), &target(port)), want, "{port}");
        }
        for p in ProxyProtocol::ALL {
            assert_eq!(p.as_str().parse::<ProxyProtocol>(), Ok(p));
        }
        assert!("HTTP/3".parse::<ProxyProtocol>().is_err());
    }
}

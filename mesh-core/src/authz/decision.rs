//! The answer to "may this peer make this request?", as data: who decided, whether the request
//! passes, and why, with the why rendered only when someone shows it.
//!
//! A decision borrows from the policy and the request it describes and owns only shared
//! handles (`Arc`s) into the policy, so deciding allocates nothing and the layers after
//! authorization (rate limits, metrics) keep what they need without copying it.

use std::fmt;
use std::sync::Arc;

use super::{
    Authorization, AuthorizationKind, DefaultPolicy, InboundConfig, InboundTarget, Peer, RateLimit,
    ResourceId, Server,
};
use crate::filter::Filter;
use crate::route::RequestFacts;

/// What decided a request or connection.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum DecidedBy {
    /// A default policy: the workload's, the mesh's, or a Server's `accessPolicy`.
    Default(DefaultPolicy),
    /// A kubelet probe, admitted by default on ports whose Server has no routes.
    Probe,
    /// The Server itself refused: no route matched, or no authorization admitted the peer.
    Server(Arc<ResourceId>),
    /// A `ServerAuthorization` admitted the peer.
    ServerAuthorization(Arc<ResourceId>),
    /// An `AuthorizationPolicy` admitted the peer.
    AuthorizationPolicy(Arc<ResourceId>),
}

/// Why a decision went the way it did. `Display` renders the sentence logs, the
/// `l5d-proxy-error` header and 403 bodies carry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reason<'a> {
    /// The Server has routes and none matches the request.
    NoRouteMatches {
        /// The Server.
        server: &'a ResourceId,
    },
    /// `GET` of one of the port's probe paths, on a Server without routes.
    ProbePath {
        /// The probed path.
        path: &'a str,
    },
    /// The default policy refused, but the request is a kubelet probe.
    Probe,
    /// An authorization admits the peer.
    Admits {
        /// The authorization.
        by: &'a ResourceId,
        /// The peer.
        peer: &'a Peer,
    },
    /// A default policy admits the peer (in `audit` mode: would have refused it).
    DefaultAdmits {
        /// The policy.
        policy: DefaultPolicy,
        /// The peer.
        peer: &'a Peer,
    },
    /// A default policy refuses the peer.
    DefaultRefuses {
        /// The policy.
        policy: DefaultPolicy,
        /// The peer.
        peer: &'a Peer,
    },
    /// The Server denies by default and none of its (or the route's) authorizations admits
    /// the peer.
    NotAuthorized {
        /// The Server.
        server: &'a ResourceId,
        /// The matched route, if the Server has routes.
        route: Option<&'a ResourceId>,
        /// The peer.
        peer: &'a Peer,
    },
    /// A connection whose requests cannot be seen is refused because one of the Server's
    /// routes refuses the peer, for this reason.
    ConnectionCouldCarry(Box<Self>),
    /// A connection whose requests cannot be seen could carry a request no route matches.
    ConnectionUnrouted {
        /// The Server.
        server: &'a ResourceId,
    },
    /// Every route of the Server admits the peer, so a connection may carry any request.
    EveryRouteAdmits {
        /// The Server.
        server: &'a ResourceId,
        /// The peer.
        peer: &'a Peer,
    },
}

/// The answer to "may this peer make this request?".
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthzDecision<'a> {
    /// Whether the request may reach the application.
    pub allowed: bool,
    /// What allowed or denied it; prints as `ServerAuthorization/ns/name`,
    /// `default:all-unauthenticated`, `default:probe`, `Server/ns/name`.
    pub by: DecidedBy,
    /// Why, for logs and the `l5d-proxy-error` header.
    pub reason: Reason<'a>,
    /// The Server that applies, if any.
    pub server: Option<Arc<ResourceId>>,
    /// The inbound route that matched, if the Server has routes.
    pub route: Option<Arc<ResourceId>>,
    /// The rate limit of the Server, if any.
    pub rate_limit: Option<Arc<RateLimit>>,
}

/// The decision about one HTTP request to a workload: whether it may reach the application,
/// and how the route that admitted it changes it on the way.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestDecision<'a> {
    /// The authorization.
    pub authz: AuthzDecision<'a>,
    /// The filters of the matched route rule, when the request is allowed and the rule has
    /// any: applied on the way to the application (and to its response on the way back).
    pub filters: Option<Arc<[Filter]>>,
}

/// A peer as reasons name it: its identity or "an unauthenticated client", and its address.
struct Described<'a>(&'a Peer);

// === impl DecidedBy ===

impl DecidedBy {
    /// The resource that decided, if a resource did (not a default policy or a probe).
    pub fn resource(&self) -> Option<&ResourceId> {
        match self {
            Self::Default(_) | Self::Probe => None,
            Self::Server(id) | Self::ServerAuthorization(id) | Self::AuthorizationPolicy(id) => {
                Some(id)
            }
        }
    }
}

impl fmt::Display for DecidedBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Default(p) => write!(f, "default:{}", p.as_str()),
            Self::Probe => f.write_str("default:probe"),
            Self::Server(id) | Self::ServerAuthorization(id) | Self::AuthorizationPolicy(id) => {
                id.fmt(f)
            }
        }
    }
}

// === impl Reason ===

impl fmt::Display for Reason<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoRouteMatches { server } => {
                write!(f, "no route of {server} matches the request")
            }
            Self::ProbePath { path } => write!(f, "GET {path} is a kubelet probe of this port"),
            Self::Probe => f.write_str("the request is a kubelet probe of this port"),
            Self::Admits { by, peer } => write!(f, "{by} admits {}", Described(peer)),
            Self::DefaultAdmits {
                policy: DefaultPolicy::Audit,
                peer,
            } => write!(
                f,
                "audit mode admits {} (no authorization matched)",
                Described(peer)
            ),
            Self::DefaultAdmits { policy, peer } => write!(
                f,
                "the default policy {} admits {}",
                policy.as_str(),
                Described(peer)
            ),
            Self::DefaultRefuses { policy, peer } => write!(
                f,
                "the default policy {} refuses {}",
                policy.as_str(),
                Described(peer)
            ),
            Self::NotAuthorized {
                server,
                route,
                peer,
            } => {
                write!(f, "no authorization of {server}")?;
                if let Some(r) = route {
                    write!(f, " or {r}")?;
                }
                write!(f, " admits {}", Described(peer))
            }
            Self::ConnectionCouldCarry(why) => write!(
                f,
                "a connection that is not HTTP could carry any request, and {why}"
            ),
            Self::ConnectionUnrouted { server } => write!(
                f,
                "a connection that is not HTTP could carry a request no route of {server} matches"
            ),
            Self::EveryRouteAdmits { server, peer } => {
                write!(f, "every route of {server} admits {}", Described(peer))
            }
        }
    }
}

impl fmt::Display for Described<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0.identity {
            Some(id) => id.fmt(f)?,
            None => f.write_str("an unauthenticated client")?,
        }
        match self.0.ip {
            Some(ip) => write!(f, " from {ip}"),
            None => Ok(()),
        }
    }
}

// === impl AuthzDecision ===

impl<'a> AuthzDecision<'a> {
    /// A decision about a Server's port, carrying the Server's id and rate limit.
    fn of_server(
        server: &'a Server,
        allowed: bool,
        by: DecidedBy,
        reason: Reason<'a>,
        route: Option<&'a Arc<ResourceId>>,
    ) -> Self {
        Self {
            allowed,
            by,
            reason,
            server: Some(Arc::clone(&server.id)),
            route: route.cloned(),
            rate_limit: server.rate_limit.clone(),
        }
    }
}

/// Decides whether `peer` may make `req` to `target`, given the compiled Servers, and with
/// which filters.
pub(crate) fn authorize<'a>(
    servers: &'a [Server],
    config: &InboundConfig,
    target: &InboundTarget,
    peer: &'a Peer,
    req: &'a impl RequestFacts,
) -> RequestDecision<'a> {
    let is_probe = req.method() == "GET" && target.probe_paths.iter().any(|p| p == req.path());
    let unfiltered = |authz| RequestDecision {
        authz,
        filters: None,
    };
    let Some(server) = servers.iter().find(|s| s.selects(target)) else {
        let policy = target.default_policy.unwrap_or(config.default_policy);
        return unfiltered(default_decision(policy, is_probe, peer, config));
    };

    let mut route = None;
    if !server.routes.is_empty() {
        let best = (server.routes.iter())
            .flat_map(|r| r.matches().map(move |(rule, m)| (r, rule, m)))
            .filter(|(_, _, m)| m.matches(req))
            .min_by(|(_, _, a), (_, _, b)| a.precedence(b));
        let Some((matched, rule, _)) = best else {
            let reason = Reason::NoRouteMatches { server: &server.id };
            let by = DecidedBy::Server(Arc::clone(&server.id));
            return unfiltered(AuthzDecision::of_server(server, false, by, reason, None));
        };
        route = Some((matched, rule));
    } else if is_probe {
        let reason = Reason::ProbePath { path: req.path() };
        let d = AuthzDecision::of_server(server, true, DecidedBy::Probe, reason, None);
        return unfiltered(d);
    }
    let (route_auths, route_id) = match route {
        Some((r, _)) => (r.authorizations.as_slice(), Some(&r.source)),
        None => (&[][..], None),
    };
    let authz = decide(server, route_auths, route_id, peer, config);
    let filters = match route {
        Some((_, rule)) if authz.allowed && !rule.filters.is_empty() => {
            Some(Arc::clone(&rule.filters))
        }
        _ => None,
    };
    RequestDecision { authz, filters }
}

/// The decision once the route (if the Server has routes) is known: the route's and the
/// Server's authorizations, then the Server's access policy.
pub(super) fn decide<'a>(
    server: &'a Server,
    route_auths: &'a [Authorization],
    route_id: Option<&'a Arc<ResourceId>>,
    peer: &'a Peer,
    config: &InboundConfig,
) -> AuthzDecision<'a> {
    if let Some(a) = route_auths
        .iter()
        .chain(&server.authorizations)
        .find(|a| a.admits(peer, &config.control_namespace))
    {
        let reason = Reason::Admits {
            by: &a.source,
            peer,
        };
        return AuthzDecision::of_server(server, true, a.decided_by(), reason, route_id);
    }
    if server.access_policy != DefaultPolicy::Deny {
        let d = default_decision(server.access_policy, false, peer, config);
        return AuthzDecision::of_server(server, d.allowed, d.by, d.reason, route_id);
    }
    let reason = Reason::NotAuthorized {
        server: &server.id,
        route: route_id.map(|r| &**r),
        peer,
    };
    let by = DecidedBy::Server(Arc::clone(&server.id));
    AuthzDecision::of_server(server, false, by, reason, route_id)
}

/// A default policy's decision, with no Server to name.
pub(super) fn default_decision<'a>(
    policy: DefaultPolicy,
    is_probe: bool,
    peer: &'a Peer,
    config: &InboundConfig,
) -> AuthzDecision<'a> {
    let (allowed, by, reason) = if policy.admits(peer, &config.cluster_networks) {
        let reason = Reason::DefaultAdmits { policy, peer };
        (true, DecidedBy::Default(policy), reason)
    } else if is_probe {
        (true, DecidedBy::Probe, Reason::Probe)
    } else {
        let reason = Reason::DefaultRefuses { policy, peer };
        (false, DecidedBy::Default(policy), reason)
    };
    AuthzDecision {
        allowed,
        by,
        reason,
        server: None,
        route: None,
        rate_limit: None,
    }
}

// === impl Authorization ===

impl Authorization {
    /// Who decided, when this authorization admits a peer.
    fn decided_by(&self) -> DecidedBy {
        let id = Arc::clone(&self.source);
        match self.kind {
            AuthorizationKind::ServerAuthorization => DecidedBy::ServerAuthorization(id),
            AuthorizationKind::AuthorizationPolicy => DecidedBy::AuthorizationPolicy(id),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Identity;

    fn id(kind: &str) -> Arc<ResourceId> {
        Arc::new(ResourceId::new(kind, "shop", "web"))
    }

    #[test]
    fn who_decided_prints_as_linkerd_names_it() {
        let cases = [
            (
                DecidedBy::Default(DefaultPolicy::AllUnauthenticated),
                "default:all-unauthenticated",
            ),
            (DecidedBy::Default(DefaultPolicy::Deny), "default:deny"),
            (DecidedBy::Probe, "default:probe"),
            (DecidedBy::Server(id("Server")), "Server/shop/web"),
            (
                DecidedBy::ServerAuthorization(id("ServerAuthorization")),
                "ServerAuthorization/shop/web",
            ),
            (
                DecidedBy::AuthorizationPolicy(id("AuthorizationPolicy")),
                "AuthorizationPolicy/shop/web",
            ),
        ];
        for (by, want) in cases {
            assert_eq!(by.to_string(), want);
        }
    }

    #[test]
    fn reasons_name_the_peer_and_what_decided() {
        let server = ResourceId::new("Server", "shop", "web");
        let route = ResourceId::new("HTTPRoute", "shop", "admin");
        let anon = Peer {
            identity: None,
            ip: Some("10.213.0.9".parse().unwrap()),
        };
        let web = Peer {
            identity: Some(Identity::new("cluster.local", "shop", "web").unwrap()),
            ip: None,
        };
        let cases = [
            (
                Reason::NotAuthorized {
                    server: &server,
                    route: Some(&route),
                    peer: &anon,
                },
                "no authorization of Server/shop/web or HTTPRoute/shop/admin admits an unauthenticated client from 10.213.0.9",
            ),
            (
                Reason::DefaultAdmits {
                    policy: DefaultPolicy::Audit,
                    peer: &web,
                },
                "audit mode admits spiffe://cluster.local/ns/shop/sa/web (no authorization matched)",
            ),
            (
                Reason::ConnectionCouldCarry(Box::new(Reason::DefaultRefuses {
                    policy: DefaultPolicy::AllAuthenticated,
                    peer: &anon,
                })),
                "a connection that is not HTTP could carry any request, and the default policy all-authenticated refuses an unauthenticated client from 10.213.0.9",
            ),
        ];
        for (reason, want) in cases {
            assert_eq!(reason.to_string(), want);
        }
    }
}

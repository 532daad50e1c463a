//! Inbound authorization: who may call a workload's port, and why.
//!
//! Linkerd's model: a `Server` selects a port of some pods; `ServerAuthorization`s and
//! `AuthorizationPolicy`s (with their `MeshTLSAuthentication` / `NetworkAuthentication`
//! requirements) say which clients may reach it, optionally per route. Ports no Server selects
//! fall back to a default policy. Kubelet probes are allowed wherever a Server has no routes
//! of its own.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::Arc;

use crate::filter::Filter;
use crate::identity::Identity;
use crate::route::HttpMatch;
use crate::values::Timestamp;

mod connection;
mod decision;
mod error;
mod peer;

pub use connection::{
    ConnectionDecision, ConnectionScope, ProxyProtocol, UnknownProxyProtocol, authorize_connection,
    server_protocol,
};
pub(crate) use decision::authorize;
pub use decision::{AuthzDecision, DecidedBy, Reason, RequestDecision};
pub use error::{InvalidCidr, InvalidIdentityMatch, UnknownDefaultPolicy};
pub use peer::{Cidr, IdentityMatch, NetworkMatch, default_cluster_networks};

/// A resource named as `Kind/namespace/name`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResourceId {
    /// The kind (`HTTPRoute`, `ServerAuthorization`, …).
    pub kind: String,
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
}

/// The default inbound policies Linkerd defines.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DefaultPolicy {
    /// Anyone may connect (Linkerd's default).
    AllUnauthenticated,
    /// Only clients with a mesh identity.
    AllAuthenticated,
    /// Only clients with a mesh identity, from the cluster networks.
    ClusterAuthenticated,
    /// Anyone from the cluster networks.
    ClusterUnauthenticated,
    /// Nobody.
    Deny,
    /// Anyone, but the decision says it would otherwise have been denied.
    Audit,
}

/// One requirement a client must meet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Requirement {
    /// The client's address lies in one of these networks.
    Network(Vec<NetworkMatch>),
    /// The client has a mesh identity matching one of these.
    MeshTls(Vec<IdentityMatch>),
}

/// Which kind of resource grants an [`Authorization`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AuthorizationKind {
    /// A `ServerAuthorization`.
    ServerAuthorization,
    /// An `AuthorizationPolicy` (with its authentications resolved into requirements).
    AuthorizationPolicy,
}

/// One authorization: if every requirement holds, the request is allowed, by `source`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Authorization {
    /// The resource that grants it, shared with the decisions that name it.
    pub source: Arc<ResourceId>,
    /// What kind of resource `source` is.
    pub kind: AuthorizationKind,
    /// Requirements, all of which must hold. None means anyone.
    pub requires: Vec<Requirement>,
}

/// An HTTPRoute attached to a `Server`, with the authorizations that target it.
#[derive(Clone, Debug)]
pub struct InboundRoute {
    /// The route resource, shared with the decisions that name it.
    pub source: Arc<ResourceId>,
    /// Its rules, in order.
    pub rules: Vec<InboundRule>,
    /// Authorizations that target this route.
    pub authorizations: Vec<Authorization>,
}

/// One rule of an [`InboundRoute`]: what it matches and the filters the inbound proxy applies
/// to what it matched, after authorization (`RequestHeaderModifier`,
/// `ResponseHeaderModifier`, `RequestRedirect`: the ones Linkerd applies inbound).
#[derive(Clone, Debug)]
pub struct InboundRule {
    /// Its matches (a rule without any matches every request, as `PathPrefix /`).
    pub matches: Vec<HttpMatch>,
    /// Its filters, shared with the decisions that carry them; empty for most rules.
    pub filters: Arc<[Filter]>,
}

/// Which port of the pod a Server selects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerPort {
    /// A port number.
    Number(u16),
    /// A named container port.
    Name(String),
}

/// A compiled `Server`.
#[derive(Clone, Debug)]
pub struct Server {
    /// The Server resource, shared with the decisions that name it.
    pub id: Arc<ResourceId>,
    /// Labels of the pods it selects.
    pub selector: Selector,
    /// The port it selects.
    pub port: ServerPort,
    /// `proxyProtocol`: what the port speaks (`unknown`, the default, means detect it).
    pub proxy_protocol: ProxyProtocol,
    /// What happens to requests no authorization admits (`accessPolicy`, default `deny`).
    pub access_policy: DefaultPolicy,
    /// Authorizations that target the whole Server (or its namespace).
    pub authorizations: Vec<Authorization>,
    /// Routes attached to it; when there are any, requests matching none are refused.
    pub routes: Vec<InboundRoute>,
    /// Its `HTTPLocalRateLimitPolicy`, if any, shared with the decisions that admit requests.
    pub rate_limit: Option<Arc<RateLimit>>,
    /// `metadata.creationTimestamp`: of two Servers selecting the same pod and port, the older
    /// applies (then the first by name), as in Linkerd.
    pub created: Option<Timestamp>,
}

/// A compiled label selector.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selector {
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) expressions: Vec<SelectorExpr>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum SelectorExpr {
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
}

/// `HTTPLocalRateLimitPolicy`: requests per second for a Server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RateLimit {
    /// The policy resource.
    pub source: ResourceId,
    /// Limit over all clients.
    pub total: Option<u32>,
    /// Limit for each client identity.
    pub per_identity: Option<u32>,
    /// Per-identity limits for particular clients, replacing `per_identity`.
    pub overrides: Vec<(u32, Vec<Identity>)>,
}

/// The pod a request arrives at: enough to choose its Server.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InboundTarget {
    /// The pod's namespace.
    pub namespace: String,
    /// The pod's labels.
    pub labels: BTreeMap<String, String>,
    /// The port the request arrives at.
    pub port: u16,
    /// The container port's name, if it has one.
    pub port_name: Option<String>,
    /// Paths of HTTP probes on this port (kubelet liveness/readiness/startup).
    pub probe_paths: Vec<String>,
    /// The workload's default policy (`config.linkerd.io/default-inbound-policy`), if set.
    pub default_policy: Option<DefaultPolicy>,
}

/// Who is calling.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Peer {
    /// The verified mesh identity, when the client came over mesh mTLS.
    pub identity: Option<Identity>,
    /// The client's address.
    pub ip: Option<IpAddr>,
}

/// Settings of the mesh that inbound decisions depend on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InboundConfig {
    /// Policy for ports no Server selects (Linkerd's default: all-unauthenticated).
    pub default_policy: DefaultPolicy,
    /// The cluster's pod and node networks, for the `cluster-*` policies.
    pub cluster_networks: Vec<Cidr>,
    /// The trust domain.
    pub trust_domain: String,
    /// The control-plane namespace used in DNS-form identities.
    pub control_namespace: String,
}

// === impl ResourceId ===

impl ResourceId {
    /// Names a resource.
    pub fn new(kind: &str, namespace: &str, name: &str) -> Self {
        Self {
            kind: kind.to_owned(),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }
    }
}

impl fmt::Display for ResourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.kind, self.namespace, self.name)
    }
}

// === impl DefaultPolicy ===

impl DefaultPolicy {
    /// The name Linkerd uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AllUnauthenticated => "all-unauthenticated",
            Self::AllAuthenticated => "all-authenticated",
            Self::ClusterAuthenticated => "cluster-authenticated",
            Self::ClusterUnauthenticated => "cluster-unauthenticated",
            Self::Deny => "deny",
            Self::Audit => "audit",
        }
    }

    fn admits(self, peer: &Peer, cluster: &[Cidr]) -> bool {
        let in_cluster = || {
            peer.ip
                .is_some_and(|ip| cluster.iter().any(|c| c.contains(ip)))
        };
        match self {
            Self::AllUnauthenticated | Self::Audit => true,
            Self::AllAuthenticated => peer.identity.is_some(),
            Self::ClusterAuthenticated => peer.identity.is_some() && in_cluster(),
            Self::ClusterUnauthenticated => in_cluster(),
            Self::Deny => false,
        }
    }
}

impl FromStr for DefaultPolicy {
    type Err = UnknownDefaultPolicy;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "all-unauthenticated" => Self::AllUnauthenticated,
            "all-authenticated" => Self::AllAuthenticated,
            "cluster-authenticated" => Self::ClusterAuthenticated,
            "cluster-unauthenticated" => Self::ClusterUnauthenticated,
            "deny" => Self::Deny,
            "audit" => Self::Audit,
            _ => return Err(UnknownDefaultPolicy(s.to_owned())),
        })
    }
}

// === impl Authorization ===

impl Authorization {
    fn admits(&self, peer: &Peer, control_ns: &str) -> bool {
        self.requires.iter().all(|r| match r {
            Requirement::Network(nets) => peer
                .ip
                .is_some_and(|ip| nets.iter().any(|n| n.contains(ip))),
            Requirement::MeshTls(ids) => peer
                .identity
                .as_ref()
                .is_some_and(|id| ids.iter().any(|m| m.admits(id, control_ns))),
        })
    }
}

// === impl Selector ===

impl Selector {
    /// Whether a pod with these labels is selected. An empty selector selects every pod.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.labels.iter().all(|(k, v)| labels.get(k) == Some(v))
            && self.expressions.iter().all(|e| match e {
                SelectorExpr::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
                SelectorExpr::NotIn(k, vs) => labels.get(k).is_none_or(|v| !vs.contains(v)),
                SelectorExpr::Exists(k) => labels.contains_key(k),
                SelectorExpr::DoesNotExist(k) => !labels.contains_key(k),
            })
    }
}

// === impl InboundRoute ===

impl InboundRoute {
    /// Every match of every rule, with the rule it belongs to.
    pub fn matches(&self) -> impl Iterator<Item = (&InboundRule, &HttpMatch)> {
        (self.rules.iter()).flat_map(|r| r.matches.iter().map(move |m| (r, m)))
    }
}

// === impl Server ===

impl Server {
    /// Orders Servers by precedence: older first (compared as instants; one without a
    /// timestamp, as in a file, counts as newest), then by name.
    pub(crate) fn precedence(&self) -> (bool, Option<Timestamp>, &str, &str) {
        (
            self.created.is_none(),
            self.created,
            &self.id.namespace,
            &self.id.name,
        )
    }

    pub(crate) fn selects(&self, target: &InboundTarget) -> bool {
        self.id.namespace == target.namespace
            && self.selector.matches(&target.labels)
            && match &self.port {
                ServerPort::Number(n) => *n == target.port,
                ServerPort::Name(name) => target.port_name.as_deref() == Some(name.as_str()),
            }
    }
}

// === impl RateLimit ===

impl RateLimit {
    /// The per-identity limit for a client: its override, else the general per-identity limit.
    pub fn per_identity_limit(&self, identity: Option<&Identity>) -> Option<u32> {
        identity
            .and_then(|id| {
                self.overrides
                    .iter()
                    .find(|(_, ids)| ids.contains(id))
                    .map(|(rps, _)| *rps)
            })
            .or(self.per_identity)
    }
}

impl Default for InboundConfig {
    fn default() -> Self {
        Self {
            default_policy: DefaultPolicy::AllUnauthenticated,
            cluster_networks: default_cluster_networks(),
            trust_domain: crate::identity::DEFAULT_TRUST_DOMAIN.to_owned(),
            control_namespace: crate::identity::DEFAULT_CONTROL_NAMESPACE.to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs() {
        let cases = [
            ("10.0.0.0/8", "10.1.2.3", true),
            ("10.0.0.0/8", "11.0.0.1", false),
            ("0.0.0.0/0", "192.0.2.1", true),
            ("::/0", "2001:db8::1", true),
            ("::/0", "192.0.2.1", false),
            ("10.0.0.0/8", "::ffff:10.0.0.1", true),
            ("192.0.2.7", "192.0.2.7", true),
            ("192.0.2.7/32", "192.0.2.8", false),
        ];
        for (net, ip, want) in cases {
            let c: Cidr = net.parse().unwrap();
            assert_eq!(c.contains(ip.parse().unwrap()), want, "{net} {ip}");
        }
        for bad in ["10.0.0.0/33", "x/8", "::/129", ""] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn identity_wildcards() {
        let web: Identity = "spiffe://cluster.local/ns/emojivoto/sa/web"
            .parse()
            .unwrap();
        let cases = [
            ("*", true),
            (
                "web.emojivoto.serviceaccount.identity.linkerd.cluster.local",
                true,
            ),
            ("spiffe://cluster.local/ns/emojivoto/sa/voting", false),
            (
                "*.emojivoto.serviceaccount.identity.linkerd.cluster.local",
                true,
            ),
            (
                "*.booksapp.serviceaccount.identity.linkerd.cluster.local",
                false,
            ),
            ("*.cluster.local", true),
            ("*.example.org", false),
            // Every label of the suffix counts, the control-plane label included.
            ("*.identity.linkerd.cluster.local", true),
            (
                "*.emojivoto.serviceaccount.identity.other.cluster.local",
                false,
            ),
            (
                "web.emojivoto.serviceaccount.identity.other.cluster.local",
                false,
            ),
            // Names that are no service account's are accepted and match exactly.
            ("spiffe://cluster.local/vm/db", false),
            ("db.example.org", false),
        ];
        for (pat, want) in cases {
            let m = IdentityMatch::parse(pat).unwrap();
            assert_eq!(m.admits(&web, "linkerd"), want, "{pat}");
        }
        // Under another control namespace, DNS forms name it; the SPIFFE form has none.
        for (pat, want) in [
            (
                "web.emojivoto.serviceaccount.identity.mesh.cluster.local",
                true,
            ),
            (
                "web.emojivoto.serviceaccount.identity.linkerd.cluster.local",
                false,
            ),
            (
                "*.emojivoto.serviceaccount.identity.mesh.cluster.local",
                true,
            ),
            ("spiffe://cluster.local/ns/emojivoto/sa/web", true),
        ] {
            let m = IdentityMatch::parse(pat).unwrap();
            assert_eq!(m.admits(&web, "mesh"), want, "{pat}");
        }
        assert!(IdentityMatch::parse("*.").is_err());
        assert!(IdentityMatch::parse("not an identity").is_err());
    }

    #[test]
    fn default_policies() {
        let cluster = default_cluster_networks();
        let id: Identity = "spiffe://cluster.local/ns/a/sa/b".parse().unwrap();
        let inside = Some("10.0.0.5".parse().unwrap());
        let outside = Some("203.0.113.9".parse().unwrap());
        let peers = [
            Peer {
                identity: Some(id.clone()),
                ip: inside,
            },
            Peer {
                identity: Some(id),
                ip: outside,
            },
            Peer {
                identity: None,
                ip: inside,
            },
            Peer {
                identity: None,
                ip: outside,
            },
        ];
        let table = [
            (DefaultPolicy::AllUnauthenticated, [true, true, true, true]),
            (DefaultPolicy::AllAuthenticated, [true, true, false, false]),
            (
                DefaultPolicy::ClusterAuthenticated,
                [true, false, false, false],
            ),
            (
                DefaultPolicy::ClusterUnauthenticated,
                [true, false, true, false],
            ),
            (DefaultPolicy::Deny, [false, false, false, false]),
            (DefaultPolicy::Audit, [true, true, true, true]),
        ];
        for (policy, want) in table {
            for (peer, want) in peers.iter().zip(want) {
                assert_eq!(policy.admits(peer, &cluster), want, "{policy:?} {peer:?}");
            }
        }
    }
}

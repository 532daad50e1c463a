//! Who a client is, as authorizations match it: its identity (exact, by name, namespace or
//! DNS suffix) and its network (CIDRs less their exceptions).

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use super::{InvalidCidr, InvalidIdentityMatch};
use crate::identity::{self, Identity};

/// An IP network in CIDR form.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

/// A network an authorization admits, less its exceptions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetworkMatch {
    /// The network.
    pub net: Cidr,
    /// Addresses inside `net` that are not admitted.
    pub except: Vec<Cidr>,
}

/// Which client identities are admitted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IdentityMatch {
    /// Any authenticated client (`*`, or `unauthenticatedTLS`).
    Any,
    /// Exactly this identity (its SPIFFE form, or a `ServiceAccount` identityRef).
    Exact(Identity),
    /// Exactly this name, compared with the client's DNS and SPIFFE forms, as Linkerd compares
    /// names: a DNS-form identity as written (its control-plane label included), or a name
    /// that is no service account's (`spiffe://cluster.local/vm/db`, `db.example.org`), which
    /// no mesh-issued certificate carries.
    Name(String),
    /// Any service account of a namespace (a `Namespace` identityRef, or `ServiceAccount` `*`).
    Namespace {
        /// The namespace.
        namespace: String,
        /// The trust domain, when the manifest named one.
        trust_domain: Option<String>,
    },
    /// Any identity whose DNS form ends with this suffix (`*.cluster.local`, or
    /// `*.<ns>.serviceaccount.identity.linkerd.cluster.local`: every label of it counts).
    DnsSuffix(String),
}

// === impl Cidr ===

impl Cidr {
    /// Whether `ip` lies in this network. IPv4 and IPv6 never match each other, except that
    /// IPv4-mapped IPv6 addresses are compared as IPv4.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }

    /// Whether `other` lies wholly inside this network.
    pub fn covers(&self, other: &Self) -> bool {
        other.prefix >= self.prefix && self.contains(other.addr)
    }
}

impl FromStr for Cidr {
    type Err = InvalidCidr;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || InvalidCidr(s.to_owned());
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr.trim().parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(bad)?,
            None => max,
        };
        Ok(Self { addr, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

// === impl NetworkMatch ===

impl NetworkMatch {
    pub(super) fn contains(&self, ip: IpAddr) -> bool {
        self.net.contains(ip) && !self.except.iter().any(|e| e.contains(ip))
    }
}

// === impl IdentityMatch ===

impl IdentityMatch {
    /// Parses an entry of `MeshTLSAuthentication.spec.identities` or
    /// `ServerAuthorization.client.meshTLS.identities`: `*`, `*.<suffix>`, a workload
    /// identity in either form, or any other SPIFFE ID or DNS name, as Linkerd accepts.
    pub fn parse(s: &str) -> Result<Self, InvalidIdentityMatch> {
        if s == "*" {
            return Ok(Self::Any);
        }
        if let Some(suffix) = s.strip_prefix("*.") {
            // Matched against the whole DNS form, so `*.ns.serviceaccount.identity.linkerd.…`
            // admits ns's accounts under the control namespace `linkerd` only, as in Linkerd.
            if suffix.is_empty() || suffix.contains('*') {
                return Err(InvalidIdentityMatch::Wildcard(s.to_owned()));
            }
            return Ok(Self::DnsSuffix(format!(".{suffix}")));
        }
        if s.starts_with("spiffe://")
            && let Ok(id) = Identity::parse(s)
        {
            return Ok(Self::Exact(id));
        }
        identity::check_peer_name(s)?;
        Ok(Self::Name(s.to_owned()))
    }

    /// Whether `id` is admitted, its DNS form read with `control_ns` (as in Linkerd).
    pub fn admits(&self, id: &Identity, control_ns: &str) -> bool {
        match self {
            Self::Any => true,
            Self::Exact(want) => want == id,
            Self::Name(name) => id.to_dns(control_ns) == *name || id.to_spiffe() == *name,
            Self::Namespace {
                namespace,
                trust_domain,
            } => {
                id.namespace() == namespace
                    && trust_domain
                        .as_deref()
                        .is_none_or(|td| td == id.trust_domain())
            }
            Self::DnsSuffix(suffix) => id.to_dns(control_ns).ends_with(suffix.as_str()),
        }
    }
}

/// The networks Linkerd treats as the cluster's by default.
pub fn default_cluster_networks() -> Vec<Cidr> {
    [
        "10.0.0.0/8",
        "100.64.0.0/10",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "fd00::/8",
    ]
    .iter()
    .filter_map(|s| s.parse().ok())
    .collect()
}

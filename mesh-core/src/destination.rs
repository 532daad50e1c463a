//! Where an outbound connection or request is going, as Kubernetes itself would resolve it.
//!
//! Two questions, two lookups:
//! - an **address** (what a transparent proxy reads with `SO_ORIGINAL_DST`):
//!   a Service's ClusterIP and port, a known pod (endpoint) address, or nothing the mesh knows;
//! - a **name** (a Host header in explicit mode, a URL in-process, `mesh policy explain`):
//!   `web`, `web.shop`, `web.shop.svc` or `web.shop.svc.<cluster-domain>`, a bare name being
//!   in the caller's own namespace, as the cluster's DNS search path has it.
//!
//! ```
//! use mesh_core::MeshPolicy;
//! use mesh_core::destination::{Destination, NameContext};
//!
//! let policy = MeshPolicy::from_yaml(r#"
//! apiVersion: v1
//! kind: Service
//! metadata: { name: web, namespace: shop }
//! spec: { clusterIP: 10.96.0.10, ports: [{ name: http, port: 80, targetPort: 8080 }] }
//! "#)?;
//! let shop = NameContext::new("shop");
//! assert_eq!(policy.lookup_name(&shop, "web").map(|s| s.name()), Some("web"));
//! assert!(policy.lookup_name(&NameContext::new("default"), "web").is_none());
//! assert!(matches!(
//!     policy.lookup_addr("10.96.0.10:80".parse()?),
//!     Destination::Service { port: 80, .. }
//! ));
//! assert!(matches!(policy.lookup_addr("10.96.0.10:81".parse()?), Destination::Unknown));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::hash::Hash;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use crate::index::Sharded;
use crate::policy::{EndpointSet, MeshPolicy, OutboundDecision, ServicePolicy, TargetPort};
use crate::route::RequestFacts;

/// Kubernetes' default cluster domain.
pub const DEFAULT_CLUSTER_DOMAIN: &str = "cluster.local";

/// DNS labels are at most 63 bytes, so `name.namespace` fits here; longer is no Service.
const KEY_MAX: usize = 128;

/// The caller's side of a name lookup: its namespace and the cluster's domain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NameContext {
    namespace: String,
    cluster_domain: String,
}

/// A Service named by DNS, split into its name and namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServiceName<'a> {
    /// The Service's name.
    pub name: &'a str,
    /// Its namespace.
    pub namespace: &'a str,
}

/// What a destination address is to the mesh.
#[derive(Clone, Copy, Debug)]
pub enum Destination<'a> {
    /// One of a Service's ClusterIPs, at one of its ports (or any port where the Service
    /// lists none).
    Service {
        /// The Service.
        service: &'a ServicePolicy,
        /// The Service port.
        port: u16,
    },
    /// The address of a known endpoint (a pod) of a Service; shared, so that a request can
    /// carry it (for its `dst_*` labels) without copying.
    Endpoint(&'a Arc<PodEndpoint>),
    /// Nothing the mesh knows: the connection goes where it was addressed, unchanged.
    Unknown,
}

/// A pod address known from discovery (EndpointSlices and the Pods they point to).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PodEndpoint {
    /// The pod's address.
    pub ip: IpAddr,
    /// The Service whose EndpointSlice lists it.
    pub service: String,
    /// The namespace of the Service and the pod.
    pub namespace: String,
    /// The pod's name, when the slice's `targetRef` names it.
    pub pod: Option<String>,
    /// The service account the pod runs as, when it is meshed: the identity it must present.
    pub service_account: Option<String>,
}

/// Addresses the snapshot knows, for [`MeshPolicy::lookup_addr`]. Kept up to date one
/// Service or endpoint set at a time; a snapshot shares its shards.
#[derive(Clone, Debug, Default)]
pub(crate) struct AddressIndex {
    /// ClusterIP → the Service's key (`name.namespace`).
    cluster_ips: Sharded<IpAddr, Arc<str>>,
    /// Endpoint address and port → the pods listed there, by the apply order of their slice:
    /// the first slice that lists an address names it.
    by_addr: Sharded<SocketAddr, Listed>,
    /// Endpoint address (any port) → the same: a pod is that pod whatever the port.
    by_ip: Sharded<IpAddr, Listed>,
}

/// The pods listed at one address, by the apply order of the slice that lists them.
type Listed = Arc<[(u64, Arc<PodEndpoint>)]>;

// === impl NameContext ===

impl NameContext {
    /// Names are looked up from `namespace`, in the default cluster domain.
    pub fn new(namespace: &str) -> Self {
        Self {
            namespace: namespace.to_owned(),
            cluster_domain: DEFAULT_CLUSTER_DOMAIN.to_owned(),
        }
    }

    /// Sets the cluster domain (`cluster.local` by default).
    #[must_use]
    pub fn with_cluster_domain(mut self, domain: &str) -> Self {
        domain
            .trim_matches('.')
            .clone_into(&mut self.cluster_domain);
        self
    }

    /// The caller's namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The cluster domain.
    pub fn cluster_domain(&self) -> &str {
        &self.cluster_domain
    }

    /// The Service a host name means, or `None` when it cannot name a Service in this
    /// cluster (an IP address, `api.example.com`, a name in another cluster domain).
    pub fn service_name<'a>(&'a self, host: &'a str) -> Option<ServiceName<'a>> {
        service_name(host, &self.namespace, &self.cluster_domain)
    }

    /// The full name of a Service: `name.namespace.svc.<cluster-domain>`.
    pub fn fqdn(&self, name: ServiceName<'_>) -> String {
        format!(
            "{}.{}.svc.{}",
            name.name, name.namespace, self.cluster_domain
        )
    }
}

impl Default for NameContext {
    /// The `default` namespace, as for a pod there.
    fn default() -> Self {
        Self::new("default")
    }
}

/// Kubernetes DNS rules: `web` (in `namespace`), `web.shop`, `web.shop.svc`,
/// `web.shop.svc.<domain>`, with or without the final dot.
pub(crate) fn service_name<'a>(
    host: &'a str,
    namespace: &'a str,
    domain: &str,
) -> Option<ServiceName<'a>> {
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.is_empty() || host.starts_with('[') || host.parse::<IpAddr>().is_ok() {
        return None;
    }
    let mut labels = host.splitn(4, '.');
    let name = labels.next().filter(|l| !l.is_empty())?;
    let Some(ns) = labels.next() else {
        return Some(ServiceName { name, namespace });
    };
    let named = ServiceName {
        name,
        namespace: ns,
    };
    match (labels.next(), labels.next()) {
        (None, _) if !ns.is_empty() => Some(named),
        (Some("svc"), None) => Some(named),
        (Some("svc"), Some(d)) if d.eq_ignore_ascii_case(domain.trim_matches('.')) => Some(named),
        _ => None,
    }
}

// === impl MeshPolicy ===

impl MeshPolicy {
    /// The Service a host name means from `from`'s namespace, if the snapshot knows it.
    /// Allocation-free: this is on every explicit-mode and in-process request.
    pub fn lookup_name(&self, from: &NameContext, host: &str) -> Option<&ServicePolicy> {
        self.lookup_service_name(from.service_name(host)?)
    }

    pub(crate) fn lookup_service_name(&self, n: ServiceName<'_>) -> Option<&ServicePolicy> {
        let mut buf = [0u8; KEY_MAX];
        let len = n.name.len() + 1 + n.namespace.len();
        let key = buf.get_mut(..len)?;
        key[..n.name.len()].copy_from_slice(n.name.as_bytes());
        key[n.name.len()] = b'.';
        key[n.name.len() + 1..].copy_from_slice(n.namespace.as_bytes());
        self.services
            .get(std::str::from_utf8(key).ok()?)
            .map(|s| &**s)
    }

    /// The namespaces that have a Service called `name`, sorted.
    pub fn namespaces_with_service(&self, name: &str) -> Vec<&str> {
        let mut v: Vec<&str> = self
            .services
            .values()
            .filter(|s| s.name == name)
            .map(|s| s.namespace.as_str())
            .collect();
        v.sort_unstable();
        v
    }

    /// What a destination address is: a Service's ClusterIP and port, a known pod, or
    /// unknown.
    pub fn lookup_addr(&self, addr: SocketAddr) -> Destination<'_> {
        let ix = &self.addresses;
        if let Some(service) = ix
            .cluster_ips
            .get(&addr.ip())
            .and_then(|k| self.services.get(&**k))
        {
            let port = addr.port();
            // Kubernetes forwards only the ports a Service lists; a Service read without
            // ports (routes only) is taken at its word for any port.
            if service.ports.is_empty() || service.ports.iter().any(|p| p.port == port) {
                return Destination::Service { service, port };
            }
            return Destination::Unknown;
        }
        ix.by_addr
            .get(&addr)
            .or_else(|| ix.by_ip.get(&addr.ip()))
            .and_then(|listed| listed.first())
            .map_or(Destination::Unknown, |(_, pod)| Destination::Endpoint(pod))
    }

    /// Routes a request to `host:port`, the host named as Kubernetes DNS resolves it from
    /// `from`'s namespace. A host that names no known Service goes to itself.
    pub fn route_from<'a>(
        &'a self,
        from: &NameContext,
        host: &str,
        port: u16,
        req: &impl RequestFacts,
    ) -> OutboundDecision<'a> {
        self.route_in(host, &from.namespace, &from.cluster_domain, port, req)
    }
}

// === impl ServicePolicy ===

impl ServicePolicy {
    /// The Service's ClusterIPs (`spec.clusterIP`/`clusterIPs`); empty when it is headless
    /// or none was given.
    pub fn cluster_ips(&self) -> &[IpAddr] {
        &self.cluster_ips
    }

    /// A headless Service (`clusterIP: None`): its clients call the pods by their own IPs.
    pub fn is_headless(&self) -> bool {
        self.headless
    }

    /// The endpoint port behind Service port `port`, given an EndpointSlice's ports: the
    /// slice port of the same name (Kubernetes names slice ports after Service ports), else
    /// the one named by a named `targetPort`, else a numeric `targetPort`, else the slice's
    /// only port.
    pub fn endpoint_port(&self, port: u16, slice_ports: &[(Option<String>, u16)]) -> Option<u16> {
        let named = |n: &str| {
            slice_ports
                .iter()
                .find(|(name, _)| name.as_deref() == Some(n))
                .map(|&(_, p)| p)
        };
        let only = || match slice_ports {
            [(_, p)] => Some(*p),
            _ => None,
        };
        let Some(sp) = self.ports.iter().find(|p| p.port == port) else {
            // No such Service port listed: the port is taken as the endpoints' own.
            return slice_ports.iter().find(|&&(_, p)| p == port).map(|_| port);
        };
        sp.name
            .as_deref()
            .and_then(named)
            .or_else(|| match &sp.target {
                Some(TargetPort::Name(n)) => named(n),
                Some(TargetPort::Number(n)) => Some(*n),
                None => None,
            })
            .or_else(only)
    }
}

// === impl AddressIndex ===

impl AddressIndex {
    /// A Service's ClusterIPs changed from `old` to `new`.
    pub(crate) fn set_service(&mut self, key: &str, old: &[IpAddr], new: &[IpAddr]) {
        for ip in old {
            if self.cluster_ips.get(ip).is_some_and(|k| &**k == key) {
                self.cluster_ips.remove(ip);
            }
        }
        let key: Arc<str> = Arc::from(key);
        for ip in new {
            self.cluster_ips.insert(*ip, Arc::clone(&key));
        }
    }

    /// Adds the addresses of an endpoint set, applied as `seq`.
    pub(crate) fn add_set(&mut self, seq: u64, set: &EndpointSet) {
        for a in &set.addresses {
            let pod = Arc::new(PodEndpoint {
                ip: a.ip,
                service: set.service.clone(),
                namespace: set.namespace.clone(),
                pod: a.pod.clone(),
                service_account: a.service_account.clone(),
            });
            list(&mut self.by_ip, a.ip, seq, &pod);
            for (_, port) in &set.ports {
                list(&mut self.by_addr, SocketAddr::new(a.ip, *port), seq, &pod);
            }
        }
    }

    /// Removes the addresses of an endpoint set applied as `seq`.
    pub(crate) fn remove_set(&mut self, seq: u64, set: &EndpointSet) {
        for a in &set.addresses {
            unlist(&mut self.by_ip, a.ip, seq);
            for (_, port) in &set.ports {
                unlist(&mut self.by_addr, SocketAddr::new(a.ip, *port), seq);
            }
        }
    }
}

/// Lists `pod` at `key` after every entry of the same or an earlier slice.
fn list<K: Hash + Eq + Clone>(
    map: &mut Sharded<K, Listed>,
    key: K,
    seq: u64,
    pod: &Arc<PodEndpoint>,
) {
    let mut v: Vec<(u64, Arc<PodEndpoint>)> = map.get(&key).map(|l| l.to_vec()).unwrap_or_default();
    let at = v.partition_point(|(s, _)| *s <= seq);
    v.insert(at, (seq, Arc::clone(pod)));
    map.insert(key, v.into());
}

/// Drops the entries of slice `seq` at `key`.
fn unlist<K: Hash + Eq + Clone>(map: &mut Sharded<K, Listed>, key: K, seq: u64) {
    let Some(listed) = map.get(&key) else { return };
    let v: Vec<(u64, Arc<PodEndpoint>)> =
        listed.iter().filter(|(s, _)| *s != seq).cloned().collect();
    if v.is_empty() {
        map.remove(&key);
    } else {
        map.insert(key, v.into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_kubernetes_dns() {
        let cases: &[(&str, Option<(&str, &str)>)] = &[
            ("web", Some(("web", "shop"))),
            ("web.", Some(("web", "shop"))),
            ("web.other", Some(("web", "other"))),
            ("web.other.svc", Some(("web", "other"))),
            ("web.other.svc.cluster.local", Some(("web", "other"))),
            ("web.other.svc.cluster.local.", Some(("web", "other"))),
            ("web.other.svc.example.org", None),
            ("web.other.pod.cluster.local", None),
            ("api.example.com", None),
            ("10.1.2.3", None),
            ("[::1]", None),
            ("", None),
            (".x", None),
            ("web.", Some(("web", "shop"))),
        ];
        for (host, want) in cases {
            let got = service_name(host, "shop", "cluster.local").map(|n| (n.name, n.namespace));
            assert_eq!(got, *want, "{host}");
        }
    }

    #[test]
    fn cluster_domain_is_configurable() {
        let cx = NameContext::new("shop").with_cluster_domain("corp.internal.");
        assert_eq!(
            cx.service_name("web.x.svc.corp.internal"),
            Some(ServiceName {
                name: "web",
                namespace: "x"
            })
        );
        assert_eq!(cx.service_name("web.x.svc.cluster.local"), None);
        assert_eq!(
            cx.fqdn(ServiceName {
                name: "web",
                namespace: "x"
            }),
            "web.x.svc.corp.internal"
        );
    }
}

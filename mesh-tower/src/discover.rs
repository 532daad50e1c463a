//! Where a backend's endpoints are: the [`Resolve`] trait, and a [`StaticResolver`] for use
//! outside Kubernetes (service name → endpoints and their expected identities), whose
//! endpoint sets can change at run time.
//!
//! ```
//! use mesh_tower::discover::{Endpoint, Resolve, StaticResolver};
//! use mesh_core::split::BackendRef;
//!
//! let resolver = StaticResolver::new();
//! resolver.set("web.shop", vec![Endpoint::new("127.0.0.1:8080".parse().unwrap())]);
//! let web = BackendRef::new("web", "shop", Some(80));
//! let rx = resolver.resolve(&web).expect("known");
//! assert_eq!(rx.borrow().len(), 1);
//! resolver.set("web.shop", vec![]); // applies to everyone watching
//! assert!(rx.borrow().is_empty());
//! ```

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use arc_swap::ArcSwap;
use mesh_core::policy::EndpointSet;
use mesh_core::split::BackendRef;
use mesh_core::{Identity, MeshPolicy};
use parking_lot::RwLock;
use tokio::sync::watch;

/// One endpoint of a backend: an address, and the mesh identity it must present (none for a
/// workload outside the mesh, which is then reached without mTLS).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// The address to connect to.
    pub addr: SocketAddr,
    /// The identity the endpoint must prove, if it is meshed.
    pub identity: Option<Identity>,
}

/// A live view of a backend's endpoints.
pub type Endpoints = watch::Receiver<Arc<Vec<Endpoint>>>;

/// A source of endpoints: static configuration, Kubernetes EndpointSlices, …
pub trait Resolve: Send + Sync + 'static {
    /// The endpoints of a backend, or `None` if it is unknown.
    fn resolve(&self, backend: &BackendRef) -> Option<Endpoints>;
}

type Publisher = watch::Sender<Arc<Vec<Endpoint>>>;

/// Endpoints set by hand, keyed by `name.namespace` (any port) or `name.namespace:port`.
#[derive(Clone, Debug, Default)]
pub struct StaticResolver {
    services: Arc<RwLock<HashMap<String, Publisher>>>,
}

// === impl Endpoint ===

impl Endpoint {
    /// An endpoint outside the mesh (no mTLS).
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            identity: None,
        }
    }

    /// A meshed endpoint that must present `identity`.
    pub fn meshed(addr: SocketAddr, identity: Identity) -> Self {
        Self {
            addr,
            identity: Some(identity),
        }
    }
}

// === impl StaticResolver ===

impl StaticResolver {
    /// An empty resolver.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the endpoints of `service` (`name.namespace`, or `name.namespace:port` for one
    /// port). Everyone resolving it sees the change.
    pub fn set(&self, service: &str, endpoints: Vec<Endpoint>) {
        let endpoints = Arc::new(endpoints);
        let mut map = self.services.write();
        match map.get(service) {
            Some(tx) => {
                tx.send_replace(endpoints);
            }
            None => {
                map.insert(service.to_owned(), watch::channel(endpoints).0);
            }
        }
    }

    /// Makes `sets` the whole configuration: each service in it is [`set`](Self::set), and
    /// each service no longer in it is emptied, so that a removed endpoint set stops new
    /// traffic instead of keeping its last endpoints. An emptied service is forgotten once
    /// nobody watches it; while someone does, it stays (empty), because a watcher of a
    /// closed channel keeps its last endpoints.
    pub fn replace_all(&self, sets: HashMap<String, Vec<Endpoint>>) {
        let mut map = self.services.write();
        map.retain(|service, tx| {
            if sets.contains_key(service) {
                return true;
            }
            tx.send_if_modified(|eps| {
                let changed = !eps.is_empty();
                *eps = Arc::new(Vec::new());
                changed
            });
            tx.receiver_count() > 0
        });
        drop(map);
        for (service, endpoints) in sets {
            self.set(&service, endpoints);
        }
    }

    /// Builder form of [`StaticResolver::set`].
    #[must_use]
    pub fn with(self, service: &str, endpoints: Vec<Endpoint>) -> Self {
        self.set(service, endpoints);
        self
    }
}

impl Resolve for StaticResolver {
    fn resolve(&self, backend: &BackendRef) -> Option<Endpoints> {
        // A destination that is an address, not a Service, is its own endpoint.
        if let (Some(ip), Some(port)) = (backend.ip(), backend.port()) {
            let ep = Endpoint::new(SocketAddr::new(ip, port));
            return Some(watch::channel(Arc::new(vec![ep])).1);
        }
        let map = self.services.read();
        let name = format!("{}.{}", backend.name(), backend.namespace());
        if let Some(port) = backend.port()
            && let Some(tx) = map.get(&format!("{name}:{port}"))
        {
            return Some(tx.subscribe());
        }
        map.get(&name).map(watch::Sender::subscribe)
    }
}

/// Endpoints from a compiled policy's endpoint sets (a `--config`, a cluster, a controller),
/// and the identity each address must present: each Service port keyed `name.namespace:port`
/// to its endpoints at the port behind it.
#[derive(Clone, Debug, Default)]
pub struct PolicyResolver {
    services: StaticResolver,
    by_ip: Arc<ArcSwap<HashMap<IpAddr, Identity>>>,
    /// What each Service (namespace, name) contributed, so that one Service's endpoints can be
    /// replaced without touching (and waking the balancers of) every other.
    parts: Arc<parking_lot::Mutex<HashMap<(String, String), ServiceEntries>>>,
}

/// One Service's resolver entries and the identities of its addresses.
#[derive(Debug, Default)]
struct ServiceEntries {
    sets: HashMap<String, Vec<Endpoint>>,
    identities: Vec<(IpAddr, Identity)>,
}

// === impl PolicyResolver ===

impl PolicyResolver {
    /// The identity an address must present, if the config names one.
    pub fn identity_of(&self, ip: IpAddr) -> Option<Identity> {
        self.by_ip.load().get(&ip).cloned()
    }

    /// Replaces the endpoints with those of `policy` (a set it no longer has is emptied).
    pub fn sync(&self, policy: &MeshPolicy) {
        let mut by_service: HashMap<(String, String), Vec<&EndpointSet>> = HashMap::new();
        for set in policy.endpoints() {
            by_service
                .entry((set.namespace.clone(), set.service.clone()))
                .or_default()
                .push(set);
        }
        let parts: HashMap<_, _> = by_service
            .into_iter()
            .map(|(id, sets)| {
                let entries = ServiceEntries::new(policy, &id, &sets);
                (id, entries)
            })
            .collect();
        let all = parts
            .values()
            .flat_map(|p| p.sets.iter().map(|(k, v)| (k.clone(), v.clone())))
            .collect();
        self.services.replace_all(all);
        let mut current = self.parts.lock();
        *current = parts;
        self.by_ip.store(Arc::new(by_ip(&current)));
    }

    /// Replaces the endpoints of the Services `changed` (namespace, name) with those of
    /// `policy`, leaving every other Service's alone: an EndpointSlice change wakes only the
    /// balancers of its own Service.
    pub fn sync_services(&self, policy: &MeshPolicy, changed: &BTreeSet<(String, String)>) {
        if changed.is_empty() {
            return;
        }
        let mut sets: HashMap<&(String, String), Vec<&EndpointSet>> = HashMap::new();
        for set in policy.endpoints() {
            // A scan of the sets, not a lookup: cheap next to what wakes up afterwards.
            if let Some(id) = changed.get(&(set.namespace.clone(), set.service.clone())) {
                sets.entry(id).or_default().push(set);
            }
        }
        let mut parts = self.parts.lock();
        for id in changed {
            let new = ServiceEntries::new(policy, id, sets.get(id).map_or(&[][..], |s| s));
            let old = parts.remove(id).unwrap_or_default();
            for key in old.sets.keys().filter(|k| !new.sets.contains_key(*k)) {
                // Emptied, not forgotten: a balancer watching it must see the endpoints go.
                self.services.set(key, Vec::new());
            }
            for (key, endpoints) in &new.sets {
                if old.sets.get(key) != Some(endpoints) {
                    self.services.set(key, endpoints.clone());
                }
            }
            if !new.sets.is_empty() {
                parts.insert(id.clone(), new);
            }
        }
        self.by_ip.store(Arc::new(by_ip(&parts)));
    }
}

/// Every address with an identity, over all Services.
fn by_ip(parts: &HashMap<(String, String), ServiceEntries>) -> HashMap<IpAddr, Identity> {
    parts
        .values()
        .flat_map(|p| p.identities.iter().cloned())
        .collect()
}

// === impl ServiceEntries ===

impl ServiceEntries {
    /// The entries of one Service from its endpoint sets: each Service port keyed
    /// (`name.namespace:port`) to its endpoints at the port behind it, a named `targetPort`
    /// resolved through the slice's port names.
    fn new(
        policy: &MeshPolicy,
        (namespace, name): &(String, String),
        sets: &[&EndpointSet],
    ) -> Self {
        let td = &policy.config().inbound.trust_domain;
        let service = policy.service(name, namespace);
        let key = format!("{name}.{namespace}");
        let mut entries = Self::default();
        for set in sets {
            // (Service port, endpoint port); without a Service, the slice's own ports.
            let ports: Vec<(u16, u16)> = match service {
                Some(s) if !s.ports().is_empty() => s
                    .ports()
                    .iter()
                    .filter_map(|p| Some((p.port, s.endpoint_port(p.port, &set.ports)?)))
                    .collect(),
                _ => set.ports.iter().map(|&(_, p)| (p, p)).collect(),
            };
            if ports.is_empty() {
                entries.sets.entry(key.clone()).or_default();
            }
            for a in &set.addresses {
                let id = a
                    .service_account
                    .as_deref()
                    .and_then(|sa| Identity::new(td, namespace, sa).ok());
                if let Some(id) = &id {
                    entries.identities.push((a.ip, id.clone()));
                }
                for &(svc_port, ep_port) in &ports {
                    entries
                        .sets
                        .entry(format!("{key}:{svc_port}"))
                        .or_default()
                        .push(Endpoint {
                            addr: SocketAddr::new(a.ip, ep_port),
                            identity: id.clone(),
                        });
                }
            }
        }
        entries
    }
}

impl Resolve for PolicyResolver {
    fn resolve(&self, backend: &BackendRef) -> Option<Endpoints> {
        if let (Some(ip), Some(port)) = (backend.ip(), backend.port()) {
            let ep = Endpoint {
                addr: SocketAddr::new(ip, port),
                identity: self.identity_of(ip),
            };
            return Some(watch::channel(Arc::new(vec![ep])).1);
        }
        self.services.resolve(backend)
    }
}

impl<R: Resolve> Resolve for Arc<R> {
    fn resolve(&self, backend: &BackendRef) -> Option<Endpoints> {
        (**self).resolve(backend)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn web() -> BackendRef {
        BackendRef::new("web", "shop", Some(80))
    }

    fn one(port: u16) -> Vec<Endpoint> {
        vec![Endpoint::new(SocketAddr::from(([127, 0, 0, 1], port)))]
    }

    #[test]
    fn replace_all_empties_a_watched_service_it_no_longer_names() {
        let r = StaticResolver::new();
        r.replace_all(HashMap::from([("web.shop:80".to_owned(), one(8080))]));
        let mut rx = r.resolve(&web()).expect("known");
        assert_eq!(rx.borrow_and_update().len(), 1);

        r.replace_all(HashMap::new());
        // The watcher is told, and the channel stays open, so it does not keep the old list.
        assert!(matches!(rx.has_changed(), Ok(true)));
        assert!(rx.borrow_and_update().is_empty());
        assert!(
            r.resolve(&web())
                .expect("still watched")
                .borrow()
                .is_empty()
        );

        r.replace_all(HashMap::from([("web.shop:80".to_owned(), one(8081))]));
        assert!(matches!(rx.has_changed(), Ok(true)));
        assert_eq!(*rx.borrow_and_update(), Arc::new(one(8081)));
    }

    #[test]
    fn replace_all_forgets_an_unwatched_service_it_no_longer_names() {
        let r = StaticResolver::new();
        r.replace_all(HashMap::from([("web.shop:80".to_owned(), one(8080))]));
        r.replace_all(HashMap::new());
        assert!(r.resolve(&web()).is_none());
        assert!(r.services.read().is_empty());
    }
}

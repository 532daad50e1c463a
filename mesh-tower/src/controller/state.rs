//! The client's local index: what every open stream carries, merged.
//!
//! Several streams may carry the same object (a backend Service named by two routes' parents),
//! so an object is counted by the streams that carry it and leaves the index only when the
//! last of them stops carrying it. Endpoints are kept per Service as the Destination stream
//! left them and handed to the index with `set_endpoints`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};

use mesh_api::v1;
use mesh_core::policy::{EndpointAddress, EndpointSet};
use mesh_core::{Changes, MeshPolicy, ObjectRef, PolicyConfig, PolicyIndex};

/// A Service, as (namespace, name).
pub(crate) type ServiceId = (String, String);

/// An endpoint as removals match it: address and ports.
type EndpointKey = (IpAddr, Vec<(String, u32)>);

/// Which stream: each carries its own part of the index.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum StreamKey {
    /// `OutboundPolicies.Watch` of a Service.
    Outbound(ServiceId),
    /// `OutboundPolicies.Watch` of an address (transparent mode).
    Address(SocketAddr),
    /// `Destination.Get` of a Service.
    Endpoints(ServiceId),
    /// `InboundPolicies.Watch` of the client's own pod.
    Inbound,
}

/// What the controller said an address is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AddressTarget {
    /// A Service (its ClusterIP), or a pod endpoint of this Service.
    Service(String, String),
    /// A pod no Service lists.
    Pod,
    /// Nothing the mesh knows: pass it through.
    Unknown,
}

/// The merged state of every stream.
#[derive(Debug)]
pub(crate) struct State {
    index: PolicyIndex,
    /// Each object in the index: its JSON as last received and the streams carrying it.
    objects: HashMap<ObjectRef, Carried>,
    /// The objects each stream carries now.
    carried_by: HashMap<StreamKey, BTreeSet<ObjectRef>>,
    /// Endpoints per Service, by address and ports.
    endpoints: HashMap<ServiceId, BTreeMap<EndpointKey, v1::Endpoint>>,
    /// Streams that have sent their first answer since they were (re)opened.
    answered: BTreeSet<StreamKey>,
    /// What each watched address is.
    addresses: HashMap<SocketAddr, AddressTarget>,
}

#[derive(Debug)]
struct Carried {
    json: Vec<u8>,
    streams: BTreeSet<StreamKey>,
}

// === impl State ===

impl State {
    pub(crate) fn new(config: PolicyConfig) -> Self {
        Self {
            index: PolicyIndex::new(config),
            objects: HashMap::new(),
            carried_by: HashMap::new(),
            endpoints: HashMap::new(),
            answered: BTreeSet::new(),
            addresses: HashMap::new(),
        }
    }

    pub(crate) fn snapshot(&self) -> MeshPolicy {
        self.index.snapshot()
    }

    pub(crate) fn answered(&self, key: &StreamKey) -> bool {
        self.answered.contains(key)
    }

    /// Whether `key` has answered, and so have the endpoints of every Service it carries
    /// (the target and the backends its routes and splits name): all a first request needs.
    pub(crate) fn answered_with_endpoints(&self, key: &StreamKey) -> bool {
        self.answered(key)
            && (self.carried_by.get(key).into_iter().flatten())
                .filter(|o| o.group.is_empty() && o.kind == "Service")
                .all(|o| {
                    let id = (o.namespace.clone(), o.name.clone());
                    self.answered(&StreamKey::Endpoints(id))
                })
    }

    pub(crate) fn address(&self, addr: SocketAddr) -> Option<&AddressTarget> {
        self.addresses.get(&addr)
    }

    /// A stream was (re)opened: until it answers, what it carried keeps serving, but it is
    /// not counted as answered.
    pub(crate) fn reopened(&mut self, key: &StreamKey) {
        self.answered.remove(key);
    }

    /// Makes `objects` everything `key` carries (each message replaces the last).
    pub(crate) fn carry(&mut self, key: &StreamKey, objects: Vec<v1::Object>) -> Changes {
        self.answered.insert(key.clone());
        let mut changes = Changes::default();
        let mut now = BTreeSet::new();
        for o in objects {
            let object = ObjectRef {
                group: o.group,
                kind: o.kind,
                namespace: o.namespace,
                name: o.name,
            };
            now.insert(object.clone());
            let carried = self.objects.entry(object).or_insert_with(|| Carried {
                json: Vec::new(),
                streams: BTreeSet::new(),
            });
            carried.streams.insert(key.clone());
            if carried.json == o.json {
                continue;
            }
            carried.json = o.json;
            match serde_json::from_slice::<serde_json::Value>(&carried.json) {
                Ok(value) => match self.index.apply(&value) {
                    Ok(c) => changes.extend(c),
                    Err(e) => {
                        tracing::warn!(error = %e, "the controller sent an object this client refuses")
                    }
                },
                Err(e) => {
                    tracing::warn!(error = %e, "the controller sent an object that is not JSON")
                }
            }
        }
        let before = self.carried_by.insert(key.clone(), now.clone());
        for gone in before.into_iter().flatten().filter(|o| !now.contains(o)) {
            changes.extend(self.release(key, &gone));
        }
        changes
    }

    /// Records what an address is.
    pub(crate) fn set_address(&mut self, addr: SocketAddr, target: AddressTarget) {
        self.addresses.insert(addr, target);
    }

    /// Applies one Destination update of `service`; `first` replaces what was there.
    pub(crate) fn endpoints(
        &mut self,
        service: &ServiceId,
        update: v1::endpoint_update::Update,
        first: bool,
    ) -> Changes {
        use v1::endpoint_update::Update;
        self.answered.insert(StreamKey::Endpoints(service.clone()));
        let set = self.endpoints.entry(service.clone()).or_default();
        if first {
            set.clear();
        }
        match update {
            Update::Add(add) => {
                for ep in add.endpoints {
                    set.insert(endpoint_key(&ep), ep);
                }
            }
            Update::Remove(remove) => {
                for ep in remove.endpoints {
                    set.remove(&endpoint_key(&ep));
                }
            }
            Update::NoEndpoints(_) => set.clear(),
        }
        let sets = endpoint_sets(service, set.values());
        self.index.set_endpoints(&service.0, &service.1, sets)
    }

    /// A stream was closed for good: what only it carried leaves the index.
    pub(crate) fn forget(&mut self, key: &StreamKey) -> Changes {
        self.answered.remove(key);
        let mut changes = Changes::default();
        if let StreamKey::Endpoints(service) = key {
            self.endpoints.remove(service);
            changes.extend(self.index.set_endpoints(&service.0, &service.1, Vec::new()));
        }
        if let StreamKey::Address(addr) = key {
            self.addresses.remove(addr);
        }
        for gone in self.carried_by.remove(key).into_iter().flatten() {
            changes.extend(self.release(key, &gone));
        }
        changes
    }

    /// `key` no longer carries `object`; the last carrier takes it out of the index.
    fn release(&mut self, key: &StreamKey, object: &ObjectRef) -> Changes {
        let Some(carried) = self.objects.get_mut(object) else {
            return Changes::default();
        };
        carried.streams.remove(key);
        if !carried.streams.is_empty() {
            return Changes::default();
        }
        self.objects.remove(object);
        self.index.delete(object)
    }

    /// How many objects the index holds (for tests and debugging).
    #[cfg(test)]
    pub(crate) fn object_count(&self) -> usize {
        self.objects.len()
    }
}

fn endpoint_key(ep: &v1::Endpoint) -> EndpointKey {
    let ip = ep
        .ip
        .parse()
        .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
    let mut ports: Vec<_> = ep.ports.iter().map(|p| (p.name.clone(), p.port)).collect();
    ports.sort();
    (ip, ports)
}

/// The endpoints of a Service as endpoint sets: one per distinct port list, as one
/// EndpointSlice per port list is how Kubernetes writes them.
fn endpoint_sets<'a>(
    (namespace, service): &ServiceId,
    endpoints: impl Iterator<Item = &'a v1::Endpoint>,
) -> Vec<EndpointSet> {
    let mut by_ports: BTreeMap<Vec<(String, u32)>, Vec<EndpointAddress>> = BTreeMap::new();
    for ep in endpoints {
        let (ip, ports) = endpoint_key(ep);
        if ip.is_unspecified() {
            tracing::warn!(ip = %ep.ip, "the controller sent an endpoint that is not an address");
            continue;
        }
        by_ports.entry(ports).or_default().push(EndpointAddress {
            ip,
            service_account: non_empty(&ep.service_account),
            pod: non_empty(&ep.pod),
        });
    }
    by_ports
        .into_iter()
        .map(|(ports, addresses)| EndpointSet {
            service: service.clone(),
            namespace: namespace.clone(),
            ports: ports
                .into_iter()
                .filter_map(|(name, port)| Some((non_empty(&name), u16::try_from(port).ok()?)))
                .collect(),
            addresses,
        })
        .collect()
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(name: &str, ip: &str) -> v1::Object {
        let json = serde_json::json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": { "name": name, "namespace": "shop" },
            "spec": { "clusterIP": ip, "ports": [{ "name": "http", "port": 80 }] },
        });
        v1::Object {
            group: String::new(),
            kind: "Service".into(),
            namespace: "shop".into(),
            name: name.into(),
            json: serde_json::to_vec(&json).unwrap(),
        }
    }

    fn web() -> StreamKey {
        StreamKey::Outbound(("shop".into(), "web".into()))
    }

    fn api() -> StreamKey {
        StreamKey::Outbound(("shop".into(), "api".into()))
    }

    #[test]
    fn an_object_stays_while_any_stream_carries_it() {
        let mut state = State::new(PolicyConfig::default());
        let shared = service("db", "10.96.0.3");
        let c = state.carry(&web(), vec![service("web", "10.96.0.1"), shared.clone()]);
        assert!(c.services.contains(&("shop".into(), "db".into())));
        state.carry(&api(), vec![service("api", "10.96.0.2"), shared]);
        assert_eq!(state.object_count(), 3);

        // web's next message no longer names db, but api's stream still carries it.
        state.carry(&web(), vec![service("web", "10.96.0.1")]);
        assert!(state.snapshot().service("db", "shop").is_some());

        let c = state.forget(&api());
        assert!(c.services.contains(&("shop".into(), "db".into())));
        assert!(state.snapshot().service("db", "shop").is_none());
        assert!(state.snapshot().service("api", "shop").is_none());
        assert!(state.snapshot().service("web", "shop").is_some());
    }

    fn ep(ip: &str) -> v1::Endpoint {
        v1::Endpoint {
            ip: ip.into(),
            ports: vec![v1::Port {
                name: "http".into(),
                port: 8080,
            }],
            pod: format!("web-{ip}"),
            namespace: "shop".into(),
            service_account: "web".into(),
        }
    }

    fn add(ips: &[&str]) -> v1::endpoint_update::Update {
        v1::endpoint_update::Update::Add(v1::Endpoints {
            endpoints: ips.iter().map(|ip| ep(ip)).collect(),
        })
    }

    #[test]
    fn endpoint_updates_add_remove_and_resync() {
        let mut state = State::new(PolicyConfig::default());
        let id: ServiceId = ("shop".into(), "web".into());
        let ips = |state: &State| -> Vec<IpAddr> {
            let snap = state.snapshot();
            let mut v: Vec<_> = (snap.endpoints().iter())
                .flat_map(|s| s.addresses.iter().map(|a| a.ip))
                .collect();
            v.sort();
            v
        };
        let c = state.endpoints(&id, add(&["10.1.0.1", "10.1.0.2"]), true);
        assert!(c.endpoints.contains(&id));
        assert_eq!(ips(&state).len(), 2);
        let remove = v1::endpoint_update::Update::Remove(v1::Endpoints {
            endpoints: vec![ep("10.1.0.1")],
        });
        state.endpoints(&id, remove, false);
        assert_eq!(ips(&state), vec!["10.1.0.2".parse::<IpAddr>().unwrap()]);
        // A reopened stream's first message is the whole set.
        state.endpoints(&id, add(&["10.1.0.3"]), true);
        assert_eq!(ips(&state), vec!["10.1.0.3".parse::<IpAddr>().unwrap()]);
        let none = v1::endpoint_update::Update::NoEndpoints(v1::NoEndpoints { exists: true });
        state.endpoints(&id, none, false);
        assert!(ips(&state).is_empty());
    }
}

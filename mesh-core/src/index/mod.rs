//! Policy as an index of objects, each accepted or refused on its own.
//!
//! A live source (a Kubernetes watch, a controller) applies and deletes one object at a time.
//! Each object is read and checked alone: a refused object keeps its errors (for a status) and
//! leaves the last accepted version of that object in force; nothing else changes. Each
//! apply or delete says which Services, inbound namespaces and endpoint sets it changed, so a
//! caller pushes only those.
//!
//! ```
//! use mesh_core::{ObjectRef, PolicyIndex, PolicyConfig};
//!
//! let mut index = PolicyIndex::new(PolicyConfig::default());
//! let service: serde_json::Value = serde_json::json!({
//!     "apiVersion": "v1", "kind": "Service",
//!     "metadata": { "name": "web", "namespace": "shop" },
//!     "spec": { "clusterIP": "10.96.0.10", "ports": [{ "port": 80 }] },
//! });
//! let changes = index.apply(&service)?;
//! assert!(changes.services.contains(&("shop".to_owned(), "web".to_owned())));
//!
//! // A route with a bad regex is refused alone; the Service keeps serving.
//! let bad = serde_json::json!({
//!     "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
//!     "metadata": { "name": "api", "namespace": "shop" },
//!     "spec": {
//!         "parentRefs": [{ "name": "web", "kind": "Service", "group": "core" }],
//!         "rules": [{ "matches": [{ "path": { "type": "RegularExpression", "value": "/api/([" } }] }],
//!     },
//! });
//! assert!(index.apply(&bad).is_err());
//! assert_eq!(index.refused().count(), 1);
//! assert!(index.snapshot().service("web", "shop").is_some());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use crate::authz::Server;
use crate::canary::Canary;
use crate::compile::{self, Cx, Doc, Entry, Key, Members, Object, Reader};
use crate::destination::AddressIndex;
use crate::error::{LoadError, Note};
use crate::manifest::{Origin, RawObject};
use crate::policy::{
    EndpointSet, MeshPolicy, NamespaceInfo, PolicyConfig, ServicePolicy, Workload,
};

mod objects;
mod shard;

pub(crate) use shard::Sharded;

/// Which object: API group (`""` for core), kind, namespace (`""` when cluster-scoped), name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectRef {
    /// The API group, `""` for the core group.
    pub group: String,
    /// The kind (`HTTPRoute`).
    pub kind: String,
    /// The namespace, `""` for a cluster-scoped object (a `Namespace`).
    pub namespace: String,
    /// The name.
    pub name: String,
}

/// What an apply or delete changed, so that a caller can push only that.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Services, as (namespace, name), whose outbound policy changed.
    pub services: BTreeSet<(String, String)>,
    /// Namespaces whose inbound policy changed.
    pub inbound_namespaces: BTreeSet<String>,
    /// Services, as (namespace, name), whose endpoint set changed.
    pub endpoints: BTreeSet<(String, String)>,
    /// Pods or workload templates changed.
    pub workloads: bool,
}

/// What became of an object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ObjectStatus {
    /// Its latest version is in force.
    Accepted {
        /// Notes about it (a field read leniently, a skipped part).
        notes: Vec<Note>,
    },
    /// Its latest version was refused.
    Refused {
        /// Why.
        errors: Vec<LoadError>,
        /// An older accepted version is what serves.
        previous_serves: bool,
    },
}

/// Why [`PolicyIndex::apply`] did not take an object.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// Not an object the index can name: not a mapping, no kind or name, a kind the mesh
    /// does not read, a version it does not serve.
    #[error("{0}")]
    Unidentified(LoadError),
    /// The object was read and refused; the last accepted version of it stays in force.
    #[error("{} {}/{} refused: {}", object.kind, object.namespace, object.name, first_message(errors))]
    Refused {
        /// The object.
        object: ObjectRef,
        /// Every error found in it.
        errors: Vec<LoadError>,
    },
}

/// Every accepted object, linked into a policy; refused objects with their errors.
///
/// Linking is by unit — one Service's outbound policy, one namespace's inbound policy, one
/// Service's endpoints, the workloads — and an apply or delete relinks only the units the
/// object is filed under (old and new version) and those that looked it up by name.
#[derive(Debug)]
pub struct PolicyIndex {
    config: PolicyConfig,
    next_seq: u64,
    objects: BTreeMap<ObjectRef, Slot>,
    /// Which object each accepted sequence number is: what the keys' members are, by name.
    refs: HashMap<u64, ObjectRef>,
    /// Accepted objects by the keys they are filed under.
    members: Members,
    /// Key → the units whose last linking read it.
    readers: HashMap<Key, BTreeSet<Key>>,
    /// Unit → the keys its last linking read.
    unit_reads: HashMap<Key, Vec<Key>>,
    counts: BTreeMap<String, usize>,
    linked: Linked,
}

/// The linked units, shared with snapshots.
#[derive(Debug, Default)]
struct Linked {
    services: Sharded<String, Arc<ServicePolicy>>,
    inbound: BTreeMap<String, Vec<(u64, Server)>>,
    /// Every namespace's Servers, in apply order; rebuilt when inbound policy changes.
    servers: Arc<Vec<Server>>,
    namespaces: Arc<BTreeMap<String, NamespaceInfo>>,
    /// Endpoint sets per Service, with the apply order of their slice.
    endpoints: HashMap<(String, String), Vec<Ordered<Arc<EndpointSet>>>>,
    /// Every endpoint set by the apply order of its slice.
    endpoint_sets: BTreeMap<u64, Arc<EndpointSet>>,
    workloads: Arc<Vec<Arc<Workload>>>,
    addresses: AddressIndex,
}

/// A value with the apply order of the object it came from.
type Ordered<T> = (u64, T);

#[derive(Debug)]
struct Slot {
    accepted: Option<Arc<Entry>>,
    status: ObjectStatus,
}

fn first_message(errors: &[LoadError]) -> String {
    match errors {
        [] => String::new(),
        [e] => e.to_string(),
        [e, rest @ ..] => format!("{e} (and {} more)", rest.len()),
    }
}

// === impl Changes ===

impl Changes {
    /// Nothing changed.
    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
            && self.inbound_namespaces.is_empty()
            && self.endpoints.is_empty()
            && !self.workloads
    }

    /// Adds what `other` changed.
    pub fn extend(&mut self, other: Self) {
        self.services.extend(other.services);
        self.inbound_namespaces.extend(other.inbound_namespaces);
        self.endpoints.extend(other.endpoints);
        self.workloads |= other.workloads;
    }

    /// Outbound or inbound policy changed (not only endpoints or workloads).
    pub fn policy_changed(&self) -> bool {
        !self.services.is_empty() || !self.inbound_namespaces.is_empty()
    }
}

// === impl PolicyIndex ===

impl PolicyIndex {
    /// An empty index.
    pub fn new(config: PolicyConfig) -> Self {
        Self {
            config,
            next_seq: 0,
            objects: BTreeMap::new(),
            refs: HashMap::new(),
            members: Members::new(),
            readers: HashMap::new(),
            unit_reads: HashMap::new(),
            counts: BTreeMap::new(),
            linked: Linked::default(),
        }
    }

    /// Reads, checks and applies one Kubernetes object (anything `Serialize`: a
    /// `serde_json::Value`, a kube `DynamicObject`, a k8s-openapi type).
    ///
    /// Accepted, it replaces the previous version of the same object and only what depends
    /// on it is relinked. Refused, its errors are kept (see [`PolicyIndex::status`]), the last
    /// accepted version of that object stays in force, and nothing else changes.
    pub fn apply<T: serde::Serialize + ?Sized>(
        &mut self,
        object: &T,
    ) -> Result<Changes, ApplyError> {
        let origin = Origin {
            document: 1,
            line: 1,
            item: None,
        };
        let unidentified = |message: String, resource: Option<String>| {
            ApplyError::Unidentified(LoadError {
                origin: origin.clone(),
                line: None,
                resource,
                field: None,
                message,
            })
        };
        let value = serde_norway::to_value(object)
            .map_err(|e| unidentified(format!("not a Kubernetes object: {e}"), None))?;
        let raw = RawObject {
            origin: origin.clone(),
            value,
            text: None,
        };
        let mut cx = Cx::default();
        let Some(doc) = cx.identify(raw, &mut 0) else {
            if let Some(e) = cx.errors.into_iter().next() {
                return Err(ApplyError::Unidentified(e));
            }
            // Identification stops with a note only for what the mesh does not read.
            let note = cx.notes.pop();
            let resource = note.as_ref().and_then(|n| n.resource.clone());
            let message =
                note.map_or_else(|| "not a kind the mesh reads".to_owned(), |n| n.message);
            return Err(unidentified(message, resource));
        };
        self.apply_doc(doc, cx.notes)
            .map_err(|(object, errors)| ApplyError::Refused { object, errors })
    }

    /// Checks and applies one identified object; `notes` are those its identification raised.
    pub(crate) fn apply_doc(
        &mut self,
        doc: Doc,
        mut notes: Vec<Note>,
    ) -> Result<Changes, (ObjectRef, Vec<LoadError>)> {
        let object_ref = doc.object_ref();
        let (cx, parsed) = compile::parse(&doc, &self.config);
        let Some(object) = parsed else {
            let slot = self.objects.entry(object_ref.clone()).or_insert(Slot {
                accepted: None,
                status: ObjectStatus::Accepted { notes: Vec::new() },
            });
            slot.status = ObjectStatus::Refused {
                errors: cx.errors.clone(),
                previous_serves: slot.accepted.is_some(),
            };
            return Err((object_ref, cx.errors));
        };
        notes.extend(cx.notes);
        let old = self
            .objects
            .get(&object_ref)
            .and_then(|s| s.accepted.clone());
        let seq = match &old {
            Some(old) => old.seq,
            None => {
                self.next_seq += 1;
                *self.counts.entry(object_ref.kind.clone()).or_default() += 1;
                self.refs.insert(self.next_seq, object_ref.clone());
                self.next_seq
            }
        };
        let entry = Arc::new(Entry::new(seq, &doc, object));
        let mut keys = BTreeSet::new();
        if let Some(old) = &old {
            for key in old.keys() {
                self.unfile(&key, seq);
                keys.insert(key);
            }
        }
        for key in entry.keys() {
            self.members
                .entry(key.clone())
                .or_default()
                .insert(seq, Arc::clone(&entry));
            keys.insert(key);
        }
        let slot = Slot {
            accepted: Some(entry),
            status: ObjectStatus::Accepted { notes },
        };
        self.objects.insert(object_ref, slot);
        Ok(self.relink(keys))
    }

    /// Forgets an object, accepted or refused. An unknown object is a no-op (empty changes).
    pub fn delete(&mut self, object: &ObjectRef) -> Changes {
        let Some(slot) = self.objects.remove(object) else {
            return Changes::default();
        };
        let Some(old) = slot.accepted else {
            return Changes::default();
        };
        self.refs.remove(&old.seq);
        if let Some(n) = self.counts.get_mut(&object.kind) {
            *n -= 1;
            if *n == 0 {
                self.counts.remove(&object.kind);
            }
        }
        let keys: BTreeSet<Key> = old.keys().into_iter().collect();
        for key in &keys {
            self.unfile(key, old.seq);
        }
        self.relink(keys)
    }

    /// What became of an object: accepted, or refused with its errors.
    pub fn status(&self, object: &ObjectRef) -> Option<&ObjectStatus> {
        self.objects.get(object).map(|s| &s.status)
    }

    /// Every refused object with its errors.
    pub fn refused(&self) -> impl Iterator<Item = (&ObjectRef, &[LoadError])> {
        self.objects.iter().filter_map(|(o, s)| match &s.status {
            ObjectStatus::Refused { errors, .. } => Some((o, errors.as_slice())),
            ObjectStatus::Accepted { .. } => None,
        })
    }

    /// An immutable [`MeshPolicy`] of everything accepted; every query of a compiled policy
    /// works on it. It shares the index's linked pieces: O(shards + endpoint sets) pointer
    /// copies, no recompilation. Its `notes()` are empty: ask [`PolicyIndex::notes`] (and
    /// [`PolicyIndex::status`] per object), which a controller reports as status.
    pub fn snapshot(&self) -> MeshPolicy {
        let l = &self.linked;
        MeshPolicy {
            services: l.services.clone(),
            servers: Arc::clone(&l.servers),
            workloads: Arc::clone(&l.workloads),
            endpoints: l.endpoint_sets.values().cloned().collect(),
            addresses: l.addresses.clone(),
            namespaces: Arc::clone(&l.namespaces),
            config: self.config.clone(),
            canaries: self.canaries(),
            notes: Vec::new(),
            counts: self.counts.clone(),
            skipped: 0,
        }
    }

    /// Every accepted Canary, in apply order.
    pub fn canaries(&self) -> Vec<Arc<Canary>> {
        (self.members.get(&Key::Canaries).into_iter())
            .flat_map(|m| m.values())
            .filter_map(|e| match &e.object {
                Object::Canary(c) => Some(Arc::clone(c)),
                _ => None,
            })
            .collect()
    }

    /// Notes that need the whole picture: inert routes, references to objects not in the
    /// index, profiles and splits that replace others. Computed on each call.
    pub fn notes(&self) -> Vec<Note> {
        let mut entries: Vec<&Entry> = (self.objects.values())
            .filter_map(|s| s.accepted.as_deref())
            .collect();
        entries.sort_by_key(|e| e.seq);
        compile::notes(&entries)
    }

    /// A Service's outbound policy.
    pub fn service(&self, name: &str, namespace: &str) -> Option<Arc<ServicePolicy>> {
        self.linked
            .services
            .get(&service_key(name, namespace))
            .cloned()
    }

    /// The endpoint sets (one per EndpointSlice, in apply order) of a Service.
    pub fn service_endpoints(&self, name: &str, namespace: &str) -> Vec<Arc<EndpointSet>> {
        let key = (namespace.to_owned(), name.to_owned());
        (self.linked.endpoints.get(&key).into_iter().flatten())
            .map(|(_, set)| Arc::clone(set))
            .collect()
    }

    /// Makes `sets` the endpoints of a Service, given directly (as a controller's Destination
    /// stream sends them) rather than read from EndpointSlice objects; the address index
    /// follows, so a snapshot finds the Service behind each address. Empty `sets` forgets
    /// them. Each set counts as applied now, after every object applied so far.
    ///
    /// ```
    /// use mesh_core::{PolicyConfig, PolicyIndex};
    /// use mesh_core::policy::EndpointSet;
    ///
    /// let mut index = PolicyIndex::new(PolicyConfig::default());
    /// let set = EndpointSet {
    ///     service: "web".into(), namespace: "shop".into(),
    ///     ports: vec![(None, 8080)], addresses: vec![],
    /// };
    /// let changes = index.set_endpoints("shop", "web", vec![set]);
    /// assert!(changes.endpoints.contains(&("shop".to_owned(), "web".to_owned())));
    /// assert_eq!(index.service_endpoints("web", "shop").len(), 1);
    /// ```
    pub fn set_endpoints(
        &mut self,
        namespace: &str,
        name: &str,
        sets: Vec<EndpointSet>,
    ) -> Changes {
        let sets = sets
            .into_iter()
            .map(|set| {
                self.next_seq += 1;
                (self.next_seq, set)
            })
            .collect();
        self.link_endpoint_sets(namespace, name, sets);
        let mut changes = Changes::default();
        changes
            .endpoints
            .insert((namespace.to_owned(), name.to_owned()));
        changes
    }

    /// Takes an object version out from under `key`.
    fn unfile(&mut self, key: &Key, seq: u64) {
        if let Some(m) = self.members.get_mut(key) {
            m.remove(&seq);
            if m.is_empty() {
                self.members.remove(key);
            }
        }
    }

    /// Relinks the units filed under `keys` and those that read them.
    fn relink(&mut self, keys: BTreeSet<Key>) -> Changes {
        let mut units = BTreeSet::new();
        for key in keys {
            if let Some(readers) = self.readers.get(&key) {
                units.extend(readers.iter().cloned());
            }
            if key.is_unit() {
                units.insert(key);
            }
        }
        let mut changes = Changes::default();
        for unit in units {
            self.relink_unit(unit, &mut changes);
        }
        if !changes.inbound_namespaces.is_empty() {
            self.flatten_servers();
        }
        changes
    }

    fn relink_unit(&mut self, unit: Key, changes: &mut Changes) {
        let mut r = Reader::new(&self.members);
        match &unit {
            Key::Service(ns, name) => {
                let svc = compile::link_service(&mut r, ns, name);
                let reads = std::mem::take(&mut r.reads);
                self.record(&unit, reads);
                self.set_service(ns, name, svc);
                changes.services.insert((ns.clone(), name.clone()));
            }
            Key::Inbound(ns) => {
                let inbound = compile::link_inbound(&mut r, ns);
                let reads = std::mem::take(&mut r.reads);
                self.record(&unit, reads);
                self.set_inbound(ns, inbound);
                changes.inbound_namespaces.insert(ns.clone());
            }
            Key::Endpoints(ns, name) => {
                let sets = compile::link_endpoints(&mut r, ns, name);
                let reads = std::mem::take(&mut r.reads);
                self.record(&unit, reads);
                self.link_endpoint_sets(ns, name, sets);
                changes.endpoints.insert((ns.clone(), name.clone()));
            }
            Key::Workloads => {
                let workloads: Vec<Arc<Workload>> = r
                    .members(Key::Workloads)
                    .filter_map(|e| match &e.object {
                        Object::Workload(w) => Some(Arc::clone(w)),
                        _ => None,
                    })
                    .collect();
                self.linked.workloads = Arc::new(workloads);
                changes.workloads = true;
            }
            Key::Named(..) | Key::RoutePolicies(..) | Key::Canaries => {}
        }
    }

    /// Notes which keys a unit read, so that a change under them relinks it.
    fn record(&mut self, unit: &Key, reads: Vec<Key>) {
        for key in self.unit_reads.remove(unit).into_iter().flatten() {
            if let Some(r) = self.readers.get_mut(&key) {
                r.remove(unit);
                if r.is_empty() {
                    self.readers.remove(&key);
                }
            }
        }
        let reads: Vec<Key> = reads.into_iter().filter(|k| k != unit).collect();
        for key in &reads {
            self.readers
                .entry(key.clone())
                .or_default()
                .insert(unit.clone());
        }
        if !reads.is_empty() {
            self.unit_reads.insert(unit.clone(), reads);
        }
    }

    fn set_service(&mut self, ns: &str, name: &str, svc: Option<ServicePolicy>) {
        let key = service_key(name, ns);
        let l = &mut self.linked;
        let new_ips = svc
            .as_ref()
            .map(|s| s.cluster_ips.clone())
            .unwrap_or_default();
        let old = match svc {
            Some(svc) => l.services.insert(key.clone(), Arc::new(svc)),
            None => l.services.remove(&key),
        };
        let old_ips = old.as_ref().map_or(&[][..], |o| o.cluster_ips.as_slice());
        l.addresses.set_service(&key, old_ips, &new_ips);
    }

    fn set_inbound(&mut self, ns: &str, inbound: compile::Inbound) {
        let l = &mut self.linked;
        if inbound.servers.is_empty() {
            l.inbound.remove(ns);
        } else {
            l.inbound.insert(ns.to_owned(), inbound.servers);
        }
        let namespaces = Arc::make_mut(&mut l.namespaces);
        match inbound.namespace {
            Some(info) => namespaces.insert(ns.to_owned(), info),
            None => namespaces.remove(ns),
        };
    }

    /// Every namespace's Servers in one list, by precedence: the first that selects a pod's
    /// port is the one that applies (the oldest, then by name, as in Linkerd).
    fn flatten_servers(&mut self) {
        let mut all: Vec<&(u64, Server)> = self.linked.inbound.values().flatten().collect();
        all.sort_by(|(_, a), (_, b)| a.precedence().cmp(&b.precedence()));
        let servers = all.into_iter().map(|(_, s)| s.clone()).collect();
        self.linked.servers = Arc::new(servers);
    }

    fn link_endpoint_sets(&mut self, ns: &str, name: &str, sets: Vec<(u64, EndpointSet)>) {
        let l = &mut self.linked;
        let key = (ns.to_owned(), name.to_owned());
        for (seq, old) in l.endpoints.remove(&key).into_iter().flatten() {
            l.addresses.remove_set(seq, &old);
            l.endpoint_sets.remove(&seq);
        }
        if sets.is_empty() {
            return;
        }
        let mut linked = Vec::with_capacity(sets.len());
        for (seq, set) in sets {
            l.addresses.add_set(seq, &set);
            let set = Arc::new(set);
            l.endpoint_sets.insert(seq, Arc::clone(&set));
            linked.push((seq, set));
        }
        l.endpoints.insert(key, linked);
    }
}

/// How a snapshot keys its Services: `name.namespace`.
fn service_key(name: &str, namespace: &str) -> String {
    format!("{name}.{namespace}")
}

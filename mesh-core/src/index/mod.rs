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

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::compile::{self, Cx, Doc, Touch};
use crate::error::{LoadError, Note};
use crate::manifest::{Origin, RawObject};
use crate::policy::{EndpointSet, MeshPolicy, PolicyConfig, ServicePolicy};

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
#[derive(Debug)]
pub struct PolicyIndex {
    config: PolicyConfig,
    next_seq: u64,
    objects: BTreeMap<ObjectRef, Slot>,
    linked: MeshPolicy,
    link_notes: Vec<Note>,
}

#[derive(Debug)]
struct Slot {
    accepted: Option<Accepted>,
    status: ObjectStatus,
}

/// The version of an object in force.
#[derive(Debug)]
struct Accepted {
    /// Order of first acceptance: later wins where two objects claim one thing.
    seq: u64,
    doc: Doc,
    touch: Touch,
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

    fn touch(&mut self, t: &Touch) {
        self.services.extend(t.services.iter().cloned());
        self.inbound_namespaces.extend(t.inbound.iter().cloned());
        self.endpoints.extend(t.endpoints.iter().cloned());
        self.workloads |= t.workloads;
    }
}

// === impl PolicyIndex ===

impl PolicyIndex {
    /// An empty index.
    pub fn new(config: PolicyConfig) -> Self {
        let linked = compile::link(std::iter::empty(), &config);
        Self {
            config,
            next_seq: 0,
            objects: BTreeMap::new(),
            linked: linked.policy,
            link_notes: linked.notes,
        }
    }

    /// Reads, checks and applies one Kubernetes object (anything `Serialize`: a
    /// `serde_json::Value`, a kube `DynamicObject`, a k8s-openapi type).
    ///
    /// Accepted, it replaces the previous version of the same object. Refused, its errors are
    /// kept (see [`PolicyIndex::status`]), the last accepted version of that object stays in
    /// force, and nothing else changes.
    pub fn apply<T: serde::Serialize + ?Sized>(
        &mut self,
        object: &T,
    ) -> Result<Changes, ApplyError> {
        let origin = Origin {
            document: 1,
            line: 1,
            item: None,
        };
        let value = serde_norway::to_value(object).map_err(|e| {
            ApplyError::Unidentified(LoadError {
                origin: origin.clone(),
                line: None,
                resource: None,
                field: None,
                message: format!("not a Kubernetes object: {e}"),
            })
        })?;
        let raw = RawObject {
            origin: origin.clone(),
            value,
            text: None,
        };
        let mut cx = Cx::default();
        let mut counts = BTreeMap::new();
        let Some(doc) = cx.identify(raw, &mut counts) else {
            let error = cx.errors.into_iter().next().unwrap_or_else(|| {
                // Identification stops with a note only for what the mesh does not read.
                let note = cx.notes.pop();
                LoadError {
                    origin,
                    line: None,
                    resource: note.as_ref().and_then(|n| n.resource.clone()),
                    field: None,
                    message: note
                        .map_or_else(|| "not a kind the mesh reads".to_owned(), |n| n.message),
                }
            });
            return Err(ApplyError::Unidentified(error));
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
        let object = doc.object_ref();
        let (cx, touch) = compile::check(&doc, &self.config);
        if !cx.errors.is_empty() {
            let slot = self.objects.entry(object.clone()).or_insert(Slot {
                accepted: None,
                status: ObjectStatus::Accepted { notes: Vec::new() },
            });
            slot.status = ObjectStatus::Refused {
                errors: cx.errors.clone(),
                previous_serves: slot.accepted.is_some(),
            };
            return Err((object, cx.errors));
        }
        notes.extend(cx.notes);
        let mut changes = Changes::default();
        changes.touch(&touch);
        self.touch_dependents(&doc, &touch, &mut changes);
        let seq = match self.objects.get(&object).and_then(|s| s.accepted.as_ref()) {
            Some(old) => {
                changes.touch(&old.touch);
                old.seq
            }
            None => {
                self.next_seq += 1;
                self.next_seq
            }
        };
        let slot = Slot {
            accepted: Some(Accepted { seq, doc, touch }),
            status: ObjectStatus::Accepted { notes },
        };
        self.objects.insert(object, slot);
        self.relink();
        Ok(changes)
    }

    /// Forgets an object, accepted or refused. An unknown object is a no-op.
    pub fn delete(&mut self, object: &ObjectRef) -> Changes {
        let mut changes = Changes::default();
        let Some(slot) = self.objects.remove(object) else {
            return changes;
        };
        if let Some(old) = slot.accepted {
            changes.touch(&old.touch);
            self.touch_dependents(&old.doc, &old.touch, &mut changes);
            self.relink();
        }
        changes
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
    /// works on it.
    pub fn snapshot(&self) -> MeshPolicy {
        let mut policy = self.linked.clone();
        let mut notes: Vec<(u64, &Note)> = Vec::new();
        for slot in self.objects.values() {
            if let (Some(a), ObjectStatus::Accepted { notes: n }) = (&slot.accepted, &slot.status) {
                notes.extend(n.iter().map(|n| (a.seq, n)));
            }
        }
        notes.sort_by_key(|(seq, _)| *seq);
        policy.notes = notes.into_iter().map(|(_, n)| n.clone()).collect();
        policy.notes.extend(self.link_notes.iter().cloned());
        policy
    }

    /// Notes that need the whole picture: inert routes, references to objects not in the
    /// index, objects that replace others.
    pub fn notes(&self) -> &[Note] {
        &self.link_notes
    }

    /// A Service's outbound policy.
    pub fn service(&self, name: &str, namespace: &str) -> Option<Arc<ServicePolicy>> {
        self.linked.service_arc(name, namespace)
    }

    /// The endpoint sets (one per EndpointSlice) of a Service.
    pub fn service_endpoints(&self, name: &str, namespace: &str) -> Vec<Arc<EndpointSet>> {
        self.linked
            .endpoints()
            .iter()
            .filter(|e| e.service == name && e.namespace == namespace)
            .map(|e| Arc::new(e.clone()))
            .collect()
    }

    /// Adds what the objects that read `doc` by name bear on.
    fn touch_dependents(&self, doc: &Doc, touch: &Touch, changes: &mut Changes) {
        let key = (
            doc.kind_name().to_owned(),
            doc.namespace().to_owned(),
            doc.name().to_owned(),
        );
        let routes: BTreeSet<(String, String)> = touch.routes.iter().cloned().collect();
        for slot in self.objects.values() {
            let Some(a) = &slot.accepted else { continue };
            if a.touch.reads.contains(&key) {
                changes.touch(&a.touch);
            }
            // A policy that targets a route bears on the namespaces of that route's Servers.
            let route = (a.doc.namespace().to_owned(), a.doc.name().to_owned());
            if matches!(a.doc.kind_name(), "HTTPRoute" | "GRPCRoute") && routes.contains(&route) {
                changes
                    .inbound_namespaces
                    .extend(a.touch.inbound.iter().cloned());
            }
        }
    }

    fn relink(&mut self) {
        let mut accepted: Vec<&Accepted> = self
            .objects
            .values()
            .filter_map(|s| s.accepted.as_ref())
            .collect();
        accepted.sort_by_key(|a| a.seq);
        let linked = compile::link(accepted.into_iter().map(|a| &a.doc), &self.config);
        self.linked = linked.policy;
        self.link_notes = linked.notes;
    }
}

//! The thread that owns a [`PolicyIndex`]: watcher events arrive over a channel, and each
//! object is applied to (or deleted from) the index on its own. Applying never runs on a
//! runtime thread: with `--workers 1` that thread serves every connection.
//!
//! Each object is accepted or refused alone, so one bad object (an HTTPRoute with a regex that
//! does not compile) freezes nothing but itself: the last accepted version of it keeps serving,
//! and every other object keeps applying. A refusal is logged once per resourceVersion with its
//! reasons, counted in `policy_object_refused_total{kind}`, and the objects refused right now
//! are the gauge `policy_objects_refused{kind}`. What is done with the index after a burst
//! of events (serve a snapshot, push to clients) is the caller's `publish`.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use kube::api::DynamicObject;
use mesh_core::{ApplyError, Changes, LoadError, ObjectRef, PolicyIndex};
use mesh_tower::metrics::Registry;
use serde_json::Value;

use super::{Kind, Op, Scope, document, kind_label, object_name};

/// Told what became of each object, in the index thread (for a controller's status, and
/// the documents it sends to clients). `()` ignores everything.
pub(crate) trait Observer {
    /// A new version of an object was accepted. `status` is the object's status as the API
    /// server holds it (the document has none).
    fn accepted(&mut self, _r: &ObjectRef, _doc: &Value, _status: Option<&Value>) {}
    /// A version of an object was refused; told once per resourceVersion.
    fn refused(&mut self, _r: &ObjectRef, _doc: &Value, _refusal: Refusal<'_>) {}
    /// An object is gone.
    fn deleted(&mut self, _r: &ObjectRef) {}
}

impl Observer for () {}

/// What the index thread does with its input and, after each burst, with the index.
pub(crate) trait Driver<O, M> {
    fn handle(&mut self, a: &mut Applier<O>, m: M);
    fn publish(&mut self, a: &mut Applier<O>);
}

/// Why and which version of an object was refused, with its status as the API server holds it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Refusal<'a> {
    pub(crate) version: &'a str,
    pub(crate) status: Option<&'a Value>,
    pub(crate) errors: &'a [LoadError],
}

/// The index and what is needed to feed it.
pub(crate) struct Applier<O> {
    pub(crate) index: PolicyIndex,
    pub(crate) observer: O,
    registry: Registry,
    watches: BTreeMap<String, WatchObjects>,
    /// A hash of the document last applied per object: a relist, or an update of `status`
    /// alone, brings the same document again, and it is not applied twice.
    seen: HashMap<ObjectRef, u64>,
    /// The resourceVersion whose refusal was logged, per refused object.
    logged: HashMap<ObjectRef, String>,
    /// Kinds whose refused-objects gauge is not zero.
    refused_kinds: BTreeSet<String>,
    /// What changed since the caller last took it.
    pending: Changes,
}

/// One watcher's objects, as the index thread knows them.
#[derive(Debug)]
struct WatchObjects {
    kind: &'static Kind,
    objects: BTreeSet<ObjectRef>,
    /// A list in progress: its objects, applied when it completes.
    listing: Option<Vec<Read>>,
    synced: bool,
}

/// An object as the index reads it.
#[derive(Debug)]
struct Read {
    r: ObjectRef,
    doc: Value,
    version: String,
    status: Option<Value>,
}

// === impl Applier ===

impl<O: Observer> Applier<O> {
    pub(crate) fn new(
        index: PolicyIndex,
        observer: O,
        registry: Registry,
        scopes: &[Scope],
    ) -> Self {
        registry.describe(
            "policy_object_refused_total",
            "Kubernetes objects refused by the policy index, counted once per resourceVersion.",
        );
        registry.describe(
            "policy_objects_refused",
            "Kubernetes objects the policy index refuses now; their last accepted version serves.",
        );
        let watches = scopes.iter().map(|s| {
            let w = WatchObjects {
                kind: s.kind,
                objects: BTreeSet::new(),
                listing: None,
                synced: false,
            };
            (s.key.clone(), w)
        });
        Self {
            index,
            observer,
            registry,
            watches: watches.collect(),
            seen: HashMap::new(),
            logged: HashMap::new(),
            refused_kinds: BTreeSet::new(),
            pending: Changes::default(),
        }
    }

    /// Handles what arrives on `input` with `driver` until every sender is gone; a burst
    /// (a relist, `kubectl apply -f dir/`) within `debounce` of its first is handled before
    /// the driver publishes once.
    pub(crate) fn run<M>(
        mut self,
        input: &Receiver<M>,
        debounce: Duration,
        driver: &mut impl Driver<O, M>,
    ) {
        while let Ok(m) = input.recv() {
            driver.handle(&mut self, m);
            let deadline = Instant::now() + debounce;
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                match input.recv_timeout(left) {
                    Ok(m) => driver.handle(&mut self, m),
                    Err(RecvTimeoutError::Timeout) => break,
                    Err(RecvTimeoutError::Disconnected) => return,
                }
            }
            self.count_refused();
            driver.publish(&mut self);
        }
    }

    /// Every watch has listed once: the index holds a whole picture.
    pub(crate) fn synced(&self) -> bool {
        self.watches.values().all(|w| w.synced)
    }

    /// What changed since the last call.
    pub(crate) fn take_changes(&mut self) -> Changes {
        std::mem::take(&mut self.pending)
    }

    pub(crate) fn handle(&mut self, op: Op) {
        match op {
            Op::Relist { watch } => {
                if let Some(w) = self.watches.get_mut(&watch) {
                    w.listing = Some(Vec::new());
                }
            }
            Op::Listing { watch, object } => {
                if let Some(w) = self.watches.get_mut(&watch) {
                    let read = read(w.kind, object);
                    w.listing.get_or_insert_with(Vec::new).push(read);
                }
            }
            Op::Listed { watch } => {
                let Some(w) = self.watches.get_mut(&watch) else {
                    return;
                };
                let listed = w.listing.take().unwrap_or_default();
                let now: BTreeSet<ObjectRef> = listed.iter().map(|o| o.r.clone()).collect();
                let gone: Vec<ObjectRef> = w.objects.difference(&now).cloned().collect();
                w.objects = now;
                w.synced = true;
                for r in &gone {
                    self.delete(r);
                }
                for o in listed {
                    self.apply(o);
                }
            }
            Op::Absent { watch } => {
                let Some(w) = self.watches.get_mut(&watch) else {
                    return;
                };
                let gone = std::mem::take(&mut w.objects);
                w.listing = None;
                w.synced = true;
                for r in &gone {
                    self.delete(r);
                }
            }
            Op::Applied { watch, object } => {
                let Some(w) = self.watches.get_mut(&watch) else {
                    return;
                };
                let o = read(w.kind, object);
                w.objects.insert(o.r.clone());
                self.apply(o);
            }
            Op::Deleted { watch, object } => {
                let Some(w) = self.watches.get_mut(&watch) else {
                    return;
                };
                let o = read(w.kind, object);
                w.objects.remove(&o.r);
                self.delete(&o.r);
            }
        }
    }

    /// Applies one object unless the same document was applied last.
    fn apply(&mut self, o: Read) {
        let hash = hash(&o.doc);
        if self.seen.get(&o.r) == Some(&hash) {
            return;
        }
        self.seen.insert(o.r.clone(), hash);
        match self.index.apply(&o.doc) {
            Ok(changes) => {
                if self.logged.remove(&o.r).is_some() {
                    tracing::info!(object = %object_name(&o.r), "accepted again");
                }
                self.observer.accepted(&o.r, &o.doc, o.status.as_ref());
                self.pending.extend(changes);
            }
            Err(ApplyError::Refused { errors, .. }) => self.refused(&o, &errors),
            // Not in `index.refused()` (the index cannot name it), so logged and counted
            // here only: a version the mesh does not serve, a kind it does not read.
            Err(ApplyError::Unidentified(error)) => {
                self.refused(&o, std::slice::from_ref(&error));
            }
        }
    }

    fn delete(&mut self, r: &ObjectRef) {
        self.seen.remove(r);
        self.logged.remove(r);
        self.observer.deleted(r);
        let changes = self.index.delete(r);
        self.pending.extend(changes);
    }

    /// Logs and counts a refusal, once per resourceVersion of the object.
    fn refused(&mut self, o: &Read, errors: &[LoadError]) {
        if self.logged.get(&o.r).is_some_and(|v| *v == o.version) {
            return;
        }
        self.logged.insert(o.r.clone(), o.version.clone());
        for e in errors {
            tracing::warn!(
                object = %object_name(&o.r),
                resource_version = o.version,
                error = %e,
                "object refused; its last accepted version keeps serving, other objects are unaffected"
            );
        }
        let refusal = Refusal {
            version: &o.version,
            status: o.status.as_ref(),
            errors,
        };
        self.observer.refused(&o.r, &o.doc, refusal);
        self.registry
            .counter(
                "policy_object_refused_total",
                vec![metrics::Label::new("kind", label(&o.r))],
            )
            .increment(1);
    }

    /// Sets `policy_objects_refused{kind}` from the index: what is refused right now.
    pub(crate) fn count_refused(&mut self) {
        let mut now: BTreeMap<String, u32> = BTreeMap::new();
        for (r, _) in self.index.refused() {
            *now.entry(label(r)).or_default() += 1;
        }
        for kind in self.refused_kinds.iter().filter(|k| !now.contains_key(*k)) {
            self.gauge(kind.clone(), 0);
        }
        for (kind, n) in &now {
            self.gauge(kind.clone(), *n);
        }
        self.refused_kinds = now.into_keys().collect();
    }

    fn gauge(&self, kind: String, n: u32) {
        self.registry
            .gauge(
                "policy_objects_refused",
                vec![metrics::Label::new("kind", kind)],
            )
            .set(f64::from(n));
    }
}

/// The object's reference, the document the index reads, its resourceVersion and status.
fn read(kind: &Kind, object: DynamicObject) -> Read {
    let version = object.metadata.resource_version.clone().unwrap_or_default();
    let status = object.data.get("status").cloned();
    let ((namespace, name), doc) = document(kind, object);
    let r = ObjectRef {
        group: kind.group.to_owned(),
        kind: kind.kind.to_owned(),
        namespace,
        name,
    };
    Read {
        r,
        doc,
        version,
        status,
    }
}

fn hash(doc: &Value) -> u64 {
    let mut h = DefaultHasher::new();
    // Serialising a `Value` cannot fail; an empty hash would only cost a redundant apply.
    serde_json::to_vec(doc).unwrap_or_default().hash(&mut h);
    h.finish()
}

fn label(r: &ObjectRef) -> String {
    kind_label(&r.group, &r.kind)
}

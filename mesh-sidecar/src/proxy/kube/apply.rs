//! The thread that owns the proxy's [`PolicyIndex`]: watcher events arrive over a channel, each
//! object is applied to (or deleted from) the index on its own, and after a debounce the
//! index's snapshot is swapped in. Applying never runs on a runtime thread: with `--workers 1`
//! that thread serves every connection.
//!
//! Each object is accepted or refused alone, so one bad object (an HTTPRoute with a regex that
//! does not compile) freezes nothing but itself: the last accepted version of it keeps serving,
//! and every other object keeps applying. A refusal is logged once per resourceVersion with its
//! reasons, counted in `policy_object_refused_total{kind}`, and the objects refused right now
//! are the gauge `policy_objects_refused{kind}`.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use kube::api::DynamicObject;
use mesh_core::{ApplyError, Changes, LoadError, ObjectRef, PolicyIndex};
use mesh_tower::metrics::Registry;
use serde_json::Value;

use super::{Kind, document};
use crate::proxy::config::ConfigSource;

/// What a watcher saw, for the index thread. `watch` names the watcher (kind and scope).
#[derive(Debug)]
pub(super) enum Op {
    /// A list begins: what follows until [`Op::Listed`] is the whole content of the watch.
    Relist { watch: String },
    /// One object of a list in progress.
    Listing {
        watch: String,
        object: DynamicObject,
    },
    /// The list is complete: it replaces what the watch had, and the watch is synced.
    Listed { watch: String },
    /// The API server does not serve the kind: the watch is synced and empty.
    Absent { watch: String },
    Applied {
        watch: String,
        object: DynamicObject,
    },
    Deleted {
        watch: String,
        object: DynamicObject,
    },
}

/// The index and what is needed to feed it and publish it.
pub(super) struct Applier {
    index: PolicyIndex,
    config: Arc<ConfigSource>,
    registry: Registry,
    /// Set once a snapshot has been served; `/ready` waits for it.
    applied: Arc<AtomicBool>,
    watches: BTreeMap<String, WatchObjects>,
    /// A hash of the document last applied per object: a relist, or an update of `status`
    /// alone, brings the same document again, and it is not applied twice.
    seen: HashMap<ObjectRef, u64>,
    /// The resourceVersion whose refusal was logged, per refused object.
    logged: HashMap<ObjectRef, String>,
    /// Kinds whose refused-objects gauge is not zero.
    refused_kinds: BTreeSet<String>,
    /// What changed since the last snapshot was served.
    pending: Changes,
    published: bool,
}

/// One watcher's objects, as the index thread knows them.
#[derive(Debug)]
struct WatchObjects {
    kind: &'static Kind,
    objects: BTreeSet<ObjectRef>,
    /// A list in progress: its documents, applied when it completes.
    listing: Option<Vec<(ObjectRef, Value, String)>>,
    synced: bool,
}

// === impl Applier ===

impl Applier {
    pub(super) fn new(
        config: Arc<ConfigSource>,
        registry: Registry,
        applied: Arc<AtomicBool>,
        watches: impl IntoIterator<Item = (String, &'static Kind)>,
    ) -> Self {
        let index = PolicyIndex::new(config.policy.load().config().clone());
        registry.describe(
            "policy_object_refused_total",
            "Kubernetes objects refused by the policy index, counted once per resourceVersion.",
        );
        registry.describe(
            "policy_objects_refused",
            "Kubernetes objects the policy index refuses now; their last accepted version serves.",
        );
        Self {
            index,
            config,
            registry,
            applied,
            watches: watches
                .into_iter()
                .map(|(key, kind)| {
                    let w = WatchObjects {
                        kind,
                        objects: BTreeSet::new(),
                        listing: None,
                        synced: false,
                    };
                    (key, w)
                })
                .collect(),
            seen: HashMap::new(),
            logged: HashMap::new(),
            refused_kinds: BTreeSet::new(),
            pending: Changes::default(),
            published: false,
        }
    }

    /// Applies what arrives on `ops` until every sender is gone; a burst of events (a relist,
    /// `kubectl apply -f dir/`) within `debounce` of its first becomes one snapshot.
    pub(super) fn run(mut self, ops: &Receiver<Op>, debounce: Duration) {
        while let Ok(op) = ops.recv() {
            self.handle(op);
            let deadline = Instant::now() + debounce;
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                match ops.recv_timeout(left) {
                    Ok(op) => self.handle(op),
                    Err(RecvTimeoutError::Timeout) => break,
                    Err(RecvTimeoutError::Disconnected) => return,
                }
            }
            self.count_refused();
            self.publish();
        }
    }

    fn handle(&mut self, op: Op) {
        match op {
            Op::Relist { watch } => {
                if let Some(w) = self.watches.get_mut(&watch) {
                    w.listing = Some(Vec::new());
                }
            }
            Op::Listing { watch, object } => {
                if let Some(w) = self.watches.get_mut(&watch) {
                    let doc = read(w.kind, object);
                    w.listing.get_or_insert_with(Vec::new).push(doc);
                }
            }
            Op::Listed { watch } => {
                let Some(w) = self.watches.get_mut(&watch) else {
                    return;
                };
                let listed = w.listing.take().unwrap_or_default();
                let now: BTreeSet<ObjectRef> = listed.iter().map(|(r, ..)| r.clone()).collect();
                let gone: Vec<ObjectRef> = w.objects.difference(&now).cloned().collect();
                w.objects = now;
                w.synced = true;
                for r in &gone {
                    self.delete(r);
                }
                for (r, doc, version) in listed {
                    self.apply(r, &doc, &version);
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
                let (r, doc, version) = read(w.kind, object);
                w.objects.insert(r.clone());
                self.apply(r, &doc, &version);
            }
            Op::Deleted { watch, object } => {
                let Some(w) = self.watches.get_mut(&watch) else {
                    return;
                };
                let (r, ..) = read(w.kind, object);
                w.objects.remove(&r);
                self.delete(&r);
            }
        }
    }

    /// Applies one object unless the same document was applied last.
    fn apply(&mut self, r: ObjectRef, doc: &Value, version: &str) {
        let hash = hash(doc);
        if self.seen.get(&r) == Some(&hash) {
            return;
        }
        self.seen.insert(r.clone(), hash);
        match self.index.apply(doc) {
            Ok(changes) => {
                if self.logged.remove(&r).is_some() {
                    tracing::info!(object = %object_name(&r), "accepted again");
                }
                self.pending.extend(changes);
            }
            Err(ApplyError::Refused { errors, .. }) => self.refused(&r, version, &errors),
            // Not in `index.refused()` (the index cannot name it), so logged and counted
            // here only: a version the mesh does not serve, a kind it does not read.
            Err(ApplyError::Unidentified(error)) => {
                self.refused(&r, version, std::slice::from_ref(&error));
            }
        }
    }

    fn delete(&mut self, r: &ObjectRef) {
        self.seen.remove(r);
        self.logged.remove(r);
        let changes = self.index.delete(r);
        self.pending.extend(changes);
    }

    /// Logs and counts a refusal, once per resourceVersion of the object.
    fn refused(&mut self, r: &ObjectRef, version: &str, errors: &[LoadError]) {
        if self.logged.get(r).is_some_and(|v| v == version) {
            return;
        }
        self.logged.insert(r.clone(), version.to_owned());
        for e in errors {
            tracing::warn!(
                object = %object_name(r),
                resource_version = version,
                error = %e,
                "object refused; its last accepted version keeps serving, other objects are unaffected"
            );
        }
        self.registry
            .counter(
                "policy_object_refused_total",
                vec![metrics::Label::new("kind", label(r))],
            )
            .increment(1);
    }

    /// Sets `policy_objects_refused{kind}` from the index: what is refused right now.
    fn count_refused(&mut self) {
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

    /// Serves the index's snapshot once every watch has listed, and then whenever something
    /// changed: only the endpoints of the Services that changed are pushed to the resolver.
    fn publish(&mut self) {
        if !self.watches.values().all(|w| w.synced) {
            return;
        }
        if self.published && self.pending.is_empty() {
            return;
        }
        let changes = std::mem::take(&mut self.pending);
        // An endpoint change swaps the snapshot as well: a transparent proxy finds pods by
        // address in it. Taking it clones Arcs; nothing is recompiled.
        let snapshot = self.index.snapshot();
        let endpoints: BTreeSet<(String, String)> = changes
            .endpoints
            .iter()
            .chain(&changes.services)
            .cloned()
            .collect();
        // A Pod change reaches the endpoints of the slices that name it (the index reports
        // their Services), so only the first snapshot syncs every Service.
        let only = self.published.then_some(&endpoints);
        self.config.serve(snapshot, only, "kubernetes");
        self.published = true;
        self.applied.store(true, Ordering::Release);
    }
}

/// The object's reference, the document the index reads, and its resourceVersion.
fn read(kind: &Kind, object: DynamicObject) -> (ObjectRef, Value, String) {
    let version = object.metadata.resource_version.clone().unwrap_or_default();
    let ((namespace, name), doc) = document(kind, object);
    let r = ObjectRef {
        group: kind.group.to_owned(),
        kind: kind.kind.to_owned(),
        namespace,
        name,
    };
    (r, doc, version)
}

fn hash(doc: &Value) -> u64 {
    let mut h = DefaultHasher::new();
    // Serialising a `Value` cannot fail; an empty hash would only cost a redundant apply.
    serde_json::to_vec(doc).unwrap_or_default().hash(&mut h);
    h.finish()
}

/// The metric label of an object's kind: `HTTPRoute.gateway.networking.k8s.io`, `Service`.
fn label(r: &ObjectRef) -> String {
    if r.group.is_empty() {
        r.kind.clone()
    } else {
        format!("{}.{}", r.kind, r.group)
    }
}

fn object_name(r: &ObjectRef) -> String {
    format!("{}/{}/{}", label(r), r.namespace, r.name)
}

#[cfg(test)]
mod tests {
    use mesh_core::PolicyConfig;
    use mesh_core::split::BackendRef;
    use mesh_tower::discover::Resolve;
    use serde_json::json;

    use super::*;
    use crate::proxy::kube::KINDS;

    const ROUTES: &str = "HTTPRoute.gateway.networking.k8s.io@*";
    const SERVICES: &str = "Service@*";

    fn applier() -> (Applier, Arc<ConfigSource>, Registry) {
        let registry = Registry::new();
        let config = Arc::new(ConfigSource::new(
            None,
            PolicyConfig::default(),
            registry.clone(),
        ));
        let find = |label: &str| {
            KINDS
                .iter()
                .find(|k| k.label() == label)
                .expect("a watched kind")
        };
        let watches = [
            (
                ROUTES.to_owned(),
                find("HTTPRoute.gateway.networking.k8s.io"),
            ),
            (SERVICES.to_owned(), find("Service")),
        ];
        let applier = Applier::new(
            Arc::clone(&config),
            registry.clone(),
            Arc::new(AtomicBool::new(false)),
            watches,
        );
        (applier, config, registry)
    }

    fn object(v: serde_json::Value) -> DynamicObject {
        serde_json::from_value(v).expect("a DynamicObject")
    }

    fn service(ns: &str, name: &str) -> DynamicObject {
        object(json!({
            "metadata": {"name": name, "namespace": ns, "resourceVersion": "1"},
            "spec": {"ports": [{"port": 80}]},
        }))
    }

    /// A route of `ns/name` on Service `web` sending everything to `backend`, at
    /// resourceVersion `rv`, whose path regex is `regex` when given.
    fn route(ns: &str, name: &str, backend: &str, rv: &str, regex: Option<&str>) -> DynamicObject {
        let matches = regex.map_or_else(
            || json!([]),
            |r| json!([{"path": {"type": "RegularExpression", "value": r}}]),
        );
        object(json!({
            "metadata": {"name": name, "namespace": ns, "resourceVersion": rv},
            "spec": {
                "parentRefs": [{"name": "web", "kind": "Service", "group": "core", "port": 80}],
                "rules": [{"matches": matches, "backendRefs": [{"name": backend, "port": 80}]}],
            },
        }))
    }

    fn list(a: &mut Applier, watch: &str, objects: Vec<DynamicObject>) {
        a.handle(Op::Relist {
            watch: watch.to_owned(),
        });
        for object in objects {
            a.handle(Op::Listing {
                watch: watch.to_owned(),
                object,
            });
        }
        a.handle(Op::Listed {
            watch: watch.to_owned(),
        });
        a.count_refused();
        a.publish();
    }

    fn applied(a: &mut Applier, object: DynamicObject) {
        a.handle(Op::Applied {
            watch: ROUTES.to_owned(),
            object,
        });
        a.count_refused();
        a.publish();
    }

    /// The backend a request to `web` in `ns` goes to.
    fn backend(config: &ConfigSource, ns: &str) -> Option<String> {
        let req =
            mesh_core::Request::new("GET", &format!("http://web.{ns}:80/")).expect("a request");
        let policy = config.policy.load();
        let service = policy.service("web", ns)?;
        let decision = service.decide(80, &req);
        decision.pick(0).map(|b| b.name.clone())
    }

    fn refused_total(registry: &Registry) -> u64 {
        registry.counter_sum("policy_object_refused_total", &[])
    }

    #[test]
    fn a_refused_object_freezes_nothing_else() {
        let (mut a, config, registry) = applier();
        list(
            &mut a,
            SERVICES,
            vec![service("x", "web"), service("y", "web")],
        );
        list(
            &mut a,
            ROUTES,
            vec![
                route("x", "r", "x-v1", "1", None),
                route("y", "r", "y-v1", "1", None),
            ],
        );
        assert_eq!(backend(&config, "x").as_deref(), Some("x-v1"));

        // x's route turns bad: refused, its last accepted version serves, counted once.
        applied(&mut a, route("x", "r", "x-v2", "2", Some("/api/([")));
        assert_eq!(refused_total(&registry), 1);
        assert_eq!(a.index.refused().count(), 1);
        assert_eq!(backend(&config, "x").as_deref(), Some("x-v1"));

        // y's route changes afterwards and applies.
        applied(&mut a, route("y", "r", "y-v2", "2", None));
        assert_eq!(backend(&config, "y").as_deref(), Some("y-v2"));

        // A relist brings the same bad version again: not counted again.
        list(
            &mut a,
            ROUTES,
            vec![
                route("x", "r", "x-v2", "2", Some("/api/([")),
                route("y", "r", "y-v2", "2", None),
            ],
        );
        assert_eq!(refused_total(&registry), 1);

        // Fixed, it applies.
        applied(&mut a, route("x", "r", "x-v3", "3", None));
        assert_eq!(backend(&config, "x").as_deref(), Some("x-v3"));
        assert_eq!(a.index.refused().count(), 0);
    }

    #[test]
    fn a_relist_deletes_what_vanished_and_nothing_serves_before_every_kind_listed() {
        let (mut a, config, _) = applier();
        list(&mut a, ROUTES, vec![route("x", "r", "x-v1", "1", None)]);
        // Services not listed yet: nothing served.
        assert!(!a.applied.load(Ordering::Acquire));
        list(&mut a, SERVICES, vec![service("x", "web")]);
        assert_eq!(backend(&config, "x").as_deref(), Some("x-v1"));

        // Deleted while the watch was away: the relist no longer has it, and the Service
        // goes to itself again.
        list(&mut a, ROUTES, vec![]);
        assert_eq!(backend(&config, "x").as_deref(), Some("web"));
    }

    #[test]
    fn endpoint_changes_reach_the_resolver_of_their_service() {
        let (mut a, config, _) = applier();
        let eps = "EndpointSlice.discovery.k8s.io@*";
        let kind = KINDS
            .iter()
            .find(|k| k.label() == "EndpointSlice.discovery.k8s.io")
            .expect("EndpointSlices are watched");
        a.watches.insert(
            eps.to_owned(),
            WatchObjects {
                kind,
                objects: BTreeSet::new(),
                listing: None,
                synced: false,
            },
        );
        let slice = |ip: &str, rv: &str| {
            object(json!({
                "metadata": {
                    "name": "web-abc", "namespace": "x", "resourceVersion": rv,
                    "labels": {"kubernetes.io/service-name": "web"},
                },
                "addressType": "IPv4",
                "ports": [{"port": 8080}],
                "endpoints": [{"addresses": [ip]}],
            }))
        };
        list(&mut a, ROUTES, vec![]);
        list(&mut a, SERVICES, vec![service("x", "web")]);
        list(&mut a, eps, vec![slice("10.0.0.1", "1")]);
        let web = BackendRef {
            name: "web".into(),
            namespace: "x".into(),
            port: Some(80),
        };
        let mut rx = config.resolver.resolve(&web).expect("web resolves");
        let addrs = |rx: &mut mesh_tower::discover::Endpoints| -> Vec<String> {
            let eps = rx.borrow_and_update().clone();
            eps.iter().map(|e| e.addr.to_string()).collect()
        };
        assert_eq!(addrs(&mut rx), ["10.0.0.1:8080"]);

        a.handle(Op::Applied {
            watch: eps.to_owned(),
            object: slice("10.0.0.2", "2"),
        });
        a.publish();
        assert!(matches!(rx.has_changed(), Ok(true)));
        assert_eq!(addrs(&mut rx), ["10.0.0.2:8080"]);

        a.handle(Op::Deleted {
            watch: eps.to_owned(),
            object: slice("10.0.0.2", "2"),
        });
        a.publish();
        assert!(addrs(&mut rx).is_empty());
    }
}

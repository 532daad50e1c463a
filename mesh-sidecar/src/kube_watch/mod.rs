//! Watching the Kubernetes API server for what the mesh reads, into a [`PolicyIndex`]: shared
//! by `mesh controller` (the cluster-wide source of policy) and `mesh proxy --kube` (a
//! development option in which one proxy reads the cluster itself).
//!
//! One kube-runtime [`watcher`] per kind (and per namespace when some are named) keeps that
//! kind's objects. The watcher lists, then watches from the list's resourceVersion, resumes
//! from the last version it saw after a dropped connection, and lists again when the API
//! server answers 410 Gone (the version was compacted away); a relist replaces the kind's
//! objects as a whole, so deletions missed while disconnected disappear too. Errors back off
//! (kube-runtime's default: 0.8 s doubling to 30 s).
//!
//! Each event goes, object by object, to one thread that owns the index ([`Applier`]): an
//! object is accepted or refused alone, so a bad object in one namespace freezes nothing
//! else. A kind the API server does not serve (its CRD is not installed: 404) counts as listed
//! and empty; it is logged once and looked for again with the watcher's backoff.
//!
//! [`PolicyIndex`]: mesh_core::PolicyIndex

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::mpsc::Sender;
use std::time::Duration;

use futures_util::StreamExt;
use kube::api::{Api, ApiResource, DynamicObject};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use mesh_core::ObjectRef;
use mesh_core::kinds::catalog::Family;
use mesh_tower::metrics::Registry;
use serde_json::Value;

mod apply;

pub(crate) use apply::{Applier, Driver, Observer, Refusal};

/// A kind the mesh reads from the API server.
#[derive(Debug)]
pub(crate) struct Kind {
    pub(crate) group: &'static str,
    pub(crate) version: &'static str,
    pub(crate) kind: &'static str,
    pub(crate) plural: &'static str,
    /// Inbound policy of a workload: a proxy needs only its own namespace's objects.
    pub(crate) workload_namespace: bool,
    /// Namespaces: cluster-scoped, and read by the controller only (their default inbound
    /// policy annotation); a proxy has its default from the injector.
    pub(crate) cluster_scoped: bool,
}

/// The kinds `mesh-core` compiles from a live cluster (not pod templates), at the version the
/// catalog stores them at.
pub(crate) static KINDS: std::sync::LazyLock<Vec<Kind>> = std::sync::LazyLock::new(|| {
    mesh_core::kinds::catalog::iter()
        .filter(|k| !k.family.is_template() || k.family == Family::Namespace)
        .map(|k| Kind {
            group: k.group,
            version: k.storage().name,
            kind: k.kind,
            plural: k.plural,
            workload_namespace: k.family.is_inbound_policy(),
            cluster_scoped: k.family == Family::Namespace,
        })
        .collect()
});

/// One watcher: a kind, in one namespace or all.
#[derive(Clone, Debug)]
pub(crate) struct Scope {
    /// `HTTPRoute.gateway.networking.k8s.io@shop`, `Service@*`: names the watch in logs,
    /// `/ready` and the index thread.
    pub(crate) key: String,
    pub(crate) kind: &'static Kind,
    pub(crate) namespace: Option<String>,
}

/// What a watcher saw, for the index thread. `watch` names the watcher (a [`Scope`]'s key).
#[derive(Debug)]
pub(crate) enum Op {
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

/// The watchers' connections, for `/ready` and `kube_watch_healthy` (their objects live in
/// the index thread).
pub(crate) struct Watches {
    states: parking_lot::Mutex<BTreeMap<String, WatchState>>,
    /// To the thread that owns the index; false once it is gone.
    ops: Box<dyn Fn(Op) -> bool + Send + Sync>,
    registry: Registry,
}

#[derive(Debug)]
struct WatchState {
    kind: &'static Kind,
    /// Listed at least once (or not served at all).
    synced: bool,
    healthy: bool,
    /// The API server does not serve this kind; logged once.
    absent: bool,
}

// === impl Kind ===

impl Kind {
    pub(crate) fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_owned()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The metric label: `HTTPRoute.gateway.networking.k8s.io`, `Service`.
    pub(crate) fn label(&self) -> String {
        kind_label(self.group, self.kind)
    }

    pub(crate) fn resource(&self) -> ApiResource {
        ApiResource {
            group: self.group.to_owned(),
            version: self.version.to_owned(),
            api_version: self.api_version(),
            kind: self.kind.to_owned(),
            plural: self.plural.to_owned(),
        }
    }
}

// === impl Scope ===

impl Scope {
    pub(crate) fn new(kind: &'static Kind, namespace: Option<String>) -> Self {
        let key = format!("{}@{}", kind.label(), namespace.as_deref().unwrap_or("*"));
        Self {
            key,
            kind,
            namespace,
        }
    }

    /// One watcher per kind of `kinds` in each of `namespaces` (all when empty); the kinds
    /// of a workload's inbound policy only in `workload_namespace` when one is given.
    pub(crate) fn all<'a>(
        kinds: impl IntoIterator<Item = &'static Kind>,
        workload_namespace: Option<&'a str>,
        namespaces: &'a [String],
    ) -> Vec<Self> {
        let mut scopes = Vec::new();
        for k in kinds {
            let names: Vec<Option<String>> = match workload_namespace {
                Some(ns) if k.workload_namespace => vec![Some(ns.to_owned())],
                _ if namespaces.is_empty() || k.cluster_scoped => vec![None],
                _ => namespaces.iter().cloned().map(Some).collect(),
            };
            scopes.extend(names.into_iter().map(|ns| Self::new(k, ns)));
        }
        scopes
    }
}

// === impl Watches ===

impl Watches {
    /// Starts one watcher per scope on the runtime; their events go to `ops` (a channel that
    /// may carry more than watch events: `M: From<Op>`).
    pub(crate) fn start<M: From<Op> + Send + 'static>(
        client: &kube::Client,
        scopes: &[Scope],
        ops: Sender<M>,
        registry: Registry,
    ) -> Arc<Self> {
        let ops = Box::new(move |op: Op| ops.send(M::from(op)).is_ok());
        let states = scopes.iter().map(|s| {
            let state = WatchState {
                kind: s.kind,
                synced: false,
                healthy: false,
                absent: false,
            };
            (s.key.clone(), state)
        });
        let watches = Arc::new(Self {
            states: parking_lot::Mutex::new(states.collect()),
            ops,
            registry,
        });
        for s in scopes {
            watches.set_health(s.kind, false);
            let ar = s.kind.resource();
            let api: Api<DynamicObject> = match &s.namespace {
                Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
                None => Api::all_with(client.clone(), &ar),
            };
            tokio::spawn(Arc::clone(&watches).watch(s.key.clone(), api));
        }
        watches
    }

    /// The watches not listed yet.
    pub(crate) fn unsynced(&self) -> Vec<String> {
        (self.states.lock().iter())
            .filter(|(_, w)| !w.synced)
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Watches whose connection is failing: their last listed objects keep serving.
    pub(crate) fn degraded(&self) -> Vec<String> {
        (self.states.lock().iter())
            .filter(|(_, w)| w.synced && !w.healthy && !w.absent)
            .map(|(k, _)| k.clone())
            .collect()
    }

    async fn watch(self: Arc<Self>, key: String, api: Api<DynamicObject>) {
        let mut events = watcher::watcher(api.clone(), watcher::Config::default())
            .backoff(WatchBackoff::default())
            .boxed();
        let probing = Arc::new(std::sync::atomic::AtomicBool::new(false));
        while let Some(event) = events.next().await {
            match event {
                Ok(e) => self.on_event(&key, e),
                Err(e) => {
                    self.on_error(&key, &e);
                    if !probing.swap(true, std::sync::atomic::Ordering::AcqRel) {
                        let probe = Arc::clone(&probing);
                        tokio::spawn(Arc::clone(&self).probe(key.clone(), api.clone(), probe));
                    }
                }
            }
        }
    }

    /// After a watch error, asks the API server for one object of the kind each second until
    /// it answers, then counts the watch healthy again. The watcher itself reports nothing when
    /// it resumes (bookmarks are swallowed), so without this a kind with no changes stayed
    /// "unhealthy" long after the API server was back; the watch resumes from its version
    /// within its backoff (at most ~5 s), losing nothing.
    async fn probe(
        self: Arc<Self>,
        key: String,
        api: Api<DynamicObject>,
        probing: Arc<std::sync::atomic::AtomicBool>,
    ) {
        let params = kube::api::ListParams::default().limit(1);
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let healthy = self.states.lock().get(&key).is_none_or(|w| w.healthy);
            if healthy || api.list_metadata(&params).await.is_ok() {
                break;
            }
        }
        probing.store(false, std::sync::atomic::Ordering::Release);
        let mut states = self.states.lock();
        let Some(w) = states.get_mut(&key) else {
            return;
        };
        if std::mem::replace(&mut w.healthy, true) {
            return;
        }
        let k = w.kind;
        drop(states);
        tracing::info!(
            watch = key,
            "the API server answers again; the watch resumes"
        );
        self.set_health(k, true);
    }

    fn on_event(&self, key: &str, event: Event<DynamicObject>) {
        let mut states = self.states.lock();
        let Some(w) = states.get_mut(key) else {
            return;
        };
        let watch = key.to_owned();
        let op = match event {
            Event::Init => Op::Relist { watch },
            Event::InitApply(object) => Op::Listing { watch, object },
            Event::InitDone => {
                if w.absent {
                    tracing::info!(watch = key, "the API server serves this kind now");
                }
                w.synced = true;
                w.absent = false;
                tracing::debug!(watch = key, "listed");
                Op::Listed { watch }
            }
            Event::Apply(object) => Op::Applied { watch, object },
            Event::Delete(object) => Op::Deleted { watch, object },
        };
        let was_healthy = std::mem::replace(&mut w.healthy, true);
        let k = w.kind;
        drop(states);
        self.send(op);
        if !was_healthy {
            self.set_health(k, true);
        }
    }

    /// To the index thread. It ends only with the process, so a failed send (it panicked)
    /// leaves the last published state serving, as a refused update would.
    fn send(&self, op: Op) {
        if !(self.ops)(op) {
            tracing::error!("the policy index thread is gone; the last published state serves");
        }
    }

    fn on_error(&self, key: &str, error: &watcher::Error) {
        let not_served = matches!(
            error,
            watcher::Error::InitialListFailed(kube::Error::Api(s)) if s.is_not_found()
        );
        let mut states = self.states.lock();
        let Some(w) = states.get_mut(key) else {
            return;
        };
        let k = w.kind;
        if not_served {
            // A CRD that is not installed: nothing of this kind exists, which is a complete
            // (empty) picture. Look again later, through the watcher's backoff.
            let first = !w.absent;
            w.absent = true;
            let was_synced = std::mem::replace(&mut w.synced, true);
            w.healthy = true;
            drop(states);
            if first {
                tracing::info!(
                    watch = key,
                    "the API server does not serve this kind (CRD not installed?); skipped, looking again later"
                );
            }
            self.set_health(k, true);
            if first || !was_synced {
                self.send(Op::Absent {
                    watch: key.to_owned(),
                });
            }
            return;
        }
        w.healthy = false;
        drop(states);
        tracing::warn!(watch = key, %error, "kubernetes watch failed; the last good state keeps serving");
        self.registry
            .counter(
                "kube_watch_errors_total",
                vec![metrics::Label::new("kind", k.label())],
            )
            .increment(1);
        self.set_health(k, false);
    }

    /// `kube_watch_healthy{kind}`: 1 when every watch of the kind is connected or not needed.
    fn set_health(&self, k: &Kind, hint: bool) {
        let healthy = hint
            && (self.states.lock().values())
                .filter(|w| std::ptr::eq(w.kind, k))
                .all(|w| w.healthy);
        self.registry
            .gauge(
                "kube_watch_healthy",
                vec![metrics::Label::new("kind", k.label())],
            )
            .set(if healthy { 1.0 } else { 0.0 });
    }
}

impl std::fmt::Debug for Watches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watches")
            .field("watches", &self.states.lock().len())
            .finish_non_exhaustive()
    }
}

/// The object as a document `mesh-core` reads, keyed by namespace and name: `apiVersion`
/// and `kind` restored (list items from the API server carry neither), and what only the
/// API server needs (status, managedFields, resourceVersion) left out, so that a status
/// update does not recompile the policy.
pub(crate) fn document(k: &Kind, obj: DynamicObject) -> ((String, String), Value) {
    let id = (
        obj.metadata.namespace.clone().unwrap_or_default(),
        obj.metadata.name.clone().unwrap_or_default(),
    );
    let mut v = serde_json::to_value(&obj).unwrap_or(Value::Null);
    if let Some(map) = v.as_object_mut() {
        map.insert("apiVersion".to_owned(), Value::String(k.api_version()));
        map.insert("kind".to_owned(), Value::String(k.kind.to_owned()));
        map.remove("status");
        if let Some(meta) = map.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.remove("managedFields");
            meta.remove("resourceVersion");
        }
    }
    (id, v)
}

/// The metric label of a kind: `HTTPRoute.gateway.networking.k8s.io`, `Service`.
pub(crate) fn kind_label(group: &str, kind: &str) -> String {
    if group.is_empty() {
        kind.to_owned()
    } else {
        format!("{kind}.{group}")
    }
}

/// `HTTPRoute.gateway.networking.k8s.io/shop/web`, for logs.
pub(crate) fn object_name(r: &ObjectRef) -> String {
    format!(
        "{}/{}/{}",
        kind_label(&r.group, &r.kind),
        r.namespace,
        r.name
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_carry_their_type_and_drop_server_fields() {
        let k = KINDS
            .iter()
            .find(|k| k.kind == "Service")
            .expect("Service is watched");
        let obj: DynamicObject = serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": "web", "namespace": "shop", "resourceVersion": "7",
                "managedFields": [{"manager": "kubectl"}]
            },
            "spec": {"ports": [{"port": 80}]},
            "status": {"loadBalancer": {}}
        }))
        .expect("a DynamicObject");
        let ((ns, name), v) = document(k, obj);
        assert_eq!((ns.as_str(), name.as_str()), ("shop", "web"));
        assert_eq!(v["apiVersion"], "v1");
        assert_eq!(v["kind"], "Service");
        assert!(v.get("status").is_none());
        assert!(v["metadata"].get("resourceVersion").is_none());
        assert!(v["metadata"].get("managedFields").is_none());
        let policy = mesh_core::MeshPolicy::from_yaml(&serde_json::to_string(&v).expect("json"));
        assert!(policy.is_ok(), "{policy:?}");
    }

    #[test]
    fn kinds_are_ones_the_compiler_reads() {
        for k in KINDS.iter() {
            let doc = format!(
                "apiVersion: {}\nkind: {}\nmetadata: {{ name: x, namespace: y }}\n",
                k.api_version(),
                k.kind
            );
            let notes = match mesh_core::MeshPolicy::from_yaml(&doc) {
                Ok(p) => format!("{:?}", p.notes()),
                Err(e) => format!("{e}"),
            };
            assert!(
                !notes.contains("not a kind the mesh reads"),
                "{}: {notes}",
                k.label()
            );
        }
    }

    #[test]
    fn inbound_kinds_stay_in_the_workload_namespace_and_namespaces_are_cluster_wide() {
        let names = ["a".to_owned(), "b".to_owned()];
        let scopes = Scope::all(KINDS.iter(), Some("shop"), &names);
        let keys: Vec<&str> = scopes.iter().map(|s| s.key.as_str()).collect();
        assert!(keys.contains(&"Server.policy.linkerd.io@shop"));
        assert!(keys.contains(&"Service@a") && keys.contains(&"Service@b"));
        assert!(keys.contains(&"Namespace@*"));
        let controller = Scope::all(KINDS.iter(), None, &[]);
        assert!(controller.iter().all(|s| s.namespace.is_none()));
    }
}

/// How a failed watch retries: 250 ms doubling to at most 4 s, jittered, back to 250 ms after
/// any event. kube-runtime's default climbs to 30 s and resets only after 120 s of health, so
/// after an API server restart some kinds stayed down for 20 s and more; the API server's
/// own clients (client-go reflectors) retry within about a second.
#[derive(Debug)]
struct WatchBackoff {
    next: Duration,
}

impl WatchBackoff {
    const MIN: Duration = Duration::from_millis(250);
    const MAX: Duration = Duration::from_secs(4);
}

impl Default for WatchBackoff {
    fn default() -> Self {
        Self { next: Self::MIN }
    }
}

impl Iterator for WatchBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let base = self.next;
        self.next = (base * 2).min(Self::MAX);
        // ±25 %, so that every watch of every replica does not retry in step.
        let jitter = base.mul_f64(0.75 + fastrand::f64() * 0.5);
        Some(jitter)
    }
}

impl kube::runtime::utils::Backoff for WatchBackoff {
    fn reset(&mut self) {
        self.next = Self::MIN;
    }
}

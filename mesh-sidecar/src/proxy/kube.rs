//! `mesh proxy --kube`: policy and discovery live from the Kubernetes API server.
//!
//! One kube-runtime [`watcher`] per kind (and per namespace when `--kube-namespaces` names
//! some) keeps a store of that kind's current objects. The watcher lists, then watches from
//! the list's resourceVersion, resumes from the last version it saw after a dropped
//! connection, and lists again when the API server answers 410 Gone (the version was
//! compacted away); a relist replaces the kind's store as a whole, so deletions missed while
//! disconnected disappear too. Errors back off (kube-runtime's default: 0.8 s doubling to
//! 30 s).
//!
//! Each event goes, object by object, to one thread that owns a [`mesh_core::PolicyIndex`]
//! ([`apply`]): an object is accepted or refused alone, so a bad object in one namespace
//! freezes nothing else; the refused ones are logged once per resourceVersion and counted in
//! `policy_object_refused_total{kind}` and the gauge `policy_objects_refused{kind}`. After a
//! short debounce the index's snapshot is served; an EndpointSlice or Pod change updates only
//! the endpoints of the Services it touched. Nothing is served before every kind has been
//! listed once, so the proxy never routes on half a picture; until then `/ready` says
//! "kubernetes watch not synced".
//!
//! A kind the API server does not serve (its CRD is not installed: 404) counts as listed and
//! empty; it is logged once and looked for again with the watcher's backoff.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Sender};
use std::time::Duration;

use futures_util::StreamExt;
use kube::api::{Api, ApiResource, DynamicObject};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use mesh_tower::metrics::Registry;
use serde_json::Value;

use super::config::ConfigSource;
use apply::{Applier, Op};

mod apply;

/// What the proxy reads from the API server.
#[derive(Debug)]
struct Kind {
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
    /// Inbound policy of this workload: only its own namespace matters.
    workload_namespace: bool,
}

/// The kinds `mesh-core` compiles that a proxy watches (not pod templates or namespaces),
/// at the version the catalog stores them at.
static KINDS: std::sync::LazyLock<Vec<Kind>> = std::sync::LazyLock::new(|| {
    mesh_core::kinds::catalog::iter()
        .filter(|k| !k.family.is_template())
        .map(|k| Kind {
            group: k.group,
            version: k.storage().name,
            kind: k.kind,
            plural: k.plural,
            workload_namespace: k.family.is_inbound_policy(),
        })
        .collect()
});

/// The live Kubernetes source of the proxy's configuration.
pub(crate) struct KubeSource {
    watches: parking_lot::Mutex<BTreeMap<String, WatchState>>,
    /// To the thread that owns the index.
    ops: Sender<Op>,
    registry: Registry,
    /// Whether a snapshot from the API server has ever been served.
    applied: Arc<AtomicBool>,
}

/// A watcher's connection, for `/ready` and `kube_watch_healthy` (its objects live in the
/// index thread).
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
    fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_owned()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The metric label: `HTTPRoute.gateway.networking.k8s.io`, `Service`.
    fn label(&self) -> String {
        if self.group.is_empty() {
            self.kind.to_owned()
        } else {
            format!("{}.{}", self.kind, self.group)
        }
    }

    fn resource(&self) -> ApiResource {
        ApiResource {
            group: self.group.to_owned(),
            version: self.version.to_owned(),
            api_version: self.api_version(),
            kind: self.kind.to_owned(),
            plural: self.plural.to_owned(),
        }
    }
}

// === impl KubeSource ===

impl KubeSource {
    /// Connects with the in-cluster config or `KUBECONFIG` and starts watching: policy kinds
    /// in `namespace` (the workload's), the rest in `namespaces` (all when empty). Changes
    /// reach `config` after `debounce`.
    pub(crate) async fn start(
        config: Arc<ConfigSource>,
        registry: Registry,
        namespace: &str,
        namespaces: &[String],
        debounce: Duration,
    ) -> Result<Arc<Self>, String> {
        let client = kube::Client::try_default()
            .await
            .map_err(|e| format!("--kube: cannot configure a Kubernetes client: {e}"))?;
        let (tx, rx) = mpsc::channel();
        let source = Arc::new(Self {
            watches: parking_lot::Mutex::new(BTreeMap::new()),
            ops: tx,
            registry: registry.clone(),
            applied: Arc::new(AtomicBool::new(false)),
        });
        let mut tasks = Vec::new();
        for k in KINDS.iter() {
            let scopes: Vec<Option<String>> = if k.workload_namespace {
                vec![Some(namespace.to_owned())]
            } else if namespaces.is_empty() {
                vec![None]
            } else {
                namespaces.iter().cloned().map(Some).collect()
            };
            for ns in scopes {
                let key = format!("{}@{}", k.label(), ns.as_deref().unwrap_or("*"));
                source.watches.lock().insert(
                    key.clone(),
                    WatchState {
                        kind: k,
                        synced: false,
                        healthy: false,
                        absent: false,
                    },
                );
                source.set_health(k, false);
                tasks.push((key, k, ns));
            }
        }
        let applier = Applier::new(
            config,
            registry,
            Arc::clone(&source.applied),
            tasks.iter().map(|(key, k, _)| (key.clone(), *k)),
        );
        std::thread::Builder::new()
            .name("mesh-policy-index".to_owned())
            .spawn(move || applier.run(&rx, debounce))
            .map_err(|e| format!("--kube: cannot start the policy index thread: {e}"))?;
        for (key, k, ns) in tasks {
            let ar = k.resource();
            let api: Api<DynamicObject> = match &ns {
                Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
                None => Api::all_with(client.clone(), &ar),
            };
            tokio::spawn(Arc::clone(&source).watch(key, api));
        }
        tracing::info!(
            namespace,
            namespaces = ?namespaces,
            "watching the Kubernetes API for policy and discovery"
        );
        Ok(source)
    }

    /// What keeps the proxy from being ready, for `/ready`.
    pub(crate) fn not_ready(&self) -> Option<&'static str> {
        if !self.watches.lock().values().all(|w| w.synced) {
            return Some("kubernetes watch not synced");
        }
        if !self.applied.load(Ordering::Acquire) {
            return Some("no valid configuration from kubernetes yet");
        }
        None
    }

    /// Watches whose connection is failing: the proxy serves its last good snapshot.
    pub(crate) fn degraded(&self) -> Vec<String> {
        self.watches
            .lock()
            .iter()
            .filter(|(_, w)| w.synced && !w.healthy && !w.absent)
            .map(|(k, _)| k.clone())
            .collect()
    }

    async fn watch(self: Arc<Self>, key: String, api: Api<DynamicObject>) {
        let mut events = watcher::watcher(api, watcher::Config::default())
            .default_backoff()
            .boxed();
        while let Some(event) = events.next().await {
            match event {
                Ok(e) => self.on_event(&key, e),
                Err(e) => self.on_error(&key, &e),
            }
        }
    }

    fn on_event(&self, key: &str, event: Event<DynamicObject>) {
        let mut watches = self.watches.lock();
        let Some(w) = watches.get_mut(key) else {
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
        drop(watches);
        self.send(op);
        if !was_healthy {
            self.set_health(k, true);
        }
    }

    /// To the index thread. It ends only with the process, so a failed send (it panicked)
    /// leaves the last snapshot serving, as a refused update would.
    fn send(&self, op: Op) {
        if self.ops.send(op).is_err() {
            tracing::error!("the policy index thread is gone; the last snapshot keeps serving");
        }
    }

    fn on_error(&self, key: &str, error: &watcher::Error) {
        let not_served = matches!(
            error,
            watcher::Error::InitialListFailed(kube::Error::Api(s)) if s.is_not_found()
        );
        let mut watches = self.watches.lock();
        let Some(w) = watches.get_mut(key) else {
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
            drop(watches);
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
        drop(watches);
        tracing::warn!(watch = key, %error, "kubernetes watch failed; the last good snapshot keeps serving");
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
            && self
                .watches
                .lock()
                .values()
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

impl std::fmt::Debug for KubeSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeSource")
            .field("watches", &self.watches.lock().len())
            .finish_non_exhaustive()
    }
}

/// The object as a document `mesh-core` reads, keyed by namespace and name: `apiVersion`
/// and `kind` restored (list items from the API server carry neither), and what only the
/// API server needs (status, managedFields, resourceVersion) left out, so that a status
/// update does not recompile the policy.
fn document(k: &Kind, obj: DynamicObject) -> ((String, String), Value) {
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
}

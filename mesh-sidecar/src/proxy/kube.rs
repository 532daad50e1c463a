//! `mesh proxy --kube`: policy and discovery live from the Kubernetes API server, read by
//! the proxy itself. A development option: in a cluster, proxies get their policy from
//! `mesh controller` (`--controller`) and need no RBAC; with `--kube` every proxy watches
//! Services, EndpointSlices and Pods cluster-wide (see `crate::kube_watch`).
//!
//! The index thread serves the index's snapshot after a short debounce; an EndpointSlice or
//! Pod change updates only the endpoints of the Services it touched. Nothing is served before
//! every kind has been listed once, so the proxy never routes on half a picture; until then
//! `/ready` says "kubernetes watch not synced".

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use mesh_core::PolicyIndex;
use mesh_tower::metrics::Registry;

use super::config::ConfigSource;
use crate::kube_watch::{Applier, Driver, KINDS, Op, Scope, Watches};

/// The live Kubernetes source of the proxy's configuration.
pub(crate) struct KubeSource {
    watches: Arc<Watches>,
    /// Whether a snapshot from the API server has ever been served.
    applied: Arc<AtomicBool>,
}

/// Serves the index to the proxy's configuration.
struct Publisher {
    config: Arc<ConfigSource>,
    applied: Arc<AtomicBool>,
    published: bool,
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
        // A proxy has its default inbound policy from the injector, not from Namespaces.
        let kinds = KINDS.iter().filter(|k| !k.cluster_scoped);
        let scopes = Scope::all(kinds, Some(namespace), namespaces);
        let index = PolicyIndex::new(config.policy.load().config().clone());
        let applier = Applier::new(index, (), registry.clone(), &scopes);
        let applied = Arc::new(AtomicBool::new(false));
        let mut publisher = Publisher {
            config,
            applied: Arc::clone(&applied),
            published: false,
        };
        std::thread::Builder::new()
            .name("mesh-policy-index".to_owned())
            .spawn(move || {
                applier.run(&rx, debounce, &mut publisher);
            })
            .map_err(|e| format!("--kube: cannot start the policy index thread: {e}"))?;
        let watches = Watches::start(&client, &scopes, tx, registry);
        tracing::info!(
            namespace,
            namespaces = ?namespaces,
            "watching the Kubernetes API for policy and discovery"
        );
        Ok(Arc::new(Self { watches, applied }))
    }

    /// What keeps the proxy from being ready, for `/ready`.
    pub(crate) fn not_ready(&self) -> Option<&'static str> {
        if !self.watches.unsynced().is_empty() {
            return Some("kubernetes watch not synced");
        }
        if !self.applied.load(Ordering::Acquire) {
            return Some("no valid configuration from kubernetes yet");
        }
        None
    }

    /// Watches whose connection is failing: the proxy serves its last good snapshot.
    pub(crate) fn degraded(&self) -> Vec<String> {
        self.watches.degraded()
    }
}

impl std::fmt::Debug for KubeSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeSource")
            .field("watches", &self.watches)
            .finish_non_exhaustive()
    }
}

// === impl Publisher ===

impl Driver<(), Op> for Publisher {
    fn handle(&mut self, a: &mut Applier<()>, op: Op) {
        a.handle(op);
    }

    /// Serves the index's snapshot once every watch has listed, and then whenever something
    /// changed: only the endpoints of the Services that changed are pushed to the resolver.
    fn publish(&mut self, a: &mut Applier<()>) {
        if !a.synced() {
            return;
        }
        let changes = a.take_changes();
        if self.published && changes.is_empty() {
            return;
        }
        // An endpoint change swaps the snapshot as well: a transparent proxy finds pods by
        // address in it. Taking it clones Arcs; nothing is recompiled.
        let snapshot = a.index.snapshot();
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

#[cfg(test)]
mod tests {
    use mesh_core::PolicyConfig;
    use mesh_core::split::BackendRef;
    use mesh_tower::discover::Resolve;
    use serde_json::json;

    use kube::api::DynamicObject;

    use super::*;

    const ROUTES: &str = "HTTPRoute.gateway.networking.k8s.io@*";
    const SERVICES: &str = "Service@*";
    const SLICES: &str = "EndpointSlice.discovery.k8s.io@*";

    /// The index thread's state, driven by hand.
    struct Harness {
        a: Applier<()>,
        p: Publisher,
    }

    impl Harness {
        fn handle(&mut self, op: Op) {
            self.a.handle(op);
        }

        fn publish(&mut self) {
            self.a.count_refused();
            self.p.publish(&mut self.a);
        }
    }

    /// An index thread watching `watches` (scope keys, all namespaces).
    fn applier_of(watches: &[&str]) -> (Harness, Arc<ConfigSource>, Registry) {
        let registry = Registry::new();
        let config = Arc::new(ConfigSource::new(
            None,
            PolicyConfig::default(),
            registry.clone(),
        ));
        let scopes: Vec<Scope> = watches
            .iter()
            .map(|key| {
                let label = key.trim_end_matches("@*");
                let kind = KINDS.iter().find(|k| k.label() == label);
                Scope::new(kind.expect("a watched kind"), None)
            })
            .collect();
        let index = PolicyIndex::new(PolicyConfig::default());
        let a = Applier::new(index, (), registry.clone(), &scopes);
        let p = Publisher {
            config: Arc::clone(&config),
            applied: Arc::new(AtomicBool::new(false)),
            published: false,
        };
        (Harness { a, p }, config, registry)
    }

    fn applier() -> (Harness, Arc<ConfigSource>, Registry) {
        applier_of(&[ROUTES, SERVICES])
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

    fn list(a: &mut Harness, watch: &str, objects: Vec<DynamicObject>) {
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
        a.publish();
    }

    fn applied(a: &mut Harness, object: DynamicObject) {
        a.handle(Op::Applied {
            watch: ROUTES.to_owned(),
            object,
        });
        a.publish();
    }

    /// The backend a request to `web` in `ns` goes to.
    fn backend(config: &ConfigSource, ns: &str) -> Option<String> {
        let req =
            mesh_core::Request::new("GET", &format!("http://web.{ns}:80/")).expect("a request");
        let policy = config.policy.load();
        let service = policy.service("web", ns)?;
        let decision = service.decide(80, &req);
        decision.pick(0).map(|b| b.name().to_owned())
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
        assert_eq!(a.a.index.refused().count(), 1);
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
        assert_eq!(a.a.index.refused().count(), 0);
    }

    #[test]
    fn a_relist_deletes_what_vanished_and_nothing_serves_before_every_kind_listed() {
        let (mut a, config, _) = applier();
        list(&mut a, ROUTES, vec![route("x", "r", "x-v1", "1", None)]);
        // Services not listed yet: nothing served.
        assert!(!a.p.applied.load(Ordering::Acquire));
        list(&mut a, SERVICES, vec![service("x", "web")]);
        assert_eq!(backend(&config, "x").as_deref(), Some("x-v1"));

        // Deleted while the watch was away: the relist no longer has it, and the Service
        // goes to itself again.
        list(&mut a, ROUTES, vec![]);
        assert_eq!(backend(&config, "x").as_deref(), Some("web"));
    }

    #[test]
    fn endpoint_changes_reach_the_resolver_of_their_service() {
        let (mut a, config, _) = applier_of(&[ROUTES, SERVICES, SLICES]);
        let eps = SLICES;
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
        let web = BackendRef::new("web", "x", Some(80));
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

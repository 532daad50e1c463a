//! The proxy's live configuration: policy and static discovery from `--config`, watched and
//! reloaded; a bad update is refused with its reasons and the last good config keeps serving.
//!
//! Reading and compiling a config takes tens of milliseconds for a thousand routes, so it
//! never runs on a runtime thread: with `--workers 1` that thread serves every connection,
//! and a compile on it would stall them all. [`ConfigSource::load`] runs it on the blocking
//! pool and the result is swapped in (`arc-swap`) when it is ready.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use mesh_core::{MeshPolicy, PolicyConfig};
use mesh_tower::PolicyHandle;
use mesh_tower::discover::PolicyResolver;
use mesh_tower::metrics::Registry;

/// Endpoints from the config, and the identity each address must present.
pub(crate) type SidecarResolver = PolicyResolver;

/// Loads and reloads `--config`.
#[derive(Debug)]
pub(crate) struct ConfigSource {
    /// Files or directories of `*.yaml`/`*.yml`, compiled as one stream (one for the proxy's
    /// `--config`; `mesh dashboard --policy` may give several).
    paths: Vec<PathBuf>,
    pub(crate) policy: PolicyHandle,
    pub(crate) resolver: SidecarResolver,
    pub(crate) loaded: AtomicBool,
    registry: Registry,
    stamp: parking_lot::Mutex<Vec<(PathBuf, SystemTime, u64)>>,
}

// === impl ConfigSource ===

impl ConfigSource {
    pub(crate) fn new(path: Option<PathBuf>, config: PolicyConfig, registry: Registry) -> Self {
        Self::with_paths(path.into_iter().collect(), config, registry)
    }

    pub(crate) fn with_paths(
        paths: Vec<PathBuf>,
        config: PolicyConfig,
        registry: Registry,
    ) -> Self {
        let empty = MeshPolicy::compile("", &config).unwrap_or_else(|_| unreachable_empty());
        Self {
            paths,
            policy: PolicyHandle::new(empty),
            resolver: SidecarResolver::default(),
            loaded: AtomicBool::new(false),
            registry,
            stamp: parking_lot::Mutex::new(Vec::new()),
        }
    }

    /// Whether a config has been loaded (or none was asked for).
    pub(crate) fn is_ready(&self) -> bool {
        self.paths.is_empty() || self.loaded.load(Ordering::Acquire)
    }

    fn files(&self) -> std::io::Result<Vec<PathBuf>> {
        let mut out = Vec::new();
        for path in &self.paths {
            if path.is_dir() {
                let mut v: Vec<PathBuf> = std::fs::read_dir(path)?
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
                    .collect();
                v.sort();
                out.extend(v);
            } else {
                out.push(path.clone());
            }
        }
        Ok(out)
    }

    /// Loads the config if it changed since the last look. Returns whether a new config is
    /// serving.
    pub(crate) fn reload(&self) -> bool {
        let files = match self.files() {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the config; the last good config keeps serving");
                self.count("read_error");
                return false;
            }
        };
        let stamps: Vec<_> = files
            .iter()
            .filter_map(|f| {
                std::fs::metadata(f).ok().map(|m| {
                    (
                        f.clone(),
                        m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                        m.len(),
                    )
                })
            })
            .collect();
        {
            let mut last = self.stamp.lock();
            if *last == stamps && self.loaded.load(Ordering::Acquire) {
                return false;
            }
            *last = stamps;
        }
        tracing::info!(files = files.len(), "config changed; compiling");
        let mut stream = String::new();
        for f in &files {
            match std::fs::read_to_string(f) {
                Ok(t) => {
                    stream.push_str("\n---\n");
                    stream.push_str(&t);
                }
                Err(e) => {
                    tracing::warn!(file = %f.display(), error = %e, "cannot read the config; the last good config keeps serving");
                    self.count("read_error");
                    return false;
                }
            }
        }
        self.apply_stream(&stream, &format!("{} file(s)", files.len()))
    }

    /// Compiles `yaml` (policy plus Services, EndpointSlices, Pods) and serves it; on errors,
    /// logs every reason and keeps the last good config. Any source of configuration — files,
    /// the Kubernetes API — ends here. Returns whether the new config is serving.
    pub(crate) fn apply_stream(&self, yaml: &str, from: &str) -> bool {
        match self.policy.update_yaml(yaml) {
            Ok(()) => {
                self.served(None, from);
                true
            }
            Err(errors) => {
                for e in errors.errors() {
                    tracing::warn!(error = %e, from, "config refused; the last good config keeps serving");
                }
                self.count("invalid");
                false
            }
        }
    }

    /// Serves `policy`, built elsewhere (the Kubernetes source's index), and syncs the
    /// endpoints of the Services in `endpoints` (of every Service when `None`).
    pub(crate) fn serve(
        &self,
        policy: MeshPolicy,
        endpoints: Option<&BTreeSet<(String, String)>>,
        from: &str,
    ) {
        self.policy.store(policy);
        self.served(endpoints, from);
    }

    /// What follows a new snapshot: its endpoints to the resolver, then ready and counted.
    fn served(&self, endpoints: Option<&BTreeSet<(String, String)>>, from: &str) {
        let policy = self.policy.load();
        match endpoints {
            Some(changed) => self.resolver.sync_services(&policy, changed),
            None => self.resolver.sync(&policy),
        }
        self.loaded.store(true, Ordering::Release);
        tracing::info!(from, "config loaded");
        self.count("ok");
    }

    fn count(&self, result: &'static str) {
        self.registry
            .counter(
                "config_reload_total",
                vec![metrics::Label::new("result", result)],
            )
            .increment(1);
    }

    /// [`reload`](Self::reload) on the blocking pool, so that the threads serving traffic
    /// keep serving while a config is read and compiled. Returns whether a new config is
    /// serving.
    pub(crate) async fn load(self: &Arc<Self>) -> bool {
        let this = Arc::clone(self);
        match tokio::task::spawn_blocking(move || this.reload()).await {
            Ok(loaded) => loaded,
            Err(e) => {
                // A panic in the compiler: the last good config keeps serving.
                tracing::error!(error = %e, "config reload failed; the last good config keeps serving");
                false
            }
        }
    }

    /// Reloads every `interval` until the process ends.
    pub(crate) async fn watch(self: Arc<Self>, interval: Duration) {
        if self.paths.is_empty() {
            return;
        }
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            // One reload at a time: the next look waits for this one to finish.
            self.load().await;
        }
    }
}

/// Compiling the empty stream cannot fail; this keeps that promise explicit without a panic
/// path: an empty stream has no documents to be wrong.
fn unreachable_empty() -> MeshPolicy {
    // Falls back to the default config, which compiles the empty stream all the same.
    match MeshPolicy::from_yaml("") {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(%e, "the empty policy did not compile");
            std::process::exit(70)
        }
    }
}

/// `path` exists and is a file or directory.
pub(crate) fn check_path(path: &Path) -> Result<(), String> {
    std::fs::metadata(path)
        .map(|_| ())
        .map_err(|e| format!("--config {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use mesh_core::split::BackendRef;
    use mesh_tower::discover::Resolve;

    use super::*;

    fn config(endpoints: &str) -> String {
        format!(
            "apiVersion: v1
kind: Service
metadata: {{ name: web, namespace: shop }}
spec: {{ ports: [{{ name: http, port: 80 }}] }}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-x
  namespace: shop
  labels: {{ kubernetes.io/service-name: web }}
addressType: IPv4
ports: [{{ name: http, port: 8080 }}]
endpoints: {endpoints}
"
        )
    }

    fn web() -> BackendRef {
        BackendRef::new("web", "shop", Some(80))
    }

    #[test]
    fn emptied_or_deleted_endpoints_reach_watchers() {
        let src = ConfigSource::new(None, PolicyConfig::default(), Registry::new());
        assert!(src.apply_stream(&config(r#"[{ addresses: ["10.0.0.1"] }]"#), "test"));
        let mut rx = src.resolver.resolve(&web()).expect("web is known");
        let addrs: Vec<_> = rx.borrow_and_update().iter().map(|e| e.addr).collect();
        assert_eq!(addrs, vec![SocketAddr::from(([10, 0, 0, 1], 8080))]);

        assert!(src.apply_stream(&config("[]"), "test"));
        assert!(matches!(rx.has_changed(), Ok(true)));
        assert!(rx.borrow_and_update().is_empty());

        assert!(src.apply_stream(&config(r#"[{ addresses: ["10.0.0.2"] }]"#), "test"));
        assert_eq!(rx.borrow_and_update().len(), 1);

        // The slice deleted, the Service kept.
        let service_only = config("[]");
        let service_only = service_only.split("---").next().unwrap_or_default();
        assert!(src.apply_stream(service_only, "test"));
        assert!(matches!(rx.has_changed(), Ok(true)));
        assert!(rx.borrow_and_update().is_empty());
    }
}

//! A cheap, cloneable handle to the live policy snapshot.
//!
//! Readers take one snapshot per request, lock-free; writers compile, validate, then swap. A
//! stream that fails to compile is refused with its errors and the last good snapshot keeps
//! serving.
//!
//! ```
//! use mesh_tower::policy::PolicyHandle;
//!
//! let policy = PolicyHandle::from_yaml("")?;
//! assert!(policy.update_yaml("kind: HTTPRoute\nmetadata: {name: r}\nspec: {rules: 3}\n").is_err());
//! assert_eq!(policy.version(), 0); // the bad update changed nothing
//! policy.update_yaml("")?;
//! assert_eq!(policy.version(), 1);
//! # Ok::<(), mesh_core::LoadErrors>(())
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwap;
use mesh_core::{LoadErrors, MeshPolicy, PolicyConfig};

/// Shared handle to the current [`MeshPolicy`].
#[derive(Clone, Debug)]
pub struct PolicyHandle {
    inner: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    current: ArcSwap<MeshPolicy>,
    version: AtomicU64,
    config: PolicyConfig,
}

// === impl PolicyHandle ===

impl PolicyHandle {
    /// A handle serving `policy`.
    pub fn new(policy: MeshPolicy) -> Self {
        let config = policy.config().clone();
        Self {
            inner: Arc::new(Shared {
                current: ArcSwap::from_pointee(policy),
                version: AtomicU64::new(0),
                config,
            }),
        }
    }

    /// Compiles `yaml` and serves it.
    pub fn from_yaml(yaml: &str) -> Result<Self, LoadErrors> {
        MeshPolicy::from_yaml(yaml).map(Self::new)
    }

    /// The current snapshot. Hold it for one request; take a new one for the next.
    pub fn load(&self) -> Arc<MeshPolicy> {
        self.inner.current.load_full()
    }

    /// Serves `policy` from the next request on.
    pub fn store(&self, policy: MeshPolicy) {
        self.inner.current.store(Arc::new(policy));
        self.inner.version.fetch_add(1, Ordering::Release);
    }

    /// Compiles `yaml` with this handle's settings and serves it; on errors, logs and returns
    /// them and keeps serving the last good snapshot.
    pub fn update_yaml(&self, yaml: &str) -> Result<(), LoadErrors> {
        match MeshPolicy::compile(yaml, &self.inner.config) {
            Ok(p) => {
                self.store(p);
                Ok(())
            }
            Err(e) => {
                tracing::warn!(errors = %e, "policy update refused; the last good policy keeps serving");
                Err(e)
            }
        }
    }

    /// How many snapshots have been swapped in since the handle was made.
    pub fn version(&self) -> u64 {
        self.inner.version.load(Ordering::Acquire)
    }
}

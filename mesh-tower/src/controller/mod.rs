//! The client side of `mesh controller`: policy and endpoints streamed from the controller
//! over mesh mTLS, instead of read from files or watched in the cluster.
//!
//! A [`ControllerClient`] keeps one local [`mesh_core::PolicyIndex`] fed by the streams it
//! opened, and hands each new snapshot to a [`Publish`]er (a proxy's config, or a
//! [`PolicyHandle`](crate::PolicyHandle) with a [`PolicyResolver`]). It is lazy, as Linkerd's
//! proxy is: a Service is watched when first asked for ([`ControllerClient::ensure`], or
//! [`ControllerClient::ensure_addr`] for an original destination), and the least recently
//! asked watches beyond a cap are dropped. When the controller goes away, the last data
//! received keeps serving; every stream is reopened with jittered, capped backoff and its
//! first answer replaces what it carried.
//!
//! ```no_run
//! use mesh_tower::controller::{ControllerClient, ControllerConfig, PolicyResolver};
//! use mesh_tower::metrics::Registry;
//! use mesh_tower::PolicyHandle;
//!
//! # async fn run(tls: rustls::ClientConfig) -> Result<(), Box<dyn std::error::Error>> {
//! let identity = mesh_core::Identity::new("cluster.local", "mesh", "mesh-controller")?;
//! let config = ControllerConfig::new("10.96.0.20:8090".parse()?, identity);
//! let policy = PolicyHandle::from_yaml("")?;
//! let resolver = PolicyResolver::default();
//! let client = ControllerClient::start(
//!     config,
//!     tls,
//!     (policy.clone(), resolver.clone()),
//!     Registry::new(),
//! );
//! if client.ensure("shop", "web").await {
//!     assert!(policy.load().service("web", "shop").is_some());
//! }
//! # Ok(()) }
//! ```

use std::collections::BTreeSet;
use std::time::Duration;

use mesh_core::MeshPolicy;

use crate::PolicyHandle;
pub use crate::discover::PolicyResolver;

mod channel;
mod client;
pub mod ensure;
mod state;

pub use channel::GrpcChannel;
pub use client::{ControllerClient, ControllerConfig};
pub use ensure::{Ensure, EnsureLayer};
pub use state::AddressTarget;

/// Where a [`ControllerClient`]'s snapshots go. Called in the order the snapshots were
/// taken, with the client's state locked: it must not call back into the client.
pub trait Publish: Send + Sync + 'static {
    /// Serves `policy`; the endpoints of the Services in `endpoints` (namespace, name)
    /// changed.
    fn publish(&self, policy: MeshPolicy, endpoints: &BTreeSet<(String, String)>);
}

/// Reconnect delays: doubling from `min` to `max`, each drawn at random between half and all
/// of it, so that proxies that lost the controller together do not return together.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// The first delay.
    pub min: Duration,
    /// The longest delay.
    pub max: Duration,
    current: Duration,
}

// === impl Backoff ===

impl Backoff {
    /// Delays from `min` to `max`.
    pub fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max: max.max(min),
            current: min,
        }
    }

    /// The next delay.
    pub fn next_delay(&mut self) -> Duration {
        let full = self.current;
        self.current = (self.current * 2).min(self.max);
        let half = full / 2;
        half + full.mul_f64(fastrand::f64()) / 2
    }

    /// Back to the first delay (after a success).
    pub fn reset(&mut self) {
        self.current = self.min;
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new(Duration::from_millis(100), Duration::from_secs(10))
    }
}

// === impl Publish ===

impl Publish for (PolicyHandle, PolicyResolver) {
    fn publish(&self, policy: MeshPolicy, endpoints: &BTreeSet<(String, String)>) {
        self.0.store(policy);
        self.1.sync_services(&self.0.load(), endpoints);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_jittered_and_capped() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(400));
        let delays: Vec<Duration> = (0..6).map(|_| b.next_delay()).collect();
        let bounds = [100, 200, 400, 400, 400, 400];
        for (d, full) in delays.iter().zip(bounds) {
            let full = Duration::from_millis(full);
            assert!(
                *d >= full / 2 && *d <= full,
                "{d:?} not in [{:?}, {full:?}]",
                full / 2
            );
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}

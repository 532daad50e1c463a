//! Keeping the workload certificate fresh.
//!
//! [`Rotation::start`] fetches a first certificate, stores it in a [`CertStore`] and spawns a
//! task that renews at about 70 % of each certificate's lifetime (jittered a little so a fleet
//! started together does not renew together). If renewal fails it retries with jittered
//! exponential backoff, and the old certificate stays in use until a new one arrives.
//!
//! ```
//! use std::{sync::Arc, time::Duration};
//! use mesh_identity::{ca, rotate::{LocalSource, Rotation, RotationConfig}, Identity};
//!
//! # let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
//! # rt.block_on(async {
//! let anchor = ca::TrustAnchor::generate("cluster.local", Duration::from_secs(86400))?;
//! let issuer = Arc::new(ca::Issuer::generate(&anchor, Duration::from_secs(3600))?);
//! let id = Identity::new("cluster.local", "emojivoto", "web")?;
//! let source = LocalSource::new(issuer, id.clone(), Duration::from_secs(600));
//! let rotation = Rotation::start(source, RotationConfig::default()).await?;
//! assert_eq!(rotation.store().current().unwrap().identity(), &id);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # })?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use mesh_core::identity::Identity;
use tokio::task::JoinHandle;

use crate::ca::{CaError, Issuer};
use crate::client::{ClientError, IssuerClient};
use crate::store::{CertStore, Credentials};

/// Where fresh credentials come from.
pub trait CertificateSource: Send + Sync + 'static {
    /// Why fetching failed.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Generates a key and has it certified.
    fn fetch(&self) -> impl Future<Output = Result<Credentials, Self::Error>> + Send;
}

/// When to renew and how to retry.
#[derive(Clone, Debug)]
pub struct RotationConfig {
    /// The fraction of the lifetime after which to renew (default 0.7).
    pub renew_at: f64,
    /// How much the renewal point may move either way, as a fraction of the lifetime
    /// (default 0.05).
    pub jitter: f64,
    /// The first retry delay after a failure (default 1 s); it doubles up to `max_backoff`.
    pub min_backoff: Duration,
    /// The longest retry delay (default 30 s).
    pub max_backoff: Duration,
}

/// A running rotation: the store it keeps fresh and the task doing it.
///
/// Dropping it stops the task; the store keeps its last credentials.
#[derive(Debug)]
pub struct Rotation {
    store: CertStore,
    task: JoinHandle<()>,
}

/// Credentials signed in-process by an [`Issuer`], which may be swapped (anchor rotation). The
/// issuer service uses it for its own serving certificate.
#[derive(Clone, Debug)]
pub struct LocalSource {
    issuer: Arc<ArcSwap<Issuer>>,
    identity: Identity,
    lifetime: Duration,
}

// === impl RotationConfig ===

impl Default for RotationConfig {
    fn default() -> Self {
        Self {
            renew_at: 0.7,
            jitter: 0.05,
            min_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(30),
        }
    }
}

impl RotationConfig {
    /// When to renew `creds`: `renew_at` of its lifetime, moved by up to ± `jitter`.
    pub fn renewal_time(&self, creds: &Credentials) -> SystemTime {
        let spread = (crate::rand::fraction() * 2.0 - 1.0) * self.jitter;
        creds.at_fraction(self.renew_at + spread)
    }

    /// The delay before retry number `attempt` (from 0): exponential, capped, with jitter
    /// between half and all of it.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let exp = self
            .min_backoff
            .saturating_mul(1u32.checked_shl(attempt.min(20)).unwrap_or(u32::MAX));
        let capped = exp.min(self.max_backoff);
        capped.mul_f64(0.5 + crate::rand::fraction() * 0.5)
    }
}

// === impl Rotation ===

impl Rotation {
    /// Fetches the first credentials (failing if that fails) and spawns the renewal task.
    /// Must be called within a tokio runtime.
    pub async fn start<S: CertificateSource>(
        source: S,
        config: RotationConfig,
    ) -> Result<Self, S::Error> {
        let first = source.fetch().await?;
        let store = CertStore::with(first);
        Ok(Self::spawn(source, store, config))
    }

    /// Spawns the renewal task for a store that already holds credentials (or none: then the
    /// first fetch happens at once).
    pub fn spawn<S: CertificateSource>(
        source: S,
        store: CertStore,
        config: RotationConfig,
    ) -> Self {
        let task = tokio::spawn(run(source, store.clone(), config));
        Self { store, task }
    }

    /// The store this rotation keeps fresh; hand it to the TLS configs.
    pub fn store(&self) -> &CertStore {
        &self.store
    }

    /// Stops renewing.
    pub fn stop(self) {
        drop(self);
    }
}

impl Drop for Rotation {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn run<S: CertificateSource>(source: S, store: CertStore, config: RotationConfig) {
    loop {
        if let Some(current) = store.current() {
            let at = config.renewal_time(&current);
            let wait = at
                .duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO);
            tokio::time::sleep(wait).await;
        }
        let mut attempt = 0u32;
        loop {
            match source.fetch().await {
                Ok(creds) => {
                    tracing::info!(
                        identity = %creds.identity(),
                        lifetime = ?creds.lifetime(),
                        "renewed the workload certificate"
                    );
                    store.store(creds);
                    break;
                }
                Err(e) => {
                    let delay = config.backoff(attempt);
                    let left = store
                        .current()
                        .and_then(|c| c.not_after().duration_since(SystemTime::now()).ok());
                    tracing::warn!(
                        error = %crate::error_chain(&e),
                        retry_in = ?delay,
                        current_valid_for = ?left,
                        "certificate renewal failed; keeping the current certificate"
                    );
                    attempt = attempt.saturating_add(1);
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }
}

// === impl LocalSource ===

impl LocalSource {
    /// Certificates for `identity` from `issuer`, valid for `lifetime`.
    pub fn new(issuer: Arc<Issuer>, identity: Identity, lifetime: Duration) -> Self {
        Self {
            issuer: Arc::new(ArcSwap::new(issuer)),
            identity,
            lifetime,
        }
    }

    /// Switches the issuer; the next renewal uses it.
    pub fn set_issuer(&self, issuer: Arc<Issuer>) {
        self.issuer.store(issuer);
    }
}

impl CertificateSource for LocalSource {
    type Error = CaError;

    fn fetch(&self) -> impl Future<Output = Result<Credentials, CaError>> + Send {
        std::future::ready(
            self.issuer
                .load()
                .issue_local(&self.identity, self.lifetime),
        )
    }
}

impl CertificateSource for IssuerClient {
    type Error = ClientError;

    fn fetch(&self) -> impl Future<Output = Result<Credentials, ClientError>> + Send {
        Self::fetch(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_is_capped_and_jittered() {
        let c = RotationConfig::default();
        for attempt in 0..40 {
            let d = c.backoff(attempt);
            let full = Duration::from_secs(1 << attempt.min(5)).min(c.max_backoff);
            assert!(
                d >= full / 2 && d <= full,
                "attempt {attempt}: {d:?} vs {full:?}"
            );
        }
    }
}

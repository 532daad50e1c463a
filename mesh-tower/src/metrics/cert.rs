//! When the workload certificate expires, as Linkerd's proxy reports it.
//!
//! [`CERT_EXPIRY`] is a gauge without labels: the `notAfter` of the certificate the workload
//! serves and calls with now, in seconds since the Unix epoch. It follows the [`CertStore`], so
//! every rotation moves it. Alerting on `identity_cert_expiration_timestamp_seconds - time()`
//! catches a workload whose renewals keep failing before its peers start refusing it.

use std::time::UNIX_EPOCH;

use mesh_identity::{CertStore, Credentials};

use super::Registry;

/// Linkerd's name for the gauge.
pub const CERT_EXPIRY: &str = "identity_cert_expiration_timestamp_seconds";

// === impl Registry ===

impl Registry {
    /// Keeps [`CERT_EXPIRY`] at the `notAfter` of `store`'s current certificate, now and after
    /// every change, for as long as the store lives. Must be called within a tokio runtime.
    ///
    /// ```
    /// # let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    /// # rt.block_on(async {
    /// use std::time::Duration;
    /// use mesh_identity::{ca, CertStore, Identity};
    /// use mesh_tower::metrics::{Registry, CERT_EXPIRY};
    ///
    /// let anchor = ca::TrustAnchor::generate("cluster.local", Duration::from_secs(86400))?;
    /// let issuer = ca::Issuer::generate(&anchor, Duration::from_secs(3600))?;
    /// let web = Identity::new("cluster.local", "emojivoto", "web")?;
    /// let store = CertStore::with(issuer.issue_local(&web, Duration::from_secs(600))?);
    /// let registry = Registry::new();
    /// registry.track_cert_expiry(&store);
    /// assert!(registry.render().contains(CERT_EXPIRY));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn track_cert_expiry(&self, store: &CertStore) {
        self.describe(
            CERT_EXPIRY,
            "Time when this proxy's current mTLS identity certificate expires, in seconds since the Unix epoch.",
        );
        let gauge = self.gauge(CERT_EXPIRY, Vec::new());
        // Subscribed before the first read: a rotation in between is seen, not lost.
        let mut changes = store.subscribe();
        if let Some(c) = store.current() {
            gauge.set(expiry(&c));
        }
        tokio::spawn(async move {
            // Ends when the last handle of the store is gone.
            while changes.changed().await.is_ok() {
                let current = changes.borrow_and_update().clone();
                if let Some(c) = current {
                    gauge.set(expiry(&c));
                }
            }
        });
    }
}

/// `notAfter` in Unix seconds (X.509 times are whole seconds).
fn expiry(c: &Credentials) -> f64 {
    c.not_after()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use mesh_identity::{Identity, ca};

    use super::*;

    fn gauge(r: &Registry) -> Option<f64> {
        r.render()
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{CERT_EXPIRY} ")))
            .and_then(|v| v.parse().ok())
    }

    #[tokio::test]
    async fn the_gauge_follows_every_rotation() {
        let anchor = ca::TrustAnchor::generate("cluster.local", Duration::from_secs(86400))
            .expect("an anchor");
        let issuer = ca::Issuer::generate(&anchor, Duration::from_secs(86400)).expect("an issuer");
        let id = Identity::new("cluster.local", "default", "web").expect("an identity");
        let issue = |lifetime| issuer.issue_local(&id, lifetime).expect("a certificate");
        let first = issue(Duration::from_secs(600));
        let want = |c: &Credentials| {
            c.not_after()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs() as f64)
                .ok()
        };
        let first_expiry = want(&first);
        let store = CertStore::with(first);
        let r = Registry::new();
        r.track_cert_expiry(&store);
        assert_eq!(gauge(&r), first_expiry);

        let second = issue(Duration::from_secs(7200));
        let second_expiry = want(&second);
        assert_ne!(first_expiry, second_expiry);
        store.store(second);
        for _ in 0..100 {
            if gauge(&r) == second_expiry {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(gauge(&r), second_expiry, "{}", r.render());
    }
}

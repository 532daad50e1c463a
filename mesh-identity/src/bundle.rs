//! Trust bundles: the anchors a workload trusts, swappable so anchors rotate without downtime.
//!
//! To rotate an anchor: give every workload a bundle with the old and the new anchor, switch the
//! issuer to one signed by the new anchor, wait until every leaf has renewed, then drop the old
//! anchor from the bundle.

use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use rustls_pki_types::CertificateDer;

use crate::cert::{self, PemError};

/// Why anchors do not make a trust bundle.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// The PEM text is unreadable or holds no certificate.
    #[error(transparent)]
    Pem(#[from] PemError),
    /// A certificate is not usable as a trust anchor.
    #[error("certificate {index} is not a usable trust anchor: {reason}")]
    BadAnchor {
        /// Its position in the bundle, from 0.
        index: usize,
        /// Why.
        reason: String,
    },
    /// The bundle holds no anchor.
    #[error("a trust bundle needs at least one anchor")]
    Empty,
}

/// An immutable set of trust anchors, with the verifiers built from them.
pub struct TrustBundle {
    anchors: Vec<CertificateDer<'static>>,
    roots: Arc<RootCertStore>,
    client_verifier: Arc<dyn ClientCertVerifier>,
}

/// A shared, swappable [`TrustBundle`]. TLS verifiers read it on every handshake.
///
/// Cloning is cheap; all clones see the same bundle.
#[derive(Clone)]
pub struct TrustStore {
    current: Arc<ArcSwap<TrustBundle>>,
}

// === impl TrustBundle ===

impl TrustBundle {
    /// A bundle of the given anchors (DER).
    pub fn new(anchors: Vec<CertificateDer<'static>>) -> Result<Self, BundleError> {
        if anchors.is_empty() {
            return Err(BundleError::Empty);
        }
        let mut roots = RootCertStore::empty();
        for (index, anchor) in anchors.iter().enumerate() {
            roots
                .add(anchor.clone())
                .map_err(|e| BundleError::BadAnchor {
                    index,
                    reason: e.to_string(),
                })?;
        }
        let roots = Arc::new(roots);
        let client_verifier =
            WebPkiClientVerifier::builder_with_provider(roots.clone(), crate::tls::provider())
                .build()
                .map_err(|e| BundleError::BadAnchor {
                    index: 0,
                    reason: e.to_string(),
                })?;
        Ok(Self {
            anchors,
            roots,
            client_verifier,
        })
    }

    /// A bundle of every certificate in the PEM text.
    pub fn from_pem(pem: &str) -> Result<Self, BundleError> {
        Self::new(cert::certs_from_pem(pem)?)
    }

    /// The anchors, in order.
    pub fn anchors(&self) -> &[CertificateDer<'static>] {
        &self.anchors
    }

    /// The anchors as PEM.
    pub fn to_pem(&self) -> String {
        cert::certs_to_pem(&self.anchors)
    }

    /// This bundle plus the anchors of `other` not already in it (for anchor rotation).
    pub fn merged(&self, other: &Self) -> Result<Self, BundleError> {
        let mut anchors = self.anchors.clone();
        for a in &other.anchors {
            if !anchors.contains(a) {
                anchors.push(a.clone());
            }
        }
        Self::new(anchors)
    }

    pub(crate) fn roots(&self) -> &RootCertStore {
        &self.roots
    }

    pub(crate) fn client_verifier(&self) -> &Arc<dyn ClientCertVerifier> {
        &self.client_verifier
    }
}

impl std::fmt::Debug for TrustBundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrustBundle")
            .field("anchors", &self.anchors.len())
            .finish_non_exhaustive()
    }
}

// === impl TrustStore ===

impl TrustStore {
    /// A store holding `bundle`.
    pub fn new(bundle: TrustBundle) -> Self {
        Self {
            current: Arc::new(ArcSwap::from_pointee(bundle)),
        }
    }

    /// The current bundle.
    pub fn load(&self) -> Arc<TrustBundle> {
        self.current.load_full()
    }

    /// Replaces the bundle; the next handshake verifies against it.
    pub fn store(&self, bundle: TrustBundle) {
        self.current.store(Arc::new(bundle));
    }
}

impl std::fmt::Debug for TrustStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("TrustStore").field(&self.load()).finish()
    }
}

impl From<TrustBundle> for TrustStore {
    fn from(bundle: TrustBundle) -> Self {
        Self::new(bundle)
    }
}

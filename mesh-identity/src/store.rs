//! The current workload certificate, swappable without locks.
//!
//! A [`CertStore`] holds the workload's current [`Credentials`] in an `arc-swap`. TLS certificate
//! resolvers read it on every handshake, so storing new credentials affects new handshakes only;
//! live connections keep what they negotiated. Subscribers are told of every change.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwapOption;
use mesh_core::identity::Identity;
use rcgen::KeyPair;
use rustls::sign::CertifiedKey;
use rustls_pki_types::CertificateDer;
use tokio::sync::watch;

use crate::cert::{self, Validity};

/// Why a certificate chain and key do not make usable credentials.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    /// The chain is empty.
    #[error("empty certificate chain")]
    EmptyChain,
    /// The leaf does not carry one mesh identity.
    #[error(transparent)]
    Identity(#[from] cert::CertificateIdentityError),
    /// The key is unusable or does not match the leaf.
    #[error("the key does not fit the certificate: {0}")]
    Key(rustls::Error),
}

/// A workload's certificate chain, its private key and what the leaf says.
#[derive(Clone)]
pub struct Credentials {
    certified_key: Arc<CertifiedKey>,
    identity: Identity,
    validity: Validity,
    received: SystemTime,
}

/// The workload's current credentials, shared by TLS configs and the rotation task.
///
/// Cloning is cheap; all clones see the same credentials.
#[derive(Clone, Debug)]
pub struct CertStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    current: ArcSwapOption<Credentials>,
    tx: watch::Sender<Option<Arc<Credentials>>>,
}

// === impl Credentials ===

impl Credentials {
    /// Builds credentials from a chain (leaf first) and a key generated in this process.
    pub fn from_key_pair(
        chain: Vec<CertificateDer<'static>>,
        key: &KeyPair,
    ) -> Result<Self, CredentialsError> {
        let certified =
            CertifiedKey::from_der(chain, crate::ca::key_der(key), &crate::tls::provider())
                .map_err(CredentialsError::Key)?;
        Self::new(certified)
    }

    /// Builds credentials from a rustls `CertifiedKey`, reading the identity and validity from
    /// its leaf.
    pub fn new(certified_key: CertifiedKey) -> Result<Self, CredentialsError> {
        let leaf = certified_key
            .cert
            .first()
            .ok_or(CredentialsError::EmptyChain)?;
        let identity = cert::identity_of(leaf)?;
        let validity = cert::validity_of(leaf)?;
        Ok(Self {
            certified_key: Arc::new(certified_key),
            identity,
            validity,
            received: SystemTime::now(),
        })
    }

    /// The chain and key, as rustls resolvers hand them out.
    pub fn certified_key(&self) -> &Arc<CertifiedKey> {
        &self.certified_key
    }

    /// The chain, leaf first.
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.certified_key.cert
    }

    /// The chain as PEM, leaf first.
    pub fn chain_pem(&self) -> String {
        cert::certs_to_pem(self.chain())
    }

    /// The identity the leaf carries.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The leaf's `notBefore`.
    pub fn not_before(&self) -> SystemTime {
        self.validity.not_before
    }

    /// The leaf's `notAfter`.
    pub fn not_after(&self) -> SystemTime {
        self.validity.not_after
    }

    /// The leaf's whole lifetime, `notAfter - notBefore`.
    pub fn lifetime(&self) -> Duration {
        self.validity
            .not_after
            .duration_since(self.validity.not_before)
            .unwrap_or_default()
    }

    /// The instant at `fraction` (0.0–1.0) of the usable lifetime, e.g. 0.7 for the renewal
    /// point. The usable lifetime starts when these credentials were made, or at `notBefore` if
    /// that is later: issuers backdate `notBefore` for clock skew, and counting that slack
    /// would renew short-lived certificates too early.
    pub fn at_fraction(&self, fraction: f64) -> SystemTime {
        let start = self.validity.not_before.max(self.received);
        let usable = self
            .validity
            .not_after
            .duration_since(start)
            .unwrap_or_default();
        start + usable.mul_f64(fraction.clamp(0.0, 1.0))
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.debug_struct("Credentials")
            .field("identity", &self.identity.to_string())
            .field("validity", &self.validity)
            .finish_non_exhaustive()
    }
}

// === impl CertStore ===

impl CertStore {
    /// An empty store: TLS handshakes fail until credentials are stored.
    pub fn new() -> Self {
        let (tx, _) = watch::channel(None);
        Self {
            inner: Arc::new(Inner {
                current: ArcSwapOption::empty(),
                tx,
            }),
        }
    }

    /// A store holding `creds`.
    pub fn with(creds: Credentials) -> Self {
        let store = Self::new();
        store.store(creds);
        store
    }

    /// The current credentials, if any.
    pub fn current(&self) -> Option<Arc<Credentials>> {
        self.inner.current.load_full()
    }

    /// The current chain and key, for TLS resolvers.
    pub fn certified_key(&self) -> Option<Arc<CertifiedKey>> {
        self.inner
            .current
            .load()
            .as_ref()
            .map(|c| c.certified_key.clone())
    }

    /// Replaces the credentials. New handshakes use them at once; live connections are untouched.
    pub fn store(&self, creds: Credentials) {
        let creds = Arc::new(creds);
        self.inner.current.store(Some(creds.clone()));
        self.inner.tx.send_replace(Some(creds));
    }

    /// A receiver that sees every change of credentials.
    pub fn subscribe(&self) -> watch::Receiver<Option<Arc<Credentials>>> {
        self.inner.tx.subscribe()
    }
}

impl Default for CertStore {
    fn default() -> Self {
        Self::new()
    }
}

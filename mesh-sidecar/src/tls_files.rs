//! A serving certificate read from a directory's `tls.crt` and `tls.key`, as a
//! `kubernetes.io/tls` Secret mounts them, and read again when they change.
//!
//! When the Secret is rotated (a re-run `mesh install`, cert-manager) the kubelet swaps the
//! files in place; new handshakes then get the new certificate without a restart, and live
//! connections keep the one they began with. The workload certificate store of mesh-identity
//! does not fit here: it holds mesh identities, and a webhook certificate names DNS hosts.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

const CERT_FILE: &str = "tls.crt";
const KEY_FILE: &str = "tls.key";

/// Why the certificate files could not be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TlsFilesError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Pem {
        path: PathBuf,
        source: rustls_pki_types::pem::Error,
    },
    #[error("{dir}: {source}")]
    Key { dir: PathBuf, source: rustls::Error },
}

/// The current certificate of `dir`; answers every ClientHello with it.
pub(crate) struct TlsFiles {
    dir: PathBuf,
    current: ArcSwap<CertifiedKey>,
    /// The bytes the current certificate was made from: a change is a change of content, which
    /// neither clock granularity nor the kubelet's symlink swap can hide.
    loaded: Mutex<(Vec<u8>, Vec<u8>)>,
}

// === impl TlsFiles ===

impl TlsFiles {
    /// Reads `dir`'s certificate and key; they must be usable now.
    pub(crate) fn load(dir: &Path) -> Result<Self, TlsFilesError> {
        let files = read(dir)?;
        let key = certified_key(dir, &files)?;
        Ok(Self {
            dir: dir.to_owned(),
            current: ArcSwap::from_pointee(key),
            loaded: Mutex::new(files),
        })
    }

    /// Reads the files again; swaps in their certificate if they changed and are usable.
    /// Returns whether it swapped. A half-written or bad pair keeps the current certificate
    /// serving and is an error, so it can be logged.
    pub(crate) fn reload(&self) -> Result<bool, TlsFilesError> {
        let files = read(&self.dir)?;
        if *self.loaded.lock() == files {
            return Ok(false);
        }
        let key = certified_key(&self.dir, &files)?;
        self.current.store(Arc::new(key));
        *self.loaded.lock() = files;
        Ok(true)
    }

    /// Looks at the files every `every`, for as long as the runtime runs.
    pub(crate) fn watch(self: &Arc<Self>, every: Duration) {
        let this = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let look = this.clone();
                match tokio::task::spawn_blocking(move || look.reload()).await {
                    Ok(Ok(true)) => {
                        tracing::info!(dir = %this.dir.display(), "serving certificate reloaded");
                    }
                    Ok(Ok(false)) => {}
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "cannot reload the serving certificate; the current one keeps serving");
                    }
                    Err(e) => tracing::error!(error = %e, "certificate reload failed"),
                }
            }
        });
    }
}

impl ResolvesServerCert for TlsFiles {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

impl std::fmt::Debug for TlsFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("TlsFiles")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

fn read(dir: &Path) -> Result<(Vec<u8>, Vec<u8>), TlsFilesError> {
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read(&path).map_err(|source| TlsFilesError::Read { path, source })
    };
    Ok((read(CERT_FILE)?, read(KEY_FILE)?))
}

fn certified_key(
    dir: &Path,
    (crt, key): &(Vec<u8>, Vec<u8>),
) -> Result<CertifiedKey, TlsFilesError> {
    let pem = |name: &str| {
        let path = dir.join(name);
        move |source| TlsFilesError::Pem { path, source }
    };
    let certs = CertificateDer::pem_slice_iter(crt)
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem(CERT_FILE))?;
    let key = PrivateKeyDer::from_pem_slice(key).map_err(pem(KEY_FILE))?;
    // from_der checks that the key belongs to the certificate: a pair caught mid-rotation
    // (new certificate, old key) is refused rather than served.
    CertifiedKey::from_der(certs, key, &rustls::crypto::ring::default_provider()).map_err(
        |source| TlsFilesError::Key {
            dir: dir.to_owned(),
            source,
        },
    )
}

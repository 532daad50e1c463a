//! A workload's certificate for the `mesh` binary's mTLS servers and clients (`mesh proxy`,
//! `mesh controller`): from files (`mesh identity issue`), or from the issuer, renewed as it
//! ages.

use std::path::{Path, PathBuf};

use mesh_identity::{CertStore, TrustBundle, TrustStore};
use tokio::sync::watch;

use crate::identity::IssuerAccount;

/// A workload certificate with its trust anchors, and its rotation when an issuer renews it.
pub(crate) type LoadedIdentity = (
    CertStore,
    TrustStore,
    Option<mesh_identity::rotate::Rotation>,
);

/// The identity flags of a command that serves or calls over mesh mTLS as a workload
/// (`mesh controller`; `mesh proxy` has the same flags in its own arguments).
#[derive(Clone, Debug, clap::Args)]
pub(crate) struct IdentityArgs {
    /// A directory with tls.crt (leaf, then issuer), tls.key and ca.crt, as
    /// `mesh identity issue` writes them.
    #[arg(long, env = "MESH_IDENTITY_DIR", value_name = "DIR")]
    pub(crate) identity_dir: Option<PathBuf>,
    /// The issuer, https://host:port or host:port; the certificate is requested and renewed
    /// from it.
    #[arg(
        long,
        env = "MESH_IDENTITY_ADDR",
        value_name = "URL",
        conflicts_with = "identity_dir"
    )]
    pub(crate) identity_issuer: Option<String>,
    /// The token that entitles this workload to its identity.
    #[arg(long, env = "MESH_IDENTITY_TOKEN_FILE", value_name = "FILE")]
    pub(crate) identity_token_file: Option<PathBuf>,
    /// The trust anchors (PEM file), for the issuer and for peers.
    #[arg(long, env = "MESH_TRUST_ANCHORS_FILE", value_name = "PEM")]
    pub(crate) trust_anchors: Option<PathBuf>,
    /// The trust anchors themselves, PEM text (how the injector hands them to pods).
    #[arg(
        long,
        env = "MESH_TRUST_ANCHORS",
        value_name = "PEM",
        conflicts_with = "trust_anchors",
        hide_env_values = true,
        // PEM begins with "-----BEGIN": a value, not a flag.
        allow_hyphen_values = true
    )]
    pub(crate) trust_anchors_pem: Option<String>,
    /// The namespace and service account the issuer runs as; its certificate must name them.
    /// Default: <control-namespace>/identity.
    #[arg(
        long,
        env = "MESH_IDENTITY_SERVICE_ACCOUNT",
        value_name = "NAMESPACE/NAME"
    )]
    pub(crate) identity_service_account: Option<IssuerAccount>,
    /// The trust domain.
    #[arg(long, env = "MESH_TRUST_DOMAIN", default_value = mesh_core::identity::DEFAULT_TRUST_DOMAIN)]
    pub(crate) trust_domain: String,
    /// The control-plane namespace in DNS-form identities.
    #[arg(long, env = "MESH_CONTROL_NAMESPACE", default_value = mesh_core::identity::DEFAULT_CONTROL_NAMESPACE)]
    pub(crate) control_namespace: String,
}

/// Where a workload's certificate comes from: the flags its command was given.
#[derive(Debug)]
pub(crate) struct Source<'a> {
    /// A directory with tls.crt (leaf, then issuer), tls.key and ca.crt.
    pub(crate) dir: Option<&'a Path>,
    /// The issuer, https://host:port or host:port.
    pub(crate) issuer: Option<&'a str>,
    pub(crate) token_file: Option<&'a Path>,
    pub(crate) trust_anchors: Option<&'a Path>,
    pub(crate) trust_anchors_pem: Option<&'a str>,
    pub(crate) issuer_account: Option<&'a IssuerAccount>,
    pub(crate) trust_domain: &'a str,
    pub(crate) control_namespace: &'a str,
}

// === impl IdentityArgs ===

impl IdentityArgs {
    pub(crate) fn source(&self) -> Source<'_> {
        Source {
            dir: self.identity_dir.as_deref(),
            issuer: self.identity_issuer.as_deref(),
            token_file: self.identity_token_file.as_deref(),
            trust_anchors: self.trust_anchors.as_deref(),
            trust_anchors_pem: self.trust_anchors_pem.as_deref(),
            issuer_account: self.identity_service_account.as_ref(),
            trust_domain: &self.trust_domain,
            control_namespace: &self.control_namespace,
        }
    }
}

// === impl Source ===

impl Source<'_> {
    /// Loads the certificate; `None` when neither files nor an issuer are given. Waits for the
    /// issuer (with backoff) until it answers or `shutdown`.
    pub(crate) async fn load(
        &self,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<Option<LoadedIdentity>, String> {
        if let Some(dir) = self.dir {
            return load_dir(dir).map(Some);
        }
        let Some(url) = self.issuer else {
            return Ok(None);
        };
        // `mesh inject` gives the issuer as host:port (MESH_IDENTITY_ADDR); it speaks only https.
        let url = &if url.contains("://") {
            url.to_owned()
        } else {
            format!("https://{url}")
        };
        let Some(token_file) = self.token_file else {
            return Err("--identity-issuer needs --identity-token-file".to_owned());
        };
        let trust = self.trust()?;
        let issuer_id = IssuerAccount::identity_of(
            self.issuer_account,
            self.trust_domain,
            self.control_namespace,
        )
        .map_err(|e| e.to_string())?;
        let mut attempt = 0u32;
        loop {
            // The token may be rotated by the kubelet: read it for every attempt.
            let token = std::fs::read_to_string(token_file)
                .map_err(|e| format!("{}: {e}", token_file.display()))?;
            let client =
                mesh_identity::client::IssuerClient::new(url, &issuer_id, trust.clone(), &token)
                    .map_err(|e| e.to_string())?;
            let config = mesh_identity::rotate::RotationConfig::default();
            let wait = config.backoff(attempt);
            match mesh_identity::rotate::Rotation::start(client, config).await {
                Ok(rotation) => {
                    let store = rotation.store().clone();
                    if let Some(c) = store.current() {
                        tracing::info!(identity = %c.identity(), "identity issued");
                    }
                    return Ok(Some((store, trust, Some(rotation))));
                }
                Err(e) => {
                    // With its causes: "cannot reach the issuer" alone hides an issuer that
                    // answered under another name than --identity-service-account.
                    let why = format!("{:#}", anyhow::Error::new(e));
                    tracing::warn!(error = %why, retry_in = ?wait, "cannot get a certificate from the issuer");
                    attempt += 1;
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = crate::proxy::stopped(shutdown) => return Err("shut down before an identity was issued".to_owned()),
                    }
                }
            }
        }
    }

    /// The trust anchors, from the PEM text or the file.
    fn trust(&self) -> Result<TrustStore, String> {
        let (pem, source) = match (self.trust_anchors_pem, self.trust_anchors) {
            (Some(pem), _) => (pem.to_owned(), "MESH_TRUST_ANCHORS".to_owned()),
            (None, Some(file)) => (
                std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?,
                file.display().to_string(),
            ),
            (None, None) => {
                return Err(
                    "--identity-issuer needs --trust-anchors or --trust-anchors-pem".to_owned(),
                );
            }
        };
        let bundle = TrustBundle::from_pem(&pem).map_err(|e| format!("{source}: {e}"))?;
        Ok(TrustStore::new(bundle))
    }
}

/// A certificate from files, as `mesh identity issue` writes them; not renewed.
pub(crate) fn load_dir(dir: &Path) -> Result<LoadedIdentity, String> {
    let read = |f: &str| {
        std::fs::read_to_string(dir.join(f)).map_err(|e| format!("{}: {e}", dir.join(f).display()))
    };
    let chain = mesh_identity::cert::certs_from_pem(&read("tls.crt")?)
        .map_err(|e| format!("tls.crt: {e}"))?;
    let key = rcgen::KeyPair::from_pem(&read("tls.key")?).map_err(|e| format!("tls.key: {e}"))?;
    let creds = mesh_identity::Credentials::from_key_pair(chain, &key)
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    let trust = TrustBundle::from_pem(&read("ca.crt")?).map_err(|e| format!("ca.crt: {e}"))?;
    tracing::info!(identity = %creds.identity(), "identity loaded from files");
    Ok((CertStore::with(creds), TrustStore::new(trust), None))
}

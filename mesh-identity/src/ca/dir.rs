//! A CA on disk: `mesh identity init`'s directory, written with keys private (0600) and
//! never over an existing file unless asked.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::{
    CaError, DEFAULT_ANCHOR_LIFETIME, DEFAULT_ISSUER_LIFETIME, InitConfig, Issuer, TrustAnchor,
    check_trust_domain, files,
};

// === impl InitConfig ===

impl InitConfig {
    /// Defaults: 365-day anchor, 180-day issuer, no overwrite.
    pub fn new(trust_domain: impl Into<String>) -> Self {
        Self {
            trust_domain: trust_domain.into(),
            anchor_lifetime: DEFAULT_ANCHOR_LIFETIME,
            issuer_lifetime: DEFAULT_ISSUER_LIFETIME,
            force: false,
        }
    }
}

/// Writes a new anchor and issuer to `dir` as `ca.crt`, `ca.key`, `issuer.crt`, `issuer.key`.
///
/// Key files are created with mode 0600. Existing files are never overwritten unless
/// `config.force` is set; without it, nothing is written if any of the four exists.
/// Returns the paths written.
pub fn init_dir(dir: &Path, config: &InitConfig) -> Result<Vec<PathBuf>, CaError> {
    check_trust_domain(&config.trust_domain)?;
    let names = [
        files::ANCHOR_CERT,
        files::ANCHOR_KEY,
        files::ISSUER_CERT,
        files::ISSUER_KEY,
    ];
    if !config.force
        && let Some(existing) = names.iter().map(|n| dir.join(n)).find(|p| p.exists())
    {
        return Err(CaError::Write {
            path: existing,
            reason: "already exists; pass --force to overwrite it".into(),
        });
    }
    let anchor = TrustAnchor::generate(&config.trust_domain, config.anchor_lifetime)?;
    let issuer = Issuer::generate(&anchor, config.issuer_lifetime)?;
    fs::create_dir_all(dir).map_err(|e| CaError::Write {
        path: dir.to_owned(),
        reason: e.to_string(),
    })?;
    let contents = [
        (files::ANCHOR_CERT, anchor.cert_pem(), false),
        (files::ANCHOR_KEY, anchor.key_pem(), true),
        (files::ISSUER_CERT, issuer.cert_pem(), false),
        (files::ISSUER_KEY, issuer.key_pem().to_owned(), true),
    ];
    let mut written = Vec::new();
    for (name, text, secret) in contents {
        let path = dir.join(name);
        write_file(&path, text.as_bytes(), secret, config.force)?;
        written.push(path);
    }
    Ok(written)
}

/// Writes `data` to `path`; secrets get mode 0600 from creation on, so a key is never readable
/// by others, not even for a moment.
pub fn write_file(path: &Path, data: &[u8], secret: bool, overwrite: bool) -> Result<(), CaError> {
    let err = |e: std::io::Error| CaError::Write {
        path: path.to_owned(),
        reason: e.to_string(),
    };
    let mut opts = fs::OpenOptions::new();
    opts.write(true);
    if overwrite {
        opts.create(true).truncate(true);
    } else {
        opts.create_new(true);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(if secret { 0o600 } else { 0o644 });
    }
    let mut f = opts.open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            CaError::Write {
                path: path.to_owned(),
                reason: "already exists; pass --force to overwrite it".into(),
            }
        } else {
            err(e)
        }
    })?;
    #[cfg(unix)]
    if secret {
        // An overwritten file keeps its old mode; tighten it.
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(fs::Permissions::from_mode(0o600))
            .map_err(err)?;
    }
    f.write_all(data).map_err(err)?;
    f.sync_all().map_err(err)
}

pub(crate) fn read_file(path: &Path) -> Result<String, CaError> {
    fs::read_to_string(path).map_err(|e| CaError::Load {
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

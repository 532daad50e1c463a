//! The certificates the control plane is installed with: the trust anchor and issuer (made
//! as `mesh identity init` makes them, or read from `--identity-dir`) and the injector's
//! webhook CA and serving certificate.

use std::path::Path;

use mesh_identity::ca;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use super::{INJECTOR, InstallError};

/// The certificates and keys the control plane is installed with, PEM.
#[derive(Clone, Debug, Default)]
pub(crate) struct Pki {
    /// The trust domain the issuer signs for (`--trust-domain`, or the one `--identity-dir`'s
    /// issuer certificate names): the injector hands it to every proxy, so the identities they
    /// expect match the certificates the issuer signs.
    pub(crate) trust_domain: String,
    pub(crate) trust_anchors: String,
    pub(crate) issuer_crt: String,
    pub(crate) issuer_key: String,
    pub(crate) webhook_ca: String,
    pub(crate) webhook_crt: String,
    pub(crate) webhook_key: String,
}

// === impl Pki ===

impl Pki {
    /// Reads the identity from `identity_dir`, or makes an anchor and issuer; always makes
    /// the webhook's CA and serving certificate.
    pub(crate) fn new(
        identity_dir: Option<&Path>,
        trust_domain: &str,
        namespace: &str,
    ) -> Result<Self, InstallError> {
        let now = time::OffsetDateTime::now_utc();
        let (trust_anchors, issuer_crt, issuer_key, trust_domain) = match identity_dir {
            Some(dir) => {
                let read = |f: &str| {
                    let path = dir.join(f);
                    std::fs::read_to_string(&path)
                        .map_err(|source| InstallError::Read { path, source })
                };
                let (crt, key) = (read("issuer.crt")?, read("issuer.key")?);
                // Refused here, not by a crash-looping issuer after the install is applied.
                let trust_domain = ca::Issuer::from_pem(&crt, &key)
                    .map_err(|source| InstallError::Issuer {
                        dir: dir.to_owned(),
                        source,
                    })?
                    .trust_domain()
                    .to_owned();
                (read("ca.crt")?, crt, key, trust_domain)
            }
            None => {
                // The anchor and issuer `mesh identity init` writes, made by the same code: the
                // issuer then carries the spiffe://<trust-domain> SAN `identity serve` requires.
                let anchor = ca::TrustAnchor::generate(trust_domain, ca::DEFAULT_ANCHOR_LIFETIME)?;
                let issuer = ca::Issuer::generate(&anchor, ca::DEFAULT_ISSUER_LIFETIME)?;
                (
                    anchor.cert_pem(),
                    issuer.cert_pem(),
                    issuer.key_pem().to_owned(),
                    trust_domain.to_owned(),
                )
            }
        };

        let ca_key = KeyPair::generate()?;
        let ca_params = webhook_ca_params(&format!("{INJECTOR}.{namespace} webhook CA"), now);
        let ca_crt = ca_params.self_signed(&ca_key)?;
        let webhook_ca = Issuer::new(ca_params, ca_key);
        let host = format!("{INJECTOR}.{namespace}.svc");
        let mut leaf = CertificateParams::new(vec![host.clone(), format!("{host}.cluster.local")])?;
        leaf.distinguished_name.push(DnType::CommonName, host);
        leaf.not_before = now - time::Duration::minutes(5);
        leaf.not_after = now + time::Duration::days(365);
        leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let leaf_key = KeyPair::generate()?;
        let leaf_crt = leaf.signed_by(&leaf_key, &webhook_ca)?;

        Ok(Self {
            trust_domain,
            trust_anchors,
            issuer_crt,
            issuer_key,
            webhook_ca: ca_crt.pem(),
            webhook_crt: leaf_crt.pem(),
            webhook_key: leaf_key.serialize_pem(),
        })
    }
}

/// The webhook's CA signs one serving certificate and nothing else: path length 0.
fn webhook_ca_params(cn: &str, now: time::OffsetDateTime) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    // A little slack for clocks that run behind ours.
    p.not_before = now - time::Duration::minutes(5);
    p.not_after = now + time::Duration::days(365);
    p
}

//! Trust anchors and issuers: the certificate authorities of a mesh.
//!
//! A [`TrustAnchor`] (root) signs an [`Issuer`] (intermediate); the issuer signs short-lived
//! workload certificates. Both carry the trust domain as a `spiffe://<trust-domain>` URI SAN, as
//! SPIFFE bundles do, so the issuer service learns its trust domain from its own certificate.
//! Keys are ECDSA P-256.
//!
//! ```
//! use std::time::Duration;
//! use mesh_identity::ca::{Issuer, TrustAnchor};
//! use mesh_identity::Identity;
//!
//! let anchor = TrustAnchor::generate("cluster.local", Duration::from_secs(365 * 86400))?;
//! let issuer = Issuer::generate(&anchor, Duration::from_secs(180 * 86400))?;
//! assert_eq!(issuer.trust_domain(), "cluster.local");
//!
//! let id = Identity::new("cluster.local", "emojivoto", "web")?;
//! let creds = issuer.issue_local(&id, Duration::from_secs(3600))?;
//! assert_eq!(creds.identity(), &id);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use mesh_core::identity::{DEFAULT_CONTROL_NAMESPACE, Identity};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, PublicKeyData, SanType, SerialNumber,
    SignatureAlgorithm,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use time::OffsetDateTime;
use x509_parser::oid_registry::{OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY};

use crate::cert::{self, Validity};
use crate::store::Credentials;

mod dir;

pub(crate) use dir::read_file;
pub use dir::{init_dir, write_file};

/// Default lifetime of a trust anchor.
pub const DEFAULT_ANCHOR_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);
/// Default lifetime of an issuer certificate.
pub const DEFAULT_ISSUER_LIFETIME: Duration = Duration::from_secs(180 * 24 * 3600);
/// Default lifetime of a workload (leaf) certificate.
pub const DEFAULT_LEAF_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// How far in the past a leaf's `notBefore` lies, so peers with a slightly slow clock accept it.
pub const CLOCK_SKEW_ALLOWANCE: Duration = Duration::from_secs(20);

/// File names `mesh identity init` writes and `mesh identity serve` reads.
pub mod files {
    /// The trust anchor certificate (the trust bundle workloads are given).
    pub const ANCHOR_CERT: &str = "ca.crt";
    /// The trust anchor's private key.
    pub const ANCHOR_KEY: &str = "ca.key";
    /// The issuer certificate, signed by the anchor.
    pub const ISSUER_CERT: &str = "issuer.crt";
    /// The issuer's private key.
    pub const ISSUER_KEY: &str = "issuer.key";
}

/// Why a certificate authority could not be created, loaded or used.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// The trust domain is not a DNS name.
    #[error("invalid trust domain {0:?}: a trust domain is a lowercase DNS name")]
    InvalidTrustDomain(String),
    /// Generating or signing failed in the certificate library.
    #[error("certificate generation failed")]
    Generate(#[from] rcgen::Error),
    /// A certificate or key file could not be read or parsed.
    #[error("{path}: {reason}")]
    Load {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Writing a file failed, or it exists and `force` was not given.
    #[error("{path}: {reason}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A certificate is not a usable CA certificate.
    #[error("not a usable CA certificate: {0}")]
    Certificate(String),
    /// The issuer certificate does not say which trust domain it belongs to.
    #[error("the issuer certificate carries no spiffe://<trust-domain> URI SAN")]
    NoTrustDomain,
    /// The signed certificate could not be turned into TLS credentials.
    #[error("could not build TLS credentials: {0}")]
    Credentials(String),
}

/// Why a certificate signing request was refused. The issuer service maps each to a status code.
#[derive(Debug, thiserror::Error)]
pub enum CsrError {
    /// The body is not a PEM or DER encoded PKCS#10 request, or its signature does not verify.
    #[error("invalid certificate signing request: {0}")]
    Malformed(String),
    /// The request's key is not ECDSA P-256.
    #[error("unsupported key type: {0}; the mesh issues certificates for ECDSA P-256 keys only")]
    WrongKeyType(String),
    /// The request asks for a name other than the identity the caller is entitled to.
    #[error("the request asks for {requested:?} but the token entitles the caller to {entitled}")]
    IdentityNotAllowed {
        /// The name the CSR asked for.
        requested: String,
        /// The identity the caller may have.
        entitled: Identity,
    },
    /// Signing failed.
    #[error("signing failed")]
    Sign(#[from] rcgen::Error),
}

/// A self-signed root of trust for one trust domain.
pub struct TrustAnchor {
    cert: CertificateDer<'static>,
    issuer: rcgen::Issuer<'static, KeyPair>,
}

/// An issuer: a certificate authority, signed by a trust anchor, that signs workload certificates.
///
/// Signing is synchronous and CPU-bound (about a hundred microseconds); an issuer is `Send +
/// Sync` and is shared behind an `Arc`.
pub struct Issuer {
    issuer: rcgen::Issuer<'static, KeyPair>,
    cert: CertificateDer<'static>,
    key_pem: String,
    trust_domain: String,
    validity: Validity,
    control_namespace: String,
}

/// Options for [`init_dir`].
#[derive(Clone, Debug)]
pub struct InitConfig {
    /// The trust domain, e.g. `cluster.local`.
    pub trust_domain: String,
    /// Lifetime of the trust anchor.
    pub anchor_lifetime: Duration,
    /// Lifetime of the issuer certificate.
    pub issuer_lifetime: Duration,
    /// Overwrite existing files.
    pub force: bool,
}

/// A public key taken from a CSR, in the form the signer needs.
struct CsrKey(Vec<u8>);

// === impl TrustAnchor ===

impl TrustAnchor {
    /// Generates a new self-signed anchor for `trust_domain`, valid from now for `lifetime`.
    pub fn generate(trust_domain: &str, lifetime: Duration) -> Result<Self, CaError> {
        check_trust_domain(trust_domain)?;
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut params = ca_params(trust_domain, "mesh trust anchor", lifetime)?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key)?.der().clone();
        Ok(Self {
            cert,
            issuer: rcgen::Issuer::new(params, key),
        })
    }

    /// Loads an anchor from its certificate and key PEM, e.g. to sign a new issuer with it.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, CaError> {
        let key = KeyPair::from_pem(key_pem)?;
        let cert = first_cert(cert_pem, Path::new(files::ANCHOR_CERT))?;
        let issuer = rcgen::Issuer::from_ca_cert_der(&cert, key)?;
        Ok(Self { cert, issuer })
    }

    /// The anchor certificate, DER.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert
    }

    /// The anchor certificate, PEM.
    pub fn cert_pem(&self) -> String {
        cert::certs_to_pem(std::slice::from_ref(&self.cert))
    }

    /// The anchor's private key, PKCS#8 PEM.
    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }
}

// === impl Issuer ===

impl Issuer {
    /// Generates a new issuer signed by `anchor`, valid from now for `lifetime`.
    pub fn generate(anchor: &TrustAnchor, lifetime: Duration) -> Result<Self, CaError> {
        let td = anchor_trust_domain(anchor.cert_der())?;
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut params = ca_params(&td, "mesh issuer", lifetime)?;
        // An issuer signs leaves only, never another CA.
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &anchor.issuer)?;
        Self::from_parts(cert.der().clone(), key)
    }

    /// Loads an issuer from its certificate and key PEM (the files `mesh identity init` writes).
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, CaError> {
        let key = KeyPair::from_pem(key_pem)?;
        let der = first_cert(cert_pem, Path::new(files::ISSUER_CERT))?;
        Self::from_parts(der, key)
    }

    /// Loads `issuer.crt` and `issuer.key` from `dir`.
    pub fn load_dir(dir: &Path) -> Result<Self, CaError> {
        let cert_path = dir.join(files::ISSUER_CERT);
        let key_path = dir.join(files::ISSUER_KEY);
        let cert = read_file(&cert_path)?;
        let key = KeyPair::from_pem(&read_file(&key_path)?).map_err(|e| CaError::Load {
            path: key_path,
            reason: format!("not a PEM private key: {e}"),
        })?;
        let der = first_cert(&cert, &cert_path)?;
        Self::from_parts(der, key).map_err(|e| match e {
            CaError::Certificate(_) | CaError::NoTrustDomain | CaError::Generate(_) => {
                CaError::Load {
                    path: cert_path,
                    reason: e.to_string(),
                }
            }
            other => other,
        })
    }

    fn from_parts(der: CertificateDer<'static>, key: KeyPair) -> Result<Self, CaError> {
        let trust_domain = anchor_trust_domain(&der)?;
        let validity = cert::validity_of(&der).map_err(|e| CaError::Certificate(e.to_string()))?;
        let key_pem = key.serialize_pem();
        let issuer = rcgen::Issuer::from_ca_cert_der(&der, key)?;
        Ok(Self {
            issuer,
            cert: der,
            key_pem,
            trust_domain,
            validity,
            control_namespace: DEFAULT_CONTROL_NAMESPACE.to_owned(),
        })
    }

    /// Sets the control namespace used in the DNS-form SAN of issued certificates
    /// (default `linkerd`).
    pub fn with_control_namespace(mut self, control_namespace: impl Into<String>) -> Self {
        self.control_namespace = control_namespace.into();
        self
    }

    /// The trust domain this issuer signs for.
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// The control namespace used in DNS-form SANs.
    pub fn control_namespace(&self) -> &str {
        &self.control_namespace
    }

    /// The issuer certificate, DER.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert
    }

    /// The issuer certificate, PEM.
    pub fn cert_pem(&self) -> String {
        cert::certs_to_pem(std::slice::from_ref(&self.cert))
    }

    /// The issuer's private key, PKCS#8 PEM.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// When the issuer certificate expires; no leaf outlives it.
    pub fn not_after(&self) -> SystemTime {
        self.validity.not_after
    }

    /// Signs a PKCS#10 request (PEM or DER) for `entitled`, the identity the caller proved.
    ///
    /// The leaf carries exactly `entitled` (SPIFFE URI SAN and DNS-form DNS SAN), whatever the
    /// request's subject says; a request whose SANs name anything else is refused with
    /// [`CsrError::IdentityNotAllowed`]. Returns the chain, leaf then issuer.
    pub fn sign_csr(
        &self,
        csr: &[u8],
        entitled: &Identity,
        lifetime: Duration,
    ) -> Result<Vec<CertificateDer<'static>>, CsrError> {
        let der = csr_der(csr)?;
        let key = self.check_csr(&der, entitled)?;
        let leaf = self.sign_leaf(&key, entitled, lifetime)?;
        Ok(vec![leaf, self.cert.clone()])
    }

    /// Issues credentials for `identity` in-process: generates a key, signs it, and returns
    /// the key and chain ready for rustls. The issuer service uses this for its own serving
    /// certificate; tests and benches use it to skip HTTP.
    pub fn issue_local(
        &self,
        identity: &Identity,
        lifetime: Duration,
    ) -> Result<Credentials, CaError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let leaf = self.sign_leaf(&key, identity, lifetime)?;
        Credentials::from_key_pair(vec![leaf, self.cert.clone()], &key)
            .map_err(|e| CaError::Credentials(e.to_string()))
    }

    fn check_csr(&self, der: &[u8], entitled: &Identity) -> Result<CsrKey, CsrError> {
        use x509_parser::certification_request::X509CertificationRequest;
        use x509_parser::extensions::{GeneralName, ParsedExtension};
        use x509_parser::prelude::FromDer;

        let (rest, csr) = X509CertificationRequest::from_der(der)
            .map_err(|e| CsrError::Malformed(e.to_string()))?;
        if !rest.is_empty() {
            return Err(CsrError::Malformed(
                "trailing bytes after the request".into(),
            ));
        }
        let spki = &csr.certification_request_info.subject_pki;
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok());
        if spki.algorithm.algorithm != OID_KEY_TYPE_EC_PUBLIC_KEY
            || curve.as_ref() != Some(&OID_EC_P256)
        {
            let what = match &curve {
                Some(c) => format!("{} with parameters {c}", spki.algorithm.algorithm),
                None => spki.algorithm.algorithm.to_string(),
            };
            return Err(CsrError::WrongKeyType(what));
        }
        csr.verify_signature()
            .map_err(|e| CsrError::Malformed(format!("signature does not verify: {e}")))?;

        let spiffe = entitled.to_spiffe();
        let dns = entitled.to_dns(&self.control_namespace);
        for ext in csr.requested_extensions().into_iter().flatten() {
            let ParsedExtension::SubjectAlternativeName(san) = ext else {
                continue;
            };
            for name in &san.general_names {
                let ok = match name {
                    GeneralName::URI(u) => *u == spiffe,
                    GeneralName::DNSName(d) => {
                        Identity::parse(d).is_ok_and(|id| id == *entitled) || *d == dns
                    }
                    _ => false,
                };
                if !ok {
                    return Err(CsrError::IdentityNotAllowed {
                        requested: name.to_string(),
                        entitled: entitled.clone(),
                    });
                }
            }
        }
        Ok(CsrKey(spki.subject_public_key.data.to_vec()))
    }

    fn sign_leaf(
        &self,
        key: &impl PublicKeyData,
        id: &Identity,
        lifetime: Duration,
    ) -> Result<CertificateDer<'static>, rcgen::Error> {
        let now = SystemTime::now();
        let not_after = (now + lifetime).min(self.validity.not_after);
        let dns = id.to_dns(&self.control_namespace);
        let mut params = CertificateParams::default();
        params.not_before = to_offset(now - CLOCK_SKEW_ALLOWANCE);
        params.not_after = to_offset(not_after);
        params.serial_number = Some(random_serial()?);
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, dns.clone());
        params.distinguished_name = dn;
        params.subject_alt_names = vec![
            SanType::URI(id.to_spiffe().try_into()?),
            SanType::DnsName(dns.try_into()?),
        ];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        Ok(params.signed_by(key, &self.issuer)?.der().clone())
    }
}

impl std::fmt::Debug for Issuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issuer")
            .field("trust_domain", &self.trust_domain)
            .field("validity", &self.validity)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for TrustAnchor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrustAnchor").finish_non_exhaustive()
    }
}

// === impl CsrKey ===

impl PublicKeyData for CsrKey {
    fn der_bytes(&self) -> &[u8] {
        &self.0
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        &PKCS_ECDSA_P256_SHA256
    }
}

/// Accepts a CSR as PEM (`CERTIFICATE REQUEST` or `NEW CERTIFICATE REQUEST`) or raw DER.
fn csr_der(body: &[u8]) -> Result<Vec<u8>, CsrError> {
    use rustls_pki_types::CertificateSigningRequestDer;
    use rustls_pki_types::pem::PemObject;

    if body.first() == Some(&0x30) {
        return Ok(body.to_vec());
    }
    CertificateSigningRequestDer::from_pem_slice(body)
        .map(|d| d.as_ref().to_vec())
        .map_err(|e| CsrError::Malformed(format!("not a PEM CERTIFICATE REQUEST: {e}")))
}

fn ca_params(
    trust_domain: &str,
    common_name: &str,
    lifetime: Duration,
) -> Result<CertificateParams, rcgen::Error> {
    let now = SystemTime::now();
    let mut params = CertificateParams::default();
    params.not_before = to_offset(now - CLOCK_SKEW_ALLOWANCE);
    params.not_after = to_offset(now + lifetime);
    params.serial_number = Some(random_serial()?);
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, trust_domain);
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    params.subject_alt_names = vec![SanType::URI(format!("spiffe://{trust_domain}").try_into()?)];
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(params)
}

fn check_trust_domain(td: &str) -> Result<(), CaError> {
    Identity::new(td, "a", "a")
        .map(|_| ())
        .map_err(|_| CaError::InvalidTrustDomain(td.to_owned()))
}

/// The trust domain named by a CA certificate's `spiffe://<td>` URI SAN.
pub fn anchor_trust_domain(cert: &CertificateDer<'_>) -> Result<String, CaError> {
    use x509_parser::extensions::GeneralName;
    let (_, x509) = x509_parser::parse_x509_certificate(cert.as_ref())
        .map_err(|e| CaError::Certificate(e.to_string()))?;
    let san = x509.subject_alternative_name().ok().flatten();
    san.iter()
        .flat_map(|ext| ext.value.general_names.iter())
        .find_map(|name| match name {
            GeneralName::URI(uri) => uri
                .strip_prefix("spiffe://")
                .filter(|td| !td.is_empty() && !td.contains('/'))
                .map(str::to_owned),
            _ => None,
        })
        .ok_or(CaError::NoTrustDomain)
}

fn first_cert(pem: &str, path: &Path) -> Result<CertificateDer<'static>, CaError> {
    cert::certs_from_pem(pem)
        .map_err(|e| CaError::Load {
            path: path.to_owned(),
            reason: e.to_string(),
        })?
        .into_iter()
        .next()
        .ok_or_else(|| CaError::Load {
            path: path.to_owned(),
            reason: "no certificate".into(),
        })
}

fn to_offset(t: SystemTime) -> OffsetDateTime {
    OffsetDateTime::from(t)
}

fn random_serial() -> Result<SerialNumber, rcgen::Error> {
    let mut bytes = [0u8; 16];
    crate::rand::fill(&mut bytes).map_err(|_| rcgen::Error::RingUnspecified)?;
    // A positive serial of at most 20 octets, as RFC 5280 asks.
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    Ok(SerialNumber::from_slice(&bytes))
}

/// PKCS#8 DER of a generated key, for callers that must write a key file (`mesh identity issue`).
pub(crate) fn key_der(key: &KeyPair) -> PrivateKeyDer<'static> {
    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()))
}

/// Generates a fresh ECDSA P-256 key in memory.
pub fn generate_key() -> Result<KeyPair, rcgen::Error> {
    KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
}

/// Builds a CSR for `key` that names no identity: the issuer decides the identity from the
/// caller's token. Returns PEM.
pub fn csr_pem(key: &KeyPair) -> Result<String, rcgen::Error> {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.serialize_request(key)?.pem()
}

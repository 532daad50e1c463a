//! Reading what a certificate says: its mesh identity and its validity window.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mesh_core::identity::Identity;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use x509_parser::extensions::GeneralName;

/// Why a certificate does not name exactly one mesh identity, or cannot be read at all.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CertificateIdentityError {
    /// The bytes are not an X.509 certificate.
    #[error("not a valid X.509 certificate: {0}")]
    Malformed(String),
    /// The certificate has no `spiffe://` URI SAN.
    #[error("the certificate carries no SPIFFE identity (URI SAN)")]
    Missing,
    /// The certificate has several `spiffe://` URI SANs, so whose it is would be ambiguous.
    #[error("the certificate carries {0} SPIFFE identities; a mesh certificate carries one")]
    Ambiguous(usize),
    /// The URI SAN is not a workload identity.
    #[error("the certificate's SPIFFE ID is not a workload identity")]
    Invalid(#[from] mesh_core::identity::InvalidIdentity),
}

/// Why PEM text could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PemError {
    /// The text holds no PEM section of the wanted kind.
    #[error("no {0} found in the PEM text")]
    Empty(&'static str),
    /// A PEM section was malformed.
    #[error("malformed PEM: {0}")]
    Malformed(String),
}

/// The validity window of a certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Validity {
    /// The first instant the certificate is valid.
    pub not_before: SystemTime,
    /// The last instant the certificate is valid.
    pub not_after: SystemTime,
}

/// The mesh identity a certificate carries in its `spiffe://` URI SAN.
///
/// A mesh certificate carries exactly one; anything else is an error, so a verifier never has to
/// guess which of several names a peer is.
pub fn identity_of(cert: &CertificateDer<'_>) -> Result<Identity, CertificateIdentityError> {
    let (_, x509) = x509_parser::parse_x509_certificate(cert.as_ref())
        .map_err(|e| CertificateIdentityError::Malformed(e.to_string()))?;
    let san = x509
        .subject_alternative_name()
        .map_err(|e| CertificateIdentityError::Malformed(e.to_string()))?;
    let uris: Vec<&str> = san
        .iter()
        .flat_map(|ext| ext.value.general_names.iter())
        .filter_map(|name| match name {
            GeneralName::URI(uri) if uri.starts_with("spiffe://") => Some(*uri),
            _ => None,
        })
        .collect();
    match uris.as_slice() {
        [] => Err(CertificateIdentityError::Missing),
        [uri] => Ok(Identity::parse(uri)?),
        many => Err(CertificateIdentityError::Ambiguous(many.len())),
    }
}

/// The validity window of a certificate.
pub fn validity_of(cert: &CertificateDer<'_>) -> Result<Validity, CertificateIdentityError> {
    let (_, x509) = x509_parser::parse_x509_certificate(cert.as_ref())
        .map_err(|e| CertificateIdentityError::Malformed(e.to_string()))?;
    let v = x509.validity();
    Ok(Validity {
        not_before: from_unix(v.not_before.timestamp()),
        not_after: from_unix(v.not_after.timestamp()),
    })
}

/// Reads every `CERTIFICATE` section of PEM text, in order.
pub fn certs_from_pem(pem: &str) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PemError::Malformed(e.to_string()))?;
    if certs.is_empty() {
        return Err(PemError::Empty("CERTIFICATE"));
    }
    Ok(certs)
}

/// Encodes certificates as PEM, in order.
pub fn certs_to_pem(certs: &[CertificateDer<'_>]) -> String {
    certs
        .iter()
        .map(|c| pem_encode("CERTIFICATE", c.as_ref()))
        .collect()
}

pub(crate) fn pem_encode(label: &str, der: &[u8]) -> String {
    let b64 = base64_encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        // base64 output is ASCII, so every chunk is valid UTF-8.
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

fn base64_encode(data: &[u8]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(TABLE[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

pub(crate) fn from_unix(secs: i64) -> SystemTime {
    match u64::try_from(secs) {
        Ok(s) => UNIX_EPOCH + Duration::from_secs(s),
        Err(_) => UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_known_vectors() {
        let cases = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (input, want) in cases {
            assert_eq!(base64_encode(input.as_bytes()), want, "{input:?}");
        }
    }

    #[test]
    fn garbage_is_not_a_certificate() {
        let err = identity_of(&CertificateDer::from(vec![1, 2, 3])).unwrap_err();
        assert!(matches!(err, CertificateIdentityError::Malformed(_)));
        assert_eq!(certs_from_pem("hello"), Err(PemError::Empty("CERTIFICATE")));
    }
}

//! Mesh identity: trust anchors, an issuer, rotating workload certificates and rustls configs.
//!
//! A [trust anchor](ca::TrustAnchor) signs an [issuer](ca::Issuer); the issuer signs
//! short-lived workload certificates from CSRs, in-process or through the
//! [issuer service](issuer). Each workload keeps its current certificate in a [`CertStore`],
//! which the [rotation task](rotate) renews at about 70 % of its lifetime, and which the
//! [mTLS configs](tls) read on every handshake.
//!
//! ```
//! use std::time::Duration;
//! use mesh_identity::{ca, rustls, tls, CertStore, Identity, PeerIdentity, TrustBundle, TrustStore};
//!
//! // A mesh: one anchor, one issuer, two workloads.
//! let anchor = ca::TrustAnchor::generate("cluster.local", Duration::from_secs(86400))?;
//! let issuer = ca::Issuer::generate(&anchor, Duration::from_secs(3600))?;
//! let trust = TrustStore::new(TrustBundle::from_pem(&anchor.cert_pem())?);
//! let web = Identity::new("cluster.local", "emojivoto", "web")?;
//! let api = Identity::new("cluster.local", "emojivoto", "api")?;
//! let web_certs = CertStore::with(issuer.issue_local(&web, Duration::from_secs(600))?);
//! let api_certs = CertStore::with(issuer.issue_local(&api, Duration::from_secs(600))?);
//!
//! // `web` dials `api`, expecting exactly that identity.
//! let client = tls::client_config(web_certs, trust.clone())?;
//! let server = tls::server_config(api_certs, trust)?;
//! let mut c = rustls::ClientConnection::new(client.into(), tls::server_name(&api)?)?;
//! let mut s = rustls::ServerConnection::new(server.into())?;
//! while c.is_handshaking() || s.is_handshaking() {
//!     let mut buf = Vec::new();
//!     c.write_tls(&mut buf)?;
//!     s.read_tls(&mut buf.as_slice())?;
//!     s.process_new_packets()?;
//!     buf.clear();
//!     s.write_tls(&mut buf)?;
//!     c.read_tls(&mut buf.as_slice())?;
//!     c.process_new_packets()?;
//! }
//! assert_eq!(s.peer_identity(), Some(web));
//! assert_eq!(c.peer_identity(), Some(api));
//! assert_eq!(s.alpn_protocol(), Some(tls::MESH_ALPN));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # The issuer endpoint
//!
//! `POST /v1/certificate` over HTTPS, with `Authorization: Bearer <token>` and a PKCS#10
//! certificate signing request (PEM, `-----BEGIN CERTIFICATE REQUEST-----`) as the body, at
//! most 16 KiB. The key must be ECDSA P-256. The request need not name an identity; if its
//! SANs name one, it must be the identity the token entitles the caller to.
//!
//! | status | when | body |
//! |---|---|---|
//! | 200 | signed | `application/pem-certificate-chain`: the leaf, then the issuer |
//! | 400 | the body is not a CSR, its signature does not verify, or its key is not P-256 | the reason |
//! | 401 | no `Authorization: Bearer` header, an unknown token, or one refused (e.g. for another audience) | the reason |
//! | 403 | the CSR asks for another identity than the token's | the reason |
//! | 404 / 405 | another path / method | the reason |
//! | 413 | the body is larger than 16 KiB | the reason |
//!
//! The leaf is valid for 24 h by default (from 20 s in the past, for clock skew), for both
//! client and server authentication, with the SPIFFE ID as URI SAN and the DNS form as DNS SAN.
//! The issuer's own certificate carries `spiffe://<trust-domain>/ns/<control-ns>/sa/identity`;
//! clients verify that identity rather than the URL's host.
#![warn(missing_docs)]

pub mod bundle;
pub mod ca;
pub mod cert;
pub mod client;
pub mod issuer;
mod rand;
pub mod rotate;
pub mod store;
pub mod tls;

pub use bundle::{TrustBundle, TrustStore};
pub use mesh_core::identity::Identity;
/// The rustls version these configs are built with.
pub use rustls;
pub use store::{CertStore, Credentials};
pub use tls::{IdentityMismatch, MESH_ALPN, PeerIdentity};

// The README's Rust example compiles as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
/// The tokio-rustls version these configs work with.
pub use tokio_rustls;

/// An error and its causes, `: `-separated, for response bodies and logs.
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cur = c.source();
    }
    out
}

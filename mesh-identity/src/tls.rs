//! rustls configs for mesh mTLS that follow certificate and trust-bundle rotation.
//!
//! - [`server_config`]: requires a client certificate that chains to the trust bundle and
//!   carries a mesh identity; serves the workload's current certificate.
//! - [`client_config`]: presents the workload's current certificate and accepts a server only
//!   if it chains to the bundle *and* carries the expected identity. The expected identity is
//!   the TLS server name: connect with [`server_name`]`(&expected)`. A mismatch fails the
//!   handshake with an [`IdentityMismatch`] that names both identities.
//! - [`PeerIdentity`]: the verified peer identity of a finished handshake.
//!
//! Both configs are TLS 1.3 only, offer [`MESH_ALPN`], and resume sessions (server tickets and
//! session storage, client session cache). The resolvers and verifiers read a [`CertStore`]
//! and a [`TrustStore`] on each handshake, so a rotation affects new handshakes only.
//!
//! A resumed handshake does not verify certificates again (that is what makes it cheap); the
//! peer identity comes from the resumed session. Tickets live 6 h, inside the 7 h or more that a
//! 24 h leaf renewed at 70 % still has, so with default lifetimes a resumed session never
//! outlives the certificate it was established with. Much shorter leaves shorten that margin.

use std::sync::{Arc, OnceLock};

use mesh_core::identity::{DEFAULT_CONTROL_NAMESPACE, Identity};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ClientSessionMemoryCache, ResolvesClientCert, Resumption};
use rustls::crypto::CryptoProvider;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{
    ClientHello, ParsedCertificate, ResolvesServerCert, ServerSessionMemoryCache,
};
use rustls::sign::CertifiedKey;
use rustls::{
    CertificateError, ClientConfig, CommonState, DigitallySignedStruct, DistinguishedName,
    OtherError, ServerConfig, SignatureScheme,
};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use crate::bundle::TrustStore;
use crate::cert::identity_of;
use crate::store::CertStore;

/// The ALPN protocol that marks mesh-to-mesh TLS. The proxy uses it to tell mesh traffic from
/// application TLS; the application protocol inside (h2, http/1.1) is negotiated separately.
pub const MESH_ALPN: &[u8] = b"mesh/1";

/// How many TLS sessions each side keeps for resumption.
const SESSION_CACHE_SIZE: usize = 1024;

/// Why a TLS config could not be built.
#[derive(Debug, thiserror::Error)]
#[error("could not build TLS config")]
pub struct TlsConfigError(#[from] rustls::Error);

/// An identity that cannot be dialed by name: see [`server_name`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the identity {0} has no unambiguous DNS form to use as a TLS server name")]
pub struct ServerNameError(pub Identity);

/// The server presented a certificate for another identity than the one expected.
///
/// It reaches the caller inside `rustls::Error::InvalidCertificate(CertificateError::Other(..))`;
/// find it with [`IdentityMismatch::find`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("expected the peer identity {expected} but the peer presented {actual}")]
pub struct IdentityMismatch {
    /// The identity the client asked for.
    pub expected: Identity,
    /// The identity the server's certificate carries (or why it carries none).
    pub actual: String,
}

/// Reads the verified peer identity of a finished handshake.
///
/// Works on `rustls::ServerConnection` and `ClientConnection` (through `CommonState`) and on
/// tokio-rustls streams.
pub trait PeerIdentity {
    /// The peer's mesh identity, or `None` before the handshake or without a peer certificate.
    fn peer_identity(&self) -> Option<Identity>;
}

#[derive(Debug)]
struct StoreResolver(CertStore);

#[derive(Debug)]
struct MeshClientVerifier {
    trust: TrustStore,
}

#[derive(Debug)]
struct MeshServerVerifier {
    trust: TrustStore,
    provider: Arc<CryptoProvider>,
}

// === free functions ===

/// The one crypto provider of the mesh: rustls on ring, with the TLS 1.3 suites that match
/// the 128-bit security of our P-256 keys.
///
/// AES-256/SHA-384 would not raise the security of a mesh whose keys are P-256, but SHA-384
/// runs in software and was a quarter of a resumed handshake's time, so it is left out.
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| {
            use rustls::crypto::ring::cipher_suite::{
                TLS13_AES_128_GCM_SHA256, TLS13_CHACHA20_POLY1305_SHA256,
            };
            let mut provider = rustls::crypto::ring::default_provider();
            provider.cipher_suites = vec![TLS13_AES_128_GCM_SHA256, TLS13_CHACHA20_POLY1305_SHA256];
            Arc::new(provider)
        })
        .clone()
}

/// The TLS server name to dial for a peer that must be `expected`: its DNS-form identity.
///
/// The client verifier reads the expected identity back from it, so one client config serves
/// every destination and the session cache is keyed by identity. The control namespace in the
/// name is only a naming convention (either form of an identity is accepted).
///
/// Fails for identities whose DNS form is longer than a DNS name may be, or does not parse back
/// to the same identity (a service account containing `.serviceaccount.identity.` makes the DNS
/// form ambiguous); dialing those would verify the wrong peer, so they are refused here.
pub fn server_name(expected: &Identity) -> Result<ServerName<'static>, ServerNameError> {
    let dns = expected.to_dns(DEFAULT_CONTROL_NAMESPACE);
    if Identity::parse(&dns).as_ref() != Ok(expected) {
        return Err(ServerNameError(expected.clone()));
    }
    ServerName::try_from(dns).map_err(|_| ServerNameError(expected.clone()))
}

/// A mesh mTLS server config: requires a client certificate chaining to `trust` that carries
/// a mesh identity, and serves the current certificate of `certs`.
///
/// ALPN is `[MESH_ALPN]`; push inner protocols after it if the proxy needs them.
pub fn server_config(certs: CertStore, trust: TrustStore) -> Result<ServerConfig, TlsConfigError> {
    let verifier = Arc::new(MeshClientVerifier { trust });
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(StoreResolver(certs)));
    config.alpn_protocols = vec![MESH_ALPN.to_vec()];
    enable_server_resumption(&mut config)?;
    Ok(config)
}

/// A mesh mTLS client config: presents the current certificate of `certs` and accepts a server
/// only if its certificate chains to `trust` and carries the identity named by the server name
/// (see [`server_name`]).
pub fn client_config(certs: CertStore, trust: TrustStore) -> Result<ClientConfig, TlsConfigError> {
    let mut config =
        client_builder(trust)?.with_client_cert_resolver(Arc::new(StoreResolver(certs)));
    config.alpn_protocols = vec![MESH_ALPN.to_vec()];
    config.resumption =
        Resumption::store(Arc::new(ClientSessionMemoryCache::new(SESSION_CACHE_SIZE)));
    Ok(config)
}

/// The issuer service's server config: serves `certs` (the issuer's own identity) and asks for
/// no client certificate, since callers come to get their first one. ALPN `http/1.1`.
pub fn issuer_server_config(certs: CertStore) -> Result<ServerConfig, TlsConfigError> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(StoreResolver(certs)));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// A client config for talking to the issuer service: no client certificate, and the server
/// must carry the identity named by the server name, as with [`client_config`].
pub fn issuer_client_config(trust: TrustStore) -> Result<ClientConfig, TlsConfigError> {
    let mut config = client_builder(trust)?.with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// The verified identity of the peer of a finished handshake.
pub fn peer_identity(state: &CommonState) -> Option<Identity> {
    let leaf = state.peer_certificates()?.first()?;
    identity_of(leaf).ok()
}

fn client_builder(
    trust: TrustStore,
) -> Result<rustls::ConfigBuilder<ClientConfig, rustls::client::WantsClientCert>, TlsConfigError> {
    let verifier = Arc::new(MeshServerVerifier {
        trust,
        provider: provider(),
    });
    Ok(ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier))
}

fn enable_server_resumption(config: &mut ServerConfig) -> Result<(), TlsConfigError> {
    config.session_storage = ServerSessionMemoryCache::new(SESSION_CACHE_SIZE);
    config.ticketer = rustls::crypto::ring::Ticketer::new()?;
    Ok(())
}

fn other_error(e: impl std::error::Error + Send + Sync + 'static) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(e))))
}

// === impl IdentityMismatch ===

impl IdentityMismatch {
    /// Finds an `IdentityMismatch` in the cause chain of an error (a `rustls::Error`, or an
    /// `io::Error` from tokio-rustls wrapping one).
    pub fn find<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a Self> {
        let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
        while let Some(e) = cur {
            if let Some(m) = e.downcast_ref::<Self>() {
                return Some(m);
            }
            if let Some(rustls::Error::InvalidCertificate(CertificateError::Other(other))) =
                e.downcast_ref::<rustls::Error>()
                && let Some(m) = other.0.downcast_ref::<Self>()
            {
                return Some(m);
            }
            if let Some(io) = e.downcast_ref::<std::io::Error>()
                && let Some(inner) = io.get_ref()
                && let Some(m) = Self::find(inner)
            {
                return Some(m);
            }
            cur = e.source();
        }
        None
    }
}

// === impl PeerIdentity ===

impl PeerIdentity for CommonState {
    fn peer_identity(&self) -> Option<Identity> {
        peer_identity(self)
    }
}

impl<IO> PeerIdentity for tokio_rustls::server::TlsStream<IO> {
    fn peer_identity(&self) -> Option<Identity> {
        peer_identity(self.get_ref().1)
    }
}

impl<IO> PeerIdentity for tokio_rustls::client::TlsStream<IO> {
    fn peer_identity(&self) -> Option<Identity> {
        peer_identity(self.get_ref().1)
    }
}

impl<IO> PeerIdentity for tokio_rustls::TlsStream<IO> {
    fn peer_identity(&self) -> Option<Identity> {
        match self {
            Self::Client(s) => s.peer_identity(),
            Self::Server(s) => s.peer_identity(),
        }
    }
}

// === impl StoreResolver ===

impl ResolvesServerCert for StoreResolver {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.certified_key()
    }
}

impl ResolvesClientCert for StoreResolver {
    fn resolve(&self, _: &[&[u8]], _: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        self.0.certified_key()
    }

    fn has_certs(&self) -> bool {
        self.0.certified_key().is_some()
    }
}

// === impl MeshClientVerifier ===

impl ClientCertVerifier for MeshClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // The bundle can change under us, so no borrowed hints; mesh clients have one cert.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let bundle = self.trust.load();
        let verified =
            bundle
                .client_verifier()
                .verify_client_cert(end_entity, intermediates, now)?;
        identity_of(end_entity).map_err(other_error)?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.trust
            .load()
            .client_verifier()
            .verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.trust
            .load()
            .client_verifier()
            .verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.trust
            .load()
            .client_verifier()
            .supported_verify_schemes()
    }
}

// === impl MeshServerVerifier ===

impl ServerCertVerifier for MeshServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let expected = match server_name {
            ServerName::DnsName(name) => Identity::parse(name.as_ref()).map_err(|e| {
                rustls::Error::General(format!(
                    "the server name must be the expected mesh identity: {e}"
                ))
            })?,
            other => {
                return Err(rustls::Error::General(format!(
                    "the server name {other:?} is not a mesh identity; dial with mesh_identity::tls::server_name"
                )));
            }
        };
        let bundle = self.trust.load();
        let parsed = ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &parsed,
            bundle.roots(),
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
        match identity_of(end_entity) {
            Ok(actual) if actual == expected => Ok(ServerCertVerified::assertion()),
            Ok(actual) => Err(other_error(IdentityMismatch {
                expected,
                actual: actual.to_string(),
            })),
            Err(e) => Err(other_error(IdentityMismatch {
                expected,
                actual: e.to_string(),
            })),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

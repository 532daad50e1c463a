//! The workload side of the issuer protocol: send a CSR, get a chain back.
//!
//! The key is generated in this process and never sent anywhere; only the CSR travels. The
//! issuer is verified by its mesh identity (`…/ns/<control-ns>/sa/identity`), not by the URL's
//! host, so `https://127.0.0.1:8443` works.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use mesh_core::identity::Identity;
use rcgen::KeyPair;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::bundle::TrustStore;
use crate::ca;
use crate::cert;
use crate::issuer::CERTIFICATE_PATH;
use crate::store::{Credentials, CredentialsError};
use crate::tls::{self, IdentityMismatch};

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_RESPONSE: usize = 64 * 1024;

/// Why a certificate could not be obtained from the issuer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The issuer URL is not `https://host:port`.
    #[error("invalid issuer URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// The issuer's identity cannot be a TLS server name.
    #[error("the issuer identity {0} cannot be used as a TLS server name")]
    ServerName(Identity),
    /// The TLS config could not be built.
    #[error(transparent)]
    Tls(#[from] tls::TlsConfigError),
    /// Connecting or the TLS handshake failed (an [`IdentityMismatch`]
    /// is in the cause chain if the issuer is not who it should be).
    #[error("cannot reach the issuer at {addr}")]
    Connect {
        /// host:port.
        addr: String,
        /// Why.
        source: ConnectError,
    },
    /// The HTTP exchange failed.
    #[error("HTTP exchange with the issuer failed")]
    Http(#[from] hyper::Error),
    /// The issuer did not answer in time.
    #[error("the issuer did not answer within {0:?}")]
    Timeout(Duration),
    /// The issuer refused the request.
    #[error("the issuer refused the request ({status}): {reason}")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// The issuer's reason.
        reason: String,
    },
    /// The issuer's answer is not a usable chain.
    #[error("the issuer's answer is not usable: {0}")]
    BadResponse(String),
    /// Generating the key or the CSR failed.
    #[error("cannot generate a key or CSR")]
    Key(#[from] rcgen::Error),
    /// The chain and key do not make credentials.
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
}

/// Why a connection to the issuer failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The TCP connection failed.
    #[error(transparent)]
    Io(std::io::Error),
    /// The server is not the issuer: its certificate names another identity.
    #[error("the server is not the expected issuer")]
    WrongIdentity(#[source] IdentityMismatch),
    /// The server's certificate does not chain to the trust anchors.
    #[error("the server's certificate is not signed by the trust anchors ({0})")]
    Untrusted(rustls::Error),
    /// The TLS handshake failed otherwise.
    #[error("TLS handshake failed: {0}")]
    Tls(rustls::Error),
}

/// A client of the issuer service.
#[derive(Clone)]
pub struct IssuerClient {
    url: String,
    authority: String,
    server_name: ServerName<'static>,
    connector: TlsConnector,
    trust: TrustStore,
    token: Arc<str>,
    timeout: Duration,
}

// === impl IssuerClient ===

impl IssuerClient {
    /// A client of the issuer at `url` (`https://host:port`), which must present
    /// `issuer_identity` and chain to `trust`, authenticating with `token`.
    pub fn new(
        url: &str,
        issuer_identity: &Identity,
        trust: TrustStore,
        token: &str,
    ) -> Result<Self, ClientError> {
        let authority = parse_url(url)?;
        let server_name = tls::server_name(issuer_identity)
            .map_err(|_| ClientError::ServerName(issuer_identity.clone()))?;
        let config = tls::issuer_client_config(trust.clone())?;
        Ok(Self {
            url: url.to_owned(),
            authority,
            server_name,
            connector: TlsConnector::from(Arc::new(config)),
            trust,
            token: token.trim().into(),
            timeout: DEFAULT_TIMEOUT,
        })
    }

    /// Sets the time limit of one request (default 10 s).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Posts `csr_pem` and returns the chain (leaf, then issuer).
    pub async fn sign(&self, csr_pem: &str) -> Result<Vec<CertificateDer<'static>>, ClientError> {
        tokio::time::timeout(self.timeout, self.sign_inner(csr_pem.to_owned()))
            .await
            .map_err(|_| ClientError::Timeout(self.timeout))?
    }

    /// Generates a fresh key in memory, has it certified, and returns credentials ready for
    /// rustls. The chain is checked against the trust bundle before it is returned.
    pub async fn fetch(&self) -> Result<Credentials, ClientError> {
        let key = ca::generate_key()?;
        let chain = self.sign(&ca::csr_pem(&key)?).await?;
        self.check_chain(&chain)?;
        Ok(Credentials::from_key_pair(chain, &key)?)
    }

    /// Like [`fetch`](Self::fetch) for callers that must write the key to disk
    /// (`mesh identity issue`): returns the key too.
    pub async fn fetch_with_key(
        &self,
    ) -> Result<(KeyPair, Vec<CertificateDer<'static>>), ClientError> {
        let key = ca::generate_key()?;
        let chain = self.sign(&ca::csr_pem(&key)?).await?;
        self.check_chain(&chain)?;
        Credentials::from_key_pair(chain.clone(), &key)?;
        Ok((key, chain))
    }

    fn check_chain(&self, chain: &[CertificateDer<'static>]) -> Result<(), ClientError> {
        let (leaf, rest) = chain
            .split_first()
            .ok_or_else(|| ClientError::BadResponse("empty chain".into()))?;
        self.trust
            .load()
            .client_verifier()
            .verify_client_cert(leaf, rest, UnixTime::now())
            .map_err(|e| {
                ClientError::BadResponse(format!(
                    "the issued certificate does not chain to the trust anchors: {e}"
                ))
            })?;
        Ok(())
    }

    async fn sign_inner(
        &self,
        csr_pem: String,
    ) -> Result<Vec<CertificateDer<'static>>, ClientError> {
        let connect_err = |e| ClientError::Connect {
            addr: self.authority.clone(),
            source: ConnectError::from_io(e),
        };
        let tcp = TcpStream::connect(&self.authority)
            .await
            .map_err(connect_err)?;
        let _ = tcp.set_nodelay(true);
        let tls = self
            .connector
            .connect(self.server_name.clone(), tcp)
            .await
            .map_err(connect_err)?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
        let conn = tokio::spawn(conn);
        let req = Request::builder()
            .method(Method::POST)
            .uri(CERTIFICATE_PATH)
            .header(HOST, &self.authority)
            .header(AUTHORIZATION, format!("Bearer {}", self.token))
            .header(CONTENT_TYPE, "application/pkcs10")
            .body(Full::new(Bytes::from(csr_pem)))
            .map_err(|e| ClientError::BadResponse(format!("cannot build the request: {e}")))?;
        let res = sender.send_request(req).await?;
        let status = res.status();
        let body = Limited::new(res.into_body(), MAX_RESPONSE)
            .collect()
            .await
            .map_err(|e| ClientError::BadResponse(format!("cannot read the answer: {e}")))?
            .to_bytes();
        conn.abort();
        let text = String::from_utf8_lossy(&body);
        if !status.is_success() {
            return Err(ClientError::Refused {
                status: status.as_u16(),
                reason: text.trim().to_owned(),
            });
        }
        cert::certs_from_pem(&text).map_err(|e| ClientError::BadResponse(e.to_string()))
    }
}

// === impl ConnectError ===

impl ConnectError {
    fn from_io(e: std::io::Error) -> Self {
        use rustls::CertificateError as C;
        let Some(tls) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) else {
            return Self::Io(e);
        };
        if let Some(m) = IdentityMismatch::find(&e) {
            return Self::WrongIdentity(m.clone());
        }
        match tls {
            rustls::Error::InvalidCertificate(C::UnknownIssuer | C::BadSignature) => {
                Self::Untrusted(tls.clone())
            }
            _ => Self::Tls(tls.clone()),
        }
    }
}

impl std::fmt::Debug for IssuerClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the token.
        f.debug_struct("IssuerClient")
            .field("url", &self.url)
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

/// `https://host:port[/]` → `host:port`.
fn parse_url(url: &str) -> Result<String, ClientError> {
    let err = |reason: &str| ClientError::InvalidUrl {
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    let rest = url
        .strip_prefix("https://")
        .ok_or_else(|| err("the issuer is only served over https://"))?;
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.is_empty() || authority.contains('/') || authority.contains('@') {
        return Err(err("expected https://<host>:<port>"));
    }
    let (host, port) = authority
        .rsplit_once(':')
        .ok_or_else(|| err("the port is missing"))?;
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(err("expected https://<host>:<port>"));
    }
    Ok(authority.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            parse_url("https://127.0.0.1:8443").unwrap(),
            "127.0.0.1:8443"
        );
        assert_eq!(parse_url("https://issuer:1/").unwrap(), "issuer:1");
        assert_eq!(parse_url("https://[::1]:443").unwrap(), "[::1]:443");
        for bad in [
            "http://a:1",
            "https://a",
            "https://a:x",
            "https://a:1/v1",
            "https://:1",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }
}

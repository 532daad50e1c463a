//! Shared helpers: a mesh CA, certificates with chosen validity, and a loopback echo server
//! that answers each mTLS connection with the peer identity it verified.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use mesh_identity::ca::{Issuer, TrustAnchor};
use mesh_identity::rustls::{self, ClientConfig, ServerConfig};
use mesh_identity::tokio_rustls::{TlsAcceptor, TlsConnector};
use mesh_identity::{Credentials, Identity, PeerIdentity, TrustBundle, TrustStore, tls};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

pub const TD: &str = "cluster.local";
pub const HOUR: Duration = Duration::from_secs(3600);

pub fn id(ns: &str, sa: &str) -> Identity {
    Identity::new(TD, ns, sa).unwrap()
}

pub struct Ca {
    pub anchor: TrustAnchor,
    pub issuer: Arc<Issuer>,
}

impl Ca {
    pub fn new() -> Self {
        let anchor = TrustAnchor::generate(TD, 72 * HOUR).unwrap();
        let issuer = Arc::new(Issuer::generate(&anchor, 48 * HOUR).unwrap());
        Self { anchor, issuer }
    }

    pub fn bundle(&self) -> TrustBundle {
        TrustBundle::from_pem(&self.anchor.cert_pem()).unwrap()
    }

    pub fn trust(&self) -> TrustStore {
        TrustStore::new(self.bundle())
    }

    pub fn creds(&self, id: &Identity) -> Credentials {
        self.issuer.issue_local(id, HOUR).unwrap()
    }

    /// A leaf for `id` valid from `not_before` to `not_after`, signed by this CA's issuer.
    pub fn creds_valid(
        &self,
        id: &Identity,
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Credentials {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let ca_key = rcgen::KeyPair::from_pem(self.issuer.key_pem()).unwrap();
        let issuer = rcgen::Issuer::from_ca_cert_pem(&self.issuer.cert_pem(), ca_key).unwrap();
        let mut params = rcgen::CertificateParams::new(vec![id.to_dns("linkerd")]).unwrap();
        params
            .subject_alt_names
            .push(rcgen::SanType::URI(id.to_spiffe().try_into().unwrap()));
        params.not_before = time::OffsetDateTime::from(not_before);
        params.not_after = time::OffsetDateTime::from(not_after);
        params.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        let leaf = params.signed_by(&key, &issuer).unwrap();
        Credentials::from_key_pair(
            vec![leaf.der().clone(), self.issuer.cert_der().clone()],
            &key,
        )
        .unwrap()
    }
}

/// What the server saw of one connection: the verified peer identity, or the handshake error.
pub type Seen = Result<Identity, std::io::Error>;

/// A loopback mTLS server that writes the verified peer identity back and closes.
pub struct EchoServer {
    pub addr: SocketAddr,
    pub seen: mpsc::UnboundedReceiver<Seen>,
    task: tokio::task::JoinHandle<()>,
}

impl EchoServer {
    pub async fn start(config: ServerConfig) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let (tx, seen) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    match acceptor.accept(tcp).await {
                        Ok(mut tls) => {
                            let peer = tls.peer_identity().unwrap();
                            let _ = tls.write_all(format!("{peer}\n").as_bytes()).await;
                            let _ = tls.shutdown().await;
                            let _ = tx.send(Ok(peer));
                        }
                        Err(e) => {
                            let _ = tx.send(Err(e));
                        }
                    }
                });
            }
        });
        Self { addr, seen, task }
    }

    pub async fn next_seen(&mut self) -> Seen {
        tokio::time::timeout(Duration::from_secs(5), self.seen.recv())
            .await
            .expect("server saw nothing within 5s")
            .expect("server gone")
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The outcome of one client request: the server identity the client verified and what the
/// server answered (the client's identity as it saw it).
#[derive(Debug)]
pub struct Reply {
    pub server: Identity,
    pub server_cert: rustls::pki_types::CertificateDer<'static>,
    pub answer: String,
    pub resumed: bool,
}

/// Connects to `addr` expecting `expected`, and reads the server's answer.
pub async fn request(
    config: Arc<ClientConfig>,
    addr: SocketAddr,
    expected: &Identity,
) -> Result<Reply, std::io::Error> {
    let fut = async {
        let tcp = TcpStream::connect(addr).await?;
        let mut tls = TlsConnector::from(config)
            .connect(tls::server_name(expected).unwrap(), tcp)
            .await?;
        let server = tls
            .peer_identity()
            .expect("a verified server has an identity");
        let resumed = tls.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
        let server_cert = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
        let mut answer = String::new();
        tls.read_to_string(&mut answer).await?;
        if answer.is_empty() {
            return Err(std::io::Error::other("the server closed without answering"));
        }
        Ok(Reply {
            server,
            server_cert,
            answer: answer.trim().to_owned(),
            resumed,
        })
    };
    tokio::time::timeout(Duration::from_secs(5), fut)
        .await
        .unwrap_or_else(|_| Err(std::io::Error::other("request timed out")))
}

/// The rustls error inside an io::Error from tokio-rustls.
pub fn rustls_error(e: &std::io::Error) -> Option<&rustls::Error> {
    e.get_ref()?.downcast_ref::<rustls::Error>()
}

pub fn init_tracing() {}

/// An issuer service on loopback, with its own rotating serving certificate.
pub struct IssuerHarness {
    pub url: String,
    pub service: Arc<mesh_identity::issuer::IssuerService<mesh_identity::issuer::TokenFile>>,
    pub identity: Identity,
    task: tokio::task::JoinHandle<()>,
    _rotation: mesh_identity::rotate::Rotation,
}

pub const TOKENS: &str = "\
# token        namespace/service-account
web-token      emojivoto/web
api-token      emojivoto/api   # the api deployment
";

impl IssuerHarness {
    pub async fn start(ca: &Ca, leaf_lifetime: Duration) -> Self {
        let body_read_timeout = mesh_identity::issuer::DEFAULT_BODY_READ_TIMEOUT;
        Self::start_with(ca, leaf_lifetime, body_read_timeout).await
    }

    pub async fn start_with(ca: &Ca, leaf_lifetime: Duration, body_read_timeout: Duration) -> Self {
        use mesh_identity::issuer::{IssuerService, TokenFile, issuer_identity, serve};
        use mesh_identity::rotate::{LocalSource, Rotation, RotationConfig};

        let identity = issuer_identity(TD, "linkerd").unwrap();
        let source = LocalSource::new(ca.issuer.clone(), identity.clone(), HOUR);
        let rotation = Rotation::start(source, RotationConfig::default())
            .await
            .unwrap();
        let tokens = TokenFile::parse(TOKENS, TD).unwrap();
        let service = Arc::new(
            IssuerService::new(ca.issuer.clone(), tokens)
                .with_lifetime(leaf_lifetime)
                .with_body_read_timeout(body_read_timeout),
        );
        let config = tls::issuer_server_config(rotation.store().clone()).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("https://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(serve(listener, service.clone(), Arc::new(config)));
        Self {
            url,
            service,
            identity,
            task,
            _rotation: rotation,
        }
    }

    pub fn client(&self, trust: TrustStore, token: &str) -> mesh_identity::client::IssuerClient {
        mesh_identity::client::IssuerClient::new(&self.url, &self.identity, trust, token).unwrap()
    }
}

impl Drop for IssuerHarness {
    fn drop(&mut self) {
        self.task.abort();
    }
}

//! `mesh controller` as a child process of a test, killed and reaped on drop.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use mesh_identity::{CertStore, Identity, TrustBundle, TrustStore};

use super::loopback::{LoopbackProxy, recording_app};
use super::mesh_bin;
use super::pods::{Trust, free_port};

/// How long the controller may take to become ready.
const WAIT: Duration = Duration::from_secs(15);

/// The controller process, killed and reaped on drop; its stderr goes to a log file.
pub(crate) struct Controller {
    child: Child,
    log: PathBuf,
    admin: SocketAddr,
}

impl Controller {
    pub(crate) fn start(kubeconfig: &Path, identity: &Path, grpc: SocketAddr, dir: &Path) -> Self {
        Self::start_with(kubeconfig, identity, grpc, dir, &[])
    }

    /// As [`Controller::start`], with `extra` flags.
    pub(crate) fn start_with(
        kubeconfig: &Path,
        identity: &Path,
        grpc: SocketAddr,
        dir: &Path,
        extra: &[&str],
    ) -> Self {
        let admin = free_port();
        let log = dir.join("controller.log");
        let child = Command::new(mesh_bin())
            .args(["controller", "--grpc-addr", &grpc.to_string()])
            .args(["--admin-addr", &admin.to_string(), "--identity-dir"])
            .arg(identity)
            .args(extra)
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Self { child, log, admin }
    }

    /// The process id, for /proc.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// GETs an admin path: (status code, body).
    pub(crate) fn admin(&self, path: &str) -> Option<(u16, String)> {
        let mut s = TcpStream::connect_timeout(&self.admin, Duration::from_secs(2)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(s, "GET {path} HTTP/1.0\r\nHost: admin\r\n\r\n").ok()?;
        let mut text = String::new();
        s.read_to_string(&mut text).ok()?;
        let code = text.split(' ').nth(1)?.parse().ok()?;
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
        Some((code, body))
    }

    pub(crate) fn wait_ready(&self) {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some((200, _)) = self.admin("/ready") {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the controller did not become ready: {:?}\n{}",
                self.admin("/ready"),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A Service `name` in `default` with ClusterIP `ip` and port 80 (`http`), as YAML.
pub(crate) fn service_yaml(name: &str, ip: &str) -> String {
    format!(
        "apiVersion: v1
kind: Service
metadata: {{ name: {name}, namespace: default }}
spec: {{ clusterIP: {ip}, ports: [{{ name: http, port: 80, targetPort: http }}] }}
---
"
    )
}

/// An EndpointSlice of Service `name` in `default` with the one endpoint `app`, as YAML.
pub(crate) fn endpoint_slice_yaml(name: &str, app: SocketAddr) -> String {
    format!(
        "apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{ name: {name}-1, namespace: default, labels: {{ kubernetes.io/service-name: {name} }} }}
addressType: IPv4
ports: [{{ name: http, port: {} }}]
endpoints: [{{ addresses: [{}] }}]
---
",
        app.port(),
        app.ip()
    )
}

/// A `mesh proxy --controller` for pod `pod` in `default`, presenting the identity of
/// service account `sa`, in front of an app that answers 200; waits until it is ready, or
/// only live (when it is started before the controller).
pub(crate) fn pod_proxy(
    trust: &Trust,
    grpc: SocketAddr,
    sa: &str,
    pod: &str,
    live_only: bool,
) -> LoopbackProxy {
    let (app, _) = recording_app();
    let certs = trust.certs(sa);
    let grpc = grpc.to_string();
    let args = [
        "--controller",
        &grpc,
        "--controller-identity",
        "default/mesh-controller",
        "--identity-dir",
        certs.to_str().unwrap(),
        "--namespace",
        "default",
        "--pod-name",
        pod,
    ];
    if live_only {
        LoopbackProxy::start_live(app, &args)
    } else {
        LoopbackProxy::start(app, &args)
    }
}

/// One HTTP/2 connection over mesh mTLS, as a tonic `GrpcService`.
#[derive(Clone)]
pub(crate) struct H2(SendRequest<tonic::body::Body>);

impl tower::Service<http::Request<tonic::body::Body>> for H2 {
    type Response = http::Response<hyper::body::Incoming>;
    type Error = hyper::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, hyper::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), hyper::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let fut = self.0.send_request(req);
        Box::pin(fut)
    }
}

/// Connects to the controller as service account `sa` (certificates from `trust`), checking
/// that the controller is `default/mesh-controller`.
pub(crate) async fn connect(trust: &Trust, sa: &str, addr: SocketAddr) -> H2 {
    let dir = trust.certs(sa);
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
    let chain = mesh_identity::cert::certs_from_pem(&read("tls.crt")).unwrap();
    let key = rcgen::KeyPair::from_pem(&read("tls.key")).unwrap();
    let creds = mesh_identity::Credentials::from_key_pair(chain, &key).unwrap();
    let anchors = TrustStore::new(TrustBundle::from_pem(&read("ca.crt")).unwrap());
    let config = mesh_identity::tls::client_config(CertStore::with(creds), anchors).unwrap();
    let expected = Identity::new("cluster.local", "default", "mesh-controller").unwrap();
    let name = mesh_identity::tls::server_name(&expected).unwrap();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap();
    let (send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    H2(send)
}

pub(crate) fn origin() -> http::Uri {
    "https://mesh-controller.default".parse().unwrap()
}
